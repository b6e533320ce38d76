"""``rolecall run`` and the commands that talk to it, driven as a user
would: a runner child process on the real engine, and the CLI beside it."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import anyio
import docker_support
import pytest
import redis.asyncio as aioredis
from docker_support import DockerLab
from runner_support import (
    LIMIT,
    ROLECALL,
    RunnerProcess,
    open_runner_process,
    rolecall,
    spec_text,
)

pytestmark = [pytest.mark.docker, pytest.mark.anyio, pytest.mark.timeout(300)]

# Fixtures shared through docker_support; pytest finds them by these names.
docker_case = docker_support.docker_case
redis_image = docker_support.redis_image

SECRET = "pw-7c1e5d-never-logged"  # noqa: S105  (a test value, to look for)
NEW_SECRET = "pw-92be0a-also-never-logged"  # noqa: S105  (the reloaded one)


@pytest.fixture
def anyio_backend() -> str:
    """The Docker runtime runs on asyncio only."""
    return "asyncio"


def _docker_names(label: str, *, running_only: bool = True) -> list[str]:
    listing = subprocess.run(
        [
            "docker",
            "ps",
            *([] if running_only else ["-a"]),
            "--filter",
            f"label={label}",
            "--format",
            "{{.Names}}",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=LIMIT,
    )
    return sorted(listing.stdout.split())


async def _converged(runner: RunnerProcess, service: str, detail: str) -> None:
    await runner.wait_for("converged", service=service, detail=detail)


async def _status(state: Path) -> dict[str, object]:
    shown = await rolecall("status", "--json", "--state-dir", str(state))
    assert shown.returncode == 0, shown.stderr
    (service,) = json.loads(shown.stdout)
    return service


class TestRunner:
    """From `rolecall run` to `rolecall down`, as the README shows it."""

    async def test_status_convert_events_plan_and_down(
        self, tmp_path: Path, docker_case: DockerLab, redis_image: str
    ) -> None:
        """A user runs a spec, reads status, converts, follows, tears down."""
        service = docker_case.service("run")
        spec = tmp_path / "spec.toml"
        spec.write_text(
            spec_text(service, redis_image, docker_case.labels, secret=SECRET),
            encoding="utf-8",
        )
        state = tmp_path / "state"
        state_dir = ("--state-dir", str(state))
        async with open_runner_process(spec, state) as runner:
            await _converged(runner, service, "standalone with 1 member(s)")
            before = await _status(state)
            table = await rolecall("status", *state_dir)
            async with await anyio.open_process(
                [str(ROLECALL), "events", "--follow", "--last", "0", *state_dir],
                stdin=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            ) as follower:
                converted = await rolecall("convert", service, "redundant", *state_dir)
                followed = await _lines_until(follower, "converged")
                follower.send_signal(signal.SIGINT)
                with anyio.fail_after(LIMIT):
                    follower_exit = await follower.wait()
            events = await rolecall("events", "--last", "5", *state_dir)
            plan = await rolecall("plan", service, *state_dir)
            down = await rolecall(
                "down", service, *state_dir, stdin=f"{service}\n".encode()
            )
            after = await rolecall("status", "--json", *state_dir)
            text = "".join(runner.text)

        case = docker_case.labels[docker_support.CASE_LABEL]
        label = f"{docker_support.CASE_LABEL}={case}"
        member = before["members"][0]
        assert (before["source"], before["topology"], before["converged"]) == (
            "runner",
            "standalone",
            True,
        )
        assert (member["id"], member["role"], member["healthy"]) == (
            f"{service}-1",
            "standalone",
            True,
        )
        assert table.returncode == 0
        assert table.stdout.startswith(f"runner pid {runner.pid}, spec {spec},")
        assert converted.returncode == 0, converted.stderr
        assert converted.stdout.splitlines()[0] == f"converting {service} to redundant"
        assert "step 1 of 3" in converted.stdout
        assert "step 3 of 3" in converted.stdout
        assert converted.stdout.splitlines()[-1].endswith(
            f": {service} is redundant, primary {service}-1, replicas {service}-2"
        )
        assert [line.split()[3].rstrip(":") for line in followed] == [
            "role_applied",
            "member_created",
            "member_prepared",
            "role_applied",
            "member_configured",
            "converged",
        ]
        assert follower_exit == 0
        assert events.returncode == 0
        assert len(events.stdout.splitlines()) == 5
        assert plan.returncode == 0
        assert plan.stdout.splitlines()[:3] == [
            f"plan of service {service}:",
            "  roles:       primary, replica, standalone",
            "  topologies:  redundant, standalone",
        ]
        assert down.returncode == 0, down.stderr
        assert down.stdout.splitlines()[-1].endswith(
            f": service {service} removed (rolecall-{service}-1, rolecall-{service}-2)"
        )
        assert json.loads(after.stdout) == []
        assert _docker_names(label, running_only=False) == []
        assert SECRET not in text

    async def test_switchover_hands_writes_to_the_named_member(
        self, tmp_path: Path, docker_case: DockerLab, redis_image: str
    ) -> None:
        """switchover makes the named replica the primary, step by step."""
        service = docker_case.service("swo")
        spec = tmp_path / "spec.toml"
        spec.write_text(
            spec_text(service, redis_image, docker_case.labels, topology="redundant"),
            encoding="utf-8",
        )
        state = tmp_path / "state"
        async with open_runner_process(spec, state) as runner:
            await _converged(runner, service, "redundant with 2 member(s)")
            switched = await rolecall(
                "switchover", service, f"{service}-2", "--state-dir", str(state)
            )
            status = await _status(state)

        assert switched.returncode == 0, switched.stderr
        assert switched.stdout.splitlines()[0] == (
            f"switching {service} over to {service}-2"
        )
        assert status["primary"] == f"{service}-2"
        assert {m["id"]: m["role"] for m in status["members"]} == {
            f"{service}-1": "replica",
            f"{service}-2": "primary",
        }

    async def test_ctrl_c_leaves_the_conversion_to_the_runner(
        self, tmp_path: Path, docker_case: DockerLab, redis_image: str
    ) -> None:
        """Ctrl-C on convert exits 130, says the runner goes on, and it does."""
        service = docker_case.service("int")
        spec = tmp_path / "spec.toml"
        spec.write_text(
            spec_text(service, redis_image, docker_case.labels), encoding="utf-8"
        )
        state = tmp_path / "state"
        async with open_runner_process(spec, state) as runner:
            await _converged(runner, service, "standalone with 1 member(s)")
            mark = len(runner.lines)
            async with await anyio.open_process(
                [
                    str(ROLECALL),
                    "convert",
                    service,
                    "redundant",
                    "--state-dir",
                    str(state),
                ],
                stdin=subprocess.DEVNULL,
            ) as convert:
                shown = await _lines_until(convert, "role_applied")
                convert.send_signal(signal.SIGINT)
                with anyio.fail_after(LIMIT):
                    code = await convert.wait()
                assert convert.stderr is not None
                said = b"".join([chunk async for chunk in convert.stderr]).decode()
            await runner.wait_for(
                "converged",
                after=mark,
                service=service,
                detail="redundant with 2 member(s)",
            )

        assert shown[0] == f"converting {service} to redundant"
        assert code == 130
        assert said == (
            f"rolecall: interrupted; the runner goes on with the conversion of"
            f" {service}: follow it with `rolecall events --follow --state-dir"
            f" {state}`, check it with `rolecall status --state-dir {state}`\n"
        )


class TestSignals:
    """SIGHUP reloads the spec file; SIGTERM stops the control plane only."""

    async def test_sighup_rejects_a_bad_file_then_applies_a_good_one(
        self, tmp_path: Path, docker_case: DockerLab, redis_image: str
    ) -> None:
        """A bad file is rejected with the state kept; a good one is applied."""
        service = docker_case.service("hup")
        spec = tmp_path / "spec.toml"
        good = spec_text(service, redis_image, docker_case.labels, example=True)
        spec.write_text(good, encoding="utf-8")
        state = tmp_path / "state"
        async with open_runner_process(spec, state) as runner:
            await _converged(runner, service, "standalone with 1 member(s)")
            spec.write_text(good.replace("standalone", "ring"), encoding="utf-8")
            mark = len(runner.lines)
            runner.signal(signal.SIGHUP)
            rejected = await runner.wait_for("spec_rejected", after=mark)
            kept = await _status(state)
            spec.write_text(good.replace("standalone", "redundant"), encoding="utf-8")
            mark = len(runner.lines)
            runner.signal(signal.SIGHUP)
            reloaded = await runner.wait_for("spec_reloaded", after=mark)
            await runner.wait_for(
                "converged",
                after=mark,
                service=service,
                detail="redundant with 2 member(s)",
            )
            converted = await _status(state)

        assert f"services.{service}: unknown topology 'ring'" in rejected["error"]
        assert rejected["kept"] == [service]
        assert (kept["topology"], kept["converged"]) == ("standalone", True)
        assert reloaded["applied"] == [service]
        assert converted["topology"] == "redundant"
        assert [m["role"] for m in converted["members"]] == ["primary", "replica"]

    async def test_sighup_with_a_new_password_reaches_every_member(
        self, tmp_path: Path, docker_case: DockerLab, redis_image: str
    ) -> None:
        """A reloaded password is configured on the replica, then the
        primary; a replica re-created afterwards authenticates, the service
        converges, and writes replicate."""
        service = docker_case.service("pw")
        spec = tmp_path / "spec.toml"
        old = spec_text(
            service,
            redis_image,
            docker_case.labels,
            topology="redundant",
            secret=SECRET,
        )
        spec.write_text(old, encoding="utf-8")
        state = tmp_path / "state"
        async with open_runner_process(spec, state) as runner:
            await _converged(runner, service, "redundant with 2 member(s)")
            spec.write_text(old.replace(SECRET, NEW_SECRET), encoding="utf-8")
            mark = len(runner.lines)
            runner.signal(signal.SIGHUP)
            await runner.wait_for("spec_reloaded", after=mark)
            await _converged_after(runner, service, mark)
            configured = [
                line["member"]
                for line in runner.lines[mark:]
                if line["event"] == "member_configured"
            ]
            mark = len(runner.lines)
            with anyio.fail_after(LIMIT):
                await anyio.run_process(["docker", "rm", "-f", f"rolecall-{service}-2"])
            lost = await runner.wait_for("member_lost", after=mark)
            await _converged_after(runner, service, mark)
            status = await _status(state)
            members = {m["id"]: m for m in status["members"]}
            replicated = await _write_and_read(
                members[f"{service}-1"]["published"],
                members[f"{service}-2"]["published"],
            )
            text = "".join(runner.text)

        assert configured == [f"{service}-2", f"{service}-1"]
        assert any(
            line["event"] == "hook_stderr"
            and (line["member"], line["hook"]) == (f"{service}-2", "configure")
            and "redis config written" in line["line"]
            for line in runner.lines
        )
        assert (lost["member"], lost["cause"]) == (f"{service}-2", "removed")
        assert status["converged"] is True
        assert [(m["role"], m["healthy"]) for m in status["members"]] == [
            ("primary", True),
            ("replica", True),
        ]
        assert replicated == ("1", "v")
        assert SECRET not in text
        assert NEW_SECRET not in text

    async def test_sigterm_leaves_the_containers_running_and_a_new_runner_adopts_them(
        self, tmp_path: Path, docker_case: DockerLab, redis_image: str
    ) -> None:
        """SIGTERM ends the runner with 0; the service's containers run on, and
        the next runner adopts them: nothing recreated, no role changed, the
        server not restarted; configure runs once and finds nothing to
        change."""
        service = docker_case.service("term")
        spec = tmp_path / "spec.toml"
        spec.write_text(
            spec_text(service, redis_image, docker_case.labels), encoding="utf-8"
        )
        state = tmp_path / "state"
        label = f"io.rolecall.service={service}"
        async with open_runner_process(spec, state) as runner:
            await _converged(runner, service, "standalone with 1 member(s)")
            before = await _status(state)
            run_id = await _run_id(before)
            runner.signal(signal.SIGTERM)
            code = await runner.wait_exit()
            await runner.wait_for("runner_stopped")
        running = _docker_names(label)
        socket_left = (state / "control.sock").exists()
        async with open_runner_process(spec, state) as second:
            await _converged(second, service, "standalone with 1 member(s)")
            after = await _status(state)
            run_id_after = await _run_id(after)
            events = [line["event"] for line in second.lines]
            configured = [
                line for line in second.lines if line["event"] == "member_configured"
            ]
        down = await rolecall("down", service, "--yes", "--state-dir", str(state))

        assert code == 0
        assert running == [f"rolecall-{service}-1"]
        assert not socket_left
        assert events.count("member_adopted") == 1
        assert [(line["reason"], line["changed"]) for line in configured] == [
            ("adopted", False)
        ]
        assert not {"member_created", "member_restarted", "role_applied"} & set(events)
        member, adopted = before["members"][0], after["members"][0]
        assert (adopted["container_id"], adopted["role"], adopted["epoch"]) == (
            member["container_id"],
            member["role"],
            member["epoch"],
        )
        assert run_id_after == run_id
        assert down.returncode == 0, down.stderr
        assert down.stdout.splitlines()[0].startswith("no runner answers at")
        assert _docker_names(label, running_only=False) == []
        assert not (state / "journal" / service).exists()

    async def test_a_second_runner_on_the_state_dir_is_refused(
        self, tmp_path: Path, docker_case: DockerLab, redis_image: str
    ) -> None:
        """A second runner on the same state directory exits 1 saying why."""
        spec = tmp_path / "spec.toml"
        service = docker_case.service("lock")
        spec.write_text(
            spec_text(service, redis_image, docker_case.labels), encoding="utf-8"
        )
        state = tmp_path / "state"
        async with open_runner_process(spec, state) as runner:
            second = await rolecall("run", str(spec), "--state-dir", str(state))

        assert second.returncode == 1
        assert second.stderr.splitlines() == [
            f"rolecall: another runner (pid {runner.pid}) holds the state"
            f" directory {str(state)!r}: stop it first, or give this one its"
            " own directory with --state-dir"
        ]


async def _converged_after(runner: RunnerProcess, service: str, mark: int) -> None:
    await runner.wait_for(
        "converged", after=mark, service=service, detail="redundant with 2 member(s)"
    )


async def _run_id(status: dict[str, object]) -> str:
    """The run id of the writer's Redis server: a restart changes it."""
    members = status["members"]
    assert isinstance(members, list)
    host, port = str(members[0]["published"]).rsplit(":", 1)
    client = aioredis.Redis(
        host=host, port=int(port), socket_timeout=10, decode_responses=True
    )
    try:
        server = await client.info("server")
    finally:
        await client.aclose()

    return str(server["run_id"])


async def _write_and_read(primary: str, replica: str) -> tuple[str, str]:
    """Write a key on the primary with the new password, wait until one
    replica has it, and read it there; (replicas that confirmed, value)."""
    clients = []
    for address in (primary, replica):
        host, port = address.rsplit(":", 1)
        clients.append(
            aioredis.Redis(
                host=host,
                port=int(port),
                password=NEW_SECRET,
                socket_timeout=10,
                decode_responses=True,
            )
        )
    writer, reader = clients
    try:
        await writer.set("after-reload", "v")
        confirmed = await writer.execute_command("WAIT", 1, 10_000)
        value = await reader.get("after-reload")
    finally:
        for client in clients:
            await client.aclose()

    return str(confirmed), str(value)


async def _lines_until(process: anyio.abc.Process, word: str) -> list[str]:
    """Lines of ``process``'s stdout up to the first naming ``word``."""
    assert process.stdout is not None
    lines: list[str] = []
    pending = ""
    with anyio.fail_after(LIMIT):
        async for chunk in process.stdout:
            pending += chunk.decode()
            *complete, pending = pending.split("\n")
            for line in complete:
                lines.append(line)
                if f" {word}:" in line:
                    return lines

    raise AssertionError(f"output ended before {word!r}: {lines}")
