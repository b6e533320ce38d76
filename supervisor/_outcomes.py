"""What a pass's outcome does to a controller: backoffs, events, errors.

A pass ends settled (converged, or degraded with nothing to do), failed on
an error of the tree (backed off, ``step_failed``), refused by another
control plane's claim on the service (given up on, ``service_failed``), or
crashed on a bug (backed off, counted as a restart, ``pass_crashed``).
"""

from __future__ import annotations

import anyio
import structlog

from rolecall.hooks_protocol import HookError, RolecallError, ServiceClaimedError

from ._controller_state import ControllerState

__all__ = ["Reporting"]

_log = structlog.get_logger("rolecall.supervisor")


class Reporting(ControllerState):
    """Turns each pass's outcome into backoff, state and timeline events."""

    def _settle(self) -> None:
        now = anyio.current_time()
        if self.pass_backoff.settle(now) | self.restart_backoff.settle(now):
            _log.info("backoff_reset", service=self.spec.name)

    def _report_withheld(self) -> None:
        if not (self.failover_paused and self.lost_writer):
            return

        if self.degraded_reported:
            return

        self.degraded_reported = True
        self.event(
            "failover_withheld",
            self.lost_writer,
            "failover is paused: the lost writer is fenced, no replica promoted",
        )

    def _settled(self, generation: int) -> None:
        down = [
            m.id
            for m in self.members.values()
            if not (m.alive and m.ready) or m.unresponsive
        ]
        unlinked = [
            m.id for m in self.members.values() if m.link_down_since is not None
        ]
        if down or unlinked or self.writer() is None:
            self.converged_generation = -1
            # A link that comes back needs no step: say so when it does.
            self.acted_since_converged |= bool(unlinked)
            if not self.degraded_reported:
                self.degraded_reported = True
                self.event(
                    "degraded",
                    None,
                    _degraded_detail(down, unlinked),
                    down=down,
                    link_down=unlinked,
                )
            return

        self.degraded_reported = False
        if self.acted_since_converged:
            self.acted_since_converged = False
            writer = self.writer()
            self.event(
                "converged",
                writer.id if writer else None,
                f"{self.spec.topology.value} with {len(self.members)} member(s)",
            )
        self.converged_generation = generation
        self.retry_at = 0.0
        self.last_error = None

    def _failed(self, error: RolecallError) -> str:
        """Back off after a failed pass, or give up on a service another
        control plane claims.

        Returns:
            The pass's outcome: ``failed``, or ``refused`` for the claim.
        """
        if isinstance(error, ServiceClaimedError):
            self.claimed = False
            self.give_up(str(error))
            return "refused"

        now = anyio.current_time()
        delay = self.pass_backoff.fail(now)
        self.retry_at = now + delay
        self.converged_generation = -1
        self.last_error = str(error)
        error_type = type(error).__name__
        exit_code = error.exit_code if isinstance(error, HookError) else None
        _log.warning(
            "reconcile_failed",
            service=self.spec.name,
            error=str(error),
            error_type=error_type,
            exit_code=exit_code,
            retry_in=round(delay, 3),
        )
        self.event(
            "step_failed",
            None,
            str(error),
            retry_in=round(delay, 3),
            attempt=self.pass_backoff.attempts,
            error_type=error_type,
            exit_code=exit_code,
        )

        return "failed"

    def _crashed(self, error: Exception) -> None:
        now = anyio.current_time()
        delay = self.pass_backoff.fail(now)
        self.retry_at = now + delay
        self.converged_generation = -1
        self.last_error = f"{type(error).__name__}: {error}"
        _log.error(
            "pass_crashed",
            service=self.spec.name,
            retry_in=round(delay, 3),
            exc_info=error,
        )
        self.event(
            "pass_crashed",
            None,
            f"a pass raised {type(error).__name__}: {error}; rolecall backs off"
            " and tries again",
            retry_in=round(delay, 3),
            error_type=type(error).__name__,
        )
        self.note_restart(f"a pass that raised {type(error).__name__}", now)


def _degraded_detail(down: list[str], unlinked: list[str]) -> str:
    if down:
        return f"nothing to do, but members are down ({', '.join(down)})"

    if unlinked:
        return (
            "nothing to do, but replicas have lost their link to the primary"
            f" ({', '.join(unlinked)}); they are told their role again after"
            " unresponsive_after"
        )

    return "nothing to do, but no member takes writes"
