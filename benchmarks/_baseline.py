"""The raw SimPy baseline the simulator benchmarks measure themselves against, in the same run.

SimPy doing the least a simulated message or timer can cost: a ``Timeout`` event with one
callback, whose callback schedules the next timeout, with ``pending`` of them in the queue at any
time (so the heap is as deep as the simulation's). Rated per second of CPU time, which on a shared
machine is far steadier than wall time.
"""

from __future__ import annotations

import time

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
