"""Hook overhead: a no-op hook through rolecall against the same bare exec.

rolecall's side is the whole path a hook takes: an ask to a
`ContainerActor`, the payload built and encoded, `DockerRuntime.exec` (exec
slot, stdin half-closed, output captured, exit code from exec inspect) and
the result decoded. The baseline is the same exec (same command, environment
and stdin bytes) through bare aiodocker on the same container: create, start
attached, write stdin, read the output to its end, inspect the exit code.

Both run 200 hooks one after another, and 200 at a concurrency of 10 (ten
actors on the one container against ten bare workers); the batches are
interleaved in rounds, so a drift of the machine hits both sides alike.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable

import aiodocker
import anyio
from _bench import Report, quiet_logs
from _docker_bench import BenchLab, noop_hook_image, open_lab

from rolecall.actors import (
    ActorRef,
    ActorSpawner,
    ContainerActor,
    ContainerMessage,
    ContainerSpec,
    DockerRuntime,
    HookConvention,
    RunHook,
    ServiceView,
    open_docker_runtime,
    open_spawner,
)
from rolecall.hooks_protocol import (
    HookName,
    HookPayload,
    MemberInfo,
    encode_payload,
)

HOOKS = 200
CONCURRENCY = 10
ROUNDS = 10
WARM_UP = 5

_HOOK = HookName.EXPORT
_MEMBER = "bench-1"


async def _bare_exec(
    docker: aiodocker.Docker, container_id: str, stdin: bytes, env: dict[str, str]
) -> float:
    started = time.perf_counter()
    container = docker.containers.container(container_id)
    execution = await container.exec(
        [f"/opt/rolecall/hooks/{_HOOK.value}"], stdin=True, environment=env
    )
    async with execution.start(detach=False) as stream:
        await stream.write_in(stdin)
        while await stream.read_out() is not None:
            pass

    detail = await execution.inspect()
    while detail.get("Running"):
        await anyio.sleep(0.005)
        detail = await execution.inspect()

    if detail.get("ExitCode") != 0:
        raise SystemExit(f"the bare exec failed: {detail!r}")

    return time.perf_counter() - started


async def _timed_batch(
    work: Callable[[], Awaitable[float]], total: int, workers: int
) -> tuple[float, list[float]]:
    latencies: list[float] = []

    async def worker(count: int) -> None:
        for _ in range(count):
            latencies.append(await work())

    started = time.perf_counter()
    async with anyio.create_task_group() as group:
        for _ in range(workers):
            group.start_soon(worker, total // workers)

    return time.perf_counter() - started, latencies


async def _measure(report: Report, lab: BenchLab) -> None:
    image = noop_hook_image((_HOOK.value,))
    view = ServiceView(
        service="bench",
        members=(MemberInfo(id=_MEMBER, role=None, address=f"{_MEMBER}:1"),),
    )
    payload = HookPayload(
        hook=_HOOK, service="bench", member=view.members[0], members=view.members
    )
    stdin = encode_payload(payload)
    env = {
        "ROLECALL_HOOK": _HOOK.value,
        "ROLECALL_HOOK_MODE": "native",
        "ROLECALL_ENCODING": "msgpack",
    }
    async with (
        open_docker_runtime() as runtime,
        open_spawner() as spawner,
    ):
        docker = aiodocker.Docker()
        try:
            info = await runtime.create_container(
                ContainerSpec(
                    name=lab.name("rc-bench-hooks"), image=image, labels=lab.labels
                )
            )
            await runtime.start_container(info.id)
            refs = await _actors(spawner, runtime, info.id, image)
            await _compare(
                report,
                refs,
                view,
                docker=docker,
                container_id=info.id,
                stdin=stdin,
                env=env,
            )
        finally:
            await docker.close()


async def _actors(
    spawner: ActorSpawner, runtime: DockerRuntime, container_id: str, image: str
) -> list[ActorRef[ContainerMessage]]:
    convention = HookConvention.from_image(await runtime.inspect_image(image))
    refs: list[ActorRef[ContainerMessage]] = []
    for number in range(CONCURRENCY):
        actor = ContainerActor(
            runtime=runtime,
            container_id=container_id,
            member_id=_MEMBER,
            convention=convention,
        )
        refs.append(await spawner.spawn(actor, name=f"hooks-{number}", capacity=64))

    return refs


async def _compare(
    report: Report,
    refs: list[ActorRef[ContainerMessage]],
    view: ServiceView,
    *,
    docker: aiodocker.Docker,
    container_id: str,
    stdin: bytes,
    env: dict[str, str],
) -> None:
    message = RunHook(view, _HOOK)
    turn = iter(range(10**9))

    async def ask(ref: ActorRef[ContainerMessage]) -> float:
        started = time.perf_counter()
        await ref.ask(message, timeout=60)
        return time.perf_counter() - started

    async def one_actor() -> float:
        return await ask(refs[0])

    async def many_actors() -> float:
        # Round robin: each actor runs its hooks one at a time, so the
        # concurrency is the number of actors busy at once.
        return await ask(refs[next(turn) % len(refs)])

    async def bare() -> float:
        return await _bare_exec(docker, container_id, stdin, env)

    for _ in range(WARM_UP):
        await one_actor()
        await bare()

    per_round = HOOKS // ROUNDS
    modes = (
        (1, one_actor, "sequential", "s for 200 no-op hooks, one at a time"),
        (CONCURRENCY, many_actors, "concurrent", "s for 200 no-op hooks, 10 at once"),
    )
    for workers, rolecall, check_id, what in modes:
        totals = {"rolecall": 0.0, "bare": 0.0}
        latencies: dict[str, list[float]] = {"rolecall": [], "bare": []}
        for number in range(ROUNDS):
            order = [("rolecall", rolecall), ("bare", bare)]
            if number % 2:
                order.reverse()

            for side, work in order:
                took, seen = await _timed_batch(work, per_round, workers)
                totals[side] += took
                latencies[side] += seen

        report.check(
            check_id,
            what,
            "s",
            baseline_what="the same exec through bare aiodocker",
            ratio_what="rolecall / baseline",
            op="<=",
            limit=1.1,
        ).add(totals["rolecall"], totals["bare"], totals["rolecall"] / totals["bare"])
        report.info[f"{check_id}_median_ms"] = {
            side: round(statistics.median(values) * 1000, 1)
            for side, values in latencies.items()
        }


def main() -> None:
    quiet_logs()
    report = Report("hooks", "5. Hook overhead")
    with open_lab() as lab:
        anyio.run(_measure, report, lab, backend="asyncio")

    medians = report.info
    report.notes.append(
        f"a shell hook that exits 0 in a busybox container; {HOOKS} hooks per"
        f" mode in {ROUNDS} interleaved rounds. Median latency per hook (ms),"
        f" rolecall vs bare: sequential {medians['sequential_median_ms']},"
        f" concurrent {medians['concurrent_median_ms']}. rolecall's runtime"
        " caps concurrent execs at 4 by default (the engine serialises exec"
        " start-up); the bare workers run 10 at once."
    )
    report.emit()


if __name__ == "__main__":
    main()
