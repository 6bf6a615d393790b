"""storelab's linearizability checker for key-value and register histories.

Theory of operation
-------------------
A history (``invoke``/``ok``/``fail``/``info`` events, :mod:`checker.history`) is paired
into operations, each compiled against a sequential specification (:mod:`checker.models`),
split by key (linearizability is local: Herlihy & Wing 1990), stripped of the unknown writes
no read observes (:mod:`checker.prepass`), and each key searched with the
Wing & Gong (1993) depth-first search plus Lowe's (2017) memo of ``(linearized set, state)``,
as Porcupine implements it (:mod:`checker.search`). A violation is shrunk to a short,
sound witness (:mod:`checker.witness`); a search that runs past its time budget answers
``unknown``, which reports call *undecided* (:func:`verdict_text`: "unknown" is left to mean an
operation's outcome).

Typical use::

    from checker import check, read_history

    history = read_history("run.jsonl")
    result = check(history.ops, model="kv", timeout=10.0)
    if result.verdict == "not_linearizable":
        for op in result.witness:
            print(op.describe())

From the shell: ``python -m checker FILE`` (see :mod:`checker.__main__`).

Beside histories, :class:`RaftProperties` (:mod:`checker.raftprops`) judges a Raft run: fed
plain node events as they happen, it checks the five properties of the Raft paper's Figure 3.

References: M. Herlihy, J. Wing, "Linearizability: a correctness condition for concurrent
objects", TOPLAS 12(3), 1990. J. Wing, C. Gong, "Testing and verifying concurrent objects",
JPDC 17, 1993. G. Lowe, "Testing for linearizability", CCPE 29(4), 2017. A. Horn,
D. Kroening, "Faster linearizability checking via P-compositionality", FORTE 2015.
A. Athalye, Porcupine, github.com/anishathalye/porcupine.
"""

from checker.checker import (
    LINEARIZABLE,
    NOT_LINEARIZABLE,
    UNKNOWN,
    VERDICT_WORDS,
    CheckResult,
    KeyResult,
    Verdict,
    check,
    verdict_text,
)
from checker.history import (
    FORMATS,
    History,
    HistoryFormatError,
    Op,
    detect_format,
    events_to_ops,
    ops_to_events,
    parse_history,
    read_history,
    write_jsonl,
)
from checker.models import KV, MODELS, REGISTER, Model, ModelError, detect_model, get_model
from checker.raftprops import RaftProperties, RaftViolation
from checker.witness import Counterexample

__all__ = [
    "FORMATS",
    "KV",
    "LINEARIZABLE",
    "MODELS",
    "NOT_LINEARIZABLE",
    "REGISTER",
    "UNKNOWN",
    "VERDICT_WORDS",
    "CheckResult",
    "Counterexample",
    "History",
    "HistoryFormatError",
    "KeyResult",
    "Model",
    "ModelError",
    "Op",
    "RaftProperties",
    "RaftViolation",
    "Verdict",
    "check",
    "detect_format",
    "detect_model",
    "events_to_ops",
    "get_model",
    "ops_to_events",
    "parse_history",
    "read_history",
    "verdict_text",
    "write_jsonl",
]
