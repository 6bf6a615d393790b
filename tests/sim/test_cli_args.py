"""The sim's command lines refuse what they cannot run, before they run anything, with one
sentence and exit status 2 (never a traceback, a hang, or a whole run thrown away); they do
what their flags say (``--ops`` exactly, ``--replicas`` alone); a sweep's "reproduce:" command
runs the very configuration that failed; and a sweep's exit status and summary say what
happened to every seed."""

from __future__ import annotations

import re
import shlex
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sim.__main__ as sim_main
import sim.sweepcli as sweepcli
from kvcore.replica import ReplicaConfig
from sim.cliargs import writable_file
from sim.clients import split_ops
from sim.figures import main as figures_main
from sim.nemesis import ALIASES, KINDS, parse_kinds
from sim.scenario import run_default
from sim.sweep import MAX_SEEDS, RunConfig, SeedResult, SweepResult, run_seed, simulate


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``python -m sim ARGV`` in this process; it must exit 2; its stderr's last line."""
    with pytest.raises(SystemExit) as e:
        sim_main.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert re.match(r"python -m sim( [a-z-]+)?: error: ", last), err
    return last


@pytest.fixture
def no_sweep(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, RunConfig]]:
    """``python -m sim check`` with the sweep itself replaced by a stub that records its seeds
    and config and runs nothing (a flag that is not refused then exits 0)."""
    calls: list[tuple[Any, RunConfig]] = []

    def fake(seeds: Any, cfg: RunConfig, **_: Any) -> SweepResult:
        calls.append((seeds, cfg))
        return SweepResult(cfg, [])

    monkeypatch.setattr(sweepcli, "sweep", fake)
    return calls


# --- 1. the reproduce command runs the same configuration ---------------------------------------


def _parse_back(flags: str) -> RunConfig:
    return sweepcli.config_from_args(sweepcli.build_parser().parse_args(shlex.split(flags)))


@settings(max_examples=200, deadline=None)
@given(duration=st.floats(min_value=2.0, max_value=86_400.0, exclude_min=True),
       loss=st.floats(min_value=0.0, max_value=1.0),
       check_timeout=st.floats(min_value=1e-9, max_value=1e6))
def test_cli_args_give_back_every_float_exactly(duration: float, loss: float, check_timeout: float) -> None:
    cfg = RunConfig(duration=duration, loss=loss, check_timeout=check_timeout, nemesis="partition, crash",
                    durable=False, sync_time="uniform:0.001,0.002", ops=123, clients=7)
    assert _parse_back(cfg.cli_args()) == cfg


def test_the_reproduce_line_of_a_violation_names_its_duration_in_full_and_gives_its_digest() -> None:
    """``--duration 7.1234567`` was printed as ``7.12346``, a run with another digest."""
    cfg = RunConfig(nemesis="crash", duration=7.1234567, durable=False)
    seed = 2
    r = run_seed(seed, cfg)
    assert r.verdict == "not_linearizable", r.describe()
    line = next(x for x in SweepResult(cfg, [r]).summary().splitlines() if x.startswith("reproduce:"))
    assert "--duration 7.1234567 " in line
    argv = shlex.split(line.removeprefix("reproduce: python -m sim check "))
    args = sweepcli.build_parser().parse_args(argv)
    assert args.seed_list == [seed] and sweepcli.config_from_args(args) == cfg
    assert run_seed(seed, sweepcli.config_from_args(args)).digest == r.digest


# --- 2. --ops exactly ---------------------------------------------------------------------------


def test_split_ops_shares_out_exactly() -> None:
    assert split_ops(50, 3) == [17, 17, 16]
    assert split_ops(3000, 3) == [1000, 1000, 1000]
    assert split_ops(1, 3) == [1, 0, 0]
    assert split_ops(0, 3) == [0, 0, 0]
    with pytest.raises(ValueError):
        split_ops(5, 0)


@pytest.mark.parametrize("ops", [0, 1, 2, 50])
def test_the_main_run_does_exactly_ops_operations(ops: int) -> None:
    _, rep = run_default(seed=2, ops=ops, duration=2.0)
    assert len(rep.history) == ops
    counts = [sum(1 for op in rep.history if op.process == i) for i in range(3)]
    assert counts == split_ops(ops, 3)


def test_a_sweep_seed_does_exactly_ops_operations() -> None:
    run = simulate(1, RunConfig(ops=23, clients=5, duration=4.0, nemesis="none"))
    assert len(run.history) == 23
    reg = simulate(1, RunConfig(ops=7, clients=3, duration=4.0, nemesis="none", workload="register"))
    assert len(reg.history) == 7


def test_runs_whose_ops_divide_among_the_clients_keep_their_digests() -> None:
    """Pinned before the ops were shared out exactly: when every client does the same count,
    nothing changed (python -m sim's default run; python -m sim check's default seed 1)."""
    _, rep = run_default()
    assert rep.digest == "49bfd8c775b99b3c78ba0ecdc384219c"
    assert run_seed(1, RunConfig()).digest == "408a1f0686ae24288325ae516f886b8f"


# --- 3. numbers: finite and in range ------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("argv", [
    ["--latency", "const:nan"], ["--latency", "exp:0"], ["--latency", "lognormal:0,0.5"],
    ["--latency", "uniform:2,1"], ["--latency", "uniform:0.001,inf"],
    ["--duration", "inf"], ["--duration", "nan"], ["--check-timeout", "nan"], ["--loss", "nan"],
    ["--duration", "1e9"], ["--duration", "86400.5"],  # days of CPU, with no output (a simulated day at most)
])
def test_the_main_run_refuses_numbers_it_cannot_run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    _refused([*argv, "--ops", "30"], capsys)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("argv", [
    ["--sync-time", "exp:0"], ["--sync-time", "const:nan"], ["--sync-time", "uniform:0.001,inf"],
    ["--duration", "inf"], ["--duration", "nan"], ["--check-timeout", "nan"], ["--check-timeout", "inf"],
    ["--loss", "nan"], ["--duration", "2.01"], ["--duration", "2.49"], ["--duration", "1e9"],
])
def test_check_refuses_numbers_it_cannot_run(argv: list[str], capsys: pytest.CaptureFixture[str],
                                             no_sweep: list[Any]) -> None:
    _refused(["check", *argv, "--seeds", "1"], capsys)
    assert no_sweep == []


@pytest.mark.timeout(60)
@pytest.mark.parametrize("argv", [
    ["--timeout-min", "nan"], ["--timeout-max", "inf"], ["--tick", "nan"], ["--cap", "nan"],
    ["--cap", "inf"], ["--heartbeat", "nan"], ["--latency", "exp:0"], ["--latency", "const:nan"],
])
def test_raft_elections_refuses_numbers_it_cannot_run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    _refused(["raft-elections", *argv, "--runs", "2"], capsys)


# --- 4. outputs are tried before the run --------------------------------------------------------


def test_an_unwritable_history_is_refused_before_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    def ran(**_: Any) -> None:
        raise AssertionError("the run started")

    monkeypatch.setattr(sim_main, "run_default", ran)
    line = _refused(["--ops", "30", "--history", str(tmp_path / "no-such-dir" / "h.jsonl")], capsys)
    assert "--history" in line and "No such file or directory" in line
    assert "is a directory" in _refused(["--ops", "30", "--history", str(tmp_path)], capsys)


def test_a_history_file_is_tried_without_harm(tmp_path: Path) -> None:
    old = tmp_path / "old.jsonl"
    old.write_text("kept\n")
    assert writable_file(old) == "" and old.read_text() == "kept\n"
    assert writable_file(tmp_path / "new.jsonl") == "" and not (tmp_path / "new.jsonl").exists()


def test_check_and_figures_refuse_an_out_that_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        no_sweep: list[Any]) -> None:
    afile = tmp_path / "afile"
    afile.write_text("")
    assert "is a file, not a directory" in _refused(["check", "--seeds", "2", "--out", str(afile)], capsys)
    assert "Not a directory" in _refused(["check", "--seeds", "2", "--out", str(afile / "sub")], capsys)
    assert no_sweep == []
    with pytest.raises(SystemExit) as e:
        figures_main(["--small", "--only", "partition", "--out", str(afile)])
    assert e.value.code == 2
    assert "--out" in capsys.readouterr().err and not list(tmp_path.glob("*.png"))


# --- 5. seeds: a range, and a cap -----------------------------------------------------------------


def test_seeds_go_to_the_sweep_as_a_range_and_past_the_cap_are_refused(
        capsys: pytest.CaptureFixture[str], no_sweep: list[tuple[Any, RunConfig]]) -> None:
    assert sim_main.main(["check", "--seeds", str(MAX_SEEDS), "--first-seed", "7"]) == 0
    assert no_sweep[-1][0] == range(7, 7 + MAX_SEEDS)
    capsys.readouterr()
    assert "--seeds must be within 1 and" in _refused(["check", "--seeds", str(MAX_SEEDS + 1)], capsys)
    assert f"at most {MAX_SEEDS} seeds" in _refused(["check", "--seed-list", f"1-{MAX_SEEDS + 1}"], capsys)
    assert "is empty" in _refused(["check", "--seed-list", "45-40"], capsys)
    assert len(no_sweep) == 1


# --- 6. exit status and summary -------------------------------------------------------------------


def _result(seed: int, verdict: str = "linearizable", **kw: Any) -> SeedResult:
    return SeedResult(seed=seed, verdict=verdict, ops=10, ok=10, fail=0, unknown=0, sim_time=1.0,
                      digest="d", **kw)


def test_undecided_seeds_exit_2_like_the_checker(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["check", "--workload", "register", "--check-timeout", "1e-9", "--seeds", "2", "--ops", "60",
            "--duration", "4", "--processes", "1", "--no-progress"]
    assert sim_main.main(argv) == 2
    assert "undecided (timed out)        2" in capsys.readouterr().out
    cfg = RunConfig()
    undecided, error, violation = _result(1, "unknown"), _result(2, "error"), _result(3, "not_linearizable")
    assert sweepcli.exit_status(SweepResult(cfg, [_result(4)])) == 0
    assert sweepcli.exit_status(SweepResult(cfg, [_result(4), undecided])) == 2
    assert sweepcli.exit_status(SweepResult(cfg, [undecided, error])) == 3
    assert sweepcli.exit_status(SweepResult(cfg, [undecided, error, violation])) == 1


def test_seeds_that_raised_are_named_with_their_exception_and_a_reproduce_line() -> None:
    tb = ("Traceback (most recent call last):\n  File \"sim/sweep.py\", line 1, in simulate\n"
          "ZeroDivisionError: float division by zero\n")
    cfg = RunConfig(ops=50)
    res = SweepResult(cfg, [_result(1), *(_result(s, "error", error=tb) for s in (4, 5, 6, 8))])
    summary = res.summary()
    assert "  seed 4: ZeroDivisionError: float division by zero" in summary
    assert "  seed 6: ZeroDivisionError" in summary and "  seed 8:" not in summary
    assert "(1 more; every traceback is in report.json of --out DIR)" in summary
    assert "reproduce: python -m sim check --seed-list 4 --ops 50 --out DIR" in summary.splitlines()


def test_a_figure3_break_in_a_linearizable_history_gets_a_reproduce_line() -> None:
    cfg = RunConfig(nodes=3, replicas=3)
    res = SweepResult(cfg, [_result(1), _result(7, figure3=("Election Safety: two leaders in term 3",))])
    assert sweepcli.exit_status(res) == 1
    assert "reproduce: python -m sim check --seed-list 7 --nodes 3 --replicas 3 --out DIR" in res.summary()


def test_out_help_says_which_timelines_are_written() -> None:
    text = " ".join(sweepcli.build_parser().format_help().split())
    assert "seed-N.html timelines of the seeds not found linearizable (violations and undecided)" in text


# --- 7, 8, 9. --no-durable, nemesis names, the nemesis help ------------------------------------------


def test_no_durable_is_refused_on_a_replicated_run(capsys: pytest.CaptureFixture[str],
                                                   no_sweep: list[Any]) -> None:
    assert "--no-durable" in _refused(["check", "--replicas", "3", "--no-durable", "--seeds", "1"], capsys)
    with pytest.raises(ValueError, match="replicas 1 only"):
        RunConfig(nodes=3, replicas=3, durable=False).validate()


@pytest.mark.parametrize("spec", ["", " ", "partition,,crash", "crash,"])
def test_an_empty_nemesis_name_is_refused_with_the_valid_ones(spec: str, capsys: pytest.CaptureFixture[str],
                                                              no_sweep: list[Any]) -> None:
    with pytest.raises(ValueError, match="empty name"):
        parse_kinds(spec)
    line = _refused(["check", "--nemesis", spec, "--seeds", "1"], capsys)
    assert "empty name" in line and all(k in line for k in (*KINDS, *ALIASES))
    assert parse_kinds("none") == ()


def test_check_help_lists_every_kind_and_what_each_alias_means() -> None:
    text = " ".join(sweepcli.build_parser().format_help().split())
    for kind in KINDS:
        assert kind in text
    for name, kinds in ALIASES.items():
        assert f"{name} = {', '.join(kinds) if kinds else 'no fault'}" in text


# --- 10. --replicas alone -------------------------------------------------------------------------


def test_replicas_alone_makes_that_many_nodes_as_check_does(capsys: pytest.CaptureFixture[str]) -> None:
    assert sim_main.main(["--replicas", "3", "--ops", "60", "--duration", "2", "--no-check"]) == 0
    assert capsys.readouterr().out.startswith("storelab sim: 3 nodes,")
    assert "--replicas must be 1 or the number of nodes (5)" in _refused(["--replicas", "3", "--nodes", "5"],
                                                                          capsys)


def test_the_shortest_duration_that_leaves_the_faults_a_window_runs() -> None:
    """The faults' window starts at min(0.5 s, duration / 4) and ends at the 2 s quiet tail:
    2.01 s passed the old check and then every seed raised; 2.5 s is the shortest that runs."""
    assert RunConfig(duration=2.01).problems() and RunConfig(duration=2.49).problems()
    assert not RunConfig(duration=2.5).problems()
    r = run_seed(1, RunConfig(duration=2.5, ops=5, nemesis="none"))
    assert r.verdict == "linearizable", r


# --- 11. --read-mode --------------------------------------------------------------------------------


@pytest.mark.parametrize("sub", [[], ["check", "--seeds", "1"]])
def test_a_bad_read_mode_is_refused_before_the_run(sub: list[str], capsys: pytest.CaptureFixture[str],
                                                   no_sweep: list[Any]) -> None:
    line = _refused([*sub, "--replicas", "3", "--read-mode", "fast"], capsys)
    assert "--read-mode must be safe" in line and "not 'fast'" in line
    line = _refused([*sub, "--read-mode", "lease"], capsys)
    assert "--read-mode lease" in line and "needs --replicas above 1" in line
    assert not no_sweep


def test_read_mode_lease_reaches_the_group_and_the_reproduce_line(no_sweep: list[Any],
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert sim_main.main(["check", "--replicas", "3", "--read-mode", "lease", "--seeds", "1"]) == 0
    cfg = no_sweep[0][1]
    assert cfg.read_mode == "lease" and cfg.replica_config == ReplicaConfig(read_only="lease")
    assert "--read-mode lease" in cfg.cli_args() and _parse_back(cfg.cli_args()) == cfg
    assert RunConfig(nodes=3, replicas=3).replica_config is None  # safe: the cluster's defaults, as before
    run = simulate(1, replace(cfg, ops=10, duration=2.5, nemesis="none"))
    assert all(n.replica.raft.cfg.read_only == "lease" for n in run.cluster.nodes())
    assert sim_main.main(["--replicas", "3", "--read-mode", "lease", "--ops", "30", "--duration", "2"]) == 0
    assert "history: linearizable" in capsys.readouterr().out
