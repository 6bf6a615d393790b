"""Shared member records give the same runs as one record per (node, member): pinned digests.

The digests and view hashes below were computed on main *before* nodes of one static
configuration began to share their member records, their live pool and their push-pull state
(kvcore.membership.table), copy slot maps on write, walk large probe rounds lazily and take
broadcasts in bulk. The same seed must still give the same trace, message for message, and the
same views: static clusters in steady state, clusters grown through seeds, and one run with
loss, a crash and restart, a join and a leave. (Probe rounds over more than
``LAZY_ROUND_MIN`` members draw their order one probe at a time, which changes the runs of such
large clusters only; every cluster here is far smaller.)

They run with gossip rounds that tick every ``gossip_interval``, as every round did when these
were pinned (``Dissemination.sleep_when_idle = False``); ``tests/sim/test_idle_gossip.py`` shows
that rounds that sleep while nothing is queued give the same runs less the empty rounds' timers.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from kvcore.membership import SwimConfig
from sim.cluster import SimCluster

pytestmark = pytest.mark.usefixtures("ticking_rounds")  # as when the digests were pinned


#: (join, seed, n, trace digest, views hash), computed before the change (see the docstring)
PINNED = [
    ("static", 1, 5, "eac3577b551fcb7275d585e1a2fdce0d", "99a7c3dc092f584a"),
    ("static", 1, 40, "d9a561d6c1952f23621df09653aebccc", "2999287fc4d54848"),
    ("static", 1, 150, "daeb66e0f2e7db5ca9e806c683047b31", "d98f855b2edc266d"),
    ("static", 2, 5, "5fb20b62f37039c411035541af632780", "99a7c3dc092f584a"),
    ("static", 2, 40, "61b3b355d935d5dc3314ebbd86b1d02a", "2999287fc4d54848"),
    ("static", 2, 150, "09053f9310d7405d533947c723491c2c", "d98f855b2edc266d"),
    ("static", 3, 5, "e01a998117eea50a088283106ebb63d7", "99a7c3dc092f584a"),
    ("static", 3, 40, "572d2568c0d803e09d021e3bf384cb54", "2999287fc4d54848"),
    ("static", 3, 150, "ff4d4f7f2a91fc41621af8cf220a686d", "d98f855b2edc266d"),
    ("seeds", 1, 30, "5a3a59eb76981c03322fd393280a3f48", "5cd2de394c0bcd9f"),
    ("seeds", 1, 120, "d4468846d6f9c8e0634c3dd2210670e5", "c8e337a30e8cad92"),
    ("seeds", 2, 30, "d9910e7463c0dc3ca6b4e4612bbdb842", "5cd2de394c0bcd9f"),
    ("seeds", 2, 120, "44a52c0d0920193d4a5fbba6c53a3ef2", "c8e337a30e8cad92"),
    ("faults", 4, 60, "c8fcaabe39a85e552835e5e2ceb8a218", "e9e06ba1f16fbd02"),
]


def views_hash(c: SimCluster) -> str:
    h = hashlib.blake2b(digest_size=8)
    for node in c.nodes():
        h.update(json.dumps(node.membership.view(), sort_keys=True, default=str).encode())
        h.update(node.slot_map.to_text().encode())
    return h.hexdigest()


def _run(join: str, seed: int, n: int) -> SimCluster:
    if join == "faults":
        c = SimCluster(seed, n, join="static", swim=SwimConfig.lan())
        c.crash("n5", at=2.0)
        c.set_loss(0.05, at=1.0)
        c.restart("n5", at=12.0)
        c.add_node(at=5.0)
        c.leave("n7", at=8.0)
        c.run(until=40)
        return c
    c = SimCluster(seed, n, join=join, swim=SwimConfig.lan())
    c.run(until=20 if join == "static" else 30)
    return c


@pytest.mark.parametrize(("join", "seed", "n", "digest", "views"), PINNED,
                         ids=[f"{j}-s{s}-n{n}" for j, s, n, _, _ in PINNED])
def test_same_trace_and_views_as_before_sharing(join: str, seed: int, n: int, digest: str, views: str) -> None:
    c = _run(join, seed, n)
    assert (c.digest(), views_hash(c)) == (digest, views)


def test_static_nodes_share_records_until_one_learns_otherwise() -> None:
    c = SimCluster(3, 40, join="static", swim=SwimConfig.lan())
    c.crash("n9", at=1.0)
    c.run(until=30)
    a, b = c.node("n1").membership, c.node("n2").membership
    assert a.members.view is b.members.view is not None
    # everybody learned that n9 died: each holds its own record of it, and the rest shared
    assert not a.members.is_shared("n9") and a.members["n9"] is not b.members["n9"]
    assert a.members.is_shared("n17") and a.members["n17"] is b.members["n17"]
    assert a.members.view.records["n9"].state == "alive"
