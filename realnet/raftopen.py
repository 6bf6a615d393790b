"""Where a realnet node keeps its Raft log: the opener the node is given (``Node(raft_opener=...)``).

Theory of operation
-------------------
A node that joins a replicated group asks its opener for a durable Raft storage, with the
group's bootstrap configuration: ``opener(voters, learners)``. realnet's opener,
:class:`RaftOpener`, answers with a :class:`RaftLogDisk` over :class:`realnet.raftlog.FileRaftStorage`
in ``<data-dir>/raft/`` (the log ``raft-0.log`` and its snapshot files; the node's key/value
files stay where they were, beside that directory).

**No data directory, no group.** Raft's safety rests on what a member remembers across a
restart: a member that forgot its term and vote can vote twice in one term (two leaders), and
one that forgot acknowledged entries can help a majority lose a committed write. A node started
without ``--data-dir`` keeps everything in memory, so the opener refuses (:data:`NEEDS_DATA_DIR`,
raised as :class:`kvcore.errors.Conflict`: 409 over HTTP, the same refusal the admin door gives
for any request a node will not carry out), and nothing of the group is formed on that node.

**Durable means synced.** :class:`RaftLogDisk` passes ``load``/``save``/``sync`` through and adds
``on_durable(fn)``, which the group driver waits on before it sends what a Ready vouches for
(Figure 2: "respond to RPCs only after updating stable storage"). ``FileRaftStorage.sync`` returns
after its fsync, so everything synced is durable when ``sync`` returns and ``fn`` runs at once.

**A compaction's snapshot file is written off the loop**: :class:`RaftLogDisk` gives the log a
``background`` (``realnet.runtime.off_loop``, the storage log's too) that runs the file's write
(and its fsyncs) in a worker thread and hands the outcome back to the loop (``realnet.raftlog``: the entries it summarizes are durable
in the log already, so nothing waits for it). Outside a running loop it writes at once.

**Commit latency, measured on the log.** ``save`` notes the loop time at which each entry index
was first handed to the disk; when a later ``save`` carries a hard state whose ``commit`` covers
it, the time from that first save to the save that records the commit is observed in
:attr:`RaftLogDisk.commit_latency` (a :class:`realnet.metrics.Histogram`, seconds). On the
leader that is proposal to commit (its own fsync, a round trip to a majority and theirs); on a
follower, receipt to learning the commit. The notes are bounded (:data:`MAX_PENDING`: the
oldest are dropped past it, counted in ``unmeasured``).

**A damaged log is refused, not served** (:class:`realnet.raftlog.RaftLogCorrupt`: the file and
the offset); the node's start reports the sentence and exits (``realnet.node``).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Sequence

from kvcore import errors
from kvcore.raft.messages import Entry, HardState, Snapshot
from kvcore.raft.storage import StoredState
from realnet.metrics import Histogram
from realnet.raftlog import FileRaftStorage
from realnet.runtime import off_loop

#: the directory under ``--data-dir`` that holds the Raft log and snapshots
RAFT_DIR = "raft"
#: the one group a node belongs to in #11 (several groups over more nodes come next)
GROUP = "0"
#: entries whose commit is still awaited that the latency notes keep at most
MAX_PENDING = 100_000

NEEDS_DATA_DIR = (
    "A replicated group needs a data directory (--data-dir): Raft keeps its term, vote and log "
    "on disk, and a restarted member that forgot its vote or its log could vote twice in one "
    "term or help lose an acknowledged write; start this node with --data-dir and try again"
)


class RaftLogDisk:
    """A :class:`FileRaftStorage` with ``on_durable`` and commit-latency notes (module docstring)."""

    def __init__(self, log: FileRaftStorage, clock: Callable[[], float]) -> None:
        self.log = log
        self.clock = clock
        self.commit_latency = Histogram()
        #: entries whose commit was awaited but dropped past MAX_PENDING
        self.unmeasured = 0
        self._saved_at: OrderedDict[int, float] = OrderedDict()
        self._commit = log.load().hard_state.commit
        log.background = off_loop


    def load(self) -> StoredState:
        return self.log.load()

    def save(self, hard_state: HardState | None, entries: Sequence[Entry],
             snapshot: Snapshot | None) -> None:
        self.log.save(hard_state, entries, snapshot)
        now = self.clock()
        notes = self._saved_at
        for e in entries:
            if e.index > self._commit and e.index not in notes:
                notes[e.index] = now
        while len(notes) > MAX_PENDING:
            notes.popitem(last=False)
            self.unmeasured += 1
        if hard_state is not None and hard_state.commit > self._commit:
            self._commit = hard_state.commit
            while notes:
                index, at = next(iter(notes.items()))
                if index > self._commit:
                    break
                notes.popitem(last=False)
                self.commit_latency.observe(now - at)

    def sync(self) -> None:
        self.log.sync()

    def on_durable(self, fn: Callable[[], None]) -> None:
        fn()  # FileRaftStorage.sync returns after its fsync: what was synced is durable

    @property
    def stats(self) -> dict[str, int]:
        return self.log.stats

    def close(self) -> None:
        self.log.close()


class RaftOpener:
    """``opener(voters, learners)``: the node's Raft storage under ``<data_dir>/raft/``.

    ``clock``: seconds, monotonic (the loop's time) for the commit-latency notes. Every storage
    it opened is kept in :attr:`opened` (the metrics read the newest; :meth:`close` closes all)."""

    def __init__(self, data_dir: str | os.PathLike[str] | None, clock: Callable[[], float], *,
                 compact_bytes: int = 4 << 20) -> None:
        self.data_dir = str(data_dir) if data_dir else ""
        self.clock = clock
        self.compact_bytes = compact_bytes
        self.opened: list[RaftLogDisk] = []

    @property
    def directory(self) -> str:
        return os.path.join(self.data_dir, RAFT_DIR) if self.data_dir else ""

    def __call__(self, voters: Sequence[str], learners: Sequence[str]) -> RaftLogDisk:
        if not self.data_dir:
            raise errors.Conflict(NEEDS_DATA_DIR)
        disk = RaftLogDisk(FileRaftStorage(self.directory, voters, learners, group=GROUP,
                                           compact_bytes=self.compact_bytes), self.clock)
        self.opened.append(disk)
        return disk

    @property
    def current(self) -> RaftLogDisk | None:
        """The storage opened last (the group's), or None."""
        return self.opened[-1] if self.opened else None

    def close(self) -> None:
        for disk in self.opened:
            disk.close()


__all__ = ["GROUP", "MAX_PENDING", "NEEDS_DATA_DIR", "RAFT_DIR", "RaftLogDisk", "RaftOpener"]
