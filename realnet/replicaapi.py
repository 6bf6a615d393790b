"""The admin endpoints of a replicated group (#11): a mixin of :class:`realnet.api.Api`.

Theory of operation
-------------------
One kvcore admin call each (the Raft verbs of :class:`kvcore.node.Node`), guarded like every
``POST /cluster/...`` (:meth:`realnet.adminapi.AdminApi.admin`: method, admin token, JSON
content type and body), with the same error mapping (a :class:`kvcore.errors.StoreError` keeps
its status and code: ``Conflict`` 409, ``BadRequest`` 400, ``NoLeader`` 503 ``no_leader``):

==============================  ================================================================
``/cluster/replicate``          ``{"voters": [ID, ...]}``: this node becomes a member of the one
                                group that owns every slot, with these voters (every voter is
                                asked with the same list; itself among them) -> ``{"id",
                                "voters", "learner", "raft"}``; with ``"learner": true`` this
                                node (not among them) joins a running group as the learner the
                                leader added (``/cluster/learner``). Refused 409 without
                                ``--data-dir`` (Raft needs durable state).
``/cluster/failover``           ``{"to": ID}``: the leader hands leadership to voter ``ID``
                                (thesis §3.10) -> ``{"id", "to", "raft"}``
``/cluster/learner``            ``{"node": ID}``: the leader adds ``ID`` as a learner, which
                                catches up (from a snapshot if need be) before it votes
``/cluster/promote``            ``{"node": ID}``: the leader makes learner ``ID`` a voter
``/cluster/remove-voter``       ``{"node": ID}``: the leader removes ``ID`` (voter or learner) by a
                                configuration change
==============================  ================================================================

Membership changes go one server at a time (thesis §4.1) and must be asked of the leader: a
follower refuses with 409 naming the leader it knows (``storelab cluster`` asks the leader).
``raft`` in each answer is the node's ``info()["raft"]`` after the call (role, term, leader,
commit, applied, voters, learners, ...).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kvcore import errors
from realnet.http import Response, json_response

if TYPE_CHECKING:
    from collections.abc import Callable

    from kvcore.node import Node

#: most voters one group may list (a group of more than 7 voters is slower, not safer)
MAX_VOTERS = 7
#: longest node id accepted in these bodies (the bus's own limit on names)
MAX_ID = 256


class ReplicaAdminApi:
    """The replicated group's admin handlers (see the module docstring)."""

    node: Node

    def replica_routes(self) -> dict[str, Callable[[dict[str, Any]], Response]]:
        return {
            "/cluster/replicate": self.admin_replicate,
            "/cluster/failover": self.admin_failover,
            "/cluster/learner": self.admin_learner,
            "/cluster/promote": self.admin_promote,
            "/cluster/remove-voter": self.admin_remove_voter,
        }

    def _raft_view(self) -> Any:
        return self.node.info().get("raft")

    def admin_replicate(self, body: dict[str, Any]) -> Response:
        voters = body.get("voters")
        if "voters" not in body:
            raise errors.BadRequest("the field 'voters' is required")
        if not isinstance(voters, list) or not voters:
            raise errors.BadRequest(f"the field 'voters' must be a non-empty list of node ids, not {voters!r}")
        ids = [_node_id(v, "each voter") for v in voters]
        if len(set(ids)) != len(ids):
            raise errors.BadRequest("the field 'voters' names a node twice")
        if len(ids) > MAX_VOTERS:
            raise errors.BadRequest(f"a group has at most {MAX_VOTERS} voters, not {len(ids)}")
        learner = bool(body.get("learner", False) is True)
        if "learner" in body and not isinstance(body["learner"], bool):
            raise errors.BadRequest(f"the field 'learner' must be true or false, not {body['learner']!r}")
        if learner and self.node.id in ids:
            raise errors.BadRequest(f"a learner is not among the voters, and this node ({self.node.id}) is")
        if not learner and self.node.id not in ids:
            raise errors.BadRequest(f"the voters must include this node ({self.node.id}), or the "
                                    "body must say \"learner\": true")
        # a joining learner forms an empty group: the leader's log (or snapshot) teaches it the
        # configuration once the leader added it (kvcore's form_group([]))
        self.node.form_group([] if learner else ids)
        return json_response(200, {"id": self.node.id, "voters": ids, "learner": learner,
                                   "raft": self._raft_view()})

    def admin_failover(self, body: dict[str, Any]) -> Response:
        to = _node_id(body.get("to"), "the field 'to'") if "to" in body else None
        if to is None:
            raise errors.BadRequest("the field 'to' is required")
        self.node.transfer_leader(to)
        return json_response(200, {"id": self.node.id, "to": to, "raft": self._raft_view()})

    def _member_change(self, body: dict[str, Any], verb: Callable[[str], Any]) -> Response:
        if "node" not in body:
            raise errors.BadRequest("the field 'node' is required")
        node = _node_id(body["node"], "the field 'node'")
        index = verb(node)
        out: dict[str, Any] = {"id": self.node.id, "node": node, "raft": self._raft_view()}
        if isinstance(index, int) and not isinstance(index, bool):
            out["index"] = index  # the configuration entry's log index
        return json_response(200, out)

    def admin_learner(self, body: dict[str, Any]) -> Response:
        return self._member_change(body, self.node.add_learner)

    def admin_promote(self, body: dict[str, Any]) -> Response:
        return self._member_change(body, self.node.promote)

    def admin_remove_voter(self, body: dict[str, Any]) -> Response:
        return self._member_change(body, self.node.remove_voter)


def _node_id(v: Any, what: str) -> str:
    if not isinstance(v, str) or not v.strip():
        raise errors.BadRequest(f"{what} must be a node id (a non-empty string), not {v!r}")
    if len(v) > MAX_ID or any(c.isspace() for c in v):
        raise errors.BadRequest(f"{what} must be a node id without spaces, at most {MAX_ID} characters")
    return v


__all__ = ["MAX_VOTERS", "ReplicaAdminApi"]
