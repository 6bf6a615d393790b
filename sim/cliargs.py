"""Checks the sim's command lines make before they run anything.

A flag that names an output (``--history FILE``, ``--out DIR``) is tried before the run, not
after it: a run of minutes that ends in a traceback because its output cannot be written loses
the run. Each check returns ``""`` when all is well, else one sentence that begins with the path,
for ``parser.error(f"--out {problem}")`` (exit status 2).
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

#: the longest run a command line takes, in simulated seconds: a simulated day. A run's cost grows
#: with its simulated time (about 0.6 CPU s per 1,000 simulated seconds for the default five
#: nodes, idle or not), so ``--duration 1e9`` ran for days of CPU with no output; a day costs
#: about a minute.
MAX_DURATION = 86_400.0


#: ``--read-mode``'s choices: kvcore.replica.ReplicaConfig.read_only's values
READ_MODES = ("safe", "lease")


def read_mode_problems(mode: str, replicas: int) -> list[str]:
    """What is wrong with ``--read-mode MODE`` on a run of ``replicas`` (a sentence each)."""
    if mode not in READ_MODES:
        return [f"--read-mode must be safe (a heartbeat round confirms the leader for each batch of "
                f"reads) or lease (the leader's lease does, while it holds), not {mode!r}."]
    if mode != "safe" and replicas <= 1:
        return [f"--read-mode {mode} is how a Raft group's leader answers reads: it needs --replicas "
                "above 1 (an unreplicated node answers from its own copy)."]
    return []


def default_nodes(nodes: int | None, replicas: int, fallback: int) -> int:
    """``--nodes`` as given, else as many as ``--replicas`` asks for (R > 1), else ``fallback``."""
    if nodes is not None:
        return nodes
    return replicas if replicas > 1 else fallback


def finite(*xs: float) -> bool:
    """Every one of ``xs`` is a finite number (not NaN, not infinite)."""
    return all(math.isfinite(x) for x in xs)


def writable_dir(path: str | os.PathLike[str]) -> str:
    """Make the directory ``path`` (and its parents) if need be and write a scratch file in it;
    ``""`` if that worked, else why not."""
    d = Path(path)
    if d.exists() and not d.is_dir():
        return f"{str(d)!r} is a file, not a directory."
    try:
        d.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=d):
            pass
    except OSError as e:
        return f"{str(d)!r}: cannot write files there ({e.strerror or e})."
    return ""


def writable_file(path: str | os.PathLike[str]) -> str:
    """Open the file ``path`` for appending (which creates it, and changes no byte of a file
    that exists), then close it again and remove it if it was not there before; ``""`` if that
    worked, else why not."""
    p = Path(path)
    if p.is_dir():
        return f"{str(p)!r} is a directory, not a file."
    existed = os.path.lexists(p)
    try:
        with open(p, "a", encoding="utf-8"):
            pass
    except OSError as e:
        return f"{str(p)!r}: cannot write it ({e.strerror or e})."
    if not existed:
        try:
            p.unlink()
        except OSError:
            pass
    return ""
