"""The API's reply slots without sockets: answered now, answered later, never mixed up.

:meth:`realnet.api.Api.kv` hands the node one spare reply slot for every request it answers
synchronously and a new one after a request the node kept (forwarded): these tests hold a node
that keeps some requests and answers them out of order, interleaved with local ones.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from kvcore.messages import Reply
from kvcore.node import Node
from realnet.api import Api
from realnet.http import Response
from realnet.httpparse import Request
from realnet.transport import PeerTransport
from tests.realnet.inprocess import started_node


class KeepsRemoteKeys(Node):
    """Test only: a node that holds on to requests for keys starting with ``remote`` (as if it
    had forwarded them) and answers them when the test says so."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.kept: list[tuple[Any, Callable[[Reply], None]]] = []

    def on_client_request(self, op: Any, reply: Callable[[Reply], None]) -> None:
        if op.key.startswith(b"remote"):
            self.kept.append((op, reply))
        else:
            super().on_client_request(op, reply)


def _req(method: str, key: str, body: bytes = b"") -> Request:
    return Request(method, f"/kv/{key}", f"/kv/{key}", "", "HTTP/1.1", {"host": "h"}, body, None)


async def _api(node_class: type[Node]) -> tuple[Api, Node, PeerTransport]:
    node, transport = started_node(node_class)
    return Api(node, transport, loop=asyncio.get_running_loop()), node, transport


def test_kept_requests_resolve_to_their_own_replies_between_local_ones() -> None:
    async def body() -> None:
        api, node, transport = await _api(KeepsRemoteKeys)
        assert isinstance(node, KeepsRemoteKeys)
        try:
            local = api(_req("PUT", "a", b"va"))
            assert type(local) is Response and local.status == 204
            first = api(_req("GET", "remote1"))
            assert type(first) is not Response and not first.done()
            got = api(_req("GET", "a"))
            assert type(got) is Response and (got.status, got.body) == (200, b"va")
            second = api(_req("GET", "remote2"))
            assert second is not first and not second.done()
            again = api(_req("GET", "a"))
            assert type(again) is Response and again.body == b"va" and again is not got
            assert api(_req("GET", "missing")).status == 404  # type: ignore[union-attr]
            # answered out of order
            (_, reply1), (_, reply2) = node.kept
            reply2(Reply(value=b"two"))
            reply1(Reply(error="not_found", message="key 'remote1' not found"))
            reply1(Reply(value=b"late"))  # a second reply to one request is ignored
            done: list[Any] = []
            first.add_done_callback(done.append)
            second.add_done_callback(done.append)
            for _ in range(100):
                if len(done) == 2:
                    break
                await asyncio.sleep(0)
            assert first.result().status == 404 and second.result().body == b"two"
            # the spare slot is not disturbed by those replies
            assert api(_req("GET", "a")).body == b"va"  # type: ignore[union-attr]
            assert api.statuses == {204: 1, 200: 4, 404: 2}
            ops = {op for op, _ in api.op_latency.hists}
            assert ops == {"get", "put"}
            assert sum(h.count for h in api.op_latency.hists.values()) == 7
        finally:
            node.stop()
            await transport.close()

    asyncio.run(body())


def test_a_spare_slot_ignores_a_reply_between_requests() -> None:
    async def body() -> None:
        api, node, transport = await _api(Node)
        try:
            assert api(_req("PUT", "a", b"va")).status == 204  # type: ignore[union-attr]
            spare = api._spare
            assert spare is not None
            spare(Reply(value=b"stray"))  # nobody asked: no response is kept for the next one
            assert spare.response is None
            got = api(_req("GET", "a"))
            assert type(got) is Response and got.body == b"va"
            assert sum(h.count for h in api.op_latency.hists.values()) == 2
            assert node.stats.ops == {"Put ok": 1, "Get ok": 1}
        finally:
            node.stop()
            await transport.close()

    asyncio.run(body())


def test_a_node_that_overrides_the_client_door_is_heard_and_a_plain_one_answers_now() -> None:
    async def body() -> None:
        for cls, kept in ((Node, False), (KeepsRemoteKeys, True)):
            api, node, transport = await _api(cls)
            try:
                result = api(_req("GET", "remote"))
                assert (type(result) is not Response) is kept
            finally:
                node.stop()
                await transport.close()

    asyncio.run(body())
