"""Differential fuzz: codec.decode (generated fast decoder, then the checker loop) against the
checker loop alone (_decode_slow), on random and mutated frames of every registered kind.

Both must accept the same inputs and give equal objects of the same exact types, or both raise
RemoteProtocolError with the same sentence; the fast decoder itself may only accept (with the
slow decoder's answer) or give up with _Fallback/KeyError/RecursionError.

STORELAB_FUZZ_SECONDS sets how long the timed run lasts (default: a short run)."""

from __future__ import annotations

import dataclasses
import os
import random
import time
import typing
from typing import Any

import msgpack  # type: ignore[import-untyped]

import kvcore.raft.messages  # noqa: F401  (registers the Raft kinds)
from kvcore import codec
from kvcore.errors import RemoteProtocolError
from kvcore.messages import REGISTRY

KINDS = sorted(REGISTRY)


def typed(v: Any) -> Any:
    """A structure that compares types exactly (True != 1, 1.0 != 1)."""
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return (type(v).__name__, tuple((f.name, typed(getattr(v, f.name))) for f in dataclasses.fields(v)))
    if isinstance(v, (tuple, list)):
        return (type(v).__name__, tuple(typed(x) for x in v))
    if isinstance(v, dict):
        return ("dict", tuple(sorted((repr(k), typed(x)) for k, x in v.items())))
    return (type(v).__name__, v)


def gen_value(rng: random.Random, tp: Any, name: str, depth: int) -> Any:
    if tp is int:
        lo, hi = codec.int_bounds(name)
        return rng.choice([lo, hi, rng.randint(lo, min(hi, 1000)), rng.randint(lo, hi)])
    if tp is str:
        return rng.choice(["", "n1", "alive", "x" * rng.randint(0, 20), "é"])
    if tp is bytes:
        return rng.randbytes(rng.randint(0, 8))
    if tp is bool:
        return rng.random() < 0.5
    if tp is float:
        return rng.random() * 100
    if tp is type(None):
        return None
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is tuple:
        return tuple(gen_value(rng, args[0], "", depth + 1) for _ in range(rng.randint(0, 3)))
    if origin is typing.Union or origin is types_union():
        return gen_value(rng, rng.choice(args), name, depth)
    return gen_message(rng, tp.__name__, depth + 1)


def types_union() -> Any:
    import types

    return types.UnionType


def gen_message(rng: random.Random, kind: str, depth: int = 0) -> Any:
    cls = REGISTRY[kind]
    hints = typing.get_type_hints(cls)
    vals = {f.name: gen_value(rng, hints[f.name], f.name, depth) for f in dataclasses.fields(cls)}
    return cls(**vals)


JUNK: list[Any] = [
    None, True, False, 0, 1, -1, 2**63 - 1, 2**63, 2**64 - 1, -(2**63), 16383, 16384, 1.5, 0.0,
    "", "x", "Get", b"", b"k", [], [1], {}, {"k": "Get"}, {"k": "Get", "key": b"a"},
    {"k": "Put", "key": b"a", "value": b"v"}, {"k": "Delete", "key": b"a"},
    {"k": "Reply", "value": None, "error": "", "message": ""}, {"k": "Nope"}, {"k": 1},
    {"k": b"Get", "key": b"a"}, {"k": "Alive"}, {"k": "ConfState", "voters": [], "learners": []},
]


def mutate(rng: random.Random, obj: Any, depth: int = 0) -> Any:
    """A random change somewhere in a plain (encoded) structure."""
    if isinstance(obj, dict):
        obj = dict(obj)
        keys = list(obj)
        r = rng.random()
        if r < 0.1 and keys:
            del obj[rng.choice(keys)]
        elif r < 0.2:
            obj["k"] = rng.choice([*KINDS, "", "nope", 3, None, b"Get"])
        elif r < 0.25:
            obj[rng.choice(["extra", "k", *keys])] = rng.choice(JUNK)
        elif keys:
            k = rng.choice(keys)
            v = obj[k]
            if rng.random() < 0.5 and isinstance(v, (dict, list, tuple)) and depth < 6:
                obj[k] = mutate(rng, v, depth + 1)
            elif rng.random() < 0.3:
                obj[k] = plain(gen_message(rng, rng.choice(KINDS)))
            else:
                obj[k] = rng.choice(JUNK)
        return obj
    if isinstance(obj, (list, tuple)):
        lst = list(obj)
        r = rng.random()
        if r < 0.3 and lst:
            i = rng.randrange(len(lst))
            lst[i] = mutate(rng, lst[i], depth + 1) if depth < 6 else rng.choice(JUNK)
        elif r < 0.5:
            lst.append(rng.choice(JUNK))
        elif r < 0.6 and lst:
            lst.pop()
        elif r < 0.8 and lst:
            lst[rng.randrange(len(lst))] = rng.choice(JUNK)
        else:
            lst.append(plain(gen_message(rng, rng.choice(KINDS))))
        return tuple(lst) if isinstance(obj, tuple) and rng.random() < 0.5 else lst
    return rng.choice(JUNK)


def plain(msg: Any) -> Any:
    return codec.encode(msg)


def wire(obj: Any) -> Any:
    """What a peer's bytes decode to (lists, not tuples; str map keys only)."""
    return msgpack.unpackb(msgpack.packb(obj), raw=False, strict_map_key=False)


def outcome(fn: Any, obj: Any) -> tuple[str, Any]:
    try:
        return ("ok", typed(fn(obj)))
    except RemoteProtocolError as e:
        return ("err", str(e))


def check_one(obj: Any) -> None:
    fast_exc: BaseException | None = None
    fast_val: Any = None
    if type(obj) is dict and type(obj.get("k")) is str:
        codec._SPECS.get(obj["k"]) or (obj["k"] in REGISTRY and codec._spec_for_kind(obj["k"]))
        spec = codec._SPECS.get(obj["k"])
        if spec is not None:
            try:
                fast_val = ("ok", typed(spec.fast(obj)))
            except (codec._Fallback, KeyError, RecursionError):
                pass
            except BaseException as e:  # anything else escapes decode
                fast_exc = e
    assert fast_exc is None, f"fast decoder raised {fast_exc!r} on {obj!r}"
    got = outcome(codec.decode, obj)
    want = outcome(codec._decode_slow, obj)
    assert got == want, f"decode differs from the checker loop on {obj!r}:\n {got}\n {want}"
    if fast_val is not None:
        assert fast_val == want, f"fast decoder accepted {obj!r} as {fast_val}, slow: {want}"


def run(seed: int, seconds: float, min_cases: int) -> int:
    rng = random.Random(seed)
    deadline = time.monotonic() + seconds
    n = 0
    while n < min_cases or time.monotonic() < deadline:
        kind = KINDS[n % len(KINDS)]
        obj: Any = plain(gen_message(rng, kind))
        if rng.random() < 0.5:
            obj = wire(obj)
        check_one(obj)
        for _ in range(rng.randint(1, 4)):
            obj = mutate(rng, obj)
        if type(obj) is not dict:
            obj = {"k": kind, "junk": obj}
        check_one(obj)
        try:
            check_one(wire(obj))
        except (TypeError, ValueError, OverflowError):
            pass  # not representable in msgpack
        n += 1
    return n


def test_fast_decoder_agrees_with_checker_loop() -> None:
    seconds = float(os.environ.get("STORELAB_FUZZ_SECONDS", "0"))
    run(seed=1, seconds=seconds, min_cases=3000)


def test_nested_kinds_and_optionals_fall_back_exactly() -> None:
    cases = [
        {"k": "Forward", "request_id": 1, "op": {"k": "Reply", "value": None, "error": "", "message": ""}},
        {"k": "Forward", "request_id": 1, "op": {"k": "Get"}},
        {"k": "Forward", "request_id": 1, "op": {"k": "Get", "key": "s"}},
        {"k": "Forward", "request_id": 1, "op": None},
        {"k": "ReplicaForward", "request_id": 1, "client": "c", "seq": 0, "acked": 0, "op": None},
        {"k": "ReplicaForward", "request_id": 1, "client": "c", "seq": 0, "acked": 0, "op": {"k": "Get", "key": b"a"}},
        {"k": "ForwardReply", "request_id": 1, "reply": {"k": "Reply", "value": "s", "error": "", "message": ""}},
        {"k": "ForwardReply", "request_id": 1, "reply": {"k": "Reply", "value": 1, "error": "", "message": ""}},
        {"k": "ForwardReply", "request_id": 1, "reply": {"k": "Reply", "value": b"x", "error": None, "message": ""}},
        {"k": "HardState", "term": 1, "vote": 3, "commit": 0},
        {"k": "HardState", "term": 1, "vote": None, "commit": -1},
        {"k": "RaftSnapshot", "term": 1, "src": "a", "dst": "b", "meta": {"k": "SnapshotMeta", "index": 1, "term": 1, "conf": {"k": "ConfState", "voters": ["a"], "learners": [1]}}, "offset": 0, "data": b"", "done": True},
        {"k": "Forward", "request_id": 1, "op": {"k": ["Get"], "key": b"a"}},
    ]
    for c in cases:
        check_one(c)
        check_one(wire(c))


if __name__ == "__main__":
    import sys

    secs = float(sys.argv[1]) if len(sys.argv) > 1 else 60
    total = 0
    for seed in range(int(sys.argv[2]) if len(sys.argv) > 2 else 1):
        total += run(seed, secs, 0)
    print("cases", total)
