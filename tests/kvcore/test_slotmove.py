"""Data-driven tests of the slot-move procedure (kvcore.slotmove), in etcd-io/raft's testdata spirit.

Each file in ``testdata/slotmove/*.txt`` holds cases separated by blank lines. A case is a cluster
as an orchestrator observed it, one ``plan`` line, ``----``, and the steps the procedure must take
(``str(step)``, one per line)::

    # a comment (kept)
    map 0-99=a@1 100-16383=b@1          the default slot map of every node below
    node a alive mig 10-12>b keys 7     id, state, then its own runs (R=owner@epoch; any replaces
    node b alive imp 10-12<a            the default map), marks (mig R>target, imp R<source), keys R,
                                        stray R (keys held of slots it neither owns nor imports),
                                        left a,c (the members its own view holds as left; - none;
                                        absent: not observed)
    view a                              whose map is the cluster's (default: the first node)
    plan move 10-12 to b [from a] [drained R] [failures N] [retry] [chunk N] [refused SENTENCE]
    plan fix [assign]
    plan hints a,b,c                    a replicated cluster's voters (kvcore.slotmove.Hints)
    ----
    import b 10-12 from a

Rewrite mode: ``STORELAB_REWRITE=1 pytest tests/kvcore/test_slotmove.py`` writes the planner's
output back into the files as the expected text; review the diff like code.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kvcore.slotmove import (
    Fix,
    Hints,
    MoveSlots,
    NodeView,
    Progress,
    Snapshot,
    marked_twice,
    next_steps,
)
from kvcore.slots import parse_ranges, ranges_to_slots

DATA = Path(__file__).parent / "testdata" / "slotmove"
REWRITE = os.environ.get("STORELAB_REWRITE") == "1"


def slots(text: str) -> list[int]:
    return list(ranges_to_slots(parse_ranges(text)))


def run_of(tok: str) -> tuple[int, int, str | None, int]:
    rng, _, rest = tok.partition("=")
    owner, _, epoch = rest.rpartition("@")
    lo, _, hi = rng.partition("-")
    return int(lo), int(hi or lo), owner or None, int(epoch)


def parse_case(lines: list[str]) -> tuple[Snapshot, str]:
    default: tuple[tuple[int, int, str | None, int], ...] = ()
    nodes: dict[str, NodeView] = {}
    view = ""
    plan = ""
    for line in lines:
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "map":
            default = tuple(run_of(t) for t in words[1:])
        elif words[0] == "node":
            nid, state, rest = words[1], words[2], words[3:]
            runs: list[tuple[int, int, str | None, int]] = []
            mig: dict[int, str] = {}
            imp: dict[int, str] = {}
            keys: set[int] = set()
            stray: set[int] = set()
            left: frozenset[str] | None = None
            i = 0
            while i < len(rest):
                tok = rest[i]
                if tok == "mig":
                    rng, _, peer = rest[i + 1].partition(">")
                    mig.update(dict.fromkeys(slots(rng), peer))
                    i += 2
                elif tok == "imp":
                    rng, _, peer = rest[i + 1].partition("<")
                    imp.update(dict.fromkeys(slots(rng), peer))
                    i += 2
                elif tok == "keys":
                    keys.update(slots(rest[i + 1]))
                    i += 2
                elif tok == "stray":
                    stray.update(slots(rest[i + 1]))
                    i += 2
                elif tok == "left":  # the members its own view holds as left ("-": none)
                    left = frozenset() if rest[i + 1] == "-" else frozenset(rest[i + 1].split(","))
                    i += 2
                else:
                    runs.append(run_of(tok))
                    i += 1
            nodes[nid] = NodeView(nid, state, tuple(runs) if runs else (default if state == "alive" else ()),
                                  mig, imp, frozenset(keys), frozenset(stray), left)
        elif words[0] == "view":
            view = words[1]
        elif words[0] == "plan":
            plan = line.strip()[len("plan "):]
        else:
            raise ValueError(f"unknown line {line!r}")
    return Snapshot(nodes, view or next(iter(nodes))), plan


def run_plan(snap: Snapshot, plan: str) -> list[str]:
    words = plan.split()
    kw: dict[str, int] = {}
    progress = Progress()
    if words[0] == "hints":
        return [str(s) for s in next_steps(snap, Hints(tuple(words[1].split(","))), progress)]
    if words[0] == "fix":
        goal: MoveSlots | Fix = Fix(assign_unowned="assign" in words[1:])
    else:
        assert words[0] == "move" and words[2] == "to", plan
        source = None
        i = 4
        while i < len(words):
            w = words[i]
            if w == "from":
                source = words[i + 1]
            elif w == "drained":
                progress = Progress(frozenset(slots(words[i + 1])), progress.failures, progress.retry)
            elif w == "failures":
                progress = Progress(progress.drained, int(words[i + 1]), progress.retry, "batch lost")
            elif w == "retry":
                progress = Progress(progress.drained, progress.failures, True, progress.last_error)
                i -= 1
            elif w == "chunk":
                kw["chunk"] = int(words[i + 1])
            elif w == "refused":
                progress = progress.after_refusal(" ".join(words[i + 1:]))
                break
            else:
                raise ValueError(f"unknown plan word {w!r}")
            i += 2
        goal = MoveSlots(words[3], tuple(slots(words[1])), source)
    return [str(s) for s in next_steps(snap, goal, progress, **kw)]


def cases(path: Path) -> list[tuple[list[str], list[str]]]:
    out: list[tuple[list[str], list[str]]] = []
    for block in path.read_text().strip().split("\n\n"):
        given, sep, expected = block.partition("----\n")
        if not sep:
            given, _, expected = block.partition("----")
        out.append((given.rstrip("\n").split("\n"), [x for x in expected.split("\n") if x]))
    return out


FILES = sorted(DATA.glob("*.txt"))


def test_there_are_data_files() -> None:
    assert len(FILES) >= 5


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_slotmove_data(path: Path) -> None:
    blocks = []
    failures = []
    for given, expected in cases(path):
        snap, plan = parse_case(given)
        got = run_plan(snap, plan)
        blocks.append("\n".join([*given, "----", *got]))
        if got != expected:
            failures.append(f"{given[-1]}\n  expected: {expected}\n  got:      {got}")
    if REWRITE:
        path.write_text("\n\n".join(blocks) + "\n")
        return
    assert not failures, "\n".join(failures)


def test_marked_twice_is_a_slot_marked_toward_more_than_one_move() -> None:
    """What tells a driver that left ``key_slots`` empty to give them for a fix."""
    base = ["map 0-8191=a@1 8192-16383=b@1"]
    one = parse_case([*base, "node a alive mig 10>b", "node b alive imp 10<a", "plan fix"])[0]
    two = parse_case([*base, "node a alive", "node b alive imp 10<a", "node c alive imp 10<a", "plan fix"])[0]
    other = parse_case([*base, "node a alive mig 10>c", "node b alive imp 10<a", "node c alive", "plan fix"])[0]
    down = parse_case([*base, "node a alive", "node b alive imp 10<a", "node c dead imp 10<a", "plan fix"])[0]
    assert not marked_twice(one) and marked_twice(two) and marked_twice(other)
    assert not marked_twice(down)  # (a node down is not planned with: its marks count when it is back)
