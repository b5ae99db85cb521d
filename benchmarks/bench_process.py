"""Process-core speed against SimPy: simulated part completions per wall-clock second.

Runs the same line in the SimPy reference (``benchmarks/simpy_line.py``) and in the JAX core on
this machine, in one run, and prints the ratio for 1, 64 and 1024 variants. Each ratio is the
median of ``--repeat`` pairs, SimPy runs right before steady JAX calls for at least as long, so
that both sides of a pair see the same load on a shared machine. Compile time is reported
separately (first call minus a steady call). Two lines: a 10-station line with failures, a split and a merge (the
general engine), and a 10-station serial line (the (max,+) fast path).

    .venv/bin/python benchmarks/bench_process.py            # both lines, 8 simulated hours
    .venv/bin/python benchmarks/bench_process.py --json     # one JSON object
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import simpy_line
from physics.process import api, engine, serial
from physics.process.model import build, with_horizon
from scenes.lineparse import load_line

HERE = Path(__file__).resolve().parent
LINES = {
    "general": HERE / "lines" / "ten_station.yaml",
    "serial": HERE / "lines" / "ten_serial.yaml",
}


def simpy_rate(path: Path, hours: float, reps: int, seed: int = 100) -> dict[str, float]:
    spec = load_line(path)
    comp, wall = 0, 0.0
    for r in range(reps):
        t0 = time.perf_counter()
        res = simpy_line.simulate(spec, hours=hours, seed=seed + r)
        wall += time.perf_counter() - t0
        comp += int(res["completions"])
    return {"completions": comp, "wall_s": wall, "rate": comp / wall}


def _timed(
    run: Callable[[], Any], count: Callable[[Any], int], at_least_s: float = 0.0
) -> dict[str, float]:
    """Calls until ``at_least_s`` have passed (at least one); reading a result waits for it."""
    comp, calls, t0 = 0, 0, time.perf_counter()
    while True:
        comp += count(run())
        calls += 1
        wall = time.perf_counter() - t0
        if wall >= at_least_s:
            return {"completions": comp, "wall_s": wall, "rate": comp / wall, "calls": calls}


Runner = tuple[Callable[[], Any], Callable[[Any], int]]


def jax_general(path: Path, hours: float, v: int) -> Runner:
    model, params = build(load_line(path))
    p = api.batch_params(with_horizon(params, hours=hours), v)
    keys = jax.random.split(jax.random.PRNGKey(0), v)
    return lambda: engine.run(model, p, keys), lambda s: int(np.sum(np.asarray(s.completions)))


def jax_serial(path: Path, hours: float, v: int) -> Runner:
    model, params = serial.build_serial(load_line(path))
    params = serial._with_horizon(params, hours, 0.0)
    p = jax.tree.map(lambda a: jax.numpy.broadcast_to(a, (v, *a.shape)), params)
    keys = jax.random.split(jax.random.PRNGKey(0), v)
    # Count completions inside the horizon, as SimPy does (the last chunk runs a little past it).
    return lambda: serial.run(model, p, keys), lambda s: int(np.sum(np.asarray(s.produced)))


def measure(
    name: str, path: Path, hours: float, v: int, repeat: int, simpy_reps: int
) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """Compile, then ``repeat`` pairs of (SimPy runs, steady JAX calls); the median pair's ratio."""
    run, count = (jax_general if name == "general" else jax_serial)(path, hours, v)
    first = _timed(run, count)["wall_s"]
    pairs = []
    for r in range(repeat):
        ref = simpy_rate(path, hours, simpy_reps, seed=100 + simpy_reps * r)
        res = _timed(run, count, at_least_s=ref["wall_s"])  # both sides of a pair as long
        pairs.append((res["rate"] / ref["rate"], res, ref))
    pairs.sort(key=lambda x: x[0])
    ratio, res, _ = pairs[len(pairs) // 2]
    out: dict[str, Any] = {
        **res,
        "variants": v,
        "ratio_vs_simpy": ratio,
        "ratio_range": [pairs[0][0], pairs[-1][0]],
        "compile_s": max(0.0, first - res["wall_s"] / res["calls"]),
    }
    return out, [x[2] for x in pairs]


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--hours", type=float, default=8.0, help="simulated hours per variant")
    ap.add_argument("--variants", default="1,64,1024", help="comma-separated batch sizes")
    ap.add_argument("--simpy-reps", type=int, default=2, help="SimPy runs in each pair")
    ap.add_argument("--repeat", type=int, default=3, help="(SimPy, JAX) pairs per batch size")
    ap.add_argument("--lines", default="general,serial", help="general, serial or both")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    sizes = [int(x) for x in args.variants.split(",")]
    out: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {jax.devices()[0].platform}, "
        f"{len(jax.devices())} device(s), python {platform.python_version()}, jax {jax.__version__}",
        "hours": args.hours,
        "lines": {},
    }
    for name in args.lines.split(","):
        path = LINES[name]
        rows, refs = [], []
        for v in sizes:
            res, r = measure(name, path, args.hours, v, args.repeat, args.simpy_reps)
            rows.append(res)
            refs += r
            if not args.json:
                lo, hi = res["ratio_range"]
                print(
                    f"{name:8} V={v:5d}  {res['rate']:12.0f} completions/s  "
                    f"x{res['ratio_vs_simpy']:7.1f} SimPy ({lo:.1f}-{hi:.1f})  "
                    f"(compile {res['compile_s']:.1f} s, run {res['wall_s'] / res['calls']:.2f} s)",
                    flush=True,
                )
        comp = sum(x["completions"] for x in refs)
        wall = sum(x["wall_s"] for x in refs)
        ref = {"completions": comp, "wall_s": wall, "rate": comp / wall, "pairs": len(refs)}
        out["lines"][name] = {"file": str(path.relative_to(HERE.parent)), "simpy": ref, "jax": rows}
        if not args.json:
            print(f"{name:8} SimPy      {ref['rate']:12.0f} completions/s (reference)", flush=True)
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
