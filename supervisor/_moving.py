"""Moving a running service to another engine, by replication.

A move runs in three phases, each written to the journal (`MoveRecord`)
before it starts, so a control plane killed at any point resumes it:

1. ``grow``: passes plan for a wider shape (`planning_spec`): the members
   the service has, plus as many again on the target engine, all
   following the writer (a standalone writer takes the primary role for
   the while). The phase ends when a pass finds nothing to do and every
   member on the target is prepared, healthy and synced.
2. ``switch``: writes are handed to the oldest synced replica on the target
   with a switchover's two role commands (the old writer stops taking
   writes, waits until the target has everything it acknowledged, then
   follows it; the target takes writes). From then on the spec names the
   target engine, and the other members follow the new writer at the
   next pass.
3. ``retire``: passes plan for the spec's own shape on the target; the
   reconciler keeps members on the spec's engine first, so the old
   members are the surplus it stops and removes with their volumes. The
   move ends when no member is left elsewhere.

Undoing a move before its switch is dropping the wider shape: the spec
still names the old engine, so the members on the target are the surplus
the next passes remove. A move is undone when it does not finish in the
caller's time while it grows, or when the hand-over is refused and the old
writer still takes writes. After the switch a move is only ever finished.

Members are reached across engines at their engine's peer address (see
`ControllerState.address`), which both engines must have.
"""

from __future__ import annotations

import time

import anyio
from attrs import define, evolve, field

from rolecall.hooks_protocol import (
    ConvergenceTimeoutError,
    Role,
    RolecallError,
    SpecError,
    Topology,
)

from ._members import Member
from ._records import ServiceStatus
from ._service_record import MoveRecord
from ._spec import ServiceSpec
from ._switchover import Switching

__all__ = [
    "GROW",
    "RETIRE",
    "SWITCH",
    "MoveWaiter",
    "Moving",
]

GROW, SWITCH, RETIRE = "grow", "switch", "retire"


@define(eq=False)
class MoveWaiter:
    """One caller waiting for the move under way to end."""

    # Set when the move finished or was undone.
    done: anyio.Event = field(factory=anyio.Event)
    # Why it did not finish; None after a finished move.
    error: RolecallError | None = None


class Moving(Switching):
    """The moving part of a `ServiceController`; see the module docs."""

    __slots__ = ()

    # -- asked by the supervisor -------------------------------------------

    async def move(self, target: str, way: str, *, timeout: float) -> ServiceStatus:
        """Move the service to engine ``target`` and wait until it is there.

        The caller has checked that the target answers, has the image and
        a peer address, and that the plan offers ``way``.

        Raises:
            SpecError: Another move, to another engine, is under way.
            ConvergenceTimeoutError: It did not finish in ``timeout`` s (a
                move still growing is undone; one past its switch goes on).
            RolecallError: The move was undone; the error says why.
        """
        move = self.moving
        if move is None:
            if target == self.spec.engine:
                return self.status()

            self._begin_move(MoveRecord(target, self.spec.engine, way, GROW))
        elif move.target != target:
            raise SpecError(
                f"service {self.spec.name!r} is moving to engine"
                f" {move.target!r} already: wait for that move to end",
                service=self.spec.name,
            )

        waiter = MoveWaiter()
        self.move_waiters.append(waiter)
        with anyio.move_on_after(timeout):
            await waiter.done.wait()

        if not waiter.done.is_set():
            self.move_waiters.remove(waiter)
            raise self._move_timed_out(target, timeout)

        if waiter.error is not None:
            raise waiter.error

        return self.status()

    def _begin_move(self, move: MoveRecord) -> None:
        self.moving = move
        try:
            self.persist()
        except RolecallError:
            self.moving = None
            raise

        self.generation += 1
        self.converged_generation = -1
        self.event(
            "move_started",
            None,
            f"moving from engine {move.source} to {move.target} by {move.way}",
            source=move.source,
            target=move.target,
            way=move.way,
        )
        self.wake(urgent=True)

    def _move_timed_out(self, target: str, timeout: float) -> RolecallError:
        move = self.moving
        name = self.spec.name
        if move is not None and move.phase == GROW:
            self.undo_move(f"it did not finish within {timeout:g}s")
            going = "it was undone: the members made there are removed"
        else:
            going = "it is past its switch and goes on"

        return ConvergenceTimeoutError(
            f"the move of service {name!r} to engine {target!r} did not"
            f" finish within {timeout:g}s; {going} (see `rolecall status"
            f" {name}` and the log)",
            service=name,
            timeout=timeout,
            last_error=self.last_error,
        )

    # -- the shape passes plan for -----------------------------------------

    def planning_spec(self) -> ServiceSpec:
        """The shape a pass plans for: the spec's, widened while a move
        grows or switches (see the module docs)."""
        move = self.moving
        if move is None or move.phase == RETIRE:
            return self.spec

        spec = self.spec
        replicas = spec.replicas if spec.topology is Topology.REDUNDANT else 0
        return evolve(
            spec,
            engine=move.target,
            topology=Topology.REDUNDANT,
            replicas=2 * replicas + 1,
            extras={role: 2 * count for role, count in spec.extras.items()},
        )

    # -- phases --------------------------------------------------------------

    def advance_move(self) -> bool:
        """After a pass that found nothing to do: end the phase it waited on.

        Returns:
            Whether a move is still under way (the service has not
            converged while it is).
        """
        move = self.moving
        if move is None:
            return False

        if move.phase == GROW and self._grown(move.target):
            self._enter(SWITCH, "move_caught_up", "the members on the target caught up")
        elif move.phase == RETIRE and self._retired(move.target):
            self._finish_move()
            return False

        return True

    async def switch_move(self) -> bool:
        """Run the ``switch`` phase, if the move is in it.

        Returns:
            Whether the pass is spent: a hand-over ran or was tried. Without
            a writer there is nothing to hand over, and the pass plans as
            usual (a failover comes first).
        """
        move = self.moving
        if move is None or move.phase != SWITCH:
            return False

        writer = self.writer()
        if writer is None:
            return False

        if writer.engine == move.target:
            self._switched_to(writer, move, took=0.0)
            return True

        target = self._successor(move.target, writer)
        if target is None:
            self._enter(
                GROW, "move_regrowing", "no member on the target can take over yet"
            )
            return False

        started = time.monotonic()
        try:
            await self._hand(writer, Role.REPLICA, target.id, handover=True)
            await self._hand(target, Role.PRIMARY, None)
        except RolecallError as error:
            if self.writer() is writer and not self.superseded(writer):
                self.undo_move(f"the hand-over to {target.id} failed: {error}")
                return True

            raise  # half-way: the next pass finds the writer and goes on

        self._switched_to(target, move, took=time.monotonic() - started)

        return True

    def undo_move(self, reason: str) -> None:
        """Drop a move before its switch; its new members become surplus."""
        move = self.moving
        if move is None:
            return

        self.moving = None
        self.persist()
        self.generation += 1
        self.event(
            "move_undone",
            None,
            f"the move to engine {move.target} was undone: {reason}",
            target=move.target,
            phase=move.phase,
        )
        error = RolecallError(
            f"the move of service {self.spec.name!r} to engine {move.target!r}"
            f" was undone: {reason}; it stays on engine {move.source!r}"
        )
        self._answer_movers(error)
        self.wake(urgent=True)

    # -- helpers -------------------------------------------------------------

    def _grown(self, target: str) -> bool:
        writer = self.writer()
        if writer is None:
            return False

        spec = self.spec
        wanted = 1 + (spec.replicas if spec.topology is Topology.REDUNDANT else 0)
        there = [m for m in self.members.values() if m.engine == target]
        if sum(1 for m in there if m.extra is None) < wanted:
            return False

        # An extra member follows in a role of its own and reports no sync:
        # healthy is what it can say.
        return all(
            m.alive
            and m.ready
            and m.healthy
            and not m.unresponsive
            and (m.synced or m.extra is not None)
            for m in there
        )

    def _successor(self, target: str, writer: Member) -> Member | None:
        """The oldest member on ``target`` fit to take writes from ``writer``."""
        fit = [
            m
            for m in self.members.values()
            if m.engine == target
            and m.extra is None
            and m.actor.role is Role.REPLICA
            and m.actor.primary == writer.id
            and m.alive
            and m.ready
            and m.healthy
            and m.synced
            and not m.unresponsive
        ]

        return min(fit, key=lambda m: m.number, default=None)

    def _retired(self, target: str) -> bool:
        return all(m.engine == target for m in self.members.values())

    def _enter(self, phase: str, kind: str, why: str) -> None:
        move = self.moving
        assert move is not None  # noqa: S101  (callers hold a move)
        self.moving = evolve(move, phase=phase)
        self.persist()
        self.event(kind, None, why, target=move.target, phase=phase)
        self.wake(urgent=True)

    def _switched_to(self, writer: Member, move: MoveRecord, *, took: float) -> None:
        self.spec = evolve(self.spec, engine=move.target)
        self.source_engine = move.source
        self.generation += 1
        self.moving = evolve(move, phase=RETIRE)
        self.persist()
        self.event(
            "move_switched",
            writer.id,
            f"{writer.id} on engine {move.target} took over writes",
            duration=took,
            target=move.target,
        )
        self.wake(urgent=True)

    def _finish_move(self) -> None:
        move = self.moving
        assert move is not None  # noqa: S101  (callers hold a move)
        self.moving = None
        self.persist()
        self.event(
            "move_finished",
            None,
            f"moved from engine {move.source} to {move.target}: no member"
            f" is left on {move.source}",
            source=move.source,
            target=move.target,
        )
        self._answer_movers(None)

    def _answer_movers(self, error: RolecallError | None) -> None:
        waiters, self.move_waiters = self.move_waiters, []
        for waiter in waiters:
            waiter.error = error
            waiter.done.set()
