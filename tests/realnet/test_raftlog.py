"""realnet.raftlog: the file-backed RaftStorage keeps what was synced, and only what it can vouch for.

Round trip; group commit counted in real fsyncs; a torn tail cut at every byte offset of the last
record recovered; a damaged record with valid data after it refused with a sentence; snapshots
written atomically; a differential test against MemoryRaftStorage over random save / sync /
snapshot / compact / crash sequences; and a real ``kill -9`` of a process appending to the log.
Every failure of a save or sync fails the storage for good and stops the node that owns it (exit
status 1); a remembered group's missing log, or a raft directory that cannot be used, stops the
start with a sentence (exit 2).
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvcore.node.node import GROUP_KEY
from kvcore.raft.messages import CONF, ConfState, Entry, HardState, Snapshot, SnapshotMeta
from kvcore.raft.raft import LEADER
from kvcore.raft.storage import MemoryRaftStorage
from realnet import node as realnode
from realnet import raftlog
from realnet import runtime as realruntime
from realnet.kvlog import LogStorage
from realnet.raftlog import (
    MAGIC,
    FileRaftStorage,
    RaftLogCorrupt,
    RaftLogMissing,
    RaftLogUnusable,
    RaftStorageFailed,
)
from realnet.raftopen import GROUP, RAFT_DIR, RaftLogDisk, RaftOpener
from realnet.settings import load_settings

REPO = Path(__file__).resolve().parents[2]
VOTERS = ("a", "b", "c")


def ents(lo: int, hi: int, term: int = 1, tag: bytes = b"v") -> list[Entry]:
    return [Entry(term=term, index=i, data=tag + str(i).encode()) for i in range(lo, hi + 1)]


def snap(index: int, term: int, data: bytes = b"image", voters: tuple[str, ...] = VOTERS) -> Snapshot:
    return Snapshot(meta=SnapshotMeta(index=index, term=term, conf=ConfState(voters=voters, learners=("d",))),
                    data=data)


def reopen(s: FileRaftStorage, **kw: Any) -> FileRaftStorage:
    s.close()
    return FileRaftStorage(s.directory, VOTERS, group=s.group, **kw)


def test_a_fresh_log_loads_the_bootstrap_configuration(tmp_path: Path) -> None:
    s = FileRaftStorage(str(tmp_path), VOTERS)
    assert s.load() == MemoryRaftStorage(VOTERS).load()
    assert (tmp_path / "raft-0.log").read_bytes() == MAGIC


def test_round_trip_equals_memory_storage(tmp_path: Path) -> None:
    f, m = FileRaftStorage(str(tmp_path), VOTERS), MemoryRaftStorage(VOTERS)
    ops: list[tuple[HardState | None, list[Entry], Snapshot | None]] = [
        (HardState(term=1, vote="a", commit=0), ents(1, 3), None),
        (HardState(term=2, vote=None, commit=2),
         [Entry(term=2, index=3, kind=CONF, data=b"add-learner d"), Entry(term=2, index=4, data=b"\xff\x00")],
         None),
        (None, [], snap(2, 1, data=b"\x00\x01state")),  # compaction: entries 3, 4 kept
        (HardState(term=3, vote="b", commit=4), ents(5, 6, term=3), None),
    ]
    for op in ops:
        f.save(*op)
        m.save(*op)
    f.sync()
    m.sync()
    assert f.load() == m.load()
    assert reopen(f).load() == m.load()
    assert [e.index for e in m.load().entries] == [3, 4, 5, 6]


def test_unsynced_saves_are_lost_by_a_crash_and_synced_ones_kept(tmp_path: Path) -> None:
    s = FileRaftStorage(str(tmp_path), VOTERS)
    s.save(HardState(term=1), ents(1, 2), None)
    s.sync()
    s.save(HardState(term=2), ents(3, 4), None)
    assert s.has_unsynced()
    s.crash_for_test()
    back = FileRaftStorage(str(tmp_path), VOTERS).load()
    assert back.hard_state == HardState(term=1) and back.entries == ents(1, 2)


def test_group_commit_many_saves_one_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = FileRaftStorage(str(tmp_path), VOTERS)
    calls: list[int] = []
    real = os.fsync

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(raftlog.os, "fsync", counting)
    for i in range(1, 101):
        s.save(HardState(term=1, commit=i - 1), ents(i, i), None)
    assert calls == []  # saves are volatile
    s.sync()
    assert len(calls) == 1
    assert s.stats["syncs"] == 1 and s.stats["fsyncs"] == 1
    assert s.stats["last_sync_records"] == 200 and s.stats["saves"] == 100
    s.sync()  # nothing new: counted as a sync, costs no fsync
    assert len(calls) == 1 and s.stats["syncs"] == 2
    assert reopen(s).load().entries == ents(1, 100)


def test_a_failed_fsync_refuses_later_writes_and_a_restart_recovers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = FileRaftStorage(str(tmp_path), VOTERS)
    s.save(HardState(term=1), ents(1, 2), None)
    s.sync()
    s.save(HardState(term=2), ents(3, 4), None)

    def eio(fd: int) -> None:
        raise OSError(5, "Input/output error")

    with monkeypatch.context() as mp:
        mp.setattr(raftlog.os, "fsync", eio)
        with pytest.raises(OSError):
            s.sync()
    with pytest.raises(RaftStorageFailed, match=r"refuses writes: a write or fsync of .* failed"):
        s.sync()  # a retry could write the batch twice
    with pytest.raises(RaftStorageFailed):
        s.save(None, ents(5, 5), None)
    got = reopen(s).load()  # the batch was written, its fsync failed: either image is allowed
    assert got.entries in (ents(1, 2), ents(1, 4))


def test_a_closed_storage_refuses_writes(tmp_path: Path) -> None:
    s = FileRaftStorage(str(tmp_path), VOTERS)
    s.close()
    with pytest.raises(RaftStorageFailed, match="is closed"):
        s.save(HardState(term=1), [], None)


def test_a_conflicting_suffix_is_truncated_and_survives_reopen(tmp_path: Path) -> None:
    f, m = FileRaftStorage(str(tmp_path), VOTERS), MemoryRaftStorage(VOTERS)
    for st_ in (f, m):
        st_.save(HardState(term=1), ents(1, 5), None)
        st_.save(HardState(term=2), ents(3, 3, term=2, tag=b"w"), None)  # replaces 3..5 with 3
        st_.sync()
    assert reopen(f).load() == m.load()
    assert [e.index for e in m.load().entries] == [1, 2, 3]


def _two_states(tmp_path: Path) -> tuple[FileRaftStorage, int, int, Any]:
    """A log with several synced records, then one more save: (storage, len before, len after,
    state before the last save)."""
    s = FileRaftStorage(str(tmp_path), VOTERS)
    s.save(HardState(term=1, vote="a"), ents(1, 3), None)
    s.sync()
    s.save(HardState(term=1, vote="a", commit=2), ents(4, 5), None)
    s.sync()
    before_state, before = s.load(), s.log_size()
    s.save(None, ents(6, 6, tag=b"last entry payload "), None)  # one record: the last one
    s.sync()
    after = s.log_size()
    s.close()
    return s, before, after, before_state


def test_a_torn_tail_is_truncated_at_every_byte_offset_of_the_last_record(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    s, before, after, before_state = _two_states(tmp_path)
    full = Path(s.path).read_bytes()
    assert len(full) == after
    for cut in range(before, after):
        Path(s.path).write_bytes(full[:cut])
        with caplog.at_level(logging.WARNING, logger="realnet.raftlog"):
            caplog.clear()
            r = FileRaftStorage(str(tmp_path), VOTERS)
        assert r.load() == before_state, cut
        assert r.stats["torn_bytes_dropped"] == cut - before
        assert r.log_size() == before  # truncated on disk
        if cut > before:
            assert f"torn tail of {cut - before} bytes at offset {before} dropped" in caplog.text
        r.save(None, ents(6, 6, tag=b"again"), None)  # the log is writable after recovery
        r.sync()
        assert reopen(r).load().entries[-1] == ents(6, 6, tag=b"again")[0]


def test_a_last_record_with_a_bad_checksum_is_a_torn_tail(tmp_path: Path) -> None:
    s, before, after, before_state = _two_states(tmp_path)
    full = Path(s.path).read_bytes()
    for off in range(before, after):  # e.g. a file system that extended the file with zeros
        damaged = bytearray(full)
        damaged[off] ^= 0x40
        Path(s.path).write_bytes(bytes(damaged))
        assert FileRaftStorage(str(tmp_path), VOTERS).load() == before_state, off


def test_a_damaged_record_followed_by_valid_data_is_refused_with_a_sentence(tmp_path: Path) -> None:
    s, _before, _after, _ = _two_states(tmp_path)
    full = Path(s.path).read_bytes()
    records, _end = raftlog.scan_records(full, s.path)
    starts = [off for off, _k, _p in records] + [len(full)]
    for i in range(len(starts) - 2):  # every record but the last
        for off in range(starts[i], starts[i + 1]):
            damaged = bytearray(full)
            damaged[off] ^= 0x01
            Path(s.path).write_bytes(bytes(damaged))
            with pytest.raises(RaftLogCorrupt) as err:
                FileRaftStorage(str(tmp_path), VOTERS)
            msg = str(err.value)
            assert f"raft log {s.path} is corrupt at offset {starts[i]}" in msg, (off, msg)
            assert "refusing to serve it" in msg
            assert Path(s.path).read_bytes() == bytes(damaged)  # nothing truncated or rewritten


def test_a_zeroed_sector_in_the_last_unsynced_batch_is_a_torn_tail(tmp_path: Path) -> None:
    """Power loss: a later page of the last batch reached the disk, an earlier one did not (it
    reads as zeros). The records after the hole were never synced: truncated, not refused."""
    s = FileRaftStorage(str(tmp_path), VOTERS)
    s.save(HardState(term=1), ents(1, 10, tag=b"synced " * 10), None)
    s.sync()
    before = s.log_size()
    for i in range(11, 60):
        s.save(None, ents(i, i, tag=b"batch " * 10), None)
    s.sync()
    s.close()
    full = Path(s.path).read_bytes()
    hole = (before // raftlog.SECTOR + 2) * raftlog.SECTOR  # a whole sector inside the last batch
    assert hole + raftlog.SECTOR < len(full) - 200
    damaged = full[:hole] + bytes(raftlog.SECTOR) + full[hole + raftlog.SECTOR:]
    Path(s.path).write_bytes(damaged)
    r = FileRaftStorage(str(tmp_path), VOTERS)
    got = r.load().entries
    assert r.log_size() <= hole and r.stats["torn_bytes_dropped"] == len(full) - r.log_size()
    assert len(got) >= 10 and got == ents(1, 10, tag=b"synced " * 10) + [
        e for i in range(11, len(got) + 1) for e in ents(i, i, tag=b"batch " * 10)]
    # the same hole filled with anything but zeros is corruption
    Path(s.path).write_bytes(full[:hole] + bytes([1]) * raftlog.SECTOR + full[hole + raftlog.SECTOR:])
    with pytest.raises(RaftLogCorrupt, match="valid records follow"):
        FileRaftStorage(str(tmp_path), VOTERS)


def test_a_log_without_the_magic_is_refused(tmp_path: Path) -> None:
    (tmp_path / "raft-0.log").write_bytes(b"not a raft log")
    with pytest.raises(RaftLogCorrupt, match="does not start with the magic"):
        FileRaftStorage(str(tmp_path), VOTERS)


def test_a_bad_group_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="raft group name"):
        FileRaftStorage(str(tmp_path), VOTERS, group="../x")


def test_groups_in_one_directory_are_independent(tmp_path: Path) -> None:
    a = FileRaftStorage(str(tmp_path), VOTERS, group="1")
    b = FileRaftStorage(str(tmp_path), VOTERS, group="2")
    a.save(HardState(term=5), ents(1, 2), snap(1, 1))
    a.sync()
    b.save(HardState(term=7), ents(1, 1), None)
    b.sync()
    assert reopen(a).load().hard_state.term == 5
    assert reopen(b).load().hard_state.term == 7 and reopen(b).load().snapshot.meta.index == 0


# --- snapshots ---------------------------------------------------------------------------------


def _with_snapshot(tmp_path: Path) -> FileRaftStorage:
    s = FileRaftStorage(str(tmp_path), VOTERS, compact_bytes=1 << 30)
    s.save(HardState(term=1), ents(1, 6), None)
    s.save(None, [], snap(3, 1, data=b"old"))
    s.sync()
    return s


def test_a_crash_between_temp_write_and_rename_leaves_the_old_snapshot(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = _with_snapshot(tmp_path)

    def dies(src: str, dst: str) -> None:
        raise OSError("killed before the rename")

    with monkeypatch.context() as mp:
        mp.setattr(raftlog.os, "replace", dies)
        with pytest.raises(OSError):
            s.save(None, [], snap(5, 1, data=b"new"))
    assert any(p.name.endswith(".tmp") for p in tmp_path.iterdir())
    s.crash_for_test()
    r = FileRaftStorage(str(tmp_path), VOTERS)
    got = r.load()
    assert got.snapshot == snap(3, 1, data=b"old") and got.entries == ents(4, 6)
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())  # the stray temp is removed


def test_a_snapshot_file_whose_marker_was_not_synced_is_ignored_and_removed(tmp_path: Path) -> None:
    s = _with_snapshot(tmp_path)
    s.save(None, [], snap(5, 1, data=b"new"))  # the file is durable, its marker is not
    assert (tmp_path / f"raft-0.snap-{5:020d}").exists()
    s.crash_for_test()
    got = FileRaftStorage(str(tmp_path), VOTERS).load()
    assert got.snapshot.data == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raft-0.log", f"raft-0.snap-{3:020d}"]


def test_a_synced_snapshot_replaces_the_old_file_and_compacts_the_log(tmp_path: Path) -> None:
    s = FileRaftStorage(str(tmp_path), VOTERS, compact_bytes=0)
    s.save(HardState(term=1, commit=40), ents(1, 40, tag=b"x" * 50), None)
    s.sync()
    big = s.log_size()
    s.save(None, [], snap(38, 1, data=b"img"))
    s.sync()
    assert s.stats["compactions"] == 1 and s.log_size() < big / 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raft-0.log", f"raft-0.snap-{38:020d}"]
    r = reopen(s)
    got = r.load()
    assert got.snapshot == snap(38, 1, data=b"img") and got.entries == ents(39, 40, tag=b"x" * 50)
    assert got.hard_state == HardState(term=1, commit=40)
    r.save(None, ents(41, 41), None)
    r.sync()
    assert r.stats["compactions"] == 0  # the log already starts at the snapshot: no new rewrite


def test_a_small_log_is_not_rewritten_until_it_reaches_compact_bytes(tmp_path: Path) -> None:
    s = FileRaftStorage(str(tmp_path), VOTERS, compact_bytes=1 << 20)
    s.save(HardState(term=1), ents(1, 5), snap(2, 1))
    s.sync()
    assert s.stats["compactions"] == 0
    s.compact()  # on demand
    assert s.stats["compactions"] == 1
    assert reopen(s).load().entries == ents(3, 5)


def test_a_missing_snapshot_file_named_by_the_log_is_refused(tmp_path: Path) -> None:
    s = _with_snapshot(tmp_path)
    s.close()
    (tmp_path / f"raft-0.snap-{3:020d}").unlink()
    with pytest.raises(RaftLogCorrupt, match=r"names snapshot 3 but .* is missing"):
        FileRaftStorage(str(tmp_path), VOTERS)


def test_a_damaged_snapshot_file_is_refused(tmp_path: Path) -> None:
    s = _with_snapshot(tmp_path)
    s.close()
    p = tmp_path / f"raft-0.snap-{3:020d}"
    b = bytearray(p.read_bytes())
    b[-2] ^= 0xFF
    p.write_bytes(bytes(b))
    with pytest.raises(RaftLogCorrupt, match=r"raft snapshot .* is damaged"):
        FileRaftStorage(str(tmp_path), VOTERS)


# --- differential: the same random history against MemoryRaftStorage ---------------------------

OPS = st.lists(st.one_of(
    st.tuples(st.just("append"), st.integers(0, 4), st.integers(1, 5), st.integers(0, 2)),
    st.tuples(st.just("hard"), st.integers(0, 3), st.sampled_from([None, "a", "b"]), st.integers(0, 9)),
    st.tuples(st.just("snap"), st.sampled_from(["compact", "install", "stale", "mismatch"]), st.integers(0, 9)),
    st.tuples(st.just("sync")),
    st.tuples(st.just("compact")),
    st.tuples(st.just("crash"), st.integers(0, 400)),
), max_size=40)


def _concrete(op: tuple[Any, ...], m: MemoryRaftStorage, term: list[int]
              ) -> tuple[HardState | None, list[Entry], Snapshot | None]:
    vol = m._volatile  # the model's volatile image: where the next save lands
    base = vol.snapshot.meta.index
    last = base + len(vol.entries)
    if op[0] == "append":
        _, back, n, bump = op
        term[0] += bump
        lo = max(1, last + 1 - back)
        return None, ents(lo, lo + n - 1, term=term[0], tag=f"t{term[0]}-".encode()), None
    if op[0] == "hard":
        _, t, vote, commit = op
        return HardState(term=term[0] + t, vote=vote, commit=commit), [], None
    kind, k = op[1], op[2]
    if kind == "compact" and vol.entries:
        e = vol.entries[k % len(vol.entries)]
        return None, [], snap(e.index, e.term, data=f"s{e.index}".encode())
    if kind == "mismatch" and vol.entries:
        e = vol.entries[k % len(vol.entries)]
        return None, [], snap(e.index, e.term + 1, data=b"other")
    if kind == "stale":
        return None, [], snap(max(0, base - k), 1)
    return None, [], snap(last + 1 + k, term[0] + 1, data=b"installed", voters=("a", "b"))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS, compact_bytes=st.sampled_from([0, 400, 1 << 20]))
def test_file_storage_agrees_with_memory_storage_after_every_crash(
        tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[Any, ...]], compact_bytes: int) -> None:
    d = str(tmp_path_factory.mktemp("diff"))
    f, m = FileRaftStorage(d, VOTERS, compact_bytes=compact_bytes), MemoryRaftStorage(VOTERS)
    term = [1]
    for op in ops:
        if op[0] == "sync":
            f.sync()
            m.sync()
        elif op[0] == "compact":
            f.compact()  # syncs first: the memory model syncs too
            m.sync()
        elif op[0] == "crash":
            first_len = (raftlog._HEADER.unpack_from(f._buf, 0)[0] + 8) if f._buf else 0
            torn = min(op[1], max(0, first_len - 1))  # cut inside the first unsynced record
            f.crash_for_test(torn=torn)
            m.crash()
            f = FileRaftStorage(d, VOTERS, compact_bytes=compact_bytes)
            assert f.stats["torn_bytes_dropped"] == torn
        else:
            hs, es, sn = _concrete(op, m, term)
            f.save(hs, es, sn)
            m.save(hs, es, sn)
        assert f.load() == m.load(), op
    f.sync()
    m.sync()
    assert reopen(f, compact_bytes=compact_bytes).load() == m.load()


# --- a real kill -9 ----------------------------------------------------------------------------

CHILD = """
import sys
from kvcore.raft.messages import Entry, HardState
from realnet.raftlog import FileRaftStorage
s = FileRaftStorage(sys.argv[1], ["a", "b", "c"], compact_bytes=1 << 30)
i = len(s.load().entries)
for _ in range(200000):
    for _ in range(3):
        i += 1
        s.save(HardState(term=1, commit=i - 1), [Entry(term=1, index=i, data=b"%d" % i * 20)], None)
    s.sync()
    print(i, flush=True)
"""


@pytest.fixture
def child_proc(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path / "log")], stdout=subprocess.PIPE,
                            text=True, env=env, cwd=str(REPO))
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        assert proc.stdout is not None
        proc.stdout.close()


def test_kill_9_keeps_every_index_reported_synced(tmp_path: Path, child_proc: subprocess.Popen[str]) -> None:
    assert child_proc.stdout is not None
    reported: list[int] = []
    deadline = time.monotonic() + 60
    while len(reported) < 300 and time.monotonic() < deadline:
        line = child_proc.stdout.readline()
        if not line:
            break
        reported.append(int(line))
    assert len(reported) >= 300, f"the child reported only {len(reported)} syncs"
    child_proc.kill()  # SIGKILL, by its own handle, mid-loop
    child_proc.wait(timeout=30)
    reported += [int(x) for x in child_proc.stdout.read().split()]  # printed before it died
    got = FileRaftStorage(str(tmp_path / "log"), VOTERS).load()
    assert len(got.entries) >= reported[-1]
    assert [e.index for e in got.entries] == list(range(1, len(got.entries) + 1))
    assert all(e.data == b"%d" % e.index * 20 for e in got.entries)
    assert reported[-1] - 1 <= got.hard_state.commit <= len(got.entries) - 1


# --- a compaction's snapshot file written in the background ---------------------------------------


class Later:
    """A ``background`` that keeps the jobs until the test runs them (or fails them)."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Any, Any]] = []

    def __call__(self, work: Any, done: Any) -> None:
        self.jobs.append((work, done))

    def run(self, fail: bool = False) -> None:
        jobs, self.jobs = self.jobs, []
        for work, done in jobs:
            if fail:
                done(OSError(28, "No space left on device"))
                continue
            try:
                work()
            except Exception as exc:
                done(exc)
            else:
                done(None)


def _snap_files(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if ".snap-" in p.name)


def _compacting(tmp_path: Path) -> tuple[FileRaftStorage, Later]:
    s = FileRaftStorage(str(tmp_path), VOTERS)
    later = Later()
    s.background = later
    s.save(HardState(term=1, vote="a", commit=10), ents(1, 10), None)
    s.sync()
    return s, later


def test_a_compactions_snapshot_file_is_written_in_the_background_then_its_marker(tmp_path: Path) -> None:
    s, later = _compacting(tmp_path)
    s.save(None, [], snap(6, 1))
    s.sync()
    assert len(later.jobs) == 1 and _snap_files(tmp_path) == []  # nothing written in save()
    assert s.load().snapshot.meta.index == 0 and len(s.load().entries) == 10  # synced: unchanged
    assert s.has_unsynced()
    s.save(HardState(term=1, vote="a", commit=11), ents(11, 11), None)  # the log goes on meanwhile
    s.sync()
    later.run()
    assert _snap_files(tmp_path) == [f"raft-0.snap-{6:020d}"]
    back = s.load()
    assert back.snapshot.meta.index == 6 and [e.index for e in back.entries] == [7, 8, 9, 10, 11]
    assert not s.has_unsynced() and s.stats["snapshots_in_background"] == 1
    again = reopen(s).load()
    assert again == back


@pytest.mark.parametrize("file_written", [False, True], ids=["mid-write", "before-its-marker"])
def test_a_crash_before_the_marker_keeps_every_entry(tmp_path: Path, file_written: bool) -> None:
    """The entries a compaction summarizes are durable in the log: a crash before its marker is
    synced recovers the older snapshot and all of them (a file no marker names is removed)."""
    s, later = _compacting(tmp_path)
    s.save(None, [], snap(6, 1))
    s.sync()
    if file_written:
        later.jobs[0][0]()  # the file reaches the disk, the loop never hears of it
        assert _snap_files(tmp_path) == [f"raft-0.snap-{6:020d}"]
    s.crash_for_test()
    later.run()  # (its end, after the crash, changes nothing)
    back = FileRaftStorage(str(tmp_path), VOTERS).load()
    assert back.snapshot.meta.index == 0 and [e.index for e in back.entries] == list(range(1, 11))
    assert _snap_files(tmp_path) == []


def test_a_newer_compaction_waits_for_the_one_in_flight_and_the_newest_wins(tmp_path: Path) -> None:
    s, later = _compacting(tmp_path)
    for i in (4, 6, 8):
        s.save(None, [], snap(i, 1))
        s.sync()
    assert len(later.jobs) == 1
    later.run()  # 4's file; then 8's is started (6 was overtaken while it waited)
    assert s.load().snapshot.meta.index == 4 and len(later.jobs) == 1
    later.run()
    assert s.load().snapshot.meta.index == 8 and _snap_files(tmp_path) == [f"raft-0.snap-{8:020d}"]
    assert s.stats["snapshots_in_background"] == 2


def test_a_failed_background_write_is_counted_and_the_entries_stay(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    s, later = _compacting(tmp_path)
    s.save(None, [], snap(6, 1))
    s.sync()
    with caplog.at_level(logging.WARNING, logger="realnet.raftlog"):
        later.run(fail=True)
    assert s.stats["snapshot_write_failures"] == 1 and "No space left" in caplog.text
    assert s.load().snapshot.meta.index == 0 and len(s.load().entries) == 10
    s.save(None, [], snap(8, 1))  # the next compaction goes through
    s.sync()
    later.run()
    assert s.load().snapshot.meta.index == 8 and reopen(s).load().snapshot.meta.index == 8


def test_a_leaders_snapshot_is_written_in_save_and_outgrows_a_compaction_in_flight(tmp_path: Path) -> None:
    """A snapshot whose index the synced log does not hold replaces entries that may not be
    durable: its file is written before its marker, in save(), as always."""
    s, later = _compacting(tmp_path)
    s.save(None, [], snap(6, 1))
    s.sync()
    s.save(HardState(term=2, vote="b", commit=20), [], snap(20, 2))
    assert f"raft-0.snap-{20:020d}" in _snap_files(tmp_path) and len(later.jobs) == 1
    s.sync()
    later.run()  # 6's file is written, then found outgrown: removed, no marker
    assert s.load().snapshot.meta.index == 20 and _snap_files(tmp_path) == [f"raft-0.snap-{20:020d}"]
    assert reopen(s).load().snapshot.meta.index == 20


def test_realnets_disk_writes_a_compactions_file_in_a_worker_thread(tmp_path: Path) -> None:
    """RaftLogDisk gives the log a worker thread (off_loop): save() returns before the file is written,
    and the marker is synced once it is, while the loop keeps running."""
    import asyncio

    from realnet.raftopen import RaftLogDisk

    async def main() -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        disk = RaftLogDisk(FileRaftStorage(str(tmp_path), VOTERS), loop.time)
        disk.save(HardState(term=1, vote="a", commit=10), ents(1, 10), None)
        disk.sync()
        disk.save(None, [], snap(6, 1, data=b"x" * (8 << 20)))
        disk.sync()
        at_once = disk.log.load().snapshot.meta.index
        for _ in range(2000):  # bounded: 2000 turns of at least 10 ms
            if disk.log.load().snapshot.meta.index == 6:
                break
            await asyncio.sleep(0.01)
        index = disk.log.load().snapshot.meta.index
        disk.close()
        return at_once, index

    at_once, index = asyncio.run(main())
    assert at_once == 0 and index == 6
    back = FileRaftStorage(str(tmp_path), VOTERS).load()
    assert back.snapshot.meta.index == 6 and back.snapshot.data == b"x" * (8 << 20)


@pytest.mark.parametrize("size", [0, 1, 255, 256, 65535, 65536, 70000])
def test_a_snapshot_file_written_in_parts_is_the_records_bytes(tmp_path: Path, size: int) -> None:
    """The file's record is built around the image (no copy of it): the same bytes as
    encode_record of the whole payload, bin header sizes included."""
    from realnet.recordfile import encode_record

    s = FileRaftStorage(str(tmp_path), VOTERS)
    sn = snap(3, 1, data=bytes(range(256)) * (size // 256) + b"z" * (size % 256))
    s._write_snapshot_file(sn)
    m = sn.meta
    want = MAGIC + encode_record(raftlog.K_SNAPFILE, [m.index, m.term, list(m.conf.voters),
                                                      list(m.conf.learners), sn.data])
    assert (tmp_path / f"raft-0.snap-{3:020d}").read_bytes() == want


# --- a failed write or fsync stops the node; a missing or unusable log is refused at start ----------
#
# A failure inside the group's Ready loop used to be swallowed by the timer that ran it: the group
# stayed busy forever and the node a zombie (a "leader" answering 504). It now stops the node with
# exit status 1, as a failed fsync of storage.log does. A remembered group's missing log used to be
# recreated empty (a second leader for a term, acknowledged keys gone): refused now, exit 2.


def _failing_on(path: str, err: int, real: Any) -> Any:
    """``real`` (os.fsync or os.write) that raises ``err`` for a file descriptor open on ``path``."""
    def call(fd: int, *args: Any) -> Any:
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if target == path:
            raise OSError(err, os.strerror(err))
        return real(fd, *args)
    return call


needs_proc = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="names an fd's file through /proc")


@needs_proc
@pytest.mark.parametrize(("call", "err"), [("fsync", errno.EIO), ("write", errno.ENOSPC)])
def test_a_failed_write_or_fsync_tells_the_owner_once_and_refuses_every_later_write(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: str, err: int) -> None:
    s = FileRaftStorage(str(tmp_path), VOTERS)
    told: list[str] = []
    s.on_failure = told.append
    s.save(HardState(term=1), ents(1, 2), None)
    s.sync()
    s.save(HardState(term=2), ents(3, 4), None)
    with monkeypatch.context() as mp:
        mp.setattr(os, call, _failing_on(s.path, err, getattr(os, call)))
        with pytest.raises(RaftStorageFailed) as failed:
            s.sync()
    assert failed.value.errno == err and isinstance(failed.value, OSError)
    assert len(told) == 1 and told[0].startswith(f"a write or fsync of {s.path} failed")
    assert os.strerror(err) in told[0] and s.failed == told[0]
    for again in (s.sync, lambda: s.save(None, ents(5, 5), None)):
        with pytest.raises(RaftStorageFailed, match="refuses writes: a write or fsync"):
            again()
    assert len(told) == 1
    assert reopen(s).load().entries in (ents(1, 2), ents(1, 4))  # a restart recovers


def test_a_rewrite_that_fails_after_the_batchs_fsync_fails_the_storage(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC in the rewrite's temp file, after the batch was fsynced: the storage is failed (not
    "closed", not a raw OSError that leaves it half-usable), the owner is told, and what the
    fsync made durable is there at the next start."""
    s = FileRaftStorage(str(tmp_path), VOTERS, compact_bytes=0)
    told: list[str] = []
    s.on_failure = told.append
    s.save(HardState(term=1, commit=8), ents(1, 8), None)
    s.sync()
    s.save(HardState(term=1, commit=10), ents(9, 10), snap(8, 1))  # the snapshot file is written here

    def enospc(path: str, data: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as mp:
        mp.setattr(raftlog, "write_atomically", enospc)
        with pytest.raises(RaftStorageFailed) as failed:
            s.sync()
    assert failed.value.errno == errno.ENOSPC
    assert told == [s.failed] and s.failed.startswith(f"rewriting {s.path} from its snapshot failed")
    with pytest.raises(RaftStorageFailed, match="refuses writes: rewriting"):
        s.sync()
    with pytest.raises(RaftStorageFailed, match="refuses writes: rewriting"):
        s.save(None, ents(11, 11), None)
    s.close()
    back = FileRaftStorage(str(tmp_path), VOTERS).load()
    assert back.snapshot.meta.index == 8 and back.entries == ents(9, 10)
    assert back.hard_state == HardState(term=1, commit=10)


def test_a_snapshot_file_that_cannot_be_written_in_save_fails_the_storage(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = FileRaftStorage(str(tmp_path), VOTERS)
    told: list[str] = []
    s.on_failure = told.append
    s.save(HardState(term=1), ents(1, 3), None)
    s.sync()

    def enospc(path: str, data: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as mp:
        mp.setattr(raftlog, "write_atomically", enospc)
        with pytest.raises(RaftStorageFailed):
            s.save(HardState(term=2), [], snap(9, 2))  # a leader's snapshot: its file in save()
    assert len(told) == 1 and "writing a snapshot file" in told[0] and "No space left" in told[0]
    with pytest.raises(RaftStorageFailed, match="refuses writes"):
        s.sync()


@needs_proc
def test_a_failed_sync_of_a_background_snapshots_marker_tells_the_owner(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s, later = _compacting(tmp_path)
    told: list[str] = []
    s.on_failure = told.append
    s.save(None, [], snap(6, 1))
    s.sync()
    monkeypatch.setattr(os, "fsync", _failing_on(s.path, errno.EIO, os.fsync))
    later.run()  # the file is written (its own fsyncs pass), the marker's sync fails
    assert len(told) == 1 and "a write or fsync" in told[0]
    with pytest.raises(RaftStorageFailed):
        s.sync()


@needs_proc
def test_realnets_disk_with_an_owner_neither_raises_nor_vouches_after_a_failure(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With an owner's on_failure the disk does not raise into the Ready loop (where a timer would
    swallow it): it tells the owner, and on_durable withholds what waited for the batch."""
    told: list[str] = []
    disk = RaftLogDisk(FileRaftStorage(str(tmp_path), VOTERS), lambda: 0.0, told.append)
    disk.save(HardState(term=1), ents(1, 1), None)
    disk.sync()
    ran: list[int] = []
    disk.on_durable(lambda: ran.append(1))
    assert ran == [1]
    monkeypatch.setattr(os, "fsync", _failing_on(disk.log.path, errno.EIO, os.fsync))
    disk.save(HardState(term=1), ents(2, 2), None)
    disk.sync()  # no exception
    disk.on_durable(lambda: ran.append(2))
    assert ran == [1] and len(told) == 1 and disk.failed == told[0]
    disk.save(None, ents(3, 3), None)  # refused by the log, quietly: the owner was told
    disk.sync()
    assert len(told) == 1 and ran == [1]
    bare = RaftLogDisk(FileRaftStorage(str(tmp_path / "bare"), VOTERS), lambda: 0.0)  # no owner: raises
    bare.save(HardState(term=1), ents(1, 1), None)
    monkeypatch.setattr(os, "fsync", _failing_on(bare.log.path, errno.EIO, os.fsync))
    with pytest.raises(RaftStorageFailed):
        bare.sync()


def _settings(*argv: str) -> realnode.Settings:
    return load_settings(realnode.build_parser().parse_args(list(argv)))


async def _until(cond: Any, what: str, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def _put(port: int, key: str, value: bytes) -> bytes:
    """A PUT on a fresh connection: everything the node sent back before it closed the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"PUT /kv/{key} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(value)}\r\n"
                 "Connection: close\r\n\r\n".encode() + value)
    try:
        return await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()


@needs_proc
@pytest.mark.parametrize(("call", "err"), [("fsync", errno.EIO), ("write", errno.ENOSPC)])
def test_a_node_whose_raft_log_fails_a_write_or_fsync_stops_with_status_1(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        call: str, err: int) -> None:
    """The zombie of the audit: the group's sync raised inside a timer, which swallowed it; the
    node went on, busy forever, answering 504. Now it stops (CRITICAL, exit status 1) and the
    write whose batch failed is not acknowledged."""
    s = _settings("--id", "solo", "--port", "0", "--peer-port", "0", "--data-dir", str(tmp_path))
    storage = LogStorage(tmp_path)
    log_path = str(tmp_path / RAFT_DIR / f"raft-{GROUP}.log")

    async def main() -> tuple[int | str, realnode.Parts, bytes, bytes]:
        sockets = realnode.bind(s)
        assert sockets is not None
        parts = realnode.build(s, storage, sockets, asyncio.Event())
        task = asyncio.create_task(realnode.run(s, parts, sockets))
        await _until(lambda: parts.http_server is not None, "the HTTP server")
        parts.node.form_group(["solo"])
        group = parts.node.replica
        assert group is not None
        await _until(lambda: group.raft.role == LEADER, "the one voter to lead")
        ok = await _put(sockets.http_port, "ok", b"1")
        monkeypatch.setattr(os, call, _failing_on(log_path, err, getattr(os, call)))
        lost = await _put(sockets.http_port, "lost", b"2")
        try:
            status: int | str = await asyncio.wait_for(asyncio.shield(task), 30)
        except TimeoutError:  # a zombie: stopped here, and the test fails below
            parts.stop.set()
            await asyncio.wait_for(task, 30)
            status = "still running"
        monkeypatch.undo()
        return status, parts, ok, lost

    with caplog.at_level(logging.INFO):
        status, parts, ok, lost = asyncio.run(main())
    assert ok.startswith(b"HTTP/1.1 204"), ok
    assert status == realnode.EXIT_STORAGE == 1
    # never acknowledged; answered shutting_down (outcome unknown), not the zombie's forward_timeout
    assert b" 204 " not in lost and b"forward_timeout" not in lost, lost
    assert parts.storage_failed.startswith(f"a write or fsync of {log_path} failed") and os.strerror(err) in parts.storage_failed
    critical = [r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL]
    assert critical == [f"{parts.storage_failed}; stopping, so that a restart recovers from what is on disk"]
    assert "the node keeps running" not in caplog.text
    back = FileRaftStorage(str(tmp_path / RAFT_DIR), [], create=False).load()  # a restart recovers
    assert back.snapshot.meta.conf.voters == ("solo",) and back.hard_state.term >= 1


@needs_proc
def test_a_raft_log_that_fails_while_the_node_is_built_stops_the_start_with_status_1(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str]) -> None:
    storage = LogStorage(tmp_path)
    storage.put(GROUP_KEY, json.dumps({"voters": ["solo"], "learners": []}).encode())
    storage.sync()
    FileRaftStorage(str(tmp_path / RAFT_DIR), ["solo"]).close()  # formed, not yet its first sync
    path = str(tmp_path / RAFT_DIR / f"raft-{GROUP}.log")
    monkeypatch.setattr(os, "fsync", _failing_on(path, errno.EIO, os.fsync))
    s = _settings("--id", "solo", "--port", "0", "--peer-port", "0", "--data-dir", str(tmp_path))
    with caplog.at_level(logging.INFO):
        assert asyncio.run(_serve(s, storage)) == realnode.EXIT_STORAGE
    assert f"a write or fsync of {path} failed" in caplog.text and "stopping" in caplog.text
    assert "ready id=" not in capsys.readouterr().err


async def _serve(s: realnode.Settings, storage: LogStorage) -> int | str:
    """``serve``'s exit status, or "still running" once it has run for 10 s (then stopped)."""
    stop = asyncio.Event()
    task = asyncio.create_task(realnode.serve(s, storage, stop))
    try:
        return await asyncio.wait_for(asyncio.shield(task), 10)
    except TimeoutError:
        stop.set()
        await asyncio.wait_for(task, 30)
        return "still running"


def _remembering(tmp_path: Path) -> LogStorage:
    storage = LogStorage(tmp_path)
    storage.put(GROUP_KEY, json.dumps({"voters": ["solo"], "learners": []}).encode())
    storage.sync()
    return storage


def _serve_refused(tmp_path: Path, storage: LogStorage, capsys: pytest.CaptureFixture[str]) -> str:
    s = _settings("--id", "solo", "--port", "0", "--peer-port", "0", "--data-dir", str(tmp_path))
    assert asyncio.run(_serve(s, storage)) == realnode.EXIT_CONFIG
    err = capsys.readouterr().err
    assert "Traceback" not in err and "ready id=" not in err, err
    return err


def test_a_remembered_groups_missing_log_is_refused_not_recreated(tmp_path: Path) -> None:
    d = tmp_path / RAFT_DIR
    with pytest.raises(RaftLogMissing, match=r"raft-0\.log is missing, but this node is a member"):
        FileRaftStorage(str(d), VOTERS, create=False)
    assert not d.exists()  # nothing made
    d.mkdir()
    with pytest.raises(RaftLogMissing):
        FileRaftStorage(str(d), VOTERS, create=False)
    assert list(d.iterdir()) == []
    opener = RaftOpener(tmp_path, lambda: 0.0)
    opener.must_exist = True
    with pytest.raises(RaftLogMissing):
        opener(list(VOTERS), [])
    opener.must_exist = False  # forming a new group creates it
    assert opener(list(VOTERS), []).load().snapshot.meta.conf.voters == VOTERS
    opener.close()
    assert (d / "raft-0.log").read_bytes() == MAGIC


@pytest.mark.parametrize("what", ["no raft directory", "no log file"])
def test_a_node_that_remembers_a_group_does_not_start_without_its_log(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], what: str) -> None:
    storage = _remembering(tmp_path)
    if what == "no log file":
        (tmp_path / RAFT_DIR).mkdir()
    err = _serve_refused(tmp_path, storage, capsys)
    path = tmp_path / RAFT_DIR / f"raft-{GROUP}.log"
    assert f"The Raft log {path} is missing, but this node is a member of a replicated group" in err, err
    assert ("The node does not start without its Raft log; restore the data directory, or remove it and "
            "add the node again (add-node).") in err
    assert not path.exists()  # not recreated empty


def test_the_raft_directory_is_fsynced_into_the_data_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real = realruntime.fsync_dir

    def recording(directory: str) -> None:
        synced.append(os.path.abspath(directory))
        real(directory)

    monkeypatch.setattr(raftlog, "fsync_dir", recording)
    monkeypatch.setattr(realruntime, "fsync_dir", recording)  # write_atomically's (the log file)
    RaftOpener(tmp_path, lambda: 0.0)(list(VOTERS), []).close()
    raft_dir = str(tmp_path / RAFT_DIR)
    assert synced[:2] == [str(tmp_path), raft_dir]  # raft/ made into the data dir, the log into raft/
    synced.clear()
    RaftOpener(tmp_path, lambda: 0.0)(list(VOTERS), []).close()  # both there: nothing to fsync
    assert synced == []


@pytest.mark.parametrize("what", ["raft is a file", "the log is a directory", "snapshot missing",
                                  "snapshot of the wrong shape", "commit beyond the entries"])
def test_an_unusable_raft_directory_stops_the_start_with_a_sentence_not_a_traceback(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], what: str) -> None:
    storage = _remembering(tmp_path)
    d = tmp_path / RAFT_DIR
    log_path = d / f"raft-{GROUP}.log"
    if what == "raft is a file":
        d.write_bytes(b"x")
        want = f"Cannot open the Raft log {log_path}: {d} is not a directory."
    elif what == "the log is a directory":
        log_path.mkdir(parents=True)
        want = f"Cannot open the Raft log {log_path}: {log_path} is a directory, not a file."
    elif what == "commit beyond the entries":
        # no writer leaves this (a HardState follows its batch's entries, so a torn tail takes
        # it along): a truncation record after it stands for damage the checksums cannot see
        from realnet.recordfile import encode_record

        s = FileRaftStorage(str(d), ["solo"])
        s.save(HardState(term=1, vote="solo", commit=3), ents(1, 3), None)
        s.sync()
        s.close()
        with open(log_path, "ab") as f:
            f.write(encode_record(raftlog.K_TRUNCATE, 3))
        want = (f"raft log {log_path} records commit index 3 but holds entries only up to 2: entries the "
                "group committed are missing.")
    else:
        s = FileRaftStorage(str(d), ["solo"])
        s.save(HardState(term=1), ents(1, 4), snap(2, 1, voters=("solo",)))
        s.sync()
        s.close()
        snap_file = d / f"raft-{GROUP}.snap-{2:020d}"
        if what == "snapshot missing":
            snap_file.unlink()
            want = f"raft log {log_path} names snapshot 2 but {snap_file} is missing."
        else:
            from realnet.recordfile import encode_record

            snap_file.write_bytes(MAGIC + encode_record(raftlog.K_SNAPFILE, [2, 1, ["solo"]]))
            want = f"raft snapshot {snap_file} holds a record of the wrong shape"
    with pytest.raises(RaftLogUnusable):
        if what == "commit beyond the entries":  # the storage loads it; the node's opener refuses
            RaftOpener(tmp_path, lambda: 0.0)(["solo"], [])
        else:
            FileRaftStorage(str(d), ["solo"], create=False)
    err = _serve_refused(tmp_path, storage, capsys)
    assert f"storelab node: {want}" in err, err
    assert ". The node does not start " in err and "is missing The node" not in err, err


# --- a learner's snapshot batch torn at a restart: applied never above commit ---------------------


def _learner_group(disk: RaftLogDisk) -> Any:
    """The node's replicated group (kvcore.replica) over ``disk``, built as a restart builds it."""
    from kvcore.config import NodeConfig
    from kvcore.metrics import NodeStats
    from kvcore.replica import ReplicaConfig, ReplicaGroup
    from kvcore.runtime import FakeRuntime
    from kvcore.store import LocalStore

    return ReplicaGroup("d", FakeRuntime("d"), disk, NodeConfig(), ReplicaConfig(), LocalStore(),
                        lambda dst, msg: None, NodeStats())


def test_a_learners_snapshot_batch_torn_at_any_byte_restarts_with_applied_at_most_commit(tmp_path: Path) -> None:
    """The audit's "applied above the commit index" on a learner killed during ``add-node``: the
    leader's snapshot reaches a learner (formed with an empty configuration) as one batch, its
    marker then the HardState recording commit 10. A kill that tears the batch can keep the
    marker and lose the HardState (the older one says commit 0). At every byte of that batch the
    restarted group (built on the log exactly as ``realnet.node`` builds it) reports ``applied``
    (its state machine's, from the snapshot) at most ``commit`` (the core's: the HardState's,
    raised to the snapshot's index, which holds only committed entries); with the marker kept,
    both are 10."""
    from kvcore.replica.machine import StateMachine

    image = StateMachine().image()
    base = FileRaftStorage(str(tmp_path / "probe"), ())
    base.save(HardState(term=2), [], None)
    base.sync()
    before = base.log_size()
    base.save(HardState(term=2, commit=10), ents(11, 12, term=2), snap(10, 2, data=image))
    batch = len(base._buf)
    base.close()
    seen_marker_only = False
    for torn in range(batch + 1):
        d = tmp_path / f"torn-{torn}"
        s = FileRaftStorage(str(d), ())
        s.save(HardState(term=2), [], None)
        s.sync()
        assert s.log_size() == before
        s.save(HardState(term=2, commit=10), ents(11, 12, term=2), snap(10, 2, data=image))
        s.crash_for_test(torn=torn)
        reopened = FileRaftStorage(str(d), (), create=False)  # a group the node remembers
        stored = reopened.load()
        group = _learner_group(RaftLogDisk(reopened, time.monotonic))
        info = group.info()
        assert info["applied"] <= info["commit"] <= info["last_index"], (torn, info)
        log = group.raft.log
        assert log.snapshot.meta.index <= log.applied <= log.committed <= log.last_index(), torn
        if stored.snapshot.meta.index == 10:
            assert (info["applied"], info["commit"]) == (10, 10), (torn, info)
            assert info["voters"] == list(VOTERS)  # the configuration came with the snapshot
            seen_marker_only |= stored.hard_state.commit == 0
        else:
            assert (info["applied"], info["commit"]) == (0, 0), (torn, info)
        reopened.close()
    assert seen_marker_only  # some tear kept the marker and lost the HardState after it
