"""One control plane manages a service at a time: the claim on the engine
decides, not the local disk."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import anyio
import pytest
from supervisor_support import (
    LIMIT,
    PROBE,
    event_kinds,
    kv_runtime,
    service_objects,
    service_spec,
    until,
)

from rolecall._inspect import remove_service
from rolecall.hooks_protocol import (
    ServiceClaimedError,
    ServiceFailedError,
    StateCorruptError,
)
from rolecall.supervisor import (
    ClaimOwner,
    ControlPlaneIdentity,
    Supervisor,
    claim_name,
    open_supervisor,
)
from rolecall.supervisor._claim import claim_service
from rolecall.supervisor._identity import IDENTITY_FILE
from rolecall.testing import FakeRuntime, fake_kv_image

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

CLAIM = claim_name("cache")


def _id_of(state: Path) -> str:
    return (state / IDENTITY_FILE).read_text().strip()


class TestIdentity:
    """A control plane's id lives in its state directory."""

    async def test_the_id_is_made_once_and_kept(self, tmp_path: Path) -> None:
        """The first open writes a private id file; later opens keep it."""
        runtime = kv_runtime()
        async with open_supervisor(runtime, state_dir=tmp_path) as first:
            made = first.identity

        async with open_supervisor(runtime, state_dir=tmp_path) as second:
            kept = second.identity

        path = tmp_path / IDENTITY_FILE
        assert (path.stat().st_mode & 0o777, len(made.id)) == (0o600, 32)
        assert (
            kept
            == made
            == ControlPlaneIdentity(
                id=_id_of(tmp_path), host=socket.gethostname(), pid=os.getpid()
            )
        )

    async def test_two_directories_are_two_control_planes(self, tmp_path: Path) -> None:
        """Another state directory is another id."""
        runtime = kv_runtime()
        async with open_supervisor(runtime, state_dir=tmp_path / "a") as one:
            first = one.identity.id

        async with open_supervisor(runtime, state_dir=tmp_path / "b") as other:
            second = other.identity.id

        assert first != second

    async def test_a_damaged_id_stops_the_open(self, tmp_path: Path) -> None:
        """An id file that holds something else is named, never replaced."""
        runtime = kv_runtime()
        (tmp_path / IDENTITY_FILE).write_text("not an id\n")
        with pytest.raises(StateCorruptError) as damaged:
            async with open_supervisor(runtime, state_dir=tmp_path):
                pass

        assert damaged.value.path == str(tmp_path / IDENTITY_FILE)
        assert "--take-over" in str(damaged.value)
        assert (tmp_path / IDENTITY_FILE).read_text() == "not an id\n"


class TestRefusal:
    """A service another control plane claimed is left to it."""

    async def test_a_second_control_plane_is_refused_with_the_owner_named(
        self, tmp_path: Path
    ) -> None:
        """The second gives the service up, naming the first's id, host and
        pid; the first keeps its containers and its one writer."""
        runtime = kv_runtime()
        spec = service_spec(topology="redundant")
        with anyio.fail_after(LIMIT):
            async with open_supervisor(
                runtime, probe_interval=PROBE, state_dir=tmp_path / "a"
            ) as first:
                await first.apply(spec)
                before = await first.wait_converged("cache")
                async with (
                    open_supervisor(
                        runtime, probe_interval=PROBE, state_dir=tmp_path / "b"
                    ) as second,
                    second.open_timeline() as events,
                ):
                    await second.apply(spec)
                    seen = await until(events, "service_failed")
                    refused = second.status("cache")

                after = await first.wait_converged("cache")
                containers, _, _ = await service_objects(runtime)

        owner = _id_of(tmp_path / "a")
        assert event_kinds(seen) == [("service_failed", None)]
        assert refused.failure is not None
        assert refused.failure.startswith(
            f"service 'cache' is managed by another control plane, {owner}"
            f" (host {socket.gethostname()}, pid {os.getpid()}, since "
        )
        assert "`rolecall run --take-over cache`" in refused.failure
        assert refused.members == ()
        assert [m.container_id for m in after.members] == [
            m.container_id for m in before.members
        ]
        assert (after.primary, after.epoch) == (before.primary, before.epoch)
        assert sorted(containers) == ["rolecall-cache-1", "rolecall-cache-2"]

    async def test_the_claim_outlives_a_normal_stop(self, tmp_path: Path) -> None:
        """After the first control plane stops, the service is still its:
        another is refused, and the first resumes it."""
        runtime = kv_runtime()
        with anyio.fail_after(LIMIT):
            async with open_supervisor(
                runtime, probe_interval=PROBE, state_dir=tmp_path / "a"
            ) as first:
                await first.apply(service_spec())
                before = await first.wait_converged("cache")

            async with (
                open_supervisor(
                    runtime, probe_interval=PROBE, state_dir=tmp_path / "b"
                ) as second,
                second.open_timeline() as events,
            ):
                await second.apply(service_spec())
                await until(events, "service_failed")

            async with (
                open_supervisor(
                    runtime, probe_interval=PROBE, state_dir=tmp_path / "a"
                ) as again,
                again.open_timeline() as events,
            ):
                await again.apply(service_spec())
                seen = await until(events, "member_adopted")
                after = await again.wait_converged("cache")

        assert event_kinds(seen) == [("member_adopted", "cache-1")]
        assert after.member("cache-1").container_id == (
            before.member("cache-1").container_id
        )
        assert ClaimOwner.read(await _claim(runtime)).id == _id_of(tmp_path / "a")

    async def test_removing_a_service_another_claims_removes_nothing(
        self, tmp_path: Path
    ) -> None:
        """`remove` on the refused control plane raises and leaves the
        other's containers and claim."""
        runtime = kv_runtime()
        with anyio.fail_after(LIMIT):
            async with open_supervisor(
                runtime, probe_interval=PROBE, state_dir=tmp_path / "a"
            ) as first:
                await first.apply(service_spec())
                await first.wait_converged("cache")

            async with (
                open_supervisor(
                    runtime, probe_interval=PROBE, state_dir=tmp_path / "b"
                ) as second,
                second.open_timeline() as events,
            ):
                await second.apply(service_spec())
                await until(events, "service_failed")
                with pytest.raises(ServiceClaimedError) as refused:
                    await second.remove("cache")

            containers, volumes, _ = await service_objects(runtime)

        assert refused.value.owner == _id_of(tmp_path / "a")
        assert "`rolecall down cache --take-over`" in str(refused.value)
        assert (containers, volumes) == (
            ["rolecall-cache-1"],
            ["rolecall-cache-1-data"],
        )
        assert ClaimOwner.read(await _claim(runtime)).id == _id_of(tmp_path / "a")

    async def test_removing_with_take_over_removes_another_s_service(
        self, tmp_path: Path
    ) -> None:
        """`remove(take_over=True)` on the refused control plane removes the
        service's containers, volumes and claim, and names what it removed."""
        runtime = kv_runtime()
        with anyio.fail_after(LIMIT):
            async with open_supervisor(
                runtime, probe_interval=PROBE, state_dir=tmp_path / "a"
            ) as first:
                await first.apply(service_spec())
                await first.wait_converged("cache")

            async with (
                open_supervisor(
                    runtime, probe_interval=PROBE, state_dir=tmp_path / "b"
                ) as second,
                second.open_timeline() as events,
            ):
                await second.apply(service_spec())
                await until(events, "service_failed")
                removed = await second.remove("cache", take_over=True)

            left = await service_objects(runtime)

        assert removed == ["rolecall-cache-1"]
        assert left == ([], [], [])
        assert await runtime.volume_labels(CLAIM) is None


class TestDownWithoutControlPlane:
    """`rolecall down` with no runner removes only what its state
    directory's control plane claimed, unless told to take over."""

    @pytest.mark.parametrize(
        ("who", "take_over", "removed"),
        [
            ("holder", False, True),
            ("other", False, False),
            ("none", False, False),
            ("other", True, True),
        ],
    )
    async def test_the_claim_decides(
        self, tmp_path: Path, who: str, take_over: bool, removed: bool
    ) -> None:
        """The holder's id, or a take-over, removes; any other is refused
        with the holder named and nothing removed."""
        runtime = kv_runtime()
        with anyio.fail_after(LIMIT):
            async with open_supervisor(
                runtime, probe_interval=PROBE, state_dir=tmp_path / "a"
            ) as first:
                await first.apply(service_spec())
                await first.wait_converged("cache")

            owner = {"holder": _id_of(tmp_path / "a"), "other": "0" * 32}.get(who)
            try:
                names = await remove_service(
                    runtime, "cache", owner=owner, take_over=take_over
                )
            except ServiceClaimedError as error:
                names = [str(error)]
            left = await service_objects(runtime)
            claim = await runtime.volume_labels(CLAIM)

        if removed:
            assert (names, left, claim) == (["rolecall-cache-1"], ([], [], []), None)
        else:
            assert names[0].startswith(
                f"service 'cache' is managed by another control plane,"
                f" {_id_of(tmp_path / 'a')} (host "
            )
            assert "--state-dir, or remove it with `rolecall down cache" in names[0]
            assert left[0] == ["rolecall-cache-1"]
            assert claim is not None


class TestDownFindsNothing:
    """`down` without a runner on an engine with no container of the service."""

    async def test_it_touches_nothing(self, tmp_path: Path) -> None:
        """With its containers gone from this engine (a move put them on
        another, say), the claim and the volumes stay and nothing is
        reported removed."""
        runtime = kv_runtime()
        with anyio.fail_after(LIMIT):
            async with open_supervisor(
                runtime, probe_interval=PROBE, state_dir=tmp_path / "a"
            ) as first:
                await first.apply(service_spec())
                status = await first.wait_converged("cache")

            await runtime.remove_container(status.members[0].container_id)
            names = await remove_service(runtime, "cache", owner=_id_of(tmp_path / "a"))
            _, volumes, _ = await service_objects(runtime)
            claim = await runtime.volume_labels(CLAIM)

        assert names == []
        assert volumes == ["rolecall-cache-1-data"]
        assert claim is not None


class TestTakeOver:
    """A take-over moves the claim, and the containers with it."""

    async def test_waiting_on_a_service_claimed_by_another_fails_at_once(
        self, tmp_path: Path
    ) -> None:
        """wait_converged on a refused service raises ServiceFailedError as
        soon as it is refused, not when its timeout runs out."""
        runtime = kv_runtime()
        with anyio.fail_after(LIMIT):
            async with open_supervisor(
                runtime, probe_interval=PROBE, state_dir=tmp_path / "a"
            ) as first:
                await first.apply(service_spec())
                await first.wait_converged("cache")

            async with open_supervisor(
                runtime, probe_interval=PROBE, state_dir=tmp_path / "b"
            ) as second:
                await second.apply(service_spec())
                with pytest.raises(ServiceFailedError) as caught:
                    await second.wait_converged("cache", timeout=100 * LIMIT)

        assert caught.value.service == "cache"
        assert _id_of(tmp_path / "a") in caught.value.reason

    async def test_a_take_over_whose_spec_cannot_apply_keeps_the_claim(
        self, tmp_path: Path
    ) -> None:
        """A take-over with a spec naming another image than the containers
        run fails before the claim moves: the owner keeps managing it."""
        runtime = kv_runtime(other=fake_kv_image())
        with anyio.fail_after(LIMIT):
            async with open_supervisor(
                runtime, probe_interval=PROBE, state_dir=tmp_path / "a"
            ) as first:
                await first.apply(service_spec())
                await first.wait_converged("cache")

            async with (
                open_supervisor(
                    runtime, probe_interval=PROBE, state_dir=tmp_path / "b"
                ) as second,
                second.open_timeline() as events,
            ):
                await second.apply(service_spec(image="other:fake"), take_over=True)
                failed = (await until(events, "step_failed"))[-1]
            holder = ClaimOwner.read(await _claim(runtime))

        assert "changing the image of a running service" in failed.detail
        assert holder.id == _id_of(tmp_path / "a")

    async def test_a_take_over_adopts_and_the_old_owner_is_refused(
        self, tmp_path: Path
    ) -> None:
        """With take_over, the second adopts the same containers and says
        whom it took the service from; the first, started again, is the
        one refused."""
        runtime = kv_runtime()
        spec = service_spec(topology="redundant")
        with anyio.fail_after(LIMIT):
            async with open_supervisor(
                runtime, probe_interval=PROBE, state_dir=tmp_path / "a"
            ) as first:
                await first.apply(spec)
                before = await first.wait_converged("cache")

            async with (
                open_supervisor(
                    runtime, probe_interval=PROBE, state_dir=tmp_path / "b"
                ) as second,
                second.open_timeline() as events,
            ):
                await second.apply(spec, take_over=True)
                seen = await until(events, "member_adopted")
                after = await second.wait_converged("cache")

            async with (
                open_supervisor(
                    runtime, probe_interval=PROBE, state_dir=tmp_path / "a"
                ) as old,
                old.open_timeline() as events,
            ):
                await old.apply(spec)
                failed = (await until(events, "service_failed"))[-1]

        taken = seen[0]
        assert taken.kind == "service_taken_over"
        assert taken.fields["previous_owner"] == _id_of(tmp_path / "a")
        assert taken.fields["previous_pid"] == os.getpid()
        assert [m.container_id for m in after.members] == [
            m.container_id for m in before.members
        ]
        # Without the first's journal, whom the replica follows is not
        # known: it is told its role again, under a new epoch.
        assert (after.primary, after.epoch) == (before.primary, before.epoch + 1)
        assert _id_of(tmp_path / "b") in failed.detail

    async def test_a_running_control_plane_taken_over_stops_acting(
        self, tmp_path: Path
    ) -> None:
        """A control plane whose claim was taken while it ran finds out at
        its next pass and gives the service up."""
        runtime = kv_runtime()
        with anyio.fail_after(LIMIT):
            async with (
                open_supervisor(
                    runtime, probe_interval=PROBE, state_dir=tmp_path / "a"
                ) as first,
                first.open_timeline() as first_events,
            ):
                await first.apply(service_spec())
                await first.wait_converged("cache")
                async with open_supervisor(
                    runtime, probe_interval=PROBE, state_dir=tmp_path / "b"
                ) as second:
                    await second.apply(service_spec(), take_over=True)
                    await second.wait_converged("cache")
                    lost = (await until(first_events, "service_failed"))[-1]

        assert _id_of(tmp_path / "b") in lost.detail

    async def test_a_take_over_of_an_unclaimed_service_just_claims(
        self, tmp_path: Path
    ) -> None:
        """take_over on a service nobody claimed claims it, with no
        take-over event."""
        runtime = kv_runtime()
        with anyio.fail_after(LIMIT):
            async with (
                open_supervisor(
                    runtime, probe_interval=PROBE, state_dir=tmp_path
                ) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(service_spec(), take_over=True)
                seen = await until(events, "converged")

        assert "service_taken_over" not in [kind for kind, _ in event_kinds(seen)]
        assert ClaimOwner.read(await _claim(runtime)).id == _id_of(tmp_path)


class TestLifecycle:
    """Where a claim comes from and where it goes."""

    async def test_down_drops_the_claim_last(self, tmp_path: Path) -> None:
        """Removing a service leaves no claim: another control plane may
        then create it anew."""
        runtime = kv_runtime()
        with anyio.fail_after(LIMIT):
            async with open_supervisor(
                runtime, probe_interval=PROBE, state_dir=tmp_path / "a"
            ) as first:
                await first.apply(service_spec())
                await first.wait_converged("cache")
                await first.remove("cache")
                left = await runtime.volume_labels(CLAIM)

            async with open_supervisor(
                runtime, probe_interval=PROBE, state_dir=tmp_path / "b"
            ) as second:
                await second.apply(service_spec())
                fresh = await second.wait_converged("cache")

        assert left is None
        assert fresh.failure is None
        assert ClaimOwner.read(await _claim(runtime)).id == _id_of(tmp_path / "b")

    async def test_a_release_drops_our_claim_and_keeps_another(
        self, tmp_path: Path
    ) -> None:
        """Releasing a service (left running, no longer managed) drops the
        claim when it is ours, so another control plane may take the
        service up without a take-over; a refused one's release leaves
        the holder's claim."""
        runtime = kv_runtime()
        with anyio.fail_after(LIMIT):
            async with open_supervisor(
                runtime, probe_interval=PROBE, state_dir=tmp_path / "a"
            ) as first:
                await first.apply(service_spec())
                before = await first.wait_converged("cache")
                await first.release("cache")
                released = await runtime.volume_labels(CLAIM)

            async with open_supervisor(
                runtime, probe_interval=PROBE, state_dir=tmp_path / "b"
            ) as second:
                await second.apply(service_spec())
                after = await second.wait_converged("cache")
                async with (
                    open_supervisor(
                        runtime, probe_interval=PROBE, state_dir=tmp_path / "a"
                    ) as again,
                    again.open_timeline() as events,
                ):
                    await again.apply(service_spec())
                    await until(events, "service_failed")
                    await again.release("cache")

                kept = ClaimOwner.read(await _claim(runtime)).id

        assert released is None
        assert after.member("cache-1").container_id == (
            before.member("cache-1").container_id
        )
        assert kept == _id_of(tmp_path / "b")

    async def test_unclaimed_containers_are_claimed_and_adopted(
        self, tmp_path: Path
    ) -> None:
        """Containers left from before claims existed (no claim on the
        engine) are claimed and adopted by a new state directory."""
        runtime = kv_runtime()
        with anyio.fail_after(LIMIT):
            async with open_supervisor(
                runtime, probe_interval=PROBE, state_dir=tmp_path / "a"
            ) as first:
                await first.apply(service_spec())
                before = await first.wait_converged("cache")

            await runtime.remove_volume(CLAIM)
            async with (
                open_supervisor(
                    runtime, probe_interval=PROBE, state_dir=tmp_path / "b"
                ) as second,
                second.open_timeline() as events,
            ):
                await second.apply(service_spec())
                seen = await until(events, "member_adopted")
                after = await second.wait_converged("cache")

        assert event_kinds(seen) == [("member_adopted", "cache-1")]
        assert after.member("cache-1").container_id == (
            before.member("cache-1").container_id
        )
        assert ClaimOwner.read(await _claim(runtime)).id == _id_of(tmp_path / "b")

    async def test_an_old_claim_of_ours_is_made_again_for_this_process(
        self, tmp_path: Path
    ) -> None:
        """A claim an earlier process of the same state directory made names
        this process once the service is applied again."""
        runtime = kv_runtime()
        async with open_supervisor(runtime, state_dir=tmp_path) as supervisor:
            ours = supervisor.identity

        earlier = ControlPlaneIdentity(id=ours.id, host="old-host", pid=1)
        await claim_service(runtime, "cache", earlier, labels={})
        with anyio.fail_after(LIMIT):
            async with open_supervisor(
                runtime, probe_interval=PROBE, state_dir=tmp_path
            ) as supervisor:
                await supervisor.apply(service_spec())
                status = await supervisor.wait_converged("cache")

        owner = ClaimOwner.read(await _claim(runtime))
        assert status.failure is None
        assert (owner.id, owner.host, owner.pid) == (
            ours.id,
            socket.gethostname(),
            os.getpid(),
        )

    async def test_a_race_of_two_claims_leaves_one_owner(self) -> None:
        """Two control planes claiming at once: the engine makes one claim,
        one of them holds it and the other is refused."""
        runtime = kv_runtime()
        planes = [ControlPlaneIdentity(id=f"{n:032x}", host="h", pid=n) for n in (1, 2)]
        outcomes: dict[int, str] = {}

        async def claim(identity: ControlPlaneIdentity) -> None:
            try:
                await claim_service(runtime, "cache", identity, labels={})
            except ServiceClaimedError as error:
                outcomes[identity.pid] = f"refused:{error.owner}"
            else:
                outcomes[identity.pid] = "claimed"

        with anyio.fail_after(LIMIT):
            async with anyio.create_task_group() as group:
                for identity in planes:
                    group.start_soon(claim, identity)

        owner = ClaimOwner.read(await _claim(runtime))
        winner = next(p for p in planes if p.id == owner.id)
        loser = next(p for p in planes if p.id != owner.id)
        assert outcomes == {
            winner.pid: "claimed",
            loser.pid: f"refused:{winner.id}",
        }

    async def test_two_supervisors_racing_leave_one_managing(
        self, tmp_path: Path
    ) -> None:
        """Two supervisors applying the same service at once: one converges
        it, the other gives it up; one container, one writer."""
        runtime = kv_runtime()
        ends: dict[str, str] = {}

        async def first_end(name: str, supervisor: Supervisor) -> None:
            async with supervisor.open_timeline() as events:
                await supervisor.apply(service_spec())
                async for event in events:
                    if event.kind in ("converged", "service_failed"):
                        ends[name] = event.kind
                        return

        with anyio.fail_after(LIMIT):
            async with (
                open_supervisor(
                    runtime, probe_interval=PROBE, state_dir=tmp_path / "a"
                ) as one,
                open_supervisor(
                    runtime, probe_interval=PROBE, state_dir=tmp_path / "b"
                ) as other,
            ):
                async with anyio.create_task_group() as group:
                    group.start_soon(first_end, "a", one)
                    group.start_soon(first_end, "b", other)

                winner = one if ends["a"] == "converged" else other
                status = winner.status("cache")
                containers, _, _ = await service_objects(runtime)

        assert sorted(ends.values()) == ["converged", "service_failed"]
        assert ClaimOwner.read(await _claim(runtime)).id == winner.identity.id
        assert containers == ["rolecall-cache-1"]
        assert status.primary == "cache-1"


async def _claim(runtime: FakeRuntime) -> dict[str, str]:
    labels = await runtime.volume_labels(CLAIM)
    assert labels is not None
    return labels
