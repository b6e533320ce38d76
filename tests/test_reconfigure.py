"""A changed config, env or member list reaches running members; a replica
whose link is down is unhealthy and told its role again; changes running
containers cannot take are refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from attrs import evolve
from structlog.testing import capture_logs
from supervisor_support import (
    LIMIT,
    PROBE,
    converged,
    event_kinds,
    expected_keys,
    keys_of,
    kv_runtime,
    service_spec,
    until,
    write_keys,
)
from test_control_api import SPEC, running

from rolecall._spec_file import load_spec_file
from rolecall.actors import Probe
from rolecall.hooks_protocol import HookName, Role, SpecError
from rolecall.supervisor import ServiceEvent, ServiceSpec, open_supervisor
from rolecall.testing import FakeHookCall, FakeHookExit, FakeRuntime, fake_kv_image

pytestmark = pytest.mark.anyio

OLD, NEW = "old-pw-4411", "new-pw-9182"  # made-up secrets to hunt for
OTHER = "other-pw-0"  # a password the replicas do not have
_QUICK = {"backoff_first": 0.01, "backoff_cap": 0.05}


def _secured(**options: Any) -> ServiceSpec:
    options.setdefault("env", {"PASSWORD": OLD})
    options.setdefault("supervision", _QUICK)
    return service_spec(
        topology="redundant", secret_keys=frozenset({"PASSWORD"}), **options
    )


def _password(runtime: FakeRuntime, member: str) -> Any:
    return runtime.volume_data(f"rolecall-{member}-data")["password"]


def _configured(timeline: list[ServiceEvent]) -> list[str | None]:
    return [e.member for e in timeline if e.kind == "member_configured"]


class TestConfigReachesRunningMembers:
    """configure runs again on every running member, the writer last."""

    async def test_a_password_change_reaches_every_member_writer_last(
        self,
    ) -> None:
        """New env: replicas, then the writer, are configured; a replica
        restarted afterwards authenticates and replicates."""
        runtime = kv_runtime()
        spec = _secured(replicas=2)
        with anyio.fail_after(LIMIT):
            async with (
                open_supervisor(runtime, probe_interval=PROBE) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(spec)
                await converged(supervisor, events)
                await supervisor.apply(evolve(spec, env={"PASSWORD": NEW}))
                changed = await until(events, "converged")
                passwords = [_password(runtime, f"cache-{n}") for n in (1, 2, 3)]
                status = supervisor.status("cache")
                runtime.crash(status.member("cache-2").container_id)
                await until(events, "member_lost")
                await until(events, "converged")
                status = supervisor.status("cache")
                write_keys(runtime, status, range(5))
                controller = supervisor.controllers["cache"]
                report = await controller.members["cache-2"].ref.ask(
                    Probe(controller.view()), timeout=LIMIT
                )
                replica = supervisor.status("cache").member("cache-2")

        assert _configured(changed) == ["cache-2", "cache-3", "cache-1"]
        assert {e.detail for e in changed if e.kind == "member_configured"} == {
            "ran configure: env changed"
        }
        assert passwords == [NEW, NEW, NEW]
        assert status.converged
        assert replica.healthy
        assert report.link_up is True
        assert keys_of(runtime, status, "cache-2") == expected_keys(range(5))
        assert OLD not in repr(changed)
        assert NEW not in repr(changed)

    async def test_without_reconfiguring_a_new_replica_could_not_follow(
        self,
    ) -> None:
        """A replica whose primary has another password is unhealthy, the
        service degraded and never converged, until the primary matches."""
        runtime = kv_runtime()
        with anyio.fail_after(LIMIT):
            async with (
                open_supervisor(runtime, probe_interval=PROBE) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(_secured())
                before = await converged(supervisor, events)
                primary_disk = runtime.volume_data("rolecall-cache-1-data")
                primary_disk["password"] = OTHER
                degraded = (await until(events, "degraded"))[-1]
                during = supervisor.status("cache")
                primary_disk["password"] = OLD
                after = await converged(supervisor, events)

        assert before.member("cache-2").healthy
        assert degraded.fields["link_down"] == ["cache-2"]
        assert "lost their link to the primary (cache-2)" in degraded.detail
        assert not during.converged
        assert not during.member("cache-2").healthy
        assert after.converged
        assert after.member("cache-2").healthy

    async def test_a_replica_whose_link_stays_down_is_told_its_role_again(
        self,
    ) -> None:
        """Past unresponsive_after, the replica gets its role anew."""
        runtime = kv_runtime()
        supervision = {**_QUICK, "unresponsive_after": 0.2}
        with anyio.fail_after(LIMIT):
            async with (
                open_supervisor(runtime, probe_interval=PROBE) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(_secured(supervision=supervision))
                before = await converged(supervisor, events)
                runtime.volume_data("rolecall-cache-1-data")["password"] = OTHER
                timeline = await until(events, "role_applied")
                runtime.volume_data("rolecall-cache-1-data")["password"] = OLD
                after = await converged(supervisor, events)

        retold = timeline[-1]
        assert (retold.member, retold.detail) == ("cache-2", "role replica of cache-1")
        assert retold.fields["epoch"] > before.epoch
        assert "degraded" in [kind for kind, _ in event_kinds(timeline)]
        assert after.member("cache-2").healthy

    async def test_a_member_joining_reconfigures_the_others(self) -> None:
        """After a conversion the old member's configure saw the new member."""
        seen: dict[str, list[str]] = {}
        hooks = fake_kv_image()

        def configure(call: FakeHookCall) -> Any:
            members = call.payload.get("members") or []
            seen[call.container.name] = [m["id"] for m in members]
            return hooks[HookName.CONFIGURE](call)

        runtime = kv_runtime(watch={**hooks, HookName.CONFIGURE: configure})
        with anyio.fail_after(LIMIT):
            async with (
                open_supervisor(runtime, probe_interval=PROBE) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(service_spec(image="watch:fake"))
                await converged(supervisor, events)
                await supervisor.convert("cache", "redundant")
                timeline = await until(events, "converged")

        configured = [e for e in timeline if e.kind == "member_configured"]
        assert [(e.member, e.detail) for e in configured] == [
            ("cache-1", "ran configure: cache-2 joined")
        ]
        assert seen["rolecall-cache-1"] == ["cache-1", "cache-2"]

    async def test_a_configure_that_asks_for_it_gets_its_role_again(
        self,
    ) -> None:
        """reapply_role in configure's data: the role is told again, under a
        new epoch, once every member is configured."""
        hooks = fake_kv_image()

        def configure(call: FakeHookCall) -> Any:
            hooks[HookName.CONFIGURE](call)
            return {"reapply_role": True}

        runtime = kv_runtime(again={**hooks, HookName.CONFIGURE: configure})
        spec = service_spec(image="again:fake", topology="redundant")
        with anyio.fail_after(LIMIT):
            async with (
                open_supervisor(runtime, probe_interval=PROBE) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(spec)
                before = await converged(supervisor, events)
                await supervisor.apply(evolve(spec, config={"maxmemory": "1mb"}))
                timeline = await until(events, "converged")
                after = supervisor.status("cache")

        assert [(e.kind, e.member) for e in timeline if e.kind != "converged"] == [
            ("member_configured", "cache-2"),
            ("member_configured", "cache-1"),
            ("role_applied", "cache-2"),
            ("role_applied", "cache-1"),
        ]
        assert [e.detail for e in timeline if e.kind == "role_applied"] == [
            "role replica of cache-1, again after configure",
            "role primary, again after configure",
        ]
        assert after.epoch == before.epoch + 2
        assert [(m.id, m.role) for m in after.members] == [
            ("cache-1", Role.PRIMARY),
            ("cache-2", Role.REPLICA),
        ]

    async def test_a_failing_configure_does_not_hold_up_a_failover(self) -> None:
        """A config every configure refuses fails passes, yet a lost primary
        is still replaced at once."""
        hooks = fake_kv_image()

        def configure(call: FakeHookCall) -> Any:
            if (call.payload.get("config") or {}).get("broken"):
                raise FakeHookExit(65, stderr="configure: broken is not a setting")
            return hooks[HookName.CONFIGURE](call)

        runtime = kv_runtime(picky={**hooks, HookName.CONFIGURE: configure})
        spec = service_spec(
            image="picky:fake", topology="redundant", supervision=_QUICK
        )
        with anyio.fail_after(LIMIT):
            async with (
                open_supervisor(runtime, probe_interval=PROBE) as supervisor,
                supervisor.open_timeline() as events,
            ):
                await supervisor.apply(spec)
                before = await converged(supervisor, events)
                await supervisor.apply(evolve(spec, config={"broken": True}))
                failed = (await until(events, "step_failed"))[-1]
                runtime.crash(before.member("cache-1").container_id)
                timeline = await until(events, "failover")
                after = supervisor.status("cache")

        assert "hook 'configure' of member 'cache-2'" in failed.detail
        assert timeline[-1].member == "cache-2"
        assert after.primary == "cache-2"
        assert not after.converged


class TestRefusedChanges:
    """Changes fixed in a container when it is made are refused."""

    @pytest.mark.parametrize(
        ("change", "words"),
        [
            ({"memory_limit": 64 << 20}, "runs with memory limit None"),
            ({"labels": {"team": "web"}}, "runs with labels {}"),
            ({"image": "other:fake"}, "runs with image 'kv:fake'"),
        ],
    )
    async def test_a_change_running_containers_cannot_take_is_refused(
        self, change: dict[str, Any], words: str
    ) -> None:
        """apply refuses it in one line saying what to do; nothing changes."""
        runtime = kv_runtime(other=fake_kv_image())
        spec = service_spec()
        with anyio.fail_after(LIMIT):
            async with open_supervisor(runtime, probe_interval=PROBE) as supervisor:
                await supervisor.apply(spec)
                await supervisor.wait_converged("cache")
                with pytest.raises(SpecError) as caught:
                    await supervisor.apply(evolve(spec, **change))
                kept = supervisor.controllers["cache"].spec

        message = str(caught.value)
        assert words in message
        assert "\n" not in message
        assert message.endswith(
            "put the old value back, or take the service down first"
            " (`rolecall down cache`) and start it again"
        )
        assert kept == spec


class TestReload:
    """SIGHUP with a changed table reaches the running members."""

    async def test_a_reloaded_password_reaches_the_running_members(
        self, tmp_path: Path
    ) -> None:
        """A new password in the file is configured on every member."""
        table = SPEC + 'topology = "redundant"\nsecret = ["PASSWORD"]\n'
        async with running(
            tmp_path, table + f'env = {{ PASSWORD = "{OLD}" }}\n'
        ) as lab:
            lab.spec_path.write_text(
                table + f'env = {{ PASSWORD = "{NEW}" }}\n', encoding="utf-8"
            )
            accepted = await lab.runner.reload()
            status = await lab.runner.supervisor.wait_converged("cache", timeout=LIMIT)
            passwords = [_password(lab.runtime, m.id) for m in status.members]

        assert accepted is True
        assert passwords == [NEW, NEW]

    async def test_a_reloaded_memory_limit_is_rejected_and_the_state_kept(
        self, tmp_path: Path
    ) -> None:
        """The reload is refused with the error logged; nothing changes."""
        async with running(tmp_path) as lab:
            before = dict(lab.runner.entries)
            lab.spec_path.write_text(
                SPEC + 'memory_limit = "64MiB"\n', encoding="utf-8"
            )
            with capture_logs() as logs:
                accepted = await lab.runner.reload()
            spec = lab.runner.supervisor.controllers["cache"].spec

        (rejected,) = [line for line in logs if line["event"] == "spec_rejected"]
        assert accepted is False
        assert lab.runner.entries == before
        assert spec.memory_limit is None
        assert "changing the memory limit of a running service" in rejected["error"]
        assert load_spec_file(lab.spec_path).services["cache"].spec.memory_limit == (
            64 << 20
        )
