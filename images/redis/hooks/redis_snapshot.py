"""What the Redis export and import hooks share: the snapshot directory.

An export directory holds ``dump.rdb`` (a consistent RDB snapshot) and
``rolecall-export.json`` (what it is: its size, its SHA-256, how many keys,
which member wrote it), written last. The import checks the snapshot
against that file before it lets the snapshot near the data.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import redis_hooklib as lib  # type: ignore[import-not-found]

# The SDK is copied beside the hooks at build time; in the source tree it
# lives in another package, where the type checker cannot see it as this name.
import rolecall_hook  # type: ignore[import-not-found]

SNAPSHOT = "dump.rdb"
META = "rolecall-export.json"
FORMAT = "redis-rdb"
CHUNK = 1024 * 1024


def request_path(ctx: rolecall_hook.Context, hook: str) -> Path:
    """The absolute directory ``request.path`` names.

    Under /data it survives a new container (a volume holds it); the
    data directory itself and Redis' own places in it are refused.

    Raises:
        rolecall_hook.BadPayload: No absolute path, or one of Redis' own.
    """
    raw = ctx.request.get("path")
    if not isinstance(raw, str) or not raw.startswith("/") or raw.rstrip("/") == "":
        raise rolecall_hook.BadPayload(
            f"{hook} needs an absolute directory in request.path, got {raw!r}"
        )

    path = Path(os.path.normpath(raw))
    owned = (lib.DATA_DIR / "appendonlydir", lib.STATE_DIR)
    if path == lib.DATA_DIR or any(d in (path, *path.parents) for d in owned):
        raise rolecall_hook.BadPayload(
            f"{hook} path {raw!r} must be a directory of its own, not "
            f"{str(lib.DATA_DIR)!r} or a place of Redis' own files in it"
        )

    return path


def copy_hashed(source: Path, target: Path) -> tuple[int, str]:
    """Copy ``source`` to ``target`` (fsynced); its size and SHA-256."""
    digest = hashlib.sha256()
    size = 0
    with source.open("rb") as reader, target.open("wb") as writer:
        while chunk := reader.read(CHUNK):
            digest.update(chunk)
            writer.write(chunk)
            size += len(chunk)
        writer.flush()
        os.fsync(writer.fileno())

    return size, digest.hexdigest()


def hash_file(path: Path) -> tuple[int, str]:
    """Make ``path`` durable; its size and SHA-256."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb+") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
        os.fsync(handle.fileno())

    return size, digest.hexdigest()


def read_meta(path: Path) -> dict[str, Any]:
    """The metadata of a complete export at ``path``.

    Raises:
        rolecall_hook.BadPayload: No complete Redis export there.
    """
    try:
        meta = json.loads((path / META).read_text())
    except (FileNotFoundError, NotADirectoryError, ValueError) as exc:
        raise rolecall_hook.BadPayload(
            f"{str(path)!r} holds no complete export (no readable {META}): {exc}"
        ) from exc

    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise rolecall_hook.BadPayload(
            f"{str(path)!r} holds no Redis export: its {META} says format "
            f"{meta.get('format') if isinstance(meta, dict) else meta!r}"
        )

    return meta


def key_count(client: lib.Client) -> int:
    """Keys in every database, from INFO keyspace."""
    total = 0
    for value in lib.info(client, "keyspace").values():
        fields = dict(part.split("=", 1) for part in value.split(","))
        total += int(fields.get("keys", "0"))

    return total
