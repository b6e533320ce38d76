"""The fixed words of the hook protocol: names, exit classes, limits, labels."""

from __future__ import annotations

import enum
from typing import Final

__all__ = [
    "DEFAULT_HOOK_DIR",
    "DEFAULT_HOOK_TIMEOUTS",
    "LABEL_ENCODING",
    "LABEL_HOOK_DIR",
    "LABEL_HOOK_MODE",
    "MAX_PAYLOAD_BYTES",
    "MAX_RESULT_BYTES",
    "MAX_STDERR_BYTES",
    "PROTOCOL_VERSION",
    "Encoding",
    "ExitClass",
    "HookMode",
    "HookName",
    "Role",
    "Topology",
    "classify_exit",
]

PROTOCOL_VERSION: Final = 1
"""The version every payload and result carries; bumped on breaking change."""

MAX_PAYLOAD_BYTES: Final = 1 << 20
"""Largest encoded payload rolecall sends to a hook (1 MiB)."""

MAX_RESULT_BYTES: Final = 1 << 20
"""Largest result a hook may print on stdout (1 MiB); more is truncated."""

MAX_STDERR_BYTES: Final = 64 << 10
"""How much of a hook's stderr is kept (the tail, 64 KiB)."""

DEFAULT_HOOK_DIR: Final = "/opt/rolecall/hooks"
"""Where hooks live inside an image unless its label says otherwise."""

LABEL_HOOK_DIR: Final = "io.rolecall.hooks.dir"
"""Image label that points at another hook directory."""

LABEL_HOOK_MODE: Final = "io.rolecall.hooks.mode"
"""Image label that picks the calling convention (see `HookMode`)."""

LABEL_ENCODING: Final = "io.rolecall.hooks.encoding"
"""Image label that picks the wire encoding (see `Encoding`)."""


class HookName(enum.StrEnum):
    """The hooks an image may carry; each is an executable named so."""

    PLAN = "plan"
    CONFIGURE = "configure"
    START = "start"
    STOP = "stop"
    ROLE = "role"
    STATUS = "status"
    BACKUP = "backup"
    RESTORE = "restore"
    EXPORT = "export"
    IMPORT = "import"


class Role(enum.StrEnum):
    """What a member is asked to be."""

    STANDALONE = "standalone"
    PRIMARY = "primary"
    REPLICA = "replica"
    BACKUP = "backup"


class Topology(enum.StrEnum):
    """The shapes a service can take."""

    STANDALONE = "standalone"
    REDUNDANT = "redundant"


class Encoding(enum.StrEnum):
    """How payloads and results are encoded on the wire."""

    MSGPACK = "msgpack"
    JSON = "json"


class HookMode(enum.StrEnum):
    """The calling convention of an image's hooks.

    ``native`` hooks read the payload on stdin and print a result on stdout.
    ``nanobox`` hooks take a JSON payload as their first argument; ``plan``
    prints JSON on stdout and the other hooks print nothing rolecall reads.
    """

    NATIVE = "native"
    NANOBOX = "nanobox"


class ExitClass(enum.Enum):
    """What a hook's exit code means to the control plane.

    The codes follow BSD ``sysexits.h`` where one fits, so shell hooks can
    use the familiar numbers.
    """

    OK = 0
    BAD_PAYLOAD = 65  # EX_DATAERR: the payload made no sense to the hook
    UNSUPPORTED = 69  # EX_UNAVAILABLE: the image has no such capability
    RETRY_LATER = 75  # EX_TEMPFAIL: not now, ask again
    FAILED = -1  # any other code, and a missing one


DEFAULT_HOOK_TIMEOUTS: Final[dict[HookName, float]] = {
    HookName.PLAN: 30.0,
    HookName.CONFIGURE: 60.0,
    HookName.START: 120.0,
    HookName.STOP: 60.0,
    HookName.ROLE: 120.0,
    HookName.STATUS: 10.0,
    HookName.BACKUP: 3600.0,
    HookName.RESTORE: 3600.0,
    HookName.EXPORT: 3600.0,
    HookName.IMPORT: 3600.0,
}
"""Seconds each hook may run unless the plan or the spec says otherwise."""

_CLASS_BY_CODE: Final = {
    cls.value: cls for cls in ExitClass if cls is not ExitClass.FAILED
}


def classify_exit(exit_code: int | None) -> ExitClass:
    """Map a hook's exit code to its class.

    Args:
        exit_code: The code the engine reported; ``None`` when it gave none.

    Returns:
        The class; a missing code is never success.
    """
    if exit_code is None:
        return ExitClass.FAILED

    return _CLASS_BY_CODE.get(exit_code, ExitClass.FAILED)
