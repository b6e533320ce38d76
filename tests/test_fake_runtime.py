"""The in-memory runtime, its fake key-value image and the manual clock."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import anyio
import msgpack
import pytest

import rolecall.testing
from rolecall.actors import (
    ContainerRuntime,
    ContainerSpec,
    ContainerState,
    EngineEvent,
    ExecResult,
)
from rolecall.hooks_protocol import (
    DEFAULT_HOOK_DIR,
    LABEL_HOOK_DIR,
    LABEL_HOOK_MODE,
    ContainerGoneError,
    EngineError,
    ImageNotFoundError,
)
from rolecall.testing import (
    KV_DATA_PATH,
    KV_PORT,
    FakeHookCall,
    FakeHookExit,
    FakeKVReadOnlyError,
    FakeRuntime,
    ManualClock,
    fake_kv_image,
    fake_kv_keys,
    fake_kv_write,
)

pytestmark = pytest.mark.anyio

TIMEOUT = 10  # seconds; far above what any test here needs
LABELS = {"io.rolecall.service": "cache"}
OTHER_LABELS = {"io.rolecall.service": "queue"}
IMAGE = "echo:fake"
KV = "kv:fake"


def _echo(call: FakeHookCall) -> dict[str, Any]:
    return {"payload": call.payload, "hook": call.hook}


def _runtime(**hooks: Any) -> FakeRuntime:
    runtime = FakeRuntime(name="test")
    runtime.add_image(IMAGE, hooks={"echo": _echo, **hooks})
    runtime.add_image(KV, hooks=fake_kv_image())

    return runtime


def _spec(name: str = "c1", **options: Any) -> ContainerSpec:
    options.setdefault("image", IMAGE)
    options.setdefault("labels", LABELS)

    return ContainerSpec(name=name, **options)


async def _started(runtime: FakeRuntime, name: str = "c1", **options: Any) -> str:
    info = await runtime.create_container(_spec(name, **options))
    await runtime.start_container(info.id)

    return info.id


async def _run(
    runtime: FakeRuntime,
    container_id: str,
    hook: str,
    payload: Mapping[str, Any] | None = None,
    *,
    timeout: float = TIMEOUT,
    max_stdout: int = 1 << 20,
    max_stderr: int = 1 << 16,
    env: Mapping[str, str] | None = None,
) -> ExecResult:
    return await runtime.exec(
        container_id,
        [f"{DEFAULT_HOOK_DIR}/{hook}"],
        stdin=msgpack.packb(dict(payload or {})),
        env=env,
        timeout=timeout,
        max_stdout=max_stdout,
        max_stderr=max_stderr,
    )


def _data(result: ExecResult) -> dict[str, Any]:
    reply = msgpack.unpackb(result.stdout)
    assert reply["protocol"] == 1
    data: dict[str, Any] = reply["data"]

    return data


async def _next(events: AsyncIterator[EngineEvent]) -> EngineEvent:
    return await anext(events)


def test_testing_module_exports_its_public_names() -> None:
    """`rolecall.testing` exports exactly its documented names."""
    assert set(rolecall.testing.__all__) == {
        "KV_DATA_PATH",
        "KV_PORT",
        "FakeContainer",
        "FakeHook",
        "FakeHookCall",
        "FakeHookExit",
        "FakeImage",
        "FakeKVReadOnlyError",
        "FakeRuntime",
        "ManualClock",
        "fake_kv_image",
        "fake_kv_keys",
        "fake_kv_write",
    }


class TestProtocol:
    async def test_is_a_container_runtime(self) -> None:
        """A `FakeRuntime` passes as a `ContainerRuntime`."""
        assert isinstance(FakeRuntime(), ContainerRuntime)

    async def test_address_names_the_engine(self) -> None:
        """The address is ``fake://`` and the runtime's name."""
        assert FakeRuntime(name="ci").address == "fake://ci"

    async def test_containers_keep_no_instance_dict(self) -> None:
        """Containers use slots, so ten thousand idle ones stay small."""
        with anyio.fail_after(TIMEOUT):
            runtime = _runtime()
            container_id = await _started(runtime)

        assert not hasattr(runtime.container(container_id), "__dict__")


class TestContainers:
    async def test_create_returns_a_created_container(self) -> None:
        """A new container is created, not started, with its spec's labels."""
        with anyio.fail_after(TIMEOUT):
            runtime = _runtime()
            info = await runtime.create_container(_spec())

        assert info.name == "c1"
        assert info.image == IMAGE
        assert info.labels == LABELS
        assert info.state is ContainerState.CREATED
        assert info.exit_code is None
        assert len(info.id) == 64

    async def test_create_is_idempotent_by_name_and_labels(self) -> None:
        """Creating the same name with the same labels returns the first."""
        with anyio.fail_after(TIMEOUT):
            runtime = _runtime()
            first = await runtime.create_container(_spec())
            second = await runtime.create_container(_spec())
            listed = await runtime.list_containers(labels=LABELS)

        assert second.id == first.id
        assert [info.id for info in listed] == [first.id]

    async def test_create_with_other_labels_conflicts(self) -> None:
        """A name taken by a container with other labels is an error."""
        with anyio.fail_after(TIMEOUT):
            runtime = _runtime()
            await runtime.create_container(_spec())
            with pytest.raises(EngineError, match="already exists"):
                await runtime.create_container(_spec(labels=OTHER_LABELS))

    async def test_create_of_an_unknown_image_fails(self) -> None:
        """An image that was never registered cannot be run."""
        with anyio.fail_after(TIMEOUT):
            runtime = _runtime()
            with pytest.raises(ImageNotFoundError) as caught:
                await runtime.create_container(_spec(image="nope:1"))

        assert caught.value.image == "nope:1"

    async def test_create_on_an_unknown_network_fails(self) -> None:
        """A container cannot join a network that does not exist."""
        with anyio.fail_after(TIMEOUT):
            runtime = _runtime()
            with pytest.raises(EngineError, match="create it first"):
                await runtime.create_container(_spec(network="nowhere"))

    async def test_start_publishes_increasing_host_ports(self) -> None:
        """Each start publishes its ports on new, increasing host ports."""
        with anyio.fail_after(TIMEOUT):
            runtime = _runtime()
            first = await _started(runtime, "c1", published_ports=(6379,))
            second = await _started(runtime, "c2", published_ports=(6379,))
            one = await runtime.inspect_container(first)
            two = await runtime.inspect_container(second)

        assert one.state is ContainerState.RUNNING
        assert one.exit_code is None
        assert one.host_ports[6379] < two.host_ports[6379]

    async def test_stop_exits_zero_and_frees_ports(self) -> None:
        """A stopped container exits 0, drops its ports and starts again."""
        with anyio.fail_after(TIMEOUT):
            runtime = _runtime()
            container_id = await _started(runtime, published_ports=(6379,))
            before = await runtime.inspect_container(container_id)
            await runtime.stop_container(container_id, timeout=1)
            stopped = await runtime.inspect_container(container_id)
            await runtime.stop_container(container_id, timeout=1)
            await runtime.start_container(container_id)
            again = await runtime.inspect_container(container_id)

        assert stopped.state is ContainerState.EXITED
        assert stopped.exit_code == 0
        assert stopped.host_ports == {}
        assert again.state is ContainerState.RUNNING
        assert again.exit_code is None
        assert again.host_ports[6379] != before.host_ports[6379]

    async def test_kill_exits_137(self) -> None:
        """A killed container exits 137; killing it again changes nothing."""
        with anyio.fail_after(TIMEOUT):
            runtime = _runtime()
            container_id = await _started(runtime)
            await runtime.kill_container(container_id)
            await runtime.kill_container(container_id)
            info = await runtime.inspect_container(container_id)

        assert info.state is ContainerState.EXITED
        assert info.exit_code == 137
        assert not info.oom_killed

    async def test_remove_forgets_the_container(self) -> None:
        """A removed container is gone, and removing it again is fine."""
        with anyio.fail_after(TIMEOUT):
            runtime = _runtime()
            container_id = await _started(runtime)
            await runtime.remove_container(container_id)
            await runtime.remove_container(container_id)
            with pytest.raises(ContainerGoneError):
                await runtime.inspect_container(container_id)

            recreated = await runtime.create_container(_spec())

        assert recreated.id != container_id

    async def test_unknown_containers_are_gone(self) -> None:
        """Every call about an unknown container raises ContainerGoneError."""
        with anyio.fail_after(TIMEOUT):
            runtime = _runtime()
            calls = [
                runtime.inspect_container("nope"),
                runtime.start_container("nope"),
                runtime.stop_container("nope", timeout=1),
                runtime.kill_container("nope"),
                _run(runtime, "nope", "echo"),
            ]
            for call in calls:
                with pytest.raises(ContainerGoneError) as caught:
                    await call

                assert caught.value.container_id == "nope"

    async def test_containers_are_found_by_name(self) -> None:
        """A container's name works wherever its id does."""
        with anyio.fail_after(TIMEOUT):
            runtime = _runtime()
            container_id = await _started(runtime, "named")
            info = await runtime.inspect_container("named")
            await runtime.kill_container("named")

        assert info.id == container_id
        assert runtime.container(container_id).exit_code == 137

    async def test_list_filters_by_labels(self) -> None:
        """Listing returns the containers carrying every label asked for."""
        with anyio.fail_after(TIMEOUT):
            runtime = _runtime()
            await runtime.create_container(_spec("a"))
            await runtime.create_container(_spec("b", labels=OTHER_LABELS))
            await _started(runtime, "c", labels={**LABELS, "x": "1"})
            cache = await runtime.list_containers(labels=LABELS)
            both = await runtime.list_containers(labels={**LABELS, "x": "1"})
            every = await runtime.list_containers(labels={})

        assert [info.name for info in cache] == ["a", "c"]
        assert [info.name for info in both] == ["c"]
        assert len(every) == 3


class TestExec:
    async def test_exec_runs_the_hook_over_msgpack(self) -> None:
        """The hook gets the decoded payload and env; its data comes back."""
        seen: list[FakeHookCall] = []

        def hook(call: FakeHookCall) -> dict[str, Any]:
            seen.append(call)
            return {"echo": call.request["x"]}

        with anyio.fail_after(TIMEOUT):
            runtime = _runtime(hook=hook)
            container_id = await _started(runtime, env={"A": "1"})
            result = await _run(
                runtime,
                container_id,
                "hook",
                {"request": {"x": [1, 2]}},
                env={"B": "2"},
            )

        assert result.exit_code == 0
        assert _data(result) == {"echo": [1, 2]}
        assert msgpack.unpackb(result.stdout)["message"] == ""
        assert result.stderr == b""
        assert result.duration >= 0
        assert seen[0].env == {"A": "1", "B": "2"}
        assert seen[0].container is runtime.container(container_id)
        assert runtime.finished_execs == 1

    async def test_exec_speaks_json_when_asked(self) -> None:
        """With ROLECALL_ENCODING=json the payload and reply are JSON."""
        with anyio.fail_after(TIMEOUT):
            runtime = _runtime()
            container_id = await _started(runtime)
            result = await runtime.exec(
                container_id,
                [f"{DEFAULT_HOOK_DIR}/echo"],
                stdin=json.dumps({"a": 1}).encode(),
                env={"ROLECALL_ENCODING": "json"},
                timeout=TIMEOUT,
                max_stdout=1 << 20,
                max_stderr=1 << 16,
            )

        assert result.exit_code == 0
        assert json.loads(result.stdout)["data"]["payload"] == {"a": 1}

    async def test_async_handlers_are_awaited(self) -> None:
        """An async handler's data is awaited and returned."""

        async def hook(call: FakeHookCall) -> dict[str, Any]:
            await anyio.lowlevel.checkpoint()
            return {"async": True}

        with anyio.fail_after(TIMEOUT):
            runtime = _runtime(hook=hook)
            container_id = await _started(runtime)
            result = await _run(runtime, container_id, "hook")

        assert _data(result) == {"async": True}

    async def test_unknown_hook_exits_127(self) -> None:
        """A hook the image lacks exits 127 with a shell-like message."""
        with anyio.fail_after(TIMEOUT):
            runtime = _runtime()
            container_id = await _started(runtime)
            result = await _run(runtime, container_id, "backup")

        assert result.exit_code == 127
        assert result.stderr == f"{DEFAULT_HOOK_DIR}/backup: not found\n".encode()

    async def test_hook_dir_label_moves_the_hooks(self) -> None:
        """An image label moves the hooks; the default path then exits 127."""
        with anyio.fail_after(TIMEOUT):
            runtime = _runtime()
            runtime.add_image(
                "moved:fake", hooks={"echo": _echo}, labels={LABEL_HOOK_DIR: "/h/"}
            )
            container_id = await _started(runtime, image="moved:fake")
            default = await _run(runtime, container_id, "echo")
            moved = await runtime.exec(
                container_id,
                ["/h/echo"],
                timeout=TIMEOUT,
                max_stdout=100,
                max_stderr=100,
            )

        assert default.exit_code == 127
        assert moved.exit_code == 0

    async def test_hook_exit_sets_code_and_stderr(self) -> None:
        """FakeHookExit sets the exit code; logged lines precede its text."""

        def hook(call: FakeHookCall) -> dict[str, Any]:
            call.log("checking")
            raise FakeHookExit(75, stderr="not ready\n")

        with anyio.fail_after(TIMEOUT):
            runtime = _runtime(hook=hook)
            container_id = await _started(runtime)
            result = await _run(runtime, container_id, "hook")

        assert result.exit_code == 75
        assert result.stdout == b""
        assert result.stderr == b"checking\nnot ready\n"

    async def test_crashing_handler_exits_1_with_traceback(self) -> None:
        """A handler's uncaught exception exits 1 with its traceback."""

        def hook(call: FakeHookCall) -> dict[str, Any]:
            raise KeyError("missing")

        with anyio.fail_after(TIMEOUT):
            runtime = _runtime(hook=hook)
            container_id = await _started(runtime)
            result = await _run(runtime, container_id, "hook")

        assert result.exit_code == 1
        assert b"Traceback" in result.stderr
        assert b"KeyError: 'missing'" in result.stderr

    async def test_undecodable_payload_exits_65(self) -> None:
        """Stdin that is not a msgpack map exits 65 (bad payload)."""
        with anyio.fail_after(TIMEOUT):
            runtime = _runtime()
            container_id = await _started(runtime)
            results = [
                await runtime.exec(
                    container_id,
                    [f"{DEFAULT_HOOK_DIR}/echo"],
                    stdin=stdin,
                    timeout=TIMEOUT,
                    max_stdout=100,
                    max_stderr=1000,
                )
                for stdin in (b"\xc1", msgpack.packb([1, 2]))
            ]

        assert [result.exit_code for result in results] == [65, 65]
        assert b"cannot decode the payload" in results[0].stderr

    async def test_output_is_capped(self) -> None:
        """Stdout keeps its head, stderr its tail, and both are flagged."""

        def hook(call: FakeHookCall) -> dict[str, Any]:
            call.log("early " * 50)
            call.log("late")
            return {"blob": "x" * 500}

        with anyio.fail_after(TIMEOUT):
            runtime = _runtime(hook=hook)
            container_id = await _started(runtime)
            result = await _run(
                runtime, container_id, "hook", max_stdout=64, max_stderr=8
            )
            whole = await _run(runtime, container_id, "hook")

        assert result.stdout == whole.stdout[:64]
        assert result.stdout_truncated
        assert result.stderr == b"ly \nlate\n"[-8:]
        assert result.stderr_truncated
        assert not whole.stdout_truncated
        assert not whole.stderr_truncated

    async def test_exec_in_a_stopped_container_is_gone(self) -> None:
        """A container that is not running cannot run commands."""
        with anyio.fail_after(TIMEOUT):
            runtime = _runtime()
            created = await runtime.create_container(_spec())
            with pytest.raises(ContainerGoneError, match="start it first"):
                await _run(runtime, created.id, "echo")

    async def test_empty_argv_is_refused(self) -> None:
        """An exec must name a command."""
        with anyio.fail_after(TIMEOUT):
            runtime = _runtime()
            container_id = await _started(runtime)
            with pytest.raises(ValueError, match="argv"):
                await runtime.exec(
                    container_id, [], timeout=1, max_stdout=1, max_stderr=1
                )

    async def test_nanobox_hooks_take_json_in_argv(self) -> None:
        """Nanobox-style hooks read JSON from argv[1] and print bare JSON."""
        with anyio.fail_after(TIMEOUT):
            runtime = _runtime()
            runtime.add_image(
                "nano:fake", hooks={"echo": _echo}, labels={LABEL_HOOK_MODE: "nanobox"}
            )
            container_id = await _started(runtime, image="nano:fake")
            result = await runtime.exec(
                container_id,
                [f"{DEFAULT_HOOK_DIR}/echo", '{"a": 1}'],
                timeout=TIMEOUT,
                max_stdout=1000,
                max_stderr=1000,
            )

        assert json.loads(result.stdout) == {"payload": {"a": 1}, "hook": "echo"}

    async def test_timeout_kills_the_exec(self) -> None:
        """A hook past its timeout is killed and TimeoutError is raised."""

        async def hook(call: FakeHookCall) -> dict[str, Any]:
            await anyio.sleep_forever()
            return {}

        with anyio.fail_after(TIMEOUT):
            runtime = _runtime(hook=hook)
            container_id = await _started(runtime)
            with pytest.raises(TimeoutError):
                await _run(runtime, container_id, "hook", timeout=0.01)

        assert runtime.killed_execs == 1
        assert runtime.running_execs == 0
        assert runtime.finished_execs == 0

    async def test_cancelling_the_caller_kills_the_exec(self) -> None:
        """Cancelling the task that waits on an exec kills the exec."""
        entered = anyio.Event()

        async def hook(call: FakeHookCall) -> dict[str, Any]:
            entered.set()
            await anyio.sleep_forever()
            return {}

        with anyio.fail_after(TIMEOUT):
            runtime = _runtime(hook=hook)
            container_id = await _started(runtime)
            async with anyio.create_task_group() as group:
                group.start_soon(_run, runtime, container_id, "hook")
                await entered.wait()
                assert runtime.running_execs == 1
                group.cancel_scope.cancel()

        assert runtime.killed_execs == 1
        assert runtime.running_execs == 0

    async def test_container_death_fails_a_running_exec(self) -> None:
        """An exec whose container stops under it raises ContainerGoneError."""
        entered = anyio.Event()

        async def hook(call: FakeHookCall) -> dict[str, Any]:
            entered.set()
            await anyio.sleep_forever()
            return {}

        async def crash_when_entered(container_id: str) -> None:
            await entered.wait()
            await runtime.stop_container(container_id, timeout=1)

        with anyio.fail_after(TIMEOUT):
            runtime = _runtime(hook=hook)
            container_id = await _started(runtime)
            async with anyio.create_task_group() as group:
                group.start_soon(crash_when_entered, container_id)
                with pytest.raises(ContainerGoneError, match="stopped while"):
                    await _run(runtime, container_id, "hook")

        assert runtime.killed_execs == 1
        assert runtime.running_execs == 0


class TestFaults:
    async def test_crash_ends_the_container_with_its_code(self) -> None:
        """A crash ends a live container with the exit code given."""
        with anyio.fail_after(TIMEOUT):
            runtime = _runtime()
            container_id = await _started(runtime)
            runtime.crash(container_id, exit_code=3)
            info = await runtime.inspect_container(container_id)

        assert info.state is ContainerState.EXITED
        assert info.exit_code == 3
        assert not info.oom_killed

    async def test_oom_crash_marks_the_container(self) -> None:
        """An out-of-memory crash exits 137 and is flagged as such."""
        with anyio.fail_after(TIMEOUT):
            runtime = _runtime()
            container_id = await _started(runtime)
            runtime.crash(container_id, oom=True)
            info = await runtime.inspect_container(container_id)

        assert info.exit_code == 137
        assert info.oom_killed

    async def test_crash_needs_a_live_container(self) -> None:
        """Crashing a container that does not run is a test's mistake."""
        with anyio.fail_after(TIMEOUT):
            runtime = _runtime()
            created = await runtime.create_container(_spec())

        with pytest.raises(ContainerGoneError):
            runtime.crash(created.id)

    async def test_pause_holds_execs_until_unpause(self) -> None:
        """An exec in a paused container waits, then runs when it resumes."""
        results: list[ExecResult] = []

        async def run(container_id: str) -> None:
            results.append(await _run(runtime, container_id, "echo"))

        with anyio.fail_after(TIMEOUT):
            runtime = _runtime()
            container_id = await _started(runtime)
            runtime.pause(container_id)
            paused = await runtime.inspect_container(container_id)
            async with anyio.create_task_group() as group:
                group.start_soon(run, container_id)
                await anyio.wait_all_tasks_blocked()
                assert runtime.running_execs == 1
                assert results == []
                runtime.unpause(container_id)

        assert paused.state is ContainerState.PAUSED
        assert results[0].exit_code == 0
        assert runtime.container(container_id).state is ContainerState.RUNNING

    async def test_paused_exec_still_times_out(self) -> None:
        """The timeout runs while a container is paused."""
        with anyio.fail_after(TIMEOUT):
            runtime = _runtime()
            container_id = await _started(runtime)
            runtime.pause(container_id)
            with pytest.raises(TimeoutError):
                await _run(runtime, container_id, "echo", timeout=0.01)

        assert runtime.killed_execs == 1

    async def test_fail_next_exec_fails_one_exec(self) -> None:
        """A queued failure ends the next exec only, without the hook."""
        with anyio.fail_after(TIMEOUT):
            runtime = _runtime()
            container_id = await _started(runtime)
            runtime.fail_next_exec(exit_code=75, stderr="busy")
            failed = await _run(runtime, container_id, "echo")
            fine = await _run(runtime, container_id, "echo")

        assert failed.exit_code == 75
        assert failed.stderr == b"busy"
        assert failed.stdout == b""
        assert fine.exit_code == 0

    async def test_fail_next_exec_can_raise(self) -> None:
        """A queued error is raised from exec, as an engine error would be."""
        with anyio.fail_after(TIMEOUT):
            runtime = _runtime()
            container_id = await _started(runtime)
            runtime.fail_next_exec(error=EngineError("engine hiccup"))
            with pytest.raises(EngineError, match="hiccup"):
                await _run(runtime, container_id, "echo")

    async def test_fail_next_exec_can_hang(self) -> None:
        """A queued hang lasts until the exec's timeout kills it."""
        with anyio.fail_after(TIMEOUT):
            runtime = _runtime()
            container_id = await _started(runtime)
            runtime.fail_next_exec(hang=True)
            with pytest.raises(TimeoutError):
                await _run(runtime, container_id, "echo", timeout=0.01)

        assert runtime.killed_execs == 1

    async def test_fail_next_exec_matches_container_and_hook(self) -> None:
        """A queued failure waits for an exec of its container and hook."""
        with anyio.fail_after(TIMEOUT):
            runtime = _runtime(other=_echo)
            first = await _started(runtime, "c1")
            second = await _started(runtime, "c2")
            runtime.fail_next_exec(container_id="c2", hook="other", exit_code=9)
            codes = [
                (await _run(runtime, first, "other")).exit_code,
                (await _run(runtime, second, "echo")).exit_code,
                (await _run(runtime, second, "other")).exit_code,
                (await _run(runtime, second, "other")).exit_code,
            ]

        assert codes == [0, 0, 9, 0]


class TestEvents:
    async def test_lifecycle_events_follow_the_engine(self) -> None:
        """Create, start, stop and remove emit an engine's events in order."""
        with anyio.fail_after(TIMEOUT):
            runtime = _runtime()
            async with runtime.open_event_stream(labels=LABELS) as events:
                container_id = await _started(runtime)
                await runtime.stop_container(container_id, timeout=1)
                await runtime.start_container(container_id)
                await runtime.remove_container(container_id)
                seen = [await _next(events) for _ in range(9)]

        assert [(event.action, event.exit_code) for event in seen] == [
            ("create", None),
            ("start", None),
            ("kill", None),
            ("die", 0),
            ("stop", None),
            ("start", None),
            ("kill", None),
            ("die", 137),
            ("destroy", None),
        ]
        assert {event.container_id for event in seen} == {container_id}
        assert all(event.labels == LABELS for event in seen)

    async def test_kill_crash_and_oom_reach_only_matching_subscribers(
        self,
    ) -> None:
        """Kill, crash and out-of-memory events are filtered by labels."""
        with anyio.fail_after(TIMEOUT):
            runtime = _runtime()
            cache = [await _started(runtime, f"c{n}") for n in range(3)]
            other = await _started(runtime, "q", labels=OTHER_LABELS)
            async with runtime.open_event_stream(labels=LABELS) as events:
                runtime.crash(other, oom=True)
                await runtime.kill_container(cache[0])
                runtime.crash(cache[1], exit_code=2)
                runtime.crash(cache[2], oom=True)
                seen = [await _next(events) for _ in range(5)]

        assert [(e.action, e.container_id, e.exit_code) for e in seen] == [
            ("kill", cache[0], None),
            ("die", cache[0], 137),
            ("die", cache[1], 2),
            ("oom", cache[2], None),
            ("die", cache[2], 137),
        ]

    async def test_pause_and_unpause_are_events(self) -> None:
        """Pausing and resuming emit their events."""
        with anyio.fail_after(TIMEOUT):
            runtime = _runtime()
            container_id = await _started(runtime)
            async with runtime.open_event_stream(labels={}) as events:
                runtime.pause(container_id)
                runtime.unpause(container_id)
                seen = [(await _next(events)).action for _ in range(2)]

        assert seen == ["pause", "unpause"]

    async def test_several_subscribers_get_every_event(self) -> None:
        """Every open stream receives each matching event."""
        with anyio.fail_after(TIMEOUT):
            runtime = _runtime()
            async with (
                runtime.open_event_stream(labels=LABELS) as one,
                runtime.open_event_stream(labels={}) as two,
            ):
                created = await runtime.create_container(_spec())
                first = await _next(one)
                second = await _next(two)

        assert first == second
        assert first.container_id == created.id

    async def test_leaving_the_block_unsubscribes(self) -> None:
        """A stream counts as a subscriber only inside its block."""
        with anyio.fail_after(TIMEOUT):
            runtime = _runtime()
            async with runtime.open_event_stream(labels=LABELS):
                inside = runtime.event_subscribers

            await runtime.create_container(_spec())

        assert inside == 1
        assert runtime.event_subscribers == 0

    async def test_aclose_ends_event_streams(self) -> None:
        """Closing the runtime ends the iteration of open streams."""
        with anyio.fail_after(TIMEOUT):
            runtime = _runtime()
            async with runtime.open_event_stream(labels=LABELS) as events:
                await runtime.create_container(_spec())
                await runtime.aclose()
                seen = [event.action async for event in events]

        assert seen == ["create"]

    async def test_events_carry_engine_time(self) -> None:
        """Events are stamped with the runtime's clock."""
        clock = ManualClock(start=1000.0)
        with anyio.fail_after(TIMEOUT):
            runtime = FakeRuntime(clock=clock.now)
            runtime.add_image(IMAGE, hooks={})
            async with runtime.open_event_stream(labels={}) as events:
                await runtime.create_container(_spec())
                clock.advance(5)
                await runtime.remove_container("c1")
                times = [(await _next(events)).time for _ in range(2)]

        assert times == [1000.0, 1005.0]


class TestVolumesAndNetworks:
    async def test_volumes_are_idempotent_and_listed_by_labels(self) -> None:
        """Creating a volume twice keeps one; listing filters by labels."""
        with anyio.fail_after(TIMEOUT):
            runtime = _runtime()
            await runtime.create_volume("v1", labels=LABELS)
            await runtime.create_volume("v1", labels=LABELS)
            await runtime.create_volume("v2", labels=OTHER_LABELS)
            cache = await runtime.list_volumes(labels=LABELS)
            await runtime.remove_volume("v1")
            await runtime.remove_volume("v1")
            left = await runtime.list_volumes(labels={})

        assert cache == ["v1"]
        assert left == ["v2"]

    async def test_a_volume_keeps_its_first_creators_labels(self) -> None:
        """A second create of a name answers with the labels the volume was
        made with, as an engine does; a missing volume has none."""
        with anyio.fail_after(TIMEOUT):
            runtime = _runtime()
            made = await runtime.create_volume("v", labels=LABELS)
            found = await runtime.create_volume("v", labels=OTHER_LABELS)
            read = await runtime.volume_labels("v")
            missing = await runtime.volume_labels("w")

        assert made == found == read == LABELS
        assert missing is None

    async def test_volume_data_outlives_its_container(self) -> None:
        """Data a hook keeps on a volume is there for the next container."""

        def write(call: FakeHookCall) -> dict[str, Any]:
            call.volumes["/data"]["k"] = "v"
            return {}

        def read(call: FakeHookCall) -> dict[str, Any]:
            return dict(call.volumes["/data"])

        with anyio.fail_after(TIMEOUT):
            runtime = _runtime(write=write, read=read)
            volumes = {"cache-data": "/data"}
            first = await _started(runtime, volumes=volumes)
            await _run(runtime, first, "write")
            await runtime.remove_container(first)
            second = await _started(runtime, volumes=volumes)
            result = await _run(runtime, second, "read")

        assert _data(result) == {"k": "v"}
        assert runtime.volume_data("cache-data") == {"k": "v"}

    async def test_a_mounted_volume_cannot_be_removed(self) -> None:
        """A volume stays while a container mounts it."""
        with anyio.fail_after(TIMEOUT):
            runtime = _runtime()
            await runtime.create_container(_spec(volumes={"v": "/data"}))
            with pytest.raises(EngineError, match="in use"):
                await runtime.remove_volume("v")

            await runtime.remove_container("c1")
            await runtime.remove_volume("v")

        assert await runtime.list_volumes(labels={}) == []

    async def test_networks_are_idempotent_and_listed_by_labels(self) -> None:
        """Creating a network twice keeps one; listing filters by labels."""
        with anyio.fail_after(TIMEOUT):
            runtime = _runtime()
            await runtime.create_network("n1", labels=LABELS)
            await runtime.create_network("n1", labels=LABELS)
            await runtime.create_network("n2", labels=OTHER_LABELS)
            cache = await runtime.list_networks(labels=LABELS)
            await runtime.remove_network("n1")
            await runtime.remove_network("n1")
            left = await runtime.list_networks(labels={})

        assert cache == ["n1"]
        assert left == ["n2"]

    async def test_a_network_in_use_cannot_be_removed(self) -> None:
        """A network stays while a live container is attached to it."""
        with anyio.fail_after(TIMEOUT):
            runtime = _runtime()
            await runtime.create_network("n", labels=LABELS)
            container_id = await _started(runtime, network="n")
            with pytest.raises(EngineError, match="in use"):
                await runtime.remove_network("n")

            await runtime.kill_container(container_id)
            await runtime.remove_network("n")

        assert await runtime.list_networks(labels={}) == []

    async def test_resolve_finds_live_containers_like_dns(self) -> None:
        """Names, aliases and published ports reach live containers only."""
        with anyio.fail_after(TIMEOUT):
            runtime = _runtime()
            await runtime.create_network("n", labels={})
            kv1 = await _started(
                runtime,
                "svc-kv-1",
                network="n",
                network_aliases=("kv-1",),
                published_ports=(KV_PORT,),
            )
            kv2 = await _started(runtime, "svc-kv-2", network_aliases=("kv-2",))
            port = runtime.container(kv1).host_ports[KV_PORT]
            found = [
                runtime.resolve("kv-1:6379"),
                runtime.resolve("svc-kv-1"),
                runtime.resolve(f"127.0.0.1:{port}"),
                runtime.resolve("kv-2", network="n"),
            ]
            await runtime.kill_container(kv1)

        assert [c.id if c else None for c in found] == [kv1, kv1, kv1, None]
        assert runtime.resolve("kv-1") is None
        assert runtime.resolve("kv-2") is runtime.container(kv2)


class TestImages:
    async def test_inspect_image_describes_a_registered_image(self) -> None:
        """A registered image is described with its name and labels."""
        with anyio.fail_after(TIMEOUT):
            runtime = FakeRuntime()
            runtime.add_image("a:1", hooks={}, labels={LABEL_HOOK_DIR: "/h"})
            info = await runtime.inspect_image("a:1")

        assert info.tags == ("a:1",)
        assert info.labels == {LABEL_HOOK_DIR: "/h"}
        assert info.id.startswith("sha256:")

    async def test_inspect_image_of_an_unknown_image_fails(self) -> None:
        """An image never registered is not found."""
        with anyio.fail_after(TIMEOUT):
            runtime = FakeRuntime()
            with pytest.raises(ImageNotFoundError) as caught:
                await runtime.inspect_image("nope:1")

        assert caught.value.image == "nope:1"


def _kv_payload(
    hook: str, member: str, request: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    members = [
        {"id": m, "role": None, "address": f"{m}:{KV_PORT}", "epoch": 0}
        for m in ("kv-1", "kv-2")
    ]
    me = next(m for m in members if m["id"] == member)

    return {
        "protocol": 1,
        "hook": hook,
        "service": "cache",
        "member": me,
        "members": members,
        "config": {"maxmemory": "64mb"},
        "env": {},
        "request": dict(request or {}),
    }


async def _kv_member(runtime: FakeRuntime, member: str) -> str:
    return await _started(
        runtime,
        f"cache-{member}",
        image=KV,
        network="cache-net",
        network_aliases=(member,),
        volumes={f"cache-{member}-data": KV_DATA_PATH},
        published_ports=(KV_PORT,),
    )


async def _kv_role(
    runtime: FakeRuntime,
    container_id: str,
    member: str,
    role: str,
    epoch: int,
    *,
    primary: str | None = None,
) -> ExecResult:
    request = {"role": role, "epoch": epoch, "primary": primary}
    payload = _kv_payload("role", member, request)

    return await _run(runtime, container_id, "role", payload)


async def _kv_status(
    runtime: FakeRuntime, container_id: str, member: str
) -> dict[str, Any]:
    result = await _run(runtime, container_id, "status", _kv_payload("status", member))
    assert result.exit_code == 0

    return _data(result)


class TestFakeKV:
    @pytest.fixture
    async def pair(self) -> tuple[FakeRuntime, str, str]:
        runtime = _runtime()
        await runtime.create_network("cache-net", labels=LABELS)
        one = await _kv_member(runtime, "kv-1")
        two = await _kv_member(runtime, "kv-2")

        return runtime, one, two

    async def test_plan_declares_what_the_service_can_do(self) -> None:
        """The plan offers the roles, topologies, port and data path."""
        with anyio.fail_after(TIMEOUT):
            runtime = _runtime()
            container_id = await _started(runtime, image=KV)
            plan = _data(await _run(runtime, container_id, "plan"))

        assert plan["roles"] == ["standalone", "primary", "replica", "backup"]
        assert plan["topologies"] == ["standalone", "redundant"]
        assert plan["ports"] == [KV_PORT]
        assert plan["data_paths"] == [KV_DATA_PATH]

    async def test_a_replica_copies_its_primary(
        self, pair: tuple[FakeRuntime, str, str]
    ) -> None:
        """A new replica holds its primary's keys and offset."""
        runtime, one, two = pair
        with anyio.fail_after(TIMEOUT):
            for hook in ("configure", "start"):
                await _run(runtime, one, hook, _kv_payload(hook, "kv-1"))

            await _kv_role(runtime, one, "kv-1", "primary", 1)
            fake_kv_write(runtime, one, "a", 1)
            fake_kv_write(runtime, one, "b", 2)
            result = await _kv_role(runtime, two, "kv-2", "replica", 1, primary="kv-1")
            status = await _kv_status(runtime, two, "kv-2")

        assert result.exit_code == 0
        assert _data(result) == {"role": "replica", "epoch": 1, "link_up": True}
        assert fake_kv_keys(runtime, two) == {"a": 1, "b": 2}
        assert status == {
            "role": "replica",
            "healthy": True,
            "replication_offset": 2,
            "link_up": True,
            "epoch": 1,
            "details": {"synced": True},
        }

    async def test_status_catches_a_replica_up(
        self, pair: tuple[FakeRuntime, str, str]
    ) -> None:
        """Writes after the resync reach the replica at its next probe."""
        runtime, one, two = pair
        with anyio.fail_after(TIMEOUT):
            await _kv_role(runtime, one, "kv-1", "primary", 1)
            await _kv_role(runtime, two, "kv-2", "replica", 1, primary="kv-1")
            offset = fake_kv_write(runtime, one, "late", "yes")
            lagging = fake_kv_keys(runtime, two)
            status = await _kv_status(runtime, two, "kv-2")

        assert lagging == {}
        assert status["replication_offset"] == offset == 1
        assert fake_kv_keys(runtime, two) == {"late": "yes"}

    async def test_a_replica_refuses_writes(
        self, pair: tuple[FakeRuntime, str, str]
    ) -> None:
        """Writing to a replica fails, as a read-only server would."""
        runtime, _, two = pair
        with anyio.fail_after(TIMEOUT):
            await _kv_role(runtime, two, "kv-2", "replica", 1, primary="kv-1")

        with pytest.raises(FakeKVReadOnlyError) as caught:
            fake_kv_write(runtime, two, "k", "v")

        assert caught.value.container_id == two

    async def test_an_older_epoch_is_refused(
        self, pair: tuple[FakeRuntime, str, str]
    ) -> None:
        """A role command older than the last applied exits 1; equal is fine."""
        runtime, one, _ = pair
        with anyio.fail_after(TIMEOUT):
            await _kv_role(runtime, one, "kv-1", "primary", 3)
            stale = await _kv_role(runtime, one, "kv-1", "replica", 2, primary="kv-2")
            again = await _kv_role(runtime, one, "kv-1", "primary", 3)
            status = await _kv_status(runtime, one, "kv-1")

        assert stale.exit_code == 1
        assert b"refusing epoch 2" in stale.stderr
        assert again.exit_code == 0
        assert (status["role"], status["epoch"]) == ("primary", 3)

    async def test_a_bad_role_request_exits_65(
        self, pair: tuple[FakeRuntime, str, str]
    ) -> None:
        """An unknown role, or a replica without a primary, is a bad payload."""
        runtime, one, _ = pair
        with anyio.fail_after(TIMEOUT):
            unknown = await _kv_role(runtime, one, "kv-1", "leader", 1)
            orphan = await _kv_role(runtime, one, "kv-1", "replica", 1)

        assert (unknown.exit_code, orphan.exit_code) == (65, 65)

    async def test_a_replica_of_a_dead_primary_keeps_its_data(
        self, pair: tuple[FakeRuntime, str, str]
    ) -> None:
        """When the primary dies, the replica's link drops and data stays."""
        runtime, one, two = pair
        with anyio.fail_after(TIMEOUT):
            await _kv_role(runtime, one, "kv-1", "primary", 1)
            fake_kv_write(runtime, one, "k", "v")
            await _kv_role(runtime, two, "kv-2", "replica", 1, primary="kv-1")
            runtime.crash(one)
            status = await _kv_status(runtime, two, "kv-2")
            promoted = await _kv_role(runtime, two, "kv-2", "primary", 2)
            fake_kv_write(runtime, two, "after", "failover")

        assert (status["link_up"], status["details"]) == (False, {"synced": False})
        assert promoted.exit_code == 0
        assert fake_kv_keys(runtime, two) == {"k": "v", "after": "failover"}

    async def test_data_lives_on_the_volume(
        self, pair: tuple[FakeRuntime, str, str]
    ) -> None:
        """A member re-created on its volume finds its keys and epoch."""
        runtime, one, _ = pair
        with anyio.fail_after(TIMEOUT):
            await _kv_role(runtime, one, "kv-1", "primary", 4)
            fake_kv_write(runtime, one, "k", "v")
            await runtime.remove_container(one)
            again = await _kv_member(runtime, "kv-1")
            status = await _kv_status(runtime, again, "kv-1")

        assert fake_kv_keys(runtime, again) == {"k": "v"}
        assert (status["role"], status["epoch"]) == ("primary", 4)

    async def test_a_stopped_member_takes_no_writes(
        self, pair: tuple[FakeRuntime, str, str]
    ) -> None:
        """Writing to a member that does not run fails as unreachable."""
        runtime, one, _ = pair
        with anyio.fail_after(TIMEOUT):
            await runtime.stop_container(one, timeout=1)

        with pytest.raises(ContainerGoneError):
            fake_kv_write(runtime, one, "k", "v")


class TestManualClock:
    async def test_sleepers_wake_when_time_passes_their_deadline(self) -> None:
        """A sleep ends only once the clock is advanced past its deadline."""
        clock = ManualClock()
        woke: list[float] = []

        async def nap(seconds: float) -> None:
            await clock.sleep(seconds)
            woke.append(clock.now())

        with anyio.fail_after(TIMEOUT):
            async with anyio.create_task_group() as group:
                group.start_soon(nap, 30)
                group.start_soon(nap, 10)
                await clock.wait_sleepers(2)
                clock.advance(9)
                await anyio.wait_all_tasks_blocked()
                assert woke == []
                clock.advance(1)
                await anyio.wait_all_tasks_blocked()
                assert woke == [10]
                clock.advance(100)

        assert woke == [10, 110]
        assert clock.sleepers == 0

    async def test_a_deadline_already_passed_returns_at_once(self) -> None:
        """Sleeping until a past time does not wait for an advance."""
        clock = ManualClock(start=50)
        with anyio.fail_after(TIMEOUT):
            await clock.sleep_until(10)
            await clock.sleep(0)

        assert clock.now() == 50

    async def test_a_cancelled_sleeper_leaves(self) -> None:
        """A cancelled sleep no longer counts as a sleeper."""
        clock = ManualClock()
        with anyio.fail_after(TIMEOUT):
            async with anyio.create_task_group() as group:
                group.start_soon(clock.sleep, 5)
                await clock.wait_sleepers(1)
                group.cancel_scope.cancel()

        assert clock.sleepers == 0

    async def test_time_only_moves_forward(self) -> None:
        """Advancing by a negative amount is refused."""
        with pytest.raises(ValueError, match="forward"):
            ManualClock().advance(-1)
