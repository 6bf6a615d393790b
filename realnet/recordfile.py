"""Checksummed records in an append-only file, and how a damaged one is judged.

Theory of operation
-------------------
The two logs realnet keeps on disk (the Raft log, :mod:`realnet.raftlog`, and the node's own
storage, :mod:`realnet.kvlog`) share one record format: a 4-byte big-endian body length, the
4-byte big-endian CRC32 (``zlib.crc32``) of the body, and the body, one *kind* byte and a msgpack
payload. A file starts with an 8-byte magic of its own, then records.

Reading (:func:`scan_records`) splits a file into ``(offset, kind, payload)`` and the length of
its valid prefix. A *torn tail* (a last record cut short or with a bad checksum and nothing valid
after it, as after ``kill -9`` or a power loss mid-write) ends the valid prefix; the caller
truncates it. A bad record *followed by valid data* is corruption, and ``error`` is raised naming
the file and offset, unless a 512-byte sector inside the bad record reads as zeros up to its
end *and* the record lies within the file's last :data:`MAX_BATCH` bytes: the mark of a batch
whose later page reached the disk before an earlier one at a power loss (etcd's
``isTornEntry``), which is a torn tail too (what follows was never synced).

Why the bound: a torn write can only damage the batch that was being written when the power
went, and every batch is at most :data:`MAX_BATCH` bytes (:func:`write_synced` writes a larger
one in parts at record boundaries, an fsync after each), so the damaged record of a torn write
starts within the last ``MAX_BATCH`` bytes. A record further back was synced, and a value of it
may well hold 512 zero bytes: a flipped bit there is corruption, refused, never a reason to drop
it and every acknowledged record after it. (Inside the last ``MAX_BATCH`` bytes the two cannot
be told apart, as in etcd; a torn write is the likelier there.)
"""

from __future__ import annotations

import itertools
import logging
import os
import struct
import zlib
from collections.abc import Sequence, Set
from typing import Any

import msgpack

from realnet.runtime import write_all

log = logging.getLogger("realnet.recordfile")

HEADER = struct.Struct(">II")
#: a body longer than this is not a record (a flipped length byte, not a 2 GiB batch)
MAX_RECORD = 1 << 30
SECTOR = 512
MAGIC_LEN = 8
#: the most bytes a log writes between two fsyncs (one record larger than it is written alone):
#: a torn write can damage only the last such batch (see the module docstring)
MAX_BATCH = 4 << 20


def write_synced(fd: int, data: bytes | bytearray) -> int:
    """Append ``data`` (whole records) to ``fd`` and fsync it, in batches of at most
    :data:`MAX_BATCH` bytes cut at record boundaries (a record larger than that alone), an fsync
    after each; returns the number of fsyncs. The common case is one write and one fsync."""
    view = memoryview(data)
    n = len(view)
    if n <= MAX_BATCH:
        write_all(fd, view)
        os.fsync(fd)
        return 1
    syncs = 0
    start = 0
    while start < n:
        end = start
        while end < n:
            size = HEADER.size + HEADER.unpack_from(view, end)[0]
            if end > start and end + size - start > MAX_BATCH:
                break
            end += size
        write_all(fd, view[start:end])
        os.fsync(fd)
        syncs += 1
        start = end
    return syncs


def encode_record(kind: bytes, payload: Any) -> bytes:
    body: bytes = kind + msgpack.packb(payload, use_bin_type=True)
    return HEADER.pack(len(body), zlib.crc32(body)) + body


def encode_record_parts(kind: bytes, payload: Sequence[bytes]) -> list[bytes]:
    """:func:`encode_record`'s bytes in parts, for a payload already msgpack-encoded in
    ``payload`` (their concatenation): a large value is neither copied nor joined (a snapshot
    file written off the loop then holds the GIL only for its small parts)."""
    crc, n = zlib.crc32(kind), len(kind)
    for p in payload:
        crc = zlib.crc32(p, crc)
        n += len(p)
    return [HEADER.pack(n, crc), kind, *payload]


def _valid_at(buf: bytes | memoryview, off: int, kinds: Set[bytes]) -> int:
    """Length of the valid record at ``off`` (0 if there is none)."""
    if len(buf) - off < HEADER.size + 1:
        return 0
    n, crc = HEADER.unpack_from(buf, off)
    end = off + HEADER.size + n
    if n < 1 or n > MAX_RECORD or end > len(buf):
        return 0
    if bytes(buf[off + HEADER.size:off + HEADER.size + 1]) not in kinds:  # cheap, before the CRC
        return 0
    if zlib.crc32(buf[off + HEADER.size:end]) != crc:
        return 0
    return int(end - off)


def scan_records(buf: bytes, path: str, kinds: Set[bytes], what: str,
                 error: type[Exception]) -> tuple[list[tuple[int, bytes, Any]], int]:
    """Split ``buf`` (after its magic) into ``(offset, kind, payload)`` records of ``kinds``.

    Returns the records and the length of the valid prefix; bytes after it are a torn tail.
    Raises ``error`` (its text names ``what`` and ``path``) when a bad record is followed by a
    valid one, or a record whose checksum holds does not decode."""
    view = memoryview(buf)
    out: list[tuple[int, bytes, Any]] = []
    off = MAGIC_LEN
    while off < len(buf):
        n = _valid_at(view, off, kinds)
        if n == 0:
            _judge_bad_record(view, off, path, kinds, what, error)  # raises unless a torn tail
            break
        body = bytes(view[off + HEADER.size:off + n])
        try:
            payload = msgpack.unpackb(body[1:], raw=False)
        except Exception as exc:  # checksum held, so the writer wrote this: a bug or a forgery
            raise error(f"{what} {path}: record at offset {off} does not decode ({exc})") from None
        out.append((off, body[:1], payload))
        off += n
    return out, off


def read_log(path: str, magic: bytes, kinds: Set[bytes], what: str,
             error: type[Exception]) -> tuple[list[tuple[int, bytes, Any]], int]:
    """Read the log at ``path``: its records and how many torn bytes were dropped from its end
    (truncated, and the truncation fsynced). Raises ``error`` for a wrong magic or corruption."""
    with open(path, "rb") as f:
        buf = f.read()
    if not buf.startswith(magic):
        raise error(f"{what} {path} does not start with the magic {magic!r}")
    records, end = scan_records(buf, path, kinds, what, error)
    dropped = len(buf) - end
    if dropped:
        log.warning("%s %s: torn tail of %d bytes at offset %d dropped", what, path, dropped, end)
        os.truncate(path, end)
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return records, dropped


def _judge_bad_record(view: memoryview, off: int, path: str, kinds: Set[bytes], what: str,
                      error: type[Exception]) -> None:
    """A bad record at ``off`` is a torn tail if nothing valid follows it, or if it starts within
    the file's last :data:`MAX_BATCH` bytes and a 512-byte sector within it reads as zeros up to
    the sector's end (a page of an unsynced batch that never reached the disk while a later one
    did: etcd-io/etcd's ``isTornEntry`` rule). Else the file is corrupt: raise ``error``."""
    size = len(view)
    in_last_batch = size - off <= MAX_BATCH
    claimed = off  # first where this record claims to end (a damaged body), then every offset
    if size - off >= HEADER.size:  # (the length may be the damaged byte)
        claimed += HEADER.size + HEADER.unpack_from(view, off)[0]
    first = [claimed] if off < claimed < size else []
    for p in itertools.chain(first, range(off + 1, size - HEADER.size)):
        if _valid_at(view, p, kinds):
            if in_last_batch and _zero_sector(view, off, p):
                log.warning("%s %s: a zeroed sector in the record at offset %d (a torn write "
                            "of the last batch); valid records after it are dropped", what, path, off)
                return
            raise error(
                f"{what} {path} is corrupt at offset {off}: a record fails its checksum "
                f"but valid records follow (at offset {p}); refusing to serve it")


def _zero_sector(view: memoryview, lo: int, hi: int) -> bool:
    """Whether [lo, hi) holds zero bytes from a 512-byte boundary (or ``lo``, the record's start,
    when it is nearer) up to the next boundary, at least 16 of them."""
    for end in range((lo // SECTOR + 1) * SECTOR, hi + 1, SECTOR):
        start = max(lo, end - SECTOR)
        if end - start >= 16 and view[start:end] == bytes(end - start):
            return True
    return False


__all__ = ["HEADER", "MAGIC_LEN", "MAX_BATCH", "MAX_RECORD", "SECTOR", "encode_record", "read_log",
           "scan_records", "write_synced"]
