"""The entry point for embedding rolecall in an async Python service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from rolecall.actors import ContainerRuntime, open_docker_runtime
from rolecall.supervisor import Supervisor, open_supervisor

__all__ = ["open_control_plane"]


@asynccontextmanager
async def open_control_plane(
    *,
    docker_url: str | None = None,
    runtime: ContainerRuntime | None = None,
    probe_interval: float = 2.0,
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

    Yields:
        The supervisor, with the operations of the runner's control API:
        ``apply``, ``convert``, ``switchover``, ``pause_failover``,
        ``resume_failover``, ``wait_converged``, ``status``, ``statuses``,
        ``plan``, ``remove``, ``release``, and ``open_timeline`` for an
        async iterator of events.

    Raises:
        EngineUnavailableError: No Docker engine answers at ``docker_url``.
    """
    if runtime is not None:
        async with open_supervisor(runtime, probe_interval=probe_interval) as plane:
            yield plane
        return

    async with (
        open_docker_runtime(docker_url) as docker,
        open_supervisor(docker, probe_interval=probe_interval) as plane,
    ):
        yield plane
