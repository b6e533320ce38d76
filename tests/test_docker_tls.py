"""The Docker runtime on an engine reached over TCP with TLS client
certificates: the harness's second engine."""

from __future__ import annotations

import gc
import hashlib
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from docker_support import DockerLab
from second_engine import SecondEngine, make_ca
from second_engine_certs import make_client_certificate

from rolecall.actors import (
    ContainerSpec,
    ContainerState,
    DockerRuntime,
    EngineConfig,
    TlsFiles,
    open_engine_runtime,
)
from rolecall.hooks_protocol import (
    ContainerGoneError,
    EngineTlsError,
    EngineUnavailableError,
)

pytestmark = [pytest.mark.docker, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    """aiodocker runs on asyncio only."""
    return "asyncio"


@pytest.fixture
async def engine2(
    second_engine: SecondEngine, busybox_image: str
) -> AsyncIterator[DockerRuntime]:
    """A runtime on the second engine, over TLS, with busybox loaded."""
    second_engine.load_image(busybox_image)
    async with open_engine_runtime(second_engine.engine_config()) as runtime:
        yield runtime


async def test_runs_a_container_over_tls(
    engine2: DockerRuntime, busybox_image: str, docker_labels: DockerLab
) -> None:
    """Create, start, exec with a payload on stdin, and remove, over TLS."""
    spec = ContainerSpec(
        name=docker_labels.name("tls"),
        image=busybox_image,
        labels=docker_labels.labels,
    )
    info = await engine2.create_container(spec)
    try:
        await engine2.start_container(info.id)
        result = await engine2.exec(
            info.id,
            ["sh", "-c", 'cat; echo " and done"; echo oops >&2; exit 3'],
            stdin=b"payload",
            timeout=30,
            max_stdout=1000,
            max_stderr=1000,
        )
        running = await engine2.inspect_container(info.id)
    finally:
        await engine2.remove_container(info.id)

    assert result.exit_code == 3
    assert result.stdout == b"payload and done\n"
    assert result.stderr == b"oops\n"
    assert running.state is ContainerState.RUNNING
    with pytest.raises(ContainerGoneError):
        await engine2.inspect_container(info.id)
    assert engine2.name == "engine2"


async def test_a_large_payload_reaches_stdin_whole(
    engine2: DockerRuntime, busybox_image: str, docker_labels: DockerLab
) -> None:
    """A payload of several hundred KB arrives byte for byte, then EOF."""
    payload = bytes(range(256)) * 2000
    spec = ContainerSpec(
        name=docker_labels.name("tls-big"),
        image=busybox_image,
        labels=docker_labels.labels,
    )
    info = await engine2.create_container(spec)
    try:
        await engine2.start_container(info.id)
        result = await engine2.exec(
            info.id,
            ["sh", "-c", "wc -c; md5sum"],
            stdin=payload,
            timeout=60,
            max_stdout=1000,
            max_stderr=1000,
        )
    finally:
        await engine2.remove_container(info.id)

    count, digest = result.stdout.decode().split("\n")[:2]
    assert result.exit_code == 0
    assert int(count) == len(payload)
    # md5sum read nothing after wc took it all: the digest of no input.
    assert digest.split()[0] == hashlib.md5(b"").hexdigest()  # noqa: S324


async def test_a_wrong_ca_is_refused_with_what_to_do(
    second_engine: SecondEngine, tmp_path: Path
) -> None:
    """An engine whose certificate does not chain to the CA given is refused,
    and the error names the engine and the CA file."""
    other_ca = make_ca(tmp_path, name="other")
    good = second_engine.engine_config()
    assert good.tls is not None
    tls = TlsFiles(ca=other_ca, cert=good.tls.cert, key=good.tls.key)
    engine = EngineConfig(name="engine2", url=good.url, tls=tls)

    with pytest.raises(EngineTlsError) as caught:
        async with open_engine_runtime(engine):
            pass

    assert caught.value.engine == "engine2"
    assert caught.value.address == good.url
    assert str(other_ca) in str(caught.value)
    assert isinstance(caught.value, EngineUnavailableError)


async def test_a_client_certificate_the_engine_does_not_trust_is_refused(
    second_engine: SecondEngine, tmp_path: Path
) -> None:
    """A client certificate from another CA fails with an error that points
    at the client certificate."""
    make_ca(tmp_path, name="ca")
    make_client_certificate(tmp_path)
    good = second_engine.engine_config()
    assert good.tls is not None
    tls = TlsFiles(ca=good.tls.ca, cert=tmp_path / "cert.pem", key=tmp_path / "key.pem")
    engine = EngineConfig(name="engine2", url=good.url, tls=tls)

    with pytest.raises(EngineTlsError) as caught:
        async with open_engine_runtime(engine):
            pass

    assert caught.value.engine == "engine2"
    assert caught.value.path is None
    assert str(tmp_path / "cert.pem") in str(caught.value)


async def test_streams_engine_events_over_tls(
    engine2: DockerRuntime, busybox_image: str, docker_labels: DockerLab
) -> None:
    """The event stream works over TLS: a started container's start shows."""
    spec = ContainerSpec(
        name=docker_labels.name("tls-events"),
        image=busybox_image,
        labels=docker_labels.labels,
    )
    async with engine2.open_event_stream(labels=docker_labels.labels) as events:
        info = await engine2.create_container(spec)
        try:
            await engine2.start_container(info.id)
            with anyio.fail_after(30):
                async for event in events:
                    if event.action == "start":
                        break
        finally:
            await engine2.remove_container(info.id)

    assert event.container_id == info.id


async def test_a_cancelled_exec_closes_its_tls_connection(
    engine2: DockerRuntime, busybox_image: str, docker_labels: DockerLab
) -> None:
    """An exec cancelled while its command runs closes its connection: over
    TLS the close itself awaits, so an unshielded close was cut short and
    left the socket to the collector (a ResourceWarning, an error here)."""
    spec = ContainerSpec(
        name=docker_labels.name("tls-cancel"),
        image=busybox_image,
        labels=docker_labels.labels,
    )
    info = await engine2.create_container(spec)
    try:
        await engine2.start_container(info.id)
        for _ in range(3):
            with anyio.move_on_after(0.5) as scope:
                await engine2.exec(
                    info.id,
                    ["sleep", "30"],
                    stdin=b"payload",
                    timeout=60,
                    max_stdout=100,
                    max_stderr=100,
                )
            assert scope.cancelled_caught
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            gc.collect()
    finally:
        await engine2.remove_container(info.id)

    assert [str(w.message) for w in caught if w.category is ResourceWarning] == []
