"""Client sessions (thesis §6.3): a retried write is applied once, and its retry gets the stored
answer.

Theory of operation
-------------------
A client that times out cannot tell whether its write was applied, so it retries; without
sessions the retry would apply twice. The thesis's fix lives in the replicated state machine,
so every replica decides the same way, and this module is that helper:

* A client first **registers** (a command through the log); its session is keyed by the client
  id (the thesis uses the index of the register entry, which is unique).
* Every write carries ``(client_id, seq)`` with ``seq`` increasing per client, and ``acked``: the
  lowest seq whose answer the client has not received yet. :meth:`SessionTable.apply` runs the
  command only for a new ``seq``; a ``seq`` seen before returns the stored answer; answers below
  ``acked`` are discarded (the client promised not to ask again), and asking for one is refused
  with :class:`StaleRequest` rather than re-applied.
* **Expiry is deterministic**: time is the leader's timestamp carried in each log entry (the
  thesis: "the leader augments each command ... with its current time"), never a replica's own
  clock. A session not used for ``timeout`` (in those timestamp units) expires when any entry
  with a later timestamp is applied, and the table holds at most ``max_sessions`` sessions,
  evicting the least recently used (ties broken by client id) on registration. A command for an
  expired or unknown session is refused with :class:`SessionExpired` — never applied — so the
  client learns that it must register again and that its earlier write's outcome is unknown.

The table is part of the state machine's snapshot: :meth:`to_bytes` / :meth:`from_bytes`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field


class SessionExpired(Exception):
    """The client's session is unknown or expired: the command was not applied."""


class StaleRequest(Exception):
    """The client asked again for an answer it had acknowledged: it was discarded."""


@dataclass
class Session:
    last_active: float
    acked: int = 0
    answers: dict[int, bytes] = field(default_factory=dict)


class SessionTable:
    def __init__(self, timeout: float, max_sessions: int = 10_000) -> None:
        if timeout <= 0 or max_sessions < 1:
            raise ValueError("timeout must be positive and max_sessions at least 1")
        self.timeout = timeout
        self.max_sessions = max_sessions
        self.sessions: dict[str, Session] = {}

    def register(self, client_id: str, now: float) -> None:
        """Apply a RegisterClient entry stamped ``now``."""
        self.expire(now)
        if client_id not in self.sessions and len(self.sessions) >= self.max_sessions:
            victim = min(self.sessions, key=lambda c: (self.sessions[c].last_active, c))
            del self.sessions[victim]
        self.sessions.setdefault(client_id, Session(last_active=now))

    def apply(self, client_id: str, seq: int, acked: int, now: float,
              command: Callable[[], bytes]) -> bytes:
        """Apply a write entry stamped ``now``: run ``command`` at most once per (client, seq)."""
        self.expire(now)
        s = self.sessions.get(client_id)
        if s is None:
            raise SessionExpired(f"client {client_id!r} has no session (expired or never registered); "
                                 "register again: the command was not applied")
        s.last_active = now
        if acked > s.acked:  # the client has the answers below acked: forget them
            s.answers = {q: a for q, a in s.answers.items() if q >= acked}
            s.acked = acked
        if seq in s.answers:
            return s.answers[seq]
        if seq < s.acked:
            raise StaleRequest(f"client {client_id!r} already acknowledged seq {seq}; its answer is gone")
        answer = command()
        s.answers[seq] = answer
        return answer

    def expire(self, now: float) -> None:
        for c in [c for c, s in self.sessions.items() if now - s.last_active > self.timeout]:
            del self.sessions[c]

    def to_bytes(self) -> bytes:
        doc = {c: [s.last_active, s.acked, {str(q): a.decode("latin-1") for q, a in sorted(s.answers.items())}]
               for c, s in sorted(self.sessions.items())}
        return json.dumps({"timeout": self.timeout, "max": self.max_sessions, "sessions": doc},
                          sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> SessionTable:
        doc = json.loads(data)
        t = cls(doc["timeout"], doc["max"])
        for c, (last, acked, answers) in doc["sessions"].items():
            t.sessions[c] = Session(last, acked, {int(q): a.encode("latin-1") for q, a in answers.items()})
        return t
