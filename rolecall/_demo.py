"""The main job, end to end on a real engine: ``rolecall demo``.

Redis comes up standalone, takes writes, becomes redundant while a client
keeps writing, loses its primary to ``docker kill``, fails over, and goes back
to standalone; every acknowledged key is read back twice. A timeline shows
what rolecall told which container and how long it took.
"""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncIterator
from typing import TextIO

import anyio
from attrs import define, field

from rolecall.actors import ContainerRuntime, open_docker_runtime
from rolecall.hooks_protocol import RolecallError, Topology
from rolecall.supervisor import (
    ServiceEvent,
    ServiceSpec,
    Supervisor,
    open_supervisor,
)

from ._demo_client import (
    AckedWrites,
    ContinuousWriter,
    open_client,
    verify,
    write_batch,
)
from ._images import ensure_image

__all__ = ["DEMO_LABEL", "DemoFailedError", "remove_demo_objects", "run_demo"]

DEMO_LABEL = "io.rolecall.demo"
_SERVICE = "cache"
_STEPS = 6
_FAILOVER_WAIT = 120


class DemoFailedError(RolecallError):
    """The demo saw the service lose an acknowledged write or misbehave."""


@define
class _Timeline:
    """Prints what happens, with the time since the demo started."""

    out: TextIO
    started: float = field(factory=time.monotonic)

    def say(self, text: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"[{elapsed:7.2f}s] {text}", file=self.out, flush=True)

    def step(self, number: int, text: str) -> None:
        print(file=self.out)
        self.say(f"step {number}/{_STEPS}: {text}")

    def event(self, event: ServiceEvent) -> None:
        took = "" if event.duration is None else f" ({event.duration * 1000:.0f} ms)"
        who = event.member or event.service
        self.say(f"  rolecall -> {who:<9} {event.kind}: {event.detail}{took}")


async def run_demo(
    *,
    keys: int = 10_000,
    replicas: int = 1,
    docker_url: str | None = None,
    out: TextIO = sys.stdout,
) -> None:
    """Run the demo scenario; return when every check passed.

    Raises:
        DemoFailedError: A check failed (a key lost, no failover).
        EngineUnavailableError: No Docker engine answers at ``docker_url``.
        RolecallError: rolecall could not do its part (engine, image, hook).
    """
    timeline = _Timeline(out)
    # The engine first: when none answers, say so rather than fail the build.
    async with open_docker_runtime(docker_url) as runtime:
        timeline.say("making sure the example Redis image exists (built once)")
        image = await ensure_image("redis", docker_host=docker_url)
        timeline.say(f"image {image}")
        removed = await remove_demo_objects(runtime)
        if removed:
            timeline.say(f"removed {removed} leftover object(s) of an earlier run")
        try:
            await _scenario(runtime, image, keys, replicas, timeline)
        finally:
            with anyio.CancelScope(shield=True):
                removed = await remove_demo_objects(runtime)
                timeline.say(
                    f"removed {removed} object(s) the run had left behind"
                    if removed
                    else "nothing left behind: every container, volume and"
                    " network the demo made is gone"
                )


async def _scenario(
    runtime: ContainerRuntime,
    image: str,
    keys: int,
    replicas: int,
    timeline: _Timeline,
) -> None:
    spec = ServiceSpec(
        name=_SERVICE,
        image=image,
        topology=Topology.STANDALONE,
        replicas=replicas,
        labels={DEMO_LABEL: "true"},
    )
    async with (
        open_supervisor(runtime, probe_interval=1.0) as supervisor,
        supervisor.open_timeline() as events,
        anyio.create_task_group() as group,
    ):
        group.start_soon(_print_events, events, timeline)

        timeline.step(1, "bring `cache` up standalone")
        await supervisor.apply(spec)
        plan, _ = await supervisor.probe_plan(spec)
        roles = ", ".join(sorted(plan.roles))
        shapes = ", ".join(sorted(plan.topologies))
        timeline.say(
            f"  plan: roles {roles}; topologies {shapes};"
            f" ports {list(plan.ports)}; data {list(plan.data_paths)}"
        )
        await supervisor.wait_converged(_SERVICE, timeout=120)

        timeline.step(2, f"write {keys:,} keys through a Redis client")
        acked = AckedWrites()
        async with open_client(_published_writer(supervisor)) as client:
            await write_batch(client, acked, "seed", keys)
        timeline.say(f"  {len(acked):,} writes acknowledged (OK on a standalone node)")

        writer = ContinuousWriter(acked, lambda: _writer_address(supervisor))
        group.start_soon(writer.run)

        timeline.step(3, f"convert to redundant ({replicas} replica) while writing")
        status = await supervisor.convert(_SERVICE, Topology.REDUNDANT, timeout=180)
        # From here on a write counts only once a replica confirms it; the
        # check below then covers every write counted on an OK before.
        writer.require_replica = True
        if not await writer.confirm_all():
            raise DemoFailedError("the new replica did not confirm earlier writes")
        timeline.say(
            f"  primary {status.primary}; writes now count when WAIT 1 confirms"
        )

        timeline.step(4, "docker kill the primary; rolecall fails over")
        await _kill_primary_and_wait(supervisor, runtime, timeline)
        writer.stop()
        await writer.wait_stopped()
        timeline.say(
            f"  writer: {writer.attempted:,} live writes sent:"
            f" {writer.acknowledged:,} acknowledged,"
            f" {writer.unconfirmed:,} unconfirmed (not counted);"
            f" {len(acked):,} keys acknowledged in all"
        )

        timeline.step(5, "read every acknowledged key from the new primary")
        await _verify(supervisor, acked, timeline)

        timeline.step(6, "convert back to standalone, keeping the primary's data")
        await supervisor.convert(_SERVICE, Topology.STANDALONE, timeout=120)
        await _verify(supervisor, acked, timeline)

        await supervisor.remove(_SERVICE)
        group.cancel_scope.cancel()


async def _kill_primary_and_wait(
    supervisor: Supervisor, runtime: ContainerRuntime, timeline: _Timeline
) -> None:
    status = supervisor.status(_SERVICE)
    old = status.writer
    if old is None:
        raise DemoFailedError("no primary to kill: the service has none")

    async with supervisor.open_timeline() as events:
        timeline.say(f"  docker kill {old.container_name}")
        await runtime.kill_container(old.container_id)
        # Done when the service has converged again around another primary;
        # the timeline printer shows how it got there.
        with anyio.move_on_after(_FAILOVER_WAIT):
            async for event in events:
                if event.kind == "converged" and _has_new_primary(supervisor, old.id):
                    break

    if not _has_new_primary(supervisor, old.id):
        raise DemoFailedError(
            f"no new primary within {_FAILOVER_WAIT}s of killing {old.id}:"
            " run with --log-level info to see what the supervisor did"
        )

    status = supervisor.status(_SERVICE)
    members = [m.id for m in status.members]
    timeline.say(f"  new primary {status.primary}, members {members}")


def _has_new_primary(supervisor: Supervisor, old: str) -> bool:
    status = supervisor.status(_SERVICE)

    return status.converged and status.primary not in (None, old)


async def _verify(
    supervisor: Supervisor, acked: AckedWrites, timeline: _Timeline
) -> None:
    address = _published_writer(supervisor)
    good, bad = await verify(address, acked)
    timeline.say(f"  verified {good}/{len(acked)} keys")
    if good != len(acked):
        raise DemoFailedError(
            f"{len(acked) - good} acknowledged key(s) missing or wrong, e.g. {bad}"
        )


async def _print_events(
    events: AsyncIterator[ServiceEvent], timeline: _Timeline
) -> None:
    async for event in events:
        timeline.event(event)


def _writer_address(supervisor: Supervisor) -> str | None:
    writer = supervisor.status(_SERVICE).writer
    return writer.published if writer is not None else None


def _published_writer(supervisor: Supervisor) -> str:
    address = _writer_address(supervisor)
    if address is None:
        raise DemoFailedError("the service has no primary publishing a port")

    return address


async def remove_demo_objects(runtime: ContainerRuntime) -> int:
    """Remove every container, volume and network the demo created.

    Returns:
        How many objects were removed.
    """
    labels = {DEMO_LABEL: "true"}
    removed = 0
    for container in await runtime.list_containers(labels=labels):
        await runtime.remove_container(container.id)
        removed += 1

    for volume in await runtime.list_volumes(labels=labels):
        await runtime.remove_volume(volume)
        removed += 1

    for network in await runtime.list_networks(labels=labels):
        await runtime.remove_network(network)
        removed += 1

    return removed
