"""``twin demo``: the engine's main job on its embedded defaults, with no external services.

It validates the example lines, simulates one with the process core (a batch of replications,
with a KPI table), renders every example to a PNG, and then runs a plant and its live twin
together: a simulated plant reports its tags like a gateway, and ``twin serve`` mirrors it from
that telemetry and streams it to viewers, with a generated token, printing where to connect. With
no broker named the plant feeds the twin in-process (``--source embedded``); with ``--mqtt URL`` it
publishes through that broker (``twin gateway-sim``) and the twin subscribes. ``--sim`` serves a
simulated line at ``--speed`` instead. It runs until interrupted (Ctrl-C), or ``--serve-seconds``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="validate, simulate, render the examples, then run a plant and its live twin",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--out", default="out/demo", help="folder for the rendered PNGs (default out/demo)"
    )
    p.add_argument("--line", default="bottling", help="example line to simulate (default bottling)")
    p.add_argument("--hours", type=float, default=4.0, help="simulated hours (default 4)")
    p.add_argument("--replications", type=int, default=8, help="replications (default 8)")
    p.add_argument("--port", type=int, default=8765, help="port to serve on (default 8765)")
    p.add_argument(
        "--speed",
        type=float,
        default=10.0,
        help="simulated seconds per second while serving (default 10)",
    )
    p.add_argument(
        "--mqtt",
        metavar="URL",
        help="run the plant and the twin through this MQTT broker (mqtt://HOST:PORT)",
    )
    p.add_argument(
        "--sim",
        action="store_true",
        help="serve a simulated line (at --speed) instead of a plant and its mirror",
    )
    p.add_argument(
        "--serve-seconds",
        type=float,
        default=None,
        help="stop serving after this many seconds (default: until Ctrl-C)",
    )
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
    from twin.commands import serve

    source = None
    gateway = None
    if args.sim:
        print(f"\n4. serving '{spec.name}' simulated at {args.speed:g}x speed (Ctrl-C stops)")
    elif args.mqtt:
        import subprocess
        import sys

        from twin.live.sources import redact_url

        print(
            f"\n4. a plant publishing to {redact_url(args.mqtt)}, and its live twin (Ctrl-C stops)"
        )
        gateway = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "twin",
                "gateway-sim",
                str(EXAMPLES_DIR / f"{args.line}.yaml"),
                "--mqtt",
                args.mqtt,
                "--noise",
                "0.01",
            ]
        )
        source = args.mqtt
    else:
        print(f"\n4. a plant and its live twin of '{spec.name}', in-process (Ctrl-C stops)")
        source = "embedded"
    serve_args = argparse.Namespace(
        file=str(EXAMPLES_DIR / f"{args.line}.yaml"),
        host="127.0.0.1",
        port=args.port,
        tick_hz=30.0,
        tokens=None,
        speed=args.speed,
        seed=1,
        audit=str(out / "audit.jsonl"),
        assets=str(out / "assets"),
        origin=[],
        tls_cert=None,
        tls_key=None,
        duration=args.serve_seconds,
        source=source,
        record=str(out / "record.sqlite") if source else "none",
    )
    try:
        return serve.run(serve_args)
    finally:
        if gateway is not None:
            gateway.terminate()
            gateway.wait(30)
