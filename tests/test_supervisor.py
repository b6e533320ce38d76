"""The supervisor on the in-memory runtime: convergence, changes, spec
errors and the lifecycle of services and of the supervisor itself."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs
from supervisor_support import (
    KV,
    LIMIT,
    PROBE,
    converged,
    event_kinds,
    expected_keys,
    keys_of,
    kv_runtime,
    plan_with,
    service_objects,
    service_spec,
    until,
    write_keys,
)

from rolecall.actors import ContainerSpec, ContainerState
from rolecall.hooks_protocol import (
    HookName,
    Role,
    SpecError,
    Topology,
    UnsupportedTopologyError,
)
from rolecall.supervisor import LABEL_SERVICE, ServiceEvent, open_supervisor
from rolecall.supervisor._naming import LABEL_EXPIRES, LABEL_MANAGED
from rolecall.testing import (
    FakeHookCall,
    FakeHookExit,
    fake_kv_image,
    fake_kv_write,
)

pytestmark = pytest.mark.anyio


class TestConvergence:
    """A spec becomes running members in the roles the topology wants."""

    async def test_standalone_converges_with_one_standalone_member(self) -> None:
        """A standalone service gets one running member in role standalone."""
        runtime = kv_runtime()
        with anyio.fail_after(LIMIT):
            async with open_supervisor(runtime, probe_interval=PROBE) as supervisor:
                await supervisor.apply(service_spec())
                status = await supervisor.wait_converged("cache")
                objects = await service_objects(runtime)

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
        runtime = kv_runtime()
        with anyio.fail_after(LIMIT):
            async with open_supervisor(runtime, probe_interval=PROBE) as supervisor:
                await supervisor.apply(service_spec(topology="redundant", replicas=2))
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
        runtime = kv_runtime()
        with anyio.fail_after(LIMIT):
            async with open_supervisor(runtime, probe_interval=PROBE) as supervisor:
                await supervisor.apply(service_spec())
                standalone = await supervisor.wait_converged("cache")
                write_keys(runtime, standalone, range(50))

                redundant = await supervisor.convert("cache", Topology.REDUNDANT)
                on_replica = keys_of(runtime, redundant, "cache-2")
                write_keys(runtime, redundant, range(50, 80))

                back = await supervisor.convert("cache", "standalone")
                objects = await service_objects(runtime)

        assert [(m.id, m.role) for m in redundant.members] == [
            ("cache-1", Role.PRIMARY),
            ("cache-2", Role.REPLICA),
        ]
        assert on_replica == expected_keys(range(50))
        assert [(m.id, m.role) for m in back.members] == [("cache-1", Role.STANDALONE)]
        assert keys_of(runtime, back, "cache-1") == expected_keys(range(80))
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
        runtime = kv_runtime()
        runtime.fail_next_exec(hook="configure", stderr="cannot write redis.conf")
        with anyio.fail_after(LIMIT):
            async with (
                open_supervisor(runtime, probe_interval=PROBE) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(service_spec())
                failed = await until(events, "step_failed")
                during = supervisor.status("cache")
                recovered = await until(events, "converged")
                after = supervisor.status("cache")

        assert event_kinds(failed) == [
            ("member_created", "cache-1"),
            ("step_failed", None),
        ]
        assert "cannot write redis.conf" in failed[-1].detail
        assert during.last_error is not None
        assert "hook 'configure' of member 'cache-1'" in during.last_error
        assert "cannot write redis.conf" in during.last_error
        assert not during.converged
        assert ("member_prepared", "cache-1") in event_kinds(recovered)
        assert after.last_error is None
        assert after.converged
        assert after.member("cache-1").role is Role.STANDALONE


class TestChanges:
    """Scaling, image changes and secrets in what the supervisor reports."""

    async def test_scaling_replicas_up_and_down(self) -> None:
        """Raising replicas adds a follower; lowering them removes the newest."""
        runtime = kv_runtime()
        with anyio.fail_after(LIMIT):
            async with open_supervisor(runtime, probe_interval=PROBE) as supervisor:
                await supervisor.apply(service_spec(topology="redundant"))
                await supervisor.wait_converged("cache")
                up = await supervisor.convert("cache", "redundant", replicas=2)
                down = await supervisor.convert("cache", "redundant", replicas=1)
                objects = await service_objects(runtime)

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
        runtime = kv_runtime(other=fake_kv_image())
        with anyio.fail_after(LIMIT):
            async with open_supervisor(runtime, probe_interval=PROBE) as supervisor:
                await supervisor.apply(service_spec())
                await supervisor.wait_converged("cache")
                with pytest.raises(SpecError, match="changing the image"):
                    await supervisor.apply(service_spec(image="other:fake"))

                status = supervisor.status("cache")

        assert status.image == KV

    async def test_a_secret_echoed_by_a_failing_hook_is_reported_masked(
        self,
    ) -> None:
        """Neither status, timeline nor log shows a secret a hook printed."""
        secret = "pa55-w0rd-9"  # noqa: S105  (a made-up secret to hunt for)

        def configure(call: FakeHookCall) -> dict[str, Any]:
            raise FakeHookExit(1, stderr=f"bad password {call.payload['env']['PW']}")

        runtime = kv_runtime(leaky={**fake_kv_image(), "configure": configure})
        spec = service_spec(image="leaky:fake", env={"PW": secret}, secret_keys={"PW"})
        with anyio.fail_after(LIMIT), capture_logs() as logs:
            async with (
                open_supervisor(runtime, probe_interval=PROBE) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(spec)
                failed = await until(events, "step_failed")
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
        runtime = kv_runtime(
            noport={**fake_kv_image(), HookName.PLAN: plan_with(ports=[])},
            badplan={**fake_kv_image(), HookName.PLAN: plan_with(roles="all")},
        )
        with anyio.fail_after(LIMIT):
            async with open_supervisor(runtime, probe_interval=PROBE) as supervisor:
                with pytest.raises(SpecError, match=expected):
                    await supervisor.apply(service_spec(**options))

                statuses = supervisor.statuses()
                everything = await runtime.list_containers(labels={})
                volumes = await runtime.list_volumes(labels={})
                networks = await runtime.list_networks(labels={})

        assert (statuses, everything, volumes, networks) == ([], [], [], [])

    async def test_a_topology_the_plan_lacks_is_refused(self) -> None:
        """An image whose plan offers only standalone refuses redundant."""
        runtime = kv_runtime(
            single={
                **fake_kv_image(),
                HookName.PLAN: plan_with(topologies=["standalone"]),
            }
        )
        with anyio.fail_after(LIMIT):
            async with open_supervisor(runtime, probe_interval=PROBE) as supervisor:
                with pytest.raises(UnsupportedTopologyError) as caught:
                    await supervisor.apply(
                        service_spec(image="single:fake", topology="redundant")
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
        runtime = kv_runtime(
            single={
                **fake_kv_image(),
                HookName.PLAN: plan_with(topologies=["standalone"]),
            }
        )
        with anyio.fail_after(LIMIT):
            async with open_supervisor(runtime, probe_interval=PROBE) as supervisor:
                await supervisor.apply(service_spec(image="single:fake"))
                before = await supervisor.wait_converged("cache")
                with pytest.raises(UnsupportedTopologyError):
                    await supervisor.convert("cache", "redundant")

                after = supervisor.status("cache")
                objects = await service_objects(runtime)

        assert after == before
        assert objects[0] == ["rolecall-cache-1"]

    def test_an_unknown_topology_is_refused_when_the_spec_is_made(self) -> None:
        """A topology rolecall does not know fails at ServiceSpec construction."""
        with pytest.raises(SpecError, match="unknown topology 'mesh'"):
            service_spec(topology="mesh")

    async def test_an_unknown_service_is_an_error(self) -> None:
        """Reading or removing a service that was never applied raises SpecError."""
        runtime = kv_runtime()
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
        runtime = kv_runtime()
        with anyio.fail_after(LIMIT):
            async with (
                open_supervisor(runtime, probe_interval=PROBE) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(service_spec(topology="redundant"))
                await converged(supervisor, events)
                await supervisor.remove("cache")
                removed = await service_objects(runtime)
                # Several probe intervals: a loop left running would have
                # planned the service anew by now.
                late: list[ServiceEvent] = []
                with anyio.move_on_after(20 * PROBE):
                    late = await until(events, "member_created")

                statuses = supervisor.statuses()

        assert removed == ([], [], [])
        assert late == []
        assert await service_objects(runtime) == ([], [], [])
        assert statuses == []
        assert runtime.running_execs == 0

    async def test_leaving_the_supervisor_leaves_containers_running(self) -> None:
        """Closing the control plane stops its tasks, not the service."""
        runtime = kv_runtime()
        with anyio.fail_after(LIMIT):
            async with open_supervisor(runtime, probe_interval=PROBE) as supervisor:
                await supervisor.apply(service_spec(topology="redundant"))
                status = await supervisor.wait_converged("cache")
                write_keys(runtime, status, range(5))

            containers = await runtime.list_containers(labels={LABEL_SERVICE: "cache"})

        assert [(c.name, c.state) for c in containers] == [
            ("rolecall-cache-1", ContainerState.RUNNING),
            ("rolecall-cache-2", ContainerState.RUNNING),
        ]
        assert fake_kv_write(runtime, "rolecall-cache-1", "after", 1) == 6
        assert (runtime.running_execs, runtime.event_subscribers) == (0, 0)

    async def test_a_new_supervisor_takes_up_where_the_last_one_left(
        self,
    ) -> None:
        """A supervisor opened on running members adopts them: it learns their
        role and epoch, changes no role, and converges on the same container
        and data."""
        runtime = kv_runtime()
        with anyio.fail_after(LIMIT):
            async with open_supervisor(runtime, probe_interval=PROBE) as supervisor:
                await supervisor.apply(service_spec())
                first = await supervisor.wait_converged("cache")
                write_keys(runtime, first, range(5))
                await supervisor.convert("cache", "redundant")
                last = await supervisor.convert("cache", "standalone")

            async with (
                open_supervisor(runtime, probe_interval=PROBE) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(service_spec())
                timeline = await until(events, "converged")
                second = supervisor.status("cache")

        assert last.epoch == 4
        assert event_kinds(timeline) == [
            ("member_adopted", "cache-1"),
            ("member_configured", "cache-1"),
            ("converged", "cache-1"),
        ]
        member = second.member("cache-1")
        assert (member.role, member.epoch, second.epoch) == (Role.STANDALONE, 4, 4)
        assert member.container_id == last.member("cache-1").container_id
        assert keys_of(runtime, second, "cache-1") == expected_keys(range(5))
        assert len(await runtime.list_containers(labels={})) == 1

    async def test_leaving_does_not_wait_for_a_hung_hook(self) -> None:
        """A hook hanging at exit is killed, not waited for until its deadline."""
        runtime = kv_runtime()
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
                await supervisor.apply(service_spec(image="hang:fake"))
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
            HookName.PLAN: plan_with(timeouts={"configure": 1.0}),
        }
        runtime = kv_runtime(slow=slow_image)
        runtime.fail_next_exec(
            container_id="rolecall-slow-1", hook="configure", hang=True
        )
        with anyio.fail_after(LIMIT):
            async with (
                open_supervisor(runtime, probe_interval=PROBE) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(service_spec("slow", image="slow:fake"))
                await supervisor.apply(service_spec("fast", topology="redundant"))
                fast = await supervisor.wait_converged("fast")
                slow_meanwhile = supervisor.status("slow")
                hanging = runtime.running_execs
                failed = await until(events, "step_failed", service="slow")
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


class TestPlanProbeLeftovers:
    """Probe containers a dead control plane left are swept once expired."""

    async def test_only_expired_probe_containers_are_removed(self) -> None:
        """A plan probe removes expired leftovers, and keeps probes that may
        still be in use (not yet expired, or made before the label)."""
        runtime = kv_runtime()
        now = int(time.time())
        leftovers = {
            "expired": {LABEL_EXPIRES: str(now - 1)},
            "in-use": {LABEL_EXPIRES: str(now + 600)},
            "unlabelled": {},
        }
        for name, labels in leftovers.items():
            await runtime.create_container(
                ContainerSpec(
                    name=f"rolecall-plan-{name}",
                    image=KV,
                    labels={LABEL_MANAGED: "plan-probe", **labels},
                )
            )

        with anyio.fail_after(LIMIT), capture_logs() as logs:
            async with open_supervisor(runtime, probe_interval=PROBE) as supervisor:
                await supervisor.apply(service_spec())
                left = await runtime.list_containers(
                    labels={LABEL_MANAGED: "plan-probe"}
                )

        swept = [
            line["container"] for line in logs if line["event"] == "plan_probe_swept"
        ]
        assert swept == ["rolecall-plan-expired"]
        assert sorted(c.name for c in left) == [
            "rolecall-plan-in-use",
            "rolecall-plan-unlabelled",
        ]
