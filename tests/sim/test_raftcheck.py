"""Figure 3 checked on real Raft cores, fed from their Ready (sim.raftcheck), and in the lab.

Real :class:`kvcore.raft.Raft` cores (tests/kvcore/raft/harness.py) fed through
:func:`sim.raftcheck.feed_from_ready` across many seeds of elections, partitions and crashes
that lose unsynced writes show no violation; deliberately broken cores (a voter that grants every
vote, an application that sends before it syncs, a leader that commits an old term's entry by
counting replicas: Figure 8) are caught. Then the elections lab (sim/raftlab.py), which checks
every run: no violation, a broken voter caught, and the same verdicts under any hash seed. The
hand-built event sequences are in tests/checker/test_raftprops.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import kvcore.raft.leader as raft_leader
from checker import RaftProperties
from checker.raftprops import ELECTION_SAFETY, LEADER_COMPLETENESS, STATE_MACHINE_SAFETY
from kvcore.raft import LEADER, MemoryRaftStorage, NotLeader, ProposalRefused, Raft, Ready
from kvcore.raft.messages import RaftAppend, RaftVote, RaftVoteResp
from sim.latency import Uniform
from sim.raftcheck import feed_from_ready, feed_restart
from sim.raftlab import ElectionSetup, run_election, run_elections, simulate
from tests.kvcore.raft.harness import Network, Node
from tests.kvcore.raft.test_safety_random import run_seed


def props_of(chk: RaftProperties) -> list[str]:
    return [v.prop for v in chk.records()]


ROOT = Path(__file__).resolve().parents[2]


# --- real Raft cores, fed from their Ready -----------------------------------------------------


class CheckedNetwork(Network):
    """The harness's network with every node's Ready fed to a RaftProperties as it is handled
    (after the writes, before ``advance``), crashes reported, restarts fed the loaded state."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.props = RaftProperties()
        self.clock = 0.0
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def add_node(self, node_id: str, storage: MemoryRaftStorage) -> Node:
        node = super().add_node(node_id, storage)
        feed_restart(self.props, node_id, storage.load(), self.clock)
        raft, advance = node.raft, node.raft.advance

        def fed_advance(rd: Ready, raft: Raft = raft) -> None:
            feed_from_ready(self.props, node_id, raft, rd, self.clock)
            advance(rd)

        raft.advance = fed_advance  # type: ignore[method-assign]
        return node

    def crash(self, node_id: str) -> None:
        super().crash(node_id)
        self.props.crashed(node_id, self.clock)


def drive(net: CheckedNetwork, seed: int, steps: int = 1500, crash_p: float = 0.01) -> None:
    """Random ticks, deliveries in any order with loss and duplication, proposals, partitions,
    crashes (some right before a sync, losing its writes), restarts and compactions."""
    rng = random.Random(seed)
    proposals = 0
    for step in range(steps):
        net.clock = float(step)
        ids = list(net.nodes)
        node = rng.choice(ids)
        x = rng.random()
        if x < 0.25:
            net.tick(node)
        elif x < 0.55 and net.inflight:
            m = net.inflight.pop(rng.randrange(len(net.inflight)))
            if rng.random() < 0.05:
                net.inflight.append(m)
            if rng.random() > 0.05:
                net.deliver(m)
        elif x < 0.8:
            net.process_ready(node, crash_before_sync=rng.random() < crash_p * 5)
        elif x < 0.88:
            for lead in net.leaders()[:1]:
                try:
                    net.propose(lead, f"{seed}/{proposals}".encode())
                    proposals += 1
                except (NotLeader, ProposalRefused):
                    pass
        elif x < 0.88 + crash_p:
            if net.nodes[node].up:
                net.crash(node)
        elif x < 0.92:
            for i in ids:
                if not net.nodes[i].up:
                    net.restart(i)
        elif x < 0.95:
            if rng.random() < 0.5:
                net.recover()
            else:
                net.cut(node, rng.choice(ids))
        elif x < 0.96:
            r = net.raft(node)
            if net.nodes[node].up and r.log.applied > r.log.snapshot.meta.index and not r.has_ready():
                r.compact(r.log.applied, f"image@{r.log.applied}".encode())


@pytest.mark.parametrize("seed", range(40), ids=lambda s: f"seed_{s}")
def test_real_cores_show_no_violation_under_random_faults(seed: int) -> None:
    net = CheckedNetwork([str(i) for i in range(1, 6)], seed=seed, election_tick=6)
    drive(net, seed, steps=3000)
    assert net.props.violations() == [], f"seed {seed}"
    assert net.props.notes() == [], f"seed {seed}"


@pytest.mark.parametrize("options", [{"pre_vote": False, "check_quorum": False}, {"max_snapshot_chunk": 3}],
                         ids=["plain", "tiny-chunks"])
def test_real_cores_show_no_violation_with_more_crashes(options: dict[str, object]) -> None:
    for seed in range(100, 110):
        net = CheckedNetwork(["1", "2", "3"], seed=seed, election_tick=6, **options)
        drive(net, seed, steps=2000, crash_p=0.03)
        assert net.props.violations() == [], f"seed {seed}"


def test_real_cores_with_membership_changes_transfers_and_reads_show_no_violation() -> None:
    """The core's own randomized safety runs (tests/kvcore/raft/test_safety_random.py: learners
    added and promoted, voters removed, leadership transferred, ReadIndex reads), fed here too."""
    nets: list[CheckedNetwork] = []

    class Kept(CheckedNetwork):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)
            nets.append(self)

    for seed in range(200, 205):
        run_seed(seed, steps=2500, n=5, net_cls=Kept, membership=True)
        assert nets[-1].props.violations() == [] and nets[-1].props.notes() == [], f"seed {seed}"
    assert sum(net.props.summary()["leader_terms"] for net in nets) >= 10


def test_the_random_runs_are_not_vacuous() -> None:
    """The runs above elect leaders in several terms, commit and apply, crash and compact."""
    totals = {"leader_terms": 0, "committed": 0, "applied": 0}
    for seed in range(5):
        net = CheckedNetwork([str(i) for i in range(1, 6)], seed=seed, election_tick=6)
        drive(net, seed)
        for k in totals:
            totals[k] += net.props.summary()[k]
    assert totals["leader_terms"] >= 10 and totals["committed"] >= 50 and totals["applied"] >= 20, totals


@contextmanager
def voters_grant_everything() -> Iterator[None]:
    """A broken voter: it grants every vote it is asked for (no votedFor, no log check)."""
    def grant(self: Raft, m: RaftVote) -> None:
        self.send(RaftVoteResp(term=m.term, src=self.id, dst=m.src, granted=True, pre_vote=m.pre_vote))
        if not m.pre_vote:
            self.election_elapsed = 0
            self.vote = m.src

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Raft, "_handle_vote", grant)
        yield


def test_a_voter_that_grants_every_vote_is_caught() -> None:
    found: list[str] = []
    with voters_grant_everything():
        for seed in range(40):
            net = CheckedNetwork(["1", "2", "3"], seed=seed, election_tick=6, pre_vote=False, check_quorum=False)
            try:
                drive(net, seed, steps=1500, crash_p=0.03)
            except AssertionError:
                pass  # the core's own guard ("truncating committed entry") fired after the checker's
            found = net.props.violations()
            if found:
                break
    assert found, "40 seeds of a voter granting every vote showed no violation"
    assert found[0].split(":")[0] in {ELECTION_SAFETY, LEADER_COMPLETENESS, STATE_MACHINE_SAFETY}


class SendBeforeSync(CheckedNetwork):
    """A broken application: it sends a Ready's messages before its writes are synced, so a
    crash can lose a vote or an entry that a peer already counted."""

    persist_before_send = False


def test_sending_before_syncing_is_caught() -> None:
    for seed in range(60):
        net = SendBeforeSync(["1", "2", "3"], seed=seed, election_tick=6, pre_vote=False, check_quorum=False)
        try:
            drive(net, seed, steps=3000, crash_p=0.03)
        except AssertionError:
            pass  # the core's own guard fired too (after the checker's verdict)
        if net.props.violations():
            return
    raise AssertionError("60 seeds of sends before syncs showed no violation")


@contextmanager
def leaders_commit_by_counting_old_terms() -> Iterator[None]:
    """A broken leader: it commits whatever a majority holds, of any term (Figure 8's mistake)."""
    def maybe_commit(r: Raft) -> bool:
        matches = {n: pr.match for n, pr in r.prs.items()}
        n = raft_leader.quorum_index(matches, r.log.conf().voters)
        if n <= r.log.committed:
            return False
        r.log.commit_to(n)
        raft_leader.broadcast_append(r)
        return True

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(raft_leader, "maybe_commit", maybe_commit)
        yield


def figure8_cores(broken: bool) -> CheckedNetwork:
    """Figure 8 (a)-(d) on real cores (as tests/kvcore/raft/test_paper_replication.py plays it),
    S1 applying whatever it committed before it crashes in (d)."""
    net = CheckedNetwork(["1", "2", "3", "4", "5"], pre_vote=False, check_quorum=False)
    net.elect("5")
    net.clock = 1.0
    net.campaign_round("1", "2345")  # (a) S1 leads term 2, its entry at 2 reaches S2 only
    for n in "345":
        net.cut("1", n)
    net.stabilize()
    net.clock = 2.0
    net.crash("1")  # (b) S5 leads term 3 with S3, S4; 3/2 on its disk only
    net.recover()
    net.cut("5", "2")
    net.campaign_round("5", "34")
    net.process_ready("5")
    net.crash("5")
    net.inflight.clear()
    net.clock = 3.0
    net.restart("1")  # (c) S1 leads term 4 and brings its 2/2 to S3
    net.recover()
    while net.raft("1").role != LEADER:
        net.campaign_round("1", "234")
    net.cut("1", "4")
    for _ in range(4):
        net.process_ready("1")
        net.inflight = [dataclasses.replace(m, entries=tuple(e for e in m.entries if e.index <= 2))
                        if isinstance(m, RaftAppend) else m for m in net.inflight]
        for n in "23":
            net.deliver_all(n)
            net.process_ready(n)
        net.deliver_all("1")
    assert net.raft("1").log.committed == (2 if broken else 1)
    net.process_ready("1")  # S1 applies what it committed ...
    net.inflight.clear()
    net.crash("1")  # ... and crashes: (d) S5 restarts and is elected
    net.restart("5")
    net.clock = 4.0
    for _ in range(5):
        if net.raft("5").role == LEADER:
            break
        net.raft("5").campaign()
        try:
            net.stabilize(limit=300)
        except AssertionError:
            if not broken:
                raise  # the broken core never settles: S2 and S3 knew 2/2 was committed
    return net


def test_figure8_on_real_cores_passes() -> None:
    net = figure8_cores(broken=False)
    assert net.raft("5").role == LEADER
    assert net.props.violations() == []


def test_figure8_on_a_core_that_commits_by_counting_old_terms_is_caught() -> None:
    with leaders_commit_by_counting_old_terms():
        net = figure8_cores(broken=True)
    assert net.raft("5").role == LEADER
    assert props_of(net.props) == [LEADER_COMPLETENESS, STATE_MACHINE_SAFETY], net.props.violations()
    assert net.props.violations()[0] == (
        "Leader Completeness: node 5 became leader of term 5 at 4 without the entry committed at index 2 "
        "(term 2, known committed from node 1 at 3); it holds term 3 there.")


# --- the elections lab checks every run -------------------------------------------------------


@pytest.mark.parametrize("setup", [
    ElectionSetup(),
    ElectionSetup(failed=2, fresh_timers=True, timeout_min=0.3, timeout_max=0.6, latency=Uniform(0.03, 0.04)),
    ElectionSetup(stale=2, pre_vote=False, check_quorum=False, timeout_min=0.150, timeout_max=0.155),
], ids=["figure16", "availsim-two-failed", "stale-split-votes"])
def test_lab_runs_show_no_figure3_violation(setup: ElectionSetup) -> None:
    stats = run_elections(setup, runs=15, seed=3)
    assert stats.summary()["figure3_violations"] == 0
    assert all(r.violations == () for r in stats.runs)


def test_the_lab_checker_sees_the_run() -> None:
    g = simulate(ElectionSetup(stale=1), seed=5)
    seen = g.props.summary()
    assert g.props.violations() == [] and g.props.notes() == []
    assert seen["leader_terms"] >= 2  # the first leader and its successor
    assert seen["committed"] >= 1  # the first leader's no-op at least
    assert g.props.leading(g.leader or "") is not None


def test_a_voter_granting_every_vote_is_caught_in_the_lab() -> None:
    # near-equal timeouts split votes often; a split vote with a double-voting voter elects two
    setup = ElectionSetup(pre_vote=False, check_quorum=False, timeout_min=0.150, timeout_max=0.151, cap=2.0)
    found: tuple[str, ...] = ()
    with voters_grant_everything():
        for run in range(30):
            found = run_election(setup, seed=1, run=run).violations
            if found:
                break
    assert found and found[0].startswith("Election Safety: nodes s"), found


def test_checking_changes_nothing_in_a_run() -> None:
    """The digest of a run is the trace's: the checker reads Readies and sends nothing."""
    a = run_election(ElectionSetup(), seed=9, run=2)
    b = run_election(ElectionSetup(), seed=9, run=2)
    assert a == b and a.violations == ()


_BROKEN_RUNS = """
import json
from kvcore.raft import Raft
from kvcore.raft.messages import RaftVoteResp
from sim.raftlab import ElectionSetup, run_election

def grant(self, m):
    self.send(RaftVoteResp(term=m.term, src=self.id, dst=m.src, granted=True, pre_vote=m.pre_vote))
    if not m.pre_vote:
        self.election_elapsed = 0
        self.vote = m.src

Raft._handle_vote = grant
setup = ElectionSetup(pre_vote=False, check_quorum=False, timeout_min=0.150, timeout_max=0.151, cap=2.0)
print(json.dumps([list(run_election(setup, seed=1, run=run).violations) for run in range(6)]))
"""


def test_the_verdicts_are_the_same_under_any_hash_seed() -> None:
    """Deterministic: the same runs give the same sentences in any process (the checker never
    lets a set's or a str hash's order reach its output)."""
    outs = []
    for hashseed in ("0", "977"):
        env = dict(os.environ, PYTHONHASHSEED=hashseed, PYTHONPATH=str(ROOT))
        r = subprocess.run([sys.executable, "-c", _BROKEN_RUNS], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        outs.append(r.stdout)
    assert outs[0] == outs[1] and any(json.loads(outs[0])), outs[0]
