"""Joins one by one through seeds give the same runs as before the join fast paths: pinned.

The digests, view hashes and state hashes below were computed on main *before* the changes that
made a thousand joins cheap (issue 12's last target, ``benchmarks/join_scale.py``): a broadcast
queue that takes whole slices, one shared record per learned Alive (copied on write), the
push-pull merge's cheaper skip of alive entries it holds. The same seed must still give the same
trace, message for message, the same views and slot maps, and the same counters and storage
(durable and seen) on every node: clusters grown one join at a time with and without the codec,
and with loss, a crash and restart and a leave under way.

They run with gossip rounds that tick every ``gossip_interval``, as every round did when these
were pinned (``Dissemination.sleep_when_idle = False``); ``tests/sim/test_idle_gossip.py`` shows
that rounds that sleep while nothing is queued give the same runs less the empty rounds' timers.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from kvcore.membership import LEFT_KEY, SwimConfig
from sim.cluster import SimCluster

from .test_shared_views import views_hash

pytestmark = pytest.mark.usefixtures("ticking_rounds")  # as when the digests were pinned


#: (seed, joins, codec, until, faults, trace digest, views hash, counters+storage hash), from
#: main before the change (see the docstring)
PINNED = [
    (1, 40, False, 15, False, "70c867cdae2da7cb126681fb8791d516", "ba6018eba78c0317", "955936a1ea76a68a"),
    (2, 40, True, 15, False, "c54f11fe65f75a9767773957bdef9b62", "ba6018eba78c0317", "66787ba17c02b74e"),
    (3, 80, False, 20, False, "a190b9686ac779d5b302e1e45be16f09", "66b858ecdbecf02c", "115f4d76889eadbc"),
    (4, 25, True, 10, False, "b7c0a594db8b9ce7b608321f7f77a715", "69ad2b280024f281", "556e7466eff03af0"),
    (5, 60, True, 20, True, "b2a260916fb6035d4bc087ce0906d797", "221bd7840bcaba26", "19488fce76195893"),
    (6, 200, False, 25, False, "a3035922e00a3a5858b7d0fb6a36adad", "fafea6e16d5cc240", "2d1ca934bde5f9f8"),
    (7, 60, False, 20, True, "623a7e2d9531df7b81309830646838bd", "73f4732434b0c483", "c6eda685d90e758f"),
    (8, 120, False, 40, True, "ebcf1712284c358b6f4af20251c7a480", "0a38384f0343ea3c", "fbe744a8b248d1bf"),
]


def state_hash(c: SimCluster) -> str:
    """Every node's membership counters and storage (what a sync made durable, and what it sees).
    The mark a graceful leave writes (``LEFT_KEY``, added after the pins) is left out: the rest
    of a leaver's storage is pinned as before."""
    h = hashlib.blake2b(digest_size=8)
    for nid in c.ids:
        node = c.node(nid)
        if node is not None:
            h.update(json.dumps(sorted(node.membership.counters.items())).encode())
        st = c.storage(nid)
        h.update(repr(sorted((k, v) for k, v in st.durable.items() if k != LEFT_KEY)).encode())
        h.update(repr([(k, v) for k, v in st.items("") if k != LEFT_KEY]).encode())
    return h.hexdigest()


def _run(seed: int, joins: int, codec: bool, until: float, faults: bool) -> SimCluster:
    c = SimCluster(seed, 3, join="static", codec=codec, swim=SwimConfig.lan())
    for i in range(joins):
        c.add_node(f"n{4 + i}", at=i * 0.01)  # as benchmarks/join_scale.py: one by one, 10 ms apart
    if faults:
        c.set_loss(0.05, at=0.2)
        c.crash("n2", at=1.0)
        c.restart("n2", at=6.0)
        c.leave("n3", at=3.0)
    c.run(until=until)
    return c


@pytest.mark.parametrize(("seed", "joins", "codec", "until", "faults", "digest", "views", "state"), PINNED,
                         ids=[f"s{p[0]}-j{p[1]}{'-codec' if p[2] else ''}{'-faults' if p[4] else ''}"
                              for p in PINNED])
def test_joins_one_by_one_run_as_before(seed: int, joins: int, codec: bool, until: float, faults: bool,
                                        digest: str, views: str, state: str) -> None:
    c = _run(seed, joins, codec, until, faults)
    assert (c.digest(), views_hash(c), state_hash(c)) == (digest, views, state), f"seed {seed}"
