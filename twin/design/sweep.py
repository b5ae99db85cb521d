"""The sweep driver: propose variants, evaluate them in batches, cost them, rank them.

:func:`run_sweep` chains the other modules of :mod:`twin.design` for ``twin sweep``; it reads no
files (the CLI does) and returns the results table (a pandas DataFrame).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from scenes.errors import ConfigError
from scenes.spec import LineSpec
from twin.design import cost, generators, results
from twin.design.evaluate import Backend, VariantResult, evaluate_variants
from twin.design.generators import Generator
from twin.design.space import DesignSpace, Kpi, Simulation, Value, apply

log = logging.getLogger(__name__)

Variant = dict[str, Value]
#: Variants a sweep evaluates when ``--variants`` is not given (the grid: all of its points).
DEFAULT_VARIANTS = 64


@dataclass(frozen=True, slots=True, kw_only=True)
class SweepConfig:
    generator: Generator = Generator.LHS
    variants: int | None = None  # None: the whole grid, or DEFAULT_VARIANTS
    sim: Simulation = field(default_factory=Simulation)
    backend: Backend = Backend.LOCAL
    ray_address: str | None = None
    include_base: bool = True  # variant 0 is the line as given


@dataclass(slots=True)
class _Table:
    """Rows accumulated over the sweep (one per evaluated variant)."""

    space: DesignSpace
    line: LineSpec
    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(
        self,
        variants: Sequence[Variant],
        gen: str,
        specs: Sequence[LineSpec],
        layouts: Sequence[str],
        res: Sequence[VariantResult],
    ) -> None:
        layout_lines = dict(self.space.layouts) or {"base": self.line}
        for v, spec, layout, r in zip(variants, specs, layouts, res, strict=True):
            row: dict[str, Any] = {"variant": len(self.rows), "generator": gen, "layout": layout}
            row.update(v)
            row["engine"] = r.engine
            for k in results.STAT_KPIS:
                s = getattr(r, k.value)
                row[k.value], row[f"{k.value}_lo"], row[f"{k.value}_hi"] = s.mean, s.lo, s.hi
            c = cost.breakdown(self.space.cost, spec, layout_lines[layout])
            row["cost"] = c.total
            row["cost_machines"] = c.machines
            row["cost_buffers"] = c.buffers
            row["cost_conveyors"] = c.conveyors
            row["cost_floor"] = c.floor
            row["floor_area_m2"] = c.floor_area_m2
            row["bottleneck"] = r.bottleneck
            nums = {k: float(x) for k, x in v.items() if not isinstance(x, str)}
            nums.update({k.value: float(row[k.value]) for k in Kpi})
            row["violation"] = float(sum(k.violation(nums) for k in self.space.constraints))
            row["feasible"] = row["violation"] <= 0
            self.rows.append(row)

    def frame(self) -> Any:
        import pandas as pd

        df = pd.DataFrame(self.rows)
        return results.rank(df, list(self.space.objectives))


def run_sweep(
    space: DesignSpace,
    line: LineSpec,
    cfg: SweepConfig,
    *,
    progress: Callable[[float], None] | None = None,
) -> Any:
    """Evaluate the variants ``cfg`` asks for; returns the ranked results table."""
    gen = cfg.generator
    n = cfg.variants
    rng = np.random.default_rng(cfg.sim.seed)
    table = _Table(space=space, line=line)
    base: list[Variant] = [space.base_values(line)] if cfg.include_base else []
    budget = n if n is not None else (None if gen == Generator.GRID else DEFAULT_VARIANTS)
    # Progress: the share of the budget evaluated so far (NSGA-II: generation by generation).
    total = budget or (generators.grid_size(space) + len(base))
    done = 0

    def evaluate(vs: list[Variant], label: Sequence[str]) -> None:
        nonlocal done
        if not vs:
            return

        def prog(f: float) -> None:
            if progress is not None:
                progress(min(1.0, (done + f * len(vs)) / max(total, 1)))

        p, res = evaluate_variants(
            space,
            line,
            vs,
            cfg.sim,
            backend=cfg.backend,
            ray_address=cfg.ray_address,
            progress=prog,
        )
        for lab in sorted(set(label), key=list(label).index):
            idx = [i for i, x in enumerate(label) if x == lab]
            table.add(
                [vs[i] for i in idx],
                lab,
                [p.specs[i] for i in idx],
                [p.layouts[i] for i in idx],
                [res[i] for i in idx],
            )
        done += len(vs)

    if gen == Generator.GRID:
        vs = generators.grid(space, None if budget is None else budget - len(base))
        evaluate(base + vs, ["base"] * len(base) + ["grid"] * len(vs))
    elif gen in (Generator.RANDOM, Generator.LHS):
        assert budget is not None
        draw = generators.random if gen == Generator.RANDOM else generators.lhs
        vs = draw(space, max(0, budget - len(base)), rng)
        evaluate(base + vs, ["base"] * len(base) + [gen.value] * len(vs))
    else:
        assert budget is not None
        _nsga2(space, base, budget, rng, evaluate, table)
    df = table.frame()
    if space.gradient.refine > 0:
        df = _refine(space, line, df, cfg, evaluate, table)
    return df


def _nsga2(
    space: DesignSpace,
    base: list[Variant],
    budget: int,
    rng: np.random.Generator,
    evaluate: Callable[[list[Variant], Sequence[str]], None],
    table: _Table,
) -> None:
    """NSGA-II: a Latin-hypercube population (with the base line), then generations of
    offspring, each evaluated in one batch, survivors chosen among parents and children."""
    pop_size = min(space.nsga2.population, budget)
    if pop_size < 4:
        raise ConfigError(f"NSGA-II needs --variants >= 4, got {budget}")
    names = [p.name for p in space.parameters]
    first = generators.lhs(space, pop_size - len(base), rng)
    evaluate(base + first, ["base"] * len(base) + ["nsga2"] * len(first))
    seen = {tuple(r[k] for k in names) for r in table.rows}
    population = list(range(len(table.rows)))
    objectives = list(space.objectives)
    while len(table.rows) < budget:
        df = table.frame()
        f = results.objective_matrix(df, objectives)
        viol = df["violation"].to_numpy(dtype=np.float64)
        u = np.stack(
            [generators.encode(space, {k: df.iloc[i][k] for k in names}) for i in population]
        )
        kids = generators.offspring(
            space,
            u,
            f[population],
            viol[population],
            min(pop_size, budget - len(table.rows)),
            rng,
            seen=seen,
        )
        if not kids:
            log.info("NSGA-II: no new variant left to propose; stopping early")
            break
        start = len(table.rows)
        evaluate(kids, ["nsga2"] * len(kids))
        pool = population + list(range(start, len(table.rows)))
        df = table.frame()
        f = results.objective_matrix(df, objectives)
        viol = df["violation"].to_numpy(dtype=np.float64)
        keep = generators.select_survivors(f[pool], viol[pool], pop_size)
        population = [pool[i] for i in keep]


def _refine(
    space: DesignSpace,
    line: LineSpec,
    df: Any,
    cfg: SweepConfig,
    evaluate: Callable[[list[Variant], Sequence[str]], None],
    table: _Table,
) -> Any:
    """Gradient steps from the best ``refine`` front variants (serial layouts only)."""
    from twin.design import gradient

    names = [p.name for p in space.parameters]
    starts = results.best(df[df["pareto"]], list(space.objectives), space.gradient.refine)
    new: list[Variant] = []
    for _, row in starts.iterrows():
        v = {k: _plain(row[k]) for k in names}
        new += gradient.refine(space, line, v, seed=cfg.sim.seed)
    if not new:
        log.info("gradient refinement: no serial variant with a continuous processing time")
        return df
    evaluate(new, ["gradient"] * len(new))
    return table.frame()


def _plain(x: Any) -> Value:
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return float(x)
    if isinstance(x, int | float | str):
        return x
    return str(x)


def variant_line(space: DesignSpace, line: LineSpec, row: Any) -> tuple[LineSpec, dict[str, Value]]:
    """The line of one table row (a pandas Series) and its parameter values."""
    values = {p.name: _plain(row[p.name]) for p in space.parameters}
    for p in space.numeric:
        if p.integer:
            values[p.name] = int(values[p.name])
    _, layout = space.layout_of(values, line)
    return apply(layout, space, values), values
