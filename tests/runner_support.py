"""Helpers for tests that run ``rolecall run`` as a child process.

`open_runner_process` starts the runner on a spec file with a state
directory under the test's tmp_path, reads its JSON log lines as they come,
and ends it (SIGTERM, then SIGKILL) by its own pid when the test is done.
`rolecall` runs any other command the way a user would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import Process
from anyio.streams.text import TextReceiveStream
from attrs import define, field

ROLECALL = Path(sys.executable).with_name("rolecall")
LIMIT = 120  # seconds for anything a runner does in these tests


@define(eq=False)
class RunnerProcess:
    """A runner child process and the log lines it wrote so far."""

    process: Process
    state_dir: Path
    # Every JSON log line read from its stderr, in order.
    lines: list[dict[str, Any]] = field(factory=list)
    # Its stderr as text, for checks on everything it wrote.
    text: list[str] = field(factory=list)
    # Set (and replaced) whenever a line arrives or stderr ends.
    _changed: anyio.Event = field(factory=anyio.Event)
    # Whether stderr has ended.
    _ended: bool = False

    @property
    def pid(self) -> int:
        """The runner's process id."""
        return self.process.pid

    async def wait_for(
        self,
        event: str,
        *,
        after: int = 0,
        timeout: float = LIMIT,
        **fields: object,
    ) -> dict[str, Any]:
        """The first log line from index ``after`` on with this event name
        and these field values; fails when the runner exits first."""
        with anyio.fail_after(timeout):
            seen = after
            while True:
                for line in self.lines[seen:]:
                    if line.get("event") == event and _has(line, fields):
                        return line
                seen = len(self.lines)
                if self._ended:
                    raise AssertionError(
                        f"the runner ended before logging {event!r} {fields}:"
                        f" {''.join(self.text)[-2000:]}"
                    )
                await self._changed.wait()

    async def read_stderr(self) -> None:
        """Collect stderr lines until it ends."""
        assert self.process.stderr is not None
        pending = ""
        async for chunk in TextReceiveStream(self.process.stderr):
            self.text.append(chunk)
            pending += chunk
            *complete, pending = pending.split("\n")
            for raw in complete:
                if raw.startswith("{"):
                    self.lines.append(json.loads(raw))
            self._wake()

        self._ended = True
        self._wake()

    def signal(self, number: signal.Signals) -> None:
        """Send a signal to this runner (by its own pid)."""
        self.process.send_signal(number)

    async def wait_exit(self, timeout: float = LIMIT) -> int:
        """Wait for the runner to exit; its exit code."""
        with anyio.fail_after(timeout):
            return await self.process.wait()

    def _wake(self) -> None:
        woken, self._changed = self._changed, anyio.Event()
        woken.set()


@asynccontextmanager
async def open_runner_process(
    spec: Path,
    state_dir: Path,
    *extra: str,
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[RunnerProcess]:
    """Start ``rolecall run SPEC`` and yield it once it logs runner_started.

    ``env`` adds variables to the runner's environment.
    """
    command = [
        str(ROLECALL),
        "--log-level",
        "info",
        "run",
        str(spec),
        "--state-dir",
        str(state_dir),
        "--probe-interval",
        "0.5",
        *extra,
    ]
    async with (
        await anyio.open_process(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        ) as process,
        anyio.create_task_group() as group,
    ):
        runner = RunnerProcess(process, state_dir)
        group.start_soon(runner.read_stderr)
        try:
            await runner.wait_for("runner_started")
            yield runner
        finally:
            with anyio.CancelScope(shield=True):
                await _end(process)
            group.cancel_scope.cancel()


async def _end(process: Process) -> None:
    if process.returncode is not None:
        return

    process.send_signal(signal.SIGTERM)
    with anyio.move_on_after(30):
        await process.wait()
        return

    process.kill()
    await process.wait()


async def rolecall(
    *args: str, stdin: bytes | None = None, timeout: float = LIMIT
) -> subprocess.CompletedProcess[str]:
    """Run ``rolecall ARGS`` to its end, as a user at a shell would."""
    with anyio.fail_after(timeout):
        done = await anyio.run_process([str(ROLECALL), *args], input=stdin, check=False)

    return subprocess.CompletedProcess(
        done.args,
        done.returncode,
        done.stdout.decode(),
        done.stderr.decode(),
    )


def spec_text(
    service: str,
    image: str,
    labels: Mapping[str, str],
    *,
    topology: str = "standalone",
    secret: str | None = None,
    example: bool = False,
) -> str:
    """A spec file with one service carrying ``labels``."""
    source = 'example = "redis"' if example else f"image = {json.dumps(image)}"
    lines = [
        f"[services.{service}]",
        source,
        f'topology = "{topology}"',
    ]
    if secret is not None:
        lines += [
            'secret = ["REDIS_PASSWORD"]',
            f"env = {{ REDIS_PASSWORD = {json.dumps(secret)} }}",
        ]
    pairs = ", ".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in labels.items())
    lines.append(f"labels = {{ {pairs} }}")

    return "\n".join(lines) + "\n"


def _has(line: Mapping[str, Any], fields: Mapping[str, object]) -> bool:
    return all(line.get(key) == value for key, value in fields.items())
