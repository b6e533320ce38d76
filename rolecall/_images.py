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

``_recipes`` reads a recipe and works out its tags, ``_image_build`` runs the
steps; this module decides which steps to run, and is the command line.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

import anyio

from ._image_build import (
    Log,
    _build_base,
    _build_image,
    _build_lock,
    _image_exists,
)
from ._recipes import DEBIAN_SUITE, Recipe, image_tag, known_images, load_recipe
from .hooks_protocol import ImageBuildError

__all__ = [
    "DEBIAN_SUITE",
    "Recipe",
    "ensure_image",
    "image_tag",
    "known_images",
    "load_recipe",
]


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
