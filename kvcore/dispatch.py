"""Table dispatch: every component maps message classes to handlers in one table.

Theory of operation
-------------------
A component that takes peer messages (the node's routing and migration, SWIM membership, the
epidemics) declares a table ``{MessageClass: handler}``; what it handles is *derived* from that
table (never a second list kept in step by hand), and a message of a kind that no table names is
treated the same way everywhere: counted as malformed (``NodeStats.malformed``) and dropped,
because peer input is never trusted (a node never raises on what a peer sends).

A :class:`Dispatch` is built once per component instance (its handlers are bound methods), so
routing one message is one dict lookup on ``type(msg)``: exact classes, no isinstance walks, so a
subclass is not silently taken for its parent. :func:`merge` joins several components' tables
into one and refuses a kind claimed twice, so two components can never both think they own it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

#: a handler takes the sender's id and the message
Handler = Callable[[str, Any], None]


def merge(*tables: Mapping[type, Handler]) -> dict[type, Handler]:
    """One table from several; ``ValueError`` if two tables name the same message class."""
    out: dict[type, Handler] = {}
    for table in tables:
        for cls, fn in table.items():
            if cls in out:
                raise ValueError(f"message kind {cls.__name__} is handled twice")
            out[cls] = fn
    return out


class Dispatch:
    """Route a message to its table's handler; an unknown kind goes to ``on_unknown``."""

    __slots__ = ("handles", "on_unknown", "table")

    def __init__(self, table: Mapping[type, Handler], on_unknown: Callable[[str, Any], None]) -> None:
        self.table: dict[type, Handler] = dict(table)
        #: the message classes this table handles (derived from it)
        self.handles: frozenset[type] = frozenset(self.table)
        self.on_unknown = on_unknown

    def __call__(self, src: str, msg: Any) -> bool:
        """Handle ``msg`` from ``src``; False (and ``on_unknown`` called) if no handler takes it."""
        fn = self.table.get(type(msg))
        if fn is None:
            self.on_unknown(src, msg)
            return False
        fn(src, msg)
        return True


__all__ = ["Dispatch", "Handler", "merge"]
