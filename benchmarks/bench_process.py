"""Process-core speed against SimPy: simulated part completions per wall-clock second.

Runs the same line in the SimPy reference (``benchmarks/simpy_line.py``) and in the JAX core on
this machine, in one run, and prints the ratio for 1, 64 and 1024 variants. Compile time is
reported separately (first call minus a steady call). Two lines: a 10-station line with failures,
a split and a merge (the general engine), and a 10-station serial line (the (max,+) fast path).

    .venv/bin/python benchmarks/bench_process.py            # both lines, 8 simulated hours
    .venv/bin/python benchmarks/bench_process.py --json     # one JSON object
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
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


def simpy_rate(path: Path, hours: float, reps: int) -> dict[str, float]:
    spec = load_line(path)
    comp, wall = 0, 0.0
    for r in range(reps):
        t0 = time.perf_counter()
        res = simpy_line.simulate(spec, hours=hours, seed=100 + r)
        wall += time.perf_counter() - t0
        comp += int(res["completions"])
    return {"completions": comp, "wall_s": wall, "rate": comp / wall}


def _timed(run: Any, count: Any) -> dict[str, float]:
    """Run twice: the first call compiles; the second is the steady figure."""
    t0 = time.perf_counter()
    run()
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    s = run()
    comp = count(s)  # reading the result waits for the device
    wall = time.perf_counter() - t0
    return {
        "completions": comp,
        "wall_s": wall,
        "compile_s": max(0.0, first - wall),
        "rate": comp / wall,
    }


def jax_general(path: Path, hours: float, v: int) -> dict[str, float]:
    model, params = build(load_line(path))
    p = api.batch_params(with_horizon(params, hours=hours), v)
    keys = jax.random.split(jax.random.PRNGKey(0), v)
    return _timed(
        lambda: engine.run(model, p, keys), lambda s: int(np.sum(np.asarray(s.completions)))
    )


def jax_serial(path: Path, hours: float, v: int) -> dict[str, float]:
    model, params = serial.build_serial(load_line(path))
    params = serial._with_horizon(params, hours, 0.0)
    p = jax.tree.map(lambda a: jax.numpy.broadcast_to(a, (v, *a.shape)), params)
    keys = jax.random.split(jax.random.PRNGKey(0), v)
    # Count completions inside the horizon, as SimPy does (the last chunk runs a little past it).
    return _timed(lambda: serial.run(model, p, keys), lambda s: int(np.sum(np.asarray(s.produced))))


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--hours", type=float, default=8.0, help="simulated hours per variant")
    ap.add_argument("--variants", default="1,64,1024", help="comma-separated batch sizes")
    ap.add_argument("--simpy-reps", type=int, default=3, help="SimPy runs to average")
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
        ref = simpy_rate(path, args.hours, args.simpy_reps)
        rows = []
        for v in sizes:
            res = (jax_general if name == "general" else jax_serial)(path, args.hours, v)
            res["variants"] = v
            res["ratio_vs_simpy"] = res["rate"] / ref["rate"]
            rows.append(res)
            if not args.json:
                print(
                    f"{name:8} V={v:5d}  {res['rate']:12.0f} completions/s  "
                    f"x{res['ratio_vs_simpy']:7.1f} SimPy  (compile {res['compile_s']:.1f} s, run {res['wall_s']:.2f} s)",
                    flush=True,
                )
        out["lines"][name] = {"file": str(path.relative_to(HERE.parent)), "simpy": ref, "jax": rows}
        if not args.json:
            print(f"{name:8} SimPy      {ref['rate']:12.0f} completions/s (reference)", flush=True)
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
