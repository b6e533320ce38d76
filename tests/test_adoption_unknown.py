"""With no journal record of them, stopped members are never started as a
guess nor removed: when several may hold the newest data, adoption refuses
until an operator chooses."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from supervisor_support import (
    LIMIT,
    PROBE,
    converged,
    event_kinds,
    expected_keys,
    keys_of,
    kv_runtime,
    service_objects,
    service_spec,
    until,
    write_keys,
)

from rolecall.actors import ContainerState
from rolecall.hooks_protocol import Role
from rolecall.supervisor import ServiceStatus, open_supervisor
from rolecall.testing import FakeRuntime, fake_kv_keys

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

_QUICK = {"backoff_first": 0.01, "backoff_cap": 0.05}


async def _stopped_with_cache_2_ahead(
    runtime: FakeRuntime, state: Path | None
) -> ServiceStatus:
    """A redundant service whose primary moved to cache-2, which then took
    writes cache-1 never got; both stopped while no control plane ran."""
    spec = service_spec(topology="redundant", supervision=_QUICK)
    async with (
        open_supervisor(runtime, probe_interval=PROBE, state_dir=state) as supervisor,
        supervisor.open_timeline() as events,
    ):
        await supervisor.apply(spec)
        first = await converged(supervisor, events)
        write_keys(runtime, first, range(3))
        moved = await supervisor.switchover("cache", "cache-2")

    write_keys(runtime, moved, range(3, 6))
    for member in moved.members:
        runtime.crash(member.container_id)

    return moved


class TestSeveralStoppedAndNoJournal:
    """Nothing is started or removed while the writer is a guess."""

    @pytest.mark.parametrize("topology", ["redundant", "standalone"])
    async def test_adoption_refuses_and_touches_nothing(self, topology: str) -> None:
        """Every member stopped and no journal: the pass fails with a message
        that lists the members and says how to choose; both containers and
        volumes stay, neither is started."""
        runtime = kv_runtime()
        spec = service_spec(topology=topology, supervision=_QUICK)
        with anyio.fail_after(LIMIT):
            moved = await _stopped_with_cache_2_ahead(runtime, None)
            async with (
                open_supervisor(runtime, probe_interval=PROBE) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(spec)
                await until(events, "step_failed")
                timeline = await until(events, "step_failed")
                status = supervisor.status("cache")

            containers, volumes, _ = await service_objects(runtime)
            states = [runtime.container(m.container_id).state for m in moved.members]

        refused = timeline[-1]
        assert event_kinds(timeline) == [("step_failed", None)]
        assert refused.fields["error_type"] == "WriterUnknownError"
        assert refused.detail.startswith(
            "service 'cache' has 2 stopped members that no journal record knows"
            " (cache-1: container rolecall-cache-1, created as primary at epoch"
        )
        assert "`docker rm rolecall-cache-1`, for example" in refused.detail
        assert status.members == ()
        assert sorted(containers) == ["rolecall-cache-1", "rolecall-cache-2"]
        assert sorted(volumes) == ["rolecall-cache-1-data", "rolecall-cache-2-data"]
        assert states == [ContainerState.EXITED, ContainerState.EXITED]

    async def test_the_member_left_after_a_choice_is_the_writer(self) -> None:
        """Once the operator removes cache-1's container, cache-2 is started
        as the writer with every key it had, its new replica takes a fresh
        number, and cache-1's volume keeps its data."""
        runtime = kv_runtime()
        spec = service_spec(topology="redundant", supervision=_QUICK)
        with anyio.fail_after(LIMIT):
            moved = await _stopped_with_cache_2_ahead(runtime, None)
            async with (
                open_supervisor(runtime, probe_interval=PROBE) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(spec)
                await until(events, "step_failed")
                await runtime.remove_container(moved.member("cache-1").container_id)
                after = await converged(supervisor, events)

            _, volumes, _ = await service_objects(runtime)

        assert after.primary == "cache-2"
        assert [(m.id, m.role) for m in after.members] == [
            ("cache-2", Role.PRIMARY),
            ("cache-3", Role.REPLICA),
        ]
        assert keys_of(runtime, after, "cache-2") == expected_keys(range(6))
        assert keys_of(runtime, after, "cache-3") == expected_keys(range(6))
        assert sorted(volumes) == [
            "rolecall-cache-1-data",
            "rolecall-cache-2-data",
            "rolecall-cache-3-data",
        ]
        assert runtime.volume_data("rolecall-cache-1-data")["keys"] == expected_keys(
            range(3)
        )

    async def test_with_the_journal_the_recorded_writer_comes_back(
        self, tmp_path: Path
    ) -> None:
        """The same stop with the journal kept: no refusal, cache-2 (the
        writer the journal knows) comes back with every key."""
        runtime = kv_runtime()
        spec = service_spec(topology="redundant", supervision=_QUICK)
        with anyio.fail_after(LIMIT):
            await _stopped_with_cache_2_ahead(runtime, tmp_path)
            async with (
                open_supervisor(
                    runtime, probe_interval=PROBE, state_dir=tmp_path
                ) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(spec)
                timeline = await until(events, "converged")
                after = supervisor.status("cache")

        assert "step_failed" not in [kind for kind, _ in event_kinds(timeline)]
        assert after.primary == "cache-2"
        assert keys_of(runtime, after, "cache-2") == expected_keys(range(6))
        assert fake_kv_keys(
            runtime, after.member("cache-1").container_id
        ) == expected_keys(range(6))

    async def test_one_stopped_member_alone_is_started_in_place(self) -> None:
        """A single stopped member with no journal holds the only copy: it is
        started in place as the writer, with its keys."""
        runtime = kv_runtime()
        with anyio.fail_after(LIMIT):
            async with open_supervisor(runtime, probe_interval=PROBE) as supervisor:
                await supervisor.apply(service_spec())
                first = await supervisor.wait_converged("cache")
                write_keys(runtime, first, range(4))

            runtime.crash(first.member("cache-1").container_id)
            async with open_supervisor(runtime, probe_interval=PROBE) as supervisor:
                await supervisor.apply(service_spec())
                after = await supervisor.wait_converged("cache")

        assert [(m.id, m.role) for m in after.members] == [("cache-1", Role.STANDALONE)]
        assert (
            after.member("cache-1").container_id == first.member("cache-1").container_id
        )
        assert keys_of(runtime, after, "cache-1") == expected_keys(range(4))
