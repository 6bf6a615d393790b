"""Simulated clients and the history they record.

Theory of operation
-------------------
A client is a SimPy process that runs operations one at a time, like a Jepsen process: pick an
operation and a node, record the *invoke*, hand the operation to the node after the client link's
latency, and wait for the reply (which also travels back with that latency) or the client's own
timeout. The completion is recorded with one of three outcomes, which is what a checker needs:

- ``ok`` — the operation took effect (a Get that found nothing is ``ok`` with value None);
- ``fail`` — it certainly did not take effect (a definite typed error: owner down, unassigned…);
- ``unknown`` — it may or may not have taken effect (forward timeout, internal error, or no answer
  before the client timeout, e.g. because the node crashed).

Every Put writes a value unique in the run (``"c{client}-{n}"``), so a read names the write it
saw. Client links are not subject to partitions: clients sit next to the node they talk to.

The node is drawn anew for each operation among ``nodes()``, which the cluster gives
(:meth:`sim.cluster.SimCluster.client_nodes`): every node, or in a replicated cluster the members
of the newest committed configuration, so that a node a configuration change removed stops being
drawn once its removal committed, as a real client told the cluster's members would stop asking
it (and Jepsen's member nemesis tells its clients).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import simpy

from kvcore.errors import ERRORS_BY_CODE
from kvcore.messages import Delete, Get, Put, Reply
from sim.latency import Constant, Latency
from sim.trace import Trace

OK, FAIL, UNKNOWN = "ok", "fail", "unknown"


@dataclass(slots=True)
class Operation:
    """One client operation: invoke and completion."""

    process: int
    f: str  # "get" | "put" | "delete"
    key: str
    value: str | None  # the value written by a put
    node: str
    invoke: float
    complete: float | None = None  # None while running
    outcome: str = UNKNOWN
    result: str | None = None  # the value a get read (None: absent)
    error: str = ""  # the error code, "" on success

    @property
    def latency(self) -> float | None:
        return None if self.complete is None else self.complete - self.invoke

    def to_events(self) -> list[dict[str, Any]]:
        """The Jepsen-style JSONL events (invoke, then ok/fail/info) for the checker."""
        inv = {"process": self.process, "type": "invoke", "f": self.f, "key": self.key,
               "value": self.value if self.f == "put" else None, "time": self.invoke}
        out = [inv]
        if self.complete is not None or self.outcome != UNKNOWN:
            typ = {OK: "ok", FAIL: "fail", UNKNOWN: "info"}[self.outcome]
            val = self.result if self.f == "get" else self.value
            done: dict[str, Any] = {"process": self.process, "type": typ, "f": self.f,
                                    "key": self.key, "value": val,
                                    "time": self.complete if self.complete is not None else self.invoke}
            if self.error:
                done["error"] = self.error
            out.append(done)
        return out


class History:
    """All operations of a run, in invoke order."""

    def __init__(self) -> None:
        self.ops: list[Operation] = []

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.ops)

    def __len__(self) -> int:
        return len(self.ops)

    def events(self) -> list[dict[str, Any]]:
        """Invoke and completion events merged in time order (stable), as a Jepsen history."""
        evs: list[tuple[float, int, dict[str, Any]]] = []
        for i, op in enumerate(self.ops):
            for j, e in enumerate(op.to_events()):
                evs.append((e["time"], 2 * i + j, e))
        evs.sort(key=lambda t: (t[0], t[1]))
        return [e for _, _, e in evs]

    def write_jsonl(self, path: str | Path) -> None:
        """Write :meth:`events` as JSON lines, the format ``python -m checker`` reads."""
        from checker.history import write_jsonl

        write_jsonl(self.events(), path)

    def outcomes(self) -> dict[str, int]:
        out = {OK: 0, FAIL: 0, UNKNOWN: 0}
        for op in self.ops:
            out[op.outcome] += 1
        return out

    def errors(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for op in self.ops:
            if op.error:
                out[op.error] = out.get(op.error, 0) + 1
        return dict(sorted(out.items()))


def classify(reply: Reply) -> str:
    """ok / fail / unknown for a node's reply."""
    if not reply.error or reply.error == "not_found":
        return OK
    cls = ERRORS_BY_CODE.get(reply.error)
    return FAIL if cls is not None and cls.definite else UNKNOWN


@dataclass
class Workload:
    """What a client does: how many operations, on which keys, in which mix."""

    ops: int = 1000
    keys: int = 20
    #: weights of get, put, delete
    mix: tuple[float, float, float] = (0.5, 0.4, 0.1)
    #: mean pause between operations (exponential); 0 means back to back
    think: float = 0.01
    #: if set, operation n is not invoked before start + n * pace (a client that fell behind,
    #: e.g. after a timeout, catches up without pausing), so a run lasts about ops * pace
    pace: float | None = None
    #: how long a client waits for an answer before recording "unknown"
    timeout: float = 5.0
    #: key prefix; keys are f"{prefix}{i}"
    prefix: str = "k"


def split_ops(ops: int, clients: int) -> list[int]:
    """``ops`` operations over ``clients`` clients, exactly: each does ``ops // clients`` and the
    first ``ops % clients`` one more (fewer operations than clients: the rest do none)."""
    if clients < 1 or ops < 0:
        raise ValueError(f"split_ops needs at least one client and no negative count, not {ops} over {clients}.")
    base, extra = divmod(ops, clients)
    return [base + 1 if i < extra else base for i in range(clients)]


class SimClient:
    def __init__(
        self,
        env: simpy.Environment,
        index: int,
        rng: random.Random,
        history: History,
        trace: Trace,
        nodes: Callable[[], Sequence[str]],
        submit: Callable[[str, Any, Callable[[Reply], None]], bool],
        workload: Workload,
        link: Latency | None = None,
        target: str | None = None,
    ) -> None:
        self.env = env
        self.index = index
        self.rng = rng
        self.history = history
        self.trace = trace
        self.nodes = nodes
        self.submit = submit
        self.workload = workload
        self.link = link or Constant(0.0002)
        self.target = target
        self.done = False
        self.process = env.process(self._run())

    def _next_op(self, n: int) -> tuple[str, str, str | None, Any]:
        w = self.workload
        key = f"{w.prefix}{self.rng.randrange(w.keys)}"
        kb = key.encode()
        f = self.rng.choices(("get", "put", "delete"), weights=w.mix)[0]
        if f == "get":
            return f, key, None, Get(key=kb)
        if f == "put":
            value = f"c{self.index}-{n}"
            return f, key, value, Put(key=kb, value=value.encode())
        return f, key, None, Delete(key=kb)

    def _run(self) -> Generator[simpy.Event, Any, None]:
        env, w = self.env, self.workload
        start = env.now
        for n in range(w.ops):
            if w.pace is not None:
                wait = start + n * w.pace - env.now
                if wait > 0:
                    yield env.timeout(wait)
            if w.think > 0:
                yield env.timeout(self.rng.expovariate(1.0 / w.think))
            f, key, value, op = self._next_op(n)
            node = self.target or self.rng.choice(list(self.nodes()))
            rec = Operation(self.index, f, key, value, node, env.now)
            self.history.ops.append(rec)
            self.trace.record((env.now, "invoke", self.index, f, key, value, node))
            answered = env.event()

            def on_reply(reply: Reply, answered: simpy.Event = answered) -> None:
                # the reply travels back over the client link
                def arrive(_e: Any) -> None:
                    if not answered.triggered:
                        answered.succeed(reply)

                t = env.timeout(self.link.sample(self.rng))
                t.callbacks.append(arrive)

            def deliver(_e: Any, node: str = node, op: Any = op) -> None:
                if not self.submit(node, op, on_reply):
                    pass  # the node is down: no answer; the client times out

            t = env.timeout(self.link.sample(self.rng))
            t.callbacks.append(deliver)
            timeout = env.timeout(w.timeout)
            yield answered | timeout
            rec.complete = env.now
            if answered.triggered:
                reply = cast(Reply, answered.value)  # the one value on_reply succeeds it with
                rec.outcome = classify(reply)
                rec.error = reply.error
                if f == "get" and reply.ok:
                    rec.result = reply.value.decode() if reply.value is not None else None
            else:
                rec.outcome = UNKNOWN
                rec.error = "client_timeout"
            self.trace.record((env.now, "complete", self.index, f, key, rec.outcome, rec.error, rec.result))
            self.trace.maybe_flush()
        self.done = True
