"""The actor runtime and the container actor.

Actors own a bounded mailbox and handle one message at a time. The container
actor mirrors one container and runs its hooks through a `ContainerRuntime`.
"""

from __future__ import annotations

from ._actor import (
    Actor,
    ActorRef,
    ActorSpawner,
    ActorState,
    ActorStatistics,
    ChildCrashed,
    open_spawner,
)
from ._docker import DockerRuntime, open_docker_runtime
from ._mailbox import DEFAULT_CAPACITY, Mailbox, MailboxStatistics, OverflowPolicy
from ._runtime import (
    LABEL_PREFIX,
    ContainerInfo,
    ContainerRuntime,
    ContainerSpec,
    ContainerState,
    EngineEvent,
    ExecResult,
    ImageInfo,
)

__all__ = [
    "DEFAULT_CAPACITY",
    "LABEL_PREFIX",
    "Actor",
    "ActorRef",
    "ActorSpawner",
    "ActorState",
    "ActorStatistics",
    "ChildCrashed",
    "ContainerInfo",
    "ContainerRuntime",
    "ContainerSpec",
    "ContainerState",
    "DockerRuntime",
    "EngineEvent",
    "ExecResult",
    "ImageInfo",
    "Mailbox",
    "MailboxStatistics",
    "OverflowPolicy",
    "open_docker_runtime",
    "open_spawner",
]
