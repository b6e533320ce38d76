"""A bounded mailbox over an anyio memory object stream.

Sending never waits while there is room: the message goes in through the
stream's non-blocking path. Only a full mailbox makes a sender wait or fails
it, as the mailbox's `OverflowPolicy` says. Closing stops senders at once,
while the receiver still drains what was queued before.

A mailbox can count its queued messages by a coalescing key, so that the
receiver of a message can ask whether a newer one with the same key is still
queued (and treat the one it holds as superseded).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from attrs import define, field, frozen, setters

from rolecall.hooks_protocol import ActorStoppedError, MailboxFullError

__all__ = [
    "DEFAULT_CAPACITY",
    "Mailbox",
    "MailboxStatistics",
    "OverflowPolicy",
]

DEFAULT_CAPACITY = 128
"""Messages a mailbox holds unless told otherwise."""

T = TypeVar("T")


class OverflowPolicy(enum.StrEnum):
    """What a send does when the mailbox is full."""

    BLOCK = "block"
    """Wait until the receiver makes room."""

    REJECT = "reject"
    """Raise `MailboxFullError` at once."""


@frozen
class MailboxStatistics:
    """A snapshot of one mailbox.

    ``sent_total - received_total == queued + waiting_senders`` holds
    whenever no sender is being cancelled.

    Attributes:
        capacity: Messages the mailbox holds at most.
        queued: Messages waiting to be received now.
        waiting_senders: Senders waiting for room (policy ``block``).
        sent_total: Messages accepted so far, counting a waiting sender's
            message from the moment it starts to wait.
        received_total: Messages taken out so far.
        rejected_total: Sends refused because the mailbox was full.
        high_water: The most messages ever queued at once.
    """

    capacity: int
    queued: int
    waiting_senders: int
    sent_total: int
    received_total: int
    rejected_total: int
    high_water: int


def _to_policy(value: OverflowPolicy | str) -> OverflowPolicy:
    try:
        return OverflowPolicy(value)
    except ValueError:
        choices = ", ".join(repr(str(policy)) for policy in OverflowPolicy)
        raise ValueError(f"overflow must be one of {choices}, not {value!r}") from None


def _check_capacity(instance: object, attribute: object, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"capacity must be an int of at least 1, not {value!r}")


# No validation on assignment: counters change on every message, and the
# validated options are private and never reassigned.
@define(eq=False, on_setattr=setters.NO_OP)
class Mailbox(Generic[T]):
    """A bounded, closable first-in first-out queue of messages.

    One receiver takes messages out; any number of senders put them in.
    Close the mailbox (and drain it) when done with it: its streams warn
    when they are collected while still open.

    Args:
        owner: Name of the actor the mailbox belongs to, for errors.
        capacity: Messages it holds at most; at least 1.
        overflow: What a send does when the mailbox is full.
        coalesce_key: Maps a message to its coalescing key, or to ``None``
            for a message that never coalesces; ``None`` turns key counting
            off (and costs nothing).
    """

    owner: str
    _capacity: int = field(default=DEFAULT_CAPACITY, validator=_check_capacity)
    _overflow: OverflowPolicy = field(
        default=OverflowPolicy.BLOCK, converter=_to_policy
    )
    _coalesce_key: Callable[[T], Hashable | None] | None = None
    # The two ends of one stream; the send end closes first, on close().
    _send: MemoryObjectSendStream[T] = field(init=False)
    _receive: MemoryObjectReceiveStream[T] = field(init=False)
    # Counted before a blocking send waits, so it never trails _received.
    _sent: int = field(default=0, init=False)
    # Messages taken out by receive_nowait() or receive().
    _received: int = field(default=0, init=False)
    # Sends refused on a full mailbox.
    _rejected: int = field(default=0, init=False)
    # The largest queue length seen; never above capacity.
    _high_water: int = field(default=0, init=False)
    # Key -> messages queued with it (none stored at 0); None without keys.
    _keys: dict[Hashable, int] | None = field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        # Not subscripted: a generic alias call per mailbox costs time.
        send: MemoryObjectSendStream[T]
        receive: MemoryObjectReceiveStream[T]
        send, receive = anyio.create_memory_object_stream(self._capacity)
        self._send, self._receive = send, receive
        if self._coalesce_key is not None:
            self._keys = {}

    @property
    def capacity(self) -> int:
        """Messages the mailbox holds at most."""
        return self._capacity

    @property
    def overflow(self) -> OverflowPolicy:
        """What a send does when the mailbox is full."""
        return self._overflow

    def offer(self, item: T) -> bool:
        """Put ``item`` in if there is room now; never waits, never rejects.

        Args:
            item: The message.

        Returns:
            Whether the message went in; ``False`` means the mailbox is full.

        Raises:
            ActorStoppedError: The mailbox is closed.
        """
        try:
            self._send.send_nowait(item)
        except anyio.WouldBlock:
            return False
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            raise self._closed_error() from None

        self._sent += 1
        depth = self._sent - self._received
        if depth > self._high_water:  # noqa: PLR1730  (cheaper than max())
            self._high_water = depth

        if self._keys is not None:
            self._count_key(item, 1)

        return True

    def send_nowait(self, item: T) -> None:
        """Put ``item`` in without waiting, whatever the overflow policy.

        Args:
            item: The message.

        Raises:
            MailboxFullError: The mailbox is full.
            ActorStoppedError: The mailbox is closed.
        """
        if not self.offer(item):
            raise self._full_error()

    async def send(self, item: T, *, overflow: OverflowPolicy | None = None) -> None:
        """Put ``item`` in; when full, wait or fail as the policy says.

        Returns at once, without yielding, while there is room.

        Args:
            item: The message.
            overflow: A policy for this send only, in place of the
                mailbox's (a notice that must not be lost waits for room
                even in a mailbox that rejects).

        Raises:
            MailboxFullError: The mailbox is full and the policy is
                ``reject``.
            ActorStoppedError: The mailbox is closed, or closed while the
                sender waited for room.
        """
        if self.offer(item):
            return

        policy = self._overflow if overflow is None else overflow
        if policy is OverflowPolicy.REJECT:
            raise self._full_error()

        await self._send_waiting(item)

    def receive_nowait(self) -> T:
        """Take the oldest message out without waiting.

        Returns:
            The message.

        Raises:
            anyio.WouldBlock: Nothing is queued and the mailbox is open.
            anyio.EndOfStream: Nothing is queued and the mailbox is closed.
        """
        try:
            item = self._receive.receive_nowait()
        except anyio.EndOfStream:
            self._receive.close()
            raise
        except anyio.ClosedResourceError:
            raise anyio.EndOfStream from None

        self._received += 1
        if self._keys is not None:
            self._count_key(item, -1)

        return item

    async def receive(self) -> T:
        """Take the oldest message out, waiting for one if none is queued.

        Returns:
            The message.

        Raises:
            anyio.EndOfStream: The mailbox is closed and empty.
        """
        try:
            item = await self._receive.receive()
        except anyio.EndOfStream:
            self._receive.close()
            raise
        except anyio.ClosedResourceError:
            raise anyio.EndOfStream from None

        self._received += 1
        if self._keys is not None:
            self._count_key(item, -1)

        return item

    def has_queued(self, key: Hashable) -> bool:
        """Tell whether a message with coalescing ``key`` is still queued.

        The receiver asks this about the message it just took: as the queue
        is first in, first out, any queued message with the same key is a
        newer one that supersedes it.

        Args:
            key: A key returned by ``coalesce_key``.

        Returns:
            Whether one is queued; always ``False`` without ``coalesce_key``.
        """
        return self._keys is not None and key in self._keys

    def close(self) -> None:
        """Refuse new messages; the receiver still drains queued ones.

        Senders waiting for room give up with `ActorStoppedError`. Closing
        twice does nothing.
        """
        self._send.close()

    def drain_nowait(self) -> list[T]:
        """Close the mailbox and take out every message still queued.

        Returns:
            The queued messages, oldest first; the mailbox is then closed
            at both ends.
        """
        self._send.close()
        items: list[T] = []
        while True:
            try:
                items.append(self.receive_nowait())
            except anyio.EndOfStream:
                return items

    def statistics(self) -> MailboxStatistics:
        """Return a snapshot of the mailbox's counters.

        Returns:
            The snapshot.
        """
        stream = self._send.statistics()
        return MailboxStatistics(
            capacity=self._capacity,
            queued=stream.current_buffer_used,
            waiting_senders=stream.tasks_waiting_send,
            sent_total=self._sent,
            received_total=self._received,
            rejected_total=self._rejected,
            high_water=self._high_water,
        )

    async def _send_waiting(self, item: T) -> None:
        # Count first: the receiver may take the message (and count it)
        # before this task runs again. A sender cancelled just after its
        # message was taken is counted back out, though it went in.
        self._sent += 1
        self._high_water = self._capacity
        if self._keys is not None:
            self._count_key(item, 1)

        try:
            await self._send.send(item)
        except BaseException as exc:
            self._sent -= 1
            if self._keys is not None:
                self._count_key(item, -1)

            if isinstance(exc, anyio.ClosedResourceError | anyio.BrokenResourceError):
                raise self._closed_error() from None

            raise

    def _count_key(self, item: T, step: int) -> None:
        keys, key_of = self._keys, self._coalesce_key
        if keys is None or key_of is None:
            return

        key = key_of(item)
        if key is None:
            return

        count = keys.get(key, 0) + step
        if count > 0:
            keys[key] = count
        else:
            keys.pop(key, None)

    def _full_error(self) -> MailboxFullError:
        self._rejected += 1
        return MailboxFullError(
            f"mailbox of actor {self.owner!r} is full at {self._capacity}"
            " messages; send later, raise its capacity, or use overflow"
            " 'block' to wait for room",
            actor=self.owner,
        )

    def _closed_error(self) -> ActorStoppedError:
        return ActorStoppedError(
            f"actor {self.owner!r} is stopped and takes no more messages",
            actor=self.owner,
        )
