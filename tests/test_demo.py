"""The demo, run in-process on a real engine: what it prints, what it leaves.

The demo labels everything it creates ``io.rolecall.demo=true`` plus the
owner label of its process, and removes all of it at the end, also when
cancelled; these tests read the engine to check. The objects a test plants by
hand also carry the test's own labels, so they go even when the demo fails to
remove them.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import anyio
import docker_support
import pytest
from docker_support import DockerLab

from rolecall._demo import DEMO_LABEL, DemoFailedError, run_demo
from rolecall._demo_scenario import (
    DEMO_OWNER_LABEL,
    demo_labels,
    remove_demo_objects,
)
from rolecall.actors import ContainerSpec, DockerRuntime
from rolecall.supervisor import LABEL_SERVICE

pytestmark = [pytest.mark.docker, pytest.mark.anyio, pytest.mark.timeout(180)]

# Fixtures shared through docker_support; pytest finds them by these names.
docker_case = docker_support.docker_case
redis_image = docker_support.redis_image

LIMIT = 150  # seconds; the demo takes about ten
KEYS = 2000
DEMO_LABELS = {DEMO_LABEL: "true"}
# The ids of a process that lives as long as the machine, and of one that
# has ended: pid 1 started at boot, no pid was ever started at tick 0.
LIVE_OWNER = "1:" + Path("/proc/1/stat").read_text().rsplit(")", 1)[1].split()[19]
ENDED_OWNER = "1:0"


@pytest.fixture
def anyio_backend() -> str:
    """The Docker runtime and redis' asyncio client run on asyncio only."""
    return "asyncio"


class _Output(io.StringIO):
    """The demo's output; `seen` is set once a line holding `awaited` is written."""

    def __init__(self, awaited: str) -> None:
        super().__init__()
        self.awaited = awaited
        self.seen = anyio.Event()

    def write(self, text: str) -> int:
        if self.awaited in text:
            self.seen.set()

        return super().write(text)


async def _demo_objects(runtime: DockerRuntime) -> list[str]:
    """What a demo run by this process made (other runs may share the engine)."""
    mine = demo_labels()
    containers = await runtime.list_containers(labels=mine)
    volumes = await runtime.list_volumes(labels=mine)
    networks = await runtime.list_networks(labels=mine)

    return [c.name for c in containers] + volumes + networks


async def _run_until(out: _Output, service: str) -> None:
    """Run the demo until it prints ``out.awaited``, then cancel it."""
    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as group:
            group.start_soon(lambda: run_demo(keys=KEYS, service=service, out=out))
            await out.seen.wait()
            group.cancel_scope.cancel()


async def test_demo_verifies_every_acknowledged_key_twice_and_cleans_up(
    docker_runtime: DockerRuntime, docker_case: DockerLab, redis_image: str
) -> None:
    """The demo fails over, reads back every acknowledged key twice, leaves nothing."""
    out = io.StringIO()
    with anyio.fail_after(LIMIT):
        await run_demo(keys=KEYS, service=docker_case.service("cache"), out=out)
    text = out.getvalue()
    verified = re.findall(r"verified (\d+)/(\d+) keys", text)
    writer = re.search(
        r"writer: ([\d,]+) live writes sent: ([\d,]+) acknowledged,"
        r" ([\d,]+) unconfirmed \(not counted\); ([\d,]+) keys acknowledged",
        text,
    )
    first = re.search(r"primary (\S+); writes now count", text)
    new = re.search(r"new primary (\S+), members", text)
    assert writer is not None
    assert first is not None
    assert new is not None
    sent, acknowledged, unconfirmed, total = (
        int(n.replace(",", "")) for n in writer.groups()
    )

    assert redis_image in text
    assert len(verified) == 2
    assert verified[0] == verified[1] == (str(total), str(total))
    assert total == KEYS + acknowledged
    assert sent == acknowledged + unconfirmed
    assert unconfirmed >= 1  # the write in flight when the primary died
    assert f"{first[1]:<9} member_fenced: " in text
    assert new[1] != first[1]
    assert await _demo_objects(docker_runtime) == []


async def test_demo_removes_leftovers_of_an_earlier_run_first(
    docker_runtime: DockerRuntime,
    docker_case: DockerLab,
    busybox_image: str,
    redis_image: str,
) -> None:
    """Containers and volumes an earlier demo left behind go before it starts."""
    labels = {**docker_case.labels, **DEMO_LABELS}
    container = await docker_runtime.create_container(
        ContainerSpec(name=docker_case.name("demo"), image=busybox_image, labels=labels)
    )
    volume = docker_case.name("demo-data")
    await docker_runtime.create_volume(volume, labels=labels)
    out = _Output("step 1/")

    await _run_until(out, docker_case.service("cache"))
    removed = re.search(
        r"removed (\d+) leftover object\(s\) of an earlier run", out.getvalue()
    )
    mine = await docker_runtime.list_containers(labels=docker_case.labels)

    assert removed is not None
    assert int(removed[1]) >= 2
    assert container.id not in {c.id for c in mine}
    assert volume not in await docker_runtime.list_volumes(labels=docker_case.labels)
    assert await _demo_objects(docker_runtime) == []


async def test_cancelled_demo_removes_what_it_created(
    docker_runtime: DockerRuntime, docker_case: DockerLab, redis_image: str
) -> None:
    """A demo cancelled after its service came up still removes all it made."""
    out = _Output("converged: ")

    await _run_until(out, docker_case.service("cache"))
    cleaned = re.search(r"removed (\d+) object\(s\) the run had left", out.getvalue())

    assert cleaned is not None
    assert int(cleaned[1]) >= 3  # the member's container and volume, the network
    assert await _demo_objects(docker_runtime) == []


async def test_leftovers_of_an_ended_demo_go_and_a_live_demos_objects_stay(
    docker_runtime: DockerRuntime, docker_case: DockerLab, busybox_image: str
) -> None:
    """Cleaning up removes what a demo whose process ended left, never what a
    demo still running in another process made."""
    made: dict[str, str] = {}
    for owner in (LIVE_OWNER, ENDED_OWNER):
        labels = {**docker_case.labels, **DEMO_LABELS, DEMO_OWNER_LABEL: owner}
        container = await docker_runtime.create_container(
            ContainerSpec(
                name=docker_case.name("demo"), image=busybox_image, labels=labels
            )
        )
        volume = docker_case.name("demo-data")
        await docker_runtime.create_volume(volume, labels=labels)
        made[owner] = container.id
        made[f"{owner} volume"] = volume

    await remove_demo_objects(docker_runtime)
    containers = {
        c.id for c in await docker_runtime.list_containers(labels=docker_case.labels)
    }
    volumes = set(await docker_runtime.list_volumes(labels=docker_case.labels))

    assert containers == {made[LIVE_OWNER]}
    assert volumes == {made[f"{LIVE_OWNER} volume"]}


async def test_demo_refuses_a_service_name_a_live_demo_runs(
    docker_runtime: DockerRuntime,
    docker_case: DockerLab,
    busybox_image: str,
    redis_image: str,
) -> None:
    """A second demo on the same engine and service name stops with a clear
    error instead of taking over the first one's containers."""
    service = docker_case.service("cache")
    labels = {
        **docker_case.labels,
        **DEMO_LABELS,
        DEMO_OWNER_LABEL: LIVE_OWNER,
        LABEL_SERVICE: service,
    }
    twin = await docker_runtime.create_container(
        ContainerSpec(name=docker_case.name("demo"), image=busybox_image, labels=labels)
    )

    with anyio.fail_after(LIMIT), pytest.raises(DemoFailedError) as raised:
        await run_demo(keys=KEYS, service=service, out=io.StringIO())
    left = {
        c.id for c in await docker_runtime.list_containers(labels=docker_case.labels)
    }

    assert f"another demo (process 1) runs a service named {service!r}" in str(
        raised.value
    )
    assert left == {twin.id}
