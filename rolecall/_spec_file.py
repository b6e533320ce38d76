"""The runner's spec file: TOML that names the services to run.

Schema (``docs/control-api.md`` and ``examples/cache.toml`` show it whole)::

    [services.NAME]
    image = "rolecall/redis:0123abcd"  # an image on the engine, or:
    example = "redis"                  # an example recipe, built if missing
    topology = "standalone"            # or "redundant"
    replicas = 1                       # replicas of the redundant topology
    extras = { backup = 1 }            # members beside the topology, by role
    memory_limit = "256MiB"            # bytes, or a number with KiB/MiB/GiB
    secret = ["REDIS_PASSWORD"]        # env keys whose values are never logged
    config = { maxmemory = "64mb" }    # handed to every hook
    env = { REDIS_PASSWORD = "..." }   # handed to every hook
    labels = { "team" = "web" }        # on everything the service creates
    engine = "dc2"                     # an [engines.NAME] table; "default"

    [engines.NAME]                     # more engines: see ``_engines_file``

Loading is in two steps: `load_spec_file` reads and checks the file without
touching an engine; `resolve_specs` turns example names into image tags
(building what is missing). Messages name keys, never env values: those may
be secrets.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from attrs import evolve, field, frozen

from rolecall.actors import DEFAULT_ENGINE, EngineConfig
from rolecall.hooks_protocol import SpecError
from rolecall.supervisor import ServiceSpec, validate_spec

from ._engines_file import load_engines
from ._errors import SpecFileError
from ._images import ensure_image, known_images

__all__ = ["ServiceEntry", "SpecFile", "load_spec_file", "resolve_specs"]

_SERVICE_KEYS = frozenset(
    {
        "image",
        "example",
        "topology",
        "replicas",
        "extras",
        "memory_limit",
        "secret",
        "config",
        "env",
        "labels",
        "engine",
    }
)
_SIZE = re.compile(r"\s*(\d+)\s*(B|KiB|MiB|GiB)?\s*")
_UNITS = {None: 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}


@frozen
class ServiceEntry:
    """One ``[services.NAME]`` table, checked.

    Attributes:
        name: The service's name.
        image: The image reference, when the entry names one.
        example: The example recipe, when the entry names one instead.
        spec: The service spec; its image is a placeholder for examples
            until `resolve_specs` replaces it.
    """

    name: str
    image: str | None
    example: str | None
    spec: ServiceSpec


@frozen
class SpecFile:
    """A spec file as read.

    Attributes:
        path: Where it was read from.
        services: Its services, by name.
        engines: Its ``[engines.NAME]`` tables, by name; the default
            engine is among them only when the file has a table for it.
    """

    path: Path
    services: dict[str, ServiceEntry] = field(factory=dict)
    engines: dict[str, EngineConfig] = field(factory=dict)

    def secrets(self) -> set[str]:
        """Every value marked secret in the file, for log redaction."""
        return {
            entry.spec.env[key]
            for entry in self.services.values()
            for key in entry.spec.secret_keys
            if entry.spec.env.get(key)
        }


def load_spec_file(path: Path, *, docker_url: str | None = None) -> SpecFile:
    """Read and check a spec file; touch no engine.

    ``docker_url`` is the default engine's address, for an
    ``[engines.default]`` table that names no ``url``.

    Raises:
        SpecFileError: The file is missing, is not TOML, or breaks the
            schema; the message names the file and the key.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or type(error).__name__
        raise SpecFileError(
            f"cannot read spec file {str(path)!r}: {reason}", path=path
        ) from error

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise SpecFileError(
            f"spec file {str(path)!r} is not valid TOML: {error}", path=path
        ) from error

    unknown = sorted(set(data) - {"services", "engines"})
    if unknown:
        raise SpecFileError(
            f"{path}: unknown top-level key {unknown[0]!r}: the file holds"
            " [services.NAME] and [engines.NAME] tables only",
            path=path,
            key=unknown[0],
        )

    services = data.get("services", {})
    if not isinstance(services, dict):
        raise _schema(path, "services", "a table of [services.NAME] tables")

    if not services:
        raise SpecFileError(
            f"{path}: the file names no service: add a [services.NAME] table"
            " (examples/cache.toml shows one)",
            path=path,
            key="services",
        )

    try:
        entries = {name: _entry(path, name, table) for name, table in services.items()}
    except SpecFileError as error:
        # A value quoted back (a label, a size) may be a secret of another
        # key: mask every secret value the file holds, wherever it shows.
        masked = _masked(str(error), _raw_secrets(services))
        raise SpecFileError(
            masked, path=path, key=error.key, service=error.service
        ) from None

    engines = load_engines(path, data.get("engines", {}), default_url=docker_url)
    for entry in entries.values():
        engine = entry.spec.engine
        if engine != DEFAULT_ENGINE and engine not in engines:
            raise SpecFileError(
                f"{path}: services.{entry.name}.engine is {engine!r}, and the"
                f" file has no [engines.{engine}] table: add one (url, tls,"
                " peer_address) or name a known engine",
                path=path,
                key=f"services.{entry.name}.engine",
                service=entry.name,
            )

    return SpecFile(path=path, services=entries, engines=engines)


async def resolve_specs(
    spec_file: SpecFile,
    *,
    names: set[str] | None = None,
    docker_url: str | None = None,
) -> dict[str, ServiceSpec]:
    """The specs of the file's services, with example images built.

    Args:
        spec_file: A loaded spec file.
        names: Only these services; all when ``None``.
        docker_url: The engine to build example images on.

    Raises:
        ImageBuildError: An example image could not be built.
    """
    specs: dict[str, ServiceSpec] = {}
    for name, entry in spec_file.services.items():
        if names is not None and name not in names:
            continue

        if entry.example is None:
            specs[name] = entry.spec
            continue

        tag = await ensure_image(entry.example, docker_host=docker_url)
        specs[name] = validate_spec(evolve(entry.spec, image=tag))

    return specs


# -- secrets ------------------------------------------------------------------


def _raw_secrets(services: Mapping[str, Any]) -> set[str]:
    """The values of env keys marked secret, read from unchecked tables."""
    found: set[str] = set()
    for table in services.values():
        if not isinstance(table, dict):
            continue

        env, keys = table.get("env"), table.get("secret")
        if not isinstance(env, dict) or not isinstance(keys, list):
            continue

        found.update(
            value
            for key in keys
            if isinstance(key, str) and isinstance(value := env.get(key), str)
        )

    return {value for value in found if value}


def _masked(text: str, secrets: set[str]) -> str:
    # Longest first, so that a secret holding another is masked whole.
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")

    return text


# -- one service --------------------------------------------------------------


def _entry(path: Path, name: str, table: object) -> ServiceEntry:
    where = f"services.{name}"
    if not isinstance(table, dict):
        raise _schema(path, where, "a table", service=name)

    unknown = sorted(set(table) - _SERVICE_KEYS)
    if unknown:
        known = ", ".join(sorted(_SERVICE_KEYS))
        raise SpecFileError(
            f"{path}: unknown key {where}.{unknown[0]}: use one of {known}",
            path=path,
            key=f"{where}.{unknown[0]}",
            service=name,
        )

    image = _optional_str(path, table, where, "image")
    example = _optional_str(path, table, where, "example")
    if (image is None) == (example is None):
        raise SpecFileError(
            f"{path}: {where} needs exactly one of `image` (an image on the"
            " engine) or `example` (an example recipe, such as"
            f" {known_images()[0]!r})",
            path=path,
            key=where,
            service=name,
        )

    if example is not None and example not in known_images():
        raise SpecFileError(
            f"{path}: {where}.example is {example!r}: use one of"
            f" {', '.join(known_images())}",
            path=path,
            key=f"{where}.example",
            service=name,
        )

    secret = table.get("secret", [])
    if not isinstance(secret, list) or not all(isinstance(k, str) for k in secret):
        raise _schema(path, f"{where}.secret", "a list of env keys", service=name)

    try:
        spec = ServiceSpec(
            name=name,
            image=image or f"example:{example}",
            topology=_optional_str(path, table, where, "topology") or "standalone",
            replicas=_int(path, table, where, "replicas", default=1),
            extras=_table(path, table, where, "extras"),
            config=_table(path, table, where, "config"),
            env=_strings(path, table, where, "env", show_values=False),
            secret_keys=frozenset(secret),
            memory_limit=_size(path, table, where),
            labels=_strings(path, table, where, "labels", show_values=True),
            engine=_optional_str(path, table, where, "engine") or DEFAULT_ENGINE,
        )
        validate_spec(spec)
    except SpecFileError:
        raise
    except SpecError as error:
        raise SpecFileError(
            f"{path}: {where}: {error}", path=path, key=where, service=name
        ) from error

    return ServiceEntry(name=name, image=image, example=example, spec=spec)


def _optional_str(
    path: Path, table: Mapping[str, Any], where: str, key: str
) -> str | None:
    value = table.get(key)
    if value is None:
        return None

    if not isinstance(value, str):
        raise _schema(path, f"{where}.{key}", "a string", got=value)

    return value


def _int(
    path: Path, table: Mapping[str, Any], where: str, key: str, *, default: int
) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _schema(path, f"{where}.{key}", "a whole number", got=value)

    return value


def _table(
    path: Path, table: Mapping[str, Any], where: str, key: str
) -> dict[str, Any]:
    value = table.get(key, {})
    if not isinstance(value, dict):
        raise _schema(path, f"{where}.{key}", "a table")

    return value


def _strings(
    path: Path, table: Mapping[str, Any], where: str, key: str, *, show_values: bool
) -> dict[str, str]:
    value = _table(path, table, where, key)
    for name, item in value.items():
        if not isinstance(item, str):
            got = item if show_values else None
            raise _schema(path, f"{where}.{key}.{name}", "a string", got=got)

    return value


def _size(path: Path, table: Mapping[str, Any], where: str) -> int | None:
    value = table.get("memory_limit")
    if value is None:
        return None

    if isinstance(value, int) and not isinstance(value, bool):
        return value

    match = _SIZE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise _schema(
            path,
            f"{where}.memory_limit",
            'bytes, or a number with B, KiB, MiB or GiB ("256MiB")',
            got=value,
        )

    return int(match[1]) * _UNITS[match[2]]


def _schema(
    path: Path,
    key: str,
    expected: str,
    *,
    got: object = None,
    service: str | None = None,
) -> SpecFileError:
    shown = "" if got is None else f", got {got!r}"
    service = service or (key.split(".")[1] if key.count(".") >= 1 else None)

    return SpecFileError(
        f"{path}: {key} must be {expected}{shown}",
        path=path,
        key=key,
        service=service,
    )
