"""The raw SimPy baseline the simulator benchmarks measure themselves against, in the same run.

SimPy doing the least a simulated message or timer can cost: a ``Timeout`` event with one
callback, whose callback schedules the next timeout, with ``pending`` of them in the queue at any
time (so the heap is as deep as the simulation's). Rated per second of CPU time, which on a shared
machine is far steadier than wall time.

Also the few measures the scale benchmarks share: events SimPy took, peak RSS.
"""

from __future__ import annotations

import gc
import resource
import time
from typing import Any

import simpy


def raw_simpy(events: int, pending: int) -> float:
    """Raw SimPy events per CPU second."""
    env = simpy.Environment()
    count = 0

    def cb(_e: object) -> None:
        nonlocal count
        count += 1
        if count < events:
            env.timeout(0.001).callbacks.append(cb)  # type: ignore[union-attr]

    for i in range(pending):
        env.timeout(0.001 * (i % 7)).callbacks.append(cb)  # type: ignore[union-attr]
    c0 = time.process_time()
    env.run()
    return count / (time.process_time() - c0)


def peak_rss() -> int:
    """This process's peak resident set size so far, in bytes."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def event_mark(env: Any) -> tuple[int, int]:
    """Where SimPy's event counter and queue stand now, for :func:`events_since`."""
    return next(env._eid), len(env._queue)


def events_since(env: Any, mark: tuple[int, int]) -> int:
    """Events SimPy took since ``mark``: it numbers every scheduled event from one counter, so
    steps taken = scheduled - growth of the queue (the ``next`` here takes one number itself)."""
    eid0, q0 = mark
    return (next(env._eid) - eid0 - 1) - (len(env._queue) - q0)


def rate_and_baseline(steps: int, cpu: float, pending: int) -> tuple[float, float]:
    """A run's events per CPU second, and :func:`raw_simpy`'s with as many events (a million at
    least) over as deep a queue. Drop the run's objects first: the collector is unfrozen and run
    before the baseline, so it does not pay for them."""
    gc.unfreeze()
    gc.collect()
    base = raw_simpy(events=max(steps, 1_000_000), pending=max(1, pending))
    return (steps / cpu if cpu > 0 else 0.0), base
