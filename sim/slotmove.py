"""The sim's driver of the slot-move procedure (:mod:`kvcore.slotmove`), as a SimPy process.

Theory of operation
-------------------
:func:`drive` is a generator for ``env.process``: it observes the cluster (:func:`observe`: every
node's own slot map, marks and key slots, its state as the ground truth has it: up is *alive*,
crashed is *unreachable*, left is *left*; the slots it holds keys of, and of those the ones it
neither owns nor imports), asks :func:`kvcore.slotmove.next_steps` what to do,
and acts on the node objects directly, in the same order ``storelab cluster`` acts over HTTP
(:mod:`realnet.admin`): import, migrate, move-keys (every slot of a chunk at once, each answer
awaited), finish, wait until every live node's map names the target, take back, clear, roll
back, assign, re-adopt. A guard's refusal (``errors.Conflict`` from ``begin_import`` /
``begin_migrate``) is folded into the progress, so the procedure takes back the import marks and
stops, as the CLI does; a refused claim stops it with the node's sentence. The same loop drives a
replicated cluster's hints (:class:`kvcore.slotmove.Hints`, :func:`sim.replicas.mend_hints`):
claims and waits only.

Like an operator's ``redis-cli`` whose connection drops, a move stops when a node it acted on
crashes (its object changes, even if it restarted since): the open migration stays until
``fix``. The caller records a stop as a fault (``reshard_aborted`` for a move,
``fix_unfixed`` for what a fix could not do, ``hints_failed`` for hints).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, cast

from kvcore import errors
from kvcore.node import BATCH_TRIES
from kvcore.slotmove import (
    CHUNK,
    UNREACHABLE,
    Assign,
    Clear,
    Done,
    Finish,
    Goal,
    Import,
    Migrate,
    MoveKeys,
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
    next_steps,
)
from kvcore.slots import SlotMap
from kvcore.states import State

if TYPE_CHECKING:
    from sim.cluster import SimCluster

#: simulated seconds between two looks while waiting for every node to learn a claim
POLL = 0.1
#: simulated seconds to wait for gossip to carry a claim to every live node
WAIT_TIMEOUT = 30.0

Outcome = tuple[bool, list[str]]


def runs_of(m: SlotMap) -> tuple[tuple[int, int, str | None, int], ...]:
    """A slot map's owned runs with their epochs."""
    out = []
    for part in m.to_text().split(";"):
        rng, _, rest = part.partition("=")
        owner, _, epoch = rest.rpartition("@")
        if owner:
            lo, _, hi = rng.partition("-")
            out.append((int(lo), int(hi), owner, int(epoch)))
    return tuple(out)


def observe(c: SimCluster, view: str) -> Snapshot:
    """Every node the cluster ever started, as an orchestrator would see it."""
    nodes: dict[str, NodeView] = {}
    for nid in c.ids:
        node = c.node(nid)
        if c.truth.get(nid) == "left":
            nodes[nid] = NodeView(nid, State.LEFT)
        elif node is None or node.lost_group is not None:
            # (a node that lost its state acts on nothing: realnet's snapshot says the same)
            nodes[nid] = NodeView(nid, UNREACHABLE)
        else:
            held = frozenset(node.store.slots())
            owner = node.slot_map.owner
            stray = frozenset(s for s in held if owner(s) != nid and s not in node.importing)
            # (read only where a plan asks it: of a target, about its sources; a scan per node of
            # a large cluster's views on every look would cost a reshard dearly)
            left = (frozenset(m for m, rec in node.membership.members.items() if rec.state == State.LEFT)
                    if node.importing else None)
            nodes[nid] = NodeView(nid, State.ALIVE, runs_of(node.slot_map), dict(node.migrating),
                                  dict(node.importing), held, stray, left)
    return Snapshot(nodes, view)


def drive(c: SimCluster, goal: Goal, view: str, batch: int, max_failures: int,
          retry_delay: float) -> Generator[Any, Any, Outcome]:
    """Carry out ``goal``; returns (done, the problems that stopped it)."""
    progress = Progress()
    acted: dict[str, Any] = {}  # node id -> the object acted on: another object means a crash
    snap = observe(c, view)
    stalled, last = 0, -1.0
    while True:
        # a plan that acts without time passing, again and again, would hang the simulation
        stalled, last = (stalled + 1, last) if c.env.now == last else (0, c.env.now)
        if stalled > 1000:
            return False, ["the procedure made no progress (a step that changes nothing)"]
        steps = next_steps(snap, goal, progress, chunk=CHUNK, max_failures=max_failures,
                           retry_delay=retry_delay)
        again = False
        for step in steps:
            if isinstance(step, Problem):
                return False, [s.text for s in steps if isinstance(s, Problem)]
            if isinstance(step, Done):
                return True, []
            for nid, obj in acted.items():
                if c.node(nid) is not obj:
                    return False, [f"node {nid} crashed while slots were moving"]
            node_id = getattr(step, "node", None)
            if node_id is not None:
                if c.node(node_id) is None:
                    again = True
                    break  # it went down since we looked: look again
                acted.setdefault(node_id, c.node(node_id))
            result = yield from _act(c, step, progress, batch)
            if isinstance(result, str):
                return False, [result]
            progress = result
            # a round of move-keys changes no mark: plan again from the same look, unless it failed
            if not isinstance(step, MoveKeys) or progress.retry or progress.refused:
                again = True
            if progress.refused and not isinstance(step, TakeBack):
                break  # look again, to take back; after it, the Problem ends it (realnet.admin)
        if again:
            snap = observe(c, view)


def _act(c: SimCluster, step: Step, progress: Progress, batch: int) -> Generator[Any, Any, Progress | str]:
    """One step on the node objects; the new progress, or a sentence that stops the procedure."""
    env = c.env
    if isinstance(step, WaitOwned):
        ok = yield from _wait_owned(c, step)
        return progress if ok else (f"timed out after {WAIT_TIMEOUT:g}s waiting for {', '.join(step.nodes)} "
                                    f"to see {step.target} own slots {fmt(step.slots)}")
    if isinstance(step, WaitLeft):
        ok = yield from _wait_left(c, step)
        return progress if ok else (f"timed out after {WAIT_TIMEOUT:g}s waiting for {step.node} to learn that "
                                    f"{step.member} left")
    node = c.node(step.node)  # type: ignore[union-attr]
    if isinstance(step, Import | Migrate):
        begin = node.begin_import if isinstance(step, Import) else node.begin_migrate
        peer = step.source if isinstance(step, Import) else step.target
        for s in step.slots:
            try:
                begin(s, peer)
            except errors.StoreError as e:  # a guard: the views disagree, or it moves elsewhere
                return progress.after_refusal(f"slot {s}: {e.message}")
        return progress
    if isinstance(step, MoveKeys):
        if step.delay:
            yield env.timeout(step.delay)
        rows = yield from _move_keys(c, node, step.slots, batch)
        return progress.after_move_keys(rows)
    if isinstance(step, Finish):
        try:
            epoch = node.finish_import(list(step.slots))
        except errors.Conflict as e:  # the finish guard: a source's keys would be orphaned
            return e.message
        c.trace.record((env.now, "slots_moved", len(step.slots), step.node, epoch))
        return progress
    if isinstance(step, RollBack):
        try:
            node.rollback_migration(step.slots)
        except errors.Conflict as e:
            return e.message
        return progress
    if isinstance(step, TakeBack | Clear):
        for s in step.slots:
            try:
                node.abort_migration(s)
            except errors.Conflict:
                # a batch of the slot is unacknowledged: resend it (the target answers a batch it
                # stored without applying it again), then clear
                yield from _move_keys(c, node, (s,), batch)
                if c.node(step.node) is not node:
                    return f"node {step.node} crashed while its marks were cleared"
                try:
                    node.abort_migration(s)
                except errors.Conflict as e:
                    return e.message
        return progress
    if isinstance(step, Assign | Readopt):
        try:
            node.claim_slots(fmt(step.slots), step.epoch)
        except errors.StoreError as e:  # refused (as realnet's 409 stops its driver)
            return e.message
        c.trace.record((env.now, "slots_claimed", len(step.slots), step.node, step.epoch))
        return progress
    raise AssertionError(f"unexpected step {step!r}")


def _move_keys(c: SimCluster, node: Any, slots: tuple[int, ...], batch: int) -> Generator[Any, Any, list[tuple[int, int, str]]]:
    """One ``migrate_keys`` per slot, all at once; each answer awaited (or the source's silence)."""
    env = c.env
    events = {}
    for s in slots:
        ev = env.event()
        node.migrate_keys(s, batch, lambda n, err, ev=ev: None if ev.triggered else ev.succeed((n, err)))
        events[s] = ev
    waiting = [e for e in events.values() if not e.triggered]
    # kvcore answers an unacknowledged batch after BATCH_TRIES forward timeouts; a crashed source
    # never answers: look at it every forward timeout
    for _ in range(BATCH_TRIES + 1):
        if all(e.triggered for e in waiting) or c.node(node.id) is not node:
            break
        yield env.all_of(waiting) | env.timeout(c.config.forward_timeout)
    # a triggered event's value is the (moved, error) pair migrate_keys' done was called with
    return [(s, *cast("tuple[int, str]", ev.value)) if ev.triggered else (s, 0, f"node {node.id} did not answer")
            for s, ev in events.items()]


def _until(c: SimCluster, done: Callable[[], bool]) -> Generator[Any, Any, bool]:
    """Poll ``done`` every ``POLL`` simulated seconds: True once it holds, False after
    ``WAIT_TIMEOUT`` (realnet's ``Admin.wait``, in simulated time)."""
    deadline = c.env.now + WAIT_TIMEOUT
    while not done():
        if c.env.now >= deadline:
            return False
        yield c.env.timeout(POLL)
    return True


def _wait_owned(c: SimCluster, step: WaitOwned) -> Generator[Any, Any, bool]:
    """Until every node of ``step.nodes`` (still up and in the cluster) sees ``step.target`` own
    the moved slots, none of them migrating."""
    def there(nid: str) -> bool:
        n = c.node(nid)
        return n is None or c.truth.get(nid) == "left" or all(
            n.slot_map.owner(s) == step.target and s not in n.migrating for s in step.slots)

    return (yield from _until(c, lambda: all(there(nid) for nid in step.nodes)))


def _wait_left(c: SimCluster, step: WaitLeft) -> Generator[Any, Any, bool]:
    """Until ``step.node``'s own membership holds ``step.member`` as left (or the node is down:
    the next look says what to do then)."""
    def learned() -> bool:
        n = c.node(step.node)
        return n is None or n.membership.state_of(step.member) == State.LEFT

    return (yield from _until(c, learned))


__all__ = ["POLL", "WAIT_TIMEOUT", "drive", "observe", "runs_of"]
