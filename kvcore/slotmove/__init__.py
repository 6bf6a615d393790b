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
the slot; anything else is a Problem (:func:`kvcore.slotmove.fix._settle_conflict`). Then for each slot with an open mark
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
  an owner; a target whose own view does not hold the source as left yet would refuse, so fix
  waits until gossip tells it (:class:`WaitLeft`);
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

from kvcore.slotmove.fix import FixPlan, fix_steps, marked_twice, plan_fix
from kvcore.slotmove.hints import hint_moves, hint_steps, newest_claims
from kvcore.slotmove.model import (
    CHUNK,
    MAX_FAILURES,
    RETRY_DELAY,
    UNREACHABLE,
    Assign,
    Clear,
    Done,
    Finish,
    Fix,
    Goal,
    Hints,
    Import,
    Migrate,
    MoveKeys,
    MoveSlots,
    NodeView,
    Problem,
    Progress,
    Readopt,
    RollBack,
    Snapshot,
    Step,
    TakeBack,
    WaitLeft,
    WaitOwned,
    fmt,
)
from kvcore.slotmove.move import move_steps


def next_steps(snap: Snapshot, goal: Goal, progress: Progress | None = None, *, chunk: int = CHUNK,
               max_failures: int = MAX_FAILURES, retry_delay: float = RETRY_DELAY) -> list[Step]:
    """The next steps toward ``goal`` from what ``snap`` says (the package docstring).

    Act on them in order; stop at a :class:`Problem` (report every Problem of the list) or
    :class:`Done`; otherwise observe again (after a :class:`MoveKeys` the snapshot may be kept:
    it changes no mark). Never empty.
    """
    p = progress or Progress()
    if isinstance(goal, MoveSlots):
        return move_steps(snap, goal, p, chunk, max_failures, retry_delay)
    if isinstance(goal, Hints):
        return hint_steps(snap, goal)
    return fix_steps(snap, goal, p, chunk, max_failures, retry_delay)


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
    "WaitLeft",
    "WaitOwned",
    "fmt",
    "hint_moves",
    "marked_twice",
    "newest_claims",
    "next_steps",
    "plan_fix",
]
