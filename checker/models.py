"""Sequential specifications: what a register and a key-value store may answer.

Theory of operation
-------------------
Linearizability is defined against a *sequential specification* (Herlihy & Wing 1990, §2):
a state machine that says, for an operation applied to a state, whether the observed output is
legal and what the next state is. Porcupine calls this ``Model.Step(state, input, output) ->
(ok, newState)`` (``porcupine/model.go``). Here each :class:`~checker.history.Op` is first
*compiled* into a :data:`Step`, a tuple ``(kind, a, b)`` over six primitive kinds, so that the
search loop (:mod:`checker.search`) can apply it with a few comparisons instead of a method
call, and so that one table below holds every rule of both models:

============  ================================  ===============================
kind          legal in state ``s`` iff          next state
============  ================================  ===============================
READ a        ``s == a``                        ``s``
WRITE a       always                            ``a``
CAS a b       ``s == a``                        ``b``
CAS_FAIL a b  ``s != a``                        ``s``
CAS_MAYBE a b always                            ``b if s == a else s``
APPEND a      ``s`` absent or a string           ``(s or "") + a``
============  ================================  ===============================

States are hashable (``None``, strings, numbers, and JSON arrays, objects and booleans frozen
by :func:`checker.history.freeze`, which keeps ``true`` apart from ``1`` and ``{"x": 1}`` apart
from ``[["x", 1]]``: two states are ``==`` exactly when JSON says they are equal), because the
search memoises on ``(linearized set, state)`` (Lowe 2017, §4). An append is legal only on an
absent key or a string: a store cannot append to a number (the history would otherwise make
the checker add a string to it).

Per model, completions mean (the rules of the project's history format):

``register`` (one value, starting empty = ``None``)
    ``read`` -> READ of the value returned; ``write v`` -> WRITE; ``cas [from, to]``: ``ok`` ->
    CAS, ``fail`` -> CAS_FAIL (the comparison failed: it took effect at some instant, changing
    nothing, while the register did not hold ``from`` -- how etcd reports it, and how
    Porcupine's etcd model reads Jepsen's ``:fail :cas``). A ``cas [v, v]`` never changes the
    state, so an ``ok`` one is a READ of ``v`` and an unknown one is dropped.
``kv`` (every key starts absent = ``None``; histories are split per key first)
    ``get`` -> READ (``None`` for an absent key); ``put v`` -> WRITE; ``delete`` -> WRITE of
    ``None``; ``append s`` -> APPEND (an absent key counts as ``""``); ``cas`` as above.

For every other operation ``fail`` means it certainly did not take effect, so it is dropped. An
operation with an unknown outcome may take effect at any instant after its invocation, or
never: a write/put/append/delete keeps its step (the search may skip it), a ``cas`` becomes
CAS_MAYBE (if it happened, it compared), and a read/get with no result constrains nothing and
is dropped, as is a ``fail``-ed read (Porcupine's etcd test turns Jepsen's ``:fail :read
:timed-out`` into an always-legal read, which is the same thing).
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Any, TypeAlias

from checker.history import Op, freeze, thaw

State: TypeAlias = Hashable
Step: TypeAlias = tuple[int, Any, Any]

READ, WRITE, CAS, CAS_FAIL, CAS_MAYBE, APPEND = range(6)
KIND_NAMES = ("READ", "WRITE", "CAS", "CAS_FAIL", "CAS_MAYBE", "APPEND")
#: Kinds that never change the state; removing such an op from a linearization leaves a legal
#: one, which is what lets the witness search drop them (see checker.witness).
STATE_PRESERVING = frozenset({READ, CAS_FAIL})


class ModelError(ValueError):
    """The history uses an operation the model does not know, or a malformed argument."""


def apply_step(state: State, step: Step) -> tuple[bool, State]:
    """Apply a compiled step: ``(legal?, next state)``. The reference for the table above;
    ``checker.search`` inlines the same rules in its hot loop."""
    kind, a, b = step
    if kind == READ:
        return state == a, state
    if kind == WRITE:
        return True, a
    if kind == CAS:
        return state == a, b if state == a else state
    if kind == CAS_FAIL:
        return state != a, state
    if kind == CAS_MAYBE:
        return True, b if state == a else state
    if kind == APPEND:
        if state is None:
            return True, a
        if type(state) is not str:
            return False, state
        return True, state + a
    raise ValueError(f"unknown step kind {kind!r}")


@dataclass(frozen=True, slots=True)
class Model:
    """A named sequential specification: initial state and the operations it knows."""

    name: str
    init: State
    reads: frozenset[str]
    writes: frozenset[str]
    deletes: frozenset[str]
    appends: frozenset[str]
    cases: frozenset[str]
    description: str

    @property
    def operations(self) -> frozenset[str]:
        return self.reads | self.writes | self.deletes | self.appends | self.cases

    def compile(self, op: Op) -> Step | None:
        """The step for ``op``, or ``None`` when the op constrains nothing (see module doc)."""
        f = op.f
        if f in self.reads:
            return (READ, freeze(op.output), None) if op.status == "ok" else None
        if f in self.cases:
            pair = freeze(op.value)
            if not isinstance(pair, tuple) or len(pair) != 2:
                raise ModelError(f"{f} needs a [from, to] value, got {pair!r} ({_where(op)})")
            if pair[0] == pair[1]:
                # cas(v, v) never changes the state: ok = a read of v; unknown = nothing known
                if op.status == "ok":
                    return (READ, pair[0], None)
                if op.status == "unknown":
                    return None
            if op.status == "ok":
                return (CAS, pair[0], pair[1])
            if op.status == "fail":
                return (CAS_FAIL, pair[0], pair[1])
            return (CAS_MAYBE, pair[0], pair[1])
        if op.status == "fail":
            if f in self.operations:
                return None
        if f in self.writes:
            return (WRITE, freeze(op.value), None)
        if f in self.deletes:
            return (WRITE, None, None)
        if f in self.appends:
            if not isinstance(op.value, str):
                raise ModelError(f"{f} needs a string value, got {op.value!r} ({_where(op)})")
            return (APPEND, op.value, None)
        raise ModelError(
            f"model {self.name!r} has no operation {f!r} ({_where(op)}); it knows "
            f"{', '.join(sorted(self.operations))}"
        )

    def describe_state(self, state: State) -> str:
        """A state as JSON would write it; ``None`` as "absent" (kv) or "empty" (register)."""
        if state is None:
            return "absent (null)" if self.name == "kv" else "empty (null)"
        try:
            return json.dumps(thaw(state))
        except TypeError:
            return repr(state)


def _where(op: Op) -> str:
    return f"line {op.line}" if op.line is not None else f"process {op.process} at {op.call:g}"


REGISTER = Model(
    name="register",
    init=None,
    reads=frozenset({"read"}),
    writes=frozenset({"write"}),
    deletes=frozenset(),
    appends=frozenset(),
    cases=frozenset({"cas"}),
    description="one register starting empty: read, write, cas [from, to]",
)
KV = Model(
    name="kv",
    init=None,
    reads=frozenset({"get"}),
    writes=frozenset({"put"}),
    deletes=frozenset({"delete"}),
    appends=frozenset({"append"}),
    cases=frozenset({"cas"}),
    description="keys starting absent: get, put, append, delete, cas [from, to]",
)
MODELS: dict[str, Model] = {REGISTER.name: REGISTER, KV.name: KV}


def get_model(model: str | Model) -> Model:
    if isinstance(model, Model):
        return model
    try:
        return MODELS[model]
    except KeyError:
        raise ModelError(f"unknown model {model!r}; expected one of {', '.join(MODELS)}") from None


def detect_model(ops: Iterable[Op]) -> Model:
    """The model whose vocabulary covers every operation name in ``ops``."""
    names = {op.f for op in ops}
    for model in MODELS.values():
        if names <= model.operations:
            return model
    raise ModelError(
        f"no model knows all of the operations {', '.join(sorted(names))}; "
        + "; ".join(f"{m.name}: {m.description}" for m in MODELS.values())
    )
