"""A real 3-node cluster with a cluster secret and an admin token (issue 10): ``storelab cluster``
end to end with
the token from the environment and from a file, a clear refusal without it, and each admin
sequence the issue found losing keys refused over HTTP (data intact) unless it accepts the loss;
``verify`` then reports the keys a node holds for slots it does not own."""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kvcore.slots import key_slot, parse_ranges, ranges_to_slots
from realnet.client import Client
from tests.realnet.conftest import REPO, Launcher, poll
from tests.realnet.test_cluster_cli import start
from tests.realnet.test_security import call

pytestmark = pytest.mark.realnet  # starts real node processes


def storelab(*args: str, env: dict[str, str] | None = None, stdin: str = "") -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "STORELAB_ADMIN_TOKEN"}
    return subprocess.run([sys.executable, "-m", "realnet.cli", "cluster", *args], input=stdin,
                          capture_output=True, text=True, cwd=REPO, timeout=120, check=False,
                          env={**environ, **(env or {})})


def test_a_cluster_with_a_secret_and_an_admin_token_end_to_end_and_the_loss_guards(
    launcher: Launcher, tmp_path: Path
) -> None:
    token = secrets.token_urlsafe(32)
    path = tmp_path / "admin.token"
    path.write_text(token + "\n")
    secret = tmp_path / "cluster.key"  # the bus authenticated too: the CLI's moves cross it
    secret.write_text(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
    a, b, c = start(launcher, ["a", "b", "c"],
                    extra=["--admin-token-file", str(path), "--secret-file", str(secret)])
    auth = {"Authorization": f"Bearer {token}"}

    # without the token: a clear sentence and exit status 2, and nothing changed
    r = storelab("create", a.addr, b.addr, c.addr, "--yes")
    assert r.returncode == 2, r.stderr
    assert "requires the admin token (401 unauthorized)" in r.stderr and "STORELAB_ADMIN_TOKEN" in r.stderr
    assert "Traceback" not in r.stderr
    assert a.info()["slots_owned"] == 16384 and a.info()["mode"] == "standalone"
    wrong = tmp_path / "wrong.token"
    wrong.write_text("not-the-token")
    r = storelab("create", a.addr, b.addr, c.addr, "--yes", "--token-file", str(wrong))
    assert r.returncode == 2 and "401 unauthorized" in r.stderr

    # with it: from the environment, then from a file
    r = storelab("create", a.addr, b.addr, c.addr, "--yes", env={"STORELAB_ADMIN_TOKEN": token})
    assert r.returncode == 0, r.stderr
    assert all(n.info()["transport"]["bus"]["authenticated"] for n in (a, b, c))
    r = storelab("verify", a.addr, "--token-file", str(path))
    assert r.returncode == 0 and "OK:" in r.stdout, r.stdout + r.stderr

    values = {f"key-{i}": f"value-{i}".encode() for i in range(300)}
    with Client(a.addr) as client:
        for k, v in values.items():
            client.set(k, v)

    def intact() -> bool:
        with Client(c.addr) as client:
            return all(client.get(k) == v for k, v in values.items())

    # 1. import, migrate, move-keys, then abort on either side: refused, keys intact
    b_slots = sorted({key_slot(k) for k in values} & set(ranges_to_slots(
        parse_ranges(b.get_json("/cluster/keyslots")["slots"]))))
    slot = b_slots[0]
    assert call(c, "POST", "/cluster/import", {"slot": slot, "source": "b"}, auth)[0] == 200
    assert call(b, "POST", "/cluster/migrate", {"slot": slot, "target": "c"}, auth)[0] == 200
    status, _, moved = call(b, "POST", "/cluster/move-keys", {"slot": slot, "count": 100}, auth)
    assert status == 200 and moved["moved"] >= 1, moved
    for node, side in ((c, "only copy"), (b, "orphan")):
        status, _, obj = call(node, "POST", "/cluster/abort", {"slot": slot}, auth)
        assert status == 409 and side in obj["message"] and "accept_loss" in obj["message"], obj
    assert intact()
    r = storelab("fix", a.addr, "--yes", env={"STORELAB_ADMIN_TOKEN": token})
    assert r.returncode == 0, r.stdout + r.stderr
    poll(lambda: all(n.get_json("/cluster/slots") == a.get_json("/cluster/slots") for n in (b, c)),
         timeout=30, what="the maps to agree after fix")
    assert intact()

    # 2. a forced leave of a node holding keys: refused without accept_loss, node still serving
    status, _, obj = call(c, "POST", "/cluster/leave", {"force": True}, auth)
    assert status == 409 and "accept_loss" in obj["message"] and "keys" in obj["message"], obj
    assert c.proc is not None and c.proc.poll() is None
    assert intact()

    # 3. claiming another node's slots: refused, map unchanged, keys intact
    b_ranges = b.get_json("/cluster/keyslots")["slots"]
    epoch = int(a.info()["epoch"]) + 10
    status, _, obj = call(a, "POST", "/cluster/claim", {"slots": b_ranges, "epoch": epoch}, auth)
    assert status == 409 and "owned by b" in obj["message"] and "orphan" in obj["message"], obj
    assert intact()
    r = storelab("verify", a.addr, env={"STORELAB_ADMIN_TOKEN": token})
    assert r.returncode == 0, r.stdout + r.stderr

    # ...and allowed when the request accepts the loss; verify then names the stranded keys
    body: dict[str, Any] = {"slots": b_ranges, "epoch": epoch, "accept_loss": True}
    assert call(a, "POST", "/cluster/claim", body, auth)[0] == 200
    held = int(b.info()["keys"])

    def reported() -> str:
        r = storelab("verify", a.addr, env={"STORELAB_ADMIN_TOKEN": token})
        return r.stdout if r.returncode == 1 and f"Node b holds {held} keys of slots it does not own" in r.stdout else ""

    out = poll(reported, timeout=30, what="verify to report b's stranded keys")
    assert "no request reaches them" in out
    assert b.info()["stray"]["keys"] == held
