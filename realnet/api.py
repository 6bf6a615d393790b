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
``GET /cluster/members``    every member of this node's gossip view (itself included)
``GET /cluster/info``       ``node.info()`` plus SWIM, node, transport and HTTP counters
``GET /cluster/keyslots``   ``{"id", "slots"}``: the slots this node holds keys of, as ranges
``GET /health``             ``{"status": "ok", "id": ...}``
``GET /metrics``            Prometheus text format
``POST /cluster/...``       the admin endpoints below (JSON in, JSON out)
==========================  ===================================================================

``HEAD`` is accepted wherever ``GET`` is (RFC 9110 §9.3.2: same head, no body).

Keys are the path after ``/kv/``, percent-decoded to bytes (``urllib.parse.unquote_to_bytes``),
so any byte string is a key: ``/kv/a%2Fb`` and ``/kv/a/b`` both name ``a/b``. A query string is
ignored. An empty key is 400.

The hot path is synchronous. ``on_client_request`` calls ``reply`` before it returns when the
slot is local (or the request fails validation, or the owner is known down), and then the
handler returns a :class:`~realnet.http.Response` directly: no future, no task, the response is
written inside the same ``data_received`` call. Only when the node forwarded the request does
the handler return a deferred response that the owner's reply (or the forward timeout)
resolves: the request's :class:`_ReplySlot`, which :mod:`realnet.http` waits on as on a future.

Errors use one JSON form, ``{"error": CODE, "message": SENTENCE}``, with the status of
:func:`kvcore.errors.http_status` for store errors, ``404 not_found`` naming the path for an
unknown route, and ``405 method_not_allowed`` with an ``Allow`` header for a known route and a
wrong method. Limits the HTTP layer enforces itself (a body over ``max_value_bytes``: 413
``too_large``; malformed requests: 400) never reach this module.

``/cluster/members`` is the membership's view (:meth:`kvcore.node.Node.members_view`), one
object per member sorted by id: ``id``, ``addr`` (client HTTP address), ``peer_addr``, ``state``
(``alive``, ``suspect``, ``dead``, ``left``), ``incarnation``, ``slots`` (the ranges it
advertises), ``epoch``, ``self``, and from this process: ``rtt_ms`` (smoothed RTT of SWIM
probes, :class:`realnet.gossip.RttMeter`; null until measured) and ``link`` (the state of the
outbound link to it, null when there is none). Owner addresses in ``/cluster/slots`` come from
the same view, so a member that came back on another port is shown where it is now.

Admin endpoints
---------------
What ``storelab cluster`` (:mod:`realnet.admin`) drives, one kvcore admin call each (the admin
door of :class:`kvcore.node.Node`); Redis Cluster's ``CLUSTER MEET``, ``ADDSLOTS``,
``SETSLOT IMPORTING/MIGRATING/NODE``, ``MIGRATE`` as HTTP. All are ``POST`` with a JSON object
body (``Content-Type: application/json``) and answer a JSON object:

=============================  ================================================================
``/cluster/meet``              ``{"seeds": ["HOST:PEERPORT", ...]}``: join a cluster (empty
                               node only; it gives up the slots it owns) -> ``{"id", "seeds"}``
``/cluster/assign``            ``{"slots": "0-5460", "epoch": 2}``: replace this node's claim
                               (epoch above every epoch it knows; it also forgets the claims it
                               learned, so: a fresh node, before meeting) -> ``{"id", "slots",
                               "epoch"}``
``/cluster/claim``             ``{"slots": "5461-10922", "epoch": 3}``: add slots to this node's
                               claim (epoch above theirs), keeping the rest of its map; what a
                               node that met a cluster uses -> ``{"id", "slots", "epoch"}``
``/cluster/import``            ``{"slot": S, "source": ID}`` or ``{"slots": [...]|"RANGES", ...}``:
                               mark slots importing -> ``{"id", "slots", "source"}``
``/cluster/migrate``           ``{"slot"|"slots", "target": ID}``: mark slots migrating
``/cluster/move-keys``         ``{"slot": S, "count": N}`` -> ``{"slot", "moved", "error"}``
                               once the batch is acknowledged (or failed); with ``"slots"``, one
                               batch per slot at once -> ``{"moved", "failed", "results":
                               [{"slot", "moved", "error"}, ...]}``. ``moved`` 0 with no error:
                               the slot has no key left here. A batch holds at most ``count``
                               keys, and fewer when they would not fit in half a peer frame.
``/cluster/finish``            ``{"slots": [...]|"RANGES"}``: claim imported slots at a new
                               config epoch -> ``{"id", "slots", "epoch"}``
``/cluster/abort``             ``{"slot"|"slots"}``: roll back open marks -> ``{"id", "slots"}``
``/cluster/rollback``          ``{"slot"|"slots"}``: as abort, for a migration whose target is
                               gone (left or forgotten; 409 otherwise): a batch it never
                               acknowledged is abandoned -> ``{"id", "slots"}``
``/cluster/leave``             ``{}`` or ``{"force": true}``: leave gracefully; 202
                               ``{"id", "status": "leaving", "drain"}``, then the process stops
                               as on SIGTERM (exit status 0)
=============================  ================================================================

A body that is not a JSON object, a missing field or one of the wrong type is 400
``bad_request`` with a sentence; kvcore's refusals keep their status (``Conflict``: 409
``conflict``, e.g. importing a slot this node owns, meeting with keys, an epoch not above the
node's). The guards are the node's own (the admin door of :class:`kvcore.node.Node`), so the
sim refuses the same things with the same sentences; all 409, so that two orchestrators (an
operator and the automatic rebalancer, say) collide loudly instead of corrupting a move: a slot
already importing from another source or migrating to another target is refused, as is an
import from a member the node does not know, a migration to a node it does not hold alive or
suspect (its batches could never arrive) or to itself, and a claim at an epoch not above the
slots' current one. A list of slots is checked as a whole before any is marked. The API adds
two guards of its own: a ``move-keys`` for a slot whose previous ``move-keys`` is still waiting,
and ``leave`` while this node owns slots and has live peers (its keys would be lost; ``"force":
true`` overrides; a node that drains its slots before leaving, ``auto_rebalance``, may always
leave).

**Protection.** The admin endpoints are not authenticated, and neither is the peer port, which
already lets anyone who can reach it rewrite the slot map by gossip: a token on the HTTP side
alone would protect nothing. Both ports bind 127.0.0.1 unless told otherwise; expose them only
on a trusted network. One thing is enforced: the ``application/json`` content type (otherwise
415 ``unsupported_media_type``), which a web page cannot send cross-origin without a CORS
preflight that this server never grants, so a browser visiting a hostile page cannot make a
local node leave or move slots.

``/metrics`` is produced by a custom :mod:`prometheus_client` collector
(:mod:`realnet.metrics`) that reads the counters the node, the transport and the HTTP server
already keep, at scrape time: nothing is counted twice and the hot path does not touch a
Prometheus object. The one thing measured here is each client operation's latency: ``kv`` notes
``loop.time()`` when it hands the operation to the node, and the request's reply callback
observes the elapsed time in :attr:`Api.op_latency` (a bisect into a list of ints).
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.parse
from collections.abc import Callable
from typing import Any

from prometheus_client import generate_latest

from kvcore import errors
from kvcore.config import parse_addr
from kvcore.messages import Delete, Get, Put, Reply
from kvcore.node import Node
from kvcore.slots import (
    MAX_SLOT,
    NUM_SLOTS,
    SlotRangeError,
    format_ranges,
    parse_ranges,
    ranges_to_slots,
    slots_to_ranges,
)
from realnet.gossip import RttMeter
from realnet.http import (
    HttpLimits,
    HttpServerStats,
    Request,
    Response,
    error_response,
    json_response,
)
from realnet.metrics import ForwardMeter, OpLatency, registry
from realnet.transport import PeerTransport

log = logging.getLogger("realnet.api")

OCTETS = "application/octet-stream"
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
_NO_CONTENT = Response(204)

_KV_METHODS = "GET, HEAD, PUT, DELETE"
#: the client operations built positionally (kvcore.messages' ``_make``: no keyword parsing)
_make_get: Callable[[bytes], Get] = Get._make  # type: ignore[attr-defined]
_make_put: Callable[[bytes, bytes], Put] = Put._make  # type: ignore[attr-defined]
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
    """The ``reply`` callback of one request: a value now, or a response delivered later.

    When the node answers before ``on_client_request`` returns, the response is kept in
    ``response`` and the handler returns it. Otherwise the slot itself is what the handler
    returns: a minimal future (``add_done_callback``, ``done``, ``cancelled``, ``exception``,
    ``result``: what :mod:`realnet.http` reads) whose callback runs on the next loop iteration
    once the node replies, as an :class:`asyncio.Future`'s would, without the cost of one.
    The callbacks of every reply that arrived in one loop turn run together on the next one, in
    the order the replies came (:meth:`Api._defer`): one ``call_soon`` per batch, not per reply
    (a batch of ForwardReply frames read at once answers many requests).
    """

    __slots__ = ("_callback", "api", "deferred", "is_get", "op", "response", "t0")

    def __init__(self, api: Api, is_get: bool, op: str, t0: float) -> None:
        self.api = api
        self.is_get = is_get
        #: for the latency histogram: the op's name, and when the node was handed the request
        self.op = op
        self.t0 = t0
        self.response: Response | None = None
        self.deferred = False
        self._callback: Callable[[_ReplySlot], None] | None = None

    def __call__(self, reply: Reply) -> None:
        if self.response is not None:
            return  # a reply after the first one (the node answers each request once)
        api = self.api
        api.op_latency.observe(self.op, reply.error, api.loop.time() - self.t0)
        if not reply.error and self.is_get:  # reply_response's commonest case, inline
            resp = self.response = Response(200, reply.value or b"", OCTETS)
        else:
            resp = self.response = reply_response(reply, self.is_get)
        if self.deferred:
            api.count_status(resp.status)
            callback = self._callback
            if callback is not None:
                self._callback = None
                api._defer(callback, self)

    # --- the future protocol realnet.http uses -----------------------------------------------

    def add_done_callback(self, callback: Callable[[_ReplySlot], None]) -> None:
        if self.response is not None:
            self.api.loop.call_soon(callback, self)
        else:
            self._callback = callback

    def done(self) -> bool:
        return self.response is not None

    def cancelled(self) -> bool:
        return False

    def exception(self) -> BaseException | None:
        return None

    def result(self) -> Response:
        if self.response is None:
            raise asyncio.InvalidStateError("the node has not replied yet")
        return self.response


class Api:
    """The request handler of one node (see the module docstring)."""

    def __init__(
        self,
        node: Node,
        transport: PeerTransport,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        http_stats: Callable[[], HttpServerStats | None] = lambda: None,
        rtt: RttMeter | None = None,
        swim_preset: str = "",
        on_leave: Callable[[], None] | None = None,
        drains_on_leave: bool = False,
    ) -> None:
        self.node = node
        #: called (soon after the 202 is written) to stop the process as SIGTERM does
        self.on_leave = on_leave
        #: the node moves its slots away before it leaves (``auto_rebalance``)
        self.drains_on_leave = drains_on_leave
        #: slots whose ``move-keys`` is waiting for the target's acknowledgement
        self._moving: set[int] = set()
        self.transport = transport
        self.rtt = rtt
        self.swim_preset = swim_preset
        self.loop = loop if loop is not None else asyncio.get_running_loop()
        self.http_stats = http_stats
        self.started_at = self.loop.time()
        #: responses produced by this handler, by status code
        self.statuses: dict[int, int] = {}
        #: deferred responses whose callbacks run on the next loop iteration (see _ReplySlot)
        self._ready: list[tuple[Callable[[_ReplySlot], None], _ReplySlot]] = []
        self._slots_cache: tuple[int, list[dict[str, Any]]] | None = None
        self._slots_body: tuple[tuple[int, tuple[str | None, ...]], bytes] | None = None
        self._routes: dict[str, tuple[str, Callable[[], Response]]] = {
            "/health": (_READ_METHODS, self.health),
            "/cluster/slots": (_READ_METHODS, self.cluster_slots),
            "/cluster/members": (_READ_METHODS, self.cluster_members),
            "/cluster/info": (_READ_METHODS, self.cluster_info),
            "/cluster/keyslots": (_READ_METHODS, self.cluster_keyslots),
            "/metrics": (_READ_METHODS, self.metrics),
        }
        self._admin: dict[str, Callable[[dict[str, Any]], Response | asyncio.Future[Response]]] = {
            "/cluster/meet": self.admin_meet,
            "/cluster/assign": self.admin_assign,
            "/cluster/claim": self.admin_claim,
            "/cluster/import": self.admin_import,
            "/cluster/migrate": self.admin_migrate,
            "/cluster/move-keys": self.admin_move_keys,
            "/cluster/finish": self.admin_finish,
            "/cluster/abort": self.admin_abort,
            "/cluster/rollback": self.admin_rollback,
            "/cluster/leave": self.admin_leave,
        }
        #: client operation latencies (observed by each request's _ReplySlot)
        self.op_latency = OpLatency()
        #: forward round trips, measured on the transport's frames
        self.forward_meter = ForwardMeter(self.loop.time, node.config.forward_timeout)
        self.forward_meter.watch(transport.send_observers, transport.receive_observers)
        self.registry = registry(self)

    def _defer(self, callback: Callable[[_ReplySlot], None], slot: _ReplySlot) -> None:
        """Run ``callback(slot)`` on the next loop iteration, with the others of this turn."""
        ready = self._ready
        ready.append((callback, slot))
        if len(ready) == 1:
            self.loop.call_soon(self._run_ready)

    def _run_ready(self) -> None:
        ready, self._ready = self._ready, []
        for callback, slot in ready:
            try:
                callback(slot)
            except Exception:  # as the loop does for a failing callback: log, go on
                log.exception("a deferred response callback failed")

    def count_status(self, status: int) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1

    # --- dispatch ----------------------------------------------------------------------

    def __call__(self, req: Request) -> Response | asyncio.Future[Response] | _ReplySlot:
        path = req.path
        if path.startswith("/kv/"):
            result = self.kv(req, path)
            if type(result) is Response:
                statuses = self.statuses  # count_status, inline on the hot path
                status = result.status
                statuses[status] = statuses.get(status, 0) + 1
            return result
        route = self._routes.get(path)
        if route is None and path in self._admin:
            result = self.admin(req, path)
            if type(result) is Response:
                self.count_status(result.status)
            return result
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

    def kv(self, req: Request, path: str) -> Response | _ReplySlot:
        method = req.method
        raw = path[4:]  # ASCII: realnet.http refuses any other request-target
        key = urllib.parse.unquote_to_bytes(raw) if "%" in raw else raw.encode("ascii")
        if not key and method in ("GET", "HEAD", "PUT", "DELETE"):
            return error_response(400, "bad_request", "The key is empty; use /kv/{key}.")
        if method == "GET" or method == "HEAD":
            op: Get | Put | Delete = _make_get(key)
            name = "get"
        elif method == "PUT":
            op = _make_put(key, req.body)
            name = "put"
        elif method == "DELETE":
            op = Delete(key=key)
            name = "delete"
        else:
            return self._not_allowed(method, "/kv/{key}", _KV_METHODS)
        slot = _ReplySlot(self, name == "get", name, self.loop.time())
        self.node.on_client_request(op, slot)
        if slot.response is not None:
            return slot.response  # answered synchronously: local, invalid, or owner down
        slot.deferred = True  # forwarded: realnet.http waits on the slot like on a future
        return slot

    # --- views -------------------------------------------------------------------------

    def health(self) -> Response:
        return json_response(200, {"status": "ok", "id": self.node.id})

    def _slot_runs(self) -> list[dict[str, Any]]:
        """Maximal runs of one owner and epoch (cached by slot map version: 16384 slots)."""
        sm = self.node.slot_map
        cached = self._slots_cache
        if cached is not None and cached[0] == sm.version:
            return cached[1]
        runs: list[dict[str, Any]] = []
        start = 0
        cur = (sm.owner(0), sm.epoch(0))
        for s in range(1, NUM_SLOTS + 1):
            nxt = (sm.owner(s), sm.epoch(s)) if s < NUM_SLOTS else None
            if nxt != cur:
                owner, epoch = cur
                if owner is not None:
                    runs.append({"start": start, "end": s - 1, "node": owner, "epoch": epoch})
                if nxt is not None:
                    start, cur = s, nxt
        self._slots_cache = (sm.version, runs)
        return runs

    def _client_addr(self, member_id: str) -> str | None:
        m = self.node.membership.members.get(member_id)
        if m is None or not m.addr:
            return None
        return m.addr

    def slots_view(self) -> dict[str, Any]:
        """The slot map as CLUSTER SLOTS-like ranges, each with its owner's client address."""
        sm = self.node.slot_map
        return {
            "epoch": sm.max_epoch(),
            "slots": [
                {"start": r["start"], "end": r["end"], "node": r["node"],
                 "addr": self._client_addr(r["node"]), "epoch": r["epoch"]}
                for r in self._slot_runs()
            ],
            "unassigned": format_ranges(sm.unassigned()),
        }

    def cluster_slots(self) -> Response:
        # Clients refresh their map from here; the body is kept until the map or an owner's
        # address changes.
        runs = self._slot_runs()
        key = (self.node.slot_map.version, tuple(self._client_addr(r["node"]) for r in runs))
        cached = self._slots_body
        if cached is None or cached[0] != key:
            cached = self._slots_body = (key, json_response(200, self.slots_view()).body)
        return Response(200, cached[1], "application/json")

    def members_view(self) -> list[dict[str, Any]]:
        node = self.node
        srtt = self.rtt.srtt if self.rtt is not None else {}
        links = self.transport.links
        out = node.members_view()
        for entry in out:
            mid = entry["id"]
            if mid == node.id:
                entry.update(self=True, rtt_ms=0.0, link=None)
                continue
            rtt = srtt.get(mid)
            link = links.get(mid)
            entry.update(
                self=False,
                rtt_ms=None if rtt is None else round(rtt * 1000, 3),
                link=link.state if link is not None else None,
            )
        return out

    def cluster_members(self) -> Response:
        return json_response(200, self.members_view())

    def info_view(self) -> dict[str, Any]:
        node = self.node
        info = node.info()
        ms = node.membership
        info["addr"] = ms.me.addr
        info["peer_addr"] = ms.me.peer_addr
        info["uptime_s"] = round(self.loop.time() - self.started_at, 3)
        info["swim"] = {
            "preset": self.swim_preset,
            "awareness": ms.awareness.score,
            "broadcast_queue": len(ms.broadcasts),
            "counters": dict(sorted(ms.counters.items())),
            "rtt_samples": self.rtt.samples if self.rtt is not None else 0,
        }
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

    # --- admin (POST, JSON) ------------------------------------------------------------

    def admin(self, req: Request, path: str) -> Response | asyncio.Future[Response]:
        """Parse and check an admin request, run its handler, map errors onto the JSON form."""
        if req.method != "POST":
            return self._not_allowed(req.method, path, "POST")
        ctype = req.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if ctype != "application/json":
            return error_response(
                415, "unsupported_media_type",
                f"Admin requests must be sent as Content-Type: application/json, not {ctype or 'none'!r}.",
            )
        try:
            body = json.loads(req.body) if req.body.strip() else {}
        except (ValueError, UnicodeDecodeError) as e:
            return error_response(400, "bad_request", f"The request body is not valid JSON: {e}.")
        if not isinstance(body, dict):
            return error_response(
                400, "bad_request", f"The request body must be a JSON object, not {type(body).__name__}."
            )
        try:
            return self._admin[path](body)
        except errors.StoreError as e:
            return error_response(e.status, e.code, _sentence(e.message))
        except SlotRangeError as e:
            return error_response(400, "bad_request", _sentence(str(e)))

    def admin_meet(self, body: dict[str, Any]) -> Response:
        seeds = _field(body, "seeds", list)
        if not seeds:
            raise errors.BadRequest("seeds must list at least one peer address (HOST:PORT)")
        for s in seeds:
            if not isinstance(s, str):
                raise errors.BadRequest(f"each seed must be a HOST:PORT string, not {s!r}")
            try:
                parse_addr(s)
            except ValueError as e:
                raise errors.BadRequest(f"seed {s!r}: {e}") from None
        self.node.meet(["@" + s for s in seeds])
        log.info("meeting a cluster through %s", ", ".join(seeds))
        return json_response(200, {"id": self.node.id, "seeds": seeds})

    def admin_assign(self, body: dict[str, Any]) -> Response:
        slots = _slot_list(body, "slots")
        epoch = _int(body, "epoch", 1)
        ranges = format_ranges(slots_to_ranges(slots))
        self.node.assign_slots(ranges, epoch)
        log.info("assigned slots %s at epoch %d", ranges, epoch)
        return json_response(200, {"id": self.node.id, "slots": ranges, "epoch": epoch})

    def admin_claim(self, body: dict[str, Any]) -> Response:
        """Add slots to this node's claim at ``epoch``, keeping what it learned of the others."""
        node = self.node
        slots = _slot_list(body, "slots")
        epoch = _int(body, "epoch", 1)
        ranges = _fmt_slots(slots)
        node.claim_slots(ranges, epoch)  # refuses an epoch not above the slots' current epoch
        log.info("claimed slots %s at epoch %d", ranges, epoch)
        return json_response(200, {"id": node.id, "slots": format_ranges(node.slot_map.ranges_of(node.id)),
                                   "epoch": epoch})

    def admin_import(self, body: dict[str, Any]) -> Response:
        node = self.node
        slots = _slots_of(body)
        source = _field(body, "source", str)
        node.begin_import(slots, source)  # the node's guards: see Node's admin door
        return json_response(200, {"id": node.id, "slots": _fmt_slots(slots), "source": source})

    def admin_migrate(self, body: dict[str, Any]) -> Response:
        node = self.node
        slots = _slots_of(body)
        target = _field(body, "target", str)
        node.begin_migrate(slots, target)  # the node's guards: see Node's admin door
        return json_response(200, {"id": node.id, "slots": _fmt_slots(slots), "target": target})

    def admin_move_keys(self, body: dict[str, Any]) -> Response | asyncio.Future[Response]:
        """One ``migrate_keys`` per slot, all at once; answered when every one is done."""
        node = self.node
        single = "slot" in body
        slots = _slots_of(body)
        count = _int(body, "count", 1, MAX_BATCH_KEYS)
        busy = [s for s in slots if s in self._moving]
        if busy:
            raise errors.Conflict(
                f"keys of slot {busy[0]} are already being moved by another request to node {node.id}"
            )
        results: dict[int, tuple[int, str]] = {}
        fut: asyncio.Future[Response] | None = None

        def answer() -> Response:
            if single:
                moved, error = results[slots[0]]
                return json_response(200, {"slot": slots[0], "moved": moved, "error": _sentence(error)})
            rows = [{"slot": s, "moved": results[s][0], "error": _sentence(results[s][1])} for s in slots]
            return json_response(200, {
                "moved": sum(r[0] for r in results.values()),
                "failed": sum(1 for r in results.values() if r[1]),
                "results": rows,
            })

        def done(slot: int, moved: int, error: str) -> None:
            if slot in results:
                return
            self._moving.discard(slot)
            results[slot] = (moved, error)
            if fut is not None and len(results) == len(slots) and not fut.done():
                resp = answer()
                self.count_status(resp.status)
                fut.set_result(resp)

        self._moving.update(slots)
        for slot in slots:
            node.migrate_keys(slot, count, lambda moved, error, slot=slot: done(slot, moved, error))
        if len(results) == len(slots):
            return answer()  # every slot answered at once (empty, or not migrating)
        fut = self.loop.create_future()
        return fut

    def admin_finish(self, body: dict[str, Any]) -> Response:
        slots = _slot_list(body, "slots")
        epoch = self.node.finish_import(slots)
        log.info("claimed %d imported slots at epoch %d", len(slots), epoch)
        return json_response(200, {"id": self.node.id, "slots": _fmt_slots(slots), "epoch": epoch})

    def admin_abort(self, body: dict[str, Any]) -> Response:
        slots = _slots_of(body)
        for slot in slots:
            self.node.abort_migration(slot)
        return json_response(200, {"id": self.node.id, "slots": _fmt_slots(slots)})

    def admin_rollback(self, body: dict[str, Any]) -> Response:
        """Roll back migrations whose target is gone for good (``fix``): like ``abort``, but a
        batch the lost target never acknowledged is abandoned rather than refused (its copies can
        never be served). Refused (409) for a target this node does not hold left or forgotten."""
        slots = _slots_of(body)
        self.node.rollback_migration(slots)  # the guard lives in the node: the sim refuses alike
        return json_response(200, {"id": self.node.id, "slots": _fmt_slots(slots)})

    def cluster_keyslots(self) -> Response:
        """The slots this node holds keys of, as ranges (``fix --assign-unowned`` asks)."""
        return json_response(200, {"id": self.node.id,
                                   "slots": format_ranges(slots_to_ranges(self.node.store.slots()))})

    def admin_leave(self, body: dict[str, Any]) -> Response:
        node = self.node
        force = _field(body, "force", bool, default=False)
        if self.on_leave is None:
            raise errors.Conflict(f"node {node.id} cannot be stopped through its API")
        owned = node.slot_map.slot_counts().get(node.id, 0)
        if owned and node.membership.live_members() and not force and not self.drains_on_leave:
            raise errors.Conflict(
                f"node {node.id} owns {owned} slots; move them to other nodes first "
                "(storelab cluster remove-node), or send {\"force\": true} to leave anyway and lose its keys"
            )
        log.info("leaving the cluster as asked through the API")
        self.loop.call_soon(self.on_leave)
        return json_response(202, {"id": node.id, "status": "leaving",
                                   "drain": bool(owned and self.drains_on_leave)})


#: most keys one ``move-keys`` batch may carry (a batch is one peer frame)
MAX_BATCH_KEYS = 10_000
_TYPE_NAMES = {int: "an integer", str: "a string", list: "a list", bool: "true or false"}
_MISSING = object()


def _field(body: dict[str, Any], name: str, kind: type, default: Any = _MISSING) -> Any:
    """``body[name]``, checked to be of ``kind`` (bool is not an int); BadRequest otherwise."""
    if name not in body:
        if default is not _MISSING:
            return default
        raise errors.BadRequest(f"the field {name!r} is required")
    v = body[name]
    if not isinstance(v, kind) or (kind is int and isinstance(v, bool)):
        raise errors.BadRequest(f"the field {name!r} must be {_TYPE_NAMES[kind]}, not {v!r}")
    if kind is str and not v:
        raise errors.BadRequest(f"the field {name!r} must not be empty")
    return v


def _int(body: dict[str, Any], name: str, lo: int, hi: int | None = None) -> int:
    v: int = _field(body, name, int)
    if v < lo or (hi is not None and v > hi):
        bound = f"at least {lo}" if hi is None else f"{lo}-{hi}"
        raise errors.BadRequest(f"the field {name!r} must be {bound}, not {v}")
    return v


def _slot(v: Any, name: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise errors.BadRequest(f"{name} must hold slot numbers, not {v!r}")
    if not 0 <= v <= MAX_SLOT:
        raise errors.BadRequest(f"slot {v} is outside 0-{MAX_SLOT}")
    return v


def _slot_list(body: dict[str, Any], name: str) -> list[int]:
    """A list of slot numbers, or a range string such as ``"0-99,200"``; sorted, no repeats."""
    if name not in body:
        raise errors.BadRequest(f"the field {name!r} is required")
    v = body[name]
    if isinstance(v, str):
        slots = list(ranges_to_slots(parse_ranges(v)))
    elif isinstance(v, list):
        slots = [_slot(x, f"the field {name!r}") for x in v]
    else:
        raise errors.BadRequest(f"the field {name!r} must be a list of slots or a range string, not {v!r}")
    if not slots:
        raise errors.BadRequest(f"the field {name!r} names no slot")
    return sorted(set(slots))


def _slots_of(body: dict[str, Any]) -> list[int]:
    """``"slot": S`` or ``"slots": [...]`` (or a range string)."""
    if "slot" in body:
        if "slots" in body:
            raise errors.BadRequest("give 'slot' or 'slots', not both")
        return [_slot(body["slot"], "the field 'slot'")]
    if "slots" not in body:
        raise errors.BadRequest("the field 'slot' (or 'slots') is required")
    return _slot_list(body, "slots")


def _fmt_slots(slots: list[int]) -> str:
    return format_ranges(slots_to_ranges(slots))


__all__ = ["Api", "http_limits", "reply_response"]
