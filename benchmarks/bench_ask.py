"""Ask round trip: a hundred thousand requests, each waiting for its reply.

Baselines in the same run: a bare round trip (a future put on an
``asyncio.Queue`` with the request, a server task that sets its result) and
Pykka's ``ask`` to a threading actor. rolecall is measured twice: without a
timeout, and with one, as the supervisor asks.
"""

from __future__ import annotations

import asyncio
import time

import anyio
from _bench import Report, cannot_run

from rolecall.actors import Actor, open_spawner

ASKS = 100_000
ROUNDS = 5
PYKKA_ASKS = 20_000
"""Pykka's asks are slow enough that fewer give a steady rate in less time."""

TIMEOUT = 900.0
"""The timeout the supervisor passes with every ask."""


class _Echo(Actor[int]):
    """Answers every message with itself."""

    __slots__ = ()

    async def handle(self, message: int) -> int:
        return message


async def _rolecall_seconds(count: int, timeout: float | None) -> float:
    async with open_spawner() as spawner:
        ref = await spawner.spawn(_Echo(), name="echo")
        ask = ref.ask
        started = time.perf_counter()
        for number in range(count):
            await ask(number, timeout=timeout)

        return time.perf_counter() - started


async def _bare_seconds(count: int, timeout: float | None) -> float:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[asyncio.Future[int], int]] = asyncio.Queue()

    async def serve() -> None:
        while True:
            future, request = await queue.get()
            future.set_result(request)

    server = loop.create_task(serve())
    started = time.perf_counter()
    for number in range(count):
        future = loop.create_future()
        queue.put_nowait((future, number))
        await future

    elapsed = time.perf_counter() - started
    server.cancel()

    return elapsed


def _pykka_seconds() -> float:
    import pykka

    class Echo(pykka.ThreadingActor):  # type: ignore[misc]
        def on_receive(self, message: object) -> object:
            return message

    ref = Echo.start()
    try:
        ask = ref.ask
        started = time.perf_counter()
        for number in range(PYKKA_ASKS):
            ask(number)

        elapsed = time.perf_counter() - started
    finally:
        ref.stop()

    return elapsed * ASKS / PYKKA_ASKS


async def _measure(report: Report) -> None:
    # Interleaved rounds: a burst of load on the machine hits every side.
    sides = [
        ("bare", _bare_seconds, None),
        ("plain", _rolecall_seconds, None),
        ("timed", _rolecall_seconds, TIMEOUT),
    ]
    seconds = dict.fromkeys(("bare", "plain", "timed"), 0.0)
    for number in range(ROUNDS):
        for name, measure, timeout in sides[number:] + sides[:number]:
            seconds[name] += await measure(ASKS // ROUNDS, timeout)

    bare, plain, timed = seconds["bare"], seconds["plain"], seconds["timed"]
    pykka = await anyio.to_thread.run_sync(_pykka_seconds)
    per_ask = 1e6 / ASKS
    report.check(
        "ask_vs_bare",
        "µs per ask, no timeout",
        "µs",
        baseline_what="bare future + asyncio.Queue round trip",
        ratio_what="rolecall / baseline",
        op="<=",
        limit=1.5,
    ).add(plain * per_ask, bare * per_ask, plain / bare)
    report.check(
        "ask_timeout_vs_bare",
        f"µs per ask, timeout={TIMEOUT:g} s (as the supervisor asks)",
        "µs",
        baseline_what="bare future + asyncio.Queue round trip",
        ratio_what="rolecall / baseline",
        op="<=",
        limit=1.5,
    ).add(timed * per_ask, bare * per_ask, timed / bare)
    report.check(
        "ask_vs_pykka",
        "asks/s, no timeout",
        "ask/s",
        baseline_what="Pykka ThreadingActor ask",
        ratio_what="rolecall / baseline",
        op=">=",
        limit=5.0,
    ).add(ASKS / plain, ASKS / pykka, pykka / plain)


def main() -> None:
    try:
        import pykka  # noqa: F401  (checked before anything is timed)
    except ImportError:
        cannot_run("pykka is not installed; install the bench extra")

    report = Report("ask", "2. Ask round trip")
    report.notes.append(
        f"{ASKS:,} sequential asks per run in {ROUNDS} rounds that interleave"
        f" the sides (Pykka: {PYKKA_ASKS:,}, scaled);"
        " the actor answers each with the request itself."
    )
    anyio.run(_measure, report, backend="asyncio")
    report.emit()


if __name__ == "__main__":
    main()
