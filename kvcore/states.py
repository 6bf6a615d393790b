"""Named member states and membership events, used everywhere a state or an event is spoken of.

Theory of operation
-------------------
SWIM (and memberlist) know four member states: *alive*, *suspect* (an unanswered probe, being
confirmed), *dead* (declared failed) and *left* (gone on purpose). :class:`State` names them.
The membership layer tells its listeners what happened to a member with a :class:`MemberEvent`:
a member joined our view, changed something (incarnation, addresses, slot claim), we refuted a
rumour about ourselves, a member moved to one of the four states, or a long-dead member was
reaped (forgotten).

Both are :class:`enum.StrEnum`, so each member *is* its lower-case string: JSON views, traces
and Prometheus labels keep the exact text they always had (``"alive"``), a comparison with a
plain string still holds, and ``sorted()`` orders them as strings. Code in kvcore, sim and
realnet names them through these classes rather than spelling the strings.
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    """A member's state as one node's membership holds it (SWIM §4.2, memberlist's four)."""

    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"

    @property
    def up(self) -> bool:
        """Alive or suspect: a suspect member is still sent requests (suspicion is not failure)."""
        return self is State.ALIVE or self is State.SUSPECT


class MemberEvent(StrEnum):
    """What a membership listener is told, with the member it concerns."""

    JOIN = "join"
    UPDATE = "update"
    REFUTE = "refute"
    REAP = "reap"
    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"


#: every state, in the order views and counters list them
STATES: tuple[State, ...] = (State.ALIVE, State.SUSPECT, State.DEAD, State.LEFT)

__all__ = ["STATES", "MemberEvent", "State"]
