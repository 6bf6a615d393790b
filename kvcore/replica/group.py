"""ReplicaGroup: one Raft group inside a node, serving the store through a replicated log.

Theory of operation
-------------------
The driver owns a :class:`kvcore.raft.Raft`, its storage and the :class:`StateMachine`, and
runs etcd-io/raft's loop on the node's Runtime:

* **Inputs** (peer messages, ticks, proposals, reads) step the core. Nothing may be stepped
  between ``ready()`` and ``advance()``, so while a Ready is being persisted an input waits in
  :attr:`ReplicaGroup.inbox` and runs right after.
* **The Ready** is taken once per turn (``call_later(0)`` after the first input of a turn), so
  every input of one turn shares one save and one sync: group commit. Step 1, persist: save,
  sync when ``must_sync``, then wait for the storage's ``on_durable`` (at once in realnet, where
  an fsync returns when done; after the simulated sync time in the sim). Only then step 2, send
  the messages (a vote, a term, an ack leave only once durable: Figure 2), step 3, install a
  snapshot and apply the committed entries, answer reads whose index is applied, and step 4,
  ``advance``.
* **Writes** (Put, Delete) become log entries carrying this node's client session (thesis §6.3):
  the node registers one session per incarnation (``<node id>/<random>``) before its first write
  and numbers its writes. The leader proposes them; a non-leader forwards them to the leader
  (:class:`ReplicaForward`) and resends every ``retry`` seconds, or at once when a new leader is
  known, with the same ``(client, seq)``, so the write is applied once however often it travels.
  The client is answered only after the entry is committed and applied. With no leader known and
  nothing sent yet the answer is 503 ``no_leader`` (certainly not applied); once something was
  sent, a write that is not answered within ``forward_timeout`` gets 504 (outcome unknown).
* **Reads** (Get) use ReadIndex (thesis §6.4) from any node: the core confirms the read index
  with the leader (a follower asks it), the driver waits until it has applied that index, then
  reads its own copy. Linearizable, without a log entry. With ``read_only = "lease"`` (thesis
  §6.4.1) the leader confirms the index without a heartbeat round while its lease holds (a
  majority acked a heartbeat sent less than ``election_tick - lease_drift_ticks`` ticks ago):
  one round trip less, and linearizable only while the nodes' tick rates differ by at most
  ``lease_drift_ticks`` per election timeout (a leader whose clock runs slow outlives its lease).
* **Snapshots**: when more than ``snapshot_entries`` applied entries sit in the log, the state
  machine's image replaces them (``compact``, §7); a follower far behind gets it in chunks. The
  image is frozen at the applied index and built ``image_chunk`` keys a step, one step per loop
  turn (``call_later(0)``), while the group goes on (copy on write, thesis §5.2:
  :class:`~kvcore.replica.machine.ImageBuilder`); a store that fits one step is done at once.
* **Learners** (thesis §4.2.1): the leader promotes a learner once it has caught up
  (``auto_promote``), so ``add_learner`` is "add a server that votes once it can".
* **Removal** (thesis §4.2.3): a node that knows a committed configuration removed it (it applied
  its removal, or a member answered its pre-vote with ``RaftRemoved``: a node cut off while it was
  removed never hears otherwise) stops campaigning and answers every client request 503
  ``removed``; ``info()["removed_at"]`` names the configuration's index.

A peer can never crash the driver: the core drops malformed Raft messages, and a message whose
``src`` is not the bus's authenticated sender is dropped and counted (``dropped``).
"""

from __future__ import annotations

import dataclasses
import heapq
import random
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from kvcore import errors
from kvcore.config import NodeConfig
from kvcore.messages import Delete, Get, Put, Reply
from kvcore.metrics import NodeStats
from kvcore.raft import RAFT_MESSAGES
from kvcore.raft.config import LEASE, SAFE, RaftConfig
from kvcore.raft.messages import Entry, Snapshot, SnapshotMeta
from kvcore.raft.raft import LEADER, NotLeader, ProposalRefused, Raft, Ready, malformed
from kvcore.raft.storage import RaftStorage, StoredState
from kvcore.replica.command import DELETE, PUT, REGISTER, Command, encode_command
from kvcore.replica.machine import ImageBuilder, StateMachine
from kvcore.replica.messages import ReplicaForward, ReplicaReply
from kvcore.runtime import Runtime, TimerHandle
from kvcore.store import LocalStore

ReplyFn = Callable[[Reply], None]
#: the leader's answer to one proposed write: (error code, sentence)
AnswerFn = Callable[[str, str], None]

#: every message kind a group takes (the node sends them here; without a group, malformed)
#: Raft's peer messages: the kinds with a sender and an addressee (Entry, HardState, Snapshot and
#: the like are wire kinds only as parts of these; alone they are malformed)
RAFT_PEER_MESSAGES: tuple[type, ...] = tuple(
    cls for cls in RAFT_MESSAGES.values() if {"src", "dst"} <= {f.name for f in dataclasses.fields(cls)})
GROUP_MESSAGES: tuple[type, ...] = (*RAFT_PEER_MESSAGES, ReplicaForward, ReplicaReply)

NOT_LEADER = "not_leader"
SESSION_EXPIRED = "session_expired"


class RaftDisk(RaftStorage, Protocol):
    def on_durable(self, fn: Callable[[], None]) -> None: ...


@dataclass(frozen=True)
class ReplicaConfig:
    """How a node runs its Raft group. Times in seconds."""

    #: Seconds per Raft tick. With election_tick 10 an election timeout is 0.5-1 s and a leader
    #: heartbeats every 50 ms: etcd's ratio, scaled to a LAN.
    tick: float = 0.05
    election_tick: int = 10
    heartbeat_tick: int = 1
    #: Resend an unanswered forwarded write (or re-ask a read index) this often.
    retry: float = 0.25
    #: Compact the log when it holds this many applied entries (§7).
    snapshot_entries: int = 10_000
    #: Keys per step of a snapshot's image (sorted into a run, or encoded): the image is built a
    #: step per loop turn, so a large store's compaction does not stall the node (thesis §5.2).
    image_chunk: int = 4096
    #: The leader promotes a caught-up learner to voter by itself (§4.2.1).
    auto_promote: bool = True
    #: Ticks a snapshot chunk may go unanswered before the leader sends it again (0: election_tick,
    #: about half a second per chunk of up to a quarter of ``max_frame_bytes`` at the defaults:
    #: raise it on a slow link), and how many times one chunk is resent before the transfer is
    #: abandoned and started again (:class:`kvcore.raft.RaftConfig`'s fields of the same names).
    snapshot_resend_tick: int = 0
    snapshot_resends: int = 3
    #: How reads confirm the leader's commit index (:class:`kvcore.raft.RaftConfig`'s
    #: ``read_only``): ``"safe"`` (the default, thesis §6.4: a heartbeat round per batch of
    #: reads) or ``"lease"`` (§6.4.1: no round while the leader's lease holds; linearizable only
    #: while the nodes' clocks tick at rates that differ by at most ``lease_drift_ticks`` ticks
    #: per election timeout).
    read_only: str = SAFE
    #: LEASE reads' margin for clock drift, in ticks per election timeout: the lease lasts
    #: ``election_tick - lease_drift_ticks`` ticks from the send of a heartbeat a majority acked.
    lease_drift_ticks: int = 1

    def problems(self) -> list[str]:
        out = []
        if not self.tick > 0 or not self.retry > 0:
            out.append("tick and retry must be positive numbers of seconds.")
        if self.read_only not in (SAFE, LEASE):
            # said here, in the table's words; the core's own sentence is then left out
            out.append(f"read_only must be {SAFE!r} (a heartbeat round per batch of reads) or {LEASE!r} "
                       f"(the leader's lease, no round while it holds), not {self.read_only!r}.")
        if self.snapshot_entries < 1 or self.image_chunk < 1:
            out.append("snapshot_entries and image_chunk must be at least 1.")
        # the ticks are the core's: its own rules say what is wrong with them
        out += [p for p in self.raft_config("-").validate() if not p.startswith("read_only must be")]
        return out

    def raft_config(self, node_id: str, **more: Any) -> RaftConfig:
        """The core's configuration for this node's group: the ticks, the snapshot transfer's
        resends and the read mode from here, ``more`` (the chunk size, the log of notable events) from the node."""
        return RaftConfig(id=node_id, election_tick=self.election_tick, heartbeat_tick=self.heartbeat_tick,
                          snapshot_resend_tick=self.snapshot_resend_tick,
                          snapshot_resends=self.snapshot_resends, read_only=self.read_only,
                          lease_drift_ticks=self.lease_drift_ticks, **more)

    def validate(self) -> ReplicaConfig:
        """Self, or :class:`~kvcore.tables.ConfigError` listing every problem."""
        from kvcore.tables import ConfigError

        problems = self.problems()
        if problems:
            raise ConfigError(problems)
        return self


@dataclass(eq=False)
class _Write:
    op: Put | Delete | None  # None: this node's session registration
    reply: ReplyFn
    seq: int
    rid: int
    deadline: TimerHandle | None = None
    sent_to: str | None = None
    attempted: bool = False


@dataclass
class _Read:
    op: Get
    reply: ReplyFn
    deadline: TimerHandle
    index: int | None = None
    asked_at: float = 0.0


@dataclass
class ReplicaStats:
    proposals: int = 0
    forwarded: int = 0
    resent: int = 0
    #: resends that found their write still pending at the leader (not proposed again)
    deduplicated: int = 0
    applied: int = 0
    reads: int = 0
    read_retries: int = 0
    no_leader: int = 0
    #: client requests refused because this node was removed from the group (errors.Removed)
    removed: int = 0
    timeouts: int = 0
    dropped: int = 0
    snapshots_taken: int = 0
    #: steps the snapshot images took (ImageBuilder.steps: a run sorted or a chunk encoded each;
    #: after the first call's, one step per loop turn)
    image_steps: int = 0
    snapshots_installed: int = 0
    readies: int = 0
    syncs: int = 0
    entries_persisted: int = 0
    #: times this node learned of a new leader (the first one included; realnet's /metrics)
    leader_changes: int = 0


class Observer(Protocol):
    """Sees a group's life, for checkers (the sim's Figure 3 checks, :mod:`sim.raftcheck`)."""

    def started(self, node_id: str, stored: StoredState, at: float) -> None:
        """This incarnation's group starts from ``stored`` (what its storage loaded)."""
        ...

    def ready(self, node_id: str, raft: Raft, rd: Ready, at: float) -> None:
        """One Ready, its writes durable, before ``advance`` (nothing stepped in between)."""
        ...


class ReplicaGroup:
    def __init__(self, node_id: str, runtime: Runtime, disk: RaftDisk, node_config: NodeConfig,
                 config: ReplicaConfig, store: LocalStore, send: Callable[[str, Any], None],
                 node_stats: NodeStats, observer: Observer | None = None,
                 raft_log: Callable[[str], None] | None = None) -> None:
        problems = config.problems()
        if problems:
            raise ValueError(" ".join(problems))
        self.id = node_id
        self.rt = runtime
        self.disk = disk
        self.node_config = node_config
        self.config = config
        self.send = send
        self.node_stats = node_stats
        self.observer = observer
        self.stats = ReplicaStats()
        stored = self._formed(disk)
        rng = random.Random(runtime.random.getrandbits(64))
        self.raft = Raft(config.raft_config(node_id, max_snapshot_chunk=node_config.max_frame_bytes // 4,
                                            notable=raft_log), stored, rng)
        self.machine = StateMachine(store)
        if stored.snapshot.data:
            self.machine.restore(stored.snapshot.data, stored.snapshot.meta.index)
        self.machine.applied = stored.snapshot.meta.index
        if observer is not None:
            observer.started(node_id, stored, runtime.now())
        self.client = f"{node_id}/{runtime.random.getrandbits(48):012x}"
        self.registered = False
        self.next_seq = 1
        self.writes: dict[int, _Write] = {}  # seq -> write, this node's outstanding writes
        self.by_rid: dict[int, int] = {}  # request id -> seq
        self.queued: list[_Write] = []  # writes waiting for the session's registration
        self.next_rid = 1  # request ids are matched with the client id, fresh per incarnation
        self.reads: dict[bytes, _Read] = {}
        #: (read index, ctx) of the reads whose index is confirmed, lowest first: answered once
        #: applied reaches it (a heap, so a Ready looks only at the reads it can answer)
        self.confirmed: list[tuple[int, bytes]] = []
        #: at the leader: (client, seq) -> answers owed once the write is applied
        self.waiters: dict[tuple[str, int], list[AnswerFn]] = {}
        self.inbox: deque[Callable[[], None]] = deque()
        self.busy = False
        self.scheduled = False
        self.running = False
        self._tick_timer: TimerHandle | None = None
        self._retry_timer: TimerHandle | None = None
        self._last_lead: str | None = None
        #: the snapshot image being built, a step per turn (None: none)
        self._image: ImageBuilder | None = None
        self._table = self.handlers()

    @staticmethod
    def _formed(disk: RaftDisk) -> StoredState:
        """The stored state, after forming the group on a founder's first start.

        A founder's storage starts from the bootstrap configuration at index 0. Every founder
        replaces it by the same *formation snapshot* (index 1, term 1, the voters, an empty
        image), so the founding configuration is part of the replicated state: a node added
        later starts with no configuration and an empty log, the leader finds entry 1 compacted
        and sends it this snapshot, and the newcomer learns who the voters are before it can
        count any vote (without it, it would replay only the later changes and believe itself
        the only voter). etcd-io/raft bootstraps with configuration entries for the same reason.
        """
        stored = disk.load()
        meta = stored.snapshot.meta
        if meta.index == 0 and not stored.entries and meta.conf.voters:
            formed = Snapshot(meta=SnapshotMeta(index=1, term=1, conf=meta.conf), data=StateMachine().image())
            disk.save(None, (), formed)
            disk.sync()
            stored = disk.load()
        return stored

    # --- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        if self.running:
            return
        self.running = True
        self._tick_timer = self.rt.call_later(self.config.tick, self._on_tick)
        self._retry_timer = self.rt.call_later(self.config.retry, self._on_retry)
        self._kick()

    def stop(self) -> None:
        """Stop timers; every outstanding request's outcome is unknown to us now."""
        self.running = False
        if self._image is not None:
            self.machine.cancel_image()
            self._image = None
        for t in (self._tick_timer, self._retry_timer):
            if t is not None:
                t.cancel()
        why = errors.ShuttingDown(
            f"node {self.id} is shutting down; the request may or may not have been applied")
        for w in list(self.writes.values()) + self.queued:
            self._finish(w, why.code, why.message)
        for ctx in list(self.reads):
            self._finish_read(ctx, Reply(error=why.code, message=why.message))

    def handlers(self) -> Mapping[type, Callable[[str, Any], None]]:
        table: dict[type, Callable[[str, Any], None]] = dict.fromkeys(RAFT_PEER_MESSAGES, self.on_raft)
        table[ReplicaForward] = self.on_forward
        table[ReplicaReply] = self.on_reply
        return table

    def on_message(self, src: str, msg: Any) -> None:
        """A peer message of one of :data:`GROUP_MESSAGES` (the node dispatched it here)."""
        self._table[type(msg)](src, msg)

    # --- the loop: inputs, Ready, persist, send, apply, advance -------------------------------

    def _input(self, fn: Callable[[], None]) -> None:
        if self.busy:
            self.inbox.append(fn)
            return
        fn()
        self._kick()

    def _kick(self) -> None:
        if not self.busy and not self.scheduled and self.running and self.raft.has_ready():
            self.scheduled = True
            self.rt.call_later(0.0, self._drain)

    def _drain(self) -> None:
        self.scheduled = False
        if self.busy or not self.running or not self.raft.has_ready():
            return
        rd = self.raft.ready()
        self.busy = True
        st = self.stats
        st.readies += 1
        st.entries_persisted += len(rd.entries)
        self.disk.save(rd.hard_state, rd.entries, rd.snapshot or rd.compacted)
        if rd.must_sync:
            st.syncs += 1
            self.disk.sync()
            self.disk.on_durable(lambda: self._persisted(rd))
        else:
            self._persisted(rd)

    def _persisted(self, rd: Ready) -> None:
        if not self.running:
            return
        for m in rd.messages:
            self.send(m.dst, m)
        if rd.snapshot is not None:
            self.machine.restore(rd.snapshot.data, rd.snapshot.meta.index)
            self.stats.snapshots_installed += 1
        for e in rd.committed_entries:
            self._apply(e)
        for rs in rd.read_states:
            r = self.reads.get(rs.ctx)
            if r is not None and r.index is None:
                r.index = rs.index
                heapq.heappush(self.confirmed, (rs.index, rs.ctx))
        self._answer_reads()
        if self.observer is not None:
            self.observer.ready(self.id, self.raft, rd, self.rt.now())
        self.raft.advance(rd)
        if rd.soft_state is not None:
            self._lead_changed()
        self.busy = False
        while self.inbox and not self.busy:
            self.inbox.popleft()()
        self._maybe_compact()
        self._kick()

    def _apply(self, e: Entry) -> None:
        self.stats.applied += 1
        outcome = self.machine.apply(e)
        if outcome is None:
            return
        client, seq, code, message = outcome
        for answer in self.waiters.pop((client, seq), ()):
            answer(code, message)

    def _maybe_compact(self) -> None:
        log = self.raft.log
        if (self._image is not None or self.busy
                or log.applied - log.first_index() + 1 <= self.config.snapshot_entries):
            return
        self._image = self.machine.begin_image()
        self._image_step()

    def _image_step(self) -> None:
        b = self._image
        if b is None or b.cancelled or not self.running:
            self._image = None  # cancelled (a snapshot from the leader was installed), or stopped
            return
        # the first call takes two steps (a store that fits one chunk: sorted, then encoded,
        # done at once); every later one, one step, a loop turn each
        while not b.step(self.config.image_chunk):
            if b.steps >= 2:
                self.rt.call_later(0.0, self._image_step)
                return
        self._image = None
        self.stats.image_steps += b.steps
        if not b.cancelled:
            self._input(lambda: self._compact(b))

    def _compact(self, b: ImageBuilder) -> None:
        if b.index <= self.raft.log.snapshot.meta.index:
            return  # a newer snapshot came meanwhile
        self.raft.compact(b.index, b.data())
        self.stats.snapshots_taken += 1

    def _lead_changed(self) -> None:
        lead = self.raft.lead
        if self.raft.role != LEADER and self.waiters:
            # no longer leader: whoever waits on us asks the new leader (same (client, seq))
            waiters, self.waiters = self.waiters, {}
            for answers in waiters.values():
                for answer in answers:
                    answer(NOT_LEADER, f"{self.id} is no longer the leader")
        if lead != self._last_lead:
            self._last_lead = lead
            if lead is not None:
                self.stats.leader_changes += 1
                for w in list(self.writes.values()):
                    if w.sent_to != lead:
                        self._send_write(w)

    # --- ticks and retries ---------------------------------------------------------------------

    def _on_tick(self) -> None:
        if not self.running:
            return
        self._tick_timer = self.rt.call_later(self.config.tick, self._on_tick)
        self._input(self.raft.tick)
        if self.config.auto_promote and self.raft.role == LEADER:
            self._input(self._promote_caught_up)

    def _promote_caught_up(self) -> None:
        r = self.raft
        if r.role != LEADER:
            return
        for n in r.log.conf().learners:
            pr = r.prs.get(n)
            if pr is not None and pr.match >= r.log.committed:
                try:
                    r.propose_conf_change("promote", n)
                except (NotLeader, ProposalRefused):
                    pass
                return  # one server at a time (§4.1)

    def _on_retry(self) -> None:
        if not self.running:
            return
        self._retry_timer = self.rt.call_later(self.config.retry, self._on_retry)
        for w in list(self.writes.values()):
            if w.attempted:
                self.stats.resent += 1
                self._send_write(w)
        now = self.rt.now()
        for ctx, r in list(self.reads.items()):
            if r.index is None and now - r.asked_at >= self.config.retry:
                self.stats.read_retries += 1
                self._ask_read_index(ctx)

    # --- the client door --------------------------------------------------------------------------

    def submit(self, op: Get | Put | Delete, reply: ReplyFn) -> None:
        """Serve a client operation (already validated); ``reply`` is called exactly once."""
        if self.raft.removed():
            # its copy stops at its removal and no leader sends it more: nothing it could answer
            # would be current, and nothing it forwards is its to ask (thesis §4.2.3)
            self.stats.removed += 1
            e = errors.Removed(f"node {self.id} was removed from the replicated group (the configuration "
                               f"committed at index {self.raft.removed_at}); ask another node")
            reply(Reply(error=e.code, message=e.message))
            return
        if type(op) is Get:
            self._read(op, reply)
        else:
            self._write(op, reply)  # type: ignore[arg-type]

    def _no_leader(self) -> errors.NoLeader:
        self.stats.no_leader += 1
        return errors.NoLeader(f"the replicated group has no leader that {self.id} knows of; retry shortly")

    def _write(self, op: Put | Delete, reply: ReplyFn) -> None:
        if self.raft.lead is None:
            e = self._no_leader()
            reply(Reply(error=e.code, message=e.message))
            return
        w = self._new_write(op, reply)
        if not self.registered:
            self.queued.append(w)
            if not any(x.op is None for x in self.writes.values()):
                self._register()
            return
        self._send_write(w)

    def _new_write(self, op: Put | Delete | None, reply: ReplyFn) -> _Write:
        seq = self.next_seq
        self.next_seq += 1
        rid = self.next_rid
        self.next_rid += 1
        w = _Write(op, reply, seq, rid)
        w.deadline = self.rt.call_later(self.node_config.forward_timeout, lambda: self._timed_out(w))
        return w

    def _register(self) -> None:
        w = self._new_write(None, lambda r: None)
        self._send_write(w)

    def _acked(self) -> int:
        """The lowest seq whose answer we have not had (every answer below it may be forgotten)."""
        return min(self.writes, default=self.next_seq)

    def _send_write(self, w: _Write) -> None:
        self.writes[w.seq] = w
        self.by_rid[w.rid] = w.seq
        lead = self.raft.lead
        if lead is None:
            if not w.attempted:
                e = self._no_leader()
                self._finish(w, e.code, e.message)
            return  # sent before: the outcome is unknown; the retry timer tries again
        w.sent_to = lead
        w.attempted = True
        if lead == self.id:
            seq = w.seq
            self._input(lambda: self._propose(self.client, seq, self._acked(), w.op,
                                              lambda code, msg: self._answered(seq, code, msg, "")))
        else:
            self.stats.forwarded += 1
            self.send(lead, ReplicaForward(request_id=w.rid, client=self.client, seq=w.seq,
                                           acked=self._acked(), op=w.op))

    def _propose(self, client: str, seq: int, acked: int, op: Put | Delete | None, answer: AnswerFn) -> None:
        pending = self.waiters.get((client, seq))
        if pending is not None:
            # proposed in this term already and not applied yet: answer both when it is, rather
            # than put a second copy in the log (a resend while the first is still on its way)
            self.stats.deduplicated += 1
            pending.append(answer)
            return
        if op is None:
            cmd = Command(REGISTER, self.rt.now(), client, seq, acked)
        elif type(op) is Put:
            cmd = Command(PUT, self.rt.now(), client, seq, acked, op.key, op.value)
        else:
            cmd = Command(DELETE, self.rt.now(), client, seq, acked, op.key)
        try:
            self.raft.propose(encode_command(cmd))
        except NotLeader as e:
            answer(NOT_LEADER, str(e))
            return
        except ProposalRefused as e:
            answer(NOT_LEADER, str(e))
            return
        self.stats.proposals += 1
        self.waiters.setdefault((client, seq), []).append(answer)

    def _answered(self, seq: int, code: str, message: str, leader_hint: str) -> None:
        w = self.writes.get(seq)
        if w is None:
            return  # answered already (a duplicate reply) or timed out
        if code == NOT_LEADER:
            if leader_hint and leader_hint != w.sent_to:
                self.stats.resent += 1
                self._send_write(w)
            return  # else the retry timer resends
        if code == SESSION_EXPIRED:
            # our session is gone, the write certainly not applied: register again, then resend
            # under a new number
            self.registered = False
            del self.writes[seq]
            if w.op is None:
                self._register()
                return
            w.seq = self.next_seq
            self.next_seq += 1
            w.attempted = False
            self.queued.append(w)
            if not any(x.op is None for x in self.writes.values()):
                self._register()
            return
        self._finish(w, code, message)

    def _finish(self, w: _Write, code: str, message: str) -> None:
        self.writes.pop(w.seq, None)
        self.by_rid.pop(w.rid, None)
        if w.deadline is not None:
            w.deadline.cancel()
        if w.op is None:
            if not code:
                self.registered = True
                queued, self.queued = self.queued, []
                for q in queued:
                    self._send_write(q)
            else:  # never sent: certainly not applied
                queued, self.queued = self.queued, []
                # the registration's own outcome may be unknown (a forward timeout): not the
                # writes', which waited for it and were never sent, so say only why it failed
                why = (f"no answer within {self.node_config.forward_timeout:g}s"
                       if code == errors.ForwardTimeout.code else f"{code}: {message}")
                e = errors.NoLeader(f"node {self.id} could not register its client session with the "
                                    f"group ({why}), so the write was not sent: nothing was applied; "
                                    "retry shortly")
                for q in queued:
                    self._finish(q, e.code, e.message)
            return
        w.reply(Reply(error=code, message=message))

    def _timed_out(self, w: _Write) -> None:
        queued = any(q is w for q in self.queued)
        if self.writes.get(w.seq) is not w and not queued:
            return
        if queued:
            # waiting for the session's registration, never sent: certainly not applied
            self.queued = [q for q in self.queued if q is not w]
            unsent = errors.NoLeader(f"node {self.id} could not register its client session with the "
                                     f"group within {self.node_config.forward_timeout:g}s, so the write was "
                                     "not sent: nothing was applied; retry shortly")
            self._finish(w, unsent.code, unsent.message)
            return
        self.stats.timeouts += 1
        e = errors.ForwardTimeout(f"the replicated group did not apply the write within "
                                  f"{self.node_config.forward_timeout:g}s; it may or may not apply it")
        self._finish(w, e.code, e.message)

    # --- reads ----------------------------------------------------------------------------------------

    def _read(self, op: Get, reply: ReplyFn) -> None:
        if self.raft.lead is None:
            e = self._no_leader()
            reply(Reply(error=e.code, message=e.message))
            return
        rid = self.next_rid
        self.next_rid += 1
        ctx = rid.to_bytes(8, "big")
        self.stats.reads += 1
        timer = self.rt.call_later(self.node_config.forward_timeout, lambda: self._read_timed_out(ctx))
        self.reads[ctx] = _Read(op, reply, timer)
        self._ask_read_index(ctx)

    def _ask_read_index(self, ctx: bytes) -> None:
        r = self.reads[ctx]
        r.asked_at = self.rt.now()

        def ask() -> None:
            try:
                self.raft.read_index(ctx)
            except NotLeader:
                pass  # no leader known: the retry timer asks again

        self._input(ask)

    def _answer_reads(self) -> None:
        applied = self.machine.applied
        confirmed = self.confirmed
        while confirmed and confirmed[0][0] <= applied:
            _, ctx = heapq.heappop(confirmed)
            r = self.reads.get(ctx)
            if r is not None:  # (else it timed out meanwhile)
                v = self.machine.store.get(r.op.key)
                if v is None:
                    e = errors.NotFound.of(r.op.key)
                    self._finish_read(ctx, Reply(error=e.code, message=e.message))
                else:
                    self._finish_read(ctx, Reply(value=v))

    def _finish_read(self, ctx: bytes, reply: Reply) -> None:
        r = self.reads.pop(ctx, None)
        if r is not None:
            r.deadline.cancel()
            r.reply(reply)

    def _read_timed_out(self, ctx: bytes) -> None:
        if ctx in self.reads:
            self.stats.timeouts += 1
            e = errors.ForwardTimeout(f"no read index was confirmed within {self.node_config.forward_timeout:g}s")
            self._finish_read(ctx, Reply(error=e.code, message=e.message))

    # --- the peer door ------------------------------------------------------------------------------

    def on_raft(self, src: str, msg: Any) -> None:
        why = malformed(msg, self.id) or ("" if msg.src == src else f"claims to be from {msg.src!r}")
        if why:
            self.stats.dropped += 1
            self.node_stats.malformed += 1
            return
        self._input(lambda: self.raft.step(msg))

    def on_forward(self, src: str, msg: ReplicaForward) -> None:
        op = msg.op
        if op is not None and (not op.key or len(op.key) > self.node_config.max_key_bytes or (
                type(op) is Put and len(op.value) > self.node_config.max_value_bytes)):
            self.send(src, ReplicaReply(request_id=msg.request_id, client=msg.client, seq=msg.seq, reply=Reply(
                error="bad_request", message="the forwarded write is over the limits")))
            return
        rid = msg.request_id

        def answer(code: str, message: str) -> None:
            self.send(src, ReplicaReply(request_id=rid, client=msg.client, seq=msg.seq,
                                        reply=Reply(error=code, message=message), leader=self.raft.lead or ""))

        self._input(lambda: self._propose(msg.client, msg.seq, msg.acked, op, answer))

    def on_reply(self, src: str, msg: ReplicaReply) -> None:
        seq = self.by_rid.get(msg.request_id)
        if seq is None or seq != msg.seq or msg.client != self.client:
            self.node_stats.late_replies += 1
            return
        self._answered(seq, msg.reply.error, msg.reply.message, msg.leader)

    # --- the admin door (through the node) ------------------------------------------------------

    def _leader_only(self, what: str) -> None:
        if self.raft.role != LEADER:
            lead = self.raft.lead
            raise errors.Conflict(f"{what} must be asked of the leader; " +
                                  (f"{lead} is" if lead else "no leader is known now"))

    def transfer_leader(self, to: str) -> None:
        self._leader_only("a leadership transfer")
        if to not in self.raft.log.conf().voters:
            raise errors.BadRequest(f"node {to} is not a voter of the group")
        self._input(lambda: self.raft.transfer_leader(to))

    def change(self, op: str, node: str) -> int:
        """Propose a one-server configuration change (``add-learner``, ``promote``, ``remove``);
        the index of its entry. Refusals are Conflict with the core's sentence."""
        self._leader_only("a configuration change")
        if self.busy:
            raise errors.TryAgain("the group is persisting a batch; ask again")
        try:
            _, index = self.raft.propose_conf_change(op, node)
        except ProposalRefused as e:
            raise errors.Conflict(str(e)) from None
        except ValueError as e:
            raise errors.BadRequest(str(e)) from None
        self._kick()
        return index

    def info(self) -> dict[str, Any]:
        r = self.raft
        conf = r.log.conf()
        return {
            "role": r.role, "term": r.term, "leader": r.lead, "commit": r.log.committed,
            "applied": self.machine.applied, "first_index": r.log.first_index(),
            "last_index": r.log.last_index(), "voters": list(conf.voters),
            "learners": list(conf.learners), "conf_index": r.log.last_conf_index(),
            "removed_at": r.removed_at if r.removed() else None, "pending_writes": len(self.writes) + len(self.queued),
            "pending_reads": len(self.reads), "keys": self.machine.store.count(),
            "stats": dict(vars(self.stats)),
            "raft_stats": dict(sorted(r.stats.items())), "raft_dropped": r.dropped,
        }
