"""Sweeps on a Dask cluster: ``python -m sim check --dask ADDRESS`` and ``sweep(..., client=)``.

Theory of operation
-------------------
A sweep's unit of work is :func:`sim.sweep.seed_task`: one seed, run and checked, a pure
function of its arguments (the seed and the :class:`~sim.sweep.RunConfig`; only the wall-clock
timings differ between two runs). That makes it a good Dask task. :func:`dask_outputs` submits
one task per seed (:func:`seeds_task`; a chunk of up to MAX_CHUNK seeds when the sweep is long,
see :func:`chunk_size`) with a key named after its seeds and a token of its arguments
(``storelab-seeds-17-1-<token>``: the same work has the same key, as for a ``pure`` task) and
``retries``; it keeps a window of tasks in flight (a few per worker thread, looked at again as
workers come and go) rather than the whole sweep, so that a 100,000-seed sweep does not sit in
the scheduler at once, and yields each :class:`~sim.sweep.SeedOutput` as its task finishes
(``as_completed``, results fetched in the background). The
caller, :func:`sim.sweep.collect`, is the same consumer as for the local process pool: it moves
the progress bar, writes each seed's files on this side from the texts the task sent back (a
remote worker need not share the disk), and puts the results in seed order.

A worker lost mid-sweep (killed, its machine gone) costs only the tasks it held: the scheduler
runs them again on another worker (a task whose runs keep killing workers ends as
``KilledWorker``, after ``distributed.scheduler.allowed-failures``); ``retries`` covers a task
that raised on the way (a run that raises inside the store is not such a failure: it comes back
as verdict ``error``). Since each seed's run is deterministic, a retried seed gives the same
result. A task that still fails stops the sweep with :class:`DaskSweepFailed`, one sentence.

:func:`dask_client` opens the client for the command line: ``local`` starts a
``LocalCluster`` of worker *processes* with one thread each (the simulation is CPU-bound
Python: threads would share one GIL), anything else is a scheduler's address. Dask is an
optional extra (``pip install -e '.[dask]'``); without it, :func:`require_distributed` raises
:class:`DaskUnavailable`, whose message is the sentence the command line prints.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import Any

from sim.sweep import RunConfig, SeedOutput, seed_task

#: how often a failing task is tried again (a lost worker's tasks are rescheduled regardless)
RETRIES = 2
#: tasks in flight per worker thread (at least MIN_WINDOW)
PER_THREAD = 4
MIN_WINDOW = 16
#: the most seeds one task runs (see chunk_size)
MAX_CHUNK = 50
#: seconds to reach a scheduler before giving up
CONNECT_TIMEOUT = 10.0

INSTALL_HINT = "pip install -e '.[dask]' (or pip install 'dask[distributed]')"


class DaskUnavailable(RuntimeError):
    """Dask's distributed scheduler cannot be imported, or its scheduler cannot be reached."""


class DaskSweepFailed(RuntimeError):
    """A seed's task failed on the cluster for a reason outside the run (after its retries)."""


def require_distributed() -> ModuleType:
    """``dask.distributed``, or :class:`DaskUnavailable` with a sentence saying how to get it."""
    try:
        import distributed
    except ImportError as e:
        raise DaskUnavailable(
            f"--dask needs Dask's distributed scheduler, which is not installed here ({e}); it is an "
            f"optional extra: {INSTALL_HINT}."
        ) from None
    return distributed


@contextmanager
def dask_client(address: str, workers: int | None = None) -> Iterator[Any]:
    """A ``Client`` of the scheduler at ``address``, or of a new LocalCluster for ``local``
    (``workers`` processes, default one per CPU, one thread each), closed on the way out."""
    distributed = require_distributed()
    if address == "local":
        n = workers or os.cpu_count() or 1
        with distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                      dashboard_address=":0") as cluster, distributed.Client(cluster) as client:
            yield client
        return
    if workers is not None:
        raise DaskUnavailable("--processes is for the local pool and --dask local; a Dask cluster "
                              "has the workers it was started with.")
    try:
        client = distributed.Client(address, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ValueError) as e:
        raise DaskUnavailable(f"cannot reach a Dask scheduler at {address!r} within "
                              f"{CONNECT_TIMEOUT:g} s ({e}); start one with 'dask scheduler' and give "
                              "its address, e.g. tcp://HOST:8786, or use --dask local.") from None
    with client:
        yield client


def worker_threads(client: Any) -> int:
    """The cluster's worker threads now (0 while no worker has joined)."""
    return int(sum(client.nthreads().values()))


def seeds_task(seeds: tuple[int, ...], config: RunConfig, node_class: type | None = None,
               keep_files: bool = False) -> list[SeedOutput]:
    """The Dask task: :func:`~sim.sweep.seed_task` for each of ``seeds`` (a chunk), in order."""
    return [seed_task(s, config, node_class, keep_files, keep_files) for s in seeds]


def chunk_size(seeds: int, threads: int) -> int:
    """Seeds per task: one, unless the sweep is long enough that one task per seed would keep
    the scheduler busier than the seeds (a default seed costs ~30 ms, a task ~1 ms of the
    scheduler's time): then up to MAX_CHUNK, leaving ~20 tasks per worker thread."""
    return max(1, min(MAX_CHUNK, seeds // (20 * max(threads, 1))))


def dask_outputs(client: Any, seeds: Sequence[int], config: RunConfig, node_class: type | None = None,
                 keep_files: bool = False, *, retries: int = RETRIES,
                 chunk: int | None = None) -> Iterator[SeedOutput]:
    """Run the seeds as tasks on ``client``'s cluster, ``chunk`` seeds a task (default
    :func:`chunk_size`); yield each seed's output as its task finishes."""
    distributed = require_distributed()
    from dask.base import tokenize

    token = tokenize(config, node_class.__module__ + "." + node_class.__qualname__ if node_class else None,
                     keep_files)
    threads = worker_threads(client)
    if not threads and seeds:
        print(f"waiting for workers: the Dask cluster at {client.scheduler.address} has none yet",
              file=sys.stderr)
    size = chunk or chunk_size(len(seeds), threads)
    chunks = iter([tuple(seeds[i:i + size]) for i in range(0, len(seeds), size)])

    def submit() -> Any | None:
        part = next(chunks, None)
        if part is None:
            return None
        return client.submit(seeds_task, part, config, node_class, keep_files, retries=retries,
                             key=f"storelab-seeds-{part[0]}-{len(part)}-{token}")

    window = max(MIN_WINDOW, PER_THREAD * threads)
    first = [f for f in (submit() for _ in range(window)) if f is not None]
    done = distributed.as_completed(first, with_results=True, raise_errors=False)
    in_flight, checked_at = len(first), time.monotonic()
    for fut, result in done:
        in_flight -= 1
        if fut.status != "finished":  # after the retries: the cluster could not run it
            exc = result[1] if isinstance(result, tuple) else result
            raise DaskSweepFailed(
                f"the task {fut.key} failed on the Dask cluster: {type(exc).__name__}: {exc}. "
                "Do the workers run the same storelab (pip install -e . on each, same commit)?"
            )
        fut.release()
        yield from result
        if time.monotonic() - checked_at > 2.0:  # workers come and go: size the window again
            checked_at = time.monotonic()
            window = max(MIN_WINDOW, PER_THREAD * worker_threads(client))
        while in_flight < window:
            nxt = submit()
            if nxt is None:
                break
            done.add(nxt)
            in_flight += 1
