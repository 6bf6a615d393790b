"""What the slot-move planner reads and says: the observed cluster (:class:`Snapshot` of
:class:`NodeView`), the goals, the driver's :class:`Progress`, and the steps (the package
docstring, :mod:`kvcore.slotmove`, says how they are used)."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from kvcore.slots import format_ranges, slots_to_ranges
from kvcore.states import State

#: a node the orchestrator could not ask (it may be alive in the members' views)
UNREACHABLE = "unreachable"
#: slots per import / migrate / move-keys step
CHUNK = 1024
#: failed move-keys rounds tolerated per move before giving up (then: ``fix``)
MAX_FAILURES = 25
#: seconds before a failed move-keys round is tried again, times the failures so far (at most 1 s)
RETRY_DELAY = 0.2

Run = tuple[int, int, str | None, int]


def fmt(slots: Iterable[int]) -> str:
    """Slots as a range string (``"1-3,7"``)."""
    return format_ranges(slots_to_ranges(sorted(slots)))


# --- what the orchestrator sees ---------------------------------------------------------------


@dataclass(frozen=True)
class NodeView:
    """One member as the orchestrator sees it.

    ``state``: alive, suspect, dead, left (in the view node's membership) or unreachable (it
    could not be asked). ``runs``: its own slot map, ``(lo, hi, owner, epoch)`` (unowned slots
    may be left out; empty when it could not be asked). ``migrating``: slot -> target,
    ``importing``: slot -> source. ``key_slots``: slots it holds keys of (a fix needs them:
    to assign unowned slots, and to clear an import mark only where no key lies; a move's
    driver may leave it empty). ``stray``: slots it holds keys of that
    its own map gives another node or nobody and that it does not import (no request reaches
    those keys; ``/cluster/info``'s ``stray``). ``left``: the members its own membership holds
    as left (a target finishes an import from a source that left only once it knows so), or
    None when not observed (then the view node's word is taken).
    """

    id: str
    state: str = State.ALIVE
    runs: tuple[Run, ...] = ()
    migrating: Mapping[int, str] = field(default_factory=dict)
    importing: Mapping[int, str] = field(default_factory=dict)
    key_slots: frozenset[int] = frozenset()
    stray: frozenset[int] = frozenset()
    left: frozenset[str] | None = None
    _starts: tuple[int, ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        runs = tuple(sorted(self.runs, key=lambda r: r[0]))
        object.__setattr__(self, "runs", runs)
        object.__setattr__(self, "_starts", tuple(r[0] for r in runs))

    @property
    def up(self) -> bool:
        """Alive and answering: the orchestrator can act on it."""
        return self.state == State.ALIVE

    def owner(self, slot: int) -> tuple[str | None, int]:
        """(owner, epoch) of ``slot`` in this node's map; (None, 0) when it names nobody."""
        i = bisect_right(self._starts, slot) - 1
        if i >= 0:
            lo, hi, owner, epoch = self.runs[i]
            if lo <= slot <= hi:
                return owner, epoch
        return None, 0

    @property
    def epoch(self) -> int:
        return max((r[3] for r in self.runs), default=0)


@dataclass(frozen=True)
class Snapshot:
    """The cluster as observed: every member the view node knows, and whose map is *the* map."""

    nodes: Mapping[str, NodeView]
    #: the node whose slot map stands for the cluster's (realnet: the entry node)
    view: str

    def node(self, nid: str | None) -> NodeView | None:
        return self.nodes.get(nid) if nid is not None else None

    def state(self, nid: str) -> str:
        n = self.nodes.get(nid)
        return n.state if n is not None else "unknown"

    def up(self, nid: str | None) -> bool:
        n = self.node(nid)
        return n is not None and n.up

    def gone(self, nid: str) -> bool:
        """Left, or forgotten (reaped after being dead long enough): it will never come back."""
        n = self.nodes.get(nid)
        return n is None or n.state == State.LEFT

    def live(self) -> list[NodeView]:
        return [n for _, n in sorted(self.nodes.items()) if n.up]

    def owner(self, slot: int) -> tuple[str | None, int]:
        v = self.nodes.get(self.view)
        return v.owner(slot) if v is not None else (None, 0)

    def max_epoch(self) -> int:
        return max((n.epoch for n in self.nodes.values()), default=0)


# --- goals and progress -----------------------------------------------------------------------


@dataclass(frozen=True)
class MoveSlots:
    """Move ``slots`` to ``target``, from ``source`` (or, when None, each slot's owner in the view)."""

    target: str
    slots: tuple[int, ...]
    source: str | None = None


@dataclass(frozen=True)
class Fix:
    """Close every open migration; give unowned slots an owner when ``assign_unowned``."""

    assign_unowned: bool = False


@dataclass(frozen=True)
class Hints:
    """A replicated cluster's slot map, only a routing hint there (its one group serves every
    slot on every node), names only the group's ``voters``, spread evenly
    (:func:`kvcore.rebalance.plan_hints`; the package docstring, **Hints**)."""

    voters: tuple[str, ...]


Goal = MoveSlots | Fix | Hints


@dataclass(frozen=True)
class Progress:
    """What the driver learned by acting, which observing cannot tell."""

    #: slots whose last ``move-keys`` answered "0 moved, no error"
    drained: frozenset[int] = frozenset()
    failures: int = 0
    #: the last move-keys round had a failure: wait before the next
    retry: bool = False
    last_error: str = ""
    #: a refused import or migrate, in a sentence: take back, then stop
    refused: str = ""

    def after_move_keys(self, results: Iterable[tuple[int, int, str]]) -> Progress:
        """Fold in one round's ``(slot, moved, error)`` rows."""
        drained, failed, last = set(self.drained), False, self.last_error
        for slot, moved, error in results:
            if error:
                failed, last = True, error
                drained.discard(slot)
            elif moved:
                drained.discard(slot)
            else:
                drained.add(slot)
        return replace(self, drained=frozenset(drained), failures=self.failures + failed, retry=failed,
                       last_error=last)

    def after_refusal(self, sentence: str) -> Progress:
        return replace(self, refused=sentence)


# --- steps ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Import:
    """Mark ``slots`` importing from ``source`` on ``node`` (the target)."""

    node: str
    source: str
    slots: tuple[int, ...]

    def __str__(self) -> str:
        return f"import {self.node} {fmt(self.slots)} from {self.source}"


@dataclass(frozen=True)
class Migrate:
    """Mark ``slots`` migrating to ``target`` on ``node`` (the source)."""

    node: str
    target: str
    slots: tuple[int, ...]

    def __str__(self) -> str:
        return f"migrate {self.node} {fmt(self.slots)} to {self.target}"


@dataclass(frozen=True)
class MoveKeys:
    """One batch of keys of each of ``slots`` from ``node`` to its target, after ``delay`` s;
    the driver folds the answers into :meth:`Progress.after_move_keys`."""

    node: str
    slots: tuple[int, ...]
    delay: float = 0.0

    def __str__(self) -> str:
        return f"move-keys {self.node} {fmt(self.slots)}" + (f" after {self.delay:g}s" if self.delay else "")


@dataclass(frozen=True)
class Finish:
    """``node`` (the target) claims the imported ``slots`` at a new config epoch."""

    node: str
    slots: tuple[int, ...]

    def __str__(self) -> str:
        return f"finish {self.node} {fmt(self.slots)}"


@dataclass(frozen=True)
class WaitOwned:
    """Wait until every live node's map names ``target`` for ``slots`` and no node keeps a
    migrating mark of them; ``nodes`` are the ones not there yet."""

    target: str
    slots: tuple[int, ...]
    nodes: tuple[str, ...]

    def __str__(self) -> str:
        return f"wait {','.join(self.nodes)} to see {self.target} own {fmt(self.slots)}"


@dataclass(frozen=True)
class WaitLeft:
    """Wait until ``node``'s own membership holds ``member`` as left (gossip brings it): a target
    refuses to finish importing ``slots`` from a source it does not know left."""

    node: str
    member: str
    slots: tuple[int, ...]

    def __str__(self) -> str:
        return f"wait {self.node} to see {self.member} leave, for {fmt(self.slots)}"


@dataclass(frozen=True)
class TakeBack:
    """Take back the import marks of ``slots`` on ``node`` after a refused migrate (no key moved)."""

    node: str
    slots: tuple[int, ...]

    def __str__(self) -> str:
        return f"take-back {self.node} {fmt(self.slots)}"


@dataclass(frozen=True)
class Clear:
    """Clear leftover marks of ``slots`` on ``node`` (the move is over, or the marks are stale)."""

    node: str
    slots: tuple[int, ...]

    def __str__(self) -> str:
        return f"clear {self.node} {fmt(self.slots)}"


@dataclass(frozen=True)
class RollBack:
    """Roll back the migration of ``slots`` on ``node`` (the source), whose target is gone: the
    source keeps the slots; a batch the lost target never acknowledged is abandoned."""

    node: str
    slots: tuple[int, ...]

    def __str__(self) -> str:
        return f"rollback {self.node} {fmt(self.slots)}"


@dataclass(frozen=True)
class Assign:
    """``node`` claims the unowned ``slots`` at ``epoch``."""

    node: str
    slots: tuple[int, ...]
    epoch: int

    def __str__(self) -> str:
        return f"assign {self.node} {fmt(self.slots)} at {self.epoch}"


@dataclass(frozen=True)
class Readopt:
    """``node``, the owner in the cluster's map, claims ``slots`` again at ``epoch``, above a
    claim of another node at the same epoch that the epoch rule can never settle."""

    node: str
    slots: tuple[int, ...]
    epoch: int

    def __str__(self) -> str:
        return f"readopt {self.node} {fmt(self.slots)} at {self.epoch}"


@dataclass(frozen=True)
class Done:
    """Nothing is left to do."""

    def __str__(self) -> str:
        return "done"


@dataclass(frozen=True)
class Problem:
    """What cannot be done (now), in a sentence. A driver stops at the first Problem step."""

    text: str

    def __str__(self) -> str:
        return f"problem: {self.text}"


Step = (Import | Migrate | MoveKeys | Finish | WaitOwned | WaitLeft | TakeBack | Clear | RollBack | Assign | Readopt | Done
        | Problem)
