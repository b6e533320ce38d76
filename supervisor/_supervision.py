"""How a service's members are restarted, and when rolecall gives up on it.

The words are Erlang/OTP's, applied to containers. The service controller is
the supervisor of its members; the `Supervisor` is the parent of every
controller.

- **Strategy** — which members restart when one stops: ``one_for_one``
  (only that one), ``one_for_all`` (every member of the service),
  ``rest_for_one`` (that one and every member created after it).
- **Restart kind** — whether a stopped member is restarted at all:
  ``permanent`` (always), ``transient`` (unless it exited cleanly, with code
  0 and no OOM kill), ``temporary`` (never). A member that is not restarted
  stays down with its container and volume, and the service reports it.
  Promoting a replica in place of a lost primary is not a restart: it
  happens whatever the kind.
- **Intensity** — more than ``max_restarts`` restarts within ``within``
  seconds and the controller gives up: the service is marked failed with the
  reason, a ``service_failed`` event is emitted, the controller stops acting
  on it, and every other service carries on. A restart is a member's
  container started again, a member's crashed actor replaced, or a pass that
  crashed on an unexpected error. Applying a spec again clears the failure.
- **Backoff** — restarts, and passes after a failed one, wait
  ``backoff_first`` seconds, doubling up to ``backoff_cap``, each delay
  spread by ``±jitter`` (a fraction) so that services failing together do
  not retry together. After ``reset_after`` seconds without a restart or a
  failed pass the delays start again from the first.
- **Unresponsive** — a member whose ``status`` hook has not answered for
  ``unresponsive_after`` seconds (a paused or wedged container) is treated
  as lost: a primary is fenced and replaced, a replica restarted.

Everything here but `Backoff` and `Intensity` is a value; those two hold the
counters of one service.
"""

from __future__ import annotations

import enum
import math
import random
from collections import deque
from collections.abc import Callable

from attrs import define, field, frozen

from rolecall.hooks_protocol import SpecError

__all__ = [
    "Backoff",
    "Intensity",
    "RestartKind",
    "Strategy",
    "Supervision",
    "validate_supervision",
]


class Strategy(enum.StrEnum):
    """Which members restart when one of them stops."""

    ONE_FOR_ONE = "one_for_one"
    """Only the member that stopped."""

    ONE_FOR_ALL = "one_for_all"
    """Every member of the service."""

    REST_FOR_ONE = "rest_for_one"
    """The member that stopped and every member created after it."""


class RestartKind(enum.StrEnum):
    """Whether a stopped member is restarted."""

    PERMANENT = "permanent"
    """Always."""

    TRANSIENT = "transient"
    """Unless it exited cleanly (code 0, not killed for memory)."""

    TEMPORARY = "temporary"
    """Never: it stays down, and the service reports it."""


def _strategy(value: Strategy | str) -> Strategy:
    try:
        return Strategy(value)
    except ValueError:
        known = ", ".join(s.value for s in Strategy)
        raise SpecError(f"unknown strategy {value!r}: use one of {known}") from None


def _restart(value: RestartKind | str) -> RestartKind:
    try:
        return RestartKind(value)
    except ValueError:
        known = ", ".join(k.value for k in RestartKind)
        raise SpecError(f"unknown restart kind {value!r}: use one of {known}") from None


@frozen
class Supervision:
    """A service's supervision settings; the defaults suit most services.

    Attributes:
        strategy: Which members restart when one stops.
        restart: Whether a stopped member is restarted.
        max_restarts: Restarts allowed within ``within`` seconds.
        within: The intensity window, in seconds.
        backoff_first: Seconds before the first retry.
        backoff_cap: The most seconds between retries.
        jitter: Each delay is spread by up to this fraction either way.
        reset_after: Seconds without trouble after which delays start
            again from ``backoff_first``.
        unresponsive_after: Seconds a member's ``status`` may stay
            unanswered before the member counts as lost.
    """

    strategy: Strategy = field(default=Strategy.ONE_FOR_ONE, converter=_strategy)
    restart: RestartKind = field(default=RestartKind.PERMANENT, converter=_restart)
    max_restarts: int = 10
    within: float = 600.0
    backoff_first: float = 0.5
    backoff_cap: float = 30.0
    jitter: float = 0.2
    reset_after: float = 60.0
    unresponsive_after: float = 10.0

    def delay(
        self, attempt: int, *, spread: Callable[[], float] = random.random
    ) -> float:
        """Seconds to wait before retry number ``attempt`` (from 1).

        Args:
            attempt: How many failures in a row came before this retry.
            spread: A number in [0, 1) that places the delay within its
                jitter band; 0.5 gives the nominal delay.

        Returns:
            The delay; 0 for ``attempt`` 0.
        """
        if attempt <= 0:
            return 0.0

        nominal = min(self.backoff_first * math.pow(2, attempt - 1), self.backoff_cap)

        return nominal * (1 + self.jitter * (2 * spread() - 1))


def validate_supervision(settings: Supervision, *, service: str) -> None:
    """Check that the settings describe something rolecall can do.

    Raises:
        SpecError: A count or duration is out of range.
    """
    if settings.max_restarts < 0 or isinstance(settings.max_restarts, bool):
        raise SpecError(
            f"service {service!r} has max_restarts {settings.max_restarts!r}:"
            " use 0 or more",
            service=service,
        )

    durations = {
        "within": settings.within,
        "backoff_first": settings.backoff_first,
        "backoff_cap": settings.backoff_cap,
        "reset_after": settings.reset_after,
        "unresponsive_after": settings.unresponsive_after,
    }
    for name, value in durations.items():
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise SpecError(
                f"service {service!r} has {name} {value!r}: use a number of"
                " seconds above 0",
                service=service,
            )

    if settings.backoff_cap < settings.backoff_first:
        raise SpecError(
            f"service {service!r} has backoff_cap {settings.backoff_cap!r} below"
            f" backoff_first {settings.backoff_first!r}: raise the cap",
            service=service,
        )

    if not 0 <= settings.jitter < 1:
        raise SpecError(
            f"service {service!r} has jitter {settings.jitter!r}: use a fraction"
            " from 0 up to (not including) 1",
            service=service,
        )


@define
class Backoff:
    """Consecutive failures of one kind, and the delay they call for.

    Args:
        settings: The service's supervision settings.
        spread: Places each delay in its jitter band (see
            `Supervision.delay`).
    """

    settings: Supervision
    spread: Callable[[], float] = random.random
    # Failures since the last reset; 0 when none.
    attempts: int = 0
    # Clock time of the last failure; None before the first.
    last: float | None = None

    def fail(self, now: float) -> float:
        """Count one failure at ``now``; return the delay before the retry."""
        self.attempts += 1
        self.last = now

        return self.settings.delay(self.attempts, spread=self.spread)

    def settle(self, now: float) -> bool:
        """Start over if ``reset_after`` has passed since the last failure.

        Returns:
            Whether the count was reset by this call.
        """
        if self.attempts == 0 or self.last is None:
            return False

        if now - self.last < self.settings.reset_after:
            return False

        self.attempts = 0
        return True


@define
class Intensity:
    """Restarts within the sliding window of the intensity limit.

    Args:
        settings: The service's supervision settings.
    """

    settings: Supervision
    # Clock times of the restarts inside the window, oldest first.
    times: deque[float] = field(factory=deque)

    def record(self, now: float) -> bool:
        """Count one restart at ``now``.

        Returns:
            Whether the service is still within its limit.
        """
        self.times.append(now)
        while self.times and now - self.times[0] > self.settings.within:
            self.times.popleft()

        return len(self.times) <= self.settings.max_restarts

    def reset(self) -> None:
        """Forget every restart (a new spec starts with a clean slate)."""
        self.times.clear()
