"""Failover time on a real engine with real Redis.

A redundant service (primary and one replica) runs under a supervisor with
its default probe interval. Each run kills the primary's container through
the engine (what ``docker kill`` does) and times, from the kill, the first
write that succeeds on the new primary: a client polls rolecall's status for
the member taking writes and writes to the port it publishes, as the demo's
client does. The service then converges again (a new replica joins and
syncs) before the next run.

The floor, measured in each run: the engine's ``die`` event latency for
that very kill (from a subscription of the benchmark's own) plus one no-op
exec in the new primary through bare aiodocker. No failover can beat it
without skipping the engine's word that the primary died, or without
running a command in the replica.
"""

from __future__ import annotations

import statistics
import time

import aiodocker
import anyio
import redis.asyncio as redis_async
from _bench import Report, cannot_run, quiet_logs
from _docker_bench import BENCH_LABEL, BenchLab, open_lab
from redis.exceptions import RedisError

from rolecall import ensure_image
from rolecall.actors import DockerRuntime, open_docker_runtime
from rolecall.hooks_protocol import Topology
from rolecall.supervisor import (
    LABEL_MEMBER,
    ServiceSpec,
    Supervisor,
    open_supervisor,
)

RUNS = 20
SENTINEL_DETECTION = 30.0
"""Redis Sentinel's default ``down-after-milliseconds``, in seconds."""

_FAILOVER_LIMIT = 30.0
_CONVERGE_LIMIT = 180.0
_POLL = 0.002


async def _noop_exec(docker: aiodocker.Docker, container_id: str) -> float:
    started = time.perf_counter()
    execution = await docker.containers.container(container_id).exec(["true"])
    async with execution.start(detach=False) as stream:
        while await stream.read_out() is not None:
            pass

    detail = await execution.inspect()
    while detail.get("Running"):
        await anyio.sleep(0.005)
        detail = await execution.inspect()

    return time.perf_counter() - started


async def _first_write(supervisor: Supervisor, service: str, old: str) -> float:
    """Write until the new primary takes it; return when it did."""
    clients: dict[str, redis_async.Redis] = {}
    try:
        while True:
            writer = supervisor.status(service).writer
            if writer is not None and writer.id != old and writer.published:
                client = clients.get(writer.published)
                if client is None:
                    host, port = writer.published.rsplit(":", 1)
                    client = redis_async.Redis(
                        host=host, port=int(port), socket_timeout=1.0
                    )
                    clients[writer.published] = client

                try:
                    await client.set("bench:failover", writer.id)
                except (RedisError, OSError):
                    pass
                else:
                    return time.perf_counter()

            await anyio.sleep(_POLL)
    finally:
        with anyio.CancelScope(shield=True):
            for client in clients.values():
                await client.aclose()


async def _one_failover(
    supervisor: Supervisor,
    runtime: DockerRuntime,
    docker: aiodocker.Docker,
    lab: BenchLab,
    service: str,
) -> tuple[float, float, float]:
    """Kill the primary; return failover, die-event and no-op exec seconds."""
    old = supervisor.status(service).writer
    if old is None:
        cannot_run(f"service {service!r} has no primary to kill")

    died = anyio.Event()
    died_at = 0.0
    labels = {LABEL_MEMBER: old.id, BENCH_LABEL: lab.run_id}
    async with (
        runtime.open_event_stream(labels=labels) as events,
        anyio.create_task_group() as group,
    ):

        async def watch() -> None:
            nonlocal died_at
            async for event in events:
                if event.action == "die":
                    died_at = time.perf_counter()
                    died.set()
                    return

        group.start_soon(watch)
        await anyio.sleep(0.05)  # the subscription is live on entry; settle
        killed_at = time.perf_counter()
        await runtime.kill_container(old.container_id)
        with anyio.fail_after(_FAILOVER_LIMIT):
            written_at = await _first_write(supervisor, service, old.id)
            await died.wait()

    new = supervisor.status(service).writer
    if new is None:
        cannot_run("the service lost its primary again during the run")

    exec_seconds = await _noop_exec(docker, new.container_id)

    return written_at - killed_at, died_at - killed_at, exec_seconds


async def _measure(report: Report, lab: BenchLab) -> None:
    image = await ensure_image("redis")
    service = lab.name("bfo")
    spec = ServiceSpec(
        name=service,
        image=image,
        topology=Topology.REDUNDANT,
        replicas=1,
        labels=lab.labels,
    )
    failovers: list[float] = []
    async with (
        open_docker_runtime() as runtime,
        open_supervisor(runtime) as supervisor,
    ):
        docker = aiodocker.Docker()
        try:
            await supervisor.apply(spec)
            await supervisor.wait_converged(service, timeout=_CONVERGE_LIMIT)
            for number in range(RUNS):
                failover, die, noop = await _one_failover(
                    supervisor, runtime, docker, lab, service
                )
                floor = die + noop
                failovers.append(failover)
                print(
                    f"  run {number + 1:2d}: failover {failover * 1000:5.0f} ms;"
                    f" floor {floor * 1000:4.0f} ms (die {die * 1000:.0f} ms"
                    f" + exec {noop * 1000:.0f} ms)",
                    flush=True,
                )
                report.check(
                    "failover",
                    "s from docker kill of the primary to the first write on"
                    " the new one",
                    "s",
                    baseline_what="floor: die event latency + one no-op exec",
                    ratio_what="rolecall / floor",
                    op="<=",
                    limit=6.0,
                ).add(failover, floor, failover / floor)
                await supervisor.wait_converged(service, timeout=_CONVERGE_LIMIT)

            await supervisor.remove(service)
        finally:
            await docker.close()

    median = statistics.median(failovers)
    report.check(
        "failover_median",
        "s, median failover",
        "s",
        target_on="figure",
        op="<=",
        limit=1.0,
    ).add(median)
    report.check(
        "sentinel",
        "s, median failover",
        "s",
        baseline_what="Redis Sentinel's default detection window (not measured)",
        ratio_what="rolecall / Sentinel's detection alone",
        op=None,
    ).add(median, SENTINEL_DETECTION, median / SENTINEL_DETECTION)


def main() -> None:
    quiet_logs()
    report = Report("failover", "6. Failover time")
    report.notes.append(
        f"{RUNS} kills of the primary of a two-member redundant Redis service,"
        " probe interval 2 s (the default); each run waits for the service to"
        " converge again (a new replica synced) before the next. Redis"
        " Sentinel only starts a failover after its down-after-milliseconds"
        f" ({SENTINEL_DETECTION:g} s by default) of silence."
    )
    with open_lab() as lab:
        anyio.run(_measure, report, lab, backend="asyncio")

    report.emit()


if __name__ == "__main__":
    main()
