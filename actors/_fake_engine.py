"""The engine state behind `FakeRuntime`: containers, images, networks, volumes.

`_FakeEngine` keeps what an engine keeps, in memory, and answers the
`ContainerRuntime` protocol for all of it but `exec`; it emits the engine's
events and, when a container dies, cancels the execs running in it.
`FakeRuntime` builds on it with exec, fault injection and the set-up calls
tests use.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import time
from collections.abc import (
    AsyncIterator,
    Callable,
    Collection,
    Iterator,
    Mapping,
)
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectSendStream
from attrs import define, field, frozen

from rolecall.hooks_protocol import (
    ContainerGoneError,
    EngineError,
    ImageNotFoundError,
)

from ._fake_container import FakeContainer, FakeImage
from ._runtime import (
    ContainerInfo,
    ContainerSpec,
    ContainerState,
    EngineEvent,
    ImageInfo,
)

FIRST_HOST_PORT = 32768
"""The first host port the fake hands out; each later one is one higher."""

_SIGKILL_EXIT = 137  # 128 + SIGKILL, as engines report a killed container


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
class _FakeEngine:
    """The state of one fake engine; `FakeRuntime` is the class to use."""

    name: str = "engine"
    clock: Callable[[], float] = time.time
    # What `memory_total` reports, in bytes; None for an engine that does
    # not say.
    memory: int | None = 8 << 30
    # Reference -> image; filled only by add_image.
    _images: dict[str, FakeImage] = field(factory=dict, init=False)
    # Id -> container; a removed container leaves, never to return.
    _containers: dict[str, FakeContainer] = field(factory=dict, init=False)
    # Name -> id, for every container in _containers.
    _ids_by_name: dict[str, str] = field(factory=dict, init=False)
    # Name or network alias -> ids of the containers in _containers it names.
    _ids_by_host: dict[str, list[str]] = field(factory=dict, init=False)
    # (label key, value) -> ids of the containers in _containers carrying
    # it, oldest first (values unused); a pair leaves with its last one.
    _ids_by_label: dict[tuple[str, str], dict[str, None]] = field(
        factory=dict, init=False
    )
    # Host port -> id of the live container it is published for.
    _ids_by_host_port: dict[int, str] = field(factory=dict, init=False)
    # (peer address, port) -> id of the live container it is published for.
    _ids_by_peer_port: dict[tuple[str, int], str] = field(factory=dict, init=False)
    # Name -> volume; data stays until the volume itself is removed.
    _volumes: dict[str, _Volume] = field(factory=dict, init=False)
    # Network name -> its labels.
    _networks: dict[str, dict[str, str]] = field(factory=dict, init=False)
    # Open event streams; each leaves when its block ends.
    _subscribers: list[_Subscriber] = field(factory=list, init=False)
    # Container id -> cancel scopes of its running execs; no empty sets.
    _exec_scopes: dict[str, set[anyio.CancelScope]] = field(factory=dict, init=False)
    _serial: Iterator[int] = field(factory=itertools.count, init=False)
    _next_host_port: int = field(default=FIRST_HOST_PORT, init=False)

    # -- names and ids ------------------------------------------------------

    @property
    def address(self) -> str:
        """``fake://<name>``."""
        return f"fake://{self.name}"

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

        for pair in spec.labels.items():
            self._ids_by_label.setdefault(pair, {})[container_id] = None

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
        peer = container.spec.peer_address
        for port in container.spec.published_ports:
            container.host_ports[port] = self._next_host_port
            self._ids_by_host_port[self._next_host_port] = container.id
            self._next_host_port += 1
            if peer is not None:
                container.peer_ports[port] = self._next_host_port
                self._ids_by_peer_port[peer, self._next_host_port] = container.id
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

        for pair in container.labels.items():
            carriers = self._ids_by_label[pair]
            del carriers[container.id]
            if not carriers:
                del self._ids_by_label[pair]

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
        # Only the carriers of the rarest wanted label are looked at, so a
        # service's pass costs its own members, not every container.
        candidates: Collection[str] = self._containers.keys()
        for pair in labels.items():
            carriers = self._ids_by_label.get(pair)
            if carriers is None:
                return []

            if len(carriers) < len(candidates):
                candidates = carriers.keys()

        containers = [self._containers[id_] for id_ in candidates]

        return [
            container.info()
            for container in containers
            if _carries(container.labels, labels)
        ]

    # -- the ContainerRuntime protocol: images, volumes, networks -----------

    async def memory_total(self) -> int | None:
        """The ``memory`` this fake engine was given (8 GiB by default)."""
        await anyio.lowlevel.checkpoint()
        return self.memory

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

    async def create_volume(
        self, name: str, *, labels: Mapping[str, str]
    ) -> dict[str, str]:
        """Create a volume unless one of that name exists.

        Returns:
            The labels it carries: its first creator's, as on an engine.
        """
        await anyio.lowlevel.checkpoint()
        volume = self._volumes.setdefault(name, _Volume(labels=dict(labels)))

        return dict(volume.labels)

    async def volume_labels(self, name: str) -> dict[str, str] | None:
        """The labels of a volume; ``None`` when there is none."""
        await anyio.lowlevel.checkpoint()
        volume = self._volumes.get(name)

        return None if volume is None else dict(volume.labels)

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
        peer = container.spec.peer_address
        for peer_port in container.peer_ports.values():
            self._ids_by_peer_port.pop((peer or "", peer_port), None)

        container.peer_ports.clear()
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
