"""The results of a sweep: one table row per variant (Parquet, or CSV on request), the Pareto
front as plain data (for the viewer) and as a PNG plot.

Columns (``docs/design-space.md``, "The results table"): ``variant``, ``generator``, ``layout``,
one column per parameter, ``engine``; for each KPI (throughput, wip, lead_time, oee) its mean and
the bounds ``KPI_lo``/``KPI_hi`` of its 95% confidence interval over the replications; ``cost``
and its parts (``cost_machines``, ``cost_buffers``, ``cost_conveyors``, ``cost_floor``,
``floor_area_m2``); ``bottleneck``; ``violation`` (0: every constraint met) and ``feasible``;
``rank`` (0: on the Pareto front of the objectives), ``crowding`` and ``pareto``.

What ``twin sweep show`` needs to rebuild a variant (the line and space files, the objectives)
travels with the table: in the Parquet schema's metadata under ``twin``, or in a
``FILE.meta.json`` beside a CSV file.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from scenes.errors import ConfigError
from twin.design import pareto
from twin.design.space import Kpi, Objective, Sense

META_KEY = b"twin"
FORMAT = "twin-sweep/1"
STAT_KPIS = (Kpi.THROUGHPUT, Kpi.WIP, Kpi.LEAD_TIME, Kpi.OEE)


def objective_matrix(df: Any, objectives: list[Objective]) -> np.ndarray:
    """(N, M) objectives to minimize (maximized KPIs negated)."""
    cols = [df[o.kpi.value].to_numpy(dtype=np.float64) * o.sign for o in objectives]
    return np.stack(cols, axis=1) if cols else np.zeros((len(df), 0))


def rank(df: Any, objectives: list[Objective]) -> Any:
    """``df`` with ``rank``, ``crowding`` and ``pareto`` recomputed over all its rows."""
    f = objective_matrix(df, objectives)
    viol = df["violation"].to_numpy(dtype=np.float64)
    r = pareto.non_dominated_sort(f, viol)
    out = df.copy()
    out["rank"] = r
    out["crowding"] = pareto.crowding(f, r)
    out["pareto"] = (r == 0) & (viol <= 0)
    return out


def best(df: Any, objectives: list[Objective], top: int | None = None) -> Any:
    """Rows by rank, then by the first objective (best first), then by crowding."""
    key = df[objectives[0].kpi.value].to_numpy(dtype=np.float64) * objectives[0].sign
    order = np.lexsort((-df["crowding"].to_numpy(), key, df["rank"].to_numpy()))
    out = df.iloc[order]
    return out if top is None else out.head(top)


def pareto_front(df: Any, meta: dict[str, Any]) -> list[dict[str, Any]]:
    """The Pareto front as plain data (JSON-ready), best first by the first objective::

    {"variant": 12, "layout": "base", "generator": "lhs",
     "parameters": {"c2_capacity": 60, ...},
     "objectives": {"throughput": {"mean": 2412.0, "ci95": [2398.1, 2425.9]}, ...},
     "cost": 2.1e6, "bottleneck": "filler"}
    """
    objectives = objectives_of(meta)
    front = best(df[df["pareto"]], objectives)
    out = []
    for _, row in front.iterrows():
        objs: dict[str, Any] = {}
        for o in objectives:
            k = o.kpi.value
            entry: dict[str, Any] = {"mean": _num(row[k]), "sense": o.sense.value}
            if o.kpi in STAT_KPIS:
                entry["ci95"] = [_num(row[f"{k}_lo"]), _num(row[f"{k}_hi"])]
            objs[k] = entry
        out.append(
            {
                "variant": int(row["variant"]),
                "layout": str(row["layout"]),
                "generator": str(row["generator"]),
                "parameters": {p: _plain(row[p]) for p in meta["parameters"]},
                "objectives": objs,
                "cost": _num(row["cost"]),
                "bottleneck": str(row["bottleneck"]),
            }
        )
    return out


def objectives_of(meta: dict[str, Any]) -> list[Objective]:
    return [Objective(kpi=Kpi(k), sense=Sense(s)) for k, s in meta["objectives"]]


def _num(x: Any) -> float | None:
    v = float(x)
    return v if math.isfinite(v) else None


def _plain(x: Any) -> Any:
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return float(x)
    return x


# -- files -----------------------------------------------------------------------------------------
def write_table(df: Any, path: str | Path, meta: dict[str, Any], *, csv: bool = False) -> Path:
    """Write the table as Parquet (default) or CSV, with ``meta`` beside it."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, **meta}
    if csv:
        df.to_csv(p, index=False)
        Path(f"{p}.meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        return p
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    schema_meta = dict(table.schema.metadata or {})
    schema_meta[META_KEY] = json.dumps(meta).encode("utf-8")
    pq.write_table(table.replace_schema_metadata(schema_meta), p)
    return p


def read_table(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """The table and its metadata, from a Parquet file or a CSV file with its ``.meta.json``."""
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such results file")
    try:
        if p.suffix.lower() == ".csv":
            df = pd.read_csv(p)
            meta = json.loads(Path(f"{p}.meta.json").read_text(encoding="utf-8"))
        else:
            import pyarrow.parquet as pq

            table = pq.read_table(p)
            raw = (table.schema.metadata or {}).get(META_KEY)
            if raw is None:
                raise ConfigError(f"{p}: not a results table of 'twin sweep' (no metadata)")
            meta = json.loads(raw)
            df = table.to_pandas()
    except (OSError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{p}: cannot read the results table: {exc}") from exc
    if meta.get("format") != FORMAT:
        raise ConfigError(f"{p}: unknown results format {meta.get('format')!r}")
    return df, meta


def plot_front(df: Any, meta: dict[str, Any], path: str | Path) -> Path:
    """A PNG of the first two objectives: every variant, the front highlighted (with 95% CI
    bars where the KPI has them) and the base line marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    objectives = objectives_of(meta)
    if len(objectives) == 1:
        x_kpi, y_kpi = "variant", objectives[0].kpi.value
    else:
        x_kpi, y_kpi = objectives[0].kpi.value, objectives[1].kpi.value
    fig, ax = plt.subplots(figsize=(7.5, 5.0), dpi=120)
    feas = df[df["feasible"]]
    infeas = df[~df["feasible"]]
    ax.scatter(feas[x_kpi], feas[y_kpi], s=12, c="#9aa5b1", label="variants", zorder=1)
    if len(infeas):
        ax.scatter(infeas[x_kpi], infeas[y_kpi], s=12, marker="x", c="#d62728", label="infeasible")
    front = df[df["pareto"]].sort_values(x_kpi)

    def err(k: str) -> Any:
        if k not in [s.value for s in STAT_KPIS]:
            return None
        return np.abs(np.stack([front[k] - front[f"{k}_lo"], front[f"{k}_hi"] - front[k]]))

    ax.errorbar(
        front[x_kpi],
        front[y_kpi],
        xerr=err(x_kpi),
        yerr=err(y_kpi),
        fmt="o-",
        ms=5,
        c="#1f77b4",
        ecolor="#7fb2dd",
        lw=1.2,
        label=f"Pareto front ({len(front)})",
        zorder=3,
    )
    base = df[df["generator"] == "base"]
    if len(base):
        ax.scatter(
            base[x_kpi], base[y_kpi], s=90, marker="*", c="#ff7f0e", label="base line", zorder=4
        )
    units = {
        "throughput": "parts/h",
        "wip": "parts",
        "lead_time": "s",
        "oee": "",
        "cost": meta.get("currency", ""),
        "variant": "",
    }
    ax.set_xlabel(f"{x_kpi} {('(' + units[x_kpi] + ')') if units[x_kpi] else ''}")
    ax.set_ylabel(f"{y_kpi} {('(' + units[y_kpi] + ')') if units[y_kpi] else ''}")
    senses = ", ".join(f"{k} {s}" for k, s in meta["objectives"])
    ax.set_title(f"{meta.get('design', '')}: {len(df)} variants ({senses})", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p)
    plt.close(fig)
    return p
