"""The service controller: observe, plan, act — one service, one pass at a time.

A controller owns the members of one service. Each pass it observes (which
containers run, what each member reports), asks the reconciler for steps, and
runs them through the members' container actors. Engine events and spec
changes wake it; otherwise it passes every ``probe_interval`` seconds to
notice members that stopped answering.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable

import anyio
import structlog
from attrs import define, field

from rolecall.actors import (
    ActorRef,
    ActorState,
    ContainerMessage,
    ContainerRuntime,
    ContainerState,
    HookConvention,
    Prepare,
    Probe,
    ServiceView,
    StopService,
)
from rolecall.actors import (
    ApplyRole as ApplyRoleMessage,
)
from rolecall.hooks_protocol import (
    ContainerGoneError,
    ConvergenceTimeoutError,
    MemberInfo,
    MemberStatus,
    Plan,
    RolecallError,
    SpecError,
)

from ._members import Member, MemberSpawner
from ._naming import LABEL_MANAGED, LABEL_SERVICE
from ._reconciler import (
    ApplyRole,
    CreateMember,
    FenceMember,
    ObservedMember,
    PrepareMember,
    RemoveMember,
    RestartMember,
    Step,
    plan_steps,
)
from ._records import MemberView, ServiceEvent, ServiceStatus
from ._spec import ServiceSpec

__all__ = ["ServiceController"]

_log = structlog.get_logger("rolecall.supervisor")

_ACTOR_ENDED = frozenset({ActorState.STOPPED, ActorState.CRASHED})
_ASK_TIMEOUT = 900.0  # hooks carry their own deadlines; this only stops a hang
_BACKOFF_FIRST = 0.5
_BACKOFF_CAP = 30.0


@define(eq=False)
class ServiceController:
    """Drives one service toward its spec.

    Args:
        spec: The desired state.
        plan: The image's plan, probed when the spec was accepted.
        convention: How the image's hooks are called.
        runtime: The engine the members run on.
        spawner: Starts container actors in the supervisor's task group.
        emit: Receives timeline events.
        probe_interval: Seconds between passes when nothing wakes it.
    """

    spec: ServiceSpec
    plan: Plan
    convention: HookConvention
    runtime: ContainerRuntime
    spawner: MemberSpawner
    emit: Callable[[ServiceEvent], None]
    probe_interval: float = 2.0
    # Members by id, oldest first; a member leaves only when removed.
    members: dict[str, Member] = field(factory=dict)
    # Ordinal of the next member created; ids are never reused.
    next_number: int = 1
    # Highest epoch handed out; every role command gets a higher one.
    epoch: int = 0
    # Bumped on every spec change; a pass that plans nothing converges it.
    generation: int = 0
    # The generation the last empty pass saw; equal to `generation` when
    # the service has converged to its current spec. Set back to -1 when a
    # member is lost, a pass finds work or a pass fails, until a pass finds
    # nothing to do again.
    converged_generation: int = -1
    # Whether steps ran since the last pass that found nothing to do; the
    # next such pass reports the service converged again.
    acted_since_converged: bool = True
    # Why the last pass failed; None after a pass that did not fail.
    last_error: str | None = None
    # Consecutive failed passes; drives the retry backoff.
    failures: int = 0
    # While True a lost writer is fenced but no replica is promoted.
    failover_paused: bool = False
    # Set to wake the loop early (engine event, spec change).
    _wake: anyio.Event = field(factory=anyio.Event)
    # Set (and replaced) after every pass, for waiters.
    _passed: anyio.Event = field(factory=anyio.Event)
    # When the writer was found lost; None while it is not.
    _writer_lost_at: float | None = None
    # True once `aclose` began; no pass starts after that.
    _stopping: bool = False
    # Wraps the pass loop; `aclose` cancels it to end a pass where it stands.
    _loop: anyio.CancelScope = field(factory=anyio.CancelScope)
    # Set when `run` has returned; `aclose` waits for it.
    _ended: anyio.Event = field(factory=anyio.Event)

    # -- control -------------------------------------------------------------

    def update(self, spec: ServiceSpec) -> None:
        """Take a new desired state and wake the loop."""
        self.spec = spec
        self.generation += 1
        self.failures = 0
        self.wake()

    def wake(self) -> None:
        """Run a pass now rather than at the next interval."""
        self._wake.set()

    def member_changed(self, member_id: str) -> None:
        """An engine event concerns a member: look again at once."""
        member = self.members.get(member_id)
        if member is not None:
            member.dirty = True

        self.wake()

    def pause_failover(self) -> None:
        """Fence a lost writer but promote no replica until resumed."""
        self.failover_paused = True
        self.wake()

    def resume_failover(self) -> None:
        """Promote a replica again when the writer is lost."""
        self.failover_paused = False
        self.wake()

    async def switchover(self, member_id: str, *, timeout: float) -> ServiceStatus:
        """Hand writes to ``member_id`` without losing acknowledged writes.

        Raises:
            SpecError: Unknown member, or one that cannot take over.
            ConvergenceTimeoutError: It did not finish in ``timeout`` s.
        """
        raise SpecError(
            f"switchover of service {self.spec.name!r} to {member_id!r}"
            " is not available yet",
            service=self.spec.name,
        )

    async def wait_converged(self, *, timeout: float) -> ServiceStatus:
        """Wait until a pass finds nothing to do for the current spec.

        Raises:
            ConvergenceTimeoutError: It did not converge in ``timeout`` s.
        """
        target = self.generation
        with anyio.move_on_after(timeout):
            while self.converged_generation < target:
                await self._passed.wait()
            return self.status()

        raise ConvergenceTimeoutError(
            f"service {self.spec.name!r} did not converge within {timeout:g}s"
            f" (last error: {self.last_error or 'none'}); see `rolecall"
            " status` and the log",
            service=self.spec.name,
            timeout=timeout,
            last_error=self.last_error,
        )

    async def run(self) -> None:
        """Pass until `aclose` (or a cancellation) ends the loop."""
        try:
            with self._loop:
                while not self._stopping:
                    delay = self._next_delay()
                    with anyio.move_on_after(delay):
                        await self._wake.wait()

                    self._wake = anyio.Event()
                    await self.run_pass()
        finally:
            self._ended.set()

    async def run_pass(self) -> None:
        """Observe, plan and act once."""
        generation = self.generation
        try:
            await self._observe()
            steps = plan_steps(
                self.spec, self._observed(), next_number=self.next_number
            )
            if not steps:
                self._converged(generation)
                return

            self.acted_since_converged = True
            self.converged_generation = -1
            for step in steps:
                await self._execute(step)
        except RolecallError as error:
            self._failed(error)
        else:
            if steps:
                self.failures = 0
                self.last_error = None
                self.wake()  # confirm with a fresh observation
        finally:
            passed, self._passed = self._passed, anyio.Event()
            passed.set()

    # -- status --------------------------------------------------------------

    def status(self) -> ServiceStatus:
        """A snapshot of the service as last observed."""
        writer = self._writer()
        return ServiceStatus(
            name=self.spec.name,
            image=self.spec.image,
            topology=self.spec.topology,
            replicas=self.spec.replicas,
            converged=self.converged_generation == self.generation,
            epoch=self.epoch,
            primary=writer.id if writer else None,
            members=tuple(self._view(m) for m in self.members.values()),
            last_error=self.last_error,
            failover_paused=self.failover_paused,
        )

    def view(self) -> ServiceView:
        """What the hooks are told about the service."""
        return ServiceView(
            service=self.spec.name,
            members=tuple(
                MemberInfo(
                    id=m.id,
                    role=m.actor.role,
                    address=self._address(m.id),
                    epoch=m.actor.epoch,
                )
                for m in self.members.values()
            ),
            config=self.spec.config,
            env=self.spec.env,
            secret_keys=self.spec.secret_keys,
        )

    # -- observing -----------------------------------------------------------

    async def _observe(self) -> None:
        for member in self.members.values():
            if member.ref.state in _ACTOR_ENDED:
                await self._replace_actor(member)

        containers = await self.runtime.list_containers(
            labels={LABEL_MANAGED: "true", LABEL_SERVICE: self.spec.name}
        )
        by_id = {c.id: c for c in containers}
        for member in self.members.values():
            info = by_id.get(member.container_id)
            alive = info is not None and info.state is ContainerState.RUNNING
            if member.alive and not alive:
                self._lost(member, info.exit_code if info else None)
            member.alive = alive
            member.missing = info is None
            member.dirty = False

        async with anyio.create_task_group() as group:
            for member in self.members.values():
                if member.alive and member.ready:
                    group.start_soon(self._probe, member)

    async def _probe(self, member: Member) -> None:
        try:
            report = await member.ref.ask(Probe(self.view()), timeout=_ASK_TIMEOUT)
        except ContainerGoneError:
            # The container died between the listing and this probe: the
            # same loss the listing would have shown a moment later.
            if member.alive:
                self._lost(member, None)
            member.alive = False
            return
        except RolecallError as error:
            member.healthy = False
            _log.warning(
                "probe_failed",
                service=self.spec.name,
                member=member.id,
                error=str(error),
            )
            return

        assert isinstance(report, MemberStatus)  # noqa: S101  (Probe's reply type)
        member.record_status(report)
        # Members keep the highest epoch they accepted, across restarts of
        # rolecall too, and refuse older ones: the next role command must
        # be newer than any of them.
        self.epoch = max(self.epoch, report.epoch)

    async def _replace_actor(self, member: Member) -> None:
        # An actor ends on its own only when it crashed (a told message
        # failed) or was stopped by someone else; either way the container
        # is still there and needs an actor to run its hooks.
        state = member.ref.state
        await self.spawner.respawn(member)
        _log.warning(
            "member_actor_replaced",
            service=self.spec.name,
            member=member.id,
            old_state=state.value,
        )
        self._event(
            "actor_replaced",
            member.id,
            f"its actor had {state.value}; a new one prepares it again",
            old_state=state.value,
        )

    def _observed(self) -> list[ObservedMember]:
        return [m.observed() for m in self.members.values()]

    def _lost(self, member: Member, exit_code: int | None) -> None:
        member.healthy = False
        self.converged_generation = -1
        if member.actor.role is not None and member.is_writer:
            self._writer_lost_at = time.monotonic()

        self._event(
            "member_lost",
            member.id,
            f"container stopped (exit code {exit_code})",
            exit_code=exit_code,
            role=member.actor.role.value if member.actor.role else None,
        )

    # -- acting --------------------------------------------------------------

    async def _execute(self, step: Step) -> None:
        if isinstance(step, CreateMember | RestartMember):
            # The container comes first, with its own line on the timeline,
            # so that a hook failing next does not hide that it exists.
            if isinstance(step, CreateMember):
                await self._create(step.member)
            else:
                await self._restart(step.member)

            step = PrepareMember(step.member)

        started = time.monotonic()
        match step:
            case PrepareMember(member=member_id):
                await self._prepare(self.members[member_id])
                detail, kind = "ran plan, configure, start", "member_prepared"
            case ApplyRole(member=member_id, role=role, primary=primary):
                await self._apply_role(member_id, step)
                follow = f" of {primary}" if primary else ""
                detail, kind = f"role {role.value}{follow}", "role_applied"
            case FenceMember(member=member_id):
                await self._fence(member_id)
                detail, kind = "killed and kept down", "member_fenced"
            case RemoveMember(member=member_id):
                await self._remove(member_id)
                detail, kind = "stopped and removed", "member_removed"

        self._event(kind, member_id, detail, duration=time.monotonic() - started)

    async def _create(self, member_id: str) -> None:
        started = time.monotonic()
        number = self.next_number
        self.next_number += 1
        member = await self.spawner.create(
            self.spec, self.plan, self.convention, member_id, number
        )
        self.members[member_id] = member
        self._event(
            "member_created",
            member_id,
            f"created container {member.name}",
            duration=time.monotonic() - started,
        )

    async def _restart(self, member_id: str) -> None:
        started = time.monotonic()
        member = self.members[member_id]
        await self.spawner.restart(self.spec, self.plan, member)
        member.actor.container_restarted()
        member.alive = True
        member.fenced = False
        self._event(
            "member_restarted",
            member_id,
            "restarted its container",
            duration=time.monotonic() - started,
        )

    async def _prepare(self, member: Member) -> None:
        await member.ref.ask(Prepare(self.view()), timeout=_ASK_TIMEOUT)
        # A container that outlived an earlier supervisor knows a newer
        # epoch than this controller: learn it before sending a role.
        await self._probe(member)

    async def _apply_role(self, member_id: str, step: ApplyRole) -> None:
        self.epoch += 1
        member = self.members[member_id]
        message = ApplyRoleMessage(
            view=self.view(),
            role=step.role,
            primary=step.primary,
            epoch=self.epoch,
        )
        await member.ref.ask(message, timeout=_ASK_TIMEOUT)
        if member.is_writer and self._writer_lost_at is not None:
            took = time.monotonic() - self._writer_lost_at
            self._writer_lost_at = None
            self._event(
                "failover",
                member_id,
                f"{member_id} took over writes",
                duration=took,
            )

    async def _fence(self, member_id: str) -> None:
        member = self.members[member_id]
        with contextlib.suppress(ContainerGoneError):  # gone is fenced enough
            await self.runtime.kill_container(member.container_id)

        member.alive = False
        member.fenced = True

    async def _remove(self, member_id: str) -> None:
        member = self.members[member_id]
        if member.alive and member.ready:
            try:
                await member.ref.ask(StopService(self.view()), timeout=_ASK_TIMEOUT)
            except RolecallError as error:
                # The container goes anyway; a failed graceful stop only
                # loses the chance to flush, which a removed member no
                # longer needs.
                _log.warning(
                    "stop_failed",
                    service=self.spec.name,
                    member=member_id,
                    error=str(error),
                )

        await self.spawner.remove(member)
        del self.members[member_id]

    async def aclose(self, *, remove: bool) -> None:
        """End the pass loop, then let go of the members.

        A pass under way is cancelled where it stands, as a crash of the
        control plane would end it; hooks are idempotent and the next pass
        (of this or a later controller) plans afresh. ``run`` must have been
        started.

        Args:
            remove: Stop and delete every member. Without it the members'
                actors are told to stop, dropping queued messages, and the
                containers keep running; a hook still running is left to
                whoever cancels the actors' task group.
        """
        self._stopping = True
        self._loop.cancel()
        await self._ended.wait()
        for member_id in list(self.members):
            if remove:
                await self._remove(member_id)
            else:
                self.members[member_id].ref.stop_nowait(drain=False)

    # -- bookkeeping ---------------------------------------------------------

    def _converged(self, generation: int) -> None:
        if self.acted_since_converged:
            self.acted_since_converged = False
            writer = self._writer()
            self._event(
                "converged",
                writer.id if writer else None,
                f"{self.spec.topology.value} with {len(self.members)} member(s)",
            )
        self.converged_generation = generation
        self.failures = 0
        self.last_error = None

    def _failed(self, error: RolecallError) -> None:
        self.converged_generation = -1
        self.failures += 1
        self.last_error = str(error)
        delay = self._next_delay()
        _log.warning(
            "reconcile_failed",
            service=self.spec.name,
            error=str(error),
            error_type=type(error).__name__,
            retry_in=round(delay, 2),
        )
        self._event("step_failed", None, str(error), retry_in=round(delay, 2))

    def _next_delay(self) -> float:
        if self.failures == 0:
            return self.probe_interval

        backoff = _BACKOFF_FIRST * math.pow(2, self.failures - 1)
        return min(backoff, _BACKOFF_CAP)

    def _writer(self) -> Member | None:
        writers = [m for m in self.members.values() if m.alive and m.is_writer]
        return writers[0] if writers else None

    def _address(self, member_id: str) -> str:
        return f"{member_id}:{self.plan.ports[0]}"

    def _view(self, member: Member) -> MemberView:
        port = member.host_ports.get(self.plan.ports[0])
        return MemberView(
            id=member.id,
            role=member.actor.role,
            alive=member.alive,
            ready=member.ready and member.alive,
            healthy=member.healthy,
            offset=member.offset,
            epoch=member.actor.epoch,
            container_id=member.container_id,
            container_name=member.name,
            address=self._address(member.id),
            published=f"127.0.0.1:{port}" if port else None,
            following=member.actor.primary,
        )

    def _event(
        self,
        kind: str,
        member: str | None,
        detail: str,
        *,
        duration: float | None = None,
        **fields: object,
    ) -> None:
        event = ServiceEvent(
            time=time.time(),
            service=self.spec.name,
            kind=kind,
            member=member,
            detail=detail,
            duration=duration,
            fields=fields,
        )
        _log.info(
            kind,
            service=self.spec.name,
            member=member,
            detail=detail,
            duration_ms=None if duration is None else round(duration * 1000),
            **fields,
        )
        self.emit(event)


# Re-exported for the supervisor's type hints.
MemberRef = ActorRef[ContainerMessage]
