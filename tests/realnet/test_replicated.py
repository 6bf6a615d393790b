"""One replicated group of three real processes (R = 3): kill -9 under load, power loss, torn log.

Three nodes with data directories are made one Raft group by ``realnet.replicacli.create`` (what
``storelab cluster create A B C --replicas 3`` does). Writer threads record their history
(:mod:`realnet.history`), each writing keys of its own (one write per key, so "every acknowledged
write is present" is a per-key check) and reading and writing a few shared keys (so the
linearizability check has something to judge). Processes are killed by their own handles.

- the leader is killed under load, then (the group has elected another) a follower, so the one
  node left has no quorum and acknowledges nothing; both restart, writes resume; afterwards every
  acknowledged write is read back from every node, and the whole history is linearizable;
- all three are killed at once (a power loss, as far as the processes can tell) and restarted:
  every acknowledged write is present; one node's log gets a torn last record first, which it
  truncates at start (and says so), then catches up;
- the leader's disk fails an fsync of its Raft log (a test hook, :data:`FAULT_HOOK`, makes it
  fail): it answers the write none 2xx, stops with exit status 1 and says why; the two others go
  on, and it comes back from its disk when restarted;
- a member's Raft log is damaged, then gone: it does not start (exit 2, a sentence), rather than
  serve a log with a hole or an empty one.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from realnet import replicacli
from realnet.admin import Admin
from realnet.client import Client, kv_path
from realnet.history import HistoryRecorder, NodeClient, RecordingClient
from realnet.raftopen import GROUP, RAFT_DIR

from .conftest import Launcher, NodeProc, metric, poll

pytestmark = pytest.mark.xdist_group("replicated")

SHARED = [f"shared-{i}" for i in range(3)]
#: bounds every writer loop in count (and the test's waits bound it in time)
MAX_OPS_PER_WRITER = 5000


def start_group(launcher: Launcher, tmp_path: Path) -> list[NodeProc]:
    nodes = [launcher.node(nid, extra=["--data-dir", str(tmp_path / f"data-{nid}")]) for nid in ("a", "b", "c")]
    with Admin(10.0) as a:
        replicacli.create(a, [a.probe(n.addr) for n in nodes])
    return nodes


def raft(n: NodeProc) -> dict[str, Any] | None:
    try:
        r = n.info().get("raft")
    except (OSError, AssertionError):
        return None
    return r if isinstance(r, dict) else None


def leader(nodes: list[NodeProc]) -> NodeProc | None:
    """The live node that leads, as every other live node names it."""
    views = {n.id: raft(n) for n in nodes if n.proc is not None and n.proc.poll() is None}
    leads = [nid for nid, r in views.items() if r is not None and r.get("role") == "leader"]
    if len(leads) != 1 or any(r is None or r.get("leader") != leads[0] for r in views.values()):
        return None
    return next(n for n in nodes if n.id == leads[0])


class Writers:
    """Writer threads over the live nodes; ``acked`` holds every acknowledged unique write."""

    def __init__(self, nodes: list[NodeProc], count: int = 4, seed: int = 1) -> None:
        self.nodes = nodes
        self.recorder = HistoryRecorder()
        self.acked: dict[str, str] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=self._run, args=(i, seed + i), daemon=True) for i in range(count)]

    def __enter__(self) -> Writers:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in self.threads)

    def count(self) -> int:
        with self.lock:
            return len(self.acked)

    def _client(self, i: int) -> RecordingClient:
        n = self.nodes[i % len(self.nodes)]
        return RecordingClient(NodeClient(n.addr, timeout=3.0), self.recorder)

    def _run(self, w: int, seed: int) -> None:
        rng = random.Random(seed)
        c = self._client(w)
        target = w
        try:
            for seq in range(MAX_OPS_PER_WRITER):
                if self.stop.is_set():
                    break
                try:
                    if rng.random() < 0.7:
                        key, value = f"w{w}-{seq}", f"v{w}-{seq}"
                        c.set(key, value)
                        with self.lock:
                            self.acked[key] = value
                    elif rng.random() < 0.5:
                        c.set(rng.choice(SHARED), f"s{w}-{seq}")
                    else:
                        c.get(rng.choice(SHARED))
                except Exception:  # 503 no_leader, 504, a killed node: recorded; move on
                    c.close()
                    target += 1
                    c = self._client(target)
                    time.sleep(0.02)
        except BaseException as e:  # pragma: no cover - reported by the test
            self.errors.append(e)
        finally:
            c.close()


def grows(writers: Writers, by: int, timeout: float = 60.0, what: str = "") -> None:
    start = writers.count()
    poll(lambda: writers.count() >= start + by, timeout=timeout, what=what or f"{by} more acknowledged writes")


def read_ok(n: NodeProc, key: str, timeout: float = 60.0) -> bytes | None:
    """The value of ``key`` read from ``n`` once the group answers (404: None)."""
    deadline = time.monotonic() + timeout
    while True:
        status, _, body = n.request("GET", kv_path(key))
        if status == 200:
            return body
        if status == 404:
            return None
        assert status in (503, 504), (n.id, key, status, body)
        assert time.monotonic() < deadline, f"GET {key} on {n.id} kept failing: {status} {body!r}"
        time.sleep(0.05)


def caught_up(nodes: list[NodeProc], timeout: float = 60.0) -> None:
    """Wait until every node has applied the leader's commit index (as read after its own)."""
    views: dict[str, Any] = {}

    def done() -> bool:
        lead = leader(nodes)
        if lead is None:
            return False
        for n in nodes:
            views[n.id] = raft(n)
        commit = (raft(lead) or {}).get("commit", 0)
        return all(v is not None and v.get("applied", 0) >= commit for v in views.values())

    try:
        poll(done, timeout=timeout, what="every node to apply the leader's commit")
    except AssertionError:
        short = {k: {f: (v or {}).get(f) for f in ("role", "term", "leader", "commit", "applied", "last_index")}
                 for k, v in views.items()}
        raise AssertionError(f"not caught up: {short}") from None


def assert_every_acked_write_is_present(nodes: list[NodeProc], acked: dict[str, str]) -> None:
    assert acked, "no write was acknowledged"
    for n in nodes:
        missing = [k for k, v in sorted(acked.items()) if read_ok(n, k) != v.encode()]
        assert not missing, f"{n.id} lost {len(missing)} acknowledged writes, e.g. {missing[:5]}"


def test_kill_9_of_the_leader_then_a_follower_loses_no_acknowledged_write(
        launcher: Launcher, tmp_path: Path) -> None:
    nodes = start_group(launcher, tmp_path)
    with Writers(nodes) as w:
        grows(w, 50)
        first = poll(lambda: leader(nodes), timeout=30, what="a leader")
        first.kill()
        live = [n for n in nodes if n is not first]
        second = poll(lambda: leader(live), timeout=30, what="a new leader among the two left")
        assert second is not first
        grows(w, 50, what="writes acknowledged by the new leader")
        follower = next(n for n in live if n is not second)
        follower.kill()
        before = w.count()
        first.restart()
        follower.restart()
        poll(lambda: leader(nodes), timeout=60, what="a leader after both restarted")
        grows(w, 50, what="writes after the restarts")
        assert w.count() > before
    assert not w.errors, w.errors
    caught_up(nodes)
    assert_every_acked_write_is_present(nodes, w.acked)
    result = w.recorder.check(model="kv", timeout=120.0)
    assert result.linearizable is True, f"not linearizable (or not decided): {result.verdict} {result.counterexample}"
    w.recorder.write_jsonl(tmp_path / "history.jsonl")


def tear_the_log_tail(data_dir: Path) -> int:
    """Append a record cut short (its header says 200 body bytes; 9 follow). Returns the bytes."""
    path = data_dir / RAFT_DIR / f"raft-{GROUP}.log"
    assert path.is_file(), path
    torn = (200).to_bytes(4, "big") + (12345).to_bytes(4, "big") + b"E" + b"\x00" * 8
    with open(path, "ab") as f:
        f.write(torn)
    return len(torn)


def test_kill_9_of_all_three_at_once_then_a_restart_keeps_every_acknowledged_write(
        launcher: Launcher, tmp_path: Path) -> None:
    nodes = start_group(launcher, tmp_path)
    with Writers(nodes, seed=7) as w:
        grows(w, 200)
        for n in nodes:  # as close to at once as three signals get
            assert n.proc is not None
            n.proc.kill()
        for n in nodes:
            n.kill()
        w.stop.set()
    acked = dict(w.acked)
    torn = tear_the_log_tail(tmp_path / "data-b")
    for n in nodes:
        n.restart()
    poll(lambda: leader(nodes), timeout=60, what="a leader after the power loss")
    assert_every_acked_write_is_present(nodes, acked)
    assert "torn" in nodes[1].log_text().lower(), nodes[1].log_text()[-3000:]
    assert str(torn) in nodes[1].log_text()
    # and the group goes on: a write after the restart is acknowledged and read everywhere
    status, _, body = nodes[2].request("PUT", kv_path("after"), b"yes")
    assert status == 204, (status, body)
    for n in nodes:
        assert read_ok(n, "after") == b"yes"


def test_cluster_verify_and_info_on_a_replicated_cluster(launcher: Launcher, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from realnet.cli import main

    nodes = start_group(launcher, tmp_path)
    assert main(["cluster", "verify", nodes[0].addr]) == 0
    out = capsys.readouterr().out
    assert "OK:" in out and "leads the group" in out
    assert main(["cluster", "info", nodes[1].addr, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["nodes"]
    assert sorted(r["role"] for r in rows) == ["follower", "follower", "leader"]
    for argv in (["reshard", nodes[0].addr, "--slots", "10", "--to", "b"], ["rebalance", nodes[0].addr]):
        assert main(["cluster", *argv, "--yes"]) == 1
        assert "This cluster is replicated: one Raft group serves every slot" in capsys.readouterr().err
    # fix mends a replicated cluster's slot map hints; here there is nothing to mend
    assert main(["cluster", "fix", nodes[0].addr, "--yes"]) == 0
    assert "name only the group's voters, spread evenly; nothing to fix" in capsys.readouterr().out
    lead = poll(lambda: leader(nodes), timeout=30, what="a leader")
    to = next(n for n in nodes if n is not lead)
    assert main(["cluster", "failover", nodes[0].addr, "--to", to.id, "--yes"]) == 0
    assert poll(lambda: leader(nodes), timeout=30, what="the new leader") is to


def test_metrics_show_the_group_and_its_commit_latency(launcher: Launcher, tmp_path: Path) -> None:
    nodes = start_group(launcher, tmp_path)
    lead = poll(lambda: leader(nodes), timeout=30, what="a leader")
    for i in range(20):
        status, _, _ = lead.request("PUT", kv_path(f"m{i}"), b"x")
        assert status == 204
    assert metric(lead, "storelab_raft_term") >= 1
    assert metric(lead, "storelab_raft_voters") == 3
    assert metric(lead, "storelab_raft_proposals_total") >= 20
    assert metric(lead, "storelab_raft_commit_latency_seconds_count") >= 20
    assert metric(lead, "storelab_raft_log_syncs_total") >= 1
    follower = next(n for n in nodes if n is not lead)
    assert metric(follower, "storelab_raft_leader_changes_total") >= 1
    assert metric(follower, "storelab_raft_applied_index") >= 20


def test_add_node_joins_as_a_learner_catches_up_and_votes_then_remove_node(
        launcher: Launcher, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from realnet.cli import main

    nodes = start_group(launcher, tmp_path)
    lead = poll(lambda: leader(nodes), timeout=30, what="a leader")
    for i in range(30):
        assert lead.request("PUT", kv_path(f"k{i}"), f"v{i}".encode())[0] == 204
    d = launcher.node("d", extra=["--data-dir", str(tmp_path / "data-d")])
    assert main(["cluster", "add-node", d.addr, nodes[0].addr, "--yes"]) == 0, capsys.readouterr()
    assert "is a voter" in capsys.readouterr().out
    r = poll(lambda: raft(d), timeout=30, what="d's raft view")
    assert "d" in r["voters"] and len(r["voters"]) == 4
    for i in range(30):
        assert read_ok(d, f"k{i}") == f"v{i}".encode()
    all4 = [*nodes, d]
    # remove a voter that is not the leader, then the leader itself (leadership moves first)
    gone = next(n for n in nodes if n is not lead)
    assert main(["cluster", "remove-node", lead.addr, gone.id, "--yes"]) == 0, capsys.readouterr()
    assert gone.wait(timeout=30) == 0  # it left: its process exits
    rest = [n for n in all4 if n is not gone]
    r = poll(lambda: raft(lead), timeout=30, what="the leader's view")
    assert gone.id not in r["voters"] and len(r["voters"]) == 3
    assert main(["cluster", "remove-node", d.addr, lead.id, "--yes"]) == 0, capsys.readouterr()
    assert lead.wait(timeout=30) == 0
    rest = [n for n in rest if n is not lead]
    new = poll(lambda: leader(rest), timeout=30, what="a leader of the two left")
    assert sorted((raft(new) or {})["voters"]) == sorted(n.id for n in rest)
    assert new.request("PUT", kv_path("after"), b"2")[0] == 204
    for n in rest:
        assert read_ok(n, "after") == b"2" and read_ok(n, "k7") == b"v7"


def test_add_node_run_again_finishes_what_an_earlier_run_cut_short(
        launcher: Launcher, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``add-node`` is safe to run again (an audit's gap: the second run was refused, "already a
    member" / "already in a replicated group"): whether the first run stopped after the meet
    (and the new node was then killed -9 and restarted) or after the leader added it as a
    learner, the same command finishes the job; once the node votes, it says nothing is left to
    do; and a learner killed -9 right after it joined, restarted, is caught up and promoted. A node
    running a group of its own is still refused (exit 1, a sentence naming it)."""
    from realnet.cli import main

    nodes = start_group(launcher, tmp_path)
    lead = poll(lambda: leader(nodes), timeout=30, what="a leader")
    for i in range(10):
        assert lead.request("PUT", kv_path(f"k{i}"), f"v{i}".encode())[0] == 204
    d = launcher.node("d", extra=["--data-dir", str(tmp_path / "data-d")])
    e = launcher.node("e", extra=["--data-dir", str(tmp_path / "data-e")])
    with Admin(10.0) as a:
        cluster = a.discover(nodes[0].addr)
        # d: the first run stopped after the meet, and d was killed -9, then restarted
        a.add_node(a.probe(d.addr), cluster)
        # e: it stopped once the leader had added e as a learner (before e was asked to join)
        a.add_node(a.probe(e.addr), a.discover(nodes[0].addr))
        assert _post(lead, "/cluster/learner", {"node": "e"})[0] == 200
    d.kill()
    d.restart()
    for n, stage in ((d, "is a member of the cluster but not of the group yet"),
                     (e, "is a learner in the group's configuration but does not run the group yet")):
        assert main(["cluster", "add-node", n.addr, nodes[0].addr, "--yes"]) == 0, capsys.readouterr()
        out = capsys.readouterr().out
        assert f"Finishing the addition of node {n.id} ({n.addr})" in out and stage in out, out
        assert f"Node {n.id} caught up and is a voter of the group." in out, out
    r = poll(lambda: raft(lead), timeout=30, what="the leader's view")
    assert sorted(r["voters"]) == ["a", "b", "c", "d", "e"]
    for n in (d, e):
        assert read_ok(n, "k7") == b"v7"
    # f: the first run got as far as f joining the group as a learner; f was killed -9 at once
    f = launcher.node("f", extra=["--data-dir", str(tmp_path / "data-f")])
    with Admin(10.0) as a:
        a.add_node(a.probe(f.addr), a.discover(nodes[0].addr))
        lead = poll(lambda: leader(nodes), timeout=30, what="a leader")
        assert _post(lead, "/cluster/learner", {"node": "f"})[0] == 200
        assert _post(f, "/cluster/replicate", {"voters": ["a", "b", "c", "d", "e"], "learner": True})[0] == 200
    f.kill()
    f.restart()
    assert main(["cluster", "add-node", f.addr, nodes[0].addr, "--yes"]) == 0, capsys.readouterr()
    out = capsys.readouterr().out  # a learner still, or promoted by the leader meanwhile
    assert (("is a learner of the group already" in out and "Node f caught up and is a voter" in out)
            or "is a voter of the replicated group of a" in out), out
    assert "f" in poll(lambda: raft(lead), timeout=30, what="the leader's view")["voters"]
    assert read_ok(f, "k3") == b"v3"
    # once more: nothing left to do
    assert main(["cluster", "add-node", d.addr, nodes[0].addr, "--yes"]) == 0
    assert (f"Node d ({d.addr}) is a voter of the replicated group of a ({nodes[0].addr}) already. "
            "Nothing to do.") in capsys.readouterr().out
    # a node that runs a group of its own belongs to no cluster here: refused, nothing changed
    solo = launcher.node("solo", extra=["--data-dir", str(tmp_path / "data-solo")])
    assert _post(solo, "/cluster/replicate", {"voters": ["solo"]})[0] == 200
    assert main(["cluster", "add-node", solo.addr, nodes[0].addr, "--yes"]) == 1
    err = capsys.readouterr().err
    assert f"Node solo ({solo.addr}) already runs a replicated group (voters solo)" in err, err
    assert err.count("already runs a replicated group") == 1, err  # said once
    assert "Refused to add the node; nothing was changed" in err
    assert "solo" not in (raft(lead) or {}).get("learners", [])


def remove_once_answering(lead: NodeProc, victim: NodeProc, capsys: pytest.CaptureFixture[str]) -> None:
    """Once the cluster's view shows ``victim`` answering, ``remove-node`` it: a node already out
    of the group's configuration only leaves (its process then exits)."""
    from realnet.cli import main

    def answering() -> bool:
        with Admin(5.0) as a:
            view = a.discover(lead.addr).nodes.get(victim.id)
        return view is not None and view.reachable

    poll(answering, timeout=30, what="the victim answering in the cluster's view")
    assert main(["cluster", "remove-node", lead.addr, victim.id, "--yes"]) == 0, capsys.readouterr()
    assert "no longer in the group's configuration" in capsys.readouterr().out


def test_a_node_removed_while_stopped_learns_it_and_remove_node_finishes_its_leave(
        launcher: Launcher, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Thesis §4.2.3 on real processes: a voter is frozen (SIGSTOP) while the group removes it.
    Thawed, it campaigns, is told (RaftRemoved), stops, answers clients 503 removed, and says so
    in its info and metrics; ``verify`` names it; ``remove-node`` then only makes it leave."""
    import signal

    from realnet.cli import main

    nodes = [launcher.node(nid, extra=["--data-dir", str(tmp_path / f"data-{nid}")]) for nid in "abcd"]
    with Admin(10.0) as a:
        replicacli.create(a, [a.probe(n.addr) for n in nodes])
    lead = poll(lambda: leader(nodes), timeout=30, what="a leader")
    victim = next(n for n in nodes if n is not lead)
    victim.signal(signal.SIGSTOP)
    try:
        status, body = _post(lead, "/cluster/remove-voter", {"node": victim.id})
        assert status == 200, body
        poll(lambda: victim.id not in (raft(lead) or {"voters": [victim.id]})["voters"], timeout=30,
             what="the leader's configuration without the victim")
        assert lead.request("PUT", kv_path("after"), b"1")[0] == 204  # committed past the change
    finally:
        victim.signal(signal.SIGCONT)
    r = poll(lambda: (raft(victim) or {}).get("removed_at"), timeout=30, what="the victim to learn")
    assert r >= 2
    # and says so in its log (RaftConfig.notable, at INFO), as the leader said it was elected
    assert f"INFO [{victim.id}] realnet.raft: {victim.id} learned from " in victim.log_text()
    assert "removed it, and stops campaigning" in victim.log_text()
    assert f"INFO [{lead.id}] realnet.raft: {lead.id} became leader at term" in lead.log_text()
    status, _, body = victim.request("GET", kv_path("after"))
    assert status == 503 and json.loads(body)["error"] == "removed", body
    assert metric(victim, "storelab_raft_removed") == 1 and metric(lead, "storelab_raft_removed") == 0
    assert main(["cluster", "verify", lead.addr]) == 1
    assert f"Node {victim.id} was removed from the group" in capsys.readouterr().out

    remove_once_answering(lead, victim, capsys)
    assert victim.wait(timeout=30) == 0  # it left: its process exits
    # started again on the same data directory, it would come back a zombie (campaigning for a
    # group that removed it): it refuses to start and says what to do
    victim.launch(victim.args)
    assert victim.wait(timeout=30) == 2
    assert f"Node {victim.id!r} left its cluster" in victim.log_text()
    assert "give it an empty --data-dir" in victim.log_text()


def test_snapshots_in_real_processes_compact_install_and_survive_a_kill(
        launcher: Launcher, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``[raft] snapshot_entries`` small: every node compacts (its image built in steps, the
    file written off the loop), a node added later installs the leader's snapshot, and a
    follower killed with -9 comes back from its snapshot and log."""
    from realnet.cli import main

    raft_settings = {"snapshot_entries": 40, "image_chunk": 8}
    nodes = [launcher.node(nid, raft=raft_settings, extra=["--data-dir", str(tmp_path / f"data-{nid}")])
             for nid in "abc"]
    with Admin(10.0) as a:
        replicacli.create(a, [a.probe(n.addr) for n in nodes])
    lead = poll(lambda: leader(nodes), timeout=30, what="a leader")
    for i in range(150):
        assert lead.request("PUT", kv_path(f"k{i % 60}"), f"v{i}".encode())[0] == 204
    for n in nodes:
        poll(lambda n=n: (raft(n) or {}).get("first_index", 0) > 41, timeout=30, what=f"{n.id} to compact")
        snaps = list((tmp_path / f"data-{n.id}" / RAFT_DIR).glob(f"raft-{GROUP}.snap-*"))
        assert len(snaps) == 1 and not snaps[0].name.endswith(".tmp"), snaps
        stats = (raft(n) or {})["stats"]
        assert stats["snapshots_taken"] >= 1 and stats["image_steps"] >= 1  # 60 keys, 8 a turn
    d = launcher.node("d", raft=raft_settings, extra=["--data-dir", str(tmp_path / "data-d")])
    assert main(["cluster", "add-node", d.addr, nodes[0].addr, "--yes"]) == 0, capsys.readouterr()
    poll(lambda: (raft(d) or {}).get("stats", {}).get("snapshots_installed", 0) >= 1, timeout=30,
         what="d to install the leader's snapshot")
    follower = next(n for n in nodes if n is not lead)
    follower.kill()
    follower.restart()
    last = {i % 60: i for i in range(150)}  # each key's last write
    for n in (d, follower):
        for k in (0, 29, 59):
            assert read_ok(n, f"k{k}") == f"v{last[k]}".encode()
    assert (raft(follower) or {}).get("first_index", 0) > 41  # it came back from its snapshot


def test_a_node_without_a_data_dir_refuses_to_form_a_group(launcher: Launcher) -> None:
    n = launcher.node("solo")
    status, body = _post(n, "/cluster/replicate", {"voters": ["solo"]})
    assert status == 409, body
    out = json.loads(body)
    assert out["error"] == "conflict" and "--data-dir" in out["message"]
    assert n.info()["raft"] is None


def _post(n: NodeProc, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", n.port, timeout=10.0)
    try:
        conn.request("POST", path, body=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_a_corrupt_or_missing_log_stops_the_start_with_a_sentence(launcher: Launcher, tmp_path: Path) -> None:
    """A damaged log is refused; so is a missing one, which the node used to recreate empty (two
    members started on empty logs made a second leader for term 1 and lost acknowledged keys)."""
    nodes = start_group(launcher, tmp_path)
    lead = poll(lambda: leader(nodes), timeout=30, what="a leader")
    for i in range(5):
        assert lead.request("PUT", kv_path(f"c{i}"), b"x")[0] == 204
    victim = next(n for n in nodes if n is not lead)
    victim.kill()
    path = tmp_path / f"data-{victim.id}" / RAFT_DIR / f"raft-{GROUP}.log"
    data = bytearray(path.read_bytes())
    data[20] ^= 0xFF  # inside the first record's body, with valid records after it: corruption
    path.write_bytes(bytes(data))
    victim.launch(victim.args)
    assert victim.wait(timeout=30) == 2
    text = victim.log_text()
    assert "damaged Raft log" in text and str(path) in text
    path.unlink()
    victim.launch(victim.args)
    assert victim.wait(timeout=30) == 2
    text = victim.log_text()
    assert (f"storelab node: The Raft log {path} is missing, but this node is a member of a replicated "
            "group") in text, text[-3000:]
    assert ("The node does not start without its Raft log; restore the data directory, or remove it and "
            "add the node again (add-node).") in text
    assert "Traceback" not in text and not path.exists()  # not recreated empty


#: Test hook, a ``sitecustomize`` on the node's PYTHONPATH: once the file that
#: ``STORELAB_TEST_FAIL_RAFT`` names exists, every fsync of the node's Raft log fails with EIO,
#: as on a dying disk (the process cannot tell). Nothing of it ships with the node.
FAULT_HOOK = """
import errno
import os

_trigger = os.environ.get("STORELAB_TEST_FAIL_RAFT", "")
_real_fsync = os.fsync


def _fsync(fd):
    if _trigger and os.path.exists(_trigger):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if target.endswith("/raft-0.log"):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
    return _real_fsync(fd)


os.fsync = _fsync
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the hook names an fd's file through /proc")
def test_a_node_whose_raft_log_fsync_fails_exits_1_and_the_group_goes_on(
        launcher: Launcher, tmp_path: Path) -> None:
    """The audit's zombie: the failure was swallowed by a timer, the node kept running, called
    itself leader while the others elected another, and answered every request 504."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(FAULT_HOOK)
    path_env = os.pathsep.join(p for p in (str(hook), os.environ.get("PYTHONPATH", "")) if p)
    nodes = [launcher.node(nid, extra=["--data-dir", str(tmp_path / f"data-{nid}")],
                           env={"PYTHONPATH": path_env, "STORELAB_TEST_FAIL_RAFT": str(tmp_path / f"fail-{nid}")})
             for nid in ("a", "b", "c")]
    with Admin(10.0) as a:
        replicacli.create(a, [a.probe(n.addr) for n in nodes])
    lead = poll(lambda: leader(nodes), timeout=30, what="a leader")
    for i in range(5):
        assert lead.request("PUT", kv_path(f"k{i}"), b"before")[0] == 204
    trigger = tmp_path / f"fail-{lead.id}"
    trigger.touch()
    try:
        status, _, body = lead.request("PUT", kv_path("lost"), b"x", timeout=30.0)
    except (OSError, http.client.HTTPException):
        status, body = 0, b""  # the connection closed unanswered
    assert status not in (200, 204), (status, body)
    assert lead.wait(timeout=30) == 1
    text = lead.log_text()
    log_path = tmp_path / f"data-{lead.id}" / RAFT_DIR / f"raft-{GROUP}.log"
    assert (f"CRITICAL [{lead.id}] realnet.node: a write or fsync of {log_path} failed ([Errno 5] "
            "Input/output error); stopping, so that a restart recovers from what is on disk") in text, text[-3000:]
    assert "the node keeps running" not in text
    rest = [n for n in nodes if n is not lead]
    new = poll(lambda: leader(rest), timeout=30, what="a leader of the two left")
    assert new.request("PUT", kv_path("after"), b"yes")[0] == 204
    trigger.unlink()
    lead.restart()
    poll(lambda: leader(nodes), timeout=60, what="a leader every node names")
    for n in nodes:
        assert read_ok(n, "after") == b"yes" and read_ok(n, "k4") == b"before"


def test_the_client_reaches_every_key_while_its_map_names_a_dead_then_removed_voter(
        launcher: Launcher, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``create --replicas 3`` splits the slot map among the voters (they become one cluster
    first), but the group serves every slot on every node. A smart client whose map names a
    voter that was killed sends those keys to another node it knows, which serves them: no key
    fails with "cannot reach node". Once ``remove-node`` has removed it (down: its leave is not
    confirmed), the voters claim its slots' hints, and a fresh client's first hop is a voter."""
    from realnet.cli import main

    nodes = start_group(launcher, tmp_path)
    lead = poll(lambda: leader(nodes), timeout=30, what="a leader")
    seed = nodes[2]
    # a follower other than the seed: its death leaves the leader and a quorum in place
    victim = next(n for n in nodes if n is not lead and n is not seed)
    keys = [f"key-{i}" for i in range(30)]
    with Client(seed.addr, timeout=5.0) as c:
        for k in keys:
            c.set(k, k)
        theirs = [k for k in keys if c.owner_addr(k) == victim.addr]
        assert theirs, "the map names the victim for none of the keys"
        victim.kill()
        for k in keys:  # the client holds a keep-alive connection to the victim: it breaks
            assert c.get(k) == k.encode(), k
        c.set(theirs[0], "after the kill")
        assert c.get(theirs[0]) == b"after the kill"
        assert c.fallbacks >= len(theirs)
        assert main(["cluster", "remove-node", seed.addr, victim.id, "--yes"]) == 0, capsys.readouterr()
        capsys.readouterr()
    with Client(seed.addr, timeout=5.0) as c:  # a fresh client: the voters took the victim's hints
        assert [k for k in keys if c.owner_addr(k) == victim.addr] == []
        assert c.delete(theirs[1]) is True
        for k in keys:
            assert c.get(k) == (None if k == theirs[1] else b"after the kill" if k == theirs[0] else k.encode())
        assert c.fallbacks == 0


def test_info_and_remove_node_when_a_voter_is_down(
        launcher: Launcher, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A killed voter did not answer: ``info`` says ``?`` (null) for it, not "not a voter", and
    counts the group as it is. ``remove-node`` of it removes it (committed) and says that it could
    not be asked to leave (exit 0); back, it learns it was removed and answers 503 removed, and
    ``remove-node`` then makes it leave."""
    from realnet.cli import main

    nodes = start_group(launcher, tmp_path)
    lead = poll(lambda: leader(nodes), timeout=30, what="a leader")
    victim = next(n for n in nodes if n is not lead)
    victim.kill()
    assert main(["cluster", "info", lead.addr, "--json"]) == 0
    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)["nodes"]}
    assert (rows[victim.id]["answered"], rows[victim.id]["voter"]) == (False, None)
    assert all(r["voter"] is True for nid, r in rows.items() if nid != victim.id)
    assert main(["cluster", "info", lead.addr]) == 0
    out = capsys.readouterr().out
    (row,) = [line.split() for line in out.splitlines() if line.startswith(f"{victim.id} ")]
    assert row[3:] == ["?"] * 6  # role, term, commit, applied, voter, keys
    assert f"3 voters ({victim.id} did not answer) in one replicated group; leader: {lead.id} " in out
    # fix has no hint to mend (a voter that does not answer keeps its slots) but says what verify
    # would report and it does not fix, as verify does (exit 1)
    assert main(["cluster", "fix", lead.addr, "--yes"]) == 1
    out, err = capsys.readouterr()
    assert "nothing to fix" in out and "fix mends only the slot map's hints of a replicated cluster" in out, out
    assert f"storelab: Voter {victim.id} is " in err, err

    assert main(["cluster", "remove-node", lead.addr, victim.id, "--yes"]) == 0
    out = capsys.readouterr().out
    assert (f"Node {victim.id} was removed from the group (the configuration change is committed), but its "
            f"leave from the cluster is not confirmed: Cannot reach node {victim.addr}: ") in out
    assert f"`storelab cluster remove-node {lead.addr} {victim.id}` then makes it leave" in out
    assert victim.id not in (raft(lead) or {})["voters"]
    assert main(["cluster", "info", lead.addr]) == 0
    out = capsys.readouterr().out
    assert (f"2 voters in one replicated group; {victim.id} is a member of the cluster but not of the "
            f"group; leader: {lead.id} ") in out

    victim.restart()
    poll(lambda: (raft(victim) or {}).get("removed_at"), timeout=30, what="the victim to learn")
    status, _, body = victim.request("GET", kv_path("k"))
    assert status == 503 and json.loads(body)["error"] == "removed", body

    remove_once_answering(lead, victim, capsys)
    assert victim.wait(timeout=30) == 0
    assert main(["cluster", "info", lead.addr]) == 0
    out = capsys.readouterr().out
    assert f"2 voters in one replicated group; 1 member left the cluster ({victim.id}); leader: " in out


def test_a_request_forwarded_by_a_node_outside_the_group_goes_through_the_group(
        launcher: Launcher, tmp_path: Path) -> None:
    """An audit's split brain: a node that met the cluster but never joined the group (add-node
    cut short after its meet) forwards by the slot map; the member it asked wrote the key into
    its own store, outside the log (one replica only, acknowledged), and read from it (stale).
    A forwarded request now goes through the group on every member."""
    nodes = start_group(launcher, tmp_path)
    a = nodes[0]
    assert a.request("PUT", kv_path("k0"), b"v-group")[0] == 204
    f = launcher.node("f", extra=["--data-dir", str(tmp_path / "data-f")])
    status, body = _post(f, "/cluster/meet", {"seeds": [a.peer_addr]})
    assert status == 200, body
    # (a member answers a forward to the peer it knows: every member must hold f alive too)
    poll(lambda: all([m["state"] for m in n.get_json("/cluster/members")] == ["alive"] * 4 for n in [*nodes, f]),
         timeout=30, what="every node to hold every member alive")
    assert (raft(f) or {}).get("role") is None  # f is not in the group
    for i in range(20):  # keys over every member's share of the slot map
        status, _, body = f.request("PUT", kv_path(f"fk{i}"), f"from-f-{i}".encode())
        assert status == 204, (i, status, body)
    for n in nodes:
        for i in range(20):
            assert read_ok(n, f"fk{i}") == f"from-f-{i}".encode(), (n.id, i)
        assert read_ok(n, "k0") == b"v-group"
    caught_up(nodes)
    keys = {n.id: n.info()["keys"] for n in nodes}
    assert len(set(keys.values())) == 1 and keys[a.id] == 21, keys  # the same store on every replica


def slot_maps(nodes: list[NodeProc]) -> dict[str, list[tuple[int, int, str]]]:
    """Each node's ``/cluster/slots`` as (start, end, owner) runs."""
    return {n.id or "": [(r["start"], r["end"], r["node"]) for r in n.get_json("/cluster/slots")["slots"]]
            for n in nodes}


def names_only(nodes: list[NodeProc], voters: list[str]) -> bool:
    """Every node's map names only ``voters``, every slot, each within one slot of the others,
    and all maps are the same."""
    maps = slot_maps(nodes)
    counts: dict[str, int] = {}
    for lo, hi, owner in next(iter(maps.values())):
        counts[owner] = counts.get(owner, 0) + hi - lo + 1
    return (len({json.dumps(m) for m in maps.values()}) == 1 and sorted(counts) == sorted(voters)
            and sum(counts.values()) == 16384 and max(counts.values()) - min(counts.values()) <= 1)


def test_the_slot_map_names_only_the_voters_after_add_node_and_remove_node_and_fix_mends_it(
        launcher: Launcher, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A soak audit's gap: on a replicated cluster ``remove-node`` left the departed voter's
    slot ranges in the map (``/cluster/slots`` named it 20 minutes after it left) and
    ``add-node`` gave a new voter no share, so after members turned over every smart client's
    first hop for those slots went to a dead address. Now a new voter takes its even share once
    it votes, a removed one's slots go to the voters holding fewest, every node's map names only
    the voters, and every key written before is still read from every node. A map left naming a
    node outside the group (its removal made by hand) is what ``verify`` reports, naming
    ``fix``, which mends it. And the id of a voter that remove-node took out is free again."""
    from realnet.cli import main

    nodes = start_group(launcher, tmp_path)
    a, b, c = nodes
    lead = poll(lambda: leader(nodes), timeout=30, what="a leader")
    keys = {f"key-{i}": f"value-{i}" for i in range(60)}
    for k, v in keys.items():
        assert lead.request("PUT", kv_path(k), v.encode())[0] == 204
    d = launcher.node("d", extra=["--data-dir", str(tmp_path / "data-d")])
    assert main(["cluster", "add-node", d.addr, a.addr, "--yes"]) == 0, capsys.readouterr()
    out = capsys.readouterr().out
    assert "Node d caught up and is a voter of the group." in out, out
    assert "d claimed 4096 slots (1365 from a, 1366 from b, 1365 from c)" in out, out
    every = [a, b, c, d]
    poll(lambda: names_only(every, ["a", "b", "c", "d"]), timeout=30, what="every map to name a, b, c, d evenly")

    assert main(["cluster", "remove-node", b.addr, "a", "--yes"]) == 0, capsys.readouterr()
    out = capsys.readouterr().out
    assert "Node a left the group and the cluster." in out, out
    assert "now name only the group's voters, spread evenly among those that answered: " in out and "from a)" in out, out
    assert a.wait(timeout=30) == 0
    rest = [b, c, d]
    assert names_only(rest, ["b", "c", "d"]), slot_maps(rest)  # done when the command returns
    assert sorted((raft(b) or {})["voters"]) == ["b", "c", "d"]
    for n in rest:
        for k, v in keys.items():
            assert read_ok(n, k) == v.encode(), (n.id, k)
    with Client(b.addr, timeout=5.0) as cl:
        assert not [k for k in keys if cl.owner_addr(k) == a.addr]
        assert all(cl.get(k) == v.encode() for k, v in keys.items()) and cl.fallbacks == 0
    assert main(["cluster", "verify", b.addr]) == 0, capsys.readouterr()
    assert "every slot's hint names a voter" in capsys.readouterr().out

    # a removal by hand (the group's verbs, not remove-node) leaves c's slots in the map
    lead = poll(lambda: leader(rest), timeout=30, what="a leader")
    if lead is c:
        assert main(["cluster", "failover", b.addr, "--to", "b", "--yes"]) == 0
        lead = poll(lambda: leader(rest) if leader(rest) is b else None, timeout=30, what="b to lead")
    capsys.readouterr()
    assert _post(lead, "/cluster/remove-voter", {"node": "c"})[0] == 200
    poll(lambda: "c" not in (raft(lead) or {"voters": ["c"]})["voters"], timeout=30, what="c out of the group")
    assert _post(c, "/cluster/leave", {"force": True, "accept_loss": True})[0] == 202
    assert c.wait(timeout=30) == 0
    rest = [b, d]
    poll(lambda: all(n.states().get("c") == "left" for n in rest), timeout=30, what="b and d to hold c left")
    owned_by_c = [r for r in slot_maps(rest)["b"] if r[2] == "c"]
    assert owned_by_c, "the map still names c"
    assert main(["cluster", "verify", b.addr]) == 1
    out = capsys.readouterr().out
    assert (f"of b's slot map name c (it left the cluster), which is not a voter of the group: smart clients "
            f"send their keys there first; `storelab cluster fix {b.addr}` gives them to the voters.") in out, out
    assert main(["cluster", "fix", b.addr, "--yes"]) == 0, capsys.readouterr()
    out = capsys.readouterr().out
    assert "now name only the group's voters, spread evenly" in out and "from c)" in out, out
    assert names_only(rest, ["b", "d"]), slot_maps(rest)
    assert main(["cluster", "verify", b.addr]) == 0, capsys.readouterr()
    assert main(["cluster", "fix", b.addr, "--yes"]) == 0
    assert "nothing to fix" in capsys.readouterr().out
    for n in rest:
        for k, v in keys.items():
            assert read_ok(n, k) == v.encode(), (n.id, k)
    # a's id is free again: its hints were handed on (a member that left owning slots in the map
    # cannot be added again under its id: the map would give them to the new node)
    a2 = launcher.node("a", extra=["--data-dir", str(tmp_path / "data-a2")])
    assert main(["cluster", "add-node", a2.addr, b.addr, "--yes"]) == 0, capsys.readouterr()
    assert "a claimed 5461 slots (2730 from b, 2731 from d)" in capsys.readouterr().out
    assert names_only([b, d, a2], ["a", "b", "d"]), slot_maps([b, d, a2])
    assert read_ok(a2, "key-3") == b"value-3"
