"""Suspicion: how a suspected member becomes dead, with Lifeguard's dynamic timeout.

Theory of operation
-------------------
SWIM §4.2: a member that fails a probe is not declared dead at once but *suspected*; the
suspicion is gossiped, and if the member does not refute it (an Alive at a higher incarnation)
within the suspicion timeout, the suspecter declares it dead. Lifeguard §IV-B (memberlist
``suspicion.go``) makes the timeout dynamic: it starts at ``suspicion_max_timeout_mult`` times
the minimum (:func:`~kvcore.membership.formulas.suspicion_timeout`) and falls towards the
minimum as *independent* confirmations arrive (other members suspecting it too, at the same
incarnation), ``k = suspicion_mult - 2`` of them expected
(:func:`~kvcore.membership.formulas.remaining_suspicion_time`). The first suspecter is recorded
but is no confirmation, so it cannot confirm its own suspicion later.

:class:`Suspicions` is the part of :class:`~kvcore.membership.Membership` that runs one timer
per suspected member; the merge rules (``protocol``) start and clear suspicions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kvcore.membership.formulas import remaining_suspicion_time, suspicion_timeout
from kvcore.membership.member import SUSPECT, Member
from kvcore.membership.table import MemberTable
from kvcore.messages import Dead, Suspect
from kvcore.runtime import Runtime, TimerHandle

if TYPE_CHECKING:
    from kvcore.membership.broadcast import BroadcastQueue
    from kvcore.membership.config import SwimConfig


@dataclass
class _Suspicion:
    incarnation: int
    start: float
    #: confirmations expected (Lifeguard's k); 0 means the minimum timeout applies at once
    k: int
    min_t: float
    max_t: float
    #: the first suspecter and every confirmer (each counts once)
    confirmations: set[str] = field(default_factory=set)
    timer: TimerHandle | None = None


class Suspicions:
    """The suspicion timers of :class:`~kvcore.membership.Membership` (a mixin)."""

    if TYPE_CHECKING:
        rt: Runtime
        config: SwimConfig
        id: str
        running: bool
        members: MemberTable
        broadcasts: BroadcastQueue
        _suspicions: dict[str, _Suspicion]

        def num_live(self) -> int: ...
        def _count(self, name: str) -> None: ...
        def _on_dead(self, d: Dead) -> None: ...

    def _start_suspicion(self, m: Member, source: str) -> None:
        self._clear_suspicion(m.node)  # a suspicion at a lower incarnation, if any
        c = self.config
        n = self.num_live()
        min_t = suspicion_timeout(c.suspicion_mult, n, c.probe_interval)
        if c.lifeguard:
            k = c.suspicion_mult - 2
            if n - 2 < k:  # not enough members to expect that many confirmations
                k = 0
            max_t = c.suspicion_max_timeout_mult * min_t
        else:
            k, max_t = 0, min_t
        s = _Suspicion(m.incarnation, self.rt.now(), k, min_t, max_t)
        # the first suspecter, even when it is us, is in the set but is no confirmation
        # (memberlist newSuspicion), so it cannot confirm its own suspicion later
        s.confirmations.add(source)
        self._suspicions[m.node] = s
        self._arm_suspicion(m.node, s)

    def _arm_suspicion(self, node: str, s: _Suspicion) -> None:
        if s.timer is not None:
            s.timer.cancel()
        elapsed = self.rt.now() - s.start
        # the first suspecter does not count as a confirmation (memberlist: n starts at 0)
        confirmations = max(0, len(s.confirmations) - 1) if self.config.lifeguard else 0
        remaining = remaining_suspicion_time(confirmations, s.k, elapsed, s.min_t, s.max_t)
        s.timer = self.rt.call_later(max(0.0, remaining), lambda: self._suspicion_expired(node, s))

    def _confirm(self, node: str, source: str) -> None:
        s = self._suspicions.get(node)
        # our own failed probe of a member someone else suspects is a confirmation too, and is
        # gossiped on (memberlist suspectNode: "independent confirmations ... flow even when a
        # node probes a node that's already suspect")
        if s is None or not self.config.lifeguard or source in s.confirmations:
            return
        if len(s.confirmations) - 1 >= s.k:
            return
        s.confirmations.add(source)
        self._count("confirmations")
        m = self.members[node]
        self.broadcasts.queue(Suspect(node=node, incarnation=m.incarnation, source=source))
        self._arm_suspicion(node, s)

    def _suspicion_expired(self, node: str, s: _Suspicion) -> None:
        if not self.running or self._suspicions.get(node) is not s:
            return
        m = self.members.get(node)
        if m is None or m.state != SUSPECT or m.incarnation != s.incarnation:
            return
        self._count("declared_dead")
        self._on_dead(Dead(node=node, incarnation=m.incarnation, source=self.id))

    def _clear_suspicion(self, node: str) -> None:
        s = self._suspicions.pop(node, None)
        if s is not None and s.timer is not None:
            s.timer.cancel()


__all__ = ["Suspicions"]
