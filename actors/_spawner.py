"""`ActorSpawner` and `open_spawner`: where actors run and how they end together.

A spawner starts actors in one task group and keeps one task of its own
there, which fails asks past their timeout and, when the group is
cancelled, ends every actor it spawned, idle ones included.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import AsyncIterator, Callable, Coroutine, Hashable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import anyio
from anyio.abc import TaskGroup
from attrs import define, field

from ._actor import Actor, ActorState, ChildCrashed, _Ask, _timed_out
from ._actor_ref import ActorRef
from ._backend import LoopOps, bind_loop_ops
from ._mailbox import DEFAULT_CAPACITY, Mailbox, OverflowPolicy

__all__ = ["ActorSpawner", "open_spawner"]

M = TypeVar("M")


def _envelope_key(actor: Actor[Any]) -> Callable[[object], Hashable | None]:
    key_of = actor.coalesce_key

    def key(item: object) -> Hashable | None:
        if type(item) is _Ask:
            return key_of(item.message)

        return key_of(item)

    return key


_Deadline = tuple[float, int, _Ask, str, float]

_MIN_COMPACT = 256


@define(eq=False)
class ActorSpawner:
    """Runs actors in a task group and ends them together.

    Use `open_spawner`, or make one over a task group of your own and call
    `aclose` (or cancel the group) before that group's block ends: from its
    first spawn the spawner keeps one task there, which times out asks and,
    on cancellation, ends every actor, idle ones included.

    Args:
        task_group: Where the actors' tasks run.
    """

    _task_group: TaskGroup
    # Actors spawned here that have not ended; each leaves as it ends.
    _live: set[ActorRef[Any]] = field(factory=set, init=False)
    # True once closing began; nothing is spawned after that.
    _closed: bool = field(default=False, init=False)
    # Scope of the watcher task; None until the first spawn starts it.
    _watcher: anyio.CancelScope | None = field(default=None, init=False)
    # Heap of timed asks by deadline; holds some already answered ones.
    _deadlines: list[_Deadline] = field(factory=list, init=False)
    # Heap length at which answered asks are swept out of it.
    _sweep_at: int = field(default=_MIN_COMPACT, init=False)
    # The deadline the watcher sleeps until; inf when there is none.
    _next: float = field(default=math.inf, init=False)
    # Set to make the watcher look at the heap again; None before it runs.
    _wake: anyio.Event | None = field(default=None, init=False)
    # The event loop's hot-path operations; bound by the first spawn.
    _ops: LoopOps | None = field(default=None, init=False)

    async def spawn(
        self,
        actor: Actor[M],
        *,
        name: str,
        capacity: int = DEFAULT_CAPACITY,
        overflow: OverflowPolicy | str = OverflowPolicy.BLOCK,
        parent: ActorRef[ChildCrashed] | None = None,
    ) -> ActorRef[M]:
        """Start ``actor`` and return its reference once it runs.

        An overridden ``on_start`` runs in the actor's own task, and this
        waits for it; otherwise this returns without yielding.

        Args:
            actor: A new, never spawned actor.
            name: Its name, for errors, logs and statistics.
            capacity: Messages its mailbox holds at most.
            overflow: What a send to a full mailbox does.
            parent: Where a `ChildCrashed` notice goes if it crashes.

        Returns:
            The new actor's reference.

        Raises:
            RuntimeError: The spawner is closed, or ``actor`` was spawned
                before.
            ValueError: ``capacity`` or ``overflow`` is not valid.
            Exception: Whatever ``on_start`` raised; the actor has then
                crashed, and no `ChildCrashed` notice is sent.
        """
        if self._closed:
            raise RuntimeError(f"spawner is closed; cannot spawn actor {name!r}")

        if hasattr(actor, "_ref"):
            raise RuntimeError(
                f"actor {actor.name!r} was spawned before; spawn a new"
                f" instance as {name!r}"
            )

        kind = type(actor)
        key_of = None
        if kind.coalesce_key is not Actor.coalesce_key:
            key_of = _envelope_key(actor)

        mailbox: Mailbox[Any] = Mailbox(
            name, capacity=capacity, overflow=overflow, coalesce_key=key_of
        )
        ops = self._ops
        if ops is None:
            ops = self._ops = bind_loop_ops()

        if self._watcher is None:
            self._watcher = anyio.CancelScope()
            self._task_group.start_soon(self._watch, self._watcher)

        startup = None
        if kind.on_start is not Actor.on_start:
            startup = _Ask(None, ops.reply_slot())

        state = ActorState.RUNNING if startup is None else ActorState.STARTING
        ref: ActorRef[M] = ActorRef(
            actor, name, mailbox, self, ops, parent, state, startup
        )
        actor._ref = ref
        self._live.add(ref)
        if startup is None:
            return ref

        ref._launch()
        try:
            await startup.done.wait()
        finally:
            startup.abandoned = True

        if startup.error is not None:
            raise startup.error

        return ref

    async def aclose(self) -> None:
        """Stop every actor spawned here, draining them, and wait for all.

        Raises:
            RuntimeError: Called from the handler of an actor spawned here.
        """
        self._closed = True
        live = list(self._live)
        for ref in live:
            ref.stop_nowait()

        for ref in live:
            await ref.wait_stopped()

        self._abort()

    def _expire_at(
        self, deadline: float, envelope: _Ask, name: str, timeout: float
    ) -> None:
        deadlines = self._deadlines
        # Answered asks leave from the top as they come to it: asks with
        # one timeout are in deadline order as they were asked, so most
        # leave here soon after their answer, instead of staying (with
        # their messages and replies) until a sweep, long enough to be
        # promoted to the oldest generation of the garbage collector.
        while deadlines and deadlines[0][2].abandoned:
            heapq.heappop(deadlines)

        if len(deadlines) >= self._sweep_at:
            deadlines = self._deadlines = [
                entry for entry in deadlines if not entry[2].abandoned
            ]
            heapq.heapify(deadlines)
            self._sweep_at = max(_MIN_COMPACT, 2 * len(deadlines))

        heapq.heappush(deadlines, (deadline, id(envelope), envelope, name, timeout))
        if deadline < self._next and self._wake is not None:
            self._wake.set()

    async def _watch(self, scope: anyio.CancelScope) -> None:
        # Idle actors own no task, so nothing of theirs notices when the
        # task group is cancelled: this task does, and ends them all.
        with scope:
            try:
                while True:
                    self._expire_due()
                    self._wake = anyio.Event()
                    with anyio.CancelScope(deadline=self._next):
                        await self._wake.wait()
            finally:
                self._abort()

    def _expire_due(self) -> None:
        deadlines = self._deadlines
        now = anyio.current_time()
        while deadlines and deadlines[0][0] <= now:
            _, _, envelope, name, timeout = heapq.heappop(deadlines)
            if not envelope.abandoned:
                envelope.fail(_timed_out(name, timeout))

        self._next = deadlines[0][0] if deadlines else math.inf

    def _abort(self) -> None:
        # Synchronous, so that it runs even in a cancelled scope.
        self._closed = True
        for ref in list(self._live):
            ref._halt(ActorState.STOPPED)

        if self._watcher is not None:
            self._watcher.cancel()

    def _forget(self, ref: ActorRef[Any]) -> None:
        self._live.discard(ref)

    def _start_soon(
        self, function: Callable[[], Coroutine[Any, Any, None]], name: str
    ) -> None:
        self._task_group.start_soon(function, name=name)


@asynccontextmanager
async def open_spawner() -> AsyncIterator[ActorSpawner]:
    """Open a task group for actors; leaving the block ends them all.

    A normal exit stops every actor gracefully (each drains its mailbox and
    runs ``on_stop``) and waits for them. An error or a cancellation in the
    block ends every actor at once: queued asks fail with
    `ActorStoppedError` and running handlers are cancelled.

    Yields:
        The spawner.
    """
    async with anyio.create_task_group() as task_group:
        spawner = ActorSpawner(task_group)
        try:
            yield spawner
            await spawner.aclose()
        finally:
            spawner._abort()
