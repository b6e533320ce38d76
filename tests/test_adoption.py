"""A supervisor opened again adopts the containers an earlier one left, with
and without the journal, and finishes or undoes what was half done."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from attrs import evolve
from supervisor_support import (
    LIMIT,
    PROBE,
    Lag,
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

from rolecall.hooks_protocol import Role, StateCorruptError, StateLockedError
from rolecall.supervisor import (
    LABEL_MANAGED,
    LABEL_MEMBER,
    LABEL_SERVICE,
    open_supervisor,
)
from rolecall.supervisor._journal import Journal
from rolecall.supervisor._service_record import (
    ChangeRecord,
    record_from_data,
    record_to_data,
)
from rolecall.testing import fake_kv_image

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

SECRET = "s3cret-never-on-disk"  # noqa: S105  (a test value, to look for)


def _edit_record(state: Path, **changes: object) -> None:
    """Rewrite the service's journal record, as a crash at some point would
    have left it."""
    journal = Journal.open(state)
    try:
        data = journal.load("cache")
        assert data is not None
        record = evolve(record_from_data(data), **changes)
        journal.save("cache", record_to_data(record))
    finally:
        journal.close()


class TestResume:
    """What the journal keeps outlives the control plane."""

    async def test_a_conversion_survives_and_nothing_is_redone(
        self, tmp_path: Path
    ) -> None:
        """Reopened on the same spec with resume, the converted shape stays:
        same containers, same roles and epochs, no step taken but configure
        (replica first) with the spec adopted under."""
        runtime = kv_runtime()
        with anyio.fail_after(LIMIT):
            async with open_supervisor(
                runtime, probe_interval=PROBE, state_dir=tmp_path
            ) as supervisor:
                await supervisor.apply(service_spec())
                await supervisor.wait_converged("cache")
                before = await supervisor.convert("cache", "redundant")

            async with (
                open_supervisor(
                    runtime, probe_interval=PROBE, state_dir=tmp_path
                ) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(service_spec(), resume=True)
                timeline = await until(events, "converged")
                after = supervisor.status("cache")

        assert event_kinds(timeline) == [
            ("member_adopted", "cache-1"),
            ("member_adopted", "cache-2"),
            ("member_configured", "cache-2"),
            ("member_configured", "cache-1"),
            ("converged", "cache-1"),
        ]
        assert after.topology.value == "redundant"
        assert [(m.id, m.role, m.epoch, m.following) for m in after.members] == [
            (m.id, m.role, m.epoch, m.following) for m in before.members
        ]
        assert after.epoch == before.epoch

    async def test_without_resume_the_callers_spec_wins(self, tmp_path: Path) -> None:
        """Applied without resume, the caller's spec is the desired state:
        the converted service goes back to standalone, keeping the primary."""
        runtime = kv_runtime()
        with anyio.fail_after(LIMIT):
            async with open_supervisor(
                runtime, probe_interval=PROBE, state_dir=tmp_path
            ) as supervisor:
                await supervisor.apply(service_spec())
                first = await supervisor.wait_converged("cache")
                write_keys(runtime, first, range(3))
                await supervisor.convert("cache", "redundant")

            async with open_supervisor(
                runtime, probe_interval=PROBE, state_dir=tmp_path
            ) as supervisor:
                await supervisor.apply(service_spec())
                after = await supervisor.wait_converged("cache")

        assert [(m.id, m.role) for m in after.members] == [("cache-1", Role.STANDALONE)]
        assert keys_of(runtime, after, "cache-1") == expected_keys(range(3))

    async def test_an_epoch_written_but_never_sent_is_not_used_again(
        self, tmp_path: Path
    ) -> None:
        """A control plane that died after writing epoch 9 and before sending
        it: the next role command carries 10."""
        runtime = kv_runtime()
        with anyio.fail_after(LIMIT):
            async with open_supervisor(
                runtime, probe_interval=PROBE, state_dir=tmp_path
            ) as supervisor:
                await supervisor.apply(service_spec())
                await supervisor.wait_converged("cache")

            _edit_record(
                tmp_path,
                epoch=9,
                change=ChangeRecord("role", "cache-1", Role.PRIMARY, None, 9),
            )
            async with (
                open_supervisor(
                    runtime, probe_interval=PROBE, state_dir=tmp_path
                ) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(service_spec(topology="redundant"))
                timeline = await until(events, "converged")

        epochs = [e.fields["epoch"] for e in timeline if e.kind == "role_applied"]
        assert epochs == [10, 11]

    async def test_numbers_continue_and_a_cut_short_create_is_undone(
        self, tmp_path: Path
    ) -> None:
        """A create cut short after its volume and before its container: the
        volume goes, and the next member takes the next number."""
        runtime = kv_runtime()
        with anyio.fail_after(LIMIT):
            async with open_supervisor(
                runtime, probe_interval=PROBE, state_dir=tmp_path
            ) as supervisor:
                await supervisor.apply(service_spec())
                await supervisor.wait_converged("cache")

            labels = {LABEL_MANAGED: "true", LABEL_SERVICE: "cache"}
            await runtime.create_volume(
                "rolecall-cache-2-data", labels={**labels, LABEL_MEMBER: "cache-2"}
            )
            _edit_record(
                tmp_path, next_number=3, change=ChangeRecord("create", "cache-2")
            )
            async with open_supervisor(
                runtime, probe_interval=PROBE, state_dir=tmp_path
            ) as supervisor:
                await supervisor.apply(service_spec(topology="redundant"))
                after = await supervisor.wait_converged("cache")

            containers, volumes, _ = await service_objects(runtime)

        assert [m.id for m in after.members] == ["cache-1", "cache-3"]
        assert sorted(containers) == ["rolecall-cache-1", "rolecall-cache-3"]
        assert sorted(volumes) == ["rolecall-cache-1-data", "rolecall-cache-3-data"]

    async def test_no_secret_reaches_the_disk(self, tmp_path: Path) -> None:
        """Values of env keys marked secret are in no journal file."""
        runtime = kv_runtime()
        spec = service_spec(
            env={"PASSWORD": SECRET}, secret_keys=frozenset({"PASSWORD"})
        )
        with anyio.fail_after(LIMIT):
            async with open_supervisor(
                runtime, probe_interval=PROBE, state_dir=tmp_path
            ) as supervisor:
                await supervisor.apply(spec)
                await supervisor.wait_converged("cache")
                await supervisor.convert("cache", "redundant")

        files = [path for path in tmp_path.rglob("*") if path.is_file()]  # noqa: ASYNC240  (a test's look at its own tmp files)
        assert any(path.suffix == ".rec" for path in files)
        assert not [path for path in files if SECRET.encode() in path.read_bytes()]


class TestRelease:
    """A released service applied again resumes from what was known."""

    async def test_a_released_replica_keeps_whom_it_follows(self) -> None:
        """Applied again after a release, without a state directory, the
        service adopts its members and sends no role (it configures them
        again): the released record says whom the replica follows."""
        runtime = kv_runtime()
        spec = service_spec(topology="redundant")
        with anyio.fail_after(LIMIT):
            async with (
                open_supervisor(runtime, probe_interval=PROBE) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(spec)
                before = await converged(supervisor, events)
                await supervisor.release("cache")
                await supervisor.apply(spec)
                timeline = await until(events, "converged")
                after = supervisor.status("cache")

        assert event_kinds(timeline) == [
            ("member_adopted", "cache-1"),
            ("member_adopted", "cache-2"),
            ("member_configured", "cache-2"),
            ("member_configured", "cache-1"),
            ("converged", "cache-1"),
        ]
        assert [(m.id, m.role, m.epoch, m.following) for m in after.members] == [
            (m.id, m.role, m.epoch, m.following) for m in before.members
        ]


class TestDown:
    """A container that is down cannot be asked: the journal tells."""

    @pytest.mark.parametrize("kept", [True, False], ids=["journal", "no-journal"])
    async def test_a_primary_that_died_meanwhile_never_runs_beside_a_writer(
        self, tmp_path: Path, kept: bool
    ) -> None:
        """A primary found down at adoption: with the journal, which knows
        the replica synced, the replica takes over and the old one follows
        it; without it, the old primary is started in place as the writer.
        The data stays either way, and there is one writer."""
        lag = Lag()
        runtime = kv_runtime(lag=lag.image())
        state = tmp_path if kept else None
        spec = service_spec(image="lag:fake", topology="redundant")
        with anyio.fail_after(LIMIT):
            async with open_supervisor(
                runtime, probe_interval=PROBE, state_dir=state
            ) as supervisor:
                await supervisor.apply(spec)
                before = await supervisor.wait_converged("cache")
                write_keys(runtime, before, range(4))
                await lag.wait_offset("rolecall-cache-2", 4)

            # The primary dies while no control plane watches.
            runtime.crash(before.member("cache-1").container_id)
            async with (
                open_supervisor(
                    runtime, probe_interval=PROBE, state_dir=state
                ) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(spec)
                after = await converged(supervisor, events)

            containers, _, _ = await service_objects(runtime)

        writer = "cache-2" if kept else "cache-1"
        assert after.primary == writer
        assert [m.id for m in after.members if m.role is Role.PRIMARY] == [writer]
        assert keys_of(runtime, after, writer) == expected_keys(range(4))
        assert sorted(containers) == ["rolecall-cache-1", "rolecall-cache-2"]
        assert after.member("cache-1" if kept else "cache-2").following == writer


class TestRefusals:
    """A damaged journal, a second control plane, or another image stops."""

    async def test_containers_of_another_image_are_not_adopted(self) -> None:
        """A spec naming another image than the containers run fails its
        passes with a message that says what to do, and changes nothing."""
        runtime = kv_runtime(other=fake_kv_image())
        with anyio.fail_after(LIMIT):
            async with open_supervisor(runtime, probe_interval=PROBE) as supervisor:
                await supervisor.apply(service_spec())
                await supervisor.wait_converged("cache")

            async with (
                open_supervisor(runtime, probe_interval=PROBE) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(service_spec(image="other:fake"))
                failed = (await until(events, "step_failed"))[-1]

            containers, _, _ = await service_objects(runtime)

        assert failed.detail.startswith(
            "service 'cache' has containers of image kv:fake on the engine and"
            " its spec names 'other:fake': changing the image"
        )
        assert containers == ["rolecall-cache-1"]

    async def test_a_damaged_journal_stops_the_open(self, tmp_path: Path) -> None:
        """Opening on a damaged record fails, naming the file."""
        runtime = kv_runtime()
        with anyio.fail_after(LIMIT):
            async with open_supervisor(
                runtime, probe_interval=PROBE, state_dir=tmp_path
            ) as supervisor:
                await supervisor.apply(service_spec())
                await supervisor.wait_converged("cache")

            newest = max((tmp_path / "journal" / "cache").glob("*.rec"))
            newest.write_bytes(newest.read_bytes()[:-3])
            with pytest.raises(StateCorruptError) as damaged:
                async with open_supervisor(runtime, state_dir=tmp_path):
                    pass

        assert damaged.value.path == str(newest)

    async def test_a_second_control_plane_on_the_directory_is_refused(
        self, tmp_path: Path
    ) -> None:
        """While one supervisor holds the directory, another cannot open it."""
        runtime = kv_runtime()
        with anyio.fail_after(LIMIT):
            async with open_supervisor(runtime, state_dir=tmp_path):
                with pytest.raises(StateLockedError):
                    async with open_supervisor(runtime, state_dir=tmp_path):
                        pass
