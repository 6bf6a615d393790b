"""The trace digest: identifies a run, whatever the flush points, and any change shows."""

from __future__ import annotations

import pytest

from sim.trace import CHUNK, Trace


def fill(t: Trace, n: int, flush_every: int | None = None) -> None:
    for i in range(n):
        t.record((i * 0.001, "send", "n1", f"n{i % 7}", "SwimPing", i))
        if flush_every and i % flush_every == 0:
            t.maybe_flush()
            t.digest()  # asking for the digest midway changes nothing


@pytest.mark.parametrize("flush_every", [None, 1, 997, CHUNK])
def test_digest_does_not_depend_on_flush_points(flush_every: int | None) -> None:
    a, b = Trace(), Trace()
    fill(a, 3 * CHUNK + 123)
    fill(b, 3 * CHUNK + 123, flush_every)
    assert a.digest() == b.digest()
    assert len(a) == len(b) == 3 * CHUNK + 123


def test_any_difference_changes_the_digest() -> None:
    a, b = Trace(), Trace()
    fill(a, 5000)
    fill(b, 5000)
    b.record((1.0, "drop", "n1", "n2", "SwimPing", "loss"))
    assert a.digest() != b.digest()
    c = Trace()
    fill(c, 4999)
    c.record((4999 * 0.001 + 1e-12, "send", "n1", "n0", "SwimPing", 4999))  # one float differs
    assert c.digest() != a.digest()


def test_kept_events_come_back_in_order() -> None:
    t = Trace(keep=True)
    fill(t, CHUNK + 5)
    events = list(t)
    assert len(events) == CHUNK + 5 and events[0][5] == 0 and events[-1][5] == CHUNK + 4
    with pytest.raises(RuntimeError):
        list(iter(Trace()))
