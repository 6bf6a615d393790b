"""kvcore: the storelab node logic. Pure, deterministic, standard library only, no I/O.

Everything a node needs from the world comes through :class:`kvcore.runtime.Runtime`; see
ARCHITECTURE.md, "The boundary".
"""

from kvcore.config import ClusterConfig, ConfigError, NodeConfig, NodeSpec
from kvcore.messages import Delete, Get, Put, Reply
from kvcore.node import Node
from kvcore.runtime import FakeRuntime, Runtime
from kvcore.slots import NUM_SLOTS, SlotMap, key_slot

__all__ = [
    "NUM_SLOTS",
    "ClusterConfig",
    "ConfigError",
    "Delete",
    "FakeRuntime",
    "Get",
    "Node",
    "NodeConfig",
    "NodeSpec",
    "Put",
    "Reply",
    "Runtime",
    "SlotMap",
    "key_slot",
]
