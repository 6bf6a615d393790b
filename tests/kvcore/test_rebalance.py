"""The rebalance and reshard planners: proportional shares, fewest moves, weights, empty nodes."""

from __future__ import annotations

import random

import pytest

from kvcore.rebalance import Move, PlanError, plan_rebalance, plan_reshard, targets
from kvcore.slots import NUM_SLOTS, Range, count_slots, even_split, ranges_to_slots


def apply(assignment: dict[str, list[Range]], moves: list[Move]) -> dict[str, set[int]]:
    owned = {n: set(ranges_to_slots(r)) for n, r in assignment.items()}
    for m in moves:
        slots = set(ranges_to_slots(m.slots))
        assert slots <= owned[m.source], f"{m.source} does not own what it gives"
        owned[m.source] -= slots
        owned.setdefault(m.target, set()).update(slots)
    return owned


@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        ({"a": 1, "b": 1}, {"a": 8192, "b": 8192}),
        ({"a": 1, "b": 1, "c": 1}, {"a": 5462, "b": 5461, "c": 5461}),
        ({"a": 2, "b": 1, "c": 1}, {"a": 8192, "b": 4096, "c": 4096}),
        ({"a": 1, "b": 0}, {"a": NUM_SLOTS, "b": 0}),
        ({"a": 1.5, "b": 0.5}, {"a": 12288, "b": 4096}),
    ],
)
def test_targets_are_proportional_and_sum_to_16384(weights: dict[str, float], expected: dict[str, int]) -> None:
    t = targets(weights)
    assert t == expected
    assert sum(t.values()) == NUM_SLOTS


@pytest.mark.parametrize(
    ("weights", "fragment"),
    [({}, "no nodes"), ({"a": 0}, "All weights are zero"), ({"a": -1, "b": 1}, "negative")],
)
def test_targets_refuse_impossible_weights_with_a_sentence(weights: dict[str, float], fragment: str) -> None:
    with pytest.raises(PlanError, match=fragment):
        targets(weights)


def test_ties_in_rounding_favour_the_current_owner() -> None:
    # 16384 / 3 leaves one slot over; it stays where it is rather than moving for nothing
    assert targets({"a": 1, "b": 1, "c": 1}, current={"b": 5462}) == {"a": 5461, "b": 5462, "c": 5461}


def test_a_weighted_plan_of_its_own_result_is_empty() -> None:
    # shares 1365.33, 4096, 5461.33, 5461.33: one slot left over, tied between a, c and d. a,
    # which owns all now, keeps it (no move for nothing); then, once a holds 1366 and c 5461,
    # the tie must go to a again: it chose c by c's larger holding and moved a slot for nothing
    weights = {"a": 0.5, "b": 1.5, "c": 2.0, "d": 2.0}
    nodes = ["a", "b", "c", "d"]
    first = plan_rebalance({"a": [(0, NUM_SLOTS - 1)]}, nodes, weights)
    owned = apply({"a": [(0, NUM_SLOTS - 1)]}, first)
    assert {n: len(s) for n, s in owned.items()} == {"a": 1366, "b": 4096, "c": 5461, "d": 5461}
    after = {n: [(s, s) for s in sorted(sl)] for n, sl in owned.items()}
    assert plan_rebalance(after, nodes, weights) == []
    assert targets(weights, current={"a": 1366, "b": 4096, "c": 5461, "d": 5461})["a"] == 1366


def test_a_balanced_cluster_needs_no_moves() -> None:
    split = even_split(["a", "b", "c"])
    assert plan_rebalance(split, ["a", "b", "c"]) == []


def test_adding_an_empty_node_with_use_empty_moves_exactly_its_share() -> None:
    split = even_split(["a", "b", "c"])
    moves = plan_rebalance(split, ["a", "b", "c", "d"], use_empty=True)
    owned = apply(split, moves)
    counts = {n: len(s) for n, s in owned.items()}
    assert sorted(counts.values()) == [4096] * 4
    # fewest moves: exactly d's share moved, each slot once
    assert sum(m.count for m in moves) == 4096
    assert {m.target for m in moves} == {"d"}


def test_an_empty_node_takes_part_only_with_use_empty_or_a_weight() -> None:
    split = even_split(["a", "b"])
    assert plan_rebalance(split, ["a", "b", "c"]) == []
    moves = plan_rebalance(split, ["a", "b", "c"], weights={"c": 2})
    owned = apply(split, moves)
    assert {n: len(s) for n, s in owned.items()} == {"a": 4096, "b": 4096, "c": 8192}


def test_weight_zero_drains_a_node() -> None:
    split = even_split(["a", "b", "c"])
    moves = plan_rebalance(split, ["a", "b", "c"], weights={"b": 0})
    owned = apply(split, moves)
    assert owned["b"] == set()
    assert len(owned["a"]) + len(owned["c"]) == NUM_SLOTS
    assert abs(len(owned["a"]) - len(owned["c"])) <= 1
    assert all(m.source == "b" for m in moves)


def test_donors_give_their_highest_slots_so_ranges_stay_contiguous() -> None:
    split = even_split(["a", "b"])
    moves = plan_rebalance(split, ["a", "b", "c"], use_empty=True)
    for move in moves:
        assert len(move.slots) == 1, "one contiguous range"
        (_lo, hi), (_, donor_top) = move.slots[0], split[move.source][-1]
        assert hi == donor_top, f"{move.source} gives from the top of its range"


@pytest.mark.parametrize("seed", range(20))
def test_random_assignments_reach_their_targets_with_the_fewest_moves(seed: int) -> None:
    rng = random.Random(seed)
    nodes = [f"n{i}" for i in range(rng.randint(2, 7))]
    owners = [rng.choice(nodes) for _ in range(NUM_SLOTS)]
    assignment: dict[str, list[Range]] = {}
    for s, o in enumerate(owners):
        assignment.setdefault(o, []).append((s, s))
    weights = {n: float(rng.choice([0.5, 1, 1, 2, 3])) for n in nodes}
    moves = plan_rebalance(assignment, nodes, weights, use_empty=True)
    owned = apply(assignment, moves)
    have = {n: count_slots(assignment.get(n, [])) for n in nodes}
    want = targets(weights, current=have)
    assert {n: len(owned.get(n, ())) for n in nodes} == want
    # nobody is more than one slot from its exact share
    total_w = sum(weights.values())
    assert all(abs(want[n] - NUM_SLOTS * weights[n] / total_w) < 1 for n in nodes)
    assert sum(m.count for m in moves) == sum(max(0, have[n] - want[n]) for n in nodes)


def test_a_node_with_no_slots_is_planned_for_only_when_asked() -> None:
    split = even_split(["a", "b"])
    moves = plan_rebalance(split, ["a", "b", "empty"], use_empty=False)
    assert moves == []


@pytest.mark.parametrize(
    ("assignment", "nodes", "weights", "fragment"),
    [
        ({"a": [(0, 100)]}, ["a"], None, "Not every slot is assigned"),
        ({"a": [(0, 16383)], "x": []}, ["a"], None, "not a known node"),
        ({"a": [(0, 16383)]}, ["a"], {"zz": 1}, "not a node of the cluster"),
    ],
)
def test_rebalance_refuses_bad_input_with_a_sentence(
    assignment: dict[str, list[Range]], nodes: list[str], weights: dict[str, float] | None, fragment: str
) -> None:
    with pytest.raises(PlanError, match=fragment):
        plan_rebalance(assignment, nodes, weights)


def test_reshard_moves_n_slots_from_all_in_proportion() -> None:
    split = even_split(["a", "b", "c"])
    moves = plan_reshard(split, 1000, "c")
    assert sum(m.count for m in moves) == 1000
    assert {m.source for m in moves} == {"a", "b"}
    assert {m.target for m in moves} == {"c"}
    owned = apply(split, moves)
    assert len(owned["c"]) == 5461 + 1000


def test_reshard_from_one_node() -> None:
    split = even_split(["a", "b"])
    (m,) = plan_reshard(split, 10, "b", ["a"])
    assert m == Move("a", "b", ((8182, 8191),))


@pytest.mark.parametrize(
    ("count", "target", "sources", "fragment"),
    [
        (0, "b", None, "must be positive"),
        (20000, "b", None, "Only 8192 slots can move"),
        (10, "b", ["b"], "cannot also be a source"),
        (10, "b", ["zz"], "owns no slots"),
    ],
)
def test_reshard_refuses_bad_requests(count: int, target: str, sources: list[str] | None, fragment: str) -> None:
    with pytest.raises(PlanError, match=fragment):
        plan_reshard(even_split(["a", "b"]), count, target, sources)
