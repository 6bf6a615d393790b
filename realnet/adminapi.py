"""The admin endpoints of a node's HTTP API: a mixin of :class:`realnet.api.Api`.

Theory of operation
-------------------
:class:`AdminApi` holds the ``POST /cluster/...`` handlers and the parsing of their JSON bodies;
:class:`realnet.api.Api` inherits it and keeps the routes, the key/value hot path, the views and
the metrics. :meth:`AdminApi.admin` checks the method, the content type and the body, then runs
the handler ``Api._admin`` maps the path to. The handlers use what ``Api`` sets up: ``node``,
``loop``, ``on_leave``, ``drains_on_leave``, ``_moving``, ``count_status`` and ``_not_allowed``.

What ``storelab cluster`` (:mod:`realnet.admin`) drives, one kvcore admin call each (the admin
door of :class:`kvcore.node.Node`); Redis Cluster's ``CLUSTER MEET``, ``ADDSLOTS``,
``SETSLOT IMPORTING/MIGRATING/NODE``, ``MIGRATE`` as HTTP. All are ``POST`` with a JSON object
body (``Content-Type: application/json``) and answer a JSON object:

=============================  ================================================================
``/cluster/meet``              ``{"seeds": ["HOST:PEERPORT", ...]}``: join a cluster (empty
                               node only; it gives up the slots it owns) -> ``{"id", "seeds"}``
``/cluster/assign``            ``{"slots": "0-5460", "epoch": 2}``: replace this node's claim
                               (epoch above every epoch it knows; it also forgets the claims it
                               learned, so: a fresh node, before meeting) -> ``{"id", "slots",
                               "epoch"}``
``/cluster/claim``             ``{"slots": "5461-10922", "epoch": 3}``: add slots to this node's
                               claim (epoch above theirs), keeping the rest of its map; what a
                               node that met a cluster uses -> ``{"id", "slots", "epoch"}``. On a
                               node in a replicated group the one slot-map verb not refused: it
                               takes only the routing hint, never a key (the group serves every
                               slot), so it needs no ``accept_loss``
``/cluster/import``            ``{"slot": S, "source": ID}`` or ``{"slots": [...]|"RANGES", ...}``:
                               mark slots importing -> ``{"id", "slots", "source"}``
``/cluster/migrate``           ``{"slot"|"slots", "target": ID}``: mark slots migrating
``/cluster/move-keys``         ``{"slot": S, "count": N}`` -> ``{"slot", "moved", "error"}``
                               once the batch is acknowledged (or failed); with ``"slots"``, one
                               batch per slot at once -> ``{"moved", "failed", "results":
                               [{"slot", "moved", "error"}, ...]}``. ``moved`` 0 with no error:
                               the slot has no key left here, and the target acknowledged the end
                               batch that tells it so. A batch holds at most ``count`` keys, and
                               fewer when they would not fit in half a peer frame.
``/cluster/finish``            ``{"slots": [...]|"RANGES"}``: claim imported slots at a new
                               config epoch -> ``{"id", "slots", "epoch"}``; 409 for a slot whose
                               source has not told this node (by the end batch of ``move-keys``)
                               that it holds no key of it any more, or that is not imported and
                               another member owns, unless ``"accept_loss": true``
``/cluster/abort``             ``{"slot"|"slots"}``: roll back open marks -> ``{"id", "slots"}``
``/cluster/rollback``          ``{"slot"|"slots"}``: as abort, for a migration whose target is
                               gone (left or forgotten; 409 otherwise): a batch it never
                               acknowledged is abandoned -> ``{"id", "slots"}``
``/cluster/leave``             ``{}`` or ``{"force": true}``: leave gracefully; 202
                               ``{"id", "status": "leaving", "drain"}``, then the process stops
                               as on SIGTERM (exit status 0)
``/cluster/forget``            ``{"node": ID}``: hold the dead member ID left on its behalf (a
                               forced leave, serf's ``force-leave``, Redis's ``CLUSTER FORGET``),
                               gossiped on -> ``{"id", "node", "state": "left", "changed"}``;
                               409 for a member not dead, one the replicated group's
                               configuration counts, and (unless ``"accept_loss": true``) one
                               that owns slots or is the other end of a migration here
``/cluster/clear-lost-state``  ``{"from": ID}``: take back the lost-state mark (503
                               ``lost_state``) that ID's Raft traffic set, once the operator saw
                               that ID runs no group (a stray or forged frame) ->
                               ``{"id", "from", "cleared"}``; 409 when the mark names another
                               node. Never for a member a group counts: it would serve its
                               empty store
``/cluster/check-token``       ``{}``: nothing; it reads no field and changes nothing. It passes
                               the one door every admin ``POST`` passes (:meth:`AdminApi.admin`),
                               so 200 ``{"id", "ok": true, "token_required"}`` says this node
                               takes the admin token it was sent (``token_required`` false: it
                               needs none) and 401 ``unauthorized`` that it refuses it: what
                               ``storelab cluster`` asks every node it will change before it
                               changes any (:meth:`realnet.admin.Admin.token_problems`), since a
                               401 midway would leave the job half done
=============================  ================================================================

A body that is not a JSON object, a missing field or one of the wrong type is 400
``bad_request`` with a sentence; kvcore's refusals keep their status (``Conflict``: 409
``conflict``, e.g. importing a slot this node owns, meeting with keys, an epoch not above the
node's). The guards are the node's own (the admin door of :class:`kvcore.node.Node`), so the
sim refuses the same things with the same sentences; all 409, so that two orchestrators (an
operator and the automatic rebalancer, say) collide loudly instead of corrupting a move: a slot
already importing from another source or migrating to another target is refused, as is an
import from a member the node does not know, a migration to a node it does not hold alive or
suspect (its batches could never arrive) or to itself, and a claim at an epoch not above the
slots' current one. A list of slots is checked as a whole before any is marked. The API adds
two guards of its own: a ``move-keys`` for a slot whose previous ``move-keys`` is still waiting,
and ``leave`` while this node owns slots and has live peers (its keys would be lost; ``"force":
true`` overrides; a node that drains its slots before leaving, ``auto_rebalance``, may always
leave).

**Loss needs consent.** A request that would drop or orphan keys (a claim of a live member's
slots, a ``finish`` of slots whose keys did not all move here, an ``assign`` giving up slots with
keys, an ``abort`` after keys moved, a forced ``leave`` with keys) is refused 409 unless its body says ``"accept_loss": true``; the guards are the
node's (:mod:`kvcore.node.guards`). Integers are range-checked: slots 0-16383, epochs
0-2^63-1, ``count`` 1-``MAX_BATCH_KEYS`` (400 with a sentence).

**Protection.** With an admin token (``--admin-token-file``, :mod:`realnet.security`), every
admin ``POST`` needs ``Authorization: Bearer TOKEN``, checked before the body is read (401
``unauthorized``). The ``application/json`` content type is enforced too (otherwise 415
``unsupported_media_type``): a web page cannot send it, nor an ``Authorization`` header,
cross-origin without a CORS preflight that this server never grants, and the Host check
(:class:`realnet.security.HostCheck`, in :class:`realnet.api.Api`) turns away pages that reach a
local node under their own name (DNS rebinding). The peer port has its own lock, the cluster
secret: without it, whoever reaches the peer port can rewrite the slot map by gossip.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kvcore import errors
from kvcore.config import parse_addr
from kvcore.slots import (
    MAX_SLOT,
    SlotRangeError,
    format_ranges,
    parse_ranges,
    ranges_to_slots,
    slots_to_ranges,
)
from realnet.http import Request, Response, error_response, json_response
from realnet.security import TokenCheck, unauthorized
from realnet.sentences import capitalized

if TYPE_CHECKING:
    from kvcore.node import Node

log = logging.getLogger("realnet.api")


def _sentence(text: str) -> str:
    """kvcore messages are lower-case clauses; the API answers with sentences (a node id at the
    start is left as it is: :func:`realnet.sentences.capitalized`)."""
    text = text.strip()
    if not text:
        return text
    text = capitalized(text)
    return text if text.endswith((".", "!", "?")) else text + "."


class AdminApi:
    """The admin handlers of :class:`realnet.api.Api` (see the module docstring)."""

    node: Node
    loop: asyncio.AbstractEventLoop
    on_leave: Callable[[], None] | None
    drains_on_leave: bool
    _moving: set[int]
    _admin: dict[str, Callable[[dict[str, Any]], Response | asyncio.Future[Response]]]
    admin_check: TokenCheck | None

    if TYPE_CHECKING:
        def count_status(self, status: int) -> None: ...

        @staticmethod
        def _not_allowed(method: str, path: str, allow: str) -> Response: ...

    def admin(self, req: Request, path: str) -> Response | asyncio.Future[Response]:
        """Parse and check an admin request, run its handler, map errors onto the JSON form."""
        if req.method != "POST":
            return self._not_allowed(req.method, path, "POST")
        admin_check = self.admin_check
        if admin_check is not None and not admin_check.ok(req.headers):
            return unauthorized("admin")
        ctype = req.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if ctype != "application/json":
            return error_response(
                415, "unsupported_media_type",
                f"Admin requests must be sent as Content-Type: application/json, not {ctype or 'none'!r}.",
            )
        try:
            body = json.loads(req.body) if req.body.strip() else {}
        except (ValueError, UnicodeDecodeError) as e:
            return error_response(400, "bad_request", f"The request body is not valid JSON: {e}.")
        if not isinstance(body, dict):
            return error_response(
                400, "bad_request", f"The request body must be a JSON object, not {type(body).__name__}."
            )
        try:
            return self._admin[path](body)
        except errors.StoreError as e:
            return error_response(e.status, e.code, _sentence(e.message))
        except SlotRangeError as e:
            return error_response(400, "bad_request", _sentence(str(e)))

    def admin_meet(self, body: dict[str, Any]) -> Response:
        seeds = _field(body, "seeds", list)
        if not seeds:
            raise errors.BadRequest("seeds must list at least one peer address (HOST:PORT)")
        for s in seeds:
            if not isinstance(s, str):
                raise errors.BadRequest(f"each seed must be a HOST:PORT string, not {s!r}")
            try:
                parse_addr(s)
            except ValueError as e:
                raise errors.BadRequest(f"seed {s!r}: {e}") from None
        self.node.meet(["@" + s for s in seeds])
        log.info("meeting a cluster through %s", ", ".join(seeds))
        return json_response(200, {"id": self.node.id, "seeds": seeds})

    def admin_assign(self, body: dict[str, Any]) -> Response:
        slots = _slot_list(body, "slots")
        epoch = _int(body, "epoch", 1)  # the upper bound: the node's (guards.check_epoch)
        ranges = format_ranges(slots_to_ranges(slots))
        self.node.assign_slots(ranges, epoch, _accept_loss(body))
        log.info("assigned slots %s at epoch %d", ranges, epoch)
        return json_response(200, {"id": self.node.id, "slots": ranges, "epoch": epoch})

    def admin_claim(self, body: dict[str, Any]) -> Response:
        """Add slots to this node's claim at ``epoch``, keeping what it learned of the others."""
        node = self.node
        slots = _slot_list(body, "slots")
        epoch = _int(body, "epoch", 1)  # the upper bound: the node's (guards.check_epoch)
        ranges = _fmt_slots(slots)
        node.claim_slots(ranges, epoch, _accept_loss(body))  # refuses an epoch not above the slots' current epoch
        log.info("claimed slots %s at epoch %d", ranges, epoch)
        return json_response(200, {"id": node.id, "slots": format_ranges(node.slot_map.ranges_of(node.id)),
                                   "epoch": epoch})

    def admin_import(self, body: dict[str, Any]) -> Response:
        node = self.node
        slots = _slots_of(body)
        source = _field(body, "source", str)
        node.begin_import(slots, source)  # the node's guards: see Node's admin door
        return json_response(200, {"id": node.id, "slots": _fmt_slots(slots), "source": source})

    def admin_migrate(self, body: dict[str, Any]) -> Response:
        node = self.node
        slots = _slots_of(body)
        target = _field(body, "target", str)
        node.begin_migrate(slots, target)  # the node's guards: see Node's admin door
        return json_response(200, {"id": node.id, "slots": _fmt_slots(slots), "target": target})

    def admin_move_keys(self, body: dict[str, Any]) -> Response | asyncio.Future[Response]:
        """One ``migrate_keys`` per slot, all at once; answered when every one is done."""
        node = self.node
        single = "slot" in body
        slots = _slots_of(body)
        count = _int(body, "count", 1, MAX_BATCH_KEYS)
        busy = [s for s in slots if s in self._moving]
        if busy:
            raise errors.Conflict(
                f"keys of slot {busy[0]} are already being moved by another request to node {node.id}"
            )
        results: dict[int, tuple[int, str]] = {}
        fut: asyncio.Future[Response] | None = None

        def answer() -> Response:
            if single:
                moved, error = results[slots[0]]
                return json_response(200, {"slot": slots[0], "moved": moved, "error": _sentence(error)})
            rows = [{"slot": s, "moved": results[s][0], "error": _sentence(results[s][1])} for s in slots]
            return json_response(200, {
                "moved": sum(r[0] for r in results.values()),
                "failed": sum(1 for r in results.values() if r[1]),
                "results": rows,
            })

        def done(slot: int, moved: int, error: str) -> None:
            if slot in results:
                return
            self._moving.discard(slot)
            results[slot] = (moved, error)
            if fut is not None and len(results) == len(slots) and not fut.done():
                resp = answer()
                self.count_status(resp.status)
                fut.set_result(resp)

        self._moving.update(slots)
        for slot in slots:
            node.migrate_keys(slot, count, functools.partial(done, slot))
        if len(results) == len(slots):
            return answer()  # every slot answered at once (not migrating)
        fut = self.loop.create_future()
        return fut

    def admin_finish(self, body: dict[str, Any]) -> Response:
        slots = _slot_list(body, "slots")
        # the node's guard: a slot whose keys did not all move here needs accept_loss
        epoch = self.node.finish_import(slots, accept_loss=_accept_loss(body))
        log.info("claimed %d imported slots at epoch %d", len(slots), epoch)
        return json_response(200, {"id": self.node.id, "slots": _fmt_slots(slots), "epoch": epoch})

    def admin_abort(self, body: dict[str, Any]) -> Response:
        slots = _slots_of(body)
        accept_loss = _accept_loss(body)
        for slot in slots:
            self.node.abort_migration(slot, accept_loss=accept_loss)
        return json_response(200, {"id": self.node.id, "slots": _fmt_slots(slots)})

    def admin_rollback(self, body: dict[str, Any]) -> Response:
        """Roll back migrations whose target is gone for good (``fix``): like ``abort``, but a
        batch the lost target never acknowledged is abandoned rather than refused (its copies can
        never be served). Refused (409) for a target this node does not hold left or forgotten."""
        slots = _slots_of(body)
        self.node.rollback_migration(slots)  # the guard lives in the node: the sim refuses alike
        return json_response(200, {"id": self.node.id, "slots": _fmt_slots(slots)})

    def admin_forget(self, body: dict[str, Any]) -> Response:
        member = _field(body, "node", str)
        changed = self.node.forget_member(member, _accept_loss(body))
        if changed:
            log.info("holding the dead member %s left, as asked through the API (a forced leave)", member)
        return json_response(200, {"id": self.node.id, "node": member, "state": "left", "changed": changed})

    def admin_clear_lost_state(self, body: dict[str, Any]) -> Response:
        sender = _field(body, "from", str)
        cleared = self.node.clear_lost_state(sender)  # the guard lives in the node
        if cleared:
            log.warning("the lost-state mark %s's Raft traffic set is taken back, as asked through the API "
                        "(%s runs no group): serving keys again", sender, sender)
        return json_response(200, {"id": self.node.id, "from": sender, "cleared": cleared})

    def admin_check_token(self, body: dict[str, Any]) -> Response:
        """Nothing to do: :meth:`admin` let the request through, so this node takes the admin
        token it was sent (or needs none). No field is read; nothing changes (module docstring)."""
        return json_response(200, {"id": self.node.id, "ok": True, "token_required": self.admin_check is not None})

    def admin_leave(self, body: dict[str, Any]) -> Response:
        node = self.node
        force = _field(body, "force", bool, default=False)
        if self.on_leave is None:
            raise errors.Conflict(f"node {node.id} cannot be stopped through its API")
        owned = node.slot_map.slot_counts().get(node.id, 0)
        # the node's guard: owning slots needs force; holding keys too needs accept_loss
        node.check_leave(force, _accept_loss(body), self.drains_on_leave)
        log.info("leaving the cluster as asked through the API")
        self.loop.call_soon(self.on_leave)
        return json_response(202, {"id": node.id, "status": "leaving",
                                   "drain": bool(owned and self.drains_on_leave)})


#: most keys one ``move-keys`` batch may carry (a batch is one peer frame)
MAX_BATCH_KEYS = 10_000
_TYPE_NAMES = {int: "an integer", str: "a string", list: "a list", bool: "true or false"}
_MISSING = object()


def _field(body: dict[str, Any], name: str, kind: type, default: Any = _MISSING) -> Any:
    """``body[name]``, checked to be of ``kind`` (bool is not an int); BadRequest otherwise."""
    if name not in body:
        if default is not _MISSING:
            return default
        raise errors.BadRequest(f"the field {name!r} is required")
    v = body[name]
    if not isinstance(v, kind) or (kind is int and isinstance(v, bool)):
        raise errors.BadRequest(f"the field {name!r} must be {_TYPE_NAMES[kind]}, not {v!r}")
    if kind is str and not v:
        raise errors.BadRequest(f"the field {name!r} must not be empty")
    return v


def _accept_loss(body: dict[str, Any]) -> bool:
    """``"accept_loss": true``: the request accepts losing keys (kvcore.node.guards)."""
    return bool(_field(body, "accept_loss", bool, default=False))


def _int(body: dict[str, Any], name: str, lo: int, hi: int | None = None) -> int:
    v: int = _field(body, name, int)
    if v < lo or (hi is not None and v > hi):
        bound = f"at least {lo}" if hi is None else f"{lo}-{hi}"
        raise errors.BadRequest(f"the field {name!r} must be {bound}, not {v}")
    return v


def _slot(v: Any, name: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise errors.BadRequest(f"{name} must hold slot numbers, not {v!r}")
    if not 0 <= v <= MAX_SLOT:
        raise errors.BadRequest(f"slot {v} is outside 0-{MAX_SLOT}")
    return v


def _slot_list(body: dict[str, Any], name: str) -> list[int]:
    """A list of slot numbers, or a range string such as ``"0-99,200"``; sorted, no repeats."""
    if name not in body:
        raise errors.BadRequest(f"the field {name!r} is required")
    v = body[name]
    if isinstance(v, str):
        slots = list(ranges_to_slots(parse_ranges(v)))
    elif isinstance(v, list):
        slots = [_slot(x, f"the field {name!r}") for x in v]
    else:
        raise errors.BadRequest(f"the field {name!r} must be a list of slots or a range string, not {v!r}")
    if not slots:
        raise errors.BadRequest(f"the field {name!r} names no slot")
    return sorted(set(slots))


def _slots_of(body: dict[str, Any]) -> list[int]:
    """``"slot": S`` or ``"slots": [...]`` (or a range string)."""
    if "slot" in body:
        if "slots" in body:
            raise errors.BadRequest("give 'slot' or 'slots', not both")
        return [_slot(body["slot"], "the field 'slot'")]
    if "slots" not in body:
        raise errors.BadRequest("the field 'slot' (or 'slots') is required")
    return _slot_list(body, "slots")


def _fmt_slots(slots: list[int]) -> str:
    return format_ranges(slots_to_ranges(slots))


__all__ = ["MAX_BATCH_KEYS", "AdminApi"]
