"""How ``python -m realnet.node`` resolves flags, the TOML file and defaults (in process)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvcore.config import ConfigError
from kvcore.membership import SwimConfig
from realnet.node import Settings, build_parser, load_settings

SHARED = """
[settings]
forward_timeout = 0.5
[cluster]
epoch = 3
[[cluster.nodes]]
id = "a"
addr = "127.0.0.1:7001"
peer_addr = "127.0.0.1:17001"
slots = "0-8191"
[[cluster.nodes]]
id = "b"
addr = "127.0.0.1:7002"
slots = "8192-16383"
"""


def settings(*argv: str) -> Settings:
    return load_settings(build_parser().parse_args(list(argv)))


def addresses(s: Settings) -> tuple[str, str, int, int]:
    return s.node_id, s.host, s.port, s.peer_port


def test_defaults_are_a_standalone_node_on_7000_and_17000() -> None:
    s = settings()
    assert (s.host, s.port, s.peer_port, s.cluster) == ("127.0.0.1", 7000, 17000, None)
    assert s.generated_id and s.node_id.startswith("node-")
    assert settings("--port", "7100").peer_port == 17100


def test_a_cluster_member_takes_its_addresses_from_its_entry(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text(SHARED)
    assert addresses(settings("--config", str(f), "--id", "a")) == ("a", "127.0.0.1", 7001, 17001)
    # b has no peer_addr: HTTP port + 10000
    b = settings("--config", str(f), "--id", "b")
    assert addresses(b) == ("b", "127.0.0.1", 7002, 17002)
    assert b.config.forward_timeout == 0.5 and b.cluster is not None and b.cluster.epoch == 3
    # --port alone names the member
    assert settings("--config", str(f), "--port", "7002").node_id == "b"


def test_flags_beat_the_node_table_which_beats_the_cluster_entry(tmp_path: Path) -> None:
    f = tmp_path / "a.toml"
    f.write_text('[node]\nid = "a"\nhost = "127.0.0.2"\nport = 7011\n' + SHARED)
    assert addresses(settings("--config", str(f))) == ("a", "127.0.0.2", 7011, 17011)
    assert addresses(settings("--config", str(f), "--port", "7021", "--peer-port", "7022")) == (
        "a", "127.0.0.2", 7021, 7022,
    )
    # the [node] table describes a; started as b it does not apply
    assert addresses(settings("--config", str(f), "--id", "b")) == ("b", "127.0.0.1", 7002, 17002)


def test_a_cluster_member_needs_an_id(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text(SHARED)
    with pytest.raises(ConfigError) as e:
        settings("--config", str(f))
    assert "use --id or [node] id (cluster members: a, b)" in str(e.value)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(
        '[node]\nid = 5\nport = 70000\ncolour = "red"\nseeds = [1]\n[extra]\n'
        '[settings]\nforward_timeout = "x"\n[swim]\nlifeguard = 1\n'
    )
    with pytest.raises(ConfigError) as e:
        settings("--config", str(f))
    text = " ".join(e.value.problems)
    for fragment in (
        "'extra'", "'colour'", "'forward_timeout' in [settings] must be a number", "70000", "not 5",
        "Seeds must be peer addresses (HOST:PORT strings), not 1.",
        "SWIM setting 'lifeguard' in [swim] must be true or false, not 1.",
    ):
        assert fragment in text, fragment


def test_swim_defaults_to_the_lan_preset_and_takes_overrides(tmp_path: Path) -> None:
    s = settings()
    assert s.swim_preset == "lan" and s.swim == SwimConfig.lan() and s.seeds == ()
    f = tmp_path / "swim.toml"
    f.write_text('[swim]\npreset = "local"\nprobe_interval = 4\nsuspicion_mult = 2\nlifeguard = false\n')
    s = settings("--config", str(f))
    assert s.swim_preset == "local"
    assert s.swim == SwimConfig.local(probe_interval=4.0, suspicion_mult=2, lifeguard=False)
    # the flag beats the table's preset; the table's overrides still apply
    s = settings("--config", str(f), "--swim-preset", "wan")
    assert s.swim == SwimConfig.wan(probe_interval=4.0, suspicion_mult=2, lifeguard=False)


def test_seeds_come_from_flags_or_the_node_table(tmp_path: Path) -> None:
    s = settings("--seeds", "127.0.0.1:17001,127.0.0.1:17002", "--seeds", "[::1]:17003")
    assert s.seeds == ("127.0.0.1:17001", "127.0.0.1:17002", "[::1]:17003")
    assert s.cluster is None  # a joining node has no static cluster
    f = tmp_path / "n.toml"
    f.write_text('[node]\nid = "j"\nseeds = ["127.0.0.1:17001", "127.0.0.1:17001"]\n')
    assert settings("--config", str(f)).seeds == ("127.0.0.1:17001",)
    assert settings("--config", str(f), "--seeds", "h:1").seeds == ("h:1",)


def test_a_cluster_table_with_only_a_name_is_not_a_static_cluster(tmp_path: Path) -> None:
    f = tmp_path / "named.toml"
    f.write_text('[cluster]\nname = "lab"\n')
    s = settings("--config", str(f), "--seeds", "127.0.0.1:17001")
    assert (s.cluster, s.cluster_name) == (None, "lab")
    assert settings("--config", str(f), "--cluster-name", "other").cluster_name == "other"
