"""The client HTTP API of a node, on top of :mod:`realnet.http`.

Theory of operation
-------------------
:class:`Api` is the handler given to :func:`realnet.http.start_http_server`: it maps each
request onto the node's single client entry point, ``node.on_client_request(op, reply)``, and
the node's views onto JSON. Routes (DESIGN.md, "The two worlds"):

==========================  ===================================================================
``PUT /kv/{key}``           set the key to the request body; 204
``GET /kv/{key}``           200 with the value (``application/octet-stream``); 404 if absent
``DELETE /kv/{key}``        204; 404 if absent
``GET /cluster/slots``      the slot map as ranges with owner id, owner client address, epoch
``GET /cluster/members``    every node of this node's view (itself included) with its state
``GET /cluster/info``       ``node.info()`` plus node, transport and HTTP counters
``GET /health``             ``{"status": "ok", "id": ...}``
``GET /metrics``            Prometheus text format
==========================  ===================================================================

``HEAD`` is accepted wherever ``GET`` is (RFC 9110 §9.3.2: same head, no body).

Keys are the path after ``/kv/``, percent-decoded to bytes (``urllib.parse.unquote_to_bytes``),
so any byte string is a key: ``/kv/a%2Fb`` and ``/kv/a/b`` both name ``a/b``. A query string is
ignored. An empty key is 400.

The hot path is synchronous. ``on_client_request`` calls ``reply`` before it returns when the
slot is local (or the request fails validation, or the owner is known down), and then the
handler returns a :class:`~realnet.http.Response` directly: no future, no task, the response is
written inside the same ``data_received`` call. Only when the node forwarded the request does
the handler return an :class:`asyncio.Future` that the owner's reply (or the forward timeout)
resolves.

Errors use one JSON form, ``{"error": CODE, "message": SENTENCE}``, with the status of
:func:`kvcore.errors.http_status` for store errors, ``404 not_found`` naming the path for an
unknown route, and ``405 method_not_allowed`` with an ``Allow`` header for a known route and a
wrong method. Limits the HTTP layer enforces itself (a body over ``max_value_bytes``: 413
``too_large``; malformed requests: 400) never reach this module.

``/metrics`` is produced by a custom :mod:`prometheus_client` collector that reads the counters
the node, the transport and the HTTP server already keep, at scrape time: nothing is counted
twice and the hot path does not touch a Prometheus object.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from kvcore import errors
from kvcore.messages import Delete, Get, Put, Reply
from kvcore.node import Node
from kvcore.slots import NUM_SLOTS, format_ranges
from realnet.http import (
    HttpLimits,
    HttpServerStats,
    Request,
    Response,
    error_response,
    json_response,
)
from realnet.transport import PeerTransport

log = logging.getLogger("realnet.api")

OCTETS = "application/octet-stream"
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
_NO_CONTENT = Response(204)

_KV_METHODS = "GET, HEAD, PUT, DELETE"
_READ_METHODS = "GET, HEAD"


def http_limits(max_key_bytes: int, max_value_bytes: int) -> HttpLimits:
    """HTTP limits that let every valid request through and nothing much bigger.

    The body limit is the value limit, so a too-big upload is refused (413) from its
    Content-Length before it is read. The head must hold a percent-encoded key (3 bytes per key
    byte at worst) plus ordinary headers.
    """
    return HttpLimits(
        max_body=max_value_bytes,
        max_header_bytes=max(16 * 1024, 3 * max_key_bytes + 8 * 1024),
    )


@dataclass(frozen=True)
class Member:
    """A node's addresses as this node knows them."""

    id: str
    addr: str  # client HTTP address
    peer_addr: str


def _sentence(text: str) -> str:
    """kvcore messages are lower-case clauses; the API answers with sentences."""
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def reply_response(reply: Reply, is_get: bool) -> Response:
    """The HTTP response for a node's reply to a client operation."""
    if not reply.error:
        if is_get:
            return Response(200, reply.value or b"", OCTETS)
        return _NO_CONTENT
    return error_response(errors.http_status(reply.error), reply.error, _sentence(reply.message))


class _ReplySlot:
    """The ``reply`` callback of one request: a value now, or a future resolved later."""

    __slots__ = ("api", "future", "is_get", "response")

    def __init__(self, api: Api, is_get: bool) -> None:
        self.api = api
        self.is_get = is_get
        self.response: Response | None = None
        self.future: asyncio.Future[Response] | None = None

    def __call__(self, reply: Reply) -> None:
        resp = reply_response(reply, self.is_get)
        fut = self.future
        if fut is None:
            if self.response is None:
                self.response = resp
            return
        if not fut.done():
            self.api.count_status(resp.status)
            fut.set_result(resp)


class Api:
    """The request handler of one node (see the module docstring)."""

    def __init__(
        self,
        node: Node,
        transport: PeerTransport,
        members: Mapping[str, Member],
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        http_stats: Callable[[], HttpServerStats | None] = lambda: None,
    ) -> None:
        self.node = node
        self.transport = transport
        #: every node this node knows, itself included, by id
        self.members = dict(sorted(members.items()))
        self.loop = loop if loop is not None else asyncio.get_running_loop()
        self.http_stats = http_stats
        self.started_at = self.loop.time()
        #: responses produced by this handler, by status code
        self.statuses: dict[int, int] = {}
        self._slots_cache: tuple[int, bytes] | None = None
        self._routes: dict[str, tuple[str, Callable[[], Response]]] = {
            "/health": (_READ_METHODS, self.health),
            "/cluster/slots": (_READ_METHODS, self.cluster_slots),
            "/cluster/members": (_READ_METHODS, self.cluster_members),
            "/cluster/info": (_READ_METHODS, self.cluster_info),
            "/metrics": (_READ_METHODS, self.metrics),
        }
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))

    def count_status(self, status: int) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1

    # --- dispatch ----------------------------------------------------------------------

    def __call__(self, req: Request) -> Response | asyncio.Future[Response]:
        path = req.path
        if path.startswith("/kv/"):
            result = self.kv(req, path)
            if type(result) is Response:
                self.count_status(result.status)
            return result
        route = self._routes.get(path)
        if route is None:
            resp = error_response(404, "not_found", f"There is no resource at {path[:200]!r}.")
        elif req.method not in ("GET", "HEAD"):
            resp = self._not_allowed(req.method, path, route[0])
        else:
            resp = route[1]()
        self.count_status(resp.status)
        return resp

    @staticmethod
    def _not_allowed(method: str, path: str, allow: str) -> Response:
        resp = error_response(
            405, "method_not_allowed", f"{method} is not allowed on {path}; use {allow}."
        )
        resp.headers = (("Allow", allow),)
        return resp

    def kv(self, req: Request, path: str) -> Response | asyncio.Future[Response]:
        method = req.method
        raw = path[4:]  # ASCII: realnet.http refuses any other request-target
        key = urllib.parse.unquote_to_bytes(raw) if "%" in raw else raw.encode("ascii")
        if not key and method in ("GET", "HEAD", "PUT", "DELETE"):
            return error_response(400, "bad_request", "The key is empty; use /kv/{key}.")
        if method == "GET" or method == "HEAD":
            op: Get | Put | Delete = Get(key=key)
        elif method == "PUT":
            op = Put(key=key, value=req.body)
        elif method == "DELETE":
            op = Delete(key=key)
        else:
            return self._not_allowed(method, "/kv/{key}", _KV_METHODS)
        slot = _ReplySlot(self, type(op) is Get)
        self.node.on_client_request(op, slot)
        if slot.response is not None:
            return slot.response  # answered synchronously: local, invalid, or owner down
        fut: asyncio.Future[Response] = self.loop.create_future()
        slot.future = fut
        return fut

    # --- views -------------------------------------------------------------------------

    def health(self) -> Response:
        return json_response(200, {"status": "ok", "id": self.node.id})

    def slots_view(self) -> dict[str, Any]:
        """The slot map as CLUSTER SLOTS-like ranges: maximal runs of one owner and epoch."""
        sm = self.node.slot_map
        ranges: list[dict[str, Any]] = []
        start = 0
        cur = (sm.owner(0), sm.epoch(0))
        for s in range(1, NUM_SLOTS + 1):
            nxt = (sm.owner(s), sm.epoch(s)) if s < NUM_SLOTS else None
            if nxt != cur:
                owner, epoch = cur
                if owner is not None:
                    m = self.members.get(owner)
                    ranges.append(
                        {
                            "start": start,
                            "end": s - 1,
                            "node": owner,
                            "addr": m.addr if m else None,
                            "epoch": epoch,
                        }
                    )
                if nxt is not None:
                    start, cur = s, nxt
        return {
            "epoch": sm.max_epoch(),
            "slots": ranges,
            "unassigned": format_ranges(sm.unassigned()),
        }

    def cluster_slots(self) -> Response:
        # The map changes rarely and building the view walks 16384 slots: cache it by version.
        version = self.node.slot_map.version
        cached = self._slots_cache
        if cached is None or cached[0] != version:
            body = json_response(200, self.slots_view()).body
            cached = self._slots_cache = (version, body)
        return Response(200, cached[1], "application/json")

    def members_view(self) -> list[dict[str, Any]]:
        node = self.node
        states = node.peer_states()
        sm = node.slot_map
        out: list[dict[str, Any]] = []
        for mid, m in self.members.items():
            entry: dict[str, Any] = {"id": mid, "addr": m.addr, "peer_addr": m.peer_addr}
            if mid == node.id:
                entry.update(state="reachable", self=True, rtt_ms=0.0)
            else:
                h = node.peers.get(mid)
                srtt = h.srtt if h is not None else None
                link = self.transport.links.get(mid)
                entry.update(
                    state=states.get(mid, "unknown"),
                    self=False,
                    rtt_ms=None if srtt is None else round(srtt * 1000, 3),
                    pings_sent=h.pings_sent if h else 0,
                    pongs_received=h.pongs_received if h else 0,
                    link=link.state if link else None,
                )
            entry["slots"] = format_ranges(sm.ranges_of(mid))
            out.append(entry)
        return out

    def cluster_members(self) -> Response:
        return json_response(200, self.members_view())

    def info_view(self) -> dict[str, Any]:
        node = self.node
        info = node.info()
        me = self.members.get(node.id)
        info["addr"] = me.addr if me else None
        info["peer_addr"] = me.peer_addr if me else None
        info["uptime_s"] = round(self.loop.time() - self.started_at, 3)
        info["stats"] = node.stats.as_dict()
        info["transport"] = self.transport.info()
        http = self.http_stats()
        info["http"] = {
            **(http.snapshot() if http is not None else {}),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
        }
        return info

    def cluster_info(self) -> Response:
        return json_response(200, self.info_view())

    def metrics(self) -> Response:
        return Response(200, generate_latest(self.registry), PROMETHEUS_TEXT)


class _Collector:
    """Reads the existing counters at scrape time (see the module docstring)."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def describe(self) -> list[Metric]:
        return []  # registering must not trigger a collect

    def collect(self) -> Iterator[Metric]:
        api = self.api
        node = api.node
        st = node.stats
        tr = api.transport.stats

        def by_kind(name: str, doc: str, data: Mapping[str, int]) -> CounterMetricFamily:
            m = CounterMetricFamily(name, doc, labels=["kind"])
            for k, v in sorted(data.items()):
                m.add_metric([k], v)
            return m

        yield by_kind("storelab_messages_sent", "Peer messages sent, by kind.", st.sent)
        yield by_kind("storelab_messages_received", "Peer messages received, by kind.", st.received)
        yield by_kind(
            "storelab_message_bytes_sent", "Peer frame bytes sent, by kind.", st.sent_bytes
        )
        yield by_kind(
            "storelab_message_bytes_received", "Peer frame bytes received, by kind.",
            st.received_bytes,
        )

        ops = CounterMetricFamily(
            "storelab_client_ops",
            "Client operations by op, outcome, and origin (client: asked here; forwarded: "
            "applied here for another node).",
            labels=["op", "outcome", "origin"],
        )
        for k, v in sorted(st.ops.items()):
            op, _, outcome = k.partition(" ")
            origin = "client"
            if op.endswith("(forwarded)"):
                op, origin = op[: -len("(forwarded)")], "forwarded"
            ops.add_metric([op, outcome, origin], v)
        yield ops

        for name, doc, value in (
            ("storelab_forwards_sent", "Requests forwarded to their owner.", st.forwards_sent),
            ("storelab_forwards_received", "Forwarded requests received.", st.forwards_received),
            ("storelab_forward_timeouts", "Forwards that timed out (504).", st.forward_timeouts),
            ("storelab_forward_duplicates", "Duplicate forwards answered from memory.",
             st.forward_duplicates),
            ("storelab_late_replies", "Forward replies that arrived too late.", st.late_replies),
            ("storelab_messages_malformed", "Peer messages the node could not use.", st.malformed),
            ("storelab_peer_connects", "Outbound peer connections established.", tr.connects),
            ("storelab_peer_connect_failures", "Failed outbound connection attempts.",
             tr.connect_failures),
            ("storelab_peer_handler_errors", "Node exceptions while handling a peer message.",
             tr.handler_errors),
        ):
            yield CounterMetricFamily(name, doc, value=value)

        mal = CounterMetricFamily(
            "storelab_frames_malformed",
            "Inbound peer connections closed for bad input, by reason.",
            labels=["reason"],
        )
        for k, v in sorted(tr.frames_malformed.items()):
            mal.add_metric([k], v)
        yield mal

        drop = CounterMetricFamily(
            "storelab_messages_dropped", "Peer messages not sent, by reason.", labels=["reason"]
        )
        for k, v in sorted(tr.dropped.items()):
            drop.add_metric([k], v)
        yield drop

        req = CounterMetricFamily(
            "storelab_http_requests",
            "HTTP requests answered by the API, by status.",
            labels=["status"],
        )
        for code, v in sorted(api.statuses.items()):
            req.add_metric([str(code)], v)
        yield req
        http = api.http_stats()
        if http is not None:
            yield CounterMetricFamily(
                "storelab_http_rejected",
                "HTTP requests refused by the server before routing (malformed, too large).",
                value=http.bad_requests,
            )
            yield GaugeMetricFamily(
                "storelab_http_connections", "Open HTTP connections.", value=http.connections_open
            )

        yield GaugeMetricFamily("storelab_keys", "Keys stored on this node.", value=node.store.count())
        yield GaugeMetricFamily(
            "storelab_store_bytes", "Bytes of keys and values stored.", value=node.store.bytes_used
        )
        yield GaugeMetricFamily(
            "storelab_slots_owned", "Slots this node owns.",
            value=node.slot_map.slot_counts().get(node.id, 0),
        )
        yield GaugeMetricFamily(
            "storelab_pending_forwards", "Forwards waiting for a reply.",
            value=node.pending_forwards(),
        )
        up = GaugeMetricFamily(
            "storelab_peer_reachable",
            "1 when the health check considers the peer reachable (or not yet known).",
            labels=["peer"],
        )
        rtt = GaugeMetricFamily(
            "storelab_peer_rtt_seconds", "Smoothed round-trip time to the peer.", labels=["peer"]
        )
        for pid, state in node.peer_states().items():
            up.add_metric([pid], 0.0 if state == "unreachable" else 1.0)
            h = node.peers[pid]
            if h.srtt is not None:
                rtt.add_metric([pid], h.srtt)
        yield up
        yield rtt


__all__ = ["Api", "Member", "http_limits", "reply_response"]
