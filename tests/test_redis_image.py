"""The Redis example image and its hooks, on a real engine.

Each test runs the hooks the way the control plane does (``docker exec`` with
a msgpack payload on stdin) and checks the outcome through Redis itself, on
ports the containers publish on loopback. Every container and network made
here carries the ``io.rolecall.test`` label of this run and is removed by it.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import anyio
import msgpack
import pytest
import redis.asyncio as aioredis
from attrs import frozen

from rolecall._images import ensure_image, image_tag, known_images, load_recipe

pytestmark = [pytest.mark.docker, pytest.mark.anyio, pytest.mark.timeout(180)]

LABEL = "io.rolecall.test"
SUITE_LABEL = "io.rolecall.test.suite"
OWNER_LABEL = "io.rolecall.test.pid"
SUITE = "redis-image"
HOOKS = "/opt/rolecall/hooks"
PASSWORD = f'pw "{uuid.uuid4().hex}" with spaces'
EXIT_FAILED = 1
EXIT_BAD_PAYLOAD = 65


@pytest.fixture
def anyio_backend() -> str:
    """The tests drive the docker CLI and redis' asyncio client: asyncio only."""
    return "asyncio"


# -- engine and image ---------------------------------------------------------


def _docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, check=check
    )


def _remove_labelled(label: str) -> None:
    containers = _docker("ps", "-aq", "--filter", f"label={label}").stdout.split()
    if containers:
        _docker("rm", "-f", "-v", *containers, check=False)

    networks = _docker("network", "ls", "-q", "--filter", f"label={label}")
    for network in networks.stdout.split():
        _docker("network", "rm", network, check=False)


def _remove_leftovers() -> None:
    """Remove what earlier runs of this module left, if their process is gone."""
    owners: set[str] = set()
    for kind in (["ps", "-a"], ["network", "ls"]):
        listing = _docker(
            *kind,
            "--filter",
            f"label={SUITE_LABEL}={SUITE}",
            "--format",
            f'{{{{.Label "{OWNER_LABEL}"}}}}',
        )
        owners.update(listing.stdout.split())

    for owner in owners:
        if owner.isdigit() and not _alive(int(owner)):
            _remove_labelled(f"{OWNER_LABEL}={owner}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True

    return True


@pytest.fixture(scope="session")
def redis_image() -> str:
    """The Redis image, built by the builder unless its tag exists."""
    info = subprocess.run(["docker", "info"], capture_output=True, check=False)
    if info.returncode != 0:
        message = "no Docker engine answers; start one or deselect -m 'not docker'"
        if os.environ.get("ROLECALL_REQUIRE_DOCKER") == "1":
            pytest.fail(message)

        pytest.skip(message)

    return anyio.run(ensure_image, "redis")


@frozen
class Lab:
    """Where this module's containers live: one network, one label value."""

    image: str
    run_id: str
    network: str

    @property
    def labels(self) -> list[str]:
        pairs = {
            LABEL: self.run_id,
            SUITE_LABEL: SUITE,
            OWNER_LABEL: str(os.getpid()),
        }
        return [arg for k, v in pairs.items() for arg in ("--label", f"{k}={v}")]


@pytest.fixture(scope="module")
def lab(redis_image: str) -> Iterator[Lab]:
    """A labelled network for the module's containers, removed afterwards."""
    _remove_leftovers()
    run_id = f"{SUITE}-{uuid.uuid4().hex[:8]}"
    lab = Lab(image=redis_image, run_id=run_id, network=f"rc-{run_id}")
    _docker("network", "create", *lab.labels, lab.network)
    try:
        yield lab
    finally:
        _remove_labelled(f"{LABEL}={run_id}")


# -- members and hooks --------------------------------------------------------


class HookRun:
    """What one hook run gave back."""

    def __init__(self, result: subprocess.CompletedProcess[bytes]) -> None:
        self.exit_code = result.returncode
        self.stderr = result.stderr.decode(errors="replace")
        self.reply: dict[str, Any] = {}
        if result.returncode == 0 and result.stdout:
            self.reply = msgpack.unpackb(result.stdout)

    @property
    def data(self) -> dict[str, Any]:
        assert self.exit_code == 0, self.stderr
        return dict(self.reply["data"])


class Member:
    """One container of the service under test."""

    def __init__(self, lab: Lab, member_id: str) -> None:
        self.lab = lab
        self.id = member_id
        self.container = f"rc-{lab.run_id}-{member_id}"
        self.address = f"{self.container}:6379"
        self.port = 0

    def info(self, role: str | None = None, epoch: int = 0) -> dict[str, Any]:
        return {"id": self.id, "role": role, "address": self.address, "epoch": epoch}

    async def create(self) -> None:
        await _run_docker(
            "run",
            "--detach",
            "--init",
            *self.lab.labels,
            "--network",
            self.lab.network,
            "--name",
            self.container,
            "--publish",
            "127.0.0.1::6379",
            self.lab.image,
        )
        await self.read_port()

    async def read_port(self) -> None:
        """Learn the published port; it changes when the container restarts."""
        published = await _run_docker("port", self.container, "6379/tcp")
        self.port = int(published.stdout.decode().split()[0].rpartition(":")[2])

    async def hook(
        self,
        name: str,
        *,
        members: list[Member] | None = None,
        roster: list[dict[str, Any]] | None = None,
        request: dict[str, Any] | None = None,
        config: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
    ) -> HookRun:
        """Run hook ``name``; ``roster`` gives members with roles and epochs."""
        payload = {
            "protocol": 1,
            "hook": name,
            "service": "cache",
            "member": self.info(),
            "members": roster or [m.info() for m in members or [self]],
            "config": config or {},
            "env": env or {},
            "request": request or {},
        }
        result = await anyio.run_process(
            [
                "docker",
                "exec",
                "--interactive",
                "--env",
                "ROLECALL_ENCODING=msgpack",
                self.container,
                f"{HOOKS}/{name}",
            ],
            input=msgpack.packb(payload),
            check=False,
        )
        return HookRun(result)

    async def ok(self, name: str, **options: Any) -> dict[str, Any]:
        """Run a hook that must succeed; return its data."""
        return (await self.hook(name, **options)).data

    def client(self, password: str | None = None) -> aioredis.Redis:
        return aioredis.Redis(
            host="127.0.0.1", port=self.port, password=password, socket_timeout=5
        )


async def _run_docker(*args: str) -> subprocess.CompletedProcess[bytes]:
    return await anyio.run_process(["docker", *args])


async def _bring_up(
    lab: Lab,
    *ids: str,
    config: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
) -> list[Member]:
    members = [Member(lab, member_id) for member_id in ids]
    for member in members:
        await member.create()
        await member.ok("configure", config=config, env=env)
        await member.ok("start", members=members)

    return members


async def wait_for(
    check: Callable[[], Awaitable[bool]], *, timeout: float = 30.0
) -> None:
    """Poll ``check`` until it holds; fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s")

        await anyio.sleep(0.05)


def _role(role: str, epoch: int, primary: str | None = None) -> dict[str, Any]:
    return {"request": {"role": role, "primary": primary, "epoch": epoch}}


# -- tests --------------------------------------------------------------------


def test_recipe_tag_covers_every_file() -> None:
    """The image tag is a hash over the recipe's files and the SDK."""
    recipe = load_recipe("redis")
    paths = {f.path for f in recipe.files}
    executable = {f.path for f in recipe.files if f.executable}
    hooks = ("plan", "configure", "start", "stop", "role", "status")
    data_hooks = ("export", "import")

    assert "redis" in known_images()
    assert image_tag("redis") == recipe.tag
    assert recipe.tag.startswith("rolecall/redis:")
    assert {"Dockerfile", "packages.txt", "hooks/redis_hooklib.py"} <= paths
    assert executable == {f"hooks/{hook}" for hook in (*hooks, *data_hooks)}
    assert "hooks/redis_snapshot.py" in paths
    assert "redis-server" in recipe.packages


async def test_image_is_labelled_and_reused(lab: Lab) -> None:
    """The image carries the hook labels, and a second ensure reuses its tag."""
    result = await _run_docker(
        "image", "inspect", "--format", "{{json .Config.Labels}}", lab.image
    )
    labels = result.stdout.decode()

    assert '"io.rolecall.hooks.mode":"native"' in labels
    assert '"io.rolecall.hooks.encoding":"msgpack"' in labels
    assert lab.image == await ensure_image("redis")


async def test_plan_declares_capabilities(lab: Lab) -> None:
    """Plan reports the roles, topologies, port and data path of the image."""
    member = Member(lab, "plan")
    await member.create()

    data = await member.ok("plan")

    assert data == {
        "roles": ["standalone", "primary", "replica"],
        "topologies": ["standalone", "redundant"],
        "behaviours": ["migratable", "switchover"],
        "ports": [6379],
        "data_paths": ["/data"],
        "timeouts": {},
        "moves": ["replication", "export"],
    }


async def test_standalone_serves_writes_and_survives_stop(lab: Lab) -> None:
    """A standalone member takes writes, and stop then start keeps them."""
    (member,) = await _bring_up(lab, "solo", config={"maxmemory": "64mb"})
    applied = await member.ok("role", **_role("standalone", 1))
    client = member.client()
    try:
        await client.set("greeting", "hello")
        before = await member.ok("status")
        await client.incrby("counter", 41)
        maxmemory = await client.config_get("maxmemory")
    finally:
        await client.aclose()

    after = await member.ok("status")
    stopped = await member.ok("stop")
    stopped_again = await member.ok("stop")
    down = await member.ok("status")
    await member.ok("start")
    client = member.client()
    try:
        values = await client.mget("greeting", "counter")
    finally:
        await client.aclose()

    assert applied["role"] == "standalone"
    assert before["role"] == "standalone"
    assert before["healthy"] is True
    assert before["link_up"] is None
    assert after["epoch"] == before["epoch"] == 1
    assert maxmemory == {"maxmemory": str(64 << 20)}
    assert (stopped["stopped"], stopped_again["stopped"]) == (True, False)
    assert down["healthy"] is False
    assert values == [b"hello", b"41"]


async def test_replica_follows_and_takes_over(lab: Lab) -> None:
    """A replica gets the primary's acknowledged writes and can be promoted."""
    env = {"REDIS_PASSWORD": PASSWORD}
    primary, replica = await _bring_up(lab, "p1", "r1", env=env)
    members = [primary, replica]
    keys = [f"key:{i}" for i in range(1000)]
    await primary.ok("role", members=members, **_role("primary", 1))
    joined = await replica.ok("role", members=members, **_role("replica", 1, "p1"))
    writer = primary.client(PASSWORD)
    reader = replica.client(PASSWORD)
    try:
        idle = await replica.ok("status")
        await writer.mset({key: key for key in keys})
        acked = await writer.wait(1, 5000)
        copied = await reader.mget(keys)
        primary_status = await primary.ok("status")
        target = primary_status["replication_offset"]

        async def caught_up() -> bool:
            status = await replica.ok("status")
            return bool(status["replication_offset"] >= target)

        await wait_for(caught_up)
        replica_status = await replica.ok("status")
        promoted = await replica.ok("role", members=members, **_role("primary", 2))
        await reader.set("after-failover", "yes")
        stale = await replica.hook("role", members=members, **_role("replica", 1, "p1"))
        ps = await _run_docker("exec", replica.container, "ps", "-eo", "args")
    finally:
        await writer.aclose()
        await reader.aclose()

    assert joined["role"] == "replica"
    assert joined["link_up"] is True
    assert acked == 1
    assert copied == [key.encode() for key in keys]
    assert primary_status["details"]["connected_replicas"] == 1
    assert replica_status["role"] == "replica"
    assert replica_status["link_up"] is True
    assert replica_status["details"]["synced"] is True
    assert replica_status["replication_offset"] >= target > idle["replication_offset"]
    assert promoted["role"] == "primary"
    assert promoted["epoch"] == 2
    assert stale.exit_code == EXIT_FAILED
    assert "stale epoch 1" in stale.stderr
    assert PASSWORD not in ps.stdout.decode()
    assert PASSWORD not in stale.stderr


async def test_unsynced_replica_reports_no_progress(lab: Lab) -> None:
    """A replica that never synced reports offset 0, so failover skips it."""
    primary = Member(lab, "p2")
    replica = Member(lab, "r2")
    members = [primary, replica]
    await primary.create()
    await replica.create()
    await primary.ok("configure")
    await replica.ok("configure")

    recorded = await replica.ok("role", members=members, **_role("replica", 1, "p2"))
    await replica.ok("start", members=members)
    status = await replica.ok("status")

    assert recorded["running"] is False
    assert status["role"] == "replica"
    assert status["healthy"] is True
    assert status["details"]["redis_role"] == "slave"
    assert status["details"]["synced"] is False
    assert status["link_up"] is False
    assert status["replication_offset"] == 0


async def test_replica_keeps_following_after_restart(lab: Lab) -> None:
    """After its container is killed and started, a replica follows again."""
    primary, replica = await _bring_up(lab, "p3", "r3")
    members = [primary, replica]
    await primary.ok("role", members=members, **_role("primary", 4))
    await replica.ok("role", members=members, **_role("replica", 4, "p3"))

    await _run_docker("kill", replica.container)
    await _run_docker("start", replica.container)
    restarted = await replica.ok("start", members=members)
    writer = primary.client()
    try:
        await writer.set("written-after-restart", "1")
        acked = await writer.wait(1, 10000)
    finally:
        await writer.aclose()

    status = await replica.ok("status")

    assert restarted["started"] is True
    assert restarted["role"] == "replica"
    assert acked == 1
    assert status["link_up"] is True
    assert status["epoch"] == 4


async def test_a_replaced_primary_comes_back_read_only_and_follows(
    lab: Lab,
) -> None:
    """A former primary whose payload shows another writer under a newer
    epoch starts as that writer's replica: it refuses writes at once, copies
    what the new writer took, and the role hook then makes it final."""
    old, new = await _bring_up(lab, "p5", "r5")
    members = [old, new]
    await old.ok("role", members=members, **_role("primary", 1))
    await new.ok("role", members=members, **_role("replica", 1, "p5"))
    await _run_docker("kill", old.container)
    await new.ok("role", members=members, **_role("primary", 2))
    writer = new.client()
    try:
        await writer.set("after-failover", "1")
    finally:
        await writer.aclose()

    await _run_docker("start", old.container)
    await old.read_port()
    roster = [old.info("primary", 1), new.info("primary", 2)]
    restarted = await old.ok("start", roster=roster)
    client = old.client()
    try:
        with pytest.raises(aioredis.ResponseError, match="read only replica"):
            await client.set("late", "x")

        async def copied() -> bool:
            return bool(await client.get("after-failover") == b"1")

        await wait_for(copied)
        joined = await old.ok("role", roster=roster, **_role("replica", 3, "r5"))
        late = await client.get("late")
    finally:
        await client.aclose()

    assert restarted["started"] is True
    assert restarted["fenced_by"] == "r5"
    assert restarted["epoch"] == 1
    assert joined["role"] == "replica"
    assert joined["link_up"] is True
    assert late is None


async def test_configure_refuses_reserved_directives(lab: Lab) -> None:
    """Configure rejects directives the hooks own, as a bad payload."""
    member = Member(lab, "cfg")
    await member.create()
    extra = {"redis": {"maxmemory-policy": "allkeys-lru"}}

    reserved = await member.hook("configure", config={"redis": {"dir": "/tmp"}})
    bad_name = await member.hook("configure", config={"redis": {"a b": "1"}})
    first = await member.ok("configure", config=extra)
    again = await member.ok("configure", config=extra)

    assert reserved.exit_code == EXIT_BAD_PAYLOAD
    assert "redis.dir" in reserved.stderr
    assert bad_name.exit_code == EXIT_BAD_PAYLOAD
    assert first["changed"] is True
    assert again["changed"] is False


async def test_configure_finishes_a_run_cut_short(lab: Lab) -> None:
    """A configure killed after writing a new password to the file, before
    Redis took it: the next run with that password does not answer
    ``changed: false`` but applies it, and Redis then refuses the old one."""
    old, new = "cut-old-pw", "cut-new-pw"
    (member,) = await _bring_up(lab, "cut", env={"REDIS_PASSWORD": old})
    kept = ("/etc/rolecall/redis.applied", "/etc/rolecall/redis.auth")
    await _run_docker("exec", member.container, "cp", "-p", *kept, "/tmp/")
    await member.ok("configure", env={"REDIS_PASSWORD": new})
    # Back to what the cut-short run left: the new file, the rest as before.
    await _run_docker(
        "exec",
        member.container,
        "cp",
        "-p",
        "/tmp/redis.applied",
        "/tmp/redis.auth",
        "/etc/rolecall/",
    )
    client = member.client(new)
    try:
        await client.config_set("masterauth", old)
        await client.config_set("requirepass", old)
    finally:
        await client.aclose()

    again = await member.ok("configure", env={"REDIS_PASSWORD": new})
    accepted = []
    for password in (old, new):
        client = member.client(password)
        try:
            accepted.append(await client.ping())
        except aioredis.AuthenticationError:
            accepted.append(False)
        finally:
            await client.aclose()

    assert again["changed"] is True
    assert accepted == [False, True]
