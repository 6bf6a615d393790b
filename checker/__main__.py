"""Command line: ``python -m checker FILE [FILE ...] [--model M] [--format F] [--timeout S]
[--all-keys] [--no-prepass] [--json]``.

Theory of operation
-------------------
Read the history (format detected from the first line unless ``--format``; model from the
format, else from the operation names, unless ``--model``), run :func:`checker.check`,
print the verdict, the witness of a violation and the time taken. Several files are checked
one after another in the same process (``--timeout`` is the budget of each), their reports
separated by a blank line (or one JSON line each with ``--json``). ``--no-prepass`` turns off
the pre-pass that drops unknown writes nothing reads (:mod:`checker.prepass`), to measure it;
the verdict is the same either way.

Exit status (so that scripts can branch on it; 2 is *not* argparse's usage error here; for
several files, the most serious of theirs: 3, then 1, then 2, then 0):

== =====================================================================================
0  linearizable
1  not linearizable (the witness is printed)
2  undecided: the time budget (``--timeout``, default 60 s) ran out first (``"verdict":
   "unknown"`` in ``--json``)
3  bad usage, unreadable file, malformed history or an operation the model does not know
   (a message on stderr names the line; with ``--json`` the file also gets a line
   ``{"file", "verdict": "error", "error"}``)
== =====================================================================================
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from checker.checker import LINEARIZABLE, NOT_LINEARIZABLE, UNKNOWN, CheckResult, check, verdict_text
from checker.history import FORMATS, HistoryFormatError, Op, read_history, thaw
from checker.models import MODELS, Model, ModelError, detect_model, get_model

EXIT_LINEARIZABLE = 0
EXIT_NOT_LINEARIZABLE = 1
EXIT_UNKNOWN = 2
EXIT_ERROR = 3
#: not verdicts: Ctrl-C, and stdout closed by its reader (128 + the signal, as shells report them)
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141

PROG = "python -m checker"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Check a history of a register or key-value store for linearizability.",
        epilog="exit status: 0 linearizable, 1 not linearizable, 2 undecided (time budget ran out), "
        "3 usage or input error. The history formats are described in checker/history.py "
        "(python -c 'import checker.history as h; help(h)').",
    )
    parser.add_argument(
        "files", nargs="+", metavar="FILE", help="history files, each checked on its own"
    )
    parser.add_argument(
        "--model", choices=sorted(MODELS), help="sequential specification (default: detected)"
    )
    parser.add_argument(
        "--format", choices=FORMATS, help="history format (default: detected from the content)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="give up, undecided, after this long (default 60; 0 gives up at once)",
    )
    parser.add_argument(
        "--all-keys",
        action="store_true",
        help="settle every key even after one is found not linearizable",
    )
    parser.add_argument(
        "--no-prepass",
        dest="prepass",
        action="store_false",
        help="search every unknown write, even those no read observes (same verdict, slower)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; output into a closed pipe (``... | head``) ends it quietly with status
    141 (128 + SIGPIPE), Ctrl-C with 130: never a traceback (the Python documentation's note on
    SIGPIPE: catch BrokenPipeError and point stdout at devnull for the flush at exit)."""
    try:
        status = _main(argv)
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if not args.timeout >= 0:  # (NaN too)
        print(f"{PROG}: error: --timeout must be a number of seconds >= 0", file=sys.stderr)
        return EXIT_ERROR
    statuses = []
    for i, path in enumerate(args.files):
        if i and not args.json:
            print()  # a blank line between the reports of several files
        statuses.append(check_file(path, args))
    return combined_status(statuses)


def combined_status(statuses: Sequence[int]) -> int:
    """One exit status for several files: the most serious, where a violation outranks an
    undecided one (a proof beats a timeout) and an input error outranks both."""
    for status in (EXIT_ERROR, EXIT_NOT_LINEARIZABLE, EXIT_UNKNOWN):
        if status in statuses:
            return status
    return EXIT_LINEARIZABLE


def check_file(path: str, args: argparse.Namespace) -> int:
    """Check one history file, print its report (or its error on stderr), return its status."""
    try:
        history = read_history(path, args.format)
        if args.model is not None:
            model, model_source = get_model(args.model), "given"
        elif history.model is not None:
            model, model_source = get_model(history.model), "from the format"
        else:
            model, model_source = detect_model(history.ops), "detected"
        result = check(
            history.ops, model, args.timeout, exhaustive=args.all_keys, prepass=args.prepass
        )
    except OSError as exc:
        return _input_error(path, f"cannot read {path}: {exc.strerror}", args.json)
    except (HistoryFormatError, ModelError) as exc:
        return _input_error(path, str(exc), args.json)

    format_source = "given" if args.format else "detected"
    if args.json:
        print(json.dumps(result_to_json(result, path, history.format)))
    else:
        print(render(result, model, path, f"{history.format}, {format_source}", model_source,
                     all_keys=args.all_keys))
    sys.stdout.flush()  # several files: each report is out before the next search starts
    if result.verdict == LINEARIZABLE:
        return EXIT_LINEARIZABLE
    if result.verdict == NOT_LINEARIZABLE:
        return EXIT_NOT_LINEARIZABLE
    return EXIT_UNKNOWN


def render(result: CheckResult, model: Model, path: str, fmt: str, model_source: str,
           all_keys: bool = False) -> str:
    """The human-readable report (``all_keys``: every key was settled, each verdict is said)."""
    lines = [f"history:    {path} ({fmt})", f"model:      {model.name} ({model_source})"]
    keys = [k for k in result.keys if k is not None]
    unknown = sum(r.unknown_ops for r in result.keys.values())
    counted = sum(r.ops for r in result.keys.values())
    dropped = sum(r.dropped for r in result.keys.values())
    key_text = f", {len(keys)} key{'s' if len(keys) != 1 else ''}" if keys else ""
    dropped_text = (
        f"; {dropped} of those are writes no read observes, dropped before the search"
        " (a witness, shrunk from the whole history, may still list some)"
        if dropped
        else ""
    )
    lines.append(
        f"operations: {result.total_ops}{key_text}; {counted} constrain the order "
        f"({unknown} of them with unknown outcome{dropped_text})"
    )
    verdict = verdict_text(result.verdict).upper()
    if result.verdict == UNKNOWN:
        settled = sum(1 for r in result.keys.values() if r.verdict != UNKNOWN)
        verdict += f" (time budget ran out; {settled} of {len(result.keys)} keys settled)"
    lines.append(f"verdict:    {verdict}")
    if all_keys and len(keys) > 1:
        lines.append(f"keys:       {_key_verdicts(result)}")
    ce = result.counterexample
    if ce is not None:
        where = "" if ce.key is None else f" on key {ce.key!r}"
        count = "this operation" if len(ce.ops) == 1 else f"these {len(ce.ops)} operations"
        lines.append(f"witness:    {count}{where} cannot be linearized")
        if ce.skipped:
            states = " or ".join(_cut(model.describe_state(s)) for s in ce.start_states)
            holder = "the register" if ce.key is None else "the key"
            lines.append(
                f"            starting from {states}: what {holder} may hold after the "
                f"{ce.skipped} operations completed before them"
            )
        else:
            lines.append(
                "            starting from the initial state, "
                + _cut(model.describe_state(ce.start_states[0]))
            )
        lines.extend("            " + row for row in _table(ce.ops, ce.pending, ce.culprit))
        lines.append("            ! = the culprit: once it returned, no order works")
        if ce.pending:
            lines.append(
                "            ? = outcome unknown (or known only after the culprit returned): "
                "it may take effect\n                at any time after its call, or never"
            )
        if not ce.minimal:
            lines.append("            (time ran out while shrinking: not minimal, still a proof)")
    lines.append(f"time:       {result.elapsed:.3f} s")
    return "\n".join(lines)


def _table(ops: Sequence[Op], pending: Sequence[Op], culprit: Op) -> list[str]:
    pending_ids = {id(op) for op in pending}
    rows = [("", "process", "f", "value", "result", "call", "return", "line")]
    for op in ops:
        mark = "!" if op is culprit else "?" if id(op) in pending_ids else ""
        value = "" if op.f in ("read", "get") else _show(op.value)
        if op.status == "unknown":
            outcome = "unknown"
        elif id(op) in pending_ids:
            outcome = f"({op.status}, later)"
        elif op.status == "fail":
            outcome = "fail"
        elif op.f in ("read", "get"):
            outcome = _show(op.output)
        else:
            outcome = "ok"
        rows.append(
            (
                mark,
                str(op.process),
                op.f if op.key is None else f"{op.f} {op.key!r}",
                value,
                outcome,
                f"{op.call:g}",
                "-" if op.ret is None else f"{op.ret:g}",
                "" if op.line is None else str(op.line),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]


#: longest value a witness's table shows whole (a longer one is cut, its length said)
SHOW_MAX = 120

#: keys named per verdict in the report's ``keys:`` line (the rest counted)
KEYS_NAMED = 10


def _key_verdicts(result: CheckResult) -> str:
    """How many keys got each verdict, naming the first few of each verdict (sorted)."""
    parts = []
    for verdict in (NOT_LINEARIZABLE, UNKNOWN, LINEARIZABLE):
        names = sorted(repr(k) for k, r in result.keys.items() if k is not None and r.verdict == verdict)
        if not names:
            continue
        shown = ", ".join(names[:KEYS_NAMED]) + (f" and {len(names) - KEYS_NAMED} more" if len(names) > KEYS_NAMED else "")
        parts.append(f"{len(names)} {verdict_text(verdict)} ({shown})")
    return "; ".join(parts)


def _show(value: Any) -> str:
    """A value as JSON writes it, cut (:func:`_cut`)."""
    return _cut(json.dumps(thaw(value)))


def _cut(text: str) -> str:
    """``text`` whole up to SHOW_MAX characters; a longer one cut there, its length said (a
    witness holding a 20 MiB value printed 60 MB)."""
    if len(text) > SHOW_MAX:
        return f"{text[:SHOW_MAX]}... ({len(text):,} characters)"
    return text


def _input_error(path: str, message: str, as_json: bool) -> int:
    """A file that could not be checked: the sentence on stderr, and with ``--json`` a line of
    its own too (``"verdict": "error"``), so that every file given has its JSON line."""
    print(f"{PROG}: {message}", file=sys.stderr)
    if as_json:
        print(json.dumps({"file": path, "verdict": "error", "error": message}))
    return EXIT_ERROR


def result_to_json(result: CheckResult, path: str, fmt: str) -> dict[str, Any]:
    ce = result.counterexample
    return {
        "file": path,
        "format": fmt,
        "model": result.model,
        "verdict": result.verdict,
        "elapsed": result.elapsed,
        "operations": result.total_ops,
        "dropped": sum(r.dropped for r in result.keys.values()),
        "keys": [
            {
                "key": thaw(r.key),
                "verdict": r.verdict,
                "ops": r.ops,
                "unknown_ops": r.unknown_ops,
                "dropped": r.dropped,
                "explored": r.explored,
                "elapsed": r.elapsed,
            }
            for r in result.keys.values()
        ],
        "witness": None
        if ce is None
        else {
            "key": thaw(ce.key),
            "start_states": [thaw(state) for state in ce.start_states],
            "skipped": ce.skipped,
            "minimal": ce.minimal,
            "culprit": _op_json(ce.culprit),
            "ops": [
                _op_json(op) | {"pending": any(op is p for p in ce.pending)} for op in ce.ops
            ],
        },
    }


def _op_json(op: Op) -> dict[str, Any]:
    return {
        "process": op.process,
        "f": op.f,
        "key": thaw(op.key),
        "value": thaw(op.value),
        "output": thaw(op.output),
        "status": op.status,
        "call": op.call,
        "ret": op.ret,
        "line": op.line,
    }


if __name__ == "__main__":
    sys.exit(main())
