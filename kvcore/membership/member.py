"""One member as a node's membership holds it, and the listener that hears of its changes.

Theory of operation
-------------------
A :class:`Member` is everything one node knows of another (or of itself): its addresses, its
SWIM state (:class:`~kvcore.states.State`) and incarnation, when the state last changed (for
reaping and gossip to the dead), and its slot claim (ranges and config epoch), which travels
with every Alive so every node derives the same slot map. Only
:class:`~kvcore.membership.Membership` changes a Member; others read it, and hear of each change
through a :data:`Listener` with a :class:`~kvcore.states.MemberEvent`. :func:`encode_member` and
:func:`decode_member` are the text a node keeps of each member in its storage (Redis's
``nodes.conf`` lines), so that a restarted node knows whom to rejoin.

A record marked ``shared`` belongs to no one node: nodes that know a member alike hold the same
record (:mod:`~kvcore.membership.table`), nobody changes it, and a node copies it before it
changes anything (``MemberTable.writable``). A shared record's :class:`MemberState` and stored
text never change either, so each is built once and kept with the record.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kvcore.messages import Alive, MemberState
from kvcore.states import MemberEvent, State

#: the four states as module constants: a global is read faster than an Enum class attribute,
#: and these are compared on every message (State.up, a property, is slower still)
ALIVE, SUSPECT, DEAD, LEFT = State.ALIVE, State.SUSPECT, State.DEAD, State.LEFT
#: the states of a member that is still probed and sent requests (suspicion is not failure)
UP: tuple[State, State] = (ALIVE, SUSPECT)


@dataclass(slots=True)
class Member:
    node: str
    addr: str
    peer_addr: str
    incarnation: int = 0
    state: State = ALIVE
    state_change: float = 0.0
    slots: str = ""
    epoch: int = 0
    #: held alike by several nodes, so never changed (see the module docstring)
    shared: bool = field(default=False, compare=False, repr=False)
    #: a shared record's MemberState and stored text (encode_member), built at their first use
    _state: MemberState | None = field(default=None, compare=False, repr=False)
    _text: bytes | None = field(default=None, compare=False, repr=False)

    def to_state(self) -> MemberState:
        s = self._state
        if s is not None:
            return s
        # str(): the wire carries the state's text, and the codec takes exactly str
        s = MemberState(node=self.node, incarnation=self.incarnation, state=str(self.state),
                        addr=self.addr, peer_addr=self.peer_addr, slots=self.slots, epoch=self.epoch)
        if self.shared:
            self._state = s
        return s

    def stored(self) -> bytes:
        """What a node keeps of this member in its storage: :func:`encode_member`."""
        t = self._text
        if t is None:
            t = encode_member(self)
            if self.shared:
                self._text = t
        return t

    def copy(self) -> Member:
        """This record as a record of one's own (not shared), to change."""
        return Member(self.node, self.addr, self.peer_addr, self.incarnation, self.state,
                      self.state_change, self.slots, self.epoch)

    def to_alive(self) -> Alive:
        return Alive(node=self.node, incarnation=self.incarnation, addr=self.addr,
                     peer_addr=self.peer_addr, slots=self.slots, epoch=self.epoch)

    def view(self) -> dict[str, Any]:
        return {"id": self.node, "addr": self.addr, "peer_addr": self.peer_addr, "state": self.state,
                "incarnation": self.incarnation, "slots": self.slots, "epoch": self.epoch}


def encode_member(m: Member) -> bytes:
    """What a node keeps of another member in its storage, to rejoin after a restart: one line
    per field (addresses never hold a newline; slot ranges and numbers cannot)."""
    return f"{m.incarnation}\n{m.state}\n{m.addr}\n{m.peer_addr}\n{m.epoch}\n{m.slots}".encode()


def decode_member(node: str, raw: bytes) -> Member | None:
    """The member :func:`encode_member` wrote, or None when the text is not one."""
    try:
        inc_s, state_s, addr, peer_addr, epoch_s, slots = raw.decode().split("\n")
        return Member(node, addr, peer_addr, int(inc_s), State(state_s), 0.0, slots, int(epoch_s))
    except (UnicodeDecodeError, ValueError):
        return None


#: listener(event, node_id, member), told of every change; events: join, alive, suspect, dead,
#: left, refute, reap, update (:class:`~kvcore.states.MemberEvent`)
Listener = Callable[[MemberEvent, str, Member], None]

__all__ = ["ALIVE", "DEAD", "LEFT", "SUSPECT", "UP", "Listener", "Member", "decode_member", "encode_member"]
