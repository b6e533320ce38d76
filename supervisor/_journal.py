"""The journal: one durable record per service in the state directory.

Layout, under the state directory (created mode 0700)::

    journal/lock                    held (flock) by the control plane using it
    journal/<service>/<gen>.rec     the newest generation and the one before

Each record is written whole, as a new generation: to a temporary file
(mode 0600) that is fsynced, renamed over its final name, and the directory
fsynced. A crash mid-write leaves the temporary file, which the next start
removes, and the last generation intact: a reader finds the old record or
the new one, never a mix. The generation before the newest is kept beside
it, so a file damaged later (disk, hand edit) still leaves the previous
good state on disk.

A file is a header (magic, body length, CRC-32 of the body) and a msgpack
body. A file that is truncated, fails its checksum or does not decode is
never read past nor overwritten: `Journal.load` raises `StateCorruptError`
naming it, the previous generation, and what to do: move it aside with a
suffix. The record then comes from the previous generation, whose epoch
may be short of what was sent since; `Journal.set_aside` counts the
generations moved aside, and the reader raises the epoch by as many (one
generation holds at most one new epoch), so none is reused. A damaged file
deleted instead of moved is not counted: the members' ``status`` then is
the only guard.

Writes are synchronous and fsync before they return: the control plane
runs in its caller's event loop without threads, so a write holds the loop
for the time the disk takes (a few milliseconds on a local disk), once or
twice per step of a change.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import struct
import zlib
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped, unused-ignore]  # ships no types
from attrs import define, field

from rolecall.hooks_protocol import StateCorruptError, StateError, StateLockedError

__all__ = ["JOURNAL_DIR", "Journal"]

JOURNAL_DIR = "journal"
"""The journal's folder inside the state directory."""

_MAGIC = b"RCJ1"
_HEADER = struct.Struct(">4sII")  # magic, body length, CRC-32 of the body
_GENERATION = re.compile(r"(\d{12})\.rec")
_SET_ASIDE = re.compile(r"(\d{12})\.rec\..+")  # a generation moved aside
_KEEP = 2  # generations kept: the newest and the one before it


@define(eq=False)
class Journal:
    """The records of every service, in one state directory.

    Open it with `Journal.open`; it holds the directory's lock until
    `close`.
    """

    root: Path
    # The lock file's descriptor while open; None once closed.
    _lock_fd: int | None = None
    # The newest generation on disk, by service.
    _generations: dict[str, int] = field(factory=dict)

    @classmethod
    def open(cls, state_dir: Path) -> Journal:
        """Create the journal's folder (mode 0700) and take its lock.

        Raises:
            StateLockedError: Another control plane holds the lock.
            StateError: The folder or lock cannot be created.
        """
        root = state_dir / JOURNAL_DIR
        try:
            state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            root.mkdir(mode=0o700, exist_ok=True)
            os.chmod(root, 0o700)
            fd = os.open(root / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as error:
            raise StateError(
                f"cannot use the state directory {str(state_dir)!r}:"
                f" {error.strerror or error}: pick another one",
                path=str(state_dir),
            ) from error

        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StateLockedError(
                f"another control plane holds the journal in {str(root)!r}:"
                " stop it first, or give this one its own state directory",
                path=str(root),
            ) from None

        return cls(root, fd)

    def close(self) -> None:
        """Release the lock; the records stay."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- reading -------------------------------------------------------------

    def services(self) -> list[str]:
        """Names of the services that have a record, sorted."""
        return sorted(
            path.name
            for path in self.root.iterdir()
            if path.is_dir() and any(_generations(path))
        )

    def set_aside(self, service: str) -> int:
        """How many generations newer than the newest readable one were
        moved aside (``<gen>.rec.damaged``, as a damage message says).

        Each generation raises the epoch by one at most beyond what members
        report, so a record read from an older generation is that many
        epochs short at most.
        """
        folder = self.root / service
        if not folder.is_dir():
            return 0

        newest = max((gen for gen, _ in _generations(folder)), default=0)
        moved = [
            int(match.group(1))
            for path in folder.iterdir()
            if (match := _SET_ASIDE.fullmatch(path.name)) is not None
        ]

        return max([gen - newest for gen in moved if gen > newest], default=0)

    def load(self, service: str) -> dict[str, Any] | None:
        """The newest record of a service; ``None`` when it has none.

        Raises:
            StateCorruptError: The newest generation is truncated or
                damaged; nothing was changed on disk.
        """
        folder = self.root / service
        if not folder.is_dir():
            return None

        for stray in folder.glob(".*.tmp"):
            # A write that a crash cut short; the generation before it holds.
            stray.unlink(missing_ok=True)

        found = sorted(_generations(folder), reverse=True)
        if not found:
            return None

        newest, path = found[0]
        self._generations[service] = newest
        try:
            return _read(path)
        except _Damaged as damage:
            previous = _intact(found[1:])
            raise StateCorruptError(
                _damage_message(path, damage.reason, previous),
                path=str(path),
                previous=None if previous is None else str(previous),
            ) from None

    # -- writing -------------------------------------------------------------

    def save(self, service: str, record: dict[str, Any]) -> None:
        """Write a new generation of a service's record, durably.

        Raises:
            StateError: The disk refused the write; the previous record
                stands.
        """
        body: bytes = msgpack.packb(record, use_bin_type=True)
        data = _HEADER.pack(_MAGIC, len(body), zlib.crc32(body)) + body
        generation = self._generations.get(service, 0) + 1
        folder = self.root / service
        final = folder / f"{generation:012d}.rec"
        temporary = folder / f".{generation:012d}.tmp"
        try:
            if not folder.is_dir():
                folder.mkdir(mode=0o700)
                _fsync_dir(self.root)

            fd = os.open(
                temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600
            )
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)

            os.replace(temporary, final)
            _fsync_dir(folder)
        except OSError as error:
            raise StateError(
                f"cannot write the journal record {str(final)!r}:"
                f" {error.strerror or error}; the previous record stands: free"
                " the disk or fix the directory's permissions",
                path=str(final),
            ) from error

        self._generations[service] = generation
        for old, path in _generations(folder):
            if old <= generation - _KEEP:
                path.unlink(missing_ok=True)

    def delete(self, service: str) -> None:
        """Forget a service: remove its records."""
        folder = self.root / service
        if not folder.is_dir():
            return

        for path in folder.iterdir():
            path.unlink(missing_ok=True)

        folder.rmdir()
        _fsync_dir(self.root)
        self._generations.pop(service, None)


class _Damaged(Exception):  # noqa: N818  (a reason to carry, not an error to raise)
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _generations(folder: Path) -> list[tuple[int, Path]]:
    found = []
    for path in folder.iterdir():
        match = _GENERATION.fullmatch(path.name)
        if match is not None:
            found.append((int(match.group(1)), path))

    return found


def _read(path: Path) -> dict[str, Any]:
    data = path.read_bytes()
    if len(data) < _HEADER.size:
        raise _Damaged(f"truncated ({len(data)} bytes, shorter than its header)")

    magic, length, checksum = _HEADER.unpack_from(data)
    if magic != _MAGIC:
        raise _Damaged(f"not a rolecall journal record (it starts {magic!r})")

    body = data[_HEADER.size :]
    if len(body) != length:
        raise _Damaged(f"truncated ({len(body)} of {length} body bytes)")

    if zlib.crc32(body) != checksum:
        raise _Damaged("damaged (its checksum does not match)")

    try:
        record = msgpack.unpackb(body, raw=False, strict_map_key=True)
    except (ValueError, msgpack.UnpackException) as error:
        raise _Damaged(f"undecodable ({error})") from None

    if not isinstance(record, dict):
        raise _Damaged(f"not a record (a {type(record).__name__})")

    return record


def _intact(older: list[tuple[int, Path]]) -> Path | None:
    for _, path in older:
        with contextlib.suppress(_Damaged, OSError):
            _read(path)
            return path

    return None


def _damage_message(path: Path, reason: str, previous: Path | None) -> str:
    head = (
        f"journal file {str(path)!r} is {reason}; rolecall leaves it as it is"
        " and will not start from it."
    )
    aside = f"`mv {path} {path}.damaged`"
    if previous is not None:
        return (
            f"{head} The previous generation {str(previous)!r} is intact: move"
            f" the damaged file away ({aside}) and start again to resume from"
            " it."
        )

    return (
        f"{head} No earlier generation is left: move it away ({aside}) and"
        " start again; rolecall then adopts the service's containers by their"
        " labels and learns roles and epochs from their status hooks."
    )


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
