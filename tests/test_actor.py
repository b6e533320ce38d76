"""The actor runtime: tell, ask, lifecycle, crash reports, shutdown."""

from __future__ import annotations

from collections.abc import Hashable
from functools import partial

import anyio
import pytest
from attrs import define, field
from structlog.testing import capture_logs

from rolecall import actors
from rolecall.actors import (
    Actor,
    ActorRef,
    ActorSpawner,
    ActorState,
    ActorStatistics,
    ChildCrashed,
    MailboxStatistics,
    open_spawner,
)
from rolecall.hooks_protocol import (
    ActorStoppedError,
    AskTimeoutError,
    MailboxFullError,
)

LIMIT = 10
"""Seconds any one test may take: generous, so that only a hang trips it."""


@define(eq=False)
class Probe(Actor[object]):
    """Records messages; ``"wait"`` parks the handler until ``gate`` opens.

    An exception instance is raised; ``"wait-then-fail"`` parks, then
    raises; anything else is answered with ``("echo", message)``.
    """

    seen: list[object] = field(factory=list)
    gate: anyio.Event = field(factory=anyio.Event)
    entered: anyio.Event = field(factory=anyio.Event)
    stopped: bool = False

    async def handle(self, message: object) -> object:
        self.seen.append(message)
        if message in ("wait", "wait-then-fail"):
            self.entered.set()
            await self.gate.wait()

        if message == "wait-then-fail":
            raise ValueError("failed after waiting")

        if isinstance(message, Exception):
            raise message

        return ("echo", message)

    async def on_stop(self) -> None:
        self.stopped = True


@define(eq=False)
class Parent(Actor[ChildCrashed]):
    """Collects crash notices from its children."""

    notices: list[ChildCrashed] = field(factory=list)
    got: anyio.Event = field(factory=anyio.Event)

    async def handle(self, message: ChildCrashed) -> object:
        self.notices.append(message)
        self.got.set()
        return None


@define(eq=False)
class Starter(Actor[str]):
    """Records on_start; raises from it when told to."""

    fail: bool = False
    started: bool = False

    async def on_start(self) -> None:
        await anyio.lowlevel.checkpoint()
        if self.fail:
            raise OSError("no container")

        self.started = True

    async def handle(self, message: str) -> object:
        return self.started


@define(eq=False)
class SelfStopper(Actor[str]):
    """Stops itself from its own handler."""

    async def handle(self, message: str) -> object:
        if message == "stop-and-wait":
            await self.ref.stop()
        else:
            self.ref.stop_nowait()

        return "stopping"


@define(eq=False)
class Roles(Actor[tuple[str, int]]):
    """Coalesces messages by their first item; records who was superseded."""

    verdicts: list[tuple[tuple[str, int], bool]] = field(factory=list)
    gate: anyio.Event = field(factory=anyio.Event)

    def coalesce_key(self, message: tuple[str, int]) -> Hashable | None:
        return None if message[0] == "wait" else message[0]

    async def handle(self, message: tuple[str, int]) -> object:
        if message[0] == "wait":
            await self.gate.wait()
        else:
            self.verdicts.append((message, self.is_superseded(message)))

        return None


async def _ask_into(
    ref: ActorRef[object], message: object, outcomes: list[object]
) -> None:
    try:
        outcomes.append(await ref.ask(message, timeout=None))
    except Exception as error:  # noqa: BLE001  (the test inspects it)
        outcomes.append(error)


@pytest.mark.anyio
async def test_tells_are_handled_in_the_order_sent() -> None:
    """Messages told by one sender are handled in that order."""
    probe = Probe()
    with anyio.fail_after(LIMIT):
        async with open_spawner() as spawner:
            ref = await spawner.spawn(probe, name="probe")
            for number in range(100):
                await ref.tell(number)

            assert await ref.ask("end", timeout=None) == ("echo", "end")

    assert probe.seen == [*range(100), "end"]


@pytest.mark.anyio
async def test_tell_with_room_never_yields() -> None:
    """A tell into a mailbox with room completes without a checkpoint."""
    probe = Probe()
    with anyio.fail_after(LIMIT):
        async with open_spawner() as spawner:
            ref = await spawner.spawn(probe, name="probe", capacity=5)
            with anyio.CancelScope() as scope:
                scope.cancel()
                for number in range(4):
                    await ref.tell(number)

                ref.tell_nowait(4)

    assert not scope.cancelled_caught
    assert probe.seen == [0, 1, 2, 3, 4]


@pytest.mark.anyio
async def test_ask_returns_the_reply() -> None:
    """An ask returns what the handler returned."""
    with anyio.fail_after(LIMIT):
        async with open_spawner() as spawner:
            ref = await spawner.spawn(Probe(), name="probe")
            assert await ref.ask("ping", timeout=LIMIT) == ("echo", "ping")
            assert await ref.ask("pong", timeout=None) == ("echo", "pong")


@pytest.mark.anyio
async def test_ask_times_out_when_the_handler_is_slow() -> None:
    """An ask with no reply before its deadline raises AskTimeoutError."""
    probe = Probe()
    with anyio.fail_after(LIMIT):
        async with open_spawner() as spawner:
            ref = await spawner.spawn(probe, name="slow")
            with pytest.raises(AskTimeoutError, match="'slow' did not answer") as got:
                await ref.ask("wait", timeout=0.01)

            assert (got.value.actor, got.value.timeout) == ("slow", 0.01)
            probe.gate.set()
            assert await ref.ask("after", timeout=LIMIT) == ("echo", "after")


@pytest.mark.anyio
async def test_ask_times_out_while_waiting_for_room() -> None:
    """An ask blocked on a full mailbox gives up at its deadline."""
    probe = Probe()
    with anyio.fail_after(LIMIT):
        async with open_spawner() as spawner:
            ref = await spawner.spawn(probe, name="full", capacity=1)
            await ref.tell("wait")
            await probe.entered.wait()
            await ref.tell("queued")
            with pytest.raises(AskTimeoutError):
                await ref.ask("no room", timeout=0.01)

            probe.gate.set()

    assert probe.seen == ["wait", "queued"]


@pytest.mark.anyio
async def test_ask_reraises_the_handlers_error_and_the_actor_goes_on() -> None:
    """A handler error for an ask goes to the asker; the actor keeps running."""
    error = KeyError("nope")
    with anyio.fail_after(LIMIT):
        async with open_spawner() as spawner:
            ref = await spawner.spawn(Probe(), name="probe")
            with pytest.raises(KeyError) as got:
                await ref.ask(error, timeout=LIMIT)

            assert got.value is error
            assert ref.state is ActorState.RUNNING
            assert await ref.ask("still", timeout=LIMIT) == ("echo", "still")
            assert ref.statistics().failed_total == 1


@pytest.mark.anyio
async def test_a_failure_after_the_asker_left_is_logged() -> None:
    """A handler error for a timed-out ask is logged, not raised."""
    probe = Probe()
    with anyio.fail_after(LIMIT), capture_logs() as logs:
        async with open_spawner() as spawner:
            ref = await spawner.spawn(probe, name="late")
            with pytest.raises(AskTimeoutError):
                await ref.ask("wait-then-fail", timeout=0.01)

            probe.gate.set()
            assert await ref.ask("next", timeout=LIMIT) == ("echo", "next")

    assert [(log["event"], log["actor"]) for log in logs] == [
        ("abandoned_ask_failed", "late")
    ]
    assert logs[0]["log_level"] == "warning"


@pytest.mark.anyio
async def test_a_reply_to_a_cancelled_asker_is_dropped() -> None:
    """A reply to an asker cancelled while it waited goes nowhere; the actor goes on."""
    probe = Probe()
    with anyio.fail_after(LIMIT):
        async with open_spawner() as spawner:
            ref = await spawner.spawn(probe, name="left")
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as group:
                    group.start_soon(partial(ref.ask, "wait", timeout=None))
                    await probe.entered.wait()
                    scope.cancel()

            probe.gate.set()
            assert await ref.ask("next", timeout=LIMIT) == ("echo", "next")
            assert ref.statistics().handled_total == 2


@pytest.mark.anyio
async def test_ask_on_a_stopped_actor_fails() -> None:
    """Asking an actor that has stopped raises ActorStoppedError."""
    with anyio.fail_after(LIMIT):
        async with open_spawner() as spawner:
            ref = await spawner.spawn(Probe(), name="gone")
            await ref.stop()
            with pytest.raises(ActorStoppedError) as got:
                await ref.ask("hello", timeout=LIMIT)

            assert got.value.actor == "gone"
            with pytest.raises(ActorStoppedError):
                await ref.tell("hello")


@pytest.mark.anyio
async def test_a_crash_on_tell_notifies_the_parent() -> None:
    """A handler error for a tell crashes the actor and reports to the parent."""
    parent_actor = Parent()
    error = ValueError("boom")
    with anyio.fail_after(LIMIT):
        async with open_spawner() as spawner:
            parent = await spawner.spawn(parent_actor, name="parent")
            child = await spawner.spawn(Probe(), name="child", parent=parent)
            await child.tell(error)
            await parent_actor.got.wait()
            with pytest.raises(ActorStoppedError):
                await child.tell("more")

    [notice] = parent_actor.notices
    assert (notice.ref, notice.name, notice.phase) == (child, "child", "handle")
    assert notice.error is error
    assert notice.message is error
    assert child.state is ActorState.CRASHED
    assert child.statistics().failed_total == 1


@pytest.mark.anyio
async def test_a_crash_leaves_siblings_and_the_task_group_alone() -> None:
    """Siblings of a crashed actor keep answering; nothing is cancelled."""
    parent_actor = Parent()
    with anyio.fail_after(LIMIT):
        async with open_spawner() as spawner:
            parent = await spawner.spawn(parent_actor, name="parent")
            doomed = await spawner.spawn(Probe(), name="doomed", parent=parent)
            sibling = await spawner.spawn(Probe(), name="sibling", parent=parent)
            await doomed.tell(RuntimeError("crash"))
            await parent_actor.got.wait()
            assert await sibling.ask("alive?", timeout=LIMIT) == ("echo", "alive?")
            assert (sibling.state, parent.state) == (ActorState.RUNNING,) * 2

    assert doomed.state is ActorState.CRASHED
    assert sibling.state is ActorState.STOPPED


@pytest.mark.anyio
async def test_a_crash_fails_the_asks_queued_behind_it() -> None:
    """Asks queued behind the crashing message fail with ActorStoppedError."""
    probe = Probe()
    outcomes: list[object] = []
    with anyio.fail_after(LIMIT), capture_logs():
        async with open_spawner() as spawner, anyio.create_task_group() as group:
            ref = await spawner.spawn(probe, name="probe")
            await ref.tell("wait")
            await probe.entered.wait()
            await ref.tell(ValueError("boom"))
            group.start_soon(_ask_into, ref, "behind", outcomes)
            await anyio.wait_all_tasks_blocked()
            probe.gate.set()

    [outcome] = outcomes
    assert isinstance(outcome, ActorStoppedError)
    assert probe.seen[:1] == ["wait"]
    assert "behind" not in probe.seen


@pytest.mark.anyio
async def test_a_crash_without_a_parent_is_logged() -> None:
    """An unsupervised crash is logged as an error with the actor's name."""
    error = ValueError("boom")
    with anyio.fail_after(LIMIT), capture_logs() as logs:
        async with open_spawner() as spawner:
            ref = await spawner.spawn(Probe(), name="orphan")
            await ref.tell(error)
            await ref.wait_stopped()

    [log] = logs
    assert (log["event"], log["actor"], log["phase"]) == (
        "actor_crashed",
        "orphan",
        "handle",
    )
    assert log["log_level"] == "error"
    assert log["exc_info"] is error


@pytest.mark.anyio
async def test_a_crash_notice_to_a_stopped_parent_is_logged() -> None:
    """A crash whose parent has stopped is logged as unreported."""
    with anyio.fail_after(LIMIT), capture_logs() as logs:
        async with open_spawner() as spawner:
            parent = await spawner.spawn(Parent(), name="parent")
            child = await spawner.spawn(Probe(), name="child", parent=parent)
            await parent.stop()
            await child.tell(ValueError("boom"))
            await child.wait_stopped()

    assert [(log["event"], log["parent"]) for log in logs] == [
        ("actor_crash_unreported", "parent")
    ]


@pytest.mark.anyio
async def test_stop_drains_queued_messages_then_runs_on_stop() -> None:
    """A draining stop handles what was queued, refuses the rest, runs on_stop."""
    probe = Probe()
    outcomes: list[object] = []
    with anyio.fail_after(LIMIT):
        async with open_spawner() as spawner, anyio.create_task_group() as group:
            ref = await spawner.spawn(probe, name="probe")
            await ref.tell("wait")
            await probe.entered.wait()
            await ref.tell(1)
            group.start_soon(_ask_into, ref, 2, outcomes)
            await anyio.wait_all_tasks_blocked()
            ref.stop_nowait()
            assert ref.state is ActorState.STOPPING
            with pytest.raises(ActorStoppedError):
                await ref.tell(3)

            probe.gate.set()
            await ref.wait_stopped()

    assert probe.seen == ["wait", 1, 2]
    assert outcomes == [("echo", 2)]
    assert probe.stopped
    assert ref.state is ActorState.STOPPED


@pytest.mark.anyio
async def test_stop_without_drain_fails_pending_asks() -> None:
    """A non-draining stop drops queued messages and fails their asks."""
    probe = Probe()
    outcomes: list[object] = []
    with anyio.fail_after(LIMIT):
        async with open_spawner() as spawner, anyio.create_task_group() as group:
            ref = await spawner.spawn(probe, name="probe")
            await ref.tell("wait")
            await probe.entered.wait()
            await ref.tell(1)
            group.start_soon(_ask_into, ref, 2, outcomes)
            await anyio.wait_all_tasks_blocked()
            ref.stop_nowait(drain=False)
            await anyio.wait_all_tasks_blocked()
            assert len(outcomes) == 1
            probe.gate.set()
            await ref.stop()

    [outcome] = outcomes
    assert isinstance(outcome, ActorStoppedError)
    assert outcome.actor == "probe"
    assert probe.seen == ["wait"]
    assert probe.stopped


@pytest.mark.anyio
async def test_stopping_an_ended_actor_does_nothing() -> None:
    """Stop on an actor that has ended returns at once."""
    with anyio.fail_after(LIMIT):
        async with open_spawner() as spawner:
            ref = await spawner.spawn(Probe(), name="probe")
            await ref.stop()
            await ref.stop()
            ref.stop_nowait(drain=False)
            assert ref.state is ActorState.STOPPED


@pytest.mark.anyio
async def test_an_actor_can_stop_itself_but_not_wait_for_it() -> None:
    """stop_nowait works from a handler; stop() there raises RuntimeError."""
    with anyio.fail_after(LIMIT):
        async with open_spawner() as spawner:
            waiter = await spawner.spawn(SelfStopper(), name="waiter")
            with pytest.raises(RuntimeError, match="own handler"):
                await waiter.ask("stop-and-wait", timeout=LIMIT)

            quitter = await spawner.spawn(SelfStopper(), name="quitter")
            assert await quitter.ask("stop", timeout=LIMIT) == "stopping"
            await quitter.wait_stopped()
            assert quitter.state is ActorState.STOPPED


@pytest.mark.anyio
async def test_leaving_the_spawner_block_stops_every_actor_gracefully() -> None:
    """A normal exit drains every actor and runs their on_stop."""
    probes = [Probe(), Probe()]
    with anyio.fail_after(LIMIT):
        async with open_spawner() as spawner:
            refs = [
                await spawner.spawn(probe, name=f"p{index}")
                for index, probe in enumerate(probes)
            ]
            for ref in refs:
                await ref.tell("queued")

    assert [probe.seen for probe in probes] == [["queued"], ["queued"]]
    assert all(probe.stopped for probe in probes)
    assert [ref.state for ref in refs] == [ActorState.STOPPED] * 2


@pytest.mark.anyio
async def test_cancelling_the_spawner_ends_every_actor_and_fails_asks() -> None:
    """Cancellation ends busy and idle actors; outside askers get an error."""
    busy_probe = Probe()
    outcomes: list[object] = []
    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as outside:
            with anyio.CancelScope() as scope:
                async with open_spawner() as spawner:
                    busy = await spawner.spawn(busy_probe, name="busy")
                    idle = await spawner.spawn(Probe(), name="idle")
                    await busy.tell("wait")
                    await busy_probe.entered.wait()
                    outside.start_soon(_ask_into, busy, "pending", outcomes)
                    await anyio.wait_all_tasks_blocked()
                    scope.cancel()
                    await anyio.lowlevel.checkpoint()

    assert scope.cancelled_caught
    assert (busy.state, idle.state) == (ActorState.STOPPED, ActorState.STOPPED)
    [outcome] = outcomes
    assert isinstance(outcome, ActorStoppedError)
    assert not busy_probe.stopped


@pytest.mark.anyio
async def test_cancelling_a_callers_task_group_ends_idle_actors() -> None:
    """A spawner over the caller's task group ends idle actors on cancel."""
    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as group:
            spawner = ActorSpawner(group)
            idle = await spawner.spawn(Probe(), name="idle")
            assert await idle.ask("hi", timeout=LIMIT) == ("echo", "hi")
            group.cancel_scope.cancel()

    assert idle.state is ActorState.STOPPED


@pytest.mark.anyio
async def test_aclose_on_a_callers_task_group_lets_the_group_end() -> None:
    """After aclose the caller's task group ends without being cancelled."""
    probe = Probe()
    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as group:
            spawner = ActorSpawner(group)
            ref = await spawner.spawn(probe, name="probe")
            await ref.tell("last")
            await spawner.aclose()
            with pytest.raises(RuntimeError, match="spawner is closed"):
                await spawner.spawn(Probe(), name="late")

    assert not group.cancel_scope.cancel_called
    assert probe.seen == ["last"]
    assert probe.stopped


@pytest.mark.anyio
async def test_block_overflow_makes_tell_wait_for_room() -> None:
    """With policy block, a tell to a full mailbox waits and keeps order."""
    probe = Probe()
    with anyio.fail_after(LIMIT):
        async with open_spawner() as spawner, anyio.create_task_group() as group:
            ref = await spawner.spawn(probe, name="probe", capacity=1)
            await ref.tell("wait")
            await probe.entered.wait()
            await ref.tell(1)
            group.start_soon(ref.tell, 2)
            await anyio.wait_all_tasks_blocked()
            assert ref.statistics().mailbox.waiting_senders == 1
            probe.gate.set()

    assert probe.seen == ["wait", 1, 2]


@pytest.mark.anyio
async def test_reject_overflow_makes_tell_fail_at_once() -> None:
    """With policy reject, a tell to a full mailbox raises MailboxFullError."""
    probe = Probe()
    with anyio.fail_after(LIMIT):
        async with open_spawner() as spawner:
            ref = await spawner.spawn(
                probe, name="strict", capacity=1, overflow="reject"
            )
            await ref.tell("wait")
            await probe.entered.wait()
            await ref.tell(1)
            with pytest.raises(MailboxFullError) as got:
                await ref.tell(2)

            assert got.value.actor == "strict"
            with pytest.raises(MailboxFullError):
                ref.tell_nowait(2)

            with pytest.raises(MailboxFullError):
                await ref.ask(2, timeout=LIMIT)

            probe.gate.set()

    assert probe.seen == ["wait", 1]


@pytest.mark.anyio
async def test_statistics_count_exactly() -> None:
    """The actor's snapshot reports exact counts after a known sequence."""
    probe = Probe()
    with anyio.fail_after(LIMIT):
        async with open_spawner() as spawner:
            ref = await spawner.spawn(
                probe, name="counted", capacity=3, overflow="reject"
            )
            await ref.tell("wait")
            await probe.entered.wait()
            for number in range(3):
                await ref.tell(number)

            with pytest.raises(MailboxFullError):
                await ref.tell(3)

            probe.gate.set()
            await anyio.wait_all_tasks_blocked()
            with pytest.raises(ValueError, match="bad"):
                await ref.ask(ValueError("bad"), timeout=LIMIT)

            assert ref.statistics() == ActorStatistics(
                name="counted",
                state=ActorState.RUNNING,
                mailbox=MailboxStatistics(
                    capacity=3,
                    queued=0,
                    waiting_senders=0,
                    sent_total=5,
                    received_total=5,
                    rejected_total=1,
                    high_water=3,
                ),
                handled_total=4,
                failed_total=1,
            )


@pytest.mark.anyio
async def test_spawn_waits_for_on_start() -> None:
    """spawn returns after on_start ran, and messages see its effect."""
    starter = Starter()
    with anyio.fail_after(LIMIT):
        async with open_spawner() as spawner:
            ref = await spawner.spawn(starter, name="starter")
            assert starter.started
            assert ref.state is ActorState.RUNNING
            assert await ref.ask("started?", timeout=LIMIT) is True


@pytest.mark.anyio
async def test_a_failing_on_start_raises_from_spawn() -> None:
    """An on_start error is raised by spawn and leaves the actor crashed."""
    starter = Starter(fail=True)
    with anyio.fail_after(LIMIT):
        async with open_spawner() as spawner:
            with pytest.raises(OSError, match="no container"):
                await spawner.spawn(starter, name="starter")

            assert starter.ref.state is ActorState.CRASHED
            with pytest.raises(ActorStoppedError):
                await starter.ref.tell("hello")


@pytest.mark.anyio
async def test_an_actor_is_spawned_once() -> None:
    """Spawning an instance a second time raises RuntimeError."""
    probe = Probe()
    with anyio.fail_after(LIMIT):
        async with open_spawner() as spawner:
            await spawner.spawn(probe, name="first")
            with pytest.raises(RuntimeError, match="'first' was spawned before"):
                await spawner.spawn(probe, name="second")

    assert probe.name == "first"


def test_an_unspawned_actor_has_no_ref() -> None:
    """Reading ref before spawn raises RuntimeError."""
    with pytest.raises(RuntimeError, match="not spawned yet"):
        _ = Roles().ref


@pytest.mark.anyio
async def test_a_handler_can_tell_whether_its_message_is_superseded() -> None:
    """is_superseded is true while a newer message with the same key waits."""
    roles = Roles()
    with anyio.fail_after(LIMIT):
        async with open_spawner() as spawner:
            ref = await spawner.spawn(roles, name="member")
            await ref.tell(("wait", 0))
            for message in [("role", 1), ("role", 2), ("status", 3)]:
                await ref.tell(message)

            roles.gate.set()

    assert roles.verdicts == [
        (("role", 1), True),
        (("role", 2), False),
        (("status", 3), False),
    ]


def test_the_public_names_are_exported() -> None:
    """The package exports the runtime's public names."""
    names = {
        "DEFAULT_CAPACITY",
        "Actor",
        "ActorRef",
        "ActorSpawner",
        "ActorState",
        "ActorStatistics",
        "ChildCrashed",
        "Mailbox",
        "MailboxStatistics",
        "OverflowPolicy",
        "open_spawner",
    }
    assert names <= set(actors.__all__)
    assert all(hasattr(actors, name) for name in names)
