"""Services on two engines, and moving one between them, on the in-memory
runtime.

Two linked `FakeRuntime` instances play two engines on one machine: a
container on one reaches a port another publishes on its peer address.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from attrs import define
from supervisor_support import (
    KV,
    LIMIT,
    PROBE,
    converged,
    expected_keys,
    service_spec,
    until,
)

from rolecall.actors import ContainerInfo, ContainerSpec, ImageInfo
from rolecall.hooks_protocol import (
    ConvergenceTimeoutError,
    EngineUnavailableError,
    HookName,
    Role,
    RolecallError,
    SpecError,
)
from rolecall.supervisor import (
    LABEL_SERVICE,
    ServiceEvent,
    ServiceStatus,
    Supervisor,
    open_supervisor,
)
from rolecall.testing import (
    FakeHookCall,
    FakeRuntime,
    fake_kv_image,
    fake_kv_keys,
    fake_kv_write,
)

pytestmark = pytest.mark.anyio

PEERS = {"default": "10.1.0.1", "far": "10.2.0.1"}


@define(eq=False, kw_only=True)
class _FlakyRuntime(FakeRuntime):
    """A fake engine that can stop answering, as a stopped daemon does."""

    # While true every call a move's checks and a pass make is refused.
    down: bool = False

    def _refuse(self) -> None:
        if self.down:
            raise EngineUnavailableError(
                f"no engine answers at {self.address} (a test's fault)",
                address=self.address,
            )

    async def inspect_image(self, image: str) -> ImageInfo:
        self._refuse()
        return await super().inspect_image(image)

    async def list_containers(
        self, *, labels: Mapping[str, str]
    ) -> list[ContainerInfo]:
        self._refuse()
        return await super().list_containers(labels=labels)

    async def create_container(self, spec: ContainerSpec) -> ContainerInfo:
        self._refuse()
        return await super().create_container(spec)

    async def memory_total(self) -> int | None:
        self._refuse()
        return await super().memory_total()


def _engines() -> tuple[_FlakyRuntime, _FlakyRuntime]:
    near = _FlakyRuntime(name="near")
    far = _FlakyRuntime(name="far")
    for runtime in (near, far):
        runtime.add_image(KV, hooks=fake_kv_image())
    near.link(far)

    return near, far


@asynccontextmanager
async def _plane(
    near: FakeRuntime,
    far: FakeRuntime,
    state_dir: Path | None = None,
    *,
    on_event: Callable[[ServiceEvent], None] | None = None,
) -> AsyncIterator[Supervisor]:
    async with open_supervisor(
        near,
        engines={"far": far},
        peer_addresses=PEERS,
        probe_interval=PROBE,
        state_dir=state_dir,
        on_event=on_event,
    ) as supervisor:
        yield supervisor


def _write(runtime: FakeRuntime, status: ServiceStatus, keys: range) -> None:
    writer = status.writer
    assert writer is not None
    for number in keys:
        fake_kv_write(runtime, writer.container_id, f"key{number}", number)


async def _names(runtime: FakeRuntime) -> list[str]:
    return sorted(
        c.name for c in await runtime.list_containers(labels={LABEL_SERVICE: "cache"})
    )


class TestPlacement:
    """Where members go, and what the hooks are told about the others."""

    async def test_a_service_is_placed_on_the_engine_its_spec_names(self) -> None:
        """Every member of a service naming engine ``far`` runs there, carries
        the engine label, and status shows the engine."""
        near, far = _engines()
        with anyio.fail_after(LIMIT):
            async with (
                _plane(near, far) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(
                    service_spec(topology="redundant", replicas=1, engine="far")
                )
                status = await converged(supervisor, events)

        assert await _names(near) == []
        assert await _names(far) == ["rolecall-cache-1", "rolecall-cache-2"]
        assert [m.engine for m in status.members] == ["far", "far"]
        assert status.engine == "far"
        info = far.container("rolecall-cache-1").info()
        assert info.labels["io.rolecall.engine"] == "far"
        assert info.peer_ports  # published on the peer address too

    async def test_an_unknown_engine_is_refused_before_anything_runs(self) -> None:
        """A spec naming an engine the supervisor does not know is a SpecError
        and no container is made anywhere."""
        near, far = _engines()
        with anyio.fail_after(LIMIT):
            async with _plane(near, far) as supervisor:
                with pytest.raises(SpecError) as caught:
                    await supervisor.apply(service_spec(engine="moon"))

        assert "no engine named 'moon' (known: default, far)" in str(caught.value)
        assert await _names(near) == await _names(far) == []

    async def test_addresses_are_as_seen_from_each_members_engine(self) -> None:
        """A member on another engine is reached at that engine's peer address
        and published port; one on the same engine by its alias."""
        near, far = _engines()
        with anyio.fail_after(LIMIT):
            async with (
                _plane(near, far) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(service_spec(topology="redundant"))
                await converged(supervisor, events)
                controller = supervisor.controllers["cache"]
                controller.members["cache-2"].engine = "far"
                controller.members["cache-2"].peer_ports = {6379: 40001}
                from_near = controller.view("default")
                from_far = controller.view("far")

        near_addresses = {m.id: m.address for m in from_near.members}
        far_addresses = {m.id: m.address for m in from_far.members}
        assert near_addresses == {
            "cache-1": "cache-1:6379",
            "cache-2": "10.2.0.1:40001",
        }
        assert far_addresses["cache-2"] == "cache-2:6379"
        published = near.container("rolecall-cache-1").info().peer_ports[6379]
        assert far_addresses["cache-1"] == f"10.1.0.1:{published}"


class TestMove:
    """`Supervisor.move` by replication."""

    @pytest.mark.parametrize("topology", ["standalone", "redundant"])
    async def test_a_move_keeps_every_key_and_leaves_nothing_behind(
        self, topology: str
    ) -> None:
        """A service moved from the default engine to ``far`` keeps its keys,
        ends with the same shape there, and the old engine keeps nothing."""
        near, far = _engines()
        spec = service_spec(topology=topology, replicas=1)
        with anyio.fail_after(LIMIT):
            async with (
                _plane(near, far) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(spec)
                before = await converged(supervisor, events)
                _write(near, before, range(40))
                after = await supervisor.move("cache", "far", timeout=LIMIT)
                writer = after.writer
                assert writer is not None
                keys = fake_kv_keys(far, writer.container_id)
                kinds = [e.kind for e in await until(events, "converged")]

        assert after.engine == "far"
        assert after.moving is None
        assert {m.engine for m in after.members} == {"far"}
        assert len(after.members) == len(before.members)
        assert writer.role is (
            Role.STANDALONE if topology == "standalone" else Role.PRIMARY
        )
        assert keys == expected_keys(range(40))
        assert await _names(near) == []
        assert await near.list_volumes(labels={LABEL_SERVICE: "cache"}) == []
        assert "converged" in kinds

    async def test_a_way_the_plan_does_not_offer_is_refused_first(self) -> None:
        """Asking for the export way of an image that offers replication only
        is a SpecError, and nothing is made on the target."""
        near, far = _engines()
        with anyio.fail_after(LIMIT):
            async with (
                _plane(near, far) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(service_spec())
                await converged(supervisor, events)
                with pytest.raises(SpecError) as caught:
                    await supervisor.move("cache", "far", way="export", timeout=LIMIT)
                after = supervisor.status("cache")

        assert "cannot move by 'export': its plan offers ['replication']" in str(
            caught.value
        )
        assert after.moving is None
        assert await _names(far) == []

    async def test_a_move_takes_the_extra_members_along(self) -> None:
        """A backup node is made again on the target in its own role, and the
        old one goes with the rest."""
        near, far = _engines()
        spec = service_spec(topology="redundant", extras={"backup": 1})
        with anyio.fail_after(LIMIT):
            async with (
                _plane(near, far) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(spec)
                await converged(supervisor, events)
                after = await supervisor.move("cache", "far", timeout=LIMIT)

        assert sorted((m.role, m.extra, m.engine) for m in after.members) == [
            (Role.BACKUP, Role.BACKUP, "far"),
            (Role.PRIMARY, None, "far"),
            (Role.REPLICA, None, "far"),
        ]
        assert await _names(near) == []

    async def test_a_move_to_an_engine_that_is_down_leaves_the_service(self) -> None:
        """A target that does not answer fails the move before anything is
        made there, and the service stays as it was."""
        near, far = _engines()
        far.down = True
        with anyio.fail_after(LIMIT):
            async with (
                _plane(near, far) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(service_spec())
                before = await converged(supervisor, events)
                with pytest.raises(EngineUnavailableError):
                    await supervisor.move("cache", "far", timeout=LIMIT)
                after = supervisor.status("cache")

        assert after.moving is None
        assert after.members == before.members
        far.down = False
        assert await _names(far) == []


class TestMoveResumes:
    """A control plane stopped at any phase of a move: the next one, on the
    same journal, finishes it."""

    @pytest.mark.parametrize(
        "stop_at",
        ["move_started", "member_created", "move_caught_up", "move_switched"],
    )
    async def test_a_move_cut_short_is_finished_by_the_next_control_plane(
        self, tmp_path: Path, stop_at: str
    ) -> None:
        """Stopped right after ``stop_at``, the move resumes from the journal:
        one writer, every key, nothing left on the old engine."""
        near, far = _engines()
        spec = service_spec(topology="redundant", replicas=1)
        reached = anyio.Event()

        def watch(event: ServiceEvent) -> None:
            if event.kind == stop_at and event.fields.get("engine", "far") == "far":
                reached.set()

        with anyio.fail_after(LIMIT):
            async with (
                _plane(near, far, tmp_path, on_event=watch) as supervisor,
                supervisor.open_timeline() as events,
                anyio.create_task_group() as group,
            ):
                await supervisor.apply(spec)
                before = await converged(supervisor, events)
                _write(near, before, range(30))
                group.start_soon(_move_quietly, supervisor)
                await reached.wait()
                cut = supervisor.status("cache").moving
                group.cancel_scope.cancel()

            async with _plane(near, far, tmp_path) as supervisor:
                await supervisor.apply(spec, resume=True)
                after = await supervisor.wait_converged("cache", timeout=LIMIT)

        writer = after.writer
        assert writer is not None
        assert cut is not None
        assert cut.startswith("to far by replication")
        assert after.moving is None
        assert after.engine == "far"
        assert [m.engine for m in after.members] == ["far", "far"]
        assert [m.role for m in after.members].count(Role.PRIMARY) == 1
        assert fake_kv_keys(far, writer.container_id) == expected_keys(range(30))
        assert await _names(near) == []

    async def test_a_move_undone_removes_what_it_made_on_the_target(self) -> None:
        """A move that cannot catch up in its time is undone: the members made
        on the target go, the service stays where it was with its keys."""
        near, far = _engines()
        far.add_image(KV, hooks={**fake_kv_image(), HookName.STATUS: _never_synced})
        with anyio.fail_after(LIMIT):
            async with (
                _plane(near, far) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(service_spec())
                before = await converged(supervisor, events)
                _write(near, before, range(10))
                with pytest.raises(ConvergenceTimeoutError) as caught:
                    await supervisor.move("cache", "far", timeout=0.5)
                after = await supervisor.wait_converged("cache", timeout=LIMIT)
                writer = after.writer
                assert writer is not None
                keys = fake_kv_keys(near, writer.container_id)

        assert "it was undone" in str(caught.value)
        assert after.moving is None
        assert [(m.id, m.engine) for m in after.members] == [("cache-1", "default")]
        assert keys == expected_keys(range(10))
        assert await _names(far) == []


class TestEngineDown:
    """An engine that stops answering."""

    async def test_members_of_an_engine_that_is_down_are_not_made_elsewhere(
        self,
    ) -> None:
        """A service on an engine that goes away turns unhealthy and stays put;
        a service on the other engine carries on."""
        near, far = _engines()
        with anyio.fail_after(LIMIT):
            async with (
                _plane(near, far) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(service_spec(engine="far"))
                await converged(supervisor, events)
                far.down = True
                await supervisor.apply(service_spec("other"))
                other = await converged(supervisor, events, "other")
                for _ in range(5):
                    await until(events, "step_failed")
                stuck = supervisor.status("cache")

        far.down = False
        assert [m.engine for m in other.members] == ["default"]
        assert [(m.engine, m.healthy) for m in stuck.members] == [("far", False)]
        assert await _names(near) == []
        assert await _names(far) == ["rolecall-cache-1"]


async def _move_quietly(supervisor: Supervisor) -> None:
    # Cut short by the test; what it would raise is of no interest.
    with contextlib.suppress(RolecallError):
        await supervisor.move("cache", "far", timeout=LIMIT)


def _never_synced(call: FakeHookCall) -> dict[str, Any]:
    report = fake_kv_image()[HookName.STATUS](call)
    assert isinstance(report, dict)  # the key-value hooks are synchronous
    return {**report, "details": {"synced": False}, "link_up": False}


class TestMovedWithoutJournal:
    """A moved service adopted by a control plane without its journal."""

    async def test_it_is_adopted_where_its_members_run(self, tmp_path: Path) -> None:
        """Its spec still names the engine it left: the members on the engine
        it moved to are adopted, and nothing is made on the old one."""
        near, far = _engines()
        spec = service_spec(topology="redundant", replicas=1)
        with anyio.fail_after(LIMIT):
            async with (
                _plane(near, far, tmp_path / "first") as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(spec)
                before = await converged(supervisor, events)
                _write(near, before, range(20))
                moved = await supervisor.move("cache", "far", timeout=LIMIT)

            async with (
                _plane(near, far, tmp_path / "second") as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(spec, take_over=True)
                after = await converged(supervisor, events)

        writer = after.writer
        assert writer is not None
        assert after.engine == "far"
        assert sorted(m.container_id for m in after.members) == sorted(
            m.container_id for m in moved.members
        )
        assert [m.role for m in after.members].count(Role.PRIMARY) == 1
        assert fake_kv_keys(far, writer.container_id) == expected_keys(range(20))
        assert await _names(near) == []
