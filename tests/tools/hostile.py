"""Hostile peer input: byte streams that a stranger (or a broken peer) might send a peer port.

Theory of operation
-------------------
:func:`hostile_stream` draws one connection's worth of bytes from a ``random.Random``, so a
seed reproduces it: pure noise; a length prefix past any limit; msgpack of random structures
(maps that name a real message kind with fields of random types and sizes, integers past 2^64,
negative slots); a real message with one field replaced; a truncated frame; a handshake frame with
bad fields; a real frame sealed with a key the node does not hold; the issue's forged Alive
(``slots 0-16383, epoch 1000``) and ``Dead{incarnation: 2**64-1}`` behind a Hello. The suite
(``tests/kvwire/test_hostile_frames.py``, ``tests/realnet/test_hostile_peer.py``) runs a few
thousand through hypothesis; ``tests/tools/hostile_peer.py`` sends 10^5 to a live node.
"""

from __future__ import annotations

import random
import struct
from typing import Any

import msgpack  # type: ignore[import-untyped]

import kvwire
from kvcore.messages import (
    REGISTRY,
    Alive,
    Dead,
    Forward,
    Get,
    Gossip,
    Hello,
    MemberState,
    MigrateKeys,
    PushPull,
    Suspect,
    SwimPing,
)
from kvwire import auth

__all__ = ["EVIL_ALIVE", "HUGE_DEAD", "hostile_stream", "random_value", "sample_messages"]

EVIL_ALIVE = Alive(node="evil", incarnation=1, addr="127.0.0.1:1", peer_addr="127.0.0.1:2",
                   slots="0-16383", epoch=1000)
#: the issue's Dead{incarnation: 2**64-1}, as a raw map (the codec refuses to build it)
HUGE_DEAD = {"k": "Dead", "node": "p3", "incarnation": 2**64 - 1, "source": "p1"}
KINDS = sorted(REGISTRY)
FIELDS = ("node", "incarnation", "epoch", "slot", "slots", "addr", "peer_addr", "seq", "target",
          "gossip", "updates", "members", "request_id", "op", "key", "value", "keys", "values",
          "batch", "stored", "error", "reply", "join", "source", "state", "cluster", "node_id")


def sample_messages() -> list[Any]:
    """Valid messages of the kinds a node takes, to mutate."""
    return [
        Hello(node_id="b", cluster=""),
        Gossip(updates=(EVIL_ALIVE,)),
        Gossip(updates=(Suspect(node="a", incarnation=3, source="b"),
                        Dead(node="c", incarnation=2, source="b"))),
        SwimPing(seq=7, target="a", gossip=(EVIL_ALIVE,)),
        PushPull(join=True, reply=False, members=(
            MemberState(node="evil", incarnation=9, state="alive", addr="x:1", peer_addr="x:2",
                        slots="0-16383", epoch=99),)),
        Forward(request_id=1, op=Get(key=b"k")),
        MigrateKeys(batch=1, slot=5, keys=(b"k",), values=(b"v",)),
    ]


def random_value(rng: random.Random, depth: int = 0) -> Any:
    """A random msgpack-able value, with the extremes a decoder must refuse."""
    c = rng.randrange(12 if depth < 3 else 8)
    if c == 0:
        return rng.choice([0, 1, -1, 16383, 16384, 2**31, 2**63 - 1, 2**63, 2**64 - 1, -(2**63)])
    if c == 1:
        return rng.randint(-(2**63), 2**64 - 1)
    if c == 2:
        return rng.choice(["", "a", "evil", "0-16383", "\x00", "é" * rng.randrange(4), "x" * 300])
    if c == 3:
        return rng.randbytes(rng.randrange(40))
    if c == 4:
        return rng.choice([None, True, False, 1.5, float("nan"), float("inf")])
    if c == 5:
        return rng.choice(KINDS)
    if c == 6:
        return rng.choice(FIELDS)
    if c == 7:
        return rng.choice(["alive", "suspect", "dead", "left", "bogus"])
    if c in (8, 9):
        keys = (*FIELDS, "k")
        return {rng.choice(keys): random_value(rng, depth + 1) for _ in range(rng.randrange(6))}
    if c == 10:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(5))]
    return random_message_map(rng, depth + 1)


def random_message_map(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    """A map naming a real kind, with its fields (some missing, some of the wrong type)."""
    kind = rng.choice(KINDS)
    m = kvwire.unpack(kvwire.pack(rng.choice(sample_messages())))  # a real message's fields
    obj: dict[str, Any] = {"k": kind}
    for name in getattr(REGISTRY[kind], "__dataclass_fields__", {}):
        if rng.random() < 0.1:
            continue
        obj[name] = random_value(rng, depth) if rng.random() < 0.6 else getattr(m, name, 0)
    return obj


def _frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def _pack(obj: Any) -> bytes:
    try:
        return bytes(msgpack.packb(obj, use_bin_type=True))
    except (TypeError, ValueError, OverflowError):
        return b"\xc1"  # msgpack's never-used byte: what cannot be packed is sent as garbage


def hostile_stream(rng: random.Random, secret: auth.Keyring | None = None) -> bytes:
    """One connection's worth of hostile bytes. ``secret``: a keyring the node does NOT hold,
    for frames sealed with a wrong key."""
    c = rng.randrange(11)
    hello = kvwire.frame(Hello(node_id=rng.choice(["evil", "b", "x" * 40])))
    if c == 0:
        return rng.randbytes(rng.randrange(1, 300))
    if c == 1:
        return struct.pack(">I", rng.choice([2**32 - 1, 2**31, 9 * 1024 * 1024])) + rng.randbytes(8)
    if c == 2:
        return hello + _frame(_pack(random_value(rng)))
    if c == 3:
        return hello + _frame(_pack(random_message_map(rng)))
    if c == 4:
        return hello + kvwire.frame(Gossip(updates=(EVIL_ALIVE,))) + _frame(_pack(
            {"k": "Gossip", "updates": [HUGE_DEAD]}))
    if c == 5:
        data = hello + kvwire.frame(rng.choice(sample_messages()))
        return data[: rng.randrange(1, len(data))]  # truncated
    if c == 6:
        data = bytearray(hello + kvwire.frame(rng.choice(sample_messages())))
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    if c == 7:  # a handshake hello with random fields
        obj = {"auth": rng.choice(["hello", "proof", "challenge", "refused", "x"]),
               **{rng.choice(["v", "node", "cluster", "key", "nonce", "proof"]): random_value(rng)
                  for _ in range(rng.randrange(6))}}
        return _frame(_pack(obj))
    if c == 8 and secret is not None:  # a real handshake with a key the node does not hold
        return auth.ClientHandshake(secret, "evil").hello()
    if c == 9:  # a proof with no hello before it, and a sealed-looking frame
        return _frame(_pack({"auth": "proof", "proof": rng.randbytes(32)})) + _frame(
            kvwire.pack(Gossip(updates=(EVIL_ALIVE,))) + rng.randbytes(auth.TAG_BYTES))
    return b"".join(_frame(_pack(random_value(rng))) for _ in range(rng.randrange(1, 5)))
