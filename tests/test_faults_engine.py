"""The Docker engine itself restarted under the supervisor (case 8).

The test starts a second engine of its own, beside the one every other test
uses, so that restarting it touches nothing else: its own data root, exec
root, pidfile and socket under a temporary directory, and its own bridge
with an address range no other bridge or route uses. It is stopped by its
pid and its bridge deleted when the test ends, also on failure.

That engine runs without iptables rules (``--iptables=false``), so that it
leaves the host's firewall alone; its containers then have no name service
on their networks and cannot replicate by member name, so the role change
under way is a standalone's, held in its hook by the fault image's gate.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import anyio
import anyio.to_thread
import docker_support
import faults_support
import pytest
from attrs import define
from docker_support import DockerLab
from faults_support import (
    GATE_STARTED,
    events_until,
    fault_spec,
    sh,
    watch_logs,
)

from rolecall.actors import open_docker_runtime
from rolecall.hooks_protocol import Role
from rolecall.supervisor import open_supervisor
from rolecall.supervisor._naming import network_name

pytestmark = [pytest.mark.docker, pytest.mark.anyio, pytest.mark.timeout(240)]

docker_case = docker_support.docker_case
redis_image = docker_support.redis_image
fault_image = faults_support.fault_image

_READY_TIMEOUT = 60.0


@pytest.fixture
def anyio_backend() -> str:
    """The Docker runtime runs on asyncio only."""
    return "asyncio"


def _free_network(prefix: str, used: list[ipaddress.IPv4Network]) -> str:
    """The first ``prefix.N.0/24`` that overlaps no route of this host."""
    for third in range(10, 250):
        candidate = ipaddress.IPv4Network(f"{prefix}.{third}.0/24")
        if not any(candidate.overlaps(network) for network in used):
            return str(candidate)

    raise AssertionError(f"no free /24 under {prefix}.0.0/16 on this host")


def _routes() -> list[ipaddress.IPv4Network]:
    listing = subprocess.run(
        ["ip", "-4", "route", "show"], capture_output=True, text=True, check=True
    )
    networks = []
    for line in listing.stdout.splitlines():
        target = line.split()[0]
        if target != "default":
            networks.append(ipaddress.IPv4Network(target, strict=False))

    return networks


@define
class SecondEngine:
    """A dockerd of the test's own; start, restart and stop it by its pid."""

    root: Path
    bridge: str
    # A /24 no bridge or route of this host uses, for the test's network.
    subnet: str
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Where its API listens."""
        return f"unix://{self.root}/docker.sock"

    def start(self) -> None:
        """Start dockerd and wait until it says it is ready."""
        notify = self.root / "notify.sock"
        notify.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        listener.bind(str(notify))
        listener.settimeout(_READY_TIMEOUT)
        log = (self.root / "dockerd.log").open("ab")
        self.process = subprocess.Popen(
            [
                "dockerd",
                f"--data-root={self.root}/data",
                f"--exec-root={self.root}/exec",
                f"--pidfile={self.root}/docker.pid",
                f"--host={self.url}",
                f"--bridge={self.bridge}",
                "--iptables=false",
                "--ip-masq=false",
                "--storage-driver=overlay2",
                # No --default-address-pool: with one, dockerd deletes the
                # host's docker0 (the main engine's bridge) on a restart.
            ],
            stdout=log,
            stderr=log,
            env={**os.environ, "NOTIFY_SOCKET": str(notify)},
        )
        try:
            # dockerd tells a notify socket READY=1 once its API answers.
            while b"READY=1" not in listener.recv(4096):
                pass
        finally:
            listener.close()
            log.close()

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run the docker CLI against this engine."""
        return subprocess.run(
            ["docker", "-H", self.url, *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )

    def clear(self) -> None:
        """Remove every container and network made on this engine, so that
        no bridge of its networks outlives it on the host."""
        containers = self.cli("ps", "-aq").stdout.split()
        if containers:
            self.cli("rm", "-f", "-v", *containers)

        self.cli("network", "prune", "-f")

    def stop(self) -> None:
        """Stop dockerd by its pid and wait for it (and its containers)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return

        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)

    async def restart(self) -> None:
        """Stop it, then start it again, without blocking the event loop."""
        await anyio.to_thread.run_sync(self.stop)
        await anyio.to_thread.run_sync(self.start)


@pytest.fixture
def second_engine(fault_image: str) -> Iterator[SecondEngine]:
    """A second engine with the fault image loaded; gone after the test."""
    if shutil.which("dockerd") is None or shutil.which("ip") is None:
        pytest.skip("needs dockerd and ip on the PATH")

    if not Path("/sys/class/net/docker0").exists():
        pytest.skip("the main engine's docker0 bridge is missing")

    root = Path(tempfile.mkdtemp(prefix="rc-engine-", dir="/tmp"))
    routes = _routes()
    bridge_net = ipaddress.IPv4Network(_free_network("10.231", routes))
    engine = SecondEngine(
        root=root,
        bridge=f"rcbr{os.getpid() % 100000}",
        subnet=_free_network("10.232", routes),
    )
    gateway = f"{next(bridge_net.hosts())}/{bridge_net.prefixlen}"
    try:
        for command in (
            ["ip", "link", "add", engine.bridge, "type", "bridge"],
            ["ip", "addr", "add", gateway, "dev", engine.bridge],
            ["ip", "link", "set", engine.bridge, "up"],
        ):
            subprocess.run(command, check=True, capture_output=True)

        engine.start()
        _load(fault_image, engine)
        yield engine
    finally:
        if engine.process is not None:
            engine.clear()
        engine.stop()
        subprocess.run(
            ["ip", "link", "del", engine.bridge], check=False, capture_output=True
        )
        shutil.rmtree(root, ignore_errors=True)

    assert Path("/sys/class/net/docker0").exists(), "the main engine lost docker0"


def _load(image: str, engine: SecondEngine) -> None:
    save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
    try:
        loaded = subprocess.run(
            ["docker", "-H", engine.url, "load", "-q"],
            stdin=save.stdout,
            capture_output=True,
            check=False,
            timeout=300,
        )
    finally:
        if save.stdout is not None:
            save.stdout.close()
        save.wait(timeout=60)
    assert loaded.returncode == 0, loaded.stderr


async def test_an_engine_restart_during_a_role_change_ends_with_the_role_applied(
    second_engine: SecondEngine, docker_case: DockerLab, fault_image: str
) -> None:
    """Case 8: the engine restarts while a member's role hook runs; rolecall
    loses and reconnects its event stream, resyncs, restarts the member the
    engine stopped, and ends with the role applied under a newer epoch."""
    gate = {"*": {"role": {"gate": {"role": "standalone"}}}}
    spec = fault_spec(
        docker_case,
        fault_image,
        "engine",
        config={"fault": gate},
        supervision={"backoff_first": 0.1, "backoff_cap": 1.0},
    )
    member = f"{spec.name}-1"
    # The service's network, made first on an address range of the test's
    # choosing; rolecall finds it there and uses it.
    made = second_engine.cli(
        "network",
        "create",
        f"--subnet={second_engine.subnet}",
        *[f"--label={k}={v}" for k, v in docker_case.labels.items()],
        network_name(spec.name),
    )
    assert made.returncode == 0, made.stderr
    with watch_logs() as logs:
        async with (
            open_docker_runtime(second_engine.url) as runtime,
            open_supervisor(runtime, probe_interval=0.2) as supervisor,
            supervisor.open_timeline() as events,
        ):
            await supervisor.apply(spec)
            await events_until(events, lambda e: e.kind == "member_prepared")
            container = supervisor.status(spec.name).member(member).container_id
            # The role hook is under way once it has said so.
            assert await sh(runtime, container, f"cat {GATE_STARTED}") == "started\n"
            await second_engine.restart()
            seen = await events_until(
                events, lambda e: e.kind == "converged", within=120
            )
            after = supervisor.status(spec.name)

    kinds = [(e.kind, e.member) for e in seen]
    reconnected = [
        e["event"]
        for e in logs.entries
        if e.get("event") in ("engine_events_lost", "engine_events_ended")
    ]
    lost = next(e for e in seen if e.kind == "member_lost")

    assert reconnected
    assert lost.member == member
    assert kinds.index(("member_restarted", member)) < kinds.index(
        ("role_applied", member)
    )
    assert after.member(member).role is Role.STANDALONE
    assert after.member(member).container_id == container
    assert after.member(member).epoch >= 2
    assert after.converged
