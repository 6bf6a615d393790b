"""The classic epidemics of Demers et al. (1987), one site at a time, on the Runtime.

Theory of operation
-------------------
Demers, Greene, Hauser, Irish, Larson, Shenker, Sturgis, Swinehart and Terry, "Epidemic
Algorithms for Replicated Database Maintenance" (PODC 1987; Xerox PARC CSL-89-1) spread one
update through ``n`` sites in synchronous *cycles*. With respect to that update a site is
*susceptible* (does not know it), *infective* (knows it and spreads it) or *removed* (knows it,
no longer spreads it). This module holds the two families of §1.3-§1.4 as sites on the
:class:`~kvcore.runtime.Runtime`, so the same objects run in the SimPy world (``sim/epidemic.py``
runs the paper's experiment with them) and could run on realnet unchanged.

**Anti-entropy (§1.3)** is a *simple* epidemic: every site, every cycle, contacts one partner
chosen uniformly at random among the other sites, and never stops. What travels depends on the
direction (:data:`ANTI_ENTROPY_MODES`):

* ``push``: the initiator sends the update (:class:`AntiEntropyPush`) if it has it;
* ``pull``: the initiator asks (:class:`AntiEntropyPull`) and the partner answers
  (:class:`AntiEntropyReply`), carrying the update if the partner has it;
* ``push-pull``: both.

Neither side knows what the other has before the exchange (no checksum step), so an update
message may be wasted on a site that knows already: *traffic* counts every message that
carries the update (:attr:`AntiEntropySite.updates_sent`). In the paper's analysis the
probability ``p_i`` that a site is still susceptible after cycle ``i`` obeys, for pull,
``p_{i+1} = p_i^2`` (quadratic convergence at the end) and, for push,
``p_{i+1} ≈ p_i·e^{-1}`` once most sites know; push needs about ``log2(n) + ln(n)`` cycles.

**Rumor mongering (§1.4)** is a *complex* epidemic: only infective sites push
(:class:`RumorPush`), one partner per cycle, and each loses interest (becomes removed) by one
of four rules, two independent choices:

* *feedback* or *blind* (:func:`costs_interest`): with feedback the recipient answers whether
  it knew already (:class:`RumorFeedback`) and only an *unnecessary* contact can cost the
  sender interest; a blind sender does not learn that, so every contact can;
* *coin* or *counter* (:func:`lose_interest`): lose interest with probability ``1/k`` at each
  contact that costs interest, or after ``k`` such contacts in a row (a useful contact, which
  only feedback reveals, resets the count).

Tables 1 and 2 of the paper report, for 1000 sites, the *residue* (fraction of sites that never
learn the update), the *traffic* (update messages per site) and the delays ``t_ave`` and
``t_last`` (cycles) for feedback/counter and blind/coin with ``k = 1 … 5``.

The start-of-cycle rule
-----------------------
Every decision is judged on the state *at the start of the cycle*, as in a synchronous round:

* a site that learns the update during cycle ``c`` becomes infective at cycle ``c + 1``
  (:func:`first_spreading_cycle`): it cannot relay in the cycle that infected it;
* a contact of cycle ``c`` is *unnecessary* only if the recipient knew before cycle ``c``
  started (:func:`knew_before`); two senders that reach the same susceptible site in one cycle
  are both useful;
* a pull of cycle ``c`` is answered with the update only if the partner knew before cycle ``c``.

Messages carry their cycle number, so the recipient judges by the sender's cycle, not by when
the message happened to arrive. A site knows the cycle grid from a :class:`CycleClock` (cycle
``c`` starts at ``origin + c·period``); the world must deliver a cycle's messages, and their
answers, within the cycle (the sim uses a constant latency far below one period).

Everything random comes from ``runtime.random`` (partner choice, the coin), and partners are
drawn from the *sorted* list of the other site ids, so a seed reproduces a run exactly. Every
decision rule is a small pure function below, table-tested in ``tests/kvcore``. Each site maps
the message classes it takes to handlers in one table (``HANDLERS``, routed by a
:class:`~kvcore.dispatch.Dispatch`; ``HANDLES`` is derived from it). Peer input is never trusted:
a message of a kind the table does not name is counted in ``stats.malformed`` and dropped; a
late or unexpected feedback is counted in ``stats.late_replies`` and ignored.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar, Final

from kvcore.config import ConfigError
from kvcore.dispatch import Dispatch
from kvcore.messages import message
from kvcore.metrics import NodeStats
from kvcore.runtime import Runtime, TimerHandle

# --- messages --------------------------------------------------------------------------------


@message
class RumorPush:
    """An infective site shares the update (§1.4); ``cycle`` is the sender's cycle."""

    cycle: int
    update: str


@message
class RumorFeedback:
    """The recipient's answer to a :class:`RumorPush` under feedback (§1.4, "Blind vs. Feedback").

    ``knew`` is True when the recipient knew the update before the push's cycle started, i.e.
    the contact was unnecessary.
    """

    cycle: int
    knew: bool


@message
class AntiEntropyPush:
    """Anti-entropy push (§1.3): the initiator sends the update it has."""

    cycle: int
    update: str


@message
class AntiEntropyPull:
    """Anti-entropy pull (§1.3): the initiator asks its partner for what it has."""

    cycle: int


@message
class AntiEntropyReply:
    """The partner's answer to :class:`AntiEntropyPull`: the update, or None if it had none
    when the pull's cycle started."""

    cycle: int
    update: str | None = None


# --- configuration ---------------------------------------------------------------------------

PUSH: Final = "push"
PULL: Final = "pull"
PUSH_PULL: Final = "push-pull"
#: The anti-entropy directions of §1.3.
ANTI_ENTROPY_MODES: Final = (PUSH, PULL, PUSH_PULL)


@dataclass(frozen=True)
class RumorPolicy:
    """How a rumor-mongering site loses interest (§1.4): two choices and one parameter.

    ``feedback``: the recipient says whether it knew (only unnecessary contacts cost interest);
    False is *blind* (every contact costs interest). ``counter``: lose interest after ``k``
    contacts that cost interest, in a row; False is *coin* (lose interest with probability
    ``1/k`` at each). Table 1 of the paper is feedback/counter, Table 2 blind/coin.
    """

    feedback: bool = True
    counter: bool = True
    k: int = 1

    def validate(self) -> RumorPolicy:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ConfigError([f"k must be an integer of at least 1, not {self.k!r}."])
        return self

    def describe(self) -> str:
        """``"feedback/counter k=2"``: the paper's names for the variant."""
        return (
            f"{'feedback' if self.feedback else 'blind'}/"
            f"{'counter' if self.counter else 'coin'} k={self.k}"
        )


@dataclass(frozen=True)
class CycleClock:
    """The cycle grid shared by all sites: cycle ``c`` starts at ``origin + c * period``.

    The update is injected during cycle 0 (at ``origin`` in the paper's experiment); the first
    push happens at the start of cycle 1. Times are the Runtime's seconds.
    """

    period: float = 1.0
    origin: float = 0.0

    def validate(self) -> CycleClock:
        if not (math.isfinite(self.period) and self.period > 0):
            raise ConfigError([f"the cycle period must be a positive number, not {self.period!r}."])
        if not math.isfinite(self.origin):
            raise ConfigError([f"the cycle origin must be a finite time, not {self.origin!r}."])
        return self

    def start_of(self, cycle: int) -> float:
        return self.origin + cycle * self.period

    def cycle_at(self, now: float) -> int:
        """The cycle that contains time ``now``.

        A tiny slack absorbs float error, so that a timer set for the start of cycle ``c``
        (``origin + c * period``, which may come out a hair early) reads as cycle ``c``.
        """
        return math.floor((now - self.origin) / self.period + 1e-9)


# --- the rules, as pure functions ------------------------------------------------------------


def choose_partner(rng: random.Random, sites: tuple[str, ...], me: int) -> str:
    """One partner, uniformly at random among the other sites (§1.3 and §1.4: a site picks its
    partner at random among all other sites, with the uniform spatial distribution).

    ``sites`` is the sorted tuple of *all* site ids and ``me`` this site's index in it: one draw
    over the ``n - 1`` others, skipping ``me``. The draw depends on the seed only, never on
    hashing or insertion order, and needs no per-site copy of the list.
    """
    j = rng.randrange(len(sites) - 1)
    return sites[j + 1] if j >= me else sites[j]


def knew_before(learned_cycle: int | None, cycle: int) -> bool:
    """Did the site know the update before cycle ``cycle`` started?

    The start-of-cycle rule (§1.4 read as a synchronous round): a contact of cycle ``c`` is
    unnecessary only if the recipient already knew when ``c`` began; a pull of cycle ``c`` is
    answered with the update only if the partner knew when ``c`` began.
    """
    return learned_cycle is not None and learned_cycle < cycle


def first_spreading_cycle(learned_cycle: int) -> int:
    """A site that learns the update during cycle ``c`` becomes infective at ``c + 1``: it
    cannot relay in the cycle that infected it (the synchronous cycles of §1.3-§1.4)."""
    return learned_cycle + 1


def costs_interest(feedback: bool, unnecessary: bool) -> bool:
    """Can this contact make the sender lose interest? (§1.4, "Blind vs. Feedback".)

    Feedback: the recipient tells the sender whether it already knew the rumor, and the sender
    loses interest only over contacts with sites that knew, so only an unnecessary contact
    counts. Blind: the sender never learns the answer, so every contact counts, necessary or
    not.
    """
    return unnecessary if feedback else True


def lose_interest(
    counter: bool, k: int, rng: random.Random, count: int, costs: bool
) -> tuple[bool, int]:
    """After one contact: does the sender lose interest, and its new counter value? (§1.4,
    "Counter vs. coin".)

    Coin: a contact that costs interest loses it with probability ``1/k`` (one draw from
    ``rng``; none for a contact that costs nothing, and ``k = 1`` always loses). Counter: a
    contact that costs interest adds one to the count, and interest is lost when the count
    reaches ``k``; a contact that costs nothing (a useful contact under feedback) resets the
    count to 0, so it takes ``k`` unnecessary contacts *in a row*. The coin leaves ``count``
    untouched.
    """
    if counter:
        if not costs:
            return False, 0
        count += 1
        return count >= k, count
    if not costs:
        return False, count
    return rng.random() < 1.0 / k, count


def directions(mode: str) -> tuple[bool, bool]:
    """``(push, pull)`` for an anti-entropy mode (§1.3: "push", "pull" or "push-pull")."""
    if mode == PUSH:
        return True, False
    if mode == PULL:
        return False, True
    if mode == PUSH_PULL:
        return True, True
    raise ConfigError([f"anti-entropy mode must be one of {', '.join(ANTI_ENTROPY_MODES)}, "
                       f"not {mode!r}."])


class SiteList:
    """The sorted ids of every site of one epidemic, shared by all its sites (partner lists are
    not copied per site: a run of 1000 sites would otherwise hold a million references)."""

    __slots__ = ("ids", "index")

    def __init__(self, site_ids: Iterable[str]) -> None:
        self.ids: tuple[str, ...] = tuple(sorted(set(site_ids)))
        if len(self.ids) < 2:
            raise ConfigError(["an epidemic needs at least two sites."])
        self.index: dict[str, int] = {s: i for i, s in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self.ids)


# --- the sites -------------------------------------------------------------------------------


class _Site:
    """What both families share: the update, when it was learned, the cycle timer, counters,
    and the message table (each family names its messages in ``HANDLERS``)."""

    #: message class -> the name of the method that handles it (set by each family)
    HANDLERS: ClassVar[Mapping[type, str]] = MappingProxyType({})

    def __init__(
        self, runtime: Runtime, sites: SiteList | Iterable[str], clock: CycleClock
    ) -> None:
        self.rt = runtime
        self.clock = clock.validate()
        self.sites = sites if isinstance(sites, SiteList) else SiteList(sites)
        if runtime.node_id not in self.sites.index:
            raise ConfigError([f"site {runtime.node_id!r} is not in its own site list."])
        self._me = self.sites.index[runtime.node_id]
        #: the update this site knows (None: susceptible)
        self.update: str | None = None
        #: the cycle in which the update arrived (0 for the site it was injected at)
        self.learned_cycle: int | None = None
        #: messages that carried the update, sent by this site (the paper's traffic)
        self.updates_sent = 0
        self.stats = NodeStats()
        self._timer: TimerHandle | None = None
        self._dispatch = Dispatch({cls: getattr(self, name) for cls, name in self.HANDLERS.items()},
                                  self._malformed)

    def on_message(self, src: str, msg: Any) -> None:
        """Handle a peer message. Never raises on what a peer sends."""
        self.stats.count_received(type(msg).__name__)
        self._dispatch(src, msg)

    def _malformed(self, src: str, msg: Any) -> None:
        self.stats.malformed += 1  # a kind this family does not take: count, drop

    @property
    def knows(self) -> bool:
        return self.learned_cycle is not None

    def _partner(self) -> str:
        return choose_partner(self.rt.random, self.sites.ids, self._me)

    def _current_cycle(self) -> int:
        return self.clock.cycle_at(self.rt.now())

    def _learn(self, update: str) -> bool:
        """Take the update if it is new; True when it was."""
        if self.learned_cycle is not None:
            return False
        self.update = update
        self.learned_cycle = self._current_cycle()
        return True

    def _schedule(self, cycle: int) -> None:
        self._cancel()
        delay = max(0.0, self.clock.start_of(cycle) - self.rt.now())
        self._timer = self.rt.call_later(delay, lambda: self._on_cycle(cycle))

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _send(self, dst: str, msg: Any, carries_update: bool) -> None:
        self.stats.count_sent(type(msg).__name__)
        if carries_update:
            self.updates_sent += 1
        self.rt.send(dst, msg)

    def _on_cycle(self, cycle: int) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class RumorSite(_Site):
    """One site of rumor mongering (§1.4) under a :class:`RumorPolicy`.

    :meth:`inject` plants the update here. An infective site pushes once per cycle, from the
    cycle after it learned the update, until it loses interest; it keeps a cycle timer only
    while infective, so a run is over when no timer and no message is left.
    """

    HANDLERS: ClassVar[Mapping[type, str]] = MappingProxyType({
        RumorPush: "_on_push",
        RumorFeedback: "_on_feedback",
    })
    #: the message kinds this site takes, derived from :attr:`HANDLERS`
    HANDLES: ClassVar[frozenset[type]] = frozenset(HANDLERS)

    def __init__(
        self,
        runtime: Runtime,
        sites: SiteList | Iterable[str],
        policy: RumorPolicy,
        clock: CycleClock | None = None,
    ) -> None:
        super().__init__(runtime, sites, clock or CycleClock())
        self.policy = policy.validate()
        self.infective = False
        #: the counter of the counter variants (contacts that cost interest, in a row)
        self.count = 0
        #: the cycle in which this site lost interest (None: never infective, or still is)
        self.removed_cycle: int | None = None
        #: the cycle of the push whose feedback is awaited (feedback only)
        self._awaiting: int | None = None

    def inject(self, update: str) -> None:
        """Plant the update at this site (the paper's experiment: one site, at cycle 0)."""
        if self._learn(update):
            self._become_infective()

    def _become_infective(self) -> None:
        assert self.learned_cycle is not None
        self.infective = True
        self.count = 0
        self._schedule(first_spreading_cycle(self.learned_cycle))

    def _on_cycle(self, cycle: int) -> None:
        self._timer = None
        if not self.infective:
            return
        assert self.update is not None
        self._send(self._partner(), RumorPush(cycle=cycle, update=self.update),
                   carries_update=True)
        if self.policy.feedback:
            self._awaiting = cycle  # decided when the answer comes, within this cycle
        else:
            self._after_contact(cycle, unnecessary=False)  # blind: unknown, and irrelevant
        if self.infective:
            self._schedule(cycle + 1)

    def _on_push(self, src: str, msg: RumorPush) -> None:
        unnecessary = knew_before(self.learned_cycle, msg.cycle)
        if self._learn(msg.update):
            self._become_infective()
        if self.policy.feedback:
            self._send(src, RumorFeedback(cycle=msg.cycle, knew=unnecessary), carries_update=False)

    def _on_feedback(self, src: str, msg: RumorFeedback) -> None:
        if not self.infective or msg.cycle != self._awaiting:
            self.stats.late_replies += 1  # not the answer we wait for: ignore it
            return
        self._awaiting = None
        self._after_contact(msg.cycle, unnecessary=msg.knew)

    def _after_contact(self, cycle: int, unnecessary: bool) -> None:
        p = self.policy
        lost, self.count = lose_interest(
            p.counter, p.k, self.rt.random, self.count, costs_interest(p.feedback, unnecessary)
        )
        if lost:
            self.infective = False
            self.removed_cycle = cycle
            self._cancel()


class AntiEntropySite(_Site):
    """One site of anti-entropy (§1.3) in one of :data:`ANTI_ENTROPY_MODES`.

    Every site contacts one random partner every cycle, whether it knows the update or not,
    from :meth:`start` until :meth:`stop` (anti-entropy never stops by itself: the world ends
    the experiment once every site knows).
    """

    HANDLERS: ClassVar[Mapping[type, str]] = MappingProxyType({
        AntiEntropyPush: "_on_push",
        AntiEntropyPull: "_on_pull",
        AntiEntropyReply: "_on_reply",
    })
    #: the message kinds this site takes, derived from :attr:`HANDLERS`
    HANDLES: ClassVar[frozenset[type]] = frozenset(HANDLERS)

    def __init__(
        self,
        runtime: Runtime,
        sites: SiteList | Iterable[str],
        mode: str,
        clock: CycleClock | None = None,
    ) -> None:
        super().__init__(runtime, sites, clock or CycleClock())
        self.mode = mode
        self.push, self.pull = directions(mode)
        self.running = False

    def inject(self, update: str) -> None:
        """Plant the update at this site."""
        self._learn(update)

    def start(self) -> None:
        """Contact a partner at the start of every cycle from the next one on."""
        self.running = True
        self._schedule(self._current_cycle() + 1)

    def stop(self) -> None:
        self.running = False
        self._cancel()

    def _on_push(self, src: str, msg: AntiEntropyPush) -> None:
        self._learn(msg.update)

    def _on_pull(self, src: str, msg: AntiEntropyPull) -> None:
        # answered by the start-of-cycle rule: only an update known before the puller's cycle
        has = knew_before(self.learned_cycle, msg.cycle)
        update = self.update if has else None
        self._send(src, AntiEntropyReply(cycle=msg.cycle, update=update),
                   carries_update=update is not None)

    def _on_reply(self, src: str, msg: AntiEntropyReply) -> None:
        if msg.update is not None:
            self._learn(msg.update)

    def _on_cycle(self, cycle: int) -> None:
        self._timer = None
        if not self.running:
            return
        partner = self._partner()
        if self.push and knew_before(self.learned_cycle, cycle):
            assert self.update is not None
            self._send(partner, AntiEntropyPush(cycle=cycle, update=self.update),
                       carries_update=True)
        if self.pull:
            self._send(partner, AntiEntropyPull(cycle=cycle), carries_update=False)
        self._schedule(cycle + 1)
