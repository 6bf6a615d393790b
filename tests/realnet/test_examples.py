"""``examples/``: the local-cluster script starts a 3-node cluster, waits until it is ready,
serves a set and a get, and stops every node it started, by its handle, on ``--smoke`` and on
Ctrl-C. Ports are picked free (``--base-port 0``); the script itself is stopped by its handle
(SIGTERM, which it treats as Ctrl-C, then SIGKILL) if it overruns."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator

import pytest

from tests.realnet.conftest import REPO

pytestmark = pytest.mark.realnet  # starts real node processes

SCRIPT = REPO / "examples" / "local_cluster.py"
DEADLINE = 90.0


@pytest.fixture
def script() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for p in started:  # the script stops its nodes on SIGTERM; SIGKILL only if it does not exit
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def start(started: list[subprocess.Popen[str]], *args: str) -> subprocess.Popen[str]:
    p = subprocess.Popen([sys.executable, str(SCRIPT), "--base-port", "0", *args], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, cwd=REPO, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    started.append(p)
    return p


def assert_every_node_stopped(out: str) -> None:
    stopped = re.findall(r"stopped (n\d) \(pid (\d+), exit status (-?\d+)\)", out)
    assert [s[0] for s in stopped] == ["n1", "n2", "n3"], out
    for _, pid, _ in stopped:
        with pytest.raises(ProcessLookupError):  # gone and reaped: no process left behind
            os.kill(int(pid), 0)


def test_the_example_cluster_file_is_three_nodes_on_loopback() -> None:
    with open(REPO / "examples" / "cluster.toml", "rb") as f:
        cfg = tomllib.load(f)
    nodes = cfg["cluster"]["nodes"]
    assert [n["id"] for n in nodes] == ["n1", "n2", "n3"]
    assert all(n["addr"].startswith("127.0.0.1:") for n in nodes)
    assert [n["slots"] for n in nodes] == ["0-5460", "5461-10922", "10923-16383"]


def test_smoke_mode_sets_and_gets_a_key_and_stops_the_cluster(script: list[subprocess.Popen[str]]) -> None:
    p = start(script, "--smoke")
    out, _ = p.communicate(timeout=DEADLINE)
    assert p.returncode == 0, out
    assert "smoke: set through n1, read through n3: ok" in out
    assert_every_node_stopped(out)


def test_ctrl_c_stops_the_cluster_cleanly(script: list[subprocess.Popen[str]]) -> None:
    p = start(script)
    assert p.stdout is not None
    seen = []
    deadline = time.monotonic() + DEADLINE
    for line in p.stdout:  # the script prints its usage once the cluster is ready
        seen.append(line)
        if line.startswith("Press Ctrl-C") or time.monotonic() > deadline:
            break
    assert any(line.startswith("The cluster is ready: n1 at http://127.0.0.1:") for line in seen), "".join(seen)
    p.send_signal(signal.SIGINT)
    rest, _ = p.communicate(timeout=DEADLINE)
    assert p.returncode == 0, rest
    assert_every_node_stopped(rest)
