"""The pure parts of kvcore/membership/ as table tests: formulas, presets, merge rules, queue.

Each table cites where its rows come from: a sentence of SWIM (Das et al. 2002) or Lifeguard
(Dadgar et al. 2018), or the memberlist test the values are copied from (``suspicion_test.go``,
``util_test.go``, ``awareness_test.go``, ``config.go``). Where our formula knowingly differs from
memberlist's code, the row says so. The protocol itself (timers, sends) is pinned in
``test_membership_protocol.py``.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from kvcore import codec
from kvcore.config import ConfigError
from kvcore.membership import (
    ALIVE,
    DEAD,
    LEFT,
    SUSPECT,
    Awareness,
    BroadcastQueue,
    Membership,
    State,
    SwimConfig,
    overrides,
    push_pull_scale,
    remaining_suspicion_time,
    retransmit_limit,
    suspicion_timeout,
)
from kvcore.messages import (
    Alive,
    Dead,
    Gossip,
    MemberState,
    Nack,
    PingReq,
    PushPull,
    Suspect,
    SwimAck,
    SwimPing,
)
from kvcore.runtime import FakeRuntime

# --- suspicion_timeout (memberlist util.go suspicionTimeout) --------------------------------


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        # the node scale is max(1, log10(n+1)): small clusters all get the floor
        (1, 4 * 1.0),  # log10(2) < 1
        (2, 4 * 1.0),  # log10(3) < 1
        (9, 4 * 1.0),  # log10(10) == 1 exactly
        (10, 4 * math.log10(11)),  # memberlist's code takes log10(n): 4 * 1.0 here
        (99, 4 * math.log10(100)),  # == 8; memberlist: 4 * log10(99) = 7.982
        (100, 4 * math.log10(101)),
        (1000, 4 * math.log10(1001)),  # memberlist: 4 * log10(1000) = 12
    ],
)
def test_suspicion_timeout_is_mult_times_log10_of_n_plus_one(n: int, expected: float) -> None:
    # memberlist config.go: "SuspicionTimeout = SuspicionMult * log(N+1) * ProbeInterval". Its
    # util.go computes log10(max(1, n)) instead; we follow the documented formula (module doc).
    assert suspicion_timeout(4, n, 1.0) == pytest.approx(expected)


def test_suspicion_timeout_scales_with_the_probe_interval_and_floors_an_empty_cluster() -> None:
    assert suspicion_timeout(6, 1000, 5.0) == pytest.approx(6 * math.log10(1001) * 5.0)
    assert suspicion_timeout(4, 0, 1.0) == 4.0  # n is taken as at least 1


# --- retransmit_limit (memberlist util.go retransmitLimit) -----------------------------------


@pytest.mark.parametrize(
    ("mult", "n", "expected"),
    [
        (4, 1, 4 * math.ceil(math.log10(2))),  # 4
        (4, 9, 4 * math.ceil(math.log10(10))),  # 4
        (4, 10, 4 * math.ceil(math.log10(11))),  # 8
        (4, 99, 4 * math.ceil(math.log10(100))),  # 8
        (4, 100, 4 * math.ceil(math.log10(101))),  # 12
        (4, 1000, 4 * math.ceil(math.log10(1001))),  # 16
        # memberlist util_test.go TestRetransmitLimit
        (3, 0, 0),
        (3, 1, 3),
        (3, 99, 6),
    ],
)
def test_retransmit_limit_is_mult_times_ceil_log10_of_n_plus_one(mult: int, n: int, expected: int) -> None:
    # SWIM §4.1 / memberlist config.go: "Retransmits = RetransmitMult * log(N+1)"
    assert retransmit_limit(mult, n) == expected


# --- remaining_suspicion_time (Lifeguard §IV-B, memberlist suspicion.go) ----------------------


@pytest.mark.parametrize(
    ("confirmations", "k", "elapsed", "min_t", "max_t", "expected"),
    [
        # memberlist suspicion_test.go TestSuspicion_remainingSuspicionTime, row for row
        (0, 3, 0.0, 2.0, 30.0, 30.0),
        (1, 3, 2.0, 2.0, 30.0, 14.0),  # 30 - log(2)/log(4) * 28 = 16, minus 2 elapsed
        (2, 3, 3.0, 2.0, 30.0, 4.810),  # 30 - log(3)/log(4) * 28 = 7.810 (floored to ms)
        (3, 3, 4.0, 2.0, 30.0, -2.0),  # k confirmations reach the minimum
        (4, 3, 5.0, 2.0, 30.0, -3.0),  # beyond k: never below the minimum
        (5, 3, 10.0, 2.0, 30.0, -8.0),
        # k == 0: nothing to wait for, the minimum (memberlist divides by log(1) = 0 here and
        # lands on the minimum through the clamp)
        (0, 0, 0.0, 2.0, 30.0, 2.0),
        (3, 0, 1.5, 2.0, 30.0, 0.5),
    ],
)
def test_remaining_suspicion_time_matches_memberlist(
    confirmations: int, k: int, elapsed: float, min_t: float, max_t: float, expected: float
) -> None:
    got = remaining_suspicion_time(confirmations, k, elapsed, min_t, max_t)
    assert got == pytest.approx(expected, abs=1e-9)


def test_remaining_suspicion_time_is_floored_to_the_millisecond() -> None:
    # memberlist: time.Duration(math.Floor(1000.0*raw)) * time.Millisecond
    raw = 24.0 - math.log(2) / math.log(3) * (24.0 - 4.0)  # 11.38143...
    assert remaining_suspicion_time(1, 2, 0.0, 4.0, 24.0) == pytest.approx(11.381, abs=1e-9)
    assert remaining_suspicion_time(1, 2, 0.0, 4.0, 24.0) < raw


# --- push_pull_scale (memberlist util.go pushPullScale) --------------------------------------


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (1, 30.0),
        (32, 30.0),  # up to the threshold: unscaled
        (33, 60.0),  # "the 33rd node will cause us to double the interval"
        (64, 60.0),
        (65, 90.0),  # "while the 65th will triple it"
        (128, 90.0),
        (129, 120.0),
        (1000, 180.0),  # ceil(log2(1000) - 5) + 1 = 6
    ],
)
def test_push_pull_scale(n: int, expected: float) -> None:
    assert push_pull_scale(30.0, n) == expected


def test_push_pull_scale_over_memberlists_ranges() -> None:
    # memberlist util_test.go TestPushPullScale: 0..32 -> 1x, 33..64 -> 2x, 65..128 -> 3x
    assert all(push_pull_scale(1.0, n) == 1.0 for n in range(0, 33))
    assert all(push_pull_scale(1.0, n) == 2.0 for n in range(33, 65))
    assert all(push_pull_scale(1.0, n) == 3.0 for n in range(65, 129))


# --- Awareness (Lifeguard §IV-A, memberlist awareness.go) -------------------------------------


def test_awareness_applies_clamps_and_scales_like_memberlist() -> None:
    # memberlist awareness_test.go TestAwareness: (delta, score, scaled 1s timeout), in sequence
    cases = [
        (0, 0, 1.0),
        (-1, 0, 1.0),
        (-10, 0, 1.0),
        (1, 1, 2.0),
        (-1, 0, 1.0),
        (10, 7, 8.0),  # clamped to max - 1
        (-1, 6, 7.0),
        (-1, 5, 6.0),
        (-1, 4, 5.0),
        (-1, 3, 4.0),
        (-1, 2, 3.0),
        (-1, 1, 2.0),
        (-1, 0, 1.0),
        (-1, 0, 1.0),
    ]
    a = Awareness(8)
    for i, (delta, score, timeout) in enumerate(cases):
        a.apply(delta)
        assert (a.score, a.scale(1.0)) == (score, timeout), f"case {i}"


def test_awareness_with_max_one_never_scales() -> None:
    a = Awareness(1)
    a.apply(5)
    assert a.score == 0
    assert a.scale(0.5) == 0.5


# --- SwimConfig presets (memberlist config.go) ---------------------------------------------


def preset_values(c: SwimConfig) -> dict[str, Any]:
    return {
        "probe_interval": c.probe_interval,
        "probe_timeout": c.probe_timeout,
        "indirect_checks": c.indirect_checks,
        "suspicion_mult": c.suspicion_mult,
        "suspicion_max_timeout_mult": c.suspicion_max_timeout_mult,
        "retransmit_mult": c.retransmit_mult,
        "gossip_interval": c.gossip_interval,
        "gossip_nodes": c.gossip_nodes,
        "gossip_to_the_dead_time": c.gossip_to_the_dead_time,
        "push_pull_interval": c.push_pull_interval,
        "awareness_max_multiplier": c.awareness_max_multiplier,
    }


# memberlist DefaultLANConfig
LAN = {
    "probe_interval": 1.0,  # ProbeInterval: 1 * time.Second
    "probe_timeout": 0.5,  # ProbeTimeout: 500 * time.Millisecond
    "indirect_checks": 3,  # IndirectChecks: 3
    "suspicion_mult": 4,  # SuspicionMult: 4
    "suspicion_max_timeout_mult": 6,  # SuspicionMaxTimeoutMult: 6
    "retransmit_mult": 4,  # RetransmitMult: 4
    "gossip_interval": 0.2,  # GossipInterval: 200 * time.Millisecond
    "gossip_nodes": 3,  # GossipNodes: 3
    "gossip_to_the_dead_time": 30.0,  # GossipToTheDeadTime: 30 * time.Second
    "push_pull_interval": 30.0,  # PushPullInterval: 30 * time.Second
    "awareness_max_multiplier": 8,  # AwarenessMaxMultiplier: 8
}
# memberlist DefaultWANConfig: LAN with these overrides
WAN = {
    **LAN,
    "suspicion_mult": 6,
    "push_pull_interval": 60.0,
    "probe_timeout": 3.0,
    "probe_interval": 5.0,
    "gossip_nodes": 4,
    "gossip_interval": 0.5,
    "gossip_to_the_dead_time": 60.0,
}
# memberlist DefaultLocalConfig: LAN with these overrides
LOCAL = {
    **LAN,
    "indirect_checks": 1,
    "retransmit_mult": 2,
    "suspicion_mult": 3,
    "push_pull_interval": 15.0,
    "probe_timeout": 0.2,
    "probe_interval": 1.0,
    "gossip_interval": 0.1,
    "gossip_to_the_dead_time": 15.0,
}


@pytest.mark.parametrize(
    ("preset", "expected"),
    [(SwimConfig.lan, LAN), (SwimConfig.wan, WAN), (SwimConfig.local, LOCAL), (SwimConfig, LAN)],
    ids=["lan", "wan", "local", "default"],
)
def test_presets_carry_memberlists_values(preset: Any, expected: dict[str, Any]) -> None:
    c = preset()
    assert preset_values(c) == expected
    assert c.lifeguard is True
    assert c.problems() == []


def test_preset_overrides_win_over_the_preset() -> None:
    c = SwimConfig.wan(probe_interval=2.0, lifeguard=False)
    assert (c.probe_interval, c.probe_timeout, c.lifeguard) == (2.0, 3.0, False)
    assert SwimConfig.local(indirect_checks=2).indirect_checks == 2


def test_validate_returns_the_config_when_it_is_sound() -> None:
    c = SwimConfig.lan()
    assert c.validate() is c


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"probe_interval": 0.0, "probe_timeout": -1.0}, "probe_interval must be a positive number"),
        ({"gossip_interval": 0.0}, "gossip_interval must be a positive number of seconds, not 0.0."),
        ({"join_timeout": -1.0}, "join_timeout must be a positive number of seconds"),
        ({"probe_timeout": 1.0}, "probe_timeout (1.0s) must be shorter than probe_interval (1.0s)"),
        ({"indirect_checks": -1}, "indirect_checks must be zero or more, not -1."),
        ({"gossip_nodes": -2}, "gossip_nodes must be zero or more, not -2."),
        ({"suspicion_mult": 0}, "suspicion_mult must be at least 1, not 0."),
        ({"awareness_max_multiplier": 0}, "awareness_max_multiplier must be at least 1, not 0."),
        ({"max_piggyback": 0}, "max_piggyback must be at least 1, not 0."),
        ({"reap_time": -1.0}, "reap_time and gossip_to_the_dead_time must not be negative."),
    ],
)
def test_validate_refuses_bad_settings_with_sentences(changes: dict[str, Any], fragment: str) -> None:
    c = SwimConfig.lan(**changes)
    with pytest.raises(ConfigError) as err:
        c.validate()
    assert any(fragment in p for p in err.value.problems), err.value.problems
    assert all(p.endswith(".") for p in err.value.problems)


def test_membership_refuses_an_invalid_config() -> None:
    with pytest.raises(ConfigError):
        Membership(FakeRuntime(), lambda dst, msg: None, SwimConfig.lan(probe_timeout=2.0), "a", "p")


def test_zero_indirect_checks_and_gossip_nodes_are_allowed() -> None:
    assert SwimConfig.lan(indirect_checks=0, gossip_nodes=0).problems() == []


# --- merge rules (SWIM §4.2, memberlist state.go) -------------------------------------------


@pytest.mark.parametrize(
    ("held", "held_inc", "update", "inc", "expected"),
    [
        # Alive(i) overrides anything held at j when i > j (SWIM §4.2: "{Alive Ml, inc=i}
        # overrides {Suspect Ml, inc=j}, i > j"; memberlist aliveNode: "Bail if the incarnation
        # number is older").
        (ALIVE, 1, ALIVE, 2, True),
        (ALIVE, 1, ALIVE, 1, False),  # equal: nothing new
        (ALIVE, 2, ALIVE, 1, False),
        (SUSPECT, 1, ALIVE, 2, True),  # the refutation
        (SUSPECT, 1, ALIVE, 1, False),  # an Alive at the suspected incarnation refutes nothing
        (SUSPECT, 2, ALIVE, 1, False),
        (DEAD, 1, ALIVE, 2, True),  # rejoin after being declared dead
        (DEAD, 1, ALIVE, 1, False),
        (LEFT, 1, ALIVE, 2, True),  # rejoin after a graceful leave
        (LEFT, 1, ALIVE, 1, False),
        # Suspect(i) overrides alive(j) when i >= j ("{Suspect Ml, inc=i} overrides {Alive Ml,
        # inc=j}, i >= j") and suspect(j) when i > j ("... overrides {Suspect Ml, inc=j}, i > j").
        (ALIVE, 1, SUSPECT, 1, True),
        (ALIVE, 1, SUSPECT, 2, True),
        (ALIVE, 2, SUSPECT, 1, False),  # memberlist suspectNode: "Ignore old incarnation numbers"
        (SUSPECT, 1, SUSPECT, 2, True),
        (SUSPECT, 1, SUSPECT, 1, False),  # equal: at most a confirmation, not a new suspicion
        (SUSPECT, 2, SUSPECT, 1, False),
        (DEAD, 1, SUSPECT, 2, False),  # memberlist suspectNode: "Ignore non-alive nodes"
        (LEFT, 1, SUSPECT, 2, False),
        # Dead(i) overrides alive or suspect held at j <= i. SWIM §4.2 lets {Confirm Ml, inc=i}
        # override {Alive Ml, inc=j} and {Suspect Ml, inc=j} for any j; memberlist deadNode
        # narrows that: "Ignore old incarnation numbers". A dead or left member is final until
        # an Alive rejoins it ("Ignore if node is already dead").
        (ALIVE, 1, DEAD, 1, True),
        (ALIVE, 1, DEAD, 2, True),
        (ALIVE, 2, DEAD, 1, False),  # SWIM: any j; memberlist (and we): an older Dead is stale
        (SUSPECT, 1, DEAD, 1, True),
        (SUSPECT, 1, DEAD, 2, True),
        (SUSPECT, 2, DEAD, 1, False),
        (DEAD, 1, DEAD, 2, False),
        (LEFT, 1, DEAD, 2, False),
    ],
)
def test_merge_rules(held: str, held_inc: int, update: str, inc: int, expected: bool) -> None:
    assert overrides(held, held_inc, update, inc) is expected


def test_merge_rules_refuse_an_unknown_update_kind() -> None:
    with pytest.raises(ValueError, match="unknown update"):
        overrides(ALIVE, 0, "left", 1)


# --- BroadcastQueue (SWIM §4.1, memberlist queue.go TransmitLimitedQueue) ----------------------


def alive(node: str, inc: int = 0) -> Alive:
    return Alive(node=node, incarnation=inc, addr=f"a-{node}", peer_addr=f"p-{node}", slots="", epoch=0)


def nodes(updates: list[Any]) -> list[str]:
    return [u.node for u in updates]


def test_queue_sends_newest_first_within_a_transmit_level() -> None:
    # memberlist queue.go: ordered by transmits ascending, then by id descending (newest first)
    q = BroadcastQueue()
    for n in ("a", "b", "c"):
        q.queue(alive(n))
    assert nodes(q.take(3, 10)) == ["c", "b", "a"]
    # a batch taken together keeps its order on the next level too
    assert nodes(q.take(3, 10)) == ["c", "b", "a"]


def test_queue_sends_fewest_transmitted_first() -> None:
    q = BroadcastQueue()
    q.queue(alive("a"))
    q.queue(alive("b"))
    assert nodes(q.take(1, 10)) == ["b"]  # the newest
    assert nodes(q.take(1, 10)) == ["a"]  # never sent: goes before b, although b is newer
    assert sorted(nodes(q.take(2, 10))) == ["a", "b"]  # both sent once: now twice
    q.queue(alive("c"))
    assert nodes(q.take(1, 10)) == ["c"]
    # c (one transmit) goes before a and b (two transmits), then they follow
    assert nodes(q.take(3, 10))[0] == "c"
    assert sorted(nodes(q.take(3, 10))[1:]) == ["a", "b"]


def test_queue_replaces_an_older_update_about_the_same_member() -> None:
    # memberlist: a NamedBroadcast invalidates the queued one about the same node
    q = BroadcastQueue()
    q.queue(alive("a"))
    q.queue(alive("b"))
    q.queue(Suspect(node="a", incarnation=0, source="x"))
    assert len(q) == 2
    assert q.take(5, 10) == [Suspect(node="a", incarnation=0, source="x"), alive("b")]


def test_a_replacing_update_starts_again_at_zero_transmits() -> None:
    q = BroadcastQueue()
    q.queue(alive("a"))
    q.queue(alive("b"))
    assert nodes(q.take(2, 10)) == ["b", "a"]
    q.queue(alive("a", 1))  # newer news about a
    assert q.take(1, 10) == [alive("a", 1)]


def test_queue_drops_an_update_after_max_transmits() -> None:
    q = BroadcastQueue()
    q.queue(alive("a"))
    sent = [q.take(5, 3) for _ in range(4)]
    assert sent == [[alive("a")], [alive("a")], [alive("a")], []]
    assert len(q) == 0


def test_take_returns_at_most_limit_updates() -> None:
    q = BroadcastQueue()
    for n in "abcde":
        q.queue(alive(n))
    assert nodes(q.take(2, 10)) == ["e", "d"]
    assert len(q) == 5  # taken, not dropped
    assert nodes(q.take(3, 10)) == ["c", "b", "a"]  # the unsent ones first
    assert q.take(0, 10) == []


# --- messages ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "msg",
    [
        alive("n1", 3),
        Suspect(node="n1", incarnation=2, source="n2"),
        Dead(node="n1", incarnation=2, source="n1"),
        SwimPing(seq=7, target="n2", gossip=(alive("n1"), Suspect(node="n3", incarnation=0, source="n1"))),
        SwimAck(seq=7, gossip=()),
        PingReq(seq=7, target="n3"),
        Nack(seq=7),
        Gossip(updates=(Dead(node="n3", incarnation=1, source="n1"),)),
        PushPull(
            join=True,
            reply=False,
            members=(
                MemberState(node="n1", incarnation=1, state=ALIVE, addr="a", peer_addr="p", slots="0-9",
                            epoch=2),
            ),
        ),
    ],
)
def test_swim_messages_survive_the_codec(msg: Any) -> None:
    assert codec.roundtrip(msg) == msg


def test_a_state_enum_crosses_the_codec_as_its_exact_text() -> None:
    ms = MemberState(node="n1", incarnation=1, state=DEAD, addr="a", peer_addr="p", slots="", epoch=0)
    back = codec.roundtrip(PushPull(join=False, reply=False, members=(ms,)))
    assert type(back.members[0].state) is str and back.members[0].state == "dead"


@pytest.mark.parametrize(("held", "update"), [("alive", "suspect"), ("suspect", "dead"), ("dead", "alive")])
def test_merge_rules_take_a_state_as_enum_or_text_alike(held: str, update: str) -> None:
    for inc in (0, 1):
        assert overrides(held, 0, update, inc) == overrides(State(held), 0, State(update), inc)


def test_every_name_the_single_module_exported_still_imports() -> None:
    # kvcore/membership.py became a package; sim, realnet, notebooks and the node import these
    import kvcore.membership as pkg

    old = ["ALIVE", "SUSPECT", "DEAD", "LEFT", "STATES", "INCARNATION_KEY", "CLAIM_KEY", "Update",
           "SwimConfig", "suspicion_timeout", "retransmit_limit", "remaining_suspicion_time",
           "push_pull_scale", "overrides", "Awareness", "Member", "BroadcastQueue", "Listener",
           "Membership"]
    assert [n for n in old if not hasattr(pkg, n)] == []
    assert set(old) <= set(pkg.__all__)
