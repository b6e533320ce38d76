"""Messages that were not handled, kept where people can look at them.

Two things end up here: a message a member's actor could not take at all
(a malformed one: the actor drops it and goes on), and the message that
crashed a member's actor (its handler raised for a ``tell``; the actor is
replaced, and the message is not sent again). Each becomes a `DeadLetter`
in the service's `DeadLetterLog` and one ``dead_letter`` log line.

`CrashWatch` is the parent actor of a service's member actors: their crash
notices arrive in its mailbox, and it files them.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

import structlog
from attrs import define, field, frozen

from rolecall.actors import Actor, ChildCrashed

__all__ = ["CrashWatch", "DeadLetter", "DeadLetterLog", "describe_message"]

_log = structlog.get_logger("rolecall.supervisor")

_KEPT = 256
"""Dead letters a service keeps; older ones are dropped (and counted)."""


@frozen
class DeadLetter:
    """One message that was not handled.

    Attributes:
        time: Wall-clock time, seconds since the epoch.
        service: The service of the member concerned.
        member: The member whose actor got the message.
        message: What the message was: its type and the few fields that
            say what it asked, never its payload (which may hold secrets).
        reason: Why it was not handled.
    """

    time: float
    service: str
    member: str
    message: str
    reason: str


def describe_message(message: object) -> str:
    """Name a message without its payload: type, and role and epoch if any."""
    name = type(message).__name__
    role = getattr(message, "role", None)
    epoch = getattr(message, "epoch", None)
    if role is None or not isinstance(epoch, int):
        return name

    return f"{name}(role={getattr(role, 'value', role)!r}, epoch={epoch})"


@define
class DeadLetterLog:
    """The dead letters of one service, newest last, bounded.

    Args:
        service: The service's name.
    """

    service: str
    # The newest `_KEPT` dead letters, oldest first.
    entries: deque[DeadLetter] = field(factory=lambda: deque(maxlen=_KEPT))
    # Every dead letter ever filed, dropped ones included.
    total: int = 0

    def file(self, member: str, message: object, reason: str) -> DeadLetter:
        """Keep one dead letter and log it."""
        letter = DeadLetter(
            time=time.time(),
            service=self.service,
            member=member,
            message=describe_message(message),
            reason=reason,
        )
        self.entries.append(letter)
        self.total += 1
        _log.warning(
            "dead_letter",
            service=self.service,
            member=member,
            message=letter.message,
            reason=reason,
        )

        return letter


@define(eq=False)
class CrashWatch(Actor[ChildCrashed]):
    """The parent of a service's member actors.

    Args:
        dead_letters: Where the message that crashed an actor is filed.
        crashed: Called with the member id once its actor has crashed, to
            have it replaced.
    """

    dead_letters: DeadLetterLog
    crashed: Callable[[str], None]

    async def handle(self, message: ChildCrashed) -> None:
        """File the crashing message and report the crash."""
        member = message.name.removeprefix("member:")
        reason = (
            f"its handler raised {type(message.error).__name__} in"
            f" {message.phase}: {message.error}"
        )
        if message.message is None:
            _log.warning("member_actor_crashed", member=member, phase=message.phase)
        else:
            self.dead_letters.file(member, message.message, reason)

        self.crashed(member)
