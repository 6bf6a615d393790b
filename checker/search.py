"""The Wing-Gong-Lowe search: is one (single-key) history linearizable?

Theory of operation
-------------------
A history is linearizable when its operations can be put in one sequence that (1) respects
real-time order -- if ``a`` returned before ``b`` was invoked, ``a`` comes first -- and (2) is
legal for the sequential specification (Herlihy & Wing 1990). Wing & Gong (1993, "Testing and
verifying concurrent objects", JPDC 17) search for that sequence depth-first; Lowe (2017,
"Testing for linearizability", CCPE 29(4), §3-4) adds a memo of visited configurations, and
Porcupine (Athalye, ``porcupine/checker.go``, function ``checkSingle``) is the implementation
this module follows step by step:

* Every operation contributes a *call entry* and, if its outcome is known, a *return entry*.
  All entries go, sorted by time, into a doubly-linked list. At equal times call entries go
  first, so operations whose intervals touch count as concurrent (the permissive reading: the
  checker never reports a violation that a tie could explain).
* The search walks the list from the head. At a call entry it tries to *linearize* that
  operation now: if the step is legal in the current state, it pushes ``(entry, state)`` on a
  stack, moves to the new state and *lifts* the call and return entries out of the list (the
  "dancing links" of Knuth), then restarts from the head. The first entry of the list that is
  a return entry is a barrier: the operation it belongs to must be linearized before anything
  invoked after that instant, so reaching a return entry means the current prefix is a dead
  end and the search *backtracks*: pop the stack, unlift, and try the next call entry.
* Lowe's memo: a configuration is the set of linearized operations (a Python ``int`` used as a
  bitset, bit ``i`` for operation ``i``) plus the model state. Reaching a configuration seen
  before cannot lead anywhere new, so the search treats it like an illegal step. States must
  be hashable; the memo is a ``set`` of ``(bitset, state)`` tuples.
* An operation with an unknown outcome has no return entry (its return is at +infinity, as in
  Porcupine), so it never blocks anything and may be linearized at any point after its call.
  The search succeeds as soon as every *completed* operation is linearized: the unknown ones
  still in the list are taken never to have happened. (Porcupine instead appends their returns
  at the end and lets them succeed there; since no completed operation can observe them, the
  two are the same, and stopping early saves the tail of the search.) For the same reason an
  unknown operation invoked after the last completion is dropped before the search starts.
* *Observers first* (an addition to Porcupine, sound by an exchange argument). Let ``r`` be
  a read, or a ``cas`` whose comparison failed -- an operation that never changes the state --
  whose call entry lies before the first return entry, and which is legal in the current
  state. If any linearization completes the current configuration, one does with ``r`` next:
  move ``r`` to the front; it is legal there, it changes nothing for the operations it jumps
  over, and no remaining operation must precede it (none has returned before ``r``'s call,
  or its return entry would come first in the list). So once the step with ``r`` has failed,
  the search does not try the alternatives: it backtracks straight past that configuration.
* *Pointless unknown operations* (another addition). An unknown operation is never required,
  so one that changes nothing in the current state, or that is directly followed by a blind
  write (put/write/delete, which overwrites whatever it did), can be deleted from any
  linearization. The search never takes such steps: it skips an unknown operation whose step
  leaves the state as it is, and after an unknown operation it does not take a blind write
  next. Without this, k concurrent unknown writes cost 2^k configurations even when nothing
  reads them (Jepsen histories are full of timed-out writes). Fewer moves are allowed right
  after an unknown operation, so those configurations are memoised apart, as ``(bitset,
  state, True)``; one memoised after a completed operation (all moves allowed) covers both.

Search cost is exponential in the worst case (the problem is NP-complete: Gibbons & Korach
1997, "Testing shared memories", SIAM J. Comput. 26(4)), and in practice it grows with how many
operations on one key overlap in time: on simulated put/get/delete histories of one key, 10
clients take ~0.02 s for 2000 operations, 20 clients ~1 s for 4000, 30 clients more than 20 s
(Porcupine has the same shape; spreading clients over more keys keeps each key cheap). So
every search takes a deadline and answers ``None`` ("unknown") when it passes.
:func:`iter_search` is the same search as a generator that pauses every few thousand steps,
so that :mod:`checker.checker` can share time between keys the way Porcupine runs
partitions in parallel, and stop them all at the first violation.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Generator, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from checker.models import APPEND, CAS, CAS_FAIL, CAS_MAYBE, READ, WRITE, State, Step

#: (call time, return time or None when the outcome is unknown, compiled step)
SearchOp = tuple[float, float | None, Step]

# How many loop iterations between two pauses (a look at the clock costs ~50 ns, a step ~1 us).
_PAUSE_EVERY = 4096
#: Seconds it takes to free one memoised configuration (measured: 2.5 M configurations of a
#: 3000-operation history take ~1.1 s). A search stops early enough to free its memo before
#: the deadline, so that a timeout is kept even when the memo holds millions of entries.
RELEASE_SECONDS_PER_CONFIG = 0.5e-6


@dataclass(slots=True)
class SearchResult:
    #: True, False, or None when the deadline passed first
    linearizable: bool | None
    #: configurations memoised (a measure of the work done)
    explored: int = 0


def search(
    ops: Sequence[SearchOp],
    init_states: Iterable[State],
    deadline: float | None = None,
) -> SearchResult:
    """Decide whether ``ops`` linearize from at least one of ``init_states``.

    ``deadline`` is a :func:`time.perf_counter` instant; past it the answer is ``None``.
    """
    with gc_paused():
        steps = iter_search(ops, init_states)
        while True:
            try:
                explored = next(steps)
            except StopIteration as done:
                result: SearchResult = done.value
                return result
            if deadline is not None and past(deadline, explored):
                steps.close()
                return SearchResult(linearizable=None, explored=explored)


def past(deadline: float, explored: int) -> bool:
    """Is it time to stop a search that has memoised ``explored`` configurations?"""
    return time.perf_counter() + explored * RELEASE_SECONDS_PER_CONFIG > deadline


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector: the memo holds millions of tuples that can never be
    part of a cycle, and the collector would traverse them again and again (~15% of the run
    time on the Porcupine kv histories)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def iter_search(
    ops: Sequence[SearchOp],
    init_states: Iterable[State],
) -> Generator[int, None, SearchResult]:
    """:func:`search` as a generator: it yields the number of configurations explored so far
    every few thousand steps and returns the :class:`SearchResult` (never ``None``). Run it
    inside :func:`gc_paused`."""
    completed_rets = [ret for _, ret, _ in ops if ret is not None]
    last_ret = max(completed_rets) if completed_rets else None
    kept = [
        op for op in ops if op[1] is not None or (last_ret is not None and op[0] <= last_ret)
    ]
    kept.sort(key=lambda op: op[0])
    n = len(kept)

    # Entries: 0 is the head, 1..E the calls and returns in time order, E+1 the tail (a
    # barrier, like a return entry).
    timeline: list[tuple[float, int, int]] = []
    for i, (call, ret, _) in enumerate(kept):
        timeline.append((call, 0, i))
        if ret is not None:
            timeline.append((ret, 1, i))
    timeline.sort()
    size = len(timeline) + 2
    tail = size - 1
    nxt = [*range(1, size), tail]
    prv = [0, *range(0, size - 1)]
    is_call = [False] * size
    op_of = [0] * size
    match = [0] * size  # call entry -> its return entry (0: unknown outcome, none)
    call_entry = [0] * n
    for position, (_, kind, i) in enumerate(timeline, start=1):
        op_of[position] = i
        if kind == 0:
            is_call[position] = True
            call_entry[i] = position
        else:
            match[call_entry[i]] = position

    kinds = [step[0] for _, _, step in kept]
    arg_a = [step[1] for _, _, step in kept]
    arg_b = [step[2] for _, _, step in kept]
    bits = [1 << i for i in range(n)]
    total_completed = sum(1 for _, ret, _ in kept if ret is not None)

    # Keys: (bitset, state) after a completed operation, (bitset, state, True) after an
    # unknown one (fewer moves are allowed there; see "pointless unknown operations").
    cache: set[tuple[int, State] | tuple[int, State, bool]] = set()
    result = SearchResult(linearizable=False)
    countdown = _PAUSE_EVERY

    for init in init_states:
        if (0, init) in cache:
            continue  # explored from another initial state already: a dead end
        cache.add((0, init))
        remaining = total_completed
        if remaining == 0:
            result.linearizable = True
            break
        state: State = init
        linearized = 0
        after_unknown = False  # was the last operation linearized one with unknown outcome?
        stack: list[tuple[int, State, int, bool]] = []
        entry = nxt[0]
        while True:
            countdown -= 1
            if countdown == 0:
                countdown = _PAUSE_EVERY
                yield len(cache)
            if is_call[entry]:
                i = op_of[entry]
                kind = kinds[i]
                if after_unknown and kind == WRITE:
                    entry = nxt[entry]  # it would make the unknown operation pointless
                    continue
                a = arg_a[i]
                # The step table of checker.models, inlined: a call per step is the
                # single largest cost of the loop otherwise.
                if kind == READ:
                    legal = state == a
                    new_state = state
                elif kind == WRITE:
                    legal = True
                    new_state = a
                elif kind == CAS:
                    legal = state == a
                    new_state = arg_b[i]
                elif kind == CAS_FAIL:
                    legal = state != a
                    new_state = state
                elif kind == CAS_MAYBE:
                    legal = True
                    new_state = arg_b[i] if state == a else state
                elif kind == APPEND:
                    # legal on an absent key or a string only (checker.models)
                    if state is None:
                        legal = True
                        new_state = a
                    elif type(state) is str:
                        legal = True
                        new_state = state + a
                    else:
                        legal = False
                        new_state = state
                else:
                    raise ValueError(f"unknown step kind {kind!r}")
                if not legal:
                    entry = nxt[entry]
                    continue
                new_linearized = linearized | bits[i]
                ret_entry = match[entry]
                if ret_entry:
                    config: tuple[int, State] | tuple[int, State, bool] = (
                        new_linearized,
                        new_state,
                    )
                    if config in cache:
                        if kind == READ or kind == CAS_FAIL:
                            entry = tail  # forced ("observers first"): nothing else to try
                        else:
                            entry = nxt[entry]
                        continue
                    cache.add(config)
                    # a negative entry marks a forced step, see the backtracking below
                    if kind == READ or kind == CAS_FAIL:
                        stack.append((-entry, state, linearized, after_unknown))
                    else:
                        stack.append((entry, state, linearized, after_unknown))
                    after_unknown = False
                else:
                    if new_state == state:
                        entry = nxt[entry]  # it changes nothing: pointless
                        continue
                    # explored after a completed op (all moves), or after an unknown one
                    if (new_linearized, new_state) in cache or (
                        new_linearized,
                        new_state,
                        True,
                    ) in cache:
                        entry = nxt[entry]
                        continue
                    cache.add((new_linearized, new_state, True))
                    stack.append((entry, state, linearized, after_unknown))
                    after_unknown = True
                state = new_state
                linearized = new_linearized
                # lift the call entry and, if any, its return entry
                before = prv[entry]
                after = nxt[entry]
                nxt[before] = after
                prv[after] = before
                if ret_entry:
                    before = prv[ret_entry]
                    after = nxt[ret_entry]
                    nxt[before] = after
                    prv[after] = before
                    remaining -= 1
                    if remaining == 0:
                        result.linearizable = True
                        result.explored = len(cache)
                        return result
                entry = nxt[0]
            else:
                # a return entry (or the tail): the prefix linearized so far is a dead end
                if not stack:
                    break
                entry, state, linearized, after_unknown = stack.pop()
                forced = entry < 0
                if forced:
                    entry = -entry
                ret_entry = match[entry]
                if ret_entry:
                    nxt[prv[ret_entry]] = ret_entry
                    prv[nxt[ret_entry]] = ret_entry
                    remaining += 1
                nxt[prv[entry]] = entry
                prv[nxt[entry]] = entry
                # after a forced step failed, the configuration before it has failed too
                entry = tail if forced else nxt[entry]
    result.explored = len(cache)
    return result
