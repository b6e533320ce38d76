"""Actors: private state behind a mailbox, changed one message at a time.

An `Actor` subclass says what to do with a message (`Actor.handle`) and,
if it needs to, what to do on start and on stop. An `ActorSpawner`, opened with
`open_spawner`, runs actors in its task group and hands back an `ActorRef`,
the handle everyone else uses: `ActorRef.tell` sends without a reply,
`ActorRef.ask` waits for one.

An idle actor owns no task. The first message to reach its empty mailbox
starts a task that serves messages until the mailbox stays empty for one
scheduling round; so ten thousand idle actors cost memory, not tasks.

How failures travel:

- a handler that raises for an ``ask`` hands the error to the asker, and the
  actor goes on;
- a handler that raises for a ``tell`` (nobody waits for that error), and an
  ``on_start`` or ``on_stop`` that raises, crash the actor: it takes no more
  messages, every queued ``ask`` fails with `ActorStoppedError`, and its
  parent gets a `ChildCrashed` notice in its mailbox (without a parent, the
  crash is logged); sibling actors and the task group carry on;
- cancellation stops the actor, fails its queued asks, and propagates.
"""

from __future__ import annotations

import enum
import heapq
import math
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Coroutine, Hashable
from contextlib import asynccontextmanager
from typing import Any, Generic, Literal, TypeVar

import anyio
import structlog
from anyio.abc import TaskGroup
from anyio.lowlevel import checkpoint
from attrs import define, field, frozen

from rolecall.hooks_protocol import ActorStoppedError, AskTimeoutError

from ._mailbox import DEFAULT_CAPACITY, Mailbox, MailboxStatistics, OverflowPolicy

__all__ = [
    "Actor",
    "ActorRef",
    "ActorSpawner",
    "ActorState",
    "ActorStatistics",
    "ChildCrashed",
    "open_spawner",
]

M = TypeVar("M")
M_contra = TypeVar("M_contra", contravariant=True)

_log = structlog.get_logger()

_Phase = Literal["on_start", "handle", "on_stop"]


class ActorState(enum.StrEnum):
    """Where an actor is in its life."""

    STARTING = "starting"
    """Spawned; ``on_start`` has not finished. Messages queue meanwhile."""

    RUNNING = "running"
    """Taking messages."""

    STOPPING = "stopping"
    """Asked to stop: refuses new messages, finishes the queued ones."""

    STOPPED = "stopped"
    """Ended by a stop request or by cancellation."""

    CRASHED = "crashed"
    """Ended by an error that nobody was waiting to receive."""


_ENDED = (ActorState.STOPPED, ActorState.CRASHED)


@frozen
class ActorStatistics:
    """A snapshot of one actor.

    Attributes:
        name: The actor's name.
        state: Where it is in its life.
        mailbox: Its mailbox's counters.
        handled_total: Messages whose handler returned.
        failed_total: Handler, ``on_start`` and ``on_stop`` runs that raised.
    """

    name: str
    state: ActorState
    mailbox: MailboxStatistics
    handled_total: int
    failed_total: int


@frozen
class ChildCrashed:
    """Notice to a parent, in its mailbox: a child actor crashed and ended.

    Sent when the child's handler raised for a ``tell``, or its
    ``on_start`` or ``on_stop`` raised. The child is gone for good; a
    supervisor restarts it by spawning a new actor.

    Attributes:
        ref: The child that crashed.
        error: What its code raised.
        message: The message it was handling; ``None`` for a crash in
            ``on_start`` or ``on_stop``.
        phase: ``"on_start"``, ``"handle"`` or ``"on_stop"``.
    """

    ref: ActorRef[Any]
    error: Exception
    message: object
    phase: _Phase

    @property
    def name(self) -> str:
        """The crashed child's name."""
        return self.ref.name


class Actor(ABC, Generic[M_contra]):
    """Base class of actors taking messages of type ``M_contra``.

    Subclasses implement `handle`, and may override `on_start`, `on_stop`
    and `coalesce_key`. The runtime calls them from one task at a time, so
    an actor's own state needs no lock. Declare subclasses with attrs
    (slotted) to keep idle actors small. An instance is spawned once; to
    restart an actor, spawn a new instance.
    """

    __slots__ = ("_ref",)

    _ref: ActorRef[M_contra]

    @abstractmethod
    async def handle(self, message: M_contra) -> object:
        """Handle one message.

        Args:
            message: What was told or asked.

        Returns:
            The reply to an ``ask``; ignored for a ``tell``.

        Raises:
            Exception: Anything; it goes to the asker of an ``ask`` and
                crashes the actor for a ``tell``.
        """

    async def on_start(self) -> None:
        """Run once before the first message; raising crashes the actor."""

    async def on_stop(self) -> None:
        """Run once after the last message of a requested stop.

        Not run after a crash or a cancellation: the actor's state is not
        to be trusted then, and a cancelled task cannot wait for cleanup.
        """

    def coalesce_key(self, message: M_contra) -> Hashable | None:
        """Return the key under which newer messages supersede this one.

        The runtime counts queued messages by key only for actors that
        override this; `is_superseded` reads the count.

        Args:
            message: A message about to be queued or just taken.

        Returns:
            The key, or ``None`` for a message that never coalesces.
        """
        return None

    @property
    def ref(self) -> ActorRef[M_contra]:
        """This actor's own reference.

        Raises:
            RuntimeError: The actor has not been spawned.
        """
        try:
            return self._ref
        except AttributeError:
            raise RuntimeError(
                "actor is not spawned yet; spawn it with ActorSpawner.spawn()"
            ) from None

    @property
    def name(self) -> str:
        """The name the actor was spawned with."""
        return self.ref.name

    def is_superseded(self, message: M_contra) -> bool:
        """Tell whether a newer message with the same key is still queued.

        Meant for the message being handled: the handler may answer it as
        superseded instead of acting on it.

        Args:
            message: The message being handled.

        Returns:
            Whether a newer message with its `coalesce_key` is queued.
        """
        key = self.coalesce_key(message)
        return key is not None and self.ref._mailbox.has_queued(key)


@define(eq=False)
class _Ask:
    """An asked message with the slot its reply goes to."""

    message: object
    # Set once, when the outcome or the error is in place.
    done: anyio.Event = field(factory=anyio.Event)
    # The handler's return value, once done without error.
    outcome: object = None
    # The error to raise in the asker, once done with one.
    error: BaseException | None = None
    # True once the asker stopped waiting, answered or not.
    abandoned: bool = False

    def succeed(self, outcome: object) -> None:
        if self.done.is_set():
            return

        self.outcome = outcome
        self.done.set()

    def fail(self, error: BaseException) -> bool:
        if self.abandoned or self.done.is_set():
            return False

        self.error = error
        self.done.set()
        return True


def _timed_out(name: str, timeout: float) -> AskTimeoutError:
    return AskTimeoutError(
        f"actor {name!r} did not answer within {timeout!r} seconds; raise"
        " the timeout or look at what the actor is busy with",
        actor=name,
        timeout=timeout,
    )


@define(eq=False, repr=False)
class ActorRef(Generic[M_contra]):
    """The handle to a spawned actor; get one from `ActorSpawner.spawn`.

    Refs compare by identity. A ref names one incarnation: a restarted
    actor is a new actor with a new ref.
    """

    _actor: Actor[Any]
    _name: str
    _mailbox: Mailbox[Any]
    _spawner: ActorSpawner
    _parent: ActorRef[ChildCrashed] | None
    # Where the actor is in its life; never changes again once ended.
    _state: ActorState
    # The spawner's wait for on_start; None once it ran, or if not overridden.
    _startup: _Ask | None = None
    # True while a task is scheduled or running to serve the mailbox. At
    # most one such task exists; an open mailbox holding messages has one.
    _busy: bool = field(default=False, init=False)
    # Handler runs that returned.
    _handled: int = field(default=0, init=False)
    # Handler, on_start and on_stop runs that raised.
    _failed: int = field(default=0, init=False)
    # Set when the actor ends; made by the first waiter, None until then.
    _ended: anyio.Event | None = field(default=None, init=False)
    # Id of the task serving the mailbox while one runs; None otherwise.
    _server: int | None = field(default=None, init=False)

    def __repr__(self) -> str:
        return f"<ActorRef {self._name!r} {self._state}>"

    @property
    def name(self) -> str:
        """The name the actor was spawned with."""
        return self._name

    @property
    def state(self) -> ActorState:
        """Where the actor is in its life."""
        return self._state

    async def tell(self, message: M_contra) -> None:
        """Send ``message`` without waiting for it to be handled.

        Returns at once, without yielding, while the mailbox has room; a
        full mailbox makes it wait or fail as its overflow policy says.

        Args:
            message: The message.

        Raises:
            MailboxFullError: The mailbox is full and rejects.
            ActorStoppedError: The actor is stopping or has ended.
        """
        mailbox = self._mailbox
        if not mailbox.offer(message):
            await mailbox.send(message)

        if not self._busy:
            self._launch()

    def tell_nowait(self, message: M_contra) -> None:
        """Send ``message`` if the mailbox has room now, whatever its policy.

        Args:
            message: The message.

        Raises:
            MailboxFullError: The mailbox is full.
            ActorStoppedError: The actor is stopping or has ended.
        """
        self._mailbox.send_nowait(message)
        if not self._busy:
            self._launch()

    async def ask(self, message: M_contra, *, timeout: float | None) -> object:
        """Send ``message`` and wait for the handler's reply.

        Args:
            message: The message.
            timeout: Seconds to wait, counting any wait for mailbox room;
                ``None`` waits as long as it takes.

        Returns:
            What the handler returned.

        Raises:
            AskTimeoutError: No reply came within ``timeout``. The message
                is dropped if still queued; if it is being handled, that runs
                to its end and the reply is dropped.
            MailboxFullError: The mailbox is full and rejects.
            ActorStoppedError: The actor stopped before it answered.
            Exception: Whatever the handler raised, as raised.
        """
        envelope = _Ask(message)
        mailbox = self._mailbox
        if timeout is None:
            if not mailbox.offer(envelope):
                await mailbox.send(envelope)
        else:
            # One timer task per spawner watches deadlines: a cancel scope
            # per ask would cost about as much as the whole round trip.
            deadline = anyio.current_time() + timeout
            if not mailbox.offer(envelope):
                await self._send_before(envelope, deadline, timeout)

            self._spawner._expire_at(deadline, envelope, self._name, timeout)

        if not self._busy:
            self._launch()

        try:
            await envelope.done.wait()
        finally:
            envelope.abandoned = True

        if envelope.error is not None:
            raise envelope.error

        return envelope.outcome

    def stop_nowait(self, *, drain: bool = True) -> None:
        """Ask the actor to stop; do not wait for it to end.

        The actor refuses new messages at once. The message being handled
        runs to its end, then ``on_stop`` runs after the last one. Stopping
        an actor that has ended does nothing.

        Args:
            drain: Handle the queued messages first; with ``False`` they
                are dropped and their asks fail with `ActorStoppedError`.
        """
        if self._state in _ENDED:
            return

        if self._state is not ActorState.STOPPING:
            self._state = ActorState.STOPPING
            self._mailbox.close()

        if not drain:
            self._fail_queued()

        if self._busy:
            return

        if type(self._actor).on_stop is Actor.on_stop:
            self._halt(ActorState.STOPPED)
        else:
            self._launch()

    async def stop(self, *, drain: bool = True) -> None:
        """Ask the actor to stop and wait until it has ended.

        Args:
            drain: As for `stop_nowait`.

        Raises:
            RuntimeError: Called from the actor's own handler, which would
                wait for itself; use `stop_nowait` there.
        """
        self.stop_nowait(drain=drain)
        await self.wait_stopped()

    async def wait_stopped(self) -> None:
        """Wait until the actor has stopped or crashed.

        Raises:
            RuntimeError: Called from the actor's own handler.
        """
        if self._state in _ENDED:
            return

        if self._server is not None and self._server == anyio.get_current_task().id:
            raise RuntimeError(
                f"actor {self._name!r} cannot wait for its own end from its"
                " own handler; call stop_nowait() there instead"
            )

        if self._ended is None:
            self._ended = anyio.Event()

        await self._ended.wait()

    def statistics(self) -> ActorStatistics:
        """Return a snapshot of the actor's counters and state.

        Returns:
            The snapshot.
        """
        return ActorStatistics(
            name=self._name,
            state=self._state,
            mailbox=self._mailbox.statistics(),
            handled_total=self._handled,
            failed_total=self._failed,
        )

    async def _send_before(
        self, envelope: _Ask, deadline: float, timeout: float
    ) -> None:
        with anyio.move_on_after(deadline - anyio.current_time()) as scope:
            await self._mailbox.send(envelope)

        if scope.cancelled_caught:
            envelope.abandoned = True
            raise _timed_out(self._name, timeout)

    async def _notify(self, notice: ChildCrashed) -> None:
        # A crash notice waits for room even in a mailbox that rejects.
        await self._mailbox.send(notice, overflow=OverflowPolicy.BLOCK)
        if not self._busy:
            self._launch()

    def _launch(self) -> None:
        self._busy = True
        self._spawner._start_soon(self._run, self._name)

    async def _run(self) -> None:
        self._server = anyio.get_current_task().id
        try:
            startup = self._startup
            if startup is None or await self._start(startup):
                await self._serve()
        except BaseException:
            # Handler errors are caught below: this is cancellation.
            self._halt(ActorState.STOPPED)
            raise
        finally:
            self._server = None

    async def _start(self, startup: _Ask) -> bool:
        try:
            await self._actor.on_start()
        except Exception as exc:  # noqa: BLE001  (spawn() or a notice has it)
            self._startup = None
            self._failed += 1
            if startup.fail(exc):
                self._halt(ActorState.CRASHED)
            else:
                await self._crash(exc, None, "on_start")

            return False

        self._startup = None
        if self._state is ActorState.STARTING:
            self._state = ActorState.RUNNING

        startup.succeed(None)
        return True

    async def _serve(self) -> None:
        # The hot loop: locals spare attribute look-ups on every message.
        take = self._mailbox.receive_nowait
        handle = self._actor.handle
        lingered = False
        while True:
            try:
                item = take()
            except anyio.WouldBlock:
                if lingered:
                    self._busy = False
                    return

                # One scheduling round lets a quick sender refill the
                # mailbox without paying for a new task.
                lingered = True
                await checkpoint()
                continue
            except anyio.EndOfStream:
                await self._finish()
                return

            lingered = False
            if type(item) is not _Ask:
                try:
                    await handle(item)
                except Exception as exc:  # noqa: BLE001  (the notice has it)
                    self._failed += 1
                    await self._crash(exc, item, "handle")
                    return

                self._handled += 1
                continue

            if item.abandoned:
                continue

            try:
                outcome = await handle(item.message)
            except Exception as exc:  # noqa: BLE001  (the asker owns it)
                self._failed += 1
                self._answer_failed(item, exc)
                continue
            except BaseException:
                item.fail(self._stopped_error())
                raise

            self._handled += 1
            item.succeed(outcome)

    def _answer_failed(self, envelope: _Ask, error: Exception) -> None:
        if not envelope.fail(error):
            _log.warning("abandoned_ask_failed", actor=self._name, exc_info=error)

    async def _finish(self) -> None:
        if self._state is not ActorState.STOPPING:
            return

        try:
            await self._actor.on_stop()
        except Exception as exc:  # noqa: BLE001  (the notice has it)
            self._failed += 1
            await self._crash(exc, None, "on_stop")
            return

        self._halt(ActorState.STOPPED)

    async def _crash(self, error: Exception, message: object, phase: _Phase) -> None:
        if not self._halt(ActorState.CRASHED):
            return

        parent = self._parent
        if parent is None:
            _log.error("actor_crashed", actor=self._name, phase=phase, exc_info=error)
            return

        notice = ChildCrashed(ref=self, error=error, message=message, phase=phase)
        try:
            await parent._notify(notice)
        except ActorStoppedError:
            _log.error(
                "actor_crash_unreported",
                actor=self._name,
                parent=parent.name,
                phase=phase,
                exc_info=error,
            )

    def _halt(self, state: ActorState) -> bool:
        if self._state in _ENDED:
            return False

        self._state = state
        if self._startup is not None:
            self._startup.fail(self._stopped_error())

        self._fail_queued()
        self._spawner._forget(self)
        if self._ended is not None:
            self._ended.set()

        return True

    def _fail_queued(self) -> None:
        for item in self._mailbox.drain_nowait():
            if type(item) is _Ask:
                item.fail(self._stopped_error())

    def _stopped_error(self) -> ActorStoppedError:
        return ActorStoppedError(
            f"actor {self._name!r} stopped before it answered",
            actor=self._name,
        )


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
        if self._watcher is None:
            self._watcher = anyio.CancelScope()
            self._task_group.start_soon(self._watch, self._watcher)

        startup = None if kind.on_start is Actor.on_start else _Ask(None)
        state = ActorState.RUNNING if startup is None else ActorState.STARTING
        ref: ActorRef[M] = ActorRef(actor, name, mailbox, self, parent, state, startup)
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
