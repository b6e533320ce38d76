"""TLS with client certificates for a ``tcp://`` engine.

`tls_context` builds the SSL context from `TlsFiles` once, when the runtime
is made, so that a missing or broken file is reported before any member
is placed on that engine, with the file and what to do.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from ..hooks_protocol._errors import EngineTlsError
from ._engine_config import TlsFiles


def _readable(path: Path, role: str, *, engine: str, address: str) -> None:
    try:
        with path.open("rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise EngineTlsError(
            f"engine {engine!r} at {address!r}: cannot read its TLS {role} "
            f"file {str(path)!r} ({exc.strerror or exc}); fix the path or its "
            f"permissions in the engine's tls settings",
            address=address,
            engine=engine,
            path=str(path),
        ) from exc


def tls_context(tls: TlsFiles, *, engine: str, address: str) -> ssl.SSLContext:
    """An SSL context that checks the engine against ``tls.ca`` and shows
    ``tls.cert``.

    Raises:
        EngineTlsError: A file is missing, unreadable, or not what it should
            be (``path`` names it).
    """
    for path, role in ((tls.ca, "CA"), (tls.cert, "certificate"), (tls.key, "key")):
        _readable(path, role, engine=engine, address=address)

    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    try:
        context.load_verify_locations(cafile=tls.ca)
    except ssl.SSLError as exc:
        raise _bad_file(tls.ca, "a PEM CA certificate", exc, engine, address) from exc

    try:
        context.load_cert_chain(certfile=tls.cert, keyfile=tls.key)
    except ssl.SSLError as exc:
        raise _bad_file(
            tls.cert, f"a PEM certificate matching key {str(tls.key)!r}", exc,
            engine, address,
        ) from exc  # fmt: skip

    return context


def _bad_file(
    path: Path, expected: str, exc: ssl.SSLError, engine: str, address: str
) -> EngineTlsError:
    return EngineTlsError(
        f"engine {engine!r} at {address!r}: {str(path)!r} is not {expected} "
        f"({exc.reason or exc}); point the engine's tls settings at the "
        f"right file",
        address=address,
        engine=engine,
        path=str(path),
    )


def handshake_failed(
    exc: BaseException, tls: TlsFiles, *, engine: str, address: str
) -> EngineTlsError:
    """The error for a TLS handshake with the engine that failed."""
    reason = getattr(exc, "reason", None) or exc
    if isinstance(exc, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY" in str(
        reason
    ):
        hint = (
            f"the engine's certificate does not chain to CA {str(tls.ca)!r} "
            f"or is not issued for that host; use the CA that signed it"
        )
    else:
        hint = (
            f"the engine closed the connection, which is how it refuses a "
            f"client certificate it does not trust: use a certificate in place "
            f"of {str(tls.cert)!r} signed by the CA the engine's --tlscacert "
            f"names"
        )
    return EngineTlsError(
        f"TLS with engine {engine!r} at {address!r} failed ({reason}): {hint}",
        address=address,
        engine=engine,
    )
