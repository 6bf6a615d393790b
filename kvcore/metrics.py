"""Per-node counters: messages and bytes by kind, client operations by outcome.

The node counts messages it sends and receives; the world (which sees the encoded frames) adds
their bytes through :meth:`NodeStats.add_bytes_sent` / :meth:`add_bytes_received`, so message sizes
are measured, not guessed. All dicts are insertion-ordered; readers sort.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class NodeStats:
    sent: dict[str, int] = field(default_factory=dict)
    sent_bytes: dict[str, int] = field(default_factory=dict)
    received: dict[str, int] = field(default_factory=dict)
    received_bytes: dict[str, int] = field(default_factory=dict)
    #: peer input that could not be decoded or made no sense (counted, traced, dropped)
    malformed: int = 0
    #: client operations by "op outcome", e.g. "Get ok", "Put owner_down"
    ops: dict[str, int] = field(default_factory=dict)
    forwards_sent: int = 0
    forwards_received: int = 0
    forward_timeouts: int = 0
    forward_duplicates: int = 0
    late_replies: int = 0

    def count_sent(self, kind: str) -> None:
        self.sent[kind] = self.sent.get(kind, 0) + 1

    def count_received(self, kind: str) -> None:
        self.received[kind] = self.received.get(kind, 0) + 1

    def add_bytes_sent(self, kind: str, n: int) -> None:
        self.sent_bytes[kind] = self.sent_bytes.get(kind, 0) + n

    def add_bytes_received(self, kind: str, n: int) -> None:
        self.received_bytes[kind] = self.received_bytes.get(kind, 0) + n

    def count_op(self, op: str, outcome: str) -> None:
        k = f"{op} {outcome}"
        self.ops[k] = self.ops.get(k, 0) + 1

    def as_dict(self) -> dict[str, object]:
        return {
            "sent": dict(sorted(self.sent.items())),
            "sent_bytes": dict(sorted(self.sent_bytes.items())),
            "received": dict(sorted(self.received.items())),
            "received_bytes": dict(sorted(self.received_bytes.items())),
            "malformed": self.malformed,
            "ops": dict(sorted(self.ops.items())),
            "forwards_sent": self.forwards_sent,
            "forwards_received": self.forwards_received,
            "forward_timeouts": self.forward_timeouts,
            "forward_duplicates": self.forward_duplicates,
            "late_replies": self.late_replies,
        }
