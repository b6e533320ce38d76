"""Build the example images from their recipes, with no registry in reach.

A recipe is a folder of the ``rolecall.images`` package: a ``Dockerfile``,
a ``packages.txt`` (the Debian packages of its base) and the hooks. Building
takes two steps, each skipped when its tag exists already:

1. the base: ``debootstrap`` of the packages into a temporary root file
   system, streamed by ``tar`` into ``docker import``; tagged
   ``rolecall/<name>-base:<hash of the package list>``;
2. the image: ``docker build`` (the classic builder) of a temporary context
   holding the recipe and a copy of the hook SDK; tagged
   ``rolecall/<name>:<hash of every recipe file and the SDK>``.

A change to any recipe file or to the SDK gives a new tag, so an image is
never stale and never rebuilt for nothing. The builder drives the ``docker``
CLI (argv lists only): it is a set-up tool, not part of the runtime adapter.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import anyio
from anyio.abc import ByteReceiveStream, Process
from attrs import frozen

from .hooks_protocol import ImageBuildError

__all__ = [
    "DEBIAN_SUITE",
    "Recipe",
    "ensure_image",
    "image_tag",
    "known_images",
    "load_recipe",
]

DEBIAN_SUITE = "bookworm"
"""The Debian release every base image is made from."""

_RECIPES_PACKAGE = "rolecall.images"
_SDK_PACKAGE = "rolecall.hooks_protocol.sdk"
_SDK_FILE = "rolecall_hook.py"
_HOOKS_DIR = "hooks"
_LABEL_RECIPE = "io.rolecall.recipe"
_LABEL_DIGEST = "io.rolecall.recipe.digest"

# Part of every digest: bump it when the build itself changes (context
# layout, file modes, build arguments) so images made the old way are not
# reused.
_BUILDER_REVISION = "1"

_STDERR_LINES = 12
"""How many trailing lines of a failed command an error shows."""

_LOCK_POLL = 0.5
"""Seconds between attempts to take another builder's lock."""

Log = Callable[[str], object]


@frozen
class RecipeFile:
    """One file of a recipe, as it goes into the build context.

    Attributes:
        path: Path relative to the recipe folder, with ``/`` separators.
        content: The file's bytes.
        executable: Whether it is copied with mode 0755 (hooks) or 0644.
    """

    path: str
    content: bytes
    executable: bool


@frozen
class Recipe:
    """Everything an image is built from.

    Attributes:
        name: The recipe's folder name (``redis``).
        files: The recipe's files, sorted by path; the SDK is not among them.
        sdk: The hook SDK's source, copied next to the hooks.
        packages: The Debian packages of the base, from ``packages.txt``.
    """

    name: str
    files: tuple[RecipeFile, ...]
    sdk: bytes
    packages: tuple[str, ...]

    @property
    def base_tag(self) -> str:
        """The tag of the imported base image, from the package list."""
        digest = hashlib.sha256()
        digest.update(f"{_BUILDER_REVISION}\0{DEBIAN_SUITE}\0minbase\0".encode())
        digest.update(",".join(sorted(self.packages)).encode())

        return f"rolecall/{self.name}-base:{digest.hexdigest()[:12]}"

    @property
    def digest(self) -> str:
        """A hash over every recipe file, its mode and the SDK."""
        digest = hashlib.sha256(f"{_BUILDER_REVISION}\0".encode())
        for item in self.files:
            mode = b"x" if item.executable else b"-"
            digest.update(
                b"%s\0%s\0%d\0" % (item.path.encode(), mode, len(item.content))
            )
            digest.update(item.content)

        digest.update(b"%s\0%d\0" % (_SDK_FILE.encode(), len(self.sdk)))
        digest.update(self.sdk)

        return digest.hexdigest()

    @property
    def tag(self) -> str:
        """The image's tag: ``rolecall/<name>:<first 12 hex digits>``."""
        return f"rolecall/{self.name}:{self.digest[:12]}"


def known_images() -> list[str]:
    """The names of the recipes shipped with rolecall.

    Returns:
        Folder names under ``rolecall.images`` that hold a ``Dockerfile``,
        sorted.
    """
    root = resources.files(_RECIPES_PACKAGE)

    return sorted(
        entry.name
        for entry in root.iterdir()
        if entry.is_dir() and (entry / "Dockerfile").is_file()
    )


def load_recipe(name: str) -> Recipe:
    """Read a recipe and the SDK from the installed package.

    Args:
        name: The recipe's name, one of `known_images`.

    Returns:
        The recipe with its files loaded.

    Raises:
        ImageBuildError: When there is no such recipe, it lacks a file it
            needs, or the SDK file is missing.
    """
    known = known_images()
    if name not in known:
        raise ImageBuildError(
            f"no image recipe named {name!r}; known recipes: {known}",
            image=name,
        )

    folder = resources.files(_RECIPES_PACKAGE) / name
    files = tuple(sorted(_walk(folder, ""), key=lambda f: f.path))
    by_path = {f.path: f for f in files}
    if "packages.txt" not in by_path:
        raise ImageBuildError(
            f"recipe {name!r} has no packages.txt listing its Debian packages",
            image=name,
        )

    if f"{_HOOKS_DIR}/{_SDK_FILE}" in by_path:
        raise ImageBuildError(
            f"recipe {name!r} carries its own {_HOOKS_DIR}/{_SDK_FILE}; "
            f"remove it, the builder copies the SDK from rolecall",
            image=name,
        )

    sdk = resources.files(_SDK_PACKAGE) / _SDK_FILE
    if not sdk.is_file():
        raise ImageBuildError(
            f"the hook SDK {_SDK_PACKAGE}/{_SDK_FILE} is missing from this "
            f"rolecall install; reinstall rolecall",
            image=name,
        )

    packages = _parse_packages(by_path["packages.txt"].content)
    if not packages:
        raise ImageBuildError(
            f"recipe {name!r} lists no packages in packages.txt", image=name
        )

    return Recipe(name=name, files=files, sdk=sdk.read_bytes(), packages=packages)


def image_tag(name: str) -> str:
    """The tag `ensure_image` gives the image of recipe ``name``.

    Raises:
        ImageBuildError: As `load_recipe`.
    """
    return load_recipe(name).tag


async def ensure_image(
    name: str,
    *,
    docker_host: str | None = None,
    log: Log | None = None,
) -> str:
    """Make sure the image of recipe ``name`` exists on the engine.

    Builds only what is missing: neither step runs when its tag exists.
    Concurrent callers on one machine wait for each other instead of
    building twice.

    Args:
        name: The recipe's name (``redis``).
        docker_host: The engine to build on (``DOCKER_HOST`` form); the
            environment's default when ``None``.
        log: Called with one line per step taken, for progress output.

    Returns:
        The image's tag, ``rolecall/<name>:<hash12>``.

    Raises:
        ImageBuildError: When a step fails; the message carries the failing
            command's last output lines and what to do.
    """
    recipe = load_recipe(name)
    say = log or _quiet
    env = dict(os.environ)
    if docker_host is not None:
        env["DOCKER_HOST"] = docker_host

    if await _image_exists(recipe.tag, env=env):
        return recipe.tag

    async with _build_lock(recipe.name):
        if await _image_exists(recipe.tag, env=env):
            return recipe.tag

        started = time.monotonic()
        if not await _image_exists(recipe.base_tag, env=env):
            await _build_base(recipe, env=env, say=say)

        await _build_image(recipe, env=env, say=say)
        say(f"built {recipe.tag} in {time.monotonic() - started:.1f} s")

    return recipe.tag


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


def _walk(folder: Traversable, prefix: str) -> list[RecipeFile]:
    found: list[RecipeFile] = []
    for entry in folder.iterdir():
        if entry.name.startswith(".") or entry.name == "__pycache__":
            continue

        path = f"{prefix}{entry.name}"
        if entry.is_dir():
            found.extend(_walk(entry, f"{path}/"))
            continue

        if entry.name.endswith(".pyc"):
            continue

        # Hooks are the files of hooks/ without a suffix; helper modules
        # beside them (name.py) are imported, not run.
        executable = prefix == f"{_HOOKS_DIR}/" and "." not in entry.name
        found.append(RecipeFile(path, entry.read_bytes(), executable))

    return found


def _parse_packages(content: bytes) -> tuple[str, ...]:
    packages = []
    for line in content.decode().splitlines():
        word = line.split("#", 1)[0].strip()
        if word:
            packages.append(word)

    return tuple(packages)


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


def _quiet(line: str) -> None:
    del line


# -- command line -------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Build images by hand: ``python -m rolecall._images redis``.

    Returns:
        The exit status: 0 when every image exists, 1 otherwise.
    """
    parser = argparse.ArgumentParser(
        prog="python -m rolecall._images",
        description="Build rolecall's example images on a local engine.",
    )
    parser.add_argument("names", nargs="*", help="recipes (default: all)")
    parser.add_argument("--docker-host", help="engine address (DOCKER_HOST form)")
    parser.add_argument(
        "--tag-only",
        action="store_true",
        help="print the tags the images would get, build nothing",
    )
    args = parser.parse_args(argv)
    names = args.names or known_images()

    def progress(line: str) -> None:
        sys.stderr.write(f"{line}\n")

    try:
        for name in names:
            if args.tag_only:
                tag = image_tag(name)
            else:
                tag = anyio.run(_ensure_for_main, name, args.docker_host, progress)

            sys.stdout.write(f"{tag}\n")
    except ImageBuildError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1

    return 0


async def _ensure_for_main(name: str, docker_host: str | None, log: Log) -> str:
    return await ensure_image(name, docker_host=docker_host, log=log)


if __name__ == "__main__":
    sys.exit(main())
