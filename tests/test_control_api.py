"""The control API on the in-memory runtime: every operation, and every
kind of bad input, answered by a runner running in the test's event loop."""

from __future__ import annotations

import argparse
import os
import struct
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, aclosing, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import msgpack
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream
from attrs import frozen
from supervisor_support import LIMIT, PROBE, kv_runtime

from rolecall import _control_server, _control_wire
from rolecall._cli_commands import _long_operation
from rolecall._control_client import open_control_client
from rolecall._control_protocol import FRAME_LIMIT, read_frame
from rolecall._errors import ControlError
from rolecall._run_command import open_runner
from rolecall._runner import Runner
from rolecall._spec_file import load_spec_file
from rolecall.testing import FakeRuntime

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

SPEC = """\
[services.cache]
image = "kv:fake"
"""

KV_PLAN = {
    "roles": ["backup", "primary", "replica", "standalone"],
    "topologies": ["redundant", "standalone"],
    "behaviours": ["migratable", "switchover"],
    "ports": [6379],
    "data_paths": ["/data"],
    "timeouts": {},
    "moves": ["replication"],
}


@frozen
class Lab:
    """A runner on the fake engine, and where its socket is."""

    runner: Runner
    runtime: FakeRuntime
    socket: Path
    spec_path: Path


@asynccontextmanager
async def running(
    tmp_path: Path, spec: str = SPEC, *, allowed_uid: int | None = None
) -> AsyncIterator[Lab]:
    """A runner for ``spec`` whose services have converged."""
    runtime = kv_runtime()
    spec_path = tmp_path / "spec.toml"
    spec_path.write_text(spec, encoding="utf-8")
    with anyio.fail_after(LIMIT):
        async with open_runner(
            load_spec_file(spec_path),
            runtime=runtime,
            state_dir=tmp_path,
            probe_interval=PROBE,
            allowed_uid=allowed_uid,
        ) as runner:
            for name in runner.supervisor.controllers:
                await runner.supervisor.wait_converged(name, timeout=LIMIT)
            yield Lab(runner, runtime, tmp_path / "control.sock", spec_path)


async def request(lab: Lab, op: str, **args: Any) -> dict[str, Any]:
    """One request on a new connection; its result."""
    async with open_control_client(lab.socket) as client:
        return await client.request(op, **args)


async def raw_exchange(lab: Lab, data: bytes) -> list[dict[str, Any]]:
    """Send bytes, close our side, and read every frame until the runner
    closes its side."""
    frames = []
    async with await anyio.connect_unix(lab.socket) as stream:
        await stream.send(data)
        await stream.send_eof()
        receive = BufferedByteReceiveStream(stream)
        while (frame := await read_frame(receive)) is not None:
            frames.append(frame)

    return frames


def frame(body: bytes) -> bytes:
    """``body`` behind its length prefix."""
    return struct.pack(">I", len(body)) + body


def packed(message: object) -> bytes:
    """One frame holding ``message`` in msgpack."""
    return frame(msgpack.packb(message))


class TestOperations:
    """Each operation does what docs/control-api.md says."""

    async def test_status_shows_the_runner_and_its_services(
        self, tmp_path: Path
    ) -> None:
        """status names the runner and reports each service and member."""
        async with running(tmp_path) as lab:
            reply = await request(lab, "status")

        runner = reply["runner"]
        (service,) = reply["services"]
        (member,) = service.pop("members")
        assert runner["pid"] == os.getpid()
        assert runner["spec"] == str(lab.spec_path)
        assert runner["state_dir"] == str(tmp_path)
        assert runner["protocol"] == 1
        identity = (tmp_path / "control-plane-id").read_text().strip()
        assert runner["control_plane"] == identity
        assert service.pop("last_change")["kind"] == "converged"
        assert service == {
            "name": "cache",
            "source": "runner",
            "image": "kv:fake",
            "topology": "standalone",
            "replicas": 1,
            "converged": True,
            "epoch": 1,
            "primary": "cache-1",
            "failover_paused": False,
            "engine": "default",
            "moving": None,
            "last_error": None,
            "failure": None,
        }
        assert (member["id"], member["role"], member["state"]) == (
            "cache-1",
            "standalone",
            "running",
        )
        assert (member["healthy"], member["epoch"], member["error"]) == (
            True,
            1,
            None,
        )
        assert member["engine"] == "default"

    async def test_convert_streams_each_step_then_the_status(
        self, tmp_path: Path
    ) -> None:
        """convert sends step n of m as the steps happen, then the new status."""
        async with running(tmp_path) as lab, open_control_client(lab.socket) as client:
            stream = client.stream("convert", service="cache", topology="redundant")
            frames = [item async for item in stream]

        progress = [data for kind, data in frames if kind == "progress"]
        counted = [(p["step"], p["steps"]) for p in progress if p["counted"]]
        kind, status = frames[-1]
        assert counted == [(1, 3), (2, 3), (3, 3)]
        assert [p["event"]["kind"] for p in progress] == [
            "role_applied",
            "member_created",
            "member_prepared",
            "role_applied",
            "member_configured",
            "converged",
        ]
        assert kind == "result"
        assert (status["topology"], status["primary"]) == ("redundant", "cache-1")
        assert [(m["id"], m["role"]) for m in status["members"]] == [
            ("cache-1", "primary"),
            ("cache-2", "replica"),
        ]

    async def test_pause_and_resume_switch_automatic_failover(
        self, tmp_path: Path
    ) -> None:
        """pause and resume set the service's failover_paused and say so."""
        async with running(tmp_path) as lab:
            paused = await request(lab, "pause", service="cache")
            seen = lab.runner.supervisor.status("cache").failover_paused
            resumed = await request(lab, "resume", service="cache")

        assert (paused["failover_paused"], seen) == (True, True)
        assert resumed["failover_paused"] is False

    async def test_plan_shows_the_image_plan(self, tmp_path: Path) -> None:
        """plan returns the plan the image declared, for a member too."""
        async with running(tmp_path) as lab:
            of_service = await request(lab, "plan", service="cache")
            of_member = await request(lab, "plan", service="cache", member="cache-1")
            with pytest.raises(ControlError) as caught:
                await request(lab, "plan", service="cache", member="cache-9")

        assert of_service == {"service": "cache", "member": None, "plan": KV_PLAN}
        assert of_member == {"service": "cache", "member": "cache-1", "plan": KV_PLAN}
        assert caught.value.code == "unknown_member"
        assert str(caught.value) == (
            "service 'cache' has no member 'cache-9' (members: cache-1)"
        )

    async def test_events_returns_the_recent_timeline(self, tmp_path: Path) -> None:
        """events without follow sends the recorded events, then their count."""
        async with running(tmp_path) as lab, open_control_client(lab.socket) as client:
            frames = [item async for item in client.stream("events", backlog=2)]

        assert [(kind, data.get("kind")) for kind, data in frames] == [
            ("event", "role_applied"),
            ("event", "converged"),
            ("result", None),
        ]
        assert frames[-1][1] == {"count": 2}

    async def test_events_follow_streams_new_events(self, tmp_path: Path) -> None:
        """events with follow sends events as they happen, none twice."""
        seen: list[str] = []
        async with (
            running(tmp_path) as lab,
            open_control_client(lab.socket) as client,
            aclosing(client.stream("events", follow=True, backlog=1)) as frames,
        ):
            kind, first = await anext(frames)
            converting = lab.runner.supervisor.convert("cache", "redundant")
            async with anyio.create_task_group() as group:
                group.start_soon(_ignore_result, converting)
                async for _, event in frames:
                    seen.append(event["kind"])
                    if event["kind"] == "converged":
                        break

        assert (kind, first["kind"]) == ("event", "converged")
        assert seen == [
            "role_applied",
            "member_created",
            "member_prepared",
            "role_applied",
            "member_configured",
            "converged",
        ]

    async def test_down_needs_the_name_then_removes_the_service(
        self, tmp_path: Path
    ) -> None:
        """down refuses without confirm equal to the name, then tears down."""
        async with running(tmp_path) as lab:
            with pytest.raises(ControlError) as refused:
                await request(lab, "down", service="cache", confirm="yes")
            removed = await request(lab, "down", service="cache", confirm="cache")
            after = await request(lab, "status")
            left = await lab.runtime.list_containers(labels={})

        assert refused.value.code == "not_confirmed"
        assert removed == {"service": "cache", "removed": ["rolecall-cache-1"]}
        assert after["services"] == []
        assert left == []

    async def test_a_convert_to_a_billion_replicas_is_refused_at_once(
        self, tmp_path: Path
    ) -> None:
        """An out-of-range replica count is refused before anything plans
        for it; the runner answers the next request as before."""
        async with running(tmp_path) as lab, open_control_client(lab.socket) as client:
            stream = client.stream(
                "convert", service="cache", topology="redundant", replicas=10**9
            )
            with anyio.fail_after(LIMIT), pytest.raises(ControlError) as caught:
                await anext(stream)
            again = await client.request("status", service="cache")

        assert caught.value.code == "refused"
        assert "asks for 1000000000 replicas: use 1 to 16" in str(caught.value)
        assert again["services"][0]["topology"] == "standalone"

    async def test_an_unknown_service_is_an_error_on_an_open_connection(
        self, tmp_path: Path
    ) -> None:
        """A request for an unknown service fails; the connection goes on."""
        async with running(tmp_path) as lab, open_control_client(lab.socket) as client:
            with pytest.raises(ControlError) as caught:
                await client.request("pause", service="nope")
            again = await client.request("status", service="cache")

        assert caught.value.code == "unknown_service"
        assert str(caught.value) == (
            "the runner manages no service named 'nope' (known: cache)"
        )
        assert [s["name"] for s in again["services"]] == ["cache"]

    async def test_a_client_leaving_leaves_the_conversion_running(
        self, tmp_path: Path
    ) -> None:
        """A client that hangs up mid-convert leaves the runner converting."""
        async with running(tmp_path) as lab:
            async with open_control_client(lab.socket) as client:
                frames = client.stream("convert", service="cache", topology="redundant")
                async with aclosing(frames):
                    kind, _ = await anext(frames)
            status = await lab.runner.supervisor.wait_converged("cache", timeout=LIMIT)

        assert kind == "progress"
        assert [(m.id, m.role and m.role.value) for m in status.members] == [
            ("cache-1", "primary"),
            ("cache-2", "replica"),
        ]


class TestBadInput:
    """Bad input gets an error reply and a closed connection; the runner
    answers the next client as before."""

    @pytest.mark.parametrize(
        ("data", "code"),
        [
            pytest.param(b"\xff" * 64, "frame_too_large", id="garbage"),
            pytest.param(
                struct.pack(">I", 100 * 1000 * 1000), "frame_too_large", id="100MB"
            ),
            pytest.param(frame(b"x" * 10)[:-3], "truncated_frame", id="truncated"),
            pytest.param(b"\x00\x00", "truncated_frame", id="half-a-prefix"),
            pytest.param(frame(b"\xdd\xff\xff\xff\xff"), "bad_frame", id="array-bomb"),
            pytest.param(frame(b"\xdf\xff\xff\xff\xff"), "bad_frame", id="map-bomb"),
            pytest.param(frame(b"\xdb\xff\xff\xff\xff"), "bad_frame", id="string-bomb"),
            pytest.param(
                frame(b"\x91" * 100_000 + b"\xc0"), "bad_frame", id="nesting-bomb"
            ),
            pytest.param(frame(b"\xc1"), "bad_frame", id="never-used-byte"),
            pytest.param(packed(7), "bad_frame", id="not-a-map"),
            pytest.param(packed({1: "status"}), "bad_frame", id="int-key"),
            pytest.param(packed({"op": "reboot"}), "unknown_op", id="unknown-op"),
            pytest.param(packed({"cmd": "status"}), "bad_request", id="no-op"),
            pytest.param(
                packed({"op": "convert", "service": "cache"}),
                "bad_request",
                id="missing-arg",
            ),
            pytest.param(
                packed({"op": "pause", "service": ["cache"]}),
                "bad_request",
                id="wrong-type",
            ),
            pytest.param(
                packed({"op": "status", "force": True}),
                "bad_request",
                id="unknown-arg",
            ),
            pytest.param(
                packed(
                    {
                        "op": "convert",
                        "service": "cache",
                        "topology": "x",
                        "replicas": True,
                    }
                ),
                "bad_request",
                id="bool-as-int",
            ),
            pytest.param(
                packed({"op": "events", "backlog": -1}),
                "bad_request",
                id="negative-backlog",
            ),
            pytest.param(
                packed({"op": "events", "backlog": 2**63}),
                "bad_request",
                id="huge-backlog",
            ),
        ],
    )
    async def test_bad_input_is_answered_with_an_error(
        self, tmp_path: Path, data: bytes, code: str
    ) -> None:
        """Each bad frame or request gets one error reply, then EOF."""
        async with running(tmp_path) as lab:
            frames = await raw_exchange(lab, data)
            after = await request(lab, "status")

        (reply,) = frames
        assert reply["ok"] is False
        assert reply["error"]["code"] == code
        assert [s["name"] for s in after["services"]] == ["cache"]

    async def test_silent_connections_lose_their_slot_and_others_get_in(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Connections that never send a request are answered `timeout` and
        closed, so they cannot hold every slot and lock clients out."""
        monkeypatch.setattr(_control_wire, "FIRST_REQUEST_TIMEOUT", 0.3)
        async with running(tmp_path) as lab, AsyncExitStack() as idle:
            silent = [
                await idle.enter_async_context(await anyio.connect_unix(lab.socket))
                for _ in range(_control_server._MAX_CONNECTIONS)
            ]
            with anyio.fail_after(LIMIT):
                replies = [
                    await read_frame(BufferedByteReceiveStream(s)) for s in silent
                ]
                after = await request(lab, "status")

        assert {r["error"]["code"] for r in replies if r is not None} == {"timeout"}
        assert [s["name"] for s in after["services"]] == ["cache"]

    async def test_a_client_refused_as_busy_gets_that_error(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With every slot taken, a request fails with `busy`, whether the
        runner's refusal arrives before or after the request went out."""
        monkeypatch.setattr(_control_server, "_MAX_CONNECTIONS", 1)
        async with (
            running(tmp_path) as lab,
            open_control_client(lab.socket) as holder,
        ):
            # Answered, so the runner has counted it: it holds the one slot.
            await holder.request("status")
            async with open_control_client(lab.socket) as client:
                with anyio.fail_after(LIMIT), pytest.raises(ControlError) as caught:
                    await client.request("status")

        assert caught.value.code == "busy"

    async def test_a_frame_at_the_limit_is_read_and_refused_by_shape(
        self, tmp_path: Path
    ) -> None:
        """A frame of exactly FRAME_LIMIT bytes is read whole, then judged."""
        body = msgpack.packb({"op": "status", "pad": "x" * 100})
        body += b"\x00" * (FRAME_LIMIT - len(body))
        async with running(tmp_path) as lab:
            frames = await raw_exchange(lab, frame(body))

        assert [f["error"]["code"] for f in frames] == ["bad_frame"]

    async def test_requests_after_a_good_one_share_the_connection(
        self, tmp_path: Path
    ) -> None:
        """Good requests on one connection are answered in order."""
        two = packed({"op": "status"}) + packed({"op": "plan", "service": "cache"})
        async with running(tmp_path) as lab:
            frames = await raw_exchange(lab, two)

        assert [f["ok"] for f in frames] == [True, True]
        assert frames[1]["result"]["plan"] == KV_PLAN

    async def test_another_user_is_refused(self, tmp_path: Path) -> None:
        """A peer whose uid is not the runner's gets `forbidden`."""
        async with running(tmp_path, allowed_uid=os.geteuid() + 1) as lab:
            with pytest.raises(ControlError) as caught:
                await request(lab, "status")

        assert caught.value.code == "forbidden"
        assert str(caught.value) == "only the runner's own user may connect"

    async def test_the_socket_is_private(self, tmp_path: Path) -> None:
        """The control socket is mode 0600."""
        async with running(tmp_path) as lab:
            mode = lab.socket.stat().st_mode & 0o777

        assert mode == 0o600


async def _ignore_result(work: Any) -> None:
    await work


class TestCliAgainstTheRunner:
    """The CLI's long operations, as printed, against a runner on the fake engine."""

    async def test_a_refused_convert_prints_no_header(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Converting a service the runner does not manage prints only the
        error, not a `converting ...` line as if it had started."""
        args = argparse.Namespace(
            command="convert",
            service="nope",
            topology="redundant",
            replicas=None,
            timeout=None,
            state_dir=str(tmp_path),
        )
        refused: list[ControlError] = []
        async with running(tmp_path) as lab:
            assert lab.socket.parent == tmp_path
            with anyio.fail_after(LIMIT):
                try:
                    await _long_operation(args)
                except* ControlError as group:  # the CLI's task group wraps it
                    refused += [
                        e for e in group.exceptions if isinstance(e, ControlError)
                    ]

        assert [e.code for e in refused] == ["unknown_service"]
        # (The runner's own log lines share stdout in this process.)
        assert "converting nope" not in capsys.readouterr().out
