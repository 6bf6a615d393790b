"""The trace of a run, and its digest.

Theory of operation
-------------------
Every send, delivery, drop, timer, fault and client operation is recorded as a flat tuple
``(time, event, ...)`` of floats, ints, strings and None. The digest is a BLAKE2b over those
tuples serialised in order with ``marshal`` format version 2 (exact binary floats, no object
references, three times faster than ``repr``); that encoding does not depend on the process or
PYTHONHASHSEED, so the same seed gives the same digest anywhere (a test runs it in processes
with different hash seeds). Events are hashed in fixed chunks of 4096 (one ``marshal.dumps``
per chunk), which keeps recording to one list append on the hot path: ``record`` *is*
``list.append`` of the batch and takes one tuple. The batch is flushed by :meth:`maybe_flush`,
which the sim calls at points that come often enough (timers, client completions), and by
:meth:`digest`. With ``keep=True`` the events are also kept for inspection (notebooks,
debugging a failing seed).
"""

from __future__ import annotations

import hashlib
import marshal
from collections.abc import Iterator
from typing import Any

Event = tuple[Any, ...]

#: marshal format 2: exact binary floats and no reference flags (format 3 adds them, and they
#: depend on reference counts, which differ between runs)
MARSHAL_VERSION = 2
#: events per hashed chunk; chunks are always this size (the last, partial one is hashed into
#: a copy at digest time), so the digest does not depend on when anything was flushed
CHUNK = 4096


class Trace:
    __slots__ = ("_batch", "_hash", "count", "events", "keep", "record")

    def __init__(self, keep: bool = False) -> None:
        self.keep = keep
        self.events: list[Event] = []
        self.count = 0
        self._batch: list[Event] = []
        self._hash = hashlib.blake2b(digest_size=16)
        #: record(event_tuple): append one event
        self.record = self._batch.append

    def maybe_flush(self) -> None:
        """Hash every full chunk recorded so far (cheap to call often)."""
        batch = self._batch
        while len(batch) >= CHUNK:
            chunk = batch[:CHUNK]
            del batch[:CHUNK]  # in place: ``record`` stays bound to this list
            self._hash.update(marshal.dumps(chunk, MARSHAL_VERSION))
            self.count += CHUNK
            if self.keep:
                self.events.extend(chunk)

    def digest(self) -> str:
        """Hex digest of everything recorded so far (recording may continue afterwards)."""
        self.maybe_flush()
        h = self._hash.copy()
        if self._batch:
            h.update(marshal.dumps(self._batch, MARSHAL_VERSION))
        return h.hexdigest()

    def __len__(self) -> int:
        return self.count + len(self._batch)

    def __iter__(self) -> Iterator[Event]:
        if not self.keep:
            raise RuntimeError("this trace was built with keep=False; only its digest exists")
        self.maybe_flush()
        return iter([*self.events, *self._batch])
