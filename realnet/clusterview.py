"""What the nodes say, read over their HTTP API, and what is wrong with it: the views and
checks behind ``storelab cluster`` (:mod:`realnet.admin`).

Theory of operation
-------------------
:class:`Http` keeps one synchronous keep-alive connection per node (``http.client``); JSON in
and out. :class:`NodeState` is one member as the entry node lists it plus what it says itself
(``/cluster/info``, ``/cluster/members``, ``/cluster/slots``); :class:`ClusterView` is the
cluster as discovered from one address (:meth:`realnet.admin.Admin.discover` builds it). The
checks are pure functions of those views, one sentence per problem: :func:`create_problems`
(may these nodes form a new cluster), :func:`cluster_problems` (what ``verify`` reports) and
:func:`member_problems` (disagreements on members, which gossip settles and fix does not).

**Errors** are :class:`AdminError` with a sentence and the exit status the CLI uses: 1 for a
refusal or problems found (:class:`Refused`), 2 for a node that cannot be reached or answered an
error (:class:`Unreachable`, :class:`NodeError`, :class:`Unauthorized`), and for nodes that would
refuse the admin token, found before anything changed (:class:`TokenRefused`).
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from kvcore.config import parse_addr
from kvcore.membership import ALIVE, LEFT
from kvcore.slots import (
    NUM_SLOTS,
    Range,
    count_slots,
    format_ranges,
    parse_ranges,
    slots_to_ranges,
)

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_ERROR = 2

#: seconds an ordinary admin or view request may take
DEFAULT_TIMEOUT = 10.0


class AdminError(Exception):
    """An administration command failed; ``str(e)`` is a sentence, ``status`` the exit status."""

    status = EXIT_ERROR

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Refused(AdminError):
    """The command refuses to act (the cluster or a node is not fit), or found problems."""

    status = EXIT_PROBLEMS

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)


class TokenRefused(Refused):
    """Nodes the command would change refuse its admin token (``POST /cluster/check-token``
    answered 401 before anything changed): a refusal, with the exit status of the 401 it spares
    (2, as :class:`Unauthorized`)."""

    status = EXIT_ERROR


class Unreachable(AdminError):
    """A node did not answer (refused, reset, timed out)."""


class NodeError(AdminError):
    """A node answered with an error (``{"error", "message"}``)."""

    def __init__(self, addr: str, status: int, code: str, message: str) -> None:
        self.addr, self.http_status, self.code, self.detail = addr, status, code, message
        super().__init__(f"{message.rstrip('.') or code} ({status} {code} from node {addr}).")


class Unauthorized(NodeError):
    """A node refused the admin token (401): none was given, or another one."""

    def __init__(self, addr: str, message: str) -> None:
        super().__init__(addr, 401, "unauthorized", message)
        self.message = (
            f"Node {addr} refused this request: it requires the admin token (401 unauthorized), "
            "given with STORELAB_ADMIN_TOKEN=TOKEN or --token-file FILE (if you gave one, it is not "
            "the token the node was started with)."
        )
        self.args = (self.message,)


# --- HTTP ------------------------------------------------------------------------------------


#: an answer's body that does not parse as JSON
_NOT_JSON = object()


class Http:
    """One keep-alive connection per node address; JSON in and out. Not thread-safe."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT, token: str | None = None) -> None:
        self.timeout = timeout
        #: ``Authorization: Bearer TOKEN`` on every request (the nodes' admin token), or none
        self._auth = {"Authorization": f"Bearer {token}"} if token else {}
        self._conns: dict[str, http.client.HTTPConnection] = {}

    def call(self, addr: str, method: str, path: str, body: Any = None, timeout: float | None = None) -> Any:
        """Send one request; the decoded JSON answer. Raises Unreachable or NodeError."""
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        headers.update(self._auth)
        for attempt in (0, 1):
            conn = self._conns.get(addr)
            reused = conn is not None
            if conn is None:
                try:
                    host, port = parse_addr(addr)
                except ValueError as e:
                    raise AdminError(str(e)) from None
                conn = self._conns[addr] = http.client.HTTPConnection(host, port, timeout=self.timeout)
            conn.timeout = timeout or self.timeout
            if conn.sock is not None:
                conn.sock.settimeout(conn.timeout)
            try:
                conn.request(method, path, body=payload, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException) as e:
                self.close(addr)
                # a keep-alive connection the node closed while idle: reconnect once; every admin
                # request is safe to repeat (marks are idempotent, a batch is resent as it was)
                if reused and attempt == 0 and not isinstance(e, socket.timeout | TimeoutError):
                    continue
                reason = e.strerror if isinstance(e, OSError) and e.strerror else (str(e) or type(e).__name__)
                raise Unreachable(f"Cannot reach node {addr}: {reason.rstrip('.').lower()}.") from None
            if resp.will_close:
                self.close(addr)
            break
        try:
            obj = json.loads(data) if data else None
        except ValueError:
            obj = _NOT_JSON
        if obj is _NOT_JSON:
            # something answers HTTP there, but not a storelab node: every answer a node sends is
            # JSON, its errors too (a web server's 404 page would otherwise read as a node's)
            ctype = resp.getheader("Content-Type") or "no content type"
            raise NodeError(addr, resp.status, "not_a_node",
                            f"{addr} answered {method} {path} with {ctype}, not JSON: it does not look like a "
                            "storelab node's HTTP address")
        if resp.status == 401:
            raise Unauthorized(addr, str(obj.get("message", "")) if isinstance(obj, dict) else "")
        if resp.status >= 400:
            if isinstance(obj, dict):
                raise NodeError(addr, resp.status, str(obj.get("error", "")), str(obj.get("message", "")))
            raise NodeError(addr, resp.status, "http", data[:200].decode("utf-8", "replace"))
        return obj

    def close(self, addr: str | None = None) -> None:
        for a in [addr] if addr is not None else list(self._conns):
            c = self._conns.pop(a, None)
            if c is not None:
                c.close()


# --- what the nodes say ----------------------------------------------------------------------


@dataclass
class NodeState:
    """One member as the entry node lists it, and what it says itself when it answers."""

    id: str
    addr: str
    peer_addr: str = ""
    #: its state in the entry node's view
    state: str = ALIVE
    info: dict[str, Any] | None = None
    slots: dict[str, Any] | None = None
    members: list[dict[str, Any]] | None = None
    #: why it could not be asked (empty when it answered)
    error: str = ""

    @property
    def reachable(self) -> bool:
        return self.info is not None

    @property
    def runs(self) -> list[tuple[int, int, str, int]]:
        """Its slot map: (start, end, owner, epoch) runs."""
        return [(r["start"], r["end"], r["node"], r["epoch"]) for r in (self.slots or {}).get("slots", [])]

    def open_marks(self) -> tuple[dict[int, str], dict[int, str]]:
        """(migrating slot -> target, importing slot -> source)."""
        info = self.info or {}
        return ({int(k): v for k, v in info.get("migrating", {}).items()},
                {int(k): v for k, v in info.get("importing", {}).items()})

    def label(self) -> str:
        return f"{self.id} ({self.addr})" if self.addr else self.id


def members_shaped(members: Any) -> bool:
    """Whether ``members`` has the shape of a node's ``/cluster/members`` answer."""
    return isinstance(members, list) and all(
        isinstance(m, dict) and isinstance(m.get("id"), str) and isinstance(m.get("state"), str) for m in members)


def not_a_node(addr: str, what: str) -> str:
    """The sentence for ``addr`` answering ``what`` with JSON that is not a storelab node's."""
    return (f"{addr} answered {what} with JSON that is not a storelab node's: is it another service's "
            "address, or a node of another version?")


def node_shape_problem(addr: str, info: Any, members: Any, slots: Any) -> str:
    """Why what ``addr`` answered to ``/cluster/info``, ``/members`` and ``/slots`` is not a
    storelab node's (a sentence; empty when it is): JSON of another shape would otherwise end a
    command in a traceback deep in the checks."""
    def run_ok(r: Any) -> bool:
        return isinstance(r, dict) and all(type(r.get(k)) is int for k in ("start", "end", "epoch")) \
            and isinstance(r.get("node"), str)

    if not (isinstance(info, dict) and isinstance(info.get("id"), str) and info["id"]):
        what = "/cluster/info"
    elif not members_shaped(members):
        what = "/cluster/members"
    elif not (isinstance(slots, dict) and isinstance(slots.get("slots"), list)
              and all(run_ok(r) for r in slots["slots"])):
        what = "/cluster/slots"
    else:
        return ""
    return not_a_node(addr, what)


def owners_of(runs: Iterable[tuple[int, int, str, int]]) -> list[str | None]:
    out: list[str | None] = [None] * NUM_SLOTS
    for lo, hi, node, _ in runs:
        out[lo:hi + 1] = [node] * (hi - lo + 1)
    return out


@dataclass
class ClusterView:
    """The cluster as discovered from one node (:meth:`Admin.discover`)."""

    entry: NodeState
    #: every member the entry node knows, itself included, by id (sorted)
    nodes: dict[str, NodeState] = field(default_factory=dict)

    def live(self) -> list[NodeState]:
        """Members alive in the entry's view that answered."""
        return [n for n in self.nodes.values() if n.state == ALIVE and n.reachable]

    def members(self) -> list[NodeState]:
        """Members that have not left."""
        return [n for n in self.nodes.values() if n.state != LEFT]

    def assignment(self) -> dict[str, list[Range]]:
        """owner -> its ranges, from the entry node's slot map."""
        out: dict[str, list[Range]] = {}
        for lo, hi, node, _ in self.entry.runs:
            out.setdefault(node, []).append((lo, hi))
        return out

    def slot_counts(self) -> dict[str, int]:
        return {n: count_slots(r) for n, r in self.assignment().items()}

    def resolve(self, ref: str) -> NodeState:
        """A member by id or by client address."""
        if ref in self.nodes:
            return self.nodes[ref]
        for n in self.nodes.values():
            if n.addr == ref:
                return n
        known = ", ".join(f"{n.id} ({n.addr})" for n in self.members())
        raise Refused(f"No member of the cluster is called or listens at {ref!r}; members: {known}.")


def group_view(n: NodeState) -> dict[str, Any] | None:
    """A node's ``raft`` view (None: it answered nothing, or runs no replicated group)."""
    raft = (n.info or {}).get("raft")
    return raft if isinstance(raft, dict) else None


def group_leader(nodes: Iterable[NodeState]) -> NodeState | None:
    """Of ``nodes``, the one that reports itself the group's leader at the highest term, if any."""
    best: tuple[int, NodeState] | None = None
    for n in nodes:
        raft = group_view(n)
        if raft is not None and raft.get("role") == "leader":
            if best is None or int(raft.get("term", 0)) > best[0]:
                best = (int(raft.get("term", 0)), n)
    return best[1] if best is not None else None


# --- checks ----------------------------------------------------------------------------------


def create_problems(nodes: Sequence[NodeState]) -> list[str]:
    """Why these nodes cannot form a new cluster (empty: they can), one sentence each."""
    out: list[str] = []
    seen: dict[str, str] = {}
    for n in nodes:
        if not n.reachable:
            out.append(n.error)  # "Cannot reach node ADDR: reason."
            continue
        info = n.info or {}
        others = [m["id"] for m in n.members or [] if m["id"] != n.id]
        if n.id in seen:
            out.append(f"Node {n.label()} is the same node as {seen[n.id]}.")
        seen.setdefault(n.id, n.addr)
        if others or info.get("mode") == "cluster":
            out.append(f"Node {n.label()} is already in a cluster: it knows {len(others)} other "
                       f"member{'s' if len(others) != 1 else ''} ({', '.join(others[:5]) or 'static configuration'}).")
        elif not info.get("joined", True):
            out.append(f"Node {n.label()} is already joining a cluster through seeds.")
        if info.get("keys"):
            out.append(f"Node {n.label()} holds {info['keys']} key{'s' if info['keys'] != 1 else ''}; "
                       "only an empty node can join a new cluster.")
        raft = info.get("raft")
        if isinstance(raft, dict):
            out.append(f"Node {n.label()} already runs a replicated group (voters "
                       f"{', '.join(raft.get('voters', [])) or 'none yet'}); only a node in no group can "
                       "join a new cluster.")
    answering = [n for n in nodes if n.reachable]
    if answering:
        out += bus_problems(answering[0], answering[1:])
    return out


def _bus(n: NodeState) -> tuple[str, bool, list[str]] | None:
    """(cluster name, has a secret, key ids, primary first) from a node's ``/cluster/info``;
    None when it does not say (a node of an older version)."""
    info = n.info or {}
    bus = (info.get("transport") or {}).get("bus")
    if not isinstance(bus, dict) or "cluster_name" not in info:
        return None
    return str(info.get("cluster_name") or ""), bool(bus.get("authenticated")), list(bus.get("key_ids") or [])


def _named(name: str) -> str:
    return f"--cluster-name {name}" if name else "no --cluster-name"


def bus_problems(node: NodeState, others: Sequence[NodeState]) -> list[str]:
    """Why ``node`` and ``others`` (answering nodes) would refuse each other's peer connections,
    one sentence per kind: another cluster name, a cluster secret on one side only, secrets with
    no key in common (each side dials with its first key; the other must hold it). Read from
    ``/cluster/info``
    (``cluster_name``, ``transport.bus``): the key ids, never the keys."""
    mine = _bus(node)
    if mine is None:
        return []
    out: list[str] = []
    name, secret, keys = mine
    for kind in ("name", "secret", "keys"):
        for o in others:
            theirs = _bus(o)
            if theirs is None or o.id == node.id:
                continue
            oname, osecret, okeys = theirs
            if kind == "name" and oname != name:
                out.append(f"Node {node.label()} runs with {_named(name)}, node {o.label()} with {_named(oname)}: "
                           "their nodes refuse each other's connections (cluster_mismatch); start it "
                           f"{'with --cluster-name ' + oname if oname else 'without --cluster-name'}.")
            elif kind == "secret" and osecret != secret:
                has, lacks = (node.label(), o.label()) if secret else (o.label(), node.label())
                out.append(f"Node {has} has a cluster secret (--secret-file) and node {lacks} has none: "
                           "their nodes refuse each other's connections; give every node the same "
                           "secret file, or none.")
            elif kind == "keys" and secret and osecret and keys and okeys and (
                    keys[0] not in okeys or okeys[0] not in keys):
                out.append(f"The cluster secret of node {node.label()} differs from that of node "
                           f"{o.label()} (each dials with the first key of its --secret-file, which the "
                           "other does not hold): their nodes refuse each other's connections; give "
                           "every node the same secret file.")
            else:
                continue
            break  # one sentence of each kind
    return out


def map_diff(a: NodeState, b: NodeState) -> str:
    """Where two slot maps first differ, in words."""
    ea = {s: (o, e) for lo, hi, o, e in a.runs for s in range(lo, hi + 1)}
    eb = {s: (o, e) for lo, hi, o, e in b.runs for s in range(lo, hi + 1)}
    differ = [s for s in range(NUM_SLOTS) if ea.get(s) != eb.get(s)]
    s = differ[0]

    def say(x: tuple[str, int] | None) -> str:
        return "no owner" if x is None else f"{x[0]} at epoch {x[1]}"

    return (f"{len(differ)} slot{'s' if len(differ) != 1 else ''} differ; slot {s}: {a.id} says "
            f"{say(ea.get(s))}, {b.id} says {say(eb.get(s))}")


#: the same, for ``verify`` on a replicated cluster (:mod:`realnet.replicacli`)


def _lost_claim(n: NodeState, entry: NodeState) -> list[int]:
    """Slots ``entry``'s map gives ``n`` where ``n``'s own map does not name itself at that epoch
    or a later one: gossip never teaches a node its own claim, so this is not gossip at work."""
    mine = {s: e for lo, hi, o, e in n.runs if o == n.id for s in range(lo, hi + 1)}
    return [s for lo, hi, o, e in entry.runs if o == n.id for s in range(lo, hi + 1) if mine.get(s, 0) < e]


def cluster_problems(c: ClusterView) -> list[str]:
    """What ``verify`` reports: coverage, agreement on the slot map (owners and epochs) and on
    members, open migrations, members not alive. One sentence each; empty when healthy."""
    out: list[str] = []
    entry = c.entry
    counts = c.slot_counts()
    for n in c.nodes.values():
        if n.state == LEFT:
            continue  # gone for good (remove-node); a left owner is reported with the slots
        if n.state != ALIVE:
            out.append(f"Node {n.label()} is {n.state} in {entry.id}'s view.")
        elif not n.reachable:
            out.append(f"Node {n.label()} does not answer: {n.error.rstrip('.')}.")
        elif isinstance(lost := (n.info or {}).get("lost_state"), dict):
            out.append(lost_sentence(c, n, lost))
    unassigned = (entry.slots or {}).get("unassigned", "")
    if unassigned:
        k = count_slots(parse_ranges(unassigned))
        out.append(f"{k} slot{'s' if k != 1 else ''} {'have' if k != 1 else 'has'} no owner: {unassigned}.")
    for owner, k in sorted(counts.items()):
        m = c.nodes.get(owner)
        if m is None:
            out.append(f"{k} slots are owned by {owner}, which is not a member {entry.id} knows.")
        elif m.state != ALIVE:
            out.append(f"{k} slots are owned by {owner}, which is {m.state}.")
    expected = {n.id: n.state for n in c.members()}
    for n in c.live():
        if n is not entry and n.runs != entry.runs:
            out.append(f"Node {n.id}'s slot map differs from {entry.id}'s: {map_diff(n, entry)}.")
            lost = _lost_claim(n, entry)
            if lost:
                out.append(f"Node {n.id} does not claim {len(lost)} slot{'s' if len(lost) != 1 else ''} "
                           f"({_fmt(lost)}) that {entry.id}'s map gives it: it restarted without its "
                           "cluster state (an empty or another data directory); fix lets it claim them again.")
        view = {m["id"]: m["state"] for m in n.members or []}
        for mid, st in sorted(expected.items()):
            if mid not in view:
                out.append(f"Node {n.id} does not know node {mid}.")
            elif view[mid] != st and n is not entry:
                out.append(f"Node {n.id} holds {mid} {view[mid]}; {entry.id} holds it {st}.")
        stray = (n.info or {}).get("stray") or {}
        if stray.get("keys"):
            k = int(stray["keys"])
            out.append(f"Node {n.id} holds {k} key{'s' if k != 1 else ''} of slots it does not own "
                       f"({stray.get('slots', '')}): no request reaches them. storelab cluster fix moves "
                       "those slots to it from their owner, with the owner's keys (fix --assign-unowned gives "
                       "it the unowned ones).")
        migrating, importing = n.open_marks()
        for marks, kind, prep in ((migrating, "migrating", "to"), (importing, "importing", "from")):
            by_peer: dict[str, list[int]] = {}
            for slot, other in sorted(marks.items()):
                by_peer.setdefault(other, []).append(slot)
            for other, slots in sorted(by_peer.items()):
                out.append(f"Node {n.id} has an open migration: slot{'s' if len(slots) > 1 else ''} "
                           f"{_fmt(slots)} {kind} {prep} {other}.")
    return out


def stray_sender(c: ClusterView, n: NodeState) -> str | None:
    """The member whose Raft traffic marked ``n`` lost (503 ``lost_state``) when that traffic
    cannot have been a group's: every member answers, none runs a group, and the sender is not
    marked lost itself (a group's leader wiped after it marked ``n``). Then it was stray or
    forged, and the mark can be taken back (``/cluster/clear-lost-state``); None otherwise (no
    mark, or a group this view cannot rule out)."""
    lost = (n.info or {}).get("lost_state")
    sender = c.nodes.get(lost.get("from", "")) if isinstance(lost, dict) else None
    if sender is None or isinstance((sender.info or {}).get("lost_state"), dict):
        return None  # (a sender marked lost itself may have been the group's leader, then wiped)
    for m in c.nodes.values():
        if m.state == LEFT:
            continue
        if m.state != ALIVE or not m.reachable or m.info is None or isinstance(m.info.get("raft"), dict):
            return None  # a member that does not answer may run the group; one that answers does
    return sender.id


def lost_sentence(c: ClusterView, n: NodeState, lost: dict[str, Any]) -> str:
    """What ``verify`` says of a member of an unreplicated cluster that took Raft traffic for a
    group's and refuses every key (503 ``lost_state``)."""
    said = (f"Node {n.label()} refuses every key (503 lost_state): it took Raft traffic from {lost.get('from')} "
            f"at term {lost.get('term')} for a replicated group's, but this cluster runs no group")
    if stray_sender(c, n) is not None:
        return (f"{said} and {lost.get('from')} runs none either (a stray frame, or a forged one: a cluster "
                f"secret keeps those off the bus). Its keys are intact: `storelab cluster fix {c.entry.addr}` "
                "takes the mark back (a restart clears it too, but a node without `durable` loses its keys "
                "then).")
    return (f"{said} that this view can see: a member does not answer, or one runs a group, or "
            f"{lost.get('from')} lost its own state, so a group that counts it cannot be ruled out; fix takes "
            "the mark back only once every member answers, none runs a group and the sender was not marked lost.")


def member_problems(c: ClusterView) -> list[str]:
    """Members that disagree about members, explained: gossip settles them, fix does not."""
    out = []
    expected = {n.id: n.state for n in c.members()}
    for n in c.live():
        view = {m["id"]: m["state"] for m in n.members or []}
        for mid, st in sorted(expected.items()):
            if mid not in view or (view[mid] != st and n is not c.entry):
                out.append(f"Node {n.id} holds {mid} {view.get(mid, 'unknown')}, {c.entry.id} holds it {st}: "
                           "membership gossip settles this by itself; fix does not change members.")
    return out


def _fmt(slots: Iterable[int]) -> str:
    return format_ranges(slots_to_ranges(sorted(slots)))


__all__ = [
    "DEFAULT_TIMEOUT",
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_PROBLEMS",
    "AdminError",
    "ClusterView",
    "Http",
    "NodeError",
    "NodeState",
    "Refused",
    "TokenRefused",
    "Unauthorized",
    "Unreachable",
    "bus_problems",
    "cluster_problems",
    "create_problems",
    "member_problems",
    "members_shaped",
    "node_shape_problem",
    "not_a_node",
    "owners_of",
]
