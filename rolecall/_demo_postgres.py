"""The main job with PostgreSQL, end to end on a real engine.

The same supervisor that runs the Redis demo runs the PostgreSQL image:
`db` comes up standalone, takes rows, becomes redundant while a client keeps
committing, loses its primary to ``docker kill``, fails over, and goes back
to standalone; every acknowledged row is read back twice. The service runs
with synchronous durability: once a replica exists, a commit returns only
after a replica has replayed it, so a commit the client saw return is a
commit the failover keeps.
"""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TextIO

import anyio
import psycopg
from attrs import define, field

from rolecall.actors import ContainerRuntime, open_docker_runtime
from rolecall.supervisor import (
    ServiceEvent,
    ServiceSpec,
    Supervisor,
    open_supervisor,
)

from ._demo import DEMO_LABEL, DemoFailedError, remove_demo_objects
from ._images import ensure_image

__all__ = ["run_postgres_demo"]

_SERVICE = "db"
_STEPS = 6
_FAILOVER_WAIT = 120
_BATCH = 500
_COMMIT_TIMEOUT = 15.0


@define
class _Timeline:
    """Prints what happens, with the time since the demo started."""

    out: TextIO
    started: float = field(factory=time.monotonic)

    def say(self, text: str) -> None:
        elapsed = time.monotonic() - self.started
        self.out.write(f"[{elapsed:7.2f}s] {text}\n")
        self.out.flush()

    def step(self, number: int, text: str) -> None:
        self.out.write("\n")
        self.say(f"step {number}/{_STEPS}: {text}")

    def event(self, event: ServiceEvent) -> None:
        took = "" if event.duration is None else f" ({event.duration * 1000:.0f} ms)"
        who = event.member or event.service
        self.say(f"  rolecall -> {who:<9} {event.kind}: {event.detail}{took}")


# -- the client ---------------------------------------------------------------


async def _connect(address: str) -> psycopg.AsyncConnection[Any]:
    host, port = address.rsplit(":", 1)
    return await psycopg.AsyncConnection.connect(
        host=host,
        port=int(port),
        user="postgres",
        dbname="postgres",
        connect_timeout=5,
        autocommit=True,
    )


@define
class _RowWriter:
    """Commits one row at a time into whichever member takes writes.

    A row counts once its commit returned. Once stopped,
    ``attempted == len(acked) + unconfirmed`` (the seed batches aside).
    """

    find_primary: Callable[[], str | None]
    # Rows whose commit returned.
    acked: set[int] = field(factory=set)
    # Single-row commits sent, and those that failed or were cut off.
    attempted: int = 0
    unconfirmed: int = 0
    # The next row number to write.
    next_row: int = 1
    _stop: anyio.Event = field(factory=anyio.Event)
    _stopped: anyio.Event = field(factory=anyio.Event)
    _running: bool = False

    async def seed(self, address: str, rows: int) -> None:
        """Create the table and commit ``rows`` rows in batches."""
        async with await _connect(address) as conn:
            await conn.execute("CREATE TABLE IF NOT EXISTS demo (n int PRIMARY KEY)")
            while self.next_row <= rows:
                last = min(self.next_row + _BATCH - 1, rows)
                await conn.execute(
                    "INSERT INTO demo SELECT generate_series(%s::int, %s::int)",
                    (self.next_row, last),
                )
                self.acked.update(range(self.next_row, last + 1))
                self.next_row = last + 1

    async def confirm_all(self) -> None:
        """Commit a marker row; with a synchronous replica, its return
        means the replica has replayed every earlier commit too."""
        address = self.find_primary()
        if address is None:
            raise DemoFailedError("no primary to confirm the earlier rows on")

        async with await _connect(address) as conn:
            with anyio.fail_after(_COMMIT_TIMEOUT):
                await conn.execute("INSERT INTO demo VALUES (0) ON CONFLICT DO NOTHING")

    def stop(self) -> None:
        """Ask the writer to finish after its current commit."""
        self._stop.set()

    async def wait_stopped(self) -> None:
        """Wait until `run` has returned and its last commit is counted."""
        if self._running:
            await self._stopped.wait()

    async def run(self) -> None:
        """Commit rows until stopped, following the primary around."""
        self._running = True
        try:
            await self._run()
        finally:
            self._stopped.set()

    async def _run(self) -> None:
        while not self._stop.is_set():
            address = self.find_primary()
            if address is None:
                await anyio.sleep(0.05)  # paces retries while no primary exists
                continue

            try:
                async with await _connect(address) as conn:
                    while not self._stop.is_set() and self.find_primary() == address:
                        await self._commit(conn)
            except (psycopg.Error, OSError, TimeoutError):
                await anyio.sleep(0.05)  # paces reconnects to a dying primary

    async def _commit(self, conn: psycopg.AsyncConnection[Any]) -> None:
        row = self.next_row
        self.next_row += 1
        self.attempted += 1
        try:
            with anyio.fail_after(_COMMIT_TIMEOUT):
                await conn.execute("INSERT INTO demo VALUES (%s)", (row,))
        except BaseException:
            self.unconfirmed += 1
            raise

        self.acked.add(row)


async def _verify(address: str, acked: set[int]) -> tuple[int, list[int]]:
    """How many acknowledged rows the member at ``address`` holds; a few it lacks."""
    async with await _connect(address) as conn:
        cursor = await conn.execute("SELECT n FROM demo")
        present = {n for (n,) in await cursor.fetchall()}

    missing = sorted(acked - present)

    return len(acked) - len(missing), missing[:5]


# -- the scenario -------------------------------------------------------------


async def run_postgres_demo(
    *,
    rows: int = 10_000,
    replicas: int = 1,
    docker_url: str | None = None,
    out: TextIO = sys.stdout,
) -> None:
    """Run the PostgreSQL demo scenario; return when every check passed.

    Everything it creates carries ``io.rolecall.demo=true`` and is removed
    at the end, also on failure or cancellation (Ctrl-C); leftovers of an
    earlier run are removed first.

    Args:
        rows: Rows committed before the service changes shape.
        replicas: Replicas of the redundant shape.
        docker_url: The engine (``DOCKER_HOST`` form); the default socket
            when ``None``.
        out: Where the timeline goes.

    Raises:
        DemoFailedError: A check failed (a row lost, no failover).
        EngineUnavailableError: No Docker engine answers at ``docker_url``.
        RolecallError: rolecall could not do its part (engine, image, hook).
    """
    timeline = _Timeline(out)
    async with open_docker_runtime(docker_url) as runtime:
        timeline.say("making sure the example PostgreSQL image exists (built once)")
        image = await ensure_image("postgres", docker_host=docker_url)
        timeline.say(f"image {image}")
        removed = await remove_demo_objects(runtime)
        if removed:
            timeline.say(f"removed {removed} leftover object(s) of an earlier run")
        try:
            await _scenario(runtime, image, rows, replicas, timeline)
        finally:
            with anyio.CancelScope(shield=True):
                removed = await remove_demo_objects(runtime)
                timeline.say(
                    f"removed {removed} object(s) the run had left behind"
                    if removed
                    else "nothing left behind: every container, volume and"
                    " network the demo made is gone"
                )


async def _scenario(
    runtime: ContainerRuntime,
    image: str,
    rows: int,
    replicas: int,
    timeline: _Timeline,
) -> None:
    spec = ServiceSpec(
        name=_SERVICE,
        image=image,
        replicas=replicas,
        config={"durability": "sync"},
        labels={DEMO_LABEL: "true"},
    )
    async with (
        open_supervisor(runtime, probe_interval=1.0) as supervisor,
        supervisor.open_timeline() as events,
        anyio.create_task_group() as group,
    ):
        group.start_soon(_print_events, events, timeline)

        timeline.step(1, f"bring `{_SERVICE}` up standalone (durability: sync)")
        await supervisor.apply(spec)
        plan, _ = await supervisor.probe_plan(spec)
        timeline.say(
            f"  plan: roles {', '.join(sorted(plan.roles))};"
            f" topologies {', '.join(sorted(plan.topologies))};"
            f" behaviours {', '.join(sorted(plan.behaviours))};"
            f" ports {list(plan.ports)}; data {list(plan.data_paths)}"
        )
        await supervisor.wait_converged(_SERVICE, timeout=120)

        timeline.step(2, f"commit {rows:,} rows through a PostgreSQL client")
        writer = _RowWriter(lambda: _writer_address(supervisor))
        await writer.seed(_published_writer(supervisor), rows)
        timeline.say(f"  {len(writer.acked):,} rows committed on the standalone node")
        group.start_soon(writer.run)

        timeline.step(3, f"convert to redundant ({replicas} replica) while writing")
        status = await supervisor.convert(_SERVICE, "redundant", timeout=180)
        await writer.confirm_all()
        timeline.say(
            f"  primary {status.primary}; a commit now returns once a replica"
            " has replayed it"
        )

        timeline.step(4, "docker kill the primary; rolecall fails over")
        await _kill_primary_and_wait(supervisor, runtime, timeline)
        writer.stop()
        await writer.wait_stopped()
        timeline.say(
            f"  writer: {writer.attempted:,} single-row commits sent:"
            f" {writer.attempted - writer.unconfirmed:,} returned,"
            f" {writer.unconfirmed:,} cut off (not counted);"
            f" {len(writer.acked):,} rows acknowledged in all"
        )

        timeline.step(5, "read every acknowledged row from the new primary")
        await _check(supervisor, writer.acked, timeline)

        timeline.step(6, "convert back to standalone, keeping the primary's data")
        await supervisor.convert(_SERVICE, "standalone", timeout=120)
        await _check(supervisor, writer.acked, timeline)

        await supervisor.remove(_SERVICE)
        group.cancel_scope.cancel()


async def _kill_primary_and_wait(
    supervisor: Supervisor, runtime: ContainerRuntime, timeline: _Timeline
) -> None:
    old = supervisor.status(_SERVICE).writer
    if old is None:
        raise DemoFailedError("no primary to kill: the service has none")

    async with supervisor.open_timeline() as events:
        timeline.say(f"  docker kill {old.container_name}")
        await runtime.kill_container(old.container_id)
        with anyio.move_on_after(_FAILOVER_WAIT):
            async for event in events:
                if event.kind == "converged" and _has_new_primary(supervisor, old.id):
                    break

    if not _has_new_primary(supervisor, old.id):
        raise DemoFailedError(
            f"no new primary within {_FAILOVER_WAIT}s of killing {old.id}:"
            " run with --log-level info to see what the supervisor did"
        )

    status = supervisor.status(_SERVICE)
    timeline.say(
        f"  new primary {status.primary}, members {[m.id for m in status.members]}"
    )


def _has_new_primary(supervisor: Supervisor, old: str) -> bool:
    status = supervisor.status(_SERVICE)

    return status.converged and status.primary not in (None, old)


async def _check(supervisor: Supervisor, acked: set[int], timeline: _Timeline) -> None:
    good, missing = await _verify(_published_writer(supervisor), acked)
    timeline.say(f"  verified {good}/{len(acked)} rows")
    if good != len(acked):
        raise DemoFailedError(
            f"{len(acked) - good} acknowledged row(s) missing, e.g. {missing}"
        )


async def _print_events(
    events: AsyncIterator[ServiceEvent], timeline: _Timeline
) -> None:
    async for event in events:
        timeline.event(event)


def _writer_address(supervisor: Supervisor) -> str | None:
    writer = supervisor.status(_SERVICE).writer
    return writer.published if writer is not None and writer.alive else None


def _published_writer(supervisor: Supervisor) -> str:
    address = _writer_address(supervisor)
    if address is None:
        raise DemoFailedError("the service has no primary publishing a port")

    return address
