"""Batches of variants through the process core, with common random numbers, locally or on Ray.

Variants are grouped by layout (one topology, one compiled model each). Within a layout the
model is built once with room for the whole space (the largest server count of each station,
the largest buffer capacity), and each variant only changes the traced parameters, so numeric
variants never recompile. A layout whose every variant is a serial line the (max,+) fast path
runs exactly uses it (``engine: auto``); the others use the general engine.

Each group is cut into jobs of ``batch`` variants; a job runs ``batch * replications`` lanes in
one call. Replication ``r`` of every variant uses the same random stream (common random
numbers: key ``fold_in(PRNGKey(seed), r)``, the stream ``twin simulate`` uses for replication r),
so differences between variants are not masked by noise. Jobs are pure functions of their
inputs: the local backend runs them one after the other, the Ray backend as Ray tasks, with the
same job boundaries, so both give the same table.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from enum import StrEnum
from typing import Any

import numpy as np
from numpy.typing import NDArray

from scenes.errors import SimulationError
from scenes.spec import LineSpec
from twin.design.space import DesignSpace, Engine, Simulation, Value, apply

log = logging.getLogger(__name__)

Variant = dict[str, Value]
Progress = Callable[[float], None]

#: The per-replication figures a job returns, each (lanes,).
LANE_KPIS = ("throughput", "wip", "lead_time", "oee", "bottleneck", "delivered")


class Backend(StrEnum):
    LOCAL = "local"
    RAY = "ray"


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    """One batch: ``n`` variants of one layout through one engine, ``replications`` each.

    ``params`` holds the stacked parameter leaves (numpy, leading axis ``n``) of
    :class:`physics.process.model.Params` or :class:`physics.process.serial.SerialParams`.
    """

    engine: str  # "general" or "serial"
    model: Any  # Model or SerialModel (hashable, static)
    params: dict[str, NDArray[Any]]
    spec: LineSpec  # the layout (the serial path maps its line order back to the file's)
    replications: int
    seed: int
    rows: tuple[int, ...]  # the variants' indices in the sweep

    @property
    def n(self) -> int:
        """Variants of the sweep in this job."""
        return len(self.rows)

    @property
    def lanes(self) -> int:
        """Variants simulated: ``n``, or more where the job was padded to its group's batch
        size (a repeat of its last variant) so that every job of a group has one shape and
        compiles once."""
        return int(next(iter(self.params.values())).shape[0])


def run_job(job: Job, progress: Progress | None = None) -> dict[str, NDArray[Any]]:
    """Simulate a job; returns :data:`LANE_KPIS`, each (n * replications,), variant-major."""
    import jax.numpy as jnp

    from physics.process import api, serial
    from physics.process.model import Params

    r = job.replications
    if job.engine == "serial":
        sp = serial.SerialParams(**{k: jnp.asarray(v) for k, v in job.params.items()})
        import jax

        pb = jax.tree.map(lambda a: jnp.repeat(a, r, axis=0), sp)
        keys = api.replication_keys(job.seed, job.lanes, r)
        state = serial.run(job.model, pb, keys, progress=progress)
        k = serial.kpis_of(job.model, pb, state, job.spec)
    else:
        p = Params(**{k: jnp.asarray(v) for k, v in job.params.items()})
        k = api.evaluate(
            job.model,
            p,
            replications=r,
            seed=job.seed,
            max_batch=job.lanes * r,
            progress=progress,
        )
    return {
        "throughput": k.throughput_per_hour,
        "wip": k.wip,
        "lead_time": k.lead_time_mean,
        "oee": k.line_oee()["oee"],
        "bottleneck": k.bottleneck,
        "delivered": k.delivered.astype(np.float64),
    }


# -- planning --------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """The jobs of a sweep, and for each variant its layout, line and engine."""

    jobs: tuple[Job, ...]
    layouts: tuple[str, ...]  # per variant
    specs: tuple[LineSpec, ...]  # per variant: the line with the variant applied
    engines: tuple[str, ...]  # per variant


def plan(
    space: DesignSpace,
    line: LineSpec,
    variants: Sequence[Variant],
    sim: Simulation,
) -> Plan:
    """Group variants by layout, build one model per layout, cut into jobs of ``sim.batch``."""
    import jax.numpy as jnp

    from physics.process import serial
    from physics.process.model import build, check_horizon, with_horizon

    groups: dict[str, list[int]] = {}
    layout_spec: dict[str, LineSpec] = {}
    specs: list[LineSpec] = []
    names: list[str] = []
    for i, v in enumerate(variants):
        name, base = space.layout_of(v, line)
        layout_spec[name] = base
        groups.setdefault(name, []).append(i)
        specs.append(apply(base, space, v))
        names.append(name)
    engines = [""] * len(variants)
    jobs: list[Job] = []
    for name, rows in groups.items():
        base = layout_spec[name]
        engine = _engine(sim.engine, [specs[i] for i in rows])
        max_servers, max_capacity, handoff = _room([specs[i] for i in rows])
        leaves: list[dict[str, NDArray[Any]]] = []
        model: Any = None
        if engine == "serial":
            built = [serial.build_serial(specs[i], max_capacity=max_capacity) for i in rows]
            rate = max(m.fail_rate for m, _ in built)
            model = replace(built[0][0], fail_rate=rate)
            for sm, sp in built:
                if replace(sm, fail_rate=rate) != model:  # pragma: no cover - numeric only
                    raise SimulationError(f"layout '{name}': variants differ in structure")
                check_horizon(sim.hours, sim.warmup_hours)
                sp = replace(
                    sp,
                    horizon=jnp.asarray(sim.hours * 3600.0),
                    warmup=jnp.asarray(sim.warmup_hours * 3600.0),
                )
                leaves.append({f.name: np.asarray(getattr(sp, f.name)) for f in fields(sp)})
        else:
            for i in rows:
                m, p = build(
                    specs[i],
                    max_servers=max_servers,
                    max_capacity=max_capacity,
                    allow_handoff=handoff,
                )
                if model is None:
                    model = m
                elif m != model:  # pragma: no cover - numeric parameters keep the structure
                    raise SimulationError(f"layout '{name}': variants differ in structure")
                p = with_horizon(p, hours=sim.hours, warmup_hours=sim.warmup_hours)
                leaves.append({f.name: np.asarray(getattr(p, f.name)) for f in fields(p)})
        for i in rows:
            engines[i] = engine
        for lo in range(0, len(rows), sim.batch):
            chunk = rows[lo : lo + sim.batch]
            part = leaves[lo : lo + sim.batch]
            if len(rows) > sim.batch:  # pad the last job: one shape, one compilation
                part = part + [part[-1]] * (sim.batch - len(part))
            stacked = {k: np.stack([leaf[k] for leaf in part]) for k in leaves[0]}
            jobs.append(
                Job(
                    engine=engine,
                    model=model,
                    params=stacked,
                    spec=base,
                    replications=sim.replications,
                    seed=sim.seed,
                    rows=tuple(chunk),
                )
            )
    return Plan(jobs=tuple(jobs), layouts=tuple(names), specs=tuple(specs), engines=tuple(engines))


def _room(specs: Sequence[LineSpec]) -> tuple[dict[str, int], int, bool]:
    """``max_servers``, ``max_capacity`` and ``allow_handoff`` that fit every variant of a
    layout, so that all of them build the same model."""
    servers: dict[str, int] = {}
    caps: dict[str, set[int]] = {}
    for spec in specs:
        for st in spec.stations:
            servers[st.id] = max(servers.get(st.id, 1), st.servers)
        for b in spec.buffers:
            caps.setdefault(b.id, set()).add(b.capacity)
    capacity = max([0, *(max(c) for c in caps.values())])
    handoff = any(0 in c and len(c) > 1 for c in caps.values())
    return servers, capacity, handoff


def _engine(engine: Engine, specs: Sequence[LineSpec]) -> str:
    from physics.process import serial

    reasons = [serial.inapplicable(s) for s in specs]
    if engine == Engine.GENERAL:
        return "general"
    if engine == Engine.SERIAL:
        bad = next((r for r in reasons if r is not None), None)
        if bad is not None:
            raise SimulationError(f"the serial fast path does not apply to a variant: {bad}")
        return "serial"
    return "serial" if all(r is None for r in reasons) else "general"


# -- running ---------------------------------------------------------------------------------------
def run_jobs(
    jobs: Sequence[Job],
    *,
    backend: Backend = Backend.LOCAL,
    ray_address: str | None = None,
    progress: Progress | None = None,
) -> list[dict[str, NDArray[Any]]]:
    """Run every job; the result of job ``j`` at index ``j``."""
    if backend == Backend.RAY:
        return _run_ray(jobs, ray_address, progress)
    total = sum(j.n for j in jobs) or 1
    done = 0
    out = []
    for job in jobs:

        def prog(f: float, before: int = done, n: int = job.n) -> None:
            if progress is not None:
                progress((before + f * n) / total)

        out.append(run_job(job, prog))
        done += job.n
        if progress is not None:
            progress(done / total)
    return out


def _run_ray(
    jobs: Sequence[Job], address: str | None, progress: Progress | None
) -> list[dict[str, NDArray[Any]]]:
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise SimulationError(
            "the Ray backend needs ray: pip install 'twin-engine[design]'"
        ) from exc
    started = False
    if not ray.is_initialized():
        env = {k: v for k, v in os.environ.items() if k.startswith("JAX_")}
        ray.init(
            address=address,
            runtime_env={"env_vars": env} if env else None,
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
        started = True
    try:
        task = ray.remote(num_cpus=1)(run_job)
        refs = [task.remote(job) for job in jobs]
        index = {ref: i for i, ref in enumerate(refs)}
        results: list[dict[str, NDArray[Any]] | None] = [None] * len(refs)
        total = sum(j.n for j in jobs) or 1
        done = 0
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                i = index[ref]
                results[i] = ray.get(ref)
                done += jobs[i].n
            if progress is not None:
                progress(done / total)
        return [r for r in results if r is not None]
    finally:
        if started:
            ray.shutdown()


# -- summaries -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class Stat:
    """Mean of the replications and its 95% Student-t confidence interval."""

    mean: float
    lo: float
    hi: float


@dataclass(frozen=True, slots=True, kw_only=True)
class VariantResult:
    """What one variant gave: per-KPI statistics over its replications."""

    throughput: Stat  # parts per hour
    wip: Stat  # parts
    lead_time: Stat  # seconds (NaN when nothing was delivered)
    oee: Stat
    bottleneck: str
    engine: str
    lanes: dict[str, NDArray[Any]]  # the per-replication figures


def summarize(
    plan_: Plan, results: Sequence[dict[str, NDArray[Any]]], replications: int
) -> list[VariantResult]:
    """Per-variant statistics, in the order of the variants."""
    from physics.process.api import mean_ci

    out: list[VariantResult | None] = [None] * len(plan_.specs)
    for job, res in zip(plan_.jobs, results, strict=True):
        for j, row in enumerate(job.rows):
            sl = slice(j * replications, (j + 1) * replications)
            lanes = {k: np.asarray(res[k][sl]) for k in LANE_KPIS}

            def stat(x: NDArray[Any]) -> Stat:
                x = x[np.isfinite(x)]
                if x.size == 0:
                    return Stat(mean=float("nan"), lo=float("nan"), hi=float("nan"))
                m, (lo, hi) = mean_ci(x)
                return Stat(mean=m, lo=lo, hi=hi)

            ids = job.spec.stations
            counts = np.bincount(lanes["bottleneck"].astype(np.int64), minlength=len(ids))
            out[row] = VariantResult(
                throughput=stat(lanes["throughput"]),
                wip=stat(lanes["wip"]),
                lead_time=stat(lanes["lead_time"]),
                oee=stat(lanes["oee"]),
                bottleneck=ids[int(np.argmax(counts))].id,
                engine=job.engine,
                lanes=lanes,
            )
    return [r for r in out if r is not None]


def evaluate_variants(
    space: DesignSpace,
    line: LineSpec,
    variants: Sequence[Variant],
    sim: Simulation,
    *,
    backend: Backend = Backend.LOCAL,
    ray_address: str | None = None,
    progress: Progress | None = None,
) -> tuple[Plan, list[VariantResult]]:
    """Plan, run and summarize ``variants`` (see the module docstring)."""
    p = plan(space, line, variants, sim)
    log.info("%d variants in %d jobs", len(variants), len(p.jobs))
    results = run_jobs(p.jobs, backend=backend, ray_address=ray_address, progress=progress)
    return p, summarize(p, results, sim.replications)
