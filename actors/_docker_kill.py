"""Killing an overrun exec'd process: from inside its container, or this host.

Docker's API can signal a container's main process but not an exec'd one,
and closing an exec's stream leaves its process running. Two ways remain:

- From inside the container, which works whatever host the engine runs on:
  every exec carries a unique marker in its environment (`MARKER_ENV`), and
  a second exec (`killer_argv`) finds the processes whose environment holds
  it, through ``/proc/*/environ``, and SIGKILLs them. Children inherit the
  environment, so those that left the process group go too. It needs
  ``sh``, ``tr`` and ``grep`` in the image (any POSIX base or busybox).
- From this host, when the engine runs here: exec inspect gives the
  process's host pid, and the process and its group are killed with a pidfd
  pinning them, so that a reused pid cannot be hit instead
  (`_signal_on_host`). Used when the image lacks what the first needs.

No engine calls and no aiodocker here: the Docker runtime runs the execs.
"""

from __future__ import annotations

import os
import select
import signal
from pathlib import Path

from attrs import frozen

MARKER_ENV = "ROLECALL_EXEC_ID"
"""The environment variable holding each exec's unique marker."""

# $1 is the marker's value. Up to five sweeps, until one finds nothing: a
# process forked during a sweep is found by the next. The killer itself
# does not carry the marker in its environment, only in its arguments.
_KILL_SCRIPT = """\
m="ROLECALL_EXEC_ID=$1"
n=0
while [ "$n" -lt 5 ]; do
  found=0
  for e in /proc/[0-9]*/environ; do
    p=${e%/environ}
    p=${p#/proc/}
    [ "$p" = "$$" ] && continue
    if tr '\\0' '\\n' <"$e" 2>/dev/null | grep -qxF "$m"; then
      kill -9 "$p" 2>/dev/null && found=1
    fi
  done
  [ "$found" = 0 ] && break
  n=$((n + 1))
done
exit 0
"""


def killer_argv(marker: str) -> list[str]:
    """The command that kills, inside a container, what carries ``marker``."""
    return ["sh", "-c", _KILL_SCRIPT, "rolecall-kill", marker]


@frozen
class _HostReach:
    """What this host could do to an exec'd process seen as ``pid``."""

    # The pid belongs to no process of that container here: another host.
    foreign: bool = False
    # The process is ours to see but not to signal.
    denied: bool = False


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
            for name in ("cgroup", "stat")
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
    # Only the moments between the liveness check and these calls are open
    # to the process ending and its ids being handed out again.
    try:
        if pgid == pid:
            os.killpg(pgid, signal.SIGKILL)
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except PermissionError:
        return _HostReach(denied=True)
    except ProcessLookupError:
        pass

    return _HostReach()
