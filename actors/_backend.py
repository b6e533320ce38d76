"""The few event-loop operations on the actors' hot path, bound once per loop.

anyio looks up the running backend on every call of `anyio.Event`,
`anyio.current_time` and `anyio.lowlevel.checkpoint`; on a round trip of a
few microseconds those look-ups cost a third of an ask. A spawner binds
them once, when it first spawns, and its actors use what it bound.

On asyncio, a reply slot is a bare future, and a checkpoint is
``asyncio.sleep(0)``, which is what anyio's own checkpoint runs there. On
any other backend, both go through anyio as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

import anyio
import anyio.lowlevel
from attrs import frozen

__all__ = ["LoopOps", "ReplySlot", "bind_loop_ops"]


class ReplySlot(Protocol):
    """Where one reply's arrival is signalled; set at most once."""

    def is_set(self) -> bool:
        """Whether the reply is in (or the waiter gave up)."""
        ...

    def set(self) -> None:
        """Wake the waiter; does nothing once set."""
        ...

    def wait(self) -> Awaitable[object]:
        """Wait until `set` is called."""
        ...


class _FutureSlot:
    """A reply slot over an asyncio future.

    A waiter cancelled while it waits cancels the future, which then counts
    as set: a late reply finds the slot closed and is dropped.
    """

    __slots__ = ("_future",)

    def __init__(self, future: asyncio.Future[None]) -> None:
        self._future = future

    def is_set(self) -> bool:
        return self._future.done()

    def set(self) -> None:
        if not self._future.done():
            self._future.set_result(None)

    def wait(self) -> Awaitable[object]:
        return self._future


@frozen
class LoopOps:
    """Hot-path operations of the running event loop.

    Attributes:
        reply_slot: Makes a new, unset `ReplySlot`.
        checkpoint: Yields to the scheduler once (and lets a cancellation in).
        current_time: The loop's clock, as `anyio.current_time` reads it.
    """

    reply_slot: Callable[[], ReplySlot]
    checkpoint: Callable[[], Awaitable[None]]
    current_time: Callable[[], float]


def _asyncio_checkpoint() -> Awaitable[None]:
    return asyncio.sleep(0)


def bind_loop_ops() -> LoopOps:
    """Bind the operations of the loop running this task.

    Returns:
        Operations valid for as long as this loop runs.
    """
    # anyio itself takes a running asyncio loop to mean the asyncio backend
    # when it cannot ask sniffio; under trio no asyncio loop runs.
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return LoopOps(anyio.Event, anyio.lowlevel.checkpoint, anyio.current_time)

    def reply_slot() -> ReplySlot:
        return _FutureSlot(loop.create_future())

    return LoopOps(reply_slot, _asyncio_checkpoint, loop.time)
