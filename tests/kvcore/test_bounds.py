"""Issue 10 in kvcore: bounded numbers on the wire, and who may move a member.

- Every int in the codec is range-checked: slots 0..16383, the rest 0..2^63-1 (``kvcore.bounds``).
- The hostile ``Dead{incarnation: 2**64-1}`` of the issue is refused at decode; one at the int64
  cap is ignored; one just under the accepted limit is refuted by a refutation that still fits.
- An Alive that moves a live member is taken only from that member itself.
"""

from __future__ import annotations

import msgpack  # type: ignore[import-untyped]
import pytest

import kvwire
from kvcore import codec, errors
from kvcore.bounds import INT64_MAX, MAX_ACCEPTED, epoch_problem
from kvcore.errors import RemoteProtocolError
from kvcore.messages import Alive, Dead, Gossip, MemberState, MigrateKeys, PushPull, Suspect
from kvcore.node import Node
from kvcore.runtime import FakeRuntime

from .test_membership_protocol import Harness


def raw(kind: str, **fields: object) -> dict[str, object]:
    return {"k": kind, **fields}


# --- the codec --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "words"),
    [
        (raw("Dead", node="p3", incarnation=2**64 - 1, source="x"), "Dead.incarnation"),
        (raw("Dead", node="p3", incarnation=2**63, source="x"), "out of range"),
        (raw("Dead", node="p3", incarnation=-1, source="x"), "out of range"),
        (raw("Alive", node="e", incarnation=1, addr="", peer_addr="", slots="0", epoch=2**64 - 1),
         "Alive.epoch"),
        (raw("MigrateKeys", batch=1, slot=16384, keys=[], values=[]), "MigrateKeys.slot"),
        (raw("MigrateKeys", batch=1, slot=-1, keys=[], values=[]), "out of range"),
        (raw("Gossip", updates=[raw("Suspect", node="a", incarnation=2**63, source="b")]),
         "out of range"),
    ],
)
def test_integers_past_the_wire_cap_are_refused_at_decode_with_a_sentence(
    obj: dict[str, object], words: str
) -> None:
    with pytest.raises(RemoteProtocolError, match=words):
        codec.decode(obj)
    # through msgpack and the frame decoder: a FrameError, never anything else
    payload = msgpack.packb(obj, use_bin_type=True)
    with pytest.raises(kvwire.FrameError, match="out of range"):
        kvwire.unpack(payload)


def test_the_largest_values_on_the_wire_round_trip() -> None:
    for m in (
        Dead(node="p3", incarnation=INT64_MAX, source="x"),
        MigrateKeys(batch=INT64_MAX, slot=16383, keys=(), values=()),
        Alive(node="a", incarnation=INT64_MAX, addr="", peer_addr="", slots="", epoch=INT64_MAX),
    ):
        assert kvwire.unpack(kvwire.pack(m)) == m


# --- membership: the Dead{incarnation: 2**64-1} ------------------------------------------


def refutations(h: Harness) -> list[Alive]:
    out: list[Alive] = []
    for s in h.log:
        for u in getattr(s.msg, "gossip", ()) or getattr(s.msg, "updates", ()):
            if type(u) is Alive and u.node == "n1":
                out.append(u)
    return out


def test_a_dead_at_the_int64_cap_is_ignored_and_counted_not_refuted_into_overflow() -> None:
    h = Harness().start()
    before = h.m.me.incarnation
    h.handle("n2", Gossip(updates=(Dead(node="n1", incarnation=INT64_MAX, source="n2"),)))
    h.handle("n2", Gossip(updates=(Suspect(node="n1", incarnation=MAX_ACCEPTED + 1, source="n2"),)))
    assert h.m.me.incarnation == before
    assert h.m.counters.get("out_of_range") == 2


def test_a_dead_at_the_accepted_limit_is_refuted_and_the_refutation_fits_on_the_wire() -> None:
    h = Harness().start()
    h.handle("n2", Gossip(updates=(Dead(node="n1", incarnation=MAX_ACCEPTED, source="n2"),)))
    assert h.m.me.incarnation == MAX_ACCEPTED + 1 <= INT64_MAX
    alive = h.m.me.to_alive()
    assert kvwire.unpack(kvwire.pack(Gossip(updates=(alive,)))) == Gossip(updates=(alive,))
    # and the others take it (an Alive about another member may go up to the wire's cap)
    other = Harness(node="n2", peers=("n1", "n3")).start()
    other.handle("n3", Gossip(updates=(Dead(node="n1", incarnation=MAX_ACCEPTED, source="n3"),)))
    assert other.m.state_of("n1") == "dead"
    other.handle("n1", Gossip(updates=(alive,)))
    assert other.m.state_of("n1") == "alive"


def test_a_claim_at_an_epoch_over_the_accepted_limit_is_ignored() -> None:
    h = Harness().start()
    evil = Alive(node="n2", incarnation=5, addr="a-n2", peer_addr="p-n2", slots="0-16383",
                 epoch=MAX_ACCEPTED + 1)
    h.handle("n2", Gossip(updates=(evil,)))
    assert h.m.members["n2"].epoch == 0
    assert h.m.counters.get("out_of_range") == 1


def test_a_push_pull_judges_the_bounds_of_alive_entries_as_before_its_cheap_skip() -> None:
    # the merge's skip of alive entries it holds is taken only where _in_range would say yes:
    # an entry about another member within bounds; any other is still judged and counted
    h = Harness().start()

    def entry(node: str, inc: int, epoch: int) -> MemberState:
        return MemberState(node=node, incarnation=inc, state="alive", addr=f"a-{node}", peer_addr=f"p-{node}",
                           slots="", epoch=epoch)

    held = (entry("n2", 0, 0), entry("n3", 0, MAX_ACCEPTED))  # known, within bounds: skipped, no count
    h.handle("n2", PushPull(join=False, reply=True, members=held))
    assert "out_of_range" not in h.m.counters
    over = (entry("n2", 0, MAX_ACCEPTED + 1), entry("n1", MAX_ACCEPTED + 1, 0))  # known, but out of bounds
    h.handle("n2", PushPull(join=False, reply=True, members=over))
    assert h.m.counters.get("out_of_range") == 2
    assert h.m.me.incarnation < MAX_ACCEPTED and h.m.members["n2"].epoch == 0


def test_operators_epochs_are_bounded_too() -> None:
    assert epoch_problem(MAX_ACCEPTED) is None
    assert "out of range" in (epoch_problem(MAX_ACCEPTED + 1) or "")
    assert "out of range" in (epoch_problem(2**64) or "")
    node = Node(FakeRuntime("a"), None, None)
    with pytest.raises(errors.BadRequest, match="out of range"):
        node.claim_slots("0-10", 2**64)
    with pytest.raises(errors.BadRequest, match="out of range"):
        node.assign_slots("0-10", -1)


# --- membership: who may move a member ----------------------------------------------------------


def moved(node: str, inc: int) -> Alive:
    return Alive(node=node, incarnation=inc, addr="evil:1", peer_addr="evil:2", slots="", epoch=0)


def test_another_member_cannot_move_a_live_member() -> None:
    # issue 10: an Alive for an existing id with a higher incarnation and the attacker's address
    h = Harness().start()
    h.handle("n3", Gossip(updates=(moved("n2", 9),)))
    assert h.m.address_of("n2") == "p-n2"
    assert h.m.counters.get("address_refused") == 1
    # the same through a push-pull's full state
    h.handle("n3", PushPull(join=False, reply=False, members=(_state(moved("n2", 10)),)))
    assert h.m.address_of("n2") == "p-n2"
    assert h.m.counters.get("address_refused") == 2


def _state(a: Alive) -> MemberState:
    return MemberState(node=a.node, incarnation=a.incarnation, state="alive", addr=a.addr,
                       peer_addr=a.peer_addr, slots=a.slots, epoch=a.epoch)


def test_a_member_may_move_itself_and_anyone_may_bring_back_a_dead_one_elsewhere() -> None:
    h = Harness().start()
    h.handle("n2", Gossip(updates=(moved("n2", 9),)))  # restarted on other ports: it says so
    assert h.m.address_of("n2") == "evil:2"
    # a member held dead comes back at a new address through whoever relays it (the reclaim
    # rule: how a restart behind a seed spreads)
    h.handle("n2", Gossip(updates=(Dead(node="n3", incarnation=3, source="n2"),)))
    assert h.m.state_of("n3") == "dead"
    h.handle("n2", Gossip(updates=(moved("n3", 4),)))
    assert h.m.state_of("n3") == "alive" and h.m.address_of("n3") == "evil:2"


def test_an_update_that_keeps_the_address_is_taken_from_anyone() -> None:
    h = Harness().start()
    same = Alive(node="n2", incarnation=7, addr="a-n2", peer_addr="p-n2", slots="0-5", epoch=3)
    h.handle("n3", Gossip(updates=(same,)))
    assert h.m.members["n2"].incarnation == 7 and h.m.members["n2"].slots == "0-5"
    assert "address_refused" not in h.m.counters


def test_a_node_applies_the_address_rule_on_its_own_dispatch_path() -> None:
    # the node hands SWIM's messages straight to membership's handlers (not through
    # Membership.handle): the sender must reach the address rule on that path too
    from kvcore.config import ClusterConfig, NodeConfig, NodeSpec

    cluster = ClusterConfig((
        NodeSpec("n1", "h1:1", "p1:1", ((0, 8191),)),
        NodeSpec("n2", "h2:1", "p2:1", ((8192, 16383),)),
        NodeSpec("n3", "h3:1", "p3:1", ()),
    ), 1)
    node = Node(FakeRuntime("n1", seed=1), NodeConfig(), cluster)
    node.start()
    node.on_message("n3", Gossip(updates=(moved("n2", 9),)))
    node.on_message("n3", PushPull(join=False, reply=True, members=(_state(moved("n2", 10)),)))
    assert node.membership.address_of("n2") == "p2:1"
    assert node.membership.counters.get("address_refused") == 2
    node.on_message("n2", Gossip(updates=(moved("n2", 11),)))  # a member may move itself
    assert node.membership.address_of("n2") == "evil:2"
