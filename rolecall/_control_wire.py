"""One control connection's wire: reading requests, sending replies.

Every read and send has a deadline, so a client that stalls loses its own
connection and nothing else; a frame is never cut in two by a cancellation.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

import anyio
from anyio.abc import SocketAttribute, SocketStream
from anyio.streams.buffered import BufferedByteReceiveStream
from anyio.streams.memory import MemoryObjectSendStream

from rolecall.hooks_protocol import (
    ConvergenceTimeoutError,
    RolecallError,
    ServiceClaimedError,
    SpecError,
)

from ._control_protocol import RequestError, read_frame, send_frame
from ._errors import ControlError

__all__ = [
    "GONE",
    "error_code",
    "peer_uid",
    "read_requests",
    "send",
    "send_error",
    "send_result",
]

GONE = (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)
"""What a send or read raises when the client has gone."""

READ_TIMEOUT = 30.0  # seconds for a whole request frame to arrive
FIRST_REQUEST_TIMEOUT = 10.0
"""Seconds a new connection may take to begin its first request. Slots are
few: connections that never ask anything must not hold them and lock every
other client out. Later waits between requests have no deadline: a client
that asked once is a client."""
SEND_TIMEOUT = 10.0  # seconds for a client to take one reply frame
_CREDS = struct.Struct("3i")  # struct ucred: pid, uid, gid


async def read_requests(
    receive: BufferedByteReceiveStream,
    requests: MemoryObjectSendStream[dict[str, Any] | RequestError],
    ended: anyio.Event,
) -> None:
    """Read requests into ``requests`` until the input ends or breaks.

    A bad frame is queued as its error, and ends the reading. Reads are
    shielded from cancellation; closing the connection ends them.
    """
    try:
        async with requests:
            first_byte_timeout: float | None = FIRST_REQUEST_TIMEOUT
            while True:
                try:
                    with anyio.CancelScope(shield=True):
                        request = await read_frame(
                            receive,
                            timeout=READ_TIMEOUT,
                            first_byte_timeout=first_byte_timeout,
                        )
                    first_byte_timeout = None
                except RequestError as error:
                    await requests.send(error)
                    return

                if request is None:
                    return

                await requests.send(request)
    except GONE:
        return
    finally:
        ended.set()


def peer_uid(stream: SocketStream) -> int | None:
    raw = stream.extra(SocketAttribute.raw_socket, None)  # noqa: S610  (anyio, not Django)
    if raw is None or raw.family != socket.AF_UNIX:
        return None

    data = raw.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CREDS.size)
    _pid, uid, _gid = _CREDS.unpack(data)

    return int(uid)


def error_code(error: BaseException) -> str:
    if isinstance(error, ControlError):
        return error.code

    if isinstance(error, ConvergenceTimeoutError):
        return "timeout"

    if isinstance(error, SpecError | ServiceClaimedError):
        return "refused"

    if isinstance(error, RolecallError):
        return "failed"

    return "internal"


async def send(stream: SocketStream, message: dict[str, Any]) -> None:
    """Send one whole frame: a cancellation never cuts one in two.

    A client that reads nothing for `SEND_TIMEOUT` seconds loses its
    connection (TimeoutError, an OSError, ends it).
    """
    with anyio.CancelScope(shield=True), anyio.fail_after(SEND_TIMEOUT):
        await send_frame(stream, message)


async def send_result(stream: SocketStream, result: dict[str, Any]) -> None:
    await send(stream, {"ok": True, "result": result})


async def send_error(stream: SocketStream, code: str, message: str) -> None:
    await send(stream, {"ok": False, "error": {"code": code, "message": message}})
