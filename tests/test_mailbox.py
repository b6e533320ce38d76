"""The bounded mailbox: fast path, overflow policies, closing, counters."""

from __future__ import annotations

import anyio
import pytest

from rolecall.actors import Mailbox, MailboxStatistics, OverflowPolicy
from rolecall.hooks_protocol import ActorStoppedError, MailboxFullError


def _drained(mailbox: Mailbox[int]) -> list[int]:
    return mailbox.drain_nowait()


@pytest.mark.anyio
async def test_send_with_room_never_yields() -> None:
    """A send into a mailbox with room completes without a checkpoint."""
    mailbox: Mailbox[int] = Mailbox("a", capacity=3)
    with anyio.CancelScope() as scope:
        scope.cancel()
        for number in range(3):
            await mailbox.send(number)

    assert not scope.cancelled_caught
    assert _drained(mailbox) == [0, 1, 2]


@pytest.mark.anyio
async def test_messages_come_out_in_the_order_they_went_in() -> None:
    """Receiving returns messages first in, first out."""
    mailbox: Mailbox[int] = Mailbox("a", capacity=10)
    for number in range(10):
        mailbox.send_nowait(number)

    assert [mailbox.receive_nowait() for _ in range(10)] == list(range(10))
    assert _drained(mailbox) == []


@pytest.mark.anyio
async def test_receive_nowait_on_an_empty_open_mailbox_would_block() -> None:
    """An empty, open mailbox answers receive_nowait with WouldBlock."""
    mailbox: Mailbox[int] = Mailbox("a")
    with pytest.raises(anyio.WouldBlock):
        mailbox.receive_nowait()

    assert _drained(mailbox) == []


@pytest.mark.anyio
async def test_receive_waits_for_a_message() -> None:
    """An awaited receive returns the message a later send puts in."""
    mailbox: Mailbox[int] = Mailbox("a")
    got: list[int] = []

    async def receiver() -> None:
        got.append(await mailbox.receive())

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(receiver)
            await anyio.wait_all_tasks_blocked()
            await mailbox.send(7)

    assert got == [7]
    assert _drained(mailbox) == []


@pytest.mark.anyio
async def test_block_policy_waits_for_room_and_keeps_order() -> None:
    """With policy block, a send to a full mailbox waits until one is taken."""
    mailbox: Mailbox[int] = Mailbox("a", capacity=1, overflow="block")
    mailbox.send_nowait(1)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(mailbox.send, 2)
            await anyio.wait_all_tasks_blocked()
            assert mailbox.statistics().waiting_senders == 1
            assert mailbox.receive_nowait() == 1

    assert mailbox.receive_nowait() == 2
    assert _drained(mailbox) == []


@pytest.mark.anyio
async def test_reject_policy_raises_mailbox_full_naming_the_actor() -> None:
    """With policy reject, a send to a full mailbox fails at once."""
    mailbox: Mailbox[int] = Mailbox("member-1", capacity=1, overflow="reject")
    await mailbox.send(1)
    with pytest.raises(MailboxFullError, match="'member-1' is full") as caught:
        await mailbox.send(2)

    assert caught.value.actor == "member-1"
    assert mailbox.statistics().rejected_total == 1
    assert _drained(mailbox) == [1]


@pytest.mark.anyio
async def test_send_nowait_on_a_full_mailbox_fails_whatever_the_policy() -> None:
    """The non-blocking twin cannot wait, so it rejects even with block."""
    mailbox: Mailbox[int] = Mailbox("a", capacity=1, overflow=OverflowPolicy.BLOCK)
    mailbox.send_nowait(1)
    with pytest.raises(MailboxFullError):
        mailbox.send_nowait(2)

    assert mailbox.offer(3) is False
    assert mailbox.statistics().rejected_total == 1
    assert _drained(mailbox) == [1]


@pytest.mark.anyio
async def test_a_send_may_wait_in_a_mailbox_that_rejects() -> None:
    """A per-send block policy waits for room even where the mailbox rejects."""
    mailbox: Mailbox[int] = Mailbox("a", capacity=1, overflow="reject")
    mailbox.send_nowait(1)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(lambda: mailbox.send(2, overflow=OverflowPolicy.BLOCK))
            await anyio.wait_all_tasks_blocked()
            assert mailbox.receive_nowait() == 1

    assert _drained(mailbox) == [2]


@pytest.mark.anyio
async def test_closing_refuses_senders_while_the_receiver_drains() -> None:
    """After close, sends fail and the receiver still gets what was queued."""
    mailbox: Mailbox[int] = Mailbox("member-2", capacity=4)
    mailbox.send_nowait(1)
    mailbox.send_nowait(2)
    mailbox.close()
    with pytest.raises(ActorStoppedError, match="'member-2' is stopped") as caught:
        await mailbox.send(3)

    assert caught.value.actor == "member-2"
    with pytest.raises(ActorStoppedError):
        mailbox.send_nowait(3)

    assert mailbox.receive_nowait() == 1
    assert mailbox.receive_nowait() == 2
    with pytest.raises(anyio.EndOfStream):
        mailbox.receive_nowait()

    with pytest.raises(anyio.EndOfStream):
        await mailbox.receive()


@pytest.mark.anyio
async def test_closing_fails_a_sender_waiting_for_room() -> None:
    """A sender blocked on a full mailbox gets ActorStoppedError on close."""
    mailbox: Mailbox[int] = Mailbox("a", capacity=1)
    mailbox.send_nowait(1)
    failures: list[ActorStoppedError] = []

    async def sender() -> None:
        try:
            await mailbox.send(2)
        except ActorStoppedError as error:
            failures.append(error)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(sender)
            await anyio.wait_all_tasks_blocked()
            mailbox.close()

    assert len(failures) == 1
    assert mailbox.statistics().sent_total == 1
    assert _drained(mailbox) == [1]


@pytest.mark.anyio
async def test_a_cancelled_waiting_sender_is_counted_back_out() -> None:
    """Cancelling a sender that waits for room leaves the counters exact."""
    mailbox: Mailbox[int] = Mailbox("a", capacity=1)
    mailbox.send_nowait(1)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(mailbox.send, 2)
            await anyio.wait_all_tasks_blocked()
            assert mailbox.statistics().sent_total == 2
            group.cancel_scope.cancel()

    assert mailbox.statistics().sent_total == 1
    assert _drained(mailbox) == [1]


@pytest.mark.anyio
async def test_drain_nowait_closes_and_returns_everything_queued() -> None:
    """Draining closes the mailbox and hands back the queued messages."""
    mailbox: Mailbox[int] = Mailbox("a", capacity=4)
    for number in range(3):
        mailbox.send_nowait(number)

    assert mailbox.drain_nowait() == [0, 1, 2]
    assert mailbox.drain_nowait() == []
    with pytest.raises(ActorStoppedError):
        mailbox.send_nowait(9)


@pytest.mark.anyio
async def test_statistics_count_exactly() -> None:
    """The snapshot reports the exact counts after a known sequence."""
    mailbox: Mailbox[int] = Mailbox("a", capacity=3, overflow="reject")
    for number in range(3):
        mailbox.send_nowait(number)

    with pytest.raises(MailboxFullError):
        mailbox.send_nowait(3)

    mailbox.receive_nowait()
    mailbox.receive_nowait()
    mailbox.send_nowait(4)

    assert mailbox.statistics() == MailboxStatistics(
        capacity=3,
        queued=2,
        waiting_senders=0,
        sent_total=4,
        received_total=2,
        rejected_total=1,
        high_water=3,
    )
    assert _drained(mailbox) == [2, 4]


@pytest.mark.anyio
async def test_coalescing_keys_tell_when_a_newer_message_is_queued() -> None:
    """has_queued says whether a message with the key is still queued."""
    mailbox: Mailbox[tuple[str, int]] = Mailbox(
        "a", capacity=8, coalesce_key=lambda message: message[0] or None
    )
    for message in [("role", 1), ("", 2), ("role", 3), ("status", 4)]:
        mailbox.send_nowait(message)

    assert mailbox.receive_nowait() == ("role", 1)
    assert mailbox.has_queued("role")
    assert mailbox.receive_nowait() == ("", 2)
    assert mailbox.receive_nowait() == ("role", 3)
    assert not mailbox.has_queued("role")
    assert mailbox.has_queued("status")
    assert mailbox.drain_nowait() == [("status", 4)]
    assert not mailbox.has_queued("status")


def test_without_a_key_function_nothing_is_ever_queued_by_key() -> None:
    """A mailbox without coalesce_key answers has_queued with False."""
    mailbox: Mailbox[str] = Mailbox("a")
    mailbox.send_nowait("role")
    assert not mailbox.has_queued("role")
    assert mailbox.drain_nowait() == ["role"]


@pytest.mark.parametrize("capacity", [0, -1, 1.5, True])
def test_capacity_must_be_a_positive_int(capacity: object) -> None:
    """A capacity that is not an int of at least 1 is refused."""
    with pytest.raises(ValueError, match="capacity must be an int of at least 1"):
        Mailbox("a", capacity=capacity)  # type: ignore[arg-type]


def test_overflow_must_be_a_known_policy() -> None:
    """An unknown overflow policy is refused with the choices listed."""
    with pytest.raises(ValueError, match="overflow must be one of 'block', 'reject'"):
        Mailbox("a", overflow="drop")


def test_capacity_and_policy_read_back() -> None:
    """The options given at construction read back as given."""
    mailbox: Mailbox[int] = Mailbox("a", capacity=5, overflow="reject")
    assert (mailbox.capacity, mailbox.overflow) == (5, OverflowPolicy.REJECT)
    assert mailbox.drain_nowait() == []
