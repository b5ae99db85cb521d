"""``twin simulate``: run a line in the process core and report its KPIs."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "simulate",
        help="simulate a line and report throughput, WIP, lead time, OEE and the bottleneck",
        description=(
            "Simulate a line file with the exact discrete-event process core. Replications run "
            "in one batch. --json prints one JSON object (docs/simulate-json.md)."
        ),
    )
    p.add_argument("file", metavar="FILE", help="line file (YAML)")
    p.add_argument("--hours", type=float, required=True, help="simulated hours per replication")
    p.add_argument("--warmup-hours", type=float, default=0.0, help="hours discarded at the start")
    p.add_argument("--replications", type=int, default=10, help="independent runs (default 10)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.add_argument(
        "--engine",
        choices=("auto", "general", "serial"),
        default="auto",
        help="auto: the (max,+) fast path where it applies exactly, else the general engine",
    )
    p.add_argument("--json", action="store_true", help="print exactly one JSON object to stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from physics.process.api import simulate
    from scenes.lineparse import load_line

    spec = load_line(args.file)
    progress, close = _progress(enabled=not args.json and sys.stderr.isatty())
    try:
        result = simulate(
            spec,
            hours=args.hours,
            warmup_hours=args.warmup_hours,
            replications=args.replications,
            seed=args.seed,
            engine_name=args.engine,
            progress=progress,
        )
    finally:
        close()
    summary = result.summary()
    if args.json:
        json.dump(summary, sys.stdout)
        sys.stdout.write("\n")
    else:
        print(format_table(summary))
    return 0


def _progress(*, enabled: bool) -> tuple[Any, Any]:
    if not enabled:
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(total=1000, desc="simulating", unit="‰", file=sys.stderr, leave=False)

    def update(frac: float) -> None:
        bar.n = int(1000 * min(max(frac, 0.0), 1.0))
        bar.refresh()

    return update, bar.close


def format_table(s: dict[str, Any]) -> str:
    tp = s["throughput_per_hour"]
    lt = s["lead_time_s"]
    oee = s["oee"]
    lines = [
        f"line {s['line']}: {s['hours']:g} h (warm-up {s['warmup_hours']:g} h), "
        f"{s['replications']} replications, seed {s['seed']}, {s['engine']} engine",
        f"  throughput   {tp['mean']:10.2f} parts/h   95% CI [{tp['ci95'][0]:.2f}, {tp['ci95'][1]:.2f}]",
        f"  WIP          {s['wip']['mean']:10.2f} parts",
        f"  lead time    {_num(lt['mean']):>10} s mean, {_num(lt['p95'])} s p95",
        f"  OEE          {oee['mean']:10.1%}   (A {oee['availability']:.1%}, "
        f"P {oee['performance']:.1%}, Q {oee['quality']:.1%})",
        f"  bottleneck   {s['bottleneck']}",
        "",
        f"  {'station':<16}{'busy':>8}{'blocked':>9}{'starved':>9}{'down':>8}{'OEE':>8}"
        f"{'produced':>10}{'scrapped':>10}",
    ]
    for sid, st in s["stations"].items():
        mark = " *" if sid == s["bottleneck"] else ""
        lines.append(
            f"  {sid + mark:<16}{st['busy']:8.1%}{st['blocked']:9.1%}{st['starved']:9.1%}"
            f"{st['down']:8.1%}{st['oee']:8.1%}{st['produced']:10d}{st['scrapped']:10d}"
        )
    if s.get("lost_arrivals"):
        lines.append(f"  warning: {s['lost_arrivals']} arrivals lost to a full source queue")
    return "\n".join(lines)


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1f}"
