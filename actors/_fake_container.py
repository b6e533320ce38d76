"""The images and containers a `FakeRuntime` holds, as hooks and tests see them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import anyio
from attrs import define, field, frozen

from rolecall.hooks_protocol import DEFAULT_HOOK_DIR, LABEL_HOOK_DIR

from ._runtime import ContainerInfo, ContainerSpec, ContainerState

if TYPE_CHECKING:
    from ._fake_hooks import FakeHook

__all__ = ["FakeContainer", "FakeImage"]


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
        files: The container's files, absolute path -> contents, as
            `FakeRuntime.open_archive` and `put_archive` read and write
            them; fake hooks may use them too. A directory exists while a
            file lies under it.
    """

    id: str
    spec: ContainerSpec
    image: FakeImage
    state: ContainerState = ContainerState.CREATED
    exit_code: int | None = None
    oom_killed: bool = False
    host_ports: dict[int, int] = field(factory=dict)
    # Container port -> port on its spec's peer address; like host_ports.
    peer_ports: dict[int, int] = field(factory=dict)
    store: dict[str, Any] = field(factory=dict)
    files: dict[str, bytes] = field(factory=dict)
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
            peer_ports=dict(self.peer_ports),
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
