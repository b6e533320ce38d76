"""What the benchmarks on a real Docker engine share: labels and clean-up.

Every container, network and volume a benchmark creates carries
``io.rolecall.bench=<run id>`` and ``io.rolecall.bench.owner=<pid>:<start
time>``. A run removes what carries its run id when it ends, on failure
too, and before it starts removes what earlier runs left behind, once the
process that made it has ended (so two runs sharing an engine never remove
each other's objects). The clean-up drives the ``docker`` CLI, as the test
suite's does; the measurements go through the API.

The one image built here, of no-op hooks, is a build product like the
example images: labelled ``io.rolecall.bench.image``, tagged with a hash of
its recipe, and reused by later runs while the recipe stays the same
(removing an image can stall for minutes on a busy shared engine).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from _bench import cannot_run

__all__ = [
    "BENCH_LABEL",
    "IMAGE_LABEL",
    "OWNER_LABEL",
    "BenchLab",
    "noop_hook_image",
    "open_lab",
]

BENCH_LABEL = "io.rolecall.bench"
OWNER_LABEL = "io.rolecall.bench.owner"
IMAGE_LABEL = "io.rolecall.bench.image"

_CLI_TIMEOUT = 120
_BUSYBOX = Path("/bin/busybox")

# No RUN step: it would leave an intermediate image behind each build.
_NOOP_DOCKERFILE = """\
FROM scratch
COPY busybox /bin/busybox
COPY hooks /opt/rolecall/hooks
CMD ["/bin/busybox", "sleep", "86400"]
"""

_NOOP_HOOK = "#!/bin/busybox sh\nexit 0\n"
"""A hook that does nothing: no read of its payload, no output, exit 0."""


def _process_identity(pid: int) -> str | None:
    """``pid:start-time`` of a live process; ``None`` once it has ended."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except OSError:
        return None

    return f"{pid}:{stat.rsplit(')', 1)[1].split()[19]}"


def docker(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the docker CLI and capture its output; a hang counts as a failure.

    A busy shared engine can take minutes over a removal: clean-up then
    leaves the object for the next run's leftover sweep rather than fail.
    """
    try:
        return subprocess.run(
            ["docker", *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=_CLI_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        print(f"  docker {args[0]} did not answer in {_CLI_TIMEOUT} s", flush=True)
        return subprocess.CompletedProcess(["docker", *args], -1, "", "")


class BenchLab:
    """The labels of one benchmark run, and names unique to it.

    Attributes:
        run_id: This run's value of `BENCH_LABEL`.
        labels: What every object the run creates must carry.
    """

    def __init__(self) -> None:
        self.run_id = uuid.uuid4().hex[:8]
        owner = _process_identity(os.getpid()) or str(os.getpid())
        self.labels = {BENCH_LABEL: self.run_id, OWNER_LABEL: owner}
        self._serial = 0

    def name(self, prefix: str) -> str:
        """A name for a service, container, network or volume of this run."""
        self._serial += 1
        return f"{prefix}-{self.run_id}-{self._serial}"

    def remove_own(self) -> None:
        """Remove everything this run created."""
        _remove_labelled(f"{BENCH_LABEL}={self.run_id}")


def _remove_labelled(label: str) -> None:
    found = docker("ps", "-aq", "--filter", f"label={label}").stdout.split()
    if found:
        docker("rm", "-f", "-v", *found)

    for kind in ("network", "volume"):
        for name in docker(
            kind, "ls", "-q", "--filter", f"label={label}"
        ).stdout.split():
            docker(kind, "rm", name)


def _remove_leftovers() -> int:
    owners: set[str] = set()
    owner_format = f'{{{{.Label "{OWNER_LABEL}"}}}}'
    for kind in (["ps", "-a"], ["network", "ls"], ["volume", "ls"]):
        listing = docker(
            *kind, "--filter", f"label={OWNER_LABEL}", "--format", owner_format
        )
        owners.update(listing.stdout.split())

    removed = 0
    for owner in owners:
        pid, _, _ = owner.partition(":")
        if pid.isdigit() and _process_identity(int(pid)) != owner:
            _remove_labelled(f"{OWNER_LABEL}={owner}")
            removed += 1

    return removed


@contextmanager
def open_lab() -> Iterator[BenchLab]:
    """Check the engine, clear old leftovers, and clean up after the block.

    Exits with status 2 (through `cannot_run`) when no engine answers.
    """
    if shutil.which("docker") is None:
        cannot_run("no docker client on PATH")

    answer = docker("version", "--format", "{{.Server.Version}}")
    if answer.returncode != 0:
        lines = answer.stderr.strip().splitlines() or ["no reason given"]
        cannot_run(f"no Docker engine answers: {lines[-1]}")

    removed = _remove_leftovers()
    if removed:
        print(f"  removed leftovers of {removed} earlier run(s)", flush=True)

    lab = BenchLab()
    try:
        yield lab
    finally:
        lab.remove_own()


def noop_hook_image(hooks: tuple[str, ...]) -> str:
    """A 2 MB image whose hooks all do nothing, built once; return its tag.

    Raises:
        SystemExit: No static busybox to build it from (status 2).
    """
    if not _BUSYBOX.exists():
        cannot_run(f"{_BUSYBOX} is missing; install busybox-static")

    recipe = (_NOOP_DOCKERFILE + _NOOP_HOOK + ",".join(hooks)).encode()
    digest = hashlib.sha256(recipe + _BUSYBOX.read_bytes()).hexdigest()[:12]
    tag = f"rolecall-bench/noop:{digest}"
    if docker("image", "inspect", "--format", "{{.Id}}", tag).returncode == 0:
        return tag

    with tempfile.TemporaryDirectory(prefix="rolecall-bench-") as context:
        root = Path(context)
        shutil.copy2(_BUSYBOX, root / "busybox")
        (root / "Dockerfile").write_text(_NOOP_DOCKERFILE)
        (root / "hooks").mkdir()
        for hook in hooks:
            path = root / "hooks" / hook
            path.write_text(_NOOP_HOOK)
            path.chmod(0o755)

        built = subprocess.run(
            [
                "docker",
                "build",
                "-q",
                "-t",
                tag,
                "--label",
                f"{IMAGE_LABEL}=noop",
                str(root),
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=_CLI_TIMEOUT,
            env={**os.environ, "DOCKER_BUILDKIT": "0"},
        )

    if built.returncode != 0:
        cannot_run(f"could not build the no-op hook image: {built.stderr.strip()}")

    return tag
