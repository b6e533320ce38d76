"""The control API's wire format, shared by the server and the client.

A frame is a 4-byte big-endian length, then that many bytes of msgpack
holding one map. Requests carry ``op`` and the operation's arguments;
replies are ``{"ok": true, "result": ...}``, ``{"ok": false, "error":
{"code": ..., "message": ...}}``, or, before the final reply of a long
operation or an event stream, ``{"progress": ...}`` and ``{"event": ...}``.
``docs/control-api.md`` documents every shape.

Decoding is bounded: a frame over `FRAME_LIMIT` is refused from its length
prefix alone, and msgpack is unpacked with limits on every container and
string, so a small frame that claims a huge array costs nothing.
"""

from __future__ import annotations

import struct
from typing import Any

import anyio
import msgpack  # type: ignore[import-untyped]  # ships no types
from anyio.abc import ByteSendStream
from anyio.streams.buffered import BufferedByteReceiveStream
from attrs import frozen

from rolecall.hooks_protocol import Plan, plan_to_data
from rolecall.supervisor import ServiceEvent, ServiceStatus

__all__ = [
    "CONTROL_PROTOCOL",
    "FRAME_LIMIT",
    "RequestError",
    "event_to_data",
    "pack_frame",
    "parse_request",
    "plan_data",
    "read_frame",
    "send_frame",
    "status_to_data",
    "unpack_body",
]

CONTROL_PROTOCOL = 1
FRAME_LIMIT = 1 << 20  # bytes of msgpack in one frame
_HEADER = struct.Struct(">I")
_LIMITS = {
    "max_str_len": 64 << 10,
    "max_bin_len": 64 << 10,
    "max_array_len": 4096,
    "max_map_len": 1024,
    "max_ext_len": 0,
}


class RequestError(Exception):
    """A frame or request that cannot be used; the connection ends after it.

    Not a `RolecallError`: it never leaves this package's server and
    client, which turn it into an error reply or a `ControlError`.

    Attributes:
        code: The error code the reply carries (``frame_too_large``,
            ``truncated_frame``, ``bad_frame``, ``unknown_op``,
            ``bad_request``).
    """

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


def pack_frame(message: dict[str, Any]) -> bytes:
    """One frame holding ``message``.

    Raises:
        RequestError: The packed message is over `FRAME_LIMIT`.
    """
    body: bytes = msgpack.packb(message, use_bin_type=True)
    if len(body) > FRAME_LIMIT:
        raise RequestError(
            f"message of {len(body)} bytes is over the frame limit of {FRAME_LIMIT}",
            code="frame_too_large",
        )

    return _HEADER.pack(len(body)) + body


async def send_frame(stream: ByteSendStream, message: dict[str, Any]) -> None:
    """Send one frame holding ``message``."""
    await stream.send(pack_frame(message))


async def read_frame(
    stream: BufferedByteReceiveStream,
    *,
    timeout: float | None = None,
    first_byte_timeout: float | None = None,
) -> dict[str, Any] | None:
    """Read one frame; ``None`` when the peer closed between frames.

    Args:
        stream: The connection.
        timeout: Seconds the frame may take once its first byte came.
        first_byte_timeout: Seconds to wait for that first byte; no
            deadline when ``None``. Only with ``timeout``.

    Raises:
        RequestError: The length is over the limit, the peer closed inside
            a frame, the frame took longer than ``timeout`` or did not
            begin within ``first_byte_timeout``, or the body is not one
            msgpack map.
    """
    if timeout is None:
        return await _read_frame(stream)

    if not stream.buffer:
        try:
            with anyio.fail_after(first_byte_timeout):
                stream.feed_data(await stream.receive())
        except anyio.EndOfStream:
            return None
        except TimeoutError:
            raise RequestError(
                f"no request within {first_byte_timeout:g} s", code="timeout"
            ) from None

    try:
        with anyio.fail_after(timeout):
            return await _read_frame(stream)
    except TimeoutError:
        raise RequestError(
            f"a frame did not arrive whole within {timeout:g} s", code="timeout"
        ) from None


async def _read_frame(stream: BufferedByteReceiveStream) -> dict[str, Any] | None:
    try:
        header = await stream.receive_exactly(_HEADER.size)
    except anyio.IncompleteRead:
        if stream.buffer:
            raise RequestError(
                "the connection closed inside a frame's length prefix",
                code="truncated_frame",
            ) from None
        return None
    except anyio.EndOfStream:
        return None

    (length,) = _HEADER.unpack(header)
    if length > FRAME_LIMIT:
        raise RequestError(
            f"frame length {length} is over the limit of {FRAME_LIMIT} bytes",
            code="frame_too_large",
        )

    try:
        body = await stream.receive_exactly(length)
    except (anyio.IncompleteRead, anyio.EndOfStream):
        raise RequestError(
            f"the connection closed inside a frame of {length} bytes",
            code="truncated_frame",
        ) from None

    return unpack_body(body)


def unpack_body(body: bytes) -> dict[str, Any]:
    """Decode a frame's body into one map with string keys.

    Raises:
        RequestError: It is not exactly one msgpack map with string keys, or
            breaks a size limit.
    """
    try:
        message = msgpack.unpackb(
            body, raw=False, strict_map_key=True, use_list=True, **_LIMITS
        )
    # Input from a socket: msgpack raises ValueError, TypeError, its own
    # exceptions (FormatError, StackError, ExtraData) or UnicodeDecodeError
    # for bytes it refuses; every one of them means a bad frame.
    except Exception as error:  # noqa: BLE001
        raise RequestError(
            f"frame is not valid msgpack: {type(error).__name__}", code="bad_frame"
        ) from None

    if not isinstance(message, dict):
        raise RequestError(
            f"frame holds a {type(message).__name__}, expected a map",
            code="bad_frame",
        )

    return message


# -- requests -----------------------------------------------------------------


@frozen
class _Arg:
    kinds: tuple[type, ...]
    required: bool = False


_SERVICE = _Arg((str,), required=True)
_TIMEOUT = _Arg((int, float))
_OPS: dict[str, dict[str, _Arg]] = {
    "status": {"service": _Arg((str,))},
    "convert": {
        "service": _SERVICE,
        "topology": _Arg((str,), required=True),
        "replicas": _Arg((int,)),
        "timeout": _TIMEOUT,
    },
    "switchover": {
        "service": _SERVICE,
        "member": _Arg((str,), required=True),
        "timeout": _TIMEOUT,
    },
    "move": {
        "service": _SERVICE,
        "engine": _Arg((str,), required=True),
        "way": _Arg((str,)),
        "timeout": _TIMEOUT,
    },
    "pause": {"service": _SERVICE},
    "resume": {"service": _SERVICE},
    "events": {
        "follow": _Arg((bool,)),
        "service": _Arg((str,)),
        "backlog": _Arg((int,)),
    },
    "plan": {"service": _SERVICE, "member": _Arg((str,))},
    "down": {
        "service": _SERVICE,
        "confirm": _Arg((str,), required=True),
        "take_over": _Arg((bool,)),
    },
}


def parse_request(request: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Check a request against its op's arguments.

    Returns:
        The op and its arguments.

    Raises:
        RequestError: ``unknown_op``, or ``bad_request`` for a missing,
            unknown or mistyped argument.
    """
    op = request.get("op")
    if not isinstance(op, str):
        raise RequestError("a request needs `op`, a string", code="bad_request")

    schema = _OPS.get(op)
    if schema is None:
        raise RequestError(
            f"unknown op {op[:40]!r}: use one of {', '.join(sorted(_OPS))}",
            code="unknown_op",
        )

    args = {key: value for key, value in request.items() if key != "op"}
    for key, value in args.items():
        arg = schema.get(key)
        if arg is None:
            raise RequestError(
                f"op {op!r} takes no argument {key[:40]!r}", code="bad_request"
            )
        # bool is an int to Python; a flag is never a count or a timeout.
        wrong_bool = isinstance(value, bool) and bool not in arg.kinds
        if wrong_bool or not isinstance(value, arg.kinds):
            kinds = " or ".join(kind.__name__ for kind in arg.kinds)
            raise RequestError(
                f"argument {key!r} of op {op!r} must be {kinds}", code="bad_request"
            )

    missing = [key for key, arg in schema.items() if arg.required and key not in args]
    if missing:
        raise RequestError(
            f"op {op!r} needs argument {missing[0]!r}", code="bad_request"
        )

    timeout = args.get("timeout")
    if timeout is not None and not 0 < timeout <= 3600:
        raise RequestError(
            f"timeout must be above 0 and at most 3600 s, got {timeout!r}",
            code="bad_request",
        )

    return op, args


# -- records as plain data ----------------------------------------------------


def status_to_data(
    status: ServiceStatus, *, last_change: ServiceEvent | None
) -> dict[str, Any]:
    """A service's status as the control API sends it."""
    return {
        "name": status.name,
        "source": "runner",
        "image": status.image,
        "topology": status.topology.value,
        "replicas": status.replicas,
        "converged": status.converged,
        "epoch": status.epoch,
        "primary": status.primary,
        "failover_paused": status.failover_paused,
        "engine": status.engine,
        "moving": status.moving,
        "last_error": status.last_error,
        "failure": status.failure,
        "last_change": None if last_change is None else event_to_data(last_change),
        "members": [
            {
                "id": member.id,
                "container": member.container_name,
                "state": "running" if member.alive else "down",
                "role": member.role.value if member.role else None,
                "healthy": member.healthy,
                "epoch": member.epoch,
                "offset": member.offset,
                "published": member.published,
                "error": None,
                "ready": member.ready,
                "address": member.address,
                "following": member.following,
                "extra": member.extra.value if member.extra else None,
                "container_id": member.container_id,
                "engine": member.engine,
            }
            for member in status.members
        ],
    }


def event_to_data(event: ServiceEvent) -> dict[str, Any]:
    """A timeline event as the control API sends it."""
    return {
        "time": event.time,
        "service": event.service,
        "kind": event.kind,
        "member": event.member,
        "detail": event.detail,
        "duration": event.duration,
        "fields": {key: _plain(value) for key, value in event.fields.items()},
    }


def plan_data(plan: Plan) -> dict[str, Any]:
    """An image's plan as the control API sends it."""
    return {key: _plain(value) for key, value in plan_to_data(plan).items()}


def _plain(value: object) -> object:
    """``value`` if msgpack packs it as it is, else its text."""
    if value is None or isinstance(value, bool | int | float | str):
        return value

    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]

    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}

    return str(value)
