"""The replicated state machine's bytes: commands in log entries, answers, snapshot images.

Theory of operation
-------------------
Raft carries opaque bytes (:class:`kvcore.raft.Entry.data`); this module gives them a meaning.
Every encoding is a fixed binary layout built with :mod:`struct` (no pickle, no hash order), so
every replica decodes the same entry to the same command, and a malformed entry (which only a
bug could put in the log) raises :class:`ValueError` rather than being half-applied.

A **command** is one entry's data: ``kind`` (``R`` register a client session, ``P`` put, ``D``
delete), the leader's timestamp ``ts`` (thesis §6.3: session expiry runs on the leader's clock as
carried in the log, never a replica's own), the client id, its sequence number ``seq`` and
``acked`` (the lowest seq whose answer the client has not received), then the key and the value.
Empty data is the leader's no-op at the start of a term (§8) and is not a command.

An **answer** is what a session stores for ``(client, seq)`` and what a retry gets back: an error
code and its sentence ("" and "" for success).

An **image** (a snapshot's data, §7) is the session table and every key/value pair, in key order.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

REGISTER = b"R"
PUT = b"P"
DELETE = b"D"
KINDS = (REGISTER, PUT, DELETE)

_HEAD = struct.Struct(">cdHQQI")  # kind, ts, len(client), seq, acked, len(key)
_LEN = struct.Struct(">I")
IMAGE_MAGIC = b"SLR1"


@dataclass(frozen=True, slots=True)
class Command:
    kind: bytes
    ts: float
    client: str
    seq: int
    acked: int
    key: bytes = b""
    value: bytes = b""


def encode_command(c: Command) -> bytes:
    client = c.client.encode()
    return _HEAD.pack(c.kind, c.ts, len(client), c.seq, c.acked, len(c.key)) + client + c.key + c.value


def decode_command(data: bytes) -> Command:
    if len(data) < _HEAD.size:
        raise ValueError(f"a command of {len(data)} bytes is shorter than its {_HEAD.size}-byte head")
    kind, ts, nclient, seq, acked, nkey = _HEAD.unpack_from(data)
    if kind not in KINDS:
        raise ValueError(f"unknown command kind {kind!r}")
    at = _HEAD.size
    if at + nclient + nkey > len(data):
        raise ValueError("a command's client id and key run past its end")
    client = data[at:at + nclient].decode()
    key = data[at + nclient:at + nclient + nkey]
    return Command(kind, ts, client, seq, acked, key, data[at + nclient + nkey:])


def encode_answer(code: str, message: str) -> bytes:
    return code.encode() + b"\0" + message.encode()


def decode_answer(data: bytes) -> tuple[str, str]:
    code, _, message = data.partition(b"\0")
    return code.decode(), message.decode()


def encode_image(sessions: bytes, items: list[tuple[bytes, bytes]]) -> bytes:
    parts = image_head(sessions, len(items))
    for k, v in items:
        add_pair(parts, k, v)
    return b"".join(parts)


def image_head(sessions: bytes, count: int) -> list[bytes]:
    """An image's first parts: the magic, the session table and the number of pairs (the pairs
    follow, :func:`add_pair` each; ``b"".join`` makes the image)."""
    return [IMAGE_MAGIC, _LEN.pack(len(sessions)), sessions, _LEN.pack(count)]


def add_pair(parts: list[bytes], k: bytes, v: bytes) -> None:
    parts += [_LEN.pack(len(k)), k, _LEN.pack(len(v)), v]


def decode_image(data: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    try:
        return _decode_image(data)
    except struct.error as e:
        raise ValueError(f"a state-machine image is truncated ({e})") from None


def _decode_image(data: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    if not data.startswith(IMAGE_MAGIC):
        raise ValueError("a state-machine image must start with " + IMAGE_MAGIC.decode())
    view = memoryview(data)
    at = len(IMAGE_MAGIC)

    def chunk() -> bytes:
        nonlocal at
        (n,) = _LEN.unpack_from(view, at)
        at += _LEN.size
        if at + n > len(data):
            raise ValueError("a state-machine image is truncated")
        out = bytes(view[at:at + n])
        at += n
        return out

    sessions = chunk()
    (count,) = _LEN.unpack_from(view, at)
    at += _LEN.size
    items = [(chunk(), chunk()) for _ in range(count)]
    if at != len(data):
        raise ValueError("a state-machine image has trailing bytes")
    return sessions, items
