"""The leader's rules: replication, commitment, heartbeats, CheckQuorum, ReadIndex, transfer,
configuration changes.

Theory of operation
-------------------
Functions of a :class:`~kvcore.raft.raft.Raft` in the leader role (the core's state lives in the
Raft object; this module owns the rules).

* Replication (§5.3): ``send_append`` sends the follower the entries from ``next`` after the
  entry at ``next - 1`` (the consistency check); compacted entries turn into a snapshot sent in
  chunks (Figure 13), one transfer per follower at a time with one chunk in flight (etcd-io/raft's
  ``PendingSnapshot``; see :mod:`kvcore.raft.progress`): only the follower's answer to that chunk
  sends the next one, a chunk unanswered for ``snapshot_resend_tick`` ticks is sent again, and a
  transfer that makes no progress is abandoned and retried later. Heartbeat answers, rejections
  and acknowledgements of appends sent before never start, restart or duplicate a transfer: a
  follower that was stopped and answers a backlog of them all at once gets one. A rejection
  moves ``next`` back using the follower's hint (term of the conflicting entry and its first
  index; the leader skips to its own last entry of that term when it has one), so a follower
  behind by a whole term costs one round trip, not one per entry.
* Commitment (§5.4.2, Figure 8): the leader commits index N when a majority of voters have
  stored it **and** its entry is of the current term; earlier entries commit indirectly.
  A majority is counted over ``matchIndex``; the leader's own match is its *stable* index.
* CheckQuorum (thesis §6.2): every election timeout the leader steps down unless a majority
  was heard from (``recent_active``).
* ReadIndex (thesis §6.4): a read waits until the leader has committed an entry of its term,
  records the commit index, and is released when a majority answered a heartbeat carrying its
  context. Lease mode (§6.4.1) skips the round trip while a majority acked a heartbeat sent less
  than ``election_tick - lease_drift_ticks`` ticks ago.
* Transfer (thesis §3.10): stop taking proposals, bring the target up to date, send TimeoutNow;
  give up after an election timeout.
* Membership (thesis §4.1): one server at a time, a new configuration takes effect when it is
  appended; no second change while one is uncommitted; none before the leader has committed an
  entry of its term (the no-op-first fix, Ongaro, raft-dev 2015); a learner is promoted only
  once it holds the committed log (§4.2.1); a leader removed steps down once the change commits
  (§4.2.2).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from kvcore.raft.config import LEASE
from kvcore.raft.messages import (
    CONF,
    ConfChange,
    Entry,
    RaftAppend,
    RaftAppendResp,
    RaftHeartbeat,
    RaftHeartbeatResp,
    RaftMessage,
    RaftReadIndex,
    RaftReadIndexResp,
    RaftSnapshot,
    RaftSnapshotResp,
    RaftTimeoutNow,
)
from kvcore.raft.progress import PROBE, REPLICATE, SNAPSHOT, Progress, has_quorum, quorum_index

if TYPE_CHECKING:
    from kvcore.raft.raft import Raft


def sync_progress(r: Raft) -> None:
    """One Progress per member of the latest configuration (thesis §4.1: effective on append)."""
    conf = r.log.conf()
    members = set(conf.voters) | set(conf.learners)
    for n in list(r.prs):
        if n not in members and n != r.id:
            del r.prs[n]
    for n in sorted(members | {r.id}):
        if n not in r.prs:
            r.prs[n] = Progress(match=0, next=r.log.last_index() + 1, recent_active=True)
        r.prs[n].learner = n not in conf.voters


def peers(r: Raft) -> list[str]:
    return [n for n in r.prs if n != r.id]


# --- replication ---------------------------------------------------------------------------------


def send_append(r: Raft, to: str, send_empty: bool = True) -> bool:
    pr = r.prs[to]
    if pr.is_paused(r.cfg.max_inflight):
        return False
    prev = pr.next - 1
    prev_term = r.log.term(prev)
    if prev_term is None or prev < r.log.snapshot.meta.index:
        start_snapshot(r, to)
        return True
    entries = r.log.slice(pr.next, r.log.last_index() + 1, r.cfg.max_size_per_msg)
    if not entries and not send_empty:
        return False
    r.send(RaftAppend(term=r.term, src=r.id, dst=to, prev_index=prev, prev_term=prev_term,
                      entries=tuple(entries), commit=r.log.committed))
    pr.sent(entries[-1].index if entries else prev)
    return True


def start_snapshot(r: Raft, to: str) -> None:
    """The entries ``to`` needs were compacted: begin a transfer of the current snapshot (only
    from :func:`send_append`, which a transfer in progress pauses, so there is one at a time)."""
    pr = r.prs[to]
    snap = r.log.snapshot
    pr.become_snapshot(snap)
    r.stats["snapshots_sent"] += 1
    r.logf(f"sends snapshot {snap.meta.term}/{snap.meta.index} to {to} ({len(snap.data)} bytes)")
    send_snapshot_chunk(r, to)


def send_snapshot_chunk(r: Raft, to: str) -> None:
    """Figure 13 (InstallSnapshot) in chunks of at most ``max_snapshot_chunk`` bytes: the chunk
    from what the follower confirmed holding, of the image the transfer began with."""
    pr = r.prs[to]
    snap = pr.snapshot
    assert pr.state == SNAPSHOT and snap is not None
    pr.chunk_inflight = True
    pr.snapshot_elapsed = 0
    r.stats["snapshot_chunks_sent"] += 1
    off = min(pr.snapshot_offset, len(snap.data))
    chunk = snap.data[off:off + r.cfg.max_snapshot_chunk]
    r.send(RaftSnapshot(term=r.term, src=r.id, dst=to, meta=snap.meta, offset=off, data=chunk,
                        done=off + len(chunk) >= len(snap.data)))


def handle_snapshot_resp(r: Raft, to: str, pr: Progress, m: RaftSnapshotResp) -> None:
    """The follower holds ``m.received`` bytes of snapshot ``m.index``. Only the first answer
    showing progress while a chunk is in flight sends the next chunk; an answer for another
    snapshot, a duplicate (a chunk sent twice is answered twice) or one from an earlier attempt
    that says no more than we know is dropped. Were every answer to send a chunk, each duplicate
    would start a second stream of chunks running alongside the first, to the end of the image.
    One exception: ``received == 0`` (the follower holds nothing of this snapshot: it restarted)
    starts over from the beginning; an answer never says 0 once the first chunk arrived."""
    snap = pr.snapshot
    if pr.state != SNAPSHOT or snap is None or m.index != pr.pending_snapshot or not pr.chunk_inflight:
        return
    if m.received <= pr.snapshot_offset and not (m.received == 0 and pr.snapshot_offset > 0):
        return
    pr.snapshot_offset = min(m.received, len(snap.data))
    pr.chunk_inflight = False
    pr.snapshot_resends = 0
    send_snapshot_chunk(r, to)


def tick_snapshots(r: Raft) -> None:
    """A chunk unanswered for ``snapshot_resend_tick`` ticks (lost, its answer lost, dropped by a
    full transport, or the follower stopped) is sent again; after ``snapshot_resends`` resends
    without progress the transfer is abandoned: PROBE, and the next heartbeat the follower
    answers starts a new one (etcd: ReportSnapshot(SnapshotFailure))."""
    timeout = r.cfg.snapshot_resend_tick or r.cfg.election_tick
    for to, pr in r.prs.items():
        if pr.state != SNAPSHOT:
            continue
        pr.snapshot_elapsed += 1
        if pr.snapshot_elapsed < timeout:
            continue
        if pr.snapshot_resends >= r.cfg.snapshot_resends:
            r.stats["snapshots_abandoned"] += 1
            r.logf(f"abandons snapshot {pr.pending_snapshot} to {to}: no answer after "
                   f"{pr.snapshot_resends} resends; probes again")
            pr.snapshot_failure()
            continue
        pr.snapshot_resends += 1
        r.stats["snapshot_chunks_resent"] += 1
        send_snapshot_chunk(r, to)


def broadcast_append(r: Raft) -> None:
    for p in peers(r):
        send_append(r, p)


def broadcast_heartbeat(r: Raft, ctx: bytes = b"") -> None:
    if not ctx and r.read_queue:
        ctx = next(reversed(r.read_queue))
    for p in peers(r):
        pr = r.prs[p]
        # the commit sent is capped at what the follower is known to hold (etcd): a heartbeat
        # carries no entries, so the follower cannot check the log it would commit against
        r.send(RaftHeartbeat(term=r.term, src=r.id, dst=p, commit=min(pr.match, r.log.committed),
                             ctx=ctx, stamp=r.ticks))


def maybe_commit(r: Raft) -> bool:
    """§5.4.2: "Raft never commits log entries from previous terms by counting replicas. Only log
    entries from the leader's current term are committed by counting replicas"."""
    matches = {n: pr.match for n, pr in r.prs.items()}
    n = quorum_index(matches, r.log.conf().voters)
    if n <= r.log.committed or r.log.term(n) != r.term:
        return False
    r.log.commit_to(n)
    release_waiting_reads(r)
    broadcast_append(r)  # carries the new commit index
    conf = r.log.conf()
    if r.id not in conf.voters and r.log.conf_committed():
        # thesis §4.2.2: a leader removed from the configuration steps down once it committed
        r.logf("was removed from the configuration and steps down")
        r.become_follower(r.term, None)
    return True


def step_leader(r: Raft, m: RaftMessage) -> None:
    pr = r.prs.get(m.src)
    if isinstance(m, RaftReadIndex):
        if pr is not None:
            read_index(r, m.ctx, m.src)
        return
    if pr is None:
        return  # not a member (any more): nothing to track
    if isinstance(m, RaftAppendResp):
        pr.recent_active = True
        if m.reject:
            handle_reject(r, m.src, pr, m)
        else:
            handle_ack(r, m.src, pr, m.index)
    elif isinstance(m, RaftHeartbeatResp):
        pr.recent_active = True
        pr.acked_stamp = max(pr.acked_stamp, m.stamp)
        pr.probe_sent = False
        if pr.state == REPLICATE and len(pr.inflight) >= r.cfg.max_inflight:
            # the follower answers but a full window of appends went unanswered (lost while it
            # was down or cut off): free one slot so an append goes out, whose reply (a reject,
            # after a restart that lost them) moves the follower to PROBE; otherwise the window
            # stays full forever (etcd-io/raft: Inflights.FreeFirstOne on MsgHeartbeatResp)
            pr.inflight.pop(0)
        # A follower receiving a snapshot is paused (send_append sends nothing): a heartbeat
        # answer neither resends a chunk nor starts a second transfer; a stopped follower
        # answers a whole backlog of heartbeats at once (tick_snapshots resends lost chunks).
        if pr.match < r.log.last_index():
            send_append(r, m.src)
        if m.ctx:
            ack_read(r, m.ctx, m.src)
    elif isinstance(m, RaftSnapshotResp):
        pr.recent_active = True
        handle_snapshot_resp(r, m.src, pr, m)


def handle_reject(r: Raft, to: str, pr: Progress, m: RaftAppendResp) -> None:
    if pr.state == REPLICATE:
        if m.index <= pr.match:
            return  # stale
        pr.become_probe()
    elif pr.state == PROBE:
        if m.index != pr.next - 1:
            return  # an answer to an older probe
        nxt = m.hint_index
        if m.hint_term:
            own = r.log.last_index_of_term(m.hint_term)
            if own is not None:
                nxt = own + 1
        nxt = max(min(nxt, m.index), pr.match + 1)
        if nxt == pr.next:
            # The follower lacks entries it acknowledged (below match: a disk that lost synced
            # writes, outside Raft's failure model). Probing again at once would ping-pong at
            # network speed, and each heartbeat reply would add another such loop; probe once
            # per heartbeat instead, and count it so that an operator can see it.
            r.stats["append_rejected_below_match"] += 1
            return
        pr.next = nxt
        pr.probe_sent = False
    else:
        return
    r.stats["append_rejected"] += 1
    r.logf(f"rejected by {to} at {m.index}: next {pr.next}")
    send_append(r, to)


def handle_ack(r: Raft, to: str, pr: Progress, index: int) -> None:
    if index > r.log.last_index():
        return  # nonsense from a confused peer: we never sent that
    was_paused = pr.is_paused(r.cfg.max_inflight)
    if pr.maybe_update(index):
        if pr.state == PROBE:
            pr.become_replicate()
        elif pr.state == SNAPSHOT and (pr.match >= pr.pending_snapshot or pr.match + 1 >= r.log.first_index()):
            # installed, or the follower turns out to hold enough to go on from the log
            # (etcd: Match+1 >= firstIndex): the transfer ends, its image is released
            pr.become_probe()
            pr.become_replicate()
        if not maybe_commit(r) and r.role == "leader":
            if was_paused:  # it missed the broadcasts while paused: bring it the commit index
                send_append(r, to)
            while send_append(r, to, send_empty=False):
                pass
    elif pr.state == SNAPSHOT and index >= pr.pending_snapshot:
        pr.become_probe()
        send_append(r, to)
    if r.role == "leader" and to == r.lead_transferee and pr.match == r.log.last_index():
        send_timeout_now(r, to)


# --- ticks, CheckQuorum --------------------------------------------------------------------------


def tick_leader(r: Raft) -> None:
    r.heartbeat_elapsed += 1
    r.election_elapsed += 1
    if r.election_elapsed >= r.cfg.election_tick:
        r.election_elapsed = 0
        if r.cfg.check_quorum:
            active = [n for n, pr in r.prs.items() if pr.recent_active or n == r.id]
            if not has_quorum(active, r.log.conf().voters):
                r.stats["check_quorum_stepdowns"] += 1
                r.logf("stepped down to follower since quorum is not active")  # thesis §6.2
                r.become_follower(r.term, None)
                return
            for n, pr in r.prs.items():
                pr.recent_active = n == r.id
        if r.lead_transferee is not None:
            r.logf(f"aborts the transfer to {r.lead_transferee}: no election in an election timeout")
            r.lead_transferee = None
    tick_snapshots(r)
    if r.heartbeat_elapsed >= r.cfg.heartbeat_tick:
        r.heartbeat_elapsed = 0
        broadcast_heartbeat(r)


# --- proposals -----------------------------------------------------------------------------------


def propose_entries(r: Raft, entries: Sequence[Entry]) -> tuple[int, int]:
    from kvcore.raft.raft import NotLeader, ProposalRefused

    if r.role != "leader":
        raise NotLeader(r.id, r.lead)
    if r.lead_transferee is not None:
        # thesis §3.10: "the prior leader stops accepting new client requests" during a transfer
        raise ProposalRefused(f"leadership is being transferred to {r.lead_transferee}")
    last = r.log.last_index()
    r.log.append([Entry(term=r.term, index=last + 1 + n, kind=e.kind, data=e.data)
                  for n, e in enumerate(entries)])
    sync_progress(r)
    broadcast_append(r)
    return r.term, r.log.last_index()


def propose_conf_change(r: Raft, cc: ConfChange) -> tuple[int, int]:
    from kvcore.raft.raft import NotLeader, ProposalRefused

    if r.role != "leader":
        raise NotLeader(r.id, r.lead)
    conf = r.log.conf()
    if not r.log.conf_committed():
        raise ProposalRefused("a configuration change is still uncommitted; one server at a time (thesis §4.1)")
    if not r.committed_in_term():
        raise ProposalRefused("the leader has not committed an entry of its term yet (the no-op-first rule)")
    if cc.op == "add-learner" and (cc.node in conf.voters or cc.node in conf.learners):
        raise ProposalRefused(f"node {cc.node} is already a member")
    if cc.op == "promote":
        if cc.node not in conf.learners:
            raise ProposalRefused(f"node {cc.node} is not a learner; add it as a learner first so it catches up (§4.2.1)")
        if r.prs[cc.node].match < r.log.committed:
            raise ProposalRefused(f"learner {cc.node} has not caught up (match {r.prs[cc.node].match}, "
                                  f"commit {r.log.committed}); try again later (§4.2.1)")
    if cc.op == "remove":
        if cc.node not in conf.voters and cc.node not in conf.learners:
            raise ProposalRefused(f"node {cc.node} is not a member")
        if list(conf.voters) == [cc.node]:
            raise ProposalRefused("the last voter cannot be removed")
    return propose_entries(r, [Entry(term=r.term, index=0, kind=CONF, data=cc.encode())])


# --- ReadIndex (thesis §6.4) ----------------------------------------------------------------------


def read_index(r: Raft, ctx: bytes, asker: str) -> None:
    from kvcore.raft.raft import NotLeader

    if r.role != "leader":
        if r.lead is None or asker != r.id:
            if asker == r.id:
                raise NotLeader(r.id, None)
            return
        r.send(RaftReadIndex(term=r.term, src=r.id, dst=r.lead, ctx=ctx))
        return
    if not r.committed_in_term():
        # §6.4 step 1: the leader's commit index is only known to be current once it has
        # committed an entry of its term (its no-op)
        r.reads_waiting.append((ctx, asker))
        return
    serve_read(r, ctx, asker)


def serve_read(r: Raft, ctx: bytes, asker: str) -> None:
    index = r.log.committed
    voters = r.log.conf().voters
    if list(voters) == [r.id] or (r.cfg.read_only == LEASE and lease_valid(r)):
        answer_read(r, index, ctx, asker)
        return
    # The heartbeat carries the leader's own sequence number, not the asker's context, so two
    # askers' equal contexts never collide.
    r.read_seq += 1
    tag = str(r.read_seq).encode()
    r.read_queue[tag] = (index, asker, ctx, {r.id})
    broadcast_heartbeat(r, tag)  # §6.4 step 3: confirm leadership with a round of heartbeats


def release_waiting_reads(r: Raft) -> None:
    if r.reads_waiting and r.committed_in_term():
        waiting, r.reads_waiting = r.reads_waiting, []
        for ctx, asker in waiting:
            serve_read(r, ctx, asker)


def ack_read(r: Raft, tag: bytes, frm: str) -> None:
    if tag not in r.read_queue:
        return
    r.read_queue[tag][3].add(frm)
    if not has_quorum(r.read_queue[tag][3], r.log.conf().voters):
        return
    # a heartbeat acked for this read also confirms every read queued before it
    while r.read_queue:
        t, (index, asker, ctx, _) = next(iter(r.read_queue.items()))
        del r.read_queue[t]
        answer_read(r, index, ctx, asker)
        if t == tag:
            break


def answer_read(r: Raft, index: int, ctx: bytes, asker: str) -> None:
    from kvcore.raft.raft import ReadState

    if asker == r.id:
        r.read_states.append(ReadState(index, ctx))
    else:
        r.send(RaftReadIndexResp(term=r.term, src=r.id, dst=asker, ctx=ctx, index=index))


def lease_valid(r: Raft) -> bool:
    """§6.4.1: voters ignore elections for ``election_tick`` ticks after hearing from the leader
    (stickiness), so a majority ack of a heartbeat sent at stamp s keeps the leadership until
    s + election_tick by their clocks; ``lease_drift_ticks`` is the margin for clock drift."""
    if r.lead_transferee is not None:
        return False  # TimeoutNow overrides stickiness: no lease during a transfer
    stamps = {n: (r.ticks if n == r.id else pr.acked_stamp) for n, pr in r.prs.items()}
    s = quorum_index(stamps, r.log.conf().voters)
    return r.ticks - s < r.cfg.election_tick - r.cfg.lease_drift_ticks


# --- leadership transfer (thesis §3.10) ----------------------------------------------------------


def transfer_leader(r: Raft, to: str) -> None:
    from kvcore.raft.raft import NotLeader

    if r.role != "leader":
        raise NotLeader(r.id, r.lead)
    if to == r.id:
        return
    if to not in r.log.conf().voters:
        raise ValueError(f"node {to} is not a voter and cannot become leader")
    if r.lead_transferee == to:
        return
    r.lead_transferee = to
    r.election_elapsed = 0  # the transfer is abandoned after one election timeout
    for pr in r.prs.values():
        pr.acked_stamp = -(10**18)  # and the lease ends now
    r.stats["transfers"] += 1
    r.logf(f"starts transferring leadership to {to}")
    if r.prs[to].match == r.log.last_index():
        send_timeout_now(r, to)
    else:
        send_append(r, to)


def send_timeout_now(r: Raft, to: str) -> None:
    r.send(RaftTimeoutNow(term=r.term, src=r.id, dst=to))
