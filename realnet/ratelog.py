"""Rate-limited logging: what a hostile peer or client can trigger must not flood the log.

Theory of operation
-------------------
Every log line that bad input can cause (a malformed peer frame, a refused handshake, a
connection over the cap) goes through one :class:`RateLimitedLog`, keyed by a short reason. Per
key, at most ``burst`` lines are written per ``every`` seconds; the rest are counted, and the
first line written after the window says how many were left out. So 20,000 hostile frames write
a handful of lines, and every one of them is still counted in the metrics by whoever called.
Keys are reasons, not peer addresses, so an attacker cannot make new keys by opening new
connections; the table is bounded anyway (``max_keys``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

__all__ = ["RateLimitedLog"]


class RateLimitedLog:
    """``log(level, key, fmt, *args)``: at most ``burst`` lines per ``every`` seconds per key."""

    def __init__(
        self,
        logger: logging.Logger,
        clock: Callable[[], float],
        every: float = 60.0,
        burst: int = 3,
        max_keys: int = 256,
    ) -> None:
        self.logger = logger
        self.clock = clock
        self.every = every
        self.burst = burst
        self.max_keys = max_keys
        #: key -> [window start, lines written in it, lines left out since the last written]
        self._keys: dict[str, list[float]] = {}
        #: lines left out in total (for tests and /cluster/info)
        self.suppressed = 0

    def log(self, level: int, key: str, fmt: str, *args: Any, exc_info: bool = False) -> bool:
        """Write the line unless this key is over its budget; True if it was written."""
        now = self.clock()
        st = self._keys.get(key)
        if st is None:
            if len(self._keys) >= self.max_keys:
                self._keys.clear()
            st = self._keys[key] = [now, 0, 0]
        elif now - st[0] >= self.every:
            st[0], st[1] = now, 0
        if st[1] >= self.burst:
            st[2] += 1
            self.suppressed += 1
            return False
        st[1] += 1
        left_out = int(st[2])
        st[2] = 0
        if left_out:
            fmt += " (%d similar line(s) left out before this one)"
            args = (*args, left_out)
        self.logger.log(level, fmt, *args, exc_info=exc_info)
        return True
