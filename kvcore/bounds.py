"""Bounds on the numbers nodes exchange: what fits on the wire, and the margin kept below it.

Theory of operation
-------------------
Every integer on the cluster bus is range-checked at decode (:mod:`kvcore.codec`): slots are
0..16383, everything else 0..``INT64_MAX`` (2^63-1), the int64 of msgpack and of most other
languages. A node must never *produce* a number it cannot send, and it increments two numbers
past what peers tell it: a SWIM incarnation (a refutation jumps past the incarnation a rumour
names) and a slot claim's config epoch (a claim goes above every epoch the node knows). So the
rules that take such numbers from peers or operators accept them only up to
``MAX_ACCEPTED`` = ``INT64_MAX - MARGIN`` and ignore (and count) a rumour above it; the node's
own increments then always fit, since no accepted value is within ``MARGIN`` of the cap. The
margin (2^32) is far more than the increments a cluster makes in its life.

This is issue 10's finding: ``Dead{incarnation: 2**64-1}`` made a node unable to refute (its
refutation, 2^64, could not be encoded), so its peers held it dead for good. Now the Dead is
refused at decode (over the wire cap); a Dead at 2^63-1 decodes but is ignored (over
``MAX_ACCEPTED``), and one at ``MAX_ACCEPTED`` is refuted at ``MAX_ACCEPTED + 1``, which fits.
"""

from __future__ import annotations

#: the largest integer on the wire (int64)
INT64_MAX = 2**63 - 1
#: how far below the wire's cap accepted incarnations and epochs stay, so that a node's own
#: increments (refutations, new claims) always fit
MARGIN = 2**32
#: the largest incarnation or config epoch a node takes from a peer or an operator
MAX_ACCEPTED = INT64_MAX - MARGIN


def acceptable(n: int) -> bool:
    """Whether an incarnation or epoch taken from outside leaves room for the node's increments."""
    return 0 <= n <= MAX_ACCEPTED


def epoch_problem(epoch: object) -> str | None:
    """Why ``epoch`` cannot be a config epoch an operator asks for (a sentence), or None."""
    if type(epoch) is not int:
        return f"an epoch is an integer, not {type(epoch).__name__}"
    if not 0 <= epoch <= MAX_ACCEPTED:
        return f"epoch {epoch} is out of range: epochs are 0..{MAX_ACCEPTED} (kvcore.bounds)"
    return None


__all__ = ["INT64_MAX", "MARGIN", "MAX_ACCEPTED", "acceptable", "epoch_problem"]
