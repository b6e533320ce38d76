"""Supervision on a real engine: backoff that grows to its cap and resets.

A hook that always fails and a container that dies in every start are
retried with backoff (no jitter here, so the delays are exact), never in a
tight loop; once the service has stayed up for ``reset_after`` seconds, the
next failure starts again from the first delay.
"""

from __future__ import annotations

import itertools
from typing import Any

import docker_support
import faults_support
import pytest
from attrs import evolve
from docker_support import DockerLab
from faults_support import events_until, fault_spec, watch_logs

from rolecall.actors import DockerRuntime
from rolecall.hooks_protocol import Role
from rolecall.supervisor import ServiceEvent, open_supervisor

pytestmark = [pytest.mark.docker, pytest.mark.anyio, pytest.mark.timeout(120)]

docker_case = docker_support.docker_case
redis_image = docker_support.redis_image
fault_image = faults_support.fault_image

PROBE = 0.2
SUPERVISION = {
    "backoff_first": 0.05,
    "backoff_cap": 0.4,
    "jitter": 0.0,
    # Well above one crash-loop cycle on a loaded machine (start, the hook
    # kills init, the engine's event): a shorter one reset the backoff
    # between crashes there.
    "reset_after": 5.0,
    "max_restarts": 100,
}
GROWN = [0.05, 0.1, 0.2, 0.4, 0.4, 0.4]


@pytest.fixture
def anyio_backend() -> str:
    """The Docker runtime runs on asyncio only."""
    return "asyncio"


def _reset(entry: Any) -> bool:
    return entry.get("event") == "backoff_reset"


def _gaps(events: list[ServiceEvent]) -> list[float]:
    return [b.time - a.time for a, b in itertools.pairwise(events)]


async def test_a_hook_that_always_fails_backs_off_to_the_cap_then_resets(
    docker_runtime: DockerRuntime, docker_case: DockerLab, fault_image: str
) -> None:
    """Case 5: configure exiting 1 every time is retried after 0.05, 0.1, 0.2,
    then 0.4 s (the cap), each retry at least that long after the failure;
    fixed and left up for `reset_after`, a new failure waits 0.05 s again."""
    broken = {"fault": {"*": {"configure": {"exit": 1}}}}
    spec = fault_spec(
        docker_case, fault_image, "fails", config=broken, supervision=SUPERVISION
    )
    member = f"{spec.name}-1"
    with watch_logs() as logs:
        async with open_supervisor(docker_runtime, probe_interval=PROBE) as supervisor:
            async with supervisor.open_timeline() as events:
                await supervisor.apply(spec)
                failing: list[ServiceEvent] = []
                while len(failing) < len(GROWN):
                    seen = await events_until(events, lambda e: e.kind == "step_failed")
                    failing.append(seen[-1])

                fixed = evolve(spec, config={})
                await supervisor.apply(fixed)
                await events_until(events, lambda e: e.kind == "converged")
                await logs.wait_for(_reset)
                # Broken again: configure re-runs on the running member (a
                # changed config reaches running members) and fails anew.
                await supervisor.apply(spec)
                again = await events_until(events, lambda e: e.kind == "step_failed")
                await supervisor.apply(fixed)
                healed = await events_until(events, lambda e: e.kind == "converged")
            status = supervisor.status(spec.name)

    delays = [e.fields["retry_in"] for e in failing]
    assert delays == GROWN
    assert [e.fields["exit_code"] for e in failing] == [1] * len(GROWN)
    assert all(gap >= delay for gap, delay in zip(_gaps(failing), delays, strict=False))
    assert again[-1].fields["retry_in"] == 0.05
    assert again[-1].fields["attempt"] == 1
    assert again[-1].fields["exit_code"] == 1
    # The member still runs with the config it last took: nothing to redo.
    assert [e.kind for e in healed] == ["converged"]
    assert status.member(member).role is Role.STANDALONE


async def test_a_crash_looping_container_backs_off_to_the_cap_then_resets(
    docker_runtime: DockerRuntime, docker_case: DockerLab, fault_image: str
) -> None:
    """Case 5: a container whose start hook stops it every time is restarted
    0.05, 0.1, 0.2, then 0.4 s apart at least, never faster; fixed and left
    up for `reset_after`, the next restart comes with the first delay again."""
    looping = {"fault": {"*": {"start": {"kill_init": True}}}}
    spec = fault_spec(
        docker_case, fault_image, "loop", config=looping, supervision=SUPERVISION
    )
    member = f"{spec.name}-1"
    with watch_logs() as logs:
        async with open_supervisor(docker_runtime, probe_interval=PROBE) as supervisor:
            async with supervisor.open_timeline() as events:
                await supervisor.apply(spec)
                restarts: list[ServiceEvent] = []
                while len(restarts) < len(GROWN):
                    seen = await events_until(
                        events, lambda e: e.kind == "member_restarted"
                    )
                    restarts.append(seen[-1])

                fixed = evolve(spec, config={})
                await supervisor.apply(fixed)
                await events_until(events, lambda e: e.kind == "converged")
                await logs.wait_for(_reset)
                container = supervisor.status(spec.name).member(member).container_id
                await docker_runtime.kill_container(container)
                again = await events_until(
                    events, lambda e: e.kind == "member_restarted"
                )
                await events_until(events, lambda e: e.kind == "converged")
            status = supervisor.status(spec.name)

    backoffs = [e.fields["backoff"] for e in restarts]
    assert backoffs == GROWN
    # Each restart came at least the previous one's backoff after it.
    gaps = [e.fields["since_last"] for e in restarts[1:]]
    assert all(gap >= backoff for gap, backoff in zip(gaps, backoffs, strict=False))
    assert again[-1].fields["backoff"] == 0.05
    assert again[-1].fields["attempt"] == 1
    assert status.member(member).role is Role.STANDALONE
    assert status.failure is None
