"""The supervisor: holds desired state for every service and drives it.

It owns one controller per service and the container actors under them,
watches every engine's events to wake the right controller when a
container dies, and publishes a timeline of what it did. `open_supervisor`
(in ``_open_supervisor``) runs one.
"""

from __future__ import annotations

import functools

import anyio
import structlog
from anyio.abc import TaskGroup
from attrs import define, evolve, field

from rolecall.actors import (
    ActorSpawner,
    ContainerRuntime,
    HookConvention,
)
from rolecall.hooks_protocol import (
    Plan,
    ServiceClaimedError,
    Topology,
)

from ._claim import (
    ClaimOwner,
    claimed_error,
    down_remedy,
    drop_claim,
    release_claim,
)
from ._controller import ServiceController
from ._durable import snapshot
from ._engine_watch import forward_engine_events
from ._identity import ControlPlaneIdentity, process_identity
from ._journal import Journal
from ._members import MemberSpawner
from ._naming import DEFAULT_ENGINE
from ._operations import ControllerOperations
from ._placement import (
    check_target,
    container_names,
    engine_named,
    placed,
    sweep,
)
from ._plan_probe import read_plan
from ._records import ServiceStatus
from ._service_record import ServiceRecord
from ._spec import (
    ServiceSpec,
    check_change,
    check_memory,
    check_move,
    check_plan,
    validate_spec,
)
from ._timeline import Timeline

__all__ = ["Supervisor"]

_log = structlog.get_logger("rolecall.supervisor")


@define(eq=False)
class Supervisor(ControllerOperations):
    """Desired state for every service, and the loops that realise it.

    Create it with `open_supervisor`; every method is safe to call from any
    task in the same event loop.
    """

    runtime: ContainerRuntime
    task_group: TaskGroup
    actors: ActorSpawner
    probe_interval: float
    # Every engine's runtime by name; `runtime` is the one named
    # DEFAULT_ENGINE. Fixed for the supervisor's life.
    engines: dict[str, ContainerRuntime] = field(factory=dict)
    # Engine name -> the address other engines' containers reach its
    # members' published ports at; engines without one are absent.
    peer_addresses: dict[str, str] = field(factory=dict)
    # Controllers by service name; a service leaves only when removed.
    controllers: dict[str, ServiceController] = field(factory=dict)
    # Plans already probed, by engine and image reference.
    plans: dict[tuple[str, str], tuple[Plan, HookConvention]] = field(factory=dict)
    # Where services' records are kept; None keeps nothing on disk.
    journal: Journal | None = None
    # Records read at open, by service, until the service is applied.
    records: dict[str, ServiceRecord] = field(factory=dict)
    # Every service's events, to a callback and to subscribers.
    timeline: Timeline = field(factory=Timeline)
    # Who this control plane is, as its claims on services name it.
    identity: ControlPlaneIdentity = field(factory=process_identity)

    def __attrs_post_init__(self) -> None:
        self.engines.setdefault(DEFAULT_ENGINE, self.runtime)

    # -- desired state -------------------------------------------------------

    async def apply(
        self, spec: ServiceSpec, *, resume: bool = False, take_over: bool = False
    ) -> None:
        """Make ``spec`` the desired state of its service.

        The spec is checked, and the image's ``plan`` probed, before any of
        the service's containers is touched. A service new to this
        supervisor first adopts the containers it already has on the engine
        (see ``_adoption``).

        Args:
            spec: The desired state.
            resume: For a service new to this supervisor: when the journal
                holds a conversion made since a spec with this spec's
                topology and replicas, keep the converted shape (the runner
                does so at its start). Without it ``spec`` is taken as it is.
            take_over: Let the service's next claim replace another control
                plane's (see ``_claim``): for a control plane that is gone
                for good, never for one that runs. Without it a service
                another control plane claims is given up on at its first
                pass, with a `ServiceClaimedError` message that names the
                other.

        Raises:
            SpecError: The spec is invalid, the image cannot serve it, or
                the running service cannot take the change (see `check`).
            StateError: The journal could not record the change.
        """
        validate_spec(spec)
        controller = self.controllers.get(spec.name)
        record = self.records.get(spec.name) if controller is None else None
        source = (spec.topology, spec.replicas)
        kept = (
            record is not None
            and (
                record.source_topology,
                record.source_replicas,
            )
            == source
        )
        if resume and record is not None and kept:
            spec = evolve(spec, topology=record.topology, replicas=record.replicas)

        spec = placed(spec, controller, record)
        await self._apply(spec, source=source, record=record, take_over=take_over)

    async def _apply(
        self,
        spec: ServiceSpec,
        *,
        source: tuple[Topology, int] | None,
        record: ServiceRecord | None = None,
        take_over: bool = False,
    ) -> None:
        """Apply a checked spec; ``source`` None marks a conversion."""
        await self.check(spec)
        plan, convention = await self.probe_plan(spec)
        controller = self.controllers.get(spec.name)
        if controller is not None:
            controller.take_over |= take_over
            controller.update(spec, converting=source is None)
            return

        controller = ServiceController(
            spec=spec,
            plan=plan,
            convention=convention,
            engines=self.engines,
            spawner=MemberSpawner(
                self.engines, self.actors, peer_addresses=self.peer_addresses
            ),
            emit=self.timeline.emit,
            probe_interval=self.probe_interval,
            journal=self.journal,
            journaled=record,
            identity=self.identity,
            take_over=take_over,
        )
        if source is not None:
            controller.source = source
        self.records.pop(spec.name, None)
        self.controllers[spec.name] = controller
        # A new service is a spec change like any other: its first pass
        # runs at once, not one probe interval later.
        controller.wake()
        self.task_group.start_soon(controller.run, name=f"service:{spec.name}")
        _log.info("service_applied", service=spec.name, topology=spec.topology)

    async def check(self, spec: ServiceSpec) -> None:
        """Check ``spec`` as `apply` would, without applying it.

        Its shape, the image's plan, the engine's memory, and, for a
        service that runs already, that the change is one its running
        containers can take (see `check_change`).

        Raises:
            SpecError: The spec is invalid, the image cannot serve it, or
                the running service cannot take the change.
        """
        validate_spec(spec)
        runtime = self.engine(spec.engine, service=spec.name)
        controller = self.controllers.get(spec.name)
        if controller is not None:
            check_change(controller.spec, spec)

        plan, _ = await self.probe_plan(spec)
        check_plan(spec, plan)
        check_memory(spec, await runtime.memory_total())

    async def convert(
        self,
        service: str,
        topology: Topology | str,
        *,
        replicas: int | None = None,
        timeout: float = 300.0,
    ) -> ServiceStatus:
        """Change a service's topology and wait until it has converged.

        Raises:
            SpecError: No such service, or the image cannot take that shape.
            ConvergenceTimeoutError: It did not converge in ``timeout`` s.
        """
        current = self._controller(service).spec
        changes: dict[str, object] = {"topology": topology}
        if replicas is not None:
            changes["replicas"] = replicas

        await self._apply(
            evolve(current, **changes),  # type: ignore[arg-type]
            source=None,
        )

        return await self.wait_converged(service, timeout=timeout)

    async def remove(self, service: str, *, take_over: bool = False) -> list[str]:
        """Tear a service down: its members, volumes and network, and last
        its claim.

        Args:
            service: The service.
            take_over: Remove it even when another control plane claims
                it: for one that is gone for good.

        Returns:
            The names of the containers removed.

        Raises:
            SpecError: No such service.
            ServiceClaimedError: Another control plane manages it; nothing
                was removed.
        """
        controller = self._controller(service)
        controller.take_over |= take_over
        try:
            await controller.hold_claim()
        except ServiceClaimedError as error:
            raise claimed_error(
                service, ClaimOwner.of(error), remedy=down_remedy(service)
            ) from error

        home = controller.spec.engine
        removed = await container_names(self.engines, service, home=home)
        del self.controllers[service]
        await controller.aclose(remove=True)
        if self.journal is not None:
            self.journal.delete(service)
        # A pass cut short may have made a container it had not recorded
        # yet; the labels find it, and any volume it left, on any engine.
        await sweep(self.engines, service, home=home)
        # Last: while anything of the service is left, it stays claimed.
        await drop_claim(self.runtime, service)
        _log.info("service_removed", service=service)

        return removed

    def take_up(self, service: str) -> bool:
        """Take up a service supervision gave up on, its desired state as
        it stands (a conversion included).

        Returns:
            Whether it had been given up.

        Raises:
            SpecError: No such service.
        """
        controller = self._controller(service)
        if controller.failure is None:
            return False

        controller.update(controller.spec, converting=True)
        _log.info("service_taken_up", service=service)
        return True

    async def release(self, service: str) -> None:
        """Stop managing a service and leave it running.

        Its actors stop; its containers, volumes and network stay as they
        are, as when the whole control plane stops. What the journal would
        hold of it is kept, so applying it again adopts its containers as a
        restarted control plane would. Its claim, if ours, is dropped:
        another control plane may take it up.

        Raises:
            SpecError: No such service.
        """
        controller = self._controller(service)
        del self.controllers[service]
        await controller.aclose(remove=False)
        if controller.adopted:
            self.records[service] = snapshot(controller, None)
        elif controller.journaled is not None:
            self.records[service] = controller.journaled

        await release_claim(self.runtime, service, self.identity)

        _log.info("service_released", service=service)

    # -- moves ---------------------------------------------------------------

    async def move(
        self,
        service: str,
        engine: str,
        *,
        way: str | None = None,
        timeout: float = 600.0,
    ) -> ServiceStatus:
        """Move a running service to another engine, with its data.

        Everything is checked before the service is touched: the engine is
        known and answers, the image is there, both engines have a peer
        address, and the image's plan offers the way. Then members made on
        the target catch up, writes are handed to one of them, and the old
        members are removed (see ``_moving``); each phase is journaled, so
        a control plane killed mid-move resumes it. A service there already
        is left as it is.

        Args:
            service: The service.
            engine: The engine to move it to.
            way: ``replication`` or ``export``; by default the first of
                those the plan offers.
            timeout: Seconds to wait. A move that has not caught up by
                then is undone; one past its switch goes on.

        Raises:
            SpecError: No such service or engine, the image cannot move
                that way, or another move is under way.
            EngineError: The target engine does not answer; the service was
                not touched.
            ConvergenceTimeoutError: It did not finish in ``timeout`` s.
            RolecallError: The move was undone; the error says why.
        """
        controller = self._controller(service)
        if controller.moving is None and engine == controller.spec.engine:
            return controller.status()

        target = evolve(controller.spec, engine=engine)
        self.engine(engine, service=service)
        chosen = check_move(controller.spec, controller.plan, way, self.peer_addresses)
        check_move(target, controller.plan, chosen, self.peer_addresses)
        await check_target(self, target)

        return await controller.move(engine, chosen, timeout=timeout)

    # -- plans ---------------------------------------------------------------

    async def probe_plan(self, spec: ServiceSpec) -> tuple[Plan, HookConvention]:
        """The image's plan on the spec's engine, read once per engine and
        image (see `read_plan`).

        Raises:
            SpecError: The engine is unknown, the image is missing there or
                its plan is unreadable.
        """
        key = (spec.engine, spec.image)
        cached = self.plans.get(key)
        if cached is None:
            runtime = self.engine(spec.engine, service=spec.name)
            cached = self.plans[key] = await read_plan(runtime, spec)

        return cached

    # -- engines -------------------------------------------------------------

    def engine(self, name: str, *, service: str | None = None) -> ContainerRuntime:
        """The runtime of the engine called ``name``.

        Raises:
            SpecError: No engine has that name.
        """
        return engine_named(self.engines, name, service=service)

    # -- engine events -------------------------------------------------------

    async def watch_engine(self) -> None:
        """Wake controllers on container events of every engine; each
        engine's stream reconnects on its own when it drops."""
        async with anyio.create_task_group() as group:
            for name, runtime in self.engines.items():
                forward = functools.partial(
                    forward_engine_events,
                    runtime,
                    self.controllers,
                    on_resync=self._wake_all,
                )
                group.start_soon(forward, name=f"engine-events:{name}")

    def _wake_all(self) -> None:
        for controller in self.controllers.values():
            controller.wake()

    async def aclose(self, *, remove_services: bool = False) -> None:
        """Stop every controller's loop; with ``remove_services``, tear the
        services down too."""
        for name in list(self.controllers):
            if remove_services:
                try:
                    await self.remove(name)
                    continue
                except ServiceClaimedError:
                    pass  # another control plane's: closed, not removed

            await self.controllers.pop(name).aclose(remove=False)
