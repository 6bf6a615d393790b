"""Messages: one frozen dataclass per kind, holding only plain data.

Theory of operation
-------------------
Everything that crosses a boundary between nodes (or between a client and a node, once it is
inside kvcore) is one of these classes. They hold only ``str``, ``int``, ``float``, ``bytes``,
``bool``, ``None``, tuples of those, and nested messages, so that :mod:`kvcore.codec` can turn any
of them into a plain dict and back without guessing, and both worlds carry the same bytes.

Each class is declared with :func:`message`, which makes it a frozen, slotted, keyword-only
dataclass and registers it under its class name (the wire "kind"). Renaming a class is a wire
change. Client operations (:class:`Get`, :class:`Put`, :class:`Delete`) are messages too because
a forwarded request carries one inside :class:`Forward`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar, dataclass_transform

T = TypeVar("T")

#: kind name -> class, filled by :func:`message`.
REGISTRY: dict[str, type[Any]] = {}


# dataclass_transform tells type checkers that decorated classes are keyword-only frozen
# dataclasses (without it mypy rejects every ``Get(key=...)``).
@dataclass_transform(kw_only_default=True, frozen_default=True)
def message(cls: type[T]) -> type[T]:
    """Class decorator: frozen, slotted, keyword-only dataclass registered by its name."""
    name = cls.__name__
    if name in REGISTRY:
        raise TypeError(f"message kind {name!r} is declared twice")
    dc = dataclasses.dataclass(frozen=True, slots=True, kw_only=True)(cls)
    dc.__init__ = _fast_init(dc)  # type: ignore[method-assign]
    dc._make = staticmethod(_fast_make(dc))  # type: ignore[attr-defined]
    REGISTRY[name] = dc
    return dc


def _fast_make(cls: type[Any]) -> Any:
    """``_make(v1, v2, ...)``: an instance from its field values in declaration order, with no
    keyword parsing (the codec's decoder, which has checked every value, builds messages so)."""
    fields = dataclasses.fields(cls)
    ns: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    names = [f.name for f in fields]
    for n in names:
        ns[f"_set_{n}"] = cls.__dict__[n].__set__
    body = "".join(f"    _set_{n}(self, {n})\n" for n in names)
    src = f"def _make({', '.join(names)}):\n    self = _new(_cls)\n{body}    return self\n"
    exec(src, ns)  # generated from the dataclass's own field names, nothing else
    return ns["_make"]


def _fast_init(cls: type[Any]) -> Any:
    """An ``__init__`` that fills the slots through their descriptors.

    A frozen dataclass's generated ``__init__`` goes through ``object.__setattr__`` once per
    field; calling each slot's own ``__set__`` does the same work in about half the time, which
    matters because every message sent or received in both worlds is built once. Same
    signature: keyword-only, same defaults; the instance stays frozen afterwards.
    """
    fields = dataclasses.fields(cls)
    ns: dict[str, Any] = {}
    params: list[str] = []
    body: list[str] = []
    for f in fields:
        if f.default_factory is not dataclasses.MISSING:
            raise TypeError(f"message field {cls.__name__}.{f.name} may not use a default_factory")
        ns[f"_set_{f.name}"] = cls.__dict__[f.name].__set__
        if f.default is dataclasses.MISSING:
            params.append(f.name)
        else:
            ns[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
        body.append(f"    _set_{f.name}(self, {f.name})")
    star = "*, " if params else ""
    src = f"def __init__(self, {star}{', '.join(params)}):\n" + ("\n".join(body) or "    pass") + "\n"
    exec(src, ns)  # generated from the dataclass's own field names, nothing else
    init = ns["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    return init


# --- client operations ---------------------------------------------------------------------


@message
class Get:
    """Read one key."""

    key: bytes


@message
class Put:
    """Set one key to a value (upsert)."""

    key: bytes
    value: bytes


@message
class Delete:
    """Remove one key; answered NotFound when it was absent."""

    key: bytes


ClientOp = Get | Put | Delete


@message
class Reply:
    """The outcome of a client operation.

    ``error`` is "" on success, else a code from :mod:`kvcore.errors` (``not_found`` included)
    with ``message`` its sentence. ``value`` is the value read by a successful Get.
    """

    value: bytes | None = None
    error: str = ""
    message: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


# --- node to node ---------------------------------------------------------------------------


@message
class Forward:
    """A client operation sent once to the slot's owner. The receiver never forwards it again."""

    request_id: int
    op: Get | Put | Delete


@message
class Asking:
    """A client operation sent by the owner of a migrating slot to the slot's importing node,
    because the key is not (or no longer) on the owner (Redis's ASK). The receiver serves it
    if it is importing the slot and never sends it further. Answered with ForwardReply."""

    request_id: int
    op: Get | Put | Delete


@message
class MigrateKeys:
    """A batch of one slot's keys moved from the slot's owner to the node importing it."""

    batch: int
    slot: int
    keys: tuple[bytes, ...]
    values: tuple[bytes, ...]


@message
class MigrateAck:
    """The importing node stored a MigrateKeys batch (``error`` empty) or refused it."""

    batch: int
    stored: int
    error: str


@message
class ForwardReply:
    """The owner's answer to :class:`Forward`, matched by ``request_id``."""

    request_id: int
    reply: Reply


# --- transport ------------------------------------------------------------------------------


@message
class Hello:
    """First frame on a realnet peer connection: who is speaking. Never reaches a node."""

    node_id: str
    cluster: str = ""


Message = Any  # any registered message instance


def kind_of(msg: object) -> str:
    """The wire kind of a message instance (its class name)."""
    return type(msg).__name__


# --- membership (SWIM + Lifeguard, kvcore/membership/) ----------------------------------------


@message
class Alive:
    """``node`` is alive at ``incarnation``, reachable at these addresses, owning these slots.

    ``slots`` is a range string (``"0-5460,6000"``) claimed at config ``epoch``.
    """

    node: str
    incarnation: int
    addr: str
    peer_addr: str
    slots: str
    epoch: int


@message
class Suspect:
    """``source`` suspects ``node`` at ``incarnation`` (SWIM §4.2)."""

    node: str
    incarnation: int
    source: str


@message
class Dead:
    """``source`` declares ``node`` dead at ``incarnation``; ``source == node`` means it left."""

    node: str
    incarnation: int
    source: str


@message
class SwimPing:
    """A probe. ``target`` names the node meant, so a different process at the same address
    does not answer for it. Membership updates ride along (SWIM §4.1, piggybacking)."""

    seq: int
    target: str
    gossip: tuple[Alive | Suspect | Dead, ...]


@message
class SwimAck:
    """Answer to a SwimPing, or an indirect ack relayed by the node asked in a PingReq."""

    seq: int
    gossip: tuple[Alive | Suspect | Dead, ...]


@message
class PingReq:
    """Ask the receiver to probe ``target`` and relay the ack (SWIM §3.1, indirect probe)."""

    seq: int
    target: str


@message
class Nack:
    """Lifeguard: the node asked in a PingReq got no ack from the target in time."""

    seq: int


@message
class Gossip:
    """A gossip round's packet: membership updates only."""

    updates: tuple[Alive | Suspect | Dead, ...]


@message
class MemberState:
    """One member as seen by the sender, in a push-pull exchange."""

    node: str
    incarnation: int
    state: str
    addr: str
    peer_addr: str
    slots: str
    epoch: int


@message
class PushPull:
    """Full-state exchange (anti-entropy). ``join`` marks a joining node's first contact;
    ``reply`` marks the answer, which is not answered again."""

    join: bool
    reply: bool
    members: tuple[MemberState, ...]


# --- Raft (kvcore/raft/, issue #11) -------------------------------------------------------------


def register_foreign(kinds: dict[str, type[Any]]) -> None:
    """Register message classes declared elsewhere (a component's own module) under their names.

    The codec knows one REGISTRY in both worlds, so a component's peer messages are registered
    here, at import, whether or not a node runs that component: a node without it counts such a
    message as malformed through its dispatch table, like any kind no table names. Each class
    gets the positional maker the codec's decoder uses (its own ``__init__`` is kept)."""
    for name, cls in kinds.items():
        if name in REGISTRY and REGISTRY[name] is not cls:
            raise TypeError(f"message kind {name!r} is declared twice")
        if not hasattr(cls, "_make"):
            cls._make = staticmethod(_fast_make(cls))
        REGISTRY[name] = cls


# Raft's peer messages, entries and states travel on the same bus (wire kinds = class names).
# Imported here, not at the top: kvcore.raft imports nothing of this module, and placing the
# registration after every node message keeps REGISTRY's order (and each kind's bytes) as before.
from kvcore.raft.messages import RAFT_MESSAGES  # noqa: E402

register_foreign(RAFT_MESSAGES)
