"""``POST /cluster/finish`` orphaned keys, and ``fix`` left the orphans where ``verify`` found them.

Two real-process scenarios from an audit. First the finish guard over HTTP, on durable nodes: a
finish of a slot the node does not import, or of an import whose keys never moved, is refused
409 with a sentence naming whose keys are at stake, and every key still answers; a finish after
``move-keys`` answered "0 moved" (the source's end batch reached the target) is accepted, as
``reshard`` and ``fix`` do it. Then ``fix`` on keys a node holds of a slot it does not own (an
import finished with ``accept_loss`` before its keys moved): ``verify`` names them, ``fix`` moves
the slot to their holder with the owner's keys, and every key answers again. Nodes are fresh
standalone processes on 127.0.0.1 made one cluster by ``storelab cluster create``; every wait is
a poll against a deadline.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from kvcore.slots import key_slot
from realnet.client import Client
from tests.realnet.conftest import START_DEADLINE, STEADY_SETTINGS, STEADY_SWIM, Launcher, NodeProc, poll
from tests.realnet.test_cluster_cli import ok, post, start, storelab

pytestmark = pytest.mark.realnet  # starts real node processes

CONVERGE = 30.0


def key_of(owner_half: int, prefix: str) -> str:
    """The first ``{prefix}-i`` whose slot is in the half (0: 0-8191, 1: 8192-16383) of the
    cluster ``create`` makes of two nodes."""
    return next(k for i in range(100_000) if (key_slot(k := f"{prefix}-{i}") >= 8192) == bool(owner_half))


def owner_in(n: NodeProc, slot: int) -> str | None:
    return next((r["node"] for r in n.get_json("/cluster/slots")["slots"] if r["start"] <= slot <= r["end"]), None)


def two_with_a_key(launcher: Launcher, tmp_path: Path, settings: dict[str, Any],
                   tag: str) -> tuple[NodeProc, NodeProc, str, int]:
    """m1 and m2 made one cluster (each with a data directory), and one key acknowledged in
    m2's half: the nodes, the key and its slot."""
    m1, m2 = (launcher.node(nid, settings=settings, swim=STEADY_SWIM, wait=False,
                            extra=["--data-dir", str(tmp_path / nid)]) for nid in ("m1", "m2"))
    deadline = time.monotonic() + START_DEADLINE
    assert m1.wait_healthy(deadline) and m2.wait_healthy(deadline)
    ok("create", m1.addr, m2.addr, "--yes")
    key = key_of(1, tag)  # in m2's half
    with Client(m1.addr) as client:
        client.set(key, "acknowledged")
    return m1, m2, key, key_slot(key)


def test_finish_refuses_to_orphan_the_owners_keys_and_accepts_once_they_moved(
    launcher: Launcher, tmp_path: Path
) -> None:
    m1, m2, key, slot = two_with_a_key(launcher, tmp_path, STEADY_SETTINGS, "orph")

    def intact() -> bool:
        with Client(m1.addr) as c1, Client(m2.addr) as c2:
            return c1.get(key) == b"acknowledged" and c2.get(key) == b"acknowledged"

    # 1. a slot m1 does not import: refused, nothing changed (the audit's first variant)
    status, got = post(m1, "/cluster/finish", {"slots": [slot]})
    assert status == 409 and got["error"] == "conflict", got
    assert got["message"].startswith(f"Node m1 is not importing slot {slot}, which is owned by m2 (alive)")
    assert "orphan the keys m2 holds of it" in got["message"] and "accept_loss" in got["message"]
    assert owner_in(m1, slot) == "m2" and intact()

    # 2. imported, but no key moved (the audit's second variant): refused, the import stays open
    assert post(m1, "/cluster/import", {"slot": slot, "source": "m2"})[0] == 200
    status, got = post(m1, "/cluster/finish", {"slots": [slot]})
    assert status == 409, got
    assert f"imports slot {slot} from m2 (alive), which has not told it" in got["message"]
    assert m1.info()["importing"] == {str(slot): "m2"} and owner_in(m1, slot) == "m2" and intact()

    # 3. migrating and one batch moved: still refused until move-keys answers 0 moved
    assert post(m2, "/cluster/migrate", {"slot": slot, "target": "m1"})[0] == 200
    assert post(m2, "/cluster/move-keys", {"slot": slot, "count": 100}) == (
        200, {"slot": slot, "moved": 1, "error": ""})
    assert post(m1, "/cluster/finish", {"slots": [slot]})[0] == 409
    assert post(m2, "/cluster/move-keys", {"slot": slot, "count": 100}) == (
        200, {"slot": slot, "moved": 0, "error": ""})
    status, got = post(m1, "/cluster/finish", {"slots": [slot]})
    assert status == 200 and got["id"] == "m1" and got["slots"] == str(slot), got
    poll(lambda: owner_in(m2, slot) == "m1" and not m2.info()["migrating"], timeout=CONVERGE,
         what="m2 to hear m1's claim")
    assert intact()
    poll(lambda: storelab("verify", m1.addr).returncode == 0, timeout=CONVERGE, interval=0.3,
         what="verify to pass after the finished move")


def test_fix_moves_a_slot_to_the_node_holding_its_orphaned_keys_and_every_key_answers(
    launcher: Launcher,
) -> None:
    m1, m2 = start(launcher, ["m1", "m2"])
    ok("create", m1.addr, m2.addr, "--yes")
    stranded = key_of(1, "s")  # in m2's half: m2 keeps it, m1 takes the slot without it
    slot = key_slot(stranded)
    with Client(m1.addr) as client:
        client.set(stranded, "old")

    # an import finished before its keys moved, the loss accepted: m2's key is orphaned
    assert post(m1, "/cluster/import", {"slot": slot, "source": "m2"})[0] == 200
    status, got = post(m1, "/cluster/finish", {"slots": [slot], "accept_loss": True})
    assert status == 200, got
    poll(lambda: owner_in(m2, slot) == "m1", timeout=CONVERGE, what="m2 to hear m1's claim")
    with Client(m1.addr) as client:
        assert client.get(stranded) is None
        # a key of the same slot written since lives on m1, the new owner
        fresh = next(k for i in range(100_000) if key_slot(k := f"{{{stranded}}}-{i}") == slot)
        client.set(fresh, "new")
    assert m2.info()["stray"] == {"slots": str(slot), "keys": 1}

    r = storelab("verify", m1.addr)
    assert r.returncode == 1, r
    assert f"problem: Node m2 holds 1 key of slots it does not own ({slot}): no request reaches them." in r.stdout

    # declined at the prompt: the plan names the move, nothing changes
    r = storelab("fix", m1.addr, stdin=b"n\n")
    assert r.returncode == 1 and "Declined; nothing was changed." in r.stderr, r
    assert f"move slots {slot} (1) from m1 to m2, which holds keys of them that no request reaches" in r.stdout
    assert m2.info()["stray"]["keys"] == 1

    r = ok("fix", m1.addr, "--yes")
    assert "Fixed: no migration is open, and the slot map needs no mending." in r.stdout, r.stdout
    poll(lambda: storelab("verify", m1.addr).returncode == 0, timeout=CONVERGE, interval=0.3,
         what="verify to pass after fix")
    assert owner_in(m1, slot) == "m2" and m2.info()["stray"]["keys"] == 0
    for n in (m1, m2):
        with Client(n.addr) as client:
            assert client.get(stranded) == b"old" and client.get(fresh) == b"new"
    r = ok("fix", m1.addr, "--yes")
    assert "No open migration to fix. The slot map needs no mending." in r.stdout


def test_finish_after_the_importer_restarted_between_the_end_batch_and_the_finish(
    launcher: Launcher, tmp_path: Path
) -> None:
    """The end batch's receipt is kept with the import mark on a durable node: the importer
    restarted (SIGTERM, same data directory) after ``move-keys`` answered 0 moved may still
    finish (it was refused: the receipt lived in memory only, and only ``fix`` resent it)."""
    m1, m2, key, slot = two_with_a_key(launcher, tmp_path, {**STEADY_SETTINGS, "durable": True}, "rst")
    assert post(m1, "/cluster/import", {"slot": slot, "source": "m2"})[0] == 200
    assert post(m2, "/cluster/migrate", {"slot": slot, "target": "m1"})[0] == 200
    assert post(m2, "/cluster/move-keys", {"slot": slot, "count": 100}) == (
        200, {"slot": slot, "moved": 1, "error": ""})
    assert post(m2, "/cluster/move-keys", {"slot": slot, "count": 100}) == (
        200, {"slot": slot, "moved": 0, "error": ""})

    m1.stop()  # SIGTERM: a clean stop, not a leave
    m1.restart()
    assert m1.info()["importing"] == {str(slot): "m2"}
    status, got = post(m1, "/cluster/finish", {"slots": [slot]})
    assert status == 200 and got["slots"] == str(slot), got
    poll(lambda: owner_in(m2, slot) == "m1" and not m2.info()["migrating"], timeout=CONVERGE,
         what="m2 to hear m1's claim")
    poll(lambda: not m1.info()["syncing"], timeout=CONVERGE, what="the restarted m1 to sync")
    for n in (m1, m2):
        with Client(n.addr) as client:
            assert client.get(key) == b"acknowledged"
    poll(lambda: storelab("verify", m1.addr).returncode == 0, timeout=CONVERGE, interval=0.3,
         what="verify to pass after the finished move")


def test_fix_settles_a_slot_imported_by_two_targets_without_losing_a_key(launcher: Launcher, tmp_path: Path) -> None:
    """Each node's guard checks only itself, so two nodes may both import one slot from its owner
    (two operators, or a script, through the API). fix used to report it and stop for good; now,
    the source up and migrating it nowhere, nothing moved: both marks are cleared (fix read every
    node's key slots first: it never clears a mark under which keys lie), and the key stays."""
    from tests.realnet.test_restarts import three

    a, b, c = three(launcher, tmp_path, dict(STEADY_SETTINGS))
    key = next(f"dup-{i}" for i in range(100_000) if owner_in(a, key_slot(f"dup-{i}")) == "a")
    slot = key_slot(key)
    with Client(a.addr) as client:
        client.set(key, "kept")
    for n in (b, c):
        status, got = post(n, "/cluster/import", {"slot": slot, "source": "a"})
        assert status == 200, got
    r = storelab("fix", a.addr, "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"clear leftover marks of slots {slot} on b" in r.stdout and "on c" in r.stdout, r.stdout
    assert b.info()["importing"] == {} and c.info()["importing"] == {}
    with Client(b.addr) as client:
        assert client.get(key) == b"kept"
    poll(lambda: storelab("verify", a.addr).returncode == 0, timeout=30, interval=0.5, what="verify to be clean")
