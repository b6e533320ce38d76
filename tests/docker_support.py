"""Support for tests that need a real Docker engine.

Tests marked ``docker`` get these fixtures through ``conftest.py``:

- ``docker_engine``: checks once per session that an engine answers and
  removes what earlier, finished runs left behind. Without an engine the
  test fails when ``CI`` or ``ROLECALL_REQUIRE_DOCKER`` is set, else skips.
- ``docker_labels``: the labels every object a test creates must carry;
  everything carrying them is removed when the test ends.
- ``busybox_image``: a 2 MB image built ``FROM scratch`` with a static
  busybox, reused across runs while its recipe stays the same.
- ``docker_runtime``: a `DockerRuntime` on the engine (asyncio only).

Modules that drive whole services import these from here as well:

- ``docker_case``: like ``docker_labels``, plus a label unique to the test
  (``io.rolecall.test.case``), so its clean-up removes exactly what that
  test made; it also names services so that parallel runs never collide.
- ``redis_image``: the example Redis image, built by `ensure_image` once
  and reused while its recipe stays the same.
- ``nanobox_image``: a busybox image with one Nanobox-style ``plan`` hook
  whose plan offers the standalone topology only.
- ``second_engine``: a second ``dockerd`` for the session, reached over TCP
  with TLS client certificates (see ``second_engine.py``); stopped, and its
  bridge deleted, when the session ends.

Everything a run creates carries ``io.rolecall.test=<run id>`` and the owner
label ``io.rolecall.test.owner=<pid>:<start time>``. The owner label makes
the clean-up of leftovers safe while other runs share the engine: an object
is removed only when the process that made it has ended.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from attrs import frozen
from second_engine import (
    SecondEngine,
    SecondEngineError,
    start_second_engine,
    stop_second_engine,
)

if TYPE_CHECKING:
    from rolecall.actors import DockerRuntime

__all__ = [
    "OWNER_LABEL",
    "RUN_LABEL",
    "DockerLab",
    "busybox_image",
    "docker_case",
    "docker_engine",
    "docker_engine_gate",
    "docker_labels",
    "docker_runtime",
    "engine_problem",
    "nanobox_image",
    "redis_image",
    "remove_labelled",
    "second_engine",
]

RUN_LABEL = "io.rolecall.test"
OWNER_LABEL = "io.rolecall.test.owner"
CASE_LABEL = "io.rolecall.test.case"
IMAGE_LABEL = "io.rolecall.test.image"

BUSYBOX = Path("/bin/busybox")

_DOCKERFILE = """\
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN ["/bin/busybox", "mkdir", "-m", "1777", "/tmp"]
CMD ["sleep", "86400"]
"""

_CLI_TIMEOUT = 120


def _process_identity(pid: int) -> str | None:
    """``pid:start-time`` of a live process; ``None`` once it has ended."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except OSError:
        return None

    start = stat.rsplit(")", 1)[1].split()[19]
    return f"{pid}:{start}"


_OWNER = _process_identity(os.getpid()) or str(os.getpid())
_RUN_ID = uuid.uuid4().hex[:12]
_names = itertools.count()


@frozen
class DockerLab:
    """What one test may create on the engine, and how to name it.

    Attributes:
        run_id: This run's value of ``io.rolecall.test``.
        labels: The labels every created object must carry.
    """

    run_id: str
    labels: dict[str, str]

    def name(self, prefix: str) -> str:
        """A name for a container, network or volume, unique in this run."""
        return f"rc-test-{prefix}-{self.run_id}-{next(_names)}"

    def service(self, prefix: str) -> str:
        """A service name, unique on the engine, that rolecall accepts.

        rolecall derives container, volume and network names from it, so
        two runs sharing an engine must never pick the same one.
        """
        return f"{prefix}-{self.run_id}-{next(_names)}"


def _docker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=_CLI_TIMEOUT,
    )


def engine_problem() -> str | None:
    """Why Docker tests cannot run here; ``None`` when an engine answers."""
    if shutil.which("docker") is None:
        return "no docker client on PATH"

    try:
        answer = _docker("version", "--format", "{{.Server.Version}}")
    except subprocess.TimeoutExpired:
        return "the Docker engine did not answer within 120 s"

    if answer.returncode != 0:
        lines = answer.stderr.strip().splitlines() or ["no reason given"]
        return f"no Docker engine answers: {lines[-1]}"

    return None


def remove_labelled(label: str) -> None:
    """Remove every container, network and volume carrying ``label``.

    Args:
        label: ``key`` or ``key=value``, as the CLI's label filter takes it.
    """
    listing = _docker("ps", "-aq", "--filter", f"label={label}")
    containers = listing.stdout.split()
    if containers:
        _docker("rm", "-f", "-v", *containers)

    listing = _docker("network", "ls", "-q", "--filter", f"label={label}")
    for network in listing.stdout.split():
        _docker("network", "rm", network)

    listing = _docker("volume", "ls", "-q", "--filter", f"label={label}")
    for volume in listing.stdout.split():
        _docker("volume", "rm", "-f", volume)


def _remove_leftovers() -> None:
    """Remove what earlier runs left, once the process that made it is gone."""
    owners: set[str] = set()
    owner_format = f'{{{{.Label "{OWNER_LABEL}"}}}}'
    for kind in (["ps", "-a"], ["network", "ls"], ["volume", "ls"]):
        listing = _docker(
            *kind, "--filter", f"label={OWNER_LABEL}", "--format", owner_format
        )
        owners.update(listing.stdout.split())

    for owner in owners:
        pid, _, _ = owner.partition(":")
        if not pid.isdigit() or _process_identity(int(pid)) == owner:
            continue
        remove_labelled(f"{OWNER_LABEL}={owner}")


def _fail_or_skip(reason: str) -> None:
    if os.environ.get("CI") or os.environ.get("ROLECALL_REQUIRE_DOCKER"):
        pytest.fail(f"{reason} (a Docker engine is required here)")

    pytest.skip(f"{reason}; start one, or deselect with -m 'not docker'")


@pytest.fixture(scope="session")
def docker_engine() -> str:
    """Check once that an engine answers; clear finished runs' leftovers.

    Returns:
        This run's id, the value of ``io.rolecall.test``.
    """
    problem = engine_problem()
    if problem is not None:
        _fail_or_skip(problem)

    _remove_leftovers()
    return _RUN_ID


@pytest.fixture(autouse=True)
def docker_engine_gate(request: pytest.FixtureRequest) -> None:
    """Apply the skip-or-fail rule to every test marked ``docker``."""
    if request.node.get_closest_marker("docker") is not None:
        request.getfixturevalue("docker_engine")


@pytest.fixture
def docker_labels(docker_engine: str) -> Iterator[DockerLab]:
    """Labels for what the test creates; all of it is removed afterwards."""
    labels = {RUN_LABEL: docker_engine, OWNER_LABEL: _OWNER}
    yield DockerLab(run_id=docker_engine, labels=labels)
    remove_labelled(f"{RUN_LABEL}={docker_engine}")


@pytest.fixture
def docker_case(docker_engine: str) -> Iterator[DockerLab]:
    """Labels unique to one test; what carries them is removed afterwards.

    Leftovers of earlier runs went when the session started (see
    ``docker_engine``); this removes the test's own objects, and only them.
    """
    case = uuid.uuid4().hex[:8]
    labels = {RUN_LABEL: docker_engine, OWNER_LABEL: _OWNER, CASE_LABEL: case}
    yield DockerLab(run_id=case, labels=labels)
    remove_labelled(f"{CASE_LABEL}={case}")


def _recipe_digest(busybox: bytes) -> str:
    digest = hashlib.sha256(_DOCKERFILE.encode())
    digest.update(busybox)
    return digest.hexdigest()[:12]


@pytest.fixture(scope="session")
def busybox_image(docker_engine: str) -> str:
    """A busybox image built ``FROM scratch``; its tag names its recipe."""
    if not BUSYBOX.is_file():
        _fail_or_skip(f"no static busybox at {BUSYBOX} (package busybox-static)")

    busybox = BUSYBOX.read_bytes()
    tag = f"rolecall-test/busybox:{_recipe_digest(busybox)}"
    if _docker("image", "inspect", tag).returncode == 0:
        return tag

    with tempfile.TemporaryDirectory() as context:
        Path(context, "Dockerfile").write_text(_DOCKERFILE, encoding="utf-8")
        copy = Path(context, "busybox")
        copy.write_bytes(busybox)
        copy.chmod(0o755)
        label = f"{IMAGE_LABEL}=busybox"
        built = subprocess.run(
            ["docker", "build", "-q", "-t", tag, "--label", label, context],
            capture_output=True,
            text=True,
            check=False,
            timeout=_CLI_TIMEOUT,
            env={**os.environ, "DOCKER_BUILDKIT": "0"},
        )
    if built.returncode != 0:
        pytest.fail(f"could not build {tag}: {built.stderr.strip()}")

    return tag


@pytest.fixture
async def docker_runtime(
    docker_engine: str, anyio_backend: str
) -> AsyncIterator[DockerRuntime]:
    """A runtime on the engine the CLI talks to; closed after the test."""
    if anyio_backend != "asyncio":
        pytest.skip("the Docker runtime runs on asyncio only")

    # Imported here so that conftest.py, which imports this module, does not
    # tie every test's collection to the actors package.
    from rolecall.actors import open_docker_runtime

    async with open_docker_runtime() as runtime:
        yield runtime


@pytest.fixture(scope="session")
def redis_image(docker_engine: str) -> str:
    """The example Redis image: built on first use, then reused by its tag."""
    # Imported here, like `docker_runtime`'s import, to keep collection light.
    import anyio

    from rolecall._images import ensure_image

    return anyio.run(ensure_image, "redis")


_NANOBOX_PLAN = """\
#!/bin/sh
echo '{"roles": ["standalone"], "topologies": ["standalone"],\
 "ports": [6379], "data_paths": ["/data"]}'
"""

_NANOBOX_DOCKERFILE = """\
FROM {base}
LABEL io.rolecall.hooks.mode="nanobox"
COPY plan /opt/rolecall/hooks/plan
"""


@pytest.fixture(scope="session")
def nanobox_image(busybox_image: str) -> str:
    """A busybox image whose Nanobox-style plan offers standalone only."""
    dockerfile = _NANOBOX_DOCKERFILE.format(base=busybox_image)
    digest = hashlib.sha256(f"{dockerfile}\0{_NANOBOX_PLAN}".encode())
    tag = f"rolecall-test/nanobox:{digest.hexdigest()[:12]}"
    if _docker("image", "inspect", tag).returncode == 0:
        return tag

    with tempfile.TemporaryDirectory() as context:
        Path(context, "Dockerfile").write_text(dockerfile, encoding="utf-8")
        plan = Path(context, "plan")
        plan.write_text(_NANOBOX_PLAN, encoding="utf-8")
        plan.chmod(0o755)
        label = f"{IMAGE_LABEL}=nanobox"
        built = subprocess.run(
            ["docker", "build", "-q", "-t", tag, "--label", label, context],
            capture_output=True,
            text=True,
            check=False,
            timeout=_CLI_TIMEOUT,
            env={**os.environ, "DOCKER_BUILDKIT": "0"},
        )
    if built.returncode != 0:
        pytest.fail(f"could not build {tag}: {built.stderr.strip()}")

    return tag


@pytest.fixture(scope="session")
def second_engine(docker_engine: str) -> Iterator[SecondEngine]:
    """A second engine for this session, on TCP with TLS; stopped at the end.

    Fails under ``CI``/``ROLECALL_REQUIRE_DOCKER`` when it cannot start,
    skips otherwise. Copy images into it with its ``load_image``.
    """
    try:
        engine = start_second_engine(_OWNER)
    except (SecondEngineError, OSError, subprocess.SubprocessError) as exc:
        _fail_or_skip(f"no second Docker engine could start: {exc}")

    yield engine
    stop_second_engine(engine)
