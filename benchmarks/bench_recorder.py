"""The record's write speed: rows per second appended and flushed, per batch size.

Each run writes ``--rows`` samples (50 tag addresses, float values, source timestamps: what an
MQTT JSON adapter hands the twin) into a fresh record, calling ``append_many`` with one batch
then ``flush`` (one transaction), batch after batch. The time counted is append + flush, the
whole cost of making a batch durable; building the ``Sample`` objects is not counted. Each
figure is the best of ``--repeat`` runs. Rows per CPU second (this process's user + system
time) are reported too: on a shared machine they tell the code's cost apart from the wait for a
core.

    .venv/bin/python benchmarks/bench_recorder.py                  # batches of 1, 100, 1000
    .venv/bin/python benchmarks/bench_recorder.py --power-safe     # synchronous=FULL
    .venv/bin/python benchmarks/bench_recorder.py --batch 1000 --rows 500000 --json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twin.live.recorder import Recorder
from twin.live.telemetry import Sample, Telemetry


def _items(n: int) -> list[tuple[Telemetry, str, str]]:
    t = 1.8e9
    return [
        (
            Sample(
                address=f"plant/line1/m{i % 50}/speed",
                value=1.5 + (i % 97) * 0.01,
                received_ts=t + i * 1e-4,
                source_ts=t + i * 1e-4 - 0.002,
                source="mqtt-json",
            ),
            "accepted",
            "",
        )
        for i in range(n)
    ]


def run_once(batch: int, rows: int, *, power_safe: bool, directory: str) -> tuple[float, float]:
    """Rows per second appended + flushed in batches of ``batch``: per second of wall time and
    per second of this process's CPU time (the cost of the code, whatever else the machine
    runs)."""
    items = _items(rows)
    path = Path(directory) / f"bench-{batch}-{time.monotonic_ns()}.db"
    rec = Recorder(path, power_safe=power_safe)
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(0, rows, batch):
            rec.append_many(items[i : i + batch])
            rec.flush()
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
    finally:
        rec.close()
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
    return rows / dt, rows / max(dc, 1e-9)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, action="append", help="batch size (repeatable)")
    parser.add_argument("--rows", type=int, default=0, help="rows per run (default per batch)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per batch size; best kept")
    parser.add_argument("--power-safe", action="store_true", help="synchronous=FULL")
    parser.add_argument("--dir", default=None, help="where to write (default: a temp dir)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args()
    batches = args.batch or [1, 100, 1000]
    results = []
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        for batch in batches:
            # enough rows for a stable figure, few enough for batches of 1 (a commit each)
            rows = args.rows or (5_000 if batch == 1 else 200_000)
            rows -= rows % batch
            runs = [
                run_once(batch, rows, power_safe=args.power_safe, directory=d)
                for _ in range(args.repeat)
            ]
            rate, cpu_rate = max(r[0] for r in runs), max(r[1] for r in runs)
            results.append(
                {
                    "batch": batch,
                    "rows": rows,
                    "rows_per_s": round(rate),
                    "rows_per_cpu_s": round(cpu_rate),
                }
            )
            if not args.json:
                print(
                    f"batch {batch:>5}: {rate:>10,.0f} rows/s appended+flushed"
                    f" ({cpu_rate:,.0f} per CPU second; {rows:,} rows, best of {args.repeat})",
                    flush=True,
                )
    info = {
        "loadavg_1min": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "synchronous": "FULL" if args.power_safe else "NORMAL",
        "results": results,
    }
    if args.json:
        print(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
