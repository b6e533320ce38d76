"""Configuring running members again when what ``configure`` was told changes.

``configure`` runs when a member is prepared, with the service's config, env
and member list of that moment. When one of those changes (a spec applied
with a new config or env, a password say, or a member that joins or leaves)
every running, prepared member is configured again before the pass acts on
anything else: replicas first, the writer last, so that for a password the
replicas know the new one before the writer starts asking for it. A member
whose ``configure`` result data holds ``reapply_role: true`` is then told
its role again, under a new epoch.

A member adopted from an earlier control plane (see ``_adoption``) is
configured once, in the first pass that may act, with the spec it is
adopted under: nothing on the engine or in the journal records what its
``configure`` last saw, and it may be older than the spec: edited while no
control plane ran, or a reconfigure cut short by a crash (some members with
a new password, others with the old one). ``configure`` is idempotent and
changes nothing in a member that has the spec already (the hooks answer
``changed: false`` and restart nothing), so this costs one hook run per
member and no role change. Nothing of it is journaled: the spec's config
and env may hold secrets, and the next control plane configures its adopted
members again anyway.

Failover never waits for this: a pass that must fence a lost writer acts
first, and configures in the next pass. A member that is not prepared needs
nothing here, as preparing it runs ``configure`` with what is current. A
``configure`` that fails fails the pass, like any step, and is retried after
the backoff; members are then configured in the same order again
(``configure`` is idempotent).

Settings a running service takes only at its next restart (the hooks list
them as ``restart_needed``) are put on the timeline but not acted on:
rolecall does not restart members for them.
"""

from __future__ import annotations

import time
from typing import Any

import anyio

from rolecall.actors import RunHook, ServiceView, Superseded
from rolecall.hooks_protocol import HookName, HookResult

from ._acting import Acting
from ._members import Member
from ._reconciler import ApplyRole, FenceMember, Step

__all__ = ["Configuring", "configure_changes"]

REAPPLY_ROLE = "reapply_role"
"""The key of ``configure``'s result data that asks for the role again."""


def configure_changes(configured: ServiceView | None, now: ServiceView) -> str | None:
    """What changed for ``configure`` since it ran with ``configured``.

    Returns:
        A short reason (``config changed``, ``cache-3 joined``, ...), or
        ``None`` when ``configure`` saw what is current. Env values are
        never named: they may be secrets.
    """
    if configured is now:
        return None  # the controller reuses its view while nothing changed

    if configured is None:
        return "adopted"

    reasons = []
    if configured.config != now.config:
        reasons.append("config changed")

    if configured.env != now.env:
        reasons.append("env changed")

    before = _addresses(configured)
    after = _addresses(now)
    joined = sorted(set(after) - set(before))
    left = sorted(set(before) - set(after))
    moved = sorted(i for i in set(after) & set(before) if after[i] != before[i])
    reasons += [f"{member} joined" for member in joined]
    reasons += [f"{member} left" for member in left]
    reasons += [f"{member} moved" for member in moved]

    return ", ".join(reasons) or None


def _addresses(view: ServiceView) -> dict[str, str]:
    return {m.id: m.address for m in view.members}


class Configuring(Acting):
    """The part of a `ServiceController` that configures running members."""

    __slots__ = ()

    def stale_members(self) -> list[tuple[Member, str]]:
        """Running, prepared members ``configure`` must see again, and why;
        replicas first (oldest first), the writer last."""
        stale = []
        for member in self.members.values():
            if not (member.alive and member.ready) or member.unresponsive:
                continue

            now = self.view(member.engine)
            # An adopted member (prepared by an earlier control plane, and
            # adoption runs no hook but status) has no view yet: it is
            # configured with what is current (see the module's docs).
            why = configure_changes(member.actor.configured_with, now)
            if why is not None:
                stale.append((member, why))

        return sorted(stale, key=lambda pair: (pair[0].is_writer, pair[0].number))

    async def reconfigure(self, steps: list[Step]) -> int | None:
        """Configure the stale members, then retell the roles they ask for.

        Args:
            steps: What the pass plans next; a fence among them (a lost
                writer) puts the steps first.

        Returns:
            How many members ``configure`` ran on; ``None`` when an
            unexpected loss or a newer role request cut it short, and the
            pass must not go on to its steps.

        Raises:
            RolecallError: A ``configure`` or ``role`` hook failed.
        """
        if any(isinstance(step, FenceMember) for step in steps):
            return 0

        stale = self.stale_members()
        if not stale:
            return 0

        self.acted_since_converged = True
        self.converged_generation = -1
        with anyio.CancelScope() as scope:
            self.acting = scope
            try:
                again = []
                for member, why in stale:
                    asks = await self._configure(member, why)
                    if asks is None:
                        return None
                    if asks:
                        again.append(member)

                for member in again:
                    if not await self._role_again(member):
                        return None
            finally:
                self.acting = None
                self.acting_on = None

        return None if scope.cancelled_caught else len(stale)

    async def _configure(self, member: Member, why: str) -> bool | None:
        """Run ``configure``; whether the member asks for its role again,
        ``None`` when a role request cut it short (a failover goes first;
        the next pass configures it again)."""
        self.acting_on = member.id
        started = time.monotonic()
        message = RunHook(self.view(member.engine), HookName.CONFIGURE)
        result = await self.ask_member(member, message)
        if isinstance(result, Superseded):
            self.event(
                "configure_interrupted",
                member.id,
                "configure cut short: a role request came first; the next"
                " pass runs it again",
                duration=time.monotonic() - started,
            )
            return None

        data: dict[str, Any] = result.data if isinstance(result, HookResult) else {}
        pending = data.get("restart_needed")
        fields: dict[str, object] = {"reason": why}
        if isinstance(data.get("changed"), bool):
            # The hooks say whether anything differed: an adopted member
            # that had the spec already shows `changed: false`.
            fields["changed"] = data["changed"]

        if isinstance(pending, list) and pending:
            fields["restart_needed"] = [str(name) for name in pending]

        self.event(
            "member_configured",
            member.id,
            f"ran configure: {why}",
            duration=time.monotonic() - started,
            **fields,
        )

        return data.get(REAPPLY_ROLE) is True and member.actor.role is not None

    async def _role_again(self, member: Member) -> bool:
        role = member.actor.role
        if role is None:
            return True

        self.acting_on = member.id
        started = time.monotonic()
        step = ApplyRole(member.id, role, member.actor.primary)
        if not await self.apply_role(member.id, step):
            return False

        follow = f" of {step.primary}" if step.primary else ""
        self.event(
            "role_applied",
            member.id,
            f"role {role.value}{follow}, again after configure",
            duration=time.monotonic() - started,
            epoch=self.epoch,
        )

        return True
