"""How the CLI shows things: status tables, events, plans, progress."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any, TextIO

__all__ = [
    "event_line",
    "print_events_json",
    "print_plan",
    "print_status",
    "progress_line",
    "summary_line",
]

_MEMBER_HEADER = (
    f"{'SERVICE':<12} {'MEMBER':<12} {'ROLE':<11} {'STATE':<9}"
    f" {'HEALTHY':<8} {'EPOCH':>5} {'OFFSET':>10}  {'PUBLISHED':<16} ENGINE"
)


def print_status(
    services: list[dict[str, Any]],
    *,
    runner: Mapping[str, Any] | None,
    as_json: bool,
    out: TextIO,
) -> None:
    """Print services as a table, or as JSON.

    Args:
        services: Service dicts, from the runner or from the engine.
        runner: The runner's ``info``, when it answered.
        as_json: Print JSON (a list of services) instead.
        out: Where to print.
    """
    if as_json:
        json.dump(services, out, indent=2)
        print(file=out)
        return

    if runner is not None:
        print(
            f"runner pid {runner['pid']}, spec {runner['spec']},"
            f" up {_duration(time.time() - float(runner['started_at']))}",
            file=out,
        )

    if not services:
        print("no services", file=out)
        return

    if runner is not None:
        _print_services(services, out)
        print(file=out)

    print(_MEMBER_HEADER, file=out)
    for service in services:
        for member in service["members"]:
            print(
                f"{service['name']!s:<12} {member['id']!s:<12}"
                f" {member['role'] or '-'!s:<11} {member['state']!s:<9}"
                f" {_yes_no(member['healthy']):<8} {member['epoch']!s:>5}"
                f" {member['offset']!s:>10}  {member['published'] or '-'!s:<16}"
                f" {member.get('engine') or '-'}",
                file=out,
            )


def _print_services(services: list[dict[str, Any]], out: TextIO) -> None:
    print(
        f"{'SERVICE':<12} {'TOPOLOGY':<11} {'CONVERGED':<9} {'FAILOVER':<8}"
        f" {'EPOCH':>5}  LAST CHANGE",
        file=out,
    )
    for service in services:
        change = service.get("last_change")
        if change:
            ago = _duration(time.time() - float(change["time"]))
            last = f"{ago} ago, {change['kind']}: {change['detail']}"
        else:
            last = "-"
        if service.get("moving"):
            last += f" (moving {service['moving']})"
        if service.get("failure"):
            last = f"FAILED: {service['failure']}"
        elif service.get("last_error"):
            last += f" (last error: {service['last_error']})"
        print(
            f"{service['name']!s:<12} {service['topology']!s:<11}"
            f" {_yes_no(service['converged']):<9}"
            f" {'paused' if service['failover_paused'] else 'auto':<8}"
            f" {service['epoch']!s:>5}  {last}",
            file=out,
        )


def print_plan(reply: Mapping[str, Any], *, as_json: bool, out: TextIO) -> None:
    """Print a ``plan`` reply."""
    if as_json:
        json.dump(reply, out, indent=2)
        print(file=out)
        return

    plan = reply["plan"]
    who = f"member {reply['member']} of " if reply.get("member") else ""
    print(f"plan of {who}service {reply['service']}:", file=out)
    timeouts = ", ".join(f"{hook} {secs:g}s" for hook, secs in plan["timeouts"].items())
    rows = [
        ("roles", ", ".join(plan["roles"])),
        ("topologies", ", ".join(plan["topologies"])),
        ("behaviours", ", ".join(plan["behaviours"])),
        ("ports", ", ".join(str(port) for port in plan["ports"])),
        ("data paths", ", ".join(plan["data_paths"])),
        ("timeouts", timeouts),
    ]
    for name, value in rows:
        print(f"  {name + ':':<12} {value or '-'}", file=out)


def event_line(event: Mapping[str, Any]) -> str:
    """One timeline event as a line: time, service, member, what, how long."""
    stamp = time.strftime("%H:%M:%S", time.localtime(float(event["time"])))
    fraction = f"{float(event['time']) % 1:.3f}"[1:]
    who = event.get("member") or "-"

    return f"{stamp}{fraction}  {event['service']:<12} {who:<12} {_what(event)}"


def print_events_json(event: Mapping[str, Any], out: TextIO) -> None:
    """One timeline event as one JSON line."""
    print(json.dumps(event, sort_keys=True), file=out, flush=True)


def progress_line(progress: Mapping[str, Any]) -> str:
    """One progress frame of a long operation as a line."""
    event = progress["event"]
    if progress["counted"]:
        total = f" of {progress['steps']}" if progress.get("steps") else ""
        step = f"step {progress['step']}{total}"
    else:
        step = ""
    who = event.get("member") or event["service"]

    return f"[{float(progress['elapsed']):7.2f}s] {step:<12} {who:<12} {_what(event)}"


def summary_line(op: str, result: Mapping[str, Any], elapsed: float) -> str:
    """The line that ends a long operation."""
    took = f"done in {elapsed:.1f} s"
    if op == "down":
        removed = ", ".join(result["removed"]) or "no containers"
        return f"{took}: service {result['service']} removed ({removed})"

    replicas = [m["id"] for m in result["members"] if m["role"] == "replica"]
    shape = f"{result['name']} is {result['topology']}"
    if op == "move":
        shape += f" on engine {result.get('engine', 'default')}"
    primary = f", primary {result['primary']}" if result.get("primary") else ""
    followers = f", replicas {', '.join(replicas)}" if replicas else ""

    return f"{took}: {shape}{primary}{followers}"


def _what(event: Mapping[str, Any]) -> str:
    duration = event.get("duration")
    took = "" if duration is None else f" ({float(duration) * 1000:.0f} ms)"

    return f"{event['kind']}: {event['detail']}{took}"


def _yes_no(value: object) -> str:
    if value is None:
        return "-"

    return "yes" if value else "no"


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"

    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"

    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
