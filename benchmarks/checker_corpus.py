"""Benchmark: check every history of the public corpus (shared/histories) with the checker package.

Theory of operation
-------------------
Two passes over the files listed in ``expected.tsv``, one core, in this process:

1. the *baseline*: only read and parse every file (``read_history``), which is the floor
   any checker working from these files pays;
2. the *check*: read, parse and check every file as ``python -m checker`` does (witness
   shrinking included), comparing each verdict with the one Porcupine's test suite asserts.

It prints a table (file, size, operations, verdict, expected, seconds), the totals, and as its
last line one JSON object for tooling. The target is the project's: the whole corpus in under
60 s on one core. Exit status 1 if a verdict differs from expected.tsv.

Usage: ``python benchmarks/checker_corpus.py [--shared DIR] [--timeout SECONDS]``
(``DIR`` defaults to ``$STORELAB_SHARED``, else the ``shared`` folder next to the repo).
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
        print(f"no corpus at {histories} (give --shared or set STORELAB_SHARED)", file=sys.stderr)
        return 2
    rows = load_expected(histories)

    started = time.perf_counter()
    for name, _ in rows:
        read_history(histories / name)
    baseline = time.perf_counter() - started

    table: list[tuple[str, int, int, str, str, float]] = []
    all_match = True
    started = time.perf_counter()
    for name, linearizable in rows:
        file_started = time.perf_counter()
        history = read_history(histories / name)
        result = check(history.ops, history.model, args.timeout)
        seconds = time.perf_counter() - file_started
        expected = "linearizable" if linearizable else "not_linearizable"
        all_match &= result.verdict == expected
        size = (histories / name).stat().st_size
        table.append((name, size, len(history.ops), result.verdict, expected, seconds))
    total = time.perf_counter() - started

    header = ("file", "bytes", "ops", "verdict", "expected", "seconds")
    cells = [header] + [
        (name, str(size), str(ops), verdict, expected, f"{seconds:.3f}")
        for name, size, ops, verdict, expected, seconds in table
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
        "python": sys.version.split()[0],
    }
    print(json.dumps(figures))
    return 0 if all_match else 1


if __name__ == "__main__":
    sys.exit(main())
