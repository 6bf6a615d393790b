"""Hostile peer frames against the decoders directly (hypothesis): nothing but FrameError.

A few thousand generated inputs per run (``tests/tools/hostile.py`` draws them; the live-node
half is ``tests/realnet/test_hostile_peer.py``; ``tests/tools/hostile_peer.py`` sends 10^5 to a
live node). Every input either decodes to messages or raises :class:`kvwire.FrameError` (or,
in a handshake, :class:`kvwire.auth.AuthError`); nothing else may escape, whatever the bytes.
"""

from __future__ import annotations

import base64
import random
import secrets

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kvwire
from kvcore.messages import Nack
from kvwire import auth
from tests.tools.hostile import hostile_stream

EXAMPLES = settings(max_examples=1500, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])
KEY = auth.Keyring((base64.b64encode(secrets.token_bytes(32)),))
OTHER = auth.Keyring((base64.b64encode(secrets.token_bytes(32)),))


def feed_all(decoder: kvwire.FrameDecoder, data: bytes, cut: int) -> list[object]:
    """Feed ``data`` in chunks of ``cut`` bytes; FrameError is the only exception allowed."""
    out: list[object] = []
    try:
        for i in range(0, len(data), max(1, cut)):
            out += decoder.feed(data[i : i + max(1, cut)])
    except kvwire.FrameError as e:
        assert e.reason in ("oversized", "malformed", "auth_failed"), e.reason
        assert str(e)
    return out


@EXAMPLES
@given(st.randoms(use_true_random=False), st.integers(1, 64))
def test_generated_hostile_streams_give_messages_or_a_frame_error(rng: random.Random, cut: int) -> None:
    feed_all(kvwire.FrameDecoder(64 * 1024), hostile_stream(rng, OTHER), cut)


@EXAMPLES
@given(st.binary(max_size=512), st.integers(1, 64))
def test_arbitrary_bytes_give_messages_or_a_frame_error(data: bytes, cut: int) -> None:
    feed_all(kvwire.FrameDecoder(64 * 1024), data, cut)


@EXAMPLES
@given(st.randoms(use_true_random=False))
def test_a_handshake_fed_hostile_frames_refuses_with_an_auth_error(rng: random.Random) -> None:
    server = auth.ServerHandshake(KEY, "b")
    buf = bytearray(hostile_stream(rng, OTHER))
    payloads, _ = auth.split_frames(buf)
    for payload in payloads[:2]:
        fields = auth.handshake_fields(payload)
        if fields is None:
            return
        try:
            if not server.answered:
                server.on_hello(fields)
            else:
                server.on_proof(fields)
        except auth.AuthError as e:
            assert e.reason and str(e)
            return
    # a hostile stream never completes a handshake: it holds no key of ours
    assert not (server.answered and len(payloads) > 1)


def handshake() -> tuple[auth.Session, auth.Session]:
    c = auth.ClientHandshake(KEY, "a")
    s = auth.ServerHandshake(KEY, "b")
    fields = auth.handshake_fields(auth.split_frames(bytearray(c.hello()))[0][0])
    assert fields is not None
    challenge = auth.handshake_fields(auth.split_frames(bytearray(s.on_hello(fields)))[0][0])
    assert challenge is not None
    proof, cs = c.on_challenge(challenge)
    pf = auth.handshake_fields(auth.split_frames(bytearray(proof))[0][0])
    assert pf is not None
    return cs, s.on_proof(pf)


@EXAMPLES
@given(st.integers(1, 20), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)),
                                    min_size=1, max_size=4), st.integers(1, 64))
def test_a_tampered_authenticated_stream_yields_only_a_prefix_of_what_was_sealed(
    n: int, edits: list[tuple[int, int]], cut: int
) -> None:
    c, s = handshake()
    msgs = [Nack(seq=i) for i in range(n)]
    sealed = b"".join(c.seal(kvwire.pack(m)) for m in msgs)
    data = bytearray(sealed)
    for pos, byte in edits:
        data[pos % len(data)] = byte
    changed = bytes(data) != sealed  # a later edit may put back what an earlier one changed
    d = kvwire.FrameDecoder(1024)
    d.authenticate(s.open, auth.TAG_BYTES)
    got = feed_all(d, bytes(data), cut)
    assert got == msgs[: len(got)]
    if changed:
        assert len(got) < n
