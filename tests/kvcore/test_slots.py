"""Hash slots, hash tags, slot range strings, even_split and the SlotMap's claim rule."""

from __future__ import annotations

import random
import zlib
from itertools import pairwise

import pytest

from kvcore.slots import (
    MAX_SLOT,
    NUM_SLOTS,
    Range,
    SlotMap,
    SlotRangeError,
    count_slots,
    even_split,
    format_ranges,
    hash_tag,
    key_slot,
    normalize,
    parse_ranges,
    ranges_to_slots,
    slots_to_ranges,
)

# --- key_slot ------------------------------------------------------------------------------

PLAIN_KEYS = [
    b"",
    b"a",
    b"foo",
    b"bar",
    b"hello world",
    b"user:1000",
    b"\x00",
    b"\x00\xff\x10\x80",
    "ключ".encode(),
    "日本語のキー".encode(),
    b"x" * 1024,
]


def test_num_slots_is_redis_clusters_16384() -> None:
    assert NUM_SLOTS == 16384
    assert MAX_SLOT == 16383


@pytest.mark.parametrize("key", PLAIN_KEYS, ids=repr)
def test_key_slot_is_crc32_of_the_key_mod_16384(key: bytes) -> None:
    assert key_slot(key) == zlib.crc32(key) % 16384


@pytest.mark.parametrize(
    ("key", "slot"),
    [
        # Literal values: these catch a change of hash function (CRC16 would give other numbers).
        (b"foo", 9505),
        (b"bar", 3242),
        (b"hello", 9862),
        (b"user:1000", 6115),
        (b"", 0),
    ],
)
def test_key_slot_literal_values_are_pinned(key: bytes, slot: int) -> None:
    assert key_slot(key) == slot


@pytest.mark.parametrize("key", PLAIN_KEYS, ids=repr)
def test_every_key_lands_in_a_valid_slot(key: bytes) -> None:
    assert 0 <= key_slot(key) <= MAX_SLOT


# --- hash tags (Redis Cluster spec, "Hash tags") -------------------------------------------


@pytest.mark.parametrize(
    ("key", "hashed"),
    [
        (b"{user1000}.following", b"user1000"),
        (b"{user1000}.followers", b"user1000"),
        # an empty tag: the whole key is hashed
        (b"foo{}{bar}", b"foo{}{bar}"),
        # the tag runs from the first { to the first } after it
        (b"foo{{bar}}zap", b"{bar"),
        # only the first tag counts
        (b"foo{bar}{zap}", b"bar"),
        # no closing brace: the whole key
        (b"foo{bar", b"foo{bar"),
        # a } before the first { does not close anything
        (b"}foo{bar}", b"bar"),
        (b"}{", b"}{"),
        (b"{}", b"{}"),
        (b"{", b"{"),
        (b"plain", b"plain"),
        (b"{a}", b"a"),
    ],
)
def test_hash_tag_follows_redis_rules(key: bytes, hashed: bytes) -> None:
    assert hash_tag(key) == hashed
    assert key_slot(key) == zlib.crc32(hashed) % 16384


def test_keys_with_the_same_tag_share_a_slot() -> None:
    assert key_slot(b"{user1000}.following") == key_slot(b"{user1000}.followers")
    assert key_slot(b"{user1000}.following") == key_slot(b"user1000")


def test_keys_with_an_empty_tag_do_not_share_a_slot_by_the_tag() -> None:
    # "{}" is not a tag, so these hash as whole keys and (for these two) land apart
    assert key_slot(b"{}a") == zlib.crc32(b"{}a") % 16384
    assert key_slot(b"{}a") != key_slot(b"{}b")


@pytest.mark.parametrize("key", ["foo", "", "user:{1000}:x", "ключ", "日本語", "emoji 🎉"])
def test_str_key_hashes_as_its_utf8_bytes(key: str) -> None:
    assert key_slot(key) == key_slot(key.encode("utf-8"))


def test_non_ascii_hash_tags_share_a_slot() -> None:
    assert key_slot("{日本}.a") == key_slot("{日本}.b") == zlib.crc32("日本".encode()) % 16384
    assert key_slot("ключ") == 5658


# --- range strings -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ranges"),
    [
        ("", []),
        ("   ", []),
        ("0-5460,5461-10922", [(0, 5460), (5461, 10922)]),
        ("42", [(42, 42)]),
        ("0", [(0, 0)]),
        ("16383", [(16383, 16383)]),
        ("0-16383", [(0, 16383)]),
        ("7-7", [(7, 7)]),
        (" 1-2 , 5 ", [(1, 2), (5, 5)]),
        # order is kept as written (normalize sorts)
        ("100-200,0-10", [(100, 200), (0, 10)]),
        ("0-100,200,300-400", [(0, 100), (200, 200), (300, 400)]),
    ],
)
def test_parse_ranges_reads_operator_notation(text: str, ranges: list[Range]) -> None:
    assert parse_ranges(text) == ranges


@pytest.mark.parametrize(
    ("ranges", "text"),
    [
        ([], ""),
        ([(42, 42)], "42"),
        ([(0, 100), (200, 200), (300, 400)], "0-100,200,300-400"),
        # adjacent ranges are merged, unsorted input is sorted
        ([(0, 5460), (5461, 10922)], "0-10922"),
        ([(300, 400), (0, 100)], "0-100,300-400"),
        ([(0, 16383)], "0-16383"),
    ],
)
def test_format_ranges_prints_merged_sorted_ranges(ranges: list[Range], text: str) -> None:
    assert format_ranges(ranges) == text


@pytest.mark.parametrize(
    "text", ["0-100,200,300-400", "42", "0-16383", "0-5460,5462-10922,16383", "1,3,5,7"]
)
def test_canonical_range_text_round_trips(text: str) -> None:
    assert format_ranges(parse_ranges(text)) == text


def test_parse_of_format_gives_the_normalized_ranges() -> None:
    rng = random.Random(7)
    for _ in range(200):
        slots = rng.sample(range(NUM_SLOTS), rng.randint(1, 50))
        ranges = slots_to_ranges(slots)
        assert parse_ranges(format_ranges(ranges)) == ranges
        assert sorted(ranges_to_slots(ranges)) == sorted(slots)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("16384", "outside 0-16383"),
        ("0-16384", "outside 0-16383"),
        ("99999", "outside 0-16383"),
        ("-1", "not a number"),
        ("10-5", "starts after it ends"),
        ("abc", "not a number"),
        ("1-x", "not a number"),
        ("1-2-3", "not a number"),
        ("1.5", "not a number"),
        ("5-", "not a number"),
        ("1,,2", "Empty element"),
        ("0-10,5-20", "overlap"),
        ("5,5", "overlap"),
        ("0-100,50", "overlap"),
    ],
)
def test_bad_range_text_is_rejected_with_a_sentence(text: str, fragment: str) -> None:
    with pytest.raises(SlotRangeError) as info:
        parse_ranges(text)
    msg = str(info.value)
    assert fragment in msg
    assert msg[0].isupper() and msg.endswith(".")


def test_slot_range_error_is_a_value_error() -> None:
    assert issubclass(SlotRangeError, ValueError)


@pytest.mark.parametrize(
    ("ranges", "merged"),
    [
        ([], []),
        ([(5, 10), (0, 3), (4, 4), (20, 30), (25, 40)], [(0, 10), (20, 40)]),
        ([(0, 10), (2, 3)], [(0, 10)]),
        ([(1, 1), (1, 1)], [(1, 1)]),
        ([(0, 0), (2, 2)], [(0, 0), (2, 2)]),
        ([(0, 0), (1, 1)], [(0, 1)]),
    ],
)
def test_normalize_sorts_and_merges_overlapping_and_adjacent_ranges(
    ranges: list[Range], merged: list[Range]
) -> None:
    assert normalize(ranges) == merged
    assert normalize(merged) == merged


def test_count_slots_counts_overlaps_once() -> None:
    assert count_slots([(0, 9), (5, 14)]) == 15
    assert count_slots([(0, MAX_SLOT)]) == NUM_SLOTS
    assert count_slots([]) == 0


# --- even_split ----------------------------------------------------------------------------


def test_even_split_of_three_is_redis_clis_allocation() -> None:
    assert even_split(["a", "b", "c"]) == {
        "a": [(0, 5460)],
        "b": [(5461, 10922)],
        "c": [(10923, 16383)],
    }


def test_even_split_of_one_node_is_every_slot() -> None:
    assert even_split(["solo"]) == {"solo": [(0, MAX_SLOT)]}


def test_even_split_of_no_nodes_is_empty() -> None:
    assert even_split([]) == {}


@pytest.mark.parametrize("n", range(1, 21))
def test_even_split_is_contiguous_covering_and_balanced(n: int) -> None:
    ids = [f"n{i:02d}" for i in range(n)]
    split = even_split(ids)
    assert list(split) == ids
    ranges = [split[i] for i in ids]
    assert all(len(r) == 1 for r in ranges), "each node gets one contiguous range"
    flat = [r[0] for r in ranges]
    assert flat[0][0] == 0
    assert flat[-1][1] == MAX_SLOT
    for (_, hi), (lo, _) in pairwise(flat):
        assert lo == hi + 1, "ranges follow each other with no gap or overlap"
    sizes = [hi - lo + 1 for lo, hi in flat]
    assert sum(sizes) == NUM_SLOTS
    assert max(sizes) - min(sizes) <= 1
    assert set(sizes) <= {NUM_SLOTS // n, -(-NUM_SLOTS // n)}


# --- SlotMap -------------------------------------------------------------------------------


def three_node_map(epoch: int = 1) -> SlotMap:
    return SlotMap.from_assignment(even_split(["a", "b", "c"]), epoch)


@pytest.mark.parametrize(
    ("slot", "owner"),
    [(0, "a"), (5460, "a"), (5461, "b"), (10922, "b"), (10923, "c"), (16383, "c")],
)
def test_slot_map_owner_lookup_at_range_edges(slot: int, owner: str) -> None:
    m = three_node_map()
    assert m.owner(slot) == owner
    assert m.epoch(slot) == 1


def test_owner_of_key_uses_the_keys_slot() -> None:
    m = three_node_map()
    assert m.owner_of_key(b"foo") == m.owner(9505) == "b"
    assert m.owner_of_key("bar") == m.owner(3242) == "a"


def test_empty_map_owns_nothing() -> None:
    m = SlotMap()
    assert m.owner(0) is None
    assert not m.covers_all()
    assert m.unassigned() == [(0, MAX_SLOT)]
    assert m.runs() == [(0, MAX_SLOT, None)]
    assert m.assignment() == {}
    assert m.slot_counts() == {}
    assert repr(m) == "SlotMap(empty)"


def test_single_owner_covers_every_slot() -> None:
    m = SlotMap.single_owner("solo")
    assert m.covers_all()
    assert m.unassigned() == []
    assert m.slot_counts() == {"solo": NUM_SLOTS}


def test_coverage_check_reports_the_gap() -> None:
    m = SlotMap.from_assignment({"a": [(0, 99)], "b": [(200, MAX_SLOT)]})
    assert not m.covers_all()
    assert m.unassigned() == [(100, 199)]
    assert three_node_map().covers_all()


def test_claim_with_a_higher_epoch_wins() -> None:
    m = three_node_map(epoch=1)
    assert m.claim([(0, 99)], "c", epoch=2) == 100
    assert m.owner(0) == m.owner(99) == "c"
    assert m.epoch(0) == 2
    assert m.owner(100) == "a"


@pytest.mark.parametrize("epoch", [0, 1])
def test_claim_with_a_lower_or_equal_epoch_loses(epoch: int) -> None:
    m = three_node_map(epoch=1)
    before = m.copy()
    assert m.claim([(0, 99)], "c", epoch=epoch) == 0
    assert m == before
    assert m.version == before.version


def test_claim_at_the_same_epoch_keeps_the_first_owner() -> None:
    # Redis's rule: equal loses. (So two owners claiming one slot at one epoch is the invariant
    # violation the sim checks for; the map itself does not break the tie.)
    m = SlotMap()
    m.claim([(5, 5)], "a", 3)
    m.claim([(5, 5)], "b", 3)
    assert m.owner(5) == "a"


def test_claim_on_an_empty_map_needs_an_epoch_above_zero() -> None:
    m = SlotMap()
    assert m.claim([(0, 9)], "a", 0) == 0
    assert m.owner(0) is None
    assert m.claim([(0, 9)], "a", 1) == 10
    assert m.owner(0) == "a"


def test_claim_by_none_unassigns_at_a_higher_epoch() -> None:
    m = three_node_map(epoch=1)
    assert m.claim([(0, 9)], None, 2) == 10
    assert m.owner(0) is None
    assert m.unassigned() == [(0, 9)]


def test_claim_counts_only_slots_that_changed_hands() -> None:
    m = three_node_map(epoch=1)
    # 5400-5460 already belong to a; 5461-5500 move from b
    assert m.claim([(5400, 5500)], "a", 2) == 40
    assert m.epoch(5400) == 2


def test_claim_bumps_version_on_any_change_including_an_epoch_only_one() -> None:
    m = three_node_map(epoch=1)
    v = m.version
    assert m.claim([(0, 9)], "a", 2) == 0  # same owner, newer epoch
    assert m.epoch(0) == 2
    assert m.version > v, "the map changed (epochs decide later claims), so version must move"
    v = m.version
    m.claim([(0, 9)], "b", 3)
    assert m.version > v
    v = m.version
    m.claim([(0, 9)], "c", 3)  # loses
    assert m.version == v


def _random_claims(rng: random.Random, n: int) -> list[tuple[list[Range], str | None, int]]:
    epochs = rng.sample(range(1, 10_000), n)  # distinct epochs: no ties to break
    claims: list[tuple[list[Range], str | None, int]] = []
    for epoch in epochs:
        ranges = []
        for _ in range(rng.randint(1, 3)):
            lo = rng.randrange(NUM_SLOTS)
            hi = min(MAX_SLOT, lo + rng.randrange(3000))
            ranges.append((lo, hi))
        claims.append((ranges, rng.choice(["a", "b", "c", "d", None]), epoch))
    return claims


def _expected_owner_by_highest_epoch(
    claims: list[tuple[list[Range], str | None, int]],
) -> list[str | None]:
    best_epoch = [0] * NUM_SLOTS
    owner: list[str | None] = [None] * NUM_SLOTS
    for ranges, nid, epoch in claims:
        for s in ranges_to_slots(ranges):
            if epoch > best_epoch[s]:
                best_epoch[s], owner[s] = epoch, nid
    return owner


@pytest.mark.parametrize("seed", range(5))
def test_claims_applied_in_any_order_give_the_same_map(seed: int) -> None:
    rng = random.Random(seed)
    claims = _random_claims(rng, 30)
    expected = _expected_owner_by_highest_epoch(claims)
    reference: SlotMap | None = None
    for _ in range(20):
        order = claims[:]
        rng.shuffle(order)
        m = SlotMap()
        for ranges, nid, epoch in order:
            m.claim(ranges, nid, epoch)
        assert [m.owner(s) for s in range(NUM_SLOTS)] == expected
        if reference is None:
            reference = m
        assert m == reference


def test_runs_assignment_and_slot_counts_describe_the_map() -> None:
    m = three_node_map(epoch=1)
    m.claim([(100, 199)], "c", 2)
    assert m.runs() == [
        (0, 99, "a"),
        (100, 199, "c"),
        (200, 5460, "a"),
        (5461, 10922, "b"),
        (10923, 16383, "c"),
    ]
    assert m.assignment() == {
        "a": [(0, 99), (200, 5460)],
        "b": [(5461, 10922)],
        "c": [(100, 199), (10923, 16383)],
    }
    assert m.ranges_of("c") == [(100, 199), (10923, 16383)]
    assert m.slot_counts() == {"a": 5361, "b": 5462, "c": 5561}
    assert sum(m.slot_counts().values()) == NUM_SLOTS
    assert m.max_epoch() == 2
    assert repr(m) == "SlotMap(a:0-99,200-5460 b:5461-10922 c:100-199,10923-16383)"


def test_assignment_lists_nodes_in_sorted_order() -> None:
    m = SlotMap.from_assignment({"z": [(0, 9)], "a": [(10, 19)], "m": [(20, 29)]})
    assert list(m.assignment()) == ["a", "m", "z"]
    assert list(m.slot_counts()) == ["a", "m", "z"]


def test_copy_is_independent_and_equality_includes_epochs() -> None:
    m = three_node_map(epoch=1)
    c = m.copy()
    assert c == m
    c.claim([(0, 0)], "b", 5)
    assert c != m
    assert m.owner(0) == "a"
    assert SlotMap.from_assignment({"a": [(0, MAX_SLOT)]}, 1) != SlotMap.single_owner("a", 2)


def test_maps_that_make_the_same_claim_share_its_result_and_stay_independent() -> None:
    first, second = SlotMap(), SlotMap()
    assert first.claim([(0, 99), (200, 200)], "a", 1) == 101
    assert second.claim([(0, 99), (200, 200)], "a", 1) == 101  # the kept result, shared
    assert first == second and first.version == second.version == 1
    assert second.claim([(0, 99)], "a", 1) == 0 and second.version == 1  # wins nothing: no change
    second.claim([(50, 60)], "b", 2)
    first.claim([(70, 80)], "c", 2)
    assert first.owner(55) == "a" and second.owner(75) == "a"
    assert (second.owner(55), first.owner(75)) == ("b", "c")
    # a third map making the first claim gets it as it was made, whatever the others did since
    third = SlotMap()
    assert third.claim([(0, 99), (200, 200)], "a", 1) == 101
    assert third.assignment() == {"a": [(0, 99), (200, 200)]} and third.version == 1
    # every new map still starts empty: nothing above changed the lists it shares
    assert SlotMap().unassigned() == [(0, MAX_SLOT)] and SlotMap().max_epoch() == 0
    assert SlotMap.from_text(third.to_text()) == third and SlotMap().unassigned() == [(0, MAX_SLOT)]
