"""The hook runner: exit classes, timeouts, output limits and Nanobox mode."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anyio
import pytest
from attrs import define, field

from rolecall.actors import (
    ContainerSpec,
    ExecResult,
    HookConvention,
    run_hook,
    stderr_tail,
)
from rolecall.hooks_protocol import (
    LABEL_ENCODING,
    LABEL_HOOK_DIR,
    LABEL_HOOK_MODE,
    MAX_RESULT_BYTES,
    Encoding,
    HookBadPayloadError,
    HookError,
    HookFailedError,
    HookMode,
    HookName,
    HookPayload,
    HookRetryLaterError,
    HookTimeoutError,
    HookUnsupportedError,
    MemberInfo,
    MessageDecodeError,
    ProtocolError,
    RolecallError,
)
from rolecall.testing import FakeHookCall, FakeHookExit, FakeRuntime

pytestmark = pytest.mark.anyio

LIMIT = 10  # seconds; far above what any test here needs
IMAGE = "hooks:fake"
MEMBER = MemberInfo(id="cache-1", role=None, address="cache-1:6379")


def _payload(hook: HookName = HookName.STATUS, **request: Any) -> HookPayload:
    return HookPayload(hook=hook, service="cache", member=MEMBER, request=request)


async def _container(
    runtime: FakeRuntime,
    hooks: Mapping[str, Any],
    labels: Mapping[str, str] | None = None,
) -> tuple[str, HookConvention]:
    runtime.add_image(IMAGE, hooks=hooks, labels=labels)
    info = await runtime.create_container(ContainerSpec(name="cache-1", image=IMAGE))
    await runtime.start_container(info.id)
    image = await runtime.inspect_image(IMAGE)

    return info.id, HookConvention.from_image(image)


def _exit(code: int, stderr: str = "") -> Any:
    def hook(call: FakeHookCall) -> dict[str, Any]:
        raise FakeHookExit(code, stderr=stderr)

    return hook


@define(eq=False, kw_only=True)
class CannedRuntime(FakeRuntime):
    """A fake engine whose every exec returns one prepared outcome.

    It lets a test hand the runner bytes no well-behaved hook prints.
    """

    outcome: ExecResult = field(factory=lambda: ExecResult(exit_code=0))
    # Every argv and stdin the runner passed, in order.
    calls: list[tuple[tuple[str, ...], bytes | None]] = field(factory=list)

    async def exec(
        self,
        container_id: str,
        argv: Sequence[str],
        *,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float,
        max_stdout: int,
        max_stderr: int,
        on_stderr: Callable[[bytes], None] | None = None,
    ) -> ExecResult:
        """Record the call and return the prepared outcome."""
        await anyio.lowlevel.checkpoint()
        self.calls.append((tuple(argv), stdin))

        return self.outcome


async def _canned(
    outcome: ExecResult, *, mode: HookMode = HookMode.NANOBOX
) -> tuple[CannedRuntime, HookConvention]:
    runtime = CannedRuntime(outcome=outcome)

    return runtime, HookConvention(mode=mode)


class TestExitClasses:
    """Exit codes become the error class the protocol gives them."""

    @pytest.mark.parametrize(
        ("code", "error_class"),
        [
            (1, HookFailedError),
            (3, HookFailedError),
            (65, HookBadPayloadError),
            (69, HookUnsupportedError),
            (75, HookRetryLaterError),
            (126, HookUnsupportedError),
            (127, HookUnsupportedError),
        ],
    )
    async def test_exit_code_picks_the_error_class(
        self, code: int, error_class: type[HookError]
    ) -> None:
        """Each exit code raises its class with every typed field filled in."""
        runtime = FakeRuntime()
        container_id, convention = await _container(
            runtime, {"status": _exit(code, "first line\nwhat went wrong")}
        )
        with anyio.fail_after(LIMIT), pytest.raises(HookError) as caught:
            await run_hook(
                runtime, container_id, _payload(), convention=convention, timeout=LIMIT
            )

        error = caught.value
        assert type(error) is error_class
        assert (error.service, error.member, error.hook) == (
            "cache",
            "cache-1",
            "status",
        )
        assert error.exit_code == code
        assert error.stderr_tail == "first line\nwhat went wrong"
        assert f"exit code {code}" in str(error)
        assert "'status' of member 'cache-1' (service 'cache')" in str(error)
        assert str(error).endswith(": first line\nwhat went wrong")

    async def test_a_missing_hook_is_unsupported(self) -> None:
        """A hook the image lacks (exec exit 127) reads as unsupported."""
        runtime = FakeRuntime()
        container_id, convention = await _container(runtime, {"plan": _exit(0)})
        with anyio.fail_after(LIMIT), pytest.raises(HookUnsupportedError) as caught:
            await run_hook(
                runtime,
                container_id,
                _payload(HookName.BACKUP),
                convention=convention,
                timeout=LIMIT,
            )

        assert caught.value.exit_code == 127
        assert caught.value.hook == "backup"
        assert "does not implement it" in str(caught.value)
        assert "/opt/rolecall/hooks/backup: not found" in caught.value.stderr_tail

    async def test_no_exit_code_is_a_failure(self) -> None:
        """An exec the engine gives no exit code for has failed."""
        runtime, convention = await _canned(
            ExecResult(exit_code=None, stderr=b"lost\n"), mode=HookMode.NATIVE
        )
        with anyio.fail_after(LIMIT), pytest.raises(HookFailedError) as caught:
            await run_hook(
                runtime, "c", _payload(), convention=convention, timeout=LIMIT
            )

        assert caught.value.exit_code is None
        assert "ended with no exit code" in str(caught.value)
        assert caught.value.stderr_tail == "lost"

    async def test_the_message_keeps_only_the_last_lines_of_stderr(self) -> None:
        """The error carries the last five lines of stderr, not the whole."""
        lines = "\n".join(f"line {n}" for n in range(1, 8))
        runtime = FakeRuntime()
        container_id, convention = await _container(
            runtime, {"status": _exit(1, lines)}
        )
        with anyio.fail_after(LIMIT), pytest.raises(HookFailedError) as caught:
            await run_hook(
                runtime, container_id, _payload(), convention=convention, timeout=LIMIT
            )

        assert caught.value.stderr_tail == "line 3\nline 4\nline 5\nline 6\nline 7"
        assert "line 2" not in str(caught.value)

    async def test_secrets_are_masked_in_the_error(self) -> None:
        """Secret values echoed on stderr show as *** in the message and tail."""
        stderr = "login as admin with hunter2-long failed\nhint: hunter2"
        runtime = FakeRuntime()
        container_id, convention = await _container(
            runtime, {"status": _exit(1, stderr)}
        )
        with anyio.fail_after(LIMIT), pytest.raises(HookFailedError) as caught:
            await run_hook(
                runtime,
                container_id,
                _payload(),
                convention=convention,
                timeout=LIMIT,
                secrets=["hunter2", "hunter2-long", ""],
            )

        assert caught.value.stderr_tail == ("login as admin with *** failed\nhint: ***")
        assert "hunter2" not in str(caught.value)

    def test_stderr_tail_decodes_bad_utf8_and_trims(self) -> None:
        """The tail survives bytes that are not UTF-8 and drops blank edges."""
        assert stderr_tail(b"\n\nok\n\xffbad\n\n") == "ok\n\ufffdbad"
        assert stderr_tail(b"a\nb\nc", lines=2) == "b\nc"


class TestTimeouts:
    """A hook that overruns its deadline is killed and reported."""

    async def test_an_overrunning_hook_is_killed(self) -> None:
        """Past its timeout a hook raises HookTimeoutError and its exec is killed."""

        async def slow(call: FakeHookCall) -> dict[str, Any]:
            await anyio.sleep_forever()
            return {}

        runtime = FakeRuntime()
        container_id, convention = await _container(runtime, {"configure": slow})
        with anyio.fail_after(LIMIT), pytest.raises(HookTimeoutError) as caught:
            await run_hook(
                runtime,
                container_id,
                _payload(HookName.CONFIGURE),
                convention=convention,
                timeout=0.05,
            )

        error = caught.value
        assert (error.service, error.member, error.hook) == (
            "cache",
            "cache-1",
            "configure",
        )
        assert (error.timeout, error.exit_code) == (0.05, None)
        assert "past its 0.05s timeout, and was killed" in str(error)
        assert (runtime.killed_execs, runtime.running_execs) == (1, 0)

    async def test_a_hung_exec_is_killed_too(self) -> None:
        """An exec the engine leaves hanging is killed at the deadline."""
        runtime = FakeRuntime()
        container_id, convention = await _container(runtime, {"status": _exit(0)})
        runtime.fail_next_exec(hook="status", hang=True)
        with anyio.fail_after(LIMIT), pytest.raises(HookTimeoutError):
            await run_hook(
                runtime, container_id, _payload(), convention=convention, timeout=0.05
            )

        assert (runtime.killed_execs, runtime.finished_execs) == (1, 0)


class TestNativeMode:
    """Native hooks read the payload on stdin and print a result."""

    async def test_payload_in_and_result_out(self) -> None:
        """The hook sees the payload and its data comes back as the result."""
        seen: list[FakeHookCall] = []

        def role(call: FakeHookCall) -> dict[str, Any]:
            seen.append(call)
            return {"took": call.request["role"]}

        runtime = FakeRuntime()
        container_id, convention = await _container(runtime, {"role": role})
        with anyio.fail_after(LIMIT):
            run = await run_hook(
                runtime,
                container_id,
                _payload(HookName.ROLE, role="primary"),
                convention=convention,
                timeout=LIMIT,
            )

        assert run.result.data == {"took": "primary"}
        assert run.exec.exit_code == 0
        [call] = seen
        assert call.argv == ("/opt/rolecall/hooks/role",)
        assert call.payload["member"]["id"] == "cache-1"
        assert call.env["ROLECALL_HOOK"] == "role"
        assert call.env["ROLECALL_HOOK_MODE"] == "native"
        assert call.env["ROLECALL_ENCODING"] == "msgpack"

    async def test_labels_move_the_hooks_and_pick_json(self) -> None:
        """The image's labels choose the hook directory and the encoding."""
        seen: list[FakeHookCall] = []

        def status(call: FakeHookCall) -> dict[str, Any]:
            seen.append(call)
            return {"healthy": True}

        runtime = FakeRuntime()
        labels = {LABEL_HOOK_DIR: "/hooks/", LABEL_ENCODING: "json"}
        container_id, convention = await _container(runtime, {"status": status}, labels)
        with anyio.fail_after(LIMIT):
            run = await run_hook(
                runtime, container_id, _payload(), convention=convention, timeout=LIMIT
            )

        assert convention == HookConvention(directory="/hooks", encoding=Encoding.JSON)
        assert run.result.data == {"healthy": True}
        assert seen[0].argv == ("/hooks/status",)
        assert seen[0].env["ROLECALL_ENCODING"] == "json"

    async def test_an_unknown_label_value_is_a_protocol_error(self) -> None:
        """An image asking for a mode rolecall does not know is refused."""
        runtime = FakeRuntime()
        runtime.add_image(IMAGE, hooks={}, labels={LABEL_HOOK_MODE: "heroku"})
        image = await runtime.inspect_image(IMAGE)

        with pytest.raises(ProtocolError, match="'heroku'"):
            HookConvention.from_image(image)

    async def test_garbage_on_stdout_is_a_protocol_error(self) -> None:
        """Bytes that are no result raise a decode error, not a crash."""
        runtime, convention = await _canned(
            ExecResult(exit_code=0, stdout=b"\xc1 not msgpack"), mode=HookMode.NATIVE
        )
        with anyio.fail_after(LIMIT), pytest.raises(MessageDecodeError):
            await run_hook(
                runtime, "c", _payload(), convention=convention, timeout=LIMIT
            )

    async def test_a_result_of_the_wrong_shape_is_a_protocol_error(self) -> None:
        """A JSON result that is a list, not a map, is refused."""
        runtime = CannedRuntime(outcome=ExecResult(exit_code=0, stdout=b"[1, 2]"))
        convention = HookConvention(encoding=Encoding.JSON)
        with anyio.fail_after(LIMIT), pytest.raises(MessageDecodeError, match="map"):
            await run_hook(
                runtime, "c", _payload(), convention=convention, timeout=LIMIT
            )

    async def test_truncated_stdout_is_an_error(self) -> None:
        """A result cut at the output cap fails the run even if it decodes."""
        runtime, convention = await _canned(
            ExecResult(exit_code=0, stdout=b"", stdout_truncated=True),
            mode=HookMode.NATIVE,
        )
        with anyio.fail_after(LIMIT), pytest.raises(MessageDecodeError) as caught:
            await run_hook(
                runtime, "c", _payload(), convention=convention, timeout=LIMIT
            )

        assert f"more than {MAX_RESULT_BYTES} bytes" in str(caught.value)

    async def test_output_past_the_cap_is_an_error_on_the_fake(self) -> None:
        """A fake hook printing more than the cap fails with a decode error."""

        def status(call: FakeHookCall) -> dict[str, Any]:
            return {"blob": "x" * MAX_RESULT_BYTES}

        runtime = FakeRuntime()
        container_id, convention = await _container(runtime, {"status": status})
        with anyio.fail_after(LIMIT), pytest.raises(MessageDecodeError):
            await run_hook(
                runtime, container_id, _payload(), convention=convention, timeout=LIMIT
            )


class TestNanoboxMode:
    """Nanobox-style hooks take JSON in argv and only plan prints JSON."""

    NANOBOX = {LABEL_HOOK_MODE: "nanobox"}  # noqa: RUF012  (read only)

    async def test_the_payload_travels_as_json_in_argv(self) -> None:
        """The payload is the first argument, as JSON, and stdin stays empty."""
        runtime, convention = await _canned(ExecResult(exit_code=0, stdout=b"ok"))
        with anyio.fail_after(LIMIT):
            await run_hook(
                runtime,
                "c",
                _payload(HookName.ROLE, role="replica"),
                convention=convention,
                timeout=LIMIT,
            )

        [(argv, stdin)] = runtime.calls
        assert stdin is None
        assert argv[0] == "/opt/rolecall/hooks/role"
        wire = json.loads(argv[1])
        assert (wire["hook"], wire["request"]) == ("role", {"role": "replica"})
        assert wire["member"]["id"] == "cache-1"

    async def test_plan_is_read_from_stdout(self) -> None:
        """A Nanobox plan hook's bare JSON becomes the result's data."""

        def plan(call: FakeHookCall) -> dict[str, Any]:
            return {"roles": ["standalone"], "topologies": ["standalone"]}

        runtime = FakeRuntime()
        container_id, convention = await _container(
            runtime, {"plan": plan}, self.NANOBOX
        )
        with anyio.fail_after(LIMIT):
            run = await run_hook(
                runtime,
                container_id,
                _payload(HookName.PLAN),
                convention=convention,
                timeout=LIMIT,
            )

        assert convention.mode is HookMode.NANOBOX
        assert run.result.data == {
            "roles": ["standalone"],
            "topologies": ["standalone"],
        }

    async def test_other_hooks_stdout_is_not_read(self) -> None:
        """Free text printed by a Nanobox configure hook is not a result."""
        runtime, convention = await _canned(
            ExecResult(exit_code=0, stdout=b"configured redis, all good\n")
        )
        with anyio.fail_after(LIMIT):
            run = await run_hook(
                runtime,
                "c",
                _payload(HookName.CONFIGURE),
                convention=convention,
                timeout=LIMIT,
            )

        assert run.result.data == {}
        assert run.exec.stdout == b"configured redis, all good\n"

    async def test_a_plan_that_prints_nothing_is_empty(self) -> None:
        """An empty stdout from plan reads as an empty map."""
        runtime, convention = await _canned(ExecResult(exit_code=0))
        with anyio.fail_after(LIMIT):
            run = await run_hook(
                runtime,
                "c",
                _payload(HookName.PLAN),
                convention=convention,
                timeout=LIMIT,
            )

        assert run.result.data == {}

    @pytest.mark.parametrize(
        ("stdout", "expected"),
        [
            (b"this is no json", "printed no valid JSON"),
            (b'["roles"]', "not an object: list"),
            (b"\xff\xfe", "printed no valid JSON"),
            (b'{"roles": ["standalone"', "printed no valid JSON"),
        ],
    )
    async def test_a_plan_that_is_no_json_object_is_a_protocol_error(
        self, stdout: bytes, expected: str
    ) -> None:
        """Garbage, a non-object or a cut-off plan raises a decode error."""
        runtime, convention = await _canned(ExecResult(exit_code=0, stdout=stdout))
        with anyio.fail_after(LIMIT), pytest.raises(MessageDecodeError, match=expected):
            await run_hook(
                runtime,
                "c",
                _payload(HookName.PLAN),
                convention=convention,
                timeout=LIMIT,
            )

    async def test_a_deeply_nested_plan_is_a_protocol_error(self) -> None:
        """JSON nested past the parser's stack is a rolecall error."""
        depth = 200_000
        stdout = b'{"roles": ' + b"[" * depth + b"]" * depth + b"}"
        runtime, convention = await _canned(ExecResult(exit_code=0, stdout=stdout))
        with anyio.fail_after(LIMIT), pytest.raises(MessageDecodeError) as caught:
            await run_hook(
                runtime,
                "c",
                _payload(HookName.PLAN),
                convention=convention,
                timeout=LIMIT,
            )

        assert isinstance(caught.value, RolecallError)
        assert "'cache-1'" in str(caught.value)

    async def test_a_truncated_plan_is_an_error_even_if_it_parses(self) -> None:
        """A plan cut at the output cap fails even when the cut leaves JSON."""
        stdout = b'{"roles": [], "topologies": []}' + b" " * 64
        runtime, convention = await _canned(
            ExecResult(exit_code=0, stdout=stdout, stdout_truncated=True)
        )
        with anyio.fail_after(LIMIT), pytest.raises(MessageDecodeError) as caught:
            await run_hook(
                runtime,
                "c",
                _payload(HookName.PLAN),
                convention=convention,
                timeout=LIMIT,
            )

        assert f"more than {MAX_RESULT_BYTES} bytes" in str(caught.value)

    async def test_exit_codes_mean_the_same(self) -> None:
        """A Nanobox hook exiting 75 asks to be retried, as in native mode."""
        runtime = FakeRuntime()
        container_id, convention = await _container(
            runtime, {"start": _exit(75, "still loading")}, self.NANOBOX
        )
        with anyio.fail_after(LIMIT), pytest.raises(HookRetryLaterError) as caught:
            await run_hook(
                runtime,
                container_id,
                _payload(HookName.START),
                convention=convention,
                timeout=LIMIT,
            )

        assert (caught.value.exit_code, caught.value.stderr_tail) == (
            75,
            "still loading",
        )
