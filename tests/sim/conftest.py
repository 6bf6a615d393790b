from __future__ import annotations

import pytest

SEEDS = [1, 2, 3, 4, 5]


@pytest.fixture(params=SEEDS, ids=lambda s: f"seed{s}")
def seed(request: pytest.FixtureRequest) -> int:
    return int(request.param)
