"""Recording clients: real operations become a history the linearizability checker accepts."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from checker import check, read_history
from kvcore import errors
from realnet.client import Client, NodeUnreachable
from realnet.history import HistoryRecorder, NodeClient, RecordingClient, completion_type
from tests.realnet.conftest import STEADY_SETTINGS, STEADY_SWIM, Launcher


class Scripted:
    """A client whose calls return or raise what the test says, in order."""

    def __init__(self, *answers: object) -> None:
        self.answers = list(answers)

    def _next(self) -> object:
        a = self.answers.pop(0)
        if isinstance(a, BaseException):
            raise a
        return a

    def get(self, key: str | bytes) -> bytes | None:
        return self._next()  # type: ignore[return-value]

    def set(self, key: str | bytes, value: bytes | str) -> None:
        self._next()

    def delete(self, key: str | bytes) -> bool:
        return bool(self._next())


def test_completions_are_ok_fail_or_info_by_what_the_error_says() -> None:
    assert completion_type(errors.OwnerDown()) == "fail"
    assert completion_type(errors.WrongNode()) == "fail"
    assert completion_type(errors.ForwardTimeout()) == "info"
    assert completion_type(errors.Internal()) == "info"
    assert completion_type(NodeUnreachable()) == "info"
    assert completion_type(TimeoutError()) == "info"


def test_recording_is_transparent_and_an_info_retires_the_process(tmp_path: Path) -> None:
    rec = HistoryRecorder()
    c = RecordingClient(
        Scripted(None, b"v1", errors.OwnerDown("n2 is dead"), errors.ForwardTimeout(), False), rec
    )
    assert c.set("x", "v1") is None
    assert c.get("x") == b"v1"
    with pytest.raises(errors.OwnerDown):
        c.get("x")
    first = c.process
    with pytest.raises(errors.ForwardTimeout):
        c.set("x", "v2")
    assert c.process != first, "after an unknown outcome the client takes a fresh process id"
    assert c.delete("x") is False
    evs = rec.events
    assert [(e["process"] == first, e["type"], e["f"]) for e in evs] == [
        (True, "invoke", "put"), (True, "ok", "put"),
        (True, "invoke", "get"), (True, "ok", "get"),
        (True, "invoke", "get"), (True, "fail", "get"),
        (True, "invoke", "put"), (True, "info", "put"),
        (False, "invoke", "delete"), (False, "ok", "delete"),
    ]
    assert evs[3]["value"] == "v1" and evs[5]["error"] == "owner_down"
    assert [e["time"] for e in evs] == sorted(e["time"] for e in evs)
    path = tmp_path / "h.jsonl"
    rec.write_jsonl(path)
    h = read_history(path)
    assert len(h.ops) == 5
    assert check(h.ops, model="kv").verdict == "linearizable"


@pytest.mark.realnet
def test_concurrent_recording_clients_of_a_real_cluster_are_linearizable(
    launcher: Launcher, tmp_path: Path
) -> None:
    cluster = launcher.cluster(("a", "b", "c"), settings=STEADY_SETTINGS, swim=STEADY_SWIM)
    addrs = [n.addr for n in cluster]
    rec = HistoryRecorder()
    keys = ["x", "y", "z"]
    failures: list[BaseException] = []

    def worker(i: int) -> None:
        # smart clients go to the owner; node clients are pinned to one node, which forwards
        inner = Client(addrs, timeout=10.0) if i % 2 == 0 else NodeClient(addrs[i % 3], timeout=10.0)
        c = RecordingClient(inner, rec)
        try:
            for n in range(40):
                key = keys[(i + n) % 3]
                kind = (n * 7 + i) % 10
                if kind < 5:
                    c.get(key)
                elif kind < 9:
                    c.set(key, f"w{i}-{n}")
                else:
                    c.delete(key)
        except BaseException as e:
            failures.append(e)
        finally:
            c.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not failures, failures
    evs = rec.events
    assert len(evs) == 2 * 4 * 40
    assert {e["type"] for e in evs} <= {"invoke", "ok"}, "a healthy cluster answers everything"
    # the reads saw writes (the check is not vacuous)
    assert sum(1 for e in evs if e["type"] == "ok" and e["f"] == "get" and e["value"]) > 10
    result = check(evs, model="kv", timeout=30)
    assert result.verdict == "linearizable", [op.describe() for op in result.witness]
    path = tmp_path / "realnet.jsonl"
    rec.write_jsonl(path)
    assert check(read_history(path).ops, model="kv", timeout=30).verdict == "linearizable"
