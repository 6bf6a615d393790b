"""The ``world`` fixture: each conformance scenario runs once per world (``sim``, ``realnet``).

Use it indirectly: ``@pytest.mark.parametrize("world", WORLDS, indirect=True)`` with
:data:`tests.conformance.worlds.WORLDS`, whose realnet arm carries the ``realnet`` mark, so
``-m "not realnet"`` keeps only the sim arms.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conformance.worlds import RealWorld, SimWorld, World


@pytest.fixture
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    w: World = SimWorld() if request.param == "sim" else RealWorld(tmp_path)
    try:
        yield w
    finally:
        w.close()
