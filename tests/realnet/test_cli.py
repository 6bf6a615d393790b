"""The ``storelab`` command line: keyslot, get/set/del and their exit statuses; its one voice on
stderr; never a traceback (a closed pipe, Ctrl-C); --version; node addresses as URLs; the
``cluster`` commands a user meets first (members, info, the redis-cli aliases)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib import metadata

import pytest

from kvcore.slots import NUM_SLOTS
from realnet import cli
from realnet.admin import ClusterView, NodeState, cluster_problems, create_problems
from realnet.client import Client, NodeConnection, node_addr
from tests.realnet.conftest import REPO, Cluster, Launcher, NodeProc, free_ports, poll

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
    # a "no" is said in a sentence that names the key as text, not as a bytes repr
    assert r.stderr == b"storelab: Key 'cli-key' not found.\n"
    r = storelab("set", "cli-key", "hello world", *n)
    assert (r.returncode, r.stderr) == (0, b"")
    r = storelab("get", "cli-key", *n)
    assert (r.returncode, r.stdout) == (0, b"hello world")
    r = storelab("del", "cli-key", *n)
    assert r.returncode == 0
    r = storelab("del", "cli-key", *n)
    assert (r.returncode, r.stderr) == (1, b"storelab: Key 'cli-key' not found.\n")


def test_set_dash_reads_the_value_from_stdin(node: NodeProc) -> None:
    value = bytes(range(256)) * 4
    r = storelab("set", "binary", "-", "--node", node.addr, stdin=value)
    assert r.returncode == 0, r.stderr
    r = storelab("get", "binary", "--node", node.addr)
    assert (r.returncode, r.stdout) == (0, value)


def test_errors_exit_2_with_a_sentence(node: NodeProc) -> None:
    r = storelab("set", "k" * 2000, "v", "--node", node.addr)
    assert r.returncode == 2
    err = r.stderr.decode()
    assert err.startswith("storelab: Key of 2000 bytes is over the limit") and err.endswith(
        f"(413 too_large from node {node.addr}).\n")
    dead = f"127.0.0.1:{free_ports(1)[0]}"
    r = storelab("get", "k", "--node", dead)
    assert r.returncode == 2
    err = r.stderr.decode()
    # the same sentence as storelab cluster's for an unreachable node (test_cluster_cli)
    assert err == f"storelab: Cannot reach node {dead}: connection refused.\n"
    r = storelab("get", "k", "--node", "not-an-address")
    assert r.returncode == 2 and "Traceback" not in r.stderr.decode()


def test_main_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["keyslot", "foo"]) == 0
    assert capsys.readouterr().out == "9505\n"
    assert cli.main([]) == 2  # a subcommand is required


# --- one voice ---------------------------------------------------------------------------------

#: ``storelab: `` and one sentence: a capital first letter, a period at the end
VOICE = re.compile(r"storelab: (  )?[A-Z0-9'\"].*[.?!]")


def voice_problems(stderr: str) -> list[str]:
    """The stderr lines that are not in the CLI's voice (argparse's usage lines aside)."""
    return [line for line in stderr.splitlines()
            if not line.startswith(("usage: ", " ")) and ": error: " not in line and not VOICE.fullmatch(line)]


def test_sentence_puts_any_text_in_the_one_voice() -> None:
    assert cli.sentence("cannot reach node h:1: connection refused") == "Cannot reach node h:1: connection refused."
    assert cli.sentence("Declined; nothing was changed.") == "Declined; nothing was changed."
    assert cli.sentence("  two\n lines ") == "Two lines."


@pytest.mark.parametrize("text", [
    "e is not in a replicated group",  # node ids are case-sensitive: e and E are two nodes
    "r4 was removed from the replicated group (the configuration committed at index 8)",
    "alpha does not answer",  # a word that is not one of ours may be an id too
    "'k' is not a key",
    "3 slots have no owner",
    "Already a sentence",
])
def test_a_sentence_that_starts_with_what_it_names_is_left_as_it_is(text: str) -> None:
    from realnet import admin, adminapi

    for put in (cli.sentence, adminapi._sentence, admin._sentence):
        assert put(text) == text + ".", put


def test_a_sentence_that_starts_with_a_word_of_ours_gets_its_capital() -> None:
    from realnet import admin, adminapi

    for put in (cli.sentence, adminapi._sentence, admin._sentence):
        assert put("node e is not in a replicated group") == "Node e is not in a replicated group."
        assert put("the field 'slots' is required") == "The field 'slots' is required."
        assert put("a learner is not among the voters") == "A learner is not among the voters."


@pytest.mark.parametrize("value", ["-1", "0", "-0", "nan", "inf", "-inf", "1e300", "3601", "x", ""])
@pytest.mark.parametrize("command", [["get", "k"], ["set", "k", "v"], ["del", "k"]])
def test_a_timeout_that_is_not_a_positive_finite_number_of_seconds_is_a_usage_error(
        command: list[str], value: str, capsys: pytest.CaptureFixture[str]) -> None:
    # no node is asked: the node address is never used
    assert cli.main([*command, "--node", "127.0.0.1:1", f"--timeout={value}"]) == 2
    err = capsys.readouterr().err
    assert f"storelab {command[0]}: error: argument --timeout: '{value}' " in err, err
    assert err.startswith("usage: storelab ") and "Traceback" not in err
    assert voice_problems(err) == []


def test_every_error_of_the_kv_commands_is_one_sentence_in_one_voice(node: NodeProc) -> None:
    dead = f"127.0.0.1:{free_ports(1)[0]}"
    cases = [
        (("get", "voice-missing", "--node", node.addr), 1),  # not found: a "no"
        (("del", "voice-missing", "--node", node.addr), 1),
        (("set", "k" * 2000, "v", "--node", node.addr), 2),  # the node answered an error
        (("get", "", "--node", node.addr), 2),  # usage
        (("get", "k", "--node", dead), 2),  # unreachable
        (("cluster", "info", dead), 2),  # unreachable, the cluster commands say it the same way
        (("cluster", "create", node.addr, node.addr, "--yes"), 2),  # usage
        (("cluster", "remove-node", node.addr, "nobody", "--yes"), 1),  # refused
    ]
    for args, status in cases:
        r = storelab(*args)
        err = r.stderr.decode()
        assert r.returncode == status, (args, r)
        assert err and "Traceback" not in err, (args, err)
        assert voice_problems(err) == [], (args, err)


def test_admin_sentences_are_in_the_one_voice() -> None:
    from tests.realnet.test_cluster_cli import fake_cluster

    c = fake_cluster({"0-8191": "a", "8192-9000": "x", "9001-16383": "b"},
                     {"a": "alive", "b": "alive", "x": "dead"}, {"b": ({8192: "a"}, {9000: "x"})})
    c.nodes["b"].slots = {"slots": [{"start": 0, "end": 16383, "node": "b", "epoch": 3}], "unassigned": ""}
    fresh = [NodeState("n", "h:1", info={"id": "n", "keys": 2, "mode": "cluster"}, members=[{"id": "m"}]),
             NodeState("", "h:2", error="Cannot reach node h:2: connection refused.")]
    sentences = [*cluster_problems(c), *create_problems(fresh)]
    assert len(sentences) >= 6
    for text in sentences:
        assert VOICE.fullmatch(f"storelab: {text}"), text


# --- never a traceback -------------------------------------------------------------------------


def into_closed_pipe(argv: list[str]) -> tuple[int, str]:
    """Run ``argv`` with stdout a pipe whose reader is gone before anything is written."""
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=REPO)
    assert p.stdout is not None and p.stderr is not None
    p.stdout.close()  # the only reader: the child's first write gets EPIPE
    try:
        err = p.stderr.read().decode()
        return p.wait(timeout=60), err
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_output_into_a_closed_pipe_ends_quietly_without_a_traceback(node: NodeProc) -> None:
    many = [str(i) for i in range(1, 20001)]
    for args in (["keyslot", *many], ["cluster", "info", node.addr, "--json"], ["cluster", "members", node.addr]):
        status, err = into_closed_pipe([sys.executable, "-m", "realnet.cli", *args])
        assert (status, err) == (cli.EXIT_BROKEN_PIPE, ""), args[:3]
    status, err = into_closed_pipe([sys.executable, "-m", "realnet.cli", "--help"])
    assert err == ""  # argparse ignores the broken pipe itself; no traceback either way


def test_keyslot_into_head_prints_the_first_line_and_no_traceback() -> None:
    # the issue's own command line, through a shell pipeline
    r = subprocess.run(["sh", "-c", f'"{sys.executable}" -m realnet.cli keyslot $(seq 1 20000) | head -1'],
                       capture_output=True, cwd=REPO, timeout=60, check=False)
    assert r.stdout == b"12215\n"  # keyslot("1")
    assert r.stderr == b""


# --- --version, URLs -------------------------------------------------------------------------


def test_version_is_the_installed_distributions(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--version"]) == 0
    out = capsys.readouterr().out
    try:
        expected = metadata.version("storelab")
    except metadata.PackageNotFoundError:
        expected = cli.version()
    assert out == f"storelab {expected}\n"


def test_version_without_an_installed_distribution_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(cli.metadata, "version", missing)
    assert cli.version().startswith("0+unknown")


@pytest.mark.parametrize("text", ["127.0.0.1:7101", "http://127.0.0.1:7101", "http://127.0.0.1:7101/",
                                  "HTTP://127.0.0.1:7101", " http://127.0.0.1:7101/ "])
def test_node_addr_accepts_host_port_and_http_urls(text: str) -> None:
    assert node_addr(text) == "127.0.0.1:7101"


@pytest.mark.parametrize(("text", "why"), [
    ("https://127.0.0.1:7101", "uses https://; storelab nodes speak plain http://."),
    ("http://127.0.0.1:7101/kv/x", "has a path"),
    ("http://127.0.0.1", "is not HOST:PORT"),
    ("127.0.0.1", "is not HOST:PORT"),
])
def test_node_addr_refuses_other_schemes_and_paths_with_a_sentence(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=re.escape(why)):
        node_addr(text)


def test_a_url_works_wherever_a_node_address_is_taken(node: NodeProc) -> None:
    url = f"http://{node.addr}/"
    r = storelab("set", "url-key", "via a url", "--node", url)
    assert (r.returncode, r.stderr) == (0, b"")
    r = storelab("get", "url-key", "--node", f"http://{node.addr}")
    assert (r.returncode, r.stdout) == (0, b"via a url")
    r = storelab("cluster", "info", url)
    assert r.returncode == 0 and node.addr in r.stdout.decode()
    with Client(url) as c:
        assert c.get("url-key") == b"via a url"
    conn = NodeConnection(url)
    try:
        assert conn.addr == node.addr and conn.request("GET", "/health")[0] == 200
    finally:
        conn.close()
    r = storelab("get", "url-key", "--node", f"https://{node.addr}")
    err = r.stderr.decode()
    assert r.returncode == 2 and "uses https://; storelab nodes speak plain http://." in err
    assert "Traceback" not in err and "Name or service not known" not in err


# --- cluster: aliases, members, info -------------------------------------------------------------


def test_check_and_del_node_are_aliases_listed_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["cluster", "--help"]) == 0
    out = capsys.readouterr().out
    assert "verify (check)" in out and "remove-node (del-node)" in out and "members" in out
    for alias, name in cli.ALIASES.items():
        assert cli.main(["cluster", alias, "--help"]) == 0
        assert capsys.readouterr().out.startswith(f"usage: storelab cluster {name} ")


def test_check_runs_verify(node: NodeProc) -> None:
    r = storelab("cluster", "check", node.addr)
    out = r.stdout.decode()
    assert r.returncode == 0, r
    assert out.startswith("Verifying the cluster of ") and f"OK: all {NUM_SLOTS} slots are covered" in out


def test_del_node_runs_remove_node() -> None:
    # the same refusal remove-node gives for a node that is not a member: the alias reaches it
    dead = f"127.0.0.1:{free_ports(1)[0]}"
    a, b = storelab("cluster", "del-node", dead, "x", "--yes"), storelab("cluster", "remove-node", dead, "x", "--yes")
    assert (a.returncode, a.stderr) == (b.returncode, b.stderr) == (2, f"storelab: Cannot reach node {dead}: connection refused.\n".encode())


def test_members_prints_one_nodes_member_table(cluster3: Cluster) -> None:
    a = cluster3["a"]
    got: list[list[str]] = []

    def all_alive() -> bool:
        # a process stalled on a busy machine may be suspect for a moment: ask again
        r = storelab("cluster", "members", a.addr)
        assert r.returncode == 0, r
        got[:] = [r.stdout.decode().splitlines()]
        return "3 members (3 alive)" in r.stdout.decode()

    poll(all_alive, what="a to list its three members alive")
    lines = got[0]
    assert lines[0].split() == ["ID", "ADDR", "PEER", "ADDR", "STATE", "INCARNATION", "SLOTS", "RTT", "MS"]
    rows = {line.split()[0]: line.split() for line in lines[1:4]}
    assert rows["a"][:2] == ["a", "*"]  # itself, marked
    for n in cluster3:
        row = [w for w in rows[n.id] if w != "*"]
        assert row[1:4] == [n.addr, n.peer_addr, "alive"]
        assert row[5] in ("5461", "5462")
    assert rows["a"][-1] == "-"  # no RTT to itself
    assert lines[4].startswith("3 members (3 alive) as a (")
    r = storelab("cluster", "members", a.addr, "--json")
    assert [m["id"] for m in json.loads(r.stdout)] == ["a", "b", "c"]


def test_info_takes_slots_epochs_and_states_from_one_view_and_keys_from_each_node(
        capsys: pytest.CaptureFixture[str]) -> None:
    from tests.realnet.test_cluster_cli import fake_cluster

    c = fake_cluster({"0-5460": "a", "5461-16383": "b"}, {"a": "alive", "b": "alive", "x": "dead"}, {})
    c.nodes["a"].info = {**(c.nodes["a"].info or {}), "keys": 1234}
    c.nodes["b"].info = None  # b did not answer: keys unknown
    c.nodes["b"].error = "Cannot reach node h:98: timed out."
    # b's own map and the entry's member list would say other things: the table uses a's map
    c.nodes["b"].slots = {"slots": [{"start": 0, "end": 16383, "node": "b", "epoch": 9}], "unassigned": ""}
    c.entry.members = [{"id": "a", "state": "alive", "epoch": 0}, {"id": "b", "state": "alive", "epoch": 0},
                       {"id": "x", "state": "dead", "epoch": 1}]

    class FakeAdmin:
        def discover(self, addr: str) -> ClusterView:
            return c

    args = cli.build_parser().parse_args(["cluster", "info", "127.0.0.1:1"])
    assert cli.cmd_info(args, FakeAdmin()) == 0  # type: ignore[arg-type]
    lines = capsys.readouterr().out.splitlines()
    assert lines[:4] == [
        "ID  ADDR   STATE  SLOTS  KEYS  EPOCH  OPEN",
        "a   h:97   alive   5461  1234      2     0",
        "b   h:98   alive  10923     ?      2     ?",  # the ? keeps the numbers aligned
        "x   h:120  dead       0     ?      1     ?",  # owns nothing: its claim's epoch in a's view
    ]
    assert lines[4] == "3 nodes (2 alive), 1234 keys on the nodes that answered, 16384 of 16384 slots assigned."
    assert lines[5] == "State, slots and epochs as a (h:97) sees them; keys as each node counts its own."
    assert lines[6:] == ["? b did not answer: Cannot reach node h:98: timed out.", "? x is dead in a's view; it was not asked."]


def test_table_keeps_a_numeric_column_right_aligned_with_unknowns() -> None:
    out = cli.table(("N", "KEYS"), [("a", 5), ("b", None), ("c", "?"), ("d", 12345)])
    assert out.splitlines() == ["N   KEYS", "a      5", "b      ?", "c      ?", "d  12345"]


def test_readme_names_every_command_alias_and_form() -> None:
    readme = (REPO / "README.md").read_text()
    for name in [*cli._CLUSTER_COMMANDS, *cli.ALIASES]:
        assert f"`{name}" in readme, name
    for text in ("storelab --version", "http://HOST:PORT", "examples/local_cluster.py", "LICENSE",
                 "history: linearizable", "simulated 29.3 s"):
        assert text in readme, text
