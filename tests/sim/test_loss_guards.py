"""The sim refuses what realnet refuses (issue 10): the loss guards live in the node, so a sim
verb or a scenario calling the admin door directly gets the same Conflict, with the data intact,
unless it accepts the loss."""

from __future__ import annotations

from typing import Any

import pytest

from kvcore import errors
from kvcore.messages import Put
from kvcore.slots import key_slot
from sim.cluster import SimCluster


def test_a_claim_of_another_nodes_slot_with_keys_is_refused_in_the_sim_too() -> None:
    c = SimCluster(3, 3)
    c.run(until=5.0)
    n1 = c.node("n1")
    owner = n1.slot_map.owner(key_slot(b"k"))
    holder = c.node(owner)
    replies = []
    holder.on_client_request(Put(key=b"k", value=b"v"), replies.append)
    assert replies and not replies[0].error
    thief = c.node(next(nid for nid in c.ids if nid != owner))
    slot = key_slot(b"k")
    epoch = thief.slot_map.max_epoch() + 1
    with pytest.raises(errors.Conflict, match=f"owned by {owner}"):
        thief.claim_slots(str(slot), epoch)
    c.run(until=8.0)
    assert all(c.node(nid).slot_map.owner(slot) == owner for nid in c.ids)
    assert holder.store.get(b"k") == b"v"
    thief.claim_slots(str(slot), epoch, accept_loss=True)  # a scenario that means it
    c.run(until=12.0)
    assert all(c.node(nid).slot_map.owner(slot) == thief.id for nid in c.ids)



def _keyed(seed: int) -> tuple[SimCluster, Any, Any, int]:
    """A 3-node sim cluster, the owner of slot(k) holding k, and another node."""
    c = SimCluster(seed, 3)
    c.run(until=5.0)
    slot = key_slot(b"k")
    owner = c.node(c.node("n1").slot_map.owner(slot))
    replies: list[Any] = []
    owner.on_client_request(Put(key=b"k", value=b"v"), replies.append)
    assert replies and not replies[0].error
    other = c.node(next(nid for nid in c.ids if nid != owner.id))
    return c, owner, other, slot


def test_a_finish_that_would_orphan_keys_is_refused_in_the_sim_too() -> None:
    c, owner, thief, slot = _keyed(4)
    with pytest.raises(errors.Conflict, match=f"not importing slot {slot}, which is owned by {owner.id}"):
        thief.finish_import([slot])
    thief.begin_import(slot, owner.id)
    with pytest.raises(errors.Conflict, match=f"from {owner.id} .alive., which has not told it"):
        thief.finish_import([slot])
    c.run(until=8.0)
    assert all(c.node(nid).slot_map.owner(slot) == owner.id for nid in c.ids)
    assert owner.store.get(b"k") == b"v" and thief.importing == {slot: owner.id}


def test_fix_serves_again_the_keys_a_finish_with_accept_loss_orphaned_in_the_sim() -> None:
    c, owner, thief, slot = _keyed(4)
    thief.begin_import(slot, owner.id)
    thief.finish_import([slot], accept_loss=True)  # a scenario that means it: owner's key is orphaned
    c.run(until=8.0)
    assert owner.stray_keys() == {"slots": str(slot), "keys": 1}
    c.fix(at=8.5)  # moves the slot back to the holder of the orphaned key, the thief's keys along
    c.run(until=20.0)
    assert [f.args for f in c.faults if f.verb in ("reshard_aborted", "fix_unfixed")] == []
    assert all(c.node(nid).slot_map.owner(slot) == owner.id for nid in c.ids)
    assert owner.store.get(b"k") == b"v" and owner.stray_keys()["keys"] == 0
