"""Sweeps on a Dask cluster give what the process pool gives, and survive a lost worker.

One LocalCluster of two worker processes (one thread each) serves the whole module; the tests
run in one xdist group so that it starts once. Without Dask installed (it comes with the
``test`` extra) the module is skipped, except the test of the sentence ``--dask`` prints then.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sim import sweepcli, sweepdask
from sim.sweep import RunConfig, run_seed, sweep

pytestmark = pytest.mark.xdist_group("dask")

ROOT = Path(__file__).resolve().parents[2]
#: memory-only nodes under crashes: seeds 2, 3, 5 and 6 of 1-8 are violations, the rest not
LOSSY = RunConfig(ops=120, duration=8.0, nemesis="partition,crash", durable=False)
#: about a second of CPU per seed: long enough to kill a worker in the middle of one
SLOW = RunConfig(ops=400, duration=300.0, nodes=10)
FLAGS = ["--seeds", "6", "--nemesis", "partition,crash", "--no-durable", "--ops", "80", "--duration", "5",
         "--no-progress", "--json"]


def _deadline_poll(what: str, fn: Any, timeout: float = 60.0) -> Any:
    """Call ``fn`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = fn()
        if got:
            return got
        time.sleep(0.02)
    pytest.fail(f"timed out waiting for {what}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster, distributed.Client(cluster) as c:
        c.wait_for_workers(2, timeout=60)
        yield c


def test_a_dask_sweep_gives_the_same_results_and_files_as_the_process_pool(client: Any, tmp_path: Path) -> None:
    seeds = list(range(1, 9))
    pool = sweep(seeds, LOSSY, processes=2, progress=False, out=tmp_path / "pool")
    dask = sweep(seeds, LOSSY, client=client, progress=False, out=tmp_path / "dask")
    assert pool.violations, "the comparison covers violations, with their witnesses"
    assert dask.results == pool.results  # verdicts, digests, counts, faults, witnesses (timings aside)
    assert [r.report() for r in dask.results] == [r.report() for r in pool.results]
    assert dask.dask == client.scheduler.address and dask.processes == 2
    assert dask.summary().split("\nchecker:")[0] == pool.summary().split("\nchecker:")[0]
    # the files are written here, from what the tasks sent back, and are the same
    names = sorted(p.name for p in (tmp_path / "pool").iterdir())
    assert sorted(p.name for p in (tmp_path / "dask").iterdir()) == names
    assert {f"seed-{s}.html" for s in pool.violations} <= set(names)
    for name in names:
        if name != "report.json" and name != "summary.txt":
            assert (tmp_path / "dask" / name).read_text() == (tmp_path / "pool" / name).read_text(), name
    reports = [json.loads((tmp_path / d / "report.json").read_text()) for d in ("pool", "dask")]
    assert reports[0]["seeds"] == reports[1]["seeds"]


def test_results_stream_back_with_a_bounded_window_of_tasks_in_flight(client: Any,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sweepdask, "MIN_WINDOW", 2)
    monkeypatch.setattr(sweepdask, "PER_THREAD", 1)
    seeds = list(range(1, 7))
    cfg = RunConfig(ops=60, duration=4.0)
    submitted: list[int] = []

    class Counting:  # the client, counting the tasks submitted to it
        def __getattr__(self, name: str) -> Any:
            return getattr(client, name)

        def submit(self, *args: Any, **kwargs: Any) -> Any:
            submitted.extend(args[1])
            return client.submit(*args, **kwargs)

    seen, submitted_then = [], []
    for output in sweepdask.dask_outputs(Counting(), seeds, cfg):
        seen.append(output.result.seed)
        submitted_then.append(len(submitted))
    # each result came back while the later seeds were not yet submitted: streamed as they finish
    assert sorted(seen) == seeds and sorted(submitted) == seeds
    assert submitted_then == [2, 3, 4, 5, 6, 6], "two tasks in flight, one more per result"


def _seeds_of(key: str) -> range:
    _, _, first, n, _ = key.split("-")  # storelab-seeds-FIRST-COUNT-TOKEN
    return range(int(first), int(first) + int(n))


def test_long_sweeps_run_chunks_of_seeds_per_task_with_the_same_results(client: Any) -> None:
    assert sweepdask.chunk_size(8, 2) == 1
    assert sweepdask.chunk_size(50, 2) == 1
    assert sweepdask.chunk_size(100_000, 64) == sweepdask.MAX_CHUNK
    assert sweepdask.chunk_size(100_000, 0) == sweepdask.MAX_CHUNK, "no workers yet: chunks anyway"
    assert sweepdask.chunk_size(4_000, 20) == 10
    seeds, cfg = list(range(1, 8)), RunConfig(ops=60, duration=4.0)
    chunked = {o.result.seed: o.result for o in sweepdask.dask_outputs(client, seeds, cfg, chunk=3)}
    single = {o.result.seed: o.result for o in sweepdask.dask_outputs(client, seeds, cfg, chunk=1)}
    assert sorted(chunked) == seeds and chunked == single


def _executing(dask_worker: Any) -> list[str]:
    return [str(ts.key) for ts in dask_worker.state.executing]


def test_a_worker_killed_mid_sweep_loses_no_seed(client: Any) -> None:
    seeds = list(range(1, 7))
    pids = client.run(os.getpid)
    box: list[Any] = []
    runner = threading.Thread(target=lambda: box.append(sweep(seeds, SLOW, client=client, progress=False)))
    runner.start()
    try:
        # wait until a worker is in the middle of a seed, then kill that worker's process
        busy = _deadline_poll("a worker running a seed",
                              lambda: {a: keys for a, keys in client.run(_executing).items() if keys})
        victim, keys = next(iter(busy.items()))
        os.kill(pids[victim], signal.SIGKILL)
        lost = [s for k in keys for s in _seeds_of(k)]
        _deadline_poll("the killed worker to leave the scheduler",
                       lambda: victim not in client.scheduler_info()["workers"])
    finally:
        runner.join(timeout=240)
    assert not runner.is_alive() and box, "the sweep finished"
    res = box[0]
    assert [r.seed for r in res.results] == seeds
    assert all(r.verdict == "linearizable" for r in res.results), res.summary()
    # the seeds the dead worker was running were run again, with the same result
    for seed in lost:
        assert next(r for r in res.results if r.seed == seed) == run_seed(seed, SLOW)
    client.wait_for_workers(2, timeout=60)  # the nanny restarts the worker for the tests after


def test_the_cli_on_a_running_scheduler_prints_the_pool_s_table(client: Any, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    code_pool = sweepcli.main([*FLAGS, "--processes", "1"])
    pool = capsys.readouterr().out
    code = sweepcli.main([*FLAGS, "--dask", client.scheduler.address, "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == code_pool == 1
    assert out.split("\nchecker:")[0] == pool.split("\nchecker:")[0]
    assert json.loads(out.splitlines()[-1])["seeds"] == json.loads(pool.splitlines()[-1])["seeds"]
    assert sorted(p.name for p in tmp_path.glob("seed-*.jsonl")) == [f"seed-{s}.jsonl" for s in range(1, 7)]


def test_dask_local_through_the_cli_prints_the_same_table_and_exit_status() -> None:
    pytest.importorskip("distributed")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "sim", "check", *FLAGS, "--processes", "2", *extra],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)

    pool, dask = run(), run("--dask", "local")
    assert dask.returncode == pool.returncode == 1, dask.stdout + dask.stderr
    assert dask.stdout.split("\nchecker:")[0] == pool.stdout.split("\nchecker:")[0]
    assert "Dask worker thread(s) of tcp://127.0.0.1:" in dask.stdout
    last = json.loads(dask.stdout.splitlines()[-1])
    assert last["seeds"] == json.loads(pool.stdout.splitlines()[-1])["seeds"]
    assert last["processes"] == 2 and last["dask"].startswith("tcp://")


def test_dask_without_dask_installed_is_a_sentence_and_status_2(monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed raises ImportError
    with pytest.raises(SystemExit) as e:
        sweepcli.main([*FLAGS, "--dask", "local"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--dask needs Dask's distributed scheduler" in err and "pip install -e '.[dask]'" in err
    assert "Traceback" not in err


def test_a_scheduler_that_is_not_there_and_processes_with_an_address_are_usage_errors(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("distributed")
    monkeypatch.setattr(sweepdask, "CONNECT_TIMEOUT", 1.0)
    with pytest.raises(SystemExit) as e:
        sweepcli.main([*FLAGS, "--dask", f"tcp://127.0.0.1:{_free_port()}"])
    assert e.value.code == 2
    assert "cannot reach a Dask scheduler at" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        sweepcli.main([*FLAGS, "--dask", "tcp://127.0.0.1:1", "--processes", "2"])
    assert e.value.code == 2
    assert "--processes is for the local pool" in capsys.readouterr().err


def _task_that_cannot_run(*args: Any) -> Any:
    raise RuntimeError("this worker cannot run storelab")


def test_a_task_the_cluster_cannot_run_stops_the_sweep_with_a_sentence_and_status_3(
        client: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sweepdask, "seeds_task", _task_that_cannot_run)
    code = sweepcli.main([*FLAGS, "--dask", client.scheduler.address])
    err = capsys.readouterr().err
    assert code == 3
    assert "failed on the Dask cluster: RuntimeError: this worker cannot run storelab" in err, err
    assert "same storelab" in err and "Traceback" not in err
