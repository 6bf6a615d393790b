"""The hostile-input suite (issue 10), small: hypothesis-generated hostile HTTP requests against
both request parsers directly and against a live node — no crash, no 500, bounded memory, the
node still serving. ``python -m tests.realnet.hostile_http`` runs 10^5 per target."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from realnet.httpparse import PARSERS
from tests.realnet.hostile_http import LiveTarget, check_live, check_parser, raw_requests

PARSER_EXAMPLES = 1500  # per parser
LIVE_EXAMPLES = 600



def _settings(n: int) -> settings:
    return settings(max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck))


@pytest.mark.parametrize("name", list(PARSERS))
def test_both_parsers_take_hostile_requests_without_crashing(name: str) -> None:
    @_settings(PARSER_EXAMPLES)
    @given(raw_requests())
    def case(c: tuple[bytes, list[int]]) -> None:
        check_parser(name, *c)

    case()


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveTarget]:
    t = LiveTarget(tmp_path_factory.mktemp("hostile"))
    try:
        yield t
    finally:
        t.stop()


@pytest.mark.realnet
def test_a_live_node_takes_hostile_requests_without_500s_and_keeps_serving(target: LiveTarget) -> None:
    rss0 = target.rss_mb()

    @_settings(LIVE_EXAMPLES)
    @given(raw_requests(target.token))
    def case(c: tuple[bytes, list[int]]) -> None:
        check_live(target, *c)

    case()
    assert target.alive()
    assert target.handler_errors() == 0
    assert target.rss_mb() < rss0 + 100, (rss0, target.rss_mb())
    log = Path(target.log).read_text(errors="replace")
    assert "Traceback" not in log
    assert len(log.splitlines()) < 200
