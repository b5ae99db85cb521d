"""The general engine's two ways of compiling its transfer phase, side by side.

``engine.ISOLATE_STATIONS`` (each station's push and pull in a one-trip loop: the CPU's default,
off on accelerators) and ``engine.FORWARD_PULLS`` (each pass ends with pulls at single-server
stations) change how fast a step runs, never its results. This script runs the general
benchmark line (``benchmarks/lines/ten_station.yaml``) with each combination, or only with this
backend's defaults, and prints steady completions per wall-clock second (after a compiling
call), checking that every combination delivered the same number of completions.

    .venv/bin/python benchmarks/bench_transfer.py                       # 4 combinations, V=1,1024
    .venv/bin/python benchmarks/bench_transfer.py --variants 1,1024,8192,65536 --hours 1
    XLA_FLAGS=... .venv/bin/python benchmarks/bench_transfer.py --defaults-only --json
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path
from typing import Any

import jax

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_process import LINES, _timed, jax_general
from physics.process import engine


def measure(v: int, hours: float) -> dict[str, Any]:
    """One compiling call, then one steady call of ``v`` variants."""
    run, count = jax_general(LINES["general"], hours, v)
    first = _timed(run, count)["wall_s"]
    steady = _timed(run, count)
    return {
        "variants": v,
        "completions": steady["completions"],
        "rate": steady["rate"],
        "compile_s": first - steady["wall_s"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--hours", type=float, default=1.0, help="simulated hours per variant")
    ap.add_argument("--variants", default="1,1024", help="comma-separated batch sizes")
    ap.add_argument(
        "--defaults-only", action="store_true", help="only this backend's default combination"
    )
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    sizes = [int(x) for x in args.variants.split(",")]
    combos: list[tuple[bool | None, bool]] = (
        [(None, engine.FORWARD_PULLS)]
        if args.defaults_only
        else list(itertools.product([True, False], [True, False]))
    )
    rows = []
    for isolate, forward in combos:
        engine.ISOLATE_STATIONS, engine.FORWARD_PULLS = isolate, forward
        jax.clear_caches()  # type: ignore[no-untyped-call]
        for v in sizes:
            row = {"isolate_stations": engine._once() is not None, "forward_pulls": forward}
            row |= measure(v, args.hours)
            rows.append(row)
            if not args.json:
                print(
                    f"isolated={row['isolate_stations']!s:5} forward_pulls={forward!s:5} "
                    f"V={v:6d} {row['rate']:14,.0f} completions/s "
                    f"(compile {row['compile_s']:.1f} s)",
                    flush=True,
                )
    same = all(len({r["completions"] for r in rows if r["variants"] == v}) == 1 for v in sizes)
    if args.json:
        print(json.dumps({"backend": jax.default_backend(), "hours": args.hours, "rows": rows}))
    if not same:
        print("the combinations delivered different completions", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
