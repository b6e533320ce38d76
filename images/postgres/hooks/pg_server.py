"""The PostgreSQL server process: find it, start it, stop it, ask it.

Every hook that changes whether the server runs goes through here, so the
rules live in one place: the server outlives the hook that started it, a
start waits until it takes queries, a stop is a fast shutdown.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pg_hooklib as lib  # type: ignore[import-not-found]

# The SDK is copied beside the hooks at build time; in the source tree it
# lives in another package, where the type checker cannot see it as this name.
import rolecall_hook  # type: ignore[import-not-found]


def postmaster_pid() -> int | None:
    """The pid of the server running on PGDATA, if it runs."""
    try:
        pid = int((lib.PGDATA / "postmaster.pid").read_text().split("\n", 1)[0])
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return None

    state = stat.rpartition(")")[2].split()[0]
    if state in ("Z", "X") or b"postgres" not in cmdline:
        return None

    return pid


def accepting() -> bool:
    """Whether the local server accepts connections (not while starting)."""
    result: subprocess.CompletedProcess[str] = lib.run_as_postgres(
        [str(lib.BIN / "pg_isready"), "-q", "-t", "2"], timeout=10.0
    )
    return result.returncode == 0


def has_data() -> bool:
    """Whether PGDATA holds a database cluster."""
    pgdata: Path = lib.PGDATA
    return (pgdata / "PG_VERSION").is_file()


def prepare_runtime_dirs() -> None:
    """The socket directory and the log file, writable by postgres."""
    lib.SOCKET_DIR.mkdir(parents=True, exist_ok=True)
    lib.SOCKET_DIR.chmod(0o2775)
    lib.chown_postgres(lib.SOCKET_DIR)
    lib.LOG_PATH.touch(exist_ok=True)
    lib.chown_postgres(lib.LOG_PATH)


def launch(*, timeout: float) -> None:
    """Start the server in the background and wait until it takes queries.

    Raises:
        rolecall_hook.HookFailed: The server exited (bad config, bad data).
        rolecall_hook.RetryLater: It runs but does not answer yet.
    """
    prepare_runtime_dirs()
    result = lib.run_as_postgres(
        [
            str(lib.BIN / "pg_ctl"),
            "start",
            "--no-wait",
            "--pgdata",
            str(lib.PGDATA),
            "--log",
            str(lib.LOG_PATH),
            "--options",
            f"-c config_file={lib.CONFIG_PATH}",
        ],
        timeout=30.0,
        # The server outlives the hook: keep it out of the hook's process
        # group, which is killed when a hook overruns its deadline.
        new_session=True,
    )
    if result.returncode != 0:
        raise rolecall_hook.HookFailed(
            f"pg_ctl start exited with {result.returncode}: "
            f"{lib.tail(result.stderr)}; log: {lib.log_tail()}"
        )

    wait_accepting(timeout=timeout)


def wait_accepting(*, timeout: float) -> None:
    """Wait until the server takes queries.

    Raises:
        rolecall_hook.HookFailed: The server is gone.
        rolecall_hook.RetryLater: It runs but does not answer within
            ``timeout`` seconds (still replaying, for example).
    """
    started = time.monotonic()
    while not accepting():
        # pg_ctl returns before the server writes its pid file: give it a
        # moment before reading a missing pid as an exit.
        grace = time.monotonic() - started > 3.0
        if grace and postmaster_pid() is None:
            raise rolecall_hook.HookFailed(
                f"postgres exited while starting; log: {lib.log_tail()}"
            )

        if time.monotonic() - started > timeout:
            raise rolecall_hook.RetryLater(
                f"postgres does not take connections {timeout:g} s after it "
                f"started (it may still be replaying); log: {lib.log_tail()}"
            )

        time.sleep(0.1)


def shutdown(*, timeout: float = 60.0) -> bool:
    """Stop the server with a fast shutdown; return whether it ran.

    Raises:
        rolecall_hook.RetryLater: It is still running after ``timeout``.
    """
    if postmaster_pid() is None:
        return False

    result = lib.run_as_postgres(
        [
            str(lib.BIN / "pg_ctl"),
            "stop",
            "--pgdata",
            str(lib.PGDATA),
            "--mode",
            "fast",
            "--wait",
            "--timeout",
            str(int(timeout)),
        ],
        timeout=timeout + 10,
    )
    if result.returncode != 0 and postmaster_pid() is not None:
        raise rolecall_hook.RetryLater(
            f"postgres still runs after a fast shutdown: {lib.tail(result.stderr)}"
        )

    return True


def reload() -> None:
    """Make a running server read its configuration files again."""
    if postmaster_pid() is None:
        return

    lib.run_as_postgres(
        [str(lib.BIN / "pg_ctl"), "reload", "--pgdata", str(lib.PGDATA)]
    )


def in_recovery() -> bool:
    """Whether the local server is a standby (replaying WAL)."""
    return bool(lib.query_json("SELECT to_json(pg_is_in_recovery());"))


def local_system_id() -> str | None:
    """The database system identifier of the cluster in PGDATA, if any."""
    if not has_data():
        return None

    result: subprocess.CompletedProcess[str] = lib.run_as_postgres(
        [str(lib.BIN / "pg_controldata"), str(lib.PGDATA)]
    )
    for line in result.stdout.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Database system identifier":
            return value.strip()

    return None
