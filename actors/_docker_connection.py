"""The Docker runtime's connection to one engine, and its error translation.

`_DockerConnection` is the base of `DockerRuntime`: it owns the aiodocker
client, turns every aiodocker or aiohttp error into a member of rolecall's
tree, and describes a container (which every layer above needs).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterator
from contextlib import contextmanager

import aiodocker
import aiohttp

from ..hooks_protocol._errors import (
    ContainerGoneError,
    EngineError,
    EngineUnavailableError,
    ImageNotFoundError,
)
from ._docker_records import _container_info
from ._docker_tls import handshake_failed, tls_context
from ._engine_config import DEFAULT_ENGINE, TlsFiles
from ._runtime import ContainerInfo

_DEFAULT_URL = "unix:///var/run/docker.sock"
_SCHEMES = ("unix://", "tcp://", "http://", "https://", "ssh://", "npipe://")

_CONNECT_TIMEOUT = 10.0
"""Seconds to wait for a connection to the engine before calling it gone."""


def _resolve_url(url: str | None) -> str:
    resolved = url or os.environ.get("DOCKER_HOST") or _DEFAULT_URL
    if not resolved.startswith(_SCHEMES):
        raise ValueError(
            f"expected an engine URL starting with one of {_SCHEMES}, got {resolved!r}"
        )

    return resolved


class _DockerConnection:
    """The client of one engine; `DockerRuntime` builds on it."""

    def __init__(
        self,
        url: str | None,
        *,
        tls: TlsFiles | None = None,
        name: str = DEFAULT_ENGINE,
    ) -> None:
        self._url = _resolve_url(url)
        self._name = name
        self._tls = tls
        # Built once, here, so that a bad certificate file is reported
        # before the engine is used; None for an engine without TLS.
        self._ssl: ssl.SSLContext | None = None
        if tls is not None:
            if not self._url.startswith("tcp://"):
                raise ValueError(
                    f"engine {name!r}: TLS files apply to a tcp:// URL only, "
                    f"got {self._url!r}"
                )
            self._ssl = tls_context(tls, engine=name, address=self._url)
        # Created on first use, inside the event loop; None until then and
        # again after aclose().
        self._docker: aiodocker.Docker | None = None

    @property
    def address(self) -> str:
        """Where the engine is reached, for messages and status."""
        return self._url

    @property
    def name(self) -> str:
        """The engine's name (``default`` unless a spec names it)."""
        return self._name

    def _client(self) -> aiodocker.Docker:
        if self._docker is None:
            timeout = aiohttp.ClientTimeout(sock_connect=_CONNECT_TIMEOUT)
            url = self._url
            if self._ssl is not None:
                # aiodocker speaks TLS for an https:// URL only.
                url = "https://" + url.removeprefix("tcp://")
            self._docker = aiodocker.Docker(
                url=url, timeout=timeout, ssl_context=self._ssl
            )

        return self._docker

    async def aclose(self) -> None:
        """Release the connection to the engine."""
        docker, self._docker = self._docker, None
        if docker is not None:
            await docker.close()

    async def engine_version(self) -> str:
        """Ask the engine for its version; proves that it answers.

        Returns:
            The engine's version string, for example ``20.10.24``.

        Raises:
            EngineUnavailableError: No engine answers at `address`.
        """
        with self._translated(what="report its version"):
            raw = await self._client().version()

        return str(raw.get("Version", "unknown"))

    async def memory_total(self) -> int | None:
        """The engine host's memory in bytes (``MemTotal`` of its info).

        Raises:
            EngineUnavailableError: No engine answers at `address`.
        """
        with self._translated(what="report its memory"):
            raw = await self._client().system.info()

        total = raw.get("MemTotal")
        return total if isinstance(total, int) and total > 0 else None

    # -- errors -------------------------------------------------------------

    def _unavailable(self, reason: object) -> EngineUnavailableError:
        failure = _tls_failure(reason) if self._tls is not None else None
        if self._tls is not None and failure is not None:
            return handshake_failed(
                failure, self._tls, engine=self._name, address=self._url
            )

        why = str(reason) or type(reason).__name__
        if self._name != DEFAULT_ENGINE:
            return EngineUnavailableError(
                f"engine {self._name!r} does not answer at {self._url!r} "
                f"({why}); start it, or check the url the spec gives it",
                address=self._url,
            )

        return EngineUnavailableError(
            f"no Docker engine answers at {self._url!r} ({why}); start one "
            f"with `dockerd` or set DOCKER_HOST to where one listens",
            address=self._url,
        )

    def _refused(
        self,
        exc: aiodocker.DockerError,
        *,
        what: str,
        container_id: str | None,
        image: str | None,
    ) -> EngineError:
        status, message = exc.status, str(exc.message)
        # aiodocker reports "could not connect" as a made-up status 900.
        if status == 900:
            tls_failure = self._tls is not None and _tls_failure(exc) is not None
            return self._unavailable(exc if tls_failure else message)

        # "is not running" comes as a 409 for a container stopped a while
        # ago, and as a 500 for an exec start that meets its container's end.
        stopped = status in (409, 500) and "is not running" in message
        if container_id is not None and (status == 404 or stopped):
            return ContainerGoneError(
                f"container {container_id!r} is gone or stopped: {message}",
                container_id=container_id,
            )

        if image is not None and status == 404 and "image" in message.lower():
            return ImageNotFoundError(
                f"image {image!r} is not on the engine at {self._url!r}; "
                f"build or load it first",
                image=image,
            )

        return EngineError(f"the engine refused to {what}: {message} ({status})")

    @contextmanager
    def _translated(
        self,
        *,
        what: str,
        container_id: str | None = None,
        image: str | None = None,
    ) -> Iterator[None]:
        """Turn aiodocker's and aiohttp's errors in the block into ours."""
        try:
            yield
        except aiodocker.DockerError as exc:
            raise self._refused(
                exc, what=what, container_id=container_id, image=image
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise self._unavailable(exc) from exc

    async def inspect_container(self, container_id: str) -> ContainerInfo:
        """Describe one container."""
        with self._translated(what="inspect", container_id=container_id):
            raw = await self._client().containers.container(container_id).show()

        return _container_info(raw)


_TLS_SIGNS = (
    ssl.SSLError,
    aiohttp.ClientSSLError,
    # Under TLS 1.3 an engine that does not trust the client certificate
    # says so after the handshake: the client sees the connection reset.
    ConnectionResetError,
    aiohttp.ServerDisconnectedError,
)


def _tls_failure(reason: object) -> BaseException | None:
    """The TLS error in ``reason``'s chain of causes, if there is one.

    Only asked for an engine reached over TLS, where a reset connection
    is how a refused client certificate shows.
    """
    seen = reason if isinstance(reason, BaseException) else None
    while seen is not None:
        if isinstance(seen, _TLS_SIGNS):
            return seen
        seen = seen.__cause__ or seen.__context__

    return None
