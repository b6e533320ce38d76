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
"""

from __future__ import annotations

import hashlib
import inspect
import itertools
import json
import math
import time
import traceback
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager
from typing import Any, TypeAlias

import anyio
import anyio.lowlevel
import msgpack  # type: ignore[import-untyped, unused-ignore]  # ships no types
from anyio.streams.memory import MemoryObjectSendStream
from attrs import define, field, frozen

from rolecall.hooks_protocol import (
    DEFAULT_HOOK_DIR,
    LABEL_ENCODING,
    LABEL_HOOK_DIR,
    LABEL_HOOK_MODE,
    PROTOCOL_VERSION,
    ContainerGoneError,
    Encoding,
    EngineError,
    ExitClass,
    HookMode,
    ImageNotFoundError,
)

from ._runtime import (
    ContainerInfo,
    ContainerSpec,
    ContainerState,
    EngineEvent,
    ExecResult,
    ImageInfo,
)

__all__ = [
    "ENCODING_ENV",
    "FakeContainer",
    "FakeHook",
    "FakeHookCall",
    "FakeHookExit",
    "FakeImage",
    "FakeRuntime",
]

ENCODING_ENV = "ROLECALL_ENCODING"
"""Exec environment variable that picks the wire encoding for one hook run."""

FIRST_HOST_PORT = 32768
"""The first host port the fake hands out; each later one is one higher."""

_NOT_FOUND = 127  # what a shell exits with when the command does not exist
_SIGKILL_EXIT = 137  # 128 + SIGKILL, as engines report a killed container


class FakeHookExit(Exception):  # noqa: N818  (an exit, not a bug: named so)
    """Raised by a fake hook to exit with a non-zero code.

    Attributes:
        exit_code: The code the hook exits with.
        stderr: Text the hook writes to stderr before it exits.
    """

    def __init__(self, exit_code: int, *, stderr: str = "") -> None:
        super().__init__(f"fake hook exits with code {exit_code}")
        self.exit_code = exit_code
        self.stderr = stderr


@frozen
class FakeImage:
    """An image registered in a `FakeRuntime`.

    Attributes:
        name: Its reference, as a `ContainerSpec` names it.
        id: A fake image id.
        hooks: Hook name -> handler.
        labels: Its labels (hook directory, hook mode, encoding).
    """

    name: str
    id: str
    hooks: Mapping[str, FakeHook]
    labels: Mapping[str, str]

    @property
    def hook_dir(self) -> str:
        """Where the hooks live inside the image."""
        return self.labels.get(LABEL_HOOK_DIR, DEFAULT_HOOK_DIR).rstrip("/")


@define(eq=False)
class FakeContainer:
    """One container of a `FakeRuntime`, as fake hooks and tests see it.

    Only the runtime changes the engine's fields; fake hooks keep their own
    state in `store`.

    Attributes:
        id: The fake engine's id.
        spec: How it was created.
        image: The image it runs.
        state: Where it is in its life; only the runtime changes it.
        exit_code: Exit code of its last run; ``None`` while it runs and
            before it first ends.
        oom_killed: Whether its last run ended for memory.
        host_ports: Container port -> host port; filled on start, emptied
            when it stops.
        store: Free for fake hooks (a role, an offset); like the container's
            own filesystem, it survives stop and start but not removal.
    """

    id: str
    spec: ContainerSpec
    image: FakeImage
    state: ContainerState = ContainerState.CREATED
    exit_code: int | None = None
    oom_killed: bool = False
    host_ports: dict[int, int] = field(factory=dict)
    store: dict[str, Any] = field(factory=dict)
    # Set while paused, ``None`` otherwise; set and dropped when it resumes
    # or dies, which wakes every exec held by the pause.
    _unpaused: anyio.Event | None = field(default=None, init=False)

    @property
    def name(self) -> str:
        """Its name."""
        return self.spec.name

    @property
    def labels(self) -> dict[str, str]:
        """Its labels."""
        return self.spec.labels

    @property
    def alive(self) -> bool:
        """Whether its main process exists (running or paused)."""
        return self.state in (ContainerState.RUNNING, ContainerState.PAUSED)

    def info(self) -> ContainerInfo:
        """Describe it the way `FakeRuntime.inspect_container` does."""
        return ContainerInfo(
            id=self.id,
            name=self.name,
            image=self.spec.image,
            labels=self.labels,
            state=self.state,
            exit_code=self.exit_code,
            oom_killed=self.oom_killed,
            host_ports=dict(self.host_ports),
        )

    async def _wait_unpaused(self) -> None:
        while self._unpaused is not None:
            await self._unpaused.wait()

    def _pause(self) -> None:
        self.state = ContainerState.PAUSED
        self._unpaused = anyio.Event()

    def _resume(self) -> None:
        if self._unpaused is not None:
            self._unpaused.set()

        self._unpaused = None


@define(eq=False)
class FakeHookCall:
    """One run of a fake hook: what it was given and where it runs.

    Attributes:
        hook: The hook's name (the last part of ``argv[0]``).
        argv: The command line, as the caller passed it.
        payload: The decoded payload (``{}`` when stdin was empty).
        env: The container's environment plus the exec's.
        container: The container it runs in.
        runtime: The fake engine, to reach other containers.
        volumes: Mount path -> the mounted volume's data; a dict that
            outlives the container, the fake's "disk".
    """

    hook: str
    argv: tuple[str, ...]
    payload: dict[str, Any]
    env: dict[str, str]
    container: FakeContainer
    runtime: FakeRuntime
    volumes: dict[str, dict[str, Any]]
    # What the hook wrote to stderr so far, in order.
    _stderr: list[str] = field(factory=list, init=False)

    @property
    def request(self) -> dict[str, Any]:
        """The payload's ``request`` map (``{}`` when it has none)."""
        request = self.payload.get("request")
        if not isinstance(request, dict):
            return {}

        return request

    def log(self, text: str) -> None:
        """Write ``text`` and a newline to the hook's stderr."""
        self._stderr.append(text + "\n")

    def _stderr_bytes(self, tail: str = "") -> bytes:
        return ("".join(self._stderr) + tail).encode()


FakeHook: TypeAlias = Callable[
    [FakeHookCall],
    Mapping[str, Any] | Awaitable[Mapping[str, Any] | None] | None,
]
"""A fake hook: takes the call, returns the result's data or raises."""


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


@frozen(eq=False)
class _Subscriber:
    labels: dict[str, str]
    send: MemoryObjectSendStream[EngineEvent]


@frozen
class _Volume:
    labels: dict[str, str]
    data: dict[str, Any] = field(factory=dict)


def _carries(labels: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in wanted.items())


def _hosts(spec: ContainerSpec) -> list[str]:
    # The names DNS answers for a container, each once.
    return list(dict.fromkeys((spec.name, *spec.network_aliases)))


def _fake_id(kind: str, key: str) -> str:
    return hashlib.sha256(f"{kind}:{key}".encode()).hexdigest()


@define(eq=False, kw_only=True)
class FakeRuntime:
    """A `ContainerRuntime` that lives in memory.

    Register images with `add_image`, then use it wherever rolecall takes a
    runtime. Tests inject faults with `crash`, `pause`, `unpause` and
    `fail_next_exec`, and check that no exec is left behind with
    `running_execs` and `killed_execs`.

    Args:
        name: Names the fake engine in `address` and in messages.
        clock: Gives engine time for events, in seconds since the epoch;
            pass ``ManualClock.now`` to control it.
    """

    name: str = "engine"
    clock: Callable[[], float] = time.time
    # Reference -> image; filled only by add_image.
    _images: dict[str, FakeImage] = field(factory=dict, init=False)
    # Id -> container; a removed container leaves, never to return.
    _containers: dict[str, FakeContainer] = field(factory=dict, init=False)
    # Name -> id, for every container in _containers.
    _ids_by_name: dict[str, str] = field(factory=dict, init=False)
    # Name or network alias -> ids of the containers in _containers it names.
    _ids_by_host: dict[str, list[str]] = field(factory=dict, init=False)
    # Host port -> id of the live container it is published for.
    _ids_by_host_port: dict[int, str] = field(factory=dict, init=False)
    # Name -> volume; data stays until the volume itself is removed.
    _volumes: dict[str, _Volume] = field(factory=dict, init=False)
    # Network name -> its labels.
    _networks: dict[str, dict[str, str]] = field(factory=dict, init=False)
    # Open event streams; each leaves when its block ends.
    _subscribers: list[_Subscriber] = field(factory=list, init=False)
    # Container id -> cancel scopes of its running execs; no empty sets.
    _exec_scopes: dict[str, set[anyio.CancelScope]] = field(factory=dict, init=False)
    # Queued failures, oldest first; each is used by one exec.
    _faults: list[_Fault] = field(factory=list, init=False)
    _serial: Iterator[int] = field(factory=itertools.count, init=False)
    _next_host_port: int = field(default=FIRST_HOST_PORT, init=False)
    # Exec counters: running now, ended by a kill, ended by themselves.
    _running_execs: int = field(default=0, init=False)
    _killed_execs: int = field(default=0, init=False)
    _finished_execs: int = field(default=0, init=False)

    # -- set-up and inspection for tests ----------------------------------

    @property
    def address(self) -> str:
        """``fake://<name>``."""
        return f"fake://{self.name}"

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

    def container(self, container_id: str) -> FakeContainer:
        """The container with that id or name.

        Raises:
            ContainerGoneError: No such container (or it was removed).
        """
        container_id = self._ids_by_name.get(container_id, container_id)
        container = self._containers.get(container_id)
        if container is None:
            raise ContainerGoneError(
                f"no container {container_id!r} on {self.address}",
                container_id=container_id,
            )

        return container

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

        Returns:
            The container, or ``None`` when nothing answers there.
        """
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            host, port = address, ""

        if host in ("127.0.0.1", "localhost") and port:
            container_id = self._ids_by_host_port.get(int(port), "")
            return self._containers.get(container_id)

        for container_id in self._ids_by_host.get(host, ()):
            container = self._containers[container_id]
            if container.alive and network in (None, container.spec.network):
                return container

        return None

    def volume_data(self, name: str) -> dict[str, Any]:
        """The data dict of volume ``name``, to seed or check in tests.

        Raises:
            KeyError: No such volume.
        """
        return self._volumes[name].data

    def volumes_of(self, container: FakeContainer) -> dict[str, dict[str, Any]]:
        """Mount path -> data dict of every volume mounted in ``container``."""
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

    # -- the ContainerRuntime protocol: containers ---------------------------

    async def create_container(self, spec: ContainerSpec) -> ContainerInfo:
        """Create a container, or return the one of that name and labels.

        Named volumes that do not exist yet are created, as engines do.

        Raises:
            EngineError: A container of that name has other labels, or the
                network does not exist.
            ImageNotFoundError: The image is not registered.
        """
        await anyio.lowlevel.checkpoint()
        existing = self._ids_by_name.get(spec.name)
        if existing is not None:
            return self._reuse(self._containers[existing], spec)

        image = self._images.get(spec.image)
        if image is None:
            raise ImageNotFoundError(
                f"no image {spec.image!r} on {self.address}; register it "
                "with add_image() first",
                image=spec.image,
            )

        if spec.network is not None and spec.network not in self._networks:
            raise EngineError(
                f"network {spec.network!r} does not exist on {self.address}; "
                "create it first"
            )

        for volume in spec.volumes:
            self._volumes.setdefault(volume, _Volume(labels={}))

        container_id = _fake_id(self.name, f"container:{next(self._serial)}")
        container = FakeContainer(id=container_id, spec=spec, image=image)
        self._containers[container_id] = container
        self._ids_by_name[spec.name] = container_id
        for host in _hosts(spec):
            self._ids_by_host.setdefault(host, []).append(container_id)

        self._emit("create", container)

        return container.info()

    def _reuse(self, container: FakeContainer, spec: ContainerSpec) -> ContainerInfo:
        if container.labels != spec.labels:
            raise EngineError(
                f"a container named {spec.name!r} already exists with labels "
                f"{container.labels!r}; remove it or pick another name"
            )

        return container.info()

    async def start_container(self, container_id: str) -> None:
        """Start a created or stopped container; a live one is left alone."""
        await anyio.lowlevel.checkpoint()
        container = self.container(container_id)
        if container.alive:
            return

        container.state = ContainerState.RUNNING
        container.exit_code = None
        container.oom_killed = False
        for port in container.spec.published_ports:
            container.host_ports[port] = self._next_host_port
            self._ids_by_host_port[self._next_host_port] = container.id
            self._next_host_port += 1

        self._emit("start", container)

    async def stop_container(self, container_id: str, *, timeout: float) -> None:
        """Stop at once with exit code 0 (fake processes never linger)."""
        await anyio.lowlevel.checkpoint()
        container = self.container(container_id)
        if not container.alive:
            return

        self._emit("kill", container)
        self._die(container, exit_code=0)
        self._emit("stop", container)

    async def kill_container(self, container_id: str) -> None:
        """Kill with exit code 137; a container that is not live is left."""
        await anyio.lowlevel.checkpoint()
        container = self.container(container_id)
        if not container.alive:
            return

        self._emit("kill", container)
        self._die(container, exit_code=_SIGKILL_EXIT)

    async def remove_container(self, container_id: str) -> None:
        """Remove, killing it first if live; its volumes stay."""
        await anyio.lowlevel.checkpoint()
        try:
            container = self.container(container_id)
        except ContainerGoneError:
            return

        if container.alive:
            self._emit("kill", container)
            self._die(container, exit_code=_SIGKILL_EXIT)

        del self._containers[container.id]
        del self._ids_by_name[container.name]
        for host in _hosts(container.spec):
            ids = self._ids_by_host[host]
            ids.remove(container.id)
            if not ids:
                del self._ids_by_host[host]

        self._emit("destroy", container)

    async def inspect_container(self, container_id: str) -> ContainerInfo:
        """Describe the container with that id or name."""
        await anyio.lowlevel.checkpoint()

        return self.container(container_id).info()

    async def list_containers(
        self, *, labels: Mapping[str, str]
    ) -> list[ContainerInfo]:
        """Every container carrying all of ``labels``, oldest first."""
        await anyio.lowlevel.checkpoint()

        return [
            container.info()
            for container in self._containers.values()
            if _carries(container.labels, labels)
        ]

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
    ) -> ExecResult:
        """Run a fake hook as ``argv`` names it, like a real exec would.

        ``argv[0]`` must be ``<hook dir>/<hook>``; anything else exits 127.
        The payload is read from stdin as msgpack (JSON when the exec's
        ``ROLECALL_ENCODING`` or the image's label says ``json``); one that
        does not decode to a map exits 65. The reply is encoded the same
        way. A handler's uncaught exception exits 1 with its traceback on
        stderr. A paused container holds the exec until it resumes.

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
                    outcome = await self._run_hook(container, command, stdin, env)
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

        return ExecResult(
            exit_code=exit_code,
            stdout=stdout[: max(max_stdout, 0)],
            stderr=stderr[-max_stderr:] if max_stderr > 0 else b"",
            stdout_truncated=len(stdout) > max(max_stdout, 0),
            stderr_truncated=len(stderr) > max(max_stderr, 0),
            duration=anyio.current_time() - started,
        )

    async def _run_hook(
        self,
        container: FakeContainer,
        argv: tuple[str, ...],
        stdin: bytes | None,
        env: Mapping[str, str] | None,
    ) -> tuple[int, bytes, bytes]:
        image = container.image
        directory, _, hook = argv[0].rpartition("/")
        handler = image.hooks.get(hook) if directory == image.hook_dir else None
        if handler is None:
            return _NOT_FOUND, b"", f"{argv[0]}: not found\n".encode()

        full_env = {**container.spec.env, **(env or {})}
        wire = full_env.get(ENCODING_ENV, image.labels.get(LABEL_ENCODING, ""))
        json_wire = wire == Encoding.JSON
        nanobox = image.labels.get(LABEL_HOOK_MODE) == HookMode.NANOBOX
        raw = stdin
        if nanobox:
            # Nanobox-style hooks take their JSON payload as argv[1].
            raw = argv[1].encode() if len(argv) > 1 else b""

        try:
            payload = _decode(raw, json_wire=nanobox or json_wire)
        except (ValueError, TypeError) as exc:
            message = f"{argv[0]}: cannot decode the payload: {exc}\n"
            return ExitClass.BAD_PAYLOAD.value, b"", message.encode()

        call = FakeHookCall(
            hook=hook,
            argv=argv,
            payload=payload,
            env=full_env,
            container=container,
            runtime=self,
            volumes=self.volumes_of(container),
        )
        try:
            data = handler(call)
            if inspect.isawaitable(data):
                data = await data

            stdout = _encode(data or {}, json_wire=json_wire, nanobox=nanobox)
        except FakeHookExit as exit_:
            return exit_.exit_code, b"", call._stderr_bytes(exit_.stderr)
        except Exception:  # noqa: BLE001  (a crashing process exits 1, as here)
            return 1, b"", call._stderr_bytes(traceback.format_exc())

        return 0, stdout, call._stderr_bytes()

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

    # -- the ContainerRuntime protocol: images, volumes, networks -----------

    async def inspect_image(self, image: str) -> ImageInfo:
        """Describe a registered image.

        Raises:
            ImageNotFoundError: No image of that name was registered.
        """
        await anyio.lowlevel.checkpoint()
        found = self._images.get(image)
        if found is None:
            raise ImageNotFoundError(
                f"no image {image!r} on {self.address}; register it with "
                "add_image() first",
                image=image,
            )

        return ImageInfo(id=found.id, tags=(found.name,), labels=found.labels)

    async def create_network(self, name: str, *, labels: Mapping[str, str]) -> None:
        """Create a network unless one of that name exists."""
        await anyio.lowlevel.checkpoint()
        self._networks.setdefault(name, dict(labels))

    async def remove_network(self, name: str) -> None:
        """Remove a network; one already gone is not an error.

        Raises:
            EngineError: A live container is attached to it.
        """
        await anyio.lowlevel.checkpoint()
        for container in self._containers.values():
            if container.alive and container.spec.network == name:
                raise EngineError(
                    f"network {name!r} is in use by container "
                    f"{container.name!r}; stop it first"
                )

        self._networks.pop(name, None)

    async def list_networks(self, *, labels: Mapping[str, str]) -> list[str]:
        """Names of the networks carrying all of ``labels``."""
        await anyio.lowlevel.checkpoint()

        return [
            name
            for name, carried in self._networks.items()
            if _carries(carried, labels)
        ]

    async def create_volume(self, name: str, *, labels: Mapping[str, str]) -> None:
        """Create a volume unless one of that name exists."""
        await anyio.lowlevel.checkpoint()
        self._volumes.setdefault(name, _Volume(labels=dict(labels)))

    async def remove_volume(self, name: str) -> None:
        """Remove a volume and its data; one already gone is not an error.

        Raises:
            EngineError: A container (live or not) mounts it.
        """
        await anyio.lowlevel.checkpoint()
        for container in self._containers.values():
            if name in container.spec.volumes:
                raise EngineError(
                    f"volume {name!r} is in use by container "
                    f"{container.name!r}; remove the container first"
                )

        self._volumes.pop(name, None)

    async def list_volumes(self, *, labels: Mapping[str, str]) -> list[str]:
        """Names of the volumes carrying all of ``labels``."""
        await anyio.lowlevel.checkpoint()

        return [
            name
            for name, volume in self._volumes.items()
            if _carries(volume.labels, labels)
        ]

    # -- the ContainerRuntime protocol: events and closing --------------------

    @asynccontextmanager
    async def open_event_stream(
        self, *, labels: Mapping[str, str]
    ) -> AsyncIterator[AsyncIterator[EngineEvent]]:
        """Subscribe to events of containers carrying all of ``labels``.

        Events are buffered without bound until read; the iteration ends
        when the runtime is closed.
        """
        send, receive = anyio.create_memory_object_stream[EngineEvent](math.inf)
        subscriber = _Subscriber(labels=dict(labels), send=send)
        self._subscribers.append(subscriber)
        try:
            with send, receive:
                yield receive
        finally:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)

    async def aclose(self) -> None:
        """End every open event stream; the fake's state stays."""
        await anyio.lowlevel.checkpoint()
        for subscriber in self._subscribers:
            subscriber.send.close()

    # -- internals ------------------------------------------------------------

    def _live(self, container_id: str) -> FakeContainer:
        container = self.container(container_id)
        if not container.alive:
            raise ContainerGoneError(
                f"container {container.name!r} is {container.state}, not "
                "running; start it first",
                container_id=container.id,
            )

        return container

    def _die(
        self, container: FakeContainer, *, exit_code: int, oom: bool = False
    ) -> None:
        container.state = ContainerState.EXITED
        container.exit_code = exit_code
        container.oom_killed = oom
        container._resume()
        for host_port in container.host_ports.values():
            self._ids_by_host_port.pop(host_port, None)

        container.host_ports.clear()
        for scope in self._exec_scopes.get(container.id, ()):
            scope.cancel()

        self._emit("die", container, exit_code=exit_code)

    def _emit(
        self, action: str, container: FakeContainer, *, exit_code: int | None = None
    ) -> None:
        event: EngineEvent | None = None
        for subscriber in self._subscribers:
            if not _carries(container.labels, subscriber.labels):
                continue

            if event is None:
                event = EngineEvent(
                    action=action,
                    container_id=container.id,
                    labels=container.labels,
                    exit_code=exit_code,
                    time=self.clock(),
                )

            try:
                subscriber.send.send_nowait(event)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                continue


async def _faulty_run(fault: _Fault) -> tuple[int, bytes, bytes]:
    if fault.hang:
        await anyio.sleep_forever()

    return fault.exit_code, b"", fault.stderr.encode()


def _decode(raw: bytes | None, *, json_wire: bool) -> dict[str, Any]:
    if not raw:
        return {}

    value = json.loads(raw) if json_wire else msgpack.unpackb(raw, raw=False)
    if not isinstance(value, dict):
        raise TypeError(f"expected a map, got {type(value).__name__}")

    return value


def _encode(data: Mapping[str, Any], *, json_wire: bool, nanobox: bool) -> bytes:
    if nanobox:
        return json.dumps(dict(data)).encode()

    reply = {"protocol": PROTOCOL_VERSION, "data": dict(data), "message": ""}
    if json_wire:
        return json.dumps(reply).encode()

    packed: bytes = msgpack.packb(reply, use_bin_type=True)

    return packed
