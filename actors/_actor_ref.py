"""`ActorRef`: the handle to one actor, and the task that serves its mailbox.

Sends (``tell``, ``ask``), stop requests and statistics go through the ref;
so does the life of the actor behind it: the task that starts when a message
reaches an idle actor, runs ``on_start``, serves the mailbox until it stays
empty, and ends the actor on a stop, a crash or a cancellation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic

import anyio
import structlog
from attrs import define, field

from rolecall.hooks_protocol import ActorStoppedError

from ._actor import (
    _ENDED,
    Actor,
    ActorState,
    ActorStatistics,
    ChildCrashed,
    M_contra,
    _Ask,
    _Phase,
    _timed_out,
)
from ._backend import LoopOps
from ._mailbox import Mailbox, OverflowPolicy

if TYPE_CHECKING:
    from ._spawner import ActorSpawner

__all__ = ["ActorRef"]

_log = structlog.get_logger()


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
    # The spawner's bound event-loop operations (reply slots, clock).
    _ops: LoopOps
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
        ops = self._ops
        envelope = _Ask(message, ops.reply_slot())
        mailbox = self._mailbox
        if timeout is None:
            if not mailbox.offer(envelope):
                await mailbox.send(envelope)
        else:
            # One timer task per spawner watches deadlines: a cancel scope
            # per ask would cost about as much as the whole round trip.
            deadline = ops.current_time() + timeout
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
        checkpoint = self._ops.checkpoint
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
