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

Three modules hold it: this one has `Actor` and the records (`ActorState`,
`ActorStatistics`, `ChildCrashed`, the envelope of an ``ask``),
``_actor_ref`` has `ActorRef` and the serving of a mailbox, and ``_spawner``
has `ActorSpawner`, `open_spawner` and the timer of asks.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from attrs import define, frozen

from rolecall.hooks_protocol import AskTimeoutError

from ._mailbox import MailboxStatistics

if TYPE_CHECKING:
    from ._actor_ref import ActorRef
    from ._backend import ReplySlot

__all__ = [
    "Actor",
    "ActorState",
    "ActorStatistics",
    "ChildCrashed",
]

M_contra = TypeVar("M_contra", contravariant=True)

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
    # Set once, when the outcome or the error is in place (or, on asyncio,
    # when the asker was cancelled while it waited).
    done: ReplySlot
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
