"""Memory per idle actor: ten thousand container actors on the fake runtime.

The containers are created first, so what is counted is rolecall's side
only: the `ContainerActor`, its `ActorRef` and its mailbox, spawned as the
supervisor spawns a member's actor (mailbox of 64). Two readings:

- RSS: the growth of the process's resident set over one batch, what the
  operating system charges (it moves in pages and includes the allocator's
  slack);
- tracemalloc: the bytes Python allocated for a second batch, measured
  while tracing (which adds its own overhead, so RSS is read on the first).

Baseline in the same run: the textbook actor, one ``asyncio.Queue`` and one
task blocked on ``get()`` per actor, read the same two ways.
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from typing import Any

import anyio
from _bench import Report, quiet_logs, rss_bytes

from rolecall.actors import (
    ActorRef,
    ActorSpawner,
    ContainerActor,
    ContainerSpec,
    HookConvention,
    open_spawner,
)
from rolecall.testing import FakeRuntime, fake_kv_image

ACTORS = 10_000
MAILBOX = 64
"""The mailbox the supervisor gives a member's actor."""

_IMAGE = "kv:fake"


async def _containers(runtime: FakeRuntime, prefix: str) -> list[str]:
    ids = []
    for number in range(ACTORS):
        info = await runtime.create_container(
            ContainerSpec(name=f"{prefix}-{number}", image=_IMAGE)
        )
        await runtime.start_container(info.id)
        ids.append(info.id)

    return ids


async def _spawn(
    spawner: ActorSpawner, runtime: FakeRuntime, ids: list[str], prefix: str
) -> list[ActorRef[Any]]:
    convention = HookConvention()
    refs: list[ActorRef[Any]] = []
    for number, container_id in enumerate(ids):
        actor = ContainerActor(
            runtime=runtime,
            container_id=container_id,
            member_id=f"{prefix}-{number}",
            convention=convention,
        )
        refs.append(
            await spawner.spawn(
                actor, name=f"member:{prefix}-{number}", capacity=MAILBOX
            )
        )

    return refs


async def _naive(count: int) -> list[tuple[asyncio.Queue[object], asyncio.Task[None]]]:
    loop = asyncio.get_running_loop()

    async def serve(queue: asyncio.Queue[object]) -> None:
        while True:
            await queue.get()

    made = []
    for _ in range(count):
        queue: asyncio.Queue[object] = asyncio.Queue(maxsize=MAILBOX)
        made.append((queue, loop.create_task(serve(queue))))

    await asyncio.sleep(0)  # every task reaches its get() and blocks there

    return made


def _settled() -> None:
    for _ in range(3):
        gc.collect()


async def _measure(report: Report) -> None:
    runtime = FakeRuntime()
    runtime.add_image(_IMAGE, hooks=fake_kv_image())
    first = await _containers(runtime, "rss")
    second = await _containers(runtime, "traced")
    keep: list[object] = []
    async with open_spawner() as spawner:
        # Warm-up: the first spawn starts the spawner's timer task and
        # imports what it needs; that is no actor's cost.
        keep.append(await _spawn(spawner, runtime, first[:1], "warm"))

        _settled()
        before = rss_bytes()
        keep.append(await _spawn(spawner, runtime, first, "rss"))
        _settled()
        actor_rss = (rss_bytes() - before) / ACTORS

        before = rss_bytes()
        keep.append(await _naive(ACTORS))
        _settled()
        naive_rss = (rss_bytes() - before) / ACTORS

        tracemalloc.start()
        _settled()
        start = tracemalloc.get_traced_memory()[0]
        keep.append(await _spawn(spawner, runtime, second, "traced"))
        _settled()
        actor_traced = (tracemalloc.get_traced_memory()[0] - start) / ACTORS

        start = tracemalloc.get_traced_memory()[0]
        keep.append(await _naive(ACTORS))
        _settled()
        naive_traced = (tracemalloc.get_traced_memory()[0] - start) / ACTORS
        tracemalloc.stop()

        for batch in keep:
            if isinstance(batch, list) and batch and isinstance(batch[0], tuple):
                for _, task in batch:
                    task.cancel()

    report.check(
        "traced",
        "bytes per idle container actor (tracemalloc)",
        "B",
        baseline_what="asyncio.Queue + a task blocked on get()",
        ratio_what="rolecall / baseline",
        target_on="figure",
        op="<=",
        limit=4096,
    ).add(actor_traced, naive_traced, actor_traced / naive_traced)
    report.check(
        "rss",
        "bytes per idle container actor (RSS growth)",
        "B",
        baseline_what="asyncio.Queue + a task blocked on get()",
        ratio_what="rolecall / baseline",
        target_on="figure",
        op="<=",
        limit=4096,
    ).add(actor_rss, naive_rss, actor_rss / naive_rss)


def main() -> None:
    quiet_logs()
    report = Report("memory", "3. Memory per idle actor")
    report.notes.append(
        f"{ACTORS:,} `ContainerActor`s spawned with a mailbox of {MAILBOX} over"
        " containers created beforehand on the fake runtime; actor, ref and"
        " mailbox are counted, the fake containers are not."
    )
    anyio.run(_measure, report, backend="asyncio")
    report.emit()


if __name__ == "__main__":
    main()
