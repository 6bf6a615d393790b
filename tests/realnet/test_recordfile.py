"""realnet.recordfile: the torn-write rule is bounded to the last batch, and batches are bounded.

An audit flipped one bit in a synced record whose value held 512 zero bytes: the zero sector
made the reader take it for a torn write of the last batch, and it dropped that record and every
acknowledged one after it. A torn write can only damage the batch being written at the power
loss, and a batch is at most MAX_BATCH bytes (write_synced), so a damaged record further back
than that is corruption: refused with a sentence, nothing truncated.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from realnet import recordfile
from realnet.kvlog import LogStorage, StorageLogCorrupt
from realnet.recordfile import HEADER, MAX_BATCH, encode_record, write_synced


def _flip_in_zeros(path: Path, zeros: int) -> bytes:
    data = bytearray(path.read_bytes())
    at = data.find(bytes(zeros)) + zeros // 2
    data[at] ^= 0x01
    path.write_bytes(bytes(data))
    return bytes(data)


def test_a_flipped_bit_in_a_synced_record_with_a_zero_sector_is_refused_not_truncated(tmp_path: Path) -> None:
    s = LogStorage(tmp_path)
    s.put("a", b"x" * 10)
    s.put("zeros", bytes(1500))  # a value with aligned 512-byte runs of zeros
    s.sync()
    s.flush()
    for i in range((MAX_BATCH // 60_000) + 8):  # acknowledged writes, over one batch's worth
        s.put(f"later{i}", b"v" * 60_000)
        s.sync()
        s.flush()
    s.close()
    log = tmp_path / "storage.log"
    damaged = _flip_in_zeros(log, 1500)
    with pytest.raises(StorageLogCorrupt, match="is corrupt at offset"):
        LogStorage(tmp_path)
    assert log.read_bytes() == damaged  # nothing truncated


def test_the_same_damage_in_the_last_batch_is_still_a_torn_tail(tmp_path: Path) -> None:
    """Within the last MAX_BATCH bytes a zeroed sector is taken for a torn write, as before
    (etcd's isTornEntry): the power-loss case the rule exists for."""
    s = LogStorage(tmp_path)
    s.put("a", b"x" * 10)
    s.sync()
    s.flush()
    s.put("zeros", bytes(1500))
    s.put("b", b"unsynced")
    s.sync()
    s.flush()
    s.close()
    _flip_in_zeros(tmp_path / "storage.log", 1500)
    again = LogStorage(tmp_path)
    assert again.get("a") == b"x" * 10 and again.get("b") is None


def test_write_synced_cuts_batches_at_records_and_fsyncs_each(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    records = [encode_record(b"P", [i, b"v" * n]) for i, n in
               enumerate([100, MAX_BATCH // 2, MAX_BATCH // 2, 10, MAX_BATCH + 5, 7, 3])]
    data = b"".join(records)
    sizes: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        sizes.append(os.fstat(fd).st_size)
        real_fsync(fd)

    monkeypatch.setattr(recordfile.os, "fsync", fsync)
    path = tmp_path / "log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        assert write_synced(fd, data) == len(sizes) == 4  # [0, 1] [2, 3] [4 alone] [5, 6]
    finally:
        os.close(fd)
    assert path.read_bytes() == data
    ends = set()
    off = 0
    for r in records:
        off += len(r)
        ends.add(off)
    assert set(sizes) <= ends  # every fsync at a record boundary
    starts = [0, *sizes[:-1]]
    for lo, hi in zip(starts, sizes, strict=True):
        one_record = HEADER.size + HEADER.unpack_from(data, lo)[0] == hi - lo
        assert hi - lo <= MAX_BATCH or one_record
    # the common case: one write, one fsync
    sizes.clear()
    fd = os.open(tmp_path / "small", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        assert write_synced(fd, records[0]) == 1 and len(sizes) == 1
    finally:
        os.close(fd)


def test_a_compaction_outside_a_loop_that_cannot_write_keeps_the_old_log_usable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """At start (no loop) the log compacts at once: a failed write of its copy closed the live
    log first and raised a raw OSError out of flush (the storage then said it was closed)."""
    from realnet import kvlog

    s = LogStorage(tmp_path)
    s.compact_bytes = 4096
    for i in range(50):
        s.put(f"k{i % 5}", b"v" * 100 + str(i).encode())

    def full(path: str, parts: object) -> None:
        raise OSError(28, "No space left on device")

    from realnet import runtime

    monkeypatch.setattr(kvlog, "write_parts", full)
    monkeypatch.setattr(runtime, "write_parts", full)  # (write_atomically's, as it was used)
    s.sync()  # outside a loop: flushes now, and the log is over compact_bytes
    assert s.stats["compaction_failures"] == 1 and not (tmp_path / "storage.log.tmp").exists()
    monkeypatch.undo()
    s.put("after", b"ok")
    s.sync()
    s.close()
    again = LogStorage(tmp_path)
    assert again.get("after") == b"ok" and again.get("k4") == b"v" * 100 + b"49"


@pytest.mark.parametrize("how", ["unlink", "rmtree", "replace"])
def test_a_log_removed_or_replaced_while_the_node_runs_fails_the_storage(tmp_path: Path, how: str) -> None:
    """An audit removed a durable node's data directory while it ran: it went on answering 204,
    appending to an unlinked file, and started empty. Now the next flush fails the storage (the
    node stops, exit 1) and acknowledges nothing more."""
    import shutil

    from realnet.kvlog import StorageFailed

    data = tmp_path / "data"
    s = LogStorage(data)
    failures: list[str] = []
    s.on_failure = failures.append
    s.put("before", b"1")
    s.sync()
    s.flush()
    log = data / "storage.log"
    if how == "unlink":
        log.unlink()
    elif how == "rmtree":
        shutil.rmtree(data)
    else:
        log.rename(data / "elsewhere")
        log.write_bytes(log.with_name("elsewhere").read_bytes())
    s.put("after", b"2")
    with pytest.raises(StorageFailed):
        s.flush()
    assert failures and ("removed while the node ran" in failures[0] or "replaced" in failures[0]), failures
