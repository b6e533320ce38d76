"""Reading an image's plan: its ``plan`` hook, run in a throwaway container."""

from __future__ import annotations

import hashlib
import random
import time

import anyio
import structlog

from rolecall.actors import ContainerRuntime, ContainerSpec, HookConvention, run_hook
from rolecall.hooks_protocol import (
    HookName,
    HookPayload,
    ImageNotFoundError,
    MemberInfo,
    Plan,
    RolecallError,
    SpecError,
    plan_from_data,
)

from ._naming import LABEL_EXPIRES, LABEL_MANAGED
from ._spec import ServiceSpec

__all__ = ["read_plan"]

_PLAN_PROBE_TIMEOUT = 60.0

_PROBE_LIFETIME = 2 * _PLAN_PROBE_TIMEOUT + 60.0
"""Seconds after its creation past which a probe container is surely
abandoned: the probe that made it has given up on it by then."""

_log = structlog.get_logger("rolecall.supervisor")


async def read_plan(
    runtime: ContainerRuntime, spec: ServiceSpec
) -> tuple[Plan, HookConvention]:
    """Run the image's ``plan`` hook in a short-lived container.

    The plan is a property of the image, so callers read it once per image,
    in a container that belongs to no service.

    Raises:
        SpecError: The image is missing or its plan is unreadable.
    """
    try:
        image = await runtime.inspect_image(spec.image)
    except ImageNotFoundError as error:
        raise SpecError(
            f"image {spec.image!r} of service {spec.name!r} is not on the"
            f" engine at {runtime.address}: build or load it first"
            " (`rolecall demo` builds the example images)",
            service=spec.name,
        ) from error

    convention = HookConvention.from_image(image)
    await _sweep_abandoned_probes(runtime)
    plan = await _run_plan_probe(runtime, spec, image.id, convention)

    return plan, convention


async def _run_plan_probe(
    runtime: ContainerRuntime,
    spec: ServiceSpec,
    image_id: str,
    convention: HookConvention,
) -> Plan:
    # A control plane killed while this container exists leaves it behind;
    # the next probe on the engine, by any control plane, removes it once
    # it has expired (see `_sweep_abandoned_probes`).
    digest = hashlib.sha256(image_id.encode()).hexdigest()[:12]
    expires = int(time.time() + _PROBE_LIFETIME)
    probe = ContainerSpec(
        name=f"rolecall-plan-{digest}-{random.randrange(1 << 30):x}",
        image=spec.image,
        labels={
            **spec.labels,
            LABEL_MANAGED: "plan-probe",
            LABEL_EXPIRES: str(expires),
        },
    )
    info = await runtime.create_container(probe)
    try:
        await runtime.start_container(info.id)
        payload = HookPayload(
            hook=HookName.PLAN,
            service=spec.name,
            member=MemberInfo(id=f"{spec.name}-plan", role=None, address=""),
            config=spec.config,
            env=spec.env,
        )
        run = await run_hook(
            runtime,
            info.id,
            payload,
            convention=convention,
            timeout=_PLAN_PROBE_TIMEOUT,
            secrets=[spec.env[key] for key in spec.secret_keys],
        )
        return plan_from_data(run.result.data)
    except RolecallError as error:
        raise SpecError(
            f"could not read the plan of image {spec.image!r}: {error}",
            service=spec.name,
        ) from error
    finally:
        with anyio.CancelScope(shield=True):
            await runtime.remove_container(info.id)


async def _sweep_abandoned_probes(runtime: ContainerRuntime) -> None:
    """Remove probe containers whose control plane died while probing.

    Only expired ones: a probe container of another control plane that is
    younger may be in use right now. One without the label (made before it
    existed) is left alone for the same reason. A failure to sweep never
    stops a probe: the leftovers wait for the next one.
    """
    now = time.time()
    try:
        probes = await runtime.list_containers(labels={LABEL_MANAGED: "plan-probe"})
        for info in probes:
            expires = info.labels.get(LABEL_EXPIRES, "")
            if expires.isdigit() and int(expires) < now:
                await runtime.remove_container(info.id)
                _log.info(
                    "plan_probe_swept",
                    container=info.name,
                    reason="left by a control plane that stopped while probing",
                )
    except RolecallError as error:
        _log.warning("plan_probe_sweep_failed", error=str(error))
