"""Figure 3 checked on every run of the elections lab (sim/raftlab.py feeds sim.raftcheck).

The hand-built sequences and the harness runs are in tests/checker/test_raftprops.py; here the
SimPy lab itself: its runs show no violation while the checker sees leaders, crashes and terms,
a broken voter is caught, and the checker changes nothing in a run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kvcore.raft import Raft
from kvcore.raft.messages import RaftVote, RaftVoteResp
from sim.latency import Uniform
from sim.raftlab import ElectionSetup, run_election, run_elections, simulate

ROOT = Path(__file__).resolve().parents[2]


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


def test_a_voter_granting_every_vote_is_caught_in_the_lab(monkeypatch: pytest.MonkeyPatch) -> None:
    def grant(self: Raft, m: RaftVote) -> None:
        self.send(RaftVoteResp(term=m.term, src=self.id, dst=m.src, granted=True, pre_vote=m.pre_vote))
        if not m.pre_vote:
            self.election_elapsed = 0
            self.vote = m.src

    monkeypatch.setattr(Raft, "_handle_vote", grant)
    # near-equal timeouts split votes often; a split vote with a double-voting voter elects two
    setup = ElectionSetup(pre_vote=False, check_quorum=False, timeout_min=0.150, timeout_max=0.151, cap=2.0)
    found: tuple[str, ...] = ()
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
