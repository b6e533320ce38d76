"""Two ``rolecall run`` processes on different state directories and one
engine: the claim on the engine keeps the second off the first's service,
and a take-over moves it once the first is gone (real engine, real Redis)."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import docker_support
import pytest
import redis.asyncio as aioredis
from docker_support import DockerLab
from runner_support import LIMIT, open_runner_process, rolecall, spec_text

pytestmark = [pytest.mark.docker, pytest.mark.anyio, pytest.mark.timeout(300)]

docker_case = docker_support.docker_case
redis_image = docker_support.redis_image


@pytest.fixture
def anyio_backend() -> str:
    """The runner's CLI and redis' asyncio client run on asyncio here."""
    return "asyncio"


async def test_a_second_runner_is_refused_then_takes_over_a_killed_first(
    tmp_path: Path, docker_case: DockerLab, redis_image: str
) -> None:
    """The second runner reports the first's service claimed, naming the
    first, and runs its own other service; the first keeps its containers
    and its one master; a `down` through the second removes nothing. Once
    the first is SIGKILLed, the second started with --take-over adopts the
    same containers and converges."""
    shared = docker_case.service("claim")
    own = docker_case.service("own")
    first_spec = tmp_path / "first.toml"
    first_spec.write_text(
        spec_text(shared, redis_image, docker_case.labels, topology="redundant"),
        encoding="utf-8",
    )
    second_spec = tmp_path / "second.toml"
    second_spec.write_text(
        first_spec.read_text(encoding="utf-8")
        + spec_text(own, redis_image, docker_case.labels),
        encoding="utf-8",
    )
    first_state, second_state = tmp_path / "first", tmp_path / "second"

    async with open_runner_process(first_spec, first_state) as first:
        await first.wait_for("converged", service=shared)
        before = await _status(first_state, shared)
        async with open_runner_process(second_spec, second_state) as second:
            refused = await second.wait_for("service_failed", service=shared)
            await second.wait_for("converged", service=own)
            shown = await _status(second_state, shared)
            table = await rolecall("status", "--state-dir", str(second_state))
            down = await rolecall(
                "down", shared, "--yes", "--state-dir", str(second_state)
            )
            second.signal(signal.SIGTERM)
            second_code = await second.wait_exit()

        untouched = await _status(first_state, shared)
        masters = [m["id"] for m in untouched["members"] if await _is_master(m)]
        first_id = (first_state / "control-plane-id").read_text().strip()
        first_pid = first.pid
        first.process.kill()
        first_code = await first.wait_exit()

    async with open_runner_process(
        second_spec, second_state, "--take-over", shared
    ) as again:
        taken = await again.wait_for("service_taken_over", service=shared)
        await again.wait_for("converged", service=shared)
        after = await _status(second_state, shared)
        after_masters = [m["id"] for m in after["members"] if await _is_master(m)]

    assert f"another control plane, {first_id} (host " in refused["detail"]
    assert f"pid {first_pid}," in refused["detail"]
    assert shown["failure"] == refused["detail"]
    assert shown["members"] == []
    assert f"FAILED: service {shared!r} is managed by another" in table.stdout
    assert down.returncode == 1
    assert f"`rolecall down {shared} --take-over`" in down.stderr
    assert second_code == 0
    assert (untouched["converged"], _containers(untouched)) == (
        True,
        _containers(before),
    )
    assert masters == [before["primary"]]
    assert first_code == -signal.SIGKILL
    assert taken["previous_owner"] == first_id
    assert after["converged"] is True
    assert _containers(after) == _containers(before)
    assert after_masters == [after["primary"]]
    assert _docker_names(shared) == sorted(_containers(before).values())


async def _status(state: Path, service: str) -> dict[str, Any]:
    shown = await rolecall("status", "--json", "--state-dir", str(state))
    assert shown.returncode == 0, shown.stderr
    return next(s for s in json.loads(shown.stdout) if s["name"] == service)


def _containers(status: dict[str, Any]) -> dict[str, str]:
    """Member id -> container name."""
    return {m["id"]: m["container"] for m in status["members"]}


async def _is_master(member: dict[str, Any]) -> bool:
    host, port = str(member["published"]).rsplit(":", 1)
    client = aioredis.Redis(host=host, port=int(port), socket_timeout=5)
    try:
        role = await client.execute_command("ROLE")
    finally:
        await client.aclose()

    return bool(role[0] in (b"master", "master"))


def _docker_names(service: str) -> list[str]:
    done = subprocess.run(
        [
            "docker",
            "ps",
            "-a",
            "--filter",
            f"label=io.rolecall.service={service}",
            "--format",
            "{{.Names}}",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=LIMIT,
    )
    return sorted(done.stdout.split())
