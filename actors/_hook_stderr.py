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


def mask_secrets(
    text: str,
    secrets: Collection[str],
    *,
    cut_before: bool = False,
    cut_after: bool = False,
) -> str:
    """``text`` with every secret value replaced by ``***``.

    Mask before cutting a text down: a cut can split a secret and leave a
    part no whole-value match finds. For a text that already is a piece of a
    longer one, ``cut_before`` / ``cut_after`` say which edge was cut, and
    what a secret left on that edge (its end, its start) is masked too.
    """
    # Longest first, so that a secret holding another is masked whole.
    ordered = sorted((s for s in secrets if s), key=len, reverse=True)
    for secret in ordered:
        text = text.replace(secret, _MASK)

    for secret in ordered:
        if cut_after:
            text = _mask_end(text, secret)
        if cut_before:
            text = _mask_start(text, secret)

    return text


def _mask_end(text: str, secret: str) -> str:
    for size in range(len(secret) - 1, 0, -1):
        if text.endswith(secret[:size]):
            return text[:-size] + _MASK

    return text


def _mask_start(text: str, secret: str) -> str:
    for size in range(len(secret) - 1, 0, -1):
        if text.startswith(secret[-size:]):
            return _MASK + text[size:]

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

        # Masked before the cut, which could split a secret; a secret the
        # buffer's own bound split is masked by what is left of it.
        line = mask_secrets(text, self.secrets, cut_after=cut)
        if cut or len(line) > MAX_STDERR_LINE_CHARS:
            line = line[:MAX_STDERR_LINE_CHARS] + " [cut]"

        self.forwarded += 1
        self.log.log(self.level, "hook_stderr", **self.fields, line=line)
