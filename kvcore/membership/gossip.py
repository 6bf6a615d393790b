"""Dissemination (SWIM §4.1): piggybacking news on every message, and the gossip rounds.

Theory of operation
-------------------
What a member learns that others should know (an Alive, Suspect or Dead it applied) waits in its
:class:`~kvcore.membership.broadcast.BroadcastQueue`, fewest transmissions first, and leaves it
after ``retransmit_mult * ceil(log10(N + 1))`` transmissions
(:func:`~kvcore.membership.formulas.retransmit_limit`, the count asked again only when the
number of live members changed). Up to ``max_piggyback`` of them ride on every probe and ack
(``_piggyback``), and every ``gossip_interval`` a round sends them to ``gossip_nodes`` random
members (memberlist's ``gossip``): live ones, and ones declared dead less than
``gossip_to_the_dead_time`` ago, so that they hear it and can refute. A round with nothing queued
sends nothing.

A round that finds nothing queued also sets no timer: the rounds *sleep* until something is
queued (the queue's ``on_first``), and :meth:`Dissemination._gossip_wake` then sets the next
round at the time the ticker would next have fired had it kept ticking (the same float sums of
``gossip_interval``, set with ``call_at``). So every round that sends is sent at exactly the time
it was before, with the same draws (an empty round draws nothing), and a quiet node costs no
event each ``gossip_interval``: in a steady 10,000-node cluster those empty rounds were 3.0 M
of the 5.6 M events of a simulated minute. The one trace this changes is the simulation's, which
no longer records an empty round's timer (``tests/sim/test_idle_gossip.py`` compares the rest).

The random draws are the Runtime's generator's, in a fixed order (rejection sampling, one
``randrange`` per try; inlined as ``random.Random`` draws it, one ``getrandbits`` per try, the
same numbers and the generator left in the same state), so the same seed gives the same targets.

:class:`Dissemination` is that part of :class:`~kvcore.membership.Membership` (a mixin).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kvcore.membership.broadcast import BroadcastQueue, Update
from kvcore.membership.formulas import retransmit_limit
from kvcore.membership.member import ALIVE
from kvcore.membership.table import MemberTable, SortedIds
from kvcore.messages import Gossip
from kvcore.runtime import Runtime, TimerHandle

if TYPE_CHECKING:
    from kvcore.membership.config import SwimConfig

#: Gossip(updates=...) without the keyword parsing (messages._fast_make), once per gossip sent
_gossip: Callable[[tuple[Update, ...]], Gossip] = Gossip._make  # type: ignore[attr-defined]
#: what randrange(n) calls when the generator draws with getrandbits (random.Random's own)
_RANDBELOW_BITS = getattr(random.Random, "_randbelow_with_getrandbits", None)


def bits_of(rng: random.Random) -> Callable[[int], int] | None:
    """``rng.getrandbits`` when ``randrange`` of ``rng`` draws by it as :func:`randbelow_of`
    inlines (one ``getrandbits(n.bit_length())`` per try until one falls below ``n``), else
    None: for a loop that draws many numbers below one bound (:meth:`Dissemination._gossip_targets`)."""
    if _RANDBELOW_BITS is None or getattr(type(rng), "_randbelow", None) is not _RANDBELOW_BITS:
        return None
    return rng.getrandbits


def randbelow_of(rng: random.Random) -> Callable[[int], int]:
    """``rng.randrange`` for a positive bound, as a function of the bound (a member's gossip
    targets and the place of each member it learns in its probe round are drawn so: a thousand
    members joining draw it a million times).

    When ``rng`` draws as :class:`random.Random`'s own ``_randbelow_with_getrandbits`` does (every
    Runtime's generator), that method's loop is inlined on ``rng.getrandbits``: one
    ``getrandbits(k)`` per try until one falls below the bound, the same numbers in the same
    order and the generator left in the same state, without randrange's two Python calls and
    argument checks. Any other generator's ``randrange`` is returned as it is."""
    if _RANDBELOW_BITS is None or getattr(type(rng), "_randbelow", None) is not _RANDBELOW_BITS:
        return rng.randrange
    bits = rng.getrandbits

    def below(n: int) -> int:
        if n <= 0:
            raise ValueError("empty range for randrange()")
        k = n.bit_length()
        r = bits(k)
        while r >= n:
            r = bits(k)
        return r

    return below


class Dissemination:
    """Piggybacking and gossip rounds of :class:`~kvcore.membership.Membership` (a mixin)."""

    if TYPE_CHECKING:
        rt: Runtime
        config: SwimConfig
        running: bool
        members: MemberTable
        broadcasts: BroadcastQueue
        _send: Callable[[str, Any], None]
        _live_ids: SortedIds
        _dead_ids: list[str]
        _timers: dict[str, TimerHandle]
        _limit_for: int
        _limit: int
        _rng: random.Random
        _below: Callable[[int], int]
        _bits: Callable[[int], int] | None

        def num_live(self) -> int: ...

    #: rounds sleep while nothing is queued (False: tick every gossip_interval regardless, as
    #: memberlist's ticker does; the same messages at the same times, and more events)
    sleep_when_idle = True
    #: while the rounds sleep: when the next one would have fired (None: awake, or stopped)
    _gossip_due: float | None = None

    def _piggyback(self) -> tuple[Update, ...]:
        if not self.broadcasts.queued:
            return ()
        return tuple(self.broadcasts.take(self.config.max_piggyback, self._retransmit_limit()))

    def _retransmit_limit(self) -> int:
        """formulas.retransmit_limit for the live count, computed again only when the count
        changed (it is asked for every message that carries updates)."""
        n = self.num_live()
        if n != self._limit_for:
            self._limit_for = n
            self._limit = retransmit_limit(self.config.retransmit_mult, max(1, n))
        return self._limit

    def _sample(self, count: int, exclude: str | None = None, alive_only: bool = False) -> list[str]:
        """Up to ``count`` distinct random live members (rejection sampling: O(count))."""
        pool = self._live_ids
        out: list[str] = []
        if not pool or count <= 0:
            return out
        rnd = self.rt.random
        if len(pool) <= 4 * count + 8:
            # small pool: draw exactly, so we never fall short of available members
            cands = [n for n in pool if n != exclude and (not alive_only or self.members[n].state == ALIVE)]
            return rnd.sample(cands, min(count, len(cands)))
        tries = 0
        while len(out) < count and tries < 4 * count + 8:
            tries += 1
            nid = pool[rnd.randrange(len(pool))]
            if nid == exclude or nid in out or (alive_only and self.members[nid].state != ALIVE):
                continue
            out.append(nid)
        return out

    def _gossip_targets(self, count: int) -> list[str]:
        """Up to ``count`` random members: live ones, and ones dead for less than
        gossip_to_the_dead_time (so they can learn they were declared dead and refute)."""
        live = self._live_ids
        recent: list[str] = []
        if self._dead_ids:
            now = self.rt.now()
            window = self.config.gossip_to_the_dead_time
            recent = [n for n in self._dead_ids if now - self.members[n].state_change < window]
        nlive = len(live)
        total = nlive + len(recent)
        want = min(count, total)
        out: list[str] = []
        if want <= 0:
            return out
        rnd = self.rt.random
        tries = 0
        bits = self._bits if rnd is self._rng else bits_of(rnd)
        if bits is not None:
            # randbelow_of's draw inlined, for one bound: getrandbits(k) until below ``total``;
            # and SortedIds' indexing, on its list and hidden entry
            k = total.bit_length()
            items, skip = live._items, live._skip
            while len(out) < want and tries < 4 * count + 8:
                tries += 1
                i = bits(k)
                while i >= total:
                    i = bits(k)
                if i < nlive:
                    nid = items[i] if skip < 0 or i < skip else items[i + 1]
                else:
                    nid = recent[i - nlive]
                if nid not in out:
                    out.append(nid)
            return out
        below = rnd.randrange
        while len(out) < want and tries < 4 * count + 8:
            tries += 1
            i = below(total)
            nid = live[i] if i < nlive else recent[i - nlive]
            if nid not in out:
                out.append(nid)
        return out

    def _gossip_wake(self) -> None:
        """Something is being queued: set the next round if the rounds sleep. It fires when the
        ticker would next have fired (after now: a round due at this very instant is taken to
        have run, with nothing queued yet)."""
        due = self._gossip_due
        if due is None:
            return
        self._gossip_due = None
        if not self.running:
            return
        now, interval = self.rt.now(), self.config.gossip_interval
        while due <= now:
            due += interval  # as call_later(interval) sums it round after round
        self._timers["gossip"] = self.rt.call_at(due, self._gossip_tick)

    def _gossip_tick(self) -> None:
        if not self.running:
            return
        interval = self.config.gossip_interval
        queue = self.broadcasts
        queued = queue.queued
        if not queued and self.sleep_when_idle:
            self._gossip_due = self.rt.now() + interval
            self._timers.pop("gossip", None)  # the spent handle of this round
            return
        self._timers["gossip"] = self.rt.call_later(interval, self._gossip_tick)
        if not queued:
            return
        # what _piggyback does per message, once per round: sending changes no view
        per, limit, take, send = self.config.max_piggyback, self._retransmit_limit(), queue.take, self._send
        for nid in self._gossip_targets(self.config.gossip_nodes):
            if not queued:
                break
            send(nid, _gossip(tuple(take(per, limit))))


__all__ = ["Dissemination", "bits_of", "randbelow_of"]
