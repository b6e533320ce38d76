"""The data directory: create it, copy it from a primary, rewind it, swap it.

A new cluster (``initdb``) or a copy (``pg_basebackup``, a restore) is
built beside PGDATA and renamed into place only once complete, so a crash
at any point leaves either the old data or the new, never half of one;
`settle` finishes or undoes a swap a crash cut short. A member that must
follow a primary keeps its own data when it can (same cluster, rewound to
the primary's history with ``pg_rewind``) and is copied afresh otherwise.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

# Both sit beside this module in the image; in the source tree the type
# checker sees neither as a top-level module.
import pg_hooklib as lib  # type: ignore[import-not-found]
import pg_replication as repl  # type: ignore[import-not-found]
import pg_server as server  # type: ignore[import-not-found]
import rolecall_hook  # type: ignore[import-not-found]

NEW = lib.DATA_DIR / "pgdata.new"
OLD = lib.DATA_DIR / "pgdata.old"
COMPLETE = ".rolecall-complete"
"""Marks a directory under construction as finished."""

BASEBACKUP_TIMEOUT = 1800.0
REWIND_TIMEOUT = 600.0
STREAM_TIMEOUT = 60.0
"""Seconds a standby may take to stream from its primary once started."""


# -- swapping -----------------------------------------------------------------


def fresh_dir(path: Path) -> Path:
    """An empty directory owned by postgres, mode 0700, at ``path``."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(mode=0o700, parents=True)
    lib.chown_postgres(path)

    return path


def pin_config(data: Path) -> None:
    """Point the cluster's own postgresql.conf at the hooks' config.

    Tools that start the server on the data directory alone (pg_rewind's
    crash recovery of a killed former primary) then run with the same
    settings as the hooks do: with the defaults, that recovery would
    recycle the WAL the rewind needs.
    """
    text = (
        "# Written by the rolecall hooks: the configuration lives outside.\n"
        f"include_if_exists = {lib.quote(str(lib.CONFIG_PATH))}\n"
    )
    lib.write_atomically(
        data / "postgresql.conf", text, mode=0o600, owner=lib.SUPERUSER
    )


def install(new: Path) -> None:
    """Make the finished directory ``new`` the data directory."""
    pin_config(new)
    (new / COMPLETE).write_text("")
    lib.fsync_dir(new)
    shutil.rmtree(OLD, ignore_errors=True)
    if lib.PGDATA.exists():
        lib.PGDATA.rename(OLD)

    new.rename(lib.PGDATA)
    lib.fsync_dir(lib.DATA_DIR)
    (lib.PGDATA / COMPLETE).unlink()
    shutil.rmtree(OLD, ignore_errors=True)


def settle() -> None:
    """Finish or undo a swap that a crash cut short; drop half-built copies."""
    if not lib.PGDATA.exists():
        if (NEW / COMPLETE).exists():
            NEW.rename(lib.PGDATA)
        elif OLD.exists():
            OLD.rename(lib.PGDATA)

    (lib.PGDATA / COMPLETE).unlink(missing_ok=True)
    shutil.rmtree(NEW, ignore_errors=True)
    shutil.rmtree(OLD, ignore_errors=True)


# -- making data --------------------------------------------------------------


def initdb() -> None:
    """Create an empty cluster in PGDATA (checksums on, for pg_rewind).

    Raises:
        rolecall_hook.HookFailed: When initdb fails.
    """
    target = fresh_dir(NEW)
    result = lib.run_as_postgres(
        [
            str(lib.BIN / "initdb"),
            "--pgdata",
            str(target),
            "--username",
            lib.SUPERUSER,
            "--encoding",
            "UTF8",
            "--locale",
            "C.UTF-8",
            "--data-checksums",
            "--auth-local",
            "peer",
            "--auth-host",
            "scram-sha-256",
        ],
        timeout=120.0,
    )
    if result.returncode != 0:
        raise rolecall_hook.HookFailed(
            f"initdb exited with {result.returncode}: {lib.tail(result.stderr)}"
        )

    install(target)


def clone(address: str) -> None:
    """Replace PGDATA with a base backup of the primary at ``address``.

    Raises:
        rolecall_hook.RetryLater: The primary did not answer or the copy
            failed part way; the next run starts it again.
    """
    target = fresh_dir(NEW)
    result = lib.run_as_postgres(
        [
            str(lib.BIN / "pg_basebackup"),
            "--dbname",
            lib.conninfo(address, application_name="pg_basebackup"),
            "--pgdata",
            str(target),
            "--wal-method",
            "stream",
            "--checkpoint",
            "fast",
            "--no-password",
            "--label",
            "rolecall clone",
        ],
        timeout=BASEBACKUP_TIMEOUT,
    )
    if result.returncode != 0:
        shutil.rmtree(target, ignore_errors=True)
        raise rolecall_hook.RetryLater(
            f"pg_basebackup from {address} exited with {result.returncode}: "
            f"{lib.tail(result.stderr)}"
        )

    install(target)


def rewind(address: str) -> tuple[bool, str]:
    """Rewind the stopped cluster in PGDATA onto the primary's history.

    A cluster that never went past the point where the primary's history
    forked from its own needs no change; pg_rewind says so and stops.

    Returns:
        Whether it worked, and pg_rewind's last words.
    """
    result = lib.run_as_postgres(
        [
            str(lib.BIN / "pg_rewind"),
            "--target-pgdata",
            str(lib.PGDATA),
            "--source-server",
            lib.conninfo(address, application_name="pg_rewind"),
        ],
        timeout=REWIND_TIMEOUT,
    )
    words = lib.tail(result.stdout + "\n" + result.stderr, 2)

    return result.returncode == 0, words


# -- roles --------------------------------------------------------------------


def primary_facts(address: str) -> dict[str, Any]:
    """What the primary at ``address`` says about itself.

    It is asked for a checkpoint first: a server promoted a moment ago
    records its new timeline in its control file only at its next
    checkpoint, and pg_rewind reads the timeline from there.

    Returns:
        ``system`` (identifier) and ``timeline``.

    Raises:
        rolecall_hook.RetryLater: It does not answer, or is not a primary
            yet (a promotion still under way).
    """
    try:
        facts = lib.query_json(
            "SELECT json_build_object("
            "'system', (SELECT system_identifier::text FROM pg_control_system()),"
            "'in_recovery', pg_is_in_recovery());",
            address=address,
        )
        if not facts["in_recovery"]:
            lib.query("CHECKPOINT;", address=address, timeout=60.0)
            facts = lib.query_json(
                "SELECT json_build_object("
                "'system', (SELECT system_identifier::text FROM pg_control_system()),"
                "'in_recovery', pg_is_in_recovery(),"
                f"'timeline', {repl.TIMELINE_SQL});",
                address=address,
            )
    except (lib.PgUnreachableError, lib.PgQueryError) as exc:
        raise rolecall_hook.RetryLater(
            f"the primary at {address} does not answer: {exc}"
        ) from exc

    if facts["in_recovery"]:
        raise rolecall_hook.RetryLater(
            f"the member at {address} is still a standby; follow it once "
            f"it has been promoted"
        )

    return dict(facts)


def as_standby() -> None:
    """Make the next start of PGDATA a standby start."""
    signal = lib.PGDATA / "standby.signal"
    signal.touch()
    lib.chown_postgres(signal)


def reseed(address: str, source: dict[str, Any], *, timeout: float) -> tuple[str, str]:
    """Turn the local data into a standby of the primary at ``address``.

    Same cluster: rewind (a no-op when nothing diverged); a rewind that
    fails, or another cluster, or no data: copy afresh. The server is
    stopped first, so a former primary never takes a write meanwhile.

    Returns:
        How (``rewind`` or ``clone``), and why a rewind was not enough.

    Args:
        address: Where the primary is.
        source: What `primary_facts` said about it.
        timeout: Seconds the started standby may take to take queries.
    """
    server.shutdown()
    method, why = "clone", "no data of the primary's cluster here"
    if server.local_system_id() == source["system"]:
        pin_config(lib.PGDATA)
        # A standby cut off by a crash is recovered in single-user mode
        # first, which a standby signal would refuse.
        for name in ("standby.signal", "recovery.signal"):
            (lib.PGDATA / name).unlink(missing_ok=True)

        worked, words = rewind(address)
        method, why = ("rewind", "") if worked else ("clone", words)
        pin_config(lib.PGDATA)

    if method == "clone":
        clone(address)

    as_standby()
    server.launch(timeout=timeout)

    return method, why


def wait_streaming(timeline: int, *, timeout: float) -> bool:
    """Wait until the local standby streams its primary's ``timeline``.

    A standby whose WAL went past the point where that timeline forked
    off connects, reads up to the fork, and is sent away, again and
    again: streaming alone does not show it follows.
    """

    def on_timeline() -> bool:
        try:
            facts = repl.positions()
        except (lib.PgUnreachableError, lib.PgQueryError):
            return False

        receiver = facts.get("receiver") or {}
        return repl.is_streaming(facts) and bool(receiver.get("timeline") == timeline)

    return bool(lib.wait_until(on_timeline, timeout=timeout, interval=0.2))


def promote(*, timeout: float = 60.0) -> None:
    """Promote the local standby and wait until it takes writes.

    Raises:
        rolecall_hook.HookFailed: When it is still a standby afterwards.
    """
    result = lib.run_as_postgres(
        [
            str(lib.BIN / "pg_ctl"),
            "promote",
            "--pgdata",
            str(lib.PGDATA),
            "--wait",
            "--timeout",
            str(int(timeout)),
        ],
        timeout=timeout + 10,
    )
    deadline = time.monotonic() + 5.0
    while server.in_recovery():
        if time.monotonic() > deadline:
            raise rolecall_hook.HookFailed(
                f"postgres is still a standby after pg_ctl promote "
                f"(exit {result.returncode}): {lib.tail(result.stderr)}"
            )

        time.sleep(0.1)

    # Records the new timeline in the control file, where pg_rewind on a
    # former primary looks for it.
    lib.query("SET synchronous_commit TO local;\nCHECKPOINT;\n", timeout=60.0)


def bring_up(state: dict[str, Any], durability: str, *, timeout: float) -> str:
    """Start the server from the data there is, in the saved role.

    No data: an empty cluster, or for a follower a copy of its primary.
    A writer whose server comes up as a standby (promoted while it was
    down) is promoted.

    Returns:
        How it came up, for the log and the result.
    """
    role = state.get("role")
    address = state.get("primary_address")
    lib.write_role_conf(state, durability)
    if role in lib.FOLLOWER_ROLES and address and not server.has_data():
        lib.update_state(synced=False)
        source = primary_facts(str(address))
        method, _ = reseed(str(address), source, timeout=timeout)
        return f"copied from {state.get('primary')} ({method})"

    if not server.has_data():
        initdb()
        server.launch(timeout=timeout)
        return "new empty cluster"

    if role in lib.FOLLOWER_ROLES:
        as_standby()

    server.launch(timeout=timeout)
    if role in lib.WRITER_ROLES and server.in_recovery():
        promote()
        return "promoted on start"

    return "restarted"
