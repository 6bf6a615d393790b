"""kvcore.raft: the Raft consensus core (pure, deterministic; core only, not yet wired into the node).

Theory of operation
-------------------
etcd-io/raft's shape in stdlib Python: :class:`Raft` takes messages, ticks and proposals and
hands out a :class:`Ready` (what to persist, then send, then apply); :class:`MemoryRaftStorage`
keeps volatile and synced state apart so a crash loses unsynced writes; :mod:`.session` applies
a client's retried write once (thesis §6.3). See ARCHITECTURE.md, "The Raft core".
"""

from kvcore.raft.config import LEASE, SAFE, RaftConfig
from kvcore.raft.messages import RAFT_MESSAGES, ConfState, Entry, HardState, Snapshot, SnapshotMeta
from kvcore.raft.raft import (
    CANDIDATE,
    FOLLOWER,
    LEADER,
    PRE_CANDIDATE,
    NotLeader,
    ProposalRefused,
    Raft,
    ReadState,
    Ready,
)
from kvcore.raft.storage import MemoryRaftStorage, RaftStorage, StoredState

__all__ = [
    "CANDIDATE", "FOLLOWER", "LEADER", "LEASE", "PRE_CANDIDATE", "RAFT_MESSAGES", "SAFE",
    "ConfState", "Entry", "HardState", "MemoryRaftStorage", "NotLeader", "ProposalRefused", "Raft",
    "RaftConfig", "RaftStorage", "ReadState", "Ready", "Snapshot", "SnapshotMeta", "StoredState",
]
