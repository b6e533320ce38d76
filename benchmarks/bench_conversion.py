"""Conversion cost: standalone to redundant with a million keys, on a real engine.

rolecall's side: a standalone Redis service holding 1,000,000 small keys is
converted to redundant with one replica (`Supervisor.convert`). The figure
runs from the call to the first moment the new replica reports its link up
with no sync under way (``INFO replication``, polled every 10 ms on the port
it publishes); the time until `convert` returned is shown beside it.

The baseline, in the same run: two containers of the same image, Redis
started directly with the same settings the hooks write (append-only file,
diskless sync without delay, the data on a named volume), the same million
keys in the first. It runs from creating the second container, through its
start and one ``REPLICAOF``, to the same in-sync moment: a bare conversion
also has to start a replica.

While rolecall converts, a client writes to the service every 2 ms; a write
that fails counts as downtime, from the failure to the next write that
succeeds. The same client writes to the bare primary during the baseline.
"""

from __future__ import annotations

import statistics
import time

import anyio
import redis.asyncio as redis_async
from _bench import Report, cannot_run, quiet_logs
from _docker_bench import BenchLab, open_lab
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from rolecall import ensure_image
from rolecall.actors import ContainerSpec, DockerRuntime, open_docker_runtime
from rolecall.hooks_protocol import Topology
from rolecall.supervisor import ServiceSpec, Supervisor, open_supervisor

RUNS = 3
KEYS = 1_000_000
PORT = 6379
POLL = 0.01
WRITE_PACE = 0.002

_LIMIT = 180.0

_LOAD_SCRIPT = """
for i = tonumber(ARGV[1]), tonumber(ARGV[2]) do
    redis.call('SET', 'key:' .. i, 'value')
end
return 1
"""
_LOAD_CHUNK = 100_000
"""Keys per script: each stays well inside Redis's 5 s script time limit."""

_REDIS_SETTINGS = (
    "--port",
    str(PORT),
    "--bind",
    "0.0.0.0",  # noqa: S104  (inside the container, as the hooks bind it)
    "--protected-mode",
    "no",
    "--dir",
    "/data",
    "--appendonly",
    "yes",
    "--appendfsync",
    "everysec",
    "--save",
    "",
    "--repl-diskless-sync",
    "yes",
    "--repl-diskless-sync-delay",
    "0",
    "--replica-read-only",
    "yes",
)
"""What the image's configure hook writes, as command-line options."""


def _client(address: str, *, timeout: float | None = 5.0) -> redis_async.Redis:
    """A client that never resends a command behind the caller's back."""
    host, port = address.rsplit(":", 1)
    return redis_async.Redis(
        host=host,
        port=int(port),
        socket_timeout=timeout,
        decode_responses=True,
        retry=Retry(NoBackoff(), 0),
    )


async def _load(address: str, report: Report) -> None:
    client = _client(address, timeout=None)
    try:
        server = await client.info("server")
        report.info["redis_version"] = server.get("redis_version")
        for first in range(1, KEYS + 1, _LOAD_CHUNK):
            last = min(first + _LOAD_CHUNK - 1, KEYS)
            await client.eval(_LOAD_SCRIPT, 0, first, last)

        if await client.dbsize() < KEYS:
            cannot_run(f"loading {KEYS:,} keys into {address} failed")
    finally:
        await client.aclose()


async def _wait_in_sync(address: str) -> float:
    """Poll a replica until its link is up and no sync runs; return when."""
    client = _client(address)
    try:
        while True:
            try:
                info = await client.info("replication")
            except (RedisError, OSError):
                info = {}

            if (
                info.get("role") == "slave"
                and info.get("master_link_status") == "up"
                and info.get("master_sync_in_progress") == 0
            ):
                return time.perf_counter()

            await anyio.sleep(POLL)
    finally:
        await client.aclose()


async def _wait_answers(address: str) -> None:
    client = _client(address)
    try:
        while True:
            try:
                await client.ping()
            except (RedisError, OSError):
                await anyio.sleep(POLL)
            else:
                return
    finally:
        await client.aclose()


class _Writer:
    """Writes one key every `WRITE_PACE` seconds and counts failed time.

    Paced, because it shares the event loop with the control plane: a
    writer flat out would take most of it and slow rolecall down.
    """

    def __init__(self, address: str) -> None:
        self.address = address
        self.ok = 0
        self.failed = 0
        self.downtime = 0.0
        self.longest_gap = 0.0
        self.stopped = False

    async def run(self) -> None:
        client = _client(self.address)
        failing_since: float | None = None
        last_ok = time.perf_counter()
        try:
            while not self.stopped:
                try:
                    await client.set(f"live:{self.ok}", "value")
                except (RedisError, OSError):
                    self.failed += 1
                    if failing_since is None:
                        failing_since = time.perf_counter()

                    await anyio.sleep(POLL)
                    continue

                now = time.perf_counter()
                self.ok += 1
                self.longest_gap = max(self.longest_gap, now - last_ok)
                last_ok = now
                if failing_since is not None:
                    self.downtime += now - failing_since
                    failing_since = None

                await anyio.sleep(WRITE_PACE)
        finally:
            await client.aclose()


async def _rolecall_run(
    supervisor: Supervisor, lab: BenchLab, image: str, report: Report
) -> tuple[float, float, _Writer]:
    service = lab.name("bcv")
    spec = ServiceSpec(name=service, image=image, labels=lab.labels)
    await supervisor.apply(spec)
    status = await supervisor.wait_converged(service, timeout=_LIMIT)
    writer_view = status.writer
    if writer_view is None or writer_view.published is None:
        cannot_run(f"service {service!r} has no primary publishing a port")

    await _load(writer_view.published, report)
    writer = _Writer(writer_view.published)
    async with anyio.create_task_group() as group:
        group.start_soon(writer.run)
        await anyio.sleep(0.2)  # the writer is under way before the change
        started = time.perf_counter()
        group.start_soon(_convert, supervisor, service)
        replica = await _new_member(supervisor, service, writer_view.id)
        in_sync = await _wait_in_sync(replica)
        await supervisor.wait_converged(service, timeout=_LIMIT)
        converged = time.perf_counter()
        await anyio.sleep(0.2)
        writer.stopped = True

    await supervisor.remove(service)

    return in_sync - started, converged - started, writer


async def _convert(supervisor: Supervisor, service: str) -> None:
    await supervisor.convert(service, Topology.REDUNDANT, replicas=1, timeout=_LIMIT)


async def _new_member(supervisor: Supervisor, service: str, old: str) -> str:
    """The published address of the member that joins, once it has one."""
    with anyio.fail_after(_LIMIT):
        while True:
            for member in supervisor.status(service).members:
                if member.id != old and member.published:
                    return member.published

            await anyio.sleep(POLL)


async def _bare_run(
    runtime: DockerRuntime, lab: BenchLab, image: str, report: Report
) -> float:
    network = lab.name("rc-bench-net")
    await runtime.create_network(network, labels=lab.labels)
    names = [lab.name("rc-bench-redis") for _ in range(2)]
    addresses = []
    for number, name in enumerate(names):
        volume = f"{name}-data"
        await runtime.create_volume(volume, labels=lab.labels)
        spec = ContainerSpec(
            name=name,
            image=image,
            labels=lab.labels,
            command=("redis-server", *_REDIS_SETTINGS),
            network=network,
            volumes={volume: "/data"},
            published_ports=(PORT,),
        )
        if number == 0:
            addresses.append(await _start(runtime, spec))
            await _wait_answers(addresses[0])
            await _load(addresses[0], report)
            continue

        writer = _Writer(addresses[0])
        async with anyio.create_task_group() as group:
            # The same client load as on rolecall's side.
            group.start_soon(writer.run)
            await anyio.sleep(0.2)
            started = time.perf_counter()
            address = await _start(runtime, spec)
            await _wait_answers(address)
            client = _client(address)
            try:
                await client.execute_command("REPLICAOF", names[0], str(PORT))
            finally:
                await client.aclose()

            in_sync = await _wait_in_sync(address)
            writer.stopped = True

    for name in names:
        await runtime.remove_container(name)

    return in_sync - started


async def _start(runtime: DockerRuntime, spec: ContainerSpec) -> str:
    info = await runtime.create_container(spec)
    await runtime.start_container(info.id)
    info = await runtime.inspect_container(info.id)
    port = info.host_ports.get(PORT)
    if port is None:
        cannot_run(f"container {spec.name!r} published no port for {PORT}")

    return f"127.0.0.1:{port}"


async def _measure(report: Report, lab: BenchLab) -> None:
    image = await ensure_image("redis")
    returned: list[float] = []
    async with (
        open_docker_runtime() as runtime,
        open_supervisor(runtime) as supervisor,
    ):
        for number in range(RUNS):
            if number % 2:
                bare = await _bare_run(runtime, lab, image, report)
                in_sync, converged, writer = await _rolecall_run(
                    supervisor, lab, image, report
                )
            else:
                in_sync, converged, writer = await _rolecall_run(
                    supervisor, lab, image, report
                )
                bare = await _bare_run(runtime, lab, image, report)

            returned.append(converged)
            print(
                f"  run {number + 1}: rolecall in sync after {in_sync:.2f} s"
                f" (convert returned after {converged:.2f} s); bare"
                f" {bare:.2f} s; {writer.ok:,} writes, {writer.failed} failed,"
                f" longest gap {writer.longest_gap * 1000:.0f} ms",
                flush=True,
            )
            report.check(
                "conversion",
                f"s until the new replica is in sync, {KEYS:,} keys",
                "s",
                baseline_what="bare: start a second container, REPLICAOF, in sync",
                ratio_what="rolecall / baseline",
                op="<=",
                limit=1.2,
            ).add(in_sync, bare, in_sync / bare)
            report.check(
                "downtime",
                "s of failed writes during the conversion",
                "s",
                target_on="figure",
                op="<=",
                limit=0.0,
            ).add(writer.downtime)
            report.info.setdefault("longest_gap_ms", []).append(
                round(writer.longest_gap * 1000)
            )

    report.info["convert_returned_s"] = round(statistics.median(returned), 2)


def main() -> None:
    quiet_logs()
    report = Report("conversion", "7. Conversion cost")
    with open_lab() as lab:
        anyio.run(_measure, report, lab, backend="asyncio")

    report.notes.append(
        f"{KEYS:,} keys of ~10 bytes written by Lua loops; replication as the"
        " hooks configure it on both sides (diskless sync, no delay, AOF on a"
        f" named volume). `convert` returned after {report.info['convert_returned_s']}"
        " s (median): its confirming pass probes both members once more."
        f" Longest gap between two writes that succeeded, per run (ms):"
        f" {report.info['longest_gap_ms']}."
    )
    report.emit()


if __name__ == "__main__":
    main()
