"""The runner: the control plane for the services of a spec file.

`Runner` holds what the runner knows besides the supervisor's state: the
spec file's entries as last accepted, a history of timeline events, and the
operations started through the control API. `run_runner` is
``rolecall run``: it takes the state directory's lock, starts the
supervisor and the control socket, and handles signals until told to stop.
"""

from __future__ import annotations

import collections
import os
import time
from collections.abc import Awaitable, Callable
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any

import anyio
import structlog
from anyio.abc import TaskGroup
from attrs import define, field

from rolecall.actors import ContainerRuntime, EngineConfig
from rolecall.hooks_protocol import RolecallError, Topology
from rolecall.supervisor import (
    ServiceEvent,
    ServiceSpec,
    Supervisor,
)

from ._control_protocol import CONTROL_PROTOCOL, plan_data, status_to_data
from ._errors import ControlError, SpecFileError
from ._logging import Redactor
from ._spec_file import ServiceEntry, SpecFile, load_spec_file, resolve_specs
from ._version import __version__

__all__ = ["HISTORY", "Operation", "Runner"]

_log = structlog.get_logger("rolecall.runner")

HISTORY = 1000  # timeline events the runner keeps for `rolecall events`


@define(eq=False)
class Operation:
    """A long operation that runs in the runner's task group.

    It goes on when the client that asked for it leaves (Ctrl-C in the
    CLI): the runner, not the connection, owns it.
    """

    name: str
    service: str
    started: float = field(factory=time.monotonic)
    # Set once the operation has ended, with `result` or `error` filled.
    done: anyio.Event = field(factory=anyio.Event)
    result: dict[str, Any] | None = None
    error: BaseException | None = None


@define(eq=False)
class Runner:
    """The runner's state and the operations of the control API.

    Args:
        supervisor: The control plane.
        runtime: The engine.
        spec_path: The spec file, read again on reload.
        state_dir: The state directory.
        task_group: Runs operations and the runner's loops.
        redactor: Masks every secret value ever read from the spec file.
        docker_url: The engine's address, for building example images.
        engine_configs: The spec file's engines as the runner connected
            to them at its start; a reload may not change them.
    """

    supervisor: Supervisor
    runtime: ContainerRuntime
    spec_path: Path
    state_dir: Path
    task_group: TaskGroup
    redactor: Redactor = field(factory=Redactor)
    docker_url: str | None = None
    engine_configs: dict[str, EngineConfig] = field(factory=dict)
    started_at: float = field(factory=time.time)
    # The spec file's entries as last accepted (at start or reload).
    entries: dict[str, ServiceEntry] = field(factory=dict)
    # Every secret value read from any version of the spec file; masking
    # keeps the old ones, since actors may still quote them.
    secrets: set[str] = field(factory=set)
    # The last `HISTORY` timeline events, with their sequence numbers.
    history: collections.deque[tuple[int, ServiceEvent]] = field(
        factory=lambda: collections.deque(maxlen=HISTORY)
    )
    # Sequence number of the newest event in `history`; 0 before any.
    last_seq: int = 0
    # The newest event of each service, for status's "last change".
    last_change: dict[str, ServiceEvent] = field(factory=dict)
    # Set (and replaced) whenever an event is recorded.
    _new_event: anyio.Event = field(factory=anyio.Event)
    # Held by a reload, so two never interleave.
    _reload_lock: anyio.Lock = field(factory=anyio.Lock)

    # -- spec file -----------------------------------------------------------

    async def load(
        self,
        spec_file: SpecFile,
        *,
        resume: bool = False,
        take_over: AbstractSet[str] = frozenset(),
    ) -> list[str]:
        """Make the file's services the desired state.

        Services whose entry did not change since the last accepted file
        are left alone, so a conversion asked through the control API
        lasts until the entry itself changes; one that supervision gave
        up on is taken up again as it stands. Services gone from the file
        are released: no longer managed, left running. A service new to
        the runner adopts its containers on the engine.

        Args:
            spec_file: The file, loaded.
            resume: At the runner's start: keep a conversion the journal
                holds while the file asks for the same topology and
                replicas as when it was made.
            take_over: At the runner's start: services whose claim another
                control plane holds, to take over (`Supervisor.apply`'s
                ``take_over``). A reload takes over nothing: a claim taken
                meanwhile belongs to a control plane that runs.

        Returns:
            The services applied.

        Raises:
            RolecallError: The file asks for something rolecall cannot do;
                nothing was applied.
        """
        self._remember_secrets(spec_file)
        changed = {
            name
            for name, entry in spec_file.services.items()
            if self.entries.get(name) != entry
        }
        specs = await resolve_specs(
            spec_file, names=changed, docker_url=self.docker_url
        )
        for name in sorted(changed):
            await self._check(specs[name])

        for name in sorted(changed):
            self._note_conversion_undone(specs[name])
            await self.supervisor.apply(
                specs[name], resume=resume, take_over=name in take_over
            )

        # A service supervision gave up on is taken up again by a reload
        # even when its entry did not change: that is what its failure
        # message tells the user to do.
        for name in sorted(set(spec_file.services) - changed):
            if name in self.supervisor.controllers and self.supervisor.take_up(name):
                changed.add(name)

        for name in sorted(set(self.entries) - set(spec_file.services)):
            if name in self.supervisor.controllers:
                await self.supervisor.release(name)
                _log.warning(
                    "service_left_running",
                    service=name,
                    reason="gone from the spec file; its containers keep running",
                )

        self.entries = dict(spec_file.services)

        return sorted(changed)

    async def reload(self) -> bool:
        """Read the spec file again and reconcile to it (SIGHUP).

        A file with errors is rejected whole and the running state kept.

        Returns:
            Whether the file was accepted.
        """
        async with self._reload_lock:
            started = time.monotonic()
            try:
                spec_file = load_spec_file(self.spec_path, docker_url=self.docker_url)
                self._check_engines(spec_file)
                applied = await self.load(spec_file)
            except RolecallError as error:
                _log.error(
                    "spec_rejected",
                    path=str(self.spec_path),
                    error=str(error),
                    kept=sorted(self.entries),
                )
                return False

            _log.info(
                "spec_reloaded",
                path=str(self.spec_path),
                applied=applied,
                services=sorted(self.entries),
                duration_ms=_ms_since(started),
            )

            return True

    def _note_conversion_undone(self, spec: ServiceSpec) -> None:
        """Say so when a changed entry replaces a shape made through the API.

        The file wins over a `convert` once its entry changes (see `load`);
        a user who edited an unrelated key would not expect it, so the log
        names both shapes.
        """
        controller = self.supervisor.controllers.get(spec.name)
        filed = self.entries.get(spec.name)
        if controller is None or filed is None:
            return

        current = _shape(controller.spec)
        if current not in (_shape(filed.spec), _shape(spec)):
            _log.warning(
                "conversion_replaced",
                service=spec.name,
                converted_to=current,
                file_asks=_shape(spec),
                reason="the service's entry in the spec file changed; the"
                " file's topology wins over an earlier `rolecall convert`",
            )

    def _check_engines(self, spec_file: SpecFile) -> None:
        """Refuse a reload that changes the ``[engines]`` tables.

        The runner connects to its engines when it starts; changing an
        engine's address under its running members would leave them
        unmanaged (or, pointed at another engine, adopt someone else's).

        Raises:
            SpecFileError: The tables differ from those the runner runs with.
        """
        if spec_file.engines == self.engine_configs:
            return

        changed = sorted(
            name
            for name in set(spec_file.engines) | set(self.engine_configs)
            if spec_file.engines.get(name) != self.engine_configs.get(name)
        )
        raise SpecFileError(
            f"{self.spec_path}: the [engines] tables changed ({', '.join(changed)}):"
            " the runner connects to its engines when it starts, and an"
            " engine's address may not change under its running members;"
            " put the tables back, or stop the runner and start it again",
            path=self.spec_path,
            key="engines",
        )

    async def _check(self, spec: ServiceSpec) -> None:
        await self.supervisor.check(spec)

    def _remember_secrets(self, spec_file: SpecFile) -> None:
        self.secrets |= spec_file.secrets()
        self.redactor.update(self.secrets)

    # -- events --------------------------------------------------------------

    async def record_events(self) -> None:
        """Keep the timeline's recent events; runs until cancelled."""
        async with self.supervisor.open_timeline() as events:
            async for event in events:
                self.last_seq += 1
                self.history.append((self.last_seq, event))
                self.last_change[event.service] = event
                woken, self._new_event = self._new_event, anyio.Event()
                woken.set()

    def events_after(
        self, seq: int, *, service: str | None = None
    ) -> list[tuple[int, ServiceEvent]]:
        """Recorded events newer than ``seq``, of ``service`` if given."""
        return [
            (number, event)
            for number, event in self.history
            if number > seq and (service is None or event.service == service)
        ]

    async def wait_event(self, seq: int) -> None:
        """Return once an event newer than ``seq`` has been recorded."""
        while self.last_seq <= seq:
            await self._new_event.wait()

    # -- reading -------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """Who this runner is, for status replies."""
        return {
            "pid": os.getpid(),
            "version": __version__,
            "protocol": CONTROL_PROTOCOL,
            "spec": str(self.spec_path),
            "state_dir": str(self.state_dir),
            "control_plane": self.supervisor.identity.id,
            "started_at": self.started_at,
        }

    def status_data(self, service: str | None = None) -> list[dict[str, Any]]:
        """Status of one service or all, as the control API sends it.

        Raises:
            ControlError: ``unknown_service``.
        """
        if service is not None:
            self.check_service(service)
            names = [service]
        else:
            names = sorted(self.supervisor.controllers)

        return [
            status_to_data(
                self.supervisor.status(name), last_change=self.last_change.get(name)
            )
            for name in names
        ]

    def plan_data(self, service: str) -> dict[str, Any]:
        """The plan of a service's image.

        Raises:
            ControlError: ``unknown_service``.
        """
        self.check_service(service)

        return plan_data(self.supervisor.plan(service))

    def check_service(self, service: str) -> None:
        """Refuse a service the runner does not manage.

        Raises:
            ControlError: ``unknown_service``, saying which are known.
        """
        if service in self.supervisor.controllers:
            return

        known = ", ".join(sorted(self.supervisor.controllers)) or "none"
        raise ControlError(
            f"the runner manages no service named {service!r} (known: {known})",
            code="unknown_service",
        )

    # -- operations ----------------------------------------------------------

    def conversion_steps(
        self, service: str, topology: str, replicas: int | None
    ) -> int | None:
        """How many steps converting ``service`` should take, if known.

        Raises:
            SpecError: The conversion asks for a spec rolecall refuses (a
                replica count out of range): refused before it starts.
        """
        try:
            spec = self.supervisor.status(service)
            target = ServiceSpec(
                name=service,
                image=spec.image,
                topology=Topology(topology),
                replicas=spec.replicas if replicas is None else replicas,
            )
        except (RolecallError, ValueError):
            return None

        return len(self.supervisor.pending_steps(target)) or None

    def start(
        self,
        name: str,
        service: str,
        work: Callable[[], Awaitable[dict[str, Any]]],
    ) -> Operation:
        """Run ``work`` in the runner's task group as operation ``name``."""
        operation = Operation(name=name, service=service)
        self.task_group.start_soon(
            self._run_operation, operation, work, name=f"{name}:{service}"
        )

        return operation

    async def _run_operation(
        self, operation: Operation, work: Callable[[], Awaitable[dict[str, Any]]]
    ) -> None:
        log = _log.bind(op=operation.name, service=operation.service)
        try:
            operation.result = await work()
        except RolecallError as error:
            operation.error = error
            log.warning(
                "operation_failed",
                error=str(error),
                error_type=type(error).__name__,
                duration_ms=_ms_since(operation.started),
            )
        # An operation is one request: a bug in it must not end the runner.
        except Exception as error:
            operation.error = error
            log.exception("operation_crashed")
        else:
            log.info("operation_done", duration_ms=_ms_since(operation.started))
        finally:
            operation.done.set()

    async def convert(
        self, service: str, topology: str, replicas: int | None, timeout: float
    ) -> dict[str, Any]:
        """Convert a service and wait until it has converged."""
        status = await self.supervisor.convert(
            service, topology, replicas=replicas, timeout=timeout
        )
        return status_to_data(status, last_change=self.last_change.get(service))

    async def switchover(
        self, service: str, member: str, timeout: float
    ) -> dict[str, Any]:
        """Hand a service's writes to ``member``."""
        status = await self.supervisor.switchover(service, member, timeout=timeout)
        return status_to_data(status, last_change=self.last_change.get(service))

    async def move(
        self, service: str, engine: str, way: str | None, timeout: float
    ) -> dict[str, Any]:
        """Move a service to another engine, with its data."""
        status = await self.supervisor.move(service, engine, way=way, timeout=timeout)
        return status_to_data(status, last_change=self.last_change.get(service))

    async def down(self, service: str, *, take_over: bool = False) -> dict[str, Any]:
        """Tear a service down: containers, volumes, network, claim; with
        ``take_over`` also one another control plane claims."""
        removed = await self.supervisor.remove(service, take_over=take_over)
        self.last_change.pop(service, None)

        return {"service": service, "removed": removed}


def _ms_since(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


def _shape(spec: ServiceSpec) -> str:
    """A service's topology as one word, with its replicas when redundant."""
    if spec.topology is Topology.REDUNDANT:
        return f"{spec.topology.value} with {spec.replicas} replica(s)"

    return spec.topology.value
