"""The Raft log as the core sees it: a snapshot, the entries after it, and four indexes.

Theory of operation
-------------------
``RaftLog`` holds the whole log in memory: the last snapshot (``snapshot.meta.index`` and
``term`` stand for every entry it replaced, Figure 12) and ``entries`` for the indexes after it.
Four indexes move forward through it::

    snapshot.meta.index <= applied <= committed <= last_index,    stabled <= last_index

``stabled`` is the last index known to be on stable storage (synced); entries after it are
handed out in the next ``Ready`` and become stable at ``advance()``. A conflicting append that
truncates stable entries pulls ``stabled`` back, so the replacement is persisted (storage
truncates on overlap). ``committed`` never moves back, and no committed entry is ever truncated
(the core only truncates on a leader's AppendEntries, and Leader Completeness, §5.4, says a
leader holds every committed entry; an attempt raises, which is a bug, never peer input).

Configurations (thesis §4.1: "a server always uses the latest configuration in its log,
regardless of whether that entry is committed") are tracked here too: ``confs`` lists
``(index, ConfState)`` for the snapshot and each configuration entry, so a truncation rolls the
configuration back with the entries.
"""

from __future__ import annotations

from collections.abc import Sequence

from kvcore.raft.messages import CONF, ConfChange, ConfState, Entry, Snapshot, SnapshotMeta


def apply_conf_change(conf: ConfState, cc: ConfChange) -> ConfState:
    """The configuration after one single-server change (thesis §4.1)."""
    voters = [v for v in conf.voters if v != cc.node]
    learners = [n for n in conf.learners if n != cc.node]
    if cc.op == "add-learner":
        learners.append(cc.node)
    elif cc.op == "promote":
        voters.append(cc.node)
    return ConfState(voters=tuple(voters), learners=tuple(learners))


class RaftLog:
    def __init__(self, snapshot: Snapshot, entries: Sequence[Entry] = (), committed: int = 0) -> None:
        self.snapshot = snapshot
        self.entries: list[Entry] = list(entries)
        self.committed = max(committed, snapshot.meta.index)
        self.applied = snapshot.meta.index
        self.stabled = self.last_index()
        self.confs: list[tuple[int, ConfState]] = [(snapshot.meta.index, snapshot.meta.conf)]
        for e in self.entries:
            self._note_conf(e)

    # --- reading -----------------------------------------------------------------------------

    def first_index(self) -> int:
        return self.snapshot.meta.index + 1

    def last_index(self) -> int:
        return self.snapshot.meta.index + len(self.entries)

    def last_term(self) -> int:
        return self.entries[-1].term if self.entries else self.snapshot.meta.term

    def term(self, index: int) -> int | None:
        """The term of the entry at ``index``; None when compacted away or beyond the log."""
        meta = self.snapshot.meta
        if index == meta.index:
            return meta.term
        if index < meta.index or index > self.last_index():
            return None
        return self.entries[index - meta.index - 1].term

    def entry(self, index: int) -> Entry:
        return self.entries[index - self.snapshot.meta.index - 1]

    def match_term(self, index: int, term: int) -> bool:
        return self.term(index) == term

    def slice(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries ``lo..hi-1`` (``lo`` must not be compacted), at least one and at most
        ``max_bytes`` of data when a limit is given."""
        base = self.snapshot.meta.index + 1
        out = self.entries[lo - base:hi - base]
        if max_bytes is None or not out:
            return out
        size = 0
        for n, e in enumerate(out):
            size += len(e.data)
            if size > max_bytes and n > 0:
                return out[:n]
        return out

    def unstable(self) -> list[Entry]:
        return self.slice(self.stabled + 1, self.last_index() + 1)

    def to_apply(self) -> list[Entry]:
        return self.slice(self.applied + 1, self.committed + 1)

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """§5.4.1: "If the logs have last entries with different terms, then the log with the
        later term is more up-to-date. If the logs end with the same term, then whichever log
        is longer is more up-to-date." True when the candidate's log is at least as up to date."""
        return (last_term, last_index) >= (self.last_term(), self.last_index())

    def first_index_of_term(self, index: int) -> int:
        """The first index (not compacted) holding the same term as ``index`` (the §5.3 hint)."""
        t = self.term(index)
        while index - 1 >= self.first_index() and self.term(index - 1) == t:
            index -= 1
        return index

    def last_index_of_term(self, term: int) -> int | None:
        for e in reversed(self.entries):
            if e.term == term:
                return e.index
            if e.term < term:
                return None
        return self.snapshot.meta.index if self.snapshot.meta.term == term else None

    def conf(self) -> ConfState:
        return self.confs[-1][1]

    def last_conf_index(self) -> int:
        return self.confs[-1][0]

    def conf_committed(self) -> bool:
        """Whether the latest configuration is committed (one that is not may still be rolled
        back with its entry, thesis §4.1)."""
        return self.confs[-1][0] <= self.committed

    # --- writing -----------------------------------------------------------------------------

    def append(self, entries: Sequence[Entry]) -> None:
        """Append after the last entry (a leader's own proposals)."""
        for e in entries:
            if e.index != self.last_index() + 1:
                raise ValueError(f"entry {e.index} does not follow the last index {self.last_index()}")
            self.entries.append(e)
            self._note_conf(e)

    def maybe_append(self, prev_index: int, prev_term: int, commit: int,
                     entries: Sequence[Entry]) -> int | None:
        """AppendEntries receiver rules 2-5 (Figure 2). None when the log has no entry at
        ``prev_index`` with ``prev_term`` (rule 2); else the index of the last new entry."""
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = prev_index + len(entries)
        for e in entries:
            if e.index <= self.snapshot.meta.index:
                continue  # covered by our snapshot: committed, so identical (§5.4)
            t = self.term(e.index)
            if t == e.term:
                continue
            if t is not None:  # rule 3: a conflict deletes the entry and all that follow it
                self._truncate_from(e.index)
            self.append([x for x in entries if x.index >= e.index])
            break
        self.commit_to(min(commit, last_new))  # rule 5
        return last_new

    def _truncate_from(self, index: int) -> None:
        if index <= self.committed:
            raise AssertionError(f"bug: truncating committed entry {index} (commit {self.committed})")
        del self.entries[index - self.snapshot.meta.index - 1:]
        self.stabled = min(self.stabled, index - 1)
        while self.confs[-1][0] >= index:
            self.confs.pop()

    def commit_to(self, index: int) -> bool:
        if index > self.committed:
            if index > self.last_index():
                raise AssertionError(f"bug: commit {index} beyond the last index {self.last_index()}")
            self.committed = index
            return True
        return False

    def _note_conf(self, e: Entry) -> None:
        if e.kind == CONF:
            self.confs.append((e.index, apply_conf_change(self.conf(), ConfChange.decode(e.data))))

    # --- snapshots ---------------------------------------------------------------------------

    def restore(self, snap: Snapshot) -> None:
        """Replace the whole log by a snapshot from the leader (Figure 13, rules 6-8: the log
        disagrees with it, so it is discarded; callers keep the suffix when it agrees)."""
        self.snapshot = snap
        self.entries = []
        self.committed = self.applied = self.stabled = snap.meta.index
        self.confs = [(snap.meta.index, snap.meta.conf)]

    def compact(self, index: int, data: bytes) -> Snapshot:
        """Replace the entries up to ``index`` (applied) by a snapshot holding ``data`` (§7)."""
        if index <= self.snapshot.meta.index:
            raise ValueError(f"index {index} is already compacted (snapshot at {self.snapshot.meta.index})")
        if index > self.applied:
            raise ValueError(f"index {index} is not applied yet (applied {self.applied})")
        conf = next(c for i, c in reversed(self.confs) if i <= index)
        term = self.term(index)
        assert term is not None
        snap = Snapshot(meta=SnapshotMeta(index=index, term=term, conf=conf), data=data)
        self.entries = self.entries[index - self.snapshot.meta.index:]
        self.snapshot = snap
        self.confs = [(index, conf), *[(i, c) for i, c in self.confs if i > index]]
        return snap
