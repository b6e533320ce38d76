"""What the journal keeps of a service, and its plain-data form.

A `ServiceRecord` holds what a restarted control plane cannot learn from
the engine or the members:

- the desired shape as operators last changed it (``convert``) and the
  shape the spec asked for when they did, so a conversion outlives a crash
  while the spec stays the same;
- the highest epoch handed out, written before a role command carrying it
  is sent, so no epoch is ever used twice;
- the ordinal of the next member, so ids are never reused;
- per member, the last role applied (with whom a replica follows),
  whether it was fenced and whether it completed a sync: a container that
  is down cannot be asked, and a replica whose primary is gone cannot show
  that it synced;
- the step under way, if any (`ChangeRecord`), so the next start finishes
  it or undoes it;
- whether failover is paused;
- the engine the service lives on when a move put it there (and the one
  it lived on before, which the caller's spec may still name), each
  member's engine, and the move under way (`MoveRecord`): its target, its
  way and its phase, so a move outlives a crash.

No secret is written: the image, ``config`` and ``env`` come again from the
spec file (runner) or from the caller's ``apply`` (embedded).
"""

from __future__ import annotations

import time
from typing import Any

from attrs import field, frozen

from rolecall.hooks_protocol import Role, Topology

__all__ = [
    "RECORD_FORMAT",
    "ChangeRecord",
    "MemberRecord",
    "MoveRecord",
    "ServiceRecord",
    "record_from_data",
    "record_to_data",
]

RECORD_FORMAT = 1
"""The version of the record's plain-data form."""


@frozen
class MemberRecord:
    """One member as the journal keeps it.

    Attributes:
        number: Its ordinal in the service.
        role: The last role it applied; ``None`` before any.
        primary: For a replica: whom it follows.
        epoch: The epoch of that role.
        fenced: Whether rolecall killed it to keep it from taking writes.
        synced: Whether it completed a sync (it holds the service's data),
            which a replica whose primary is gone can no longer show.
        engine: The engine its container runs on.
    """

    number: int
    role: Role | None = None
    primary: str | None = None
    epoch: int = 0
    fenced: bool = False
    synced: bool = False
    engine: str = "default"


@frozen
class MoveRecord:
    """A move of the service to another engine, under way.

    Attributes:
        target: The engine it moves to.
        source: The engine it moves from.
        way: ``replication`` or ``export`` (see the plan's ``moves``).
        phase: ``grow`` (members made on the target catch up), ``switch``
            (writes handed to one of them) or ``retire`` (the old members
            removed); see ``_moving``.
    """

    target: str
    source: str
    way: str
    phase: str


@frozen
class ChangeRecord:
    """The step under way when the record was written.

    Attributes:
        step: ``create``, ``restart``, ``prepare``, ``role``, ``fence``,
            ``remove`` or ``switchover``.
        member: The member it acts on.
        role: For ``role``: the role asked for.
        primary: For ``role``: whom to follow.
        epoch: For ``role``: the command's epoch.
    """

    step: str
    member: str
    role: Role | None = None
    primary: str | None = None
    epoch: int | None = None


@frozen
class ServiceRecord:
    """Everything the journal keeps of one service; see the module docs."""

    service: str
    topology: Topology
    replicas: int
    source_topology: Topology
    source_replicas: int
    epoch: int = 0
    next_number: int = 1
    failover_paused: bool = False
    members: dict[str, MemberRecord] = field(factory=dict)
    change: ChangeRecord | None = None
    written_at: float = field(factory=time.time)
    engine: str = "default"
    source_engine: str = "default"
    move: MoveRecord | None = None


def record_to_data(record: ServiceRecord) -> dict[str, Any]:
    """The record as plain msgpack-ready data."""
    return {
        "format": RECORD_FORMAT,
        "service": record.service,
        "topology": record.topology.value,
        "replicas": record.replicas,
        "source_topology": record.source_topology.value,
        "source_replicas": record.source_replicas,
        "epoch": record.epoch,
        "next_number": record.next_number,
        "failover_paused": record.failover_paused,
        "members": {
            member_id: {
                "number": member.number,
                "role": _role_value(member.role),
                "primary": member.primary,
                "epoch": member.epoch,
                "fenced": member.fenced,
                "synced": member.synced,
                "engine": member.engine,
            }
            for member_id, member in record.members.items()
        },
        "change": None if record.change is None else _change_data(record.change),
        "written_at": record.written_at,
        "engine": record.engine,
        "source_engine": record.source_engine,
        "move": None if record.move is None else _move_data(record.move),
    }


def record_from_data(data: dict[str, Any]) -> ServiceRecord:
    """Read a record back.

    Raises:
        ValueError: The data is not a record of this format.
    """
    if data.get("format") != RECORD_FORMAT:
        raise ValueError(f"unknown record format {data.get('format')!r}")

    try:
        members = {
            str(member_id): MemberRecord(
                number=int(member["number"]),
                role=_role(member.get("role")),
                primary=member.get("primary"),
                epoch=int(member.get("epoch", 0)),
                fenced=bool(member.get("fenced", False)),
                synced=bool(member.get("synced", False)),
                engine=str(member.get("engine", "default")),
            )
            for member_id, member in dict(data.get("members") or {}).items()
        }
        change = data.get("change")
        move = data.get("move")
        return ServiceRecord(
            service=str(data["service"]),
            topology=Topology(data["topology"]),
            replicas=int(data["replicas"]),
            source_topology=Topology(data["source_topology"]),
            source_replicas=int(data["source_replicas"]),
            epoch=int(data["epoch"]),
            next_number=int(data["next_number"]),
            failover_paused=bool(data.get("failover_paused", False)),
            members=members,
            change=None if change is None else _change(change),
            written_at=float(data.get("written_at", 0.0)),
            engine=str(data.get("engine", "default")),
            source_engine=str(data.get("source_engine", "default")),
            move=None if move is None else _move(move),
        )
    except (KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"a record field is missing or misshapen: {error}") from None


def _move_data(move: MoveRecord) -> dict[str, Any]:
    return {
        "target": move.target,
        "source": move.source,
        "way": move.way,
        "phase": move.phase,
    }


def _move(data: dict[str, Any]) -> MoveRecord:
    return MoveRecord(
        target=str(data["target"]),
        source=str(data["source"]),
        way=str(data["way"]),
        phase=str(data["phase"]),
    )


def _change_data(change: ChangeRecord) -> dict[str, Any]:
    return {
        "step": change.step,
        "member": change.member,
        "role": _role_value(change.role),
        "primary": change.primary,
        "epoch": change.epoch,
    }


def _change(data: dict[str, Any]) -> ChangeRecord:
    epoch = data.get("epoch")
    return ChangeRecord(
        step=str(data["step"]),
        member=str(data["member"]),
        role=_role(data.get("role")),
        primary=data.get("primary"),
        epoch=None if epoch is None else int(epoch),
    )


def _role(value: object) -> Role | None:
    return None if value is None else Role(str(value))


def _role_value(role: Role | None) -> str | None:
    return None if role is None else role.value
