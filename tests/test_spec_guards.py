"""Guards on what a spec may ask and on what the runner reports: reserved
labels, empty files, memory beyond the engine, secrets quoted back, removed
containers, unknown services, and the state directory's mode."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest
from attrs import define
from supervisor_support import KV, LIMIT, PROBE, kv_runtime, service_spec, until
from test_control_api import request, running

from rolecall._errors import ControlError, RunnerError, SpecFileError
from rolecall._spec_file import load_spec_file
from rolecall._state_dir import hold_state_dir
from rolecall.actors import ContainerInfo, ContainerSpec, ContainerState
from rolecall.hooks_protocol import EngineError, SpecError
from rolecall.supervisor import open_supervisor, validate_spec
from rolecall.supervisor._observing import loss_cause
from rolecall.testing import FakeRuntime, fake_kv_image

pytestmark = pytest.mark.timeout(60)

SECRET = "hunter2-zz9"  # noqa: S105  (a made-up secret to hunt for)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(text, encoding="utf-8")
    return path


class TestSpecShape:
    """What a spec may not ask for, and how the refusal reads."""

    @pytest.mark.parametrize("key", ["io.rolecall.managed", "io.rolecall.number"])
    def test_a_reserved_label_is_refused(self, key: str) -> None:
        """A label rolecall sets itself is refused, not silently dropped."""
        with pytest.raises(SpecError) as caught:
            validate_spec(service_spec(labels={"team": "web", key: "x"}))

        assert str(caught.value) == (
            f"service 'cache' sets label {key!r}, which rolecall sets itself"
            " (io.rolecall.engine, io.rolecall.managed, io.rolecall.member,"
            " io.rolecall.number, io.rolecall.service): rename it"
        )

    def test_other_labels_under_the_prefix_are_kept(self) -> None:
        """A label of the project's own namespace that rolecall does not set
        (tests and the demo use some) passes."""
        spec = service_spec(labels={"io.rolecall.demo": "true"})

        assert validate_spec(spec).labels == {"io.rolecall.demo": "true"}

    def test_a_reserved_label_in_a_spec_file_names_the_key(
        self, tmp_path: Path
    ) -> None:
        """The spec file's error names the service table and the label."""
        text = (
            '[services.cache]\nimage = "kv:fake"\n'
            'labels = { "io.rolecall.service" = "1" }\n'
        )
        with pytest.raises(SpecFileError) as caught:
            load_spec_file(_write(tmp_path, text))

        assert caught.value.key == "services.cache"
        assert "sets label 'io.rolecall.service'" in str(caught.value)

    @pytest.mark.parametrize("text", ["", "[services]\n"])
    def test_a_file_without_services_is_refused(
        self, tmp_path: Path, text: str
    ) -> None:
        """A spec file that names no service is an error, not an empty plan."""
        path = _write(tmp_path, text)
        with pytest.raises(SpecFileError) as caught:
            load_spec_file(path)

        assert caught.value.key == "services"
        assert str(caught.value) == (
            f"{path}: the file names no service: add a [services.NAME] table"
            " (examples/cache.toml shows one)"
        )

    def test_a_secret_quoted_under_another_key_is_masked(self, tmp_path: Path) -> None:
        """A bad value equal to a secret shows as *** in the file's error."""
        text = (
            '[services.cache]\nimage = "kv:fake"\n'
            f'memory_limit = "{SECRET}"\n'
            f'secret = ["TOKEN"]\nenv = {{ TOKEN = "{SECRET}" }}\n'
        )
        with pytest.raises(SpecFileError) as caught:
            load_spec_file(_write(tmp_path, text))

        assert SECRET not in str(caught.value)
        assert "services.cache.memory_limit must be bytes" in str(caught.value)
        assert "got '***'" in str(caught.value)
        assert caught.value.__cause__ is None

    def test_a_secret_in_another_key_is_masked_in_spec_errors(self) -> None:
        """validate_spec masks a secret value that its message quotes."""
        spec = service_spec(
            timeouts={"status": SECRET},
            env={"TOKEN": SECRET},
            secret_keys=frozenset({"TOKEN"}),
        )
        with pytest.raises(SpecError) as caught:
            validate_spec(spec)

        assert SECRET not in str(caught.value)
        assert "has timeout '***' for hook 'status'" in str(caught.value)


@pytest.mark.anyio
class TestEngineBounds:
    """Limits checked against the engine before anything is created."""

    async def test_a_memory_limit_above_the_engine_is_refused(self) -> None:
        """apply refuses a limit above the engine's memory; nothing is made."""
        runtime = kv_runtime()
        runtime.memory = 1 << 30
        with anyio.fail_after(LIMIT):
            async with open_supervisor(runtime, probe_interval=PROBE) as supervisor:
                with pytest.raises(SpecError) as caught:
                    await supervisor.apply(service_spec(memory_limit=2 << 30))
                managed = sorted(supervisor.controllers)
        made = await runtime.list_containers(labels={"io.rolecall.managed": "true"})

        assert str(caught.value) == (
            "service 'cache' has memory_limit 2147483648 bytes, more than the"
            " engine's 1073741824 bytes of memory: lower it (or leave it out)"
        )
        assert managed == []
        assert made == []

    async def test_failed_creates_do_not_use_up_member_numbers(self) -> None:
        """A create the engine refused is retried as the same member."""
        runtime = _RefusingRuntime(refusals=2)
        runtime.add_image(KV, hooks=fake_kv_image())
        with anyio.fail_after(LIMIT):
            async with open_supervisor(runtime, probe_interval=PROBE) as supervisor:
                await supervisor.apply(service_spec(supervision=_QUICK))
                status = await supervisor.wait_converged("cache", timeout=LIMIT)

        assert runtime.refused == 2
        assert [m.id for m in status.members] == ["cache-1"]
        assert status.members[0].container_name == "rolecall-cache-1"


_QUICK = {"backoff_first": 0.01, "backoff_cap": 0.02}


@define(eq=False, kw_only=True)
class _RefusingRuntime(FakeRuntime):
    """A fake engine that refuses the first few member containers."""

    # Member containers still to refuse, and how many were.
    refusals: int = 0
    refused: int = 0

    async def create_container(self, spec: ContainerSpec) -> ContainerInfo:
        if spec.labels.get("io.rolecall.managed") == "true" and self.refusals:
            self.refusals -= 1
            self.refused += 1
            raise EngineError("the engine refused the container (a test's fault)")

        return await super().create_container(spec)


@pytest.mark.anyio
class TestReports:
    """What the runner says about removed containers and unknown services."""

    async def test_a_removed_member_is_reported_as_removed(self) -> None:
        """docker rm -f of a member is a removal, not a crash with no code."""
        runtime = kv_runtime()
        with anyio.fail_after(LIMIT):
            async with open_supervisor(runtime, probe_interval=PROBE) as supervisor:
                await supervisor.apply(service_spec())
                status = await supervisor.wait_converged("cache")
                async with supervisor.open_timeline() as events:
                    await runtime.remove_container(status.members[0].container_id)
                    seen = await until(events, "member_lost")

        lost = seen[-1]
        assert lost.detail == "container removed from the engine (not by rolecall)"
        assert lost.fields["cause"] == "removed"

    def test_a_container_being_removed_counts_as_removed(self) -> None:
        """A container the engine is removing has no exit code to report."""
        info = ContainerInfo(
            id="c1",
            name="rolecall-cache-1",
            image="kv:fake",
            state=ContainerState.REMOVING,
        )

        assert loss_cause(info) == "removed"
        assert loss_cause(None) == "removed"

    async def test_events_of_an_unknown_service_are_an_error(
        self, tmp_path: Path
    ) -> None:
        """events for a service the runner never knew answers unknown_service."""
        async with running(tmp_path) as lab:
            with pytest.raises(ControlError) as caught:
                await request(lab, "events", service="nope")
            known = await request(lab, "events", service="cache", backlog=1)
            await request(lab, "down", service="cache", confirm="cache")
            after_down = await request(lab, "events", service="cache", backlog=1)

        assert caught.value.code == "unknown_service"
        assert str(caught.value) == (
            "the runner manages no service named 'nope' (known: cache)"
        )
        assert known == {"count": 1}
        assert after_down == {"count": 1}


class TestStateDirMode:
    """The state directory is private to the runner's user."""

    def test_a_wider_existing_directory_is_made_private(self, tmp_path: Path) -> None:
        """An existing directory with mode 0755 is set to 0700."""
        state = tmp_path / "state"
        state.mkdir(mode=0o755)
        state.chmod(0o755)
        with hold_state_dir(state):
            mode = state.stat().st_mode & 0o777

        assert mode == 0o700

    @pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
    def test_a_directory_of_another_user_is_refused(self, tmp_path: Path) -> None:
        """A directory owned by another user is refused and left as it is."""
        state = tmp_path / "state"
        state.mkdir(mode=0o755)
        state.chmod(0o755)
        os.chown(state, 4242, 4242)
        with pytest.raises(RunnerError) as caught, hold_state_dir(state):
            pass
        mode = state.stat().st_mode & 0o777

        assert str(caught.value) == (
            f"the state directory {str(state)!r} belongs to user 4242, not to"
            f" this one ({os.geteuid()}): pick one of your own with --state-dir"
        )
        assert mode == 0o755
