"""Copying a directory between containers through the archive API.

On the in-memory runtime (asyncio and trio), and on two real engines: the
default one and the harness's second engine, reached over TLS.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from docker_support import DockerLab
from second_engine import SecondEngine

from rolecall.actors import (
    ContainerSpec,
    DockerRuntime,
    ExecResult,
    copy_directory,
    open_engine_runtime,
)
from rolecall.actors._docker_archive import ARCHIVE_CHUNK
from rolecall.hooks_protocol import (
    ContainerGoneError,
    EngineError,
    EngineUnavailableError,
)
from rolecall.testing import FakeRuntime

pytestmark = pytest.mark.anyio

IMAGE = "files:fake"


async def _fake_container(runtime: FakeRuntime, name: str) -> str:
    runtime.add_image(IMAGE, hooks={})
    info = await runtime.create_container(ContainerSpec(name=name, image=IMAGE))
    await runtime.start_container(info.id)

    return info.id


class TestOnTheFakeRuntime:
    """The fake streams real tar archives between its containers' files."""

    async def test_copies_a_tree_between_two_runtimes(self) -> None:
        """Every file under the source lands under the target, nothing else."""
        here, there = FakeRuntime(name="here"), FakeRuntime(name="there")
        source = await _fake_container(here, "a")
        target = await _fake_container(there, "b")
        files = here.container(source).files
        files["/data/dump.rdb"] = b"x" * 200_000
        files["/data/meta/info.json"] = b'{"keys": 3}'
        files["/elsewhere/secret"] = b"no"
        there.container(target).files["/restore/old"] = b"kept"

        copied = await copy_directory(
            here, source, "/data/", target=there, target_id=target,
            target_path="/restore",
        )  # fmt: skip

        assert there.container(target).files == {
            "/restore/old": b"kept",
            "/restore/dump.rdb": b"x" * 200_000,
            "/restore/meta/info.json": b'{"keys": 3}',
        }
        assert copied.bytes_copied > 200_000
        assert copied.chunks >= 4
        assert copied.largest_chunk <= 64 * 1024

    async def test_a_missing_source_directory_is_an_engine_error(self) -> None:
        """Nothing under the source path: the copy fails, the target is untouched."""
        runtime = FakeRuntime()
        source = await _fake_container(runtime, "a")
        target = await _fake_container(runtime, "b")

        with pytest.raises(EngineError, match="nothing lies under it"):
            await copy_directory(
                runtime, source, "/data", target=runtime, target_id=target,
                target_path="/restore",
            )  # fmt: skip

        assert runtime.container(target).files == {}

    async def test_a_gone_container_is_reported_as_gone(self) -> None:
        """A removed target raises `ContainerGoneError`."""
        runtime = FakeRuntime()
        source = await _fake_container(runtime, "a")
        runtime.container(source).files["/data/f"] = b"1"

        with pytest.raises(ContainerGoneError):
            await copy_directory(
                runtime, source, "/data", target=runtime, target_id="nope",
                target_path="/restore",
            )  # fmt: skip

    async def test_refuses_an_entry_that_escapes_the_directory(self) -> None:
        """An archive entry pointing above the target directory is refused."""
        runtime = FakeRuntime()
        target = await _fake_container(runtime, "b")
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            member = tarfile.TarInfo("../etc/passwd")
            member.size = 1
            tar.addfile(member, io.BytesIO(b"!"))

        async def archive() -> AsyncIterator[bytes]:
            yield buffer.getvalue()

        with pytest.raises(EngineError, match="outside"):
            await runtime.put_archive(target, "/restore", archive())

        assert runtime.container(target).files == {}


# -- two real engines ---------------------------------------------------------


async def _exec(runtime: DockerRuntime, cid: str, script: str) -> ExecResult:
    result = await runtime.exec(
        cid, ["sh", "-c", script], timeout=120, max_stdout=100_000, max_stderr=4000
    )
    assert result.exit_code == 0, result.stderr

    return result


_MAKE_TREE = """\
mkdir -p /data/sub/deeper
head -c 3000000 /dev/urandom > /data/big.bin
head -c 700000 /dev/urandom > /data/sub/middle.bin
echo small > /data/sub/deeper/small.txt
"""

_DIGESTS = 'cd "$1" && find . -type f | sort | xargs sha256sum'


@pytest.mark.docker
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_copies_a_directory_across_two_engines(
    docker_runtime: DockerRuntime,
    second_engine: SecondEngine,
    busybox_image: str,
    docker_labels: DockerLab,
) -> None:
    """A few MB under /data on the default engine arrive byte for byte under
    /restore on the second engine, in bounded chunks."""
    second_engine.load_image(busybox_image)
    spec = ContainerSpec(
        name=docker_labels.name("copy"),
        image=busybox_image,
        labels=docker_labels.labels,
    )
    async with open_engine_runtime(second_engine.engine_config()) as engine2:
        source = await docker_runtime.create_container(spec)
        target = await engine2.create_container(spec)
        try:
            await docker_runtime.start_container(source.id)
            await engine2.start_container(target.id)
            await _exec(docker_runtime, source.id, _MAKE_TREE)
            await _exec(engine2, target.id, "mkdir /restore")

            copied = await copy_directory(
                docker_runtime, source.id, "/data", target=engine2,
                target_id=target.id, target_path="/restore",
            )  # fmt: skip

            digest = f"{_DIGESTS.replace('$1', '{}')}"
            before = await _exec(docker_runtime, source.id, digest.format("/data"))
            after = await _exec(engine2, target.id, digest.format("/restore"))
        finally:
            await engine2.remove_container(target.id)
            await docker_runtime.remove_container(source.id)

    assert before.stdout.count(b"\n") == 3
    assert after.stdout == before.stdout
    assert copied.bytes_copied > 3_700_000
    assert copied.largest_chunk <= ARCHIVE_CHUNK
    assert copied.chunks >= copied.bytes_copied // ARCHIVE_CHUNK


@pytest.mark.docker
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_missing_directory_on_a_real_engine_is_an_engine_error(
    docker_runtime: DockerRuntime, busybox_image: str, docker_labels: DockerLab
) -> None:
    """Reading a directory that is not there names it and is no gone container."""
    spec = ContainerSpec(
        name=docker_labels.name("copy"),
        image=busybox_image,
        labels=docker_labels.labels,
    )
    info = await docker_runtime.create_container(spec)
    with pytest.raises(EngineError, match="/nowhere") as caught:
        async with docker_runtime.open_archive(info.id, "/nowhere"):
            pass

    assert not isinstance(caught.value, ContainerGoneError)


class _BreakingSource:
    """A source whose archive stream breaks after one piece."""

    @asynccontextmanager
    async def open_archive(
        self, container_id: str, path: str
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"x" * 512
            raise EngineUnavailableError("source engine went away", address="a")

        yield chunks()


class _WrappingTarget:
    """A target whose client reports any failure to send as its own."""

    async def put_archive(
        self, container_id: str, path: str, archive: AsyncIterator[bytes]
    ) -> None:
        try:
            async for _ in archive:
                pass
        except Exception as exc:
            raise EngineUnavailableError("target cannot send", address="b") from exc


async def test_a_source_that_breaks_mid_copy_is_blamed_not_the_target() -> None:
    """The error names the source's failure even when the target wraps it."""
    with pytest.raises(EngineUnavailableError) as caught:
        await copy_directory(
            _BreakingSource(), "a", "/data", target=_WrappingTarget(),
            target_id="b", target_path="/restore",
        )  # fmt: skip

    assert caught.value.address == "a"
    assert str(caught.value) == "source engine went away"
