"""The trace of a run, and its digest.

Theory of operation
-------------------
Every send, delivery, drop, timer, fault and client operation is recorded as a flat tuple
``(time, event, ...)`` of floats, ints and strings. The digest is a BLAKE2b over the ``repr`` of
those tuples in order; ``repr`` of these types does not depend on the process or PYTHONHASHSEED,
so the same seed gives the same digest anywhere. Events are hashed in batches (one ``repr`` of a
list per batch), which keeps recording to one list append on the hot path: ``record`` *is*
``list.append`` of the batch and takes one tuple. The batch is flushed by :meth:`maybe_flush`,
which the sim calls at points that come often enough (timers, client completions), and by
:meth:`digest`. With ``keep=True`` the events are also kept for inspection (notebooks,
debugging a failing seed).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

Event = tuple[Any, ...]


class Trace:
    __slots__ = ("_batch", "_batch_size", "_hash", "count", "events", "keep", "record")

    def __init__(self, keep: bool = False, batch_size: int = 4096) -> None:
        self.keep = keep
        self.events: list[Event] = []
        self.count = 0
        self._batch: list[Event] = []
        self._hash = hashlib.blake2b(digest_size=16)
        self._batch_size = batch_size
        #: record(event_tuple): append one event
        self.record = self._batch.append

    def maybe_flush(self) -> None:
        if len(self._batch) >= self._batch_size:
            self._flush()

    def _flush(self) -> None:
        batch = self._batch
        if batch:
            self.count += len(batch)
            # repr(list) is "[e1, e2]"; dropping the brackets and ending each batch with ", "
            # makes the digest independent of where the batches were cut
            self._hash.update(repr(batch)[1:-1].encode())
            self._hash.update(b", ")
            if self.keep:
                self.events.extend(batch)
            batch.clear()  # in place: ``record`` stays bound to this list

    def digest(self) -> str:
        """Hex digest of everything recorded so far (recording may continue afterwards)."""
        self._flush()
        return self._hash.hexdigest()

    def __len__(self) -> int:
        return self.count + len(self._batch)

    def __iter__(self) -> Iterator[Event]:
        if not self.keep:
            raise RuntimeError("this trace was built with keep=False; only its digest exists")
        self._flush()
        return iter(self.events)
