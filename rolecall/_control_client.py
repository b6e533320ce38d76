"""A client of the control API, for the CLI and for scripts.

::

    async with open_control_client(state_dir / "control.sock") as client:
        reply = await client.request("status")
        frames = client.stream("convert", service="cache", topology="redundant")
        async with aclosing(frames):
            async for kind, data in frames:
                ...  # kind is "progress", "event" or, last, "result"
"""

from __future__ import annotations

import errno
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import SocketStream
from anyio.streams.buffered import BufferedByteReceiveStream
from attrs import define

from ._control_protocol import RequestError, read_frame, send_frame
from ._errors import ControlError, RunnerUnavailableError

__all__ = ["ControlClient", "open_control_client"]

_STREAMED = ("progress", "event")


@define(eq=False)
class ControlClient:
    """One connection to a runner's control socket."""

    socket_path: Path
    _stream: SocketStream
    _receive: BufferedByteReceiveStream

    async def request(self, op: str, **args: Any) -> dict[str, Any]:
        """Send a request and return its result, skipping streamed frames.

        Raises:
            ControlError: The runner answered with an error (``code`` says
                which), or broke the protocol.
        """
        async with aclosing(self.stream(op, **args)) as frames:
            async for kind, data in frames:
                if kind == "result":
                    result: dict[str, Any] = data
                    return result

        raise AssertionError("stream() ends with a result or raises")

    async def stream(
        self, op: str, **args: Any
    ) -> AsyncGenerator[tuple[str, Any], None]:
        """Send a request; yield ``(kind, data)`` for every frame of the reply.

        Kinds are ``progress`` and ``event`` (streamed), then ``result``,
        the last. An event stream that follows never ends on its own. Use
        it in ``contextlib.aclosing`` when leaving it before its end.

        Raises:
            ControlError: The runner answered with an error, or broke the
                protocol, or closed the connection.
        """
        args = {key: value for key, value in args.items() if value is not None}
        try:
            await send_frame(self._stream, {"op": op, **args})
        except (anyio.BrokenResourceError, OSError):
            # The runner may have refused the connection (busy, forbidden)
            # and closed it before the request went out: its reply, if
            # any, is waiting to be read, and `_next` raises it.
            frame = await self._next()
            yield "result", _outcome(frame)
            return

        while True:
            frame = await self._next()
            for kind in _STREAMED:
                if kind in frame:
                    yield kind, frame[kind]
                    break
            else:
                yield "result", _outcome(frame)
                return

    async def _next(self) -> dict[str, Any]:
        try:
            frame = await read_frame(self._receive)
        except RequestError as error:
            raise ControlError(
                f"the runner's reply could not be read: {error}", code=error.code
            ) from error
        except (anyio.BrokenResourceError, OSError) as error:
            raise ControlError(
                f"the connection to the runner broke: {error}", code="connection_lost"
            ) from error

        if frame is None:
            raise ControlError(
                "the runner closed the connection before answering; see its log",
                code="connection_lost",
            )

        return frame


@asynccontextmanager
async def open_control_client(socket_path: Path) -> AsyncIterator[ControlClient]:
    """Connect to a runner's control socket.

    Raises:
        RunnerUnavailableError: No socket there, or no runner behind it.
        ControlError: ``forbidden``: the socket belongs to another user.
    """
    try:
        stream = await anyio.connect_unix(socket_path)
    except OSError as error:
        if error.errno in {errno.EACCES, errno.EPERM}:
            raise ControlError(
                f"no permission to use the control socket {str(socket_path)!r}:"
                " run rolecall as the user that runs the runner",
                code="forbidden",
            ) from error
        raise RunnerUnavailableError(
            f"no runner answers at {str(socket_path)!r}: start one with"
            " `rolecall run SPEC`, or pass the runner's --state-dir",
            socket=socket_path,
        ) from error

    async with stream:
        yield ControlClient(
            socket_path=socket_path,
            stream=stream,
            receive=BufferedByteReceiveStream(stream),
        )


def _outcome(frame: dict[str, Any]) -> Any:
    if frame.get("ok") is True:
        return frame.get("result")

    error = frame.get("error")
    if frame.get("ok") is False and isinstance(error, dict):
        return _raise(error)

    raise ControlError(
        "the runner's reply has neither a result nor an error", code="bad_reply"
    )


def _raise(error: dict[str, Any]) -> Any:
    code = error.get("code")
    message = error.get("message")
    raise ControlError(
        str(message) if message else "the runner refused the request",
        code=str(code or "failed"),
    )
