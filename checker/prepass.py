"""The pre-pass: drop unknown writes that no read observes, before the search.

Theory of operation
-------------------
An operation with an unknown outcome (``info``, or no completion) may take effect at any
instant after its invocation, or never (Herlihy & Wing 1990, §3: a pending invocation may be
completed or removed). It never returns, so it is concurrent with everything invoked after it
(the Jepsen tutorial, "Refining tests": crashed operations "are *concurrent for the entire
remainder of the history*"), and each one multiplies the places the search must try. Jepsen's
answer for reads is to record a timed-out read as ``fail``, since a read changes nothing
(same tutorial, "Crashed reads"); Porcupine's etcd test turns a timed-out read into an
always-legal one. :mod:`checker.models` already drops unknown reads that way. This module is
the same argument for *writes* that nobody reads.

The rule, per key, on the compiled steps (:mod:`checker.models`):

    If every step of the key is a READ or a WRITE (no ``cas`` of any outcome, no ``append``),
    drop every unknown WRITE -- a ``put``/``write``, or a ``delete``, which is a WRITE of
    ``None`` -- whose value no READ of the key returns.

A delete is the same rule with the value ``None``: it is dropped only when no read of the key
returns absent/empty. A completed ``cas [v, v]`` compiles to a READ of ``v`` and counts as a
read; an unknown ``cas [v, v]`` compiles to nothing; any other ``cas`` keeps every unknown write
of its key. Unknown reads have no step, so they observe nothing; every READ step is counted,
whatever its status, which can only keep more.

Why it is sound (the verdict never changes). Let ``H`` be the key's operations and ``H'`` =
``H`` without one such unknown write ``u`` of value ``v``.

* ``H'`` linearizable => ``H`` linearizable: ``u`` may never take effect; the linearization of
  ``H'`` is one of ``H``.
* ``H`` linearizable => ``H'`` linearizable: take a linearization ``L`` of ``H`` that places
  ``u`` (if it leaves ``u`` out, it already is one of ``H'``) and delete ``u`` from it. Real-time
  order among the others is untouched. Every operation before ``u`` sees the same state. After
  ``u`` the state is ``v`` up to the next WRITE; any operation there is a READ (all steps are
  READs and WRITEs), legal in ``L`` only if it returns ``v`` -- and no READ returns ``v``, so
  there is none. The next WRITE is legal in any state and sets the same state as in ``L``;
  from there on nothing differs. (If there is no next WRITE, nothing follows ``u`` at all.)
  Equivalently: ``u`` can always be placed after every other operation, or nowhere.

With ``cas`` or ``append`` on the key the argument breaks, because their results depend on
the prior value without returning it: ``cas [v, w]`` succeeding, ``cas [x, w]`` failing (the
state was not ``x``) or an ``append`` that a later read observes as ``v + s`` all "see" ``v``.
So such keys are left alone, and so is any write whose value some read returns, even a read
that could never have seen it (a read returning ``v`` invoked before ``u``): deciding that
would take the search. Dropping writes one at a time keeps the rule valid for several
unknown writes of one value (none is read, so each goes), and the initial state plays no part
(a write of the initial value is dropped like any other when no read returns that value; if a
read returns it, the write stays).

Without the pre-pass the search already skips unknown writes that change nothing and never
takes one just before a blind write (:mod:`checker.search`), but it still tries every unread
unknown write, a dead end, at every step; and since an unknown write never returns, it stays
pending to the end of the history, so with hundreds of timed-out writes every step of the
search costs hundreds of tries and memo entries (a simulated register history of 2000
operations, 330 of them unknown: 20 s without the pre-pass, 0.03 s with it). Dropping them
first costs one pass over the key.

What it changes: the verdict, never; the search's work, often. The witness of a violation is
still shrunk from the failing key's full list of operations (:mod:`checker.witness`), so
for a given key it is what it was without the pre-pass.
"""

from __future__ import annotations

from collections.abc import Sequence

from checker.history import Op
from checker.models import READ, WRITE, Step


def drop_unread_writes(
    key_ops: Sequence[tuple[Op, Step]],
) -> tuple[list[tuple[Op, Step]], int]:
    """The operations of one key (``(op, step)`` pairs, compiled) without the unknown writes
    no read observes (see the module docstring), and how many were dropped."""
    reads: set[object] = set()
    for _, (kind, value, _b) in key_ops:
        if kind == READ:
            reads.add(value)
        elif kind != WRITE:
            return list(key_ops), 0  # a cas or an append depends on the prior value
    kept = [
        item
        for item in key_ops
        if not (item[0].ret is None and item[1][0] == WRITE and item[1][1] not in reads)
    ]
    return kept, len(key_ops) - len(kept)
