"""Typed errors of the store, and the one error a peer can cause.

Theory of operation
-------------------
Every failure a client can see is a :class:`StoreError` subclass with a stable machine ``code``
(what goes over the wire and into JSON bodies) and the HTTP ``status`` the transport maps it to
(ARCHITECTURE.md, "Errors"). The transport maps errors, never the other way round: kvcore does not know
HTTP, it only carries the status number as data so that every world maps a code the same way.

"Not found" is an answer, not a failure: :class:`NotFound` is the only error that says the
operation certainly succeeded in learning something. Everything else is either "certainly not
applied" (:class:`BadRequest`, :class:`TooLarge`, :class:`SlotUnassigned`, :class:`OwnerDown`,
:class:`WrongNode`, :class:`Removed`, :class:`Conflict`) or "outcome unknown" (:class:`ForwardTimeout`,
:class:`Internal`): :attr:`StoreError.definite` tells which, which is what a history checker needs.

:class:`RemoteProtocolError` is separate and never reaches a client: it means a *peer* sent
something malformed (h11's split between misuse and a misbehaving peer). A node counts, traces and
drops such input; it never crashes on it.
"""

from __future__ import annotations

from typing import ClassVar


class StoreError(Exception):
    """Base of every client-visible error: a stable ``code``, an HTTP ``status``, a sentence."""

    code: ClassVar[str] = "internal"
    status: ClassVar[int] = 500
    #: True when the operation certainly did not take effect (or, for NotFound, certainly ran).
    definite: ClassVar[bool] = True

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.code.replace("_", " "))
        self.message: str = message or self.code.replace("_", " ")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.message == getattr(other, "message", None)

    def __hash__(self) -> int:
        return hash((self.code, self.message))


class NotFound(StoreError):
    """The key is absent. An answer, not a failure."""

    code = "not_found"
    status = 404

    @classmethod
    def of(cls, key: bytes) -> NotFound:
        """The one sentence for an absent key, whichever path found it absent."""
        return cls(f"key {key.decode('utf-8', 'surrogateescape')!r} not found")


class BadRequest(StoreError):
    """The request itself is malformed (empty key, unknown operation, bad arguments)."""

    code = "bad_request"
    status = 400


class TooLarge(StoreError):
    """A key, value or body is over its configured limit."""

    code = "too_large"
    status = 413


class SlotUnassigned(StoreError):
    """No node owns the key's slot."""

    code = "slot_unassigned"
    status = 503


class OwnerDown(StoreError):
    """The slot's owner is known to be unreachable; the request was not sent."""

    code = "owner_down"
    status = 503


class NoQuorum(StoreError):
    """A replicated operation could not reach a quorum (reserved for Raft)."""

    code = "no_quorum"
    status = 503
    definite = False


class NoLeader(StoreError):
    """A replicated group has no leader this node knows of (an election is under way, or this
    node is cut off from a quorum): the request was certainly not applied; retry shortly."""

    code = "no_leader"
    status = 503


class Removed(StoreError):
    """This node was removed from its replicated group (a configuration change committed without
    it, thesis §4.2.3): it no longer serves the group's keys. Ask another node; the request was
    certainly not applied."""

    code = "removed"
    status = 503


class LostState(StoreError):
    """This node is listed in a replicated group (the group's Raft traffic is addressed to it)
    but runs none: its data directory was lost or replaced, and its Raft log with it. It serves
    no key (its own store is not the group's); the operator removes it (``storelab cluster
    remove-node``) and adds it again under a fresh data directory. Ask another node; the request
    was certainly not applied."""

    code = "lost_state"
    status = 503


class WrongNode(StoreError):
    """A forwarded request reached a node that does not own the slot (the maps disagree).

    Redis answers MOVED here; we answer 503 because the forwarder already did its one hop and
    the client should retry once the maps converge. The request was certainly not applied.
    """

    code = "wrong_node"
    status = 503


class ForwardTimeout(StoreError):
    """The owner did not answer a forwarded request in time: it may or may not have applied it."""

    code = "forward_timeout"
    status = 504
    definite = False


class ShuttingDown(StoreError):
    """The node stopped (a leave, a signal) while the request was in flight: it may or may not
    have been applied."""

    code = "shutting_down"
    status = 504
    definite = False


class TryAgain(StoreError):
    """The key is being moved to another node right now (Redis's TRYAGAIN); retry shortly.

    The operation was certainly not applied.
    """

    code = "try_again"
    status = 503


class Conflict(StoreError):
    """An admin operation conflicts with the cluster's state."""

    code = "conflict"
    status = 409


class Internal(StoreError):
    """A bug or an unexpected condition; the transport logs the cause."""

    code = "internal"
    status = 500
    definite = False


ERRORS_BY_CODE: dict[str, type[StoreError]] = {
    cls.code: cls
    for cls in (
        NotFound,
        BadRequest,
        TooLarge,
        SlotUnassigned,
        OwnerDown,
        NoQuorum,
        NoLeader,
        Removed,
        LostState,
        WrongNode,
        ForwardTimeout,
        ShuttingDown,
        TryAgain,
        Conflict,
        Internal,
    )
}


def error_from_code(code: str, message: str = "") -> StoreError:
    """Rebuild a typed error from its wire code; an unknown code becomes :class:`Internal`."""
    cls = ERRORS_BY_CODE.get(code)
    if cls is None:
        return Internal(f"unknown error code {code!r}: {message}")
    return cls(message)


def http_status(code: str) -> int:
    """The HTTP status a transport uses for an error code (500 for an unknown code)."""
    cls = ERRORS_BY_CODE.get(code)
    return cls.status if cls is not None else 500


class RemoteProtocolError(Exception):
    """A peer sent something we cannot accept: malformed, unknown kind, wrong field type.

    Raised by the codec and the framing; the receiving world counts it, logs or traces it, and
    drops the message (realnet also closes the connection). Never shown to a client.
    """
