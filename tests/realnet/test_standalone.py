"""A node started without a cluster owns every slot; bad configurations exit 2 before binding."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from realnet.client import kv_path
from tests.realnet.conftest import HOST, REPO, Launcher, free_ports

pytestmark = pytest.mark.realnet  # starts real node processes


def test_a_node_without_config_owns_all_slots(launcher: Launcher) -> None:
    node = launcher.standalone()
    slots = node.get_json("/cluster/slots")
    assert slots["unassigned"] == ""
    assert [(r["start"], r["end"], r["node"], r["addr"]) for r in slots["slots"]] == [
        (0, 16383, node.id, node.addr)
    ]
    members = node.get_json("/cluster/members")
    assert [(m["id"], m["addr"], m["peer_addr"], m["self"]) for m in members] == [
        (node.id, node.addr, node.peer_addr, True)
    ]
    info = node.info()
    assert info["mode"] == "standalone" and info["slots_owned"] == 16384
    assert node.request("PUT", kv_path(b"solo"), b"1")[0] == 204
    assert node.request("GET", kv_path(b"solo"))[2] == b"1"
    assert node.info()["stats"]["forwards_sent"] == 0


def test_a_standalone_id_is_kept_in_the_data_dir(launcher: Launcher, tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = launcher.standalone(["--data-dir", str(data)])
    first.stop()
    second = launcher.standalone(["--data-dir", str(data)])
    assert second.id == first.id


def run_node(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "realnet.node", *args],
        check=False,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )


def test_config_problems_exit_2_with_sentences(tmp_path: Path) -> None:
    port, peer = free_ports(2)
    ports = ["--port", str(port), "--peer-port", str(peer)]
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("[node\nid = 1\n")
    r = run_node("--config", str(bad_toml), *ports)
    assert r.returncode == 2 and "not valid TOML" in r.stderr and "Traceback" not in r.stderr

    r = run_node("--config", str(tmp_path / "missing.toml"), *ports)
    assert r.returncode == 2 and "Cannot read config file" in r.stderr

    bad = tmp_path / "settings.toml"
    bad.write_text(
        "[settings]\nping_interval = -1\nbogus = 3\n"
        "[cluster]\n[[cluster.nodes]]\nid = \"a\"\naddr = \"127.0.0.1:7001\"\nslots = \"0-99999\"\n"
    )
    r = run_node("--config", str(bad), *ports)
    assert r.returncode == 2
    assert "Unknown node setting 'bogus'" in r.stderr
    assert "outside 0-16383" in r.stderr
    assert "Traceback" not in r.stderr

    unknown_id = tmp_path / "unknown.toml"
    unknown_id.write_text('[cluster]\n[[cluster.nodes]]\nid = "a"\naddr = "127.0.0.1:7001"\n')
    r = run_node("--config", str(unknown_id), "--id", "zz", *ports)
    assert r.returncode == 2 and "'zz' is not a member" in r.stderr


def test_a_port_in_use_exits_2(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind((HOST, 0))
        s.listen()
        busy = s.getsockname()[1]
        (peer,) = free_ports(1)
        r = run_node("--port", str(busy), "--peer-port", str(peer))
    assert r.returncode == 2
    assert f"cannot listen on {HOST}:{busy} (HTTP port): address already in use" in r.stderr
    assert "Traceback" not in r.stderr
