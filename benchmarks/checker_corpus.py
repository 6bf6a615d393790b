"""Benchmark: check every history of the public corpus (shared/histories) with the checker package.

Theory of operation
-------------------
Passes over the files listed in ``expected.tsv``, one core, in this process:

1. the *baseline*: only read and parse every file (``read_history``), which is the floor
   any checker working from these files pays;
2. the *check*: read, parse and check every file as ``python -m checker`` does (witness
   shrinking included), comparing each verdict with the one Porcupine's test suite asserts;
3. the same check with the pre-pass off (``check(..., prepass=False)``, see
   ``checker/prepass.py``), run file by file right after the first so that both see the same
   machine; its verdicts must match too. The ratio says what the pre-pass saves here (the
   corpus has few unknown writes that nothing reads; simulated histories under faults have
   many).

It prints a table (file, size, operations, verdict, expected, seconds, seconds without the
pre-pass, unknown writes the pre-pass dropped), the totals, and as its last line one JSON
object for tooling. The target is the project's: the whole corpus in under
60 s on one core. Exit status 1 if a verdict differs from expected.tsv.

Usage: ``python benchmarks/checker_corpus.py [--shared DIR] [--timeout SECONDS]``
(``DIR`` defaults to ``$STORELAB_SHARED``, else the ``shared`` folder next to the repo).

The corpus is not in the repository: ``DIR/histories`` holds Porcupine's test data
(github.com/anishathalye/porcupine, ``test_data/jepsen`` and ``test_data/kv``, MIT) as
``jepsen-etcd/`` and ``porcupine-kv/``, and ``expected.tsv``, the verdict Porcupine's test suite
asserts for each file. Without it the benchmark says where it looked and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO_ROOT))

from checker import check, read_history  # noqa: E402

TARGET_SECONDS = 60.0

MISSING = """\
no corpus at {histories} (no expected.tsv there).
The public history corpus is not part of the repository. It is Porcupine's test data
(github.com/anishathalye/porcupine: test_data/jepsen and test_data/kv, MIT) laid out as
histories/jepsen-etcd/, histories/porcupine-kv/ and histories/expected.tsv (the verdict
Porcupine's test suite asserts for each file), looked for in DIR/histories, where DIR is
--shared, else $STORELAB_SHARED, else the folder 'shared' beside the checkout (../shared).
Point at it with --shared DIR or STORELAB_SHARED=DIR."""


def default_shared() -> Path:
    configured = os.environ.get("STORELAB_SHARED")
    return Path(configured) if configured else (REPO_ROOT / ".." / "shared").resolve()


def load_expected(histories: Path) -> list[tuple[str, bool]]:
    rows: list[tuple[str, bool]] = []
    for line in (histories / "expected.tsv").read_text().splitlines()[1:]:
        if line.strip():
            name, verdict = line.split("\t")
            rows.append((name, verdict.strip() == "true"))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--shared", type=Path, default=default_shared())
    parser.add_argument("--timeout", type=float, default=60.0, help="per file (default 60)")
    args = parser.parse_args()
    histories = args.shared / "histories"
    if not (histories / "expected.tsv").is_file():
        print(MISSING.format(histories=histories), file=sys.stderr)
        return 2
    rows = load_expected(histories)

    started = time.perf_counter()
    for name, _ in rows:
        read_history(histories / name)
    baseline = time.perf_counter() - started

    table: list[tuple[str, int, int, str, str, float, float, int]] = []
    all_match = True
    total = total_off = 0.0
    for name, linearizable in rows:
        file_started = time.perf_counter()
        history = read_history(histories / name)
        result = check(history.ops, history.model, args.timeout)
        seconds = time.perf_counter() - file_started
        total += seconds
        off_started = time.perf_counter()
        history = read_history(histories / name)
        off = check(history.ops, history.model, args.timeout, prepass=False)
        seconds_off = time.perf_counter() - off_started
        total_off += seconds_off
        expected = "linearizable" if linearizable else "not_linearizable"
        all_match &= result.verdict == expected and off.verdict == expected
        size = (histories / name).stat().st_size
        dropped = sum(k.dropped for k in result.keys.values())
        table.append(
            (name, size, len(history.ops), result.verdict, expected, seconds, seconds_off, dropped)
        )

    header = ("file", "bytes", "ops", "verdict", "expected", "seconds", "no-prepass", "dropped")
    cells = [header] + [
        (name, str(size), str(ops), verdict, expected, f"{seconds:.3f}", f"{off:.3f}", str(d))
        for name, size, ops, verdict, expected, seconds, off, d in table
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        mark = "" if row is header or row[3] == row[4] else "   <-- MISMATCH"
        line = "  ".join(
            c.rjust(w) if c[:1].isdigit() else c.ljust(w) for c, w in zip(row, widths, strict=True)
        )
        print(line + mark)
    slowest = max(table, key=lambda row: row[5])
    print(
        f"\n{len(table)} files, {sum(r[1] for r in table)} bytes, {sum(r[2] for r in table)} ops: "
        f"checked in {total:.2f} s (parsing alone: {baseline:.2f} s; slowest: {slowest[0]} "
        f"{slowest[5]:.2f} s); all verdicts match: {all_match}; target {TARGET_SECONDS:.0f} s"
    )
    print(
        f"without the pre-pass: {total_off:.2f} s (with / without: {total / total_off:.2f}; "
        f"{sum(r[7] for r in table)} unknown writes dropped in all)"
    )
    figures = {
        "benchmark": "checker_corpus",
        "files": len(table),
        "ops": sum(r[2] for r in table),
        "total_seconds": round(total, 4),
        "all_match": all_match,
        "target_seconds": TARGET_SECONDS,
        "ratio_vs_target": round(total / TARGET_SECONDS, 5),
        "baseline_parse_seconds": round(baseline, 4),
        "ratio_vs_parse": round(total / baseline, 2) if baseline > 0 else None,
        "slowest_file": slowest[0],
        "slowest_seconds": round(slowest[5], 4),
        "no_prepass_seconds": round(total_off, 4),
        "ratio_prepass_vs_off": round(total / total_off, 3) if total_off > 0 else None,
        "prepass_dropped_ops": sum(r[7] for r in table),
        "python": sys.version.split()[0],
    }
    print(json.dumps(figures))
    return 0 if all_match else 1


if __name__ == "__main__":
    sys.exit(main())
