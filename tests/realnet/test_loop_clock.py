"""realnet.runtime.loop_clock: the loop's own clock, read without a Python method on asyncio's
loop; the runtime, the transport and the API read it."""

from __future__ import annotations

import asyncio
import time

import pytest

from realnet.runtime import AsyncioRuntime, loop_clock


def test_asyncio_loop_reads_time_monotonic_itself_and_agrees_with_loop_time() -> None:
    loop = asyncio.new_event_loop()
    try:
        clock = loop_clock(loop)
        assert clock is time.monotonic
        before = loop.time()
        assert before <= clock() <= loop.time()
    finally:
        loop.close()


def test_a_loop_with_its_own_time_is_read_through_it() -> None:
    class Skewed(asyncio.SelectorEventLoop):
        def time(self) -> float:
            return 1000.0 + super().time()

    loop = Skewed()
    try:
        clock = loop_clock(loop)
        assert clock is not time.monotonic and clock() >= 1000.0
        assert AsyncioRuntime("a", loop=loop).now() >= 1000.0  # the runtime reads it too
    finally:
        loop.close()


def test_uvloop_is_read_through_its_own_time() -> None:
    uvloop = pytest.importorskip("uvloop")
    loop = uvloop.new_event_loop()
    try:
        assert loop_clock(loop) == loop.time
    finally:
        loop.close()
