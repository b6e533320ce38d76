"""The service controller: observe, plan, act — one service, one pass at a time.

A controller owns the members of one service and supervises them. Each pass
it observes (which containers run, what each member reports), asks the
reconciler for steps, and runs them through the members' container actors.
Engine events, spec changes and operators' requests wake it; otherwise it
passes every ``probe_interval`` seconds, and probes members in between.

Supervision (see ``_supervision``): a failed pass backs off; restarts are
paced and counted; past the intensity limit the controller gives up and the
service is marked failed. An unexpected error in a pass is contained here:
it is logged, counted as a restart of the pass, and backed off, so one
service's bug never takes the supervisor or another service down.

The controller is built from mixins over `ControllerState`: observing,
acting, switchover, adoption, reporting a pass's outcome, holding the
service's claim, and this module's loop and public calls. Every pass
checks the claim on the engine first (see ``_claim``); the first then
adopts the service's containers before it plans anything.
"""

from __future__ import annotations

import math

import anyio
import structlog
from attrs import define, field

from rolecall.actors import ActorRef, ChildCrashed, ContainerInfo
from rolecall.hooks_protocol import (
    ContainerGoneError,
    ConvergenceTimeoutError,
    RolecallError,
    ServiceFailedError,
)

from ._adoption import Adopting
from ._candidates import fence_lost_writers, promotes, refresh_candidates
from ._claiming import Claiming
from ._configuring import Configuring
from ._dead_letters import CrashWatch
from ._members import Member
from ._moving import Moving
from ._observing import is_running
from ._outcomes import Reporting
from ._pass_log import PassRecord
from ._reconciler import Step, plan_steps
from ._records import ServiceStatus
from ._spec import ServiceSpec
from ._switchover import SwitchoverRequest, SwitchoverSupersededError

__all__ = ["ServiceController"]

_log = structlog.get_logger("rolecall.supervisor")


@define(eq=False)
class ServiceController(Moving, Adopting, Configuring, Reporting, Claiming):
    """Drives one service toward its spec and supervises its members.

    Args:
        spec: The desired state.
        plan: The image's plan, probed when the spec was accepted.
        convention: How the image's hooks are called.
        runtime: The engine the members run on.
        spawner: Starts container actors in the supervisor's task group.
        emit: Receives timeline events.
        probe_interval: Seconds between passes when nothing wakes it.
    """

    # The switchover asked for and not yet started; at most one, as a newer
    # request supersedes a waiting one.
    _switchovers: list[SwitchoverRequest] = field(factory=list)
    # Whether the last pass ran a switchover; the next one reconciles.
    _switched: bool = False
    # Members whose container is being looked at after an engine event.
    _checking: set[str] = field(factory=set)
    # The parent of the member actors; None before `run` and after.
    _crash_watch: ActorRef[ChildCrashed] | None = None
    # True once `aclose` began; no pass starts after that.
    _stopping: bool = False
    # Wraps the pass loop; `aclose` cancels it to end a pass where it stands.
    _loop: anyio.CancelScope = field(factory=anyio.CancelScope)
    # Set when `run` has returned; `aclose` waits for it.
    _ended: anyio.Event = field(factory=anyio.Event)

    # -- control -------------------------------------------------------------

    def update(self, spec: ServiceSpec, *, converting: bool = False) -> None:
        """Take a new desired state and wake the loop.

        A service supervision gave up on is taken up again.

        Args:
            spec: The desired state.
            converting: Whether it is a conversion of the caller's spec
                rather than a new one (see ``ControllerState.source``).

        Raises:
            StateError: The journal could not record it; nothing changed.
        """
        previous = (self.spec, self.source)
        self.spec = spec
        if not converting:
            self.source = (spec.topology, spec.replicas)

        try:
            self.persist()
        except RolecallError:
            self.spec, self.source = previous
            raise

        self.generation += 1
        self.retry_at = 0.0
        for counter in (self.pass_backoff, self.restart_backoff, self.intensity):
            counter.settings = spec.supervision

        if self.failure is not None:
            self.failure = None
            self.intensity.reset()

        self.wake(urgent=True)

    def member_changed(self, member_id: str) -> None:
        """An engine event concerns a member: look at it at once.

        A member that died under the steps of a pass ends those steps: the
        next pass plans from what is now true.
        """
        member = self.members.get(member_id)
        if member is None:
            return

        member.dirty = True
        if self.tasks is None or member_id in self._checking:
            self.wake()
            return

        self._checking.add(member_id)
        self.tasks.start_soon(self._check_member, member, name=f"check:{member_id}")

    def member_crashed(self, member_id: str) -> None:
        """A member's actor crashed: replace it now (the crash watch calls)."""
        if member_id in self.members:
            self.wake(urgent=True)

    def pause_failover(self) -> None:
        """Fence a lost writer but promote no replica until resumed."""
        self.failover_paused = True
        self.persist()
        self.wake(urgent=True)

    def resume_failover(self) -> None:
        """Promote a replica again when the writer is lost."""
        self.failover_paused = False
        self.persist()
        self.wake(urgent=True)

    async def switchover(self, member_id: str, *, timeout: float) -> ServiceStatus:
        """Hand writes to ``member_id`` without losing acknowledged writes.

        Switchovers run between passes, one at a time, with a reconcile pass
        between two of them. One asked for while another waits to start
        supersedes it: the waiting one raises `SwitchoverSupersededError`.

        Raises:
            SpecError: Unknown member, or one that cannot take over.
            ConvergenceTimeoutError: It did not finish in ``timeout`` s.
            SwitchoverSupersededError: A newer switchover replaced this one
                before it started.
            RolecallError: A hook of the switchover failed; see the error.
        """
        self.check_switchover(member_id)
        request = SwitchoverRequest(member_id)
        # Requests not started yet are superseded: the latest one wins.
        for queued in self._switchovers:
            queued.error = SwitchoverSupersededError(
                f"switchover of service {self.spec.name!r} to {queued.member!r}"
                f" was superseded by one to {member_id!r} before it started"
            )
            queued.done.set()

        self._switchovers = [request]
        self.wake(urgent=True)
        with anyio.move_on_after(timeout):
            await request.done.wait()

        if not request.done.is_set():
            raise ConvergenceTimeoutError(
                f"switchover of service {self.spec.name!r} to {member_id!r} did"
                f" not finish within {timeout:g}s; see `rolecall status` and"
                " the log",
                service=self.spec.name,
                timeout=timeout,
                last_error=self.last_error,
            )

        if request.error is not None:
            raise request.error

        return self.status()

    async def wait_converged(self, *, timeout: float) -> ServiceStatus:
        """Wait until a pass finds nothing to do for the current spec.

        Raises:
            ConvergenceTimeoutError: It did not converge in ``timeout`` s.
            ServiceFailedError: Supervision gave up on it (another control
                plane claims it, or it failed too often): no pass will run.
        """
        target = self.generation
        with anyio.move_on_after(timeout):
            while self.converged_generation < target and self.failure is None:
                await self.passed.wait()

        if self.failure is not None:
            raise ServiceFailedError(
                f"service {self.spec.name!r} is failed: {self.failure}",
                service=self.spec.name,
                reason=self.failure,
            )

        if self.converged_generation >= target:
            return self.status()

        why = self.failure or self.last_error or "none"
        raise ConvergenceTimeoutError(
            f"service {self.spec.name!r} did not converge within {timeout:g}s"
            f" (last error: {why}); see `rolecall status` and the log",
            service=self.spec.name,
            timeout=timeout,
            last_error=self.failure or self.last_error,
        )

    # -- the loop ------------------------------------------------------------

    async def run(self) -> None:
        """Pass until `aclose` (or a cancellation) ends the loop."""
        try:
            async with anyio.create_task_group() as tasks:
                self.tasks = tasks
                watch = CrashWatch(self.dead_letters, self.member_crashed)
                self._crash_watch = await self.spawner.actors.spawn(
                    watch, name=f"service:{self.spec.name}:crash-watch"
                )
                self.spawner.parent = self._crash_watch
                self.spawner.on_dead_letter = self.dead_letters.file
                tasks.start_soon(self._tick, name=f"probes:{self.spec.name}")
                with self._loop:
                    while not self._stopping:
                        await self._wait_turn()
                        if not self._stopping and self.failure is None:
                            await self._guarded_pass()
                tasks.cancel_scope.cancel()
        finally:
            self.tasks = None
            if self._crash_watch is not None:
                self._crash_watch.stop_nowait(drain=False)
            self._ended.set()

    async def _wait_turn(self) -> None:
        """Wait for the next pass: the interval, a wake-up, or the backoff."""
        first = anyio.current_time()
        deadline = (
            self.retry_at if self.retry_at > first else first + self.probe_interval
        )
        while not self._stopping:
            limit = math.inf if self.failure is not None else deadline
            with anyio.move_on_at(limit):
                await self.wake_event.wait()

            if not self.wake_event.is_set():
                return  # the deadline came

            self.wake_event = anyio.Event()
            urgent, self.urgent = self.urgent, False
            if self.failure is not None:
                continue

            if urgent or self.retry_at <= anyio.current_time():
                return

    async def _tick(self) -> None:
        """Keep probing between passes, and while passes back off."""
        while True:
            await anyio.sleep(self.probe_interval)
            self.start_probes()
            self.check_answering()

    async def _guarded_pass(self) -> None:
        try:
            await self.run_pass()
        except Exception as error:  # noqa: BLE001  (contained per service)
            self._crashed(error)

    async def run_pass(self) -> None:
        """Observe, plan and act once; log it as one ``reconcile_pass`` line."""
        record = PassRecord(self.spec.name)
        try:
            await self._pass(record)
        except anyio.get_cancelled_exc_class():
            record.outcome = "cancelled"
            raise
        except Exception:
            record.outcome = "crashed"
            raise
        finally:
            record.log(converged=self.converged_generation == self.generation)

    async def _pass(self, record: PassRecord) -> None:
        generation = self.generation
        steps: list[Step] = []
        try:
            await self._begin()
            await self.observe()
            if await self._hand_over(record):
                self.wake(urgent=True)
                return

            steps = self._plan()
            failing_over = promotes(steps, self.members)
            if failing_over:
                self.converged_generation = -1
                if not await fence_lost_writers(self, steps):
                    record.outcome = "cut_short"
                    self.wake()
                    return

                steps = self._plan(passed_over=await refresh_candidates(self))

            record.steps = len(steps)
            # A failover goes first, as a fence does: configure waits.
            configured = 0 if failing_over else await self.reconfigure(steps)
            if configured is None:
                record.outcome = "cut_short"
                return

            record.configured = configured
            if not steps:
                record.outcome = "acted" if configured else "idle"
                self._report_withheld()
                if not self.advance_move():
                    self._settled(generation)
                return

            self.acted_since_converged = True
            self.degraded_reported = False  # what follows the steps is news
            self.converged_generation = -1
            done = await self.act(steps)
            record.outcome = "acted" if done else "cut_short"
            self._report_withheld()
        except RolecallError as error:
            record.outcome = self._failed(error)
        else:
            if steps:
                self.last_error = None
                if done:
                    self.retry_at = 0.0
                    self.wake()  # confirm with a fresh observation
        finally:
            passed, self.passed = self.passed, anyio.Event()
            passed.set()

    async def _begin(self) -> None:
        self._settle()
        listed = None
        if not self.adopted and self.take_over:
            # A take-over must not take a claim it cannot use: what runs is
            # checked against the spec first (reading only).
            listed = await self.survey()
        # The claim first: nothing of the service is touched before it.
        await self.hold_claim()
        if not self.adopted:
            await self.adopt(listed)

    async def _hand_over(self, record: PassRecord) -> bool:
        """Run a switchover asked for, or a move's switch; whether one ran
        (the pass ends there)."""
        # A reconcile pass runs between two switchovers.
        if self._switchovers and not self._switched:
            self._switched = True
            record.outcome = "switchover"
            await self.run_switchover(self._switchovers.pop(0))
            return True

        self._switched = False
        if await self.switch_move():
            record.outcome = "move"
            return True

        return False

    def _plan(self, *, passed_over: frozenset[str] = frozenset()) -> list[Step]:
        return plan_steps(
            self.planning_spec(),
            [m.observed() for m in self.members.values()],
            next_number=self.next_number,
            promote=not self.failover_paused,
            passed_over=passed_over,
        )

    async def _check_member(self, member: Member) -> None:
        try:
            try:
                info: ContainerInfo | None = await self.runtime_of(
                    member
                ).inspect_container(member.container_id)
            except ContainerGoneError:
                info = None
            except RolecallError:
                self.wake()
                return

            self._take_event(member, info)
        finally:
            self._checking.discard(member.id)

    def _take_event(self, member: Member, info: ContainerInfo | None) -> None:
        running = is_running(info)
        still_ours = self.members.get(member.id) is member
        if running or not still_ours or not member.alive or member.changing:
            self.wake()
            return

        self.see(member, info)
        self.interrupt_steps(member)
        self.wake(urgent=True)

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
        for request in self._switchovers:
            request.error = RolecallError(
                f"service {self.spec.name!r} was closed before its switchover ran"
            )
            request.done.set()

        self._answer_movers(
            RolecallError(
                f"service {self.spec.name!r} was closed while it moved; the"
                " journal keeps the move, and the next control plane resumes it"
            )
        )

        for member_id in list(self.members):
            if remove:
                await self.remove_member(member_id)
            else:
                self.members[member_id].ref.stop_nowait(drain=False)
