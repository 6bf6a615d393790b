"""The arithmetic of SWIM + Lifeguard, as pure functions with table tests.

Theory of operation
-------------------
Every number the protocol derives from its configuration and the cluster's size is computed
here, apart from the timers that use it, as memberlist does (``util.go``, ``suspicion.go``,
``state.go``), so each can be checked against a table in ``tests/kvcore/test_membership.py``:

* :func:`suspicion_timeout`: how long a suspicion lasts at least (SWIM §4.2's suspicion
  timeout, scaled with ``log10(N+1)`` as memberlist does);
* :func:`retransmit_limit`: how many times one update is piggybacked (SWIM §4.1: ``lambda log N``
  retransmissions reach every member with high probability);
* :func:`remaining_suspicion_time`: Lifeguard's dynamic suspicion (Dadgar et al. 2018, §IV-B):
  the timeout falls from a maximum to the minimum as independent confirmations arrive;
* :func:`push_pull_scale`: memberlist's stretch of the anti-entropy interval for large clusters;
* :func:`overrides`: SWIM §4.2's merge rules (which update replaces what we hold; the table is
  in :mod:`kvcore.membership`'s docstring).

N is the number of live members, self included (``Membership.num_live``).
"""

from __future__ import annotations

import math

from kvcore.membership.member import ALIVE, DEAD, LEFT, SUSPECT


def suspicion_timeout(suspicion_mult: int, n: int, interval: float) -> float:
    """Minimum suspicion timeout: ``suspicion_mult * max(1, log10(n+1)) * interval``.

    memberlist ``util.go`` (suspicionTimeout), with the log taken of N+1 as its config documents.
    The floor of 1 keeps small clusters from suspecting for less than ``suspicion_mult`` probe
    intervals.
    """
    node_scale = max(1.0, math.log10(max(1, n) + 1))
    return suspicion_mult * node_scale * interval


def retransmit_limit(retransmit_mult: int, n: int) -> int:
    """How many times one update is sent: ``retransmit_mult * ceil(log10(n+1))``.

    memberlist ``util.go`` (retransmitLimit); SWIM §4.1 shows ``lambda log N`` piggybacked copies
    reach every member with high probability.
    """
    return retransmit_mult * math.ceil(math.log10(n + 1))


def remaining_suspicion_time(confirmations: int, k: int, elapsed: float, min_t: float, max_t: float) -> float:
    """Lifeguard's dynamic suspicion timeout, minus the time already elapsed.

    With ``k`` expected confirmations, the timeout falls from ``max_t`` towards ``min_t`` as
    ``log(c+1)/log(k+1)`` of the way (memberlist ``suspicion.go``, remainingSuspicionTime;
    Lifeguard §IV-B); it is never below ``min_t``, and is truncated to whole milliseconds as
    memberlist's ``time.Duration`` arithmetic does. With ``k == 0`` there is nothing to wait
    for: ``min_t``.
    """
    if k < 1:
        return min_t - elapsed
    frac = math.log(confirmations + 1.0) / math.log(k + 1.0)
    raw = max_t - frac * (max_t - min_t)
    timeout = max(min_t, math.floor(1000.0 * raw) / 1000.0)
    return timeout - elapsed


def push_pull_scale(interval: float, n: int) -> float:
    """memberlist's pushPullScale (``util.go``): above 32 members, stretch the interval by
    ``ceil(log2(n) - log2(32)) + 1`` so full-state traffic grows slowly with the cluster."""
    threshold = 32
    if n <= threshold:
        return interval
    multiplier = math.ceil(math.log2(n) - math.log2(threshold)) + 1.0
    return interval * multiplier


def overrides(held_state: str, held_inc: int, update: str, inc: int) -> bool:
    """Does an update (``alive``, ``suspect``, ``dead``) at ``inc`` replace what we hold?

    The merge rules of SWIM §4.2 as memberlist applies them (``state.go``: aliveNode,
    suspectNode, deadNode; the table is in :mod:`kvcore.membership`'s docstring): a higher
    incarnation wins, suspect beats alive at equal incarnation, dead beats both, and only an
    Alive brings back a dead or left member. ``ValueError`` for any other update.
    """
    if update == ALIVE:
        return inc > held_inc
    if held_state in (DEAD, LEFT):
        return False
    if update == SUSPECT:
        return inc >= held_inc if held_state == ALIVE else inc > held_inc
    if update == DEAD:
        return inc >= held_inc
    raise ValueError(f"unknown update {update!r}")


__all__ = [
    "overrides",
    "push_pull_scale",
    "remaining_suspicion_time",
    "retransmit_limit",
    "suspicion_timeout",
]
