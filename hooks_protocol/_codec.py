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

The plan and status hooks' data have readers of their own in ``_hook_data``,
re-exported here with the rest of the codec; both check fields with the
readers of ``_fields``.
"""

from __future__ import annotations

import json
from typing import Any, Final, NoReturn

import msgpack  # type: ignore[import-untyped]

from ._errors import (
    MessageDecodeError,
    MessageTooLargeError,
    ProtocolError,
    ProtocolVersionError,
)
from ._fields import (
    _HOOKS,
    _ROLES,
    _bad,
    _check_plain,
    _counter,
    _enum,
    _map,
    _missing,
    _show,
)
from ._hook_data import (
    plan_from_data,
    plan_to_data,
    status_from_data,
    status_to_data,
)
from ._records import (
    HookPayload,
    HookResult,
    MemberInfo,
    _decoded_payload,
    _decoded_result,
)
from ._vocabulary import (
    MAX_PAYLOAD_BYTES,
    MAX_RESULT_BYTES,
    PROTOCOL_VERSION,
    Encoding,
    HookName,
    Role,
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
    wire = _load(data, encoding, "payload")
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

    wire = _load(data, encoding, "result")
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


def _load(data: bytes, encoding: Encoding, what: str) -> dict[str, Any]:
    try:
        if encoding == Encoding.MSGPACK:
            # Strings, arrays and maps are held to the data's own length by
            # msgpack's defaults, and the data to the limit by the caller;
            # ``bin`` and ``ext`` are refused outright.
            wire = msgpack.unpackb(
                data,
                raw=False,
                max_bin_len=0,
                max_ext_len=0,
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

    return _decoded_payload(
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

    return _decoded_result(data=data, message=message)
