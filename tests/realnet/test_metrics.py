"""``/metrics``: latency histograms, the process collector, and no family without a sample."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kvcore.messages import Forward, ForwardReply, Get, Reply
from realnet.client import kv_path
from realnet.metrics import LATENCY_BUCKETS, ForwardMeter, Histogram, OpLatency, outcome_of
from tests.realnet.conftest import Cluster, Launcher, NodeProc, keys_in, poll

# --- the histograms, without processes ----------------------------------------------------------


def test_a_bound_belongs_to_its_own_bucket() -> None:
    h = Histogram()
    for v in (0.0, 0.0001, 0.00010001, 10.0, 11.0):
        h.observe(v)
    buckets = dict(h.buckets())
    assert buckets["0.0001"] == 2  # le: less than or equal
    assert buckets["0.00025"] == 3
    assert buckets["10"] == 4 and buckets["+Inf"] == 5 == h.count
    assert h.sum == pytest.approx(21.00020001)
    assert len(h.buckets()) == len(LATENCY_BUCKETS) + 1


def test_outcome_classes() -> None:
    assert [outcome_of(c) for c in ("", "not_found", "owner_down", "wrong_node", "bad_request")] == [
        "ok", "not_found", "fail", "fail", "fail",
    ]
    assert [outcome_of(c) for c in ("forward_timeout", "internal", "no_such_code")] == [
        "unknown", "unknown", "unknown",
    ]


def test_op_latency_shares_one_histogram_per_outcome_class() -> None:
    lat = OpLatency()
    lat.observe("get", "", 0.001)
    lat.observe("get", "owner_down", 0.002)
    lat.observe("get", "slot_unassigned", 0.003)
    lat.observe("put", "forward_timeout", 2.0)
    assert sorted(lat.hists) == [("get", "fail"), ("get", "ok"), ("put", "unknown")]
    assert lat.hists[("get", "fail")].count == 2


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_forward_meter_matches_replies_by_id_and_peer() -> None:
    clock = Clock()
    meter = ForwardMeter(clock, timeout=2.0, max_pending=3)
    op = Get(key=b"k")
    meter.sent("b", Forward(request_id=1, op=op))
    meter.sent("c", Forward(request_id=2, op=op))
    clock.t += 0.004
    meter.received("b", ForwardReply(request_id=1, reply=Reply(value=b"v")))
    meter.received("b", ForwardReply(request_id=1, reply=Reply(value=b"v")))  # duplicate
    meter.received("b", ForwardReply(request_id=2, reply=Reply()))  # not sent to b
    assert meter.hists["ok"].count == 1 and meter.hists["ok"].sum == pytest.approx(0.004)
    meter.sent("c", Forward(request_id=3, op=op))
    clock.t += 5.0  # past the forward timeout: the client was answered 504 already
    meter.received("c", ForwardReply(request_id=3, reply=Reply(error="not_found")))
    assert "not_found" not in meter.hists
    for rid in range(10, 20):  # never answered: the pending table stays bounded
        meter.sent("d", Forward(request_id=rid, op=op))
    assert len(meter._pending) == 3


# --- real nodes ---------------------------------------------------------------------------------


def families_of(node: NodeProc) -> dict[str, Any]:
    status, headers, body = node.request("GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    return {f.name: f for f in text_string_to_metric_families(body.decode())}


def assert_every_family_has_a_sample(node: NodeProc) -> None:
    status, _, body = node.request("GET", "/metrics")
    assert status == 200
    text = body.decode()
    declared = [ln.split()[2] for ln in text.splitlines() if ln.startswith("# TYPE ")]
    families = list(text_string_to_metric_families(text))
    assert len(families) == len(declared)
    empty = [f.name for f in families if not f.samples]
    assert not empty, f"families declared without a sample: {empty}"


@pytest.mark.realnet
def test_a_fresh_node_declares_no_family_without_a_sample(launcher: Launcher) -> None:
    node = launcher.standalone()
    assert_every_family_has_a_sample(node)  # before any client request or peer
    node.request("PUT", kv_path(b"k"), b"v")
    node.request("GET", kv_path(b"nope"))
    assert_every_family_has_a_sample(node)


@pytest.mark.realnet
def test_metrics_have_latency_histograms_and_process_metrics(cluster3: Cluster) -> None:
    a = cluster3["a"]
    # keys owned by each node, so that a forwards to b and c
    keys = keys_in(0, 16383, 30, prefix="hist")
    for k in keys:
        assert a.request("PUT", kv_path(k), b"v")[0] == 204
        assert a.request("GET", kv_path(k))[0] == 200
        assert a.request("DELETE", kv_path(k))[0] == 204
    a.request("GET", kv_path(b"hist-absent"))
    poll(lambda: a.info()["stats"]["forwards_sent"] > 0, what="a forward")
    fams = families_of(a)

    ops = fams["storelab_client_op_latency_seconds"]
    assert ops.type == "histogram"
    by: dict[tuple[str, str, str], float] = {}
    for s in ops.samples:
        if s.name.endswith("_count"):
            by[(s.labels["op"], s.labels["outcome"], "count")] = s.value
    for op in ("get", "put", "delete"):
        assert by.get((op, "ok", "count"), 0) >= len(keys), (op, by)
    assert by.get(("get", "not_found", "count"), 0) >= 1
    assert_histograms_are_consistent(ops.samples)

    fwd = fams["storelab_forward_latency_seconds"]
    assert fwd.type == "histogram"
    buckets = [s for s in fwd.samples if s.name.endswith("_bucket")]
    assert buckets and all("le" in s.labels for s in buckets)
    count = sum(s.value for s in fwd.samples if s.name.endswith("_count"))
    assert count >= 1
    assert_histograms_are_consistent(fwd.samples)

    for name in (
        "process_cpu_seconds", "process_resident_memory_bytes", "process_open_fds",
        "process_start_time_seconds",
    ):
        assert name in fams and fams[name].samples, name
    # the garbage collector's own families, and what the node froze once built (a node process
    # freezes its start-up objects: no full collection scans them again)
    assert {s.labels["generation"] for s in fams["python_gc_collections"].samples} == {"0", "1", "2"}
    (frozen,) = fams["storelab_gc_frozen_objects"].samples
    assert frozen.value > 10_000, frozen
    assert_every_family_has_a_sample(a)


def assert_histograms_are_consistent(samples: list[Any]) -> None:
    """Buckets are cumulative and end at +Inf == _count, per label set."""
    series: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = {}
    counts: dict[tuple[tuple[str, str], ...], float] = {}
    for s in samples:
        labels = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
        if s.name.endswith("_bucket"):
            series.setdefault(labels, []).append((float(s.labels["le"]), s.value))
        elif s.name.endswith("_count"):
            counts[labels] = s.value
    assert series
    for labels, rows in series.items():
        rows.sort()
        values = [v for _, v in rows]
        assert values == sorted(values), labels
        assert rows[-1][0] == float("inf") and rows[-1][1] == counts[labels], labels
