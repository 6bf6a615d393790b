"""A follower's rules: AppendEntries, heartbeats, InstallSnapshot chunks, TimeoutNow, reads.

Theory of operation
-------------------
Functions of a :class:`~kvcore.raft.raft.Raft` in the follower role. Every message from the
current leader resets the election timer and names the leader (Figure 2, Followers). Replies
are queued in ``msgs`` and so leave only after the Ready that holds the appended entries was
synced (persist before send): an acknowledgement always vouches for durable entries.

* AppendEntries (Figure 2, receiver rules 1-5): a ``prev_index`` below our commit index is
  answered with the commit index (those entries are committed, hence identical, §5.4.3). On a
  mismatch the reply carries the fast back-off hint (§5.3): the term of our entry at
  ``prev_index`` and the first index of that term, or, when our log is shorter, term 0 and our
  last index + 1.
* InstallSnapshot (Figure 13) arrives in chunks; chunk ``offset`` must equal the bytes held for
  that snapshot (index and term: one image), otherwise the reply says how much is held and the
  leader goes on from there (a duplicate chunk, or a leader's new attempt from offset 0, does
  not make us start over). Every chunk is answered once; the leader sends one chunk at a time. On the last chunk: a snapshot we already cover is ignored; one
  whose last entry our log holds only moves the commit index (rule 6: keep the suffix);
  otherwise the log is replaced (rule 7) and the snapshot goes out in the next Ready to be
  persisted and loaded into the state machine (rule 8).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kvcore.raft.messages import (
    RaftAppend,
    RaftAppendResp,
    RaftHeartbeat,
    RaftHeartbeatResp,
    RaftMessage,
    RaftReadIndexResp,
    RaftSnapshot,
    RaftSnapshotResp,
    RaftTimeoutNow,
    Snapshot,
)

if TYPE_CHECKING:
    from kvcore.raft.raft import Raft


def step_follower(r: Raft, m: RaftMessage) -> None:
    if isinstance(m, RaftAppend | RaftHeartbeat | RaftSnapshot):
        r.election_elapsed = 0
        r.lead = m.src
    if isinstance(m, RaftAppend):
        handle_append(r, m)
    elif isinstance(m, RaftHeartbeat):
        r.log.commit_to(min(m.commit, r.log.last_index()))
        r.send(RaftHeartbeatResp(term=r.term, src=r.id, dst=m.src, ctx=m.ctx, stamp=m.stamp))
    elif isinstance(m, RaftSnapshot):
        handle_snapshot_chunk(r, m)
    elif isinstance(m, RaftTimeoutNow):
        # thesis §3.10: the target "starts a new election" at once, skipping PreVote and
        # flagged so voters honour it despite leader stickiness
        r.logf(f"received TimeoutNow from {m.src} and starts an election")
        r.campaign(transfer=True)
    elif isinstance(m, RaftReadIndexResp):
        from kvcore.raft.raft import ReadState

        r.read_states.append(ReadState(m.index, m.ctx))


def handle_append(r: Raft, m: RaftAppend) -> None:
    if m.prev_index < r.log.committed:
        r.send(RaftAppendResp(term=r.term, src=r.id, dst=m.src, index=r.log.committed))
        return
    last_new = r.log.maybe_append(m.prev_index, m.prev_term, m.commit, m.entries)
    if last_new is not None:
        r.send(RaftAppendResp(term=r.term, src=r.id, dst=m.src, index=last_new))
        return
    # receiver rule 2: "Reply false if log doesn't contain an entry at prevLogIndex whose term
    # matches prevLogTerm", with the §5.3 hint
    if m.prev_index > r.log.last_index():
        hint_index, hint_term = r.log.last_index() + 1, 0
    else:
        t = r.log.term(m.prev_index)
        assert t is not None  # prev_index >= committed >= snapshot index
        hint_index, hint_term = r.log.first_index_of_term(m.prev_index), t
    r.logf(f"rejected append from {m.src} at {m.prev_term}/{m.prev_index}: hint {hint_term}/{hint_index}")
    r.send(RaftAppendResp(term=r.term, src=r.id, dst=m.src, index=m.prev_index, reject=True,
                          hint_index=hint_index, hint_term=hint_term))


def handle_snapshot_chunk(r: Raft, m: RaftSnapshot) -> None:
    meta = m.meta
    if meta.index <= r.log.committed:
        r.snap_buf = None
        r.send(RaftAppendResp(term=r.term, src=r.id, dst=m.src, index=r.log.committed))
        return
    buf = r.snap_buf
    if buf is None or (buf[0], buf[1]) != (meta.index, meta.term):
        # a new snapshot; the bytes held of this one stay (one index and term is one image, so a
        # leader's new attempt, or a duplicate of its first chunk, is answered with how much we
        # hold and goes on from there)
        buf = (meta.index, meta.term, bytearray())
        r.snap_buf = buf
    if m.offset == len(buf[2]):
        buf[2].extend(m.data)
    if not (m.done and m.offset + len(m.data) == len(buf[2])):
        r.send(RaftSnapshotResp(term=r.term, src=r.id, dst=m.src, index=meta.index, received=len(buf[2])))
        return
    r.snap_buf = None
    snap = Snapshot(meta=meta, data=bytes(buf[2]))
    if r.log.match_term(meta.index, meta.term):
        r.log.commit_to(meta.index)  # Figure 13 rule 6: retain the entries following it
    else:
        r.log.restore(snap)  # rule 7: discard the entire log
        r.pending_snapshot = snap
        r.pending_compacted = None  # a local compaction not yet persisted is superseded
        r.stats["snapshots_installed"] += 1
        r.logf(f"restored snapshot {meta.term}/{meta.index}")
    r.send(RaftAppendResp(term=r.term, src=r.id, dst=m.src, index=r.log.last_index()))
