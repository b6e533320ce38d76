"""The ``rolecall`` command line: commands, options, help and examples."""

from __future__ import annotations

import argparse

from rolecall.hooks_protocol import Topology

from ._logging import LOG_LEVELS
from ._version import __version__

__all__ = ["DEMO_SERVICES", "build_parser"]

DEMO_SERVICES = ("redis", "postgres")

_EPILOG = """\
examples:
  rolecall demo
  rolecall run examples/cache.toml
  rolecall status
  rolecall convert cache redundant
  rolecall switchover cache cache-2

exit codes: 0 success, 1 operation failed, 2 bad command line,
3 no Docker engine answered, 4 no runner answered (commands that need one),
130 interrupted.
The engine is found through --docker-url, else DOCKER_HOST, else
unix:///var/run/docker.sock. The runner's state directory (its control
socket) through --state-dir, else ROLECALL_STATE_DIR, else /var/lib/rolecall
for root and $XDG_STATE_HOME/rolecall (~/.local/state/rolecall) for others.
"""

_FORMATTER = argparse.RawDescriptionHelpFormatter


def build_parser() -> argparse.ArgumentParser:
    """The parser of the whole command line."""
    parser = argparse.ArgumentParser(
        prog="rolecall",
        description="A control plane that treats containers as autonomous"
        " actors: images carry hooks, rolecall tells them what to be.",
        epilog=_EPILOG,
        formatter_class=_FORMATTER,
    )
    parser.add_argument(
        "--version", action="version", version=f"rolecall {__version__}"
    )
    parser.add_argument(
        "--docker-url",
        metavar="URL",
        help="Docker engine to use (unix:///path or tcp://host:port)",
    )
    parser.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default=None,
        help="lowest level of structured log lines on stderr (default: info"
        " for `run`, warning for the other commands)",
    )
    parser.add_argument(
        "--state-dir",
        metavar="DIR",
        help="the runner's state directory (also accepted after the command)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_demo(commands)
    _add_run(commands)
    _add_status(commands)
    _add_operations(commands)

    return parser


def _state_dir(command: argparse.ArgumentParser) -> None:
    # SUPPRESS: when not given after the command, the global option stands.
    command.add_argument(
        "--state-dir",
        metavar="DIR",
        default=argparse.SUPPRESS,
        help="the runner's state directory (default: see `rolecall --help`)",
    )


def _add_demo(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser(
        "demo",
        help="run a demo end to end on the local engine",
        description="Bring Redis (or PostgreSQL) up standalone, write keys,"
        " convert to redundant while writing, kill the primary, fail over,"
        " convert back to standalone, and verify every acknowledged key"
        " twice. Builds the example image on first use (about a minute) and"
        " removes everything it created, also when interrupted.",
        epilog="example: rolecall demo --keys 10000",
        formatter_class=_FORMATTER,
    )
    demo.add_argument(
        "service",
        nargs="?",
        choices=DEMO_SERVICES,
        default="redis",
        help="which example service to run (default: redis)",
    )
    demo.add_argument(
        "--keys",
        type=_positive,
        default=10_000,
        help="keys (rows, for postgres) written before the conversion (default: 10000)",
    )
    demo.add_argument(
        "--replicas",
        type=_positive,
        default=1,
        help="replicas in the redundant topology (default: 1)",
    )
    demo.add_argument(
        "--name",
        help="the demo service's name (default: cache for redis, db for"
        " postgres); a second demo on the same engine needs another name",
    )


def _add_run(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = commands.add_parser(
        "run",
        help="run the control plane for the services of a spec file",
        description="Start the services a spec file (TOML) names, keep them"
        " as the file says, and answer the other commands on a control socket"
        " in the state directory. SIGTERM or Ctrl-C stops the control plane"
        " and leaves the containers running; SIGHUP reads the file again (a"
        " file with errors is rejected and the running state kept). Logs go"
        " to stderr: key=value on a terminal, JSON lines otherwise."
        " The schema is in docs/control-api.md. A service another control"
        " plane (another state directory) claimed on the engine is left to"
        " it and shown as failed, with who holds it; --take-over moves the"
        " claim here once that one is gone.",
        epilog="example: rolecall run examples/cache.toml --log-level info",
        formatter_class=_FORMATTER,
    )
    run.add_argument("spec", metavar="SPEC", help="the spec file (TOML)")
    _state_dir(run)
    run.add_argument(
        "--probe-interval",
        type=_seconds,
        default=2.0,
        metavar="SECONDS",
        help="seconds between health passes of each service (default: 2)",
    )
    run.add_argument(
        "--take-over",
        action="append",
        default=[],
        metavar="SERVICE",
        help="take SERVICE over from another control plane that claimed it"
        " and is gone for good (repeatable); never for one that still runs",
    )
    run.add_argument(
        "--take-over-all",
        action="store_true",
        help="take over every service of the spec file that another control"
        " plane claimed",
    )
    run.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default=argparse.SUPPRESS,
        help="as the global option",
    )


def _add_status(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    status = commands.add_parser(
        "status",
        help="show services, members, roles and addresses",
        description="With a runner: its view of every service (topology,"
        " members, roles, epochs, health, failover, last change). Without"
        " one: every container rolecall manages on the engine, asked through"
        " its `status` hook.",
        epilog="example: rolecall status --json",
        formatter_class=_FORMATTER,
    )
    status.add_argument("--json", action="store_true", help="print JSON")
    _state_dir(status)


def _add_operations(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    convert = _operation(
        commands,
        "convert",
        "change a service's topology and wait until it has converged",
        "Ask the runner to convert SERVICE to TOPOLOGY (standalone or"
        " redundant) and show each step until it has converged. Ctrl-C"
        " leaves the conversion to the runner.",
        "rolecall convert cache redundant --replicas 2",
    )
    convert.add_argument(
        "topology", metavar="TOPOLOGY", choices=[t.value for t in Topology]
    )
    convert.add_argument("--replicas", type=_positive, help="replicas (redundant)")
    convert.add_argument(
        "--timeout",
        type=_seconds,
        default=300.0,
        metavar="S",
        help="seconds to wait for convergence before giving up watching"
        " (exit 1); the runner carries on (default: %(default)g)",
    )

    switchover = _operation(
        commands,
        "switchover",
        "make a member the primary, gracefully",
        "Ask the runner to hand SERVICE's writes to MEMBER: writes stop on"
        " the old primary, MEMBER catches up with every acknowledged write,"
        " then takes over and the others follow it. Ctrl-C leaves the"
        " switchover to the runner.",
        "rolecall switchover cache cache-2",
    )
    switchover.add_argument("member", metavar="MEMBER")
    switchover.add_argument(
        "--timeout",
        type=_seconds,
        default=60.0,
        metavar="S",
        help="seconds to wait for the switchover to finish before giving up"
        " watching (exit 1); the runner carries on (default: %(default)g)",
    )

    move = _operation(
        commands,
        "move",
        "move a service to another engine, with its data",
        "Ask the runner to move SERVICE to ENGINE (an [engines.NAME] table of"
        " the spec file): members made there catch up with the writer, writes"
        " are handed to one of them without losing any, then the old members"
        " are removed with their volumes. A move that has not caught up when"
        " --timeout runs out is undone; one past its switch goes on. Ctrl-C"
        " leaves the move to the runner.",
        "rolecall move cache dc2",
    )
    move.add_argument("engine", metavar="ENGINE")
    move.add_argument(
        "--way",
        choices=["replication", "export"],
        help="how the data moves (default: the first the image's plan offers)",
    )
    move.add_argument(
        "--timeout",
        type=_seconds,
        default=600.0,
        metavar="S",
        help="seconds to wait for the move to finish before giving up watching"
        " (exit 1; a move still catching up is undone) (default: %(default)g)",
    )

    _operation(
        commands,
        "pause",
        "pause automatic failover of a service",
        "While paused, a lost primary is fenced but no replica is promoted;"
        " `rolecall resume` allows it again.",
        "rolecall pause cache",
    )
    _operation(
        commands,
        "resume",
        "resume automatic failover of a service",
        "Allow the runner to promote a replica of SERVICE again.",
        "rolecall resume cache",
    )

    plan = _operation(
        commands,
        "plan",
        "show what a service's image can do (its plan)",
        "Show the plan the image's `plan` hook declared: roles, topologies,"
        " behaviours, ports, data paths and hook timeouts. Every member of a"
        " service runs the same image, so they share it.",
        "rolecall plan cache --member cache-1",
    )
    plan.add_argument("--member", help="a member of the service, checked to exist")
    plan.add_argument("--json", action="store_true", help="print JSON")

    down = _operation(
        commands,
        "down",
        "tear a service down: containers, data volumes, network",
        "Remove SERVICE's containers, their data volumes and its network,"
        " after asking to type the service's name. With no runner, removes"
        " what the engine holds of the service. A service still in the spec"
        " file comes back when the runner starts again.",
        "rolecall down cache",
    )
    down.add_argument("--yes", action="store_true", help="do not ask; remove at once")
    down.add_argument(
        "--take-over",
        action="store_true",
        help="remove it even though another control plane claims it (one"
        " that is gone for good)",
    )

    events = commands.add_parser(
        "events",
        help="show the runner's timeline of events",
        description="Print the runner's recent timeline events (what it"
        " told which member, and how long it took); with --follow, keep"
        " printing new ones until Ctrl-C.",
        epilog="example: rolecall events --follow",
        formatter_class=_FORMATTER,
    )
    events.add_argument("--follow", "-f", action="store_true", help="keep following")
    events.add_argument("--service", help="only this service's events")
    events.add_argument(
        "--last",
        type=_count,
        default=20,
        metavar="N",
        help="recent events shown first (default: 20; 0 for none)",
    )
    events.add_argument("--json", action="store_true", help="print JSON lines")
    _state_dir(events)


def _operation(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    summary: str,
    description: str,
    example: str,
) -> argparse.ArgumentParser:
    command = commands.add_parser(
        name,
        help=summary,
        description=description,
        epilog=f"example: {example}",
        formatter_class=_FORMATTER,
    )
    command.add_argument("service", metavar="SERVICE")
    _state_dir(command)

    return command


def _positive(text: str) -> int:
    value = _count(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 1 or more, got {value}")

    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a whole number, got {text!r}"
        ) from None

    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {value}")

    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number of seconds, got {text!r}"
        ) from None

    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(
            f"expected more than 0 and at most 3600 seconds, got {text}"
        )

    return value
