"""Operation timelines: one lane per client, colored by outcome, and a lane of faults.

Theory of operation
-------------------
A history is drawn the way Jepsen's timeline draws it: time runs left to right, each client
process has a lane, and each operation is a bar from its invocation to its completion, colored
by outcome (``ok`` green, ``fail`` red, ``unknown`` amber: the operation's outcome is unknown,
Jepsen's ``info``, it may or may not have taken effect; one that never completed runs to the end
of the history, faded). "Unknown" means only that here: a checker verdict of a check that ran
out of time is called *undecided* (:func:`checker.verdict_text`). The time axis says which clock
it is: simulated seconds by default (``time_label`` for a real run's wall clock). A fault's
label sits inside its bar when it fits, else beside it, on the side where the plot has room, so
no label is cut off at an edge. Below the clients, the faults of the run are
bars on the same time axis (stacked when they overlap), so a glance shows which operations a
partition or a crash touched. The operations of a checker's witness can be outlined in black.

Two renderings of the same picture:

- :func:`plot_timeline` returns a matplotlib :class:`~matplotlib.figure.Figure`, built without
  pyplot (no global state, no GUI backend: ``savefig`` uses Agg), saved as PNG when given a path.
- :func:`timeline_html` returns a self-contained HTML page: an inline SVG with a tooltip on every
  bar (the operation, its outcome and error, the node it went to; a fault's evidence) and a table
  of the faults. No script, no external URL: it opens anywhere, offline.

Inputs are taken in every shape the project has: a :class:`sim.clients.History` (or a list of
its :class:`~sim.clients.Operation`), Jepsen-style event dicts (``History.events()``, a JSON
lines file read back, :mod:`realnet.history`'s recorder), or the checker's
:class:`~checker.Op` records; faults as :class:`sim.cluster.Fault` (``cluster.faults``),
:class:`sim.nemesis.FaultRecord` (with evidence), or dicts with ``time``/``verb``/``args``/``end``.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

COLORS = {"ok": "#3a9d5d", "fail": "#d1495b", "unknown": "#f0a202"}
#: the legend's words for each outcome
OUTCOME_LABELS = {"ok": "ok", "fail": "fail", "unknown": "outcome unknown (info)"}
#: the default time axis: every history the sim records is in simulated seconds
SIM_TIME = "simulated time (s)"
FAULT_COLORS = {
    "partition": "#7b4fa6", "bridge": "#9b6fc6", "oneway": "#b48fd8", "heal": "#7b4fa6",
    "crash": "#333333", "crash-durable": "#666666", "restart": "#333333",
    "loss": "#2f6db5", "set_loss": "#2f6db5", "latency": "#1f9e9e", "set_latency": "#1f9e9e",
    "slow": "#8c5a2b", "slow_node": "#8c5a2b", "clock": "#c8702a",
}
_VERB_KIND = {"set_loss": "loss", "set_latency": "latency", "slow_node": "slow", "skew_clock": "clock"}


@dataclass(frozen=True)
class Bar:
    """One operation as drawn."""

    process: int
    f: str
    key: str | None
    value: Any
    result: Any
    start: float
    end: float
    outcome: str  # ok | fail | unknown
    error: str = ""
    node: str = ""
    #: True when the operation never completed (drawn to the end of the history)
    open_ended: bool = False

    def describe(self) -> str:
        key = "" if self.key is None else repr(self.key)
        arg = key if self.f in ("get", "read") else f"{key}, {self.value!r}" if key else repr(self.value)
        out = f"p{self.process} {self.f}({arg})"
        if self.outcome == "ok" and self.f in ("get", "read"):
            out += f" -> {self.result!r}"
        else:
            out += f" -> {self.outcome}"
        if self.error:
            out += f" ({self.error})"
        end = "never completed" if self.open_ended else f"{self.end:.6g}"
        out += f" [{self.start:.6g}, {end}]"
        if self.node:
            out += f" via {self.node}"
        return out


@dataclass(frozen=True)
class FaultBar:
    """One fault as drawn: a bar (``end`` set) or an instant."""

    kind: str
    label: str
    start: float
    end: float | None
    detail: str = ""


# --- normalising inputs ----------------------------------------------------------------------


def bars(history: Any) -> list[Bar]:
    """The operations of ``history`` (any supported shape) as bars, in invocation order."""
    items = list(history)
    if not items:
        return []
    first = items[0]
    if isinstance(first, Mapping):
        return _bars_from_events(items)
    if hasattr(first, "invoke") and hasattr(first, "outcome"):  # sim.clients.Operation
        last = max((op.complete for op in items if op.complete is not None), default=0.0)
        last = max(last, max(op.invoke for op in items))
        out = []
        for op in items:
            open_ended = op.complete is None
            out.append(Bar(op.process, op.f, op.key, op.value, op.result, op.invoke,
                           last if open_ended else op.complete, op.outcome, op.error, op.node, open_ended))
        return out
    if hasattr(first, "call") and hasattr(first, "status"):  # checker.Op
        last = max(max((op.ret for op in items if op.ret is not None), default=0.0),
                   max(op.call for op in items))
        return [Bar(op.process, op.f, op.key, op.value, op.output, op.call,
                    last if op.ret is None else op.ret, op.status, open_ended=op.ret is None)
                for op in items]
    raise TypeError(f"cannot draw a history of {type(first).__name__}")


def _bars_from_events(events: list[Mapping[str, Any]]) -> list[Bar]:
    times = [e.get("time") for e in events]
    use_line = any(t is None for t in times)
    pending: dict[Any, tuple[int, Mapping[str, Any], float]] = {}
    slots: list[Bar | None] = []
    for i, e in enumerate(events):
        if e.get("process") == "nemesis":
            continue
        t = float(i + 1) if use_line else float(e["time"])
        p = e["process"]
        if e.get("type") == "invoke":
            pending[p] = (len(slots), e, t)
            slots.append(None)
            continue
        if p not in pending:
            continue
        idx, inv, call = pending.pop(p)
        kind = e.get("type")
        outcome = "ok" if kind == "ok" else "fail" if kind == "fail" else "unknown"
        result = e.get("value") if kind == "ok" and inv.get("f") in ("get", "read") else None
        slots[idx] = Bar(p, inv.get("f", "?"), inv.get("key"), inv.get("value"), result, call, t, outcome,
                         str(e.get("error", "") or ""), str(inv.get("node", "") or ""))
    # (not use_line: every event has a time, read as the loop above reads it)
    last = max((float(i + 1) if use_line else float(e["time"])) for i, e in enumerate(events)) if events else 0.0
    for idx, inv, call in pending.values():
        slots[idx] = Bar(inv["process"], inv.get("f", "?"), inv.get("key"), inv.get("value"), None, call,
                         last, "unknown", "", str(inv.get("node", "") or ""), True)
    return [b for b in slots if b is not None]


def fault_bars(faults: Iterable[Any] | None) -> list[FaultBar]:
    """Faults of any supported shape as bars; instants (heal, restart, ...) that merely end a
    fault already drawn as a bar are left out."""
    out: list[FaultBar] = []
    for f in faults or ():
        if hasattr(f, "kind") and hasattr(f, "target"):  # sim.nemesis.FaultRecord
            if f.fired is None:
                continue
            detail = f.describe() if hasattr(f, "describe") else ""
            out.append(FaultBar(f.kind, f"{f.kind} {f.target}", f.fired,
                                f.undone if f.undone is not None else f.end, detail))
            continue
        if isinstance(f, Mapping):
            verb = str(f.get("verb", f.get("kind", "fault")))
            start = float(f.get("time", f.get("start", 0.0)))
            args = str(f.get("args", f.get("target", "")))
            end = f.get("end")
        else:  # sim.cluster.Fault
            verb, start, args, end = f.verb, f.time, f.args, f.end
        if verb in ("heal", "restart", "release", "clear_links", "restore_clock"):
            continue  # drawn as the end of the fault it undoes
        kind = _VERB_KIND.get(verb, verb)
        out.append(FaultBar(kind, f"{verb} {args}".strip(), float(start),
                            None if end is None else float(end), ""))
    return out


def _witness_keys(witness: Iterable[Any] | None) -> set[tuple[int, float]]:
    keys = set()
    for op in witness or ():
        call = getattr(op, "call", getattr(op, "start", getattr(op, "invoke", None)))
        if call is not None:
            keys.add((op.process, float(call)))
    return keys


def _stack(items: list[FaultBar], horizon: float) -> list[int]:
    """Greedy interval colouring: the sub-lane of each fault, so overlapping ones stack."""
    ends: list[float] = []
    lanes = []
    for fb in items:
        stop = fb.end if fb.end is not None else fb.start + horizon * 0.004
        for i, e in enumerate(ends):
            if e <= fb.start:
                ends[i] = stop
                lanes.append(i)
                break
        else:
            ends.append(stop)
            lanes.append(len(ends) - 1)
    return lanes


def _layout(
    history: Any, faults: Iterable[Any] | None
) -> tuple[list[Any], list[FaultBar], float, float, float, list[int], dict[int, int], list[int], int]:
    """What both renderings lay out the same way: the operation bars, the fault bars in start
    order, the time axis (t0, t1, span), one lane per client process, and each fault's sub-lane
    (overlapping faults stack) with the number of fault lanes."""
    ops = bars(history)
    fbs = sorted(fault_bars(faults), key=lambda f: f.start)
    t0 = min([b.start for b in ops] + [f.start for f in fbs] + [0.0])
    t1 = max([b.end for b in ops] + [f.end or f.start for f in fbs] + [t0 + 1e-9])
    span = t1 - t0
    procs = sorted({b.process for b in ops})
    lane_of = {p: i for i, p in enumerate(procs)}
    sub = _stack(fbs, span)
    n_fault_lanes = (max(sub) + 1) if sub else 0
    return ops, fbs, t0, t1, span, procs, lane_of, sub, n_fault_lanes


# --- matplotlib ------------------------------------------------------------------------------


def plot_timeline(
    history: Any,
    faults: Iterable[Any] | None = (),
    path: str | Path | None = None,
    *,
    title: str | None = None,
    witness: Iterable[Any] | None = None,
    width: float = 12.0,
    time_label: str = SIM_TIME,
    dpi: int = 110,
) -> Any:
    """Draw the timeline; save it as PNG (at ``dpi``) when ``path`` is given; return the
    Figure. ``time_label`` names the clock of the x-axis (simulated seconds by default)."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    ops, fbs, t0, t1, span, procs, lane_of, sub, n_fault_lanes = _layout(history, faults)
    height = 1.4 + 0.32 * (len(procs) + n_fault_lanes + (1 if n_fault_lanes else 0))
    fig = Figure(figsize=(width, min(max(height, 2.5), 30.0)), layout="constrained")
    ax = fig.add_subplot()
    min_w = span * 0.0015
    hl = _witness_keys(witness)
    for outcome, color in COLORS.items():
        for p in procs:
            spans = [(b.start, max(b.end - b.start, min_w)) for b in ops
                     if b.process == p and b.outcome == outcome and not b.open_ended]
            if spans:
                ax.broken_barh(spans, (lane_of[p] - 0.35, 0.7), facecolors=color, linewidth=0)
            open_spans = [(b.start, max(b.end - b.start, min_w)) for b in ops
                          if b.process == p and b.outcome == outcome and b.open_ended]
            if open_spans:
                ax.broken_barh(open_spans, (lane_of[p] - 0.35, 0.7), facecolors=color, alpha=0.3,
                               linewidth=0)
    marked = [b for b in ops if (b.process, b.start) in hl]
    for b in marked:
        ax.broken_barh([(b.start, max(b.end - b.start, min_w))], (lane_of[b.process] - 0.45, 0.9),
                       facecolors="none", edgecolors="black", linewidth=1.5)
    base = len(procs) + 0.15  # the first fault lane's centre, just below the last client
    x_lo, x_hi = t0 - span * 0.01, t1 + span * 0.01
    # data units per character of a 7-point label: the axes take about 85 % of the width
    per_char = (x_hi - x_lo) * (7 * 0.6 / 72) / (0.85 * width)
    for fb, lane in zip(fbs, sub, strict=True):
        y = base + lane
        color = FAULT_COLORS.get(fb.kind, "#888888")
        if fb.end is None:
            ax.plot([fb.start, fb.start], [y - 0.4, y + 0.4], color=color, linewidth=2)
        else:
            ax.broken_barh([(fb.start, max(fb.end - fb.start, min_w))], (y - 0.35, 0.7), facecolors=color,
                           alpha=0.75, linewidth=0)
        x, ha, inside = _label_place(fb, (len(fb.label) + 2) * per_char, x_lo, x_hi)
        ax.text(x, y, f" {fb.label} ", va="center", ha=ha, fontsize=7,
                color="white" if inside else color, clip_on=False)
    yticks: list[float] = [lane_of[p] for p in procs]
    ylabels = [f"p{p}" for p in procs]
    if n_fault_lanes:
        yticks.append(base + (n_fault_lanes - 1) / 2)
        ylabels.append("faults")
        ax.axhline(len(procs) - 0.45, color="#cccccc", linewidth=0.8)
    ax.set_yticks(yticks, ylabels, fontsize=8)
    ax.set_ylim(-0.6, base + n_fault_lanes - 0.4 if n_fault_lanes else len(procs) - 0.4)
    ax.set_xlim(x_lo, x_hi)
    ax.set_xlabel(time_label)
    counts = {o: sum(1 for b in ops if b.outcome == o) for o in COLORS}
    handles = [Patch(color=c, label=f"{OUTCOME_LABELS[o]} ({counts[o]})") for o, c in COLORS.items()]
    if marked:
        handles.append(Patch(facecolor="none", edgecolor="black", label="witness"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    ax.set_title(title or f"{len(ops)} operations, {len(procs)} clients, {len(fbs)} faults", fontsize=10)
    ax.invert_yaxis()
    if path is not None:
        fig.savefig(path, dpi=dpi)
    return fig


def _label_place(fb: FaultBar, label_w: float, x_lo: float, x_hi: float) -> tuple[float, str, bool]:
    """Where a fault's label goes, ``(x, alignment, inside its bar)``: inside the bar when it
    fits; else after the bar when the plot has room on the right; else before its start,
    right-aligned; never past either edge of the plot."""
    end = fb.start if fb.end is None else fb.end
    if fb.end is not None and fb.end - fb.start >= label_w:
        return fb.start, "left", True
    if end + label_w <= x_hi:
        return end, "left", False
    if fb.start - label_w >= x_lo:
        return fb.start, "right", False
    return x_hi, "right", False


# --- HTML ------------------------------------------------------------------------------------

# scoped to the page's one container, so the page can also be shown inside a notebook
_CSS = """
.storelab-timeline { font: 13px/1.4 system-ui, sans-serif; margin: 16px; color: #222; }
.storelab-timeline h1 { font-size: 16px; margin: 0 0 8px; }
.storelab-timeline .legend span { display: inline-block; margin-right: 14px; }
.storelab-timeline .legend i { display: inline-block; width: 12px; height: 12px; margin-right: 4px;
  vertical-align: -2px; }
.storelab-timeline svg { border: 1px solid #ddd; background: #fff; }
.storelab-timeline svg text { font: 10px system-ui, sans-serif; }
.storelab-timeline rect:hover { stroke: #000; stroke-width: 1; }
.storelab-timeline table { border-collapse: collapse; margin-top: 12px; }
.storelab-timeline td, .storelab-timeline th { border: 1px solid #ddd; padding: 2px 8px;
  text-align: left; font-size: 12px; }
"""


def timeline_html(
    history: Any,
    faults: Iterable[Any] | None = (),
    *,
    title: str | None = None,
    witness: Iterable[Any] | None = None,
    width: int = 1200,
    path: str | Path | None = None,
    time_label: str = SIM_TIME,
) -> str:
    """The timeline as one self-contained HTML page (inline SVG, hover a bar for details);
    also written to ``path`` when given. ``time_label`` names the clock (simulated seconds)."""
    ops, fbs, t0, t1, span, procs, lane_of, sub, n_fault_lanes = _layout(history, faults)
    left, right, lane_h, top = 60, 10, 16, 24
    plot_w = width - left - right
    ops_top = top
    fault_top = ops_top + len(procs) * lane_h + (10 if n_fault_lanes else 0)
    height = fault_top + n_fault_lanes * lane_h + 30
    hl = _witness_keys(witness)

    def x(t: float) -> float:
        return left + (t - t0) / span * plot_w

    def w(a: float, b: float) -> float:
        return max(1.0, (b - a) / span * plot_w)

    esc = html.escape
    parts = [f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">']
    # time axis
    step = _nice_step(span / 10)
    first = math.ceil(t0 / step) * step
    t = first
    while t <= t1 + 1e-12:
        xx = x(t)
        parts.append(f'<line x1="{xx:.1f}" y1="{top - 4}" x2="{xx:.1f}" y2="{height - 24}" stroke="#eee"/>')
        parts.append(f'<text x="{xx:.1f}" y="{height - 10}" text-anchor="middle">{t:g}</text>')
        t += step
    parts.append(f'<text x="{width - right}" y="{top - 8}" text-anchor="end">{esc(time_label)}</text>')
    # faults
    for fb, lane in zip(fbs, sub, strict=True):
        y = fault_top + lane * lane_h
        color = FAULT_COLORS.get(fb.kind, "#888888")
        tip = esc(fb.detail or fb.label) + (
            f" [{fb.start:.6g}, {fb.end:.6g}]" if fb.end is not None else f" at {fb.start:.6g}")
        if fb.end is None:
            parts.append(f'<g><title>{tip}</title><rect x="{x(fb.start) - 1:.1f}" y="{y + 1}" width="3" '
                         f'height="{lane_h - 2}" fill="{color}"/></g>')
        else:
            parts.append(f'<g><title>{tip}</title><rect x="{x(fb.start):.1f}" y="{y + 1}" '
                         f'width="{w(fb.start, fb.end):.1f}" height="{lane_h - 2}" fill="{color}" '
                         f'fill-opacity="0.8"/></g>')
        # 10 px labels are about 6 px a character: inside the bar if it fits, else beside it
        lx, ha, inside = _label_place(fb, (len(fb.label) + 1) * 6.0 / plot_w * span, t0, t1)
        anchor = "start" if ha == "left" else "end"
        pad = 3 if ha == "left" else -3
        parts.append(f'<text x="{x(lx) + pad:.1f}" y="{y + lane_h - 4}" text-anchor="{anchor}" '
                     f'fill="{"#fff" if inside else color}" style="pointer-events:none">'
                     f'{esc(fb.label)}</text>')
    if n_fault_lanes:
        parts.append(f'<text x="4" y="{fault_top + n_fault_lanes * lane_h / 2 + 4:.1f}">faults</text>')
    # operations
    for p in procs:
        y = ops_top + lane_of[p] * lane_h
        parts.append(f'<text x="4" y="{y + lane_h - 4}">p{p}</text>')
    for b in ops:
        y = ops_top + lane_of[b.process] * lane_h
        color = COLORS.get(b.outcome, "#888888")
        opacity = ' fill-opacity="0.35"' if b.open_ended else ""
        stroke = ' stroke="#000" stroke-width="2"' if (b.process, b.start) in hl else ""
        parts.append(f'<rect x="{x(b.start):.2f}" y="{y + 2}" width="{w(b.start, b.end):.2f}" '
                     f'height="{lane_h - 4}" fill="{color}"{opacity}{stroke}>'
                     f'<title>{esc(b.describe())}</title></rect>')
    parts.append("</svg>")
    counts = {o: sum(1 for b in ops if b.outcome == o) for o in COLORS}
    legend = "".join(f'<span><i style="background:{c}"></i>{OUTCOME_LABELS[o]} ({counts[o]})</span>'
                     for o, c in COLORS.items())
    if hl:
        legend += '<span><i style="border:2px solid #000"></i>witness</span>'
    rows = "".join(
        f"<tr><td>{esc(fb.kind)}</td><td>{fb.start:.3f}</td>"
        f"<td>{'' if fb.end is None else f'{fb.end:.3f}'}</td><td>{esc(fb.detail or fb.label)}</td></tr>"
        for fb in fbs
    )
    table = (f"<table><tr><th>fault</th><th>from</th><th>to</th><th>what it did</th></tr>{rows}</table>"
             if fbs else "")
    heading = esc(title or f"{len(ops)} operations, {len(procs)} clients, {len(fbs)} faults")
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{heading}</title><style>{_CSS}</style></head><body><div class=\"storelab-timeline\">"
        f"<h1>{heading}</h1><div class=\"legend\">{legend}</div>"
        f"{''.join(parts)}{table}</div></body></html>\n"
    )
    if path is not None:
        Path(path).write_text(page, encoding="utf-8")
    return page


def _nice_step(raw: float) -> float:
    if raw <= 0:
        return 1.0
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * mag:
            return float(m * mag)
    return float(10 * mag)


__all__ = ["COLORS", "OUTCOME_LABELS", "SIM_TIME", "Bar", "FaultBar", "bars", "fault_bars", "plot_timeline", "timeline_html"]
