"""Structured logging set-up for the runner and the CLI.

The library itself never configures logging; an embedding service keeps its
own structlog set-up. The CLI calls `configure_logging` once.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog
from attrs import define, field

from rolecall.actors import mask_secrets

__all__ = ["LOG_LEVELS", "Redactor", "configure_logging"]

LOG_LEVELS = ("debug", "info", "warning", "error")


@define
class Redactor:
    """A structlog processor that masks secret values wherever they appear.

    Hooks and the supervisor mask secrets themselves; this is the last line
    before a log line is written, so that a value marked secret never
    reaches the log even when a message quotes it by accident.
    """

    # The values to mask, longest first so that one containing another is
    # masked whole; replaced as a whole by `update`.
    _secrets: tuple[str, ...] = field(default=())

    def update(self, secrets: Iterable[str]) -> None:
        """Mask these values from now on (and no others)."""
        kept = {value for value in secrets if value}
        self._secrets = tuple(sorted(kept, key=len, reverse=True))

    def mask(self, text: str) -> str:
        """``text`` with every secret value replaced by ``***``."""
        return mask_secrets(text, self._secrets)

    def __call__(
        self, logger: object, method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        """Mask secrets in every value of a log event."""
        del logger, method
        if not self._secrets:
            return event

        for key, value in event.items():
            event[key] = self._masked(value)

        return event

    def _masked(self, value: object) -> object:
        if isinstance(value, str):
            return self.mask(value)

        if isinstance(value, dict):
            return {key: self._masked(item) for key, item in value.items()}

        if isinstance(value, list | tuple):
            return [self._masked(item) for item in value]

        if isinstance(value, BaseException):
            return self.mask(str(value))

        return value


def configure_logging(
    level: str = "info",
    *,
    stream: TextIO | None = None,
    redactor: Redactor | None = None,
) -> None:
    """Send rolecall's structured logs to ``stream`` (stderr by default).

    Human-readable key=value lines on a terminal, JSON lines otherwise.

    Args:
        level: The lowest level shown: debug, info, warning or error.
        stream: Where lines go.
        redactor: Masks secret values in every line, when given.
    """
    out = stream or sys.stderr
    renderer: structlog.typing.Processor
    if out.isatty():
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    else:
        renderer = structlog.processors.JSONRenderer()

    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    if redactor is not None:
        processors.append(redactor)

    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
