"""A hook's stderr, forwarded into rolecall's log line by line as it arrives.

Hooks write their log lines on stderr (the SDK's ``ctx.log`` writes one JSON
line each). `StderrForwarder` takes the stderr of one hook run in pieces, as
the engine streams them (the fake runtime hands it over in one piece when
the hook ends), and logs each complete line as a ``hook_stderr`` event
bound to the service, member, container and hook.

A hook that floods cannot flood the log: at most `MAX_STDERR_LINES` lines are
forwarded per run, each cut at `MAX_STDERR_LINE_CHARS` characters, and one
``hook_stderr_dropped`` line at the end says how many were left out (the
run's error keeps the tail of its stderr either way). Secret values are
masked in every line before it is logged.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from attrs import define, field
from structlog.typing import FilteringBoundLogger

__all__ = [
    "MAX_STDERR_LINES",
    "MAX_STDERR_LINE_CHARS",
    "StderrForwarder",
    "mask_secrets",
]

MAX_STDERR_LINES = 100
"""Lines of one hook run's stderr forwarded to the log; later ones are
counted in ``hook_stderr_dropped``."""

MAX_STDERR_LINE_CHARS = 1000
"""Characters kept of one stderr line; the rest is cut and marked."""

_MASK = "***"


def mask_secrets(text: str, secrets: Collection[str]) -> str:
    """``text`` with every secret value replaced by ``***``."""
    # Longest first, so that a secret holding another is masked whole.
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, _MASK)

    return text


@define
class StderrForwarder:
    """Logs one hook run's stderr line by line; never raises.

    Args:
        log: The logger to write to.
        fields: The run's service, member, container and hook, sent with
            every line.
        secrets: Values to mask in every line.
        level: The level of each line (debug for hooks polled often).
    """

    log: FilteringBoundLogger
    fields: Mapping[str, object] = field(factory=dict)
    secrets: Collection[str] = ()
    level: int = 20
    # Bytes of the line not yet ended; never longer than the cut allows.
    _pending: bytearray = field(factory=bytearray)
    # Whether bytes of the pending line were dropped past the cut.
    _cut: bool = False
    # Lines logged so far, and lines counted but not logged past the cap.
    forwarded: int = 0
    dropped: int = 0

    def feed(self, data: bytes) -> None:
        """Take the next piece of stderr; log the lines it completes."""
        *complete, rest = data.split(b"\n")
        for piece in complete:
            self._add(piece)
            self._emit()

        self._add(rest)

    def close(self) -> None:
        """Log a last line left without a newline, and what was dropped."""
        if self._pending or self._cut:
            self._emit()

        if self.dropped:
            self.log.warning(
                "hook_stderr_dropped",
                **self.fields,
                lines=self.dropped,
                forwarded=self.forwarded,
                reason=f"more than {MAX_STDERR_LINES} lines in one run",
            )

    def _add(self, piece: bytes) -> None:
        # Bytes, not characters, bound the buffer; the cut in characters
        # happens on decoding.
        room = MAX_STDERR_LINE_CHARS * 4 - len(self._pending)
        if len(piece) > room:
            self._cut = True

        self._pending += piece[: max(room, 0)]

    def _emit(self) -> None:
        raw, cut = bytes(self._pending), self._cut
        self._pending.clear()
        self._cut = False
        text = raw.decode("utf-8", errors="replace").rstrip("\r")
        if not text.strip() and not cut:
            return

        if self.forwarded >= MAX_STDERR_LINES:
            self.dropped += 1
            return

        if cut or len(text) > MAX_STDERR_LINE_CHARS:
            text = text[:MAX_STDERR_LINE_CHARS] + " [cut]"

        self.forwarded += 1
        line = mask_secrets(text, self.secrets)
        self.log.log(self.level, "hook_stderr", **self.fields, line=line)
