"""A node started without a cluster owns every slot; bad configurations exit 2 before binding."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from realnet.client import kv_path
from tests.realnet.conftest import HOST, REPO, Launcher, free_ports, metric

pytestmark = pytest.mark.realnet  # starts real node processes


def test_a_node_without_config_owns_all_slots(launcher: Launcher) -> None:
    node = launcher.standalone()
    slots = node.get_json("/cluster/slots")
    assert slots["unassigned"] == ""
    assert [(r["start"], r["end"], r["node"], r["addr"]) for r in slots["slots"]] == [
        (0, 16383, node.id, node.addr)
    ]
    members = node.get_json("/cluster/members")
    assert [
        (m["id"], m["addr"], m["peer_addr"], m["self"], m["state"], m["slots"]) for m in members
    ] == [(node.id, node.addr, node.peer_addr, True, "alive", "0-16383")]
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
        "[settings]\nforward_timeout = -1\nbogus = 3\n"
        "[swim]\npreset = \"moon\"\nprobe_intervall = 1.0\nsuspicion_mult = 2.5\n"
        "[cluster]\n[[cluster.nodes]]\nid = \"a\"\naddr = \"127.0.0.1:7001\"\nslots = \"0-99999\"\n"
    )
    r = run_node("--config", str(bad), *ports, "--seeds", "nowhere")
    assert r.returncode == 2
    assert "Unknown node setting 'bogus'" in r.stderr
    assert "The SWIM preset must be one of lan, wan, local, not 'moon'." in r.stderr
    assert "Unknown SWIM setting 'probe_intervall' in [swim]" in r.stderr
    assert "SWIM setting 'suspicion_mult' in [swim] must be an integer, not 2.5." in r.stderr
    assert "Seed 'nowhere': Address 'nowhere' is not HOST:PORT." in r.stderr
    assert "outside 0-16383" in r.stderr
    assert "Traceback" not in r.stderr

    # the ping health check is gone: an old config says what replaced it
    old = tmp_path / "old.toml"
    old.write_text("[settings]\nping_interval = 0.5\ndown_after = 2.0\n")
    r = run_node("--config", str(old), *ports)
    assert r.returncode == 2
    for key in ("ping_interval", "down_after"):
        assert f"Node setting '{key}' in [settings] no longer exists: failure detection is SWIM gossip" in r.stderr
    # ... in [swim] too, where an operator looking for the old knobs would put them
    old.write_text("[swim]\nping_interval = 0.5\ndown_after = 2.0\n")
    r = run_node("--config", str(old), *ports)
    assert r.returncode == 2
    assert "SWIM setting 'ping_interval' in [swim] no longer exists: SWIM probes" in r.stderr
    assert "SWIM setting 'down_after' in [swim] no longer exists: a suspect member" in r.stderr
    assert "Unknown" not in r.stderr

    # values that are each fine but break a SWIM rule are reported by SwimConfig.validate
    slow = tmp_path / "slow.toml"
    slow.write_text("[swim]\npreset = \"local\"\nprobe_timeout = 2.0\n")
    r = run_node("--config", str(slow), *ports)
    assert r.returncode == 2 and "[swim]: probe_timeout (2.0s) must be shorter" in r.stderr

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


def test_joining_through_seeds_on_a_wildcard_address_needs_an_advertised_host() -> None:
    port, peer = free_ports(2)
    r = run_node("--host", "0.0.0.0", "--port", str(port), "--peer-port", str(peer),
                 "--seeds", f"{HOST}:{free_ports(1)[0]}")
    assert r.returncode == 2
    assert "binds the wildcard address 0.0.0.0 and joins through seeds" in r.stderr
    assert "--advertise-host" in r.stderr and "Traceback" not in r.stderr


def test_a_durable_node_keeps_its_data_across_kill_9(launcher: Launcher, tmp_path: Path) -> None:
    """``[settings] durable = true`` with a data dir: the store is written through to files."""
    node = launcher.node(
        "d1", settings={"durable": True}, extra=["--data-dir", str(tmp_path / "d1")]
    )
    long_key = b"L" * 1024  # its journal entry's name is far over a file name's 255 bytes
    for k, v in ((b"a", b"1"), (b"b", b"2"), (long_key, b"long"), (b"gone", b"x")):
        assert node.request("PUT", kv_path(k), v)[0] == 204
    assert node.request("DELETE", kv_path(b"gone"))[0] == 204
    node.kill()
    node.restart()
    assert node.request("GET", kv_path(b"a"))[2] == b"1"
    assert node.request("GET", kv_path(long_key))[2] == b"long"
    assert node.request("GET", kv_path(b"gone"))[0] == 404
    assert node.info()["keys"] == 3


def test_a_durable_node_answers_concurrent_writes_only_once_they_survive_kill_9(
        launcher: Launcher, tmp_path: Path) -> None:
    """Sixty writers at once on their own connections: every write answered is in the storage
    log (fsynced in group commits, at most one fsync per write) and there after ``kill -9``."""
    node = launcher.node("d2", settings={"durable": True}, extra=["--data-dir", str(tmp_path / "d2")])
    assert node.request("PUT", kv_path(b"warm"), b"0")[0] == 204
    puts, fsyncs = metric(node, "storelab_storage_puts_total"), metric(node, "storelab_storage_fsyncs_total")
    host, port = node.addr.rsplit(":", 1)
    n = 60
    conns = [socket.create_connection((host, int(port)), timeout=10) for _ in range(n)]
    try:
        for i, c in enumerate(conns):  # back to back: many arrive within one loop turn
            c.sendall(f"PUT {kv_path(f'p{i}'.encode())} HTTP/1.1\r\nHost: {node.addr}\r\n"
                      f"Content-Length: 2\r\n\r\n{i:02d}".encode())
        for c in conns:
            got = b""
            while b"\r\n\r\n" not in got:
                chunk = c.recv(4096)
                assert chunk, got
                got += chunk
            assert got.startswith(b"HTTP/1.1 204"), got
    finally:
        for c in conns:
            c.close()
    assert metric(node, "storelab_storage_puts_total") - puts >= n
    assert 1 <= metric(node, "storelab_storage_fsyncs_total") - fsyncs <= n
    assert metric(node, "storelab_storage_compaction_failures_total") == 0
    node.kill()
    node.restart()
    assert node.info()["keys"] == n + 1
    assert [node.request("GET", kv_path(f"p{i}".encode()))[2] for i in (0, 31, 59)] == [b"00", b"31", b"59"]


def test_a_damaged_storage_log_is_refused_with_a_sentence(tmp_path: Path) -> None:
    from realnet.kvlog import LOG_NAME, MAGIC

    data = tmp_path / "d"
    data.mkdir()
    (data / LOG_NAME).write_bytes(b"XXXXXXXX" + MAGIC)  # not a storage log
    port, peer = free_ports(2)
    r = run_node("--port", str(port), "--peer-port", str(peer), "--data-dir", str(data))
    assert r.returncode == 2, r.stderr
    assert "does not start on a damaged storage log" in r.stderr and "Traceback" not in r.stderr
    assert (data / LOG_NAME).read_bytes() == b"XXXXXXXX" + MAGIC  # left as it was


def test_per_key_files_that_disagree_with_the_log_refuse_the_start_with_what_to_keep(tmp_path: Path) -> None:
    from realnet.kvlog import LOG_NAME, LogStorage
    from realnet.runtime import FileStorage

    data = tmp_path / "d"
    s = LogStorage(data)
    s.put("kv:6b", b"from the log")
    s.close()
    FileStorage(data).put("kv:6b", b"from an older storelab")
    port, peer = free_ports(2)
    r = run_node("--port", str(port), "--peer-port", str(peer), "--data-dir", str(data))
    assert r.returncode == 2, r.stderr
    assert "per-key files (*.val) that disagree with it ('kv:6b')" in r.stderr
    assert "damaged" not in r.stderr and "Traceback" not in r.stderr
    assert FileStorage(data).get("kv:6b") == b"from an older storelab" and (data / LOG_NAME).exists()


def test_a_second_node_on_a_data_dir_in_use_is_refused_with_a_sentence(launcher: Launcher,
                                                                        tmp_path: Path) -> None:
    data = tmp_path / "shared"
    first = launcher.standalone(["--data-dir", str(data)])
    assert first.request("PUT", kv_path(b"mine"), b"1")[0] == 204
    port, peer = free_ports(2)
    r = run_node("--port", str(port), "--peer-port", str(peer), "--data-dir", str(data))
    assert r.returncode == 2, r.stderr
    assert "another process (a node) is using it" in r.stderr and "Traceback" not in r.stderr
    assert first.request("GET", kv_path(b"mine"))[2] == b"1"  # the first one is untouched
