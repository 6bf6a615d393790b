"""The slot-move procedure, written once: a pure planner of next steps for moves, ``fix`` and hints.

Theory of operation
-------------------
Moving slots live (Redis Cluster's resharding) and repairing what a crash left half done are one
procedure, and both worlds drive it: the sim from a SimPy process (:mod:`sim.cluster`), the
``storelab cluster`` commands over HTTP (:mod:`realnet.admin`). This module holds its rules and
nothing else: no I/O, no clock. A driver loops

    observe (a :class:`Snapshot`) -> :func:`next_steps` -> act on each step, in order

and a crash anywhere (of the driver, a source, a target) is handled by observing again: every
step is derived from what the nodes say now, never from what the driver remembers. The driver
keeps only a small :class:`Progress` (which slots a ``move-keys`` round found empty, failures
counted, a refusal), and forgetting it costs a round of ``move-keys`` that answers "0 moved".

**A move** (:class:`MoveSlots`: slots to a target; the source of each slot is the given one or
its owner in the snapshot's view) goes chunk by chunk (``chunk`` slots, so that a driver's HTTP
calls stay few): :class:`Import` on the target, then :class:`Migrate` on the source (in that
order, so that a request the source sends on with ASK finds the target ready), then
:class:`MoveKeys` until every slot of the chunk answers "0 moved, no error". Only when every slot
of the move is empty at its source does the target claim them all with one :class:`Finish` (one
new config epoch per move, as ``redis-cli --cluster reshard`` ends with SETSLOT NODE); "0 moved"
also means the target heard so (the migration's end batch, :mod:`kvcore.node.migration`), and the
target refuses to finish a slot it has not heard it of (:func:`kvcore.node.guards.check_finish`). The move
is over when every live node's map names the target and the sources dropped their migrating
marks (:class:`WaitOwned`): the next move's target must know this claim's epoch, or its own
claim would not be above it. A refused import or migrate (the guards of
:meth:`kvcore.node.Node.begin_import` / ``begin_migrate``) takes back the import marks this move
set and that no migrating mark pairs (:class:`TakeBack`: no key moved under them), then stops
with a :class:`Problem`. A target or source that is not up stops the move with a Problem (the
open migration stays, as after a crash of ``redis-cli``, until ``fix``).

**Fix** (:class:`Fix`, :func:`plan_fix`). A slot marked toward more than one move (imported by
two targets: each node's guard checks only itself) keeps the move its live migrating source
names, or none when the source is up and migrates it nowhere, or the one importer holding keys
when the source left; the other import marks are cleared, but only on nodes holding no key of
the slot; anything else is a Problem (:func:`_settle_conflict`). Then for each slot with an open mark
(``migrating`` on a source, ``importing`` on a target), by who owns it in the view's map and who
is up:

- the target owns it (the move finished) or a third node does (stale marks): :class:`Clear`,
  except a source's migrating mark while its own map still names it the owner: it has not heard
  the claim yet, and without the mark it would serve the slot from a store the moved keys left;
  wait for it (:class:`WaitOwned`; a node drops the mark itself when it hears the claim);
- the source owns it and both ends are alive: resume, exactly as a move (marking again is
  harmless), and finish;
- the source owns it and the target is gone (left, or unknown to the cluster): :class:`RollBack`
  on the source (its keys never left it, except what the lost target acknowledged), Clear on
  the others;
- the source left (it never comes back; the keys it still held left with it), the slot is its or
  nobody's, and the target is up: the target finishes the import (:class:`Finish`, which its
  guard allows for a source that left), so the keys it took are served again and the slot has
  an owner;
- otherwise (the source is down, or the target is down but may come back): a Problem sentence.

Then, with no mark left: maps that differ at different epochs are gossip still at work
(:class:`WaitOwned` for the lagging nodes); two claims of one slot at the *same* epoch never
settle by themselves (the epoch rule keeps whichever a node heard first), so the owner in the
view's map claims them again above every epoch (:class:`Readopt`). A live owner whose own map
does not name it for a slot that the view's map gives it has lost its claim (it restarted
without its cluster state: an empty or another data directory): gossip never teaches a node its
own claim, so it claims them again too (:class:`Readopt`; whatever keys it lost are lost, but the
slots are served again). Keys a live node holds of slots that another live node owns, and that it
does not import (``stray``: a claim or a finish that orphaned them, made with ``accept_loss``), no
request reaches; fix gives such slots back to the holder with the owner's keys, by an ordinary
move from the owner to the holder (the move's rules: where both hold a key, the owner's value
is the one kept, as it is the one clients saw); a slot several nodes hold keys of goes to each
in turn (by id), so every copy is served again. Slots without an owner, or
owned by a member that left or that the cluster forgot, get one when asked
(``assign_unowned``; :class:`Assign`), with Redis's ``--cluster fix`` rule: a live node that
holds keys of the slot (the fewest slots first, then by id), otherwise the live node with the
fewest slots, counting the ones it was just given, so that many slots spread evenly. What fix
cannot change (a dead owner, a node down) is said in a sentence.

**Hints** (:class:`Hints`: a replicated cluster's voters). There the one Raft group serves every
slot on every node and the slot map is only a routing hint for smart clients' first hops, so no
key moves: a voter takes a hint by claiming the slots (:class:`Assign`, each claimer at its own
epoch above every epoch known). The map planned from is the newest claim of each slot that a
live map holds (:func:`newest_claims`; a slot two owners claim at one epoch names nobody, so a
claim settles it), and :func:`kvcore.rebalance.plan_hints` says who takes what: the slots of
non-voters, and an even share for a new voter. A claimer advertises every slot its own map
gives it at the new epoch, so it would take back slots that moved away from it if its map
lagged: each claimer first waits until its map names the newest owners (:class:`WaitOwned`).
Done when every live voter's map names the owners the claims made.

Steps are frozen dataclasses over groups of slots; ``str(step)`` is the compact text form the
data-driven tests (``tests/kvcore/testdata/slotmove``) compare.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from kvcore.rebalance import Move, PlanError, hint_claims, plan_hints
from kvcore.slots import NUM_SLOTS, format_ranges, ranges_to_slots, slots_to_ranges
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
    those keys; ``/cluster/info``'s ``stray``).
    """

    id: str
    state: str = State.ALIVE
    runs: tuple[Run, ...] = ()
    migrating: Mapping[int, str] = field(default_factory=dict)
    importing: Mapping[int, str] = field(default_factory=dict)
    key_slots: frozenset[int] = frozenset()
    stray: frozenset[int] = frozenset()
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
    (:func:`kvcore.rebalance.plan_hints`; module docstring, **Hints**)."""

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


Step = Import | Migrate | MoveKeys | Finish | WaitOwned | TakeBack | Clear | RollBack | Assign | Readopt | Done | Problem


# --- the move ---------------------------------------------------------------------------------


def next_steps(snap: Snapshot, goal: Goal, progress: Progress | None = None, *, chunk: int = CHUNK,
               max_failures: int = MAX_FAILURES, retry_delay: float = RETRY_DELAY) -> list[Step]:
    """The next steps toward ``goal`` from what ``snap`` says (the module docstring).

    Act on them in order; stop at a :class:`Problem` (report every Problem of the list) or
    :class:`Done`; otherwise observe again (after a :class:`MoveKeys` the snapshot may be kept:
    it changes no mark). Never empty.
    """
    p = progress or Progress()
    if isinstance(goal, MoveSlots):
        return _move_steps(snap, goal, p, chunk, max_failures, retry_delay)
    if isinstance(goal, Hints):
        return _hint_steps(snap, goal)
    return _fix_steps(snap, goal, p, chunk, max_failures, retry_delay)


def _move_steps(snap: Snapshot, goal: MoveSlots, p: Progress, chunk: int, max_failures: int,
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
        return _wait_owned(snap, target, claimed)
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


def _wait_owned(snap: Snapshot, target: str, slots: Sequence[int]) -> list[Step]:
    lagging = [n.id for n in snap.live()
               if any(n.owner(s)[0] != target or n.migrating.get(s) is not None for s in slots)]
    if lagging:
        return [WaitOwned(target, tuple(slots), tuple(lagging))]
    return [Done()]


# --- fix --------------------------------------------------------------------------------------


@dataclass
class FixPlan:
    """What fix will do, slot by slot (:func:`plan_fix`)."""

    #: moves to resume and finish (the source still owns the slots, both ends alive)
    resume: list[Move] = field(default_factory=list)
    #: (node id, slots) whose leftover marks are cleared (the move is over, or the marks are stale)
    clear: list[tuple[str, list[int]]] = field(default_factory=list)
    #: (node id, slots) rolled back on a source whose target is gone
    rollback: list[tuple[str, list[int]]] = field(default_factory=list)
    #: (target, slots) imported from a source that left: the target finishes the import, keeping
    #: the keys it took (the source's other keys left with it)
    adopt: list[tuple[str, list[int]]] = field(default_factory=list)
    #: (owner, slots) whose maps disagree at one epoch; the owner claims them again
    readopt: list[tuple[str, list[int]]] = field(default_factory=list)
    #: (source, slots) of open moves whose maps disagree at one epoch (two crossing moves that
    #: finished at the same epoch): the move's source claims them again first, so that the maps
    #: agree; its marks then pair and the move resumes (a key already at the target stays
    #: reachable meanwhile: the source's migrating mark sends what it lacks there)
    collided: list[tuple[str, list[int]]] = field(default_factory=list)
    #: (owner, slots) that the view's map gives a live node whose own map does not: it lost its
    #: claim (restarted without its cluster state) and claims them again
    reclaim: list[tuple[str, list[int]]] = field(default_factory=list)
    #: (node id, slots) given to a node because they had no owner (only when asked)
    assign: list[tuple[str, list[int]]] = field(default_factory=list)
    #: moves of slots from their live owner to a live node that holds keys of them no request
    #: reaches (stray): the owner's keys move along, and the holder's are served again
    regather: list[Move] = field(default_factory=list)
    #: (owner, slots, lagging nodes): maps that differ at different epochs; gossip is at work
    converge: list[tuple[str, list[int], list[str]]] = field(default_factory=list)
    #: what cannot be fixed, in sentences
    problems: list[str] = field(default_factory=list)

    def empty(self) -> bool:
        return not (self.resume or self.clear or self.rollback or self.readopt or self.reclaim or self.assign
                    or self.converge or self.regather or self.collided or self.adopt)

    def describe(self) -> list[str]:
        out = []
        for nid, slots in self.collided:
            out.append(f"let {nid} claim slots {fmt(slots)} again at a new epoch (they are moving from it, "
                       "and two nodes claim them at the same epoch), then resume the move")
        for mv in self.resume:
            out.append(f"resume moving slots {format_ranges(mv.slots)} ({mv.count}) from {mv.source} "
                       f"to {mv.target}, then let {mv.target} claim them")
        for nid, slots in self.clear:
            out.append(f"clear leftover marks of slots {fmt(slots)} on {nid}")
        for nid, slots in self.rollback:
            out.append(f"roll back the migration of slots {fmt(slots)} on {nid} (its target is gone)")
        for nid, slots in self.adopt:
            out.append(f"let {nid} finish importing slots {fmt(slots)} (their source left: the keys it had not "
                       "moved yet left with it)")
        for owner, slots, nodes in self.converge:
            out.append(f"wait for {', '.join(nodes)} to learn that {owner} owns slots {fmt(slots)}")
        for nid, slots in self.readopt:
            out.append(f"let {nid} claim slots {fmt(slots)} again at a new epoch (another node claims "
                       "them at the same epoch)")
        for nid, slots in self.reclaim:
            out.append(f"let {nid} claim slots {fmt(slots)} ({len(slots)}) again at a new epoch (the cluster "
                       f"gives them to {nid}, but {nid} does not claim them: it restarted without its cluster "
                       "state)")
        for nid, slots in self.assign:
            out.append(f"assign the unowned slots {fmt(slots)} ({len(slots)}) to {nid}")
        for mv in self.regather:
            out.append(f"move slots {format_ranges(mv.slots)} ({mv.count}) from {mv.source} to {mv.target}, which "
                       f"holds keys of them that no request reaches ({mv.source}'s keys of them move along; where "
                       f"both hold a key, {mv.source}'s value is kept)")
        return out


def plan_fix(snap: Snapshot, assign_unowned: bool = False) -> FixPlan:
    """Decide, slot by slot, how to close every open migration and mend the map (module docstring)."""
    plan = FixPlan()
    marked = _plan_marks(snap, plan)
    if plan.clear or plan.rollback or plan.resume or plan.converge or plan.collided or plan.adopt:
        return plan  # the map is looked at once no mark is left
    _plan_map(snap, plan, marked, assign_unowned)
    return plan


def _plan_marks(snap: Snapshot, plan: FixPlan) -> set[int]:
    live = snap.live()
    clear: dict[str, list[int]] = {}
    pairs, marks = _pair_marks(snap, plan, clear)
    resume: dict[tuple[str, str], list[int]] = {}
    wait: dict[str, tuple[list[int], set[str]]] = {}
    rollback: dict[str, list[int]] = {}
    adopt: dict[str, list[int]] = {}
    collided: dict[str, list[int]] = {}
    for slot in sorted(pairs):
        source, target = pairs[slot]
        if not source:
            continue
        if snap.up(source) and _same_epoch_collision(live, slot):
            # the maps never agree by themselves, and every other plan below reads one of them
            collided.setdefault(source, []).append(slot)
            continue
        owner = snap.owner(slot)[0]
        if owner == target or (owner is not None and owner not in (source, target)):
            for nid in marks[slot]:
                n = snap.nodes[nid]
                if n.migrating.get(slot) and n.owner(slot)[0] == nid:
                    # it has not heard the new owner's claim yet: without its mark it would serve
                    # the slot from a store the moved keys left; it drops the mark when it hears
                    wait.setdefault(owner, ([], set()))[0].append(slot)
                    wait[owner][1].add(nid)
                else:
                    clear.setdefault(nid, []).append(slot)
        elif owner == source and snap.up(source) and snap.up(target):
            resume.setdefault((source, target), []).append(slot)
        elif owner == source and snap.up(source) and snap.gone(target):
            for nid in marks[slot]:
                (rollback if snap.nodes[nid].migrating.get(slot) else clear).setdefault(nid, []).append(slot)
        elif (owner in (source, None) and snap.state(source) == State.LEFT and snap.up(target)
              and snap.nodes[target].importing.get(slot) == source):
            # the source never comes back: finishing keeps what the target took (bringing the
            # source back, which the sentence below asks, cannot be done)
            adopt.setdefault(target, []).append(slot)
        else:
            who = source if not snap.up(source) else target
            state = snap.state(who)
            plan.problems.append(
                f"Slot {slot} is moving from {source} to {target} (owner: {owner or 'none'}), but "
                f"{who} is {state if state != State.ALIVE else UNREACHABLE}; bring it back (or, for a "
                "target, wait until the cluster forgets it) and run fix again.")
    plan.resume = [Move(s, t, tuple(slots_to_ranges(sl))) for (s, t), sl in sorted(resume.items())]
    plan.collided = sorted(collided.items())
    plan.clear = sorted(clear.items())
    plan.rollback = sorted(rollback.items())
    plan.adopt = sorted(adopt.items())
    plan.converge = [(o, sl, sorted(ns)) for o, (sl, ns) in sorted(wait.items())]
    return set(pairs)


def _pair_marks(snap: Snapshot, plan: FixPlan,
                clear: dict[str, list[int]]) -> tuple[dict[int, tuple[str, str]], dict[int, list[str]]]:
    """Each marked slot's move (source, target) and the live nodes that mark it; a slot marked
    toward more than one move (imported by two targets through the API: each node's guard checks
    only itself) is settled by :func:`_settle_conflict` or left as it is with a Problem."""
    migrating, importing = _moves_by_slot(snap)
    pairs: dict[int, tuple[str, str]] = {}
    marks: dict[int, list[str]] = {}  # slot -> the nodes that mark it
    for slot in sorted(migrating.keys() | importing.keys()):
        migr, imps = migrating.get(slot, []), importing.get(slot, [])
        keep: tuple[str, str] | None = (migr or imps)[0] if len({*migr, *imps}) == 1 else None
        if keep is None:
            keep = _settle_conflict(snap, slot, migr, imps, plan, clear)
        if keep is None:
            pairs[slot] = ("", "")  # left as it is (a Problem said why), still a marked slot
            continue
        pairs[slot] = keep
        marks[slot] = [m[0] for m in migr if m == keep] + [m[1] for m in imps if m == keep]
    return pairs, marks


def _moves_by_slot(snap: Snapshot) -> tuple[dict[int, list[tuple[str, str]]], dict[int, list[tuple[str, str]]]]:
    """The live nodes' open marks as moves (source, target), by slot: (migrating, importing)."""
    migrating: dict[int, list[tuple[str, str]]] = {}
    importing: dict[int, list[tuple[str, str]]] = {}
    for n in snap.live():
        for slot, target in n.migrating.items():
            migrating.setdefault(slot, []).append((n.id, target))
        for slot, source in n.importing.items():
            importing.setdefault(slot, []).append((source, n.id))
    return migrating, importing


def marked_twice(snap: Snapshot) -> bool:
    """Whether a slot is marked toward more than one move: what fix settles only where no key
    lies under a mark it clears, so a driver that left ``key_slots`` empty must give them
    (:func:`_settle_conflict`)."""
    migrating, importing = _moves_by_slot(snap)
    return any(len({*migrating.get(s, ()), *importing.get(s, ())}) > 1 for s in migrating.keys() | importing.keys())


def _settle_conflict(snap: Snapshot, slot: int, migr: list[tuple[str, str]], imps: list[tuple[str, str]],
                     plan: FixPlan, clear: dict[str, list[int]]) -> tuple[str, str] | None:
    """A slot marked toward several moves: the move to keep, the other import marks cleared, when
    no key can be lost by it; else None and a Problem. Kept: the move the one live migrating
    source names; with none, when the one source is up, no move (nothing moved: every import mark
    is cleared and the move can be run again); when it left, the one importer holding keys of the
    slot (fix then lets it finish: :class:`FixPlan` ``adopt``). An import mark is cleared only on
    a node holding no key of the slot (``key_slots``: the driver gives them for a fix), so even
    ``--accept-loss`` drops nothing; a source down (it may come back migrating), two sources, or
    several holders are the operator's call."""
    sources = {s for s, _ in (*migr, *imps)}
    holders = sorted(t for _, t in imps if slot in snap.nodes[t].key_slots)
    keep: tuple[str, str] | None = None
    why = ""
    if len(migr) > 1:
        why = "two sources migrate it"
    elif migr:
        keep = migr[0]
    elif len(sources) > 1:
        why = "it is imported from two sources"
    else:
        (source,) = sources
        if snap.gone(source) and len(holders) == 1:
            keep = (source, holders[0])
        elif not (snap.up(source) or snap.gone(source)):
            why = f"{source} is {snap.state(source) if snap.state(source) != State.ALIVE else UNREACHABLE}"
    strays = [t for m in imps if m != keep for t in m[1:]]
    if not why and any(t in holders for t in strays):
        why = f"{', '.join(t for t in strays if t in holders)} hold{'s' if len(holders) == 1 else ''} keys of it"
    if why:
        moves = " and ".join(f"{s} -> {t}" for s, t in sorted({*migr, *imps}))
        plan.problems.append(f"Slot {slot} is marked both {moves}; it was left as it is ({why}: which "
                             "move to keep is the operator's call).")
        return None
    for t in strays:
        clear.setdefault(t, []).append(slot)
    return keep


def _same_epoch_collision(live: list[NodeView], slot: int) -> bool:
    """Whether the ``live`` nodes' maps name different owners of ``slot`` at its highest epoch."""
    best, owners = -1, set()
    for n in live:
        o, e = n.owner(slot)
        if e > best:
            best, owners = e, {o}
        elif e == best:
            owners.add(o)
    return best > 0 and len(owners) > 1


def _plan_map(snap: Snapshot, plan: FixPlan, marked: set[int], assign_unowned: bool) -> None:
    """Lagging maps, same-epoch collisions, slots without a live owner, nodes that are down."""
    view = snap.node(snap.view)
    if view is None:
        plan.problems.append(f"Node {snap.view} could not be asked for its slot map.")
        return
    others = [n for n in snap.live() if n.id != view.id]
    converge: dict[str, tuple[list[int], set[str]]] = {}
    readopt: dict[str, list[int]] = {}
    reclaim: dict[str, list[int]] = {}
    orphans: list[int] = []
    dead_owned: dict[str, list[int]] = {}
    for s in range(NUM_SLOTS):
        if s in marked:
            continue
        owner, epoch = view.owner(s)
        best_owner, best_epoch, collide = owner, epoch, False
        for n in others:
            o, e = n.owner(s)
            if e > best_epoch:
                best_owner, best_epoch, collide = o, e, False
            elif e == best_epoch and o != best_owner:
                collide = True
        if collide and best_owner is not None and best_epoch == epoch and snap.up(owner):
            readopt.setdefault(owner or "", []).append(s)
            continue
        if collide:
            plan.problems.append(f"Slot {s} is claimed by several nodes at epoch {best_epoch} and its owner "
                                 f"in {view.id}'s map ({owner or 'none'}) cannot claim it again.")
            continue
        own = snap.node(best_owner)
        if own is not None and own.up and own.owner(s) != (best_owner, best_epoch):
            # the owner itself does not know its claim: it lost it, and gossip cannot teach a
            # node its own claim (it is the source of it)
            reclaim.setdefault(own.id, []).append(s)
            continue
        lagging = [n.id for n in [view, *others] if n.owner(s) != (best_owner, best_epoch)]
        if lagging and best_owner is not None:
            entry = converge.setdefault(best_owner, ([], set()))
            entry[0].append(s)
            entry[1].update(lagging)
            continue
        if best_owner is None or snap.gone(best_owner):
            orphans.append(s)
        elif not snap.up(best_owner):
            dead_owned.setdefault(best_owner, []).append(s)
    plan.converge = [(o, sl, sorted(ns)) for o, (sl, ns) in sorted(converge.items())]
    plan.readopt = sorted(readopt.items())
    plan.reclaim = sorted(reclaim.items())
    if plan.converge or plan.readopt or plan.reclaim:
        return
    for owner, slots in sorted(dead_owned.items()):
        plan.problems.append(f"{len(slots)} slots ({fmt(slots)}) are owned by {owner}, which is "
                             f"{snap.state(owner)}; fix gives them no new owner: it may come back with their keys.")
    if orphans and assign_unowned:
        plan.assign = _assign(snap, orphans)
    elif orphans:
        plan.problems.append(f"{len(orphans)} slot{'s' if len(orphans) != 1 else ''} ({fmt(orphans)}) "
                             f"{'have' if len(orphans) != 1 else 'has'} no live owner that can come back; "
                             "run fix with --assign-unowned to give them one.")
    _plan_stray(snap, plan, view, marked, set(orphans) if not assign_unowned else set())
    for n in sorted(snap.nodes.values(), key=lambda n: n.id):
        if n.state not in (State.ALIVE, State.LEFT):
            plan.problems.append(f"Node {n.id} is {n.state}; fix does not change members: bring it back, "
                                 "or wait for the cluster to declare it dead and forget it.")


def _plan_stray(snap: Snapshot, plan: FixPlan, view: NodeView, marked: set[int], orphans: set[int]) -> None:
    """Keys live nodes hold of slots they neither own nor import: give each such slot to one
    holder (the lowest id first) by a move from its live owner; say why where that cannot be.
    ``orphans``: unowned slots that fix was not asked to assign (said once per holder)."""
    regather: dict[tuple[str, str], list[int]] = {}
    blocked: dict[tuple[str, str], list[int]] = {}
    unowned: dict[str, list[int]] = {}
    given: set[int] = set()
    for n in snap.live():
        for s in sorted(n.stray):
            if s in marked or s in given:
                continue
            owner = view.owner(s)[0]
            if owner == n.id:
                continue  # its own map lags: gossip at work
            if owner is None or snap.gone(owner):
                if s in orphans:
                    unowned.setdefault(n.id, []).append(s)
                continue  # assign_unowned gives it to a holder (_assign)
            if snap.up(owner):
                regather.setdefault((owner, n.id), []).append(s)
                given.add(s)
            else:
                blocked.setdefault((n.id, owner), []).append(s)
    plan.regather = [Move(o, t, tuple(slots_to_ranges(sl))) for (o, t), sl in sorted(regather.items())]
    for (nid, owner), slots in sorted(blocked.items()):
        many = len(slots) != 1
        plan.problems.append(f"Node {nid} holds keys of slot{'s' if many else ''} {fmt(slots)}, which {owner} owns, "
                             f"and no request reaches them; {owner} is {snap.state(owner)}, so they cannot move now: "
                             f"bring {owner} back and run fix again (it moves the slot{'s' if many else ''} to {nid}).")
    for nid, slots in sorted(unowned.items()):
        many = len(slots) != 1
        plan.problems.append(f"Node {nid} holds keys of slot{'s' if many else ''} {fmt(slots)}, which no live member "
                             f"owns; run fix with --assign-unowned to give {'them' if many else 'it'} to {nid}.")


def _assign(snap: Snapshot, orphans: list[int]) -> list[tuple[str, list[int]]]:
    """Redis's rule: a live holder of the slot's keys, else the live node with the fewest slots."""
    live = snap.live()
    view = snap.nodes[snap.view]
    counts = {n.id: 0 for n in live}
    for lo, hi, owner, _ in view.runs:
        if owner in counts:
            counts[owner] += hi - lo + 1
    out: dict[str, list[int]] = {}
    for s in orphans:
        holders = [n.id for n in live if s in n.key_slots or s in n.stray] or list(counts)
        if not holders:
            break
        pick = min(holders, key=lambda nid: (counts[nid], nid))
        counts[pick] += 1
        out.setdefault(pick, []).append(s)
    return sorted(out.items())


def _fix_steps(snap: Snapshot, goal: Fix, p: Progress, chunk: int, max_failures: int,
               retry_delay: float) -> list[Step]:
    plan = plan_fix(snap, goal.assign_unowned)
    if plan.clear or plan.rollback:
        return [*(Clear(n, tuple(s)) for n, s in plan.clear), *(RollBack(n, tuple(s)) for n, s in plan.rollback)]
    if plan.adopt:
        return [Finish(nid, tuple(given)) for nid, given in plan.adopt]
    if plan.collided:
        base = snap.max_epoch()
        return [Readopt(nid, tuple(given), base + i) for i, (nid, given) in enumerate(plan.collided, 1)]
    if plan.resume:
        mv = plan.resume[0]
        slots = tuple(s for lo, hi in mv.slots for s in range(lo, hi + 1))
        return _move_steps(snap, MoveSlots(mv.target, slots, mv.source), p, chunk, max_failures, retry_delay)
    if plan.converge:
        return [WaitOwned(o, tuple(sl), tuple(ns)) for o, sl, ns in plan.converge]
    base = snap.max_epoch()
    claims: list[Step] = []
    for nid, given in [*plan.readopt, *plan.reclaim]:
        base += 1
        claims.append(Readopt(nid, tuple(given), base))
    for nid, given in plan.assign:
        base += 1
        claims.append(Assign(nid, tuple(given), base))
    if claims:
        return claims
    if plan.regather:
        mv = plan.regather[0]
        slots = tuple(s for lo, hi in mv.slots for s in range(lo, hi + 1))
        return _move_steps(snap, MoveSlots(mv.target, slots, mv.source), p, chunk, max_failures, retry_delay)
    if plan.problems:
        return [Problem(t) for t in plan.problems]
    return [Done()]


# --- hints -------------------------------------------------------------------------------------


def newest_claims(snap: Snapshot) -> list[tuple[str | None, int]]:
    """Per slot, the claim at the highest epoch that a live node's map holds: what gossip brings
    every map to. A slot that two owners claim at that one epoch (which gossip never settles)
    names nobody here, so that a hint claim above it settles it."""
    best: list[tuple[str | None, int]] = [(None, 0)] * NUM_SLOTS
    tied = [False] * NUM_SLOTS
    for n in snap.live():
        for lo, hi, owner, epoch in n.runs:
            for s in range(lo, hi + 1):
                b_owner, b_epoch = best[s]
                if epoch > b_epoch:
                    best[s], tied[s] = (owner, epoch), False
                elif epoch == b_epoch and owner != b_owner:
                    tied[s] = True
    return [(None, 0) if tied[s] else best[s] for s in range(NUM_SLOTS)]


def hint_moves(snap: Snapshot, voters: Sequence[str]) -> list[Move]:
    """The hint moves (:func:`kvcore.rebalance.plan_hints`) from the newest claims the live maps
    hold (:func:`newest_claims`); the voters that are not up keep their slots and take none.
    Raises :class:`kvcore.rebalance.PlanError` with a sentence."""
    runs: dict[str, list[int]] = {}
    for s, (owner, _) in enumerate(newest_claims(snap)):
        if owner is not None:
            runs.setdefault(owner, []).append(s)
    assignment = {o: slots_to_ranges(sl) for o, sl in sorted(runs.items())}
    return plan_hints(assignment, voters, [v for v in voters if not snap.up(v)])


def _hint_steps(snap: Snapshot, goal: Hints) -> list[Step]:
    """Claims that make the hints name only the voters, evenly; then a wait for every live voter
    to map them so. A voter that claims advertises every slot its own map gives it at the
    claim's epoch, so a claimer whose map still names it for slots that moved away from it would
    take them back: each claimer's map must show the newest claims first (:class:`WaitOwned`)."""
    if not snap.live():
        return [Problem("no member of the cluster answers; the slot map's hints cannot be mended")]
    best = newest_claims(snap)
    try:
        moves = hint_moves(snap, goal.voters)
    except PlanError as e:
        return [Problem(str(e))]
    if moves:
        waits = _hints_lag(snap, best, sorted({m.target for m in moves}))
        if waits:
            return waits
        base = snap.max_epoch()
        return [Assign(nid, tuple(ranges_to_slots(ranges)), base + i)
                for i, (nid, ranges) in enumerate(hint_claims(moves), 1)]
    return _hints_lag(snap, best, [v for v in goal.voters if snap.up(v)]) or [Done()]


def _hints_lag(snap: Snapshot, best: list[tuple[str | None, int]], nodes: Sequence[str]) -> list[Step]:
    """A :class:`WaitOwned` per owner for the slots where a node of ``nodes`` names another owner
    than the newest claim does (the owner, not the epoch: an owner that claims again advertises
    its slots at the new epoch, and a map that names it already routes the same way)."""
    lag: dict[str, tuple[list[int], set[str]]] = {}
    for nid in nodes:
        n = snap.nodes[nid]
        for s, (owner, _) in enumerate(best):
            if owner is not None and n.owner(s)[0] != owner:
                entry = lag.setdefault(owner, ([], set()))
                entry[0].append(s)
                entry[1].add(nid)
    return [WaitOwned(o, tuple(sorted(set(sl))), tuple(sorted(ns))) for o, (sl, ns) in sorted(lag.items())]


__all__ = [
    "CHUNK",
    "MAX_FAILURES",
    "RETRY_DELAY",
    "UNREACHABLE",
    "Assign",
    "Clear",
    "Done",
    "Finish",
    "Fix",
    "FixPlan",
    "Goal",
    "Hints",
    "Import",
    "Migrate",
    "MoveKeys",
    "MoveSlots",
    "NodeView",
    "Problem",
    "Progress",
    "Readopt",
    "RollBack",
    "Snapshot",
    "Step",
    "TakeBack",
    "WaitOwned",
    "fmt",
    "hint_moves",
    "marked_twice",
    "newest_claims",
    "next_steps",
    "plan_fix",
]
