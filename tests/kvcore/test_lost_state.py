"""A member that lost its state (its data directory wiped) and came back under its old id.

An audit on real processes: ``kill -9`` of a voter of a replicated group, ``rm -rf`` of its data
directory, the same command again. The fresh node started standalone (it owns every slot), and
once its peers reached it, it served its own empty store as a cluster member: reads of acked
keys answered 404, writes were acknowledged outside the group; and after it was removed, its
record in gossip (the fresh node's standalone claim at epoch 1) no longer matched the map the
others had built from its earlier claim (epoch 4), so a node added later never agreed on the
map. What is checked here, in kvcore (both worlds run it):

- a node that runs no group and gets a heartbeat from a live member, its leader, vouching for
  entries it holds (commit above 0: capped at what the leader knows it holds) serves no key
  (503 ``lost_state``) and refuses to form or join a group; vote requests, appends, zero-commit
  heartbeats (a node about to form its group gets them: ``create``'s POSTs come one after
  another) and heartbeats from a node it does not know as a live member (one forged packet)
  prove nothing; the mark is not kept across a restart (the leader's next heartbeat says it
  again), so a forged heartbeat costs a restart, never the node's keys;
- a node with no claim of its own that hears its peers' record of it claiming slots gives up
  the standalone claim of every slot and serves none of them; it advertises the claim the
  cluster knows (never taking it into its own map) until an operator's claim replaces it;
- a member's record never goes back to a claim at a lower epoch, so a node that learns the
  records later derives the same map as one that heard every claim.
"""

from __future__ import annotations

from typing import Any

import pytest

from kvcore import errors
from kvcore.membership import Membership, SwimConfig
from kvcore.messages import Alive, Asking, Dead, Forward, ForwardReply, Get, MemberState, PushPull, Put, Reply
from kvcore.node import Node
from kvcore.node.node import LOST_STATE_GRACE
from kvcore.node.restore import LOST_CLAIM_KEY
from kvcore.raft.messages import RaftAppend, RaftAppendResp, RaftHeartbeat, RaftVote
from kvcore.runtime import FakeRuntime, MemoryStorage
from kvcore.slots import key_slot

C_SLOTS = "10923-16383"


def fresh(nid: str = "c", disk: MemoryStorage | None = None) -> tuple[Node, FakeRuntime, list[str]]:
    """A node as ``python -m realnet.node --id c --data-dir EMPTY`` builds it: standalone."""
    rt = FakeRuntime(nid, seed=3)
    if disk is not None:
        rt.storage = disk
    said: list[str] = []
    node = Node(rt, swim=SwimConfig.local(), addr="127.0.0.1:7003", peer_addr="127.0.0.1:17003",
                alarm=said.append)
    node.start()
    return node, rt, said


def ask(node: Node, op: Any) -> Reply:
    out: list[Reply] = []
    node.on_client_request(op, out.append)
    assert len(out) == 1
    return out[0]


def record_of_c(incarnation: int = 7, state: str = "dead") -> MemberState:
    """What a peer holds of c: its claim at epoch 4 (create gave it the last third)."""
    return MemberState(node="c", addr="127.0.0.1:7003", peer_addr="127.0.0.1:17003", incarnation=incarnation,
                       state=state, slots=C_SLOTS, epoch=4)


def peers_state() -> tuple[MemberState, ...]:
    return (MemberState(node="a", addr="127.0.0.1:7001", peer_addr="127.0.0.1:17001", incarnation=3,
                        state="alive", slots="0-5460", epoch=2),
            MemberState(node="b", addr="127.0.0.1:7002", peer_addr="127.0.0.1:17002", incarnation=3,
                        state="alive", slots="5461-10922", epoch=3),
            record_of_c())


# --- a node in no group that a group counts a member ----------------------------------------


def peers_only() -> tuple[MemberState, ...]:
    """a and b alive, nothing of c (the node met them; its own old record is not in it)."""
    return peers_state()[:2]


def met(node: Node) -> Node:
    """``node`` knows a and b as live members (create's meet, or gossip reaching a fresh node)."""
    node.on_message("a", PushPull(join=False, reply=False, members=peers_only()))
    return node


def test_a_node_in_no_group_its_leader_vouches_for_serves_no_key() -> None:
    node, rt, said = fresh()
    assert not ask(node, Put(key=b"k1", value=b"x")).error  # standalone: it serves
    met(node)
    malformed = node.stats.malformed
    node.on_message("a", RaftHeartbeat(term=6, src="a", dst="c", commit=9))
    assert node.stats.malformed == malformed  # not malformed: it says something
    for op in (Get(key=b"k1"), Put(key=b"k1", value=b"y")):
        r = ask(node, op)
        assert r.error == errors.LostState.code and "lost its state" in (r.message or ""), r
        assert node.answer_now(op, lambda r: None) is None  # no fast lane around it
    assert errors.http_status("lost_state") == 503
    assert node.info()["lost_state"] == {"from": "a", "term": 6}
    assert len(said) == 1 and "remove-node ADDR c" in said[0] and "fresh --data-dir" in said[0]
    node.on_message("b", RaftHeartbeat(term=6, src="b", dst="c", commit=9))
    assert len(said) == 1  # said once
    # not kept: built again on the same storage it is a fresh node until the next heartbeat
    again, _, _ = fresh(disk=rt.storage)  # type: ignore[arg-type]
    assert "lost_state" not in again.info() or again.info()["lost_state"] is None
    assert ask(again, Get(key=b"k1")).error != errors.LostState.code


def test_a_forwarded_or_asked_request_gets_the_same_refusal_as_a_clients() -> None:
    """The refusal sat at the client door only: a peer that forwarded to the node (its map still
    names it owner) was answered from the empty store the node serves none of."""
    node, rt, _ = fresh()
    assert not ask(node, Put(key=b"k1", value=b"x")).error
    met(node).on_message("a", RaftHeartbeat(term=6, src="a", dst="c", commit=9))
    rt.sent.clear()
    node.on_message("a", Forward(request_id=1, op=Get(key=b"k1")))
    node.on_message("b", Asking(request_id=2, op=Put(key=b"k1", value=b"y")))
    answers = {dst: m.reply for dst, m in rt.sent if isinstance(m, ForwardReply)}
    assert set(answers) == {"a", "b"}, rt.sent
    assert all(r.error == errors.LostState.code for r in answers.values()), answers
    assert node.store.get(b"k1") == b"x"  # nothing applied


@pytest.mark.parametrize("msg", [
    RaftHeartbeat(term=1, src="a", dst="c", commit=0),  # the leader knows c holds nothing
    RaftVote(term=2, src="a", dst="c", last_index=1, last_term=1),  # a (pre)candidate's request
    RaftAppend(term=1, src="a", dst="c", prev_index=0, prev_term=0, commit=1),  # its first append
])
def test_traffic_a_node_about_to_form_or_join_its_group_gets_proves_nothing(msg: Any) -> None:
    """The regression audit: create forms the group node by node, a second apart on a loaded
    machine; a, formed first, elected itself and sent c (not formed yet) its pre-vote: c took
    itself for a voter that lost its log, for good, and the group was left one voter short."""
    node, rt, said = fresh()
    met(node).on_message("a", msg)
    assert node.lost_group is None and not said
    rt.advance(1.0)
    node.form_group(["a", "b", "c"])  # create's POST arrives, a second later: it forms
    assert node.replica is not None
    rt.advance(2 * LOST_STATE_GRACE)
    assert node.lost_group is None and not said


def test_a_forged_heartbeat_costs_a_restart_never_the_nodes_keys() -> None:
    """One forged packet (an open bus: a Hello naming 'mallory', then a heartbeat) made a healthy
    standalone node refuse every key, and the mark survived restarts: a remedy that threw its
    keys away (remove-node, a fresh data directory). Now the mark lives in memory only."""
    node, rt, _ = fresh()
    assert not ask(node, Put(key=b"k1", value=b"x")).error
    node.on_message("mallory", RaftHeartbeat(term=1, src="mallory", dst="c", commit=5))
    assert ask(node, Get(key=b"k1")).error == errors.LostState.code
    again, _, said = fresh(disk=rt.storage)  # type: ignore[arg-type]
    assert again.lost_group is None and not said
    assert ask(again, Get(key=b"k1")).error != errors.LostState.code


def test_traffic_that_proves_nothing_says_lost_once_no_group_was_formed_within_the_grace() -> None:
    """A leader elected after the loss knows nothing of what the node held: its heartbeats carry
    commit 0, its probes are appends. Had no group been formed here meanwhile (create's
    POST), they are the group's traffic to a member that lost its log."""
    node, rt, said = fresh()
    met(node).on_message("a", RaftHeartbeat(term=7, src="a", dst="c", commit=0))
    rt.advance(LOST_STATE_GRACE - 0.1)
    assert node.lost_group is None and not said
    node.on_message("a", RaftHeartbeat(term=7, src="a", dst="c", commit=0))  # (one timer at a time)
    rt.advance(0.2)
    assert node.lost_group == {"from": "a", "term": 7} and len(said) == 1
    assert ask(node, Get(key=b"k")).error == errors.LostState.code


def test_raft_traffic_not_addressed_to_it_or_from_another_sender_is_still_malformed() -> None:
    node, _, said = fresh()
    met(node)
    before = node.stats.malformed
    node.on_message("a", RaftHeartbeat(term=6, src="a", dst="x", commit=9))  # to another node
    node.on_message("b", RaftHeartbeat(term=6, src="a", dst="c", commit=9))  # src is not the sender
    node.on_message("a", RaftAppendResp(term=6, src="a", dst="c", index=3))  # an answer: we sent nothing
    assert node.stats.malformed == before + 3 and node.lost_group is None and not said


def test_a_lost_member_may_not_form_or_join_a_group_until_removed() -> None:
    """A heartbeat does not tell a voter from a learner, and a voter that forgot its log and
    votes would let the group lose writes: it must leave the configuration first."""
    node, _, _ = fresh()
    met(node).on_message("a", RaftHeartbeat(term=6, src="a", dst="c", commit=3))
    for voters in (["a", "b", "c"], []):
        with pytest.raises(errors.Conflict, match="lost its state"):
            node.form_group(voters)
    assert node.replica is None


# --- a node with no claim of its own that the cluster remembers -------------------------------


def test_a_fresh_node_that_hears_its_old_claim_gives_up_every_slot_and_advertises_it() -> None:
    node, rt, said = fresh()
    assert node.slot_map.slot_counts() == {"c": 16384}  # standalone
    node.on_message("a", PushPull(join=False, reply=False, members=peers_state()))
    # the others' claims win their slots; the standalone claim of the rest is given up
    assert node.slot_map.slot_counts() == {"a": 5461, "b": 5462}
    assert node.slot_map.owner(12563) is None
    r = ask(node, Put(key=b"k2", value=b"x"))  # slot 12563: c's in the cluster's map
    assert key_slot(b"k2") == 12563 and r.error == errors.SlotUnassigned.code
    assert node.info()["lost_claim"] == {"slots": C_SLOTS, "epoch": 4}
    assert len(said) == 1 and "lost its state" in said[0] and "fix" in said[0]
    # advertised (every record of c stays what the maps were built from), above the peer's
    # incarnation, and never taken into its own map or kept as its own claim
    me = node.membership.me
    assert (me.slots, me.epoch) == (C_SLOTS, 4) and me.incarnation > 7
    assert node.membership.stored_claim() is None
    # built again on the same storage: still advertised, still not served
    again, _, said2 = fresh(disk=rt.storage)  # type: ignore[arg-type]
    assert (again.membership.me.slots, again.membership.me.epoch) == (C_SLOTS, 4)
    assert again.slot_map.owner(12563) is None and not said2
    # an operator's claim (fix lets it claim them again) ends it
    again.claim_slots(C_SLOTS, 5)
    assert again.info()["lost_claim"] is None and rt.storage.get(LOST_CLAIM_KEY) is None
    assert again.slot_map.owner(12563) == "c" and again.membership.me.epoch == 5


@pytest.mark.parametrize("c_first", [True, False])
def test_a_member_added_again_whose_old_claim_moved_away_has_lost_nothing(c_first: bool) -> None:
    """The regression audit: c removed (its slots moved to a and b, at higher epochs) and added
    again under its id, fresh, logged at ERROR that it lost slots 10923-16383 and showed a
    ``lost_claim``, though nothing was lost. Its old record's claim is wholly superseded in the
    map: said nothing, and it keeps nothing of it, whatever order the records come in."""
    node, _, said = fresh()
    moved = (MemberState(node="a", addr="127.0.0.1:7001", peer_addr="127.0.0.1:17001", incarnation=5,
                         state="alive", slots="0-5460,10923-13653", epoch=5),
             MemberState(node="b", addr="127.0.0.1:7002", peer_addr="127.0.0.1:17002", incarnation=5,
                         state="alive", slots="5461-10922,13654-16383", epoch=6))
    old = record_of_c(state="alive")  # held alive at incarnation 7: the fresh node (0) refutes it
    members = (old, *moved) if c_first else (*moved, old)
    node.on_message("a", PushPull(join=False, reply=False, members=members))
    assert node.lost_claim is None and not said, said
    assert node.slot_map.slot_counts() == {"a": 8192, "b": 8192}
    # an Alive of itself carrying the old claim later (the record passed on): still nothing
    node.on_message("b", PushPull(join=False, reply=False, members=(record_of_c(incarnation=8, state="alive"),)))
    assert node.lost_claim is None and not said


def test_an_alive_of_itself_with_a_claim_teaches_the_same_and_is_refuted_with_it() -> None:
    node, rt, _ = fresh()
    rt.take_sent()
    node.membership.apply(Alive(node="c", incarnation=9, addr="127.0.0.1:7003", peer_addr="127.0.0.1:17003",
                                slots=C_SLOTS, epoch=4))
    me = node.membership.me
    assert me.incarnation > 9 and (me.slots, me.epoch) == (C_SLOTS, 4)
    assert node.slot_map.slot_counts() == {}


def test_a_node_with_a_claim_of_its_own_or_in_a_static_cluster_keeps_it() -> None:
    from kvcore.config import ClusterConfig, NodeSpec

    node, _, said = fresh()
    node.assign_slots("0-100", 2)
    node.on_message("a", PushPull(join=False, reply=False, members=peers_state()))
    assert node.slot_map.owner(50) == "c"  # its own claim stands (epoch 2 is its own, above a's)
    assert node.info()["lost_claim"] == {"slots": C_SLOTS, "epoch": 4} and len(said) == 1
    cluster = ClusterConfig((NodeSpec("c", "127.0.0.1:7003", "127.0.0.1:17003", ((10923, 16383),)),
                             NodeSpec("a", "127.0.0.1:7001", "127.0.0.1:17001", ((0, 10922),))), 1)
    rt = FakeRuntime("c", seed=1)
    static = Node(rt, cluster=cluster, swim=SwimConfig.local())
    static.start()
    static.on_message("a", PushPull(join=False, reply=False, members=(record_of_c(9, "alive"),)))
    assert static.info()["lost_claim"] is None and static.slot_map.owner(12563) == "c"


# --- the records of a member that lost its state: the same map whatever the order ------------


def _membership(nid: str) -> Membership:
    return Membership(FakeRuntime(nid, seed=1), lambda dst, msg: None, SwimConfig.local(), "", "")


def test_a_members_record_never_goes_back_to_a_claim_at_a_lower_epoch() -> None:
    a = _membership("a")
    a.apply(Alive(node="c", incarnation=5, addr="h:3", peer_addr="h:13", slots=C_SLOTS, epoch=4))
    # the wiped c's refutation: a higher incarnation, the standalone claim at epoch 1
    a.apply(Alive(node="c", incarnation=8, addr="h:3", peer_addr="h:13", slots="0-16383", epoch=1))
    m = a.members["c"]
    assert (m.incarnation, m.slots, m.epoch) == (8, C_SLOTS, 4)
    # gossiped on as held, not as heard
    queued = [u for u in a.broadcasts.take(100, 10) if isinstance(u, Alive) and u.node == "c"]
    assert queued and all((u.slots, u.epoch) == (C_SLOTS, 4) for u in queued if u.incarnation == 8)
    # a claim at the same or a higher epoch replaces it as before
    a.apply(Alive(node="c", incarnation=9, addr="h:3", peer_addr="h:13", slots="10923-12000", epoch=6))
    assert (a.members["c"].slots, a.members["c"].epoch) == ("10923-12000", 6)


def test_a_node_that_learns_the_records_later_derives_the_same_map() -> None:
    """The follow-on of the audit: c, wiped, was removed; a node added afterwards learned c's
    record (left, with the claim it gossiped) and never agreed with the others on the map."""
    old = Node(FakeRuntime("a", seed=1), swim=SwimConfig.local())
    old.assign_slots("0-10922", 2)
    old.membership.apply(Alive(node="c", incarnation=5, addr="h:3", peer_addr="h:13", slots=C_SLOTS, epoch=4))
    old.membership.apply(Alive(node="c", incarnation=8, addr="h:3", peer_addr="h:13", slots="0-16383", epoch=1))
    old.membership.apply(Dead(node="c", incarnation=9, source="c"))  # remove-node: it left
    newcomer = Node(FakeRuntime("d", seed=2), swim=SwimConfig.local(), seeds=["a"])
    states = tuple(MemberState(node=m.node, addr=m.addr, peer_addr=m.peer_addr, incarnation=m.incarnation,
                               state=m.state, slots=m.slots, epoch=m.epoch)
                   for m in old.membership.members.values())
    newcomer.on_message("a", PushPull(join=False, reply=True, members=states))
    assert newcomer.slot_map.owner(12563) == old.slot_map.owner(12563) == "c"
    assert newcomer.slot_map.epoch(12563) == old.slot_map.epoch(12563) == 4
    assert newcomer.slot_map.runs() == old.slot_map.runs()


def test_a_node_that_joins_a_group_claims_what_the_cluster_remembers_of_it() -> None:
    """A member removed and added again under a fresh data directory: in a group the map is only
    a hint to clients, so it takes the claim back and every map agrees."""
    node, _, _ = fresh()
    node.on_message("a", PushPull(join=False, reply=False, members=peers_state()))
    assert node.lost_claim is not None
    node.store.delete(b"k1") if node.store.count() else None
    node.form_group([])
    assert node.lost_claim is None and node.slot_map.owner(12563) == "c"
    assert node.slot_map.epoch(12563) == 4 and node.membership.stored_claim() == (C_SLOTS, 4)


def test_a_mark_is_taken_back_only_for_the_sender_that_set_it_and_keys_are_served_again() -> None:
    """``clear_lost_state``: what an unreplicated cluster's ``fix`` asks once it saw the sender
    runs no group (a stray or forged heartbeat)."""
    node, _, _ = fresh()
    assert not ask(node, Put(key=b"k1", value=b"x")).error
    assert node.clear_lost_state("mallory") is False  # no mark: nothing to take back
    node.on_message("mallory", RaftHeartbeat(term=1, src="mallory", dst="c", commit=5))
    assert ask(node, Get(key=b"k1")).error == errors.LostState.code
    with pytest.raises(errors.Conflict, match="marked lost by mallory's Raft traffic"):
        node.clear_lost_state("a")
    assert node.lost_group is not None
    assert node.clear_lost_state("mallory") is True
    assert node.lost_group is None
    r = ask(node, Get(key=b"k1"))
    assert not r.error and r.value == b"x"


def test_a_mark_taken_back_is_not_set_again_by_a_grace_timer_pending_before_it() -> None:
    node, rt, _ = fresh()
    met(node).on_message("a", RaftHeartbeat(term=7, src="a", dst="c", commit=0))  # grace timer
    node.on_message("a", RaftHeartbeat(term=7, src="a", dst="c", commit=4))  # marked at once
    assert node.clear_lost_state("a") is True
    rt.advance(2 * LOST_STATE_GRACE)
    assert node.lost_group is None
