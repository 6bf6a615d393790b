"""NodeConfig defaults and validation; ClusterConfig parsing and validation as sentences."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from kvcore.config import (
    PEER_PORT_OFFSET,
    ClusterConfig,
    ConfigError,
    NodeConfig,
    NodeSpec,
    default_peer_addr,
    parse_addr,
)
from kvcore.slots import SlotMap, even_split


def is_sentence(text: str) -> bool:
    return bool(text) and text.endswith(".")


# --- NodeConfig ----------------------------------------------------------------------------


def test_node_config_defaults() -> None:
    c = NodeConfig()
    assert c.max_key_bytes == 1024  # 1 KiB
    assert c.max_value_bytes == 1024 * 1024  # 1 MiB
    assert c.forward_timeout == 2.0
    assert c.dedup_window == 10.0
    assert c.max_frame_bytes >= c.max_value_bytes + c.max_key_bytes + 1024
    assert c.problems() == []
    assert c.validate() is c


def test_node_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        NodeConfig().forward_timeout = 2.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"forward_timeout": 0.0}, "forward_timeout must be a positive number of seconds"),
        ({"forward_timeout": -2.0}, "forward_timeout must be a positive"),
        ({"dedup_window": 0.0}, "dedup_window must be a positive"),
        ({"forward_timeout": float("nan")}, "forward_timeout must be a positive"),
        ({"max_key_bytes": 0}, "max_key_bytes must be a positive number of bytes"),
        ({"max_value_bytes": -1}, "max_value_bytes must be a positive number of bytes"),
        ({"max_frame_bytes": 1024 * 1024}, "max_frame_bytes (1048576) must exceed max_value_bytes"),
    ],
)
def test_node_config_problems_are_sentences(changes: dict[str, Any], fragment: str) -> None:
    c = NodeConfig(**changes)
    problems = c.problems()
    assert any(fragment in p for p in problems), problems
    assert all(is_sentence(p) for p in problems)
    with pytest.raises(ConfigError) as info:
        c.validate()
    assert info.value.problems == problems
    assert isinstance(info.value, ValueError)


def test_node_config_reports_every_problem_at_once() -> None:
    problems = NodeConfig(forward_timeout=0.0, max_key_bytes=0, dedup_window=-1.0).problems()
    assert len(problems) == 3


def test_node_config_from_dict_reads_a_toml_table() -> None:
    c = NodeConfig.from_dict({"forward_timeout": 1, "dedup_window": 2.5, "max_key_bytes": 64})
    assert c == NodeConfig(forward_timeout=1.0, dedup_window=2.5, max_key_bytes=64)
    assert type(c.forward_timeout) is float  # an int is widened for a seconds setting


@pytest.mark.parametrize(
    ("table", "fragment"),
    [
        ({"forward_timout": 1.0}, "Unknown node setting 'forward_timout'"),
        ({"ping_interval": 1.0}, "Unknown node setting 'ping_interval'"),
        ({"max_key_bytes": 1.5}, "Node setting 'max_key_bytes' in [settings] must be an integer, not 1.5."),
        ({"forward_timeout": "1s"}, "Node setting 'forward_timeout' in [settings] must be a number, not '1s'."),
        ({"dedup_window": True}, "Node setting 'dedup_window' in [settings] must be a number, not True."),
        ({"forward_timeout": 0}, "forward_timeout must be a positive"),
    ],
)
def test_node_config_from_dict_reports_bad_settings(table: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        NodeConfig.from_dict(table)
    assert any(fragment in p for p in info.value.problems), info.value.problems
    assert all(is_sentence(p) for p in info.value.problems)


# --- addresses -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("addr", "peer"),
    [
        ("127.0.0.1:7001", "127.0.0.1:17001"),
        ("localhost:80", "localhost:10080"),
        ("10.0.0.5:6379", "10.0.0.5:16379"),
        # IPv6 keeps its brackets, or "::1:17001" would read as a different address
        ("[::1]:7001", "[::1]:17001"),
    ],
)
def test_peer_addr_defaults_to_http_port_plus_10000(addr: str, peer: str) -> None:
    assert PEER_PORT_OFFSET == 10000
    assert default_peer_addr(addr) == peer
    host, port = parse_addr(addr)
    assert parse_addr(peer) == (host, port + 10000)


@pytest.mark.parametrize(
    ("addr", "fragment"),
    [
        ("7001", "is not HOST:PORT"),
        (":7001", "is not HOST:PORT"),
        ("host:http", "port that is not a number"),
        ("host:0", "outside 1-65535"),
        ("host:65536", "outside 1-65535"),
    ],
)
def test_bad_addresses_are_rejected_with_a_sentence(addr: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment) as info:
        parse_addr(addr)
    assert is_sentence(str(info.value))


# --- ClusterConfig -------------------------------------------------------------------------


def node_table(nid: str, port: int, slots: str | list[str] = "", **extra: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"id": nid, "addr": f"127.0.0.1:{port}"}
    if slots:
        d["slots"] = slots
    d.update(extra)
    return d


def three_node_table() -> dict[str, Any]:
    return {
        "epoch": 1,
        "nodes": [
            node_table("n1", 7001, "0-5460"),
            node_table("n2", 7002, "5461-10922"),
            node_table("n3", 7003, "10923-16383"),
        ],
    }


def test_valid_three_node_config_gives_the_expected_slot_map() -> None:
    c = ClusterConfig.from_dict(three_node_table()).validate("n1")
    assert c.ids() == ["n1", "n2", "n3"]
    assert c.epoch == 1
    m = c.slot_map()
    assert m == SlotMap.from_assignment(even_split(["n1", "n2", "n3"]), epoch=1)
    assert m.covers_all()
    assert m.owner(9505) == "n2"
    assert c.node("n3") == NodeSpec("n3", "127.0.0.1:7003", "127.0.0.1:17003", ((10923, 16383),))


def test_cluster_peer_addr_defaults_and_explicit_peer_addr_is_kept() -> None:
    table = three_node_table()
    table["nodes"][1]["peer_addr"] = "127.0.0.1:9999"
    c = ClusterConfig.from_dict(table).validate()
    assert c.node("n1").peer_addr == "127.0.0.1:17001"
    assert c.node("n2").peer_addr == "127.0.0.1:9999"


def test_cluster_slots_table_adds_assignments() -> None:
    table = {
        "nodes": [node_table("n1", 7001, "0-8191"), node_table("n2", 7002)],
        "slots": {"n2": "8192-16383"},
    }
    c = ClusterConfig.from_dict(table).validate()
    assert c.slot_map().assignment() == {"n1": [(0, 8191)], "n2": [(8192, 16383)]}
    assert c.epoch == 1  # the default


def test_cluster_slots_may_be_a_list_of_strings() -> None:
    c = ClusterConfig.from_dict({"nodes": [node_table("n1", 7001, slots=["0-99", "200"])]})
    assert c.node("n1").slots == ((0, 99), (200, 200))


def test_cluster_may_leave_slots_unassigned() -> None:
    c = ClusterConfig.from_dict({"nodes": [node_table("n1", 7001, "0-99")]}).validate()
    assert not c.slot_map().covers_all()
    assert c.slot_map().unassigned() == [(100, 16383)]


def test_to_dict_round_trips_through_from_dict() -> None:
    c = ClusterConfig.from_dict(three_node_table())
    assert ClusterConfig.from_dict(c.to_dict()) == c


def problems_of(table: dict[str, Any], self_id: str | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        ClusterConfig.from_dict(table).validate(self_id)
    problems = info.value.problems
    assert problems and all(is_sentence(p) for p in problems), problems
    return problems


def test_overlapping_ranges_name_both_nodes_and_the_slots() -> None:
    table = {"nodes": [node_table("n1", 7001, "0-100"), node_table("n2", 7002, "50-200")]}
    (problem,) = problems_of(table)
    assert "'n1'" in problem and "'n2'" in problem
    assert "50-100" in problem
    assert "overlap" in problem


def test_overlap_through_cluster_slots_is_reported() -> None:
    table = {
        "nodes": [node_table("n1", 7001, "0-100"), node_table("n2", 7002)],
        "slots": {"n2": "100,300"},
    }
    (problem,) = problems_of(table)
    assert "'n1'" in problem and "'n2'" in problem and "at 100." in problem


@pytest.mark.parametrize("slots", ["16384", "0-16384", "20000-30000"])
def test_slot_outside_the_slot_space_is_a_problem_in_a_sentence(slots: str) -> None:
    with pytest.raises(ConfigError) as info:
        ClusterConfig.from_dict({"nodes": [node_table("n1", 7001, slots)]})
    (problem,) = info.value.problems
    assert "'n1'" in problem and "outside 0-16383" in problem and is_sentence(problem)


def test_slot_outside_the_slot_space_in_a_built_config_is_a_problem() -> None:
    c = ClusterConfig((NodeSpec("n1", "127.0.0.1:7001", "127.0.0.1:17001", ((16000, 16384),)),))
    (problem,) = c.problems()
    assert problem == "Node 'n1' has slot range 16000-16384 outside 0-16383."


def test_unknown_node_in_cluster_slots_is_named() -> None:
    table = {"nodes": [node_table("n1", 7001)], "slots": {"n9": "0-99"}}
    (problem,) = problems_of(table)
    assert "unknown node 'n9'" in problem
    assert "n1" in problem  # the known nodes are listed


def test_this_nodes_id_missing_from_the_cluster_is_named() -> None:
    (problem,) = problems_of(three_node_table(), self_id="n9")
    assert "'n9'" in problem and "not a member" in problem
    assert ClusterConfig.from_dict(three_node_table()).problems("n2") == []


def test_duplicate_node_id_is_named() -> None:
    table = {"nodes": [node_table("n1", 7001), node_table("n1", 7002)]}
    (problem,) = problems_of(table)
    assert "Node id 'n1' appears twice." == problem


@pytest.mark.parametrize(
    ("second", "fragment"),
    [
        (
            {"addr": "127.0.0.1:7001"},
            "Address 127.0.0.1:7001 is used by both node 'n1' and node 'n2'",
        ),
        (
            {"peer_addr": "127.0.0.1:17001"},
            "Address 127.0.0.1:17001 is used by both node 'n1' and node 'n2'",
        ),
        # n2's HTTP port is n1's peer port
        (
            {"addr": "127.0.0.1:17001", "peer_addr": "127.0.0.1:9000"},
            "used by both node 'n1' and node 'n2'",
        ),
    ],
)
def test_duplicate_address_names_both_nodes(second: dict[str, Any], fragment: str) -> None:
    table = {"nodes": [node_table("n1", 7001), {**node_table("n2", 7002), **second}]}
    problems = problems_of(table)
    assert any(fragment in p for p in problems), problems


def test_http_and_peer_address_of_one_node_must_differ() -> None:
    table = {"nodes": [node_table("n1", 7001, peer_addr="127.0.0.1:7001")]}
    (problem,) = problems_of(table)
    assert "Node 'n1' uses address 127.0.0.1:7001 for both HTTP and peers." == problem


def test_every_problem_is_reported_at_once() -> None:
    table = {
        "nodes": [
            node_table("n1", 7001, "0-100"),
            node_table("n1", 7002, "50-60"),
            node_table("n3", 7001, peer_addr="127.0.0.1:9003"),
        ],
        "slots": {"ghost": "500"},
    }
    problems = problems_of(table, self_id="me")
    text = " ".join(problems)
    assert "appears twice" in text
    assert "used by both node" in text
    assert "unknown node 'ghost'" in text
    assert "'me' is not a member" in text
    assert "overlap" in text
    assert len(problems) == 5


@pytest.mark.parametrize(
    ("table", "fragment"),
    [
        ({"epoch": "1", "nodes": []}, "The cluster epoch must be an integer"),
        ({"epoch": True, "nodes": []}, "The cluster epoch must be an integer"),
        ({"nodes": ["n1"]}, "Cluster node #1 is not a table."),
        ({"nodes": [{"addr": "127.0.0.1:7001"}]}, "Cluster node #1 has no id"),
        ({"nodes": [{"id": "", "addr": "127.0.0.1:7001"}]}, "Cluster node #1 has no id"),
        ({"nodes": [{"id": "n1"}]}, "Node 'n1' has no addr"),
        (
            {"nodes": [{"id": "n1", "addr": "nohost"}]},
            "Node 'n1': Address 'nohost' is not HOST:PORT.",
        ),
        (
            {"nodes": [{"id": "n1", "addr": "h:1", "peer_addr": 5}]},
            "Key 'peer_addr' in [[cluster.nodes]] #1 must be a string, not 5.",
        ),
        ({"nodes": [{"id": "n1", "addr": "h:1", "slots": 5}]}, "Slots must be a string"),
        ({"nodes": [{"id": "n1", "addr": "h:1", "slots": "9-1"}]}, "starts after it ends"),
        ({"nodes": [{"id": "n1", "addr": "h:1", "port": 1}]}, "Unknown key 'port' in [[cluster.nodes]] #1; known: addr, id, peer_addr, slots."),
        ({"nodes": [], "slots": "0-5"}, "[cluster.slots] must map node ids to slot ranges."),
        ({"nodes": [], "slots": {"n1": "x"}}, "[cluster.slots] n1: Slot range 'x' is not a number"),
    ],
)
def test_cluster_from_dict_reports_malformed_tables(table: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        ClusterConfig.from_dict(table)
    assert any(fragment in p for p in info.value.problems), info.value.problems
    assert all(is_sentence(p) for p in info.value.problems)


def test_nodes_that_are_not_a_list_is_one_problem() -> None:
    with pytest.raises(ConfigError) as info:
        ClusterConfig.from_dict({"nodes": {"id": "n1"}})
    assert info.value.problems == ["[cluster] nodes must be a list of tables ([[cluster.nodes]])."]


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        (ClusterConfig(()), "The cluster has no nodes."),
        (ClusterConfig((NodeSpec("n1", "h:1", "h:2"),), epoch=-1), "zero or more, not -1."),
        (ClusterConfig((NodeSpec("", "h:1", "h:2"),)), "A node has an empty id."),
    ],
)
def test_built_cluster_config_problems(config: ClusterConfig, fragment: str) -> None:
    problems = config.problems()
    assert any(fragment in p for p in problems), problems
    with pytest.raises(ConfigError):
        config.validate()
