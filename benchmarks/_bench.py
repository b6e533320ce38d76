"""What every benchmark script shares: checks, samples and the result line.

A script measures a figure and, in the same run, the baseline it is judged
against, and records both as one sample of a `Check`. It prints what it saw
for people, then one line starting with `RESULT_PREFIX` that holds every
check as JSON; ``run_all.py`` reads that line, pools the samples of several
runs and takes medians.

Ratios are taken per sample, from a figure and a baseline measured side by
side: on a noisy machine absolute times drift between runs, the ratio of two
things measured together holds better.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any, Literal

from attrs import asdict, define, field

__all__ = [
    "RESULT_PREFIX",
    "Check",
    "Report",
    "cannot_run",
    "median",
    "quiet_logs",
    "rss_bytes",
]

RESULT_PREFIX = "BENCH-RESULT "
"""Starts the one line of a script's output that ``run_all.py`` reads."""

Op = Literal["<=", ">="]


@define
class Check:
    """One measured figure, its baseline, and the target it must meet.

    Attributes:
        id: Stable key, unique within the script.
        what: What the figure measures, for the table.
        unit: The figure's and the baseline's unit.
        baseline_what: What the baseline measures; empty when there is none.
        ratio_what: How the ratio is formed (``rolecall / baseline``).
        target_on: Whether the target bounds the ``ratio`` or the ``figure``.
        op: ``<=`` or ``>=``; ``None`` for a figure shown for reference only.
        limit: The bound.
        samples: ``[figure, baseline, ratio]`` per run; ``None`` where a
            check has no baseline.
    """

    id: str
    what: str
    unit: str
    baseline_what: str = ""
    ratio_what: str = ""
    target_on: Literal["ratio", "figure"] = "ratio"
    op: Op | None = "<="
    limit: float = 1.0
    samples: list[list[float | None]] = field(factory=list)

    def add(
        self, figure: float, baseline: float | None = None, ratio: float | None = None
    ) -> None:
        """Record one run: a figure, its baseline, and their ratio."""
        self.samples.append([figure, baseline, ratio])


@define
class Report:
    """Everything one script run found.

    Attributes:
        bench: The script's short name.
        title: A heading for the table.
        checks: The checks, in table order.
        notes: Lines worth printing under the table (method, caveats).
        info: Facts about the run (versions, sizes) for the machine section.
    """

    bench: str
    title: str
    checks: list[Check] = field(factory=list)
    notes: list[str] = field(factory=list)
    info: dict[str, Any] = field(factory=dict)

    def check(self, check_id: str, what: str, unit: str, **options: Any) -> Check:
        """Declare a check (or return the one declared with that id)."""
        for known in self.checks:
            if known.id == check_id:
                return known

        made = Check(check_id, what, unit, **options)
        self.checks.append(made)

        return made

    def emit(self) -> None:
        """Print each check's medians for people, then the line for run_all."""
        for check in self.checks:
            figure = median([sample[0] for sample in check.samples])
            shown = f"  {check.what}: {_num(figure)} {check.unit}"
            baselines = [s[1] for s in check.samples if s[1] is not None]
            if baselines:
                shown += f"; {check.baseline_what}: {_num(median(baselines))}"

            ratios = [s[2] for s in check.samples if s[2] is not None]
            if ratios:
                shown += f"; ratio {median(ratios):.2f}"

            if len(check.samples) > 1:
                shown += f" (medians of {len(check.samples)})"

            print(shown)

        print(RESULT_PREFIX + json.dumps(asdict(self)), flush=True)


def _num(value: float | None) -> str:
    if value is None:
        return "-"

    return f"{value:,.4g}"


def median(values: list[float | None]) -> float:
    """The median of a non-empty list without gaps."""
    return statistics.median([value for value in values if value is not None])


def rss_bytes() -> int:
    """This process's resident set size, from ``/proc/self/statm``."""
    with open("/proc/self/statm", encoding="ascii") as statm:
        pages = int(statm.read().split()[1])

    return pages * os.sysconf("SC_PAGE_SIZE")


def quiet_logs() -> None:
    """Keep rolecall's structlog lines out of the measurements.

    rolecall never configures structlog; unconfigured, it prints every
    event, which a benchmark of ten thousand members would mostly measure.
    """
    import logging

    import structlog

    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR),
        cache_logger_on_first_use=True,
    )


def cannot_run(reason: str) -> None:
    """Say why the benchmark cannot run and exit with status 2."""
    print(f"cannot run: {reason}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def timed(function: Callable[[], object]) -> float:
    """Seconds one call of ``function`` takes."""
    started = time.perf_counter()
    function()

    return time.perf_counter() - started
