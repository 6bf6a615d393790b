"""The node: the façade that wires its components and offers the doors into it.

Theory of operation
-------------------
Input from clients and peers arrives through three doors only (ARCHITECTURE.md, "The node's doors"): :meth:`Node.on_client_request`,
:meth:`Node.on_message`, and the timers the node set through its Runtime. Output leaves through
``runtime.send`` and the ``reply`` callbacks. Nothing else, so one seed reproduces a sim run. A
fourth door is for operators, not clients or peers: the **admin door** (the table in
:class:`Node`), through which an operator, ``storelab cluster`` over HTTP or a sim verb directly,
builds and reshapes a cluster. Every admin verb checks its request against the node's own view
and refuses with a typed error, so both worlds refuse the same things with the same sentences.

The node holds no protocol rules of its own; each concern is a component with its own module:

- :mod:`kvcore.node.routing` (:class:`Router`): client operations, Forward / ForwardReply /
  Asking, pending forwards and their timeouts, the duplicate-write memory;
- :mod:`kvcore.node.migration` (:class:`Migration`): live slot migration, source and target
  sides, marks and batches and their persistence;
- :mod:`kvcore.node.ownership` (:class:`Ownership`): the slot map derived from members' claims;
- :mod:`kvcore.node.restore`: what an earlier life of the node left in storage, read back;
- :mod:`kvcore.node.dedup` (:class:`DedupCache`): the time- and size-bounded memory of what was
  already done, used by routing and migration;
- :mod:`kvcore.membership` (:class:`Membership`): SWIM, who exists and who is alive.

Peer messages are dispatched by one table (:mod:`kvcore.dispatch`) merged from each component's
``{MessageClass: handler}`` and the membership's kinds; a kind no table names is counted as
malformed and dropped (peer input is never trusted; :meth:`Node.on_message` never raises).

A static cluster configuration seeds the view (all members alive at incarnation 0 with their
configured slots); seeds let a node join a running cluster (it then owns no slots, like Redis's
``add-node``); a node whose storage remembers members (an earlier life in a cluster, see
:mod:`kvcore.node.restore`) rejoins through them; a node with none of these is standalone and
owns every slot.

Stopping is not leaving: :meth:`Node.stop` only stops timers, and peers find the node down (then
dead) by themselves; what it keeps in storage brings it back as itself. A node that *may* hold a
stale view does not serve client requests until it has exchanged full state with a member (503
``try_again``): one that restarted, and one built with ``sync_first`` (a static member whose
storage does not survive a restart, so that it cannot tell a first start from a restart that
lost everything: realnet without ``--data-dir``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from kvcore import errors
from kvcore.config import ClusterConfig, NodeConfig
from kvcore.dispatch import Dispatch, merge
from kvcore.membership import Member, Membership, SwimConfig
from kvcore.membership.protocol import encode_claim
from kvcore.messages import Delete, Get, Put, Reply
from kvcore.metrics import NodeStats
from kvcore.node import guards
from kvcore.node.migration import DoneFn, Migration, check_slot
from kvcore.node.ownership import Ownership
from kvcore.node.restore import LOST_CLAIM_KEY, remembers_a_cluster, restore
from kvcore.node.routing import ReplyFn, Router, error_reply
from kvcore.raft.messages import RaftAppend, RaftHeartbeat, RaftSnapshot, RaftTimeoutNow, RaftVote
from kvcore.replica import GROUP_MESSAGES, KVRaftStorage, RaftDisk, ReplicaConfig, ReplicaGroup
from kvcore.replica.group import Observer
from kvcore.runtime import Runtime, TimerHandle
from kvcore.slots import (
    MAX_SLOT,
    SlotMap,
    SlotRangeError,
    format_ranges,
    parse_ranges,
    ranges_to_slots,
    slots_to_ranges,
)
from kvcore.states import STATES, MemberEvent, State
from kvcore.store import LocalStore

#: where a node remembers the replicated group it is in (voters and learners at formation)
GROUP_KEY = "replica:group"

RaftOpener = Callable[[Sequence[str], Sequence[str]], RaftDisk]

#: the Raft messages a group sends only to a member of its configuration: received by a node that
#: runs no group, they say it lost its log, at once for a leader's heartbeat that vouches for
#: entries, else once no group was formed here within LOST_STATE_GRACE (:meth:`Node._to_group`)
MEMBER_TRAFFIC = (RaftAppend, RaftHeartbeat, RaftSnapshot, RaftVote, RaftTimeoutNow)
#: seconds a node that runs no group, sent a group's traffic that proves nothing by itself, waits
#: for the group to be formed here (create's POSTs reach the nodes one after another, each after
#: fsyncs; the first formed may elect itself and send the others its pre-vote meanwhile)
LOST_STATE_GRACE = 10.0


class GroupUnusable(Exception):
    """A node that is a member of a replicated group cannot open it (its record of the group
    is unreadable, or its log does not load): it must not start (the sentence says why)."""


class Node:
    """One storelab node. Build it with a Runtime, then call :meth:`start`.

    The admin door
    --------------
    What an operator may ask of a node (Redis Cluster's ``CLUSTER MEET``, ``ADDSLOTS``,
    ``SETSLOT IMPORTING/MIGRATING/NODE``, ``MIGRATE``). ``realnet.api`` serves each as a
    ``POST /cluster/...`` endpoint; the sim calls them directly. A refusal raises before anything
    changed; its sentence is the same in both worlds (409 ``conflict`` or 400 ``bad_request``
    over HTTP).

    =========================  ============================================  ============================================
    verb (HTTP)                what it does                                  what it refuses (error)
    =========================  ============================================  ============================================
    ``meet(seeds)``            join a running cluster through ``seeds``;     a node holding keys (Conflict); no seed
    ``/cluster/meet``          gives up the slots it claims                  (BadRequest)
    ``assign_slots(r, e)``     replace this node's own claim by ranges       an epoch not above every epoch the node
    ``/cluster/assign``        ``r`` at epoch ``e`` (``cluster create``)     knows (Conflict); bad ranges (SlotRangeError)
    ``claim_slots(r, e)``      add ranges ``r`` to this node's claim at      an epoch not above the current epoch of
    ``/cluster/claim``         epoch ``e``, keeping the rest of its map      one of the slots (Conflict); bad ranges
                                                                             (SlotRangeError)
    ``begin_import(s, n)``     mark slot(s) ``s`` importing from ``n``       a slot number out of range (BadRequest);
    ``/cluster/import``        (all checked before any is marked)            ``n`` not a known member; a slot this node
                                                                             owns; a slot already importing from
                                                                             another node (Conflict)
    ``begin_migrate(s, n)``    mark slot(s) ``s`` migrating to ``n``         a slot number out of range (BadRequest);
    ``/cluster/migrate``       (all checked before any is marked)            ``n`` is this node; ``n`` not held alive or
                                                                             suspect; a slot this node does not own; a
                                                                             slot already migrating to another node
                                                                             (Conflict)
    ``migrate_keys(s, c, d)``  move one batch of slot ``s``: at most ``c``   nothing raises: ``d(0, sentence)`` for a
    ``/cluster/move-keys``     keys and half a peer frame of bytes (one      slot not migrating, a batch the target
                               key at least; none left: the end batch);      refused, or one still unacknowledged after
                               ``d(moved, error)`` once it is acknowledged   3 sends (its keys stay frozen)
                               or failed
    ``finish_import(s)``       clear the importing marks and claim the       a slot number out of range (BadRequest);
    ``/cluster/finish``        slots at a new config epoch above every       a slot whose source has not told this node
                               epoch known (and ``min_epoch``); returns it   (end batch) that it holds none of its keys
                                                                             any more, or that is not imported and
                                                                             another live member owns (Conflict)
    ``abort_migration(s)``     roll back the open marks of slot ``s``; an    a slot with an unacknowledged batch, unless
    ``/cluster/abort``         importer drops the keys it received           ``force`` (Conflict); a slot number out of
                                                                             range (BadRequest)
    ``info()``                 this node's view as plain data                nothing
    ``/cluster/info``
    =========================  ============================================  ============================================

    ``assign_slots``, ``claim_slots``, ``finish_import`` and ``abort_migration`` also refuse (Conflict) what would
    drop or orphan keys unless called with ``accept_loss=True``; :meth:`check_leave` is the
    same guard for a process about to leave (:mod:`kvcore.node.guards`). Epochs are bounded to
    0-2^63-1 (BadRequest). On a node in a replicated group every verb that moves slots or keys
    is refused (Conflict) but ``claim_slots``, which takes only the routing hint (the group
    serves every slot) and so never orphans a key.

    ``leave`` is not a node verb: SWIM's graceful leave is :meth:`Membership.leave`, and whether
    a process may leave (it owns slots and has live peers) is the realnet API's call, because
    stopping the process is.
    """

    def __init__(
        self,
        runtime: Runtime,
        config: NodeConfig | None = None,
        cluster: ClusterConfig | None = None,
        *,
        swim: SwimConfig | None = None,
        seeds: Sequence[str] = (),
        addr: str | None = None,
        peer_addr: str | None = None,
        sync_first: bool = False,
        raft_opener: RaftOpener | None = None,
        replica: ReplicaConfig | None = None,
        raft_observer: Observer | None = None,
        raft_log: Callable[[str], None] | None = None,
        alarm: Callable[[str], None] | None = None,
    ) -> None:
        """Build a node.

        ``cluster``: a static cluster to start from; ``seeds``: destinations to join through
        (node ids, or ``"@HOST:PORT"`` peer addresses); ``addr``/``peer_addr``: this node's client
        and peer addresses as advertised to others (taken from ``cluster`` when it lists us);
        ``sync_first``: do not serve before a full-state exchange with a member even on a first
        start (the module docstring). ``raft_opener(voters, learners)`` opens the Raft log of a
        replicated group (default: :class:`KVRaftStorage` in the Runtime's Storage; realnet
        passes its log file), ``replica`` tunes the group, ``raft_observer`` sees where each
        incarnation's group starts and every Ready
        (the sim's Figure 3 checks), ``raft_log`` takes the group's notable Raft lines
        (:attr:`~kvcore.raft.config.RaftConfig.notable`: role changes, elections, removal);
        ``alarm`` takes the sentence, said once, of a node that finds it lost its state (realnet
        logs it at ERROR).
        """
        self.rt = runtime
        self.id = runtime.node_id
        self.config = (config or NodeConfig()).validate()
        self.cluster = cluster
        self.seeds = tuple(seeds)
        self.sync_first = sync_first
        self._alarm = alarm
        #: a claim the cluster knows of this node that it does not hold (it lost its state):
        #: advertised, never served (:meth:`_on_own_claim`); None: none
        self.lost_claim: tuple[str, int] | None = None
        #: a group's traffic that proves nothing by itself was received: lost unless a group is
        #: formed here within LOST_STATE_GRACE (:meth:`_to_group`)
        self._lost_timer: TimerHandle | None = None
        #: the last claim heard of this node that other owners had wholly superseded (skipped)
        self._superseded_claim: tuple[str, int] | None = None
        #: this node runs no group but a group counts it a member (it lost its Raft log): what
        #: told it (``from``, ``term``); it then serves no key (:meth:`_on_group_traffic`)
        self.lost_group: dict[str, Any] | None = None
        self.store = LocalStore.load(runtime.storage) if self.config.durable else LocalStore()
        self.stats = NodeStats()
        self.running = False
        # drawn in this order before the membership draws its own, so a seed's run is unchanged
        first_rid = runtime.random.getrandbits(48)
        first_batch = runtime.random.getrandbits(32)
        static: list[tuple[str, str, str, str, int]] = []
        slot_map = SlotMap()
        if cluster is not None:
            cluster.validate(self.id)
            spec = cluster.node(self.id)
            addr, peer_addr = addr or spec.addr, peer_addr or spec.peer_addr
            static = cluster.static_members()
            # the static map is known in full: copy it rather than re-deriving it claim by claim
            slot_map = cluster.slot_map()
        elif not self.seeds and not remembers_a_cluster(runtime.storage):
            # The standalone node: a one-node cluster that owns every slot.
            static = [(self.id, addr or "", peer_addr or "", f"0-{MAX_SLOT}", 1)]
        self.ownership = Ownership(runtime.storage, self.stats, slot_map,
                                   cluster.epoch if cluster is not None else 1)
        self.membership = Membership(runtime, self._send, swim or SwimConfig.lan(), addr or "", peer_addr or "")
        self.migration = Migration(self.id, runtime, self.config, self.store, self.stats, self.ownership,
                                   self.membership, self._send, first_batch)
        # the router applies through our ``apply`` only when a subclass wraps it (a test's faulty
        # store, say): otherwise straight to the store, one call less on every request
        wrapped = None if type(self).apply is Node.apply else self.apply
        #: a subclass that changes the client door gets no fast lane (see answer_now)
        self._door_wrapped = type(self).on_client_request is not Node.on_client_request
        self.router = Router(self.id, runtime, self.config, self.store, self.stats, self.ownership,
                             self.membership, self.migration, self._send, first_rid, wrapped)
        self._dispatch = Dispatch(
            merge(self.router.handlers(), self.migration.handlers(),
                  self.membership.handlers(), dict.fromkeys(GROUP_MESSAGES, self._to_group)),
            self._malformed,
        )
        #: the dispatch's table, read by on_message straight (one call less per message)
        self._handlers = self._dispatch.table
        self.membership.listeners.append(self._on_member_event)
        self.ownership.seeding = cluster is not None
        self._on_member_event(MemberEvent.UPDATE, self.id, self.membership.me)
        # a static configuration's map was copied whole: its members teach the map nothing, and
        # their records are shared with every node built from it (kvcore.membership.table)
        self.membership.add_static(static, quiet=cluster is not None)
        self.ownership.seeding = False
        restore(self)
        self.membership.on_own_claim = self._on_own_claim
        self._raft_opener = raft_opener or (lambda v, le: KVRaftStorage(runtime.storage, v, le))
        self._replica_config = replica or ReplicaConfig()
        self._raft_observer = raft_observer
        self._raft_log = raft_log
        #: the replicated group this node serves through (None: the unreplicated store)
        self.replica: ReplicaGroup | None = None
        saved = runtime.storage.get(GROUP_KEY)
        if saved is not None:
            # A member of a group that cannot open it must not start: serving on as an
            # unreplicated node would acknowledge writes outside the group (split brain).
            try:
                doc = json.loads(saved)
                voters, learners = list(doc["voters"]), list(doc["learners"])
            except (ValueError, KeyError, TypeError) as e:
                raise GroupUnusable(f"node {self.id} is a member of a replicated group, but its "
                                    f"record of the group is unreadable ({e})") from None
            try:
                self._open_group(voters, learners)
            except (ValueError, KeyError, TypeError) as e:
                raise GroupUnusable(f"node {self.id} is a member of a replicated group and cannot "
                                    f"open its log ({e})") from e

    # --- views other code reads --------------------------------------------------------------

    @property
    def slot_map(self) -> SlotMap:
        """Who owns which slot, at which config epoch, as this node has heard."""
        return self.ownership.slot_map

    @slot_map.setter
    def slot_map(self, value: SlotMap) -> None:
        self.ownership.slot_map = value

    @property
    def migrating(self) -> dict[int, str]:
        """Open migrations out of this node: slot -> target."""
        return self.migration.migrating

    @property
    def importing(self) -> dict[int, str]:
        """Open migrations into this node: slot -> source."""
        return self.migration.importing

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if self.running:
            return
        self.running = True
        stale = self.membership.restarted or self.sync_first
        self.membership.start(self.seeds, rejoin=stale)
        # A node that may hold a stale view does not serve until it has synced full state with a
        # member (see kvcore.node.routing). There is no time limit on this on purpose: one cut
        # off from every peer stays unavailable (503 try_again) rather than risk serving stale
        # data. (A node alone in its view has nobody to sync with: membership says joined.)
        self.router.gated = stale and not self.membership.joined
        self.migration.resend_unacknowledged()
        if self.replica is not None:
            self.replica.start()

    def stop(self) -> None:
        """Stop timers and fail pending forwards (the outcome is unknown to us)."""
        self.running = False
        self.membership.stop()
        self.router.fail_pending(errors.ShuttingDown(
            f"node {self.id} is shutting down; the request may or may not have been applied"))
        if self.replica is not None:
            self.replica.stop()

    # --- the client door ---------------------------------------------------------------------

    def on_client_request(self, op: Any, reply: ReplyFn) -> None:
        """Handle a client operation; ``reply`` is called exactly once, now or later."""
        if self.replica is None:
            if self.lost_group is not None:
                self._refuse_lost(op, reply)
                return
            self.router.on_client_request(op, reply)
            return
        name = type(op).__name__
        try:
            self.router.validate(op)
        except errors.StoreError as err:
            self.stats.count_op(name, err.code)
            reply(error_reply(err))
            return

        def counted(r: Reply) -> None:
            self.stats.count_op(name, r.error or "ok")
            reply(r)

        self.replica.submit(op, counted)

    def answer_now(self, op: Get | Put | Delete, reply: ReplyFn) -> Reply | None:
        """The client door with a synchronous answer (ARCHITECTURE.md, "The node's doors"): the
        Reply :meth:`on_client_request` would give ``op`` when this node answers it at once from
        its own store, and then ``reply`` is not called
        (:meth:`kvcore.node.routing.Router.answer_now`); otherwise None, and ``op`` went through
        :meth:`on_client_request`, which calls ``reply`` exactly once, now or later. In a
        replicated group, and in a subclass that changes :meth:`on_client_request`, always the
        latter."""
        if self._door_wrapped or self.replica is not None or self.lost_group is not None:
            self.on_client_request(op, reply)
            return None
        return self.router.answer_now(op, reply)

    def apply(self, op: Get | Put | Delete) -> Reply:
        """Apply an operation to the local store (the caller checked ownership)."""
        return self.router.apply_local(op)

    # --- the peer door -----------------------------------------------------------------------

    def on_message(self, src: str, msg: Any) -> None:
        """Handle a message from peer ``src``. Never raises on what a peer sends."""
        # NodeStats.count_received and the Dispatch's call, inlined: this runs for every
        # message a node takes (a thousand-node join delivers some seven hundred thousand)
        cls = type(msg)
        received = self.stats.received
        kind = cls.__name__
        received[kind] = received.get(kind, 0) + 1
        fn = self._handlers.get(cls)
        if fn is None:
            self._malformed(src, msg)
        else:
            fn(src, msg)

    def _malformed(self, src: str, msg: Any) -> None:
        self.stats.malformed += 1

    def _to_group(self, src: str, msg: Any) -> None:
        if self.replica is not None:
            self.replica.on_message(src, msg)
        elif isinstance(msg, MEMBER_TRAFFIC) and msg.dst == self.id and msg.src == src != self.id:
            if type(msg) is RaftHeartbeat and msg.commit > 0:
                # the leader caps a heartbeat's commit at what it knows the follower holds
                # (etcd): above 0, this node acknowledged entries it no longer has (etcd panics
                # on it: "tocommit is out of range... was the raft log lost?")
                self._on_group_traffic(src, msg)
            elif self.lost_group is None and self._lost_timer is None:
                # a vote request, an append, a zero-commit heartbeat (a leader elected since
                # the loss knows nothing of what it held): a node about to form its group gets
                # them too; lost only if no group is formed here meanwhile
                self._lost_timer = self.rt.call_later(LOST_STATE_GRACE, lambda: self._grace_over(src, msg))
        else:
            self.stats.malformed += 1  # a group's message to a node in no group

    # --- a node that lost its state ----------------------------------------------------------

    def _grace_over(self, src: str, msg: Any) -> None:
        self._lost_timer = None
        if self.replica is None:
            self._on_group_traffic(src, msg)

    def _on_group_traffic(self, src: str, msg: Any) -> None:
        """A group counts this node, which runs no group, a member: its leader vouched for entries
        the node holds (a heartbeat whose commit, capped at what the leader knows the node holds,
        is above 0), or its traffic came and no group was formed here within LOST_STATE_GRACE.
        The node was a voter or a learner and lost its Raft log (its data directory was wiped or
        replaced). Its own store is not the group's, so it serves no key (503
        ``lost_state``); etcd likewise refuses a member that lost its data. Kept in memory only:
        a restart runs as a fresh node until the leader's next heartbeat says so again, so a
        forged heartbeat costs a restart, never the node's keys. ``add-node`` of a learner asks it
        to join again (:meth:`form_group` with no voters); as a voter it must be removed and added
        again, fresh (a heartbeat does not tell a voter from a learner: it is taken for one)."""
        if self.lost_group is not None:
            return
        self.lost_group = {"from": src, "term": msg.term}
        self.router.refusal = self._lost_error
        # it may know few of the cluster's members yet (a standalone start): learn them from the
        # sender, so that the leave remove-node asks of it reaches them
        self.membership.sync_with(src)
        self._say(f"node {self.id} runs no replicated group, but {src} counts it a member of its group "
                  f"(Raft traffic at term {msg.term}): it is a member of that group that lost its "
                  "Raft log (its data directory was wiped or replaced). It serves no key (503 lost_state). "
                  f"Remove it (storelab cluster remove-node ADDR {self.id}) and add it again "
                  "under a fresh --data-dir (storelab cluster add-node).")

    def _refuse_lost(self, op: Any, reply: ReplyFn) -> None:
        self.stats.count_op(type(op).__name__, errors.LostState.code)
        reply(error_reply(self._lost_error()))

    def _lost_error(self) -> errors.LostState:
        """What a request to this node, which lost its state, is answered (a client's, a
        forwarded or an asked one: ``Router.refusal``)."""
        assert self.lost_group is not None  # (set before any refusal is asked for)
        return errors.LostState(
            f"node {self.id} lost its state: a replicated group counts it a member ({self.lost_group['from']} "
            "sent it the group's Raft traffic) but it runs no group, its data directory having been "
            "wiped or replaced; ask another node. Operator: storelab cluster remove-node ADDR "
            f"{self.id}, then add it again under a fresh --data-dir.")

    def _on_own_claim(self, slots: str, epoch: int) -> None:
        """A peer reports a claim of this node (``slots`` at ``epoch``) above the claim it
        advertises: the node lost its state (a wiped data directory: a fresh node, standalone or
        joined through seeds, under an old member's id) and the cluster remembers what it owned.

        Such a node does not hold those keys, so it does not take the claim into its own map
        (gossip never teaches a node its own claim) and, having no claim of its own, gives up
        the standalone node's claim of every slot: it serves none of them until an operator says
        so (Redis Cluster's node that lost ``nodes.conf`` owns nothing until ``fix``/``reshard``;
        ``storelab cluster fix`` lets it claim them again, empty). It advertises the claim,
        though, so every record of it stays what the cluster's maps were built from (the rule in
        :meth:`kvcore.membership.Membership._on_alive`): a node that learns its record later
        derives the same map. In a replicated group, where the map is only a hint to clients (the
        group serves every slot), it simply claims it again. A static member is left alone: its
        configuration names its claim."""
        if self.cluster is not None:
            return
        try:
            ranges = parse_ranges(slots)
        except SlotRangeError:
            self.stats.malformed += 1
            return
        if self.replica is not None:
            self.membership.set_slots(format_ranges(ranges), epoch)
            return
        if (slots, epoch) == self._superseded_claim:
            return
        smap = self.slot_map
        if all(smap.owner(s) not in (None, self.id) and smap.epoch(s) > epoch
               for lo, hi in ranges for s in range(lo, hi + 1)):
            # every slot of it has moved to another owner since (a member removed and added
            # again under its id, fresh): nothing of it is lost, nothing to say
            self._superseded_claim = (slots, epoch)
            return
        first = self.lost_claim is None
        self.lost_claim = (slots, epoch)
        self.rt.storage.put(LOST_CLAIM_KEY, encode_claim(slots, epoch))
        self.rt.storage.sync()
        if self.membership.stored_claim() is None:
            # no claim of its own: a standalone start's claim of every slot is not the cluster's
            if self.slot_map.release(self.id, self.slot_map.max_epoch() + 1):
                self.ownership.save()
        self.membership.advertise(slots, epoch)
        if first and self.lost_group is None:
            self._say(f"node {self.id} lost its state: its peers know it as the owner of slots {slots} "
                      f"(epoch {epoch}), but it has no claim of its own (its data directory was wiped "
                      "or replaced). It serves none of those slots (their keys are lost with its data); "
                      "storelab cluster fix lets it claim them again, empty, and storelab cluster "
                      "remove-node takes it out.")

    def _clear_lost_claim(self) -> None:
        """The node claims slots itself (an operator's assign, claim or finish): what the
        cluster remembered of it is superseded."""
        if self.lost_claim is not None:
            self.lost_claim = None
            self.rt.storage.delete(LOST_CLAIM_KEY)
            self.rt.storage.sync()

    def _say(self, sentence: str) -> None:
        if self._alarm is not None:
            self._alarm(sentence)

    def _send(self, dst: str, msg: Any) -> None:
        sent = self.stats.sent  # NodeStats.count_sent, inlined (every message sent passes here)
        kind = type(msg).__name__
        sent[kind] = sent.get(kind, 0) + 1
        self.rt.send(dst, msg)

    def _on_member_event(self, event: str, node_id: str, m: Member) -> None:
        """Membership's news: derive the slot map; a slot that changed hands ends its move."""
        # a member without slots teaches the map nothing (Ownership.learn's first test, asked
        # here: every member a node learns is an event, a million in a thousand-node join)
        if m.slots and self.ownership.learn(event, node_id, m):
            self.migration.slots_changed_hands()

    # --- the admin door (the table in the class docstring) -----------------------------------

    def meet(self, seeds: Sequence[str]) -> None:
        """Join a running cluster through ``seeds`` (``storelab cluster add-node`` / ``create``).

        Only an empty node may: one holding keys refuses with Conflict. It gives up any slots it
        claims (a standalone node owns every slot at epoch 1; keeping that claim would fight the
        cluster's) and learns the cluster's slot map from the seeds.
        """
        if self.store.count():
            raise errors.Conflict(f"node {self.id} holds {self.store.count()} keys; only an empty node can join")
        if not seeds:
            raise errors.BadRequest("give at least one seed to meet")
        if self.membership.me.slots:
            self.slot_map = SlotMap()
            self.membership.set_slots("", 0)
        self.membership.join(seeds)

    def assign_slots(self, ranges: str, epoch: int, accept_loss: bool = False) -> None:
        """Replace this node's slot claim by ``ranges`` at ``epoch`` (``cluster create``).

        Used on fresh nodes only; ``epoch`` must be above every epoch the node knows, so the
        claim wins wherever it is heard. Refused (Conflict, :mod:`kvcore.node.guards`) when it
        would give up slots this node holds keys of, or take slots another member owns, unless
        ``accept_loss``.
        """
        self._no_slot_moves("assign")
        guards.check_epoch(epoch)
        parsed = parse_ranges(ranges)
        wanted = list(ranges_to_slots(parsed))
        guards.check_dropping(self, wanted, accept_loss)
        guards.check_taking(self, wanted, accept_loss)
        self.ownership.assign(self.id, parsed, epoch)
        self._clear_lost_claim()
        self.membership.set_slots(format_ranges(parsed), epoch)

    def claim_slots(self, ranges: str, epoch: int, accept_loss: bool = False) -> None:
        """Take ownership of ``ranges`` (a range string) at config ``epoch`` and advertise it.

        ``epoch`` must be above the current epoch of every slot in ``ranges`` (Conflict
        otherwise: the claim would not win everywhere). It spreads by gossip with our next
        incarnation. A slot another member owns (and may hold keys of) is refused (Conflict)
        unless ``accept_loss`` (:func:`kvcore.node.guards.check_taking`).

        In a replicated group, the one verb of the slot map that is not refused: no key moves
        (the group serves every slot on every node), the claim only changes the routing hint
        smart clients take their first hop from, and no key is orphaned by it.
        """
        guards.check_epoch(epoch)
        parsed = parse_ranges(ranges)
        self.ownership.check_claim(self.id, parsed, epoch)
        guards.check_taking(self, ranges_to_slots(parsed), accept_loss)
        self._claim(parsed, epoch)

    def _claim(self, parsed: list[tuple[int, int]], epoch: int) -> None:
        self.ownership.check_claim(self.id, parsed, epoch)
        mine = self.ownership.claim(self.id, parsed, epoch)
        self._clear_lost_claim()
        self.membership.set_slots(mine, max(epoch, self.membership.me.epoch))

    def begin_import(self, slots: int | Iterable[int], source: str) -> None:
        """Mark ``slots`` (one slot or several) importing from ``source`` (Redis: SETSLOT IMPORTING)."""
        self._no_slot_moves("import")
        self.migration.begin_import([slots] if isinstance(slots, int) else slots, source)

    def begin_migrate(self, slots: int | Iterable[int], target: str) -> None:
        """Mark ``slots`` (one slot or several) migrating to ``target`` (Redis: SETSLOT MIGRATING)."""
        self._no_slot_moves("migrate")
        self.migration.begin_migrate([slots] if isinstance(slots, int) else slots, target)

    def migrate_keys(self, slot: int, count: int, done: DoneFn) -> None:
        """Move up to ``count`` keys of a migrating slot to its target.

        A batch also holds at most half a peer frame of key and value bytes (at least one key),
        so a batch of large values still fits in one frame. ``done(moved, error)`` is called
        once: ``moved`` is 0 with no error when the slot has no keys left here and the target
        acknowledged the end batch that says so (what lets it finish the import); 0 with an error
        sentence when the target refused the batch (its keys are unfrozen: the target certainly
        did not store them) or when no acknowledgement came after ``BATCH_TRIES`` sends. A batch
        without an acknowledgement has an unknown outcome (the target may have stored it and the
        ack been lost), so its keys stay frozen and the *same* batch is sent again by the next
        call, which the target answers without applying it twice. Unfreezing them instead would
        let a write or delete land here while the target kept the old copy, which it would serve
        once it owns the slot.
        """
        if self.replica is not None:
            done(0, f"{self.id} is in a replicated group: its keys do not move")
            return
        self.migration.migrate_keys(slot, count, done)

    def finish_import(self, slots: list[int], min_epoch: int = 0, accept_loss: bool = False) -> int:
        """Claim the imported ``slots`` at a new config epoch above every epoch we know (and at
        least ``min_epoch``, for an orchestrator that knows of newer claims); returns it.

        Redis: SETSLOT NODE on the target, which bumps its config epoch. The claim spreads by
        gossip; the source stops migrating when it hears it. Refused (Conflict, before anything
        changes) when it would orphan keys another member holds, unless ``accept_loss``
        (:func:`kvcore.node.guards.check_finish`): a slot whose source has not sent this node the
        migration's end batch (``migrate_keys`` sends it once the source holds none of the slot;
        a source gone for good needs none), and a slot that is not imported here and that
        another member owns.
        """
        self._no_slot_moves("finish")
        guards.check_epoch(min_epoch, "min_epoch")
        for slot in slots:
            check_slot(slot)
        guards.check_finish(self, slots, accept_loss)
        epoch = self.migration.finish_import(slots, min_epoch)
        guards.check_epoch(epoch)  # one above MAX_ACCEPTED would be ignored by every peer
        self._claim(parse_ranges(format_ranges((s, s) for s in slots)), epoch)
        return epoch

    def abort_migration(self, slot: int, force: bool = False, accept_loss: bool = False) -> None:
        """Roll back an open migration of ``slot`` on this node (``fix``).

        On the importing side, the keys it received for a slot it does not own are dropped: the
        source still has them (it deletes a key only once it is acknowledged... and then the
        slot would have to be finished, not aborted), and stale copies must never be served.
        The migrating side refuses while a batch is unacknowledged (its outcome is unknown),
        unless ``force``: for a target that is gone for good (left or forgotten), whose copies
        can never be served, so unfreezing the batch's keys here is safe. Refused (Conflict)
        when the roll-back would drop or orphan keys that moved (the importer's copies of
        acknowledged batches; the source's keys the target acknowledged), unless
        ``accept_loss`` (:func:`kvcore.node.guards.check_abort`).
        """
        self._no_slot_moves("abort")
        if 0 <= slot <= MAX_SLOT:
            guards.check_abort(self, slot, accept_loss)
        self.migration.abort(slot, force)

    def rollback_migration(self, slots: Iterable[int]) -> None:
        """Roll back the migrations of ``slots`` whose target is gone for good (``fix``).

        Like :meth:`abort_migration` with ``force``: a batch the lost target never acknowledged
        is abandoned rather than refused, since its copies can never be served. Refused
        (Conflict, before anything changes) for a slot whose target this node does not hold
        left or forgotten: a target that is merely dead may come back and serve its copies.
        """
        self._no_slot_moves("rollback")
        wanted = list(slots)
        for slot in wanted:
            target = self.migrating.get(slot)
            state = self.membership.state_of(target) if target is not None else None
            if target is not None and state not in (None, State.LEFT):
                raise errors.Conflict(
                    f"node {self.id} holds {target!r} {state}; only a migration whose target is gone "
                    "(left or forgotten) is rolled back"
                )
        for slot in wanted:
            # the target is gone for good: what it acknowledged left with it
            self.abort_migration(slot, force=True, accept_loss=True)

    # --- the replicated group (admin door, continued) ------------------------------------------

    def form_group(self, voters: Sequence[str]) -> None:
        """Serve the store through one Raft group of ``voters`` (this node among them; every
        voter is asked with the same list). An empty list: join as a node that a leader will add
        as a learner (``add-node``). Refuses a node already in another group or holding keys."""
        voters = list(voters)
        if voters and self.id not in voters:
            raise errors.BadRequest(f"node {self.id} is not among the voters {voters}")
        if len(set(voters)) != len(voters) or any(not v or " " in v for v in voters):
            raise errors.BadRequest(f"voters must be distinct node ids without spaces, not {voters}")
        if self.replica is not None:
            if voters and list(self.replica.raft.log.conf().voters) == voters:
                return  # asked again (a retried create): nothing to do
            raise errors.Conflict(f"node {self.id} is already in a replicated group "
                                  f"(voters {list(self.replica.raft.log.conf().voters)})")
        if self.lost_group is not None:
            # its leader's heartbeat vouched for entries it no longer holds; a heartbeat does not
            # tell a voter from a learner, and a voter that forgot its log and votes would let
            # the group lose writes: it must leave the configuration first
            raise errors.Conflict(
                f"node {self.id} lost its state: a replicated group counts it a member (node "
                f"{self.lost_group['from']} sent it the group's Raft traffic), and a "
                "voter that forgot its log and votes would let the group lose writes; remove it "
                f"(storelab cluster remove-node ADDR {self.id}) and add it again under a fresh --data-dir")
        if self.store.count():
            raise errors.Conflict(f"node {self.id} holds {self.store.count()} keys; a replicated group "
                                  "starts empty (move them away first)")
        if voters:
            # a group serves every slot: over a cluster whose other members own slots outside it
            # (an unreplicated cluster's, with keys only they hold) it would answer their keys
            # from its own empty store, and its members' claims would orphan them
            outside = sorted(o for o in self.slot_map.slot_counts()
                             if o not in voters and self.membership.state_of(o) not in (None, State.LEFT))
            if outside:
                raise errors.Conflict(
                    f"node {self.id}'s slot map gives slots to {', '.join(outside)}, outside the voters "
                    f"{voters}: a replicated group serves every slot, so it forms over every member that "
                    "owns slots (storelab cluster create --replicas), not beside them")
        if self._lost_timer is not None:
            self._lost_timer.cancel()  # the group is formed here: its traffic was for it
            self._lost_timer = None
        self.rt.storage.put(GROUP_KEY, json.dumps({"voters": voters, "learners": []}).encode())
        self.rt.storage.sync()
        group = self._open_group(voters, [])
        if self.lost_claim is not None:
            # in a group the map is only a hint (the group serves every slot): what the cluster
            # remembers of this node (a member removed, then added again) is its claim again
            slots, epoch = self.lost_claim
            self._clear_lost_claim()
            self.membership.set_slots(slots, epoch)
        if self.running:
            group.start()

    def _open_group(self, voters: list[str], learners: list[str]) -> ReplicaGroup:
        self.replica = ReplicaGroup(self.id, self.rt, self._raft_opener(voters, learners), self.config,
                                    self._replica_config, self.store, self._send, self.stats,
                                    self._raft_observer, self._raft_log)
        self.router.group_submit = self.replica.submit
        return self.replica

    def _no_slot_moves(self, verb: str) -> None:
        """In a replicated group the store is the state machine: only the log changes it, so
        keys never move between nodes (one group serves every slot; several groups over more
        nodes come next). Refused in both worlds alike. A claim (:meth:`claim_slots`) is not
        refused: it moves no key, and the map is only a routing hint there."""
        if self.replica is not None:
            raise errors.Conflict(f"{verb} refused: {self.id} is in a replicated group, which serves "
                                  "every slot; slots and keys do not move between its nodes")

    def _group(self) -> ReplicaGroup:
        if self.replica is None:
            raise errors.Conflict(f"node {self.id} is not in a replicated group")
        return self.replica

    def transfer_leader(self, to: str) -> None:
        """Hand leadership to voter ``to`` (thesis §3.10); asked of the leader."""
        self._group().transfer_leader(to)

    def add_learner(self, node: str) -> int:
        """Add ``node`` as a learner; the leader promotes it once caught up (§4.2.1). Refused
        (Conflict) for a node that owns slots in this node's map and that no configuration of
        the group names: it serves them from keys only it holds, and a group that counts it
        would switch it off (it runs no group: ``lost_state``) with the only copy of them."""
        group = self._group()
        owned = self.slot_map.slot_counts().get(node, 0)
        if owned and node not in guards.group_members(self) and self.membership.state_of(node) not in (None, State.LEFT):
            raise errors.Conflict(
                f"{node} owns {owned} slot{'s' if owned != 1 else ''} in node {self.id}'s map outside the "
                "group, with keys only it holds: a learner is a fresh node (storelab cluster add-node)")
        return group.change("add-learner", node)

    def promote(self, node: str) -> int:
        return self._group().change("promote", node)

    def remove_voter(self, node: str) -> int:
        """Remove a voter or learner by a one-server configuration change (§4.1)."""
        return self._group().change("remove", node)

    def check_leave(self, force: bool, accept_loss: bool, drains: bool = False) -> None:
        """Refuse (Conflict) to leave while owning slots with live peers, unless ``force``;
        while also holding keys, unless ``accept_loss`` (:func:`kvcore.node.guards.check_leave`).
        ``drains``: the process moves its slots away before it leaves (realnet's auto-rebalance).
        Leaving itself is not a node verb (see the class docstring)."""
        guards.check_leave(self, force, accept_loss, drains)

    def forget_member(self, member: str, accept_loss: bool = False) -> bool:
        """Hold the dead member ``member`` left on its behalf (a forced leave: serf's
        ``force-leave``, Redis's ``CLUSTER FORGET``; :meth:`kvcore.membership.Membership.
        force_leave`), after the guard (:func:`kvcore.node.guards.check_forget`). Returns False
        when this node holds it left already (nothing to do)."""
        guards.check_forget(self, member, accept_loss)
        return self.membership.force_leave(member)

    def clear_lost_state(self, sender: str) -> bool:
        """Take back the lost-state mark (:meth:`_on_group_traffic`) that ``sender``'s Raft
        traffic set, once the operator saw that ``sender`` runs no group (its traffic was stray or
        forged: an unreplicated cluster's ``fix``); the node serves its keys again. False when
        there is no mark. Refused (conflict) when the mark names another sender: what was
        checked is not what set it. Never ask it of a member a group really counts (a voter that
        lost its log would serve its empty store): realnet's fix asks it only when every member
        answers, none runs a group and the sender is not marked lost itself
        (:func:`realnet.clusterview.stray_sender`)."""
        lost = self.lost_group
        if lost is None:
            return False
        if lost["from"] != sender:
            raise errors.Conflict(f"node {self.id} was marked lost by {lost['from']}'s Raft traffic (term "
                                  f"{lost['term']}), not {sender}'s: check that {lost['from']} runs no group")
        if self._lost_timer is not None:
            self._lost_timer.cancel()
            self._lost_timer = None
        self.lost_group = None
        self.router.refusal = None
        return True

    # --- views -------------------------------------------------------------------------------

    def members_view(self) -> list[dict[str, Any]]:
        """Every member this node knows, itself included (served at /cluster/members)."""
        return self.membership.view()

    def peer_states(self) -> dict[str, str]:
        """Every other member's state (alive/suspect/dead/left)."""
        return {m["id"]: m["state"] for m in self.membership.view() if m["id"] != self.id}

    def pending_forwards(self) -> int:
        return len(self.router.pending)

    def info(self) -> dict[str, Any]:
        """This node's view, as plain data (served at /cluster/info)."""
        return {
            "id": self.id,
            "mode": "cluster" if len(self.membership.members) > 1 or self.cluster is not None else "standalone",
            "keys": self.store.count(),
            "bytes": self.store.bytes_used,
            "slots_owned": self.slot_map.slot_counts().get(self.id, 0),
            "slots_assigned": 16384 - sum(hi - lo + 1 for lo, hi in self.slot_map.unassigned()),
            "epoch": self.slot_map.max_epoch(),
            "members": {st: sum(1 for m in self.membership.members.values() if m.state == st)
                        for st in STATES},
            "incarnation": self.membership.me.incarnation,
            "joined": self.membership.joined,
            # answering 503 try_again until it has synced with a member (restarted, sync_first)
            "syncing": self.router.gated and self.router.still_gated(),
            "pending_forwards": len(self.router.pending),
            "migrating": {str(k): v for k, v in sorted(self.migrating.items())},
            "importing": {str(k): v for k, v in sorted(self.importing.items())},
            # keys held for slots this node neither owns nor imports: nobody serves them
            # (``verify`` reports them; issue 10's orphaned keys)
            "stray": self.stray_keys(),
            # the replicated group's view (role, term, commit, applied, ...), or None
            "raft": self.replica.info() if self.replica is not None else None,
            # a group counts this node a member but it runs none (503 lost_state), or the cluster
            # knows a claim of it that it does not hold: it lost its state (None: neither)
            "lost_state": dict(self.lost_group) if self.lost_group is not None else None,
            "lost_claim": ({"slots": self.lost_claim[0], "epoch": self.lost_claim[1]}
                           if self.lost_claim is not None else None),
        }

    def stray_keys(self) -> dict[str, Any]:
        """``{"slots": RANGES, "keys": N}``: keys this node holds for slots it neither owns nor
        imports, which no request reaches."""
        owner = self.slot_map.owner
        slots = [s for s in self.store.slots() if owner(s) != self.id and s not in self.importing]
        return {"slots": format_ranges(slots_to_ranges(slots)),
                "keys": sum(self.store.count_in_slot(s) for s in slots)}


__all__ = ["GroupUnusable", "Node"]
