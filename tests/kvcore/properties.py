"""What the property tests (``test_properties_*.py``) share: their hypothesis settings, and the
owner of every slot once a plan's moves are made.

The settings are derandomized and bounded so CI is deterministic and quick;
``STORELAB_PROPERTY_EXAMPLES=N`` runs N random examples per test instead, for a deeper search.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from hypothesis import settings

from kvcore.rebalance import NO_OWNER, Move
from kvcore.slots import Range, ranges_to_slots

_DEEP = int(os.environ.get("STORELAB_PROPERTY_EXAMPLES", "0"))


def property_settings(examples: int) -> settings:
    """``examples`` derandomized examples, or the deeper random search asked for."""
    return settings(max_examples=_DEEP or examples, deadline=None, derandomize=not _DEEP, database=None)


def owners_after(assignment: Mapping[str, list[Range]], moves: list[Move]) -> dict[int, str]:
    """Slot -> owner once every move is made (a move's slots then name its target); each move's
    slots must name its source when it is made."""
    own = {s: n for n, r in assignment.items() for s in ranges_to_slots(r)}
    for m in moves:
        for s in ranges_to_slots(m.slots):
            assert own.get(s, NO_OWNER) == m.source, f"{m} gives slot {s}, owned by {own.get(s)}"
            own[s] = m.target
    return own
