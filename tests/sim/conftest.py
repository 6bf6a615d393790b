from __future__ import annotations

import pytest

from kvcore.membership.gossip import Dissemination

SEEDS = [1, 2, 3, 4, 5]


@pytest.fixture(params=SEEDS, ids=lambda s: f"seed{s}")
def seed(request: pytest.FixtureRequest) -> int:
    return int(request.param)


@pytest.fixture
def ticking_rounds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Gossip rounds that tick every ``gossip_interval`` even with nothing queued, as every round
    did before they slept (``tests/sim/test_idle_gossip.py``): for digests pinned before that."""
    monkeypatch.setattr(Dissemination, "sleep_when_idle", False)
