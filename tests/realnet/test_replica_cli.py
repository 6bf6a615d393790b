"""``storelab cluster`` on a replicated cluster, without processes: the ``--replicas`` rule, the
leader found from the nodes' views, and what ``verify`` reports of a group."""

from __future__ import annotations

from typing import Any

import pytest

from realnet import replicacli
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
