"""Fake hooks: what a handler is given, and one run of it as an exec.

A fake image maps hook names to handlers. `_run_hook` does what a hook
process would: it finds the handler the command names, decodes the payload
from stdin (or argv, in Nanobox mode), calls the handler and encodes its
reply, turning `FakeHookExit` and uncaught errors into exit codes.
"""

from __future__ import annotations

import inspect
import json
import traceback
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeAlias

import msgpack  # type: ignore[import-untyped, unused-ignore]  # ships no types
from attrs import define, field

from rolecall.hooks_protocol import (
    LABEL_ENCODING,
    LABEL_HOOK_MODE,
    PROTOCOL_VERSION,
    Encoding,
    ExitClass,
    HookMode,
)

if TYPE_CHECKING:
    from ._fake_container import FakeContainer
    from ._fake_runtime import FakeRuntime

__all__ = ["ENCODING_ENV", "FakeHook", "FakeHookCall", "FakeHookExit"]

ENCODING_ENV = "ROLECALL_ENCODING"
"""Exec environment variable that picks the wire encoding for one hook run."""

_NOT_FOUND = 127  # what a shell exits with when the command does not exist


class FakeHookExit(Exception):  # noqa: N818  (an exit, not a bug: named so)
    """Raised by a fake hook to exit with a non-zero code.

    Attributes:
        exit_code: The code the hook exits with.
        stderr: Text the hook writes to stderr before it exits.
    """

    def __init__(self, exit_code: int, *, stderr: str = "") -> None:
        super().__init__(f"fake hook exits with code {exit_code}")
        self.exit_code = exit_code
        self.stderr = stderr


@define(eq=False)
class FakeHookCall:
    """One run of a fake hook: what it was given and where it runs.

    Attributes:
        hook: The hook's name (the last part of ``argv[0]``).
        argv: The command line, as the caller passed it.
        payload: The decoded payload (``{}`` when stdin was empty).
        env: The container's environment plus the exec's.
        container: The container it runs in.
        runtime: The fake engine, to reach other containers.
        volumes: Mount path -> the mounted volume's data; a dict that
            outlives the container, the fake's "disk".
    """

    hook: str
    argv: tuple[str, ...]
    payload: dict[str, Any]
    env: dict[str, str]
    container: FakeContainer
    runtime: FakeRuntime
    volumes: dict[str, dict[str, Any]]
    # What the hook wrote to stderr so far, in order.
    _stderr: list[str] = field(factory=list, init=False)

    @property
    def request(self) -> dict[str, Any]:
        """The payload's ``request`` map (``{}`` when it has none)."""
        request = self.payload.get("request")
        if not isinstance(request, dict):
            return {}

        return request

    def log(self, text: str) -> None:
        """Write ``text`` and a newline to the hook's stderr."""
        self._stderr.append(text + "\n")

    def _stderr_bytes(self, tail: str = "") -> bytes:
        return ("".join(self._stderr) + tail).encode()


FakeHook: TypeAlias = Callable[
    [FakeHookCall],
    Mapping[str, Any] | Awaitable[Mapping[str, Any] | None] | None,
]
"""A fake hook: takes the call, returns the result's data or raises."""


async def _run_hook(
    runtime: FakeRuntime,
    container: FakeContainer,
    argv: tuple[str, ...],
    stdin: bytes | None,
    env: Mapping[str, str] | None,
) -> tuple[int, bytes, bytes]:
    image = container.image
    directory, _, hook = argv[0].rpartition("/")
    handler = image.hooks.get(hook) if directory == image.hook_dir else None
    if handler is None:
        return _NOT_FOUND, b"", f"{argv[0]}: not found\n".encode()

    full_env = {**container.spec.env, **(env or {})}
    wire = full_env.get(ENCODING_ENV, image.labels.get(LABEL_ENCODING, ""))
    json_wire = wire == Encoding.JSON
    nanobox = image.labels.get(LABEL_HOOK_MODE) == HookMode.NANOBOX
    raw = stdin
    if nanobox:
        # Nanobox-style hooks take their JSON payload as argv[1].
        raw = argv[1].encode() if len(argv) > 1 else b""

    try:
        payload = _decode(raw, json_wire=nanobox or json_wire)
    except (ValueError, TypeError) as exc:
        message = f"{argv[0]}: cannot decode the payload: {exc}\n"
        return ExitClass.BAD_PAYLOAD.value, b"", message.encode()

    call = FakeHookCall(
        hook=hook,
        argv=argv,
        payload=payload,
        env=full_env,
        container=container,
        runtime=runtime,
        volumes=runtime.volumes_of(container),
    )
    try:
        data = handler(call)
        if inspect.isawaitable(data):
            data = await data

        stdout = _encode(data or {}, json_wire=json_wire, nanobox=nanobox)
    except FakeHookExit as exit_:
        return exit_.exit_code, b"", call._stderr_bytes(exit_.stderr)
    except Exception:  # noqa: BLE001  (a crashing process exits 1, as here)
        return 1, b"", call._stderr_bytes(traceback.format_exc())

    return 0, stdout, call._stderr_bytes()


def _decode(raw: bytes | None, *, json_wire: bool) -> dict[str, Any]:
    if not raw:
        return {}

    value = json.loads(raw) if json_wire else msgpack.unpackb(raw, raw=False)
    if not isinstance(value, dict):
        raise TypeError(f"expected a map, got {type(value).__name__}")

    return value


def _encode(data: Mapping[str, Any], *, json_wire: bool, nanobox: bool) -> bytes:
    if nanobox:
        return json.dumps(dict(data)).encode()

    reply = {"protocol": PROTOCOL_VERSION, "data": dict(data), "message": ""}
    if json_wire:
        return json.dumps(reply).encode()

    packed: bytes = msgpack.packb(reply, use_bin_type=True)

    return packed
