"""The SWIM protocol proper: one node's :class:`Membership`, its lifecycle, input and merge rules.

Theory of operation
-------------------
:class:`Membership` is driven by two things only: peer messages, through :meth:`Membership.handle`
(one table, :attr:`Membership.HANDLERS`, maps each of SWIM's six message kinds to its handler, and
:attr:`Membership.HANDLES` is derived from it), and the timers it sets on the Runtime (probe,
gossip, push-pull, suspicion, join). It sends through the ``send`` callable it is given and tells
its listeners what changed with a :class:`~kvcore.states.MemberEvent`. A message of a kind the
table does not name, or an update in a Gossip that is not Alive/Suspect/Dead, is counted in
``counters["malformed"]`` and dropped (peer input is never trusted). The node routes only
:attr:`Membership.HANDLES` kinds here and counts other kinds in its own ``NodeStats.malformed``,
so no message is counted twice.

This module owns the merge rules (SWIM §4.2, :func:`~kvcore.membership.formulas.overrides`;
memberlist ``state.go``): every change of a member's state goes through :meth:`Membership.apply`
(Alive / Suspect / Dead, again one table) and ``_set_state``, and a node that hears itself
suspected or declared dead refutes by raising its incarnation. The rest of the protocol is in
mixins, one concern each: :mod:`~kvcore.membership.probe` (failure detection), :mod:`~kvcore.membership.suspicion`
(suspicion timers), :mod:`~kvcore.membership.sync` (push-pull and joining) and
:mod:`~kvcore.membership.gossip` (dissemination, SWIM §4.1: piggybacking from the
:class:`~kvcore.membership.broadcast.BroadcastQueue`, and the gossip rounds).

Incarnation numbers are kept in the Runtime's durable ``storage`` (:data:`INCARNATION_KEY`), so a
node that crashes and restarts comes back with a higher incarnation than any it used before;
without durable storage, it learns its old incarnation from the cluster's view of it and refutes.
Its own slot claim is kept there too (:data:`CLAIM_KEY`), and so is every other member it has
heard of (:data:`MEMBER_PREFIX` + id: addresses, incarnation, claim; Redis's ``nodes.conf``), so
that a node restarted without seeds knows whom to rejoin (:meth:`Membership.restore_members`).
Members of a static configuration are not written until something about them changes: the
configuration names them again at the next start.

**Who may say what** (issue 10). An update is judged on its own fields, whoever relayed it
(epidemic dissemination), with two exceptions that need the *sender*, the member the transport
authenticated (``handle``'s ``src``; realnet binds it to the connection's handshake):

- An Alive that changes the addresses of a member held alive or suspect is taken only from that
  member itself (``sender == node``); from anyone else it is ignored and counted
  (``address_refused``). Otherwise any member could make the others dial it for another id.
  memberlist refuses such a change from anyone ("conflicting address"); we take it from the
  member itself, which is how a member restarted on other ports is heard at once by the nodes it
  probes, and a member held dead or left may still come back at a new address through anyone
  (the reclaim rule below), which is how a restart behind a seed spreads.
- Numbers stay below the wire's cap with room for our own increments (:mod:`kvcore.bounds`): a
  Suspect or Dead naming an incarnation above ``MAX_ACCEPTED``, an Alive naming *us* above it,
  and an Alive claiming slots at an epoch above it are ignored and counted (``out_of_range``).
  So a refutation (at most ``MAX_ACCEPTED + 1``) always fits on the wire.

``synced`` says that this node has exchanged full state with a member since it started (a join
reply, or a push-pull either way): what a node that may hold a stale view waits for before it
serves (:mod:`kvcore.node.routing`).
"""

from __future__ import annotations

import bisect
from bisect import insort
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import repeat
from operator import attrgetter, getitem, gt
from types import MappingProxyType
from typing import Any, ClassVar

from kvcore.bounds import INT64_MAX, MAX_ACCEPTED
from kvcore.dispatch import Dispatch, Handler
from kvcore.membership.awareness import Awareness
from kvcore.membership.broadcast import BroadcastQueue, Update
from kvcore.membership.config import SwimConfig
from kvcore.membership.formulas import overrides, push_pull_scale
from kvcore.membership.gossip import Dissemination, bits_of, randbelow_of
from kvcore.membership.member import ALIVE, DEAD, LEFT, SUSPECT, UP, Listener, Member
from kvcore.membership.probe import Probing, _Probe, _Relay
from kvcore.membership.suspicion import Suspicions, _Suspicion
from kvcore.membership.sync import AntiEntropy
from kvcore.membership.table import (
    _NOTE_MAX,
    LazyRound,
    MemberTable,
    SortedIds,
    learned_record,
    numbers,
    static_view,
)
from kvcore.messages import (
    Alive,
    Dead,
    Gossip,
    MemberState,
    Nack,
    PingReq,
    PushPull,
    Suspect,
    SwimAck,
    SwimPing,
)
from kvcore.runtime import Runtime, TimerHandle
from kvcore.states import MemberEvent, State

INCARNATION_KEY = "swim.incarnation"
#: durable storage key written by a graceful :meth:`Membership.leave` (its value: the incarnation
#: it left at): the data directory of a member that left its cluster, which realnet will not
#: start again as if nothing happened (a static member excepted: its configuration lists it)
LEFT_KEY = "swim.left"
#: our own latest slot claim ("<epoch> <ranges>"), so a restart does not forget slots we took
CLAIM_KEY = "swim.claim"
#: every other member this node knows, one storage entry each: ``member:<id>``
MEMBER_PREFIX = "member:"
#: the events after which a member's stored entry is written again (suspect and dead are not:
#: a restarted node finds out who is down by itself, and a failure storm must not write)
_PERSISTED = (MemberEvent.JOIN, MemberEvent.UPDATE, MemberEvent.ALIVE, MemberEvent.LEFT)


#: member id -> its storage key, MEMBER_PREFIX + id (:func:`_member_key`)
_member_keys: dict[str, str] = {}
#: ids kept there at most (past it the dict starts again: only sharing is lost, never a key)
_MEMBER_KEYS_MAX = 1 << 17


def encode_claim(slots: str, epoch: int) -> bytes:
    """A slot claim as storage keeps it (``CLAIM_KEY``, and a node's remembered lost claim):
    ``b"<epoch> <slots>"``."""
    return f"{epoch} {slots}".encode()


def decode_claim(raw: bytes) -> tuple[str, int]:
    """:func:`encode_claim` read back: (slots, epoch)."""
    epoch_s, _, slots = raw.decode().partition(" ")
    return slots, int(epoch_s)


def _member_key(node: str) -> str:
    """``node``'s storage key, one string per id process-wide: every node that learns a member
    writes it under the same key object (a thousand nodes joining write a million), rather than
    a string of its own per write that its storage then keeps."""
    key = _member_keys.get(node)
    if key is None:
        if len(_member_keys) >= _MEMBER_KEYS_MAX:
            _member_keys.clear()
        key = _member_keys[node] = MEMBER_PREFIX + node
    return key


_node_of = attrgetter("node")
#: an Alive's node, read through its slot descriptor: TypeError for any other kind of update
_alive_node_of: Callable[[Any], str] = Alive.node.__get__  # type: ignore[attr-defined]
_incarnation_of = attrgetter("incarnation")


class Membership(Probing, Suspicions, AntiEntropy, Dissemination):
    """One node's SWIM membership. Drive it with :meth:`handle` and the timers it sets."""

    #: SWIM's peer messages -> the method that handles each (the one list of what we take)
    HANDLERS: ClassVar[Mapping[type, str]] = MappingProxyType({
        SwimPing: "_on_ping",
        SwimAck: "_on_ack",
        PingReq: "_on_ping_req",
        Nack: "_on_nack",
        Gossip: "_on_gossip",
        PushPull: "_on_push_pull",
    })
    #: the message kinds :meth:`handle` takes, derived from :attr:`HANDLERS` (the node routes these)
    HANDLES: ClassVar[frozenset[type]] = frozenset(HANDLERS)
    #: membership updates -> the merge rule that applies each (:meth:`apply`)
    UPDATE_HANDLERS: ClassVar[Mapping[type, str]] = MappingProxyType({
        Alive: "_on_alive",
        Suspect: "_on_suspect",
        Dead: "_on_dead",
    })

    def __init__(
        self,
        runtime: Runtime,
        send: Callable[[str, Any], None],
        config: SwimConfig,
        addr: str,
        peer_addr: str,
    ) -> None:
        self.rt = runtime
        #: the Runtime's seeded random (never the module-level functions of ``random``)
        self._rng = runtime.random
        #: ``self._rng.randrange(n)`` for n > 0, the same draws with less overhead (gossip.randbelow_of)
        self._below = randbelow_of(self._rng)
        #: ``self._rng.getrandbits`` when ``_below`` draws by it (gossip.bits_of), else None
        self._bits = bits_of(self._rng)
        self._send = send
        self.config = config.validate()
        self.id = runtime.node_id
        stored = runtime.storage.get(INCARNATION_KEY)
        inc = int(stored.decode()) + 1 if stored else 0
        #: this node lived before (a crash and restart): what it knows may be stale
        self.restarted = stored is not None
        self.me = Member(self.id, addr, peer_addr, inc, ALIVE, runtime.now())
        #: every member this node knows, itself included (shared with other nodes built from the
        #: same static configuration until this node learns otherwise: kvcore.membership.table)
        self.members = MemberTable()
        self.members[self.id] = self.me
        self._persist_incarnation()
        self.awareness = Awareness(config.awareness_max_multiplier)
        self.broadcasts = BroadcastQueue()
        self.broadcasts.on_first = self._gossip_wake
        #: the retransmit limit (formulas.retransmit_limit) and the live count it was taken for
        self._limit_for = -1
        self._limit = 0
        self.listeners: list[Listener] = []
        #: told ``(slots, epoch)`` when a peer reports a claim of *this* node at an epoch above the
        #: one it advertises (it lost its state: :meth:`kvcore.node.Node._on_own_claim`)
        self.on_own_claim: Callable[[str, int], None] | None = None
        self.running = False
        #: the member whose message is being handled (None: a local call), see "Who may say what"
        self._sender: str | None = None
        self.leaving = False
        self.joined = False
        #: full state was exchanged with a member since start (join reply or push-pull)
        self.synced = False
        #: write other members to storage as they change (off while a static config is added)
        self.persist_members = True
        self.seeds: list[str] = []
        self._seq = runtime.random.getrandbits(32)
        self._probe_order: list[str] = []
        self._probe_index = 0
        #: the probe round over a pool larger than LAZY_ROUND_MIN (else None: _probe_order)
        self._lazy_round: LazyRound | None = None
        self._probe: _Probe | None = None
        self._pending_seqs: dict[int, _Probe] = {}
        self._relays: dict[int, _Relay] = {}
        self._suspicions: dict[str, _Suspicion] = {}
        self._timers: dict[str, TimerHandle] = {}
        self._state_cache: tuple[MemberState, ...] | None = None
        #: sorted ids of live (alive/suspect) and of dead members, self excluded: the pools that
        #: probes, gossip and push-pull draw from, kept up to date instead of rebuilt per message
        self._live_ids = SortedIds()
        self._dead_ids: list[str] = []
        #: sorted ids of members that left (self excluded): with _dead_ids, the ones reaping visits
        self._left_ids: list[str] = []
        self._join_round = 0
        self._join_queue: list[str] = []
        self._join_timer: TimerHandle | None = None
        #: events by name (probes, refutes, malformed, ...), for views and metrics
        self.counters: dict[str, int] = {}
        # the tables bound to this instance: one dict lookup per message
        self._dispatch = Dispatch({cls: getattr(self, name) for cls, name in self.HANDLERS.items()},
                                  self._malformed)
        #: an update is judged on its own fields (node, incarnation, source), never on who
        #: relayed it, so its handler takes no sender
        self._update_fns: dict[type, Callable[[Any], None]] = {
            cls: getattr(self, name) for cls, name in self.UPDATE_HANDLERS.items()}

    # --- lifecycle ---------------------------------------------------------------------------

    def add_static(self, members: Iterable[tuple[str, str, str, str, int]], *, quiet: bool = False) -> None:
        """Start knowing these members as alive at incarnation 0: (id, addr, peer_addr, slots, epoch).

        This is how a static cluster configuration seeds the view; SWIM then watches them.
        Our own entry takes its slots and epoch from here. They are not written to storage (the
        configuration names them again at the next start) until something about them changes.

        ``quiet``: listeners hear of our own entry only, not of a JOIN per member (a node that
        copied the configuration's slot map whole has nothing to learn from them). A quiet add
        to a fresh view of a list (a sequence) shares the records with every other node given
        the same list at the same time (:mod:`kvcore.membership.table`): O(1) per node.
        """
        self.persist_members = False
        try:
            if quiet and isinstance(members, Sequence) and len(self.members) == 1:
                self._share_static(members)
            else:
                self._add_static(members)
        finally:
            self.persist_members = True

    def _share_static(self, members: Sequence[tuple[str, str, str, str, int]]) -> None:
        view = static_view(members, self.rt.now())
        mine = view.records.get(self.id)
        if mine is not None:
            self.me.slots, self.me.epoch = mine.slots, mine.epoch
            self._emit(MemberEvent.UPDATE, self.me)
        self.members.set_base(view)
        # every static member is alive: the live pool is the view's ids without ourselves
        self._live_ids = SortedIds(view.ids, hide=self.id)
        self._state_cache = None

    def _add_static(self, members: Iterable[tuple[str, str, str, str, int]]) -> None:
        for nid, addr, peer_addr, slots, epoch in members:
            if nid == self.id:
                self.me.slots, self.me.epoch = slots, epoch
                self._emit(MemberEvent.UPDATE, self.me)
                continue
            if nid in self.members:
                continue
            # no random insertion into the probe order here: the first probe tick shuffles
            self._add(Member(nid, addr, peer_addr, 0, ALIVE, self.rt.now(), slots, epoch), probe_now=False)

    def restore_members(self, saved: Iterable[Member]) -> int:
        """Know again the members an earlier life kept: one we do not know yet is added (alive,
        unless it had left: whether it is up is for probes to find out), one we know at a lower
        incarnation (a static entry) takes the saved addresses and claim. Returns how many live
        members it added or updated: the ones a restarted node rejoins through."""
        live = 0
        for s in saved:
            m = self.members.get(s.node)
            state = LEFT if s.state == LEFT else ALIVE
            if m is None:
                self._add(Member(s.node, s.addr, s.peer_addr, s.incarnation, state, self.rt.now(),
                                 s.slots, s.epoch), probe_now=False)
            elif s.incarnation > m.incarnation:
                m = self.members.writable(s.node)
                m.incarnation, m.addr, m.peer_addr = s.incarnation, s.addr, s.peer_addr
                m.slots, m.epoch = s.slots, s.epoch
                if m.state != state:
                    self._set_state(m, state)
                else:
                    self._emit(MemberEvent.UPDATE, m)
            else:
                continue
            live += state == ALIVE
        return live

    def start(self, seeds: Iterable[str] = (), *, rejoin: bool | None = None) -> None:
        """Start probing and gossiping; join through ``seeds`` if any. Without seeds, a node that
        may hold a stale view (``rejoin``; by default: it ``restarted``) first syncs full state
        with a member it knows, as a join."""
        if self.running:
            return
        self.running = True
        rnd = self.rt.random
        c = self.config
        # random phases, so that nodes started together do not tick together
        self._after("probe", rnd.uniform(0, c.probe_interval), self._probe_tick)
        self._after("gossip", rnd.uniform(0, c.gossip_interval), self._gossip_tick)
        self._after("push_pull", rnd.uniform(0, push_pull_scale(c.push_pull_interval, self.num_live())),
                    self._push_pull_tick)
        self.seeds = [s for s in seeds if s not in (self.id, "@" + self.me.peer_addr)]
        if rejoin is None:
            rejoin = self.restarted
        if not self.seeds and rejoin and self._live_ids:
            # back from a crash: sync full state with a member we know before anything else, to
            # learn what changed while we were down (slots that moved, members that came)
            self.seeds = list(self._live_ids)
        if self.seeds:
            self._start_join_round()
        else:
            self.joined = True
        # announce ourselves (matters after a restart: our new incarnation)
        self.broadcasts.queue(self.me.to_alive())

    def join(self, seeds: Iterable[str]) -> None:
        """Join (another) cluster through ``seeds`` now (Redis's CLUSTER MEET)."""
        self.seeds = [s for s in seeds if s not in (self.id, "@" + self.me.peer_addr)]
        if not self.seeds:
            return
        self.joined = False
        self._join_round = 0
        if self._join_timer is not None:
            self._join_timer.cancel()
        if self.running:
            self._start_join_round()

    def stop(self) -> None:
        self.running = False
        self._gossip_due = None
        for t in self._timers.values():
            t.cancel()
        self._timers.clear()
        if self._probe is not None and self._probe.timer is not None:
            self._probe.timer.cancel()
        for r in self._relays.values():
            if r.timer is not None:
                r.timer.cancel()
        for s in self._suspicions.values():
            if s.timer is not None:
                s.timer.cancel()
        if self._join_timer is not None:
            self._join_timer.cancel()

    def leave(self) -> None:
        """Graceful leave: spread Dead(self) at a new incarnation; keep gossiping until stopped."""
        if self.leaving:
            return
        self.leaving = True
        # a member that left is out of the cluster: restarted, it must not rejoin by itself
        for name, _ in self.rt.storage.items(MEMBER_PREFIX):
            self.rt.storage.delete(name)
        self.rt.storage.put(LEFT_KEY, str(self.me.incarnation + 1).encode())
        self.rt.storage.sync()
        self.persist_members = False
        self._bump_incarnation(self.me.incarnation + 1)
        msg = Dead(node=self.id, incarnation=self.me.incarnation, source=self.id)
        self._set_state(self.me, LEFT)
        self.broadcasts.queue(msg)
        # push it out now rather than waiting for the next gossip round
        for nid in self._gossip_targets(self.config.gossip_nodes * 2):
            self._send(nid, Gossip(updates=(msg,)))

    def force_leave(self, node: str) -> bool:
        """Hold the dead member ``node`` left, on its behalf (serf's ``force-leave``, Redis's
        ``CLUSTER FORGET``): an operator's word that it will not come back as it was. Its record
        keeps its incarnation (only a member raises its own), and ``Dead(source=node)`` at that
        incarnation is gossiped: a node that still holds it alive or suspect at it holds it left
        too; one that holds it dead keeps its record (dead and left never change into each
        other by gossip), so the operator asks every live member. The record is reaped after
        ``reap_time`` as any left member's. Should the member come back after all, it hears
        itself declared gone and refutes with a higher incarnation, as any member does.
        Returns whether it changed anything (False: unknown, not dead, or ourselves)."""
        m = self.members.get(node)
        if m is None or node == self.id or m.state != DEAD:
            return False
        m = self.members.writable(node)
        self._clear_suspicion(node)
        self.broadcasts.queue(Dead(node=node, incarnation=m.incarnation, source=node))
        self._set_state(m, LEFT)
        self._count("forced_leaves")
        return True

    def stored_claim(self) -> tuple[str, int] | None:
        """The last claim :meth:`set_slots` made, as kept in durable storage: (slots, epoch)."""
        raw = self.rt.storage.get(CLAIM_KEY)
        return decode_claim(raw) if raw else None

    def set_slots(self, slots: str, epoch: int) -> None:
        """Advertise a new slot claim: a fresh incarnation carries it to everyone.

        Gossip alone is not enough for a claim: each update is sent ``retransmit_limit`` times
        by each node that learns it, one target per message, so in a small cluster (four nodes,
        a limit of 2 under the local preset) a member can miss every copy and hear the claim only
        at the next push-pull, 15 to 30 s later, while it routes to the old owner (a source
        keeps its migration marks until it hears it). As Redis Cluster broadcasts a PONG to
        every node after a slot's owner changes, the new Alive also goes straight to every live
        member, once; gossip still carries it on, to those this node does not know alive."""
        self.me.slots, self.me.epoch = slots, epoch
        self.rt.storage.put(CLAIM_KEY, encode_claim(slots, epoch))
        self.rt.storage.sync()
        self._announce(taken=True)

    def advertise(self, slots: str, epoch: int) -> None:
        """Advertise ``slots`` at ``epoch`` as this node's claim without taking it: nothing is
        kept as our claim (:meth:`stored_claim`) and no listener hears of it, so the node's own
        slot map does not change. For a node that lost its state: the cluster's record of it
        keeps the claim it had (see :meth:`_on_alive`), and saying the same keeps every record
        of it alike (a fresh incarnation carries it)."""
        self.me.slots, self.me.epoch = slots, epoch
        self._announce(taken=False)

    def _announce(self, taken: bool) -> None:
        """Our claim changed: a fresh incarnation carries it, queued for gossip and sent once
        straight to every live member (:meth:`set_slots`); ``taken``: the listeners hear of it
        (our own slot map takes it) between the two, as they always have."""
        self._bump_incarnation(self.me.incarnation + 1)
        alive = self.me.to_alive()
        self.broadcasts.queue(alive)
        if taken:
            self._emit(MemberEvent.UPDATE, self.me)
        if self.running and not self.leaving:
            news = Gossip(updates=(alive,))
            for nid in list(self._live_ids):
                self._send(nid, news)

    def sync_with(self, node: str) -> None:
        """Exchange full state with ``node`` now (one push-pull; it answers with its own): for a
        node that just learned it belongs to ``node``'s cluster and may know none of its members
        (a member that lost its state), so that what it says next (a leave) reaches them."""
        if self.running and node != self.id:
            self._send(node, PushPull(join=False, reply=False, members=self._local_state()))

    def _heard_own_claim(self, slots: str, epoch: int) -> None:
        """A peer's record of this node: a claim above the one we advertise is one we lost."""
        if epoch > self.me.epoch and slots and self.on_own_claim is not None and not self.leaving:
            self.on_own_claim(slots, epoch)

    # --- views -------------------------------------------------------------------------------

    def state_of(self, node: str) -> State | None:
        m = self.members.get(node)
        return None if m is None else m.state

    def address_of(self, node: str) -> str | None:
        m = self.members.get(node)
        return None if m is None else m.peer_addr

    def live_members(self) -> list[Member]:
        return [self.members[k] for k in self._live_ids]

    def num_live(self) -> int:
        """Live members, self included when not left: the N of the formulas."""
        return len(self._live_ids) + (1 if self.me.state in UP else 0)

    def view(self) -> list[dict[str, Any]]:
        return [self.members[k].view() for k in sorted(self.members)]

    # --- input -------------------------------------------------------------------------------

    def handlers(self) -> dict[type, Handler]:
        """:attr:`HANDLERS` bound to this instance, for a node's one dispatch table (a message
        then reaches its handler in one lookup, not through :meth:`handle`'s second one)."""
        return dict(self._dispatch.table)

    def handle(self, src: str, msg: Any) -> None:
        """Take one peer message; a kind not in :attr:`HANDLERS` is counted malformed, dropped."""
        self._dispatch(src, msg)

    def apply(self, u: Update) -> None:
        """Apply one membership update by the merge rules; any other kind is counted malformed."""
        if self._in_range(u):
            fn = self._update_fns.get(type(u))
            if fn is None:
                self._malformed(self.id, u)
            else:
                fn(u)

    def _apply_all(self, updates: Iterable[Update], src: str | None = None) -> None:
        """Apply a peer's updates; ``src`` is the member the transport authenticated as their
        sender (the address rule of :meth:`_on_alive` needs it)."""
        self._as_sender(src, self._apply_updates, updates)

    def _as_sender(self, src: str | None, merge: Callable[..., None], *args: Any) -> None:
        """``merge(*args)`` with ``src`` as :attr:`_sender` meanwhile, for a peer's updates
        (:meth:`_apply_all`) and its full state (``_merge_remote``); :meth:`_on_gossip` does the
        same inline."""
        self._sender = src
        try:
            merge(*args)
        finally:
            self._sender = None

    def _apply_updates(self, updates: Iterable[Update]) -> None:
        # Updates that are all Alives the known-alive notes cover change nothing (MemberTable's
        # docstring): passed over in one pass over the notes, with no look-up per update. The
        # notes are asked first: what fails them (news, while members join) fails there.
        if type(updates) is tuple:
            if not updates:
                return  # (most probes and acks carry nothing)
            try:
                # the node of each is read through Alive's own slot, which is also the check
                # that every update is an Alive: anything else raises TypeError there (one pass,
                # not a second one over the types; a subclass of Alive, which nothing defines,
                # would pass, where the loop below counts it malformed)
                number = map(numbers.__getitem__, map(_alive_node_of, updates))
                # operator.getitem with the notes repeated, not the bytearray's bound
                # ``__getitem__`` (a slot wrapper, which packs an argument tuple per call)
                noted = map(getitem, repeat(self.members.alive_known), number)
                if all(map(gt, noted, map(_incarnation_of, updates))):
                    return
            except (KeyError, IndexError, AttributeError, TypeError):
                pass  # a member never noted, or not an Alive: the updates one by one
        # the update table's handlers, called straight (one call less per update than _apply);
        # an Alive we hold already is skipped here, as _on_alive would, without a call
        # An Alive about a member we never heard of, in range, is learned straight (what
        # _in_range and _on_alive do for it: the commonest update that changes anything)
        fns = self._update_fns
        get = self.members.fast_get
        me = self.id
        for u in updates:
            if type(u) is Alive and u.node != me:
                m = get(u.node)
                if m is None:
                    if u.epoch <= MAX_ACCEPTED:
                        self._learn(u)
                        continue
                elif m.state is ALIVE and u.incarnation <= m.incarnation:
                    continue
            fn = fns.get(type(u))
            if fn is None:
                self._malformed(self.id, u)
            elif self._in_range(u):
                fn(u)

    def _in_range(self, u: Any) -> bool:
        """Whether a peer's update leaves room for our own increments (``kvcore.bounds``)."""
        t = type(u)
        ok: bool
        if t is Alive or (t is MemberState and u.state == ALIVE):
            ok = u.epoch <= MAX_ACCEPTED and (u.node != self.id or u.incarnation <= MAX_ACCEPTED)
        elif t is MemberState:
            ok = u.epoch <= MAX_ACCEPTED and u.incarnation <= MAX_ACCEPTED
        else:  # Suspect, Dead (another kind is counted malformed by the dispatch)
            inc = getattr(u, "incarnation", 0)
            ok = type(inc) is not int or inc <= MAX_ACCEPTED
        if not ok:
            self._count("out_of_range")
        return ok

    def _on_gossip(self, src: str, msg: Gossip) -> None:
        # _apply_all and _as_sender, inlined: a gossip round's message is the commonest there is
        self._sender = src
        try:
            self._apply_updates(msg.updates)
        finally:
            self._sender = None

    def _malformed(self, src: str, msg: Any) -> None:
        # peer input is never trusted: count and drop, never raise (the node does the same
        # with its NodeStats.malformed for kinds it routes nowhere)
        self._count("malformed")

    # --- merge rules (SWIM §4.2) -------------------------------------------------------------

    def _on_alive(self, a: Alive) -> None:
        if a.node == self.id:
            self._heard_own_claim(a.slots, a.epoch)
            # Someone holds us alive at an incarnation we have not used (we restarted and lost
            # it): refute by jumping past it, with our current addresses and slots.
            if a.incarnation > self.me.incarnation and not self.leaving:
                self._refute(a.incarnation)
            return
        m = self.members.fast_get(a.node)
        if m is not None and m.state is ALIVE and a.incarnation <= m.incarnation:
            return  # news we hold already (the common case): overrides() would say no
        if m is None:
            self._learn(a)
            return
        other_addr = (a.addr, a.peer_addr) != (m.addr, m.peer_addr)
        moved = m.state not in UP and other_addr
        if not overrides(m.state, m.incarnation, ALIVE, a.incarnation) and not (
            moved and a.incarnation >= m.incarnation
        ):
            # memberlist's reclaim rule: a dead or left member may come back at a new address
            # with the same incarnation (a restart without its storage, on other ports)
            return
        if other_addr and m.state in UP and self._sender not in (None, a.node):
            # only a member itself may move a live member (module docstring)
            self._count("address_refused")
            return
        was = m.state
        self._state_cache = None
        m = self.members.writable(a.node)
        m.incarnation = a.incarnation
        m.addr, m.peer_addr = a.addr, a.peer_addr
        if a.epoch < m.epoch:
            # A member's claim never goes back to a lower epoch (a member that lost its state
            # comes back with a standalone or empty claim): the record keeps the claim the slot
            # map learned from it, so that a node that learns this record later derives the same
            # map as one that heard every claim (the map keeps the highest epoch of each slot).
            # Gossiped on as held, not as heard.
            a = m.to_alive()
        meta_changed = (m.slots, m.epoch) != (a.slots, a.epoch)
        m.slots, m.epoch = a.slots, a.epoch
        self._clear_suspicion(a.node)
        self.broadcasts.queue(a)
        if was != ALIVE:
            self._set_state(m, ALIVE)
        elif meta_changed:
            self._emit(MemberEvent.UPDATE, m)
        if m.state is ALIVE and self.members.get(a.node) is m:
            self.members.note_alive(a.node, m)  # (a listener may have changed it since)

    def _learn(self, a: Alive) -> None:
        """A member we never heard of, learned alive from ``a`` (not us): what ``_count``,
        ``_add``, ``_index``, ``_emit`` and ``MemberTable.note_alive`` do for it, in their order,
        inlined, with ``SortedIds.insort`` and the probe round's draw (a thousand members joining
        one by one are learned a million times)."""
        counters = self.counters
        counters["learned"] = counters.get("learned", 0) + 1
        self.broadcasts.queue(a)
        node = a.node
        m = learned_record(a, self.rt.now())
        members = self.members
        members[node] = m
        # _index: alive, and not us (SortedIds.insort)
        live = self._live_ids
        if live._shared or live._skip >= 0:
            live._own()
        insort(live._items, node)
        # SWIM §4.3: a new member goes to a random place in the rest of this round (_add)
        lazy = self._lazy_round
        if lazy is not None:
            lazy.insert(node)
        else:
            order = self._probe_order
            lo = self._probe_index
            n = len(order) - lo + 1
            bits = self._bits
            if bits is None:
                r = self._below(n)
            else:  # randbelow_of's draw inlined (the same getrandbits calls)
                k = n.bit_length()
                r = bits(k)
                while r >= n:
                    r = bits(k)
            order.insert(lo + r, node)
        # _emit(MemberEvent.JOIN, m): m is a learned record, never self.me
        self._state_cache = None
        if self.persist_members:
            storage = self.rt.storage
            key = _member_keys.get(node)
            text = m._text  # a learned record is shared: its stored text is kept with it
            storage.put(_member_key(node) if key is None else key, m.stored() if text is None else text)
            storage.sync()
        for fn in self.listeners:
            fn(MemberEvent.JOIN, node, m)
        # members.note_alive(node, m), inlined for a member already numbered and within the notes
        inc = m.incarnation
        num = numbers.get(node)
        known = members.alive_known
        if num is not None and num < len(known) and inc < _NOTE_MAX:
            known[num] = inc + 1
        else:
            members.note_alive(node, m)

    def _on_suspect(self, s: Suspect) -> None:
        m = self.members.get(s.node)
        if m is None:
            return
        if s.node == self.id:
            if s.incarnation >= self.me.incarnation and not self.leaving:
                if self.config.lifeguard:
                    self.awareness.apply(1)
                self._refute(s.incarnation)
            return
        if m.state == SUSPECT and s.incarnation == m.incarnation:
            self._confirm(s.node, s.source)
            return
        if not overrides(m.state, m.incarnation, SUSPECT, s.incarnation):
            return
        m = self.members.writable(s.node)
        m.incarnation = s.incarnation
        self.broadcasts.queue(s)
        self._set_state(m, SUSPECT)
        self._start_suspicion(m, s.source)

    def _on_dead(self, d: Dead) -> None:
        m = self.members.get(d.node)
        if m is None:
            return
        if d.node == self.id:
            if not self.leaving and d.incarnation >= self.me.incarnation:
                self._refute(d.incarnation)
            return
        if not overrides(m.state, m.incarnation, DEAD, d.incarnation):
            return
        m = self.members.writable(d.node)
        m.incarnation = d.incarnation
        self._clear_suspicion(d.node)
        self.broadcasts.queue(d)
        self._set_state(m, LEFT if d.source == d.node else DEAD)

    def _refute(self, inc: int) -> None:
        self._bump_incarnation(max(inc, self.me.incarnation) + 1)
        self.broadcasts.queue(self.me.to_alive())
        self._count("refutes")
        self._emit(MemberEvent.REFUTE, self.me)

    def _bump_incarnation(self, inc: int) -> None:
        self._state_cache = None
        # never a number the wire cannot carry (kvcore.bounds: peers' numbers stay far below)
        self.me.incarnation = min(inc, INT64_MAX)
        self._persist_incarnation()

    def _persist_incarnation(self) -> None:
        self.rt.storage.put(INCARNATION_KEY, str(self.me.incarnation).encode())
        self.rt.storage.sync()

    def _set_state(self, m: Member, state: State) -> None:
        """Change ``m``'s state (``m`` is this node's own record: see MemberTable.writable)."""
        same_pool = (m.state in UP) == (state in UP) and m.state != DEAD and state != DEAD
        if not same_pool:
            self._unindex(m)
        m.state = state
        m.state_change = self.rt.now()
        if not same_pool:
            self._index(m)
        self._emit(MemberEvent(state), m)

    def _add(self, m: Member, probe_now: bool = True) -> None:
        self.members[m.node] = m
        self._index(m)
        if probe_now and m.state in UP and m.node != self.id:
            # SWIM §4.3: a new member goes to a random place in the rest of this round
            if self._lazy_round is not None:
                self._lazy_round.insert(m.node)
                self._emit(MemberEvent.JOIN, m)
                return
            lo = self._probe_index
            pos = lo + self._below(len(self._probe_order) - lo + 1)
            self._probe_order.insert(pos, m.node)
        self._emit(MemberEvent.JOIN, m)

    def _index(self, m: Member) -> None:
        if m.node == self.id:
            return
        if m.state in UP:
            self._live_ids.insort(m.node)
        else:
            bisect.insort(self._dead_ids if m.state == DEAD else self._left_ids, m.node)

    def _unindex(self, m: Member) -> None:
        if m.node == self.id or self._live_ids.discard(m.node):
            return
        for pool in (self._dead_ids, self._left_ids):
            i = bisect.bisect_left(pool, m.node)
            if i < len(pool) and pool[i] == m.node:
                del pool[i]
                return

    # --- timers and events ---------------------------------------------------------------------

    def _after(self, name: str, delay: float, fn: Callable[[], None]) -> None:
        self._timers[name] = self.rt.call_later(delay, fn)

    def _emit(self, event: MemberEvent, m: Member) -> None:
        self._state_cache = None
        if m is not self.me and self.persist_members:
            if event in _PERSISTED:
                self.rt.storage.put(_member_key(m.node), m.stored())
                self.rt.storage.sync()
            elif event == MemberEvent.REAP:
                self.rt.storage.delete(_member_key(m.node))
                self.rt.storage.sync()
        for fn in self.listeners:
            fn(event, m.node, m)

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1


__all__ = ["CLAIM_KEY", "INCARNATION_KEY", "LEFT_KEY", "MEMBER_PREFIX", "Membership"]
