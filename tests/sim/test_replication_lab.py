"""The replication lab (sim.replication_lab): what it counts, and the comparison it exists for.

The counting functions are pure and tested on hand-made histories; the runs are small, and pin
the notebook's claims: R = 3 loses no acknowledged write under crashes of a follower, of the
leader and of everyone; memory-only R = 1 under the same crashes does, and the checker agrees.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from sim.clients import FAIL, OK, UNKNOWN, Operation
from sim.replication_lab import LabConfig, Step, availability, lost_writes, percentiles, run_lab


def op(f: str, invoke: float, complete: float | None, outcome: str = OK, value: str | None = None,
       result: str | None = None, key: str = "k0") -> Operation:
    rec = Operation(0, f, key, value, "n1", invoke, complete, outcome)
    rec.result = result
    return rec


def put(invoke: float, complete: float | None, value: str, outcome: str = OK, key: str = "k0") -> Operation:
    return op("put", invoke, complete, outcome, value=value, key=key)


def get(invoke: float, complete: float, result: str | None, outcome: str = OK, key: str = "k0") -> Operation:
    return op("get", invoke, complete, outcome, result=result, key=key)


# --- lost_writes -------------------------------------------------------------------------------


def test_a_read_of_the_empty_start_after_an_acknowledged_put_loses_it() -> None:
    w = put(0.0, 1.0, "a")
    assert lost_writes([w, get(2.0, 2.1, None)]) == [w]


def test_a_read_of_an_older_value_loses_every_acknowledged_write_after_that_value() -> None:
    a, b, c = put(0.0, 1.0, "a"), put(2.0, 3.0, "b"), put(4.0, 5.0, "c")
    assert lost_writes([a, b, c, get(6.0, 6.1, "a")]) == [b, c]


def test_the_latest_value_read_loses_nothing() -> None:
    ops = [put(0.0, 1.0, "a"), put(2.0, 3.0, "b"), get(4.0, 4.1, "b")]
    assert lost_writes(ops) == []


def test_a_value_written_concurrently_with_the_write_does_not_prove_it_lost() -> None:
    # a and b overlap: either may be linearized last, so reading a says nothing about b
    ops = [put(0.0, 2.0, "a"), put(1.0, 3.0, "b"), get(4.0, 4.1, "a")]
    assert lost_writes(ops) == []


def test_a_read_that_began_before_the_write_was_answered_proves_nothing() -> None:
    ops = [put(0.0, 2.0, "a"), get(1.0, 3.0, None)]
    assert lost_writes(ops) == []


def test_a_delete_of_unknown_outcome_explains_an_absent_key_at_any_time() -> None:
    ops = [put(0.0, 1.0, "a"), op("delete", 0.5, 10.0, UNKNOWN), get(20.0, 20.1, None)]
    assert lost_writes(ops) == []


def test_an_acknowledged_delete_is_lost_when_the_deleted_value_comes_back() -> None:
    d = op("delete", 2.0, 3.0)
    assert lost_writes([put(0.0, 1.0, "a"), d, get(4.0, 4.1, "a")]) == [d]


def test_a_failed_write_is_never_lost_and_never_explains_a_value() -> None:
    a, b = put(0.0, 1.0, "a"), put(2.0, 3.0, "b", outcome=FAIL)
    assert lost_writes([a, b, get(4.0, 4.1, "a")]) == []
    assert lost_writes([a, b, get(4.0, 4.1, None)]) == [a]


def test_keys_are_judged_apart_and_failed_reads_prove_nothing() -> None:
    a = put(0.0, 1.0, "a", key="x")
    ops = [a, put(0.0, 1.0, "b", key="y"), get(2.0, 2.1, "b", key="y"),
           get(2.0, 2.1, None, outcome=UNKNOWN, key="x")]
    assert lost_writes(ops) == []
    assert lost_writes([*ops, get(3.0, 3.1, None, key="x")]) == [a]


# --- availability and percentiles ----------------------------------------------------------


def test_availability_bins_count_ok_by_invocation_and_by_completion() -> None:
    ops = [put(0.1, 0.2, "a"), put(0.3, 1.4, "b", outcome=UNKNOWN), get(0.4, 0.6, "a"), get(1.1, 1.2, "a")]
    starts, frac, rate = availability(ops, 0.5, 0.0, 1.5)
    assert starts.tolist() == [0.0, 0.5, 1.0]
    assert frac[0] == pytest.approx(2 / 3) and math.isnan(frac[1]) and frac[2] == 1.0
    assert rate.tolist() == [2.0, 2.0, 2.0]  # ok completions per second: 0.2 | 0.6 | 1.2


def test_percentiles_are_in_milliseconds_and_nan_without_data() -> None:
    assert percentiles([0.001, 0.002, 0.003], (50,)) == [pytest.approx(2.0)]
    assert all(math.isnan(x) for x in percentiles([]))


# --- runs ------------------------------------------------------------------------------------

SCHEDULE = [Step(1.0, "follower", 1.0), Step(2.5, "leader", 1.0), Step(4.0, "all", 0.5)]
SMALL = {"ops": 500, "duration": 5.0, "keys": 8, "settle": 1.0}


def test_r3_loses_no_acknowledged_write_across_follower_leader_and_power_loss() -> None:
    run = run_lab(4, LabConfig(replicas=3, sync_time="const:0.002", **SMALL), SCHEDULE)
    assert [f.label.split()[0:2] for f in run.fired] == [["crash", "follower"], ["crash", "leader"],
                                                         ["power", "loss"]]
    assert run.fired[2].nodes == ("n1", "n2", "n3")
    assert run.fired[0].nodes != run.fired[1].nodes
    assert run.fired[0].time == pytest.approx(run.start + 1.0)
    assert run.cluster.sync_stats().lost_writes > 0, "the power loss dropped unsynced writes"
    assert run.unread() == []
    assert run.lost() == []
    assert run.check().verdict == "linearizable"
    assert sum(1 for o in run.ops if o.outcome == OK and o.f == "put") > 50


def test_memory_only_r1_under_the_same_crashes_loses_acknowledged_writes() -> None:
    r3 = run_lab(4, LabConfig(replicas=3, sync_time="const:0.002", **SMALL), SCHEDULE)
    steps = r3.resolved()
    assert [s.target for s in steps[:2]] == [r3.fired[0].nodes[0], r3.fired[1].nodes[0]]
    r1 = run_lab(4, LabConfig(**SMALL), steps)
    assert [f.nodes for f in r1.fired] == [f.nodes for f in r3.fired]
    lost = r1.lost()
    assert lost and all(o.outcome == OK and o.f in ("put", "delete") for o in lost)
    assert r1.check().verdict == "not_linearizable"
    # the price of replication: ok operations are slower through the log
    assert np.median(r3.latencies()) > np.median(r1.latencies())


def test_a_run_is_a_function_of_its_seed() -> None:
    cfg = LabConfig(replicas=3, sync_time="const:0.002", ops=200, duration=3.0, keys=4, settle=0.5)
    steps = [Step(1.0, "leader", 0.5)]
    a, b = run_lab(9, cfg, steps), run_lab(9, cfg, steps)
    assert a.cluster.digest() == b.cluster.digest()
    assert a.final == b.final


def test_a_role_or_an_unknown_node_is_refused_with_a_sentence() -> None:
    with pytest.raises(ValueError, match="no leader: name the node"):
        run_lab(1, LabConfig(ops=10, duration=1.0), [Step(0.5, "leader", 0.5)])
    with pytest.raises(ValueError, match="unknown node 'n9'"):
        run_lab(1, LabConfig(ops=10, duration=1.0), [Step(0.5, "n9", 0.5)])
    with pytest.raises(ValueError, match="down > 0"):
        run_lab(1, LabConfig(ops=10, duration=1.0), [Step(0.5, "n1", 0.0)])


def test_a_write_invoked_after_the_read_explains_nothing() -> None:
    w = put(0.0, 1.0, "a")
    late_delete = op("delete", 5.0, 6.0, UNKNOWN)  # began after the read: cannot be what it saw
    assert lost_writes([w, get(2.0, 2.1, None), late_delete]) == [w]


def test_a_value_no_write_made_proves_nothing() -> None:
    assert lost_writes([put(0.0, 1.0, "a"), get(2.0, 2.1, "zzz")]) == []
