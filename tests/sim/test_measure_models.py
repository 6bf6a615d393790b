"""The pure models of sim.measure against direct simulation and published tables.

* :func:`sim.measure.gossip_mean_field` is checked against a direct Monte Carlo simulation of
  the push process it approximates (fanout k, each node ticking once per round at its own random
  phase, extra piggybacked sends at a Poisson rate, a limit on sends per node).
* :func:`sim.measure.poisson_interval` is checked against the chi-square table values of the
  exact Garwood interval and against its defining tail probabilities.
"""

from __future__ import annotations

import heapq
import math
import random

import numpy as np
import pytest

from kvcore.membership import SwimConfig
from sim import measure as M


def push_process(n: int, fanout: int, *, transmits: float = math.inf, piggyback: float = 0.0,
                 seed: int = 0) -> np.ndarray:
    """When each of ``n`` nodes learns a rumour node 0 knows at time 0 (rounds): every informed
    node sends to ``fanout`` distinct random others at each of its ticks (one per round, random
    phase) after it learned, plus one send at the events of a Poisson process of rate
    ``piggyback``, until it has sent ``transmits``."""
    rnd = random.Random(seed)
    phase = [rnd.random() for _ in range(n)]
    learned = [math.inf] * n
    sent = [0] * n
    heap: list[tuple[float, int, int]] = []

    def learn(i: int, t: float) -> None:
        learned[i] = t
        tick = math.floor(t - phase[i]) + 1 + phase[i]
        heapq.heappush(heap, (tick if tick > t else tick + 1, 0, i))
        if piggyback > 0:
            heapq.heappush(heap, (t + rnd.expovariate(piggyback), 1, i))

    learn(0, 0.0)
    left = n - 1
    while heap and left:
        t, kind, i = heapq.heappop(heap)
        m = int(min(fanout if kind == 0 else 1, transmits - sent[i]))
        if m <= 0:
            continue
        targets: set[int] = set()
        while len(targets) < m:
            j = rnd.randrange(n)
            if j != i:
                targets.add(j)
        sent[i] += m
        for j in targets:
            if learned[j] == math.inf:
                learn(j, t)
                left -= 1
        if sent[i] < transmits:
            heapq.heappush(heap, (t + 1 if kind == 0 else t + rnd.expovariate(piggyback), kind, i))
    return np.array(learned)


@pytest.mark.parametrize(
    ("n", "fanout", "transmits", "piggyback"),
    [(256, 3, math.inf, 0.0), (128, 1, math.inf, 0.0), (65, 3, 8, 0.4)],
)
def test_gossip_mean_field_matches_a_direct_simulation_of_push_gossip(
    n: int, fanout: int, transmits: float, piggyback: float
) -> None:
    runs = [push_process(n, fanout, transmits=transmits, piggyback=piggyback, seed=s)
            for s in range(80)]
    half = np.median([np.sort(r)[n // 2] for r in runs])
    everyone = np.array([r.max() for r in runs])
    model = M.gossip_mean_field(n, fanout, transmits=transmits, piggyback_rate=piggyback)
    # the mean field leaves out the randomness of the first sends: medians agree to a fraction
    # of a round, and the model's 10-90 % range of "everyone" sits inside the simulated one's,
    # give or take a third of a round
    assert model.time_to_fraction(0.5) == pytest.approx(half, abs=0.25)
    assert model.all_informed_quantile(0.5) == pytest.approx(np.median(everyone), abs=0.35)
    assert model.all_informed_quantile(0.1) > np.quantile(everyone, 0.1) - 0.35
    assert model.all_informed_quantile(0.9) < np.quantile(everyone, 0.9) + 0.35


def test_gossip_mean_field_fanout_speeds_it_up_and_a_send_limit_can_leave_nodes_out() -> None:
    fast, slow = M.gossip_mean_field(1024, 3), M.gossip_mean_field(1024, 1)
    assert fast.all_informed_quantile() < slow.all_informed_quantile() / 2
    # unlimited sends: everyone learns; a budget of 2 sends leaves a visible share out
    assert fast.informed[-1] == pytest.approx(1024, abs=1e-3)
    starved = M.gossip_mean_field(1024, 1, transmits=2)
    assert starved.informed[-1] < 0.9 * 1024
    assert math.isnan(starved.all_informed_quantile(0.5))


def test_swim_gossip_model_reads_the_config() -> None:
    lan = SwimConfig.lan()
    model = M.swim_gossip_model(64, lan)
    direct = M.gossip_mean_field(65, lan.gossip_nodes, transmits=8, piggyback_rate=0.4)
    assert model.n == 65
    assert model.all_informed_quantile() == pytest.approx(direct.all_informed_quantile())
    # more gossip targets per round: faster
    assert M.swim_gossip_model(64, SwimConfig.lan(gossip_nodes=1)).all_informed_quantile() > \
        model.all_informed_quantile() + 1.0


@pytest.mark.parametrize(
    ("count", "low", "high"),
    # Garwood's chi-square form: chi2(0.025; 2k)/2, chi2(0.975; 2k+2)/2
    [(0, 0.0, 3.6889), (1, 0.02532, 5.5716), (4, 1.0899, 10.2416), (10, 4.7954, 18.3904),
     (100, 81.364, 121.627)],
)
def test_poisson_interval_matches_the_chi_square_table(count: int, low: float, high: float) -> None:
    lo, hi = M.poisson_interval(count)
    assert lo == pytest.approx(low, abs=2e-4)
    assert hi == pytest.approx(high, rel=1e-4)


def test_poisson_interval_is_a_rate_per_unit_of_exposure_with_its_defining_tails() -> None:
    lo, hi = M.poisson_interval(7, exposure=8.0, confidence=0.9)
    # at the bounds, seeing 7 or more (low) / 7 or fewer (high) has probability 5 %
    cdf = M._poisson_cdf
    assert 1 - cdf(6, lo * 8.0) == pytest.approx(0.05, abs=1e-9)
    assert cdf(7, hi * 8.0) == pytest.approx(0.05, abs=1e-9)
    assert lo < 7 / 8 < hi
    with pytest.raises(ValueError):
        M.poisson_interval(-1)
