"""Acting on a service: the reconciler's steps, run through the members.

Steps run one at a time, in the order planned. Engine calls that create,
restart, fence or remove a container are shielded from cancellation, so a
pass cut short never leaves a container rolecall has not recorded; waits on
hooks are not, so an unexpected loss can end the steps under way at once
(the hooks themselves finish or are superseded in their actors).

The loss of the member a step acts on is left to that step: its hook fails
with `ContainerGoneError`, which is what the pass reports. The loss of
another member cancels the steps, as they were planned on a state that no
longer holds.

Restarts are paced: the first restart of a member that stopped happens at
once, each later one waits for the backoff (see `Supervision`), and every
restart counts against the intensity limit. One pass restarts at most one
group: the member that stopped and those its strategy restarts with it.
"""

from __future__ import annotations

import contextlib
import time

import anyio
import structlog

from rolecall.actors import ApplyRole as ApplyRoleMessage
from rolecall.actors import (
    ContainerState,
    Prepare,
    RoleTicket,
    StopService,
    Superseded,
)
from rolecall.hooks_protocol import (
    ContainerGoneError,
    EngineError,
    HookResult,
    MailboxFullError,
    Role,
    RolecallError,
)

from ._members import Member
from ._observing import PROBE_WAIT, Observing
from ._reconciler import (
    ApplyRole,
    CreateMember,
    FenceMember,
    PrepareMember,
    RemoveMember,
    RestartMember,
    Step,
)
from ._service_record import ChangeRecord

__all__ = ["FENCE_TIMEOUT", "RESTART_TIMEOUT", "Acting"]

_log = structlog.get_logger("rolecall.supervisor")

FENCE_TIMEOUT = 30.0
"""Seconds a fence (kill, then a look that it is down) may take."""

RESTART_TIMEOUT = 60.0
"""Seconds a container restart may take. An engine wedged on one container
(docker/for-linux#891) would otherwise hold the service's controller, and
with it the failover of a lost writer, for as long as the wedge lasts."""

_FENCED = frozenset(
    {ContainerState.EXITED, ContainerState.DEAD, ContainerState.CREATED}
)


class Acting(Observing):
    """The acting part of a `ServiceController`."""

    __slots__ = ()

    async def act(self, steps: list[Step]) -> bool:
        """Run ``steps`` in order.

        Returns:
            Whether every step ran; ``False`` when the pass stopped early:
            a restart must wait for its backoff, a role request was
            superseded, an unexpected loss cut the steps short, or the
            service was given up on.
        """
        restarted = False
        with anyio.CancelScope() as scope:
            self.acting = scope
            try:
                for step in steps:
                    if isinstance(step, RestartMember) and not restarted:
                        if not self._may_restart_now(step.member):
                            return False

                        restarted = True

                    self.acting_on = step.member
                    if not await self.execute(step, planned=steps):
                        return False
            finally:
                self.acting = None
                self.acting_on = None

        return not scope.cancelled_caught

    def _may_restart_now(self, member_id: str) -> bool:
        now = anyio.current_time()
        if now < self.restart_at:
            wait = self.restart_at - now
            self.retry_at = max(self.retry_at, self.restart_at)
            self.event(
                "restart_delayed",
                member_id,
                f"restarts back off: the next in {wait:.2f}s",
                retry_in=round(wait, 3),
            )
            return False

        member = self.members[member_id]
        if member.fenced:
            return True  # killed on purpose to fence it: no failure to count

        cause = "unresponsive" if member.unresponsive else f"exit {member.exit_code}"

        return self.note_restart(f"{member_id} ({cause})", now)

    async def execute(self, step: Step, *, planned: list[Step] | None = None) -> bool:
        """Run one step and put it on the timeline.

        Args:
            step: The step.
            planned: The steps of the pass it belongs to; a new member's
                container is labelled with the role they give it.

        Returns:
            ``False`` when a role request was superseded before it applied.
        """
        if isinstance(step, CreateMember | RestartMember):
            # The container comes first, with its own line on the timeline,
            # so that a hook failing next does not hide that it exists.
            if isinstance(step, CreateMember):
                await self._create(
                    step.member,
                    _planned_role(planned, step.member),
                    step.extra,
                    step.engine,
                )
            else:
                await self._restart(step.member)

            step = PrepareMember(step.member)

        started = time.monotonic()
        fields: dict[str, int] = {}
        match step:
            case PrepareMember(member=member_id):
                await self.prepare(self.members[member_id])
                detail, kind = "ran configure, start", "member_prepared"
            case ApplyRole(member=member_id, role=role, primary=primary):
                if not await self.apply_role(member_id, step):
                    return False
                fields["epoch"] = self.epoch
                follow = f" of {primary}" if primary else ""
                detail, kind = f"role {role.value}{follow}", "role_applied"
            case FenceMember(member=member_id):
                await self._fence(member_id)
                detail, kind = "killed and kept down", "member_fenced"
            case RemoveMember(member=member_id):
                await self.remove_member(member_id)
                detail, kind = "stopped and removed", "member_removed"

        took = time.monotonic() - started
        self.event(kind, member_id, detail, duration=took, **fields)

        return True

    async def _create(
        self, member_id: str, role: Role | None, extra: Role | None, engine: str
    ) -> None:
        started = time.monotonic()
        number = self.next_number
        # Written first: a start after a crash here removes what the create
        # left half made (see ``_adoption``).
        self.persist(ChangeRecord("create", member_id))
        with anyio.CancelScope(shield=True):
            member = await self.spawner.create(
                self.spec,
                self.plan,
                self.convention,
                member_id,
                number,
                origin=(self.generation, self.epoch, role),
                extra=extra,
                engine=engine,
            )
        # Taken only once the member exists: a create the engine refused is
        # retried under the same number (its name finds what it left).
        self.next_number = number + 1
        self.members[member_id] = member
        member.last_answer = anyio.current_time()
        self.persist()
        self.event(
            "member_created",
            member_id,
            f"created container {member.name} on engine {engine}",
            duration=time.monotonic() - started,
            engine=engine,
        )

    async def _restart(self, member_id: str) -> None:
        started = time.monotonic()
        member = self.members[member_id]
        was = "unresponsive" if member.unresponsive else f"exit code {member.exit_code}"
        member.changing = True
        try:
            # Shielded, so a restart is not cut half-way by the pass's own
            # cancellation; bounded, so a wedged engine cannot hold it.
            with anyio.move_on_after(RESTART_TIMEOUT, shield=True) as deadline:
                await self.spawner.restart(self.spec, self.plan, member)
        finally:
            member.changing = False

        if deadline.cancelled_caught:
            raise EngineError(
                f"could not restart member {member_id!r}: the engine did not"
                f" start its container within {RESTART_TIMEOUT:g}s (see `docker"
                " inspect` of it); the next pass tries again, other members are"
                " handled meanwhile"
            )

        member.actor.container_restarted()
        member.alive = True
        member.fenced = member.unresponsive = member.confirmed = False
        member.exit_code, member.oom_killed = None, False
        member.silent_since = member.unhealthy_since = None
        member.last_answer = anyio.current_time()
        backoff, gap = self.restart_delay, self.restart_gap
        self.event(
            "member_restarted",
            member_id,
            f"restarted its container (it was down: {was})",
            duration=time.monotonic() - started,
            backoff=round(backoff, 3),
            attempt=self.restart_backoff.attempts,
            since_last=None if gap is None else round(gap, 3),
        )

    async def prepare(self, member: Member) -> None:
        """Run ``configure`` and ``start``, then probe the member.

        The image's plan was read when the spec was accepted, so ``plan``
        is not run again in each member: the member's actor is handed it.
        The probe is waited for as briefly as a pass waits for its probes:
        a ``status`` hook that hangs must not hold up the steps that follow.
        """
        await self.ask_member(member, Prepare(self.view(member.engine), plan=self.plan))
        member.last_answer = anyio.current_time()
        # A container that outlived an earlier supervisor knows a newer
        # epoch than this controller: learn it before sending a role. (If
        # the probe is late, a stale role command is refused, the next
        # probe teaches the epoch, and the next pass sends a newer one.)
        if self.tasks is None:
            await self.probe(member)
            return

        # Only this member: the others were probed when they were prepared
        # and by the pass, and probing them all again after each member
        # made preparing a service quadratic in its size.
        self.start_probe(member)
        with anyio.move_on_after(PROBE_WAIT):
            while member.probing:
                await self.stirred.wait()

    async def apply_role(self, member_id: str, step: ApplyRole) -> bool:
        """Tell a member its role under a new epoch.

        Returns:
            ``False`` when a newer role request superseded this one.
        """
        epoch = self.take_epoch(
            ChangeRecord("role", member_id, step.role, step.primary)
        )
        member = self.members[member_id]
        message = ApplyRoleMessage(
            view=self.view(member.engine),
            role=step.role,
            primary=step.primary,
            epoch=epoch,
        )
        if isinstance(await self.request_role(member, message), Superseded):
            return False

        member.confirmed = False  # until a status reports the new role
        self.persist()
        member.link_down_since = None  # the next status tells it afresh

        if member.is_writer and self.writer_lost_at is not None:
            self._writer_found(member_id)

        return True

    async def request_role(
        self, member: Member, message: ApplyRoleMessage
    ) -> HookResult | Superseded:
        """Hand a role request to a member's actor and wait for the answer.

        Raises:
            MailboxFullError: The member's mailbox is full (logged).
            HookError: The role hook did not succeed.
        """
        try:
            ticket: RoleTicket = member.actor.request_role(message)
        except MailboxFullError:
            _log.warning(
                "mailbox_overflow",
                service=self.spec.name,
                member=member.id,
                refused="role request",
                epoch=message.epoch,
            )
            raise

        return await ticket.wait()

    def _writer_found(self, member_id: str) -> None:
        took = time.time() - (self.writer_lost_at or time.time())
        lost, self.lost_writer = self.lost_writer, None
        self.writer_lost_at = None
        if member_id == lost:
            self.event(
                "writer_restarted",
                member_id,
                f"{member_id} took writes again after a restart in place",
                duration=took,
            )
            return

        self.event(
            "failover",
            member_id,
            f"{member_id} took over writes from {lost}",
            duration=took,
            previous=lost,
        )

    async def _fence(self, member_id: str) -> None:
        member = self.members[member_id]
        member.changing = True
        try:
            with anyio.CancelScope(shield=True):
                await self._kill_and_confirm(member)
        finally:
            member.changing = False

        member.alive = False
        member.fenced = True
        self.persist()

    async def _kill_and_confirm(self, member: Member) -> None:
        # No promotion may follow unless the old writer is known down: an
        # engine that cannot be reached, or that does not answer in time
        # (one wedged on the container), raises here, which ends the pass.
        with anyio.move_on_after(FENCE_TIMEOUT) as deadline:
            with contextlib.suppress(ContainerGoneError):  # gone: fenced enough
                await self.runtime_of(member).kill_container(member.container_id)
                info = await self.runtime_of(member).inspect_container(
                    member.container_id
                )
                if info.state not in _FENCED:
                    raise EngineError(
                        f"could not fence member {member.id!r}: its container"
                        f" is still {info.state.value} after a kill; no replica"
                        " is promoted until it is down"
                    )

        if deadline.cancelled_caught:
            raise EngineError(
                f"could not fence member {member.id!r}: the engine did not kill"
                f" its container within {FENCE_TIMEOUT:g}s; no replica is"
                " promoted until it is down"
            )

    async def remove_member(self, member_id: str) -> None:
        """Stop a member's service gracefully if it is idle, then remove it.

        A member whose actor is busy (a hook hung, say) is removed without
        the graceful stop: removing its container ends the hook at once,
        and a member being removed has nothing left to flush.
        """
        member = self.members[member_id]
        if member.alive and member.ready and not member.unresponsive:
            await self._stop_gracefully(member)

        member.changing = True
        self.persist(ChangeRecord("remove", member_id))
        with anyio.CancelScope(shield=True):
            await self.spawner.remove(member)
        del self.members[member_id]
        self.persist()

    async def _stop_gracefully(self, member: Member) -> None:
        if member.actor.busy:
            _log.info(
                "stop_skipped",
                service=self.spec.name,
                member=member.id,
                reason="a hook is still running in it",
            )
            return

        try:
            await self.ask_member(member, StopService(self.view(member.engine)))
        except RolecallError as error:
            # The container goes anyway; a failed graceful stop only loses
            # the chance to flush, which a removed member no longer needs.
            _log.warning(
                "stop_failed",
                service=self.spec.name,
                member=member.id,
                error=str(error),
            )


def _planned_role(steps: list[Step] | None, member_id: str) -> Role | None:
    """The role the steps of a pass give a member, if they give one."""
    for step in steps or ():
        if isinstance(step, ApplyRole) and step.member == member_id:
            return step.role

    return None
