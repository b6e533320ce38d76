"""The demo, run in-process on a real engine: what it prints, what it leaves.

The demo labels everything it creates ``io.rolecall.demo=true`` and removes
all of it at the end, also when cancelled; these tests read the engine to
check. The objects a test plants by hand also carry the test's own labels,
so they go even when the demo fails to remove them.
"""

from __future__ import annotations

import io
import re

import anyio
import docker_support
import pytest
from docker_support import DockerLab

from rolecall._demo import DEMO_LABEL, run_demo
from rolecall.actors import ContainerSpec, DockerRuntime

pytestmark = [pytest.mark.docker, pytest.mark.anyio, pytest.mark.timeout(180)]

# Fixtures shared through docker_support; pytest finds them by these names.
docker_case = docker_support.docker_case
redis_image = docker_support.redis_image

LIMIT = 150  # seconds; the demo takes about ten
KEYS = 2000
DEMO_LABELS = {DEMO_LABEL: "true"}


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
    containers = await runtime.list_containers(labels=DEMO_LABELS)
    volumes = await runtime.list_volumes(labels=DEMO_LABELS)
    networks = await runtime.list_networks(labels=DEMO_LABELS)

    return [c.name for c in containers] + volumes + networks


async def _run_until(out: _Output) -> None:
    """Run the demo until it prints ``out.awaited``, then cancel it."""
    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as group:
            group.start_soon(lambda: run_demo(keys=KEYS, out=out))
            await out.seen.wait()
            group.cancel_scope.cancel()


async def test_demo_verifies_every_acknowledged_key_twice_and_cleans_up(
    docker_runtime: DockerRuntime, redis_image: str
) -> None:
    """The demo fails over, reads back every acknowledged key twice, leaves nothing."""
    out = io.StringIO()
    with anyio.fail_after(LIMIT):
        await run_demo(keys=KEYS, out=out)
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

    await _run_until(out)
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
    docker_runtime: DockerRuntime, redis_image: str
) -> None:
    """A demo cancelled after its service came up still removes all it made."""
    out = _Output("converged: ")

    await _run_until(out)
    cleaned = re.search(r"removed (\d+) object\(s\) the run had left", out.getvalue())

    assert cleaned is not None
    assert int(cleaned[1]) >= 3  # the member's container and volume, the network
    assert await _demo_objects(docker_runtime) == []
