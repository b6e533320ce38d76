"""PostgreSQL services driven by the supervisor, on a real engine.

The same supervisor, reconciler and failover code that runs Redis runs the
PostgreSQL image here; nothing in them knows which service it drives. A
client on the host writes rows one commit at a time through the port the
writer publishes on loopback, and records each commit the server
acknowledged; the checks read the rows back. What a test creates carries
its own case label and is removed by it; waits follow the supervisor's
timeline or poll with a deadline.
"""

from __future__ import annotations

import io
import itertools
import re
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import docker_support
import psycopg
import pytest
from attrs import define, field
from docker_support import CASE_LABEL, DockerLab

from rolecall._demo_postgres import run_postgres_demo
from rolecall._demo_scenario import demo_labels
from rolecall._images import ensure_image
from rolecall.actors import (
    DockerRuntime,
)
from rolecall.hooks_protocol import (
    HookName,
    Role,
    SpecError,
    Topology,
)
from rolecall.supervisor import (
    LABEL_MEMBER,
    ServiceEvent,
    ServiceSpec,
    Supervisor,
    backup_member,
    open_supervisor,
    run_member_hook,
)

pytestmark = [pytest.mark.docker, pytest.mark.anyio, pytest.mark.timeout(120)]

# Fixtures shared through docker_support; pytest finds them by these names.
docker_case = docker_support.docker_case

LIMIT = 60  # seconds; far above what any step here needs
PROBE = 0.5  # seconds between health passes
SEED = 300  # rows written before anything changes
PASSWORD = f"pw-{uuid.uuid4().hex}"


@pytest.fixture
def anyio_backend() -> str:
    """The Docker runtime and psycopg's async connections run on asyncio."""
    return "asyncio"


@pytest.fixture(scope="session")
def postgres_image(docker_engine: str) -> str:
    """The PostgreSQL image: built on first use, then reused by its tag."""
    return anyio.run(ensure_image, "postgres")


# -- a client that counts acknowledged commits ------------------------------


async def _connect(address: str, env: dict[str, str]) -> psycopg.AsyncConnection[Any]:
    host, port = address.rsplit(":", 1)
    return await psycopg.AsyncConnection.connect(
        host=host,
        port=int(port),
        user="postgres",
        dbname="postgres",
        password=env.get("POSTGRES_PASSWORD"),
        connect_timeout=5,
        autocommit=True,
    )


async def _sql(
    address: str | None,
    env: dict[str, str],
    text: str,
    params: Sequence[object] = (),
) -> list[Any]:
    """Run one statement on the member at ``address``; return its rows."""
    assert address is not None, "the member publishes no port"
    async with await _connect(address, env) as conn:
        cursor = await conn.execute(text.encode(), params)
        return await cursor.fetchall() if cursor.description else []


async def _rows(address: str | None, env: dict[str, str]) -> list[int]:
    return [n for (n,) in await _sql(address, env, "SELECT n FROM t ORDER BY n")]


@define
class RowWriter:
    """Inserts rows one commit at a time into whichever member takes writes.

    A row counts once its commit returned: ``acked`` maps it to the WAL
    position (bytes) its insert was written at, just before its commit.
    """

    find_writer: Callable[[], str | None]
    env: dict[str, str] = field(factory=dict)
    # Rows whose commit returned, in commit order, with their WAL position.
    acked: dict[int, int] = field(factory=dict)
    # The address each acknowledged row was written to.
    written_to: dict[int, str] = field(factory=dict)
    # Inserts sent; the ones not in `acked` failed or were cut off.
    attempted: int = 0
    _stop: anyio.Event = field(factory=anyio.Event)
    _stopped: anyio.Event = field(factory=anyio.Event)

    async def run(self) -> None:
        """Write until `stop` is called."""
        try:
            await self._run()
        finally:
            self._stopped.set()

    async def stop(self) -> None:
        """Ask the writer to finish after its current row; wait for it."""
        self._stop.set()
        await self._stopped.wait()

    async def wait_acked(self, count: int) -> None:
        """Wait until ``count`` rows in all were acknowledged."""

        async def enough() -> bool:
            return len(self.acked) >= count

        await _until(enough)

    async def _run(self) -> None:
        n = max(self.acked, default=0)
        while not self._stop.is_set():
            address = self.find_writer()
            if address is None:
                await anyio.sleep(0.05)  # paces retries while no writer exists
                continue

            try:
                async with await _connect(address, self.env) as conn:
                    while not self._stop.is_set() and self.find_writer() == address:
                        n += 1
                        self.attempted += 1
                        with anyio.fail_after(15):
                            cursor = await conn.execute(
                                "INSERT INTO t (n) VALUES (%s) RETURNING "
                                "pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')"
                                "::bigint",
                                (n,),
                            )
                            row = await cursor.fetchone()
                        assert row is not None
                        self.acked[n] = int(row[0])
                        self.written_to[n] = address
            except (psycopg.Error, OSError, TimeoutError):
                await anyio.sleep(0.05)  # paces reconnects to a dying writer


# -- helpers ----------------------------------------------------------------


async def _until(
    check: Callable[[], Awaitable[bool]], *, within: float = LIMIT
) -> None:
    """Poll ``check`` until it holds; fail the test after ``within`` s."""
    with anyio.fail_after(within):
        while True:
            if await check():
                return

            await anyio.sleep(0.05)


def _spec(case: DockerLab, image: str, prefix: str, **options: Any) -> ServiceSpec:
    return ServiceSpec(
        name=case.service(prefix), image=image, labels=case.labels, **options
    )


def _published_writer(supervisor: Supervisor, service: str) -> Callable[[], str | None]:
    def find() -> str | None:
        writer = supervisor.status(service).writer
        return writer.published if writer is not None and writer.alive else None

    return find


async def _seed(address: str | None, env: dict[str, str], writer: RowWriter) -> None:
    await _sql(address, env, "CREATE TABLE t (n int PRIMARY KEY)")
    for n in range(1, SEED + 1):
        lsn = await _sql(
            address,
            env,
            "INSERT INTO t VALUES (%s) RETURNING "
            "pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::bigint",
            (n,),
        )
        writer.acked[n] = int(lsn[0][0])
        writer.written_to[n] = str(address)


async def _events_until(
    events: AsyncIterator[ServiceEvent],
    done: Callable[[ServiceEvent], bool],
    *,
    within: float = LIMIT,
) -> list[ServiceEvent]:
    """Collect timeline events up to and including the first ``done`` one."""
    seen: list[ServiceEvent] = []
    with anyio.fail_after(within):
        async for event in events:
            seen.append(event)
            if done(event):
                return seen

    pytest.fail(f"the timeline ended before the awaited event: {_kinds(seen)}")


def _kinds(events: Sequence[ServiceEvent], *only: str) -> list[str]:
    return [e.kind for e in events if not only or e.kind in only]


def _converged_around_new_primary(
    supervisor: Supervisor, service: str, old: str
) -> Callable[[ServiceEvent], bool]:
    def done(event: ServiceEvent) -> bool:
        status = supervisor.status(service)
        return event.kind == "converged" and status.primary not in (None, old)

    return done


async def _fail_over(
    supervisor: Supervisor, runtime: DockerRuntime, service: str
) -> list[ServiceEvent]:
    """Kill the primary's container; return the timeline until it converged."""
    old = supervisor.status(service).writer
    assert old is not None
    async with supervisor.open_timeline() as events:
        await runtime.kill_container(old.container_id)
        return await _events_until(
            events, _converged_around_new_primary(supervisor, service, old.id)
        )


async def _switch_point(address: str | None, env: dict[str, str]) -> int:
    """Where the new primary's timeline forked off the old one, in bytes."""
    ((timeline,),) = await _sql(
        address,
        env,
        "SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))"
        "::bit(32)::int",
    )
    history = await _sql(
        address, env, "SELECT pg_read_file(%s)", (f"pg_wal/{timeline:08X}.history",)
    )
    last = history[0][0].strip().splitlines()[-1]
    ((point,),) = await _sql(
        address,
        env,
        "SELECT pg_wal_lsn_diff(%s::pg_lsn, '0/0')::bigint",
        (last.split()[1],),
    )
    return int(point)


# -- conversion -------------------------------------------------------------


async def test_round_trip_with_rows_written_throughout_loses_no_commit(
    docker_runtime: DockerRuntime, docker_case: DockerLab, postgres_image: str
) -> None:
    """Standalone, redundant, standalone while writing: every committed row stays."""
    env = {"POSTGRES_PASSWORD": PASSWORD}
    spec = _spec(
        docker_case,
        postgres_image,
        "trip",
        env=env,
        secret_keys=frozenset(env),
    )
    async with (
        open_supervisor(docker_runtime, probe_interval=PROBE) as supervisor,
        anyio.create_task_group() as group,
    ):
        await supervisor.apply(spec)
        solo = (await supervisor.wait_converged(spec.name, timeout=LIMIT)).writer
        assert solo is not None
        writer = RowWriter(_published_writer(supervisor, spec.name), env)
        await _seed(solo.published, env, writer)
        group.start_soon(writer.run)

        redundant = await supervisor.convert(
            spec.name, Topology.REDUNDANT, timeout=LIMIT
        )
        (replica,) = [m for m in redundant.members if m.role is Role.REPLICA]
        await writer.wait_acked(len(writer.acked) + 200)
        back = await supervisor.convert(spec.name, Topology.STANDALONE, timeout=LIMIT)
        await writer.wait_acked(len(writer.acked) + 200)
        await writer.stop()
        on_standalone = await _rows(back.writer and back.writer.published, env)

    containers = await docker_runtime.list_containers(
        labels={CASE_LABEL: docker_case.labels[CASE_LABEL]}
    )
    replica_volumes = await docker_runtime.list_volumes(
        labels={CASE_LABEL: docker_case.labels[CASE_LABEL], LABEL_MEMBER: replica.id}
    )

    assert redundant.primary == solo.id
    assert replica.following == solo.id
    assert back.primary == solo.id
    assert [m.id for m in back.members] == [solo.id]
    assert len(writer.acked) >= SEED + 400
    assert on_standalone == sorted(writer.acked)
    assert [c.id for c in containers] == [solo.container_id]
    assert replica_volumes == []


# -- failover ---------------------------------------------------------------


async def test_sync_failover_loses_no_committed_row(
    docker_runtime: DockerRuntime, docker_case: DockerLab, postgres_image: str
) -> None:
    """With synchronous durability a killed primary loses no committed row."""
    spec = _spec(
        docker_case,
        postgres_image,
        "sync",
        topology=Topology.REDUNDANT,
        config={"durability": "sync"},
    )
    async with (
        open_supervisor(docker_runtime, probe_interval=PROBE) as supervisor,
        anyio.create_task_group() as group,
    ):
        await supervisor.apply(spec)
        before = await supervisor.wait_converged(spec.name, timeout=LIMIT)
        old = before.writer
        assert old is not None
        writer = RowWriter(_published_writer(supervisor, spec.name))
        await _seed(old.published, {}, writer)
        settings = await _sql(
            old.published,
            {},
            "SELECT current_setting('synchronous_standby_names'),"
            " current_setting('synchronous_commit')",
        )
        group.start_soon(writer.run)
        await writer.wait_acked(SEED + 300)

        seen = await _fail_over(supervisor, docker_runtime, spec.name)
        await writer.wait_acked(len(writer.acked) + 100)
        await writer.stop()
        after = supervisor.status(spec.name)
        on_new_primary = await _rows(after.writer and after.writer.published, {})

    key_kinds = ("member_lost", "member_fenced", "failover", "converged")

    assert settings == [("ANY 1 (replica)", "remote_apply")]
    assert _kinds(seen, *key_kinds) == list(key_kinds)
    assert after.primary in {m.id for m in before.members if m.role is Role.REPLICA}
    assert len(writer.acked) >= SEED + 400
    assert set(writer.acked) <= set(on_new_primary)
    # A commit cut off by the kill may have reached the replica: rows beyond
    # the acknowledged ones were at least sent, never invented.
    assert set(on_new_primary) <= set(range(1, SEED + writer.attempted + 1))


async def test_async_failover_loses_only_commits_past_the_switch_point(
    docker_runtime: DockerRuntime,
    docker_case: DockerLab,
    postgres_image: str,
    request: pytest.FixtureRequest,
) -> None:
    """Async loss is the tail of commits past the new timeline's fork, measured."""
    spec = _spec(docker_case, postgres_image, "async", topology=Topology.REDUNDANT)
    async with (
        open_supervisor(docker_runtime, probe_interval=PROBE) as supervisor,
        anyio.create_task_group() as group,
    ):
        await supervisor.apply(spec)
        old = (await supervisor.wait_converged(spec.name, timeout=LIMIT)).writer
        assert old is not None
        writer = RowWriter(_published_writer(supervisor, spec.name))
        await _seed(old.published, {}, writer)
        group.start_soon(writer.run)
        await writer.wait_acked(SEED + 500)

        killed_at = time.monotonic()
        await _fail_over(supervisor, docker_runtime, spec.name)
        await writer.stop()
        new = supervisor.status(spec.name).writer
        assert new is not None
        switch = await _switch_point(new.published, {})
        present = set(await _rows(new.published, {}))

    order = sorted(n for n, to in writer.written_to.items() if to == old.published)
    lost = [n for n in order if n not in present]
    # A row's commit record lies after its insert and before the next
    # row's insert: a row is surely kept when the next one began before
    # the switch point, and surely gone when it began at or past it.
    kept_for_sure = [
        a for a, b in itertools.pairwise(order) if writer.acked[b] <= switch
    ]
    gone_for_sure = [n for n in order if writer.acked[n] >= switch]
    # Kept in the report (junit XML, ``-rA``): the measured loss.
    request.node.user_properties.extend(
        [
            ("async_rows_lost", len(lost)),
            ("async_rows_acked", len(order)),
            ("async_bytes_past_switch", max(writer.acked[n] for n in order) - switch),
            ("failover_seconds", round(time.monotonic() - killed_at, 2)),
        ]
    )

    assert len(order) >= SEED + 500
    assert set(kept_for_sure) <= present
    assert not set(gone_for_sure) & present
    assert lost == order[len(order) - len(lost) :]
    assert len(lost) <= len(gone_for_sure) + 1


async def test_failover_promotes_the_replica_with_the_highest_replayed_lsn(
    docker_runtime: DockerRuntime, docker_case: DockerLab, postgres_image: str
) -> None:
    """Of two synced replicas, the one that replayed further becomes primary,
    on the positions both report at failover time."""
    spec = _spec(
        docker_case, postgres_image, "pick", topology=Topology.REDUNDANT, replicas=2
    )
    async with open_supervisor(docker_runtime, probe_interval=PROBE) as supervisor:
        await supervisor.apply(spec)
        before = await supervisor.wait_converged(spec.name, timeout=LIMIT)
        old = before.writer
        assert old is not None
        behind, ahead = [m for m in before.members if m.role is Role.REPLICA]
        writer = RowWriter(_published_writer(supervisor, spec.name))
        await _seed(old.published, {}, writer)
        await _sql(behind.published, {}, "SELECT pg_wal_replay_pause()")
        await _sql(
            old.published, {}, "INSERT INTO t SELECT generate_series(1001, 2000)"
        )
        ((target,),) = await _sql(
            old.published,
            {},
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint",
        )
        replayed = "SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::bigint"

        async def replayed_all() -> bool:
            return bool((await _sql(ahead.published, {}, replayed))[0][0] >= target)

        await _until(replayed_all)
        ((lagging,),) = await _sql(behind.published, {}, replayed)

        # No wait for the supervisor's probes: it asks both replicas where
        # they are when it fails over.
        seen = await _fail_over(supervisor, docker_runtime, spec.name)
        after = supervisor.status(spec.name)
        replicas = [m for m in after.members if m.role is Role.REPLICA]

        async def caught_up() -> bool:
            return len(await _rows(behind.published, {})) >= SEED + 1000

        await _until(caught_up)
        on_behind = await _rows(behind.published, {})

    probed = next(e for e in seen if e.kind == "candidates_probed")
    assert lagging < target
    positions = probed.fields["positions"]
    assert isinstance(positions, dict)
    assert positions[behind.id] == lagging
    assert positions[ahead.id] >= target
    assert after.primary == ahead.id
    assert behind.id in {m.id for m in replicas}
    assert len(replicas) == 2
    assert {m.following for m in replicas} == {ahead.id}
    assert on_behind == [*range(1, SEED + 1), *range(1001, 2001)]


# -- the old primary rejoins -------------------------------------------------


@define
class WriteProbe:
    """Tries, again and again, to write to one member; counts what it took.

    Each try connects afresh to the member's published port as status shows
    it now (it changes when the container restarts) and inserts a row with
    a negative number, which no other writer uses.
    """

    supervisor: Supervisor
    service: str
    member: str
    # Tries made, and how many reached a running server at all.
    tries: int = 0
    reached: int = 0
    # Rows the member acknowledged: must stay empty.
    taken: list[int] = field(factory=list)

    async def run(self) -> None:
        """Probe until cancelled."""
        for n in itertools.count(1):
            self.tries += 1
            address = self.supervisor.status(self.service).member(self.member)
            if address.published is not None:
                await self._try(address.published, -n)

            await anyio.sleep(0.02)  # paces the tries

    async def _try(self, address: str, row: int) -> None:
        with anyio.move_on_after(5):
            try:
                await _sql(address, {}, "INSERT INTO t VALUES (%s)", (row,))
            except psycopg.OperationalError:
                return  # no server there (yet): nothing takes writes

            except psycopg.Error:
                self.reached += 1  # a server that refused the write
                return

            self.taken.append(row)


async def _standby_rows(
    primary: str | None, standby: str | None
) -> tuple[list[int], bool]:
    """The standby's rows once it replayed all the primary wrote, and whether
    it is still in recovery (a read-only standby)."""
    ((position,),) = await _sql(
        primary, {}, "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint"
    )

    async def replayed() -> bool:
        rows = await _sql(
            standby,
            {},
            "SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::bigint",
        )
        return rows[0][0] is not None and bool(rows[0][0] >= position)

    await _until(replayed)
    ((recovering,),) = await _sql(standby, {}, "SELECT pg_is_in_recovery()")

    return await _rows(standby, {}), bool(recovering)


async def test_old_primary_rejoins_as_a_replica_and_never_takes_a_write(
    docker_runtime: DockerRuntime, docker_case: DockerLab, postgres_image: str
) -> None:
    """After a failover the supervisor restarts the killed primary in place;
    it rewinds onto the new timeline and follows, holds every row written
    after the failover, and no write reaches it at any time."""
    spec = _spec(
        docker_case,
        postgres_image,
        "back",
        topology=Topology.REDUNDANT,
        config={"durability": "sync"},
    )
    async with open_supervisor(docker_runtime, probe_interval=PROBE) as supervisor:
        await supervisor.apply(spec)
        before = await supervisor.wait_converged(spec.name, timeout=LIMIT)
        old = before.writer
        assert old is not None
        writer = RowWriter(_published_writer(supervisor, spec.name))
        await _seed(old.published, {}, writer)
        probe = WriteProbe(supervisor, spec.name, old.id)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(writer.run)
            await writer.wait_acked(SEED + 100)
            async with supervisor.open_timeline() as events:
                await docker_runtime.kill_container(old.container_id)
                tasks.start_soon(probe.run)
                seen = await _events_until(
                    events,
                    lambda e: e.kind == "role_applied" and e.member == old.id,
                )
                at_rejoin = len(writer.acked)
                await writer.wait_acked(at_rejoin + 200)
                seen += await _events_until(events, lambda e: e.kind == "converged")
            await writer.stop()
            tasks.cancel_scope.cancel()

        after = supervisor.status(spec.name)
        new = after.writer
        assert new is not None
        on_new = await _rows(new.published, {})
        on_old, recovering = await _standby_rows(
            new.published, after.member(old.id).published
        )

    kinds = _kinds(seen)
    assert new.id != old.id
    assert kinds.index("member_fenced") < kinds.index("failover")
    assert kinds.index("failover") < kinds.index("member_restarted")
    assert "member_created" not in kinds
    assert "member_removed" not in kinds
    assert f"role replica of {new.id}" in [
        e.detail for e in seen if e.member == old.id and e.kind == "role_applied"
    ]
    assert after.member(old.id).container_id == old.container_id
    assert after.member(old.id).following == new.id
    assert recovering is True
    assert probe.tries > 10
    assert probe.reached > 0  # it ran as a read-only standby meanwhile
    assert probe.taken == []
    assert set(writer.acked) <= set(on_new)
    assert on_old == on_new
    assert max(on_old) > at_rejoin
    assert min(on_old) > 0


# -- backup and restore -----------------------------------------------------


async def test_backup_on_the_backup_node_restores_into_a_fresh_standalone(
    docker_runtime: DockerRuntime, docker_case: DockerLab, postgres_image: str
) -> None:
    """A service with a backup node (an extra member in the backup role)
    takes its backup there; restored into a new service, it holds the same
    rows."""
    source = _spec(docker_case, postgres_image, "src", extras={"backup": 1})
    target = _spec(docker_case, postgres_image, "dst")
    async with open_supervisor(docker_runtime, probe_interval=PROBE) as supervisor:
        await supervisor.apply(source)
        status = await supervisor.wait_converged(source.name, timeout=LIMIT)
        primary = status.writer
        assert primary is not None
        writer = RowWriter(_published_writer(supervisor, source.name))
        await _seed(primary.published, {}, writer)
        expected = await _rows(primary.published, {})
        ((written,),) = await _sql(
            primary.published,
            {},
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint",
        )
        node_id = backup_member(supervisor, source.name)

        async def node_caught_up() -> bool:
            node = supervisor.status(source.name).member(node_id)
            return node.offset >= written

        await _until(node_caught_up)
        taken = await run_member_hook(
            supervisor,
            source.name,
            node_id,
            HookName.BACKUP,
            {"path": "/data/backups/b1"},
            timeout=LIMIT,
        )
        node = supervisor.status(source.name).member(node_id)

        # The backup leaves through the engine's archive API, not the hook.
        await supervisor.apply(target)
        fresh = (await supervisor.wait_converged(target.name, timeout=LIMIT)).writer
        assert fresh is not None
        with tempfile.TemporaryDirectory() as outside:
            for copy in (
                [f"{node.container_name}:/data/backups/b1", outside],
                [str(Path(outside, "b1")), f"{fresh.container_name}:/data/"],
            ):
                await anyio.run_process(["docker", "cp", *copy])
        with pytest.raises(SpecError, match="data hooks"):
            await run_member_hook(
                supervisor, target.name, fresh.id, HookName.ROLE, timeout=LIMIT
            )
        restored = await run_member_hook(
            supervisor,
            target.name,
            fresh.id,
            HookName.RESTORE,
            {"path": "/data/b1"},
            timeout=LIMIT,
        )
        again = await run_member_hook(
            supervisor,
            target.name,
            fresh.id,
            "restore",
            {"path": "/data/b1"},
            timeout=LIMIT,
        )
        on_restored = await _rows(fresh.published, {})

    assert [(m.role, m.extra) for m in status.members] == [
        (Role.STANDALONE, None),
        (Role.BACKUP, Role.BACKUP),
    ]
    assert (node.role, node.following) == (Role.BACKUP, primary.id)
    assert taken.data["role"] == "backup"
    assert list(taken.data["files"]) == [
        "backup_manifest",
        "base.tar.gz",
        "pg_wal.tar.gz",
        "rolecall-backup.json",
    ]
    assert restored.data["restored"] is True
    assert again.data["restored"] is False
    assert expected == list(range(1, SEED + 1))
    assert on_restored == expected


# -- the demo ---------------------------------------------------------------


async def test_postgres_demo_verifies_every_row_twice_and_cleans_up(
    docker_runtime: DockerRuntime, docker_case: DockerLab, postgres_image: str
) -> None:
    """The PostgreSQL demo fails over, reads every row back twice, leaves nothing."""
    out = io.StringIO()
    with anyio.fail_after(LIMIT * 2):
        await run_postgres_demo(rows=2000, service=docker_case.service("db"), out=out)
    text = out.getvalue()
    verified = re.findall(r"verified (\d+)/(\d+) rows", text)
    demo = demo_labels()
    left = [
        *await docker_runtime.list_containers(labels=demo),
        *await docker_runtime.list_volumes(labels=demo),
        *await docker_runtime.list_networks(labels=demo),
    ]

    assert len(verified) == 2
    assert all(good == total for good, total in verified)
    assert int(verified[0][1]) >= 2000
    assert "failover: " in text
    assert "member_fenced" in text
    assert left == []
