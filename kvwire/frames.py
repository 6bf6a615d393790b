"""Peer framing: messages as msgpack payloads behind a 4-byte big-endian length.

Moved here from ``realnet/wire.py`` (which still re-exports it) so that the sim can use it
without importing the real-network world.

Theory of operation
-------------------
A message becomes bytes in two steps: :func:`kvcore.codec.encode` turns it into a plain dict
(``{"k": kind, ...}``) and msgpack packs that dict (``use_bin_type=True``, so ``bytes`` and
``str`` stay distinct). :func:`pack` and :func:`unpack` give exactly what these two steps give
(:func:`pack_general`, :func:`unpack_general`); the sim calls them too, so both worlds carry the
same bytes and measure the same message sizes. The two frames of every forwarded request (the
Forward of a Get or a Put, the ForwardReply of a successful operation) are written and read
straight as bytes when they have the layout those steps give them ("The commonest frames"
below), a few operations where the two steps take a dict, generated code and msgpack's call;
tests/kvwire/test_frames_fast.py holds them to the two steps, byte for byte and message for
message.

On a TCP stream each payload is framed by its length as a 4-byte big-endian unsigned int
(:data:`HEADER`), as Redis Cluster's bus and most RPC systems do. :class:`FrameDecoder` turns an
arbitrary chunking of the stream back into messages. It checks a frame's length prefix as soon as
its 4 bytes arrive, so an oversized frame is refused before any of its body is buffered: a
peer cannot make a node hold more than ``max_frame + 4`` bytes (plus one read) per connection.

Everything a peer can send is either a message or a :class:`FrameError`: any msgpack error,
nesting too deep to decode, a payload that is not a map, and the codec's
:class:`~kvcore.errors.RemoteProtocolError` (unknown kind, missing field, wrong type) all become
``FrameError`` with a short ``reason`` (``"oversized"`` or ``"malformed"``, for counters; and
``"auth_failed"`` on an authenticated stream, :meth:`FrameDecoder.authenticate`) and a
sentence. The stream cannot be resynchronised after a bad frame, so the caller must close the
connection with that reason logged; a decoder that raised stays failed. Messages decoded from the
same ``feed`` before the bad frame are kept on the exception (``messages``) so a caller may
still deliver them.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import msgpack

from kvcore import codec
from kvcore.bounds import INT64_MAX
from kvcore.errors import RemoteProtocolError
from kvcore.messages import Forward, ForwardReply, Get, Put, Reply

__all__ = [
    "DEFAULT_MAX_FRAME",
    "ENCODERS",
    "WRITERS",
    "HEADER",
    "FrameDecoder",
    "FrameError",
    "frame",
    "pack",
    "pack_dict",
    "pack_general",
    "unpack",
    "unpack_general",
]

Message = Any  # any kvcore.messages class; kvcore has no common base class

HEADER = struct.Struct(">I")
DEFAULT_MAX_FRAME = 8 * 1024 * 1024  # bytes of payload; the node config passes its own limit

# One module-level Packer (autoreset: each pack() returns fresh bytes) saves building a Packer per
# message. It is not reentrant across threads; storelab runs every node on one thread.
_packer = msgpack.Packer(use_bin_type=True)
_pack = _packer.pack
_unpackb = msgpack.unpackb
_encode = codec.encode
_decode = codec.decode
_unpack_header = HEADER.unpack_from
_pack_header = HEADER.pack

# What msgpack.unpackb raises on bad input: UnpackValueError/ExtraData/FormatError/StackError
# (ValueError and msgpack.UnpackException subclasses; UnicodeDecodeError is a ValueError) and
# TypeError for a map key it cannot hash. RecursionError: nesting deeper than Python can walk.
_UNPACK_ERRORS = (ValueError, TypeError, msgpack.UnpackException, RecursionError)


class FrameError(Exception):
    """A malformed or oversized frame; close the connection and log ``reason`` and the message.

    ``reason`` is a short token for counters (``"oversized"``, ``"malformed"``); ``str(err)`` is
    a sentence. ``messages`` holds what the same ``feed`` decoded before the bad frame.
    """

    def __init__(self, reason: str, detail: str, messages: list[Message] | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.messages: list[Message] = messages if messages is not None else []


#: a message class -> its encoder (kvcore.codec's table, filled as each kind is first encoded or
#: decoded): what codec.encode calls, looked up without the call to it
ENCODERS: dict[type, Callable[[Any], dict[str, Any]]] = codec.ENCODERS
#: the module Packer's ``pack`` (a plain dict to msgpack bytes)
pack_dict: Callable[[dict[str, Any]], bytes] = _pack


def pack(msg: Message) -> bytes:
    """The msgpack payload of a message (no length prefix). Raises on a non-message: a local bug."""
    writer = WRITERS.get(type(msg))
    if writer is not None:
        data = writer(msg)
        if data is not None:
            return data
    enc = ENCODERS.get(type(msg))
    payload: bytes = _pack(enc(msg) if enc is not None else _encode(msg))
    return payload


def pack_general(msg: Message) -> bytes:
    """:func:`pack` by the codec and msgpack alone, for every message (the reference the byte
    writers of the commonest frames are held to)."""
    payload: bytes = _pack(_encode(msg))
    return payload


def unpack(payload: bytes | bytearray | memoryview) -> Message:
    """The message in a payload; any malformed input raises :class:`FrameError`."""
    # The frames of every forwarded request, read straight from their bytes when they have
    # the shape the encoder gives them (see _forward_reply); anything else, the general path.
    if type(payload) is bytes:
        if payload.startswith(_FORWARD_REPLY_HEAD):
            msg = _forward_reply(payload)
            if msg is not None:
                return msg
        elif payload.startswith(_FORWARD_HEAD):
            msg = _forward(payload)
            if msg is not None:
                return msg
    return unpack_general(payload)


def unpack_general(payload: bytes | bytearray | memoryview) -> Message:
    """:func:`unpack` by msgpack and :func:`kvcore.codec.decode` alone, for every payload (the
    reference the byte readers of the commonest frames are held to)."""
    try:
        obj = _unpackb(payload, raw=False, strict_map_key=True)
    except _UNPACK_ERRORS as e:
        raise FrameError("malformed", f"payload is not valid msgpack: {e}") from None
    if type(obj) is not dict:
        raise FrameError("malformed", f"payload is a {type(obj).__name__}, not a map")
    try:
        return _decode(obj)
    except RemoteProtocolError as e:
        raise FrameError("malformed", f"payload is not a valid message: {e}") from None
    except RecursionError:
        raise FrameError("malformed", "payload is nested too deeply") from None


# --- the commonest frames, read from their bytes ---------------------------------------------
#
# A forwarded request is two frames: the Forward of a Get or a Put, and its ForwardReply (a
# Reply with no error, a value or none). Their payloads are always laid out as the encoder lays
# them out (codec.encode's keys in field order, msgpack's shortest forms), so each is a fixed
# run of bytes around its request id, key and value. _forward and _forward_reply read exactly
# those layouts: the message they return is the one msgpack and codec.decode give for the same
# bytes (every integer width msgpack may use, the id within INT64_MAX), and for any other
# payload (an error in the reply, a field out of place, a byte too many or too few) they return
# None and the general path decides, words every refusal included.
# tests/kvwire/test_frames_fast.py holds the two to the same messages.

_FORWARD_REPLY_HEAD = b"\x83\xa1k\xacForwardReply\xaarequest_id"
_FORWARD_HEAD = b"\x83\xa1k\xa7Forward\xaarequest_id"
#: after the id: the nested Reply up to its value
_REPLY_TO_VALUE = b"\xa5reply\x84\xa1k\xa5Reply\xa5value"
#: after the value: no error, no message (what every successful reply ends with)
_REPLY_OK_TAIL = b"\xa5error\xa0\xa7message\xa0"
#: after the id: the nested operation up to its key
_OP_PUT_TO_KEY = b"\xa2op\x83\xa1k\xa3Put\xa3key"
_OP_GET_TO_KEY = b"\xa2op\x82\xa1k\xa3Get\xa3key"
_VALUE_FIELD = b"\xa5value"
_FORWARD_REPLY_HEAD_LEN = len(_FORWARD_REPLY_HEAD)
_FORWARD_HEAD_LEN = len(_FORWARD_HEAD)
_REPLY_TO_VALUE_LEN = len(_REPLY_TO_VALUE)
_OP_TO_KEY_LEN = len(_OP_PUT_TO_KEY)
_VALUE_FIELD_LEN = len(_VALUE_FIELD)
_from_bytes = int.from_bytes
_make_reply = Reply._make  # type: ignore[attr-defined]
_make_forward_reply = ForwardReply._make  # type: ignore[attr-defined]
_make_forward = Forward._make  # type: ignore[attr-defined]
_make_put = Put._make  # type: ignore[attr-defined]
_make_get = Get._make  # type: ignore[attr-defined]
#: the Reply of a successful Put or Delete (messages are frozen: one serves every such reply)
_REPLY_OK = Reply()
_INT_WIDTHS = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}
_BIN_WIDTHS = {0xC4: 1, 0xC5: 2, 0xC6: 4}


def _uint(p: bytes, i: int) -> tuple[int, int]:
    """The msgpack unsigned int at ``p[i]`` (a positive fixint or uint 8 to 64) and where it
    ends; an end of -1 when there is none there, or it is over INT64_MAX (the codec's bound
    for every int but a slot)."""
    tag = p[i]
    if tag < 0x80:
        return tag, i + 1
    width = _INT_WIDTHS.get(tag)
    if width is None or i + 1 + width > len(p):
        return 0, -1
    v = _from_bytes(p[i + 1 : i + 1 + width])
    return v, (i + 1 + width if v <= INT64_MAX else -1)


def _bin(p: bytes, i: int) -> tuple[bytes, int]:
    """The msgpack bin at ``p[i]`` (bin 8, 16 or 32) and where it ends; an end of -1 when
    there is none there, whole."""
    if p[i] == 0xC4:  # bin 8: every key and value under 256 bytes
        start = i + 2
        end = start + p[i + 1]
    else:
        width = _BIN_WIDTHS.get(p[i])
        if width is None:
            return b"", -1
        start = i + 1 + width
        end = start + _from_bytes(p[i + 1 : start])
    if end > len(p):
        return b"", -1
    return p[start:end], end


# The two readers below read the id with _uint and each key and value with _bin. A payload cut
# short shows as a field out of place, an end of -1 or an end that is not the payload's (slices
# never raise; an index past the end is an IndexError, caught).


def _forward_reply(p: bytes) -> Message | None:
    """The ForwardReply of a successful operation in ``p`` (which starts with its head), or
    None for any other payload."""
    try:
        rid, i = _uint(p, _FORWARD_REPLY_HEAD_LEN)
        if i < 0:
            return None
        if not p.startswith(_REPLY_TO_VALUE, i):
            return None
        i += _REPLY_TO_VALUE_LEN
        tag = p[i]
        if tag == 0xC0:
            reply = _REPLY_OK
            i += 1
        else:
            value, j = _bin(p, i)
            if j < 0:
                return None
            reply = _make_reply(value, "", "")
            i = j
        if p[i:] != _REPLY_OK_TAIL:
            return None
        return _make_forward_reply(rid, reply)
    except IndexError:
        return None


def _forward(p: bytes) -> Message | None:
    """The Forward of a Get or a Put in ``p`` (which starts with its head), or None for any
    other payload."""
    try:
        rid, i = _uint(p, _FORWARD_HEAD_LEN)
        if i < 0:
            return None
        if p.startswith(_OP_PUT_TO_KEY, i):
            key, j = _bin(p, i + _OP_TO_KEY_LEN)
            if j < 0 or not p.startswith(_VALUE_FIELD, j):
                return None
            value, j = _bin(p, j + _VALUE_FIELD_LEN)
            if j != len(p):
                return None
            return _make_forward(rid, _make_put(key, value))
        if p.startswith(_OP_GET_TO_KEY, i):
            key, j = _bin(p, i + _OP_TO_KEY_LEN)
            if j != len(p):
                return None
            return _make_forward(rid, _make_get(key))
        return None
    except IndexError:
        return None


# --- the commonest frames, written as bytes ---------------------------------------------------
#
# The same two frames, written by formatting their bytes: the layout above, an id of 2^32 or
# more (msgpack's uint 64: request ids start at a random 48-bit offset), keys and values under
# 256 bytes (bin 8; a value under 64 KiB, bin 16). Anything else (a smaller id, a longer key, a
# bytearray, an error in the reply) is None, and the codec and msgpack write it.
# tests/kvwire/test_frames_fast.py holds the writers to pack_general's bytes.

_UINT64_MIN = 1 << 32
_UINT64_TOP = (1 << 64) - 1


def _write_forward(msg: Any) -> bytes | None:
    """The payload of a Forward of a Get or a Put, or None (see above)."""
    rid = msg.request_id
    if type(rid) is not int or not _UINT64_MIN <= rid <= _UINT64_TOP:
        return None
    op = msg.op
    t = type(op)
    if t is not Put and t is not Get:
        return None
    key = op.key
    if type(key) is not bytes or len(key) > 255:
        return None
    if t is Put:
        value = op.value
        if type(value) is not bytes or len(value) > 255:
            return None
        return b"%s\xcf%s%s\xc4%c%s%s\xc4%c%s" % (
            _FORWARD_HEAD, rid.to_bytes(8, "big"), _OP_PUT_TO_KEY, len(key), key, _VALUE_FIELD, len(value), value
        )
    return b"%s\xcf%s%s\xc4%c%s" % (_FORWARD_HEAD, rid.to_bytes(8, "big"), _OP_GET_TO_KEY, len(key), key)


def _write_forward_reply(msg: Any) -> bytes | None:
    """The payload of the ForwardReply of a successful operation, or None (see above)."""
    rid = msg.request_id
    r = msg.reply
    if (
        type(rid) is not int
        or not _UINT64_MIN <= rid <= _UINT64_TOP
        or type(r) is not Reply
        or type(error := r.error) is not str
        or error
        or type(message := r.message) is not str
        or message
    ):
        return None
    value = r.value
    if value is None:
        return b"%s\xcf%s%s\xc0%s" % (_FORWARD_REPLY_HEAD, rid.to_bytes(8, "big"), _REPLY_TO_VALUE, _REPLY_OK_TAIL)
    if type(value) is not bytes:
        return None
    n = len(value)
    if n < 256:
        return b"%s\xcf%s%s\xc4%c%s%s" % (
            _FORWARD_REPLY_HEAD, rid.to_bytes(8, "big"), _REPLY_TO_VALUE, n, value, _REPLY_OK_TAIL
        )
    if n < 65536:
        return b"%s\xcf%s%s\xc5%s%s%s" % (
            _FORWARD_REPLY_HEAD, rid.to_bytes(8, "big"), _REPLY_TO_VALUE, n.to_bytes(2, "big"), value, _REPLY_OK_TAIL
        )
    return None


#: a message class -> what writes its commonest payloads as bytes (None: the general path's)
WRITERS: dict[type, Callable[[Any], bytes | None]] = {Forward: _write_forward, ForwardReply: _write_forward_reply}


def frame(msg: Message) -> bytes:
    """Length prefix + payload, ready for a stream. The caller enforces its frame limit."""
    payload = pack(msg)
    return _pack_header(len(payload)) + payload


class FrameDecoder:
    """Incremental frame decoder for one connection: feed it bytes, get whole messages."""

    __slots__ = ("_buf", "_failed", "_max_frame", "_max_inner", "_open")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self._buf = bytearray()
        self._max_frame = max_frame
        #: the largest frame inside a sealed record (an authenticated bus)
        self._max_inner = max_frame
        self._failed: FrameError | None = None
        #: record body -> its frames, raising FrameError (an authenticated bus: kvwire.auth.Session)
        self._open: Callable[[Any], Any] | None = None

    def authenticate(self, open_frame: Callable[[Any], Any], tag_bytes: int) -> None:
        """From now on what arrives are sealed records: each body goes through ``open_frame``
        (which checks and strips a ``tag_bytes`` tag, or raises :class:`FrameError`), and what
        it returns holds one or more frames, each decoded as usual. A record may be as large
        as one largest frame with its prefix and the tag."""
        self._open = open_frame
        self._max_frame += 4 + tag_bytes

    def _unpack_record(self, frames: Any, out: list[Any], sized: bool) -> None:
        """Decode the frames of an opened record into ``out``; FrameError if they do not fill
        it exactly (a holder of the key sent something broken)."""
        n = len(frames)
        if n == 0:
            raise FrameError("malformed", "a sealed record holds no frame")
        pos = 0
        while pos < n:
            if n - pos < 4:
                raise FrameError("malformed", "a sealed record ends inside a frame's length prefix")
            (length,) = _unpack_header(frames, pos)
            if length > self._max_inner:
                raise FrameError(
                    "oversized", f"frame of {length} bytes exceeds the limit of {self._max_inner} bytes"
                )
            end = pos + 4 + length
            if end > n:
                raise FrameError("malformed", "a sealed record ends inside a frame")
            msg = unpack(frames[pos + 4 : end])
            out.append((msg, end - pos) if sized else msg)
            pos = end

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete frame."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Message]:
        """Messages completed by ``data``; raises :class:`FrameError` on the first bad frame."""
        return self._feed(data, False)

    def feed_sized(self, data: bytes | bytearray | memoryview) -> list[tuple[Message, int]]:
        """Like :meth:`feed`, with each message's frame size in bytes (4-byte prefix included)."""
        return self._feed(data, True)

    def _feed(self, data: bytes | bytearray | memoryview, sized: bool) -> list[Any]:
        if self._failed is not None:
            raise FrameError(self._failed.reason, f"decoder already failed: {self._failed}")
        buf = self._buf
        if buf:
            buf += data
            src: bytes | bytearray | memoryview = buf
        else:
            src = data  # common case: whole frames in one read, decoded without buffering
        out: list[Any] = []
        n = len(src)
        pos = 0
        max_frame = self._max_frame
        open_frame = self._open
        try:
            while n - pos >= 4:
                (length,) = _unpack_header(src, pos)
                if length > max_frame:
                    raise FrameError(
                        "oversized", f"frame of {length} bytes exceeds the limit of {max_frame} bytes"
                    )
                end = pos + 4 + length
                if end > n:
                    break
                # A slice copy is cheaper than a memoryview for the small frames that dominate,
                # and msgpack copies what it keeps anyway.
                body = src[pos + 4 : end]
                if open_frame is not None:
                    self._unpack_record(open_frame(body), out, sized)
                    pos = end
                    continue
                msg = unpack(body)
                out.append((msg, end - pos) if sized else msg)
                pos = end
        except FrameError as e:
            self._buf = bytearray()
            e.messages = [m for m, _ in out] if sized else out
            self._failed = e
            raise
        if src is buf:
            if pos:
                del buf[:pos]
        elif pos < n:
            buf += src[pos:]
        return out
