"""Run every benchmark, pool their samples, and write ``RESULTS.md``.

Each script runs in a fresh interpreter, a few times for the quick ones;
its samples are pooled and each figure, baseline and ratio is the median of
them (a ratio is taken per sample, from a figure and a baseline measured
side by side). The table says for each figure whether it met its target.

A script that cannot run (no engine, a missing package) or that overruns
its time budget is reported as such; the others still run, ``RESULTS.md``
is still written, and this exits with status 1. Missed targets are results,
not failures: the exit status is 0 when every script ran.

Usage: ``python benchmarks/run_all.py [--only NAME[,NAME...]]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from attrs import frozen

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
FIXES = HERE / "fixes.md"
RESULT_PREFIX = "BENCH-RESULT "

PACKAGES = (
    "rolecall",
    "anyio",
    "attrs",
    "msgpack",
    "structlog",
    "aiodocker",
    "aiohttp",
    "redis",
    "pykka",
)


@frozen
class Bench:
    """One script, how often to run it, and its time budget per run."""

    name: str
    script: str
    runs: int
    budget: float
    args: tuple[str, ...] = ()


BENCHES = (
    Bench("mailbox", "bench_mailbox.py", runs=3, budget=60),
    Bench("ask", "bench_ask.py", runs=3, budget=60),
    Bench("memory", "bench_memory.py", runs=3, budget=60),
    Bench("reconcile", "bench_reconcile.py", runs=1, budget=300),
    Bench("hooks", "bench_hooks.py", runs=1, budget=150),
    Bench("failover", "bench_failover.py", runs=1, budget=150),
    Bench("conversion", "bench_conversion.py", runs=1, budget=150),
    Bench("codec", "bench_codec.py", runs=3, budget=60),
)


@frozen
class Outcome:
    """What the runs of one script gave."""

    bench: Bench
    reports: list[dict[str, Any]]
    problem: str | None
    seconds: float


def _run(bench: Bench) -> Outcome:
    started = time.monotonic()
    reports: list[dict[str, Any]] = []
    for number in range(bench.runs):
        print(f"== {bench.name} ({number + 1}/{bench.runs})", flush=True)
        try:
            done = subprocess.run(
                [sys.executable, str(HERE / bench.script), *bench.args],
                capture_output=True,
                text=True,
                check=False,
                timeout=bench.budget,
            )
        except subprocess.TimeoutExpired:
            problem = f"overran its budget of {bench.budget:g} s per run"
            return Outcome(bench, reports, problem, time.monotonic() - started)

        found = None
        for line in done.stdout.splitlines():
            if line.startswith(RESULT_PREFIX):
                found = json.loads(line[len(RESULT_PREFIX) :])
            else:
                print(line, flush=True)

        if done.returncode != 0 or found is None:
            problem = f"exit status {done.returncode}: {_last_words(done.stderr)}"
            print(done.stderr, file=sys.stderr, flush=True)
            return Outcome(bench, reports, problem, time.monotonic() - started)

        reports.append(found)

    return Outcome(bench, reports, None, time.monotonic() - started)


def _last_words(stderr: str) -> str:
    """The last line of a script's stderr that says something."""
    for line in reversed(stderr.splitlines()):
        text = line.strip().strip("|+-").strip()
        if text and not text.startswith(("^", "~")):
            return text.replace("|", "/")

    return "no output"


# -- the machine ------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass

    return platform.processor() or "unknown"


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass

    return "unknown"


def _docker_version() -> str:
    try:
        done = subprocess.run(
            [
                "docker",
                "version",
                "--format",
                "{{.Server.Version}} (API {{.Server.APIVersion}})",
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "no engine"

    return done.stdout.strip() or "no engine"


def _commit() -> str:
    try:
        done = subprocess.run(
            ["git", "-C", str(HERE), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"

    return done.stdout.strip() or "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _machine(load_before: str, extra: dict[str, str]) -> list[str]:
    versions = ", ".join(f"{name} {_version(name)}" for name in PACKAGES)
    lines = [
        "## Machine",
        "",
        f"- CPU: {os.cpu_count()} cores, {_cpu_model()}",
        f"- memory: {_memory()}",
        f"- kernel: {platform.system()} {platform.release()}",
        f"- Python: {platform.python_implementation()} {platform.python_version()}",
        f"- Docker engine: {_docker_version()}",
        f"- packages: {versions}",
    ]
    lines += [f"- {key}: {value}" for key, value in extra.items()]
    lines += [
        f"- commit measured: {_commit()}",
        f"- load average before / after the run: {load_before} / {_load()}",
        "",
    ]

    return lines


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


# -- the table ----------------------------------------------------------------


def _median(values: list[float]) -> float | None:
    ordered = sorted(values)
    if not ordered:
        return None

    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]

    return (ordered[middle - 1] + ordered[middle]) / 2


def _show(value: float | None, unit: str) -> str:
    if value is None:
        return "—"

    if unit in ("msg/s", "ask/s"):
        return (
            f"{value / 1e6:.2f} M{unit}"
            if value >= 1e6
            else f"{value / 1e3:.1f} k{unit}"
        )

    if unit == "B":
        return f"{value:,.0f} B"

    if unit == "s" and value < 1:
        return f"{value * 1000:.0f} ms"

    if value >= 1000:
        return f"{value:,.0f} {unit}"

    return f"{value:,.3g} {unit}"


def _ratio(ratio: float, check: dict[str, Any]) -> str:
    # Two decimals, or three where two would round onto the target.
    close = check["op"] is not None and abs(ratio - float(check["limit"])) < 0.01
    return f"{ratio:.3f}x" if close else f"{ratio:.2f}x"


def _target(check: dict[str, Any]) -> str:
    op = check["op"]
    if op is None:
        return "reference only"

    sign = "≤" if op == "<=" else "≥"
    limit = float(check["limit"])
    if check["target_on"] == "ratio":
        return f"ratio {sign} {limit:g}x"

    return f"{sign} {_show(limit, str(check['unit']))}"


def _met(check: dict[str, Any], figure: float | None, ratio: float | None) -> str:
    op = check["op"]
    if op is None:
        return "—"

    value = ratio if check["target_on"] == "ratio" else figure
    if value is None:
        return "no data"

    limit = float(check["limit"])
    good = value <= limit if op == "<=" else value >= limit

    return "met" if good else "**missed**"


def _merge(reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    for report in reports:
        for check in report["checks"]:
            known = merged.get(check["id"])
            if known is None:
                merged[check["id"]] = {**check, "samples": list(check["samples"])}
            else:
                known["samples"] += check["samples"]

    return list(merged.values())


def _section(outcome: Outcome) -> tuple[list[str], list[list[str]]]:
    """Notes for one benchmark and its table rows."""
    title = outcome.bench.name
    if outcome.reports:
        title = str(outcome.reports[0]["title"])

    rows = []
    notes = []
    if outcome.problem is not None:
        rows.append([title, "did not run", "", "", "", "", outcome.problem])

    for check in _merge(outcome.reports):
        samples = check["samples"]
        unit = str(check["unit"])
        figure = _median([s[0] for s in samples if s[0] is not None])
        baseline = _median([s[1] for s in samples if s[1] is not None])
        ratio = _median([s[2] for s in samples if s[2] is not None])
        shown_baseline = _show(baseline, unit)
        if baseline is not None and check["baseline_what"]:
            shown_baseline += f" ({check['baseline_what']})"

        shown_ratio = "—" if ratio is None else _ratio(ratio, check)
        rows.append(
            [
                f"{title}: {check['what']}",
                _show(figure, unit),
                shown_baseline,
                shown_ratio,
                _target(check),
                _met(check, figure, ratio),
                str(len(samples)),
            ]
        )

    for report in outcome.reports[:1]:
        notes += [f"- {title}: {note}" for note in report["notes"]]

    return notes, rows


def _write(outcomes: list[Outcome], load_before: str, seconds: float) -> None:
    extra: dict[str, str] = {}
    for outcome in outcomes:
        for report in outcome.reports:
            version = report["info"].get("redis_version")
            if version:
                extra["Redis server (example image)"] = str(version)

    header = ["measurement", "figure", "baseline", "ratio", "target", "met?", "samples"]
    table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    notes: list[str] = []
    for outcome in outcomes:
        more_notes, rows = _section(outcome)
        notes += more_notes
        table += ["| " + " | ".join(row) + " |" for row in rows]

    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Benchmark results",
        "",
        f"Written by `make bench` (`benchmarks/run_all.py`) on {when};"
        f" the whole run took {seconds:.0f} s. Every figure is the median of"
        " the samples counted in the last column, and every ratio the median"
        " of per-sample ratios, each taken against a baseline measured in the"
        " same run: this machine is shared and noisy, so absolute times"
        " drift between runs while ratios hold.",
        "",
        *_machine(load_before, extra),
        "## Results",
        "",
        *table,
        "",
        "## How each was measured",
        "",
        *notes,
        "",
    ]
    if FIXES.exists():
        lines += [FIXES.read_text().rstrip(), ""]

    RESULTS.write_text("\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only",
        type=lambda text: set(text.split(",")),
        default=None,
        help="run only these benchmarks, comma-separated (RESULTS.md is not written)",
    )
    args = parser.parse_args()
    load_before = _load()
    started = time.monotonic()
    outcomes = [
        _run(bench) for bench in BENCHES if args.only is None or bench.name in args.only
    ]
    seconds = time.monotonic() - started
    if args.only is None:
        _write(outcomes, load_before, seconds)
        print(f"wrote {RESULTS.relative_to(HERE.parent)} after {seconds:.0f} s")

    failed = [outcome for outcome in outcomes if outcome.problem is not None]
    for outcome in failed:
        print(f"{outcome.bench.name}: {outcome.problem}", file=sys.stderr)

    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
