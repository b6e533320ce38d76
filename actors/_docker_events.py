"""The Docker engine's event stream, read as `EngineEvent` records.

`DockerRuntime.open_event_stream` opens one streaming ``/events`` request
per subscriber; `_EventIterator` reads it a JSON line at a time and keeps
the container events rolecall acts on.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import aiohttp
from attrs import define

from ..hooks_protocol._errors import EngineError
from ._docker_records import _str_dict
from ._runtime import EngineEvent

if TYPE_CHECKING:
    from ._docker import DockerRuntime

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
