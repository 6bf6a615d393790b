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

Search cost is exponential in the worst case (the problem is NP-complete: Gibbons & Korach
1997), so every search takes a deadline and answers ``None`` ("unknown") when it passes.

``collect=True`` turns the decision procedure into an enumeration: it keeps searching after a
success and returns every state the object can be in once all completed operations are
linearized (with any subset of the unknown ones). :mod:`sim.checker.witness` uses this to
summarise the part of a history before a quiescent cut by the set of states it can leave.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sim.checker.models import APPEND, CAS, CAS_FAIL, CAS_MAYBE, READ, WRITE, State, Step

#: (call time, return time or None when the outcome is unknown, compiled step)
SearchOp = tuple[float, float | None, Step]

# How many loop iterations between two looks at the clock.
_CLOCK_EVERY = 4096


@dataclass(slots=True)
class SearchResult:
    #: True, False, or None when the deadline passed first
    linearizable: bool | None
    #: configurations memoised (a measure of the work done)
    explored: int = 0
    #: with collect=True: every state reachable with all completed operations linearized
    final_states: set[State] = field(default_factory=set)


def search(
    ops: Sequence[SearchOp],
    init_states: Iterable[State],
    deadline: float | None = None,
    collect: bool = False,
) -> SearchResult:
    """Decide whether ``ops`` linearize from at least one of ``init_states``.

    ``deadline`` is a :func:`time.perf_counter` instant. With ``collect`` the search explores
    every configuration and fills ``final_states`` (``linearizable`` says if there was any).
    """
    completed_rets = [ret for _, ret, _ in ops if ret is not None]
    last_ret = max(completed_rets) if completed_rets else None
    kept = [
        op for op in ops if op[1] is not None or (last_ret is not None and op[0] <= last_ret)
    ]
    if collect:
        kept = list(ops)  # every unknown op can change the final state
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
    nxt = list(range(1, size)) + [tail]
    prv = [0] + list(range(0, size - 1))
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

    cache: set[tuple[int, State]] = set()
    result = SearchResult(linearizable=False)
    finals = result.final_states
    countdown = _CLOCK_EVERY
    clock = time.perf_counter

    for init in init_states:
        if (0, init) in cache:
            continue  # explored from another initial state already: a dead end
        cache.add((0, init))
        remaining = total_completed
        if remaining == 0:
            result.linearizable = True
            if not collect:
                break
            finals.add(init)
        state: State = init
        linearized = 0
        stack: list[tuple[int, State, int]] = []
        entry = nxt[0]
        while True:
            countdown -= 1
            if countdown == 0:
                countdown = _CLOCK_EVERY
                if deadline is not None and clock() > deadline:
                    result.linearizable = None
                    result.explored = len(cache)
                    return result
            if is_call[entry]:
                i = op_of[entry]
                kind = kinds[i]
                a = arg_a[i]
                # The step table of sim.checker.models, inlined: a call per step is the
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
                    legal = True
                    new_state = (state or "") + a
                else:
                    raise ValueError(f"unknown step kind {kind!r}")
                if legal:
                    new_linearized = linearized | bits[i]
                    config = (new_linearized, new_state)
                    if config in cache:
                        if kind == READ or kind == CAS_FAIL:
                            # forced (see "observers first"): nothing else to try here
                            entry = tail
                            continue
                    else:
                        cache.add(config)
                        if kind == READ or kind == CAS_FAIL:
                            stack.append((-entry, state, linearized))
                        else:
                            stack.append((entry, state, linearized))
                        state = new_state
                        linearized = new_linearized
                        # lift the call entry and, if any, its return entry
                        before = prv[entry]
                        after = nxt[entry]
                        nxt[before] = after
                        prv[after] = before
                        ret_entry = match[entry]
                        if ret_entry:
                            before = prv[ret_entry]
                            after = nxt[ret_entry]
                            nxt[before] = after
                            prv[after] = before
                            remaining -= 1
                        if remaining == 0:
                            result.linearizable = True
                            if not collect:
                                result.explored = len(cache)
                                return result
                            finals.add(state)
                        entry = nxt[0]
                        continue
                entry = nxt[entry]
            else:
                # a return entry (or the tail): the prefix linearized so far is a dead end
                if not stack:
                    break
                entry, state, linearized = stack.pop()
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
