"""The owner's fast path for forwarded requests (``Router.on_forward``) serves them exactly as
its general path does.

Two twin nodes (same seed, same cluster, same history) take the same stream of ``Forward``
messages from a peer: one with the fast path, the other with it turned off
(``router._serve_fast = False``, every forward down the general path). After every message both
must have sent the same messages and hold the same counters, store, memory of forwarded writes
and writes awaiting an answer; and once time passes (the memory expires) they must still agree.
The stream covers local keys present and absent, a key whose slot another node owns, an
unowned slot, a migrating slot (held and not held), refusals of every kind, duplicated writes
(answered from memory, never applied twice), a gated (restarted) node, a durable node (its
answers wait for the storage), a wrapped ``apply`` and a node that refuses every key.
"""

from __future__ import annotations

from typing import Any

import pytest

from kvcore import errors
from kvcore.config import NodeConfig
from kvcore.messages import Delete, Forward, ForwardReply, Get, Put, Reply
from kvcore.node import Node
from kvcore.runtime import FakeRuntime
from kvcore.slots import key_slot
from tests.kvcore.test_answer_now import (
    CLUSTER,
    LOCAL,
    LOCAL_ABSENT,
    MIGRATING,
    MIGRATING_ABSENT,
    REMOTE,
    UNOWNED,
    CountedApply,
)

OPS: list[Any] = [
    Get(key=LOCAL), Get(key=LOCAL_ABSENT), Put(key=LOCAL, value=b"w"), Put(key=LOCAL_ABSENT, value=b""),
    Get(key=LOCAL_ABSENT), Delete(key=LOCAL), Delete(key=LOCAL_ABSENT), Get(key=LOCAL),
    Get(key=REMOTE), Put(key=REMOTE, value=b"v"), Delete(key=REMOTE),
    Get(key=UNOWNED), Put(key=UNOWNED, value=b"v"),
    Get(key=MIGRATING), Put(key=MIGRATING, value=b"v"), Delete(key=MIGRATING),
    Get(key=MIGRATING_ABSENT), Put(key=MIGRATING_ABSENT, value=b"v"),
    Get(key=b""), Put(key=b"", value=b"v"), Delete(key=b""),
    Get(key=b"k" * 1024), Get(key=b"k" * 1025), Put(key=b"k" * 1025, value=b"v"),
    Put(key=LOCAL, value=b"v" * (1024 * 1024)), Put(key=LOCAL, value=b"v" * (1024 * 1024 + 1)),
    Get(key="k"), Put(key=LOCAL, value="v"), Put(key=LOCAL, value=None), Put(key=LOCAL, value=bytearray(b"v")),
    Get(key=bytearray(LOCAL)), Put(key=b"{tag}x", value=b"t"), Get(key=b"{tag}y"), Get(key=b"{tag}x"),
]

KINDS = ["standalone", "cluster", "migrating", "gated", "durable", "wrapped-apply", "refusing"]


def _twin(kind: str, fast: bool) -> tuple[Node, FakeRuntime]:
    rt = FakeRuntime("n1", seed=7)
    cls: type[Node] = CountedApply if kind == "wrapped-apply" else Node
    config = NodeConfig(durable=True) if kind == "durable" else NodeConfig()
    if kind == "standalone":
        node = cls(rt, config)
    elif kind == "gated":
        node = cls(rt, config, CLUSTER, sync_first=True)
    else:
        node = cls(rt, config, CLUSTER)
    node.start()
    node.on_client_request(Put(key=LOCAL, value=b"v"), lambda r: None)
    node.on_client_request(Put(key=MIGRATING, value=b"m"), lambda r: None)
    if kind == "migrating":
        node.begin_migrate([key_slot(MIGRATING)], "n2")
    if kind == "refusing":
        node.router.refusal = lambda: errors.TryAgain("node n1 refuses every key (a test)")
    node.router._serve_fast = fast and node.router._serve_fast
    rt.take_sent()
    return node, rt


def _state(node: Node, rt: FakeRuntime) -> tuple[object, ...]:
    router = node.router
    stats = node.stats
    return (
        list(rt.sent), dict(stats.ops), dict(stats.sent), dict(stats.received), dict(node.store._data),
        stats.forwards_received, stats.forward_duplicates, stats.malformed,
        [(k, t, router.recent._values[k]) for k, t in router.recent._expiry.items()], {k: len(v) for k, v in router.awaiting.items()},
        getattr(node, "applied", None),
    )


def _stream() -> list[Forward]:
    """Every op forwarded once, each write a second time under the same id (a duplicate), and
    the whole again under new ids."""
    out: list[Forward] = []
    rid = 1000
    for _ in range(2):
        for op in OPS:
            rid += 1
            out.append(Forward(request_id=rid, op=op))
            if type(op) is not Get:
                out.append(Forward(request_id=rid, op=op))
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_the_fast_path_serves_forwards_as_the_general_path(kind: str) -> None:
    fast, frt = _twin(kind, True)
    slow, srt = _twin(kind, False)
    for msg in _stream():
        fast.on_message("n2", msg)
        slow.on_message("n2", msg)
        assert _state(fast, frt) == _state(slow, srt), msg
    for _ in range(3):  # the memory of writes expires alike, and what waited is answered alike
        frt.advance(6.0)
        srt.advance(6.0)
        assert _state(fast, frt) == _state(slow, srt)
    again = Forward(request_id=1001, op=Put(key=LOCAL, value=b"late"))  # remembered no more
    fast.on_message("n2", again)
    slow.on_message("n2", again)
    assert _state(fast, frt) == _state(slow, srt)


def test_the_fast_path_takes_the_common_forwards() -> None:
    # it must not pass everything on: the plain Get and Put of a local key are its reason to be
    node, rt = _twin("cluster", True)

    def no_validate(op: Any) -> bytes:
        raise AssertionError(f"the general path validated {op}")

    node.router.validate = no_validate  # type: ignore[method-assign]
    node.on_message("n2", Forward(request_id=1, op=Get(key=LOCAL)))
    node.on_message("n2", Forward(request_id=2, op=Put(key=LOCAL, value=b"w")))
    node.on_message("n2", Forward(request_id=3, op=Get(key=LOCAL_ABSENT)))
    sent = rt.take_sent()
    assert [(dst, type(m), m.request_id) for dst, m in sent] == [("n2", ForwardReply, i) for i in (1, 2, 3)]
    assert sent[0][1].reply == Reply(value=b"v") and sent[1][1].reply == Reply()
    assert sent[2][1].reply.error == "not_found"
    assert node.store._data[LOCAL] == b"w"
    for kind in ("gated", "durable", "wrapped-apply", "refusing"):
        other, _ = _twin(kind, True)
        other.router.validate = no_validate  # type: ignore[method-assign]
        with pytest.raises(AssertionError, match="general path validated"):
            other.on_message("n2", Forward(request_id=1, op=Get(key=LOCAL)))
