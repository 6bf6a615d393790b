"""``python -m sim figures``: the README's figures are regenerable by the command it names."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parents[2]
NAMES = ["join_convergence.png", "false_positives.png", "partition_timeline.png"]


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
