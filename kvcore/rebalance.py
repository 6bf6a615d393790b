"""Slot assignment plans: rebalance by weights with the fewest moves, and reshard N slots.

Theory of operation
-------------------
A plan is a list of :class:`Move` (source, target, slot ranges); carrying it out is someone
else's job (the CLI or a sim verb, slot by slot, with live migration). Planning is pure.

**Targets.** Each participating node gets ``16384 * w / sum(w)`` slots, rounded by the largest
remainder method (Hamilton's apportionment): every node gets the floor of its exact share, and the
slots left over go to the largest fractional parts, ties broken first in favour of the nodes that
own more than their floor now (no move for nothing: a plan's own result is planned as it is),
then of the node that owns more, then by node id, so the targets sum to
exactly 16384 and no node is more than one slot away from its exact share. A weight of 0 drains a
node (``remove-node``). As in ``redis-cli --cluster rebalance``, nodes that own no slots take part
only with ``use_empty`` (or when they are given an explicit weight).

**Fewest moves.** A slot needs to move only if its owner is above target. Every donor gives
exactly its surplus and every receiver takes exactly its deficit, so the number of slots moved is
``sum(max(0, have - target))``, which no plan can beat: each surplus slot has to leave its node
at least once. Donors and receivers are then paired greedily, largest surplus with largest
deficit (ties by id), which keeps the number of distinct (source, target) pairs small. A donor
gives away its highest-numbered slots first, so the slots it keeps, and the ones that move, stay
contiguous where they were.

**Hints** (:func:`plan_hints`). In a replicated cluster one Raft group serves every slot on
every node, and the slot map is only a routing hint (it spreads smart clients' first hops). So
nothing moves: a voter takes a hint by claiming the slots at a new epoch. The plan makes the map
name only the group's voters, spread evenly: every voter that can claim (it answers) gets an
even share (the targets above, weight 1 each) of the slots that no voter which cannot claim
holds; slots of a non-voter (a node removed, one that left or that the cluster forgot) or of no
node are all surplus, and a voter above its share gives the rest, paired as a rebalance is
(largest deficit, that is the voter holding fewest, first), so that as few slots as possible
change hands: after a voter is removed only its slots do, and a new voter takes exactly its
share from the others. A voter that cannot claim now keeps its slots and takes none.
:func:`hint_claims` turns the moves into one claim per receiving voter.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

from kvcore.slots import NUM_SLOTS, Range, count_slots, normalize, ranges_to_slots, slots_to_ranges


@dataclass(frozen=True)
class Move:
    """Move ``slots`` from ``source`` to ``target``."""

    source: str
    target: str
    slots: tuple[Range, ...]

    @property
    def count(self) -> int:
        return count_slots(self.slots)


class PlanError(ValueError):
    """A plan cannot be made; the message is a sentence."""


def targets(
    weights: Mapping[str, float], total: int = NUM_SLOTS, current: Mapping[str, int] | None = None
) -> dict[str, int]:
    """Slots per node in proportion to ``weights`` (largest remainder; sums to ``total``).

    Leftover slots go to the largest fractional parts; among equal ones, to the nodes that own
    more than their floor now (``current``), so that a balanced cluster is left as it is; then
    to those that own more; then by id.
    """
    if not weights:
        raise PlanError("There are no nodes to assign slots to.")
    for nid, w in weights.items():
        if w < 0:
            raise PlanError(f"The weight of node {nid} is negative ({w}).")
    exact_total = sum(Fraction(w).limit_denominator(10**6) for w in weights.values())
    if exact_total == 0:
        raise PlanError("All weights are zero: no node could own the slots.")
    shares = {nid: Fraction(w).limit_denominator(10**6) * total / exact_total for nid, w in weights.items()}
    out = {nid: int(s) for nid, s in shares.items()}  # floor (shares are >= 0)
    left = total - sum(out.values())
    cur = current or {}
    # among equal remainders, first the nodes that hold more than their floor now: the extra slot
    # saves each of them a move, and a plan's result (where exactly the chosen nodes hold one
    # above their floor) chooses them again, so a balanced cluster is left as it is (by owning
    # more alone, a large node's floor could outrank a small node that holds its extra slot)
    by_remainder = sorted(weights, key=lambda nid: (-(shares[nid] - out[nid]), cur.get(nid, 0) <= out[nid],
                                                    -cur.get(nid, 0), nid))
    for nid in by_remainder[:left]:
        out[nid] += 1
    return {k: out[k] for k in sorted(out)}


def _pair(have: dict[str, list[int]], want: dict[str, int]) -> list[Move]:
    surplus = {n: len(s) - want.get(n, 0) for n, s in have.items() if len(s) > want.get(n, 0)}
    deficit = {n: want[n] - len(have.get(n, [])) for n in want if want[n] > len(have.get(n, []))}
    # donors give their highest slots first
    pools = {n: sorted(have[n]) for n in surplus}
    moves: dict[tuple[str, str], list[int]] = {}
    while surplus and deficit:
        src = min(surplus, key=lambda n: (-surplus[n], n))
        dst = min(deficit, key=lambda n: (-deficit[n], n))
        k = min(surplus[src], deficit[dst])
        taken, pools[src] = pools[src][-k:], pools[src][:-k]
        moves.setdefault((src, dst), []).extend(taken)
        for table, node in ((surplus, src), (deficit, dst)):
            table[node] -= k
            if table[node] == 0:
                del table[node]
    return [Move(s, d, tuple(slots_to_ranges(sl))) for (s, d), sl in sorted(moves.items())]


def plan_rebalance(
    assignment: Mapping[str, Iterable[Range]],
    nodes: Sequence[str],
    weights: Mapping[str, float] | None = None,
    use_empty: bool = False,
) -> list[Move]:
    """Moves that bring ``assignment`` (node -> ranges) to shares proportional to ``weights``.

    ``nodes`` are the cluster's masters (those not in ``assignment`` own nothing). Every slot must
    be assigned already (run ``fix`` or ``create`` first otherwise).
    """
    have = {n: list(ranges_to_slots(normalize(assignment.get(n, ())))) for n in nodes}
    unknown = sorted(set(assignment) - set(nodes))
    if unknown:
        raise PlanError(f"Slots are owned by {', '.join(unknown)}, which is not a known node.")
    if sum(len(v) for v in have.values()) != NUM_SLOTS:
        raise PlanError("Not every slot is assigned; cover all 16384 slots before rebalancing.")
    weights = dict(weights or {})
    for nid in weights:
        if nid not in have:
            raise PlanError(f"A weight is given for {nid}, which is not a node of the cluster.")
    participants = {
        n: float(weights.get(n, 1.0)) for n in nodes if have[n] or use_empty or n in weights
    }
    want = targets(participants, current={n: len(have[n]) for n in participants})
    for n in nodes:
        want.setdefault(n, 0)  # non-participants are empty nodes left out: they stay empty
    return _pair(have, want)


#: the source of a hint move whose slots name no node (unowned, or two owners at one epoch)
NO_OWNER = ""


def plan_hints(
    assignment: Mapping[str, Iterable[Range]],
    voters: Sequence[str],
    frozen: Iterable[str] = (),
) -> list[Move]:
    """Hint moves that make a replicated cluster's slot map (owner -> ranges; slots in none of
    them name no node) name only ``voters``, spread evenly, with the fewest slots changing hands.

    ``frozen``: voters that cannot claim now (they do not answer): they keep their slots and take
    none. A move's source is the node the slots name now, :data:`NO_OWNER` for none. Sorted by
    (source, target), as :func:`plan_rebalance`'s.
    """
    voters = list(voters)
    if not voters:
        raise PlanError("The group has no voters to give the slots' hints to.")
    if len(set(voters)) != len(voters) or NO_OWNER in voters:
        raise PlanError(f"The voters must be distinct node ids, not {voters}.")
    stuck = set(frozen) & set(voters)
    have: dict[str, list[int]] = {}
    seen = 0
    for owner in sorted(assignment):
        slots = list(ranges_to_slots(normalize(assignment[owner])))
        seen += len(slots)
        if owner not in stuck and slots:
            have[owner] = slots
    taken = set(ranges_to_slots(r for owner in assignment for r in normalize(assignment[owner])))
    if len(taken) != seen:
        raise PlanError("Two owners are given the same slot; a slot map names one owner per slot.")
    unowned = [s for s in range(NUM_SLOTS) if s not in taken]
    if unowned:
        have[NO_OWNER] = unowned
    takers = [v for v in voters if v not in stuck]
    kept = sum(count_slots(normalize(assignment.get(v, ()))) for v in sorted(stuck))
    if not takers:
        if any(n not in voters for n in have):
            raise PlanError("No voter of the group answers; none can take the slots' hints.")
        return []
    want = targets(dict.fromkeys(takers, 1.0), total=NUM_SLOTS - kept,
                   current={v: len(have.get(v, [])) for v in takers})
    for n in have:
        want.setdefault(n, 0)  # non-voters (and no owner) keep nothing
    return _pair(have, want)


def hint_claims(moves: Iterable[Move]) -> list[tuple[str, tuple[Range, ...]]]:
    """The claims that carry out hint ``moves``: one per receiving voter (every slot it takes,
    from every source), in id order."""
    got: dict[str, list[int]] = {}
    for m in moves:
        got.setdefault(m.target, []).extend(ranges_to_slots(m.slots))
    return [(nid, tuple(slots_to_ranges(sorted(got[nid])))) for nid in sorted(got)]


def plan_reshard(
    assignment: Mapping[str, Iterable[Range]],
    count: int,
    target: str,
    sources: Sequence[str] | None = None,
) -> list[Move]:
    """Move ``count`` slots to ``target`` from ``sources`` (all other owners when None).

    As ``redis-cli --cluster reshard`` does with ``--from all``: each source gives in proportion
    to what it owns (largest remainder), its highest slots first.
    """
    if count <= 0:
        raise PlanError(f"The number of slots to move must be positive, not {count}.")
    have = {n: list(ranges_to_slots(normalize(r))) for n, r in assignment.items()}
    srcs = [s for s in (sources if sources is not None else sorted(have)) if s != target]
    if sources is not None:
        for s in sources:
            if s not in have:
                raise PlanError(f"Source node {s} owns no slots.")
        if target in sources:
            raise PlanError(f"The target {target} cannot also be a source.")
    available = sum(len(have[s]) for s in srcs if s in have)
    if count > available:
        raise PlanError(f"Only {available} slots can move to {target}; {count} were asked for.")
    give = targets({s: float(len(have.get(s, []))) for s in srcs if have.get(s)}, total=count)
    moves = []
    for s in sorted(give):
        if give[s]:
            taken = sorted(have[s])[-give[s]:]
            moves.append(Move(s, target, tuple(slots_to_ranges(taken))))
    return moves
