"""The hint planner of a replicated cluster (kvcore.rebalance.plan_hints): a table of slot maps
and voters, and the claims that make the map name only the voters, spread evenly.

Each row: the map (``RANGES=OWNER`` tokens; slots in none name no node), the group's voters, the
voters that cannot claim now (down: they keep their slots, take none), and the expected moves as
``SOURCE>TARGET RANGES`` (``-`` for slots that name no node). Every row is also checked against
the rules the moves must keep: afterwards only voters are named, every slot once; the voters that
can claim are within one slot of each other; a frozen voter's slots did not change; and no plan
moves fewer slots (every slot of a non-voter or of no node, plus what voters hold above their
share, must change hands once, and nothing else does).
"""

from __future__ import annotations

import pytest

from kvcore.rebalance import NO_OWNER, Move, PlanError, hint_claims, plan_hints, targets
from kvcore.slots import NUM_SLOTS, Range, format_ranges, parse_ranges, ranges_to_slots
from tests.kvcore.properties import owners_after

EVEN3 = "0-5460=a 5461-10922=b 10923-16383=c"
#: a, b, c after d took its share (the second row's result)
WITH_D = "0-4095=a 4096-5460=d 5461-9556=b 9557-10922=d 10923-15018=c 15019-16383=d"

TABLE = [
    # (map, voters, frozen, expected moves)
    pytest.param(EVEN3, "a b c", "", [], id="balanced-nothing-to-do"),
    pytest.param(EVEN3, "a b c d", "", ["a>d 4096-5460", "b>d 9557-10922", "c>d 15019-16383"],
                 id="add-d-takes-its-share-from-each"),
    pytest.param(EVEN3, "b c", "", ["a>b 0-2729", "a>c 2730-5460"], id="remove-a-its-slots-to-the-voters"),
    pytest.param(WITH_D, "b c d", "", ["a>b 2730-4095", "a>c 1365-2729", "a>d 0-1364"],
                 id="add-d-then-remove-a-only-a-gives"),
    pytest.param(EVEN3, "b c d", "", ["a>d 0-5460"], id="remove-a-and-add-d-at-once-d-takes-a"),
    pytest.param(EVEN3, "b", "", ["a>b 0-5460", "c>b 10923-16383"], id="one-voter-left-takes-all"),
    pytest.param("0-8191=a", "a b", "", ["->b 8192-16383"], id="slots-naming-no-node-go-to-the-fewest"),
    pytest.param("0-5460=a 5461-10922=x 10923-16383=c", "a b c", "c", ["x>a 5461", "x>b 5462-10922"],
                 id="a-voter-that-is-down-keeps-its-slots-and-takes-none"),
    pytest.param("0-8191=a 8192-16383=b", "a b c d e", "",
                 ["a>c 4915-8191", "a>e 3277-4914", "b>d 13107-16383", "b>e 11469-13106"],
                 id="three-new-voters-even-shares"),
    pytest.param("0-100=a 101-16383=b", "a b", "", ["b>a 8293-16383"], id="an-uneven-map-is-evened"),
    pytest.param("0-16383=x", "a b c", "", ["x>a 10922-16383", "x>b 5461-10921", "x>c 0-5460"],
                 id="a-non-voter-owning-all-each-voter-its-share"),
]


def parse_map(text: str) -> dict[str, list[Range]]:
    out: dict[str, list[Range]] = {}
    for tok in text.split():
        ranges, _, owner = tok.partition("=")
        out.setdefault(owner, []).extend(parse_ranges(ranges))
    return out


def shown(moves: list[Move]) -> list[str]:
    return [f"{m.source if m.source != NO_OWNER else '-'}>{m.target} {format_ranges(m.slots)}" for m in moves]


@pytest.mark.parametrize(("text", "voters", "frozen", "expected"), TABLE)
def test_hint_plans(text: str, voters: str, frozen: str, expected: list[str]) -> None:
    assignment = parse_map(text)
    moves = plan_hints(assignment, voters.split(), frozen.split())
    assert shown(moves) == expected
    assert plan_hints(assignment, sorted(voters.split(), reverse=True), frozen.split()) == moves  # any order
    owner = owners_after(assignment, moves)
    # only voters are named, every slot once
    assert len(owner) == NUM_SLOTS and set(owner.values()) <= set(voters.split())
    counts = {v: 0 for v in voters.split()}
    for o in owner.values():
        counts[o] += 1
    takers = [v for v in voters.split() if v not in frozen.split()]
    assert max(counts[v] for v in takers) - min(counts[v] for v in takers) <= 1
    for v in frozen.split():  # a frozen voter's slots stay as they were
        assert sorted(s for s, o in owner.items() if o == v) == list(ranges_to_slots(assignment.get(v, [])))
    # the fewest slots change hands: each that has to (a non-voter's, no node's, a voter's surplus)
    before = {s: o for o, rs in assignment.items() for s in ranges_to_slots(rs)}
    held = {v: sum(1 for o in before.values() if o == v) for v in takers}
    kept = sum(counts[v] for v in frozen.split())
    want = targets(dict.fromkeys(takers, 1.0), NUM_SLOTS - kept, held)
    must = sum(1 for s in range(NUM_SLOTS) if before.get(s) not in voters.split())
    must += sum(max(0, held[v] - want[v]) for v in takers)
    assert sum(m.count for m in moves) == must


def test_claims_are_one_per_receiving_voter_with_every_slot_it_takes() -> None:
    moves = plan_hints(parse_map(EVEN3), "a b c d".split())
    assert [(n, format_ranges(r)) for n, r in hint_claims(moves)] == [
        ("d", "4096-5460,9557-10922,15019-16383")]
    moves = plan_hints(parse_map(WITH_D), "b c d".split())
    assert [(n, format_ranges(r)) for n, r in hint_claims(moves)] == [
        ("b", "2730-4095"), ("c", "1365-2729"), ("d", "0-1364")]


@pytest.mark.parametrize(
    ("text", "voters", "frozen", "fragment"),
    [
        (EVEN3, "", "", "no voters"),
        (EVEN3, "b b", "", "distinct"),
        (EVEN3, "b c", "b c", "No voter of the group answers"),
        ("0-100=a 50-200=b", "a b", "", "same slot"),
    ],
)
def test_impossible_hint_plans_are_refused_with_a_sentence(text: str, voters: str, frozen: str,
                                                           fragment: str) -> None:
    with pytest.raises(PlanError, match=fragment):
        plan_hints(parse_map(text), voters.split(), frozen.split())


def test_voters_all_down_and_nothing_to_give_is_no_plan() -> None:
    assert plan_hints(parse_map("0-8191=a 8192-16383=b"), ["a", "b"], ["a", "b"]) == []
