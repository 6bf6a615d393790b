"""Hand-written histories with known answers: register, kv, cas-fail semantics, unknown and
failed operations, ties, the classic violations, per-key results, timeouts, witnesses."""

from __future__ import annotations

from typing import Any

import pytest

from checker import Op, check, events_to_ops


def op(
    process: int,
    f: str,
    call: float,
    ret: float | None,
    value: Any = None,
    output: Any = None,
    status: str = "ok",
    key: str | None = None,
) -> Op:
    if ret is None:
        status = "unknown"
    return Op(process, f, key, value, output, float(call), ret, status)  # type: ignore[arg-type]


def w(p: int, v: Any, call: float, ret: float | None, **kw: Any) -> Op:
    return op(p, "write", call, ret, value=v, **kw)


def r(p: int, out: Any, call: float, ret: float | None, **kw: Any) -> Op:
    return op(p, "read", call, ret, output=out, **kw)


def cas(p: int, old: Any, new: Any, call: float, ret: float | None, **kw: Any) -> Op:
    return op(p, "cas", call, ret, value=(old, new), **kw)


def verdict(ops: list[Op], model: str = "register") -> str:
    return check(ops, model).verdict


# --- register basics ------------------------------------------------------------------------


def test_empty_history_is_linearizable() -> None:
    result = check([], "register")
    assert result.verdict == "linearizable"
    assert result.witness == []


def test_register_starts_empty() -> None:
    assert verdict([r(0, None, 0, 1)]) == "linearizable"
    assert verdict([r(0, 1, 0, 1)]) == "not_linearizable"


def test_sequential_write_then_read() -> None:
    assert verdict([w(0, 1, 0, 1), r(1, 1, 2, 3)]) == "linearizable"
    assert verdict([w(0, 1, 0, 1), r(1, None, 2, 3)]) == "not_linearizable"


def test_concurrent_read_may_see_old_or_new_value() -> None:
    assert verdict([w(0, 1, 0, 10), r(1, None, 1, 2)]) == "linearizable"
    assert verdict([w(0, 1, 0, 10), r(1, 1, 1, 2)]) == "linearizable"


def test_classic_stale_read_and_its_witness() -> None:
    history = [w(0, 1, 0, 1), w(1, 2, 2, 3), r(2, 1, 4, 5)]
    result = check(history, "register")
    assert result.verdict == "not_linearizable"
    ce = result.counterexample
    assert ce is not None
    # the two writes are summarised as "the register holds 2"; the stale read is the witness
    assert ce.ops == (history[2],)
    assert ce.culprit is history[2]
    assert ce.start_states == (2,)
    assert ce.skipped == 2
    assert ce.minimal
    assert result.witness == [history[2]]


def test_new_old_inversion_between_two_reads() -> None:
    # once a read saw the write, a later read cannot see the value before it
    history = [w(0, 1, 0, 10), r(1, 1, 1, 2), r(2, None, 3, 4)]
    result = check(history, "register")
    assert result.verdict == "not_linearizable"
    ce = result.counterexample
    assert ce is not None
    assert ce.culprit is history[2]
    # The write was still running when the culprit returned, so it counts as unknown in the
    # shortest failing prefix; the read of 1 is summarised as "the register holds 1".
    assert ce.ops == (history[0], history[2])
    assert ce.pending == (history[0],)
    assert ce.start_states == (1,)
    assert ce.skipped == 1


def test_witness_drops_observers_it_does_not_need() -> None:
    history = [
        w(0, 1, 0, 10),
        r(1, 1, 3, 4),
        r(2, None, 3, 9),  # concurrent with everything: legal before the write
        r(3, None, 5, 6),  # the violation: after the read of 1
        r(4, None, 5, 8),  # the same violation again, but it returns later
    ]
    ce = check(history, "register").counterexample
    assert ce is not None
    assert ce.culprit is history[3]
    assert ce.ops == (history[0], history[3])
    assert ce.start_states == (1,)


def test_witness_without_a_quiescent_cut_keeps_the_operations_it_needs() -> None:
    history = [
        w(0, 1, 0, 10),
        r(1, 1, 1, 3),
        r(2, None, 2, 4.5),  # overlaps r(1) and the culprit: no quiescent cut before it
        r(3, None, 4, 5),
        r(4, 1, 6, 11),
    ]
    ce = check(history, "register").counterexample
    assert ce is not None
    assert ce.culprit is history[3]
    assert ce.skipped == 0 and ce.start_states == (None,)
    # history[4] returns after the culprit (outside the shortest failing prefix) and
    # history[2] is an observer the violation does not need: the write and two reads remain
    assert ce.ops == (history[0], history[1], history[3])


# --- compare-and-set --------------------------------------------------------------------------


def test_cas_ok_needs_the_expected_value() -> None:
    assert verdict([w(0, 1, 0, 1), cas(1, 1, 2, 2, 3), r(2, 2, 4, 5)]) == "linearizable"
    assert verdict([cas(0, 0, 2, 0, 1)]) == "not_linearizable"  # the register is empty
    assert verdict([cas(0, None, 2, 0, 1), r(1, 2, 2, 3)]) == "linearizable"


def test_cas_fail_took_effect_while_the_value_differed() -> None:
    assert verdict([cas(0, 1, 2, 0, 1, status="fail")]) == "linearizable"
    # the register certainly held 1: the comparison could not have failed
    history = [w(0, 1, 0, 1), cas(1, 1, 2, 2, 3, status="fail")]
    result = check(history, "register")
    assert result.verdict == "not_linearizable"
    assert result.counterexample is not None
    assert result.counterexample.ops == (history[1],)
    assert result.counterexample.start_states == (1,)
    # concurrent with the write, the failed cas fits before it
    assert verdict([w(0, 1, 0, 5), cas(1, 1, 2, 1, 2, status="fail")]) == "linearizable"


def test_cas_fail_changes_nothing() -> None:
    history = [w(0, 3, 0, 1), cas(1, 1, 2, 2, 3, status="fail"), r(2, 2, 4, 5)]
    assert verdict(history) == "not_linearizable"
    history[2] = r(2, 3, 4, 5)
    assert verdict(history) == "linearizable"


def test_unknown_cas_may_or_may_not_happen() -> None:
    base = [w(0, 1, 0, 1), cas(1, 1, 2, 2, None)]
    assert verdict([*base, r(2, 2, 5, 6)]) == "linearizable"
    assert verdict([*base, r(2, 1, 5, 6)]) == "linearizable"
    assert verdict([*base, r(2, 3, 5, 6)]) == "not_linearizable"


# --- unknown and failed operations ------------------------------------------------------------


def test_unknown_write_may_take_effect_late() -> None:
    history = [w(0, 1, 0, None), r(1, None, 5, 6), r(2, 1, 100, 101)]
    assert verdict(history) == "linearizable"


def test_unknown_write_may_never_take_effect() -> None:
    assert verdict([w(0, 1, 0, None), r(1, None, 5, 6), r(2, None, 100, 101)]) == "linearizable"


def test_unknown_write_cannot_take_effect_before_it_is_invoked() -> None:
    assert verdict([r(1, 1, 0, 1), w(0, 1, 2, None)]) == "not_linearizable"


def test_unknown_write_takes_effect_at_most_once() -> None:
    history = [w(0, 1, 0, None), r(1, 1, 1, 2), w(2, 2, 3, 4), r(1, 1, 5, 6)]
    result = check(history, "register")
    assert result.verdict == "not_linearizable"
    assert result.counterexample is not None
    assert result.counterexample.culprit is history[3]


def test_many_unknown_writes_are_cheap_when_nothing_reads_them() -> None:
    history = [w(p, p, p, None) for p in range(40)] + [r(99, None, 50, 51)]
    result = check(history, "register", timeout=10)
    assert result.verdict == "linearizable"


def test_failed_write_did_not_happen() -> None:
    assert verdict([w(0, 1, 0, 1, status="fail"), r(1, 1, 2, 3)]) == "not_linearizable"
    assert verdict([w(0, 1, 0, 1, status="fail"), r(1, None, 2, 3)]) == "linearizable"


def test_failed_read_carries_no_information() -> None:
    history = [w(0, 1, 0, 1), op(1, "read", 2, 3, output=None, status="fail")]
    result = check(history, "register")
    assert result.verdict == "linearizable"
    assert result.keys[None].ops == 1  # the failed read was dropped


def test_touching_intervals_count_as_concurrent() -> None:
    # the read is invoked at the instant the write returns: either order is allowed
    assert verdict([w(0, 1, 0, 5), r(1, None, 5, 6)]) == "linearizable"
    assert verdict([w(0, 1, 0, 5), r(1, None, 5.5, 6)]) == "not_linearizable"


# --- key-value model ----------------------------------------------------------------------------


def kv(p: int, f: str, key: str, call: float, ret: float | None, **kw: Any) -> Op:
    return op(p, f, call, ret, key=key, **kw)


def test_kv_keys_start_absent() -> None:
    assert verdict([kv(0, "get", "x", 0, 1, output=None)], "kv") == "linearizable"
    assert verdict([kv(0, "get", "x", 0, 1, output="")], "kv") == "not_linearizable"


def test_kv_put_get_delete_append() -> None:
    history = [
        kv(0, "put", "x", 0, 1, value="a"),
        kv(0, "append", "x", 2, 3, value="b"),
        kv(1, "get", "x", 4, 5, output="ab"),
        kv(1, "delete", "x", 6, 7),
        kv(2, "get", "x", 8, 9, output=None),
        kv(2, "append", "x", 10, 11, value="c"),  # absent counts as ""
        kv(0, "get", "x", 12, 13, output="c"),
    ]
    assert verdict(history, "kv") == "linearizable"
    history[-1] = kv(0, "get", "x", 12, 13, output="abc")
    assert verdict(history, "kv") == "not_linearizable"


def test_kv_checks_each_key_and_reports_the_failing_one() -> None:
    history = [
        kv(0, "put", "x", 0, 1, value="1"),
        kv(1, "get", "x", 2, 3, output="1"),
        kv(0, "put", "y", 4, 5, value="1"),
        kv(1, "put", "y", 6, 7, value="2"),
        kv(2, "get", "y", 8, 9, output="1"),  # stale
    ]
    result = check(history, "kv", exhaustive=True)
    assert result.verdict == "not_linearizable"
    assert result.keys["x"].verdict == "linearizable"
    assert result.keys["y"].verdict == "not_linearizable"
    assert result.counterexample is not None
    assert result.counterexample.key == "y"
    assert result.witness == [history[4]]


def test_kv_cas() -> None:
    history = [
        kv(0, "put", "x", 0, 1, value="a"),
        kv(1, "cas", "x", 2, 3, value=("a", "b")),
        kv(2, "cas", "x", 4, 5, value=("a", "c"), status="fail"),
        kv(2, "get", "x", 6, 7, output="b"),
    ]
    assert verdict(history, "kv") == "linearizable"


def test_model_is_detected_from_operation_names() -> None:
    assert check([w(0, 1, 0, 1)]).model == "register"
    assert check([kv(0, "put", "x", 0, 1, value="a")]).model == "kv"


# --- events, timeouts -------------------------------------------------------------------------


def test_check_accepts_event_dicts_with_a_missing_completion() -> None:
    events = [
        {"process": 0, "type": "invoke", "f": "put", "key": "x", "value": "1", "time": 0.0},
        {"process": 1, "type": "invoke", "f": "get", "key": "x", "value": None, "time": 0.1},
        {"process": 1, "type": "ok", "f": "get", "key": "x", "value": "1", "time": 0.2},
    ]
    result = check(events, "kv")
    assert result.verdict == "linearizable"  # the put never completed but may have happened
    ops = events_to_ops(events)
    assert [o.status for o in ops] == ["unknown", "ok"]
    assert ops[0].ret is None


def test_timeout_gives_unknown() -> None:
    # sixteen concurrent appends and a read no order explains: a proof needs 16! orders
    history = [kv(p, "append", "x", 0, 100, value=f"<{p}>") for p in range(16)]
    history.append(kv(99, "get", "x", 101, 102, output="impossible"))
    result = check(history, "kv", timeout=0.3)
    assert result.verdict == "unknown"
    assert result.linearizable is None
    assert result.keys["x"].verdict == "unknown"
    assert result.elapsed < 5


def test_zero_timeout_settles_nothing() -> None:
    result = check([w(0, 1, 0, 1)], "register", timeout=0)
    assert result.verdict == "unknown"


def test_a_violation_is_conclusive_even_if_another_key_runs_out_of_time() -> None:
    hard = [kv(p, "append", "h", 0, 100, value=f"<{p}>") for p in range(16)]
    hard.append(kv(99, "get", "h", 101, 102, output="impossible"))
    easy = [kv(0, "put", "e", 0, 1, value="1"), kv(1, "get", "e", 2, 3, output="2")]
    result = check(hard + easy, "kv", timeout=1.0)
    assert result.verdict == "not_linearizable"
    assert result.counterexample is not None and result.counterexample.key == "e"


@pytest.mark.parametrize("model", ["register", "kv"])
def test_unknown_operation_name_is_an_error(model: str) -> None:
    with pytest.raises(ValueError, match="has no operation 'frobnicate'"):
        check([op(0, "frobnicate", 0, 1)], model)


# --- values compared as JSON compares them ------------------------------------------------------


@pytest.mark.parametrize(("written", "read"), [
    (True, 1), (False, 0), (1, True), (0, False),
    ({"x": 1}, [["x", 1]]), ([["x", 1]], {"x": 1}), ([True], [1]), ({"a": [False]}, {"a": [0]}),
])
def test_values_json_tells_apart_are_not_equal(written: Any, read: Any) -> None:
    """Python has True == 1 and a frozen object looked like a list of pairs: a history that wrote
    one and read the other passed as linearizable."""
    events = [
        {"process": 0, "type": "invoke", "f": "write", "value": written},
        {"process": 0, "type": "ok", "f": "write", "value": written},
        {"process": 1, "type": "invoke", "f": "read", "value": None},
        {"process": 1, "type": "ok", "f": "read", "value": read},
    ]
    assert check(events_to_ops(events), "register").verdict == "not_linearizable"
    events[-1] = {**events[-1], "value": written}
    assert check(events_to_ops(events), "register").verdict == "linearizable"


def test_json_numbers_stay_equal_across_int_and_float() -> None:
    events = [
        {"process": 0, "type": "invoke", "f": "write", "value": 1},
        {"process": 0, "type": "ok", "f": "write", "value": 1},
        {"process": 1, "type": "invoke", "f": "read", "value": None},
        {"process": 1, "type": "ok", "f": "read", "value": 1.0},
    ]
    assert check(events_to_ops(events), "register").verdict == "linearizable"


@pytest.mark.parametrize("first", [0, False, 5, [1]])
def test_an_append_to_a_value_that_is_not_a_string_is_not_legal(first: Any) -> None:
    """``(state or "") + a`` took a put 0 (or false) for an absent key, and crashed on a put 5;
    an append is legal on an absent key or a string only."""
    ops = [
        op(0, "put", 0, 1, value=first, key="k"),
        op(0, "append", 2, 3, value="x", key="k"),
        op(1, "get", 4, 5, output="x", key="k"),
    ]
    assert check(ops, "kv").verdict == "not_linearizable"
    unknown = [ops[0], op(0, "append", 2, None, value="x", key="k"), op(1, "get", 4, 5, output=first, key="k")]
    assert check(unknown, "kv").verdict == "linearizable"  # the append may not have happened
