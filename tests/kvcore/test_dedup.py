"""The node's one duplicate memory: time- and size-bounded, oldest out first, expiry on access."""

from __future__ import annotations

from typing import Any

import pytest

from kvcore.config import NodeConfig
from kvcore.node import Node
from kvcore.node.dedup import DedupCache
from kvcore.runtime import FakeRuntime


def test_an_entry_is_remembered_for_ttl_seconds_and_not_a_moment_longer() -> None:
    c: DedupCache[str, int] = DedupCache(ttl=10.0, max_entries=5)
    c.put("a", 1, now=0.0)
    assert c.get("a", now=9.99) == 1
    assert c.get("a", now=10.0) is None  # expires_at <= now: gone
    assert len(c) == 0, "the lookup itself dropped the expired entry"


def test_expiry_happens_on_any_access_oldest_first() -> None:
    c: DedupCache[str, int] = DedupCache(ttl=5.0, max_entries=10)
    c.put("a", 1, now=0.0)
    c.put("b", 2, now=2.0)
    c.put("c", 3, now=4.0)
    assert c.get("zzz", now=6.5) is None  # a lookup of another key still expires a (due at 5)
    assert list(c) == ["b", "c"]
    assert not c.seen("nothing", now=7.0)  # b was due at 7
    assert list(c) == ["c"]


def test_a_put_expires_what_is_due_before_it_adds() -> None:
    c: DedupCache[str, int] = DedupCache(ttl=1.0, max_entries=10)
    c.put("a", 1, now=0.0)
    c.put("b", 2, now=5.0)
    assert list(c) == ["b"]


def test_beyond_max_entries_the_oldest_is_evicted_first() -> None:
    c: DedupCache[int, str] = DedupCache(ttl=100.0, max_entries=3)
    for i in range(6):
        c.put(i, f"v{i}", now=float(i))
    assert list(c) == [3, 4, 5]
    assert c.get(2, now=6.0) is None and c.get(3, now=6.0) == "v3"


def test_a_refreshed_entry_moves_to_the_back_and_lives_a_full_ttl_again() -> None:
    c: DedupCache[str, int] = DedupCache(ttl=10.0, max_entries=2)
    c.put("a", 1, now=0.0)
    c.put("b", 2, now=1.0)
    c.put("a", 3, now=2.0)
    assert list(c) == ["b", "a"]
    c.put("c", 4, now=3.0)  # evicts b, the oldest, not the refreshed a
    assert list(c) == ["a", "c"]
    assert c.get("a", now=11.5) == 3  # the refresh at 2.0 holds it until 12.0
    assert c.get("a", now=12.0) is None


def test_seen_tells_a_remembered_none_from_nothing() -> None:
    c: DedupCache[tuple[str, int], None] = DedupCache(ttl=1.0, max_entries=4)
    c.put(("n2", 7), None, now=0.0)
    assert c.seen(("n2", 7), now=0.5) and not c.seen(("n3", 7), now=0.5)
    assert not c.seen(("n2", 7), now=1.0)


@pytest.mark.parametrize(("ttl", "max_entries"), [(-1.0, 5), (1.0, 0)])
def test_nonsense_bounds_are_refused(ttl: float, max_entries: int) -> None:
    with pytest.raises(ValueError, match="dedup cache"):
        DedupCache(ttl=ttl, max_entries=max_entries)


def test_the_node_uses_one_cache_class_for_forwarded_writes_and_stored_batches() -> None:
    node = Node(FakeRuntime("n1", seed=1), NodeConfig(dedup_window=7.5))
    for cache in (node.router.recent, node.migration.stored):
        assert type(cache) is DedupCache and cache.ttl == 7.5


def test_stored_batches_are_bounded_like_forwarded_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    from kvcore.config import ClusterConfig, NodeSpec
    from kvcore.messages import MigrateKeys
    from kvcore.node import dedup
    from kvcore.slots import even_split, key_slot

    monkeypatch.setattr(dedup, "DEDUP_MAX_ENTRIES", 2)
    split = even_split(["n1", "n2"])
    cluster = ClusterConfig(tuple(NodeSpec(n, f"127.0.0.1:{7001 + i}", f"127.0.0.1:{17001 + i}", tuple(split[n]))
                                  for i, n in enumerate(["n1", "n2"])), 1)
    slot = key_slot(b"{a}x")  # n2's
    dst = Node(FakeRuntime("n1", seed=1), NodeConfig(), cluster)
    dst.begin_import(slot, "n2")
    batches = [MigrateKeys(batch=b, slot=slot, keys=(b"{a}%d" % b,), values=(b"v",)) for b in range(3)]
    for m in batches:
        dst.on_message("n2", m)
    assert [bid for _, bid in dst.migration.stored] == [1, 2]
    dst.store.delete(b"{a}1")
    dst.store.delete(b"{a}0")
    dst.on_message("n2", batches[1])  # remembered: acknowledged, not applied again
    dst.on_message("n2", batches[0])  # evicted: applied again
    assert dst.store.get(b"{a}1") is None and dst.store.get(b"{a}0") == b"v"


def _pairs(c: DedupCache[Any, Any]) -> list[tuple[Any, tuple[float, Any]]]:
    """What a cache holds, oldest first, as (key, (expires, value)); the expiry and value maps
    hold the same keys."""
    assert c._expiry.keys() == c._values.keys()
    return [(k, (t, c._values[k])) for k, t in c._expiry.items()]


class _Reference:
    """The cache as it was before it noted its oldest entry's time: it reads the first entry
    of its dict on every access (the reference the noted time is held to)."""

    def __init__(self, ttl: float, max_entries: int) -> None:
        from collections import OrderedDict

        self.ttl, self.max_entries = ttl, max_entries
        self.entries: OrderedDict[int, tuple[float, int]] = OrderedDict()

    def _expire(self, now: float) -> None:
        while self.entries and next(iter(self.entries.values()))[0] <= now:
            self.entries.popitem(last=False)

    def get(self, key: int, now: float) -> int | None:
        self._expire(now)
        e = self.entries.get(key)
        return None if e is None else e[1]

    def seen(self, key: int, now: float) -> bool:
        self._expire(now)
        return key in self.entries

    def put(self, key: int, value: int, now: float) -> None:
        self._expire(now)
        self.entries[key] = (now + self.ttl, value)
        self.entries.move_to_end(key)
        while len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)


@pytest.mark.parametrize("seed", range(20))
def test_the_noted_oldest_time_answers_as_reading_the_first_entry(seed: int) -> None:
    """``get``, ``seen`` and ``put`` ask a noted time (when the oldest entry expires) rather
    than the dict's first entry: after any sequence of accesses (refreshes of the oldest entry,
    evictions, time standing still, going back, leaping) it is that entry's time, or inf with
    no entry, and every answer and the entries held are the reference's."""
    import random

    rng = random.Random(seed)
    ttl = rng.choice([0.0, 1.0, 5.0])
    c: DedupCache[int, int] = DedupCache(ttl=ttl, max_entries=rng.choice([1, 3, 50]))
    ref = _Reference(c.ttl, c.max_entries)
    now = 0.0
    for _ in range(400):
        now = max(0.0, now + rng.choice([0.0, 0.0, 0.3, 1.0, 7.0, -0.5]))
        key = rng.randrange(8)
        what = rng.randrange(3)
        if what == 0:
            assert c.get(key, now) == ref.get(key, now)
        elif what == 1:
            assert c.seen(key, now) == ref.seen(key, now)
        else:
            value = rng.randrange(100)
            c.put(key, value, now)
            ref.put(key, value, now)
        assert _pairs(c) == list(ref.entries.items())
        first = next(iter(c._expiry.values())) if len(c) else float("inf")
        assert c._oldest == first


def test_held_entries_give_the_garbage_collector_nothing_to_track() -> None:
    """A node serving forwarded writes holds up to ``max_entries`` of them, each a (sender,
    id) key and the reply: kept as an expiry map and a value map, an entry is no object the
    collector tracks (a pair holding a message would be, and every full collection would
    rescan each, while the requests wait)."""
    import gc

    from kvcore.messages import Reply

    ok = Reply()
    c: DedupCache[tuple[str, int], Reply] = DedupCache(ttl=10.0, max_entries=20_000)
    gc.collect()
    before = len(gc.get_objects())
    for i in range(10_000):
        c.put(("n2", 1 << 40 | i), ok, 0.0)
    gc.collect()  # (a tuple of atoms is untracked at its first collection)
    assert len(gc.get_objects()) - before < 100
    assert c.get(("n2", 1 << 40 | 7), 1.0) is ok and len(c) == 10_000

