"""``storelab cluster`` on a replicated cluster (#11): one Raft group that owns every slot.

Theory of operation
-------------------
:mod:`realnet.clustercli` hands a command here when the cluster is replicated (the entry node's
``/cluster/info`` has a ``raft`` section) or when ``create`` is given ``--replicas`` above 1.
Everything goes through the nodes' HTTP API (:mod:`realnet.replicaapi`), and every membership
change is asked of the leader, found from the nodes' own ``raft`` views:

- ``create A B C --replicas 3``: ``--replicas`` is 1 (today's unreplicated store) or the number
  of nodes given (one group of all of them); anything else is refused with a sentence, since
  several groups over more nodes come next. The nodes first become one cluster as today (so
  every node knows every peer address; the slot map no longer routes: the group serves every
  slot), then
  each is asked ``/cluster/replicate`` with the same voter list; done when every node reports
  the same leader and a commit index at least that of the leader's first entry of its term.
- ``failover ADDR --to NODE``: the leader hands leadership to ``NODE`` (TimeoutNow, thesis
  §3.10); done when every live voter reports ``NODE`` as leader.
- ``add-node NEW EXISTING``: ``NEW`` meets the cluster, the leader adds it as a learner and
  ``NEW`` joins the group; it catches up (from a snapshot if the log was compacted) and is
  promoted once its applied index reaches the leader's commit (thesis §4.2.1); done when it votes.
  Safe to run again, as ``fix`` finishes a move: an earlier run cut short (Ctrl-C, a timeout, a
  ``NEW`` killed and restarted) left ``NEW`` a member of the cluster somewhere along the way, and
  :func:`join_stage` reads where from ``NEW``'s own view and the leader's configuration; the
  command then does only the steps left (the learner change if the configuration lacks ``NEW``,
  the join if ``NEW`` runs no group, then the catch-up and promotion), or says that ``NEW`` is a
  voter already (nothing to do, unless the hints below were left unmended: then that). A
  ``NEW`` that belongs to another cluster, or runs another group (its configuration shares no
  member with this group's), is refused with a sentence naming it.
- ``remove-node ADDR NODE``: a configuration change removes ``NODE`` (the leader first hands
  leadership away if ``NODE`` leads), then ``NODE`` leaves the cluster and its process exits. A
  ``NODE`` that cannot be reached (down) is out of the group all the same once the change is
  committed: the command says so and that it could not be asked to leave (exit 0); back, it
  learns that it was removed (it answers clients 503 removed), and ``remove-node`` again makes
  it leave.
- **The slot map's hints.** The group serves every slot on every node, so the map only spreads
  smart clients' first hops; but a hint naming a node that left sends them to a dead address
  first. After ``remove-node`` (once the change is committed, whether or not the node's leave is
  confirmed; also after a dead member is forgotten) and once ``add-node``'s node votes, the
  group's live voters claim (``/cluster/claim``, each at its own epoch above every epoch known)
  the slots whose hint names a non-voter or nobody, and a new voter its even share: the one
  procedure :class:`kvcore.slotmove.Hints` (planned by :func:`kvcore.rebalance.plan_hints`),
  which the sim's ``remove_replica``/``add_replica`` drive too (:func:`mend_hints`). No key
  moves, and the node's claim guard lets a group member claim any slot (it orphans no key:
  :func:`kvcore.node.guards.check_taking`), so no ``accept_loss`` is sent. The command says
  what was claimed in one sentence; if it could not (no leader, a timeout), the membership change
  stands and the sentence names ``fix``. Run again, ``remove-node`` of a node that left and
  ``add-node`` of a voter mend what is left.
- ``verify``: the group has one leader that every live member names, a quorum of voters is alive
  and answering, and the applied indexes of the live members are within :data:`LAG_LIMIT` of the
  leader's commit (judged over a few polls: a busy group moves between two reads); also every
  slot whose hint names a node that is not a voter (left, removed, forgotten) or nobody
  (:func:`hint_problems`), naming ``fix``.
- ``info``: one row per member: role, term, leader, commit and applied index, voter or not, keys,
  as each node reports itself (``?``, null in JSON, where it did not answer: a dead voter is not
  "not a voter"); the footer counts the voters and learners of the leader's configuration, the
  voters that did not answer, the members that left the cluster and those outside the group.

``reshard`` and ``rebalance`` refuse a replicated cluster (:func:`refuse_slot_moves`): the group
serves every slot, and keys moved out of a replica's store would no longer match its log.
``fix`` mends the hints instead (:func:`cmd_fix`): what ``verify`` reports of a replicated
cluster's map is that, and an operator who reads "fix" there, as on any cluster, should find it
doing the mending rather than refusing (as ``redis-cli --cluster check`` points to ``fix``).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping
from typing import Any

from kvcore.rebalance import NO_OWNER, Move, PlanError
from kvcore.slotmove import Hints, hint_moves
from kvcore.slots import NUM_SLOTS, even_split, format_ranges, slots_to_ranges
from kvcore.states import State
from realnet import admin, clusterview
from realnet.admin import Admin, AdminError, ClusterView, NodeState, Refused
from realnet.clicommon import UNKNOWN, confirm, error, say, say_problems, table
from realnet.replicaapi import MAX_VOTERS

#: an applied index more than this far behind the leader's commit is a problem for ``verify``
LAG_LIMIT = 1000
#: ``verify`` polls this many times before it reports a lag (a busy group moves between reads)
VERIFY_POLLS = 5

REPLICAS_SENTENCE = ("Several groups over more nodes come next; --replicas must be 1 or the number "
                     "of nodes given ({n}), not {r}.")


#: a node's ``raft`` view (None: it answered nothing, or runs no group)
raft_of = clusterview.group_view


def in_conf(raft: Mapping[str, Any], node_id: str) -> bool:
    """Whether a ``raft`` view's configuration names ``node_id`` (voter or learner)."""
    return node_id in raft.get("voters", []) or node_id in raft.get("learners", [])


def replicated(cluster: ClusterView) -> bool:
    return raft_of(cluster.entry) is not None


def leader_of(cluster: ClusterView) -> NodeState | None:
    """The live member that reports itself leader at the highest term, if any."""
    return clusterview.group_leader(cluster.live())


def group_problems(cluster: ClusterView, lag_limit: int = LAG_LIMIT) -> list[str]:
    """What ``verify`` reports of a replicated cluster, one sentence each (empty: healthy)."""
    problems: list[str] = []
    lead = leader_of(cluster)
    views = {n.id: raft_of(n) for n in cluster.live()}
    missing = sorted(i for i, r in views.items() if r is None)
    # (one that lost its state is said by outside_problems, with what to do)
    problems += [f"Node {i} answers but runs no replicated group." for i in missing
                 if not isinstance((cluster.nodes[i].info or {}).get("lost_state"), dict)]
    if lead is None:
        problems.append("The group has no leader: an election is under way, or no quorum of voters "
                        "can reach each other.")
        # the voters as the live members' newest configuration lists them
        confs = [r for r in views.values() if r is not None]
        conf = max(confs, key=lambda r: int(r.get("conf_index", 0) or 0)) if confs else {}
        return [*problems, *_voter_problems(cluster, list(conf.get("voters", [])))]
    lraft = raft_of(lead) or {}
    problems += _voter_problems(cluster, list(lraft.get("voters", [])))
    commit = int(lraft.get("commit", 0))
    for nid, raft in sorted(views.items()):
        if raft is None:
            continue
        if not in_conf(lraft, nid):
            if raft.get("removed_at") is not None:
                problems.append(f"Node {nid} was removed from the group (the configuration committed at "
                                f"index {raft['removed_at']}) but is still a cluster member: "
                                f"`storelab cluster remove-node ADDR {nid}` makes it leave.")
            else:
                problems.append(f"Node {nid} runs the group but is neither a voter nor a learner in the "
                                f"leader's configuration.")
            continue  # no leader to name, nothing to apply: it is not the group's any more
        if raft.get("leader") not in (lead.id, None, "") or (nid != lead.id and not raft.get("leader")):
            problems.append(f"Node {nid} names {raft.get('leader') or 'no leader'} as leader, not {lead.id}.")
        lag = commit - int(raft.get("applied", 0))
        if lag > lag_limit:
            problems.append(f"Node {nid} has applied up to {raft.get('applied')}, {lag} entries behind the "
                            f"leader's commit index {commit} (more than {lag_limit}).")
    return problems


def _voter_problems(cluster: ClusterView, voters: list[str]) -> list[str]:
    """A quorum of ``voters`` short, and each voter that is not alive and answering."""
    out = []
    alive = [v for v in voters if v in cluster.nodes and cluster.nodes[v].state == State.ALIVE
             and cluster.nodes[v].reachable]
    need = len(voters) // 2 + 1
    if voters and len(alive) < need:
        out.append(f"Only {len(alive)} of {len(voters)} voters are alive and answering; a quorum "
                   f"needs {need}.")
    for v in sorted(set(voters) - set(alive)):
        state = cluster.nodes[v].state if v in cluster.nodes else "not a member"
        out.append(f"Voter {v} is {state if state != State.ALIVE else 'not answering'}.")
    return out


def outside_problems(cluster: ClusterView) -> list[str]:
    """What ``verify`` reports of a replicated cluster beyond its group: members that lost their
    state (a group counts them but they run none; the cluster remembers a claim they do not
    hold), members down that the group does not count, and the slot map (the smart clients'
    first hop) where a live member's differs from the entry node's."""
    problems: list[str] = []
    lead = leader_of(cluster)
    conf = (raft_of(lead) or {}) if lead is not None else {}
    for nid, n in sorted(cluster.nodes.items()):
        if n.state == State.LEFT:
            continue
        info = n.info or {}
        lost = info.get("lost_state")
        if isinstance(lost, dict):
            problems.append(
                f"Node {n.label()} lost its state: the group counts it a member ({lost.get('from')} sent "
                f"it the group's Raft traffic at term {lost.get('term')}) but it runs no "
                "group (its data directory was wiped or replaced), so it serves no key. `storelab cluster "
                f"remove-node {cluster.entry.addr} {nid}` takes it out; add it again under a fresh --data-dir.")
        claim = info.get("lost_claim")
        if isinstance(claim, dict) and raft_of(n) is None:
            problems.append(f"Node {n.label()} does not serve slots {claim.get('slots')} that the cluster's "
                            f"map gives it (epoch {claim.get('epoch')}): it lost its state.")
        if n.state != State.ALIVE and conf and not in_conf(conf, nid):
            problems.append(f"Node {n.label()} is {n.state} and is neither a voter nor a learner of the group.")
    for n in cluster.live():
        if n is not cluster.entry and n.slots is not None and n.runs != cluster.entry.runs:  # (live: answered)
            problems.append(f"Node {n.id}'s slot map differs from {cluster.entry.id}'s: "
                            f"{clusterview.map_diff(n, cluster.entry)}.")
    return problems


def rows(cluster: ClusterView) -> list[dict[str, Any]]:
    """One row per member, each as the node reports itself: None where it did not answer
    (``voter`` included: a node that did not answer may well be a voter)."""
    out = []
    for n in cluster.nodes.values():
        raft = raft_of(n) or {}
        out.append({"id": n.id, "addr": n.addr, "state": n.state, "role": raft.get("role"),
                    "term": raft.get("term"), "leader": raft.get("leader"), "commit": raft.get("commit"),
                    "applied": raft.get("applied"),
                    "voter": n.id in raft.get("voters", []) if n.reachable else None,
                    "keys": (n.info or {}).get("keys"), "answered": n.reachable, "error": n.error})
    return out


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' if n != 1 else ''}"


def group_summary(cluster: ClusterView) -> str:
    """What ``info``'s footer says of the group: its voters and learners as the leader's
    configuration lists them (the entry node's when no leader is known), the voters that did
    not answer, the members that left the cluster and those still in it but out of the group."""
    lead = leader_of(cluster)
    conf = raft_of(lead) if lead is not None else raft_of(cluster.entry)
    conf = conf or {}
    voters, learners = list(conf.get("voters", [])), list(conf.get("learners", []))
    group = _count(len(voters), "voter")
    if learners:
        group += f" and {_count(len(learners), 'learner')}"
    silent = [v for v in voters if v not in cluster.nodes or not cluster.nodes[v].reachable]
    if silent:
        group += f" ({', '.join(silent)} did not answer)"
    parts = [group + " in one replicated group" + ("" if lead is not None else
                                                  f" as {cluster.entry.id}'s configuration lists it")]
    left = [n.id for n in cluster.nodes.values() if n.state == State.LEFT]
    if left:
        parts.append(f"{_count(len(left), 'member')} left the cluster ({', '.join(left)})")
    outside = [n.id for n in cluster.nodes.values() if n.state != State.LEFT and not in_conf(conf, n.id)]
    if outside:
        parts.append(f"{', '.join(outside)} {'is a member' if len(outside) == 1 else 'are members'} of the "
                     "cluster but not of the group")
    parts.append(f"leader: {lead.label() if lead else 'none known'}")
    return "; ".join(parts) + "."


# --- admin steps ---------------------------------------------------------------------------------


def wait_leader(a: Admin, addr: str, want: str | None = None, ids: set[str] | None = None) -> ClusterView:
    """Discover until a leader (``want``, if given) is named by every live member of the group
    (and, with ``ids``, by each of those nodes)."""
    found: list[ClusterView] = []

    def agreed() -> bool:
        c = a.discover(addr)
        lead = leader_of(c)
        if lead is None or (want is not None and lead.id != want):
            return False
        named = {n.id: (raft_of(n) or {}).get("leader") for n in c.live()}
        if ids is not None and any(named.get(i) != lead.id for i in ids):
            return False
        if any(r is not None and r != lead.id for r in named.values() if r is not None):
            return False
        found.append(c)
        return True

    a.wait(f"{want or 'a leader'} to lead the group as every live member sees it", agreed)
    return found[-1]


def create(a: Admin, nodes: list[NodeState]) -> ClusterView:
    """One group of ``nodes``: one cluster as today (the slot map split evenly, so that every node
    claims what it owns and the maps settle), then the group, which serves every slot whatever the
    map says."""
    a.create(nodes, even_split([n.id for n in nodes]))
    voters = [n.id for n in nodes]
    for n in nodes:
        a.post(n.addr, "/cluster/replicate", {"voters": voters})
    return wait_leader(a, nodes[0].addr, ids=set(voters))


def leader_or_refuse(cluster: ClusterView) -> NodeState:
    lead = leader_of(cluster)
    if lead is None:
        raise Refused("The group has no leader now (an election is under way, or no quorum is alive); "
                      "try again shortly.")
    return lead


def failover(a: Admin, cluster: ClusterView, to: NodeState) -> ClusterView:
    lead = leader_or_refuse(cluster)
    if lead.id == to.id:
        return cluster
    a.post(lead.addr, "/cluster/failover", {"to": to.id})
    return wait_leader(a, to.addr, want=to.id)


#: how far an earlier ``add-node`` got (:func:`join_stage`): not a member of the cluster yet
FRESH = "fresh"
#: a member of the cluster, neither in the group's configuration nor running the group
MET = "met"
#: in the configuration as a learner, but running no group (the join was cut short before it
#: asked NEW, or NEW restarted before it recorded the group)
LISTED = "listed"
#: running the group, but not in the leader's configuration (the change that added it was lost
#: with an uncommitted entry, or NEW was removed since): the leader adds it
UNLISTED = "unlisted"
#: a learner running the group: it catches up, then is promoted
LEARNER = "learner"
#: a voter already: nothing to do
VOTER = "voter"

_STAGE_SAYS = {
    MET: "is a member of the cluster but not of the group yet (an earlier add-node stopped after its "
         "meet): the leader adds it as a learner, it joins, catches up, then votes",
    LISTED: "is a learner in the group's configuration but does not run the group yet (an earlier "
            "add-node stopped before it joined, or it restarted before it recorded the group): it "
            "joins, catches up, then votes",
    UNLISTED: "runs the group but the leader's configuration does not list it (the change that added "
              "it was lost in a leader change, or it was removed since): the leader adds it as a learner "
              "again; it catches up, then votes",
    LEARNER: "is a learner of the group already (an earlier add-node stopped before its promotion): it "
             "catches up, then votes",
}


def member_of(cluster: ClusterView, new: NodeState) -> bool:
    """Whether ``new`` (answering) is a member of ``cluster``: the entry node lists it (not
    left) and ``new`` lists the entry node (the same cluster, not a namesake in another)."""
    listed = cluster.nodes.get(new.id)
    knows = {m.get("id") for m in new.members or []}
    return listed is not None and listed.state != State.LEFT and cluster.entry.id in knows


def join_stage(cluster: ClusterView, new: NodeState) -> str:
    """How far an earlier ``add-node`` of ``new`` got (one of :data:`FRESH` ... :data:`VOTER`);
    :class:`Refused` with a sentence when ``new`` belongs to another group, or the group has no
    leader (a configuration change needs one)."""
    if not member_of(cluster, new):
        return FRESH
    lead = leader_or_refuse(cluster)
    lraft = raft_of(lead) or {}
    mine = raft_of(new)
    if mine is not None:
        group = set(lraft.get("voters", [])) | set(lraft.get("learners", []))
        theirs = set(mine.get("voters", [])) | set(mine.get("learners", []))
        if theirs and not theirs & group:
            raise Refused(
                f"Node {new.label()} is a member of this cluster but runs another replicated group (voters "
                f"{', '.join(mine.get('voters', [])) or 'none'}), not the group of {lead.label()} (voters "
                f"{', '.join(lraft.get('voters', []))}); nothing was changed.")
    if new.id in lraft.get("voters", []):
        if mine is None:
            raise Refused(
                f"Node {new.label()} is a voter in the group's configuration but runs no group (its data "
                f"directory was replaced?); `storelab cluster remove-node {cluster.entry.addr} {new.id}` "
                "takes it out, then add-node adds it again; nothing was changed.")
        return VOTER
    if new.id in lraft.get("learners", []):
        return LEARNER if mine is not None else LISTED
    return UNLISTED if mine is not None else MET


def fresh_problems(cluster: ClusterView, new: NodeState) -> list[str]:
    """Why ``new``, not a member of ``cluster`` (:func:`member_of`), cannot be added to it, beyond
    :func:`realnet.admin.create_problems` (which says a group it runs already): it is in another
    cluster (said which), has no data directory, or a namesake of it still counts in the
    group's configuration."""
    out = []
    others = [str(m.get("id")) for m in new.members or [] if m.get("id") != new.id]
    if others:
        out.append(f"Node {new.label()} belongs to another cluster (of {', '.join(others[:5])}), not to that "
                   f"of {cluster.entry.label()}; add-node adds a node that is in no cluster, or finishes "
                   "adding one to this cluster.")
    out += data_dir_problems([new])
    lead = leader_of(cluster)
    conf = raft_of(lead if lead is not None else cluster.entry) or {}
    if in_conf(conf, new.id):
        # a member of that name left the cluster (or was never removed) while the group still
        # counts it: the learner change would be refused once NEW had met the cluster
        role = "a voter" if new.id in conf.get("voters", []) else "a learner"
        out.append(f"The group's configuration still counts {new.id} ({role}), which left the cluster: "
                   f"`storelab cluster remove-node {cluster.entry.addr} {new.id}` takes it out of the "
                   "configuration first, then add-node adds the new node.")
    return out


def data_dir_problems(nodes: list[NodeState]) -> list[str]:
    """The nodes that say they have no data directory (``/cluster/info``'s ``data_dir``):
    each would refuse to form or join the group (realnet.raftopen), after the others changed."""
    return [f"Node {n.label()} has no data directory: a replicated group needs one (--data-dir), "
            "since Raft keeps its term, vote and log on disk; start it with --data-dir."
            for n in nodes if n.reachable and (n.info or {}).get("data_dir") is False]


def create_problems(nodes: list[NodeState]) -> list[str]:
    """Why ``create --replicas`` cannot make ``nodes`` one group, beyond
    :func:`realnet.admin.create_problems`: what each node would refuse only once the cluster is
    made (checked first, so that a refusal changes nothing)."""
    return data_dir_problems(nodes)


def add_node(a: Admin, new: NodeState, cluster: ClusterView, stage: str = FRESH) -> None:
    """``new`` meets the cluster, joins the group as a learner, catches up and is promoted; from
    ``stage`` on (:func:`join_stage`: an earlier run cut short), only the steps left."""
    if stage == FRESH:
        a.add_node(new, cluster)
    lead = leader_or_refuse(cluster)  # (a voter has nothing left: cmd_add_node said so)
    lraft = raft_of(lead) or {}
    voters = list(lraft.get("voters", []))
    # NEW runs its (empty) group before the leader lists it: a node that runs no group and is
    # sent a group's Raft traffic takes itself for a member that lost its log (lost_state)
    if stage in (FRESH, MET, LISTED):
        a.post(new.addr, "/cluster/replicate", {"voters": voters, "learner": True})
    if stage in (FRESH, MET, UNLISTED):
        a.post(lead.addr, "/cluster/learner", {"node": new.id})

    def voter() -> bool:
        c = a.discover(lead.addr)
        cur = leader_of(c)
        if cur is None:
            return False
        craft = raft_of(cur) or {}
        if new.id in craft.get("voters", []):
            return True
        mine = raft_of(c.nodes[new.id]) if new.id in c.nodes else None
        if mine is not None and int(mine.get("applied", 0)) >= int(craft.get("commit", 0)):
            try:  # caught up: promote (the leader may have done so itself; 409 then)
                a.post(cur.addr, "/cluster/promote", {"node": new.id})
            except admin.NodeError:
                pass
        return False

    a.wait(f"{new.id} to catch up and become a voter", voter)


def remove(a: Admin, cluster: ClusterView, node: NodeState) -> str:
    """A configuration change removes ``node`` from the group (unless the leader's configuration
    no longer names it); once the change is committed, it leaves the cluster. Returns "" when it
    left, else why it could not be asked to (it cannot be reached: down, or cut off); the removal
    stands either way."""
    lead = leader_or_refuse(cluster)
    if in_conf(raft_of(lead) or {}, node.id):  # (else removed already: cut off meanwhile, or a
        if lead.id == node.id:                  # remove-node cut short)
            heir = successor(cluster, lead)
            if heir is None:
                raise Refused(f"Node {node.id} is the group's only live voter; nobody could take over.")
            cluster = failover(a, cluster, heir)
            lead = leader_or_refuse(cluster)
        a.post(lead.addr, "/cluster/remove-voter", {"node": node.id})

    def removed() -> bool:
        cur = leader_of(a.discover(lead.addr))
        conf = (raft_of(cur) or {}) if cur is not None else {}
        # committed: a change still uncommitted may be rolled back, and the node would have left
        # a group that still counts it
        return cur is not None and not in_conf(conf, node.id) and int(conf.get("commit", 0)) >= int(
            conf.get("conf_index", 0))

    a.wait(f"the group to drop {node.id} from its configuration", removed)
    try:
        leave(a, node)
    except admin.Unreachable as e:
        return e.message
    return ""


def successor(cluster: ClusterView, lead: NodeState) -> NodeState | None:
    """The voter that takes over from ``lead`` when ``lead`` is removed: the first other voter
    of its configuration that answered (None: there is none)."""
    for v in (raft_of(lead) or {}).get("voters", []):
        if v != lead.id and v in cluster.nodes and cluster.nodes[v].reachable:
            return cluster.nodes[v]
    return None


def leave(a: Admin, node: NodeState) -> None:
    """A node the group no longer counts leaves the cluster (its process exits)."""
    # its keys and slots are a replica's copies of what the group holds (the group serves every
    # slot, whatever the map says): nothing is lost when it leaves, so say so to the node's guard
    a.post(node.addr, "/cluster/leave", {"force": True, "accept_loss": True})


def refuse_slot_moves(cluster: ClusterView, command: str) -> None:
    """Slots do not move in a replicated cluster: its one group serves every slot on every node,
    and moving keys out of a replica's store would make it differ from the log."""
    if replicated(cluster):
        raise Refused(f"This cluster is replicated: one Raft group serves every slot, so {command} has "
                      "nothing to move (several groups over more nodes come next); nothing was changed.")


# --- the slot map's hints --------------------------------------------------------------------------


def conf_voters(cluster: ClusterView) -> list[str]:
    """The voters of the group's configuration as its leader lists it (the entry node's when no
    leader is known)."""
    lead = leader_of(cluster)
    return list((raft_of(lead if lead is not None else cluster.entry) or {}).get("voters", []))


def hint_plan(a: Admin, cluster: ClusterView) -> list[Move]:
    """The claims (as moves) that make the slot map name only the group's voters, spread evenly
    (:func:`kvcore.slotmove.hint_moves`); :class:`Refused` with a sentence when there is no
    leader to tell the voters, or no plan can be made."""
    lead = leader_or_refuse(cluster)
    try:
        return hint_moves(a.snapshot(cluster), list((raft_of(lead) or {}).get("voters", [])))
    except PlanError as e:
        raise Refused(str(e)) from None


def claimers(cluster: ClusterView, moves: list[Move]) -> list[NodeState]:
    """The voters that ``moves`` have claim slots (the nodes the hints change)."""
    ids = {m.target for m in moves}
    return [n for nid, n in sorted(cluster.nodes.items()) if nid in ids]


def mend_hints(a: Admin, addr: str) -> tuple[list[Move], str]:
    """The group's live voters claim the slots whose hint names a non-voter (or nobody), and a
    new voter its share (the one procedure, :class:`kvcore.slotmove.Hints`, that the sim's
    ``add_replica``/``remove_replica`` drive too), through the member at ``addr``. Returns the
    moves planned and "" when done, or why not (a sentence): what was asked of the group stands
    either way (``fix`` mends the hints later)."""
    moves: list[Move] = []
    try:
        cluster = a.discover(addr)
        moves = hint_plan(a, cluster)
        if not moves:
            return [], ""
        _, problems = a.drive(cluster.entry.addr, Hints(tuple(conf_voters(cluster))))
    except AdminError as e:
        return moves, e.message
    return moves, problems[0] if problems else ""


def hints_said(moves: list[Move]) -> str:
    """What the hint claims did, in one sentence."""
    took: dict[str, list[Move]] = {}
    for m in moves:
        took.setdefault(m.target, []).append(m)
    parts = []
    for nid, ms in sorted(took.items()):
        srcs = ", ".join(f"{m.count} from {m.source if m.source != NO_OWNER else 'no node'}" for m in ms)
        parts.append(f"{nid} claimed {_count(sum(m.count for m in ms), 'slot')} ({srcs})")
    return ("The slot map's hints (a smart client's first hop; the group serves every slot) now name only "
            f"the group's voters, spread evenly among those that answered: {'; '.join(parts)}.")


def hints_unmended(addr: str, why: str) -> str:
    return (f"The slot map's hints were not all handed to the group's voters: {why.rstrip('.')}. Smart "
            f"clients' first hop for those slots goes to a node that does not serve them until "
            f"`storelab cluster fix {addr}` mends them.")


def say_hints(a: Admin, addr: str, shown: str | None = None) -> bool:
    """Mend the hints through ``addr`` and say what was done (nothing when nothing was to do);
    ``shown``: the address the sentences name (``addr``'s by default: after a removal, a member
    still there, never the node removed). False when they could not all be mended, said on
    stderr as every failed mend is (``fix``'s too); the caller's exit status says whether what
    it was asked to do was done."""
    shown = shown or addr
    moves, why = mend_hints(a, addr)
    if why:
        error(hints_unmended(shown, why))
        return False
    if moves:
        say(hints_said(moves))
    return True


def hint_problems(cluster: ClusterView) -> list[str]:
    """What ``verify`` reports of the slot map of a replicated cluster: the slots whose hint
    names a node that is not a voter of the group's configuration, or no node (smart clients
    send their keys there first, and fall back), with what mends them."""
    lead = leader_of(cluster)
    conf = raft_of(lead if lead is not None else cluster.entry) or {}  # (as conf_voters reads it)
    voters = set(conf.get("voters", []))
    if not voters or not cluster.entry.slots:
        return []
    named: dict[str, list[int]] = {}
    covered: set[int] = set()
    for lo, hi, owner, _ in cluster.entry.runs:
        covered.update(range(lo, hi + 1))
        if owner not in voters:
            named.setdefault(owner, []).extend(range(lo, hi + 1))
    unowned = [s for s in range(NUM_SLOTS) if s not in covered]
    out = []
    fix = f"`storelab cluster fix {cluster.entry.addr}` gives them to the voters"
    for owner, slots in sorted(named.items()):
        n = cluster.nodes.get(owner)
        if n is None:
            what = "no longer a member of the cluster"
        elif n.state == State.LEFT:
            what = "it left the cluster"
        elif owner in conf.get("learners", []):
            what = "a learner"
        else:
            what = f"{n.state}, outside the group"
        out.append(f"Slots {format_ranges(slots_to_ranges(slots))} ({len(slots)}) of "
                   f"{cluster.entry.id}'s slot map name {owner} ({what}), which is not a voter of the group: "
                   f"smart clients send their keys there first; {fix}.")
    if unowned:
        out.append(f"Slots {format_ranges(slots_to_ranges(unowned))} ({len(unowned)}) of "
                   f"{cluster.entry.id}'s slot map name no node: smart clients have no first hop for "
                   f"their keys; {fix}.")
    return out


# --- commands ----------------------------------------------------------------------------------------


def check_replicas(replicas: int, count: int) -> None:
    """Refuse an ``--replicas`` the addresses alone rule out (before any node is asked)."""
    if replicas not in (1, count):
        raise Refused(REPLICAS_SENTENCE.format(n=count, r=replicas))
    if replicas > MAX_VOTERS:
        raise Refused(f"A replicated group has at most {MAX_VOTERS} voters, not {replicas}.")


def cmd_create(args: argparse.Namespace, a: Admin, nodes: list[NodeState]) -> int:
    say(f"Creating a replicated cluster: one Raft group of {len(nodes)} voters that owns every slot:")
    say(table(("NODE", "ADDR"), [(n.id, n.addr) for n in nodes]))
    confirm(args, "Create this cluster?")
    cluster = create(a, nodes)
    lead = leader_of(cluster)
    say(f"Cluster created; {lead.label() if lead else '?'} leads the group.")
    say(_info_table(cluster))
    return admin.EXIT_OK


def cmd_failover(args: argparse.Namespace, a: Admin) -> int:
    cluster = a.discover(args.addr)
    if not replicated(cluster):
        raise Refused("This cluster is not replicated; failover hands over a Raft group's leadership.")
    to = cluster.resolve(args.to)
    lead = leader_or_refuse(cluster)
    voters = (raft_of(lead) or {}).get("voters", [])
    if to.id not in voters:
        raise Refused(f"Node {to.label()} is not a voter of the group (voters: {', '.join(voters)}).")
    if lead.id == to.id:
        say(f"Node {to.label()} already leads the group. Nothing to do.")
        return admin.EXIT_OK
    say(f"Handing the group's leadership from {lead.label()} to {to.label()}.")
    confirm(args, "Fail over?")
    failover(a, cluster, to)
    say(f"Node {to.id} leads the group.")
    return admin.EXIT_OK


def settled_problems(a: Admin, addr: str, hints: bool = True) -> tuple[ClusterView, list[str]]:
    """What ``verify`` reports of the replicated cluster of ``addr`` (without the hints' problems
    unless ``hints``), looked at again a few times while there are any: a map or an applied index
    a moment behind settles within a gossip round or two."""
    problems: list[str] = []
    cluster = a.discover(addr)
    for i in range(VERIFY_POLLS):
        problems = group_problems(cluster) + outside_problems(cluster) + (hint_problems(cluster) if hints else [])
        if not problems or i == VERIFY_POLLS - 1:
            break
        time.sleep(admin.POLL_INTERVAL * 4)
        cluster = a.discover(addr)
    return cluster, problems


def cmd_verify(args: argparse.Namespace, a: Admin) -> int:
    cluster, problems = settled_problems(a, args.addr)
    voters = (raft_of(leader_of(cluster) or cluster.entry) or {}).get("voters", [])
    say(f"Verifying the replicated cluster of {cluster.entry.label()}: a group of {len(voters)} voter"
        f"{'s' if len(voters) != 1 else ''}.")
    if say_problems(problems):
        return admin.EXIT_PROBLEMS
    lead = leader_of(cluster)
    say(f"OK: {lead.label() if lead else '?'} leads the group and every live member names it; a quorum "
        f"of voters is alive; every applied index is within {LAG_LIMIT} of the leader's commit; every "
        "slot's hint names a voter.")
    return admin.EXIT_OK


def _info_table(cluster: ClusterView) -> str:
    def said(r: dict[str, Any], v: Any) -> Any:
        return UNKNOWN if v is None and not r["answered"] else v

    return table(("ID", "ADDR", "STATE", "ROLE", "TERM", "COMMIT", "APPLIED", "VOTER", "KEYS"),
                 [(r["id"], r["addr"], r["state"], said(r, r["role"]), r["term"], r["commit"], r["applied"],
                   UNKNOWN if r["voter"] is None else "yes" if r["voter"] else "no", r["keys"])
                  for r in rows(cluster)])


def cmd_info(args: argparse.Namespace, a: Admin) -> int:
    cluster = a.discover(args.addr)
    if args.json:
        say(json.dumps({"entry": cluster.entry.id, "nodes": rows(cluster)}, indent=2))
        return admin.EXIT_OK
    say(_info_table(cluster))
    say(group_summary(cluster))
    say("Role, term, commit and applied index, voter or not and keys as each node reports its own "
        "(? when it did not answer).")
    return admin.EXIT_OK


def _mend_left_over(args: argparse.Namespace, a: Admin, cluster: ClusterView, shown: str, done: str) -> int:
    """An add-node or remove-node with nothing left to do in the group (``done`` says so, a
    clause): "Nothing to do", unless the slot map's hints do not name only the voters, evenly
    (an earlier run stopped before it mended them, or a voter was down then): then mend them."""
    moves = hint_plan(a, cluster)
    if not moves:
        say(f"{done}. Nothing to do.")
        return admin.EXIT_OK
    a.require_token(claimers(cluster, moves), "mend the slot map's hints")
    say(f"{done}, but the slot map's hints do not name only the voters, spread evenly (an earlier add-node "
        "or remove-node stopped before it mended them, or a voter was down then): the voters claim them.")
    confirm(args, "Mend the hints?")
    return admin.EXIT_OK if say_hints(a, cluster.entry.addr, shown) else admin.EXIT_PROBLEMS


def cmd_add_node(args: argparse.Namespace, a: Admin, cluster: ClusterView, new: NodeState) -> int:
    stage = join_stage(cluster, new)
    if stage == VOTER:
        # an earlier add-node may have stopped before the voters' hints were mended: finish that
        return _mend_left_over(args, a, cluster, args.existing,
                               f"Node {new.label()} is a voter of the replicated group of {cluster.entry.label()} already")
    leader_or_refuse(cluster)  # every step but a fresh node's meet needs one: refuse before it
    if stage != FRESH:  # (a fresh NEW's add-node asked the token with its other problems)
        a.require_token([new, *cluster.live()], "finish adding the node")
    if stage == FRESH:
        say(f"Adding node {new.label()} to the replicated group of {cluster.entry.label()}: it joins as a "
            "learner, catches up, then votes and takes its share of the slot map's hints.")
    else:
        say(f"Finishing the addition of node {new.label()} to the replicated group of "
            f"{cluster.entry.label()}: it {_STAGE_SAYS[stage]}.")
    confirm(args, "Add this node?")
    add_node(a, new, cluster, stage)
    say(f"Node {new.id} caught up and is a voter of the group.")
    say_hints(a, cluster.entry.addr, args.existing)
    return admin.EXIT_OK


def cmd_remove_node(args: argparse.Namespace, a: Admin, cluster: ClusterView) -> int:
    node = cluster.resolve(args.node)
    lead = leader_or_refuse(cluster)
    if not in_conf(raft_of(lead) or {}, node.id):
        if node.state == State.LEFT:
            # an earlier remove-node may have stopped before the voters took its hints: finish that
            return _mend_left_over(args, a, cluster, args.addr, f"Node {node.label()} is no longer in the "
                                   "group's configuration and has left the cluster")
        if not node.reachable:
            now = "does not answer" if node.state == State.ALIVE else f"is {node.state}"
            raise Refused(f"Node {node.label()} is no longer in the group's configuration, and it cannot "
                          f"be asked to leave the cluster while it {now}; run this command again once it "
                          "is back.")
        # removed while it was cut off (or a remove-node whose last step failed): finish the job
        say(f"Node {node.label()} is no longer in the group's configuration; it leaves the cluster now "
            "(its process exits).")
        confirm(args, f"Make node {node.id} leave?")
        why = remove(a, cluster, node)
        if why:
            raise admin.Unreachable(why)
        say(f"Node {node.id} left the cluster.")
        say_hints(a, hint_entry(cluster, node.id))
        return admin.EXIT_OK
    heir = successor(cluster, lead) if lead.id == node.id else None
    # the leader (first its heir, when it is the node) removes it, then it is asked to leave; the
    # other live voters then claim its slots' hints
    voters = [n for n in cluster.live() if n.id in (raft_of(lead) or {}).get("voters", []) and n.id != node.id]
    a.require_token([n for n in (lead, heir, node, *voters) if n is not None], "remove the node")
    say(f"Removing node {node.label()} from the replicated group by a configuration change; then it "
        "leaves the cluster (its process exits), and the voters take over the slot map's hints that name it.")
    confirm(args, f"Remove node {node.id}?")
    why = remove(a, cluster, node)
    if why:
        # the removal is committed: the group no longer counts it, which is what was asked; the
        # node learns it when it comes back (thesis §4.2.3) and refuses clients until it leaves
        say(f"Node {node.id} was removed from the group (the configuration change is committed), but its "
            f"leave from the cluster is not confirmed: {why.rstrip('.')}. If the request reached it (a node "
            f"that is paused, not down), it leaves when it resumes; otherwise, when it comes back it learns "
            f"that it was removed (it answers clients 503 removed), and `storelab cluster remove-node "
            f"{args.addr} {node.id}` then makes it leave the cluster (its process exits), or says it left.")
        say_hints(a, hint_entry(cluster, node.id))
        return admin.EXIT_OK
    say(f"Node {node.id} left the group and the cluster.")
    say_hints(a, hint_entry(cluster, node.id))
    return admin.EXIT_OK


def hint_entry(cluster: ClusterView, gone: str) -> str:
    """The address to mend the hints through once ``gone`` is out: the entry node's, unless it is
    ``gone`` (then that of another live member, a voter first)."""
    if cluster.entry.id != gone:
        return cluster.entry.addr
    voters = conf_voters(cluster)
    others = sorted((n for n in cluster.live() if n.id != gone), key=lambda n: (n.id not in voters, n.id))
    return others[0].addr if others else cluster.entry.addr


def cmd_fix(args: argparse.Namespace, a: Admin, cluster: ClusterView) -> int:
    """``fix`` on a replicated cluster: no slot or key moves (the group serves every slot), so
    what there is to fix is the slot map's hints, which should name only the group's voters,
    spread evenly (what ``verify`` reports otherwise): the voters claim them."""
    moves = hint_plan(a, cluster)
    if not moves:
        say("The slot map's hints name only the group's voters, spread evenly; nothing to fix (one Raft "
            "group serves every slot: no slot or key moves in a replicated cluster).")
        return _not_for_fix(a, args.addr)
    a.require_token(claimers(cluster, moves), "fix")
    say("To fix: the slot map (a routing hint only: the group serves every slot) should name only the "
        "group's voters, spread evenly; these voters claim these slots (no key moves):")
    say(table(("FROM", "TO", "SLOTS", "COUNT"),
              [(m.source if m.source != NO_OWNER else "-", m.target, format_ranges(m.slots), m.count)
               for m in moves]))
    confirm(args, "Fix these?")
    done, why = mend_hints(a, cluster.entry.addr)
    if why:
        error(hints_unmended(args.addr, why))
        return admin.EXIT_PROBLEMS
    if done:
        say(hints_said(done))
    return _not_for_fix(a, args.addr)


def _not_for_fix(a: Admin, addr: str) -> int:
    """``fix`` explains every problem ``verify`` reports that it does not fix (on a replicated
    cluster, all but the hints: a voter down, a member that lost its state, no leader, ...), each
    on stderr with what mends it; exit 1 when there is any, as ``verify``'s."""
    _, left = settled_problems(a, addr, hints=False)
    if not left:
        return admin.EXIT_OK
    for p in left:
        error(p)
    say("fix mends only the slot map's hints of a replicated cluster: the problems above are the group's "
        "or its members' (what each sentence names mends it; a voter down comes back when its node is "
        "started again, or `remove-node` takes it out).")
    return admin.EXIT_PROBLEMS


__all__ = [
    "FRESH", "LAG_LIMIT", "LEARNER", "LISTED", "MET", "REPLICAS_SENTENCE", "UNLISTED", "VOTER",
    "AdminError", "check_replicas", "claimers", "cmd_add_node", "cmd_create", "cmd_failover", "cmd_fix",
    "cmd_info", "cmd_remove_node", "cmd_verify", "conf_voters", "create_problems", "data_dir_problems",
    "fresh_problems", "group_problems", "hint_entry", "hint_plan", "hint_problems", "hints_said", "hints_unmended",
    "in_conf", "join_stage", "leader_of", "leader_or_refuse", "member_of", "mend_hints", "raft_of",
    "refuse_slot_moves", "replicated", "say_hints", "settled_problems", "successor",
]
