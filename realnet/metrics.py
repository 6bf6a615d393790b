"""``/metrics``: what a node exposes to Prometheus, and the latency histograms behind it.

Theory of operation
-------------------
**Read at scrape time.** :class:`NodeCollector` is a custom :mod:`prometheus_client` collector:
at each scrape it reads the counters that the node (:class:`kvcore.metrics.NodeStats`, its
membership), the peer transport and the HTTP server already keep, and turns them into metric
families, one method per group of families (peer messages, client operations, forwards, the
transport, HTTP, the store, membership, latencies, and a replicated group's Raft
families: :mod:`realnet.raftmetrics`). Nothing is counted twice and the hot path
never touches a Prometheus object. prometheus_client's own :class:`ProcessCollector` (CPU
seconds, resident and virtual memory, open and maximum file descriptors, start time),
:class:`GCCollector` (``python_gc_*``: collections and objects collected per generation) and
:class:`PlatformCollector` (``python_info``) are registered beside it (:func:`registry`), with
``storelab_gc_frozen_objects``: the objects the node froze once it was built (``gc.freeze`` in
:func:`realnet.node.run`), which no collection scans again.

**No family without a sample.** A family is declared only when it has at least one sample: a
labelled family whose label values are known in advance (member states, the transport's drop and
malformed-frame reasons) starts every value at 0, so that ``rate()`` sees the first increment; one
whose values are open-ended (message kinds, HTTP statuses, peers) is left out until it has one.
``tests/realnet/test_metrics.py`` parses a whole exposition and holds every ``# TYPE`` to that.

**Latency histograms, cheap enough for the hot path.** Prometheus users expect latencies as
histograms (``_bucket{le=...}``, ``_sum``, ``_count``, in seconds), so they can aggregate them
across nodes and compute quantiles. A :class:`prometheus_client.Histogram` per request costs a
lock and several objects; a node answering tens of thousands of requests a second cannot pay it
on a path that is being tuned for throughput. :class:`Histogram` here is a list of ints (one per
bucket) and a float sum: an observation is one :func:`bisect.bisect_left` over precomputed upper
bounds, one list increment and one addition, on the event loop's thread, with no lock (nothing
else writes it). The collector turns the counts into cumulative buckets when scraped. Buckets
(:data:`LATENCY_BUCKETS`) run from 100 µs (a local operation on loopback) to 10 s (beyond any
forward timeout), 1-2.5-5 per decade, which suits loopback to LAN.

- **Client operations** (:class:`OpLatency`, ``storelab_client_op_latency_seconds{op,outcome}``):
  from the moment the API hands a complete request to the node (``Api.kv``) to the node's reply,
  by ``op`` (get, put, delete; HEAD counts as get) and outcome class: ``ok``, ``not_found``,
  ``fail`` (certainly not applied: 4xx and 503 codes) and ``unknown`` (504 ``forward_timeout``,
  500: the outcome is unknown), the same classes a history checker uses. A local operation is
  answered before ``on_client_request`` returns, so its latency is the node's own work; a
  forwarded one includes the hop to the owner.
- **Forwards** (:class:`ForwardMeter`, ``storelab_forward_latency_seconds{outcome}``): from a
  ``Forward`` (or ``Asking``) handed to the peer transport to the ``ForwardReply`` with the same
  request id from the same peer, by the outcome class of the owner's reply. It watches the
  transport's frames (``send_observers``/``receive_observers``, as the RTT meter does), so kvcore
  is not involved. A forward that timed out is not a sample (``storelab_forward_timeouts``
  counts it); a reply arriving after ``forward_timeout`` is not one either, since the node has
  already answered the client. Pending sends are bounded (:attr:`ForwardMeter.max_pending`).

Time is the loop's clock (``loop.time()``, monotonic; :attr:`realnet.api.Api.clock`), read twice
per measured request.
"""

from __future__ import annotations

import gc
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from kvcore import errors
from kvcore.membership import STATES
from kvcore.messages import Asking, Forward, ForwardReply
from realnet.http import refusals as http_refusals
from realnet.raftmetrics import raft_families

if TYPE_CHECKING:
    from realnet.api import Api

#: Upper bounds of the latency buckets, in seconds (``+Inf`` is implicit).
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005,
    0.001, 0.0025, 0.005,
    0.01, 0.025, 0.05,
    0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
)
_LE = (*(f"{b:g}" for b in LATENCY_BUCKETS), "+Inf")

#: outcome classes of a reply, by error code ("" is success)
OUTCOMES = ("ok", "not_found", "fail", "unknown")
OPS = ("get", "put", "delete")
#: why the transport dropped a message / closed an inbound connection (realnet.transport)
DROP_REASONS = (
    "backoff", "backpressure", "bad_address", "closed", "connect_failed", "connection_lost",
    "encode_error", "queue_full", "self", "too_large", "unknown_peer",
)
MALFORMED_REASONS = (
    "auth_failed", "bad_handshake", "bad_hello", "bad_proof", "cluster_mismatch", "evicted",
    "hello_timeout", "http_request", "malformed", "no_secret", "not_hello", "oversized",
    "refused_by_peer", "secret_unexpected", "self_hello", "unexpected_hello", "unknown_key",
    "wrong_sender",
)
#: why an outbound handshake failed (realnet.outbound): the peer refused us, or we refused it
HANDSHAKE_REASONS = ("bad_handshake", "bad_proof", "handshake", "refused_by_peer")


def outcome_of(code: str) -> str:
    """The outcome class of an error code ("" for success)."""
    if not code:
        return "ok"
    if code == errors.NotFound.code:
        return "not_found"
    cls = errors.ERRORS_BY_CODE.get(code)
    return "fail" if cls is not None and cls.definite else "unknown"


class Histogram:
    """Counts per bucket and a sum; :meth:`observe` is the whole hot-path cost."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        #: one count per bound of LATENCY_BUCKETS, then the +Inf bucket (not cumulative)
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.sum += seconds

    @property
    def count(self) -> int:
        return sum(self.counts)

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative ``(le, count)`` pairs, as the exposition format wants them."""
        out: list[tuple[str, float]] = []
        total = 0
        for le, n in zip(_LE, self.counts, strict=True):
            total += n
            out.append((le, total))
        return out


class OpLatency:
    """Client operation latencies by (op, outcome class); see the module docstring."""

    __slots__ = ("_rows", "hists")

    def __init__(self) -> None:
        #: (op, outcome) -> histogram, created on first use (only observed series are exposed)
        self.hists: dict[tuple[str, str], Histogram] = {}
        #: op -> error code -> its class's histogram: two string-keyed lookups on the hot path
        #: (a tuple key would cost a tuple and its hash per request)
        self._rows: dict[str, dict[str, Histogram]] = {}

    def observe(
        self, op: str, code: str, seconds: float,
        _bisect: Callable[[Sequence[float], float], int] = bisect_left,
        _bounds: tuple[float, ...] = LATENCY_BUCKETS,
    ) -> None:
        # the two defaults are local names: cheaper than global lookups on the hot path
        row = self._rows.get(op)
        h = row.get(code) if row is not None else None
        if h is None:
            h = self._new(op, code)
        h.counts[_bisect(_bounds, seconds)] += 1
        h.sum += seconds

    def _new(self, op: str, code: str) -> Histogram:
        key = (op, outcome_of(code))
        h = self.hists.get(key)
        if h is None:
            h = self.hists[key] = Histogram()
        row = self._rows.setdefault(op, {})
        if len(row) < 64:  # codes come from peers too: keep the table bounded
            row[code] = h
        return h


class ForwardMeter:
    """Forward round trips, from the transport's frames (see the module docstring)."""

    def __init__(
        self, clock: Callable[[], float], timeout: float, max_pending: int = 65536
    ) -> None:
        self.clock = clock
        self.timeout = timeout
        self.max_pending = max_pending
        #: request id -> (peer it was sent to, when); oldest first (ids only grow)
        self._pending: dict[int, tuple[str, float]] = {}
        #: outcome class -> histogram
        self.hists: dict[str, Histogram] = {}
        #: error code ("" for success) -> its outcome class's histogram: one lookup per reply
        self._by_code: dict[str, Histogram] = {}

    def sent(self, dst: str, msg: Any) -> None:
        pending = self._pending
        pending[msg.request_id] = (dst, self.clock())
        if len(pending) > self.max_pending:  # forwards never answered (timed out, peer gone)
            del pending[next(iter(pending))]

    def received(
        self, src: str, msg: Any,
        _bisect: Callable[[Sequence[float], float], int] = bisect_left,
        _bounds: tuple[float, ...] = LATENCY_BUCKETS,
    ) -> None:
        # (the two defaults are local names, as in OpLatency.observe)
        p = self._pending.pop(msg.request_id, None)
        if p is None or p[0] != src:
            return  # a duplicate, or an id we did not send to this peer
        seconds = self.clock() - p[1]
        if seconds > self.timeout:
            return  # the client was already told forward_timeout: a late reply
        code = msg.reply.error
        h = self._by_code.get(code)
        if h is None:
            h = self._new(code)
        if seconds < 0.0:
            seconds = 0.0
        h.counts[_bisect(_bounds, seconds)] += 1  # Histogram.observe, inline
        h.sum += seconds

    def _new(self, code: str) -> Histogram:
        """The histogram of ``code``'s outcome class (``hists``), remembered for the code."""
        outcome = outcome_of(code)
        h = self.hists.get(outcome)
        if h is None:
            h = self.hists[outcome] = Histogram()
        if len(self._by_code) < 64:  # codes come from peers: keep the table bounded
            self._by_code[code] = h
        return h

    def watch(self, send_observers: dict[str, Any], receive_observers: dict[str, Any]) -> None:
        """Register on a transport's observer tables (``PeerTransport``)."""
        send_observers[Forward.__name__] = self.sent
        send_observers[Asking.__name__] = self.sent
        receive_observers[ForwardReply.__name__] = self.received


# --- the collector ----------------------------------------------------------------------------


def _counter(
    name: str, doc: str, label: str, rows: Iterable[tuple[str, float]]
) -> CounterMetricFamily | None:
    """A counter family with one label, or None when it would have no sample."""
    m = CounterMetricFamily(name, doc, labels=[label])
    for value, n in rows:
        m.add_metric([value], n)
    return m if m.samples else None


def _with_known(known: Sequence[str], data: Mapping[str, int]) -> list[tuple[str, int]]:
    """Every known label value (0 when unseen), plus any other that was counted."""
    merged = dict.fromkeys(known, 0)
    merged.update(data)
    return sorted(merged.items())


class NodeCollector:
    """Reads the node's, the transport's and the HTTP server's counters at scrape time."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def describe(self) -> list[Metric]:
        return []  # registering must not trigger a collect

    def collect(self) -> Iterator[Metric]:
        for group in (
            self.messages, self.client_ops, self.forwards, self.transport, self.http,
            self.store, self.membership, self.latencies, self.raft,
        ):
            for family in group():
                if family is not None:
                    yield family

    def messages(self) -> Iterator[Metric | None]:
        st = self.api.node.stats
        for name, doc, data in (
            ("storelab_messages_sent", "Peer messages sent, by kind.", st.sent),
            ("storelab_messages_received", "Peer messages received, by kind.", st.received),
            ("storelab_message_bytes_sent", "Peer frame bytes sent, by kind.", st.sent_bytes),
            ("storelab_message_bytes_received", "Peer frame bytes received, by kind.",
             st.received_bytes),
        ):
            yield _counter(name, doc, "kind", sorted(data.items()))

    def client_ops(self) -> Iterator[Metric | None]:
        ops = CounterMetricFamily(
            "storelab_client_ops",
            "Client operations by op, outcome, and origin (client: asked here; forwarded: "
            "applied here for another node).",
            labels=["op", "outcome", "origin"],
        )
        for k, v in sorted(self.api.node.stats.ops.items()):
            op, _, outcome = k.partition(" ")
            origin = "client"
            if op.endswith("(forwarded)"):
                op, origin = op[: -len("(forwarded)")], "forwarded"
            ops.add_metric([op, outcome, origin], v)
        yield ops if ops.samples else None

    def forwards(self) -> Iterator[Metric | None]:
        st = self.api.node.stats
        for name, doc, value in (
            ("storelab_forwards_sent", "Requests forwarded to their owner.", st.forwards_sent),
            ("storelab_forwards_received", "Forwarded requests received.", st.forwards_received),
            ("storelab_forward_timeouts", "Forwards that timed out (504).", st.forward_timeouts),
            ("storelab_forward_duplicates", "Duplicate forwards answered from memory.",
             st.forward_duplicates),
            ("storelab_late_replies", "Forward replies that arrived too late.", st.late_replies),
            ("storelab_messages_malformed", "Peer messages the node could not use.", st.malformed),
        ):
            yield CounterMetricFamily(name, doc, value=value)
        yield GaugeMetricFamily(
            "storelab_pending_forwards", "Forwards waiting for a reply.",
            value=self.api.node.pending_forwards(),
        )

    def transport(self) -> Iterator[Metric | None]:
        tr = self.api.transport.stats
        for name, doc, value in (
            ("storelab_peer_connects", "Outbound peer connections established.", tr.connects),
            ("storelab_peer_connect_failures", "Failed outbound connection attempts.",
             tr.connect_failures),
            ("storelab_peer_handler_errors", "Node exceptions while handling a peer message.",
             tr.handler_errors),
            ("storelab_peer_http_answers",
             "Outbound peer connections answered in HTTP (an HTTP port given as a peer address).",
             tr.http_answers),
            ("storelab_peer_inbound_rejected",
             "Inbound peer connections refused on accept: over max_inbound.", tr.inbound_rejected),
            ("storelab_peer_inbound_idle_closed",
             "Inbound peer connections closed after inbound_idle_timeout without a frame.",
             tr.inbound_idle_closed),
            ("storelab_peer_keyring_reloads", "Times the cluster secret was read again (SIGHUP).",
             tr.keyring_reloads),
            ("storelab_peer_keyring_reload_failures",
             "Times reading the cluster secret again failed (the old keys stay in use).",
             tr.keyring_reload_failures),
        ):
            yield CounterMetricFamily(name, doc, value=value)
        yield _counter(
            "storelab_frames_malformed",
            "Inbound peer connections closed for bad input, by reason (http_request: an HTTP "
            "request on the peer port, answered 400 wrong_port).",
            "reason", _with_known(MALFORMED_REASONS, tr.frames_malformed),
        )
        yield _counter(
            "storelab_peer_handshakes_failed",
            "Outbound peer connections whose authentication handshake failed, by reason.",
            "reason", _with_known(HANDSHAKE_REASONS, tr.handshakes_failed),
        )
        yield _counter(
            "storelab_messages_dropped", "Peer messages not sent, by reason.",
            "reason", _with_known(DROP_REASONS, tr.dropped),
        )
        by_state: dict[str, int] = {}
        for link in self.api.transport.links.values():
            by_state[link.state] = by_state.get(link.state, 0) + 1
        links = GaugeMetricFamily(
            "storelab_peer_links", "Outbound peer links, by state.", labels=["state"]
        )
        for state, n in sorted(by_state.items()):
            links.add_metric([state], n)
        yield links if links.samples else None
        rtt = GaugeMetricFamily(
            "storelab_peer_rtt_seconds", "Smoothed round-trip time of SWIM probes to the member.",
            labels=["peer"],
        )
        if self.api.rtt is not None:
            for pid, seconds in sorted(self.api.rtt.srtt.items()):
                rtt.add_metric([pid], seconds)
        yield rtt if rtt.samples else None

    def http(self) -> Iterator[Metric | None]:
        api = self.api
        yield _counter(
            "storelab_http_requests", "HTTP requests answered by the API, by status.",
            "status", [(str(code), v) for code, v in sorted(api.statuses.items())],
        )
        stats = api.http_stats()
        if stats is not None:
            yield CounterMetricFamily(
                "storelab_http_rejected",
                "HTTP requests refused by the server before routing (malformed, too large).",
                value=stats.bad_requests,
            )
            yield GaugeMetricFamily(
                "storelab_http_connections", "Open HTTP connections.", value=stats.connections_open
            )
            yield GaugeMetricFamily(
                "storelab_http_buffered_bytes",
                "Bytes of requests (bodies being received) held across HTTP connections.",
                value=stats.buffered,
            )
        refused = dict(stats.refused) if stats is not None else {}
        refused["unauthorized"] = api.statuses.get(401, 0)
        refused["misdirected"] = api.statuses.get(421, 0)
        yield _counter(
            "storelab_http_refused",
            "HTTP connections and requests refused to bound resources or guard the doors, by reason "
            "(connections: over the cap; head_timeout; body_timeout: a request unfinished within the "
            "request timeout; buffered_bodies; accept_errors: EMFILE and kin; unauthorized: no or a "
            "wrong token; misdirected: a Host not the node's).",
            "reason", sorted(refused.items()),
        )
        yield _counter(
            "storelab_log_suppressed",
            "Log lines about malformed or abusive input that the rate limit held back, by kind.",
            "kind", sorted([*http_refusals.dropped.items(),
                            *((f"bus.{k}", v) for k, v in self.api.transport.ratelog.dropped.items())]),
        )

    def store(self) -> Iterator[Metric | None]:
        node = self.api.node
        yield GaugeMetricFamily("storelab_keys", "Keys stored on this node.", value=node.store.count())
        yield GaugeMetricFamily(
            "storelab_store_bytes", "Bytes of keys and values stored.", value=node.store.bytes_used
        )
        yield GaugeMetricFamily(
            "storelab_slots_owned", "Slots this node owns.",
            value=node.slot_map.slot_counts().get(node.id, 0),
        )
        storage: Any = node.rt.storage
        stats = getattr(storage, "stats", None)  # the storage log (realnet.kvlog)
        if isinstance(stats, dict):
            for name, doc in (
                ("puts", "Writes to the storage log (the store when durable, and what a node "
                 "keeps to come back as itself)."),
                ("fsyncs", "fsyncs of the storage log: one per loop turn that wrote (group commit)."),
                ("compactions", "Rewrites of the storage log from its image."),
                ("compaction_failures", "Rewrites of the storage log that failed (the log was kept; "
                 "tried again once it grew by compact_bytes)."),
            ):
                yield CounterMetricFamily(f"storelab_storage_{name}", doc, value=stats[name])
            yield GaugeMetricFamily(
                "storelab_storage_log_bytes", "Bytes of the storage log file.",
                value=storage.log_size(),
            )

    def membership(self) -> Iterator[Metric | None]:
        ms = self.api.node.membership
        counts = dict.fromkeys(STATES, 0)
        for m in ms.members.values():
            counts[m.state] = counts.get(m.state, 0) + 1
        members = GaugeMetricFamily(
            "storelab_members", "Members in this node's view (itself included), by state.",
            labels=["state"],
        )
        for state, n in counts.items():
            members.add_metric([state], n)
        yield members
        yield _counter(
            "storelab_swim_events",
            "SWIM membership events on this node (probes, ping_reqs, probe_failures, refutes, "
            "declared_dead, joins, ...).",
            "event", sorted(ms.counters.items()),
        )
        yield GaugeMetricFamily(
            "storelab_swim_awareness",
            "Lifeguard local health score (0 is healthy; probe timeouts scale by score + 1).",
            value=ms.awareness.score,
        )
        yield GaugeMetricFamily(
            "storelab_swim_incarnation", "This node's incarnation number.", value=ms.me.incarnation
        )
        yield GaugeMetricFamily(
            "storelab_swim_broadcast_queue", "Membership updates waiting to be gossiped.",
            value=len(ms.broadcasts),
        )

    def latencies(self) -> Iterator[Metric | None]:
        api = self.api
        ops = HistogramMetricFamily(
            "storelab_client_op_latency_seconds",
            "Client operations from the complete request to the node's reply, by op and outcome "
            "class (ok, not_found, fail: certainly not applied, unknown).",
            labels=["op", "outcome"],
        )
        for (op, outcome), h in sorted(api.op_latency.hists.items()):
            ops.add_metric([op, outcome], h.buckets(), h.sum)
        yield ops if ops.samples else None
        fwd = HistogramMetricFamily(
            "storelab_forward_latency_seconds",
            "Forwards from the Forward (or Asking) sent to the owner's ForwardReply, by outcome "
            "class of the reply.",
            labels=["outcome"],
        )
        for outcome, h in sorted(api.forward_meter.hists.items()):
            fwd.add_metric([outcome], h.buckets(), h.sum)
        yield fwd if fwd.samples else None


    def raft(self) -> Iterator[Metric | None]:
        """A replicated group's families (:mod:`realnet.raftmetrics`); none without a group."""
        api = self.api
        opener = getattr(api, "raft_opener", None)
        yield from raft_families(raft_info(api.node), opener.current if opener is not None else None)


def raft_info(node: Any) -> dict[str, Any] | None:
    """``info()["raft"]`` of the node's replicated group, read without the rest of ``info()``;
    None when the node runs no group."""
    group = getattr(node, "replica", None)
    if group is None:
        return None
    info: dict[str, Any] = group.info()
    return info


class FrozenCollector:
    """``storelab_gc_frozen_objects``: what ``gc.freeze`` moved out of the collector's reach."""

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "storelab_gc_frozen_objects",
            "Objects frozen once the node was built (gc.freeze): never scanned by a collection.",
            value=gc.get_freeze_count(),
        )


def registry(api: Api) -> CollectorRegistry:
    """A registry with the node's collector and the process, garbage collector and platform
    collectors."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(NodeCollector(api))
    ProcessCollector(registry=reg)
    GCCollector(registry=reg)
    reg.register(FrozenCollector())
    PlatformCollector(registry=reg)
    return reg


__all__ = [
    "LATENCY_BUCKETS",
    "OPS",
    "OUTCOMES",
    "ForwardMeter",
    "FrozenCollector",
    "Histogram",
    "NodeCollector",
    "OpLatency",
    "outcome_of",
    "registry",
]
