"""Slots for second engines: the address range, bridge and port each owns.

Several test sessions may each run a second engine at once. A session
claims a free slot by an atomic rename of its run directory; a slot whose
owner process has ended is released by the next session: its ``dockerd``
and managed ``containerd`` stopped by their pid files, its mounts
released, and its bridges (and those of networks made on that engine)
deleted.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = [
    "DATA_BASE",
    "PORT_BASE",
    "RUN_BASE",
    "SLOTS",
    "SecondEngineError",
    "bridge_name",
    "children",
    "claim_slot",
    "clean_stale",
    "forwarding",
    "process_identity",
    "release_slot",
    "slot_network",
]

RUN_BASE = Path("/run/rolecall-second-engine")
DATA_BASE = Path("/var/lib/rolecall-second-engine")
SLOTS = 6
PORT_BASE = 23760
MANUAL = "manual"
_STOP_TIMEOUT = 20.0

children: dict[int, subprocess.Popen[bytes]] = {}
"""The dockerd processes this process started, by slot, so that releasing
a slot also reaps its dockerd."""


class SecondEngineError(Exception):
    """The second engine could not be started or used."""


def process_identity(pid: int) -> str | None:
    """``pid:start-time`` of a live process; ``None`` once it has ended."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except OSError:
        return None

    start = stat.rsplit(")", 1)[1].split()[19]
    return f"{pid}:{start}"


def owner_alive(owner: str) -> bool:
    if owner == MANUAL:
        return True

    pid, _, _ = owner.partition(":")
    return pid.isdigit() and process_identity(int(pid)) == owner


def _pid_of(pidfile: Path, command: str) -> int | None:
    """The pid a pid file names, when it is a live ``command`` process."""
    try:
        pid = int(pidfile.read_text(encoding="utf-8").strip())
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except (OSError, ValueError):
        return None

    # ``pid (comm) state ...``; a zombie has ended, whatever its name.
    comm, _, rest = stat.partition(" (")[2].rpartition(") ")
    return pid if comm == command and not rest.startswith("Z") else None


def _end_process(pidfile: Path, command: str) -> None:
    """SIGTERM the pid file's process, SIGKILL it if it outlives the wait."""
    pid = _pid_of(pidfile, command)
    if pid is None:
        return

    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + _STOP_TIMEOUT
    while time.monotonic() < deadline:
        if _pid_of(pidfile, command) != pid:
            return
        time.sleep(0.1)  # not our child: its exit is polled by pid file

    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def slot_network(slot: int) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(f"10.{231 + slot}.0.0/16")


def bridge_name(slot: int) -> str:
    return f"rc-engine{slot}"


def _routes() -> list[ipaddress.IPv4Network]:
    listing = subprocess.run(
        ["ip", "-4", "route", "show", "table", "all"],
        capture_output=True,
        text=True,
        check=True,
    )
    routes = []
    for line in listing.stdout.splitlines():
        words = line.split()
        words = words[1:] if words[0] in ("local", "broadcast") else words
        with contextlib.suppress(ValueError, IndexError):
            routes.append(ipaddress.IPv4Network(words[0], strict=False))

    return routes


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        # dockerd binds with SO_REUSEADDR, so connections of a stopped
        # engine still in TIME_WAIT do not make the port busy for it.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False

    return True


def release_slot(slot: int) -> None:
    """Stop a slot's processes, unmount, delete its bridge and run dir."""
    directory = RUN_BASE / f"slot{slot}"
    _end_process(directory / "dockerd.pid", "dockerd")
    child = children.pop(slot, None)
    if child is not None:
        child.wait(timeout=_STOP_TIMEOUT)

    _end_process(directory / "exec/containerd/containerd.pid", "containerd")
    mounts = Path("/proc/mounts").read_text(encoding="utf-8").splitlines()
    inside = [line.split()[1] for line in mounts if f"{directory}/" in line]
    for mount in sorted(inside, reverse=True):
        subprocess.run(["umount", "-l", mount], check=False, capture_output=True)

    for link in _links_in(slot_network(slot)):
        subprocess.run(["ip", "link", "delete", link], check=False, capture_output=True)

    forwarding(slot, add=False)
    shutil.rmtree(directory, ignore_errors=True)


def forwarding(slot: int, *, add: bool) -> None:
    """Let containers of one network of the slot's engine reach each other.

    The engine runs with ``--iptables=false``, so it adds no rule of its
    own; where bridged traffic passes the host's firewall
    (``bridge-nf-call-iptables``) and the default engine set the FORWARD
    policy to DROP, its containers could not talk on their own network.
    One rule in ``DOCKER-USER`` (the chain the default engine leaves to
    users) accepts traffic from and to the slot's range, and only that.
    Removing deletes every copy, so a slot released twice is harmless.
    """
    if shutil.which("iptables") is None:
        return

    network = str(slot_network(slot))
    rule = ["DOCKER-USER", "-s", network, "-d", network, "-j", "ACCEPT"]
    if add:
        subprocess.run(["iptables", "-I", *rule], check=False, capture_output=True)
        return

    for _ in range(10):
        done = subprocess.run(
            ["iptables", "-D", *rule], check=False, capture_output=True
        )
        if done.returncode != 0:
            return


def _links_in(network: ipaddress.IPv4Network) -> list[str]:
    """Interfaces with an address in ``network``: the slot's bridge and the
    bridges of networks made on that engine, which outlive it."""
    listing = subprocess.run(
        ["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=True
    )
    links = []
    for line in listing.stdout.splitlines():
        words = line.split()
        address = ipaddress.IPv4Interface(words[3])
        if address.ip in network:
            links.append(words[1])

    return links


def clean_stale() -> None:
    """Release every slot whose owner process has ended."""
    for slot in range(SLOTS):
        owner_file = RUN_BASE / f"slot{slot}" / "owner"
        try:
            owner = owner_file.read_text(encoding="utf-8").strip()
        except OSError:
            continue

        if not owner_alive(owner):
            release_slot(slot)


def claim_slot(owner: str) -> int:
    """Take a free slot for ``owner``, atomically; its number."""
    RUN_BASE.mkdir(parents=True, exist_ok=True)
    routes = _routes()
    for slot in range(SLOTS):
        network = slot_network(slot)
        if any(route.overlaps(network) for route in routes):
            continue

        if not _port_free(PORT_BASE + slot):
            continue

        staging = Path(tempfile.mkdtemp(dir=RUN_BASE, prefix="claim-"))
        (staging / "owner").write_text(owner, encoding="utf-8")
        try:
            staging.rename(RUN_BASE / f"slot{slot}")
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            continue

        return slot

    raise SecondEngineError(
        f"no free slot for a second engine among {SLOTS}: each needs an "
        f"address range 10.231-{230 + SLOTS}.0.0/16 no route uses and a free "
        f"port from {PORT_BASE}; stop engines started by hand with "
        f"`python3 tests/second_engine.py stop`"
    )
