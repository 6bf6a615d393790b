"""realnet.settings, one function per TOML table, and the flags-over-file merge (no processes)."""

from __future__ import annotations

from typing import Any

import pytest

from kvcore.config import ClusterConfig, NodeConfig
from kvcore.membership import SwimConfig
from kvcore.tables import ConfigError
from realnet import gossip, node
from realnet.settings import (
    ClusterOptions,
    cluster_table,
    load_settings,
    node_table,
    raft_table,
    settings_table,
    swim_table,
    top_tables,
)


def problems(fn: Any, *args: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        fn(*args)
    return info.value.problems


# --- the top level -----------------------------------------------------------------------------


def test_top_tables_know_six_tables_and_no_cluster_is_none() -> None:
    found: list[str] = []
    tables = top_tables({"node": {"id": "a"}, "swim": 3, "extra": {}}, found)
    assert tables == {
        "node": {"id": "a"}, "settings": {}, "swim": {}, "cluster": None, "security": {}, "raft": {},
    }
    assert found == [
        "Unknown top-level key 'extra' in the config file; known: node, settings, swim, cluster, "
        "security, raft.",
        "[swim] must be a table.",
    ]
    assert top_tables({"cluster": {}}, [])["cluster"] == {}


# --- [node] --------------------------------------------------------------------------------------


def test_node_table_checks_keys_and_types() -> None:
    values, found = node_table({"id": "a", "port": "7001", "seeds": "h:1", "colour": "red"}, None)
    assert values == {"id": "a", "seeds": "h:1"}
    assert found == [
        "Key 'port' in [node] must be an integer, not '7001'.",
        "Unknown key 'colour' in [node]; known: advertise_host, data_dir, host, id, peer_port, port, seeds.",
    ]


def test_a_node_table_describing_another_node_is_ignored_but_its_unknown_keys_are_not() -> None:
    values, found = node_table({"id": "b", "port": "bad", "colour": 1}, "a")
    assert values == {}
    assert found == [
        "Unknown key 'colour' in [node]; known: advertise_host, data_dir, host, id, peer_port, port, seeds."
    ]
    assert node_table({"id": "a", "port": 7001}, "a") == ({"id": "a", "port": 7001}, [])


# --- [settings] ----------------------------------------------------------------------------------


def test_settings_table_builds_the_node_config() -> None:
    assert settings_table({"forward_timeout": 1}) == NodeConfig(forward_timeout=1.0)
    assert settings_table({}) == NodeConfig()


def test_settings_table_says_what_replaced_the_old_failure_detector() -> None:
    found = problems(settings_table, {"down_after": 2.0, "forward_timeout": 0})
    assert found == [
        "Node setting 'down_after' in [settings] no longer exists: failure detection is SWIM "
        "gossip now, tuned in [swim] (probe_interval, probe_timeout, suspicion_mult, ...).",
        "[settings]: forward_timeout must be a positive number of seconds, not 0.0.",
    ]


# --- [swim] --------------------------------------------------------------------------------------


def test_swim_table_takes_a_preset_and_overrides() -> None:
    assert swim_table({}) == ("lan", SwimConfig.lan())
    assert swim_table({"preset": "local", "suspicion_mult": 2}) == ("local", SwimConfig.local(suspicion_mult=2))
    # the flag beats the table's preset
    assert swim_table({"preset": "local", "gossip_nodes": 4}, "wan") == ("wan", SwimConfig.wan(gossip_nodes=4))
    # the old name still works
    assert gossip.swim_from_dict is swim_table and gossip.PRESETS is node.PRESETS


def test_swim_table_refuses_the_old_failure_detector_keys_with_their_replacements() -> None:
    found = problems(swim_table, {"ping_interval": 1.0, "down_after": 5.0})
    assert found == [
        "SWIM setting 'ping_interval' in [swim] no longer exists: SWIM probes one member every "
        "probe_interval seconds instead.",
        "SWIM setting 'down_after' in [swim] no longer exists: a suspect member is declared dead "
        "after suspicion_mult * max(1, log10(N+1)) * probe_interval seconds instead (tune "
        "suspicion_mult).",
    ]


def test_swim_table_reports_a_bad_preset_types_and_rules_together() -> None:
    found = problems(swim_table, {"preset": "moon", "lifeguard": "no", "probe_timeout": 5})
    assert found == [
        "The SWIM preset must be one of lan, wan, local, not 'moon'.",
        "SWIM setting 'lifeguard' in [swim] must be true or false, not 'no'.",
        "[swim]: probe_timeout (5.0s) must be shorter than probe_interval (1.0s), or indirect "
        "probes never get their turn.",
    ]


# --- [cluster] -----------------------------------------------------------------------------------


def test_cluster_table_splits_the_static_cluster_from_the_process_options() -> None:
    assert cluster_table(None) == (None, ClusterOptions())
    assert cluster_table({"name": "lab", "auto_rebalance": True}) == (
        None, ClusterOptions(name="lab", auto_rebalance=True),
    )
    cluster, options = cluster_table(
        {"epoch": 2, "auto_rebalance_settle": 3, "nodes": [{"id": "a", "addr": "h:1", "slots": "0-16383"}]}
    )
    assert isinstance(cluster, ClusterConfig) and cluster.epoch == 2 and cluster.ids() == ["a"]
    assert options == ClusterOptions(auto_rebalance_settle=3.0)


def test_cluster_table_reports_options_and_members_together() -> None:
    found = problems(cluster_table, {"name": 5, "nodes": [{"id": "a", "addr": "h:1", "colour": 1}]})
    assert found == [
        "Key 'name' in [cluster] must be a string, not 5.",
        "Unknown key 'colour' in [[cluster.nodes]] #1; known: addr, id, peer_addr, slots.",
    ]


# --- flags over the file -------------------------------------------------------------------------


def test_flags_beat_the_file_and_ports_are_checked_after_the_merge(tmp_path: Any) -> None:
    f = tmp_path / "n.toml"
    f.write_text('[node]\nhost = "127.0.0.9"\nport = 7005\n[cluster]\nname = "lab"\n')
    s = load_settings(node.build_parser().parse_args(["--config", str(f), "--port", "7006", "--cluster-name", "x"]))
    assert (s.host, s.port, s.peer_port, s.cluster_name) == ("127.0.0.9", 7006, 17006, "x")
    f.write_text("[node]\nport = -5\n")
    with pytest.raises(ConfigError) as info:
        load_settings(node.build_parser().parse_args(["--config", str(f)]))
    assert info.value.problems == ["The HTTP port must be a port number 0-65535, not -5."]
    # a flag that replaces the bad value makes it moot
    assert load_settings(node.build_parser().parse_args(["--config", str(f), "--port", "7007"])).port == 7007


def test_an_empty_id_is_refused_from_a_flag_or_the_file(tmp_path: Any) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(node.build_parser().parse_args(["--id", ""]))
    assert info.value.problems == ["The node id must be a non-empty string, not ''."]
    f = tmp_path / "n.toml"
    f.write_text('[node]\nid = ""\nadvertise_host = ""\n')
    with pytest.raises(ConfigError) as info:
        load_settings(node.build_parser().parse_args(["--config", str(f)]))
    assert info.value.problems == [
        "The node id must be a non-empty string, not ''.",
        "advertise_host must be a non-empty string, not ''.",
    ]


@pytest.mark.parametrize("bad", ["a b", "a\tb", "x" * 201, "a\nb"])
def test_a_node_id_is_one_printable_word(bad: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(node.build_parser().parse_args(["--id", bad]))
    (problem,) = info.value.problems
    assert problem.startswith("The node id must be printable, without spaces, at most 200 characters")


@pytest.mark.parametrize("bad", ["inf", "nan", "0", "-1", "1e9"])
def test_the_head_timeout_is_a_finite_number_of_seconds(bad: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(node.build_parser().parse_args(["--head-timeout", bad]))
    assert info.value.problems == ["--head-timeout must be a number of seconds above 0 and below a day."]


@pytest.mark.parametrize("bad", ["inf", "nan", "0", "-1", "1e9"])
def test_the_request_timeout_is_a_finite_number_of_seconds(bad: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(node.build_parser().parse_args(["--request-timeout", bad]))
    assert info.value.problems == ["--request-timeout must be a number of seconds above 0 and below a day."]


def test_the_request_timeout_defaults_to_the_keep_alive_timeout_and_comes_from_flag_or_toml(
    tmp_path: Any,
) -> None:
    from realnet.httpparse_rules import HttpLimits

    assert load_settings(node.build_parser().parse_args([])).http_security.request_timeout == 75.0
    assert HttpLimits().keepalive_timeout == 75.0 == HttpLimits().whole_request_timeout()
    f = tmp_path / "n.toml"
    f.write_text("[security]\nrequest_timeout = 300.0\n")
    s = load_settings(node.build_parser().parse_args(["--config", str(f)]))
    assert s.http_security.request_timeout == 300.0
    s = load_settings(node.build_parser().parse_args(["--config", str(f), "--request-timeout", "2.5"]))
    assert s.http_security.request_timeout == 2.5
    for bad, said in (("0.0", "[security] request_timeout must be a number of seconds above 0."),
                      ('"soon"', "request_timeout")):
        f.write_text(f"[security]\nrequest_timeout = {bad}\n")
        with pytest.raises(ConfigError) as info:
            load_settings(node.build_parser().parse_args(["--config", str(f)]))
        assert any(said in p for p in info.value.problems), info.value.problems


def test_the_http_parser_flag_reaches_the_settings() -> None:
    assert load_settings(node.build_parser().parse_args([])).http_parser == "httptools"
    assert load_settings(node.build_parser().parse_args(["--http-parser", "h11"])).http_parser == "h11"
    with pytest.raises(SystemExit):
        node.build_parser().parse_args(["--http-parser", "nope"])


# --- [raft] --------------------------------------------------------------------------------------


def test_raft_table_builds_the_replica_config_and_reaches_the_settings(tmp_path: Any) -> None:
    from kvcore.replica import ReplicaConfig

    assert raft_table({}) == ReplicaConfig()
    assert raft_table({"snapshot_entries": 50, "tick": 0.02}) == ReplicaConfig(snapshot_entries=50, tick=0.02)
    f = tmp_path / "n.toml"
    f.write_text("[raft]\nsnapshot_entries = 200\nelection_tick = 20\n")
    s = load_settings(node.build_parser().parse_args(["--config", str(f)]))
    assert s.replica == ReplicaConfig(snapshot_entries=200, election_tick=20)


def test_raft_table_reports_keys_types_and_the_cores_rules_together() -> None:
    assert problems(raft_table, {"snapshot_entries": 0, "election_tick": 1, "tick": "fast", "nope": 1}) == [
        "Raft setting 'tick' in [raft] must be a number, not 'fast'.",
        "Unknown Raft setting 'nope' in [raft]; known: auto_promote, election_tick, heartbeat_tick, "
        "image_chunk, lease_drift_ticks, read_only, retry, snapshot_entries, snapshot_resend_tick, "
        "snapshot_resends, tick.",
        "[raft]: snapshot_entries and image_chunk must be at least 1.",
        "[raft]: election_tick (1) must be greater than heartbeat_tick (1); 10 times is suggested.",
    ]
    assert problems(raft_table, {"snapshot_resend_tick": -1}) == [
        "[raft]: snapshot_resend_tick and snapshot_resends must be at least 0.",
    ]


def test_the_snapshot_transfers_resends_are_raft_settings_that_reach_the_group(tmp_path: Any) -> None:
    """The leader resends an unanswered snapshot chunk after ``snapshot_resend_tick`` ticks (the
    core's default, 0, is election_tick: half a second at the defaults, short for a 1 MiB chunk on
    a slow link) and gives a transfer up after ``snapshot_resends``: both were the core's
    defaults only, with no way to set them on a real node."""
    from kvcore.replica import ReplicaConfig

    f = tmp_path / "n.toml"
    f.write_text("[raft]\nsnapshot_resend_tick = 60\nsnapshot_resends = 5\n")
    s = load_settings(node.build_parser().parse_args(["--config", str(f)]))
    assert s.replica == ReplicaConfig(snapshot_resend_tick=60, snapshot_resends=5)
    core = s.replica.raft_config("a", max_snapshot_chunk=4096)
    assert (core.snapshot_resend_tick, core.snapshot_resends, core.max_snapshot_chunk) == (60, 5, 4096)
    assert (core.election_tick, core.heartbeat_tick) == (10, 1)


def test_the_read_mode_is_a_raft_setting_that_reaches_the_groups_core(tmp_path: Any) -> None:
    """``read_only = "lease"`` (thesis §6.4.1) and ``lease_drift_ticks``: the core had them, and a
    real node had no way to ask for them. They reach the RaftConfig of the group the node runs."""
    from kvcore.node import Node
    from kvcore.raft import LEASE, SAFE
    from kvcore.replica import ReplicaConfig
    from kvcore.runtime import FakeRuntime

    f = tmp_path / "n.toml"
    f.write_text('[raft]\nread_only = "lease"\nlease_drift_ticks = 2\n')
    s = load_settings(node.build_parser().parse_args(["--config", str(f)]))
    assert s.replica == ReplicaConfig(read_only="lease", lease_drift_ticks=2)
    core = s.replica.raft_config("a")
    assert (core.read_only, core.lease_drift_ticks) == (LEASE, 2)
    n = Node(FakeRuntime("a"), replica=s.replica)
    n.form_group(["a"])
    assert n.replica is not None
    assert (n.replica.raft.cfg.read_only, n.replica.raft.cfg.lease_drift_ticks) == (LEASE, 2)
    # without the keys: SAFE reads, as before
    default = load_settings(node.build_parser().parse_args([])).replica
    assert (default.raft_config("a").read_only, default.raft_config("a").lease_drift_ticks) == (SAFE, 1)


def test_a_bad_read_mode_or_drift_is_a_sentence_that_names_the_table() -> None:
    assert problems(raft_table, {"read_only": "fast"}) == [
        "[raft]: read_only must be 'safe' (a heartbeat round per batch of reads) or 'lease' (the leader's "
        "lease, no round while it holds), not 'fast'.",
    ]
    assert problems(raft_table, {"read_only": "lease", "lease_drift_ticks": 10}) == [
        "[raft]: lease_drift_ticks must be at least 0 and less than election_tick (10): the lease lasts "
        "election_tick - lease_drift_ticks ticks; not 10.",
    ]
    assert problems(raft_table, {"read_only": 1, "lease_drift_ticks": "one"}) == [
        "Raft setting 'read_only' in [raft] must be a string, not 1.",
        "Raft setting 'lease_drift_ticks' in [raft] must be an integer, not 'one'.",
    ]
