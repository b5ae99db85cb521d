"""The process core's entry points: simulate a line, evaluate batches of variants.

Host/device transfer happens here and in ``kpi.compute`` only. Batches are split into chunks
of at most ``max_batch`` lanes so memory stays bounded; common random numbers (the same random
stream for replication r of every variant) are on by default, which makes comparisons between
variants far sharper than independent streams would.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from physics.process import engine, kpi
from physics.process.model import Model, Params, build, with_horizon
from scenes.errors import SimulationError
from scenes.spec import LineSpec

# Two-sided 95% Student t quantiles for 1..30 degrees of freedom.
_T975 = (
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
)


def t975(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom."""
    if df < 1:
        return math.inf
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def mean_ci(x: np.ndarray) -> tuple[float, tuple[float, float]]:
    """Mean and 95% confidence interval of independent replications."""
    x = np.asarray(x, dtype=np.float64)
    m = float(np.mean(x))
    if x.size < 2:
        return m, (m, m)
    h = t975(x.size - 1) * float(np.std(x, ddof=1)) / math.sqrt(x.size)
    return m, (m - h, m + h)


def batch_params(params: Params, n: int) -> Params:
    """``params`` repeated along a new leading axis of size ``n``."""
    out: Params = jax.tree.map(lambda a: jnp.broadcast_to(a, (n, *a.shape)), params)
    return out


def stack_params(variants: list[Params]) -> Params:
    """Stack single-variant parameters into one batch (leading axis)."""
    out: Params = jax.tree.map(lambda *a: jnp.stack(a), *variants)
    return out


def replication_keys(
    seed: int, n_variants: int, replications: int, *, crn: bool = True
) -> jax.Array:
    """PRNG keys, variant-major: lane ``v * R + r``. With ``crn`` every variant shares stream r."""
    base = jax.random.PRNGKey(seed)
    rep = jnp.arange(replications)
    if crn:
        keys = jax.vmap(lambda r: jax.random.fold_in(base, r))(rep)
        return jnp.tile(keys, (n_variants, 1))
    var = jnp.repeat(jnp.arange(n_variants), replications)
    reps = jnp.tile(rep, n_variants)
    return jax.vmap(lambda v, r: jax.random.fold_in(jax.random.fold_in(base, 1_000_003 + v), r))(
        var, reps
    )


def evaluate(
    model: Model,
    params: Params,
    *,
    replications: int = 1,
    seed: int = 0,
    crn: bool = True,
    max_batch: int = 4096,
    chunk: int = 2048,
    progress: Callable[[float], None] | None = None,
) -> kpi.RunKPIs:
    """Run every variant of ``params`` (leading axis V) ``replications`` times.

    Returns KPIs with V*R rows, variant-major (row ``v * R + r``). Horizon and warm-up come from
    the parameters (:func:`physics.process.model.with_horizon`), and may differ per variant.
    """
    if params.horizon.ndim != 1 or params.horizon.shape[0] == 0:
        raise SimulationError("evaluate() needs batched params (use batch_params or stack_params)")
    n_var = int(params.horizon.shape[0])
    if np.any(np.asarray(params.horizon) <= 0):
        raise SimulationError("horizon not set: use physics.process.model.with_horizon")
    keys = replication_keys(seed, n_var, replications, crn=crn)
    lanes = jax.tree.map(lambda a: jnp.repeat(a, replications, axis=0), params)
    total = n_var * replications
    parts: list[kpi.RunKPIs] = []
    n_chunks = math.ceil(total / max_batch)
    for c in range(n_chunks):
        lo, hi = c * max_batch, min(total, (c + 1) * max_batch)
        p_c = jax.tree.map(lambda a, lo=lo, hi=hi: a[lo:hi], lanes)
        done_before = c / n_chunks

        def prog(f: float, done_before: float = done_before) -> None:
            if progress is not None:
                progress(done_before + f / n_chunks)

        state = engine.run(model, p_c, keys[lo:hi], chunk=chunk, progress=prog)
        parts.append(kpi.compute(model, state, p_c))
    return _concat(parts)


def _concat(parts: list[kpi.RunKPIs]) -> kpi.RunKPIs:
    if len(parts) == 1:
        return parts[0]
    from dataclasses import fields

    kw: dict[str, Any] = {}
    for f in fields(kpi.RunKPIs):
        vals = [getattr(p, f.name) for p in parts]
        kw[f.name] = vals[0] if f.name == "station_ids" else np.concatenate(vals)
    return kpi.RunKPIs(**kw)


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulationResult:
    """Replications of one line: the raw per-replication KPIs and how they were obtained."""

    spec: LineSpec
    hours: float
    warmup_hours: float
    replications: int
    seed: int
    engine: str  # "general" or "serial" (the (max,+) fast path)
    kpis: kpi.RunKPIs

    def summary(self) -> dict[str, Any]:
        """The documented JSON object of ``twin simulate --json`` (docs/simulate-json.md)."""
        k = self.kpis
        tp_mean, tp_ci = mean_ci(k.throughput_per_hour)
        line_oee = k.line_oee()
        bn_counts = np.bincount(k.bottleneck, minlength=len(k.station_ids))
        bottleneck = k.station_ids[int(np.argmax(bn_counts))]
        stations = {}
        for i, sid in enumerate(k.station_ids):
            stations[sid] = {
                "busy": float(np.mean(k.busy[:, i])),
                "blocked": float(np.mean(k.blocked[:, i])),
                "starved": float(np.mean(k.starved[:, i])),
                "down": float(np.mean(k.down[:, i])),
                "produced": round(float(np.mean(k.produced[:, i]))),
                "scrapped": round(float(np.mean(k.scrapped[:, i]))),
                "oee": float(np.mean(k.oee[:, i])),
            }
        wip_mean, wip_ci = mean_ci(k.wip)
        lt = k.lead_time_mean[np.isfinite(k.lead_time_mean)]
        p95 = k.lead_time_p95[np.isfinite(k.lead_time_p95)]
        return {
            "line": self.spec.name,
            "hours": self.hours,
            "warmup_hours": self.warmup_hours,
            "replications": self.replications,
            "seed": self.seed,
            "engine": self.engine,
            "throughput_per_hour": {"mean": tp_mean, "ci95": [tp_ci[0], tp_ci[1]]},
            "wip": {"mean": wip_mean, "ci95": [wip_ci[0], wip_ci[1]]},
            "lead_time_s": {
                "mean": float(np.mean(lt)) if lt.size else None,
                "p95": float(np.mean(p95)) if p95.size else None,
            },
            "oee": {
                "mean": float(np.mean(line_oee["oee"])),
                "availability": float(np.mean(line_oee["availability"])),
                "performance": float(np.mean(line_oee["performance"])),
                "quality": float(np.mean(line_oee["quality"])),
            },
            "bottleneck": bottleneck,
            "delivered": {"mean": float(np.mean(k.delivered))},
            "stations": stations,
            "lost_arrivals": int(np.sum(k.lost_arrivals)),
            "per_replication": [self._replication(r) for r in range(k.n)],
        }

    def _replication(self, r: int) -> dict[str, Any]:
        k = self.kpis
        oee = {name: float(v[r]) for name, v in k.line_oee().items()}

        def num(x: float) -> float | None:
            return float(x) if np.isfinite(x) else None

        return {
            "replication": r,
            "throughput_per_hour": float(k.throughput_per_hour[r]),
            "wip": float(k.wip[r]),
            "lead_time_s": {"mean": num(k.lead_time_mean[r]), "p95": num(k.lead_time_p95[r])},
            "oee": oee,
            "bottleneck": k.station_ids[int(k.bottleneck[r])],
            "delivered": int(k.delivered[r]),
        }


def simulate(
    spec: LineSpec,
    *,
    hours: float,
    warmup_hours: float = 0.0,
    replications: int = 1,
    seed: int = 0,
    engine_name: str = "auto",
    progress: Callable[[float], None] | None = None,
) -> SimulationResult:
    """Simulate ``spec`` for ``replications`` independent runs in one batch.

    ``engine_name``: ``"auto"`` uses the (max,+) serial fast path where it applies exactly, else
    the general engine; ``"general"`` or ``"serial"`` force one (``"serial"`` raises if it does
    not apply).
    """
    if replications < 1:
        raise SimulationError(f"replications must be >= 1, got {replications}")
    from physics.process import serial

    reason = serial.inapplicable(spec)
    use_serial = engine_name == "serial" or (engine_name == "auto" and reason is None)
    if engine_name == "serial" and reason is not None:
        raise SimulationError(f"the serial fast path does not apply: {reason}")
    if engine_name not in ("auto", "general", "serial"):
        raise SimulationError(f"unknown engine '{engine_name}' (auto, general, serial)")
    if use_serial:
        kpis = serial.simulate_kpis(
            spec,
            hours=hours,
            warmup_hours=warmup_hours,
            replications=replications,
            seed=seed,
            progress=progress,
        )
    else:
        model, params = build(spec)
        params = with_horizon(params, hours=hours, warmup_hours=warmup_hours)
        kpis = evaluate(
            model, batch_params(params, 1), replications=replications, seed=seed, progress=progress
        )
    return SimulationResult(
        spec=spec,
        hours=hours,
        warmup_hours=warmup_hours,
        replications=replications,
        seed=seed,
        engine="serial" if use_serial else "general",
        kpis=kpis,
    )
