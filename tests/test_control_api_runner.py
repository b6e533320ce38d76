"""The control socket of a real runner process, fed bad input: each kind is
answered with an error, and the runner answers the next client as before."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import anyio
import docker_support
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream
from docker_support import DockerLab
from runner_support import LIMIT, open_runner_process, rolecall, spec_text

from rolecall._control_protocol import read_frame

pytestmark = [pytest.mark.docker, pytest.mark.anyio, pytest.mark.timeout(120)]

BAD_INPUT = [
    # Random bytes behind a first byte that makes any length prefix huge.
    pytest.param(b"\xfe" + os.urandom(63), "frame_too_large", id="garbage"),
    pytest.param(struct.pack(">I", 100 * 1000 * 1000), "frame_too_large", id="100MB"),
    pytest.param(struct.pack(">I", 64) + b"\x81", "truncated_frame", id="truncated"),
    pytest.param(
        struct.pack(">I", 5) + b"\xdd\xff\xff\xff\xff", "bad_frame", id="msgpack-bomb"
    ),
]


# Fixtures shared through docker_support; pytest finds them by these names.
docker_case = docker_support.docker_case
redis_image = docker_support.redis_image


@pytest.fixture
def anyio_backend() -> str:
    """The runner's tests run on asyncio, like the Docker runtime."""
    return "asyncio"


async def test_bad_input_is_answered_and_the_runner_stays_healthy(
    tmp_path: Path, docker_case: DockerLab, redis_image: str
) -> None:
    """Garbage, a truncated frame, a 100 MB prefix and a bomb: errors, no crash."""
    service = docker_case.service("bad")
    spec = tmp_path / "spec.toml"
    spec.write_text(
        spec_text(service, redis_image, docker_case.labels), encoding="utf-8"
    )
    state = tmp_path / "state"
    replies = {}
    async with open_runner_process(spec, state) as runner:
        for param in BAD_INPUT:
            data, code = param.values
            replies[param.id] = (await _exchange(state / "control.sock", data), code)
        status = await rolecall("status", "--json", "--state-dir", str(state))
        alive = runner.process.returncode is None
        refused = [line for line in runner.lines if line["event"].endswith("refused")]

    for name, (frames, code) in replies.items():
        assert [(f["ok"], f["error"]["code"]) for f in frames] == [(False, code)], name
    assert status.returncode == 0
    assert [s["name"] for s in json.loads(status.stdout)] == [service]
    assert alive
    assert [line["code"] for line in refused] == [
        "frame_too_large",
        "frame_too_large",
        "truncated_frame",
        "bad_frame",
    ]


async def _exchange(socket: Path, data: object) -> list[dict[str, object]]:
    """Send ``data``, end our input, and read replies until the runner hangs up."""
    assert isinstance(data, bytes)
    frames = []
    with anyio.fail_after(LIMIT):
        async with await anyio.connect_unix(socket) as stream:
            await stream.send(data)
            await stream.send_eof()
            receive = BufferedByteReceiveStream(stream)
            while (frame := await read_frame(receive)) is not None:
                frames.append(frame)

    return frames
