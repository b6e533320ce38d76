"""The one interface every container runtime offers.

Container actors and the supervisor talk to containers only through
`ContainerRuntime`. The Docker runtime is the real one; the in-memory runtime
in ``rolecall.testing`` serves fast unit tests. Records here are the typed
edge: no engine's raw dicts travel past a runtime.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol, runtime_checkable

from attrs import field, frozen

__all__ = [
    "LABEL_PREFIX",
    "ContainerInfo",
    "ContainerRuntime",
    "ContainerSpec",
    "ContainerState",
    "EngineEvent",
    "ExecResult",
    "ImageInfo",
]

LABEL_PREFIX = "io.rolecall"
"""Every object rolecall creates carries labels under this prefix."""


class ContainerState(enum.StrEnum):
    """The engine's view of a container's life."""

    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    RESTARTING = "restarting"
    EXITED = "exited"
    DEAD = "dead"
    REMOVING = "removing"


def _mapping(value: Mapping[str, str] | None) -> dict[str, str]:
    return dict(value or {})


@frozen
class ContainerSpec:
    """How to create one container.

    Attributes:
        name: Container name; deterministic so a retried create finds it.
        image: Image reference.
        labels: Labels to set (rolecall's own under `LABEL_PREFIX`).
        env: Environment variables.
        command: Command to run instead of the image's; ``None`` keeps it.
        network: User-defined network to join; ``None`` for none.
        network_aliases: Extra DNS names on that network.
        volumes: Named volume -> mount path inside the container.
        published_ports: Container TCP ports published on 127.0.0.1 at a port
            the engine picks (read it back from `ContainerInfo.host_ports`).
        memory_limit: Memory cap in bytes; ``None`` for none.
        peer_address: A host address to publish ``published_ports`` on as
            well (at ports the engine picks, read back from
            `ContainerInfo.peer_ports`), where containers on other engines
            reach them; ``None`` publishes on 127.0.0.1 only.
    """

    name: str
    image: str
    labels: dict[str, str] = field(factory=dict, converter=_mapping)
    env: dict[str, str] = field(factory=dict, converter=_mapping)
    command: tuple[str, ...] | None = None
    network: str | None = None
    network_aliases: tuple[str, ...] = ()
    volumes: dict[str, str] = field(factory=dict, converter=_mapping)
    published_ports: tuple[int, ...] = ()
    memory_limit: int | None = None
    peer_address: str | None = None


@frozen
class ContainerInfo:
    """A container as the engine describes it.

    Attributes:
        id: The engine's id.
        name: Its name (without the leading slash).
        image: The image reference it was created from.
        labels: All its labels.
        state: Where it is in its life.
        exit_code: Exit code of its last run; ``None`` while it runs or when
            it never ran.
        oom_killed: Whether the kernel killed it for memory.
        host_ports: Container port -> port published on 127.0.0.1.
        peer_ports: Container port -> port published on the peer address
            (see `ContainerSpec.peer_address`).
    """

    id: str
    name: str
    image: str
    labels: dict[str, str] = field(factory=dict, converter=_mapping)
    state: ContainerState = ContainerState.CREATED
    exit_code: int | None = None
    oom_killed: bool = False
    host_ports: dict[int, int] = field(factory=dict)
    peer_ports: dict[int, int] = field(factory=dict)


@frozen
class ImageInfo:
    """An image as the engine describes it.

    Attributes:
        id: The engine's id.
        tags: Its references.
        labels: Its labels (hook directory, hook mode, encoding).
    """

    id: str
    tags: tuple[str, ...] = ()
    labels: dict[str, str] = field(factory=dict, converter=_mapping)


@frozen
class ExecResult:
    """How one command run inside a container ended.

    Attributes:
        exit_code: The command's exit code; ``None`` when the engine gave
            none, which is never success.
        stdout: What it printed, up to the cap.
        stderr: The tail of what it wrote to stderr, up to the cap.
        stdout_truncated: Whether stdout was longer than the cap.
        stderr_truncated: Whether stderr was longer than the cap.
        duration: Seconds from the start of the exec to its end.
    """

    exit_code: int | None
    stdout: bytes = b""
    stderr: bytes = b""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    duration: float = 0.0


@frozen
class EngineEvent:
    """One container event from the engine.

    Attributes:
        action: What happened (``die``, ``oom``, ``kill``, ``stop``, ``start``,
            ``destroy``, ``pause``, ``unpause``, ``health_status``).
        container_id: The container it concerns.
        labels: The container's labels.
        exit_code: For ``die``: the exit code; otherwise ``None``.
        time: Engine time of the event, seconds since the epoch.
    """

    action: str
    container_id: str
    labels: dict[str, str] = field(factory=dict, converter=_mapping)
    exit_code: int | None = None
    time: float = 0.0


@runtime_checkable
class ContainerRuntime(Protocol):
    """What rolecall needs from a container engine.

    Every method raises `EngineUnavailableError` when the engine cannot be
    reached and `ContainerGoneError` when the container named does not exist.
    """

    @property
    def address(self) -> str:
        """Where the engine is reached, for messages and status."""
        ...

    async def create_container(self, spec: ContainerSpec) -> ContainerInfo:
        """Create a container (not started); returns the existing one if a
        container of that name already carries the same labels."""
        ...

    async def start_container(self, container_id: str) -> None:
        """Start a created or stopped container."""
        ...

    async def stop_container(self, container_id: str, *, timeout: float) -> None:
        """Stop gracefully, killing after ``timeout`` seconds."""
        ...

    async def kill_container(self, container_id: str) -> None:
        """Kill at once with SIGKILL."""
        ...

    async def remove_container(self, container_id: str) -> None:
        """Remove (forcibly); a container already gone is not an error."""
        ...

    async def inspect_container(self, container_id: str) -> ContainerInfo:
        """Describe one container."""
        ...

    async def list_containers(
        self, *, labels: Mapping[str, str]
    ) -> list[ContainerInfo]:
        """Every container (running or not) carrying all of ``labels``."""
        ...

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
        """Run ``argv`` inside the container and wait for it.

        ``stdin`` is written then closed (EOF). Output beyond the caps is
        dropped (stdout keeps its head, stderr its tail) and flagged. On
        timeout or cancellation the process is killed inside the container,
        then the error or cancellation propagates. ``on_stderr``, when
        given, gets each piece of stderr as it arrives, uncapped; it must
        not raise.

        Raises:
            TimeoutError: The command ran past ``timeout``; it was killed.
            ContainerGoneError: The container went away or stopped.
        """
        ...

    def open_archive(
        self, container_id: str, path: str
    ) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        """Stream what the directory ``path`` holds as a tar archive.

        Use as ``async with runtime.open_archive(cid, path) as chunks``;
        entries are named relative to ``path``; chunks are bounded in size,
        so the archive is never held whole.

        Raises:
            ContainerGoneError: No such container.
            EngineError: ``path`` does not exist in the container.
        """
        ...

    async def put_archive(
        self, container_id: str, path: str, archive: AsyncIterable[bytes]
    ) -> None:
        """Unpack a tar archive, read chunk by chunk, into directory ``path``.

        Raises:
            ContainerGoneError: No such container.
            EngineError: ``path`` is not a directory there, or the archive
                is not a tar archive.
        """
        ...

    async def memory_total(self) -> int | None:
        """The engine's memory in bytes, as a bound for memory limits;
        ``None`` when the engine does not say."""
        ...

    async def inspect_image(self, image: str) -> ImageInfo:
        """Describe an image.

        Raises:
            ImageNotFoundError: The engine has no such image.
        """
        ...

    async def create_network(self, name: str, *, labels: Mapping[str, str]) -> None:
        """Create a user-defined bridge network unless it exists."""
        ...

    async def remove_network(self, name: str) -> None:
        """Remove a network; one already gone is not an error."""
        ...

    async def create_volume(
        self, name: str, *, labels: Mapping[str, str]
    ) -> dict[str, str]:
        """Create a named volume unless it exists.

        Returns:
            The labels the volume carries: ``labels`` when this call made
            it, the ones it was made with when it existed. Of two calls
            racing on one name, the engine makes the volume once and both
            get that one's labels, which is what a claim relies on.
        """
        ...

    async def volume_labels(self, name: str) -> dict[str, str] | None:
        """The labels of a named volume; ``None`` when there is none."""
        ...

    async def remove_volume(self, name: str) -> None:
        """Remove a named volume; one already gone is not an error."""
        ...

    async def list_volumes(self, *, labels: Mapping[str, str]) -> list[str]:
        """Names of the volumes carrying all of ``labels``."""
        ...

    async def list_networks(self, *, labels: Mapping[str, str]) -> list[str]:
        """Names of the networks carrying all of ``labels``."""
        ...

    def open_event_stream(
        self, *, labels: Mapping[str, str]
    ) -> AbstractAsyncContextManager[AsyncIterator[EngineEvent]]:
        """Subscribe to container events of containers carrying ``labels``.

        Use as ``async with runtime.open_event_stream(labels=...) as events``;
        leaving the block ends the subscription.
        """
        ...

    async def aclose(self) -> None:
        """Release the connection to the engine."""
        ...
