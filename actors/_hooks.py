"""Run one hook inside a container and read its answer.

The runner knows the calling conventions (native and Nanobox-style) and turns
an exit code into success or a typed `HookError`; it knows nothing of roles or
topologies.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Mapping

from attrs import frozen

from rolecall.hooks_protocol import (
    DEFAULT_HOOK_DIR,
    LABEL_ENCODING,
    LABEL_HOOK_DIR,
    LABEL_HOOK_MODE,
    MAX_RESULT_BYTES,
    MAX_STDERR_BYTES,
    Encoding,
    ExitClass,
    HookBadPayloadError,
    HookError,
    HookFailedError,
    HookMode,
    HookName,
    HookPayload,
    HookResult,
    HookRetryLaterError,
    HookTimeoutError,
    HookUnsupportedError,
    MessageDecodeError,
    ProtocolError,
    classify_exit,
    decode_result,
    encode_payload,
    payload_to_wire,
)

from ._hook_stderr import mask_secrets
from ._runtime import ContainerRuntime, ExecResult, ImageInfo

__all__ = ["HookConvention", "HookRun", "run_hook", "stderr_tail"]

_STDERR_TAIL_LINES = 5
STDERR_TAIL_CHARS = 2000
"""Characters of stderr an error quotes at most: one flooding line must not
make every error and log line about it as long as the capture."""

# The exit codes a POSIX exec gives when the program is missing or not
# executable: the image does not carry that hook.
_NOT_FOUND_CODES = frozenset({126, 127})

_ERROR_BY_CLASS: Mapping[ExitClass, type[HookError]] = {
    ExitClass.BAD_PAYLOAD: HookBadPayloadError,
    ExitClass.UNSUPPORTED: HookUnsupportedError,
    ExitClass.RETRY_LATER: HookRetryLaterError,
    ExitClass.FAILED: HookFailedError,
}


@frozen
class HookConvention:
    """How an image's hooks are called, read from its labels.

    Attributes:
        directory: Where the hooks live inside the container.
        mode: Native or Nanobox-style calling.
        encoding: Wire encoding of payload and result (native mode).
    """

    directory: str = DEFAULT_HOOK_DIR
    mode: HookMode = HookMode.NATIVE
    encoding: Encoding = Encoding.MSGPACK

    @classmethod
    def from_image(cls, image: ImageInfo) -> HookConvention:
        """Read the convention from an image's labels.

        Raises:
            ProtocolError: A label holds a value rolecall does not know.
        """
        labels = image.labels
        try:
            mode = HookMode(labels.get(LABEL_HOOK_MODE, HookMode.NATIVE))
            encoding = Encoding(labels.get(LABEL_ENCODING, Encoding.MSGPACK))
        except ValueError as error:
            raise ProtocolError(
                f"image {image.id[:19]!r} has a hook label rolecall does not"
                f" know ({error}): use mode native|nanobox and encoding"
                " msgpack|json"
            ) from error

        directory = labels.get(LABEL_HOOK_DIR, DEFAULT_HOOK_DIR).rstrip("/")

        return cls(directory=directory or "/", mode=mode, encoding=encoding)


@frozen
class HookRun:
    """The outcome of a successful hook run.

    Attributes:
        result: What the hook answered.
        exec: The raw exec outcome (exit code, capped output, duration).
    """

    result: HookResult
    exec: ExecResult


async def run_hook(
    runtime: ContainerRuntime,
    container_id: str,
    payload: HookPayload,
    *,
    convention: HookConvention,
    timeout: float,
    secrets: Collection[str] = (),
    on_stderr: Callable[[bytes], None] | None = None,
) -> HookRun:
    """Run the hook the payload names and return its answer.

    Args:
        runtime: The engine the container runs on.
        container_id: The container to run the hook in.
        payload: What the hook is told; ``payload.hook`` picks the hook.
        convention: How the image's hooks are called.
        timeout: Seconds before the hook is killed.
        secrets: Values shown as ``***`` wherever the hook's stderr is
            quoted (the error's message and ``stderr_tail``), for a hook
            that echoes a password from its payload.
        on_stderr: Gets the hook's stderr piece by piece as it arrives
            (see `StderrForwarder`); it must not raise.

    Returns:
        The decoded result with the exec's outcome.

    Raises:
        HookTimeoutError: The hook ran past ``timeout`` and was killed.
        HookError: The hook exited with anything but success (the subclass
            names the exit class).
        ContainerGoneError: The container went away during the run.
        ProtocolError: The hook's answer could not be decoded.
    """
    hook = payload.hook
    argv, stdin = _invocation(payload, convention)
    env = {
        "ROLECALL_HOOK": hook.value,
        "ROLECALL_HOOK_MODE": convention.mode.value,
        "ROLECALL_ENCODING": convention.encoding.value,
    }
    started = time.monotonic()
    try:
        outcome = await runtime.exec(
            container_id,
            argv,
            stdin=stdin,
            env=env,
            timeout=timeout,
            max_stdout=MAX_RESULT_BYTES,
            max_stderr=MAX_STDERR_BYTES,
            on_stderr=on_stderr,
        )
    except TimeoutError as error:
        elapsed = time.monotonic() - started
        raise HookTimeoutError(
            f"hook {hook.value!r} of member {payload.member.id!r} (service"
            f" {payload.service!r}) ran {elapsed:.1f}s, past its {timeout:g}s"
            " timeout, and was killed: make the hook finish sooner or raise"
            " its timeout in the image's plan",
            service=payload.service,
            member=payload.member.id,
            hook=hook.value,
            timeout=timeout,
        ) from error

    _raise_for_exit(payload, outcome, secrets)

    return HookRun(result=_read_result(payload, outcome, convention), exec=outcome)


def _invocation(
    payload: HookPayload, convention: HookConvention
) -> tuple[list[str], bytes | None]:
    path = f"{convention.directory}/{payload.hook.value}"
    if convention.mode is HookMode.NANOBOX:
        wire = json.dumps(payload_to_wire(payload), separators=(",", ":"))
        return [path, wire], None

    return [path], encode_payload(payload, convention.encoding)


def _raise_for_exit(
    payload: HookPayload, outcome: ExecResult, secrets: Collection[str]
) -> None:
    exit_class = classify_exit(outcome.exit_code)
    if exit_class is ExitClass.OK:
        return

    code = outcome.exit_code
    if code in _NOT_FOUND_CODES:
        exit_class = ExitClass.UNSUPPORTED

    tail = stderr_tail(
        outcome.stderr, secrets=secrets, truncated=outcome.stderr_truncated
    )
    shown = "no exit code" if code is None else f"exit code {code}"
    hint = _HINTS[exit_class]
    detail = f": {tail}" if tail else ""
    raise _ERROR_BY_CLASS[exit_class](
        f"hook {payload.hook.value!r} of member {payload.member.id!r} (service"
        f" {payload.service!r}) ended with {shown} ({hint}){detail}",
        service=payload.service,
        member=payload.member.id,
        hook=payload.hook.value,
        exit_code=code,
        stderr_tail=tail,
    )


_HINTS: Mapping[ExitClass, str] = {
    ExitClass.BAD_PAYLOAD: (
        "it rejected the payload: check the service's config or report a bug"
    ),
    ExitClass.UNSUPPORTED: "the image does not implement it",
    ExitClass.RETRY_LATER: "it asks to be run again later",
    ExitClass.FAILED: "failed; see its stderr",
}


def _read_result(
    payload: HookPayload, outcome: ExecResult, convention: HookConvention
) -> HookResult:
    if convention.mode is HookMode.NANOBOX:
        return _read_nanobox_result(payload, outcome)

    _check_not_truncated(payload, outcome)

    return decode_result(outcome.stdout, convention.encoding)


def _check_not_truncated(payload: HookPayload, outcome: ExecResult) -> None:
    # A cut result may still decode (JSON padded with white space), so the
    # flag decides, not the decoder.
    if outcome.stdout_truncated:
        raise MessageDecodeError(
            f"hook {payload.hook.value!r} of member {payload.member.id!r}"
            f" printed more than {MAX_RESULT_BYTES} bytes on stdout: results"
            " must stay under that; move bulk data through a volume"
        )


def _read_nanobox_result(payload: HookPayload, outcome: ExecResult) -> HookResult:
    # Nanobox-style hooks print JSON only from `plan`; other hooks' stdout is
    # free text for humans, so it is not read as a result.
    if payload.hook is not HookName.PLAN:
        return HookResult()

    _check_not_truncated(payload, outcome)
    try:
        data = json.loads(outcome.stdout or b"{}")
    # Malformed JSON and bad UTF-8 raise ValueError; nesting deeper than the
    # interpreter's stack raises RecursionError.
    except (ValueError, RecursionError) as error:
        raise MessageDecodeError(
            f"plan of member {payload.member.id!r} printed no valid JSON: {error}"
        ) from error

    if not isinstance(data, dict):
        raise MessageDecodeError(
            f"plan of member {payload.member.id!r} printed JSON that is not an"
            f" object: {type(data).__name__}"
        )

    return HookResult(data=data)


def stderr_tail(
    stderr: bytes,
    *,
    lines: int = _STDERR_TAIL_LINES,
    secrets: Collection[str] = (),
    truncated: bool = False,
) -> str:
    """The last few lines of a hook's stderr, at most `STDERR_TAIL_CHARS`
    characters, secrets masked, as text for a message.

    Args:
        truncated: Whether ``stderr`` lost its start to the capture's cap
            (then a secret may begin before it).
    """
    text = stderr.decode("utf-8", errors="replace")
    text = mask_secrets(text, secrets, cut_before=truncated).strip()
    tail = "\n".join(text.splitlines()[-lines:])
    if len(tail) > STDERR_TAIL_CHARS:
        tail = "[cut] " + tail[-STDERR_TAIL_CHARS:]

    return tail
