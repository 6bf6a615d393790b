"""``python -m checker``: verdicts, witness, exit statuses, detection, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import REPO_ROOT, histories_dir


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "checker", *map(str, args)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def event(process: int, kind: str, f: str, value: object, key: str = "x") -> str:
    return json.dumps({"process": process, "type": kind, "f": f, "key": key, "value": value})


@pytest.fixture
def good(tmp_path: Path) -> Path:
    path = tmp_path / "good.jsonl"
    path.write_text(
        "\n".join(
            [
                event(0, "invoke", "put", "1"),
                event(1, "invoke", "get", None),
                event(0, "ok", "put", "1"),
                event(1, "ok", "get", "1"),
            ]
        )
    )
    return path


@pytest.fixture
def stale(tmp_path: Path) -> Path:
    path = tmp_path / "stale.jsonl"
    path.write_text(
        "\n".join(
            [
                event(0, "invoke", "put", "1"),
                event(0, "ok", "put", "1"),
                event(0, "invoke", "put", "2"),
                event(0, "ok", "put", "2"),
                event(1, "invoke", "get", None),
                event(1, "ok", "get", "1"),
            ]
        )
    )
    return path


@pytest.fixture
def hard(tmp_path: Path) -> Path:
    """Sixteen concurrent appends and a read that no order explains: 16! orders to refute."""
    lines = [event(p, "invoke", "append", f"<{p}>") for p in range(16)]
    lines += [event(p, "ok", "append", f"<{p}>") for p in range(16)]
    lines += [event(99, "invoke", "get", None), event(99, "ok", "get", "nope")]
    path = tmp_path / "hard.jsonl"
    path.write_text("\n".join(lines))
    return path


def test_linearizable_exits_0(good: Path) -> None:
    done = run(good)
    assert done.returncode == 0, done.stderr
    assert "verdict:    LINEARIZABLE" in done.stdout
    assert "time:" in done.stdout
    assert "jsonl, detected" in done.stdout and "model:      kv (detected)" in done.stdout


def test_violation_exits_1_and_prints_the_witness(stale: Path) -> None:
    done = run(stale)
    assert done.returncode == 1, done.stderr
    assert "verdict:    NOT LINEARIZABLE" in done.stdout
    assert "witness:    this operation on key 'x' cannot be linearized" in done.stdout
    assert "starting from \"2\"" in done.stdout or "starting from '2'" in done.stdout
    culprit = [line for line in done.stdout.splitlines() if line.strip().startswith("!  1")]
    assert culprit and "get 'x'" in culprit[0] and '"1"' in culprit[0]


def test_timeout_exits_2(hard: Path) -> None:
    done = run(hard, "--timeout", "0.5")
    assert done.returncode == 2, done.stdout + done.stderr
    # "unknown" is an operation's outcome; a check out of time is undecided
    assert "verdict:    UNDECIDED (time budget ran out" in done.stdout
    assert "UNKNOWN" not in done.stdout


def test_zero_timeout_exits_2(good: Path) -> None:
    done = run(good, "--timeout", "0")
    assert done.returncode == 2
    assert "time budget ran out" in done.stdout


def test_given_format_and_model(good: Path) -> None:
    done = run(good, "--format", "jsonl", "--model", "kv")
    assert done.returncode == 0
    assert "jsonl, given" in done.stdout and "kv (given)" in done.stdout
    wrong = run(good, "--model", "register")
    assert wrong.returncode == 3
    assert "model 'register' has no operation 'put' (line 1)" in wrong.stderr


def test_json_output(stale: Path) -> None:
    done = run(stale, "--json")
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["verdict"] == "not_linearizable"
    assert report["witness"]["culprit"]["output"] == "1"
    assert report["witness"]["start_states"] == ["2"]


@pytest.mark.parametrize(("written", "read"), [(1, True), (True, False), (True, "s"), ({"x": [True]}, 0)])
def test_json_output_of_a_witness_holding_json_booleans_and_objects(
        tmp_path: Path, written: object, read: object) -> None:
    """The checker keeps ``true`` apart from ``1`` internally (JsonBool, FrozenDict); its JSON
    line gives them back as JSON, instead of failing to serialize them (a traceback, no line)."""
    path = tmp_path / "bools.jsonl"
    path.write_text("\n".join([event(0, "invoke", "put", written), event(0, "ok", "put", written),
                               event(1, "invoke", "get", None), event(1, "ok", "get", read)]))
    done = run("--json", path, path)  # twice: the second file still gets its line
    assert done.returncode == 1 and done.stderr == "", done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(lines) == 2
    witness = lines[0]["witness"]
    assert witness["start_states"] == [written]
    assert witness["culprit"]["output"] == read and type(witness["culprit"]["output"]) is type(read)


def test_all_keys_says_each_keys_verdict_in_text_too(tmp_path: Path) -> None:
    path = tmp_path / "keys.jsonl"
    path.write_text("\n".join([
        event(0, "invoke", "get", None, key="a"), event(0, "ok", "get", "v", key="a"),  # never written
        event(1, "invoke", "get", None, key="b"), event(1, "ok", "get", "w", key="b"),  # never written
        event(2, "invoke", "put", "1", key="c"), event(2, "ok", "put", "1", key="c"),
    ]))
    done = run("--all-keys", path)
    assert done.returncode == 1
    assert "keys:       2 not linearizable ('a', 'b'); 1 linearizable ('c')" in done.stdout, done.stdout
    assert "keys:" not in run(path).stdout  # without it the others are not settled: not said


def test_a_witness_cuts_long_values_saying_their_length(tmp_path: Path) -> None:
    path = tmp_path / "long.jsonl"
    big = "x" * 100_000
    path.write_text("\n".join([event(0, "invoke", "put", big), event(0, "ok", "put", big),
                               event(1, "invoke", "get", None), event(1, "ok", "get", big + "y")]))
    done = run(path)
    assert done.returncode == 1
    assert len(done.stdout) < 2_000, len(done.stdout)
    assert "(100,002 characters)" in done.stdout and "(100,003 characters)" in done.stdout
    assert json.loads(run("--json", path).stdout)["witness"]["culprit"]["output"] == big + "y"  # whole


def test_malformed_input_exits_3_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(event(0, "invoke", "get", None) + "\n" + '{"process": 0, "type": "ok"\n')
    done = run(path)
    assert done.returncode == 3
    assert f"{path}:2: invalid JSON" in done.stderr
    assert done.stdout == ""


def test_unreadable_file_and_bad_usage_exit_3(tmp_path: Path) -> None:
    missing = run(tmp_path / "missing.jsonl")
    assert missing.returncode == 3 and "cannot read" in missing.stderr
    assert run().returncode == 3
    assert run(tmp_path, "--format", "csv").returncode == 3
    assert run(tmp_path / "x", "--timeout", "-1").returncode == 3


@pytest.mark.skipif(
    not (histories_dir() / "jepsen-etcd" / "etcd_000.log").is_file(),
    reason=f"public history corpus not found at {histories_dir()}",
)
def test_detects_the_public_formats() -> None:
    etcd = run(histories_dir() / "jepsen-etcd" / "etcd_000.log")
    assert etcd.returncode == 1
    assert "(jepsen-etcd, detected)" in etcd.stdout and "register (from the format)" in etcd.stdout
    kv = run(histories_dir() / "porcupine-kv" / "c10-ok.txt")
    assert kv.returncode == 0
    assert "(porcupine-kv, detected)" in kv.stdout and "kv (from the format)" in kv.stdout


# --- several files in one run --------------------------------------------------------------


def test_several_files_each_get_a_report_in_order(good: Path, stale: Path) -> None:
    done = run(good, stale, good)
    assert done.returncode == 1, done.stderr  # a violation anywhere
    reports = done.stdout.split("\n\n")
    assert len(reports) == 3
    assert [r.splitlines()[0] for r in reports] == [f"history:    {p} (jsonl, detected)" for p in (good, stale, good)]
    assert ["NOT LINEARIZABLE" in r for r in reports] == [False, True, False]
    assert all("time:" in r for r in reports)


def test_several_files_exit_with_the_most_serious_status(good: Path, stale: Path, hard: Path, tmp_path: Path) -> None:
    assert run(good, good).returncode == 0
    # a proof of a violation outranks a timeout, whichever file comes first
    assert run(hard, stale, "--timeout", "0.5").returncode == 1
    assert run(good, hard, "--timeout", "0.5").returncode == 2
    # an input error outranks everything, and the other files are still checked
    missing = run(stale, tmp_path / "missing.jsonl", good)
    assert missing.returncode == 3
    assert "cannot read" in missing.stderr
    assert missing.stdout.count("history:") == 2 and "NOT LINEARIZABLE" in missing.stdout


def test_several_files_as_json_lines(good: Path, stale: Path) -> None:
    done = run("--json", good, stale)
    assert done.returncode == 1
    reports = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(r["file"], r["verdict"]) for r in reports] == [
        (str(good), "linearizable"),
        (str(stale), "not_linearizable"),
    ]


def test_prepass_is_reported_and_can_be_turned_off(tmp_path: Path) -> None:
    path = tmp_path / "unread.jsonl"
    path.write_text(
        "\n".join(
            [
                event(0, "invoke", "put", "1"),
                event(0, "ok", "put", "1"),
                event(1, "invoke", "put", "2"),
                event(1, "info", "put", "2"),
                event(2, "invoke", "get", None),
                event(2, "ok", "get", "1"),
            ]
        )
    )
    done = run(path)
    assert done.returncode == 0
    assert "1 of those are writes no read observes, dropped before the search" in done.stdout
    report = json.loads(run(path, "--json").stdout)
    assert report["dropped"] == 1 and report["keys"][0]["dropped"] == 1
    off = run(path, "--json", "--no-prepass")
    assert off.returncode == 0
    report = json.loads(off.stdout)
    assert report["verdict"] == "linearizable"
    assert report["dropped"] == 0 and report["keys"][0]["dropped"] == 0


def test_output_into_a_closed_pipe_ends_quietly_without_a_traceback(good: Path, stale: Path) -> None:
    """``python -m checker FILES | head -1``: status 141 (128 + SIGPIPE), nothing on stderr."""
    p = subprocess.Popen([sys.executable, "-m", "checker", str(good), str(stale), str(good)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO_ROOT)
    assert p.stdout is not None and p.stderr is not None
    p.stdout.close()  # the only reader is gone before the first report is written
    try:
        err = p.stderr.read().decode()
        assert (p.wait(timeout=60), err) == (141, "")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_verdict_words_keep_unknown_for_outcomes() -> None:
    from checker import LINEARIZABLE, NOT_LINEARIZABLE, UNKNOWN, verdict_text

    assert verdict_text(UNKNOWN) == "undecided"
    assert verdict_text(NOT_LINEARIZABLE) == "not linearizable"
    assert verdict_text(LINEARIZABLE) == "linearizable"
    assert verdict_text("error") == "error"


def test_values_json_tells_apart_fail_and_deep_or_odd_input_is_a_sentence(tmp_path: Path) -> None:
    booleq = tmp_path / "booleq.jsonl"
    booleq.write_text("\n".join([event(0, "invoke", "put", True), event(0, "ok", "put", True),
                                 event(1, "invoke", "get", None), event(1, "ok", "get", 1)]))
    r = run(booleq)
    assert r.returncode == 1 and "NOT LINEARIZABLE" in r.stdout.upper(), r.stdout + r.stderr
    assert "true" in r.stdout  # the witness writes JSON values back as JSON
    appended = tmp_path / "append.jsonl"
    appended.write_text("\n".join([event(0, "invoke", "put", 5), event(0, "ok", "put", 5),
                                   event(0, "invoke", "append", "x"), event(0, "ok", "append", "x")]))
    r = run(appended)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    for name, text in (("deep.jsonl", "[" * 100_000), ("nest.jsonl", event(0, "invoke", "put", json.loads("[" * 900 + "]" * 900))),
                       ("deep.edn", "{:process 0, :type :invoke, :f :write, :value " + "[" * 5000 + "}")):
        path = tmp_path / name
        path.write_text(text + "\n")
        r = run(path)
        assert r.returncode == 3 and "Traceback" not in r.stderr and "deep" in r.stderr, (name, r.stderr[-500:])


def test_a_string_holding_u2028_is_one_line_and_time_errors_name_their_own_line(tmp_path: Path) -> None:
    odd = tmp_path / "odd.jsonl"
    odd.write_text("\n".join([event(0, "invoke", "put", "a\u2028b\x85c"), event(0, "ok", "put", "a\u2028b\x85c"),
                              event(1, "invoke", "get", None), event(1, "ok", "get", "a\u2028b\x85c")]) + "\n",
                   encoding="utf-8")
    r = run(odd)
    assert r.returncode == 0, r.stderr
    bad_time = tmp_path / "time.jsonl"
    bad_time.write_text(json.dumps({"process": 0, "type": "invoke", "f": "get", "time": "x"}) + "\n"
                        + json.dumps({"process": 0, "type": "ok", "f": "get", "value": None}) + "\n")
    r = run(bad_time)
    assert r.returncode == 3 and ":1: 'time' must be a finite number" in r.stderr, r.stderr


def test_json_output_has_a_line_for_a_file_that_cannot_be_checked(tmp_path: Path, good: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    r = run("--json", bad, good)
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert r.returncode == 3 and [x["verdict"] for x in lines] == ["error", "linearizable"]
    assert lines[0]["file"] == str(bad) and "invalid JSON" in lines[0]["error"]
    assert run("--timeout", "nan", good).returncode == 3
