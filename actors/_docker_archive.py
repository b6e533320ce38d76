"""Moving a directory in and out of containers through the archive API.

`_DockerArchive` is the layer of `DockerRuntime` that reads a directory out
of a container as a tar stream and unpacks a tar stream into one. Both
stream in chunks of at most `ARCHIVE_CHUNK` bytes: the archive is never
held whole, so a copy of gigabytes costs a few chunks of memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager

import aiodocker
import aiohttp

from ..hooks_protocol._errors import EngineError
from ._docker_connection import _CONNECT_TIMEOUT
from ._docker_exec import _DockerExec

ARCHIVE_CHUNK = 64 * 1024
"""The largest piece of an archive read or sent at once, in bytes."""

_STALL_TIMEOUT = 120.0
"""Seconds an archive stream may go without a byte before it counts as broken.

Known gap: aiohttp's read timeout cannot tell a stalled engine from a
consumer that stopped reading, so a copy whose target takes this long to
take one piece fails as if the source had stalled.
"""


def _contents_of(path: str) -> str:
    """The archive path that holds a directory's contents, not the directory.

    The engine names entries after the last part of the path asked for;
    ``DIR/.`` asks for what is inside, so the entries unpack into another
    directory of any name.
    """
    return path.rstrip("/") + "/."


class _DockerArchive(_DockerExec):
    """The archive layer of `DockerRuntime`, over its exec layer."""

    def open_archive(
        self, container_id: str, path: str
    ) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        """Stream what the directory ``path`` holds as a tar archive.

        Use as ``async with runtime.open_archive(cid, "/data") as chunks``;
        entries are named relative to ``path``. The container may be
        running or stopped.

        Raises:
            ContainerGoneError: No such container.
            EngineError: ``path`` does not exist in the container.
            EngineUnavailableError: The engine went away, or the stream
                stalled for `_STALL_TIMEOUT` seconds.
        """
        return self._archive_stream(container_id, path)

    @asynccontextmanager
    async def _archive_stream(
        self, container_id: str, path: str
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        timeout = aiohttp.ClientTimeout(
            sock_connect=_CONNECT_TIMEOUT, sock_read=_STALL_TIMEOUT
        )
        params = {"path": _contents_of(path)}
        what = f"read {path!r} as an archive"
        with self._archive_errors(what, container_id, path):
            response = await self._client()._do_query(
                f"containers/{container_id}/archive",
                "GET",
                params=params,
                timeout=timeout,
            )

        try:
            yield self._chunks(response, what, container_id, path)
        finally:
            response.close()

    async def _chunks(
        self,
        response: aiohttp.ClientResponse,
        what: str,
        container_id: str,
        path: str,
    ) -> AsyncIterator[bytes]:
        with self._archive_errors(what, container_id, path):
            async for chunk in response.content.iter_chunked(ARCHIVE_CHUNK):
                yield chunk

    async def put_archive(
        self, container_id: str, path: str, archive: AsyncIterable[bytes]
    ) -> None:
        """Unpack a tar archive, read chunk by chunk, into directory ``path``.

        The directory must exist; files in the archive replace files of the
        same name, others stay. The container may be running or stopped.

        Raises:
            ContainerGoneError: No such container.
            EngineError: ``path`` is not a directory in the container, or
                the archive is not a tar archive.
            EngineUnavailableError: The engine went away.
        """
        timeout = aiohttp.ClientTimeout(
            sock_connect=_CONNECT_TIMEOUT, sock_read=_STALL_TIMEOUT
        )
        what = f"unpack an archive into {path!r}"
        with self._archive_errors(what, container_id, path):
            response = await self._client()._do_query(
                f"containers/{container_id}/archive",
                "PUT",
                params={"path": path},
                data=_bounded(archive),
                headers={"Content-Type": "application/x-tar"},
                timeout=timeout,
            )
            response.close()

    @contextmanager
    def _archive_errors(
        self, what: str, container_id: str, path: str
    ) -> Iterator[None]:
        """`_translated`, and a 404 about the path is not a gone container."""
        with self._translated(what=what, container_id=container_id):
            try:
                yield
            except aiodocker.DockerError as exc:
                message = str(exc.message)
                container_gone = "no such container" in message.lower()
                if exc.status not in (400, 404) or container_gone:
                    raise

                raise EngineError(
                    f"the engine could not {what} in container "
                    f"{container_id!r}: {message}; check that {path!r} is a "
                    f"directory there"
                ) from exc


async def _bounded(archive: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """``archive`` cut into pieces of at most `ARCHIVE_CHUNK` bytes."""
    async for chunk in archive:
        for start in range(0, len(chunk), ARCHIVE_CHUNK):
            yield chunk[start : start + ARCHIVE_CHUNK]
