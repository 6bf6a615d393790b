"""Deterministic random streams derived from one run seed.

Every consumer of randomness in a run (each node incarnation, the network, each client) gets its
own ``random.Random`` seeded from ``derive_seed(seed, *names)``: a SHA-256 of the names, so the
streams do not depend on PYTHONHASHSEED, on the order in which they are created, or on each other
(adding a client does not change what the network draws).
"""

from __future__ import annotations

import hashlib
import random


def derive_seed(seed: int, *parts: object) -> int:
    data = repr((seed, *parts)).encode()
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "big")


def stream(seed: int, *parts: object) -> random.Random:
    return random.Random(derive_seed(seed, *parts))
