"""The control API's server: the runner's unix socket.

Only the runner's own user may talk to it: the socket is mode 0600 in a
mode 0700 directory, and each connection's peer credentials are checked.
A connection carries requests one after another, answered in order; the
client's end of input ends an event stream that follows, and ends the
connection once the requests read are answered. A malformed, oversized,
unknown or incomplete request gets an error reply and the connection ends;
nothing a client sends can end the runner. Long operations (convert,
switchover, down) run in the runner's task group and go on when their
client leaves.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio
import structlog
from anyio.abc import SocketListener, SocketStream
from anyio.streams.buffered import BufferedByteReceiveStream
from attrs import define, field

from rolecall.hooks_protocol import (
    RolecallError,
)

from ._control_protocol import (
    RequestError,
    event_to_data,
    parse_request,
)
from ._control_wire import (
    GONE,
    error_code,
    peer_uid,
    read_requests,
    send,
    send_error,
    send_result,
)
from ._errors import ControlError
from ._runner import HISTORY

if TYPE_CHECKING:
    from rolecall.supervisor import ServiceEvent

    from ._runner import Operation, Runner

__all__ = ["ControlServer", "serve_control"]

_log = structlog.get_logger("rolecall.control")

_MAX_CONNECTIONS = 32
_QUEUED = 4  # requests read ahead of the one being answered
# Events that end one step of a reconciler's plan (see pending_steps).
_STEP_KINDS = frozenset(
    {"member_prepared", "role_applied", "member_fenced", "member_removed"}
)


async def serve_control(
    listener: SocketListener, runner: Runner, *, allowed_uid: int | None = None
) -> None:
    """Answer control requests on ``listener`` until cancelled.

    Args:
        listener: A unix socket listener.
        runner: The runner whose operations the requests reach.
        allowed_uid: The one user id allowed to connect; the process's
            effective user by default.
    """
    server = ControlServer(
        runner=runner,
        allowed_uid=os.geteuid() if allowed_uid is None else allowed_uid,
    )
    async with anyio.create_task_group() as group:
        try:
            async with listener:
                while True:
                    stream = await listener.accept()
                    group.start_soon(server.handle, stream)
        finally:
            with anyio.CancelScope(shield=True):
                await server.close_all()


@define(eq=False)
class ControlServer:
    """Answers the connections of one control socket.

    Each connection has a reader, which reads requests (and notices the
    client's end of input) and is never cancelled: it ends when the
    connection is closed. Cancelling a pending read of a unix socket can
    race with the socket becoming readable on anyio's asyncio backend (the
    reader callback then completes a cancelled future); closing instead
    wakes the read cleanly.
    """

    runner: Runner
    allowed_uid: int
    # Connections being answered now; never above _MAX_CONNECTIONS.
    connections: int = 0
    # Open connections, closed by `close_all` when the server stops.
    streams: set[SocketStream] = field(factory=set)

    async def handle(self, stream: SocketStream) -> None:
        """Answer one connection; never raises an `Exception`."""
        self.streams.add(stream)
        try:
            async with stream:
                await self._handle(stream)
        # Input from the socket must never end the runner: a client gone
        # is routine, and a bug met while answering is logged with its
        # traceback and ends that connection only.
        except Exception as error:  # noqa: BLE001
            if _only(error, GONE):
                _log.debug("control_client_gone")
            else:
                _log.exception("control_connection_failed")
        finally:
            self.streams.discard(stream)

    async def close_all(self) -> None:
        """Close every open connection, waking their readers."""
        for stream in list(self.streams):
            await stream.aclose()

    async def _handle(self, stream: SocketStream) -> None:
        if self.connections >= _MAX_CONNECTIONS:
            await send_error(stream, "busy", "too many control connections")
            return

        uid = peer_uid(stream)
        if uid != self.allowed_uid:
            _log.warning("control_peer_refused", uid=uid)
            await send_error(
                stream, "forbidden", "only the runner's own user may connect"
            )
            return

        self.connections += 1
        try:
            send, requests = anyio.create_memory_object_stream[
                dict[str, Any] | RequestError
            ](_QUEUED)
            ended = anyio.Event()
            receive = BufferedByteReceiveStream(stream)
            async with anyio.create_task_group() as group, requests:
                group.start_soon(read_requests, receive, send, ended)
                async for item in requests:
                    if not await self._answer(item, stream, ended):
                        break
                # The reader may wait in a read; closing wakes it.
                await stream.aclose()
        finally:
            self.connections -= 1

    async def _answer(
        self,
        item: dict[str, Any] | RequestError,
        stream: SocketStream,
        ended: anyio.Event,
    ) -> bool:
        """Answer one request; whether the connection goes on."""
        try:
            if isinstance(item, RequestError):
                raise item

            op, args = parse_request(item)
        except RequestError as error:
            _log.warning("control_request_refused", code=error.code, error=str(error))
            await send_error(stream, error.code, str(error))
            return False

        started = time.monotonic()
        try:
            keep = await self._dispatch(op, args, stream, ended)
        except ControlError as error:
            message = self.runner.redactor.mask(str(error))
            await send_error(stream, error.code, message)
            keep = True
        except RequestError as error:
            # An argument the operation itself found out of range: a bad
            # request like any other, answered before the connection closes.
            _log.warning("control_request_refused", code=error.code, error=str(error))
            await send_error(stream, error.code, str(error))
            keep = False
        except RolecallError as error:
            # Anything else of the one error tree an operation raises before
            # it starts (a spec its arguments make invalid, say) is answered
            # too: a request never goes without a reply.
            message = self.runner.redactor.mask(str(error))
            await send_error(stream, error_code(error), message)
            keep = True

        _log.debug(
            "control_request",
            op=op,
            duration_ms=round((time.monotonic() - started) * 1000),
        )

        return keep

    async def _dispatch(
        self,
        op: str,
        args: dict[str, Any],
        stream: SocketStream,
        ended: anyio.Event,
    ) -> bool:
        runner = self.runner
        service = args.get("service")
        if op == "status":
            services = runner.status_data(service)
            await send_result(stream, {"runner": runner.info(), "services": services})
            return True

        if op == "plan":
            await send_result(stream, self._plan(args))
            return True

        if op in {"pause", "resume"}:
            assert isinstance(service, str)  # noqa: S101  (_parse checked it)
            await send_result(stream, self._pause(op, service))
            return True

        if op == "events":
            return await self._events(args, stream, ended)

        assert isinstance(service, str)  # noqa: S101  (_parse checked it)
        runner.check_service(service)
        work, steps = self._long_work(op, service, args)
        _log.info("control_op", op=op, service=service, args=_shown(args))
        operation = runner.start(op, service, work)

        return await self._follow_operation(operation, steps, stream)

    # -- short operations ----------------------------------------------------

    def _plan(self, args: dict[str, Any]) -> dict[str, Any]:
        service = args["service"]
        plan = self.runner.plan_data(service)
        member = args.get("member")
        if member is not None:
            known = [m.id for m in self.runner.supervisor.status(service).members]
            if member not in known:
                raise ControlError(
                    f"service {service!r} has no member {member!r}"
                    f" (members: {', '.join(known) or 'none'})",
                    code="unknown_member",
                )

        return {"service": service, "member": member, "plan": plan}

    def _pause(self, op: str, service: str) -> dict[str, Any]:
        self.runner.check_service(service)
        if op == "pause":
            self.runner.supervisor.pause_failover(service)
        else:
            self.runner.supervisor.resume_failover(service)

        _log.info(f"failover_{op}d", service=service)
        (status,) = self.runner.status_data(service)

        return status

    # -- long operations -----------------------------------------------------

    def _long_work(
        self, op: str, service: str, args: dict[str, Any]
    ) -> tuple[Callable[[], Awaitable[dict[str, Any]]], int | None]:
        runner = self.runner
        if op == "convert":
            topology, replicas = args["topology"], args.get("replicas")
            timeout = float(args.get("timeout", 300.0))
            steps = runner.conversion_steps(service, topology, replicas)

            async def convert() -> dict[str, Any]:
                return await runner.convert(service, topology, replicas, timeout)

            return convert, steps

        if op == "switchover":
            member = args["member"]
            timeout = float(args.get("timeout", 60.0))

            async def switchover() -> dict[str, Any]:
                return await runner.switchover(service, member, timeout)

            # Each member applies one role: the old primary follows, the
            # new one takes writes, the others follow it.
            members = len(runner.supervisor.status(service).members)
            return switchover, members or None

        if op == "move":
            engine, way = args["engine"], args.get("way")
            timeout = float(args.get("timeout", 600.0))

            async def move() -> dict[str, Any]:
                return await runner.move(service, engine, way, timeout)

            # Each member is made again on the target, and the old ones go.
            members = len(runner.supervisor.status(service).members)
            return move, 2 * members or None

        if args["confirm"] != service:
            raise ControlError(
                f"down needs `confirm` equal to the service's name {service!r},"
                f" got {args['confirm']!r}",
                code="not_confirmed",
            )

        take_over = bool(args.get("take_over"))

        async def down() -> dict[str, Any]:
            return await runner.down(service, take_over=take_over)

        return down, None

    async def _follow_operation(
        self, operation: Operation, steps: int | None, stream: SocketStream
    ) -> bool:
        """Send the operation's progress, then its outcome; whether to go on.

        The client may leave at any moment (Ctrl-C): the operation goes on
        without it, and the next send finds it gone.
        """
        progress = _Progress(operation, steps, stream)
        async with self.runner.supervisor.open_timeline() as events:
            async with anyio.create_task_group() as group:
                group.start_soon(progress.send_all, events)
                await operation.done.wait()
                group.cancel_scope.cancel()

            # Events the operation emitted last may still wait in the
            # subscription: they come before the outcome.
            while not progress.gone:
                try:
                    event = events.receive_nowait()
                except (anyio.WouldBlock, anyio.EndOfStream):
                    break
                await progress.send(event)

        if progress.gone:
            return False

        if operation.error is not None:
            message = self.runner.redactor.mask(str(operation.error))
            await send_error(stream, error_code(operation.error), message)
            return True

        elapsed = time.monotonic() - operation.started
        reply = {"ok": True, "result": operation.result, "elapsed": elapsed}
        await send(stream, reply)

        return True

    # -- events --------------------------------------------------------------

    async def _events(
        self, args: dict[str, Any], stream: SocketStream, ended: anyio.Event
    ) -> bool:
        """Send recent events; with ``follow``, new ones until the client's
        input ends."""
        service = args.get("service")
        backlog = args.get("backlog", 100)
        if not 0 <= backlog <= HISTORY:
            raise RequestError(
                f"backlog must be 0 to {HISTORY}, got {backlog!r}", code="bad_request"
            )

        # A service taken down is not managed any more, but its recorded
        # events are still worth showing.
        if service is not None and not self.runner.events_after(0, service=service):
            self.runner.check_service(service)

        async with self.runner.supervisor.open_timeline() as live:
            recorded = list(self.runner.history)
            shown = [e for _, e in recorded if service in {None, e.service}]
            for event in shown[len(shown) - backlog :] if backlog else []:
                await send(stream, {"event": event_to_data(event)})

            if not args.get("follow", False):
                await send_result(stream, {"count": min(backlog, len(shown))})
                return True

            # Recorded already means sent already (or older than the
            # backlog): skip those when the live stream repeats them.
            seen = {id(event) for _, event in recorded}
            async with anyio.create_task_group() as group:
                group.start_soon(_cancel_when, ended, group.cancel_scope)
                async for event in live:
                    if id(event) in seen or service not in {None, event.service}:
                        continue
                    await send(stream, {"event": event_to_data(event)})

        return False


# -- helpers ------------------------------------------------------------------


@define(eq=False)
class _Progress:
    """Sends a long operation's timeline events as progress frames."""

    operation: Operation
    # Steps the operation should take, when known.
    steps: int | None
    stream: SocketStream
    # Steps done so far: events of `_STEP_KINDS`.
    done: int = 0
    # Whether a send found the client gone; nothing is sent after that.
    gone: bool = False

    async def send_all(self, events: AsyncIterator[ServiceEvent]) -> None:
        """Send a progress frame for each event until cancelled."""
        async for event in events:
            await self.send(event)
            if self.gone:
                return

    async def send(self, event: ServiceEvent) -> None:
        """Send one event of the operation's service as a progress frame."""
        operation = self.operation
        if event.service != operation.service or self.gone:
            return

        counted = event.kind in _STEP_KINDS
        self.done += counted
        progress = {
            "step": self.done,
            "steps": max(self.steps, self.done) if self.steps else None,
            "counted": counted,
            "elapsed": time.monotonic() - operation.started,
            "event": event_to_data(event),
        }
        try:
            await send(self.stream, {"progress": progress})
        except GONE:
            self.gone = True
            _log.info(
                "control_client_left",
                op=operation.name,
                service=operation.service,
                outcome="the operation goes on",
            )


async def _cancel_when(event: anyio.Event, scope: anyio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


def _only(error: BaseException, kinds: tuple[type[BaseException], ...]) -> bool:
    """Whether ``error``, or every error in its group, is one of ``kinds``."""
    if isinstance(error, BaseExceptionGroup):
        _matched, rest = error.split(kinds)
        return rest is None

    return isinstance(error, kinds)


def _shown(args: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in args.items() if key != "service"}
