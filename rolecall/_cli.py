"""The ``rolecall`` command.

Exit codes:
    0  success
    1  the operation failed (a check, a hook, the engine or runner refused)
    2  the command line was wrong
    3  no Docker engine answered
    4  no runner answered (for the commands that need one)
    130  interrupted (Ctrl-C)
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import anyio

from rolecall.actors import DockerRuntime
from rolecall.hooks_protocol import EngineUnavailableError, RolecallError

from ._cli_commands import EXIT_INTERRUPTED, EXIT_OK, run_command
from ._cli_parser import build_parser
from ._errors import RunnerUnavailableError
from ._logging import Redactor, configure_logging

__all__ = [
    "EXIT_ENGINE",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_NO_RUNNER",
    "EXIT_OK",
    "EXIT_USAGE",
    "main",
]

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_ENGINE = 3
EXIT_NO_RUNNER = 4


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE

    _check_engine_url(parser, args.docker_url)
    if args.command == "run":
        # The runner reads the file again on SIGHUP and shows its path.
        args.spec = str(Path(args.spec).absolute())

    redactor = Redactor()
    level = args.log_level or ("info" if args.command == "run" else "warning")
    configure_logging(level, redactor=redactor)
    if args.command == "down" and not args.yes and not _confirmed(args.service):
        print("rolecall: not confirmed; nothing was removed", file=sys.stderr)
        return EXIT_FAILED

    try:
        return anyio.run(_dispatch, args, redactor)
    except BaseException as error:  # noqa: BLE001  (every outcome gets an exit code)
        return _report(error, redactor)


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


def _confirmed(service: str) -> bool:
    """Ask on the terminal (or read stdin) for the service's name."""
    print(
        f"This removes service {service!r}: its containers, their data"
        " volumes and its network.\nType the service's name to confirm: ",
        end="",
        file=sys.stderr,
        flush=True,
    )
    answer = sys.stdin.readline().strip()

    return answer == service


def _report(error: BaseException, redactor: Redactor) -> int:
    """Print one line for an error that ended the command; pick its code.

    Errors raised inside task groups arrive wrapped in exception groups; the
    first leaf that rolecall knows decides. Anything else is a bug and
    keeps its traceback. Secret values of the spec file are masked.
    """
    leaf = _first_leaf(error)
    if isinstance(leaf, KeyboardInterrupt):
        print("rolecall: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED

    if isinstance(leaf, BrokenPipeError):
        # The reader of stdout left (`rolecall status | head`): say nothing
        # more, and keep Python from failing to flush stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED

    if not isinstance(leaf, RolecallError):
        raise error

    print(f"rolecall: {redactor.mask(str(leaf))}", file=sys.stderr)
    if isinstance(leaf, EngineUnavailableError):
        return EXIT_ENGINE

    if isinstance(leaf, RunnerUnavailableError):
        return EXIT_NO_RUNNER

    return EXIT_FAILED


def _first_leaf(error: BaseException) -> BaseException:
    known = (KeyboardInterrupt, RolecallError, BrokenPipeError)
    while isinstance(error, BaseExceptionGroup):
        matches = [e for e in error.exceptions if _contains(e, known)]
        error = matches[0] if matches else error.exceptions[0]

    return error


def _contains(error: BaseException, kinds: tuple[type[BaseException], ...]) -> bool:
    if isinstance(error, BaseExceptionGroup):
        return error.subgroup(kinds) is not None

    return isinstance(error, kinds)


async def _dispatch(args: argparse.Namespace, redactor: Redactor) -> int:
    if args.command == "demo":
        return await _demo(args)

    return await run_command(args, redactor=redactor)


async def _demo(args: argparse.Namespace) -> int:
    # Imported here: the demos need the `demo` extra (a Redis or PostgreSQL
    # client), which the other commands do not.
    if args.service == "postgres":
        from ._demo_postgres import run_postgres_demo  # noqa: PLC0415

        await run_postgres_demo(
            rows=args.keys,
            replicas=args.replicas,
            service=args.name or "db",
            docker_url=args.docker_url,
        )
        return EXIT_OK

    from ._demo import run_demo  # noqa: PLC0415

    await run_demo(
        keys=args.keys,
        replicas=args.replicas,
        service=args.name or "cache",
        docker_url=args.docker_url,
    )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
