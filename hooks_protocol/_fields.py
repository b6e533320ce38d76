"""Reading one field of a decoded message, and the errors that name it.

The codec and the plan and status readers check every value they take from
a message here: each reader takes the value and where it sits
(``payload.members[2].epoch``), returns it in the record's type or raises
`MessageDecodeError` naming that place, what was expected and what came.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, TypeVar

from ._errors import MessageDecodeError
from ._vocabulary import HookName, Role, Topology

_HOOKS: Final = {hook.value: hook for hook in HookName}
_ROLES: Final = {role.value: role for role in Role}
_TOPOLOGIES: Final = {topology.value: topology for topology in Topology}

_MAX_INT: Final = (1 << 63) - 1
"""Largest counter (epoch, offset) accepted; it must fit a signed 64-bit int."""

_MAX_REPR: Final = 60
"""How much of a bad value an error message shows."""

_PLAIN_TYPES: Final = frozenset({str, int, float, bool, type(None)})

_E = TypeVar("_E")


# -- field readers ----------------------------------------------------------


def _map(value: object, where: str) -> dict[str, Any]:
    if value is None:
        return {}

    if type(value) is dict:
        return value

    if isinstance(value, Mapping):
        return dict(value)

    raise _bad(where, "a map", value)


def _counter(value: object, where: str) -> int:
    if value is None:
        return 0

    if type(value) is int and 0 <= value <= _MAX_INT:
        return value

    raise _bad(where, f"an integer from 0 to {_MAX_INT}", value)


def _enum(value: object, table: Mapping[Any, _E], where: str) -> _E:
    try:
        return table[value]
    except (KeyError, TypeError) as exc:
        raise _bad(where, "one of " + ", ".join(map(repr, table)), value) from exc


def _items(value: object, where: str) -> list[Any] | tuple[Any, ...]:
    if value is None:
        return []

    if isinstance(value, list | tuple):
        return value

    raise _bad(where, "a list", value)


def _enum_set(value: object, table: Mapping[Any, _E], where: str) -> frozenset[_E]:
    items = _items(value, where)
    if not items:
        raise _bad(where, "a list of at least one of " + ", ".join(table), value)

    return frozenset(
        _enum(item, table, f"{where}[{index}]") for index, item in enumerate(items)
    )


def _strings(value: object, where: str) -> list[str]:
    items = _items(value, where)
    for index, item in enumerate(items):
        if type(item) is not str or not item:
            raise _bad(f"{where}[{index}]", "a non-empty string", item)

    return list(items)


def _ports(value: object, where: str) -> tuple[int, ...]:
    items = _items(value, where)
    for index, item in enumerate(items):
        if type(item) is not int or not 0 < item < 1 << 16:
            raise _bad(f"{where}[{index}]", "a port number from 1 to 65535", item)

    return tuple(items)


def _paths(value: object, where: str) -> tuple[str, ...]:
    paths = _strings(value, where)
    for index, path in enumerate(paths):
        if not path.startswith("/"):
            raise _bad(f"{where}[{index}]", "an absolute path", path)

    return tuple(paths)


def _timeouts(value: object, where: str) -> dict[HookName, float]:
    timeouts: dict[HookName, float] = {}
    for name, seconds in _map(value, where).items():
        hook = _enum(name, _HOOKS, f"{where} key")
        if type(seconds) not in (int, float) or not 0 < seconds < float("inf"):
            raise _bad(f"{where}.{name}", "a positive number of seconds", seconds)

        timeouts[hook] = float(seconds)

    return timeouts


def _check_plain(value: object, where: str) -> None:
    # Iterative, because a message may nest as deep as the decoder allows.
    pending = [value]
    while pending:
        item = pending.pop()
        if type(item) is dict:
            for key in item:
                if type(key) is not str:
                    raise _bad(f"{where} key", "a string", key)

            pending.extend(item.values())
            continue

        if type(item) is list:
            pending.extend(item)
            continue

        if type(item) not in _PLAIN_TYPES:
            raise _bad(
                f"{where} value", "null, a boolean, number, string, list or map", item
            )


# -- errors -----------------------------------------------------------------


def _show(value: object) -> str:
    text = repr(value)
    if len(text) > _MAX_REPR:
        text = text[:_MAX_REPR] + "..."

    return f"{text} ({type(value).__name__})"


def _bad(where: str, expected: str, value: object) -> MessageDecodeError:
    return MessageDecodeError(
        f"{where} must be {expected}, got {_show(value)}; "
        "see docs/hooks-protocol.md for the shape"
    )


def _missing(where: str, exc: KeyError) -> MessageDecodeError:
    return MessageDecodeError(
        f"{where} lacks the {exc.args[0]!r} key; "
        "see docs/hooks-protocol.md for the shape"
    )
