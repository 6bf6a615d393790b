"""AsyncioRuntime's bucketed timers (delays of COARSE_FROM seconds or more): they fire, never
early, in order of their buckets, and cancelled ones do not fire."""

from __future__ import annotations

import asyncio
import functools

from realnet.runtime import COARSE_FROM, TICK, AsyncioRuntime


def test_long_timers_fire_not_early_and_cancelled_ones_never() -> None:
    async def body() -> list[tuple[str, float]]:
        rt = AsyncioRuntime("n1")
        start = rt.now()
        fired: list[tuple[str, float]] = []
        done = asyncio.get_running_loop().create_future()

        def note(name: str) -> None:
            fired.append((name, rt.now() - start))
            if name == "last":
                done.set_result(None)

        def boom() -> None:
            raise RuntimeError("boom")

        rt.call_later(COARSE_FROM, lambda: note("first"))
        rt.call_later(COARSE_FROM, boom)  # the same bucket: the others still fire
        gone = rt.call_later(COARSE_FROM, lambda: note("cancelled"))
        rt.call_later(COARSE_FROM + 3 * TICK, lambda: note("last"))
        gone.cancel()
        assert gone.cancelled()
        await asyncio.wait_for(done, 10.0)
        assert rt.timer_errors == 1
        return fired

    fired = asyncio.run(body())
    assert [name for name, _ in fired] == ["first", "last"]
    assert fired[0][1] >= COARSE_FROM
    assert fired[1][1] >= COARSE_FROM + 3 * TICK


def test_short_timers_are_asyncio_timers() -> None:
    async def body() -> None:
        rt = AsyncioRuntime("n1")
        handle = rt.call_later(COARSE_FROM / 2, lambda: None)
        assert isinstance(handle, asyncio.TimerHandle)
        handle.cancel()

    asyncio.run(body())


def test_call_at_fires_not_early_short_or_long_and_a_past_time_at_once() -> None:
    async def body() -> list[tuple[str, float]]:
        rt = AsyncioRuntime("n1")
        start = rt.now()
        out: list[tuple[str, float]] = []
        three = asyncio.get_running_loop().create_future()

        def fire(name: str) -> None:
            out.append((name, rt.now() - start))
            if len(out) == 3:
                three.set_result(None)

        for name, when in (("long", COARSE_FROM + TICK), ("short", COARSE_FROM / 4), ("past", -5.0)):
            rt.call_at(start + when, functools.partial(fire, name))
        await asyncio.wait_for(three, 10.0)
        return out

    fired = asyncio.run(body())
    assert [name for name, _ in fired] == ["past", "short", "long"]
    slack = 1e-6  # asyncio runs a timer up to its clock's resolution early
    assert fired[1][1] >= COARSE_FROM / 4 - slack and fired[2][1] >= COARSE_FROM + TICK - slack


def test_cancelling_a_long_timer_runs_no_python_and_a_fired_one_reads_cancelled() -> None:
    """Every forwarded reply cancels its forward's timer: that is ``list.clear`` itself (no
    Python frame). A timer that fired reads as cancelled, as before; cancelling it then, or
    twice, does nothing."""
    import sys

    async def body() -> None:
        rt = AsyncioRuntime("n1")
        fired = asyncio.get_running_loop().create_future()
        timer = rt.call_later(COARSE_FROM, lambda: fired.set_result(None))
        other = rt.call_later(COARSE_FROM, lambda: None)
        calls: list[str] = []

        def profile(frame: object, event: str, arg: object) -> None:
            if event == "call":
                calls.append(event)

        sys.setprofile(profile)
        try:
            other.cancel()
        finally:
            sys.setprofile(None)
        assert calls == [] and other.cancelled() and not timer.cancelled()
        other.cancel()
        await asyncio.wait_for(fired, 10.0)
        assert timer.cancelled()
        timer.cancel()
        assert timer.cancelled()

    asyncio.run(body())
