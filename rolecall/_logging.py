"""Structured logging set-up for the runner and the CLI.

The library itself never configures logging; an embedding service keeps its
own structlog set-up. The CLI calls `configure_logging` once.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

__all__ = ["LOG_LEVELS", "configure_logging"]

LOG_LEVELS = ("debug", "info", "warning", "error")


def configure_logging(level: str = "info", *, stream: TextIO | None = None) -> None:
    """Send rolecall's structured logs to ``stream`` (stderr by default).

    Human-readable key=value lines on a terminal, JSON lines otherwise.

    Args:
        level: The lowest level shown: debug, info, warning or error.
        stream: Where lines go.
    """
    out = stream or sys.stderr
    renderer: structlog.typing.Processor
    if out.isatty():
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    else:
        renderer = structlog.processors.JSONRenderer()

    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
