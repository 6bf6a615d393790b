"""The node's storage log (realnet.kvlog.LogStorage): group commit, recovery, take-over, failure.

Group commit: the writes of one loop turn share one fsync, and nothing that waits for them
(``on_durable``) runs before it. Recovery: what was flushed comes back, what was not is gone, a
torn tail is dropped and a hole is refused. A data directory of the file-per-key layout is taken
over without losing a key, even when the take-over is cut short. A failed fsync answers nothing
that waited for it and refuses later writes.
"""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path

import pytest

from realnet import kvlog
from realnet.kvlog import MAGIC, LogStorage, StorageFailed, StorageLogCorrupt
from realnet.runtime import FileStorage, open_storage


def test_writes_read_back_and_survive_a_clean_close(tmp_path: Path) -> None:
    s = LogStorage(tmp_path)
    s.put("kv:01", b"a")
    s.put("member:n2", b"x" * 3000)
    s.put("kv:01", b"b")
    s.put("kv:02", b"c")
    s.delete("kv:02")
    s.delete("never")
    assert s.get("kv:01") == b"b" and s.get("kv:02") is None
    assert s.items("kv:") == [("kv:01", b"b")]
    s.close()
    again = LogStorage(tmp_path)
    assert again.items("") == [("kv:01", b"b"), ("member:n2", b"x" * 3000)]
    again.close()
    assert type(open_storage(tmp_path)) is LogStorage


def test_what_was_not_flushed_is_lost_in_a_crash_and_what_was_is_kept(tmp_path: Path) -> None:
    s = LogStorage(tmp_path)
    s.put("a", b"1")
    s.sync()  # outside a running loop: flushed now
    assert s.stats["fsyncs"] == 1
    s.put("a", b"2")
    s.put("b", b"3")
    s.crash_for_test()
    assert LogStorage(tmp_path).items("") == [("a", b"1")]


@pytest.mark.parametrize("torn", [1, 7, 12, 20])
def test_a_torn_tail_is_dropped_and_the_log_goes_on(tmp_path: Path, torn: int) -> None:
    s = LogStorage(tmp_path)
    s.put("a", b"1")
    s.sync()
    s.put("b", b"2" * 30)
    s.crash_for_test(torn=torn)  # part of the unflushed record reached the file
    again = LogStorage(tmp_path)
    assert again.items("") == [("a", b"1")]
    assert again.stats["torn_bytes_dropped"] == torn
    again.put("c", b"3")
    again.close()
    assert LogStorage(tmp_path).items("") == [("a", b"1"), ("c", b"3")]


def test_a_damaged_record_followed_by_valid_ones_is_refused(tmp_path: Path) -> None:
    s = LogStorage(tmp_path)
    for i in range(5):
        s.put(f"k{i}", b"v" * 40)
        s.sync()
    s.close()
    path = tmp_path / kvlog.LOG_NAME
    data = bytearray(path.read_bytes())
    data[len(MAGIC) + 70] ^= 0xFF  # inside the second record
    path.write_bytes(bytes(data))
    with pytest.raises(StorageLogCorrupt, match="corrupt at offset"):
        LogStorage(tmp_path)
    path.write_bytes(b"not a log")
    with pytest.raises(StorageLogCorrupt, match="magic"):
        LogStorage(tmp_path)


def test_the_writes_of_one_loop_turn_share_one_fsync_and_wait_for_it(tmp_path: Path) -> None:
    async def body() -> tuple[list[str], LogStorage]:
        s = LogStorage(tmp_path)
        seen: list[str] = []
        for i in range(20):
            s.put(f"kv:{i:02}", b"v")
            s.sync()
            s.on_durable(lambda i=i: seen.append(f"durable {i} at {s.stats['fsyncs']}"))  # type: ignore[misc]
        seen.append(f"turn ends at {s.stats['fsyncs']}")
        await asyncio.sleep(0)
        seen.append(f"next turn at {s.stats['fsyncs']}")
        s.on_durable(lambda: seen.append("nothing pending: at once"))
        return seen, s

    seen, s = asyncio.run(body())
    assert seen[0] == "turn ends at 0"  # nothing answered inside the turn
    assert seen[1:21] == [f"durable {i} at 1" for i in range(20)]
    assert seen[21:] == ["next turn at 1", "nothing pending: at once"]
    assert s.stats["fsyncs"] == 1 and s.stats["max_flush_records"] == 20
    s.crash_for_test()
    assert len(LogStorage(tmp_path).items("kv:")) == 20


def test_on_durable_asks_for_a_flush_even_without_a_sync(tmp_path: Path) -> None:
    async def body() -> list[str]:
        s = LogStorage(tmp_path)
        seen: list[str] = []
        s.put("a", b"1")
        s.on_durable(lambda: seen.append("durable"))
        for _ in range(3):
            await asyncio.sleep(0)
        s.crash_for_test()
        return seen

    assert asyncio.run(body()) == ["durable"]
    assert LogStorage(tmp_path).items("") == [("a", b"1")]


def test_a_failed_fsync_answers_nothing_that_waited_and_refuses_later_writes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = LogStorage(tmp_path)
    s.put("a", b"1")
    s.sync()
    seen: list[str] = []
    s.put("b", b"2")

    def broken(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(kvlog.os, "fsync", broken)

    async def body() -> None:
        s.on_durable(lambda: seen.append("acknowledged"))
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    asyncio.run(body())  # the flush failed inside the loop: logged, not raised into it
    assert seen == []
    with pytest.raises(StorageFailed, match="refuses writes"):
        s.put("c", b"3")
    s.on_durable(lambda: seen.append("late"))
    assert seen == []
    monkeypatch.undo()
    s.crash_for_test()  # the process that failed exits
    assert LogStorage(tmp_path).get("a") == b"1"  # a restart recovers what was synced


def test_the_log_is_rewritten_from_the_image_once_it_holds_mostly_old_values(tmp_path: Path) -> None:
    s = LogStorage(tmp_path, compact_bytes=4096)
    for round_ in range(50):
        for i in range(10):
            s.put(f"k{i}", bytes([round_]) * 100)
        s.delete("gone")
        s.put("gone", b"x")
        s.delete("gone")
        s.sync()
    assert s.stats["compactions"] >= 5
    assert s.log_size() < 4096 * 2
    assert os.path.getsize(tmp_path / kvlog.LOG_NAME) == s.log_size()
    want = [(f"k{i}", bytes([49]) * 100) for i in range(10)]
    assert s.items("") == want
    s.put("after", b"y")
    s.crash_for_test()  # unflushed: lost, the compacted log intact
    assert LogStorage(tmp_path).items("") == want


def test_a_file_per_key_directory_is_taken_over_without_losing_a_key(tmp_path: Path) -> None:
    old = FileStorage(tmp_path)
    long_key = "kv:" + "ab" * 300  # stored under a hashed name
    old.put("node_id", b"n7")
    old.put(long_key, b"long")
    old.put("member:n2", b"m")
    (tmp_path / "x.val.tmp").write_bytes(b"half")  # a write that never got renamed
    s = LogStorage(tmp_path)
    assert s.items("") == sorted([("node_id", b"n7"), (long_key, b"long"), ("member:n2", b"m")])
    assert sorted(os.listdir(tmp_path)) == [kvlog.LOCK_NAME, kvlog.LOG_NAME]
    s.close()
    assert LogStorage(tmp_path).get(long_key) == b"long"


def test_a_take_over_cut_short_keeps_the_log_and_removes_the_leftovers(tmp_path: Path) -> None:
    old = FileStorage(tmp_path)
    old.put("a", b"1")
    old.put("b", b"2")
    LogStorage(tmp_path).close()
    FileStorage(tmp_path).put("a", b"1")  # as if the old files' removal had not happened
    again = LogStorage(tmp_path)
    assert again.items("") == [("a", b"1"), ("b", b"2")]  # the log holds them all
    assert sorted(os.listdir(tmp_path)) == [kvlog.LOCK_NAME, kvlog.LOG_NAME]


def test_per_key_files_that_disagree_with_the_log_refuse_the_start_and_lose_nothing(tmp_path: Path) -> None:
    """A downgrade (a storelab that knows only files) wrote beside the log, then an upgrade: the
    files may be newer than the log, so neither is dropped for the other."""
    s = LogStorage(tmp_path)
    s.put("a", b"from the log")
    s.close()
    FileStorage(tmp_path).put("a", b"from a downgrade")
    FileStorage(tmp_path).put("z", b"only in the files")
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(kvlog.StorageLayoutConflict, match=r"disagree with it \('a', 'z'\).*move storage.log aside"):
        LogStorage(tmp_path)
    assert sorted(os.listdir(tmp_path)) == before  # nothing removed
    assert FileStorage(tmp_path).get("a") == b"from a downgrade"
    (tmp_path / kvlog.LOG_NAME).rename(tmp_path / "storage.log.aside")  # the operator keeps the files
    assert LogStorage(tmp_path).items("") == [("a", b"from a downgrade"), ("z", b"only in the files")]


def test_bad_keys_are_refused_and_a_closed_storage_takes_no_writes(tmp_path: Path) -> None:
    s = LogStorage(tmp_path)
    with pytest.raises(ValueError):
        s.put("", b"x")
    s.close()
    with pytest.raises(StorageFailed, match="closed"):
        s.put("a", b"1")
    s.close()  # twice is fine


def test_one_process_per_directory_and_the_lock_goes_with_the_storage(tmp_path: Path) -> None:
    s = LogStorage(tmp_path)
    s.put("a", b"1")
    with pytest.raises(OSError, match="storage log is locked") as refused:
        LogStorage(tmp_path)
    assert refused.value.errno == errno.EBUSY
    assert s.get("a") == b"1"
    s.put("b", b"2")  # the refused one changed nothing
    s.close()
    again = LogStorage(tmp_path)  # closed: free
    assert again.items("") == [("a", b"1"), ("b", b"2")]
    again.crash_for_test()  # died: free too
    LogStorage(tmp_path).close()


# --- compaction inside a running loop: in steps, its temp file off the loop -----------------------


class Later:
    """A ``background`` that keeps the temp file's write until the test runs it."""

    def __init__(self) -> None:
        self.jobs: list[tuple[object, object]] = []

    def __call__(self, work, done) -> None:  # type: ignore[no-untyped-def]
        self.jobs.append((work, done))

    def run(self, fail: bool = False) -> None:
        jobs, self.jobs = self.jobs, []
        for work, done in jobs:
            if fail:
                done(OSError(errno.ENOSPC, "No space left on device"))  # type: ignore[operator]
                continue
            work()  # type: ignore[operator]
            done(None)  # type: ignore[operator]


async def _turns(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def _grown(s: LogStorage, model: dict[str, bytes], rounds: int) -> None:
    """Overwrite the same keys until the log is mostly old values (and flush)."""
    for r in range(rounds):
        for i in range(20):
            s.put(f"k{i:02}", bytes([r % 256]) * 60)
            model[f"k{i:02}"] = bytes([r % 256]) * 60
        s.flush()


def _compacting(tmp_path: Path, chunk: int, later: Later | None = None) -> tuple[LogStorage, dict[str, bytes]]:
    """Inside a running loop: a storage whose log grew to mostly old values, so that its last
    flush froze the image for a compaction, and the writes it holds (the model)."""
    s = LogStorage(tmp_path, compact_bytes=4096, compact_chunk=chunk)
    if later is not None:
        s.background = later
    model: dict[str, bytes] = {}
    _grown(s, model, 5)
    return s, model


def test_a_compaction_in_a_running_loop_is_built_in_steps_and_loses_no_write(tmp_path: Path) -> None:
    """Writes while the image is encoded (to frozen keys and new ones, deletes too) and while the
    temp file is written all survive the switch, and a crash after it."""
    later = Later()

    async def body() -> tuple[LogStorage, dict[str, bytes]]:
        s, model = _compacting(tmp_path, 3, later)
        assert s.stats["compaction_steps"] == 0 and s._rw is not None  # frozen, nothing encoded yet
        await _turns(2)
        s.put("k00", b"changed while encoding")  # a frozen key, encoded later with its old value
        s.delete("k19")
        s.put("new", b"born while encoding")
        model.update({"k00": b"changed while encoding", "new": b"born while encoding"})
        del model["k19"]
        s.flush()
        await _turns(20)
        assert s.stats["compaction_steps"] == 7 and len(later.jobs) == 1  # 20 keys, 3 a turn
        s.put("k01", b"while the file is written")
        model["k01"] = b"while the file is written"
        s.flush()
        old_size = s.log_size()
        later.run()
        assert s.stats["compactions"] == 1 and s.log_size() < old_size
        assert not (tmp_path / (kvlog.LOG_NAME + ".tmp")).exists()
        s.put("after", b"the switch")
        model["after"] = b"the switch"
        s.flush()
        return s, model

    s, model = asyncio.run(body())
    assert dict(s.items("")) == model
    s.crash_for_test()
    assert dict(LogStorage(tmp_path).items("")) == model


def test_a_crash_while_the_temp_file_is_written_keeps_the_old_log(tmp_path: Path) -> None:
    later = Later()

    async def body() -> tuple[LogStorage, dict[str, bytes]]:
        s, model = _compacting(tmp_path, 50, later)
        await _turns(3)
        assert len(later.jobs) == 1
        later.jobs[0][0]()  # type: ignore[operator]  # the temp file reaches the disk, then the process dies
        return s, model

    s, model = asyncio.run(body())
    assert (tmp_path / (kvlog.LOG_NAME + ".tmp")).exists()
    s.crash_for_test()
    again = LogStorage(tmp_path)
    assert dict(again.items("")) == model and again.stats["compactions"] == 0
    assert not (tmp_path / (kvlog.LOG_NAME + ".tmp")).exists()


def test_a_failed_compaction_is_counted_and_tried_again_later(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    later = Later()

    async def body() -> tuple[LogStorage, dict[str, bytes]]:
        s, model = _compacting(tmp_path, 50, later)
        await _turns(3)
        later.run(fail=True)
        assert s.stats["compaction_failures"] == 1 and s._rw is None
        _grown(s, model, 2)  # the log is still long, but not longer by compact_bytes: no retry yet
        await _turns(3)
        assert not later.jobs
        _grown(s, model, 10)
        await _turns(3)
        later.run()
        assert s.stats["compactions"] == 1
        return s, model

    with caplog.at_level("WARNING", logger="realnet.kvlog"):
        s, model = asyncio.run(body())
    assert "No space left" in caplog.text
    s.crash_for_test()
    assert dict(LogStorage(tmp_path).items("")) == model


def test_a_compaction_in_a_worker_thread_switches_the_log_on_the_loop(tmp_path: Path) -> None:
    """The storage's own background: a thread writes the temp file while the loop goes on."""
    async def body() -> tuple[LogStorage, dict[str, bytes]]:
        s, model = _compacting(tmp_path, 7)
        for _ in range(2000):  # bounded: 2000 turns of at least 5 ms
            if s.stats["compactions"]:
                break
            s.put("busy", b"x")
            s.flush()
            model["busy"] = b"x"
            await asyncio.sleep(0.005)
        return s, model

    s, model = asyncio.run(body())
    assert s.stats["compactions"] == 1 and s.stats["compaction_steps"] >= 3
    s.close()
    assert dict(LogStorage(tmp_path).items("")) == model


def test_a_compacted_log_holds_a_prefix_of_the_writes_never_one_not_flushed(tmp_path: Path) -> None:
    """Copy on write: a frozen key changed while the image is encoded is encoded with its value
    at the freeze, so a change that was never flushed is not in the new log either (a crash
    recovers what was flushed, and nothing after it)."""
    later = Later()

    async def body() -> tuple[LogStorage, dict[str, bytes]]:
        s, model = _compacting(tmp_path, 3, later)
        await _turns(1)  # k00-k02 encoded; k18 and k19 not yet
        s.put("k18", b"never flushed")
        s.delete("k19")
        await _turns(20)
        later.run()
        assert s.stats["compactions"] == 1 and s.get("k18") == b"never flushed"
        return s, model

    s, model = asyncio.run(body())
    s.crash_for_test()  # the put and the delete were buffered only
    assert dict(LogStorage(tmp_path).items("")) == model


def test_a_failed_rename_keeps_the_old_log_and_a_failed_switch_stops_the_storage(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before the rename the old log is the log (a failure is a failed compaction, retried
    later); after it the new file is, and a rename that cannot be made durable (the directory's
    fsync fails) leaves the log in doubt: the storage fails as on a failed fsync."""
    later = Later()
    failures: list[str] = []

    async def body(stage: str) -> tuple[LogStorage, dict[str, bytes]]:
        s, model = _compacting(tmp_path / stage, 50, later)
        s.on_failure = failures.append
        await _turns(3)

        def broken(*a: object) -> None:
            raise OSError(errno.EIO, "Input/output error")

        monkeypatch.setattr(kvlog.os if stage == "rename" else kvlog, "replace" if stage == "rename" else "fsync_dir",
                            broken)
        later.run()
        monkeypatch.undo()
        return s, model

    s, model = asyncio.run(body("rename"))
    assert s.stats["compaction_failures"] == 1 and not failures
    s.put("after", b"1")
    s.flush()  # the old log takes it
    model["after"] = b"1"
    s.crash_for_test()
    assert dict(LogStorage(tmp_path / "rename").items("")) == model

    s, model = asyncio.run(body("switch"))
    assert failures and "compacted copy failed" in failures[0]
    with pytest.raises(StorageFailed, match="refuses writes"):
        s.put("after", b"1")
    s.close()
    assert dict(LogStorage(tmp_path / "switch").items("")) == model  # the renamed copy holds it all
