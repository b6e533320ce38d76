"""The log lines a runner's operator reads: one per reconcile pass, and a
hook's stderr forwarded line by line, capped, with secrets masked."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
import structlog
from structlog.testing import capture_logs
from supervisor_support import LIMIT, PROBE, converged, kv_runtime, service_spec

from rolecall.actors import MAX_STDERR_LINES, StderrForwarder
from rolecall.actors._hook_stderr import MAX_STDERR_LINE_CHARS
from rolecall.actors._hooks import STDERR_TAIL_CHARS, stderr_tail
from rolecall.hooks_protocol import HookName
from rolecall.supervisor import open_supervisor
from rolecall.supervisor._controller import ServiceController
from rolecall.testing import FakeHookCall, fake_kv_image

SECRET = "s3cr3t-5521"  # noqa: S105  (a made-up secret to hunt for)


@pytest.mark.anyio
class TestReconcilePassLine:
    """Each pass logs one reconcile_pass line with its duration."""

    async def test_one_line_per_pass_quiet_when_idle(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A pass that acts logs at info with its steps; an idle one at debug."""
        passes = 0
        original = ServiceController.run_pass

        async def counted(self: ServiceController) -> None:
            nonlocal passes
            passes += 1
            await original(self)

        monkeypatch.setattr(ServiceController, "run_pass", counted)
        runtime = kv_runtime()
        with capture_logs() as logs, anyio.fail_after(LIMIT):
            async with (
                open_supervisor(runtime, probe_interval=PROBE) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(service_spec())
                await converged(supervisor, events)
                controller = supervisor.controllers["cache"]
                for _ in range(3):  # three more passes, with nothing to do
                    await controller.passed.wait()
            counted_passes = passes

        lines = [line for line in logs if line["event"] == "reconcile_pass"]
        first = lines[0]
        idle = [line for line in lines if line["outcome"] == "idle"]
        assert len(lines) == counted_passes
        assert (first["service"], first["outcome"], first["steps"]) == (
            "cache",
            "acted",
            2,
        )
        assert first["log_level"] == "info"
        assert isinstance(first["duration_ms"], int)
        assert len(idle) >= 3
        assert {line["log_level"] for line in idle} == {"debug"}
        assert {line["steps"] for line in idle} == {0}
        assert idle[-1]["converged"] is True


@pytest.mark.anyio
class TestHookStderr:
    """A hook's stderr reaches the log as lines of its own."""

    async def test_lines_are_forwarded_with_fields_and_secrets_masked(
        self,
    ) -> None:
        """configure's stderr lines carry service, member and hook, masked."""
        hooks = fake_kv_image()

        def configure(call: FakeHookCall) -> Any:
            call.log("writing config")
            call.log(f"password is {SECRET}")
            return hooks[HookName.CONFIGURE](call)

        runtime = kv_runtime(chatty={**hooks, HookName.CONFIGURE: configure})
        spec = service_spec(
            image="chatty:fake",
            env={"TOKEN": SECRET},
            secret_keys=frozenset({"TOKEN"}),
        )
        with capture_logs() as logs, anyio.fail_after(LIMIT):
            async with open_supervisor(runtime, probe_interval=PROBE) as supervisor:
                await supervisor.apply(spec)
                await supervisor.wait_converged("cache")

        lines = [
            line
            for line in logs
            if line["event"] == "hook_stderr" and line["hook"] == "configure"
        ]
        assert [
            (line["service"], line["member"], line["hook"], line["line"])
            for line in lines
        ] == [
            ("cache", "cache-1", "configure", "writing config"),
            ("cache", "cache-1", "configure", "password is ***"),
        ]
        assert {line["log_level"] for line in lines} == {"info"}
        assert SECRET not in repr(logs)

    async def test_a_flooding_hook_is_capped(self) -> None:
        """Past the cap, lines are counted in one hook_stderr_dropped line."""
        hooks = fake_kv_image()
        extra = 50

        def start(call: FakeHookCall) -> Any:
            for number in range(MAX_STDERR_LINES + extra):
                call.log(f"line {number}")
            return {}

        runtime = kv_runtime(flood={**hooks, HookName.START: start})
        with capture_logs() as logs, anyio.fail_after(LIMIT):
            async with open_supervisor(runtime, probe_interval=PROBE) as supervisor:
                await supervisor.apply(service_spec(image="flood:fake"))
                await supervisor.wait_converged("cache")

        lines = [
            line
            for line in logs
            if line["event"] == "hook_stderr" and line["hook"] == "start"
        ]
        (dropped,) = [line for line in logs if line["event"] == "hook_stderr_dropped"]
        assert len(lines) == MAX_STDERR_LINES
        assert lines[-1]["line"] == f"line {MAX_STDERR_LINES - 1}"
        assert (dropped["lines"], dropped["forwarded"]) == (extra, MAX_STDERR_LINES)
        assert dropped["hook"] == "start"


class TestForwarder:
    """StderrForwarder turns pieces of output into whole lines."""

    def _forward(self, *pieces: bytes) -> list[dict[str, Any]]:
        with capture_logs() as logs:
            log = structlog.get_logger("test")
            forwarder = StderrForwarder(log, {"hook": "role"}, [SECRET])
            for piece in pieces:
                forwarder.feed(piece)
            forwarder.close()

        return logs

    def test_lines_split_across_pieces_are_joined(self) -> None:
        """A line that arrives in two pieces is logged once, whole."""
        logs = self._forward(b"first li", b"ne\nsecond\n\nthi", b"rd")

        assert [line["line"] for line in logs] == ["first line", "second", "third"]

    def test_a_secret_split_across_pieces_is_masked(self) -> None:
        """Masking works on whole lines, so a secret cut in two is still found."""
        half = len(SECRET) // 2
        logs = self._forward(
            f"token {SECRET[:half]}".encode(), f"{SECRET[half:]} end\n".encode()
        )

        assert [line["line"] for line in logs] == ["token *** end"]

    def test_a_long_line_is_cut(self) -> None:
        """A line past the character limit is cut and marked."""
        logs = self._forward(b"x" * 50_000 + b"\n")

        (line,) = logs
        assert line["line"] == "x" * 1000 + " [cut]"


class TestSecretsAtCuts:
    """A cut never leaves a piece of a secret behind, wherever it falls."""

    @pytest.mark.parametrize("offset", range(-len(SECRET), 3))
    def test_a_secret_across_the_line_cut_leaves_nothing(self, offset: int) -> None:
        """Wherever the secret sits around the 1,000-character cut, no piece
        of it is logged."""
        lead = b"y" * (MAX_STDERR_LINE_CHARS + offset)
        with capture_logs() as logs:
            forwarder = StderrForwarder(structlog.get_logger("test"), {}, [SECRET])
            forwarder.feed(lead + SECRET.encode() + b"\n")
            forwarder.close()

        (line,) = logs
        assert not _pieces_of(SECRET) & _substrings(line["line"])

    @pytest.mark.parametrize("offset", range(-len(SECRET), 3))
    def test_a_secret_across_the_buffer_bound_leaves_nothing(self, offset: int) -> None:
        """A secret split by the line buffer's own byte bound (multi-byte
        text, so that bound falls inside the kept characters) is masked."""
        lead = "é" * ((MAX_STDERR_LINE_CHARS * 4 + offset) // 2)
        with capture_logs() as logs:
            forwarder = StderrForwarder(structlog.get_logger("test"), {}, [SECRET])
            forwarder.feed((lead + SECRET + "tail\n").encode())
            forwarder.close()

        (line,) = logs
        assert not _pieces_of(SECRET) & _substrings(line["line"])

    @pytest.mark.parametrize("kept", range(3, len(SECRET)))
    def test_a_tail_whose_start_was_cut_masks_the_secrets_end(self, kept: int) -> None:
        """The capture keeps the end of a long stderr: a secret whose start
        fell off leaves no piece in the error's tail."""
        stderr = (SECRET[-kept:] + "\nfailed\n").encode()

        tail = stderr_tail(stderr, secrets=[SECRET], truncated=True)

        assert tail == "***\nfailed"

    def test_a_flooding_line_is_quoted_short(self) -> None:
        """One huge line does not make the error as long as the capture."""
        tail = stderr_tail(b"z" * 65_536, secrets=[SECRET])

        assert tail == "[cut] " + "z" * STDERR_TAIL_CHARS


def _pieces_of(secret: str) -> set[str]:
    """Every piece of ``secret`` of three characters or more."""
    return {
        secret[i:j] for i in range(len(secret)) for j in range(i + 3, len(secret) + 1)
    }


def _substrings(text: str) -> set[str]:
    return {
        text[i : i + n] for n in range(3, len(SECRET) + 1) for i in range(len(text))
    }
