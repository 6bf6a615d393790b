"""The rules of Demers et al. 1987 (kvcore/epidemic.py) as table tests, and sites on FakeRuntimes.

Each rule test names the sentence of the paper it pins (§1.3 anti-entropy, §1.4 rumor mongering).
The site tests drive three sites through a hand-written in-memory network with scripted random
draws, so every push, answer and loss of interest can be checked by hand against the paper's
synchronous cycles.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from kvcore import codec
from kvcore.config import ConfigError
from kvcore.epidemic import (
    PULL,
    PUSH,
    PUSH_PULL,
    AntiEntropyPull,
    AntiEntropyPush,
    AntiEntropyReply,
    AntiEntropySite,
    CycleClock,
    RumorFeedback,
    RumorPolicy,
    RumorPush,
    RumorSite,
    SiteList,
    choose_partner,
    costs_interest,
    directions,
    first_spreading_cycle,
    knew_before,
    lose_interest,
)
from kvcore.messages import Nack
from kvcore.runtime import FakeRuntime

# --- the pure rules ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("learned", "cycle", "expected"),
    [
        (None, 1, False),  # never knew
        (0, 1, True),  # the origin, injected in cycle 0
        (1, 1, False),  # learned during this very cycle: not "before"
        (1, 2, True),
        (3, 2, False),  # learned after that cycle (a late message)
    ],
)
def test_knew_before_is_judged_at_the_start_of_the_cycle(
    learned: int | None, cycle: int, expected: bool
) -> None:
    # §1.4 in synchronous cycles: a contact is unnecessary only if the recipient knew before
    # the cycle started.
    assert knew_before(learned, cycle) is expected


@pytest.mark.parametrize("cycle", [0, 1, 7, 1000])
def test_a_site_infected_in_cycle_c_spreads_from_c_plus_1(cycle: int) -> None:
    assert first_spreading_cycle(cycle) == cycle + 1


@pytest.mark.parametrize(
    ("feedback", "unnecessary", "expected"),
    [
        (True, True, True),  # feedback: an unnecessary contact costs interest
        (True, False, False),  # feedback: a useful contact never does
        (False, True, True),  # blind: every contact can cost interest ...
        (False, False, True),  # ... useful or not, since the sender cannot tell
    ],
)
def test_blind_vs_feedback(feedback: bool, unnecessary: bool, expected: bool) -> None:
    # §1.4 "Blind vs. Feedback"
    assert costs_interest(feedback, unnecessary) is expected


@pytest.mark.parametrize(
    ("k", "contacts", "expected"),
    [
        # each step: (costs, expected (lost, count) after it). §1.4 "Counter vs. coin".
        (1, [True], [(True, 1)]),
        (2, [True, True], [(False, 1), (True, 2)]),
        (3, [True, True, True], [(False, 1), (False, 2), (True, 3)]),
        # a useful contact resets the count: k unnecessary contacts *in a row*
        (2, [True, False, True, True], [(False, 1), (False, 0), (False, 1), (True, 2)]),
        (3, [True, True, False, True, True, True],
         [(False, 1), (False, 2), (False, 0), (False, 1), (False, 2), (True, 3)]),
        (1, [False, False], [(False, 0), (False, 0)]),
    ],
)
def test_counter_loses_interest_after_k_costly_contacts_in_a_row(
    k: int, contacts: list[bool], expected: list[tuple[bool, int]]
) -> None:
    rng = random.Random(0)
    state = rng.getstate()
    count = 0
    got = []
    for costs in contacts:
        lost, count = lose_interest(True, k, rng, count, costs)
        got.append((lost, count))
    assert got == expected
    assert rng.getstate() == state  # the counter draws nothing


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_coin_loses_interest_with_probability_one_over_k(k: int) -> None:
    # §1.4 "Counter vs. coin": lose interest with probability 1/k after each costly contact.
    rng = random.Random(1987 + k)
    draws = 40_000
    losses = sum(lose_interest(False, k, rng, 0, True)[0] for _ in range(draws))
    p = 1.0 / k
    sd = (p * (1 - p) / draws) ** 0.5
    assert abs(losses / draws - p) <= max(5 * sd, 1e-9)


def test_coin_never_loses_on_a_free_contact_and_draws_nothing() -> None:
    rng = random.Random(3)
    state = rng.getstate()
    assert lose_interest(False, 1, rng, 5, False) == (False, 5)
    assert rng.getstate() == state


def test_partner_is_uniform_over_the_other_sites_and_never_self() -> None:
    # §1.3/§1.4: each site "chooses another site at random".
    sites = ("a", "b", "c", "d", "e")
    rng = random.Random(5)
    counts = dict.fromkeys(sites, 0)
    draws = 40_000
    for _ in range(draws):
        counts[choose_partner(rng, sites, 2)] += 1
    assert counts["c"] == 0
    for s in ("a", "b", "d", "e"):
        assert abs(counts[s] / draws - 0.25) < 0.01


def test_partner_choice_depends_on_the_seed_only() -> None:
    shuffled = SiteList(["s2", "s0", "s1", "s3", "s1"])
    ordered = SiteList(["s0", "s1", "s2", "s3"])
    assert shuffled.ids == ordered.ids == ("s0", "s1", "s2", "s3")
    r1, r2 = random.Random(9), random.Random(9)
    a = [choose_partner(r1, shuffled.ids, shuffled.index["s1"]) for _ in range(50)]
    b = [choose_partner(r2, ordered.ids, ordered.index["s1"]) for _ in range(50)]
    assert a == b and "s1" not in a


@pytest.mark.parametrize(
    ("mode", "expected"),
    [(PUSH, (True, False)), (PULL, (False, True)), (PUSH_PULL, (True, True))],
)
def test_anti_entropy_directions(mode: str, expected: tuple[bool, bool]) -> None:
    # §1.3: push, pull, push-pull
    assert directions(mode) == expected


def test_bad_configurations_are_refused_with_sentences() -> None:
    with pytest.raises(ConfigError, match="anti-entropy mode"):
        directions("shove")
    with pytest.raises(ConfigError, match="k must be"):
        RumorPolicy(True, True, 0).validate()
    with pytest.raises(ConfigError, match="period"):
        CycleClock(0.0).validate()
    with pytest.raises(ConfigError, match="two sites"):
        SiteList(["only"])
    with pytest.raises(ConfigError, match="not in its own site list"):
        RumorSite(FakeRuntime("x"), ["a", "b"], RumorPolicy())
    assert RumorPolicy(False, False, 3).describe() == "blind/coin k=3"


def test_cycle_clock_reads_the_start_of_every_cycle_as_that_cycle() -> None:
    clock = CycleClock(period=0.1, origin=2.5)
    for c in range(2000):
        assert clock.cycle_at(clock.start_of(c)) == c
        assert clock.cycle_at(clock.start_of(c) + 0.05) == c


@pytest.mark.parametrize(
    "msg",
    [
        RumorPush(cycle=3, update="u1"),
        RumorFeedback(cycle=3, knew=True),
        AntiEntropyPush(cycle=1, update="u1"),
        AntiEntropyPull(cycle=2),
        AntiEntropyReply(cycle=2, update=None),
        AntiEntropyReply(cycle=2, update="u1"),
    ],
)
def test_epidemic_messages_survive_the_codec(msg: Any) -> None:
    assert codec.roundtrip(msg) == msg


# --- three sites on FakeRuntimes -----------------------------------------------------------


class ScriptedRandom(random.Random):
    """A Random whose ``randrange`` and ``random`` return scripted values, in order."""

    def __init__(self, picks: list[int], coins: list[float] | None = None) -> None:
        super().__init__(0)
        self.picks = list(picks)
        self.coins = list(coins or [])

    def randrange(self, *args: Any, **kwargs: Any) -> int:  # type: ignore[override]
        return self.picks.pop(0)

    def random(self) -> float:
        return self.coins.pop(0)


IDS = ("A", "B", "C")


def draws(me: str, partners: str) -> list[int]:
    """The randrange values that make ``me`` pick ``partners`` (one letter each) in turn."""
    mine = IDS.index(me)
    return [IDS.index(p) - (IDS.index(p) > mine) for p in partners]


class World:
    """Three sites, one FakeRuntime each, and a network that delivers a cycle's messages (and
    the answers they cause) 0.01 apart, well inside the cycle."""

    def __init__(self, make: Any, scripts: dict[str, tuple[str, list[float]]]) -> None:
        self.rts = {i: FakeRuntime(i) for i in IDS}
        for i, (partners, coins) in scripts.items():
            self.rts[i].random = ScriptedRandom(draws(i, partners), coins)
        self.sites = {i: make(self.rts[i]) for i in IDS}
        #: (cycle, src, dst, message) in delivery order
        self.log: list[tuple[int, str, str, Any]] = []

    def _advance_all(self, t: float) -> None:
        for rt in self.rts.values():
            rt.advance(t - rt.now())

    def cycle(self, c: int) -> None:
        self._advance_all(float(c))  # every due cycle timer fires: the pushes of cycle c
        t = float(c)
        while True:
            msgs = [(src, dst, m) for src in IDS for dst, m in self.rts[src].take_sent()]
            if not msgs:
                return
            t += 0.01
            self._advance_all(t)
            for src, dst, m in msgs:
                self.log.append((c, src, dst, m))
                self.sites[dst].on_message(src, m)

    def pushes(self, c: int) -> list[tuple[str, str]]:
        return [(s, d) for cy, s, d, m in self.log if cy == c and type(m) is RumorPush]

    def feedback(self, c: int) -> list[tuple[str, bool]]:
        """(who was answered, knew) for cycle c, sorted by the one answered."""
        return sorted(
            (d, m.knew) for cy, s, d, m in self.log if cy == c and type(m) is RumorFeedback
        )

    def pending_timers(self) -> int:
        return sum(rt.pending_timers() for rt in self.rts.values())


def test_start_of_cycle_rule_on_three_sites_feedback_counter_k1() -> None:
    """Hand-checked (feedback/counter, k = 1; A holds the update at cycle 0):

    cycle 1: A -> B. B learns (cycle 1); useful, so A keeps going. B may not push yet.
    cycle 2: A -> C and B -> C. C learns from A's push; B's push reaches C in the same cycle,
             and C did not know when cycle 2 began, so it is useful too: nobody loses interest.
             (Judged on arrival instead, B would wrongly lose interest here.) C may not push yet.
    cycle 3: A -> B, B -> A, C -> A: all three recipients knew before cycle 3, all three
             contacts are unnecessary, and with k = 1 all three senders lose interest.
    cycle 4: nothing; no timer is left. Traffic = 6 pushes / 3 sites = 2.
    """
    policy = RumorPolicy(feedback=True, counter=True, k=1)
    w = World(lambda rt: RumorSite(rt, IDS, policy),
              {"A": ("BCB", []), "B": ("CA", []), "C": ("A", [])})
    w.sites["A"].inject("u1")
    for c in (1, 2, 3, 4):
        w.cycle(c)
    assert w.pushes(1) == [("A", "B")]
    assert w.feedback(1) == [("A", False)]
    assert w.pushes(2) == [("A", "C"), ("B", "C")]
    assert w.feedback(2) == [("A", False), ("B", False)]
    assert w.pushes(3) == [("A", "B"), ("B", "A"), ("C", "A")]
    assert w.feedback(3) == [("A", True), ("B", True), ("C", True)]
    assert w.pushes(4) == []
    s = w.sites
    assert [s[i].learned_cycle for i in IDS] == [0, 1, 2]
    assert [s[i].removed_cycle for i in IDS] == [3, 3, 3]
    assert [s[i].updates_sent for i in IDS] == [3, 2, 1]
    assert not any(s[i].infective for i in IDS)
    assert w.pending_timers() == 0


def test_blind_counter_counts_every_contact_and_sends_no_feedback() -> None:
    """Blind/counter, k = 2: every site pushes exactly twice, from the cycle after it learned.

    A: cycles 1-2 (-> B, -> C). B learned in 1: cycles 2-3. C learned in 2 (from A; B's push in
    the same cycle is to A): cycles 3-4.
    """
    policy = RumorPolicy(feedback=False, counter=True, k=2)
    w = World(lambda rt: RumorSite(rt, IDS, policy),
              {"A": ("BC", []), "B": ("AC", []), "C": ("AB", [])})
    w.sites["A"].inject("u1")
    for c in (1, 2, 3, 4, 5):
        w.cycle(c)
    assert w.pushes(1) == [("A", "B")]
    assert w.pushes(2) == [("A", "C"), ("B", "A")]
    assert w.pushes(3) == [("B", "C"), ("C", "A")]
    assert w.pushes(4) == [("C", "B")]
    assert w.pushes(5) == []
    assert all(type(m) is RumorPush for _, _, _, m in w.log)
    assert [w.sites[i].removed_cycle for i in IDS] == [2, 3, 4]
    assert w.pending_timers() == 0


def test_blind_coin_loses_interest_on_the_scripted_draw() -> None:
    """Blind/coin, k = 2: lose interest when the draw falls below 1/2."""
    policy = RumorPolicy(feedback=False, counter=False, k=2)
    w = World(lambda rt: RumorSite(rt, IDS, policy),
              {"A": ("BC", [0.7, 0.2]), "B": ("C", [0.1]), "C": ("B", [0.4])})
    w.sites["A"].inject("u1")
    for c in (1, 2, 3, 4):
        w.cycle(c)
    assert w.pushes(1) == [("A", "B")]  # 0.7 >= 0.5: A keeps going
    assert w.pushes(2) == [("A", "C"), ("B", "C")]  # 0.2 and 0.1: both stop
    assert w.pushes(3) == [("C", "B")]  # 0.4: C stops
    assert [w.sites[i].removed_cycle for i in IDS] == [2, 2, 3]
    assert w.pending_timers() == 0


def test_rumor_site_drops_malformed_and_late_input() -> None:
    rt = FakeRuntime("A")
    site = RumorSite(rt, IDS, RumorPolicy(True, True, 2))
    site.on_message("B", Nack(seq=1))
    assert site.stats.malformed == 1
    site.on_message("B", RumorFeedback(cycle=1, knew=True))  # not infective, nothing awaited
    assert site.stats.late_replies == 1
    site.inject("u1")
    rt.advance(1.0)
    [(dst, push)] = rt.take_sent()
    site.on_message(dst, RumorFeedback(cycle=0, knew=True))  # wrong cycle: ignored
    assert site.stats.late_replies == 2 and site.count == 0
    site.on_message(dst, RumorFeedback(cycle=push.cycle, knew=True))
    assert site.count == 1 and site.infective


def test_pull_is_answered_from_the_state_at_the_start_of_the_cycle() -> None:
    # §1.3 pull in synchronous cycles: a partner that learns during cycle c does not hand the
    # update to a pull of cycle c.
    rt = FakeRuntime("B", start=3.0)
    site = AntiEntropySite(rt, IDS, PULL)
    site.on_message("A", AntiEntropyPush(cycle=3, update="u1"))
    assert site.learned_cycle == 3
    site.on_message("C", AntiEntropyPull(cycle=3))
    site.on_message("C", AntiEntropyPull(cycle=4))
    assert rt.take_sent() == [
        ("C", AntiEntropyReply(cycle=3, update=None)),
        ("C", AntiEntropyReply(cycle=4, update="u1")),
    ]
    assert site.updates_sent == 1


@pytest.mark.parametrize("mode", [PUSH, PULL, PUSH_PULL])
def test_anti_entropy_site_contacts_one_partner_every_cycle(mode: str) -> None:
    rt = FakeRuntime("A", seed=4)
    site = AntiEntropySite(rt, IDS, mode)
    site.start()
    rt.advance(1.0)
    sent_unknowing = rt.take_sent()  # cycle 1, A does not know: push sends nothing
    assert [type(m) for _, m in sent_unknowing] == ([AntiEntropyPull] if mode != PUSH else [])
    site.on_message("B", AntiEntropyReply(cycle=1, update="u1"))  # learned in cycle 1
    rt.advance(1.0)
    kinds = [type(m) for _, m in rt.take_sent()]  # cycle 2: knew at the start
    expected = {PUSH: [AntiEntropyPush], PULL: [AntiEntropyPull],
                PUSH_PULL: [AntiEntropyPush, AntiEntropyPull]}[mode]
    assert kinds == expected
    site.stop()
    rt.advance(5.0)
    assert rt.take_sent() == [] and rt.pending_timers() == 0


# --- the message tables (kvcore.dispatch) --------------------------------------------------------


@pytest.mark.parametrize(
    ("site_cls", "kinds"),
    [
        (RumorSite, {RumorPush, RumorFeedback}),
        (AntiEntropySite, {AntiEntropyPush, AntiEntropyPull, AntiEntropyReply}),
    ],
)
def test_each_site_handles_exactly_its_tables_kinds(site_cls: Any, kinds: set[type]) -> None:
    assert site_cls.HANDLES == frozenset(site_cls.HANDLERS) == kinds


def make_site(site_cls: Any) -> Any:
    rt = FakeRuntime("A")
    if site_cls is RumorSite:
        return RumorSite(rt, IDS, RumorPolicy(True, True, 2))
    return AntiEntropySite(rt, IDS, PUSH_PULL)


@pytest.mark.parametrize("site_cls", [RumorSite, AntiEntropySite])
@pytest.mark.parametrize(
    "msg",
    [Nack(seq=1), "junk", None, RumorPush(cycle=1, update="u"), AntiEntropyPull(cycle=1)],
    ids=["swim-nack", "str", "none", "rumor-push", "ae-pull"],
)
def test_a_kind_the_site_does_not_take_is_counted_malformed_and_dropped(site_cls: Any, msg: Any) -> None:
    site = make_site(site_cls)
    site.on_message("B", msg)
    if type(msg) in site_cls.HANDLES:
        assert site.stats.malformed == 0
        return
    assert site.stats.malformed == 1
    assert site.rt.take_sent() == [] and not site.knows
    assert site.stats.received[type(msg).__name__] == 1  # still counted as received
