"""The supervisor on the in-memory runtime: convergence, conversion, failover."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import anyio
import pytest
from attrs import define, field
from structlog.testing import capture_logs

from rolecall.actors import ActorState, ContainerState
from rolecall.hooks_protocol import (
    HookName,
    Role,
    SpecError,
    Topology,
    UnsupportedTopologyError,
)
from rolecall.supervisor import (
    LABEL_SERVICE,
    ServiceEvent,
    ServiceSpec,
    ServiceStatus,
    Supervisor,
    open_supervisor,
)
from rolecall.testing import (
    KV_DATA_PATH,
    FakeHook,
    FakeHookCall,
    FakeHookExit,
    FakeRuntime,
    fake_kv_image,
    fake_kv_keys,
    fake_kv_write,
)

pytestmark = pytest.mark.anyio

LIMIT = 20  # seconds; far above what any test here needs
PROBE = 0.02  # seconds between health passes: small, so tests run fast
KV = "kv:fake"


def _runtime(**images: Mapping[str, FakeHook]) -> FakeRuntime:
    runtime = FakeRuntime()
    runtime.add_image(KV, hooks=fake_kv_image())
    for name, hooks in images.items():
        runtime.add_image(f"{name}:fake", hooks=hooks)

    return runtime


def _spec(name: str = "cache", **options: Any) -> ServiceSpec:
    options.setdefault("image", KV)

    return ServiceSpec(name=name, **options)


def _plan_with(**changes: Any) -> FakeHook:
    """The fake key-value plan with some fields replaced."""
    plan = fake_kv_image()[HookName.PLAN]

    def changed(call: FakeHookCall) -> dict[str, Any]:
        data: dict[str, Any] = dict(plan(call) or {})  # type: ignore[arg-type]
        return {**data, **changes}

    return changed


async def _until(
    events: AsyncIterator[ServiceEvent], kind: str, *, service: str = "cache"
) -> list[ServiceEvent]:
    """The events of ``service`` up to and including the next one of ``kind``."""
    seen: list[ServiceEvent] = []
    async for event in events:
        if event.service != service:
            continue

        seen.append(event)
        if event.kind == kind:
            return seen

    raise AssertionError(f"the timeline ended before a {kind!r} event: {seen}")


async def _converged(
    supervisor: Supervisor, events: AsyncIterator[ServiceEvent], service: str = "cache"
) -> ServiceStatus:
    """Wait for the service's next ``converged`` event; return its status."""
    await _until(events, "converged", service=service)

    return supervisor.status(service)


def _kinds(events: list[ServiceEvent]) -> list[tuple[str, str | None]]:
    return [(event.kind, event.member) for event in events]


async def _service_objects(
    runtime: FakeRuntime, service: str = "cache"
) -> tuple[list[str], list[str], list[str]]:
    """Names of the service's containers, volumes and networks on the engine."""
    labels = {LABEL_SERVICE: service}
    containers = await runtime.list_containers(labels=labels)

    return (
        [container.name for container in containers],
        await runtime.list_volumes(labels=labels),
        await runtime.list_networks(labels=labels),
    )


def _keys(runtime: FakeRuntime, status: ServiceStatus, member: str) -> dict[str, Any]:
    return fake_kv_keys(runtime, status.member(member).container_id)


def _write(runtime: FakeRuntime, status: ServiceStatus, keys: range) -> None:
    writer = status.writer
    assert writer is not None
    for number in keys:
        fake_kv_write(runtime, writer.container_id, f"key{number}", number)


def _expected(keys: range) -> dict[str, int]:
    return {f"key{number}": number for number in keys}


class TestConvergence:
    """A spec becomes running members in the roles the topology wants."""

    async def test_standalone_converges_with_one_standalone_member(self) -> None:
        """A standalone service gets one running member in role standalone."""
        runtime = _runtime()
        with anyio.fail_after(LIMIT):
            async with open_supervisor(runtime, probe_interval=PROBE) as supervisor:
                await supervisor.apply(_spec())
                status = await supervisor.wait_converged("cache")
                objects = await _service_objects(runtime)

        assert status.converged
        assert (status.topology, status.primary, status.epoch) == (
            Topology.STANDALONE,
            "cache-1",
            1,
        )
        [member] = status.members
        assert (member.id, member.role, member.epoch) == ("cache-1", Role.STANDALONE, 1)
        assert (member.alive, member.ready) == (True, True)
        assert member.address == "cache-1:6379"
        assert member.published == "127.0.0.1:32768"
        assert objects == (
            ["rolecall-cache-1"],
            ["rolecall-cache-1-data"],
            ["rolecall-cache"],
        )
        disk = runtime.volume_data("rolecall-cache-1-data")
        assert (disk["role"], disk["epoch"]) == ("standalone", 1)
        assert runtime.running_execs == 0

    async def test_redundant_with_two_replicas(self) -> None:
        """A redundant spec with two replicas gets a primary and two followers."""
        runtime = _runtime()
        with anyio.fail_after(LIMIT):
            async with open_supervisor(runtime, probe_interval=PROBE) as supervisor:
                await supervisor.apply(_spec(topology="redundant", replicas=2))
                status = await supervisor.wait_converged("cache")

        roles = [(m.id, m.role, m.following) for m in status.members]
        assert roles == [
            ("cache-1", Role.PRIMARY, None),
            ("cache-2", Role.REPLICA, "cache-1"),
            ("cache-3", Role.REPLICA, "cache-1"),
        ]
        assert status.primary == "cache-1"
        assert status.epoch == 3
        assert all(m.alive and m.ready for m in status.members)

    async def test_keys_survive_standalone_to_redundant_and_back(self) -> None:
        """Keys written before and during the redundant phase survive the round trip."""
        runtime = _runtime()
        with anyio.fail_after(LIMIT):
            async with open_supervisor(runtime, probe_interval=PROBE) as supervisor:
                await supervisor.apply(_spec())
                standalone = await supervisor.wait_converged("cache")
                _write(runtime, standalone, range(50))

                redundant = await supervisor.convert("cache", Topology.REDUNDANT)
                on_replica = _keys(runtime, redundant, "cache-2")
                _write(runtime, redundant, range(50, 80))

                back = await supervisor.convert("cache", "standalone")
                objects = await _service_objects(runtime)

        assert [(m.id, m.role) for m in redundant.members] == [
            ("cache-1", Role.PRIMARY),
            ("cache-2", Role.REPLICA),
        ]
        assert on_replica == _expected(range(50))
        assert [(m.id, m.role) for m in back.members] == [("cache-1", Role.STANDALONE)]
        assert _keys(runtime, back, "cache-1") == _expected(range(80))
        assert back.epoch == 4
        assert objects == (
            ["rolecall-cache-1"],
            ["rolecall-cache-1-data"],
            ["rolecall-cache"],
        )

    async def test_a_failing_hook_fails_the_pass_and_the_next_pass_converges(
        self,
    ) -> None:
        """An injected configure failure is reported, then retried to convergence."""
        runtime = _runtime()
        runtime.fail_next_exec(hook="configure", stderr="cannot write redis.conf")
        with anyio.fail_after(LIMIT):
            async with (
                open_supervisor(runtime, probe_interval=PROBE) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(_spec())
                failed = await _until(events, "step_failed")
                during = supervisor.status("cache")
                recovered = await _until(events, "converged")
                after = supervisor.status("cache")

        assert "cannot write redis.conf" in failed[-1].detail
        assert during.last_error is not None
        assert "hook 'configure' of member 'cache-1'" in during.last_error
        assert "cannot write redis.conf" in during.last_error
        assert not during.converged
        assert ("member_prepared", "cache-1") in _kinds(recovered)
        assert after.last_error is None
        assert after.converged
        assert after.member("cache-1").role is Role.STANDALONE


class TestFailures:
    """Lost members are fenced, replaced or restarted, and data stays."""

    async def test_a_dead_standalone_is_restarted_in_place_with_its_data(
        self,
    ) -> None:
        """A crashed standalone container comes back, same member and same keys."""
        runtime = _runtime()
        with anyio.fail_after(LIMIT):
            async with (
                open_supervisor(runtime, probe_interval=PROBE) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(_spec())
                before = await _converged(supervisor, events)
                _write(runtime, before, range(20))
                runtime.crash(before.member("cache-1").container_id)
                await _until(events, "member_lost")
                after = await supervisor.wait_converged("cache")
                timeline = await _until(events, "converged")

        member = after.member("cache-1")
        assert (member.alive, member.ready, member.role) == (
            True,
            True,
            Role.STANDALONE,
        )
        assert member.container_id == before.member("cache-1").container_id
        assert member.epoch == 2
        assert _keys(runtime, after, "cache-1") == _expected(range(20))
        assert [kind for kind, _ in _kinds(timeline)][:1] == ["member_restarted"]

    async def test_a_crashed_primary_fails_over_to_the_replica_with_most_data(
        self,
    ) -> None:
        """The primary is fenced, the most caught-up replica promoted, and a
        replacement replica created, with every key kept."""
        lag = Lag()
        runtime = _runtime(lag=lag.image())
        spec = _spec(image="lag:fake", topology="redundant", replicas=2)
        with anyio.fail_after(LIMIT):
            async with (
                open_supervisor(runtime, probe_interval=PROBE) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(spec)
                before = await _converged(supervisor, events)
                _write(runtime, before, range(10))
                # cache-2 stops pulling; cache-3 keeps up with every write.
                lag.held.add("rolecall-cache-2")
                _write(runtime, before, range(10, 30))
                await lag.wait_offset("rolecall-cache-3", 30)
                held_offset = lag.offsets["rolecall-cache-2"]

                runtime.crash(before.member("cache-1").container_id)
                timeline = await _until(events, "converged")
                after = supervisor.status("cache")
                objects = await _service_objects(runtime)

        kinds = _kinds(timeline)
        lost = kinds.index(("member_lost", "cache-1"))
        fenced = kinds.index(("member_fenced", "cache-1"))
        failover = kinds.index(("failover", "cache-3"))
        assert lost < fenced < failover < len(kinds) - 1
        assert ("member_created", "cache-4") in kinds
        assert ("member_removed", "cache-1") in kinds
        assert held_offset < 30

        assert after.primary == "cache-3"
        assert [(m.id, m.role, m.following) for m in after.members] == [
            ("cache-2", Role.REPLICA, "cache-3"),
            ("cache-3", Role.PRIMARY, None),
            ("cache-4", Role.REPLICA, "cache-3"),
        ]
        assert after.epoch > before.epoch
        assert after.member("cache-3").epoch > before.member("cache-1").epoch
        for member in ("cache-2", "cache-3", "cache-4"):
            assert _keys(runtime, after, member) == _expected(range(30))

        assert sorted(objects[0]) == [
            "rolecall-cache-2",
            "rolecall-cache-3",
            "rolecall-cache-4",
        ]

    async def test_a_failed_promotion_is_retried(self) -> None:
        """When the promotion's role hook fails, the fenced primary stays down
        and the next pass promotes the replica after all."""
        lag = Lag()
        runtime = _runtime(lag=lag.image())
        with anyio.fail_after(LIMIT):
            async with (
                open_supervisor(runtime, probe_interval=PROBE) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(_spec(image="lag:fake", topology="redundant"))
                before = await _converged(supervisor, events)
                _write(runtime, before, range(10))
                await lag.wait_offset("rolecall-cache-2", 10)
                runtime.fail_next_exec(
                    container_id="rolecall-cache-2", hook="role", stderr="no quorum"
                )
                runtime.crash(before.member("cache-1").container_id)
                failed = await _until(events, "step_failed")
                during = supervisor.status("cache")
                recovered = await _until(events, "converged")
                after = supervisor.status("cache")

        assert ("member_fenced", "cache-1") in _kinds(failed)
        assert "no quorum" in failed[-1].detail
        lost = during.member("cache-1")
        assert (lost.alive, lost.ready, lost.role) == (False, False, Role.PRIMARY)
        assert during.primary is None
        assert during.last_error is not None
        assert "no quorum" in during.last_error
        assert ("failover", "cache-2") in _kinds(recovered)
        assert ("member_fenced", "cache-1") not in _kinds(recovered)
        assert after.primary == "cache-2"
        assert [(m.id, m.role) for m in after.members] == [
            ("cache-2", Role.PRIMARY),
            ("cache-3", Role.REPLICA),
        ]
        assert _keys(runtime, after, "cache-2") == _expected(range(10))

    async def test_status_is_not_converged_while_a_failure_is_handled(self) -> None:
        """After a member is lost, wait_converged waits for the recovery."""
        runtime = _runtime()
        with anyio.fail_after(LIMIT):
            async with (
                open_supervisor(runtime, probe_interval=PROBE) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(_spec(topology="redundant"))
                before = await _converged(supervisor, events)
                runtime.crash(before.member("cache-2").container_id)
                await _until(events, "member_lost")
                during = supervisor.status("cache")
                after = await supervisor.wait_converged("cache")

        assert not during.converged
        assert after.converged
        assert after.member("cache-2").alive
        assert after.member("cache-2").role is Role.REPLICA


@define
class Lag:
    """A fake key-value image whose chosen replicas stop pulling in status.

    A held replica reports what it has, with its link up, as a replica that
    lags behind its primary would.
    """

    # Container names whose status hook does not pull from the primary.
    held: set[str] = field(factory=set)
    # Container name -> the offset its last status reported.
    offsets: dict[str, int] = field(factory=dict)
    # Set and replaced on every status run, for wait_offset.
    _reported: anyio.Event = field(factory=anyio.Event)

    def image(self) -> dict[str, FakeHook]:
        return {**fake_kv_image(), HookName.STATUS: self._status}

    def _status(self, call: FakeHookCall) -> dict[str, Any]:
        name = call.container.name
        if name in self.held:
            disk = call.volumes[KV_DATA_PATH]
            report = {
                "role": disk["role"],
                "healthy": True,
                "replication_offset": disk["offset"],
                "link_up": True,
                "epoch": disk["epoch"],
                "details": {"synced": True},
            }
        else:
            report = dict(fake_kv_image()[HookName.STATUS](call) or {})  # type: ignore[arg-type]

        self.offsets[name] = report["replication_offset"]
        reported, self._reported = self._reported, anyio.Event()
        reported.set()

        return report

    async def wait_offset(self, name: str, offset: int) -> None:
        """Wait until the status of ``name`` has reported ``offset`` or more."""
        while self.offsets.get(name, -1) < offset:
            await self._reported.wait()


class TestChanges:
    """Scaling, image changes and secrets in what the supervisor reports."""

    async def test_scaling_replicas_up_and_down(self) -> None:
        """Raising replicas adds a follower; lowering them removes the newest."""
        runtime = _runtime()
        with anyio.fail_after(LIMIT):
            async with open_supervisor(runtime, probe_interval=PROBE) as supervisor:
                await supervisor.apply(_spec(topology="redundant"))
                await supervisor.wait_converged("cache")
                up = await supervisor.convert("cache", "redundant", replicas=2)
                down = await supervisor.convert("cache", "redundant", replicas=1)
                objects = await _service_objects(runtime)

        assert [m.id for m in up.members] == ["cache-1", "cache-2", "cache-3"]
        assert [(m.id, m.role) for m in down.members] == [
            ("cache-1", Role.PRIMARY),
            ("cache-2", Role.REPLICA),
        ]
        assert objects[:2] == (
            ["rolecall-cache-1", "rolecall-cache-2"],
            ["rolecall-cache-1-data", "rolecall-cache-2-data"],
        )

    async def test_changing_the_image_of_a_service_is_refused(self) -> None:
        """A spec naming another image for a running service raises SpecError."""
        runtime = _runtime(other=fake_kv_image())
        with anyio.fail_after(LIMIT):
            async with open_supervisor(runtime, probe_interval=PROBE) as supervisor:
                await supervisor.apply(_spec())
                await supervisor.wait_converged("cache")
                with pytest.raises(SpecError, match="changing the image"):
                    await supervisor.apply(_spec(image="other:fake"))

                status = supervisor.status("cache")

        assert status.image == KV

    async def test_a_secret_echoed_by_a_failing_hook_is_reported_masked(
        self,
    ) -> None:
        """Neither status, timeline nor log shows a secret a hook printed."""
        secret = "pa55-w0rd-9"  # noqa: S105  (a made-up secret to hunt for)

        def configure(call: FakeHookCall) -> dict[str, Any]:
            raise FakeHookExit(1, stderr=f"bad password {call.payload['env']['PW']}")

        runtime = _runtime(leaky={**fake_kv_image(), "configure": configure})
        spec = _spec(image="leaky:fake", env={"PW": secret}, secret_keys={"PW"})
        with anyio.fail_after(LIMIT), capture_logs() as logs:
            async with (
                open_supervisor(runtime, probe_interval=PROBE) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(spec)
                failed = await _until(events, "step_failed")
                status = supervisor.status("cache")

        assert status.last_error is not None
        assert "bad password ***" in status.last_error
        assert "bad password ***" in failed[-1].detail
        assert secret not in repr(logs)
        assert secret not in repr(failed)
        assert secret not in repr(status)


class TestSpecErrors:
    """A spec that cannot be realised is refused before any container exists."""

    @pytest.mark.parametrize(
        ("options", "expected"),
        [
            ({"image": "missing:fake"}, "image 'missing:fake' of service 'cache'"),
            ({"replicas": 0}, "asks for 0 replicas"),
            ({"name": "Cache_1"}, "service name 'Cache_1' is not usable"),
            ({"env": {"A": "1"}, "secret_keys": frozenset({"B"})}, "\\['B'\\]"),
            ({"image": "noport:fake"}, "declares no port"),
            ({"image": "badplan:fake"}, "could not read the plan"),
        ],
    )
    async def test_a_bad_spec_touches_no_container(
        self, options: dict[str, Any], expected: str
    ) -> None:
        """Apply raises SpecError and the engine holds nothing afterwards."""
        runtime = _runtime(
            noport={**fake_kv_image(), HookName.PLAN: _plan_with(ports=[])},
            badplan={**fake_kv_image(), HookName.PLAN: _plan_with(roles="all")},
        )
        with anyio.fail_after(LIMIT):
            async with open_supervisor(runtime, probe_interval=PROBE) as supervisor:
                with pytest.raises(SpecError, match=expected):
                    await supervisor.apply(_spec(**options))

                statuses = supervisor.statuses()
                everything = await runtime.list_containers(labels={})
                volumes = await runtime.list_volumes(labels={})
                networks = await runtime.list_networks(labels={})

        assert (statuses, everything, volumes, networks) == ([], [], [], [])

    async def test_a_topology_the_plan_lacks_is_refused(self) -> None:
        """An image whose plan offers only standalone refuses redundant."""
        runtime = _runtime(
            single={
                **fake_kv_image(),
                HookName.PLAN: _plan_with(topologies=["standalone"]),
            }
        )
        with anyio.fail_after(LIMIT):
            async with open_supervisor(runtime, probe_interval=PROBE) as supervisor:
                with pytest.raises(UnsupportedTopologyError) as caught:
                    await supervisor.apply(
                        _spec(image="single:fake", topology="redundant")
                    )

                everything = await runtime.list_containers(labels={})

        assert (caught.value.service, caught.value.topology) == ("cache", "redundant")
        assert caught.value.supported == ("standalone",)
        assert "does not support topology 'redundant'" in str(caught.value)
        assert everything == []

    async def test_a_conversion_the_plan_lacks_leaves_the_service_alone(
        self,
    ) -> None:
        """Converting to an unsupported topology fails and changes nothing."""
        runtime = _runtime(
            single={
                **fake_kv_image(),
                HookName.PLAN: _plan_with(topologies=["standalone"]),
            }
        )
        with anyio.fail_after(LIMIT):
            async with open_supervisor(runtime, probe_interval=PROBE) as supervisor:
                await supervisor.apply(_spec(image="single:fake"))
                before = await supervisor.wait_converged("cache")
                with pytest.raises(UnsupportedTopologyError):
                    await supervisor.convert("cache", "redundant")

                after = supervisor.status("cache")
                objects = await _service_objects(runtime)

        assert after == before
        assert objects[0] == ["rolecall-cache-1"]

    def test_an_unknown_topology_is_refused_when_the_spec_is_made(self) -> None:
        """A topology rolecall does not know fails at ServiceSpec construction."""
        with pytest.raises(SpecError, match="unknown topology 'mesh'"):
            _spec(topology="mesh")

    async def test_an_unknown_service_is_an_error(self) -> None:
        """Reading or removing a service that was never applied raises SpecError."""
        runtime = _runtime()
        with anyio.fail_after(LIMIT):
            async with open_supervisor(runtime, probe_interval=PROBE) as supervisor:
                with pytest.raises(SpecError, match="no service named 'nope'"):
                    supervisor.status("nope")

                with pytest.raises(SpecError, match="no service named 'nope'"):
                    await supervisor.remove("nope")


class TestLifecycle:
    """Removing services, leaving the supervisor, and isolation between services."""

    async def test_remove_deletes_containers_volumes_and_network(self) -> None:
        """Removing a service leaves no container, volume or network behind."""
        runtime = _runtime()
        with anyio.fail_after(LIMIT):
            async with (
                open_supervisor(runtime, probe_interval=PROBE) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(_spec(topology="redundant"))
                await _converged(supervisor, events)
                await supervisor.remove("cache")
                removed = await _service_objects(runtime)
                # Several probe intervals: a loop left running would have
                # planned the service anew by now.
                late: list[ServiceEvent] = []
                with anyio.move_on_after(20 * PROBE):
                    late = await _until(events, "member_created")

                statuses = supervisor.statuses()

        assert removed == ([], [], [])
        assert late == []
        assert await _service_objects(runtime) == ([], [], [])
        assert statuses == []
        assert runtime.running_execs == 0

    async def test_leaving_the_supervisor_leaves_containers_running(self) -> None:
        """Closing the control plane stops its tasks, not the service."""
        runtime = _runtime()
        with anyio.fail_after(LIMIT):
            async with open_supervisor(runtime, probe_interval=PROBE) as supervisor:
                await supervisor.apply(_spec(topology="redundant"))
                status = await supervisor.wait_converged("cache")
                _write(runtime, status, range(5))

            containers = await runtime.list_containers(labels={LABEL_SERVICE: "cache"})

        assert [(c.name, c.state) for c in containers] == [
            ("rolecall-cache-1", ContainerState.RUNNING),
            ("rolecall-cache-2", ContainerState.RUNNING),
        ]
        assert fake_kv_write(runtime, "rolecall-cache-1", "after", 1) == 6
        assert (runtime.running_execs, runtime.event_subscribers) == (0, 0)

    async def test_leaving_does_not_wait_for_a_hung_hook(self) -> None:
        """A hook hanging at exit is killed, not waited for until its deadline."""
        runtime = _runtime()
        entered = anyio.Event()

        async def configure(call: FakeHookCall) -> dict[str, Any]:
            entered.set()
            await anyio.sleep_forever()
            return {}

        runtime.add_image(
            "hang:fake", hooks={**fake_kv_image(), "configure": configure}
        )
        with anyio.fail_after(LIMIT):
            async with open_supervisor(runtime, probe_interval=PROBE) as supervisor:
                await supervisor.apply(_spec(image="hang:fake"))
                await entered.wait()
                running = runtime.running_execs
                leaving = anyio.current_time()

        # The hook's deadline is 60 s; leaving took no part of it.
        assert anyio.current_time() - leaving < 5
        assert running == 1
        assert runtime.running_execs == 0
        assert runtime.killed_execs == 1

    async def test_two_services_are_independent(self) -> None:
        """One service's hook hanging until its timeout does not hold up another."""
        slow_image = {
            **fake_kv_image(),
            HookName.PLAN: _plan_with(timeouts={"configure": 1.0}),
        }
        runtime = _runtime(slow=slow_image)
        runtime.fail_next_exec(
            container_id="rolecall-slow-1", hook="configure", hang=True
        )
        with anyio.fail_after(LIMIT):
            async with (
                open_supervisor(runtime, probe_interval=PROBE) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(_spec("slow", image="slow:fake"))
                await supervisor.apply(_spec("fast", topology="redundant"))
                fast = await supervisor.wait_converged("fast")
                slow_meanwhile = supervisor.status("slow")
                hanging = runtime.running_execs
                failed = await _until(events, "step_failed", service="slow")
                slow = await supervisor.wait_converged("slow")

        assert [(m.id, m.role) for m in fast.members] == [
            ("fast-1", Role.PRIMARY),
            ("fast-2", Role.REPLICA),
        ]
        assert not slow_meanwhile.converged
        assert hanging == 1
        assert "hook 'configure' of member 'slow-1'" in failed[-1].detail
        assert "past its 1s timeout" in failed[-1].detail
        assert slow.member("slow-1").role is Role.STANDALONE
        assert runtime.killed_execs == 1
        assert runtime.running_execs == 0

    async def test_a_crashed_container_actor_is_replaced(self) -> None:
        """A member whose actor crashed gets a new actor, is prepared again and
        takes its role back, on the same container with the same data."""
        runtime = _runtime()
        with anyio.fail_after(LIMIT):
            async with (
                open_supervisor(runtime, probe_interval=PROBE) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(_spec())
                before = await _converged(supervisor, events)
                _write(runtime, before, range(5))
                old_ref = _crash_actor(supervisor)
                await old_ref.wait_stopped()
                timeline = await _until(events, "converged")
                after = supervisor.status("cache")
                new_ref = supervisor.controllers["cache"].members["cache-1"].ref

        assert old_ref.state is ActorState.CRASHED
        assert new_ref is not old_ref
        kinds = _kinds(timeline)
        assert kinds.index(("actor_replaced", "cache-1")) < kinds.index(
            ("member_prepared", "cache-1")
        )
        assert ("role_applied", "cache-1") in kinds
        member = after.member("cache-1")
        assert (member.role, member.ready, member.epoch) == (Role.STANDALONE, True, 2)
        assert member.container_id == before.member("cache-1").container_id
        assert _keys(runtime, after, "cache-1") == _expected(range(5))

    async def test_a_primary_whose_actor_crashed_stays_primary(self) -> None:
        """A new actor for the primary keeps its role: no replica is promoted."""
        runtime = _runtime()
        with anyio.fail_after(LIMIT):
            async with (
                open_supervisor(runtime, probe_interval=PROBE) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(_spec(topology="redundant"))
                before = await _converged(supervisor, events)
                _write(runtime, before, range(5))
                await _crash_actor(supervisor).wait_stopped()
                timeline = await _until(events, "converged")
                after = supervisor.status("cache")

        kinds = [kind for kind, _ in _kinds(timeline)]
        assert "member_fenced" not in kinds
        assert "failover" not in kinds
        assert after.primary == "cache-1"
        assert [(m.id, m.role, m.following) for m in after.members] == [
            ("cache-1", Role.PRIMARY, None),
            ("cache-2", Role.REPLICA, "cache-1"),
        ]
        assert after.member("cache-1").epoch > before.member("cache-1").epoch
        assert _keys(runtime, after, "cache-1") == _expected(range(5))


def _crash_actor(supervisor: Supervisor) -> Any:
    """Crash the actor of cache-1: a told message its handler rejects does it."""
    ref = supervisor.controllers["cache"].members["cache-1"].ref
    ref.tell_nowait("not a container message")

    return ref
