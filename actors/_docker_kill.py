"""Killing an overrun exec'd process from this host, when the engine runs here.

Docker's API can signal a container's main process but not an exec'd one.
Exec inspect gives the process's pid as the engine's host sees it; when that
host is this one, the process (and its process group) is killed here, with a
pidfd pinning it so that a reused pid cannot be hit instead. No engine calls
and no aiodocker: the Docker runtime decides what to do with the answer.
"""

from __future__ import annotations

import os
import select
import signal
from pathlib import Path

from attrs import frozen


@frozen
class _HostReach:
    """What this host could do to an exec'd process seen as ``pid``."""

    # The pid belongs to no process of that container here: another host.
    foreign: bool = False
    # The process is ours to see but not to signal.
    denied: bool = False
    # Its pid inside the container's pid namespace (0 when unknown).
    ns_pid: int = 0
    # Whether it leads its own process group (exec'd processes do).
    group_leader: bool = False


def _signal_on_host(container_id: str, pid: int) -> _HostReach:
    """SIGKILL an exec'd process (and its group) from this host, if here.

    A pidfd tells whether the process seen at ``pid`` is still the one
    opened, so pid reuse cannot fool the checks: the /proc entries read
    must belong to a process of the container (its cgroup path names the
    container's full id), and the pidfd must still be live after the reads.
    Exec'd processes lead their own process group, so the group is killed
    too: that takes the command's children along.
    """
    if not hasattr(os, "pidfd_open"):
        return _HostReach(foreign=True)

    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return _HostReach()
    except OSError:
        return _HostReach(foreign=True)

    try:
        return _signal_pinned(container_id, pid, pidfd)
    finally:
        os.close(pidfd)


def _signal_pinned(container_id: str, pid: int, pidfd: int) -> _HostReach:
    try:
        proc = {
            name: Path(f"/proc/{pid}/{name}").read_text(encoding="utf-8")
            for name in ("cgroup", "stat", "status")
        }
    except FileNotFoundError:
        return _HostReach()
    except OSError:
        return _HostReach(foreign=True)

    exited, _, _ = select.select([pidfd], [], [], 0)
    if exited:
        return _HostReach()

    if container_id not in proc["cgroup"]:
        return _HostReach(foreign=True)

    # The fields after the command name, which may hold spaces or ")".
    pgid = int(proc["stat"].rsplit(")", 1)[1].split()[2])
    ns_pid = 0
    for line in proc["status"].splitlines():
        if line.startswith("NSpid:"):
            ns_pid = int(line.split()[-1])
    # Only the moments between the liveness check and these calls are open
    # to the process ending and its ids being handed out again.
    try:
        if pgid == pid:
            os.killpg(pgid, signal.SIGKILL)
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except PermissionError:
        return _HostReach(denied=True, ns_pid=ns_pid, group_leader=pgid == pid)
    except ProcessLookupError:
        pass

    return _HostReach()
