"""The byte readers of the commonest frames (a Forward of a Get or a Put, the ForwardReply of a
successful operation) against the general path they copy.

``kvwire.unpack`` reads those two frames straight from their bytes (``kvwire.frames._forward``
and ``_forward_reply``) and leaves every other payload to msgpack and ``kvcore.codec.decode``
(``unpack_general``). These tests hold the two to the same outcome for every payload: the same
message (fields of the same types), or the same FrameError with the same reason and sentence.
They cover every integer and bin width msgpack may use, ids at and past INT64_MAX, every
reply and operation shape, and every truncation, extension and one-byte change of the
encoder's payloads. They also check that the readers do take the commonest frames (a reader
that gave up on everything would pass the comparisons and save nothing).
"""

from __future__ import annotations

import random
import struct
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest

from kvcore.bounds import INT64_MAX
from kvcore.messages import Delete, Forward, ForwardReply, Get, Put, Reply
from kvwire import FrameDecoder, FrameError, frames, pack, unpack

IDS = [0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**47 + 12345, INT64_MAX]
SIZES = [0, 1, 7, 255, 256, 65535, 65536]

FORWARDS: list[Any] = [
    *(Forward(request_id=rid, op=Put(key=b"k", value=b"v")) for rid in IDS),
    *(Forward(request_id=rid, op=Get(key=b"key:1")) for rid in IDS),
    *(Forward(request_id=7, op=Put(key=b"k" * n or b"k", value=b"v" * n)) for n in SIZES),
    *(Forward(request_id=7, op=Get(key=b"k" * n)) for n in SIZES),
    Forward(request_id=7, op=Delete(key=b"k")),
]
REPLIES: list[Any] = [
    *(ForwardReply(request_id=rid, reply=Reply()) for rid in IDS),
    *(ForwardReply(request_id=rid, reply=Reply(value=b"v" * 64)) for rid in IDS),
    *(ForwardReply(request_id=9, reply=Reply(value=b"v" * n)) for n in SIZES),
    ForwardReply(request_id=9, reply=Reply(error="not_found", message="key b'k' not found")),
    ForwardReply(request_id=9, reply=Reply(value=b"v", error="x")),
    ForwardReply(request_id=9, reply=Reply(message="m")),
    ForwardReply(request_id=9, reply=Reply(error="try_again", message="")),
]
#: what the readers take: every Forward of a Get or a Put and every successful ForwardReply
TAKEN = [m for m in FORWARDS if type(m.op) is not Delete] + [m for m in REPLIES if not m.reply.error
                                                             and not m.reply.message]


def _fields(msg: Any) -> Any:
    """A message as nested (class, field types and values), so bytes and bytearray differ."""
    if hasattr(msg, "__dataclass_fields__"):
        return (type(msg).__name__, tuple((n, _fields(getattr(msg, n))) for n in msg.__dataclass_fields__))
    return (type(msg).__name__, msg)


def _outcome(fn: Any, payload: Any) -> Any:
    try:
        return ("message", _fields(fn(payload)))
    except FrameError as e:
        return ("error", e.reason, str(e))


def _same(payload: Any) -> None:
    assert _outcome(unpack, payload) == _outcome(frames.unpack_general, payload), payload


@pytest.mark.parametrize("msg", FORWARDS + REPLIES, ids=repr)
def test_the_encoders_payloads(msg: Any) -> None:
    payload = pack(msg)
    assert unpack(payload) == msg
    _same(payload)
    _same(bytearray(payload))
    _same(memoryview(payload))


def test_the_readers_take_the_commonest_frames() -> None:
    for msg in TAKEN:
        payload = pack(msg)
        reader = frames._forward if type(msg) is Forward else frames._forward_reply
        got = reader(payload)
        assert got is not None, msg
        assert _fields(got) == _fields(msg)
    for msg in FORWARDS + REPLIES:
        if msg not in TAKEN:
            payload = pack(msg)
            reader = frames._forward if type(msg) is Forward else frames._forward_reply
            assert reader(payload) is None, msg


def _dict(msg: Any) -> dict[str, Any]:
    """The plain dict the encoder gives (``msgpack.unpackb`` of its payload)."""
    obj: dict[str, Any] = msgpack.unpackb(pack(msg), raw=False)
    return obj


def _uint_forms(v: int) -> list[bytes]:
    """Every msgpack encoding of the unsigned int ``v`` (fixint, uint 8, 16, 32, 64) it fits."""
    forms = [bytes([v])] if v < 0x80 else []
    for tag, fmt, top in ((0xCC, ">B", 2**8), (0xCD, ">H", 2**16), (0xCE, ">I", 2**32), (0xCF, ">Q", 2**64)):
        if v < top:
            forms.append(bytes([tag]) + struct.pack(fmt, v))
    return forms


def _bin_forms(b: bytes) -> list[bytes]:
    """Every msgpack encoding of the bin ``b`` (bin 8, 16, 32) it fits."""
    forms = []
    for tag, fmt, top in ((0xC4, ">B", 2**8), (0xC5, ">H", 2**16), (0xC6, ">I", 2**32)):
        if len(b) < top:
            forms.append(bytes([tag]) + struct.pack(fmt, len(b)) + b)
    return forms


@pytest.mark.parametrize("rid", [*IDS, INT64_MAX + 1, 2**64 - 1])
def test_every_width_of_the_id(rid: int) -> None:
    for head, tail in (
        (frames._FORWARD_REPLY_HEAD, frames._REPLY_TO_VALUE + b"\xc0" + frames._REPLY_OK_TAIL),
        (frames._FORWARD_REPLY_HEAD, frames._REPLY_TO_VALUE + b"\xc4\x01v" + frames._REPLY_OK_TAIL),
        (frames._FORWARD_HEAD, frames._OP_PUT_TO_KEY + b"\xc4\x01k" + frames._VALUE_FIELD + b"\xc4\x00"),
        (frames._FORWARD_HEAD, frames._OP_GET_TO_KEY + b"\xc4\x01k"),
    ):
        for form in _uint_forms(rid):
            _same(head + form + tail)
            if rid > INT64_MAX:
                with pytest.raises(FrameError):
                    unpack(head + form + tail)


@pytest.mark.parametrize("n", SIZES)
def test_every_width_of_keys_and_values(n: int) -> None:
    rid = frames._FORWARD_HEAD + b"\xcf" + struct.pack(">Q", 2**40)
    for key in _bin_forms(b"k" * n):
        for value in _bin_forms(b"v" * n):
            _same(rid + frames._OP_PUT_TO_KEY + key + frames._VALUE_FIELD + value)
        _same(rid + frames._OP_GET_TO_KEY + key)
    for value in _bin_forms(b"v" * n):
        _same(frames._FORWARD_REPLY_HEAD + b"\x05" + frames._REPLY_TO_VALUE + value + frames._REPLY_OK_TAIL)


def _variants(payload: bytes, rng: random.Random) -> list[bytes]:
    """Every truncation and a few extensions of ``payload``, and one-byte changes at every
    position (to 0, 0xff, the byte plus and minus one, and a random byte)."""
    out = [payload[:i] for i in range(len(payload))]
    out += [payload + b"\x00", payload + b"\xc0", payload + payload]
    for i in range(len(payload)):
        for b in {0, 0xFF, (payload[i] + 1) % 256, (payload[i] - 1) % 256, rng.randrange(256)}:
            out.append(payload[:i] + bytes([b]) + payload[i + 1 :])
    return out


@pytest.mark.parametrize("msg", [
    Forward(request_id=2**47 + 3, op=Put(key=b"key:1", value=b"v" * 20)),
    Forward(request_id=5, op=Get(key=b"key:2")),
    ForwardReply(request_id=2**47 + 3, reply=Reply()),
    ForwardReply(request_id=100, reply=Reply(value=b"value")),
    ForwardReply(request_id=2**47, reply=Reply(value=b"")),
], ids=repr)
def test_every_damaged_payload(msg: Any) -> None:
    rng = random.Random(repr(msg))
    for payload in _variants(pack(msg), rng):
        _same(payload)


def test_messages_built_from_moved_keys() -> None:
    """A payload with the right fields in another order (or a duplicated field) is the general
    path's, which decides it as msgpack and the codec do."""
    fw = {"k": "Forward", "request_id": 3, "op": {"k": "Put", "key": b"k", "value": b"v"}}
    for obj in (
        {"request_id": 3, "k": "Forward", "op": fw["op"]},
        {"k": "Forward", "op": fw["op"], "request_id": 3},
        {**fw, "op": {"k": "Put", "value": b"v", "key": b"k"}},
        {**fw, "extra": 1},
        {"k": "ForwardReply", "request_id": 3, "reply": {"k": "Reply", "value": None, "error": "", "message": ""},
         "extra": 1},
        {"k": "ForwardReply", "request_id": 3, "reply": {"k": "Reply", "value": "text", "error": "", "message": ""}},
    ):
        _same(msgpack.packb(obj, use_bin_type=True))


def test_frames_from_a_stream() -> None:
    """The decoder gives the same messages, whole reads or byte by byte (buffered: a bytearray)."""
    msgs = FORWARDS + REPLIES
    data = b"".join(frames.frame(m) for m in msgs)
    assert FrameDecoder().feed(data) == msgs
    dec = FrameDecoder()
    got: list[Any] = []
    for i in range(len(data)):
        got += dec.feed(data[i : i + 1])
    assert got == msgs
    assert [_fields(m) for m in got] == [_fields(m) for m in msgs]


def test_random_payloads_of_the_two_shapes() -> None:
    rng = random.Random(8)
    for _ in range(3000):
        rid = rng.choice([rng.randrange(128), rng.randrange(2**64), rng.randrange(2**48)])
        key = rng.randbytes(rng.choice([0, 1, 10, 300]))
        value = rng.randbytes(rng.choice([0, 1, 10, 300]))
        shape = rng.randrange(3)
        if shape == 0:
            body = frames._OP_PUT_TO_KEY + rng.choice(_bin_forms(key)) + frames._VALUE_FIELD + rng.choice(_bin_forms(value))
            payload = frames._FORWARD_HEAD + rng.choice(_uint_forms(rid)) + body
        elif shape == 1:
            payload = frames._FORWARD_HEAD + rng.choice(_uint_forms(rid)) + frames._OP_GET_TO_KEY + rng.choice(_bin_forms(key))
        else:
            v = b"\xc0" if rng.random() < 0.3 else rng.choice(_bin_forms(value))
            payload = frames._FORWARD_REPLY_HEAD + rng.choice(_uint_forms(rid)) + frames._REPLY_TO_VALUE + v + frames._REPLY_OK_TAIL
        _same(payload)
        if rng.random() < 0.2:
            i = rng.randrange(len(payload))
            _same(payload[:i] + bytes([rng.randrange(256)]) + payload[i + 1 :])


# --- the writers ---------------------------------------------------------------------------------


class _EmptyCode(str):
    """A str that is not exactly str (as a StrEnum member is): msgpack writes it as its text."""


def _write_cases() -> list[Any]:
    ids = [0, 127, 2**32 - 1, 2**32, 2**47 + 5, INT64_MAX, 2**64 - 1]
    out: list[Any] = []
    for rid in ids:
        out += [
            Forward(request_id=rid, op=Put(key=b"key:1", value=b"v" * 64)),
            Forward(request_id=rid, op=Get(key=b"key:1")),
            ForwardReply(request_id=rid, reply=Reply()),
            ForwardReply(request_id=rid, reply=Reply(value=b"v" * 64)),
        ]
    rid = 2**40
    for n in (0, 1, 255, 256, 1024):
        out += [Forward(request_id=rid, op=Put(key=b"k" * n, value=b"v")),
                Forward(request_id=rid, op=Put(key=b"k", value=b"v" * n)),
                Forward(request_id=rid, op=Get(key=b"k" * n))]
    for n in (0, 1, 255, 256, 65535, 65536, 70000):
        out.append(ForwardReply(request_id=rid, reply=Reply(value=b"v" * n)))
    out += [
        Forward(request_id=rid, op=Delete(key=b"k")),
        Forward(request_id=rid, op=Put(key=bytearray(b"k"), value=b"v")),
        Forward(request_id=rid, op=Put(key=b"k", value=bytearray(b"v"))),
        Forward(request_id=rid, op=Get(key=memoryview(b"k"))),
        Forward(request_id=True, op=Get(key=b"k")),
        ForwardReply(request_id=rid, reply=Reply(value=bytearray(b"v"))),
        ForwardReply(request_id=rid, reply=Reply(error="not_found", message="no")),
        ForwardReply(request_id=rid, reply=Reply(message="m")),
        ForwardReply(request_id=rid, reply=Reply(error=_EmptyCode(""))),
        ForwardReply(request_id=rid, reply=Reply(message=_EmptyCode(""))),
        ForwardReply(request_id=True, reply=Reply()),
        ForwardReply(request_id=2**64, reply=Reply()),
        Forward(request_id=2**64, op=Get(key=b"k")),
        Forward(request_id=-1, op=Get(key=b"k")),
    ]
    return out


def _packed(fn: Any, msg: Any) -> Any:
    try:
        return ("bytes", fn(msg))
    except Exception as e:  # (what cannot be written must fail alike)
        return ("error", type(e).__name__)


def _short(v: Any, limit: int) -> bool:
    return type(v) is bytes and len(v) < limit


def _commonest(msg: Any) -> bool:
    """Whether the writers take ``msg``: a 64-bit id, and a successful reply (no value, or one
    under 64 KiB), or a Get or a Put of a key (and a value) under 256 bytes."""
    if type(msg.request_id) is not int or not 2**32 <= msg.request_id < 2**64:
        return False
    if type(msg) is ForwardReply:
        r = msg.reply
        empty = all(type(t) is str and not t for t in (r.error, r.message))
        return empty and (r.value is None or _short(r.value, 65536))
    op = msg.op
    if type(op) is Get:
        return _short(op.key, 256)
    return type(op) is Put and _short(op.key, 256) and _short(op.value, 256)


def _case_id(msg: Any) -> str:
    """A test id that is the same in every process (a memoryview's repr holds its address)."""
    return repr(msg).split(" at 0x")[0][:80]


@pytest.mark.parametrize("msg", _write_cases(), ids=_case_id)
def test_the_writers_write_what_the_codec_and_msgpack_write(msg: Any) -> None:
    assert _packed(pack, msg) == _packed(frames.pack_general, msg)
    written = frames.WRITERS[type(msg)](msg)
    if written is not None:
        assert written == frames.pack_general(msg)
    # the commonest frames are written (a writer that gave up on everything saves nothing)
    assert (written is not None) == _commonest(msg)


def test_written_frames_read_back() -> None:
    for msg in _write_cases():
        try:
            payload = frames.pack_general(msg)
        except Exception:
            continue
        _same(payload)
