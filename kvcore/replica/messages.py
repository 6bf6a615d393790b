"""The node-to-node messages of a replicated group beside Raft's own (:mod:`kvcore.raft.messages`).

A write that reaches a node which is not the leader travels to the leader as
:class:`ReplicaForward`, carrying the entry node's session ``(client, seq, acked)`` (thesis
§6.3), so a resend after a lost reply or a change of leader is applied once. ``op`` is ``None``
for a session registration. The leader answers with :class:`ReplicaReply` once the entry is
applied, or at once with ``error="not_leader"`` (``leader`` is its best guess) when it cannot
propose. Reads do not travel so: they use Raft's ReadIndex (:class:`kvcore.raft.messages.RaftReadIndex`).
"""

from __future__ import annotations

from kvcore.messages import Delete, Put, Reply, message


@message
class ReplicaForward:
    request_id: int
    client: str
    seq: int
    acked: int
    op: Put | Delete | None


@message
class ReplicaReply:
    request_id: int
    client: str
    seq: int
    reply: Reply
    leader: str = ""
