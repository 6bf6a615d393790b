"""Cluster administration over the nodes' HTTP API: the library behind ``storelab cluster``.

Theory of operation
-------------------
Everything here is synchronous (``http.client``, one keep-alive connection per node) and talks
to nodes only through their HTTP API: the read views (``/cluster/members``, ``/cluster/slots``,
``/cluster/info``) and the admin endpoints of :mod:`realnet.api`. Nothing is kept between calls:
each command *discovers* the cluster from one address (:meth:`Admin.discover`: the entry node's
member list, then every live member's own views), decides, acts, and waits for the result with
a deadline by polling the nodes (never a fixed sleep). It is what ``redis-cli --cluster`` is to
Redis, and it drives the same slot-move procedure as the sim's verbs (:mod:`kvcore.slotmove`).

The views and checks (:class:`NodeState`, :class:`ClusterView`, :func:`cluster_problems`,
:func:`create_problems`, :func:`member_problems`), the HTTP helper :class:`Http` and the errors
live in :mod:`realnet.clusterview` and are re-exported here; this module is :class:`Admin`, the
commands that act, and :func:`auto_rebalance`.

**Create** (:meth:`Admin.create`). Every node must be a fresh standalone node: reachable, empty,
knowing no other member and not joining any (:func:`create_problems`; any problem refuses the
whole command and nothing is changed). The slots are split evenly and contiguously
(:func:`kvcore.slots.even_split`). The first node is assigned its range first
(``/cluster/assign`` replaces its every-slot standalone claim), then each other node meets it
(``/cluster/meet``: it gives up its own standalone claim) and claims its range
(``/cluster/claim``, which, unlike ``assign``, keeps what the node already learned from its join
reply: ``assign`` would forget the first node's claim, and nothing would teach it again until
that node's incarnation changed). Each node gets its own config epoch, one above the last
(Redis's create does the same), so that every claim is above whatever its node heard before.
Assigning the first node before anyone meets it also means no node ever sees a cluster in which
one node owns every slot while the others own none, which an automatic rebalancer would take
for a cluster to even out. Then every node must report the same, complete slot map and hold
every other node alive.

**Moving slots** (:meth:`Admin.move_slots`, one :class:`kvcore.rebalance.Move`) and **fix**
(:meth:`Admin.fix`) run the one slot-move procedure of :mod:`kvcore.slotmove`, which the sim's
verbs drive too: :meth:`Admin.drive` observes the cluster (:meth:`Admin.discover`, then
:meth:`Admin.snapshot`), asks :func:`kvcore.slotmove.next_steps` for the next steps and carries
them out over HTTP, until the procedure says done or names a problem. Each step acts on a group
of slots in calls of ``CHUNK`` slots: ``import`` on the target, then ``migrate`` on the source,
then ``move-keys`` for every slot of the chunk at once until each answers "0 moved, no error"
(a failed round is retried after a short delay, up to ``max_failures`` failed rounds; kvcore
resends an unacknowledged batch as it was, so a retry never applies twice); then one ``finish``
(one new config epoch per move); then a wait until every live node's slot map names the target
and the source dropped its migrating marks (:meth:`Admin.wait_owned`): the next move's target
must know this claim's epoch, or its own claim would not be above it. A refused ``import`` or
``migrate`` takes back the import marks the move set (``abort``), then the node's error is
raised. Fix closes every open migration (resume, clear leftover or stale marks, roll back with
``/cluster/rollback`` on a source whose target is gone, report what cannot be done), waits for
lagging maps, lets the owner claim again a slot two nodes claim at one epoch (``/cluster/claim``),
moves a slot whose keys a live node holds without owning it (``stray`` in ``/cluster/info``) from
its live owner to that node, an ordinary move (the owner's value of a key both hold is kept),
and, with ``assign_unowned``, gives slots without a live owner one (``GET /cluster/keyslots``
tells which nodes hold keys of them); the rules and their reasons are in :mod:`kvcore.slotmove`.
What ``verify`` reports about members (a node down, views that differ) fix explains in a
sentence (:func:`member_problems`): gossip settles those, not fix. A replicated cluster's slot
map hints (:class:`kvcore.slotmove.Hints`, asked by :mod:`realnet.replicacli`) go through the
same :meth:`Admin.drive`: claims (``/cluster/claim``) and waits only.

**The admin token first** (:meth:`Admin.token_problems`). The CLI sends one admin token to every
node, and a node started with another (``--admin-token-file``), or with one when none is sent,
answers its first change 401: found only there, after other nodes changed, it left a half-made
cluster or a half-done move. So every command that changes several nodes first asks each node it
will change ``POST /cluster/check-token`` (:mod:`realnet.adminapi`: it changes nothing and passes
the token check every admin ``POST`` passes) and refuses, naming each node that answers 401,
before the first change: ``create`` (every node), ``add-node`` (the new node and every live
member: the new node must take the cluster's token), the slot moves of ``reshard``,
``rebalance`` and ``remove-node`` (each move's source and target; the node removed), a
replicated ``remove-node`` (the leader, its heir when it is the node, the node), the forced leave
of a dead member (every live member) and ``fix`` (:func:`fix_nodes`: the nodes its plan changes).
A node without an admin token takes any; one that does not know the verb (404: an older version)
is not judged.

**Plans**. ``reshard`` and ``rebalance`` plan with :func:`kvcore.rebalance.plan_reshard` and
:func:`kvcore.rebalance.plan_rebalance` from the entry node's slot map, after
:meth:`Admin.wait_stable` saw the cluster quiet: every slot owned, every live node agreeing on
the map and on who is alive, no open migration. ``remove-node`` is a rebalance with weight 0 for
the node (as the sim's ``remove_node``), then ``/cluster/leave`` on it; it is over when every
other node holds it *left*.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from kvcore.membership import ALIVE, LEFT
from kvcore.rebalance import Move, PlanError, plan_rebalance, plan_reshard
from kvcore.slotmove import (
    CHUNK,
    MAX_FAILURES,
    RETRY_DELAY,
    UNREACHABLE,
    Assign,
    Clear,
    Done,
    Finish,
    Fix,
    FixPlan,
    Goal,
    Import,
    Migrate,
    MoveKeys,
    MoveSlots,
    NodeView,
    Problem,
    Readopt,
    RollBack,
    Snapshot,
    Step,
    TakeBack,
    WaitLeft,
    WaitOwned,
    marked_twice,
    next_steps,
)
from kvcore.slotmove import Progress as MoveProgress
from kvcore.slotmove import plan_fix as slotmove_plan_fix
from kvcore.slots import (
    Range,
    even_split,
    format_ranges,
    parse_ranges,
    ranges_to_slots,
)
from realnet.clusterview import (
    DEFAULT_TIMEOUT,
    EXIT_ERROR,
    EXIT_OK,
    EXIT_PROBLEMS,
    AdminError,
    ClusterView,
    Http,
    NodeError,
    NodeState,
    Refused,
    TokenRefused,
    Unauthorized,
    Unreachable,
    _fmt,
    bus_problems,
    cluster_problems,
    create_problems,
    group_leader,
    group_view,
    member_problems,
    members_shaped,
    node_shape_problem,
    not_a_node,
    owners_of,
)
from realnet.sentences import capitalized

#: seconds a ``move-keys`` call may take: kvcore answers an unacknowledged batch after
#: ``BATCH_TRIES`` forward timeouts (3 x 2 s by default); a slow node gets room for more
MOVE_KEYS_TIMEOUT = 120.0
#: keys per batch (Redis's ``--cluster-pipeline`` is 10; our batches are one frame each)
DEFAULT_BATCH = 100
#: the admin verb that changes nothing: 200 when the node takes the admin token sent, else 401
#: (realnet.adminapi); asked of every node a command will change before it changes any
CHECK_TOKEN = "/cluster/check-token"
#: seconds to wait for gossip to carry a change to every node
CONVERGE_TIMEOUT = 30.0
POLL_INTERVAL = 0.05

Progress = Callable[[int], None]


# --- the administrator -----------------------------------------------------------------------


def _chunks(xs: list[int], n: int) -> Iterable[list[int]]:
    for i in range(0, len(xs), n):
        yield xs[i:i + n]


class Admin:
    """Administration of one cluster through its nodes' HTTP APIs (see the module docstring)."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT, *, converge_timeout: float = CONVERGE_TIMEOUT,
                 cancel: threading.Event | None = None, log: Callable[[str], None] | None = None,
                 token: str | None = None, accept_loss: bool = False,
                 note: Callable[[str], None] | None = None) -> None:
        self.http = Http(timeout, token)
        #: whether this command sends an admin token (the sentences of :meth:`token_problems`)
        self.token_given = bool(token)
        #: fix may drop or orphan keys (kvcore.node.guards): sent as accept_loss where it acts
        self.accept_loss = accept_loss
        self.converge_timeout = converge_timeout
        #: set from another thread to stop between moves (a move in progress is completed)
        self.cancel = cancel or threading.Event()
        self.log = log or (lambda _msg: None)
        #: a sentence the command should show as it goes (stderr in the CLI): see :meth:`discover`
        self.note = note or (lambda _msg: None)
        self._redirected: set[str] = set()

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Admin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, addr: str, path: str) -> Any:
        return self.http.call(addr, "GET", path)

    def post(self, addr: str, path: str, body: Mapping[str, Any] | None = None,
             timeout: float | None = None) -> Any:
        return self.http.call(addr, "POST", path, dict(body or {}), timeout)

    # --- discovery --------------------------------------------------------------------------

    def probe(self, addr: str) -> NodeState:
        """One node's own views; an unreachable node comes back with ``error`` set."""
        n = NodeState(id="", addr=addr)
        try:
            n.info = self.get(addr, "/cluster/info")
            n.members = self.get(addr, "/cluster/members")
            n.slots = self.get(addr, "/cluster/slots")
        except (Unreachable, NodeError) as e:
            n.info = None
            n.error = e.message
            return n
        odd = node_shape_problem(addr, n.info, n.members, n.slots)
        if odd:
            n.info = n.members = n.slots = None
            n.error = odd
            return n
        assert n.info is not None
        n.id = n.info["id"]
        n.peer_addr = n.info.get("peer_addr", "")
        return n

    def discover(self, addr: str) -> ClusterView:
        """The cluster as ``addr`` knows it, plus every live member's own views.

        A node that runs no replicated group while live members of its view do (a member whose
        data directory was wiped, a node not yet added to the group) would show a replicated
        cluster as an unreplicated one, whose checks and remedies do not apply to it: the view
        is then taken through the group (its leader, or the first member that runs it), and
        :attr:`note` says so, once per address."""
        view = self._view(addr)
        if group_view(view.entry) is not None:
            return view
        runs = [n for n in view.live() if group_view(n) is not None]
        if not runs:
            return view
        through = group_leader(runs) or runs[0]
        try:
            again = self._view(through.addr)
        except Unreachable:
            return view  # (it stopped answering meanwhile: as the entry node sees it)
        if again.entry.id != through.id or group_view(again.entry) is None:
            return view  # (another node answers there now, or it stopped running the group)
        if addr not in self._redirected:
            self._redirected.add(addr)
            self.note(f"Node {view.entry.label()} runs no replicated group but {through.label()} does: "
                      f"asking through {through.id}, as the group sees the cluster.")
        return again

    def _view(self, addr: str) -> ClusterView:
        entry = self.probe(addr)
        if not entry.reachable:
            raise Unreachable(entry.error)
        view = ClusterView(entry)
        for m in sorted(entry.members or [], key=lambda m: m["id"]):
            if m["id"] == entry.id:
                entry.state = m["state"]
                view.nodes[entry.id] = entry
                continue
            n = NodeState(id=m["id"], addr=m.get("addr") or "", peer_addr=m.get("peer_addr") or "",
                          state=m["state"])
            if n.state == ALIVE and n.addr:
                got = self.probe(n.addr)
                if got.reachable and got.id != n.id:
                    got.error = f"{n.addr} answers as node {got.id}, not {n.id}"
                    got.info = None
                n.info, n.members, n.slots, n.error = got.info, got.members, got.slots, got.error
            view.nodes[n.id] = n
        return view

    # --- the admin token -------------------------------------------------------------------

    def token_problems(self, nodes: Iterable[NodeState]) -> list[str]:
        """Why this command's admin token would stop it midway: one sentence per node of
        ``nodes`` (those that answered their probe) that refuses it, naming the node and what to
        do; empty when every one takes it. Each is asked ``POST /cluster/check-token``, which
        changes nothing and passes the token check every admin ``POST`` passes (401 for a token
        the node does not take, or none when it needs one). A node that does not know the verb
        (404: an older version) is not judged; its first change would say."""
        refused: list[NodeState] = []
        holders: list[str] = []  # answered 200 and need a token: they take this one
        seen: set[str] = set()
        for n in nodes:
            if not n.reachable or n.addr in seen:
                continue
            seen.add(n.addr)
            try:
                got = self.post(n.addr, CHECK_TOKEN, {})
            except Unauthorized:
                refused.append(n)
                continue
            except NodeError as e:
                if e.http_status == 404:
                    continue
                raise
            if isinstance(got, dict) and got.get("token_required"):
                holders.append(n.id)
        return [self._token_sentence(n, holders) for n in refused]

    def _token_sentence(self, n: NodeState, holders: Sequence[str]) -> str:
        if not self.token_given:
            return (f"Node {n.label()} requires the admin token (401 unauthorized) and none was given: give "
                    "it with STORELAB_ADMIN_TOKEN=TOKEN or --token-file FILE (the token of the node's "
                    "--admin-token-file).")
        if holders:
            take = "takes" if len(holders) == 1 else "take"
            return (f"Node {n.label()} refuses this admin token (401 unauthorized), which {', '.join(sorted(holders))} "
                    f"{take}: the nodes were started with different admin tokens (--admin-token-file), and "
                    f"every command sends one token to every node; start {n.id} with the same token file as "
                    "the others, then run this command again.")
        return (f"Node {n.label()} refuses this admin token (401 unauthorized): it is not the token the node "
                "was started with (--admin-token-file); give that one with STORELAB_ADMIN_TOKEN=TOKEN or "
                "--token-file FILE.")

    def require_token(self, nodes: Iterable[NodeState], command: str) -> None:
        """:class:`TokenRefused` (exit status 2) naming each node of ``nodes`` that refuses this
        admin token (:meth:`token_problems`), before ``command`` changes anything."""
        problems = self.token_problems(nodes)
        if problems:
            who = "a node refuses" if len(problems) == 1 else f"{len(problems)} nodes refuse"
            raise TokenRefused(f"Refused to {command}: {who} this admin token; nothing was changed.", problems)

    def wait_stable(self, addr: str, timeout: float | None = None) -> ClusterView:
        """Discover until :func:`cluster_problems` finds nothing; Refused with them at the deadline."""
        deadline = time.monotonic() + (self.converge_timeout if timeout is None else timeout)
        while True:
            c = self.discover(addr)
            problems = cluster_problems(c)
            if not problems:
                return c
            if time.monotonic() >= deadline:
                raise Refused("The cluster is not in a state to change (run storelab cluster fix for open "
                              "migrations, or wait for the nodes to agree).", problems)
            time.sleep(POLL_INTERVAL * 4)

    def wait(self, what: str, check: Callable[[], bool], timeout: float | None = None) -> None:
        deadline = time.monotonic() + (self.converge_timeout if timeout is None else timeout)
        while not check():
            if time.monotonic() >= deadline:
                raise AdminError(f"Timed out after {timeout or self.converge_timeout:g}s waiting for {what}.")
            time.sleep(POLL_INTERVAL)

    def owners(self, addr: str) -> list[str | None]:
        """Slot -> owner in ``addr``'s map."""
        slots = self.get(addr, "/cluster/slots")
        return owners_of((r["start"], r["end"], r["node"], r["epoch"]) for r in slots["slots"])

    # --- create, add-node -------------------------------------------------------------------

    def create(self, nodes: Sequence[NodeState], plan: Mapping[str, list[Range]]) -> ClusterView:
        """Assign ``plan`` (node id -> ranges) to fresh nodes and make them one cluster. While it
        waits, it watches the nodes' transport counters (:func:`create_trouble`, as ``add-node``
        does) and stops early with the cause when their connections are refused or fail."""
        first = nodes[0]
        base = max(int((n.info or {}).get("epoch", 0)) for n in nodes)
        before = {n.id: self._transport(n.addr) for n in nodes}
        for i, n in enumerate(nodes):
            ranges = format_ranges(plan[n.id])
            if i == 0:
                self.post(n.addr, "/cluster/assign", {"slots": ranges, "epoch": base + 1})
            else:
                self.post(n.addr, "/cluster/meet", {"seeds": [first.peer_addr]})
                if ranges:
                    self.post(n.addr, "/cluster/claim", {"slots": ranges, "epoch": base + 1 + i})
            self.log(f"{n.id}: slots {ranges or '(none)'} at epoch {base + 1 + i}")
        ids = {n.id for n in nodes}
        polls = [0]

        def converged() -> bool:
            polls[0] += 1
            if polls[0] % TROUBLE_EVERY == 0:
                why = create_trouble(nodes, before, {n.id: self._transport(n.addr) for n in nodes})
                if why:
                    raise AdminError(
                        f"The nodes cannot become one cluster: {why} Each node has its slots and was asked "
                        f"to meet {first.id}, and they keep trying to reach each other; once that is fixed "
                        f"(a node restarted with the right address keeps its slots), storelab cluster verify "
                        f"{first.addr} tells when they agree.")
            maps = []
            for n in nodes:
                members = self.get(n.addr, "/cluster/members")
                if {m["id"] for m in members if m["state"] == ALIVE} != ids:
                    return False
                s = self.get(n.addr, "/cluster/slots")
                if s["unassigned"]:
                    return False
                maps.append(s["slots"])
            return all(m == maps[0] for m in maps)

        self.wait("every node to report the same, complete slot map", converged)
        return self.discover(first.addr)

    def add_node(self, new: NodeState, cluster: ClusterView) -> None:
        """``new`` (fresh, empty) meets the cluster through its entry node and owns no slots.
        While it waits, it watches the two nodes' transport counters (:func:`join_trouble`) and
        stops early with the cause when their connections are refused or fail."""
        entry = cluster.entry
        before = {n.id: self._transport(n.addr) for n in (new, entry)}
        self.post(new.addr, "/cluster/meet", {"seeds": [entry.peer_addr]})
        live = [n for n in cluster.live()]
        want = entry.runs
        polls = [0]

        def joined() -> bool:
            polls[0] += 1
            if polls[0] % TROUBLE_EVERY == 0:
                why = join_trouble(new, entry, before, {n.id: self._transport(n.addr) for n in (new, entry)})
                if why:
                    raise AdminError(f"Node {new.id} cannot join the cluster: {why} It keeps trying to join; "
                                     "once that is fixed, run this add-node again (or stop it, start it "
                                     "again fixed, and run add-node).")
            for n in [*live, new]:
                states = {m["id"]: m["state"] for m in self.get(n.addr, "/cluster/members")}
                if states.get(new.id) != ALIVE or any(states.get(m.id) != ALIVE for m in live):
                    return False
            s = self.get(new.addr, "/cluster/slots")
            return [(r["start"], r["end"], r["node"], r["epoch"]) for r in s["slots"]] == want

        self.wait(f"every node to hold {new.id} alive and {new.id} to learn the slot map", joined)

    def _transport(self, addr: str) -> dict[str, Any]:
        """A node's transport counters (``/cluster/info``'s ``transport``; empty if it did not answer)."""
        try:
            info = self.get(addr, "/cluster/info")
        except (Unreachable, NodeError):
            return {}
        return dict((info or {}).get("transport") or {})

    # --- moving slots -----------------------------------------------------------------------

    def move_slots(self, cluster: ClusterView, move: Move, batch: int = DEFAULT_BATCH,
                   progress: Progress | None = None, max_failures: int = MAX_FAILURES) -> int:
        """Carry out one move live (module docstring); returns the target's new config epoch."""
        src = cluster.resolve(move.source)
        dst = cluster.resolve(move.target)
        for n in (src, dst):
            if n.state != ALIVE or not n.reachable:
                raise Refused(f"Node {n.label()} is {n.state if n.state != ALIVE else 'unreachable'}; "
                                 "slots cannot move from or to it.")
        goal = MoveSlots(dst.id, tuple(ranges_to_slots(move.slots)), src.id)
        epoch, problems = self.drive(cluster.entry.addr, goal, batch, progress, max_failures)
        if problems:
            raise AdminError(_sentence(problems[0]))
        return epoch

    def fix_snapshot(self, cluster: ClusterView, assign_unowned: bool) -> Snapshot:
        """The snapshot a fix plans from: with every live node's key slots when it assigns unowned
        slots, or when a slot is marked toward two moves (fix clears an import mark only where no
        key lies: :func:`kvcore.slotmove.marked_twice`); else without them (no request more)."""
        snap = self.snapshot(cluster, assign_unowned)
        if not assign_unowned and marked_twice(snap):
            snap = self.snapshot(cluster, True)
        return snap

    def snapshot(self, cluster: ClusterView, key_slots: bool = False) -> Snapshot:
        """What :mod:`kvcore.slotmove` plans from: every member as the entry node lists it, with
        its own map, marks and stray slots (``/cluster/info``) when it answered (``unreachable``
        when it did not); with ``key_slots``, the slots each live node holds keys of
        (``GET /cluster/keyslots``)."""
        nodes: dict[str, NodeView] = {}
        for n in cluster.nodes.values():
            if n.state == ALIVE and (not n.reachable or (n.info or {}).get("lost_state")):
                # a member that lost its state (503 lost_state) acts on nothing and never maps its
                # own old claim: as if it did not answer (a hint mend would wait for it in vain)
                nodes[n.id] = NodeView(n.id, UNREACHABLE)
                continue
            migrating, importing = n.open_marks()
            held: frozenset[int] = frozenset()
            if key_slots and n.reachable and n.state == ALIVE:
                held = frozenset(ranges_to_slots(parse_ranges(self.get(n.addr, "/cluster/keyslots")["slots"])))
            stray = frozenset(ranges_to_slots(parse_ranges(((n.info or {}).get("stray") or {}).get("slots") or "")))
            left = frozenset(m["id"] for m in n.members if m["state"] == LEFT) if n.members is not None else None
            nodes[n.id] = NodeView(n.id, n.state, tuple(n.runs), migrating, importing, held, stray, left)
        return Snapshot(nodes, cluster.entry.id)

    def drive(self, addr: str, goal: Goal, batch: int = DEFAULT_BATCH, progress: Progress | None = None,
              max_failures: int = MAX_FAILURES) -> tuple[int, list[str]]:
        """Observe the cluster of ``addr``, ask :func:`kvcore.slotmove.next_steps`, act over HTTP,
        until Done or a Problem: (the last new config epoch or 0, the problems that stopped it).
        A refused import or migrate takes back the import marks, then raises the node's error."""
        state = MoveProgress()
        refusal: AdminError | None = None
        epoch = 0
        fixing = isinstance(goal, Fix)
        assign = isinstance(goal, Fix) and goal.assign_unowned
        cluster = self.discover(addr)
        snap = self.fix_snapshot(cluster, assign) if fixing else self.snapshot(cluster)
        while True:
            steps = next_steps(snap, goal, state, chunk=CHUNK, max_failures=max_failures, retry_delay=RETRY_DELAY)
            again = False
            for step in steps:
                if isinstance(step, Problem):
                    if refusal is not None:
                        raise refusal
                    return epoch, [s.text for s in steps if isinstance(s, Problem)]
                if isinstance(step, Done):
                    return epoch, []
                try:
                    state, got = self._act(cluster, step, state, batch, progress)
                except AdminError as e:
                    if not isinstance(step, Import | Migrate):
                        raise
                    # a guard refused (or the node did not answer): take back, then raise it
                    refusal = e
                    state = state.after_refusal(e.detail if isinstance(e, NodeError) and e.detail else e.message)
                    got = 0
                epoch = got or epoch
                if not isinstance(step, MoveKeys) or state.retry or state.refused:
                    again = True
                if state.refused and not isinstance(step, TakeBack):
                    # look again, to take back the import marks; once taken back, the Problem
                    # that follows ends the procedure (looking again would plan them again: a
                    # source that is down shows no mark, so every import of it seems unpaired)
                    break
            if again:
                cluster = self.discover(addr)
                snap = self.fix_snapshot(cluster, assign) if fixing else self.snapshot(cluster)

    def _act(self, cluster: ClusterView, step: Step, state: MoveProgress, batch: int,
             progress: Progress | None) -> tuple[MoveProgress, int]:
        """One step over HTTP: (the new progress, a new config epoch or 0)."""
        assert not isinstance(step, Done | Problem), "drive ends at Done and Problem, it never acts on them"
        if isinstance(step, WaitOwned):
            self.wait_owned(cluster, list(step.slots), step.target, list(step.nodes))
            return state, 0
        if isinstance(step, WaitLeft):
            self.wait_left(cluster, step.node, step.member)
            return state, 0
        addr = cluster.nodes[step.node].addr
        if isinstance(step, Import | Migrate):
            path, peer = (("/cluster/import", {"source": step.source}) if isinstance(step, Import)
                          else ("/cluster/migrate", {"target": step.target}))
            for chunk in _chunks(list(step.slots), CHUNK):
                self.post(addr, path, {"slots": chunk, **peer})
            return state, 0
        if isinstance(step, MoveKeys):
            if step.delay:
                time.sleep(step.delay)
            rows = []
            for chunk in _chunks(list(step.slots), CHUNK):
                r = self.post(addr, "/cluster/move-keys", {"slots": chunk, "count": batch}, timeout=MOVE_KEYS_TIMEOUT)
                rows += [(row["slot"], row["moved"], row["error"]) for row in r["results"]]
            finished = sum(1 for _, moved, error in rows if not moved and not error)
            if progress is not None and finished:
                progress(finished)
            return state.after_move_keys(rows), 0
        if isinstance(step, Finish):
            return state, int(self.post(addr, "/cluster/finish", {"slots": _fmt(step.slots)})["epoch"])
        if isinstance(step, TakeBack):
            for chunk in _chunks(list(step.slots), CHUNK):
                try:
                    self.post(addr, "/cluster/abort", {"slots": chunk})
                except AdminError:
                    pass  # the refusal that stopped the move is what to report
            return state, 0
        if isinstance(step, Clear):
            loss = {"accept_loss": True} if self.accept_loss else {}
            for chunk in _chunks(list(step.slots), CHUNK):
                try:
                    self.post(addr, "/cluster/abort", {"slots": chunk, **loss})
                except NodeError as e:
                    if e.code != "conflict":
                        raise
                    # a batch of one of these slots is unacknowledged: resend it (the target
                    # answers a batch it stored without applying it again), then clear
                    self.post(addr, "/cluster/move-keys", {"slots": chunk, "count": batch}, timeout=MOVE_KEYS_TIMEOUT)
                    self.post(addr, "/cluster/abort", {"slots": chunk, **loss})
            return state, 0
        if isinstance(step, RollBack):
            for chunk in _chunks(list(step.slots), CHUNK):
                self.post(addr, "/cluster/rollback", {"slots": chunk})
            return state, 0
        if isinstance(step, Assign | Readopt):
            loss = {"accept_loss": True} if self.accept_loss else {}
            r = self.post(addr, "/cluster/claim", {"slots": _fmt(step.slots), "epoch": step.epoch, **loss})
            self.log(f"{step.node}: claimed slots {_fmt(step.slots)} at epoch {step.epoch}")
            return state, int(r["epoch"])
        raise AssertionError(f"unexpected step {step!r}")

    def wait_owned(self, cluster: ClusterView, slots: list[int], target: str, nodes: Sequence[str]) -> None:
        """Until ``nodes`` (ids; those down are skipped) map ``slots`` to ``target`` and keep no
        migrating mark of them."""
        todo = [cluster.nodes[n].addr for n in nodes if n in cluster.nodes and cluster.nodes[n].reachable]
        wanted = set(slots)

        def done() -> bool:
            while todo:
                owners = self.owners(todo[0])
                if any(owners[s] != target for s in slots):
                    return False
                migrating = (self.get(todo[0], "/cluster/info") or {}).get("migrating", {})
                if wanted.intersection(int(k) for k in migrating):
                    return False
                todo.pop(0)
            return True

        self.wait(f"every node to see {target} own the {len(slots)} moved slots", done)

    def wait_left(self, cluster: ClusterView, nid: str, member: str) -> None:
        """Until node ``nid``'s own members list holds ``member`` as left (gossip brings it)."""
        addr = cluster.nodes[nid].addr

        def done() -> bool:
            members = self.get(addr, "/cluster/members")
            if not members_shaped(members):
                raise AdminError(not_a_node(addr, "/cluster/members"))
            return any(m["id"] == member and m["state"] == LEFT for m in members)

        self.wait(f"{nid} to learn that {member} left", done)

    def run_moves(self, cluster: ClusterView, moves: Sequence[Move], batch: int = DEFAULT_BATCH,
                  progress: Progress | None = None) -> int:
        """Carry out ``moves`` in order; returns how many were done before a cancel."""
        done = 0
        for mv in moves:
            if self.cancel.is_set():
                break
            epoch = self.move_slots(cluster, mv, batch, progress)
            self.log(f"moved {mv.count} slots from {mv.source} to {mv.target} (epoch {epoch})")
            done += 1
        return done

    # --- plans ------------------------------------------------------------------------------

    @staticmethod
    def plan_reshard(cluster: ClusterView, count: int, target: str, sources: Sequence[str] | None) -> list[Move]:
        try:
            return plan_reshard(cluster.assignment(), count, target, sources)
        except PlanError as e:
            raise Refused(str(e)) from None

    @staticmethod
    def plan_rebalance(cluster: ClusterView, weights: Mapping[str, float] | None = None,
                       use_empty: bool = False) -> list[Move]:
        ids = [n.id for n in cluster.nodes.values() if n.state == ALIVE]
        try:
            return plan_rebalance(cluster.assignment(), ids, weights, use_empty)
        except PlanError as e:
            raise Refused(str(e)) from None

    # --- leaving ----------------------------------------------------------------------------

    def leave(self, cluster: ClusterView, node: NodeState) -> None:
        """``node`` leaves gracefully; waits until every other live node holds it left."""
        self.post(node.addr, "/cluster/leave", {})
        self._wait_held_left([n for n in cluster.live() if n.id != node.id], node.id, "every other node")

    def forget(self, cluster: ClusterView, node: NodeState, accept_loss: bool = False) -> None:
        """A forced leave on behalf of the dead member ``node`` (serf's ``force-leave``, Redis's
        ``CLUSTER FORGET``): every live member is asked to hold it left (``/cluster/forget``: a
        member that holds it dead ignores the gossiped leave, so each is asked), then waits until
        each does."""
        others = [n for n in cluster.live() if n.id != node.id]
        body: dict[str, Any] = {"node": node.id, **({"accept_loss": True} if accept_loss else {})}
        for n in others:
            self.post(n.addr, "/cluster/forget", body)
        self._wait_held_left(others, node.id, "every live member")

    def _wait_held_left(self, others: list[NodeState], node_id: str, who: str) -> None:
        """Wait until each of ``others`` holds ``node_id`` left (or no longer knows it)."""
        def gone() -> bool:
            for n in others:
                states = {m["id"]: m["state"] for m in self.get(n.addr, "/cluster/members")}
                if states.get(node_id, LEFT) != LEFT:
                    return False
            return True

        self.wait(f"{who} to hold {node_id} left", gone)

    def drain(self, addr: str, node_id: str, use_empty: bool = True, batch: int = DEFAULT_BATCH,
              progress: Progress | None = None, stable_timeout: float | None = None) -> list[Move]:
        """Move every slot of ``node_id`` to the other live members (weight 0); the moves done."""
        cluster = self.wait_stable(addr, stable_timeout)
        moves = self.plan_rebalance(cluster, {cluster.resolve(node_id).id: 0.0}, use_empty)
        self.run_moves(cluster, moves, batch, progress)
        return moves

    # --- fix --------------------------------------------------------------------------------

    def plan_fix(self, cluster: ClusterView, assign_unowned: bool = False) -> FixPlan:
        """What fix will do (:func:`kvcore.slotmove.plan_fix`), plus, once nothing is left to do
        on the slots, a sentence for each disagreement on members, which fix does not change."""
        plan = slotmove_plan_fix(self.fix_snapshot(cluster, assign_unowned), assign_unowned)
        if plan.empty():
            plan.problems += member_problems(cluster)
        return plan

    def fix(self, cluster: ClusterView, plan: FixPlan | None = None, batch: int = DEFAULT_BATCH,
            progress: Progress | None = None, assign_unowned: bool = False) -> list[str]:
        """Drive fix (:class:`kvcore.slotmove.Fix`) until nothing is left to do; the problems it
        could not fix. ``plan`` is what was shown: the procedure observes again at every step."""
        _, problems = self.drive(cluster.entry.addr, Fix(assign_unowned), batch, progress)
        return problems


def fix_nodes(cluster: ClusterView, plan: FixPlan) -> list[NodeState]:
    """The members ``plan`` changes (each move's ends, each node whose marks it clears or rolls
    back, each node it lets claim slots): the nodes fix asks its admin token of first."""
    ids = {i for m in [*plan.resume, *plan.regather] for i in (m.source, m.target)}
    ids.update(nid for nid, _ in [*plan.clear, *plan.rollback, *plan.adopt, *plan.readopt, *plan.collided,
                                  *plan.reclaim, *plan.assign])
    return [n for i, n in cluster.nodes.items() if i in ids]


#: ``add-node``'s and ``create``'s waits look at the transport counters every this many polls
#: (about half a second)
TROUBLE_EVERY = 10
#: refused connections (counted by reason) that make ``add-node`` (``create``) stop early with the cause
TROUBLE_REFUSALS = 2
#: failed connection attempts to one address that make ``add-node`` (``create``) stop early
TROUBLE_CONNECTS = 3

#: an inbound refusal counted by the node that refused (``frames_malformed``), in words:
#: (the refusing node, the dialling node) -> why
_REFUSED_BECAUSE: dict[str, Callable[[str, str], str]] = {
    "unknown_key": lambda me, peer: f"their cluster secrets differ ({me} holds no key that {peer} dials with)",
    "bad_proof": lambda me, peer: f"their cluster secrets differ ({peer}'s proof fails with {me}'s key)",
    "secret_unexpected": lambda me, peer: f"{peer} has a cluster secret (--secret-file) and {me} has none",
    "no_secret": lambda me, peer: f"{me} has a cluster secret (--secret-file) and {peer} has none",
    "cluster_mismatch": lambda me, peer: "their cluster names differ (--cluster-name)",
}


def _grew(before: Mapping[str, Any], now: Mapping[str, Any], field: str, reason: str) -> int:
    return int((now.get(field) or {}).get(reason, 0)) - int((before.get(field) or {}).get(reason, 0))


def join_trouble(new: NodeState, entry: NodeState, before: Mapping[str, Mapping[str, Any]],
                 now: Mapping[str, Mapping[str, Any]], command: str = "add-node") -> str:
    """Why ``new`` cannot join through ``entry``, from their transport counters (``before``
    the meet and ``now``, by node id): a sentence, or "" while nothing says it. Refused
    connections by reason, counted by the node that refused (a secret or a cluster name that
    differs), and connection attempts that keep failing (an advertised peer address that the
    other cannot reach)."""
    pairs = ((entry, new), (new, entry))
    for me, peer in pairs:
        for reason, says in _REFUSED_BECAUSE.items():
            n = _grew(before.get(me.id, {}), now.get(me.id, {}), "frames_malformed", reason)
            if n >= TROUBLE_REFUSALS:
                return (f"{me.id} refused {n} of {peer.id}'s connections since {command} began ({reason}): "
                        f"{says(me.id, peer.id)}.")
    for me, peer in pairs:
        links = (now.get(me.id) or {}).get("links") or {}
        for key, link in sorted(links.items()):
            if (key == peer.id or (peer.peer_addr and link.get("addr") == peer.peer_addr)) and int(
                    link.get("failures") or 0) >= TROUBLE_CONNECTS and link.get("state") != "connected":
                err = str(link.get("last_error") or "").rstrip(".").lower()
                return (f"{me.id} cannot connect to {peer.id}'s peer address {link.get('addr') or peer.peer_addr} "
                        f"({link.get('failures')} attempts{': ' + err if err else ''}); every node must reach "
                        f"it (the address {peer.id} advertises: --advertise-host, --peer-port).")
    refused = _grew(before.get(new.id, {}), now.get(new.id, {}), "handshakes_failed", "refused_by_peer")
    if refused >= TROUBLE_REFUSALS:
        return (f"{entry.id} refused {refused} of {new.id}'s connection handshakes (refused_by_peer): "
                "their cluster secrets (--secret-file) differ; the nodes' logs say how.")
    return ""


def create_trouble(nodes: Sequence[NodeState], before: Mapping[str, Mapping[str, Any]],
                   now: Mapping[str, Mapping[str, Any]]) -> str:
    """Why ``nodes`` cannot become one cluster (``create``'s wait), from their transport
    counters: :func:`join_trouble` for each node with the first one (the node every other
    meets), then for every other pair (they learn each other's peer addresses from it); ""
    while nothing says it."""
    pairs = [(n, nodes[0]) for n in nodes[1:]]
    pairs += [(n, m) for i, m in enumerate(nodes[1:], 1) for n in nodes[i + 1:]]
    for new, entry in pairs:
        why = join_trouble(new, entry, before, now, "create")
        if why:
            return why
    return ""


def _sentence(text: str) -> str:
    return capitalized(text.strip()).rstrip(".") + "."


# --- automatic rebalancing (run by a node, in a worker thread) --------------------------------


def auto_rebalance(addr: str, me: str, cancel: threading.Event | None = None,
                   log: Callable[[str], None] | None = None, token: str | None = None) -> str:
    """One automatic rebalance as the member ``me`` at ``addr``; returns what happened in words.

    Only the alive member with the lowest id acts; the cluster must be quiet
    (:func:`cluster_problems`); empty members take part (a node that joins owns nothing).
    Raises :class:`Refused` when the cluster is not quiet (the caller retries later).
    """
    with Admin(cancel=cancel, log=log, token=token) as admin:
        cluster = admin.discover(addr)
        alive = sorted(n.id for n in cluster.nodes.values() if n.state == ALIVE)
        if not alive or alive[0] != me:
            return f"not rebalancing: {alive[0] if alive else 'another node'} has the lowest id"
        problems = cluster_problems(cluster)
        if problems:
            raise Refused("the cluster is not quiet", problems)
        moves = admin.plan_rebalance(cluster, None, use_empty=True)
        if not moves:
            return "balanced: nothing to move"
        done = admin.run_moves(cluster, moves)
        return f"moved {sum(m.count for m in moves[:done])} slots in {done} of {len(moves)} moves"


__all__ = [
    "CHECK_TOKEN",
    "CHUNK",
    "DEFAULT_BATCH",
    "DEFAULT_TIMEOUT",
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_PROBLEMS",
    "Admin",
    "AdminError",
    "ClusterView",
    "FixPlan",
    "Http",
    "NodeError",
    "NodeState",
    "Refused",
    "TokenRefused",
    "Unauthorized",
    "Unreachable",
    "auto_rebalance",
    "bus_problems",
    "cluster_problems",
    "create_problems",
    "create_trouble",
    "even_split",
    "fix_nodes",
    "join_trouble",
    "member_problems",
    "owners_of",
]
