"""One node wired in process, for tests that drive ``realnet.api.Api`` without sockets: a
:class:`kvcore.node.Node` (or a subclass) on an :class:`~realnet.runtime.AsyncioRuntime` whose
sink is a :class:`~realnet.transport.PeerTransport` that nothing dials."""

from __future__ import annotations

import asyncio
import random

from kvcore.config import NodeConfig
from kvcore.node import Node
from realnet.runtime import AsyncioRuntime
from realnet.transport import PeerTransport


def started_node(node_class: type[Node] = Node, config: NodeConfig | None = None) -> tuple[Node, PeerTransport]:
    """A started node "n1" and its transport, on the running loop (stop both: ``node.stop()``,
    ``await transport.close()``)."""
    loop = asyncio.get_running_loop()
    runtime = AsyncioRuntime("n1", loop=loop, rng=random.Random(1))
    node = node_class(runtime, config or NodeConfig())
    transport = PeerTransport(node_id="n1", on_message=node.on_message, node_stats=node.stats,
                              rng=runtime.random, loop=loop)
    runtime.sink = transport
    node.start()
    return node, transport
