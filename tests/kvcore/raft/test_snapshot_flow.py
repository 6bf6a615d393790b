"""Flow control of InstallSnapshot (Raft §7, Figure 13) in etcd-io/raft's shape: a follower in
the SNAPSHOT state has one transfer in flight (``PendingSnapshot``), of one chunk at a time;
while it lasts the leader sends that follower no appends and no second snapshot; stale or
duplicate answers neither restart nor duplicate it; it ends on the follower's report (installed:
PROBE then REPLICATE from the snapshot's index) or, without progress, after a bounded number of
resends (PROBE, and a new attempt once the follower answers again).

The audit that found the bug: a follower stopped (SIGSTOP) while the leader's log compacted
answered, once resumed, the backlog of heartbeats queued during the pause; every answer made
the leader send a snapshot chunk, every chunk's answer the next one, so each heartbeat started
a stream of chunks to the end of the image (1426 chunks of 1 MiB for a 13 MB snapshot, the
leader at 7 GB).
"""

from __future__ import annotations

from collections.abc import Callable

from kvcore.raft import LEADER, MemoryRaftStorage
from kvcore.raft.messages import (
    RaftAppend,
    RaftAppendResp,
    RaftHeartbeatResp,
    RaftMessage,
    RaftSnapshot,
    RaftSnapshotResp,
)
from kvcore.raft.progress import PROBE, REPLICATE, SNAPSHOT

from .harness import Network, SafetyChecker

IMAGE = bytes(range(100))  # ten chunks of 10 bytes
CHUNK = 10
CHUNKS = 10


def behind_a_compaction(image: bytes = IMAGE, voters: tuple[str, ...] = ("1", "2", "3"),
                        stopped: tuple[str, ...] = ("3",), entries: int = 20, **cfg: object) -> Network:
    """Voters 1, 2, 3 (``voters``); 3 (``stopped``) is stopped while 1 leads, appends 20 entries
    (a window of two appends in flight to 3, unanswered) and compacts its log: 3 now needs the
    snapshot."""
    net = Network(list(voters), **{"max_snapshot_chunk": CHUNK, "max_inflight": 2, **cfg})
    net.elect("1")
    for node in stopped:
        net.pause(node)
    for i in range(entries):
        net.propose("1", f"v{i}".encode())
        net.stabilize()
    r = net.raft("1")
    r.compact(r.log.applied, image)
    net.stabilize()
    return net


def resumed_with_backlog(heartbeats: int = 30, **cfg: object) -> Network:
    """:func:`behind_a_compaction`, then ``heartbeats`` heartbeat rounds while 3 is stopped;
    3 resumes and answers its whole backlog in one Ready."""
    net = behind_a_compaction(**cfg)
    net.tick_all(heartbeats)
    assert sum(1 for m in net.inflight if m.dst == "3") >= heartbeats
    net.resume("3")
    return net


def to(rd_msgs: tuple[RaftMessage, ...] | list[RaftMessage], dst: str, kind: type) -> list[RaftMessage]:
    return [m for m in rd_msgs if m.dst == dst and isinstance(m, kind)]


def spy_deliveries(net: Network, keep: Callable[[RaftMessage], bool]) -> list[RaftMessage]:
    seen: list[RaftMessage] = []
    orig = net.deliver

    def spy(m: RaftMessage) -> None:
        if keep(m):
            seen.append(m)
        orig(m)

    net.deliver = spy  # type: ignore[method-assign]
    return seen


def test_a_stopped_follower_answering_a_backlog_of_heartbeats_gets_one_transfer() -> None:
    """The audit's scenario: 30 heartbeat answers (and the answers to the appends sent before
    the pause) reach the leader at once. Exactly one transfer starts, of exactly one image's
    worth of chunks, with never more than one chunk on the way."""
    net = resumed_with_backlog()
    chunks = spy_deliveries(net, lambda m: isinstance(m, RaftSnapshot))
    most_in_flight = 0
    for _ in range(1000):  # stabilize, one addressee at a time, watching what is in flight
        moved = False
        for i in list(net.nodes):
            moved |= net.process_ready(i) is not None
        most_in_flight = max(most_in_flight, sum(1 for m in net.inflight if isinstance(m, RaftSnapshot)))
        if net.inflight and net.deliver_all(net.inflight[0].dst):
            moved = True
        if not moved:
            break
    lead = net.raft("1")
    assert most_in_flight == 1
    assert lead.stats["snapshots_sent"] == 1
    assert lead.stats["snapshot_chunks_sent"] == CHUNKS == len(chunks)
    assert [c.offset for c in chunks] == list(range(0, len(IMAGE), CHUNK))  # type: ignore[attr-defined]
    assert net.raft("3").stats["snapshots_installed"] == 1


def test_the_transfer_completes_and_the_follower_catches_up() -> None:
    """Figure 13: once the last chunk is installed the follower acknowledges the snapshot's
    index; the leader goes from SNAPSHOT to REPLICATE at that index, releases the image, and
    the entries after it follow."""
    net = resumed_with_backlog()
    safety = SafetyChecker()
    net.stabilize()
    safety.check(net)
    lead = net.raft("1")
    pr = lead.prs["3"]
    snap_index = lead.log.snapshot.meta.index
    assert pr.state == REPLICATE and pr.match >= snap_index
    assert pr.snapshot is None and pr.pending_snapshot == 0  # the image is released
    assert net.nodes["3"].snapshot_data == IMAGE
    net.propose("1", b"after")
    net.stabilize()
    safety.check(net)
    assert net.nodes["3"].applied[-1].data == b"after"
    assert net.raft("3").log.committed == lead.log.committed
    assert lead.stats["snapshot_chunks_sent"] == CHUNKS


def test_stale_and_duplicate_answers_neither_restart_nor_duplicate_the_transfer() -> None:
    """While one chunk is in flight: heartbeat answers, a rejection and an acknowledgement of
    appends sent before the pause, an answer for another snapshot, one from an older term, and
    a second copy of the chunk's own answer move nothing; only the first answer for the chunk
    sends the next one. (etcd: a Progress in StateSnapshot is paused; MsgHeartbeatResp and
    stale MsgAppResp do not send.)"""
    net = behind_a_compaction()
    lead = net.raft("1")
    net.resume("3")
    net.deliver_all("1")  # 3's answers to the two appends sent before the pause
    rd = net.process_ready("1")
    net.tick("1")  # a heartbeat, so that 3 answers one
    assert rd is not None and len(to(rd.messages, "3", RaftSnapshot)) == 1
    pr = lead.prs["3"]
    assert pr.state == SNAPSHOT and pr.chunk_inflight and lead.stats["snapshots_sent"] == 1
    index, term = pr.pending_snapshot, lead.term
    stale: list[RaftMessage] = [
        *(RaftHeartbeatResp(term=term, src="3", dst="1") for _ in range(5)),
        RaftAppendResp(term=term, src="3", dst="1", index=5, reject=True, hint_index=4, hint_term=1),
        RaftAppendResp(term=term, src="3", dst="1", index=3),  # ack of an append sent long ago
        RaftSnapshotResp(term=term, src="3", dst="1", index=index - 1, received=CHUNK),
        RaftSnapshotResp(term=term - 1, src="3", dst="1", index=index, received=CHUNK),
        RaftSnapshotResp(term=term, src="3", dst="1", index=index, received=0),
    ]
    for m in stale:
        lead.step(m)
    net.propose("1", b"w")  # new entries are not sent to 3 either: its log cannot take them yet
    rd = net.process_ready("1")
    assert rd is not None and len(to(rd.messages, "2", RaftAppend)) == 1
    assert to(rd.messages, "3", RaftSnapshot) == [] and to(rd.messages, "3", RaftAppend) == []
    assert pr.state == SNAPSHOT and pr.snapshot_offset == 0 and lead.stats["snapshots_sent"] == 1
    answer = RaftSnapshotResp(term=term, src="3", dst="1", index=index, received=CHUNK)
    lead.step(answer)
    lead.step(answer)  # the same answer again (a chunk sent twice is answered twice)
    rd = net.process_ready("1")
    assert rd is not None
    sent = to(rd.messages, "3", RaftSnapshot)
    assert [m.offset for m in sent] == [CHUNK]  # type: ignore[attr-defined]
    assert lead.stats["snapshot_chunks_sent"] == 2
    net.stabilize()
    assert net.nodes["3"].applied[-1].data == b"w"  # sent once the snapshot is installed


def test_a_lost_chunk_is_sent_again_after_the_resend_timeout_and_not_before() -> None:
    """A chunk dropped on the way (a full transport drops it) is sent again once it went
    unanswered for ``snapshot_resend_tick`` ticks, from what the follower holds; heartbeats in
    between do not resend it."""
    net = behind_a_compaction(snapshot_resend_tick=5)
    net.resume("3")
    net.deliver_all("1")
    net.process_ready("1")
    lost = [m for m in net.inflight if isinstance(m, RaftSnapshot)]
    assert len(lost) == 1
    net.inflight = [m for m in net.inflight if m not in lost]
    lead = net.raft("1")
    net.tick_all(4)  # four heartbeat rounds, each answered by 3
    assert lead.stats["snapshot_chunks_sent"] == 1 and lead.prs["3"].state == SNAPSHOT
    net.tick_all(1)
    assert lead.stats["snapshot_chunks_resent"] == 1
    net.stabilize()
    assert net.nodes["3"].snapshot_data == IMAGE
    assert lead.stats["snapshot_chunks_sent"] == CHUNKS + 1 and lead.stats["snapshots_sent"] == 1


def test_a_transfer_without_progress_is_abandoned_then_tried_again() -> None:
    """Every chunk to 3 is dropped (heartbeats pass): after ``snapshot_resends`` resends of
    the first chunk, each ``snapshot_resend_tick`` ticks apart, the leader abandons the transfer
    (PROBE, the image released) and sends nothing more until 3 answers a heartbeat; that
    answer starts a new transfer, which completes once chunks pass again."""
    net = behind_a_compaction(snapshot_resend_tick=3, snapshot_resends=2)
    drop_chunks = True
    send = net.send

    def lossy(m: RaftMessage) -> None:
        if not (drop_chunks and isinstance(m, RaftSnapshot)):
            send(m)

    net.send = lossy  # type: ignore[method-assign]
    net.resume("3")
    net.stabilize()
    lead = net.raft("1")
    pr = lead.prs["3"]
    assert pr.state == SNAPSHOT
    for _ in range(3 * 3 - 1):
        net.tick("1")
        net.stabilize()
    assert pr.state == SNAPSHOT and lead.stats["snapshot_chunks_sent"] == 3  # first + 2 resends
    net.tick("1")  # the leader's heartbeat goes out with the abandonment
    assert pr.state == PROBE and pr.snapshot is None and lead.stats["snapshots_abandoned"] == 1
    assert pr.next == pr.match + 1 and pr.probe_sent  # waits for an answer before trying again
    net.process_ready("1")
    net.deliver_all("3")  # the heartbeat
    net.process_ready("3")
    drop_chunks = False
    net.stabilize()
    assert lead.stats["snapshots_sent"] == 2
    assert net.nodes["3"].snapshot_data == IMAGE
    assert pr.state == REPLICATE and lead.stats["snapshot_chunks_sent"] == 3 + CHUNKS


def test_a_stopped_follower_costs_a_bounded_number_of_chunks() -> None:
    """A follower that stops in the middle of a transfer and stays stopped gets the chunk in
    flight, ``snapshot_resends`` copies of it, and nothing more, however long it stays away."""
    net = behind_a_compaction(snapshot_resend_tick=3, snapshot_resends=2)
    net.resume("3")
    for _ in range(4):  # two chunks delivered and answered
        net.deliver_all()
        for i in ("1", "3"):
            net.process_ready(i)
    net.pause("3")
    net.stabilize()  # the answer to the second chunk sends the third, which 3 will not read
    lead = net.raft("1")
    before = lead.stats["snapshot_chunks_sent"]
    assert before == 3
    net.tick_all(200)
    assert lead.prs["3"].state == PROBE and lead.stats["snapshots_abandoned"] == 1
    assert lead.stats["snapshot_chunks_sent"] == before + 2
    net.resume("3")
    net.stabilize()
    net.tick_all(2)
    assert net.nodes["3"].snapshot_data == IMAGE and lead.prs["3"].state == REPLICATE


def test_a_follower_goes_on_from_what_it_holds_when_a_first_chunk_comes_again() -> None:
    """One index and term is one image: a second copy of the first chunk (a resend, or a new
    attempt after the leader gave up) does not make the follower drop what it holds; it answers
    how much it has and the leader goes on from there."""
    net = behind_a_compaction()
    net.resume("3")
    net.deliver_all("1")
    net.process_ready("1")
    first = next(m for m in net.inflight if isinstance(m, RaftSnapshot))
    net.stabilize()
    r3 = net.raft("3")
    assert r3.snap_buf is None and net.nodes["3"].snapshot_data == IMAGE
    # the same snapshot again, chunk by chunk: a duplicate first chunk after the third
    meta = first.meta  # type: ignore[attr-defined]
    fresh = Network(["1", "2", "3"])
    r = fresh.raft("3")
    r.become_follower(1, "1")
    for off in (0, 10, 20, 0):
        r.step(RaftSnapshot(term=1, src="1", dst="3", meta=meta, offset=off, data=IMAGE[off:off + CHUNK],
                            done=False))
    answers = [m.received for m in r.ready().messages if isinstance(m, RaftSnapshotResp)]  # type: ignore[attr-defined]
    assert answers == [10, 20, 30, 30]


def test_a_follower_that_restarted_mid_transfer_is_sent_the_snapshot_from_the_beginning() -> None:
    """A follower that lost the chunks it held (it restarted) answers the next chunk with
    ``received`` 0; the leader starts over from offset 0 at once instead of waiting for the
    transfer to time out."""
    net = behind_a_compaction()
    net.resume("3")
    for _ in range(4):
        net.deliver_all()
        for i in ("1", "3"):
            net.process_ready(i)
    lead = net.raft("1")
    assert lead.prs["3"].snapshot_offset > 0
    net.crash("3")
    net.restart("3")
    net.tick_all(lead.cfg.election_tick)  # the chunk lost in the crash is resent
    net.stabilize()
    assert net.nodes["3"].snapshot_data == IMAGE
    assert lead.stats["snapshots_sent"] == 1 and lead.stats["snapshots_abandoned"] == 0


def test_a_transfer_keeps_its_image_when_the_leader_compacts_again_and_shares_it() -> None:
    """The image a transfer began with is held until it ends, shared (the same object) by every
    follower sent that snapshot: a compaction meanwhile neither restarts the transfer nor copies
    the image. The follower then gets the newer snapshot, and no image stays held."""
    net = behind_a_compaction(voters=("1", "2", "3", "4", "5"), stopped=("4", "5"), entries=10)
    lead = net.raft("1")
    first = lead.log.snapshot
    net.resume("4")
    net.resume("5")
    net.deliver_all("1")
    net.process_ready("1")
    assert lead.prs["4"].snapshot is first and lead.prs["5"].snapshot is first
    net.propose("1", b"more")
    for _ in range(3):  # some chunks of the first image move
        net.deliver_all()
        for i in list(net.nodes):
            net.process_ready(i)
    lead.compact(lead.log.applied, IMAGE[::-1])
    assert lead.prs["4"].snapshot is first and lead.prs["4"].pending_snapshot == first.meta.index
    net.stabilize()
    net.tick_all(2)
    assert lead.role == LEADER
    for n in ("4", "5"):
        assert net.raft(n).log.committed == lead.log.committed
        assert lead.prs[n].snapshot is None and lead.prs[n].state == REPLICATE
    assert lead.stats["snapshots_sent"] == 4  # each follower: the first image, then the second
    assert net.nodes["4"].snapshot_data == IMAGE[::-1]


def test_a_new_server_added_as_a_learner_gets_one_transfer() -> None:
    """The audit's second scenario in miniature: a learner added to a compacted group stops at
    once, the leader sends it heartbeats meanwhile; resumed, it gets one transfer."""
    net = Network(["1", "2", "3"], max_snapshot_chunk=CHUNK)
    net.elect("1")
    for i in range(10):
        net.propose("1", f"v{i}".encode())
    net.stabilize()
    lead = net.raft("1")
    lead.compact(lead.log.applied, IMAGE)
    net.stabilize()
    net.add_node("4", MemoryRaftStorage([]))
    lead.propose_conf_change("add-learner", "4")
    net.stabilize()  # the leader probes 4 and starts the transfer; 4 answers the first chunk
    net.pause("4")
    net.tick_all(30)
    net.resume("4")
    net.stabilize()
    net.tick_all(2)
    assert net.raft("4").log.committed == lead.log.committed
    assert lead.stats["snapshots_sent"] == 1 and lead.stats["snapshot_chunks_sent"] <= CHUNKS + lead.cfg.snapshot_resends
