"""A replicated group's read mode: ReplicaConfig.read_only and lease_drift_ticks reach the core's
RaftConfig (thesis §6.4 SAFE, §6.4.1 LEASE), and bad values are sentences."""

from __future__ import annotations

import pytest

from kvcore.raft import LEASE, SAFE
from kvcore.replica import ReplicaConfig
from kvcore.tables import ConfigError


def test_the_default_stays_safe_reads() -> None:
    core = ReplicaConfig().raft_config("n1")
    assert (core.read_only, core.lease_drift_ticks) == (SAFE, 1)


def test_the_read_mode_and_the_drift_bound_reach_the_core() -> None:
    cfg = ReplicaConfig(read_only="lease", lease_drift_ticks=3, election_tick=20).validate()
    core = cfg.raft_config("n1", max_snapshot_chunk=1024)
    assert (core.read_only, core.lease_drift_ticks, core.election_tick) == (LEASE, 3, 20)
    assert core.check_quorum  # the lease rests on leader stickiness
    assert core.validate() == []


def test_a_bad_read_mode_is_said_once_in_the_groups_words() -> None:
    with pytest.raises(ConfigError) as e:
        ReplicaConfig(read_only="fast").validate()
    assert e.value.problems == [
        "read_only must be 'safe' (a heartbeat round per batch of reads) or 'lease' (the leader's lease, "
        "no round while it holds), not 'fast'."]


@pytest.mark.parametrize("drift", [-1, 10, 11])
def test_a_drift_bound_outside_the_election_timeout_is_refused_in_lease_mode(drift: int) -> None:
    problems = ReplicaConfig(read_only="lease", lease_drift_ticks=drift).problems()
    assert problems == [f"lease_drift_ticks must be at least 0 and less than election_tick (10): the lease "
                        f"lasts election_tick - lease_drift_ticks ticks; not {drift}."]
