"""Randomized safety: many seeds of random delivery, reordering, duplication, loss, partitions,
crashes that lose unsynced writes, restarts and compactions (and, in the membership runs,
configuration changes, leadership transfers and ReadIndex reads), with the Raft paper's Figure 3
properties (election safety, leader append-only, log matching, leader completeness, state
machine safety) checked after every single step, and every read's index checked to cover every
entry committed before the read was asked (thesis §6.4: linearizable reads).

A failing seed prints itself; rerun one with ``pytest -k 'seed_17'``. The last test breaks the
persist-before-send contract on purpose and shows the checker then finds violations, so the
checker is not vacuous.
"""

from __future__ import annotations

import random

import pytest

from kvcore.raft import LEADER, NotLeader, ProposalRefused

from .harness import Network, SafetyChecker


class SendBeforeSync(Network):
    """A broken application: sends a Ready's messages before its writes are synced."""

    persist_before_send = False


def run_seed(seed: int, steps: int = 2000, n: int = 5, net_cls: type[Network] = Network,
             crash_p: float = 0.01, membership: bool = False, **cfg: object) -> SafetyChecker:
    rng = random.Random(seed)
    net = net_cls([str(i) for i in range(1, n + 1)], seed=seed, election_tick=6, **cfg)
    checker = SafetyChecker()
    reads: dict[tuple[str, bytes], int] = {}
    proposals = 0
    for step in range(steps):
        ids = list(net.nodes)
        x = rng.random()
        node = rng.choice(ids)
        if x < 0.25:
            net.tick(node)
        elif x < 0.55 and net.inflight:
            m = net.inflight.pop(rng.randrange(len(net.inflight)))  # any order: reordering
            if rng.random() < 0.05:
                net.inflight.append(m)  # duplication
            if rng.random() > 0.05:  # loss
                net.deliver(m)
        elif x < 0.8:
            net.process_ready(node, crash_before_sync=rng.random() < crash_p * 5)
        elif x < 0.88:
            leaders = net.leaders()
            if leaders:
                try:
                    net.propose(rng.choice(leaders), f"{seed}/{proposals}".encode())
                    proposals += 1
                except (NotLeader, ProposalRefused):
                    pass
        elif x < 0.88 + crash_p:
            if net.nodes[node].up:
                net.crash(node)
        elif x < 0.92:
            for i in ids:
                if not net.nodes[i].up:
                    net.restart(i)
        elif x < 0.94:
            if rng.random() < 0.5:
                net.recover()
            else:
                net.cut(node, rng.choice(ids))
        elif x < 0.96 and membership:
            leaders = net.leaders()
            if leaders:
                lead = net.raft(leaders[0])
                conf = lead.log.conf()
                choice = rng.random()
                try:
                    if choice < 0.1:
                        lead.transfer_leader(rng.choice(conf.voters))
                    elif choice < 0.5 and len(conf.voters) > 2:
                        lead.propose_conf_change("remove", rng.choice(conf.voters))
                    elif choice < 0.7 and conf.learners:
                        lead.propose_conf_change("promote", rng.choice(conf.learners))
                    else:
                        outside = [i for i in ids if i not in conf.voters and i not in conf.learners]
                        if outside:
                            lead.propose_conf_change("add-learner", rng.choice(outside))
                except (ProposalRefused, NotLeader):
                    pass
            if rng.random() < 0.5 and net.nodes[node].up:
                try:
                    net.raft(node).read_index(f"r{step}".encode())
                    # linearizable: the read point covers every entry committed before the read
                    reads[(node, f"r{step}".encode())] = max(checker.committed, default=0)
                except NotLeader:
                    pass
        elif x < 0.97:
            r = net.raft(node)
            if net.nodes[node].up and r.log.applied > r.log.snapshot.meta.index and not r.has_ready():
                r.compact(r.log.applied, f"image@{r.log.applied}".encode())
        for who, rs in net.read_results:
            assert rs.index >= reads[(who, rs.ctx)], \
                f"seed {seed}: read {rs.ctx!r} at {rs.index} misses commits up to {reads[(who, rs.ctx)]}"
        net.read_results.clear()
        try:
            checker.check(net)
        except AssertionError as e:
            raise AssertionError(f"seed {seed}, step {step}: {e}") from None
    return checker


@pytest.mark.parametrize("seed", range(40), ids=lambda s: f"seed_{s}")
def test_figure3_properties_hold_under_random_faults(seed: int) -> None:
    run_seed(seed)


def test_random_runs_make_progress() -> None:
    """The runs above are not vacuous: they elect leaders and commit entries."""
    rng_terms = []
    for seed in range(5):
        net = Network(["1", "2", "3"], seed=seed, election_tick=6)
        for _ in range(100):
            net.tick_all()
            if net.leaders():
                break
        leader = net.leaders()[0]
        net.propose(leader, b"x")
        net.stabilize()
        assert all(n.applied and n.applied[-1].data == b"x" for n in net.nodes.values())
        rng_terms.append(net.raft(leader).term)
    assert rng_terms and all(t >= 1 for t in rng_terms)
    for seed in range(3):  # and the random runs themselves elect leaders and commit proposals
        checker = run_seed(seed)
        assert len(checker.leader_of_term) >= 1, f"seed {seed}: no leader was ever elected"
        assert any(e.data for e in checker.committed.values()), f"seed {seed}: no proposal committed"


@pytest.mark.parametrize("seed", range(200, 230), ids=lambda s: f"seed_{s}")
def test_figure3_holds_with_membership_changes_transfers_and_reads(seed: int) -> None:
    run_seed(seed, steps=2500, n=5, membership=True)


@pytest.mark.parametrize("options", [{"pre_vote": False, "check_quorum": False}, {"pre_vote": True, "check_quorum": False},
                                     {"pre_vote": False, "check_quorum": True}, {"max_snapshot_chunk": 3}],
                         ids=["plain", "prevote-only", "checkquorum-only", "tiny-chunks"])
def test_figure3_holds_in_every_configuration(options: dict[str, object]) -> None:
    for seed in range(300, 308):
        run_seed(seed, steps=2500, n=5, membership=True, **options)


@pytest.mark.parametrize("n", [3, 5])
def test_seeds_on_three_and_five_nodes_with_more_crashes(n: int) -> None:
    for seed in range(100, 110):
        run_seed(seed, steps=3000, n=n, crash_p=0.03)


def test_breaking_persist_before_send_is_caught() -> None:
    """Figure 2 "respond to RPCs only after updating stable storage": a voter whose vote response
    leaves before its vote is synced, and which then crashes, votes again in the same term, and
    the checker sees two leaders of one term (election safety). The checker is not vacuous."""
    net = SendBeforeSync(["1", "2", "3"], pre_vote=False, check_quorum=False)
    checker = SafetyChecker()
    net.raft("1").campaign()
    net.process_ready("1")            # 1's RequestVotes leave
    net.deliver_all("3")
    net.process_ready("3", crash_before_sync=True)   # 3's vote leaves, then 3 crashes unsynced
    net.deliver_all("1")
    assert net.raft("1").role == LEADER
    checker.check(net)
    net.restart("3")
    assert net.raft("3").vote is None and net.raft("3").term == 0   # the vote was lost
    net.inflight = [m for m in net.inflight if m.dst != "2"]  # 1's RequestVote to 2 is lost
    net.raft("2").campaign()                                   # term 1 again
    net.process_ready("2")
    net.deliver_all("3")
    net.process_ready("3")
    net.deliver_all("2")
    assert net.raft("2").role == LEADER and net.raft("2").term == net.raft("1").term
    with pytest.raises(AssertionError, match="election safety"):
        checker.check(net)


def test_the_same_scenario_is_safe_when_the_contract_is_kept() -> None:
    """Same steps with persist-before-send: the crash loses the vote *and* its response."""
    net = Network(["1", "2", "3"], pre_vote=False, check_quorum=False)
    checker = SafetyChecker()
    net.raft("1").campaign()
    net.process_ready("1")
    net.deliver_all("3")
    net.process_ready("3", crash_before_sync=True)
    net.deliver_all("1")
    assert net.raft("1").role != LEADER  # 3's vote never left
    net.restart("3")
    net.inflight = [m for m in net.inflight if m.dst != "2"]
    net.raft("2").campaign()
    net.stabilize()
    checker.check(net)
    assert len(net.leaders()) <= 1


def test_leader_role_reached_in_random_runs() -> None:
    net = Network(["1", "2", "3"], seed=3)
    for _ in range(100):
        net.tick_all()
    assert len(net.leaders()) == 1 and net.raft(net.leaders()[0]).role == LEADER


def test_random_search_finds_violations_when_the_contract_is_broken() -> None:
    """The random runs themselves have teeth: with sends before syncs (and plain elections, so
    re-elections come fast), some seed soon breaks a Figure 3 property (seed 5 did when this
    was written: two different entries committed at one index)."""
    for seed in range(150):
        try:
            run_seed(seed, steps=3000, n=3, net_cls=SendBeforeSync, crash_p=0.03,
                     pre_vote=False, check_quorum=False)
        except AssertionError as e:
            assert "seed" in str(e)
            return
    raise AssertionError("150 seeds of a broken persistence contract showed no violation")
