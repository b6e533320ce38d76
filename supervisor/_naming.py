"""Names and labels of what rolecall creates on an engine.

Names are deterministic, so a retried create finds the container, volume or
network it made before instead of making a second one; labels let rolecall
(and tests, and the demo) find exactly what it made, and let a restarted
control plane adopt a service's containers.

A member's container and volumes carry its service, member id and number,
and three values from the moment they were created: the spec's generation,
the service's highest epoch, and the role the member was created for.
Engine labels cannot change after creation, so these say where a member
came from, not what it is now: its live role and epoch come from its
``status`` hook (and, for a container that is down, from the journal).
"""

from __future__ import annotations

from collections.abc import Mapping

from rolecall.actors import DEFAULT_ENGINE, LABEL_PREFIX
from rolecall.hooks_protocol import Role

__all__ = [
    "DEFAULT_ENGINE",
    "LABEL_CREATED_EPOCH",
    "LABEL_CREATED_ROLE",
    "LABEL_ENGINE",
    "LABEL_EXPIRES",
    "LABEL_EXTRA",
    "LABEL_GENERATION",
    "LABEL_MANAGED",
    "LABEL_MEMBER",
    "LABEL_NUMBER",
    "LABEL_SERVICE",
    "container_name",
    "member_labels",
    "network_name",
    "service_labels",
    "volume_mounts",
]

LABEL_MANAGED = f"{LABEL_PREFIX}.managed"
LABEL_SERVICE = f"{LABEL_PREFIX}.service"
LABEL_MEMBER = f"{LABEL_PREFIX}.member"
LABEL_NUMBER = f"{LABEL_PREFIX}.number"
LABEL_GENERATION = f"{LABEL_PREFIX}.generation"
LABEL_CREATED_EPOCH = f"{LABEL_PREFIX}.created-epoch"
LABEL_CREATED_ROLE = f"{LABEL_PREFIX}.created-role"
LABEL_EXTRA = f"{LABEL_PREFIX}.extra"
"""On an extra member (see ``ServiceSpec.extras``): the role it was made for."""
LABEL_EXPIRES = f"{LABEL_PREFIX}.expires"
"""On a throwaway container: Unix time after which nobody uses it."""
LABEL_ENGINE = f"{LABEL_PREFIX}.engine"
"""The name of the engine a member was placed on, as the spec names it."""


def container_name(member_id: str) -> str:
    """The container name of a member."""
    return f"rolecall-{member_id}"


def network_name(service: str) -> str:
    """The user-defined network a service's members share."""
    return f"rolecall-{service}"


def volume_mounts(member_id: str, data_paths: tuple[str, ...]) -> dict[str, str]:
    """Named volume -> mount path, one volume per data path of the plan."""
    mounts: dict[str, str] = {}
    for index, path in enumerate(data_paths):
        suffix = "" if index == 0 else str(index)
        mounts[f"rolecall-{member_id}-data{suffix}"] = path

    return mounts


def service_labels(service: str, extra: Mapping[str, str]) -> dict[str, str]:
    """Labels every object of a service carries."""
    return {**extra, LABEL_MANAGED: "true", LABEL_SERVICE: service}


def member_labels(
    service: str,
    member_id: str,
    number: int,
    extra: Mapping[str, str],
    *,
    origin: tuple[int, int, Role | None] | None = None,
    extra_role: Role | None = None,
    engine: str = DEFAULT_ENGINE,
) -> dict[str, str]:
    """Labels a member's container and volumes carry.

    Args:
        service: The service.
        member_id: The member.
        number: Its ordinal.
        extra: The spec's own labels.
        origin: The spec's generation, the service's highest epoch and the
            role the member is created for, at its creation.
        extra_role: For an extra member (see ``ServiceSpec.extras``), the
            role it is made for.
        engine: The engine it is placed on.
    """
    labels = {
        **service_labels(service, extra),
        LABEL_MEMBER: member_id,
        LABEL_NUMBER: str(number),
        LABEL_ENGINE: engine,
    }
    if origin is not None:
        generation, epoch, role = origin
        labels[LABEL_GENERATION] = str(generation)
        labels[LABEL_CREATED_EPOCH] = str(epoch)
        labels[LABEL_CREATED_ROLE] = role.value if role is not None else ""
    if extra_role is not None:
        labels[LABEL_EXTRA] = extra_role.value

    return labels
