"""The hook-author SDK, run the way an image runs it: as a real process."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import msgpack
import pytest

from rolecall.hooks_protocol import (
    MAX_PAYLOAD_BYTES,
    MAX_RESULT_BYTES,
    PROTOCOL_VERSION,
    Encoding,
    ExitClass,
    HookName,
    HookPayload,
    HookResult,
    MemberInfo,
    Role,
    decode_result,
    encode_payload,
    payload_to_wire,
)
from rolecall.hooks_protocol.sdk import rolecall_hook

SDK_FILE = Path(rolecall_hook.__file__)

# Modules a minimal image lacks; every hook below refuses to import them, so a
# stray import in the SDK fails the test that runs it.
BLOCKED = ("attrs", "attr", "cattrs", "rolecall")


def member(index: int, role: Role) -> MemberInfo:
    """Build member ``cache-<index>``."""
    return MemberInfo(
        id=f"cache-{index}", role=role, address=f"cache-{index}:6379", epoch=4
    )


def role_payload(hook: HookName = HookName.ROLE) -> HookPayload:
    """Build a payload that asks ``cache-1`` to follow ``cache-0``."""
    return HookPayload(
        hook=hook,
        service="cache",
        member=member(1, Role.REPLICA),
        members=(member(0, Role.PRIMARY), member(1, Role.REPLICA)),
        config={"maxmemory": "64mb"},
        env={"REDIS_PASSWORD": "hunter2"},
        request={"role": "replica", "primary": "cache-0", "epoch": 5},
    )


@pytest.fixture
def hook_dir(tmp_path: Path) -> Path:
    """Make an image-like hook directory holding a copy of the SDK."""
    shutil.copy(SDK_FILE, tmp_path / "rolecall_hook.py")
    return tmp_path


def write_hook(
    hook_dir: Path, body: str, *, name: str = "role", block: tuple[str, ...] = ()
) -> Path:
    """Write a hook script whose ``handler`` is defined by ``body``."""
    blocked = "".join(f"sys.modules[{module!r}] = None\n" for module in BLOCKED + block)
    script = hook_dir / name
    script.write_text(
        "import os, subprocess, sys\n"
        f"{blocked}"
        "import rolecall_hook\n"
        f"{textwrap.dedent(body)}\n"
        "rolecall_hook.run(handler, message='done')\n"
    )
    return script


def run_hook(
    script: Path,
    stdin: bytes = b"",
    *,
    args: tuple[str, ...] = (),
    **env: str,
) -> subprocess.CompletedProcess[bytes]:
    """Run a hook script as rolecall would, with ``env`` added."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ROLECALL_")}
    environ.update(env)
    return subprocess.run(
        [sys.executable, str(script), *args],
        input=stdin,
        capture_output=True,
        env=environ,
        timeout=60,
        check=False,
    )


ECHO = """
def handler(ctx):
    return {
        "hook": ctx.hook,
        "member": ctx.member["id"],
        "members": [m["id"] for m in ctx.members],
        "request": ctx.request,
        "epoch": ctx.epoch,
        "config": ctx.config,
        "has_password": "REDIS_PASSWORD" in ctx.env,
    }
"""

ECHOED = {
    "hook": "role",
    "member": "cache-1",
    "members": ["cache-0", "cache-1"],
    "request": {"role": "replica", "primary": "cache-0", "epoch": 5},
    "epoch": 4,
    "config": {"maxmemory": "64mb"},
    "has_password": True,
}


class TestNative:
    """Native mode: payload on stdin, result on stdout, same encoding."""

    @pytest.mark.parametrize("encoding", list(Encoding))
    def test_answers(self, hook_dir: Path, encoding: Encoding) -> None:
        """The handler sees the payload and its dict comes back as data."""
        script = write_hook(hook_dir, ECHO)
        done = run_hook(
            script,
            encode_payload(role_payload(), encoding),
            ROLECALL_ENCODING=encoding.value,
        )
        assert done.returncode == 0, done.stderr
        assert decode_result(done.stdout, encoding) == HookResult(
            data=ECHOED, message="done"
        )

    def test_msgpack_by_default(self, hook_dir: Path) -> None:
        """Without ROLECALL_ENCODING the payload and result are msgpack."""
        script = write_hook(hook_dir, ECHO)
        done = run_hook(script, encode_payload(role_payload()))
        assert done.returncode == 0, done.stderr
        assert decode_result(done.stdout).data == ECHOED

    def test_none_is_empty_data(self, hook_dir: Path) -> None:
        """A handler that returns None answers empty data."""
        script = write_hook(hook_dir, "def handler(ctx):\n    return None\n")
        done = run_hook(script, encode_payload(role_payload()))
        assert done.returncode == 0, done.stderr
        assert decode_result(done.stdout) == HookResult(message="done")

    def test_json_without_msgpack(self, hook_dir: Path) -> None:
        """JSON mode works in an image that has no msgpack."""
        script = write_hook(hook_dir, ECHO, block=("msgpack",))
        done = run_hook(
            script,
            encode_payload(role_payload(), Encoding.JSON),
            ROLECALL_ENCODING="json",
        )
        assert done.returncode == 0, done.stderr
        assert decode_result(done.stdout, Encoding.JSON).data == ECHOED

    def test_msgpack_missing(self, hook_dir: Path) -> None:
        """msgpack mode in an image without msgpack fails and says why."""
        script = write_hook(hook_dir, ECHO, block=("msgpack",))
        done = run_hook(script, encode_payload(role_payload()))
        assert done.returncode == 1
        assert b"msgpack is not installed" in done.stderr
        assert done.stdout == b""

    def test_stray_output(self, hook_dir: Path) -> None:
        """print(), raw writes and child processes cannot corrupt the result."""
        body = """
        def handler(ctx):
            print("stray print")
            sys.stdout.write("stray write\\n")
            os.write(1, b"stray fd write\\n")
            subprocess.run([sys.executable, "-c", "print('stray child')"], check=True)
            return {"ok": True}
        """
        done = run_hook(write_hook(hook_dir, body), encode_payload(role_payload()))
        assert done.returncode == 0, done.stderr
        assert decode_result(done.stdout).data == {"ok": True}
        for line in (b"stray print", b"stray write", b"stray fd write", b"stray child"):
            assert line in done.stderr

    def test_log_line(self, hook_dir: Path) -> None:
        """ctx.log writes one JSON line on stderr with the hook and member."""
        body = """
        def handler(ctx):
            ctx.log("replica configured", primary="cache-0", level="ignored")
        """
        done = run_hook(write_hook(hook_dir, body), encode_payload(role_payload()))
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stderr) == {
            "level": "info",
            "event": "replica configured",
            "hook": "role",
            "member": "cache-1",
            "primary": "cache-0",
        }


class TestOutcomes:
    """Each way a handler ends has its exit code."""

    @pytest.mark.parametrize(
        ("error", "code"),
        [
            ("HookFailed", 1),
            ("BadPayload", ExitClass.BAD_PAYLOAD.value),
            ("Unsupported", ExitClass.UNSUPPORTED.value),
            ("RetryLater", ExitClass.RETRY_LATER.value),
        ],
    )
    def test_typed_failure(self, hook_dir: Path, error: str, code: int) -> None:
        """A typed exception exits with its code and answers its message."""
        body = f"""
        def handler(ctx):
            raise rolecall_hook.{error}("primary cache-0 not reachable")
        """
        done = run_hook(write_hook(hook_dir, body), encode_payload(role_payload()))
        assert done.returncode == code
        assert decode_result(done.stdout).message == "primary cache-0 not reachable"
        log = json.loads(done.stderr)
        assert log["outcome"] == error
        assert log["level"] == "error"

    def test_unexpected_error(self, hook_dir: Path) -> None:
        """Any other exception exits 1 with its traceback on stderr."""
        body = """
        def handler(ctx):
            return {"ratio": 1 / 0}
        """
        done = run_hook(write_hook(hook_dir, body), encode_payload(role_payload()))
        assert done.returncode == 1
        assert b"Traceback (most recent call last)" in done.stderr
        assert b"ZeroDivisionError" in done.stderr
        assert done.stdout == b""

    def test_not_a_dict(self, hook_dir: Path) -> None:
        """A handler that returns something other than a dict is a bug: exit 1."""
        body = "def handler(ctx):\n    return ['primary']\n"
        done = run_hook(write_hook(hook_dir, body), encode_payload(role_payload()))
        assert done.returncode == 1
        assert b"return a dict" in done.stderr

    def test_unencodable_answer(self, hook_dir: Path) -> None:
        """Data the encoding cannot carry is a bug: exit 1, nothing on stdout."""
        body = "def handler(ctx):\n    return {'roles': {'primary'}}\n"
        done = run_hook(write_hook(hook_dir, body), encode_payload(role_payload()))
        assert done.returncode == 1
        assert b"Traceback" in done.stderr
        assert done.stdout == b""

    def test_result_too_large(self, hook_dir: Path) -> None:
        """A result over the limit fails instead of being cut short."""
        body = f"def handler(ctx):\n    return {{'blob': 'x' * {MAX_RESULT_BYTES}}}\n"
        done = run_hook(write_hook(hook_dir, body), encode_payload(role_payload()))
        assert done.returncode == 1
        assert b"over the" in done.stderr


class TestBadPayload:
    """What the SDK refuses before the handler runs exits 65."""

    def wire(self, **changes: Any) -> dict[str, Any]:
        """Return the example payload's wire map with some keys changed."""
        wire = payload_to_wire(role_payload())
        wire.update(changes)
        return wire

    @pytest.mark.parametrize(
        "stdin",
        [
            pytest.param(b"", id="empty"),
            pytest.param(b"\xc1", id="garbage"),
            pytest.param(msgpack.packb([1, 2]), id="not-a-map"),
        ],
    )
    def test_undecodable(self, hook_dir: Path, stdin: bytes) -> None:
        """Bytes that are not a payload map exit 65."""
        done = run_hook(write_hook(hook_dir, ECHO), stdin)
        assert done.returncode == ExitClass.BAD_PAYLOAD.value
        assert done.stdout == b"" or decode_result(done.stdout).data == {}

    @pytest.mark.parametrize("version", [2, 0, "1", None])
    def test_version(self, hook_dir: Path, version: object) -> None:
        """A payload of another protocol version exits 65 and says so."""
        stdin = msgpack.packb(self.wire(protocol=version))
        done = run_hook(write_hook(hook_dir, ECHO), stdin)
        assert done.returncode == ExitClass.BAD_PAYLOAD.value
        assert b"protocol" in done.stderr

    @pytest.mark.parametrize("key", ["hook", "service", "member"])
    def test_missing_key(self, hook_dir: Path, key: str) -> None:
        """A payload without a required key exits 65 naming it."""
        wire = self.wire()
        del wire[key]
        done = run_hook(write_hook(hook_dir, ECHO), msgpack.packb(wire))
        assert done.returncode == ExitClass.BAD_PAYLOAD.value
        assert f"'{key}'".encode() in done.stderr

    @pytest.mark.parametrize("key", ["id", "role", "address"])
    def test_member_missing_key(self, hook_dir: Path, key: str) -> None:
        """A member without a required key exits 65 naming it."""
        wire = self.wire()
        del wire["members"][0][key]
        done = run_hook(write_hook(hook_dir, ECHO), msgpack.packb(wire))
        assert done.returncode == ExitClass.BAD_PAYLOAD.value
        assert f"'members[0].{key}'".encode() in done.stderr

    def test_too_large(self, hook_dir: Path) -> None:
        """More than the payload limit on stdin exits 65."""
        stdin = b"\x00" * (MAX_PAYLOAD_BYTES + 1)
        done = run_hook(write_hook(hook_dir, ECHO), stdin)
        assert done.returncode == ExitClass.BAD_PAYLOAD.value

    @pytest.mark.parametrize(
        "env",
        [
            pytest.param({"ROLECALL_ENCODING": "xml"}, id="encoding"),
            pytest.param({"ROLECALL_HOOK_MODE": "cgi"}, id="mode"),
        ],
    )
    def test_bad_environment(self, hook_dir: Path, env: dict[str, str]) -> None:
        """An encoding or mode the SDK does not know exits 65."""
        done = run_hook(
            write_hook(hook_dir, ECHO), encode_payload(role_payload()), **env
        )
        assert done.returncode == ExitClass.BAD_PAYLOAD.value
        assert done.stdout == b""


class TestNanobox:
    """Nanobox mode: JSON payload in argv, only plan prints (bare JSON)."""

    def argv(self, hook: HookName) -> tuple[str, ...]:
        """Return the arguments a Nanobox-style hook is run with."""
        return (json.dumps(payload_to_wire(role_payload(hook))),)

    def test_plan_prints_bare_json(self, hook_dir: Path) -> None:
        """The plan hook prints its data as bare JSON and exits 0."""
        body = """
        def handler(ctx):
            return {"roles": ["standalone"], "topologies": ["standalone"]}
        """
        script = write_hook(hook_dir, body, name="plan", block=("msgpack",))
        done = run_hook(
            script, args=self.argv(HookName.PLAN), ROLECALL_HOOK_MODE="nanobox"
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {
            "roles": ["standalone"],
            "topologies": ["standalone"],
        }

    def test_other_hooks_print_nothing(self, hook_dir: Path) -> None:
        """Hooks other than plan leave stdout empty."""
        script = write_hook(hook_dir, ECHO, block=("msgpack",))
        done = run_hook(
            script, args=self.argv(HookName.ROLE), ROLECALL_HOOK_MODE="nanobox"
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout == b""

    def test_json_even_if_msgpack_asked(self, hook_dir: Path) -> None:
        """Nanobox mode reads JSON whatever ROLECALL_ENCODING says."""
        script = write_hook(hook_dir, ECHO, block=("msgpack",))
        done = run_hook(
            script,
            args=self.argv(HookName.ROLE),
            ROLECALL_HOOK_MODE="nanobox",
            ROLECALL_ENCODING="msgpack",
        )
        assert done.returncode == 0, done.stderr

    def test_failure_prints_nothing(self, hook_dir: Path) -> None:
        """A typed failure keeps its exit code and leaves stdout empty."""
        body = "def handler(ctx):\n    raise rolecall_hook.RetryLater('loading')\n"
        done = run_hook(
            write_hook(hook_dir, body),
            args=self.argv(HookName.ROLE),
            ROLECALL_HOOK_MODE="nanobox",
        )
        assert done.returncode == ExitClass.RETRY_LATER.value
        assert done.stdout == b""

    @pytest.mark.parametrize(
        "args", [pytest.param((), id="no-argument"), pytest.param(("{",), id="bad")]
    )
    def test_bad_argument(self, hook_dir: Path, args: tuple[str, ...]) -> None:
        """A missing or broken JSON argument exits 65."""
        done = run_hook(
            write_hook(hook_dir, ECHO), args=args, ROLECALL_HOOK_MODE="nanobox"
        )
        assert done.returncode == ExitClass.BAD_PAYLOAD.value


class TestModule:
    """The SDK file itself: what it needs and what it agrees with."""

    def test_constants_match_protocol(self) -> None:
        """The SDK's copies of the protocol's numbers equal the originals."""
        assert rolecall_hook.PROTOCOL_VERSION == PROTOCOL_VERSION
        assert rolecall_hook.MAX_PAYLOAD_BYTES == MAX_PAYLOAD_BYTES
        assert rolecall_hook.MAX_RESULT_BYTES == MAX_RESULT_BYTES
        assert ExitClass.OK.value == rolecall_hook.EXIT_OK
        assert ExitClass.BAD_PAYLOAD.value == rolecall_hook.EXIT_BAD_PAYLOAD
        assert ExitClass.UNSUPPORTED.value == rolecall_hook.EXIT_UNSUPPORTED
        assert ExitClass.RETRY_LATER.value == rolecall_hook.EXIT_RETRY_LATER

    def test_exception_codes(self) -> None:
        """Each exception carries the exit code the protocol gives it."""
        assert rolecall_hook.HookFailed.exit_code == 1
        assert rolecall_hook.BadPayload.exit_code == ExitClass.BAD_PAYLOAD.value
        assert rolecall_hook.Unsupported.exit_code == ExitClass.UNSUPPORTED.value
        assert rolecall_hook.RetryLater.exit_code == ExitClass.RETRY_LATER.value

    def test_imports_only_stdlib_and_msgpack(self) -> None:
        """The SDK imports nothing a minimal Python image lacks."""
        tree = ast.parse(SDK_FILE.read_text(encoding="utf-8"))
        imported: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)

            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0])

        allowed = set(sys.stdlib_module_names) | {"msgpack", "__future__"}
        assert imported <= allowed

    def test_context_epoch(self) -> None:
        """ctx.epoch is the member's epoch, 0 when the payload has none."""
        context = rolecall_hook.Context(
            hook="role", payload={}, member={"id": "cache-1", "epoch": 7}
        )
        assert context.epoch == 7
        bare = rolecall_hook.Context(hook="role", payload={}, member={})
        assert bare.epoch == 0
