"""The entry point for embedding rolecall in an async Python service."""

from __future__ import annotations

import enum
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from rolecall.actors import ContainerRuntime, open_docker_runtime
from rolecall.supervisor import Supervisor, open_supervisor

from ._state_dir import default_state_dir

__all__ = ["DEFAULT_STATE_DIR", "open_control_plane"]


class _Default(enum.Enum):
    STATE_DIR = "default"


DEFAULT_STATE_DIR = _Default.STATE_DIR
"""Marks the default state directory of an embedded control plane: the
folder ``embedded`` inside the runner's default (``$ROLECALL_STATE_DIR``,
``/var/lib/rolecall`` for root, else ``$XDG_STATE_HOME/rolecall``)."""


@asynccontextmanager
async def open_control_plane(
    *,
    docker_url: str | None = None,
    runtime: ContainerRuntime | None = None,
    probe_interval: float = 2.0,
    state_dir: str | os.PathLike[str] | _Default | None = DEFAULT_STATE_DIR,
) -> AsyncIterator[Supervisor]:
    """Run rolecall's control plane inside the caller's event loop.

    Everything runs in tasks of the ``async with`` block; no thread is
    started. Leaving the block stops the control plane, not the services:
    their containers keep running.

    Args:
        docker_url: The Docker engine (``unix:///path`` or ``tcp://host:port``);
            by default ``DOCKER_HOST``, else the local socket.
        runtime: A runtime to use instead of Docker, such as
            ``rolecall.testing.FakeRuntime``; it is not closed on exit.
        probe_interval: Seconds between health passes of each service.
        state_dir: Where the journal lives: the desired shape of each
            service after a conversion, the highest epoch, the step under
            way (no secret is written). A service applied again after a
            restart adopts its containers and resumes from it. By default
            `DEFAULT_STATE_DIR`; ``None`` keeps nothing on disk (adoption
            then learns from labels and ``status`` hooks alone). One
            control plane at a time may use a directory. The directory
            also keeps the control plane's id, which its claims on
            services name: a service another control plane claimed is
            given up on unless applied with ``take_over=True``
            (`Supervisor.apply`); with ``None`` the id is the process's.

    Yields:
        The supervisor, with the operations of the runner's control API:
        ``apply``, ``convert``, ``switchover``, ``pause_failover``,
        ``resume_failover``, ``wait_converged``, ``status``, ``statuses``,
        ``plan``, ``remove``, ``release``, and ``open_timeline`` for an
        async iterator of events.

    Raises:
        EngineUnavailableError: No Docker engine answers at ``docker_url``.
        StateLockedError: Another control plane uses ``state_dir``.
        StateCorruptError: A journal record is damaged; the message says
            which file and what to do.
    """
    if state_dir is DEFAULT_STATE_DIR:
        journal_dir: Path | None = default_state_dir() / "embedded"
    elif state_dir is None:
        journal_dir = None
    else:
        journal_dir = Path(state_dir)

    if runtime is not None:
        async with open_supervisor(
            runtime, probe_interval=probe_interval, state_dir=journal_dir
        ) as plane:
            yield plane
        return

    async with (
        open_docker_runtime(docker_url) as docker,
        open_supervisor(
            docker, probe_interval=probe_interval, state_dir=journal_dir
        ) as plane,
    ):
        yield plane
