"""``storelab``: the command-line tool (console script ``storelab = realnet.cli:main``).

Theory of operation
-------------------
One argparse parser with a subcommand per verb, in the spirit of ``redis-cli``:

- ``storelab keyslot KEY ...`` prints each key's hash slot, one per line (``CLUSTER KEYSLOT``);
  computed locally, no node needed.
- ``storelab get KEY [--node HOST:PORT]`` prints the value to stdout as raw bytes (no newline
  added), ``storelab set KEY VALUE`` (``VALUE`` ``-`` reads stdin) and ``storelab del KEY`` talk
  to one node's HTTP API (default ``127.0.0.1:7000``); that node forwards to the key's owner, so
  any node will do.
- ``storelab --version`` prints the installed distribution's version.

Wherever a node address is taken, ``HOST:PORT`` and ``http://HOST:PORT[/]`` are the same
(:func:`realnet.client.node_addr`); another scheme is refused with a sentence.

Exit status: 0 on success, 1 when the key was not found (get, del), 2 on any error, with the
error's sentence on stderr (a refused connection included: a sentence, not a traceback). Keys and
values given on the command line are taken as the bytes the shell passed
(:func:`os.fsencode`), so non-UTF-8 keys survive.

One voice. Every message on stderr is ``storelab: `` and a sentence that starts with a capital
letter and ends with a period (:func:`error`; sentences that come from a node or from the
planners are put in that form too). The same kind of refusal has the same exit status
everywhere: 1 for an answer that is "no" (a key not found, a cluster command refused, problems
found, declined at the prompt), 2 for a usage error, a node that cannot be reached and a node
that answered an error, 130 when interrupted (Ctrl-C). No command prints a traceback: output
into a closed pipe (``storelab keyslot ... | head -1``) ends the command quietly with status 141
(128 + SIGPIPE, what a shell reports for a program that SIGPIPE stopped), as the Python
documentation's note on SIGPIPE advises (catch ``BrokenPipeError``, point stdout at devnull so
that the flush at exit does not raise again; SIGPIPE itself keeps Python's disposition, since
setting it to the default would kill the process on a peer's closed socket too).

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
- ``add-node NEW EXISTING``: an empty node joins, owning no slots;
- ``reshard ADDR --slots N --to NODE [--from NODE,...|all]``: move N slots live;
- ``rebalance ADDR [--weight NODE=W ...] [--use-empty]``: even out the slots by weight;
- ``remove-node ADDR NODE`` (alias ``del-node``, Redis's name): move the node's slots to the others,
  then it leaves;
- ``fix ADDR [--assign-unowned]``: finish or roll back migrations left open by a crash; mend the
  slot map (lagging maps, same-epoch claims, and with the flag slots without a live owner).

Every command that changes the cluster first prints what it will do and asks ``[y/N]`` on
stdin (anything but ``y``/``yes``, end of input included, declines) unless ``--yes`` is given.
Moving slots shows a progress bar (tqdm, on stderr). Exit status: 0 done (or nothing to do);
1 refused (a node unfit for ``create``/``add-node``, an impossible plan, a cluster not in a state
to change), problems found (``verify``, what ``fix`` could not fix) or declined at the prompt;
2 a usage error, or a node that could not be reached or answered an error.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import Any

from kvcore import errors
from kvcore.rebalance import Move
from kvcore.slots import NUM_SLOTS, count_slots, even_split, format_ranges, key_slot, parse_ranges
from kvcore.states import State
from realnet import admin
from realnet.admin import Admin, AdminError, ClusterView, Refused
from realnet.client import DEFAULT_NODE, NodeConnection, error_from_response, kv_path, node_addr

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_ERROR = 2
#: interrupted (Ctrl-C): 128 + SIGINT, as a shell reports it
EXIT_INTERRUPTED = 130
#: output into a closed pipe: 128 + SIGPIPE, as a shell reports a program SIGPIPE stopped
EXIT_BROKEN_PIPE = 141


def version() -> str:
    """The installed distribution's version; the source tree's when it is not installed."""
    try:
        return metadata.version("storelab")
    except metadata.PackageNotFoundError:
        return "0+unknown (not installed; run from a source tree)"


def sentence(text: str) -> str:
    """``text`` as one sentence: a capital first letter, one period at the end."""
    text = " ".join(text.split())
    if not text:
        return ""
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "?", "!")) else text + "."


def error(text: str) -> None:
    """One message on stderr in the CLI's one voice: ``storelab: Sentence.``"""
    print(f"storelab: {sentence(text)}", file=sys.stderr, flush=True)


def _node_arg(text: str) -> str:
    """A node's client address, ``HOST:PORT`` or ``http://HOST:PORT[/]``, as ``HOST:PORT``."""
    try:
        return node_addr(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _node_ref(text: str) -> str:
    """NODE: a member's id, or its address (a URL is taken as its address)."""
    return _node_arg(text) if "://" in text else text


def _node_refs(text: str) -> str:
    """NODE[,NODE...]: each one as :func:`_node_ref` takes it."""
    return ",".join(_node_ref(r.strip()) for r in text.split(","))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="storelab",
        description="storelab: talk to a storelab node, compute key slots, administer a cluster.",
        epilog="A node address is HOST:PORT or http://HOST:PORT. Exit status: 0 done, 1 not found "
        "or refused, 2 usage or connection error.",
    )
    p.add_argument("--version", action="version", version=f"storelab {version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    ks = sub.add_parser("keyslot", help="print the hash slot of each key")
    ks.add_argument("keys", nargs="+", metavar="KEY")

    def with_node(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--node",
            type=_node_arg,
            default=DEFAULT_NODE,
            metavar="HOST:PORT",
            help=f"the node to ask: its client HTTP address, HOST:PORT or http://HOST:PORT "
            f"(default {DEFAULT_NODE})",
        )
        sp.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")

    g = sub.add_parser("get", help="print a key's value (exit 1 if absent)")
    g.add_argument("key", metavar="KEY")
    with_node(g)

    s = sub.add_parser("set", help="set a key (VALUE '-' reads stdin)")
    s.add_argument("key", metavar="KEY")
    s.add_argument("value", metavar="VALUE")
    with_node(s)

    d = sub.add_parser("del", help="delete a key (exit 1 if absent)")
    d.add_argument("key", metavar="KEY")
    with_node(d)

    add_cluster_parser(sub)
    return p


# --- storelab cluster ----------------------------------------------------------------------

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


def _seconds(text: str) -> float:
    try:
        t = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not t > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return t


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
        sp.add_argument("--timeout", type=_seconds, default=admin.DEFAULT_TIMEOUT, metavar="SECONDS",
                        help=f"per HTTP request (default {admin.DEFAULT_TIMEOUT:g})")
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

    sp = csub.add_parser("add-node", help="an empty node joins, owning no slots",
                         description="Make NEW (an empty standalone node) join the cluster of EXISTING. "
                         "It owns no slots (it serves every request by forwarding) until a rebalance "
                         "(rebalance --use-empty) or a reshard gives it some.")
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
                         "for it), then make it leave the cluster gracefully (its process exits). "
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
                         "slots). Exit 1 if something could not be fixed.")
    sp.add_argument("addr", metavar="ADDR", type=_node_arg, help=_ADDR_HELP)
    sp.add_argument("--assign-unowned", action="store_true",
                    help="give slots without an owner (or whose owner left) to a live node")
    common(sp, moves=True)


#: what a numeric cell holds when the value is unknown; it keeps the column right-aligned
UNKNOWN = "?"
#: what a numeric cell holds when the value does not apply (a node's RTT to itself)
NOT_APPLICABLE = "-"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Plain columns: text left-aligned, numbers right-aligned (a column of numbers stays
    right-aligned where a value is unknown: None or ``?``, shown as ``?``)."""

    def number(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool)

    numeric = [bool(rows) and any(number(r[i]) for r in rows)
               and all(number(r[i]) or r[i] is None or r[i] in (UNKNOWN, NOT_APPLICABLE) for r in rows)
               for i in range(len(headers))]
    cells = [[str(h) for h in headers],
             *[[(UNKNOWN if num else "") if v is None else str(v) for v, num in zip(r, numeric, strict=True)]
               for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(row, widths, numeric, strict=True)]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def say(text: str = "") -> None:
    print(text, flush=True)


def confirm(args: argparse.Namespace, question: str) -> None:
    """Ask ``question [y/N]`` on stdin unless --yes; Refused (nothing changed) unless y."""
    if args.yes:
        return
    sys.stdout.write(f"{question} [y/N] ")
    sys.stdout.flush()
    answer = sys.stdin.readline()
    if not sys.stdin.isatty():
        sys.stdout.write(answer if answer.endswith("\n") else answer + "\n")
    if answer.strip().lower() not in ("y", "yes"):
        raise Refused("Declined; nothing was changed.")


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
    nodes = [a.probe(addr) for addr in args.addrs]
    problems = admin.create_problems(nodes)
    if problems:
        return _refuse("create the cluster", problems, all(n.reachable for n in nodes))
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
    problems = admin.cluster_problems(cluster)
    members = cluster.members()
    say(f"Verifying the cluster of {cluster.entry.label()}: {len(members)} member"
        f"{'s' if len(members) != 1 else ''}.")
    if problems:
        for p in problems:
            say(f"problem: {p}")
        say(f"{len(problems)} problem{'s' if len(problems) != 1 else ''} found.")
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
    """Print each problem and that nothing changed; exit 1, or 2 when a node could not be reached."""
    for p in problems:
        error(p)
    error(f"Refused to {command}; nothing was changed")
    return admin.EXIT_PROBLEMS if reachable else admin.EXIT_ERROR


def cmd_add_node(args: argparse.Namespace, a: Admin) -> int:
    cluster = a.discover(args.existing)
    new = a.probe(args.new)
    problems = admin.create_problems([new])
    if new.reachable and new.id in cluster.nodes:
        problems.append(f"The cluster already has a member called {new.id} "
                        f"({cluster.nodes[new.id].state}); start the new node with another --id.")
    if problems:
        return _refuse("add the node", problems, new.reachable)
    members = cluster.members()
    say(f"Adding node {new.label()} to the cluster of {cluster.entry.label()} ({len(members)} member"
        f"{'s' if len(members) != 1 else ''}); it will own no slots.")
    confirm(args, "Add this node?")
    a.add_node(new, cluster)
    say(f"Node {new.id} joined the cluster and owns no slots; it serves requests by forwarding "
        f"(storelab cluster rebalance {args.existing} --use-empty gives it its share).")
    return admin.EXIT_OK


def cmd_reshard(args: argparse.Namespace, a: Admin) -> int:
    cluster = a.wait_stable(args.addr)
    target = cluster.resolve(args.to)
    sources: list[str] | None = None  # --from: ids or addresses (URLs normalized by _node_refs)
    refs = [r.strip() for item in args.sources or [] for r in item.split(",") if r.strip()]
    if refs and refs != ["all"]:
        if "all" in refs:
            raise AdminError("--from is either 'all' or a list of nodes, not both.")
        sources = [cluster.resolve(r).id for r in refs]
    moves = a.plan_reshard(cluster, args.slots, target.id, sources)
    say(f"Moving {args.slots} slot{'s' if args.slots != 1 else ''} to {target.label()}:")
    say(_moves_table(cluster, moves))
    confirm(args, "Move these slots?")
    _run_moves(args, a, cluster, moves)
    return admin.EXIT_OK


def cmd_rebalance(args: argparse.Namespace, a: Admin) -> int:
    cluster = a.wait_stable(args.addr)
    weights = {cluster.resolve(ref).id: w for ref, w in args.weight}
    moves = a.plan_rebalance(cluster, weights, args.use_empty)
    if not moves:
        say("The cluster is balanced: every node is within one slot of its share. Nothing to move.")
        return admin.EXIT_OK
    total = sum(m.count for m in moves)
    say(f"Rebalancing: {total} slot{'s' if total != 1 else ''} move in {len(moves)} move"
        f"{'s' if len(moves) != 1 else ''}:")
    say(_moves_table(cluster, moves))
    confirm(args, "Carry out this plan?")
    _run_moves(args, a, cluster, moves)
    return admin.EXIT_OK


def cmd_remove_node(args: argparse.Namespace, a: Admin) -> int:
    cluster = a.wait_stable(args.addr)
    node = cluster.resolve(args.node)
    if node.state != State.ALIVE:
        raise Refused(f"Node {node.label()} is {node.state}; only an alive node can be removed.")
    others = [n for n in cluster.members() if n.id != node.id]
    if not others:
        raise Refused(f"Node {node.label()} is the only member; there is nobody to give its slots to.")
    owned = cluster.slot_counts().get(node.id, 0)
    moves = a.plan_rebalance(cluster, {node.id: 0.0}, args.use_empty) if owned else []
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


def cmd_fix(args: argparse.Namespace, a: Admin) -> int:
    cluster = a.discover(args.addr)
    plan = a.plan_fix(cluster, args.assign_unowned)
    for p in plan.problems:
        error(p)
    if plan.empty():
        say("No open migration to fix. The slot map needs no mending." if not plan.problems
            else "Nothing can be fixed now.")
        return admin.EXIT_PROBLEMS if plan.problems else admin.EXIT_OK
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
    say("Fixed: no migration is open any more." if not (plan.problems or left)
        else "Fixed what could be fixed; the problems above remain.")
    return admin.EXIT_PROBLEMS if plan.problems or left else admin.EXIT_OK


#: ``storelab cluster`` commands, in the order --help lists them
_CLUSTER_COMMANDS: dict[str, Callable[[argparse.Namespace, Admin], int]] = {
    "create": cmd_create,
    "verify": cmd_verify,
    "info": cmd_info,
    "members": cmd_members,
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
        with Admin(args.timeout) as a:
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
        error("Interrupted; if slots were moving, run storelab cluster fix")
        return EXIT_INTERRUPTED


def _keyslot(keys: Sequence[str]) -> int:
    out = sys.stdout
    for k in keys:
        out.write(f"{key_slot(os.fsencode(k))}\n")
    out.flush()
    return EXIT_OK


def _kv(args: argparse.Namespace) -> int:
    key = os.fsencode(args.key)
    if not key:
        error("The key must not be empty")
        return EXIT_ERROR
    body: bytes | None = None
    method = {"get": "GET", "set": "PUT", "del": "DELETE"}[args.command]
    if args.command == "set":
        body = sys.stdin.buffer.read() if args.value == "-" else os.fsencode(args.value)
    conn = NodeConnection(args.node, timeout=args.timeout)
    try:
        status, _, data = conn.request(method, kv_path(key), body)
    except (OSError, http.client.HTTPException) as e:  # refused, reset, timed out, garbled
        reason = e.strerror if isinstance(e, OSError) and e.strerror else (str(e) or type(e).__name__)
        # the same sentence as storelab cluster's (realnet.admin.Http)
        error(f"Cannot reach node {args.node}: {reason.rstrip('.').lower()}")
        return EXIT_ERROR
    finally:
        conn.close()
    if 200 <= status < 300:
        if args.command == "get":
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
        return EXIT_OK
    err = error_from_response(status, data)
    if isinstance(err, errors.NotFound) and args.command in ("get", "del"):
        # the node's sentence names the key ("Key 'nope' not found."): a "no", exit 1
        error(err.message or f"Key {args.key!r} not found")
        return EXIT_NOT_FOUND
    said = (err.message or "The node answered an error").rstrip(".")
    error(f"{said} ({status} {err.code} from node {args.node})")
    return EXIT_ERROR


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help or --version (0) or a usage error (2)
        return int(e.code) if isinstance(e.code, int) else EXIT_ERROR
    if args.command == "keyslot":
        return _keyslot(args.keys)
    if args.command == "cluster":
        return _cluster(args)
    return _kv(args)


def quiet_pipe(run: Callable[[], int]) -> int:
    """``run()``, ending quietly when stdout is a closed pipe (``... | head``) or on Ctrl-C.

    The Python documentation's note on SIGPIPE: catch BrokenPipeError, then point stdout at
    devnull, because Python flushes stdout once more at exit and that flush would raise again.
    """
    try:
        status = run()
        sys.stdout.flush()  # a pipe closed after the last write fails here, inside the handler
        return status
    except BrokenPipeError:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):  # stdout has no descriptor (a test's capture)
            pass
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def main(argv: Sequence[str] | None = None) -> int:
    return quiet_pipe(lambda: _main(argv))


if __name__ == "__main__":
    sys.exit(main())
