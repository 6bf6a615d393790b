"""``remove-node`` of a dead member that nothing needs: the cluster forgets it (an audit's gap).

On a replicated cluster (``create --replicas 3`` on a, b, c), a node that met the cluster but
never joined the group (an ``add-node`` cut short) and was then killed stayed a dead member in
every view: ``verify`` named it ("is dead and is neither a voter nor a learner of the group") and
``remove-node`` refused it while it was dead (it could not be asked to leave). The same on an
unreplicated cluster for a dead member that owns no slots (``remove-node`` waited for a quiet
cluster, which a dead member never is). ``remove-node`` now makes every live member hold it left
on its behalf (``/cluster/forget``: a forced leave, serf's ``force-leave``, Redis's ``CLUSTER
FORGET``); ``verify`` is then clean, and started again the node rejoins (it refutes the leave),
after which ``remove-node`` makes it leave as any live member outside the group.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kvcore.slots import even_split
from realnet.admin import Admin

from .conftest import Launcher, NodeProc, poll
from .test_replicated import _post, leader, raft, start_group

pytestmark = pytest.mark.xdist_group("replicated")


def states(n: NodeProc) -> dict[str, str]:
    status, _, body = n.request("GET", "/cluster/members")
    assert status == 200
    return {m["id"]: m["state"] for m in json.loads(body)}


def held(nodes: list[NodeProc], nid: str, state: str) -> bool:
    return all(states(n).get(nid) == state for n in nodes)


def with_a_dead_x(launcher: Launcher, *ids: str) -> list[NodeProc]:
    """An unreplicated cluster of ``ids`` (slots split evenly) and a member x that owns no slots,
    killed and held dead by every other member."""
    nodes = [launcher.node(i) for i in ids]
    with Admin(10.0) as adm:
        adm.create([adm.probe(n.addr) for n in nodes], even_split(list(ids)))
        x = launcher.node("x")
        adm.add_node(adm.probe(x.addr), adm.discover(nodes[0].addr))
    x.kill()
    poll(lambda: held(nodes, "x", "dead"), timeout=30, what="every member to hold x dead")
    return nodes


def post(n: NodeProc, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    status, raw = _post(n, path, body)
    return status, json.loads(raw)


def test_remove_node_forgets_a_dead_member_outside_the_group_and_verify_is_clean(
        launcher: Launcher, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from realnet.cli import main

    nodes = start_group(launcher, tmp_path)
    lead = poll(lambda: leader(nodes), timeout=30, what="a leader")
    x = launcher.node("x", extra=["--data-dir", str(tmp_path / "data-x")])
    with Admin(10.0) as a:
        a.add_node(a.probe(x.addr), a.discover(lead.addr))  # an add-node cut short after the meet
    x.kill()
    poll(lambda: held(nodes, "x", "dead"), timeout=30, what="every member to hold x dead")
    assert main(["cluster", "verify", lead.addr]) == 1
    assert f"Node x ({x.addr}) is dead and is neither a voter nor a learner of the group." in capsys.readouterr().out

    # the node refuses to forget a live member (every other refusal of check_forget, a dead
    # voter or learner of its group among them: tests/kvcore/test_node_guards.py)
    live = next(n for n in nodes if n is not lead)
    status, body = post(lead, "/cluster/forget", {"node": live.id})
    assert status == 409 and "only a dead member is forgotten" in body["message"], body
    assert post(lead, "/cluster/forget", {"node": "nobody"})[0] == 404

    assert main(["cluster", "remove-node", lead.addr, "x", "--yes"]) == 0, capsys.readouterr()
    out = capsys.readouterr().out
    assert "Node x is forgotten: every live member holds it left." in out, out
    assert held(nodes, "x", "left")
    assert main(["cluster", "verify", lead.addr]) == 0, capsys.readouterr()
    capsys.readouterr()
    # again: it has left, nothing to do
    assert main(["cluster", "remove-node", lead.addr, "x", "--yes"]) == 0
    assert "Nothing to do." in capsys.readouterr().out

    # started again, it refutes the leave and rejoins, outside the group; remove-node makes it leave
    x.restart()
    poll(lambda: held(nodes, "x", "alive"), timeout=30, what="x to rejoin")
    assert "x" not in (raft(lead) or {}).get("voters", [])
    assert main(["cluster", "remove-node", lead.addr, "x", "--yes"]) == 0, capsys.readouterr()
    assert x.wait(timeout=30) == 0
    poll(lambda: held(nodes, "x", "left"), timeout=30, what="x to leave")
    assert main(["cluster", "verify", lead.addr]) == 0, capsys.readouterr()


def test_remove_node_forgets_a_dead_member_that_owns_no_slots_and_refuses_one_that_owns_some(
        launcher: Launcher, capsys: pytest.CaptureFixture[str]) -> None:
    from realnet.cli import main

    a_, b_ = with_a_dead_x(launcher, "a", "b")
    assert main(["cluster", "verify", a_.addr]) == 1
    capsys.readouterr()
    assert main(["cluster", "remove-node", a_.addr, "x", "--yes"]) == 0, capsys.readouterr()
    assert "Node x is forgotten" in capsys.readouterr().out
    assert held([a_, b_], "x", "left")
    assert main(["cluster", "verify", a_.addr]) == 0, capsys.readouterr()
    capsys.readouterr()

    # a dead member that owns slots: only it holds their keys, so neither the node nor the CLI forgets it
    b_.kill()
    poll(lambda: states(a_).get("b") == "dead", timeout=30, what="a to hold b dead")
    status, body = post(a_, "/cluster/forget", {"node": "b"})
    assert status == 409 and "owns 8192 slots" in body["message"], body
    assert main(["cluster", "remove-node", a_.addr, "b", "--yes"]) == 1
    err = capsys.readouterr().err
    assert "Node b (" in err and "is dead and owns 8192 slots" in err, err
    assert states(a_)["b"] == "dead"


def test_remove_node_finishes_a_forget_cut_short(
        launcher: Launcher, capsys: pytest.CaptureFixture[str]) -> None:
    """A forget that reached one member only (the CLI stopped after its first POST): that member
    holds x left, the others dead (a member that holds it dead ignores the gossiped leave).
    ``remove-node`` through the member that holds it left said "Nothing to do"; it now finishes
    the forget on the others."""
    from realnet.cli import main

    a_, b_, c_ = with_a_dead_x(launcher, "a", "b", "c")
    status, body = post(a_, "/cluster/forget", {"node": "x"})
    assert status == 200 and body["changed"] is True, body
    assert states(a_)["x"] == "left" and states(b_)["x"] == "dead" and states(c_)["x"] == "dead"

    assert main(["cluster", "remove-node", a_.addr, "x", "--yes"]) == 0, capsys.readouterr()
    out = capsys.readouterr().out
    assert "Node x (" in out and "is left in a's view but dead in b, c's" in out, out
    assert "Node x is forgotten: every live member holds it left." in out, out
    assert held([a_, b_, c_], "x", "left")
    assert main(["cluster", "verify", a_.addr]) == 0, capsys.readouterr()


def test_remove_node_refuses_a_suspect_slot_owner_at_once(
        launcher: Launcher, capsys: pytest.CaptureFixture[str]) -> None:
    """An unreplicated member that is only suspect (its peers stopped hearing it; here a long
    suspicion keeps it so) and does not answer either is refused at once with what to do, instead
    of after the 30 s wait for a quiet cluster with the general sentence. (One that answers may be
    alive again in a moment, a pause: that waits for the quiet cluster, as before.)"""
    from realnet.cli import main

    swim = {"preset": "local", "probe_interval": 0.2, "probe_timeout": 0.1, "suspicion_mult": 2000}
    a_, b_ = launcher.node("a", swim=swim), launcher.node("b", swim=swim)
    with Admin(10.0) as adm:
        adm.create([adm.probe(a_.addr), adm.probe(b_.addr)], even_split(["a", "b"]))
    b_.kill()
    poll(lambda: states(a_).get("b") == "suspect", timeout=30, what="a to suspect b")
    assert main(["cluster", "remove-node", a_.addr, "b", "--yes"]) == 1
    err = capsys.readouterr().err
    assert "Node b (" in err and "is suspect and does not answer: its peers do not hear it. Only an alive node can be removed; " \
        "if it is down, start it again: its 8192 slots' keys are on its disk only" in err, err
    assert states(a_)["b"] == "suspect"


def test_add_node_under_the_id_of_a_dead_member_says_to_forget_it_first(
        launcher: Launcher, capsys: pytest.CaptureFixture[str]) -> None:
    from realnet.cli import main

    a_, b_ = with_a_dead_x(launcher, "a", "b")
    fresh = launcher.node("x")  # x started again without its data (another address)
    assert main(["cluster", "add-node", fresh.addr, a_.addr, "--yes"]) == 1
    err = capsys.readouterr().err
    assert "The cluster already has a member called x, dead in a's view. If the new node is x started " \
        f"again without its data, first make the cluster forget the dead member (storelab cluster " \
        f"remove-node {a_.addr} x), then run this command again" in err, err
    # the way out it names works
    assert main(["cluster", "remove-node", a_.addr, "x", "--yes"]) == 0, capsys.readouterr()
    capsys.readouterr()
    assert main(["cluster", "add-node", fresh.addr, a_.addr, "--yes"]) == 0, capsys.readouterr()
    poll(lambda: held([a_, b_], "x", "alive"), timeout=30, what="the new x to join")
    assert main(["cluster", "verify", a_.addr]) == 0, capsys.readouterr()
