"""The contract between rolecall and the hooks inside an image.

Hook names, payload and result records, the wire encoding, exit-code classes,
size limits and the protocol version. ``docs/hooks-protocol.md`` describes the
same contract for hook authors.
"""

from __future__ import annotations

from ._codec import (
    decode_payload,
    decode_result,
    encode_payload,
    encode_result,
    payload_to_wire,
    plan_from_data,
    plan_to_data,
    status_from_data,
    status_to_data,
)
from ._errors import *  # noqa: F403  (the error tree is public as a whole)
from ._errors import __all__ as _error_names
from ._records import HookPayload, HookResult, MemberInfo, MemberStatus, Plan
from ._vocabulary import (
    DEFAULT_HOOK_DIR,
    DEFAULT_HOOK_TIMEOUTS,
    LABEL_ENCODING,
    LABEL_HOOK_DIR,
    LABEL_HOOK_MODE,
    MAX_PAYLOAD_BYTES,
    MAX_RESULT_BYTES,
    MAX_STDERR_BYTES,
    PROTOCOL_VERSION,
    Encoding,
    ExitClass,
    HookMode,
    HookName,
    Role,
    Topology,
    classify_exit,
)

__all__ = [  # noqa: PLE0604  (the error names are a list of str)
    *_error_names,
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
    "HookPayload",
    "HookResult",
    "MemberInfo",
    "MemberStatus",
    "Plan",
    "Role",
    "Topology",
    "classify_exit",
    "decode_payload",
    "decode_result",
    "encode_payload",
    "encode_result",
    "payload_to_wire",
    "plan_from_data",
    "plan_to_data",
    "status_from_data",
    "status_to_data",
]
