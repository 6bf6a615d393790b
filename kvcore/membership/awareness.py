"""Lifeguard's local health awareness: a node that is itself slow stops accusing healthy peers.

Theory of operation
-------------------
Lifeguard (Dadgar, Phillips and Currey, 2018, §IV-A "Local Health Aware Probe"; memberlist
``awareness.go``) keeps a *health score* in ``[0, max)``. It goes up when the node has reason to
think the problem is its own (a probe failed and the helpers' Nacks did not come back either; it
had to refute a suspicion of itself) and down with each probe that succeeds. Probe interval and
probe timeout are multiplied by ``score + 1`` (:meth:`Awareness.scale`): a node that misses
packets probes less often and waits longer, instead of flooding the cluster with suspicions of
members that are fine. The protocol decides the deltas (``kvcore.membership.probe``); this
module only clamps and scales.
"""

from __future__ import annotations


class Awareness:
    """Lifeguard local health: a score in [0, max) that scales timeouts by (score + 1)."""

    __slots__ = ("max", "score")

    def __init__(self, max_multiplier: int) -> None:
        #: AwarenessMaxMultiplier: the score never reaches it
        self.max = max_multiplier
        self.score = 0

    def apply(self, delta: int) -> None:
        """Move the score by ``delta``, clamped to ``[0, max - 1]`` (memberlist ApplyDelta)."""
        self.score = min(self.max - 1, max(0, self.score + delta))

    def scale(self, t: float) -> float:
        """``t * (score + 1)`` (memberlist ScaleTimeout)."""
        return t * (self.score + 1)


__all__ = ["Awareness"]
