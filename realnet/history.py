"""Histories of real clients: every operation recorded as an invocation and a completion.

Theory of operation
-------------------
The sim's clients record what they see (:mod:`sim.clients`); this module does the same for
clients of real nodes, so that a realnet run can be checked for linearizability with the same
checker and written in the same JSON-lines format (:mod:`checker.history`).

A :class:`HistoryRecorder` is the shared log: thread-safe, it stamps every event with
``time.monotonic()`` relative to its creation, reading the clock *under its lock*, so the log is
in time order and an operation that completed before another was invoked has the smaller time
(real-time order is what linearizability is about). A :class:`RecordingClient` wraps one client
(a :class:`realnet.client.Client`, a :class:`NodeClient`, or anything with the same ``get``,
``set`` and ``delete``) and, per call, records

- ``invoke`` before the request is sent;
- ``ok`` when it returned: a get with the value read (``None`` when absent), a delete whether or
  not the key existed (either way the key is absent afterwards: the ``kv`` model's delete);
- ``fail`` when it raised a :class:`~kvcore.errors.StoreError` whose outcome is definite
  (owner down, wrong node, bad request, ...): the operation certainly did not take effect;
- ``info`` for everything else: a forward timeout, an internal error, an unreachable node, a
  socket timeout, any other exception. The operation may or may not have taken effect.

then returns or re-raises exactly what the wrapped client did: recording is transparent.

Process ids follow Jepsen: one per client thread, and after an ``info`` the client takes a fresh
id, since the operation it lost track of may still be in flight (a Jepsen process never has two
operations outstanding). Values are recorded as text (UTF-8, undecodable bytes escaped).

Caveat: :class:`realnet.client.Client` retries a request once after a connection error, so one
recorded put may reach a node twice (see its docstring); with a concurrent writer that could
look like a violation the store did not commit. :class:`NodeClient` never retries.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from kvcore import errors
from realnet.client import KvMethods, NodeConnection, NodeUnreachable, kv_path


class KVClient(Protocol):
    def get(self, key: str | bytes) -> bytes | None: ...
    def set(self, key: str | bytes, value: bytes | str) -> None: ...
    def delete(self, key: str | bytes) -> bool: ...


def _text(v: str | bytes | None) -> str | None:
    if v is None or isinstance(v, str):
        return v
    return bytes(v).decode("utf-8", "backslashreplace")


def completion_type(exc: BaseException) -> str:
    """``fail`` for an error that certainly did not take effect, else ``info`` (unknown)."""
    if isinstance(exc, errors.StoreError) and exc.definite and not isinstance(exc, errors.NotFound):
        return "fail"
    return "info"


class HistoryRecorder:
    """A thread-safe history shared by recording clients (see the module docstring)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._t0 = clock()
        self._lock = threading.Lock()
        self._events: list[dict[str, Any]] = []
        self._next_process = 0

    def new_process(self) -> int:
        with self._lock:
            p = self._next_process
            self._next_process += 1
            return p

    def record(self, process: int, type: str, f: str, key: str | None, value: Any, error: str = "") -> float:
        """Append one event stamped now; returns its time."""
        with self._lock:
            t = self._clock() - self._t0
            event: dict[str, Any] = {"process": process, "type": type, "f": f, "key": key,
                                     "value": value, "time": t}
            if error:
                event["error"] = error
            self._events.append(event)
            return t

    @property
    def events(self) -> list[dict[str, Any]]:
        """A copy of the events so far, in time order."""
        with self._lock:
            return [dict(e) for e in self._events]

    def __len__(self) -> int:
        with self._lock:
            return len(self._events)

    def write_jsonl(self, path: str | Path) -> None:
        """Write the events as JSON lines, the format ``python -m checker`` reads."""
        from checker import write_jsonl

        write_jsonl(self.events, path)

    def check(self, model: str = "kv", timeout: float | None = 60.0) -> Any:
        """Check the history so far with :func:`checker.check`."""
        from checker import check

        return check(self.events, model=model, timeout=timeout)


class RecordingClient:
    """Wraps a client; records each get/set/delete in a :class:`HistoryRecorder`."""

    def __init__(self, client: KVClient, recorder: HistoryRecorder, process: int | None = None) -> None:
        self.client = client
        self.recorder = recorder
        self.process = recorder.new_process() if process is None else process

    def _run(self, f: str, key: str | bytes, value: Any, call: Callable[[], Any]) -> Any:
        k = _text(key)
        rec = self.recorder
        rec.record(self.process, "invoke", f, k, value)
        try:
            out = call()
        except BaseException as e:
            typ = completion_type(e)
            code = e.code if isinstance(e, errors.StoreError) else type(e).__name__
            rec.record(self.process, typ, f, k, value, error=code)
            if typ == "info":
                self.process = rec.new_process()  # the lost operation may still be in flight
            raise
        result = _text(out) if f == "get" else value
        rec.record(self.process, "ok", f, k, result)
        return out

    def get(self, key: str | bytes) -> bytes | None:
        return self._run("get", key, None, lambda: self.client.get(key))  # type: ignore[no-any-return]

    def set(self, key: str | bytes, value: bytes | str) -> None:
        self._run("put", key, _text(value), lambda: self.client.set(key, value))

    def delete(self, key: str | bytes) -> bool:
        return bool(self._run("delete", key, None, lambda: self.client.delete(key)))

    def close(self) -> None:
        close = getattr(self.client, "close", None)
        if close is not None:
            close()


class NodeClient(KvMethods):
    """A plain client of one node (which forwards to the owner): no slot map, no retries.

    Same methods and errors as :class:`realnet.client.Client`; a connection failure raises
    :class:`~realnet.client.NodeUnreachable` (outcome unknown). Not thread-safe.
    """

    def __init__(self, addr: str, timeout: float = 5.0) -> None:
        self.addr = addr
        self.conn = NodeConnection(addr, timeout=timeout)

    def _call(self, method: str, key: str | bytes, body: bytes | None) -> tuple[int, bytes]:
        try:
            status, _, data = self.conn.request(method, kv_path(key), body)
        except Exception as e:  # OSError, HTTPException, socket timeouts
            raise NodeUnreachable(f"cannot reach node {self.addr}: {e!r}") from e
        return status, data

    def close(self) -> None:
        self.conn.close()


__all__ = ["HistoryRecorder", "KVClient", "NodeClient", "RecordingClient", "completion_type"]
