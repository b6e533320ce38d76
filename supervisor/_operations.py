"""What the supervisor passes straight to one service's controller.

Failover control, switchovers and every read of a service's state name a
service, find its controller, and ask it; the supervisor's own module keeps
what changes which services exist and where they run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from anyio.streams.memory import MemoryObjectReceiveStream

from rolecall.hooks_protocol import Plan, SpecError

from ._controller import ServiceController
from ._reconciler import Step, plan_steps
from ._records import ServiceEvent, ServiceStatus
from ._spec import ServiceSpec, validate_spec
from ._timeline import Timeline

__all__ = ["ControllerOperations"]


class ControllerOperations:
    """The part of `Supervisor` that asks one controller."""

    __slots__ = ()

    # Set by `Supervisor`.
    controllers: dict[str, ServiceController]
    timeline: Timeline

    # -- failover control ----------------------------------------------------

    def pause_failover(self, service: str) -> None:
        """Stop promoting replicas of ``service`` until `resume_failover`.

        While paused, a lost primary is still reported and fenced, but no
        replica is promoted in its place; everything else (replacing lost
        replicas, probing) goes on. ``ServiceStatus.failover_paused`` says so.

        Raises:
            SpecError: No such service.
        """
        self._controller(service).pause_failover()

    def resume_failover(self, service: str) -> None:
        """Allow ``service`` to promote a replica again; wakes its controller.

        Raises:
            SpecError: No such service.
        """
        self._controller(service).resume_failover()

    async def switchover(
        self, service: str, member: str, *, timeout: float = 60.0
    ) -> ServiceStatus:
        """Make ``member`` the primary of ``service`` without losing writes.

        Writes stop on the old primary first; ``member`` takes over only
        once it has caught up with every write the old primary
        acknowledged; then the other members follow it.

        Raises:
            SpecError: No such service, no such member, or one that cannot
                take over (not a synced, healthy replica).
            ConvergenceTimeoutError: It did not finish in ``timeout`` s.
        """
        return await self._controller(service).switchover(member, timeout=timeout)

    # -- reading -------------------------------------------------------------

    async def wait_converged(
        self, service: str, *, timeout: float = 300.0
    ) -> ServiceStatus:
        """Wait until the service has reached its desired state.

        Raises:
            SpecError: No such service.
            ConvergenceTimeoutError: It did not converge in ``timeout`` s.
        """
        return await self._controller(service).wait_converged(timeout=timeout)

    def status(self, service: str) -> ServiceStatus:
        """A snapshot of one service.

        Raises:
            SpecError: No such service.
        """
        return self._controller(service).status()

    def statuses(self) -> list[ServiceStatus]:
        """A snapshot of every service, by name."""
        return [self.controllers[name].status() for name in sorted(self.controllers)]

    def plan(self, service: str) -> Plan:
        """The plan of a service's image: what every member can do.

        Raises:
            SpecError: No such service.
        """
        return self._controller(service).plan

    def pending_steps(self, spec: ServiceSpec) -> list[Step]:
        """The steps a pass would take now to bring ``spec``'s service to it.

        Planned from the service's last observation, without acting; a
        service not managed yet plans from nothing. Progress reports use
        the count; a pass may take more steps when what it observes
        changes meanwhile.

        Raises:
            SpecError: ``spec`` is not valid (checked first: planning a
                billion replicas would hold the event loop for minutes).
        """
        validate_spec(spec)
        controller = self.controllers.get(spec.name)
        if controller is None:
            return plan_steps(spec, [], next_number=1)

        observed = [member.observed() for member in controller.members.values()]
        return plan_steps(spec, observed, next_number=controller.next_number)

    @asynccontextmanager
    async def open_timeline(
        self,
    ) -> AsyncIterator[MemoryObjectReceiveStream[ServiceEvent]]:
        """Subscribe to timeline events from now on.

        The subscription is an async iterator of events; its
        ``receive_nowait()`` takes what has arrived without waiting.

        A subscriber that falls more than 1,024 events behind misses the
        overflow (logged), so a slow reader never stalls the supervisor.
        """
        async with self.timeline.open() as events:
            yield events

    # -- helpers -------------------------------------------------------------

    def _controller(self, service: str) -> ServiceController:
        controller = self.controllers.get(service)
        if controller is None:
            known = ", ".join(sorted(self.controllers)) or "none"
            raise SpecError(
                f"no service named {service!r} (known: {known})", service=service
            )

        return controller
