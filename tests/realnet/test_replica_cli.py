"""``storelab cluster`` on a replicated cluster, without processes: the ``--replicas`` rule, the
leader found from the nodes' views, and what ``verify`` reports of a group."""

from __future__ import annotations

from typing import Any

import pytest

from realnet import clusterview, replicacli
from realnet.admin import ClusterView, NodeState
from realnet.cli import main


def _node(nid: str, role: str = "follower", term: int = 2, leader: str | None = "a", commit: int = 10,
          applied: int = 10, voters: tuple[str, ...] = ("a", "b", "c"), state: str = "alive",
          answers: bool = True) -> NodeState:
    n = NodeState(id=nid, addr=f"127.0.0.1:{ord(nid[0])}", state=state)
    if answers:
        n.info = {"id": nid, "keys": 3, "raft": {"role": role, "term": term, "leader": leader,
                                                  "commit": commit, "applied": applied,
                                                  "voters": list(voters), "learners": []}}
    return n


def _cluster(*nodes: NodeState) -> ClusterView:
    c = ClusterView(nodes[0])
    for n in nodes:
        c.nodes[n.id] = n
    return c


def healthy() -> ClusterView:
    return _cluster(_node("a", role="leader"), _node("b"), _node("c", applied=9))


@pytest.mark.parametrize("replicas", [2, 4, 7])
def test_create_refuses_replicas_other_than_1_or_the_node_count(replicas: int, capsys: Any) -> None:
    rc = main(["cluster", "create", "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3", "--replicas", str(replicas),
               "--yes"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "Several groups over more nodes come next; --replicas must be 1 or the number of nodes" in err
    assert f"(3), not {replicas}." in err


def test_replicas_must_be_a_positive_int(capsys: Any) -> None:
    assert main(["cluster", "create", "127.0.0.1:1", "--replicas", "0"]) == 2
    assert "--replicas: '0' must be positive" in capsys.readouterr().err


def test_a_healthy_group_has_no_problem() -> None:
    c = healthy()
    assert replicacli.replicated(c)
    assert replicacli.leader_of(c) is c.nodes["a"]
    assert replicacli.group_problems(c) == []


def test_an_unreplicated_cluster_is_not_handed_over() -> None:
    n = NodeState(id="a", addr="x", info={"id": "a"})
    assert not replicacli.replicated(_cluster(n))


def test_the_leader_at_the_highest_term_wins() -> None:
    c = _cluster(_node("a", role="leader", term=2), _node("b", role="leader", term=3, leader="b"), _node("c"))
    assert replicacli.leader_of(c) is c.nodes["b"]


def test_no_leader_is_a_problem() -> None:
    c = _cluster(_node("a", leader=None), _node("b", leader=None), _node("c", leader=None))
    (p,) = replicacli.group_problems(c)
    assert "no leader" in p


def test_a_lost_quorum_and_a_dead_voter_are_problems() -> None:
    c = _cluster(_node("a", role="leader"), _node("b", state="dead", answers=False),
                 _node("c", state="dead", answers=False))
    problems = replicacli.group_problems(c)
    assert any("Only 1 of 3 voters" in p and "needs 2" in p for p in problems)
    assert any(p == "Voter b is dead." for p in problems)


def test_one_dead_voter_of_three_keeps_the_quorum_but_is_reported() -> None:
    c = _cluster(_node("a", role="leader"), _node("b"), _node("c", state="dead", answers=False))
    assert replicacli.group_problems(c) == ["Voter c is dead."]


def test_a_replica_far_behind_is_a_problem() -> None:
    c = _cluster(_node("a", role="leader", commit=5000, applied=5000), _node("b", commit=5000, applied=4990),
                 _node("c", commit=3000, applied=3000))
    (p,) = replicacli.group_problems(c, lag_limit=1000)
    assert p.startswith("Node c has applied up to 3000, 2000 entries behind")


def test_a_member_naming_another_leader_is_a_problem() -> None:
    c = _cluster(_node("a", role="leader"), _node("b", leader="c"), _node("c"))
    (p,) = replicacli.group_problems(c)
    assert p == "Node b names c as leader, not a."


def test_info_rows_show_role_term_commit_applied() -> None:
    rows = replicacli.rows(healthy())
    assert [(r["id"], r["role"], r["term"], r["commit"], r["applied"], r["voter"]) for r in rows] == [
        ("a", "leader", 2, 10, 10, True), ("b", "follower", 2, 10, 10, True), ("c", "follower", 2, 10, 9, True)]


def test_info_says_unknown_for_a_node_that_did_not_answer_and_counts_the_group_as_it_is() -> None:
    """A dead voter is not "not a voter": its row says None (``?``). The footer counts the leader's
    configuration (voters, learners), who did not answer, who left, who is outside the group."""
    lead = _node("a", role="leader", voters=("a", "b", "c"))
    assert lead.info is not None
    lead.info["raft"]["learners"] = ["d"]
    c = _cluster(lead, _node("b", state="dead", answers=False), _node("c"), _node("d", voters=("a", "b", "c")),
                 NodeState(id="x", addr="127.0.0.1:9", state="left"), _node("y", state="alive", answers=False))
    voter = {r["id"]: r["voter"] for r in replicacli.rows(c)}
    assert voter == {"a": True, "b": None, "c": True, "d": False, "x": None, "y": None}
    assert replicacli.group_summary(c) == (
        "3 voters and 1 learner (b did not answer) in one replicated group; 1 member left the cluster (x); "
        "y is a member of the cluster but not of the group; leader: a (127.0.0.1:97).")
    table = replicacli._info_table(c).splitlines()
    assert table[2].split() == ["b", "127.0.0.1:98", "dead", "?", "?", "?", "?", "?", "?"]
    assert table[4].split()[-2:] == ["no", "3"]  # d answered: a learner, not a voter


def test_the_automatic_rebalancer_leaves_a_replicated_node_alone() -> None:
    """A node in a group (``node.replica``) never starts a rebalance nor drains before leaving:
    the group serves every slot on every node."""
    import asyncio

    from kvcore.config import NodeConfig
    from kvcore.node import Node
    from kvcore.runtime import FakeRuntime
    from realnet.autorebalance import AutoRebalancer

    async def body() -> None:
        node = Node(FakeRuntime("a", seed=1), NodeConfig())
        node.start()
        node.form_group(["a"])
        auto = AutoRebalancer(node, "127.0.0.1:1", asyncio.get_running_loop(), settle=0.0)
        auto._fire()
        assert not auto._running and auto.runs == 0
        await auto.drain()  # returns at once: nothing to move, no HTTP call
        node.stop()

    asyncio.run(asyncio.wait_for(body(), timeout=10))


# --- add-node run again: where an earlier run stopped ---------------------------------------------


def _joining(knows: tuple[str, ...] = ("a", "b", "c", "d"), raft: dict[str, Any] | None = None) -> NodeState:
    """Node d as it answers itself: the members it knows, and its group's view (None: no group)."""
    d = NodeState(id="d", addr="127.0.0.1:100")
    d.info = {"id": "d", "keys": 0, "raft": raft}
    d.members = [{"id": m, "state": "alive"} for m in knows]
    return d


def _with(d: NodeState, voters: tuple[str, ...] = ("a", "b", "c"), learners: tuple[str, ...] = ()) -> ClusterView:
    lead = _node("a", role="leader", voters=voters)
    assert lead.info is not None
    lead.info["raft"]["learners"] = list(learners)
    return _cluster(lead, _node("b", voters=voters), _node("c", voters=voters), d)


def _group_view(voters: tuple[str, ...] = (), learners: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"role": "follower", "term": 2, "leader": "a" if voters else None, "commit": 3, "applied": 3,
            "voters": list(voters), "learners": list(learners)}


def test_join_stage_reads_how_far_an_earlier_add_node_got() -> None:
    js = replicacli.join_stage
    d = _joining(knows=("d",))
    assert js(_cluster(_node("a", role="leader"), _node("b"), _node("c")), d) == replicacli.FRESH
    # met the cluster, nothing more (the CLI stopped after the meet)
    d = _joining()
    assert js(_with(d), d) == replicacli.MET
    # the leader added it; it was never asked to join (or restarted before it recorded the group)
    assert js(_with(d, learners=("d",)), d) == replicacli.LISTED
    # it joined: a learner waiting for the leader's snapshot (no configuration yet), or caught up
    d = _joining(raft=_group_view())
    assert js(_with(d, learners=("d",)), d) == replicacli.LEARNER
    d = _joining(raft=_group_view(("a", "b", "c"), ("d",)))
    assert js(_with(d, learners=("d",)), d) == replicacli.LEARNER
    # runs the group, but the leader's configuration lost the change (or removed it since)
    assert js(_with(d), d) == replicacli.UNLISTED
    d = _joining(raft=_group_view(("a", "b", "c", "d")))
    assert js(_with(d, voters=("a", "b", "c", "d")), d) == replicacli.VOTER


def test_join_stage_refuses_a_node_of_another_group_or_a_voter_that_lost_its_group() -> None:
    d = _joining(raft=_group_view(("x", "y", "z")))
    with pytest.raises(replicacli.Refused) as e:
        replicacli.join_stage(_with(d), d)
    assert ("Node d (127.0.0.1:100) is a member of this cluster but runs another replicated group (voters x, "
            "y, z), not the group of a (127.0.0.1:97) (voters a, b, c); nothing was changed.") == e.value.message
    d = _joining()
    with pytest.raises(replicacli.Refused) as e:
        replicacli.join_stage(_with(d, voters=("a", "b", "c", "d")), d)
    assert "is a voter in the group's configuration but runs no group" in e.value.message
    assert "remove-node 127.0.0.1:97 d" in e.value.message
    # a namesake in another cluster is no member of this one: refused by add-node's fresh checks
    d = _joining(knows=("d", "x"), raft=_group_view(("x", "d")))
    c = _with(d)
    assert not replicacli.member_of(c, d)
    problems = replicacli.fresh_problems(c, d)
    assert problems == [
        "Node d (127.0.0.1:100) belongs to another cluster (of x), not to that of a (127.0.0.1:97); add-node "
        "adds a node that is in no cluster, or finishes adding one to this cluster."]
    # the group it runs is said once, by the checks create and add-node share
    assert clusterview.create_problems([d])[-1].startswith("Node d (127.0.0.1:100) already runs a replicated group (voters x, d)")


def test_join_stage_needs_a_leader() -> None:
    d = _joining()
    c = _cluster(_node("a"), _node("b"), d)
    with pytest.raises(replicacli.Refused, match="no leader now"):
        replicacli.join_stage(c, d)


def test_a_hint_mend_that_fails_is_said_on_stderr_wherever_it_runs(monkeypatch: Any, capsys: Any) -> None:
    """add-node and remove-node mend the hints after what they were asked did happen (their exit
    status is 0), fix mends nothing else (its status is 2): either way the failure is said on
    stderr, in the CLI's one voice, naming the address to fix through."""
    why = "Node b does not answer"
    monkeypatch.setattr(replicacli, "mend_hints", lambda a, addr: ([], why))
    assert replicacli.say_hints(None, "127.0.0.1:1", "127.0.0.1:2") is False  # type: ignore[arg-type]
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("storelab: The slot map's hints were not all handed to the group's voters: "
                          "Node b does not answer.")
    assert "`storelab cluster fix 127.0.0.1:2`" in err
    monkeypatch.setattr(replicacli, "mend_hints", lambda a, addr: ([], ""))
    assert replicacli.say_hints(None, "127.0.0.1:1") is True  # type: ignore[arg-type]
    assert capsys.readouterr() == ("", "")


def test_a_lost_mark_is_taken_back_only_when_no_group_can_have_set_it() -> None:
    """``stray_sender``: what lets an unreplicated cluster's fix take a lost-state mark back. A
    review's case: voters x, y, z; y wiped, marked lost by leader x's heartbeat; then x wiped
    too, running no group, while z still runs it. x answers and runs no group, but clearing y's
    mark would let it serve its empty store."""
    def plain(nid: str, lost_from: str | None = None, state: str = "alive", answers: bool = True) -> NodeState:
        n = NodeState(id=nid, addr=f"127.0.0.1:{ord(nid[0])}", state=state)
        if answers:
            n.info = {"id": nid, "lost_state": {"from": lost_from, "term": 3} if lost_from else None}
        return n

    y = plain("y", lost_from="x")
    assert clusterview.stray_sender(_cluster(plain("x"), y, plain("z")), y) == "x"  # every member plain
    assert clusterview.stray_sender(_cluster(plain("x"), y, _node("z", voters=("x", "y", "z"))), y) is None
    assert clusterview.stray_sender(_cluster(plain("x"), y, plain("z", answers=False)), y) is None
    assert clusterview.stray_sender(_cluster(plain("x"), y, plain("z", state="dead", answers=False)), y) is None
    assert clusterview.stray_sender(_cluster(plain("x", lost_from="z"), y, plain("z")), y) is None
    assert clusterview.stray_sender(_cluster(plain("x"), y, plain("z", state="left", answers=False)), y) == "x"
    assert clusterview.stray_sender(_cluster(plain("x"), plain("y"), plain("z")), plain("y")) is None  # no mark
    c = _cluster(plain("x"), y, _node("z", voters=("x", "y", "z")))
    sentence = clusterview.lost_sentence(c, y, {"from": "x", "term": 3})
    assert "a group that counts it cannot be ruled out" in sentence and "fix takes the mark back only once" in sentence
