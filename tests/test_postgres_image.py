"""The PostgreSQL example image and its hooks, on a real engine.

Each test runs the hooks the way the control plane does (``docker exec``
with a msgpack payload on stdin) and checks the outcome through PostgreSQL
itself (``psql`` inside the container, SQL on its stdin). What a test
creates carries its own case label and is removed by it.
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path
from typing import Any

import anyio
import docker_support
import msgpack
import pytest
from docker_support import DockerLab

from rolecall._images import ensure_image, image_tag, known_images, load_recipe

pytestmark = [pytest.mark.docker, pytest.mark.anyio, pytest.mark.timeout(120)]

# Fixtures shared through docker_support; pytest finds them by these names.
docker_case = docker_support.docker_case

HOOKS = "/opt/rolecall/hooks"
PASSWORD = f"pw '{uuid.uuid4().hex}' with: spaces"
EXIT_BAD_PAYLOAD = 65
EXIT_FAILED = 1
EXIT_RETRY_LATER = 75
ROWS = 500


@pytest.fixture
def anyio_backend() -> str:
    """The tests drive the docker CLI: asyncio only."""
    return "asyncio"


@pytest.fixture(scope="session")
def postgres_image(docker_engine: str) -> str:
    """The PostgreSQL image: built on first use, then reused by its tag."""
    return anyio.run(ensure_image, "postgres")


# -- members and hooks --------------------------------------------------------


def _docker(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


class HookRun:
    """What one hook run gave back."""

    def __init__(self, result: subprocess.CompletedProcess[bytes]) -> None:
        self.exit_code = result.returncode
        self.stderr = result.stderr.decode(errors="replace")
        self.reply: dict[str, Any] = {}
        if result.stdout:
            self.reply = msgpack.unpackb(result.stdout)

    @property
    def data(self) -> dict[str, Any]:
        assert self.exit_code == 0, self.stderr
        return dict(self.reply["data"])


class Member:
    """One container of the service under test, with its view of the others."""

    def __init__(self, lab: Lab, member_id: str) -> None:
        self.lab = lab
        self.id = member_id
        self.container = lab.case.name(member_id)
        self.address = f"{member_id}:5432"
        self.role: str | None = None
        self.epoch = 0

    def info(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "role": self.role,
            "address": self.address,
            "epoch": self.epoch,
        }

    async def create(self) -> None:
        labels = [
            a for k, v in self.lab.labels.items() for a in ("--label", f"{k}={v}")
        ]
        await anyio.run_process(
            [
                "docker",
                "run",
                "--detach",
                "--init",
                *labels,
                "--network",
                self.lab.network,
                "--network-alias",
                self.id,
                "--name",
                self.container,
                self.lab.image,
            ]
        )

    async def hook(
        self,
        name: str,
        *,
        request: dict[str, Any] | None = None,
        config: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
    ) -> HookRun:
        payload = {
            "protocol": 1,
            "hook": name,
            "service": "db",
            "member": self.info(),
            "members": [m.info() for m in self.lab.members],
            "config": config if config is not None else self.lab.config,
            "env": env if env is not None else self.lab.env,
            "request": request or {},
        }
        result = await anyio.run_process(
            ["docker", "exec", "--interactive", self.container, f"{HOOKS}/{name}"],
            input=msgpack.packb(payload),
            check=False,
        )
        return HookRun(result)

    async def ok(self, name: str, **options: Any) -> dict[str, Any]:
        """Run a hook that must succeed; return its data."""
        return (await self.hook(name, **options)).data

    async def take(self, role: str, epoch: int, primary: str | None = None) -> HookRun:
        """Run the role hook; on success the others see the new role."""
        run = await self.hook(
            "role", request={"role": role, "primary": primary, "epoch": epoch}
        )
        if run.exit_code == 0:
            self.role, self.epoch = role, epoch

        return run

    def sql(self, text: str) -> subprocess.CompletedProcess[str]:
        """Run SQL through psql inside the container, as postgres."""
        return _docker(
            "exec",
            "--interactive",
            self.container,
            "runuser",
            "-u",
            "postgres",
            "--",
            "psql",
            "-X",
            "-q",
            "-A",
            "-t",
            "-h",
            "/run/postgresql",
            "-v",
            "ON_ERROR_STOP=1",
            "-f",
            "-",
            stdin=text,
        )

    def rows(self) -> list[int]:
        result = self.sql("SELECT n FROM t ORDER BY n;")
        assert result.returncode == 0, result.stderr
        return [int(line) for line in result.stdout.split()]


class Lab:
    """A labelled network and the members on it, for one test."""

    def __init__(self, case: DockerLab, image: str) -> None:
        self.case = case
        self.image = image
        self.network = case.name("net")
        self.labels = case.labels
        self.members: list[Member] = []
        self.config: dict[str, Any] = {}
        self.env: dict[str, str] = {}

    async def bring_up(self, *ids: str) -> list[Member]:
        """Create members, then configure and start each."""
        created = [Member(self, member_id) for member_id in ids]
        self.members.extend(created)
        for member in created:
            await member.create()
            await member.ok("configure")
            await member.ok("start")

        return created


@pytest.fixture
def lab(docker_case: DockerLab, postgres_image: str) -> Lab:
    """A network for the test's members; the case label removes it all."""
    lab = Lab(docker_case, postgres_image)
    labels = [a for k, v in lab.labels.items() for a in ("--label", f"{k}={v}")]
    created = _docker("network", "create", *labels, lab.network)
    assert created.returncode == 0, created.stderr
    return lab


def _insert(member: Member, first: int, last: int) -> None:
    result = member.sql(
        "CREATE TABLE IF NOT EXISTS t (n int PRIMARY KEY);\n"
        f"INSERT INTO t SELECT generate_series({first}, {last});\n"
    )
    assert result.returncode == 0, result.stderr


async def _caught_up(replica: Member, primary: Member) -> dict[str, Any]:
    """Poll the replica's status until it has replayed all the primary wrote."""
    target = (await primary.ok("status"))["replication_offset"]
    with anyio.fail_after(30):
        while True:
            status = await replica.ok("status")
            if status["replication_offset"] >= target:
                return status

            await anyio.sleep(0.1)


# -- tests --------------------------------------------------------------------


def test_recipe_tag_covers_every_file() -> None:
    """The image tag hashes the recipe; hooks are executable, helpers are not."""
    recipe = load_recipe("postgres")
    paths = {f.path for f in recipe.files}
    executable = {f.path for f in recipe.files if f.executable}
    hooks = (
        "plan",
        "configure",
        "start",
        "stop",
        "role",
        "status",
        "backup",
        "restore",
        "export",
        "import",
    )

    assert "postgres" in known_images()
    assert image_tag("postgres") == recipe.tag
    assert recipe.tag.startswith("rolecall/postgres:")
    assert {"Dockerfile", "packages.txt", "hooks/pg_hooklib.py"} <= paths
    assert {"hooks/pg_datadir.py", "hooks/pg_replication.py"} <= paths
    assert {f"hooks/{hook}" for hook in hooks} <= executable
    assert not any(path.endswith(".py") for path in executable)
    assert "postgresql" in recipe.packages


async def test_plan_declares_roles_topologies_and_behaviours(lab: Lab) -> None:
    """Plan offers the four roles, both topologies, backups and moves."""
    (member,) = [Member(lab, "plan")]
    await member.create()

    data = await member.ok("plan")

    assert data == {
        "roles": ["standalone", "primary", "replica", "backup"],
        "topologies": ["standalone", "redundant"],
        "behaviours": ["backupable", "migratable"],
        "ports": [5432],
        "data_paths": ["/data"],
        "timeouts": {"role": 600, "start": 300},
    }


async def test_standalone_keeps_its_rows_across_stop_and_start(lab: Lab) -> None:
    """A standalone takes writes; stop, stop again and start keep every row."""
    (member,) = await lab.bring_up("solo")
    reconfigured = await member.ok("configure")
    started_again = await member.ok("start")
    applied = (await member.take("standalone", 1)).data
    _insert(member, 1, ROWS)
    status = await member.ok("status")

    stopped = await member.ok("stop")
    stopped_again = await member.ok("stop")
    down = await member.ok("status")
    restarted = await member.ok("start")

    assert reconfigured["changed"] is False
    assert started_again["started"] is False
    assert applied["role"] == "standalone"
    assert applied["how"] == "kept"
    assert status["healthy"] is True
    assert status["role"] == "standalone"
    assert status["link_up"] is None
    assert status["epoch"] == 1
    assert status["details"]["durability_in_force"] == "async"
    assert status["replication_offset"] > 0
    assert (stopped["stopped"], stopped_again["stopped"]) == (True, False)
    assert down["healthy"] is False
    assert down["details"]["running"] is False
    assert restarted["how"] == "restarted"
    assert member.rows() == list(range(1, ROWS + 1))


async def test_replica_streams_synchronously_and_takes_over(lab: Lab) -> None:
    """A sync replica holds every committed row, then is promoted; old epochs fail."""
    lab.config = {"durability": "sync"}
    lab.env = {"POSTGRES_PASSWORD": PASSWORD}
    primary, replica = await lab.bring_up("p1", "r1")
    await primary.take("primary", 1)
    joined = (await replica.take("replica", 1, "p1")).data
    _insert(primary, 1, ROWS)
    on_replica = replica.rows()
    primary_status = await primary.ok("status")
    replica_status = await replica.ok("status")
    ps = _docker("exec", replica.container, "ps", "-eo", "args")
    read_only = replica.sql("INSERT INTO t VALUES (0);")

    promoted = (await replica.take("primary", 2)).data
    stale = await replica.take("replica", 1, "p1")
    # Alone, a sync primary would hold this commit until a replica came.
    local = replica.sql("SET synchronous_commit TO local; INSERT INTO t VALUES (0);")

    (listed,) = primary_status["details"]["replicas"]
    assert joined["how"] == "clone"
    assert joined["link_up"] is True
    # remote_apply: a committed row is on the replica when the commit returns.
    assert on_replica == list(range(1, ROWS + 1))
    assert primary_status["details"]["durability"] == "sync"
    assert primary_status["details"]["durability_in_force"] == "sync"
    assert primary_status["details"]["synchronous_commit"] == "remote_apply"
    assert (listed["name"], listed["sync_state"]) == ("replica", "quorum")
    assert replica_status["role"] == "replica"
    assert replica_status["details"]["synced"] is True
    assert replica_status["replication_offset"] == primary_status["replication_offset"]
    assert replica_status["details"]["timeline"] == 1
    assert "read-only transaction" in read_only.stderr
    assert PASSWORD not in ps.stdout
    assert promoted["how"] == "promoted"
    assert promoted["timeline"] == 2
    assert stale.exit_code == EXIT_FAILED
    assert "stale epoch 1" in stale.stderr
    assert PASSWORD not in stale.stderr
    assert local.returncode == 0, local.stderr
    assert replica.rows() == list(range(ROWS + 1))


async def test_replica_without_its_primary_reports_no_progress(lab: Lab) -> None:
    """A replica whose primary is down asks to retry and reports offset 0."""
    primary, replica = await lab.bring_up("p2", "r2")
    await primary.take("primary", 1)
    await primary.ok("stop")

    attempt = await replica.take("replica", 1, "p2")
    status = await replica.ok("status")

    assert attempt.exit_code == EXIT_RETRY_LATER
    assert "does not answer" in attempt.stderr
    assert status["role"] == "replica"
    assert status["details"]["synced"] is False
    assert status["link_up"] is False
    assert status["replication_offset"] == 0


async def test_old_primary_rejoins_by_rewind_without_taking_writes(lab: Lab) -> None:
    """A killed primary stays down on start, then rewinds and follows the new one."""
    old, new = await lab.bring_up("p3", "r3")
    await old.take("primary", 1)
    await new.take("replica", 1, "p3")
    _insert(old, 1, ROWS)
    await _caught_up(new, old)
    # Diverge: rows the replica never sees, then the primary dies.
    await new.ok("stop")
    _insert(old, 9001, 9010)
    _docker("kill", old.container)
    await new.ok("start")
    await new.take("primary", 2)
    _insert(new, ROWS + 1, ROWS + 5)

    _docker("start", old.container)
    await old.ok("configure")
    fenced = await old.ok("start")
    refused = old.sql("SELECT 1;")
    stale = await old.take("primary", 1)
    rejoined = (await old.take("replica", 2, "r3")).data
    _insert(new, ROWS + 6, ROWS + 7)
    status = await _caught_up(old, new)
    writes = old.sql("INSERT INTO t VALUES (0);")

    assert fenced["running"] is False
    assert fenced["fenced_by"] == "r3"
    assert refused.returncode != 0
    assert stale.exit_code == EXIT_FAILED
    assert "may only follow" in stale.stderr
    assert rejoined["how"] == "rewind"
    assert rejoined["timeline"] == 2
    assert status["link_up"] is True
    assert status["details"]["timeline"] == 2
    assert "read-only transaction" in writes.stderr
    assert old.rows() == new.rows() == list(range(1, ROWS + 8))


async def test_configure_refuses_reserved_settings_and_bad_durability(
    lab: Lab,
) -> None:
    """Configure rejects settings the hooks own and unknown durabilities;
    with the files written but no stamp of a run that got to its end (one
    killed before its reload), it does not answer ``changed: false``."""
    member = Member(lab, "cfg")
    lab.members.append(member)
    await member.create()
    extra = {"postgres": {"work_mem": "8MB", "log_min_duration_statement": 250}}

    reserved = await member.hook("configure", config={"postgres": {"port": 6000}})
    bad_name = await member.hook("configure", config={"postgres": {"a b": 1}})
    durability = await member.hook("configure", config={"durability": "eventual"})
    first = await member.ok("configure", config=extra)
    again = await member.ok("configure", config=extra)
    written = _docker("exec", member.container, "cat", "/etc/rolecall/postgresql.conf")
    _docker("exec", member.container, "rm", "/etc/rolecall/configure.applied")
    cut_short = await member.ok("configure", config=extra)

    assert reserved.exit_code == EXIT_BAD_PAYLOAD
    assert "postgres.port" in reserved.stderr
    assert bad_name.exit_code == EXIT_BAD_PAYLOAD
    assert durability.exit_code == EXIT_BAD_PAYLOAD
    assert "'eventual'" in durability.stderr
    assert first["changed"] is True
    assert again["changed"] is False
    assert cut_short["changed"] is True
    assert "work_mem = '8MB'\n" in written.stdout
    assert "log_min_duration_statement = 250\n" in written.stdout


async def test_export_then_import_moves_every_row(lab: Lab, tmp_path: Path) -> None:
    """An export copied out through the engine loads into another member."""
    source, target = await lab.bring_up("from", "to")
    await source.take("standalone", 1)
    await target.take("standalone", 1)
    _insert(source, 1, ROWS)
    made = source.sql("CREATE ROLE reader; GRANT SELECT ON t TO reader;")

    exported = await source.ok("export", request={"path": "/data/exports/e1"})
    again = await source.ok("export", request={"path": "/data/exports/e1"})
    for copy in (
        [f"{source.container}:/data/exports/e1", str(tmp_path)],
        [str(tmp_path / "e1"), f"{target.container}:/data/"],
    ):
        assert _docker("cp", *copy).returncode == 0

    imported = await target.ok("import", request={"path": "/data/e1"})
    repeated = await target.ok("import", request={"path": "/data/e1"})
    grants = target.sql("SELECT has_table_privilege('reader', 't', 'SELECT');")

    assert made.returncode == 0, made.stderr
    assert exported["taken"] is True
    assert again["taken"] is False
    assert "postgres.dump" in exported["files"]
    assert "globals.sql" in exported["files"]
    assert imported["imported"] is True
    assert repeated["imported"] is False
    assert grants.stdout.strip() == "t"
    assert target.rows() == list(range(1, ROWS + 1))
