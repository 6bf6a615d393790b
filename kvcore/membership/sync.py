"""Anti-entropy (push-pull) and joining: full-state exchanges between two members.

Theory of operation
-------------------
Gossip only spreads news while it is fresh; *anti-entropy* repairs whatever it missed (Demers et
al. 1987 §1.3; memberlist ``pushPull``): every push-pull interval (stretched for large clusters
by :func:`~kvcore.membership.formulas.push_pull_scale`) a member sends its full state to one
random member, which answers with its own *as it was before merging*, so the sender sees its own
stale entry and refutes it. The partner is drawn from alive members *and* from dead ones not yet
reaped (Serf's reconnect): that is what re-merges two sides after a partition heals: each side
hears it was declared dead, refutes, and the Alives spread. A remote ``dead`` is merged only as
a suspicion (memberlist ``mergeRemoteState``): we give the member the chance to refute.

*Joining* is a push-pull marked ``join``: seeds (peer addresses as destination ids
``"@HOST:PORT"``, or node ids in the sim) are tried in random order; the first reply makes us a
member. If none answers, retry after an exponential backoff with jitter
(``join_backoff_min``..``join_backoff_max``).

:class:`AntiEntropy` is that part of :class:`~kvcore.membership.Membership` (a mixin).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from kvcore.bounds import MAX_ACCEPTED
from kvcore.membership.formulas import push_pull_scale
from kvcore.membership.member import ALIVE, DEAD, LEFT, SUSPECT, Member
from kvcore.membership.table import MemberTable, SortedIds, alive_of
from kvcore.messages import Alive, Dead, MemberState, PushPull, Suspect
from kvcore.runtime import Runtime, TimerHandle

if TYPE_CHECKING:
    import random

    from kvcore.membership.config import SwimConfig


class AntiEntropy:
    """Push-pull and join of :class:`~kvcore.membership.Membership` (a mixin)."""

    if TYPE_CHECKING:
        rt: Runtime
        config: SwimConfig
        id: str
        running: bool
        joined: bool
        synced: bool
        seeds: list[str]
        members: MemberTable
        _rng: random.Random
        _send: Callable[[str, Any], None]
        _state_cache: tuple[MemberState, ...] | None
        _live_ids: SortedIds
        _dead_ids: list[str]
        _join_round: int
        _join_queue: list[str]
        _join_timer: TimerHandle | None
        me: Member
        leaving: bool

        def num_live(self) -> int: ...
        def _refute(self, inc: int) -> None: ...
        def _after(self, name: str, delay: float, fn: Callable[[], None]) -> None: ...
        def _count(self, name: str) -> None: ...
        def _add(self, m: Member, probe_now: bool = True) -> None: ...
        def _on_alive(self, a: Alive) -> None: ...
        def _learn(self, a: Alive) -> None: ...
        def _on_suspect(self, s: Suspect) -> None: ...
        def _on_dead(self, d: Dead) -> None: ...
        def _in_range(self, u: Any) -> bool: ...
        def _heard_own_claim(self, slots: str, epoch: int) -> None: ...
        def _as_sender(self, src: str | None, merge: Callable[..., None], *args: Any) -> None: ...

    def _local_state(self) -> tuple[MemberState, ...]:
        # Full state is O(N) to build and push-pull asks for it often in big clusters; it is
        # cached until something about a member changes (every change goes through _emit,
        # _bump_incarnation or _on_alive, which drop the cache). A node that holds nothing other
        # than its static view holds that view's own tuple, shared by all such nodes.
        if self._state_cache is None:
            self._state_cache = self.members.states()
        return self._state_cache

    def _push_pull_tick(self) -> None:
        if not self.running:
            return
        c = self.config
        self._after("push_pull", push_pull_scale(c.push_pull_interval, self.num_live()), self._push_pull_tick)
        # alive members, and dead ones not yet reaped (reconnect across a healed partition)
        total = len(self._live_ids) + len(self._dead_ids)
        if not total:
            return
        i = self._rng.randrange(total)
        target = self._live_ids[i] if i < len(self._live_ids) else self._dead_ids[i - len(self._live_ids)]
        self._count("push_pulls")
        self._send(target, PushPull(join=False, reply=False, members=self._local_state()))

    def _on_push_pull(self, src: str, msg: PushPull) -> None:
        if msg.reply or not msg.join or src in self.members:
            # a member's full state; a node we never heard of joining through us sends only its
            # own, which teaches nothing of the cluster (a member we know, a static peer or one
            # we kept, sends its whole view when it joins)
            self.synced = True
        if msg.reply:
            self._merge_remote(msg.members, self._state_cache or (), src)
            if not self.joined:
                self._joined()
            return
        # answer with our state as it was *before* the merge, so the sender sees its own stale
        # entry (and refutes it), then merge; the merge teaches us the sender's address
        state = self._local_state()
        self._merge_remote(msg.members, state, src)
        dst = src
        if msg.join:
            # answer a joiner at the address it advertises: we may hold an older address for it
            # (it restarted elsewhere and we still hold it dead), and its reply must reach it
            # (one we hold at that address already is answered by id: no second link to it)
            own = next((m for m in msg.members if m.node == src), None)
            held = self.members.get(src)
            if own is not None and own.peer_addr and (held is None or held.peer_addr != own.peer_addr):
                dst = "@" + own.peer_addr
        self._send(dst, PushPull(join=False, reply=True, members=state))

    def _merge_remote(
        self, members: Sequence[MemberState], ours: Sequence[MemberState] = (), src: str | None = None
    ) -> None:
        """memberlist mergeRemoteState: a remote 'dead' is only a suspicion for us. ``src``: the
        member the transport authenticated as the sender (the address rule needs it).

        ``ours``: our state before the merge, if at hand. An entry of the remote state that is the
        very object at the same place of ours (nodes built from one static configuration share
        them, and the sim without a codec delivers them as sent) is an alive member at an
        incarnation we hold already, which the rules skip: skipped without a look-up."""
        self._as_sender(src, self._merge_states, members, ours)

    def _merge_states(self, members: Sequence[MemberState], ours: Sequence[MemberState]) -> None:
        known = self.members
        if members is ours:
            # the very tuple we hold: only what is not alive can teach us anything, and the
            # shared static view's own tuple holds nothing but alive members
            if self.members.is_view_states(ours):
                return
            members = [s for s in members if s.state != ALIVE]
            ours = ()
        elif len(ours) != len(members):
            ours = ()
        get = known.fast_get
        me = self.id
        own: MemberState | None = None
        for i, s in enumerate(members):
            if ours and s is ours[i] and s.state == ALIVE:
                continue
            alive = s.state == ALIVE
            if alive and s.node != me and s.epoch <= MAX_ACCEPTED:
                pass  # in range: all that _in_range asks of an alive entry about another member
            elif not self._in_range(s):
                continue
            elif s.node == me:
                # a peer's record of us (rare): its claim is judged once the others' claims are
                # in (below); held alive at an incarnation we have not used, we refute now, as
                # _on_alive would (which would also judge the claim, too early: a node that lost
                # its state restarts at incarnation 0, below its record's)
                own = s
                if alive:
                    if s.incarnation > self.me.incarnation and not self.leaving:
                        self._refute(s.incarnation)
                    continue
            if alive:
                m = get(s.node)
                if m is None:
                    self._learn(alive_of(s))  # what _on_alive does for a member we never heard of
                elif s.incarnation > m.incarnation:
                    self._on_alive(alive_of(s))
                # else: it cannot override anything we hold (the common case): skipped cheaply
            elif s.node not in self.members:
                self._learn_absent(s)
            elif s.state == LEFT:
                self._on_dead(Dead(node=s.node, incarnation=s.incarnation, source=s.node))
            elif s.state in (SUSPECT, DEAD):
                self._on_suspect(Suspect(node=s.node, incarnation=s.incarnation, source=self.id))
        if own is not None:
            # after the loop, so that the claims that superseded ours (slots moved away since)
            # are in our map when ours is weighed (Node._on_own_claim)
            self._heard_own_claim(own.slots, own.epoch)

    def _learn_absent(self, s: MemberState) -> None:
        """A member we never heard of, reported not alive. memberlist ignores these; we keep
        the ones that own slots, straight in their dead (or left) state, because the slot map
        must know who owns what even when the owner is down ("owner down", not "unassigned")."""
        if s.node == self.id or not s.slots:
            return
        state = LEFT if s.state == LEFT else DEAD
        self._add(Member(s.node, s.addr, s.peer_addr, s.incarnation, state, self.rt.now(), s.slots, s.epoch))

    def _start_join_round(self) -> None:
        order = list(self.seeds)
        self._rng.shuffle(order)
        self._join_queue = order
        self._try_next_seed()

    def _try_next_seed(self) -> None:
        if not self.running or self.joined:
            return
        if not self._join_queue:
            # every seed failed: back off, then start over
            c = self.config
            delay = min(c.join_backoff_max, c.join_backoff_min * (2 ** self._join_round))
            delay *= self._rng.uniform(0.5, 1.0)
            self._join_round += 1
            self._count("join_rounds_failed")
            self._join_timer = self.rt.call_later(delay, self._start_join_round)
            return
        seed = self._join_queue.pop(0)
        self._count("join_attempts")
        self._send(seed, PushPull(join=True, reply=False, members=self._local_state()))
        self._join_timer = self.rt.call_later(self.config.join_timeout, self._try_next_seed)

    def _joined(self) -> None:
        self.joined = True
        if self._join_timer is not None:
            self._join_timer.cancel()
        self._count("joins")


__all__ = ["AntiEntropy"]
