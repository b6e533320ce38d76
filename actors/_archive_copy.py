"""Copying a directory from one container to another, on any two runtimes.

`copy_directory` streams the source directory's tar archive straight into
the target's unpacking: chunk by chunk, never whole, so the memory a copy
takes does not grow with the data. The two containers may live on two
different engines.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

import anyio
from attrs import define, frozen

from ..hooks_protocol._errors import RolecallError
from ._runtime import ContainerRuntime

__all__ = ["DirectoryCopy", "copy_directory"]


@frozen
class DirectoryCopy:
    """What one `copy_directory` moved.

    Attributes:
        bytes_copied: Size of the tar archive that went across.
        chunks: How many pieces it went in.
        largest_chunk: The largest piece, in bytes: what the copy held at
            once, beyond the engines' own buffers.
        duration: Seconds from the first request to the last byte unpacked.
    """

    bytes_copied: int
    chunks: int
    largest_chunk: int
    duration: float


@define
class _Tally:
    # Each grows with every chunk that passes; never goes back.
    bytes_copied: int = 0
    chunks: int = 0
    largest_chunk: int = 0
    # What broke the source's stream, if it broke; None while it is whole.
    source_failure: RolecallError | None = None

    async def count(self, archive: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
        try:
            async for chunk in archive:
                self.bytes_copied += len(chunk)
                self.chunks += 1
                self.largest_chunk = max(self.largest_chunk, len(chunk))
                yield chunk
        except RolecallError as exc:
            self.source_failure = exc
            raise


async def copy_directory(
    source: ContainerRuntime,
    source_id: str,
    source_path: str,
    *,
    target: ContainerRuntime,
    target_id: str,
    target_path: str,
) -> DirectoryCopy:
    """Copy what directory ``source_path`` holds into ``target_path``.

    The files land directly in ``target_path`` (not in a subdirectory of
    it), replacing files of the same name; that directory must exist on
    the target. A copy cut short (an engine gone, a container stopped)
    may leave part of the files; running it again is harmless.

    Args:
        source: The runtime of the container to read.
        source_id: That container.
        source_path: The directory to copy out.
        target: The runtime of the container to write; may be ``source``.
        target_id: That container.
        target_path: The directory to unpack into.

    Returns:
        What went across.

    Raises:
        ContainerGoneError: Either container does not exist.
        EngineError: A directory does not exist, or an engine refused.
        EngineUnavailableError: An engine went away during the copy.
    """
    tally = _Tally()
    started = anyio.current_time()
    async with source.open_archive(source_id, source_path) as archive:
        try:
            await target.put_archive(target_id, target_path, tally.count(archive))
        except RolecallError as exc:
            # The target's engine client reports a source that broke
            # mid-stream as its own failure to send; the source's error
            # says what really happened.
            if tally.source_failure is None or exc is tally.source_failure:
                raise
            raise tally.source_failure from exc

    return DirectoryCopy(
        bytes_copied=tally.bytes_copied,
        chunks=tally.chunks,
        largest_chunk=tally.largest_chunk,
        duration=anyio.current_time() - started,
    )
