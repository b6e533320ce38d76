"""Moving a Redis service between two real engines while a client writes.

The default engine and a second ``dockerd`` (``second_engine``: TCP with
TLS client certificates) run on this machine; members of a service that
spans them reach each other at each engine's bridge address. A client
writes to the writer's loopback port all through the move, reconnecting to
whichever member status names the writer; every write Redis acknowledged
must be on the new writer afterwards.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import docker_support
import pytest
import redis.asyncio as aioredis
import redis.exceptions
from attrs import define, field
from docker_support import DockerLab
from runner_support import open_runner_process, rolecall, spec_text
from second_engine import SecondEngine

from rolecall._inspect import remove_service
from rolecall.actors import DockerRuntime, open_docker_runtime, open_engine_runtime
from rolecall.hooks_protocol import EngineUnavailableError, Role
from rolecall.supervisor import (
    LABEL_SERVICE,
    ServiceSpec,
    Supervisor,
    open_supervisor,
)

pytestmark = [pytest.mark.docker, pytest.mark.anyio, pytest.mark.timeout(300)]

docker_case = docker_support.docker_case
redis_image = docker_support.redis_image
second_engine = docker_support.second_engine

LIMIT = 180  # seconds; far above what a move of a small service needs
PROBE = 0.5
ENGINE2 = "engine2"


@pytest.fixture
def anyio_backend() -> str:
    """The Docker runtime and redis' asyncio client run on asyncio only."""
    return "asyncio"


def _bridge_gateway() -> str:
    """The default engine's bridge address: where containers of the second
    engine reach ports the default engine publishes there."""
    shown = subprocess.run(
        ["docker", "network", "inspect", "bridge", "-f",
         "{{(index .IPAM.Config 0).Gateway}}"],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    return shown.stdout.strip()


@asynccontextmanager
async def _plane(engine: SecondEngine) -> AsyncIterator[Supervisor]:
    config = engine.engine_config(ENGINE2)
    peers = {"default": _bridge_gateway(), ENGINE2: engine.peer_address}
    async with (
        open_docker_runtime() as near,
        open_engine_runtime(config) as far,
        open_supervisor(
            near,
            engines={ENGINE2: far},
            peer_addresses=peers,
            probe_interval=PROBE,
        ) as supervisor,
    ):
        yield supervisor


@define
class _Writer:
    """Writes ``SET k<n> n`` to the service's writer until stopped."""

    supervisor: Supervisor
    service: str
    # Keys Redis answered OK for.
    acked: list[str] = field(factory=list)
    # The longest time between two acknowledged writes, in seconds.
    longest_gap: float = 0.0
    stop: anyio.Event = field(factory=anyio.Event)
    # Set (and replaced) after every acknowledged write.
    _wrote: anyio.Event = field(factory=anyio.Event)

    async def wait_acked(self, count: int) -> None:
        """Wait until ``count`` writes were acknowledged."""
        while len(self.acked) < count:
            await self._wrote.wait()

    async def run(self) -> None:
        number, last_ok = 0, time.monotonic()
        client: aioredis.Redis | None = None
        while not self.stop.is_set():
            if client is None:
                client = self._connect()
                if client is None:
                    await anyio.sleep(0.05)  # paces reconnects during the switch
                    continue

            key = f"k{number}"
            try:
                if await client.set(key, str(number)):
                    now = time.monotonic()
                    self.longest_gap = max(self.longest_gap, now - last_ok)
                    last_ok = now
                    self.acked.append(key)
                    number += 1
                    wrote, self._wrote = self._wrote, anyio.Event()
                    wrote.set()
            except (redis.exceptions.RedisError, OSError):
                await client.aclose()
                client = None
                await anyio.sleep(0.02)  # paces retries of a refused write

        if client is not None:
            await client.aclose()

    def _connect(self) -> aioredis.Redis | None:
        writer = self.supervisor.status(self.service).writer
        if writer is None or writer.published is None:
            return None

        host, port = writer.published.rsplit(":", 1)
        return aioredis.Redis(
            host=host, port=int(port), socket_timeout=2, socket_connect_timeout=2
        )


async def _present(address: str, keys: list[str]) -> int:
    host, port = address.rsplit(":", 1)
    client = aioredis.Redis(host=host, port=int(port), socket_timeout=10)
    try:
        values = []
        for start in range(0, len(keys), 1000):
            values += await client.mget(keys[start : start + 1000])
    finally:
        await client.aclose()

    return sum(1 for value in values if value is not None)


async def _remove_everywhere(engine: SecondEngine, service: str) -> None:
    """Remove the service from both engines once no hook runs any more
    (the control plane has stopped)."""
    async with (
        open_docker_runtime() as near,
        open_engine_runtime(engine.engine_config(ENGINE2)) as far,
    ):
        for runtime in (near, far):
            await remove_service(runtime, service, owner=None, take_over=True)


async def _containers_on_default(service: str) -> list[str]:
    async with open_docker_runtime() as near:
        found = await near.list_containers(labels={LABEL_SERVICE: service})

    return [info.name for info in found]


async def test_redis_moves_to_the_tls_engine_by_replication_while_a_client_writes(
    docker_case: DockerLab, redis_image: str, second_engine: SecondEngine
) -> None:
    """A redundant Redis service moves to the second engine: every write it
    acknowledged is on the new writer, the old engine keeps nothing of it,
    and the write downtime is printed."""
    second_engine.load_image(redis_image)
    name = docker_case.service("mv")
    spec = ServiceSpec(
        name=name,
        image=redis_image,
        topology="redundant",
        replicas=1,
        labels=docker_case.labels,
    )
    try:
        with anyio.fail_after(LIMIT):
            async with _plane(second_engine) as supervisor:
                await supervisor.apply(spec)
                await supervisor.wait_converged(name, timeout=LIMIT)
                writer = _Writer(supervisor, name)
                async with anyio.create_task_group() as group:
                    group.start_soon(writer.run)
                    await writer.wait_acked(200)
                    started = time.monotonic()
                    after = await supervisor.move(name, ENGINE2, timeout=LIMIT)
                    took = time.monotonic() - started
                    await writer.wait_acked(len(writer.acked) + 200)
                    writer.stop.set()

            new = after.writer
            assert new is not None
            assert new.published is not None
            present = await _present(new.published, writer.acked)
            left = await _containers_on_default(name)
    finally:
        await _remove_everywhere(second_engine, name)

    print(  # noqa: T201  (the measured figures are the test's report)
        f"\nmove by replication: {took:.1f} s, {len(writer.acked)} writes"
        f" acknowledged, longest write gap {writer.longest_gap * 1000:.0f} ms"
    )
    assert after.engine == ENGINE2
    assert {m.engine for m in after.members} == {ENGINE2}
    assert sorted(m.role for m in after.members if m.role) == [
        Role.PRIMARY,
        Role.REPLICA,
    ]
    assert present == len(writer.acked)
    assert left == []


async def test_a_move_to_an_engine_that_does_not_answer_leaves_the_service(
    docker_case: DockerLab, redis_image: str
) -> None:
    """A target engine nobody listens on fails the move before it starts;
    the service keeps its members where they were."""
    name = docker_case.service("mvdown")
    spec = ServiceSpec(name=name, image=redis_image, labels=docker_case.labels)
    gone = _unreachable()
    with anyio.fail_after(LIMIT):
        async with (
            open_docker_runtime() as near,
            open_supervisor(
                near,
                engines={"gone": gone},
                peer_addresses={"default": _bridge_gateway(), "gone": "10.9.9.9"},
                probe_interval=PROBE,
            ) as supervisor,
        ):
            try:
                await supervisor.apply(spec)
                before = await supervisor.wait_converged(name, timeout=LIMIT)
                with pytest.raises(EngineUnavailableError):
                    await supervisor.move(name, "gone", timeout=LIMIT)
                after = supervisor.status(name)
            finally:
                await supervisor.remove(name)
                await gone.aclose()

    assert after.moving is None
    assert [(m.id, m.engine, m.container_id) for m in after.members] == [
        (m.id, "default", m.container_id) for m in before.members
    ]


def _unreachable() -> DockerRuntime:
    """A runtime on a unix socket nothing listens on."""
    return DockerRuntime("unix:///nonexistent/rolecall-test/docker.sock", name="gone")


@pytest.mark.parametrize(
    "crash_after", ["member_created#2", "move_caught_up", "move_switched"]
)
async def test_a_runner_killed_mid_move_finishes_it_on_restart(
    tmp_path: Path,
    docker_case: DockerLab,
    redis_image: str,
    second_engine: SecondEngine,
    crash_after: str,
) -> None:
    """``rolecall run`` killed with SIGKILL at a step of a move, then started
    again: the move finishes, every key is on the writer on the second
    engine, and the default engine keeps nothing of the service."""
    second_engine.load_image(redis_image)
    service = docker_case.service("mvcrash")
    spec = tmp_path / "spec.toml"
    spec.write_text(
        _engines_text(second_engine)
        + spec_text(service, redis_image, docker_case.labels),
        encoding="utf-8",
    )
    state = tmp_path / "state"
    try:
        crash = {"ROLECALL_CRASH_AFTER": crash_after}
        async with open_runner_process(spec, state, env=crash) as runner:
            await runner.wait_for("converged", service=service)
            keys = await _fill(await _writer_address(state))
            moved = await rolecall("move", service, ENGINE2, "--state-dir", str(state))
            code = await runner.wait_exit()

        async with open_runner_process(spec, state) as again:
            finished = await again.wait_for("move_finished", service=service)
            after = again.lines.index(finished)
            await again.wait_for("converged", service=service, after=after)
            shown = await _status(state)
            present = await _present(await _writer_address(state), keys)
        left = await _containers_on_default(service)
    finally:
        await _remove_everywhere(second_engine, service)

    assert code == -signal.SIGKILL
    assert moved.returncode != 0  # its runner died under it
    assert shown["engine"] == ENGINE2
    assert [m["engine"] for m in shown["members"]] == [ENGINE2]
    assert present == len(keys)
    assert left == []


def _engines_text(engine: SecondEngine) -> str:
    return (
        "[engines.default]\n"
        f'peer_address = "{_bridge_gateway()}"\n\n'
        f"[engines.{ENGINE2}]\n"
        f'url = "{engine.url}"\n'
        f'tls = {{ ca = "{engine.ca}", cert = "{engine.cert}",'
        f' key = "{engine.key}" }}\n'
        f'peer_address = "{engine.peer_address}"\n\n'
    )


async def _status(state: Path) -> dict[str, Any]:
    shown = await rolecall("status", "--json", "--state-dir", str(state))
    assert shown.returncode == 0, shown.stderr
    (service,) = json.loads(shown.stdout)
    return dict(service)


async def _writer_address(state: Path) -> str:
    status = await _status(state)
    writer = next(m for m in status["members"] if m["id"] == status["primary"])
    return str(writer["published"])


async def _fill(address: str) -> list[str]:
    host, port = address.rsplit(":", 1)
    client = aioredis.Redis(host=host, port=int(port), socket_timeout=10)
    keys = [f"key:{n}" for n in range(500)]
    try:
        await client.mset(dict.fromkeys(keys, "v"))
    finally:
        await client.aclose()

    return keys
