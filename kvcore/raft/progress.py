"""What a leader knows about each follower, and the majority arithmetic.

Theory of operation
-------------------
Figure 2 gives a leader ``nextIndex`` and ``matchIndex`` per server. etcd-io/raft adds a small
flow-control state machine on top, kept here:

* ``PROBE``: the leader does not know where the follower's log matches. It sends one
  AppendEntries and waits (``probe_sent``) for the reply or the next heartbeat reply before
  sending another; a rejection moves ``next`` back using the fast back-off hint (§5.3).
* ``REPLICATE``: the follower's log matches up to ``match``; the leader streams entries,
  optimistically advancing ``next``, with at most ``max_inflight`` messages unacknowledged.
* ``SNAPSHOT``: the entries the follower needs were compacted; the leader sends the snapshot in
  chunks and returns to PROBE (then REPLICATE) once it is installed. etcd-io/raft's
  ``PendingSnapshot``: at most one transfer per follower, of one image (``snapshot``, the
  leader's snapshot object when the transfer began, shared by every follower sent the same one
  and released when the transfer ends), with at most one chunk in flight (``chunk_inflight``)
  that only the follower's answer for it moves on (``snapshot_offset`` bytes confirmed). While
  it lasts the follower is paused: no appends, no second snapshot. A chunk unanswered for
  ``snapshot_elapsed`` ticks is sent again, ``snapshot_resends`` times at most; then the
  transfer is abandoned (:meth:`Progress.snapshot_failure`, back to PROBE) and a later probe
  starts a new one.

``recent_active`` feeds CheckQuorum (thesis §6.2/§9.6), ``acked_stamp`` the lease (thesis §6.4.1).
The majority functions are pure: :func:`quorum_index` is the commit rule's "a majority of
matchIndex[i] >= N" and :func:`vote_result` tallies an election.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from kvcore.raft.messages import Snapshot

PROBE = "probe"
REPLICATE = "replicate"
SNAPSHOT = "snapshot"


@dataclass
class Progress:
    match: int = 0
    next: int = 1
    state: str = PROBE
    probe_sent: bool = False
    inflight: list[int] = field(default_factory=list)  # last index of each unacked message
    recent_active: bool = False
    pending_snapshot: int = 0  # index of the snapshot being sent (SNAPSHOT only)
    snapshot: Snapshot | None = None  # the image being sent, held until the transfer ends
    snapshot_offset: int = 0  # bytes of it the follower confirmed holding
    chunk_inflight: bool = False  # a chunk was sent and its answer not taken yet
    snapshot_elapsed: int = 0  # ticks since the last chunk was sent
    snapshot_resends: int = 0  # chunks sent again without progress
    acked_stamp: int = -(10**18)
    learner: bool = False

    def become_probe(self) -> None:
        # after a snapshot, the follower holds at least its index (etcd: max(Match, PendingSnapshot))
        self.next = self.match + 1 if self.state != SNAPSHOT else max(self.match, self.pending_snapshot) + 1
        self.state = PROBE
        self.probe_sent = False
        self.inflight.clear()
        self._end_transfer()

    def become_replicate(self) -> None:
        self.state = REPLICATE
        self.next = self.match + 1
        self.inflight.clear()
        self.probe_sent = False
        self._end_transfer()

    def become_snapshot(self, snap: Snapshot) -> None:
        self._end_transfer()  # (a transfer starts from nothing)
        self.state = SNAPSHOT
        self.pending_snapshot = snap.meta.index
        self.snapshot = snap
        self.inflight.clear()

    def snapshot_failure(self) -> None:
        """The transfer is abandoned (etcd's ReportSnapshot(failure)): back to PROBE from
        ``match``, paused until the follower answers a heartbeat, which starts a new attempt."""
        self.pending_snapshot = 0  # (so that become_probe resumes from match, not the snapshot)
        self.become_probe()
        self.probe_sent = True

    def _end_transfer(self) -> None:
        self.pending_snapshot = 0
        self.snapshot = None  # release the image
        self.snapshot_offset = 0
        self.chunk_inflight = False
        self.snapshot_elapsed = 0
        self.snapshot_resends = 0

    def is_paused(self, max_inflight: int) -> bool:
        if self.state == PROBE:
            return self.probe_sent
        if self.state == REPLICATE:
            return len(self.inflight) >= max_inflight
        return True

    def maybe_update(self, index: int) -> bool:
        """A successful reply up to ``index``: True when ``match`` moved forward."""
        updated = index > self.match
        if updated:
            self.match = index
            self.probe_sent = False
        self.next = max(self.next, index + 1)
        self.inflight = [i for i in self.inflight if i > index]
        return updated

    def sent(self, last: int) -> None:
        """Entries up to ``last`` were sent."""
        if self.state == REPLICATE:
            self.next = last + 1
            self.inflight.append(last)
        else:
            self.probe_sent = True


def quorum_index(matches: Mapping[str, int], voters: Iterable[str]) -> int:
    """The highest index stored by a majority of ``voters`` (missing voters count as 0)."""
    got = sorted((matches.get(v, 0) for v in voters), reverse=True)
    if not got:
        return 0
    return got[len(got) // 2]


def vote_result(votes: Mapping[str, bool], voters: Iterable[str]) -> str:
    """``won`` (a majority granted), ``lost`` (a majority can no longer grant) or ``pending``."""
    voters = list(voters)
    need = len(voters) // 2 + 1
    granted = sum(1 for v in voters if votes.get(v) is True)
    rejected = sum(1 for v in voters if votes.get(v) is False)
    if granted >= need:
        return "won"
    if rejected > len(voters) - need:
        return "lost"
    return "pending"


def has_quorum(members: Iterable[str], voters: Iterable[str]) -> bool:
    voters = list(voters)
    got = set(members)
    return sum(1 for v in voters if v in got) >= len(voters) // 2 + 1
