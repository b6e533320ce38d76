"""What the Redis hooks share: paths, saved state, the config file, a client.

The hooks talk to the local Redis through a small RESP client over loopback
TCP, so a password travels inside the connection and never shows on a command
line. Everything the hooks must remember across a container restart (the role
last applied, its epoch, the primary to follow) lives under ``/data``, next to
the data it describes.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# The SDK is copied beside the hooks at build time; in the source tree it
# lives in another package, where the type checker cannot see it as this name.
import rolecall_hook  # type: ignore[import-not-found]

PORT = 6379
CONFIG_DIR = Path("/etc/rolecall")
CONFIG_PATH = CONFIG_DIR / "redis.conf"
AUTH_PATH = CONFIG_DIR / "redis.auth"
DATA_DIR = Path("/data")
STATE_DIR = DATA_DIR / "rolecall"
STATE_PATH = STATE_DIR / "state.json"
ROLE_CONF_PATH = STATE_DIR / "role.conf"
PID_PATH = Path("/run/rolecall-redis.pid")
LOG_PATH = Path("/var/log/rolecall-redis.log")

ROLES = ("standalone", "primary", "replica")

_DIRECTIVE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]*$")
_BARE_WORD = re.compile(r"^[A-Za-z0-9._:/@%+=,-]+$")


# -- files --------------------------------------------------------------------


def write_atomically(path: Path, text: str, *, mode: int = 0o644) -> bool:
    """Replace ``path`` with ``text`` unless it already holds it.

    Returns:
        Whether the file changed.
    """
    try:
        if path.read_text() == text and (path.stat().st_mode & 0o777) == mode:
            return False
    except FileNotFoundError:
        pass

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())

    os.chmod(tmp, mode)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)

    return True


def load_state() -> dict[str, Any]:
    """The role, primary and epoch last applied; empty before the first one."""
    try:
        state = json.loads(STATE_PATH.read_text())
    except FileNotFoundError:
        return {}

    return state if isinstance(state, dict) else {}


def save_state(state: dict[str, Any]) -> None:
    """Persist ``state`` and the role include file that follows from it."""
    write_atomically(STATE_PATH, json.dumps(state, sort_keys=True) + "\n")
    write_role_conf(state)


NOWHERE = ("127.0.0.1", 1)
"""Where a member that has no role yet replicates from: nothing listens
there, so it stays a read-only replica until the role hook says otherwise."""


def write_role_conf(state: dict[str, Any]) -> bool:
    """Write the config include that makes Redis start in the saved role.

    A member never given a role starts as a replica of `NOWHERE`, so that a
    new member never takes writes before rolecall has told it to.
    """
    lines = ["# Written by the rolecall role hook; edits are overwritten."]
    address = state.get("primary_address")
    if state.get("role") == "replica" and address:
        host, port = split_address(address)
        lines.append(f"replicaof {quote(host)} {port}")
    elif state.get("role") is None:
        lines.append(f"replicaof {NOWHERE[0]} {NOWHERE[1]}")

    return write_atomically(ROLE_CONF_PATH, "\n".join(lines) + "\n")


def mark_synced(state: dict[str, Any]) -> None:
    """Remember that this member's data came from a completed sync."""
    if state.get("synced"):
        return

    save_state({**state, "synced": True})


# -- config text --------------------------------------------------------------


def quote(value: str) -> str:
    """Quote one config argument so Redis reads it back unchanged."""
    if _BARE_WORD.match(value):
        return value

    out = []
    for ch in value:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch.isprintable() and ord(ch) < 0x7F:
            out.append(ch)
        else:
            out.extend(f"\\x{b:02x}" for b in ch.encode())

    return '"' + "".join(out) + '"'


def config_args(name: str, value: object) -> list[str]:
    """Turn one config value from the spec into Redis config arguments.

    Raises:
        rolecall_hook.BadPayload: When the value has a type Redis cannot take.
    """
    if isinstance(value, bool):
        return ["yes" if value else "no"]

    if isinstance(value, int | float):
        return [str(value)]

    if isinstance(value, str):
        return value.split() or [""]

    if isinstance(value, list) and all(isinstance(v, str | int) for v in value):
        return [str(v) for v in value]

    raise rolecall_hook.BadPayload(
        f"config redis.{name} must be a string, number, boolean or list, "
        f"got {type(value).__name__}"
    )


def check_directive_name(name: object) -> str:
    """Accept a directive name of letters, digits and dashes."""
    if not isinstance(name, str) or not _DIRECTIVE_NAME.match(name):
        raise rolecall_hook.BadPayload(
            f"config redis directive names are letters, digits and '-', got {name!r}"
        )

    return name.lower()


def split_address(address: str) -> tuple[str, int]:
    """Split ``host:port``; a missing port means Redis' own."""
    host, sep, port = address.rpartition(":")
    if not sep:
        return address, PORT

    if not host or not port.isdigit():
        raise rolecall_hook.BadPayload(
            f"member address must be host:port, got {address!r}"
        )

    return host, int(port)


# -- talking to Redis ---------------------------------------------------------


class RedisReplyError(Exception):
    """Redis answered a command with an error reply."""


class RedisUnreachableError(Exception):
    """Nothing answers on the Redis port."""


def password() -> str | None:
    """The password the running Redis expects, if configure set one."""
    try:
        return AUTH_PATH.read_text() or None
    except FileNotFoundError:
        return None


class Client:
    """A minimal RESP2 client for a Redis of the service; one connection.

    It reaches the local Redis unless told another member's ``host`` and
    ``port``; every member has the same password.
    """

    def __init__(
        self, *, host: str = "127.0.0.1", port: int = PORT, timeout: float = 5.0
    ) -> None:
        try:
            self._sock = socket.create_connection((host, port), timeout)
        except OSError as exc:
            raise RedisUnreachableError(str(exc)) from exc

        self._file = self._sock.makefile("rb")
        secret = password()
        if secret is not None:
            self.call("AUTH", secret)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()
        self._sock.close()

    def call(self, *args: str | int) -> Any:
        """Send one command and return its reply.

        Raises:
            RedisReplyError: On an error reply.
            RedisUnreachableError: When the connection breaks.
        """
        parts = [f"*{len(args)}\r\n".encode()]
        for arg in args:
            data = str(arg).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))

        try:
            self._sock.sendall(b"".join(parts))
            return self._read()
        except OSError as exc:
            raise RedisUnreachableError(str(exc)) from exc

    def _read(self) -> Any:
        line = self._file.readline()
        if not line.endswith(b"\r\n"):
            raise RedisUnreachableError("connection closed mid-reply")

        kind, body = line[:1], line[1:-2]
        if kind == b"+":
            return body.decode()

        if kind == b"-":
            raise RedisReplyError(body.decode())

        if kind == b":":
            return int(body)

        if kind == b"$":
            size = int(body)
            if size < 0:
                return None

            data = self._file.read(size + 2)
            return data[:-2].decode(errors="replace")

        if kind == b"*":
            count = int(body)
            return None if count < 0 else [self._read() for _ in range(count)]

        raise RedisUnreachableError(f"unexpected reply type {kind!r}")


def info(client: Client, section: str = "replication") -> dict[str, str]:
    """One INFO section as a flat map of strings."""
    fields: dict[str, str] = {}
    for line in client.call("INFO", section).splitlines():
        key, sep, value = line.partition(":")
        if sep and not key.startswith("#"):
            fields[key] = value

    return fields


def ping() -> bool:
    """Whether Redis answers PING (a loading Redis does not, yet)."""
    try:
        with Client(timeout=2.0) as client:
            return bool(client.call("PING") == "PONG")
    except (RedisUnreachableError, RedisReplyError):
        return False


def redis_pid() -> int | None:
    """The pid of the Redis server the hooks started, if it still runs."""
    try:
        pid = int(PID_PATH.read_text().strip())
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None

    state = stat.rpartition(")")[2].split()[0]
    if state in ("Z", "X") or b"redis-server" not in cmdline:
        return None

    return pid


def log_tail(lines: int = 5) -> str:
    """The last lines of the Redis log, for error messages."""
    try:
        text = LOG_PATH.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log yet)"

    return " | ".join(text.strip().splitlines()[-lines:])


def wait_until(
    check: Callable[[], bool], *, timeout: float, interval: float = 0.05
) -> bool:
    """Poll ``check()`` until it is true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True

        if time.monotonic() >= deadline:
            return False

        time.sleep(interval)


def launch(overrides: list[str] | None = None) -> None:
    """Start redis-server in the background with the written config.

    Args:
        overrides: Directives given after the config file, which win over
            it (``["--appendonly", "no"]``) for this run only.

    Raises:
        rolecall_hook.HookFailed: When redis-server refuses to start.
    """
    result = subprocess.run(
        ["redis-server", str(CONFIG_PATH), *(overrides or [])],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip()[-500:] or log_tail()
        raise rolecall_hook.HookFailed(
            f"redis-server exited with {result.returncode}: {detail}"
        )


# -- role bookkeeping ---------------------------------------------------------


def find_primary(ctx: rolecall_hook.Context, primary: object) -> str:
    """The address of member ``primary`` from the payload's member list.

    Raises:
        rolecall_hook.BadPayload: When no other member has that id.
    """
    if not isinstance(primary, str) or not primary:
        raise rolecall_hook.BadPayload(
            f"a replica needs the id of its primary, got {primary!r}"
        )

    if primary == ctx.member.get("id"):
        raise rolecall_hook.BadPayload(
            f"member {primary!r} cannot replicate from itself"
        )

    for member in ctx.members:
        if member.get("id") == primary and member.get("address"):
            return str(member["address"])

    known = sorted(str(m.get("id")) for m in ctx.members)
    raise rolecall_hook.BadPayload(
        f"primary {primary!r} is not among the members {known}"
    )


def replica_offset(fields: dict[str, str], *, synced: bool) -> int:
    """How far a replica has come; 0 until its first sync completed."""
    if not synced:
        return 0

    return int(fields.get("slave_repl_offset", "0"))


def sync_done(fields: dict[str, str]) -> bool:
    """Whether a replica's link is up with no sync under way."""
    return (
        fields.get("role") == "slave"
        and fields.get("master_link_status") == "up"
        and fields.get("master_sync_in_progress") == "0"
    )
