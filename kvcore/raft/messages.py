"""Raft's data: log entries, persistent state, snapshots and the messages peers exchange.

Theory of operation
-------------------
Everything the consensus core takes in or hands out is one of these frozen, slotted,
keyword-only dataclasses of plain data (``str``, ``int``, ``bytes``, ``bool``, ``None``, tuples
and nested messages), the shape :mod:`kvcore.messages` uses, so :mod:`kvcore.codec` can carry
them. :data:`RAFT_MESSAGES` lists them; :mod:`kvcore.messages` registers every one in the codec's
``REGISTRY`` at import (wire kind = class name), so both worlds carry them; a node that runs no
group counts them as malformed through its dispatch table.

Every peer message carries ``term``, ``src`` and ``dst`` (Raft §5.1: "servers exchange their
current term whenever they communicate"). Names follow the paper's RPCs: :class:`RaftVote` is
RequestVote (PreVote when ``pre_vote``, thesis §9.6), :class:`RaftAppend` is AppendEntries,
:class:`RaftHeartbeat` is an AppendEntries without entries (etcd-io/raft's split, so a heartbeat
can carry a ReadIndex context and never moves ``next``), :class:`RaftSnapshot` is one chunk of
InstallSnapshot (Figure 13 of the paper), :class:`RaftTimeoutNow` starts an election at once
(thesis §3.10), :class:`RaftRemoved` tells a server that asks for votes that it was removed
(thesis §4.2.3) and :class:`RaftReadIndex` asks the leader for a read index (thesis §6.4).

:func:`describe` renders a message on one line for traces and the interaction scripts.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar, dataclass_transform

T = TypeVar("T")

#: kind name -> class for every Raft message (registered in kvcore.messages.REGISTRY; see above).
RAFT_MESSAGES: dict[str, type[Any]] = {}

#: Entry kinds: a client command (empty data is the leader's no-op) or a configuration change.
NORMAL = "normal"
CONF = "conf"


@dataclass_transform(kw_only_default=True, frozen_default=True)
def raft_message(cls: type[T]) -> type[T]:
    """Class decorator: frozen, slotted, keyword-only dataclass listed in :data:`RAFT_MESSAGES`."""
    if cls.__name__ in RAFT_MESSAGES:
        raise TypeError(f"raft message kind {cls.__name__!r} is declared twice")
    dc = dataclasses.dataclass(frozen=True, slots=True, kw_only=True)(cls)
    RAFT_MESSAGES[cls.__name__] = dc
    return dc


# --- log and persistent state -----------------------------------------------------------------


@raft_message
class Entry:
    """One log entry (Figure 2: "each entry contains command for state machine, and term when
    entry was received by leader"). ``kind`` is :data:`NORMAL` or :data:`CONF`."""

    term: int
    index: int
    kind: str = NORMAL
    data: bytes = b""


@raft_message
class HardState:
    """Figure 2's "persistent state on all servers" (currentTerm, votedFor) plus the commit
    index (not required by the paper; kept so a restarted node need not wait to apply)."""

    term: int = 0
    vote: str | None = None
    commit: int = 0


@raft_message
class ConfState:
    """A configuration: the voters (counted in every majority) and the learners (non-voting
    members that receive the log, thesis §4.2.1)."""

    voters: tuple[str, ...] = ()
    learners: tuple[str, ...] = ()


@raft_message
class SnapshotMeta:
    """The last entry a snapshot replaces (Figure 12: lastIncludedIndex/Term) and the
    configuration as of that entry (thesis §5.1)."""

    index: int = 0
    term: int = 0
    conf: ConfState = ConfState()


@raft_message
class Snapshot:
    """A state-machine image up to ``meta.index`` (opaque bytes to Raft)."""

    meta: SnapshotMeta = SnapshotMeta()
    data: bytes = b""


@raft_message
class ConfChange:
    """One-server-at-a-time membership change (thesis §4.1), the data of a :data:`CONF` entry.

    ``op``: ``add-learner`` (a non-voting member that catches up), ``promote`` (learner to voter)
    or ``remove`` (voter or learner)."""

    op: str
    node: str

    def encode(self) -> bytes:
        return f"{self.op} {self.node}".encode()

    @staticmethod
    def decode(data: bytes) -> ConfChange:
        op, _, node = data.decode().partition(" ")
        return ConfChange(op=op, node=node)


CONF_OPS = ("add-learner", "promote", "remove")


# --- peer messages -------------------------------------------------------------------------------


@raft_message
class RaftVote:
    """RequestVote (Figure 2); a PreVote when ``pre_vote`` (thesis §9.6: ``term`` is the term the
    sender *would* campaign in, its own term is not incremented). ``transfer`` marks an election
    started by TimeoutNow, which voters honour despite leader stickiness (thesis §3.10)."""

    term: int
    src: str
    dst: str
    last_index: int
    last_term: int
    pre_vote: bool = False
    transfer: bool = False


@raft_message
class RaftVoteResp:
    term: int
    src: str
    dst: str
    granted: bool
    pre_vote: bool = False


@raft_message
class RaftAppend:
    """AppendEntries (Figure 2) with entries following ``prev_index``/``prev_term``."""

    term: int
    src: str
    dst: str
    prev_index: int
    prev_term: int
    entries: tuple[Entry, ...] = ()
    commit: int = 0


@raft_message
class RaftAppendResp:
    """AppendEntries reply. Success: ``index`` is the last index known to match the leader's.
    Reject: ``index`` is the rejected ``prev_index`` and ``hint_index``/``hint_term`` the fast
    back-off hint (§5.3, "the follower can include the term of the conflicting entry and the
    first index it stores for that term"; ``hint_term`` 0 means "my log ends before that")."""

    term: int
    src: str
    dst: str
    index: int
    reject: bool = False
    hint_index: int = 0
    hint_term: int = 0


@raft_message
class RaftHeartbeat:
    """An empty AppendEntries (§5.2). ``commit`` is capped at what the follower is known to hold;
    ``ctx`` is the newest pending ReadIndex context (thesis §6.4); ``stamp`` is the leader's tick
    count when sent, echoed back, so a lease is measured from the send (thesis §6.4.1)."""

    term: int
    src: str
    dst: str
    commit: int = 0
    ctx: bytes = b""
    stamp: int = 0


@raft_message
class RaftHeartbeatResp:
    term: int
    src: str
    dst: str
    ctx: bytes = b""
    stamp: int = 0


@raft_message
class RaftSnapshot:
    """One chunk of InstallSnapshot (paper Figure 13): ``data`` is the snapshot's bytes from
    ``offset``; ``done`` on the last chunk. Chunks are at most ``RaftConfig.max_snapshot_chunk``
    bytes so each fits one peer frame."""

    term: int
    src: str
    dst: str
    meta: SnapshotMeta
    offset: int
    data: bytes
    done: bool


@raft_message
class RaftSnapshotResp:
    """Acknowledges a non-final chunk: ``received`` bytes of snapshot ``index`` are held."""

    term: int
    src: str
    dst: str
    index: int
    received: int


@raft_message
class RaftTimeoutNow:
    """Leadership transfer: "start an election now" (thesis §3.10)."""

    term: int
    src: str
    dst: str


@raft_message
class RaftRemoved:
    """A member's answer to a (pre)vote request from a server its configuration does not name:
    the configuration committed at ``conf_index`` excludes it (thesis §4.2.3's removed server, one
    that missed its own removal while it was down or cut off). The addressee stops campaigning
    until its own log holds a configuration newer than that (``Raft.removed``); etcd tells a
    removed member so at its transport, and the member stops."""

    term: int
    src: str
    dst: str
    conf_index: int


@raft_message
class RaftReadIndex:
    """A follower asks the leader for a read index for ``ctx`` (thesis §6.4)."""

    term: int
    src: str
    dst: str
    ctx: bytes


@raft_message
class RaftReadIndexResp:
    term: int
    src: str
    dst: str
    ctx: bytes
    index: int


RaftMessage = (
    RaftVote | RaftVoteResp | RaftAppend | RaftAppendResp | RaftHeartbeat | RaftHeartbeatResp
    | RaftSnapshot | RaftSnapshotResp | RaftTimeoutNow | RaftRemoved | RaftReadIndex | RaftReadIndexResp
)


def describe_entry(e: Entry) -> str:
    kind = "EntryConf" if e.kind == CONF else "EntryNormal"
    return f"{e.term}/{e.index} {kind} {e.data.decode(errors='replace')!r}".replace("'", '"')


def describe(m: RaftMessage) -> str:
    """One line per message in the style of etcd-io/raft's interaction traces."""
    head = f"{m.src}->{m.dst} {type(m).__name__} Term:{m.term}"
    if isinstance(m, RaftVote):
        kind = " pre" if m.pre_vote else (" transfer" if m.transfer else "")
        return f"{head} Log:{m.last_term}/{m.last_index}{kind}"
    if isinstance(m, RaftVoteResp):
        return f"{head}{' pre' if m.pre_vote else ''} {'granted' if m.granted else 'rejected'}"
    if isinstance(m, RaftAppend):
        ents = f" Entries:[{', '.join(describe_entry(e) for e in m.entries)}]" if m.entries else ""
        return f"{head} Log:{m.prev_term}/{m.prev_index} Commit:{m.commit}{ents}"
    if isinstance(m, RaftAppendResp):
        if m.reject:
            return f"{head} Rejected:{m.index} Hint:{m.hint_term}/{m.hint_index}"
        return f"{head} Index:{m.index}"
    if isinstance(m, RaftHeartbeat):
        ctx = f" ctx:{m.ctx.decode(errors='replace')}" if m.ctx else ""
        return f"{head} Commit:{m.commit}{ctx}"
    if isinstance(m, RaftHeartbeatResp):
        return head + (f" ctx:{m.ctx.decode(errors='replace')}" if m.ctx else "")
    if isinstance(m, RaftSnapshot):
        return (f"{head} Snap:{m.meta.term}/{m.meta.index} Offset:{m.offset} Bytes:{len(m.data)}"
                f"{' done' if m.done else ''}")
    if isinstance(m, RaftSnapshotResp):
        return f"{head} Snap:{m.index} Received:{m.received}"
    if isinstance(m, RaftRemoved):
        return f"{head} Conf:{m.conf_index}"
    if isinstance(m, RaftReadIndex):
        return f"{head} ctx:{m.ctx.decode(errors='replace')}"
    if isinstance(m, RaftReadIndexResp):
        return f"{head} ctx:{m.ctx.decode(errors='replace')} Index:{m.index}"
    return head
