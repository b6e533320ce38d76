"""Faults on the in-memory runtime: supervision, dead letters, failover control,
role requests and cancellation, on asyncio and trio."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anyio
import pytest
from attrs import define, evolve, field
from structlog.testing import capture_logs
from supervisor_support import (
    LIMIT,
    PROBE,
    Lag,
    converged,
    crash_actor,
    event_kinds,
    expected_keys,
    keys_of,
    kv_runtime,
    service_spec,
    until,
    write_keys,
)

from rolecall.actors import (
    ActorState,
    ApplyRole,
    ContainerInfo,
    Probe,
    Superseded,
)
from rolecall.hooks_protocol import (
    HookFailedError,
    HookName,
    MailboxFullError,
    Role,
    SpecError,
    Topology,
)
from rolecall.supervisor import (
    RestartKind,
    ServiceEvent,
    Strategy,
    Supervision,
    open_supervisor,
    validate_spec,
)
from rolecall.supervisor._members import MAILBOX_CAPACITY
from rolecall.supervisor._reconciler import (
    ApplyRole as ApplyRoleStep,
)
from rolecall.supervisor._reconciler import (
    FenceMember,
    ObservedMember,
    RestartMember,
    plan_steps,
)
from rolecall.supervisor._supervision import Backoff, Intensity
from rolecall.testing import (
    FakeHook,
    FakeHookCall,
    FakeHookExit,
    FakeRuntime,
    fake_kv_image,
)

# Small, exact delays: no jitter, so backoffs can be checked to the digit.
FAST = Supervision(backoff_first=0.01, backoff_cap=0.04, jitter=0.0, reset_after=60)


# -- supervision settings and counters (pure) ---------------------------------


class TestSupervisionSettings:
    """Backoff, its reset and the intensity window, without a runtime."""

    def test_delays_double_up_to_the_cap_within_the_jitter_band(self) -> None:
        """The nominal delay doubles from the first to the cap; jitter spreads it
        by at most its fraction either way."""
        settings = Supervision()
        nominal = [settings.delay(n, spread=lambda: 0.5) for n in range(1, 9)]
        lowest = settings.delay(3, spread=lambda: 0.0)
        highest = settings.delay(3, spread=lambda: 1.0)

        assert nominal == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
        assert (lowest, highest) == (pytest.approx(1.6), pytest.approx(2.4))
        assert settings.delay(0) == 0.0

    def test_the_backoff_resets_only_after_a_stable_period(self) -> None:
        """Failures keep growing the delay until reset_after passes quietly."""
        backoff = Backoff(Supervision(jitter=0.0, reset_after=60.0))
        delays = [backoff.fail(now) for now in (0.0, 1.0, 2.0)]
        early = backoff.settle(61.9)
        late = backoff.settle(62.0)

        assert delays == [0.5, 1.0, 2.0]
        assert (early, late, backoff.attempts) == (False, True, 0)
        assert backoff.fail(63.0) == 0.5

    def test_the_intensity_counts_restarts_inside_its_window(self) -> None:
        """Three restarts in ten seconds pass a limit of three; a fourth does not,
        unless the oldest left the window."""
        intensity = Intensity(Supervision(max_restarts=3, within=10.0))

        assert [intensity.record(t) for t in (0.0, 1.0, 2.0)] == [True, True, True]
        assert intensity.record(3.0) is False
        assert intensity.record(12.5) is True

    def test_the_defaults_are_documented_values(self) -> None:
        """The defaults are one_for_one, permanent, 10 in 600 s, 0.5 s to 30 s
        with 20 % jitter, reset after 60 s, unresponsive after 10 s."""
        settings = Supervision()

        assert (settings.strategy, settings.restart) == (
            Strategy.ONE_FOR_ONE,
            RestartKind.PERMANENT,
        )
        assert (settings.max_restarts, settings.within) == (10, 600.0)
        assert (settings.backoff_first, settings.backoff_cap) == (0.5, 30.0)
        assert (settings.jitter, settings.reset_after) == (0.2, 60.0)
        assert settings.unresponsive_after == 10.0

    def test_a_spec_takes_supervision_as_a_map_and_refuses_bad_values(self) -> None:
        """A map becomes Supervision; a cap below the first delay is a SpecError."""
        spec = service_spec(supervision={"strategy": "rest_for_one", "max_restarts": 3})

        assert spec.supervision.strategy is Strategy.REST_FOR_ONE
        assert spec.supervision.max_restarts == 3
        with pytest.raises(SpecError, match=r"backoff_cap 0\.1 below backoff_first"):
            validate_spec(
                service_spec(supervision={"backoff_first": 1, "backoff_cap": 0.1})
            )
        with pytest.raises(SpecError, match=r"unknown strategy 'ring'"):
            service_spec(supervision={"strategy": "ring"})


def _member(number: int, role: Role | None, **state: Any) -> ObservedMember:
    state.setdefault("alive", True)
    state.setdefault("ready", True)
    state.setdefault("synced", True)
    return ObservedMember(id=f"cache-{number}", number=number, role=role, **state)


class TestRestartRules:
    """The reconciler's restart kinds and strategies, on records."""

    def test_a_temporary_member_stays_down(self) -> None:
        """A dead temporary replica gets no step at all."""
        spec = service_spec(topology="redundant", supervision={"restart": "temporary"})
        members = [
            _member(1, Role.PRIMARY),
            _member(2, Role.REPLICA, primary="cache-1", alive=False, exit_code=137),
        ]

        assert plan_steps(spec, members, next_number=3) == []

    def test_a_transient_member_restarts_after_a_kill_not_after_a_clean_exit(
        self,
    ) -> None:
        """Exit 137 restarts a transient replica; exit 0 leaves it down."""
        spec = service_spec(topology="redundant", supervision={"restart": "transient"})
        killed = _member(2, Role.REPLICA, primary="cache-1", alive=False, exit_code=137)
        clean = _member(2, Role.REPLICA, primary="cache-1", alive=False, exit_code=0)
        oom = _member(
            2,
            Role.REPLICA,
            primary="cache-1",
            alive=False,
            exit_code=137,
            oom_killed=True,
        )
        primary = _member(1, Role.PRIMARY)

        restart = [
            RestartMember("cache-2"),
            ApplyRoleStep("cache-2", Role.REPLICA, "cache-1"),
        ]
        assert plan_steps(spec, [primary, killed], next_number=3) == restart
        assert plan_steps(spec, [primary, oom], next_number=3) == restart
        assert plan_steps(spec, [primary, clean], next_number=3) == []

    def test_one_for_all_restarts_every_member(self) -> None:
        """A dead replica under one_for_all restarts the primary and the other
        replica too, each told its role again."""
        spec = service_spec(
            topology="redundant", replicas=2, supervision={"strategy": "one_for_all"}
        )
        members = [
            _member(1, Role.PRIMARY),
            _member(2, Role.REPLICA, primary="cache-1", alive=False, exit_code=1),
            _member(3, Role.REPLICA, primary="cache-1"),
        ]

        assert plan_steps(spec, members, next_number=4) == [
            RestartMember("cache-1"),
            ApplyRoleStep("cache-1", Role.PRIMARY),
            RestartMember("cache-2"),
            ApplyRoleStep("cache-2", Role.REPLICA, "cache-1"),
            RestartMember("cache-3"),
            ApplyRoleStep("cache-3", Role.REPLICA, "cache-1"),
        ]

    def test_rest_for_one_restarts_the_younger_members(self) -> None:
        """A dead cache-2 under rest_for_one restarts cache-3, not cache-1."""
        spec = service_spec(
            topology="redundant", replicas=2, supervision={"strategy": "rest_for_one"}
        )
        members = [
            _member(1, Role.PRIMARY),
            _member(2, Role.REPLICA, primary="cache-1", alive=False, exit_code=1),
            _member(3, Role.REPLICA, primary="cache-1"),
        ]

        assert plan_steps(spec, members, next_number=4) == [
            RestartMember("cache-2"),
            ApplyRoleStep("cache-2", Role.REPLICA, "cache-1"),
            RestartMember("cache-3"),
            ApplyRoleStep("cache-3", Role.REPLICA, "cache-1"),
        ]

    def test_paused_failover_only_fences(self) -> None:
        """With promotion paused, a lost primary is fenced and nothing else."""
        spec = service_spec(topology="redundant")
        members = [
            _member(1, Role.PRIMARY, alive=False, exit_code=137),
            _member(2, Role.REPLICA, primary="cache-1", offset=5),
        ]

        assert plan_steps(spec, members, next_number=3, promote=False) == [
            FenceMember("cache-1")
        ]


# -- the supervisor on the fake runtime ---------------------------------------

pytestmark = pytest.mark.anyio


def _image(**hooks: FakeHook) -> dict[str, FakeHook]:
    return {**fake_kv_image(), **hooks}


def _sick_status(sick: set[str], seen: anyio.Event | None = None) -> FakeHook:
    """The key-value status hook, answering unhealthy for ``sick``
    containers as one whose server died would. ``seen`` is set at the
    second such answer: the first has been recorded by then."""
    status = fake_kv_image()[HookName.STATUS]
    answered = 0

    def answer(call: FakeHookCall) -> dict[str, Any]:
        nonlocal answered
        report = status(call)
        assert isinstance(report, dict)  # the key-value hooks are synchronous
        if call.container.id in sick:
            answered += 1
            if seen is not None and answered >= 2:
                seen.set()
            return {**report, "healthy": False}

        return report

    return answer


@define
class Gate:
    """A fake hook that blocks until released, and says when it started."""

    # Names of containers whose hook blocks; others run the key-value hook.
    held: set[str] = field(factory=set)
    # The hooks run where nothing is held.
    base: dict[str, FakeHook] = field(factory=fake_kv_image)
    # Set when a held hook has started.
    started: anyio.Event = field(factory=anyio.Event)
    # anyio clock time at which the last held hook started.
    started_at: float = 0.0
    # Runs of the hook, held or not, by container name.
    runs: dict[str, int] = field(factory=dict)

    def hook(self, name: HookName) -> FakeHook:
        """The key-value hook ``name``, blocking forever in held containers."""
        plain = self.base[name]

        async def run(call: FakeHookCall) -> Mapping[str, Any] | None:
            container = call.container.name
            self.runs[container] = self.runs.get(container, 0) + 1
            if container not in self.held:
                result = plain(call)
                assert isinstance(result, Mapping)  # the key-value hooks are sync
                return result

            self.started_at = anyio.current_time()
            self.started.set()
            await anyio.sleep_forever()
            return None

        return run


async def _events(events: Any, done: Any) -> list[ServiceEvent]:
    seen: list[ServiceEvent] = []
    async for event in events:
        seen.append(event)
        if done(event):
            return seen

    raise AssertionError(f"the timeline ended early: {seen}")


class TestGivingUp:
    """Past its intensity limit a service fails alone; errors stay contained."""

    async def test_a_crash_loop_past_the_limit_fails_only_that_service(self) -> None:
        """A container that dies in every start is restarted twice, then the
        service is marked failed; another service converges meanwhile."""

        def start(call: FakeHookCall) -> dict[str, Any]:
            call.runtime.crash(call.container.id, exit_code=1)
            return {}

        runtime = kv_runtime(loop=_image(start=start))
        spec = service_spec(
            "loop",
            image="loop:fake",
            supervision={**_fast(), "max_restarts": 2, "within": 60},
        )
        with anyio.fail_after(LIMIT):
            async with (
                open_supervisor(runtime, probe_interval=PROBE) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(spec)
                await supervisor.apply(service_spec("calm"))
                seen = await _events(events, lambda e: e.kind == "service_failed")
                calm = await supervisor.wait_converged("calm")
                failed = supervisor.status("loop")

        loop_kinds = [e.kind for e in seen if e.service == "loop"]
        assert loop_kinds.count("member_restarted") == 2
        assert seen[-1].detail.startswith("more than 2 restarts within 60s")
        assert failed.failure == seen[-1].detail
        assert not failed.converged
        assert calm.converged
        assert calm.member("calm-1").role is Role.STANDALONE

    async def test_applying_the_spec_again_takes_a_failed_service_up(self) -> None:
        """A new spec clears the failure and the service converges."""
        crashing = {"on": True}

        def start(call: FakeHookCall) -> dict[str, Any]:
            if crashing["on"]:
                call.runtime.crash(call.container.id, exit_code=1)
            return {}

        runtime = kv_runtime(loop=_image(start=start))
        spec = service_spec(
            "loop", image="loop:fake", supervision={**_fast(), "max_restarts": 1}
        )
        with anyio.fail_after(LIMIT):
            async with (
                open_supervisor(runtime, probe_interval=PROBE) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(spec)
                await until(events, "service_failed", service="loop")
                crashing["on"] = False
                await supervisor.apply(spec)
                after = await supervisor.wait_converged("loop")

        assert after.failure is None
        assert after.member("loop-1").role is Role.STANDALONE

    async def test_take_up_restarts_a_failed_service_keeping_its_conversion(
        self,
    ) -> None:
        """`take_up` clears the failure of a service as it stands: a
        conversion made since its spec was applied is kept."""
        crashing = {"on": False}

        def start(call: FakeHookCall) -> dict[str, Any]:
            if crashing["on"]:
                call.runtime.crash(call.container.id, exit_code=1)
            return {}

        runtime = kv_runtime(loop=_image(start=start))
        spec = service_spec(
            "loop", image="loop:fake", supervision={**_fast(), "max_restarts": 1}
        )
        with anyio.fail_after(LIMIT):
            async with (
                open_supervisor(runtime, probe_interval=PROBE) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(spec)
                await supervisor.convert("loop", "redundant", timeout=LIMIT)
                untouched = supervisor.take_up("loop")
                crashing["on"] = True
                writer = supervisor.status("loop").writer
                assert writer is not None
                runtime.crash(writer.container_id)
                await until(events, "service_failed", service="loop")
                crashing["on"] = False
                taken = supervisor.take_up("loop")
                after = await supervisor.wait_converged("loop")

        assert (untouched, taken) == (False, True)
        assert after.failure is None
        assert after.topology is Topology.REDUNDANT
        assert len(after.members) == 2

    async def test_an_unexpected_error_in_a_pass_is_contained(self) -> None:
        """A runtime raising KeyError in one service's listing is reported as a
        crashed pass; that service recovers and the other never notices."""
        runtime = _Flaky(kv_runtime(), fail_for="flaky", failures=1)
        with anyio.fail_after(LIMIT):
            async with (
                open_supervisor(runtime, probe_interval=PROBE) as supervisor,  # type: ignore[arg-type]
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(service_spec("flaky", supervision=_fast()))
                crashed = await until(events, "pass_crashed", service="flaky")
                flaky = await supervisor.wait_converged("flaky")
                await supervisor.apply(service_spec("steady"))
                steady = await supervisor.wait_converged("steady")

        assert crashed[-1].fields["error_type"] == "KeyError"
        assert "a pass raised KeyError" in crashed[-1].detail
        assert flaky.member("flaky-1").role is Role.STANDALONE
        assert steady.member("steady-1").role is Role.STANDALONE


def _fast() -> dict[str, Any]:
    return {
        "backoff_first": FAST.backoff_first,
        "backoff_cap": FAST.backoff_cap,
        "jitter": 0.0,
    }


@define
class _Flaky:
    """A fake runtime whose container listing fails for one service."""

    inner: FakeRuntime
    fail_for: str
    failures: int

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def list_containers(
        self, *, labels: Mapping[str, str]
    ) -> list[ContainerInfo]:
        if self.failures and self.fail_for in labels.values():
            self.failures -= 1
            raise KeyError("a bug in a runtime, not a rolecall error")

        return await self.inner.list_containers(labels=labels)


class TestDeadLetters:
    """What an actor cannot handle is filed, never retried."""

    async def test_a_malformed_message_is_dead_lettered_and_the_actor_goes_on(
        self,
    ) -> None:
        """A told message of the wrong type is filed; the same actor serves on."""
        runtime = kv_runtime()
        with anyio.fail_after(LIMIT):
            async with (
                open_supervisor(runtime, probe_interval=PROBE) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(service_spec())
                await converged(supervisor, events)
                controller = supervisor.controllers["cache"]
                ref = controller.members["cache-1"].ref
                ref.tell_nowait({"not": "a message"})  # type: ignore[arg-type]
                await supervisor.convert("cache", "redundant")
                after = supervisor.status("cache")
                state = ref.state
                same = controller.members["cache-1"].ref is ref

        (letter,) = controller.dead_letters.entries
        assert (letter.member, letter.message) == ("cache-1", "dict")
        assert letter.reason == "not a message a container actor takes"
        assert after.dead_letters == 1
        assert (state, same) == (ActorState.RUNNING, True)

    async def test_the_message_that_crashed_an_actor_is_filed_not_retried(
        self,
    ) -> None:
        """A told hook run that crashes its actor is filed once; the new actor
        never runs it again."""
        runtime = kv_runtime()
        with anyio.fail_after(LIMIT):
            async with (
                open_supervisor(runtime, probe_interval=PROBE) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(service_spec())
                await converged(supervisor, events)
                finished = runtime.finished_execs
                old = crash_actor(supervisor)
                await until(events, "actor_replaced")
                await until(events, "converged")
                controller = supervisor.controllers["cache"]
                status = supervisor.status("cache")

        (letter,) = controller.dead_letters.entries
        assert letter.message == "RunHook"
        assert letter.reason.startswith("its handler raised HookUnsupportedError")
        assert old.state is ActorState.CRASHED
        assert status.dead_letters == 1
        assert runtime.finished_execs > finished
        assert status.member("cache-1").role is Role.STANDALONE


class TestFailoverControl:
    """Unresponsive primaries, paused failover and the wording of a restart."""

    async def test_a_paused_primary_is_fenced_before_a_replica_is_promoted(
        self,
    ) -> None:
        """A primary frozen past the deadline is killed first, then the replica
        takes over and the old primary, restarted, follows it; at no time do
        two members take writes."""
        runtime = kv_runtime()
        spec = service_spec(
            topology="redundant", supervision={"unresponsive_after": 0.2}
        )
        with anyio.fail_after(LIMIT):
            async with (
                open_supervisor(runtime, probe_interval=PROBE) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(spec)
                before = await converged(supervisor, events)
                old = before.member("cache-1").container_id
                runtime.pause(old)
                timeline = await until(events, "converged")
                after = supervisor.status("cache")
                left = await runtime.list_containers(labels={})

        kinds = event_kinds(timeline)
        assert kinds.index(("member_unresponsive", "cache-1")) < kinds.index(
            ("member_fenced", "cache-1")
        )
        assert kinds.index(("member_fenced", "cache-1")) < kinds.index(
            ("failover", "cache-2")
        )
        assert kinds.index(("failover", "cache-2")) < kinds.index(
            ("member_restarted", "cache-1")
        )
        assert old in {c.id for c in left}
        assert after.primary == "cache-2"
        assert [m.id for m in after.members if m.role is Role.PRIMARY] == ["cache-2"]
        assert after.member("cache-1").following == "cache-2"

    async def test_a_primary_reporting_unhealthy_is_fenced_and_replaced(
        self,
    ) -> None:
        """A primary whose server died in a running container (status answers,
        unhealthy) is fenced past the deadline and a replica takes over."""
        sick: set[str] = set()
        runtime = kv_runtime(sick=_image(status=_sick_status(sick)))
        spec = service_spec(
            image="sick:fake",
            topology="redundant",
            supervision={"unresponsive_after": 0.2},
        )
        with anyio.fail_after(LIMIT):
            async with (
                open_supervisor(runtime, probe_interval=PROBE) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(spec)
                before = await converged(supervisor, events)
                sick.add(before.member("cache-1").container_id)
                noticed = await until(events, "member_unresponsive")
                taken = await until(events, "failover")
                sick.clear()
                await until(events, "converged")
                after = supervisor.status("cache")

        (unresponsive,) = [e for e in noticed if e.kind == "member_unresponsive"]
        assert (unresponsive.member, unresponsive.fields["reason"]) == (
            "cache-1",
            "unhealthy",
        )
        assert ("member_fenced", "cache-1") in event_kinds(taken)
        assert taken[-1].member == "cache-2"
        assert after.primary == "cache-2"
        assert [m.id for m in after.members if m.role is Role.PRIMARY] == ["cache-2"]

    async def test_a_standalone_reporting_unhealthy_is_restarted(self) -> None:
        """With no replica to take over, an unhealthy writer is restarted in
        place (its volume holds the data) and serves again."""
        sick: set[str] = set()
        runtime = kv_runtime(sick=_image(status=_sick_status(sick)))
        spec = service_spec(image="sick:fake", supervision={"unresponsive_after": 0.2})
        with anyio.fail_after(LIMIT):
            async with (
                open_supervisor(runtime, probe_interval=PROBE) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(spec)
                before = await converged(supervisor, events)
                container = before.member("cache-1").container_id
                sick.add(container)
                await until(events, "member_unresponsive")
                await until(events, "member_restarted")
                sick.clear()
                await until(events, "converged")
                after = supervisor.status("cache")

        member = after.member("cache-1")
        assert (member.container_id, member.role, member.healthy) == (
            container,
            Role.STANDALONE,
            True,
        )

    async def test_an_unhealthy_replica_is_not_taken_for_a_lost_writer(
        self,
    ) -> None:
        """Only a writer's unhealthy answers count against the deadline: a
        replica still copying may report unhealthy for a long time."""
        sick: set[str] = set()
        runtime = kv_runtime(sick=_image(status=_sick_status(sick)))
        spec = service_spec(
            image="sick:fake",
            topology="redundant",
            supervision={"unresponsive_after": 0.1},
        )
        with anyio.fail_after(LIMIT):
            async with (
                open_supervisor(runtime, probe_interval=PROBE) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(spec)
                before = await converged(supervisor, events)
                sick.add(before.member("cache-2").container_id)
                with anyio.move_on_after(1.0):
                    await until(events, "member_unresponsive")
                    raise AssertionError("an unhealthy replica was unresponsive")
                after = supervisor.status("cache")

        assert after.primary == "cache-1"
        assert after.member("cache-2").healthy is False

    async def test_a_replica_whose_server_died_is_not_promoted(self) -> None:
        """With the primary lost, the replica whose status says its service
        does not answer is passed over for one that does."""
        sick: set[str] = set()
        seen = anyio.Event()
        runtime = kv_runtime(sick=_image(status=_sick_status(sick, seen)))
        spec = service_spec(image="sick:fake", topology="redundant", replicas=2)
        with anyio.fail_after(LIMIT):
            async with (
                open_supervisor(runtime, probe_interval=PROBE) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(spec)
                before = await converged(supervisor, events)
                sick.add(before.member("cache-2").container_id)
                await seen.wait()
                runtime.crash(before.member("cache-1").container_id)
                taken = await until(events, "failover")

        assert taken[-1].member == "cache-3"

    async def test_a_hung_configure_does_not_hold_up_a_failover(self) -> None:
        """A reconfigure whose configure hangs on the replica: the primary
        lost meanwhile is replaced at once (the configure is cut short and
        runs again later), not after the hook's deadline."""
        gate = Gate()
        hooks = {**fake_kv_image(), HookName.CONFIGURE: gate.hook(HookName.CONFIGURE)}
        runtime = kv_runtime(gated=hooks)
        spec = service_spec(image="gated:fake", topology="redundant")
        with anyio.fail_after(LIMIT):
            async with (
                open_supervisor(runtime, probe_interval=PROBE) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(spec)
                before = await converged(supervisor, events)
                gate.held.add("rolecall-cache-2")
                await supervisor.apply(evolve(spec, config={"maxmemory": "64mb"}))
                await gate.started.wait()
                runtime.crash(before.member("cache-1").container_id)
                taken = await until(events, "failover")
                gate.held.clear()
                after = await converged(supervisor, events)

        assert ("member_fenced", "cache-1") in event_kinds(taken)
        assert taken[-1].member == "cache-2"
        assert after.primary == "cache-2"
        assert gate.runs["rolecall-cache-2"] >= 3  # prepare, cut short, again

    async def test_an_unhealthy_writer_cuts_short_steps_on_others(self) -> None:
        """A pass held by a hung configure on the replica is cut short when
        the writer turns unhealthy past the deadline, so the failover runs
        without waiting for that hook."""
        gate = Gate()
        sick: set[str] = set()
        hooks = {
            **fake_kv_image(),
            HookName.CONFIGURE: gate.hook(HookName.CONFIGURE),
            HookName.STATUS: _sick_status(sick),
        }
        runtime = kv_runtime(gated=hooks)
        spec = service_spec(
            image="gated:fake",
            topology="redundant",
            supervision={"unresponsive_after": 0.2},
        )
        with anyio.fail_after(LIMIT):
            async with (
                open_supervisor(runtime, probe_interval=PROBE) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(spec)
                before = await converged(supervisor, events)
                gate.held.add("rolecall-cache-2")
                await supervisor.apply(evolve(spec, config={"maxmemory": "64mb"}))
                await gate.started.wait()
                sick.add(before.member("cache-1").container_id)
                taken = await until(events, "failover")
                gate.held.clear()
                sick.clear()

        kinds = event_kinds(taken)
        assert ("steps_interrupted", "cache-2") in kinds
        assert taken[-1].member == "cache-2"

    async def test_paused_failover_fences_and_waits_for_resume(self) -> None:
        """While paused, a lost primary is fenced and nobody promoted; resuming
        promotes the replica."""
        runtime = kv_runtime()
        with anyio.fail_after(LIMIT):
            async with (
                open_supervisor(runtime, probe_interval=PROBE) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(service_spec(topology="redundant"))
                before = await converged(supervisor, events)
                supervisor.pause_failover("cache")
                runtime.crash(before.member("cache-1").container_id)
                held = await until(events, "failover_withheld")
                paused = supervisor.status("cache")
                supervisor.resume_failover("cache")
                resumed = await until(events, "converged")
                after = supervisor.status("cache")

        assert ("member_fenced", "cache-1") in event_kinds(held)
        assert "failover" not in [kind for kind, _ in event_kinds(held)]
        assert (paused.failover_paused, paused.primary) == (True, None)
        assert ("failover", "cache-2") in event_kinds(resumed)
        assert (after.failover_paused, after.primary) == (False, "cache-2")

    async def test_a_writer_restarted_in_place_is_no_failover(self) -> None:
        """A crashed standalone that comes back is reported as writer_restarted."""
        runtime = kv_runtime()
        with anyio.fail_after(LIMIT):
            async with (
                open_supervisor(runtime, probe_interval=PROBE) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(service_spec())
                before = await converged(supervisor, events)
                runtime.crash(before.member("cache-1").container_id)
                timeline = await until(events, "converged")

        kinds = [kind for kind, _ in event_kinds(timeline)]
        assert "failover" not in kinds
        restarted = [e for e in timeline if e.kind == "writer_restarted"]
        assert [e.detail for e in restarted] == [
            "cache-1 took writes again after a restart in place"
        ]

    async def test_a_hung_status_hook_does_not_delay_noticing_a_dead_primary(
        self,
    ) -> None:
        """With a replica's status hook hung, the primary's death is reported at
        once and the other replica promoted."""
        lag = Lag()
        gate = Gate(held={"rolecall-cache-3"}, base=lag.image())
        runtime = kv_runtime(gated=_image(status=gate.hook(HookName.STATUS)))
        spec = service_spec(
            image="gated:fake",
            topology="redundant",
            replicas=2,
            timeouts={"status": 60},
            supervision={"unresponsive_after": 60},
        )
        with anyio.fail_after(LIMIT):
            async with (
                open_supervisor(runtime, probe_interval=PROBE) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(spec)
                before = await until(events, "role_applied")
                await gate.started.wait()
                status = supervisor.status("cache")
                write_keys(runtime, status, range(3))
                await lag.wait_offset("rolecall-cache-2", 3)
                killed_at = anyio.current_time()
                runtime.crash(status.member("cache-1").container_id)
                lost = await until(events, "member_lost")
                noticed = anyio.current_time() - killed_at
                await _events(events, lambda e: e.kind == "failover")
                after = supervisor.status("cache")

        assert before
        assert lost[-1].member == "cache-1"
        assert noticed < 1.0
        assert after.primary == "cache-2"

    async def test_removing_a_member_does_not_wait_for_its_hung_hook(self) -> None:
        """Converting to standalone removes a replica whose status hook hangs
        without waiting for that hook's 60 s timeout."""
        gate = Gate(held={"rolecall-cache-2"})
        runtime = kv_runtime(gated=_image(status=gate.hook(HookName.STATUS)))
        spec = service_spec(
            image="gated:fake",
            topology="redundant",
            timeouts={"status": 60},
            supervision={"unresponsive_after": 60},
        )
        with anyio.fail_after(LIMIT):
            async with open_supervisor(runtime, probe_interval=PROBE) as supervisor:
                await supervisor.apply(spec)
                await gate.started.wait()
                started = anyio.current_time()
                after = await supervisor.convert("cache", "standalone", timeout=10)
                took = anyio.current_time() - started

        assert [(m.id, m.role) for m in after.members] == [("cache-1", Role.STANDALONE)]
        assert took < 5
        assert runtime.running_execs == 0


class TestSwitchover:
    """A graceful change of primary on the fake key-value image."""

    async def test_switchover_moves_the_primary_and_keeps_every_key(self) -> None:
        """The named replica becomes primary with every key; the old primary and
        the other replica follow it."""
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
                await lag.wait_offset("rolecall-cache-2", 10)
                # cache-2 lags behind writes 10..19: the handover must bring them.
                lag.held.add("rolecall-cache-2")
                write_keys(runtime, before, range(10, 20))
                after = await supervisor.switchover("cache", "cache-2", timeout=10)
                timeline = await until(events, "switchover")

        assert after.primary == "cache-2"
        assert [(m.id, m.role, m.following) for m in after.members] == [
            ("cache-1", Role.REPLICA, "cache-2"),
            ("cache-2", Role.PRIMARY, None),
            ("cache-3", Role.REPLICA, "cache-2"),
        ]
        assert keys_of(runtime, after, "cache-2") == expected_keys(range(20))
        assert timeline[-1].fields["previous"] == "cache-1"
        assert "failover" not in [kind for kind, _ in event_kinds(timeline)]

    async def test_switchover_refuses_what_cannot_take_over(self) -> None:
        """An unknown member, a standalone service and a replica that never
        synced are refused with SpecError before anything changes."""
        runtime = kv_runtime()
        with anyio.fail_after(LIMIT):
            async with open_supervisor(runtime, probe_interval=PROBE) as supervisor:
                await supervisor.apply(service_spec("solo"))
                await supervisor.wait_converged("solo")
                await supervisor.apply(service_spec(topology="redundant"))
                await supervisor.wait_converged("cache")
                supervisor.controllers["cache"].members["cache-2"].synced = False
                with pytest.raises(SpecError) as unknown:
                    await supervisor.switchover("cache", "cache-9", timeout=5)
                with pytest.raises(SpecError) as solo:
                    await supervisor.switchover("solo", "solo-1", timeout=5)
                with pytest.raises(SpecError) as empty:
                    await supervisor.switchover("cache", "cache-2", timeout=5)
                after = supervisor.status("cache")

        assert str(unknown.value) == (
            "service 'cache' has no member 'cache-9' (members: cache-1, cache-2)"
        )
        assert "needs the redundant topology" in str(solo.value)
        assert str(empty.value) == (
            "member 'cache-2' of service 'cache' cannot take over writes: it"
            " never completed a sync, so it holds no data"
        )
        assert after.primary == "cache-1"


class TestRoleRequests:
    """Role requests to one member coalesce; the latest wins, in order."""

    async def test_a_flood_while_a_hook_is_stuck_keeps_only_the_latest(self) -> None:
        """A thousand requests behind a stuck role hook leave one waiting; the
        rest are answered superseded and the last one is applied."""
        gate = Gate(held={"rolecall-cache-1"})
        runtime = kv_runtime(gated=_image(role=gate.hook(HookName.ROLE)))
        with anyio.fail_after(LIMIT):
            async with open_supervisor(runtime, probe_interval=PROBE) as supervisor:
                await supervisor.apply(service_spec(image="gated:fake"))
                await gate.started.wait()
                controller = supervisor.controllers["cache"]
                member = controller.members["cache-1"]
                gate.held.clear()
                view = controller.view()
                tickets = [
                    member.actor.request_role(
                        ApplyRole(view, Role.STANDALONE, None, 100 + n)
                    )
                    for n in range(1000)
                ]
                outcomes = [await ticket.wait() for ticket in tickets]
                queued = member.ref.statistics().mailbox.high_water

        superseded = [o for o in outcomes if isinstance(o, Superseded)]
        assert len(superseded) == 999
        assert [o.epoch for o in superseded[:2]] == [100, 101]
        assert not isinstance(outcomes[-1], Superseded)
        assert member.actor.epoch == 1099
        assert queued <= 3
        assert runtime.volume_data("rolecall-cache-1-data")["epoch"] == 1099

    async def test_a_newer_request_cuts_a_running_role_hook_short(self) -> None:
        """A request arriving while a role hook hangs kills that hook, answers
        it superseded, and runs the newer one."""
        gate = Gate(held={"rolecall-cache-1"})
        runtime = kv_runtime(gated=_image(role=gate.hook(HookName.ROLE)))
        with anyio.fail_after(LIMIT):
            async with open_supervisor(runtime, probe_interval=PROBE) as supervisor:
                await supervisor.apply(service_spec(image="gated:fake"))
                await gate.started.wait()
                controller = supervisor.controllers["cache"]
                member = controller.members["cache-1"]
                gate.held.clear()
                first = member.actor.request_role(
                    ApplyRole(controller.view(), Role.STANDALONE, None, 50)
                )
                gate.held.add("rolecall-cache-1")
                gate.started = anyio.Event()
                await gate.started.wait()
                gate.held.clear()
                second = member.actor.request_role(
                    ApplyRole(controller.view(), Role.STANDALONE, None, 51)
                )
                outcomes = (await first.wait(), await second.wait())
                status = await supervisor.wait_converged("cache")

        assert outcomes[0] == Superseded(50, interrupted=True)
        assert not isinstance(outcomes[1], Superseded)
        assert runtime.killed_execs >= 2
        assert status.member("cache-1").epoch >= 51


class TestExitClasses:
    """Exit codes decide the response: skip, report, refuse."""

    async def test_missing_optional_hooks_are_skipped(self) -> None:
        """An image without configure, start and stop hooks still converges:
        those hooks being unsupported is a no-op."""
        hooks = fake_kv_image()
        for name in (HookName.CONFIGURE, HookName.START, HookName.STOP):
            del hooks[name]
        runtime = kv_runtime(bare=hooks)
        with anyio.fail_after(LIMIT), capture_logs() as logs:
            async with open_supervisor(runtime, probe_interval=PROBE) as supervisor:
                await supervisor.apply(service_spec(image="bare:fake"))
                status = await supervisor.wait_converged("cache")

        skipped = sorted(e["hook"] for e in logs if e["event"] == "hook_skipped")
        assert skipped == ["configure", "start"]
        assert status.member("cache-1").role is Role.STANDALONE

    async def test_a_refused_payload_points_at_the_config_first(self) -> None:
        """Exit 65 is reported as a refused payload: check the config, or
        report a bug."""

        def configure(call: FakeHookCall) -> dict[str, Any]:
            raise FakeHookExit(65, stderr="config maxmemory is not a size")

        runtime = kv_runtime(picky=_image(configure=configure))
        with anyio.fail_after(LIMIT):
            async with (
                open_supervisor(runtime, probe_interval=PROBE) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(service_spec(image="picky:fake"))
                failed = await until(events, "step_failed")

        assert failed[-1].fields["exit_code"] == 65
        assert (
            "ended with exit code 65 (it rejected the payload: check the"
            " service's config or report a bug): config maxmemory is not a size"
        ) in failed[-1].detail

    async def test_a_stale_epoch_is_refused_with_exit_1(self) -> None:
        """A role request older than the member's epoch fails with exit 1,
        naming both epochs, and changes nothing."""
        runtime = kv_runtime()
        with anyio.fail_after(LIMIT):
            async with open_supervisor(runtime, probe_interval=PROBE) as supervisor:
                await supervisor.apply(service_spec())
                await supervisor.wait_converged("cache")
                controller = supervisor.controllers["cache"]
                member = controller.members["cache-1"]
                stale = ApplyRole(controller.view(), Role.PRIMARY, None, 0)
                with pytest.raises(HookFailedError) as refused:
                    await member.actor.request_role(stale).wait()
                after = supervisor.status("cache")

        assert refused.value.exit_code == 1
        assert refused.value.stderr_tail == (
            "role: refusing epoch 0, older than epoch 1 already applied"
        )
        assert after.member("cache-1").role is Role.STANDALONE


class TestMailboxes:
    """A member's mailbox is bounded; overflow is refused at once and logged."""

    async def test_a_full_member_mailbox_refuses_at_once_and_logs(self) -> None:
        """With a status hook stuck, 64 queued messages fill the member's
        mailbox; the next ask is refused with MailboxFullError and logged as
        mailbox_overflow."""
        gate = Gate(held={"rolecall-cache-1"})
        runtime = kv_runtime(gated=_image(status=gate.hook(HookName.STATUS)))
        spec = service_spec(
            image="gated:fake",
            timeouts={"status": 60},
            supervision={"unresponsive_after": 60},
        )
        with anyio.fail_after(LIMIT), capture_logs() as logs:
            async with open_supervisor(runtime, probe_interval=PROBE) as supervisor:
                await supervisor.apply(spec)
                await gate.started.wait()
                controller = supervisor.controllers["cache"]
                member = controller.members["cache-1"]
                for _ in range(MAILBOX_CAPACITY):
                    member.ref.tell_nowait(Probe(controller.view()))
                with pytest.raises(MailboxFullError):
                    await controller.ask_member(member, Probe(controller.view()))
                rejected = member.ref.statistics().mailbox.rejected_total

        overflows = [e for e in logs if e["event"] == "mailbox_overflow"]
        assert [(e["member"], e["refused"]) for e in overflows] == [
            ("cache-1", "Probe")
        ]
        assert rejected == 1


class TestCancellation:
    """Cancelling the control plane never strands a task or an exec."""

    async def test_cancelling_as_a_hook_times_out_leaves_nothing_behind(
        self,
    ) -> None:
        """A thousand times, cancelling the whole control plane at the instant a
        role hook's timeout fires ends every task and every exec."""
        gate = Gate(held={"rolecall-cache-1"})
        runtime = kv_runtime(gated=_image(role=gate.hook(HookName.ROLE)))
        timeout = 0.002
        spec = service_spec(image="gated:fake", timeouts={"role": timeout})
        baseline = len(anyio.get_running_tasks())
        leftovers: list[tuple[int, int]] = []
        with anyio.fail_after(LIMIT * 10):
            for attempt in range(1000):
                gate.started = anyio.Event()
                with anyio.CancelScope() as plane:
                    async with open_supervisor(runtime, probe_interval=60) as sup:
                        await sup.apply(spec)
                        await gate.started.wait()
                        # Around the very instant the exec's deadline fires.
                        skew = (attempt % 3 - 1) * 1e-5
                        plane.deadline = gate.started_at + timeout + skew
                        await anyio.sleep_forever()

                tasks = len(anyio.get_running_tasks()) - baseline
                if tasks or runtime.running_execs:
                    leftovers.append((tasks, runtime.running_execs))
                await runtime.remove_container("rolecall-cache-1")

        assert plane.cancelled_caught
        assert leftovers == []
        assert runtime.running_execs == 0
        assert gate.runs["rolecall-cache-1"] == 1000
        assert runtime.event_subscribers == 0
