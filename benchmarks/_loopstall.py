"""The longest stall of a running asyncio loop, as a client of it would see it.

``async with LoopStall(on_tick) as stall:`` runs a ticker that sleeps 1 ms at a time; after
:meth:`LoopStall.reset`, :attr:`LoopStall.longest` is the longest gap between two of its
wake-ups, in seconds (time.perf_counter). ``on_tick`` runs at each wake-up (a writer that goes
on meanwhile). Shared by ``snapshot_pause.py`` and ``storage_compaction.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


class LoopStall:
    def __init__(self, on_tick: Callable[[], None] | None = None) -> None:
        self.on_tick = on_tick
        self.longest = 0.0
        self._last = time.perf_counter()
        self._stop = False
        self._task: asyncio.Future[None] | None = None

    def reset(self) -> None:
        self.longest, self._last = 0.0, time.perf_counter()

    async def _tick(self) -> None:
        while not self._stop:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            self.longest, self._last = max(self.longest, now - self._last), now
            if self.on_tick is not None:
                self.on_tick()

    async def __aenter__(self) -> LoopStall:
        self.reset()
        self._task = asyncio.ensure_future(self._tick())
        await asyncio.sleep(0.01)  # the ticker runs: the warm-up is not counted
        self.reset()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self._stop = True
        if self._task is not None:
            await self._task
