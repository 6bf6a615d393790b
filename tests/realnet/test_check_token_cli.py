"""``storelab cluster create`` and ``add-node`` against real node processes started with different
admin tokens (``--admin-token-file``): every node the command would change is asked
``POST /cluster/check-token`` first, so a node that refuses the command's token stops it before
anything changed, with a sentence naming the node (it used to be found at the first 401, after
other nodes had changed: a half-made cluster, or a new node that joined a cluster whose token it
does not share). A node without an admin token takes any. Tokens per run; every wait polls."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.realnet.conftest import Launcher, NodeProc
from tests.realnet.test_cluster_cli import start
from tests.realnet.test_security import token_file
from tests.realnet.test_security_cluster import storelab

pytestmark = pytest.mark.realnet  # starts real node processes


def _untouched(n: NodeProc, epoch: int) -> None:
    """Still a fresh standalone node: every slot its own, no other member, its epoch."""
    info = n.info()
    assert (info["mode"], info["slots_owned"], info["members"]["alive"], info["joined"], info["epoch"]) == (
        "standalone", 16384, 1, True, epoch), (n.id, info)


def test_create_refuses_nodes_whose_admin_tokens_differ_before_any_change(launcher: Launcher, tmp_path: Path) -> None:
    _, one = token_file(tmp_path, "one.token")
    _, two = token_file(tmp_path, "two.token")
    a, b = start(launcher, ["a", "b"], extra=["--admin-token-file", str(one)])
    (c,) = start(launcher, ["c"], extra=["--admin-token-file", str(two)])
    (d,) = start(launcher, ["d"])  # no admin token: it takes any
    epochs = {n.id: n.info()["epoch"] for n in (a, b, c)}

    # a and b take the command's token, c does not: refused before a is assigned its range
    r = storelab("create", a.addr, b.addr, c.addr, "--yes", "--token-file", str(one))
    assert r.returncode == 2, r.stdout + r.stderr
    for n in (a, b, c):
        _untouched(n, epochs[n.id])
    assert (f"Node c ({c.addr}) refuses this admin token (401 unauthorized), which a, b take: the nodes were "
            "started with different admin tokens (--admin-token-file)") in r.stderr, r.stderr
    assert "Refused to create the cluster; nothing was changed." in r.stderr and "Traceback" not in r.stderr
    # no token at all: every node that needs one is named
    r = storelab("create", a.addr, b.addr, c.addr, "--yes")
    assert r.returncode == 2, r.stdout + r.stderr
    for n in (a, b, c):
        _untouched(n, epochs[n.id])
        assert f"Node {n.id} ({n.addr}) requires the admin token (401 unauthorized) and none was given" in r.stderr

    # a node without an admin token takes the others'
    r = storelab("create", a.addr, b.addr, d.addr, "--yes", "--token-file", str(one))
    assert r.returncode == 0, r.stdout + r.stderr


def test_add_node_refuses_a_new_node_whose_admin_token_differs_before_the_meet(
        launcher: Launcher, tmp_path: Path) -> None:
    _, one = token_file(tmp_path, "one.token")
    _, two = token_file(tmp_path, "two.token")
    a, b = start(launcher, ["a", "b"], extra=["--admin-token-file", str(one)])
    (c,) = start(launcher, ["c"], extra=["--admin-token-file", str(two)])
    (d,) = start(launcher, ["d"])  # no admin token: it takes any
    epoch = c.info()["epoch"]
    r = storelab("create", a.addr, b.addr, d.addr, "--yes", "--token-file", str(one))
    assert r.returncode == 0, r.stdout + r.stderr

    # with c's token, which the cluster's members refuse: only c is asked to change (meet), and
    # it would join a cluster whose token it does not share; refused, naming the members
    r = storelab("add-node", c.addr, a.addr, "--yes", "--token-file", str(two))
    assert r.returncode == 2, r.stdout + r.stderr
    _untouched(c, epoch)
    assert "c" not in a.members() and "c" not in d.members()
    for n in (a, b):
        assert f"Node {n.id} ({n.addr}) refuses this admin token (401 unauthorized), which c takes" in r.stderr
    assert f"Node d ({d.addr})" not in r.stderr  # (it needs no token)
    assert "Refused to add the node; nothing was changed." in r.stderr and "Traceback" not in r.stderr
    # with the cluster's token, which c refuses
    r = storelab("add-node", c.addr, a.addr, "--yes", "--token-file", str(one))
    assert r.returncode == 2, r.stdout + r.stderr
    _untouched(c, epoch)
    assert f"Node c ({c.addr}) refuses this admin token (401 unauthorized), which a, b take" in r.stderr, r.stderr
