"""A replicated cluster's slot map as routing hints: voters claim an even share, each once its
map shows the newest claims (the package docstring, **Hints**)."""

from __future__ import annotations

from collections.abc import Sequence

from kvcore.rebalance import Move, PlanError, hint_claims, plan_hints
from kvcore.slotmove.model import Assign, Done, Hints, Problem, Snapshot, Step, WaitOwned
from kvcore.slots import NUM_SLOTS, ranges_to_slots, slots_to_ranges


def newest_claims(snap: Snapshot) -> list[tuple[str | None, int]]:
    """Per slot, the claim at the highest epoch that a live node's map holds: what gossip brings
    every map to. A slot that two owners claim at that one epoch (which gossip never settles)
    names nobody here, so that a hint claim above it settles it."""
    best: list[tuple[str | None, int]] = [(None, 0)] * NUM_SLOTS
    tied = [False] * NUM_SLOTS
    for n in snap.live():
        for lo, hi, owner, epoch in n.runs:
            for s in range(lo, hi + 1):
                b_owner, b_epoch = best[s]
                if epoch > b_epoch:
                    best[s], tied[s] = (owner, epoch), False
                elif epoch == b_epoch and owner != b_owner:
                    tied[s] = True
    return [(None, 0) if tied[s] else best[s] for s in range(NUM_SLOTS)]


def hint_moves(snap: Snapshot, voters: Sequence[str]) -> list[Move]:
    """The hint moves (:func:`kvcore.rebalance.plan_hints`) from the newest claims the live maps
    hold (:func:`newest_claims`); the voters that are not up keep their slots and take none.
    Raises :class:`kvcore.rebalance.PlanError` with a sentence."""
    runs: dict[str, list[int]] = {}
    for s, (owner, _) in enumerate(newest_claims(snap)):
        if owner is not None:
            runs.setdefault(owner, []).append(s)
    assignment = {o: slots_to_ranges(sl) for o, sl in sorted(runs.items())}
    return plan_hints(assignment, voters, [v for v in voters if not snap.up(v)])


def hint_steps(snap: Snapshot, goal: Hints) -> list[Step]:
    """Claims that make the hints name only the voters, evenly; then a wait for every live voter
    to map them so. A voter that claims advertises every slot its own map gives it at the
    claim's epoch, so a claimer whose map still names it for slots that moved away from it would
    take them back: each claimer's map must show the newest claims first (:class:`WaitOwned`)."""
    if not snap.live():
        return [Problem("no member of the cluster answers; the slot map's hints cannot be mended")]
    best = newest_claims(snap)
    try:
        moves = hint_moves(snap, goal.voters)
    except PlanError as e:
        return [Problem(str(e))]
    if moves:
        waits = _hints_lag(snap, best, sorted({m.target for m in moves}))
        if waits:
            return waits
        base = snap.max_epoch()
        return [Assign(nid, tuple(ranges_to_slots(ranges)), base + i)
                for i, (nid, ranges) in enumerate(hint_claims(moves), 1)]
    return _hints_lag(snap, best, [v for v in goal.voters if snap.up(v)]) or [Done()]


def _hints_lag(snap: Snapshot, best: list[tuple[str | None, int]], nodes: Sequence[str]) -> list[Step]:
    """A :class:`WaitOwned` per owner for the slots where a node of ``nodes`` names another owner
    than the newest claim does (the owner, not the epoch: an owner that claims again advertises
    its slots at the new epoch, and a map that names it already routes the same way)."""
    lag: dict[str, tuple[list[int], set[str]]] = {}
    for nid in nodes:
        n = snap.nodes[nid]
        for s, (owner, _) in enumerate(best):
            if owner is not None and n.owner(s)[0] != owner:
                entry = lag.setdefault(owner, ([], set()))
                entry[0].append(s)
                entry[1].add(nid)
    return [WaitOwned(o, tuple(sorted(set(sl))), tuple(sorted(ns))) for o, (sl, ns) in sorted(lag.items())]
