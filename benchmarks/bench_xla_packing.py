"""Why the general engine's state layout matters on XLA:CPU: many small arrays against one.

A 64-step loop updates ``--arrays`` arrays of ``--lanes`` float64 with a select that depends on
a minimum over ten of them (the shape of an event step: an argmin, then updates everywhere),
once with each array separate (the engine's state today: one array per station, slot and
counter) and once stacked into one 2-D array. Prints the time per step, wall and CPU.

    .venv/bin/python benchmarks/bench_xla_packing.py
    TWIN_CPU_DEVICES=1 .venv/bin/python benchmarks/bench_xla_packing.py --arrays 170 --lanes 512
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import physics.process.model  # noqa: F401  (float64; CPU devices as the engine sets them)

STEPS = 64


def _separate(i: Any, xs: tuple[jax.Array, ...]) -> tuple[jax.Array, ...]:
    t = jnp.min(jnp.stack([x[0] for x in xs[:10]]))
    return tuple(jnp.where(x > t, x * 1.0001 + 1.0, x - 0.5) for x in xs)


def _packed(i: Any, x: jax.Array) -> jax.Array:
    t = jnp.min(x[:10, 0])
    return jnp.where(x > t, x * 1.0001 + 1.0, x - 0.5)


def per_step(f: Callable[[Any], Any], arg: Any, reps: int = 20) -> tuple[float, float]:
    """Best of five: (wall, CPU) microseconds per loop step."""
    jax.block_until_ready(f(arg))
    best = []
    for _ in range(5):
        c0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        for _ in range(reps):
            jax.block_until_ready(f(arg))
        wall = time.perf_counter() - t0
        c1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu = c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime
        best.append((wall / reps / STEPS * 1e6, cpu / reps / STEPS * 1e6))
    return min(best)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--arrays", type=int, default=170, help="state arrays (the engine: ~170)")
    ap.add_argument("--lanes", type=int, default=512, help="lanes per array")
    args = ap.parse_args()
    xs = tuple(jnp.arange(args.lanes, dtype=jnp.float64) + k for k in range(args.arrays))
    separate = jax.jit(lambda xs: jax.lax.fori_loop(0, STEPS, _separate, xs))
    packed = jax.jit(lambda x: jax.lax.fori_loop(0, STEPS, _packed, x))
    for name, f, arg in [("separate", separate, xs), ("packed", packed, jnp.stack(xs))]:
        wall, cpu = per_step(f, arg)
        print(f"{name:9s} {args.arrays} x {args.lanes}: {wall:7.1f} us a step ({cpu:.1f} of CPU)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
