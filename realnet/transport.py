"""The peer transport: length-prefixed msgpack frames over TCP between nodes.

Theory of operation
-------------------
Each node listens on its *peer port* and keeps **one outbound connection per destination**, used
in one direction only: a node writes its messages on its own outbound connection and reads its
peers' messages on the connections they opened to it (Redis Cluster's bus works the same way:
every node has an outbound and an inbound link to every other node). So ``send(dst, msg)`` needs
no request/response matching and a reply simply travels on the other link (or, to a peer we
have no address for yet, back on the link it opened to us: "Sending back" below).

Frames are :func:`kvwire.frame`: a 4-byte big-endian length and the msgpack of
:func:`kvcore.codec.encode`. The first frame on every connection is
:class:`kvcore.messages.Hello` naming the sender, so the receiver knows who speaks; every later
frame goes to ``node.on_message(src, msg)`` with that name. With a cluster secret (``keyring``,
:mod:`kvwire.auth`) a handshake comes first, proving that both sides hold a key of the cluster
and binding the connection to the sender's id (the dialler also checks that the node answering
is the one it dials), and every record (the frames written in one turn) carries a 16-byte tag
(keyed BLAKE2b over its sequence number and frames, :class:`kvwire.auth.Session`);
:meth:`set_keyring` takes new keys without a restart (SIGHUP in ``realnet.node``), and a
handshake under way when a key is removed cannot finish with it.

**Destinations.** A destination is a node id or ``"@HOST:PORT"``:

- a node id is resolved to a peer address on every send, first through ``resolve`` (the node's
  gossip membership: ``membership.address_of``), then through the static ``peers`` map (the
  ``[cluster]`` configuration). A member that comes back at another address is dialled there:
  the old link is closed and a new one opened. An id with no address is dropped
  (``unknown_peer``), an address that is not ``HOST:PORT`` too (``bad_address``).
- ``"@HOST:PORT"`` means "whoever listens there": how a joining node reaches a seed whose id it
  does not know yet. It has a link of its own, keyed by that string. The seed's real id arrives
  in the Hello on the seed's own link to us; it can open that link because the join PushPull we
  sent carries our own peer address, which the seed merges before it replies.

The transport is split by concern: :mod:`realnet.outbound` holds the outbound link
(:class:`PeerLink`: its state machine, reconnect with backoff, coalesced writes, the warning
for an address that answers in HTTP), :mod:`realnet.inbound` the inbound connection (the Hello
handshake and its deadline, frame decoding, the ``wrong_port`` answer to an HTTP request on the
peer port), :mod:`realnet.transportconfig` the knobs and counters. This module is the façade
the node uses, :class:`PeerTransport`, and re-exports the names other code imports from here.

**Sending back.** A member we have no address for (gossip has not told us of it yet: it joined
a moment ago through another node) may still have a connection open to us, on which it sends us
a forwarded client request. Its answer, and anything else we have for it meanwhile, goes back
on that connection: frames as on any connection, our Hello first, sealed on an authenticated
bus in the session's server-to-client direction, so they go only to the peer the handshake authenticated
(and bound to its id by its Hello), and the dialler hears them as from the member its link
reached (:mod:`realnet.outbound`). Without it the answer was dropped (``unknown_peer``) and the
client got 504 ``forward_timeout``. A peer that has no such connection is still dropped
(``unknown_peer``); ``sent_back`` and ``received_back`` count what took the way back. An older
node reads nothing on its outbound links after the handshake and ignores what comes back.
The sim's network delivers by node id without asking membership, so there the answer always
arrived.

**Links do not outlive their use.** A link nothing was sent on for ``idle_timeout`` (60 s) is
closed and forgotten by a periodic sweep (a seed's ``"@HOST:PORT"`` link after the join, a
member that was reaped, a member that moved); the next send opens a new one. :meth:`forget`
closes a link at once (the node calls it when membership says a member left or was reaped).

Every dropped message is counted by reason (``dropped``). Membership, not the transport,
decides that a peer is down; the transport only moves bytes.

**Wrong ports are named, not suffered.** The HTTP port and the peer port are easy to mix up
(both are ``HOST:PORT``). Two cases are recognised by their first bytes: we dialled an HTTP
server (:mod:`realnet.outbound`), or an HTTP client dialled us (:mod:`realnet.inbound`).

Bytes are counted per message kind in the node's :class:`kvcore.metrics.NodeStats`
(``add_bytes_sent`` when a frame is handed to the socket, ``add_bytes_received`` when a frame is
decoded), Hello frames included.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections.abc import Callable, Mapping
from typing import Any

import kvwire
from kvcore.config import parse_addr
from kvcore.messages import Hello, kind_of
from kvcore.metrics import NodeStats
from kvwire import auth
from kvwire.frames import ENCODERS, WRITERS, pack_dict
from realnet.inbound import HTTP_METHODS as HTTP_METHODS
from realnet.inbound import _http_request_start as _http_request_start
from realnet.inbound import _InboundProtocol
from realnet.inbound import wrong_port_response as wrong_port_response
from realnet.outbound import BACKOFF as BACKOFF
from realnet.outbound import CLOSED as CLOSED
from realnet.outbound import CONNECTED as CONNECTED
from realnet.outbound import CONNECTING, HTTP_WARN_EVERY, PeerLink, _fmt_addr, http_answer_warning
from realnet.outbound import IDLE as IDLE
from realnet.outbound import WARN_AFTER_FAILURES as WARN_AFTER_FAILURES
from realnet.ratelog import RateLog
from realnet.runtime import loop_clock
from realnet.transportconfig import TransportConfig, TransportStats

log = logging.getLogger("realnet.transport")

_ENCODERS = ENCODERS
_WRITERS = WRITERS
_pack_dict = pack_dict

OnMessage = Callable[[str, Any], None]
#: node id -> its peer address ("HOST:PORT"), or None when unknown
Resolve = Callable[[str], str | None]


class PeerTransport:
    """Listens on the peer port and keeps one outbound link per destination.

    ``resolve(id)`` gives a member's peer address (``"HOST:PORT"``) or None; ``peers`` maps the
    static peers' ids to (host, port), the fallback and the links opened by :meth:`connect_all`.
    ``on_message(src, msg)`` is the node's entry point. ``rng`` is the runtime's random (backoff
    jitter). ``http_addr`` is this node's client HTTP address, named in the ``wrong_port`` answer
    to an HTTP request on the peer port.
    """

    def __init__(
        self,
        *,
        node_id: str,
        on_message: OnMessage,
        node_stats: NodeStats,
        rng: random.Random,
        peers: Mapping[str, tuple[str, int]] | None = None,
        resolve: Resolve | None = None,
        config: TransportConfig | None = None,
        cluster_name: str = "",
        loop: asyncio.AbstractEventLoop | None = None,
        http_addr: str = "",
        keyring: auth.Keyring | None = None,
    ) -> None:
        self.node_id = node_id
        #: this node's client HTTP address, named in the answer to an HTTP request on the peer port
        self.http_addr = http_addr
        self.config = config or TransportConfig()
        self.loop = loop if loop is not None else asyncio.get_running_loop()
        #: ``loop.time`` for the per-message timestamps (a link's ``last_used``, a connection's
        #: ``last_rx``), as :func:`realnet.runtime.loop_clock` hands it out
        self.clock: Callable[[], float] = loop_clock(self.loop)
        self.on_message = on_message
        self.node_stats = node_stats
        self.rng = rng
        self.resolve = resolve
        self.cluster_name = cluster_name
        self.stats = TransportStats()
        #: static peers: id -> "HOST:PORT"
        self.static: dict[str, str] = {
            pid: _fmt_addr(host, port) for pid, (host, port) in sorted((peers or {}).items())
            if pid != node_id
        }
        self.links: dict[str, PeerLink] = {
            pid: PeerLink(self, pid, host, port)
            for pid, (host, port) in sorted((peers or {}).items()) if pid != node_id
        }
        self.inbound: set[_InboundProtocol] = set()
        #: inbound connections that have not said Hello yet, oldest first (evicted when full)
        self.pending: dict[_InboundProtocol, None] = {}
        #: the cluster secret's keys (None: an open bus); :meth:`set_keyring` replaces it
        self.keyring = keyring
        #: every line that bad peer input can cause goes through here (bounded)
        # a few lines per reason per minute (3 at once, then one every 20 s)
        self.ratelog = RateLog(log, rate=1 / 20, burst=3, clock=self.loop.time)
        #: address -> when it was last reported as answering in HTTP (rate limit, bounded)
        self._http_warned: dict[str, float] = {}
        self.hello_payload = kvwire.pack(Hello(node_id=node_id, cluster=cluster_name))
        self.server: asyncio.base_events.Server | None = None
        self.closed = False
        #: addresses already logged as unusable (bounded: a log line each, not one per send)
        self._bad_logged: set[str] = set()
        self._sweep_timer: asyncio.TimerHandle | None = None
        self._schedule_sweep()
        #: kind -> fn(peer, msg), shown each message of that kind sent / received (measurements
        #: such as probe RTTs); a dict lookup per message when nobody watches
        self.send_observers: dict[str, OnMessage] = {}
        self.receive_observers: dict[str, OnMessage] = {}

    async def listen(
        self, host: str | None = None, port: int = 0, *, sock: socket.socket | None = None
    ) -> tuple[str, int]:
        """Serve on host:port, or on an already bound ``sock``; returns the bound (host, port).

        Raises OSError (e.g. address in use).
        """
        if sock is not None:
            self.server = await self.loop.create_server(lambda: _InboundProtocol(self), sock=sock)
        else:
            self.server = await self.loop.create_server(
                lambda: _InboundProtocol(self), host, port, reuse_address=True
            )
        name = self.server.sockets[0].getsockname()
        return name[0], name[1]

    def connect_all(self) -> None:
        """Open every link now, so a static cluster is wired before the first request."""
        for link in list(self.links.values()):
            link.connect()

    def address_of(self, dst: str) -> str | None:
        """Where ``dst`` listens: ``"@HOST:PORT"`` itself, else membership, else the static map."""
        if dst.startswith("@"):
            return dst[1:]
        if self.resolve is not None:
            addr = self.resolve(dst)
            if addr:
                return addr
        return self.static.get(dst)

    def send(self, dst: str, msg: Any) -> None:
        """Fire-and-forget: frame ``msg`` onto the link to ``dst`` or drop it (counted). A
        member with no address known (not heard of by gossip yet) that has a connection open
        to us gets it back on that connection (the module docstring, "Sending back")."""
        if self.closed:
            self.stats.drop("closed")
            return
        link = self.links.get(dst)
        # address_of, inline (every message sent passes here)
        if dst[:1] == "@":
            addr: str | None = dst[1:]
        else:
            resolve = self.resolve
            addr = (resolve(dst) if resolve is not None else None) or self.static.get(dst)
        back: _InboundProtocol | None = None
        if addr is None or dst == self.node_id:
            if addr is None and dst != self.node_id:
                back = self._inbound_from(dst)
            if back is None:
                self.stats.drop("unknown_peer" if addr is None else "self")
                return
        elif link is None or link.addr != addr:
            link = self._open_link(dst, addr, link)
            if link is None:
                return
        try:
            # kvwire.pack, inline: the kind's byte writer, else its encoder, then msgpack
            # (tests/realnet/test_transport_fast.py holds the two to the same bytes)
            writer = _WRITERS.get(type(msg))
            data = writer(msg) if writer is not None else None
            if data is None:
                enc = _ENCODERS.get(type(msg))
                data = _pack_dict(enc(msg)) if enc is not None else kvwire.pack(msg)
        except Exception:
            # Our own message failed to encode: a bug in kvcore, not the peer's fault.
            self.stats.drop("encode_error")
            log.exception("cannot encode %s for %s", kind_of(msg), dst)
            return
        kind = type(msg).__name__  # kind_of, inline
        if len(data) > self.config.max_frame_bytes:
            self.stats.drop("too_large")
            log.warning(
                "not sending %s of %d bytes to %s: over max_frame_bytes (%d)",
                kind, len(data), dst, self.config.max_frame_bytes,
            )
            return
        observer = self.send_observers.get(kind)
        if observer is not None:
            observer(dst, msg)
        if back is not None:
            back.send_back(kind, data)
        else:
            assert link is not None
            link.send(kind, data)

    def _inbound_from(self, peer: str) -> _InboundProtocol | None:
        """The open connection ``peer`` made to us, bound to its id by its Hello (on an
        authenticated bus, by the handshake that proved it): the latest to have sent a frame."""
        best: _InboundProtocol | None = None
        for proto in self.inbound:
            if proto.peer == peer and proto.can_send_back() and (best is None or proto.last_rx > best.last_rx):
                best = proto
        return best

    def _open_link(self, dst: str, addr: str, old: PeerLink | None) -> PeerLink | None:
        """A new link to ``dst`` at ``addr``, replacing ``old`` (the member moved)."""
        try:
            host, port = parse_addr(addr)
        except ValueError as e:
            # gossip told us an address we cannot use; a peer's input must not hurt us
            self.stats.drop("bad_address")
            if addr not in self._bad_logged and len(self._bad_logged) < 1024:
                self._bad_logged.add(addr)
                log.warning("cannot send to %s: %s", dst, e)
            return None
        if old is not None:
            log.info("peer %s moved from %s to %s", dst, old.addr, addr)
            old.close()
            self.stats.link_closed("moved")
        link = PeerLink(self, dst, host, port, addr)
        self.links[dst] = link
        return link

    def http_answered(self, link: PeerLink) -> None:
        """``link``'s address answered in HTTP: say so at warning level, once per address per
        ``HTTP_WARN_EVERY`` seconds (a seed is redialled every join retry)."""
        self.stats.http_answers += 1
        now = self.loop.time()
        last = self._http_warned.get(link.addr)
        text = http_answer_warning(link.peer_id, link.host, link.port)
        if last is not None and now - last < HTTP_WARN_EVERY:
            log.debug("%s", text)
            return
        if len(self._http_warned) >= 1024:
            self._http_warned.clear()
        self._http_warned[link.addr] = now
        log.warning("%s", text)

    def forget(self, dst: str) -> None:
        """Close and drop the link to ``dst`` (it left or was reaped); a later send reopens."""
        link = self.links.pop(dst, None)
        if link is not None:
            link.close()
            self.stats.link_closed("forgotten")

    def _schedule_sweep(self) -> None:
        every = max(0.05, min(5.0, self.config.idle_timeout / 4))
        self._sweep_timer = self.loop.call_later(every, self._sweep)

    def _sweep(self) -> None:
        """Close links nothing was sent on for ``idle_timeout`` (module docstring)."""
        self._sweep_timer = None
        if self.closed:
            return
        try:
            cutoff = self.loop.time() - self.config.idle_timeout
            for dst in sorted(self.links):
                link = self.links[dst]
                if link.last_used < cutoff and link.state != CONNECTING:
                    del self.links[dst]
                    link.close()
                    self.stats.link_closed("idle")
                    log.debug("closed the idle link to %s", dst)
            self._sweep_inbound()
        except Exception:  # never let housekeeping stop the loop's other work
            log.exception("the idle-link sweep raised")
        self._schedule_sweep()

    def _sweep_inbound(self) -> None:
        """Close inbound connections that sent nothing for ``inbound_idle_timeout``."""
        cutoff = self.loop.time() - self.config.inbound_idle_timeout
        for proto in sorted(self.inbound, key=lambda p: p.last_rx):
            if proto.last_rx >= cutoff:
                break
            if proto.closed or proto.transport is None:
                continue
            self.stats.inbound_idle_closed += 1
            self.ratelog.log(
                logging.INFO, "inbound_idle", "closing the peer connection from %s (%s): "
                "nothing received for %gs", proto.peername, proto.peer or "no Hello",
                self.config.inbound_idle_timeout,
            )
            proto.shut()

    def set_keyring(self, keyring: auth.Keyring) -> None:
        """Use new keys from now on (the secret file was read again, SIGHUP): new connections
        dial with the new primary; an outbound link whose key is no longer the primary is
        closed gracefully and dialled again; an inbound connection whose key is no longer
        accepted is closed (the peer redials with a key we hold)."""
        if self.keyring is None:
            raise ValueError("this node's bus is open: authentication is not turned on by a reload")
        self.keyring = keyring
        for dst in sorted(self.links):
            self.links[dst].retire()
        for proto in list(self.inbound):
            session = proto.session
            if session is not None and not keyring.holds(session.key) and not proto.closed:
                self.stats.link_closed("key_dropped")
                proto.shut()
            elif session is None:
                # a handshake under way finishes against the new keys (a key removed now is
                # refused at the proof: kvwire.auth.ServerHandshake.on_proof)
                proto.rekey(keyring)

    async def close(self) -> None:
        """Stop listening, close every link and inbound connection."""
        self.closed = True
        if self._sweep_timer is not None:
            self._sweep_timer.cancel()
            self._sweep_timer = None
        if self.server is not None:
            self.server.close()
        for link in self.links.values():
            link.close()
        for proto in list(self.inbound):
            if proto.transport is not None:
                proto.closed = True
                proto.transport.abort()
        self.inbound.clear()
        if self.server is not None:
            try:
                await asyncio.wait_for(self.server.wait_closed(), 2.0)
            except TimeoutError:
                pass
            self.server = None

    def info(self) -> dict[str, Any]:
        out = self.stats.as_dict()
        out["inbound_connections"] = len(self.inbound)
        out["inbound_peers"] = sorted({p.peer for p in self.inbound if p.peer is not None})
        out["links"] = {pid: link.info() for pid, link in sorted(self.links.items())}
        keyring = self.keyring
        # the public key ids only (kvwire.auth.key_id), primary first: what a rotation checks
        out["bus"] = {
            "authenticated": keyring is not None,
            "key_ids": [] if keyring is None else [auth.key_id(k).hex() for k in keyring.keys],
        }
        return out


__all__ = [
    "PeerLink",
    "PeerTransport",
    "Resolve",
    "TransportConfig",
    "TransportStats",
    "http_answer_warning",
    "wrong_port_response",
]
