"""Where services live: engines by name, and what a move checks first.

The supervisor knows every engine by the name the spec file (or the
embedding) gives it; `DEFAULT_ENGINE` is the one rolecall used before it
knew several. A service lives on the engine its spec names until a move
puts it on another (see ``_moving``); the spec file is not rewritten, so a
spec that still names the engine a move left is taken to mean where the
service is now.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import anyio
import structlog
from attrs import evolve

from rolecall.actors import ContainerRuntime
from rolecall.hooks_protocol import EngineError, EngineUnavailableError, SpecError

from ._naming import LABEL_MANAGED, LABEL_SERVICE, network_name
from ._service_record import ServiceRecord
from ._spec import ServiceSpec

if TYPE_CHECKING:
    from ._controller import ServiceController
    from ._supervisor import Supervisor

__all__ = [
    "ENGINE_CHECK_TIMEOUT",
    "check_target",
    "container_names",
    "engine_named",
    "placed",
    "sweep",
]

_log = structlog.get_logger("rolecall.supervisor")

ENGINE_CHECK_TIMEOUT = 60.0
"""Seconds a move's target engine has to answer the checks before it."""


def engine_named(
    engines: Mapping[str, ContainerRuntime], name: str, *, service: str | None
) -> ContainerRuntime:
    """The runtime of the engine called ``name``.

    Raises:
        SpecError: No engine has that name.
    """
    runtime = engines.get(name)
    if runtime is None:
        known = ", ".join(sorted(engines))
        raise SpecError(
            f"no engine named {name!r} (known: {known}): name it in the"
            f" spec file's [engines.{name}] table, or pick a known one",
            service=service,
        )

    return runtime


def placed(
    spec: ServiceSpec,
    controller: ServiceController | None,
    record: ServiceRecord | None,
) -> ServiceSpec:
    """``spec`` with the engine a move left the service on.

    A spec naming the engine the service ran on before its last move keeps
    it where the move put it; a spec naming any other engine is refused:
    only a move changes where a running service lives.

    Raises:
        SpecError: ``spec`` names another engine than the service's.
    """
    if controller is not None:
        now, before = controller.spec.engine, controller.source_engine
    elif record is not None:
        now, before = record.engine, record.source_engine
    else:
        return spec

    if spec.engine == now:
        return spec

    if spec.engine == before:
        return evolve(spec, engine=now)

    raise SpecError(
        f"service {spec.name!r} runs on engine {now!r} and its spec now"
        f" names {spec.engine!r}: move it with `rolecall move {spec.name}"
        f" {spec.engine}` (or put {now!r} back in the spec)",
        service=spec.name,
    )


async def check_target(supervisor: Supervisor, target: ServiceSpec) -> None:
    """Check a move's target as `Supervisor.check` would, within
    `ENGINE_CHECK_TIMEOUT`: the engine answers, has the image, and has the
    memory.

    Raises:
        EngineUnavailableError: The engine did not answer in time.
        EngineError: The engine refused.
        SpecError: The image is not there, or the check failed.
    """
    with anyio.move_on_after(ENGINE_CHECK_TIMEOUT) as deadline:
        await supervisor.check(target)

    if deadline.cancelled_caught:
        runtime = supervisor.engine(target.engine)
        raise EngineUnavailableError(
            f"engine {target.engine!r} did not answer within"
            f" {ENGINE_CHECK_TIMEOUT:g}s; service {target.name!r} was not"
            " touched: check the engine, then move it again",
            address=runtime.address,
        )


async def container_names(
    engines: Mapping[str, ContainerRuntime], service: str, *, home: str
) -> list[str]:
    """The names of a service's containers on every engine that answers.

    Raises:
        EngineError: Engine ``home`` failed.
    """
    labels = {LABEL_MANAGED: "true", LABEL_SERVICE: service}
    names = []
    for name, runtime in engines.items():
        try:
            names += [c.name for c in await runtime.list_containers(labels=labels)]
        except EngineError:
            if name == home:
                raise

    return sorted(names)


async def sweep(
    engines: Mapping[str, ContainerRuntime], service: str, *, home: str
) -> None:
    """Remove what a service left on every engine: containers, volumes and
    its network.

    An engine that does not answer keeps what the service has there
    (logged); only the service's own engine (``home``) not answering is
    raised.

    Raises:
        EngineError: Engine ``home`` failed.
    """
    labels = {LABEL_MANAGED: "true", LABEL_SERVICE: service}
    for name, runtime in engines.items():
        try:
            for info in await runtime.list_containers(labels=labels):
                await runtime.remove_container(info.id)

            for volume in await runtime.list_volumes(labels=labels):
                await runtime.remove_volume(volume)

            await runtime.remove_network(network_name(service))
        except EngineError as error:
            if name == home:
                raise

            _log.warning(
                "engine_unreachable",
                service=service,
                engine=name,
                error=str(error),
                left="whatever the service has there",
            )
