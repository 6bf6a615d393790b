"""The replicated state machine's bytes and rules: commands, sessions (thesis §6.3), images."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvcore.raft.messages import CONF, Entry
from kvcore.replica.command import (
    DELETE,
    PUT,
    REGISTER,
    Command,
    decode_answer,
    decode_command,
    decode_image,
    encode_answer,
    encode_command,
    encode_image,
)
from kvcore.replica.machine import StateMachine


def entry(index: int, c: Command) -> Entry:
    return Entry(term=1, index=index, data=encode_command(c))


def test_a_command_round_trips_byte_for_byte() -> None:
    c = Command(PUT, 12.5, "n1/abc", 7, 3, b"k\x00ey", b"v\xffalue")
    assert decode_command(encode_command(c)) == c
    assert decode_command(encode_command(Command(REGISTER, 0.0, "c", 1, 1))) == Command(REGISTER, 0.0, "c", 1, 1)


@pytest.mark.parametrize("data", [b"", b"P" + b"\0" * 10, b"X" + b"\0" * 40,
                                  encode_command(Command(PUT, 1.0, "client", 1, 1, b"key"))[:-2]])
def test_a_malformed_command_is_refused_not_half_read(data: bytes) -> None:
    with pytest.raises(ValueError):
        decode_command(data)


def test_answers_and_images_round_trip() -> None:
    assert decode_answer(encode_answer("not_found", "key 'a' not found")) == ("not_found", "key 'a' not found")
    assert decode_answer(encode_answer("", "")) == ("", "")
    img = encode_image(b'{"s": 1}', [(b"a", b"1"), (b"b", b"")])
    assert decode_image(img) == (b'{"s": 1}', [(b"a", b"1"), (b"b", b"")])
    for bad in (b"nope", img[:-1], img + b"x"):
        with pytest.raises(ValueError):
            decode_image(bad)


def test_a_write_needs_a_registered_session_and_is_not_applied_without_one() -> None:
    sm = StateMachine()
    out = sm.apply(entry(1, Command(PUT, 1.0, "c", 1, 1, b"k", b"v")))
    assert out is not None and out[2] == "session_expired"
    assert sm.store.get(b"k") is None
    assert sm.apply(entry(2, Command(REGISTER, 1.0, "c", 1, 1))) == ("c", 1, "", "")
    assert sm.apply(entry(3, Command(PUT, 1.0, "c", 2, 2, b"k", b"v"))) == ("c", 2, "", "")
    assert sm.store.get(b"k") == b"v" and sm.applied == 3


def test_a_retried_write_is_applied_once_and_gets_the_first_answer() -> None:
    """Thesis §6.3: a delete retried after a lost reply must not answer not_found, and a put
    retried after a later write must not overwrite it."""
    sm = StateMachine()
    sm.apply(entry(1, Command(REGISTER, 0.0, "c", 1, 1)))
    sm.apply(entry(2, Command(PUT, 0.0, "c", 2, 2, b"k", b"old")))
    first = sm.apply(entry(3, Command(DELETE, 0.0, "c", 3, 3, b"k")))
    again = sm.apply(entry(4, Command(DELETE, 0.0, "c", 3, 3, b"k")))
    assert first == again == ("c", 3, "", "")
    sm.apply(entry(5, Command(PUT, 0.0, "c", 4, 4, b"k", b"new")))
    sm.apply(entry(6, Command(PUT, 0.0, "c", 2, 4, b"k", b"old")))  # seq 2 below acked 4: stale
    assert sm.store.get(b"k") == b"new"


def test_noop_and_configuration_entries_answer_nobody() -> None:
    sm = StateMachine()
    assert sm.apply(Entry(term=2, index=1)) is None
    assert sm.apply(Entry(term=2, index=2, kind=CONF, data=b"add-learner n4")) is None
    assert sm.apply(Entry(term=2, index=3, data=b"garbage")) is None and sm.bad_entries == 1
    assert sm.applied == 3


def test_the_image_carries_keys_and_sessions_so_a_retry_after_a_snapshot_is_still_applied_once() -> None:
    sm = StateMachine()
    sm.apply(entry(1, Command(REGISTER, 0.0, "c", 1, 1)))
    sm.apply(entry(2, Command(DELETE, 0.0, "c", 2, 2, b"absent")))
    sm.apply(entry(3, Command(PUT, 0.0, "c", 3, 2, b"k", b"v")))
    other = StateMachine()
    other.store.set(b"stale", b"x")
    other.restore(sm.image(), 3)
    assert other.store.items() == [(b"k", b"v")] and other.applied == 3
    assert other.apply(entry(4, Command(PUT, 0.0, "c", 3, 2, b"k", b"v"))) == ("c", 3, "", "")
    assert other.apply(entry(5, Command(DELETE, 0.0, "c", 2, 2, b"absent")))[2] == "not_found"  # type: ignore[index]


# --- images built in steps (copy on write, thesis §5.2) -------------------------------------------


def _machine_with(keys: dict[bytes, bytes]) -> StateMachine:
    sm = StateMachine()
    sm.apply(entry(1, Command(REGISTER, 0.0, "c", 1, 1)))
    for i, (k, v) in enumerate(keys.items()):
        sm.apply(entry(2 + i, Command(PUT, 0.0, "c", 2 + i, 2 + i, k, v)))
    return sm


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.dictionaries(st.binary(min_size=1, max_size=6), st.binary(max_size=4), max_size=60), st.data())
def test_an_image_built_in_steps_is_the_store_at_its_freeze_whatever_is_written_meanwhile(
        initial: dict[bytes, bytes], data: st.DataObject) -> None:
    """The image frozen at index N is byte for byte the one-call image at N (key order, the
    sessions then), however the machine's writes and the builder's steps interleave."""
    sm = _machine_with(initial)
    expected = encode_image(sm.sessions.to_bytes(), sorted(initial.items()))
    assert sm.image() == expected
    b = sm.begin_image()
    assert b.index == sm.applied
    seq = sm.applied + 1
    done = False
    keys = st.binary(min_size=1, max_size=6)
    if initial:  # mostly the frozen keys: those are what copy on write is for
        keys = st.one_of(st.sampled_from(sorted(initial)), st.sampled_from(sorted(initial)), keys)
    ops = data.draw(st.lists(st.tuples(st.sampled_from(["put", "delete", "step"]), keys,
                                       st.binary(max_size=4), st.integers(1, 9)), max_size=80))
    for kind, key, value, chunk in ops:
        if kind == "step":
            done = done or b.step(chunk)
            continue
        op = Command(PUT, 0.0, "c", seq, seq, key, value) if kind == "put" else Command(DELETE, 0.0, "c", seq, seq, key)
        sm.apply(entry(seq, op))
        seq += 1
    while not done:
        done = b.step(3)
    assert b.data() == expected
    assert sm._builder is None  # done: later writes no longer pay for it


def test_installing_a_snapshot_cancels_an_image_being_built() -> None:
    sm = _machine_with({b"k%d" % i: b"v" for i in range(20)})
    b = sm.begin_image()
    assert not b.step(5)
    other = _machine_with({b"x": b"1"})
    sm.restore(other.image(), 7)
    assert b.cancelled and b.step(5)
    with pytest.raises(ValueError, match="not complete"):
        b.data()
    assert sm._builder is None and sm.store.items() == [(b"x", b"1")]


def test_a_large_image_is_built_in_short_steps() -> None:
    """Every step handles at most one chunk of keys: a run sorted, or a chunk encoded."""
    n, chunk = 5000, 256
    sm = _machine_with({b"key-%05d" % ((i * 7919) % n): b"v%d" % i for i in range(n)})
    b = sm.begin_image()
    steps = 0
    while not b.step(chunk):
        steps += 1
    assert steps + 1 == b.steps == 2 * -(-n // chunk)  # ceil(n / chunk) sorts, as many encodes
    assert b.data() == encode_image(sm.sessions.to_bytes(), sm.store.items())


def test_a_cancelled_image_is_told_no_more_writes() -> None:
    sm = _machine_with({b"a": b"1", b"b": b"2"})
    b = sm.begin_image()
    sm.cancel_image()
    sm.apply(entry(99, Command(PUT, 0.0, "c", 99, 99, b"a", b"3")))
    assert b.cancelled and b._before == {} and sm._builder is None
    assert sm.begin_image() is not b
