"""The main job on a real engine: Redis services driven by the supervisor.

Every test runs services of the example Redis image through
`open_supervisor` and checks the outcome through Redis itself, on the ports
members publish on loopback, and through the engine (what containers and
volumes exist). What a test creates carries its own case label and is
removed by it; waits follow the supervisor's timeline, never the clock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import anyio
import docker_support
import pytest
import redis.asyncio as aioredis
from attrs import define, field
from docker_support import CASE_LABEL, DockerLab

from rolecall.actors import ContainerInfo, DockerRuntime
from rolecall.hooks_protocol import (
    ConvergenceTimeoutError,
    Role,
    SpecError,
    Topology,
    UnsupportedTopologyError,
)
from rolecall.supervisor import (
    LABEL_MEMBER,
    ServiceEvent,
    ServiceSpec,
    Supervisor,
    open_supervisor,
)

pytestmark = [pytest.mark.docker, pytest.mark.anyio, pytest.mark.timeout(90)]

# Fixtures shared through docker_support; pytest finds them by these names.
docker_case = docker_support.docker_case
redis_image = docker_support.redis_image
nanobox_image = docker_support.nanobox_image

LIMIT = 60  # seconds; far above what any step here needs
PROBE = 0.5  # seconds between health passes
KEYS = 2000
BATCH = 250


@pytest.fixture
def anyio_backend() -> str:
    """The Docker runtime and redis' asyncio client run on asyncio only."""
    return "asyncio"


# -- helpers ----------------------------------------------------------------


def _spec(case: DockerLab, image: str, prefix: str, **options: Any) -> ServiceSpec:
    return ServiceSpec(
        name=case.service(prefix), image=image, labels=case.labels, **options
    )


def _case(case: DockerLab, **labels: str) -> dict[str, str]:
    return {CASE_LABEL: case.labels[CASE_LABEL], **labels}


def _client(address: str | None) -> aioredis.Redis:
    assert address is not None, "the member publishes no port"
    host, port = address.rsplit(":", 1)
    return aioredis.Redis(
        host=host, port=int(port), socket_timeout=10, decode_responses=True
    )


async def _write(address: str | None, prefix: str, count: int) -> dict[str, str]:
    """Write keys; return those Redis answered OK for."""
    written: dict[str, str] = {}
    client = _client(address)
    try:
        for start in range(0, count, BATCH):
            batch = {f"{prefix}:{n}": f"v{n}" for n in range(start, start + BATCH)}
            if await client.mset(batch):
                written.update(batch)
    finally:
        await client.aclose()

    return written


async def _write_confirmed(
    address: str | None, prefix: str, count: int
) -> dict[str, str]:
    """Write keys in batches; return those a replica confirmed by ``WAIT 1``."""
    confirmed: dict[str, str] = {}
    client = _client(address)
    try:
        for start in range(0, count, BATCH):
            batch = {f"{prefix}:{n}": f"v{n}" for n in range(start, start + BATCH)}
            await client.mset(batch)
            if await client.wait(1, 5000) >= 1:
                confirmed.update(batch)
    finally:
        await client.aclose()

    return confirmed


async def _wait_aof_written(address: str | None) -> None:
    """Wait until Redis has handed its append-only buffer to the kernel.

    With ``appendfsync everysec`` Redis answers a write before it is in the
    file, and while a slow fsync is under way it holds the buffer back for
    up to two seconds: a process killed then loses writes it acknowledged
    (the window `everysec` documents). Once the buffer is empty the writes
    are in the kernel's page cache, which outlives the process.
    """
    client = _client(address)
    try:
        with anyio.fail_after(LIMIT):
            # Nothing announces an emptied buffer: INFO is polled.
            while True:
                info = await client.info("persistence")
                if info["aof_buffer_length"] == 0:
                    return
                await anyio.sleep(0.05)
    finally:
        await client.aclose()


async def _read(address: str | None, keys: Mapping[str, str]) -> dict[str, str]:
    """Read ``keys`` back; return those present with the value they hold."""
    client = _client(address)
    try:
        values = await client.mget(list(keys))
    finally:
        await client.aclose()

    return {k: v for k, v in zip(keys, values, strict=True) if v is not None}


async def _events_until(
    events: AsyncIterator[ServiceEvent],
    done: Callable[[ServiceEvent], bool],
    *,
    within: float = LIMIT,
) -> list[ServiceEvent]:
    """Collect timeline events up to and including the first ``done`` one."""
    seen: list[ServiceEvent] = []
    with anyio.fail_after(within):
        async for event in events:
            seen.append(event)
            if done(event):
                return seen

    pytest.fail(f"the timeline ended before the awaited event: {_kinds(seen)}")


def _kinds(events: Sequence[ServiceEvent], *only: str) -> list[str]:
    return [e.kind for e in events if not only or e.kind in only]


def _converged_around_new_primary(
    supervisor: Supervisor, service: str, old: str
) -> Callable[[ServiceEvent], bool]:
    def done(event: ServiceEvent) -> bool:
        status = supervisor.status(service)
        return event.kind == "converged" and status.primary not in (None, old)

    return done


# -- conversion -------------------------------------------------------------


async def test_round_trip_keeps_every_key_and_drops_the_replica(
    docker_runtime: DockerRuntime, docker_case: DockerLab, redis_image: str
) -> None:
    """Standalone, redundant, standalone again: every key stays, the replica goes."""
    spec = _spec(docker_case, redis_image, "trip")
    async with open_supervisor(docker_runtime, probe_interval=PROBE) as supervisor:
        await supervisor.apply(spec)
        solo = (await supervisor.wait_converged(spec.name, timeout=LIMIT)).writer
        assert solo is not None
        written = await _write(solo.published, "trip", KEYS)

        redundant = await supervisor.convert(
            spec.name, Topology.REDUNDANT, timeout=LIMIT
        )
        (replica,) = [m for m in redundant.members if m.role is Role.REPLICA]
        on_replica = await _read(replica.published, written)

        back = await supervisor.convert(spec.name, Topology.STANDALONE, timeout=LIMIT)
        on_standalone = await _read(back.writer and back.writer.published, written)

    containers = await docker_runtime.list_containers(labels=_case(docker_case))
    replica_only = _case(docker_case, **{LABEL_MEMBER: replica.id})
    solo_only = _case(docker_case, **{LABEL_MEMBER: solo.id})

    assert len(written) == KEYS
    assert redundant.primary == solo.id
    assert replica.following == solo.id
    assert on_replica == written
    assert back.primary == solo.id
    assert [m.id for m in back.members] == [solo.id]
    assert on_standalone == written
    assert [c.id for c in containers] == [solo.container_id]
    assert await docker_runtime.list_volumes(labels=replica_only) == []
    assert len(await docker_runtime.list_volumes(labels=solo_only)) == 1


# -- failures ---------------------------------------------------------------


async def test_failover_promotes_a_replica_holding_every_confirmed_write(
    docker_runtime: DockerRuntime, docker_case: DockerLab, redis_image: str
) -> None:
    """A killed primary is fenced; a replica with every confirmed key takes
    over; the old primary's container comes back as a replica of it."""
    spec = _spec(
        docker_case, redis_image, "fail", topology=Topology.REDUNDANT, replicas=2
    )
    async with open_supervisor(docker_runtime, probe_interval=PROBE) as supervisor:
        await supervisor.apply(spec)
        before = await supervisor.wait_converged(spec.name, timeout=LIMIT)
        old = before.writer
        assert old is not None
        replicas_before = {m.id for m in before.members if m.role is Role.REPLICA}
        confirmed = await _write_confirmed(old.published, "fail", KEYS)

        async with supervisor.open_timeline() as events:
            await docker_runtime.kill_container(old.container_id)
            seen = await _events_until(
                events, _converged_around_new_primary(supervisor, spec.name, old.id)
            )

        after = supervisor.status(spec.name)
        new = after.writer
        assert new is not None
        on_new_primary = await _read(new.published, confirmed)
        replicas = [m for m in after.members if m.role is Role.REPLICA]
        on_replicas = {m.id: await _read(m.published, confirmed) for m in replicas}

    old_left = await docker_runtime.list_containers(
        labels=_case(docker_case, **{LABEL_MEMBER: old.id})
    )
    by_kind = {e.kind: e for e in seen}
    key_kinds = ("member_lost", "member_fenced", "failover", "converged")

    assert len(confirmed) == KEYS
    assert _kinds(seen, *key_kinds) == list(key_kinds)
    assert by_kind["member_fenced"].member == old.id
    assert new.id in replicas_before
    assert on_new_primary == confirmed
    assert [c.id for c in old_left] == [old.container_id]
    assert {m.id for m in replicas} == replicas_before - {new.id} | {old.id}
    assert after.member(old.id).container_id == old.container_id
    assert {m.following for m in replicas} == {new.id}
    assert on_replicas == {m.id: confirmed for m in replicas}


async def test_dead_standalone_restarts_in_place_with_its_data(
    docker_runtime: DockerRuntime, docker_case: DockerLab, redis_image: str
) -> None:
    """A killed standalone container starts again and serves from its AOF
    every write Redis had written there."""
    spec = _spec(docker_case, redis_image, "solo")
    async with open_supervisor(docker_runtime, probe_interval=PROBE) as supervisor:
        await supervisor.apply(spec)
        solo = (await supervisor.wait_converged(spec.name, timeout=LIMIT)).writer
        assert solo is not None
        written = await _write(solo.published, "solo", KEYS)
        await _wait_aof_written(solo.published)

        async with supervisor.open_timeline() as events:
            await docker_runtime.kill_container(solo.container_id)
            seen = await _events_until(events, lambda e: e.kind == "converged")

        after = supervisor.status(spec.name).writer
        assert after is not None
        kept = await _read(after.published, written)
        client = _client(after.published)
        try:
            appendonly = await client.config_get("appendonly")
        finally:
            await client.aclose()

    assert "member_restarted" in _kinds(seen)
    assert after.id == solo.id
    assert after.container_id == solo.container_id
    assert after.role is Role.STANDALONE
    assert appendonly == {"appendonly": "yes"}
    assert kept == written


async def test_failing_hook_names_service_member_hook_exit_code_and_stderr(
    docker_runtime: DockerRuntime, docker_case: DockerLab, redis_image: str
) -> None:
    """A configure hook refusing the config is reported with who, what and why."""
    spec = _spec(docker_case, redis_image, "bad", config={"redis": {"dir": "/tmp"}})
    member = f"{spec.name}-1"
    async with open_supervisor(docker_runtime, probe_interval=PROBE) as supervisor:
        async with supervisor.open_timeline() as events:
            await supervisor.apply(spec)
            seen = await _events_until(events, lambda e: e.kind == "step_failed")

        last_error = supervisor.status(spec.name).last_error
        with pytest.raises(ConvergenceTimeoutError) as timed_out:
            await supervisor.wait_converged(spec.name, timeout=1)

    message = seen[-1].detail

    assert f"service {spec.name!r}" in message
    assert f"member {member!r}" in message
    assert "hook 'configure'" in message
    assert "exit code 65" in message
    assert "config redis.dir is set by the hooks and cannot be overridden" in message
    assert last_error == message
    assert timed_out.value.last_error == message
    assert message in str(timed_out.value)


# -- refused specs ----------------------------------------------------------


REFUSED = {
    "unknown-topology": "unknown topology 'ring'",
    "missing-image": "is not on the engine",
    "not-in-plan": "does not support topology",
    "no-replicas": "asks for 0 replicas",
}


@pytest.mark.parametrize("case", list(REFUSED))
async def test_invalid_spec_fails_before_any_container_exists(
    docker_runtime: DockerRuntime,
    docker_case: DockerLab,
    redis_image: str,
    nanobox_image: str,
    case: str,
) -> None:
    """A spec rolecall cannot realise raises SpecError and leaves nothing behind."""

    def build() -> ServiceSpec:
        match case:
            case "unknown-topology":
                return _spec(docker_case, redis_image, "bad", topology="ring")
            case "missing-image":
                image = f"rolecall-test/absent:{docker_case.run_id}"
                return _spec(docker_case, image, "bad")
            case "not-in-plan":
                return _spec(
                    docker_case, nanobox_image, "bad", topology=Topology.REDUNDANT
                )
            case _:
                return _spec(
                    docker_case, redis_image, "bad", topology="redundant", replicas=0
                )

    async with open_supervisor(docker_runtime, probe_interval=PROBE) as supervisor:
        with pytest.raises(SpecError) as raised:
            await supervisor.apply(build())
        statuses = supervisor.statuses()

    labels = _case(docker_case)

    assert REFUSED[case] in str(raised.value)
    assert statuses == []
    assert await docker_runtime.list_containers(labels=labels) == []
    assert await docker_runtime.list_volumes(labels=labels) == []
    assert await docker_runtime.list_networks(labels=labels) == []
    if case == "not-in-plan":
        assert isinstance(raised.value, UnsupportedTopologyError)
        assert raised.value.supported == ("standalone",)


# -- known bugs -------------------------------------------------------------


@define
class _KillAfterListing:
    """A runtime that kills a container right after a listing saw it running.

    It reproduces, every time, the race between the supervisor's look at
    the engine and its next ``status`` probe: the probe then runs in a
    container that stopped after the listing said it ran.
    """

    inner: DockerRuntime
    # Labels of the containers it watches the engine's events for.
    labels: dict[str, str]
    # The container to kill once a listing shows it running; None when done.
    target: str | None = None
    # Set once the target died.
    killed: anyio.Event = field(factory=anyio.Event)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def list_containers(
        self, *, labels: Mapping[str, str]
    ) -> list[ContainerInfo]:
        found = await self.inner.list_containers(labels=labels)
        target = self.target
        if target is None or target not in {c.id for c in found}:
            return found

        self.target = None
        async with self.inner.open_event_stream(labels=self.labels) as events:
            await self.inner.kill_container(target)
            with anyio.fail_after(LIMIT):
                async for event in events:
                    if event.container_id == target and event.action == "die":
                        break
        self.killed.set()

        return found


async def test_primary_dying_during_a_probe_is_reported_lost_and_failed_over(
    docker_runtime: DockerRuntime, docker_case: DockerLab, redis_image: str
) -> None:
    """A primary dying between listing and probe still shows lost and failover."""
    racing = _KillAfterListing(docker_runtime, _case(docker_case))
    spec = _spec(docker_case, redis_image, "race", topology=Topology.REDUNDANT)
    async with open_supervisor(racing, probe_interval=0.2) as supervisor:
        await supervisor.apply(spec)
        old = (await supervisor.wait_converged(spec.name, timeout=LIMIT)).writer
        assert old is not None

        async with supervisor.open_timeline() as events:
            racing.target = old.container_id
            seen = await _events_until(
                events, _converged_around_new_primary(supervisor, spec.name, old.id)
            )
        new = supervisor.status(spec.name).primary

    key_kinds = ("member_lost", "member_fenced", "failover", "converged")
    by_kind = {e.kind: e for e in seen}

    assert racing.killed.is_set()
    assert _kinds(seen, *key_kinds) == list(key_kinds)
    assert by_kind["member_lost"].member == old.id
    assert by_kind["failover"].member == new
