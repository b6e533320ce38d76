"""The supervisor's timeline: every event of every service, to whoever
listens.

A callback gets each event the moment it happens; subscriptions get it
through a bounded buffer, so a slow reader never stalls the supervisor.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from attrs import define, field

from ._records import ServiceEvent

__all__ = ["Timeline"]

_log = structlog.get_logger("rolecall.supervisor")

EVENT_BUFFER = 1024
"""Events a subscriber may fall behind before it misses the overflow."""


@define(eq=False)
class Timeline:
    """Hands every timeline event to a callback and to subscribers."""

    # Called with every event as it happens, before subscribers.
    on_event: Callable[[ServiceEvent], None] | None = None
    # Open subscriptions; closed ones are dropped on the next emit.
    subscribers: list[MemoryObjectSendStream[ServiceEvent]] = field(factory=list)

    def emit(self, event: ServiceEvent) -> None:
        """Hand ``event`` to the callback, then to every subscriber."""
        if self.on_event is not None:
            self.on_event(event)

        for send in list(self.subscribers):
            try:
                send.send_nowait(event)
            except anyio.WouldBlock:
                _log.warning("timeline_subscriber_behind", kind=event.kind)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self.subscribers.remove(send)

    @asynccontextmanager
    async def open(self) -> AsyncIterator[MemoryObjectReceiveStream[ServiceEvent]]:
        """Subscribe to events from now on; see `Supervisor.open_timeline`."""
        send, receive = anyio.create_memory_object_stream[ServiceEvent](EVENT_BUFFER)
        self.subscribers.append(send)
        try:
            async with receive:
                yield receive
        finally:
            send.close()
            if send in self.subscribers:
                self.subscribers.remove(send)
