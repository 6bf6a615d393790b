"""A restart never puts the applied index above the commit index (the audit's "applied above
the commit index" on a learner killed during ``add-node``).

etcd-io/raft refuses such a state at start ("applied(%d) is out of range [prevApplied,
committed]"). In this core the state cannot arise: a restarted core's applied index is its
snapshot's index, and its commit index is ``max(HardState.commit, snapshot index)`` (a snapshot
holds only committed entries, so raising the commit to it is safe: nothing uncommitted becomes
committed). These tests hold every restart path to ``snapshot <= applied <= committed <=
last_index`` and ``stabled <= last_index`` (kvcore/raft/log.py):

- a stored state whose snapshot survived but whose HardState did not (the snapshot marker and
  the HardState are two records of one batch, and a torn write can keep the first only);
- a learner (added with an empty configuration, as ``add-node`` does) crashed at every point of
  every Ready while it installs the leader's snapshot and the entries after it: before the save,
  after the save but before the sync, after the sync, after the send, after applying, each
  followed by a restart from what was synced; the invariant is checked on the restarted core and
  after every later Ready, and the learner then catches up.
"""

from __future__ import annotations

import random

import pytest

from kvcore.raft import MemoryRaftStorage, Raft, RaftConfig, Ready
from kvcore.raft.messages import ConfState, Entry, HardState, Snapshot, SnapshotMeta
from kvcore.raft.storage import StoredState

from .harness import Network, SafetyChecker

PHASES = ("before_save", "saved_not_synced", "synced_not_sent", "sent_not_applied", "applied_not_advanced")


def invariant_problems(r: Raft, machine_applied: int | None = None) -> list[str]:
    """What breaks ``snapshot <= applied <= committed <= last_index, stabled <= last_index``
    (and, given the state machine's own applied index, that it is within the same bounds)."""
    log = r.log
    snap, last = log.snapshot.meta.index, log.last_index()
    out = []
    if not snap <= log.applied <= log.committed <= last:
        out.append(f"{r.id}: snapshot {snap} <= applied {log.applied} <= committed {log.committed} "
                   f"<= last {last} does not hold")
    if not log.stabled <= last:
        out.append(f"{r.id}: stabled {log.stabled} > last {last}")
    if machine_applied is not None and not machine_applied <= log.committed:
        out.append(f"{r.id}: the state machine applied {machine_applied} > committed {log.committed}")
    return out


def restarted(stored: StoredState, node: str = "4") -> Raft:
    return Raft(RaftConfig(id=node), stored, random.Random(0))


def test_a_snapshot_that_survived_its_hard_state_raises_the_commit_index_to_it() -> None:
    """The snapshot (index 10) is durable, the HardState that recorded commit 10 is not (an older
    one says commit 0): the restart applies from the snapshot and commits at least up to it."""
    conf = ConfState(voters=("1", "2", "3"), learners=("4",))
    snap = Snapshot(meta=SnapshotMeta(index=10, term=2, conf=conf), data=b"image@10")
    stored = StoredState(HardState(term=2, vote=None, commit=0), snap,
                         [Entry(term=2, index=11, data=b"x"), Entry(term=2, index=12, data=b"y")])
    r = restarted(stored)
    assert r.log.applied == 10 and r.log.committed == 10 and r.log.last_index() == 12
    assert invariant_problems(r) == []
    rd = r.ready()
    assert rd.committed_entries == ()  # 11 and 12 are not known committed: not applied
    assert rd.hard_state is None  # nothing to persist: the commit index equals the snapshot's


def test_a_hard_state_commit_above_the_snapshot_is_kept() -> None:
    conf = ConfState(voters=("1",))
    snap = Snapshot(meta=SnapshotMeta(index=5, term=1, conf=conf), data=b"image@5")
    stored = StoredState(HardState(term=1, vote="1", commit=7), snap,
                         [Entry(term=1, index=i) for i in (6, 7, 8)])
    r = restarted(stored, "1")
    assert (r.log.applied, r.log.committed) == (5, 7) and invariant_problems(r) == []
    assert [e.index for e in r.ready().committed_entries] == [6, 7]


def _grown_group(entries: int = 12) -> Network:
    """Three voters, ``entries`` applied entries, each voter's log compacted to its applied index
    (so a newcomer must get the leader's snapshot), and learner 4 added with an empty
    configuration (``add-node``: it learns the voters from the snapshot)."""
    net = Network(["1", "2", "3"], max_snapshot_chunk=64)
    net.elect("1")
    for i in range(entries):
        net.propose("1", f"v{i}".encode())
    net.stabilize()
    for nid in ("1", "2", "3"):
        r = net.raft(nid)
        r.compact(r.log.applied, f"image@{r.log.applied}".encode() * 40)  # five chunks
    net.stabilize()
    net.add_node("4", MemoryRaftStorage([]))
    net.raft("1").propose_conf_change("add-learner", "4")
    for i in range(3):  # entries after the snapshot, sent once it is installed
        net.propose("1", f"after{i}".encode())
    return net


class LearnerCrash:
    """Crash learner 4 at its ``at``-th Ready, at ``phase``; everything else follows the
    contract (:meth:`Network.process_ready`)."""

    def __init__(self, net: Network, at: int, phase: str) -> None:
        self.net = net
        self.at = at
        self.phase = phase
        self.readies = 0
        self.crashed = False
        self.problems: list[str] = []

    def machine_applied(self) -> int:
        n = self.net.nodes["4"]
        snap = n.raft.log.snapshot.meta.index
        return max([snap, *(e.index for e in n.applied)])

    def check(self) -> None:
        n = self.net.nodes["4"]
        if n.up:
            self.problems += invariant_problems(n.raft, self.machine_applied())

    def process(self) -> Ready | None:
        net, node = self.net, self.net.nodes["4"]
        if not node.up or not node.raft.has_ready():
            return None
        if self.crashed or self.readies != self.at:
            self.readies += 1
            rd = net.process_ready("4")
            self.check()
            return rd
        self.readies += 1
        self.crashed = True
        rd = node.raft.ready()
        if self.phase == "before_save":
            pass
        elif self.phase == "saved_not_synced":
            node.storage.save(rd.hard_state, rd.entries, rd.snapshot or rd.compacted)
        else:
            rd.persist(node.storage)
            if self.phase != "synced_not_sent":
                for m in rd.messages:
                    net.send(m)
                if self.phase == "applied_not_advanced":
                    if rd.snapshot is not None:
                        node.snapshot_data = rd.snapshot.data
                        node.applied = [e for e in node.applied if e.index <= rd.snapshot.meta.index]
                    node.applied += list(rd.committed_entries)
        net.crash("4")
        net.restart("4")
        self.check()
        return rd

    def run(self, rounds: int = 400) -> None:
        net = self.net
        for _ in range(rounds):
            moved = False
            for nid in ("1", "2", "3"):
                moved |= net.process_ready(nid) is not None
            moved |= self.process() is not None
            if net.inflight:
                net.deliver_all()
                moved = True
            if not moved:
                lead, learner = net.raft("1"), net.raft("4")
                if learner.log.applied == lead.log.committed and learner.log.conf() == lead.log.conf():
                    return  # caught up
                # idle: a heartbeat round brings a restarted learner the commit index again
                net.tick("1")


@pytest.mark.parametrize("phase", PHASES)
def test_a_learner_crashed_at_any_point_while_it_installs_a_snapshot_restarts_within_the_invariant(
        phase: str) -> None:
    checked = 0
    at = 0
    while True:
        net = _grown_group()
        crash = LearnerCrash(net, at, phase)
        safety = SafetyChecker()
        crash.run()
        for _ in range(3):
            net.tick_all(2)  # heartbeats: the learner learns the commit index again
        safety.check(net)
        crash.check()
        assert crash.problems == [], (phase, at, crash.problems)
        if not crash.crashed:
            break  # every Ready of the learner's catch-up has been a crash point
        lead, learner = net.raft("1"), net.raft("4")
        assert learner.log.committed == lead.log.committed, (phase, at)
        assert learner.log.applied == lead.log.committed, (phase, at)
        assert learner.log.conf() == lead.log.conf()
        checked += 1
        at += 1
    assert checked >= 6  # the rejected append, the snapshot's five chunks, the appends after it


def test_random_crashes_of_a_learner_under_writes_keep_the_invariant() -> None:
    """Writes keep coming (and the leader compacts now and then) while learner 4 is crashed at
    random Readies and phases; the invariant holds on every Ready and after every restart."""
    for seed in range(20):
        rng = random.Random(seed)
        net = _grown_group()
        problems: list[str] = []
        for step in range(60):
            if rng.random() < 0.5:
                net.propose("1", f"w{seed}.{step}".encode())
            if rng.random() < 0.1:
                lead = net.raft("1")
                if lead.log.applied > lead.log.snapshot.meta.index:
                    lead.compact(lead.log.applied, f"image@{lead.log.applied}".encode())
            crash = LearnerCrash(net, rng.randrange(4), rng.choice(PHASES))
            crash.run(rounds=rng.randrange(1, 8))
            problems += crash.problems
        # heartbeats bring the learner the commit index; a snapshot chunk lost in a crash is
        # sent again after snapshot_resend_tick (election_tick, 10) ticks, not on a heartbeat
        for _ in range(8):
            net.tick_all(2)
        SafetyChecker().check(net)
        r = net.raft("4")
        problems += invariant_problems(r)
        assert problems == [], (seed, problems)
        assert r.log.committed == net.raft("1").log.committed, seed
