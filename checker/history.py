"""Histories: operations, event files, and the three formats the checker reads.

Theory of operation
-------------------
A *history* is what clients saw: for every operation an ``invoke`` event and at most one
completion (``ok``, ``fail`` or ``info``), each stamped with the process that issued it and a
time. This is the shape of a Jepsen history (Kingsbury, "Jepsen: Knossos and linearizability",
and ``jepsen.history``), and the JSON-lines format below mirrors Jepsen's history maps so that
histories from any system can be written by hand or by a few lines of glue code.

Pairing events into operations follows Jepsen: a process has at most one outstanding operation;
its next completion closes it. An ``info`` completion, or no completion at all by the end of the
file, means the outcome is *unknown*: the operation may take effect at any instant after its
invocation, or never (Herlihy & Wing 1990 call these *pending* invocations; a checker may
complete them or drop them). The process may invoke again after an ``info``.

The checker works on :class:`Op` records (one per operation, with call and return times);
``ret=None`` marks an unknown outcome, which the search treats as returning at +infinity, as
Porcupine does (Athalye, github.com/anishathalye/porcupine, ``model.go``: "if the operation
didn't return, use math.MaxInt64").

JSON-lines format (``.jsonl``)
------------------------------
One JSON object per line (blank lines are ignored)::

    {"process": 0, "type": "invoke", "f": "put", "key": "x", "value": "1", "time": 0.10}
    {"process": 0, "type": "ok",     "f": "put", "key": "x", "value": "1", "time": 0.12}
    {"process": 1, "type": "invoke", "f": "get", "key": "x", "value": null, "time": 0.11}
    {"process": 1, "type": "ok",     "f": "get", "key": "x", "value": "1", "time": 0.13}

``process``
    int (``"nemesis"`` events, which Jepsen histories contain, are skipped).
``type``
    ``invoke``, ``ok``, ``fail`` or ``info``.
``f``
    the operation, e.g. ``read``/``write``/``cas`` (model ``register``) or
    ``get``/``put``/``append``/``delete``/``cas`` (model ``kv``).
``key``
    a string; absent (or null) for a history of a single register.
``value``
    the argument on ``invoke`` (null for reads; ``[from, to]`` for ``cas``), the value read on
    the ``ok`` of a read/get (null when empty/absent). Completions of other operations may
    repeat the argument; it is ignored.
``time``
    optional, in seconds. Either every event has one or none does; without times, the order of
    the lines is the real-time order and an event's line number serves as its time (so the
    times in a witness are line numbers). Events with equal times count as concurrent.

What a completion means is the model's business (:mod:`checker.models`): ``fail`` of a
``cas`` says the comparison failed, ``fail`` of anything else says it did not happen.

The other formats
-----------------
``jepsen-etcd``
    Jepsen log lines ``INFO  jepsen.util - 3<TAB>:ok<TAB>:read<TAB>4`` of a single register
    (read / write / cas), as in the etcd logs Porcupine tests with. Other lines are ignored.
``porcupine-kv``
    One EDN map per line, ``{:process 0, :type :ok, :f :get, :key "7", :value ""}``, as in
    Porcupine's ``test_data/kv`` files. In that format *every key starts as the empty string*
    while the ``kv`` model starts every key absent, so the reader adds, for every key, one
    synthetic ``put`` of ``""`` by process ``-1`` that completes before the first event (time
    ``-1``). The translation is exact and survives :func:`write_jsonl`.

Errors
------
Malformed input raises :class:`HistoryFormatError`, whose message names the file's line number
(1-based) and says what is wrong.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeAlias

Status: TypeAlias = Literal["ok", "fail", "unknown"]
Event: TypeAlias = dict[str, Any]
FormatName: TypeAlias = Literal["jsonl", "jepsen-etcd", "porcupine-kv"]

FORMATS: tuple[FormatName, ...] = ("jsonl", "jepsen-etcd", "porcupine-kv")
EVENT_TYPES = ("invoke", "ok", "fail", "info")
#: The process number of the synthetic operations that set a porcupine-kv key to "".
INITIAL_VALUE_PROCESS = -1


class HistoryFormatError(ValueError):
    """The history is malformed; the message names the line (or event) number."""

    def __init__(self, message: str, line: int | None = None, path: str | None = None) -> None:
        where = ""
        if path is not None:
            where = f"{path}:"
        if line is not None:
            where += f"{line}: " if path is not None else f"line {line}: "
        elif where:
            where += " "
        super().__init__(where + message)
        self.line = line
        self.path = path


@dataclass(frozen=True, slots=True)
class Op:
    """One operation of a history, as the checker sees it.

    ``value`` is the argument (``None`` for reads, a ``(from, to)`` tuple for ``cas``),
    ``output`` the result (the value a read returned, ``None`` otherwise). ``call`` and ``ret``
    are the invocation and completion times; ``ret is None`` means the outcome is unknown.
    ``status`` is ``"ok"``, ``"fail"`` or ``"unknown"``. ``line`` is the line (or 1-based event
    number) of the invocation in its source, when known.
    """

    process: int
    f: str
    key: str | None
    value: Any
    output: Any
    call: float
    ret: float | None
    status: Status
    line: int | None = None

    def __post_init__(self) -> None:
        if self.status == "unknown":
            if self.ret is not None:
                raise ValueError("an operation with an unknown outcome has ret=None")
        elif self.ret is None:
            raise ValueError(f"an operation with status {self.status!r} needs a return time")
        elif self.ret < self.call:
            raise ValueError(f"operation returns ({self.ret}) before it is called ({self.call})")

    def describe(self) -> str:
        """A one-line human description, e.g. ``p3 get('x') -> '1' [1.5, 2.0]``."""
        key = "" if self.key is None else repr(self.key)
        if self.f in ("read", "get"):
            args = key
        else:
            arg = thaw(self.value)
            args = f"{key}, {arg!r}" if key else repr(arg)
        if self.status == "unknown":
            outcome = " (outcome unknown)"
        elif self.status == "fail":
            outcome = " -> fail"
        elif self.f in ("read", "get"):
            outcome = f" -> {thaw(self.output)!r}"
        else:
            outcome = " -> ok"
        ret = "inf" if self.ret is None else _fmt_time(self.ret)
        return f"p{self.process} {self.f}({args}){outcome} [{_fmt_time(self.call)}, {ret}]"


def _fmt_time(t: float) -> str:
    return f"{t:g}"


# --------------------------------------------------------------------------------------------
# Events -> operations


class FrozenList(tuple):  # type: ignore[type-arg]
    """A JSON array, frozen (hashable): a tuple, equal to a tuple of equal items (so an
    ``Op.value`` still compares with one), never to a frozen object (``[["x", 1]]`` is not
    ``{"x": 1}``)."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, tuple) and type(other) is not FrozenDict and tuple.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    __hash__ = tuple.__hash__


class FrozenDict(tuple):  # type: ignore[type-arg]
    """A JSON object, frozen: its ``(name, value)`` pairs sorted by name; equal only to a frozen
    object of equal pairs."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return type(other) is FrozenDict and tuple.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash(("FrozenDict", tuple.__hash__(self)))


class JsonBool:
    """A JSON ``true`` or ``false``. Python's ``True == 1`` and ``False == 0`` (and ``hash``
    agrees), so a history that wrote ``true`` and read ``1`` would pass as linearizable if the
    values stayed Python booleans; JSON says they differ, and so does every store."""

    __slots__ = ("value",)

    def __init__(self, value: bool) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return type(other) is JsonBool and other.value == self.value

    def __hash__(self) -> int:
        return hash(("JsonBool", self.value))

    def __repr__(self) -> str:
        return "true" if self.value else "false"


#: how deep a value may nest (arrays and objects in one another): deeper is a malformed
#: history, refused with its line (a value nested thousands deep would exhaust the stack)
MAX_DEPTH = 64


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether ``value`` nests arrays and objects more than ``limit`` levels (iteratively)."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, list | tuple | dict):
            if depth > limit:
                return True
            stack.extend((x, depth + 1) for x in (v.values() if isinstance(v, dict) else v))
    return False


def freeze(value: Any) -> Any:
    """A JSON value as a hashable one that is ``==`` to another exactly when JSON says the two
    are equal: arrays and objects frozen (:class:`FrozenList`, :class:`FrozenDict`), booleans
    apart from numbers (:class:`JsonBool`); strings, numbers and null as they are (``1 == 1.0``,
    as JSON numbers). Model states are built of such values (the search memoises on them).
    Nesting is bounded by the parsers (:data:`MAX_DEPTH`)."""
    t = type(value)
    if t is bool:
        return JsonBool(value)
    if t is FrozenList or t is FrozenDict:
        return value  # frozen already
    if isinstance(value, list | tuple):  # (a tuple: an Op built in Python, a cas pair)
        return FrozenList(freeze(v) for v in value)
    if isinstance(value, dict):
        return FrozenDict(sorted((k, freeze(v)) for k, v in value.items()))
    return value


def thaw(value: Any) -> Any:
    """The JSON value that :func:`freeze` froze (for output: JSON lines, descriptions)."""
    if type(value) is JsonBool:
        return value.value
    if type(value) is FrozenDict:
        return {k: thaw(v) for k, v in value}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def events_to_ops(
    events: Iterable[Mapping[str, Any]],
    *,
    path: str | None = None,
    lines: Sequence[int] | None = None,
) -> list[Op]:
    """Pair invoke/completion event dicts (the JSON-lines objects) into :class:`Op` records.

    Events are validated as described in the module docstring; an error names the event's line
    (``lines[i]`` when given, else its 1-based position). The operations come back in the order
    of their invocations.
    """
    events = list(events)
    line_of = (lambda i: lines[i]) if lines is not None else (lambda i: i + 1)
    with_time = [i for i, e in enumerate(events) if e.get("time") is not None]
    for i in with_time:  # a time of the wrong type is that event's fault, not another's
        t = events[i]["time"]
        if not _is_number(t) or not math.isfinite(t):
            raise HistoryFormatError(f"'time' must be a finite number, got {t!r}", line_of(i), path)
    use_time = bool(with_time)
    if use_time and len(with_time) != len(events):
        missing = next(i for i, e in enumerate(events) if e.get("time") is None)
        raise HistoryFormatError(
            "this event has no 'time' but others do: give every event a time or none",
            line_of(missing),
            path,
        )

    pending: dict[int, tuple[int, Mapping[str, Any], float]] = {}
    slots: list[Op | None] = []  # in invocation order; filled in when the op completes
    slot_of: dict[int, int] = {}  # process -> index in slots of its pending op
    last_time = -math.inf
    for i, event in enumerate(events):
        line = line_of(i)
        if not isinstance(event, Mapping):
            raise HistoryFormatError(f"expected an object, got {type(event).__name__}", line, path)
        process = event.get("process")
        if process == "nemesis":
            continue
        if not isinstance(process, int) or isinstance(process, bool):
            raise HistoryFormatError(f"'process' must be an integer, got {process!r}", line, path)
        kind = event.get("type")
        if kind not in EVENT_TYPES:
            raise HistoryFormatError(
                f"'type' must be one of {', '.join(EVENT_TYPES)}; got {kind!r}", line, path
            )
        f = event.get("f")
        if not isinstance(f, str) or not f:
            raise HistoryFormatError(f"'f' must be a non-empty string, got {f!r}", line, path)
        key = event.get("key")
        if key is not None and not isinstance(key, str):
            raise HistoryFormatError(f"'key' must be a string, got {key!r}", line, path)
        value = event.get("value")
        if isinstance(value, list | dict) and _deeper_than(value, MAX_DEPTH):
            raise HistoryFormatError(f"'value' nests more than {MAX_DEPTH} levels deep", line, path)
        if use_time:
            t = event["time"]
            if not _is_number(t) or not math.isfinite(t):
                raise HistoryFormatError(f"'time' must be a finite number, got {t!r}", line, path)
            t = float(t)
            if t < last_time:
                raise HistoryFormatError(
                    f"time {t:g} is earlier than the previous event's ({last_time:g}); "
                    "events must be in time order",
                    line,
                    path,
                )
            last_time = t
        else:
            t = float(line)  # the order of the lines is the real-time order

        if kind == "invoke":
            if process in pending:
                earlier = pending[process][0]
                raise HistoryFormatError(
                    f"process {process} invokes {f!r} while its operation invoked on line "
                    f"{earlier} has not completed",
                    line,
                    path,
                )
            pending[process] = (line, event, t)
            slot_of[process] = len(slots)
            slots.append(None)
            continue

        if process not in pending:
            raise HistoryFormatError(
                f"'{kind}' completion of {f!r} by process {process}, which has no pending "
                "invocation",
                line,
                path,
            )
        inv_line, invoke, call = pending.pop(process)
        if invoke["f"] != f:
            raise HistoryFormatError(
                f"completion of {f!r} does not match the pending {invoke['f']!r} of process "
                f"{process} (line {inv_line})",
                line,
                path,
            )
        if invoke.get("key") != key and key is not None:
            raise HistoryFormatError(
                f"completion names key {key!r} but the invocation (line {inv_line}) names "
                f"{invoke.get('key')!r}",
                line,
                path,
            )
        slots[slot_of.pop(process)] = _make_op(invoke, event, kind, call, t, inv_line)

    for process, (inv_line, invoke, call) in pending.items():
        slots[slot_of[process]] = _make_op(invoke, None, "info", call, None, inv_line)
    return [op for op in slots if op is not None]


def _make_op(
    invoke: Mapping[str, Any],
    completion: Mapping[str, Any] | None,
    kind: str,
    call: float,
    ret: float | None,
    line: int,
) -> Op:
    f = invoke["f"]
    argument = freeze(invoke.get("value"))
    if argument is None and completion is not None and f not in ("read", "get"):
        argument = freeze(completion.get("value"))
    output = None
    if kind == "ok" and f in ("read", "get") and completion is not None:
        output = freeze(completion.get("value"))
    status: Status = "ok" if kind == "ok" else "fail" if kind == "fail" else "unknown"
    return Op(
        process=invoke["process"],
        f=f,
        key=invoke.get("key"),
        value=argument,
        output=output,
        call=call,
        ret=ret if status != "unknown" else None,
        status=status,
        line=line,
    )


def ops_to_events(ops: Iterable[Op]) -> list[Event]:
    """The inverse of :func:`events_to_ops`: invoke and completion events in time order.

    An unknown operation gets an ``info`` completion just before its process's next invocation
    (or at the end), so the events pair up again; the time of an ``info`` carries no meaning.
    """
    ops = sorted(ops, key=lambda o: o.call)
    # (time, rank, sequence, event, unknown op?) -- at equal times completions go before
    # invocations, except an instantaneous op's own completion, which must follow its invoke.
    timed: list[tuple[float, int, int, Event, bool]] = []
    for seq, op in enumerate(ops):
        base: Event = {"process": op.process, "f": op.f}
        if op.key is not None:
            base["key"] = op.key
        argument = thaw(op.value)
        is_read = op.f in ("read", "get")
        invoke = {**base, "type": "invoke", "value": None if is_read else argument}
        timed.append((op.call, 1, seq, invoke, op.ret is None))
        if op.ret is not None:
            value = thaw(op.output) if is_read else argument
            completion = {**base, "type": op.status, "value": value}
            timed.append((op.ret, 2 if op.ret == op.call else 0, seq, completion, False))
    timed.sort(key=lambda item: (item[0], item[1], item[2]))
    events: list[Event] = []
    outstanding: dict[int, Event] = {}  # process -> invocation of its unknown op
    for t, _, _, event, unknown in timed:
        process = event["process"]
        if event["type"] == "invoke" and process in outstanding:
            events.append({**outstanding.pop(process), "type": "info", "time": t})
        events.append({**event, "time": t})
        if unknown:
            outstanding[process] = event
    end = timed[-1][0] if timed else 0.0
    for earlier in outstanding.values():
        events.append({**earlier, "type": "info", "time": end})
    return [_ordered(e) for e in events]


_FIELD_ORDER = ("process", "type", "f", "key", "value", "time")


def _ordered(event: Mapping[str, Any]) -> Event:
    out: Event = {k: event[k] for k in _FIELD_ORDER if k in event}
    out.update({k: v for k, v in event.items() if k not in out})
    return out


# --------------------------------------------------------------------------------------------
# Files


def jsonl_text(events: Iterable[Mapping[str, Any] | Op]) -> str:
    """Event dicts (or :class:`Op` records, converted) as the text of a JSON-lines file, fields
    in the canonical order ``process, type, f, key, value, time``; tuples are written as arrays."""
    items: list[Any] = list(events)
    if items and isinstance(items[0], Op):
        items = ops_to_events(items)
    return "".join(json.dumps(_ordered(event), separators=(", ", ": ")) + "\n" for event in items)


def write_jsonl(events: Iterable[Mapping[str, Any] | Op], path: str | Path) -> None:
    """Write :func:`jsonl_text` of ``events`` to ``path``."""
    with open(path, "w", encoding="utf-8") as out:
        out.write(jsonl_text(events))


@dataclass(frozen=True, slots=True)
class History:
    """A history read from a file: its operations and what the file said about them."""

    ops: list[Op]
    format: FormatName
    #: the model the format implies (``None`` when the format does not say, as JSON lines)
    model: str | None
    path: str | None = None


def detect_format(text: str) -> FormatName:
    """Guess the format: from the first non-blank line, or, for a log whose first lines are
    something else, from the presence of Jepsen's ``jepsen.util`` lines."""
    for number, raw in enumerate(_lines(text), start=1):
        line = raw.strip()
        if not line:
            continue
        if "jepsen.util" in line:
            return "jepsen-etcd"
        if re.match(r"^\{\s*:", line):
            return "porcupine-kv"
        if line.startswith("{"):
            return "jsonl"
        if "jepsen.util" in text:
            return "jepsen-etcd"
        raise HistoryFormatError(
            "cannot tell the format from this line (expected a JSON object, an EDN map or a "
            "Jepsen 'jepsen.util' log line); give --format",
            number,
        )
    raise HistoryFormatError("the history is empty; cannot detect its format")


def read_history(path: str | Path, format: FormatName | None = None) -> History:
    """Read a history file in any of :data:`FORMATS` (detected from the content when omitted)."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise HistoryFormatError(f"not a UTF-8 text file ({exc.reason})", path=name) from exc
    if format is None:
        try:
            format = detect_format(text)
        except HistoryFormatError as exc:
            raise HistoryFormatError(str(exc), path=name) from None
    return parse_history(text, format, path=name)


def parse_history(text: str, format: FormatName, path: str | None = None) -> History:
    """Parse the text of a history in the given format."""
    if format == "jsonl":
        return History(parse_jsonl(text, path), "jsonl", None, path)
    if format == "jepsen-etcd":
        return History(parse_jepsen_etcd(text, path), "jepsen-etcd", "register", path)
    if format == "porcupine-kv":
        return History(parse_porcupine_kv(text, path), "porcupine-kv", "kv", path)
    raise ValueError(f"unknown format {format!r}; expected one of {', '.join(FORMATS)}")


def _lines(text: str) -> list[str]:
    """The lines of a history file: split at LF only (CRLF's CR dropped). ``str.splitlines``
    also splits at U+2028, U+0085 and other characters a JSON string may hold unescaped."""
    return [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]


def parse_jsonl(text: str, path: str | None = None) -> list[Op]:
    events: list[Any] = []
    lines: list[int] = []
    for number, raw in enumerate(_lines(text), start=1):
        if not raw.strip():
            continue
        try:
            event = json.loads(raw)
        except json.JSONDecodeError as exc:
            message = f"invalid JSON: {exc.msg} (column {exc.colno})"
            raise HistoryFormatError(message, number, path) from None
        except RecursionError:
            raise HistoryFormatError(f"a value nests more than {MAX_DEPTH} levels deep", number, path) from None
        if not isinstance(event, dict):
            raise HistoryFormatError(
                f"expected a JSON object, got {type(event).__name__}", number, path
            )
        events.append(event)
        lines.append(number)
    if not events:
        raise HistoryFormatError("the history has no events", path=path)
    return events_to_ops(events, path=path, lines=lines)


# Jepsen etcd logs: "INFO  jepsen.util - <process>\t:<type>\t:<f>\t<value>"
_JEPSEN_LINE = re.compile(r"jepsen\.util\s+-\s+(\S+)\s+:(\S+)\s+:(\S+)\s+(.*?)\s*$")


def parse_jepsen_etcd(text: str, path: str | None = None) -> list[Op]:
    events: list[Event] = []
    lines: list[int] = []
    for number, raw in enumerate(_lines(text), start=1):
        if "jepsen.util" not in raw:
            continue
        match = _JEPSEN_LINE.search(raw)
        if match is None:
            raise HistoryFormatError(
                "expected 'jepsen.util - PROCESS<TAB>:TYPE<TAB>:F<TAB>VALUE'", number, path
            )
        process_text, kind, f, value_text = match.groups()
        if process_text == ":nemesis" or process_text == "nemesis":
            continue
        try:
            process = int(process_text)
        except ValueError:
            message = f"process {process_text!r} is not an integer"
            raise HistoryFormatError(message, number, path) from None
        try:
            value = _parse_edn(value_text)
        except ValueError as exc:
            message = f"cannot parse value {value_text!r}: {exc}"
            raise HistoryFormatError(message, number, path) from None
        if isinstance(value, _Keyword):  # ":timed-out" and friends: no value
            value = None
        events.append({"process": process, "type": kind, "f": f, "value": value})
        lines.append(number)
    if not events:
        raise HistoryFormatError("no 'jepsen.util' lines: not a Jepsen log", path=path)
    return events_to_ops(events, path=path, lines=lines)


def parse_porcupine_kv(text: str, path: str | None = None) -> list[Op]:
    events: list[Event] = []
    lines: list[int] = []
    for number, raw in enumerate(_lines(text), start=1):
        if not raw.strip():
            continue
        try:
            parsed = _parse_edn(raw)
        except ValueError as exc:
            raise HistoryFormatError(f"cannot parse EDN map: {exc}", number, path) from None
        if not isinstance(parsed, dict):
            raise HistoryFormatError("expected an EDN map {:process ..., :type ...}", number, path)
        event = {k.name if isinstance(k, _Keyword) else k: v for k, v in parsed.items()}
        for field in ("type", "f"):
            if isinstance(event.get(field), _Keyword):
                event[field] = event[field].name
        if isinstance(event.get("process"), _Keyword):
            event["process"] = event["process"].name
        events.append(event)
        lines.append(number)
    if not events:
        raise HistoryFormatError("the history has no events", path=path)
    ops = events_to_ops(events, path=path, lines=lines)
    first = min(op.call for op in ops)
    keys = sorted({op.key for op in ops if op.key is not None})
    # Porcupine's kv model starts every key at "": say so with one put per key, before all else.
    initial = [
        Op(INITIAL_VALUE_PROCESS, "put", key, "", None, first - 1.0, first - 1.0, "ok", None)
        for key in keys
    ]
    return initial + ops


# --------------------------------------------------------------------------------------------
# A small EDN reader: enough for Jepsen/Porcupine history lines (maps, vectors, lists, strings,
# keywords, integers, floats, nil, true, false). Commas are whitespace in EDN.


@dataclass(frozen=True, slots=True)
class _Keyword:
    name: str


_EDN_TOKEN = re.compile(
    r"""\s*(?:
        (?P<open>[\[{(]) | (?P<close>[\]})]) |
        (?P<string>"(?:[^"\\]|\\.)*") |
        (?P<atom>[^\s,\[\]{}()"]+)
    )[\s,]*""",
    re.VERBOSE,
)
_CLOSER = {"[": "]", "{": "}", "(": ")"}


def _edn_tokens(text: str) -> Iterator[tuple[str, str]]:
    pos = 0
    text = text.strip().strip(",")
    while pos < len(text):
        match = _EDN_TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise ValueError(f"unexpected character {text[pos]!r} at column {pos + 1}")
        pos = match.end()
        kind = match.lastgroup
        assert kind is not None
        yield kind, match.group(kind)


def _parse_edn(text: str) -> Any:
    tokens = list(_edn_tokens(text))
    if not tokens:
        raise ValueError("empty")
    try:
        value, end = _edn_value(tokens, 0)
    except RecursionError:
        raise ValueError("a value nests too deeply") from None
    if end != len(tokens):
        raise ValueError("trailing text after the value")
    return value


def _edn_value(tokens: list[tuple[str, str]], i: int) -> tuple[Any, int]:
    if i >= len(tokens):
        raise ValueError("unexpected end of input")
    kind, text = tokens[i]
    if kind == "open":
        items: list[Any] = []
        i += 1
        while True:
            if i >= len(tokens):
                raise ValueError(f"unclosed {text!r}")
            if tokens[i][0] == "close":
                if tokens[i][1] != _CLOSER[text]:
                    raise ValueError(f"{text!r} closed by {tokens[i][1]!r}")
                i += 1
                break
            item, i = _edn_value(tokens, i)
            items.append(item)
        if text == "{":
            if len(items) % 2:
                raise ValueError("a map needs an even number of forms")
            try:
                return {items[j]: items[j + 1] for j in range(0, len(items), 2)}, i
            except TypeError as exc:
                raise ValueError("unhashable map key") from exc
        return items, i
    if kind == "close":
        raise ValueError(f"unexpected {text!r}")
    if kind == "string":
        return json.loads(text), i + 1  # EDN string escapes are a subset of JSON's
    return _edn_atom(text), i + 1


def _edn_atom(text: str) -> Any:
    if text == "nil":
        return None
    if text == "true":
        return True
    if text == "false":
        return False
    if text.startswith(":") and len(text) > 1:
        return _Keyword(text[1:])
    if re.fullmatch(r"[+-]?\d+N?", text):
        return int(text.rstrip("N"))
    if re.fullmatch(r"[+-]?(\d+\.\d*|\d*\.\d+|\d+)([eE][+-]?\d+)?M?", text):
        return float(text.rstrip("M"))
    raise ValueError(f"unsupported EDN form {text!r}")
