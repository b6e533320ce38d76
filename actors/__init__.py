"""The actor runtime and the container actor.

Actors own a bounded mailbox and handle one message at a time. The container
actor mirrors one container and runs its hooks through a `ContainerRuntime`.
`DockerRuntime` is the one on a real engine; only the ``_docker*`` modules
import aiodocker.
"""

from __future__ import annotations

from ._actor import Actor, ActorState, ActorStatistics, ChildCrashed
from ._actor_ref import ActorRef
from ._archive_copy import DirectoryCopy, copy_directory
from ._container_actor import ContainerActor
from ._container_messages import (
    ApplyRole,
    ContainerMessage,
    MemberPhase,
    Prepare,
    Probe,
    RoleTicket,
    RunHook,
    ServiceView,
    StopService,
    Superseded,
)
from ._docker import DockerRuntime, open_docker_runtime, open_engine_runtime
from ._engine_config import DEFAULT_ENGINE, EngineConfig, TlsFiles
from ._hook_stderr import (
    MAX_STDERR_LINE_CHARS,
    MAX_STDERR_LINES,
    StderrForwarder,
    mask_secrets,
)
from ._hooks import HookConvention, HookRun, run_hook, stderr_tail
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
from ._spawner import ActorSpawner, open_spawner

__all__ = [
    "DEFAULT_CAPACITY",
    "DEFAULT_ENGINE",
    "LABEL_PREFIX",
    "MAX_STDERR_LINES",
    "MAX_STDERR_LINE_CHARS",
    "Actor",
    "ActorRef",
    "ActorSpawner",
    "ActorState",
    "ActorStatistics",
    "ApplyRole",
    "ChildCrashed",
    "ContainerActor",
    "ContainerInfo",
    "ContainerMessage",
    "ContainerRuntime",
    "ContainerSpec",
    "ContainerState",
    "DirectoryCopy",
    "DockerRuntime",
    "EngineConfig",
    "EngineEvent",
    "ExecResult",
    "HookConvention",
    "HookRun",
    "ImageInfo",
    "Mailbox",
    "MailboxStatistics",
    "MemberPhase",
    "OverflowPolicy",
    "Prepare",
    "Probe",
    "RoleTicket",
    "RunHook",
    "ServiceView",
    "StderrForwarder",
    "StopService",
    "Superseded",
    "TlsFiles",
    "copy_directory",
    "mask_secrets",
    "open_docker_runtime",
    "open_engine_runtime",
    "open_spawner",
    "run_hook",
    "stderr_tail",
]
