"""``twin demo``: the engine's main job on its embedded defaults, with no external services.

Until the streaming server and the browser viewer exist (issues 3 and 5) the demo runs the best
end-to-end path there is: validate the example lines, simulate one with the process core, and
render every example to a PNG. It prints what it did and where the pictures are.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="validate, simulate and render the example lines (no services needed)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--out", default="out/demo", help="folder for the rendered PNGs (default out/demo)"
    )
    p.add_argument("--line", default="bottling", help="example line to simulate (default bottling)")
    p.add_argument("--hours", type=float, default=4.0, help="simulated hours (default 4)")
    p.add_argument("--replications", type=int, default=8, help="replications (default 8)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from physics.process.api import simulate
    from scenes.lineparse import load_line
    from scenes.render import render_line
    from twin.cli import EXAMPLES_DIR
    from twin.commands.render import _quiet_vtk
    from twin.commands.simulate import format_table

    files = sorted(
        f
        for f in EXAMPLES_DIR.glob("*.yaml")
        if not f.name.endswith((".space.yaml", ".scenario.yaml"))
    )
    print(f"1. validating {len(files)} example lines in {EXAMPLES_DIR}")
    specs = {}
    for f in files:
        specs[f.stem] = load_line(f)
        s = specs[f.stem]
        print(
            f"   {f.name}: ok ({len(s.stations)} stations, {len(s.buffers)} buffers) - {s.description}"
        )
    if args.line not in specs:
        print(f"error: no example line '{args.line}' (have: {', '.join(specs)})")
        return 1
    spec = specs[args.line]
    print(
        f"\n2. simulating '{spec.name}': {args.hours:g} h x {args.replications} replications "
        "in one batch (the first run compiles, which takes a few seconds)"
    )
    t0 = time.perf_counter()
    result = simulate(
        spec,
        hours=args.hours,
        warmup_hours=min(1.0, args.hours / 4),
        replications=args.replications,
        seed=1,
    )
    print(f"   done in {time.perf_counter() - t0:.1f} s\n")
    print(format_table(result.summary()))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"\n3. rendering the example lines to {out}/")
    _quiet_vtk()
    for name, s in specs.items():
        path = out / f"{name}.png"
        render_line(s, path, size=(1400, 800))
        print(f"   {path}")
    print(
        "\nThe live viewer is not built yet (streaming: issue 3, browser viewer: issue 5), so there "
        "is no URL to open; the pictures above show the lines."
    )
    return 0
