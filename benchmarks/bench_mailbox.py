"""Mailbox throughput: one sender, one actor, a million small tells.

Baselines in the same run: a bare ``asyncio.Queue`` producer and consumer
with the same bound as the actor's mailbox (128), and Pykka's ``tell`` to a
threading actor. Each figure is messages per second from the first send to
the moment the receiver has taken the last one.
"""

from __future__ import annotations

import asyncio
import threading
import time

import anyio
from _bench import Report, cannot_run

from rolecall.actors import DEFAULT_CAPACITY, Actor, open_spawner

MESSAGES = 1_000_000
ROUNDS = 5


class _Counter(Actor[int]):
    """Counts messages and says when the last one arrived."""

    __slots__ = ("count", "done", "expected")

    def __init__(self, expected: int, done: anyio.Event) -> None:
        self.count = 0
        self.expected = expected
        self.done = done

    async def handle(self, message: int) -> None:
        self.count += 1
        if self.count == self.expected:
            self.done.set()


async def _rolecall_seconds(count: int) -> float:
    done = anyio.Event()
    async with open_spawner() as spawner:
        ref = await spawner.spawn(_Counter(count, done), name="counter")
        tell = ref.tell
        started = time.perf_counter()
        for number in range(count):
            await tell(number)

        await done.wait()

        return time.perf_counter() - started


async def _queue_seconds(count: int) -> float:
    queue: asyncio.Queue[int] = asyncio.Queue(maxsize=DEFAULT_CAPACITY)

    async def consume() -> None:
        get = queue.get
        for _ in range(count):
            await get()

    started = time.perf_counter()
    consumer = asyncio.get_running_loop().create_task(consume())
    put = queue.put
    for number in range(count):
        await put(number)

    await consumer

    return time.perf_counter() - started


def _pykka_rate() -> float:
    import pykka

    done = threading.Event()

    class Counter(pykka.ThreadingActor):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.count = 0

        def on_receive(self, message: object) -> None:
            self.count += 1
            if self.count == MESSAGES:
                done.set()

    ref = Counter.start()
    try:
        tell = ref.tell
        started = time.perf_counter()
        for number in range(MESSAGES):
            tell(number)

        done.wait()
        elapsed = time.perf_counter() - started
    finally:
        ref.stop()

    return MESSAGES / elapsed


async def _measure(report: Report) -> None:
    # Interleaved rounds: a burst of load on the machine hits both sides.
    seconds = {"queue": 0.0, "rolecall": 0.0}
    for number in range(ROUNDS):
        sides = [("queue", _queue_seconds), ("rolecall", _rolecall_seconds)]
        for name, measure in sides[number % 2 :] + sides[: number % 2]:
            seconds[name] += await measure(MESSAGES // ROUNDS)

    queue = MESSAGES / seconds["queue"]
    rolecall = MESSAGES / seconds["rolecall"]
    pykka = await anyio.to_thread.run_sync(_pykka_rate)
    report.check(
        "tell_vs_queue",
        "tells/s, one sender to one actor",
        "msg/s",
        baseline_what="bare asyncio.Queue(128) producer/consumer",
        ratio_what="rolecall / baseline",
        op=">=",
        limit=1.0,
    ).add(rolecall, queue, rolecall / queue)
    report.check(
        "tell_vs_pykka",
        "tells/s, one sender to one actor",
        "msg/s",
        baseline_what="Pykka ThreadingActor tell",
        ratio_what="rolecall / baseline",
        op=">=",
        limit=8.0,
    ).add(rolecall, pykka, rolecall / pykka)


def main() -> None:
    try:
        import pykka  # noqa: F401  (checked before anything is timed)
    except ImportError:
        cannot_run("pykka is not installed; install the bench extra")

    report = Report("mailbox", "1. Mailbox throughput")
    report.notes.append(
        f"{MESSAGES:,} tells of a small int per run and side (rolecall and the"
        f" queue in {ROUNDS} interleaved rounds, Pykka in one); throughput"
        " counts until the receiver has taken the last message."
    )
    anyio.run(_measure, report, backend="asyncio")
    report.emit()


if __name__ == "__main__":
    main()
