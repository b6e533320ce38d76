"""The Docker runtime against a real engine and a busybox image built here."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import anyio
import pytest
from docker_support import DockerLab

from rolecall.actors import (
    ContainerInfo,
    ContainerRuntime,
    ContainerSpec,
    ContainerState,
    DockerRuntime,
    EngineEvent,
    ExecResult,
    _docker,
    open_docker_runtime,
)
from rolecall.hooks_protocol import (
    ContainerGoneError,
    EngineError,
    EngineUnavailableError,
    ImageNotFoundError,
)

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

docker = pytest.mark.docker

MiB = 1 << 20

T = TypeVar("T")


@pytest.fixture
def anyio_backend() -> str:
    """aiodocker runs on asyncio only."""
    return "asyncio"


# -- helpers ----------------------------------------------------------------


def _spec(
    lab: DockerLab, image: str, prefix: str = "c", **options: object
) -> ContainerSpec:
    return ContainerSpec(
        name=lab.name(prefix), image=image, labels=lab.labels, **options
    )


async def _run(
    runtime: DockerRuntime,
    container_id: str,
    *argv: str,
    stdin: bytes | None = None,
    timeout: float = 30,
    max_stdout: int = MiB,
    max_stderr: int = MiB,
) -> ExecResult:
    return await runtime.exec(
        container_id,
        argv,
        stdin=stdin,
        timeout=timeout,
        max_stdout=max_stdout,
        max_stderr=max_stderr,
    )


async def _wait_for(probe: Callable[[], Awaitable[T]], *, within: float = 20) -> T:
    """Poll ``probe`` until it gives a true value; fail after ``within`` s."""
    with anyio.fail_after(within):
        while True:
            if value := await probe():
                return value
            await anyio.sleep(0.05)


async def _processes(runtime: DockerRuntime, container_id: str) -> str:
    result = await _run(runtime, container_id, "ps", "-o", "pid,args")
    return result.stdout.decode()


def _memory_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/self/status")


def _reset_peak_memory() -> None:
    """Restart VmHWM from the current RSS (Linux 4.0 and later)."""
    Path("/proc/self/clear_refs").write_text("5")


@pytest.fixture
async def running(
    docker_runtime: DockerRuntime, docker_labels: DockerLab, busybox_image: str
) -> str:
    """A started busybox container, removed with the test's labels."""
    info = await docker_runtime.create_container(_spec(docker_labels, busybox_image))
    await docker_runtime.start_container(info.id)
    return info.id


# -- the engine -------------------------------------------------------------


class TestEngineAddress:
    """Reaching, or failing to reach, an engine."""

    async def test_missing_socket_is_unavailable(self, tmp_path: Path) -> None:
        """A socket path with nothing behind it raises EngineUnavailableError."""
        url = f"unix://{tmp_path / 'absent.sock'}"
        with pytest.raises(EngineUnavailableError) as caught:
            async with open_docker_runtime(url):
                pass

        assert caught.value.address == url
        assert "absent.sock" in str(caught.value)
        assert "dockerd" in str(caught.value)

    async def test_refusing_socket_is_unavailable(self, tmp_path: Path) -> None:
        """A socket that refuses connections raises EngineUnavailableError."""
        path = tmp_path / "refusing.sock"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as bound:
            bound.bind(str(path))  # bound, never listening: connect is refused
            runtime = DockerRuntime(f"unix://{path}")
            try:
                with pytest.raises(EngineUnavailableError):
                    await runtime.inspect_container("anything")
            finally:
                await runtime.aclose()

    def test_url_without_scheme_is_refused(self) -> None:
        """An address without a scheme is a ValueError at construction."""
        with pytest.raises(ValueError, match="bogus"):
            DockerRuntime("bogus")

    def test_exec_cap_below_one_is_refused(self) -> None:
        """A cap of zero concurrent execs is a ValueError."""
        with pytest.raises(ValueError, match="max_concurrent_execs"):
            DockerRuntime(max_concurrent_execs=0)

    @docker
    async def test_engine_answers(self, docker_runtime: DockerRuntime) -> None:
        """The runtime reports its engine's version and meets the Protocol."""
        assert await docker_runtime.engine_version()
        assert isinstance(docker_runtime, ContainerRuntime)


# -- containers -------------------------------------------------------------


@docker
class TestContainers:
    """Container life cycle, records, and what the host config does."""

    async def test_round_trip(
        self,
        docker_runtime: DockerRuntime,
        docker_labels: DockerLab,
        busybox_image: str,
    ) -> None:
        """Create, start, stop, start, kill and remove report the right states."""
        rt = docker_runtime
        info = await rt.create_container(_spec(docker_labels, busybox_image))
        assert info.state is ContainerState.CREATED
        assert info.exit_code is None
        assert docker_labels.labels.items() <= info.labels.items()

        await rt.start_container(info.id)
        assert (await rt.inspect_container(info.id)).state is ContainerState.RUNNING

        await rt.stop_container(info.id, timeout=5)
        stopped = await rt.inspect_container(info.id)
        assert stopped.state is ContainerState.EXITED
        assert stopped.exit_code == 143  # SIGTERM, passed on by docker-init

        await rt.start_container(info.id)
        await rt.kill_container(info.id)
        killed = await rt.inspect_container(info.id)
        assert (killed.state, killed.exit_code) == (ContainerState.EXITED, 137)
        await rt.kill_container(info.id)  # not running: nothing to do

        await rt.remove_container(info.id)
        with pytest.raises(ContainerGoneError) as caught:
            await rt.inspect_container(info.id)
        assert caught.value.container_id == info.id
        await rt.remove_container(info.id)  # gone already: not an error

    async def test_create_is_idempotent(
        self,
        docker_runtime: DockerRuntime,
        docker_labels: DockerLab,
        busybox_image: str,
    ) -> None:
        """Creating the same spec twice returns the first container."""
        spec = _spec(docker_labels, busybox_image)
        first = await docker_runtime.create_container(spec)
        second = await docker_runtime.create_container(spec)
        assert second.id == first.id

    async def test_name_taken_with_other_labels(
        self,
        docker_runtime: DockerRuntime,
        docker_labels: DockerLab,
        busybox_image: str,
    ) -> None:
        """A name held by a container with other rolecall labels is an error."""
        spec = _spec(docker_labels, busybox_image)
        await docker_runtime.create_container(spec)
        other = ContainerSpec(
            name=spec.name,
            image=busybox_image,
            labels={**docker_labels.labels, "io.rolecall.member": "other"},
        )
        with pytest.raises(EngineError, match="taken"):
            await docker_runtime.create_container(other)

    async def test_list_by_labels(
        self,
        docker_runtime: DockerRuntime,
        docker_labels: DockerLab,
        busybox_image: str,
    ) -> None:
        """Listing by labels finds exactly the containers carrying all of them."""
        marked = {**docker_labels.labels, "io.rolecall.member": "listed"}
        spec = _spec(docker_labels, busybox_image)
        listed = await docker_runtime.create_container(
            ContainerSpec(name=spec.name, image=busybox_image, labels=marked)
        )
        await docker_runtime.create_container(_spec(docker_labels, busybox_image))

        found = await docker_runtime.list_containers(labels=marked)
        assert [info.id for info in found] == [listed.id]

    async def test_a_container_whose_inspect_hangs_is_listed_from_the_listing(
        self,
        docker_runtime: DockerRuntime,
        docker_labels: DockerLab,
        busybox_image: str,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """An inspect that never answers (an engine wedged on the container)
        does not hang the listing: the listing's description stands in, the
        same as the inspect's but for the exit code and OOM flag."""
        spec = _spec(docker_labels, busybox_image, published_ports=(6379,))
        created = await docker_runtime.create_container(spec)
        await docker_runtime.start_container(created.id)
        inspected = await docker_runtime.inspect_container(created.id)

        async def wedged(container_id: str) -> ContainerInfo:
            await anyio.sleep_forever()
            raise AssertionError  # unreachable: sleep_forever never returns

        monkeypatch.setattr(docker_runtime, "inspect_container", wedged)
        monkeypatch.setattr(_docker, "INSPECT_DEADLINE", 0.2)
        with anyio.fail_after(30):
            (listed,) = await docker_runtime.list_containers(
                labels=docker_labels.labels
            )

        assert listed == inspected
        assert listed.state is ContainerState.RUNNING
        assert listed.host_ports[6379] > 0

    async def test_missing_container_is_gone(
        self, docker_runtime: DockerRuntime
    ) -> None:
        """Calls naming a container that does not exist raise ContainerGoneError."""
        for call in (
            docker_runtime.inspect_container,
            docker_runtime.start_container,
            docker_runtime.kill_container,
        ):
            with pytest.raises(ContainerGoneError):
                await call("rc-test-no-such-container")

    async def test_missing_image(
        self, docker_runtime: DockerRuntime, docker_labels: DockerLab
    ) -> None:
        """A missing image raises ImageNotFoundError on inspect and on create."""
        image = "rolecall-test/absent:none"
        with pytest.raises(ImageNotFoundError) as caught:
            await docker_runtime.inspect_image(image)
        assert caught.value.image == image

        with pytest.raises(ImageNotFoundError):
            await docker_runtime.create_container(_spec(docker_labels, image))

    async def test_inspect_image(
        self, docker_runtime: DockerRuntime, busybox_image: str
    ) -> None:
        """Image inspection reads tags and labels."""
        info = await docker_runtime.inspect_image(busybox_image)
        assert busybox_image in info.tags
        assert info.labels["io.rolecall.test.image"] == "busybox"

    async def test_init_is_pid_one(
        self, docker_runtime: DockerRuntime, running: str
    ) -> None:
        """Containers run docker-init as pid 1 to reap what hooks leave."""
        table = await _processes(docker_runtime, running)
        first = table.splitlines()[1].split()
        assert first[0] == "1"
        assert "docker-init" in first[1]

    async def test_port_published_on_loopback(
        self,
        docker_runtime: DockerRuntime,
        docker_labels: DockerLab,
        busybox_image: str,
    ) -> None:
        """A published port gets an engine-picked port on 127.0.0.1 that answers."""
        spec = _spec(
            docker_labels,
            busybox_image,
            command=("httpd", "-f", "-p", "8080", "-h", "/tmp"),
            published_ports=(8080,),
        )
        info = await docker_runtime.create_container(spec)
        await docker_runtime.start_container(info.id)
        port = (await docker_runtime.inspect_container(info.id)).host_ports[8080]

        async def answers() -> bool:
            # The engine's port proxy accepts a connection before the server
            # in the container listens, then closes it: not an answer yet.
            try:
                stream = await anyio.connect_tcp("127.0.0.1", port)
                async with stream:
                    await stream.send(b"GET / HTTP/1.0\r\n\r\n")
                    return (await stream.receive()).startswith(b"HTTP/")
            except (OSError, anyio.EndOfStream, anyio.BrokenResourceError):
                return False

        await _wait_for(answers)

    async def test_network_alias_and_volume(
        self,
        docker_runtime: DockerRuntime,
        docker_labels: DockerLab,
        busybox_image: str,
    ) -> None:
        """Containers reach each other by alias and a named volume keeps data."""
        rt, lab = docker_runtime, docker_labels
        network, volume = lab.name("net"), lab.name("vol")
        await rt.create_network(network, labels=lab.labels)
        await rt.create_volume(volume, labels=lab.labels)
        server = _spec(
            lab,
            busybox_image,
            network=network,
            network_aliases=("primary",),
            volumes={volume: "/data"},
        )
        first = await rt.create_container(server)
        await rt.start_container(first.id)
        assert (
            await _run(rt, first.id, "sh", "-c", "echo kept >/data/f")
        ).exit_code == 0

        client = await rt.create_container(_spec(lab, busybox_image, network=network))
        await rt.start_container(client.id)
        ping = await _run(rt, client.id, "ping", "-c", "1", "-W", "5", "primary")
        assert ping.exit_code == 0, ping.stderr

        await rt.remove_container(first.id)
        again = await rt.create_container(
            _spec(lab, busybox_image, volumes={volume: "/v"})
        )
        await rt.start_container(again.id)
        assert (await _run(rt, again.id, "cat", "/v/f")).stdout == b"kept\n"

    async def test_oom_killed(
        self,
        docker_runtime: DockerRuntime,
        docker_labels: DockerLab,
        busybox_image: str,
    ) -> None:
        """A container over its memory limit is reported OOM-killed with 137."""
        # The shell holds a command substitution's whole output in memory.
        hog = ("sh", "-c", "x=$(yes aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa)")
        spec = _spec(docker_labels, busybox_image, command=hog, memory_limit=16 * MiB)
        info = await docker_runtime.create_container(spec)
        await docker_runtime.start_container(info.id)

        async def exited() -> bool:
            state = (await docker_runtime.inspect_container(info.id)).state
            return state is ContainerState.EXITED

        await _wait_for(exited, within=60)
        ended = await docker_runtime.inspect_container(info.id)
        assert (ended.oom_killed, ended.exit_code) == (True, 137)


# -- exec -------------------------------------------------------------------


@docker
class TestExec:
    """Running commands inside a container."""

    async def test_exit_codes(
        self, docker_runtime: DockerRuntime, running: str
    ) -> None:
        """Exit codes 0 and 42 come back as they are, with the output."""
        ok = await _run(docker_runtime, running, "sh", "-c", "echo out; echo err >&2")
        assert (ok.exit_code, ok.stdout, ok.stderr) == (0, b"out\n", b"err\n")
        assert not ok.stdout_truncated
        assert ok.duration > 0

        failed = await _run(docker_runtime, running, "sh", "-c", "exit 42")
        assert failed.exit_code == 42

    async def test_argv_is_not_a_shell_string(
        self, docker_runtime: DockerRuntime, running: str
    ) -> None:
        """Arguments reach the command verbatim; nothing is parsed by a shell."""
        result = await _run(docker_runtime, running, "echo", "a;b", "$HOME", "'q'")
        assert result.stdout == b"a;b $HOME 'q'\n"

    async def test_env(self, docker_runtime: DockerRuntime, running: str) -> None:
        """Environment variables given to exec reach the command."""
        result = await docker_runtime.exec(
            running,
            ["sh", "-c", 'echo "$ROLE"'],
            env={"ROLE": "primary"},
            timeout=30,
            max_stdout=MiB,
            max_stderr=MiB,
        )
        assert result.stdout == b"primary\n"

    async def test_stdin_half_close(
        self, docker_runtime: DockerRuntime, running: str
    ) -> None:
        """A command reading stdin to EOF gets EOF and still returns its output."""
        payload = b"payload\x00\xff" * 10_000
        script = "cat; echo done >&2"
        result = await _run(docker_runtime, running, "sh", "-c", script, stdin=payload)
        assert (result.exit_code, result.stdout, result.stderr) == (
            0,
            payload,
            b"done\n",
        )

        empty = await _run(docker_runtime, running, "cat", stdin=b"")
        assert (empty.exit_code, empty.stdout) == (0, b"")

    async def test_big_output_is_bounded(
        self, docker_runtime: DockerRuntime, running: str
    ) -> None:
        """20 MB on each stream keeps stdout's head and stderr's tail, memory flat."""
        # seq 1 3000000 prints about 22 MB; both streams at once.
        script = "seq 1 3000000 & seq 1 3000000 >&2; wait"
        baseline = _memory_kib("VmRSS")
        _reset_peak_memory()
        result = await _run(
            docker_runtime,
            running,
            "sh",
            "-c",
            script,
            timeout=60,
            max_stdout=64 * 1024,
            max_stderr=64 * 1024,
        )
        growth = (_memory_kib("VmHWM") - baseline) * 1024

        assert result.exit_code == 0
        assert result.stdout_truncated
        assert result.stderr_truncated
        assert len(result.stdout) == len(result.stderr) == 64 * 1024
        assert result.stdout.startswith(b"1\n2\n3\n")
        assert result.stderr.endswith(b"2999999\n3000000\n")
        assert growth < 20 * MiB, f"peak RSS grew by {growth / MiB:.1f} MiB"

    async def test_timeout_kills_inside(
        self, docker_runtime: DockerRuntime, running: str
    ) -> None:
        """An overrun command and its child are killed inside the container."""
        start = anyio.current_time()
        with pytest.raises(TimeoutError):
            await _run(
                docker_runtime,
                running,
                "sh",
                "-c",
                "sleep 301; echo never",
                timeout=1,
            )
        assert anyio.current_time() - start < 15

        async def gone() -> bool:
            return "301" not in await _processes(docker_runtime, running)

        await _wait_for(gone)

    async def test_cancel_kills_inside(
        self, docker_runtime: DockerRuntime, running: str
    ) -> None:
        """Cancelling an exec kills its process, then the cancellation goes on."""
        with anyio.move_on_after(1) as scope:
            await _run(docker_runtime, running, "sleep", "302", timeout=60)
        assert scope.cancelled_caught

        async def gone() -> bool:
            return "302" not in await _processes(docker_runtime, running)

        await _wait_for(gone)

    async def test_kill_from_inside(
        self, docker_runtime: DockerRuntime, running: str
    ) -> None:
        """The in-container kill alone ends an overrun command and the child it
        put in its own session, as it must against a remote engine."""
        # Without the host-side fallback, only the marker sweep can kill.
        docker_runtime._kill_on_host = False
        script = "setsid sleep 306 & sleep 307; echo never"
        with pytest.raises(TimeoutError):
            await _run(docker_runtime, running, "sh", "-c", script, timeout=1)

        async def gone() -> bool:
            listing = await _processes(docker_runtime, running)
            return "306" not in listing and "307" not in listing

        await _wait_for(gone)

    async def test_background_child_holding_stdout(
        self, docker_runtime: DockerRuntime, running: str
    ) -> None:
        """A command that leaves a child holding stdout ends when it exits."""
        script = "sleep 303 & echo started"
        with anyio.fail_after(15):
            result = await _run(docker_runtime, running, "sh", "-c", script)
        assert (result.exit_code, result.stdout) == (0, b"started\n")

    async def test_stopped_container(
        self, docker_runtime: DockerRuntime, running: str
    ) -> None:
        """Exec in a stopped container raises ContainerGoneError."""
        await docker_runtime.kill_container(running)
        with pytest.raises(ContainerGoneError) as caught:
            await _run(docker_runtime, running, "true")
        assert caught.value.container_id == running

    async def test_exec_meets_kill(
        self, docker_runtime: DockerRuntime, running: str
    ) -> None:
        """Exec in a container killed as it starts raises ContainerGoneError."""
        gone: list[ContainerGoneError] = []

        async def attempt() -> None:
            try:
                await _run(docker_runtime, running, "true")
            except ContainerGoneError as exc:
                gone.append(exc)

        # An exec start that meets the container's end gets a 500 "is not
        # running" from the engine, not the 409 of a container long stopped:
        # race a few execs against each kill to meet that moment.
        for round_ in range(10):
            if round_:
                await docker_runtime.start_container(running)
            async with anyio.create_task_group() as tasks:
                for _ in range(4):
                    tasks.start_soon(attempt)
                await docker_runtime.kill_container(running)

        with pytest.raises(ContainerGoneError) as caught:
            await _run(docker_runtime, running, "true")
        assert {exc.container_id for exc in [*gone, caught.value]} == {running}

    async def test_missing_container(self, docker_runtime: DockerRuntime) -> None:
        """Exec in a container that does not exist raises ContainerGoneError."""
        with pytest.raises(ContainerGoneError):
            await _run(docker_runtime, "rc-test-no-such-container", "true")

    async def test_container_dies_mid_exec(
        self, docker_runtime: DockerRuntime, running: str
    ) -> None:
        """A container killed while a command runs raises ContainerGoneError."""
        async with anyio.create_task_group() as tasks:

            async def kill_soon() -> None:
                async def started() -> bool:
                    return "304" in await _processes(docker_runtime, running)

                await _wait_for(started)
                await docker_runtime.kill_container(running)

            tasks.start_soon(kill_soon)
            with pytest.raises(ContainerGoneError):
                await _run(docker_runtime, running, "sleep", "304")

    async def test_concurrency_cap(
        self, docker_labels: DockerLab, busybox_image: str, docker_engine: str
    ) -> None:
        """No more than max_concurrent_execs commands run at once."""
        # Each command counts the markers present while its own exists.
        script = (
            "touch /tmp/run.$$; ls /tmp | grep -c run. >/tmp/seen.$$; "
            "sleep 0.5; rm /tmp/run.$$"
        )
        async with open_docker_runtime(max_concurrent_execs=2) as rt:
            info = await rt.create_container(_spec(docker_labels, busybox_image))
            await rt.start_container(info.id)
            async with anyio.create_task_group() as tasks:
                for _ in range(6):
                    tasks.start_soon(_run, rt, info.id, "sh", "-c", script)
            seen = await _run(rt, info.id, "sh", "-c", "cat /tmp/seen.*")

        counts = [int(line) for line in seen.stdout.split()]
        assert len(counts) == 6
        assert max(counts) <= 2


# -- events -----------------------------------------------------------------


@docker
class TestEvents:
    """The engine's container events, filtered by labels."""

    async def test_kill_gives_die_137(
        self,
        docker_runtime: DockerRuntime,
        docker_labels: DockerLab,
        busybox_image: str,
    ) -> None:
        """Killing a labelled container yields its die event with exit code 137."""
        watched = {**docker_labels.labels, "io.rolecall.member": "watched"}
        spec = _spec(docker_labels, busybox_image)
        target = ContainerSpec(name=spec.name, image=busybox_image, labels=watched)
        other = await docker_runtime.create_container(
            _spec(docker_labels, busybox_image)
        )
        info = await docker_runtime.create_container(target)

        seen: list[EngineEvent] = []
        async with docker_runtime.open_event_stream(labels=watched) as events:
            await docker_runtime.start_container(other.id)
            await docker_runtime.start_container(info.id)
            await docker_runtime.kill_container(info.id)
            with anyio.fail_after(30):
                async for event in events:
                    seen.append(event)
                    if event.action == "die":
                        break

        assert {event.container_id for event in seen} == {info.id}
        die = seen[-1]
        assert (die.action, die.exit_code) == ("die", 137)
        assert die.labels["io.rolecall.member"] == "watched"
        assert die.time > 0
        assert seen[0].action == "start"

    async def test_leaving_block_ends_stream(
        self, docker_runtime: DockerRuntime, docker_labels: DockerLab
    ) -> None:
        """Once the block is left, the iterator is exhausted."""
        async with docker_runtime.open_event_stream(
            labels=docker_labels.labels
        ) as events:
            pass

        with pytest.raises(StopAsyncIteration):
            await anext(aiter(events))


# -- networks and volumes ---------------------------------------------------


@docker
class TestNetworksAndVolumes:
    """Networks and volumes: idempotent create and remove, listed by labels."""

    async def test_network_life(
        self, docker_runtime: DockerRuntime, docker_labels: DockerLab
    ) -> None:
        """A network is created once, listed by its labels, and removed twice."""
        name = docker_labels.name("net")
        await docker_runtime.create_network(name, labels=docker_labels.labels)
        await docker_runtime.create_network(name, labels=docker_labels.labels)
        assert await docker_runtime.list_networks(labels=docker_labels.labels) == [name]

        await docker_runtime.remove_network(name)
        await docker_runtime.remove_network(name)
        assert await docker_runtime.list_networks(labels=docker_labels.labels) == []

    async def test_volume_life(
        self, docker_runtime: DockerRuntime, docker_labels: DockerLab
    ) -> None:
        """A volume is created once, listed by its labels, and removed twice."""
        name = docker_labels.name("vol")
        await docker_runtime.create_volume(name, labels=docker_labels.labels)
        await docker_runtime.create_volume(name, labels=docker_labels.labels)
        assert await docker_runtime.list_volumes(labels=docker_labels.labels) == [name]

        await docker_runtime.remove_volume(name)
        await docker_runtime.remove_volume(name)
        assert await docker_runtime.list_volumes(labels=docker_labels.labels) == []

    async def test_a_volume_keeps_its_first_creators_labels(
        self, docker_runtime: DockerRuntime, docker_labels: DockerLab
    ) -> None:
        """A second create of a name answers with the labels the volume was
        made with, as inspecting it does; a missing volume has none."""
        name = docker_labels.name("claim")
        first = {**docker_labels.labels, "io.rolecall.owner": "first"}
        second = {**docker_labels.labels, "io.rolecall.owner": "second"}
        made = await docker_runtime.create_volume(name, labels=first)
        found = await docker_runtime.create_volume(name, labels=second)
        read = await docker_runtime.volume_labels(name)
        await docker_runtime.remove_volume(name)

        assert made == found == read == first
        assert await docker_runtime.volume_labels(name) is None
