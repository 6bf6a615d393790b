"""``python -m sim``: the summary says why the run lasted as long as it did and whether its
history is linearizable, keeps the digest last and unchanged, lists every subcommand in --help,
and never prints a traceback into a closed pipe."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import sim.__main__ as sim_main
from sim.scenario import run_default

REPO = Path(__file__).resolve().parents[2]
SMALL = ["--ops", "300", "--duration", "4", "--seed", "3"]


def test_the_verdict_comes_before_the_digest_which_stays_last_and_unchanged(capsys: pytest.CaptureFixture[str]) -> None:
    assert sim_main.main(SMALL) == 0
    lines = capsys.readouterr().out.splitlines()
    _, rep = run_default(seed=3, ops=300, duration=4.0)
    assert lines[-1] == f"digest: {rep.digest}"  # what the run alone gives: the check adds nothing
    assert lines[-2].startswith("history: linearizable (300 operations, checked in ")
    assert lines[0] == rep.summary().split("\n")[0]
    assert lines[1].startswith("simulated ")
    assert sim_main.main([*SMALL, "--no-check"]) == 0
    assert not any(line.startswith("history:") for line in capsys.readouterr().out.splitlines())


def test_the_default_run_says_why_20_seconds_of_workload_took_longer(capsys: pytest.CaptureFixture[str]) -> None:
    # the run: 20 s of paced workload reported as 29.3 simulated seconds (seed 1)
    assert sim_main.main([]) == 0
    lines = capsys.readouterr().out.splitlines()
    _, rep = run_default(seed=1)
    assert rep.sim_time > 25.0  # the run this explains does last well past its 20 s
    last = max(rep.history, key=lambda op: op.complete or 0.0)
    assert last.complete == rep.sim_time  # the run ends when the last operation answers...
    waits = [op for op in rep.history if op.process == last.process and op.outcome == "unknown"]
    assert waits  # ...and its client was held up by operations that waited for a time-out
    assert lines[1].startswith(
        f"simulated {rep.sim_time:.1f} s: 20 s of paced workload + {rep.sim_time - 20:.1f} s until the last "
        f"operation answered (client {last.process} fell behind its pace: {len(waits)} of its operations "
        f"waited {sum(op.latency or 0.0 for op in waits):.1f} s in all for a time-out")


def test_a_run_without_time_outs_is_its_paced_workload(capsys: pytest.CaptureFixture[str]) -> None:
    assert sim_main.main([*SMALL, "--loss", "0", "--no-partition"]) == 0
    assert capsys.readouterr().out.splitlines()[1] == "simulated 4.0 s: the 4 s of paced workload"


def test_a_run_that_ends_well_before_its_duration_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    """Few operations over a long duration: each client's last one starts a pace before the end
    ("the 2000 s of paced workload" was said of a run of 1027 s)."""
    assert sim_main.main(["--duration", "2000", "--ops", "5", "--no-check"]) == 0
    line = capsys.readouterr().out.splitlines()[1]
    assert line.startswith("simulated 10") and line.endswith(": the last of 5 operations, paced over 2000 s, answered then"), line


def test_a_violation_and_an_exhausted_budget_are_said(monkeypatch: pytest.MonkeyPatch) -> None:
    events = [
        {"process": 0, "type": "invoke", "f": "put", "key": "k", "value": "1"},
        {"process": 0, "type": "ok", "f": "put", "key": "k", "value": "1"},
        {"process": 1, "type": "invoke", "f": "get", "key": "k", "value": None},
        {"process": 1, "type": "ok", "f": "get", "key": "k", "value": "2"},
    ]
    rep = SimpleNamespace(history=SimpleNamespace(events=lambda: events))
    line, status = sim_main.verdict_line(rep, 10.0)  # type: ignore[arg-type]
    assert line.startswith("history: NOT linearizable at key 'k' (2 operations") and status == 1
    line, status = sim_main.verdict_line(rep, 0.0)  # type: ignore[arg-type]
    assert line.startswith("history: undecided: the check ran out of its 0 s budget") and status == 2


def test_the_exit_status_is_the_verdicts(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """As ``python -m checker`` and ``sim check``: 1 for a history not linearizable, 2 undecided,
    0 linearizable or not checked (it was 0 whatever the verdict, so a script could not tell)."""
    assert sim_main.main(["--ops", "30", "--duration", "2"]) == 0
    assert "history: linearizable" in capsys.readouterr().out
    assert sim_main.main(["--ops", "30", "--duration", "2", "--check-timeout", "0"]) == 2
    assert "history: undecided" in capsys.readouterr().out
    real = sim_main.run_default

    def broken(**kw: object) -> object:
        c, rep = real(**kw)  # type: ignore[arg-type]
        t = rep.history.events()[-1]["time"] + 1.0
        events = [*rep.history.events(), *(
            {"process": p, "type": ty, "f": f, "key": "zz", "value": v, "time": t + i}
            for i, (p, ty, f, v) in enumerate([(90, "invoke", "put", "1"), (90, "ok", "put", "1"),
                                               (91, "invoke", "get", None), (91, "ok", "get", "2")]))]
        rep.history.events = lambda: events  # what the checker reads; the summary reads the rest
        return c, rep

    monkeypatch.setattr(sim_main, "run_default", broken)
    assert sim_main.main(["--ops", "30", "--duration", "2"]) == 1
    assert "history: NOT linearizable at key 'zz'" in capsys.readouterr().out
    assert sim_main.main(["--ops", "30", "--duration", "2", "--no-check"]) == 0


def test_help_lists_every_subcommand_from_the_table(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    # a subcommand added by one line in the table (and no help line) is listed too
    monkeypatch.setitem(sim_main.SUBCOMMANDS, "tracedemo", "sim.trace")
    with pytest.raises(SystemExit) as e:
        sim_main.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for name in sim_main.SUBCOMMANDS:
        assert f"\n  {name} " in out, name
    first_line = (sys.modules["sim.trace"].__doc__ or "").strip().split("\n")[0].rstrip(".")
    # the names are padded to the longest one ("raft-elections"), so any run of spaces
    assert re.search(rf"\n  tracedemo +{re.escape(first_line)}\n", out)


def test_output_into_a_closed_pipe_ends_quietly_without_a_traceback() -> None:
    for args in (SMALL, ["epidemic", "--help"]):
        p = subprocess.Popen([sys.executable, "-m", "sim", *args], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, cwd=REPO)
        assert p.stdout is not None and p.stderr is not None
        p.stdout.close()
        try:
            err = p.stderr.read().decode()
            status = p.wait(timeout=120)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        assert "Traceback" not in err and err == "", args
        if args is SMALL:
            assert status == sim_main.EXIT_BROKEN_PIPE
