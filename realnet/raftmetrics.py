"""``/metrics`` for a replicated group (#11): Raft's state, counters and commit latency.

Theory of operation
-------------------
Read at scrape time, like the rest of :mod:`realnet.metrics`: :func:`raft_families` reads the
node's ``info()["raft"]`` (absent: the node runs no group, and no Raft family is declared) and
the commit-latency histogram that realnet's Raft log keeps (:class:`realnet.raftopen.RaftLogDisk`,
measured on the loop's clock from an entry's first save to the save that records its commit).

=====================================  =========================================================
``storelab_raft_role{role}``           1 for this node's role, 0 for the others (follower,
                                       pre-candidate, candidate, leader)
``storelab_raft_term``                 the current term
``storelab_raft_commit_index``         the highest index known committed
``storelab_raft_applied_index``        the highest index applied to the store
``storelab_raft_voters``,              the configuration's size
``storelab_raft_learners``
``storelab_raft_removed``              1 when this node knows a committed configuration removed
                                       it (thesis §4.2.3), else 0
``storelab_raft_elections``            elections this node started (campaigns, PreVote ones
                                       included)
``storelab_raft_leader_changes``       times this node learned of a new leader
``storelab_raft_proposals``            writes this node proposed as leader
``storelab_raft_dropped``              peer messages the group dropped (malformed, wrong sender)
``storelab_raft_events{event}``        every other counter of the group and of its core
``storelab_raft_log_syncs``,           the log's fsyncs and bytes synced (group commit: one
``storelab_raft_log_bytes_synced``     fsync for many entries)
``storelab_raft_commit_latency_seconds``  histogram: an entry's first save to its commit
=====================================  =========================================================
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric

ROLES = ("follower", "pre-candidate", "candidate", "leader")
#: named counters: family name -> (where in info["raft"], keys tried in order, help text)
_NAMED: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    ("storelab_raft_elections", "raft_stats", ("campaigns",),
     "Elections this node started (PreVote campaigns included)."),
    ("storelab_raft_leader_changes", "stats", ("leader_changes",),
     "Times this node learned of a new leader of the group (the first one included)."),
    ("storelab_raft_proposals", "stats", ("proposals",), "Writes this node proposed as leader."),
    ("storelab_raft_dropped", "stats", ("dropped",),
     "Peer messages the group dropped (malformed, or a sender that is not the bus's)."),
)


class _Hist(Protocol):
    sum: float

    def buckets(self) -> list[tuple[str, float]]: ...

    @property
    def count(self) -> int: ...


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def raft_families(raft: Mapping[str, Any] | None, disk: Any = None) -> Iterator[Metric | None]:
    """The Raft families for one scrape; ``raft`` is ``info()["raft"]`` (None: no group) and
    ``disk`` the group's :class:`realnet.raftopen.RaftLogDisk` (None: not realnet's log)."""
    if not raft:
        return
    role = GaugeMetricFamily("storelab_raft_role", "This node's Raft role (1) among the roles.",
                             labels=["role"])
    for r in (*ROLES, *([raft["role"]] if raft.get("role") not in ROLES and raft.get("role") else [])):
        role.add_metric([str(r)], 1 if r == raft.get("role") else 0)
    yield role
    for name, key, doc in (
        ("storelab_raft_term", "term", "The current Raft term."),
        ("storelab_raft_commit_index", "commit", "The highest log index known committed."),
        ("storelab_raft_applied_index", "applied", "The highest log index applied to the store."),
    ):
        if _num(raft.get(key)):
            yield GaugeMetricFamily(name, doc, value=raft[key])
    for name, key, doc in (("storelab_raft_voters", "voters", "Voters in the configuration."),
                           ("storelab_raft_learners", "learners", "Learners in the configuration.")):
        if isinstance(raft.get(key), list):
            yield GaugeMetricFamily(name, doc, value=len(raft[key]))
    if "removed_at" in raft:
        yield GaugeMetricFamily(
            "storelab_raft_removed", "1 when this node knows a committed configuration removed it from "
            "the group (it then answers clients 503 removed), else 0.",
            value=0 if raft["removed_at"] is None else 1)
    named: set[tuple[str, str]] = set()
    for name, where, keys, doc in _NAMED:
        src = raft.get(where) or {}
        found = next((k for k in keys if _num(src.get(k))), None)
        if found is not None:
            named.add((where, found))
            yield CounterMetricFamily(name, doc, value=src[found])
    events = CounterMetricFamily(
        "storelab_raft_events",
        "Other counters of the replicated group (stats) and of its Raft core (core_*).",
        labels=["event"])
    for where, prefix in (("stats", ""), ("raft_stats", "core_")):
        for k, v in sorted((raft.get(where) or {}).items()):
            if _num(v) and (where, k) not in named:
                events.add_metric([prefix + k], v)
    yield events if events.samples else None
    if disk is not None:
        yield from _disk_families(disk)


def _disk_families(disk: Any) -> Iterator[Metric | None]:
    stats = getattr(disk, "stats", {}) or {}
    for name, key, doc in (
        ("storelab_raft_log_syncs", "fsyncs", "fsyncs of the Raft log (one per group commit)."),
        ("storelab_raft_log_bytes_synced", "bytes_synced", "Bytes of Raft log records synced."),
    ):
        if _num(stats.get(key)):
            yield CounterMetricFamily(name, doc, value=stats[key])
    hist: _Hist | None = getattr(disk, "commit_latency", None)
    if hist is not None:
        h = HistogramMetricFamily(
            "storelab_raft_commit_latency_seconds",
            "Raft entries from their first save to the log to the save that records their commit "
            "(on the leader: proposal to commit).",
            buckets=hist.buckets(), sum_value=hist.sum)
        yield h


__all__ = ["ROLES", "raft_families"]
