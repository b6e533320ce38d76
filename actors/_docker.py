"""The Docker runtime: `ContainerRuntime` on a Docker engine through aiodocker.

Only the ``_docker*`` modules import aiodocker. Every aiodocker or aiohttp
error turns into a member of rolecall's tree in them, and every raw JSON dict
into one of the records from ``_runtime``; nothing above sees either.

`DockerRuntime` is built in layers, a module each: ``_docker_connection``
holds the client and translates errors, ``_docker_exec`` runs commands (with
``_docker_kill`` for the host-side kill of overrun ones), ``_docker_archive``
streams directories in and out as tar archives, and this module adds
containers, images, networks, volumes and the event stream that
``_docker_events`` reads. ``_docker_records`` converts JSON at the edge.

aiodocker runs on asyncio only, so this runtime does too.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import aiodocker
import aiohttp
import anyio
import structlog
from aiodocker.volumes import DockerVolume

from ..hooks_protocol._errors import ContainerGoneError, EngineError
from ._docker_archive import _DockerArchive
from ._docker_connection import _CONNECT_TIMEOUT
from ._docker_events import _EVENT_ACTIONS, _EventIterator
from ._docker_records import (
    _container_config,
    _label_filters,
    _own_labels,
    _str_dict,
    _summary_info,
)
from ._engine_config import DEFAULT_ENGINE, EngineConfig, TlsFiles
from ._runtime import (
    LABEL_PREFIX,
    ContainerInfo,
    ContainerSpec,
    EngineEvent,
    ImageInfo,
)

__all__ = [
    "INSPECT_DEADLINE",
    "DockerRuntime",
    "open_docker_runtime",
    "open_engine_runtime",
]

_log = structlog.get_logger("rolecall.actors")

INSPECT_DEADLINE = 10.0
"""Seconds `DockerRuntime.list_containers` waits for one container's inspect
before it describes that container from the listing instead."""


class DockerRuntime(_DockerArchive):
    """`ContainerRuntime` backed by a Docker engine.

    Use `open_docker_runtime` to get one that has checked the engine
    answers; a bare instance connects on its first call. Call `aclose`
    when done.

    Args:
        url: Engine address (``unix:///var/run/docker.sock``,
            ``tcp://HOST:PORT``, ...); ``None`` takes ``DOCKER_HOST``, then the
            default socket.
        tls: Certificate files for a ``tcp://`` engine that asks for TLS
            client certificates; ``None`` for none.
        name: The engine's name, for messages and status.
        max_concurrent_execs: How many commands may run through `exec` at
            once; more wait for a slot. The engine serialises exec start-up,
            so more in parallel only adds latency.

    Raises:
        ValueError: ``url`` has no known scheme, TLS files come with a URL
            that is not ``tcp://``, or the cap is below one.
        EngineTlsError: A TLS file is missing, unreadable or not PEM.
    """

    @classmethod
    def for_engine(
        cls, engine: EngineConfig, *, max_concurrent_execs: int = 4
    ) -> DockerRuntime:
        """A runtime on ``engine``, not connected yet.

        Raises:
            EngineTlsError: A TLS file is missing, unreadable or not PEM.
        """
        return cls(
            engine.url,
            tls=engine.tls,
            name=engine.name,
            max_concurrent_execs=max_concurrent_execs,
        )

    # -- containers ---------------------------------------------------------

    async def create_container(self, spec: ContainerSpec) -> ContainerInfo:
        """Create a container (not started).

        A container of that name that carries the same ``io.rolecall.*``
        labels (the spec's over the image's) is returned as it is: a
        retried create is harmless.

        Raises:
            ImageNotFoundError: The engine has no such image.
            EngineError: The name is taken by a container with other labels.
        """
        conflict: aiodocker.DockerError | None = None
        with self._translated(what=f"create {spec.name!r}", image=spec.image):
            try:
                created = await self._client().containers.create(
                    _container_config(spec), name=spec.name
                )
            except aiodocker.DockerError as exc:
                if exc.status != 409:
                    raise

                conflict = exc

        if conflict is None:
            return await self.inspect_container(created.id)

        existing = await self.inspect_container(spec.name)
        # A container carries its image's labels too, under the spec's.
        image = await self.inspect_image(spec.image)
        expected = _own_labels({**image.labels, **spec.labels})
        if _own_labels(existing.labels) != expected:
            raise EngineError(
                f"container name {spec.name!r} is taken by {existing.id[:12]!r} "
                f"with other {LABEL_PREFIX} labels; remove it or pick another name"
            ) from conflict

        return existing

    async def start_container(self, container_id: str) -> None:
        """Start a created or stopped container."""
        with self._translated(what="start", container_id=container_id):
            await self._client().containers.container(container_id).start()

    async def stop_container(self, container_id: str, *, timeout: float) -> None:
        """Stop gracefully, killing after ``timeout`` (rounded up to seconds)."""
        grace = max(0, math.ceil(timeout))
        with self._translated(what="stop", container_id=container_id):
            await self._client().containers.container(container_id).stop(t=grace)

    async def kill_container(self, container_id: str) -> None:
        """Kill at once with SIGKILL; a container not running stays as it is."""
        with self._translated(what="kill", container_id=container_id):
            try:
                container = self._client().containers.container(container_id)
                await container.kill(signal="SIGKILL")
            except aiodocker.DockerError as exc:
                if exc.status != 409 or "is not running" not in str(exc.message):
                    raise

    async def remove_container(self, container_id: str) -> None:
        """Remove (forcibly) with its anonymous volumes; gone is not an error."""
        with self._translated(what="remove", container_id=container_id):
            try:
                container = self._client().containers.container(container_id)
                await container.delete(force=True, v=True)
            except aiodocker.DockerError as exc:
                in_progress = exc.status == 409 and "in progress" in str(exc.message)
                if exc.status != 404 and not in_progress:
                    raise

    async def list_containers(
        self, *, labels: Mapping[str, str]
    ) -> list[ContainerInfo]:
        """Every container (running or not) carrying all of ``labels``."""
        filters = json.dumps({"label": _label_filters(labels)})
        with self._translated(what="list containers"):
            found = await self._client().containers.list(all=True, filters=filters)

        infos = []
        for container in found:
            # An engine wedged on one container (docker/for-linux#891)
            # never answers its inspect: the listing's own description
            # stands in, so one such container cannot hang every caller.
            with anyio.move_on_after(INSPECT_DEADLINE) as deadline:
                try:
                    infos.append(await self.inspect_container(container.id))
                except ContainerGoneError:
                    continue
            if deadline.cancelled_caught:
                _log.warning(
                    "container_inspect_timed_out",
                    container_id=container.id[:12],
                    deadline_s=INSPECT_DEADLINE,
                )
                infos.append(_summary_info(container._container))

        return infos

    async def inspect_image(self, image: str) -> ImageInfo:
        """Describe an image.

        Raises:
            ImageNotFoundError: The engine has no such image.
        """
        with self._translated(what=f"inspect image {image!r}", image=image):
            raw = await self._client().images.inspect(image)

        config = raw.get("Config") or {}
        return ImageInfo(
            id=str(raw["Id"]),
            tags=tuple(str(tag) for tag in raw.get("RepoTags") or ()),
            labels=_str_dict(config.get("Labels")),
        )

    # -- networks and volumes -----------------------------------------------

    async def create_network(self, name: str, *, labels: Mapping[str, str]) -> None:
        """Create a user-defined bridge network unless it exists."""
        config = {
            "Name": name,
            "Driver": "bridge",
            "Labels": dict(labels),
            "CheckDuplicate": True,
        }
        with self._translated(what=f"create network {name!r}"):
            try:
                await self._client().networks.create(config)
            except aiodocker.DockerError as exc:
                if exc.status != 409:
                    raise

    async def remove_network(self, name: str) -> None:
        """Remove a network; one already gone is not an error."""
        with self._translated(what=f"remove network {name!r}"):
            try:
                network = await self._client().networks.get(name)
                await network.delete()
            except aiodocker.DockerError as exc:
                if exc.status != 404:
                    raise

    async def list_networks(self, *, labels: Mapping[str, str]) -> list[str]:
        """Names of the networks carrying all of ``labels``."""
        filters = {"label": _label_filters(labels)}
        with self._translated(what="list networks"):
            found = await self._client().networks.list(filters=filters)

        return sorted(str(network["Name"]) for network in found)

    async def create_volume(
        self, name: str, *, labels: Mapping[str, str]
    ) -> dict[str, str]:
        """Create a named volume unless it exists (the engine makes it so).

        Returns:
            The labels it carries: the engine answers a create of a name it
            has with the existing volume, its first creator's labels
            unchanged.
        """
        config = json.dumps({"Name": name, "Labels": dict(labels)})
        with self._translated(what=f"create volume {name!r}"):
            # aiodocker's own create keeps only the name of the answer.
            raw = await self._client()._query_json(
                "volumes/create", method="POST", data=config.encode()
            )

        return _str_dict(raw.get("Labels"))

    async def volume_labels(self, name: str) -> dict[str, str] | None:
        """The labels of a named volume; ``None`` when there is none."""
        with self._translated(what=f"inspect volume {name!r}"):
            try:
                raw = await self._client()._query_json(f"volumes/{name}")
            except aiodocker.DockerError as exc:
                if exc.status != 404:
                    raise

                return None

        return _str_dict(raw.get("Labels"))

    async def remove_volume(self, name: str) -> None:
        """Remove a named volume; one already gone is not an error."""
        volume = DockerVolume(self._client(), name)  # type: ignore[no-untyped-call]
        with self._translated(what=f"remove volume {name!r}"):
            try:
                await volume.delete()  # type: ignore[no-untyped-call]
            except aiodocker.DockerError as exc:
                if exc.status != 404:
                    raise

    async def list_volumes(self, *, labels: Mapping[str, str]) -> list[str]:
        """Names of the volumes carrying all of ``labels``."""
        filters = {"label": _label_filters(labels)}
        volumes = self._client().volumes
        with self._translated(what="list volumes"):
            raw = await volumes.list(filters=filters)  # type: ignore[no-untyped-call]

        return sorted(str(volume["Name"]) for volume in raw.get("Volumes") or ())

    # -- events -------------------------------------------------------------

    def open_event_stream(
        self, *, labels: Mapping[str, str]
    ) -> AbstractAsyncContextManager[AsyncIterator[EngineEvent]]:
        """Subscribe to container events of containers carrying ``labels``.

        The subscription is live when the block is entered. Iteration ends
        when the engine closes the stream and raises
        `EngineUnavailableError` when the connection breaks; reconnecting
        is the caller's call.
        """
        return self._event_stream(dict(labels))

    @asynccontextmanager
    async def _event_stream(
        self, labels: dict[str, str]
    ) -> AsyncIterator[AsyncIterator[EngineEvent]]:
        filters = {
            "type": ["container"],
            "event": list(_EVENT_ACTIONS),
            "label": _label_filters(labels),
        }
        params = {"filters": json.dumps(filters)}
        timeout = aiohttp.ClientTimeout(sock_connect=_CONNECT_TIMEOUT)
        # aiodocker's own events API runs one unsupervised background task per
        # client with one filter set for every subscriber; a request of our own
        # gives each stream its filters and ties its life to this block.
        with self._translated(what="stream events"):
            response = await self._client()._do_query(
                "events", "GET", params=params, timeout=timeout
            )

        events = _EventIterator(self, response)
        try:
            yield events
        finally:
            events.closed = True
            response.close()


@asynccontextmanager
async def open_docker_runtime(
    url: str | None = None,
    *,
    tls: TlsFiles | None = None,
    name: str = DEFAULT_ENGINE,
    max_concurrent_execs: int = 4,
) -> AsyncIterator[DockerRuntime]:
    """Connect to a Docker engine, check that it answers, close on exit.

    Args:
        url: Engine address; ``None`` takes ``DOCKER_HOST``, then
            ``unix:///var/run/docker.sock``.
        tls: Certificate files for a ``tcp://`` engine with TLS.
        name: The engine's name, for messages and status.
        max_concurrent_execs: How many `exec` calls may run at once.

    Yields:
        The runtime, ready for use.

    Raises:
        EngineUnavailableError: No engine answers at the address.
        EngineTlsError: A TLS file is bad, or the TLS handshake failed.
    """
    runtime = DockerRuntime(
        url, tls=tls, name=name, max_concurrent_execs=max_concurrent_execs
    )
    try:
        await runtime.engine_version()
        yield runtime
    finally:
        await runtime.aclose()


def open_engine_runtime(
    engine: EngineConfig, *, max_concurrent_execs: int = 4
) -> AbstractAsyncContextManager[DockerRuntime]:
    """`open_docker_runtime` on the engine ``engine`` describes.

    Raises:
        EngineUnavailableError: The engine does not answer.
        EngineTlsError: A TLS file is bad, or the TLS handshake failed.
    """
    return open_docker_runtime(
        engine.url,
        tls=engine.tls,
        name=engine.name,
        max_concurrent_execs=max_concurrent_execs,
    )
