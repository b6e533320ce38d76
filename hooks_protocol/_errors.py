"""Every error rolecall raises, in one tree.

The tree lives in the lowest layer so that every layer above (actors,
supervisor, runner) raises members of the same family, and a caller needs
one ``except RolecallError`` to catch them all::

    RolecallError
    ├── ProtocolError               bytes or records that break the hook contract
    │   ├── MessageDecodeError      garbled, truncated or wrongly shaped message
    │   ├── MessageTooLargeError    a payload or result over its size limit
    │   └── ProtocolVersionError    a peer that speaks another protocol version
    ├── SpecError                   desired state that cannot be realised
    │   └── UnsupportedTopologyError  the image's plan does not offer it
    ├── EngineError                 the container engine refused or failed
    │   ├── EngineUnavailableError  no engine answers on the address tried
    │   │   └── EngineTlsError      TLS with the engine cannot be set up or fails
    │   ├── ContainerGoneError      the container vanished or stopped mid-call
    │   ├── ImageNotFoundError      the image is not on the engine
    │   └── ImageBuildError         an example image could not be built
    ├── HookError                   a hook ran and did not succeed
    │   ├── HookFailedError         exit code outside the protocol's classes
    │   ├── HookUnsupportedError    the image does not implement that hook
    │   ├── HookBadPayloadError     the hook rejected what rolecall sent (a bug)
    │   ├── HookRetryLaterError     the hook asks to be run again later
    │   └── HookTimeoutError        the hook ran past its deadline and was killed
    ├── ActorError                  the actor runtime refused a message
    │   ├── MailboxFullError        a bounded mailbox had no room
    │   ├── ActorStoppedError       the actor is not running any more
    │   └── AskTimeoutError         no reply came in time
    ├── FailoverError               no member can safely become primary
    │   └── WriterUnknownError      stopped members no journal knows; none is chosen
    ├── ConvergenceTimeoutError     a service did not reach its desired state
    ├── ServiceFailedError          supervision gave up on the service
    ├── ServiceClaimedError         another control plane manages the service
    └── StateError                  the control plane's state directory is unusable
        ├── StateCorruptError       a journal file is truncated or damaged
        └── StateLockedError        another control plane holds the directory

Every error carries typed fields for what it is about; callers never parse
messages.
"""

from __future__ import annotations

__all__ = [
    "ActorError",
    "ActorStoppedError",
    "AskTimeoutError",
    "ContainerGoneError",
    "ConvergenceTimeoutError",
    "EngineError",
    "EngineTlsError",
    "EngineUnavailableError",
    "FailoverError",
    "HookBadPayloadError",
    "HookError",
    "HookFailedError",
    "HookRetryLaterError",
    "HookTimeoutError",
    "HookUnsupportedError",
    "ImageBuildError",
    "ImageNotFoundError",
    "MailboxFullError",
    "MessageDecodeError",
    "MessageTooLargeError",
    "ProtocolError",
    "ProtocolVersionError",
    "RolecallError",
    "ServiceClaimedError",
    "ServiceFailedError",
    "SpecError",
    "StateCorruptError",
    "StateError",
    "StateLockedError",
    "UnsupportedTopologyError",
    "WriterUnknownError",
]


class RolecallError(Exception):
    """Root of every error rolecall raises on purpose."""


# -- protocol ---------------------------------------------------------------


class ProtocolError(RolecallError):
    """Bytes or records that break the hook protocol."""


class MessageDecodeError(ProtocolError):
    """A message could not be decoded into the record it should hold."""


class MessageTooLargeError(ProtocolError):
    """A message is larger than the protocol allows.

    Attributes:
        size: The size seen, in bytes.
        limit: The limit it broke, in bytes.
    """

    def __init__(self, message: str, *, size: int, limit: int) -> None:
        super().__init__(message)
        self.size = size
        self.limit = limit


class ProtocolVersionError(ProtocolError):
    """A peer speaks a protocol version rolecall does not.

    Attributes:
        version: The version the peer announced.
    """

    def __init__(self, message: str, *, version: object) -> None:
        super().__init__(message)
        self.version = version


# -- desired state ----------------------------------------------------------


class SpecError(RolecallError):
    """Desired state that is invalid or cannot be realised.

    Raised before any container is touched.

    Attributes:
        service: The service the spec describes, when known.
    """

    def __init__(self, message: str, *, service: str | None = None) -> None:
        super().__init__(message)
        self.service = service


class UnsupportedTopologyError(SpecError):
    """The image's ``plan`` does not offer the topology asked for.

    Attributes:
        topology: The topology asked for.
        supported: The topologies the plan offers.
    """

    def __init__(
        self,
        message: str,
        *,
        service: str | None,
        topology: str,
        supported: tuple[str, ...],
    ) -> None:
        super().__init__(message, service=service)
        self.topology = topology
        self.supported = supported


# -- engine -----------------------------------------------------------------


class EngineError(RolecallError):
    """The container engine refused a request or failed while serving it."""


class EngineUnavailableError(EngineError):
    """No engine answers at the address tried.

    Attributes:
        address: The socket path or URL that was tried.
    """

    def __init__(self, message: str, *, address: str) -> None:
        super().__init__(message)
        self.address = address


class EngineTlsError(EngineUnavailableError):
    """TLS with an engine cannot be set up, or its handshake fails.

    Either a certificate or key file is missing, unreadable or not PEM
    (``path`` names it), or the engine and rolecall do not trust each
    other's certificates. Either way the engine cannot be used until the
    files are fixed.

    Attributes:
        address: The engine's URL.
        engine: The engine's name.
        path: The file at fault, when one is; ``None`` for a handshake.
    """

    def __init__(
        self, message: str, *, address: str, engine: str, path: str | None = None
    ) -> None:
        super().__init__(message, address=address)
        self.engine = engine
        self.path = path


class ContainerGoneError(EngineError):
    """The container does not exist or stopped during the call.

    Attributes:
        container_id: The engine's id (or name) of the container.
    """

    def __init__(self, message: str, *, container_id: str) -> None:
        super().__init__(message)
        self.container_id = container_id


class ImageNotFoundError(EngineError):
    """The image is not present on the engine.

    Attributes:
        image: The image reference that was looked up.
    """

    def __init__(self, message: str, *, image: str) -> None:
        super().__init__(message)
        self.image = image


class ImageBuildError(EngineError):
    """An example image could not be built.

    Attributes:
        image: The image reference that was being built.
    """

    def __init__(self, message: str, *, image: str) -> None:
        super().__init__(message)
        self.image = image


# -- hooks ------------------------------------------------------------------


class HookError(RolecallError):
    """A hook ran and did not succeed.

    Attributes:
        service: The service the member belongs to.
        member: The member whose container ran the hook.
        hook: The hook's name.
        exit_code: The hook's exit code; ``None`` when the engine gave none.
        stderr_tail: The last lines the hook wrote to stderr.
    """

    def __init__(
        self,
        message: str,
        *,
        service: str,
        member: str,
        hook: str,
        exit_code: int | None,
        stderr_tail: str = "",
    ) -> None:
        super().__init__(message)
        self.service = service
        self.member = member
        self.hook = hook
        self.exit_code = exit_code
        self.stderr_tail = stderr_tail


class HookFailedError(HookError):
    """The hook exited with a failure code (or none at all)."""


class HookUnsupportedError(HookError):
    """The image does not implement the hook."""


class HookBadPayloadError(HookError):
    """The hook rejected the payload: rolecall sent something wrong."""


class HookRetryLaterError(HookError):
    """The hook asks to be run again later (for example, not ready yet)."""


class HookTimeoutError(HookError):
    """The hook ran past its deadline and its process was killed.

    Attributes:
        timeout: The deadline in seconds.
    """

    def __init__(
        self,
        message: str,
        *,
        service: str,
        member: str,
        hook: str,
        timeout: float,
        stderr_tail: str = "",
    ) -> None:
        super().__init__(
            message,
            service=service,
            member=member,
            hook=hook,
            exit_code=None,
            stderr_tail=stderr_tail,
        )
        self.timeout = timeout


# -- actors -----------------------------------------------------------------


class ActorError(RolecallError):
    """The actor runtime could not deliver or answer a message.

    Attributes:
        actor: The name of the actor concerned.
    """

    def __init__(self, message: str, *, actor: str) -> None:
        super().__init__(message)
        self.actor = actor


class MailboxFullError(ActorError):
    """A bounded mailbox had no room for the message."""


class ActorStoppedError(ActorError):
    """The actor stopped before it could take or answer the message."""


class AskTimeoutError(ActorError):
    """No reply came before the ask's deadline.

    Attributes:
        timeout: The deadline in seconds.
    """

    def __init__(self, message: str, *, actor: str, timeout: float) -> None:
        super().__init__(message, actor=actor)
        self.timeout = timeout


# -- supervision ------------------------------------------------------------


class FailoverError(RolecallError):
    """No member can safely become primary.

    Attributes:
        service: The service that lost its primary.
    """

    def __init__(self, message: str, *, service: str) -> None:
        super().__init__(message)
        self.service = service


class WriterUnknownError(FailoverError):
    """Several members of a service are stopped and no journal knows them.

    Any of them may hold the newest data; starting one as the writer would
    have the others copy its data over theirs. Nothing is started or
    removed until an operator chooses.

    Attributes:
        members: The ids of the stopped members, in number order.
    """

    def __init__(self, message: str, *, service: str, members: tuple[str, ...]) -> None:
        super().__init__(message, service=service)
        self.members = members


class ConvergenceTimeoutError(RolecallError):
    """A service did not reach its desired state in the time allowed.

    Attributes:
        service: The service that did not converge.
        timeout: The time allowed, in seconds.
        last_error: Why the last reconcile pass failed, if it did.
    """

    def __init__(
        self,
        message: str,
        *,
        service: str,
        timeout: float,
        last_error: str | None,
    ) -> None:
        super().__init__(message)
        self.service = service
        self.timeout = timeout
        self.last_error = last_error


class ServiceFailedError(RolecallError):
    """Supervision gave up on a service: no pass runs until it is applied
    again (or taken up), so waiting for it to converge is pointless.

    Attributes:
        service: The service given up on.
        reason: Why, as its ``service_failed`` event said.
    """

    def __init__(self, message: str, *, service: str, reason: str) -> None:
        super().__init__(message)
        self.service = service
        self.reason = reason


class ServiceClaimedError(RolecallError):
    """Another control plane holds the engine's claim on a service.

    Attributes:
        service: The service claimed.
        owner: The id of the control plane that holds the claim.
        host: The host it ran on when it claimed, as it said.
        pid: Its process id then, if it said.
        since: When it claimed (UTC, ISO 8601), as it said.
    """

    def __init__(
        self,
        message: str,
        *,
        service: str,
        owner: str,
        host: str,
        pid: int | None,
        since: str,
    ) -> None:
        super().__init__(message)
        self.service = service
        self.owner = owner
        self.host = host
        self.pid = pid
        self.since = since


# -- durable state ----------------------------------------------------------


class StateError(RolecallError):
    """The state directory (the journal of desired state and changes) cannot
    be used.

    Attributes:
        path: The file or directory at fault.
    """

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


class StateCorruptError(StateError):
    """A journal file is truncated or damaged; it is kept as it is.

    Attributes:
        previous: The previous generation of the same record, intact, if
            one is there; ``None`` when there is none.
    """

    def __init__(self, message: str, *, path: str, previous: str | None) -> None:
        super().__init__(message, path=path)
        self.previous = previous


class StateLockedError(StateError):
    """Another control plane holds the state directory's journal lock."""
