"""Live slot migration and durability on the FakeRuntime: the message-level rules."""

from __future__ import annotations

import pytest

from kvcore import errors
from kvcore.config import ClusterConfig, NodeConfig, NodeSpec
from kvcore.messages import Asking, Delete, Forward, ForwardReply, Get, MigrateAck, MigrateKeys, Put, Reply
from kvcore.node import Node
from kvcore.runtime import FakeRuntime, MemoryStorage
from kvcore.slots import SlotMap, SlotRangeError, even_split, key_slot
from kvcore.store import LocalStore

SPLIT = even_split(["n1", "n2"])
CLUSTER = ClusterConfig(
    tuple(NodeSpec(n, f"127.0.0.1:{7001 + i}", f"127.0.0.1:{17001 + i}", tuple(SPLIT[n]))
          for i, n in enumerate(["n1", "n2"])), 1)
SLOT = key_slot(b"{a}x")  # 15495: owned by n2


def node(nid: str, durable: bool = False, storage: MemoryStorage | None = None) -> tuple[Node, FakeRuntime]:
    rt = FakeRuntime(nid, seed=1)
    if storage is not None:
        rt.storage = storage
    n = Node(rt, NodeConfig(durable=durable), CLUSTER)
    n.start()
    return n, rt


def sent(rt: FakeRuntime, kind: type) -> list:
    return [m for _, m in rt.take_sent() if isinstance(m, kind)]


def test_slot_map_text_round_trips_owners_and_epochs() -> None:
    m = SlotMap.from_assignment({"a": [(0, 99)], "b": [(100, 16383)]}, 1)
    m.claim([(50, 60)], "c", 7)
    m.claim([(200, 200)], None, 9)
    back = SlotMap.from_text(m.to_text())
    assert back == m
    assert "50-60=c@7" in m.to_text() and "200-200=@9" in m.to_text()


@pytest.mark.parametrize("text", ["", "0-5=a", "0-99999=a@1", "x-1=a@1", "5-1=a@1"])
def test_malformed_slot_map_text_is_refused(text: str) -> None:
    with pytest.raises(SlotRangeError):
        SlotMap.from_text(text)


def test_journaled_store_reloads_after_a_crash() -> None:
    disk = MemoryStorage()
    s = LocalStore(disk)
    s.set(b"a", b"1")
    s.set(b"b", b"2")
    s.set(b"a", b"3")
    s.delete(b"b")
    again = LocalStore.load(disk)
    assert again.get(b"a") == b"3" and again.get(b"b") is None and again.count() == 1
    assert again.keys_in_slot(key_slot(b"a")) == [b"a"]


def test_migrate_keys_moves_a_batch_and_freezes_it_until_acknowledged() -> None:
    src, rt = node("n2")
    for i in range(3):
        src.on_client_request(Put(key=b"{a}%d" % i, value=b"v%d" % i), lambda r: None)
    src.begin_migrate(SLOT, "n1")
    done: list[tuple[int, str]] = []
    src.migrate_keys(SLOT, 2, lambda n, e: done.append((n, e)))
    (batch,) = sent(rt, MigrateKeys)
    assert batch.keys == (b"{a}0", b"{a}1") and batch.values == (b"v0", b"v1")
    frozen: list[Reply] = []
    src.on_client_request(Get(key=b"{a}0"), frozen.append)
    src.on_client_request(Get(key=b"{a}2"), frozen.append)
    assert [r.error for r in frozen] == ["try_again", ""]
    src.on_message("n1", MigrateAck(batch=batch.batch, stored=2, error=""))
    assert done == [(2, "")]
    assert src.store.get(b"{a}0") is None and src.store.get(b"{a}2") == b"v2"


def test_an_unacknowledged_batch_is_resent_and_its_keys_stay_frozen() -> None:
    # the ack may have been lost after the target stored the batch: the outcome is unknown, so
    # unfreezing would let a delete land here while the target kept the old copy
    src, rt = node("n2")
    src.on_client_request(Put(key=b"{a}0", value=b"v"), lambda r: None)
    src.begin_migrate(SLOT, "n1")
    done: list[tuple[int, str]] = []
    src.migrate_keys(SLOT, 5, lambda n, e: done.append((n, e)))
    for _ in range(3):
        rt.advance(src.config.forward_timeout)
    batches = sent(rt, MigrateKeys)
    assert len(batches) == 3 and len({b.batch for b in batches}) == 1, "the same batch, resent"
    assert done and done[0][0] == 0 and "not acknowledged after 3 tries" in done[0][1]
    got: list[Reply] = []
    src.on_client_request(Get(key=b"{a}0"), got.append)
    assert got[0].error == "try_again"
    with pytest.raises(errors.Conflict):
        src.abort_migration(SLOT)
    # the next call resends the same batch; its ack finally arrives
    again: list[tuple[int, str]] = []
    src.migrate_keys(SLOT, 5, lambda n, e: again.append((n, e)))
    (resent,) = sent(rt, MigrateKeys)
    assert resent.batch == batches[0].batch
    src.on_message("n1", MigrateAck(batch=resent.batch, stored=1, error=""))
    assert again == [(1, "")] and src.store.get(b"{a}0") is None


def test_a_refused_batch_unfreezes_its_keys_and_says_why() -> None:
    src, rt = node("n2")
    src.on_client_request(Put(key=b"{a}0", value=b"v"), lambda r: None)
    src.begin_migrate(SLOT, "n1")
    done: list[tuple[int, str]] = []
    src.migrate_keys(SLOT, 5, lambda n, e: done.append((n, e)))
    (b,) = sent(rt, MigrateKeys)
    src.on_message("n1", MigrateAck(batch=b.batch, stored=0, error="node n1 is not importing"))
    assert done and "refused" in done[0][1]
    got: list[Reply] = []
    src.on_client_request(Get(key=b"{a}0"), got.append)
    assert got[0].value == b"v"


def test_aborting_an_import_drops_the_copies_the_importer_received() -> None:
    dst, _ = node("n1")
    dst.begin_import(SLOT, "n2")
    dst.on_message("n2", MigrateKeys(batch=1, slot=SLOT, keys=(b"{a}0",), values=(b"v",)))
    assert dst.store.get(b"{a}0") == b"v"
    # the source deleted its copy once it was acknowledged: this may be the only one (issue 10)
    with pytest.raises(errors.Conflict, match="only copy"):
        dst.abort_migration(SLOT)
    assert dst.store.get(b"{a}0") == b"v" and dst.importing
    dst.abort_migration(SLOT, accept_loss=True)
    assert dst.store.get(b"{a}0") is None and not dst.importing


def test_importer_refuses_batches_it_did_not_ask_for_and_ignores_duplicates() -> None:
    dst, rt = node("n1")
    batch = MigrateKeys(batch=5, slot=SLOT, keys=(b"{a}0",), values=(b"old",))
    dst.on_message("n2", batch)
    (ack,) = sent(rt, MigrateAck)
    assert ack.stored == 0 and "not importing" in ack.error
    dst.begin_import(SLOT, "n2")
    dst.on_message("n2", batch)
    assert sent(rt, MigrateAck)[0].stored == 1
    dst.on_message("n2", Asking(request_id=1, op=Put(key=b"{a}0", value=b"new")))
    dst.on_message("n2", batch)  # a late duplicate must not bring "old" back
    assert dst.store.get(b"{a}0") == b"new"
    # a batch whose keys are not in the slot is malformed
    dst.on_message("n2", MigrateKeys(batch=6, slot=SLOT, keys=(b"zzz",), values=(b"x",)))
    assert "malformed" in next(a for a in sent(rt, MigrateAck) if a.batch == 6).error


def test_an_asked_write_duplicated_by_the_network_is_not_applied_twice() -> None:
    dst, rt = node("n1")
    dst.begin_import(SLOT, "n2")
    first = Asking(request_id=1, op=Put(key=b"{a}0", value=b"first"))
    dst.on_message("n2", first)
    dst.on_message("n2", Asking(request_id=2, op=Put(key=b"{a}0", value=b"second")))
    delete = Asking(request_id=3, op=Delete(key=b"{a}1"))
    dst.on_message("n2", Asking(request_id=4, op=Put(key=b"{a}1", value=b"x")))
    dst.on_message("n2", delete)
    rt.take_sent()
    dst.on_message("n2", first)  # late: applied again, "second" would be lost
    dst.on_message("n2", delete)  # applied again: not_found
    assert dst.store.get(b"{a}0") == b"second" and dst.store.get(b"{a}1") is None
    assert [(m.request_id, m.reply) for _, m in rt.take_sent()] == [(1, Reply()), (3, Reply())]
    assert dst.stats.forward_duplicates == 2
    dst.on_message("n2", Asking(request_id=5, op=Get(key=b"{a}0")))  # a read is read again
    dst.on_message("n2", Asking(request_id=5, op=Get(key=b"{a}0")))
    assert [m.reply.value for _, m in rt.take_sent()] == [b"second", b"second"]


def test_a_forward_duplicated_while_the_importer_is_asked_is_asked_once() -> None:
    src, rt = node("n2")
    src.begin_migrate(SLOT, "n1")
    put = Forward(request_id=40, op=Put(key=b"{a}new", value=b"v"))  # a key n2 does not hold
    src.on_message("n1", put)
    ((to, ask),) = rt.take_sent()
    assert to == "n1" and type(ask) is Asking
    src.on_message("n1", put)  # the duplicate, while the importer's answer is on its way
    assert rt.take_sent() == [], "asked once: a second Asking would apply the Put twice"
    src.on_message("n1", ForwardReply(request_id=ask.request_id, reply=Reply()))
    # both copies are answered, with the importer's one answer
    assert rt.take_sent() == [("n1", ForwardReply(request_id=40, reply=Reply()))] * 2
    src.on_message("n1", put)  # and later ones from memory
    assert rt.take_sent() == [("n1", ForwardReply(request_id=40, reply=Reply()))]
    assert src.stats.forward_duplicates == 2 and not src.router.awaiting


def test_asking_a_node_that_is_not_importing_gets_wrong_node() -> None:
    dst, rt = node("n1")
    dst.on_message("n2", Asking(request_id=9, op=Get(key=b"{a}0")))
    ((_, reply),) = rt.take_sent()[-1:]
    assert reply.reply.error == "wrong_node"


def test_admin_operations_check_ownership() -> None:
    n1, _ = node("n1")
    with pytest.raises(errors.Conflict):
        n1.begin_migrate(SLOT, "n2")  # n1 does not own it
    with pytest.raises(errors.Conflict):
        n1.begin_import(0, "n2")  # n1 owns slot 0 already
    with pytest.raises(errors.BadRequest):
        n1.begin_import(16384, "n2")


def test_finish_import_claims_at_a_new_epoch_and_the_source_stops_migrating() -> None:
    src, src_rt = node("n2")
    dst, dst_rt = node("n1")
    src.begin_migrate(SLOT, "n1")
    dst.begin_import(SLOT, "n2")
    done: list[tuple[int, str]] = []
    src.migrate_keys(SLOT, 10, lambda n, e: done.append((n, e)))  # nothing to move: the end batch
    for m in sent(src_rt, MigrateKeys):
        dst.on_message("n2", m)
    for m in sent(dst_rt, MigrateAck):
        src.on_message("n1", m)
    assert done == [(0, "")]
    epoch = dst.finish_import([SLOT])
    assert epoch == 2 and dst.slot_map.owner(SLOT) == "n1" and not dst.importing
    alive = dst.membership.me.to_alive()
    from kvcore.messages import Gossip

    src.on_message("n1", Gossip(updates=(alive,)))
    assert src.slot_map.owner(SLOT) == "n1" and not src.migrating


def test_a_durable_node_restarts_with_its_store_marks_and_slot_map() -> None:
    disk = MemoryStorage()
    n2, _ = node("n2", durable=True, storage=disk)
    n2.on_client_request(Put(key=b"{a}0", value=b"kept"), lambda r: None)
    n2.begin_migrate(SLOT, "n1")
    from kvcore.messages import Alive, Gossip

    # n1 took slot 100 at epoch 3 (heard by gossip)
    n2.on_message("n1", Gossip(updates=(Alive(node="n1", incarnation=4, addr="127.0.0.1:7001",
                                              peer_addr="127.0.0.1:17001", slots="0-8191,10000", epoch=3),)))
    assert n2.slot_map.owner(10000) == "n1"
    again, _ = node("n2", durable=True, storage=disk)  # crash and restart on the same disk
    assert again.store.get(b"{a}0") == b"kept"
    assert again.migrating == {SLOT: "n1"}
    assert again.slot_map.owner(10000) == "n1" and again.slot_map.epoch(10000) == 3
    assert again.membership.me.incarnation > n2.membership.me.incarnation


def test_a_standalone_node_that_meets_a_cluster_gives_up_its_slots_and_joins() -> None:
    rt = FakeRuntime("new", seed=2)
    n = Node(rt, None, None, addr="127.0.0.1:7009", peer_addr="127.0.0.1:17009")
    n.start()
    assert n.slot_map.slot_counts() == {"new": 16384}
    n.meet(["@127.0.0.1:17001"])
    assert n.slot_map.slot_counts() == {} and n.membership.me.slots == ""
    assert not n.membership.joined
    rt.advance(0.01)
    from kvcore.messages import PushPull

    assert any(d == "@127.0.0.1:17001" and isinstance(m, PushPull) and m.join for d, m in rt.sent)


def test_only_an_empty_node_may_meet() -> None:
    n, _ = node("n1")
    n.on_client_request(Put(key=b"k", value=b"v"), lambda r: None)
    with pytest.raises(errors.Conflict, match="holds 1 keys"):
        n.meet(["@127.0.0.1:17002"])
    with pytest.raises(errors.BadRequest):
        node("n2")[0].meet([])


def test_assign_slots_replaces_the_claim_at_a_higher_epoch_only() -> None:
    rt = FakeRuntime("a", seed=3)
    n = Node(rt, None, None, addr="127.0.0.1:7001", peer_addr="127.0.0.1:17001")
    n.assign_slots("0-5460", 2)
    assert n.slot_map.slot_counts() == {"a": 5461} and n.membership.me.epoch == 2
    with pytest.raises(errors.Conflict):
        n.assign_slots("0-100", 2)


def test_a_batch_fits_in_one_frame_whatever_the_key_count() -> None:
    src, rt = node("n2")
    big = b"x" * (900 * 1024)
    for i in range(4):
        src.on_client_request(Put(key=b"{a}%d" % i, value=big), lambda r: None)
    src.begin_migrate(SLOT, "n1")
    src.migrate_keys(SLOT, 100, lambda n, e: None)
    (batch,) = sent(rt, MigrateKeys)
    size = sum(len(k) + len(v) for k, v in zip(batch.keys, batch.values, strict=True))
    assert len(batch.keys) == 2 and size <= src.config.max_frame_bytes // 2


def test_a_forced_abort_unfreezes_a_batch_whose_target_is_gone() -> None:
    src, _rt = node("n2")
    src.on_client_request(Put(key=b"{a}0", value=b"v"), lambda r: None)
    src.begin_migrate(SLOT, "n1")
    src.migrate_keys(SLOT, 5, lambda n, e: None)
    with pytest.raises(errors.Conflict):
        src.abort_migration(SLOT)
    src.abort_migration(SLOT, force=True)
    got: list[Reply] = []
    src.on_client_request(Get(key=b"{a}0"), got.append)
    assert got[0].value == b"v" and not src.migrating


def test_finish_import_respects_a_minimum_epoch() -> None:
    dst, _ = node("n1")
    dst.begin_import(SLOT, "n2")
    dst.on_message("n2", MigrateKeys(batch=1, slot=SLOT, keys=(), values=()))  # n2's end batch
    assert dst.finish_import([SLOT], min_epoch=9) == 9


def test_a_slot_with_no_key_left_is_reported_empty_only_once_the_target_acknowledges_the_end_batch() -> None:
    src, rt = node("n2")
    src.begin_migrate(SLOT, "n1")
    done: list[tuple[int, str]] = []
    src.migrate_keys(SLOT, 10, lambda n, e: done.append((n, e)))
    (end,) = sent(rt, MigrateKeys)
    assert end.slot == SLOT and end.keys == () and end.values == () and done == []
    src.on_message("n1", MigrateAck(batch=end.batch, stored=0, error=""))
    assert done == [(0, "")] and not src.migration.batches


def test_an_unacknowledged_end_batch_fails_the_round_but_freezes_nothing_and_holds_back_no_abort() -> None:
    src, rt = node("n2")
    src.on_client_request(Put(key=b"{a}0", value=b"v"), lambda r: None)
    src.begin_migrate(SLOT, "n1")
    src.migrate_keys(SLOT, 5, lambda n, e: None)
    (batch,) = sent(rt, MigrateKeys)
    src.on_message("n1", MigrateAck(batch=batch.batch, stored=1, error=""))
    done: list[tuple[int, str]] = []
    src.migrate_keys(SLOT, 5, lambda n, e: done.append((n, e)))
    for _ in range(3):
        rt.advance(src.config.forward_timeout)
    ends = sent(rt, MigrateKeys)
    assert len(ends) == 3 and len({m.batch for m in ends}) == 1 and ends[0].keys == ()
    assert done and done[0][0] == 0 and "holds no key of slot" in done[0][1] and "after 3 tries" in done[0][1]
    assert not src.migration.batches and not src.migration.in_flight
    # a refused end batch says why, too
    src.migrate_keys(SLOT, 5, lambda n, e: done.append((n, e)))
    (end,) = sent(rt, MigrateKeys)
    src.on_message("n1", MigrateAck(batch=end.batch, stored=0, error="node n1 is not importing"))
    assert "was refused: node n1 is not importing" in done[1][1]
    # an end batch in flight does not hold back an abort (its keys moved: that needs accept_loss)
    src.migrate_keys(SLOT, 5, lambda n, e: None)
    assert src.migration.batches
    src.abort_migration(SLOT, accept_loss=True)
    assert not src.migrating and not src.migration.batches


def test_the_target_forgets_an_end_batch_when_keys_come_after_it_or_the_import_ends() -> None:
    dst, _ = node("n1")
    dst.begin_import(SLOT, "n2")
    end = MigrateKeys(batch=1, slot=SLOT, keys=(), values=())
    dst.on_message("n3", end)  # not the source it imports from: refused, and it says nothing
    assert dst.migration.drained == {}
    dst.on_message("n2", end)
    assert dst.migration.drained == {SLOT: "n2"}
    dst.on_message("n2", MigrateKeys(batch=2, slot=SLOT, keys=(b"{a}0",), values=(b"v",)))
    assert dst.migration.drained == {}, "keys still came: the source was not empty"
    dst.on_message("n2", MigrateKeys(batch=3, slot=SLOT, keys=(), values=()))
    assert dst.migration.drained == {SLOT: "n2"}
    dst.abort_migration(SLOT, accept_loss=True)
    assert dst.migration.drained == {}


def test_a_durable_importer_restarted_after_the_end_batch_may_still_finish() -> None:
    disk = MemoryStorage()
    src, src_rt = node("n2")
    dst, dst_rt = node("n1", durable=True, storage=disk)
    src.on_client_request(Put(key=b"{a}0", value=b"v"), lambda r: None)
    src.begin_migrate(SLOT, "n1")
    dst.begin_import(SLOT, "n2")
    done: list[tuple[int, str]] = []
    for _ in range(2):  # one batch of the key, then the end batch
        src.migrate_keys(SLOT, 10, lambda n, e: done.append((n, e)))
        for m in sent(src_rt, MigrateKeys):
            dst.on_message("n2", m)
        for m in sent(dst_rt, MigrateAck):
            src.on_message("n1", m)
    assert done == [(1, ""), (0, "")]
    again, _ = node("n1", durable=True, storage=disk)  # crash and restart on the same disk
    assert again.importing == {SLOT: "n2"} and again.store.get(b"{a}0") == b"v"
    epoch = again.finish_import([SLOT])  # refused (Conflict) when the receipt was in memory only
    assert again.slot_map.owner(SLOT) == "n1" and epoch == 2
    assert not again.importing and again.migration.drained == {}
    assert disk.get(f"drained:{SLOT}") is None and disk.items("mark:") == []
    assert node("n1", durable=True, storage=disk)[0].migration.drained == {}


def test_a_durable_importer_forgets_an_end_batch_durably_when_keys_follow_or_it_aborts() -> None:
    disk = MemoryStorage()
    dst, _ = node("n1", durable=True, storage=disk)
    dst.begin_import(SLOT, "n2")
    dst.on_message("n2", MigrateKeys(batch=1, slot=SLOT, keys=(), values=()))
    assert disk.get(f"drained:{SLOT}") == b"n2"
    dst.on_message("n2", MigrateKeys(batch=2, slot=SLOT, keys=(b"{a}0",), values=(b"v",)))
    assert disk.get(f"drained:{SLOT}") is None, "keys came after it: the end batch is old"
    assert node("n1", durable=True, storage=disk)[0].migration.drained == {}
    dst.on_message("n2", MigrateKeys(batch=3, slot=SLOT, keys=(), values=()))
    dst.abort_migration(SLOT, accept_loss=True)
    assert disk.get(f"drained:{SLOT}") is None
    # a receipt left without its import mark (another import since) is never trusted
    disk.put(f"mark:importing:{SLOT}", b"n3")
    disk.put(f"drained:{SLOT}", b"n2")
    again, _ = node("n1", durable=True, storage=disk)
    assert again.importing == {SLOT: "n3"} and again.migration.drained == {}
    assert disk.get(f"drained:{SLOT}") is None
    with pytest.raises(errors.Conflict, match="has not told it"):
        again.finish_import([SLOT])


def test_release_unassigns_only_older_claims_of_one_node() -> None:
    m = SlotMap.from_assignment({"a": [(0, 99)], "b": [(100, 16383)]}, 1)
    m.claim([(0, 9)], "a", 3)
    assert m.release("a", 3) == 90
    assert m.owner(5) == "a" and m.owner(50) is None and m.owner(200) == "b"
    assert m.claim([(50, 50)], "b", 2) == 1  # a later claim above the old epoch takes it


def test_batches_of_large_values_each_fit_a_frame_and_move_every_key() -> None:
    # The node sizes a batch by bytes (what the realnet API's own re-sizing used to do): with a
    # frame of 2 MiB + 4 KiB and values up to 1 MiB, a count of 1,000 still gives batches whose
    # encoded frame is within the limit, and acknowledging them moves every key.
    from realnet.wire import frame

    cfg = NodeConfig(max_value_bytes=1024 * 1024, max_frame_bytes=2 * 1024 * 1024 + 4096)
    src = Node(FakeRuntime("n2", seed=1), cfg, CLUSTER)
    rt = src.rt
    assert isinstance(rt, FakeRuntime)
    src.start()
    sizes = [1024 * 1024, 700 * 1024, 10, 1024 * 1024 - 100, 300 * 1024, 5, 900 * 1024, 1024 * 1024]
    keys = {b"{a}%d" % i: bytes([i]) * n for i, n in enumerate(sizes)}
    for k, v in keys.items():
        src.on_client_request(Put(key=k, value=v), lambda r: None)
    src.begin_migrate(SLOT, "n1")
    moved: list[int] = []
    for _ in range(len(keys) + 1):
        rt.take_sent()
        done: list[tuple[int, str]] = []
        src.migrate_keys(SLOT, 1000, lambda n, e, done=done: done.append((n, e)))
        (batch,) = sent(rt, MigrateKeys)
        assert len(frame(batch)) <= cfg.max_frame_bytes, len(frame(batch))
        src.on_message("n1", MigrateAck(batch=batch.batch, stored=len(batch.keys), error=""))
        if not batch.keys:  # the end batch: no key left
            assert done == [(0, "")]
            break
        moved.append(done[0][0])
    assert sum(moved) == len(keys) and src.store.count() == 0
    assert max(moved) >= 2, "small values share a batch"


def test_the_owner_answers_a_forward_from_a_node_its_membership_does_not_name_by_that_id() -> None:
    """The reply to a Forward is addressed to the sender's id whether or not the owner's
    membership knows it (a node that joined a moment ago): delivering it is the Runtime's
    part (the sim's network delivers by id; realnet sends it back on the sender's own
    connection when it has no address for it)."""
    owner, rt = node("n2")
    assert owner.membership.state_of("newcomer") is None
    owner.on_message("newcomer", Forward(request_id=5, op=Put(key=b"{a}0", value=b"v")))
    owner.on_message("newcomer", Forward(request_id=6, op=Get(key=b"{a}0")))
    replies = [(dst, m) for dst, m in rt.take_sent() if isinstance(m, ForwardReply)]
    assert replies == [("newcomer", ForwardReply(request_id=5, reply=Reply())),
                       ("newcomer", ForwardReply(request_id=6, reply=Reply(value=b"v")))]
