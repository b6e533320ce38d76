"""Write rolecall hooks in Python with the standard library alone.

Copy this one file into the image's hook directory, next to the hooks. A hook
is then a short script; Python puts the script's own directory on
``sys.path``, so the import just works::

    #!/usr/bin/env python3
    import rolecall_hook

    def status(ctx):
        ctx.log("probing", port=6379)
        return {"role": "primary", "healthy": True}

    rolecall_hook.run(status)

`run` reads the payload, calls the handler with a `Context`, prints the
result and exits with the code the protocol gives to what happened:

=================  ====  ===============================================
raised             exit  meaning for rolecall
=================  ====  ===============================================
nothing            0     done; the returned map is the result's data
`HookFailed`       1     the hook tried and failed
`BadPayload`       65    rolecall sent something the hook cannot use
`Unsupported`      69    the image cannot do what was asked
`RetryLater`       75    not now; run the hook again later
anything else      1     a bug in the hook; the traceback goes to stderr
=================  ====  ===============================================

The payload arrives as msgpack on stdin unless ``ROLECALL_ENCODING`` says
``json``; msgpack must be installed only for the former. With
``ROLECALL_HOOK_MODE=nanobox`` the payload is JSON in the first argument and
only ``plan`` prints anything (its data, as bare JSON).

Stdout belongs to the result: while the handler runs, ``print()`` and the
output of any child process go to stderr instead.

This file must not import rolecall, attrs or anything else an image may lack.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any, ClassVar, NoReturn

__all__ = [
    "EXIT_BAD_PAYLOAD",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_RETRY_LATER",
    "EXIT_UNSUPPORTED",
    "MAX_PAYLOAD_BYTES",
    "MAX_RESULT_BYTES",
    "PROTOCOL_VERSION",
    "BadPayload",
    "Context",
    "HookFailed",
    "RetryLater",
    "Unsupported",
    "run",
]

PROTOCOL_VERSION = 1
"""The protocol version this SDK speaks; payloads must carry the same."""

MAX_PAYLOAD_BYTES = 1 << 20
"""Largest payload rolecall sends (1 MiB); more means something is wrong."""

MAX_RESULT_BYTES = 1 << 20
"""Largest result rolecall reads (1 MiB); the SDK refuses to print more."""

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_PAYLOAD = 65  # EX_DATAERR
EXIT_UNSUPPORTED = 69  # EX_UNAVAILABLE
EXIT_RETRY_LATER = 75  # EX_TEMPFAIL


class _HookExit(Exception):  # noqa: N818  (a base for the names below)
    """An outcome the protocol has an exit code for."""

    exit_code: ClassVar[int] = EXIT_FAILED


class HookFailed(_HookExit):
    """The hook tried and could not do the job (exit 1)."""

    exit_code = EXIT_FAILED


class BadPayload(_HookExit):
    """The payload makes no sense to the hook (exit 65).

    Raise it when a request field is missing or wrong; rolecall treats it as
    a bug on its side and does not retry.
    """

    exit_code = EXIT_BAD_PAYLOAD


class Unsupported(_HookExit):
    """The image cannot do what was asked (exit 69).

    Raise it for a role, a topology or a whole hook the image does not offer.
    """

    exit_code = EXIT_UNSUPPORTED


class RetryLater(_HookExit):
    """Not now: rolecall should run the hook again later (exit 75).

    Raise it when the service is still starting, a primary is not reachable
    yet, or a lock is held.
    """

    exit_code = EXIT_RETRY_LATER


@dataclass(frozen=True)
class Context:
    """What the hook was told, as plain maps and lists.

    Attributes:
        hook: The hook's name (``role``, ``status``, ...).
        payload: The whole payload as decoded.
        member: This member: ``id``, ``role``, ``address``, ``epoch``.
        members: Every member of the service, this one included.
        config: The service's configuration from the spec.
        env: The environment from the spec; it may hold secrets, so never
            log it.
        request: What is asked; its keys depend on the hook.
    """

    hook: str
    payload: dict[str, Any]
    member: dict[str, Any]
    members: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    request: dict[str, Any] = field(default_factory=dict)

    @property
    def epoch(self) -> int:
        """The epoch of the last role command this member was given."""
        epoch = self.member.get("epoch", 0)
        return epoch if isinstance(epoch, int) else 0

    def log(self, message: str, **fields: object) -> None:
        """Write one structured line to stderr, which rolecall forwards.

        Args:
            message: What happened, in a few words.
            **fields: Extra values to show beside it; never pass secrets.
        """
        _log(
            "info",
            message,
            {"hook": self.hook, "member": self.member.get("id")},
            fields,
        )


def run(
    handler: Callable[[Context], dict[str, Any] | None], *, message: str = ""
) -> NoReturn:
    """Run a hook: read the payload, call ``handler``, answer, exit.

    Args:
        handler: Does the hook's work. It returns the result's data (or
            ``None`` for none) and raises one of this module's exceptions to
            end with that exit code.
        message: A short note for the result, shown by rolecall.

    Raises:
        SystemExit: Always, with the exit code of the outcome.
    """
    result_out = _claim_stdout()
    mode = os.environ.get("ROLECALL_HOOK_MODE", "native")
    encoding = os.environ.get("ROLECALL_ENCODING", "msgpack")
    if mode == "nanobox":
        encoding = "json"

    hook = os.environ.get("ROLECALL_HOOK") or os.path.basename(sys.argv[0])
    labels: dict[str, object] = {"hook": hook}
    try:
        context = _read_context(mode, encoding)
        hook = context.hook
        labels = {"hook": hook, "member": context.member["id"]}
        answer: object = handler(context)
        output = _answer(mode, encoding, hook, answer, message)
    except _HookExit as exc:
        labels["outcome"] = type(exc).__name__
        _log("error", str(exc), labels)
        _write(result_out, _failure(mode, encoding, str(exc)))
        raise SystemExit(exc.exit_code) from None
    except Exception:  # noqa: BLE001  (any bug in the handler ends as exit 1)
        traceback.print_exc()
        raise SystemExit(EXIT_FAILED) from None

    _write(result_out, output)
    raise SystemExit(EXIT_OK)


# -- reading ----------------------------------------------------------------


def _read_context(mode: str, encoding: str) -> Context:
    if mode == "nanobox":
        if len(sys.argv) < 2:
            raise BadPayload(
                "nanobox mode needs the JSON payload as the first argument; "
                "run the hook as: HOOK '<payload json>'"
            )

        payload = _decode(sys.argv[1].encode(), "json")
    elif mode == "native":
        raw = sys.stdin.buffer.read(MAX_PAYLOAD_BYTES + 1)
        if len(raw) > MAX_PAYLOAD_BYTES:
            raise BadPayload(
                f"the payload is over {MAX_PAYLOAD_BYTES} bytes; "
                "rolecall never sends that much, so check what feeds stdin"
            )

        payload = _decode(raw, encoding)
    else:
        raise BadPayload(
            f"ROLECALL_HOOK_MODE is {mode!r}; expected 'native' or 'nanobox'"
        )

    return _context(payload)


def _decode(raw: bytes, encoding: str) -> object:
    if encoding == "json":
        try:
            return json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise BadPayload(f"the payload is not valid JSON: {exc}") from exc

    if encoding != "msgpack":
        raise BadPayload(
            f"ROLECALL_ENCODING is {encoding!r}; expected 'msgpack' or 'json'"
        )

    msgpack = _import_msgpack()
    try:
        return msgpack.unpackb(raw, raw=False)
    except (ValueError, TypeError) as exc:
        raise BadPayload(f"the payload is not valid msgpack: {exc}") from exc


def _import_msgpack() -> Any:
    try:
        import msgpack  # type: ignore[import-untyped]
    except ImportError as exc:
        raise HookFailed(
            "msgpack is not installed in this image; install it, or set the "
            "image label io.rolecall.hooks.encoding=json"
        ) from exc

    return msgpack


def _context(payload: object) -> Context:
    if not isinstance(payload, dict):
        raise BadPayload(f"the payload must be a map, got {type(payload).__name__}")

    version = payload.get("protocol")
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise BadPayload(
            f"the payload speaks protocol {version!r}, this SDK speaks "
            f"{PROTOCOL_VERSION}; copy the rolecall_hook.py that matches rolecall"
        )

    hook = _field(payload, "hook", str)
    _field(payload, "service", str)
    member = _member(_field(payload, "member", dict), "member")
    members = payload.get("members") or []
    if not isinstance(members, list):
        raise BadPayload(f"payload 'members' must be a list, got {members!r}")

    return Context(
        hook=hook,
        payload=payload,
        member=member,
        members=[
            _member(item, f"members[{index}]") for index, item in enumerate(members)
        ],
        config=_optional_map(payload, "config"),
        env=_optional_map(payload, "env"),
        request=_optional_map(payload, "request"),
    )


def _member(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadPayload(
            f"payload {where!r} must be a map, got a {type(value).__name__}"
        )

    _field(value, "id", str, where)
    _field(value, "address", str, where)
    if "role" not in value:
        raise BadPayload(f"the payload lacks the '{where}.role' key")

    epoch = value.get("epoch", 0)
    if type(epoch) is not int:
        raise BadPayload(f"payload '{where}.epoch' must be an integer, got {epoch!r}")

    return value


def _field(data: dict[str, Any], key: str, kind: type[Any], where: str = "") -> Any:
    name = f"{where}.{key}" if where else key
    if key not in data:
        raise BadPayload(f"the payload lacks the {name!r} key")

    value = data[key]
    if not isinstance(value, kind):
        raise BadPayload(
            f"payload {name!r} must be a {kind.__name__}, got a {type(value).__name__}"
        )

    return value


def _optional_map(payload: dict[str, Any], key: str) -> dict[str, Any]:
    value = payload.get(key)
    if value is None:
        return {}

    if not isinstance(value, dict):
        raise BadPayload(f"payload {key!r} must be a map, got a {type(value).__name__}")

    return value


# -- answering --------------------------------------------------------------


def _answer(mode: str, encoding: str, hook: str, answer: object, message: str) -> bytes:
    if answer is None:
        answer = {}

    if not isinstance(answer, dict):
        raise TypeError(
            f"the {hook} handler returned a {type(answer).__name__}; "
            "return a dict (the result's data) or None"
        )

    if mode == "nanobox":
        return _nanobox_output(hook, answer)

    return _encode(
        {"protocol": PROTOCOL_VERSION, "data": answer, "message": message},
        encoding,
    )


def _nanobox_output(hook: str, data: dict[str, Any]) -> bytes:
    # Nanobox hooks answer nothing but their plan.
    if hook != "plan":
        return b""

    return json.dumps(data).encode() + b"\n"


def _failure(mode: str, encoding: str, message: str) -> bytes:
    # A failure still answers, when it can, so rolecall shows the reason.
    if mode != "native" or encoding not in ("json", "msgpack"):
        return b""

    result = {"protocol": PROTOCOL_VERSION, "data": {}, "message": message}
    try:
        return _encode(result, encoding)
    except (_HookExit, TypeError, ValueError):
        return b""


def _encode(result: dict[str, Any], encoding: str) -> bytes:
    if encoding == "json":
        data = json.dumps(result, separators=(",", ":")).encode()
    else:
        data = _import_msgpack().packb(result)

    if len(data) > MAX_RESULT_BYTES:
        raise HookFailed(
            f"the result is {len(data)} bytes, over the {MAX_RESULT_BYTES}-byte "
            "limit; write bulk data to a file and return its path"
        )

    return bytes(data)


# -- streams ----------------------------------------------------------------


def _claim_stdout() -> IO[bytes]:
    # Keep the real stdout for the result, then point file descriptor 1 (and
    # so child processes) and sys.stdout at stderr.
    sys.stdout.flush()
    result_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    return result_out


def _write(result_out: IO[bytes], data: bytes) -> None:
    with result_out:
        result_out.write(data)


def _log(
    level: str,
    message: str,
    context: dict[str, object],
    fields: dict[str, object] | None = None,
) -> None:
    # One JSON object per line; the SDK's own keys win over the caller's.
    line: dict[str, object] = {"level": level, "event": message, **context}
    for key, value in (fields or {}).items():
        line.setdefault(key, value)

    sys.stderr.write(json.dumps(line, default=str) + "\n")
    sys.stderr.flush()
