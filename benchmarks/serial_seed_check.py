"""The serial fast path's results for one seed, to compare across machines and backends.

A lane's random numbers are keyed by the lane and the number of each part (and failure), never
by the chunk, so a CPU (128-part chunks) and a GPU (1,024) draw the same numbers for a seed;
only the last bits of their arithmetic may differ.

    .venv/bin/python benchmarks/serial_seed_check.py cpu.npz          # on one machine
    python3 benchmarks/serial_seed_check.py gpu.npz                   # on another
    .venv/bin/python benchmarks/serial_seed_check.py --compare cpu.npz gpu.npz
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from physics.process import api, serial
from scenes.lineparse import load_line

FIELDS = ("delivered", "lt_sum", "lt_hist", "wip_int", "busy", "down", "blocked", "produced")


def run(out: str, replications: int, hours: float) -> None:
    spec = load_line(Path(__file__).resolve().parent / "lines" / "ten_serial.yaml")
    model, params = serial.build_serial(spec)
    params = serial._with_horizon(params, hours, 1.0)
    pb = jax.tree.map(lambda a: jax.numpy.broadcast_to(a, (replications, *a.shape)), params)
    s = serial.run(model, pb, api.replication_keys(1, 1, replications))
    np.savez(out, **{k: np.asarray(getattr(s, k)) for k in FIELDS})
    print(f"{jax.default_backend()}: {int(np.asarray(s.delivered).sum())} parts delivered")


def compare(a_path: str, b_path: str) -> int:
    a, b = np.load(a_path), np.load(b_path)
    worst = 0
    for k in FIELDS:
        x, y = a[k], b[k]
        if x.dtype.kind in "iu":
            same = np.array_equal(x, y)
            print(f"{k:10} {'equal' if same else f'{np.sum(x != y)} differ'}")
            worst = max(worst, 0 if same else 1)
        else:
            rel = float(np.max(np.abs(x - y) / np.maximum(np.abs(x), 1e-300)))
            print(f"{k:10} max relative difference {rel:.1e}")
            worst = max(worst, 0 if rel < 1e-9 else 1)
    return worst


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("files", nargs="+", help="where to write (one file) or two to --compare")
    ap.add_argument("--compare", action="store_true", help="compare two files")
    ap.add_argument("--replications", type=int, default=64)
    ap.add_argument("--hours", type=float, default=8.0)
    args = ap.parse_args()
    if args.compare:
        if len(args.files) != 2:
            ap.error("--compare takes two files")
        return compare(*args.files)
    run(args.files[0], args.replications, args.hours)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
