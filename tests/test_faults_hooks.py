"""Hook runs that misbehave, on a real engine with the Redis image's hooks.

Each test runs the example Redis image's hooks behind the fault wrapper of
``faults_support``: a background child holding stdout, a failing exit
code, a flood of output, a hook that never returns, and a role change cut
short by a killed container.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import anyio
import docker_support
import faults_support
import pytest
from docker_support import DockerLab
from faults_support import (
    GATE_STARTED,
    LIMIT,
    MiB,
    events_until,
    fault_spec,
    sh,
    watch_logs,
)

from rolecall.actors import (
    ContainerSpec,
    DockerRuntime,
    HookConvention,
    run_hook,
)
from rolecall.hooks_protocol import (
    MAX_RESULT_BYTES,
    MAX_STDERR_BYTES,
    HookFailedError,
    HookName,
    HookPayload,
    HookResult,
    MemberInfo,
    MessageDecodeError,
    Role,
    encode_payload,
)
from rolecall.supervisor import ServiceSpec, open_supervisor

pytestmark = [pytest.mark.docker, pytest.mark.anyio, pytest.mark.timeout(120)]

docker_case = docker_support.docker_case
redis_image = docker_support.redis_image
fault_image = faults_support.fault_image

PROBE = 0.2
FAST = {"backoff_first": 0.05, "backoff_cap": 0.4, "jitter": 0.0}


@pytest.fixture
def anyio_backend() -> str:
    """The Docker runtime runs on asyncio only."""
    return "asyncio"


@pytest.fixture
async def hook_box(
    docker_runtime: DockerRuntime, docker_case: DockerLab, fault_image: str
) -> str:
    """A started container of the fault image that belongs to no service."""
    spec = ContainerSpec(
        name=docker_case.name("hooks"), image=fault_image, labels=docker_case.labels
    )
    info = await docker_runtime.create_container(spec)
    await docker_runtime.start_container(info.id)
    return info.id


def _payload(hook: HookName, fault: dict[str, Any]) -> HookPayload:
    return HookPayload(
        hook=hook,
        service="faults",
        member=MemberInfo(id="faults-1", role=None, address="faults-1:6379"),
        config={"fault": {"*": {hook.value: fault}}},
    )


def _memory_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/self/status")


def _reset_peak_memory() -> None:
    """Restart VmHWM from the current RSS (Linux 4.0 and later)."""
    Path("/proc/self/clear_refs").write_text("5")


# -- cases 1 to 3: one hook run ------------------------------------------------


async def test_a_background_child_holding_stdout_does_not_hold_the_hook(
    docker_runtime: DockerRuntime, hook_box: str
) -> None:
    """Case 1: a hook that leaves a child holding stdout and exits 0 returns
    well within its timeout, with an empty result."""
    started = anyio.current_time()
    with anyio.fail_after(LIMIT):
        run = await run_hook(
            docker_runtime,
            hook_box,
            _payload(HookName.CONFIGURE, {"background": True}),
            convention=HookConvention(),
            timeout=20,
        )
    took = anyio.current_time() - started

    assert run.exec.exit_code == 0
    assert run.result == HookResult()
    assert took < 10


async def test_exit_42_is_a_failure_with_its_code(
    docker_runtime: DockerRuntime,
    docker_case: DockerLab,
    fault_image: str,
    hook_box: str,
) -> None:
    """Case 2: exit 42 is HookFailedError with exit_code 42, and under the
    supervisor a failed step whose member never gets its role."""
    with pytest.raises(HookFailedError) as raised:
        await run_hook(
            docker_runtime,
            hook_box,
            _payload(HookName.CONFIGURE, {"exit": 42}),
            convention=HookConvention(),
            timeout=20,
        )

    fault = {"*": {"configure": {"exit": 42}}}
    spec = fault_spec(docker_case, fault_image, "exit", config={"fault": fault})
    async with open_supervisor(docker_runtime, probe_interval=PROBE) as supervisor:
        async with supervisor.open_timeline() as events:
            await supervisor.apply(spec)
            seen = await events_until(events, lambda e: e.kind == "step_failed")
        status = supervisor.status(spec.name)

    assert raised.value.exit_code == 42
    assert "ended with exit code 42 (failed; see its stderr)" in str(raised.value)
    assert raised.value.stderr_tail == "fault: configure exits 42"
    assert seen[-1].fields["exit_code"] == 42
    assert seen[-1].fields["error_type"] == "HookFailedError"
    assert [e.kind for e in seen] == ["member_created", "step_failed"]
    assert status.member(f"{spec.name}-1").role is None
    assert not status.converged


async def test_a_flood_of_output_is_cut_and_flagged_with_memory_flat(
    docker_runtime: DockerRuntime, hook_box: str
) -> None:
    """Case 3: 20 MiB on stdout and on stderr complete, the capture is cut at
    its caps and flagged, the hook run fails on the oversized result, and
    this process's peak memory grows by less than 20 MiB."""
    payload = _payload(HookName.CONFIGURE, {"flood": 20})
    baseline = _memory_kib("VmRSS")
    _reset_peak_memory()
    with anyio.fail_after(LIMIT):
        raw = await docker_runtime.exec(
            hook_box,
            ["/opt/rolecall/hooks/configure"],
            stdin=encode_payload(payload),
            env={"ROLECALL_HOOK": "configure"},
            timeout=LIMIT,
            max_stdout=MAX_RESULT_BYTES,
            max_stderr=MAX_STDERR_BYTES,
        )
        with pytest.raises(MessageDecodeError) as raised:
            await run_hook(
                docker_runtime,
                hook_box,
                payload,
                convention=HookConvention(),
                timeout=LIMIT,
            )
    growth = (_memory_kib("VmHWM") - baseline) * 1024

    assert raw.exit_code == 0
    assert (raw.stdout_truncated, raw.stderr_truncated) == (True, True)
    assert (len(raw.stdout), len(raw.stderr)) == (MAX_RESULT_BYTES, MAX_STDERR_BYTES)
    assert f"printed more than {MAX_RESULT_BYTES} bytes on stdout" in str(raised.value)
    assert growth < 20 * MiB, f"peak RSS grew by {growth / MiB:.1f} MiB"


# -- case 4: a hook that never returns -----------------------------------------


async def test_a_hook_blocking_forever_harms_only_its_own_member(
    docker_runtime: DockerRuntime, docker_case: DockerLab, fault_image: str
) -> None:
    """Case 4: a replica's status hook that never returns is killed at its
    1.5 s timeout again and again, while its primary keeps answering, another
    service comes up, and removing the service does not wait for the hook."""
    name = docker_case.service("hung")
    replica, primary = f"{name}-2", f"{name}-1"
    hung = ServiceSpec(
        name=name,
        image=fault_image,
        topology="redundant",
        labels=docker_case.labels,
        timeouts={"status": 1.5},
        supervision={"unresponsive_after": 120},
        config={"fault": {replica: {"status": {"hang": True}}}},
    )
    calm = fault_spec(docker_case, fault_image, "calm")

    def timed_out(entry: Any) -> bool:
        return _status_run(entry, replica, "HookTimeoutError")

    def answered(entry: Any) -> bool:
        return _status_run(entry, primary, "ok")

    with watch_logs() as logs:
        async with open_supervisor(docker_runtime, probe_interval=PROBE) as supervisor:
            await supervisor.apply(hung)
            await supervisor.apply(calm)
            calm_status = await supervisor.wait_converged(calm.name, timeout=LIMIT)
            with anyio.fail_after(LIMIT):
                await logs.wait_for(timed_out, 3)
            answers = logs.count(answered)
            container = supervisor.status(name).member(replica).container_id
            hanging = await sh(
                docker_runtime,
                container,
                "ps -eo args | grep -c '^sleep 100000' || true",
            )
            started = anyio.current_time()
            await supervisor.remove(name)
            removal = anyio.current_time() - started

    assert logs.count(timed_out) >= 3
    assert answers >= 3
    # The probe after a kill may not have started yet: never more than one.
    assert int(hanging) in (0, 1)
    assert calm_status.member(f"{calm.name}-1").role is Role.STANDALONE
    assert removal < 10


def _status_run(entry: Any, member: str, outcome: str) -> bool:
    return (
        entry.get("event") == "hook_run"
        and entry.get("hook") == "status"
        and entry.get("member") == member
        and entry.get("outcome") == outcome
    )


# -- case 6: a container killed in the middle of a role change -----------------


async def test_a_container_killed_mid_hook_gets_its_role_once_back(
    docker_runtime: DockerRuntime, docker_case: DockerLab, fault_image: str
) -> None:
    """Case 6: a standalone's role hook is caught in the middle, its container
    killed (exit 137): the step fails with ContainerGoneError, the container
    is restarted and the role applied to it."""
    fault = {"*": {"role": {"gate": {"role": "standalone"}}}}
    spec = fault_spec(
        docker_case, fault_image, "midhook", config={"fault": fault}, supervision=FAST
    )
    member = f"{spec.name}-1"
    async with open_supervisor(docker_runtime, probe_interval=PROBE) as supervisor:
        async with supervisor.open_timeline() as events:
            await supervisor.apply(spec)
            await events_until(events, lambda e: e.kind == "member_prepared")
            container = supervisor.status(spec.name).member(member).container_id
            assert await sh(docker_runtime, container, f"cat {GATE_STARTED}") == (
                "started\n"
            )
            await docker_runtime.kill_container(container)
            seen = await events_until(events, lambda e: e.kind == "converged")
        after = supervisor.status(spec.name)

    kinds = [e.kind for e in seen]
    failed = next(e for e in seen if e.kind == "step_failed")
    lost = next(e for e in seen if e.kind == "member_lost")

    assert failed.fields["error_type"] == "ContainerGoneError"
    assert (lost.fields["exit_code"], lost.fields["cause"]) == (137, "killed")
    assert kinds.index("member_restarted") < kinds.index("role_applied")
    assert after.member(member).role is Role.STANDALONE
    assert after.member(member).container_id == container
    assert after.member(member).epoch == 2


# -- case 13: zombies --------------------------------------------------------


async def test_zombies_left_by_a_status_hook_are_reaped_and_latency_stays_flat(
    docker_runtime: DockerRuntime, docker_case: DockerLab, fault_image: str
) -> None:
    """Case 13: a status hook that leaves a zombie on every run, probed every
    100 ms for 60 s, leaves no zombie behind (the container's init reaps
    them), and the median run of the last 10 s takes at most four times the
    median of the first 10 s: zombies piling up would grow it without
    bound, while a busy machine moves it by a small factor either way."""
    fault = {"*": {"status": {"zombie": True}}}
    spec = fault_spec(docker_case, fault_image, "zombie", config={"fault": fault})
    member = f"{spec.name}-1"

    def ran(entry: Any) -> bool:
        return _status_run(entry, member, "ok")

    with watch_logs() as logs:
        async with open_supervisor(docker_runtime, probe_interval=0.1) as supervisor:
            await supervisor.apply(spec)
            status = await supervisor.wait_converged(spec.name, timeout=LIMIT)
            container = status.member(member).container_id
            with anyio.fail_after(LIMIT):
                await logs.wait_for(ran)
            start = time.monotonic()
            await anyio.sleep(60)  # paces the load: probes run all the while

        # Counted once the probes have stopped: a hook that runs leaves its
        # own zombie until it exits, and only then is it its init's to reap.
        zombies = await sh(
            docker_runtime, container, "ps -eo stat= | grep -c '^Z' || true"
        )
        init = await sh(docker_runtime, container, "cat /proc/1/comm")

    runs = [
        (e["captured_at"] - start, e["duration_ms"]) for e in logs.entries if ran(e)
    ]
    first = [ms for at, ms in runs if 0 <= at < 10]
    last = [ms for at, ms in runs if 50 <= at < 60]

    assert int(zombies) == 0
    assert init == "docker-init\n"
    # Enough runs for a median; a loaded machine runs fewer than the 100
    # the probe interval asks for, and only a hang runs next to none.
    assert len(first) >= 5
    assert len(last) >= 5
    assert statistics.median(last) <= 4 * statistics.median(first)
