"""The spec file's ``[engines.NAME]`` tables: which engines the runner uses.

Schema::

    [engines.dc2]
    url = "tcp://10.0.0.7:2376"        # or "unix:///run/other/docker.sock"
    tls = { ca = "certs/ca.pem", cert = "certs/cert.pem", key = "certs/key.pem" }
    peer_address = "10.0.0.7"          # where other engines' containers reach it

    [engines.default]                  # optional: the engine used by default
    peer_address = "172.17.0.1"        # (its url defaults to DOCKER_HOST)

Relative TLS paths are read from the spec file's folder. A service names
its engine with ``engine = "dc2"``; without it, ``default``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rolecall.actors import DEFAULT_ENGINE, EngineConfig, TlsFiles

from ._errors import SpecFileError

__all__ = ["ENGINE_KEYS", "load_engines"]

ENGINE_KEYS = frozenset({"url", "tls", "peer_address"})
_TLS_KEYS = ("ca", "cert", "key")


def load_engines(
    path: Path, tables: object, *, default_url: str | None
) -> dict[str, EngineConfig]:
    """Read the ``engines`` tables of spec file ``path``.

    Args:
        path: The spec file, for messages and relative TLS paths.
        tables: The value of its ``engines`` key.
        default_url: The default engine's address when its table names
            none (``DOCKER_HOST`` or the local socket).

    Raises:
        SpecFileError: A table breaks the schema; the message names the key.
    """
    if not isinstance(tables, dict):
        raise _bad(path, "engines", "a table of [engines.NAME] tables")

    return {
        name: _engine(path, name, table, default_url=default_url)
        for name, table in tables.items()
    }


def _engine(
    path: Path, name: str, table: object, *, default_url: str | None
) -> EngineConfig:
    where = f"engines.{name}"
    if not isinstance(table, dict):
        raise _bad(path, where, "a table")

    unknown = sorted(set(table) - ENGINE_KEYS)
    if unknown:
        known = ", ".join(sorted(ENGINE_KEYS))
        raise SpecFileError(
            f"{path}: unknown key {where}.{unknown[0]}: use one of {known}",
            path=path,
            key=f"{where}.{unknown[0]}",
        )

    url = table.get("url")
    if url is None and name == DEFAULT_ENGINE:
        url = default_url or "unix:///var/run/docker.sock"

    if not isinstance(url, str):
        raise _bad(path, f"{where}.url", "a string: unix:///path or tcp://host:port")

    peer = table.get("peer_address")
    if peer is not None and not isinstance(peer, str):
        raise _bad(path, f"{where}.peer_address", "an IP address string")

    try:
        return EngineConfig(
            name=name, url=url, tls=_tls(path, where, table), peer_address=peer
        )
    except ValueError as error:
        raise SpecFileError(f"{path}: {where}: {error}", path=path, key=where) from None


def _tls(path: Path, where: str, table: Mapping[str, Any]) -> TlsFiles | None:
    value = table.get("tls")
    if value is None:
        return None

    shape = "a table of ca, cert and key file paths"
    if not isinstance(value, dict) or set(value) != set(_TLS_KEYS):
        raise _bad(path, f"{where}.tls", shape)

    files = {}
    for key in _TLS_KEYS:
        file = value[key]
        if not isinstance(file, str):
            raise _bad(path, f"{where}.tls.{key}", "a file path string")

        files[key] = path.parent / file

    return TlsFiles(**files)


def _bad(path: Path, key: str, expected: str) -> SpecFileError:
    return SpecFileError(f"{path}: {key} must be {expected}", path=path, key=key)
