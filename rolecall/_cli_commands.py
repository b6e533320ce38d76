"""The CLI commands that run or talk to a runner.

Each takes the parsed arguments and returns the exit code; errors are
raised and turned into one line by ``_cli``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import time
from contextlib import aclosing
from pathlib import Path
from typing import Any

import anyio

from rolecall.actors import open_docker_runtime
from rolecall.hooks_protocol import SpecError, StateError
from rolecall.supervisor import JOURNAL_DIR, Journal, stored_id

from ._cli_render import (
    event_line,
    print_events_json,
    print_plan,
    print_status,
    progress_line,
    summary_line,
)
from ._control_client import open_control_client
from ._errors import ControlError, RunnerUnavailableError
from ._inspect import describe_services, remove_service
from ._logging import Redactor
from ._run_command import TAKE_OVER_ALL, run_runner
from ._runner import HISTORY
from ._state_dir import SOCKET_NAME, default_state_dir

__all__ = ["EXIT_INTERRUPTED", "EXIT_OK", "run_command"]

EXIT_OK = 0
EXIT_INTERRUPTED = 130

_LONG = {
    "convert": "conversion",
    "switchover": "switchover",
    "move": "move",
    "down": "removal",
}


async def run_command(args: argparse.Namespace, *, redactor: Redactor) -> int:
    """Run one of the runner's commands; returns the exit code."""
    command: str = args.command
    if command == "run":
        await run_runner(
            Path(args.spec),
            state_dir=default_state_dir(args.state_dir),
            docker_url=args.docker_url,
            probe_interval=args.probe_interval,
            redactor=redactor,
            take_over=TAKE_OVER_ALL if args.take_over_all else set(args.take_over),
        )
        return EXIT_OK

    if command == "status":
        return await _status(args)

    if command == "down" and not await _runner_answers(_socket(args)):
        return await _down_without_runner(args)

    if command in _LONG:
        return await _long_operation(args)

    if command == "events":
        return await _events(args)

    async with open_control_client(_socket(args)) as client:
        reply = await client.request(command, service=args.service, **_extra(args))
    if command == "plan":
        print_plan(reply, as_json=args.json, out=sys.stdout)
    elif command == "pause":
        _say(
            f"automatic failover of {args.service} paused: a lost primary is"
            " fenced but no replica promoted, until"
            f" `rolecall resume {args.service}`"
        )
    else:
        _say(f"automatic failover of {args.service} resumed")

    return EXIT_OK


async def _runner_answers(socket: Path) -> bool:
    """Whether a runner answers on the socket (a killed one leaves its file)."""
    if not await anyio.Path(socket).exists():
        return False

    try:
        async with open_control_client(socket):
            return True
    except RunnerUnavailableError:
        return False


async def _status(args: argparse.Namespace) -> int:
    socket = _socket(args)
    if socket.exists():
        try:
            async with open_control_client(socket) as client:
                reply = await client.request("status")
        except RunnerUnavailableError:
            pass  # a socket left by a runner that died: the engine's view
        else:
            print_status(
                reply["services"],
                runner=reply["runner"],
                as_json=args.json,
                out=sys.stdout,
            )
            return EXIT_OK

    async with open_docker_runtime(args.docker_url) as runtime:
        services = await describe_services(runtime)
    print_status(services, runner=None, as_json=args.json, out=sys.stdout)

    return EXIT_OK


async def _long_operation(args: argparse.Namespace) -> int:
    """Convert, switchover or down: progress lines, then a summary.

    Ctrl-C ends the command, not the operation: the runner carries on.
    """
    op: str = args.command
    request: dict[str, Any] = {"service": args.service, **_extra(args)}
    started = time.monotonic()
    interrupted = False
    async with open_control_client(_socket(args)) as client:
        with anyio.open_signal_receiver(signal.SIGINT) as signals:
            async with anyio.create_task_group() as group:

                async def on_interrupt() -> None:
                    nonlocal interrupted
                    async for _ in signals:
                        interrupted = True
                        group.cancel_scope.cancel()

                group.start_soon(on_interrupt)
                titled = False
                async with aclosing(client.stream(op, **request)) as frames:
                    async for kind, data in frames:
                        # Once the runner took the request: a refusal (an
                        # unknown service) is the one line printed.
                        if not titled:
                            _say(_title(op, args))
                            titled = True
                        if kind == "progress":
                            _say(progress_line(data))
                        elif kind == "result":
                            elapsed = time.monotonic() - started
                            _say(summary_line(op, data, elapsed))
                group.cancel_scope.cancel()

    if not interrupted:
        return EXIT_OK

    # The commands to run next name the same runner as this one did.
    where = f" --state-dir {shlex.quote(str(args.state_dir))}" if args.state_dir else ""
    _say(
        f"rolecall: interrupted; the runner goes on with the {_LONG[op]} of"
        f" {args.service}: follow it with `rolecall events --follow{where}`,"
        f" check it with `rolecall status{where}`",
        err=True,
    )
    return EXIT_INTERRUPTED


async def _down_without_runner(args: argparse.Namespace) -> int:
    _say(
        f"no runner answers at {str(_socket(args))!r}; removing what the"
        f" engine holds of service {args.service}",
    )
    started = time.monotonic()
    state_dir = default_state_dir(args.state_dir)
    async with open_docker_runtime(args.docker_url) as runtime:
        removed = await remove_service(
            runtime,
            args.service,
            owner=stored_id(state_dir),
            take_over=args.take_over,
        )
    if not removed:
        raise SpecError(
            f"the engine at {_engine_address(args)} holds no container of a"
            f" service named {args.service!r}; nothing was removed. If it runs"
            " on another engine, start the runner with the spec file that"
            f" names that engine and run `rolecall down {args.service}`"
            " through it",
            service=args.service,
        )

    _forget_journaled(state_dir, args.service)

    result = {"service": args.service, "removed": removed}
    _say(summary_line("down", result, time.monotonic() - started))

    return EXIT_OK


def _forget_journaled(state_dir: Path, service: str) -> None:
    """Drop a removed service's journal record, so that a later runner
    starts it afresh rather than resuming a conversion of the old one."""
    if not (state_dir / JOURNAL_DIR / service).is_dir():
        return

    try:
        journal = Journal.open(state_dir)
    except StateError as error:
        _say(f"the journal record of {service} stays: {error}")
        return

    try:
        journal.delete(service)
    finally:
        journal.close()


async def _events(args: argparse.Namespace) -> int:
    """Print recent events; with --follow, new ones until Ctrl-C (exit 0)."""
    async with open_control_client(_socket(args)) as client:
        with anyio.open_signal_receiver(signal.SIGINT) as signals:
            async with anyio.create_task_group() as group:

                async def on_interrupt() -> None:
                    async for _ in signals:
                        group.cancel_scope.cancel()

                group.start_soon(on_interrupt)
                frames = client.stream(
                    "events",
                    follow=args.follow,
                    service=args.service,
                    backlog=min(args.last, HISTORY),
                )
                try:
                    async with aclosing(frames):
                        async for kind, data in frames:
                            if kind != "event":
                                continue
                            if args.json:
                                print_events_json(data, sys.stdout)
                            else:
                                _say(event_line(data))
                except ControlError as error:
                    # A runner that stops (SIGTERM, Ctrl-C) closes every
                    # stream: for a follower that is the end, not a failure.
                    if not (args.follow and error.code == "connection_lost"):
                        raise
                    _say("rolecall: the runner stopped; no more events", err=True)
                group.cancel_scope.cancel()

    return EXIT_OK


def _title(op: str, args: argparse.Namespace) -> str:
    if op == "convert":
        replicas = f" with {args.replicas} replica(s)" if args.replicas else ""
        return f"converting {args.service} to {args.topology}{replicas}"

    if op == "switchover":
        return f"switching {args.service} over to {args.member}"

    if op == "move":
        way = f" by {args.way}" if args.way else ""
        return f"moving {args.service} to engine {args.engine}{way}"

    return f"removing {args.service}: containers, data volumes, network"


def _extra(args: argparse.Namespace) -> dict[str, Any]:
    """The request's arguments besides ``service``, by command."""
    command = args.command
    if command == "convert":
        return {
            "topology": args.topology,
            "replicas": args.replicas,
            "timeout": args.timeout,
        }

    if command == "switchover":
        return {"member": args.member, "timeout": args.timeout}

    if command == "move":
        return {"engine": args.engine, "way": args.way, "timeout": args.timeout}

    if command == "down":
        # Sent only when set, so a runner that predates it still answers.
        return {"confirm": args.service} | (
            {"take_over": True} if args.take_over else {}
        )

    if command == "plan":
        return {"member": args.member}

    return {}


def _say(text: str, *, err: bool = False) -> None:
    """Write one line for the user, at once (progress must not wait)."""
    out = sys.stderr if err else sys.stdout
    out.write(f"{text}\n")
    out.flush()


def _socket(args: argparse.Namespace) -> Path:
    return default_state_dir(args.state_dir) / SOCKET_NAME


def _engine_address(args: argparse.Namespace) -> str:
    return str(args.docker_url or os.environ.get("DOCKER_HOST") or "the local socket")
