"""What the CLI does on the engine alone, when no runner answers.

``rolecall status`` asks every container rolecall manages for its own view
through its ``status`` hook: the image knows its role, the labels know its
service and member. ``rolecall down`` removes what carries a service's
labels, which is how containers left by a stopped runner are cleared.
"""

from __future__ import annotations

from typing import Any

import anyio

from rolecall.actors import (
    DEFAULT_ENGINE,
    ContainerInfo,
    ContainerRuntime,
    ContainerState,
    HookConvention,
    run_hook,
)
from rolecall.hooks_protocol import (
    HookName,
    HookPayload,
    MemberInfo,
    RolecallError,
    status_from_data,
)
from rolecall.supervisor import (
    LABEL_ENGINE,
    LABEL_MANAGED,
    LABEL_MEMBER,
    LABEL_SERVICE,
    ClaimOwner,
    claim_name,
    claimed_error,
    down_remedy,
    drop_claim,
)

__all__ = ["describe_services", "remove_service"]

_STATUS_TIMEOUT = 10.0
_MEMBER_DEADLINE = 20.0


async def describe_services(runtime: ContainerRuntime) -> list[dict[str, Any]]:
    """Every service rolecall manages on the engine, with its members.

    Returns:
        Plain dicts (JSON-ready): ``name``, ``source`` (``engine``) and
        ``members``, each member with
        ``id``, ``container``, ``state``, ``role``, ``healthy``, ``epoch``,
        ``offset``, ``published``, ``error`` (why ``status`` failed) and
        ``engine`` (the name the container's label gives its engine).
    """
    containers = await runtime.list_containers(labels={LABEL_MANAGED: "true"})
    services: dict[str, list[dict[str, Any]]] = {}
    async with anyio.create_task_group() as group:
        for container in containers:
            service = container.labels.get(LABEL_SERVICE, "?")
            row: dict[str, Any] = {}
            services.setdefault(service, []).append(row)
            group.start_soon(_describe, runtime, container, service, row)

    return [
        {
            "name": name,
            "source": "engine",
            "members": sorted(rows, key=lambda r: str(r["id"])),
        }
        for name, rows in sorted(services.items())
    ]


async def remove_service(
    runtime: ContainerRuntime,
    service: str,
    *,
    owner: str | None,
    take_over: bool = False,
) -> list[str]:
    """Remove a service's containers, volumes and network by their labels,
    and its claim.

    Args:
        runtime: The engine.
        service: The service.
        owner: The id of the control plane whose state directory the
            command was given (``None`` when it has none): a claim by
            another stops the removal.
        take_over: Remove it whoever claims it.

    Returns:
        The names of the containers removed; empty when the engine holds
        no container of the service, and then nothing was touched (its
        volumes and claim stay: it may live on another engine).

    Raises:
        ServiceClaimedError: Another control plane claims the service;
            nothing was removed.
    """
    claim = await runtime.volume_labels(claim_name(service))
    if claim is not None and not take_over:
        holder = ClaimOwner.read(claim)
        if holder.id != owner:
            remedy = (
                "give this command that control plane's --state-dir, or"
                f" {down_remedy(service)}"
            )
            raise claimed_error(service, holder, remedy=remedy)

    labels = {LABEL_MANAGED: "true", LABEL_SERVICE: service}
    containers = await runtime.list_containers(labels=labels)
    if not containers:
        # Nothing of it runs here: it may run on another engine (a move
        # put it there), and its claim says who manages it. Kept.
        return []

    for container in containers:
        await runtime.remove_container(container.id)

    for volume in await runtime.list_volumes(labels=labels):
        await runtime.remove_volume(volume)

    for network in await runtime.list_networks(labels=labels):
        await runtime.remove_network(network)

    # The claim last, whoever holds it: this is how what a control plane
    # that is gone left behind is cleared.
    await drop_claim(runtime, service)

    return sorted(container.name for container in containers)


async def _describe(
    runtime: ContainerRuntime,
    container: ContainerInfo,
    service: str,
    row: dict[str, Any],
) -> None:
    member = container.labels.get(LABEL_MEMBER, container.name)
    ports = sorted(container.host_ports.items())
    row.update(
        id=member,
        container=container.name,
        state=container.state.value,
        role=None,
        healthy=None,
        epoch=None,
        offset=None,
        published=f"127.0.0.1:{ports[0][1]}" if ports else None,
        error=None,
        engine=container.labels.get(LABEL_ENGINE, DEFAULT_ENGINE),
    )
    if container.state is not ContainerState.RUNNING:
        return

    # The hook's own timeout starts only once the engine runs it; this one
    # bounds the whole question, so a stuck engine call or a long queue for
    # exec slots cannot hang `rolecall status`.
    with anyio.move_on_after(_MEMBER_DEADLINE) as deadline:
        try:
            image = await runtime.inspect_image(container.image)
            payload = HookPayload(
                hook=HookName.STATUS,
                service=service,
                member=MemberInfo(id=member, role=None, address=member),
            )
            run = await run_hook(
                runtime,
                container.id,
                payload,
                convention=HookConvention.from_image(image),
                timeout=_STATUS_TIMEOUT,
            )
            report = status_from_data(run.result.data)
        except RolecallError as error:
            row["error"] = str(error)
            return

    if deadline.cancelled_caught:
        row["error"] = f"no answer from its status hook within {_MEMBER_DEADLINE:g}s"
        return

    row.update(
        role=report.role.value if report.role else None,
        healthy=report.healthy,
        epoch=report.epoch,
        offset=report.replication_offset,
    )
