"""A file-backed RaftStorage: one append-only log file per Raft group, group commit, checksums.

Theory of operation
-------------------
:class:`FileRaftStorage` keeps the same two images as :class:`kvcore.raft.MemoryRaftStorage`
(volatile and synced) and makes the synced one durable. Plain blocking file I/O, no asyncio: it
is called from a node's Ready loop.

**Files** (in ``directory``, for group ``G``):

- ``raft-G.log``: an 8-byte magic ``SLRAFT1\\n`` then records. A record is a 4-byte big-endian
  body length, the 4-byte big-endian CRC32 (``zlib.crc32``) of the body, and the body: one kind
  byte and a msgpack payload (:mod:`realnet.recordfile`, shared with the node's storage log).
  Kinds: ``H`` hard state ``[term, vote, commit]``; ``E`` entries
  ``[[term, index, kind, data], ...]``, always following the log's last index; ``T`` truncate
  from ``index`` (a conflicting suffix is dropped before the entries that replace it, Raft
  Figure 2, AppendEntries receiver rule 3); ``S`` snapshot marker ``[index, term]``, naming the
  snapshot file that holds the image.
- ``raft-G.snap-INDEX`` (INDEX zero-padded to 20 digits): the magic and one ``P`` record
  ``[index, term, voters, learners, data]``. Written atomically: ``*.tmp``, fsync, rename, fsync
  of the directory, *before* its marker enters the log, so any marker that reached the disk names
  a durable file.

**Writing.** ``save()`` appends the records of one save to an in-process buffer (volatile, no
system call); ``sync()`` writes the whole buffer with one ``write`` and one ``fsync`` (group
commit: many saves, one fsync). ``stats`` counts saves, records, syncs, fsyncs, the records of
the last and the largest sync, snapshots, compactions and dropped torn bytes.

A failed write or fsync leaves the file in an unknown state, so (as etcd does) every later
``save``/``sync`` raises :class:`RaftStorageFailed`; a restart recovers from what is on disk. So
does every other failure of a ``save``/``sync`` (a snapshot file that cannot be written, a
rewrite that fails after the batch's fsync): the one that fails raises :class:`RaftStorageFailed`
(an ``OSError``, chained to the system's error), and ``on_failure`` is called once with the
reason (realnet's node stops on it, exit status 1: :mod:`realnet.raftopen`).
Snapshot files cost their own fsyncs (file and directory) in the ``save()`` that carries them.

**A compaction's snapshot file is written in the background** when the owner gives a
``background(work, done)`` (realnet's disk: ``realnet.runtime.off_loop``, a worker thread, so the file's hundred
megabytes and fsyncs do not stall the loop). A compaction is a snapshot whose index names an entry
the *synced* log holds with the same term: everything it summarizes is durable in the log
already, so nothing waits for its file. ``save()`` applies it to the volatile image and hands
the file to ``work``; ``done`` (back on the owner's thread) appends its marker and syncs, and
only then does the synced image (and the log's rewrite) move past those entries. A crash before
that recovers the older snapshot and every entry (the file no marker names is removed at start).
One file is written at a time: a newer compaction meanwhile waits (the newest wins), and one the
synced log outgrew meanwhile is dropped. A failed background write is logged and counted
(``snapshot_write_failures``); the entries stay in the log until a later compaction succeeds. A
snapshot from a leader (the log does not hold its index) is written in ``save()`` as before: the
log entries it replaces may not be durable.

**Compaction.** Once a synced snapshot marker advanced the log's first index and the log file is
at least ``compact_bytes`` long, the log is rewritten from the snapshot's index (the marker, the
hard state, the entries after the snapshot) atomically: ``raft-G.log.tmp``, fsync, rename, fsync
of the directory. Snapshot files other than the current one are removed once a newer marker is
synced (replay needs only a marker's index and term, the content only of the last one).

**Opening.** The directory is created if need be, and its parent fsynced (so that a power loss
cannot take the directory's entry away while the node's storage names the group), then the log
file (``write_atomically``: its directory fsynced too). ``create=False`` (a group the node
remembers) refuses a missing log instead: :class:`RaftLogMissing`, since an empty log would
forget the term, the vote and every acknowledged entry. A directory or file that cannot be used
(a file where the directory belongs, a directory where the log belongs, no permission) raises
:class:`RaftLogUnusable` naming the path, not an ``OSError``.

**Joining: a new log is staged until the node's record of the group is durable.** The node
records its group (``replica:group`` in ``storage.log``) before it opens the group's log, but
that record becomes durable only at the end of the loop turn (group commit), while the log is
created at once; a crash in between left a log with no record, which the node refuses to start
on (it cannot tell it from a log whose record was lost), and the reverse order would leave a
record with no log, refused as :class:`RaftLogMissing`. So ``staged=True`` (a new group, when the
owner will say once the record is durable: :mod:`realnet.raftopen`) creates the log as
``raft-G.log.new`` (:func:`staged_name`) and writes there; :meth:`FileRaftStorage.install` renames
it to ``raft-G.log`` and fsyncs the directory, and the owner calls it once the record is durable.
Every crash then leaves a state that restarts soundly: no record (a ``.new`` file at most: the
node never joined; :func:`discard_staged` removes it, and ``add-node`` run again joins it), a
record and a ``.new`` file but no log (the rename did not happen or did not reach the disk: a
log that must exist takes the staged file as its log, ``create=False`` finishes the rename), or
a record and its log. A log at its own name without a record, and a record with neither file,
are not left by a join and stay refused. Nothing the staged log holds is vouched for to a peer
before it is installed (``realnet.raftopen``'s ``on_durable`` waits for it), so dropping one
drops nothing another node counts on.

**Recovery (at construction).** Temp files are removed. The log is replayed into the synced
image. A *torn tail* — a last record cut short or with a bad checksum and no valid record after
it, as after ``kill -9`` or a power loss mid-write — is truncated (fsynced) and logged with the
number of bytes dropped. A bad record *followed by valid data* is corruption: construction raises
:class:`RaftLogCorrupt` naming the file and offset rather than serve a log with a hole — unless a
512-byte sector inside the bad record reads as zeros up to its end, the mark of a batch whose
later page reached the disk before an earlier one at a power loss (etcd's ``isTornEntry``): that
is a torn tail too, truncated at the bad record (what follows was never synced). Snapshot
files no marker names (written before a crash that lost their marker) are removed.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Sequence
from typing import Any

import msgpack

from kvcore.raft.messages import ConfState, Entry, HardState, Snapshot, SnapshotMeta
from kvcore.raft.storage import LogImage, StoredState, apply_snapshot, apply_writes
from realnet import recordfile
from realnet.recordfile import encode_record, encode_record_parts, write_synced
from realnet.runtime import Background, fsync_dir, unlink_quietly, write_all, write_atomically

log = logging.getLogger("realnet.raftlog")

MAGIC = b"SLRAFT1\n"
_HEADER = recordfile.HEADER
MAX_RECORD = recordfile.MAX_RECORD
SECTOR = recordfile.SECTOR
K_HARD, K_ENTRIES, K_TRUNCATE, K_SNAP, K_SNAPFILE = b"H", b"E", b"T", b"S", b"P"
_KINDS = frozenset((K_HARD, K_ENTRIES, K_TRUNCATE, K_SNAP, K_SNAPFILE))
_GROUP = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")



class RaftLogUnusable(Exception):
    """The Raft log cannot be opened (its text is a sentence naming the path); the node does not
    start."""


class RaftLogCorrupt(RaftLogUnusable):
    """A Raft log or snapshot file holds damaged data that is not a torn tail; refused."""


class RaftLogMissing(RaftLogUnusable):
    """The log of a group the node remembers is not there; refused (an empty log would forget
    the term, the vote and every acknowledged entry)."""


class RaftStorageFailed(OSError):
    """A write or fsync failed (now or earlier), or the storage is closed: it takes no more
    writes."""


def scan_records(buf: bytes, path: str) -> tuple[list[tuple[int, bytes, Any]], int]:
    """Split ``buf`` (after the magic) into ``(offset, kind, payload)`` records
    (:func:`realnet.recordfile.scan_records`: a torn tail ends the valid prefix, whose length is
    returned; corruption raises :class:`RaftLogCorrupt`)."""
    return recordfile.scan_records(buf, path, _KINDS, "raft log", RaftLogCorrupt)


def log_name(group: str) -> str:
    """The file name of group ``group``'s log in its directory."""
    return f"raft-{group}.log"


#: what a staged log's name adds to the log's (the module docstring, "Joining")
STAGED_SUFFIX = ".new"


def staged_name(group: str) -> str:
    """The file name of group ``group``'s log while it is staged (a join not yet recorded)."""
    return log_name(group) + STAGED_SUFFIX


def discard_staged(directory: str) -> list[str]:
    """Remove what a join cut short by a crash before the node recorded its group left in
    ``directory``: each staged log (or its temp file) whose group has no log of its own, with
    that group's temp and snapshot files (the node never joined it: its owner checked that it
    remembers no group). Returns the paths removed."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    removed: list[str] = []
    staged = re.compile(r"^raft-(.+)\.log" + re.escape(STAGED_SUFFIX) + r"(\.tmp)?$")
    groups = {m.group(1) for m in map(staged.match, names) if m is not None and _GROUP.match(m.group(1))}
    for group in sorted(groups):
        if log_name(group) in names:
            continue  # a group with its log: nothing of it is discarded here
        # its staged log, a log's temp file, its snapshot files (its own log is not there)
        mine = re.compile(re.escape(f"raft-{group}.") + r"(log(" + re.escape(STAGED_SUFFIX) + r")?|snap-\d{20})"
                          + r"(\.tmp)?$")
        for name in sorted(names):
            if mine.match(name):
                os.unlink(os.path.join(directory, name))
                removed.append(os.path.join(directory, name))
    if removed:
        fsync_dir(directory)
    return removed


def group_logs(directory: str) -> list[str]:
    """The paths of the group logs in ``directory``, sorted (none when it cannot be listed)."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    groups = (n[len("raft-"):-len(".log")] for n in names if n.startswith("raft-") and n.endswith(".log"))
    return sorted(os.path.join(directory, log_name(g)) for g in groups if _GROUP.match(g))


def _bin_header(n: int) -> bytes:
    """msgpack's header of a bin of ``n`` bytes (bin 8, 16 or 32, the smallest that fits, as
    ``msgpack.packb`` writes it)."""
    if n < 1 << 8:
        return b"\xc4" + n.to_bytes(1, "big")
    if n < 1 << 16:
        return b"\xc5" + n.to_bytes(2, "big")
    return b"\xc6" + n.to_bytes(4, "big")


def _entry_rows(entries: Sequence[Entry]) -> list[list[Any]]:
    return [[e.term, e.index, e.kind, e.data] for e in entries]


def _hard_row(hs: HardState) -> list[Any]:
    return [hs.term, hs.vote, hs.commit]


class FileRaftStorage:
    """A durable :class:`kvcore.raft.storage.RaftStorage` for group ``group`` in ``directory``.

    ``voters``/``learners`` give the bootstrap configuration (used only while no snapshot has
    been stored, as :class:`MemoryRaftStorage`'s). ``compact_bytes``: the log size from which a
    synced snapshot triggers a rewrite of the log from the snapshot's index (0: always).
    ``create``: make a missing log (a new group); False refuses it (:class:`RaftLogMissing`), or
    finishes the install of a staged one. ``staged``: make a missing log under its staged name,
    until :meth:`install` (the module docstring, "Joining")."""

    def __init__(self, directory: str, voters: Sequence[str], learners: Sequence[str] = (), *,
                 group: str = "0", compact_bytes: int = 4 << 20, create: bool = True,
                 staged: bool = False) -> None:
        if not _GROUP.match(group):
            raise ValueError(f"raft group name {group!r} must be 1-64 letters, digits, '_', '.' or '-'")
        self.directory = os.path.abspath(directory)
        self.group = group
        self.compact_bytes = compact_bytes
        #: the log's own name; :attr:`path` is the file written, the staged one until install()
        self.final_path = os.path.join(self.directory, log_name(group))
        self.path = self.final_path
        self._stage = staged
        self._boot = Snapshot(meta=SnapshotMeta(index=0, term=0, conf=ConfState(
            voters=tuple(voters), learners=tuple(learners))))
        self.stats: dict[str, int] = dict.fromkeys(
            ("saves", "records", "syncs", "fsyncs", "last_sync_records", "max_sync_records",
             "bytes_synced", "snapshots", "compactions", "torn_bytes_dropped",
             "snapshots_in_background", "snapshot_write_failures"), 0)
        #: where a compaction's snapshot file is written (module docstring; None: in save())
        self.background: Background | None = None
        self._writing: Snapshot | None = None  # the file being written in the background
        self._next_write: Snapshot | None = None  # the newest compaction waiting for it
        self._buf = bytearray()
        self._buf_records = 0
        self._fd = -1
        self._failed = ""  # why writes are refused (a failed write or fsync), or ""
        #: called once, with the reason, when a save or sync fails (realnet's node stops on it)
        self.on_failure: Callable[[str], None] | None = None
        self._log_base = 0  # the snapshot index the log file starts from (its first record)
        self._pending: list[tuple[HardState | None, list[Entry], Snapshot | None]] = []
        try:
            self._make_directory(create)
            self._synced = self._recover(create)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        except OSError as exc:
            raise RaftLogUnusable(f"Cannot open the Raft log {self.path}: {self._why_unusable(exc)}.") from exc
        self._volatile = self._synced.copy()

    # --- the RaftStorage door -------------------------------------------------------------------

    def load(self) -> StoredState:
        img = self._synced
        return StoredState(img.hard_state, img.snapshot, list(img.entries))

    def save(self, hard_state: HardState | None, entries: Sequence[Entry],
             snapshot: Snapshot | None) -> None:
        self._check_usable()
        try:
            self._save(hard_state, entries, snapshot)
        except OSError as exc:  # a snapshot file that cannot be written: what is on disk is in doubt
            raise self._failure(f"writing a snapshot file of {self.path} failed", exc) from exc

    def _save(self, hard_state: HardState | None, entries: Sequence[Entry],
              snapshot: Snapshot | None) -> None:
        self.stats["saves"] += 1
        vol = self._volatile
        records: list[bytes] = []
        later: Snapshot | None = None
        if snapshot is not None and snapshot.meta.index > vol.snapshot.meta.index:
            if self.background is not None and self._synced_holds(snapshot):
                later = snapshot  # a compaction: its file is written in the background
            else:
                self._write_snapshot_file(snapshot)  # durable before its marker can reach the disk
                records.append(encode_record(K_SNAP, [snapshot.meta.index, snapshot.meta.term]))
        if snapshot is not None:
            apply_snapshot(vol, snapshot)
        last = vol.snapshot.meta.index + len(vol.entries)
        first = vol.snapshot.meta.index + 1
        kept = [e for e in entries if e.index >= first]
        if kept:
            apply_writes(vol, None, kept, None)  # raises ValueError on a gap, as MemoryRaftStorage does
            if kept[0].index <= last:
                records.append(encode_record(K_TRUNCATE, kept[0].index))
            records.append(encode_record(K_ENTRIES, _entry_rows(kept)))
        if hard_state is not None:
            vol.hard_state = hard_state
            records.append(encode_record(K_HARD, _hard_row(hard_state)))
        for r in records:
            self._buf += r
        self._buf_records += len(records)
        self.stats["records"] += len(records)
        self._pending.append((hard_state, list(entries), None if later is not None else snapshot))
        if later is not None:
            self._write_in_background(later)

    def sync(self) -> None:
        """One write and one fsync for everything saved since the last sync (group commit).

        Any failure (the write, the fsync, the cleanup or rewrite after it) raises
        :class:`RaftStorageFailed` and refuses every later ``save``/``sync``."""
        self._check_usable()
        self.stats["syncs"] += 1
        if self._buf:
            try:
                # (in parts past MAX_BATCH, an fsync after each: recordfile's torn-write rule)
                syncs = write_synced(self._fd, self._buf)
            except OSError as exc:
                # what reached the disk is unknown (a retry could append a batch twice): like
                # etcd after a failed fsync, refuse every later write; a restart recovers
                raise self._failure(f"a write or fsync of {self.path} failed", exc) from exc
            self.stats["fsyncs"] += syncs
            self.stats["bytes_synced"] += len(self._buf)
            self.stats["last_sync_records"] = self._buf_records
            self.stats["max_sync_records"] = max(self.stats["max_sync_records"], self._buf_records)
            self._buf.clear()
            self._buf_records = 0
        old_snap = self._synced.snapshot.meta.index
        for hs, entries, snapshot in self._pending:
            apply_writes(self._synced, hs, entries, snapshot)
        self._pending.clear()
        try:
            if self._synced.snapshot.meta.index != old_snap:
                self._remove_snapshot_files(keep=self._synced.snapshot.meta.index)
            if self._synced.snapshot.meta.index > self._log_base and self.log_size() >= self.compact_bytes:
                self._rewrite()
        except RaftStorageFailed:
            raise
        except OSError as exc:
            raise self._failure(f"removing the old snapshot files of {self.path} failed", exc) from exc

    # --- beyond the protocol --------------------------------------------------------------------

    def _failure(self, what: str, exc: OSError) -> RaftStorageFailed:
        """Refuse every later write (the first reason is kept), tell ``on_failure`` once, and
        return the error to raise."""
        if not self._failed:
            self._failed = f"{what} ({exc})"
            if self.on_failure is not None:
                self.on_failure(self._failed)
        failed = RaftStorageFailed(f"raft storage failed: {self._failed}; restart to recover from what "
                                   "is on disk")
        failed.errno = exc.errno
        return failed

    @property
    def failed(self) -> str:
        """Why writes are refused (a failed save or sync), or ""."""
        return self._failed

    def _check_usable(self) -> None:
        if self._failed:
            raise RaftStorageFailed(f"raft storage refuses writes: {self._failed}; restart to recover "
                                    "from what is on disk")
        if self._fd < 0:
            raise RaftStorageFailed(f"raft storage {self.path} is closed")

    @property
    def staged(self) -> bool:
        """The log is still under its staged name (created for a join not yet recorded)."""
        return self.path != self.final_path

    def install(self) -> None:
        """Give a staged log its own name (rename, fsync of the directory): the node's record of
        the group is durable. Nothing to do for a log that has it. A failure raises
        :class:`RaftStorageFailed`, as a failed sync (a restart finishes the rename)."""
        if not self.staged:
            return
        try:
            os.replace(self.path, self.final_path)
            self.path = self.final_path
            fsync_dir(self.directory)
        except OSError as exc:
            raise self._failure(f"installing the Raft log {self.final_path} failed", exc) from exc

    def has_unsynced(self) -> bool:
        return self._synced != self._volatile  # LogImage compares all three fields

    def log_size(self) -> int:
        return os.fstat(self._fd).st_size

    def compact(self) -> None:
        """Sync, then rewrite the log from the synced snapshot's index if that moved."""
        self.sync()
        if self._synced.snapshot.meta.index > self._log_base:
            self._rewrite()

    def _rewrite(self) -> None:
        """The log from the synced snapshot's index, written atomically (nothing is unsynced).
        A failure (ENOSPC in the temp file, a failed rename or fsync) leaves the log in doubt
        and closed: :class:`RaftStorageFailed`, as a failed sync."""
        try:
            self._rewrite_file()
        except OSError as exc:
            raise self._failure(f"rewriting {self.path} from its snapshot failed", exc) from exc

    def _rewrite_file(self) -> None:
        img = self._synced
        parts = [MAGIC]
        if img.snapshot.meta.index > 0:
            parts.append(encode_record(K_SNAP, [img.snapshot.meta.index, img.snapshot.meta.term]))
        parts.append(encode_record(K_HARD, _hard_row(img.hard_state)))
        if img.entries:
            parts.append(encode_record(K_ENTRIES, _entry_rows(img.entries)))
        os.close(self._fd)
        self._fd = -1
        write_atomically(self.path, b"".join(parts))
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._log_base = img.snapshot.meta.index
        self.stats["compactions"] += 1

    def close(self) -> None:
        """Close the file; writes not synced are lost (as in a crash)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def crash_for_test(self, torn: int = 0) -> None:
        """Test hook: die as after ``kill -9``: the unsynced writes are lost, except the first
        ``torn`` bytes of them, which reach the file (a write torn mid-record)."""
        if torn:
            write_all(self._fd, bytes(self._buf[:torn]))
        self._discard_unsynced()
        self.close()

    def _discard_unsynced(self) -> None:
        self._buf.clear()
        self._buf_records = 0
        self._pending.clear()
        self._volatile = self._synced.copy()

    # --- snapshot files -------------------------------------------------------------------------

    def _synced_holds(self, snap: Snapshot) -> bool:
        """Whether the synced log holds the entry at ``snap``'s index with its term (so every
        entry the snapshot summarizes is durable already: a compaction)."""
        img = self._synced
        pos = snap.meta.index - img.snapshot.meta.index - 1
        return 0 <= pos < len(img.entries) and img.entries[pos].term == snap.meta.term

    def _write_in_background(self, snap: Snapshot) -> None:
        if self._writing is not None:
            self._next_write = snap  # after the one in flight; the newest wins
            return
        assert self.background is not None
        self._writing = snap
        self.stats["snapshots_in_background"] += 1
        self.background(lambda: self._write_snapshot_file(snap), lambda err: self._written(snap, err))

    def _written(self, snap: Snapshot, err: BaseException | None) -> None:
        """Back on the owner's thread: the file is durable (or failed); its marker goes in."""
        self._writing = None
        if self._fd < 0:
            return  # closed meanwhile: the file no marker names is removed at the next start
        index = snap.meta.index
        if err is not None:
            self.stats["snapshot_write_failures"] += 1
            log.warning("raft log %s: writing snapshot %d failed (%s); its entries stay in the log",
                        self.path, index, err)
        elif index <= self._synced.snapshot.meta.index or self._failed:
            unlink_quietly(self._snap_path(index))  # outgrown meanwhile (a leader's snapshot)
        else:
            self._buf += encode_record(K_SNAP, [index, snap.meta.term])
            self._buf_records += 1
            self.stats["records"] += 1
            self._pending.append((None, [], snap))
            try:
                self.sync()
            except OSError as exc:  # failed for good (on_failure was told): the node stops
                log.error("raft log %s: syncing the marker of snapshot %d failed: %s", self.path, index, exc)
        nxt, self._next_write = self._next_write, None
        if nxt is not None and nxt.meta.index > self._synced.snapshot.meta.index and not self._failed:
            self._write_in_background(nxt)

    def _snap_path(self, index: int) -> str:
        return os.path.join(self.directory, f"raft-{self.group}.snap-{index:020d}")

    def _write_snapshot_file(self, snap: Snapshot) -> None:
        m = snap.meta
        # the record of [index, term, voters, learners, data], its msgpack built around the
        # image rather than copying it (encode_record's bytes, in parts)
        pk = msgpack.Packer(use_bin_type=True)
        payload = [pk.pack_array_header(5), pk.pack(m.index), pk.pack(m.term), pk.pack(list(m.conf.voters)),
                   pk.pack(list(m.conf.learners)), _bin_header(len(snap.data)), snap.data]
        write_atomically(self._snap_path(m.index), [MAGIC, *encode_record_parts(K_SNAPFILE, payload)])
        self.stats["snapshots"] += 1

    def _read_snapshot_file(self, index: int, term: int) -> Snapshot:
        path = self._snap_path(index)
        try:
            with open(path, "rb") as f:
                buf = f.read()
        except FileNotFoundError:
            raise RaftLogCorrupt(f"raft log {self.path} names snapshot {index} but {path} is missing.") from None
        if not buf.startswith(MAGIC):
            raise RaftLogCorrupt(f"raft snapshot {path} does not start with the magic {MAGIC!r}.")
        recs, end = scan_records(buf, path)
        if end != len(buf) or len(recs) != 1 or recs[0][1] != K_SNAPFILE:
            raise RaftLogCorrupt(f"raft snapshot {path} is damaged at offset {end}.")
        try:
            idx, t, voters, learners, data = recs[0][2]
            conf = ConfState(voters=tuple(voters), learners=tuple(learners))
            if not isinstance(data, bytes):
                raise TypeError(f"its image is a {type(data).__name__}, not bytes")
        except (ValueError, TypeError) as exc:
            raise RaftLogCorrupt(f"raft snapshot {path} holds a record of the wrong shape ({exc}).") from None
        if (idx, t) != (index, term):
            raise RaftLogCorrupt(f"raft snapshot {path} holds {t}/{idx}, the log names {term}/{index}.")
        return Snapshot(meta=SnapshotMeta(index=idx, term=t, conf=conf), data=data)

    def _remove_snapshot_files(self, keep: int) -> None:
        prefix = f"raft-{self.group}.snap-"
        kept = {os.path.basename(self._snap_path(keep))}
        if self._writing is not None:  # being written in the background: its own end decides
            name = os.path.basename(self._snap_path(self._writing.meta.index))
            kept |= {name, name + ".tmp"}
        for name in os.listdir(self.directory):
            if name.startswith(prefix) and name not in kept:
                os.unlink(os.path.join(self.directory, name))

    # --- recovery -------------------------------------------------------------------------------

    def _make_directory(self, create: bool) -> None:
        """The log's directory, made if need be (not for a log that must exist: refused), each
        directory made fsynced into its parent."""
        if os.path.isdir(self.directory):
            return
        if not create and not os.path.lexists(self.directory):
            raise self._missing()
        made: list[str] = []
        d = self.directory
        while not os.path.lexists(d):
            made.append(d)
            d = os.path.dirname(d)
        os.makedirs(self.directory, exist_ok=True)  # a file in the way: FileExistsError/NotADirectoryError
        for d in reversed(made):
            fsync_dir(os.path.dirname(d))

    def _missing(self) -> RaftLogMissing:
        return RaftLogMissing(
            f"The Raft log {self.path} is missing, but this node is a member of a replicated group (its "
            "storage says so): starting on an empty log would forget its term, its vote and the entries "
            "it acknowledged.")

    def _why_unusable(self, exc: OSError) -> str:
        """Why the log cannot be opened, naming the path (a clause)."""
        if os.path.lexists(self.directory) and not os.path.isdir(self.directory):
            return f"{self.directory} is not a directory"
        if os.path.isdir(self.path):
            return f"{self.path} is a directory, not a file"
        reason = (exc.strerror or str(exc)).lower()
        return f"{exc.filename}: {reason}" if exc.filename else reason

    def _recover(self, create: bool) -> LogImage:
        for name in os.listdir(self.directory):
            if name.startswith(f"raft-{self.group}.") and name.endswith(".tmp"):
                os.unlink(os.path.join(self.directory, name))  # a write that never got renamed
        staged = os.path.join(self.directory, staged_name(self.group))
        if not os.path.lexists(self.final_path):
            if not create and os.path.isfile(staged):
                # a join whose record became durable, cut short before the rename reached the
                # disk: the staged file is this group's log (module docstring, "Joining")
                os.replace(staged, self.final_path)
                fsync_dir(self.directory)
                log.info("raft log %s: installed the log staged when this node joined its group (a crash "
                         "came between its record of the group and the rename)", self.final_path)
            elif not create:
                raise self._missing()
            else:
                if self._stage:
                    self.path = staged  # (a staged file left by a crash before any record: replaced)
                write_atomically(self.path, MAGIC)  # the file, then its directory, fsynced
        elif os.path.lexists(staged):
            os.unlink(staged)  # not left by a join (the rename consumes it): nothing to keep
            log.warning("raft log %s: removed %s beside it", self.final_path, staged)
        records, dropped = recordfile.read_log(self.path, MAGIC, _KINDS, "raft log", RaftLogCorrupt)
        self.stats["torn_bytes_dropped"] = dropped
        img = LogImage(HardState(), self._boot)
        for off, kind, payload in records:
            try:
                if off == records[0][0] and kind == K_SNAP:
                    self._log_base = int(payload[0])
                _replay(img, kind, payload)
            except (ValueError, TypeError, IndexError) as exc:
                raise RaftLogCorrupt(f"raft log {self.path}: record at offset {off} does not apply "
                                     f"({exc}).") from None
        if img.snapshot.meta.index > 0:
            img.snapshot = self._read_snapshot_file(img.snapshot.meta.index, img.snapshot.meta.term)
        self._remove_snapshot_files(keep=img.snapshot.meta.index)
        return img


def _replay(img: LogImage, kind: bytes, payload: Any) -> None:
    """Apply one log record to ``img`` (a snapshot marker carries only index and term; the
    content is read once, for the last marker)."""
    if kind == K_HARD:
        term, vote, commit = payload
        img.hard_state = HardState(term=term, vote=vote, commit=commit)
    elif kind == K_SNAP:
        index, term = payload
        apply_snapshot(img, Snapshot(meta=SnapshotMeta(index=index, term=term)))
    elif kind == K_TRUNCATE:
        first = img.snapshot.meta.index + 1
        if not first <= payload <= first + len(img.entries):
            raise ValueError(f"truncate from {payload} outside the log [{first}, {first + len(img.entries)}]")
        del img.entries[payload - first:]
    elif kind == K_ENTRIES:
        ents = [Entry(term=t, index=i, kind=k, data=d) for t, i, k, d in payload]
        nxt = img.snapshot.meta.index + 1 + len(img.entries)
        if ents and ents[0].index != nxt:
            raise ValueError(f"entries start at {ents[0].index}, the log's next index is {nxt}")
        img.entries.extend(ents)
    else:
        raise ValueError(f"record kind {kind!r} does not belong in a log")
