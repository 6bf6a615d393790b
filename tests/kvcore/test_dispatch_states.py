"""Table dispatch and the named states."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from kvcore.dispatch import Dispatch, merge
from kvcore.states import STATES, MemberEvent, State


@dataclass(frozen=True)
class A:
    x: int = 0


@dataclass(frozen=True)
class B:
    x: int = 0


@dataclass(frozen=True)
class SubA(A):
    pass


def test_dispatch_routes_by_exact_class_and_reports_unknown_kinds() -> None:
    seen: list[tuple[str, str, object]] = []
    d = Dispatch({A: lambda s, m: seen.append(("a", s, m))}, lambda s, m: seen.append(("?", s, m)))
    assert d("p", A(1)) is True
    assert d("q", B(2)) is False
    assert d("r", SubA(3)) is False  # a subclass is not taken for its parent
    assert seen == [("a", "p", A(1)), ("?", "q", B(2)), ("?", "r", SubA(3))]
    assert d.handles == frozenset({A})


def test_merge_refuses_a_kind_handled_twice() -> None:
    def h(s: str, m: object) -> None:
        return None

    assert set(merge({A: h}, {B: h})) == {A, B}
    with pytest.raises(ValueError, match="handled twice"):
        merge({A: h}, {A: h})


def test_states_are_their_strings() -> None:
    assert State.ALIVE == "alive" and json.dumps([State.DEAD]) == '["dead"]'
    assert [str(s) for s in STATES] == ["alive", "suspect", "dead", "left"]
    assert State.SUSPECT.up and State.ALIVE.up and not State.DEAD.up and not State.LEFT.up
    assert MemberEvent("reap") is MemberEvent.REAP and MemberEvent.LEFT == State.LEFT
    assert f"{State.LEFT}" == "left"
