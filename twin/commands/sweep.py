"""``twin sweep``: evaluate design variants of a line, rank them, and show or export the best.

    twin sweep FILE --space SPACE.yaml [--variants N] [--generator G] [--backend local|ray]
               [--ray-address ADDR] --out results.parquet [--csv] [--plot FRONT.png]
    twin sweep show RESULTS [--top N] [--write-line N -o FILE] [--json]

See ``docs/design-space.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "sweep",
        help="evaluate design variants of a line (grid, random, LHS, NSGA-II) and rank them",
        usage=(
            "twin sweep FILE --space SPACE.yaml [--variants N] [--generator G] "
            "[--backend local|ray] --out RESULTS.parquet\n"
            "       twin sweep show RESULTS [--top N] [--write-line VARIANT -o FILE] [--json]"
        ),
        description=(
            "Evaluate variants of a line file described by a design-space file "
            "(docs/design-space.md) in batches through the process core, with common random "
            "numbers and replications, and write a results table, the Pareto front as a PNG, "
            "and a summary. 'twin sweep show RESULTS' lists the best variants of a results "
            "table and writes any variant out as a line file."
        ),
    )
    p.add_argument("file", metavar="FILE", help="line file (YAML), or 'show'")
    p.add_argument("results", metavar="RESULTS", nargs="?", help="with 'show': a results table")
    run_g = p.add_argument_group("sweeping")
    run_g.add_argument("--space", metavar="SPACE", help="design-space file (YAML)")
    run_g.add_argument(
        "--variants", type=int, help="variants to evaluate (default: grid all, else 64)"
    )
    run_g.add_argument(
        "--generator",
        choices=("grid", "random", "lhs", "nsga2"),
        default="lhs",
        help="how variants are proposed (default lhs)",
    )
    run_g.add_argument("--backend", choices=("local", "ray"), default="local")
    run_g.add_argument(
        "--ray-address", metavar="ADDR", help="an existing Ray cluster (default: start a local one)"
    )
    run_g.add_argument("--hours", type=float, help="simulated hours (overrides the space file)")
    run_g.add_argument("--warmup-hours", type=float, help="warm-up hours (overrides)")
    run_g.add_argument("--replications", type=int, help="replications per variant (overrides)")
    run_g.add_argument("--seed", type=int, help="random seed (overrides)")
    run_g.add_argument("--batch", type=int, help="variants per batch (overrides)")
    run_g.add_argument("--out", metavar="RESULTS", help="results table (.parquet; .csv with --csv)")
    run_g.add_argument("--csv", action="store_true", help="write CSV instead of Parquet")
    run_g.add_argument(
        "--plot", metavar="PNG", help="Pareto front plot (default: RESULTS with .png)"
    )
    show_g = p.add_argument_group("show")
    show_g.add_argument("--top", type=int, default=10, help="rows to list (default 10)")
    show_g.add_argument(
        "--write-line", type=int, metavar="VARIANT", help="write this variant as a line file"
    )
    show_g.add_argument("-o", "--output", metavar="FILE", help="where --write-line writes")
    p.add_argument("--json", action="store_true", help="print JSON (the front, or the rows)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from twin.design.space import SpaceFileError

    try:
        if args.file == "show":
            return _show(args)
        return _sweep(args)
    except SpaceFileError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1


def _usage(msg: str) -> int:
    print(f"twin sweep: error: {msg}", file=sys.stderr)
    return 2


def _sweep(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from scenes.lineparse import load_line
    from twin.design import results
    from twin.design.evaluate import Backend
    from twin.design.generators import Generator
    from twin.design.space import load_space
    from twin.design.sweep import SweepConfig, run_sweep

    if args.results is not None:
        return _usage(f"unexpected argument {args.results!r} (did you mean 'twin sweep show'?)")
    if not args.space or not args.out:
        return _usage("--space and --out are required")
    line = load_line(args.file)
    space = load_space(args.space, line)
    sim = space.simulation
    overrides = {
        "hours": args.hours,
        "warmup_hours": args.warmup_hours,
        "replications": args.replications,
        "seed": args.seed,
        "batch": args.batch,
    }
    sim = replace(sim, **{k: v for k, v in overrides.items() if v is not None})
    if sim.replications < 1 or sim.batch < 1 or not (0 <= sim.warmup_hours < sim.hours):
        return _usage("need replications >= 1, batch >= 1 and 0 <= warmup-hours < hours")
    if args.variants is not None and args.variants < 1:
        return _usage("--variants must be >= 1")
    cfg = SweepConfig(
        generator=Generator(args.generator),
        variants=args.variants,
        sim=sim,
        backend=Backend(args.backend),
        ray_address=args.ray_address,
    )
    progress, close = _progress(enabled=sys.stderr.isatty())
    try:
        df = run_sweep(space, line, cfg, progress=progress)
    finally:
        close()
    meta = {
        "design": space.name,
        "line": str(Path(args.file).resolve()),
        "space": str(Path(args.space).resolve()),
        "objectives": [[o.kpi.value, o.sense.value] for o in space.objectives],
        "parameters": [p.name for p in space.parameters],
        "currency": space.cost.currency,
        "generator": cfg.generator.value,
        "backend": cfg.backend.value,
        "hours": sim.hours,
        "warmup_hours": sim.warmup_hours,
        "replications": sim.replications,
        "seed": sim.seed,
    }
    out = results.write_table(df, args.out, meta, csv=args.csv)
    png = Path(args.plot) if args.plot else out.with_suffix(".png")
    results.plot_front(df, meta, png)
    front = results.pareto_front(df, meta)
    if args.json:
        json.dump({"results": str(out), "plot": str(png), "front": front}, sys.stdout)
        sys.stdout.write("\n")
        return 0
    print(
        f"{space.name}: {len(df)} variants ({cfg.generator.value}, {sim.replications} "
        f"replications of {sim.hours:g} h, seed {sim.seed}), {len(front)} on the Pareto front"
    )
    print(format_rows(results.best(df, results.objectives_of(meta), 10), meta))
    print(f"results: {out}\nPareto front plot: {png}")
    return 0


def _show(args: argparse.Namespace) -> int:
    from scenes.lineparse import load_line
    from twin.design import results
    from twin.design.linefile import serialize_line
    from twin.design.space import load_space
    from twin.design.sweep import variant_line

    if args.results is None:
        return _usage("'twin sweep show' needs a results table")
    df, meta = results.read_table(args.results)
    if args.write_line is not None:
        if not args.output:
            return _usage("--write-line needs -o FILE")
        rows = df[df["variant"] == args.write_line]
        if rows.empty:
            return _usage(f"no variant {args.write_line} in {args.results}")
        line = load_line(meta["line"])
        space = load_space(meta["space"], line)
        spec, values = variant_line(space, line, rows.iloc[0])
        row = rows.iloc[0]
        header = (
            f"Variant {args.write_line} of design '{meta['design']}' ({meta['space']})\n"
            f"base line: {meta['line']}\n"
            + "".join(f"{k} = {v}\n" for k, v in values.items())
            + f"throughput {row['throughput']:.2f} parts/h, cost {row['cost']:.0f} "
            f"{meta.get('currency', '')}"
        )
        Path(args.output).write_text(serialize_line(spec, header=header), encoding="utf-8")
        print(f"variant {args.write_line} written to {args.output}")
        return 0
    objectives = results.objectives_of(meta)
    top = results.best(df, objectives, args.top)
    if args.json:
        json.dump(results.pareto_front(df, meta), sys.stdout)
        sys.stdout.write("\n")
        return 0
    print(
        f"{meta['design']}: {len(df)} variants, {int(df['pareto'].sum())} on the Pareto front "
        f"({', '.join(f'{k} {s}' for k, s in meta['objectives'])})"
    )
    print(format_rows(top, meta))
    return 0


def format_rows(df: Any, meta: dict[str, Any]) -> str:
    params = list(meta["parameters"])
    head = ["variant", "front", *params, "throughput", "wip", "lead_time", "oee", "cost"]
    rows = [head]
    for _, r in df.iterrows():
        cells = [str(int(r["variant"])), "*" if r["pareto"] else ("x" if not r["feasible"] else "")]
        for p in params:
            v = r[p]
            cells.append(f"{v:.4g}" if isinstance(v, float) else str(v))
        cells += [
            f"{r['throughput']:.1f} ±{(r['throughput_hi'] - r['throughput_lo']) / 2:.1f}",
            f"{r['wip']:.2f}",
            f"{r['lead_time']:.0f}",
            f"{r['oee']:.3f}",
            f"{r['cost']:.4g}",
        ]
        rows.append(cells)
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    return "\n".join(
        "  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows
    )


def _progress(*, enabled: bool) -> tuple[Any, Any]:
    if not enabled:
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(total=1000, desc="sweeping", unit="‰", file=sys.stderr, leave=False)

    def update(frac: float) -> None:
        bar.n = int(1000 * min(max(frac, 0.0), 1.0))
        bar.refresh()

    return update, bar.close
