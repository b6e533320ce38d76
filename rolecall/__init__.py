"""rolecall: a control plane that treats containers as autonomous actors.

Images carry their know-how as hooks; rolecall tells each container what to
be and when. Embed it with `open_control_plane`, describe a service with a
`ServiceSpec`, and read what runs with ``status``. The layers underneath are
public too: `rolecall.hooks_protocol` (the contract with hooks),
`rolecall.actors` (actors and container runtimes), `rolecall.supervisor`
(desired state and reconciliation), and `rolecall.testing` (an in-memory
runtime for tests without Docker).
"""

from __future__ import annotations

from rolecall.hooks_protocol import (
    ActorError,
    ContainerGoneError,
    ConvergenceTimeoutError,
    EngineError,
    EngineTlsError,
    EngineUnavailableError,
    FailoverError,
    HookError,
    HookTimeoutError,
    ImageBuildError,
    ImageNotFoundError,
    ProtocolError,
    Role,
    RolecallError,
    ServiceClaimedError,
    ServiceFailedError,
    SpecError,
    StateCorruptError,
    StateError,
    StateLockedError,
    Topology,
    UnsupportedTopologyError,
)
from rolecall.supervisor import (
    MemberView,
    ServiceEvent,
    ServiceSpec,
    ServiceStatus,
    Supervisor,
)

from ._control_plane import DEFAULT_STATE_DIR, open_control_plane
from ._images import ensure_image
from ._version import __version__

__all__ = [
    "DEFAULT_STATE_DIR",
    "ActorError",
    "ContainerGoneError",
    "ConvergenceTimeoutError",
    "EngineError",
    "EngineTlsError",
    "EngineUnavailableError",
    "FailoverError",
    "HookError",
    "HookTimeoutError",
    "ImageBuildError",
    "ImageNotFoundError",
    "MemberView",
    "ProtocolError",
    "Role",
    "RolecallError",
    "ServiceClaimedError",
    "ServiceEvent",
    "ServiceFailedError",
    "ServiceSpec",
    "ServiceStatus",
    "SpecError",
    "StateCorruptError",
    "StateError",
    "StateLockedError",
    "Supervisor",
    "Topology",
    "UnsupportedTopologyError",
    "__version__",
    "ensure_image",
    "open_control_plane",
]
