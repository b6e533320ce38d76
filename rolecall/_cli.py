"""The ``rolecall`` command.

Exit codes:
    0  success
    1  the operation failed (a check, a hook, the engine refused)
    2  the command line was wrong
    3  no Docker engine answered
    130  interrupted (Ctrl-C)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TextIO

import anyio

from rolecall.actors import DockerRuntime, open_docker_runtime
from rolecall.hooks_protocol import EngineUnavailableError, RolecallError

from ._inspect import describe_services
from ._logging import LOG_LEVELS, configure_logging
from ._version import __version__

__all__ = ["EXIT_ENGINE", "EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_ENGINE = 3
EXIT_INTERRUPTED = 130

_EPILOG = """\
examples:
  rolecall demo
  rolecall status --json

exit codes: 0 success, 1 operation failed, 2 bad command line,
3 no Docker engine answered, 130 interrupted.
The engine is found through --docker-url, else DOCKER_HOST, else
unix:///var/run/docker.sock.
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rolecall",
        description="A control plane that treats containers as autonomous"
        " actors: images carry hooks, rolecall tells them what to be.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
        default="warning",
        help="lowest level of structured log lines on stderr (default: warning)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="run the Redis demo end to end on the local engine",
        description="Bring Redis up standalone, write keys, convert to"
        " redundant while writing, kill the primary, fail over, convert back"
        " to standalone, and verify every acknowledged key twice. Builds the"
        " example image on first use (about a minute) and removes everything"
        " it created, also when interrupted.",
        epilog="example: rolecall demo --keys 10000",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument(
        "--keys",
        type=_positive,
        default=10_000,
        help="keys written before the conversion (default: 10000)",
    )
    demo.add_argument(
        "--replicas",
        type=_positive,
        default=1,
        help="replicas in the redundant topology (default: 1)",
    )

    status = commands.add_parser(
        "status",
        help="show the services rolecall runs: members, roles, addresses",
        description="Ask every container rolecall manages on the engine for"
        " its status (through its `status` hook) and show services, members,"
        " roles and addresses.",
        epilog="example: rolecall status --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    status.add_argument("--json", action="store_true", help="print JSON")

    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a whole number, got {text!r}"
        ) from None

    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 1 or more, got {value}")

    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE

    _check_engine_url(parser, args.docker_url)
    configure_logging(args.log_level)
    try:
        return anyio.run(_dispatch, args)
    except BaseException as error:  # noqa: BLE001  (every outcome gets an exit code)
        return _report(error)


def _check_engine_url(parser: argparse.ArgumentParser, url: str | None) -> None:
    """Refuse a malformed engine address (flag or DOCKER_HOST) as a usage error.

    Building a runtime checks the address's form only; it connects on first
    use, so nothing is opened here.
    """
    try:
        DockerRuntime(url)
    except ValueError as error:
        source = "--docker-url" if url else "DOCKER_HOST"
        parser.error(f"{source}: {error}")


def _report(error: BaseException) -> int:
    """Print one line for an error that ended the command; pick its code.

    Errors raised inside task groups arrive wrapped in exception groups; the
    first leaf that rolecall knows decides. Anything else is a bug and
    keeps its traceback.
    """
    leaf = _first_leaf(error)
    if isinstance(leaf, KeyboardInterrupt):
        print("rolecall: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED

    if isinstance(leaf, EngineUnavailableError):
        print(f"rolecall: {leaf}", file=sys.stderr)
        return EXIT_ENGINE

    if isinstance(leaf, RolecallError):
        print(f"rolecall: {leaf}", file=sys.stderr)
        return EXIT_FAILED

    raise error


def _first_leaf(error: BaseException) -> BaseException:
    known = (KeyboardInterrupt, RolecallError)
    while isinstance(error, BaseExceptionGroup):
        matches = [e for e in error.exceptions if _contains(e, known)]
        error = matches[0] if matches else error.exceptions[0]

    return error


def _contains(error: BaseException, kinds: tuple[type[BaseException], ...]) -> bool:
    if isinstance(error, BaseExceptionGroup):
        return error.subgroup(kinds) is not None

    return isinstance(error, kinds)


async def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "demo":
        # Imported here: the demo needs the `demo` extra (redis), which the
        # other commands do not.
        from ._demo import run_demo  # noqa: PLC0415

        await run_demo(
            keys=args.keys, replicas=args.replicas, docker_url=args.docker_url
        )
        return EXIT_OK

    if args.command == "status":
        async with open_docker_runtime(args.docker_url) as runtime:
            services = await describe_services(runtime)
        _print_status(services, as_json=args.json, out=sys.stdout)
        return EXIT_OK

    raise AssertionError(f"unhandled command {args.command!r}")  # argparse checks


def _print_status(
    services: list[dict[str, object]], *, as_json: bool, out: TextIO
) -> None:
    if as_json:
        json.dump(services, out, indent=2)
        print(file=out)
        return

    if not services:
        print("no services", file=out)
        return

    header = f"{'SERVICE':<12} {'MEMBER':<12} {'ROLE':<11} {'STATE':<9}"
    header += f" {'HEALTHY':<8} {'EPOCH':>5} {'OFFSET':>10}  PUBLISHED"
    print(header, file=out)
    for service in services:
        members = service["members"]
        assert isinstance(members, list)  # noqa: S101  (built by describe_services)
        for member in members:
            print(
                f"{service['name']!s:<12} {member['id']!s:<12}"
                f" {member['role'] or '-'!s:<11} {member['state']!s:<9}"
                f" {_yes_no(member['healthy']):<8} {member['epoch']!s:>5}"
                f" {member['offset']!s:>10}  {member['published'] or '-'}",
                file=out,
            )


def _yes_no(value: object) -> str:
    if value is None:
        return "-"

    return "yes" if value else "no"


if __name__ == "__main__":
    sys.exit(main())
