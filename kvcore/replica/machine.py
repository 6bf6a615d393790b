"""The replicated state machine: the key/value store plus the client sessions.

Theory of operation
-------------------
Every replica applies the same committed entries in the same order (Raft's State Machine
Safety), so every replica's :class:`StateMachine` holds the same keys and the same sessions.
:meth:`StateMachine.apply` takes one committed entry and returns the outcome for the client that
proposed it, ``(client, seq, code, message)``, or ``None`` for an entry that answers nobody (the
leader's no-op, a configuration change).

Writes go through :class:`kvcore.raft.session.SessionTable` (thesis §6.3): a retried
``(client, seq)`` gets the stored answer and is not applied twice. A command for an unknown or
expired session is refused with ``session_expired`` and not applied; the node that sent it
registers again and retries with a new sequence number (:mod:`kvcore.replica.group`). Reads do
not go through the log (they use ReadIndex) and read :attr:`StateMachine.store` directly.

The image (:meth:`image` / :meth:`restore`) is a snapshot's data: the session table and every
pair, so a replica that installs a snapshot answers retries exactly as the others would.

**An image is built in steps** (:meth:`begin_image`, :class:`ImageBuilder`), so that a large
store's snapshot does not stall the node: the thesis (§5.2, "snapshotting memory-based state
machines") asks that a server go on serving while a snapshot is written, by copy on write. At
the start the builder freezes the applied index, the session table and the list of keys (one
C-level copy of the key references); from then on every write the machine applies first tells
the builder the key's value before it (:meth:`ImageBuilder.note`), so each frozen key is encoded
with its value at the freeze however the store changes meanwhile. The pairs stay in key order,
so every replica's image at one index is the same bytes: each step sorts one run of keys, and
later steps merge the runs (``heapq.merge``) a chunk at a time. Installing a snapshot
(:meth:`restore`) cancels a build.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from itertools import islice

from kvcore import errors
from kvcore.raft.messages import NORMAL, Entry
from kvcore.raft.session import SessionExpired, SessionTable, StaleRequest
from kvcore.replica.command import (
    DELETE,
    PUT,
    REGISTER,
    add_pair,
    decode_answer,
    decode_command,
    decode_image,
    encode_answer,
    encode_image,
    image_head,
)
from kvcore.store import LocalStore

#: how long a client session lives without use, in the leader's seconds (thesis §6.3)
SESSION_TIMEOUT = 3600.0
#: at most this many sessions (one per node incarnation that wrote through this group)
MAX_SESSIONS = 10_000

Outcome = tuple[str, int, str, str]  # client, seq, error code ("" for success), sentence


class StateMachine:
    def __init__(self, store: LocalStore | None = None) -> None:
        self.store = store if store is not None else LocalStore()
        self.sessions = SessionTable(SESSION_TIMEOUT, MAX_SESSIONS)
        #: the index of the last entry applied (or installed from a snapshot)
        self.applied = 0
        #: entries whose data could not be decoded (a bug: counted, never half-applied)
        self.bad_entries = 0
        #: the image being built, if any (told of every write until it is done)
        self._builder: ImageBuilder | None = None

    def apply(self, e: Entry) -> Outcome | None:
        """Apply one committed entry; the outcome for its client, if it has one."""
        self.applied = e.index
        if e.kind != NORMAL or not e.data:
            return None
        try:
            c = decode_command(e.data)
        except (ValueError, UnicodeDecodeError):
            self.bad_entries += 1
            return None
        if c.kind == REGISTER:
            self.sessions.register(c.client, c.ts)
            return c.client, c.seq, "", ""

        def run() -> bytes:
            if self._builder is not None:
                self._builder.note(c.key, self.store.get(c.key))
            if c.kind == PUT:
                self.store.set(c.key, c.value)
                return encode_answer("", "")
            assert c.kind == DELETE
            if self.store.delete(c.key):
                return encode_answer("", "")
            e = errors.NotFound.of(c.key)
            return encode_answer(e.code, e.message)

        try:
            code, message = decode_answer(self.sessions.apply(c.client, c.seq, c.acked, c.ts, run))
        except SessionExpired as err:
            code, message = "session_expired", str(err)
        except StaleRequest as err:
            code, message = "stale_request", str(err)
        return c.client, c.seq, code, message

    def image(self) -> bytes:
        """The whole image now, in one call (a small store's; :meth:`begin_image` builds the
        same bytes in steps, and an image under way is left alone)."""
        return encode_image(self.sessions.to_bytes(), self.store.items())

    def begin_image(self) -> ImageBuilder:
        """Freeze the image at the applied index; build it with :meth:`ImageBuilder.step`."""
        self.cancel_image()
        self._builder = ImageBuilder(self)
        return self._builder

    def cancel_image(self) -> None:
        """Drop the image being built, if any (later writes no longer tell it anything)."""
        if self._builder is not None:
            self._builder.cancelled = True
            self._builder = None

    def restore(self, data: bytes, index: int) -> None:
        """Replace everything by a snapshot's image taken at ``index`` (an image being built is
        cancelled: its keys are gone)."""
        self.cancel_image()
        sessions, items = decode_image(data)
        self.store.clear()
        for k, v in items:
            self.store.set(k, v)
        self.sessions = SessionTable.from_bytes(sessions)
        self.applied = index


class ImageBuilder:
    """One image of a :class:`StateMachine` frozen at :attr:`index`, built a chunk at a time
    (module docstring). :meth:`step` until it returns True, then :meth:`data`."""

    def __init__(self, machine: StateMachine) -> None:
        self.machine = machine
        #: the applied index the image is taken at
        self.index = machine.applied
        self.cancelled = False
        self._keys = machine.store.keys()
        #: the value at the freeze of every frozen key written since (None: it was absent)
        self._before: dict[bytes, bytes | None] = {}
        self._parts = image_head(machine.sessions.to_bytes(), len(self._keys))
        self._runs: list[list[bytes]] = []
        self._sorted = 0  # keys sorted into runs so far
        self._merged: Iterator[bytes] | None = None
        self._left = len(self._keys)  # pairs still to encode
        #: steps taken (a large store's image takes many, each short)
        self.steps = 0

    def note(self, key: bytes, old: bytes | None) -> None:
        """``key`` is about to change; ``old`` is its value now."""
        if key not in self._before:
            self._before[key] = old

    def step(self, chunk: int) -> bool:
        """Sort one run of ``chunk`` keys, or encode the next ``chunk`` pairs. True when the
        image is complete (or the build was cancelled)."""
        if self.cancelled:
            return True
        self.steps += 1
        keys = self._keys
        if self._sorted < len(keys):
            run = keys[self._sorted:self._sorted + chunk]
            run.sort()
            self._runs.append(run)
            self._sorted += len(run)
            return False
        if self._merged is None:
            self._merged = iter(self._runs[0]) if len(self._runs) == 1 else heapq.merge(*self._runs)
            self._keys = []  # the runs hold them now
        n = min(chunk, self._left)
        before, get, parts = self._before, self.machine.store.get, self._parts
        for k in islice(self._merged, n):
            v = before[k] if k in before else get(k)
            if v is None:
                raise RuntimeError(f"bug: frozen key {k!r} has no value (the store changed unseen)")
            add_pair(parts, k, v)
        self._left -= n
        if self._left:
            return False
        if self.machine._builder is self:
            self.machine._builder = None
        self._runs = []
        return True

    def data(self) -> bytes:
        """The image (once :meth:`step` returned True)."""
        if self.cancelled or self._left:
            raise ValueError("the image is not complete")
        return b"".join(self._parts)
