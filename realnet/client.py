"""A synchronous Python client that goes straight to each key's owner.

Theory of operation
-------------------
Any node answers any request (it forwards to the owner), but a forward costs a second hop. A
*smart* client (Redis Cluster's term) fetches the slot map once from a seed node
(``GET /cluster/slots``), caches it as a 16384-entry table of owner addresses, computes each
key's slot locally (:func:`kvcore.slots.key_slot`) and sends the request to the owner's client
address. It keeps one keep-alive :class:`http.client.HTTPConnection` per node.

The cache can go stale (slots move, a node dies). These signals make the client retry the request
once (after refreshing the map, except for ``lost_state``):

- ``503 wrong_node``: the node it asked forwarded to a node that disagreed about ownership; the
  operation was certainly not applied, so a retry is safe.
- ``503 lost_state``: the node is a member of a replicated group that lost its state and serves
  no key; the request was certainly not applied, so it goes to another node, and the node is
  tried after the others for a while.
- a connection error after the request may have gone out (reset, closed keep-alive socket, no
  answer in time): the owner may be gone or the idle connection was closed by the server.

A node that cannot be connected to at all (refused, or the connect timed out) was sent nothing,
so the request is safe to send elsewhere, whatever it is: the client then refreshes the map once
(the slots may have moved away from a node that left) and sends the request to the new owner,
else to the next node it knows: the nodes it was given, then the other addresses of its cached
map. That node serves the request or forwards it, as any node does; in a replicated cluster
(one Raft group serves every slot on every node) any live node serves any key, so a dead or
removed voter that the map still names costs nothing but the refused connect. An address whose
connect failed, or that did not answer a request in time (a hung or paused node), is tried after
the others for :attr:`Client.down_for` seconds, by requests and map refreshes alike. In an unreplicated
cluster the other node answers as it would (it forwards, or says ``503 owner_down``).

Retry safety. Only a connection that could not be opened moves on to another node at once
(nothing was sent); a request that may have been sent is sent again at most once (to the owner
of the refreshed map, or past it as above), and only if its method is in
:data:`RETRY_AFTER_SENT`, the idempotent ones; any other method is never sent twice. Get is
read-only. Put is idempotent (setting the same value twice leaves
the same state), so a Put retried after a connection error *may be applied twice*, which is
harmless on its own but can reorder it after a concurrent writer's Put to the same key. Delete is
idempotent too, but a Delete whose first attempt was applied before the connection broke is
answered 404 on the retry, so :meth:`Client.delete` may then return False for a key it did
delete. The client never retries after ``504 forward_timeout``: the outcome is unknown and the
caller must decide.

Errors are raised as the typed :mod:`kvcore.errors` exceptions rebuilt from the JSON body
(:func:`kvcore.errors.error_from_code`). A node that cannot be reached at all raises
:class:`NodeUnreachable`, a client-side :class:`~kvcore.errors.StoreError` whose outcome is
unknown (the connection may have broken after the node applied the request). An address that is
a node's peer port answers 400 ``wrong_port`` with a sentence naming the node's HTTP address:
:class:`WrongPort`, client-side too.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.parse
from collections.abc import Iterable
from typing import Any, Self

from kvcore import errors
from kvcore.config import parse_addr
from kvcore.slots import NUM_SLOTS, key_slot

DEFAULT_NODE = "127.0.0.1:7000"


def node_addr(text: str) -> str:
    """A node's client address as ``HOST:PORT``, from ``HOST:PORT`` or ``http://HOST:PORT[/]``.

    What a user copies from a browser or curl works as well as what the nodes print; any other
    scheme (``https``: nodes speak plain HTTP) or a URL with a path is refused. Raises ValueError
    with a sentence.
    """
    addr = text.strip()
    scheme, sep, rest = addr.partition("://")
    if sep:
        if scheme.lower() != "http":
            raise ValueError(f"Address {text!r} uses {scheme}://; storelab nodes speak plain http://.")
        addr = rest[:-1] if rest.endswith("/") else rest
        if "/" in addr or "?" in addr or "#" in addr:
            raise ValueError(f"Address {text!r} has a path; give http://HOST:PORT only.")
    parse_addr(addr)  # raises ValueError with a sentence
    return addr


class NodeUnreachable(errors.StoreError):
    """No node could be reached (connection refused, reset or timed out).

    Client-side only: it never travels over the wire. The outcome is unknown because the
    connection may have broken after the node applied the request.
    """

    code = "unreachable"
    status = 503
    definite = False


class WrongPort(errors.StoreError):
    """The address is a node's peer port, not its HTTP API.

    Client-side only: the peer transport answers an HTTP request with 400 ``wrong_port`` and a
    sentence naming the node's HTTP address (:func:`realnet.transport.wrong_port_response`).
    Certainly not applied: the request never reached the node.
    """

    code = "wrong_port"
    status = 400


class Unauthorized(errors.StoreError):
    """The node requires a client token (``--client-token-file``) and this one was missing or
    wrong: 401. Certainly not applied."""

    code = "unauthorized"
    status = 401


def _key_bytes(key: str | bytes) -> bytes:
    if isinstance(key, str):
        return key.encode()
    if isinstance(key, (bytes, bytearray, memoryview)):
        return bytes(key)
    raise TypeError(f"a key is str or bytes, not {type(key).__name__}")


def kv_path(key: str | bytes) -> str:
    """The request path for a key: ``/kv/`` plus the percent-encoded key bytes."""
    return "/kv/" + urllib.parse.quote(_key_bytes(key), safe="")


def error_from_response(status: int, body: bytes) -> errors.StoreError:
    """The typed error for a non-2xx answer: from the JSON body, else from the status alone."""
    code = message = ""
    try:
        obj = json.loads(body)
        if isinstance(obj, dict):
            code = str(obj.get("error", ""))
            message = str(obj.get("message", ""))
    except (ValueError, UnicodeDecodeError):
        message = body[:200].decode("utf-8", "replace").strip()
    if code == WrongPort.code:
        return WrongPort(message)
    if code == Unauthorized.code or status == 401:
        return Unauthorized(message or "The node requires a client token.")
    if code:
        return errors.error_from_code(code, message)
    by_status: dict[int, type[errors.StoreError]] = {
        400: errors.BadRequest,
        404: errors.NotFound,
        409: errors.Conflict,
        413: errors.TooLarge,
        504: errors.ForwardTimeout,
    }
    cls = by_status.get(status, errors.Internal)
    return cls(message or f"HTTP status {status}")


class NodeConnection:
    """One keep-alive HTTP connection to one node, reopened after any failure."""

    def __init__(self, addr: str, timeout: float = 5.0, token: str | None = None) -> None:
        self.addr = node_addr(addr)
        self.host, self.port = parse_addr(self.addr)
        self.timeout = timeout
        #: ``Authorization: Bearer TOKEN`` on every request (the nodes' client token), or none
        self._auth = {"Authorization": f"Bearer {token}"} if token else {}
        self._conn: http.client.HTTPConnection | None = None

    def _http(self) -> http.client.HTTPConnection:
        conn = self._conn
        if conn is None:
            conn = self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        return conn

    def connect(self) -> None:
        """Open the connection unless it is open. Nothing is sent, so a failure here (OSError:
        refused, the connect timed out) means a request never reached the node."""
        conn = self._http()
        if conn.sock is None:
            try:
                conn.connect()
            except BaseException:
                self.close()
                raise

    def request(
        self, method: str, path: str, body: bytes | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """Send one request; returns (status, headers, body). Raises OSError or HTTPException."""
        conn = self._http()
        headers = {"Content-Length": str(len(body))} if body is not None else {}
        if self._auth:
            headers.update(self._auth)
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except BaseException:
            self.close()
            raise
        if resp.will_close:
            self.close()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


_CONNECTION_ERRORS = (OSError, http.client.HTTPException, socket.timeout)
#: the methods a client retries (once) after a connection error that may have come after the
#: request went out: the idempotent ones (see the module docstring); anything else is never
#: sent twice
RETRY_AFTER_SENT = frozenset({"GET", "PUT", "DELETE"})


class KvMethods:
    """get / set / delete over a ``_call(method, key, body) -> (status, body)`` transport,
    with the error mapping every storelab client shares."""

    def _call(self, method: str, key: str | bytes, body: bytes | None) -> tuple[int, bytes]:
        raise NotImplementedError

    def get(self, key: str | bytes) -> bytes | None:
        """The value of ``key``, or None when it is absent."""
        status, data = self._call("GET", key, None)
        if status == 200:
            return data
        if status == 404:
            err = error_from_response(status, data)
            if isinstance(err, errors.NotFound):
                return None
            raise err
        raise error_from_response(status, data)

    def set(self, key: str | bytes, value: bytes | str) -> None:
        """Set ``key`` to ``value`` (str values are UTF-8 encoded)."""
        if isinstance(value, str):
            value = value.encode()
        status, data = self._call("PUT", key, bytes(value))
        if status not in (200, 201, 204):
            raise error_from_response(status, data)

    def delete(self, key: str | bytes) -> bool:
        """Delete ``key``; False when it was absent (see the module docstring on retries)."""
        status, data = self._call("DELETE", key, None)
        if status in (200, 204):
            return True
        err = error_from_response(status, data)
        if isinstance(err, errors.NotFound):
            return False
        raise err



class Client(KvMethods):
    """A smart client: caches the slot map and talks to each key's owner directly.

    ``seeds`` are client (HTTP) addresses, ``"HOST:PORT"`` or ``"http://HOST:PORT"``; the first
    that answers ``/cluster/slots`` provides the map. Not thread-safe: use one client per thread.
    """

    def __init__(self, seeds: str | Iterable[str] = DEFAULT_NODE, *, timeout: float = 5.0,
                 token: str | None = None) -> None:
        given = [seeds] if isinstance(seeds, str) else list(seeds)
        if not given:
            raise ValueError("a client needs at least one seed address")
        #: client addresses, HOST:PORT (``http://HOST:PORT`` is accepted and normalized)
        self.seeds: list[str] = [node_addr(s) for s in given]  # ValueError with a sentence
        self.timeout = timeout
        #: the client token the nodes require (``--client-token-file``), or None
        self.token = token
        self._conns: dict[str, NodeConnection] = {}
        #: slot -> owner's client address ("" when unassigned); empty until the first refresh
        self._owners: list[str] = []
        #: the epoch of the cached map, and how many times it was fetched
        self.epoch = 0
        self.refreshes = 0
        #: address -> until when (time.monotonic()) it is tried after the others: its connect failed
        self._down: dict[str, float] = {}
        #: requests sent to another node because the owner could not be connected to
        self.fallbacks = 0

    #: seconds an address whose connect failed is tried after every other node the client knows
    down_for = 2.0

    # --- the slot map --------------------------------------------------------------------

    def refresh(self) -> None:
        """Fetch the slot map from the first reachable node (cached addresses, then seeds)."""
        candidates = self._candidates()
        last: Exception | None = None
        for addr in candidates:
            try:
                status, _, body = self._conn(addr).request("GET", "/cluster/slots")
            except _CONNECTION_ERRORS as e:
                last = e
                self._mark_down(addr)
                continue
            if status != 200:
                last = error_from_response(status, body)
                continue
            try:
                self._load_map(json.loads(body))
            except (ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
                last = errors.Internal(f"node {addr} sent a slot map that cannot be read: {e!r}")
                continue
            self.refreshes += 1
            return
        if isinstance(last, WrongPort) and len(candidates) == 1:
            raise last  # its sentence names the HTTP address to use instead
        raise NodeUnreachable(
            f"no node answered the slot map request (tried {', '.join(candidates)}): {last}"
        )

    def _load_map(self, obj: dict[str, Any]) -> None:
        owners = [""] * NUM_SLOTS
        for r in obj["slots"]:
            addr = str(r.get("addr") or "")
            start, end = int(r["start"]), int(r["end"])
            if not 0 <= start <= end < NUM_SLOTS:
                raise ValueError(f"slot range {start}-{end} is outside 0-{NUM_SLOTS - 1}")
            owners[start : end + 1] = [addr] * (end - start + 1)
        self._owners = owners
        self.epoch = int(obj.get("epoch", 0))

    def owner_addr(self, key: str | bytes) -> str:
        """The address the client would send ``key`` to (a seed for unassigned slots)."""
        if not self._owners:
            self.refresh()
        return self._owners[key_slot(_key_bytes(key))] or self.seeds[0]

    def _conn(self, addr: str) -> NodeConnection:
        c = self._conns.get(addr)
        if c is None:
            c = self._conns[addr] = NodeConnection(addr, self.timeout, self.token)
        return c

    # --- operations ----------------------------------------------------------------------

    def _call(self, method: str, key: str | bytes, body: bytes | None) -> tuple[int, bytes]:
        """Send one key operation to the owner (another node when the owner cannot be connected
        to); refresh and retry once when that is safe."""
        path = kv_path(key)
        for attempt in (0, 1):
            addr, conn = self._open(key)
            try:
                status, _, data = conn.request(method, path, body)
            except _CONNECTION_ERRORS as e:
                # a node that accepted the connection but did not answer (a hung or paused node)
                # is tried after the others for a while, as one that refused it is
                self._mark_down(addr)
                # the request may have gone out: never sent twice unless its method is idempotent
                if attempt == 1 or method not in RETRY_AFTER_SENT:
                    raise NodeUnreachable(f"cannot reach node {addr}: {e}") from e
                self._refresh_after_failure()
                continue
            if status == 503 and attempt == 0:
                err = error_from_response(status, data)
                if isinstance(err, errors.WrongNode):
                    self._refresh_after_failure()
                    continue
                if isinstance(err, errors.LostState):
                    # a member that lost its state serves no key, and certainly did not apply
                    # this one: ask the other nodes first (any member of a group serves any key)
                    self._mark_down(addr)
                    continue
            return status, data
        raise AssertionError("unreachable")  # the loop always returns or raises

    def _open(self, key: str | bytes) -> tuple[str, NodeConnection]:
        """An open connection to ``key``'s owner, else to another node the client knows (which
        serves or forwards). Only a connect failure moves on: nothing was sent yet. Raises
        NodeUnreachable when no node accepts a connection."""
        owner = self.owner_addr(key)
        failed: dict[str, BaseException] = {}
        if not self._is_down(owner):
            conn = self._try_connect(owner, failed)
            if conn is not None:
                return owner, conn
            # the slots may have moved away from a node that left: ask for the map again
            self._refresh_after_failure()
            owner = self.owner_addr(key)
        for addr in self._candidates(owner):
            if addr in failed:
                continue
            conn = self._try_connect(addr, failed)
            if conn is not None:
                if addr != owner:
                    self.fallbacks += 1
                return addr, conn
        first, e = next(iter(failed.items()))
        others = f" (nor {len(failed) - 1} other node{'s' if len(failed) != 2 else ''})" if len(failed) > 1 else ""
        raise NodeUnreachable(f"cannot reach node {first}{others}: {e}") from e

    def _candidates(self, owner: str | None = None) -> list[str]:
        """``owner`` (if given), the seeds, then the other addresses of the cached map, each
        once; the addresses that failed lately after the others."""
        out: list[str] = []
        for a in [*([owner] if owner else []), *self.seeds, *sorted(set(self._owners) - {""})]:
            if a not in out:
                out.append(a)
        return sorted(out, key=self._is_down)  # stable: the order above among equals

    def _is_down(self, addr: str) -> bool:
        until = self._down.get(addr)
        if until is None:
            return False
        if time.monotonic() < until:
            return True
        del self._down[addr]
        return False

    def _mark_down(self, addr: str) -> None:
        self._down[addr] = time.monotonic() + self.down_for

    def _try_connect(self, addr: str, failed: dict[str, BaseException]) -> NodeConnection | None:
        conn = self._conn(addr)
        try:
            conn.connect()
        except _CONNECTION_ERRORS as e:
            failed[addr] = e
            self._mark_down(addr)
            return None
        self._down.pop(addr, None)
        return conn

    def _refresh_after_failure(self) -> None:
        try:
            self.refresh()
        except NodeUnreachable:
            # Keep the old map: the retry then fails with the real connection error.
            pass

    def close(self) -> None:
        for c in self._conns.values():
            c.close()
        self._conns.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = [
    "DEFAULT_NODE",
    "Client",
    "NodeConnection",
    "NodeUnreachable",
    "RETRY_AFTER_SENT",
    "Unauthorized",
    "WrongPort",
    "error_from_response",
    "kv_path",
    "node_addr",
]
