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
``POST /cluster/...``       the admin endpoints (JSON in, JSON out): :mod:`realnet.adminapi`,
                            a replicated group's in :mod:`realnet.replicaapi`
==========================  ===================================================================

``HEAD`` is accepted wherever ``GET`` is (RFC 9110 §9.3.2: same head, no body).

Keys are the path after ``/kv/``, percent-decoded to bytes (``urllib.parse.unquote_to_bytes``),
so any byte string is a key: ``/kv/a%2Fb`` and ``/kv/a/b`` both name ``a/b``. Decoding is strict:
a ``%`` not followed by two hex digits is 400 (``/kv/%zz``), so ``/kv/%25zz`` alone names the key
``%zz``. A query string is ignored. An empty key is 400.

The doors of :mod:`realnet.security` come first: a ``Host`` that is not one of the node's names
is 421 ``misdirected_request``; with a client token, a ``/kv/`` request without it is 401
``unauthorized`` (``WWW-Authenticate: Bearer``); with an admin token, so is an admin ``POST``
(:mod:`realnet.adminapi`).

The hot path is synchronous. The request goes to the node's client door through its
synchronous lane (``node.answer_now(op, reply)``, ARCHITECTURE.md, "The node's doors"): a
well-formed request for a slot this node owns and is not moving comes back as a ``Reply``, the
callback not called, and the handler returns a :class:`~realnet.http.Response` at once. Anything
else takes ``on_client_request``'s path, which calls ``reply`` before it returns when it can
answer at once (the request fails validation, or the owner is known down), and then the handler
returns a :class:`~realnet.http.Response` directly: no future, no task, the response is written
inside the same ``data_received`` call. Only when the node forwarded the request does
the handler return a deferred response that the owner's reply (or the forward timeout)
resolves: the request's :class:`_ReplySlot`, which :mod:`realnet.http` waits on as on a future.
A synchronous answer allocates no slot: one spare slot is handed to the node again and again
(:meth:`Api.kv`), and only a request the node kept (forwarded) keeps its slot.

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

``/metrics`` is produced by a custom :mod:`prometheus_client` collector
(:mod:`realnet.metrics`) that reads the counters the node, the transport and the HTTP server
already keep, at scrape time: nothing is counted twice and the hot path does not touch a
Prometheus object. The one thing measured here is each client operation's latency: ``kv`` notes
the loop's clock (:attr:`Api.clock`: ``loop.time``, read as ``time.monotonic`` directly on
asyncio's own loops) when it hands the operation to the node, and the request's reply callback
observes the elapsed time in :attr:`Api.op_latency` (a bisect into a list of ints).
"""

from __future__ import annotations

import asyncio
import logging
import re
import urllib.parse
from collections.abc import Callable
from typing import Any

from prometheus_client import generate_latest

from kvcore import errors
from kvcore.messages import Delete, Get, Put, Reply
from kvcore.node import Node
from kvcore.slots import (
    NUM_SLOTS,
    format_ranges,
    slots_to_ranges,
)
from realnet.adminapi import AdminApi, _sentence
from realnet.gossip import RttMeter
from realnet.http import (
    HttpLimits,
    HttpServerStats,
    Request,
    Response,
    error_response,
    give_answers,
    json_response,
    keepalive_response,
)
from realnet.metrics import ForwardMeter, OpLatency, registry
from realnet.replicaapi import ReplicaAdminApi
from realnet.runtime import event_loop_name, loop_clock
from realnet.security import HostCheck, TokenCheck, request_host, unauthorized
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
#: a '%' not followed by two hex digits (RFC 3986 §2.1): the key is refused, not taken literally
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")

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
    ``result``) whose callback runs on the next loop iteration once the node replies, as an
    :class:`asyncio.Future`'s would, without the cost of one. :mod:`realnet.http` asks for
    ``add_response_callback`` instead, whose callback is handed the Response itself (a slot
    never fails and is never cancelled, so there is nothing else to read).
    The callbacks of every reply that arrived in one loop turn run together on the next one, in
    the order the replies came (:meth:`Api._defer`): one ``call_soon`` per batch, not per reply
    (a batch of ForwardReply frames read at once answers many requests). The HTTP server runs
    that batch when it is given one (``Api.answer_batch``), and writes the responses it held
    at its end rather than on the turn after.

    A slot whose node answered synchronously is reset (``response`` and ``op`` None) and serves
    the next request; a reply to a slot in that state is ignored, like a second reply.
    """

    __slots__ = ("_callback", "api", "deferred", "is_get", "op", "response", "t0")

    def __init__(self, api: Api, is_get: bool, op: str | None, t0: float) -> None:
        self.api = api
        self.is_get = is_get
        #: for the latency histogram: the op's name, and when the node was handed the request
        #: (None: a spare slot between two requests, see :meth:`Api.kv`)
        self.op = op
        self.t0 = t0
        self.response: Response | None = None
        self.deferred = False
        self._callback: Callable[[Response], None] | None = None

    def __call__(self, reply: Reply) -> None:
        op = self.op
        if self.response is not None or op is None:
            return  # a reply after the first one (the node answers each request once)
        api = self.api
        code = reply.error
        api.op_latency.observe(op, code, api.clock() - self.t0)
        if not code:  # reply_response's success cases, inline
            resp = self.response = (
                Response(200, reply.value or b"", OCTETS) if self.is_get else _NO_CONTENT
            )
        else:
            resp = self.response = reply_response(reply, self.is_get)
        if self.deferred:
            statuses = api.statuses  # Api.count_status, inline
            statuses[resp.status] = statuses.get(resp.status, 0) + 1
            callback = self._callback
            if callback is not None:
                self._callback = None
                ready = api._ready  # Api._defer, inline (every forwarded request's answer)
                ready.append((callback, resp))
                if len(ready) == 1:
                    api.loop.call_soon(api._run_ready)

    # --- what realnet.http reads -------------------------------------------------------------

    def add_response_callback(self, callback: Callable[[Response], None]) -> None:
        """``callback(response)`` on a loop iteration after the node's reply (the shorter form
        of :meth:`add_done_callback` that :mod:`realnet.http` asks for first: the slot never
        fails and is never cancelled, so nothing else needs reading)."""
        if self.response is not None:
            self.api.loop.call_soon(callback, self.response)
        else:
            self._callback = callback

    def add_done_callback(self, callback: Callable[[_ReplySlot], None]) -> None:
        """``callback(self)``, as an :class:`asyncio.Future` calls its callbacks."""
        self.add_response_callback(lambda _resp: callback(self))

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


class Api(AdminApi, ReplicaAdminApi):
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
        admin_token: str | None = None,
        client_token: str | None = None,
        hosts: HostCheck | None = None,
    ) -> None:
        self.node = node
        #: the HTTP side's doors (realnet.security); None: open
        self.admin_check = TokenCheck(admin_token) if admin_token else None
        self.client_check = TokenCheck(client_token) if client_token else None
        self.hosts = hosts
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
        #: ``loop.time`` for the latency histogram (:func:`realnet.runtime.loop_clock`)
        self.clock: Callable[[], float] = loop_clock(self.loop)
        #: the reply slot of the next client request (see :meth:`kv`)
        self._spare: _ReplySlot | None = None
        self.http_stats = http_stats
        self.started_at = self.loop.time()
        #: responses produced by this handler, by status code
        self.statuses: dict[int, int] = {}
        #: deferred responses whose callbacks run on the next loop iteration (see _ReplySlot)
        self._ready: list[tuple[Callable[[Response], None], Response]] = []
        #: the HTTP server's ``answer_batch`` (:func:`realnet.http.batch_answerer`), which runs
        #: a batch's callbacks as :meth:`_run_ready` does and writes the responses they held at
        #: once, a loop turn earlier; set by realnet.node once the server is up (None: run here)
        self.answer_batch: Callable[[list[tuple[Callable[[Response], None], Response]]], None] | None = None
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
            "/cluster/forget": self.admin_forget,
            "/cluster/clear-lost-state": self.admin_clear_lost_state,
            "/cluster/check-token": self.admin_check_token,
            **self.replica_routes(),  # a replicated group's verbs (realnet.replicaapi)
        }
        #: client operation latencies (observed by each request's _ReplySlot)
        self.op_latency = OpLatency()
        #: forward round trips, measured on the transport's frames
        self.forward_meter = ForwardMeter(self.clock, node.config.forward_timeout)
        self.forward_meter.watch(transport.send_observers, transport.receive_observers)
        #: the node's Raft log opener, when it runs a group (realnet.node sets it; /metrics reads
        #: its commit latency, realnet.raftmetrics)
        self.raft_opener: Any = None
        self.registry = registry(self)

    def _defer(self, callback: Callable[[Response], None], resp: Response) -> None:
        """Run ``callback(resp)`` on the next loop iteration, with the others of this turn."""
        ready = self._ready
        ready.append((callback, resp))
        if len(ready) == 1:
            self.loop.call_soon(self._run_ready)

    def _run_ready(self) -> None:
        ready, self._ready = self._ready, []
        # the HTTP server's answer_batch writes what the batch held at its end
        (self.answer_batch or give_answers)(ready)

    def count_status(self, status: int) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1

    # --- dispatch ----------------------------------------------------------------------

    def _misdirected(self, req: Request) -> Response | None:
        """421 when the request names a host that is not one of this node's (DNS rebinding)."""
        hosts = self.hosts
        if hosts is None:
            return None
        host = request_host(req.target, req.headers)  # None only in HTTP/1.0 without Host
        if host is None or hosts.ok(host):
            return None
        self.count_status(421)
        return error_response(
            421, "misdirected_request",
            f"This node does not answer for the host {host[:100]!r}; use its own address "
            "(or list the name with --allowed-host).",
        )

    def head_refusal(self, req: Request) -> Response | None:
        """The HTTP server's head check (``realnet.http.HeadCheck``): what a request whose body
        is still to come is refused by its head alone, the Host check and the token its path
        needs, so that a client without the token is answered before it sends a body (and is
        sent no ``100 Continue``). :meth:`__call__` checks the same for whole requests."""
        resp = self._misdirected(req)
        if resp is not None:
            return resp
        path = req.path
        if path.startswith("/kv/"):
            check = self.client_check
            what = "client"
        elif req.method == "POST" and path in self._admin:
            check = self.admin_check
            what = "admin"
        else:
            return None
        if check is None or check.ok(req.headers):
            return None
        self.count_status(401)
        return unauthorized(what)

    def __call__(self, req: Request) -> Response | asyncio.Future[Response] | _ReplySlot:
        path = req.path
        if self.hosts is not None:
            resp = self._misdirected(req)
            if resp is not None:
                return resp
        if path.startswith("/kv/"):
            client_check = self.client_check
            if client_check is not None and not client_check.ok(req.headers):
                self.count_status(401)
                return unauthorized("client")
            result: Response | asyncio.Future[Response] | _ReplySlot = self.kv(req, path)
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
        if "%" in raw:
            bad = _BAD_ESCAPE.search(raw)
            if bad is not None:
                return error_response(
                    400, "bad_request",
                    f"The key holds an invalid percent-escape {raw[bad.start():bad.start() + 3]!r} "
                    "(RFC 3986 §2.1); write a literal % as %25.",
                )
            key = urllib.parse.unquote_to_bytes(raw)
        else:
            key = raw.encode("ascii")
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
        r = self._submit(op, name)
        if isinstance(r, Reply):
            if not r.error:
                return Response(200, r.value or b"", OCTETS) if name == "get" else _NO_CONTENT
            return reply_response(r, name == "get")
        return r

    def _submit(self, op: Get | Put | Delete, name: str) -> Reply | Response | _ReplySlot:
        """Hand a client operation to the node: its Reply when the node's synchronous lane
        answered (latency observed), the Response when the door answered at once, or the
        request's reply slot when the node forwarded it (the owner's reply resolves it)."""
        # One spare slot serves every request the node answers synchronously; a forwarded
        # request keeps its slot (the node holds it) and the next request gets a new spare.
        slot = self._spare
        if slot is None:
            slot = self._spare = _ReplySlot(self, False, None, 0.0)
        slot.is_get = name == "get"
        slot.op = name
        slot.t0 = t0 = self.clock()
        # The node's fast lane: the common local request comes back as a Reply and the slot is
        # not called; anything else went through the door, which calls the slot.
        r = self.node.answer_now(op, slot)
        if r is not None:
            slot.op = None
            self.op_latency.observe(name, r.error, self.clock() - t0)
            return r
        resp = slot.response
        if resp is not None:  # answered synchronously: local, invalid, or owner down
            slot.response = slot.op = None
            return resp
        self._spare = None
        slot.deferred = True  # forwarded: realnet.http waits on the slot like on a future
        return slot

    def lane(
        self, method: bytes, target: bytes, host: str, authorization: str | None, body: bytes
    ) -> bytes | Response | _ReplySlot | None:
        """The HTTP server's lane for plain requests (:data:`realnet.http.Lane`; the target has
        no query and nothing to decode): a ``GET``, ``PUT`` or ``DELETE`` of ``/kv/KEY`` whose
        Host and token pass is answered as :meth:`__call__` answers it (the same response,
        counted the same), the commonest answers as bytes without a Response; anything else is
        None, nothing done, and the request goes through the parser to :meth:`__call__`."""
        if not target.startswith(b"/kv/") or len(target) == 4:
            return None  # (an empty key is 400: kv's)
        hosts = self.hosts
        if hosts is not None and not hosts.ok(host):
            return None  # 421: __call__'s
        check = self.client_check
        if check is not None and not check.ok_value(authorization):
            return None  # 401: __call__'s
        key = target[4:]
        if method == b"GET":
            r = self._submit(_make_get(key), "get")
        elif method == b"PUT":
            r = self._submit(_make_put(key, body), "put")
        else:
            r = self._submit(Delete(key=key), "delete")
        statuses = self.statuses
        if isinstance(r, Reply):
            if not r.error:
                if method == b"GET":
                    statuses[200] = statuses.get(200, 0) + 1
                    return keepalive_response(200, OCTETS, r.value or b"")
                statuses[204] = statuses.get(204, 0) + 1
                return keepalive_response(204, None, b"")
            r = reply_response(r, method == b"GET")
        if type(r) is Response:
            statuses[r.status] = statuses.get(r.status, 0) + 1
        return r

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
        # whether a replicated group may be formed here (realnet.raftopen refuses one without a
        # data directory): ``create --replicas`` and ``add-node`` check it before changing
        # anything; None when the node has no Raft opener of realnet's (a test's in-memory one)
        opener = getattr(self, "raft_opener", None)
        info["data_dir"] = bool(opener.data_dir) if opener is not None else None
        # the name a peer's Hello must carry ("" for none): a node of another name is refused on
        # the bus, which ``add-node`` and ``create`` say before anything changes
        info["cluster_name"] = getattr(self.transport, "cluster_name", "")
        # the node rebalances the cluster when members join or leave (--auto-rebalance): what
        # add-node says a new node's share comes from
        info["auto_rebalance"] = self.drains_on_leave
        info["uptime_s"] = round(self.loop.time() - self.started_at, 3)
        info["event_loop"] = event_loop_name(self.loop)
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

    def cluster_keyslots(self) -> Response:
        """The slots this node holds keys of, as ranges (``fix --assign-unowned`` asks)."""
        return json_response(200, {"id": self.node.id,
                                   "slots": format_ranges(slots_to_ranges(self.node.store.slots()))})


__all__ = ["Api", "http_limits", "reply_response"]
