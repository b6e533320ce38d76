"""Errors of the runner, its spec file and its control API.

They join the tree drawn in ``rolecall.hooks_protocol``, under the same
root, so one ``except RolecallError`` still catches everything::

    RolecallError
    ├── SpecError
    │   └── SpecFileError           a spec file that cannot be read or used
    ├── RunnerError                 the runner cannot start or go on
    │   └── StateDirLockedError     another runner holds the state directory
    └── ControlError                the control API refused or failed a request
        └── RunnerUnavailableError  no runner answers on the control socket
"""

from __future__ import annotations

from pathlib import Path

from rolecall.hooks_protocol import RolecallError, SpecError

__all__ = [
    "ControlError",
    "RunnerError",
    "RunnerUnavailableError",
    "SpecFileError",
    "StateDirLockedError",
]


class SpecFileError(SpecError):
    """A spec file is missing, is not TOML, or breaks the schema.

    Attributes:
        path: The file.
        key: The dotted key at fault (``services.cache.replicas``), if one is.
    """

    def __init__(
        self,
        message: str,
        *,
        path: Path,
        key: str | None = None,
        service: str | None = None,
    ) -> None:
        super().__init__(message, service=service)
        self.path = path
        self.key = key


class RunnerError(RolecallError):
    """The runner cannot start, or cannot go on."""


class StateDirLockedError(RunnerError):
    """Another runner holds the state directory's lock.

    Attributes:
        state_dir: The directory.
        pid: The process id the lock file names, if it names one.
    """

    def __init__(self, message: str, *, state_dir: Path, pid: int | None) -> None:
        super().__init__(message)
        self.state_dir = state_dir
        self.pid = pid


class ControlError(RolecallError):
    """The runner refused or failed a control request.

    Attributes:
        code: Stable error code from the control API (``unknown_service``,
            ``bad_request``, ``failed``, ...; see ``docs/control-api.md``).
    """

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


class RunnerUnavailableError(ControlError):
    """No runner answers on the control socket.

    Attributes:
        socket: The socket path tried.
    """

    def __init__(self, message: str, *, socket: Path) -> None:
        super().__init__(message, code="no_runner")
        self.socket = socket
