"""The one log line of a reconcile pass.

Every pass of a service's controller logs exactly one ``reconcile_pass``
line, with what it did and how long it took: at info when it acted (or
failed), at debug when it found nothing to do, so that an idle runner is
quiet at info. Timeline events (``role_applied``, ``converged``, ...) and
``reconcile_failed`` say more about a pass that did something; this line
is the unit of work's canonical record.
"""

from __future__ import annotations

import time

import structlog
from attrs import define, field

__all__ = ["PassRecord"]

_log = structlog.get_logger("rolecall.supervisor")


@define
class PassRecord:
    """What one pass did, filled in as it goes; logged by `log`."""

    service: str
    # When the pass began (time.monotonic).
    started: float = field(factory=time.monotonic)
    # Steps the reconciler planned (0 until it planned).
    steps: int = 0
    # Members `configure` ran on again in this pass.
    configured: int = 0
    # How the pass ended: ``idle`` (nothing to do), ``acted`` (every step
    # ran), ``cut_short`` (a loss, a backoff or a newer request ended the
    # steps early), ``switchover``, ``failed`` (a step failed), ``refused``
    # (another control plane holds the service's claim), ``crashed`` (an
    # unexpected error) or ``cancelled`` (the controller is closing).
    outcome: str = "idle"

    def log(self, *, converged: bool) -> None:
        """Write the pass's line: debug when idle, info otherwise."""
        level = 10 if self.outcome == "idle" else 20
        _log.log(
            level,
            "reconcile_pass",
            service=self.service,
            outcome=self.outcome,
            steps=self.steps,
            configured=self.configured,
            converged=converged,
            duration_ms=round((time.monotonic() - self.started) * 1000),
        )
