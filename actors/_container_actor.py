"""The container actor: one per container, running its hooks one at a time.

The actor mirrors its container: what phase its hooks have brought it to,
which role it holds and under which epoch. It knows no topology; the
supervisor tells it, message by message, what to be.

Role requests coalesce. `ContainerActor.request_role` keeps at most one
request waiting per member: a newer one answers the waiting one as
`Superseded` at once and takes its place, so a flood of requests costs one
slot, and the latest always wins. A newer request also cuts short a
``status`` or ``role`` hook that is running (its process is killed), so a
member stuck following a dead primary can be promoted at once. Requests are
never reordered: the actor applies them in the order they were made, and
skips those superseded meanwhile. An `ApplyRole` asked through the mailbox
does not coalesce (it runs as asked), but a newer request cuts it short
like any running role hook. So does it a ``configure`` asked through
`RunHook` (a running member configured again), which answers `Superseded`.

A message of a type the actor does not know is dead-lettered: logged,
handed to ``on_dead_letter``, and answered with ``None``; the actor goes on.
A ``configure``, ``start`` or ``stop`` hook the image does not carry (exit
69, 126 or 127) is skipped: those hooks are optional.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anyio
import structlog
from attrs import define

from rolecall.hooks_protocol import (
    DEFAULT_HOOK_TIMEOUTS,
    HookError,
    HookName,
    HookPayload,
    HookResult,
    HookUnsupportedError,
    MemberInfo,
    MemberStatus,
    Plan,
    Role,
    RolecallError,
    plan_from_data,
    status_from_data,
)

from ._actor import Actor
from ._container_messages import (
    ApplyRole,
    ContainerMessage,
    MemberPhase,
    Prepare,
    Probe,
    RoleTicket,
    RunHook,
    ServiceView,
    StopService,
    Superseded,
    _TakeRole,
)
from ._hook_stderr import StderrForwarder
from ._hooks import HookConvention, run_hook
from ._runtime import ContainerRuntime

__all__ = ["ContainerActor"]

_log = structlog.get_logger("rolecall.actors")

# Hooks polled often enough that one info line per run would drown the rest.
_QUIET_HOOKS = frozenset({HookName.STATUS})

# Hooks an image may leave out: without them there is nothing to do.
_OPTIONAL_HOOKS = frozenset({HookName.CONFIGURE, HookName.START, HookName.STOP})

# Hooks a newer role request may cut short: rerunning them is cheap.
_PREEMPTIBLE_HOOKS = frozenset({HookName.STATUS, HookName.ROLE})


@define(eq=False)
class ContainerActor(Actor[ContainerMessage]):
    """Mirrors one container and runs its hooks, never two at once.

    Args:
        runtime: The engine the container runs on.
        container_id: The container's engine id.
        member_id: The member it embodies.
        convention: How its image's hooks are called.
        on_dead_letter: Called with a message the actor cannot handle and
            why; the message is then dropped.
    """

    runtime: ContainerRuntime
    container_id: str
    member_id: str
    convention: HookConvention
    # The furthest phase the hooks reached since the container last started.
    phase: MemberPhase = MemberPhase.CREATED
    # The role last applied with success; None until the first.
    role: Role | None = None
    # For a replica: the member it was last told to follow.
    primary: str | None = None
    # The epoch of the last role applied; never goes down.
    epoch: int = 0
    # What the image said it can do; None until `plan` ran.
    plan: Plan | None = None
    # The last status report; None until the first probe.
    last_status: MemberStatus | None = None
    # The view `configure` last succeeded with since the container last
    # started; None before. The supervisor compares its config, env and
    # members with the service's now to tell when to configure again.
    configured_with: ServiceView | None = None
    on_dead_letter: Callable[[object, str], None] | None = None
    # The newest role request not yet taken up; a _TakeRole is queued
    # exactly while this is set.
    _role_waiting: RoleTicket | None = None
    # The hook running now, while one does; None when idle.
    _running: HookName | None = None
    # anyio clock time at which the running hook started.
    _running_since: float = 0.0
    # Cancels the running hook when a newer role request comes; None while
    # the running hook (if any) may not be cut short.
    _preemptible: anyio.CancelScope | None = None

    @property
    def busy(self) -> bool:
        """Whether a hook is running."""
        return self._running is not None

    @property
    def running(self) -> tuple[HookName, float] | None:
        """The hook running now and when it started (anyio's clock)."""
        if self._running is None:
            return None

        return self._running, self._running_since

    def request_role(self, message: ApplyRole) -> RoleTicket:
        """Ask for a role; the latest request wins.

        Returns at once, without waiting; await `RoleTicket.wait` for the
        answer. A request still waiting is answered `Superseded` now. A
        ``status`` or ``role`` hook running now is cut short (and a role
        request it served is answered `Superseded`).

        Raises:
            MailboxFullError: The actor's mailbox has no room.
            ActorStoppedError: The actor has ended.
        """
        ticket = RoleTicket(message, self.ref)
        waiting, self._role_waiting = self._role_waiting, ticket
        if waiting is not None:
            waiting._answer(Superseded(waiting.message.epoch))
            return ticket

        try:
            self.ref.tell_nowait(_TakeRole())
        except Exception:
            self._role_waiting = None
            raise

        if self._preemptible is not None:
            self._preemptible.cancel()

        return ticket

    async def handle(  # noqa: PLR0911  (one return per kind of message)
        self, message: object
    ) -> object:
        """Run the hooks the message asks for."""
        match message:
            case Prepare(view=view, plan=plan):
                return await self._prepare(view, plan)
            case ApplyRole():
                return await self._apply_role(message)
            case _TakeRole():
                await self._take_role()
                return None
            case Probe(view=view):
                return await self._probe(view)
            case StopService(view=view):
                await self._run(view, HookName.STOP)
                self.phase = MemberPhase.STOPPED
                return None
            case RunHook(view=view, hook=hook, request=request):
                # A configure of a running member gives way to a role
                # request: a failover must not wait for a slow or hung one.
                # It is idempotent, so the next pass runs it again.
                configure = hook is HookName.CONFIGURE
                result = await self._run(view, hook, request, preemptible=configure)
                if result is None:
                    return Superseded(None, interrupted=True)
                if configure:
                    self.configured_with = view
                return result

        self._dead_letter(message, "not a message a container actor takes")
        return None

    def container_restarted(self) -> None:
        """Forget what the hooks did: the container's processes are new."""
        self.phase = MemberPhase.CREATED
        self.configured_with = None

    def _dead_letter(self, message: object, reason: str) -> None:
        _log.warning(
            "dead_letter",
            member=self.member_id,
            container_id=self.container_id[:12],
            message_type=type(message).__name__,
            reason=reason,
        )
        if self.on_dead_letter is not None:
            self.on_dead_letter(message, reason)

    async def _take_role(self) -> None:
        ticket, self._role_waiting = self._role_waiting, None
        if ticket is None:
            return

        try:
            result = await self._apply_role(ticket.message)
        except Exception as error:  # noqa: BLE001  (the requester gets it)
            ticket._fail(error)
        else:
            ticket._answer(result)

    async def _prepare(self, view: ServiceView, plan: Plan | None) -> Plan:
        if plan is None:
            result = await self._run_fully(view, HookName.PLAN)
            plan = plan_from_data(result.data)

        self.plan = plan
        self.phase = MemberPhase.PLANNED
        await self._run_fully(view, HookName.CONFIGURE)
        self.configured_with = view
        self.phase = MemberPhase.CONFIGURED
        await self._run_fully(view, HookName.START)
        self.phase = MemberPhase.RUNNING

        return self.plan

    async def _run_fully(self, view: ServiceView, hook: HookName) -> HookResult:
        result = await self._run(view, hook)
        assert result is not None  # noqa: S101  (only status and role are cut short)
        return result

    async def _apply_role(self, message: ApplyRole) -> HookResult | Superseded:
        result = await self._run(
            message.view, HookName.ROLE, message.request(), role=message.role
        )
        if result is None:
            return Superseded(message.epoch, interrupted=True)

        self.role = message.role
        self.primary = message.primary
        self.epoch = max(self.epoch, message.epoch)

        return result

    async def _probe(self, view: ServiceView) -> MemberStatus | Superseded:
        result = await self._run(view, HookName.STATUS)
        if result is None:
            return Superseded(None, interrupted=True)

        self.last_status = status_from_data(result.data)

        return self.last_status

    async def _run(
        self,
        view: ServiceView,
        hook: HookName,
        request: dict[str, Any] | None = None,
        *,
        role: Role | None = None,
        preemptible: bool = False,
    ) -> HookResult | None:
        """Run one hook; ``None`` when a newer role request cut it short
        (``status``, ``role``, and any hook run ``preemptible``)."""
        payload = HookPayload(
            hook=hook,
            service=view.service,
            member=self._me(view, role),
            members=view.members,
            config=view.config,
            env=view.env,
            request=request or {},
        )
        timeout = self._timeout(view, hook)
        # Passed with each line rather than bound: binding builds a logger
        # per run, even when the level drops every line it would write.
        fields = {
            "service": view.service,
            "member": self.member_id,
            "container_id": self.container_id[:12],
            "hook": hook.value,
        }
        started = time.monotonic()
        self._running = hook
        self._running_since = anyio.current_time()
        scope = anyio.CancelScope()
        if preemptible or hook in _PREEMPTIBLE_HOOKS:
            self._preemptible = scope
        level = _LEVELS["debug" if hook in _QUIET_HOOKS else "info"]
        stderr = StderrForwarder(_log, fields, _secrets(view), level=level)
        try:
            with scope:
                try:
                    run = await run_hook(
                        self.runtime,
                        self.container_id,
                        payload,
                        convention=self.convention,
                        timeout=timeout,
                        secrets=stderr.secrets,
                        on_stderr=stderr.feed,
                    )
                finally:
                    stderr.close()  # its lines come before the run's own
        except HookUnsupportedError as error:
            if hook not in _OPTIONAL_HOOKS:
                _log.warning("hook_run", **fields, outcome=type(error).__name__)
                raise

            _log.info("hook_skipped", **fields, reason="the image does not carry it")
            return HookResult()
        except HookError as error:
            _log.warning(
                "hook_run",
                **fields,
                outcome=type(error).__name__,
                exit_code=error.exit_code,
                duration_ms=_ms_since(started),
                stderr_tail=error.stderr_tail,
            )
            raise
        except RolecallError as error:
            # The container went away, the engine failed, or the answer did
            # not decode: the hook's outcome is unknown.
            _log.warning(
                "hook_run",
                **fields,
                outcome=type(error).__name__,
                duration_ms=_ms_since(started),
                error=str(error),
            )
            raise
        finally:
            self._running = None
            self._preemptible = None

        if scope.cancelled_caught:
            _log.info(
                "hook_run",
                **fields,
                outcome="superseded",
                duration_ms=_ms_since(started),
            )
            return None

        _log.log(
            level,
            "hook_run",
            **fields,
            outcome="ok",
            exit_code=run.exec.exit_code,
            duration_ms=_ms_since(started),
            **({"role": role.value} if role else {}),
        )

        return run.result

    def _me(self, view: ServiceView, role: Role | None) -> MemberInfo:
        known = next((m for m in view.members if m.id == self.member_id), None)
        role = role or self.role
        if known is not None and known.role is role and known.epoch == self.epoch:
            return known  # the usual case: the view shows this member as it is

        address = known.address if known else self.member_id
        return MemberInfo(
            id=self.member_id,
            role=role,
            address=address,
            epoch=self.epoch,
        )

    def _timeout(self, view: ServiceView, hook: HookName) -> float:
        if hook in view.timeouts:
            return view.timeouts[hook]

        if self.plan is not None and hook in self.plan.timeouts:
            return self.plan.timeouts[hook]

        return DEFAULT_HOOK_TIMEOUTS[hook]


_LEVELS = {"debug": 10, "info": 20}


def _ms_since(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


def _secrets(view: ServiceView) -> list[str]:
    """The secret values a hook's stderr must not show."""
    return [view.env[key] for key in view.secret_keys if view.env.get(key)]
