"""Every int a peer sends is range-checked at decode (kvcore.codec's docstring), also inside the
supported ``X | None`` and ``tuple[X, ...]`` fields, and the generated fast decoder accepts no
int the checker loop refuses. No registered message has such a field today: this test declares
one for the time of the test."""

from __future__ import annotations

import pytest

from kvcore import codec
from kvcore.bounds import INT64_MAX
from kvcore.errors import RemoteProtocolError
from kvcore.messages import REGISTRY, message


@pytest.fixture
def kind() -> object:
    @message
    class NestedIntsProbe:
        slot: int | None
        seq: int | None
        counts: tuple[int, ...]

    try:
        yield NestedIntsProbe
    finally:
        REGISTRY.pop("NestedIntsProbe", None)
        codec._SPECS.pop("NestedIntsProbe", None)


def _frame(slot: object, seq: object, counts: list[object]) -> dict[str, object]:
    return {"k": "NestedIntsProbe", "slot": slot, "seq": seq, "counts": counts}


@pytest.mark.parametrize(
    "frame",
    [
        _frame(-1, 0, []),
        _frame(16384, 0, []),
        _frame(None, -1, []),
        _frame(None, INT64_MAX + 1, []),
        _frame(None, None, [1, -1]),
        _frame(None, None, [INT64_MAX + 1]),
    ],
)
def test_an_int_out_of_range_inside_an_optional_or_a_tuple_is_refused(kind: object, frame: dict[str, object]) -> None:
    with pytest.raises(RemoteProtocolError, match="out of range"):
        codec._decode_slow(frame)
    with pytest.raises(RemoteProtocolError, match="out of range"):
        codec.decode(frame)


def test_ints_in_range_decode_alike_on_both_paths(kind: object) -> None:
    frame = _frame(16383, INT64_MAX, [0, 5, INT64_MAX])
    got = codec.decode(frame)
    assert got == codec._decode_slow(frame)
    assert (got.slot, got.seq, got.counts) == (16383, INT64_MAX, (0, 5, INT64_MAX))
    assert codec.decode(_frame(None, None, [])) == kind(slot=None, seq=None, counts=())  # type: ignore[operator]
