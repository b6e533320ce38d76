"""What a container actor is told: its messages, and the answers to role requests.

`ContainerActor` takes these; `RoleTicket` is how a caller of
`ContainerActor.request_role` waits for its answer, which is the ``role``
hook's result or `Superseded`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

import anyio
from attrs import define, field, frozen

from rolecall.hooks_protocol import (
    ActorStoppedError,
    HookName,
    HookResult,
    MemberInfo,
    Plan,
    Role,
)

__all__ = [
    "ApplyRole",
    "ContainerMessage",
    "MemberPhase",
    "Prepare",
    "Probe",
    "RoleTicket",
    "RunHook",
    "ServiceView",
    "StopService",
    "Superseded",
]


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
    """Run ``plan``, ``configure`` and ``start``; answered with the `Plan`.

    Attributes:
        plan: The image's plan when the sender has read it already (the
            supervisor reads it once per image): the ``plan`` hook is then
            not run again in this container, and the actor keeps this one.
    """

    view: ServiceView
    plan: Plan | None = None


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
    handover: bool = False

    def request(self) -> dict[str, Any]:
        """The ``role`` hook's request for this message."""
        request: dict[str, Any] = {
            "role": self.role.value,
            "primary": self.primary,
            "epoch": self.epoch,
        }
        if self.handover:
            request["handover"] = True

        return request


@frozen
class Superseded:
    """The answer to a request that a newer role request replaced.

    Attributes:
        epoch: The epoch of the replaced role request; ``None`` for a
            replaced ``status`` probe.
        interrupted: Whether its hook had started and was cut short (its
            process killed); ``False`` when it was skipped while queued.
    """

    epoch: int | None
    interrupted: bool = False


@define(eq=False)
class RoleTicket:
    """One request made with `ContainerActor.request_role`.

    Attributes:
        message: The request.
    """

    message: ApplyRole
    _ref: Any
    # Set once the outcome or the error is in place.
    _done: anyio.Event = field(factory=anyio.Event)
    _outcome: HookResult | Superseded | None = None
    _error: Exception | None = None

    @property
    def done(self) -> bool:
        """Whether the request has its answer."""
        return self._done.is_set()

    async def wait(self) -> HookResult | Superseded:
        """Wait for the answer.

        Returns:
            The ``role`` hook's result, or `Superseded` when a newer request
            replaced this one.

        Raises:
            HookError: The hook did not succeed.
            ContainerGoneError: The container went away during the run.
            ActorStoppedError: The actor ended before it answered.
        """
        if not self._done.is_set():
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(self._watch_actor)
                await self._done.wait()
                tasks.cancel_scope.cancel()

        if self._error is not None:
            raise self._error

        assert self._outcome is not None  # noqa: S101  (set with _done)
        return self._outcome

    async def _watch_actor(self) -> None:
        await self._ref.wait_stopped()
        self._fail(
            ActorStoppedError(
                f"actor {self._ref.name!r} ended before it applied role"
                f" {self.message.role.value!r} (epoch {self.message.epoch})",
                actor=self._ref.name,
            )
        )

    def _answer(self, outcome: HookResult | Superseded) -> None:
        if not self._done.is_set():
            self._outcome = outcome
            self._done.set()

    def _fail(self, error: Exception) -> None:
        if not self._done.is_set():
            self._error = error
            self._done.set()


@frozen
class _TakeRole:
    """Internal: the waiting role request is due; at most one is queued."""


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


ContainerMessage = Prepare | ApplyRole | Probe | StopService | RunHook | _TakeRole
