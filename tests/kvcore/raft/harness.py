"""An in-memory, deterministic network of Raft nodes for tests (etcd-io/raft's ``network``).

Each :class:`Node` is a Raft core, its :class:`MemoryRaftStorage` and a tiny state machine (the
list of applied entries plus the last snapshot loaded). :class:`Network` holds the messages in
flight in one FIFO list and offers the fault verbs: ``drop`` (one direction), ``cut`` (both),
``isolate``, ``recover``, ``crash`` (lose unsynced writes, forget volatile state) and
``restart``. ``process_ready`` follows the Ready contract exactly: save, sync when asked, then
send, then apply, then advance. ``stabilize`` loops until nothing moves.

:class:`SafetyChecker` checks the Raft paper's Figure 3 properties after every step.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from kvcore.raft import LEADER, MemoryRaftStorage, Raft, RaftConfig, ReadState, Ready
from kvcore.raft.messages import Entry, RaftMessage


@dataclass
class Node:
    id: str
    storage: MemoryRaftStorage
    raft: Raft
    applied: list[Entry] = field(default_factory=list)
    snapshot_data: bytes = b""
    up: bool = True
    #: SIGSTOP: the process neither runs nor reads; messages to it wait in the network
    paused: bool = False


class Network:
    #: the contract's "persist before send"; a subclass that sets it False is a broken
    #: application which sends a Ready's messages before its writes are synced
    persist_before_send = True

    def __init__(self, ids: Iterable[str], seed: int = 0, learners: Iterable[str] = (),
                 logger: Callable[[str], None] | None = None, **cfg: object) -> None:
        self.ids = list(ids)
        self.learners = list(learners)
        self.rng = random.Random(seed)
        self.cfg = cfg
        self.node_cfg: dict[str, dict[str, object]] = {}
        self.logger = logger
        self.nodes: dict[str, Node] = {}
        self.inflight: list[RaftMessage] = []
        self.blocked: set[tuple[str, str]] = set()
        self.drop_rate = 0.0
        self.on_apply: Callable[[Node, Entry], None] | None = None
        self.read_results: list[tuple[str, ReadState]] = []
        for i in [*self.ids, *self.learners]:
            self.add_node(i, MemoryRaftStorage(self.ids, self.learners))

    def config(self, node_id: str) -> RaftConfig:
        cfg = {**self.cfg, **self.node_cfg.get(node_id, {})}
        return RaftConfig(id=node_id, logger=self.logger, **cfg)  # type: ignore[arg-type]

    def add_node(self, node_id: str, storage: MemoryRaftStorage) -> Node:
        raft = Raft(self.config(node_id), storage.load(), random.Random(f"{node_id}/{self.rng.random()}"))
        node = Node(node_id, storage, raft, snapshot_data=storage.load().snapshot.data)
        self.nodes[node_id] = node
        return node

    # --- faults ---------------------------------------------------------------------------

    def drop(self, a: str, b: str) -> None:
        self.blocked.add((a, b))

    def cut(self, a: str, b: str) -> None:
        self.blocked |= {(a, b), (b, a)}

    def isolate(self, a: str) -> None:
        for b in self.nodes:
            if b != a:
                self.cut(a, b)

    def recover(self) -> None:
        self.blocked.clear()

    def pause(self, node_id: str) -> None:
        """The process is stopped (SIGSTOP): it neither ticks nor reads nor sends, and every
        message sent to it waits in the network (a socket buffer) until :meth:`resume`."""
        self.nodes[node_id].paused = True

    def resume(self, node_id: str) -> None:
        """SIGCONT: the node reads its whole backlog at once and answers it in one Ready."""
        self.nodes[node_id].paused = False
        self.deliver_all(node_id)
        self.process_ready(node_id)

    def crash(self, node_id: str) -> None:
        """The process dies: unsynced writes are lost, volatile state and queued output too."""
        node = self.nodes[node_id]
        node.storage.crash()
        node.up = False
        self.inflight = [m for m in self.inflight if m.dst != node_id]

    def restart(self, node_id: str) -> None:
        old = self.nodes[node_id]
        node = self.add_node(node_id, old.storage)
        node.applied = []  # the state machine is rebuilt from the snapshot, then re-applied

    # --- running --------------------------------------------------------------------------

    def raft(self, node_id: str) -> Raft:
        return self.nodes[node_id].raft

    def process_ready(self, node_id: str, crash_before_sync: bool = False) -> Ready | None:
        node = self.nodes[node_id]
        if not node.up or node.paused or not node.raft.has_ready():
            return None
        rd = node.raft.ready()
        if not self.persist_before_send:
            for m in rd.messages:
                self.send(m)
        if crash_before_sync:
            node.storage.save(rd.hard_state, rd.entries, rd.snapshot or rd.compacted)  # never synced
            self.crash(node_id)
            return rd
        rd.persist(node.storage)
        if self.persist_before_send:
            for m in rd.messages:
                self.send(m)
        if rd.snapshot is not None:
            node.snapshot_data = rd.snapshot.data
            node.applied = [e for e in node.applied if e.index <= rd.snapshot.meta.index]
        self.read_results += [(node_id, s) for s in rd.read_states]
        for e in rd.committed_entries:
            node.applied.append(e)
            if self.on_apply is not None:
                self.on_apply(node, e)
        node.raft.advance(rd)
        return rd

    def send(self, m: RaftMessage) -> None:
        if (m.src, m.dst) in self.blocked or m.dst not in self.nodes:
            return
        if self.drop_rate and self.rng.random() < self.drop_rate:
            return
        self.inflight.append(m)

    def deliver(self, m: RaftMessage) -> None:
        node = self.nodes.get(m.dst)
        if node is not None and node.up:
            node.raft.step(m)

    def deliver_all(self, to: str | None = None) -> list[RaftMessage]:
        if to is None:
            held = {i for i, n in self.nodes.items() if n.paused}
            msgs = [m for m in self.inflight if m.dst not in held]
            self.inflight = [m for m in self.inflight if m.dst in held]
        elif self.nodes[to].paused:
            return []
        else:
            msgs = [m for m in self.inflight if m.dst == to]
            self.inflight = [m for m in self.inflight if m.dst != to]
        for m in msgs:
            self.deliver(m)
        return msgs

    def stabilize(self, limit: int = 10_000) -> None:
        for _ in range(limit):
            moved = False
            for i in list(self.nodes):
                moved |= self.process_ready(i) is not None
            if self.inflight and self.deliver_all():
                moved = True
            if not moved:
                return
        raise AssertionError("the network did not stabilize")

    def tick(self, node_id: str, n: int = 1) -> None:
        for _ in range(n):
            if self.nodes[node_id].up and not self.nodes[node_id].paused:
                self.raft(node_id).tick()

    def tick_all(self, n: int = 1) -> None:
        for _ in range(n):
            for i in self.nodes:
                self.tick(i)
            self.stabilize()

    def elect(self, node_id: str) -> None:
        self.raft(node_id).campaign()
        self.stabilize()
        assert self.raft(node_id).role == LEADER, f"{node_id} did not win: {self.raft(node_id).role}"

    def campaign_round(self, node_id: str, voters: Iterable[str]) -> None:
        """One election round heard by ``voters`` only: ``node_id`` campaigns, each voter gets
        and answers its requests, the answers come back; no other message moves."""
        self.raft(node_id).campaign()
        self.process_ready(node_id)
        for n in voters:
            self.deliver_all(n)
            self.process_ready(n)
        self.deliver_all(node_id)

    def lead_before_noop_commits(self, node_id: str, rounds: int = 20) -> None:
        """Make ``node_id`` leader, stopping as soon as it is one: its no-op is not committed yet."""
        self.raft(node_id).campaign()
        for _ in range(rounds):
            self.process_ready(node_id)
            self.deliver_all()
            for n in self.nodes:
                if n != node_id:
                    self.process_ready(n)
            if self.raft(node_id).role == LEADER:
                return

    def leaders(self) -> list[str]:
        return [i for i, n in self.nodes.items() if n.up and n.raft.role == LEADER]

    def propose(self, node_id: str, data: bytes) -> tuple[int, int]:
        return self.raft(node_id).propose(data)


class SafetyChecker:
    """Figure 3 of the Raft paper, checked on the live state after every step."""

    def __init__(self) -> None:
        self.leader_of_term: dict[int, str] = {}
        self.leader_logs: dict[tuple[int, str], list[Entry]] = {}
        self.committed: dict[int, Entry] = {}
        self.applied: dict[int, Entry] = {}

    @staticmethod
    def log_of(raft: Raft) -> list[Entry]:
        return list(raft.log.entries)

    def check(self, net: Network) -> None:
        for node in net.nodes.values():
            r = node.raft
            if not node.up:
                continue
            log = self.log_of(r)
            if r.role == LEADER:
                # Election Safety: at most one leader can be elected in a given term (§5.2)
                who = self.leader_of_term.setdefault(r.term, r.id)
                assert who == r.id, f"election safety: {who} and {r.id} both led term {r.term}"
                # Leader Append-Only: a leader never overwrites or deletes entries (§5.3)
                prev = self.leader_logs.get((r.term, r.id), [])
                cut = r.log.snapshot.meta.index
                assert [e for e in prev if e.index > cut] == log[:len([e for e in prev if e.index > cut])], \
                    f"leader append-only violated by {r.id} in term {r.term}"
                self.leader_logs[(r.term, r.id)] = log
                # Leader Completeness: a leader holds every entry committed in earlier terms (§5.4)
                for idx, e in self.committed.items():
                    if e.term < r.term and idx > cut:
                        assert idx <= r.log.last_index() and r.log.entry(idx) == e, \
                            f"leader completeness: {r.id} (term {r.term}) lacks committed {e}"
            for idx in range(r.log.first_index(), r.log.committed + 1):
                e = r.log.entry(idx)
                seen = self.committed.setdefault(idx, e)
                assert seen == e, f"two different entries committed at {idx}: {seen} and {e}"
            for e in node.applied:
                # State Machine Safety: no two servers apply different entries at one index
                seen = self.applied.setdefault(e.index, e)
                assert seen == e, f"state machine safety at {e.index}: {seen} vs {e} on {r.id}"
        self.check_log_matching(net)

    def check_log_matching(self, net: Network) -> None:
        """Log Matching: if two logs hold an entry with the same index and term, the logs are
        identical in all entries up through that index (§5.3)."""
        logs = [{e.index: e for e in n.raft.log.entries} for n in net.nodes.values() if n.up]
        for a_i, a in enumerate(logs):
            for b in logs[a_i + 1:]:
                common = sorted(set(a) & set(b), reverse=True)
                top = next((i for i in common if a[i].term == b[i].term), None)
                if top is None:
                    continue
                for i in common:
                    if i <= top:
                        assert a[i] == b[i], f"log matching violated at {i} (agree at {top})"
