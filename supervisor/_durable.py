"""Between a controller and the journal: snapshots written, records read.

A controller writes its whole `ServiceRecord` at each point that matters
(see ``_acting`` and ``_switchover``): before a role command is sent (its
epoch), before a container is created or removed (the step under way),
after a step changed what the journal holds, and when the desired state or
the failover pause changes. Whole snapshots keep every write idempotent: the
newest one is the truth.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog
from attrs import evolve

from rolecall.hooks_protocol import StateCorruptError

from ._journal import Journal
from ._service_record import (
    ChangeRecord,
    MemberRecord,
    ServiceRecord,
    record_from_data,
    record_to_data,
)

if TYPE_CHECKING:
    from ._controller_state import ControllerState

__all__ = ["load_records", "save_snapshot", "snapshot"]

_log = structlog.get_logger("rolecall.supervisor")


def snapshot(state: ControllerState, change: ChangeRecord | None) -> ServiceRecord:
    """The record of a controller's service as it stands."""
    source_topology, source_replicas = state.source
    return ServiceRecord(
        service=state.spec.name,
        topology=state.spec.topology,
        replicas=state.spec.replicas,
        source_topology=source_topology,
        source_replicas=source_replicas,
        epoch=state.epoch,
        next_number=state.next_number,
        failover_paused=state.failover_paused,
        members={
            member.id: MemberRecord(
                number=member.number,
                role=member.actor.role,
                primary=member.actor.primary,
                epoch=member.actor.epoch,
                fenced=member.fenced,
                synced=member.synced,
                engine=member.engine,
            )
            for member in state.members.values()
        },
        change=change,
        engine=state.spec.engine,
        source_engine=state.source_engine,
        move=state.moving,
    )


def save_snapshot(
    journal: Journal, state: ControllerState, change: ChangeRecord | None
) -> None:
    """Write a controller's record as a new generation.

    Raises:
        StateError: The disk refused the write.
    """
    journal.save(state.spec.name, record_to_data(snapshot(state, change)))


def load_records(journal: Journal) -> dict[str, ServiceRecord]:
    """Every service's newest record.

    Raises:
        StateCorruptError: A record is damaged, or of a shape this version
            does not read; the message says what to do.
    """
    records: dict[str, ServiceRecord] = {}
    for service in journal.services():
        data = journal.load(service)
        if data is None:
            continue

        try:
            record = record_from_data(data)
        except ValueError as error:
            folder = journal.root / service
            raise StateCorruptError(
                f"the journal record of service {service!r} in {str(folder)!r}"
                f" cannot be read: {error}; rolecall leaves it as it is. Move"
                f" the folder away (`mv {folder} {folder}.unread`) and start"
                " again: rolecall then adopts the service's containers by their"
                " labels and learns roles and epochs from their status hooks",
                path=str(folder),
                previous=None,
            ) from None

        lost = journal.set_aside(service)
        if lost:
            # An older generation: its epoch may be short by one per
            # generation set aside, and an epoch must never be used twice.
            record = evolve(record, epoch=record.epoch + lost)
            _log.warning(
                "journal_generation_set_aside",
                service=service,
                generations=lost,
                epoch=record.epoch,
            )

        records[service] = record

    return records
