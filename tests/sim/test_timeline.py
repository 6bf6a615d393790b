"""Timelines: a PNG and a self-contained HTML page of one run, faults on the same time axis."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from checker import check, events_to_ops
from sim.sweep import RunConfig, SeedRun, simulate
from sim.timeline import bars, fault_bars, plot_timeline, timeline_html

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def run() -> SeedRun:
    # memory-only nodes under crashes: the first seed that loses an acknowledged write (so there
    # is a witness to draw)
    cfg = RunConfig(ops=100, duration=6.0, nemesis="partition,crash", durable=False)
    for seed in range(1, 30):
        r = simulate(seed, cfg)
        if check(r.events, model="kv").verdict == "not_linearizable":
            return r
    raise AssertionError("no seed of 1-29 lost a write to a crash")


def test_the_png_has_a_lane_per_client_and_is_written(run: SeedRun, tmp_path: Path) -> None:
    path = tmp_path / "timeline.png"
    fig = plot_timeline(run.history, run.nemesis.records, path, title=f"seed {run.seed}")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == ["p0", "p1", "p2", "p3", "p4", "faults"]


def test_the_html_is_self_contained_with_a_tooltip_per_operation(run: SeedRun, tmp_path: Path) -> None:
    page = timeline_html(run.history, run.nemesis.records, path=tmp_path / "t.html")
    assert (tmp_path / "t.html").read_text() == page
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page
    assert "http" not in page and "src=" not in page and "<script" not in page
    # one bar with a tooltip per operation, one per fault
    assert page.count("<rect") == len(run.history) + len([r for r in run.nemesis.records if r.fired is not None])
    assert len(re.findall(r"<title>p\d+ (get|put|delete)\(", page)) == len(run.history)
    assert "crash" in page and "partition" in page


def test_every_history_shape_draws_the_same_bars(run: SeedRun) -> None:
    from_ops = bars(run.history)
    from_events = bars(run.events)
    from_checker = bars(events_to_ops(run.events))
    assert len(from_ops) == len(from_events) == len(from_checker) == len(run.history)
    key = [(b.process, b.start, b.outcome) for b in from_ops]
    assert [(b.process, b.start, b.outcome) for b in from_events] == key
    assert [(b.process, b.start, b.outcome) for b in from_checker] == key
    # the cluster's own fault log works too; restarts and heals end bars, they are not bars
    fb = fault_bars(run.cluster.faults)
    assert fb and all(f.kind in ("crash", "partition") for f in fb)
    assert all(f.end is not None for f in fb)


def test_a_witness_is_outlined(run: SeedRun) -> None:
    result = check(run.events, model="kv")
    assert result.verdict == "not_linearizable"
    page = timeline_html(run.events, run.cluster.faults, witness=result.witness)
    assert page.count('stroke="#000" stroke-width="2"') == len(result.witness)
    fig = plot_timeline(run.events, run.cluster.faults, witness=result.witness)
    assert "witness" in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


def test_an_empty_history_still_draws() -> None:
    assert "<svg" in timeline_html([], [])
    plot_timeline([], [])
