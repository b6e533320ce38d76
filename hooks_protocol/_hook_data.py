"""The ``plan`` and ``status`` hooks' data, read into records and written back.

A hook's result carries a free ``data`` map; for these two hooks rolecall
knows its shape. The readers check every field as the codec does and name
the one that is wrong; the writers give the plain maps a hook prints.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._fields import (
    _ROLES,
    _TOPOLOGIES,
    _bad,
    _counter,
    _enum,
    _enum_set,
    _map,
    _missing,
    _paths,
    _ports,
    _strings,
    _timeouts,
)
from ._records import MemberStatus, Plan

__all__ = [
    "plan_from_data",
    "plan_to_data",
    "status_from_data",
    "status_to_data",
]


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
        moves=frozenset(_strings(fields.get("moves"), "plan.moves")),
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
        "moves": sorted(plan.moves),
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
