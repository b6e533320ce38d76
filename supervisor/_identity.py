"""Who a control plane is: the identity its claims on services carry.

A control plane with a state directory is the same one across restarts:
its id is a random value kept in the directory's ``control-plane-id`` file,
made on first use. One without a state directory gets a random id per
process, so a second supervisor opened in the same process (a restart of
an embedded control plane) is still the same one, while any other process
is another one. The host and process id go beside the id in claims, for
messages only: they tell a person which process to look for, and decide
nothing.
"""

from __future__ import annotations

import functools
import os
import re
import secrets
import socket
from pathlib import Path

from attrs import frozen

from rolecall.hooks_protocol import StateCorruptError, StateError

__all__ = [
    "IDENTITY_FILE",
    "ControlPlaneIdentity",
    "load_identity",
    "process_identity",
    "stored_id",
]

IDENTITY_FILE = "control-plane-id"
"""The file, in the state directory, that holds the control plane's id."""

_ID = re.compile(r"[0-9a-f]{32}")


@frozen
class ControlPlaneIdentity:
    """One control plane, as its claims name it.

    Attributes:
        id: 32 hex digits, random; the only part compared.
        host: The host name it runs on.
        pid: Its process id.
    """

    id: str
    host: str
    pid: int

    def describe(self) -> str:
        """``<id> (host H, pid P)``, for messages."""
        return f"{self.id} (host {self.host}, pid {self.pid})"


def load_identity(state_dir: Path) -> ControlPlaneIdentity:
    """The identity kept in ``state_dir``, made and written on first use.

    Call it while holding the directory's journal lock, so two control
    planes never write the file at once.

    Raises:
        StateCorruptError: The file holds something else than an id.
        StateError: The file cannot be read or written.
    """
    path = state_dir / IDENTITY_FILE
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except FileNotFoundError:
        text = _write_new(path)
    except OSError as error:
        raise StateError(
            f"cannot read {str(path)!r}: {error.strerror or error}",
            path=str(path),
        ) from error

    if not _ID.fullmatch(text):
        raise StateCorruptError(
            f"{str(path)!r} does not hold a control plane id (32 hex digits):"
            " if this directory's control plane still manages services, put"
            " its id back; otherwise move the file aside"
            f" (`mv {path} {path}.damaged`) and start with --take-over for"
            " the services it managed",
            path=str(path),
            previous=None,
        )

    return ControlPlaneIdentity(id=text, host=socket.gethostname(), pid=os.getpid())


def stored_id(state_dir: Path) -> str | None:
    """The id kept in ``state_dir``, without making one; ``None`` when
    there is none, or the file holds something else."""
    try:
        text = (state_dir / IDENTITY_FILE).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None

    return text if _ID.fullmatch(text) else None


def process_identity() -> ControlPlaneIdentity:
    """The identity of a control plane without a state directory: one per
    process, kept for its life (a forked child gets its own)."""
    return _identity_of(os.getpid())


@functools.cache
def _identity_of(pid: int) -> ControlPlaneIdentity:
    return ControlPlaneIdentity(
        id=secrets.token_hex(16), host=socket.gethostname(), pid=pid
    )


def _write_new(path: Path) -> str:
    """Write a new id to ``path`` whole (temporary file, fsync, rename)."""
    identity = secrets.token_hex(16)
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        fd = os.open(
            temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600
        )
        try:
            os.write(fd, f"{identity}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
        directory = os.open(path.parent, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except OSError as error:
        raise StateError(
            f"cannot write {str(path)!r}: {error.strerror or error}: free space"
            " or fix the directory's permissions, then start again",
            path=str(path),
        ) from error

    return identity
