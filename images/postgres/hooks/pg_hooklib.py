"""What the PostgreSQL hooks share: paths, saved state, commands, queries.

The hooks run as root inside the container; every PostgreSQL program runs
as the ``postgres`` user (argv lists, never a shell string). SQL travels on
psql's stdin, so nothing secret shows in a process list. Everything the
hooks must remember across a container restart (the role last applied, its
epoch, the primary to follow, whether the data came from a completed copy)
lives under ``/data``, next to the data it describes; the server's own
configuration lives under ``/etc/rolecall`` and is written again by
``configure`` every time the container is prepared.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# The SDK is copied beside the hooks at build time; in the source tree it
# lives in another package, where the type checker cannot see it as this name.
import rolecall_hook  # type: ignore[import-not-found]

PORT = 5432
SUPERUSER = "postgres"
CONFIG_DIR = Path("/etc/rolecall")
CONFIG_PATH = CONFIG_DIR / "postgresql.conf"
HBA_PATH = CONFIG_DIR / "pg_hba.conf"
IDENT_PATH = CONFIG_DIR / "pg_ident.conf"
PASSFILE_PATH = CONFIG_DIR / "pgpass"
DATA_DIR = Path("/data")
PGDATA = DATA_DIR / "pgdata"
STATE_DIR = DATA_DIR / "rolecall"
STATE_PATH = STATE_DIR / "state.json"
ROLE_CONF_PATH = STATE_DIR / "role.conf"
SOCKET_DIR = Path("/run/postgresql")
LOG_PATH = Path("/var/log/rolecall-postgres.log")
HOME = Path("/var/lib/postgresql")

ROLES = ("standalone", "primary", "replica", "backup")
WRITER_ROLES = frozenset({"standalone", "primary"})
FOLLOWER_ROLES = frozenset({"replica", "backup"})
DURABILITIES = ("async", "sync")

SYNC_QUORUM = "ANY 1 (replica)"
"""``synchronous_standby_names`` of a primary with synchronous durability.

Replicas connect with the application name ``replica`` and backup nodes
with ``backup``: any one replica confirming a commit is enough, and a
backup node never counts, since it is never promoted.
"""

_HOST = re.compile(r"^[A-Za-z0-9._-]+$")


def _bin_dir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
    return found[-1] if found else Path("/usr/lib/postgresql/15/bin")


BIN = _bin_dir()


# -- files --------------------------------------------------------------------


def write_atomically(
    path: Path, text: str, *, mode: int = 0o644, owner: str | None = None
) -> bool:
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
    if owner is not None:
        user = pwd.getpwnam(owner)
        os.chown(tmp, user.pw_uid, user.pw_gid)

    os.replace(tmp, path)
    fsync_dir(path.parent)

    return True


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable."""
    dir_fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def chown_postgres(path: Path, *, recursive: bool = False) -> None:
    """Give ``path`` (and, with ``recursive``, all below it) to postgres."""
    user = pwd.getpwnam(SUPERUSER)
    os.chown(path, user.pw_uid, user.pw_gid)
    if not recursive:
        return

    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            os.lchown(os.path.join(root, name), user.pw_uid, user.pw_gid)


def load_state() -> dict[str, Any]:
    """The role, primary, epoch and flags last saved; empty before any."""
    try:
        state = json.loads(STATE_PATH.read_text())
    except FileNotFoundError:
        return {}

    return state if isinstance(state, dict) else {}


def save_state(state: dict[str, Any]) -> None:
    """Persist ``state`` before anything acts on it."""
    write_atomically(STATE_PATH, json.dumps(state, sort_keys=True) + "\n")


def update_state(**changes: Any) -> dict[str, Any]:
    """Save the current state with ``changes``; return the new state."""
    state = {**load_state(), **changes}
    save_state(state)

    return state


# -- config text --------------------------------------------------------------


def quote(value: str) -> str:
    """Quote a string as a postgresql.conf value."""
    escaped = value.replace("\\", "\\\\").replace("'", "''")
    return f"'{escaped}'"


def conninfo(address: str, *, application_name: str = "rolecall") -> str:
    """A libpq connection string to another member, as the superuser.

    The password, if any, comes from the pass file configure writes, so it
    never appears in the string (or in a process list).
    """
    host, port = split_address(address)
    return (
        f"host={host} port={port} user={SUPERUSER} dbname=postgres "
        f"application_name={application_name} connect_timeout=5 "
        f"passfile={PASSFILE_PATH}"
    )


def role_conf_text(state: dict[str, Any], durability: str) -> str:
    """The include file that puts the server in the saved role."""
    role = state.get("role")
    lines = ["# Written by the rolecall hooks from the role last applied."]
    address = state.get("primary_address")
    if role in FOLLOWER_ROLES and address:
        info = conninfo(address, application_name=str(role))
        lines.append(f"primary_conninfo = {quote(info)}")

    if role == "primary" and durability == "sync":
        lines.append(f"synchronous_standby_names = {quote(SYNC_QUORUM)}")
        # A commit returns once a replica has replayed it: the replica
        # with the highest replayed position then holds every commit.
        lines.append("synchronous_commit = remote_apply")
    else:
        lines.append("synchronous_standby_names = ''")
        lines.append("synchronous_commit = on")

    return "\n".join(lines) + "\n"


def write_role_conf(state: dict[str, Any], durability: str) -> bool:
    """Write the role include file; return whether it changed."""
    return write_atomically(ROLE_CONF_PATH, role_conf_text(state, durability))


def durability_of(ctx: rolecall_hook.Context) -> str:
    """The service's durability from its config: ``async`` unless set.

    Raises:
        rolecall_hook.BadPayload: When it is neither ``async`` nor ``sync``.
    """
    value = ctx.config.get("durability", "async")
    if value not in DURABILITIES:
        raise rolecall_hook.BadPayload(
            f"config durability must be one of {list(DURABILITIES)}, got {value!r}"
        )

    return str(value)


def split_address(address: str) -> tuple[str, int]:
    """Split ``host:port``; a missing port means PostgreSQL's own.

    Raises:
        rolecall_hook.BadPayload: When the address is not a plain host name
            and port (it ends up in a connection string).
    """
    host, sep, port = address.rpartition(":")
    if not sep:
        host, port = address, str(PORT)

    if not _HOST.match(host) or not port.isdigit():
        raise rolecall_hook.BadPayload(
            f"member address must be host:port, got {address!r}"
        )

    return host, int(port)


# -- running programs ---------------------------------------------------------


class PgUnreachableError(Exception):
    """No server answers where a query was sent."""


class PgQueryError(Exception):
    """The server answered a query with an error."""


def pg_env() -> dict[str, str]:
    """The environment of every PostgreSQL program the hooks run."""
    return {
        "PATH": f"{BIN}:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": str(HOME),
        "LANG": "C.UTF-8",
        "PGHOST": str(SOCKET_DIR),
        "PGPORT": str(PORT),
        "PGUSER": SUPERUSER,
        "PGDATABASE": "postgres",
        "PGPASSFILE": str(PASSFILE_PATH),
        "PGCONNECT_TIMEOUT": "5",
    }


def run_as_postgres(
    argv: Sequence[str],
    *,
    stdin: str | None = None,
    timeout: float = 60.0,
    new_session: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run a program as the postgres user and wait for it.

    Raises:
        rolecall_hook.RetryLater: When it runs past ``timeout`` (it is
            killed); the work it was doing may be asked for again.
    """
    user = pwd.getpwnam(SUPERUSER)
    try:
        return subprocess.run(
            list(argv),
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
            env=pg_env(),
            cwd=HOME,
            user=user.pw_uid,
            group=user.pw_gid,
            extra_groups=[],
            umask=0o077,
            start_new_session=new_session,
        )
    except subprocess.TimeoutExpired as exc:
        raise rolecall_hook.RetryLater(
            f"{Path(argv[0]).name} did not finish within {timeout:g} s"
        ) from exc


def tail(text: str, lines: int = 5) -> str:
    """The last lines of a program's output, on one line."""
    kept = [line for line in text.strip().splitlines() if line.strip()]
    return " | ".join(kept[-lines:]) or "(no output)"


def log_tail(lines: int = 5) -> str:
    """The last lines of the server log, for error messages."""
    try:
        return tail(LOG_PATH.read_text(errors="replace"), lines)
    except FileNotFoundError:
        return "(no log yet)"


def query(sql: str, *, address: str | None = None, timeout: float = 10.0) -> str:
    """Run SQL (local server, or the member at ``address``); return its output.

    Output is unaligned and tuples-only: one line per row.

    Raises:
        PgUnreachableError: No server answered.
        PgQueryError: The server refused the SQL.
    """
    argv = [str(BIN / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"]
    if address is not None:
        argv.extend(["-d", conninfo(address)])

    result = run_as_postgres([*argv, "-f", "-"], stdin=sql, timeout=timeout)
    if result.returncode == 2:
        raise PgUnreachableError(tail(result.stderr, 2))

    if result.returncode != 0:
        raise PgQueryError(tail(result.stderr, 3))

    return result.stdout


def query_json(sql: str, *, address: str | None = None, timeout: float = 10.0) -> Any:
    """Run SQL whose last output row is one JSON value; return it decoded.

    Use ``jsonb`` builders: ``json_agg`` puts line breaks between items.
    """
    output = query(sql, address=address, timeout=timeout)
    rows = [row for row in output.splitlines() if row.strip()]
    if not rows:
        raise PgQueryError(f"no row came back from: {sql.strip()[:80]}")

    return json.loads(rows[-1])


def wait_until(
    check: Callable[[], bool], *, timeout: float, interval: float = 0.1
) -> bool:
    """Poll ``check()`` until it is true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True

        if time.monotonic() >= deadline:
            return False

        time.sleep(interval)
