"""Running commands in containers through the Docker engine's exec API.

`_DockerExec` is the layer of `DockerRuntime` that runs `exec`: one exec
slot per command, the output read into a bounded capture (stdout's head,
stderr's tail), stdin half-closed after the payload, the exit code polled
from exec inspect, and a command that overruns its timeout (or whose caller
is cancelled) killed inside the container before `exec` returns: every exec
carries a unique marker in its environment, and a second exec kills what
carries it (see ``_docker_kill``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence

import aiohttp
import anyio
import structlog
from aiodocker.execs import Exec
from aiodocker.stream import Stream
from attrs import define, field, frozen

from ..hooks_protocol._errors import ContainerGoneError, EngineError
from ._docker_connection import _DockerConnection
from ._docker_kill import MARKER_ENV, _signal_on_host, killer_argv
from ._engine_config import DEFAULT_ENGINE, TlsFiles
from ._runtime import ContainerState, ExecResult

_log = structlog.get_logger("rolecall.docker")

_START_TIMEOUT = 30.0
"""Seconds an exec may take to start; the start is shielded, so it is bounded."""

_KILL_TIMEOUT = 10.0
"""Seconds the kill of an overrun exec may take, engine round trips included."""

_SWEEP_GRACE = 2.0
"""Seconds an exec may take to end after the in-container kill ran."""

_POLL_FIRST = 0.02
_POLL_MAX = 0.5
"""Exec inspect polling starts fast and backs off to this period."""

_DRAIN_QUIET = 0.05
_DRAIN_MAX = 1.0
"""After the exec exits, read on until the output is quiet this long (or ends)."""

_GONE_GRACE = 0.5
"""Seconds a command's death by signal waits to see if its container died."""


class _DockerExec(_DockerConnection):
    """The exec layer of `DockerRuntime`, over its engine connection."""

    def __init__(
        self,
        url: str | None = None,
        *,
        tls: TlsFiles | None = None,
        name: str = DEFAULT_ENGINE,
        max_concurrent_execs: int = 4,
    ) -> None:
        if max_concurrent_execs < 1:
            raise ValueError(
                f"max_concurrent_execs must be at least 1, got {max_concurrent_execs!r}"
            )

        super().__init__(url, tls=tls, name=name)
        # One token per exec running; waiters queue for a free one.
        self._exec_slots = anyio.Semaphore(max_concurrent_execs)
        # Whether an exec the in-container kill could not end may be killed
        # from this host when the engine runs here (off: remote behaviour).
        self._kill_on_host = True

    async def exec(
        self,
        container_id: str,
        argv: Sequence[str],
        *,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float,
        max_stdout: int,
        max_stderr: int,
        on_stderr: Callable[[bytes], None] | None = None,
    ) -> ExecResult:
        """Run ``argv`` inside the container and wait for it to exit.

        The command is done when its process exits, even if something it
        left behind still holds its stdout. ``timeout`` counts from the
        moment a slot is free, not while waiting for one. Stderr reaches
        ``on_stderr`` chunk by chunk as the engine streams it.

        Raises:
            TimeoutError: The command ran past ``timeout``; it was killed.
            ContainerGoneError: The container went away or stopped.
            ValueError: ``argv`` is empty or a cap is negative.
        """
        if not argv:
            raise ValueError("argv must name a command, got an empty sequence")

        if min(max_stdout, max_stderr) < 0:
            raise ValueError(
                f"output caps must be >= 0, got {max_stdout!r} and {max_stderr!r}"
            )

        async with self._exec_slots:
            run = _ExecRun(
                container_id,
                _Capture(max_stdout, max_stderr),
                uuid.uuid4().hex,
                on_stderr=on_stderr,
            )
            started = anyio.current_time()
            try:
                with anyio.move_on_after(timeout) as deadline:
                    exit_code = await self._run(run, argv, stdin=stdin, env=env)
            except anyio.get_cancelled_exc_class():
                with anyio.CancelScope(shield=True):
                    await self._kill(run)
                raise

            if deadline.cancelled_caught:
                with anyio.CancelScope(shield=True):
                    await self._kill(run)
                raise TimeoutError(
                    f"{argv[0]!r} in container {container_id!r} ran past "
                    f"{timeout} s and was killed"
                )

        return run.capture.result(exit_code, anyio.current_time() - started)

    async def _run(
        self,
        run: _ExecRun,
        argv: Sequence[str],
        *,
        stdin: bytes | None,
        env: Mapping[str, str] | None,
    ) -> int | None:
        cid = run.container_id
        what = f"run {argv[0]!r}"
        environment = {**(env or {}), MARKER_ENV: run.marker}
        command = list(argv)
        if stdin is not None and self._ssl is not None:
            command = _framed_stdin_argv(argv, len(stdin))
        with self._translated(what=what, container_id=cid):
            container = self._client().containers.container(cid)
            handle = await container.exec(
                command, stdin=stdin is not None, environment=environment
            )
        run.handle = handle
        stream = handle.start(detach=False)
        # Shielded so that a timeout cannot land between "the engine started
        # the process" and "we know it did": the kill step must see it.
        with (
            self._translated(what=what, container_id=cid),
            anyio.CancelScope(shield=True),
            anyio.fail_after(_START_TIMEOUT),
        ):
            await stream.__aenter__()

        failure: EngineError | None = None
        exit_code: int | None = None
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(run.pump, stream)
                if stdin is not None:
                    tasks.start_soon(_feed, stream, stdin)
                try:
                    exit_code = await self._wait_exit(handle, cid, run.output_done)
                    await run.wait_drained()
                except EngineError as exc:
                    failure = exc  # raised below, outside the task group
                tasks.cancel_scope.cancel()
        finally:
            await stream.close()

        if failure is not None:
            raise failure

        # 126 and 127 are also what the runtime reports when it cannot start
        # a process in a container that is dying, and >= 128 what a process
        # killed with its container gets: in each case ask the container.
        broken = run.stream_error
        if broken is not None or exit_code is None or exit_code >= 126:
            await self._check_running(cid)

        if broken is not None:
            raise self._unavailable(broken) from broken

        return exit_code

    async def _inspect_exec(self, handle: Exec, container_id: str) -> _ExecDetail:
        with self._translated(what="inspect an exec", container_id=container_id):
            raw = await handle.inspect()

        code = raw.get("ExitCode")
        return _ExecDetail(
            running=bool(raw.get("Running")),
            exit_code=code if isinstance(code, int) else None,
            pid=int(raw.get("Pid") or 0),
            container_id=str(raw.get("ContainerID") or container_id),
        )

    async def _wait_exit(
        self, handle: Exec, container_id: str, output_done: anyio.Event | None
    ) -> int | None:
        """Poll exec inspect until the process is gone; return its code.

        The end of the output cannot tell on its own: a child left in the
        background keeps the stream open after the command exits. Until
        the output ends, its end wakes the poll early.
        """
        period = _POLL_FIRST
        while True:
            if output_done is None or output_done.is_set():
                await anyio.sleep(period)
            else:
                with anyio.move_on_after(period):
                    await output_done.wait()

            detail = await self._inspect_exec(handle, container_id)
            if not detail.running:
                return detail.exit_code

            period = min(period * 2, _POLL_MAX)

    async def _check_running(self, container_id: str) -> None:
        """Raise `ContainerGoneError` unless the container still runs.

        A command killed with its container can report its end before the
        engine has marked the container stopped, so a running state is
        trusted only after a short grace.
        """
        with anyio.move_on_after(_GONE_GRACE):
            while True:
                info = await self.inspect_container(container_id)
                if info.state is not ContainerState.RUNNING:
                    raise ContainerGoneError(
                        f"container {container_id!r} stopped while running a "
                        f"command (now {info.state.value})",
                        container_id=container_id,
                    )
                await anyio.sleep(_POLL_FIRST)

    async def _kill(self, run: _ExecRun) -> None:
        """Kill an overrun exec's processes inside the container, then wait.

        The kill runs as a second exec in the container: it finds the
        processes carrying the exec's marker in their environment and
        SIGKILLs them, children (daemonised ones included) with their
        parent. That needs nothing but the engine's API, so it works
        against a remote engine too. An image without ``sh``, ``tr`` and ``grep``
        keeps the process; when the engine runs on this host, the process
        and its group are then killed from here by their host pid.
        Otherwise a warning says the process was left to run.
        """
        handle, cid = run.handle, run.container_id
        if handle is None:
            return

        with anyio.move_on_after(_KILL_TIMEOUT) as scope:
            try:
                detail = await self._inspect_exec(handle, cid)
                if not detail.running:
                    return

                await self._sweep(cid, run.marker)
                with anyio.move_on_after(_SWEEP_GRACE):
                    await self._wait_exit(handle, cid, None)
                    return

                if not self._kill_from_host(detail):
                    _log.warning(
                        "exec_kill_failed",
                        container_id=cid,
                        reason="the in-container kill left it running (does the"
                        " image have sh, tr and grep?) and the engine's host is"
                        " not this one",
                    )
                    return

                await self._wait_exit(handle, cid, None)
            except ContainerGoneError:
                return  # the process went with its container
            except EngineError as exc:
                _log.warning("exec_kill_failed", container_id=cid, error=str(exc))

        if scope.cancelled_caught:
            _log.warning("exec_kill_timed_out", container_id=cid)

    async def _sweep(self, container_id: str, marker: str) -> None:
        """Kill what carries ``marker`` from a second exec in the container.

        It takes no exec slot: the slots may all be held by execs waiting
        for this very kill.
        """
        try:
            with self._translated(what="kill an exec", container_id=container_id):
                container = self._client().containers.container(container_id)
                killer = await container.exec(killer_argv(marker))
                await killer.start(detach=True)

            await self._wait_exit(killer, container_id, None)
        except ContainerGoneError:
            raise
        except EngineError as exc:
            _log.warning("exec_sweep_failed", container_id=container_id, error=str(exc))

    def _kill_from_host(self, detail: _ExecDetail) -> bool:
        if not self._kill_on_host or detail.pid <= 0:
            return False

        reach = _signal_on_host(detail.container_id, detail.pid)

        return not (reach.foreign or reach.denied)


# -- exec plumbing ----------------------------------------------------------


@frozen
class _ExecDetail:
    """What exec inspect says about one exec."""

    running: bool
    exit_code: int | None
    pid: int
    container_id: str


@define
class _Capture:
    """Output of one exec, bounded: stdout's head and stderr's tail."""

    max_stdout: int
    max_stderr: int
    # The head of stdout; never longer than max_stdout.
    stdout: bytearray = field(factory=bytearray)
    # The tail of stderr; never longer than max_stderr after an add().
    stderr: bytearray = field(factory=bytearray)
    # Whether a byte of stdout (stderr) was dropped; never goes back.
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    # Chunks seen so far; grows by one per chunk, so a drain can see quiet.
    chunks: int = 0

    def add(self, fileno: int, data: bytes) -> None:
        self.chunks += 1
        if fileno == 2:
            self.stderr += data
            excess = len(self.stderr) - self.max_stderr
            if excess > 0:
                del self.stderr[:excess]
                self.stderr_truncated = True
            return

        room = self.max_stdout - len(self.stdout)
        if len(data) > room:
            self.stdout_truncated = True
        if room > 0:
            self.stdout += data[:room]

    def result(self, exit_code: int | None, duration: float) -> ExecResult:
        return ExecResult(
            exit_code=exit_code,
            stdout=bytes(self.stdout),
            stderr=bytes(self.stderr),
            stdout_truncated=self.stdout_truncated,
            stderr_truncated=self.stderr_truncated,
            duration=duration,
        )


@define
class _ExecRun:
    """One exec in flight, shared by its reader, its waiter and its killer."""

    container_id: str
    capture: _Capture
    # The value of MARKER_ENV in the exec's environment; unique per exec.
    marker: str
    # The engine's exec; None until it is created.
    handle: Exec | None = None
    # Set once the output stream has ended (or broken).
    output_done: anyio.Event = field(factory=anyio.Event)
    # Why the output stream broke, if it did; None while it is whole.
    stream_error: Exception | None = None
    # Gets each chunk of stderr as it arrives; None when nobody listens.
    on_stderr: Callable[[bytes], None] | None = None

    async def pump(self, stream: Stream) -> None:
        """Read output until the stream ends; never raises but cancellation."""
        try:
            while (message := await stream.read_out()) is not None:
                self.capture.add(message.stream, message.data)
                if message.stream == 2 and self.on_stderr is not None:
                    self.on_stderr(message.data)
        except (aiohttp.ClientError, OSError) as exc:
            self.stream_error = exc
        finally:
            self.output_done.set()

    async def wait_drained(self) -> None:
        """Take what the exited command left in the pipe, then stop waiting."""
        with anyio.move_on_after(_DRAIN_MAX):
            while not self.output_done.is_set():
                seen = self.capture.chunks
                with anyio.move_on_after(_DRAIN_QUIET):
                    await self.output_done.wait()
                if self.capture.chunks == seen:
                    return


# The command reads exactly $1 bytes of stdin through `head`, so it sees EOF
# after the payload although the exec's stdin stays open: see
# `_framed_stdin_argv`.
_FRAME_SCRIPT = 'n=$1; shift; head -c "$n" | "$@"'


def _framed_stdin_argv(argv: Sequence[str], size: int) -> list[str]:
    """``argv`` wrapped so that it gets EOF after ``size`` bytes of stdin.

    Known gap: asyncio's TLS transport cannot half-close (its
    ``write_eof`` raises), so on an engine reached over TLS the EOF that
    `_feed` sends on a plain socket cannot be sent, and a command reading
    stdin to its end would wait for ever. The payload's length travels in
    argv instead and ``head`` ends the command's input there. This needs
    ``sh`` and ``head`` in the image (like the kill needs ``sh``); the
    command runs as a child of ``sh``, whose exit code is the command's.
    """
    return ["sh", "-c", _FRAME_SCRIPT, "rolecall-stdin", str(size), *argv]


async def _feed(stream: Stream, payload: bytes) -> None:
    """Write ``payload`` to the exec's stdin, then send EOF on stdin only."""
    try:
        if payload:
            await stream.write_in(payload)
        # aiodocker's Stream.close() closes the whole connection, so a command
        # that reads stdin to EOF would lose its output with it. Half-closing
        # the upgraded socket's write side is the EOF the engine passes on;
        # aiodocker has no public call for it, hence the reach for _resp.
        response = stream._resp
        connection = None if response is None else response.connection
        transport = None if connection is None else connection.transport
        if transport is not None and transport.can_write_eof():
            transport.write_eof()
    except (aiohttp.ClientError, OSError, RuntimeError):
        # The command exited without taking its input; its exit code and
        # output say what happened, so there is nothing to add here.
        return
