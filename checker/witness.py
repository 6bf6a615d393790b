"""Smallest witnesses: which operations of a non-linearizable history cannot be ordered.

Theory of operation
-------------------
"Not linearizable" is only useful with a short list of operations a person can check by hand.
A witness here is a set ``W`` of operations of one key, plus a set ``S`` of states that key may
hold when ``W`` begins, such that ``W`` cannot be linearized from any state in ``S``. Every
reduction below keeps the implication *"if the history were linearizable, W would be
linearizable from some state of S"*, so a witness is a proof of the violation, never an
artefact of the shrinking. It is built in three steps, each justified by a property of
linearizability:

1. **Shortest failing prefix** (prefix closure). Cut the key's history just after its
   ``j``-th completion; operations invoked before the cut that complete after it are *pending*
   there, so (as in Herlihy & Wing 1990, §3) they may take effect or not -- their steps
   become the "unknown" versions of :mod:`checker.models`. Any linearization of the full
   history restricts to one of each prefix, so failure is monotone in ``j`` and a binary
   search finds the least failing ``j``. The operation whose completion is the ``j``-th is
   the *culprit*: with it still running everything could be ordered; once it returned,
   nothing can.

2. **A late quiescent cut** (composition at a cut). A point ``q`` where no completed
   operation of the prefix is running splits it in two: every completed operation before
   ``q`` precedes every completed operation after ``q`` in real time, so any linearization
   runs all of the "before" part first. The "before" part is then summarised by a set ``S``
   of states it can leave (:func:`reachable_states`); unknown operations invoked before ``q``
   are kept on the "after" side as well, since they may take effect on either side or never.
   ``S`` may over-approximate -- it lets unknown writes take effect any number of times,
   which keeps the enumeration small -- because a larger ``S`` only makes the test below
   harder to pass. If the "after" part fails from every state in ``S`` it is a witness. Cuts
   are tried from the latest (the shortest witness) towards earlier ones, skipping
   exponentially (1st, 2nd, 4th, 8th, ... latest) and then bisecting between the last cut that
   did not work and the first that did; the cut before the first operation always works
   (``S`` = the initial state).

3. **Dropping observers** (state-preserving operations). Removing an operation that never
   changes the state -- a read/get, or a ``cas`` whose comparison failed -- from a
   linearization leaves a legal linearization, so a witness without it is still a proof.
   Observers are dropped in groups, halving a group that cannot go as a whole (a simplified
   ``ddmin`` of Zeller & Hildebrandt 2002, "Simplifying and isolating failure-inducing input",
   IEEE TSE 28(2)). An observer kept was needed when it was tried, and
   stays needed after others go (fewer observers only make linearizing easier), so the
   result is 1-minimal with respect to these removals.

Removing a write, an append, a successful ``cas`` or an unknown operation is *not* sound (a
later read may depend on it), so those stay. What "minimal" means, then: no shorter prefix
fails (step 1, exact); the cut is the latest one that works if "works" is monotone in the cut,
and a working cut in any case (step 2, a search heuristic, never unsound); no kept observer can
go (step 3, exact). It is not the absolute smallest failing subset, which would be unsound to
look for by deletion. All steps run under a deadline; when it passes, the best witness found
so far is returned, marked not minimal.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from checker.history import Op
from checker.models import (
    APPEND,
    CAS,
    CAS_FAIL,
    CAS_MAYBE,
    READ,
    STATE_PRESERVING,
    State,
    Step,
    apply_step,
)
from checker.search import SearchOp, search


@dataclass(frozen=True, slots=True)
class Counterexample:
    """A proof that one key's history is not linearizable (see the module docstring)."""

    key: str | None
    #: the witness: operations of ``key`` that cannot be linearized from any of
    #: ``start_states``, in invocation order
    ops: tuple[Op, ...]
    #: the states the key may be in when the witness begins
    start_states: tuple[State, ...]
    #: the operation whose completion makes the history non-linearizable
    culprit: Op
    #: completed operations before the witness's quiescent cut, summarised by start_states
    skipped: int
    #: the time of that cut (the call of the witness's first completed operation): the key's
    #: completed operations that returned before it are the ones summarised; None: no cut
    cut: float | None
    #: operations of the key (after dropping those that constrain nothing) in the shortest
    #: failing prefix
    prefix_size: int
    #: the witness operations whose outcome counts as unknown (may or may not take effect):
    #: unknown in the history, or still running when the culprit returned
    pending: tuple[Op, ...]
    #: False when the deadline cut the shrinking short (the witness is still a valid proof)
    minimal: bool


@dataclass(slots=True)
class _Item:
    op: Op
    step: Step
    call: int  # position in the key's timeline
    ret: int | None  # None: unknown outcome


# A witness from a cut: (after part, start states, completed ops skipped, time of the cut)
_Cut = tuple[list[_Item], tuple[State, ...], int, float | None]


def unknown_version(step: Step) -> Step | None:
    """The step of an operation whose outcome is not known (None: it constrains nothing)."""
    kind, a, b = step
    if kind == READ:
        return None
    if kind in (CAS, CAS_FAIL):
        return (CAS_MAYBE, a, b)
    return step


def find_counterexample(
    key: str | None,
    ops: Sequence[tuple[Op, Step]],
    init: State,
    deadline: float | None,
) -> Counterexample:
    """Shrink the non-linearizable history ``ops`` (one key, already compiled) to a witness."""
    items = _timeline(ops)
    returns = sorted(item.ret for item in items if item.ret is not None)
    minimal = True

    # 1. the shortest failing prefix: the least j whose prefix fails; returns[-1] fails.
    low, high = 0, len(returns) - 1
    while low < high:
        middle = (low + high) // 2
        outcome = search(_as_search(_prefix(items, returns[middle])), [init], deadline).linearizable
        if outcome is None:
            minimal = False
            break
        if outcome:
            low = middle + 1
        else:
            high = middle
    cut_at = returns[high]
    prefix = _prefix(items, cut_at)
    culprit = next(item.op for item in items if item.ret == cut_at)

    # 2. a late quiescent cut whose "after" part fails from every state "before" can leave
    witness: list[_Item] = list(prefix)
    start_states: tuple[State, ...] = (init,)
    skipped = 0
    cut: float | None = None
    if minimal:
        cuts = _quiescent_cuts(prefix)
        # tried[i]: the witness the i-th latest cut gives, or None; index len(cuts) stands for
        # the cut before everything, which always works
        tried: dict[int, _Cut | None] = {len(cuts): (list(prefix), (init,), 0, None)}

        def works(index: int) -> bool | None:
            """Does the index-th latest cut give a witness? None: out of time."""
            if index not in tried:
                outcome = _try_cut(prefix, cuts[index], init, deadline)
                if outcome is None:
                    return None
                tried[index] = outcome or None
            return tried[index] is not None

        # gallop towards earlier cuts (1st, 2nd, 4th, 8th, ... latest) until one works...
        failed, index, stride = -1, 0, 1
        while (answer := works(index)) is False:
            failed, index, stride = index, min(index + stride, len(cuts)), stride * 2
        if answer is None:
            minimal = False
        # ...then bisect between the last cut that did not work and the first that did
        low, high = failed + 1, index
        while minimal and low < high:
            middle = (low + high) // 2
            answer = works(middle)
            if answer is None:
                minimal = False
            elif answer:
                high = middle
            else:
                low = middle + 1
        # the latest cut known to work (the bisection's answer, unless time ran out first)
        chosen = tried[min(i for i, found in tried.items() if found is not None)]
        assert chosen is not None
        witness, start_states, skipped, cut = chosen

    # 3. drop the state-preserving operations that the violation does not need
    if minimal:
        observers = [
            it for it in witness if it.ret is not None and it.step[0] in STATE_PRESERVING
        ]
        groups = [observers] if observers else []
        while groups:
            group = groups.pop(0)
            members = {id(it) for it in group}
            trial = [it for it in witness if id(it) not in members]
            outcome = search(_as_search(trial), start_states, deadline).linearizable
            if outcome is None:
                minimal = False
                break
            if outcome is False:
                witness = trial
            elif len(group) > 1:
                half = len(group) // 2
                groups[:0] = [group[:half], group[half:]]

    witness.sort(key=lambda it: it.call)
    return Counterexample(
        key=key,
        ops=tuple(it.op for it in witness),
        start_states=start_states,
        culprit=culprit,
        skipped=skipped,
        cut=cut,
        prefix_size=len(prefix),
        pending=tuple(it.op for it in witness if it.ret is None),
        minimal=minimal,
    )


def _timeline(ops: Sequence[tuple[Op, Step]]) -> list[_Item]:
    """Number the calls and returns of ``ops`` in the order the search sees them (ties: calls
    first), so that prefixes and cuts can be stated with integers."""
    events: list[tuple[float, int, int]] = []
    for i, (op, _) in enumerate(ops):
        events.append((op.call, 0, i))
        if op.ret is not None:
            events.append((op.ret, 1, i))
    events.sort()
    call_at = [0] * len(ops)
    ret_at: list[int | None] = [None] * len(ops)
    for position, (_, kind, i) in enumerate(events):
        if kind == 0:
            call_at[i] = position
        else:
            ret_at[i] = position
    return [_Item(op, step, call_at[i], ret_at[i]) for i, (op, step) in enumerate(ops)]


def _prefix(items: Sequence[_Item], cut_at: int) -> list[_Item]:
    """The history up to and including the event at ``cut_at`` (a return)."""
    prefix: list[_Item] = []
    for item in items:
        if item.call >= cut_at:
            continue
        if item.ret is not None and item.ret <= cut_at:
            prefix.append(item)
            continue
        step = unknown_version(item.step)
        if step is not None:
            prefix.append(_Item(item.op, step, item.call, None))
    return prefix


def _try_cut(prefix: Sequence[_Item], q: int, init: State, deadline: float | None) -> _Cut | Literal[False] | None:
    """The witness if the cut at position ``q`` gives one, False if it does not, None when the
    deadline passed."""
    before = [it for it in prefix if it.ret is not None and it.ret < q]
    before += [it for it in prefix if it.ret is None and it.call < q]
    after = [it for it in prefix if it.call >= q or it.ret is None]
    states = reachable_states(before, init, deadline)
    if states is None:
        return None
    if not states:
        return False  # cannot happen (the part before the culprit linearizes); be safe
    start_states = tuple(sorted(states, key=_state_order))
    outcome = search(_as_search(after), start_states, deadline).linearizable
    if outcome is None:
        return None
    if outcome:
        return False
    skipped = sum(1 for it in before if it.ret is not None)
    cut_time = next(it.op.call for it in prefix if it.call == q)
    return sorted(after, key=lambda it: it.call), start_states, skipped, cut_time


def reachable_states(
    items: Sequence[_Item], init: State, deadline: float | None
) -> set[State] | None:
    """States the object may hold once every completed operation of ``items`` is linearized
    (None when the deadline passed). A superset: an unknown write or cas may take effect any
    number of times here, so that the configurations need not say which of them happened
    (2^k subsets for k unknown operations). An unknown append still happens at most once, or
    the strings would grow without end."""
    completed = [it for it in items if it.ret is not None]
    once = [it for it in items if it.ret is None and it.step[0] == APPEND]
    unknown = [it for it in items if it.ret is None and it.step[0] != APPEND]
    completed_bits = (1 << len(completed)) - 1
    completed += once  # an unknown append takes a bit, but is not required
    seen: set[tuple[int, State]] = {(0, init)}
    frontier: list[tuple[int, State]] = [(0, init)]
    finals: set[State] = set()
    countdown = 1024
    while frontier:
        countdown -= 1
        if countdown == 0:
            countdown = 1024
            if _expired(deadline):
                return None
        done, state = frontier.pop()
        if done & completed_bits == completed_bits:
            finals.add(state)
            continue
        # the earliest return among the operations not yet linearized bounds what may go next
        barrier = min(
            it.ret for i, it in enumerate(completed) if not done >> i & 1 and it.ret is not None
        )
        for i, it in enumerate(completed):
            if not done >> i & 1 and it.call < barrier:
                legal, new_state = apply_step(state, it.step)
                if legal and (done | 1 << i, new_state) not in seen:
                    seen.add((done | 1 << i, new_state))
                    frontier.append((done | 1 << i, new_state))
        for it in unknown:
            if it.call < barrier:
                legal, new_state = apply_step(state, it.step)
                if legal and (done, new_state) not in seen:
                    seen.add((done, new_state))
                    frontier.append((done, new_state))
    return finals


def _quiescent_cuts(prefix: Sequence[_Item]) -> list[int]:
    """Positions just before a completed operation's call at which no completed operation is
    running, latest first, excluding the trivial cut before everything."""
    completed = sorted((it for it in prefix if it.ret is not None), key=lambda it: it.call)
    cuts: list[int] = []
    running_until = -1  # the latest return among completed ops called so far
    for index, item in enumerate(completed):
        if index > 0 and running_until < item.call:
            cuts.append(item.call)
        running_until = max(running_until, item.ret if item.ret is not None else -1)
    return cuts[::-1]


def _as_search(items: Sequence[_Item]) -> list[SearchOp]:
    return [(float(it.call), None if it.ret is None else float(it.ret), it.step) for it in items]


def _expired(deadline: float | None) -> bool:
    return deadline is not None and time.perf_counter() > deadline


def _state_order(state: State) -> tuple[int, str]:
    return (0, "") if state is None else (1, repr(state))
