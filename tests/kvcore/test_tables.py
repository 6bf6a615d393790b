"""kvcore.tables: one TOML table -> one dataclass, every problem a sentence."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from kvcore import config as kvconfig
from kvcore.membership import SwimConfig
from kvcore.tables import ConfigError, from_table, read_table


@dataclass(frozen=True)
class Knobs:
    interval: float = 1.0
    count: int = 3
    enabled: bool = True
    name: str = "x"
    label: str | None = None
    extra: Any = None

    def validate(self) -> Knobs:
        problems = []
        if not self.interval > 0:
            problems.append(f"interval must be positive, not {self.interval!r}.")
        if self.count < 1:
            problems.append(f"count must be at least 1, not {self.count!r}.")
        if problems:
            raise ConfigError(problems)
        return self


def problems_of(table: Any, where: str = "[knobs]", **kw: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        from_table(Knobs, table, where, **kw)
    assert all(p.endswith(".") for p in info.value.problems), info.value.problems
    return info.value.problems


def test_a_good_table_builds_the_dataclass_and_widens_ints_for_floats() -> None:
    k = from_table(Knobs, {"interval": 2, "count": 5, "enabled": False, "label": "l", "extra": [1]}, "[k]")
    assert k == Knobs(interval=2.0, count=5, enabled=False, label="l", extra=[1])
    assert type(k.interval) is float
    assert from_table(Knobs, {}, "[k]") == Knobs()


def test_an_unknown_key_names_the_key_and_the_table_and_lists_the_known_ones() -> None:
    assert problems_of({"intervall": 1.0}) == [
        "Unknown key 'intervall' in [knobs]; known: count, enabled, extra, interval, label, name."
    ]
    # keys the caller reads itself are known but left out of the result
    assert problems_of({"nope": 1}, noun="knob", handled=("mode",)) == [
        "Unknown knob 'nope' in [knobs]; known: count, enabled, extra, interval, label, mode, name."
    ]
    assert from_table(Knobs, {"mode": "fast"}, "[k]", handled=("mode",)) == Knobs()


def test_a_gone_key_says_it_no_longer_exists_and_what_replaced_it() -> None:
    gone = {"period": "use interval (seconds) instead."}
    assert problems_of({"period": 5}, noun="knob", gone=gone) == [
        "Knob 'period' in [knobs] no longer exists: use interval (seconds) instead."
    ]
    # a gone map never shadows a field that exists
    assert from_table(Knobs, {"count": 2}, "[k]", gone={"count": "x."}).count == 2


@pytest.mark.parametrize(
    ("key", "value", "sentence"),
    [
        ("interval", "1s", "Key 'interval' in [knobs] must be a number, not '1s'."),
        ("count", 2.5, "Key 'count' in [knobs] must be an integer, not 2.5."),
        ("count", "3", "Key 'count' in [knobs] must be an integer, not '3'."),
        ("enabled", 1, "Key 'enabled' in [knobs] must be true or false, not 1."),
        ("enabled", "yes", "Key 'enabled' in [knobs] must be true or false, not 'yes'."),
        ("name", 5, "Key 'name' in [knobs] must be a string, not 5."),
        ("label", 5, "Key 'label' in [knobs] must be a string, not 5."),  # str | None checks str
    ],
)
def test_a_wrong_type_is_a_sentence(key: str, value: Any, sentence: str) -> None:
    assert problems_of({key: value}) == [sentence]


@pytest.mark.parametrize("key", ["interval", "count"])
def test_a_bool_is_not_a_number(key: str) -> None:
    # TOML's true is a Python int; `count = true` is a mistake, not 1
    kind = "a number" if key == "interval" else "an integer"
    assert problems_of({key: True}) == [f"Key {key!r} in [knobs] must be {kind}, not True."]


def test_validate_runs_and_its_sentences_name_the_table() -> None:
    assert problems_of({"interval": 0, "count": 0}) == [
        "[knobs]: interval must be positive, not 0.0.",
        "[knobs]: count must be at least 1, not 0.",
    ]


def test_every_problem_is_reported_at_once() -> None:
    # a key of the wrong type takes its default for validate(), which still checks the rest
    assert problems_of({"bogus": 1, "enabled": 0, "count": -1}) == [
        "Unknown key 'bogus' in [knobs]; known: count, enabled, extra, interval, label, name.",
        "Key 'enabled' in [knobs] must be true or false, not 0.",
        "[knobs]: count must be at least 1, not -1.",
    ]


def test_a_nested_where_path_appears_in_every_sentence() -> None:
    where = "[[cluster.nodes]] #2"
    assert problems_of({"colour": "red", "count": "3", "interval": -1}, where) == [
        "Unknown key 'colour' in [[cluster.nodes]] #2; known: count, enabled, extra, interval, label, name.",
        "Key 'count' in [[cluster.nodes]] #2 must be an integer, not '3'.",
        "[[cluster.nodes]] #2: interval must be positive, not -1.0.",
    ]


def test_something_that_is_not_a_table_is_refused() -> None:
    assert problems_of(["interval", 1]) == ["[knobs] must be a table, not ['interval', 1]."]


def test_read_table_returns_the_good_keys_and_the_problems_without_building() -> None:
    kwargs, problems = read_table(Knobs, {"count": 0, "name": 1, "x": 2}, "[k]")
    assert kwargs == {"count": 0}  # not validated: the caller merges before it builds
    assert problems == [
        "Key 'name' in [k] must be a string, not 1.",
        "Unknown key 'x' in [k]; known: count, enabled, extra, interval, label, name.",
    ]


def test_build_takes_a_preset_constructor() -> None:
    c = from_table(SwimConfig, {"probe_interval": 3}, "[swim]", build=SwimConfig.local)
    assert c == SwimConfig.local(probe_interval=3.0)


def test_kvcore_config_shares_the_validator_and_its_error() -> None:
    assert kvconfig.ConfigError is ConfigError
    with pytest.raises(ConfigError) as info:
        kvconfig.NodeConfig.from_dict({"ping_interval": 1.0}, gone={"ping_interval": "gone."})
    assert info.value.problems == ["Node setting 'ping_interval' in [settings] no longer exists: gone."]
    with pytest.raises(ConfigError) as info:
        kvconfig.ClusterConfig.from_dict({"nodes": [{"id": "a", "addr": "h:1"}, {"id": 7, "addr": "h:2"}]})
    assert info.value.problems == ["Key 'id' in [[cluster.nodes]] #2 must be a string, not 7."]
