"""The main job with PostgreSQL, end to end on a real engine.

The scenario is `rolecall._demo_scenario`'s, run by the same supervisor as
the Redis demo; this module supplies PostgreSQL: the image, and a workload
whose writes are rows committed one at a time. The service runs with
synchronous durability: once a replica exists, a commit returns only after a
replica has replayed it, so a commit the client saw return is a commit the
failover keeps.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TextIO

import anyio
import psycopg
from attrs import define, field

from rolecall.actors import open_docker_runtime
from rolecall.supervisor import ServiceSpec

from ._demo_scenario import DemoFailedError, Timeline, demo_labels, run_scenario
from ._images import ensure_image

__all__ = ["run_postgres_demo"]

_BATCH = 500
_COMMIT_TIMEOUT = 15.0


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
    unit: str = "rows"
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

    async def seed(self, address: str, rows: int) -> str:
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

        return f"{len(self.acked):,} rows committed on the standalone node"

    async def now_redundant(self, primary: str) -> str:
        """Commit a marker row; with a synchronous replica, its return
        means the replica has replayed every earlier commit too."""
        address = self.find_primary()
        if address is None:
            raise DemoFailedError("no primary to confirm the earlier rows on")

        async with await _connect(address) as conn:
            with anyio.fail_after(_COMMIT_TIMEOUT):
                await conn.execute("INSERT INTO demo VALUES (0) ON CONFLICT DO NOTHING")

        return f"primary {primary}; a commit now returns once a replica has replayed it"

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

    def summary(self) -> str:
        return (
            f"writer: {self.attempted:,} single-row commits sent:"
            f" {self.attempted - self.unconfirmed:,} returned,"
            f" {self.unconfirmed:,} cut off (not counted);"
            f" {len(self.acked):,} rows acknowledged in all"
        )

    async def verify(self, address: str) -> tuple[int, int, list[str]]:
        """How many acknowledged rows ``address`` holds; a few it lacks."""
        async with await _connect(address) as conn:
            cursor = await conn.execute("SELECT n FROM demo")
            present = {n for (n,) in await cursor.fetchall()}

        missing = sorted(self.acked - present)
        total = len(self.acked)

        return total - len(missing), total, [str(n) for n in missing[:5]]


async def run_postgres_demo(
    *,
    rows: int = 10_000,
    replicas: int = 1,
    service: str = "db",
    docker_url: str | None = None,
    out: TextIO = sys.stdout,
) -> None:
    """Run the demo scenario with PostgreSQL; return when every check passed.

    Everything it creates carries ``io.rolecall.demo=true`` and is removed
    at the end, also on failure or cancellation (Ctrl-C); leftovers of an
    ended earlier run are removed first.

    Args:
        rows: Rows committed before the service changes shape.
        replicas: Replicas of the redundant shape.
        service: The service's name.
        docker_url: The engine (``DOCKER_HOST`` form); the default socket
            when ``None``.
        out: Where the timeline goes.

    Raises:
        DemoFailedError: A check failed (a row lost, no failover).
        EngineUnavailableError: No Docker engine answers at ``docker_url``.
        RolecallError: rolecall could not do its part (engine, image, hook).
    """
    timeline = Timeline(out)
    async with open_docker_runtime(docker_url) as runtime:
        timeline.say("making sure the example PostgreSQL image exists (built once)")
        image = await ensure_image("postgres", docker_host=docker_url)
        timeline.say(f"image {image}")
        spec = ServiceSpec(
            name=service,
            image=image,
            replicas=replicas,
            config={"durability": "sync"},
            labels=demo_labels(),
        )
        await run_scenario(runtime, spec, _RowWriter, count=rows, timeline=timeline)
