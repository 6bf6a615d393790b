"""Feed :class:`checker.raftprops.RaftProperties` from a :class:`kvcore.raft.Raft` core's Ready.

Theory of operation
-------------------
``checker`` knows no world and imports nothing outside the standard library
(tests/test_layout.py), so the glue that reads kvcore's types lives here, in the sim package,
as pure functions (no SimPy, no I/O): a node driver calls

- :func:`feed_from_ready` once per Ready it handles, once its writes are durable and before
  ``advance()`` (nothing may be stepped in between, so ``raft.role`` and ``raft.term`` are the
  state the Ready reports); a Ready lost to a crash before its sync is not fed. Its signature
  after the checker, ``(node_id, raft, ready, at)``, is a driver's observer hook:
  ``functools.partial(feed_from_ready, checker)``;
- :func:`feed_restart` with the :class:`kvcore.raft.StoredState` each incarnation loads (a
  node's first start included, when its storage is not empty); it alone resets the checker's
  view of the node, so reporting the crash itself (``checker.crashed(node_id, at)``) is optional:
  it only makes the checker ignore, with a note, events that come before the restart;
- :class:`Figure3Feed` is both as a node's ``raft_observer`` (:class:`kvcore.replica.group.Observer`):
  what ``SimCluster(..., replicas=R)`` gives every node;
- ``checker.removed(node_id, at)`` when a node leaves the group for good (its process gone), so
  that its old log no longer holds the checker's pruning back.

Order within one Ready: a node that no longer leads the term the checker knows is stepped down
first (so a truncation it made as a follower is not blamed on its leadership), then the
snapshot (installed or compacted), the entries, the commit index, the applied entries, and last
the leadership (so the new leader's log, no-op included, is the one checked for Leader
Completeness). An entry is named by :func:`entry_digest`, a 16-byte BLAKE2b of its kind and
data (the no-ops of different terms share a digest; index and term tell them apart).
"""

from __future__ import annotations

import hashlib

from checker.raftprops import RaftProperties
from kvcore.raft import LEADER, Entry, Raft, Ready, StoredState


def entry_digest(e: Entry) -> bytes:
    """What tells two entries at one (index, term) apart: a digest of the kind and the data."""
    return hashlib.blake2b(e.kind.encode() + b"\0" + e.data, digest_size=16).digest()


def entry_refs(entries: tuple[Entry, ...] | list[Entry]) -> list[tuple[int, int, bytes]]:
    return [(e.index, e.term, entry_digest(e)) for e in entries]


def feed_from_ready(checker: RaftProperties, node_id: str, raft: Raft, ready: Ready, at: float) -> None:
    """Report one Ready of ``node_id`` to ``checker`` (see the module docstring for the order)."""
    lead_term = raft.term if raft.role == LEADER else None
    known = checker.leading(node_id)
    if known is not None and known != lead_term:
        checker.stepped_down(node_id, at)
    for snap in (ready.snapshot, ready.compacted):
        if snap is not None:
            checker.snapshot(node_id, snap.meta.index, snap.meta.term, at)
    if ready.entries:
        checker.appended(node_id, entry_refs(ready.entries), at)
    if ready.hard_state is not None:
        checker.committed(node_id, ready.hard_state.commit, at, raft.term)
    for e in ready.committed_entries:
        checker.applied(node_id, e.index, e.term, entry_digest(e), at, raft.term)
    if lead_term is not None and known != lead_term:
        checker.leader(node_id, lead_term, at)


def feed_restart(checker: RaftProperties, node_id: str, stored: StoredState, at: float) -> None:
    """Report that ``node_id`` (re)starts from ``stored`` (what its storage's ``load()`` gave)."""
    meta = stored.snapshot.meta
    checker.restarted(node_id, at, entry_refs(stored.entries), (meta.index, meta.term),
                      min(stored.hard_state.commit, meta.index + len(stored.entries)), stored.hard_state.term)


class Figure3Feed:
    """A replicated node's ``raft_observer`` that feeds ``checker``: each incarnation's start
    (:func:`feed_restart`) and each Ready (:func:`feed_from_ready`)."""

    def __init__(self, checker: RaftProperties) -> None:
        self.checker = checker

    def started(self, node_id: str, stored: StoredState, at: float) -> None:
        feed_restart(self.checker, node_id, stored, at)

    def ready(self, node_id: str, raft: Raft, rd: Ready, at: float) -> None:
        feed_from_ready(self.checker, node_id, raft, rd, at)
