"""``rolecall run SPEC``: the runner process.

It takes the state directory's lock, starts the control plane, applies the
spec file, opens the control socket, and then waits for signals:

- SIGTERM, SIGINT: stop the control plane: actors stop, containers keep
  running (stopping rolecall is not stopping the services);
- SIGHUP: read the spec file again and reconcile to it; a file with errors
  is rejected and the running state kept.

Signals are received from the first moment, so one that arrives while the
runner is still starting (building an image, say) is handled too.
"""

from __future__ import annotations

import enum
import os
import signal
import time
from collections.abc import AsyncIterator, Mapping
from collections.abc import Set as AbstractSet
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from pathlib import Path

import anyio
import structlog
from anyio.abc import TaskGroup
from attrs import define, field

from rolecall.actors import (
    DEFAULT_ENGINE,
    ContainerRuntime,
    DockerRuntime,
    open_docker_runtime,
    open_engine_runtime,
)
from rolecall.supervisor import open_supervisor

from ._control_server import serve_control
from ._crash_switch import crash_switch
from ._errors import SpecFileError
from ._logging import Redactor
from ._runner import Runner
from ._spec_file import SpecFile, load_spec_file
from ._state_dir import SOCKET_NAME, hold_state_dir

__all__ = ["TAKE_OVER_ALL", "open_runner", "run_runner"]

_log = structlog.get_logger("rolecall.runner")

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class _All(enum.Enum):
    SERVICES = "all"


TAKE_OVER_ALL = _All.SERVICES
"""Take over every service of the spec file (``--take-over-all``)."""


async def run_runner(
    spec_path: Path,
    *,
    state_dir: Path,
    docker_url: str | None = None,
    probe_interval: float = 2.0,
    redactor: Redactor | None = None,
    take_over: AbstractSet[str] | _All = frozenset(),
) -> None:
    """Run the control plane for a spec file until SIGTERM or SIGINT.

    Args:
        spec_path: The spec file (TOML).
        state_dir: Where the control socket and the lock live.
        docker_url: The Docker engine; ``DOCKER_HOST`` or the local socket
            by default.
        probe_interval: Seconds between health passes of each service.
        redactor: Masks secret values in log lines; given the spec file's
            secrets as they are read.
        take_over: Services (or `TAKE_OVER_ALL`) whose claim another control
            plane holds to take over at the start (see `Runner.load`).

    Raises:
        SpecFileError: The spec file cannot be read or breaks the schema,
            or ``take_over`` names a service it lacks.
        StateDirLockedError: Another runner uses ``state_dir``.
        EngineUnavailableError: No engine answers.
        RolecallError: A service of the spec cannot be started.
    """
    process = _RunnerProcess(
        spec_path=spec_path,
        state_dir=state_dir,
        docker_url=docker_url,
        probe_interval=probe_interval,
        redactor=redactor or Redactor(),
    )
    # Read once before anything else, so a broken file fails at once.
    spec_file = load_spec_file(spec_path, docker_url=docker_url)
    process.take_over = _taken_over(spec_file, take_over)
    process.redactor.update(spec_file.secrets())
    with (
        anyio.open_signal_receiver(*_STOP_SIGNALS, signal.SIGHUP) as signals,
        hold_state_dir(state_dir),
    ):
        async with anyio.create_task_group() as group:
            group.start_soon(process.serve, group.cancel_scope)
            await process.handle_signals(signals, group)

    _log.info("runner_stopped", state_dir=str(state_dir))


@asynccontextmanager
async def open_runner(
    spec_file: SpecFile,
    *,
    runtime: ContainerRuntime,
    state_dir: Path,
    probe_interval: float = 2.0,
    redactor: Redactor | None = None,
    docker_url: str | None = None,
    allowed_uid: int | None = None,
    take_over: AbstractSet[str] = frozenset(),
    engines: Mapping[str, ContainerRuntime] | None = None,
) -> AsyncIterator[Runner]:
    """Run a runner, its control socket included, in the caller's loop.

    The services of ``spec_file`` are applied and the socket listens
    (``state_dir/control.sock``, mode 0600) before the block starts. The
    journal in ``state_dir`` is read first: each service adopts the
    containers it has on the engine, and a conversion made through the
    control API since the file last changed that service's topology or
    replicas is kept. Leaving the block stops the control plane and removes
    the socket; the containers keep running. It takes the journal's lock,
    not the runner's: `run_runner` takes that.

    Args:
        spec_file: The spec file, loaded.
        runtime: The engine, or a fake one in tests.
        state_dir: Where the socket is made.
        probe_interval: Seconds between health passes of each service.
        redactor: Masks the spec's secret values in log lines.
        docker_url: The engine's address, for building example images.
        allowed_uid: The user allowed on the socket; this process's own
            by default.
        take_over: Services to take over from another control plane that
            claimed them (see `Runner.load`).
        engines: The runtimes of the file's other engines, by name (see
            ``SpecFile.engines``); ``runtime`` is the default one.

    Raises:
        StateCorruptError: A journal record is damaged (the message says
            what to do).
        RolecallError: A service of the spec cannot be started.
    """
    socket_path = state_dir / SOCKET_NAME
    async with (
        open_supervisor(
            runtime,
            engines=engines,
            peer_addresses={
                name: config.peer_address
                for name, config in spec_file.engines.items()
                if config.peer_address is not None
            },
            probe_interval=probe_interval,
            state_dir=state_dir,
            on_event=crash_switch(),
        ) as supervisor,
        anyio.create_task_group() as group,
    ):
        runner = Runner(
            supervisor=supervisor,
            runtime=runtime,
            spec_path=spec_file.path,
            state_dir=state_dir,
            task_group=group,
            redactor=redactor or Redactor(),
            docker_url=docker_url,
            engine_configs=dict(spec_file.engines),
        )
        group.start_soon(runner.record_events, name="runner-history")
        await runner.load(spec_file, resume=True, take_over=take_over)
        listener = await anyio.create_unix_listener(socket_path, mode=0o600)
        group.start_soon(
            partial(serve_control, listener, runner, allowed_uid=allowed_uid),
            name="control",
        )
        try:
            yield runner
        finally:
            socket_path.unlink(missing_ok=True)
            group.cancel_scope.cancel()


@asynccontextmanager
async def _open_engines(
    spec_file: SpecFile, docker_url: str | None
) -> AsyncIterator[tuple[ContainerRuntime, dict[str, ContainerRuntime]]]:
    """The default engine's runtime, checked, and the others', by name.

    Only the default engine must answer at the start: another that does
    not leaves its members unknown until it does (see the supervisor's
    observing), and the rest of the runner goes on.
    """
    default = spec_file.engines.get(DEFAULT_ENGINE)
    async with AsyncExitStack() as stack:
        opened = (
            open_engine_runtime(default)
            if default is not None
            else open_docker_runtime(docker_url)
        )
        runtime = await stack.enter_async_context(opened)
        others: dict[str, ContainerRuntime] = {}
        for name, config in spec_file.engines.items():
            if name != DEFAULT_ENGINE:
                other = DockerRuntime.for_engine(config)
                stack.push_async_callback(other.aclose)
                others[name] = other

        yield runtime, others


@define(eq=False)
class _RunnerProcess:
    """The runner's start, its serving, and its answers to signals."""

    spec_path: Path
    state_dir: Path
    docker_url: str | None
    probe_interval: float
    redactor: Redactor
    # Services to take over from another control plane at the start.
    take_over: AbstractSet[str] = frozenset()
    # Set once the services are applied and the socket listens.
    ready: anyio.Event = field(factory=anyio.Event)
    # The runner, once `ready` is set.
    runner: Runner | None = None
    # Whether a SIGHUP that came during the start is waiting for it.
    reload_waiting: bool = False

    async def serve(self, outer: anyio.CancelScope) -> None:
        started = time.monotonic()
        socket_path = self.state_dir / SOCKET_NAME
        try:
            spec_file = load_spec_file(self.spec_path, docker_url=self.docker_url)
            async with (
                _open_engines(spec_file, self.docker_url) as (runtime, engines),
                open_runner(
                    spec_file,
                    runtime=runtime,
                    engines=engines,
                    state_dir=self.state_dir,
                    probe_interval=self.probe_interval,
                    redactor=self.redactor,
                    docker_url=self.docker_url,
                    take_over=self.take_over,
                ) as runner,
            ):
                self.runner = runner
                self.ready.set()
                _log.info(
                    "runner_started",
                    pid=os.getpid(),
                    spec=str(self.spec_path),
                    state_dir=str(self.state_dir),
                    socket=str(socket_path),
                    services=sorted(runner.entries),
                    duration_ms=round((time.monotonic() - started) * 1000),
                )
                await anyio.sleep_forever()
        finally:
            # Whatever ended the serving, the signal loop has nothing left
            # to wait for.
            outer.cancel()

    async def handle_signals(
        self, signals: AsyncIterator[int], group: TaskGroup
    ) -> None:
        async for received in signals:
            if received in _STOP_SIGNALS:
                _log.info("runner_stopping", signal=signal.Signals(received).name)
                group.cancel_scope.cancel()
                return

            if self.runner is not None:
                group.start_soon(self.runner.reload, name="reload")
            elif not self.reload_waiting:
                # The file is read again once the start is done: a reload
                # asked for meanwhile would find the file the start read.
                self.reload_waiting = True
                group.start_soon(self._reload_when_ready, name="reload")

    async def _reload_when_ready(self) -> None:
        await self.ready.wait()
        assert self.runner is not None  # noqa: S101  (set before `ready`)
        await self.runner.reload()


def _taken_over(spec_file: SpecFile, wanted: AbstractSet[str] | _All) -> frozenset[str]:
    """The services to take over, checked against the spec file.

    Raises:
        SpecFileError: ``wanted`` names a service the file lacks.
    """
    if wanted is TAKE_OVER_ALL:
        return frozenset(spec_file.services)

    unknown = sorted(set(wanted) - set(spec_file.services))
    if unknown:
        known = ", ".join(sorted(spec_file.services)) or "none"
        raise SpecFileError(
            f"--take-over names service {unknown[0]!r}, which the spec file"
            f" does not have (it has: {known})",
            path=spec_file.path,
        )

    return frozenset(wanted)
