"""Turning protocol records into bytes and back.

Every message is a map. A payload carries ``protocol``, ``hook``,
``service``, ``member``, ``members``, ``config``, ``env`` and ``request``; a
result carries ``protocol``, ``data`` and ``message``. Enums travel as their
string values and tuples as lists. ``docs/hooks-protocol.md`` shows each
shape in full.

Values follow the JSON model in both encodings: null, booleans, integers,
floats, strings, lists, and maps with string keys. msgpack's ``bin`` and
``ext`` types are refused, so a message means the same in either encoding.

A key whose field has a default in the record may be left out; any other
missing key is an error that names it. Keys the record does not know are
ignored, so a newer peer can add some without breaking an older one.

Decoding never trusts its input: whatever the bytes hold, it returns a record
or raises a `ProtocolError`. Records are read by hand-written functions rather
than a cattrs converter: they run about three times faster on a payload and
name the exact field that is wrong.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final, NoReturn, TypeVar

import msgpack  # type: ignore[import-untyped]

from ._errors import (
    MessageDecodeError,
    MessageTooLargeError,
    ProtocolError,
    ProtocolVersionError,
)
from ._records import HookPayload, HookResult, MemberInfo, MemberStatus, Plan
from ._vocabulary import (
    MAX_PAYLOAD_BYTES,
    MAX_RESULT_BYTES,
    PROTOCOL_VERSION,
    Encoding,
    HookName,
    Role,
    Topology,
)

__all__ = [
    "decode_payload",
    "decode_result",
    "encode_payload",
    "encode_result",
    "payload_to_wire",
    "plan_from_data",
    "plan_to_data",
    "status_from_data",
    "status_to_data",
]

_HOOKS: Final = {hook.value: hook for hook in HookName}
_ROLES: Final = {role.value: role for role in Role}
_TOPOLOGIES: Final = {topology.value: topology for topology in Topology}
_WIRE_NAMES: Final[dict[HookName | Role | None, str | None]] = {
    **{hook: hook.value for hook in HookName},
    **{role: role.value for role in Role},
    None: None,
}
"""Enum members to their plain strings; faster than ``.value`` on a hot path."""

_ABSENT: Final = object()
"""Stands for a key a message left out."""

_MEMBERS_SEEN_MAX: Final = 1024
"""How many decoded members `_members_seen` holds before it starts over."""

_members_seen: dict[tuple[object, ...], MemberInfo] = {}
# Members decoded lately, keyed by their wire values (see _member_from_wire).
# Records are frozen, so handing the same one out again is safe; the map never
# holds more than _MEMBERS_SEEN_MAX entries, so hostile input cannot grow it.

_MAX_INT: Final = (1 << 63) - 1
"""Largest counter (epoch, offset) accepted; it must fit a signed 64-bit int."""

_MAX_REPR: Final = 60
"""How much of a bad value an error message shows."""

_PLAIN_TYPES: Final = frozenset({str, int, float, bool, type(None)})

_E = TypeVar("_E")


# -- bytes ------------------------------------------------------------------


def encode_payload(
    payload: HookPayload, encoding: Encoding = Encoding.MSGPACK
) -> bytes:
    """Encode a payload for a hook's stdin (or argv, in Nanobox mode).

    Args:
        payload: The payload to send.
        encoding: The encoding the image asked for.

    Returns:
        The encoded payload.

    Raises:
        MessageTooLargeError: The encoded payload is over `MAX_PAYLOAD_BYTES`.
        ProtocolError: The payload holds a value the encoding cannot carry
            (a set, a date, an integer over 64 bits).
    """
    data = _dump(payload_to_wire(payload), encoding, "payload")
    _check_size(data, MAX_PAYLOAD_BYTES, "payload")

    return data


def decode_payload(data: bytes, encoding: Encoding = Encoding.MSGPACK) -> HookPayload:
    """Decode a payload, as a hook (or a fake of one) receives it.

    Args:
        data: The encoded payload.
        encoding: The encoding it was written in.

    Returns:
        The payload record.

    Raises:
        MessageTooLargeError: ``data`` is over `MAX_PAYLOAD_BYTES`.
        ProtocolVersionError: The payload announces another protocol version.
        MessageDecodeError: ``data`` is not a well-formed payload.
    """
    _check_size(data, MAX_PAYLOAD_BYTES, "payload")
    wire = _load(data, encoding, "payload", MAX_PAYLOAD_BYTES)
    _check_version(wire, "payload")

    return _payload_from_wire(wire)


def encode_result(result: HookResult, encoding: Encoding = Encoding.MSGPACK) -> bytes:
    """Encode a result, as a hook prints it on stdout.

    Args:
        result: The result to encode.
        encoding: The encoding the image uses.

    Returns:
        The encoded result.

    Raises:
        MessageTooLargeError: The encoded result is over `MAX_RESULT_BYTES`.
        ProtocolError: The result holds a value the encoding cannot carry.
    """
    wire = {"protocol": result.protocol, "data": result.data, "message": result.message}
    data = _dump(wire, encoding, "result")
    _check_size(data, MAX_RESULT_BYTES, "result")

    return data


def decode_result(data: bytes, encoding: Encoding = Encoding.MSGPACK) -> HookResult:
    """Decode what a hook printed on stdout.

    A hook that prints nothing (or, in JSON, only white space) answered an
    empty result.

    Args:
        data: The hook's stdout.
        encoding: The encoding the image uses.

    Returns:
        The result record.

    Raises:
        MessageTooLargeError: ``data`` is over `MAX_RESULT_BYTES`.
        ProtocolVersionError: The hook speaks another protocol version.
        MessageDecodeError: ``data`` is not a well-formed result.
    """
    _check_size(data, MAX_RESULT_BYTES, "result")
    if not data or (encoding == Encoding.JSON and data.isspace()):
        return HookResult()

    wire = _load(data, encoding, "result", MAX_RESULT_BYTES)
    _check_version(wire, "result")

    return _result_from_wire(wire, encoding)


def _dump(wire: dict[str, Any], encoding: Encoding, what: str) -> bytes:
    try:
        if encoding == Encoding.MSGPACK:
            packed: bytes = msgpack.packb(wire)
            return packed

        text = json.dumps(wire, separators=(",", ":"), allow_nan=False)

    except (TypeError, ValueError, OverflowError) as exc:
        raise ProtocolError(
            f"the {what} holds a value {encoding.value} cannot carry ({exc}); "
            "keep to null, booleans, numbers, strings, lists and string-keyed maps"
        ) from exc

    return text.encode()


def _load(data: bytes, encoding: Encoding, what: str, limit: int) -> dict[str, Any]:
    try:
        if encoding == Encoding.MSGPACK:
            wire = msgpack.unpackb(
                data,
                raw=False,
                max_str_len=limit,
                max_bin_len=0,
                max_ext_len=0,
                max_array_len=limit,
                max_map_len=limit // 2,
                ext_hook=_refuse_ext,
            )
        else:
            wire = json.loads(data)

    # Both decoders raise ValueError subclasses for malformed input (bad
    # UTF-8 included); json raises RecursionError for nesting past the stack.
    except (ValueError, RecursionError) as exc:
        raise MessageDecodeError(
            f"the {what} is not valid {encoding.value} ({exc}); "
            f"check that the hook writes {encoding.value} and nothing else on stdout"
        ) from exc

    if type(wire) is not dict:
        raise MessageDecodeError(
            f'the {what} must be a map, got {_show(wire)}; write {{"protocol": 1, ...}}'
        )

    return wire


def _refuse_ext(code: int, data: bytes) -> NoReturn:
    raise ValueError(f"msgpack ext type {code} is not part of the protocol")


def _check_size(data: bytes, limit: int, what: str) -> None:
    if len(data) <= limit:
        return

    raise MessageTooLargeError(
        f"the {what} is {len(data)} bytes, over the {limit}-byte limit; "
        "move bulk data to a file or volume and send its path",
        size=len(data),
        limit=limit,
    )


def _check_version(wire: dict[str, Any], what: str) -> None:
    if "protocol" not in wire:
        raise MessageDecodeError(
            f"the {what} lacks the 'protocol' key; "
            f"every message must carry 'protocol': {PROTOCOL_VERSION}"
        )

    version = wire["protocol"]
    if type(version) is int and version == PROTOCOL_VERSION:
        return

    raise ProtocolVersionError(
        f"the {what} speaks protocol {_show(version)}, "
        f"rolecall speaks {PROTOCOL_VERSION}; "
        "use a hook SDK and image built for this protocol",
        version=version,
    )


# -- payload and result -----------------------------------------------------


def payload_to_wire(payload: HookPayload) -> dict[str, Any]:
    """Turn a payload into the plain map that goes on the wire.

    Args:
        payload: The payload to convert.

    Returns:
        A map of plain values: strings, numbers, lists and maps only.
    """
    return {
        "protocol": payload.protocol,
        "hook": _WIRE_NAMES[payload.hook],
        "service": payload.service,
        "member": _member_to_wire(payload.member),
        "members": [_member_to_wire(member) for member in payload.members],
        "config": payload.config,
        "env": payload.env,
        "request": payload.request,
    }


def _member_to_wire(member: MemberInfo) -> dict[str, Any]:
    return {
        "id": member.id,
        "role": _WIRE_NAMES[member.role],
        "address": member.address,
        "epoch": member.epoch,
    }


def _payload_from_wire(wire: dict[str, Any]) -> HookPayload:
    try:
        hook = wire["hook"]
        service = wire["service"]
        member = wire["member"]
    except KeyError as exc:
        raise _missing("payload", exc) from exc

    if type(service) is not str:
        raise _bad("payload.service", "a string", service)

    members = wire.get("members")
    if members is None:
        members = []

    if type(members) is not list:
        raise _bad("payload.members", "a list", members)

    env = _map(wire.get("env"), "payload.env")
    for key, value in env.items():
        if type(value) is not str:
            # The value may be a secret: name the key and the type only.
            raise MessageDecodeError(
                f"payload.env[{key!r}] must be a string, "
                f"got a {type(value).__name__}; quote the value in the spec"
            )

    return HookPayload(
        hook=_enum(hook, _HOOKS, "payload.hook"),
        service=service,
        member=_member_from_wire(member, "payload.member"),
        members=tuple(
            [
                _member_from_wire(item, "payload.members", index)
                for index, item in enumerate(members)
            ]
        ),
        config=_map(wire.get("config"), "payload.config"),
        env=env,
        request=_map(wire.get("request"), "payload.request"),
    )


def _member_from_wire(wire: object, where: str, index: int | None = None) -> MemberInfo:
    # The same few members come back in every payload: look the wire values
    # up first. The epoch's type is part of the key, so that an epoch of
    # true or 1.0 (equal to 1 in Python) never finds the record for 1.
    if type(wire) is not dict:
        raise _bad(_place(where, index), "a map", wire)

    epoch = wire.get("epoch")
    key = (
        wire.get("id", _ABSENT),
        wire.get("role", _ABSENT),
        wire.get("address", _ABSENT),
        epoch,
        type(epoch),
    )
    try:
        return _members_seen[key]
    except (KeyError, TypeError):  # TypeError: an unhashable (so bad) value
        member = _read_member(wire, _place(where, index))

    if len(_members_seen) >= _MEMBERS_SEEN_MAX:
        _members_seen.clear()

    _members_seen[key] = member

    return member


def _read_member(wire: dict[str, Any], where: str) -> MemberInfo:
    try:
        member_id = wire["id"]
        role = wire["role"]
        address = wire["address"]
    except KeyError as exc:
        raise _missing(where, exc) from exc

    if type(member_id) is not str:
        raise _bad(f"{where}.id", "a string", member_id)

    if type(address) is not str:
        raise _bad(f"{where}.address", "a string", address)

    return MemberInfo(
        id=member_id,
        role=None if role is None else _enum(role, _ROLES, f"{where}.role"),
        address=address,
        epoch=_counter(wire.get("epoch"), f"{where}.epoch"),
    )


def _place(where: str, index: int | None) -> str:
    if index is None:
        return where

    return f"{where}[{index}]"


def _result_from_wire(wire: dict[str, Any], encoding: Encoding) -> HookResult:
    data = _map(wire.get("data"), "result.data")
    if encoding == Encoding.MSGPACK:
        # JSON can only hold plain values; msgpack may still hide an empty
        # ``bin`` (limits refuse the others), so its data gets a full walk.
        _check_plain(data, "result.data")

    message = wire.get("message")
    if message is None:
        message = ""

    if type(message) is not str:
        raise _bad("result.message", "a string", message)

    return HookResult(data=data, message=message)


# -- plan and status --------------------------------------------------------


def plan_from_data(data: Mapping[str, Any]) -> Plan:
    """Read the ``plan`` hook's data.

    Args:
        data: The ``data`` map of the plan hook's result (in Nanobox mode,
            the JSON the hook printed).

    Returns:
        The plan record.

    Raises:
        MessageDecodeError: A required key is missing or a field has the
            wrong shape; the message names the field.
    """
    fields = _map(data, "plan")
    try:
        roles = fields["roles"]
        topologies = fields["topologies"]
    except KeyError as exc:
        raise _missing("plan", exc) from exc

    return Plan(
        roles=_enum_set(roles, _ROLES, "plan.roles"),
        topologies=_enum_set(topologies, _TOPOLOGIES, "plan.topologies"),
        behaviours=frozenset(_strings(fields.get("behaviours"), "plan.behaviours")),
        ports=_ports(fields.get("ports"), "plan.ports"),
        data_paths=_paths(fields.get("data_paths"), "plan.data_paths"),
        timeouts=_timeouts(fields.get("timeouts"), "plan.timeouts"),
    )


def plan_to_data(plan: Plan) -> dict[str, Any]:
    """Write a plan as the ``plan`` hook's data.

    Sets become sorted lists, so equal plans give equal data.

    Args:
        plan: The plan to write.

    Returns:
        A map of plain values.
    """
    return {
        "roles": sorted(role.value for role in plan.roles),
        "topologies": sorted(topology.value for topology in plan.topologies),
        "behaviours": sorted(plan.behaviours),
        "ports": list(plan.ports),
        "data_paths": list(plan.data_paths),
        "timeouts": {hook.value: seconds for hook, seconds in plan.timeouts.items()},
    }


def status_from_data(data: Mapping[str, Any]) -> MemberStatus:
    """Read the ``status`` hook's data.

    Args:
        data: The ``data`` map of the status hook's result.

    Returns:
        The status record.

    Raises:
        MessageDecodeError: A required key is missing or a field has the
            wrong shape; the message names the field.
    """
    fields = _map(data, "status")
    try:
        role = fields["role"]
        healthy = fields["healthy"]
    except KeyError as exc:
        raise _missing("status", exc) from exc

    if type(healthy) is not bool:
        raise _bad("status.healthy", "true or false", healthy)

    link_up = fields.get("link_up")
    if link_up is not None and type(link_up) is not bool:
        raise _bad("status.link_up", "true, false or null", link_up)

    return MemberStatus(
        role=None if role is None else _enum(role, _ROLES, "status.role"),
        healthy=healthy,
        replication_offset=_counter(
            fields.get("replication_offset"), "status.replication_offset"
        ),
        link_up=link_up,
        epoch=_counter(fields.get("epoch"), "status.epoch"),
        details=_map(fields.get("details"), "status.details"),
    )


def status_to_data(status: MemberStatus) -> dict[str, Any]:
    """Write a status as the ``status`` hook's data.

    Args:
        status: The status to write.

    Returns:
        A map of plain values.
    """
    role = status.role
    return {
        "role": None if role is None else role.value,
        "healthy": status.healthy,
        "replication_offset": status.replication_offset,
        "link_up": status.link_up,
        "epoch": status.epoch,
        "details": status.details,
    }


# -- field readers ----------------------------------------------------------


def _map(value: object, where: str) -> dict[str, Any]:
    if value is None:
        return {}

    if type(value) is dict:
        return value

    if isinstance(value, Mapping):
        return dict(value)

    raise _bad(where, "a map", value)


def _counter(value: object, where: str) -> int:
    if value is None:
        return 0

    if type(value) is int and 0 <= value <= _MAX_INT:
        return value

    raise _bad(where, f"an integer from 0 to {_MAX_INT}", value)


def _enum(value: object, table: Mapping[Any, _E], where: str) -> _E:
    try:
        return table[value]
    except (KeyError, TypeError) as exc:
        raise _bad(where, "one of " + ", ".join(map(repr, table)), value) from exc


def _items(value: object, where: str) -> list[Any] | tuple[Any, ...]:
    if value is None:
        return []

    if isinstance(value, list | tuple):
        return value

    raise _bad(where, "a list", value)


def _enum_set(value: object, table: Mapping[Any, _E], where: str) -> frozenset[_E]:
    items = _items(value, where)
    if not items:
        raise _bad(where, "a list of at least one of " + ", ".join(table), value)

    return frozenset(
        _enum(item, table, f"{where}[{index}]") for index, item in enumerate(items)
    )


def _strings(value: object, where: str) -> list[str]:
    items = _items(value, where)
    for index, item in enumerate(items):
        if type(item) is not str or not item:
            raise _bad(f"{where}[{index}]", "a non-empty string", item)

    return list(items)


def _ports(value: object, where: str) -> tuple[int, ...]:
    items = _items(value, where)
    for index, item in enumerate(items):
        if type(item) is not int or not 0 < item < 1 << 16:
            raise _bad(f"{where}[{index}]", "a port number from 1 to 65535", item)

    return tuple(items)


def _paths(value: object, where: str) -> tuple[str, ...]:
    paths = _strings(value, where)
    for index, path in enumerate(paths):
        if not path.startswith("/"):
            raise _bad(f"{where}[{index}]", "an absolute path", path)

    return tuple(paths)


def _timeouts(value: object, where: str) -> dict[HookName, float]:
    timeouts: dict[HookName, float] = {}
    for name, seconds in _map(value, where).items():
        hook = _enum(name, _HOOKS, f"{where} key")
        if type(seconds) not in (int, float) or not 0 < seconds < float("inf"):
            raise _bad(f"{where}.{name}", "a positive number of seconds", seconds)

        timeouts[hook] = float(seconds)

    return timeouts


def _check_plain(value: object, where: str) -> None:
    # Iterative, because a message may nest as deep as the decoder allows.
    pending = [value]
    while pending:
        item = pending.pop()
        if type(item) is dict:
            for key in item:
                if type(key) is not str:
                    raise _bad(f"{where} key", "a string", key)

            pending.extend(item.values())
            continue

        if type(item) is list:
            pending.extend(item)
            continue

        if type(item) not in _PLAIN_TYPES:
            raise _bad(
                f"{where} value", "null, a boolean, number, string, list or map", item
            )


# -- errors -----------------------------------------------------------------


def _show(value: object) -> str:
    text = repr(value)
    if len(text) > _MAX_REPR:
        text = text[:_MAX_REPR] + "..."

    return f"{text} ({type(value).__name__})"


def _bad(where: str, expected: str, value: object) -> MessageDecodeError:
    return MessageDecodeError(
        f"{where} must be {expected}, got {_show(value)}; "
        "see docs/hooks-protocol.md for the shape"
    )


def _missing(where: str, exc: KeyError) -> MessageDecodeError:
    return MessageDecodeError(
        f"{where} lacks the {exc.args[0]!r} key; "
        "see docs/hooks-protocol.md for the shape"
    )
