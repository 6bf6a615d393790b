"""The sim's command lines refuse what they cannot run, before they run anything, with one
sentence and exit status 2 (never a traceback, a hang, or a whole run thrown away), and do
what their flags say (``--ops`` exactly, ``--replicas`` alone)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

import sim.__main__ as sim_main
import sim.sweepcli as sweepcli
from sim.cliargs import writable_file
from sim.clients import split_ops
from sim.figures import main as figures_main
from sim.nemesis import ALIASES, KINDS, parse_kinds
from sim.scenario import run_default
from sim.sweep import RunConfig, SweepResult, run_seed, simulate


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
])
def test_the_main_run_refuses_numbers_it_cannot_run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    _refused([*argv, "--ops", "30"], capsys)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("argv", [
    ["--sync-time", "exp:0"], ["--sync-time", "const:nan"], ["--sync-time", "uniform:0.001,inf"],
    ["--duration", "inf"], ["--duration", "nan"], ["--check-timeout", "nan"], ["--check-timeout", "inf"],
    ["--loss", "nan"],
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
