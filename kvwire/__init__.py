"""The bytes on the cluster bus, shared by both worlds, and its authentication (:mod:`kvwire.auth`).

Theory of operation
-------------------
kvcore says what a message *is* (frozen dataclasses and :mod:`kvcore.codec`'s plain dicts) and
stays standard-library only; this package says how a message becomes *bytes*: msgpack payloads
(:func:`pack`, :func:`unpack`) and, on a stream, 4-byte big-endian length frames (:func:`frame`,
:class:`FrameDecoder`), all in :mod:`kvwire.frames`. Both the SimPy world (``sim/network.py``,
which packs every message so the sim carries and measures the real bytes) and the asyncio world
(``realnet/transport.py``) import it from here, so neither imports the other. It depends on
kvcore and msgpack only. :mod:`kvwire.auth` (imported as ``kvwire.auth``, not re-exported here)
is the authenticated bus: the keyring, the handshake and the per-frame MAC, sans-IO, used by
realnet's transport when a node has a cluster secret.
"""

from kvwire.frames import DEFAULT_MAX_FRAME, HEADER, FrameDecoder, FrameError, frame, pack, unpack

__all__ = [
    "DEFAULT_MAX_FRAME",
    "HEADER",
    "FrameDecoder",
    "FrameError",
    "frame",
    "pack",
    "unpack",
]
