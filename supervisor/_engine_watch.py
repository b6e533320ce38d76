"""Engine events to controllers: which service's container changed."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import anyio
import structlog

from rolecall.actors import ContainerRuntime
from rolecall.hooks_protocol import EngineError

from ._naming import LABEL_MANAGED, LABEL_MEMBER, LABEL_SERVICE

if TYPE_CHECKING:
    from ._controller import ServiceController

__all__ = ["forward_engine_events"]

_log = structlog.get_logger("rolecall.supervisor")

_RECONNECT_FIRST = 0.2
_RECONNECT_CAP = 10.0
_DEATH_ACTIONS = frozenset({"die", "oom", "kill", "stop", "destroy", "start"})


async def forward_engine_events(
    runtime: ContainerRuntime,
    controllers: Mapping[str, ServiceController],
    *,
    on_resync: Callable[[], None],
) -> None:
    """Wake controllers on container events; reconnect when the stream drops.

    ``on_resync`` runs at every (re)connection: events may have been
    missed, so every controller should look again.
    """
    failures = 0
    while True:
        try:
            async with runtime.open_event_stream(
                labels={LABEL_MANAGED: "true"}
            ) as events:
                failures = 0
                on_resync()  # resync: something may have changed
                async for event in events:
                    if event.action not in _DEATH_ACTIONS:
                        continue
                    controller = controllers.get(event.labels.get(LABEL_SERVICE, ""))
                    if controller is not None:
                        controller.member_changed(event.labels.get(LABEL_MEMBER, ""))
        except EngineError as error:
            failures += 1
            delay = min(_RECONNECT_FIRST * math.pow(2, failures), _RECONNECT_CAP)
            _log.warning(
                "engine_events_lost", error=str(error), retry_in=round(delay, 2)
            )
            await anyio.sleep(delay * random.uniform(0.8, 1.2))
            continue

        failures += 1
        _log.warning("engine_events_ended")
        await anyio.sleep(min(_RECONNECT_FIRST * failures, _RECONNECT_CAP))
