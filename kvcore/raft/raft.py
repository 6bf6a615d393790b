"""The Raft state machine: messages, ticks and proposals in; a Ready out (etcd-io/raft's shape).

Theory of operation
-------------------
:class:`Raft` is pure: it never does I/O, never reads a clock (time is ``tick()``) and draws its
randomness (the election timeout, §5.2) from the ``random.Random`` it was given, so a run is a
function of its inputs. Inputs: ``step(msg)`` for every peer message, ``tick()``, ``propose()``,
``propose_conf_change()``, ``read_index()``, ``transfer_leader()``, ``campaign()`` and
``compact()``. Outputs are collected and handed out by ``ready()`` as one :class:`Ready`:

1. ``snapshot`` / ``compacted`` / ``entries`` / ``hard_state``: save them to the RaftStorage,
   and ``sync()`` when ``must_sync`` (``rd.persist(storage)`` does both);
2. ``messages``: send them, only **after** step 1 (persist before send: a vote response,
   a candidate's RequestVote and a follower's AppendEntries reply all leave only once the term,
   vote and entries they vouch for are durable; Figure 2 "respond to RPCs only after updating
   stable storage");
3. ``snapshot`` (from a leader) then ``committed_entries``: apply them to the state machine;
   ``read_states``: answer reads once the applied index reaches each one's index (§6.4);
4. ``advance(rd)``: tell the core that all of it was done. Only now does a leader count its own
   copy of the new entries toward commitment (entries "stored on a majority" must be on stable
   storage, so the leader's copy counts only once synced).

Nothing may be stepped between ``ready()`` and ``advance()``. Rules are split by role: the
election and term rules are here, the leader's in :mod:`kvcore.raft.leader`, a follower's in
:mod:`kvcore.raft.follower`. A peer can never crash the core: a malformed message is counted in
``dropped`` and ignored (:func:`malformed` says why).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from kvcore.raft import follower, leader
from kvcore.raft.config import LEASE, RaftConfig
from kvcore.raft.log import RaftLog
from kvcore.raft.messages import (
    CONF,
    CONF_OPS,
    NORMAL,
    ConfChange,
    Entry,
    HardState,
    RaftAppend,
    RaftAppendResp,
    RaftHeartbeat,
    RaftMessage,
    RaftRemoved,
    RaftSnapshot,
    RaftVote,
    RaftVoteResp,
    Snapshot,
)
from kvcore.raft.progress import Progress, vote_result
from kvcore.raft.storage import RaftStorage, StoredState

FOLLOWER = "follower"
PRE_CANDIDATE = "pre-candidate"
CANDIDATE = "candidate"
LEADER = "leader"


class NotLeader(Exception):
    """A proposal or read reached a node that is not the leader; ``leader`` is its best guess."""

    def __init__(self, node: str, leader: str | None) -> None:
        super().__init__(f"node {node} is not the leader" + (f"; {leader} is" if leader else "; no leader is known"))
        self.leader = leader


class ProposalRefused(Exception):
    """The leader refused a proposal now (a transfer or a configuration change in progress, ...);
    certainly not appended. The sentence says why."""


@dataclass(frozen=True)
class ReadState:
    """A confirmed read: once ``applied >= index`` the read for ``ctx`` is linearizable (§6.4)."""

    index: int
    ctx: bytes


@dataclass(frozen=True)
class SoftState:
    lead: str | None
    role: str


@dataclass(frozen=True)
class Ready:
    soft_state: SoftState | None
    hard_state: HardState | None
    entries: tuple[Entry, ...]
    snapshot: Snapshot | None
    compacted: Snapshot | None
    committed_entries: tuple[Entry, ...]
    messages: tuple[RaftMessage, ...]
    read_states: tuple[ReadState, ...]
    must_sync: bool

    def persist(self, storage: RaftStorage) -> None:
        """Step 1 of the contract: save this Ready's writes (the snapshot, or what a
        compaction covers, then the entries and the HardState), and sync when ``must_sync``."""
        storage.save(self.hard_state, self.entries, self.snapshot or self.compacted)
        if self.must_sync:
            storage.sync()


class Raft:
    def __init__(self, config: RaftConfig, stored: StoredState, rng: random.Random) -> None:
        problems = config.validate()
        if problems:
            raise ValueError(" ".join(problems))
        self.cfg = config
        self.id = config.id
        self.rng = rng
        hs = stored.hard_state
        self.log = RaftLog(stored.snapshot, stored.entries)
        self.log.commit_to(min(hs.commit, self.log.last_index()))
        self.term = hs.term
        self.vote = hs.vote
        self.lead: str | None = None
        self.role = FOLLOWER
        self.prs: dict[str, Progress] = {}
        self.votes: dict[str, bool] = {}
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_timeout = config.election_tick
        self.ticks = 0  # monotonic tick count: the stamp of heartbeats (lease reads)
        self.lead_transferee: str | None = None
        self.msgs: list[RaftMessage] = []
        self.read_states: list[ReadState] = []
        self.reads_waiting: list[tuple[bytes, str]] = []  # (ctx, asker) before a commit in term
        # reads being confirmed: heartbeat context -> (read index, asker, asker's ctx, acks)
        self.read_queue: dict[bytes, tuple[int, str, bytes, set[str]]] = {}
        self.read_seq = 0
        self.snap_buf: tuple[int, int, bytearray] | None = None  # (index, term, bytes so far)
        self.pending_snapshot: Snapshot | None = None
        self.pending_compacted: Snapshot | None = None
        self.dropped = 0
        #: the index of a committed configuration known to exclude this node (None: none known):
        #: one it applied, or one a member named in a RaftRemoved. Volatile: after a restart one
        #: round of pre-votes learns it again. See :meth:`removed`.
        self.removed_at: int | None = None
        #: event counters for metrics (elections, leaderships, rejections, snapshots, ...)
        self.stats: Counter[str] = Counter()
        self._prev_hs = HardState(term=self.term, vote=self.vote, commit=self.log.committed)
        self._prev_soft = SoftState(None, FOLLOWER)
        self._note_own_removal(self.log.entries[:self.log.committed - self.log.snapshot.meta.index])
        self.become_follower(self.term, None)

    # --- small helpers ---------------------------------------------------------------------

    def logf(self, text: str, notable: bool = False) -> None:
        """A trace line; ``notable``: one an operator wants too (:attr:`RaftConfig.notable`)."""
        cfg = self.cfg
        if cfg.logger is not None:
            cfg.logger(f"{self.id} {text}")
        if notable and cfg.notable is not None:
            cfg.notable(f"{self.id} {text}")

    def send(self, m: RaftMessage) -> None:
        self.msgs.append(m)

    def hard_state(self) -> HardState:
        return HardState(term=self.term, vote=self.vote, commit=self.log.committed)

    def promotable(self) -> bool:
        """Only a voter of the latest configuration may campaign (thesis §4.1, §4.2.1), and not
        one that knows a newer committed configuration removed it (:meth:`removed`)."""
        return self.id in self.log.conf().voters and not self.removed()

    def removed(self) -> bool:
        """Whether this node knows it was removed from the group: a configuration committed at
        :attr:`removed_at` excludes it, and its log holds no newer one (a later configuration
        that adds it back, from a leader's append or snapshot, ends it by itself)."""
        return self.removed_at is not None and self.removed_at >= self.log.last_conf_index()

    def committed_in_term(self) -> bool:
        return self.log.term(self.log.committed) == self.term

    # --- roles (Figure 2, "Rules for Servers") ----------------------------------------------

    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = None
        self.lead = None
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        # §5.2: "election timeouts are chosen randomly from a fixed interval"
        if self.cfg.election_tick_max:
            self.randomized_timeout = self.rng.randint(self.cfg.election_tick, self.cfg.election_tick_max)
        else:
            self.randomized_timeout = self.cfg.election_tick + self.rng.randrange(self.cfg.election_tick)
        self.votes = {}
        self.lead_transferee = None
        self.reads_waiting.clear()
        self.read_queue.clear()

    def become_follower(self, term: int, lead: str | None) -> None:
        # a pre-candidate that lost its PreVote round changed nothing anyone needs to hear of (a
        # server whose log is behind the others' is refused so every election timeout)
        notable = term != self.term or self.role != PRE_CANDIDATE
        self._reset(term)
        self.role = FOLLOWER
        self.lead = lead
        self.prs = {}
        self.logf(f"became follower at term {self.term}", notable=notable)

    def become_pre_candidate(self) -> None:
        # thesis §9.6: a pre-candidate changes neither its term nor its vote
        self.role = PRE_CANDIDATE
        self.lead = None
        self.votes = {}
        self.prs = {}
        self.logf(f"became pre-candidate at term {self.term}")

    def become_candidate(self) -> None:
        # Figure 2, Candidates: "increment currentTerm, vote for self, reset election timer"
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = CANDIDATE
        self.prs = {}
        self.logf(f"became candidate at term {self.term}", notable=True)

    def become_leader(self) -> None:
        lead_term = self.term
        self._reset(lead_term)
        self.role = LEADER
        self.lead = self.id
        self.prs = {}
        leader.sync_progress(self)
        self.prs[self.id].match = self.log.stabled
        self.stats["became_leader"] += 1
        self.logf(f"became leader at term {self.term}", notable=True)
        # §8 / thesis §6.4: a no-op entry at the start of the term, so the leader learns which
        # entries are committed (Figure 8: only an entry of its own term commits by counting).
        self.log.append([Entry(term=self.term, index=self.log.last_index() + 1)])

    # --- inputs ------------------------------------------------------------------------------

    def tick(self) -> None:
        self.ticks += 1
        if self.role == LEADER:
            leader.tick_leader(self)
            return
        self.election_elapsed += 1
        # Figure 2, Followers: "if election timeout elapses without receiving AppendEntries from
        # current leader or granting vote to candidate: convert to candidate"
        if self.promotable() and self.election_elapsed >= self.randomized_timeout:
            self.election_elapsed = 0
            self.campaign()

    def campaign(self, transfer: bool = False) -> None:
        """Start an election now (etcd's MsgHup): a PreVote round first when configured."""
        if not self.promotable():
            self.logf("is not a voter and cannot campaign")
            return
        if self.role == LEADER:
            self.logf("is already the leader and does not campaign")
            return
        self.stats["campaigns"] += 1
        pre_vote = self.cfg.pre_vote and not transfer
        # a PreVote round changes nothing yet (a server cut off from the rest runs one every
        # election timeout): it is notable once won, as "became candidate"
        self.logf(f"is starting a new election at term {self.term}", notable=not pre_vote)
        if pre_vote:
            self.become_pre_candidate()
            pre, term = True, self.term + 1
        else:
            self.become_candidate()
            pre, term = False, self.term
        self.votes = {self.id: True}
        if vote_result(self.votes, self.log.conf().voters) == "won":  # a single voter
            self._won(pre)
            return
        for v in self.log.conf().voters:
            if v != self.id:
                self.logf(f"[logterm: {self.log.last_term()}, index: {self.log.last_index()}] sent "
                          f"{'pre-vote' if pre else 'vote'} request to {v} at term {self.term}")
                self.send(RaftVote(term=term, src=self.id, dst=v, last_index=self.log.last_index(),
                                   last_term=self.log.last_term(), pre_vote=pre, transfer=transfer))

    def _won(self, pre: bool) -> None:
        if pre:
            self.become_candidate()
            self.votes = {self.id: True}
            if vote_result(self.votes, self.log.conf().voters) == "won":
                self.become_leader()
                return
            for v in self.log.conf().voters:
                if v != self.id:
                    self.send(RaftVote(term=self.term, src=self.id, dst=v, last_index=self.log.last_index(),
                                       last_term=self.log.last_term()))
        else:
            self.become_leader()
            leader.broadcast_append(self)

    def step(self, m: RaftMessage) -> None:
        problem = malformed(m, self.id)
        if problem:
            self.dropped += 1
            self.stats["dropped"] += 1
            self.logf(f"dropped a malformed {type(m).__name__} from {m.src}: {problem}")
            return
        if isinstance(m, RaftRemoved):
            self._step_removed(m)  # about the configuration, whatever the terms
            return
        if isinstance(m, RaftVote):
            self._answer_non_member(m)
        if m.term > self.term and not self._step_higher_term(m):
            return
        if m.term < self.term:
            self._step_lower_term(m)
            return
        if isinstance(m, RaftVote):
            self._handle_vote(m)
        elif self.role == LEADER:
            leader.step_leader(self, m)
        elif self.role in (PRE_CANDIDATE, CANDIDATE):
            self._step_candidate(m)
        else:
            follower.step_follower(self, m)

    def _step_higher_term(self, m: RaftMessage) -> bool:
        """§5.1: "If RPC request or response contains term T > currentTerm: set currentTerm =
        T, convert to follower" — with the §9.6 exceptions. False when the message is ignored."""
        if isinstance(m, RaftVote):
            # A node that just (re)started may have acked a lease holder's heartbeat before it
            # crashed: in lease mode it waits one election timeout before voting, so leases hold
            # across a follower's restart (thesis §6.4.1 assumes voters keep their promise).
            fresh = self.cfg.read_only == LEASE and self.ticks < self.cfg.election_tick
            in_lease = (self.cfg.check_quorum and (self.lead is not None or fresh)
                        and self.election_elapsed < self.cfg.election_tick)
            if in_lease and not m.transfer:
                # thesis §9.6 (leader stickiness): a server that heard from a leader within the
                # minimum election timeout ignores (pre)vote requests; §3.10 transfers are exempt
                self.logf(f"ignored {'pre-vote' if m.pre_vote else 'vote'} from {m.src} at term {self.term}: "
                          f"lease is not expired (remaining ticks: {self.cfg.election_tick - self.election_elapsed})")
                return False
            if not m.pre_vote:  # a PreVote never changes the receiver's term (§9.6)
                self.logf(f"received a vote request with higher term from {m.src} [term: {m.term}]")
                self.become_follower(m.term, None)
            return True
        if isinstance(m, RaftVoteResp) and m.pre_vote:
            if not m.granted:  # the rejecter's term is newer than ours
                self.become_follower(m.term, None)
            return True  # a granted PreVote answers in the term we would campaign in
        lead = m.src if isinstance(m, RaftAppend | RaftHeartbeat | RaftSnapshot) else None
        self.logf(f"received a {type(m).__name__} with higher term from {m.src} [term: {m.term}]")
        self.become_follower(m.term, lead)
        return True

    def _step_lower_term(self, m: RaftMessage) -> None:
        if (self.cfg.check_quorum or self.cfg.pre_vote) and isinstance(m, RaftAppend | RaftHeartbeat):
            # A stale leader (e.g. one back from a partition that our term outgrew) learns our
            # term and steps down; without this, with PreVote, it would never hear of it (etcd).
            self.send(RaftAppendResp(term=self.term, src=self.id, dst=m.src, index=0))
        elif isinstance(m, RaftVote) and m.pre_vote:
            self.send(RaftVoteResp(term=self.term, src=self.id, dst=m.src, granted=False, pre_vote=True))
        # §5.1: "If a server receives a request with a stale term number, it rejects the request"

    def _note_own_removal(self, committed: Sequence[Entry]) -> None:
        """Committed entries that remove this node set :attr:`removed_at` (it knows it was
        removed from its own log, as a leader does when it steps down, thesis §4.2.2)."""
        for e in committed:
            if e.kind == CONF:
                cc = ConfChange.decode(e.data)
                if cc.op == "remove" and cc.node == self.id and (self.removed_at or 0) < e.index:
                    self.removed_at = e.index
                    self.logf(f"applied its own removal from the configuration at index {e.index}", notable=True)

    def _answer_non_member(self, m: RaftVote) -> None:
        """Thesis §4.2.3: a server removed while it was down or cut off never hears of it (the
        leader no longer sends to it), and it campaigns on, election timeout after election
        timeout. PreVote and leader stickiness keep it from disrupting anyone; this tells it.
        Only a configuration this node knows committed counts: one still uncommitted may yet be
        rolled back. The vote itself is then handled as before (a server not in our committed
        configuration may be one added by an entry we have not received yet)."""
        log = self.log
        conf, at = log.conf(), log.last_conf_index()
        if m.src in conf.voters or m.src in conf.learners or not log.conf_committed():
            return
        self.stats["removed_told"] += 1
        self.logf(f"told {m.src} that the configuration committed at index {at} does not include it",
                  notable=True)
        self.send(RaftRemoved(term=self.term, src=self.id, dst=m.src, conf_index=at))

    def _step_removed(self, m: RaftRemoved) -> None:
        mine = self.log.last_conf_index()
        if m.conf_index < mine:
            # our log holds a newer configuration than the one the member committed: perhaps one
            # that adds us back, which that member has not received yet
            self.logf(f"ignored {m.src}'s notice of removal at index {m.conf_index}: "
                      f"our configuration is at index {mine}")
            return
        if self.removed_at is None or m.conf_index > self.removed_at:
            self.removed_at = m.conf_index
            self.stats["removed_notices"] += 1
            self.logf(f"learned from {m.src} that the configuration committed at index {m.conf_index} "
                      "removed it, and stops campaigning", notable=True)
        if self.role in (PRE_CANDIDATE, CANDIDATE):
            self.become_follower(self.term, None)

    def _handle_vote(self, m: RaftVote) -> None:
        # Figure 2, RequestVote receiver: "1. Reply false if term < currentTerm" (done in step);
        # "2. If votedFor is null or candidateId, and candidate's log is at least as up-to-date
        # as receiver's log, grant vote" (§5.2, §5.4.1)
        can_vote = (self.vote == m.src or (self.vote is None and self.lead is None)
                    or (m.pre_vote and m.term > self.term))
        kind = "pre-vote" if m.pre_vote else "vote"
        if can_vote and self.log.is_up_to_date(m.last_index, m.last_term):
            self.logf(f"cast {kind} for {m.src} [logterm: {m.last_term}, index: {m.last_index}] at term {self.term}")
            self.send(RaftVoteResp(term=m.term, src=self.id, dst=m.src, granted=True, pre_vote=m.pre_vote))
            if not m.pre_vote:
                self.election_elapsed = 0
                self.vote = m.src  # persisted (Ready.hard_state) before the response leaves
        else:
            self.logf(f"rejected {kind} from {m.src} [logterm: {m.last_term}, index: {m.last_index}] at term {self.term}")
            self.send(RaftVoteResp(term=self.term, src=self.id, dst=m.src, granted=False, pre_vote=m.pre_vote))

    def _step_candidate(self, m: RaftMessage) -> None:
        if isinstance(m, RaftAppend | RaftHeartbeat | RaftSnapshot):
            # Figure 2, Candidates: "If AppendEntries RPC received from new leader: convert to follower"
            self.become_follower(m.term, m.src)
            follower.step_follower(self, m)
        elif isinstance(m, RaftVoteResp) and m.pre_vote == (self.role == PRE_CANDIDATE):
            self.votes.setdefault(m.src, m.granted)
            result = vote_result(self.votes, self.log.conf().voters)
            granted = sum(1 for g in self.votes.values() if g)
            self.logf(f"has received {granted} {'pre-vote' if m.pre_vote else 'vote'} grants and "
                      f"{len(self.votes) - granted} rejections")
            if result == "won":
                self._won(m.pre_vote)
            elif result == "lost":
                self.become_follower(self.term, None)

    def propose(self, data: bytes) -> tuple[int, int]:
        """Append a command (leader only); returns its (term, index). Committed when it appears
        in ``committed_entries`` with that term (a different term there means it was lost)."""
        return leader.propose_entries(self, [Entry(term=self.term, index=0, data=data)])

    def propose_conf_change(self, op: str, node: str) -> tuple[int, int]:
        """Propose a one-server configuration change (thesis §4.1); see :mod:`kvcore.raft.leader`."""
        if op not in CONF_OPS:
            raise ValueError(f"unknown configuration change {op!r}; expected one of {', '.join(CONF_OPS)}")
        if not node or " " in node:
            raise ValueError(f"node id {node!r} must be non-empty without spaces")
        return leader.propose_conf_change(self, ConfChange(op=op, node=node))

    def read_index(self, ctx: bytes) -> None:
        """Ask for a linearizable read point (thesis §6.4); the answer comes as a ReadState.

        A follower forwards the request to its leader. A request is dropped, unanswered, when
        leadership changes before it is confirmed (as etcd-io/raft does): retry after a timeout.
        """
        if not ctx:
            raise ValueError("a read context must be non-empty bytes")
        leader.read_index(self, ctx, self.id)

    def transfer_leader(self, to: str) -> None:
        leader.transfer_leader(self, to)

    def compact(self, index: int, data: bytes) -> None:
        """The state machine's image at ``index`` (applied) replaces the log up to it (§7)."""
        self.pending_compacted = self.log.compact(index, data)

    # --- output -------------------------------------------------------------------------------

    def soft_state(self) -> SoftState:
        return SoftState(self.lead, self.role)

    def has_ready(self) -> bool:
        return bool(self.msgs or self.read_states or self.log.unstable() or self.pending_snapshot
                    or self.pending_compacted or self.log.committed > self.log.applied
                    or self.hard_state() != self._prev_hs or self.soft_state() != self._prev_soft)

    def ready(self) -> Ready:
        hs = self.hard_state()
        soft = self.soft_state()
        entries = tuple(self.log.unstable())
        hs_out = hs if hs != self._prev_hs else None
        must_sync = bool(entries or self.pending_snapshot or self.pending_compacted or (
            hs_out is not None and (hs.term, hs.vote) != (self._prev_hs.term, self._prev_hs.vote)))
        return Ready(
            soft_state=soft if soft != self._prev_soft else None, hard_state=hs_out, entries=entries,
            snapshot=self.pending_snapshot, compacted=self.pending_compacted,
            committed_entries=tuple(self.log.to_apply()), messages=tuple(self.msgs),
            read_states=tuple(self.read_states), must_sync=must_sync)

    def advance(self, rd: Ready) -> None:
        """Everything in ``rd`` was persisted, sent and applied."""
        if rd.hard_state is not None:
            self._prev_hs = rd.hard_state
        if rd.soft_state is not None:
            self._prev_soft = rd.soft_state
        if rd.entries:
            last = rd.entries[-1]
            if self.log.match_term(last.index, last.term):
                self.log.stabled = max(self.log.stabled, last.index)
        if rd.committed_entries:
            self.log.applied = max(self.log.applied, rd.committed_entries[-1].index)
            self._note_own_removal(rd.committed_entries)
        if rd.snapshot is not None and self.pending_snapshot is rd.snapshot:
            self.pending_snapshot = None
        if rd.compacted is not None and self.pending_compacted is rd.compacted:
            self.pending_compacted = None
        del self.msgs[:len(rd.messages)]
        del self.read_states[:len(rd.read_states)]
        if self.role == LEADER and self.id in self.prs:
            # the leader's own copy counts only once it is on stable storage
            if self.prs[self.id].maybe_update(self.log.stabled):
                leader.maybe_commit(self)


def malformed(m: RaftMessage, me: str) -> str:
    """Why a peer message cannot be taken ("" when it can)."""
    if m.dst != me:
        return f"addressed to {m.dst!r}, not {me!r}"
    if m.term < 0 or not m.src:
        return "negative term or empty sender"
    if isinstance(m, RaftAppend):
        if m.prev_index < 0 or m.prev_term < 0 or m.commit < 0:
            return "negative index"
        for n, e in enumerate(m.entries):
            if e.index != m.prev_index + 1 + n:
                return "entries are not contiguous after prev_index"
            if e.term > m.term or e.term < (m.entries[n - 1].term if n else m.prev_term):
                return "entry terms are not non-decreasing up to the message term"
            if e.kind != NORMAL and (e.kind != CONF or not _conf_change_ok(e.data)):
                # a follower decodes a CONF entry when it appends it (thesis §4.1: a server
                # uses the latest configuration in its log), so a bad one must not get that far
                return f"entry {e.index} is not a normal entry or a valid configuration change"
    if isinstance(m, RaftSnapshot) and (m.offset < 0 or m.meta.index < 1 or not m.meta.conf.voters):
        return "bad snapshot chunk"
    return ""


def _conf_change_ok(data: bytes) -> bool:
    """Whether a CONF entry's data is ``"OP NODE"`` with a known op and a non-empty node."""
    try:
        cc = ConfChange.decode(data)
    except UnicodeDecodeError:
        return False
    return cc.op in CONF_OPS and bool(cc.node) and " " not in cc.node
