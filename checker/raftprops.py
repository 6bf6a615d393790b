"""Figure 3 of the Raft paper, checked as a run goes, from plain data: :class:`RaftProperties`.

Theory of operation
-------------------
A run feeds one :class:`RaftProperties` with what each node does, as plain data (``str`` node
ids, ``int`` terms and indexes, ``bytes`` digests, a ``float`` time ``at`` used only in the
sentences), in the order it happens; the checker knows no world and no Raft implementation
(``sim/raftcheck.py`` turns a :class:`kvcore.raft.Ready` into these calls). It mirrors each
node's log (the terms and digests after the node's snapshot) and checks the five properties of
Figure 3 (Ongaro & Ousterhout, "In Search of an Understandable Consensus Algorithm", extended
version, §5.2–5.4) on every event, never after the fact:

1. **Election Safety** (§5.2): at most one leader per term -- ``leader()`` keeps term -> leader.
2. **Leader Append-Only** (§5.3): a leader never overwrites or deletes entries of its log
   during its term -- an ``appended()`` that replaces or drops a leading node's entries, or a
   ``snapshot()`` that discards its log, is a violation. The feed reports a node's steps in
   batches (one Ready), so a truncation made before the node became leader in the same batch
   is not blamed on it, and one it made as leader in the batch it won in is not seen.
3. **Log Matching** (§5.3): a global record ``(index, term) -> (digest, prev term)`` made from
   every appended entry. A second node appending the same index and term must bring the same
   digest and the same term at ``index - 1``; by induction on the index, that is "identical in
   all entries up through the given index". The previous term of the first entry after a
   snapshot is the snapshot's term, so it is always known.
4. **Leader Completeness** (§5.4): an entry committed in term ``t`` is in the log of every
   leader of every term ``> t``. The term an entry was committed in is not observable, so the
   checker bounds it from above by the highest leader term it had heard of when it first learnt
   the entry was committed (a commit is made by a leader already elected, and a node learns a
   commit after its leader made it), or by the reporting node's own term when given
   (``node_term``: a node learns a commit in its current term or earlier): no correct run is flagged, and Figure 8's loss (an entry
   committed by counting in term 4, then overwritten by the leader of term 5) is. Checked when a
   node becomes leader (it must hold the highest such entry; Log Matching covers the ones
   below) and, for the current leaders, whenever a new entry becomes known committed.
5. **State Machine Safety** (§5.4.3): no two nodes apply (``applied()``) or commit
   (``committed()``, which marks the node's own entries up to its commit index) different
   entries at one index; a snapshot's (index, term) must agree with the entry committed there.

What it cannot see: entries inside a snapshot (their digests; a snapshot is committed state, so
only its last index and term are checked), and, after pruning, entries below every known node's
snapshot index -- the records of those indexes are dropped (that is the pruning, so memory stays
O(entries not yet compacted everywhere)), and an append there later is not checked. It does not
check what Figure 3 does not state (terms non-decreasing in a log, a follower truncating a
committed entry: the latter shows up as a State Machine Safety or Leader Completeness violation
when it matters).

Cost: O(1) amortised per entry and per node (each node's commit index and log only move
forward over entries fed once; a conflicting append costs the entries it replaces), O(leaders)
per newly committed index, O(nodes) per snapshot (the pruning point). Memory: about 450 bytes
per index held for three nodes (one record tuple per index until a second term shows up there,
one digest object shared by every mirror that holds the entry). Deterministic: output
depends only on the order of the calls. It never raises on odd input: a call that makes no sense
(a negative index, a gap in a log, an event for a crashed node) is ignored and the reason kept
in :meth:`RaftProperties.notes`; violations are deduplicated per property and place and capped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

ELECTION_SAFETY = "Election Safety"
LEADER_APPEND_ONLY = "Leader Append-Only"
LOG_MATCHING = "Log Matching"
LEADER_COMPLETENESS = "Leader Completeness"
STATE_MACHINE_SAFETY = "State Machine Safety"
PROPERTIES = (ELECTION_SAFETY, LEADER_APPEND_ONLY, LOG_MATCHING, LEADER_COMPLETENESS, STATE_MACHINE_SAFETY)

#: how far below the highest committed index a new leader's check looks for a recorded entry
_LOOKBACK = 64


@dataclass(frozen=True)
class RaftViolation:
    """One violation: the property, the nodes involved, the term and index (None when the
    property has none), the time of the event that showed it, and the sentence."""

    prop: str
    nodes: tuple[str, ...]
    term: int | None
    index: int | None
    at: float
    text: str

    def __str__(self) -> str:
        return self.text


_Rec = tuple[int, bytes, int, str]
_Committed = tuple[int, bytes | None, int, str, float, str]


class _Node:
    """The checker's mirror of one node: its log after its snapshot, and where it stands."""

    __slots__ = ("applied", "base", "base_term", "commit", "digests", "lead_term", "terms", "up")

    def __init__(self, base: int = 0, base_term: int = 0) -> None:
        self.base = base  # the snapshot's last index (0: none)
        self.base_term = base_term
        self.terms: list[int] = []  # terms of indexes base+1 ..
        self.digests: list[bytes] = []
        self.lead_term: int | None = None  # the term it leads, while it does
        self.commit = base
        self.applied = base
        self.up = True

    def last(self) -> int:
        return self.base + len(self.terms)

    def term_at(self, index: int) -> int | None:
        if index == self.base:
            return self.base_term
        if index < self.base or index > self.last():
            return None
        return self.terms[index - self.base - 1]

    def digest_at(self, index: int) -> bytes | None:
        if index <= self.base or index > self.last():
            return None
        return self.digests[index - self.base - 1]


def _at(x: Any) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _is_index(x: Any) -> bool:
    return type(x) is int and x >= 0  # exactly int: not a bool, not a float


class RaftProperties:
    """Figure 3's five properties over a stream of node events (see the module docstring).

    Feed it, for every node, in the order things happen (``at`` is any number, for sentences;
    every leadership must be fed, since Leader Completeness bounds commit terms by them):

    - ``leader(node, term, at)``: the node became leader of ``term``;
    - ``stepped_down(node, at)``: it stopped leading (a crash does it too);
    - ``appended(node, entries, at)``: it persisted ``entries``, contiguous ``(index, term,
      digest)`` tuples; the first one's index ``i`` replaces ``i`` and all after it (etcd's
      Append); entries its snapshot covers are skipped;
    - ``snapshot(node, index, term, at)``: a snapshot replaced its log up to ``index`` (entries
      after it are kept when the log holds ``term`` at ``index``, else all are dropped);
    - ``committed(node, index, at, node_term=None)``: its commit index reached ``index``;
    - ``applied(node, index, term, digest, at, node_term=None)``: it applied that entry (in
      index order); ``node_term``, the node's current term, tightens Leader Completeness;
    - ``removed(node, at)``: it left the group for good (a membership change);
    - ``crashed(node, at)`` then ``restarted(node, at, entries, snapshot, commit, node_term)``:
      the node comes back with the synced log it loads (unsynced entries lost); ``restarted``
      alone is enough (it resets the node), and it also declares a node's starting state when
      it does not start empty.

    ``violations()`` gives the sentences, ``records()`` the :class:`RaftViolation` objects,
    ``notes()`` the events ignored and why, ``summary()`` counts that show a run was not vacuous.
    """

    def __init__(self, max_violations: int = 1000, max_notes: int = 200) -> None:
        self.max_violations = max_violations
        self.max_notes = max_notes
        self._nodes: dict[str, _Node] = {}
        self._leaders: dict[int, tuple[str, float]] = {}  # term -> (first leader, when)
        self._leading: dict[str, int] = {}  # node -> term, for the current leaders
        self._max_leader_term = 0
        # index -> the record of its entry, (term, digest, prev term, first node), or, once
        # another term was seen there, term -> record (one tuple in the common case: memory)
        self._records: dict[int, _Rec | dict[int, _Rec]] = {}
        # index -> (term, digest or None, bound on the commit term, node, at, "applied"/"committed")
        self._committed: dict[int, _Committed] = {}
        self._commit_known = 0
        self._bounds: list[tuple[int, int]] = []  # (bound, highest index committed under it)
        self._applied_events = 0
        self._pruned = 0  # indexes <= this were dropped from the records
        self._violations: list[RaftViolation] = []
        self._seen: set[tuple[Any, ...]] = set()
        self._suppressed = 0
        self._notes: list[str] = []
        self._notes_dropped = 0
        self.events = 0

    # --- results ---------------------------------------------------------------------------

    def violations(self) -> list[str]:
        """One sentence per violation (property, nodes, term, index, time), in the order found."""
        out = [v.text for v in self._violations]
        if self._suppressed:
            out.append(f"... and {self._suppressed} more violation(s) not listed (cap {self.max_violations}).")
        return out

    def records(self) -> list[RaftViolation]:
        return list(self._violations)

    @property
    def ok(self) -> bool:
        return not self._violations

    def notes(self) -> list[str]:
        """Events that were ignored, each with the reason (at most ``max_notes``)."""
        out = list(self._notes)
        if self._notes_dropped:
            out.append(f"... and {self._notes_dropped} more ignored event(s).")
        return out

    def leading(self, node: str) -> int | None:
        """The term ``node`` leads now as far as the checker knows (None: it does not lead)."""
        return self._leading.get(node)

    def summary(self) -> dict[str, int]:
        """How much the run exercised: events, terms with a leader, highest known committed
        index, entries applied (by all nodes), indexes whose records are held (not pruned),
        violations, ignored events."""
        return {"events": self.events, "leader_terms": len(self._leaders), "committed": self._commit_known,
                "applied": self._applied_events, "held": len(self._records),
                "violations": len(self._violations) + self._suppressed, "notes": len(self._notes) + self._notes_dropped}

    # --- bookkeeping -------------------------------------------------------------------------

    def _violate(self, key: tuple[Any, ...], prop: str, nodes: Sequence[str], term: int | None,
                 index: int | None, at: float, text: str) -> None:
        if key in self._seen:
            return
        self._seen.add(key)
        if len(self._violations) >= self.max_violations:
            self._suppressed += 1
            return
        self._violations.append(RaftViolation(prop, tuple(nodes), term, index, at, f"{prop}: {text}"))

    def _note(self, text: str) -> None:
        if len(self._notes) < self.max_notes:
            self._notes.append(text)
        else:
            self._notes_dropped += 1

    def _node(self, node: Any, what: str, at: Any) -> _Node | None:
        """The node's mirror for an event, or None (noted) when the event must be ignored."""
        self.events += 1
        if type(node) is str and (type(at) is float or type(at) is int):  # the common case, fast
            n = self._nodes.get(node)
            if n is not None and n.up:
                return n
        if not isinstance(node, str) or not node:
            self._note(f"ignored {what} at {_at(at)}: node id {node!r} is not a non-empty string")
            return None
        if isinstance(at, bool) or not isinstance(at, int | float):
            self._note(f"ignored {what} of node {node}: time {at!r} is not a number")
            return None
        n = self._nodes.get(node)
        if n is None:
            n = self._nodes[node] = _Node()
        elif not n.up and what not in ("restarted", "removed"):
            self._note(f"ignored {what} of node {node} at {_at(at)}: the node crashed and has not restarted")
            return None
        return n

    # --- events: roles ---------------------------------------------------------------------

    def leader(self, node: str, term: int, at: float) -> None:
        """``node`` became leader of ``term`` (report it after the entries of the same step)."""
        n = self._node(node, "leader", at)
        if n is None:
            return
        if not _is_index(term) or term == 0:
            self._note(f"ignored leader of node {node} at {_at(at)}: term {term!r} is not a positive int")
            return
        if n.lead_term == term:
            return
        self._end_lead(node)
        first = self._leaders.setdefault(term, (node, at))
        if first[0] != node:
            # Figure 3, Election Safety: "at most one leader can be elected in a given term" (§5.2)
            self._violate((ELECTION_SAFETY, term), ELECTION_SAFETY, (first[0], node), term, None, at,
                          f"nodes {first[0]} and {node} were both leader of term {term} "
                          f"(from {_at(first[1])} and {_at(at)}).")
        self._max_leader_term = max(self._max_leader_term, term)
        n.lead_term = term
        self._leading[node] = term
        self._check_new_leader(node, n, term, at)

    def stepped_down(self, node: str, at: float) -> None:
        """``node`` no longer leads (it became a follower or candidate)."""
        self.events += 1
        self._end_lead(node)

    def _end_lead(self, node: Any) -> None:
        if not isinstance(node, str):
            return  # never a key here
        n = self._nodes.get(node)
        if n is not None:
            n.lead_term = None
        self._leading.pop(node, None)

    def _check_new_leader(self, node: str, n: _Node, term: int, at: float) -> None:
        """Leader Completeness when ``node`` becomes leader of ``term``: it holds the highest
        entry known committed in an earlier term (Log Matching vouches for the ones below)."""
        top = next((i for bound, i in reversed(self._bounds) if bound < term), 0)
        for index in range(top, max(top - _LOOKBACK, self._pruned, n.base - 1), -1):
            rec = self._committed.get(index)
            if rec is not None:
                self._check_leader_holds(node, n, term, index, rec, at, "became leader")
                return

    def _check_leader_holds(self, node: str, n: _Node, term: int, index: int,
                            rec: _Committed, at: float, when: str) -> None:
        cterm, digest, _bound, who, since, _how = rec
        if index < n.base:
            return  # inside its snapshot: committed state, not visible here
        has = n.term_at(index)
        if has == cterm and (digest is None or index == n.base or n.digest_at(index) == digest):
            return
        held = "no entry" if has is None else f"term {has}" + ("" if has != cterm else " with another digest")
        # Figure 3, Leader Completeness: "if a log entry is committed in a given term, then that
        # entry will be present in the logs of the leaders for all higher-numbered terms" (§5.4)
        self._violate((LEADER_COMPLETENESS, node, term, index), LEADER_COMPLETENESS, (node, who), term, index, at,
                      f"node {node} {when} of term {term} at {_at(at)} without the entry committed at index "
                      f"{index} (term {cterm}, known committed from node {who} at {_at(since)}); it holds {held} there.")

    # --- events: the log -------------------------------------------------------------------

    def appended(self, node: str, entries: Sequence[tuple[int, int, bytes]], at: float) -> None:
        """``node`` persisted ``entries`` (contiguous ``(index, term, digest)``), replacing its
        log from the first one's index on."""
        n = self._node(node, "appended", at)
        if n is None:
            return
        problem = _bad_entries(entries)
        if problem:
            self._note(f"ignored appended of node {node} at {_at(at)}: {problem}")
            return
        ents = [e for e in entries if e[0] > n.base]
        if not ents:
            return
        lo = ents[0][0]
        if lo > n.last() + 1:
            self._note(f"ignored appended of node {node} at {_at(at)}: entries start at index {lo} "
                       f"but its log ends at {n.last()} (a gap)")
            return
        if n.lead_term is not None:
            self._check_append_only(node, n, ents, at)
        del n.terms[lo - n.base - 1:]
        del n.digests[lo - n.base - 1:]
        prev = n.term_at(lo - 1)
        assert prev is not None  # lo - 1 is the base or in the log: lo <= last + 1
        for index, term, digest in ents:
            n.terms.append(term)
            n.digests.append(self._record(node, index, term, digest, prev, at))
            prev = term

    def _check_append_only(self, node: str, n: _Node, ents: list[tuple[int, int, bytes]], at: float) -> None:
        term = n.lead_term
        hi = ents[-1][0]
        what, index = "", 0
        for i, t, d in ents:
            if i > n.last():
                break
            if n.term_at(i) != t or n.digest_at(i) != d:
                what, index = f"overwrote its entry at index {i} (term {n.term_at(i)}) with one of term {t}", i
                break
        if not what and n.last() > hi:
            what, index = f"deleted its entries at indexes {hi + 1}..{n.last()}", hi + 1
        if what:
            # Figure 3, Leader Append-Only: "a leader never overwrites or deletes entries in its
            # log; it only appends new entries" (§5.3)
            self._violate((LEADER_APPEND_ONLY, node, term), LEADER_APPEND_ONLY, (node,), term, index, at,
                          f"node {node}, leader of term {term}, {what} at {_at(at)}.")

    def _record(self, node: str, index: int, term: int, digest: bytes, prev: int, at: float) -> bytes:
        """Check (index, term) against the global record; the digest to keep (the recorded one
        when equal, so that the nodes' mirrors share one bytes object per entry)."""
        if index <= self._pruned:
            return digest  # below every node's snapshot: no longer checked (see the module docstring)
        new = (term, digest, prev, node)
        cur = self._records.get(index)
        if cur is None:
            self._records[index] = new
            return digest
        if type(cur) is tuple:
            if cur[0] != term:
                self._records[index] = {cur[0]: cur, term: new}
                return digest
            rec = cur
        else:
            assert isinstance(cur, dict)
            got = cur.get(term)
            if got is None:
                cur[term] = new
                return digest
            rec = got
        if rec[1] == digest and rec[2] == prev:
            return rec[1]
        # Figure 3, Log Matching: "if two logs contain an entry with the same index and term,
        # then the logs are identical in all entries up through the given index" (§5.3)
        who = f"nodes {rec[3]} and {node} hold" if rec[3] != node else f"node {node} held and holds"
        if rec[1] != digest:
            self._violate((LOG_MATCHING, index, term), LOG_MATCHING, (rec[3], node), term, index, at,
                          f"{who} different entries at index {index} in term {term} (seen on {node} at {_at(at)}).")
        else:
            self._violate((LOG_MATCHING, index, term), LOG_MATCHING, (rec[3], node), term, index, at,
                          f"{who} the same entry at index {index} in term {term} but disagree at index "
                          f"{index - 1} (terms {rec[2]} and {prev}; seen on {node} at {_at(at)}).")
        return digest

    def snapshot(self, node: str, index: int, term: int, at: float) -> None:
        """A snapshot replaced ``node``'s log up to ``index`` (whose entry has ``term``)."""
        n = self._node(node, "snapshot", at)
        if n is None:
            return
        if not _is_index(index) or not _is_index(term):
            self._note(f"ignored snapshot of node {node} at {_at(at)}: index {index!r} and term {term!r} "
                       "must be non-negative ints")
            return
        if index <= n.base:
            return  # older than the one it holds: storage ignores it too
        agrees = n.term_at(index) == term
        if n.lead_term is not None and not agrees:
            self._violate((LEADER_APPEND_ONLY, node, n.lead_term), LEADER_APPEND_ONLY, (node,), n.lead_term,
                          index, at, f"node {node}, leader of term {n.lead_term}, replaced its log by a snapshot "
                          f"at index {index} (term {term}) that its log does not hold, at {_at(at)}.")
        if agrees:
            del n.terms[:index - n.base]
            del n.digests[:index - n.base]
        else:
            n.terms, n.digests = [], []
        n.base, n.base_term = index, term
        n.commit = max(n.commit, index)
        n.applied = max(n.applied, index)
        self._mark_committed(node, index, term, None, at)
        self._prune()

    def _prune(self) -> None:
        low = min(n.base for n in self._nodes.values())
        for index in range(self._pruned + 1, low + 1):
            self._records.pop(index, None)
            self._committed.pop(index, None)
        self._pruned = max(self._pruned, low)

    # --- events: commit and apply ----------------------------------------------------------

    def committed(self, node: str, index: int, at: float, node_term: int | None = None) -> None:
        """``node``'s commit index reached ``index``: its entries up to there are committed.
        ``node_term``, the node's current term, tightens the bound on the term they were
        committed in (a node learns a commit in its term or before)."""
        n = self._node(node, "committed", at)
        if n is None:
            return
        if not _is_index(index):
            self._note(f"ignored committed of node {node} at {_at(at)}: index {index!r} is not a non-negative int")
            return
        if index <= n.commit:
            return
        if index > n.last():
            self._note(f"node {node} reported commit index {index} at {_at(at)} beyond its log (last {n.last()}); "
                       f"entries after {n.last()} not marked")
        base = n.base
        for i in range(max(n.commit, base) + 1, min(index, n.last()) + 1):
            self._mark_committed(node, i, n.terms[i - base - 1], n.digests[i - base - 1], at, node_term)
        n.commit = index

    def applied(self, node: str, index: int, term: int, digest: bytes, at: float,
                node_term: int | None = None) -> None:
        """``node`` applied the entry ``(index, term, digest)`` to its state machine
        (``node_term`` as for :meth:`committed`)."""
        n = self._node(node, "applied", at)
        if n is None:
            return
        if not _is_index(index) or index == 0 or not _is_index(term) or not isinstance(digest, bytes):
            self._note(f"ignored applied of node {node} at {_at(at)}: want a positive index, a term and bytes, "
                       f"got {index!r}, {term!r}, {type(digest).__name__}")
            return
        if index != n.applied + 1:
            self._note(f"node {node} applied index {index} at {_at(at)} after index {n.applied} (out of order)")
        n.applied = max(n.applied, index)
        n.commit = max(n.commit, index)
        self._applied_events += 1
        self._mark_committed(node, index, term, digest, at, node_term, "applied")

    def _mark_committed(self, node: str, index: int, term: int, digest: bytes | None, at: float,
                        node_term: int | None = None, how: str = "committed") -> None:
        """Record that ``node`` holds (index, term, digest) as committed (``how``: or applied
        it); State Machine Safety against what was committed there before."""
        if index <= self._pruned or index == 0:
            return
        rec = self._committed.get(index)
        if rec is not None:
            if rec[0] != term or (digest is not None and rec[1] is not None and rec[1] != digest):
                # Figure 3, State Machine Safety: "if a server has applied a log entry at a given
                # index to its state machine, no other server will ever apply a different log
                # entry for the same index" (§5.4.3); a committed entry is one to be applied
                did = "applied an entry" if how == "applied" else "holds an entry"
                as_ = "" if how == "applied" else " as committed"
                self._violate((STATE_MACHINE_SAFETY, index), STATE_MACHINE_SAFETY, (rec[3], node), term, index, at,
                              f"node {node} {did} of term {term} at index {index}{as_} at {_at(at)}, but node "
                              f"{rec[3]} {rec[5]} a different one (term {rec[0]}) there at {_at(rec[4])}.")
            elif rec[1] is None and digest is not None:
                self._committed[index] = (term, digest, *rec[2:])
            return
        bound = self._max_leader_term
        if type(node_term) is int:  # the node learnt the commit in its term or before
            bound = min(bound, max(node_term, term))
        rec = self._committed[index] = (term, digest, bound, node, at, how)
        if index > self._commit_known:
            self._commit_known = index
            if self._bounds and self._bounds[-1][0] == bound:
                self._bounds[-1] = (bound, index)
            else:
                self._bounds.append((bound, index))
        for leader, lead_term in self._leading.items():
            if lead_term > bound:
                self._check_leader_holds(leader, self._nodes[leader], lead_term, index, rec, at, "is leader")

    # --- events: crash and restart ---------------------------------------------------------

    def removed(self, node: str, at: float) -> None:
        """``node`` left the group for good (a membership change): its mirror is dropped, so it
        no longer holds the pruning point back. Should it come back, it starts afresh."""
        n = self._node(node, "removed", at)
        if n is None:
            return
        self._end_lead(node)
        del self._nodes[node]
        if self._nodes:
            self._prune()

    def crashed(self, node: str, at: float) -> None:
        """``node``'s process died: it leads no more, and its log is unknown until it restarts."""
        n = self._node(node, "crashed", at)
        if n is None:
            return
        self._end_lead(node)
        n.up = False

    def restarted(self, node: str, at: float, entries: Sequence[tuple[int, int, bytes]] = (),
                  snapshot: tuple[int, int] = (0, 0), commit: int = 0, node_term: int | None = None) -> None:
        """``node`` (re)starts from its synced state: ``snapshot`` (index, term), the ``entries``
        after it (``(index, term, digest)``), its synced commit index and term."""
        n = self._node(node, "restarted", at)
        if n is None:
            return
        ok = (isinstance(snapshot, tuple) and len(snapshot) == 2 and all(_is_index(x) for x in snapshot)
              and _is_index(commit))
        problem = "snapshot must be (index, term) and commit an int >= 0" if not ok else _bad_entries(entries)
        if not problem and entries and entries[0][0] != snapshot[0] + 1:
            problem = f"entries start at {entries[0][0]}, not right after the snapshot at {snapshot[0]}"
        if problem:
            self._note(f"ignored restarted of node {node} at {_at(at)}: {problem}")
            return
        self._end_lead(node)
        fresh = self._nodes[node] = _Node(snapshot[0], snapshot[1])
        self._mark_committed(node, snapshot[0], snapshot[1], None, at)
        if entries:
            self.appended(node, entries, at)
            self.events -= 1
        if commit:
            self.committed(node, min(commit, fresh.last()), at, node_term)
            self.events -= 1
        self._prune()


def _bad_entries(entries: Any) -> str:
    """Why ``entries`` is not a contiguous sequence of (index, term, digest) ("" when it is)."""
    if not isinstance(entries, list | tuple):
        return f"entries must be a list of (index, term, digest), not {type(entries).__name__}"
    prev = None
    for e in entries:
        if not (type(e) in (tuple, list) and len(e) == 3 and type(e[0]) is int and e[0] > 0
                and type(e[1]) is int and e[1] >= 0 and type(e[2]) is bytes):
            return f"entry {e!r} is not (index > 0, term >= 0, digest bytes)"
        if prev is not None and e[0] != prev + 1:
            return f"entries are not contiguous ({prev} then {e[0]})"
        prev = e[0]
    return ""
