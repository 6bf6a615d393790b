"""Property tests of the dedup memory (:class:`kvcore.node.dedup.DedupCache`) against a model.

The model is a plain dict of ``key -> (stored at, value)`` read by the rules the module states:
an entry lives ``ttl`` seconds from its last put, at most ``max_entries`` are held (the least
recently put evicted first), and a lookup never returns an expired entry. Time only moves
forward, as a node's Runtime clock does. ``STORELAB_PROPERTY_EXAMPLES=N`` searches deeper.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from kvcore.node.dedup import DedupCache
from tests.kvcore.properties import property_settings

SETTINGS = property_settings(150)

OPS = st.lists(st.tuples(st.sampled_from(["put", "get", "seen", "tick"]), st.integers(0, 6),
                         st.sampled_from([0.0, 0.1, 0.5, 1.0, 2.5])), max_size=60)


@SETTINGS
@given(OPS, st.sampled_from([0.0, 1.0, 2.0]), st.integers(1, 5))
def test_the_cache_answers_as_the_model_and_holds_its_bounds(ops: list[tuple[str, int, float]], ttl: float,
                                                             cap: int) -> None:
    cache: DedupCache[int, str] = DedupCache(ttl, cap)
    model: dict[int, tuple[float, str]] = {}  # key -> (put at, value), least recently put first
    now = 0.0
    for n, (op, key, dt) in enumerate(ops):
        live = {k: v for k, v in model.items() if v[0] + ttl > now}
        if op == "tick":
            now += dt
        elif op == "put":
            live.pop(key, None)
            live[key] = (now, f"v{n}")
            while len(live) > cap:
                del live[next(iter(live))]
            cache.put(key, f"v{n}", now)
        elif op == "get":
            assert cache.get(key, now) == (live[key][1] if key in live else None), (op, key, now)
        else:
            assert cache.seen(key, now) == (key in live), (op, key, now)
        model = live
        assert len(cache) <= cap
        if op != "tick":  # (an access expires; a tick alone does not)
            assert list(cache) == list(model), (list(cache), list(model))


def test_a_zero_ttl_remembers_nothing_past_the_instant_it_was_put() -> None:
    cache: DedupCache[str, int] = DedupCache(0.0, 10)
    cache.put("a", 1, 5.0)
    assert cache.get("a", 5.0) is None and not cache.seen("a", 5.0)
