"""Image recipes: reading one from the installed package, and its tags.

A recipe's tags are hashes of what it is built from, so a tag names one
exact build: the base's tag hashes the Debian package list, the image's
every recipe file, its mode and the hook SDK.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from importlib.resources.abc import Traversable

from attrs import frozen

from .hooks_protocol import ImageBuildError

__all__ = [
    "DEBIAN_SUITE",
    "Recipe",
    "RecipeFile",
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

# Part of every digest: bump it when the build itself changes (context
# layout, file modes, build arguments) so images made the old way are not
# reused.
_BUILDER_REVISION = "1"


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
