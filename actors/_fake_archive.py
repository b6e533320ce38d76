"""Tar archives in and out of a fake container's files.

A `FakeContainer` keeps its filesystem as ``files``: absolute path ->
contents. These helpers turn the files under a directory into a real tar
archive and unpack one back, so code that copies directories between
containers sees the same bytes it would see from an engine.
"""

from __future__ import annotations

import io
import posixpath
import tarfile
from collections.abc import AsyncIterable, Iterator

from rolecall.hooks_protocol import EngineError

FAKE_ARCHIVE_CHUNK = 64 * 1024
"""The size of the pieces the fake streams an archive in."""


def _directory(path: str) -> str:
    return posixpath.normpath("/" + path.strip("/"))


def archive_chunks(
    files: dict[str, bytes], path: str, *, owner: str
) -> Iterator[bytes]:
    """The files under directory ``path`` as a tar archive, in pieces.

    Raises:
        EngineError: No file lies under ``path`` (the fake knows a
            directory only by the files in it).
    """
    directory = _directory(path)
    prefix = directory.rstrip("/") + "/"
    inside = sorted(name for name in files if name.startswith(prefix))
    if not inside:
        raise EngineError(
            f"the fake engine could not read {path!r} as an archive in "
            f"container {owner!r}: nothing lies under it"
        )

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in inside:
            member = tarfile.TarInfo("./" + name[len(prefix) :])
            member.size = len(files[name])
            tar.addfile(member, io.BytesIO(files[name]))

    data = buffer.getvalue()
    for start in range(0, len(data), FAKE_ARCHIVE_CHUNK):
        yield data[start : start + FAKE_ARCHIVE_CHUNK]


async def unpack_into(
    files: dict[str, bytes], path: str, archive: AsyncIterable[bytes], *, owner: str
) -> None:
    """Unpack a tar archive's regular files under directory ``path``.

    Raises:
        EngineError: The bytes are not a tar archive, or an entry would
            land outside ``path``.
    """
    buffer = io.BytesIO()
    async for chunk in archive:
        buffer.write(chunk)

    buffer.seek(0)
    directory = _directory(path)
    unpacked: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=buffer, mode="r:") as tar:
            for member in tar:
                target = posixpath.normpath(posixpath.join(directory, member.name))
                if not (target + "/").startswith(directory.rstrip("/") + "/"):
                    raise EngineError(
                        f"archive entry {member.name!r} would land outside "
                        f"{path!r} in container {owner!r}"
                    )
                extracted = tar.extractfile(member) if member.isfile() else None
                if extracted is not None:
                    unpacked[target] = extracted.read()
    except tarfile.TarError as exc:
        raise EngineError(
            f"the fake engine could not unpack into {path!r} in container "
            f"{owner!r}: not a tar archive ({exc})"
        ) from exc

    files.update(unpacked)
