"""``storelab cluster`` refuses before it changes anything, stops early with the cause, and
exits 0 when there is nothing to do; without processes: a fake administrator answers the
nodes' views and records every change asked of it.

What each node would refuse only once the command had begun (no data directory for a
replicated group, a group it runs already, more voters than a group takes, a cluster secret or
name that differs, a namesake that left owning slots) is a problem found before the first
change; ``add-node``'s wait stops on the transport counters that say why the new node cannot
join (:func:`realnet.admin.join_trouble`)."""

from __future__ import annotations

from typing import Any

import pytest

from realnet import admin, clustercli, replicacli
from realnet.admin import Admin, ClusterView, NodeState, join_trouble
from realnet.cli import main
from realnet.replicaapi import MAX_VOTERS


def _node(nid: str, *, port: int = 0, data_dir: bool | None = True, name: str = "", keys: tuple[str, ...] = (),
          members: tuple[tuple[str, str], ...] | None = None, raft: dict[str, Any] | None = None,
          state: str = "alive") -> NodeState:
    port = port or 7000 + ord(nid[0])
    n = NodeState(id=nid, addr=f"127.0.0.1:{port}", peer_addr=f"127.0.0.1:{port + 10000}", state=state)
    n.info = {"id": nid, "mode": "standalone" if members is None else "cluster", "keys": 0, "joined": True,
              "raft": raft, "data_dir": data_dir, "cluster_name": name,
              "transport": {"bus": {"authenticated": bool(keys), "key_ids": list(keys)}}}
    n.members = [{"id": m, "state": st} for m, st in (members or ((nid, "alive"),))]
    n.slots = {"slots": [], "unassigned": ""}
    return n


class FakeAdmin:
    """Answers probes and discoveries from given views; records every change asked of it. The
    admin token check is the real one (:meth:`realnet.admin.Admin.token_problems`), over a
    ``post`` that answers ``/cluster/check-token`` 401 for the addresses in ``refuse`` (and
    records no change for it: it is none)."""

    token_problems = Admin.token_problems
    _token_sentence = Admin._token_sentence
    require_token = Admin.require_token
    snapshot = Admin.snapshot

    def __init__(self, probes: dict[str, NodeState], cluster: ClusterView | None = None,
                 refuse: set[str] | None = None, token_given: bool = True) -> None:
        self.probes = probes
        self.cluster = cluster
        self.changes: list[tuple[str, Any]] = []
        self.refuse = refuse or set()
        self.token_given = token_given
        #: the addresses asked /cluster/check-token, in order
        self.checked: list[str] = []

    def __enter__(self) -> FakeAdmin:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def probe(self, addr: str) -> NodeState:
        return self.probes[addr]

    def discover(self, addr: str) -> ClusterView:
        assert self.cluster is not None
        return self.cluster

    def wait_stable(self, addr: str, timeout: float | None = None) -> ClusterView:
        return self.discover(addr)

    def post(self, addr: str, path: str, body: Any = None, timeout: float | None = None) -> Any:
        if path == admin.CHECK_TOKEN:
            self.checked.append(addr)
            if addr in self.refuse:
                raise admin.Unauthorized(addr, "This request requires the admin token.")
            return {"id": addr, "ok": True, "token_required": True}
        self.changes.append((addr, path))
        return {}

    def create(self, nodes: Any, plan: Any) -> ClusterView:
        self.changes.append(("create", [n.id for n in nodes]))
        raise admin.AdminError("the fake stops here")

    def add_node(self, new: NodeState, cluster: ClusterView) -> None:
        self.changes.append(("add_node", new.id))

    def leave(self, cluster: ClusterView, node: NodeState) -> None:
        self.changes.append(("leave", node.id))

    def drive(self, addr: str, goal: Any, *args: Any, **kw: Any) -> tuple[int, list[str]]:
        self.changes.append(("drive", goal))
        return 0, []


def run(monkeypatch: Any, fake: FakeAdmin, *argv: str) -> int:
    monkeypatch.setattr(clustercli, "Admin", lambda *a, **k: fake)
    return main(["cluster", *argv])


def _probes(*nodes: NodeState) -> dict[str, NodeState]:
    return {n.addr: n for n in nodes}


def _cluster(*nodes: NodeState, runs: list[tuple[int, int, str, int]] | None = None) -> ClusterView:
    c = ClusterView(nodes[0])
    for n in nodes:
        c.nodes[n.id] = n
    nodes[0].slots = {"slots": [{"start": lo, "end": hi, "node": o, "epoch": e}
                                for lo, hi, o, e in runs or [(0, 16383, nodes[0].id, 1)]], "unassigned": ""}
    return c


def _member(nid: str, ids: tuple[str, ...] = ("a", "b"), **kw: Any) -> NodeState:
    return _node(nid, members=tuple((i, "alive") for i in ids), **kw)


def _group(voters: tuple[str, ...], role: str = "follower", leader: str | None = "a") -> dict[str, Any]:
    return {"role": role, "term": 2, "leader": leader, "commit": 5, "applied": 5, "voters": list(voters),
            "learners": [], "conf_index": 1}


# --- create -----------------------------------------------------------------------------------------


def test_create_replicas_refuses_a_node_without_a_data_directory_before_any_change(
        monkeypatch: Any, capsys: Any) -> None:
    a, b, n = _node("a"), _node("b"), _node("n", data_dir=False)
    fake = FakeAdmin(_probes(a, b, n))
    assert run(monkeypatch, fake, "create", a.addr, b.addr, n.addr, "--replicas", "3", "--yes") == 1
    err = capsys.readouterr().err
    assert f"Node n ({n.addr}) has no data directory: a replicated group needs one (--data-dir)" in err
    assert "nothing was changed" in err
    assert fake.changes == []
    # a node that does not say (an older version) is not refused for it; R = 1 needs none
    fake = FakeAdmin(_probes(a, b, _node("n", data_dir=None)))
    assert run(monkeypatch, fake, "create", a.addr, b.addr, n.addr, "--replicas", "3", "--yes") == 2
    assert fake.changes == [("create", ["a", "b", "n"])]
    fake = FakeAdmin(_probes(a, b, n))
    assert run(monkeypatch, fake, "create", a.addr, b.addr, n.addr, "--yes") == 2
    assert fake.changes == [("create", ["a", "b", "n"])]


def test_create_refuses_a_node_running_a_group_and_more_voters_than_a_group_takes(
        monkeypatch: Any, capsys: Any) -> None:
    a, b = _node("a"), _node("b", raft=_group(("b",), role="leader", leader="b"))
    fake = FakeAdmin(_probes(a, b))
    assert run(monkeypatch, fake, "create", a.addr, b.addr, "--yes") == 1
    assert (f"Node b ({b.addr}) already runs a replicated group (voters b); only a node in no group can join "
            "a new cluster.") in capsys.readouterr().err
    assert fake.changes == []
    many = [_node(chr(ord("a") + i)) for i in range(MAX_VOTERS + 1)]
    fake = FakeAdmin(_probes(*many))
    argv = [n.addr for n in many]
    assert run(monkeypatch, fake, "create", *argv, "--replicas", str(len(many)), "--yes") == 1
    assert f"A replicated group has at most {MAX_VOTERS} voters, not {len(many)}." in capsys.readouterr().err
    assert fake.changes == []


def test_create_refuses_nodes_whose_bus_secrets_or_names_differ(monkeypatch: Any, capsys: Any) -> None:
    a, b, c = _node("a", keys=("k1",)), _node("b", keys=("k2",)), _node("c", name="x")
    fake = FakeAdmin(_probes(a, b, c))
    assert run(monkeypatch, fake, "create", a.addr, b.addr, c.addr, "--yes") == 1
    err = capsys.readouterr().err
    assert f"node c ({c.addr}) with --cluster-name x" in err, err
    assert f"The cluster secret of node a ({a.addr}) differs from that of node b ({b.addr})" in err
    assert f"Node a ({a.addr}) has a cluster secret (--secret-file) and node c ({c.addr}) has none" in err
    assert fake.changes == []


def test_bus_problems_accept_a_rotation_and_name_each_difference() -> None:
    bp = admin.bus_problems
    # a rotation: each dials with its first key, which the other holds
    assert bp(_node("d", keys=("k2", "k1")), [_node("a", keys=("k1", "k2"))]) == []
    assert bp(_node("d", keys=("k2",)), [_node("a", keys=("k1", "k2"))]) != []
    assert bp(_node("d"), [_node("a")]) == []
    (p,) = bp(_node("d", name="x"), [_node("a")])
    assert "runs with --cluster-name x, node a" in p and "with no --cluster-name" in p
    assert p.endswith("start it without --cluster-name.")
    (p,) = bp(_node("d"), [_node("a", keys=("k1",))])
    assert p.startswith("Node a (127.0.0.1:7097) has a cluster secret (--secret-file) and node d")
    assert bp(_node("d", data_dir=None), [NodeState(id="a", addr="x", info={"id": "a"})]) == []  # older node


# --- add-node ---------------------------------------------------------------------------------------


def test_add_node_says_new_and_existing_are_the_same_node(monkeypatch: Any, capsys: Any) -> None:
    a = _member("a")
    fake = FakeAdmin(_probes(a), _cluster(a, _member("b")))
    assert run(monkeypatch, fake, "add-node", a.addr, a.addr, "--yes") == 1
    err = capsys.readouterr().err
    assert f"NEW and EXISTING are the same node, a ({a.addr})" in err
    assert "already has a member" not in err
    assert fake.changes == []


def test_add_node_of_a_member_of_this_cluster_has_nothing_to_do(monkeypatch: Any, capsys: Any) -> None:
    a, b = _member("a"), _member("b")
    b.info["keys"] = 20  # type: ignore[index]
    fake = FakeAdmin(_probes(b), _cluster(a, b))
    assert run(monkeypatch, fake, "add-node", b.addr, a.addr, "--yes") == 0
    out, err = capsys.readouterr()
    assert f"Node b ({b.addr}) is already a member of the cluster of a ({a.addr}). Nothing to do." in out
    assert "only an empty node" not in err
    assert fake.changes == []


def test_add_node_refuses_a_secret_that_differs_before_the_meet(monkeypatch: Any, capsys: Any) -> None:
    a, b = _member("a", keys=("k1",)), _member("b", keys=("k1",))
    d = _node("d", keys=("k2",))
    fake = FakeAdmin(_probes(d), _cluster(a, b))
    assert run(monkeypatch, fake, "add-node", d.addr, a.addr, "--yes") == 1
    assert f"The cluster secret of node d ({d.addr}) differs from that of node a ({a.addr})" in capsys.readouterr().err
    assert fake.changes == []


def test_add_node_reuses_the_id_of_a_member_that_left_without_slots_only(monkeypatch: Any, capsys: Any) -> None:
    a, b = _member("a", ("a", "b", "c")), _member("b", ("a", "b", "c"))
    gone = _node("c", state="left")
    gone.info = None
    c = _node("c", port=7200)  # fresh, empty, same id
    fake = FakeAdmin(_probes(c), _cluster(a, b, gone, runs=[(0, 8191, "a", 2), (8192, 16383, "b", 3)]))
    assert run(monkeypatch, fake, "add-node", c.addr, a.addr, "--yes") == 0
    assert fake.changes == [("add_node", "c")]
    capsys.readouterr()
    # it left owning slots (a forced leave; a replicated group's member): the map would give them
    # to the new node, which does not claim them
    fake = FakeAdmin(_probes(c), _cluster(a, b, gone, runs=[(0, 8191, "a", 2), (8192, 16383, "c", 3)]))
    assert run(monkeypatch, fake, "add-node", c.addr, a.addr, "--yes") == 1
    err = capsys.readouterr().err
    assert "A member called c left the cluster owning 8192 slots" in err and "another --id" in err
    assert fake.changes == []


def test_add_node_to_a_group_refuses_before_the_meet(monkeypatch: Any, capsys: Any) -> None:
    ids = ("a", "b", "c")
    a = _member("a", ids, raft=_group(ids, role="leader"))
    b, c = _member("b", ids, raft=_group(ids)), _member("c", ids, raft=_group(ids))
    cluster = _cluster(a, b, c)
    d = _node("d", data_dir=False)
    fake = FakeAdmin(_probes(d), cluster)
    assert run(monkeypatch, fake, "add-node", d.addr, a.addr, "--yes") == 1
    assert f"Node d ({d.addr}) has no data directory" in capsys.readouterr().err
    assert fake.changes == []
    # no leader: the learner change would fail once d had met the cluster
    for n in (a, b, c):
        n.info["raft"] = _group(ids, leader=None)  # type: ignore[index]
    fake = FakeAdmin(_probes(_node("d")), cluster)
    assert run(monkeypatch, fake, "add-node", d.addr, a.addr, "--yes") == 1
    assert "no leader now" in capsys.readouterr().err
    assert fake.changes == []


# --- the admin token, asked of every node a command changes before the first change -------------------


def test_create_refuses_a_node_that_refuses_the_admin_token_before_any_change(
        monkeypatch: Any, capsys: Any) -> None:
    a, b, c = _node("a"), _node("b"), _node("c")
    fake = FakeAdmin(_probes(a, b, c), refuse={c.addr})
    assert run(monkeypatch, fake, "create", a.addr, b.addr, c.addr, "--yes") == 2  # a 401's status
    err = capsys.readouterr().err
    assert (f"Node c ({c.addr}) refuses this admin token (401 unauthorized), which a, b take: the nodes were "
            "started with different admin tokens (--admin-token-file)") in err, err
    assert "Refused to create the cluster; nothing was changed." in err
    assert fake.checked == [a.addr, b.addr, c.addr] and fake.changes == []
    # no token given, and every node needs one: each is named, with how to give it
    fake = FakeAdmin(_probes(a, b, c), refuse={a.addr, b.addr, c.addr}, token_given=False)
    assert run(monkeypatch, fake, "create", a.addr, b.addr, c.addr, "--replicas", "3", "--yes") == 2
    err = capsys.readouterr().err
    for n in (a, b, c):
        assert (f"Node {n.id} ({n.addr}) requires the admin token (401 unauthorized) and none was given: give it "
                "with STORELAB_ADMIN_TOKEN=TOKEN or --token-file FILE") in err, err
    assert fake.changes == []
    # a token no node takes: it is not theirs
    fake = FakeAdmin(_probes(a, b), refuse={a.addr, b.addr})
    assert run(monkeypatch, fake, "create", a.addr, b.addr, "--yes") == 2
    assert (f"Node a ({a.addr}) refuses this admin token (401 unauthorized): it is not the token the node was "
            "started with (--admin-token-file)") in capsys.readouterr().err
    assert fake.changes == []


def test_add_node_refuses_when_new_or_a_member_refuses_the_admin_token_before_the_meet(
        monkeypatch: Any, capsys: Any) -> None:
    a, b = _member("a"), _member("b")
    d = _node("d")
    # the command holds NEW's token, which the cluster's members refuse: NEW would have met them
    fake = FakeAdmin(_probes(d), _cluster(a, b), refuse={a.addr, b.addr})
    assert run(monkeypatch, fake, "add-node", d.addr, a.addr, "--yes") == 2
    err = capsys.readouterr().err
    assert f"Node a ({a.addr}) refuses this admin token (401 unauthorized), which d takes" in err, err
    assert f"Node b ({b.addr}) refuses this admin token" in err
    assert "Refused to add the node; nothing was changed." in err
    assert fake.changes == []
    # the cluster's token, which NEW refuses
    fake = FakeAdmin(_probes(d), _cluster(a, b), refuse={d.addr})
    assert run(monkeypatch, fake, "add-node", d.addr, a.addr, "--yes") == 2
    assert f"Node d ({d.addr}) refuses this admin token (401 unauthorized), which a, b take" in (
        capsys.readouterr().err)
    assert fake.changes == []
    # every one takes it: the node is added
    fake = FakeAdmin(_probes(d), _cluster(a, b))
    assert run(monkeypatch, fake, "add-node", d.addr, a.addr, "--yes") == 0
    assert fake.checked == [d.addr, a.addr, b.addr] and fake.changes == [("add_node", "d")]


def test_remove_node_asks_the_token_of_the_nodes_it_changes_first(monkeypatch: Any, capsys: Any) -> None:
    ids = ("a", "b", "c")
    a, b, c = (_member(i, ids) for i in ids)
    runs = [(0, 5460, "a", 1), (5461, 10922, "b", 2), (10923, 16383, "c", 3)]
    fake = FakeAdmin({}, _cluster(a, b, c, runs=runs), refuse={b.addr})
    monkeypatch.setattr(FakeAdmin, "plan_rebalance", staticmethod(Admin.plan_rebalance), raising=False)
    assert run(monkeypatch, fake, "remove-node", a.addr, "c", "--yes") == 2
    err = capsys.readouterr().err
    assert "Refused to remove the node: a node refuses this admin token; nothing was changed." in err, err
    assert f"Node b ({b.addr}) refuses this admin token (401 unauthorized), which a, c take" in err
    assert fake.changes == []
    # a replicated group's leader is removed: the leader, its heir and the node are asked first,
    # and the other live voters, which then claim its slots' hints
    a, b, c = (_member(i, ids, raft=_group(ids, role="leader" if i == "a" else "follower")) for i in ids)
    fake = FakeAdmin({}, _cluster(a, b, c), refuse={b.addr})
    assert run(monkeypatch, fake, "remove-node", a.addr, "a", "--yes") == 2
    assert f"Node b ({b.addr}) refuses this admin token" in capsys.readouterr().err
    assert sorted(fake.checked) == [a.addr, b.addr, c.addr] and fake.changes == []


@pytest.mark.parametrize("argv", [["rebalance", "--weight", "c=2"], ["reshard", "--slots", "100", "--to", "c"]])
def test_slot_moves_ask_the_token_of_their_sources_and_targets_first(
        monkeypatch: Any, capsys: Any, argv: list[str]) -> None:
    ids = ("a", "b", "c", "d")
    nodes = [_member(i, ids) for i in ids]
    runs = [(0, 8191, "a", 1), (8192, 16383, "b", 2)]  # c gets its share; d owns none, takes no part
    monkeypatch.setattr(FakeAdmin, "plan_rebalance", staticmethod(Admin.plan_rebalance), raising=False)
    monkeypatch.setattr(FakeAdmin, "plan_reshard", staticmethod(Admin.plan_reshard), raising=False)
    fake = FakeAdmin({}, _cluster(*nodes, runs=runs), refuse={nodes[2].addr, nodes[3].addr})
    assert run(monkeypatch, fake, argv[0], nodes[0].addr, *argv[1:], "--yes") == 2
    err = capsys.readouterr().err
    assert f"Refused to {argv[0]}: a node refuses this admin token; nothing was changed." in err, err
    assert f"Node c ({nodes[2].addr}) refuses this admin token (401 unauthorized), which a, b take" in err
    assert "Node d" not in err  # not changed by these moves: not asked
    assert sorted(fake.checked) == [n.addr for n in nodes[:3]] and fake.changes == []


def test_fix_asks_the_token_of_the_nodes_its_plan_changes(monkeypatch: Any, capsys: Any) -> None:
    from kvcore.rebalance import Move
    from kvcore.slotmove import FixPlan

    ids = ("a", "b", "c", "d")
    nodes = [_member(i, ids) for i in ids]
    plan = FixPlan(resume=[Move("a", "b", ((0, 9),))], clear=[("c", [1])])
    assert [n.id for n in admin.fix_nodes(_cluster(*nodes), plan)] == ["a", "b", "c"]
    assert admin.fix_nodes(_cluster(*nodes), FixPlan(converge=[("a", [1], ["d"])])) == []
    assert [n.id for n in admin.fix_nodes(_cluster(*nodes), FixPlan(adopt=[("d", [3])]))] == ["d"]  # it finishes
    fake = FakeAdmin({}, _cluster(*nodes), refuse={nodes[2].addr, nodes[3].addr})
    monkeypatch.setattr(FakeAdmin, "plan_fix", lambda self, cluster, assign=False: plan, raising=False)
    assert run(monkeypatch, fake, "fix", nodes[0].addr, "--yes") == 2
    err = capsys.readouterr().err
    assert "Refused to fix: a node refuses this admin token; nothing was changed." in err, err
    assert f"Node c ({nodes[2].addr}) refuses this admin token" in err and "Node d" not in err
    assert fake.changes == []


def _tr(malformed: dict[str, int] | None = None, failed: dict[str, int] | None = None,
        links: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"frames_malformed": malformed or {}, "handshakes_failed": failed or {}, "links": links or {}}


@pytest.mark.parametrize(("reason", "says"), [
    ("unknown_key", "their cluster secrets differ"),
    ("bad_proof", "their cluster secrets differ"),
    ("secret_unexpected", "d has a cluster secret (--secret-file) and a has none"),
    ("no_secret", "a has a cluster secret (--secret-file) and d has none"),
    ("cluster_mismatch", "their cluster names differ"),
])
def test_join_trouble_names_why_the_entry_refuses_the_new_node(reason: str, says: str) -> None:
    a, d = _node("a"), _node("d")
    before = {"a": _tr({reason: 5}), "d": _tr()}
    assert join_trouble(d, a, before, {"a": _tr({reason: 6}), "d": _tr()}) == ""  # one may be anyone's
    why = join_trouble(d, a, before, {"a": _tr({reason: 7}), "d": _tr()})
    assert why.startswith(f"a refused 2 of d's connections since add-node began ({reason}): ") and says in why


def test_join_trouble_names_a_peer_address_that_cannot_be_reached() -> None:
    a, d = _node("a"), _node("d")
    link = {"addr": d.peer_addr, "state": "backoff", "failures": 3, "last_error": "Connection refused"}
    why = join_trouble(d, a, {}, {"a": _tr(links={"d": link}), "d": _tr()})
    assert why.startswith(f"a cannot connect to d's peer address {d.peer_addr} (3 attempts: connection refused)")
    # the other way: d cannot reach the entry's peer address (its seed link)
    why = join_trouble(d, a, {}, {"a": _tr(), "d": _tr(links={"@" + a.peer_addr: {**link, "addr": a.peer_addr}})})
    assert why.startswith(f"d cannot connect to a's peer address {a.peer_addr}")
    assert join_trouble(d, a, {}, {"a": _tr(links={"d": {**link, "failures": 2}}), "d": _tr()}) == ""
    # refused handshakes seen only from d's side
    why = join_trouble(d, a, {}, {"a": _tr(), "d": _tr(failed={"refused_by_peer": 2})})
    assert "refused 2 of d's connection handshakes" in why


# --- nothing to do: exit 0 --------------------------------------------------------------------------


def test_remove_node_of_a_node_that_left_has_nothing_to_do(monkeypatch: Any, capsys: Any) -> None:
    a, b = _member("a"), _member("b")
    gone = NodeState(id="c", addr="127.0.0.1:7099", state="left")
    fake = FakeAdmin({}, _cluster(a, b, gone, runs=[(0, 8191, "a", 2), (8192, 16383, "b", 3)]))
    assert run(monkeypatch, fake, "remove-node", a.addr, "c", "--yes") == 0
    assert "Node c (127.0.0.1:7099) has left the cluster already. Nothing to do." in capsys.readouterr().out
    assert fake.changes == []
    ids = ("a", "b")
    a, b = _member("a", raft=_group(ids, role="leader")), _member("b", raft=_group(ids))
    fake = FakeAdmin({}, _cluster(a, b, gone, runs=[(0, 8191, "a", 2), (8192, 16383, "b", 3)]))
    assert run(monkeypatch, fake, "remove-node", a.addr, "c", "--yes") == 0
    assert "has left the cluster. Nothing to do." in capsys.readouterr().out
    assert fake.changes == []
    # ...unless the map still names it (an earlier remove-node stopped before the voters took its
    # slots' hints): the voters claim them now, their token asked first
    runs = [(0, 5460, "a", 2), (5461, 10922, "b", 3), (10923, 16383, "c", 4)]
    fake = FakeAdmin({}, _cluster(a, b, gone, runs=runs), refuse={b.addr})
    assert run(monkeypatch, fake, "remove-node", a.addr, "c", "--yes") == 2
    assert f"Node b ({b.addr}) refuses this admin token" in capsys.readouterr().err
    assert fake.changes == []
    fake = FakeAdmin({}, _cluster(a, b, gone, runs=runs))
    assert run(monkeypatch, fake, "remove-node", a.addr, "c", "--yes") == 0
    out = capsys.readouterr().out
    assert "is no longer in the group's configuration and has left the cluster, but the slot map's hints" in out
    assert "a claimed 2731 slots (2731 from c); b claimed 2730 slots (2730 from c)." in out, out
    from kvcore.slotmove import Hints

    assert fake.changes == [("drive", Hints(("a", "b")))]


# --- verify during a quorum loss ----------------------------------------------------------------------


def test_verify_without_a_leader_names_the_voters_that_did_not_answer() -> None:
    ids = ("a", "b", "c", "d")
    a, b = _member("a", ids, raft=_group(ids, leader=None)), _member("b", ids, raft=_group(ids, leader=None))
    c, d = NodeState(id="c", addr="x", state="dead"), NodeState(id="d", addr="y", state="suspect")
    problems = replicacli.group_problems(_cluster(a, b, c, d))
    assert problems[0].startswith("The group has no leader")
    assert "Only 2 of 4 voters are alive and answering; a quorum needs 3." in problems
    assert "Voter c is dead." in problems and "Voter d is suspect." in problems


# --- create's wait watches the transport counters ---------------------------------------------------


class FakeHttpAdmin(admin.Admin):
    """The real :class:`realnet.admin.Admin` (its create and its wait), the nodes' HTTP answered
    in process: every node holds only itself alive, and a's link to c fails once more each time
    its counters are read (c advertises a peer address nobody listens at)."""

    def __init__(self, nodes: list[NodeState], refuse: str = "") -> None:
        super().__init__(converge_timeout=20.0)
        self.by_addr = {n.addr: n for n in nodes}
        self.peer_of = {n.id: n.peer_addr for n in nodes}
        self.refuse = refuse
        self.reads = 0
        self.changes: list[tuple[str, str]] = []

    def __enter__(self) -> FakeHttpAdmin:
        return self

    def probe(self, addr: str) -> NodeState:
        return self.by_addr[addr]

    def post(self, addr: str, path: str, body: Any = None, timeout: float | None = None) -> Any:
        self.changes.append((self.by_addr[addr].id, path))
        return {"epoch": 1}

    def get(self, addr: str, path: str) -> Any:
        nid = self.by_addr[addr].id
        if path == "/cluster/members":
            return [{"id": nid, "state": "alive"}]
        if path == "/cluster/slots":
            return {"slots": [], "unassigned": "0-16383"}
        assert path == "/cluster/info"
        self.reads += 1
        tries = self.reads // 3
        links = {}
        if nid == "a" and not self.refuse:
            links = {"c": {"addr": self.peer_of["c"], "state": "backoff", "failures": tries,
                           "last_error": "Connection refused"}}
        malformed = {self.refuse: tries} if nid == "a" and self.refuse else {}
        return {"id": nid, "transport": {"links": links, "frames_malformed": malformed, "handshakes_failed": {}}}


@pytest.mark.parametrize("replicas", ["1", "3"])
def test_create_stops_early_when_a_peer_address_cannot_be_reached(
        monkeypatch: Any, capsys: Any, replicas: str) -> None:
    """``create``'s wait (plain and replicated) watches the transport counters as ``add-node``'s
    does (an audit's gap: it waited its full 30 s) and stops (exit 2) with the cause."""
    a, b, c = _node("a"), _node("b"), _node("c")
    fake = FakeHttpAdmin([a, b, c])
    monkeypatch.setattr(clustercli, "Admin", lambda *args, **kw: fake)
    monkeypatch.setattr(admin.time, "sleep", lambda s: None)
    assert main(["cluster", "create", a.addr, b.addr, c.addr, "--replicas", replicas, "--yes"]) == 2
    err = capsys.readouterr().err
    assert (f"The nodes cannot become one cluster: a cannot connect to c's peer address {c.peer_addr} "
            "(3 attempts: connection refused); every node must reach it") in err, err
    assert f"storelab cluster verify {a.addr} tells when they agree" in err
    assert ("c", "/cluster/meet") in fake.changes
    assert all(path != "/cluster/replicate" for _, path in fake.changes)  # it stopped before the group


def test_create_stops_early_when_a_node_refuses_the_others_connections(monkeypatch: Any, capsys: Any) -> None:
    a, b = _node("a"), _node("b")
    fake = FakeHttpAdmin([a, b], refuse="cluster_mismatch")
    monkeypatch.setattr(clustercli, "Admin", lambda *args, **kw: fake)
    monkeypatch.setattr(admin.time, "sleep", lambda s: None)
    assert main(["cluster", "create", a.addr, b.addr, "--yes"]) == 2
    err = capsys.readouterr().err
    assert "a refused 2 of b's connections since create began (cluster_mismatch): their cluster names differ" in err


def test_a_member_that_lost_its_state_is_snapshotted_as_one_that_does_not_answer() -> None:
    """What kvcore.slotmove plans from leaves out a member that lost its state (it acts on
    nothing and never maps its own old claim: a hint mend waited for it until its time-out)."""
    from realnet.admin import Admin
    from realnet.clusterview import ClusterView, NodeState

    def member(nid: str, lost: bool) -> NodeState:
        n = NodeState(id=nid, addr=f"127.0.0.1:{nid}", state="alive")
        n.info = {"id": nid, "lost_state": {"from": "a", "term": 2} if lost else None}
        n.members, n.slots = [], {"slots": [{"start": 0, "end": 16383, "node": "a", "epoch": 1}]}
        return n

    view = ClusterView(member("a", False), {"a": member("a", False), "c": member("c", True)})
    with Admin(1.0) as adm:
        snap = adm.snapshot(view)
    assert snap.up("a") and not snap.up("c")
