"""Helpers shared by the supervisor tests on the in-memory runtime."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import anyio
from attrs import define, field

from rolecall.actors import ActorRef, RunHook
from rolecall.hooks_protocol import HookName
from rolecall.supervisor import (
    LABEL_SERVICE,
    ServiceEvent,
    ServiceSpec,
    ServiceStatus,
    Supervisor,
)
from rolecall.testing import (
    KV_DATA_PATH,
    FakeHook,
    FakeHookCall,
    FakeRuntime,
    fake_kv_image,
    fake_kv_keys,
    fake_kv_write,
)

LIMIT = 20  # seconds; far above what any test needs
PROBE = 0.02  # seconds between health passes: small, so tests run fast
KV = "kv:fake"


def kv_runtime(**images: Mapping[str, FakeHook]) -> FakeRuntime:
    """A fake engine with the key-value image as `KV`, plus ``<name>:fake``
    for each of ``images``."""
    runtime = FakeRuntime()
    runtime.add_image(KV, hooks=fake_kv_image())
    for name, hooks in images.items():
        runtime.add_image(f"{name}:fake", hooks=hooks)

    return runtime


def service_spec(name: str = "cache", **options: Any) -> ServiceSpec:
    """A spec for ``name`` on the `KV` image unless ``options`` say otherwise."""
    options.setdefault("image", KV)

    return ServiceSpec(name=name, **options)


def plan_with(**changes: Any) -> FakeHook:
    """The fake key-value plan with some fields replaced."""
    plan = fake_kv_image()[HookName.PLAN]

    def changed(call: FakeHookCall) -> dict[str, Any]:
        data = plan(call)
        assert isinstance(data, dict)  # the key-value hooks are synchronous
        return {**data, **changes}

    return changed


async def until(
    events: AsyncIterator[ServiceEvent], kind: str, *, service: str = "cache"
) -> list[ServiceEvent]:
    """The events of ``service`` up to and including the next one of ``kind``."""
    seen: list[ServiceEvent] = []
    async for event in events:
        if event.service != service:
            continue

        seen.append(event)
        if event.kind == kind:
            return seen

    raise AssertionError(f"the timeline ended before a {kind!r} event: {seen}")


async def converged(
    supervisor: Supervisor, events: AsyncIterator[ServiceEvent], service: str = "cache"
) -> ServiceStatus:
    """Wait for the service's next ``converged`` event; return its status."""
    await until(events, "converged", service=service)

    return supervisor.status(service)


def event_kinds(events: list[ServiceEvent]) -> list[tuple[str, str | None]]:
    """(kind, member) of each event, in order."""
    return [(event.kind, event.member) for event in events]


async def service_objects(
    runtime: FakeRuntime, service: str = "cache"
) -> tuple[list[str], list[str], list[str]]:
    """Names of the service's containers, volumes and networks on the engine."""
    labels = {LABEL_SERVICE: service}
    containers = await runtime.list_containers(labels=labels)

    return (
        [container.name for container in containers],
        await runtime.list_volumes(labels=labels),
        await runtime.list_networks(labels=labels),
    )


def keys_of(runtime: FakeRuntime, status: ServiceStatus, member: str) -> dict[str, Any]:
    """The keys a member's fake key-value service holds."""
    return fake_kv_keys(runtime, status.member(member).container_id)


def write_keys(runtime: FakeRuntime, status: ServiceStatus, keys: range) -> None:
    """Write ``key<n>`` = n for each n of ``keys`` to the service's writer."""
    writer = status.writer
    assert writer is not None
    for number in keys:
        fake_kv_write(runtime, writer.container_id, f"key{number}", number)


def expected_keys(keys: range) -> dict[str, int]:
    """What `write_keys` wrote for ``keys``."""
    return {f"key{number}": number for number in keys}


@define
class Lag:
    """A fake key-value image whose chosen replicas stop pulling in status.

    A held replica reports what it has, with its link up, as a replica that
    lags behind its primary would.
    """

    # Container names whose status hook does not pull from the primary.
    held: set[str] = field(factory=set)
    # Container name -> the offset its last status reported.
    offsets: dict[str, int] = field(factory=dict)
    # Set and replaced on every status run, for wait_offset.
    _reported: anyio.Event = field(factory=anyio.Event)

    def image(self) -> dict[str, FakeHook]:
        """The hooks, for `FakeRuntime.add_image`."""
        return {**fake_kv_image(), HookName.STATUS: self._status}

    def _status(self, call: FakeHookCall) -> dict[str, Any]:
        name = call.container.name
        if name in self.held:
            disk = call.volumes[KV_DATA_PATH]
            report = {
                "role": disk["role"],
                "healthy": True,
                "replication_offset": disk["offset"],
                "link_up": True,
                "epoch": disk["epoch"],
                "details": {"synced": True},
            }
        else:
            report = fake_kv_image()[HookName.STATUS](call)
            assert isinstance(report, dict)  # the key-value hooks are synchronous

        self.offsets[name] = report["replication_offset"]
        reported, self._reported = self._reported, anyio.Event()
        reported.set()

        return report

    async def wait_offset(self, name: str, offset: int) -> None:
        """Wait until the status of ``name`` has reported ``offset`` or more."""
        while self.offsets.get(name, -1) < offset:
            await self._reported.wait()


def crash_actor(supervisor: Supervisor) -> ActorRef[Any]:
    """Crash the actor of cache-1: a told hook run that fails does it.

    The key-value image has no ``backup`` hook, so the run raises, and a
    told message that raises crashes its actor.
    """
    controller = supervisor.controllers["cache"]
    ref = controller.members["cache-1"].ref
    ref.tell_nowait(RunHook(controller.view(), HookName.BACKUP, {"path": "/b"}))

    return ref
