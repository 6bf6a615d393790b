"""kvwire.auth without sockets: the keyring, the handshake, and the MAC on every frame.

Each test pins one way a frame or a handshake must fail (wrong key, replay, reordering,
truncation, splicing from another connection) or one way rotation must work (primary and
accepted keys). Keys are generated per run.
"""

from __future__ import annotations

import base64
import itertools
import secrets
from pathlib import Path

import pytest

import kvwire
from kvcore.messages import Hello, Nack, SwimAck
from kvwire import auth
from kvwire.auth import (
    AuthError,
    ClientHandshake,
    Keyring,
    KeyringError,
    ServerHandshake,
    Session,
    read_keyring,
)
from kvwire.frames import FrameError


def new_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def ring(*keys: str) -> Keyring:
    return Keyring.from_text("\n".join(keys))


def fields_of(frame: bytes) -> dict[str, object]:
    payloads, oversized = auth.split_frames(bytearray(frame))
    assert not oversized and len(payloads) == 1
    got = auth.handshake_fields(payloads[0])
    assert got is not None
    return got


def handshake(
    client_ring: Keyring, server_ring: Keyring, client: str = "a", server: str = "b"
) -> tuple[Session, Session]:
    """Run the three handshake frames in memory; (client session, server session)."""
    c = ClientHandshake(client_ring, client, "lab")
    s = ServerHandshake(server_ring, server, "lab")
    challenge = s.on_hello(fields_of(c.hello()))
    proof, c_session = c.on_challenge(fields_of(challenge))
    s_session = s.on_proof(fields_of(proof))
    return c_session, s_session


def authenticated_decoder(session: Session) -> kvwire.FrameDecoder:
    d = kvwire.FrameDecoder(1024)
    d.authenticate(session.open, auth.TAG_BYTES)
    return d


# --- the keyring ------------------------------------------------------------------------------


def test_a_secret_file_is_text_lines_first_primary_whitespace_and_comments_ignored(
    tmp_path: Path,
) -> None:
    k1, k2 = new_key(), new_key()
    f = tmp_path / "secret"
    f.write_text(f"\n  # the cluster secret\n  {k1}  \n\n{k2}\n{k1}\n")
    r = read_keyring(str(f))
    assert r.primary == k1.encode()
    assert r.keys == (k1.encode(), k2.encode())
    assert r.by_id(auth.key_id(k2.encode())) == k2.encode()


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("", "holds no key"),
        ("   \n\n# only a comment\n", "holds no key"),
        ("short", "at least 16"),
        (b"\xff\xfe not utf-8 at all", "not UTF-8"),
    ],
)
def test_an_unusable_secret_file_is_a_sentence(
    tmp_path: Path, content: str | bytes, words: str
) -> None:
    f = tmp_path / "secret"
    if isinstance(content, bytes):
        f.write_bytes(content)
    else:
        f.write_text(content)
    with pytest.raises(KeyringError, match=words):
        read_keyring(str(f))


def test_a_missing_secret_file_is_a_sentence(tmp_path: Path) -> None:
    with pytest.raises(KeyringError, match="Cannot read the secret file"):
        read_keyring(str(tmp_path / "nope"))


# --- the handshake ----------------------------------------------------------------------------


def test_two_holders_of_one_key_agree_and_frames_flow_in_order() -> None:
    key = new_key()
    c, s = handshake(ring(key), ring(key))
    assert s.peer == "a" and c.peer == "b"
    d = authenticated_decoder(s)
    msgs = [Hello(node_id="a"), *(SwimAck(seq=i, gossip=()) for i in range(5))]
    data = b"".join(c.seal(kvwire.pack(m)) for m in msgs)
    # any chunking of the stream gives the same messages
    got: list[object] = []
    for i in range(0, len(data), 7):
        got += d.feed(data[i : i + 7])
    assert got == msgs


def test_a_client_with_a_wrong_key_is_refused_by_the_server() -> None:
    c = ClientHandshake(ring(new_key()), "evil")
    s = ServerHandshake(ring(new_key()), "b")
    with pytest.raises(AuthError) as e:
        s.on_hello(fields_of(c.hello()))
    assert e.value.reason == "unknown_key"
    assert "cluster secret differs" in str(e.value)


def test_a_server_with_a_wrong_key_is_refused_by_the_client() -> None:
    # a server that claims to hold the client's key id but proves with another key
    key, other = new_key(), new_key()
    c = ClientHandshake(ring(key), "a")
    hello = fields_of(c.hello())
    s = ServerHandshake(Keyring((other.encode(),)), "b")
    s.keyring = Keyring((other.encode(),))
    # the server's ring maps the client's key id to the wrong key: its proof cannot match
    object.__setattr__(s.keyring, "_by_id", {hello["key"]: other.encode()})
    challenge = s.on_hello(hello)
    with pytest.raises(AuthError) as e:
        c.on_challenge(fields_of(challenge))
    assert e.value.reason == "bad_proof"


def test_a_forged_client_proof_is_refused() -> None:
    key = new_key()
    c = ClientHandshake(ring(key), "a")
    s = ServerHandshake(ring(key), "b")
    s.on_hello(fields_of(c.hello()))
    with pytest.raises(AuthError) as e:
        s.on_proof({"auth": "proof", "proof": secrets.token_bytes(32)})
    assert e.value.reason == "bad_proof"


def test_a_proof_from_another_connection_is_refused() -> None:
    # an eavesdropper replays a client's proof on a connection of its own: the server's nonce
    # differs, so the transcript differs
    key = new_key()
    c1 = ClientHandshake(ring(key), "a")
    s1 = ServerHandshake(ring(key), "b")
    hello1 = c1.hello()
    proof1, _ = c1.on_challenge(fields_of(s1.on_hello(fields_of(hello1))))
    s2 = ServerHandshake(ring(key), "b")
    s2.on_hello(fields_of(hello1))  # the same hello, replayed
    with pytest.raises(AuthError, match="wrong handshake proof"):
        s2.on_proof(fields_of(proof1))


def test_a_servers_proof_cannot_serve_as_a_clients() -> None:
    key = new_key()
    c = ClientHandshake(ring(key), "a")
    s = ServerHandshake(ring(key), "b")
    challenge = fields_of(s.on_hello(fields_of(c.hello())))
    with pytest.raises(AuthError):
        s.on_proof({"auth": "proof", "proof": challenge["proof"]})


@pytest.mark.parametrize(
    "bad",
    [
        {"auth": "hello"},
        {"auth": "hello", "v": 2, "node": "a", "cluster": "", "key": b"12345678", "nonce": b"x" * 32},
        {"auth": "hello", "v": 1, "node": 5, "cluster": "", "key": b"12345678", "nonce": b"x" * 32},
        {"auth": "hello", "v": 1, "node": "a", "cluster": "", "key": b"1", "nonce": b"x" * 32},
        {"auth": "hello", "v": 1, "node": "a", "cluster": "", "key": b"12345678", "nonce": b"x"},
        {"auth": "hello", "v": 1, "node": "a" * 300, "cluster": "", "key": b"12345678",
         "nonce": b"x" * 32},
        {"auth": "proof", "proof": b"x" * 32},
    ],
)
def test_a_malformed_hello_is_an_auth_error_never_a_crash(bad: dict[str, object]) -> None:
    s = ServerHandshake(ring(new_key()), "b")
    with pytest.raises(AuthError):
        s.on_hello(bad)


def test_a_refusal_carries_its_sentence() -> None:
    s = ServerHandshake(ring(new_key()), "b")
    with pytest.raises(AuthError, match="go away") as e:
        s.on_hello(fields_of(auth.refusal("go away")))
    assert e.value.reason == "refused_by_peer"


# --- frames after the handshake ---------------------------------------------------------------


def sealed(session: Session, *msgs: object) -> list[bytes]:
    return [session.seal(kvwire.pack(m)) for m in msgs]


def test_a_replayed_frame_is_refused() -> None:
    key = new_key()
    c, s = handshake(ring(key), ring(key))
    f0, f1 = sealed(c, Hello(node_id="a"), Nack(seq=1))
    d = authenticated_decoder(s)
    assert d.feed(f0 + f1) == [Hello(node_id="a"), Nack(seq=1)]
    with pytest.raises(kvwire.FrameError) as e:
        d.feed(f1)
    assert e.value.reason == "auth_failed"


def test_reordered_frames_are_refused() -> None:
    key = new_key()
    c, s = handshake(ring(key), ring(key))
    f0, f1 = sealed(c, Nack(seq=0), Nack(seq=1))
    with pytest.raises(kvwire.FrameError, match="record 0 fails"):
        authenticated_decoder(s).feed(f1 + f0)


def test_a_dropped_frame_makes_the_next_one_fail() -> None:
    key = new_key()
    c, s = handshake(ring(key), ring(key))
    _, f1 = sealed(c, Nack(seq=0), Nack(seq=1))
    with pytest.raises(kvwire.FrameError, match="auth"):
        authenticated_decoder(s).feed(f1)


def test_an_altered_or_truncated_frame_is_refused() -> None:
    key = new_key()
    c, s = handshake(ring(key), ring(key))
    (f,) = sealed(c, SwimAck(seq=7, gossip=()))
    altered = bytearray(f)
    altered[6] ^= 1
    with pytest.raises(kvwire.FrameError, match="auth"):
        authenticated_decoder(s).feed(bytes(altered))
    # a frame cut short and relabelled with its new length: the tag no longer matches
    body = f[4:-3]
    with pytest.raises(kvwire.FrameError, match="auth"):
        authenticated_decoder(s).feed(kvwire.HEADER.pack(len(body)) + body)
    with pytest.raises(kvwire.FrameError, match="shorter than its tag"):
        authenticated_decoder(s).feed(kvwire.HEADER.pack(3) + b"abc")


def test_a_frame_spliced_from_another_connection_is_refused() -> None:
    key = new_key()
    c1, _ = handshake(ring(key), ring(key))
    _, s2 = handshake(ring(key), ring(key))
    (f,) = sealed(c1, Hello(node_id="a"))  # sequence number 0 on both: only the keys differ
    with pytest.raises(kvwire.FrameError, match="auth"):
        authenticated_decoder(s2).feed(f)


def test_a_frame_reflected_back_to_its_sender_is_refused() -> None:
    key = new_key()
    c, _ = handshake(ring(key), ring(key))
    (f,) = sealed(c, Nack(seq=1))
    d = kvwire.FrameDecoder(1024)
    d.authenticate(c.open, auth.TAG_BYTES)  # the client's own receiving direction
    with pytest.raises(kvwire.FrameError, match="auth"):
        d.feed(f)


def test_an_unauthenticated_frame_is_refused_on_an_authenticated_stream() -> None:
    key = new_key()
    _, s = handshake(ring(key), ring(key))
    with pytest.raises(kvwire.FrameError, match="auth"):
        authenticated_decoder(s).feed(kvwire.frame(Hello(node_id="a")))


# --- rotation: primary and accepted keys ------------------------------------------------------


def test_rotation_every_mix_of_old_and_new_keyrings_on_the_way_agrees() -> None:
    old, new = new_key(), new_key()
    steps = [
        ring(old),  # before
        ring(old, new),  # 1: new key accepted everywhere
        ring(new, old),  # 2: new key primary everywhere
        ring(new),  # 3: old key dropped
    ]
    # during each step some nodes have the previous ring and some the next: all must agree
    for before, after in itertools.pairwise(steps):
        for client, server in ((before, after), (after, before), (after, after)):
            c, s = handshake(client, server)
            (f,) = sealed(c, Nack(seq=3))
            assert authenticated_decoder(s).feed(f) == [Nack(seq=3)]
    # skipping step 1 is what breaks: a node with only the new key refuses the old one
    with pytest.raises(AuthError):
        handshake(ring(old), ring(new))
    with pytest.raises(AuthError):
        handshake(ring(new), ring(old))


def test_a_session_remembers_its_key_so_a_dropped_key_can_close_it() -> None:
    old, new = new_key(), new_key()
    c, s = handshake(ring(old, new), ring(new, old))
    assert c.key == s.key == old.encode()
    assert not ring(new).holds(s.key)


def test_the_record_tag_is_keyed_blake2b_of_the_sequence_number_and_frames() -> None:
    # RFC 7693's keyed BLAKE2b, 16 bytes, over seq (8 bytes, big-endian) || the record's frames;
    # a session's sealed record carries exactly that tag under its direction's key
    import hashlib

    for key in (b"k", b"x" * 32, b"y" * 64):
        for seq, frames in ((0, b""), (1, b"abc"), (2**40, b"\x00" * 300)):
            want = hashlib.blake2b(seq.to_bytes(8, "big") + frames, key=key, digest_size=16).digest()
            assert auth.record_tag(key, seq, frames) == want
            assert auth.record_tag(key, seq, bytearray(frames)) == want
    key = new_key()
    c, s = handshake(ring(key), ring(key))
    for seq, payload in enumerate((b"one", b"two", b"")):
        record = c.seal(payload)
        framed = len(payload).to_bytes(4, "big") + payload
        assert record == (len(framed) + auth.TAG_BYTES).to_bytes(4, "big") + framed + auth.record_tag(
            c._send_key, seq, framed)
        assert s.open(memoryview(record)[4:]) == framed


def test_a_record_carries_many_frames_under_one_tag_and_must_hold_whole_frames() -> None:
    key = new_key()
    c, s = handshake(ring(key), ring(key))
    msgs = [Nack(seq=i) for i in range(5)]
    d = authenticated_decoder(s)
    record = c.seal_frames(b"".join(kvwire.frame(m) for m in msgs))
    assert d.feed(record[:7]) == []  # split anywhere, as a stream may
    assert d.feed(record[7:]) == msgs
    assert d.feed(c.seal(kvwire.pack(Nack(seq=9)))) == [Nack(seq=9)]
    # a holder of the key that seals something that is not whole frames is refused
    for broken, words in ((b"", "no frame"), (b"\x00\x00", "length prefix"),
                          (kvwire.frame(Nack(seq=1))[:-1], "ends inside a frame")):
        c2, s2 = handshake(ring(key), ring(key))
        d2 = authenticated_decoder(s2)
        with pytest.raises(FrameError, match=words) as e:
            d2.feed(c2.seal_frames(broken))
        assert e.value.reason == "malformed"


def test_a_record_may_hold_one_largest_frame() -> None:
    # the decoder's limit is a frame's; a record holding one frame at the limit passes, one
    # byte over is refused as oversized (the record's prefix and tag are not held against it)
    key = new_key()
    big = kvwire.frame(Nack(seq=1))
    c3, s3 = handshake(ring(key), ring(key))
    d = kvwire.FrameDecoder(len(big) - 4)
    d.authenticate(s3.open, auth.TAG_BYTES)
    assert d.feed(c3.seal_frames(big)) == [Nack(seq=1)]
    c4, s4 = handshake(ring(key), ring(key))
    d = kvwire.FrameDecoder(len(big) - 5)  # one byte smaller: the inner frame is over the limit
    d.authenticate(s4.open, auth.TAG_BYTES)
    with pytest.raises(FrameError) as e:
        d.feed(c4.seal_frames(big))
    assert e.value.reason == "oversized"
    # (that record is itself over the record limit; the inner check is the one that catches a
    # short record whose frame's length prefix claims more than a frame may hold)
    limit = len(big) - 4
    c5, s5 = handshake(ring(key), ring(key))
    d = kvwire.FrameDecoder(limit)
    d.authenticate(s5.open, auth.TAG_BYTES)
    with pytest.raises(FrameError, match=f"{limit + 1} bytes exceeds the limit of {limit} bytes") as e:
        d.feed(c5.seal_frames(kvwire.HEADER.pack(limit + 1) + b"x"))
    assert e.value.reason == "oversized"


def test_a_handshake_begun_before_its_key_was_removed_is_refused_at_the_proof() -> None:
    """Rotation step 3 removes a key: a handshake that got its challenge before the reload must
    not finish with it (else a leaked key keeps one half-open handshake, renewed within the
    deadline, and outlives every revocation)."""
    old, new = new_key(), new_key()
    c = ClientHandshake(ring(old), "mallory")
    s = ServerHandshake(ring(new, old), "b")
    proof, _ = c.on_challenge(fields_of(s.on_hello(fields_of(c.hello()))))
    s.keyring = ring(new)  # the reload, as the transport hands it to a handshake under way
    with pytest.raises(AuthError) as e:
        s.on_proof(fields_of(proof))
    assert e.value.reason == "unknown_key" and "no longer holds" in str(e.value)


def test_a_refusal_sentence_cannot_forge_a_log_line() -> None:
    """Anyone who can connect may send a refusal; its sentence is logged, so line breaks and
    other controls in it are escaped."""
    forged = "bye\n2026-12-06 09:16:30,000 CRITICAL [r1] realnet.node: FORGED\r\x1b[2J"
    err = auth.refused_error({"auth": "refused", "reason": forged})
    text = str(err)
    assert "\n" not in text and "\r" not in text and "\x1b" not in text
    assert "bye\\n2026-12-06" in text and text.endswith("FORGED\\r\\x1b[2J")
    assert auth.printable("plain, unchanged: é ü") == "plain, unchanged: é ü"
