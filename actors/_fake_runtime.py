"""An in-memory `ContainerRuntime` for fast tests.

`FakeRuntime` keeps containers, volumes, networks and engine events in memory
and runs an image's hooks as Python callables instead of processes. It uses
anyio only, so it serves asyncio and trio alike. ``rolecall.testing`` is its
public home, and the fake key-value image there is a worked example.

A fake image maps hook names to handlers. A handler takes a `FakeHookCall`
and returns the result's ``data`` map (sync or async), or raises
`FakeHookExit` to exit non-zero. The fake decodes the payload from stdin and
encodes the reply the way a real hook would, so the code under test sees the
same bytes, exit codes and errors as with a real engine.

What the fake does not model: image pulls, restart policies, a container
that ignores SIGTERM, and an engine that goes away (no method raises
`EngineUnavailableError`).

``_fake_engine`` keeps the engine's state, ``_fake_container`` has the image
and container records, ``_fake_hooks`` runs one fake hook; `FakeRuntime`, here,
adds exec, fault injection and the set-up calls of tests on top.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
from attrs import define, field, frozen

from rolecall.hooks_protocol import ContainerGoneError

from ._fake_archive import archive_chunks, unpack_into
from ._fake_container import FakeContainer, FakeImage
from ._fake_engine import _SIGKILL_EXIT, _fake_id, _FakeEngine
from ._fake_hooks import (
    ENCODING_ENV,
    FakeHook,
    FakeHookCall,
    FakeHookExit,
    _run_hook,
)
from ._runtime import ContainerState, ExecResult

__all__ = [
    "ENCODING_ENV",
    "FakeContainer",
    "FakeHook",
    "FakeHookCall",
    "FakeHookExit",
    "FakeImage",
    "FakeRuntime",
]


@frozen
class _Fault:
    """A failure `FakeRuntime.fail_next_exec` queued for one exec."""

    container_id: str | None
    hook: str | None
    exit_code: int
    stderr: str
    error: Exception | None
    hang: bool

    def matches(self, container: FakeContainer, hook: str) -> bool:
        if self.container_id not in (None, container.id, container.name):
            return False

        return self.hook in (None, hook)


@define(eq=False, kw_only=True)
class FakeRuntime(_FakeEngine):
    """A `ContainerRuntime` that lives in memory.

    Register images with `add_image`, then use it wherever rolecall takes a
    runtime. Tests inject faults with `crash`, `pause`, `unpause` and
    `fail_next_exec`, and check that no exec is left behind with
    `running_execs` and `killed_execs`.

    Args:
        name: Names the fake engine in `address` and in messages.
        clock: Gives engine time for events, in seconds since the epoch;
            pass ``ManualClock.now`` to control it.
        memory: The engine's memory in bytes, as `memory_total` reports it
            (8 GiB by default; ``None`` for an engine that does not say).
    """

    # Other fake engines on the same fake host: an address on one of their
    # peer addresses resolves to their container (see `link`).
    _neighbours: list[FakeRuntime] = field(factory=list, init=False)
    # Queued failures, oldest first; each is used by one exec.
    _faults: list[_Fault] = field(factory=list, init=False)
    # Exec counters: running now, ended by a kill, ended by themselves.
    _running_execs: int = field(default=0, init=False)
    _killed_execs: int = field(default=0, init=False)
    _finished_execs: int = field(default=0, init=False)

    # -- set-up and inspection for tests ----------------------------------

    @property
    def running_execs(self) -> int:
        """Execs running right now (paused ones included)."""
        return self._running_execs

    @property
    def killed_execs(self) -> int:
        """Execs killed before they ended: timed out, cancelled, or their
        container stopped under them."""
        return self._killed_execs

    @property
    def finished_execs(self) -> int:
        """Execs that ran to their end, whatever their exit code."""
        return self._finished_execs

    @property
    def event_subscribers(self) -> int:
        """Event streams open right now."""
        return len(self._subscribers)

    def add_image(
        self,
        name: str,
        *,
        hooks: Mapping[str, FakeHook],
        labels: Mapping[str, str] | None = None,
    ) -> FakeImage:
        """Register an image, replacing one of the same name.

        Args:
            name: Its reference; specs must name it exactly so.
            hooks: Hook name -> handler.
            labels: Image labels; `LABEL_HOOK_DIR` moves the hooks.

        Returns:
            The registered image.
        """
        image = FakeImage(
            name=name,
            id=f"sha256:{_fake_id('image', name)}",
            hooks=dict(hooks),
            labels=dict(labels or {}),
        )
        self._images[name] = image

        return image

    def resolve(
        self, address: str, *, network: str | None = None
    ) -> FakeContainer | None:
        """The live container that ``address`` reaches, as DNS would find it.

        Args:
            address: ``host`` or ``host:port``; the host is a container
                name or network alias, or ``127.0.0.1``/``localhost`` with a
                published host port.
            network: Look only among containers on this network, as names
                on a user-defined network resolve; ``None`` looks at all.
                A peer address (``address:port``) of this engine or of one
                `link`-ed to it finds the container wherever it runs.

        Returns:
            The container, or ``None`` when nothing answers there.
        """
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            host, port = address, ""

        if host in ("127.0.0.1", "localhost") and port:
            container_id = self._ids_by_host_port.get(int(port), "")
            return self._containers.get(container_id)

        if port:
            for engine in (self, *self._neighbours):
                container_id = engine._ids_by_peer_port.get((host, int(port)), "")
                if container_id:
                    return engine._containers.get(container_id)

        for container_id in self._ids_by_host.get(host, ()):
            container = self._containers[container_id]
            if container.alive and network in (None, container.spec.network):
                return container

        return None

    def link(self, *others: FakeRuntime) -> None:
        """Put this fake engine and ``others`` on one fake host.

        A container on any of them then reaches a port another publishes
        on its peer address (`ContainerSpec.peer_address`) by
        ``address:port``, as containers on two engines of one machine do.
        """
        group = [self, *others]
        for engine in group:
            engine._neighbours = [other for other in group if other is not engine]

    def volume_data(self, name: str) -> dict[str, Any]:
        """The data dict of volume ``name``, to seed or check in tests.

        Raises:
            KeyError: No such volume.
        """
        return self._volumes[name].data

    def volumes_of(self, container: FakeContainer) -> dict[str, dict[str, Any]]:
        """Mount path -> data dict of every volume mounted in ``container``,
        which may run on a `link`-ed engine."""
        if container.id not in self._containers:
            for engine in self._neighbours:
                if engine._containers.get(container.id) is container:
                    return engine.volumes_of(container)

        return {
            path: self._volumes[name].data
            for name, path in container.spec.volumes.items()
            if name in self._volumes
        }

    # -- fault injection ---------------------------------------------------

    def crash(
        self, container_id: str, *, exit_code: int = _SIGKILL_EXIT, oom: bool = False
    ) -> None:
        """End a live container from outside, as a crash or the kernel would.

        Emits ``oom`` (when ``oom``) and ``die``; its running execs fail with
        `ContainerGoneError`.

        Raises:
            ContainerGoneError: No such container, or it is not running.
        """
        container = self._live(container_id)
        if oom:
            self._emit("oom", container)

        self._die(container, exit_code=exit_code, oom=oom)

    def pause(self, container_id: str) -> None:
        """Freeze a running container; execs in it wait until `unpause`.

        Raises:
            ContainerGoneError: No such container, or it is not running.
        """
        container = self._live(container_id)
        if container.state is ContainerState.PAUSED:
            return

        container._pause()
        self._emit("pause", container)

    def unpause(self, container_id: str) -> None:
        """Thaw a paused container; a running one is left alone.

        Raises:
            ContainerGoneError: No such container, or it is not running.
        """
        container = self._live(container_id)
        if container.state is not ContainerState.PAUSED:
            return

        container.state = ContainerState.RUNNING
        container._resume()
        self._emit("unpause", container)

    def fail_next_exec(
        self,
        *,
        container_id: str | None = None,
        hook: str | None = None,
        exit_code: int = 1,
        stderr: str = "injected failure",
        error: Exception | None = None,
        hang: bool = False,
    ) -> None:
        """Make the next matching exec fail instead of running its hook.

        Queued failures are used oldest first, one per exec.

        Args:
            container_id: Only an exec in this container (id or name).
            hook: Only an exec of this hook.
            exit_code: The code the exec ends with.
            stderr: What it writes to stderr.
            error: Raise this from `exec` instead, as an engine would.
            hang: Hang until the exec's timeout kills it instead.
        """
        fault = _Fault(
            container_id=container_id,
            hook=hook,
            exit_code=exit_code,
            stderr=stderr,
            error=error,
            hang=hang,
        )
        self._faults.append(fault)

    # -- the ContainerRuntime protocol: exec ----------------------------------

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
        """Run a fake hook as ``argv`` names it, like a real exec would.

        ``argv[0]`` must be ``<hook dir>/<hook>``; anything else exits 127.
        The payload is read from stdin as msgpack (JSON when the exec's
        ``ROLECALL_ENCODING`` or the image's label says ``json``); one that
        does not decode to a map exits 65. The reply is encoded the same
        way. A handler's uncaught exception exits 1 with its traceback on
        stderr. A paused container holds the exec until it resumes. A fake
        hook's stderr reaches ``on_stderr`` in one piece when it ends.

        Raises:
            TimeoutError: The hook ran past ``timeout``; it was killed.
            ContainerGoneError: The container does not exist, is not
                running, or stopped during the exec.
            ValueError: ``argv`` is empty.
        """
        await anyio.lowlevel.checkpoint()
        container = self._live(container_id)
        if not argv:
            raise ValueError("argv must name a command; got an empty one")

        command = tuple(argv)
        hook = command[0].rpartition("/")[2]
        fault = self._take_fault(container, hook)
        if fault is not None and fault.error is not None:
            raise fault.error

        started = anyio.current_time()
        scope = anyio.CancelScope()
        self._exec_scopes.setdefault(container.id, set()).add(scope)
        self._running_execs += 1
        ended = False
        try:
            with scope, anyio.fail_after(timeout):
                await container._wait_unpaused()
                if fault is None:
                    outcome = await _run_hook(self, container, command, stdin, env)
                else:
                    outcome = await _faulty_run(fault)

                await container._wait_unpaused()
                ended = True

            if scope.cancelled_caught:
                raise ContainerGoneError(
                    f"container {container.name!r} stopped while running "
                    f"{command[0]!r}",
                    container_id=container.id,
                )
        finally:
            self._forget_exec(container.id, scope, ended=ended)

        exit_code, stdout, stderr = outcome
        if on_stderr is not None and stderr:
            on_stderr(stderr)

        return ExecResult(
            exit_code=exit_code,
            stdout=stdout[: max(max_stdout, 0)],
            stderr=stderr[-max_stderr:] if max_stderr > 0 else b"",
            stdout_truncated=len(stdout) > max(max_stdout, 0),
            stderr_truncated=len(stderr) > max(max_stderr, 0),
            duration=anyio.current_time() - started,
        )

    # -- the ContainerRuntime protocol: archives ------------------------------

    def open_archive(
        self, container_id: str, path: str
    ) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        """Stream the files under ``path`` as a tar archive, in pieces.

        Unlike an engine, the fake knows a directory only by the files
        under it: an empty or missing one raises `EngineError`.

        Raises:
            ContainerGoneError: No such container.
            EngineError: No file lies under ``path``.
        """
        return self._archive_stream(container_id, path)

    @asynccontextmanager
    async def _archive_stream(
        self, container_id: str, path: str
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        await anyio.lowlevel.checkpoint()
        container = self.container(container_id)
        pieces = archive_chunks(container.files, path, owner=container.name)

        async def stream() -> AsyncIterator[bytes]:
            for piece in pieces:
                await anyio.lowlevel.checkpoint()
                yield piece

        yield stream()

    async def put_archive(
        self, container_id: str, path: str, archive: AsyncIterable[bytes]
    ) -> None:
        """Unpack a tar archive's files under ``path`` (any path will do).

        Raises:
            ContainerGoneError: No such container.
            EngineError: Not a tar archive, or an entry escapes ``path``.
        """
        await anyio.lowlevel.checkpoint()
        container = self.container(container_id)
        await unpack_into(container.files, path, archive, owner=container.name)

    def _take_fault(self, container: FakeContainer, hook: str) -> _Fault | None:
        for index, fault in enumerate(self._faults):
            if fault.matches(container, hook):
                return self._faults.pop(index)

        return None

    def _forget_exec(
        self, container_id: str, scope: anyio.CancelScope, *, ended: bool
    ) -> None:
        self._running_execs -= 1
        if ended:
            self._finished_execs += 1
        else:
            self._killed_execs += 1

        scopes = self._exec_scopes.get(container_id, set())
        scopes.discard(scope)
        if not scopes:
            self._exec_scopes.pop(container_id, None)


async def _faulty_run(fault: _Fault) -> tuple[int, bytes, bytes]:
    if fault.hang:
        await anyio.sleep_forever()

    return fault.exit_code, b"", fault.stderr.encode()
