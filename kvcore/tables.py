"""Configuration tables: a dataclass built from one TOML table, every problem a sentence.

Theory of operation
-------------------
A configuration file is a tree of tables (what ``tomllib`` returns: plain dicts); each table
that configures a layer maps onto one frozen dataclass (:class:`kvcore.config.NodeConfig` from
``[settings]``, :class:`kvcore.membership.SwimConfig` from ``[swim]``, ...). Every such table is
read the same way, so every operator sees the same kinds of sentences (etcd/raft's
``Config.validate`` style, all problems at once rather than the first one):

1. **Keys.** A key that names no field of the dataclass is refused, naming the key and the table
   and listing the keys that do exist (a typo is then one glance away). A key in the ``gone`` map
   (a setting that existed once) is refused with a sentence that says it no longer exists and what
   replaced it, instead of a bare "unknown".
2. **Types**, from the dataclass's annotations: ``bool`` takes only true/false (TOML's booleans
   are Python ints, and ``probe_interval = true`` is a mistake, not 1); ``int`` takes integers but
   not booleans; ``float`` takes any number (``forward_timeout = 2`` means 2.0 seconds) and
   widens it; ``str`` takes strings; ``X | None`` checks ``X``. Fields of any other type (ranges,
   lists, ``Any``) are passed through for the caller's own parsing.
3. **Values.** The dataclass is built (``build``, default the class itself; a preset constructor
   such as ``SwimConfig.lan`` fits) from the well-typed keys and its own ``validate()`` runs; its
   sentences are prefixed with the table's name. A key of the wrong type takes the field's
   default for this check, so one run still reports the type problem *and* every value problem.

``where`` is how sentences name the table: ``"[swim]"``, or a path into nested tables such as
``"[[cluster.nodes]] #2"``. ``noun`` is how they name one key (``"node setting"``, ``"SWIM
setting"``; default ``"key"``).

:func:`read_table` is steps 1 and 2 alone, for callers that merge the table with something else
(command-line flags) before building; :func:`from_table` is all three. kvcore owns this module so
that kvcore's own configs and the processes around it read tables identically; it imports only
the standard library.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Collection, Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration is invalid; ``problems`` holds one sentence per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(" ".join(problems))
        self.problems = problems


#: annotation -> (checked Python type, how a sentence names it)
_KINDS: dict[Any, tuple[type, str]] = {
    bool: (bool, "true or false"),
    int: (int, "an integer"),
    float: (float, "a number"),
    str: (str, "a string"),
}
_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    # Dataclasses declared under `from __future__ import annotations` hold their field types as
    # strings; get_type_hints resolves them once per class.
    hints = _HINTS.get(cls)
    if hints is None:
        hints = typing.get_type_hints(cls)
        _HINTS[cls] = hints
    return hints


def _kind(annotation: Any) -> tuple[type, str] | None:
    """The checked type of a field, or None when the caller parses it (module docstring)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _kind(args[0]) if len(args) == 1 else None
    return _KINDS.get(annotation)


def _fits(value: Any, want: type) -> bool:
    if want is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):  # True is an int to Python, not to an operator
        return False
    if want is float:
        return isinstance(value, (int, float))
    return isinstance(value, want)


def _cap(noun: str) -> str:
    return noun[:1].upper() + noun[1:]


def read_table(
    cls: type,
    table: Any,
    where: str,
    *,
    noun: str = "key",
    gone: Mapping[str, str] | None = None,
    handled: Collection[str] = (),
) -> tuple[dict[str, Any], list[str]]:
    """The well-typed keys of ``table`` as constructor arguments of ``cls``, and the problems.

    ``gone`` maps a key that no longer exists to a sentence (or clause) on what replaced it;
    ``handled`` names keys the caller reads itself (listed as known, left out of the result).
    """
    if not isinstance(table, Mapping):
        return {}, [f"{where} must be a table, not {table!r}."]
    hints = _hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    gone = gone or {}
    kwargs: dict[str, Any] = {}
    problems: list[str] = []
    for key, value in table.items():
        if key in handled:
            continue
        if key in gone and key not in fields:
            problems.append(f"{_cap(noun)} {key!r} in {where} no longer exists: {gone[key]}")
            continue
        if key not in fields:
            known = ", ".join(sorted(fields | set(handled)))
            problems.append(f"Unknown {noun} {key!r} in {where}; known: {known}.")
            continue
        kind = _kind(hints[key])
        if kind is not None:
            want, name = kind
            if not _fits(value, want):
                problems.append(f"{_cap(noun)} {key!r} in {where} must be {name}, not {value!r}.")
                continue
            if want is float:
                value = float(value)
        kwargs[key] = value
    return kwargs, problems


def from_table(
    cls: type[T],
    table: Any,
    where: str,
    *,
    noun: str = "key",
    gone: Mapping[str, str] | None = None,
    handled: Collection[str] = (),
    build: Callable[..., T] | None = None,
) -> T:
    """Build ``cls`` from a TOML table and validate it; raises ConfigError with every problem.

    ``build`` makes the instance from the keyword arguments (default: ``cls``); the instance's
    ``validate()``, if it has one, must raise :class:`ConfigError` (or a subclass of it).
    """
    kwargs, problems = read_table(cls, table, where, noun=noun, gone=gone, handled=handled)
    obj = (build or cls)(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        try:
            validate()
        except ConfigError as e:
            problems.extend(f"{where}: {p}" for p in e.problems)
    if problems:
        raise ConfigError(problems)
    return obj


__all__ = ["ConfigError", "from_table", "read_table"]
