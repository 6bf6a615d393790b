"""A fast per-key model check: every successful read returns a value it may legally see.

This is the check the foundation's scenario tests use: cheaper than a full linearizability search
(:mod:`checker`) and enough to catch lost writes and stale reads. For one key, a read that
completed ``ok`` may return:

- the value of any write (Put) or Delete (value None) that was invoked before the read completed
  and is not *known to be overwritten* before the read was invoked; a write W is known to be
  overwritten when another ``ok`` write W2 was invoked after W completed and completed before the
  read was invoked;
- writes whose outcome is unknown are never known to be overwritten (they may take effect at any
  time after their invoke), and never overwrite anything for certain;
- the initial absence (None) if no ``ok`` write completed before the read was invoked.

Writes that failed (definite errors) are ignored: they certainly did not take effect.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from sim.clients import FAIL, OK, UNKNOWN, Operation


@dataclass(frozen=True)
class Violation:
    read: Operation
    allowed: tuple[str | None, ...]

    def __str__(self) -> str:
        r = self.read
        return (
            f"process {r.process} read {r.result!r} from key {r.key!r} at "
            f"[{r.invoke:.6f}, {r.complete:.6f}] via {r.node}; allowed: {sorted(map(str, self.allowed))}"
        )


def check_reads(ops: Iterable[Operation]) -> list[Violation]:
    by_key: dict[str, list[Operation]] = {}
    for op in ops:
        by_key.setdefault(op.key, []).append(op)
    out: list[Violation] = []
    for key in sorted(by_key):
        out.extend(_check_key(by_key[key]))
    return out


def _end(op: Operation) -> float:
    if op.outcome == UNKNOWN or op.complete is None:
        return math.inf
    return op.complete


def _check_key(ops: list[Operation]) -> list[Violation]:
    writes = [o for o in ops if o.f in ("put", "delete") and o.outcome != FAIL]
    ok_writes = [o for o in writes if o.outcome == OK]
    out: list[Violation] = []
    for r in ops:
        if r.f != "get" or r.outcome != OK:
            continue
        assert r.complete is not None
        allowed: set[str | None] = set()
        # initial absence, unless some ok write completed before the read began
        if not any(_end(w) < r.invoke for w in ok_writes):
            allowed.add(None)
        for w in writes:
            if w.invoke >= r.complete:
                continue
            overwritten = any(
                w2 is not w and w2.invoke > _end(w) and _end(w2) < r.invoke for w2 in ok_writes
            )
            if not overwritten:
                allowed.add(w.value if w.f == "put" else None)
        if r.result not in allowed:
            out.append(Violation(r, tuple(allowed)))
    return out
