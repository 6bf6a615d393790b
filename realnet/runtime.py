"""The asyncio Runtime: kvcore's window on the real world.

Theory of operation
-------------------
A :class:`kvcore.node.Node` reaches the world only through its Runtime (ARCHITECTURE.md, "The
boundary"). :class:`AsyncioRuntime` maps each member onto one asyncio event loop:

- ``now()`` is ``loop.time()``: monotonic seconds, the same clock asyncio's timers use, so a
  timer set for ``now() + d`` fires when ``now()`` reads at least that. On asyncio's own loop,
  whose ``time()`` is ``time.monotonic()``, ``now`` is ``time.monotonic`` itself (a C call; on
  uvloop, ``loop.time``).
- ``call_later(delay, fn)`` is ``loop.call_later`` for short delays; the returned
  :class:`asyncio.TimerHandle` has ``cancel()``. Delays of ``COARSE_FROM`` seconds or more (the
  forward and batch timeouts the node sets for every forwarded request, and almost always
  cancels) go into buckets of ``TICK`` seconds with one asyncio timer per bucket, and may fire up
  to one tick late, never early: an asyncio timer per request costs a handle, a copied context
  and a heap push, and its cancelled handle stays in the heap. The callback is wrapped so that an
  exception escaping node code is logged with its traceback and swallowed: one buggy timer must
  not stop the others, and asyncio's default handler would only log it anyway, without saying
  which node it was.
- ``random`` is a ``random.Random()`` seeded from os entropy (``random.Random()`` with no
  argument reads ``os.urandom``): real nodes must not share ids or probe phases.
- ``send(dst, msg)`` hands the message to the peer transport (:mod:`realnet.transport`), which
  frames it onto the pooled TCP connection to ``dst`` or drops it. Fire-and-forget: a send never
  raises and never blocks. The transport is attached after construction because it needs the
  node, which needs the runtime; once it is (``runtime.sink = transport``), ``send`` is the
  transport's own ``send``, with no call around it. Before, a message is dropped and counted
  in ``unsent``.
- ``storage`` is a :class:`realnet.kvlog.LogStorage` (one log, group commit) under
  ``--data-dir`` when one is given, else a :class:`kvcore.runtime.MemoryStorage` (which forgets
  everything on exit; a node without a data dir has nothing durable, as a Redis node without a
  ``dir`` persists nothing).

:class:`FileStorage` is the layout that came before (``LogStorage`` takes such a directory over at
start, and ``benchmarks/durable_writes.py`` runs it as its baseline). It writes one file per key
with the classic crash-safe sequence: write a temporary file, ``fsync`` it, ``os.replace`` it over
the old one, ``fsync`` the directory. A crash leaves either the old or the new value, never a torn
one; ``delete`` unlinks and fsyncs the directory. Keys are percent-encoded into file names so that
any key maps to exactly one safe name. A name would exceed the file system's limit (255 bytes) for
long keys (the durable store writes ``kv:`` plus the hex of keys of up to 1 KiB), so a key whose
encoded name is longer than ``MAX_NAME`` is stored under ``#`` and the SHA-256 of the key (``#``
never appears in an encoded name), and the key itself is kept at the head of the file (a 4-byte
length, then the UTF-8 key), which ``items`` reads back. ``items(prefix)`` lists the directory: it
is meant for reloading state at start, not for the hot path.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import os
import random
import struct
import time
import urllib.parse
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from kvcore.runtime import MemoryStorage, Storage

log = logging.getLogger("realnet.runtime")


class MessageSink(Protocol):
    """What the runtime hands outgoing messages to (the peer transport)."""

    def send(self, dst: str, msg: Any) -> None: ...


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write every byte of ``data`` to ``fd`` (``os.write`` may write less than asked)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def fsync_dir(directory: str) -> None:
    """fsync a directory, so that a rename or unlink in it survives a power loss."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_parts(path: str, parts: Sequence[bytes]) -> None:
    """Write ``parts`` one after the other into a new file ``path`` and fsync it (no rename)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for part in parts:
            write_all(fd, part)
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: str, data: bytes | Sequence[bytes]) -> None:
    """Replace ``path`` by ``data`` (bytes, or parts written one after the other) crash-safely:
    ``path.tmp``, fsync, rename over ``path``, fsync of the directory. A crash leaves the old
    file or the new one, never a mix."""
    write_parts(path + ".tmp", (data,) if isinstance(data, bytes | bytearray) else data)
    os.replace(path + ".tmp", path)
    fsync_dir(os.path.dirname(path) or ".")


def unlink_quietly(path: str) -> None:
    """Remove ``path`` if it is there (a temp file, a snapshot file no longer needed)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


#: ``background(work, done)``: run ``work()`` off the event loop, then ``done(error)`` (None when
#: it returned) back on the loop; the job's future, when there is one to wait for
Background = Callable[[Callable[[], None], Callable[[BaseException | None], None]], "Future[None] | None"]
_WORKERS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="storelab-disk")


def off_loop(work: Callable[[], None], done: Callable[[BaseException | None], None]) -> Future[None] | None:
    """The storages' :data:`Background`: ``work()`` in a worker thread (a large file's write
    and fsyncs, which release the GIL), then ``done(error)`` on the running loop; at once, in
    line, outside a running loop (None then). A loop gone meanwhile (the process stops) is
    never called back: what the work left is for the next start to clean up."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        err: BaseException | None = None
        try:
            work()
        except Exception as exc:
            err = exc
        done(err)
        return None

    def finished(f: Future[None]) -> None:
        try:
            loop.call_soon_threadsafe(done, f.exception())
        except RuntimeError:
            pass  # the loop is closed

    job = _WORKERS.submit(work)
    job.add_done_callback(finished)
    return job


class FileStorage:
    """A :class:`kvcore.runtime.Storage` kept as one file per key in a directory.

    ``put`` is atomic and durable (temp file, fsync, rename, fsync of the directory); ``get``
    reads the file back, or returns None when the key was never written; ``delete`` removes it
    durably; ``items(prefix)`` lists every key with that prefix, sorted; ``sync`` is a no-op
    (every write is synced when it returns).
    """

    SUFFIX = ".val"
    #: longest encoded file name (before the suffix) stored as such; longer keys are hashed
    MAX_NAME = 200
    _HASHED = "#"
    _KEYLEN = struct.Struct(">I")

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory)
        # Raises OSError with the reason (permission, a file in the way); the caller turns it
        # into a configuration error before anything is bound.
        self.dir.mkdir(parents=True, exist_ok=True)
        if not os.access(self.dir, os.W_OK):
            raise PermissionError(f"data directory {str(self.dir)!r} is not writable")

    def _name(self, key: str) -> str:
        """The file name of ``key`` (without the suffix); hashed when too long."""
        if not key:
            raise ValueError("a storage key must be a non-empty string")
        # quote(safe="") leaves only [A-Za-z0-9_.~-] and %XX: no separators, no "..", and no
        # name that a different key could also produce.
        name = urllib.parse.quote(key, safe="")
        if name.startswith("."):
            name = "%2E" + name[1:]
        if len(name) > self.MAX_NAME:
            name = self._HASHED + hashlib.sha256(key.encode()).hexdigest()
        return name

    def _path(self, key: str) -> Path:
        return self.dir / (self._name(key) + self.SUFFIX)

    def _read(self, path: Path, hashed: bool) -> tuple[str | None, bytes] | None:
        """(stored key or None when the name is the key, value); None when absent."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        if not hashed:
            return None, data
        (n,) = self._KEYLEN.unpack_from(data)
        start = self._KEYLEN.size
        key = data[start : start + n].decode()
        return key, data[start + n :]

    def get(self, key: str) -> bytes | None:
        name = self._name(key)
        got = self._read(self.dir / (name + self.SUFFIX), name.startswith(self._HASHED))
        if got is None or (got[0] is not None and got[0] != key):
            return None  # absent, or (never seen) another key with the same SHA-256
        return got[1]

    def put(self, key: str, value: bytes) -> None:
        name = self._name(key)
        path = self.dir / (name + self.SUFFIX)
        if name.startswith(self._HASHED):
            k = key.encode()
            value = self._KEYLEN.pack(len(k)) + k + value
        write_atomically(str(path), value)

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            return
        self._sync_dir()

    def sync(self) -> None:
        """Nothing to do: ``put`` and ``delete`` are durable when they return (each fsyncs its
        file and the directory), so every write is synced already."""

    def on_durable(self, fn: Callable[[], None]) -> None:
        fn()  # every write is durable when it returns (see sync)

    def items(self, prefix: str) -> list[tuple[str, bytes]]:
        out: list[tuple[str, bytes]] = []
        with os.scandir(self.dir) as entries:
            for entry in entries:
                fname = entry.name
                if not fname.endswith(self.SUFFIX):
                    continue  # a temporary file of a put that crashed, or a stranger
                name = fname[: -len(self.SUFFIX)]
                hashed = name.startswith(self._HASHED)
                key: str | None = None
                if not hashed:  # the name is the key: skip non-matching files unread
                    key = urllib.parse.unquote(name)
                    if not key.startswith(prefix):
                        continue
                got = self._read(Path(entry.path), hashed)
                if got is None:
                    continue  # deleted meanwhile
                key = got[0] if hashed else key
                if key is not None and key.startswith(prefix):
                    out.append((key, got[1]))
        out.sort()
        return out

    def _sync_dir(self) -> None:
        fsync_dir(str(self.dir))


TICK = 1 / 32
"""Seconds: the resolution of the timers of at least ``COARSE_FROM`` seconds."""
COARSE_FROM = 0.5
"""Seconds: delays from which a timer goes into a bucket (see the module docstring)."""


def loop_clock(loop: asyncio.AbstractEventLoop) -> Callable[[], float]:
    """``loop.time`` as a function to read on hot paths: asyncio's own loop reads
    ``time.monotonic``, handed out directly (one C call rather than a Python method); another
    loop (uvloop) its own ``time``."""
    return time.monotonic if type(loop).time is asyncio.BaseEventLoop.time else loop.time


class _CoarseTimer(list):  # type: ignore[type-arg]
    """A timer in a bucket: a one-item list holding its callback (built by ``list``'s own
    constructor, with no Python ``__init__`` on the path every forward takes); cancelling it
    empties the list (``list.clear`` itself: no Python call on the path every forwarded reply
    takes), and so does firing it."""

    __slots__ = ()

    cancel = list.clear

    def cancelled(self) -> bool:
        return not self


class AsyncioRuntime:
    """kvcore's Runtime on one asyncio event loop (see the module docstring)."""

    def __init__(
        self,
        node_id: str,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        storage: Storage | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.node_id = node_id
        self.loop = loop if loop is not None else asyncio.get_running_loop()
        self.random: random.Random = rng if rng is not None else random.Random()
        self.storage: Storage = storage if storage is not None else MemoryStorage()
        #: ``loop.time`` for the bucketed timers (:func:`loop_clock`)
        self._clock: Callable[[], float] = loop_clock(self.loop)
        #: ``now()``: the loop's clock (that clock itself, no call around it: the node reads it
        #: for every forwarded write it remembers, every timer, every Raft tick)
        self.now: Callable[[], float] = self._clock
        #: ``send(dst, msg)``: the sink's own ``send`` once one is attached (see :attr:`sink`),
        #: so a message takes no extra call on its way to the transport
        self.send: Callable[[str, Any], None] = self._send_unattached
        self._sink: MessageSink | None = None
        #: exceptions raised by timer callbacks (logged and swallowed)
        self.timer_errors = 0
        self._buckets: dict[int, list[_CoarseTimer]] = {}  # tick -> timers due at its end
        #: messages sent before a transport was attached
        self.unsent = 0

    @property
    def sink(self) -> MessageSink | None:
        """Where :meth:`send` goes; None until the transport is attached (sends are then
        dropped, counted in ``unsent``)."""
        return self._sink

    @sink.setter
    def sink(self, sink: MessageSink | None) -> None:
        self._sink = sink
        self.send = sink.send if sink is not None else self._send_unattached

    def call_later(
        self, delay: float, fn: Callable[[], None]
    ) -> asyncio.TimerHandle | _CoarseTimer:
        if delay < COARSE_FROM:
            return self.loop.call_later(max(0.0, delay), self._run_timer, fn)
        timer = _CoarseTimer((fn,))
        tick = math.ceil((self._clock() + delay) / TICK)
        bucket = self._buckets.get(tick)
        if bucket is None:
            self._buckets[tick] = [timer]
            self.loop.call_at(tick * TICK, self._fire_bucket, tick)
        else:
            bucket.append(timer)
        return timer

    def call_at(self, when: float, fn: Callable[[], None]) -> asyncio.TimerHandle | _CoarseTimer:
        """A timer at ``when`` on ``now()``'s clock (the loop's), coarse like ``call_later``."""
        return self.call_later(when - self.loop.time(), fn)

    def _fire_bucket(self, tick: int) -> None:
        for timer in self._buckets.pop(tick, ()):
            if timer:
                fn = timer[0]
                timer.clear()
                self._run_timer(fn)

    def _run_timer(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:
            self.timer_errors += 1
            log.exception("node %s: a timer callback raised; the node keeps running", self.node_id)

    def _send_unattached(self, dst: str, msg: Any) -> None:
        """:attr:`send` before a transport is attached: the message is dropped, and counted."""
        self.unsent += 1


#: the event loops a node can run on (``--event-loop``)
EVENT_LOOPS = ("asyncio", "uvloop")


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """What ``asyncio.Runner`` builds the node's loop with: None for the standard library's,
    ``uvloop.new_event_loop`` for libuv's (ImportError, with what to install, when uvloop is
    missing; ValueError for another name)."""
    if name == "asyncio":
        return None
    if name != "uvloop":
        raise ValueError(f"unknown event loop {name!r}; choose one of {', '.join(EVENT_LOOPS)}")
    try:
        import uvloop
    except ImportError:
        raise ImportError("--event-loop uvloop needs uvloop: pip install 'storelab[fast]'") from None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def event_loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """Which event loop this is: "asyncio" or "uvloop" (its package's name)."""
    return type(loop).__module__.split(".")[0]


def open_storage(data_dir: str | os.PathLike[str] | None) -> Storage:
    """The storage for a node: a log under ``data_dir`` (:class:`realnet.kvlog.LogStorage`), or
    memory when there is none."""
    if data_dir is None or str(data_dir) == "":
        return MemoryStorage()
    from realnet.kvlog import LogStorage  # (it builds on this module's file helpers)

    return LogStorage(data_dir)


__all__ = ["EVENT_LOOPS", "AsyncioRuntime", "FileStorage", "MessageSink", "event_loop_name", "loop_factory",
           "open_storage"]
