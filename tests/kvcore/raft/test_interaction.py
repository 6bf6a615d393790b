"""Data-driven interaction scripts for the Raft core, in etcd-io/raft's ``testdata`` spirit.

Each file in ``tests/kvcore/testdata/raft/*.txt`` is a sequence of blocks separated by blank
lines. A block is optional ``#`` comment lines, one command, ``----``, and the expected output::

    # 1 campaigns and wins
    campaign 1
    ----
    INFO 1 is starting a new election at term 0
    ...

Commands (node ids are "1", "2", ...):

    log-level none|info                  show the cores' trace lines (INFO ...) or not
    add-nodes N [voters=1,2,3] [learners=4] [prevote=true|false] [checkquorum=true|false]
              [election=10] [heartbeat=1] [read-only=safe|lease] [max-snapshot-chunk=N]
                                         N new nodes, bootstrapped with that configuration
    campaign ID | propose ID DATA | propose-conf-change ID OP NODE | read-index ID CTX
    transfer-leader FROM TO | compact ID INDEX DATA
    process-ready ID... | deliver-msgs ID... | stabilize
    tick ID N | tick-heartbeat ID | tick-election ID  (ticks until the election timer fires; a leader:
                                           election_tick ticks, its CheckQuorum period)
    cut A B | isolate ID | recover | crash ID (loses unsynced writes) | restart ID
    crash-before-sync ID                 save ID's Ready, then crash before syncing and sending
    raft-log ID | raft-state

Rewrite mode: ``STORELAB_REWRITE=1 pytest tests/kvcore/raft/test_interaction.py`` writes the
actual output back as the expected text; review the diff like code.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kvcore.raft import MemoryRaftStorage, NotLeader, ProposalRefused, Ready
from kvcore.raft.messages import CONF, ConfChange, describe, describe_entry

from .harness import Network

DATA = Path(__file__).parent.parent / "testdata" / "raft"
REWRITE = os.environ.get("STORELAB_REWRITE") == "1"

BOOLS = {"prevote": "pre_vote", "checkquorum": "check_quorum"}
INTS = {"election": "election_tick", "heartbeat": "heartbeat_tick", "max-snapshot-chunk": "max_snapshot_chunk"}


def render_ready(rd: Ready) -> list[str]:
    out = [f"Ready MustSync={str(rd.must_sync).lower()}:"]
    if rd.soft_state is not None:
        out.append(f"Lead:{rd.soft_state.lead or 0} State:{rd.soft_state.role}")
    if rd.hard_state is not None:
        hs = rd.hard_state
        out.append(f"HardState Term:{hs.term}{f' Vote:{hs.vote}' if hs.vote else ''} Commit:{hs.commit}")
    for label, snap in (("Snapshot", rd.snapshot), ("Compacted", rd.compacted)):
        if snap is not None:
            c = snap.meta.conf
            out.append(f"{label} Index:{snap.meta.index} Term:{snap.meta.term} Voters:({','.join(c.voters)}) "
                       f"Learners:({','.join(c.learners)}) Bytes:{len(snap.data)}")
    if rd.entries:
        out += ["Entries:", *(describe_entry(e) for e in rd.entries)]
    if rd.committed_entries:
        out += ["CommittedEntries:", *(describe_entry(e) for e in rd.committed_entries)]
    if rd.messages:
        out += ["Messages:", *(describe(m) for m in rd.messages)]
    if rd.read_states:
        out += ["ReadStates:", *(f"Index:{s.index} ctx:{s.ctx.decode()}" for s in rd.read_states)]
    return out


class Interaction:
    def __init__(self) -> None:
        self.out: list[str] = []
        self.indent = ""
        self.level = "info"
        self.net = Network([], logger=self._log)

    def _log(self, line: str) -> None:
        if self.level != "none":
            self.out.append(f"{self.indent}INFO {line}")

    def emit(self, lines: list[str]) -> None:
        self.out += [self.indent + x for x in lines]

    def run(self, command: str) -> list[str]:
        self.out = []
        words = command.split()
        verb, args = words[0], words[1:]
        try:
            handler = getattr(self, "cmd_" + verb.replace("-", "_"))
        except AttributeError:
            raise ValueError(f"unknown command {verb!r}") from None
        try:
            handler(*args)
        except (NotLeader, ProposalRefused, ValueError) as e:
            self.out.append(f"error: {e}")
        return self.out or ["ok"]

    # --- commands ---------------------------------------------------------------------------

    def cmd_log_level(self, level: str) -> None:
        self.level = level

    def cmd_add_nodes(self, n: str, *opts: str) -> None:
        first = len(self.net.nodes) + 1
        ids = [str(i) for i in range(first, first + int(n))]
        kv = dict(o.split("=", 1) for o in opts)
        voters = kv.pop("voters", ",".join(ids)).split(",")
        learners = [x for x in kv.pop("learners", "").split(",") if x]
        cfg: dict[str, object] = {}
        for k, v in kv.items():
            if k in BOOLS:
                cfg[BOOLS[k]] = v == "true"
            elif k in INTS:
                cfg[INTS[k]] = int(v)
            elif k == "read-only":
                cfg["read_only"] = v
            else:
                raise ValueError(f"unknown add-nodes option {k!r}")
        for i in ids:
            self.net.node_cfg[i] = cfg
            self.net.add_node(i, MemoryRaftStorage(voters, learners))

    def cmd_campaign(self, node: str) -> None:
        self.net.raft(node).campaign()

    def cmd_propose(self, node: str, data: str) -> None:
        self.net.raft(node).propose(data.encode())

    def cmd_propose_conf_change(self, node: str, op: str, target: str) -> None:
        self.net.raft(node).propose_conf_change(op, target)

    def cmd_read_index(self, node: str, ctx: str) -> None:
        self.net.raft(node).read_index(ctx.encode())

    def cmd_transfer_leader(self, frm: str, to: str) -> None:
        self.net.raft(frm).transfer_leader(to)

    def cmd_compact(self, node: str, index: str, data: str) -> None:
        self.net.raft(node).compact(int(index), data.encode())

    def cmd_process_ready(self, *nodes: str) -> None:
        for n in nodes:
            self._process(n, header=len(nodes) > 1)

    def _process(self, node: str, header: bool) -> bool:
        if not self.net.nodes[node].up or not self.net.raft(node).has_ready():
            return False
        if header:
            self.emit([f"> {node} handling Ready"])
        self.indent = "  " if header else ""
        rd = self.net.raft(node).ready()
        self.emit(render_ready(rd))
        self.net.process_ready(node)
        self.indent = ""
        return True

    def cmd_deliver_msgs(self, *nodes: str) -> None:
        for n in nodes:
            self._deliver(n, header=len(nodes) > 1)

    def _deliver(self, node: str, header: bool) -> bool:
        msgs = [m for m in self.net.inflight if m.dst == node]
        if not msgs:
            return False
        self.net.inflight = [m for m in self.net.inflight if m.dst != node]
        if header:
            self.emit([f"> {node} receiving messages"])
        for m in msgs:
            self.indent = "  " if header else ""
            self.emit([describe(m)])
            self.net.deliver(m)
        self.indent = ""
        return True

    def cmd_stabilize(self) -> None:
        for _ in range(1000):
            moved = False
            for n in self.net.nodes:
                moved |= self._process(n, header=True)
            for n in self.net.nodes:
                moved |= self._deliver(n, header=True)
            if not moved:
                return
        raise AssertionError("did not stabilize")

    def cmd_tick(self, node: str, n: str) -> None:
        for _ in range(int(n)):
            self.net.raft(node).tick()

    def cmd_tick_heartbeat(self, node: str) -> None:
        r = self.net.raft(node)
        for _ in range(r.cfg.heartbeat_tick):
            r.tick()

    def cmd_tick_election(self, node: str) -> None:
        r = self.net.raft(node)
        n = r.cfg.election_tick if r.role == "leader" else r.randomized_timeout - r.election_elapsed
        for _ in range(max(n, 1)):
            r.tick()

    def cmd_cut(self, a: str, b: str) -> None:
        self.net.cut(a, b)

    def cmd_isolate(self, node: str) -> None:
        self.net.isolate(node)

    def cmd_recover(self) -> None:
        self.net.recover()

    def cmd_crash(self, node: str) -> None:
        lost = self.net.nodes[node].storage.has_unsynced()
        self.net.crash(node)
        self.out.append(f"{node} crashed{' and lost unsynced writes' if lost else ''}")

    def cmd_crash_before_sync(self, node: str) -> None:
        """Save the node's Ready, then crash before the sync (so nothing of it is sent)."""
        rd = self.net.raft(node).ready()
        self.emit(render_ready(rd))
        self.net.process_ready(node, crash_before_sync=True)
        self.out.append(f"{node} crashed before sync: the writes and messages above are lost")

    def cmd_restart(self, node: str) -> None:
        self.net.restart(node)

    def cmd_raft_log(self, node: str) -> None:
        r = self.net.raft(node)
        snap = r.log.snapshot.meta
        if snap.index:
            self.out.append(f"snapshot {snap.term}/{snap.index}")
        self.out += [describe_entry(e) for e in r.log.entries] or ["log is empty"]

    def cmd_raft_state(self) -> None:
        for i, n in self.net.nodes.items():
            r = n.raft
            conf = r.log.conf()
            kind = "Voter" if i in conf.voters else ("Learner" if i in conf.learners else "NonMember")
            state = r.role if n.up else "down"
            removed = f" Removed:{r.removed_at}" if r.removed() else ""
            self.out.append(f"{i}: {state} ({kind}) Term:{r.term} Lead:{r.lead or 0} "
                            f"Commit:{r.log.committed} Last:{r.log.last_index()}{removed}")


def parse(path: Path) -> list[tuple[list[str], str, list[str]]]:
    blocks = []
    for block in path.read_text().strip().split("\n\n"):
        given, _, expected = block.partition("\n----")
        lines = given.split("\n")
        blocks.append((lines[:-1], lines[-1], [x for x in expected.split("\n") if x]))
    return blocks


FILES = sorted(DATA.glob("*.txt"))


def test_there_are_interaction_scripts() -> None:
    assert len(FILES) >= 6


def test_conf_change_entries_render_readably() -> None:
    from kvcore.raft.messages import Entry

    e = Entry(term=1, index=3, kind=CONF, data=ConfChange(op="add-learner", node="4").encode())
    assert describe_entry(e) == '1/3 EntryConf "add-learner 4"'


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_interaction_script(path: Path) -> None:
    it = Interaction()
    blocks, failures = [], []
    for comments, command, expected in parse(path):
        got = it.run(command)
        blocks.append("\n".join([*comments, command, "----", *got]))
        if got != expected:
            diff = "\n".join(f"  {'=' if a == b else '!'} {a!r}\n    {b!r}" for a, b in
                             zip(expected + [""] * len(got), got + [""] * len(expected), strict=False)
                             if a or b)
            failures.append(f"{path.name}: {command}\n{diff}")
    if REWRITE:
        path.write_text("\n\n".join(blocks) + "\n")
        return
    assert not failures, "\n".join(failures[:3])
