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
"""

from __future__ import annotations

from kvcore import errors
from kvcore.raft.messages import NORMAL, Entry
from kvcore.raft.session import SessionExpired, SessionTable, StaleRequest
from kvcore.replica.command import (
    DELETE,
    PUT,
    REGISTER,
    decode_answer,
    decode_command,
    decode_image,
    encode_answer,
    encode_image,
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
        return encode_image(self.sessions.to_bytes(), self.store.items())

    def restore(self, data: bytes, index: int) -> None:
        """Replace everything by a snapshot's image taken at ``index``."""
        sessions, items = decode_image(data)
        self.store.clear()
        for k, v in items:
            self.store.set(k, v)
        self.sessions = SessionTable.from_bytes(sessions)
        self.applied = index
