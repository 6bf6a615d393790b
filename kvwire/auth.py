"""The authenticated cluster bus: a keyring, a mutual handshake, and frames sealed under a MAC.

Theory of operation
-------------------
A cluster secret is a file of text lines (:func:`read_keyring`): the first key is the
*primary*, the one this node uses to open connections; every key in the file is *accepted*
(memberlist's keyring). A key is the line's UTF-8 text (surrounding whitespace ignored; the
base64 of 32 random bytes is what the README suggests), used as an HMAC-SHA256 key. Each key has
a public *key id*, the first 8 bytes of SHA-256 over a label and the key, so the side that answers
a handshake knows which key the dialling side chose without trying every key.

A peer connection is used in one direction (:mod:`realnet.transport`): the dialling side, the
*client*, writes messages; the *server* reads them. The handshake runs on it before any message,
in plain length-prefixed frames whose msgpack map holds an ``"auth"`` key (never a kvcore
message, which has ``"k"``)::

    client -> server  {"auth": "hello", "v": 1, "node": A, "cluster": C, "key": kid, "nonce": nA}
    server -> client  {"auth": "challenge", "node": B, "nonce": nB, "proof": MAC(K, "server" T)}
    client -> server  {"auth": "proof", "proof": MAC(K, "client" T)}
    either side       {"auth": "refused", "reason": SENTENCE}        (then it closes)

``K`` is the client's primary key (named by ``kid``; the server refuses a key id it does not
hold), ``T`` the transcript: the protocol name, both nonces (32 random bytes each), both node
ids and the cluster name. Each side proves it holds ``K`` over a transcript that holds the
other side's fresh nonce, so neither proof can be replayed to another connection, and the
labels keep a server's proof from serving as a client's. The client's node id is part of ``T``:
the connection is bound to it, and the kvcore ``Hello`` that follows must name the same id.

After the handshake the stream is made of sealed records: one or more frames followed by a
16-byte tag, keyed BLAKE2b (RFC 7693's MAC mode, 128-bit output; the handshake's proofs are
HMAC-SHA256) over the record's sequence number (8 bytes, counted per direction from 0, never
sent) and its frames, under a key of that direction derived from ``K`` and ``T``
(:class:`Session`). A sender seals what it writes in one turn as one record, so under load a tag
is paid per batch, not per frame. A replayed, reordered, dropped, truncated or altered record, or
one spliced from another connection (other nonces, other keys), fails its tag: the receiver
refuses it
(:class:`~kvwire.frames.FrameError` ``auth_failed``) and closes the connection. Messages are
authenticated, not encrypted: the bus carries keys and values in the clear, as Redis's bus does
without TLS.

Everything here is sans-IO: bytes in, bytes or errors out (:class:`AuthError` with a short
``reason`` for counters and a sentence). Nonces come from :func:`secrets.token_bytes` unless
given (tests).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import struct
from dataclasses import dataclass, field
from typing import Any

import msgpack

from kvwire.frames import HEADER, FrameError

__all__ = [
    "MAX_HANDSHAKE_FRAME",
    "NONCE_BYTES",
    "TAG_BYTES",
    "AuthError",
    "ClientHandshake",
    "Keyring",
    "KeyringError",
    "ServerHandshake",
    "Session",
    "handshake_fields",
    "key_id",
    "read_keyring",
    "refusal",
    "refused_error",
    "split_frames",
]

PROTOCOL = b"storelab-bus/1"
VERSION = 1
NONCE_BYTES = 32
TAG_BYTES = 16
KEY_ID_BYTES = 8
#: shortest key text accepted: a secret shorter than this is a password, not a key
MIN_KEY_CHARS = 16
#: a handshake frame is a few hundred bytes; anything longer is refused before it is buffered
MAX_HANDSHAKE_FRAME = 1024
#: node ids and cluster names in a handshake (kvcore has no limit; the bus needs one)
MAX_NAME = 256

_SEQ = struct.Struct(">Q")
_pack_seq = _SEQ.pack
_pack_len = HEADER.pack
_digest = hmac.digest
_blake2b = hashlib.blake2b
_compare = hmac.compare_digest


class KeyringError(ValueError):
    """A secret file that cannot be used; ``str(err)`` is a sentence for the operator."""


class AuthError(Exception):
    """A handshake that fails: ``reason`` is a short token for counters, ``str(err)`` a sentence."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def key_id(key: bytes) -> bytes:
    """A key's public name: 8 bytes of SHA-256 over a label and the key."""
    return hashlib.sha256(PROTOCOL + b" key id " + key).digest()[:KEY_ID_BYTES]


@dataclass(frozen=True)
class Keyring:
    """The keys of the cluster bus: ``keys[0]`` is the primary (used to dial), every key is
    accepted (used to answer)."""

    keys: tuple[bytes, ...]
    _by_id: dict[bytes, bytes] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.keys:
            raise KeyringError("A keyring needs at least one key.")
        object.__setattr__(self, "_by_id", {key_id(k): k for k in self.keys})

    @property
    def primary(self) -> bytes:
        return self.keys[0]

    def by_id(self, kid: bytes) -> bytes | None:
        return self._by_id.get(kid)

    def holds(self, key: bytes) -> bool:
        return key in self.keys

    @classmethod
    def from_text(cls, text: str, where: str = "the secret") -> Keyring:
        """Keys from text: one per line, the first the primary; blank lines and ``#`` comments
        skipped; surrounding whitespace ignored. Raises :class:`KeyringError` with a sentence."""
        keys: list[bytes] = []
        for n, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if len(line) < MIN_KEY_CHARS:
                raise KeyringError(
                    f"Key on line {n} of {where} has {len(line)} characters; a key needs at least "
                    f"{MIN_KEY_CHARS} (make one with: head -c 32 /dev/urandom | base64)."
                )
            key = line.encode()
            if key not in keys:
                keys.append(key)
        if not keys:
            raise KeyringError(
                f"{where} holds no key: write one line of text, such as the base64 of 32 random "
                "bytes (head -c 32 /dev/urandom | base64)."
            )
        return cls(tuple(keys))


def read_keyring(path: str) -> Keyring:
    """The keyring in the secret file at ``path``; raises :class:`KeyringError` with a sentence."""
    try:
        with open(path, "rb") as f:
            data = f.read(64 * 1024 + 1)
    except OSError as e:
        raise KeyringError(f"Cannot read the secret file {path!r}: {e.strerror or e}.") from None
    if len(data) > 64 * 1024:
        raise KeyringError(f"The secret file {path!r} is over 64 KiB: it is not a keyring.")
    try:
        # utf-8-sig: a byte order mark some editors write first is no part of the first key
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise KeyringError(
            f"The secret file {path!r} is not UTF-8 text (write the base64 of the key bytes)."
        ) from None
    return Keyring.from_text(text, f"the secret file {path!r}")


# --- handshake frames -------------------------------------------------------------------------

_packer = msgpack.Packer(use_bin_type=True)


def _frame(obj: dict[str, Any]) -> bytes:
    payload: bytes = _packer.pack(obj)
    return HEADER.pack(len(payload)) + payload


def refusal(sentence: str) -> bytes:
    """The frame that tells the other side why it is refused (it is then closed)."""
    return _frame({"auth": "refused", "reason": sentence[:400]})


def handshake_fields(payload: bytes | bytearray | memoryview) -> dict[str, Any] | None:
    """The map of a handshake frame, or None if ``payload`` is not one (a kvcore message, or
    not msgpack at all: the caller decides what that means)."""
    try:
        obj = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError):
        return None
    if type(obj) is not dict or type(obj.get("auth")) is not str:
        return None
    return obj


def _field(obj: dict[str, Any], name: str, tp: type, size: int | None = None) -> Any:
    got = obj.get(name)
    if type(got) is not tp:
        raise AuthError("bad_handshake", f"handshake field {name!r} is missing or not a {tp.__name__}")
    v: Any = got  # a str or bytes: ``tp`` is one of them
    if size is not None and len(v) != size:
        raise AuthError("bad_handshake", f"handshake field {name!r} is {len(v)} bytes, not {size}")
    if tp is str and (len(v) > MAX_NAME):
        raise AuthError("bad_handshake", f"handshake field {name!r} is over {MAX_NAME} characters")
    return v


def refused_error(obj: dict[str, Any]) -> AuthError:
    """The error for a refusal frame's map: the other side's sentence, shortened, its control
    characters escaped (it is logged, and anyone who can open a connection can send one: a line
    break in it must not forge a line of our log)."""
    reason = obj.get("reason")
    text = reason if type(reason) is str else "no reason given"
    return AuthError("refused_by_peer", f"the peer refused the connection: {printable(text[:400])}")


def printable(text: str) -> str:
    """``text`` with every non-printable character (line breaks, escapes, controls) written as
    its escape, as ``repr`` writes it, and nothing else changed."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _expect(obj: dict[str, Any], step: str) -> None:
    got = obj["auth"]
    if got == "refused":
        raise refused_error(obj)
    if got != step:
        raise AuthError("bad_handshake", f"expected the handshake's {step!r}, got {got[:40]!r}")


def _transcript(n_client: bytes, n_server: bytes, client: str, server: str, cluster: str) -> bytes:
    packed: bytes = _packer.pack([n_client, n_server, client, server, cluster])
    return PROTOCOL + packed


def _proof(key: bytes, label: bytes, transcript: bytes) -> bytes:
    return _digest(key, label + transcript, "sha256")


class ClientHandshake:
    """The dialling side: :meth:`hello`, then :meth:`on_challenge` gives the proof frame and the
    session, or raises :class:`AuthError`."""

    def __init__(
        self, keyring: Keyring, node_id: str, cluster: str = "", nonce: bytes | None = None
    ) -> None:
        self.key = keyring.primary
        self.node_id = node_id
        self.cluster = cluster
        self.nonce = nonce if nonce is not None else secrets.token_bytes(NONCE_BYTES)

    def hello(self) -> bytes:
        return _frame({
            "auth": "hello", "v": VERSION, "node": self.node_id, "cluster": self.cluster,
            "key": key_id(self.key), "nonce": self.nonce,
        })

    def on_challenge(self, obj: dict[str, Any]) -> tuple[bytes, Session]:
        """The server's challenge -> (our proof frame, the session); raises AuthError."""
        _expect(obj, "challenge")
        server = _field(obj, "node", str)
        n_server = _field(obj, "nonce", bytes, NONCE_BYTES)
        proof = _field(obj, "proof", bytes, 32)
        t = _transcript(self.nonce, n_server, self.node_id, server, self.cluster)
        if not _compare(proof, _proof(self.key, b"server", t)):
            raise AuthError(
                "bad_proof",
                f"node {server[:80]!r} does not prove it holds our primary key: "
                "its cluster secret differs from ours",
            )
        session = Session(self.key, t, client=True)
        session.peer = server
        return _frame({"auth": "proof", "proof": _proof(self.key, b"client", t)}), session


class ServerHandshake:
    """The answering side: :meth:`on_hello` gives the challenge frame, :meth:`on_proof` the
    session; either raises :class:`AuthError`."""

    def __init__(
        self, keyring: Keyring, node_id: str, cluster: str = "", nonce: bytes | None = None
    ) -> None:
        self.keyring = keyring
        self.node_id = node_id
        self.cluster = cluster
        self.nonce = nonce if nonce is not None else secrets.token_bytes(NONCE_BYTES)
        self.peer = ""
        #: the hello was answered with a challenge: the next frame must be the proof
        self.answered = False
        self._key = b""
        self._t = b""

    def on_hello(self, obj: dict[str, Any]) -> bytes:
        _expect(obj, "hello")
        if obj.get("v") != VERSION:
            raise AuthError("bad_handshake", f"unknown bus protocol version {obj.get('v')!r}")
        client = _field(obj, "node", str)
        cluster = _field(obj, "cluster", str)
        kid = _field(obj, "key", bytes, KEY_ID_BYTES)
        n_client = _field(obj, "nonce", bytes, NONCE_BYTES)
        self.peer = client
        key = self.keyring.by_id(kid)
        if key is None:
            raise AuthError(
                "unknown_key",
                f"node {client[:80]!r} dials with a key this node does not hold: "
                "its cluster secret differs from ours",
            )
        self._key = key
        self._t = _transcript(n_client, self.nonce, client, self.node_id, cluster)
        self.answered = True
        return _frame({
            "auth": "challenge", "v": VERSION, "node": self.node_id, "nonce": self.nonce,
            "proof": _proof(key, b"server", self._t),
        })

    def on_proof(self, obj: dict[str, Any]) -> Session:
        _expect(obj, "proof")
        proof = _field(obj, "proof", bytes, 32)
        if not self._key or not _compare(proof, _proof(self._key, b"client", self._t)):
            raise AuthError("bad_proof", f"node {self.peer[:80]!r} sent a wrong handshake proof")
        if not self.keyring.holds(self._key):
            # the keyring was replaced (SIGHUP) between the challenge and the proof, without this
            # key: a handshake begun before a key's removal must not outlive it
            raise AuthError(
                "unknown_key",
                f"node {self.peer[:80]!r} proved a key this node no longer holds (it was removed "
                "from the cluster secret during the handshake)",
            )
        session = Session(self._key, self._t, client=False)
        session.peer = self.peer
        return session


def record_tag(key: bytes, seq: int, frames: bytes | bytearray | memoryview) -> bytes:
    """The tag of record ``seq`` under a direction's ``key``: keyed BLAKE2b (RFC 7693, BLAKE2's
    own MAC mode) of the sequence number as 8 bytes and the record's frames, :data:`TAG_BYTES`
    long. (:class:`Session` writes it out inline; this is its reference for tests.)"""
    return _blake2b(_pack_seq(seq) + bytes(frames), key=key, digest_size=TAG_BYTES).digest()


class Session:
    """The per-connection MAC state after a handshake: :meth:`seal_frames` our records,
    :meth:`open` the other side's. A record is one or more frames under one tag; sequence
    numbers count records per direction and are never sent.

    The tag is :func:`record_tag` (keyed BLAKE2b), written out inline in both methods: they run
    once per record on the bus, and a call less is a measurable share of their cost. BLAKE2b in
    its keyed mode is a MAC by design (RFC 7693 §2.9 keys it in the first block, so no HMAC
    nesting is needed) and costs about half of HMAC-SHA256 per record here."""

    __slots__ = ("_recv_key", "_recv_seq", "_send_key", "_send_seq", "key", "peer")

    def __init__(self, key: bytes, transcript: bytes, client: bool) -> None:
        #: the long-term key the session was derived from (closed when it leaves the keyring)
        self.key = key
        self.peer = ""
        c2s = _digest(key, b"session client->server" + transcript, "sha256")
        s2c = _digest(key, b"session server->client" + transcript, "sha256")
        self._send_key, self._recv_key = (c2s, s2c) if client else (s2c, c2s)
        self._send_seq = 0
        self._recv_seq = 0

    def seal(self, payload: bytes) -> bytes:
        """A record holding the one frame of ``payload`` (see :meth:`seal_frames`)."""
        return self.seal_frames(_pack_len(len(payload)) + payload)

    def seal_frames(self, frames: bytes) -> bytes:
        """The wire record for ``frames`` (one or more length-prefixed frames, as
        :func:`kvwire.frame` makes them): length prefix, the frames, one tag over them. A sender
        seals what it writes in one turn as one record, so the tag's cost is shared by every
        frame in it."""
        seq = self._send_seq
        self._send_seq = seq + 1
        tag = _blake2b(_pack_seq(seq) + frames, key=self._send_key, digest_size=TAG_BYTES).digest()
        return _pack_len(len(frames) + TAG_BYTES) + frames + tag

    def open(self, body: bytes | bytearray | memoryview) -> bytes | bytearray | memoryview:
        """The frames of a received record's body (frames + tag); raises FrameError
        ``auth_failed`` when the tag is not the one expected at this point of the stream."""
        n = len(body) - TAG_BYTES
        if n < 0:
            raise FrameError("auth_failed", f"record of {len(body)} bytes is shorter than its tag")
        payload = body[:n]
        seq = self._recv_seq
        tag = _blake2b(_pack_seq(seq) + payload, key=self._recv_key, digest_size=TAG_BYTES).digest()
        if not _compare(body[n:], tag):
            raise FrameError(
                "auth_failed",
                f"record {seq} fails its authentication tag (forged, replayed, reordered or "
                "altered)",
            )
        self._recv_seq = seq + 1
        return payload


def split_frames(
    buf: bytearray, limit: int = MAX_HANDSHAKE_FRAME, count: int = 1 << 30
) -> tuple[list[bytes], bool]:
    """Take whole frames (at most ``count``) off the front of ``buf`` (in place): (payloads,
    oversized?). A length over ``limit`` stops at once with ``True`` (the caller refuses the
    connection)."""
    out: list[bytes] = []
    while len(buf) >= 4 and len(out) < count:
        (length,) = HEADER.unpack_from(buf, 0)
        if length > limit:
            return out, True
        if len(buf) < 4 + length:
            break
        out.append(bytes(buf[4 : 4 + length]))
        del buf[: 4 + length]
    return out, False
