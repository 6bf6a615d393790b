"""A move of slots to a target, chunk by chunk: import, migrate, move-keys, finish, then a wait
until every live map names the target (the package docstring, **A move**)."""

from __future__ import annotations

from collections.abc import Sequence

from kvcore.slotmove.model import (
    Done,
    Finish,
    Import,
    Migrate,
    MoveKeys,
    MoveSlots,
    Problem,
    Progress,
    Snapshot,
    Step,
    TakeBack,
    WaitOwned,
)


def move_steps(snap: Snapshot, goal: MoveSlots, p: Progress, chunk: int, max_failures: int,
               retry_delay: float) -> list[Step]:
    target = goal.target
    t = snap.node(target)
    if p.refused:
        return [*_take_back(snap, goal), Problem(p.refused)]
    if t is None or not t.up:
        return [Problem(f"target {target} is {snap.state(target)}; slots cannot move to it")]
    source_of: dict[int, str] = {}
    claimed: list[int] = []
    for s in sorted(set(goal.slots)):
        if t.owner(s)[0] == target:
            claimed.append(s)
            continue
        src = goal.source or snap.owner(s)[0]
        if src is None:
            return [Problem(f"slot {s} has no owner to move it from (fix --assign-unowned gives it one)")]
        if src == target:
            claimed.append(s)  # the view says so already; the target's own map will follow
            continue
        if not snap.up(src):
            return [Problem(f"source {src} of slot {s} is {snap.state(src)}; slots cannot move from it")]
        source_of[s] = src
    if not source_of:
        return wait_owned(snap, target, claimed)
    if p.failures > max_failures:
        return [Problem(f"moving slots to {target} failed {p.failures} times (last: {p.last_error.rstrip('.')}); "
                        "the migration is left open: run fix")]

    def marked(s: int) -> bool:
        src = snap.nodes[source_of[s]]
        return t.importing.get(s) == source_of[s] and src.migrating.get(s) == target

    todo = [s for s in source_of if not (marked(s) and s in p.drained)]
    if not todo:
        return [Finish(target, tuple(source_of))]
    steps: list[Step] = []
    current = todo[:chunk]
    delay = min(1.0, retry_delay * p.failures) if p.retry else 0.0
    for src in sorted({source_of[s] for s in current}):
        mine = tuple(s for s in current if source_of[s] == src)
        imp = tuple(s for s in mine if t.importing.get(s) != src)
        if imp:
            steps.append(Import(target, src, imp))
        mig = tuple(s for s in mine if snap.nodes[src].migrating.get(s) != target)
        if mig:
            steps.append(Migrate(src, target, mig))
        steps.append(MoveKeys(src, mine, delay if not (imp or mig) else 0.0))
    return steps


def _take_back(snap: Snapshot, goal: MoveSlots) -> list[Step]:
    """Import marks of the goal's slots on the target that no migrating mark pairs."""
    t = snap.node(goal.target)
    if t is None or not t.up:
        return []
    back = []
    for s in sorted(set(goal.slots)):
        src = t.importing.get(s)
        if src is None or (goal.source is not None and src != goal.source):
            continue
        n = snap.node(src)
        if n is None or n.migrating.get(s) != goal.target:
            back.append(s)
    return [TakeBack(goal.target, tuple(back))] if back else []


def wait_owned(snap: Snapshot, target: str, slots: Sequence[int]) -> list[Step]:
    lagging = [n.id for n in snap.live()
               if any(n.owner(s)[0] != target or n.migrating.get(s) is not None for s in slots)]
    if lagging:
        return [WaitOwned(target, tuple(slots), tuple(lagging))]
    return [Done()]
