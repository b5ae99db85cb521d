"""What-if forks of a running twin: its current engine state run ahead in the batched core.

:func:`fork_forecast` copies lane 0 of a line's state (a :class:`~twin.simline.SimulatedLine`,
a scenario or a live twin) into ``replications`` lanes with independent random keys, applies the
what-if edits ("station X stays down for D more seconds"), advances every lane ``horizon_s``
seconds with :func:`physics.process.engine.advance`, and returns a :class:`Forecast`: the mean
and the 5-95% band of throughput, WIP and deliveries at regular intervals. The line itself is
only read (under its lock, for the copy): a fork never changes the twin's state or record.

The ``twin.fork`` command (:func:`register_fork_command`) returns the forecast as plain data.
It runs in the server's tick (the first fork of a line also compiles the batched core), so the
twin pauses for as long as the fork takes: keep replications and horizon modest.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from scenes.errors import TwinError

if TYPE_CHECKING:
    from streaming.auth import Principal
    from streaming.hub import CommandRegistry, Outcome
    from streaming.protocol import Command
    from twin.simline import SimulatedLine

#: Bounds of a fork asked for over the wire (a fork holds the server's tick while it runs).
MAX_REPLICATIONS = 256
MAX_HORIZON_S = 24 * 3600.0
MAX_INTERVALS = 200


class ForkError(TwinError, ValueError):
    """A fork asked for something the line cannot do (an unknown station, a bad horizon)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Edit:
    """What if ``station`` stays down for ``down_s`` more seconds (from the fork)."""

    station: str
    down_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Band:
    """A quantity over the forecast's intervals: ``mean``, ``p5`` and ``p95`` over the
    replications, each (K,)."""

    mean: NDArray[np.float64]
    p5: NDArray[np.float64]
    p95: NDArray[np.float64]

    @classmethod
    def of(cls, x: NDArray[np.float64]) -> Band:
        """The band of ``x`` (K, R)."""
        return cls(
            mean=np.mean(x, axis=1),
            p5=np.quantile(x, 0.05, axis=1),
            p95=np.quantile(x, 0.95, axis=1),
        )

    def to_dict(self) -> dict[str, list[float]]:
        return {k: [float(v) for v in getattr(self, k)] for k in ("mean", "p5", "p95")}


@dataclass(frozen=True, slots=True, kw_only=True)
class Forecast:
    """The fork's forecast. ``times`` (K,) are seconds after the fork, each the end of an
    interval of ``interval_s``; throughput (parts per hour) and WIP (time-average) are over each
    interval, ``delivered`` counts from the fork. ``runs`` holds the raw per-replication values
    (K, R) of ``delivered`` and ``wip``."""

    t0: float  # engine time of the fork
    horizon_s: float
    interval_s: float
    replications: int
    seed: int
    edits: tuple[Edit, ...]
    times: NDArray[np.float64]
    throughput: Band
    wip: Band
    delivered: Band
    runs: Mapping[str, NDArray[np.float64]]

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists and numbers): what the ``twin.fork`` command returns."""
        return {
            "t0": self.t0,
            "horizon_s": self.horizon_s,
            "interval_s": self.interval_s,
            "replications": self.replications,
            "seed": self.seed,
            "edits": [{"station": e.station, "down_s": e.down_s} for e in self.edits],
            "times": [float(t) for t in self.times],
            "throughput_per_hour": self.throughput.to_dict(),
            "wip": self.wip.to_dict(),
            "delivered": self.delivered.to_dict(),
        }


def fork_forecast(
    line: SimulatedLine,
    *,
    horizon_s: float,
    replications: int = 32,
    edits: Sequence[Edit] = (),
    seed: int = 0,
    interval_s: float | None = None,
) -> Forecast:
    """Run ``line``'s current state ahead (see the module docstring). ``interval_s`` defaults to
    a 24th of the horizon. Raises :class:`ForkError` for bad arguments."""
    if not (math.isfinite(horizon_s) and horizon_s > 0):
        raise ForkError(f"horizon_s must be a positive number, got {horizon_s}")
    if replications < 1:
        raise ForkError(f"replications must be >= 1, got {replications}")
    step = horizon_s / 24 if interval_s is None else interval_s
    if not (math.isfinite(step) and step > 0):
        raise ForkError(f"interval_s must be a positive number, got {interval_s}")
    k_steps = max(1, math.ceil(horizon_s / step - 1e-9))
    for e in edits:
        if e.station not in line.model.station_ids:
            raise ForkError(f"no station '{e.station}' in line '{line.spec.name}'")
        if not (math.isfinite(e.down_s) and e.down_s >= 0):
            raise ForkError(f"down_s must be a number >= 0, got {e.down_s}")
    with line._lock:  # a consistent copy: the state and parameters are immutable arrays
        state, params, t0 = line.state, line.params, line.sim_t
    return run_forecast(
        line.spec,
        line.model,
        params,
        state,
        t0=t0,
        horizon_s=horizon_s,
        interval_s=step,
        steps=k_steps,
        replications=replications,
        edits=tuple(edits),
        seed=seed,
    )


def run_forecast(
    spec: Any,
    model: Any,
    params: Any,
    state: Any,
    *,
    t0: float,
    horizon_s: float,
    interval_s: float,
    steps: int,
    replications: int,
    edits: tuple[Edit, ...],
    seed: int,
) -> Forecast:
    """The pure part of :func:`fork_forecast`: lane 0 of ``state`` and ``params`` (batched, as a
    line holds them) at engine time ``t0``, forked and run ahead."""
    import jax
    import jax.numpy as jnp

    from physics.process import api, engine
    from physics.process.model import build
    from twin.scenario import edits as state_edits

    r = replications

    def lanes(a: jax.Array) -> jax.Array:
        return jnp.repeat(a[:1], r, axis=0)

    p = jax.tree.map(lanes, params)
    p = p.replace(warmup=jnp.zeros((r,), dtype=jnp.float64))  # count everything from the fork
    s = jax.tree.map(lanes, state)
    s = dataclasses.replace(s, key=api.replication_keys(seed, 1, r).astype(s.key.dtype))
    need = [model.station_ids.index(e.station) for e in edits]
    if any(model.failure_mode[i] is None for i in need):
        # the line's model has no repair clock there: fork with one that never fires by itself
        model, _ = build(state_edits.breakable(spec))
        never = [m is None for m in build(spec)[0].failure_mode]
        p = p.replace(mtbf=jnp.where(jnp.asarray(never)[None, :], state_edits.NEVER_S, p.mtbf))
    for e, i in zip(edits, need, strict=True):
        s = state_edits.force_down(model, s, i, t0 + e.down_s) if e.down_s > 0 else s
    times = np.minimum(np.arange(1, steps + 1) * interval_s, horizon_s)
    delivered = np.zeros((steps, r))
    wip = np.zeros((steps, r))
    d0 = np.asarray(s.delivered, dtype=np.float64)
    w_prev = np.asarray(s.wip_int, dtype=np.float64)
    prev_t = 0.0
    for k, dt in enumerate(times):
        s = engine.advance(model, p, s, until_s=t0 + float(dt))
        delivered[k] = np.asarray(s.delivered, dtype=np.float64) - d0
        w = np.asarray(s.wip_int, dtype=np.float64)
        wip[k] = (w - w_prev) / max(float(dt) - prev_t, 1e-12)
        w_prev, prev_t = w, float(dt)
    spans = np.diff(np.concatenate([[0.0], times]))[:, None]
    per_interval = np.diff(np.concatenate([np.zeros((1, r)), delivered]), axis=0)
    return Forecast(
        t0=t0,
        horizon_s=horizon_s,
        interval_s=interval_s,
        replications=r,
        seed=seed,
        edits=edits,
        times=times,
        throughput=Band.of(per_interval * 3600.0 / spans),
        wip=Band.of(wip),
        delivered=Band.of(delivered),
        runs={"delivered": delivered, "wip": wip},
    )


# -- the command ---------------------------------------------------------------------------------


def parse_edits(raw: Any) -> list[Edit]:
    """``[{station, down_s}, ...]`` from a command's args. Raises :class:`ForkError`."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ForkError("args.edits must be a list of {station, down_s}")
    out = []
    for k, e in enumerate(raw):
        if not isinstance(e, Mapping) or set(e) != {"station", "down_s"}:
            raise ForkError(f"args.edits[{k}] must be {{station, down_s}}")
        st, d = e["station"], e["down_s"]
        if not isinstance(st, str) or not _is_number(d):
            raise ForkError(f"args.edits[{k}]: station is a string, down_s a number")
        out.append(Edit(station=st.removeprefix("station/"), down_s=float(d)))
    return out


def register_fork_command(registry: CommandRegistry, line: SimulatedLine) -> None:
    """Offer ``twin.fork`` (operators, trainers, designers) on ``line``."""
    from streaming.protocol import Role

    registry.register(
        "twin.fork",
        {Role.OPERATOR, Role.TRAINER, Role.DESIGNER},
        lambda p, c: fork_command(line, p, c),
        "what-if forecast: args {horizon_s, replications?, seed?, interval_s?, "
        "edits?: [{station, down_s}]}",
    )


def fork_command(line: SimulatedLine, principal: Principal, command: Command) -> Outcome:
    from streaming.hub import Outcome
    from streaming.protocol import ErrorCode

    a = command.args
    try:
        horizon = _arg(a, "horizon_s", 3600.0, 1.0, MAX_HORIZON_S)
        reps = int(_arg(a, "replications", 32, 1, MAX_REPLICATIONS))
        seed = int(_arg(a, "seed", 0, 0, 2**31 - 1))
        interval = _arg(a, "interval_s", horizon / 24, horizon / MAX_INTERVALS, horizon)
        forecast = fork_forecast(
            line,
            horizon_s=horizon,
            replications=reps,
            edits=parse_edits(a.get("edits")),
            seed=seed,
            interval_s=interval,
        )
    except ForkError as exc:
        return Outcome(ok=False, code=ErrorCode.INVALID_ARGS.value, reason=str(exc))
    return Outcome(ok=True, result=forecast.to_dict())


def _arg(args: Mapping[str, Any], key: str, default: float, lo: float, hi: float) -> float:
    v = args.get(key, default)
    if not _is_number(v) or not lo <= float(v) <= hi:
        raise ForkError(f"args.{key} must be a number within {lo:g}..{hi:g}")
    return float(v)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def edits_from(pairs: Iterable[tuple[str, float]]) -> list[Edit]:
    """``[Edit(station, down_s), ...]`` from ``(station, down_s)`` pairs (a convenience)."""
    return [Edit(station=s, down_s=d) for s, d in pairs]
