"""Where an engine is and how to reach it: `EngineConfig` and `TlsFiles`.

Plain records, no engine calls: a spec names its engines with them, and
`open_engine_runtime` connects to one. The engine named `DEFAULT_ENGINE` is
the one rolecall uses when nothing else is said (``DOCKER_HOST`` or the
local socket).
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

from attrs import field, frozen

__all__ = ["DEFAULT_ENGINE", "EngineConfig", "TlsFiles"]

DEFAULT_ENGINE = "default"
"""The name of the engine rolecall uses unless a spec says otherwise."""

_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_SCHEMES = ("unix://", "tcp://")


@frozen
class TlsFiles:
    """The PEM files that secure a ``tcp://`` engine connection.

    Attributes:
        ca: The CA certificate(s) the engine's server certificate must
            chain to.
        cert: rolecall's client certificate, which the engine checks.
        key: That certificate's private key.
    """

    ca: Path = field(converter=Path)
    cert: Path = field(converter=Path)
    key: Path = field(converter=Path)


def _check_name(_: object, __: object, name: str) -> None:
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"an engine name is 1-32 lower-case letters, digits, '-' or '_' "
            f"starting with a letter, got {name!r}"
        )


def _check_url(_: object, __: object, url: str) -> None:
    where = url.partition("://")[2].strip("/")
    if not url.startswith(_SCHEMES) or not where:
        raise ValueError(
            f"an engine URL is unix:///path/docker.sock or tcp://host:port, got {url!r}"
        )


def _check_peer(_: object, __: object, address: str | None) -> None:
    if address is None:
        return

    try:
        ipaddress.ip_address(address)
    except ValueError as exc:
        raise ValueError(
            f"an engine's peer_address is an IP address of its host, got {address!r}"
        ) from exc


@frozen
class EngineConfig:
    """One Docker engine rolecall places members on.

    Attributes:
        name: How specs and status name it (`DEFAULT_ENGINE` for the one
            rolecall uses by default).
        url: ``unix:///path/docker.sock`` or ``tcp://host:port``.
        tls: Certificate files for a ``tcp://`` engine that wants TLS with
            client certificates; ``None`` for none.
        peer_address: The address of the engine's host at which containers
            on *other* engines reach ports this engine's members publish;
            ``None`` when no member on another engine needs to.

    Raises:
        ValueError: A bad name, URL or peer address, or TLS on a unix
            socket.
    """

    name: str = field(validator=_check_name)
    url: str = field(validator=_check_url)
    tls: TlsFiles | None = None
    peer_address: str | None = field(default=None, validator=_check_peer)

    def __attrs_post_init__(self) -> None:
        if self.tls is not None and not self.url.startswith("tcp://"):
            raise ValueError(
                f"engine {self.name!r}: TLS files apply to a tcp:// URL only, "
                f"got {self.url!r}"
            )
