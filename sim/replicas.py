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
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

from kvcore import errors
from kvcore.raft.messages import ConfState

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
