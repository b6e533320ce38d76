"""A graceful change of primary: hand writes over without losing any.

A failover promotes a replica after the primary is gone, so writes the
primary acknowledged but no replica had may be lost. A switchover moves the
primary role while the old primary still runs, in this order:

1. The old primary gets a ``role`` request to become a replica of the
   target with ``"handover": true``: it stops taking writes, waits until
   the target has everything it acknowledged, then follows the target. If
   the target does not catch up in time the hook gives up (exit 75), writes
   resume, and the old primary stays primary.
2. The target is told to become the primary.
3. The other replicas are told to follow the target.

Between 1 and 2 no member takes writes; clients see refusals, not losses.
Switchovers run inside the controller's loop, between passes, one at a
time in the order asked. The image must declare the ``switchover``
behaviour in its plan (its ``role`` hook understands ``handover``).
"""

from __future__ import annotations

import time

import anyio
from attrs import define, field

from rolecall.actors import ApplyRole as ApplyRoleMessage
from rolecall.actors import Superseded
from rolecall.hooks_protocol import Role, RolecallError, SpecError, Topology

from ._acting import Acting
from ._members import Member
from ._service_record import ChangeRecord

__all__ = [
    "SWITCHOVER_BEHAVIOUR",
    "Switching",
    "SwitchoverRequest",
    "SwitchoverSupersededError",
]

SWITCHOVER_BEHAVIOUR = "switchover"
"""The plan behaviour that says the ``role`` hook understands ``handover``."""


@define(eq=False)
class SwitchoverRequest:
    """One switchover asked for, answered by the controller's loop."""

    member: str
    # Set once the switchover ran, with or without success.
    done: anyio.Event = field(factory=anyio.Event)
    # Why it did not succeed; None after a success.
    error: Exception | None = None


class Switching(Acting):
    """The switchover part of a `ServiceController`."""

    __slots__ = ()

    def check_switchover(self, member_id: str) -> Member:
        """The member, if it can take over writes now.

        Raises:
            SpecError: It is unknown, or it cannot take over gracefully.
        """
        name = self.spec.name
        member = self.members.get(member_id)
        if member is None:
            known = ", ".join(self.members) or "none"
            raise SpecError(
                f"service {name!r} has no member {member_id!r} (members: {known})",
                service=name,
            )

        if self.spec.topology is not Topology.REDUNDANT:
            raise SpecError(
                f"service {name!r} is {self.spec.topology.value}: a switchover"
                " needs the redundant topology",
                service=name,
            )

        if SWITCHOVER_BEHAVIOUR not in self.plan.behaviours:
            raise SpecError(
                f"image {self.spec.image!r} does not declare the"
                f" {SWITCHOVER_BEHAVIOUR!r} behaviour in its plan: its role hook"
                " cannot hand writes over without losing some",
                service=name,
            )

        problem = self._unfit(member)
        if problem is not None:
            raise SpecError(
                f"member {member_id!r} of service {name!r} cannot take over"
                f" writes: {problem}",
                service=name,
            )

        return member

    def _unfit(  # noqa: PLR0911  (one guard per reason it cannot take over)
        self, member: Member
    ) -> str | None:
        writer = self.writer()
        if writer is member:
            return None

        if writer is None:
            return "the service has no primary to hand over from (a failover is due)"

        if member.actor.role is not Role.REPLICA:
            return f"it is not a replica (role {member.actor.role})"

        if not (member.alive and member.ready) or member.unresponsive:
            return "it is not running and prepared"

        if not member.synced:
            return "it never completed a sync, so it holds no data"

        if not member.healthy:
            return "its last status was not healthy"

        if member.actor.primary != writer.id:
            return f"it follows {member.actor.primary!r}, not the primary {writer.id!r}"

        return None

    async def run_switchover(self, request: SwitchoverRequest) -> None:
        """Run one switchover and answer its request."""
        try:
            await self._switch(request.member)
        except Exception as error:  # noqa: BLE001  (the asker gets it)
            request.error = error
        finally:
            request.done.set()

    async def _switch(self, member_id: str) -> None:
        target = self.check_switchover(member_id)
        old = self.writer()
        if old is None or old is target:
            return

        started = time.monotonic()
        await self._hand(old, Role.REPLICA, target.id, handover=True)
        await self._hand(target, Role.PRIMARY, None)
        for member in list(self.members.values()):
            if member in (old, target) or not (member.alive and member.ready):
                continue

            await self._hand(member, Role.REPLICA, target.id)

        self.event(
            "switchover",
            target.id,
            f"{target.id} took over writes from {old.id} without losing any",
            duration=time.monotonic() - started,
            previous=old.id,
        )

    async def _hand(
        self,
        member: Member,
        role: Role,
        primary: str | None,
        *,
        handover: bool = False,
    ) -> None:
        epoch = self.take_epoch(ChangeRecord("switchover", member.id, role, primary))
        message = ApplyRoleMessage(
            view=self.view(member.engine),
            role=role,
            primary=primary,
            epoch=epoch,
            handover=handover,
        )
        started = time.monotonic()
        outcome = await self.request_role(member, message)
        if isinstance(outcome, Superseded):
            raise SwitchoverSupersededError(
                f"the switchover's role request to {member.id!r} (epoch"
                f" {message.epoch}) was superseded by a newer one"
            )

        self.persist()

        follow = f" of {primary}" if primary else ""
        how = ", after handing writes over" if handover else ""
        self.event(
            "role_applied",
            member.id,
            f"role {role.value}{follow}{how}",
            duration=time.monotonic() - started,
            epoch=message.epoch,
        )


class SwitchoverSupersededError(RolecallError):
    """A newer request replaced the switchover, or one of its role requests."""
