"""Property-based tests (hypothesis) of kvcore.slots: the slot map's epoch rule and its copy on
write, range strings.

The epoch rule (:meth:`SlotMap.claim`): a claim replaces a slot's owner only at a strictly higher
epoch, so the same claims applied in any order give the same map, provided no two claims of one
slot share an epoch (the documented conflict the map does not resolve: the first one heard stays,
and ``fix`` settles it with a claim above; ``kvcore.slotmove``). Claims are made here at distinct
epochs where order is compared, and at colliding epochs where only "the first stays" is checked.
Every map is also checked against a naive model (two plain lists), whatever sharing the copy on
write and the claim cache (:data:`kvcore.slots._claimed`) did underneath.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from kvcore.slots import (
    MAX_SLOT,
    NUM_SLOTS,
    Range,
    SlotMap,
    SlotRangeError,
    format_ranges,
    normalize,
    parse_ranges,
    ranges_to_slots,
)
from tests.kvcore.properties import property_settings

SETTINGS = property_settings(40)

NODES = ["a", "b", "c", None]

# slots near both ends and in the middle, so that random ranges overlap often
edge = st.sampled_from([0, 1, 2, 100, 101, 8191, 8192, MAX_SLOT - 1, MAX_SLOT])
slot_st = st.one_of(edge, st.integers(0, MAX_SLOT))


@st.composite
def ranges_st(draw: st.DrawFn) -> tuple[Range, ...]:
    out = []
    for _ in range(draw(st.integers(1, 3))):
        a, b = draw(slot_st), draw(slot_st)
        out.append((min(a, b), max(a, b)))
    return tuple(out)


Claim = tuple[tuple[Range, ...], str | None, int]


def claims_st(distinct_epochs: bool) -> st.SearchStrategy[list[Claim]]:
    epochs = st.integers(0, 8)

    @st.composite
    def build(draw: st.DrawFn) -> list[Claim]:
        n = draw(st.integers(1, 6))
        es = draw(st.lists(epochs, min_size=n, max_size=n, unique=distinct_epochs))
        return [(draw(ranges_st()), draw(st.sampled_from(NODES)), e) for e in es]

    return build()


class Model:
    """The epoch rule, slot by slot, on two plain lists."""

    def __init__(self) -> None:
        self.owners: list[str | None] = [None] * NUM_SLOTS
        self.epochs = [0] * NUM_SLOTS

    def claim(self, ranges: tuple[Range, ...], node: str | None, epoch: int) -> int:
        changed = 0
        for s in ranges_to_slots(ranges):
            if epoch > self.epochs[s]:
                self.epochs[s] = epoch
                if self.owners[s] != node:
                    self.owners[s] = node
                    changed += 1
        return changed

    def release(self, node: str, below: int) -> int:
        n = 0
        for s in range(NUM_SLOTS):
            if self.owners[s] == node and self.epochs[s] < below:
                self.owners[s] = None
                n += 1
        return n


def same(m: SlotMap, model: Model) -> None:
    # the lists themselves (owner() and epoch() read them), for speed
    assert m._owners == model.owners
    assert m._epochs == model.epochs


@SETTINGS
@given(claims_st(distinct_epochs=True), st.randoms(use_true_random=False))
def test_claims_at_distinct_epochs_give_one_map_in_any_order(claims: list[Claim], rnd: object) -> None:
    import random
    assert isinstance(rnd, random.Random)
    one = SlotMap()
    for c in claims:
        one.claim(*c)
    for _ in range(3):
        order = list(claims)
        rnd.shuffle(order)
        other = SlotMap()
        for c in order:
            other.claim(*c)
        assert other == one, "commutative"
        for c in order[: len(order) // 2]:
            other.claim(*c)  # a claim heard again changes nothing
        assert other == one, "idempotent"
    # associative: two maps that each heard half, merged by replaying one's claims on the other
    half = len(claims) // 2
    left, right = SlotMap(), SlotMap()
    for c in claims[:half]:
        left.claim(*c)
    for c in claims[half:]:
        right.claim(*c)
    for lo, hi, owner in right.runs():
        for s in range(lo, hi + 1):
            left.claim([(s, s)], owner, right.epoch(s))
    assert left == one


@SETTINGS
@given(claims_st(distinct_epochs=False))
def test_the_epoch_rule_keeps_the_first_claim_heard_at_one_epoch(claims: list[Claim]) -> None:
    m, model = SlotMap(), Model()
    for c in claims:
        assert m.claim(*c) == model.claim(*c)
    same(m, model)


Op = tuple[str, int, object]


@st.composite
def ops_st(draw: st.DrawFn) -> list[Op]:
    """Operations on three maps that share lists: claims, releases, copies, text round trips."""
    out: list[Op] = []
    for _ in range(draw(st.integers(1, 14))):
        kind = draw(st.sampled_from(["claim", "claim", "claim", "release", "copy", "text", "fresh"]))
        i = draw(st.integers(0, 2))
        if kind == "claim":
            out.append((kind, i, (draw(ranges_st()), draw(st.sampled_from(NODES)), draw(st.integers(0, 6)))))
        elif kind == "release":
            out.append((kind, i, (draw(st.sampled_from(["a", "b", "c"])), draw(st.integers(0, 7)))))
        elif kind == "copy":
            out.append((kind, i, draw(st.integers(0, 2))))
        else:
            out.append((kind, i, None))
    return out


@SETTINGS
@given(ops_st())
def test_maps_that_share_lists_behave_as_independent_maps(ops: list[Op]) -> None:
    maps = [SlotMap(), SlotMap(), SlotMap()]
    models = [Model(), Model(), Model()]
    for kind, i, arg in ops:
        if kind == "claim":
            ranges, node, epoch = arg  # type: ignore[misc]
            assert maps[i].claim(ranges, node, epoch) == models[i].claim(ranges, node, epoch)
        elif kind == "release":
            node, below = arg  # type: ignore[misc]
            assert maps[i].release(node, below) == models[i].release(node, below)
        elif kind == "copy":
            j = int(arg)  # type: ignore[call-overload]
            model = Model()
            model.owners, model.epochs = list(models[j].owners), list(models[j].epochs)
            maps[i], models[i] = maps[j].copy(), model
        elif kind == "text":
            maps[i] = SlotMap.from_text(maps[i].to_text())
        else:
            maps[i], models[i] = SlotMap(), Model()
        for m, model in zip(maps, models, strict=True):
            same(m, model)
    for m, model in zip(maps, models, strict=True):
        # the derived views agree with the lists
        assignment = m.assignment()
        assert {s: n for n, r in assignment.items() for s in ranges_to_slots(r)} == {
            s: o for s, o in enumerate(model.owners) if o is not None}
        assert m.slot_counts() == {n: model.owners.count(n) for n in sorted({o for o in model.owners if o})}
        assert m.covers_all() == (None not in model.owners)
        assert list(ranges_to_slots(m.unassigned())) == [s for s, o in enumerate(model.owners) if o is None]
        assert m.max_epoch() == max(model.epochs)


@SETTINGS
@given(st.lists(st.tuples(slot_st, slot_st).map(lambda t: (min(t), max(t))), max_size=6))
def test_range_text_round_trips(ranges: list[Range]) -> None:
    text = format_ranges(ranges)
    assert parse_ranges(text) == normalize(ranges)
    assert format_ranges(parse_ranges(text)) == text


@SETTINGS
@given(st.text(alphabet="0123456789-, ;=@ab\t_x+", max_size=30) | st.text(max_size=20))
def test_range_text_and_map_text_refuse_junk_only_with_their_error(text: str) -> None:
    try:
        got = parse_ranges(text)
    except SlotRangeError:
        pass
    else:
        assert all(0 <= lo <= hi <= MAX_SLOT for lo, hi in got)
    try:
        SlotMap.from_text(text)
    except SlotRangeError:
        pass
