"""The admin door's loss guards: admin requests that would drop or orphan keys, refused.

Theory of operation
-------------------
Some admin verbs are legitimate steps of a slot move and, asked at the wrong moment, lose data
(issue 10: a claim of another node's slots left 92 of 300 keys answering 404 on every node; an
abort on the importer after a batch was acknowledged deleted the only copy; a forced leave lost
101 of 300 keys). Each such verb asks the functions here first; a request that would lose keys
raises :class:`~kvcore.errors.Conflict` (409) with a sentence naming what would be lost, unless
the request says it accepts the loss (``accept_loss``: the HTTP body's ``"accept_loss": true``,
``storelab cluster fix --accept-loss``, a sim verb's argument). What the node can know is its
own view, so each guard is about what this node holds or sees:

- **claiming or assigning a slot another member owns** (:func:`check_taking`): the owner's keys
  of that slot would answer 404 everywhere. Allowed when the owner is this node, nobody, a
  member it holds *left*, or one it no longer knows (its keys left with it); a slot this node
  itself already claims (a same-epoch collision that ``fix`` settles by claiming again) too. And,
  on a node in a replicated group, a slot of a member of that group (one its log's
  configurations name): the group serves every slot on every node and every key is in its log,
  so the map is only a routing hint and a claim of it orphans no key (``storelab cluster
  remove-node``/``add-node`` hand the hints of a departed voter to the voters, and give a new
  voter its share, this way). A member outside the group keeps the guard: its keys are its own.
- **finishing an import the keys did not make** (:func:`check_finish`): ``finish`` claims the
  slots at a new epoch, like ``claim``, so keys still on another member are orphaned. Allowed for
  a slot this node imports whose source told it, by the migration's end batch
  (:mod:`kvcore.node.migration`), that it holds no key of it any more, or whose source left (not
  one merely forgotten: a crashed source is reaped, and may come back with its keys); and for a slot it does not import that nobody else may hold keys of (owned
  by this node already, a repeated finish; by nobody; by a member gone for good), as for a claim.
  A slot it imports that a third member owns is refused as a claim of it would be.
- **assigning away slots this node holds keys of** (:func:`check_dropping`): ``assign``
  replaces the node's claim; keys of slots it gives up would be served by nobody.
- **aborting a migration whose keys moved** (:func:`check_abort`): on the importer, the keys it
  holds for a slot it does not own may be the only copy (the source deletes a key once its
  batch is acknowledged); on the source, keys already acknowledged by the target would be
  orphaned there while the source serves the slot without them.
- **forgetting a member** (:func:`check_forget`, a forced leave on behalf of a dead member):
  only a member held dead and outside this node's replicated group; one that owns slots here or
  is the other end of a migration here only with ``accept_loss`` (once left, it is gone with its
  keys to the guards above).
- **leaving with keys** (:func:`check_leave`): a node that owns slots, has live peers and holds
  keys loses them all by leaving; ``force`` used to be enough, now only ``accept_loss`` is.

Epochs an operator gives are bounded too (:func:`check_epoch`): ``0 <= epoch <= MAX_ACCEPTED``
(int64 less a margin, :mod:`kvcore.bounds`), so that every epoch a node holds can be sent on and one above it still fits.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from kvcore import errors
from kvcore.bounds import MARGIN, MAX_ACCEPTED, acceptable
from kvcore.slots import (
    SlotRangeError,
    format_ranges,
    parse_ranges,
    ranges_to_slots,
    slots_to_ranges,
)
from kvcore.states import State

if TYPE_CHECKING:
    from kvcore.node.node import Node

_ACCEPT = "send accept_loss to do it anyway and lose them"


def _fmt(slots: Iterable[int]) -> str:
    return format_ranges(slots_to_ranges(sorted(slots)))


def check_epoch(epoch: int, name: str = "epoch") -> None:
    """BadRequest unless ``0 <= epoch <= MAX_ACCEPTED`` (:mod:`kvcore.bounds`: a signed 64-bit
    integer less a margin, so that every epoch a node holds can be sent on and one above it fits)."""
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not acceptable(epoch):
        raise errors.BadRequest(
            f"{name} {epoch!r} is out of range: epochs are 0..{MAX_ACCEPTED} "
            f"(a signed 64-bit integer less a margin of {MARGIN}, kvcore.bounds)"
        )


def check_taking(node: Node, slots: Iterable[int], accept_loss: bool) -> None:
    """Conflict when claiming ``slots`` would take slots another member may hold keys of (never
    slots of a member of this node's replicated group: the map is only a hint there, module
    docstring)."""
    if accept_loss:
        return
    sm = node.slot_map
    claimed = _own_claim(node)
    group = group_members(node)
    taken: dict[str, list[int]] = {}
    for s in slots:
        owner = sm.owner(s)
        if owner is None or owner == node.id or s in claimed or owner in group:
            continue
        state = node.membership.state_of(owner)
        if state is None or state == State.LEFT:
            continue  # gone for good: its keys left with it
        taken.setdefault(owner, []).append(s)
    if taken:
        owner, lost = sorted(taken.items())[0]
        state = node.membership.state_of(owner)
        raise errors.Conflict(
            f"slot{'s' if len(lost) > 1 else ''} {_fmt(lost)} {'are' if len(lost) > 1 else 'is'} owned by "
            f"{owner} ({state}) in node {node.id}'s map: claiming them would orphan the keys {owner} holds "
            f"for them; move them with reshard, or {_ACCEPT}"
        )


def group_members(node: Node) -> frozenset[str]:
    """Every node a configuration of this node's replicated group names, as far back as its log
    holds them (the current one, uncommitted ones, and those since its snapshot, so a voter
    removed moments ago is still one): the owners whose keys are in the group's log, so whose
    slots' hints a member may claim without orphaning a key. Empty outside a group. A member
    that never was in the group (an unreplicated node of the same cluster) holds keys only
    it has, and its slots stay guarded."""
    replica = node.replica
    if replica is None:
        return frozenset()
    return frozenset(n for _, conf in replica.raft.log.confs for n in (*conf.voters, *conf.learners))


def check_finish(node: Node, slots: Iterable[int], accept_loss: bool) -> None:
    """Conflict when claiming ``slots`` as imported would orphan keys another member holds."""
    if accept_loss:
        return
    mig = node.migration
    owner_of = node.slot_map.owner
    unsent: dict[str, list[int]] = {}  # source -> imported slots it has not said are empty
    taken: dict[tuple[str, str], list[int]] = {}  # (owner, source or "") -> slots it would lose
    for s in slots:
        owner = owner_of(s)
        source = mig.importing.get(s)
        if source is not None and mig.drained.get(s) != source and not _left(node, source):
            unsent.setdefault(source, []).append(s)
        if owner is not None and owner not in (node.id, source) and not _gone(node, owner):
            taken.setdefault((owner, source or ""), []).append(s)
    if unsent:
        source, lost = sorted(unsent.items())[0]
        it = "them" if len(lost) > 1 else "it"
        raise errors.Conflict(
            f"node {node.id} imports slot{'s' if len(lost) > 1 else ''} {_fmt(lost)} from {source} "
            f"({node.membership.state_of(source)}), which has not told it that it holds no key of {it} any "
            f"more: finishing now would orphan the keys {source} still holds of {it}; move them first "
            f"(move-keys until it answers 0 moved; storelab cluster fix resumes the move), or {_ACCEPT}"
        )
    if taken:
        (owner, source), lost = sorted(taken.items())[0]
        many = len(lost) > 1
        it = "them" if many else "it"
        what = (f"imports slot{'s' if many else ''} {_fmt(lost)} from {source}, but {'they are' if many else 'it is'}"
                if source else
                f"is not importing slot{'s' if many else ''} {_fmt(lost)}, which {'are' if many else 'is'}")
        raise errors.Conflict(
            f"node {node.id} {what} owned by {owner} ({node.membership.state_of(owner)}) in its map: "
            f"finishing would claim {it} and orphan the keys {owner} holds of {it}; move them with reshard, "
            f"or {_ACCEPT}"
        )


def _left(node: Node, member: str) -> bool:
    """Left the cluster (its keys left with it). Not a member no longer known: a crashed source
    is forgotten after the reap time and may come back with its disk, holding the keys an
    import was to take (an audit finished such an import and read an acknowledged key as 404)."""
    return node.membership.state_of(member) == State.LEFT


def _gone(node: Node, member: str) -> bool:
    """Left, or no longer known: its keys left with it."""
    state = node.membership.state_of(member)
    return state is None or state == State.LEFT


def check_dropping(node: Node, keep: Iterable[int], accept_loss: bool) -> None:
    """Conflict when replacing this node's claim by ``keep`` gives up slots it holds keys of."""
    if accept_loss:
        return
    kept = set(keep)
    owner = node.slot_map.owner
    dropped = [s for s in node.store.slots() if s not in kept and owner(s) == node.id]
    if dropped:
        n = sum(node.store.count_in_slot(s) for s in dropped)
        raise errors.Conflict(
            f"node {node.id} holds {n} keys of slots {_fmt(dropped)} that this claim gives up; "
            f"nobody would serve them: move them first, or {_ACCEPT}"
        )


def check_abort(node: Node, slot: int, accept_loss: bool) -> None:
    """Conflict when rolling back the open marks of ``slot`` would drop or orphan keys."""
    if accept_loss:
        return
    mig = node.migration
    mine = node.slot_map.owner(slot) == node.id
    if slot in mig.importing and not mine:
        held = node.store.count_in_slot(slot)
        if held:
            raise errors.Conflict(
                f"node {node.id} holds {held} keys of slot {slot} imported from {mig.importing[slot]}, "
                "which deleted them once they were acknowledged: aborting would delete the only copy; "
                f"finish the import (storelab cluster fix), or {_ACCEPT}"
            )
    if slot in mig.migrating and mine:
        moved = mig.moved_out.get(slot, 0)
        if moved:
            raise errors.Conflict(
                f"{moved} keys of slot {slot} already moved from node {node.id} to {mig.migrating[slot]}: "
                "aborting would orphan them there while this node serves the slot without them; "
                f"finish the migration (storelab cluster fix), or {_ACCEPT}"
            )


def check_leave(node: Node, force: bool, accept_loss: bool, drains: bool) -> None:
    """Conflict when leaving would lose this node's keys (see the module docstring)."""
    owned = node.slot_map.slot_counts().get(node.id, 0)
    if not owned or not node.membership.live_members() or drains:
        return
    keys = node.store.count()
    if not force and not accept_loss:
        raise errors.Conflict(
            f"node {node.id} owns {owned} slots; move them to other nodes first "
            "(storelab cluster remove-node), or send {\"force\": true} to leave anyway"
            + (" (with accept_loss: it holds keys)" if keys else "")
        )
    if keys and not accept_loss:
        raise errors.Conflict(
            f"node {node.id} owns {owned} slots and holds {keys} keys, which leaving would lose; move "
            f"its slots first (storelab cluster remove-node), or {_ACCEPT}"
        )


def check_forget(node: Node, member: str, accept_loss: bool) -> None:
    """Conflict (or BadRequest, NotFound) when holding ``member`` left on its behalf (a forced
    leave, :meth:`kvcore.node.Node.forget_member`) is not this node's to do or would orphan keys:
    only a member this node holds *dead* is forgotten (a live one leaves itself; this node is not
    a member of itself to forget), never one its replicated group's configuration counts (a
    configuration change removes it first), and, unless ``accept_loss``, not one that owns slots
    in this node's map or that a migration here involves: to the other guards a member that left
    is gone for good with its keys, so its slots could be claimed and its imports finished."""
    if member == node.id:
        raise errors.BadRequest(f"node {node.id} cannot forget itself; to leave, use leave")
    state = node.membership.state_of(member)
    if state is None:
        raise errors.NotFound(f"node {node.id} knows no member {member!r}")
    if state != State.DEAD and state != State.LEFT:
        raise errors.Conflict(
            f"node {node.id} holds {member} {state}: only a dead member is forgotten; a live one is "
            "made to leave (storelab cluster remove-node)"
        )
    replica = node.replica
    if replica is not None:
        conf = replica.raft.log.conf()
        if member in conf.voters or member in conf.learners:
            role = "voter" if member in conf.voters else "learner"
            raise errors.Conflict(
                f"{member} is a {role} of node {node.id}'s replicated group; a configuration change "
                "removes it first (storelab cluster remove-node)"
            )
    if accept_loss:
        return
    owned = node.slot_map.slot_counts().get(member, 0)
    moving = sorted({s for s, peer in [*node.migrating.items(), *node.importing.items()] if peer == member})
    if owned or moving:
        what = (f"owns {owned} slot{'s' if owned != 1 else ''} in node {node.id}'s map" if owned
                else f"is the other end of node {node.id}'s open migration of slots {_fmt(moving)}")
        raise errors.Conflict(
            f"{member} {what}: forgetting it would orphan the keys it holds (a member that left is gone "
            f"with its keys); bring it back, or {_ACCEPT}"
        )


def _own_claim(node: Node) -> set[int]:
    """The slots this node advertises as its own claim (what others route to it)."""
    text = node.membership.me.slots
    if not text:
        return set()
    try:
        return set(ranges_to_slots(parse_ranges(text)))
    except SlotRangeError:
        return set()


__all__ = ["check_abort", "check_dropping", "check_epoch", "check_finish", "check_forget", "check_leave",
           "check_taking", "group_members"]
