"""The codec: every message kind round-trips, and decode raises RemoteProtocolError only.

Like h11's rule, "if decode raises any exception besides RemoteProtocolError then that's a bug":
the error tables and the fuzz tests below let any other exception escape and fail the test.
"""

from __future__ import annotations

import dataclasses
import math
import random
import types
import typing
from collections.abc import Iterator
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest

import kvcore.epidemic
import kvcore.membership  # noqa: F401
from kvcore import codec
from kvcore.codec import decode, encode, roundtrip
from kvcore.errors import RemoteProtocolError
from kvcore.messages import (
    REGISTRY,
    Delete,
    Forward,
    ForwardReply,
    Get,
    Hello,
    Put,
    Reply,
    kind_of,
    message,
)


# Test-only message kinds with an int and a float field (the foundation's health-check Ping and
# Pong, which SWIM replaced); declaring them registers them like any other kind.
@message
class Ping:
    seq: int
    sent_at: float


@message
class Pong:
    seq: int
    sent_at: float


# --- building sample messages from the dataclass annotations -------------------------------

SCALAR_SAMPLES: dict[Any, list[Any]] = {
    str: ["", "node-1", "ключ"],
    bytes: [b"", b"k", b"\x00\xff" * 3],
    # the wire's range: 0..2^63-1 (kvcore.bounds); negative and larger ints are refused
    int: [0, 7, 2**48 + 5, 2**63 - 1],
    float: [0.0, 1.5, -2.25],
    bool: [True, False],
    type(None): [None],
}


def samples(tp: Any) -> list[Any]:
    """Sample values of a field type; fails loudly on a type the test does not know yet."""
    if tp in SCALAR_SAMPLES:
        return SCALAR_SAMPLES[tp]
    if isinstance(tp, type) and tp.__name__ in REGISTRY and REGISTRY[tp.__name__] is tp:
        return list(instances(tp))
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union or origin is types.UnionType:
        return [v for a in args for v in samples(a)]
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        inner = samples(args[0])
        return [(), tuple(inner), (inner[0],)]
    raise AssertionError(f"no sample values for field type {tp!r}; teach test_codec.samples")


def _in_bounds(name: str, values: list[Any]) -> list[Any]:
    """The samples an int field accepts (a slot is 0..16383; codec.int_bounds)."""
    lo, hi = codec.int_bounds(name)
    kept = [v for v in values if type(v) is not int or lo <= v <= hi]
    return [*kept, hi] if kept and type(values[0]) is int and hi not in kept else kept


def instances(cls: type[Any]) -> Iterator[Any]:
    """Instances of a message class: the first sample everywhere, then each field varied."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    per_field = {n: _in_bounds(n, samples(hints[n])) for n in names}
    base = {n: vals[0] for n, vals in per_field.items()}
    yield cls(**base)
    for n, vals in per_field.items():
        for v in vals[1:]:
            yield cls(**{**base, n: v})


KINDS = sorted(REGISTRY)


def test_registry_holds_the_wire_kinds() -> None:
    assert {
        "Get",
        "Put",
        "Delete",
        "Reply",
        "Ping",
        "Pong",
        "Forward",
        "ForwardReply",
        "Hello",
    } <= set(REGISTRY)
    for name, cls in REGISTRY.items():
        assert cls.__name__ == name


@pytest.mark.parametrize("kind", KINDS)
def test_every_registered_kind_round_trips(kind: str) -> None:
    for m in instances(REGISTRY[kind]):
        d = encode(m)
        assert d["k"] == kind == kind_of(m)
        back = decode(d)
        assert back == m
        assert type(back) is type(m)
        assert roundtrip(m) == m


@pytest.mark.parametrize("kind", KINDS)
def test_every_registered_kind_round_trips_through_msgpack(kind: str) -> None:
    for m in instances(REGISTRY[kind]):
        wire = msgpack.packb(encode(m), use_bin_type=True)
        assert decode(msgpack.unpackb(wire, raw=False)) == m


@pytest.mark.parametrize("kind", KINDS)
def test_encode_gives_plain_data(kind: str) -> None:
    def plain(v: Any) -> bool:
        if isinstance(v, dict):
            return all(type(k) is str and plain(x) for k, x in v.items())
        if isinstance(v, (list, tuple)):
            return all(plain(x) for x in v)
        return v is None or type(v) in (str, bytes, int, float, bool)

    for m in instances(REGISTRY[kind]):
        assert plain(encode(m))


@pytest.mark.parametrize("op", [Get(key=b"k"), Put(key=b"k", value=b"v"), Delete(key=b"k")])
def test_forward_carries_each_client_op(op: Any) -> None:
    m = Forward(request_id=2**47, op=op)
    d = encode(m)
    assert d == {"k": "Forward", "request_id": 2**47, "op": {"k": type(op).__name__, **encode(op)}}
    assert decode(d) == m
    assert type(decode(d).op) is type(op)


@pytest.mark.parametrize(
    "reply",
    [
        Reply(),
        Reply(value=b"v"),
        Reply(value=b""),
        Reply(error="not_found", message="key b'k' not found"),
    ],
)
def test_forward_reply_carries_a_reply(reply: Reply) -> None:
    m = ForwardReply(request_id=9, reply=reply)
    d = encode(m)
    assert d["reply"] == {
        "k": "Reply",
        "value": reply.value,
        "error": reply.error,
        "message": reply.message,
    }
    assert decode(d) == m
    assert decode(msgpack.unpackb(msgpack.packb(d, use_bin_type=True), raw=False)) == m


def test_float_field_accepts_an_int_and_widens_it() -> None:
    m = decode({"k": "Ping", "seq": 1, "sent_at": 3})
    assert m == Ping(seq=1, sent_at=3.0)
    assert type(m.sent_at) is float


def test_unknown_extra_fields_are_ignored() -> None:
    assert decode({"k": "Get", "key": b"x", "ttl": 5, "new": {"k": "Nope"}}) == Get(key=b"x")


def test_encode_of_a_non_message_is_refused() -> None:
    # A local misuse; today the codec reports it as a protocol error (it looks the kind up).
    with pytest.raises(RemoteProtocolError):
        encode(object())


# --- tuples (no registered kind has one yet: a temporary kind exercises them) ---------------


@pytest.fixture
def tuple_kind() -> Iterator[type[Any]]:
    @message
    class _TestTuples:
        ints: tuple[int, ...]
        blobs: tuple[bytes, ...]
        ops: tuple[Get, ...]
        flag: bool
        maybe: int | None = None

    try:
        yield _TestTuples
    finally:
        del REGISTRY["_TestTuples"]
        codec._SPECS.pop("_TestTuples", None)


def test_tuples_survive_encode_and_msgpack(tuple_kind: type[Any]) -> None:
    m = tuple_kind(ints=(1, 2, 3), blobs=(b"a", b""), ops=(Get(key=b"x"), Get(key=b"y")), flag=True)
    d = encode(m)
    assert d["ints"] == (1, 2, 3)
    assert d["ops"] == ({"k": "Get", "key": b"x"}, {"k": "Get", "key": b"y"})
    assert decode(d) == m
    unpacked = msgpack.unpackb(msgpack.packb(d, use_bin_type=True), raw=False)
    assert unpacked["ints"] == [1, 2, 3]  # msgpack arrays come back as lists ...
    back = decode(unpacked)
    assert back == m  # ... and decode turns them back into tuples
    assert type(back.ints) is tuple and type(back.ops) is tuple


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ints", [1, "2"]),
        ("ints", [True]),
        ("ints", 5),
        ("ints", "123"),
        ("ints", {"0": 1}),
        ("blobs", ["a"]),
        ("ops", [{"k": "Put", "key": b"x", "value": b"v"}]),
        ("ops", [{"k": ["Get"]}]),
        ("ops", [None]),
        ("flag", 1),
        ("flag", "true"),
        ("flag", None),
        ("maybe", 1.0),
        ("maybe", False),
    ],
)
def test_wrong_types_in_tuple_bool_and_optional_fields_are_protocol_errors(
    tuple_kind: type[Any], field: str, value: Any
) -> None:
    d = encode(tuple_kind(ints=(1,), blobs=(b"a",), ops=(Get(key=b"x"),), flag=False))
    d[field] = value
    with pytest.raises(RemoteProtocolError):
        decode(d)


# --- malformed input -----------------------------------------------------------------------

GOOD_PING = {"k": "Ping", "seq": 1, "sent_at": 1.0}
GOOD_FORWARD = {"k": "Forward", "request_id": 1, "op": {"k": "Get", "key": b"k"}}
GOOD_REPLY = {"k": "Reply", "value": None, "error": "", "message": ""}

MALFORMED = {
    # not a map at all
    "none": None,
    "list": [],
    "list of pairs": [["k", "Get"], ["key", b"x"]],
    "tuple": ("k", "Get"),
    "str": "Get",
    "bytes": b"\x81\xa1k\xa3Get",
    "int": 5,
    # no kind, or a kind of the wrong type
    "empty map": {},
    "kind is None": {"k": None, "key": b"x"},
    "kind is int": {"k": 5},
    "kind is bytes": {"k": b"Get", "key": b"x"},
    "kind is list": {"k": ["Get"], "key": b"x"},
    # unknown kind
    "unknown kind": {"k": "Nope"},
    "kind of a builtin": {"k": "dict"},
    "dunder kind": {"k": "__class__"},
    # missing fields
    "Get without key": {"k": "Get"},
    "Put without value": {"k": "Put", "key": b"k"},
    "Ping without sent_at": {"k": "Ping", "seq": 1},
    "Forward without op": {"k": "Forward", "request_id": 1},
    "ForwardReply without reply": {"k": "ForwardReply", "request_id": 1},
    # wrong scalar types
    "str for bytes": {"k": "Get", "key": "abc"},
    "bytearray for bytes": {"k": "Get", "key": bytearray(b"abc")},
    "None for bytes": {"k": "Get", "key": None},
    "list for bytes": {"k": "Put", "key": b"k", "value": [1, 2]},
    "bool for int": {**GOOD_PING, "seq": True},
    "float for int": {**GOOD_PING, "seq": 1.0},
    "str for int": {**GOOD_PING, "seq": "1"},
    "None for int": {**GOOD_PING, "seq": None},
    "bool for float": {**GOOD_PING, "sent_at": False},
    "str for float": {**GOOD_PING, "sent_at": "1.0"},
    "bytes for str": {"k": "Hello", "node_id": b"n1", "cluster": ""},
    "int for optional bytes": {**GOOD_REPLY, "value": 5},
    "str for optional bytes": {**GOOD_REPLY, "value": "v"},
    "None for str": {**GOOD_REPLY, "error": None},
    # nested messages
    "nested op of the wrong kind": {**GOOD_FORWARD, "op": GOOD_PING},
    "nested op is a Reply": {**GOOD_FORWARD, "op": GOOD_REPLY},
    "nested op is a Forward": {**GOOD_FORWARD, "op": GOOD_FORWARD},
    "nested op is not a map": {**GOOD_FORWARD, "op": "Get"},
    "nested op is None": {**GOOD_FORWARD, "op": None},
    "nested op is a list": {**GOOD_FORWARD, "op": ["Get", b"k"]},
    "nested op without kind": {**GOOD_FORWARD, "op": {"key": b"k"}},
    "nested op kind is a list": {**GOOD_FORWARD, "op": {"k": ["Get"], "key": b"k"}},
    "nested op kind is a map": {**GOOD_FORWARD, "op": {"k": {}, "key": b"k"}},
    "nested op missing a field": {**GOOD_FORWARD, "op": {"k": "Put", "key": b"k"}},
    "nested op with a bad field": {**GOOD_FORWARD, "op": {"k": "Get", "key": 5}},
    "nested reply of the wrong kind": {"k": "ForwardReply", "request_id": 1, "reply": GOOD_PING},
    "nested reply kind is a list": {"k": "ForwardReply", "request_id": 1, "reply": {"k": [1]}},
    "nested reply with a bad field": {
        "k": "ForwardReply",
        "request_id": 1,
        "reply": {**GOOD_REPLY, "value": "str"},
    },
    "nested reply is garbage": {"k": "ForwardReply", "request_id": 1, "reply": [[[{}]]]},
    "bad request id around a good op": {**GOOD_FORWARD, "request_id": "1"},
}


@pytest.mark.parametrize("obj", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_input_raises_remote_protocol_error_and_nothing_else(obj: Any) -> None:
    with pytest.raises(RemoteProtocolError):
        decode(obj)


def test_protocol_error_names_the_kind_and_field() -> None:
    with pytest.raises(RemoteProtocolError, match=r"Ping\.seq: expected int, got bool"):
        decode({**GOOD_PING, "seq": True})
    with pytest.raises(RemoteProtocolError, match=r"Get is missing field 'key'"):
        decode({"k": "Get"})
    with pytest.raises(RemoteProtocolError, match=r"unknown message kind 'Nope'"):
        decode({"k": "Nope"})


# --- fuzzing -------------------------------------------------------------------------------

FUZZ_SEED = 20240601


def _random_scalar(rng: random.Random, msgpackable: bool) -> Any:
    choice = rng.randrange(10)
    if choice == 0:
        return None
    if choice == 1:
        return rng.random() < 0.5
    if choice == 2:
        return rng.randint(-(2**63), 2**64 - 1) if msgpackable else rng.randint(-(2**80), 2**80)
    if choice == 3:
        return rng.choice([0, 1, -1, 2**48])
    if choice == 4:
        return rng.choice([0.0, -1.5, math.inf, -math.inf, math.nan, 1e308])
    if choice == 5:
        return rng.choice(["", "k", "Get", "Put", "Forward", "Reply", "é", "\x00"])
    if choice == 6:
        return rng.choice(KINDS)
    if choice == 7:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(5)))
    if choice == 8:
        return rng.choice(["key", "value", "op", "reply", "request_id", "seq", "sent_at"])
    return "x" * rng.randrange(3)


def _random_value(rng: random.Random, depth: int, msgpackable: bool) -> Any:
    if depth <= 0 or rng.random() < 0.5:
        return _random_scalar(rng, msgpackable)
    r = rng.random()
    if r < 0.4:
        return _random_map(rng, depth - 1, msgpackable)
    if r < 0.7 or msgpackable:
        return [_random_value(rng, depth - 1, msgpackable) for _ in range(rng.randrange(4))]
    return tuple(_random_value(rng, depth - 1, msgpackable) for _ in range(rng.randrange(4)))


def _random_map(rng: random.Random, depth: int, msgpackable: bool) -> dict[Any, Any]:
    d: dict[Any, Any] = {}
    if rng.random() < 0.8:
        d["k"] = rng.choice(KINDS) if rng.random() < 0.8 else _random_value(rng, depth, msgpackable)
    for _ in range(rng.randrange(5)):
        key = (
            _random_scalar(rng, msgpackable) if not msgpackable else str(_random_scalar(rng, True))
        )
        if msgpackable and not isinstance(key, str):
            continue
        try:
            d[key] = _random_value(rng, depth, msgpackable)
        except TypeError:  # an unhashable key (never produced by scalars, but be safe)
            continue
    return d


def _mutate(rng: random.Random, obj: Any, msgpackable: bool) -> Any:
    """A valid encoding with one field replaced, removed, or one nested map mutated."""
    if not isinstance(obj, dict) or not obj:
        return _random_value(rng, 2, msgpackable)
    d = dict(obj)
    key = rng.choice(sorted(d, key=str))
    r = rng.random()
    if r < 0.2:
        del d[key]
    elif r < 0.5 and isinstance(d[key], dict):
        d[key] = _mutate(rng, d[key], msgpackable)
    else:
        d[key] = _random_value(rng, 3, msgpackable)
    return d


def _valid_encodings() -> list[dict[str, Any]]:
    return [encode(m) for kind in KINDS for m in instances(REGISTRY[kind])]


def _assert_decode_is_safe(obj: Any) -> None:
    try:
        m = decode(obj)
    except RemoteProtocolError:
        return
    # Anything else propagates and fails the test. A success must be a registered message
    # that encodes again.
    assert REGISTRY.get(type(m).__name__) is type(m)
    encode(m)


def test_fuzz_decode_raises_only_remote_protocol_error() -> None:
    rng = random.Random(FUZZ_SEED)
    valid = _valid_encodings()
    for _ in range(3000):
        _assert_decode_is_safe(_random_value(rng, 4, msgpackable=False))
        _assert_decode_is_safe(_random_map(rng, 3, msgpackable=False))
        _assert_decode_is_safe(_mutate(rng, rng.choice(valid), msgpackable=False))


def test_fuzz_decode_after_msgpack_raises_only_remote_protocol_error() -> None:
    rng = random.Random(FUZZ_SEED + 1)
    valid = _valid_encodings()
    for _ in range(2000):
        for obj in (
            _random_map(rng, 3, msgpackable=True),
            _mutate(rng, rng.choice(valid), msgpackable=True),
        ):
            wire = msgpack.packb(obj, use_bin_type=True)
            _assert_decode_is_safe(msgpack.unpackb(wire, raw=False))


def test_fuzz_mutations_sometimes_decode() -> None:
    # Guard for the fuzzer itself: it must reach the success path too, not only errors.
    rng = random.Random(FUZZ_SEED)
    valid = _valid_encodings()
    ok = 0
    for _ in range(500):
        try:
            decode(_mutate(rng, rng.choice(valid), msgpackable=False))
            ok += 1
        except RemoteProtocolError:
            pass
    assert ok > 0


def test_the_good_messages_the_malformed_cases_start_from_decode() -> None:
    # The tables above start from good messages: those must decode, or the cases prove nothing.
    for good in (GOOD_PING, GOOD_FORWARD, GOOD_REPLY):
        decode(good)
    assert decode(GOOD_FORWARD) == Forward(request_id=1, op=Get(key=b"k"))
    assert decode({"k": "Hello", "node_id": "n1", "cluster": ""}) == Hello(node_id="n1")
    assert decode({"k": "Pong", "seq": 1, "sent_at": 1.0}) == Pong(seq=1, sent_at=1.0)


# --- the generated fast paths give the checker loop's answers --------------------------------------


def _decoded(decoder: Any, obj: Any) -> tuple[str, Any]:
    try:
        m = decoder(obj)
    except RemoteProtocolError as e:
        return ("error", str(e))
    return ("ok", (type(m), m, [type(getattr(m, f.name)) for f in dataclasses.fields(m)]))


def test_decode_agrees_with_the_checker_loop_on_good_and_mutated_input() -> None:
    # decode() tries the generated fast decoder first; the checker loop (_decode_slow) is the
    # reference: same message (same field types: a widened float, a tuple), same error sentence.
    rng = random.Random(FUZZ_SEED + 2)
    valid = _valid_encodings()
    fast_hits = 0
    for obj in valid:
        assert _decoded(decode, obj) == _decoded(codec._decode_slow, obj)
    for _ in range(3000):
        for obj in (
            _mutate(rng, rng.choice(valid), msgpackable=False),
            msgpack.unpackb(
                msgpack.packb(_mutate(rng, rng.choice(valid), msgpackable=True), use_bin_type=True),
                raw=False,
            ),
        ):
            got = _decoded(decode, obj)
            assert got == _decoded(codec._decode_slow, obj), obj
            if got[0] == "ok":
                fast_hits += 1
    assert fast_hits > 0


def test_the_fast_decoder_takes_good_input_and_gives_up_on_anything_else() -> None:
    # a nested message takes the fast path once its kind's spec is built (decode builds it on
    # first sight): built here, so the test does not depend on which tests ran before it
    codec._spec_for_kind("Get")
    spec = codec._SPECS.get("Forward") or codec._spec_for_kind("Forward")
    assert spec.fast(dict(GOOD_FORWARD)) == Forward(request_id=1, op=Get(key=b"k"))
    for bad in ({**GOOD_FORWARD, "request_id": True}, {"k": "Forward", "op": GOOD_FORWARD["op"]},
                {**GOOD_FORWARD, "op": {"k": "Get", "key": "text"}}):
        with pytest.raises((codec._Fallback, KeyError)):
            spec.fast(bad)
    pong = codec._SPECS.get("Pong") or codec._spec_for_kind("Pong")
    with pytest.raises(codec._Fallback):  # an int for a float: widened by the checker loop
        pong.fast({"k": "Pong", "seq": 1, "sent_at": 1})
    assert type(decode({"k": "Pong", "seq": 1, "sent_at": 1}).sent_at) is float


def test_encode_gives_the_same_dict_as_the_field_loop() -> None:
    # The generated encoder is one dict display: same keys, same order (so the same msgpack bytes).
    for kind in KINDS:
        for m in instances(REGISTRY[kind]):
            ref: dict[str, Any] = {"k": kind}
            for f in dataclasses.fields(m):
                v = getattr(m, f.name)
                ref[f.name] = codec._encode_value(v)
            got = encode(m)
            assert list(got.items()) == list(ref.items())
            assert msgpack.packb(got, use_bin_type=True) == msgpack.packb(ref, use_bin_type=True)


def test_a_nested_message_field_is_encoded_as_encode_value_encodes_it() -> None:
    # The generated encoder takes a nested message's encoder from codec._ENCODERS, or goes
    # through _encode_value when its class has none yet: both give _encode_value's dict.
    from kvcore.messages import Delete, Forward, Get, Put

    ops: list[Any] = [Get(key=b"k"), Put(key=b"k", value=b"v"), Delete(key=b"k")]
    for op in ops:
        encode(op)  # its spec (and encoder) made
        enc = codec._ENCODERS.pop(type(op))
        assert enc is codec._SPECS[type(op).__name__].enc
        try:
            for _ in range(2):  # through _encode_value, then from _ENCODERS
                got = encode(Forward(request_id=7, op=op))
                assert got == {"k": "Forward", "request_id": 7, "op": codec._encode_value(op)}
                assert list(got["op"].items()) == list(codec._encode_value(op).items())
                codec._ENCODERS[type(op)] = enc
        finally:
            codec._ENCODERS[type(op)] = enc
