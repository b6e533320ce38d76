"""Where a runner keeps its socket and lock: the state directory.

The directory is, in order: ``--state-dir``, ``$ROLECALL_STATE_DIR``,
``/var/lib/rolecall`` for root, else ``$XDG_STATE_HOME/rolecall`` (by
default ``~/.local/state/rolecall``). It holds:

- ``control.sock``: the control API's unix socket, mode 0600;
- ``runner.lock``: held (``flock``, exclusive) by the one runner using the
  directory, and naming its process id, so a second runner refuses clearly.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from ._errors import RunnerError, StateDirLockedError

__all__ = ["LOCK_NAME", "SOCKET_NAME", "default_state_dir", "hold_state_dir"]

SOCKET_NAME = "control.sock"
LOCK_NAME = "runner.lock"


def default_state_dir(chosen: str | os.PathLike[str] | None = None) -> Path:
    """The state directory to use, following the order in the module docs.

    Args:
        chosen: The ``--state-dir`` given, if any.
    """
    if chosen:
        return Path(chosen).expanduser()

    from_env = os.environ.get("ROLECALL_STATE_DIR")
    if from_env:
        return Path(from_env).expanduser()

    if os.geteuid() == 0:
        return Path("/var/lib/rolecall")

    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "rolecall"


@contextlib.contextmanager
def hold_state_dir(state_dir: Path) -> Iterator[Path]:
    """Create the directory (mode 0700) and hold its lock while in the block.

    Yields:
        The directory.

    Raises:
        StateDirLockedError: Another runner holds the lock.
        RunnerError: The directory or lock file cannot be created.
    """
    path = state_dir / LOCK_NAME
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        _make_private(state_dir)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as error:
        raise RunnerError(
            f"cannot use the state directory {str(state_dir)!r}:"
            f" {error.strerror or error}: pick another with --state-dir"
        ) from error

    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _pid_in(fd)
            held_by = f" (pid {pid})" if pid else ""
            raise StateDirLockedError(
                f"another runner{held_by} holds the state directory"
                f" {str(state_dir)!r}: stop it first, or give this one its"
                " own directory with --state-dir",
                state_dir=state_dir,
                pid=pid,
            ) from None

        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield state_dir
    finally:
        # Closing the descriptor releases the lock; the file stays, so a
        # runner waiting on it never locks a file that was just unlinked.
        os.close(fd)


def _make_private(state_dir: Path) -> None:
    """Make the directory 0700, also when it existed with wider modes.

    Raises:
        RunnerError: It belongs to another user, or is not a directory.
    """
    info = state_dir.stat()
    if not stat.S_ISDIR(info.st_mode):
        raise RunnerError(
            f"the state directory {str(state_dir)!r} is not a directory:"
            " pick another with --state-dir"
        )

    if info.st_uid != os.geteuid():
        raise RunnerError(
            f"the state directory {str(state_dir)!r} belongs to user"
            f" {info.st_uid}, not to this one ({os.geteuid()}): pick one of"
            " your own with --state-dir"
        )

    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(state_dir, 0o700)


def _pid_in(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode("ascii", errors="replace").strip()

    return int(text) if text.isdigit() else None
