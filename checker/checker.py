"""``check()``: split a history by key, search each key, explain a violation.

Theory of operation
-------------------
Linearizability is *local* (Herlihy & Wing 1990, Theorem 1): a history of several objects is
linearizable iff the sub-history of each object is. Keys of a key-value store are independent
objects, so the history is split by key and each key is searched on its own -- what Horn &
Kroening (2015, "Faster linearizability checking via P-compositionality") call
P-compositionality and Porcupine does with ``Model.Partition``. The cost of the search is
exponential in the concurrency of *one* key instead of the whole history.

The keys share one overall deadline. Their searches (:func:`checker.search.iter_search`)
run round-robin, smallest key first, in slices that double every round, so that a hard key
cannot starve the others and a tight budget still settles as many keys as it can; the first
violation stops them all (as Porcupine's parallel partitions do), unless ``exhaustive``. The
verdict is
``not_linearizable`` if any key fails (that is conclusive even when other keys ran out of
time), else ``unknown`` if any key ran out of time (reported as *undecided*:
:func:`verdict_text`), else ``linearizable``. For a violation,
the failing key with the fewest operations is shrunk to a witness by
:func:`checker.witness.find_counterexample`.

Before the search, unless ``prepass=False``, each key goes through
:func:`checker.prepass.drop_unread_writes`: on a key with no ``cas`` and no ``append``, an
unknown write or delete whose value no read returns is dropped (it can always be placed last,
or nowhere; the proof is in :mod:`checker.prepass`). The verdict is the same either way, and
a witness is still shrunk from the failing key's full list (when several keys fail, the
pre-pass may change which one the search settles first, and so which one it comes from).
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from checker.history import Op, events_to_ops
from checker.models import Model, Step, detect_model, get_model
from checker.prepass import drop_unread_writes
from checker.search import SearchResult, gc_paused, iter_search, past
from checker.witness import Counterexample, find_counterexample

Verdict: TypeAlias = Literal["linearizable", "not_linearizable", "unknown"]
LINEARIZABLE: Verdict = "linearizable"
NOT_LINEARIZABLE: Verdict = "not_linearizable"
UNKNOWN: Verdict = "unknown"

#: The words a person reads for each verdict. The values above stay as they are in the API and
#: in JSON; in reports, "unknown" is kept for an operation's outcome (``info``: it may or may not
#: have taken effect) and a check whose time budget ran out is *undecided*.
VERDICT_WORDS: dict[str, str] = {
    LINEARIZABLE: "linearizable",
    NOT_LINEARIZABLE: "not linearizable",
    UNKNOWN: "undecided",
}


def verdict_text(verdict: str) -> str:
    """The human-facing word(s) for a verdict: ``"unknown"`` reads ``"undecided"`` (the time
    budget ran out); any other value (e.g. a sweep's ``"error"``) reads with spaces."""
    return VERDICT_WORDS.get(verdict, verdict.replace("_", " "))


@dataclass(frozen=True, slots=True)
class KeyResult:
    """The verdict for one key (``key`` is None for a single register)."""

    key: str | None
    verdict: Verdict
    #: operations that constrain the search (after dropping failed writes and unanswered reads)
    ops: int
    #: of which with an unknown outcome
    unknown_ops: int
    #: configurations the search memoised
    explored: int
    #: seconds spent searching this key
    elapsed: float
    #: of ``ops``, unknown writes the pre-pass dropped before the search (checker.prepass)
    dropped: int = 0


@dataclass(frozen=True, slots=True)
class CheckResult:
    verdict: Verdict
    model: str
    #: seconds for the whole check, witness included
    elapsed: float
    #: per-key results, in key order (None first)
    keys: dict[str | None, KeyResult] = field(default_factory=dict)
    #: for ``not_linearizable`` (and ``witness=True``): the proof, see checker.witness
    counterexample: Counterexample | None = None
    #: all operations of the history, failed ones included
    total_ops: int = 0

    @property
    def linearizable(self) -> bool | None:
        """True / False, or None when the time budget ran out."""
        return {LINEARIZABLE: True, NOT_LINEARIZABLE: False}.get(self.verdict)

    @property
    def witness(self) -> list[Op]:
        """The operations that cannot be ordered (empty unless ``not_linearizable``)."""
        return list(self.counterexample.ops) if self.counterexample is not None else []


def check(
    history: Iterable[Op] | Iterable[Mapping[str, Any]],
    model: str | Model | None = None,
    timeout: float | None = None,
    *,
    witness: bool = True,
    exhaustive: bool = False,
    prepass: bool = True,
) -> CheckResult:
    """Check a history for linearizability.

    ``history`` is a list of :class:`Op` or of invoke/completion event dicts (converted with
    :func:`events_to_ops`). ``model`` is ``"kv"``, ``"register"``, a :class:`Model`, or None to
    pick the model whose operation names fit. ``timeout`` (seconds, None = no limit) bounds
    the whole check; past it the verdict is ``unknown`` unless a violation was already found.
    With ``witness`` a violation comes with a shrunk :class:`Counterexample` (the shrinking
    uses what is left of the timeout, but at most 10 s beyond the search when there is none).
    The search stops at the first key found not linearizable, leaving the keys it had not
    settled ``unknown`` in :attr:`CheckResult.keys`, unless ``exhaustive``. With ``prepass``
    the unknown writes nothing reads are dropped before the search (:mod:`checker.prepass`;
    it never changes the verdict, ``False`` is there to measure it).
    """
    started = time.perf_counter()
    deadline = None if timeout is None else started + max(0.0, timeout)
    items = list(history)
    ops: list[Op] = (
        events_to_ops(items)  # type: ignore[arg-type]
        if items and isinstance(items[0], Mapping)
        else items  # type: ignore[assignment]
    )
    chosen = detect_model(ops) if model is None else get_model(model)

    by_key: dict[str | None, list[tuple[Op, Step]]] = {}
    for op in ops:
        step = chosen.compile(op)
        by_key.setdefault(op.key, [])
        if step is not None:
            by_key[op.key].append((op, step))

    searched = by_key
    if prepass:
        searched = {key: drop_unread_writes(key_ops)[0] for key, key_ops in by_key.items()}
    results = _search_keys(by_key, searched, chosen, deadline, exhaustive)

    verdicts = {r.verdict for r in results.values()}
    verdict = (
        NOT_LINEARIZABLE
        if NOT_LINEARIZABLE in verdicts
        else UNKNOWN
        if UNKNOWN in verdicts
        else LINEARIZABLE
    )
    counterexample = None
    if verdict == NOT_LINEARIZABLE and witness:
        failing = min(
            (r for r in results.values() if r.verdict == NOT_LINEARIZABLE),
            key=lambda r: (r.ops, _key_order(r.key)),
        )
        search_time = time.perf_counter() - started
        budget = started + search_time + 10.0 if deadline is None else deadline
        counterexample = find_counterexample(
            failing.key, by_key[failing.key], chosen.init, budget
        )
    return CheckResult(
        verdict=verdict,
        model=chosen.name,
        elapsed=time.perf_counter() - started,
        keys={k: results[k] for k in sorted(results, key=_key_order)},
        counterexample=counterexample,
        total_ops=len(ops),
    )


# Pauses (of 4096 search steps, a few milliseconds) per key in the first round; doubled every
# round. Counting steps rather than seconds keeps the order in which keys finish, and so the
# key the witness comes from, independent of the machine's speed.
_FIRST_SLICE = 4


def _search_keys(
    by_key: dict[str | None, list[tuple[Op, Step]]],
    searched: dict[str | None, list[tuple[Op, Step]]],
    model: Model,
    deadline: float | None,
    exhaustive: bool,
) -> dict[str | None, KeyResult]:
    """Search every key, sharing time round-robin in slices that double every round, so that
    one hard key cannot starve the others, and stop at the first violation unless
    ``exhaustive`` (Porcupine runs the partitions in parallel and kills them all at the first
    violation, ``checker.go``; this is that, on one core and deterministic). ``searched`` is
    ``by_key`` after the pre-pass; the order of the keys and the counts in the results come
    from ``by_key``, so that they do not depend on the pre-pass."""
    order = sorted(by_key, key=lambda k: (len(by_key[k]), _key_order(k)))
    running: dict[str | None, Generator[int, None, SearchResult]] = {}
    elapsed: dict[str | None, float] = dict.fromkeys(order, 0.0)
    explored: dict[str | None, int] = dict.fromkeys(order, 0)
    outcome: dict[str | None, bool | None] = dict.fromkeys(order)
    memo_total = 0  # configurations held by the searches still running
    active = order
    time_slice = _FIRST_SLICE
    stop = deadline is not None and time.perf_counter() > deadline
    with gc_paused():
        while active and not stop:
            unsettled: list[str | None] = []
            for key in active:
                if stop:
                    unsettled.append(key)
                    continue
                slice_started = time.perf_counter()
                if key not in running:
                    ops = [(op.call, op.ret, step) for op, step in searched[key]]
                    running[key] = iter_search(ops, [model.init])
                steps = running[key]
                try:
                    for _ in range(time_slice):
                        count = next(steps)
                        memo_total += count - explored[key]
                        explored[key] = count
                        if deadline is not None and past(deadline, memo_total):
                            stop = True
                            break
                    unsettled.append(key)
                except StopIteration as done:
                    found: SearchResult = done.value
                    outcome[key] = found.linearizable
                    memo_total -= explored[key]
                    explored[key] = found.explored
                    del running[key]
                    if found.linearizable is False and not exhaustive:
                        stop = True
                elapsed[key] += time.perf_counter() - slice_started
            active = unsettled
            time_slice *= 2
    for steps in running.values():
        steps.close()

    results: dict[str | None, KeyResult] = {}
    for key in order:
        result = outcome[key]
        key_ops = by_key[key]
        results[key] = KeyResult(
            key=key,
            verdict=LINEARIZABLE if result else UNKNOWN if result is None else NOT_LINEARIZABLE,
            ops=len(key_ops),
            unknown_ops=sum(1 for op, _ in key_ops if op.ret is None),
            explored=explored[key],
            elapsed=elapsed[key],
            dropped=len(key_ops) - len(searched[key]),
        )
    return results


def _key_order(key: str | None) -> tuple[int, str]:
    return (0, "") if key is None else (1, key)

