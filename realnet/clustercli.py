"""``storelab cluster``: the cluster administration commands of :mod:`realnet.cli`.

Theory of operation
-------------------
``storelab cluster COMMAND`` administers a cluster, as ``redis-cli --cluster`` does, through
the nodes' HTTP API (:mod:`realnet.admin` does the work). ADDR is a node's client HTTP address
(``HOST:PORT``); NODE is a member's id or its ADDR:

- ``create ADDR ...``: make fresh standalone nodes one cluster, slots split evenly;
- ``verify ADDR`` (alias ``check``, Redis's name): coverage, agreement, open migrations, members
  alive (exit 1 on a problem);
- ``info ADDR``: one row per member of the entry node's view: its state, slots and config epoch
  as the entry node sees them, the keys each node holds by its own count (``?`` when it did not
  answer); the footer names whose view it is;
- ``members ADDR``: the entry node's member table (as ``serf members``): id, addresses, state,
  incarnation, slots advertised, smoothed probe RTT;
- ``create ADDR ... --replicas R``: R = 1, as above; R = the number of nodes: one Raft group of
  them that owns every slot (:mod:`realnet.replicacli`, which also takes ``verify``, ``info``,
  ``add-node`` and ``remove-node`` on a replicated cluster);
- ``failover ADDR --to NODE``: a replicated group's leadership moves to the voter NODE;
- ``add-node NEW EXISTING``: an empty node joins, owning no slots;
- ``reshard ADDR --slots N --to NODE [--from NODE,...|all]``: move N slots live;
- ``rebalance ADDR [--weight NODE=W ...] [--use-empty]``: even out the slots by weight;
- ``remove-node ADDR NODE`` (alias ``del-node``, Redis's name): move the node's slots to the others,
  then it leaves;
- ``fix ADDR [--assign-unowned]``: finish or roll back migrations left open by a crash; mend the
  slot map (lagging maps, same-epoch claims, and with the flag slots without a live owner); move a
  slot whose keys a live node holds without owning it (``verify``: "holds N keys of slots it does
  not own") from its live owner to that node, the owner's keys along; explain what it cannot do.
  On a replicated cluster, where nothing moves, it mends the slot map's hints: the group's voters
  claim the slots that name a non-voter or nobody, evenly (:func:`realnet.replicacli.cmd_fix`).

Every command that changes the cluster first prints what it will do and asks ``[y/N]`` on
stdin (anything but ``y``/``yes``, end of input included, declines) unless ``--yes`` is given.
Moving slots shows a progress bar (tqdm, on stderr). Exit status: 0 done (or nothing to do);
1 refused (a node unfit for ``create``/``add-node``, an impossible plan, a cluster not in a state
to change), problems found (``verify``, what ``fix`` could not fix) or declined at the prompt;
2 a usage error, or a node that could not be reached or answered an error, or that refuses the
admin token (asked of every node a command will change before it changes any:
:meth:`realnet.admin.Admin.token_problems`).
"""


from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from kvcore.rebalance import Move
from kvcore.slots import NUM_SLOTS, count_slots, even_split, format_ranges, parse_ranges
from kvcore.states import State
from realnet import admin, clusterview, replicacli
from realnet.admin import Admin, AdminError, ClusterView, NodeState, Refused
from realnet.clicommon import (
    ADMIN_TOKEN_ENV,
    EXIT_INTERRUPTED,
    NOT_APPLICABLE,
    _node_arg,
    _node_ref,
    _node_refs,
    confirm,
    error,
    say,
    say_problems,
    seconds,
    sentence,
    table,
    token_from,
)

_ADDR_HELP = "a node's client HTTP address, HOST:PORT or http://HOST:PORT"


def _weight_arg(text: str) -> tuple[str, float]:
    node, sep, w = text.rpartition("=")
    if not sep or not node:
        raise argparse.ArgumentTypeError(f"{text!r} is not NODE=WEIGHT")
    try:
        weight = float(w)
    except ValueError:
        raise argparse.ArgumentTypeError(f"the weight in {text!r} is not a number") from None
    if not weight >= 0 or weight == float("inf"):
        raise argparse.ArgumentTypeError(f"the weight in {text!r} must be a finite number >= 0")
    return _node_ref(node), weight


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return n


def add_cluster_parser(sub: Any) -> None:
    c = sub.add_parser(
        "cluster",
        help="administer a cluster: " + ", ".join(
            f"{name} ({alias})" if (alias := _ALIAS_OF.get(name)) else name for name in _CLUSTER_COMMANDS),
        description="Administer a storelab cluster through its nodes' HTTP API (like redis-cli --cluster). "
        "ADDR is a node's client HTTP address (HOST:PORT or http://HOST:PORT); NODE is a member's id or "
        "its ADDR. "
        "Exit status: 0 done, 1 refused / problems found / declined, 2 usage or connection error.",
    )
    csub = c.add_subparsers(dest="cluster_command", metavar="COMMAND", required=True)

    def common(sp: argparse.ArgumentParser, changes: bool = True, moves: bool = False) -> None:
        sp.add_argument("--timeout", type=seconds, default=admin.DEFAULT_TIMEOUT, metavar="SECONDS",
                        help=f"per HTTP request (default {admin.DEFAULT_TIMEOUT:g})")
        sp.add_argument("--token-file", metavar="FILE",
                        help="the nodes' admin token (--admin-token-file of the nodes); default: "
                        "the environment variable STORELAB_ADMIN_TOKEN")
        if changes:
            sp.add_argument("--yes", "-y", action="store_true", help="do it without asking")
        if moves:
            sp.add_argument("--batch", type=_positive_int, default=admin.DEFAULT_BATCH, metavar="KEYS",
                            help=f"keys per migration batch (default {admin.DEFAULT_BATCH})")
            sp.add_argument("--quiet", "-q", action="store_true", help="no progress bar")

    sp = csub.add_parser("create", help="make fresh standalone nodes one cluster",
                         description="Make fresh standalone nodes (reachable, empty, in no cluster) one "
                         "cluster: split the 16384 slots evenly and contiguously, in the order given, "
                         "make the nodes meet, and wait until every node reports the same slot map. "
                         "Refuses, changing nothing, if any node is unfit (exit 1).")
    sp.add_argument("addrs", nargs="+", metavar="ADDR", type=_node_arg, help=_ADDR_HELP)
    sp.add_argument("--replicas", type=_positive_int, default=1, metavar="R",
                    help="1 (default): every key on one node; the number of nodes given: one Raft "
                    "group of all of them that owns every slot (the nodes need --data-dir)")
    common(sp)

    sp = csub.add_parser("verify", aliases=["check"], help="check the cluster; exit 1 on any problem",
                         description="Check that all 16384 slots are covered, that every node agrees on "
                         "the slot map (owners and epochs) and on the members, that no migration is open "
                         "and that every member is alive. Prints each problem; exit status 1 if any. "
                         "'check' is the same command (redis-cli's name).")
    sp.add_argument("addr", metavar="ADDR", type=_node_arg, help=_ADDR_HELP)
    common(sp, changes=False)

    sp = csub.add_parser("info", help="a table of nodes, slots, keys and states",
                         description="Print a table of the cluster's nodes, one row per member of ADDR's "
                         "view: address, state, slots owned and config epoch as ADDR sees them; keys as "
                         "each node counts its own ('?' when it did not answer); open migrations.")
    sp.add_argument("addr", metavar="ADDR", type=_node_arg, help=_ADDR_HELP)
    sp.add_argument("--json", action="store_true", help="print the nodes as JSON instead")
    common(sp, changes=False)

    sp = csub.add_parser("members", help="the member table of one node (as serf members)",
                         description="Print the members ADDR knows, as ADDR sees them (like serf members): "
                         "id, client address, peer address, state, incarnation, slots advertised, and the "
                         "smoothed round-trip time of ADDR's probes to it.")
    sp.add_argument("addr", metavar="ADDR", type=_node_arg, help=_ADDR_HELP)
    sp.add_argument("--json", action="store_true", help="print the members as JSON instead")
    common(sp, changes=False)

    sp = csub.add_parser("failover", help="hand a replicated group's leadership to a voter",
                         description="Hand the leadership of the cluster's Raft group to the voter NODE "
                         "(leadership transfer, Raft thesis 3.10); waits until every live member names it.")
    sp.add_argument("addr", metavar="ADDR", type=_node_arg, help=_ADDR_HELP)
    sp.add_argument("--to", required=True, metavar="NODE", type=_node_ref, help="the voter that takes over")
    common(sp)

    sp = csub.add_parser("add-node", help="an empty node joins, owning no slots",
                         description="Make NEW (an empty standalone node) join the cluster of EXISTING. "
                         "It owns no slots (it serves every request by forwarding) until a rebalance "
                         "(rebalance --use-empty) or a reshard gives it some. On a replicated cluster it "
                         "joins the group as a learner, catches up, is promoted and claims its even share "
                         "of the slot map's hints; run again after an interruption (or a kill of NEW), it "
                         "finishes what is left.")
    sp.add_argument("new", metavar="NEW", type=_node_arg, help="the new node's ADDR")
    sp.add_argument("existing", metavar="EXISTING", type=_node_arg, help="the ADDR of any member")
    common(sp)

    sp = csub.add_parser("reshard", help="move N slots to a node, live",
                         description="Move N slots live to the node --to, from --from (nodes, or 'all': "
                         "every other owner, each in proportion to what it owns; the default).")
    sp.add_argument("addr", metavar="ADDR", type=_node_arg, help=_ADDR_HELP)
    sp.add_argument("--slots", type=_positive_int, required=True, metavar="N", help="how many slots")
    sp.add_argument("--to", required=True, metavar="NODE", type=_node_ref, help="the node that receives them")
    sp.add_argument("--from", dest="sources", action="append", metavar="NODE[,NODE...]|all", type=_node_refs,
                    help="the nodes that give them (repeatable; default all)")
    common(sp, moves=True)

    sp = csub.add_parser("rebalance", help="even out the slots, by weight, with the fewest moves",
                         description="Plan the fewest slot moves that give every node a share of the "
                         "slots proportional to its weight (default 1), print the plan, then carry it "
                         "out live. Nodes that own no slots take part only with --use-empty or a weight.")
    sp.add_argument("addr", metavar="ADDR", type=_node_arg, help=_ADDR_HELP)
    sp.add_argument("--weight", action="append", type=_weight_arg, default=[], metavar="NODE=W",
                    help="a node's weight (repeatable); 0 empties the node")
    sp.add_argument("--use-empty", action="store_true", help="give nodes that own no slots their share")
    common(sp, moves=True)

    sp = csub.add_parser("remove-node", aliases=["del-node"],
                         help="move a node's slots to the others, then it leaves",
                         description="Move every slot of NODE to the other nodes (a rebalance with weight 0 "
                         "for it), then make it leave the cluster gracefully (its process exits). On a "
                         "replicated cluster a configuration change removes it from the group, it leaves, "
                         "and the voters claim the slot map's hints that named it. "
                         "'del-node' is the same command (redis-cli's name).")
    sp.add_argument("addr", metavar="ADDR", type=_node_arg, help=_ADDR_HELP)
    sp.add_argument("node", metavar="NODE", type=_node_ref, help="the node to remove (id or ADDR)")
    sp.add_argument("--use-empty", action="store_true", help="nodes that own no slots take part too")
    common(sp, moves=True)

    sp = csub.add_parser("fix", help="finish or roll back migrations left open by a crash; mend the slot map",
                         description="Close every open migration: resume and finish it when its source "
                         "still owns the slot and both ends are alive; clear leftover marks when the target "
                         "owns it already (or a third node does); roll back when the target is gone. Then "
                         "mend the slot map: wait for nodes whose map lags, let the owner claim again slots "
                         "two nodes claim at the same epoch, and with --assign-unowned give slots without a "
                         "live owner one (a node holding keys of the slot, else the node with the fewest "
                         "slots). Keys a node holds of a slot another live node owns (no request reaches "
                         "them) are served again: the slot moves from its owner to that node, the owner's "
                         "keys along (the owner's value wins where both hold a key). On a replicated "
                         "cluster, where no slot or key moves, the group's voters claim the slot map's "
                         "hints that name a node outside the group (or none), evenly. Exit 1 if something "
                         "could not be fixed.")
    sp.add_argument("addr", metavar="ADDR", type=_node_arg, help=_ADDR_HELP)
    sp.add_argument("--assign-unowned", action="store_true",
                    help="give slots without an owner (or whose owner left) to a live node")
    sp.add_argument("--accept-loss", action="store_true",
                    help="clear marks and claim slots even where that drops or orphans keys (the "
                    "nodes refuse otherwise, with 409 and the number of keys at stake)")
    common(sp, moves=True)


class _Bar:
    """A tqdm progress bar over slots, on stderr (or nothing with --quiet)."""

    def __init__(self, args: argparse.Namespace, total: int, desc: str) -> None:
        self.bar: Any = None
        if not getattr(args, "quiet", False) and total:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="slot", desc=desc, file=sys.stderr, mininterval=0.2,
                            dynamic_ncols=True)

    def __call__(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _move_ends(cluster: ClusterView, moves: Sequence[Move]) -> list[NodeState]:
    """The nodes ``moves`` change: each move's source and target."""
    ids = {i for m in moves for i in (m.source, m.target)}
    return [n for i, n in cluster.nodes.items() if i in ids]


def _moves_table(cluster: ClusterView, moves: Sequence[Move]) -> str:
    rows = [(m.source, m.target, _short(format_ranges(m.slots)), m.count) for m in moves]
    return table(("FROM", "TO", "SLOTS", "COUNT"), rows)


def _short(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _run_moves(args: argparse.Namespace, a: Admin, cluster: ClusterView, moves: Sequence[Move]) -> None:
    total = sum(m.count for m in moves)
    bar = _Bar(args, total, "moving slots")
    t0 = time.monotonic()
    try:
        a.run_moves(cluster, moves, args.batch, bar)
    finally:
        bar.close()
    say(f"Moved {total} slot{'s' if total != 1 else ''} in {len(moves)} move{'s' if len(moves) != 1 else ''} "
        f"({time.monotonic() - t0:.1f}s).")


def _slot_map_table(cluster: ClusterView) -> str:
    rows = [(lo, hi, node, cluster.nodes[node].addr if node in cluster.nodes else "", epoch)
            for lo, hi, node, epoch in cluster.entry.runs]
    return table(("START", "END", "NODE", "ADDR", "EPOCH"), rows)


def cmd_create(args: argparse.Namespace, a: Admin) -> int:
    if len(set(args.addrs)) != len(args.addrs):
        raise AdminError("An address is given twice.")
    replicacli.check_replicas(args.replicas, len(args.addrs))
    nodes = [a.probe(addr) for addr in args.addrs]
    problems = admin.create_problems(nodes)
    if args.replicas > 1:
        problems += replicacli.create_problems(nodes)
    refused = a.token_problems(nodes)  # every node is asked to change
    if problems or refused:
        return _refuse("create the cluster", problems + refused,
                       all(n.reachable for n in nodes) and not refused)
    if args.replicas > 1:
        return replicacli.cmd_create(args, a, nodes)
    plan = even_split([n.id for n in nodes])
    say(f"Creating a cluster of {len(nodes)} node{'s' if len(nodes) != 1 else ''}, slots split evenly:")
    say(table(("NODE", "ADDR", "SLOTS", "COUNT"),
              [(n.id, n.addr, format_ranges(plan[n.id]), count_slots(plan[n.id])) for n in nodes]))
    confirm(args, "Create this cluster?")
    cluster = a.create(nodes, plan)
    say("Cluster created; every node reports this slot map:")
    say(_slot_map_table(cluster))
    return admin.EXIT_OK


def cmd_verify(args: argparse.Namespace, a: Admin) -> int:
    cluster = a.discover(args.addr)
    if replicacli.replicated(cluster):
        return replicacli.cmd_verify(args, a)
    problems = admin.cluster_problems(cluster)
    members = cluster.members()
    say(f"Verifying the cluster of {cluster.entry.label()}: {len(members)} member"
        f"{'s' if len(members) != 1 else ''}.")
    if say_problems(problems):
        return admin.EXIT_PROBLEMS
    say(f"OK: all {NUM_SLOTS} slots are covered; every node agrees on the slot map and the epochs "
        "and on the members; no migration is open; every member is alive.")
    return admin.EXIT_OK


def _info_rows(cluster: ClusterView) -> list[dict[str, Any]]:
    """One row per member of the entry node's view. State, slots and config epoch come from that
    one view (its member list and its slot map), so they never disagree with each other; keys and
    open migrations are what each node reports of itself (None when it did not answer)."""
    counts = cluster.slot_counts()
    epochs: dict[str, int] = {}
    for _, _, owner, epoch in cluster.entry.runs:
        epochs[owner] = max(epochs.get(owner, 0), epoch)
    claimed = {m["id"]: m.get("epoch") for m in cluster.entry.members or []}
    out = []
    for n in cluster.nodes.values():
        migrating, importing = n.open_marks()
        out.append({"id": n.id, "addr": n.addr, "state": n.state, "slots": counts.get(n.id, 0),
                    "keys": n.info.get("keys") if n.info is not None else None,
                    "epoch": epochs.get(n.id, claimed.get(n.id)),
                    "migrating": len(migrating) if n.reachable else None,
                    "importing": len(importing) if n.reachable else None,
                    "answered": n.reachable, "error": n.error})
    return out


def cmd_info(args: argparse.Namespace, a: Admin) -> int:
    cluster = a.discover(args.addr)
    if replicacli.replicated(cluster):
        return replicacli.cmd_info(args, a)
    rows = _info_rows(cluster)
    if args.json:
        say(json.dumps({"entry": cluster.entry.id, "view": cluster.entry.id, "nodes": rows}, indent=2))
        return admin.EXIT_OK
    say(table(("ID", "ADDR", "STATE", "SLOTS", "KEYS", "EPOCH", "OPEN"),
              [(r["id"], r["addr"], r["state"], r["slots"], r["keys"], r["epoch"],
                None if r["migrating"] is None else r["migrating"] + r["importing"]) for r in rows]))
    assigned = sum(r["slots"] for r in rows)
    keys = sum(r["keys"] or 0 for r in rows)
    live = sum(1 for r in rows if r["state"] == State.ALIVE)
    unknown = [r for r in rows if r["keys"] is None]
    say(f"{len(rows)} node{'s' if len(rows) != 1 else ''} ({live} alive), {keys} key{'s' if keys != 1 else ''}"
        f"{' on the nodes that answered' if unknown else ''}, {assigned} of {NUM_SLOTS} slots assigned.")
    say(f"State, slots and epochs as {cluster.entry.label()} sees them; keys as each node counts its own.")
    for r in unknown:
        if r["state"] != State.ALIVE:
            say(f"? {r['id']} is {r['state']} in {cluster.entry.id}'s view; it was not asked.")
        else:
            say(f"? {r['id']} did not answer" + (f": {r['error'].rstrip('.')}." if r["error"] else "."))
    return admin.EXIT_OK


def cmd_members(args: argparse.Namespace, a: Admin) -> int:
    members = a.get(args.addr, "/cluster/members")
    if not clusterview.members_shaped(members):
        raise admin.NodeError(args.addr, 200, "not_a_node", clusterview.not_a_node(args.addr, "/cluster/members"))
    if args.json:
        say(json.dumps(members, indent=2))
        return admin.EXIT_OK
    me = next((m for m in members if m.get("self")), None)
    rows = [(m["id"] + (" *" if m.get("self") else ""), m.get("addr") or "", m.get("peer_addr") or "",
             m["state"], m.get("incarnation"), count_slots(parse_ranges(m.get("slots") or "")),
             NOT_APPLICABLE if m.get("self") else m.get("rtt_ms"))
            for m in members]
    say(table(("ID", "ADDR", "PEER ADDR", "STATE", "INCARNATION", "SLOTS", "RTT MS"), rows))
    alive = sum(1 for m in members if m["state"] == State.ALIVE)
    who = f"{me['id']} ({args.addr})" if me is not None else args.addr
    say(f"{len(members)} member{'s' if len(members) != 1 else ''} ({alive} alive) as {who} sees them; * marks "
        "itself; RTT is the smoothed round trip of its probes (? not measured yet).")
    return admin.EXIT_OK


def _refuse(command: str, problems: list[str], reachable: bool) -> int:
    """Print each problem and that nothing changed; exit 1, or 2 when a node could not be reached
    or refuses the admin token (``reachable`` false)."""
    for p in problems:
        error(p)
    error(f"Refused to {command}; nothing was changed")
    return admin.EXIT_PROBLEMS if reachable else admin.EXIT_ERROR


def cmd_add_node(args: argparse.Namespace, a: Admin) -> int:
    cluster = a.discover(args.existing)
    new = a.probe(args.new)
    replicated = replicacli.replicated(cluster)
    if new.reachable and new.id == cluster.entry.id and new.peer_addr == cluster.entry.peer_addr:
        raise Refused(f"NEW and EXISTING are the same node, {cluster.entry.label()}: give the new node's "
                      "address first, then the address of any member of the cluster it joins; nothing was "
                      "changed.")
    if replicated and new.reachable and replicacli.member_of(cluster, new):
        # an earlier add-node of it was cut short (or it is in the group already): finish the job
        return replicacli.cmd_add_node(args, a, cluster, new)
    if new.reachable and replicacli.member_of(cluster, new):
        state = cluster.nodes[new.id].state
        if state == State.ALIVE:
            say(f"Node {new.label()} is already a member of the cluster of {cluster.entry.label()}. "
                "Nothing to do.")
            return admin.EXIT_OK
        raise Refused(f"Node {new.label()} is already a member of the cluster of {cluster.entry.label()}, "
                      f"which holds it {state}; it is alive again once the nodes reach each other "
                      f"(storelab cluster verify {args.existing} tells); nothing was changed.")
    problems = admin.create_problems([new])
    listed = cluster.nodes.get(new.id) if new.reachable else None
    if listed is not None and listed.state == State.DEAD and not cluster.slot_counts().get(new.id, 0) \
            and not (replicated and _in_group(cluster, new.id)):
        # the dead member nothing needs (remove-node forgets it): the new node may be it, started
        # again without its data
        problems.append(f"The cluster already has a member called {new.id}, dead in "
                        f"{cluster.entry.id}'s view. If the new node is {new.id} started again without its "
                        f"data, first make the cluster forget the dead member (storelab cluster remove-node "
                        f"{args.existing} {new.id}), then run this command again; otherwise start the new "
                        "node with another --id.")
    elif listed is not None and listed.state != State.LEFT:
        problems.append(f"The cluster already has a member called {new.id} "
                        f"({listed.state}); start the new node with another --id.")
    elif listed is not None and (owned := cluster.slot_counts().get(new.id, 0)):
        # a member of that name left owning slots (a forced leave, or a replicated group's member
        # whose hints were not handed on): the cluster's map would give them to the new node,
        # which does not claim them (gossip never teaches a node its own claim). Without slots,
        # the name is free: the new node refutes the old "left" with a higher incarnation (SWIM's
        # reclaim); a replicated cluster's fix hands the hints to the voters
        then = (f"`storelab cluster fix {args.existing}` hands them to the group's voters (then add the node "
                "under that id), or start the new node with another --id." if replicated
                else "start the new node with another --id.")
        problems.append(f"A member called {new.id} left the cluster owning {owned} slot"
                        f"{'s' if owned != 1 else ''} in {cluster.entry.id}'s slot map (it left with a "
                        "forced leave, or from a replicated group before its hints were handed on), which the "
                        f"cluster would give to a new node of that name though it does not claim them; {then}")
    if new.reachable:
        problems += admin.bus_problems(new, cluster.live())
    if replicated and new.reachable:
        problems += replicacli.fresh_problems(cluster, new)
    # NEW is asked to meet, a replicated group's leader (whichever member it is by then) to add
    # it; and once a member, NEW is changed by the same token as the others
    refused = a.token_problems([new, *cluster.live()])
    if problems or refused:
        return _refuse("add the node", problems + refused, new.reachable and not refused)
    if replicated:
        return replicacli.cmd_add_node(args, a, cluster, new)
    members = cluster.members()
    # the automatic rebalancing is run by the alive member with the lowest id (the new node too,
    # once it has joined): its share comes from there only if that node has the option on
    runner = min([*cluster.live(), new], key=lambda n: n.id)
    auto = bool((runner.info or {}).get("auto_rebalance"))
    say(f"Adding node {new.label()} to the cluster of {cluster.entry.label()} ({len(members)} member"
        f"{'s' if len(members) != 1 else ''}); it joins owning no slots"
        f"{f', and the automatic rebalancing of {runner.id} gives it its share' if auto else ''}.")
    confirm(args, "Add this node?")
    a.add_node(new, cluster)
    if auto:
        say(f"Node {new.id} joined the cluster; the members' automatic rebalancing (--auto-rebalance) "
            f"moves its share of slots to it shortly (storelab cluster info {args.existing} shows it).")
    else:
        say(f"Node {new.id} joined the cluster and owns no slots; it serves requests by forwarding "
            f"(storelab cluster rebalance {args.existing} --use-empty gives it its share).")
    return admin.EXIT_OK


def cmd_reshard(args: argparse.Namespace, a: Admin) -> int:
    replicacli.refuse_slot_moves(a.discover(args.addr), "reshard")
    cluster = a.wait_stable(args.addr)
    target = cluster.resolve(args.to)
    sources: list[str] | None = None  # --from: ids or addresses (URLs normalized by _node_refs)
    refs = [r.strip() for item in args.sources or [] for r in item.split(",") if r.strip()]
    if refs and refs != ["all"]:
        if "all" in refs:
            raise AdminError("--from is either 'all' or a list of nodes, not both.")
        sources = [cluster.resolve(r).id for r in refs]
    moves = a.plan_reshard(cluster, args.slots, target.id, sources)
    a.require_token(_move_ends(cluster, moves), "reshard")
    say(f"Moving {args.slots} slot{'s' if args.slots != 1 else ''} to {target.label()}:")
    say(_moves_table(cluster, moves))
    confirm(args, "Move these slots?")
    _run_moves(args, a, cluster, moves)
    return admin.EXIT_OK


def cmd_rebalance(args: argparse.Namespace, a: Admin) -> int:
    replicacli.refuse_slot_moves(a.discover(args.addr), "rebalance")
    cluster = a.wait_stable(args.addr)
    weights = {cluster.resolve(ref).id: w for ref, w in args.weight}
    moves = a.plan_rebalance(cluster, weights, args.use_empty)
    if not moves:
        say("The cluster is balanced: every node is within one slot of its share. Nothing to move.")
        return admin.EXIT_OK
    a.require_token(_move_ends(cluster, moves), "rebalance")
    total = sum(m.count for m in moves)
    say(f"Rebalancing: {total} slot{'s' if total != 1 else ''} move in {len(moves)} move"
        f"{'s' if len(moves) != 1 else ''}:")
    say(_moves_table(cluster, moves))
    confirm(args, "Carry out this plan?")
    _run_moves(args, a, cluster, moves)
    return admin.EXIT_OK


def cmd_remove_node(args: argparse.Namespace, a: Admin) -> int:
    probe = a.discover(args.addr)
    replicated = replicacli.replicated(probe)
    dead = probe.resolve(args.node)
    cut_short = dead.state == State.LEFT and _forget_cut_short(probe, dead.id)
    if (dead.state == State.DEAD or cut_short) and (not replicated or not replicacli.in_conf(
            replicacli.raft_of(replicacli.leader_or_refuse(probe)) or {}, dead.id)):
        return _forget_dead(args, a, probe, dead, replicated, cut_short)
    if replicated:
        return replicacli.cmd_remove_node(args, a, probe)
    if dead.state == State.SUSPECT and not (dead.addr and a.probe(dead.addr).reachable):
        # suspect and not answering either: not worth waiting for a quiet cluster (a suspect
        # member keeps it from being one) that ends with it dead. One that answers may be alive
        # again in a moment (a pause): that waits for the quiet cluster as before
        owned = probe.slot_counts().get(dead.id, 0)
        then = (f"if it is down, start it again: its {owned} slot{'s' if owned != 1 else ''}' keys are on "
                "its disk only (then this command moves them away)" if owned
                else "if it is down, its peers hold it dead within seconds and this command then makes "
                     "the cluster forget it")
        raise Refused(f"Node {dead.label()} is suspect and does not answer: its peers do not hear it. Only an alive node can be "
                      f"removed; {then}. Nothing was changed.")
    cluster = a.wait_stable(args.addr)
    node = cluster.resolve(args.node)
    if node.state == State.LEFT:
        say(f"Node {node.label()} has left the cluster already. Nothing to do.")
        return admin.EXIT_OK
    if node.state != State.ALIVE:
        raise Refused(f"Node {node.label()} is {node.state}; only an alive node can be removed.")
    others = [n for n in cluster.members() if n.id != node.id]
    if not others:
        raise Refused(f"Node {node.label()} is the only member; there is nobody to give its slots to.")
    owned = cluster.slot_counts().get(node.id, 0)
    moves = a.plan_rebalance(cluster, {node.id: 0.0}, args.use_empty) if owned else []
    a.require_token([node, *_move_ends(cluster, moves)], "remove the node")  # it is asked to leave last
    say(f"Removing node {node.label()}: its {owned} slot{'s' if owned != 1 else ''} move to the others, "
        "then it leaves the cluster (its process exits).")
    if moves:
        say(_moves_table(cluster, moves))
    confirm(args, f"Remove node {node.id}?")
    if moves:
        _run_moves(args, a, cluster, moves)
    left = a.discover(cluster.entry.addr if cluster.entry.id != node.id else others[0].addr)
    if left.slot_counts().get(node.id, 0):
        raise admin.Refused(f"Node {node.id} still owns slots; it was not asked to leave.")
    a.leave(cluster, node)
    say(f"Node {node.id} left the cluster.")
    return admin.EXIT_OK


def _in_group(cluster: ClusterView, node_id: str) -> bool:
    """Whether the replicated group's configuration counts ``node_id`` (as its leader says; a
    group with no leader that answers is taken to count it, the careful answer)."""
    lead = replicacli.leader_of(cluster)
    return lead is None or replicacli.in_conf(replicacli.raft_of(lead) or {}, node_id)


def _forget_cut_short(cluster: ClusterView, node_id: str) -> bool:
    """Whether a forget of ``node_id`` was cut short: the entry node holds it left, some live
    member still holds it dead, and none holds it alive or suspect (it did not come back)."""
    held = [m.get("state") for n in cluster.live() for m in n.members or [] if m.get("id") == node_id]
    return State.DEAD in held and State.ALIVE not in held and State.SUSPECT not in held


def _forget_dead(args: argparse.Namespace, a: Admin, cluster: ClusterView, node: NodeState,
                 replicated: bool, cut_short: bool = False) -> int:
    """``remove-node`` of a dead member that nothing needs: outside the replicated group's
    configuration, or, unreplicated, owning no slots and in no open migration. It cannot be asked
    to leave, so the cluster forgets it: every live member holds it left on its behalf (a forced
    leave, serf's ``force-leave``, Redis's ``CLUSTER FORGET``; :meth:`Admin.forget`). With
    ``cut_short``, an earlier forget stopped partway (the entry node holds it left, others dead):
    the same checks, then the members that hold it dead are asked again (forgetting is idempotent:
    a member that holds it left already answers that nothing changed)."""
    if not replicated:
        # its slots' keys are on its disk only: once left, the guards take them for gone
        owned = cluster.slot_counts().get(node.id, 0)
        if owned:
            raise Refused(f"Node {node.label()} is dead and owns {owned} slot{'s' if owned != 1 else ''} in "
                          f"{cluster.entry.id}'s map, whose keys only it holds; forgetting it would orphan "
                          "them. Start it again (then remove-node moves its slots away); nothing was changed.")
        marks = sorted(n.id for n in cluster.live()
                       for migrating, importing in [n.open_marks()]
                       if node.id in {*migrating.values(), *importing.values()})
        if marks:
            raise Refused(f"Node {node.label()} is dead and the other end of open migrations on "
                          f"{', '.join(marks)}; forgetting it could orphan their keys. Start it again and "
                          f"run storelab cluster fix {args.addr}; nothing was changed.")
    up = sorted(n.id for n in cluster.live() if any(
        m.get("id") == node.id and m.get("state") in (State.ALIVE, State.SUSPECT) for m in n.members or []))
    if up:
        raise Refused(f"Node {node.label()} is dead in {cluster.entry.id}'s view but {', '.join(up)} "
                      f"{'holds' if len(up) == 1 else 'hold'} it alive or suspect; wait for the nodes to agree "
                      "(storelab cluster verify) and run this command again; nothing was changed.")
    a.require_token([n for n in cluster.live() if n.id != node.id], "forget the node")  # each holds it left
    why = ("is neither a voter nor a learner of the group" if replicated
           else "owns no slots")
    if cut_short:
        dead_in = sorted(n.id for n in cluster.live() if any(
            m.get("id") == node.id and m.get("state") == State.DEAD for m in n.members or []))
        say(f"Node {node.label()} is left in {cluster.entry.id}'s view but dead in {', '.join(dead_in)}'s: "
            f"an earlier forget stopped partway. It {why}, so the cluster finishes forgetting it.")
    else:
        say(f"Node {node.label()} is dead and {why}: it cannot be asked to leave, so the cluster forgets it "
            "(every live member holds it left, a forced leave on its behalf).")
    confirm(args, f"Forget node {node.id}?")
    # on a replicated cluster its slots are a hint only (the group serves every slot): nothing lost
    a.forget(cluster, node, accept_loss=replicated)
    say(f"Node {node.id} is forgotten: every live member holds it left. Started again, it rejoins as a "
        f"member outside {'the group' if replicated else 'the slot map'}, and `storelab cluster remove-node "
        f"{args.addr} {node.id}` then makes it leave.")
    if replicated:  # the voters take over any hint that still names it
        replicacli.say_hints(a, replicacli.hint_entry(cluster, node.id))
    return admin.EXIT_OK


def _clear_stray_marks(args: argparse.Namespace, a: Admin, cluster: ClusterView) -> ClusterView:
    """Members of this unreplicated cluster that refuse every key because a member's Raft
    traffic marked them lost (503 ``lost_state``) when no group can have (``clusterview.stray_sender``: a
    stray or forged frame): the marks are taken back first, and the cluster looked at again."""
    strays = [(n, s) for n in cluster.live() if (s := clusterview.stray_sender(cluster, n)) is not None]
    if not strays:
        return cluster
    a.require_token([n for n, _ in strays], "fix")
    say("To fix first: members that refuse every key (503 lost_state) because a member's Raft traffic marked "
        "them lost, though that member runs no group (a stray or forged frame); the marks are taken back:")
    for n, sender in strays:
        say(f"  - node {n.id}: marked by {sender}, which runs no group")
    confirm(args, "Take these marks back?")
    for n, sender in strays:
        a.post(n.addr, "/cluster/clear-lost-state", {"from": sender})
        say(f"Node {n.id} serves its keys again.")
    return a.discover(args.addr)


def cmd_fix(args: argparse.Namespace, a: Admin) -> int:
    cluster = a.discover(args.addr)
    if replicacli.replicated(cluster):
        # nothing moves there; what verify reports of the map is its hints (replicacli.cmd_fix)
        return replicacli.cmd_fix(args, a, cluster)
    cluster = _clear_stray_marks(args, a, cluster)
    plan = a.plan_fix(cluster, args.assign_unowned)
    for p in plan.problems:
        error(p)
    if plan.empty():
        say("No open migration to fix. The slot map needs no mending." if not plan.problems
            else "Nothing can be fixed now.")
        return admin.EXIT_PROBLEMS if plan.problems else admin.EXIT_OK
    a.require_token(admin.fix_nodes(cluster, plan), "fix")
    say("To fix:")
    for line in plan.describe():
        say(f"  - {line}")
    confirm(args, "Fix these?")
    total = sum(m.count for m in plan.resume)
    bar = _Bar(args, total, "finishing moves")
    try:
        left = a.fix(cluster, plan, args.batch, bar, args.assign_unowned)
    finally:
        bar.close()
    for p in left:
        error(p)
    after = a.plan_fix(a.discover(args.addr), args.assign_unowned)
    if not after.empty() or after.problems:
        for line in [*after.describe(), *after.problems]:
            error(f"Still open: {line}")
        return admin.EXIT_PROBLEMS
    say("Fixed: no migration is open, and the slot map needs no mending." if not (plan.problems or left)
        else "Fixed what could be fixed; the problems above remain.")
    return admin.EXIT_PROBLEMS if plan.problems or left else admin.EXIT_OK


#: ``storelab cluster`` commands, in the order --help lists them
_CLUSTER_COMMANDS: dict[str, Callable[[argparse.Namespace, Admin], int]] = {
    "create": cmd_create,
    "verify": cmd_verify,
    "info": cmd_info,
    "members": cmd_members,
    "failover": replicacli.cmd_failover,
    "add-node": cmd_add_node,
    "reshard": cmd_reshard,
    "rebalance": cmd_rebalance,
    "remove-node": cmd_remove_node,
    "fix": cmd_fix,
}
#: the names redis-cli --cluster users type -> ours
ALIASES = {"check": "verify", "del-node": "remove-node"}
_ALIAS_OF = {name: alias for alias, name in ALIASES.items()}


def _cluster(args: argparse.Namespace) -> int:
    command = ALIASES.get(args.cluster_command, args.cluster_command)
    try:
        token = token_from(args, ADMIN_TOKEN_ENV)
    except ValueError as e:
        error(str(e))
        return admin.EXIT_ERROR
    try:
        with Admin(args.timeout, token=token, accept_loss=getattr(args, "accept_loss", False),
                   note=lambda said: print(f"storelab: {sentence(said)}", file=sys.stderr)) as a:
            return _CLUSTER_COMMANDS[command](args, a)
    except Refused as e:
        error(e.message)
        for p in e.problems:
            print(f"storelab:   {sentence(p)}", file=sys.stderr)
        return e.status
    except AdminError as e:
        error(e.message)
        return e.status
    except KeyboardInterrupt:
        if command == "add-node":
            error("Interrupted; the same add-node, run again, finishes adding the node")
        else:
            error("Interrupted; if slots were moving, run storelab cluster fix")
        return EXIT_INTERRUPTED
