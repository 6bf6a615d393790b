"""``POST /cluster/finish`` orphaned keys: the finish guard over HTTP, as an audit found it.

On durable nodes: a finish of a slot the node does not import, or of an import whose keys never
moved, is refused 409 with a sentence naming whose keys are at stake, and every key still
answers; a finish after ``move-keys`` answered "0 moved" (the source's end batch reached the
target) is accepted, as ``reshard`` and ``fix`` do it. Nodes are fresh standalone processes on
127.0.0.1 made one cluster by ``storelab cluster create``; every wait is a poll against a
deadline.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from kvcore.slots import key_slot
from realnet.client import Client
from tests.realnet.conftest import START_DEADLINE, STEADY_SETTINGS, STEADY_SWIM, Launcher, NodeProc, poll
from tests.realnet.test_cluster_cli import ok, post, storelab

pytestmark = pytest.mark.realnet  # starts real node processes

CONVERGE = 30.0


def key_of(owner_half: int, prefix: str) -> str:
    """The first ``{prefix}-i`` whose slot is in the half (0: 0-8191, 1: 8192-16383) of the
    cluster ``create`` makes of two nodes."""
    return next(k for i in range(100_000) if (key_slot(k := f"{prefix}-{i}") >= 8192) == bool(owner_half))


def owner_in(n: NodeProc, slot: int) -> str | None:
    return next((r["node"] for r in n.get_json("/cluster/slots")["slots"] if r["start"] <= slot <= r["end"]), None)


def test_finish_refuses_to_orphan_the_owners_keys_and_accepts_once_they_moved(
    launcher: Launcher, tmp_path: Path
) -> None:
    m1, m2 = (launcher.node(nid, settings=STEADY_SETTINGS, swim=STEADY_SWIM, wait=False,
                            extra=["--data-dir", str(tmp_path / nid)]) for nid in ("m1", "m2"))
    deadline = time.monotonic() + START_DEADLINE
    assert m1.wait_healthy(deadline) and m2.wait_healthy(deadline)
    ok("create", m1.addr, m2.addr, "--yes")
    key = key_of(1, "orph")  # in m2's half
    slot = key_slot(key)
    with Client(m1.addr) as client:
        client.set(key, "acknowledged")

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

