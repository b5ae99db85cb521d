"""The (max,+) fast path for saturated serial lines, and its pathwise (IPA) gradient.

For a serial line fed by a saturated source, with single machines, blocking after service and no
scrap, departure times obey an exact recursion over parts ``j`` and stations ``k``::

    start_k(j) = max(D_{k-1}(j) + T_{k-1}, D_k(j-1))
    C_k(j)     = start_k(j) + S_k(j)
    D_k(j)     = max(C_k(j), start_{k+1}(j - b_k))     if b_k >= 1
               = max(C_k(j), D_{k+1}(j - 1))          if b_k == 0 (direct handoff)

with ``T`` a conveyor's transit time and ``b`` the capacity after station k. Failures in
``operation`` mode fold into the service time exactly: the busy-time failure clock is a Poisson
process, so ``S = p + sum of Poisson(p/mtbf) repairs``. The same semantics as the general engine
(``docs/process-semantics.md``), at a fraction of the cost, and differentiable. On a CPU the
recursion runs in a C++ kernel through XLA's FFI (:mod:`physics.process.native`), with the same
results bit for bit; the gradient and accelerators use the XLA version.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from numpy.typing import NDArray

from physics.process import kpi, native
from physics.process.devices import lane_devices
from physics.process.dists import (
    GAMMA_GROUP,
    SERIAL_RNG,
    gamma_constants,
    lognormal_params,
    rng_key,
    sample,
    stream_seed,
    uniform_at,
    uniform_lanes,
    unit_exponential,
)
from physics.process.model import LT_BINS, LT_EDGES, add_lead_times, check_horizon
from scenes.errors import SimulationError
from scenes.spec import DistKind, FailureMode, LineSpec

NEG = -jnp.inf


def inapplicable(spec: LineSpec) -> str | None:
    """Why the fast path cannot run ``spec`` exactly, or None when it can."""
    if spec.sources:
        return "it has a timed source"
    for s in spec.stations:
        if s.servers != 1:
            return f"station '{s.id}' has {s.servers} parallel servers"
        if s.scrap_rate > 0:
            return f"station '{s.id}' scraps parts"
        if s.failures is not None and s.failures.mode != FailureMode.OPERATION:
            return f"station '{s.id}' has time-dependent failures"
    chain = serial_order(spec)
    if chain is None:
        return "it is not a single chain of stations"
    return None


def serial_order(spec: LineSpec) -> list[int] | None:
    """Station indices from first to last if the line is one chain, else None."""
    n = len(spec.stations)
    idx = {s.id: i for i, s in enumerate(spec.stations)}
    nxt: dict[int, int] = {}
    has_in = [False] * n
    for b in spec.buffers:
        u, v = idx[b.source], idx[b.target]
        if u in nxt or has_in[v]:
            return None
        nxt[u] = v
        has_in[v] = True
    heads = [i for i in range(n) if not has_in[i]]
    if len(heads) != 1:
        return None
    order = [heads[0]]
    while order[-1] in nxt:
        order.append(nxt[order[-1]])
    return order if len(order) == n else None


@dataclass(frozen=True, slots=True, kw_only=True)
class SerialModel:
    """Static structure of a serial line: the distribution family of each station, in line order."""

    station_ids: tuple[str, ...]
    kinds: tuple[DistKind, ...]
    n_values: int
    ring: int  # history length (> the largest capacity)
    fails: tuple[bool, ...]
    fail_rate: float = 0.0  # the largest mean processing time / mtbf: failures per part


@jax.tree_util.register_dataclass
@dataclass(frozen=True, slots=True, kw_only=True)
class SerialParams:
    """Traced numbers, in line order. ``scale`` multiplies every processing time (default 1)."""

    mean: jax.Array  # (K,) mean processing time, s
    cv: jax.Array
    low: jax.Array
    high: jax.Array
    values: jax.Array  # (K, n_values)
    nvalues: jax.Array
    capacity: jax.Array  # (K,) int, buffer after station k (last: unused)
    transit: jax.Array  # (K,) s
    mtbf: jax.Array  # (K,) inf where no failures
    mttr: jax.Array
    warmup: jax.Array
    horizon: jax.Array


def build_serial(
    spec: LineSpec, *, max_capacity: int | None = None
) -> tuple[SerialModel, SerialParams]:
    reason = inapplicable(spec)
    if reason is not None:
        raise SimulationError(f"the serial fast path does not apply: {reason}")
    order = serial_order(spec)
    assert order is not None
    st = [spec.stations[i] for i in order]
    after = {b.source: b for b in spec.buffers}
    caps = [after[s.id].capacity if s.id in after else 0 for s in st]
    transit = [after[s.id].transit_time if s.id in after else 0.0 for s in st]
    n_values = max([1] + [len(s.process_time.values) for s in st])
    vals = np.zeros((len(st), n_values))
    for r, s in enumerate(st):
        vals[r, : len(s.process_time.values)] = s.process_time.values
    f64 = partial(jnp.asarray, dtype=jnp.float64)
    model = SerialModel(
        station_ids=tuple(s.id for s in st),
        kinds=tuple(s.process_time.kind for s in st),
        n_values=n_values,
        ring=max([1, *caps, max_capacity or 0]) + 1,
        fails=tuple(s.failures is not None for s in st),
        fail_rate=max(
            [s.process_time.mean / s.failures.mtbf for s in st if s.failures is not None] or [0.0]
        ),
    )
    params = SerialParams(
        mean=f64([s.process_time.mean for s in st]),
        cv=f64([s.process_time.cv for s in st]),
        low=f64([s.process_time.low for s in st]),
        high=f64([s.process_time.high for s in st]),
        values=f64(vals),
        nvalues=jnp.asarray([max(1, len(s.process_time.values)) for s in st], dtype=jnp.int32),
        capacity=jnp.asarray(caps, dtype=jnp.int32),
        transit=f64(transit),
        mtbf=f64([s.failures.mtbf if s.failures else np.inf for s in st]),
        mttr=f64([s.failures.mttr if s.failures else 0.0 for s in st]),
        warmup=f64(0.0),
        horizon=f64(0.0),
    )
    return model, params


#: A chunk holds whole groups of this many parts: the groups of ``dists.gamma``'s retries.
GROUP = GAMMA_GROUP


def _lane_keys(key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """A lane's three streams, from its raw key: processing-time uniforms, gamma variates and
    failures. Every draw is a pure function of the lane's key and the number of the part (or
    failure) it is for, never of the chunk it falls in."""
    k_u, k_g, k_f = jax.random.split(rng_key(key, SERIAL_RNG), 3)
    return k_u, k_g, k_f


def _samples(
    model: SerialModel,
    p: SerialParams,
    k_u: jax.Array,
    k_g: jax.Array,
    j: jax.Array,
    n: int,
    use_native: bool = False,
) -> list[jax.Array]:
    """Processing times of parts ``j .. j + n - 1``, one (n, V) array per station (lanes last,
    as the recursion reads them). ``p`` has a leading lane axis V; ``k_u``, ``k_g`` (V,) come
    from :func:`_lane_keys` and ``j`` (V,) from the state. Part ``J`` of station ``k`` takes
    number ``J * K + k`` of the lane's ``k_u`` stream (``dists.uniform_lanes``), and a gamma
    station's variates are numbered by part too (``dists.gamma``'s ``start``). So a lane's draws
    are the same however its parts are split into chunks (``n`` and ``j`` multiples of
    :data:`GROUP`). With ``use_native`` the CPU kernel ``native.serial_draws`` draws them: the
    same numbers, bit for bit."""
    if use_native:
        return _samples_native(model, p, k_u, k_g, j, n)
    u = uniform_lanes(k_u, n, len(model.kinds), first_row=j)  # (K, n, V)
    cols = []
    for k, kind in enumerate(model.kinds):
        args = (p.mean[:, k], p.cv[:, k], p.low[:, k], p.high[:, k], p.values[:, k])
        if kind == DistKind.GAMMA:  # a rejection sampler, one lane at a time
            station = jax.vmap(jax.random.fold_in, in_axes=(0, None))(k_g, k)
            one = jax.vmap(partial(sample, kind, jnp.zeros((n,))))
            x = one(station, *args, p.nvalues[:, k], j).T  # (V, n) -> (n, V)
        else:  # elementwise: the per-lane parameters broadcast over the parts
            x = sample(kind, u[k], k_g, *args, p.nvalues[:, k])
        cols.append(x)
    return cols


def _samples_native(
    model: SerialModel, p: SerialParams, k_u: jax.Array, k_g: jax.Array, j: jax.Array, n: int
) -> list[jax.Array]:
    """:func:`_samples` through ``native.serial_draws``. The per-lane constants of each family
    (a lognormal's mu and sigma, a gamma's d and c and its streams' seeds) are worked out here,
    with the operations ``dists.sample`` applies to them; the kernel does the per-part work."""
    v = j.shape[0]
    zero, one = jnp.zeros((v,)), jnp.ones((v,))
    a, b = [], []
    gseed = jnp.zeros((len(model.kinds), 3, v), jnp.uint64)
    gpar = jnp.zeros((len(model.kinds), 4, v))
    for k, kind in enumerate(model.kinds):
        mean, cv, low, high = p.mean[:, k], p.cv[:, k], p.low[:, k], p.high[:, k]
        if kind == DistKind.LOGNORMAL:
            mu, sigma = lognormal_params(mean, cv)
            a.append(mu)
            b.append(sigma)
        elif kind == DistKind.UNIFORM:
            a.append(low)
            b.append(high - low)
        elif kind == DistKind.GAMMA:
            a.append(mean)
            b.append(cv)
            cv2 = cv * cv  # the boost's exponent is log(U) * cv^2 (dists.gamma's inv_shape)
            boost, d, c = gamma_constants(1.0 / cv2)
            gpar = gpar.at[k].set(jnp.stack([d, c, cv2, boost * one]))
            station = jax.vmap(jax.random.fold_in, in_axes=(0, None))(k_g, k)
            streams = jax.vmap(lambda key: jax.random.split(key, 3))(station)  # (V, 3)
            gseed = gseed.at[k].set(stream_seed(streams).T)
        else:  # deterministic, exponential (the mean), empirical (its own arrays)
            a.append(mean)
            b.append(zero)
    times = native.serial_draws(
        n,
        stream_seed(k_u),
        j,
        [str(kind) for kind in model.kinds],
        jnp.stack(a),
        jnp.stack(b),
        gseed,
        gpar,
        jnp.transpose(p.values, (1, 0, 2)),
        p.nvalues.T,
    )
    return [times[k] for k in range(len(model.kinds))]


def _downtime(
    model: SerialModel,
    p: SerialParams,
    k_f: jax.Array,
    proc: list[jax.Array],
    since: jax.Array,
    count: jax.Array,
    use_native: bool = False,
) -> tuple[list[jax.Array | None], jax.Array, jax.Array]:
    """Repair time accumulated by each part while processing ``proc`` (one (n, V) array per
    station, lanes last; ``k_f`` (V,) the lanes' failure streams) under operation-mode failures,
    None where a station has none; and the failure clocks after the chunk.

    In operation mode a station's failures form a Poisson process in *busy time*: failure ``f``
    of a station comes ``X_f`` (exponential, mean ``mtbf``) seconds of busy time after failure
    ``f - 1`` and takes ``R_f`` (exponential, mean ``mttr``) to repair, both read from the lane's
    stream at ``f``. ``since`` (busy time since the last failure) and ``count`` (failures so far),
    (V, K), carry the clock from one chunk to the next, so a lane's failures do not depend on
    how its parts are split into chunks. For each failing station the chunk draws epochs a block
    of a few at a time (about the expected number plus four standard deviations) until one falls
    past the chunk's end (a loop that rarely runs), and gives each part the repairs whose epochs
    fall in its own busy interval: exact whatever the failure rate, and O(failures) random
    numbers, not O(parts x failures). With ``use_native`` the CPU kernel
    ``native.serial_downtime`` does a station's part of this: the same numbers, bit for bit.
    """
    m = _failure_block(proc[0].shape[0], model.fail_rate)
    out: list[jax.Array | None] = [None] * len(proc)
    cols = [k for k, f in enumerate(model.fails) if f]
    for c, k in enumerate(cols):
        station = jax.vmap(jax.random.fold_in, in_axes=(0, None))(k_f, c)
        clock = (p.mtbf[:, k], p.mttr[:, k])
        if use_native:  # the busy times, the epochs, their parts and the clock, in one kernel
            col, since_k, count_k = native.serial_downtime(
                proc[k], stream_seed(station), *clock, since[:, k], count[:, k], m
            )
        else:
            col, since_k, count_k = _repairs_by_part(
                _running_sum(proc[k]), *clock, station, m, since[:, k], count[:, k]
            )
        out[k] = col
        since, count = since.at[:, k].set(since_k), count.at[:, k].set(count_k)
    return out, since, count


def _running_sum(x: jax.Array, block: int = 16) -> jax.Array:
    """``jnp.cumsum(x, axis=0)`` of a (n, V) array, lanes last: sums within blocks of ``block``
    parts, then the blocks' totals carried along. ``jnp.cumsum`` made XLA:CPU transpose the
    array to put the lanes first and run a tree of reduce-windows (0.4 ms a failing station of
    a 512 x 128 chunk, 0.1 here); the order of the additions differs, so the sums may differ
    in the last bits."""
    n = x.shape[0]
    if n % block:
        return jnp.cumsum(x, axis=0)
    b = x.reshape(n // block, block, *x.shape[1:])
    rows = [b[:, 0]]
    for i in range(1, block):
        rows.append(rows[-1] + b[:, i])
    within = jnp.stack(rows, axis=1)  # (blocks, block, V)
    offset = [jnp.zeros_like(within[0, -1])]
    for t in within[:-1, -1]:
        offset.append(offset[-1] + t)
    return (within + jnp.stack(offset)[:, None]).reshape(x.shape)


def _repairs_by_part(
    busy: jax.Array,
    mtbf: jax.Array,
    mttr: jax.Array,
    keys: jax.Array,
    m: int,
    since: jax.Array,
    count: jax.Array,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Repair time of each part of a chunk (n, V), ``busy`` (n, V) being the station's busy time
    at the end of each part and ``mtbf``, ``mttr``, ``keys``, ``since``, ``count`` (V,): failure
    epochs drawn ``m`` at a time in every lane until one falls past the lane's chunk; with the
    clock after the chunk. Lanes last throughout, the way the recursion reads the result: a
    binary search of every lane at once finds each epoch's part, and one scatter adds the
    repairs."""
    n = busy.shape[0]
    lane = jnp.arange(busy.shape[1])[None, :]
    end = busy[-1]
    t = jnp.arange(m, dtype=jnp.int32)[:, None]

    def block(i: jax.Array, after: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
        """Failures ``count + i m ..`` (``m`` of them), the first coming after ``after`` (V,):
        the last epoch, the repairs by part (those past the chunk are dropped), and how many
        fell in the chunk and the last of those."""
        f = (count + i * m + t).astype(jnp.uint64)  # (m, V) failure numbers
        # each gap rounded on its own (the maximum: see _chunk_batch), the epochs summed one
        # after the other (as the native kernel sums them; jnp.cumsum's order is XLA's own)
        gaps = jnp.maximum(mtbf * unit_exponential(uniform_at(keys, 2 * f)), 0.0)
        repairs = mttr * unit_exponential(uniform_at(keys, 2 * f + 1))
        if m <= 16:  # a chunk's few failures: unrolled
            rows = [after + gaps[0]]
            for g in gaps[1:]:
                rows.append(rows[-1] + g)
            epochs = jnp.stack(rows)
        else:  # thousands (the gradient's one chunk of all parts): a loop
            _, epochs = jax.lax.scan(lambda e, g: (e + g, e + g), after, gaps)
        # the part during which each epoch falls: the number of parts that ended before it
        # (n: past the chunk), by a binary search in every lane at once
        lo = jnp.zeros(epochs.shape, jnp.int32)
        hi = jnp.full(epochs.shape, n, jnp.int32)
        for _ in range(n.bit_length()):
            mid = (lo + hi) // 2
            below = jnp.take_along_axis(busy, jnp.minimum(mid, n - 1), axis=0) < epochs
            lo, hi = jnp.where(below, mid + 1, lo), jnp.where(below, hi, mid)
        add = jnp.zeros_like(busy).at[lo, lane].add(repairs, mode="drop")
        inside = epochs <= end
        last_in = jnp.max(jnp.where(inside, epochs, -jnp.inf), axis=0)
        return epochs[-1], add, jnp.sum(inside, axis=0, dtype=jnp.int32), last_in

    Carry = tuple[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array]

    def more(st: Carry) -> Carry:
        i, last, col, k, last_in = st
        go = last <= end  # lanes whose chunk is not covered yet
        new, add, k_add, l_add = block(i, last)
        return (
            i + 1,
            jnp.where(go, new, last),
            jnp.where(go, col + add, col),
            jnp.where(go, k + k_add, k),
            jnp.where(go, jnp.maximum(last_in, l_add), last_in),
        )

    zero = jnp.asarray(0, jnp.int32)
    last, col, k, last_in = block(zero, -since)
    _, _, col, k, last_in = jax.lax.while_loop(
        lambda st: jnp.any(st[1] <= end), more, (zero + 1, last, col, k, last_in)
    )
    since = jnp.where(k > 0, end - last_in, since + end)
    return col, since, count + k


def _failure_block(n: int, fail_rate: float) -> int:
    """Failure epochs drawn at a time per station for ``n`` parts: the expected number at the
    file's failure rate plus four standard deviations (at least 4), so that a chunk rarely needs
    a second block (``_downtime`` draws more until the chunk is covered)."""
    lam = n * fail_rate
    return max(4, math.ceil(lam + 4.0 * math.sqrt(lam) + 2.0))


@jax.tree_util.register_dataclass
@dataclass(frozen=True, slots=True, kw_only=True)
class SerialState:
    j: jax.Array  # () parts started at station 1 so far
    fail_since: jax.Array  # (K,) busy time since each station's last failure (operation mode)
    fail_count: jax.Array  # (K,) failures so far
    d_prev: jax.Array  # (K,) departure of the previous part from each station
    starts: jax.Array  # (K, ring - 1) start times of the last parts, newest first (-inf: none)
    # window statistics, as in engine.State
    delivered: jax.Array
    lt_sum: jax.Array
    lt_hist: jax.Array
    wip_int: jax.Array
    busy: jax.Array  # (K,) seconds
    down: jax.Array
    blocked: jax.Array
    produced: jax.Array  # (K,)
    last_out: jax.Array  # () departure time of the last part from the line


def _init_state(model: SerialModel) -> SerialState:
    k = len(model.kinds)
    f = jnp.float64
    return SerialState(
        j=jnp.asarray(0, jnp.int32),
        fail_since=jnp.zeros((k,), f),
        fail_count=jnp.zeros((k,), jnp.int32),
        d_prev=jnp.zeros((k,), f),
        starts=jnp.full((k, model.ring - 1), NEG, f),
        delivered=jnp.asarray(0, jnp.int32),
        lt_sum=jnp.asarray(0.0, f),
        lt_hist=jnp.zeros((LT_BINS,), jnp.int32),
        wip_int=jnp.asarray(0.0, f),
        busy=jnp.zeros((k,), f),
        down=jnp.zeros((k,), f),
        blocked=jnp.zeros((k,), f),
        produced=jnp.zeros((k,), jnp.int32),
        last_out=jnp.asarray(0.0, f),
    )


def _overlap(a: jax.Array, b: jax.Array, lo: jax.Array, hi: jax.Array) -> jax.Array:
    return jnp.maximum(0.0, jnp.minimum(b, hi) - jnp.maximum(a, lo))


@dataclass(frozen=True, slots=True)
class _Links:
    """What the recursion needs of each link k -> k+1, lanes last: ``(K - 1, *lanes)``."""

    handoff: jax.Array  # capacity 0: wait for the next station's previous departure
    hot: jax.Array  # (K - 1, ring - 1, *lanes): the shift-register position of part j - b_k
    transit: jax.Array


def _links(model: SerialModel, capacity: jax.Array, transit: jax.Array) -> _Links:
    """``capacity`` and ``transit`` are (K, *lanes)."""
    cap = capacity[:-1]
    pos = jnp.arange(model.ring - 1).reshape((1, -1) + (1,) * (cap.ndim - 1))
    return _Links(handoff=cap == 0, hot=pos == (cap - 1)[:, None], transit=transit)


def _advance(
    links: _Links, d_prev: jax.Array, starts: jax.Array, serv: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """One part through the line, lanes last: ``serv`` (K, *lanes) service times. Returns the
    part's start, completion and departure times (K, *lanes) and the new shift register."""
    # What part j waits for behind station k: the next station's start of part j - b_k (the
    # shift register holds -inf until that part exists), or its previous departure if b_k == 0.
    held = jnp.max(jnp.where(links.hot, starts[1:], NEG), axis=1)
    wait = jnp.where(links.handoff, d_prev[1:], held)
    # The chain along the line, one station after the other: a scan, so that XLA:CPU computes
    # each station once (unrolled, it fuses every station's departure with the whole chain
    # before it and recomputes that chain K times).
    neg = jnp.full_like(wait[:1], NEG)

    def station(
        avail: jax.Array, x: tuple[jax.Array, ...]
    ) -> tuple[jax.Array, tuple[jax.Array, ...]]:
        dp, sv, w, tr = x
        start = jnp.maximum(avail, dp)
        c = start + sv
        d = jnp.maximum(c, w)
        return d + tr, (start, c, d)

    xs = (d_prev, serv, jnp.concatenate([wait, neg]), links.transit)
    _, (start_v, comp_v, dep_v) = jax.lax.scan(station, jnp.full_like(d_prev[0], NEG), xs)
    new_starts = jnp.concatenate([start_v[:, None], starts[:, :-1]], axis=1)
    return start_v, comp_v, dep_v, new_starts


@partial(jax.jit, static_argnums=(0, 1, 5))
def _chunk_batch(
    model: SerialModel,
    n: int,
    p: SerialParams,
    s: SerialState,
    keys: jax.Array,
    use_native: bool = False,
) -> SerialState:
    """``n`` more parts through every lane. ``p``, ``s`` and ``keys`` have a leading lane axis V;
    the recursion runs with lanes last, so that each station's update is one vector op. With
    ``use_native`` the draws, the failures, the recursion and its statistics run in the CPU
    kernels of :mod:`physics.process.native` instead: the same numbers, bit for bit."""

    k_u, k_g, k_f = jax.vmap(_lane_keys)(keys)
    # Every draw is made lanes last, in the layout the recursion reads: (n, V) per station.
    # The times as drawn, each rounded, before anything adds them up: XLA:CPU would otherwise
    # fuse a time's last product (an exponential's mean times its unit variate) into the sums
    # that read it, one rounding fewer, and the results would depend on whether the native
    # kernel drew the times. A maximum stands between (times are never negative: a no-op); an
    # optimization barrier does not (XLA:CPU removes it before fusion).
    proc = [jnp.maximum(x, 0.0) for x in _samples(model, p, k_u, k_g, s.j, n, use_native)]
    down, fail_since, fail_count = _downtime(
        model, p, k_f, proc, s.fail_since, s.fail_count, use_native
    )
    serv_k = [pr if d is None else pr + d for pr, d in zip(proc, down, strict=True)]
    lanes_last = {
        "d_prev": s.d_prev.T,
        "starts": s.starts.transpose(1, 2, 0),
        "delivered": s.delivered,
        "lt_sum": s.lt_sum,
        "wip_int": s.wip_int,
        "busy": s.busy.T,
        "down": s.down.T,
        "blocked": s.blocked.T,
        "produced": s.produced.T,
        "last_out": s.last_out,
    }
    if use_native:  # the share down, the recursion and the statistics in the kernel
        c, leads = _recursion_native(p, lanes_last, serv_k, down)
    else:
        c, leads = _recursion_scan(model, p, lanes_last, serv_k, down)
    if use_native:
        hist = native.lead_histogram(s.lt_hist, leads, jnp.asarray(LT_EDGES))
    else:
        hist = add_lead_times(s.lt_hist, leads, jnp.arange(leads.shape[1])[None, :])
    return SerialState(
        j=s.j + n,
        fail_since=fail_since,
        fail_count=fail_count,
        d_prev=c["d_prev"].T,
        starts=c["starts"].transpose(2, 0, 1),
        delivered=c["delivered"],
        lt_sum=c["lt_sum"],
        lt_hist=hist,
        wip_int=c["wip_int"],
        busy=c["busy"].T,
        down=c["down"].T,
        blocked=c["blocked"].T,
        produced=c["produced"].T,
        last_out=c["last_out"],
    )


def _recursion_scan(
    model: SerialModel,
    p: SerialParams,
    lanes_last: dict[str, jax.Array],
    serv_k: list[jax.Array],
    down: list[jax.Array | None],
) -> tuple[dict[str, jax.Array], jax.Array]:
    """The chunk's parts through the recursion, with the window statistics, as an XLA scan over
    the parts: the carry ``lanes_last`` after the chunk, and the lead times (n, V) (NaN: none in
    the window). ``serv_k`` are the service times, ``down`` the repair times (None: no
    failures), one (n, V) array per station."""
    frac_k = [
        None if d is None else jnp.where(sv > 0, d / sv, 0.0)
        for sv, d in zip(serv_k, down, strict=True)
    ]
    # The scan takes each station's (n, V) array as it is (stacking them into one (n, K, V)
    # array first is a strided copy of every draw); a step stacks its (K, V) rows.
    fails = [d is not None for d in down]
    xs = (tuple(serv_k), tuple(f for f in frac_k if f is not None))
    links = _links(model, p.capacity.T, p.transit.T)
    lo, hi = p.warmup, p.horizon  # (V,)

    def body(
        c: dict[str, jax.Array], x: tuple[tuple[jax.Array, ...], tuple[jax.Array, ...]]
    ) -> tuple[dict[str, jax.Array], jax.Array]:
        # Parts beyond the horizon contribute nothing: every statistic is clipped to the window.
        sv = jnp.stack(x[0])
        rows = iter(x[1])
        zero = jnp.zeros_like(x[0][0])
        fr = jnp.stack([next(rows) if on else zero for on in fails])
        start_v, comp_v, dep_v, starts = _advance(links, c["d_prev"], c["starts"], sv)
        run = _overlap(start_v, comp_v, lo, hi)
        out, rel = dep_v[-1], start_v[0]
        in_win = (out > lo) & (out <= hi)
        lead = out - rel
        new = {
            "d_prev": dep_v,
            "starts": starts,
            "delivered": c["delivered"] + in_win.astype(jnp.int32),
            "lt_sum": c["lt_sum"] + jnp.where(in_win, lead, 0.0),
            "wip_int": c["wip_int"] + _overlap(rel, out, lo, hi),
            "busy": c["busy"] + run * (1.0 - fr),
            "down": c["down"] + run * fr,
            "blocked": c["blocked"] + _overlap(comp_v, dep_v, lo, hi),
            "produced": c["produced"] + ((comp_v > lo) & (comp_v <= hi)).astype(jnp.int32),
            "last_out": out,
        }
        return new, jnp.where(in_win, lead, jnp.nan)

    c, leads = jax.lax.scan(body, lanes_last, xs)
    return c, leads


def _recursion_native(
    p: SerialParams,
    c: dict[str, jax.Array],
    serv_k: list[jax.Array],
    down: list[jax.Array | None],
) -> tuple[dict[str, jax.Array], jax.Array]:
    """What :func:`_recursion_scan` computes, through ``native.serial_chunk`` (which also works
    out the share of each service spent down): the same numbers, in the same order."""
    repair_of: list[int] = []
    repairs: list[jax.Array] = []
    for d in down:
        repair_of.append(len(repairs) if d is not None else -1)
        if d is not None:
            repairs.append(d)
    fk, starts, fv, produced, delivered, leads = native.serial_chunk(
        p.warmup,
        p.horizon,
        p.capacity.T,
        p.transit.T,
        repair_of,
        jnp.stack([c["d_prev"], c["busy"], c["down"], c["blocked"]]),
        c["starts"],
        jnp.stack([c["lt_sum"], c["wip_int"], c["last_out"]]),
        c["produced"],
        c["delivered"],
        serv_k,
        repairs,
    )
    out = {
        "d_prev": fk[0],
        "starts": starts,
        "delivered": delivered,
        "lt_sum": fv[0],
        "wip_int": fv[1],
        "busy": fk[1],
        "down": fk[2],
        "blocked": fk[3],
        "produced": produced,
        "last_out": fv[2],
    }
    return out, leads


def default_chunk(lanes: int) -> int:
    """Parts per jitted call for a batch of ``lanes``: 1,024 on an accelerator (fewer launches);
    on a CPU 128 for large batches (the per-chunk arrays stay in cache: with 512 lanes a device,
    30% faster than 256), more for small ones, whose calls are mostly dispatch (on this 2-core
    machine, the benchmark line over 8 hours: one lane 2.3 ms at 128, 0.9 ms at 1,024; 16 lanes
    3.8 and 2.3 ms; 32 lanes 5.8 ms at 128, 5.2 at 256, 7.4 at 1,024; 1,024 lanes 59 ms at 128,
    70 at 256). The results do not depend on it."""
    if jax.default_backend() != "cpu":
        return 1024
    if lanes <= 16:
        return 1024
    return 256 if lanes <= 64 else 128


def run(
    model: SerialModel,
    params: SerialParams,
    keys: jax.Array,
    *,
    chunk: int | None = None,
    progress: Callable[[float], None] | None = None,
) -> SerialState:
    """Run a batch (leading axis on params and keys) until every lane has passed its horizon.

    ``chunk`` parts (a multiple of :data:`GROUP`) are drawn and pushed through per jitted call:
    by default :func:`default_chunk`'s number for the batch. A lane's random
    numbers are keyed by the lane and the number of each part (and failure), so its results
    depend neither on ``chunk`` nor on the rest of the batch (a CPU's 128-part chunks and a
    GPU's 1,024 draw the same numbers for the same seed; XLA may round a gamma variate
    differently in the last bit in a batch of one lane, its fusions being different there). A
    large batch on a CPU with several cores is split into one group of lanes per core
    (``physics.process.devices``), each run in its own thread on its own device; the statistics
    over the window are the same as in one batch. On a CPU the draws, the failures, the
    recursion and the lead-time histogram run in the native kernels
    (:mod:`physics.process.native`) where they can be built: the same results, bit for bit.
    """
    v = keys.shape[0]
    devices = lane_devices(v, params)
    if chunk is None:
        chunk = default_chunk(v)
    if chunk <= 0 or chunk % GROUP:
        raise ValueError(f"chunk must be a positive multiple of {GROUP} parts, not {chunk}")
    # the native CPU kernels where they can be built (on first use)
    use_native = jax.default_backend() == "cpu" and native.available()
    if not devices:
        return _run_lanes(model, params, keys, chunk, progress, use_native)
    edges = [v * i // len(devices) for i in range(len(devices) + 1)]  # lanes of device i
    done = [0.0] * len(devices)
    results: list[SerialState | BaseException | None] = [None] * len(devices)
    lock = threading.Lock()
    host_p, host_k = jax.tree.map(np.asarray, (params, keys))

    def work(i: int) -> None:
        def prog(f: float) -> None:
            with lock:
                done[i] = f
                if progress is not None:
                    progress(min(done))

        sl = slice(edges[i], edges[i + 1])
        try:
            # sliced on the host (one XLA dispatch per array and device would cost more)
            p, k = jax.device_put(jax.tree.map(lambda a: a[sl], (host_p, host_k)), devices[i])
            results[i] = _run_lanes(model, p, k, chunk, prog, use_native)
        except BaseException as exc:  # re-raised by the caller's thread
            results[i] = exc

    threads = [threading.Thread(target=work, args=(i,)) for i in range(1, len(devices))]
    for t in threads:
        t.start()
    work(0)
    for t in threads:
        t.join()
    for r in results:
        if isinstance(r, BaseException):
            raise r
    merged = jax.tree.map(lambda *xs: np.concatenate([np.asarray(x) for x in xs]), *results)
    out: SerialState = jax.device_put(merged, devices[0])
    return out


@partial(jax.jit, static_argnums=(0,))
def _init_batch(model: SerialModel, keys: jax.Array) -> SerialState:
    """The initial state of every lane, made where ``keys`` are (one compiled call)."""
    return jax.vmap(lambda _: _init_state(model))(keys)


def _run_lanes(
    model: SerialModel,
    params: SerialParams,
    keys: jax.Array,
    chunk: int,
    progress: Callable[[float], None] | None,
    use_native: bool = False,
) -> SerialState:
    s: SerialState = _init_batch(model, keys)
    horizon = np.asarray(params.horizon)
    while True:
        s = _chunk_batch(model, chunk, params, s, keys, use_native)
        first = np.asarray(s.d_prev[..., 0])
        if progress is not None:
            progress(float(np.min(np.minimum(first / horizon, 1.0))))
        if np.all(first > horizon):
            return s


def kpis_of(model: SerialModel, p: SerialParams, s: SerialState, spec: LineSpec) -> kpi.RunKPIs:
    """The same KPIs as the general engine, mapped back to the file's station order."""

    def g(a: Any) -> NDArray[Any]:
        return np.asarray(a)

    order = serial_order(spec)
    assert order is not None
    inv = np.argsort(order)  # file index -> line position
    v = g(s.delivered).shape[0]
    window = np.broadcast_to(g(p.horizon) - g(p.warmup), (v,)).astype(np.float64)
    busy = g(s.busy)[:, inv] / window[:, None]
    down = g(s.down)[:, inv] / window[:, None]
    blocked = g(s.blocked)[:, inv] / window[:, None]
    produced = g(s.produced)[:, inv].astype(np.int64)
    parts = g(s.j).astype(np.int64) * len(model.kinds)
    return kpi.assemble(
        station_ids=tuple(st.id for st in spec.stations),
        window=window,
        fractions={
            "busy": busy,
            "blocked": blocked,
            "starved": np.clip(1.0 - busy - down - blocked, 0.0, 1.0),
            "down": down,
        },
        servers=np.ones_like(busy),
        pt_mean=np.broadcast_to(g(p.mean)[..., inv], busy.shape),
        delivered=g(s.delivered).astype(np.int64),
        wip_int=g(s.wip_int),
        lt_sum=g(s.lt_sum),
        lt_hist=g(s.lt_hist),
        produced=produced,
        scrapped=np.zeros_like(produced),
        completions=parts,
        events=parts,
        lost=np.zeros(v, dtype=np.int64),
    )


def simulate_kpis(
    spec: LineSpec,
    *,
    hours: float,
    warmup_hours: float = 0.0,
    replications: int = 1,
    seed: int = 0,
    progress: Callable[[float], None] | None = None,
) -> kpi.RunKPIs:
    """Replications of a serial line through the fast path."""
    from physics.process.api import replication_keys

    model, params = build_serial(spec)
    params = _with_horizon(params, hours, warmup_hours)
    pb = jax.tree.map(lambda a: jnp.broadcast_to(a, (replications, *a.shape)), params)
    keys = replication_keys(seed, 1, replications)
    state = run(model, pb, keys, progress=progress)
    return kpis_of(model, pb, state, spec)


def _with_horizon(p: SerialParams, hours: float, warmup_hours: float) -> SerialParams:
    check_horizon(hours, warmup_hours)
    return replace(
        p, horizon=jnp.asarray(hours * 3600.0), warmup=jnp.asarray(warmup_hours * 3600.0)
    )


# -- gradients ------------------------------------------------------------------------------------
def throughput_of_means(
    model: SerialModel,
    p: SerialParams,
    means: jax.Array,
    key: jax.Array,
    *,
    parts: int,
    warmup_parts: int,
) -> jax.Array:
    """Parts per hour over a fixed number of parts, as a differentiable function of the means.

    ``(parts - warmup_parts) / (D_K(parts) - D_K(warmup_parts)) * 3600``. With the same ``key``
    (common random numbers) the sample path is fixed, so ``jax.grad`` gives the IPA gradient.
    Failures enter as repair time per second of processing, drawn at the file's means and held
    fixed on the path, so a longer processing time carries proportionally more repair time
    (``E[S] = mean * (1 + mttr/mtbf)``); the chance that one more failure starts or ends a
    blocking period is not differentiated (a first-order approximation on lines with failures).
    """
    # The same draws as a run of this lane (its parts 0 .. parts - 1), from the file's parameters:
    # every family then scales with its mean.
    one = jax.tree.map(lambda a: a[None], p)  # a batch of one lane
    k_u, k_g, k_f = (k[None] for k in _lane_keys(key))
    drawn = -(-parts // GROUP) * GROUP  # whole gamma groups
    j0 = jnp.zeros((1,), jnp.int32)
    # Divided by their means: the random part, independent of the means for scale families, so
    # that gradients with respect to the means are pathwise.
    proc1 = jnp.stack(_samples(model, one, k_u, k_g, j0, drawn), axis=1)[:parts, :, 0]
    unit = proc1 / p.mean
    base = p
    proc = unit * means
    # Downtime per unit of processing, sampled at the file's means and held on the path: a longer
    # processing time then suffers proportionally more repair time, as E[S] = mean*(1 + mttr/mtbf).
    proc0 = jax.lax.stop_gradient(proc1)
    k = proc0.shape[1]
    zeros = jnp.zeros((1, k))
    cols, _, _ = _downtime(
        model, one, k_f, [proc0[:, i, None] for i in range(k)], zeros, zeros.astype(jnp.int32)
    )
    down0 = jnp.stack(
        [jnp.zeros_like(proc0[:, i]) if d is None else d[:, 0] for i, d in enumerate(cols)], axis=1
    )
    ratio = jax.lax.stop_gradient(down0 / proc0)
    p = replace(base, mean=means, warmup=jnp.asarray(-1.0), horizon=jnp.asarray(jnp.inf))
    down = proc * ratio
    serv = proc + down

    links = _links(model, p.capacity, p.transit)

    def body(
        c: tuple[jax.Array, jax.Array], sv: jax.Array
    ) -> tuple[tuple[jax.Array, jax.Array], jax.Array]:
        _, _, dep_v, starts = _advance(links, c[0], c[1], sv)
        return (dep_v, starts), dep_v[-1]

    s0 = _init_state(model)
    _, outs = jax.lax.scan(body, (s0.d_prev, s0.starts), serv)
    return (parts - warmup_parts) / (outs[-1] - outs[warmup_parts - 1]) * 3600.0


def throughput_gradient(
    spec: LineSpec, *, parts: int = 20000, warmup_parts: int = 1000, seed: int = 0
) -> tuple[float, dict[str, float]]:
    """Throughput (parts/hour) and its gradient with respect to each station's mean processing
    time (parts/hour per second), by IPA through the (max,+) recursion."""
    model, p = build_serial(spec)
    key = jax.random.PRNGKey(seed)
    f = jax.jit(
        jax.value_and_grad(
            partial(throughput_of_means, model, p, parts=parts, warmup_parts=warmup_parts)
        )
    )
    val, grad = f(p.mean, key)
    return float(val), {
        sid: float(g) for sid, g in zip(model.station_ids, np.asarray(grad), strict=True)
    }
