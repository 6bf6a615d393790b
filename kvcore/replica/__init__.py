"""A replicated group in the node: the store served through one Raft log (:mod:`kvcore.raft`).

- :mod:`kvcore.replica.group` (:class:`ReplicaGroup`): the driver, Ready loop, client writes and
  reads, forwarding to the leader, sessions, snapshots, learners;
- :mod:`kvcore.replica.machine` (:class:`StateMachine`): the store and the client sessions;
- :mod:`kvcore.replica.command`: the bytes of commands, answers and images;
- :mod:`kvcore.replica.disk` (:class:`KVRaftStorage`): a Raft log in the Runtime's Storage;
- :mod:`kvcore.replica.messages`: ReplicaForward / ReplicaReply.

Raft's own messages join the codec's registry here, so both worlds carry them.
"""

from kvcore.messages import REGISTRY
from kvcore.raft.messages import RAFT_MESSAGES

REGISTRY.update(RAFT_MESSAGES)

from kvcore.replica.disk import KVRaftStorage  # noqa: E402
from kvcore.replica.group import GROUP_MESSAGES, RaftDisk, ReplicaConfig, ReplicaGroup  # noqa: E402
from kvcore.replica.machine import StateMachine  # noqa: E402

__all__ = ["GROUP_MESSAGES", "KVRaftStorage", "RaftDisk", "ReplicaConfig", "ReplicaGroup", "StateMachine"]
