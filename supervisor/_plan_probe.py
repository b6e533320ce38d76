"""Reading an image's plan: its ``plan`` hook, run in a throwaway container."""

from __future__ import annotations

import hashlib
import random

import anyio

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

from ._naming import LABEL_MANAGED
from ._spec import ServiceSpec

__all__ = ["read_plan"]

_PLAN_PROBE_TIMEOUT = 60.0


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
    plan = await _run_plan_probe(runtime, spec, image.id, convention)

    return plan, convention


async def _run_plan_probe(
    runtime: ContainerRuntime,
    spec: ServiceSpec,
    image_id: str,
    convention: HookConvention,
) -> Plan:
    # Known gap: a control plane killed while this container exists
    # leaves it behind (label managed=plan-probe). Adoption does not
    # sweep such containers: another control plane's probe of the same
    # image carries the same labels and may be running right now.
    digest = hashlib.sha256(image_id.encode()).hexdigest()[:12]
    probe = ContainerSpec(
        name=f"rolecall-plan-{digest}-{random.randrange(1 << 30):x}",
        image=spec.image,
        labels={**spec.labels, LABEL_MANAGED: "plan-probe"},
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
