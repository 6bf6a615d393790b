"""Latency distributions for the simulated network, in seconds.

Each distribution is a small frozen object with ``sample(rng)``; the network passes its own seeded
``random.Random``, so a seed reproduces every delay. ``parse_latency`` reads the CLI form
(``const:0.001``, ``uniform:0.001,0.005``, ``exp:0.002``, ``lognormal:0.001,0.5``).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


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
    Samples are drawn in blocks of 4096 by numpy from a generator seeded from ``rng`` (one
    ``getrandbits(64)`` per block), which costs a tenth of Python's ``gauss()`` per sample; the
    stream is as reproducible as ``rng`` itself.
    """

    median: float
    sigma: float = 0.5
    #: the rng last sampled with and its buffer (one network usually uses one latency)
    _last: list[Any] = field(default_factory=lambda: [None, None], init=False, repr=False, compare=False)

    def sample(self, rng: random.Random) -> float:
        last = self._last
        if last[0] is rng:
            buf = last[1]
        else:
            buf = last[1] = _block(rng, self)
            last[0] = rng
        if not buf:
            gen = np.random.default_rng(rng.getrandbits(64))
            block = np.exp(gen.standard_normal(_BLOCK) * self.sigma + math.log(self.median))
            buf.extend(block.tolist())
        return buf.pop()  # type: ignore[no-any-return]


_BLOCK = 4096


def _block(rng: random.Random, dist: object) -> list[float]:
    """The buffer of pre-drawn samples of ``dist`` for ``rng``, kept on the rng itself."""
    try:
        blocks: dict[int, tuple[object, list[float]]] = rng._storelab_blocks  # type: ignore[attr-defined]
    except AttributeError:
        blocks = rng._storelab_blocks = {}  # type: ignore[attr-defined]
    entry = blocks.get(id(dist))
    if entry is None or entry[0] is not dist:  # (an id can be reused once its object is gone)
        entry = blocks[id(dist)] = (dist, [])
    return entry[1]


def parse_latency(text: str) -> Latency:
    """``const:0.001`` | ``uniform:LO,HI`` | ``exp:MEAN`` | ``lognormal:MEDIAN,SIGMA`` (seconds).

    Every argument is a finite number, none negative; ``uniform`` needs LO <= HI, ``exp`` a
    positive mean and ``lognormal`` a positive median (a distribution that cannot be sampled, or
    whose samples are not finite, would hang or crash a run much later). A bad one raises
    ValueError with one sentence."""
    name, _, args_s = text.partition(":")
    try:
        args = [float(a) for a in args_s.split(",") if a.strip()]
    except ValueError:
        raise ValueError(f"Latency {text!r} has an argument that is not a number.") from None
    if not all(math.isfinite(a) for a in args):
        raise ValueError(f"Latency {text!r} has an argument that is not a finite number.")
    if any(a < 0 for a in args):
        raise ValueError(f"Latency {text!r} has a negative argument.")
    shapes = {"const": (Constant, 1), "uniform": (Uniform, 2), "exp": (Exponential, 1),
              "lognormal": (LogNormal, 2)}
    if name not in shapes:
        raise ValueError(f"Unknown latency {name!r}; use const, uniform, exp or lognormal.")
    cls, nargs = shapes[name]
    if len(args) != nargs:
        raise ValueError(f"Latency {name} takes {nargs} argument(s), got {len(args)} in {text!r}.")
    if name == "uniform" and args[0] > args[1]:
        raise ValueError(f"Latency {text!r} has its low bound above its high bound.")
    if name == "exp" and args[0] == 0:
        raise ValueError(f"Latency {text!r} needs a positive mean.")
    if name == "lognormal" and args[0] == 0:
        raise ValueError(f"Latency {text!r} needs a positive median.")
    return cls(*args)  # type: ignore[no-any-return]
