"""Turn the difference between desired and observed state into ordered steps.

Everything here is pure: it reads records and returns records, so every rule
is tested without a container. The service controller executes the steps in
order and observes again; a step that fails ends the pass, and the next pass
plans afresh from what is then observed.

The rules, in the order they are applied:

1. A member whose container runs but whose hooks have not prepared it
   (``plan``, ``configure``, ``start``) is prepared first.
2. Exactly one member may take writes (the *writer*: ``standalone`` or
   ``primary``). When the writer is lost (its container stopped, or it
   stopped answering), it is fenced (killed and kept down) *before* anyone
   is promoted, and the synced replica with the highest replication offset
   is promoted. A replica that never completed a sync is never promoted: it
   holds no data; nor is one whose ``status`` says its service does not
   answer (its server died in a container that runs on). While failover
   is paused the lost writer is fenced and nothing else is planned.
3. With no synced replica, a dead writer is restarted in place: its volume
   holds the only copy of the data.
4. Replicas follow the writer; missing replicas are created, dead replicas
   are restarted in place (their volume shortens the resync), surplus
   members are removed. A replica whose link to the writer has been down
   for ``unresponsive_after`` is told its role again.
5. A writer superseded by a newer one (a fenced old primary after a
   failover; the member with the highest epoch holds the writer role) is
   never a writer again: it fills a replica's place, restarted in place and
   told to follow (its image rewinds or resyncs it), after the replicas
   that follow already. When no place is left for it, it is removed — but
   only once the new writer has confirmed its role in a ``status``, so its
   volume, the only copy of writes that never reached a replica, is kept
   until the takeover holds.
6. Extra members (``ServiceSpec.extras``, a backup node say) follow the
   writer in their own role, in either topology; they are never promoted,
   never count as replicas, and are restarted or replaced when lost.
7. Placement: new members go to the spec's engine. Of the members a
   topology or an extra role has room for, those on the spec's engine are
   kept first, so a member left on another engine (a move's old members
   once the move switched over; a move's new ones when it is undone) is
   the surplus removed. Nothing here ever creates a member elsewhere in
   place of one on an engine that does not answer.
8. Restarts obey the service's `Supervision`: a member whose restart kind
   forbids it (``temporary``, or ``transient`` after a clean exit) stays
   down; a restart under ``one_for_all`` restarts every other member too,
   under ``rest_for_one`` every member created after it.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Iterable, Sequence

from attrs import evolve

from rolecall.hooks_protocol import Role, Topology

from ._spec import ServiceSpec
from ._steps import (
    ApplyRole,
    CreateMember,
    FenceMember,
    ObservedMember,
    PrepareMember,
    RemoveMember,
    RestartMember,
    Step,
)
from ._supervision import RestartKind, Strategy

__all__ = [
    "ApplyRole",
    "CreateMember",
    "FenceMember",
    "ObservedMember",
    "PrepareMember",
    "RemoveMember",
    "RestartMember",
    "Step",
    "choose_primary",
    "plan_steps",
    "promotion_candidates",
]


def promotion_candidates(members: Iterable[ObservedMember]) -> list[ObservedMember]:
    """The members a lost writer may be replaced by: alive, ready, synced
    replicas of the topology whose service answers."""
    return [
        m
        for m in members
        if m.alive
        and m.ready
        and m.synced
        and m.serving
        and m.role is Role.REPLICA
        and m.extra is None
    ]


def choose_primary(
    members: Iterable[ObservedMember], *, passed_over: Collection[str] = ()
) -> ObservedMember | None:
    """Pick the member to promote when the writer is lost.

    Args:
        members: Members to choose from.
        passed_over: Candidates left out unless no other qualifies (those
            that did not answer a ``status`` asked at failover time).

    Returns:
        The alive, ready, synced replica with the highest offset (the oldest
        on a tie); ``None`` when no member qualifies.
    """
    candidates = promotion_candidates(members)
    answered = [m for m in candidates if m.id not in passed_over]
    candidates = answered or candidates
    if not candidates:
        return None

    return max(candidates, key=lambda m: (m.offset, -m.number))


def plan_steps(
    spec: ServiceSpec,
    members: Sequence[ObservedMember],
    *,
    next_number: int,
    promote: bool = True,
    passed_over: Collection[str] = (),
) -> list[Step]:
    """Plan the steps that bring a service from observed to desired.

    Args:
        spec: The desired state.
        members: Every member rolecall knows of, alive or not.
        next_number: The ordinal the next new member gets.
        promote: Whether a replica may be promoted in place of a lost
            writer; ``False`` while failover is paused.
        passed_over: Replicas not to promote while another candidate
            qualifies (see `choose_primary`).

    Returns:
        Steps to run in order; empty when the service has converged.
    """
    plan = functools.partial(
        _plan, spec, next_number=next_number, promote=promote, passed_over=passed_over
    )
    steps = plan(list(members))
    # A fenced writer was killed on purpose, not lost: bringing it back to
    # follow restarts no one else.
    restarted = {
        step.member
        for step in steps
        if isinstance(step, RestartMember)
        and any(m.id == step.member and not m.alive and not m.fenced for m in members)
    }
    recycled = _recycled(spec.supervision.strategy, members, restarted)
    if not recycled:
        return steps

    return plan([evolve(m, recycle=True) if m.id in recycled else m for m in members])


def _plan(
    spec: ServiceSpec,
    members: list[ObservedMember],
    *,
    next_number: int,
    promote: bool,
    passed_over: Collection[str],
) -> list[Step]:
    planner = _Planner(
        spec, members, next_number, promote=promote, passed_over=passed_over
    )
    if spec.topology is Topology.STANDALONE:
        planner.plan_standalone()
    else:
        planner.plan_redundant()

    return planner.steps


def _recycled(
    strategy: Strategy, members: Sequence[ObservedMember], restarted: set[str]
) -> set[str]:
    """Running members a strategy restarts along with ``restarted`` ones."""
    if not restarted or strategy is Strategy.ONE_FOR_ONE:
        return set()

    alive = [m for m in members if m.alive and m.id not in restarted]
    if strategy is Strategy.ONE_FOR_ALL:
        return {m.id for m in alive}

    first = min(m.number for m in members if m.id in restarted)

    return {m.id for m in alive if m.number > first}


class _Planner:
    """Accumulates the steps of one pass; short-lived, one per call."""

    def __init__(
        self,
        spec: ServiceSpec,
        members: list[ObservedMember],
        next_number: int,
        *,
        promote: bool,
        passed_over: Collection[str] = (),
    ) -> None:
        self.spec = spec
        ordered = sorted(members, key=lambda m: m.number)
        self.members = [m for m in ordered if m.extra is None]
        self.extras = [m for m in ordered if m.extra is not None]
        self.next_number = next_number
        self.promote = promote
        self.passed_over = passed_over
        self.steps: list[Step] = []
        # The newest writer decision: members holding a writer role under
        # an older epoch were superseded by it.
        self.top_epoch = max((m.epoch for m in self.members if m.is_writer), default=0)

    # -- topologies ---------------------------------------------------------

    def plan_standalone(self) -> None:
        writer = self._take_writer()
        if writer is None:
            return

        self._role(writer, Role.STANDALONE)
        for member in self.members:
            if member.id != writer:
                self._drop(member, writer)

        self._plan_extras(writer)

    def plan_redundant(self) -> None:
        writer = self._take_writer()
        if writer is None:
            return

        self._role(writer, Role.PRIMARY)
        # Replicas that follow already come first; a superseded writer
        # takes a place left over (its data may have to be rewound).
        # Known gap: a superseded writer whose `role replica` keeps failing
        # is retried with the pass backoff, never swapped for a fresh
        # member, because the image owns the choice between a rewind and a
        # fresh copy (PostgreSQL falls back to a copy by itself).
        others = sorted(
            (m for m in self.members if m.id != writer),
            key=lambda m: (m.is_writer, self._elsewhere(m), m.number),
        )
        followers = 0
        for member in others:
            if followers >= self.spec.replicas:
                self._drop(member, writer)
                continue

            followers += 1
            if not self._revive(member):
                continue  # down, and its restart kind keeps it down

            if _needs_role(member, Role.REPLICA, writer) or self._link_lost(member):
                self.steps.append(ApplyRole(member.id, Role.REPLICA, writer))

        for _ in range(self.spec.replicas - followers):
            created = self._create()
            self.steps.append(ApplyRole(created, Role.REPLICA, writer))

        self._plan_extras(writer)

    def _plan_extras(self, writer: str) -> None:
        """Extra members follow the writer in their own role."""
        for member in self.extras:
            if member.extra not in self.spec.extras:
                self.steps.append(RemoveMember(member.id))

        for role, wanted in sorted(self.spec.extras.items()):
            mine = sorted(
                (m for m in self.extras if m.extra is role),
                key=lambda m: (self._elsewhere(m), m.number),
            )
            for member in mine[wanted:]:
                self.steps.append(RemoveMember(member.id))

            for member in mine[:wanted]:
                if self._revive(member) and _needs_role(member, role, writer):
                    self.steps.append(ApplyRole(member.id, role, writer))

            for _ in range(wanted - len(mine)):
                created = self._create(extra=role)
                self.steps.append(ApplyRole(created, role, writer))

    # -- the writer ---------------------------------------------------------

    def _take_writer(self) -> str | None:
        """Return the member that will take writes, planning what it needs.

        ``None`` means no member takes writes in this pass (failover is
        paused, or the lost writer may not be restarted): the pass plans
        nothing else.
        """
        writers = [m for m in self.members if m.is_writer and not self._superseded(m)]
        alive_writers = [m for m in writers if m.alive]
        if alive_writers:
            writer = max(alive_writers, key=_writer_rank)
            self._revive(writer)
            return writer.id

        lost = writers
        if lost and not self.promote:
            self._fence(lost)
            return None

        successor = choose_primary(self.members, passed_over=self.passed_over)
        if successor is not None:
            self._fence(lost)
            return successor.id

        if lost:
            # No replica holds the data: the lost writer's volume is the only
            # copy, so bring that container back rather than start empty.
            writer = max(lost, key=_writer_rank)
            return writer.id if self._revive(writer) else None

        # A member that never got a role (it may have died while being
        # prepared) is restarted rather than replaced, so a container that
        # dies in its start hook counts against the restart limits.
        fresh = [
            m
            for m in self.members
            if m.role is None and (m.alive or self._may_restart(m))
        ]
        if fresh:
            self._revive(fresh[0])
            return fresh[0].id

        return self._create()

    # -- helpers ------------------------------------------------------------

    def _elsewhere(self, member: ObservedMember) -> bool:
        """Whether ``member`` runs on another engine than the spec's."""
        return member.engine != self.spec.engine

    def _superseded(self, member: ObservedMember) -> bool:
        """A writer whose writer role a newer epoch handed to another."""
        return member.is_writer and member.epoch < self.top_epoch

    def _drop(self, member: ObservedMember, writer: str) -> None:
        """Remove a member the topology has no place for.

        A superseded writer is kept until the new writer confirmed its
        role: its volume may hold writes no replica received.
        """
        if member.is_writer and not self._confirmed(writer):
            return

        self.steps.append(RemoveMember(member.id))

    def _confirmed(self, writer: str) -> bool:
        current = next(m for m in self.members if m.id == writer)
        planned = any(
            isinstance(step, ApplyRole | RestartMember) and step.member == writer
            for step in self.steps
        )
        return current.confirmed and not planned

    def _link_lost(self, member: ObservedMember) -> bool:
        """A replica whose link stayed down too long is told its role again."""
        limit = self.spec.supervision.unresponsive_after
        return member.alive and member.ready and member.link_down_for >= limit

    def _fence(self, lost: list[ObservedMember]) -> None:
        for member in lost:
            if not member.fenced:
                self.steps.append(FenceMember(member.id))

    def _revive(self, member: ObservedMember) -> bool:
        """Plan what brings ``member`` back to running and prepared.

        Returns:
            Whether it will run: ``False`` for a member that is down and
            whose restart kind keeps it down.
        """
        if member.recycle:
            self.steps.append(RestartMember(member.id))
        elif not member.alive:
            if not self._may_restart(member):
                return False

            self.steps.append(RestartMember(member.id))
        elif not member.ready:
            self.steps.append(PrepareMember(member.id))

        return True

    def _may_restart(self, member: ObservedMember) -> bool:
        kind = self.spec.supervision.restart
        if kind is RestartKind.TEMPORARY:
            return False

        return kind is RestartKind.PERMANENT or not member.clean_exit

    def _role(self, member_id: str, role: Role) -> None:
        current = next((m for m in self.members if m.id == member_id), None)
        if current is None or _needs_role(current, role, None):
            self.steps.append(ApplyRole(member_id, role))

    def _create(self, *, extra: Role | None = None) -> str:
        member = f"{self.spec.name}-{self.next_number}"
        self.next_number += 1
        self.steps.append(CreateMember(member, extra, self.spec.engine))

        return member


def _needs_role(member: ObservedMember, role: Role, primary: str | None) -> bool:
    """Whether a role must be (re-)applied: a revived member needs it again."""
    if not (member.alive and member.ready) or member.recycle:
        return True

    return member.role is not role or member.primary != primary


def _writer_rank(member: ObservedMember) -> tuple[int, bool, int, int]:
    """Order writers: the newest decision, a primary over a standalone,
    then data, then age."""
    return (member.epoch, member.role is Role.PRIMARY, member.offset, -member.number)
