"""Gradient refinement of processing-time targets on serial lines, through the (max,+) fast path.

:func:`physics.process.serial.throughput_of_means` is throughput over a fixed number of parts as
a differentiable function of the stations' mean processing times, on one sample path (common
random numbers); ``jax.grad`` through it is the pathwise (IPA) gradient. Here it is compiled
once per layout (the model is given room for the whole space) and used to move the continuous
``process_time`` parameters of a variant uphill on

    J = throughput - cost_weight * cost          (parts/h; cost_weight in parts/h per currency)

by normalized steps: the parameter with the largest effect moves ``step`` of its range, the
others in proportion, clipped to their ranges. Each step is a new variant, which the sweep then
simulates like any other (so the table's figures are simulations, not the gradient's estimate).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from physics.process import serial
from scenes.spec import LineSpec
from twin.design import cost
from twin.design.space import DesignSpace, TargetKind, Value, apply

Variant = dict[str, Value]


@partial(jax.jit, static_argnums=(0,), static_argnames=("parts", "warmup_parts"))
def _value_and_grad(
    model: serial.SerialModel,
    p: serial.SerialParams,
    means: jax.Array,
    key: jax.Array,
    *,
    parts: int,
    warmup_parts: int,
) -> tuple[jax.Array, jax.Array]:
    f = partial(serial.throughput_of_means, model, p, parts=parts, warmup_parts=warmup_parts)
    out: tuple[jax.Array, jax.Array] = jax.value_and_grad(f)(means, key)
    return out


def throughput_gradient(
    spec: LineSpec,
    *,
    parts: int = 4000,
    warmup_parts: int = 200,
    seed: int = 0,
    fail_rate: float | None = None,
    max_capacity: int | None = None,
) -> tuple[float, dict[str, float]]:
    """Throughput (parts/h) of serial line ``spec`` and its gradient with respect to each
    station's mean processing time (parts/h per second), by IPA on one sample path.

    ``fail_rate`` and ``max_capacity`` give the compiled model room for a whole design space, so
    that the variants of one layout share one compilation (the failure draws are a prefix of the
    same stream, so the room changes nothing on the path). The same figures as
    :func:`physics.process.serial.throughput_gradient`, which compiles per call.
    """
    model, p = serial.build_serial(spec, max_capacity=max_capacity)
    if fail_rate is not None:
        model = replace(model, fail_rate=max(model.fail_rate, fail_rate))
    key = jax.random.PRNGKey(seed)
    val, grad = _value_and_grad(model, p, p.mean, key, parts=parts, warmup_parts=warmup_parts)
    return float(val), {
        sid: float(g) for sid, g in zip(model.station_ids, np.asarray(grad), strict=True)
    }


def throughput_of_means(
    spec: LineSpec, means: Mapping[str, float], *, parts: int, warmup_parts: int, seed: int
) -> float:
    """The function :func:`throughput_gradient` differentiates, at other means (for checks by
    finite differences on the same sample path)."""
    model, p = serial.build_serial(spec)
    m = jnp.asarray(
        [means.get(s, float(x)) for s, x in zip(model.station_ids, p.mean, strict=True)]
    )
    val = serial.throughput_of_means(
        model, p, m, jax.random.PRNGKey(seed), parts=parts, warmup_parts=warmup_parts
    )
    return float(val)


def _room(space: DesignSpace, layout: LineSpec) -> tuple[float, int | None]:
    """Failure rate (failures per part, largest) and buffer capacity the space can reach."""
    highs: dict[str, float] = {}
    mtbf_lo: dict[str, float] = {}
    cap = None
    for p in space.numeric:
        levels = [float(x) for x in p.levels_of()] + [p.low, p.high]
        if p.target.kind == TargetKind.PROCESS_TIME:
            highs[p.target.ref] = max(levels)
        elif p.target.kind == TargetKind.MTBF:
            mtbf_lo[p.target.ref] = min(x for x in levels if x > 0)
        elif p.target.kind == TargetKind.CAPACITY:
            cap = max(cap or 0, int(max(levels)))
    rate = 0.0
    for s in layout.stations:
        if s.failures is None:
            continue
        mean = max(highs.get(s.id, 0.0), s.process_time.mean)
        rate = max(rate, mean / min(mtbf_lo.get(s.id, s.failures.mtbf), s.failures.mtbf))
    return rate, cap


def refine(
    space: DesignSpace, line: LineSpec, start: Mapping[str, Value], *, seed: int
) -> list[Variant]:
    """Up to ``space.gradient.steps`` variants, each one normalized gradient step from the last
    (see the module docstring). Stops early when the variant is not a serial line, when no
    continuous processing-time parameter is left to move, or when the gradient vanishes."""
    g = space.gradient
    conts = [
        p
        for p in space.numeric
        if p.continuous and p.target.kind == TargetKind.PROCESS_TIME and p.high > p.low
    ]
    if not conts:
        return []
    v: Variant = dict(start)
    out: list[Variant] = []
    for _ in range(g.steps):
        _, layout = space.layout_of(v, line)
        spec = apply(layout, space, v)
        if serial.inapplicable(spec) is not None:
            break
        rate, cap = _room(space, layout)
        _, grad = throughput_gradient(
            spec,
            parts=g.parts,
            warmup_parts=g.warmup_parts,
            seed=seed,
            fail_rate=rate,
            max_capacity=cap,
        )
        d: dict[str, float] = {}
        for p in conts:
            dj = grad[p.target.ref]
            if g.cost_weight > 0:
                h = 1e-4 * (p.high - p.low)
                x = float(v[p.name])
                up = cost.cost(space.cost, apply(layout, space, {**v, p.name: x + h}), layout)
                dn = cost.cost(space.cost, apply(layout, space, {**v, p.name: x - h}), layout)
                dj -= g.cost_weight * (up - dn) / (2 * h)
            d[p.name] = dj * (p.high - p.low)
        scale = max(abs(x) for x in d.values())
        if not np.isfinite(scale) or scale <= 0:
            break
        moved = False
        for p in conts:
            x = float(v[p.name])
            nx = float(np.clip(x + g.step * (p.high - p.low) * d[p.name] / scale, p.low, p.high))
            moved |= nx != x
            v[p.name] = nx
        if not moved:
            break
        out.append(dict(v))
    return out
