"""A replicated group in the node: the store served through one Raft log (:mod:`kvcore.raft`).

- :mod:`kvcore.replica.group` (:class:`ReplicaGroup`): the driver, Ready loop, client writes and
  reads, forwarding to the leader, sessions, snapshots, learners;
- :mod:`kvcore.replica.machine` (:class:`StateMachine`): the store and the client sessions;
- :mod:`kvcore.replica.command`: the bytes of commands, answers and images;
- :mod:`kvcore.replica.disk` (:class:`KVRaftStorage`): a Raft log in the Runtime's Storage;
- :mod:`kvcore.replica.messages`: ReplicaForward / ReplicaReply.

Raft's own messages are wire kinds through :mod:`kvcore.messages` (``register_foreign``).
"""

from kvcore.replica.disk import KVRaftStorage
from kvcore.replica.group import GROUP_MESSAGES, RaftDisk, ReplicaConfig, ReplicaGroup
from kvcore.replica.machine import StateMachine

__all__ = ["GROUP_MESSAGES", "KVRaftStorage", "RaftDisk", "ReplicaConfig", "ReplicaGroup", "StateMachine"]
