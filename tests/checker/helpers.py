"""Shared helpers for the checker tests: where the public corpus lives, and a brute-force
linearizability checker written independently of checker (no memo, no per-key split, its
own reading of the models) to cross-check it."""

from __future__ import annotations

import os
from collections.abc import Hashable, Sequence
from pathlib import Path

from checker import Op

REPO_ROOT = Path(__file__).resolve().parents[2]


def shared_dir() -> Path:
    """``$STORELAB_SHARED``, else the ``shared`` folder next to the repository."""
    configured = os.environ.get("STORELAB_SHARED")
    if configured:
        return Path(configured)
    return (REPO_ROOT / ".." / "shared").resolve()


def histories_dir() -> Path:
    return shared_dir() / "histories"


def expected_verdicts() -> list[tuple[str, bool]]:
    """(relative path, linearizable?) for every row of histories/expected.tsv."""
    rows: list[tuple[str, bool]] = []
    lines = (histories_dir() / "expected.tsv").read_text().splitlines()
    for line in lines[1:]:
        if line.strip():
            name, verdict = line.split("\t")
            rows.append((name, verdict.strip() == "true"))
    return rows


# ---------------------------------------------------------------------------------------------
# Brute force: depth-first over every order consistent with real time, no memo.

_READS = {"read", "get"}


def _brute_apply(
    state: dict[str | None, Hashable], op: Op, unknown: bool
) -> dict[str | None, Hashable] | None:
    """The spec, straight from the project's history-format rules; None = illegal."""
    current = state.get(op.key)
    f = op.f
    if f in _READS:
        return state if current == op.output else None
    if f == "cas":
        expected, new = op.value
        if unknown:  # it may have happened: then it compared
            return {**state, op.key: new} if current == expected else state
        if op.status == "ok":
            return {**state, op.key: new} if current == expected else None
        return state if current != expected else None  # fail: the comparison failed
    if f in ("write", "put"):
        return {**state, op.key: op.value}
    if f == "delete":
        return {**state, op.key: None}
    if f == "append":
        return {**state, op.key: (current or "") + op.value}
    raise ValueError(f)


def _entries(ops: Sequence[Op], treat_as_unknown: Sequence[Op]) -> list[tuple[Op, bool]]:
    forced_unknown = {id(op) for op in treat_as_unknown}
    entries: list[tuple[Op, bool]] = []  # (op, unknown?)
    for op in ops:
        unknown = op.status == "unknown" or id(op) in forced_unknown
        if op.f in _READS and (unknown or op.status == "fail"):
            continue  # a read without a result says nothing
        if op.status == "fail" and op.f != "cas" and not unknown:
            continue  # it did not happen
        entries.append((op, unknown))
    return entries


def _may_go_next(op: Op, remaining: list[tuple[Op, bool]]) -> bool:
    """Nothing left had to complete before ``op`` was called."""
    return not any(
        not unknown and other.ret is not None and other.ret < op.call
        for other, unknown in remaining
        if other is not op
    )


def brute_force_final_states(
    ops: Sequence[Op], key: str | None, treat_as_unknown: Sequence[Op] = ()
) -> set[Hashable]:
    """Every value ``key`` can hold at the moment the last completed operation of ``ops`` is
    linearized, over all legal orders (unknown operations placed anywhere after their call,
    or nowhere)."""
    finals: set[Hashable] = set()

    def extend(state: dict[str | None, Hashable], remaining: list[tuple[Op, bool]]) -> None:
        if all(unknown for _, unknown in remaining):
            finals.add(state.get(key))
            return
        for index, (op, unknown) in enumerate(remaining):
            if _may_go_next(op, remaining):
                new_state = _brute_apply(state, op, unknown)
                if new_state is not None:
                    extend(new_state, remaining[:index] + remaining[index + 1 :])

    extend({}, _entries(ops, treat_as_unknown))
    return finals


def brute_force_linearizable(
    ops: Sequence[Op],
    start_states: Sequence[dict[str | None, Hashable]] = ({},),
    treat_as_unknown: Sequence[Op] = (),
) -> bool:
    """Is there, from one of ``start_states``, an order of the operations that respects real
    time and the specification? Unknown operations (and those in ``treat_as_unknown``) may be
    placed anywhere after their call, or left out; failed writes and reads are left out."""

    def extend(state: dict[str | None, Hashable], remaining: list[tuple[Op, bool]]) -> bool:
        if all(unknown for _, unknown in remaining):
            return True  # the unknown ones left over never happened
        for index, (op, unknown) in enumerate(remaining):
            if not _may_go_next(op, remaining):
                continue
            new_state = _brute_apply(state, op, unknown)
            if new_state is not None and extend(new_state, remaining[:index] + remaining[index + 1 :]):
                return True
        return False

    entries = _entries(ops, treat_as_unknown)
    return any(extend(dict(start), entries) for start in start_states)
