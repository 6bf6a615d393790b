"""A node killed at any point of joining a replicated group restarts into something sound.

The audit's gap: joining wrote the Raft log file at once but the node's record of its group
(``replica:group`` in ``storage.log``) only at the end of the loop turn (group commit), so a
``kill -9`` in between left a log without the record, and the node refused to start for good
(the rule that keeps a node whose ``storage.log`` was lost from serving outside its group).
A new group's log is now staged (``raft-0.log.new``) and renamed to its own name once the
record is durable (``realnet.raftlog``, "Joining"; ``realnet.raftopen``).

Here a node is built exactly as ``realnet.node`` builds it at start, asked to join (a learner,
``form_group([])``, what ``add-node`` asks; and a founder, ``form_group([id])``, what ``create``
asks), and then its loop turn ends as the loop ends it (the storage's flush, whose callbacks
install the log). Every durable step of that (each ``fsync`` and each ``rename``: the raft
directory, the staged file, a founder's formation snapshot and its log batch, the record's
flush, the install) is in turn the point of a crash: the step does not happen, what was not
synced is lost (the storages' ``crash_for_test``), and the node is started again by ``serve``.
Each time it starts (never refused), and its data directory is either a member's (the record
and the log under its own name) or that of a node that never joined (neither, and no staged
file left), which then joins when asked again (``add-node`` run again). The refusals the
staging must not weaken (a log with no record, a record with no log) are tested beside the
rules themselves (``test_serve.py``, ``test_raftlog.py``).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from kvcore.node.node import GROUP_KEY
from realnet import node as realnode
from realnet.kvlog import LogStorage
from realnet.raftlog import STAGED_SUFFIX, FileRaftStorage, RaftLogMissing, discard_staged
from realnet.raftopen import GROUP, RAFT_DIR, RaftOpener
from realnet.settings import load_settings

NODE = "j"


class Crash(BaseException):
    """The process dies here (a BaseException: nothing on the way catches it)."""


@contextmanager
def crash_at(step: int | None) -> Iterator[list[str]]:
    """Count the durable steps (``os.fsync``, ``os.replace``) made inside; with ``step``, the
    one of that number (from 0) does not happen: the process dies instead."""
    done: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def step_(what: str) -> None:
        if step is not None and len(done) == step:
            raise Crash(what)
        done.append(what)

    def fsync(fd: int) -> None:
        step_(f"fsync {os.readlink(f'/proc/self/fd/{fd}') if os.path.exists('/proc/self/fd') else fd}")
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        step_(f"rename {os.path.basename(src)} -> {os.path.basename(dst)}")
        real_replace(src, dst)

    os.fsync, os.replace = fsync, replace  # type: ignore[assignment]
    try:
        yield done
    finally:
        os.fsync, os.replace = real_fsync, real_replace  # type: ignore[assignment]


def _settings(data_dir: Path) -> realnode.Settings:
    return load_settings(realnode.build_parser().parse_args(
        ["--id", NODE, "--port", "0", "--peer-port", "0", "--data-dir", str(data_dir)]))


def join(data_dir: Path, voters: list[str], crash: int | None) -> tuple[list[str], bool]:
    """Build the node as ``realnet.node`` does, ask it to join, end the loop turn, and crash at
    durable step ``crash`` (None: no crash; the process is then killed after the turn). The
    steps made, and whether the join ran to its end."""

    async def body() -> tuple[list[str], bool]:
        s = _settings(data_dir)
        storage = LogStorage(data_dir)
        sockets = realnode.bind(s)
        assert sockets is not None
        parts = realnode.build(s, storage, sockets)
        assert parts.raft_opener is not None and parts.node.replica is None
        finished = False
        with crash_at(crash) as steps:
            try:
                parts.node.form_group(voters)  # the admin request (/cluster/replicate)
                storage.flush()  # the end of the loop turn: the record's flush, then the install
                finished = True
            except Crash:
                pass
        # kill -9: what was not synced is lost, nothing more is written
        storage.crash_for_test()
        for disk in parts.raft_opener.opened:
            disk.log.crash_for_test()
        sockets.http.close()
        sockets.peer.close()
        return steps, finished

    return asyncio.run(body())


def restart(data_dir: Path) -> int:
    """``serve`` on the data directory (as ``python -m realnet.node`` starts), stopped as soon as
    it runs: its exit status (2: refused)."""
    stop = asyncio.Event()
    stop.set()
    return asyncio.run(realnode.serve(_settings(data_dir), None, stop))


def state_of(data_dir: Path) -> str:
    """"member" (the record and the log), or "never joined" (neither, nothing staged left);
    anything else fails the test."""
    storage = LogStorage(data_dir)
    record = storage.get(GROUP_KEY)
    storage.close()
    raft_dir = data_dir / RAFT_DIR
    files = sorted(p.name for p in raft_dir.iterdir()) if raft_dir.is_dir() else []
    assert not [f for f in files if f.endswith(STAGED_SUFFIX) or f.endswith(".tmp")], files
    log_path = raft_dir / f"raft-{GROUP}.log"
    if record is None:
        assert files == [], files
        return "never joined"
    assert log_path.is_file(), files
    assert json.loads(record)["learners"] == []
    return "member"


@pytest.mark.parametrize("voters", [[], [NODE]], ids=["learner (add-node)", "founder (create)"])
def test_a_crash_at_every_step_of_joining_restarts_into_a_member_or_a_node_that_never_joined(
        tmp_path: Path, voters: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    steps, finished = join(tmp_path / "probe", voters, None)
    assert finished
    # the durable steps, in order: the staged log's file before the record, the install last
    renames = [s for s in steps if s.startswith("rename")]
    assert renames[-1] == f"rename raft-{GROUP}.log{STAGED_SUFFIX} -> raft-{GROUP}.log", steps
    assert f"rename raft-{GROUP}.log{STAGED_SUFFIX}.tmp -> raft-{GROUP}.log{STAGED_SUFFIX}" in renames, steps
    assert any(s.endswith("storage.log") for s in steps), steps  # the record's flush
    seen = set()
    for crash in [*range(len(steps)), None]:
        d = tmp_path / f"crash-{crash}"
        join(d, voters, crash)
        status = restart(d)
        err = capsys.readouterr().err
        assert status == realnode.EXIT_OK, (crash, steps[crash] if crash is not None else "after", err)
        outcome = state_of(d)
        seen.add(outcome)
        if outcome == "member":
            log = FileRaftStorage(str(d / RAFT_DIR), voters, create=False)
            stored = log.load()
            log.close()
            if voters:  # a founder's formation snapshot (index 1) is part of its log
                assert stored.snapshot.meta.index == 1 and stored.snapshot.meta.conf.voters == (NODE,)
            else:  # a learner waits, empty, for the leader to teach it the configuration
                assert stored.snapshot.meta.index == 0 and not stored.entries
        else:
            # a node that never joined: asked again (add-node run again), it joins
            assert join(d, voters, None)[1]
            assert restart(d) == realnode.EXIT_OK
            assert state_of(d) == "member", crash
    assert seen == {"member", "never joined"}


def test_a_staged_log_holds_the_groups_answers_until_it_is_installed(tmp_path: Path) -> None:
    """Nothing the staged log vouches for leaves the node before the log has its own name: its
    ``on_durable`` callbacks wait for the install (a crash before it drops the staged log)."""
    record_durable: list[Callable[[], None]] = []
    opener = RaftOpener(tmp_path, lambda: 0.0, record_durable=record_durable.append)
    disk = opener([NODE], [])
    log_path = tmp_path / RAFT_DIR / f"raft-{GROUP}.log"
    assert disk.log.staged and not log_path.exists()
    assert (tmp_path / RAFT_DIR / f"raft-{GROUP}.log{STAGED_SUFFIX}").is_file()
    ran: list[int] = []
    disk.sync()
    disk.on_durable(lambda: ran.append(1))
    assert ran == [] and len(record_durable) == 1
    record_durable[0]()  # the record is durable
    assert ran == [1] and log_path.is_file() and not disk.log.staged
    disk.on_durable(lambda: ran.append(2))  # installed: at once, as before
    assert ran == [1, 2]
    opener.close()
    # a group the node remembers is opened at its own name: never staged
    opener.must_exist = True
    assert not opener([NODE], []).log.staged
    opener.close()
    # without record_durable (a tool, a test) the log is made under its own name at once
    other = tmp_path / "other"
    assert not RaftOpener(other, lambda: 0.0)([NODE], []).log.staged
    assert (other / RAFT_DIR / f"raft-{GROUP}.log").is_file()


def test_a_staged_log_is_installed_by_a_node_that_remembers_its_group_and_discarded_by_one_that_does_not(
        tmp_path: Path) -> None:
    d = tmp_path / RAFT_DIR
    s = FileRaftStorage(str(d), [NODE], staged=True)
    assert s.staged and s.path.endswith(STAGED_SUFFIX)
    s.close()
    (d / f"raft-{GROUP}.snap-{1:020d}").write_bytes(b"x")  # a founder's formation snapshot file
    (d / f"raft-{GROUP}.log{STAGED_SUFFIX}.tmp").write_bytes(b"x")
    assert sorted(Path(p).name for p in discard_staged(str(d))) == [
        f"raft-{GROUP}.log{STAGED_SUFFIX}", f"raft-{GROUP}.log{STAGED_SUFFIX}.tmp", f"raft-{GROUP}.snap-{1:020d}"]
    assert list(d.iterdir()) == []
    with pytest.raises(RaftLogMissing):  # neither file: a deleted log, refused as before
        FileRaftStorage(str(d), [NODE], create=False)
    FileRaftStorage(str(d), [NODE], staged=True).close()
    s = FileRaftStorage(str(d), [NODE], create=False)  # the record is durable: finish the rename
    assert not s.staged and (d / f"raft-{GROUP}.log").is_file()
    assert not (d / f"raft-{GROUP}.log{STAGED_SUFFIX}").exists()
    s.close()
    assert discard_staged(str(d)) == []  # a group with its log keeps everything
