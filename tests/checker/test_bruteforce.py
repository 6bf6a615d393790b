"""Random small histories, checked by checker and by brute force (tests/.../helpers.py);
the verdicts must agree, and every witness must be a valid, minimal proof by brute force too.
The pre-pass (checker.prepass) must leave every verdict as it was, by brute force and in the
checker, over many seeds of histories full of unknown writes and deletes."""

from __future__ import annotations

import random
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Literal

import pytest

from checker import Op, check
from checker.models import Step, get_model
from checker.prepass import drop_unread_writes

from .helpers import brute_force_final_states, brute_force_linearizable

HISTORIES = 600
MAX_OPS = 7
REGISTER_VALUES = [0, 1, 2]
KV_VALUES = ["a", "b", "c"]
BLIND_EXTRA_VALUES: dict[str, list[Any]] = {"register": [3, 4, 5], "kv": ["d", "e", "f"]}


@dataclass
class Plan:
    process: int
    f: str
    key: str | None
    argument: Any
    call: float
    ret: float
    point: float  # when it takes effect in the real execution


def random_history(
    rng: random.Random, unknown_rate: float = 0.15, blind_only: bool = False
) -> tuple[list[Op], str, bool]:
    """A history generated from a real sequential execution (every op takes effect at a random
    instant inside its interval), then often corrupted: reads return a random value, writes
    claim to have failed although they happened. Returns (ops, model, distinct times?).
    ``blind_only``: only reads, writes and deletes (no cas, no append) over more values, so
    that many unknown writes are never read -- what the pre-pass (checker.prepass) drops."""
    model = rng.choice(["register", "kv"])
    keys: list[str | None] = [None] if model == "register" else rng.choice([["x"], ["x", "y"]])
    values: list[Any] = list(REGISTER_VALUES) if model == "register" else list(KV_VALUES)
    if blind_only:
        values += BLIND_EXTRA_VALUES[model]
    distinct_times = rng.random() < 0.5
    processes = rng.randint(1, 3)

    plans: list[Plan] = []
    clock = {p: rng.randint(0, 3) for p in range(processes)}
    for _ in range(rng.randint(1, MAX_OPS)):
        process = rng.randrange(processes)
        if model == "register":
            f = rng.choice(["read", "read", "write", "write"] + ([] if blind_only else ["cas"]))
        elif blind_only:
            f = rng.choice(["get", "get", "put", "put", "delete"])
        else:
            f = rng.choice(["get", "get", "put", "put", "append", "delete", "cas"])
        argument: Any = None
        if f in ("write", "put"):
            argument = rng.choice(values)
        elif f == "append":
            argument = rng.choice(["a", "b"])
        elif f == "cas":
            argument = (rng.choice([*values, None]), rng.choice(values))
        call = clock[process]
        ret = call + rng.randint(0, 4)
        clock[process] = ret + rng.randint(1, 2)
        plans.append(Plan(process, f, rng.choice(keys), argument, call, ret, rng.uniform(call, ret)))

    if distinct_times:  # spread times apart so that no two events coincide
        stamps = sorted({t for plan in plans for t in (plan.call, plan.ret)})
        spread = {t: i * 10 for i, t in enumerate(stamps)}
        for plan in plans:
            plan.call, plan.ret = spread[plan.call], spread[plan.ret] + 5
            plan.point = rng.uniform(plan.call, plan.ret)

    state: dict[str | None, Any] = {}
    ops: list[Op] = []
    for plan in sorted(plans, key=lambda plan: plan.point):
        f, key, argument = plan.f, plan.key, plan.argument
        fate = rng.random()
        current = state.get(key)
        output = None
        status: Literal["ok", "fail", "unknown"] = "ok"
        if f in ("read", "get"):
            output = current
        elif f == "cas":
            if current == argument[0]:
                state[key] = argument[1]
            else:
                status = "fail"
        elif f == "append":
            state[key] = (current or "") + argument
        else:
            state[key] = None if f == "delete" else argument
        if fate < 0.12 and f not in ("read", "get", "cas"):
            status = "fail"  # claims it failed (a lie unless we undo it)
            if rng.random() < 0.7:
                state[key] = current  # usually true: it really did not happen
        if fate > 1 - unknown_rate:
            status = "unknown"
        if rng.random() < 0.4 and f in ("read", "get"):
            output = rng.choice([*values, None])  # maybe a stale or invented read
        ops.append(
            Op(
                process=plan.process,
                f=f,
                key=key,
                value=argument,
                output=output if status == "ok" else None,
                call=float(plan.call),
                ret=None if status == "unknown" else float(plan.ret),
                status=status,
            )
        )
    ops.sort(key=lambda op: op.call)
    return ops, model, distinct_times


def _start(key: str | None, state: Hashable) -> dict[str | None, Hashable]:
    return {key: state}


def _observer(op: Op) -> bool:
    if op.f in ("read", "get"):
        return op.status == "ok"
    if op.f == "cas":
        return op.status == "fail" or (op.status == "ok" and op.value[0] == op.value[1])
    return False


@pytest.fixture(scope="module", params=[0.15, 0.5], ids=["few-unknown", "many-unknown"])
def sample(request: pytest.FixtureRequest) -> list[tuple[list[Op], str, bool]]:
    """HISTORIES random histories; in the second sample half the operations are unknown."""
    rng = random.Random(20240611)
    return [random_history(rng, request.param) for _ in range(HISTORIES)]


def test_sample_has_both_verdicts_and_unknown_and_failed_ops(
    sample: list[tuple[list[Op], str, bool]],
) -> None:
    verdicts = [brute_force_linearizable(ops) for ops, _, _ in sample]
    assert sum(verdicts) >= HISTORIES // 10
    assert len(verdicts) - sum(verdicts) >= HISTORIES // 10
    statuses = {op.status for ops, _, _ in sample for op in ops}
    assert statuses == {"ok", "fail", "unknown"}


def test_verdicts_match_brute_force(sample: list[tuple[list[Op], str, bool]]) -> None:
    for number, (ops, model, _) in enumerate(sample):
        expected = brute_force_linearizable(ops)
        result = check(ops, model)
        assert result.linearizable is expected, (number, model, [op.describe() for op in ops])


def test_every_witness_is_a_proof_and_minimal(sample: list[tuple[list[Op], str, bool]]) -> None:
    witnesses = 0
    cuts_checked = 0
    for number, (ops, model, distinct_times) in enumerate(sample):
        result = check(ops, model)
        ce = result.counterexample
        if ce is None:
            continue
        witnesses += 1
        context = (number, [op.describe() for op in ops], [op.describe() for op in ce.ops])
        starts = [_start(ce.key, s) for s in ce.start_states]
        assert ce.minimal, context
        assert all(any(op is o for o in ops) for op in ce.ops), context
        assert any(op is ce.culprit for op in ce.ops), context
        assert all(op.key == ce.key for op in ce.ops), context
        # the witness cannot be linearized from any start state...
        assert not brute_force_linearizable(ce.ops, starts, ce.pending), context
        # ...every start state is reachable by the operations skipped before it...
        if ce.skipped == 0:
            assert ce.start_states == (None,), context
        # ...and it needs every observer it kept
        for op in ce.ops:
            if _observer(op) and not any(op is p for p in ce.pending):
                rest = [o for o in ce.ops if o is not op]
                assert brute_force_linearizable(rest, starts, ce.pending), (context, op)
        if distinct_times:
            # the prefix that ends just before the culprit returns still linearizes: the
            # culprit's return is the first event after which nothing works
            assert ce.culprit.ret is not None
            end = ce.culprit.ret
            key_ops = [op for op in ops if op.key == ce.key and op.call < end]
            running = [op for op in key_ops if op.ret is None or op.ret >= end]
            assert brute_force_linearizable(key_ops, [{}], running), context
            if ce.cut is not None:
                # the start states cover every state the operations before the cut can leave
                before = [op for op in key_ops if op.call < ce.cut]
                reachable = brute_force_final_states(before, ce.key, running)
                assert reachable <= set(ce.start_states), (context, reachable)
                cuts_checked += 1
    assert witnesses >= HISTORIES // 10
    assert cuts_checked >= 10


# --- the pre-pass: dropping unread unknown writes never changes a verdict -------------------

PREPASS_SEEDS = range(16)
PREPASS_HISTORIES = 250


def _after_prepass(ops: list[Op], model: str) -> tuple[list[Op], int]:
    """``ops`` without the unknown writes the pre-pass drops (from each key), and how many."""
    spec = get_model(model)
    by_key: dict[str | None, list[tuple[Op, Step]]] = {}
    for op in ops:
        step = spec.compile(op)
        if step is not None:
            by_key.setdefault(op.key, []).append((op, step))
    dropped_ids: set[int] = set()
    for key_ops in by_key.values():
        kept, _ = drop_unread_writes(key_ops)
        kept_ids = {id(op) for op, _ in kept}
        dropped_ids |= {id(op) for op, _ in key_ops if id(op) not in kept_ids}
    return [op for op in ops if id(op) not in dropped_ids], len(dropped_ids)


@pytest.mark.parametrize("seed", PREPASS_SEEDS)
def test_prepass_never_changes_a_verdict(seed: int) -> None:
    """Three out of four histories use only reads, writes and deletes (the pre-pass's ground),
    the rest every operation (where it must mostly stand back); many operations are unknown.
    The brute force on what the pre-pass keeps, and the checker with and without it, must all
    give the brute force's verdict on the whole history."""
    rng = random.Random(8_000 + seed)
    dropped_in: dict[bool, int] = {True: 0, False: 0}  # histories with drops, by verdict
    for number in range(PREPASS_HISTORIES):
        blind_only = number % 4 != 0
        ops, model, _ = random_history(rng, rng.choice([0.3, 0.6]), blind_only=blind_only)
        context = (seed, number, model, [op.describe() for op in ops])
        expected = brute_force_linearizable(ops)
        kept, dropped = _after_prepass(ops, model)
        assert brute_force_linearizable(kept) is expected, context
        with_prepass = check(ops, model)
        without = check(ops, model, prepass=False)
        assert with_prepass.linearizable is expected, context
        assert without.linearizable is expected, context
        assert sum(r.dropped for r in with_prepass.keys.values()) == dropped, context
        assert all(r.dropped == 0 for r in without.keys.values()), context
        if dropped:
            dropped_in[expected] += 1
    # the sample exercises the pre-pass on both verdicts
    assert dropped_in[True] >= PREPASS_HISTORIES // 10, dropped_in
    assert dropped_in[False] >= PREPASS_HISTORIES // 20, dropped_in
