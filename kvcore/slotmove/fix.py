"""``fix``: close every open migration and mend the map, slot by slot (the package docstring,
**Fix**)."""

from __future__ import annotations

from dataclasses import dataclass, field

from kvcore.rebalance import Move
from kvcore.slotmove.model import (
    UNREACHABLE,
    Assign,
    Clear,
    Done,
    Finish,
    Fix,
    MoveSlots,
    NodeView,
    Problem,
    Progress,
    Readopt,
    RollBack,
    Snapshot,
    Step,
    WaitLeft,
    WaitOwned,
    fmt,
)
from kvcore.slotmove.move import move_steps
from kvcore.slots import NUM_SLOTS, format_ranges, slots_to_ranges
from kvcore.states import State


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
    #: (target, source, slots) to adopt once the target's own view holds the source as left (it
    #: refuses to finish before: :func:`kvcore.node.guards.check_finish`)
    learn_left: list[tuple[str, str, list[int]]] = field(default_factory=list)
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
                    or self.converge or self.regather or self.collided or self.adopt or self.learn_left)

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
        for nid, source, slots in self.learn_left:
            out.append(f"wait for {nid} to learn that {source} left, then let {nid} finish importing slots "
                       f"{fmt(slots)} (the keys {source} had not moved yet left with it)")
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
    """Decide, slot by slot, how to close every open migration and mend the map (the package docstring, **Fix**)."""
    plan = FixPlan()
    marked = _plan_marks(snap, plan)
    if (plan.clear or plan.rollback or plan.resume or plan.converge or plan.collided or plan.adopt
            or plan.learn_left):
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
    learn_left: dict[tuple[str, str], list[int]] = {}
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
            # source back, which the sentence below asks, cannot be done); once the target knows
            # the source left, which its guard asks
            known = snap.nodes[target].left
            if known is None or source in known:
                adopt.setdefault(target, []).append(slot)
            else:
                learn_left.setdefault((target, source), []).append(slot)
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
    plan.learn_left = [(t, src, sl) for (t, src), sl in sorted(learn_left.items())]
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


def fix_steps(snap: Snapshot, goal: Fix, p: Progress, chunk: int, max_failures: int,
               retry_delay: float) -> list[Step]:
    plan = plan_fix(snap, goal.assign_unowned)
    if plan.clear or plan.rollback:
        return [*(Clear(n, tuple(s)) for n, s in plan.clear), *(RollBack(n, tuple(s)) for n, s in plan.rollback)]
    if plan.adopt or plan.learn_left:
        return [*(Finish(nid, tuple(given)) for nid, given in plan.adopt),
                *(WaitLeft(nid, source, tuple(given)) for nid, source, given in plan.learn_left)]
    if plan.collided:
        base = snap.max_epoch()
        return [Readopt(nid, tuple(given), base + i) for i, (nid, given) in enumerate(plan.collided, 1)]
    if plan.resume:
        mv = plan.resume[0]
        slots = tuple(s for lo, hi in mv.slots for s in range(lo, hi + 1))
        return move_steps(snap, MoveSlots(mv.target, slots, mv.source), p, chunk, max_failures, retry_delay)
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
        return move_steps(snap, MoveSlots(mv.target, slots, mv.source), p, chunk, max_failures, retry_delay)
    if plan.problems:
        return [Problem(t) for t in plan.problems]
    return [Done()]
