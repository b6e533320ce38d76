"""The demo's scenario, the same for every example service.

A service comes up standalone, takes writes, becomes redundant while a client
keeps writing, loses its primary to ``docker kill``, fails over, and goes back
to standalone; every acknowledged write is read back twice. A timeline shows
what rolecall told which container and how long it took. What a "write" is
and how it is confirmed belongs to the service's `Workload`
(`rolecall._demo` for Redis, `rolecall._demo_postgres` for PostgreSQL).

Everything a demo creates carries `DEMO_LABEL` and an owner label naming its
process, so the leftovers of an ended run can be removed without touching a
demo another process is still running on the same engine.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Protocol, TextIO

import anyio
from attrs import define, field

from rolecall.actors import ContainerRuntime
from rolecall.hooks_protocol import RolecallError, Topology
from rolecall.supervisor import (
    LABEL_SERVICE,
    ServiceEvent,
    ServiceSpec,
    Supervisor,
    open_supervisor,
)

__all__ = [
    "DEMO_LABEL",
    "DEMO_OWNER_LABEL",
    "DemoFailedError",
    "Timeline",
    "Workload",
    "demo_labels",
    "remove_demo_objects",
    "run_scenario",
]

DEMO_LABEL = "io.rolecall.demo"
DEMO_OWNER_LABEL = "io.rolecall.demo.owner"
_STEPS = 6
_FAILOVER_WAIT = 120
_CONVERT_TIMEOUT = 180


class DemoFailedError(RolecallError):
    """The demo saw the service lose an acknowledged write or misbehave."""


class Workload(Protocol):
    """What the scenario needs from a service's client.

    ``find_primary`` (given at construction) returns the address the host
    reaches the current primary at, ``None`` while there is none.
    """

    unit: str
    """What one write is, plural: ``keys``, ``rows``."""

    async def seed(self, address: str, count: int) -> str:
        """Write ``count`` items before any change; return the line to print."""

    async def run(self) -> None:
        """Write one item at a time until stopped, following the primary."""

    def stop(self) -> None:
        """Ask `run` to finish after its current write."""

    async def wait_stopped(self) -> None:
        """Wait until `run` has returned and its last write is counted."""

    async def now_redundant(self, primary: str) -> str:
        """From now on count a write only once a replica has it, and check a
        replica has every write counted before; return the line to print.

        Raises:
            DemoFailedError: No replica confirmed the earlier writes.
        """

    def summary(self) -> str:
        """One line on the live writes: sent, acknowledged, not counted."""

    async def verify(self, address: str) -> tuple[int, int, list[str]]:
        """Read every acknowledged write back from ``address``.

        Returns:
            How many hold their value, how many were acknowledged, and the
            first few that are missing or wrong.
        """


@define
class Timeline:
    """Prints what happens, with the time since the demo started."""

    out: TextIO
    started: float = field(factory=time.monotonic)

    def say(self, text: str) -> None:
        elapsed = time.monotonic() - self.started
        self.out.write(f"[{elapsed:7.2f}s] {text}\n")
        self.out.flush()

    def step(self, number: int, text: str) -> None:
        self.out.write("\n")
        self.say(f"step {number}/{_STEPS}: {text}")

    def event(self, event: ServiceEvent) -> None:
        took = "" if event.duration is None else f" ({event.duration * 1000:.0f} ms)"
        who = event.member or event.service
        self.say(f"  rolecall -> {who:<9} {event.kind}: {event.detail}{took}")


async def run_scenario(
    runtime: ContainerRuntime,
    spec: ServiceSpec,
    make_workload: Callable[[Callable[[], str | None]], Workload],
    *,
    count: int,
    timeline: Timeline,
) -> None:
    """Run the six steps on ``spec``, cleaning up before and after.

    ``spec`` must carry `demo_labels`; the demo refuses to start while
    another live demo runs a service of the same name on the engine.

    Raises:
        DemoFailedError: A check failed (a write lost, no failover), or
            another demo uses the service's name.
    """
    removed = await remove_demo_objects(runtime)
    if removed:
        timeline.say(f"removed {removed} leftover object(s) of an earlier run")
    await _refuse_a_running_twin(runtime, spec.name)
    try:
        await _six_steps(runtime, spec, make_workload, count, timeline)
    finally:
        with anyio.CancelScope(shield=True):
            removed = await remove_demo_objects(runtime, owner=_OWNER)
            timeline.say(
                f"removed {removed} object(s) the run had left behind"
                if removed
                else "nothing left behind: every container, volume and"
                " network the demo made is gone"
            )


async def _six_steps(
    runtime: ContainerRuntime,
    spec: ServiceSpec,
    make_workload: Callable[[Callable[[], str | None]], Workload],
    count: int,
    timeline: Timeline,
) -> None:
    name = spec.name
    async with (
        open_supervisor(runtime, probe_interval=1.0) as supervisor,
        supervisor.open_timeline() as events,
        anyio.create_task_group() as group,
    ):
        group.start_soon(_print_events, events, timeline)
        workload = make_workload(lambda: _writer_address(supervisor, name))

        durability = spec.config.get("durability")
        shown = f" (durability: {durability})" if durability else ""
        timeline.step(1, f"bring `{name}` up standalone{shown}")
        await supervisor.apply(spec)
        plan, _ = await supervisor.probe_plan(spec)
        behaviours = ", ".join(sorted(plan.behaviours)) or "none"
        timeline.say(
            f"  plan: roles {', '.join(sorted(plan.roles))};"
            f" topologies {', '.join(sorted(plan.topologies))};"
            f" behaviours {behaviours};"
            f" ports {list(plan.ports)}; data {list(plan.data_paths)}"
        )
        await supervisor.wait_converged(name, timeout=_CONVERT_TIMEOUT)

        timeline.step(2, f"write {count:,} {workload.unit} through a client")
        line = await workload.seed(_published_writer(supervisor, name), count)
        timeline.say(f"  {line}")
        group.start_soon(workload.run)

        replicas = spec.replicas
        timeline.step(3, f"convert to redundant ({replicas} replica) while writing")
        status = await supervisor.convert(
            name, Topology.REDUNDANT, timeout=_CONVERT_TIMEOUT
        )
        timeline.say(f"  {await workload.now_redundant(status.primary or '?')}")

        timeline.step(4, "docker kill the primary; rolecall fails over")
        await _kill_primary_and_wait(supervisor, runtime, name, timeline)
        workload.stop()
        await workload.wait_stopped()
        timeline.say(f"  {workload.summary()}")

        timeline.step(5, f"read every acknowledged {_one(workload.unit)} back")
        await _verify(supervisor, name, workload, timeline)

        timeline.step(6, "convert back to standalone, keeping the primary's data")
        await supervisor.convert(name, Topology.STANDALONE, timeout=_CONVERT_TIMEOUT)
        await _verify(supervisor, name, workload, timeline)

        await supervisor.remove(name)
        group.cancel_scope.cancel()


def _one(unit: str) -> str:
    return unit.removesuffix("s")


async def _kill_primary_and_wait(
    supervisor: Supervisor, runtime: ContainerRuntime, name: str, timeline: Timeline
) -> None:
    old = supervisor.status(name).writer
    if old is None:
        raise DemoFailedError("no primary to kill: the service has none")

    async with supervisor.open_timeline() as events:
        timeline.say(f"  docker kill {old.container_name}")
        await runtime.kill_container(old.container_id)
        # Done when the service has converged again around another primary;
        # the timeline printer shows how it got there.
        with anyio.move_on_after(_FAILOVER_WAIT):
            async for event in events:
                if event.kind == "converged" and _has_new_primary(
                    supervisor, name, old.id
                ):
                    break

    if not _has_new_primary(supervisor, name, old.id):
        raise DemoFailedError(
            f"no new primary within {_FAILOVER_WAIT}s of killing {old.id}:"
            " run with --log-level info to see what the supervisor did"
        )

    status = supervisor.status(name)
    timeline.say(
        f"  new primary {status.primary}, members {[m.id for m in status.members]}"
    )


def _has_new_primary(supervisor: Supervisor, name: str, old: str) -> bool:
    status = supervisor.status(name)

    return status.converged and status.primary not in (None, old)


async def _verify(
    supervisor: Supervisor, name: str, workload: Workload, timeline: Timeline
) -> None:
    good, total, bad = await workload.verify(_published_writer(supervisor, name))
    timeline.say(f"  verified {good}/{total} {workload.unit}")
    if good != total:
        raise DemoFailedError(
            f"{total - good} acknowledged {workload.unit} missing or wrong, e.g. {bad}"
        )


async def _print_events(
    events: AsyncIterator[ServiceEvent], timeline: Timeline
) -> None:
    async for event in events:
        timeline.event(event)


def _writer_address(supervisor: Supervisor, name: str) -> str | None:
    writer = supervisor.status(name).writer
    return writer.published if writer is not None and writer.alive else None


def _published_writer(supervisor: Supervisor, name: str) -> str:
    address = _writer_address(supervisor, name)
    if address is None:
        raise DemoFailedError("the service has no primary publishing a port")

    return address


# -- what belongs to which demo ------------------------------------------------


def _process_identity(pid: int) -> str | None:
    """``pid:start-time`` of a live process; ``None`` once it has ended.

    The start time tells a live demo from a new process that reuses the pid
    of an ended one.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except OSError:
        return None

    return f"{pid}:{stat.rsplit(')', 1)[1].split()[19]}"


def _owner_alive(owner: str) -> bool:
    pid, _, _ = owner.partition(":")
    return pid.isdigit() and _process_identity(int(pid)) == owner


_OWNER = _process_identity(os.getpid()) or str(os.getpid())


def demo_labels() -> dict[str, str]:
    """The labels a demo's service carries: the demo's, and this process's."""
    return {DEMO_LABEL: "true", DEMO_OWNER_LABEL: _OWNER}


async def remove_demo_objects(
    runtime: ContainerRuntime, *, owner: str | None = None
) -> int:
    """Remove demo containers, volumes and networks.

    Args:
        owner: Remove only what that process's demo made; by default, what
            every demo whose process has ended made (a live demo's objects
            stay, whoever runs it).

    Returns:
        How many objects were removed.
    """
    every = {DEMO_LABEL: "true"}
    if owner is not None:
        return await _remove_labelled(runtime, {**every, DEMO_OWNER_LABEL: owner})

    live = {
        container.labels.get(DEMO_OWNER_LABEL, "")
        for container in await runtime.list_containers(labels=every)
    }
    live = {owner for owner in live if owner and _owner_alive(owner)}
    return await _remove_labelled(runtime, every, keep=live)


async def _remove_labelled(
    runtime: ContainerRuntime,
    labels: Mapping[str, str],
    *,
    keep: AbstractSet[str] = frozenset(),
) -> int:
    kept_volumes: set[str] = set()
    kept_networks: set[str] = set()
    for owner in keep:
        theirs = {**labels, DEMO_OWNER_LABEL: owner}
        kept_volumes.update(await runtime.list_volumes(labels=theirs))
        kept_networks.update(await runtime.list_networks(labels=theirs))

    removed = 0
    for container in await runtime.list_containers(labels=labels):
        if container.labels.get(DEMO_OWNER_LABEL) not in keep:
            await runtime.remove_container(container.id)
            removed += 1

    for volume in await runtime.list_volumes(labels=labels):
        if volume not in kept_volumes:
            await runtime.remove_volume(volume)
            removed += 1

    for network in await runtime.list_networks(labels=labels):
        if network not in kept_networks:
            await runtime.remove_network(network)
            removed += 1

    return removed


async def _refuse_a_running_twin(runtime: ContainerRuntime, service: str) -> None:
    twins = await runtime.list_containers(
        labels={DEMO_LABEL: "true", LABEL_SERVICE: service}
    )
    others = {c.labels.get(DEMO_OWNER_LABEL, "") for c in twins} - {_OWNER}
    if others:
        pids = ", ".join(sorted(owner.partition(":")[0] for owner in others))
        raise DemoFailedError(
            f"another demo (process {pids}) runs a service named {service!r}"
            " on this engine: wait for it to finish, or stop that process"
        )
