"""Robot cells in pybullet: real-time factor of one cell and of 8 cells over the machine's cores.

Scenario, per cell: a KUKA iiwa (``pybullet_data``) picking parts off a 6 m infeed and placing
them on a 6 m outfeed, cycle after cycle, with 100 parts on the two belts (a hook run every
0.1 s of simulated time tops each belt up to 50 parts: new ones at the start of the infeed and
0.6 m along the outfeed). Parts are 8 x 8 x 6 cm boxes; the step is 1/240 s; everything else is
the ``CellConfig`` default (20 solver iterations, conveyors updated every 4 steps, no sleeping).

- one cell: in this process; after a 2 s warm-up, ``--seconds`` of simulated time are stepped.
  ``realtime_factor_one_cell`` = simulated seconds / wall seconds; the same over this
  process's CPU time is reported too (``..._cpu``), which the machine's other load does not
  change.
- 8 cells: a ``CellPool`` of 8 cells over ``--processes`` workers (default: one per core); after
  the warm-up, every cell advances ``--seconds``. ``realtime_factor_8_cells`` = simulated seconds
  of each cell / wall seconds (all 8 cells move that fast at once); the aggregate (x 8) is
  reported as ``cell_seconds_per_second``.

    .venv/bin/python benchmarks/bench_rigid.py                  # 20 s simulated per run
    .venv/bin/python benchmarks/bench_rigid.py --seconds 10 --json
    .venv/bin/python benchmarks/bench_rigid.py --one-only --profile   # cProfile of one cell
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from physics.rigid.cell import Cell
from physics.rigid.layout import ArrivalConfig, CellConfig
from physics.rigid.motion import RigidError
from physics.rigid.pool import CellPool

BELT_M = 6.0
PER_BELT = 50
WARMUP_S = 2.0
HOOK_EVERY_S = 0.1


def bench_config(name: str = "cell", *, sleeping: bool = False) -> CellConfig:
    """The benchmark cell: the default cell with 6 m belts and no timed arrivals."""
    base = CellConfig()
    return replace(
        base,
        name=name,
        infeed=replace(base.infeed, start=(0.5, -0.3 - BELT_M), end=(0.5, -0.3)),
        outfeed=replace(base.outfeed, start=(0.5, 0.3), end=(0.5, 0.3 + BELT_M)),
        arrival=ArrivalConfig(interval_s=None),
        sleeping=sleeping,
    )


def prefill(cell: Cell) -> None:
    """50 parts on each belt, 0.12 m apart."""
    for k in range(PER_BELT):
        cell.spawn_part("infeed", s=0.06 + 0.12 * k)
        cell.spawn_part("outfeed", s=0.6 + 0.1 * k)


def keep_stocked(cell: Cell) -> None:
    """Top each belt up to 50 parts (one new part per belt per call, where there is room)."""
    for belt, s in (("infeed", None), ("outfeed", 0.6)):
        if len(cell.conveyor_parts(belt)) < PER_BELT:
            with contextlib.suppress(RigidError):  # the spot is taken: next time
                cell.spawn_part(belt, s=s)


def prefill_hook(cell: Cell) -> None:
    """Pool hook: fill a fresh cell once, then keep it stocked."""
    if not cell.part_states():
        prefill(cell)
    keep_stocked(cell)


def run_one(seconds: float, *, sleeping: bool, profile: bool) -> dict[str, Any]:
    cell = Cell(bench_config(sleeping=sleeping), seed=0)
    prefill(cell)
    hook_steps = round(HOOK_EVERY_S / cell.dt)
    live: list[int] = []

    def run(sim_s: float) -> None:
        end = cell.step_count + round(sim_s / cell.dt)
        while cell.step_count < end:
            if cell.cycle_done and cell.faulted is None:
                cell.start_cycle()
            if cell.step_count % hook_steps == 0:
                keep_stocked(cell)
                live.append(len(cell.part_states()))
            cell.step()

    run(WARMUP_S)
    cycles0 = cell.cycles_started
    live.clear()
    prof = None
    if profile:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    w0, c0 = time.perf_counter(), time.process_time()
    run(seconds)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    if prof is not None:
        import pstats

        prof.disable()
        pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(15)
    results = [cell.result(i) for i in range(cycles0 + 1, cell.cycles_started + 1)]
    done = [r for r in results if r is not None and r.ok]
    alarms = [e for e in cell.events() if e.kind.is_alarm]
    cell.close()
    return {
        "realtime_factor_one_cell": seconds / wall,
        "realtime_factor_one_cell_cpu": seconds / cpu,
        "one_cell_wall_s": wall,
        "one_cell_cpu_s": cpu,
        "step_ms": wall / round(seconds / (1 / 240)) * 1000,
        "parts_live_mean": sum(live) / max(len(live), 1),
        "parts_live_min": min(live, default=0),
        "cycles_done": len(done),
        "cycle_motion_s_mean": sum(r.motion_s for r in done) / max(len(done), 1),
        "alarms": len(alarms),
    }


def run_pool(
    seconds: float, n_cells: int, processes: int | None, *, sleeping: bool
) -> dict[str, Any]:
    cells = {f"cell{i}": (bench_config(f"cell{i}", sleeping=sleeping), i) for i in range(n_cells)}
    with CellPool(cells, processes=processes) as pool:
        nproc = len({pool._where[n] for n in pool.names})
        pool.advance(WARMUP_S, auto_cycle=True, hook=prefill_hook, hook_every_s=HOOK_EVERY_S)
        w0 = time.perf_counter()
        reports = pool.advance(
            seconds, auto_cycle=True, hook=prefill_hook, hook_every_s=HOOK_EVERY_S
        )
        wall = time.perf_counter() - w0
        live = [len(pool.call(n, "part_states")) for n in pool.names]
    cpu = sum(r.cpu_s for r in reports.values())
    return {
        "realtime_factor_8_cells": seconds / wall,
        "cell_seconds_per_second": n_cells * seconds / wall,
        "cells": n_cells,
        "processes": nproc,
        "pool_wall_s": wall,
        "pool_cpu_s": cpu,
        "realtime_factor_per_cell_cpu": n_cells * seconds / cpu,
        "pool_parts_live_at_end": live,
        "pool_cycles_done": sum(sum(1 for c in r.cycles if c.ok) for r in reports.values()),
        "pool_alarms": sum(sum(1 for e in r.events if e.kind.is_alarm) for r in reports.values()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seconds", type=float, default=20.0, help="simulated seconds measured")
    ap.add_argument("--cells", type=int, default=8)
    ap.add_argument("--processes", type=int, default=None, help="workers (default: cores)")
    ap.add_argument("--sleeping", action="store_true", help="let parts at rest sleep")
    ap.add_argument("--one-only", action="store_true", help="skip the pool run")
    ap.add_argument("--profile", action="store_true", help="cProfile the one-cell run")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    load0 = os.getloadavg()[0]
    out: dict[str, Any] = {
        "seconds": args.seconds,
        "sleeping": args.sleeping,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "machine": platform.processor() or platform.machine(),
    }
    out.update(run_one(args.seconds, sleeping=args.sleeping, profile=args.profile))
    if not args.one_only:
        out.update(run_pool(args.seconds, args.cells, args.processes, sleeping=args.sleeping))
    out["loadavg_1min_before_after"] = [load0, os.getloadavg()[0]]
    out["target_one_cell_4x"] = out["realtime_factor_one_cell"] >= 4.0
    if args.json:
        print(json.dumps(out))
        return
    for k, v in out.items():
        print(f"{k:32s} {v:.3f}" if isinstance(v, float) else f"{k:32s} {v}")


if __name__ == "__main__":
    main()
