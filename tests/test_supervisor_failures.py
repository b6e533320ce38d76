"""The supervisor on the in-memory runtime: lost members, failover, and
container actors that crash."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from supervisor_support import (
    KV,
    LIMIT,
    PROBE,
    Lag,
    converged,
    crash_actor,
    event_kinds,
    expected_keys,
    keys_of,
    kv_runtime,
    service_objects,
    service_spec,
    until,
    write_keys,
)

from rolecall.actors import ActorState
from rolecall.hooks_protocol import HookName, Role
from rolecall.supervisor import ServiceEvent, _acting, open_supervisor
from rolecall.testing import (
    KV_DATA_PATH,
    FakeHook,
    FakeHookCall,
    FakeRuntime,
    fake_kv_image,
)

pytestmark = pytest.mark.anyio


class TestFailures:
    """Lost members are fenced, replaced or restarted, and data stays."""

    async def test_a_dead_standalone_is_restarted_in_place_with_its_data(
        self,
    ) -> None:
        """A crashed standalone container comes back, same member and same keys."""
        runtime = kv_runtime()
        with anyio.fail_after(LIMIT):
            async with (
                open_supervisor(runtime, probe_interval=PROBE) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(service_spec())
                before = await converged(supervisor, events)
                write_keys(runtime, before, range(20))
                runtime.crash(before.member("cache-1").container_id)
                await until(events, "member_lost")
                after = await supervisor.wait_converged("cache")
                timeline = await until(events, "converged")

        member = after.member("cache-1")
        assert (member.alive, member.ready, member.role) == (
            True,
            True,
            Role.STANDALONE,
        )
        assert member.container_id == before.member("cache-1").container_id
        assert member.epoch == 2
        assert keys_of(runtime, after, "cache-1") == expected_keys(range(20))
        assert [kind for kind, _ in event_kinds(timeline)][:1] == ["member_restarted"]

    async def test_a_crashed_primary_fails_over_to_the_replica_with_most_data(
        self,
    ) -> None:
        """The primary is fenced, the most caught-up replica promoted on the
        positions asked for at failover time, and the old primary rejoins as
        a replica, with every key kept."""
        lag = Lag()
        runtime = kv_runtime(lag=lag.image())
        spec = service_spec(image="lag:fake", topology="redundant", replicas=2)
        with anyio.fail_after(LIMIT):
            async with (
                open_supervisor(runtime, probe_interval=PROBE) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(spec)
                before = await converged(supervisor, events)
                write_keys(runtime, before, range(10))
                # cache-2 stops pulling; cache-3 keeps up with every write.
                lag.held.add("rolecall-cache-2")
                write_keys(runtime, before, range(10, 30))
                await lag.wait_offset("rolecall-cache-3", 30)
                held_offset = lag.offsets["rolecall-cache-2"]

                runtime.crash(before.member("cache-1").container_id)
                timeline = await until(events, "converged")
                after = supervisor.status("cache")
                objects = await service_objects(runtime)

        kinds = event_kinds(timeline)
        lost = kinds.index(("member_lost", "cache-1"))
        fenced = kinds.index(("member_fenced", "cache-1"))
        failover = kinds.index(("failover", "cache-3"))
        probed = next(e for e in timeline if e.kind == "candidates_probed")
        rejoined = kinds.index(("member_restarted", "cache-1"))
        assert lost < fenced < kinds.index(("candidates_probed", None)) < failover
        assert failover < rejoined < len(kinds) - 1
        assert probed.fields["positions"] == {"cache-2": held_offset, "cache-3": 30}
        assert not any(
            kind in {"member_created", "member_removed"} for kind, _ in kinds
        )
        assert held_offset < 30

        assert after.primary == "cache-3"
        assert [(m.id, m.role, m.following) for m in after.members] == [
            ("cache-1", Role.REPLICA, "cache-3"),
            ("cache-2", Role.REPLICA, "cache-3"),
            ("cache-3", Role.PRIMARY, None),
        ]
        assert after.epoch > before.epoch
        assert after.member("cache-3").epoch > before.member("cache-1").epoch
        assert after.member("cache-1").epoch > after.member("cache-3").epoch
        for member in ("cache-1", "cache-2", "cache-3"):
            assert keys_of(runtime, after, member) == expected_keys(range(30))

        assert sorted(objects[0]) == [
            "rolecall-cache-1",
            "rolecall-cache-2",
            "rolecall-cache-3",
        ]

    async def test_a_failed_promotion_is_retried(self) -> None:
        """When the promotion's role hook fails, the fenced primary stays down
        and the next pass promotes the replica after all."""
        lag = Lag()
        runtime = kv_runtime(lag=lag.image())
        with anyio.fail_after(LIMIT):
            async with (
                open_supervisor(runtime, probe_interval=PROBE) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(
                    service_spec(image="lag:fake", topology="redundant")
                )
                before = await converged(supervisor, events)
                write_keys(runtime, before, range(10))
                await lag.wait_offset("rolecall-cache-2", 10)
                runtime.fail_next_exec(
                    container_id="rolecall-cache-2", hook="role", stderr="no quorum"
                )
                runtime.crash(before.member("cache-1").container_id)
                failed = await until(events, "step_failed")
                during = supervisor.status("cache")
                recovered = await until(events, "converged")
                after = supervisor.status("cache")

        assert ("member_fenced", "cache-1") in event_kinds(failed)
        assert "no quorum" in failed[-1].detail
        lost = during.member("cache-1")
        assert (lost.alive, lost.ready, lost.role) == (False, False, Role.PRIMARY)
        assert during.primary is None
        assert during.last_error is not None
        assert "no quorum" in during.last_error
        assert ("failover", "cache-2") in event_kinds(recovered)
        assert ("member_fenced", "cache-1") not in event_kinds(recovered)
        assert after.primary == "cache-2"
        assert [(m.id, m.role) for m in after.members] == [
            ("cache-1", Role.REPLICA),
            ("cache-2", Role.PRIMARY),
        ]
        assert keys_of(runtime, after, "cache-2") == expected_keys(range(10))

    async def test_a_replica_that_never_synced_is_never_promoted(self) -> None:
        """With no synced replica the lost primary is restarted in place, not
        replaced by an empty replica; with its link down the service is
        degraded, never converged."""
        runtime = kv_runtime(nosync=_never_syncs("rolecall-cache-2"))
        with anyio.fail_after(LIMIT):
            async with (
                open_supervisor(runtime, probe_interval=PROBE) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(
                    service_spec(image="nosync:fake", topology="redundant")
                )
                degraded = (await until(events, "degraded"))[-1]
                before = supervisor.status("cache")
                write_keys(runtime, before, range(10))
                runtime.crash(before.member("cache-1").container_id)
                timeline = await until(events, "degraded")
                after = supervisor.status("cache")

        kinds = [kind for kind, _ in event_kinds(timeline)]
        assert degraded.fields["link_down"] == ["cache-2"]
        assert (before.converged, before.member("cache-2").healthy) == (False, False)
        assert not after.converged
        assert "member_fenced" not in kinds
        assert ("member_restarted", "cache-1") in event_kinds(timeline)
        assert after.primary == "cache-1"
        assert [(m.id, m.role) for m in after.members] == [
            ("cache-1", Role.PRIMARY),
            ("cache-2", Role.REPLICA),
        ]
        assert keys_of(runtime, after, "cache-1") == expected_keys(range(10))
        assert keys_of(runtime, after, "cache-2") == {}

    async def test_status_is_not_converged_while_a_failure_is_handled(self) -> None:
        """After a member is lost, wait_converged waits for the recovery."""
        runtime = kv_runtime()
        with anyio.fail_after(LIMIT):
            async with (
                open_supervisor(runtime, probe_interval=PROBE) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(service_spec(topology="redundant"))
                before = await converged(supervisor, events)
                runtime.crash(before.member("cache-2").container_id)
                await until(events, "member_lost")
                during = supervisor.status("cache")
                after = await supervisor.wait_converged("cache")

        assert not during.converged
        assert after.converged
        assert after.member("cache-2").alive
        assert after.member("cache-2").role is Role.REPLICA


class TestRestartedSupervisor:
    """A supervisor opened again finds the members a previous one left."""

    async def test_a_new_supervisor_keeps_the_primary_chosen_by_a_failover(
        self,
    ) -> None:
        """After a failover, a new supervisor keeps the promoted primary and
        its data, and the old primary that rejoined as its replica, and
        creates no container."""
        lag = Lag()
        runtime = kv_runtime(lag=lag.image())
        spec = service_spec(image="lag:fake", topology="redundant")
        with anyio.fail_after(LIMIT):
            async with (
                open_supervisor(runtime, probe_interval=PROBE) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(spec)
                before = await converged(supervisor, events)
                write_keys(runtime, before, range(5))
                await lag.wait_offset("rolecall-cache-2", 5)
                runtime.crash(before.member("cache-1").container_id)
                await until(events, "converged")
                first = supervisor.status("cache")

            async with open_supervisor(runtime, probe_interval=PROBE) as supervisor:
                await supervisor.apply(spec)
                second = await supervisor.wait_converged("cache")

            containers = await runtime.list_containers(labels={})

        assert first.primary == "cache-2"
        assert second.primary == "cache-2"
        assert keys_of(runtime, second, "cache-2") == expected_keys(range(5))
        assert sorted(c.name for c in containers) == [
            "rolecall-cache-1",
            "rolecall-cache-2",
        ]
        assert second.member("cache-1").following == "cache-2"


class TestCrashedActors:
    """A container actor that ended is replaced on the same container."""

    async def test_a_crashed_container_actor_is_replaced(self) -> None:
        """A member whose actor crashed gets a new actor, is prepared again and
        takes its role back, on the same container with the same data."""
        runtime = kv_runtime()
        with anyio.fail_after(LIMIT):
            async with (
                open_supervisor(runtime, probe_interval=PROBE) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(service_spec())
                before = await converged(supervisor, events)
                write_keys(runtime, before, range(5))
                old_ref = crash_actor(supervisor)
                await old_ref.wait_stopped()
                timeline = await until(events, "converged")
                after = supervisor.status("cache")
                new_ref = supervisor.controllers["cache"].members["cache-1"].ref

        assert old_ref.state is ActorState.CRASHED
        assert new_ref is not old_ref
        kinds = event_kinds(timeline)
        assert kinds.index(("actor_replaced", "cache-1")) < kinds.index(
            ("member_prepared", "cache-1")
        )
        assert ("role_applied", "cache-1") in kinds
        member = after.member("cache-1")
        assert (member.role, member.ready, member.epoch) == (Role.STANDALONE, True, 2)
        assert member.container_id == before.member("cache-1").container_id
        assert keys_of(runtime, after, "cache-1") == expected_keys(range(5))

    async def test_a_primary_whose_actor_crashed_stays_primary(self) -> None:
        """A new actor for the primary keeps its role: no replica is promoted."""
        runtime = kv_runtime()
        with anyio.fail_after(LIMIT):
            async with (
                open_supervisor(runtime, probe_interval=PROBE) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(service_spec(topology="redundant"))
                before = await converged(supervisor, events)
                write_keys(runtime, before, range(5))
                await crash_actor(supervisor).wait_stopped()
                timeline = await until(events, "converged")
                after = supervisor.status("cache")

        kinds = [kind for kind, _ in event_kinds(timeline)]
        assert "member_fenced" not in kinds
        assert "failover" not in kinds
        assert after.primary == "cache-1"
        assert [(m.id, m.role, m.following) for m in after.members] == [
            ("cache-1", Role.PRIMARY, None),
            ("cache-2", Role.REPLICA, "cache-1"),
        ]
        assert after.member("cache-1").epoch > before.member("cache-1").epoch
        assert keys_of(runtime, after, "cache-1") == expected_keys(range(5))


def _never_syncs(name: str) -> dict[str, FakeHook]:
    """The key-value image, but container ``name`` never completes a sync."""
    hooks = fake_kv_image()

    def role(call: FakeHookCall) -> dict[str, Any]:
        if call.container.name != name or call.request.get("role") != "replica":
            result = hooks[HookName.ROLE](call)
            assert isinstance(result, dict)  # the key-value hooks are synchronous
            return result

        disk = call.volumes[KV_DATA_PATH]
        disk.update(role="replica", epoch=call.request["epoch"], link_up=False)
        return {"role": "replica", "epoch": disk["epoch"], "link_up": False}

    def status(call: FakeHookCall) -> dict[str, Any]:
        disk = call.volumes[KV_DATA_PATH]
        if call.container.name != name or disk.get("role") != "replica":
            result = hooks[HookName.STATUS](call)
            assert isinstance(result, dict)  # the key-value hooks are synchronous
            return result

        return {
            "role": "replica",
            "healthy": True,
            "replication_offset": disk["offset"],
            "link_up": False,
            "epoch": disk["epoch"],
            "details": {"synced": False},
        }

    return {**hooks, HookName.ROLE: role, HookName.STATUS: status}


class _WedgedRuntime(FakeRuntime):
    """An engine that never finishes starting the containers in `wedged`,
    as one wedged on a container does (docker/for-linux#891)."""

    wedged: set[str]

    async def start_container(self, container_id: str) -> None:
        if container_id in getattr(self, "wedged", set()):
            await anyio.sleep_forever()

        await super().start_container(container_id)


class TestWedgedEngine:
    """A restart the engine never finishes holds up nothing else."""

    async def test_a_lost_writer_fails_over_while_a_replicas_restart_hangs(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With one replica's restart hanging, killing the primary still
        promotes the other replica; the hung restart is reported."""
        monkeypatch.setattr(_acting, "RESTART_TIMEOUT", 0.5)
        runtime = _WedgedRuntime()
        runtime.add_image(KV, hooks=fake_kv_image())
        spec = service_spec(topology="redundant", replicas=2)
        with anyio.fail_after(LIMIT):
            async with open_supervisor(runtime, probe_interval=PROBE) as supervisor:
                async with supervisor.open_timeline() as events:
                    await supervisor.apply(spec)
                    before = await supervisor.wait_converged("cache", timeout=LIMIT)
                    stuck = before.member("cache-3").container_id
                    runtime.wedged = {stuck}
                    runtime.crash(stuck)
                    runtime.crash(before.member("cache-1").container_id)
                    seen: list[ServiceEvent] = []
                    async for event in events:
                        seen.append(event)
                        kinds = {e.kind for e in seen}
                        if {"failover", "step_failed"} <= kinds:
                            break
                after = supervisor.status("cache")

        failed = [e.detail for e in seen if e.kind == "step_failed"]
        assert after.primary == "cache-2"
        assert any("could not restart member 'cache-3'" in d for d in failed)
