"""The Raft elections lab (sim/raftlab.py, ``python -m sim raft-elections``)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from kvcore.raft import LEADER
from sim.latency import Constant
from sim.raftlab import ElectionSetup, main, run_election, run_elections, simulate, split_vote_formula

ROOT = Path(__file__).resolve().parents[2]
D = 0.005  # one-way latency of the exact-timing tests


def test_a_leader_is_elected_and_every_live_server_learns_it() -> None:
    setup = ElectionSetup(failed=2, cap=30.0)
    for run in range(5):
        g = simulate(setup, seed=3, run=run)
        assert g.leader is not None and g.done_at is not None
        live = g.live()
        assert len(live) == 3 and g.servers[g.leader].up
        assert g.servers[g.leader].raft.role == LEADER
        assert g.servers[g.leader].raft.term > (g.crash_term or 0)
        assert all(s.raft.lead == g.leader for s in live)
        down = [s for s in g.servers.values() if not s.up]
        assert len(down) == 2 and g.leader not in {s.id for s in down}
        assert g.late_ticks == 0


@pytest.mark.parametrize("pre_vote", [False, True])
def test_time_is_measured_from_the_crash_fresh_timers(pre_vote: bool) -> None:
    """With fresh timers and a constant latency d, the earliest possible election is the minimum
    timeout plus the round trips: (PreVote), RequestVote, then the leader's first message; a run
    without a split vote ends by the maximum timeout plus the same (and a tick)."""
    setup = ElectionSetup(timeout_min=0.100, timeout_max=0.150, latency=Constant(D), fresh_timers=True,
                          pre_vote=pre_vote, check_quorum=pre_vote)
    trips = (5 if pre_vote else 3) * D
    for run in range(20):
        g = simulate(setup, seed=5, run=run)
        r = run_election(setup, seed=5, run=run)
        assert g.done_at is not None and g.crash_at > 0
        assert r.elapsed == pytest.approx(g.done_at - g.crash_at)
        assert r.elapsed >= 0.100 + trips - 1e-9
        if r.split_votes == 0 and r.prevotes_lost == 0:
            assert r.elapsed <= 0.150 + trips + 2 * setup.tick
        assert r.late_ticks == 0


def test_crash_within_a_heartbeat_bounds() -> None:
    """Without fresh timers the crash falls within a heartbeat interval of the last heartbeat, so
    the first timeout comes between (min - heartbeat) and max after the crash (the paper: "the
    smallest possible downtime was about half of the minimum election timeout")."""
    setup = ElectionSetup(timeout_min=0.100, timeout_max=0.150, latency=Constant(D), pre_vote=False,
                          check_quorum=False)
    times = [run_election(setup, seed=9, run=i) for i in range(30)]
    assert all(t.elapsed >= 0.100 - 0.050 + 3 * D - 1e-9 for t in times)
    assert min(t.elapsed for t in times) < 0.100  # some crashes fell late in the interval
    assert all(t.elapsed <= 0.150 + 3 * D + 2 * setup.tick for t in times if not t.split_votes)


@pytest.mark.parametrize("pre_vote", [False, True])
def test_stale_followers_cannot_win_and_hear_the_new_leader(pre_vote: bool) -> None:
    """The paper's runs gave two of the four live servers a shorter log: they lack an entry the
    leader and two others hold (so it is committed), and §5.4.1's restriction keeps them from
    winning; they still hear the new leader, which also brings them the entry."""
    setup = ElectionSetup(stale=2, timeout_min=0.150, timeout_max=0.155, pre_vote=pre_vote,
                          check_quorum=pre_vote)
    stale_first = 0
    for run in range(12):
        g = simulate(setup, seed=2, run=run)
        assert len(g.withheld) == 2 and g.leader is not None and g.leader not in g.withheld
        assert all(s.up for s in (g.servers[i] for i in g.withheld))
        assert all(s.raft.lead == g.leader for s in g.live())
        # the entry the stale ones lacked is on every live server that could win: the leader has it
        assert any(e.data == b"entry the stale followers lack" for e in g.servers[g.leader].raft.log.entries)
        stale_first += any(s.raft.stats["campaigns"] for s in (g.servers[i] for i in g.withheld))
    assert stale_first > 0  # some runs had a stale server campaign first, and lose
    assert "--stale must be" in " ".join(ElectionSetup(stale=5, failed=1).problems())


def test_failed_majority_gives_capped_runs() -> None:
    for pre_vote in (True, False):
        setup = ElectionSetup(servers=5, failed=3, cap=2.0, pre_vote=pre_vote, check_quorum=pre_vote)
        stats = run_elections(setup, runs=3, seed=1)
        s = stats.summary()
        assert s["capped"] == 3 and s["max_ms"] == 2000.0 and s["mean_ms"] == 2000.0
        assert all(r.capped and r.leader is None for r in stats.runs)
        if not pre_vote:  # candidates keep trying, and every term is a split vote
            assert s["election_terms"] > 3 and s["split_vote_rate"] == 1.0
        else:  # PreVote never lets a minority start a term
            assert s["election_terms"] == 0 and s["prevotes_lost"] > 0


def test_same_seed_same_numbers_different_seed_different() -> None:
    setup = ElectionSetup(timeout_min=0.150, timeout_max=0.155)
    a = run_elections(setup, runs=8, seed=11)
    b = run_elections(setup, runs=8, seed=11)
    c = run_elections(setup, runs=8, seed=12)
    assert a.runs == b.runs and a.summary() == b.summary()
    assert [r.digest for r in a.runs] != [r.digest for r in c.runs]


def _cli(*args: str, hashseed: str = "0") -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONHASHSEED=hashseed, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "sim", "raft-elections", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_json_last_line_and_determinism_across_hash_seeds() -> None:
    args = ("--runs", "10", "--timeout-min", "0.15", "--timeout-max", "0.2", "--seed", "4", "--json")
    a, b = _cli(*args, hashseed="0"), _cli(*args, hashseed="4242")
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    last = json.loads(a.stdout.strip().splitlines()[-1])
    for key in ("runs", "mean_ms", "median_ms", "p99_ms", "max_ms", "split_vote_rate", "capped"):
        assert key in last, key
    assert last["runs"] == 10 and last["capped"] == 0 and last["late_ticks"] == 0
    assert last["median_ms"] <= last["p99_ms"] <= last["max_ms"]
    assert a.stdout == b.stdout


@pytest.mark.parametrize("args, words", [
    (["--timeout-min", "0.3", "--timeout-max", "0.2"], "must not exceed --timeout-max"),
    (["--failed", "5", "--servers", "5"], "--failed must be"),
    (["--failed", "0"], "--failed must be"),
    (["--timeout-min", "-0.1"], "must be positive"),
    (["--heartbeat", "-1"], "--heartbeat must be positive"),
    (["--heartbeat", "0.2"], "must be shorter than the minimum election timeout"),
    (["--runs", "0"], "--runs must be at least 1"),
    (["--cap", "-5"], "--cap must be positive"),
    (["--latency", "uniform:-1,2"], "negative argument"),
    (["--servers", "0"], "--servers must be at least 1"),
    (["--stale", "5", "--failed", "1"], "--stale must be within 0 and the live servers"),
    (["--stale", "-1"], "--stale must be within 0 and the live servers"),
])
def test_bad_arguments_give_a_sentence_and_exit_2(args: list[str], words: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


def test_registered_as_a_subcommand() -> None:
    r = _cli("--runs", "2", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["runs"] == 2


def test_split_vote_formula_gives_the_thesis_examples() -> None:
    """Thesis §9.2: five servers, four available, a 100 ms range: about 0.06%, 5.2% and 18.1%
    split votes for one-way latencies of 1, 10 and 20 ms; with two failures and l = 0.2 "about
    half"; a direct draw of the model (first c of s uniform timers within l) agrees."""
    assert split_vote_formula(5, 4, 0.01) == pytest.approx(0.0006, abs=0.00005)
    assert split_vote_formula(5, 4, 0.1) == pytest.approx(0.052, abs=0.0005)
    assert split_vote_formula(5, 4, 0.2) == pytest.approx(0.181, abs=0.0005)
    assert split_vote_formula(5, 3, 0.2) == pytest.approx(0.49, abs=0.01)
    assert split_vote_formula(5, 4, 1.5) == 1.0
    rng = random.Random(1)
    n, s, lat, trials = 5, 4, 0.15, 20000
    c = s - n // 2 + 1
    hits = 0
    for _ in range(trials):
        xs = sorted(rng.random() for _ in range(s))
        hits += xs[c - 1] - xs[0] <= lat
    assert abs(hits / trials - split_vote_formula(n, s, lat)) < 0.01


def test_percentiles_are_nearest_rank() -> None:
    from sim.raftlab import ElectionRun, ElectionStats

    runs = [ElectionRun(i / 1000, False, "s1", 1, 0, 0, 0, "") for i in range(1, 1001)]
    st = ElectionStats(ElectionSetup(), runs)
    assert st.percentile(99.9) == pytest.approx(999.0) and st.percentile(99) == pytest.approx(990.0)
    assert st.percentile(100) == pytest.approx(1000.0) and st.percentile(50) == pytest.approx(500.0)
