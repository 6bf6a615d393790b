"""The one codec: any message to a plain dict and back.

Theory of operation
-------------------
``encode(msg)`` gives ``{"k": kind, field: value, ...}`` where values are plain data (nested
messages become nested dicts, tuples stay tuples; msgpack turns them into arrays). ``decode(obj)``
is strict: an unknown kind, a missing field, or a value of the wrong type raises
:class:`~kvcore.errors.RemoteProtocolError` and nothing else, whatever the input (a peer may send
anything). Unknown extra fields are ignored so that a newer peer can add fields.

**Bounded integers.** Every ``int`` field is range-checked at decode: a slot (``slot``) must be
0..16383, every other integer (incarnations, epochs, request and batch ids, sequence numbers,
counts) 0..2^63-1 (:data:`INT64_MAX`, what every msgpack and every other language's int64 can
hold). A value outside raises :class:`~kvcore.errors.RemoteProtocolError` with a sentence, so
no number a peer sends can be accepted and then fail to be sent on; the membership and slot
rules keep a margin below the cap for the numbers they increment (``kvcore.bounds``).

Per-class field specs are compiled once, on first use, from the dataclass annotations. Supported
field types: ``str``, ``int``, ``float`` (an int is accepted and widened), ``bytes``, ``bool``,
``None``, ``X | None``, ``tuple[X, ...]``, a message class, and a union of message classes.

Two paths, one answer. Every message sent or received in both worlds goes through this module
(a forwarded request is four codec calls), so each spec also holds two functions generated from
its field list (as :mod:`kvcore.messages` generates ``__init__``): an encoder that is one dict
display (``{"k": kind, "f": m.f, ...}``: the same keys in the same order, so msgpack gives the
same bytes), and a *fast decoder* that reads each field, checks its exact type inline and builds
the message. The fast decoder only ever says yes: on anything it does not accept at once (a
missing field, a wrong type, an int for a float, a StrEnum, nesting too deep) it gives up
(:class:`_Fallback`), and :func:`decode` runs the general checker loop (:func:`_decode_slow`)
on the whole input, which widens, converts or raises the one precise error. So a decoded
message and every error sentence are what the checker loop alone gives.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Any

from kvcore.bounds import INT64_MAX
from kvcore.errors import RemoteProtocolError
from kvcore.messages import REGISTRY
from kvcore.slots import MAX_SLOT

KIND = "k"

_Check = Callable[[Any], Any]  # returns the converted value or raises RemoteProtocolError

#: int field name -> (lowest, highest) accepted; any other int field is 0..INT64_MAX
INT_BOUNDS: dict[str, tuple[int, int]] = {"slot": (0, MAX_SLOT)}
DEFAULT_INT_BOUNDS = (0, INT64_MAX)


def int_bounds(field: str) -> tuple[int, int]:
    """The range an int field must fall in on the wire."""
    return INT_BOUNDS.get(field, DEFAULT_INT_BOUNDS)


class _Fallback(Exception):
    """The fast decoder does not accept the input at once: run the checker loop instead."""


class _Spec:
    __slots__ = ("cls", "enc", "encoders", "fast", "fields", "kind", "make")

    def __init__(self, cls: type[Any]) -> None:
        self.cls = cls
        self.kind = cls.__name__
        hints = typing.get_type_hints(cls)
        fields = [f.name for f in dataclasses.fields(cls)]
        self.fields: tuple[tuple[str, _Check], ...] = tuple(
            (n, _checker(hints[n], n)) for n in fields
        )
        self.encoders: tuple[tuple[str, bool], ...] = tuple(
            (n, _may_hold_message(hints[n])) for n in fields
        )
        #: builds an instance from the field values in order (messages.py's positional maker)
        self.make: Callable[..., Any] = getattr(cls, "_make", None) or (
            lambda *vals: cls(**dict(zip(fields, vals, strict=True)))
        )
        #: msg -> plain dict, one dict display (see the module docstring)
        self.enc: Callable[[Any], dict[str, Any]] = _gen_encoder(self.kind, self.encoders)
        #: plain dict (kind already read) -> message, or raises _Fallback / KeyError
        self.fast: Callable[[dict[str, Any]], Any] = _gen_fast_decoder(
            self.kind, [(n, hints[n]) for n in fields], self.make
        )


_SPECS: dict[str, _Spec] = {}
#: a message class -> its spec's encoder, for the nested fields of generated encoders (filled
#: with _SPECS; a class not in it yet goes through _encode_value, which makes its spec)
_ENCODERS: dict[type, Callable[[Any], dict[str, Any]]] = {}
#: the same table, for a caller that encodes with a kind's encoder without the call to
#: :func:`encode` (kvwire's frames; a class missing from it goes through :func:`encode`)
ENCODERS = _ENCODERS


def _spec_for_kind(kind: str) -> _Spec:
    spec = _SPECS.get(kind)
    if spec is None:
        cls = REGISTRY.get(kind)
        if cls is None:
            raise RemoteProtocolError(f"unknown message kind {kind!r}")
        spec = _SPECS[kind] = _Spec(cls)
        _ENCODERS[cls] = spec.enc
    return spec


def _may_hold_message(tp: Any) -> bool:
    if isinstance(tp, type):
        return tp.__name__ in REGISTRY and REGISTRY[tp.__name__] is tp
    return any(_may_hold_message(a) for a in typing.get_args(tp))


def _fail(expected: str, value: Any) -> RemoteProtocolError:
    return RemoteProtocolError(f"expected {expected}, got {type(value).__name__}")


def _checker(tp: Any, name: str = "") -> _Check:
    if tp is str or tp is bytes:
        name = tp.__name__

        def check_exact(v: Any) -> Any:
            if type(v) is not tp:
                if tp is str and isinstance(v, str):
                    # a StrEnum (kvcore.states.State) is its text: an in-process roundtrip
                    # carries one, the wire never does; decode to the exact str
                    return str.__str__(v)
                raise _fail(name, v)
            return v

        return check_exact
    if tp is bool:

        def check_bool(v: Any) -> Any:
            if type(v) is not bool:
                raise _fail("bool", v)
            return v

        return check_bool
    if tp is int:
        lo, hi = int_bounds(name)

        def check_int(v: Any) -> Any:
            if type(v) is not int:
                raise _fail("int", v)
            if not lo <= v <= hi:
                raise RemoteProtocolError(f"{v} is out of range ({lo}..{hi})")
            return v

        return check_int
    if tp is float:

        def check_float(v: Any) -> Any:
            t = type(v)
            if t is float:
                return v
            if t is int:
                return float(v)
            raise _fail("float", v)

        return check_float
    if tp is type(None):

        def check_none(v: Any) -> Any:
            if v is not None:
                raise _fail("null", v)
            return None

        return check_none
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is tuple:
        if len(args) != 2 or args[1] is not Ellipsis:
            raise TypeError(f"codec supports tuple[X, ...] only, not {tp}")
        inner = _checker(args[0])

        def check_tuple(v: Any) -> Any:
            if type(v) not in (list, tuple):
                raise _fail("array", v)
            return tuple(inner(x) for x in v)

        return check_tuple
    if origin is typing.Union or origin is types.UnionType:
        allow_none = type(None) in args
        rest = [a for a in args if a is not type(None)]
        if all(isinstance(a, type) and REGISTRY.get(a.__name__) is a for a in rest):
            return _message_checker(frozenset(a.__name__ for a in rest), allow_none)
        if len(rest) == 1 and allow_none:
            inner = _checker(rest[0], name)  # (an int keeps its field's range: ``slot``'s too)

            def check_optional(v: Any) -> Any:
                return None if v is None else inner(v)

            return check_optional
        raise TypeError(f"codec does not support the union {tp}")
    if isinstance(tp, type) and tp.__name__ in REGISTRY and REGISTRY[tp.__name__] is tp:
        # A single message class. (Union[tp, tp] collapses to tp, so building the union
        # checker from it recursed forever.)
        return _message_checker(frozenset((tp.__name__,)), False)
    raise TypeError(f"codec does not support field type {tp!r}")


def _message_checker(kinds: frozenset[str], allow_none: bool) -> _Check:
    def check_message_union(v: Any) -> Any:
        if v is None and allow_none:
            return None
        if type(v) is not dict:
            raise _fail("message", v)
        kind = v.get(KIND)
        # type check first: an unhashable kind (a list, a map) would raise TypeError in `in`
        if type(kind) is not str or kind not in kinds:
            raise RemoteProtocolError(f"message kind {kind!r} not allowed here")
        return _decode_slow(v)

    return check_message_union


# --- the generated fast paths (see the module docstring) --------------------------------------

_SIMPLE = (str, bytes, int, bool, float)


def _gen_encoder(kind: str, encoders: tuple[tuple[str, bool], ...]) -> Callable[[Any], dict[str, Any]]:
    # A field that may hold a message (a nested Put in a Forward) takes its class's encoder
    # straight from _ENCODERS; anything else there (None, a tuple, a class whose spec is not
    # made yet) goes through _encode_value, which gives the same: tests/kvcore/test_codec.py
    # holds the two to the same dicts.
    items = [f"{KIND!r}: {kind!r}"] + [
        f"{n!r}: (_encs.get(type(m.{n})) or _ev)(m.{n})" if nested else f"{n!r}: m.{n}"
        for n, nested in encoders
    ]
    src = f"def enc(m):\n    return {{{', '.join(items)}}}\n"
    ns: dict[str, Any] = {"_ev": _encode_value, "_encs": _ENCODERS}
    exec(src, ns)  # generated from the dataclass's own field names, nothing else
    enc: Callable[[Any], dict[str, Any]] = ns["enc"]
    return enc


def _gen_fast_decoder(
    kind: str, fields: list[tuple[str, Any]], make: Callable[..., Any]
) -> Callable[[dict[str, Any]], Any]:
    ns: dict[str, Any] = {"_FB": _Fallback, "_make": make}
    lines = ["def fast(obj):"]
    for i, (name, tp) in enumerate(fields):
        lines.append(f"    v{i} = obj[{name!r}]")
        if tp is int:
            # exact type and in range; anything else is the checker loop's to word
            lo, hi = int_bounds(name)
            lines.append(f"    if type(v{i}) is not int or not {lo} <= v{i} <= {hi}: raise _FB")
        elif tp in _SIMPLE:
            # exact type only: bool is not an int, an int for a float and a StrEnum for a str
            # are the checker loop's to widen or convert
            ns[f"_t{i}"] = tp
            lines.append(f"    if type(v{i}) is not _t{i}: raise _FB")
        elif tp is type(None):
            lines.append(f"    if v{i} is not None: raise _FB")
        elif (simple := _optional_simple(tp)) is int:
            # int | None: in range too, as the checker loop asks
            lo, hi = int_bounds(name)
            lines.append(
                f"    if v{i} is not None and (type(v{i}) is not int or not {lo} <= v{i} <= {hi}): raise _FB"
            )
        elif simple is not None:
            # X | None for a simple X: _fast_checker's fast_optional over fast_exact, inline
            ns[f"_t{i}"] = simple
            lines.append(f"    if v{i} is not None and type(v{i}) is not _t{i}: raise _FB")
        elif (kinds := _message_kinds(tp)) is not None:
            # one or more message kinds (maybe None): _fast_message_checker's test, inline
            ns[f"_k{i}"], allow_none = kinds
            ns["_SPECS"] = _SPECS
            pad = "    "
            if allow_none:
                lines.append(f"    if v{i} is not None:")
                pad = "        "
            lines.append(f"{pad}if type(v{i}) is not dict: raise _FB")
            lines.append(f"{pad}s{i} = v{i}.get({KIND!r})")
            lines.append(f"{pad}if type(s{i}) is not str or s{i} not in _k{i}: raise _FB")
            lines.append(f"{pad}s{i} = _SPECS.get(s{i})")
            lines.append(f"{pad}if s{i} is None: raise _FB")
            lines.append(f"{pad}v{i} = s{i}.fast(v{i})")
        else:
            ns[f"_c{i}"] = _fast_checker(tp, name)
            lines.append(f"    v{i} = _c{i}(v{i})")
    lines.append(f"    return _make({', '.join(f'v{i}' for i in range(len(fields)))})")
    exec("\n".join(lines) + "\n", ns)  # generated from the dataclass's own field names
    fast: Callable[[dict[str, Any]], Any] = ns["fast"]
    return fast


def _optional_simple(tp: Any) -> type | None:
    """X for a field typed ``X | None`` with X one of the simple types, else None."""
    if typing.get_origin(tp) not in (typing.Union, types.UnionType):
        return None
    args = typing.get_args(tp)
    rest = [a for a in args if a is not type(None)]
    if len(args) == 2 and len(rest) == 1 and rest[0] in _SIMPLE:
        return rest[0]  # type: ignore[no-any-return]
    return None


def _message_kinds(tp: Any) -> tuple[frozenset[str], bool] | None:
    """(the kinds allowed, whether None is) for a field typed as message classes (maybe with
    None), as :func:`_fast_checker` would hand to :func:`_fast_message_checker`; else None."""
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        args = typing.get_args(tp)
        rest = [a for a in args if a is not type(None)]
        if rest and all(isinstance(a, type) and REGISTRY.get(a.__name__) is a for a in rest):
            return frozenset(a.__name__ for a in rest), type(None) in args
        return None
    name: str | None = getattr(tp, "__name__", None)
    if origin is None and name is not None and REGISTRY.get(name) is tp:
        return frozenset((name,)), False
    return None


def _fast_checker(tp: Any, name: str = "") -> _Check:
    """Like :func:`_checker`, for the fast decoder: the value as the checker loop would give it,
    or :class:`_Fallback` for anything that is not plainly right (an int out of its field's
    range included: the checker loop words that refusal)."""
    if tp is int:
        lo, hi = int_bounds(name)

        def fast_int(v: Any) -> Any:
            if type(v) is not int or not lo <= v <= hi:
                raise _Fallback
            return v

        return fast_int
    if tp in _SIMPLE:

        def fast_exact(v: Any) -> Any:
            if type(v) is not tp:
                raise _Fallback
            return v

        return fast_exact
    if tp is type(None):

        def fast_none(v: Any) -> Any:
            if v is not None:
                raise _Fallback
            return None

        return fast_none
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is tuple:
        inner = _fast_checker(args[0])

        def fast_tuple(v: Any) -> Any:
            if type(v) is not list and type(v) is not tuple:
                raise _Fallback
            return tuple([inner(x) for x in v])

        return fast_tuple
    if origin is typing.Union or origin is types.UnionType:
        allow_none = type(None) in args
        rest = [a for a in args if a is not type(None)]
        if all(isinstance(a, type) and REGISTRY.get(a.__name__) is a for a in rest):
            return _fast_message_checker(frozenset(a.__name__ for a in rest), allow_none)
        inner = _fast_checker(rest[0], name)

        def fast_optional(v: Any) -> Any:
            return None if v is None else inner(v)

        return fast_optional
    return _fast_message_checker(frozenset((tp.__name__,)), False)


def _fast_message_checker(kinds: frozenset[str], allow_none: bool) -> _Check:
    def fast_message(v: Any) -> Any:
        if v is None and allow_none:
            return None
        if type(v) is not dict:
            raise _Fallback
        kind = v.get(KIND)
        if type(kind) is not str or kind not in kinds:
            raise _Fallback
        spec = _SPECS.get(kind)
        if spec is None:
            raise _Fallback
        return spec.fast(v)

    return fast_message


def _encode_value(v: Any) -> Any:
    spec = _SPECS.get(type(v).__name__)
    if spec is not None and spec.cls is type(v):
        return spec.enc(v)
    if type(v).__name__ in REGISTRY and dataclasses.is_dataclass(v):
        return encode(v)
    if type(v) is tuple:
        return tuple(_encode_value(x) for x in v)
    return v


def encode(msg: Any) -> dict[str, Any]:
    """A message as a plain dict (``{"k": kind, ...fields}``)."""
    name = type(msg).__name__
    spec = _SPECS.get(name) or _spec_for_kind(name)
    return spec.enc(msg)


def decode(obj: Any) -> Any:
    """Rebuild a message from :func:`encode`'s output; raises RemoteProtocolError only."""
    if type(obj) is dict:
        kind = obj.get(KIND)
        if type(kind) is str:
            spec = _SPECS.get(kind)
            if spec is not None:
                try:
                    return spec.fast(obj)
                except (_Fallback, KeyError, RecursionError):
                    pass  # the checker loop gives the answer (see the module docstring)
    return _decode_slow(obj)


def _decode_slow(obj: Any) -> Any:
    """The checker loop: the reference decoder, and the one that words every error."""
    if type(obj) is not dict:
        raise RemoteProtocolError(f"a message is a map, got {type(obj).__name__}")
    kind = obj.get(KIND)
    if type(kind) is not str:
        raise RemoteProtocolError("message has no kind")
    spec = _spec_for_kind(kind)
    values: list[Any] = []
    for name, check in spec.fields:
        if name not in obj:
            raise RemoteProtocolError(f"{kind} is missing field {name!r}")
        try:
            values.append(check(obj[name]))
        except RemoteProtocolError as e:
            raise RemoteProtocolError(f"{kind}.{name}: {e}") from None
        except RecursionError:
            raise RemoteProtocolError(f"{kind}.{name}: nested too deeply") from None
    return spec.make(*values)


def roundtrip(msg: Any) -> Any:
    """decode(encode(msg)): what the sim does when the codec is on but bytes are not needed."""
    return decode(encode(msg))
