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


def _two_ops(end: float = 10.0) -> list[dict[str, object]]:
    return [
        {"process": 0, "type": "invoke", "f": "put", "key": "k", "value": "1", "time": 0.0},
        {"process": 0, "type": "ok", "f": "put", "key": "k", "value": "1", "time": 1.0},
        {"process": 1, "type": "invoke", "f": "get", "key": "k", "value": None, "time": 2.0},
        {"process": 1, "type": "info", "f": "get", "key": "k", "value": None, "time": end},
    ]


def test_the_time_axis_says_the_time_is_simulated() -> None:
    fig = plot_timeline(_two_ops(), [])
    assert fig.axes[0].get_xlabel() == "simulated time (s)"
    assert "simulated time (s)" in timeline_html(_two_ops(), [])
    # a real run's history can name its own clock
    assert plot_timeline(_two_ops(), [], time_label="wall time (s)").axes[0].get_xlabel() == "wall time (s)"


def test_unknown_is_an_operations_outcome_in_the_legend() -> None:
    fig = plot_timeline(_two_ops(), [])
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert texts == ["ok (1)", "fail (0)", "outcome unknown (info) (1)"]
    assert "outcome unknown (info) (1)" in timeline_html(_two_ops(), [])


@pytest.mark.parametrize("start,end", [(9.6, None), (9.0, 9.9), (0.05, 0.1)])
def test_a_fault_label_near_an_edge_is_not_cut_off(start: float, end: float | None) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    label_args = "n3 after a long and wordy description of the fault"
    faults = [{"time": start, "verb": "crash", "args": label_args, "end": end}]
    fig = plot_timeline(_two_ops(), faults, width=8.0)
    FigureCanvasAgg(fig).draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    (text,) = [t for t in ax.texts if label_args in t.get_text()]
    box, frame = text.get_window_extent(renderer), ax.get_window_extent(renderer)
    assert frame.x0 - 1 <= box.x0 and box.x1 <= frame.x1 + 1, (box, frame)
    # the HTML page puts a label that would run past the right edge before its bar instead
    page = timeline_html(_two_ops(), faults)
    tag = re.search(r'<text x="([\d.]+)" y="[\d.]+" text-anchor="(start|end)"[^>]*>crash n3', page)
    assert tag is not None
    x, anchor = float(tag.group(1)), tag.group(2)
    if start > 5:
        assert anchor == "end" and x < 1200
    else:
        assert anchor == "start"
