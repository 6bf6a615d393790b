"""What the ``storelab`` commands share: exit statuses, the one voice, tables, the prompt.

Theory of operation
-------------------
:mod:`realnet.cli` (the key/value commands, ``main``) and :mod:`realnet.clustercli`
(``storelab cluster``) both speak through these: :func:`error` puts any message in the CLI's one
voice (``storelab: `` and a sentence, :func:`sentence`), the ``EXIT_*`` statuses are the same
for every command, :func:`table` prints columns, :func:`confirm` asks ``[y/N]``, and
``_node_arg`` and its kin parse the node addresses and ids arguments take. :mod:`realnet.cli`
re-exports them all.
"""


from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from typing import Any

from realnet.admin import Refused
from realnet.client import node_addr
from realnet.sentences import capitalized

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_ERROR = 2
#: interrupted (Ctrl-C): 128 + SIGINT, as a shell reports it
EXIT_INTERRUPTED = 130
#: output into a closed pipe: 128 + SIGPIPE, as a shell reports a program SIGPIPE stopped
EXIT_BROKEN_PIPE = 141


ADMIN_TOKEN_ENV = "STORELAB_ADMIN_TOKEN"
CLIENT_TOKEN_ENV = "STORELAB_CLIENT_TOKEN"


def token_from(args: argparse.Namespace, env: str) -> str | None:
    """The token ``--token-file FILE`` names (its text, surrounding whitespace removed), else the
    environment variable ``env``, else None. Raises ValueError with a sentence for a file that
    cannot be read or is empty."""
    path = getattr(args, "token_file", None)
    if path:
        try:
            with open(path, encoding="ascii") as f:
                token = f.read(64 * 1024).strip()
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"Cannot read the token file {path!r}: {getattr(e, 'strerror', None) or e}") from None
        if not token:
            raise ValueError(f"The token file {path!r} is empty")
        return token
    return os.environ.get(env, "").strip() or None


def sentence(text: str) -> str:
    """``text`` as one sentence: one line, one period at the end, and a capital first letter
    when it starts with a plain word of ours (:func:`realnet.sentences.capitalized`: a node id,
    a quote or a number at the start is left as it is; ids are case-sensitive)."""
    text = " ".join(text.split())
    if not text:
        return ""
    text = capitalized(text)
    return text if text.endswith((".", "?", "!")) else text + "."


def error(text: str) -> None:
    """One message on stderr in the CLI's one voice: ``storelab: Sentence.``"""
    print(f"storelab: {sentence(text)}", file=sys.stderr, flush=True)


def _node_arg(text: str) -> str:
    """A node's client address, ``HOST:PORT`` or ``http://HOST:PORT[/]``, as ``HOST:PORT``."""
    try:
        return node_addr(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


#: the longest ``--timeout`` taken, in seconds (per HTTP request: an hour is already generous;
#: a bound keeps deadlines computed from it inside what the platform's clocks and sockets take)
MAX_TIMEOUT = 3600.0


def seconds(text: str) -> float:
    """``--timeout SECONDS``: a positive, finite number of seconds, at most :data:`MAX_TIMEOUT`
    (argparse reports the ArgumentTypeError as a usage error, exit status 2)."""
    try:
        t = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if math.isnan(t) or t <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number of seconds")
    if t > MAX_TIMEOUT:
        raise argparse.ArgumentTypeError(f"{text!r} must be at most {MAX_TIMEOUT:g} seconds")
    return t


def _node_ref(text: str) -> str:
    """NODE: a member's id, or its address (a URL is taken as its address)."""
    return _node_arg(text) if "://" in text else text


def _node_refs(text: str) -> str:
    """NODE[,NODE...]: each one as :func:`_node_ref` takes it."""
    return ",".join(_node_ref(r.strip()) for r in text.split(","))


#: what a numeric cell holds when the value is unknown; it keeps the column right-aligned
UNKNOWN = "?"
#: what a numeric cell holds when the value does not apply (a node's RTT to itself)
NOT_APPLICABLE = "-"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Plain columns: text left-aligned, numbers right-aligned (a column of numbers stays
    right-aligned where a value is unknown: None or ``?``, shown as ``?``)."""

    def number(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool)

    numeric = [bool(rows) and any(number(r[i]) for r in rows)
               and all(number(r[i]) or r[i] is None or r[i] in (UNKNOWN, NOT_APPLICABLE) for r in rows)
               for i in range(len(headers))]
    cells = [[str(h) for h in headers],
             *[[(UNKNOWN if num else "") if v is None else str(v) for v, num in zip(r, numeric, strict=True)]
               for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(row, widths, numeric, strict=True)]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def say(text: str = "") -> None:
    print(text, flush=True)


def say_problems(problems: list[str]) -> bool:
    """``verify``'s report: one line per problem and their count; True when there were any."""
    for p in problems:
        say(f"problem: {p}")
    if problems:
        say(f"{len(problems)} problem{'s' if len(problems) != 1 else ''} found.")
    return bool(problems)


def confirm(args: argparse.Namespace, question: str) -> None:
    """Ask ``question [y/N]`` on stdin unless --yes; Refused (nothing changed) unless y."""
    if args.yes:
        return
    sys.stdout.write(f"{question} [y/N] ")
    sys.stdout.flush()
    answer = sys.stdin.readline()
    if not sys.stdin.isatty():
        sys.stdout.write(answer if answer.endswith("\n") else answer + "\n")
    if answer.strip().lower() not in ("y", "yes"):
        raise Refused("Declined; nothing was changed.")
