"""Adopted members are configured once with the spec they are adopted under:
a spec edited while no control plane ran, or a reconfigure a crash cut
short, reaches every member, replicas first and the writer last."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from attrs import evolve
from supervisor_support import (
    LIMIT,
    PROBE,
    converged,
    event_kinds,
    kv_runtime,
    service_spec,
    until,
)

from rolecall.hooks_protocol import HookName
from rolecall.supervisor import ServiceEvent, ServiceSpec, open_supervisor
from rolecall.testing import FakeHookCall, FakeRuntime, fake_kv_image

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

OLD, NEW = "old-pw-5120", "new-pw-7734"  # made-up secrets to hunt for
MEMBERS = ("cache-1", "cache-2", "cache-3")
_QUICK = {"backoff_first": 0.01, "backoff_cap": 0.05}


def _secured(password: str, **options: Any) -> ServiceSpec:
    return service_spec(
        topology="redundant",
        replicas=2,
        env={"PASSWORD": password},
        secret_keys=frozenset({"PASSWORD"}),
        supervision=_QUICK,
        **options,
    )


def _passwords(runtime: FakeRuntime) -> list[Any]:
    return [
        runtime.volume_data(f"rolecall-{member}-data")["password"] for member in MEMBERS
    ]


def _configured(timeline: list[ServiceEvent]) -> list[tuple[str | None, Any]]:
    return [
        (e.member, e.fields["reason"])
        for e in timeline
        if e.kind == "member_configured"
    ]


def _roles(supervisor: Any) -> list[tuple[str, Any, int, str | None, str]]:
    status = supervisor.status("cache")
    return [
        (m.id, m.role, m.epoch, m.following, m.container_id) for m in status.members
    ]


class TestAdoptedMembersAreConfigured:
    """The first pass after adoption runs configure on every running member."""

    async def test_a_spec_edited_while_no_control_plane_ran_is_applied(
        self, tmp_path: Path
    ) -> None:
        """A password changed between two control planes reaches every
        member (replicas first, the writer last), with no role sent, no
        container made, and no secret written to the journal."""
        runtime = kv_runtime()
        with anyio.fail_after(LIMIT):
            async with (
                open_supervisor(
                    runtime, probe_interval=PROBE, state_dir=tmp_path
                ) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(_secured(OLD))
                await converged(supervisor, events)
                before = _roles(supervisor)

            async with (
                open_supervisor(
                    runtime, probe_interval=PROBE, state_dir=tmp_path
                ) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(_secured(NEW))
                timeline = await until(events, "converged")
                after = _roles(supervisor)

        files = [path for path in tmp_path.rglob("*") if path.is_file()]  # noqa: ASYNC240  (a test's look at its own tmp files)
        assert _configured(timeline) == [
            ("cache-2", "adopted"),
            ("cache-3", "adopted"),
            ("cache-1", "adopted"),
        ]
        assert {kind for kind, _ in event_kinds(timeline)} == {
            "member_adopted",
            "member_configured",
            "converged",
        }
        assert _passwords(runtime) == [NEW, NEW, NEW]
        assert after == before
        assert NEW not in repr(timeline)
        assert any(path.suffix == ".rec" for path in files)
        assert not [path for path in files if NEW.encode() in path.read_bytes()]

    async def test_a_reconfigure_cut_short_is_finished_by_the_next_one(
        self, tmp_path: Path
    ) -> None:
        """A control plane that stops while it configures the second member
        leaves passwords mixed; the next one, on the same spec, configures
        them all with it, the writer last."""
        hooks = fake_kv_image()
        reached = anyio.Event()
        hold = [True]

        async def configure(call: FakeHookCall) -> Any:
            env = call.payload.get("env") or {}
            held = hold[0] and env.get("PASSWORD") == NEW
            if held and call.container.name == "rolecall-cache-3":
                reached.set()
                await anyio.sleep_forever()

            return hooks[HookName.CONFIGURE](call)

        runtime = kv_runtime(slow={**hooks, HookName.CONFIGURE: configure})
        with anyio.fail_after(LIMIT):
            async with (
                open_supervisor(
                    runtime, probe_interval=PROBE, state_dir=tmp_path
                ) as supervisor,
                supervisor.open_timeline() as events,
            ):
                spec = _secured(OLD, image="slow:fake")
                await supervisor.apply(spec)
                await converged(supervisor, events)
                before = _roles(supervisor)
                await supervisor.apply(evolve(spec, env={"PASSWORD": NEW}))
                await reached.wait()

            mixed = _passwords(runtime)
            hold[0] = False
            async with (
                open_supervisor(
                    runtime, probe_interval=PROBE, state_dir=tmp_path
                ) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(evolve(spec, env={"PASSWORD": NEW}))
                timeline = await until(events, "converged")
                after = _roles(supervisor)

        assert mixed == [OLD, NEW, OLD]
        assert [member for member, _ in _configured(timeline)] == [
            "cache-2",
            "cache-3",
            "cache-1",
        ]
        assert "role_applied" not in [kind for kind, _ in event_kinds(timeline)]
        assert _passwords(runtime) == [NEW, NEW, NEW]
        assert after == before

    async def test_a_member_adopted_stopped_is_configured_when_prepared(
        self,
    ) -> None:
        """A replica found stopped is started and prepared with the current
        spec (its member_prepared, not a second configure), then follows."""
        runtime = kv_runtime()
        with anyio.fail_after(LIMIT):
            async with (
                open_supervisor(runtime, probe_interval=PROBE) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(_secured(OLD))
                first = await converged(supervisor, events)

            runtime.crash(first.member("cache-3").container_id)
            async with (
                open_supervisor(runtime, probe_interval=PROBE) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(_secured(NEW))
                timeline = await until(events, "converged")
                status = supervisor.status("cache")

        kinds = event_kinds(timeline)
        assert ("member_prepared", "cache-3") in kinds
        assert [member for member, _ in _configured(timeline)] == [
            "cache-2",
            "cache-1",
        ]
        assert _passwords(runtime) == [NEW, NEW, NEW]
        assert status.member("cache-3").following == "cache-1"
        assert status.member("cache-3").healthy
