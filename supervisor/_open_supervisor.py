"""Opening a supervisor: its task group, its journal and its engines."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import anyio

from rolecall.actors import ActorSpawner, ContainerRuntime

from ._durable import load_records
from ._identity import load_identity, process_identity
from ._journal import Journal
from ._naming import DEFAULT_ENGINE
from ._records import ServiceEvent
from ._supervisor import Supervisor
from ._timeline import Timeline

__all__ = ["open_supervisor"]


@asynccontextmanager
async def open_supervisor(
    runtime: ContainerRuntime,
    *,
    engines: Mapping[str, ContainerRuntime] | None = None,
    peer_addresses: Mapping[str, str] | None = None,
    probe_interval: float = 2.0,
    state_dir: Path | None = None,
    on_event: Callable[[ServiceEvent], None] | None = None,
) -> AsyncIterator[Supervisor]:
    """Run a supervisor for the duration of the ``async with`` block.

    Leaving the block stops the control plane, not the services: containers
    keep running. A hook running at that moment is cancelled (its process
    killed) rather than waited for; hooks are idempotent, so the next
    supervisor runs it again. A service applied again later adopts its
    containers (see ``_adoption``).

    Args:
        runtime: The engine to manage containers on; its name is
            ``default``, the engine of every spec that names none.
        engines: More engines by name (see `ServiceSpec.engine`); one
            runtime per engine, shared by every member placed there.
        peer_addresses: Engine name -> the host address at which
            containers on the other engines reach ports published on it;
            members publish their ports there too. A service spans engines
            (during a move) only between engines that have one.
        probe_interval: Seconds between health passes of each service.
        state_dir: Where the journal lives (see ``_journal``); its records
            are read, and its lock held, for the block. It also keeps the
            control plane's id, which its claims on services name (see
            ``_identity``). ``None`` keeps nothing on disk: adoption then
            learns from labels and ``status`` alone, and the id is the
            process's.
        on_event: Called with every timeline event the moment it happens,
            in the task that caused it; it must not block.

    Raises:
        StateCorruptError: A journal record is damaged; the message says
            which and what to do.
        StateLockedError: Another control plane holds ``state_dir``.
        StateError: The control plane's id cannot be read or written.
    """
    journal = Journal.open(state_dir) if state_dir is not None else None
    try:
        records = load_records(journal) if journal is not None else {}
        identity = (
            load_identity(state_dir) if state_dir is not None else process_identity()
        )
        async with anyio.create_task_group() as group:
            actors = ActorSpawner(group)
            supervisor = Supervisor(
                runtime=runtime,
                engines={DEFAULT_ENGINE: runtime, **(engines or {})},
                peer_addresses=dict(peer_addresses or {}),
                task_group=group,
                actors=actors,
                probe_interval=probe_interval,
                journal=journal,
                records=records,
                timeline=Timeline(on_event=on_event),
                identity=identity,
            )
            group.start_soon(supervisor.watch_engine, name="engine-events")
            try:
                yield supervisor
            finally:
                with anyio.CancelScope(shield=True):
                    await supervisor.aclose()
                group.cancel_scope.cancel()
    finally:
        if journal is not None:
            journal.close()
