"""A data directory belongs to one node id (an audit's gap).

``kill c``, then ``python -m realnet.node --id x --data-dir <c's dir>``: the node started as x
with c's Raft log (term, vote, voters a, b, c) and c's keys, joined the cluster as a new member
x, answered 503 no_leader, and, once stopped, stayed dead in every view; two processes could
have shared one Raft identity with different votes. The data directory now records the node id
at its first start and refuses a start under another id (exit 2, a sentence naming both ids and
the directory). A directory from before the record takes the id it is started with (logged
once), unless it names that id as another node's.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest

from kvcore.membership import INCARNATION_KEY, MEMBER_PREFIX
from kvcore.node.node import GROUP_KEY
from realnet import node as realnode
from realnet.kvlog import LogStorage
from realnet.settings import load_settings


def start(data_dir: Path, nid: str) -> int:
    """``serve`` as ``python -m realnet.node --id NID --data-dir DIR`` starts, stopped at once."""
    s = load_settings(realnode.build_parser().parse_args(
        ["--id", nid, "--port", "0", "--peer-port", "0", "--data-dir", str(data_dir)]))
    stop = asyncio.Event()
    stop.set()
    return asyncio.run(realnode.serve(s, None, stop))


def old_dir(path: Path, **entries: bytes) -> Path:
    """A data directory as a storelab before the record left it: an earlier life, no node id."""
    path.mkdir()
    storage = LogStorage(path)
    storage.put(INCARNATION_KEY, b"3")
    for k, v in entries.items():
        storage.put(k.replace("__", ":"), v)
    storage.sync()
    storage.close()
    return path


def recorded(path: Path) -> bytes | None:
    storage = LogStorage(path)
    try:
        return storage.get("node_id")
    finally:
        storage.close()


def test_a_data_directory_refuses_a_start_under_another_id(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "data-c"
    assert start(d, "c") == realnode.EXIT_OK
    assert recorded(d) == b"c"
    capsys.readouterr()
    assert start(d, "x") == realnode.EXIT_CONFIG
    err = capsys.readouterr().err
    assert (f"storelab node: The data directory {str(d)!r} belongs to node 'c', not 'x'" in err
            and "Start it with --id c, or give node 'x' an empty --data-dir." in err), err
    assert recorded(d) == b"c" and start(d, "c") == realnode.EXIT_OK  # nothing changed


def test_an_older_data_directory_takes_the_id_it_is_started_with_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    d = old_dir(tmp_path / "old")
    with caplog.at_level(logging.INFO, logger="realnet.node"):
        assert start(d, "c") == realnode.EXIT_OK
    assert recorded(d) == b"c"
    assert sum("records no node id" in r.getMessage() for r in caplog.records) == 1
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="realnet.node"):
        assert start(d, "c") == realnode.EXIT_OK
    assert not any("records no node id" in r.getMessage() for r in caplog.records)
    assert start(d, "x") == realnode.EXIT_CONFIG


@pytest.mark.parametrize("entries, evidence", [
    ({MEMBER_PREFIX.replace(":", "__") + "x": b"1\nalive\nh:1\nh:2\n0\n"}, "it knew 'x' as another member"),
    ({GROUP_KEY.replace(":", "__"): json.dumps({"voters": ["a", "b", "c"], "learners": []}).encode()},
     "it formed a replicated group whose voters (a, b, c) do not include 'x'"),
], ids=["a member by that id", "a group without it"])
def test_an_older_data_directory_that_names_the_id_as_another_nodes_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], entries: dict[str, bytes], evidence: str) -> None:
    d = old_dir(tmp_path / "old", **entries)
    assert start(d, "x") == realnode.EXIT_CONFIG
    err = capsys.readouterr().err
    assert "records no node id" in err and evidence in err, err
    assert recorded(d) is None
