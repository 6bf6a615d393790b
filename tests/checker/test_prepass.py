"""The pre-pass (checker.prepass): each rule by hand -- dropped; kept because a read returns
the value; kept because the key has a cas or an append; a delete kept because a read returns
absent -- and that it never changes a verdict while it saves the search its work."""

from __future__ import annotations

from typing import Any

import pytest

from checker import Op, check
from checker.models import KV, REGISTER, Model, Step
from checker.prepass import drop_unread_writes

from .test_handmade import cas, op, r, w


def put(p: int, v: Any, call: float, ret: float | None, key: str = "x", **kw: Any) -> Op:
    return op(p, "put", call, ret, value=v, key=key, **kw)


def get(p: int, out: Any, call: float, ret: float | None, key: str = "x", **kw: Any) -> Op:
    return op(p, "get", call, ret, output=out, key=key, **kw)


def delete(p: int, call: float, ret: float | None, key: str = "x", **kw: Any) -> Op:
    return op(p, "delete", call, ret, key=key, **kw)


def append(p: int, s: str, call: float, ret: float | None, key: str = "x", **kw: Any) -> Op:
    return op(p, "append", call, ret, value=s, key=key, **kw)


def dropped(ops: list[Op], model: Model = REGISTER) -> list[Op]:
    """The operations of one key that the pre-pass drops."""
    compiled: list[tuple[Op, Step]] = []
    for o in ops:
        step = model.compile(o)
        if step is not None:
            compiled.append((o, step))
    kept, count = drop_unread_writes(compiled)
    kept_ids = {id(o) for o, _ in kept}
    gone = [o for o, _ in compiled if id(o) not in kept_ids]
    assert count == len(gone)
    return gone


def same_verdict(ops: list[Op], model: str = "register") -> str:
    """Check with and without the pre-pass; the verdicts must agree."""
    with_prepass = check(ops, model).verdict
    assert check(ops, model, prepass=False).verdict == with_prepass
    return with_prepass


# --- dropped ----------------------------------------------------------------------------------


def test_unknown_write_no_read_returns_is_dropped() -> None:
    unread = w(0, 2, 0, None)
    history = [w(1, 1, 0, 1), unread, r(2, 1, 2, 3), r(2, 1, 4, 5)]
    assert dropped(history) == [unread]
    assert same_verdict(history) == "linearizable"
    result = check(history, "register")
    assert result.keys[None].dropped == 1
    assert result.keys[None].ops == 4  # still counted: it was a candidate of the search


def test_two_unknown_writes_of_one_unread_value_are_both_dropped() -> None:
    history = [w(0, 2, 0, None), w(1, 2, 0, None), w(3, 1, 0, 1), r(2, 1, 2, 3)]
    assert dropped(history) == history[:2]
    assert same_verdict(history) == "linearizable"


def test_unknown_write_of_the_initial_value_is_dropped_when_nothing_reads_it() -> None:
    # the register starts empty (None); no read returns None, so the write of None goes
    history = [w(0, None, 0, None), w(1, 1, 0, 1), r(2, 1, 2, 3)]
    assert dropped(history) == [history[0]]
    assert same_verdict(history) == "linearizable"


def test_unknown_delete_is_dropped_when_no_read_returns_absent() -> None:
    history = [put(0, "a", 0, 1), delete(1, 2, None), get(2, "a", 3, 4)]
    assert dropped(history, KV) == [history[1]]
    assert same_verdict(history, "kv") == "linearizable"


def test_unknown_reads_observe_nothing() -> None:
    # a read with no result has no step: it does not keep the write of 2
    history = [w(0, 2, 0, None), r(1, None, 1, None), w(2, 1, 0, 1), r(3, 1, 2, 3)]
    assert dropped(history) == [history[0]]


def test_a_violation_stays_a_violation() -> None:
    # a stale read; the unread unknown write of 3 could not explain it anyway
    history = [w(0, 1, 0, 1), w(1, 2, 2, 3), w(2, 3, 2, None), r(3, 1, 4, 5)]
    assert dropped(history) == [history[2]]
    assert same_verdict(history) == "not_linearizable"
    with_prepass = check(history, "register").counterexample
    without = check(history, "register", prepass=False).counterexample
    assert with_prepass is not None and without is not None
    assert with_prepass.ops == without.ops  # the witness comes from the full list


def test_the_rule_is_per_key() -> None:
    # a cas and an absent read on key y do not keep the unread unknown put on key x
    history = [
        put(0, "a", 0, 1),
        put(1, "b", 0, None),
        get(2, "a", 2, 3),
        cas(3, None, "c", 0, 1, key="y"),
        get(4, None, 0, 1, key="y"),
    ]
    result = check(history, "kv")
    assert {key: k.dropped for key, k in result.keys.items()} == {"x": 1, "y": 0}
    assert same_verdict(history, "kv") == "linearizable"


# --- kept ------------------------------------------------------------------------------------


def test_unknown_write_whose_value_is_read_is_kept() -> None:
    history = [w(0, 2, 0, None), r(1, 2, 5, 6)]
    assert dropped(history) == []
    assert same_verdict(history) == "linearizable"
    # kept even when the read could not have seen it (it returned before the write began):
    # telling that apart is the search's job
    early = [r(1, 2, 0, 1), w(0, 2, 2, None)]
    assert dropped(early) == []
    assert same_verdict(early) == "not_linearizable"


def test_completed_and_failed_writes_are_never_dropped() -> None:
    history = [w(0, 2, 0, 1), w(1, 3, 0, 1, status="fail"), r(2, None, 2, 3)]
    assert dropped(history) == []
    assert same_verdict(history) == "not_linearizable"


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(cas(9, 1, 2, 0, 1), id="cas-ok"),
        pytest.param(cas(9, 2, 3, 0, 1, status="fail"), id="cas-fail"),
        pytest.param(cas(9, 2, 3, 0, None), id="cas-unknown"),
    ],
)
def test_unknown_write_is_kept_on_a_register_with_a_cas(other: Op) -> None:
    history = [w(0, 2, 0, None), w(1, 1, 0, 1), other, r(2, 1, 4, 5)]
    assert history[0] not in dropped(history)


def test_a_cas_that_fails_because_of_an_unread_write_keeps_it() -> None:
    # nothing reads 2, but cas [1, 3] failing needs the register not to hold 1: only the
    # unknown write of 2 explains it, so dropping that write would change the verdict
    history = [w(0, 1, 0, 1), w(1, 2, 2, None), cas(2, 1, 3, 4, 5, status="fail")]
    assert dropped(history) == []
    assert same_verdict(history) == "linearizable"
    assert check([history[0], history[2]], "register").verdict == "not_linearizable"


def test_a_successful_cas_of_the_unread_value_keeps_it() -> None:
    history = [w(1, 2, 0, None), cas(2, 2, 3, 1, 2), r(3, 3, 3, 4)]
    assert dropped(history) == []
    assert same_verdict(history) == "linearizable"


def test_a_completed_cas_of_v_to_v_counts_as_a_read_of_v() -> None:
    history = [w(0, 2, 0, None), cas(1, 2, 2, 1, 2)]
    assert dropped(history) == []
    assert same_verdict(history) == "linearizable"


def test_an_append_on_the_key_keeps_unknown_puts() -> None:
    # the read of "bs" sees the unknown put of "b" through the append, without returning "b"
    history = [put(0, "a", 0, 1), put(1, "b", 2, None), append(2, "s", 3, 4), get(3, "bs", 5, 6)]
    assert dropped(history, KV) == []
    assert same_verdict(history, "kv") == "linearizable"
    without_put = [history[0], history[2], history[3]]
    assert check(without_put, "kv").verdict == "not_linearizable"


def test_unknown_delete_is_kept_when_a_read_returns_absent() -> None:
    history = [put(0, "a", 0, 1), delete(1, 2, None), get(2, None, 3, 4)]
    assert dropped(history, KV) == []
    assert same_verdict(history, "kv") == "linearizable"
    assert check([history[0], history[2]], "kv").verdict == "not_linearizable"


# --- switchable, and what it saves -------------------------------------------------------------


def test_prepass_false_drops_nothing() -> None:
    history = [w(0, 2, 0, None), w(1, 1, 0, 1), r(2, 1, 2, 3)]
    assert check(history, "register").keys[None].dropped == 1
    assert check(history, "register", prepass=False).keys[None].dropped == 0


def test_unread_unknown_writes_cost_the_search_nothing() -> None:
    """Forty unknown writes nobody reads stay pending to the end of the history, so without
    the pre-pass the search tries each of them (a dead end) at every later step; with it, it
    never sees them."""
    history: list[Op] = [w(p, 100 + p, p, None) for p in range(40)]
    for i in range(30):
        history.append(w(90, i, 50 + 4 * i, 51 + 4 * i))
        history.append(r(91, i, 52 + 4 * i, 53 + 4 * i))
    with_prepass = check(history, "register")
    without = check(history, "register", prepass=False)
    assert with_prepass.verdict == without.verdict == "linearizable"
    assert with_prepass.keys[None].dropped == 40
    assert with_prepass.keys[None].explored * 10 < without.keys[None].explored
