"""Every public history in shared/histories gets the verdict Porcupine's own test suite
asserts for it (expected.tsv), and every violation comes with a witness that holds up."""

from __future__ import annotations

import pytest

from checker import check, read_history
from checker.models import get_model
from checker.search import SearchOp, search
from checker.witness import unknown_version

from .helpers import expected_verdicts, histories_dir

if (histories_dir() / "expected.tsv").is_file():
    ROWS = expected_verdicts()
else:  # pragma: no cover - only without the shared folder
    ROWS = []

pytestmark = pytest.mark.skipif(
    not ROWS,
    reason=f"public history corpus not found at {histories_dir()} (set STORELAB_SHARED)",
)


def test_corpus_is_complete() -> None:
    assert len(ROWS) >= 100
    assert {linearizable for _, linearizable in ROWS} == {True, False}
    formats = {read_history(histories_dir() / name).format for name, _ in ROWS[:: len(ROWS) // 8]}
    assert "jepsen-etcd" in formats


@pytest.mark.parametrize(("name", "linearizable"), ROWS, ids=[name for name, _ in ROWS])
def test_verdict_matches_porcupine(name: str, linearizable: bool) -> None:
    history = read_history(histories_dir() / name)
    assert history.model is not None
    result = check(history.ops, history.model)
    assert result.verdict == ("linearizable" if linearizable else "not_linearizable")
    if linearizable:
        assert result.counterexample is None
        return
    ce = result.counterexample
    assert ce is not None
    assert ce.minimal
    assert any(op is ce.culprit for op in ce.ops)
    all_ops = {id(op) for op in history.ops}
    assert all(id(op) in all_ops and op.key == ce.key for op in ce.ops)
    assert len(ce.ops) <= ce.prefix_size <= result.keys[ce.key].ops
    # re-check the witness on its own: from every start state, no order works
    model = get_model(history.model)
    pending = {id(op) for op in ce.pending}
    items: list[SearchOp] = []
    for op in ce.ops:
        step = model.compile(op)
        assert step is not None
        if id(op) in pending:
            step = unknown_version(step)
            assert step is not None
            items.append((op.call, None, step))
        else:
            items.append((op.call, op.ret, step))
    assert search(items, ce.start_states).linearizable is False
