"""``python -m sim figures``: the README's figures are regenerable by the command it names."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parents[2]
NAMES = ["join_convergence.png", "false_positives.png", "partition_timeline.png", "replication.png"]


def test_the_figures_command_writes_every_figure_with_small_parameters(tmp_path: Path) -> None:
    out = tmp_path / "figs"
    done = subprocess.run(
        [sys.executable, "-m", "sim", "figures", "--small", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for name in NAMES:
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and 10_000 < len(data) < 200_000, name
    assert "model" in done.stdout and "node-hour" in done.stdout
    lost = {m[0]: int(m[1]) for m in re.findall(r"^replication: (.+?): \d+/\d+ ok, lost (\d+) of", done.stdout,
                                                  re.MULTILINE)}
    assert set(lost) == {"R = 1, memory only", "R = 1, durable", "R = 3 (Raft)"}, done.stdout
    assert lost["R = 3 (Raft)"] == 0 and lost["R = 1, memory only"] > 0, lost


def test_the_replication_figure_plots_what_each_run_lost_and_marks_the_shared_crashes(tmp_path: Path) -> None:
    from sim import figures as F

    res = F.replication_runs(ops=400, duration=8.0)
    rows = {r.label: r for r in res.rows}
    assert list(rows) == [label for label, _r, _d in F.REPLICATION_RUNS]
    assert rows["R = 3 (Raft)"].lost == 0 and rows["R = 1, durable"].lost == 0
    assert 0 < rows["R = 1, memory only"].lost <= rows["R = 1, memory only"].acked_writes
    assert [label for _a, _b, label in res.crashes][-1] == "power loss" and len(res.crashes) == 3
    assert all(0 <= t0 < t1 <= 8.0 for t0, t1, _label in res.crashes)
    for row in res.rows:
        assert row.bins.shape == row.ok_fraction.shape and len(row.while_down) == 3
        seen = row.ok_fraction[~np.isnan(row.ok_fraction)]
        assert seen.size and ((seen >= 0) & (seen <= 1)).all()
    # R = 3 kept answering while one node was down; R = 1 lost the crashed node's keys meanwhile
    assert rows["R = 3 (Raft)"].while_down[0] > rows["R = 1, memory only"].while_down[0]
    # what the right panel draws is the rows' lost counts
    fig = F.plot_replication(res)
    bars = [p.get_height() for p in fig.axes[1].patches]
    assert bars == [r.lost for r in res.rows]
    fig.savefig(tmp_path / "r.png", dpi=F.DPI)
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"


def test_a_share_that_rounds_to_0_or_100_percent_keeps_a_decimal() -> None:
    from sim.figures import _percent

    assert [_percent(x) for x in (1.0, 0.998, 0.74, 0.0004, 0.0)] == ["100 %", "99.8 %", "74 %", "0.0 %", "0 %"]


def test_only_makes_the_named_figures_and_refuses_an_unknown_name(tmp_path: Path) -> None:
    from sim import figures as F

    paths = F.make_figures(tmp_path, F.SMALL, only=["replication"])
    assert [p.name for p in paths] == ["replication.png"] and sorted(tmp_path.iterdir()) == paths
    with pytest.raises(ValueError, match=r"unknown figure.*the figures are join"):
        F.make_figures(tmp_path, F.SMALL, only=["joins"])


def test_the_readme_shows_the_committed_figures_and_names_the_command() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "python -m sim figures --out docs" in readme
    shown = re.findall(r"!\[[^\]]*\]\((docs/[^)]+\.png)\)", readme)
    assert sorted(Path(p).name for p in shown) == sorted(NAMES)
    for path in shown:
        size = (ROOT / path).stat().st_size
        assert size <= 160_000, f"{path} is {size} bytes: keep committed figures small (dpi ~100)"


def test_sim_help_lists_the_figures_subcommand() -> None:
    done = subprocess.run([sys.executable, "-m", "sim", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert "figures" in done.stdout
