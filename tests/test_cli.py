"""The ``rolecall`` command, run the way a user runs it: the installed script.

Each test starts the console script next to this interpreter as a child
process and reads its exit code, stdout and stderr.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import anyio
import docker_support
import pytest
from docker_support import DockerLab

from rolecall import __version__
from rolecall.actors import DockerRuntime
from rolecall.supervisor import LABEL_MANAGED, ServiceSpec, open_supervisor

pytestmark = pytest.mark.timeout(120)

# Fixtures shared through docker_support; pytest finds them by these names.
docker_case = docker_support.docker_case
redis_image = docker_support.redis_image

ROLECALL = Path(sys.executable).with_name("rolecall")
LIMIT = 60  # seconds; every command here answers in a few


@pytest.fixture
def anyio_backend() -> str:
    """The Docker runtime runs on asyncio only."""
    return "asyncio"


def _rolecall(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROLECALL), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=LIMIT,
    )


async def _rolecall_async(*args: str) -> subprocess.CompletedProcess[bytes]:
    with anyio.fail_after(LIMIT):
        return await anyio.run_process([str(ROLECALL), *args], check=False)


def _commands(help_text: str) -> list[str]:
    """The command names the top-level help lists under COMMAND."""
    block = help_text.split("  COMMAND\n", 1)[1].split("\n\n", 1)[0]
    return re.findall(r"^    (\S+)", block, flags=re.MULTILINE)


# -- no engine needed ---------------------------------------------------------


def test_help_shows_an_example_for_every_command() -> None:
    """Top-level help lists the commands; each command's help shows an example."""
    top = _rolecall("--help")
    commands = _commands(top.stdout)
    helps = {command: _rolecall(command, "--help") for command in commands}

    assert top.returncode == 0
    assert set(commands) == {
        "demo",
        "run",
        "status",
        "convert",
        "switchover",
        "move",
        "pause",
        "resume",
        "plan",
        "down",
        "events",
    }
    assert "exit codes:" in top.stdout
    for command, shown in helps.items():
        assert shown.returncode == 0
        assert f"example: rolecall {command}" in shown.stdout


def test_version_prints_the_package_version() -> None:
    """--version prints the installed version and exits 0."""
    shown = _rolecall("--version")

    assert shown.returncode == 0
    assert shown.stdout == f"rolecall {__version__}\n"


@pytest.mark.parametrize("command", ["status", "demo"])
def test_no_engine_exits_3_with_one_line(tmp_path: Path, command: str) -> None:
    """With no engine at the address, the command says so in one line, exit 3."""
    socket = tmp_path / "nope.sock"
    ran = _rolecall("--docker-url", f"unix://{socket}", command)
    lines = ran.stderr.splitlines()

    assert ran.returncode == 3
    assert len(lines) == 1
    assert lines[0].startswith("rolecall: no Docker engine answers at")
    assert str(socket) in lines[0]
    assert "Traceback" not in ran.stderr


@pytest.mark.parametrize(
    "args",
    [
        pytest.param([], id="no-command"),
        pytest.param(["bogus"], id="unknown-command"),
        pytest.param(["demo", "--keys", "0"], id="bad-value"),
        pytest.param(["--docker-url", "nope", "status"], id="bad-url"),
    ],
)
def test_bad_command_line_exits_2(args: list[str]) -> None:
    """A command line rolecall cannot read shows the usage and exits 2."""
    ran = _rolecall(*args)

    assert ran.returncode == 2
    assert "usage: rolecall" in ran.stderr
    assert "Traceback" not in ran.stderr


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["convert", "cache", "redundant"], id="convert"),
        pytest.param(["switchover", "cache", "cache-2"], id="switchover"),
        pytest.param(["pause", "cache"], id="pause"),
        pytest.param(["events", "--follow"], id="events"),
        pytest.param(["plan", "cache"], id="plan"),
    ],
)
def test_no_runner_exits_4_with_one_line(tmp_path: Path, args: list[str]) -> None:
    """A command that needs a runner says none answers and how to start one."""
    ran = _rolecall(*args, "--state-dir", str(tmp_path))

    assert ran.returncode == 4
    assert ran.stderr.splitlines() == [
        f"rolecall: no runner answers at {str(tmp_path / 'control.sock')!r}:"
        " start one with `rolecall run SPEC`, or pass the runner's --state-dir"
    ]


def test_down_without_the_name_removes_nothing(tmp_path: Path) -> None:
    """down asks for the service's name and stops, exit 1, on another answer."""
    ran = subprocess.run(
        [str(ROLECALL), "down", "cache", "--state-dir", str(tmp_path)],
        input="yes\n",
        capture_output=True,
        text=True,
        check=False,
        timeout=LIMIT,
    )

    assert ran.returncode == 1
    assert ran.stderr.splitlines()[-1].endswith(
        "rolecall: not confirmed; nothing was removed"
    )
    assert "Type the service's name to confirm" in ran.stderr


def test_run_with_a_broken_spec_exits_1_with_one_line(tmp_path: Path) -> None:
    """rolecall run refuses a spec file with errors before touching anything."""
    spec = tmp_path / "spec.toml"
    spec.write_text("[services.cache]\nexample = 'redis'\nreplicas = 'two'\n")
    ran = _rolecall("run", str(spec), "--state-dir", str(tmp_path / "state"))

    assert ran.returncode == 1
    assert ran.stderr.splitlines() == [
        f"rolecall: {spec}: services.cache.replicas must be a whole number, got 'two'"
    ]
    assert not (tmp_path / "state").exists()


# -- on the engine ------------------------------------------------------------


@pytest.mark.docker
@pytest.mark.anyio
async def test_status_with_no_services_says_so(docker_runtime: DockerRuntime) -> None:
    """With no managed container on the engine, status says there is none."""
    if await docker_runtime.list_containers(labels={LABEL_MANAGED: "true"}):
        pytest.skip("services of another run are on this engine")

    table = await _rolecall_async("status")
    as_json = await _rolecall_async("status", "--json")

    assert table.returncode == 0
    assert table.stdout == b"no services\n"
    assert as_json.returncode == 0
    assert json.loads(as_json.stdout) == []


@pytest.mark.docker
@pytest.mark.anyio
async def test_status_json_shows_a_running_service(
    docker_runtime: DockerRuntime, docker_case: DockerLab, redis_image: str
) -> None:
    """status --json shows each member's role, health and published address."""
    spec = ServiceSpec(
        name=docker_case.service("cli"), image=redis_image, labels=docker_case.labels
    )
    async with open_supervisor(docker_runtime) as supervisor:
        await supervisor.apply(spec)
        status = await supervisor.wait_converged(spec.name, timeout=LIMIT)
        shown = await _rolecall_async("status", "--json")
    services = {s["name"]: s for s in json.loads(shown.stdout)}
    (row,) = services[spec.name]["members"]
    offset = row.pop("offset")
    member = status.writer
    assert member is not None

    assert shown.returncode == 0
    assert isinstance(offset, int)
    assert row == {
        "id": member.id,
        "container": member.container_name,
        "state": "running",
        "role": "standalone",
        "healthy": True,
        "epoch": member.epoch,
        "published": member.published,
        "error": None,
        "engine": "default",
    }


@pytest.mark.docker
@pytest.mark.usefixtures("docker_engine")
def test_down_after_a_killed_runner_falls_back_to_the_engine(tmp_path: Path) -> None:
    """A socket file left by a killed runner does not stop `down` from working."""
    stale = tmp_path / "control.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(stale))
    listener.close()  # the file stays, as after kill -9; nobody answers

    done = _rolecall("--state-dir", str(tmp_path), "down", "nosuch", "--yes")

    assert stale.exists()
    assert done.returncode == 1
    assert "no runner answers at" in done.stdout
    assert done.stderr.startswith("rolecall: the engine at ")
    assert (
        "holds no container of a service named 'nosuch'; nothing was removed"
        in done.stderr
    )
