"""A 3-node static cluster of real processes: routing, the HTTP API, the smart client."""

from __future__ import annotations

import json

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kvcore.slots import key_slot
from realnet.client import Client, kv_path
from tests.realnet.conftest import Cluster, free_ports, poll

pytestmark = pytest.mark.realnet  # starts real node processes


def owner_of(key: bytes) -> str:
    s = key_slot(key)
    return "a" if s <= 5460 else "b" if s <= 10922 else "c"


def forwards_sent(cluster: Cluster) -> dict[str, int]:
    return {n.id: n.info()["stats"]["forwards_sent"] for n in cluster}  # type: ignore[misc]


def test_keys_written_through_one_node_are_read_and_deleted_through_the_others(
    cluster3: Cluster,
) -> None:
    a, b, c = cluster3["a"], cluster3["b"], cluster3["c"]
    keys = [f"user:{i}".encode() for i in range(300)]
    assert {owner_of(k) for k in keys} == {"a", "b", "c"}
    for k in keys:
        status, _, body = a.request("PUT", kv_path(k), b"v-" + k)
        assert status == 204, (k, status, body)
    readers = (b, c)
    for i, k in enumerate(keys):
        status, headers, body = readers[i % 2].request("GET", kv_path(k))
        assert (status, body) == (200, b"v-" + k)
        assert headers["content-type"] == "application/octet-stream"
    deleters = (c, b)
    for i, k in enumerate(keys):
        status, _, body = deleters[i % 2].request("DELETE", kv_path(k))
        assert status == 204, (k, status, body)
    for i, k in enumerate(keys):
        status, _, body = readers[i % 2].request("GET", kv_path(k))
        assert status == 404
        assert json.loads(body)["error"] == "not_found"
        status, _, body = deleters[i % 2].request("DELETE", kv_path(k))
        assert status == 404
    # the writes really went through forwards to the owners
    assert a.info()["stats"]["forwards_sent"] > 0
    assert sum(n.info()["keys"] for n in cluster3) == 0


def test_keys_are_percent_decoded_bytes(cluster3: Cluster) -> None:
    a, b = cluster3["a"], cluster3["b"]
    key = b"dir/sub \xff{tag}?&#"
    assert a.request("PUT", kv_path(key), b"x")[0] == 204
    assert b.request("GET", kv_path(key))[2] == b"x"
    # an unencoded slash is part of the key too
    assert a.request("PUT", "/kv/p/q", b"slash")[0] == 204
    assert b.request("GET", "/kv/p%2Fq")[2] == b"slash"
    # a query string is not part of the key
    assert c_get(cluster3, "/kv/p%2Fq?x=1") == (200, b"slash")
    status, _, body = a.request("GET", "/kv/")
    assert status == 400 and json.loads(body)["error"] == "bad_request"


def test_an_empty_value_is_a_value_and_head_has_no_body(cluster3: Cluster) -> None:
    a, b = cluster3["a"], cluster3["b"]
    key = b"empty-value"
    assert b.request("PUT", kv_path(key), b"")[0] == 204
    assert a.request("GET", kv_path(key))[:1] == (200,)
    assert a.request("GET", kv_path(key))[2] == b""
    assert b.request("PUT", kv_path(key), b"12345")[0] == 204
    status, headers, body = a.request("HEAD", kv_path(key))
    assert (status, headers["content-length"], body) == (200, "5", b"")
    assert a.request("HEAD", kv_path(b"absent-head"))[0] == 404


def c_get(cluster: Cluster, path: str) -> tuple[int, bytes]:
    status, _, body = cluster["c"].request("GET", path)
    return status, body


def test_unknown_paths_and_wrong_methods_are_json_errors(cluster3: Cluster) -> None:
    a = cluster3["a"]
    status, _, body = a.request("GET", "/nope")
    assert status == 404
    err = json.loads(body)
    assert err["error"] == "not_found" and "/nope" in err["message"]
    status, headers, body = a.request("POST", "/kv/x", b"1")
    assert status == 405
    assert headers["allow"] == "GET, HEAD, PUT, DELETE"
    assert json.loads(body)["error"] == "method_not_allowed"
    status, headers, _ = a.request("DELETE", "/cluster/slots")
    assert status == 405 and headers["allow"] == "GET, HEAD"


def test_cluster_views_list_every_node_with_its_client_address(cluster3: Cluster) -> None:
    a = cluster3["a"]
    slots = a.get_json("/cluster/slots")
    assert slots["epoch"] == 1 and slots["unassigned"] == ""
    assert [(r["start"], r["end"], r["node"], r["addr"]) for r in slots["slots"]] == [
        (0, 5460, "a", cluster3["a"].addr),
        (5461, 10922, "b", cluster3["b"].addr),
        (10923, 16383, "c", cluster3["c"].addr),
    ]
    members = a.get_json("/cluster/members")
    assert [m["id"] for m in members] == ["a", "b", "c"]
    assert [m["self"] for m in members] == [True, False, False]
    assert [m["slots"] for m in members] == ["0-5460", "5461-10922", "10923-16383"]
    for m in members:
        assert m["addr"] == cluster3[m["id"]].addr
        assert m["peer_addr"] == cluster3[m["id"]].peer_addr
        # a static cluster starts everyone alive at incarnation 0; a stalled process on a busy
        # machine may have been suspected and refuted since (a higher incarnation)
        assert m["state"] in ("alive", "suspect") and m["incarnation"] >= 0
        assert m["epoch"] == 1
    info = a.info()
    assert info["id"] == "a" and info["mode"] == "cluster" and info["slots_owned"] == 5461
    assert info["members"]["alive"] + info["members"]["suspect"] == 3 and info["joined"]
    assert info["addr"] == a.addr and info["peer_addr"] == a.peer_addr
    assert info["swim"]["preset"] == "local"
    assert set(info["transport"]["links"]) == {"b", "c"}
    assert a.get_json("/health") == {"status": "ok", "id": "a"}


def test_members_are_alive_with_a_measured_rtt(cluster3: Cluster) -> None:
    def all_alive_and_measured() -> bool:
        ms = cluster3["b"].get_json("/cluster/members")
        return all(
            m["state"] == "alive" and m["rtt_ms"] is not None and (m["self"] or m["link"] == "connected")
            for m in ms
        )

    poll(all_alive_and_measured, what="b to see a and c alive, with RTTs from its probes")
    assert cluster3["b"].info()["swim"]["counters"]["probes"] > 0


def test_metrics_are_prometheus_text_with_the_node_counters(cluster3: Cluster) -> None:
    a = cluster3["a"]
    a.request("PUT", kv_path(b"metric-key"), b"1")
    # a family is exported once it has a sample: wait for a's first RTT measurement
    poll(lambda: a.info()["swim"]["rtt_samples"] > 0, what="a's first probe answered")
    status, headers, body = a.request("GET", "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    for name in (
        "storelab_messages_sent",
        "storelab_message_bytes_received",
        "storelab_client_ops",
        "storelab_forwards_sent",
        "storelab_frames_malformed",
        "storelab_http_requests",
        "storelab_keys",
        "storelab_members",
        "storelab_swim_events",
        "storelab_swim_awareness",
        "storelab_swim_incarnation",
        "storelab_peer_rtt_seconds",
    ):
        assert name in families, name
    sent = {s.labels["kind"]: s.value for s in families["storelab_messages_sent"].samples}
    assert sent.get("SwimPing", 0) > 0
    members = {s.labels["state"]: s.value for s in families["storelab_members"].samples}
    assert set(members) == {"alive", "suspect", "dead", "left"}
    assert members["alive"] + members["suspect"] == 3
    swim = {s.labels["event"]: s.value for s in families["storelab_swim_events"].samples}
    assert swim.get("probes", 0) > 0
    ok_204 = [
        s for s in families["storelab_http_requests"].samples if s.labels.get("status") == "204"
    ]
    assert ok_204 and ok_204[0].value >= 1


def test_client_goes_straight_to_the_owner(cluster3: Cluster) -> None:
    before = forwards_sent(cluster3)
    with Client(cluster3["b"].addr) as client:
        for i in range(60):
            client.set(f"smart:{i}", f"value {i}")
        for i in range(60):
            assert client.get(f"smart:{i}") == f"value {i}".encode()
        assert client.get("smart:absent") is None
        for i in range(60):
            assert client.delete(f"smart:{i}") is True
        assert client.delete("smart:0") is False
        assert client.refreshes == 1
    assert forwards_sent(cluster3) == before


def test_client_survives_a_stale_map(cluster3: Cluster) -> None:
    dead = f"127.0.0.1:{free_ports(1)[0]}"  # nothing listens there
    with Client(cluster3["a"].addr, timeout=5.0) as client:
        client.refresh()
        # Stale in the harmless way: every slot points at node c, which forwards.
        client._owners = [cluster3["c"].addr] * len(client._owners)
        client.set(b"stale-1", b"one")
        assert client.get(b"stale-1") == b"one"
        # Stale in the harmful way: every slot points at an address where nothing listens.
        client._owners = [dead] * len(client._owners)
        assert client.get(b"stale-1") == b"one"  # connection refused -> refresh -> retry
        assert client.refreshes == 2
        assert client.owner_addr(b"stale-1") != dead
        assert client.delete(b"stale-1") is True
