"""Rate-limited logging of what hostile or broken peers and clients cause.

Theory of operation
-------------------
Whatever a remote party controls must not control the size of our log: issue 10 saw 318,460
tracebacks (143 MB of stderr) from 1,100 idle connections and 14,386 warning lines from 20,000
hostile frames. Every place that logs malformed or abusive input goes through one
:class:`RateLog` per concern (``"http.refused"``, ``"accept"``, ...), which keeps a token bucket
per *kind* of event: at most ``burst`` lines at once and ``rate`` lines per second after that.
What is suppressed is counted, and the next line that gets through says how many were dropped
("... (37 similar messages suppressed)"). The counts are kept whatever is logged
(:attr:`RateLog.counts`, by kind), so ``/metrics`` shows how much was refused even when the log
says little.

Kinds are reasons, not addresses, so a remote party cannot make new kinds by opening new
connections; the tables are bounded anyway (``max_kinds``: past it, new kinds share one,
``"other"``).

The clock is injectable (``clock``): tests drive it by hand. It is the one helper both the HTTP
server (:mod:`realnet.http`, ``refusals``) and the peer transport (``PeerTransport.ratelog``)
use; it knows nothing of either.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

__all__ = ["OTHER", "RateLog"]

#: the kind that events of new kinds share once ``max_kinds`` kinds are known
OTHER = "other"


class RateLog:
    """A token bucket per kind of event in front of a logger (see the module docstring)."""

    __slots__ = (
        "_buckets", "burst", "clock", "counts", "dropped", "logger", "max_kinds", "rate", "suppressed",
    )

    def __init__(
        self,
        logger: logging.Logger,
        rate: float = 1.0,
        burst: int = 10,
        clock: Callable[[], float] = time.monotonic,
        max_kinds: int = 256,
    ) -> None:
        self.logger = logger
        self.max_kinds = max_kinds
        self.rate = rate
        self.burst = burst
        self.clock = clock
        #: events by kind, logged or not
        self.counts: dict[str, int] = {}
        #: events by kind not logged since the last line of that kind (said in the next line)
        self.suppressed: dict[str, int] = {}
        #: events by kind never logged, in all
        self.dropped: dict[str, int] = {}
        self._buckets: dict[str, tuple[float, float]] = {}  # kind -> (tokens, last refill)

    def log(self, level: int, kind: str, msg: str, *args: Any, exc_info: Any = None) -> bool:
        """Count one event of ``kind`` and log it if its bucket has a token; True if logged."""
        if kind not in self.counts and len(self.counts) >= self.max_kinds:
            kind = OTHER  # every table stays bounded, and no counter goes backwards
        self.counts[kind] = self.counts.get(kind, 0) + 1
        now = self.clock()
        tokens, last = self._buckets.get(kind, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self._buckets[kind] = (tokens, now)
            self.suppressed[kind] = self.suppressed.get(kind, 0) + 1
            self.dropped[kind] = self.dropped.get(kind, 0) + 1
            return False
        self._buckets[kind] = (tokens - 1.0, now)
        dropped = self.suppressed.pop(kind, 0)
        if dropped:
            msg += " (%d similar messages suppressed)"
            args = (*args, dropped)
        self.logger.log(level, msg, *args, exc_info=exc_info)
        return True

    def warning(self, kind: str, msg: str, *args: Any) -> bool:
        return self.log(logging.WARNING, kind, msg, *args)

    def info(self, kind: str, msg: str, *args: Any) -> bool:
        return self.log(logging.INFO, kind, msg, *args)

    @property
    def suppressed_total(self) -> int:
        """Every event never logged, of every kind."""
        return sum(self.dropped.values())
