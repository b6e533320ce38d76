"""Reconcile at scale: services of ten members on the fake runtime, from empty.

Every service is redundant with nine replicas, so ten members each; the
clock runs from the first `apply` until `wait_converged` has returned for
every service. Each member costs what it costs on a real engine minus the
engine: network, volume and container calls, an actor, ``plan``,
``configure``, ``start`` and ``role`` hooks (encoded, decoded and run by the
fake key-value image), then a confirming pass that probes it with
``status``.

The probe interval is long (an hour) so that only the work of converging is
timed, not health passes on top. The sizes are 1k, 10k and 50k members: the
10k figure is judged against its target, and the cost per member at 50k is
judged against the cost per member at 1k.
"""

from __future__ import annotations

import argparse
import gc
import time

import anyio
from _bench import Report, quiet_logs

from rolecall.hooks_protocol import Topology
from rolecall.supervisor import ServiceSpec, open_supervisor
from rolecall.testing import FakeRuntime, fake_kv_image

MEMBERS_PER_SERVICE = 10
SIZES = (1_000, 10_000, 50_000)
PROBE_INTERVAL = 3600.0
BUDGET = 200.0
"""Seconds the script may spend; a size forecast to overrun it is skipped."""
TIMEOUT = 600.0

_IMAGE = "kv:fake"


async def _converge(members: int) -> float:
    runtime = FakeRuntime()
    runtime.add_image(_IMAGE, hooks=fake_kv_image())
    services = members // MEMBERS_PER_SERVICE
    names = [f"svc{number}" for number in range(services)]
    async with open_supervisor(runtime, probe_interval=PROBE_INTERVAL) as supervisor:
        # The image's plan is probed once per image; probe it untimed.
        await supervisor.probe_plan(ServiceSpec(name="warm-up", image=_IMAGE))
        started = time.perf_counter()
        for name in names:
            await supervisor.apply(
                ServiceSpec(
                    name=name,
                    image=_IMAGE,
                    topology=Topology.REDUNDANT,
                    replicas=MEMBERS_PER_SERVICE - 1,
                )
            )

        for name in names:
            await supervisor.wait_converged(name, timeout=TIMEOUT)

        elapsed = time.perf_counter() - started
        running = len(await runtime.list_containers(labels={}))
        if running != members:
            raise SystemExit(f"expected {members} containers, found {running}")

    return elapsed


class _CollectorClock:
    """Counts the time the garbage collector runs, by generation."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.full = 0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return

        self.seconds += time.perf_counter() - self._started
        self.full += info["generation"] == 2


async def _measure(report: Report, sizes: tuple[int, ...]) -> None:
    seconds: dict[int, float] = {}
    collector: dict[str, str] = {}
    spent = 0.0
    for members in sizes:
        if seconds:
            last = max(seconds)
            forecast = seconds[last] * members / last * 1.5
            if spent + forecast > BUDGET:
                report.notes.append(
                    f"{members:,} members skipped: at the pace of {last:,} members"
                    f" it would take about {forecast:.0f} s, past the"
                    f" {BUDGET:g} s this script may spend."
                )
                print(f"  {members:,} members skipped (forecast {forecast:.0f} s)")
                continue

        gc.collect()
        clock = _CollectorClock()
        gc.callbacks.append(clock)
        try:
            seconds[members] = await _converge(members)
        finally:
            gc.callbacks.remove(clock)

        spent += seconds[members]
        per_member = seconds[members] / members * 1e6
        collector[f"{members:,}"] = f"{clock.seconds:.1f} s, {clock.full} full"
        print(
            f"  {members:,} members: converged in {seconds[members]:.2f} s"
            f" ({per_member:.0f} µs per member; garbage collection"
            f" {clock.seconds:.2f} s in {clock.full} full collections)",
            flush=True,
        )

    report.info["seconds_by_members"] = {str(k): v for k, v in seconds.items()}
    report.notes.append(
        "Seconds by members: "
        + ", ".join(f"{k:,}: {v:.2f} s" for k, v in seconds.items())
        + "; of which the garbage collector ran: "
        + "; ".join(f"{k}: {v}" for k, v in collector.items())
        + "."
    )
    if 10_000 in seconds:
        report.check(
            "converge_10k",
            "seconds from empty to converged, 10,000 members in 1,000 services",
            "s",
            target_on="figure",
            op="<=",
            limit=2.0,
        ).add(seconds[10_000])

    small, large = min(seconds), max(seconds)
    if small == large:
        return

    per_small = seconds[small] / small * 1e6
    per_large = seconds[large] / large * 1e6
    report.check(
        "growth",
        f"µs per member at {large:,} members",
        "µs",
        baseline_what=f"µs per member at {small:,} members",
        ratio_what="large / small",
        op="<=",
        limit=1.3,
    ).add(per_large, per_small, per_large / per_small)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        type=lambda text: tuple(int(part) for part in text.split(",")),
        default=SIZES,
        help="member counts to run, comma-separated (default: 1000,10000,50000)",
    )
    args = parser.parse_args()
    quiet_logs()
    report = Report("reconcile", "4. Reconcile at scale")
    report.notes.append(
        f"redundant services of {MEMBERS_PER_SERVICE} members on the fake"
        f" runtime with the fake key-value image; probe interval"
        f" {PROBE_INTERVAL:g} s, so only the convergence is timed."
    )
    anyio.run(_measure, report, args.sizes, backend="asyncio")
    report.emit()


if __name__ == "__main__":
    main()
