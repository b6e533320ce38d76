"""The Docker runtime: `ContainerRuntime` on a Docker engine through aiodocker.

This is the one module that imports aiodocker. Every aiodocker or aiohttp
error turns into a member of rolecall's tree here, and every raw JSON dict
into one of the records from ``_runtime``; nothing above sees either.

aiodocker runs on asyncio only, so this runtime does too.
"""

from __future__ import annotations

import json
import math
import os
import select
import signal
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import (
    AbstractAsyncContextManager,
    asynccontextmanager,
    contextmanager,
)
from pathlib import Path
from typing import Any

import aiodocker
import aiohttp
import anyio
import structlog
from aiodocker.execs import Exec
from aiodocker.stream import Stream
from aiodocker.volumes import DockerVolume
from attrs import define, field, frozen

from ..hooks_protocol._errors import (
    ContainerGoneError,
    EngineError,
    EngineUnavailableError,
    ImageNotFoundError,
)
from ._runtime import (
    LABEL_PREFIX,
    ContainerInfo,
    ContainerSpec,
    ContainerState,
    EngineEvent,
    ExecResult,
    ImageInfo,
)

__all__ = ["DockerRuntime", "open_docker_runtime"]

_log = structlog.get_logger("rolecall.docker")

_DEFAULT_URL = "unix:///var/run/docker.sock"
_SCHEMES = ("unix://", "tcp://", "http://", "https://", "ssh://", "npipe://")

_CONNECT_TIMEOUT = 10.0
"""Seconds to wait for a connection to the engine before calling it gone."""

_START_TIMEOUT = 30.0
"""Seconds an exec may take to start; the start is shielded, so it is bounded."""

_KILL_TIMEOUT = 10.0
"""Seconds the kill of an overrun exec may take, engine round trips included."""

_POLL_FIRST = 0.02
_POLL_MAX = 0.5
"""Exec inspect polling starts fast and backs off to this period."""

_DRAIN_QUIET = 0.05
_DRAIN_MAX = 1.0
"""After the exec exits, read on until the output is quiet this long (or ends)."""

_GONE_GRACE = 0.5
"""Seconds a command's death by signal waits to see if its container died."""

_EVENT_LINE_MAX = 1 << 20

_EVENT_ACTIONS = (
    "die",
    "oom",
    "kill",
    "stop",
    "start",
    "destroy",
    "pause",
    "unpause",
    "health_status",
)

_ENGINE_ATTRIBUTES = frozenset({"image", "name", "exitCode", "signal"})
"""Event attributes the engine adds beside the container's labels."""


def _resolve_url(url: str | None) -> str:
    resolved = url or os.environ.get("DOCKER_HOST") or _DEFAULT_URL
    if not resolved.startswith(_SCHEMES):
        raise ValueError(
            f"expected an engine URL starting with one of {_SCHEMES}, got {resolved!r}"
        )

    return resolved


class DockerRuntime:
    """`ContainerRuntime` backed by a Docker engine.

    Use `open_docker_runtime` to get one that has checked the engine
    answers; a bare instance connects on its first call. Call `aclose`
    when done.

    Args:
        url: Engine address (``unix:///var/run/docker.sock``,
            ``tcp://HOST:PORT``, ...); ``None`` takes ``DOCKER_HOST``, then the
            default socket.
        max_concurrent_execs: How many commands may run through `exec` at
            once; more wait for a slot. The engine serialises exec start-up,
            so more in parallel only adds latency.

    Raises:
        ValueError: ``url`` has no known scheme or the cap is below one.
    """

    def __init__(
        self, url: str | None = None, *, max_concurrent_execs: int = 4
    ) -> None:
        if max_concurrent_execs < 1:
            raise ValueError(
                f"max_concurrent_execs must be at least 1, got {max_concurrent_execs!r}"
            )

        self._url = _resolve_url(url)
        # Created on first use, inside the event loop; None until then and
        # again after aclose().
        self._docker: aiodocker.Docker | None = None
        # One token per exec running; waiters queue for a free one.
        self._exec_slots = anyio.Semaphore(max_concurrent_execs)

    @property
    def address(self) -> str:
        """Where the engine is reached, for messages and status."""
        return self._url

    def _client(self) -> aiodocker.Docker:
        if self._docker is None:
            timeout = aiohttp.ClientTimeout(sock_connect=_CONNECT_TIMEOUT)
            self._docker = aiodocker.Docker(url=self._url, timeout=timeout)

        return self._docker

    async def aclose(self) -> None:
        """Release the connection to the engine."""
        docker, self._docker = self._docker, None
        if docker is not None:
            await docker.close()

    async def engine_version(self) -> str:
        """Ask the engine for its version; proves that it answers.

        Returns:
            The engine's version string, for example ``20.10.24``.

        Raises:
            EngineUnavailableError: No engine answers at `address`.
        """
        with self._translated(what="report its version"):
            raw = await self._client().version()

        return str(raw.get("Version", "unknown"))

    # -- errors -------------------------------------------------------------

    def _unavailable(self, reason: object) -> EngineUnavailableError:
        why = str(reason) or type(reason).__name__
        return EngineUnavailableError(
            f"no Docker engine answers at {self._url!r} ({why}); start one "
            f"with `dockerd` or set DOCKER_HOST to where one listens",
            address=self._url,
        )

    def _refused(
        self,
        exc: aiodocker.DockerError,
        *,
        what: str,
        container_id: str | None,
        image: str | None,
    ) -> EngineError:
        status, message = exc.status, str(exc.message)
        # aiodocker reports "could not connect" as a made-up status 900.
        if status == 900:
            return self._unavailable(message)

        stopped = status == 409 and "is not running" in message
        if container_id is not None and (status == 404 or stopped):
            return ContainerGoneError(
                f"container {container_id!r} is gone or stopped: {message}",
                container_id=container_id,
            )

        if image is not None and status == 404 and "image" in message.lower():
            return ImageNotFoundError(
                f"image {image!r} is not on the engine at {self._url!r}; "
                f"build or load it first",
                image=image,
            )

        return EngineError(f"the engine refused to {what}: {message} ({status})")

    @contextmanager
    def _translated(
        self,
        *,
        what: str,
        container_id: str | None = None,
        image: str | None = None,
    ) -> Iterator[None]:
        """Turn aiodocker's and aiohttp's errors in the block into ours."""
        try:
            yield
        except aiodocker.DockerError as exc:
            raise self._refused(
                exc, what=what, container_id=container_id, image=image
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise self._unavailable(exc) from exc

    # -- containers ---------------------------------------------------------

    async def create_container(self, spec: ContainerSpec) -> ContainerInfo:
        """Create a container (not started).

        A container of that name that carries the same ``io.rolecall.*``
        labels (the spec's over the image's) is returned as it is: a
        retried create is harmless.

        Raises:
            ImageNotFoundError: The engine has no such image.
            EngineError: The name is taken by a container with other labels.
        """
        conflict: aiodocker.DockerError | None = None
        with self._translated(what=f"create {spec.name!r}", image=spec.image):
            try:
                created = await self._client().containers.create(
                    _container_config(spec), name=spec.name
                )
            except aiodocker.DockerError as exc:
                if exc.status != 409:
                    raise

                conflict = exc

        if conflict is None:
            return await self.inspect_container(created.id)

        existing = await self.inspect_container(spec.name)
        # A container carries its image's labels too, under the spec's.
        image = await self.inspect_image(spec.image)
        expected = _own_labels({**image.labels, **spec.labels})
        if _own_labels(existing.labels) != expected:
            raise EngineError(
                f"container name {spec.name!r} is taken by {existing.id[:12]!r} "
                f"with other {LABEL_PREFIX} labels; remove it or pick another name"
            ) from conflict

        return existing

    async def start_container(self, container_id: str) -> None:
        """Start a created or stopped container."""
        with self._translated(what="start", container_id=container_id):
            await self._client().containers.container(container_id).start()

    async def stop_container(self, container_id: str, *, timeout: float) -> None:
        """Stop gracefully, killing after ``timeout`` (rounded up to seconds)."""
        grace = max(0, math.ceil(timeout))
        with self._translated(what="stop", container_id=container_id):
            await self._client().containers.container(container_id).stop(t=grace)

    async def kill_container(self, container_id: str) -> None:
        """Kill at once with SIGKILL; a container not running stays as it is."""
        with self._translated(what="kill", container_id=container_id):
            try:
                container = self._client().containers.container(container_id)
                await container.kill(signal="SIGKILL")
            except aiodocker.DockerError as exc:
                if exc.status != 409 or "is not running" not in str(exc.message):
                    raise

    async def remove_container(self, container_id: str) -> None:
        """Remove (forcibly) with its anonymous volumes; gone is not an error."""
        with self._translated(what="remove", container_id=container_id):
            try:
                container = self._client().containers.container(container_id)
                await container.delete(force=True, v=True)
            except aiodocker.DockerError as exc:
                in_progress = exc.status == 409 and "in progress" in str(exc.message)
                if exc.status != 404 and not in_progress:
                    raise

    async def inspect_container(self, container_id: str) -> ContainerInfo:
        """Describe one container."""
        with self._translated(what="inspect", container_id=container_id):
            raw = await self._client().containers.container(container_id).show()

        return _container_info(raw)

    async def list_containers(
        self, *, labels: Mapping[str, str]
    ) -> list[ContainerInfo]:
        """Every container (running or not) carrying all of ``labels``."""
        filters = json.dumps({"label": _label_filters(labels)})
        with self._translated(what="list containers"):
            found = await self._client().containers.list(all=True, filters=filters)

        infos = []
        for container in found:
            try:
                infos.append(await self.inspect_container(container.id))
            except ContainerGoneError:
                continue

        return infos

    async def inspect_image(self, image: str) -> ImageInfo:
        """Describe an image.

        Raises:
            ImageNotFoundError: The engine has no such image.
        """
        with self._translated(what=f"inspect image {image!r}", image=image):
            raw = await self._client().images.inspect(image)

        config = raw.get("Config") or {}
        return ImageInfo(
            id=str(raw["Id"]),
            tags=tuple(str(tag) for tag in raw.get("RepoTags") or ()),
            labels=_str_dict(config.get("Labels")),
        )

    # -- exec ---------------------------------------------------------------

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
    ) -> ExecResult:
        """Run ``argv`` inside the container and wait for it to exit.

        The command is done when its process exits, even if something it
        left behind still holds its stdout. ``timeout`` counts from the
        moment a slot is free, not while waiting for one.

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
            run = _ExecRun(container_id, _Capture(max_stdout, max_stderr))
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
        with self._translated(what=what, container_id=cid):
            container = self._client().containers.container(cid)
            handle = await container.exec(
                list(argv), stdin=stdin is not None, environment=env
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
        """Kill an overrun exec's process inside the container, then wait.

        Docker's API has no call to signal an exec'd process (only the
        container's main one), and closing the stream leaves it running.
        Exec inspect gives the process id as the engine's host sees it;
        `_signal_on_host` uses it when that host is this one.

        Known shortcoming: a remote engine's host pids mean nothing here and
        cannot be mapped to the container's pid namespace, so against a
        remote engine the process is left to run until it exits, and a
        warning says so. Children that left the command's process group
        (``setsid``, daemons) survive everywhere; the container's init
        reaps them when they end.
        """
        handle, cid = run.handle, run.container_id
        if handle is None:
            return

        with anyio.move_on_after(_KILL_TIMEOUT) as scope:
            try:
                detail = await self._inspect_exec(handle, cid)
                if not detail.running or detail.pid <= 0:
                    return

                reach = _signal_on_host(detail.container_id, detail.pid)
                if reach.foreign:
                    _log.warning(
                        "exec_kill_unavailable",
                        container_id=cid,
                        reason="the engine runs on another host",
                    )
                    return

                if reach.denied:
                    await self._kill_inside(cid, reach)

                await self._wait_exit(handle, cid, None)
            except ContainerGoneError:
                return  # the process went with its container
            except EngineError as exc:
                _log.warning("exec_kill_failed", container_id=cid, error=str(exc))

        if scope.cancelled_caught:
            _log.warning("exec_kill_timed_out", container_id=cid)

    async def _kill_inside(self, container_id: str, reach: _HostReach) -> None:
        """Kill from a second exec inside the container (needs ``kill`` there).

        Used when this host may read the process's /proc entry but not
        signal it: rolecall runs as another user than the command. An image
        without a ``kill`` program keeps the process; the kill step then
        gives up after its own timeout and logs a warning.
        """
        target = f"-{reach.ns_pid}" if reach.group_leader else str(reach.ns_pid)
        with self._translated(what="kill an exec", container_id=container_id):
            container = self._client().containers.container(container_id)
            killer = await container.exec(["kill", "-9", target])
            await killer.start(detach=True)

        await self._wait_exit(killer, container_id, None)

    # -- networks and volumes -----------------------------------------------

    async def create_network(self, name: str, *, labels: Mapping[str, str]) -> None:
        """Create a user-defined bridge network unless it exists."""
        config = {
            "Name": name,
            "Driver": "bridge",
            "Labels": dict(labels),
            "CheckDuplicate": True,
        }
        with self._translated(what=f"create network {name!r}"):
            try:
                await self._client().networks.create(config)
            except aiodocker.DockerError as exc:
                if exc.status != 409:
                    raise

    async def remove_network(self, name: str) -> None:
        """Remove a network; one already gone is not an error."""
        with self._translated(what=f"remove network {name!r}"):
            try:
                network = await self._client().networks.get(name)
                await network.delete()
            except aiodocker.DockerError as exc:
                if exc.status != 404:
                    raise

    async def list_networks(self, *, labels: Mapping[str, str]) -> list[str]:
        """Names of the networks carrying all of ``labels``."""
        filters = {"label": _label_filters(labels)}
        with self._translated(what="list networks"):
            found = await self._client().networks.list(filters=filters)

        return sorted(str(network["Name"]) for network in found)

    async def create_volume(self, name: str, *, labels: Mapping[str, str]) -> None:
        """Create a named volume unless it exists (the engine makes it so)."""
        config = {"Name": name, "Labels": dict(labels)}
        volumes = self._client().volumes
        with self._translated(what=f"create volume {name!r}"):
            await volumes.create(config)  # type: ignore[no-untyped-call]

    async def remove_volume(self, name: str) -> None:
        """Remove a named volume; one already gone is not an error."""
        volume = DockerVolume(self._client(), name)  # type: ignore[no-untyped-call]
        with self._translated(what=f"remove volume {name!r}"):
            try:
                await volume.delete()  # type: ignore[no-untyped-call]
            except aiodocker.DockerError as exc:
                if exc.status != 404:
                    raise

    async def list_volumes(self, *, labels: Mapping[str, str]) -> list[str]:
        """Names of the volumes carrying all of ``labels``."""
        filters = {"label": _label_filters(labels)}
        volumes = self._client().volumes
        with self._translated(what="list volumes"):
            raw = await volumes.list(filters=filters)  # type: ignore[no-untyped-call]

        return sorted(str(volume["Name"]) for volume in raw.get("Volumes") or ())

    # -- events -------------------------------------------------------------

    def open_event_stream(
        self, *, labels: Mapping[str, str]
    ) -> AbstractAsyncContextManager[AsyncIterator[EngineEvent]]:
        """Subscribe to container events of containers carrying ``labels``.

        The subscription is live when the block is entered. Iteration ends
        when the engine closes the stream and raises
        `EngineUnavailableError` when the connection breaks; reconnecting
        is the caller's call.
        """
        return self._event_stream(dict(labels))

    @asynccontextmanager
    async def _event_stream(
        self, labels: dict[str, str]
    ) -> AsyncIterator[AsyncIterator[EngineEvent]]:
        filters = {
            "type": ["container"],
            "event": list(_EVENT_ACTIONS),
            "label": _label_filters(labels),
        }
        params = {"filters": json.dumps(filters)}
        timeout = aiohttp.ClientTimeout(sock_connect=_CONNECT_TIMEOUT)
        # aiodocker's own events API runs one unsupervised background task per
        # client with one filter set for every subscriber; a request of our own
        # gives each stream its filters and ties its life to this block.
        with self._translated(what="stream events"):
            response = await self._client()._do_query(
                "events", "GET", params=params, timeout=timeout
            )

        events = _EventIterator(self, response)
        try:
            yield events
        finally:
            events.closed = True
            response.close()


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
    # The engine's exec; None until it is created.
    handle: Exec | None = None
    # Set once the output stream has ended (or broken).
    output_done: anyio.Event = field(factory=anyio.Event)
    # Why the output stream broke, if it did; None while it is whole.
    stream_error: Exception | None = None

    async def pump(self, stream: Stream) -> None:
        """Read output until the stream ends; never raises but cancellation."""
        try:
            while (message := await stream.read_out()) is not None:
                self.capture.add(message.stream, message.data)
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


# -- killing a command on this host -----------------------------------------


@frozen
class _HostReach:
    """What this host could do to an exec'd process seen as ``pid``."""

    # The pid belongs to no process of that container here: another host.
    foreign: bool = False
    # The process is ours to see but not to signal.
    denied: bool = False
    # Its pid inside the container's pid namespace (0 when unknown).
    ns_pid: int = 0
    # Whether it leads its own process group (exec'd processes do).
    group_leader: bool = False


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
            for name in ("cgroup", "stat", "status")
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
    ns_pid = 0
    for line in proc["status"].splitlines():
        if line.startswith("NSpid:"):
            ns_pid = int(line.split()[-1])
    # Only the moments between the liveness check and these calls are open
    # to the process ending and its ids being handed out again.
    try:
        if pgid == pid:
            os.killpg(pgid, signal.SIGKILL)
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except PermissionError:
        return _HostReach(denied=True, ns_pid=ns_pid, group_leader=pgid == pid)
    except ProcessLookupError:
        pass

    return _HostReach()


# -- events -----------------------------------------------------------------


@define
class _EventIterator:
    """Container events read from one streaming ``/events`` response."""

    runtime: DockerRuntime
    response: aiohttp.ClientResponse
    # Set when the block that opened the stream has ended.
    closed: bool = False

    def __aiter__(self) -> _EventIterator:
        return self

    def is_closed(self) -> bool:
        """Whether the block that opened the stream has ended."""
        # A call, not the attribute: its value may change across an await.
        return self.closed

    async def __anext__(self) -> EngineEvent:
        while line := await self._read_line():
            event = _engine_event(_decode_event(line))
            if event is not None:
                return event

        raise StopAsyncIteration

    async def _read_line(self) -> bytes:
        """One event's JSON; empty once the stream has ended or was closed."""
        if self.is_closed():
            return b""

        try:
            return await self.response.content.readline(max_line_length=_EVENT_LINE_MAX)
        except (aiohttp.ClientError, OSError) as exc:
            if self.is_closed():
                return b""
            raise self.runtime._unavailable(exc) from exc


def _decode_event(line: bytes) -> dict[str, Any]:
    try:
        raw = json.loads(line)
    except ValueError as exc:
        raise EngineError(
            f"the engine sent an event that is not JSON: {line[:80]!r}"
        ) from exc

    if not isinstance(raw, dict):
        raise EngineError(f"the engine sent an event that is not an object: {raw!r}")

    return raw


def _engine_event(raw: Mapping[str, Any]) -> EngineEvent | None:
    action = str(raw.get("Action") or raw.get("status") or "").split(":", 1)[0]
    if action not in _EVENT_ACTIONS:
        return None

    actor = raw.get("Actor") or {}
    attributes = _str_dict(actor.get("Attributes"))
    code = attributes.get("exitCode", "")
    nanos = raw.get("timeNano")
    return EngineEvent(
        action=action,
        container_id=str(actor.get("ID") or raw.get("id") or ""),
        labels={k: v for k, v in attributes.items() if k not in _ENGINE_ATTRIBUTES},
        exit_code=int(code) if action == "die" and code.lstrip("-").isdigit() else None,
        time=nanos / 1e9 if isinstance(nanos, int) else float(raw.get("time") or 0),
    )


# -- records from raw JSON --------------------------------------------------


def _str_dict(value: object) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}

    return {str(k): str(v) for k, v in value.items()}


def _own_labels(labels: Mapping[str, str]) -> dict[str, str]:
    prefix = LABEL_PREFIX + "."
    return {k: v for k, v in labels.items() if k.startswith(prefix)}


def _label_filters(labels: Mapping[str, str]) -> list[str]:
    return [f"{key}={value}" for key, value in sorted(labels.items())]


def _container_config(spec: ContainerSpec) -> dict[str, Any]:
    ports = {
        f"{port}/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]
        for port in spec.published_ports
    }
    host: dict[str, Any] = {
        # docker-init as pid 1 reaps what hooks leave behind.
        "Init": True,
        # Restarts are the supervisor's decision, never the engine's.
        "RestartPolicy": {"Name": "no"},
        "Mounts": [
            {"Type": "volume", "Source": name, "Target": path}
            for name, path in sorted(spec.volumes.items())
        ],
        "PortBindings": ports,
    }
    config: dict[str, Any] = {
        "Image": spec.image,
        "Labels": dict(spec.labels),
        "Env": [f"{key}={value}" for key, value in spec.env.items()],
        "ExposedPorts": {port: {} for port in ports},
        "HostConfig": host,
    }
    if spec.command is not None:
        config["Cmd"] = list(spec.command)

    if spec.memory_limit is not None:
        host["Memory"] = spec.memory_limit
        # Equal to Memory: no swap on top, so the limit is the limit.
        host["MemorySwap"] = spec.memory_limit

    if spec.network is not None:
        host["NetworkMode"] = spec.network
        endpoint = {"Aliases": list(spec.network_aliases)}
        config["NetworkingConfig"] = {"EndpointsConfig": {spec.network: endpoint}}

    return config


def _container_info(raw: Mapping[str, Any]) -> ContainerInfo:
    state = raw.get("State") or {}
    config = raw.get("Config") or {}
    try:
        status = ContainerState(str(state.get("Status")))
    except ValueError as exc:
        raise EngineError(
            f"the engine reported an unknown container state: {state.get('Status')!r}"
        ) from exc

    ran = status in (ContainerState.EXITED, ContainerState.DEAD)
    code = state.get("ExitCode")
    return ContainerInfo(
        id=str(raw["Id"]),
        name=str(raw.get("Name") or "").lstrip("/"),
        image=str(config.get("Image") or raw.get("Image") or ""),
        labels=_str_dict(config.get("Labels")),
        state=status,
        exit_code=code if ran and isinstance(code, int) else None,
        oom_killed=bool(state.get("OOMKilled")),
        host_ports=_host_ports((raw.get("NetworkSettings") or {}).get("Ports")),
    )


def _host_ports(ports: object) -> dict[int, int]:
    """Container TCP port -> its port published on 127.0.0.1."""
    if not isinstance(ports, Mapping):
        return {}

    published = {}
    for key, bindings in ports.items():
        port, _, protocol = str(key).partition("/")
        if protocol != "tcp" or not bindings:
            continue
        for binding in bindings:
            if binding.get("HostIp") == "127.0.0.1" and binding.get("HostPort"):
                published[int(port)] = int(binding["HostPort"])

    return published


@asynccontextmanager
async def open_docker_runtime(
    url: str | None = None, *, max_concurrent_execs: int = 4
) -> AsyncIterator[DockerRuntime]:
    """Connect to a Docker engine, check that it answers, close on exit.

    Args:
        url: Engine address; ``None`` takes ``DOCKER_HOST``, then
            ``unix:///var/run/docker.sock``.
        max_concurrent_execs: How many `exec` calls may run at once.

    Yields:
        The runtime, ready for use.

    Raises:
        EngineUnavailableError: No engine answers at the address.
    """
    runtime = DockerRuntime(url, max_concurrent_execs=max_concurrent_execs)
    try:
        await runtime.engine_version()
        yield runtime
    finally:
        await runtime.aclose()
