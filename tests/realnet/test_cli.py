"""The ``storelab`` command line: keyslot, get/set/del and their exit statuses."""

from __future__ import annotations

import subprocess
import sys

import pytest

from realnet import cli
from tests.realnet.conftest import REPO, Launcher, NodeProc, free_ports

pytestmark = pytest.mark.realnet  # starts real node processes


def storelab(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "realnet.cli", *args],
        check=False,
        input=stdin,
        capture_output=True,
        cwd=REPO,
        timeout=60,
    )


@pytest.fixture(scope="module")
def node(module_launcher: Launcher) -> NodeProc:
    return module_launcher.standalone()


def test_keyslot_prints_one_slot_per_key() -> None:
    r = storelab("keyslot", "foo", "bar", "{user}a", "{user}b")
    assert r.returncode == 0
    # crc32 mod 16384; keys with the same {tag} share a slot (Redis hash tags)
    assert r.stdout.decode().split("\n") == ["9505", "3242", "5705", "5705", ""]


def test_get_set_del_exit_statuses(node: NodeProc) -> None:
    n = ["--node", node.addr]
    r = storelab("get", "cli-key", *n)
    assert (r.returncode, r.stdout) == (1, b"")
    r = storelab("set", "cli-key", "hello world", *n)
    assert (r.returncode, r.stderr) == (0, b"")
    r = storelab("get", "cli-key", *n)
    assert (r.returncode, r.stdout) == (0, b"hello world")
    r = storelab("del", "cli-key", *n)
    assert r.returncode == 0
    r = storelab("del", "cli-key", *n)
    assert r.returncode == 1


def test_set_dash_reads_the_value_from_stdin(node: NodeProc) -> None:
    value = bytes(range(256)) * 4
    r = storelab("set", "binary", "-", "--node", node.addr, stdin=value)
    assert r.returncode == 0, r.stderr
    r = storelab("get", "binary", "--node", node.addr)
    assert (r.returncode, r.stdout) == (0, value)


def test_errors_exit_2_with_a_sentence(node: NodeProc) -> None:
    r = storelab("set", "k" * 2000, "v", "--node", node.addr)
    assert r.returncode == 2
    assert r.stderr.decode().startswith("storelab: too_large: ")
    dead = f"127.0.0.1:{free_ports(1)[0]}"
    r = storelab("get", "k", "--node", dead)
    assert r.returncode == 2
    err = r.stderr.decode()
    assert err.startswith(f"storelab: cannot reach node {dead}: ") and "Traceback" not in err
    r = storelab("get", "k", "--node", "not-an-address")
    assert r.returncode == 2 and "Traceback" not in r.stderr.decode()


def test_main_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["keyslot", "foo"]) == 0
    assert capsys.readouterr().out == "9505\n"
    assert cli.main([]) == 2  # a subcommand is required
