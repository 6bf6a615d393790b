"""``storelab cluster ...`` driven as a subprocess against real node processes.

The issue's scenario first (create on 3 nodes, 1,000 keys, add-node a 4th, rebalance, verify,
remove-node one, verify, every key read back), then create's refusals, reshard with an open
migration that verify reports and fix repairs, automatic rebalancing, the admin endpoints' bad
input, and the commands' help and usage errors. Nodes are fresh standalone processes
(``python -m realnet.node --id X --port P --peer-port Q``) with the steady SWIM timings of
conftest; every wait is a poll against a deadline.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

from kvcore.config import ConfigError
from kvcore.rebalance import Move
from kvcore.slots import key_slot
from realnet import cli
from realnet.admin import Admin, ClusterView, NodeState, cluster_problems
from realnet.client import Client
from realnet.node import build_parser, load_settings
from tests.realnet.conftest import (
    REPO,
    START_DEADLINE,
    STEADY_SETTINGS,
    STEADY_SWIM,
    Launcher,
    NodeProc,
    free_ports,
    poll,
)

pytestmark = pytest.mark.realnet  # starts real node processes

CONVERGE = 30.0


def storelab(*args: str, stdin: bytes = b"", timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``storelab cluster ARGS`` as a subprocess; stdout and stderr as text."""
    r = subprocess.run(
        [sys.executable, "-m", "realnet.cli", "cluster", *args],
        check=False, input=stdin, capture_output=True, cwd=REPO, timeout=timeout,
    )
    return subprocess.CompletedProcess(r.args, r.returncode, r.stdout.decode(), r.stderr.decode())


def ok(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
    r = storelab(*args, stdin=stdin)
    assert r.returncode == 0, f"storelab cluster {' '.join(args)} -> {r.returncode}\n{r.stdout}\n{r.stderr}"
    assert "Traceback" not in r.stderr
    return r


def start(launcher: Launcher, ids: Sequence[str], extra: Sequence[str] = ()) -> list[NodeProc]:
    """Fresh standalone nodes, started together."""
    nodes = [launcher.node(i, settings=STEADY_SETTINGS, swim=STEADY_SWIM, extra=extra, wait=False)
             for i in ids]
    deadline = time.monotonic() + START_DEADLINE
    for n in nodes:
        assert n.wait_healthy(deadline), n.log_text()
    return nodes


def slots_owned(n: NodeProc) -> int:
    return int(n.info()["slots_owned"])


def post(n: NodeProc, path: str, body: Any, ctype: str | None = "application/json") -> tuple[int, Any]:
    """One admin request on a fresh connection; (status, decoded JSON body)."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn = http.client.HTTPConnection("127.0.0.1", n.port, timeout=30)
    try:
        conn.request("POST", path, body=raw, headers={"Content-Type": ctype} if ctype else {})
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    return resp.status, json.loads(data) if data else None


# --- the scenario ----------------------------------------------------------------------


def test_create_add_node_rebalance_remove_node_and_every_key_survives(launcher: Launcher) -> None:
    a, b, c, d = start(launcher, ["a", "b", "c", "d"])

    # create asks first (stdin answers y), prints the plan, then the agreed slot map
    r = ok("create", a.addr, b.addr, c.addr, stdin=b"y\n")
    assert "Create this cluster? [y/N]" in r.stdout
    assert "0-5460" in r.stdout and "5461-10922" in r.stdout and "10923-16383" in r.stdout
    assert r.stdout.splitlines()[-1].split() == ["10923", "16383", "c", c.addr, "4"]  # the map, c last
    assert [slots_owned(n) for n in (a, b, c)] == [5461, 5462, 5461]
    assert slots_owned(d) == 16384  # untouched: not part of it

    values = {f"key-{i}": f"value-{i}" for i in range(1000)}
    with Client(a.addr) as client:
        for k, v in values.items():
            client.set(k, v)
    assert sum(n.info()["keys"] for n in (a, b, c)) == 1000

    r = ok("add-node", d.addr, a.addr, "--yes")
    assert "owns no slots" in r.stdout
    assert slots_owned(d) == 0
    poll(lambda: all(n.states() == dict.fromkeys("abcd", "alive") for n in (a, b, c, d)),
         timeout=CONVERGE, what="every node to hold a, b, c, d alive")
    # a node with no slots serves every request by forwarding
    status, _, body = d.request("GET", "/kv/key-7")
    assert (status, body) == (200, b"value-7")

    t0 = time.monotonic()
    r = ok("rebalance", a.addr, "--use-empty", "--yes")
    took = time.monotonic() - t0
    print(f"rebalance 3 -> 4 nodes (4096 slots, 1,000 keys) through the CLI: {took:.2f}s")
    assert "4096 slots move in 3 moves" in r.stdout and "Moved 4096 slots" in r.stdout
    assert sorted(slots_owned(n) for n in (a, b, c, d)) == [4096, 4096, 4096, 4096]
    assert d.info()["keys"] > 0

    r = ok("verify", a.addr)
    assert r.stdout.splitlines()[-1].startswith("OK: all 16384 slots are covered")

    r = ok("remove-node", a.addr, "b", "--yes")
    assert "Node b left the cluster." in r.stdout
    assert b.wait(timeout=30) == 0  # the process exits cleanly after leaving
    assert sorted(slots_owned(n) for n in (a, c, d)) == [5461, 5461, 5462]

    r = ok("verify", d.addr)
    assert "3 members" in r.stdout and "OK:" in r.stdout

    with Client(c.addr) as client:
        got = {k: client.get(k) for k in values}
    assert got == {k: v.encode() for k, v in values.items()}
    assert sum(n.info()["keys"] for n in (a, c, d)) == 1000


# --- create and add-node refuse unfit nodes ---------------------------------------------------


def test_create_refuses_a_node_with_a_key_or_in_a_cluster_and_changes_nothing(launcher: Launcher) -> None:
    fresh, keyed, q, r_ = start(launcher, ["fresh", "keyed", "q", "r"])
    ok("create", q.addr, r_.addr, "--yes")
    assert keyed.request("PUT", "/kv/k", b"v")[0] == 204

    def unchanged() -> None:
        for n in (fresh, keyed):
            info = n.info()
            assert (info["mode"], info["slots_owned"], n.states()) == ("standalone", 16384, {n.id: "alive"})
        assert keyed.info()["keys"] == 1

    r = storelab("create", fresh.addr, keyed.addr, "--yes")
    assert r.returncode == 1, r
    assert f"Node keyed ({keyed.addr}) holds 1 key; only an empty node" in r.stderr
    assert "nothing was changed" in r.stderr and "Traceback" not in r.stderr
    unchanged()

    r = storelab("create", fresh.addr, q.addr, "--yes")
    assert r.returncode == 1, r
    assert f"Node q ({q.addr}) is already in a cluster: it knows 1 other member (r)." in r.stderr
    unchanged()

    dead = f"127.0.0.1:{free_ports(1)[0]}"
    r = storelab("create", fresh.addr, dead, "--yes")
    assert r.returncode == 2, r
    assert f"storelab: Cannot reach node {dead}: connection refused." in r.stderr
    unchanged()

    r = storelab("add-node", keyed.addr, q.addr, "--yes")
    assert r.returncode == 1 and "holds 1 key" in r.stderr, r
    # a member of this very cluster: nothing to do (exit 0), said as such
    r = storelab("add-node", r_.addr, q.addr, "--yes")
    assert r.returncode == 0 and "is already a member of the cluster of q" in r.stdout, r
    assert "Nothing to do." in r.stdout and "only an empty node" not in r.stderr, r
    unchanged()
    assert slots_owned(q) + slots_owned(r_) == 16384


# --- reshard, an open migration, verify and fix -----------------------------------------------


def test_reshard_then_an_open_migration_fails_verify_and_fix_finishes_it(launcher: Launcher) -> None:
    a, b, c = start(launcher, ["a", "b", "c"])
    ok("create", a.addr, b.addr, c.addr, "--yes")
    values = {f"r-{i}": f"v{i}" for i in range(300)}
    # and one slot (16345, among the 100 that move from c to a below) holding 6 values of 900 KiB:
    # a batch of all six would be over the 4 MiB peer frame; it must go in several
    big = {f"{{big131}}{i}": bytes([i]) * (900 * 1024) for i in range(6)}
    with Client(a.addr) as client:
        for k, v in values.items():
            client.set(k, v)
        for k, bv in big.items():
            client.set(k, bv)

    # declined at the prompt (the plan is shown first): nothing moves, exit 1
    r = storelab("reshard", a.addr, "--slots", "100", "--to", "a", "--from", "c", stdin=b"n\n")
    assert r.returncode == 1 and "Declined; nothing was changed." in r.stderr, r
    assert r.stdout.splitlines()[1:3] == ["FROM  TO  SLOTS        COUNT", "c     a   16284-16383    100"]
    assert slots_owned(a) == 5461
    r = ok("reshard", a.addr, "--slots", "100", "--to", "a", "--from", c.addr, "--yes")
    assert "Moved 100 slots in 1 move" in r.stdout
    assert (slots_owned(a), slots_owned(b), slots_owned(c)) == (5561, 5462, 5361)
    with Client(c.addr) as client:
        assert all(client.get(k) == bv for k, bv in big.items())
    assert a.info()["bytes"] > 6 * 900 * 1024
    # --from all (the default): each other owner gives in proportion to what it owns
    r = ok("reshard", a.addr, "--slots", "10", "--to", "b", "--yes")
    assert (slots_owned(a), slots_owned(b), slots_owned(c)) == (5556, 5472, 5356)

    # a reshard aborted midway, by hand: slot S of b, with keys, half moved to c
    slot = key_slot(b"{x1}")
    assert 5461 <= slot <= 10922  # b's
    tagged = [f"{{x1}}{i}" for i in range(5)]
    with Client(a.addr) as client:
        for k in tagged:
            client.set(k, k)
    assert post(c, "/cluster/import", {"slot": slot, "source": "b"})[0] == 200
    assert post(b, "/cluster/migrate", {"slot": slot, "target": "c"})[0] == 200
    assert post(b, "/cluster/move-keys", {"slot": slot, "count": 2}) == (
        200, {"slot": slot, "moved": 2, "error": ""})

    r = storelab("verify", a.addr)
    assert r.returncode == 1, r
    assert f"problem: Node b has an open migration: slot {slot} migrating to c." in r.stdout
    assert f"problem: Node c has an open migration: slot {slot} importing from b." in r.stdout
    assert r.stdout.splitlines()[-1] == "2 problems found."
    r = ok("info", a.addr)
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["ID", "ADDR", "STATE", "SLOTS", "KEYS", "EPOCH", "OPEN"]
    rows = {ln.split()[0]: ln.split() for ln in lines[1:4]}
    assert rows["b"][1:4] == [b.addr, "alive", "5472"] and rows["b"][6] == "1"
    assert rows["c"][6] == "1" and rows["a"][6] == "0"
    assert lines[4].startswith("3 nodes (3 alive), 311 keys, 16384 of 16384 slots assigned")
    assert lines[5].startswith(f"State, slots and epochs as a ({a.addr}) sees them")
    # every key still answers during the open migration (moved ones through ASK)
    with Client(a.addr) as client:
        assert [client.get(k) for k in tagged] == [k.encode() for k in tagged]

    r = ok("fix", a.addr, "--yes")
    assert f"resume moving slots {slot} (1) from b to c" in r.stdout
    assert "Fixed: no migration is open, and the slot map needs no mending." in r.stdout
    ok("verify", a.addr)
    assert (slots_owned(b), slots_owned(c)) == (5471, 5357)
    r = ok("fix", a.addr, "--yes")
    assert "No open migration to fix." in r.stdout

    with Client(b.addr) as client:
        assert {k: client.get(k) for k in values} == {k: v.encode() for k, v in values.items()}
        assert [client.get(k) for k in tagged] == [k.encode() for k in tagged]


# --- fix's powers beyond open migrations ---------------------------------------------------------


def test_fix_gives_unowned_slots_an_owner_only_with_assign_unowned(launcher: Launcher) -> None:
    a, b = start(launcher, ["a", "b"])
    # a cluster that leaves 16001-16383 without an owner
    assert post(a, "/cluster/assign", {"slots": "0-8000", "epoch": 2})[0] == 200
    assert post(b, "/cluster/meet", {"seeds": [a.peer_addr]})[0] == 200
    assert post(b, "/cluster/claim", {"slots": "8001-16000", "epoch": 3})[0] == 200
    poll(lambda: all(n.info()["slots_assigned"] == 16001 and n.states() == {"a": "alive", "b": "alive"}
                     for n in (a, b)), timeout=CONVERGE, what="a and b to agree on 16001 slots")
    r = storelab("verify", a.addr)
    assert r.returncode == 1 and "problem: 383 slots have no owner: 16001-16383." in r.stdout, r

    r = storelab("fix", a.addr, "--yes")
    assert r.returncode == 1, r
    assert ("383 slots (16001-16383) have no live owner that can come back; run fix with --assign-unowned "
            "to give them one.") in r.stderr
    assert "Nothing can be fixed now." in r.stdout

    r = ok("fix", a.addr, "--assign-unowned", "--yes")
    # the fewest slots first (b has 8000, a 8001), counting the ones just given: they spread evenly
    assert "assign the unowned slots" in r.stdout and "Fixed: no migration is open, and the slot map needs no mending." in r.stdout
    poll(lambda: storelab("verify", a.addr).returncode == 0, timeout=CONVERGE, interval=0.3,
         what="verify to pass after fix --assign-unowned")
    assert sorted((slots_owned(a), slots_owned(b))) == [8192, 8192]
    with Client(b.addr) as client:  # the slots serve now
        key = next(f"u{i}" for i in range(10_000) if key_slot(f"u{i}") > 16000)
        client.set(key, "v")
        assert client.get(key) == b"v"


def test_fix_rolls_back_a_migration_whose_target_left(launcher: Launcher) -> None:
    a, b, d = start(launcher, ["a", "b", "d"])
    ok("create", a.addr, b.addr, "--yes")
    ok("add-node", d.addr, a.addr, "--yes")  # owns no slot, so it may leave
    slot = key_slot(b"{rb}")
    owner = a if slot <= 8191 else b
    with Client(a.addr) as client:
        client.set("{rb}k", "v")
    assert post(d, "/cluster/import", {"slot": slot, "source": owner.id})[0] == 200
    assert post(owner, "/cluster/migrate", {"slot": slot, "target": "d"})[0] == 200
    # a rollback is only for a target that is gone
    status, got = post(owner, "/cluster/rollback", {"slot": slot})
    assert status == 409 and "only a migration whose target is gone" in got["message"], got
    assert post(d, "/cluster/leave", {}) == (202, {"id": "d", "status": "leaving", "drain": False})
    assert d.wait(timeout=30) == 0
    poll(lambda: all(n.states().get("d") == "left" for n in (a, b)), timeout=CONVERGE, what="d to be left")

    r = ok("fix", a.addr, "--yes")
    assert f"roll back the migration of slots {slot} on {owner.id} (its target is gone)" in r.stdout
    assert owner.info()["migrating"] == {}
    with Client(b.addr) as client:
        assert client.get("{rb}k") == b"v"  # the source kept the slot and its key


def test_fix_readopts_a_slot_two_nodes_claim_at_the_same_epoch(launcher: Launcher) -> None:
    a, b, c = start(launcher, ["a", "b", "c"])
    ok("create", a.addr, b.addr, c.addr, "--yes")
    # a and b both claim slot 100 at one epoch, before either hears the other: the epoch rule
    # keeps whichever claim a node heard first, so their maps never agree by themselves. A claim
    # goes to every live member at once, so the two are sent together (accepted both in some
    # nine tries of ten here); each try that loses the race is refused and the next epoch tried
    for epoch in range(10, 60):
        got: dict[str, int] = {}
        together = threading.Barrier(2)

        def claim(n: NodeProc, epoch: int = epoch, got: dict[str, int] = got,
                  together: threading.Barrier = together) -> None:
            together.wait(timeout=30)
            got[n.id] = post(n, "/cluster/claim", {"slots": [100], "epoch": epoch, "accept_loss": True})[0]

        threads = [threading.Thread(target=claim, args=(n,)) for n in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        if got == {"a": 200, "b": 200}:
            break
    else:
        pytest.fail("no two claims at one epoch were accepted")
    time.sleep(1.0)  # a few gossip rounds: they still disagree
    r = storelab("verify", c.addr)
    assert r.returncode == 1 and "slot map differs" in r.stdout, r
    assert "No open migration to fix." not in storelab("fix", a.addr, "--yes").stdout

    poll(lambda: storelab("verify", a.addr).returncode == 0, timeout=CONVERGE, interval=0.3,
         what="verify to pass after fix")
    owners = {n.id: {r["node"] for r in n.get_json("/cluster/slots")["slots"] if r["start"] <= 100 <= r["end"]}
              for n in (a, b, c)}
    assert owners == {"a": {"a"}, "b": {"a"}, "c": {"a"}}
    assert "No open migration to fix." in ok("fix", a.addr, "--yes").stdout


# --- automatic rebalancing ---------------------------------------------------------------------


def test_auto_rebalance_gives_a_joining_node_its_share_and_drains_a_leaving_one(launcher: Launcher) -> None:
    a, b, c = start(launcher, ["a", "b", "c"], extra=["--auto-rebalance"])
    ok("create", a.addr, b.addr, c.addr, "--yes")
    values = {f"auto-{i}": str(i) for i in range(300)}
    with Client(a.addr) as client:
        for k, v in values.items():
            client.set(k, v)
    (d,) = start(launcher, ["d"], extra=["--auto-rebalance"])
    t0 = time.monotonic()
    r = ok("add-node", d.addr, a.addr, "--yes")
    # it says where d's share comes from: a, the lowest id, runs the rebalancing (it said "it will own no slots ... rebalance gives it its share")
    assert "it joins owning no slots, and the automatic rebalancing of a gives it its share." in r.stdout, r.stdout
    assert "the members' automatic rebalancing (--auto-rebalance) moves its share of slots to it shortly" in r.stdout
    poll(lambda: 4095 <= slots_owned(d) <= 4097, timeout=CONVERGE, what="d to own about 4096 slots")
    print(f"the automatic rebalance gave d {slots_owned(d)} slots {time.monotonic() - t0:.2f}s after add-node")
    poll(lambda: storelab("verify", a.addr).returncode == 0, timeout=CONVERGE, interval=0.3,
         what="verify to pass after the automatic rebalance")
    assert sorted(slots_owned(n) for n in (a, b, c, d)) == [4096, 4096, 4096, 4096]
    assert "moved 4096 slots" in a.log_text()  # a has the lowest id: it led

    # a graceful leave (POST /cluster/leave) of a node with the option moves its slots away
    # first (a signal only stops a node since issue 9: this test used SIGTERM to leave before)
    assert post(c, "/cluster/leave", {}) == (202, {"id": "c", "status": "leaving", "drain": True})
    assert c.wait(timeout=60) == 0
    poll(lambda: storelab("verify", a.addr).returncode == 0, timeout=CONVERGE, interval=0.3,
         what="verify to pass after c left")
    assert sorted(slots_owned(n) for n in (a, b, d)) == [5461, 5461, 5462]
    with Client(a.addr) as client:
        assert {k: client.get(k) for k in values} == {k: v.encode() for k, v in values.items()}
    for n in (a, b, d):  # kill -9: a SIGTERM at teardown would drain each into the next
        n.kill()


def test_add_node_promises_the_automatic_rebalancing_only_where_it_will_run(launcher: Launcher) -> None:
    """The rebalancing is run by the alive member with the lowest id: a plain new node that sorts
    first gets no share from members that have the option (a review: add-node said their
    rebalancing would give it its share, and nothing moved)."""
    b, c = start(launcher, ["b", "c"], extra=["--auto-rebalance"])
    ok("create", b.addr, c.addr, "--yes")
    (a,) = start(launcher, ["a"])
    r = ok("add-node", a.addr, b.addr, "--yes")
    assert "it joins owning no slots." in r.stdout and "automatic rebalancing" not in r.stdout, r.stdout
    assert f"storelab cluster rebalance {b.addr} --use-empty gives it its share" in r.stdout, r.stdout
    for n in (b, c):  # kill -9: a SIGTERM at teardown would drain each into the next
        n.kill()


# --- the admin endpoints -------------------------------------------------------------------------


def test_admin_endpoints_answer_bad_input_with_sentences_and_leave_stops_the_node(launcher: Launcher) -> None:
    (n,) = start(launcher, ["solo"])
    cases: list[tuple[str, Any, str | None, int, str]] = [
        ("/cluster/import", {"slot": 1, "source": "x"}, None, 415, "unsupported_media_type"),
        ("/cluster/import", {"slot": 1, "source": "x"}, "text/plain", 415, "unsupported_media_type"),
        ("/cluster/import", b"{not json", "application/json", 400, "bad_request"),
        ("/cluster/import", [1, 2], "application/json", 400, "bad_request"),
        ("/cluster/import", {"source": "x"}, "application/json", 400, "bad_request"),
        ("/cluster/import", {"slot": "7", "source": "x"}, "application/json", 400, "bad_request"),
        ("/cluster/import", {"slot": True, "source": "x"}, "application/json", 400, "bad_request"),
        ("/cluster/import", {"slot": 16384, "source": "x"}, "application/json", 400, "bad_request"),
        ("/cluster/import", {"slot": 1, "source": "x"}, "application/json", 409, "conflict"),
        ("/cluster/migrate", {"slot": 1, "target": "nobody"}, "application/json", 409, "conflict"),
        ("/cluster/move-keys", {"slot": 1, "count": 0}, "application/json", 400, "bad_request"),
        ("/cluster/assign", {"slots": "5-1", "epoch": 9}, "application/json", 400, "bad_request"),
        ("/cluster/assign", {"slots": "0-16383", "epoch": 1}, "application/json", 409, "conflict"),
        ("/cluster/claim", {"slots": [1, 2], "epoch": 1}, "application/json", 409, "conflict"),
        ("/cluster/finish", {"slots": []}, "application/json", 400, "bad_request"),
        ("/cluster/meet", {"seeds": ["no-port"]}, "application/json", 400, "bad_request"),
        ("/cluster/meet", {"seeds": []}, "application/json", 400, "bad_request"),
        ("/cluster/leave", {"force": "yes"}, "application/json", 400, "bad_request"),
    ]
    for path, body, ctype, status, code in cases:
        got_status, got = post(n, path, body, ctype)
        assert (got_status, got["error"]) == (status, code), (path, body, got)
        assert got["message"].endswith(".") and got["message"][0].isupper(), got
    # the node's own guards answer with the node's sentences (the sim hears the same ones)
    for path, body, sentence in [
        ("/cluster/import", {"slot": 1, "source": "x"}, "Node solo knows no member 'x' to import from."),
        ("/cluster/import", {"slots": [1, 2], "source": "solo"}, "Node solo already owns slot 1."),
        ("/cluster/migrate", {"slot": 1, "target": "nobody"},
         "Node solo does not hold 'nobody' alive (unknown), so it cannot migrate slots to it."),
        ("/cluster/migrate", {"slot": 1, "target": "solo"}, "Node solo cannot migrate slots to itself."),
        ("/cluster/claim", {"slots": [1, 2], "epoch": 1},
         "Epoch 1 is not above epoch 1 that node solo holds for one of these slots, so the claim would not win."),
    ]:
        assert post(n, path, body) == (409, {"error": "conflict", "message": sentence}), (path, body)
    # a slot that is not migrating: an answer, not a hang
    assert post(n, "/cluster/move-keys", {"slots": [3, 4], "count": 5}) == (200, {
        "moved": 0, "failed": 2, "results": [
            {"slot": 3, "moved": 0, "error": "Slot 3 is not migrating from node solo."},
            {"slot": 4, "moved": 0, "error": "Slot 4 is not migrating from node solo."}]})
    assert post(n, "/cluster/abort", {"slots": "1-3"}) == (200, {"id": "solo", "slots": "1-3"})
    assert post(n, "/cluster/rollback", {"slots": "1-3"}) == (200, {"id": "solo", "slots": "1-3"})
    status, headers, _ = n.request("GET", "/cluster/meet")
    assert status == 405 and headers["allow"] == "POST"
    assert n.request("PUT", "/kv/k", b"v")[0] == 204
    assert n.get_json("/cluster/keyslots") == {"id": "solo", "slots": str(key_slot("k"))}
    status, got = post(n, "/cluster/meet", {"seeds": ["127.0.0.1:1"]})
    assert (status, got["error"]) == (409, "conflict") and "holds 1 keys" in got["message"]
    assert n.request("GET", "/health")[0] == 200  # none of it hurt the node

    # leave: 202, then the process stops as on SIGTERM, exit status 0
    assert post(n, "/cluster/leave", {}) == (202, {"id": "solo", "status": "leaving", "drain": False})
    assert n.wait(timeout=30) == 0


# --- help and usage -------------------------------------------------------------------------------

COMMANDS = ["create", "verify", "info", "members", "failover", "add-node", "reshard", "rebalance", "remove-node", "fix"]


def test_the_command_list_is_every_command() -> None:
    assert list(cli._CLUSTER_COMMANDS) == COMMANDS


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["cluster", command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: storelab cluster {command}")
    if command not in ("verify", "info", "members"):
        assert "--yes" in out


@pytest.mark.parametrize("argv", [
    ["cluster"],
    ["cluster", "nope"],
    ["cluster", "create"],
    ["cluster", "verify", "not-an-address"],
    ["cluster", "reshard", "127.0.0.1:7000", "--to", "a"],
    ["cluster", "reshard", "127.0.0.1:7000", "--slots", "0", "--to", "a"],
    ["cluster", "reshard", "127.0.0.1:7000", "--slots", "x", "--to", "a"],
    ["cluster", "rebalance", "127.0.0.1:7000", "--weight", "a"],
    ["cluster", "rebalance", "127.0.0.1:7000", "--weight", "a=-1"],
    ["cluster", "remove-node", "127.0.0.1:7000"],
    ["cluster", "info", "127.0.0.1:7000", "--timeout", "0"],
    ["cluster", "info", "127.0.0.1:7000", "--timeout", "-1"],
    ["cluster", "info", "127.0.0.1:7000", "--timeout", "nan"],
    ["cluster", "info", "127.0.0.1:7000", "--timeout", "inf"],
    ["cluster", "info", "127.0.0.1:7000", "--timeout", "1e300"],
    ["cluster", "verify", "127.0.0.1:7000", "--timeout", "3601"],
])
def test_bad_arguments_exit_2_with_usage(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "usage: storelab" in err and "Traceback" not in err


def test_an_unreachable_node_is_a_sentence_and_exit_2() -> None:
    dead = f"127.0.0.1:{free_ports(1)[0]}"
    for args in (["verify", dead], ["info", dead], ["fix", dead, "--yes"], ["rebalance", dead, "--yes"]):
        r = storelab(*args)
        assert r.returncode == 2, r
        assert r.stderr.startswith(f"storelab: Cannot reach node {dead}: ") and "Traceback" not in r.stderr


# --- fix and verify decide from what the nodes say (no process) ----------------------------------


def fake_cluster(owners: dict[str, str], states: dict[str, str],
                 marks: dict[str, tuple[dict[int, str], dict[int, str]]]) -> ClusterView:
    """A discovered cluster: ``owners`` "lo-hi" -> owner (epoch 2), member states, open marks."""
    runs = []
    for rng, owner in owners.items():
        lo, _, hi = rng.partition("-")
        runs.append({"start": int(lo), "end": int(hi or lo), "node": owner, "epoch": 2})
    runs.sort(key=lambda r: r["start"])
    members = [{"id": nid, "state": st} for nid, st in sorted(states.items())]
    nodes = {}
    for nid, st in sorted(states.items()):
        mig, imp = marks.get(nid, ({}, {}))
        info = {"id": nid, "keys": 0, "migrating": {str(k): v for k, v in mig.items()},
                "importing": {str(k): v for k, v in imp.items()}}
        alive = st == "alive"
        nodes[nid] = NodeState(nid, f"h:{ord(nid[0])}", state=st, info=info if alive else None,
                               slots={"slots": runs, "unassigned": ""} if alive else None,
                               members=members if alive else None, error="" if alive else "down")
    entry = next(n for n in nodes.values() if n.state == "alive")
    return ClusterView(entry, nodes)


def test_fix_resumes_clears_or_rolls_back_each_open_slot_by_who_owns_it_and_who_is_alive() -> None:
    c = fake_cluster(
        {"0-9": "a", "10": "a", "11": "c", "12": "a", "13": "d", "14": "e", "15-16383": "a"},
        {"a": "alive", "b": "alive", "c": "alive", "d": "dead", "e": "alive"},
        {"a": ({10: "b", 11: "c", 12: "gone", 14: "b"}, {}), "b": ({}, {10: "a", 13: "d", 14: "a"})},
    )
    plan = Admin().plan_fix(c)
    assert plan.resume == [Move("a", "b", ((10, 10),))]  # a owns it, both alive: finish the move
    assert plan.clear == [("a", [11, 14]), ("b", [14])]  # moved already (11), or owned by a third (14)
    assert plan.rollback == [("a", [12])]  # the target is gone: a keeps the slot
    assert plan.problems == [
        "Slot 13 is moving from d to b (owner: d), but d is dead; bring it back (or, for a target, "
        "wait until the cluster forgets it) and run fix again."]
    assert plan.describe()[0] == "resume moving slots 10 (1) from a to b, then let b claim them"


def test_verify_names_each_problem_in_a_sentence() -> None:
    healthy = fake_cluster({"0-8191": "a", "8192-16383": "b"}, {"a": "alive", "b": "alive"}, {})
    assert cluster_problems(healthy) == []
    c = fake_cluster({"0-8191": "a", "8192-16383": "b"}, {"a": "alive", "b": "alive", "x": "dead"},
                     {"b": ({8192: "a"}, {})})
    c.nodes["b"].slots = {"slots": [{"start": 0, "end": 16383, "node": "b", "epoch": 3}], "unassigned": ""}
    assert cluster_problems(c) == [
        "Node x (h:120) is dead in a's view.",
        "Node b's slot map differs from a's: 16384 slots differ; slot 0: b says b at epoch 3, a says a at epoch 2.",
        "Node b has an open migration: slot 8192 migrating to a.",
    ]


def test_auto_rebalance_is_a_cluster_option_or_a_flag(tmp_path: Any) -> None:
    f = tmp_path / "n.toml"
    f.write_text('[cluster]\nname = "lab"\nauto_rebalance = true\nauto_rebalance_settle = 0.5\n')
    s = load_settings(build_parser().parse_args(["--config", str(f)]))
    assert (s.cluster, s.cluster_name, s.auto_rebalance, s.auto_rebalance_settle) == (None, "lab", True, 0.5)
    assert load_settings(build_parser().parse_args(["--auto-rebalance"])).auto_rebalance is True
    assert load_settings(build_parser().parse_args([])).auto_rebalance is False
    f.write_text('[cluster]\nauto_rebalance = "yes"\nauto_rebalance_settle = -1\n')
    with pytest.raises(ConfigError) as e:
        load_settings(build_parser().parse_args(["--config", str(f)]))
    assert e.value.problems == ["Key 'auto_rebalance' in [cluster] must be true or false, not 'yes'.",
                                "[cluster]: auto_rebalance_settle must be a number of seconds >= 0, not -1."]


def test_verify_says_when_a_node_does_not_claim_the_slots_the_cluster_gives_it() -> None:
    # b restarted with an empty data directory: its own map names nobody for 8192-8200 and
    # itself at epoch 1 (a standalone start) for the rest, where a's map says b at epoch 2
    c = fake_cluster({"0-8191": "a", "8192-16383": "b"}, {"a": "alive", "b": "alive"}, {})
    c.nodes["b"].slots = {"slots": [{"start": 0, "end": 8191, "node": "a", "epoch": 2},
                                    {"start": 8201, "end": 16383, "node": "b", "epoch": 1}],
                          "unassigned": "8192-8200"}
    problems = cluster_problems(c)
    assert problems[1] == ("Node b does not claim 8192 slots (8192-16383) that a's map gives it: it restarted "
                           "without its cluster state (an empty or another data directory); fix lets it claim "
                           "them again.")
    plan = Admin().plan_fix(c)
    assert plan.reclaim == [("b", list(range(8192, 16384)))]
    assert plan.describe() == ["let b claim slots 8192-16383 (8192) again at a new epoch (the cluster gives "
                               "them to b, but b does not claim them: it restarted without its cluster state)"]


def test_fix_moves_a_slot_to_a_node_holding_keys_of_it_or_says_why_it_cannot() -> None:
    # b holds 2 keys of slot 100 (a's) and c 1 key of slot 9000 (d's, and d is dead): a finish
    # or claim made with accept_loss left them where no request reaches them
    c = fake_cluster({"0-8191": "a", "8192-16383": "d"}, {"a": "alive", "b": "alive", "c": "alive", "d": "dead"}, {})
    assert c.nodes["b"].info is not None and c.nodes["c"].info is not None
    c.nodes["b"].info["stray"] = {"slots": "100", "keys": 2}
    c.nodes["c"].info["stray"] = {"slots": "9000", "keys": 1}
    assert ("Node b holds 2 keys of slots it does not own (100): no request reaches them. storelab cluster "
            "fix moves those slots to it from their owner, with the owner's keys (fix --assign-unowned gives "
            "it the unowned ones).") in cluster_problems(c)
    plan = Admin().plan_fix(c)
    assert plan.regather == [Move("a", "b", ((100, 100),))] and not plan.empty()
    assert plan.describe() == ["move slots 100 (1) from a to b, which holds keys of them that no request "
                               "reaches (a's keys of them move along; where both hold a key, a's value is kept)"]
    assert ("Node c holds keys of slot 9000, which d owns, and no request reaches them; d is dead, so they "
            "cannot move now: bring d back and run fix again (it moves the slot to c).") in plan.problems


def test_a_source_that_dies_between_chunks_stops_the_move_with_a_problem_not_a_busy_loop(
        launcher: Launcher, tmp_path: Any) -> None:
    """An audit killed a move's source just before the CLI marked the next chunk migrating: the
    refused migrate planned take-backs, the driver looked again, and a source that is down shows
    no mark, so it planned them again, forever (a thousand aborts in 20 s). Now the take-back is
    followed by the Problem: the move ends with the refusal; the keys are all there once the
    source is back and fix has run."""
    import threading

    from realnet import admin as admin_mod

    nodes = [launcher.node(i, settings={**STEADY_SETTINGS, "durable": True}, swim=STEADY_SWIM,
                           extra=["--data-dir", str(tmp_path / f"data-{i}")]) for i in "abcd"]
    a, b, c, d = nodes
    ok("create", a.addr, b.addr, c.addr, "--yes")
    ok("add-node", d.addr, a.addr, "--yes")
    with Client(a.addr) as client:
        for i in range(300):
            client.set(f"dk{i}", f"v{i}")
    killed = threading.Event()
    original = admin_mod.Admin.post

    def post(self: Any, addr: str, path: str, body: Any = None, *args: Any, **kw: Any) -> Any:
        if path == "/cluster/migrate" and getattr(self, "_moved_once", False) and not killed.is_set():
            c.kill()  # the source dies just before the next chunk is marked migrating
            killed.set()
        if path == "/cluster/move-keys":
            self._moved_once = True
        return original(self, addr, path, body, *args, **kw)

    outcome: dict[str, Any] = {}

    def move() -> None:
        try:
            with admin_mod.Admin(10.0) as adm:
                adm.post = post.__get__(adm)  # type: ignore[method-assign]
                cluster = adm.discover(a.addr)
                # c's first 2,148 slots (create gave it 10923-16383): three chunks of marks
                adm.move_slots(cluster, admin_mod.Move("c", "d", ((10923, 13070),)), batch=5)
            outcome["result"] = "done"
        except admin_mod.AdminError as e:
            outcome["result"] = str(e)

    t = threading.Thread(target=move, daemon=True)
    t.start()
    t.join(timeout=90)
    assert not t.is_alive(), "the move never ended (busy loop)"
    assert killed.is_set() and outcome["result"] != "done", outcome
    # stopped by the refusal the driver saved (the migrate post to c), not by some time-out
    assert c.addr in outcome["result"] and "Timed out" not in outcome["result"], outcome
    c.restart()
    poll(lambda: storelab("fix", a.addr, "--yes").returncode == 0 and storelab("verify", a.addr).returncode == 0,
         timeout=CONVERGE, interval=1.0, what="fix to close the move and verify to pass")
    with Client(a.addr) as client:
        got = {i: client.get(f"dk{i}") for i in range(300)}
    wrong = {i: v for i, v in got.items() if v != f"v{i}".encode()}
    assert not wrong, (wrong, outcome, [storelab("verify", a.addr).stdout])


def test_fix_reads_key_slots_only_where_it_must(monkeypatch: Any) -> None:
    """A slot imported by two targets is settled by clearing marks only where no key lies, so fix
    reads every live node's key slots then (and with --assign-unowned); otherwise it asks nothing
    more. Here c holds keys of the slot: its mark stays, and fix says why."""
    asked: list[str] = []

    def get(self: Admin, addr: str, path: str, **_: Any) -> dict[str, Any]:
        asked.append(f"{addr}{path}")
        return {"slots": "10" if addr == c.nodes["c"].addr else ""}

    monkeypatch.setattr(Admin, "get", get)
    c = fake_cluster({"0-8191": "a", "8192-16383": "b"}, {"a": "alive", "b": "alive", "c": "alive"},
                     {"b": ({}, {10: "a"}), "c": ({}, {10: "a"})})
    plan = Admin().plan_fix(c)
    assert sorted(asked) == sorted(f"{n.addr}/cluster/keyslots" for n in c.nodes.values())
    assert plan.clear == [] and plan.problems[0] == (
        "Slot 10 is marked both a -> b and a -> c; it was left as it is (c holds keys of it: which move "
        "to keep is the operator's call).")
    asked.clear()
    single = fake_cluster({"0-8191": "a", "8192-16383": "b"}, {"a": "alive", "b": "alive"}, {"b": ({}, {10: "a"})})
    Admin().plan_fix(single)
    assert asked == []
