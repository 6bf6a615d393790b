"""The node's storage on disk: one append-only log, group commit at the end of a loop turn.

Theory of operation
-------------------
:class:`LogStorage` is the :class:`kvcore.runtime.Storage` of a node started with ``--data-dir``
(what it keeps: ARCHITECTURE.md, "The boundary"; with ``durable = true`` the store itself). It
holds the whole image in memory (``get`` and ``items`` never touch the disk) and makes it durable
in one file, ``storage.log``: an 8-byte magic ``SLKV001\\n`` then checksummed records
(:mod:`realnet.recordfile`): ``P [key, value]`` a put, ``D key`` a delete.

**Writing: group commit**, as Redis's ``appendfsync always`` does before it answers. ``put`` and
``delete`` change the image and append a record to an in-process buffer, no system call.
``sync()`` asks for a flush: inside a running event loop one is scheduled for the end of the
current turn (``loop.call_soon``, once however many ask), outside one it happens at once. A flush
is one ``write`` and one ``fsync`` for everything buffered. ``on_durable(fn)`` runs ``fn`` once
everything written so far is durable: at once when nothing is buffered, else after the flush
(which it asks for). So the node answers the writes of one turn (every request one read from its
sockets brought) after one fsync between them, instead of two fsyncs per write (the file per key
this replaced: temp file, fsync, rename, fsync of the directory). ``stats`` counts puts,
deletes, fsyncs (one per flush that wrote), the records of the largest flush, compactions and torn bytes dropped.

A failed write or fsync leaves the file in an unknown state: as etcd does (and
:mod:`realnet.raftlog`), the storage then refuses every later write (:class:`StorageFailed`,
an ``OSError``) and runs no waiting callback, since what they wait for may not be durable. It
calls ``on_failure``: the node process stops (exit status 1, as etcd exits on a failed WAL sync),
so that clients whose answers waited see their connections close instead of waiting on, and a
restart recovers from what is on disk.

**Compaction.** After a flush, when the log is at least ``compact_bytes`` long and more than
twice what the image would take, the log is rewritten from the image (one ``P`` record per key)
atomically: ``storage.log.tmp``, fsync, rename, fsync of the directory. Outside a running loop
that happens at once. Inside one it does not stall the loop (a store of a million keys took
seconds): the image is *frozen* (the key list; from then on a put or delete first tells the
rewrite the value it replaces, copy on write) and encoded ``compact_chunk`` keys a loop turn;
the temp file (the frozen image, then every record flushed to the old log since the freeze) is
written and fsynced in a worker thread (``background``); back on the loop, the records flushed
meanwhile are appended to it and fsynced, and only then is it renamed over the log and the
appends switched to it. Replaying it gives what replaying the old log gives: the image at the
freeze, then the same records in the same order. A crash before the rename leaves the old log
(the temp file is removed at start); a failed rewrite is logged, counted
(``compaction_failures``) and tried again once the log has grown by another ``compact_bytes``.

**Recovery (at construction).** A leftover ``storage.log.tmp`` is removed. The log is replayed
into the image; a torn tail is truncated (fsynced) and logged; a damaged record followed by
valid ones raises :class:`StorageLogCorrupt` (:mod:`realnet.recordfile` has the rules). A data
directory written by the file-per-key storage (:class:`realnet.runtime.FileStorage`, ``*.val``)
is taken over: its keys are written into a new log atomically first, then its files are
removed, so a crash in between leaves the log, which holds them all, and the leftover files are
removed at the next start. Leftover files that disagree with the log were not left by a take-over
(a storelab that knows only files wrote them since: a downgrade, then an upgrade): the start is
refused with a sentence (:class:`StorageLayoutConflict`), and nothing is removed.

**One process per directory.** The storage holds an ``flock`` on ``storage.lock`` from before it
reads anything until it is closed (the kernel frees it when the process dies): a second node
started on the same ``--data-dir`` is refused (``OSError`` EBUSY, a sentence and exit 2) instead
of appending to the same log.

``close()`` flushes what is buffered and closes the file (a clean stop loses nothing);
``crash_for_test(torn)`` dies as after ``kill -9``, optionally with a torn tail.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import os
from collections.abc import Callable
from concurrent.futures import Future, wait

from realnet import recordfile
from realnet.recordfile import encode_record, write_synced
from realnet.runtime import (
    Background,
    FileStorage,
    fsync_dir,
    off_loop,
    unlink_quietly,
    write_all,
    write_atomically,
    write_parts,
)

log = logging.getLogger("realnet.kvlog")

MAGIC = b"SLKV001\n"
LOG_NAME = "storage.log"
LOCK_NAME = "storage.lock"
K_PUT, K_DELETE = b"P", b"D"
_KINDS = frozenset((K_PUT, K_DELETE))
#: record overhead beyond key and value: header, kind, msgpack framing (an estimate, for the
#: compaction rule only)
_OVERHEAD = 16


class _Rewrite:
    """A compaction under way inside a running loop (module docstring)."""

    def __init__(self, data: dict[str, bytes]) -> None:
        self.keys = list(data)  # the frozen image's keys
        #: the value at the freeze of every key changed since (None: absent), while encoding
        self.before: dict[str, bytes | None] = {}
        self.encoding = True
        self.pos = 0
        self.chunks: list[bytes] = [MAGIC]
        #: every batch flushed to the old log since the freeze, in order
        self.since: list[bytes] = []
        self.in_file = 0  # how many of ``since`` the thread wrote into the temp file
        self.cancelled = False
        self.steps = 0


class StorageLogCorrupt(Exception):
    """The storage log holds damaged data that is not a torn tail; the node does not start."""


class StorageLayoutConflict(StorageLogCorrupt):
    """Per-key files beside the log disagree with it; the node does not start (a sentence says
    which to keep)."""


class StorageFailed(OSError):
    """A write or fsync of the storage log failed earlier, or the storage is closed."""


def _lock_dir(directory: str) -> int:
    """Lock ``directory`` for this process (``flock`` of its ``LOCK_NAME``, held until closed or
    the process dies): two nodes appending to one log would corrupt it. OSError (EBUSY, with a
    sentence) when another process holds it."""
    fd = os.open(os.path.join(directory, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise OSError(errno.EBUSY, "another process (a node) is using it: its storage log is locked") from None
    except BaseException:
        os.close(fd)
        raise
    return fd


class LogStorage:
    """A durable :class:`kvcore.runtime.Storage` in ``directory`` (one log, group commit).

    ``compact_bytes``: the log size from which a flush may rewrite the log from the image."""

    def __init__(self, directory: str | os.PathLike[str], *, compact_bytes: int = 8 << 20,
                 compact_chunk: int = 4096) -> None:
        self.dir = os.path.abspath(os.fspath(directory))
        self.path = os.path.join(self.dir, LOG_NAME)
        self.compact_bytes = compact_bytes
        #: keys encoded per loop turn by a compaction inside a running loop
        self.compact_chunk = compact_chunk
        self.stats: dict[str, int] = dict.fromkeys(
            ("puts", "deletes", "fsyncs", "max_flush_records", "compactions",
             "torn_bytes_dropped", "compaction_steps", "compaction_failures"), 0)
        #: where a compaction's temp file is written (realnet.runtime.off_loop: a worker thread)
        self.background: Background = off_loop
        self._rw: _Rewrite | None = None
        self._retry_at = 0  # after a failed rewrite: no other before the log is this long
        self._job: Future[None] | None = None  # the temp file's write, while it runs
        # Raises OSError with the reason (permission, a file in the way); the caller turns it
        # into a configuration error before anything is bound.
        os.makedirs(self.dir, exist_ok=True)
        if not os.access(self.dir, os.W_OK):
            raise PermissionError(f"data directory {self.dir!r} is not writable")
        self._data: dict[str, bytes] = {}
        #: bytes the image would take as a log (the compaction rule)
        self._image_bytes = 0
        self._buf = bytearray()
        self._buf_records = 0
        self._waiters: list[Callable[[], None]] = []
        self._scheduled = False
        self._failed = ""
        #: called once, with the reason, when a write or fsync fails (the node stops on it)
        self.on_failure: Callable[[str], None] | None = None
        self._fd = -1
        self._fd_ident = (0, 0)  # (st_dev, st_ino) of the file _fd appends to
        self._lock = _lock_dir(self.dir)  # before anything is read: one process per directory
        try:
            self._recover()
            self._log_bytes = os.path.getsize(self.path)
            self._open_log()
        except BaseException:
            os.close(self._lock)
            raise

    # --- the Storage door ------------------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        return self._data.get(key)

    def put(self, key: str, value: bytes) -> None:
        self._check_usable()
        if not isinstance(key, str) or not key:
            raise ValueError("a storage key must be a non-empty string")
        value = bytes(value)
        old = self._data.get(key)
        if self._rw is not None and self._rw.encoding and key not in self._rw.before:
            self._rw.before[key] = old
        self._image_bytes += len(value) - (len(old) if old is not None else -len(key) - _OVERHEAD)
        self._data[key] = value
        self._buf += encode_record(K_PUT, [key, value])
        self._buf_records += 1
        self.stats["puts"] += 1

    def delete(self, key: str) -> None:
        self._check_usable()
        old = self._data.pop(key, None)
        if old is None:
            return
        if self._rw is not None and self._rw.encoding and key not in self._rw.before:
            self._rw.before[key] = old
        self._image_bytes -= len(key) + len(old) + _OVERHEAD
        self._buf += encode_record(K_DELETE, key)
        self._buf_records += 1
        self.stats["deletes"] += 1

    def items(self, prefix: str) -> list[tuple[str, bytes]]:
        return sorted((k, v) for k, v in self._data.items() if k.startswith(prefix))

    def sync(self) -> None:
        """Make everything written so far durable: at the end of this loop turn (one flush for
        every sync of the turn), or now outside a running loop."""
        if self._buf and not self._failed:
            self._request_flush()

    def on_durable(self, fn: Callable[[], None]) -> None:
        if not self._buf and not self._scheduled:
            if not self._failed:
                fn()
            return
        self._waiters.append(fn)
        if not self._failed:
            self._request_flush()

    # --- flushing ------------------------------------------------------------------------------

    def _request_flush(self) -> None:
        if self._scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._scheduled = True
        loop.call_soon(self._flush_scheduled)

    def _flush_scheduled(self) -> None:
        self._scheduled = False
        if self._fd < 0 or self._failed:
            return
        try:
            self.flush()
        except OSError:
            log.exception("storage log %s: a flush failed; the node takes no more writes", self.path)

    def flush(self) -> None:
        """Write and fsync everything buffered, then run the callbacks that waited for it."""
        self._check_usable()
        if self._buf:
            data = bytes(self._buf)
            try:
                self._check_in_place()
                syncs = write_synced(self._fd, data)  # (in parts past MAX_BATCH: recordfile)
            except OSError as exc:
                # what reached the disk is unknown (a retry could append a batch twice)
                self._storage_failed(f"a write or fsync of {self.path} failed ({exc})")
                raise StorageFailed(exc.errno, self._failed) from exc
            self._log_bytes += len(data)
            self.stats["fsyncs"] += syncs
            self.stats["max_flush_records"] = max(self.stats["max_flush_records"], self._buf_records)
            self._buf.clear()
            self._buf_records = 0
            if self._rw is not None:
                self._rw.since.append(data)
            image = len(MAGIC) + self._image_bytes
            if (self._rw is None and self._log_bytes >= max(self.compact_bytes, self._retry_at)
                    and self._log_bytes > 2 * image):
                self._compact()
        waiters, self._waiters = self._waiters, []
        for fn in waiters:
            try:
                fn()
            except Exception:
                log.exception("storage log %s: a callback waiting for a flush raised", self.path)

    def _open_log(self) -> None:
        """Append to the log at our path from now on, noting which file it is (``_check_in_place``)."""
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        mine = os.fstat(self._fd)
        self._fd_ident = (mine.st_dev, mine.st_ino)

    def _check_in_place(self) -> None:
        """Raise OSError when the file we append to is no longer the log at our path (the data
        directory was removed or the log replaced while the node ran): appends would go to an
        unlinked file and every write acknowledged from then on be lost at the next start. One
        stat beside the fsync each flush costs (the file appended to was noted when opened)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise OSError(errno.ENOENT, f"{self.path} was removed while the node ran") from None
        if (st.st_dev, st.st_ino) != self._fd_ident:
            raise OSError(errno.ESTALE, f"{self.path} was replaced while the node ran")

    def _storage_failed(self, reason: str) -> None:
        """Refuse every later write, answer nothing that waited, and tell the owner (the node
        stops: a restart recovers from what is on disk)."""
        self._failed = reason
        withheld, self._waiters = len(self._waiters), []
        if withheld:
            log.error("storage log %s: %d answers that waited for this flush are withheld",
                      self.path, withheld)
        if self.on_failure is not None:
            self.on_failure(self._failed)

    def _check_usable(self) -> None:
        if self._failed:
            raise StorageFailed(f"storage refuses writes: {self._failed}; restart the node to recover "
                                "from what is on disk")
        if self._fd < 0:
            raise StorageFailed(f"storage {self.path} is closed")

    def _compact(self) -> None:
        """Rewrite the log from the image: at once outside a running loop, else in steps."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._rewrite()
            return
        self._rw = _Rewrite(self._data)
        loop.call_soon(self._rewrite_step, self._rw)

    def _rewrite_step(self, rw: _Rewrite) -> None:
        """Encode the next ``compact_chunk`` keys of the frozen image (one loop turn)."""
        if rw.cancelled or self._rw is not rw or self._fd < 0 or self._failed:
            return
        rw.steps += 1
        self.stats["compaction_steps"] += 1
        before, data = rw.before, self._data
        keys = rw.keys[rw.pos:rw.pos + self.compact_chunk]
        rw.chunks.append(b"".join([encode_record(K_PUT, [k, before[k] if k in before else data[k]])
                                   for k in keys]))
        rw.pos += len(keys)
        if rw.pos < len(rw.keys):
            asyncio.get_running_loop().call_soon(self._rewrite_step, rw)
            return
        rw.encoding, rw.before, rw.keys = False, {}, []
        rw.in_file = len(rw.since)
        parts = [*rw.chunks, *rw.since]
        tmp = self.path + ".tmp"
        self._job = self.background(lambda: write_parts(tmp, parts), lambda err: self._written(rw, err))

    def _written(self, rw: _Rewrite, err: BaseException | None) -> None:
        """Back on the loop: append what was flushed meanwhile, fsync, rename, switch."""
        tmp = self.path + ".tmp"
        if self._rw is rw:
            self._rw, self._job = None, None
        if rw.cancelled:
            return  # closed or died meanwhile: close() removed the temp file, or the next start will
        if self._fd < 0 or self._failed or err is not None:
            unlink_quietly(tmp)
            if err is not None:
                self._failed_rewrite(err)
            return
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_APPEND)
            try:
                write_all(fd, b"".join(rw.since[rw.in_file:]))
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:  # the old log is still the log: nothing lost
            unlink_quietly(tmp)
            self._failed_rewrite(exc)
            return
        if not self._install(tmp):
            if self._failed:
                log.error("storage log %s: %s", self.path, self._failed)
            return
        self._log_bytes = os.fstat(self._fd).st_size
        self.stats["compactions"] += 1

    def _install(self, tmp: str) -> bool:
        """Rename the compacted copy ``tmp`` over the log and append to it from now on; False
        when the rename failed (the old log is still the log: a failed rewrite, tried again
        later) or could not be made durable (the log is in doubt, as after a failed fsync: the
        storage fails)."""
        try:
            os.replace(tmp, self.path)
        except OSError as exc:
            unlink_quietly(tmp)
            self._failed_rewrite(exc)
            return False
        # renamed: the new file is the log from now on, so appends must go to it
        old, self._fd = self._fd, -1
        os.close(old)
        try:
            self._open_log()
            fsync_dir(self.dir)
        except OSError as exc:
            self._storage_failed(f"switching {self.path} to its compacted copy failed ({exc})")
            return False
        return True

    def _failed_rewrite(self, err: BaseException) -> None:
        self.stats["compaction_failures"] += 1
        self._retry_at = self._log_bytes + self.compact_bytes
        log.warning("storage log %s: a compaction failed (%s); the log is kept and compacted later",
                    self.path, err)

    def _stop_rewrite(self) -> None:
        """Closing or dying: a rewrite under way is abandoned (its temp file goes at start)."""
        if self._rw is not None:
            self._rw.cancelled = True
            self._rw = None
        if self._job is not None:
            wait([self._job], timeout=60.0)  # bounded: one temp file's write
            self._job = None

    def _rewrite(self) -> None:
        """The log as the image, written atomically (nothing is buffered). The old log stays open
        until the new one replaced it: a write that fails before the rename keeps it (the
        compaction is tried again later, as in a loop); one that fails after it (the directory's
        fsync) leaves a log whose durability is unknown, which fails the storage."""
        data = b"".join([MAGIC, *(encode_record(K_PUT, [k, v]) for k, v in self._data.items())])
        tmp = self.path + ".tmp"
        try:
            write_parts(tmp, (data,))
        except OSError as exc:
            unlink_quietly(tmp)
            self._failed_rewrite(exc)
            return
        if not self._install(tmp):
            if self._failed:
                raise StorageFailed(errno.EIO, self._failed)
            return
        self._log_bytes = len(data)
        self.stats["compactions"] += 1

    def log_size(self) -> int:
        return self._log_bytes

    def close(self) -> None:
        """Flush what is buffered, close the file and free the directory (a clean stop loses
        nothing)."""
        if self._lock < 0:
            return  # closed already
        try:
            if not self._failed and self._fd >= 0:
                self.flush()
        finally:
            self._stop_rewrite()
            unlink_quietly(self.path + ".tmp")
            if self._fd >= 0:
                os.close(self._fd)
            self._fd = -1
            os.close(self._lock)
            self._lock = -1

    def crash_for_test(self, torn: int = 0) -> None:
        """Test hook: die as after ``kill -9``: what is buffered is lost, except its first
        ``torn`` bytes, which reach the file (a write torn mid-record)."""
        self._stop_rewrite()  # (a temp file it left stays, as after a real crash)
        if torn:
            write_all(self._fd, bytes(self._buf[:torn]))
        self._buf.clear()
        self._waiters.clear()
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = -1
        os.close(self._lock)  # the kernel frees a dead process's lock
        self._lock = -1

    # --- recovery ------------------------------------------------------------------------------

    def _recover(self) -> None:
        tmp = self.path + ".tmp"
        if os.path.exists(tmp):
            os.unlink(tmp)  # a rewrite that never got renamed
        legacy = [n for n in os.listdir(self.dir)
                  if n.endswith(FileStorage.SUFFIX) or n.endswith(FileStorage.SUFFIX + ".tmp")]
        had_log = os.path.exists(self.path)
        if not had_log:
            # a new directory, or one the file-per-key storage wrote: its keys go into the log
            # first, atomically, and only then are its files removed
            old = FileStorage(self.dir).items("") if legacy else []
            write_atomically(self.path, b"".join([MAGIC, *(encode_record(K_PUT, [k, v]) for k, v in old)]))
            if legacy:
                log.info("storage %s: %d keys taken over from the file-per-key layout", self.dir, len(old))
        records, dropped = recordfile.read_log(self.path, MAGIC, _KINDS, "storage log", StorageLogCorrupt)
        self.stats["torn_bytes_dropped"] = dropped
        data = self._data
        for off, kind, payload in records:
            try:
                if kind == K_PUT:
                    key, value = payload
                    if not isinstance(key, str) or not isinstance(value, bytes):
                        raise TypeError("a put is [str, bytes]")
                    data[key] = value
                elif not isinstance(payload, str):
                    raise TypeError("a delete names a str")
                else:
                    data.pop(payload, None)
            except (TypeError, ValueError) as exc:
                raise StorageLogCorrupt(f"storage log {self.path}: record at offset {off} does not "
                                        f"apply ({exc})") from None
        self._image_bytes = sum(len(k) + len(v) + _OVERHEAD for k, v in data.items())
        if legacy and had_log:
            self._check_leftovers()
        if legacy:
            for name in legacy:
                os.unlink(os.path.join(self.dir, name))
            fsync_dir(self.dir)


    def _check_leftovers(self) -> None:
        """Per-key files beside an existing log: left by a take-over cut short (the log was
        written from them, so each holds what the log holds: removed), or written since by a
        storelab that knows only files (a downgrade, then an upgrade: they may be newer than
        the log). Files that disagree with the log are not guessed at: the start is refused."""
        differ = sorted(k for k, v in FileStorage(self.dir).items("") if self._data.get(k) != v)
        if differ:
            shown = ", ".join(repr(k) for k in differ[:3]) + (f" and {len(differ) - 3} more" if len(differ) > 3 else "")
            raise StorageLayoutConflict(
                f"Data directory {self.dir!r} holds both {LOG_NAME} and per-key files (*.val) that "
                f"disagree with it ({shown}): files a storelab older than the log wrote after it? "
                f"Nothing was changed. Keep one: move {LOG_NAME} aside to take the files over, or "
                "remove the *.val files to keep the log.")


__all__ = ["LOCK_NAME", "LOG_NAME", "MAGIC", "LogStorage", "StorageFailed", "StorageLayoutConflict",
           "StorageLogCorrupt"]
