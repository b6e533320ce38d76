"""``rolecall run`` killed with SIGKILL after each step of a change, then
started again: it adopts what runs and finishes the change.

Each case runs one runner with ``ROLECALL_CRASH_AFTER`` set, which kills it
the moment it reports the chosen step (the n-th event of that kind since its
start: the bring-up's events count too), then a second runner on the same
spec file and state directory. Real engine, real Redis: keys are written
before the change and read back after. Beside them: a runner killed in the
middle of a password reload, and a runner on a new state directory that
finds every member stopped.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import anyio
import docker_support
import pytest
import redis.asyncio as aioredis
import redis.exceptions
from docker_support import DockerLab
from runner_support import LIMIT, open_runner_process, rolecall, spec_text

pytestmark = [pytest.mark.docker, pytest.mark.anyio, pytest.mark.timeout(240)]

docker_case = docker_support.docker_case
redis_image = docker_support.redis_image

KEYS = 200


@pytest.fixture
def anyio_backend() -> str:
    """The runner's CLI and redis' asyncio client run on asyncio here."""
    return "asyncio"


# (change, crash point): the bring-up of a standalone service reports
# member_created, member_prepared and role_applied once each; that of a
# redundant one twice each (primary, then replica).
CASES = [
    ("to-redundant", "role_applied#2"),  # the standalone made primary
    ("to-redundant", "member_created#2"),
    ("to-redundant", "member_prepared#2"),
    ("to-redundant", "role_applied#3"),  # the new replica following it
    ("to-standalone", "role_applied#3"),  # the primary made standalone
    ("to-standalone", "member_removed"),
    ("failover", "member_fenced"),
    ("failover", "failover"),  # the replica promoted
    ("failover", "member_restarted"),  # the fenced old primary started again
    ("failover", "member_prepared#3"),
    ("failover", "role_applied#4"),  # the old primary following
]


@pytest.mark.parametrize(("change", "crash_after"), CASES)
async def test_a_runner_killed_after_a_step_finishes_the_change_on_restart(
    tmp_path: Path,
    docker_case: DockerLab,
    redis_image: str,
    change: str,
    crash_after: str,
) -> None:
    """After SIGKILL at a step boundary and a restart: converged to the
    desired shape, one writer, every confirmed key there, no container made
    twice, nothing left behind."""
    service = docker_case.service("crash")
    first = "standalone" if change == "to-redundant" else "redundant"
    wanted = "standalone" if change == "to-standalone" else "redundant"
    spec = tmp_path / "spec.toml"
    spec.write_text(
        spec_text(service, redis_image, docker_case.labels, topology=first),
        encoding="utf-8",
    )
    state = tmp_path / "state"
    state_dir = ("--state-dir", str(state))
    crash = {"ROLECALL_CRASH_AFTER": crash_after}
    async with open_runner_process(spec, state, env=crash) as runner:
        await runner.wait_for("converged", service=service)
        before = await _status(state)
        keys = await _write(before, confirmed=first == "redundant")
        if change == "failover":
            _docker("kill", f"rolecall-{service}-1")
        else:
            await rolecall("convert", service, wanted, *state_dir)
        code = await runner.wait_exit()
        crashed = await runner.wait_for("crash_switch")

    # While no control plane runs, at most one member takes writes: a member
    # created but never given a role is a read-only replica of nothing.
    down_masters = [name for name in await _running(service) if await _master(name)]

    async with open_runner_process(spec, state) as again:
        size = 1 if wanted == "standalone" else 2
        await again.wait_for(
            "converged", service=service, detail=f"{wanted} with {size} member(s)"
        )
        after = await _status(state)
        masters = [m["id"] for m in after["members"] if await _is_master(m)]
        present = await _present(after, keys)
        adopted = [line for line in again.lines if line["event"] == "member_adopted"]

    members = [m["id"] for m in after["members"]]
    writers = [m["id"] for m in after["members"] if m["role"] in _WRITERS]
    assert code == -signal.SIGKILL
    assert crashed["kind"] == crash_after.partition("#")[0]
    assert adopted, "the restarted runner adopted nothing"
    assert len(down_masters) <= 1, down_masters
    assert (after["topology"], after["converged"]) == (wanted, True)
    assert writers == masters == [after["primary"]]
    assert present == keys
    containers = _names("ps", "-a", "--filter", f"label={_service_label(service)}")
    assert containers == sorted(f"rolecall-{member}" for member in members)
    case_label = docker_support.CASE_LABEL
    case = f"{case_label}={docker_case.labels[case_label]}"
    assert _names("ps", "-a", "--filter", f"label={case}") == containers
    assert _names("volume", "ls", "--filter", f"label={case}") == sorted(
        [f"rolecall-claim.{service}"]
        + [f"rolecall-{member}-data" for member in members]
    )


OLD_PASSWORD, NEW_PASSWORD = "crash-old-pw-31", "crash-new-pw-62"


async def test_a_runner_killed_during_a_reconfigure_configures_all_on_restart(
    tmp_path: Path, docker_case: DockerLab, redis_image: str
) -> None:
    """SIGKILL after the replica took a new password and before the primary
    did: the members stay mixed while no runner runs; the next runner
    configures both, so each accepts the new password and refuses the old,
    with one master and the replica following it."""
    service = docker_case.service("repw")
    spec = tmp_path / "spec.toml"
    text = spec_text(
        service,
        redis_image,
        docker_case.labels,
        topology="redundant",
        secret=OLD_PASSWORD,
    )
    spec.write_text(text, encoding="utf-8")
    state = tmp_path / "state"
    # The bring-up configures the primary once (its replica joined); the
    # reload's first configure, the replica's, is the second.
    crash = {"ROLECALL_CRASH_AFTER": "member_configured#2"}
    async with open_runner_process(spec, state, env=crash) as runner:
        await runner.wait_for("converged", service=service)
        bring_up = [
            line for line in runner.lines if line["event"] == "member_configured"
        ]
        spec.write_text(text.replace(OLD_PASSWORD, NEW_PASSWORD), encoding="utf-8")
        runner.signal(signal.SIGHUP)
        code = await runner.wait_exit()
        crashed = await runner.wait_for("crash_switch")

    names = [f"rolecall-{service}-{n}" for n in (1, 2)]
    mixed = [await _accepts(name) for name in names]

    async with open_runner_process(spec, state) as again:
        await again.wait_for(
            "converged", service=service, detail="redundant with 2 member(s)"
        )
        after = await _status(state)
        configured = [
            (line["member"], line["reason"], line["changed"])
            for line in again.lines
            if line["event"] == "member_configured"
        ]
        accepted = [await _accepts(name) for name in names]
        roles = [await _role(name) for name in names]
        recreated = [
            line["event"]
            for line in again.lines
            if line["event"] in ("member_created", "member_restarted", "role_applied")
        ]
        logged = "".join(again.text)

    assert len(bring_up) == 1
    assert code == -signal.SIGKILL
    assert crashed["kind"] == "member_configured"
    assert mixed == [OLD_PASSWORD, NEW_PASSWORD]
    assert configured == [
        (f"{service}-2", "adopted", False),
        (f"{service}-1", "adopted", True),
    ]
    assert accepted == [NEW_PASSWORD, NEW_PASSWORD]
    assert roles == ["master", "slave"]
    assert after["primary"] == f"{service}-1"
    assert recreated == []
    assert OLD_PASSWORD not in logged
    assert NEW_PASSWORD not in logged


async def test_a_new_state_dir_on_stopped_members_waits_for_a_choice(
    tmp_path: Path, docker_case: DockerLab, redis_image: str
) -> None:
    """Every member stopped and a runner on a new state directory (taking
    the service over): it starts and removes nothing until cache-1's
    container is removed by hand; then
    cache-2, the primary after a switchover, comes back as the writer with
    every key, and cache-1's volume is left alone."""
    service = docker_case.service("pick")
    spec = tmp_path / "spec.toml"
    spec.write_text(
        spec_text(service, redis_image, docker_case.labels, topology="redundant"),
        encoding="utf-8",
    )
    first, second = tmp_path / "state-1", tmp_path / "state-2"
    names = [f"rolecall-{service}-{n}" for n in (1, 2)]
    async with open_runner_process(spec, first) as runner:
        await runner.wait_for("converged", service=service)
        moved = await rolecall(
            "switchover", service, f"{service}-2", "--state-dir", str(first)
        )
        assert moved.returncode == 0, moved.stderr
        keys = await _write(await _status(first), confirmed=True)
        await _flushed(names[1])
        runner.signal(signal.SIGTERM)
        await runner.wait_exit()

    _docker("stop", *names)
    # A new state directory: the service's claim is the first runner's.
    take_over = ("--take-over", service)
    async with open_runner_process(spec, second, *take_over) as again:
        refused = await again.wait_for(
            "reconcile_failed", service=service, error_type="WriterUnknownError"
        )
        untouched = _names(
            "ps",
            "-a",
            "--filter",
            "status=exited",
            "--filter",
            f"label={_service_label(service)}",
        )
        _docker("rm", names[0])
        mark = len(again.lines)
        await again.wait_for(
            "converged",
            after=mark,
            service=service,
            detail="redundant with 2 member(s)",
        )
        after = await _status(second)
        present = await _present(after, keys)

    assert f"`docker rm {names[0]}`, for example" in refused["error"]
    assert untouched == names
    assert after["primary"] == f"{service}-2"
    assert [m["id"] for m in after["members"]] == [f"{service}-2", f"{service}-3"]
    assert present == keys
    assert f"rolecall-{service}-1-data" in _names(
        "volume", "ls", "--filter", f"label={_service_label(service)}"
    )


async def _flushed(container: str) -> None:
    """Wait until Redis in ``container`` has handed its AOF buffer to the
    kernel, so a stop of the container keeps every write."""
    published = _docker("port", container, "6379/tcp").split()[0]
    client = _client({"published": published})
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


async def _accepts(container: str) -> str | None:
    """Which of the two passwords the Redis in ``container`` accepts; it
    must refuse the other one."""
    published = _docker("port", container, "6379/tcp").split()[0]
    accepted = []
    for password in (OLD_PASSWORD, NEW_PASSWORD):
        client = _client({"published": published}, password=password)
        try:
            await client.ping()
        except redis.exceptions.AuthenticationError:
            continue
        finally:
            await client.aclose()
        accepted.append(password)

    assert len(accepted) <= 1, accepted
    return accepted[0] if accepted else None


async def _role(container: str) -> str:
    published = _docker("port", container, "6379/tcp").split()[0]
    client = _client({"published": published}, password=NEW_PASSWORD)
    try:
        role = await client.execute_command("ROLE")
    finally:
        await client.aclose()

    return str(role[0])


_WRITERS = ("standalone", "primary")


def _service_label(service: str) -> str:
    return f"io.rolecall.service={service}"


def _docker(*args: str) -> str:
    done = subprocess.run(
        ["docker", *args], capture_output=True, text=True, check=True, timeout=LIMIT
    )
    return done.stdout


def _names(*args: str) -> list[str]:
    """Names of the containers (``ps``) or volumes (``volume ls``) listed."""
    field = "{{.Name}}" if args[0] == "volume" else "{{.Names}}"
    return sorted(_docker(*args, "--format", field).split())


async def _status(state: Path) -> dict[str, Any]:
    shown = await rolecall("status", "--json", "--state-dir", str(state))
    assert shown.returncode == 0, shown.stderr
    (service,) = json.loads(shown.stdout)
    return dict(service)


def _client(member: dict[str, Any], *, password: str | None = None) -> aioredis.Redis:
    host, port = str(member["published"]).rsplit(":", 1)
    return aioredis.Redis(
        host=host,
        port=int(port),
        password=password,
        socket_timeout=5,
        decode_responses=True,
    )


async def _write(status: dict[str, Any], *, confirmed: bool) -> set[str]:
    """Write keys to the writer; on a redundant service, only once a
    replica confirmed them (WAIT 1) do they count."""
    writer = next(m for m in status["members"] if m["id"] == status["primary"])
    client = _client(writer)
    try:
        keys = {f"key:{n}": str(n) for n in range(KEYS)}
        await client.mset(keys)
        if confirmed:
            assert await client.wait(1, 5000) >= 1
    finally:
        await client.aclose()

    return set(keys)


async def _is_master(member: dict[str, Any]) -> bool:
    client = _client(member)
    try:
        role = await client.execute_command("ROLE")
    finally:
        await client.aclose()

    return bool(role[0] == "master")


async def _running(service: str) -> list[str]:
    label = f"label={_service_label(service)}"
    return _names("ps", "--filter", label, "--filter", "label=io.rolecall.member")


async def _master(container: str) -> bool:
    """Whether the Redis in ``container`` answers ROLE with master; one
    that does not answer (not started yet) takes no writes."""
    published = _docker("port", container, "6379/tcp").split()[0]
    try:
        return await _is_master({"published": published})
    except redis.exceptions.ConnectionError:
        return False  # nothing serves there yet: it takes no writes


async def _present(status: dict[str, Any], keys: set[str]) -> set[str]:
    writer = next(m for m in status["members"] if m["id"] == status["primary"])
    client = _client(writer)
    try:
        values = await client.mget(sorted(keys))
    finally:
        await client.aclose()

    return {k for k, v in zip(sorted(keys), values, strict=True) if v is not None}
