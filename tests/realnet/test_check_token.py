"""``POST /cluster/check-token``, the admin verb that changes nothing, without processes: 200 with
the admin token the node was started with (or any, or none, when it has none), 401 without it or
with another, through the same door as every admin ``POST`` (the head check included), and the
node's state the same after it. ``storelab cluster`` asks it of every node a command will change
before it changes any: the real-process side is ``test_check_token_cli``."""

from __future__ import annotations

import json
from typing import Any

from kvcore.node import Node
from realnet.admin import CHECK_TOKEN
from realnet.api import Api
from realnet.httpparse import Request

from .test_replica_api import _answer, _with_api

TOKEN = "s3cret-token"


def _post(path: str, body: Any, headers: dict[str, str] | None = None, raw: bytes | None = None) -> Request:
    h = {"host": "h", "content-type": "application/json", **(headers or {})}
    data = raw if raw is not None else json.dumps(body).encode()
    return Request("POST", path, path, "", "HTTP/1.1", h, data, None)


def _bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def _state(node: Node) -> dict[str, Any]:
    """What an admin verb could change: the node's claim, map, members and marks."""
    info = node.info()
    return {k: info.get(k) for k in ("mode", "epoch", "slots_owned", "slots_assigned", "incarnation", "joined",
                                     "members", "migrating", "importing", "keys", "raft")} | {
        "map": node.slot_map.ranges_of(node.id)}


def test_check_token_answers_200_with_the_admin_token_and_401_otherwise_changing_nothing() -> None:
    async def test(api: Api, node: Node) -> None:
        before = _state(node)
        status, out = _answer(api, _post(CHECK_TOKEN, {}, _bearer(TOKEN)))
        assert (status, out) == (200, {"id": "n1", "ok": True, "token_required": True})
        for headers in ({}, _bearer("wrong"), _bearer(TOKEN + "x"), {"authorization": f"Basic {TOKEN}"}):
            status, out = _answer(api, _post(CHECK_TOKEN, {}, headers))
            assert status == 401 and out["error"] == "unauthorized", (headers, out)
            assert "admin token" in out["message"]
            # refused on its head, as every admin POST is, before a body could be read
            head = api.head_refusal(_post(CHECK_TOKEN, {}, headers))
            assert head is not None and head.status == 401
        assert api.head_refusal(_post(CHECK_TOKEN, {}, _bearer(TOKEN))) is None
        # the same door as the verbs that change: an empty body is {}, a non-object 400, another type 415
        assert _answer(api, _post(CHECK_TOKEN, None, _bearer(TOKEN), raw=b""))[0] == 200
        status, out = _answer(api, _post(CHECK_TOKEN, None, _bearer(TOKEN), raw=b"[]"))
        assert status == 400 and "JSON object" in out["message"]
        status, _ = _answer(api, _post(CHECK_TOKEN, {}, {**_bearer(TOKEN), "content-type": "text/plain"}))
        assert status == 415
        get = Request("GET", CHECK_TOKEN, CHECK_TOKEN, "", "HTTP/1.1", {"host": "h"}, b"", None)
        assert _answer(api, get)[0] == 405
        assert _state(node) == before  # nothing changed, whatever it answered
        assert api.statuses[200] == 2 and api.statuses[401] == 8  # (4 by the door, 4 by the head check)

    _with_api(test, TOKEN, Node)


def test_a_node_without_an_admin_token_takes_any_token_and_none() -> None:
    async def test(api: Api, node: Node) -> None:
        before = _state(node)
        for headers in ({}, _bearer("whatever")):
            status, out = _answer(api, _post(CHECK_TOKEN, {}, headers))
            assert (status, out) == (200, {"id": "n1", "ok": True, "token_required": False})
        assert _state(node) == before

    _with_api(test, None, Node)
