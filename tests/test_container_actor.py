"""The container actor: hook order, role bookkeeping, one hook at a time."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from attrs import define, field
from structlog.testing import capture_logs

from rolecall.actors import (
    ActorRef,
    ApplyRole,
    ContainerActor,
    ContainerMessage,
    ContainerSpec,
    HookConvention,
    MemberPhase,
    Prepare,
    Probe,
    RunHook,
    ServiceView,
    StopService,
    open_spawner,
)
from rolecall.hooks_protocol import (
    HookFailedError,
    HookName,
    HookResult,
    HookRetryLaterError,
    HookTimeoutError,
    MemberInfo,
    MemberStatus,
    Plan,
    Role,
    Topology,
)
from rolecall.testing import (
    FakeHook,
    FakeHookCall,
    FakeHookExit,
    FakeRuntime,
    fake_kv_image,
)

pytestmark = pytest.mark.anyio

LIMIT = 10  # seconds; far above what any test here needs
IMAGE = "kv:fake"
VIEW = ServiceView(
    service="cache",
    members=(
        MemberInfo(id="cache-1", role=None, address="cache-1:6379"),
        MemberInfo(id="cache-2", role=None, address="cache-2:6379"),
    ),
    config={"maxmemory": "64mb"},
)


@define
class Recorder:
    """Wraps an image's hooks to record which ran, in order, and how many at once."""

    hooks: Mapping[str, FakeHook]
    # Hook names in the order they started.
    ran: list[str] = field(factory=list)
    # Every call, in order.
    calls: list[FakeHookCall] = field(factory=list)
    # Hooks running right now, and the most ever seen at once.
    active: int = 0
    most_active: int = 0

    def image(self) -> dict[str, FakeHook]:
        return {name: self._wrap(name, hook) for name, hook in self.hooks.items()}

    def _wrap(self, name: str, hook: FakeHook) -> FakeHook:
        async def run(call: FakeHookCall) -> Mapping[str, Any] | None:
            self.ran.append(name)
            self.calls.append(call)
            self.active += 1
            self.most_active = max(self.most_active, self.active)
            try:
                # Yield a few times, so that a second hook could start now
                # if the actor let it.
                for _ in range(3):
                    await anyio.lowlevel.checkpoint()

                data = hook(call)
                if inspect.isawaitable(data):
                    data = await data

                return data
            finally:
                self.active -= 1

        return run


def _runtime(hooks: Mapping[str, FakeHook] | None = None) -> FakeRuntime:
    runtime = FakeRuntime()
    runtime.add_image(IMAGE, hooks=hooks if hooks is not None else fake_kv_image())

    return runtime


@asynccontextmanager
async def _actor(
    runtime: FakeRuntime,
) -> AsyncIterator[tuple[ContainerActor, ActorRef[ContainerMessage]]]:
    info = await runtime.create_container(ContainerSpec(name="cache-1", image=IMAGE))
    await runtime.start_container(info.id)
    actor = ContainerActor(
        runtime=runtime,
        container_id=info.id,
        member_id="cache-1",
        convention=HookConvention(),
    )
    async with open_spawner() as spawner:
        ref = await spawner.spawn(actor, name="member:cache-1")
        yield actor, ref


def _with(**overrides: FakeHook) -> dict[str, FakeHook]:
    return {**fake_kv_image(), **overrides}


def _fails(code: int, stderr: str) -> FakeHook:
    def hook(call: FakeHookCall) -> dict[str, Any]:
        raise FakeHookExit(code, stderr=stderr)

    return hook


async def _role(
    ref: ActorRef[ContainerMessage],
    role: Role,
    epoch: int,
    primary: str | None = None,
) -> object:
    message = ApplyRole(view=VIEW, role=role, primary=primary, epoch=epoch)

    return await ref.ask(message, timeout=LIMIT)


class TestPrepare:
    """`Prepare` brings a fresh container to RUNNING."""

    async def test_prepare_runs_plan_configure_start_in_order(self) -> None:
        """Prepare runs plan, configure and start, in order, and answers the plan."""
        recorder = Recorder(fake_kv_image())
        runtime = _runtime(recorder.image())
        with anyio.fail_after(LIMIT):
            async with _actor(runtime) as (actor, ref):
                plan = await ref.ask(Prepare(VIEW), timeout=LIMIT)

        assert recorder.ran == ["plan", "configure", "start"]
        assert isinstance(plan, Plan)
        assert plan.topologies == {Topology.STANDALONE, Topology.REDUNDANT}
        assert plan.ports == (6379,)
        assert actor.plan == plan
        assert actor.phase is MemberPhase.RUNNING
        configure = recorder.calls[1]
        assert configure.payload["config"] == {"maxmemory": "64mb"}
        assert configure.payload["member"] == {
            "id": "cache-1",
            "role": None,
            "address": "cache-1:6379",
            "epoch": 0,
        }

    async def test_prepare_with_a_known_plan_skips_the_plan_hook(self) -> None:
        """Prepare given the image's plan skips the plan hook and keeps that plan."""
        recorder = Recorder(fake_kv_image())
        runtime = _runtime(recorder.image())
        known = Plan(
            roles=frozenset({Role.STANDALONE}),
            topologies=frozenset({Topology.STANDALONE}),
            ports=(7000,),
        )
        with anyio.fail_after(LIMIT):
            async with _actor(runtime) as (actor, ref):
                plan = await ref.ask(Prepare(VIEW, plan=known), timeout=LIMIT)

        assert recorder.ran == ["configure", "start"]
        assert plan is known
        assert actor.plan is known
        assert actor.phase is MemberPhase.RUNNING

    async def test_a_failing_hook_leaves_the_phase_where_it_was(self) -> None:
        """A configure failure stops at PLANNED, and a retry reaches RUNNING."""
        recorder = Recorder(fake_kv_image())
        runtime = _runtime(recorder.image())
        with anyio.fail_after(LIMIT):
            async with _actor(runtime) as (actor, ref):
                runtime.fail_next_exec(hook="configure", stderr="disk full")
                with pytest.raises(HookFailedError, match="disk full"):
                    await ref.ask(Prepare(VIEW), timeout=LIMIT)

                after_failure = actor.phase
                await ref.ask(Prepare(VIEW), timeout=LIMIT)

        assert after_failure is MemberPhase.PLANNED
        assert actor.phase is MemberPhase.RUNNING
        assert recorder.ran == ["plan", "plan", "configure", "start"]

    async def test_a_failing_stop_leaves_the_member_running(self) -> None:
        """A stop hook that fails does not mark the member stopped."""
        runtime = _runtime(_with(stop=_fails(75, "clients still connected")))
        with anyio.fail_after(LIMIT):
            async with _actor(runtime) as (actor, ref):
                await ref.ask(Prepare(VIEW), timeout=LIMIT)
                with pytest.raises(HookRetryLaterError):
                    await ref.ask(StopService(VIEW), timeout=LIMIT)

        assert actor.phase is MemberPhase.RUNNING

    async def test_stop_marks_the_member_stopped(self) -> None:
        """A stop hook that succeeds moves the phase to STOPPED."""
        runtime = _runtime()
        with anyio.fail_after(LIMIT):
            async with _actor(runtime) as (actor, ref):
                await ref.ask(Prepare(VIEW), timeout=LIMIT)
                assert await ref.ask(StopService(VIEW), timeout=LIMIT) is None

        assert actor.phase is MemberPhase.STOPPED

    async def test_container_restarted_resets_the_phase(self) -> None:
        """After a container restart the member must be prepared again."""
        runtime = _runtime()
        with anyio.fail_after(LIMIT):
            async with _actor(runtime) as (actor, ref):
                await ref.ask(Prepare(VIEW), timeout=LIMIT)
                await _role(ref, Role.STANDALONE, 1)
                before = actor.phase
                actor.container_restarted()

        assert before is MemberPhase.RUNNING
        assert actor.phase is MemberPhase.CREATED
        assert (actor.role, actor.epoch) == (Role.STANDALONE, 1)


class TestRoles:
    """`ApplyRole` runs the role hook and mirrors what it applied."""

    async def test_apply_role_records_role_primary_and_epoch(self) -> None:
        """A replica command is sent to the hook and mirrored by the actor."""
        recorder = Recorder(fake_kv_image())
        runtime = _runtime(recorder.image())
        with anyio.fail_after(LIMIT):
            async with _actor(runtime) as (actor, ref):
                await ref.ask(Prepare(VIEW), timeout=LIMIT)
                await _role(ref, Role.REPLICA, 7, primary="cache-2")

        assert (actor.role, actor.primary, actor.epoch) == (
            Role.REPLICA,
            "cache-2",
            7,
        )
        role = recorder.calls[-1]
        assert role.request == {"role": "replica", "primary": "cache-2", "epoch": 7}
        assert role.payload["member"]["role"] == "replica"
        assert role.container.store["role"] == "replica"
        assert role.container.store["epoch"] == 7

    async def test_the_epoch_never_goes_down(self) -> None:
        """An older role command accepted by the hook leaves the newer epoch."""
        recorder = Recorder(_with(role=lambda call: {}))
        runtime = _runtime(recorder.image())
        with anyio.fail_after(LIMIT):
            async with _actor(runtime) as (actor, ref):
                await _role(ref, Role.PRIMARY, 5)
                await _role(ref, Role.PRIMARY, 3)
                await _role(ref, Role.PRIMARY, 5)

        assert actor.epoch == 5
        assert [call.request["epoch"] for call in recorder.calls] == [5, 3, 5]
        assert [call.payload["member"]["epoch"] for call in recorder.calls] == [
            0,
            5,
            5,
        ]

    async def test_a_refused_role_leaves_role_and_epoch(self) -> None:
        """A stale epoch refused by the hook changes nothing the actor holds."""
        runtime = _runtime()
        with anyio.fail_after(LIMIT):
            async with _actor(runtime) as (actor, ref):
                await ref.ask(Prepare(VIEW), timeout=LIMIT)
                await _role(ref, Role.PRIMARY, 4)
                with pytest.raises(HookFailedError, match="refusing epoch 2"):
                    await _role(ref, Role.REPLICA, 2, primary="cache-2")

        assert (actor.role, actor.primary, actor.epoch) == (Role.PRIMARY, None, 4)
        assert actor.phase is MemberPhase.RUNNING

    async def test_probe_records_the_status(self) -> None:
        """A probe answers the status report and keeps it."""
        runtime = _runtime()
        with anyio.fail_after(LIMIT):
            async with _actor(runtime) as (actor, ref):
                await ref.ask(Prepare(VIEW), timeout=LIMIT)
                await _role(ref, Role.STANDALONE, 2)
                report = await ref.ask(Probe(VIEW), timeout=LIMIT)

        assert report == MemberStatus(
            role=Role.STANDALONE,
            healthy=True,
            replication_offset=0,
            link_up=None,
            epoch=2,
            details={"synced": True},
        )
        assert actor.last_status == report

    async def test_run_hook_passes_the_request(self) -> None:
        """Any other hook runs with its request and answers its result."""
        recorder = Recorder(_with(backup=lambda call: {"wrote": call.request["path"]}))
        runtime = _runtime(recorder.image())
        with anyio.fail_after(LIMIT):
            async with _actor(runtime) as (_, ref):
                message = RunHook(VIEW, HookName.BACKUP, {"path": "/backup/1"})
                result = await ref.ask(message, timeout=LIMIT)

        assert result == HookResult(data={"wrote": "/backup/1"})


class TestOneHookAtATime:
    """However many asks arrive, a container runs one hook at a time."""

    async def test_concurrent_asks_never_overlap(self) -> None:
        """Forty asks sent at once run forty hooks, never two together."""
        # The role hook takes any epoch: the asks arrive in no set order.
        recorder = Recorder(_with(role=lambda call: {}))
        runtime = _runtime(recorder.image())
        outcomes: list[object] = []

        async def ask(ref: ActorRef[ContainerMessage], number: int) -> None:
            if number % 4 == 0:
                outcomes.append(await _role(ref, Role.STANDALONE, number))
            else:
                outcomes.append(await ref.ask(Probe(VIEW), timeout=LIMIT))

        with anyio.fail_after(LIMIT):
            async with _actor(runtime) as (actor, ref), anyio.create_task_group() as tg:
                for number in range(40):
                    tg.start_soon(ask, ref, number)

        assert len(outcomes) == 40
        assert len(recorder.ran) == 40
        assert recorder.ran.count("role") == 10
        assert recorder.most_active == 1
        assert actor.epoch == 36


class TestTimeouts:
    """Deadlines come from the view, then the plan, then the defaults."""

    @staticmethod
    def _slow_status_image() -> dict[str, FakeHook]:
        def plan(call: FakeHookCall) -> dict[str, Any]:
            data: dict[str, Any] = dict(fake_kv_image()["plan"](call) or {})
            return {**data, "timeouts": {"status": 0.05}}

        async def status(call: FakeHookCall) -> dict[str, Any]:
            await anyio.sleep_forever()
            return {}

        return _with(plan=plan, status=status)

    async def test_the_plans_timeout_applies(self) -> None:
        """A plan's per-hook deadline replaces the default."""
        runtime = _runtime(self._slow_status_image())
        with anyio.fail_after(LIMIT):
            async with _actor(runtime) as (_, ref):
                await ref.ask(Prepare(VIEW), timeout=LIMIT)
                with pytest.raises(HookTimeoutError) as caught:
                    await ref.ask(Probe(VIEW), timeout=LIMIT)

        assert caught.value.timeout == 0.05
        assert (runtime.killed_execs, runtime.running_execs) == (1, 0)

    async def test_the_views_timeout_wins(self) -> None:
        """A deadline in the service view overrides the plan's."""
        runtime = _runtime(self._slow_status_image())
        view = ServiceView(service="cache", timeouts={HookName.STATUS: 0.02})
        with anyio.fail_after(LIMIT):
            async with _actor(runtime) as (_, ref):
                await ref.ask(Prepare(view), timeout=LIMIT)
                with pytest.raises(HookTimeoutError) as caught:
                    await ref.ask(Probe(view), timeout=LIMIT)

        assert caught.value.timeout == 0.02


class TestLogs:
    """One log line per hook run, and never a secret."""

    async def test_each_hook_run_logs_one_line(self) -> None:
        """A successful run logs hook_run with its outcome, role and duration."""
        runtime = _runtime()
        with anyio.fail_after(LIMIT), capture_logs() as logs:
            async with _actor(runtime) as (_, ref):
                await ref.ask(Prepare(VIEW), timeout=LIMIT)
                await _role(ref, Role.PRIMARY, 1)
                await ref.ask(Probe(VIEW), timeout=LIMIT)

        runs = [entry for entry in logs if entry["event"] == "hook_run"]
        assert [(e["hook"], e["log_level"]) for e in runs] == [
            ("plan", "info"),
            ("configure", "info"),
            ("start", "info"),
            ("role", "info"),
            ("status", "debug"),
        ]
        assert runs[3]["role"] == "primary"
        assert all(e["outcome"] == "ok" and e["exit_code"] == 0 for e in runs)
        assert all(isinstance(e["duration_ms"], int) for e in runs)
        assert {e["member"] for e in runs} == {"cache-1"}
        assert {e["service"] for e in runs} == {"cache"}

    async def test_secrets_are_redacted_from_the_stderr_tail(self) -> None:
        """A secret a failing hook echoes reaches neither a log line nor the error."""
        secret = "s3cr3t-Pa55"  # noqa: S105  (a made-up secret to hunt for)

        def configure(call: FakeHookCall) -> dict[str, Any]:
            password = call.payload["env"]["PASSWORD"]
            call.log(f"connecting with password {password}")
            raise FakeHookExit(1, stderr=f"auth failed for {password}")

        runtime = _runtime(_with(configure=configure))
        view = ServiceView(
            service="cache",
            env={"PASSWORD": secret, "USER": "admin"},
            secret_keys=frozenset({"PASSWORD"}),
        )
        with anyio.fail_after(LIMIT), capture_logs() as logs:
            async with _actor(runtime) as (_, ref):
                with pytest.raises(HookFailedError) as caught:
                    await ref.ask(Prepare(view), timeout=LIMIT)

        [failed] = [
            e for e in logs if e["event"] == "hook_run" and e["hook"] == "configure"
        ]
        assert failed["log_level"] == "warning"
        assert failed["outcome"] == "HookFailedError"
        assert failed["stderr_tail"] == (
            "connecting with password ***\nauth failed for ***"
        )
        assert secret not in repr(logs)
        assert secret not in str(caught.value)
        assert secret not in caught.value.stderr_tail
        assert "auth failed for ***" in str(caught.value)
