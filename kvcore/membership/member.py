"""One member as a node's membership holds it, and the listener that hears of its changes.

Theory of operation
-------------------
A :class:`Member` is everything one node knows of another (or of itself): its addresses, its
SWIM state (:class:`~kvcore.states.State`) and incarnation, when the state last changed (for
reaping and gossip to the dead), and its slot claim (ranges and config epoch), which travels
with every Alive so every node derives the same slot map. Only
:class:`~kvcore.membership.Membership` changes a Member; others read it, and hear of each change
through a :data:`Listener` with a :class:`~kvcore.states.MemberEvent`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
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

    def to_state(self) -> MemberState:
        # str(): the wire carries the state's text, and the codec takes exactly str
        return MemberState(node=self.node, incarnation=self.incarnation, state=str(self.state),
                           addr=self.addr, peer_addr=self.peer_addr, slots=self.slots, epoch=self.epoch)

    def to_alive(self) -> Alive:
        return Alive(node=self.node, incarnation=self.incarnation, addr=self.addr,
                     peer_addr=self.peer_addr, slots=self.slots, epoch=self.epoch)

    def view(self) -> dict[str, Any]:
        return {"id": self.node, "addr": self.addr, "peer_addr": self.peer_addr, "state": self.state,
                "incarnation": self.incarnation, "slots": self.slots, "epoch": self.epoch}


#: listener(event, node_id, member), told of every change; events: join, alive, suspect, dead,
#: left, refute, reap, update (:class:`~kvcore.states.MemberEvent`)
Listener = Callable[[MemberEvent, str, Member], None]

__all__ = ["ALIVE", "DEAD", "LEFT", "SUSPECT", "UP", "Listener", "Member"]
