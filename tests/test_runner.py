"""The runner on the in-memory runtime: reloads, released services, the
state directory's lock, and secrets kept out of the log."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs
from supervisor_support import LIMIT
from test_control_api import SPEC, running

from rolecall._crash_switch import crash_switch
from rolecall._errors import RunnerError, StateDirLockedError
from rolecall._logging import Redactor, configure_logging
from rolecall._spec_file import load_spec_file
from rolecall._state_dir import default_state_dir, hold_state_dir
from rolecall.hooks_protocol import Topology

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

TWO = (
    SPEC
    + """
[services.queue]
image = "kv:fake"
"""
)


class TestReload:
    """SIGHUP's reload reconciles to the file, or keeps the state."""

    async def test_a_changed_entry_is_applied(self, tmp_path: Path) -> None:
        """An entry changed in the file is applied and reconciled to."""
        async with running(tmp_path) as lab:
            lab.spec_path.write_text(
                SPEC + 'topology = "redundant"\n', encoding="utf-8"
            )
            accepted = await lab.runner.reload()
            status = await lab.runner.supervisor.wait_converged("cache", timeout=LIMIT)

        assert accepted is True
        assert status.topology is Topology.REDUNDANT
        assert [m.id for m in status.members] == ["cache-1", "cache-2"]

    async def test_an_unchanged_entry_keeps_a_conversion(self, tmp_path: Path) -> None:
        """A service whose entry did not change keeps what the API made it."""
        async with running(tmp_path) as lab:
            await lab.runner.supervisor.convert("cache", "redundant", timeout=LIMIT)
            lab.spec_path.write_text(TWO, encoding="utf-8")
            with capture_logs() as logs:
                accepted = await lab.runner.reload()
            cache = lab.runner.supervisor.status("cache")
            queue = await lab.runner.supervisor.wait_converged("queue", timeout=LIMIT)

        (reloaded,) = [line for line in logs if line["event"] == "spec_reloaded"]
        assert accepted is True
        assert cache.topology is Topology.REDUNDANT
        assert queue.topology is Topology.STANDALONE
        assert (reloaded["applied"], reloaded["services"]) == (
            ["queue"],
            ["cache", "queue"],
        )

    async def test_a_changed_entry_says_it_replaces_a_conversion(
        self, tmp_path: Path
    ) -> None:
        """An edit to a converted service's entry logs the shape it undoes."""
        async with running(tmp_path) as lab:
            await lab.runner.supervisor.convert("cache", "redundant", timeout=LIMIT)
            lab.spec_path.write_text(
                SPEC + 'config = { maxmemory = "64mb" }\n', encoding="utf-8"
            )
            with capture_logs() as logs:
                accepted = await lab.runner.reload()
            status = await lab.runner.supervisor.wait_converged("cache", timeout=LIMIT)

        (warned,) = [line for line in logs if line["event"] == "conversion_replaced"]
        assert accepted is True
        assert status.topology is Topology.STANDALONE
        assert (warned["service"], warned["converted_to"], warned["file_asks"]) == (
            "cache",
            "redundant with 1 replica(s)",
            "standalone",
        )

    async def test_a_changed_entry_asking_the_converted_shape_is_quiet(
        self, tmp_path: Path
    ) -> None:
        """An edit that asks for the shape a convert made undoes nothing."""
        async with running(tmp_path) as lab:
            await lab.runner.supervisor.convert("cache", "redundant", timeout=LIMIT)
            lab.spec_path.write_text(
                SPEC + 'topology = "redundant"\n', encoding="utf-8"
            )
            with capture_logs() as logs:
                accepted = await lab.runner.reload()

        assert accepted is True
        assert [line for line in logs if line["event"] == "conversion_replaced"] == []

    async def test_a_service_gone_from_the_file_is_left_running(
        self, tmp_path: Path
    ) -> None:
        """A service dropped from the file is no longer managed; it runs on."""
        async with running(tmp_path, TWO) as lab:
            lab.spec_path.write_text(SPEC, encoding="utf-8")
            accepted = await lab.runner.reload()
            managed = sorted(lab.runner.supervisor.controllers)
            containers = await lab.runtime.list_containers(labels={})

        assert accepted is True
        assert managed == ["cache"]
        assert sorted(c.name for c in containers) == [
            "rolecall-cache-1",
            "rolecall-queue-1",
        ]

    @pytest.mark.parametrize(
        ("text", "words"),
        [
            pytest.param("[services.cache\n", "is not valid TOML", id="not-toml"),
            pytest.param(
                SPEC + "replicas = 0\n", "asks for 0 replicas", id="bad-value"
            ),
            pytest.param(
                '[services.cache]\nimage = "other:fake"\n',
                "changing the image of a running service is not supported",
                id="image-change",
            ),
            pytest.param(
                '[services.cache]\nimage = "kv:fake"\n[services.x]\nimage = "nope"\n',
                "image 'nope' of service 'x' is not on the engine",
                id="one-bad-service",
            ),
        ],
    )
    async def test_a_bad_file_is_rejected_and_the_state_kept(
        self, tmp_path: Path, text: str, words: str
    ) -> None:
        """A file with errors changes nothing and is logged as rejected."""
        async with running(tmp_path) as lab:
            before = lab.runner.entries
            lab.spec_path.write_text(text, encoding="utf-8")
            with capture_logs() as logs:
                accepted = await lab.runner.reload()
            managed = sorted(lab.runner.supervisor.controllers)
            after = lab.runner.entries

        (rejected,) = [line for line in logs if line["event"] == "spec_rejected"]
        assert accepted is False
        assert managed == ["cache"]
        assert after == before
        assert words in rejected["error"]
        assert rejected["kept"] == ["cache"]
        assert rejected["log_level"] == "error"

    async def test_a_service_left_running_is_adopted_when_it_comes_back(
        self, tmp_path: Path
    ) -> None:
        """A service whose containers outlived its management is adopted,
        not doubled: same container, same role, no new member."""
        async with running(tmp_path, TWO) as lab:
            before = lab.runner.supervisor.status("queue")
            await lab.runner.supervisor.release("queue")
            lab.runner.entries.pop("queue")
            await lab.runner.load(load_spec_file(lab.spec_path))
            after = await lab.runner.supervisor.wait_converged("queue", timeout=LIMIT)
            containers = await lab.runtime.list_containers(
                labels={"io.rolecall.service": "queue"}
            )

        assert [c.name for c in containers] == ["rolecall-queue-1"]
        assert [(m.id, m.container_id, m.role) for m in after.members] == [
            (m.id, m.container_id, m.role) for m in before.members
        ]
        assert after.epoch == before.epoch


class TestSecrets:
    """Values marked secret never reach a log line."""

    async def test_a_secret_is_masked_in_every_line(self, tmp_path: Path) -> None:
        """The runner's log masks secret values wherever they appear."""
        secret_spec = SPEC + 'secret = ["TOKEN"]\nenv = { TOKEN = "hunter2-xyz" }\n'
        out = io.StringIO()
        redactor = Redactor()
        configure_logging("debug", stream=out, redactor=redactor)
        try:
            async with running(tmp_path, secret_spec) as lab:
                redactor.update(lab.runner.secrets)
                structlog.get_logger("test").warning(
                    "quoted", text="token=hunter2-xyz", nested={"k": ["hunter2-xyz"]}
                )
        finally:
            structlog.reset_defaults()

        lines = [json.loads(line) for line in out.getvalue().splitlines()]
        (quoted,) = [line for line in lines if line["event"] == "quoted"]
        assert "hunter2-xyz" not in out.getvalue()
        assert (quoted["text"], quoted["nested"]) == ("token=***", {"k": ["***"]})
        assert any(line["event"] == "converged" for line in lines)


class TestStateDir:
    """The state directory: where it is, and one runner at a time."""

    def test_a_second_holder_is_refused_with_the_pid(self, tmp_path: Path) -> None:
        """A second runner on the same state directory is refused clearly."""
        with (
            hold_state_dir(tmp_path / "state"),
            pytest.raises(StateDirLockedError) as caught,
            hold_state_dir(tmp_path / "state"),
        ):
            pass
        mode = (tmp_path / "state").stat().st_mode & 0o777

        assert caught.value.pid == os.getpid()
        assert str(caught.value) == (
            f"another runner (pid {os.getpid()}) holds the state directory"
            f" {str(tmp_path / 'state')!r}: stop it first, or give this one its"
            " own directory with --state-dir"
        )
        assert mode == 0o700

    def test_the_lock_is_free_again_after_the_block(self, tmp_path: Path) -> None:
        """Leaving the block lets the next runner take the directory."""
        with hold_state_dir(tmp_path):
            pass
        with hold_state_dir(tmp_path):
            held = (tmp_path / "runner.lock").read_text(encoding="utf-8")

        assert held == f"{os.getpid()}\n"

    def test_the_directory_follows_the_documented_order(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """--state-dir, then ROLECALL_STATE_DIR, then root's or XDG's."""
        monkeypatch.setenv("ROLECALL_STATE_DIR", str(tmp_path / "env"))
        monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
        chosen = default_state_dir(tmp_path / "flag")
        from_env = default_state_dir()
        monkeypatch.delenv("ROLECALL_STATE_DIR")
        monkeypatch.setattr(os, "geteuid", lambda: 1000)
        as_user = default_state_dir()
        monkeypatch.setattr(os, "geteuid", lambda: 0)
        as_root = default_state_dir()

        assert chosen == tmp_path / "flag"
        assert from_env == tmp_path / "env"
        assert as_user == tmp_path / "xdg" / "rolecall"
        assert as_root == Path("/var/lib/rolecall")


class TestCrashSwitch:
    """The test aid that kills the runner after a chosen step."""

    def test_unset_it_does_nothing(self) -> None:
        """Without the variable there is no observer at all."""
        assert crash_switch({}) is None

    @pytest.mark.parametrize("setting", ["#2", "role_applied#x", "role_applied#0"])
    def test_a_bad_setting_is_refused(self, setting: str) -> None:
        """A setting that is not ``kind`` or ``kind#n`` is refused, naming it."""
        with pytest.raises(RunnerError) as refused:
            crash_switch({"ROLECALL_CRASH_AFTER": setting})

        assert str(refused.value).startswith(f"ROLECALL_CRASH_AFTER={setting!r}:")
