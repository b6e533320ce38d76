"""The steps of an image build: base, image, and the commands behind them.

Each step drives a command-line tool with argv lists only (``debootstrap``,
``tar``, ``docker``), keeps its work in a temporary directory it removes,
and turns a failure into `ImageBuildError` with the command's last lines of
output and what to do. A lock file makes two builders of one recipe on this
machine take turns.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path

import anyio
from anyio.abc import ByteReceiveStream, Process

from ._recipes import _HOOKS_DIR, _SDK_FILE, DEBIAN_SUITE, Recipe
from .hooks_protocol import ImageBuildError

_LABEL_RECIPE = "io.rolecall.recipe"
_LABEL_DIGEST = "io.rolecall.recipe.digest"

_STDERR_LINES = 12
"""How many trailing lines of a failed command an error shows."""

_LOCK_POLL = 0.5
"""Seconds between attempts to take another builder's lock."""

Log = Callable[[str], object]


# -- steps --------------------------------------------------------------------


async def _image_exists(tag: str, *, env: Mapping[str, str]) -> bool:
    argv = ["docker", "image", "inspect", "--format", "{{.Id}}", tag]
    result = await _run(argv, image=tag, env=env, check=False)
    if result.returncode == 0:
        return True

    if b"no such image" in result.stderr.lower():
        return False

    raise ImageBuildError(
        f"could not ask the engine for image {tag!r} "
        f"(exit {result.returncode}): {_tail(result.stderr)}; "
        f"check that a Docker engine answers at "
        f"{env.get('DOCKER_HOST', 'the default socket')}",
        image=tag,
    )


async def _build_base(recipe: Recipe, *, env: Mapping[str, str], say: Log) -> None:
    tag = recipe.base_tag
    if shutil.which("debootstrap") is None:
        raise ImageBuildError(
            f"debootstrap is missing, needed to build {tag}: "
            f"apt-get install debootstrap",
            image=tag,
        )

    work = Path(await anyio.to_thread.run_sync(_mkdtemp, "rolecall-rootfs-"))
    try:
        rootfs = work / "rootfs"
        say(f"debootstrap {DEBIAN_SUITE} with {', '.join(recipe.packages)}")
        argv = [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(recipe.packages)}",
            DEBIAN_SUITE,
            str(rootfs),
        ]
        try:
            await _run(argv, image=tag, env=env, hint=_DEBOOTSTRAP_HINT)
        except ImageBuildError as exc:
            # The root file system, and the log in it, go away below.
            log = rootfs / "debootstrap" / "debootstrap.log"
            detail = await anyio.to_thread.run_sync(_read_tail, log)
            raise ImageBuildError(f"{exc}; its log ends: {detail}", image=tag) from exc

        await anyio.to_thread.run_sync(_trim_rootfs, rootfs)
        say(f"importing the root file system as {tag}")
        await _import_rootfs(rootfs, recipe, env=env)
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(_remove_tree, work)


async def _import_rootfs(
    rootfs: Path, recipe: Recipe, *, env: Mapping[str, str]
) -> None:
    tag = recipe.base_tag
    tar = ["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."]
    docker = [
        "docker",
        "import",
        "--change",
        f"LABEL {_LABEL_RECIPE}={recipe.name}-base",
        "-",
        tag,
    ]
    read_end, write_end = os.pipe()
    try:
        tar_proc = await _open(tar, image=tag, stdout=write_end)
        async with tar_proc:
            try:
                docker_proc = await _open(docker, image=tag, stdin=read_end, env=env)
            finally:
                # Only the children hold the pipe now: tar sees a broken pipe
                # when docker exits early instead of blocking forever.
                os.close(write_end)
                os.close(read_end)
                read_end = write_end = -1

            async with docker_proc:
                tar_err, docker_err = await _drain(tar_proc, docker_proc)
    finally:
        for fd in (read_end, write_end):
            if fd >= 0:
                os.close(fd)

    if docker_proc.returncode != 0:
        raise ImageBuildError(
            f"docker import failed (exit {docker_proc.returncode}): "
            f"{_tail(docker_err)}; check the engine and its free disk space",
            image=tag,
        )

    if tar_proc.returncode != 0:
        # docker may have imported the truncated stream: drop it.
        await _run(["docker", "rmi", tag], image=tag, env=env, check=False)
        raise ImageBuildError(
            f"tar of the root file system failed (exit {tar_proc.returncode}): "
            f"{_tail(tar_err)}",
            image=tag,
        )


async def _build_image(recipe: Recipe, *, env: Mapping[str, str], say: Log) -> None:
    context = Path(await anyio.to_thread.run_sync(_mkdtemp, "rolecall-context-"))
    try:
        await anyio.to_thread.run_sync(_write_context, recipe, context)
        say(f"building {recipe.tag} from {recipe.base_tag}")
        argv = [
            "docker",
            "build",
            "--build-arg",
            f"BASE={recipe.base_tag}",
            "--label",
            f"{_LABEL_RECIPE}={recipe.name}",
            "--label",
            f"{_LABEL_DIGEST}={recipe.digest}",
            "--force-rm",
            "--tag",
            recipe.tag,
            str(context),
        ]
        build_env = {**env, "DOCKER_BUILDKIT": "0"}
        await _run(argv, image=recipe.tag, env=build_env, hint=_BUILD_HINT)
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(_remove_tree, context)


# -- processes ----------------------------------------------------------------

_DEBOOTSTRAP_HINT = "debootstrap needs root and a reachable Debian mirror"
_BUILD_HINT = "the recipe's Dockerfile or the base image is at fault"


async def _run(
    argv: Sequence[str],
    *,
    image: str,
    env: Mapping[str, str],
    check: bool = True,
    hint: str = "",
) -> subprocess.CompletedProcess[bytes]:
    try:
        result = await anyio.run_process(argv, check=False, env=env)
    except FileNotFoundError as exc:
        raise ImageBuildError(_missing_tool(argv[0]), image=image) from exc

    if check and result.returncode != 0:
        output = result.stdout + b"\n" + result.stderr
        advice = f"; {hint}" if hint else ""
        command = " ".join(argv[:2]) if argv[0] == "docker" else argv[0]
        raise ImageBuildError(
            f"{command} failed (exit {result.returncode}): {_tail(output)}{advice}",
            image=image,
        )

    return result


async def _open(
    argv: Sequence[str],
    *,
    image: str,
    stdin: int | None = None,
    stdout: int | None = None,
    env: Mapping[str, str] | None = None,
) -> Process:
    try:
        return await anyio.open_process(
            argv,
            stdin=stdin if stdin is not None else subprocess.DEVNULL,
            stdout=stdout if stdout is not None else subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
    except FileNotFoundError as exc:
        raise ImageBuildError(_missing_tool(argv[0]), image=image) from exc


async def _drain(*procs: Process) -> list[bytes]:
    """Wait for every process; return each one's stderr."""
    outputs: list[bytearray] = [bytearray() for _ in procs]

    async def read(stream: ByteReceiveStream | None, into: bytearray) -> None:
        if stream is None:
            return

        async for chunk in stream:
            into.extend(chunk)

    async with anyio.create_task_group() as tg:
        for proc, into in zip(procs, outputs, strict=True):
            tg.start_soon(read, proc.stderr, into)
            tg.start_soon(read, proc.stdout, bytearray())

    for proc in procs:
        await proc.wait()

    return [bytes(out) for out in outputs]


def _missing_tool(tool: str) -> str:
    package = {"docker": "docker.io", "debootstrap": "debootstrap"}.get(tool, tool)

    return f"{tool} is not on PATH: apt-get install {package}"


def _tail(output: bytes) -> str:
    lines = output.decode(errors="replace").strip().splitlines()
    if not lines:
        return "(no output)"

    return " | ".join(lines[-_STDERR_LINES:])


def _read_tail(path: Path) -> str:
    try:
        return _tail(path.read_bytes())
    except OSError:
        return "(no log)"


# -- files --------------------------------------------------------------------


def _write_context(recipe: Recipe, context: Path) -> None:
    for item in recipe.files:
        target = context / item.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(item.content)
        target.chmod(0o755 if item.executable else 0o644)

    sdk = context / _HOOKS_DIR / _SDK_FILE
    sdk.parent.mkdir(parents=True, exist_ok=True)
    sdk.write_bytes(recipe.sdk)
    sdk.chmod(0o644)


def _trim_rootfs(rootfs: Path) -> None:
    """Drop the downloaded packages and indexes: a third of the size."""
    for pattern in ("var/cache/apt/archives/*.deb", "var/lib/apt/lists/*_*"):
        for path in rootfs.glob(pattern):
            path.unlink()


def _mkdtemp(prefix: str) -> str:
    return tempfile.mkdtemp(prefix=prefix)


def _remove_tree(path: Path) -> None:
    """Delete a temporary tree, unless something is still mounted inside.

    debootstrap mounts /proc and /sys into the root file system while it
    runs; if it is killed, deleting through those mounts would reach the
    host's files.
    """
    mounted = _mounts_under(path)
    for point in sorted(mounted, reverse=True):
        subprocess.run(["umount", "--lazy", str(point)], check=False)

    if _mounts_under(path):
        return

    shutil.rmtree(path, ignore_errors=True)


def _mounts_under(path: Path) -> list[Path]:
    root = str(path.resolve())
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []

    points = (Path(line.split()[4]) for line in lines)

    return [p for p in points if str(p) == root or str(p).startswith(root + "/")]


@contextlib.asynccontextmanager
async def _build_lock(name: str) -> AsyncIterator[None]:
    """Hold a lock file so two builders of one recipe take turns."""
    path = Path(tempfile.gettempdir()) / f"rolecall-image-{name}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise

            await anyio.sleep(_LOCK_POLL)

        yield
    finally:
        os.close(fd)
