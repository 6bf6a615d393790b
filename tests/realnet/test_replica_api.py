"""A replicated group's realnet side without processes: the Raft opener, the admin endpoints,
the /metrics families. The node is a real :class:`kvcore.node.Node` with the group's admin verbs
recorded by a test double (``Recorder``), so these tests pin what realnet sends and answers."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from kvcore import errors
from kvcore.config import NodeConfig
from kvcore.node import Node
from kvcore.raft.messages import Entry, HardState
from realnet import raftopen
from realnet.api import Api
from realnet.httpparse import Request
from realnet.raftopen import NEEDS_DATA_DIR, RaftOpener
from realnet.runtime import AsyncioRuntime
from realnet.transport import PeerTransport
from tests.realnet.inprocess import started_node


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


# --- the opener ----------------------------------------------------------------------------------


def test_the_opener_refuses_a_group_without_a_data_dir() -> None:
    for data_dir in (None, ""):
        opener = RaftOpener(data_dir, Clock())
        with pytest.raises(errors.Conflict) as err:
            opener(["a", "b", "c"], [])
        assert err.value.status == 409
        assert "--data-dir" in err.value.message and "vote" in err.value.message
        assert opener.current is None
    assert NEEDS_DATA_DIR.startswith("A replicated group needs a data directory")


def test_the_opener_keeps_the_log_under_data_dir_raft(tmp_path: Path) -> None:
    opener = RaftOpener(tmp_path, Clock())
    disk = opener(["a", "b", "c"], ["d"])
    assert opener.current is disk
    assert disk.load().snapshot.meta.conf.voters == ("a", "b", "c")
    disk.save(HardState(term=2, vote="b", commit=0), [Entry(term=2, index=1, data=b"x")], None)
    disk.sync()
    ran: list[int] = []
    disk.on_durable(lambda: ran.append(1))
    assert ran == [1]  # an fsync has returned: what was synced is durable at once
    opener.close()
    assert (tmp_path / "raft" / "raft-0.log").is_file()
    again = RaftOpener(tmp_path, Clock())(["a", "b", "c"], [])
    state = again.load()
    assert state.hard_state == HardState(term=2, vote="b", commit=0)
    assert [e.data for e in state.entries] == [b"x"]
    again.close()


def test_what_was_saved_but_not_synced_is_not_there_after_a_reopen(tmp_path: Path) -> None:
    opener = RaftOpener(tmp_path, Clock())
    disk = opener(["a"], [])
    disk.save(HardState(term=1, vote="a", commit=0), [Entry(term=1, index=1)], None)
    opener.close()
    assert RaftOpener(tmp_path, Clock())(["a"], []).load().entries == []


def test_commit_latency_is_first_save_to_the_save_that_commits(tmp_path: Path) -> None:
    clock = Clock()
    disk = RaftOpener(tmp_path, clock)(["a"], [])
    disk.save(None, [Entry(term=1, index=i) for i in (1, 2, 3)], None)
    clock.t += 0.25
    disk.save(HardState(term=1, vote="a", commit=2), [Entry(term=1, index=3)], None)  # 3 resent
    clock.t += 0.5
    disk.save(HardState(term=1, vote="a", commit=3), [], None)
    h = disk.commit_latency
    assert h.count == 3
    assert h.sum == pytest.approx(0.25 + 0.25 + 0.75)
    disk.save(HardState(term=1, vote="a", commit=3), [], None)  # no new commit: nothing observed
    assert h.count == 3
    disk.close()


def test_commit_latency_notes_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(raftopen, "MAX_PENDING", 4)
    disk = RaftOpener(tmp_path, Clock())(["a"], [])
    disk.save(None, [Entry(term=1, index=i) for i in range(1, 11)], None)
    assert disk.unmeasured == 6
    disk.save(HardState(term=1, commit=10), [], None)
    assert disk.commit_latency.count == 4
    disk.close()


# --- the admin endpoints ---------------------------------------------------------------------------


class FakeGroup:
    def __init__(self, voters: list[str]) -> None:
        self.voters = voters
        self.learners: list[str] = []

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def info(self) -> dict[str, Any]:
        return {"role": "leader", "term": 3, "leader": "n1", "commit": 7, "applied": 6,
                "voters": list(self.voters), "learners": list(self.learners),
                "stats": {"proposals": 5, "dropped": 1, "leader_changes": 2, "timeouts": 0},
                "raft_stats": {"campaigns": 2, "became_leader": 1}}


class Recorder(Node):
    """Test only: a node whose replicated-group verbs record their calls (the realnet side is
    what is under test; kvcore's own tests cover the verbs)."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.calls: list[tuple[str, Any]] = []
        self.replica: FakeGroup | None = None
        self.refuse: errors.StoreError | None = None

    def _verb(self, name: str, arg: Any) -> int:
        self.calls.append((name, arg))
        if self.refuse is not None:
            raise self.refuse
        return 12

    def form_group(self, voters: list[str]) -> None:
        self._verb("form_group", voters)
        self.replica = FakeGroup(voters)

    def transfer_leader(self, to: str) -> None:
        self._verb("transfer_leader", to)

    def add_learner(self, node: str) -> int:
        return self._verb("add_learner", node)

    def promote(self, node: str) -> int:
        return self._verb("promote", node)

    def remove_voter(self, node: str) -> int:
        return self._verb("remove_voter", node)

    def info(self) -> dict[str, Any]:
        out = super().info()
        out["raft"] = self.replica.info() if self.replica is not None else None
        return out


def _post(path: str, body: Any, token: str | None = None) -> Request:
    headers = {"host": "h", "content-type": "application/json"}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    return Request("POST", path, path, "", "HTTP/1.1", headers, json.dumps(body).encode(), None)


def _with_api(test: Any, admin_token: str | None = None, node_cls: type[Node] | None = None) -> None:
    """Run ``test(api, node)`` on one in-process node (a :class:`Recorder` unless ``node_cls``)."""
    async def body() -> None:
        node, transport = started_node(node_cls or Recorder)
        try:
            await test(Api(node, transport, loop=asyncio.get_running_loop(), admin_token=admin_token), node)
        finally:
            node.stop()
            await transport.close()

    asyncio.run(body())


def _answer(api: Api, req: Request) -> tuple[int, Any]:
    resp = api(req)
    assert hasattr(resp, "status"), resp
    return resp.status, json.loads(resp.body)  # type: ignore[union-attr]


def test_each_endpoint_calls_its_node_verb_and_answers_with_the_raft_view() -> None:
    async def test(api: Api, node: Recorder) -> None:
        status, out = _answer(api, _post("/cluster/replicate", {"voters": ["n1", "n2", "n3"]}))
        assert status == 200 and out["voters"] == ["n1", "n2", "n3"] and out["raft"]["term"] == 3
        for path, body, verb in (
            ("/cluster/failover", {"to": "n2"}, "transfer_leader"),
            ("/cluster/learner", {"node": "n4"}, "add_learner"),
            ("/cluster/promote", {"node": "n4"}, "promote"),
            ("/cluster/remove-voter", {"node": "n3"}, "remove_voter"),
        ):
            status, out = _answer(api, _post(path, body))
            assert status == 200, out
            assert node.calls[-1] == (verb, next(iter(body.values())))
            assert out["raft"]["role"] == "leader"
        assert out["index"] == 12
        assert [c[0] for c in node.calls] == ["form_group", "transfer_leader", "add_learner", "promote",
                                              "remove_voter"]

    _with_api(test)


@pytest.mark.parametrize(("path", "body", "needle"), [
    ("/cluster/replicate", {}, "'voters' is required"),
    ("/cluster/replicate", {"voters": []}, "non-empty list"),
    ("/cluster/replicate", {"voters": "n1,n2"}, "non-empty list"),
    ("/cluster/replicate", {"voters": ["n1", 2]}, "node id"),
    ("/cluster/replicate", {"voters": ["n1", "n1"]}, "twice"),
    ("/cluster/replicate", {"voters": ["n2", "n3"]}, "include this node"),
    ("/cluster/replicate", {"voters": ["n1"] + [f"x{i}" for i in range(7)]}, "at most 7"),
    ("/cluster/failover", {}, "'to' is required"),
    ("/cluster/failover", {"to": ""}, "node id"),
    ("/cluster/learner", {"node": "a b"}, "without spaces"),
    ("/cluster/promote", {"node": None}, "node id"),
    ("/cluster/remove-voter", {}, "'node' is required"),
])
def test_bad_bodies_are_400_with_a_sentence_and_reach_no_verb(path: str, body: Any, needle: str) -> None:
    async def test(api: Api, node: Recorder) -> None:
        status, out = _answer(api, _post(path, body))
        assert status == 400 and out["error"] == "bad_request"
        assert needle in out["message"] and out["message"].endswith(".")
        assert node.calls == []

    _with_api(test)


@pytest.mark.parametrize("err", [
    errors.NoLeader("no leader is known now"),
    errors.Conflict("a configuration change must be asked of the leader; n2 is"),
    errors.Conflict(NEEDS_DATA_DIR),
])
def test_the_nodes_refusals_keep_their_status_and_code(err: errors.StoreError) -> None:
    async def test(api: Api, node: Recorder) -> None:
        node.refuse = err
        status, out = _answer(api, _post("/cluster/learner", {"node": "n4"}))
        assert (status, out["error"]) == (err.status, err.code)
        assert out["message"].rstrip(".") == err.message[0].upper() + err.message[1:].rstrip(".")

    _with_api(test)


def test_no_leader_is_503_no_leader() -> None:
    assert (errors.NoLeader.status, errors.NoLeader.code) == (503, "no_leader")


def test_the_endpoints_are_guarded_by_the_admin_token() -> None:
    async def test(api: Api, node: Recorder) -> None:
        for path in ("/cluster/replicate", "/cluster/failover", "/cluster/learner", "/cluster/promote",
                     "/cluster/remove-voter"):
            resp = api(_post(path, {"voters": ["n1"], "to": "n1", "node": "n1"}))
            assert resp.status == 401  # type: ignore[union-attr]
        assert node.calls == []
        status, _ = _answer(api, _post("/cluster/replicate", {"voters": ["n1"]}, token="s3cret-token"))
        assert status == 200

    _with_api(test, admin_token="s3cret-token")


# --- /metrics ------------------------------------------------------------------------------------------


def test_metrics_declare_no_raft_family_without_a_group_and_all_of_them_with_one(tmp_path: Path) -> None:
    async def test(api: Api, node: Recorder) -> None:
        def families() -> dict[str, Any]:
            text = generate_latest(api.registry).decode()
            return {f.name: f for f in text_string_to_metric_families(text)}

        assert not [n for n in families() if n.startswith("storelab_raft")]
        node.replica = FakeGroup(["n1", "n2", "n3"])
        clock = Clock()
        opener = RaftOpener(tmp_path, clock)
        api.raft_opener = opener  # type: ignore[attr-defined]
        disk = opener(["n1", "n2", "n3"], [])
        disk.save(None, [Entry(term=1, index=1)], None)
        clock.t += 0.003
        disk.save(HardState(term=1, commit=1), [], None)
        disk.sync()
        fams = families()
        roles = {s.labels["role"]: s.value for s in fams["storelab_raft_role"].samples}
        assert roles == {"follower": 0, "pre-candidate": 0, "candidate": 0, "leader": 1}
        one = {name: fams[name].samples[0].value for name in (
            "storelab_raft_term", "storelab_raft_commit_index", "storelab_raft_applied_index",
            "storelab_raft_voters", "storelab_raft_learners", "storelab_raft_elections",
            "storelab_raft_leader_changes", "storelab_raft_proposals", "storelab_raft_dropped",
            "storelab_raft_log_syncs")}
        assert one == {"storelab_raft_term": 3, "storelab_raft_commit_index": 7,
                       "storelab_raft_applied_index": 6, "storelab_raft_voters": 3,
                       "storelab_raft_learners": 0, "storelab_raft_elections": 2,
                       "storelab_raft_leader_changes": 2, "storelab_raft_proposals": 5,
                       "storelab_raft_dropped": 1, "storelab_raft_log_syncs": 1}
        events = {s.labels["event"] for s in fams["storelab_raft_events"].samples}
        assert events == {"timeouts", "core_became_leader"}
        hist = {(s.name, s.labels.get("le")): s.value
                for s in fams["storelab_raft_commit_latency_seconds"].samples}
        assert hist[("storelab_raft_commit_latency_seconds_count", None)] == 1
        assert hist[("storelab_raft_commit_latency_seconds_bucket", "0.0025")] == 0
        assert hist[("storelab_raft_commit_latency_seconds_bucket", "0.005")] == 1
        opener.close()

    _with_api(test)


def test_a_joining_learner_forms_an_empty_group() -> None:
    """``"learner": true``: the node is not among the voters; it forms an empty group that the
    leader's log teaches (kvcore's ``form_group([])``)."""
    async def test(api: Api, node: Recorder) -> None:
        status, out = _answer(api, _post("/cluster/replicate", {"voters": ["a", "b", "c"], "learner": True}))
        assert status == 200 and out["learner"] is True
        assert node.calls == [("form_group", [])]
        status, out = _answer(api, _post("/cluster/replicate", {"voters": ["n1", "b"], "learner": True}))
        assert status == 400 and out["message"].startswith("A learner is not among the voters")
        status, out = _answer(api, _post("/cluster/replicate", {"voters": ["a"], "learner": "yes"}))
        assert status == 400 and "'learner' must be true or false" in out["message"]
        assert len(node.calls) == 1

    _with_api(test)


def test_a_refusal_that_names_a_node_keeps_its_id_as_it_is() -> None:
    """Node ids are case-sensitive: a node called ``e`` that runs no group says "Node e is not in a
    replicated group.", never "E is not ..." (kvcore names the node after the word "node"; the API
    capitalises only a word of its own)."""
    async def body() -> None:
        loop = asyncio.get_running_loop()
        runtime = AsyncioRuntime("e", loop=loop, rng=random.Random(1))
        node = Node(runtime, NodeConfig())
        transport = PeerTransport(node_id="e", on_message=node.on_message, node_stats=node.stats,
                                  rng=runtime.random, loop=loop)
        runtime.sink = transport
        node.start()
        try:
            api = Api(node, transport, loop=loop)
            status, out = _answer(api, _post("/cluster/failover", {"to": "r4"}))
            assert (status, out["error"]) == (409, "conflict")
            assert out["message"] == "Node e is not in a replicated group."
        finally:
            node.stop()
            await transport.close()

    asyncio.run(body())


@pytest.mark.parametrize("message", ["e is not a voter", "r4 was removed from the replicated group"])
def test_a_refusal_that_starts_with_an_id_is_not_capitalised(message: str) -> None:
    async def test(api: Api, node: Recorder) -> None:
        node.refuse = errors.Conflict(message)
        status, out = _answer(api, _post("/cluster/remove-voter", {"node": "n4"}))
        assert (status, out["message"]) == (409, message + ".")

    _with_api(test)
