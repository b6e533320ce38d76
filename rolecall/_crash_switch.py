"""A test aid: kill the runner right after a chosen step.

With ``ROLECALL_CRASH_AFTER=<event kind>[#<n>]`` in its environment, the
runner sends itself SIGKILL at the moment it emits the ``n``-th timeline
event of that kind (the first when ``#n`` is left out) — after the step
that the event reports has finished and been written to the journal, and
before anything else happens. Tests use it to stop the control plane at
each step boundary of a conversion or a failover, then start it again and
check that it finishes what was half done. It is not meant for anything
else: nothing is cleaned up, exactly as with ``kill -9``.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Mapping

import structlog

from rolecall.supervisor import ServiceEvent

from ._errors import RunnerError

__all__ = ["CRASH_AFTER_ENV", "crash_switch"]

CRASH_AFTER_ENV = "ROLECALL_CRASH_AFTER"

_log = structlog.get_logger("rolecall.runner")


def crash_switch(
    environ: Mapping[str, str] = os.environ,
) -> Callable[[ServiceEvent], None] | None:
    """The event observer that kills this process, if the switch is set.

    Raises:
        RunnerError: The variable is set but is not ``kind`` or ``kind#n``.
    """
    setting = environ.get(CRASH_AFTER_ENV, "").strip()
    if not setting:
        return None

    kind, _, count = setting.partition("#")
    if not kind or (count and not count.isdigit()) or count == "0":
        raise RunnerError(
            f"{CRASH_AFTER_ENV}={setting!r}: use an event kind, optionally"
            " with #N for its N-th occurrence (role_applied#2)"
        )

    remaining = int(count or 1)

    def observe(event: ServiceEvent) -> None:
        nonlocal remaining
        if event.kind != kind:
            return

        remaining -= 1
        if remaining > 0:
            return

        _log.warning(
            "crash_switch", kind=kind, service=event.service, member=event.member
        )
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    return observe
