"""One driver interface over both worlds, so that a scenario body is written once.

Theory of operation
-------------------
A scenario (``tests/conformance/test_*.py``) is a plain function of a :class:`World`. It starts a
standalone node or a static cluster of nodes ``a``, ``b``, ``c`` (the 16384 slots split evenly,
config epoch 1, as :func:`kvcore.slots.even_split` gives them), sends client operations to a
node of its choice, moves a slot live, crashes and restarts nodes, and waits for conditions.
Every client operation comes back as a world-neutral :class:`Outcome`: ``ok`` with the value a
Get read, or the typed error code of :mod:`kvcore.errors` (``not_found``, ``bad_request``,
``too_large``, ``owner_down``, ``forward_timeout``, ``try_again``, ...), so that the assertions
are the same in both arms (turmoil's idea: if both arms pass, the sim predicts what real
processes do).

Two implementations, both through public entry points only:

- :class:`SimWorld` drives a :class:`sim.cluster.SimCluster` (its verbs ``reshard``, ``crash``,
  ``restart``; client operations through ``SimCluster.submit``), advancing the SimPy environment
  until the reply arrives. Waiting advances *simulated* time: a sim arm takes milliseconds of
  wall time however many simulated seconds it spans.
- :class:`RealWorld` runs ``python -m realnet.node`` processes on 127.0.0.1 with the helpers of
  :mod:`tests.realnet.conftest` (ports, readiness, stop by Popen handle), talks HTTP to them,
  moves slots with :meth:`realnet.admin.Admin.move_slots` in a background thread (so writes go on
  meanwhile), and waits by polling against a wall-clock deadline, never by a fixed sleep.

Both worlds get the same node settings and SWIM timings (:data:`STEADY`, :data:`FAILURES`: the
numbers the realnet tests use; the sim builds :class:`kvcore.config.NodeConfig` and
``SwimConfig.local`` from the same tables). A crashed-and-restarted node keeps its data in both:
the sim keeps a crashed node's storage, realnet gives every node of a :data:`FAILURES` cluster a
data directory, and ``durable = true`` writes the store through to it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pytest

from kvcore.config import ClusterConfig, NodeConfig
from kvcore.membership import SwimConfig
from kvcore.messages import Delete, Get, Put, Reply
from kvcore.node import Node
from kvcore.rebalance import Move
from kvcore.slots import MAX_SLOT, even_split, format_ranges, key_slot
from realnet import replicacli
from realnet.admin import Admin, Refused
from realnet.client import error_from_response, kv_path
from sim.cluster import SimCluster, sim_spec
from sim.replicas import leader as sim_leader
from tests.realnet.conftest import (
    FAST_SETTINGS,
    FAST_SWIM,
    START_ATTEMPTS,
    START_DEADLINE,
    STEADY_SETTINGS,
    STEADY_SWIM,
    Cluster,
    Launcher,
    NodeProc,
    free_ports,
    toml_tables,
    toml_value,
    wait_wired,
)

#: the error code for "the node addressed is down" (realnet: connection refused; sim: submit
#: refused). Client-side only, like realnet.client.NodeUnreachable's code.
UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class Profile:
    """Node settings (``[settings]``) and SWIM timings (``[swim]``) for every node of a world."""

    settings: Mapping[str, Any]
    swim: Mapping[str, Any]
    #: realnet gives every node a data directory (a restart must keep its data)
    data_dirs: bool = False


#: A cluster where no node dies: generous forward timeout, suspicion that a stalled process
#: refutes long before it could be declared dead.
STEADY = Profile(STEADY_SETTINGS, STEADY_SWIM)
#: A cluster where nodes die: forwards to a dead owner time out after 1 s, failure detection in
#: about a second, and every node durable so that a restart keeps what it acknowledged.
FAILURES = Profile({**FAST_SETTINGS, "durable": True}, FAST_SWIM, data_dirs=True)


@dataclass(frozen=True)
class Outcome:
    """A client operation's result, the same in both worlds: ``error`` is "" on success, else a
    code of :mod:`kvcore.errors` (``not_found`` included) or :data:`UNREACHABLE`; ``value`` is
    what a successful Get read."""

    error: str = ""
    value: bytes | None = None

    @property
    def ok(self) -> bool:
        return not self.error


class World(Protocol):
    """What a scenario may do; see the module docstring. Node ids are ``a``, ``b``, ... (and
    ``solo`` for a standalone node). ``wait_until`` timeouts are seconds of the world's own clock
    (simulated in the sim, wall clock in realnet)."""

    name: str

    def start_standalone(self, settings: Mapping[str, Any] | None = None) -> str: ...
    def start_cluster(self, n: int, profile: Profile = STEADY) -> list[str]: ...
    def start_group(self, n: int) -> list[str]: ...
    def leader(self) -> str | None: ...
    def set(self, node: str, key: bytes, value: bytes) -> Outcome: ...
    def get(self, node: str, key: bytes) -> Outcome: ...
    def delete(self, node: str, key: bytes) -> Outcome: ...
    def owner_of(self, key: bytes, via: str) -> str | None: ...
    def move_slot(self, slot: int, target: str, batch: int = 10) -> None: ...
    def moved(self, slot: int, target: str) -> bool: ...
    def crash(self, node: str) -> None: ...
    def restart(self, node: str) -> None: ...
    def wait_until(self, predicate: Callable[[], Any], timeout: float, what: str = "") -> Any: ...
    def close(self) -> None: ...


#: the parameters of the ``world`` fixture (tests/conformance/conftest.py), one per world; the
#: realnet arm carries the ``realnet`` mark, like every test that starts real node processes
WORLDS = ["sim", pytest.param("realnet", marks=pytest.mark.realnet)]


def cluster_ids(n: int) -> list[str]:
    return [chr(ord("a") + i) for i in range(n)]


# --- the sim ---------------------------------------------------------------------------------

#: how long (simulated seconds) a sim client waits for a reply; longer than any forward timeout
SIM_CLIENT_TIMEOUT = 30.0
#: step of simulated time between two checks of a wait_until predicate
SIM_POLL = 0.01


def swim_config(table: Mapping[str, Any]) -> SwimConfig:
    """A ``[swim]`` table (``preset`` plus overrides) as a SwimConfig, as realnet reads it."""
    overrides = {k: v for k, v in table.items() if k != "preset"}
    preset = table.get("preset", "lan")
    return getattr(SwimConfig, preset)(**overrides).validate()  # type: ignore[no-any-return]


class SimWorld:
    name = "sim"

    def __init__(self, seed: int = 1) -> None:
        self.seed = seed
        self.c: SimCluster | None = None

    @property
    def cluster(self) -> SimCluster:
        assert self.c is not None, "start the world first"
        return self.c

    def start_standalone(self, settings: Mapping[str, Any] | None = None) -> str:
        config = NodeConfig.from_dict(settings or {})
        swim = swim_config(STEADY.swim)

        def standalone(rt: Any, spec: Any) -> Node:
            # no cluster config and no seeds: the node owns every slot, as `python -m
            # realnet.node` without a config does
            return Node(rt, config, None, swim=swim, addr=spec.addr, peer_addr=spec.peer_addr)

        spec = sim_spec("solo", ((0, MAX_SLOT),))
        self.c = SimCluster(self.seed, 1, config, cluster=ClusterConfig((spec,), 1), swim=swim,
                            node_factory=standalone)
        return "solo"

    def start_cluster(self, n: int, profile: Profile = STEADY) -> list[str]:
        ids = cluster_ids(n)
        split = even_split(ids)
        cfg = ClusterConfig(tuple(sim_spec(nid, tuple(split[nid])) for nid in ids), 1)
        # a crashed sim node keeps its storage (SimCluster's disk), so data_dirs has no analogue
        self.c = SimCluster(self.seed, n, NodeConfig.from_dict(profile.settings), cluster=cfg,
                            swim=swim_config(profile.swim))
        return ids

    def start_group(self, n: int) -> list[str]:
        """``n`` nodes in one Raft group (R = n) that serves every key (kvcore.replica)."""
        ids = cluster_ids(n)
        split = even_split(ids)
        cfg = ClusterConfig(tuple(sim_spec(nid, tuple(split[nid])) for nid in ids), 1)
        self.c = SimCluster(self.seed, n, NodeConfig.from_dict(FAST_SETTINGS), cluster=cfg,
                            swim=swim_config(FAST_SWIM), replicas=n)
        return ids

    def leader(self) -> str | None:
        node = sim_leader(self.cluster)
        return None if node is None else str(node.id)

    def _op(self, node: str, op: Any) -> Outcome:
        env = self.cluster.env
        answered = env.event()

        def reply(r: Reply) -> None:
            answered.succeed(r)

        if not self.cluster.submit(node, op, reply):
            return Outcome(UNREACHABLE)
        if not answered.triggered:  # forwarded: run the world until the reply or a timeout
            env.run(until=env.any_of([answered, env.timeout(SIM_CLIENT_TIMEOUT)]))
            if not answered.triggered:
                return Outcome(UNREACHABLE)
        r: Reply = answered.value
        return Outcome(r.error, r.value)

    def set(self, node: str, key: bytes, value: bytes) -> Outcome:
        return self._op(node, Put(key=key, value=value))

    def get(self, node: str, key: bytes) -> Outcome:
        return self._op(node, Get(key=key))

    def delete(self, node: str, key: bytes) -> Outcome:
        return self._op(node, Delete(key=key))

    def owner_of(self, key: bytes, via: str) -> str | None:
        node = self.cluster.node(via)
        assert node is not None, f"{via} is down"
        return node.slot_map.owner(key_slot(key))  # type: ignore[no-any-return]

    def move_slot(self, slot: int, target: str, batch: int = 10) -> None:
        # a SimPy process of its own: client operations run while it moves keys
        self.cluster.reshard([slot], target, batch=batch)

    def moved(self, slot: int, target: str) -> bool:
        aborted = [f for f in self.cluster.faults if f.verb == "reshard_aborted"]
        assert not aborted, f"the move of slot {slot} failed: {aborted}"
        for node in self.cluster.nodes():
            info = node.info()
            if node.slot_map.owner(slot) != target:
                return False
            if str(slot) in info["migrating"] or str(slot) in info["importing"]:
                return False
        return True

    def crash(self, node: str) -> None:
        self.cluster.crash(node)

    def restart(self, node: str) -> None:
        self.cluster.restart(node)

    def wait_until(self, predicate: Callable[[], Any], timeout: float, what: str = "") -> Any:
        env = self.cluster.env
        deadline = env.now + timeout
        while True:
            got = predicate()
            if got:
                return got
            if env.now >= deadline:
                raise AssertionError(f"sim: timed out after {timeout}s (simulated) waiting for "
                                     f"{what or predicate}: last={got!r}")
            env.run(until=env.now + SIM_POLL)

    def close(self) -> None:
        self.c = None


# --- real processes --------------------------------------------------------------------------


class RealWorld:
    name = "realnet"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.launcher = Launcher(workdir)
        self.nodes: dict[str, NodeProc] = {}
        self._move: _Move | None = None

    def start_standalone(self, settings: Mapping[str, Any] | None = None) -> str:
        # a node with no seeds and no cluster table is standalone; --config carries [settings]
        n = self.launcher.node("solo", settings=settings, swim=STEADY.swim)
        self.nodes = {"solo": n}
        return "solo"

    def start_cluster(self, n: int, profile: Profile = STEADY) -> list[str]:
        ids = cluster_ids(n)
        if profile.data_dirs:
            cluster = self._durable_cluster(ids, profile)
        else:
            cluster = self.launcher.cluster(ids, settings=profile.settings, swim=profile.swim)
        self.nodes = dict(cluster.nodes)
        return ids

    def start_group(self, n: int) -> list[str]:
        """``n`` nodes with data directories made one Raft group, as ``storelab cluster create
        ... --replicas n`` does."""
        ids = cluster_ids(n)
        nodes = [self.launcher.node(nid, settings=FAST_SETTINGS, swim=FAST_SWIM,
                                    extra=["--data-dir", str(self.workdir / f"group-{nid}")]) for nid in ids]
        with Admin(10.0) as a:
            replicacli.create(a, [a.probe(node.addr) for node in nodes])
        self.nodes = {node.id: node for node in nodes}
        return ids

    def leader(self) -> str | None:
        """The live node that says it leads at the highest term."""
        best: tuple[int, str] | None = None
        for nid, node in self.nodes.items():
            if node.proc is None or node.proc.poll() is not None:
                continue
            try:
                r = node.info().get("raft")
            except (OSError, AssertionError):
                continue
            if isinstance(r, dict) and r.get("role") == "leader" and (best is None or r["term"] > best[0]):
                best = (int(r["term"]), nid)
        return None if best is None else best[1]

    def _durable_cluster(self, ids: Sequence[str], profile: Profile) -> Cluster:
        """Launcher.cluster, plus a data directory per node (``--data-dir``, which the shared
        cluster file cannot give each node)."""
        split = even_split(list(ids))
        last = ""
        for attempt in range(START_ATTEMPTS):
            ports = free_ports(2 * len(ids))
            nodes = {nid: NodeProc(nid, ports[2 * i], ports[2 * i + 1],
                                   self.workdir / f"durable-{nid}-{attempt}.log")
                     for i, nid in enumerate(ids)}
            lines = [*toml_tables(settings=profile.settings, swim=profile.swim), "[cluster]", "epoch = 1"]
            for nid, node in nodes.items():
                lines += ["[[cluster.nodes]]", f"id = {toml_value(nid)}", f"addr = {toml_value(node.addr)}",
                          f"peer_addr = {toml_value(node.peer_addr)}",
                          f"slots = {toml_value(format_ranges(split[nid]))}"]
            config = self.workdir / f"durable-cluster-{attempt}.toml"
            config.write_text("\n".join(lines) + "\n")
            for nid, node in nodes.items():
                data = self.workdir / f"data-{nid}-{attempt}"
                node.launch(["--config", str(config), "--id", nid, "--data-dir", str(data),
                             "--log-level", "warning"])
                self.launcher.started.append(node)  # stopped by stop_all at close
            deadline = time.monotonic() + START_DEADLINE
            if all(node.wait_healthy(deadline) for node in nodes.values()):
                cluster = Cluster(nodes, config)
                wait_wired(cluster)
                return cluster
            last = "\n".join(node.log_text() for node in nodes.values())
            for node in nodes.values():  # most likely a lost port race: fresh ports
                node.stop()
        raise RuntimeError(f"durable cluster did not start after {START_ATTEMPTS} attempts:\n{last}")

    def _op(self, node: str, method: str, key: bytes, body: bytes | None = None) -> Outcome:
        try:
            status, _, data = self.nodes[node].request(method, kv_path(key), body, timeout=30.0)
        except OSError:
            return Outcome(UNREACHABLE)
        if 200 <= status < 300:
            return Outcome("", data if method == "GET" else None)
        return Outcome(error_from_response(status, data).code)

    def set(self, node: str, key: bytes, value: bytes) -> Outcome:
        return self._op(node, "PUT", key, value)

    def get(self, node: str, key: bytes) -> Outcome:
        return self._op(node, "GET", key)

    def delete(self, node: str, key: bytes) -> Outcome:
        return self._op(node, "DELETE", key)

    def _owners(self, via: str, slot: int) -> str | None:
        for run in self.nodes[via].get_json("/cluster/slots")["slots"]:
            if run["start"] <= slot <= run["end"]:
                return str(run["node"])
        return None

    def owner_of(self, key: bytes, via: str) -> str | None:
        return self._owners(via, key_slot(key))

    def move_slot(self, slot: int, target: str, batch: int = 10) -> None:
        assert self._move is None or self._move.finished.is_set(), "one move at a time"
        entry = self.nodes[target].addr
        self._move = _Move(entry, slot, target, batch)
        self._move.thread.start()

    def moved(self, slot: int, target: str) -> bool:
        mv = self._move
        assert mv is not None and (mv.slot, mv.target) == (slot, target), "no such move started"
        if not mv.finished.is_set():
            return False
        if mv.error is not None:
            raise AssertionError(f"the move of slot {slot} failed: {mv.error}") from mv.error
        for nid, node in self.nodes.items():
            if node.proc is None or node.proc.poll() is not None:
                continue  # a crashed node has no view
            info = node.info()
            if self._owners(nid, slot) != target:
                return False
            if str(slot) in info["migrating"] or str(slot) in info["importing"]:
                return False
        return True

    def crash(self, node: str) -> None:
        self.nodes[node].kill()  # kill -9

    def restart(self, node: str) -> None:
        self.nodes[node].restart()  # same arguments: same id, ports and data directory

    def wait_until(self, predicate: Callable[[], Any], timeout: float, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            got = predicate()
            if got:
                return got
            if time.monotonic() >= deadline:
                raise AssertionError(f"realnet: timed out after {timeout}s waiting for "
                                     f"{what or predicate}: last={got!r}")
            time.sleep(0.02)

    def close(self) -> None:
        if self._move is not None:
            self._move.finished.wait(timeout=60)
        self.launcher.stop_all()


@dataclass
class _Move:
    """One live slot move run by realnet's admin library in a thread of its own."""

    entry: str
    slot: int
    target: str
    batch: int
    error: BaseException | None = None
    finished: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread = field(init=False)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, name=f"move-{self.slot}", daemon=True)

    def _run(self) -> None:
        try:
            with Admin() as admin:
                for attempt in range(3):
                    # as `storelab cluster reshard` does: wait for a quiet cluster first (a
                    # process stalled on a busy machine may be suspect for a moment), and start
                    # again from a fresh view when a member was not alive when the move began
                    cluster = admin.wait_stable(self.entry, 30.0)
                    source = cluster.assignment()
                    owner = next(nid for nid, ranges in source.items()
                                 if any(lo <= self.slot <= hi for lo, hi in ranges))
                    try:
                        admin.move_slots(cluster, Move(owner, self.target, ((self.slot, self.slot),)),
                                         self.batch)
                        return
                    except Refused:
                        if attempt == 2:
                            raise
        except BaseException as e:  # reported by moved() in the test's thread
            self.error = e
        finally:
            self.finished.set()
