"""RaftConfig: every knob of the consensus core, with its meaning, unit and constraint.

Theory of operation
-------------------
Time in the core is ticks: the application calls ``tick()`` at a fixed interval it chooses
(e.g. every 10 ms), and every timeout below is a whole number of ticks, so the core never reads
a clock. ``validate()`` returns full sentences for every problem (an empty list means fine).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

SAFE = "safe"
LEASE = "lease"


@dataclass(frozen=True)
class RaftConfig:
    #: This node's id (a str, as every node id in storelab).
    id: str
    #: Ticks without hearing from a leader before a follower campaigns. The actual timeout is
    #: drawn uniformly from [election_tick, 2 * election_tick) at each reset (§5.2, randomized
    #: timeouts). Suggested: election_tick = 10 * heartbeat_tick (etcd-io/raft's ratio).
    election_tick: int = 10
    #: When non-zero, the randomized timeout is drawn uniformly from [election_tick,
    #: election_tick_max] (both included) instead of etcd's [election_tick, 2 * election_tick):
    #: the Raft paper's Figure 16 ranges (150-150 ms, 150-151 ms, ...). election_tick stays the
    #: minimum, which is what leader stickiness and CheckQuorum measure. 0 (the default) keeps
    #: etcd's range and draws exactly the same numbers as before.
    election_tick_max: int = 0
    #: Ticks between a leader's heartbeats (§5.2). Must be < election_tick.
    heartbeat_tick: int = 1
    #: PreVote (thesis §9.6): a would-be candidate first asks whether it could win, so a node
    #: that was partitioned away does not disrupt the cluster by bumping the term.
    pre_vote: bool = True
    #: CheckQuorum (thesis §6.2): a leader that has not heard from a majority within an
    #: election timeout steps down. Together with pre_vote it enables leader stickiness: a
    #: voter that heard from a leader within election_tick ignores (pre)vote requests (§9.6).
    check_quorum: bool = True
    #: Maximum bytes of entry data in one AppendEntries (at least one entry is always sent).
    max_size_per_msg: int = 1 << 20
    #: Maximum unacknowledged AppendEntries per follower in the replicate state.
    max_inflight: int = 64
    #: Maximum bytes of snapshot data in one InstallSnapshot chunk, so a chunk fits one peer
    #: frame (storelab's frames allow a few MiB; 1 MiB leaves room for the envelope).
    max_snapshot_chunk: int = 1 << 20
    #: Ticks a snapshot chunk may go unanswered before the leader sends it again (a chunk or its
    #: answer was lost, or the follower is stopped). 0 (the default) means election_tick.
    snapshot_resend_tick: int = 0
    #: Times one chunk is sent again without an answer before the leader abandons the transfer
    #: (back to probing; the next heartbeat the follower answers starts a new one).
    snapshot_resends: int = 3
    #: ReadIndex mode: SAFE (thesis §6.4: confirm leadership with a heartbeat round per batch of
    #: reads) or LEASE (§6.4.1: trust the leadership lease, no round trip). LEASE is only safe
    #: when tick rates differ by at most lease_drift_ticks per election timeout; requires
    #: check_quorum (the lease rests on leader stickiness).
    read_only: str = SAFE
    #: The clock-drift bound for LEASE reads, in ticks per election timeout: the lease lasts
    #: election_tick - lease_drift_ticks ticks from the send of the heartbeat a majority acked.
    #: In LEASE mode a node also ignores (pre)votes for its first election_tick ticks after it
    #: starts, so a follower that acked a lease and restarted still honours it.
    lease_drift_ticks: int = 1
    #: Where trace lines go ("2 became leader at term 3"); None is silent.
    logger: Callable[[str], None] | None = None
    #: Where the trace lines an operator wants go, as they come (also sent to ``logger``): this
    #: node's role changes, elections it starts, and what it learns of its own removal. Not the
    #: per-message lines (votes cast or refused, malformed messages), which a removed or cut-off
    #: server would repeat every election timeout. realnet logs them at INFO; None is silent.
    notable: Callable[[str], None] | None = None

    def validate(self) -> list[str]:
        problems: list[str] = []
        if not self.id:
            problems.append("id must be a non-empty node id.")
        if self.heartbeat_tick < 1:
            problems.append(f"heartbeat_tick must be at least 1 tick, not {self.heartbeat_tick}.")
        if self.election_tick <= self.heartbeat_tick:
            problems.append(f"election_tick ({self.election_tick}) must be greater than heartbeat_tick "
                            f"({self.heartbeat_tick}); 10 times is suggested.")
        if self.election_tick_max and self.election_tick_max < self.election_tick:
            problems.append(f"election_tick_max ({self.election_tick_max}) must be 0 (etcd's range) or at "
                            f"least election_tick ({self.election_tick}).")
        if self.max_size_per_msg < 1 or self.max_snapshot_chunk < 1 or self.max_inflight < 1:
            problems.append("max_size_per_msg, max_snapshot_chunk and max_inflight must be at least 1.")
        if self.snapshot_resend_tick < 0 or self.snapshot_resends < 0:
            problems.append("snapshot_resend_tick and snapshot_resends must be at least 0.")
        if self.read_only not in (SAFE, LEASE):
            problems.append(f"read_only must be {SAFE!r} or {LEASE!r}, not {self.read_only!r}.")
        if self.read_only == LEASE and not self.check_quorum:
            problems.append("read_only='lease' requires check_quorum=True: the lease rests on "
                            "leader stickiness.")
        if self.read_only == LEASE and not 0 <= self.lease_drift_ticks < self.election_tick:
            problems.append(f"lease_drift_ticks must be at least 0 and less than election_tick "
                            f"({self.election_tick}): the lease lasts election_tick - lease_drift_ticks "
                            f"ticks; not {self.lease_drift_ticks}.")
        return problems
