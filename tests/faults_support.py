"""A Redis image whose hooks misbehave on request, for the fault tests.

``fault_image`` builds, once per recipe, an image ``FROM`` the example Redis
image in which every hook is a wrapper: it reads the payload, looks up
``config["fault"][<member id or "*">][<hook>]`` and misbehaves as told, or
else runs the real hook (kept beside it as ``<hook>.real``) with the same
payload. A fault is a map:

- ``{"exit": N}`` — write a line to stderr and exit N;
- ``{"hang": true}`` — sleep until killed;
- ``{"background": true}`` — leave a child holding stdout, exit 0;
- ``{"flood": MB}`` — write MB MiB to stdout and to stderr, exit 0;
- ``{"zombie": true}`` — fork a child that exits at once and is never
  reaped by the hook, then run the real hook;
- ``{"kill_init": true}`` — stop the container (SIGTERM to its init),
  exit 1;
- ``{"gate": {...}}`` — once per container, when the request holds those
  fields: write ``started`` to the FIFO `GATE_STARTED` (blocking until the
  test reads it), read the FIFO `GATE_GO` (blocking until the test writes
  it), then run the real hook;
- ``{"nosync": true}`` — for ``role`` asking for a replica: record the
  role, point Redis at a port where nothing listens, so the member never
  completes a sync.

The service's config reaches every hook, so a test changes faults by
applying its spec again with another ``fault`` map.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, MutableMapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
import structlog
from attrs import define, field
from docker_support import DockerLab
from structlog.testing import LogCapture

from rolecall.actors import DockerRuntime
from rolecall.supervisor import ServiceEvent, ServiceSpec

LIMIT = 60
"""Seconds any single wait in a fault test may take; far above the need."""

MiB = 1 << 20

GATE_STARTED = "/tmp/rc-gate-started"
GATE_GO = "/tmp/rc-gate-go"

_HOOKS = ("plan", "configure", "start", "stop", "role", "status")

_WRAPPER = """\
#!/usr/bin/python3
import os
import signal
import subprocess
import sys
import time

import msgpack

HOOK = os.environ.get("ROLECALL_HOOK") or os.path.basename(sys.argv[0])
REAL = os.path.join(os.path.dirname(os.path.abspath(sys.argv[0])), HOOK + ".real")


def real(raw):
    sys.stdout.flush()
    done = subprocess.run([REAL], input=raw, check=False)
    sys.exit(done.returncode)


raw = sys.stdin.buffer.read()
payload = msgpack.unpackb(raw, raw=False) if raw else {}
faults = (payload.get("config") or {}).get("fault") or {}
member = (payload.get("member") or {}).get("id")
fault = (faults.get(member) or faults.get("*") or {}).get(HOOK)
if not fault:
    real(raw)

if "exit" in fault:
    sys.stderr.write(f"fault: {HOOK} exits {fault['exit']}\\n")
    sys.exit(fault["exit"])

if fault.get("hang"):
    os.execvp("sleep", ["sleep", "100000"])

if fault.get("background"):
    subprocess.Popen(["sleep", "300"], stdout=sys.stdout)
    sys.exit(0)

if "flood" in fault:
    block = b"x" * (1 << 20)
    for _ in range(fault["flood"]):
        sys.stdout.buffer.write(block)
        sys.stderr.buffer.write(block)
    sys.exit(0)

if fault.get("zombie"):
    if os.fork() == 0:
        os._exit(0)
    real(raw)

if fault.get("kill_init"):
    os.kill(1, signal.SIGTERM)
    # The container ends under the hook; this only keeps it from returning
    # first (nothing in the container can announce its own end).
    time.sleep(30)
    sys.exit(1)

request = payload.get("request") or {}
gate = fault.get("gate")
if gate is not None:
    once = f"/tmp/rc-gated-{HOOK}"
    wanted = all(request.get(k) == v for k, v in gate.items())
    if wanted and not os.path.exists(once):
        open(once, "w").close()
        with open("GATE_STARTED", "w") as started:
            started.write("started\\n")
        with open("GATE_GO") as go:
            go.read()
    real(raw)

if fault.get("nosync") and request.get("role") == "replica":
    sys.path.insert(0, os.path.dirname(REAL))
    import redis_hooklib as lib

    lib.save_state(
        {
            "role": "replica",
            "primary": request.get("primary"),
            "primary_address": "127.0.0.1:1",
            "epoch": request.get("epoch"),
            "synced": False,
        }
    )
    with lib.Client() as client:
        client.call("REPLICAOF", "127.0.0.1", 1)
    reply = {"protocol": 1, "data": {"role": "replica"}, "message": "nosync"}
    sys.stdout.buffer.write(msgpack.packb(reply))
    sys.exit(0)

real(raw)
""".replace("GATE_STARTED", GATE_STARTED).replace("GATE_GO", GATE_GO)

_DOCKERFILE = """\
FROM {base}
LABEL io.rolecall.test.image="faults"
COPY fault /opt/rolecall/hooks/fault
RUN cd /opt/rolecall/hooks && chmod 755 fault \\
 && for h in {hooks}; do mv "$h" "$h.real" && ln -s fault "$h"; done \\
 && mkfifo {started} {go}
"""


def build_fault_image(redis_image: str) -> str:
    """Build (or reuse) the fault image on top of ``redis_image``."""
    dockerfile = _DOCKERFILE.format(
        base=redis_image, hooks=" ".join(_HOOKS), started=GATE_STARTED, go=GATE_GO
    )
    digest = hashlib.sha256(f"{dockerfile}\0{_WRAPPER}".encode()).hexdigest()[:12]
    tag = f"rolecall-test/redis-faults:{digest}"
    found = subprocess.run(
        ["docker", "image", "inspect", tag],
        capture_output=True,
        check=False,
        timeout=60,
    )
    if found.returncode == 0:
        return tag

    with tempfile.TemporaryDirectory() as context:
        Path(context, "Dockerfile").write_text(dockerfile, encoding="utf-8")
        Path(context, "fault").write_text(_WRAPPER, encoding="utf-8")
        built = subprocess.run(
            ["docker", "build", "-q", "-t", tag, context],
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
            env={**os.environ, "DOCKER_BUILDKIT": "0"},
        )
    if built.returncode != 0:
        pytest.fail(f"could not build {tag}: {built.stderr.strip()}")

    return tag


class LogWatch(LogCapture):
    """Captured log entries that a test can wait on, as they come."""

    def __init__(self) -> None:
        super().__init__()
        # Set and replaced on every entry.
        self._added = anyio.Event()

    def __call__(
        self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> Any:
        event_dict["captured_at"] = time.monotonic()
        try:
            return super().__call__(logger, method_name, event_dict)
        finally:
            added, self._added = self._added, anyio.Event()
            added.set()

    def count(self, match: Callable[[MutableMapping[str, Any]], bool]) -> int:
        """How many entries so far ``match``."""
        return sum(1 for entry in self.entries if match(entry))

    async def wait_for(
        self, match: Callable[[MutableMapping[str, Any]], bool], count: int = 1
    ) -> None:
        """Wait until ``count`` entries ``match``."""
        while self.count(match) < count:
            await self._added.wait()


@contextmanager
def watch_logs() -> Iterator[LogWatch]:
    """Capture structlog entries into a `LogWatch` inside the block."""
    watch = LogWatch()
    processors = structlog.get_config()["processors"]
    saved = processors.copy()
    try:
        processors.clear()
        processors.append(watch)
        structlog.configure(processors=processors)
        yield watch
    finally:
        processors.clear()
        processors.extend(saved)
        structlog.configure(processors=processors)


@pytest.fixture(scope="session")
def fault_image(redis_image: str) -> str:
    """The Redis image with hooks that misbehave on request."""
    return build_fault_image(redis_image)


def fault_spec(
    case: DockerLab,
    image: str,
    prefix: str,
    *,
    name: str | None = None,
    **options: Any,
) -> ServiceSpec:
    """A spec for a new service of the test case, named after ``prefix``
    unless ``name`` (from ``case.service``) is given."""
    return ServiceSpec(
        name=name or case.service(prefix), image=image, labels=case.labels, **options
    )


async def events_until(
    events: AsyncIterator[ServiceEvent],
    done: Callable[[ServiceEvent], bool],
    *,
    within: float = LIMIT,
) -> list[ServiceEvent]:
    """Timeline events up to and including the first ``done`` one."""
    seen: list[ServiceEvent] = []
    with anyio.move_on_after(within):
        async for event in events:
            seen.append(event)
            if done(event):
                return seen

        pytest.fail(f"the timeline ended early: {_described(seen)}")

    pytest.fail(f"no awaited event within {within:g}s after: {_described(seen)}")


def _described(events: list[ServiceEvent]) -> list[str]:
    return [f"{e.kind} {e.member}: {e.detail}" for e in events]


async def sh(runtime: DockerRuntime, container: str, script: str) -> str:
    """Run a shell script in a container; its stdout, failing on non-zero."""
    result = await runtime.exec(
        container, ["sh", "-c", script], timeout=LIMIT, max_stdout=MiB, max_stderr=MiB
    )
    assert result.exit_code == 0, result.stderr

    return result.stdout.decode()


@define(eq=False)
class PausingRuntime:
    """A Docker runtime whose containers a test can pause without wedging
    the engine.

    An exec starting in a container that is being frozen leaves its ``runc
    init`` frozen too, and the engine then hangs on every call about that
    container, ``unpause`` included (an engine bug:
    https://github.com/docker/for-linux/issues/891). So `pause` holds new
    execs of rolecall's back, waits for those under way to end, pauses, and
    lets the held ones go on, to meet a paused container as the engine
    means them to (``409``, at once).
    """

    inner: DockerRuntime
    # Containers being paused: their new execs wait.
    _holding: set[str] = field(factory=set)
    # Execs under way, by container id.
    _running: dict[str, int] = field(factory=dict)
    # Set and replaced whenever an exec ends or a hold is lifted.
    _changed: anyio.Event = field(factory=anyio.Event)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def exec(self, container_id: str, argv: Any, **options: Any) -> Any:
        """Run ``argv`` as the inner runtime does, unless a pause holds it."""
        while container_id in self._holding:
            await self._changed.wait()

        self._running[container_id] = self._running.get(container_id, 0) + 1
        try:
            return await self.inner.exec(container_id, argv, **options)
        finally:
            self._running[container_id] -= 1
            self._notify()

    async def pause(self, container_id: str) -> None:
        """Freeze a container once no exec is starting or running in it."""
        self._holding.add(container_id)
        try:
            while self._running.get(container_id, 0):
                await self._changed.wait()

            await docker_cli("pause", container_id)
        finally:
            self._holding.discard(container_id)
            self._notify()

    async def unpause(self, container_id: str) -> bool:
        """Thaw a container; ``False`` when it is not paused (any more)."""
        return await docker_cli("unpause", container_id, check=False)

    def _notify(self) -> None:
        changed, self._changed = self._changed, anyio.Event()
        changed.set()


async def docker_cli(*args: str, check: bool = True) -> bool:
    """Run the docker CLI in a worker thread, so the event loop runs on.

    Returns:
        Whether it succeeded; with ``check``, a failure fails the test.
    """

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["docker", *args], capture_output=True, text=True, check=False, timeout=60
        )

    done = await anyio.to_thread.run_sync(run)
    assert done.returncode == 0 or not check, done.stderr

    return done.returncode == 0
