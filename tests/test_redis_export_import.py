"""The Redis image's export and import hooks, across two real engines.

One standalone service runs on the default engine, another on the
harness's second engine (reached over TLS), each under its own supervisor.
Keys written into the first are exported as a snapshot, the directory is
copied to the second through the engines' archive API, and imported there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import docker_support
import pytest
import redis.asyncio as aioredis
from docker_support import DockerLab
from second_engine import SecondEngine

from rolecall.actors import DockerRuntime, copy_directory, open_engine_runtime
from rolecall.hooks_protocol import HookBadPayloadError, HookError, HookName
from rolecall.supervisor import (
    ServiceEvent,
    ServiceSpec,
    Supervisor,
    open_supervisor,
    run_member_hook,
)

pytestmark = [pytest.mark.docker, pytest.mark.anyio, pytest.mark.timeout(180)]

docker_case = docker_support.docker_case
redis_image = docker_support.redis_image

LIMIT = 60  # seconds; far above what any step here needs
PROBE = 0.5
KEYS = 5000
ENV = {"REDIS_PASSWORD": "export-import-secret"}


@pytest.fixture
def anyio_backend() -> str:
    """The Docker runtime and redis' asyncio client run on asyncio only."""
    return "asyncio"


@pytest.fixture
async def engine2(
    second_engine: SecondEngine, redis_image: str, docker_case: DockerLab
) -> AsyncIterator[DockerRuntime]:
    """A runtime on the second engine, over TLS, with the Redis image; what
    the test made there is removed after it."""
    second_engine.load_image(redis_image)
    async with open_engine_runtime(second_engine.engine_config()) as runtime:
        yield runtime

    case = docker_case.labels[docker_support.CASE_LABEL]
    second_engine.remove_labelled(f"{docker_support.CASE_LABEL}={case}")


def _client(address: str | None) -> aioredis.Redis:
    assert address is not None, "the member publishes no port"
    host, port = address.rsplit(":", 1)
    return aioredis.Redis(
        host=host,
        port=int(port),
        password=ENV["REDIS_PASSWORD"],
        socket_timeout=10,
        decode_responses=True,
    )


async def _write(address: str | None, *, replicas: int = 0) -> dict[str, str]:
    """Write the keys (and a hash, and a key in database 3); with
    ``replicas``, return once that many replicas confirmed them all."""
    keys = {f"k:{n}": f"v{n}-{'x' * (n % 50)}" for n in range(KEYS)}
    client = _client(address)
    try:
        assert await client.mset(keys)
        await client.hset("h", mapping={"a": "1", "b": "2"})
        await client.select(3)
        await client.set("in-db-3", "yes")
        if replicas:
            assert await client.wait(replicas, LIMIT * 1000) >= replicas
    finally:
        await client.aclose()

    return keys


async def _read(address: str | None, keys: dict[str, str]) -> dict[str, str]:
    client = _client(address)
    try:
        values = await client.mget(list(keys))
        assert await client.hgetall("h") == {"a": "1", "b": "2"}
        await client.select(3)
        assert await client.get("in-db-3") == "yes"
    finally:
        await client.aclose()

    return {key: value for key, value in zip(keys, values, strict=True) if value}


async def _until_converged(
    events: AsyncIterator[ServiceEvent],
) -> AsyncIterator[ServiceEvent]:
    """The timeline's events up to and including the next ``converged``."""
    async for event in events:
        yield event
        if event.kind == "converged":
            return


async def _standalone(supervisor: Supervisor, spec: ServiceSpec) -> tuple[str, str]:
    await supervisor.apply(spec)
    writer = (await supervisor.wait_converged(spec.name, timeout=LIMIT)).writer
    assert writer is not None
    assert writer.published is not None

    return writer.id, writer.container_name


async def test_a_snapshot_moves_to_a_service_on_another_engine(
    docker_runtime: DockerRuntime,
    engine2: DockerRuntime,
    docker_case: DockerLab,
    redis_image: str,
) -> None:
    """Every key written before the export is present after the import on
    the other engine, and still there after that member's container dies
    and comes back on its rebuilt AOF."""
    source = ServiceSpec(
        name=docker_case.service("src"), image=redis_image, labels=docker_case.labels,
        env=ENV, secret_keys=frozenset(ENV),
    )  # fmt: skip
    target = ServiceSpec(
        name=docker_case.service("dst"), image=redis_image, labels=docker_case.labels,
        env=ENV, secret_keys=frozenset(ENV),
    )  # fmt: skip
    async with (
        open_supervisor(docker_runtime, probe_interval=PROBE) as here,
        open_supervisor(engine2, probe_interval=PROBE) as there,
    ):
        src_id, src_container = await _standalone(here, source)
        dst_id, dst_container = await _standalone(there, target)
        keys = await _write(here.status(source.name).writer.published)

        exported = await run_member_hook(
            here, source.name, src_id, HookName.EXPORT,
            {"path": "/data/exports/e1"}, timeout=LIMIT,
        )  # fmt: skip
        again = await run_member_hook(
            here, source.name, src_id, "export", {"path": "/data/exports/e1"},
            timeout=LIMIT,
        )  # fmt: skip
        await engine2.exec(
            dst_container, ["mkdir", "-p", "/tmp/incoming"],
            timeout=LIMIT, max_stdout=0, max_stderr=1000,
        )  # fmt: skip
        copied = await copy_directory(
            docker_runtime, src_container, "/data/exports/e1",
            target=engine2, target_id=dst_container, target_path="/tmp/incoming",
        )  # fmt: skip
        imported = await run_member_hook(
            there, target.name, dst_id, HookName.IMPORT,
            {"path": "/tmp/incoming"}, timeout=LIMIT,
        )  # fmt: skip
        twice = await run_member_hook(
            there, target.name, dst_id, "import", {"path": "/tmp/incoming"},
            timeout=LIMIT,
        )  # fmt: skip
        on_target = await _read(there.status(target.name).writer.published, keys)

        with pytest.raises(HookError, match="replace"):
            await run_member_hook(
                here, source.name, src_id, "import", {"path": "/data/exports/e1"},
                timeout=LIMIT,
            )  # fmt: skip

        async with there.open_timeline() as events:
            await engine2.kill_container(dst_container)
            with anyio.fail_after(LIMIT):
                kinds = [event.kind async for event in _until_converged(events)]
        restarted = there.status(target.name).writer
        assert restarted is not None
        after_restart = await _read(restarted.published, keys)

    assert exported.data["taken"] is True
    assert exported.data["keys"] == KEYS + 2
    assert exported.data["files"] == ["dump.rdb", "rolecall-export.json"]
    assert again.data["taken"] is False
    assert again.data["sha256"] == exported.data["sha256"]
    assert copied.bytes_copied > exported.data["bytes"]
    assert imported.data["imported"] is True
    assert imported.data["keys"] == KEYS + 2
    assert twice.data["imported"] is False
    assert on_target == keys
    assert "member_restarted" in kinds
    assert after_restart == keys


async def test_import_refuses_a_replica_a_damaged_snapshot_and_own_files(
    docker_runtime: DockerRuntime, docker_case: DockerLab, redis_image: str
) -> None:
    """A replica refuses an import; a snapshot that does not match its
    metadata is refused and the member keeps serving its own (empty) data;
    an export into Redis' own directory is a bad payload; an import cut
    short after staging completes when run again."""
    pair = ServiceSpec(
        name=docker_case.service("pair"), image=redis_image,
        labels=docker_case.labels, topology="redundant", env=ENV,
    )  # fmt: skip
    fresh = ServiceSpec(
        name=docker_case.service("fresh"), image=redis_image,
        labels=docker_case.labels, env=ENV,
    )  # fmt: skip
    async with open_supervisor(docker_runtime, probe_interval=PROBE) as here:
        await here.apply(pair)
        status = await here.wait_converged(pair.name, timeout=LIMIT)
        assert status.writer is not None
        await _write(status.writer.published, replicas=1)
        (replica,) = [m for m in status.members if m is not status.writer]
        # A replica's snapshot is as good as the primary's once it synced.
        exported = await run_member_hook(
            here, pair.name, replica.id, "export", {"path": "/data/exports/r"},
            timeout=LIMIT,
        )  # fmt: skip
        with pytest.raises(HookError, match="replica"):
            await run_member_hook(
                here, pair.name, replica.id, "import", {"path": "/data/exports/r"},
                timeout=LIMIT,
            )  # fmt: skip
        with pytest.raises(HookBadPayloadError, match="own"):
            await run_member_hook(
                here, pair.name, replica.id, "export", {"path": "/data/rolecall/x"},
                timeout=LIMIT,
            )  # fmt: skip

        solo_id, solo_container = await _standalone(here, fresh)
        await docker_runtime.exec(
            solo_container, ["mkdir", "-p", "/tmp/in"],
            timeout=LIMIT, max_stdout=0, max_stderr=1000,
        )  # fmt: skip
        await copy_directory(
            docker_runtime, replica.container_name, "/data/exports/r",
            target=docker_runtime, target_id=solo_container, target_path="/tmp/in",
        )  # fmt: skip
        flip = "printf Z | dd of=/tmp/in/dump.rdb bs=1 seek=64 conv=notrunc"
        await docker_runtime.exec(
            solo_container, ["sh", "-c", flip],
            timeout=LIMIT, max_stdout=0, max_stderr=1000,
        )  # fmt: skip
        with pytest.raises(HookError, match="damaged"):
            await run_member_hook(
                here, fresh.name, solo_id, "import", {"path": "/tmp/in"},
                timeout=LIMIT,
            )  # fmt: skip
        client = _client(here.status(fresh.name).writer.published)
        try:
            left = await client.dbsize()
        finally:
            await client.aclose()

        # An import cut short once the snapshot was staged resumes from there.
        await copy_directory(
            docker_runtime, replica.container_name, "/data/exports/r",
            target=docker_runtime, target_id=solo_container, target_path="/tmp/in",
        )  # fmt: skip
        await docker_runtime.exec(
            solo_container, ["python3", "-c", _CUT_SHORT_AFTER_STAGING],
            timeout=LIMIT, max_stdout=0, max_stderr=1000,
        )  # fmt: skip
        resumed = await run_member_hook(
            here, fresh.name, solo_id, "import", {"path": "/tmp/in"}, timeout=LIMIT
        )

    assert exported.data["keys"] == KEYS + 2
    assert left == 0
    assert resumed.data["imported"] is True
    assert resumed.data["keys"] == KEYS + 2


# What the import hook leaves when it is killed right after staging: the
# snapshot under /data/rolecall and a note that the import is under way.
_CUT_SHORT_AFTER_STAGING = """import json, shutil
meta = json.load(open("/tmp/in/rolecall-export.json"))
shutil.copy("/tmp/in/dump.rdb", "/data/rolecall/import.rdb")
state = json.load(open("/data/rolecall/state.json"))
state["importing"] = meta["sha256"]
json.dump(state, open("/data/rolecall/state.json", "w"))
"""
