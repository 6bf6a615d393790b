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

**A failed write or fsync stops the node.** What reached the disk is unknown, so the log takes no
more writes (:class:`realnet.raftlog.RaftStorageFailed`), and :class:`RaftLogDisk` turns the
failure into a stop rather than an exception in the group's Ready loop (where a timer would
swallow it and leave a zombie: a group forever busy, a "leader" that answers nothing): the log's
``on_failure`` reaches the opener's, which the node sets (``realnet.node``: CRITICAL, stop, exit
status 1, as the storage log's), ``save``/``sync`` then return quietly, and ``on_durable``
withholds its callback, so nothing that waited for the failed batch is sent or answered. Without
an owner's ``on_failure`` (a test, a tool) ``save``/``sync`` raise instead.

**A group the node remembers must find its log.** The node's storage names the group
(``replica:group``) when it starts; the log of that group is opened with ``create=False``
(:attr:`RaftOpener.must_exist`, which the node sets around its construction only), so a log that
is gone is refused (:class:`realnet.raftlog.RaftLogMissing`) instead of recreated empty: a member
with an empty log could vote twice in a term and let a majority forget acknowledged writes.
Forming a new group (the admin door) creates the file (staged first: below).

**A new group's log is installed once the node's record of it is durable.** The node records
its group in its storage before it asks for the log, but realnet's storage makes that record
durable only at the end of the loop turn, while the log file is made at once. Given
``record_durable`` (the storage's ``on_durable``, set by ``realnet.node``), the opener creates a
new group's log *staged* (``raft-0.log.new``, :mod:`realnet.raftlog`, "Joining") and renames it
to its own name from ``record_durable``'s callback, after the record's flush. Meanwhile
:meth:`RaftLogDisk.on_durable` holds its callbacks, so the group sends nothing that vouches for
the log (a vote, an acknowledgement) before the log is in place: a crash before the install
leaves a node that restarts as one that never joined (its staged log removed, nothing a peer
counted on lost) or, once the record is durable, one whose start finishes the rename.

**A damaged log is refused, not served** (:class:`realnet.raftlog.RaftLogCorrupt`: the file and
the offset; or a HardState whose commit index lies past the last entry, which no torn tail
leaves), nor is one that cannot be opened (:class:`realnet.raftlog.RaftLogUnusable`: a file
where ``raft/`` belongs, a directory where the log belongs); the node's start reports the
sentence and exits with status 2 (``realnet.node``).
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence

from kvcore import errors
from kvcore.raft.messages import Entry, HardState, Snapshot
from kvcore.raft.storage import StoredState
from realnet.metrics import Histogram
from realnet.raftlog import FileRaftStorage, RaftLogCorrupt
from realnet.runtime import off_loop

log = logging.getLogger("realnet.raftopen")

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
    """A :class:`FileRaftStorage` with ``on_durable`` and commit-latency notes (module docstring).

    ``on_failure(reason)``: told once when a save or sync fails; with it, ``save``/``sync`` do not
    raise (the owner stops) and ``on_durable`` withholds its callback from then on."""

    def __init__(self, log: FileRaftStorage, clock: Callable[[], float],
                 on_failure: Callable[[str], None] | None = None) -> None:
        self.log = log
        self.clock = clock
        self.on_failure = on_failure
        #: why the log failed (a write or fsync), or "": nothing is vouched for from then on
        self.failed = ""
        self.commit_latency = Histogram()
        #: entries whose commit was awaited but dropped past MAX_PENDING
        self.unmeasured = 0
        self._saved_at: OrderedDict[int, float] = OrderedDict()
        #: on_durable callbacks held while the log is staged (run by install)
        self._held: list[Callable[[], None]] = []
        self._commit = log.load().hard_state.commit
        log.background = off_loop
        log.on_failure = self._failed

    def _failed(self, why: str) -> None:
        if self.failed:
            return
        self.failed = why
        if self.on_failure is not None:
            self.on_failure(why)

    def _caught(self, exc: OSError) -> None:
        """A save or sync raised: make sure it counts as the log's failure, then raise it again
        unless an owner takes it (it stops the node)."""
        self._failed(self.log.failed or f"the Raft log {self.log.path} failed ({exc})")
        if self.on_failure is None:
            raise exc

    def load(self) -> StoredState:
        return self.log.load()

    def save(self, hard_state: HardState | None, entries: Sequence[Entry],
             snapshot: Snapshot | None) -> None:
        try:
            self.log.save(hard_state, entries, snapshot)
        except OSError as exc:
            self._caught(exc)
            return
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
        try:
            self.log.sync()
        except OSError as exc:  # RaftStorageFailed included: the log takes no more writes
            self._caught(exc)

    def on_durable(self, fn: Callable[[], None]) -> None:
        if self.failed:
            return  # withheld: what it waits for may not be on disk (the node is stopping)
        if self.log.staged:  # durable, but under a name a crash would discard: after install()
            self._held.append(fn)
            return
        fn()  # FileRaftStorage.sync returns after its fsync: what was synced is durable

    def install(self) -> None:
        """The node's record of the group is durable: give a staged log its own name, then run
        the callbacks that waited for it. A failure stops the node as a failed sync does."""
        try:
            self.log.install()
        except OSError as exc:
            self._caught(exc)
            return
        held, self._held = self._held, []
        for fn in held:
            if self.failed:
                return
            fn()

    @property
    def stats(self) -> dict[str, int]:
        return self.log.stats

    def close(self) -> None:
        self.log.close()


def _check_commit(storage: FileRaftStorage) -> None:
    """Refuse a log whose HardState commits past its last entry (and close it).

    The log writes a HardState after the entries of its batch, so a torn tail takes it with them;
    a commit index beyond the log means entries the group committed are gone. etcd refuses to
    start on it ("state.commit is out of range"); the Raft core would only clamp it, and the node
    would then serve, and vote, without entries the group counted on it for."""
    stored = storage.load()
    last = stored.snapshot.meta.index + len(stored.entries)
    if stored.hard_state.commit > last:
        storage.close()
        raise RaftLogCorrupt(
            f"raft log {storage.path} records commit index {stored.hard_state.commit} but holds "
            f"entries only up to {last}: entries the group committed are missing.")


class RaftOpener:
    """``opener(voters, learners)``: the node's Raft storage under ``<data_dir>/raft/``; a new
    group's log staged until ``record_durable`` says the node's record of it is durable.

    ``clock``: seconds, monotonic (the loop's time) for the commit-latency notes. Every storage
    it opened is kept in :attr:`opened` (the metrics read the newest; :meth:`close` closes all).
    A failed write or fsync of any of them is kept in :attr:`failed` and handed to
    :attr:`on_failure` (the node's stop), set by the owner."""

    def __init__(self, data_dir: str | os.PathLike[str] | None, clock: Callable[[], float], *,
                 compact_bytes: int = 4 << 20,
                 record_durable: Callable[[Callable[[], None]], None] | None = None) -> None:
        self.data_dir = str(data_dir) if data_dir else ""
        #: ``record_durable(fn)``: call ``fn`` once the node's record of its group is durable (the
        #: storage's ``on_durable``); a new group's log is staged until then. None: created at once
        self.record_durable = record_durable
        self.clock = clock
        self.compact_bytes = compact_bytes
        self.opened: list[RaftLogDisk] = []
        #: the log opened next belongs to a group the node remembers: it must exist (a missing
        #: one is refused, RaftLogMissing); False: a new group, whose file is created
        self.must_exist = False
        #: told why, once, when a log fails (the node stops; realnet.node sets it)
        self.on_failure: Callable[[str], None] | None = None
        #: the first failure of a log it opened, or ""
        self.failed = ""

    @property
    def directory(self) -> str:
        return os.path.join(self.data_dir, RAFT_DIR) if self.data_dir else ""

    def __call__(self, voters: Sequence[str], learners: Sequence[str]) -> RaftLogDisk:
        if not self.data_dir:
            raise errors.Conflict(NEEDS_DATA_DIR)
        record_durable = self.record_durable
        storage = FileRaftStorage(self.directory, voters, learners, group=GROUP,
                                  compact_bytes=self.compact_bytes, create=not self.must_exist,
                                  staged=not self.must_exist and record_durable is not None)
        _check_commit(storage)
        disk = RaftLogDisk(storage, self.clock, self._failed)
        self.opened.append(disk)
        if storage.staged and record_durable is not None:  # (staged only when it was given)
            record_durable(disk.install)
        return disk

    def _failed(self, why: str) -> None:
        if self.failed:
            return
        self.failed = why
        if self.on_failure is None:  # no owner yet (the node is being built: build() reads failed)
            log.error("%s; the Raft log takes no more writes", why)
        else:
            self.on_failure(why)

    @property
    def current(self) -> RaftLogDisk | None:
        """The storage opened last (the group's), or None."""
        return self.opened[-1] if self.opened else None

    def close(self) -> None:
        for disk in self.opened:
            disk.close()


__all__ = ["GROUP", "MAX_PENDING", "NEEDS_DATA_DIR", "RAFT_DIR", "RaftLogDisk", "RaftOpener"]
