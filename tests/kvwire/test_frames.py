"""Peer framing (kvwire) with the real kvcore codec: round trips, stream chunking, limits,
and hostile input, which must only ever produce messages or FrameError."""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import random
import struct
import types
import typing
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest

import kvcore
import kvwire
from kvcore.messages import (
    REGISTRY,
    Alive,
    Delete,
    Forward,
    ForwardReply,
    Get,
    Hello,
    MemberState,
    Nack,
    PushPull,
    Put,
    Reply,
    Suspect,
    SwimAck,
    SwimPing,
)
from kvwire import DEFAULT_MAX_FRAME, HEADER, FrameDecoder, FrameError, frame, pack, unpack

MESSAGES: list[Any] = [
    Get(key=b"k"),
    Put(key=b"user:{42}:name", value=b"\x00\xff" * 100),
    Delete(key=b""),
    Reply(),
    Reply(value=b"v", error="", message=""),
    Reply(value=None, error="not_found", message="key not found"),
    SwimPing(seq=1, target="n2", gossip=(Suspect(node="n3", incarnation=4, source="n1"),)),
    SwimAck(seq=2**40, gossip=()),
    Nack(seq=0),
    PushPull(
        join=True,
        reply=False,
        members=(
            MemberState(node="n1", incarnation=1, state="alive", addr="127.0.0.1:7001",
                        peer_addr="127.0.0.1:17001", slots="0-16383", epoch=1),
        ),
    ),
    SwimAck(seq=3, gossip=(Alive(node="n4", incarnation=2, addr="h:1", peer_addr="h:2", slots="", epoch=0),)),
    Forward(request_id=7, op=Put(key=b"a", value=b"b")),
    Forward(request_id=8, op=Get(key=b"a")),
    ForwardReply(request_id=7, reply=Reply(value=b"x")),
    Hello(node_id="n1", cluster="lab"),
]


# Import every kvcore module so that every message kind is registered, whatever ran before.
for _mod in pkgutil.walk_packages(kvcore.__path__, "kvcore."):
    importlib.import_module(_mod.name)

_SCALARS: dict[Any, Any] = {str: "s-\u00e9", bytes: b"\x00b", int: 3, float: 1.5, bool: True}


def sample(tp: Any) -> Any:
    """A value of a field type, built from the codec's supported annotations."""
    if tp in _SCALARS:
        return _SCALARS[tp]
    if tp is type(None):
        return None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is tuple:
        return (sample(args[0]), sample(args[0]))
    if origin is typing.Union or origin is types.UnionType:
        return sample(next(a for a in args if a is not type(None)))
    return build(tp)


def build(cls: type[Any]) -> Any:
    hints = typing.get_type_hints(cls)
    return cls(**{f.name: sample(hints[f.name]) for f in dataclasses.fields(cls)})


def registered_samples() -> list[Any]:
    """One generated instance of every registered kind (names with "_" are test-only kinds)."""
    return [build(cls) for name, cls in sorted(REGISTRY.items()) if not name.startswith("_")]


# Hand-picked values above, plus one generated instance of every kind, so kinds added to kvcore
# later are covered without editing this file.
MESSAGES += registered_samples()


def stream(msgs: list[Any]) -> bytes:
    return b"".join(frame(m) for m in msgs)


def test_every_registered_kind_round_trips_through_a_decoder() -> None:
    msgs = registered_samples()
    assert {type(m).__name__ for m in msgs} >= {"Get", "Put", "Forward", "Hello"}
    for msg in msgs:
        assert unpack(pack(msg)) == msg
    assert FrameDecoder().feed(stream(msgs)) == msgs


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_pack_unpack_round_trip(msg: Any) -> None:
    assert unpack(pack(msg)) == msg


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_frame_is_big_endian_length_then_payload(msg: Any) -> None:
    data = frame(msg)
    (length,) = HEADER.unpack_from(data)
    assert length == len(data) - 4
    assert data[4:] == pack(msg)


def test_payload_is_msgpack_of_the_codec_dict() -> None:
    obj = msgpack.unpackb(pack(Put(key=b"k", value=b"v")), raw=False)
    assert obj == {"k": "Put", "key": b"k", "value": b"v"}


def test_decoder_yields_all_frames_of_one_feed_in_order() -> None:
    assert FrameDecoder().feed(stream(MESSAGES)) == MESSAGES


def test_decoder_reassembles_frames_split_across_feeds() -> None:
    data = stream(MESSAGES)
    dec = FrameDecoder()
    out: list[Any] = []
    for i in range(len(data)):  # one byte at a time: every possible split point
        out += dec.feed(data[i : i + 1])
    assert out == MESSAGES
    assert dec.buffered == 0


def test_decoder_handles_random_chunkings() -> None:
    rng = random.Random(1234)
    data = stream(MESSAGES * 5)
    for _ in range(50):
        dec = FrameDecoder()
        out: list[Any] = []
        pos = 0
        while pos < len(data):
            step = rng.randint(1, 300)
            out += dec.feed(data[pos : pos + step])
            pos += step
        assert out == MESSAGES * 5


def test_decoder_accepts_bytearray_and_memoryview() -> None:
    data = stream(MESSAGES[:3])
    assert FrameDecoder().feed(bytearray(data)) == MESSAGES[:3]
    assert FrameDecoder().feed(memoryview(data)) == MESSAGES[:3]


def test_feed_sized_reports_frame_sizes_with_prefix() -> None:
    dec = FrameDecoder()
    sized = dec.feed_sized(stream(MESSAGES))
    assert [m for m, _ in sized] == MESSAGES
    assert [n for _, n in sized] == [len(frame(m)) for m in MESSAGES]


def test_oversize_length_prefix_fails_before_the_body_arrives() -> None:
    dec = FrameDecoder(max_frame=1000)
    with pytest.raises(FrameError) as info:
        dec.feed(HEADER.pack(1001))  # only the prefix: the body was never sent
    assert info.value.reason == "oversized"
    assert "1001" in str(info.value)
    assert dec.buffered == 0


def test_oversize_prefix_split_over_feeds_is_caught_on_its_fourth_byte() -> None:
    dec = FrameDecoder()
    prefix = HEADER.pack(DEFAULT_MAX_FRAME + 1)
    assert dec.feed(prefix[:3]) == []
    with pytest.raises(FrameError):
        dec.feed(prefix[3:])


def test_frame_at_the_limit_is_accepted() -> None:
    msg = Put(key=b"k", value=b"x" * 200)
    data = frame(msg)
    assert FrameDecoder(max_frame=len(data) - 4).feed(data) == [msg]
    with pytest.raises(FrameError):
        FrameDecoder(max_frame=len(data) - 5).feed(data)


def test_messages_before_a_bad_frame_are_kept_on_the_error() -> None:
    good = stream(MESSAGES[:2])
    bad = HEADER.pack(3) + b"\xc1\xc1\xc1"  # 0xc1 is never used in msgpack
    with pytest.raises(FrameError) as info:
        FrameDecoder().feed(good + bad)
    assert info.value.reason == "malformed"
    assert info.value.messages == MESSAGES[:2]


def test_failed_decoder_stays_failed() -> None:
    dec = FrameDecoder()
    with pytest.raises(FrameError):
        dec.feed(HEADER.pack(1) + b"\xc1")
    with pytest.raises(FrameError):
        dec.feed(frame(Nack(seq=1)))


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (b"", "empty payload"),
        (b"\xc1", "reserved byte"),
        (msgpack.packb([1, 2, 3]), "array, not a map"),
        (msgpack.packb(5), "integer"),
        (msgpack.packb({"k": "NoSuchKind"}), "unknown kind"),
        (msgpack.packb({"key": b"x"}), "no kind"),
        (msgpack.packb({"k": "Get"}), "missing field"),
        (msgpack.packb({"k": "Get", "key": "text"}, use_bin_type=True), "str for bytes"),
        (msgpack.packb({"k": "Nack", "seq": "1"}), "str for int"),
        (msgpack.packb({1: 2}), "integer map key"),
        (msgpack.packb({"k": "Get", "key": b"x"}) + b"\x00", "trailing bytes"),
        (b"\xa3\xff\xfe\xfd", "invalid utf-8"),
        (msgpack.packb(msgpack.ExtType(5, b"xx")), "ext type"),
        (b"\x91" * 100_000 + b"\x00", "deep nesting"),
        (msgpack.packb({"k": "Forward", "request_id": 1, "op": {"k": "Nack", "seq": 1}}), "wrong nested"),
    ],
)
def test_malformed_payload_raises_frame_error(payload: bytes, why: str) -> None:
    with pytest.raises(FrameError) as info:
        unpack(payload)
    assert info.value.reason == "malformed", why
    with pytest.raises(FrameError):
        FrameDecoder().feed(HEADER.pack(len(payload)) + payload)


def _feed_all(dec: FrameDecoder, chunks: list[bytes]) -> list[Any]:
    """Feed chunks until the decoder fails; only messages or FrameError may come out."""
    out: list[Any] = []
    for chunk in chunks:
        try:
            out += dec.feed(chunk)
        except FrameError:
            return out
    return out


def test_random_bytes_give_messages_or_frame_error_only() -> None:
    rng = random.Random(20240601)
    for _ in range(2000):
        n = rng.randint(0, 64)
        data = bytes(rng.getrandbits(8) for _ in range(n))
        if rng.random() < 0.7 and n >= 4:  # plausible length prefix so payloads get decoded
            data = HEADER.pack(rng.randint(0, n - 4)) + data[4:]
        cut = rng.randint(0, len(data))
        for msg in _feed_all(FrameDecoder(max_frame=1 << 16), [data[:cut], data[cut:]]):
            assert type(msg).__name__ in REGISTRY


def test_mutated_valid_frames_give_messages_or_frame_error_only() -> None:
    # Bit flips, truncations and splices of real frames reach deep into the codec's checks.
    rng = random.Random(99)
    originals = [frame(m) for m in MESSAGES]
    for _ in range(3000):
        data = bytearray(rng.choice(originals))
        for _ in range(rng.randint(1, 4)):
            op = rng.random()
            i = rng.randrange(len(data))
            if op < 0.5:
                data[i] ^= 1 << rng.randrange(8)
            elif op < 0.7:
                data[i] = rng.getrandbits(8)
            elif op < 0.85:
                del data[i:]
                data += rng.choice(originals)[4:]
            else:
                data[i:i] = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 8)))
        if len(data) >= 4 and rng.random() < 0.8:  # keep the prefix consistent most of the time
            data[:4] = struct.pack(">I", len(data) - 4)
        for msg in _feed_all(FrameDecoder(max_frame=1 << 16), [bytes(data)]):
            assert type(msg).__name__ in REGISTRY


def test_pack_of_a_non_message_is_a_local_error_not_a_frame_error() -> None:
    with pytest.raises(Exception) as info:
        pack(object())
    assert not isinstance(info.value, FrameError)


def test_module_exports() -> None:
    assert set(kvwire.__all__) >= {"HEADER", "DEFAULT_MAX_FRAME", "FrameError", "pack", "unpack"}
