"""Latency distributions for the simulated network, in seconds.

Each distribution is a small frozen object with ``sample(rng)``; the network passes its own seeded
``random.Random``, so a seed reproduces every delay. ``parse_latency`` reads the CLI form
(``const:0.001``, ``uniform:0.001,0.005``, ``exp:0.002``, ``lognormal:0.001,0.5``).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Protocol


class Latency(Protocol):
    def sample(self, rng: random.Random) -> float: ...


@dataclass(frozen=True)
class Constant:
    delay: float

    def sample(self, rng: random.Random) -> float:
        return self.delay


@dataclass(frozen=True)
class Uniform:
    low: float
    high: float

    def sample(self, rng: random.Random) -> float:
        return rng.uniform(self.low, self.high)


@dataclass(frozen=True)
class Exponential:
    """Exponential with the given mean, plus an optional floor (a minimum propagation delay)."""

    mean: float
    floor: float = 0.0

    def sample(self, rng: random.Random) -> float:
        return self.floor + rng.expovariate(1.0 / self.mean)


@dataclass(frozen=True)
class LogNormal:
    """Log-normal given by its median and the sigma of the underlying normal.

    Network RTTs are well described by a log-normal: most samples near the median, a long tail.
    """

    median: float
    sigma: float = 0.5

    def sample(self, rng: random.Random) -> float:
        # gauss() is about twice as fast as normalvariate() behind lognormvariate(); same law
        return math.exp(rng.gauss(math.log(self.median), self.sigma))


def parse_latency(text: str) -> Latency:
    """``const:0.001`` | ``uniform:LO,HI`` | ``exp:MEAN`` | ``lognormal:MEDIAN,SIGMA`` (seconds)."""
    name, _, args_s = text.partition(":")
    try:
        args = [float(a) for a in args_s.split(",") if a.strip()]
    except ValueError:
        raise ValueError(f"Latency {text!r} has an argument that is not a number.") from None
    if any(a < 0 for a in args):
        raise ValueError(f"Latency {text!r} has a negative argument.")
    shapes = {"const": (Constant, 1), "uniform": (Uniform, 2), "exp": (Exponential, 1),
              "lognormal": (LogNormal, 2)}
    if name not in shapes:
        raise ValueError(f"Unknown latency {name!r}; use const, uniform, exp or lognormal.")
    cls, nargs = shapes[name]
    if len(args) != nargs:
        raise ValueError(f"Latency {name} takes {nargs} argument(s), got {len(args)} in {text!r}.")
    return cls(*args)  # type: ignore[no-any-return]
