"""Extra members, returning writers and fresh failover positions, on the
in-memory runtime.

An extra member (``ServiceSpec.extras``) follows the writer in a role of its
own and is never promoted; a writer superseded by a failover comes back as
a follower, never as a second writer; a failover asks its candidates where
they are before it chooses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from supervisor_support import (
    LIMIT,
    PROBE,
    Lag,
    converged,
    event_kinds,
    expected_keys,
    keys_of,
    kv_runtime,
    plan_with,
    service_spec,
    until,
    write_keys,
)

from rolecall.hooks_protocol import HookName, Role, SpecError
from rolecall.supervisor import (
    LABEL_EXTRA,
    ServiceStatus,
    backup_member,
    open_supervisor,
    run_member_hook,
)
from rolecall.testing import (
    KV_DATA_PATH,
    FakeHook,
    FakeHookCall,
    FakeKVReadOnlyError,
    fake_kv_image,
    fake_kv_write,
)

pytestmark = pytest.mark.anyio


def _backup(call: FakeHookCall) -> dict[str, Any]:
    """A backup hook: copies the member's keys to ``request.path`` on its disk."""
    disk = call.volumes[KV_DATA_PATH]
    disk.setdefault("backups", {})[call.request["path"]] = dict(disk["keys"])

    return {"keys": len(disk["keys"]), "role": disk["role"]}


def _with_backup(lag: Lag) -> dict[str, FakeHook]:
    return {**lag.image(), HookName.BACKUP: _backup}


class TestExtraMembers:
    """A backup node beside the topology."""

    async def test_a_backup_node_follows_the_writer_and_takes_the_backup(
        self,
    ) -> None:
        """A standalone service with one backup extra gets a member in the
        backup role that copies the writer; the backup runs on it."""
        lag = Lag()
        runtime = kv_runtime(bk=_with_backup(lag))
        spec = service_spec(image="bk:fake", extras={"backup": 1})
        with anyio.fail_after(LIMIT):
            async with (
                open_supervisor(runtime, probe_interval=PROBE) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(spec)
                status = await converged(supervisor, events)
                write_keys(runtime, status, range(25))
                await lag.wait_offset("rolecall-cache-2", 25)
                node = backup_member(supervisor, "cache")
                result = await run_member_hook(
                    supervisor,
                    "cache",
                    node,
                    HookName.BACKUP,
                    {"path": "/data/b1"},
                    timeout=LIMIT,
                )
                labels = runtime.container(status.member(node).container_id).labels

        disk = runtime.volume_data(f"rolecall-{node}-data")
        assert status.primary == "cache-1"
        assert [(m.id, m.role, m.following, m.extra) for m in status.members] == [
            ("cache-1", Role.STANDALONE, None, None),
            ("cache-2", Role.BACKUP, "cache-1", Role.BACKUP),
        ]
        assert node == "cache-2"
        assert labels[LABEL_EXTRA] == "backup"
        assert result.data == {"keys": 25, "role": "backup"}
        assert disk["backups"]["/data/b1"] == expected_keys(range(25))

    async def test_the_backup_node_is_never_promoted_and_follows_the_new_primary(
        self,
    ) -> None:
        """When the primary dies the replica takes over, however far ahead the
        backup node is, and the backup node follows the new primary."""
        lag = Lag()
        runtime = kv_runtime(lag=lag.image())
        spec = service_spec(
            image="lag:fake", topology="redundant", extras={"backup": 1}
        )
        with anyio.fail_after(LIMIT):
            async with (
                open_supervisor(runtime, probe_interval=PROBE) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(spec)
                before = await converged(supervisor, events)
                write_keys(runtime, before, range(10))
                await lag.wait_offset("rolecall-cache-2", 10)
                runtime.crash(before.member("cache-1").container_id)
                timeline = await until(events, "converged")
                after = supervisor.status("cache")

        kinds = event_kinds(timeline)
        assert [(m.id, m.role, m.following) for m in before.members] == [
            ("cache-1", Role.PRIMARY, None),
            ("cache-2", Role.REPLICA, "cache-1"),
            ("cache-3", Role.BACKUP, "cache-1"),
        ]
        assert ("failover", "cache-2") in kinds
        assert [(m.id, m.role, m.following) for m in after.members] == [
            ("cache-1", Role.REPLICA, "cache-2"),
            ("cache-2", Role.PRIMARY, None),
            ("cache-3", Role.BACKUP, "cache-2"),
        ]
        assert keys_of(runtime, after, "cache-3") == expected_keys(range(10))

    async def test_a_lost_backup_node_is_restarted_and_a_vanished_one_recreated(
        self,
    ) -> None:
        """A crashed backup node comes back in place; one whose container was
        removed gets a new container on its volume; both follow again."""
        runtime = kv_runtime()
        spec = service_spec(extras={"backup": 1})
        with anyio.fail_after(LIMIT):
            async with (
                open_supervisor(runtime, probe_interval=PROBE) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(spec)
                before = await converged(supervisor, events)
                node = before.member("cache-2")
                runtime.crash(node.container_id)
                crashed = await until(events, "converged")
                await runtime.remove_container(node.container_id)
                removed = await until(events, "converged")
                after = supervisor.status("cache")

        assert ("member_restarted", "cache-2") in event_kinds(crashed)
        assert ("member_restarted", "cache-2") in event_kinds(removed)
        assert after.member("cache-2").container_id != node.container_id
        assert (after.member("cache-2").role, after.member("cache-2").extra) == (
            Role.BACKUP,
            Role.BACKUP,
        )
        assert [m.id for m in after.members] == ["cache-1", "cache-2"]

    async def test_a_new_control_plane_adopts_the_backup_node_by_its_label(
        self, tmp_path: Path
    ) -> None:
        """A supervisor opened again on the same containers takes the backup
        node back as an extra member: nothing is created or removed."""
        runtime = kv_runtime()
        spec = service_spec(extras={"backup": 1})
        with anyio.fail_after(LIMIT):
            async with open_supervisor(
                runtime, probe_interval=PROBE, state_dir=tmp_path
            ) as supervisor:
                await supervisor.apply(spec)
                first = await supervisor.wait_converged("cache")

            async with open_supervisor(
                runtime, probe_interval=PROBE, state_dir=tmp_path
            ) as supervisor:
                await supervisor.apply(spec)
                second = await supervisor.wait_converged("cache")

        def shape(status: ServiceStatus) -> list[tuple[str, str, Role | None]]:
            return [(m.id, m.container_id, m.extra) for m in status.members]

        assert shape(second) == shape(first)
        assert second.member("cache-2").extra is Role.BACKUP
        assert second.member("cache-2").role is Role.BACKUP

    async def test_extras_go_when_the_spec_drops_them(self) -> None:
        """Applying the spec without extras removes the backup node."""
        runtime = kv_runtime()
        with anyio.fail_after(LIMIT):
            async with (
                open_supervisor(runtime, probe_interval=PROBE) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(service_spec(extras={"backup": 1}))
                await converged(supervisor, events)
                await supervisor.apply(service_spec())
                after = await converged(supervisor, events)

        assert [(m.id, m.role) for m in after.members] == [("cache-1", Role.STANDALONE)]

    async def test_an_image_without_the_role_is_refused_before_any_container(
        self,
    ) -> None:
        """An extra role the image's plan does not offer fails the apply."""
        runtime = kv_runtime(
            nobk=fake_kv_image() | {HookName.PLAN: plan_with(roles=["standalone"])}
        )
        spec = service_spec(image="nobk:fake", extras={"backup": 1})
        with anyio.fail_after(LIMIT):
            async with open_supervisor(runtime, probe_interval=PROBE) as supervisor:
                with pytest.raises(SpecError, match="cannot take role 'backup'"):
                    await supervisor.apply(spec)
                containers = await runtime.list_containers(labels={})

        assert [c.name for c in containers] == []

    async def test_no_backup_node_is_a_clear_error(self) -> None:
        """Asking for the backup node of a service without one names the fix."""
        runtime = kv_runtime()
        with anyio.fail_after(LIMIT):
            async with (
                open_supervisor(runtime, probe_interval=PROBE) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(service_spec())
                await converged(supervisor, events)
                with pytest.raises(SpecError, match="no healthy backup node") as err:
                    backup_member(supervisor, "cache")

        assert "extras" in str(err.value)


class TestReturningWriter:
    """A writer superseded by a failover only ever follows."""

    async def test_an_old_primary_started_by_hand_follows_the_new_one(
        self,
    ) -> None:
        """An old primary whose container is started outside rolecall is
        prepared again and told to follow; it is never the writer, and the
        status never shows two primaries."""
        lag = Lag()
        runtime = kv_runtime(lag=lag.image())
        spec = service_spec(
            image="lag:fake",
            topology="redundant",
            supervision={"restart": "temporary"},
        )
        with anyio.fail_after(LIMIT):
            async with (
                open_supervisor(runtime, probe_interval=PROBE) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(spec)
                before = await converged(supervisor, events)
                write_keys(runtime, before, range(5))
                await lag.wait_offset("rolecall-cache-2", 5)
                old = before.member("cache-1").container_id
                runtime.crash(old)
                await until(events, "degraded")  # the old one stays down
                during = supervisor.status("cache")
                write_keys(runtime, during, range(5, 9))
                await runtime.start_container(old)
                timeline = await until(events, "role_applied")
                after = await supervisor.wait_converged("cache", timeout=LIMIT)
                with pytest.raises(FakeKVReadOnlyError):
                    fake_kv_write(runtime, old, "late", 1)

        kinds = event_kinds(timeline)
        assert during.primary == "cache-2"
        assert during.member("cache-1").alive is False
        assert ("member_prepared", "cache-1") in kinds
        assert timeline[-1].detail == "role replica of cache-2"
        assert after.primary == "cache-2"
        assert [(m.id, m.role, m.following) for m in after.members] == [
            ("cache-1", Role.REPLICA, "cache-2"),
            ("cache-2", Role.PRIMARY, None),
        ]
        assert keys_of(runtime, after, "cache-1") == expected_keys(range(9))


class TestFreshPositions:
    """A failover asks its candidates where they are before it chooses."""

    async def test_a_candidate_that_cannot_answer_in_time_is_passed_over(
        self,
    ) -> None:
        """The replica with the higher offset on record, whose status hangs
        at failover time, loses to the one that answered."""
        lag = Lag()
        hung: set[str] = set()
        released = anyio.Event()
        lagging_status = lag.image()[HookName.STATUS]

        async def status(call: FakeHookCall) -> Any:
            if call.container.name in hung:
                await released.wait()

            return lagging_status(call)

        runtime = kv_runtime(lag={**lag.image(), HookName.STATUS: status})
        spec = service_spec(
            image="lag:fake",
            topology="redundant",
            replicas=2,
            supervision={"unresponsive_after": 60},
        )
        with anyio.fail_after(LIMIT):
            async with (
                open_supervisor(runtime, probe_interval=PROBE) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(spec)
                before = await converged(supervisor, events)
                write_keys(runtime, before, range(10))
                await lag.wait_offset("rolecall-cache-2", 10)
                lag.held.add("rolecall-cache-2")
                write_keys(runtime, before, range(10, 20))
                await lag.wait_offset("rolecall-cache-3", 20)
                hung.add("rolecall-cache-3")
                runtime.crash(before.member("cache-1").container_id)
                timeline = await until(events, "failover")
                released.set()
                after = await converged(supervisor, events)

        probed = next(e for e in timeline if e.kind == "candidates_probed")
        assert probed.fields["passed_over"] == ["cache-3"]
        assert probed.fields["positions"] == {"cache-2": 10}
        assert probed.duration is not None
        assert probed.duration >= 1.0
        assert timeline[-1].member == "cache-2"
        assert after.primary == "cache-2"
        assert after.member("cache-3").following == "cache-2"
