"""Reading and writing histories: JSON lines, Jepsen etcd logs, Porcupine kv logs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from checker import (
    HistoryFormatError,
    Op,
    check,
    detect_format,
    events_to_ops,
    ops_to_events,
    read_history,
    write_jsonl,
)
from checker.history import INITIAL_VALUE_PROCESS


def write_lines(tmp_path: Path, name: str, lines: list[str]) -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def jsonl(*events: dict[str, object]) -> list[str]:
    return [json.dumps(e) for e in events]


def test_jsonl_pairs_events_into_operations(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path,
        "h.jsonl",
        jsonl(
            {"process": 0, "type": "invoke", "f": "put", "key": "x", "value": "1", "time": 1.0},
            {"process": 1, "type": "invoke", "f": "get", "key": "x", "value": None, "time": 1.5},
            {"process": 0, "type": "ok", "f": "put", "key": "x", "value": "1", "time": 2.0},
            {"process": 1, "type": "ok", "f": "get", "key": "x", "value": "1", "time": 2.5},
            {"process": 2, "type": "invoke", "f": "delete", "key": "x", "value": None, "time": 3},
            {"process": 2, "type": "info", "f": "delete", "key": "x", "value": None, "time": 4},
            {"process": 2, "type": "invoke", "f": "put", "key": "y", "value": "2", "time": 5},
            {"process": 2, "type": "fail", "f": "put", "key": "y", "value": "2", "time": 6},
            {"process": 3, "type": "invoke", "f": "append", "key": "y", "value": "z", "time": 7},
        ),
    )
    history = read_history(path)
    assert history.format == "jsonl"
    assert history.model is None
    put, get, delete, failed_put, append = history.ops
    assert put == Op(0, "put", "x", "1", None, 1.0, 2.0, "ok", 1)
    assert get == Op(1, "get", "x", None, "1", 1.5, 2.5, "ok", 2)
    assert delete.status == "unknown" and delete.ret is None  # info
    assert failed_put.status == "fail" and failed_put.ret == 6.0
    assert append.status == "unknown" and append.line == 9  # never completed
    assert check(history.ops, "kv").verdict == "linearizable"


def test_jsonl_without_times_uses_line_numbers(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path,
        "h.jsonl",
        [
            '{"process": 0, "type": "invoke", "f": "write", "value": 1}',
            "",
            '{"process": 0, "type": "ok", "f": "write", "value": 1}',
            '{"process": 0, "type": "invoke", "f": "cas", "value": [1, 2]}',
            '{"process": 0, "type": "fail", "f": "cas", "value": [1, 2]}',
        ],
    )
    write, cas = read_history(path).ops
    assert (write.call, write.ret, write.key) == (1.0, 3.0, None)
    assert cas.value == (1, 2) and cas.status == "fail"
    # the register held 1, so the comparison cannot have failed
    assert check(read_history(path).ops).verdict == "not_linearizable"


@pytest.mark.parametrize(
    ("lines", "line", "message"),
    [
        (['{"process": 0, "type": "invoke", "f": "get"', ""], 1, "invalid JSON"),
        (['{"process": 0, "type": "invoke", "f": "get"}', "[1, 2]"], 2, "expected a JSON object"),
        (['{"process": "a", "type": "invoke", "f": "get"}'], 1, "'process' must be an integer"),
        (['{"process": 0, "type": "begin", "f": "get"}'], 1, "'type' must be one of"),
        (['{"process": 0, "type": "invoke", "f": 3}'], 1, "'f' must be a non-empty string"),
        (['{"process": 0, "type": "invoke", "f": "get", "key": 7}'], 1, "'key' must be a str"),
        (['{"process": 0, "type": "ok", "f": "get"}'], 1, "has no pending invocation"),
        (
            ['{"process": 0, "type": "invoke", "f": "get"}'] * 2,
            2,
            "while its operation invoked on line 1 has not completed",
        ),
        (
            ['{"process": 0, "type": "invoke", "f": "get"}', '{"process": 0, "type": "ok", "f": "put"}'],
            2,
            "does not match the pending 'get'",
        ),
        (
            [
                '{"process": 0, "type": "invoke", "f": "get", "time": 1}',
                '{"process": 0, "type": "ok", "f": "get"}',
            ],
            2,
            "has no 'time' but others do",
        ),
        (
            [
                '{"process": 0, "type": "invoke", "f": "get", "time": 2}',
                '{"process": 0, "type": "ok", "f": "get", "time": 1}',
            ],
            2,
            "events must be in time order",
        ),
    ],
)
def test_malformed_jsonl_names_the_line(
    tmp_path: Path, lines: list[str], line: int, message: str
) -> None:
    path = write_lines(tmp_path, "bad.jsonl", lines)
    with pytest.raises(HistoryFormatError, match=message) as caught:
        read_history(path, "jsonl")
    assert caught.value.line == line
    assert f"bad.jsonl:{line}:" in str(caught.value)


def test_jsonl_round_trip(tmp_path: Path) -> None:
    ops = [
        Op(0, "put", "x", "a", None, 0.0, 1.0, "ok"),
        Op(1, "get", "x", None, "a", 0.5, 2.0, "ok"),
        Op(2, "cas", "x", ("a", "b"), None, 1.0, 3.0, "fail"),
        Op(2, "append", "x", "c", None, 4.0, None, "unknown"),
        Op(2, "put", "y", "d", None, 5.0, 6.0, "ok"),  # same process after an unknown op
        Op(3, "delete", "y", None, None, 5.0, 5.0, "ok"),  # instantaneous
        Op(4, "put", "y", "e", None, 7.0, None, "unknown"),
    ]
    path = tmp_path / "round.jsonl"
    write_jsonl(ops_to_events(ops), path)
    back = read_history(path).ops
    assert [dataclasses.replace(op, line=None) for op in back] == sorted(ops, key=lambda o: o.call)
    # Op lists can be written directly, too
    write_jsonl(ops, tmp_path / "direct.jsonl")
    assert (tmp_path / "direct.jsonl").read_text() == path.read_text()
    first = json.loads(path.read_text().splitlines()[0])
    assert list(first) == ["process", "type", "f", "key", "value", "time"]


def test_events_to_ops_numbers_events_from_one() -> None:
    with pytest.raises(HistoryFormatError, match=r"^line 2: "):
        events_to_ops([{"process": 0, "type": "invoke", "f": "get"}, {"process": 0}])


JEPSEN = """\
2016-01-01 INFO  jepsen.core - something unrelated
INFO  jepsen.util - 0\t:invoke\t:read\tnil
INFO  jepsen.util - 1\t:invoke\t:write\t4
INFO  jepsen.util - 0\t:ok\t:read\tnil
INFO  jepsen.util - 1\t:ok\t:write\t4
INFO  jepsen.util - 2\t:invoke\t:cas\t[4 1]
INFO  jepsen.util - 3\t:invoke\t:read\tnil
INFO  jepsen.util - 2\t:fail\t:cas\t[4 1]
INFO  jepsen.util - 3\t:fail\t:read\t:timed-out
INFO  jepsen.util - 4\t:invoke\t:write\t2
INFO  jepsen.util - 4\t:info\t:write\t:timed-out
INFO  jepsen.util - 10\t:invoke\t:cas\t[2 3]
"""


def test_jepsen_etcd_log(tmp_path: Path) -> None:
    path = write_lines(tmp_path, "etcd_x.log", JEPSEN.splitlines())
    assert detect_format(path.read_text()) == "jepsen-etcd"
    history = read_history(path)
    assert history.format == "jepsen-etcd" and history.model == "register"
    read, write, cas, timed_out_read, info_write, open_cas = history.ops
    assert read.output is None and read.status == "ok" and read.line == 2
    assert write.value == 4
    assert cas.value == (4, 1) and cas.status == "fail"
    assert timed_out_read.status == "fail"
    assert info_write.status == "unknown" and info_write.value == 2
    assert open_cas.status == "unknown" and open_cas.process == 10
    # the register held 4 when the cas compared against 4: its failure is a violation
    assert check(history.ops, "register").verdict == "not_linearizable"


def test_jepsen_malformed_line(tmp_path: Path) -> None:
    path = write_lines(tmp_path, "e.log", ["INFO  jepsen.util - 0\t:invoke\t:cas\t[1 2"])
    with pytest.raises(HistoryFormatError, match=r"e\.log:1: cannot parse value"):
        read_history(path)


def test_porcupine_kv_log_starts_every_key_empty(tmp_path: Path) -> None:
    lines = [
        '{:process 0, :type :invoke, :f :get, :key "7", :value nil}',
        '{:process 0, :type :ok, :f :get, :key "7", :value ""}',
        '{:process 1, :type :invoke, :f :append, :key "7", :value "x 1 0 y"}',
        '{:process 1, :type :ok, :f :append, :key "7", :value "x 1 0 y"}',
        '{:process 0, :type :invoke, :f :put, :key "8", :value "v"}',
        '{:process 0, :type :ok, :f :put, :key "8", :value "v"}',
    ]
    path = write_lines(tmp_path, "c.txt", lines)
    history = read_history(path)
    assert history.format == "porcupine-kv" and history.model == "kv"
    initial = [op for op in history.ops if op.process == INITIAL_VALUE_PROCESS]
    assert [(op.key, op.f, op.value) for op in initial] == [("7", "put", ""), ("8", "put", "")]
    assert all(op.ret is not None and op.ret < 1 for op in initial)
    assert check(history.ops, "kv").verdict == "linearizable"
    # without the initial puts the first get (of "") would be a violation
    real = [op for op in history.ops if op.process != INITIAL_VALUE_PROCESS]
    assert check(real, "kv").verdict == "not_linearizable"


def test_porcupine_kv_malformed_line(tmp_path: Path) -> None:
    path = write_lines(tmp_path, "c.txt", ['{:process 0, :type :invoke, :f :get, :key "7"'])
    with pytest.raises(HistoryFormatError, match=r"c\.txt:1: cannot parse EDN map: unclosed"):
        read_history(path, "porcupine-kv")


def test_format_detection() -> None:
    assert detect_format('\n{"process": 0}') == "jsonl"
    assert detect_format("{:process 0}") == "porcupine-kv"
    assert detect_format("INFO  jepsen.util - 0\t:invoke\t:read\tnil") == "jepsen-etcd"
    with pytest.raises(HistoryFormatError, match="line 2: cannot tell the format"):
        detect_format("\nhello")
    with pytest.raises(HistoryFormatError, match="empty"):
        detect_format("  \n")
