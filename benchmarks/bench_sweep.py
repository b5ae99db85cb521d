"""Design sweeps: variants per second, locally at several batch sizes and through Ray, against
the same variants in SimPy.

A 10-station line (``benchmarks/lines/ten_station.yaml``: failures, a split and a merge, so the
general engine) with a 5-parameter design space (three buffer capacities, two processing-time
targets), Latin-hypercube variants, each simulated for 8 hours with 5 replications (common
random numbers). Figures exclude compilation (a warm-up run of the same shapes with a short
horizon compiles first: the horizon is a traced parameter) but include everything else a sweep
does per variant: applying it to the line, building its parameters, simulating, summarizing.

    .venv/bin/python benchmarks/bench_sweep.py                      # batches 1, 64, 1024; Ray; SimPy
    .venv/bin/python benchmarks/bench_sweep.py --batches 1,64 --ray-variants 0 --json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import simpy_line
from scenes.lineparse import load_line
from twin.design import generators
from twin.design.evaluate import Backend, evaluate_variants
from twin.design.space import Simulation, apply, parse_space

HERE = Path(__file__).resolve().parent
LINE = HERE / "lines" / "ten_station.yaml"
SPACE = """
design: ten-station-bench
parameters:
  - {target: buffers.b2.capacity, range: [1, 8]}
  - {target: buffers.b5.capacity, range: [1, 8]}
  - {target: buffers.b7.capacity, range: [1, 6]}
  - {target: stations.s4a.process_time, range: [34, 46]}
  - {target: stations.s6.process_time, range: [17, 23]}
objectives: [throughput, cost]
"""


def _run(space: Any, line: Any, variants: list[Any], sim: Simulation, backend: Backend) -> float:
    t0 = time.perf_counter()
    evaluate_variants(space, line, variants, sim, backend=backend)
    return time.perf_counter() - t0


def local_rate(space: Any, line: Any, variants: list[Any], sim: Simulation) -> dict[str, float]:
    """Variants per second with jobs of ``sim.batch`` variants (one job at a time)."""
    warm = replace(sim, hours=0.05, warmup_hours=0.0)
    t0 = time.perf_counter()
    _run(space, line, variants[: sim.batch], warm, Backend.LOCAL)
    compile_s = time.perf_counter() - t0
    wall = _run(space, line, variants, sim, Backend.LOCAL)
    return {
        "variants": len(variants),
        "wall_s": wall,
        "rate": len(variants) / wall,
        "compile_s": compile_s,
    }


def ray_rate(
    space: Any, line: Any, variants: list[Any], sim: Simulation, cpus: int
) -> dict[str, float]:
    import ray

    t0 = time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    start_s = time.perf_counter() - t0
    try:
        warm = replace(sim, hours=0.05, warmup_hours=0.0)
        t0 = time.perf_counter()
        _run(space, line, variants, warm, Backend.RAY)  # every worker compiles once
        compile_s = time.perf_counter() - t0
        wall = _run(space, line, variants, sim, Backend.RAY)
    finally:
        ray.shutdown()
    return {
        "variants": len(variants),
        "wall_s": wall,
        "rate": len(variants) / wall,
        "compile_s": compile_s,
        "ray_start_s": start_s,
        "workers": cpus,
    }


def simpy_rate(space: Any, line: Any, variants: list[Any], sim: Simulation) -> dict[str, float]:
    t0 = time.perf_counter()
    for v in variants:
        spec = apply(line, space, v)
        for r in range(sim.replications):
            simpy_line.simulate(spec, hours=sim.hours, warmup_hours=sim.warmup_hours, seed=100 + r)
    wall = time.perf_counter() - t0
    return {"variants": len(variants), "wall_s": wall, "rate": len(variants) / wall}


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--hours", type=float, default=8.0)
    ap.add_argument("--replications", type=int, default=5)
    ap.add_argument("--batches", default="1,64,1024", help="variants per batch, comma-separated")
    ap.add_argument("--batch1-variants", type=int, default=4, help="variants timed at batch 1")
    ap.add_argument("--ray-variants", type=int, default=256, help="0: skip Ray")
    ap.add_argument("--ray-batch", type=int, default=128)
    ap.add_argument("--ray-cpus", type=int, default=2)
    ap.add_argument("--simpy-variants", type=int, default=16)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import jax

    line = load_line(LINE)
    space = parse_space(SPACE, line)
    sizes = [int(x) for x in args.batches.split(",") if x]
    n_max = max([*sizes, args.ray_variants, args.batch1_variants, args.simpy_variants])
    variants = generators.lhs(space, n_max, np.random.default_rng(0))
    sim = Simulation(hours=args.hours, replications=args.replications, seed=1)
    out: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {jax.devices()[0].platform}, "
        f"python {platform.python_version()}, jax {jax.__version__}",
        "line": str(LINE.relative_to(HERE.parent)),
        "hours": args.hours,
        "replications": args.replications,
        "local": [],
    }
    ref = simpy_rate(space, line, variants[: args.simpy_variants], sim)
    out["simpy"] = ref
    if not args.json:
        print(
            f"SimPy            {ref['rate']:8.3f} variants/s ({ref['variants']} variants, {ref['wall_s']:.1f} s)",
            flush=True,
        )
    for b in sizes:
        n = args.batch1_variants if b == 1 else b
        res = local_rate(space, line, variants[:n], replace(sim, batch=b))
        res["batch"] = b
        res["ratio_vs_simpy"] = res["rate"] / ref["rate"]
        out["local"].append(res)
        if not args.json:
            print(
                f"local batch {b:5d} {res['rate']:8.3f} variants/s  x{res['ratio_vs_simpy']:5.1f} SimPy "
                f"({n} variants in {res['wall_s']:.1f} s; compile {res['compile_s']:.1f} s)",
                flush=True,
            )
    if args.ray_variants:
        res = ray_rate(
            space,
            line,
            variants[: args.ray_variants],
            replace(sim, batch=args.ray_batch),
            args.ray_cpus,
        )
        res["batch"] = args.ray_batch
        res["ratio_vs_simpy"] = res["rate"] / ref["rate"]
        out["ray"] = res
        if not args.json:
            print(
                f"ray {args.ray_cpus} workers, batch {args.ray_batch}: {res['rate']:8.3f} variants/s  "
                f"x{res['ratio_vs_simpy']:5.1f} SimPy ({res['variants']} variants in {res['wall_s']:.1f} s; "
                f"Ray start {res['ray_start_s']:.1f} s, compile {res['compile_s']:.1f} s)",
                flush=True,
            )
    if args.json:
        json.dump(out, sys.stdout)
        sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
