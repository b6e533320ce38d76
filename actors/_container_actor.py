"""The container actor: one per container, running its hooks one at a time.

The actor mirrors its container: what phase its hooks have brought it to,
which role it holds and under which epoch. It knows no topology; the
supervisor tells it, message by message, what to be.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Mapping
from typing import Any

import structlog
from attrs import define, field, frozen

from rolecall.hooks_protocol import (
    DEFAULT_HOOK_TIMEOUTS,
    HookError,
    HookName,
    HookPayload,
    HookResult,
    MemberInfo,
    MemberStatus,
    Plan,
    Role,
    plan_from_data,
    status_from_data,
)

from ._actor import Actor
from ._hooks import HookConvention, run_hook
from ._runtime import ContainerRuntime

__all__ = [
    "ApplyRole",
    "ContainerActor",
    "MemberPhase",
    "Prepare",
    "Probe",
    "RunHook",
    "ServiceView",
    "StopService",
]

_log = structlog.get_logger("rolecall.actors")

# Hooks polled often enough that one info line per run would drown the rest.
_QUIET_HOOKS = frozenset({HookName.STATUS})


class MemberPhase(enum.IntEnum):
    """How far the hooks have brought a container, in order."""

    CREATED = 0
    PLANNED = 1
    CONFIGURED = 2
    RUNNING = 3
    STOPPED = 4


@frozen
class ServiceView:
    """What the supervisor tells a member about its service with each message.

    Attributes:
        service: The service's name.
        members: Every member, as the hooks see them.
        config: The service's configuration.
        env: The service's environment (secret values included).
        secret_keys: Keys of ``env`` never to be logged.
        timeouts: Per-hook deadlines overriding the defaults.
    """

    service: str
    members: tuple[MemberInfo, ...] = ()
    config: dict[str, Any] = field(factory=dict)
    env: dict[str, str] = field(factory=dict)
    secret_keys: frozenset[str] = frozenset()
    timeouts: Mapping[HookName, float] = field(factory=dict)


@frozen
class Prepare:
    """Run ``plan``, ``configure`` and ``start``; answered with the `Plan`."""

    view: ServiceView


@frozen
class ApplyRole:
    """Run ``role``; answered with the hook's result.

    Attributes:
        role: The role to take.
        primary: For ``replica``: the member to follow.
        epoch: The role command's epoch; it only grows.
    """

    view: ServiceView
    role: Role
    primary: str | None
    epoch: int


@frozen
class Probe:
    """Run ``status``; answered with the `MemberStatus`."""

    view: ServiceView


@frozen
class StopService:
    """Run ``stop``; answered with ``None``."""

    view: ServiceView


@frozen
class RunHook:
    """Run any other hook with a request; answered with its `HookResult`."""

    view: ServiceView
    hook: HookName
    request: dict[str, Any] = field(factory=dict)


ContainerMessage = Prepare | ApplyRole | Probe | StopService | RunHook


@define(eq=False)
class ContainerActor(Actor[ContainerMessage]):
    """Mirrors one container and runs its hooks, never two at once.

    Args:
        runtime: The engine the container runs on.
        container_id: The container's engine id.
        member_id: The member it embodies.
        convention: How its image's hooks are called.
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

    async def handle(self, message: ContainerMessage) -> object:
        """Run the hooks the message asks for."""
        match message:
            case Prepare(view=view):
                return await self._prepare(view)
            case ApplyRole():
                return await self._apply_role(message)
            case Probe(view=view):
                return await self._probe(view)
            case StopService(view=view):
                await self._run(view, HookName.STOP)
                self.phase = MemberPhase.STOPPED
                return None
            case RunHook(view=view, hook=hook, request=request):
                return await self._run(view, hook, request)

        raise TypeError(f"container actor got an unknown message {message!r}")

    def container_restarted(self) -> None:
        """Forget what the hooks did: the container's processes are new."""
        self.phase = MemberPhase.CREATED

    async def _prepare(self, view: ServiceView) -> Plan:
        result = await self._run(view, HookName.PLAN)
        self.plan = plan_from_data(result.data)
        self.phase = MemberPhase.PLANNED
        await self._run(view, HookName.CONFIGURE)
        self.phase = MemberPhase.CONFIGURED
        await self._run(view, HookName.START)
        self.phase = MemberPhase.RUNNING

        return self.plan

    async def _apply_role(self, message: ApplyRole) -> HookResult:
        request = {
            "role": message.role.value,
            "primary": message.primary,
            "epoch": message.epoch,
        }
        result = await self._run(
            message.view, HookName.ROLE, request, role=message.role
        )
        self.role = message.role
        self.primary = message.primary
        self.epoch = max(self.epoch, message.epoch)

        return result

    async def _probe(self, view: ServiceView) -> MemberStatus:
        result = await self._run(view, HookName.STATUS)
        self.last_status = status_from_data(result.data)

        return self.last_status

    async def _run(
        self,
        view: ServiceView,
        hook: HookName,
        request: dict[str, Any] | None = None,
        *,
        role: Role | None = None,
    ) -> HookResult:
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
        log = _log.bind(
            service=view.service,
            member=self.member_id,
            container_id=self.container_id[:12],
            hook=hook.value,
        )
        started = time.monotonic()
        try:
            run = await run_hook(
                self.runtime,
                self.container_id,
                payload,
                convention=self.convention,
                timeout=timeout,
                secrets=_secrets(view),
            )
        except HookError as error:
            log.warning(
                "hook_run",
                outcome=type(error).__name__,
                exit_code=error.exit_code,
                duration_ms=_ms_since(started),
                stderr_tail=error.stderr_tail,
            )
            raise

        level = "debug" if hook in _QUIET_HOOKS else "info"
        log.log(
            _LEVELS[level],
            "hook_run",
            outcome="ok",
            exit_code=run.exec.exit_code,
            duration_ms=_ms_since(started),
            **({"role": role.value} if role else {}),
        )

        return run.result

    def _me(self, view: ServiceView, role: Role | None) -> MemberInfo:
        known = next((m for m in view.members if m.id == self.member_id), None)
        address = known.address if known else self.member_id
        return MemberInfo(
            id=self.member_id,
            role=role or self.role,
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
