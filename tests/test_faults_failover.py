"""Failover and role changes under faults, on a real engine with real Redis.

Writes go through Redis on the ports members publish on loopback; a sampler
asks every member ``ROLE`` while a test runs, so that two members taking
writes at once would be seen. Pauses use the engine's own ``pause``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import anyio
import docker_support
import faults_support
import pytest
import redis.asyncio as aioredis
import redis.exceptions
from attrs import define, field
from docker_support import DockerLab
from faults_support import (
    GATE_GO,
    GATE_STARTED,
    LIMIT,
    MiB,
    PausingRuntime,
    events_until,
    fault_spec,
    sh,
)
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from rolecall.actors import ApplyRole, DockerRuntime, RunHook, Superseded
from rolecall.hooks_protocol import HookName, Role, RolecallError
from rolecall.supervisor import (
    ServiceEvent,
    Supervisor,
    SwitchoverSupersededError,
    open_supervisor,
)

pytestmark = [pytest.mark.docker, pytest.mark.anyio, pytest.mark.timeout(150)]

docker_case = docker_support.docker_case
redis_image = docker_support.redis_image
fault_image = faults_support.fault_image

PROBE = 0.2


@pytest.fixture
def anyio_backend() -> str:
    """The Docker runtime and redis' asyncio client run on asyncio only."""
    return "asyncio"


# -- helpers ----------------------------------------------------------------


def _client(address: str | None) -> aioredis.Redis:
    assert address is not None, "the member publishes no port"
    host, port = address.rsplit(":", 1)
    return aioredis.Redis(
        host=host, port=int(port), socket_timeout=5, decode_responses=True
    )


async def _write_confirmed(address: str | None, prefix: str, count: int) -> set[str]:
    """Write keys; return those a replica confirmed with ``WAIT 1``."""
    client = _client(address)
    try:
        keys = {f"{prefix}:{n}": str(n) for n in range(count)}
        await client.mset(keys)
        assert await client.wait(1, 5000) >= 1
    finally:
        await client.aclose()

    return set(keys)


async def _present(address: str | None, keys: set[str]) -> set[str]:
    client = _client(address)
    try:
        values = await client.mget(sorted(keys))
    finally:
        await client.aclose()

    return {k for k, v in zip(sorted(keys), values, strict=True) if v is not None}


@define
class RoleSampler:
    """Asks every member of a service ``ROLE`` every 20 ms, and keeps the most
    members seen answering ``master`` at the same time."""

    supervisor: Supervisor
    service: str
    # The most members that answered master in one round.
    most_masters: int = 0
    # Rounds in which every member answered or was unreachable.
    rounds: int = 0
    # Members that answered master in the round with the most.
    worst: list[str] = field(factory=list)

    async def run(self) -> None:
        """Sample until cancelled."""
        while True:
            masters: list[str] = []
            async with anyio.create_task_group() as round_:
                for member in self.supervisor.status(self.service).members:
                    round_.start_soon(self._ask, member.id, member.published, masters)

            self.rounds += 1
            if len(masters) > self.most_masters:
                self.most_masters, self.worst = len(masters), masters

            await anyio.sleep(0.02)  # paces the sampling

    async def _ask(self, member: str, address: str | None, masters: list[str]) -> None:
        if await self._is_master(address):
            masters.append(member)

    async def _is_master(self, address: str | None) -> bool:
        if address is None:
            return False

        host, port = address.rsplit(":", 1)
        client = aioredis.Redis(
            host=host,
            port=int(port),
            socket_timeout=0.15,
            socket_connect_timeout=0.15,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            role = await client.execute_command("ROLE")
        except (redis.exceptions.RedisError, OSError):
            return False  # paused, killed or not up: it takes no writes now
        finally:
            await client.aclose()

        return bool(role) and role[0] in (b"master", "master")


@asynccontextmanager
async def _sampled(supervisor: Supervisor, service: str) -> AsyncIterator[RoleSampler]:
    sampler = RoleSampler(supervisor, service)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(sampler.run)
        yield sampler
        tasks.cancel_scope.cancel()


def _epochs(events: list[ServiceEvent], member: str) -> list[int]:
    """The epochs of the roles applied to ``member``, in timeline order."""
    return [
        int(str(e.fields["epoch"]))
        for e in events
        if e.kind == "role_applied" and e.member == member
    ]


# -- case 7: OOM and SIGKILL --------------------------------------------------


async def test_oom_and_sigkill_both_give_137_and_are_told_apart(
    docker_runtime: DockerRuntime, docker_case: DockerLab, redis_image: str
) -> None:
    """Case 7: an OOM kill and a SIGKILL both end the container with 137; the
    first is reported as oom, the second as killed, the second within 1 s,
    and a transient member is restarted after each: neither is a clean stop."""
    spec = fault_spec(
        docker_case,
        redis_image,
        "oom",
        memory_limit=96 * MiB,
        supervision={"restart": "transient"},
    )
    member = f"{spec.name}-1"
    async with open_supervisor(docker_runtime, probe_interval=PROBE) as supervisor:
        await supervisor.apply(spec)
        before = await supervisor.wait_converged(spec.name, timeout=LIMIT)
        container = before.member(member).container_id
        async with supervisor.open_timeline() as events:
            # The main process is the kernel's first choice, then memory runs out.
            await sh(
                docker_runtime,
                container,
                "echo 1000 > /proc/$(pgrep -x sleep)/oom_score_adj",
            )
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(_hog, docker_runtime, container)
                oom = await events_until(events, lambda e: e.kind == "member_lost")
            await events_until(events, lambda e: e.kind == "converged")

            killed_at = anyio.current_time()
            await docker_runtime.kill_container(container)
            killed = await events_until(events, lambda e: e.kind == "member_lost")
            noticed = anyio.current_time() - killed_at
            after_kill = await events_until(events, lambda e: e.kind == "converged")
        after = supervisor.status(spec.name)

    first, second = oom[-1].fields, killed[-1].fields
    assert (first["exit_code"], first["oom_killed"], first["cause"]) == (
        137,
        True,
        "oom",
    )
    assert (second["exit_code"], second["oom_killed"], second["cause"]) == (
        137,
        False,
        "killed",
    )
    assert noticed < 1.0
    assert "member_restarted" in [e.kind for e in after_kill]
    assert after.member(member).role is Role.STANDALONE
    assert after.member(member).container_id == container


async def _hog(runtime: DockerRuntime, container: str) -> None:
    # Six processes of 20 MiB each: none is bigger than the main process
    # weighs with its oom_score_adj of 1000, so that one is killed. The exec
    # dies with its container; how it ends does not matter here.
    hog = 'import time; b = b"x" * (20 << 20); time.sleep(60)'
    script = f"for i in 1 2 3 4 5 6; do python3 -c '{hog}' & done; wait"
    with contextlib.suppress(RolecallError):
        await runtime.exec(
            container,
            ["sh", "-c", script],
            timeout=LIMIT,
            max_stdout=MiB,
            max_stderr=MiB,
        )


# -- case 9: a lagging replica and an empty one -------------------------------


async def test_the_lagging_synced_replica_is_promoted_never_the_empty_one(
    docker_runtime: DockerRuntime, docker_case: DockerLab, fault_image: str
) -> None:
    """Case 9: with one replica behind (paused while writes went on) and one
    that never synced, killing the primary promotes the lagging one, which
    holds every confirmed write; the empty one is never promoted. Its link
    is down throughout, so the service reports itself degraded, never
    converged."""
    name = docker_case.service("lag")
    empty = f"{name}-3"
    spec = fault_spec(
        docker_case,
        fault_image,
        "lag",
        name=name,
        topology="redundant",
        replicas=2,
        config={"fault": {empty: {"role": {"nosync": True}}}},
        supervision={"unresponsive_after": 60},
    )
    runtime = PausingRuntime(docker_runtime)
    async with open_supervisor(runtime, probe_interval=PROBE) as supervisor:  # type: ignore[arg-type]
        async with supervisor.open_timeline() as events:
            await supervisor.apply(spec)
            degraded = await events_until(events, lambda e: e.kind == "degraded")
        before = supervisor.status(name)
        old = before.member(f"{name}-1")
        lagging = before.member(f"{name}-2")
        confirmed = await _write_confirmed(old.published, "lag", 2000)
        await runtime.pause(lagging.container_id)
        client = _client(old.published)
        try:
            await client.mset({f"late:{n}": "x" for n in range(500)})
        finally:
            await client.aclose()

        async with supervisor.open_timeline() as events:
            await docker_runtime.kill_container(old.container_id)
            assert await runtime.unpause(lagging.container_id)
            seen = await events_until(events, lambda e: e.kind == "degraded")
        after = supervisor.status(name)
        kept = await _present(after.writer and after.writer.published, confirmed)

    promoted = [e.member for e in seen if e.kind == "failover"]
    assert degraded[-1].fields["link_down"] == [empty]
    assert seen[-1].fields["link_down"] == [empty]
    assert not after.converged
    assert promoted == [lagging.id]
    assert after.primary == lagging.id
    assert empty not in [e.member for e in seen if e.kind == "failover"]
    assert kept == confirmed
    assert after.member(empty).role is Role.REPLICA


# -- never two writable primaries ---------------------------------------------


async def test_a_primary_paused_around_its_deadline_never_leaves_two_primaries(
    docker_runtime: DockerRuntime, docker_case: DockerLab, redis_image: str
) -> None:
    """A primary paused until before, then until after, the 2 s unresponsive
    deadline: the first pause is ridden out, the second ends in a fence and a
    failover; no sample ever sees two members answer as master, and one
    primary remains at the end."""
    spec = fault_spec(
        docker_case,
        redis_image,
        "pause",
        topology="redundant",
        supervision={"unresponsive_after": 2.0, "backoff_first": 0.1},
    )
    runtime = PausingRuntime(docker_runtime)
    async with open_supervisor(runtime, probe_interval=PROBE) as supervisor:  # type: ignore[arg-type]
        await supervisor.apply(spec)
        await supervisor.wait_converged(spec.name, timeout=LIMIT)
        async with (
            supervisor.open_timeline() as events,
            _sampled(supervisor, spec.name) as sampler,
        ):
            for held in (1.2, 2.8):  # before, then after the deadline
                primary = supervisor.status(spec.name).writer
                assert primary is not None
                await runtime.pause(primary.container_id)
                await anyio.sleep(held)  # paces the pause around the deadline
                # Past the deadline the container may be fenced already.
                await runtime.unpause(primary.container_id)
                await supervisor.wait_converged(spec.name, timeout=LIMIT)
            seen = await events_until(events, lambda e: e.kind == "converged")
        after = supervisor.status(spec.name)

    kinds = [e.kind for e in seen]
    assert sampler.most_masters == 1, sampler.worst
    assert sampler.rounds >= 10
    assert kinds.count("member_unresponsive") == 1
    assert kinds.index("member_fenced") < kinds.index("failover")
    assert [m.role for m in after.members].count(Role.PRIMARY) == 1


async def test_a_primary_whose_server_died_in_a_running_container_is_replaced(
    docker_runtime: DockerRuntime, docker_case: DockerLab, redis_image: str
) -> None:
    """redis-server killed inside the primary's container, which runs on:
    its status answers unhealthy, and past the deadline it is fenced, the
    replica takes over with every confirmed key, and the old primary is
    restarted in place to follow; never two masters."""
    spec = fault_spec(
        docker_case,
        redis_image,
        "died",
        topology="redundant",
        supervision={"unresponsive_after": 2.0, "backoff_first": 0.1},
    )
    async with open_supervisor(docker_runtime, probe_interval=PROBE) as supervisor:
        await supervisor.apply(spec)
        before = await supervisor.wait_converged(spec.name, timeout=LIMIT)
        old = before.writer
        assert old is not None
        confirmed = await _write_confirmed(old.published, "died", 200)
        async with (
            supervisor.open_timeline() as events,
            _sampled(supervisor, spec.name) as sampler,
        ):
            killed = await docker_runtime.exec(
                old.container_id,
                ["pkill", "-KILL", "-x", "redis-server"],
                timeout=10.0,
                max_stdout=1000,
                max_stderr=1000,
            )
            seen = await events_until(events, lambda e: e.kind == "failover")
            await supervisor.wait_converged(spec.name, timeout=LIMIT)
        after = supervisor.status(spec.name)
        assert after.writer is not None
        kept = await _present(after.writer.published, confirmed)

    (unresponsive,) = [e for e in seen if e.kind == "member_unresponsive"]
    assert killed.exit_code == 0
    assert (unresponsive.member, unresponsive.fields["reason"]) == (
        old.id,
        "unhealthy",
    )
    assert [e.kind for e in seen].index("member_fenced") < len(seen) - 1
    assert after.writer.id != old.id
    assert kept == confirmed
    assert sampler.most_masters <= 1, sampler.worst
    assert after.member(old.id).container_id == old.container_id
    assert after.member(old.id).role is Role.REPLICA


# -- switchover ---------------------------------------------------------------


async def test_switchover_keeps_every_acknowledged_write(
    docker_runtime: DockerRuntime, docker_case: DockerLab, redis_image: str
) -> None:
    """A switchover while a client keeps writing loses no write Redis answered
    OK for, and never shows two masters."""
    spec = fault_spec(
        docker_case, redis_image, "swap", topology="redundant", replicas=2
    )
    target = f"{spec.name}-2"
    acknowledged: list[str] = []
    async with open_supervisor(docker_runtime, probe_interval=PROBE) as supervisor:
        await supervisor.apply(spec)
        await supervisor.wait_converged(spec.name, timeout=LIMIT)
        async with (
            _sampled(supervisor, spec.name) as sampler,
            anyio.create_task_group() as tasks,
        ):
            tasks.start_soon(_keep_writing, supervisor, spec.name, acknowledged)
            await anyio.sleep(0.5)  # paces writes before the switchover
            after = await supervisor.switchover(spec.name, target, timeout=LIMIT)
            await anyio.sleep(0.5)  # and after it
            tasks.cancel_scope.cancel()
        kept = await _present(
            after.writer and after.writer.published, set(acknowledged)
        )

    assert after.primary == target
    assert [(m.id, m.following) for m in after.members if m.id != target] == [
        (f"{spec.name}-1", target),
        (f"{spec.name}-3", target),
    ]
    assert len(acknowledged) > 50
    assert kept == set(acknowledged)
    assert sampler.most_masters == 1, sampler.worst


async def _keep_writing(supervisor: Supervisor, service: str, acked: list[str]) -> None:
    """Write one key at a time to whoever is primary; keep those answered OK."""
    number = 0
    while True:
        writer = supervisor.status(service).writer
        if writer is None:
            await anyio.sleep(0.01)  # paces retries while roles change
            continue

        client = _client(writer.published)
        try:
            while True:
                key = f"w:{number}"
                number += 1
                if await client.set(key, "v"):
                    acked.append(key)
        except (redis.exceptions.RedisError, OSError):
            await anyio.sleep(0.01)  # paces retries while roles change
        finally:
            await client.aclose()


# -- case 10: promote and demote 10 ms apart ----------------------------------


async def test_promote_and_demote_ten_ms_apart_keep_order_and_one_primary(
    docker_runtime: DockerRuntime, docker_case: DockerLab, fault_image: str
) -> None:
    """Case 10: switchover to -2 (held in flight), then to -3 and 10 ms later
    back to -1: the -3 one, superseded while queued, is skipped and answered
    so; -2 is promoted and then demoted, never the other way round, every
    member's epochs only grow, and one primary, -1, is left at the end."""
    name = docker_case.service("order")
    first, second, third = (f"{name}-{n}" for n in (1, 2, 3))
    fault = {first: {"role": {"gate": {"handover": True}}}}
    spec = fault_spec(
        docker_case,
        fault_image,
        "order",
        name=name,
        topology="redundant",
        replicas=2,
        config={"fault": fault},
    )
    outcomes: dict[str, Any] = {}

    async def switch(member: str) -> None:
        try:
            outcomes[member] = (
                await supervisor.switchover(name, member, timeout=LIMIT)
            ).primary
        except SwitchoverSupersededError as error:
            outcomes[member] = error

    async with open_supervisor(docker_runtime, probe_interval=PROBE) as supervisor:
        await supervisor.apply(spec)
        before = await supervisor.wait_converged(name, timeout=LIMIT)
        gate = before.member(first).container_id
        async with (
            supervisor.open_timeline() as events,
            _sampled(supervisor, name) as sampler,
            anyio.create_task_group() as tasks,
        ):
            tasks.start_soon(switch, second)
            assert await sh(docker_runtime, gate, f"cat {GATE_STARTED}") == "started\n"
            tasks.start_soon(switch, third)
            await anyio.sleep(0.01)  # the two requests 10 ms apart
            tasks.start_soon(switch, first)
            await anyio.sleep(0.01)
            await sh(docker_runtime, gate, f"echo go > {GATE_GO}")
            seen = await events_until(
                events,
                lambda e: e.kind == "switchover" and e.member == first,
            )
        after = supervisor.status(name)

    kinds = [(e.kind, e.member) for e in seen]
    promoted = kinds.index(("switchover", second))
    demoted = kinds.index(("switchover", first))
    assert isinstance(outcomes[third], SwitchoverSupersededError)
    assert (outcomes[second], outcomes[first]) == (second, first)
    assert promoted < demoted
    assert ("switchover", third) not in kinds
    for member in (first, second, third):
        epochs = _epochs(seen, member)
        assert epochs == sorted(set(epochs)), (member, epochs)
    assert after.primary == first
    assert {m.following for m in after.members if m.id != first} == {first}
    assert sampler.most_masters == 1, sampler.worst


# -- case 11: a flood of role requests ----------------------------------------


async def test_a_thousand_role_requests_behind_a_stuck_hook_coalesce(
    docker_runtime: DockerRuntime, docker_case: DockerLab, fault_image: str
) -> None:
    """Case 11: 1,000 role requests while a configure hook is stuck: 999 are
    answered superseded at once, memory stays flat, and the member ends in
    the last one's role and epoch."""
    fault = {"*": {"configure": {"gate": {"stuck": True}}}}
    spec = fault_spec(docker_case, fault_image, "flood", config={"fault": fault})
    member = f"{spec.name}-1"
    async with open_supervisor(docker_runtime, probe_interval=PROBE) as supervisor:
        await supervisor.apply(spec)
        before = await supervisor.wait_converged(spec.name, timeout=LIMIT)
        container = before.member(member).container_id
        controller = supervisor.controllers[spec.name]
        target = controller.members[member]
        async with anyio.create_task_group() as tasks:
            stuck = RunHook(controller.view(), HookName.CONFIGURE, {"stuck": True})
            tasks.start_soon(partial(target.ref.ask, stuck, timeout=None))
            assert await sh(docker_runtime, container, f"cat {GATE_STARTED}") == (
                "started\n"
            )
            view = controller.view()
            base = controller.epoch + 1
            baseline = _memory_kib("VmRSS")
            tickets = [
                target.actor.request_role(
                    ApplyRole(view, Role.STANDALONE, None, base + n)
                )
                for n in range(1000)
            ]
            answered_at_once = sum(1 for t in tickets if t.done)
            growth = (_memory_kib("VmRSS") - baseline) * 1024
            high_water = target.ref.statistics().mailbox.high_water
            await sh(docker_runtime, container, f"echo go > {GATE_GO}")
            outcomes = [await t.wait() for t in tickets]
        await supervisor.wait_converged(spec.name, timeout=LIMIT)
        await controller.probe(target)
        after = supervisor.status(spec.name)

    superseded = [o for o in outcomes if isinstance(o, Superseded)]
    assert answered_at_once == 999
    assert len(superseded) == 999
    assert not isinstance(outcomes[-1], Superseded)
    assert growth < 10 * MiB
    assert high_water <= 4
    assert after.member(member).epoch == base + 999
    assert after.member(member).role is Role.STANDALONE


def _memory_kib(field_name: str) -> int:
    with open("/proc/self/status", encoding="utf-8") as status:
        for line in status:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field_name} in /proc/self/status")
