"""The main job, end to end on a real engine: ``rolecall demo``.

The scenario is `rolecall._demo_scenario`'s; this module supplies Redis: the
image, and a workload whose writes are keys. A key counts when Redis answers
OK on a standalone node, and once a replica exists only when ``WAIT 1``
confirms a replica has it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TextIO

from attrs import define, field

from rolecall.actors import open_docker_runtime
from rolecall.hooks_protocol import Topology
from rolecall.supervisor import ServiceSpec

from ._demo_client import (
    AckedWrites,
    ContinuousWriter,
    open_client,
    verify,
    write_batch,
)
from ._demo_scenario import (
    DEMO_LABEL,
    DemoFailedError,
    Timeline,
    demo_labels,
    remove_demo_objects,
    run_scenario,
)
from ._images import ensure_image

__all__ = ["DEMO_LABEL", "DemoFailedError", "remove_demo_objects", "run_demo"]


@define
class _RedisWorkload:
    """Keys written through a Redis client that never retries by itself."""

    find_primary: Callable[[], str | None]
    unit: str = "keys"
    acked: AckedWrites = field(factory=AckedWrites)
    writer: ContinuousWriter = field(init=False)

    def __attrs_post_init__(self) -> None:
        self.writer = ContinuousWriter(self.acked, self.find_primary)

    async def seed(self, address: str, count: int) -> str:
        async with open_client(address) as client:
            await write_batch(client, self.acked, "seed", count)

        return f"{len(self.acked):,} writes acknowledged (OK on a standalone node)"

    async def run(self) -> None:
        await self.writer.run()

    def stop(self) -> None:
        self.writer.stop()

    async def wait_stopped(self) -> None:
        await self.writer.wait_stopped()

    async def now_redundant(self, primary: str) -> str:
        # From here on a write counts only once a replica confirms it; the
        # check then covers every write counted on an OK before.
        self.writer.require_replica = True
        if not await self.writer.confirm_all():
            raise DemoFailedError("the new replica did not confirm earlier writes")

        return f"primary {primary}; writes now count when WAIT 1 confirms"

    def summary(self) -> str:
        writer = self.writer
        return (
            f"writer: {writer.attempted:,} live writes sent:"
            f" {writer.acknowledged:,} acknowledged,"
            f" {writer.unconfirmed:,} unconfirmed (not counted);"
            f" {len(self.acked):,} keys acknowledged in all"
        )

    async def verify(self, address: str) -> tuple[int, int, list[str]]:
        good, bad = await verify(address, self.acked)
        return good, len(self.acked), bad


async def run_demo(
    *,
    keys: int = 10_000,
    replicas: int = 1,
    service: str = "cache",
    docker_url: str | None = None,
    out: TextIO = sys.stdout,
) -> None:
    """Run the demo scenario with Redis; return when every check passed.

    Everything it creates carries ``io.rolecall.demo=true`` and is removed
    at the end, also on failure or cancellation (Ctrl-C); leftovers of an
    ended earlier run are removed first.

    Args:
        keys: Keys written before the service changes shape.
        replicas: Replicas of the redundant shape.
        service: The service's name.
        docker_url: The engine (``DOCKER_HOST`` form); the default socket
            when ``None``.
        out: Where the timeline goes.

    Raises:
        DemoFailedError: A check failed (a key lost, no failover).
        EngineUnavailableError: No Docker engine answers at ``docker_url``.
        RolecallError: rolecall could not do its part (engine, image, hook).
    """
    timeline = Timeline(out)
    # The engine first: when none answers, say so rather than fail the build.
    async with open_docker_runtime(docker_url) as runtime:
        timeline.say("making sure the example Redis image exists (built once)")
        image = await ensure_image("redis", docker_host=docker_url)
        timeline.say(f"image {image}")
        spec = ServiceSpec(
            name=service,
            image=image,
            topology=Topology.STANDALONE,
            replicas=replicas,
            labels=demo_labels(),
        )
        await run_scenario(runtime, spec, _RedisWorkload, count=keys, timeline=timeline)
