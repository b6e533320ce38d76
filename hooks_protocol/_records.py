"""The records that cross the boundary between rolecall and a hook.

A hook receives a `HookPayload` and answers with a `HookResult`. The result's
``data`` map is free-form on the wire; `Plan` and `MemberStatus` are the typed
readings of the ``plan`` and ``status`` hooks' data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from attrs import field, fields, frozen

from ._vocabulary import PROTOCOL_VERSION, HookName, Role, Topology

__all__ = [
    "HookPayload",
    "HookResult",
    "MemberInfo",
    "MemberStatus",
    "Plan",
]


def _frozen_dict(value: Mapping[str, Any] | None) -> dict[str, Any]:
    return dict(value or {})


@frozen
class MemberInfo:
    """Who a member is, as the hooks see it.

    Attributes:
        id: Stable member id, unique within the service (``cache-1``).
        role: The role the member holds or is asked to take.
        address: ``host:port`` at which other members reach it.
        epoch: The epoch of the last role command it was given.
    """

    id: str
    role: Role | None
    address: str
    epoch: int = 0


@frozen
class HookPayload:
    """Everything a hook is told when it runs.

    Attributes:
        hook: Which hook runs.
        service: Name of the service the member belongs to.
        member: The member the hook runs in.
        members: Every member of the service, this one included.
        config: The service's configuration from the spec.
        env: Environment the spec gives the service (secrets included: the
            payload never reaches a log).
        request: What is asked, hook by hook (``role`` gets ``role``,
            ``primary`` and ``epoch``; see the protocol document).
        protocol: The protocol version of this payload.
    """

    hook: HookName
    service: str
    member: MemberInfo
    members: tuple[MemberInfo, ...] = ()
    config: dict[str, Any] = field(factory=dict, converter=_frozen_dict)
    env: dict[str, str] = field(factory=dict, converter=_frozen_dict)
    request: dict[str, Any] = field(factory=dict, converter=_frozen_dict)
    protocol: int = PROTOCOL_VERSION


@frozen
class HookResult:
    """What a hook answered.

    Attributes:
        data: The hook's answer; its shape depends on the hook.
        message: A short human-readable note from the hook.
        protocol: The protocol version the hook speaks.
    """

    data: dict[str, Any] = field(factory=dict, converter=_frozen_dict)
    message: str = ""
    protocol: int = PROTOCOL_VERSION


@frozen
class Plan:
    """What an image says it can do (the ``plan`` hook's data).

    Attributes:
        roles: Roles the image can take.
        topologies: Service shapes it supports.
        behaviours: Extra abilities (``migratable``, ``backupable``).
        ports: Container ports the service listens on; the first is the one
            clients use.
        data_paths: Paths inside the container that hold data worth keeping.
        timeouts: Per-hook deadlines in seconds that override the defaults.
        moves: How a running service of this image can move to another
            engine: ``replication`` (new members follow the writer, then
            take over) and ``export`` (``export``/``import`` hooks copy the
            data). Empty: it cannot move while it runs.
    """

    roles: frozenset[Role]
    topologies: frozenset[Topology]
    behaviours: frozenset[str] = frozenset()
    ports: tuple[int, ...] = ()
    data_paths: tuple[str, ...] = ()
    timeouts: dict[HookName, float] = field(factory=dict)
    moves: frozenset[str] = frozenset()


@frozen
class MemberStatus:
    """What a member reports about itself (the ``status`` hook's data).

    Attributes:
        role: The role the service inside the container actually holds.
        healthy: Whether the service answers as it should.
        replication_offset: How far the member's data has come, in the
            service's own unit (Redis: the replication offset); the failover
            candidate with the highest wins.
        link_up: For a replica, whether its link to the primary is up;
            ``None`` for other roles.
        epoch: The last epoch the member applied.
        details: Anything else the hook reports, shown by ``status``.
    """

    role: Role | None
    healthy: bool
    replication_offset: int = 0
    link_up: bool | None = None
    epoch: int = 0
    details: dict[str, Any] = field(factory=dict, converter=_frozen_dict)


# -- records from a decoder ----------------------------------------------------

_Setter = Callable[[object, object], None]


def _slot_setters(cls: type) -> tuple[_Setter, ...]:
    """Each field's slot setter, in field order; they pass a frozen class."""
    return tuple(getattr(cls, spec.name).__set__ for spec in fields(cls))


# Unpacked here so that a field added to a record, and missing from its
# builder below, fails at import instead of leaving a field unset.
(
    _set_hook,
    _set_service,
    _set_member,
    _set_members,
    _set_config,
    _set_env,
    _set_request,
    _set_payload_protocol,
) = _slot_setters(HookPayload)
_set_data, _set_message, _set_result_protocol = _slot_setters(HookResult)


def _decoded_payload(
    *,
    hook: HookName,
    service: str,
    member: MemberInfo,
    members: tuple[MemberInfo, ...],
    config: dict[str, Any],
    env: dict[str, str],
    request: dict[str, Any],
) -> HookPayload:
    """A payload from the codec's checked values, its maps taken as they are.

    ``HookPayload(...)`` copies every map it is given, to keep the caller's
    later changes out of the record; a decoder's maps are new and its own,
    and those copies were the larger part of a decode.
    """
    payload = object.__new__(HookPayload)
    _set_hook(payload, hook)
    _set_service(payload, service)
    _set_member(payload, member)
    _set_members(payload, members)
    _set_config(payload, config)
    _set_env(payload, env)
    _set_request(payload, request)
    _set_payload_protocol(payload, PROTOCOL_VERSION)

    return payload


def _decoded_result(*, data: dict[str, Any], message: str) -> HookResult:
    """A result from the codec's checked values, as `_decoded_payload`."""
    result = object.__new__(HookResult)
    _set_data(result, data)
    _set_message(result, message)
    _set_result_protocol(result, PROTOCOL_VERSION)

    return result
