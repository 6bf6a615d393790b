"""The sim's verbs for a replicated group: change its membership or its leader, as an operator would.

Theory of operation
-------------------
A configuration change or a leadership transfer is asked of the group's leader (a node refuses
with a sentence naming the leader otherwise), and a leader may be down or just changing, so
each verb is a SimPy process that finds the current leader (the live node whose Raft role is
leader, at the highest term), asks it, and on a refusal tries again every ``retry`` seconds, up
to ``attempts`` times, as ``storelab cluster`` does over HTTP. What it could not do is recorded
as a ``<verb>_failed`` fault with the last sentence, on the run's time axis.

``add_replica`` adds a new, empty node (it joins through the seeds and forms no group: it waits
to be added) and asks the leader to add it as a learner; the leader promotes it once it has
caught up (:class:`kvcore.replica.ReplicaConfig`'s ``auto_promote``, thesis §4.2.1).

:func:`committed_conf` is what the cluster would tell a client about its members: the newest
configuration a live node knows committed (a configuration only appended may still be rolled
back with its entry, thesis §4.1). Committed configurations follow each other by index, so the
highest index any live node has committed is the newest; a node that lags only knows an older
one. :meth:`sim.cluster.SimCluster.client_nodes` gives the clients its members.

**The slot map's hints.** In a replicated cluster the group serves every slot on every node, and
the slot map only spreads smart clients' first hops. Once ``remove_replica``'s change is seen
committed (:func:`committed_conf` no longer counts the node), and once ``add_replica``'s node is
a voter of a committed configuration, :func:`mend_hints` drives the procedure
:class:`kvcore.slotmove.Hints` (:func:`sim.slotmove.drive`, the node verb ``claim_slots``) as
``storelab cluster remove-node``/``add-node`` drive it over HTTP: the live voters claim the slots
whose hint names a non-voter or nobody, and a new voter its even share, so both worlds end with
the same map. One mend at a time (a later one waits for the one under way: two would pick the
same epochs). A mend that stopped is tried again a few times; what cannot be done (no commit
within :data:`CONF_TIMEOUT`, a mend that kept stopping) is a ``hints_failed`` fault with the
sentence.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

from kvcore import errors
from kvcore.raft.messages import ConfState
from kvcore.slotmove import Hints
from sim.slotmove import drive

if TYPE_CHECKING:
    from sim.cluster import SimCluster


def leader(cluster: SimCluster) -> Any:
    """The live node that leads the group at the highest term (None: no leader now)."""
    best = None
    for node in cluster.nodes():
        g = getattr(node, "replica", None)
        if g is not None and g.raft.role == "leader" and (best is None or g.raft.term > best.replica.raft.term):
            best = node
    return best


def committed_conf(cluster: SimCluster) -> tuple[int, ConfState] | None:
    """The newest configuration committed at a live node, with its index (None: no live node
    runs a group)."""
    best: tuple[int, ConfState] | None = None
    for node in cluster.nodes():
        g = getattr(node, "replica", None)
        if g is None:
            continue
        log = g.raft.log
        # confs[0] is the snapshot's configuration, committed with it: there is always one
        at, conf = next((i, c) for i, c in reversed(log.confs) if i <= log.committed)
        if best is None or at > best[0]:
            best = (at, conf)
    return best


#: simulated seconds between two looks at the committed configuration (:func:`after_change`)
CONF_POLL = 0.1
#: simulated seconds to wait for a change to commit (a learner's catch-up and promotion included)
CONF_TIMEOUT = 60.0


def after_change(cluster: SimCluster, done: Callable[[ConfState], bool],
                 what: str) -> Generator[Any, Any, bool]:
    """Once the newest committed configuration satisfies ``done``, mend the hints
    (:func:`mend_hints`); False (and a ``hints_failed`` fault) when it did not within
    :data:`CONF_TIMEOUT`."""
    deadline = cluster.env.now + CONF_TIMEOUT
    while True:
        newest = committed_conf(cluster)
        if newest is not None and done(newest[1]):
            break
        if cluster.env.now >= deadline:
            _failed(cluster, f"timed out after {CONF_TIMEOUT:g}s waiting for {what}")
            return False
        yield cluster.env.timeout(CONF_POLL)
    ok: bool = yield from mend_hints(cluster)
    return ok


def mend_hints(cluster: SimCluster, *, retry: float = 1.0, attempts: int = 10) -> Generator[Any, Any, bool]:
    """The live voters of the newest committed configuration claim the hints of non-voters, a
    new voter its share (:class:`kvcore.slotmove.Hints`); one mend at a time. A procedure that
    stopped (a claimer crashed, no voter answers, a power loss left only a node that knows no
    voter) is tried again every ``retry`` seconds, up to ``attempts`` times, as an operator runs
    ``storelab cluster fix`` again; then False and a ``hints_failed`` fault with the last
    sentence."""
    why = "no live node runs the group"
    with cluster.hints_lock().request() as turn:
        yield turn
        for _ in range(attempts):
            newest = committed_conf(cluster)
            up = cluster.alive()
            if newest is not None and newest[1].voters and up:
                ok, problems = yield from drive(cluster, Hints(tuple(newest[1].voters)), up[0], 1, 1, 0.2)
                if ok:
                    return True
                why = problems[0] if problems else "stopped"
            elif newest is not None and up:
                why = "no live node knows the group's voters"
            yield cluster.env.timeout(retry)
        _failed(cluster, why)
        return False


def _failed(cluster: SimCluster, why: str) -> None:
    from sim.cluster import Fault

    cluster.faults.append(Fault(cluster.env.now, "hints_failed", why))


def ask_leader(cluster: SimCluster, verb: str, ask: Callable[[Any], object], *,
               retry: float = 0.2, attempts: int = 50) -> Generator[Any, Any, bool]:
    """Ask the current leader ``ask(leader_node)`` until it does not refuse; False if it never did."""
    why = "no leader"
    for _ in range(attempts):
        node = leader(cluster)
        if node is not None:
            try:
                ask(node)
                return True
            except errors.StoreError as e:
                why = e.message
        yield cluster.env.timeout(retry)
    from sim.cluster import Fault

    cluster.faults.append(Fault(cluster.env.now, f"{verb}_failed", why))
    return False
