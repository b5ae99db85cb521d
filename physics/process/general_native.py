"""The general engine's event loop in the native CPU kernel (``csrc/general_chunk.cc``).

:func:`engine.run` and :func:`engine.advance` come here on the CPU when the kernels are
available (:func:`applies`). The start-up stays in XLA (:func:`engine._init_batch`); then each
chunk of steps is one call of ``native.general_chunk``, which runs every lane on its own, one
event after the other, instead of all lanes in lockstep as about 25 small XLA kernels an event.
The semantics and the arithmetic are those of :func:`engine._step_event` and
:func:`engine._transfer`, and the final states are the same bit for bit
(``tests/test_process_native_general.py``).

Between chunks the public :class:`engine.State` travels packed: its float64 fields flattened
into one (V, F) array, its int32 fields into one (V, I) array (:class:`Layout`), and the
parameters likewise; :func:`topology` describes the line to the kernel.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache, partial

import jax
import jax.numpy as jnp
import numpy as np

from physics.process import engine, native
from physics.process.dists import GAMMA_RETRY_SLOTS, gamma_constants, lognormal_params
from physics.process.model import LT_EDGES, Model, Params
from scenes.spec import DistKind, FailureMode, RoutingPolicy

#: The packed rows' fields, in the order of ``csrc/general_chunk.cc``'s enums.
F_FIELDS = (
    "now", "t_end", "t_fail", "t_rep", "ttf", "rem", "rel", "blk", "ring_t", "ring_r", "q_t",
    "next_arr", "acc", "wip_int", "lt_sum",
)  # fmt: skip
I_FIELDS = (
    "n_events", "st", "prev", "dest", "count", "q_head", "q_count", "rr", "wip", "delivered",
    "produced", "scrapped", "completions", "lost",
)  # fmt: skip
PF_FIELDS = (
    "pa", "pb", "pt_values", "scrap", "mtbf", "mttr", "transit", "weights", "ia_a", "ia_b",
    "ia_values", "warmup", "horizon", "pg", "ia_g",
)  # fmt: skip
PI_FIELDS = ("pt_nvalues", "servers", "capacity", "ia_nvalues")

_ROUTING = {
    RoutingPolicy.PROBABILITY: 0,
    RoutingPolicy.ROUND_ROBIN: 1,
    RoutingPolicy.SHORTEST_QUEUE: 2,
}
_FAILURES = {None: 0, FailureMode.OPERATION: 1, FailureMode.TIME: 2}
#: The kernel's limit on a station's outputs (its per-station scratch arrays).
MAX_OUTPUTS = 64


@dataclass(frozen=True)
class Layout:
    """Where each field sits in a lane's packed rows: ``name -> (offset, size)`` per row kind,
    and each state field's shape for one lane."""

    f: dict[str, tuple[int, int]]
    i: dict[str, tuple[int, int]]
    pf: dict[str, tuple[int, int]]
    pi: dict[str, tuple[int, int]]
    shapes: dict[str, tuple[int, ...]]

    @staticmethod
    def _offsets(sizes: dict[str, int], names: tuple[str, ...]) -> dict[str, tuple[int, int]]:
        out, at = {}, 0
        for name in names:
            out[name] = (at, sizes[name])
            at += sizes[name]
        return out

    def width(self, kind: str) -> int:
        row: dict[str, tuple[int, int]] = getattr(self, kind)
        return sum(size for _, size in row.values())


@lru_cache(maxsize=64)
def layout(model: Model, width: int) -> Layout:
    """The packed layout of ``model``'s state and parameters (``width``: the routing weights'
    columns)."""
    n, s, b, q = model.n_slots, model.n_stations, model.n_buffers, model.n_sources
    r, qs, m = model.ring, model.queue, model.n_values
    shapes: dict[str, tuple[int, ...]] = {
        "now": (), "t_end": (n,), "t_fail": (n,), "t_rep": (n,), "ttf": (n,), "rem": (n,),
        "rel": (n,), "blk": (n,), "ring_t": (b, r), "ring_r": (b, r), "q_t": (q, qs),
        "next_arr": (q,), "acc": (n, 4), "wip_int": (), "lt_sum": (),
        "n_events": (), "st": (n,), "prev": (n,), "dest": (n,), "count": (b,), "q_head": (q,),
        "q_count": (q,), "rr": (s,), "wip": (), "delivered": (), "produced": (s,),
        "scrapped": (s,), "completions": (), "lost": (),
    }  # fmt: skip
    sizes = {k: math.prod(v) for k, v in shapes.items()}
    psizes = {
        "pa": s, "pb": s, "pt_values": s * m, "scrap": s, "mtbf": s, "mttr": s, "transit": b,
        "weights": s * width, "ia_a": q, "ia_b": q, "ia_values": q * m, "warmup": 1,
        "horizon": 1, "pg": 4 * s, "ia_g": 4 * q, "pt_nvalues": s, "servers": s, "capacity": b, "ia_nvalues": q,
    }  # fmt: skip
    return Layout(
        f=Layout._offsets(sizes, F_FIELDS),
        i=Layout._offsets(sizes, I_FIELDS),
        pf=Layout._offsets(psizes, PF_FIELDS),
        pi=Layout._offsets(psizes, PI_FIELDS),
        shapes=shapes,
    )


def applies(model: Model, params: Params) -> bool:
    """Whether this line's runs go through the native kernel: on the CPU, kernels available, at
    most :data:`MAX_OUTPUTS` outputs a station, and no station with gamma times and more than
    ``dists.GAMMA_RETRY_SLOTS`` servers (whose times XLA draws by the bulk path, which the kernel
    does not repeat)."""
    if jax.default_backend() != "cpu":
        return False
    if any(
        k == DistKind.GAMMA and model.max_servers[i] > GAMMA_RETRY_SLOTS
        for i, k in enumerate(model.kinds)
    ):
        return False
    if params.weights.shape[-1] > MAX_OUTPUTS:
        return False
    return native.available()


@lru_cache(maxsize=64)
def topology(model: Model, width: int) -> np.ndarray:
    """The int32 description of ``model`` that ``csrc/general_chunk.cc`` reads (``read_topo``)."""
    tb = engine._tables(model)
    lay = layout(model, width)
    out: list[int] = [
        model.n_slots, model.n_stations, model.n_buffers, model.n_sources, model.ring,
        model.queue, model.n_values, width,
    ]  # fmt: skip
    for kind in ("f", "i", "pf", "pi"):
        row: dict[str, tuple[int, int]] = getattr(lay, kind)
        out += [at for at, _ in row.values()] + [lay.width(kind)]
    s = model.n_stations
    out += [native.DRAW_KINDS[str(k)] for k in model.kinds]
    out += list(model.max_servers) + list(model.offsets)
    out += [_FAILURES[f] for f in model.failure_mode]
    out += [_ROUTING[r] for r in model.routing]
    out += list(model.source_of)
    for lists in (model.outs, model.ins):
        for i in range(s):
            out += [len(lists[i]), *lists[i]]
    out += list(model.buf_src) + list(model.buf_dst)
    out += [int(x) for x in model.may_handoff] + [int(x) for x in model.may_queue]
    out += [int(x) for x in tb.pulled_handoff]
    out += [-1 if x is None else x for x in tb.pos_v]
    out += list(tb.slot_station) + list(tb.local)
    out += [int(x) for x in tb.keeps_dest] + [int(x) for x in tb.keeps_blk]
    out += [-1 if x is None else x for x in tb.pos_f]
    out += [-1 if x is None else x for x in tb.pos_r]
    out += list(model.source_station)
    out += [native.DRAW_KINDS[str(k)] for k in model.source_kinds]
    out += list(model.order)
    return np.asarray(out, dtype=np.int32)


def _family(kinds: tuple[DistKind, ...], mean: jax.Array, cv: jax.Array, low: jax.Array,
            high: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:  # fmt: skip
    """Each family's two constants, (V, K) each, as ``dists.sample`` computes them: the mean
    (deterministic, exponential), mu and sigma (lognormal), low and high - low (uniform), the
    mean and cv (gamma); and (V, K, 4) the gamma sampler's d, c, 1 / shape (cv^2) and boost (1
    or 0; ``dists.gamma_constants``), zeros for other families."""
    a, b, g = [], [], []
    for k, kind in enumerate(kinds):
        col = (slice(None), k)
        if kind == DistKind.GAMMA:
            # XLA rewrites the boost's log(1 - u) / (1 / cv^2) as log(1 - u) * cv^2
            cv2 = cv[col] * cv[col]
            boost, d, c = gamma_constants(1.0 / cv2)
            g.append(jnp.stack([d, c, cv2, boost.astype(jnp.float64)], axis=-1))
        else:
            g.append(jnp.zeros((mean.shape[0], 4)))
        if kind == DistKind.GAMMA:
            a.append(mean[col])
            b.append(cv[col])
        elif kind == DistKind.LOGNORMAL:
            mu, sigma = lognormal_params(mean[col], cv[col])
            a.append(mu)
            b.append(sigma)
        elif kind == DistKind.UNIFORM:
            a.append(low[col])
            b.append(high[col] - low[col])
        else:
            a.append(mean[col])
            b.append(jnp.zeros_like(mean[col]))
    v = mean.shape[0]
    if not a:
        return jnp.zeros((v, 0)), jnp.zeros((v, 0)), jnp.zeros((v, 0, 4))
    return jnp.stack(a, axis=1), jnp.stack(b, axis=1), jnp.stack(g, axis=1)


@partial(jax.jit, static_argnums=(0,))
def _pack_params(model: Model, p: Params) -> tuple[jax.Array, jax.Array]:
    v = p.horizon.shape[0]
    pa, pb, pg = _family(model.kinds, p.pt_mean, p.pt_cv, p.pt_low, p.pt_high)
    ia_a, ia_b, ia_g = _family(model.source_kinds, p.ia_mean, p.ia_cv, p.ia_low, p.ia_high)
    f = {
        "pa": pa, "pb": pb, "pt_values": p.pt_values, "scrap": p.scrap, "mtbf": p.mtbf,
        "mttr": p.mttr, "transit": p.transit, "weights": p.weights, "ia_a": ia_a, "ia_b": ia_b,
        "ia_values": p.ia_values, "warmup": p.warmup, "horizon": p.horizon, "pg": pg,
        "ia_g": ia_g,
    }  # fmt: skip
    i = {
        "pt_nvalues": p.pt_nvalues, "servers": p.servers, "capacity": p.capacity,
        "ia_nvalues": p.ia_nvalues,
    }  # fmt: skip
    pf = jnp.concatenate([f[k].astype(jnp.float64).reshape(v, -1) for k in PF_FIELDS], axis=1)
    pi = jnp.concatenate([i[k].astype(jnp.int32).reshape(v, -1) for k in PI_FIELDS], axis=1)
    return pf, pi


@partial(jax.jit, static_argnums=(0,))
def _pack_state(model: Model, s: engine.State) -> tuple[jax.Array, jax.Array]:
    """``s`` (batched, every buffer's oldest part first: ``head`` 0, as ``engine._export``
    leaves it) as its packed f64 and int32 rows."""
    v = s.now.shape[0]

    def rows(names: tuple[str, ...], dtype: jnp.dtype) -> jax.Array:
        parts = [getattr(s, k).astype(dtype).reshape(v, -1) for k in names]
        return jnp.concatenate(parts, axis=1)

    return rows(F_FIELDS, jnp.dtype(jnp.float64)), rows(I_FIELDS, jnp.dtype(jnp.int32))


@partial(jax.jit, static_argnums=(0, 1))
def _unpack_state(
    model: Model, width: int, sf: jax.Array, si: jax.Array, hist: jax.Array, key: jax.Array
) -> engine.State:
    lay = layout(model, width)
    v = sf.shape[0]
    fields = {}
    for rows, table in ((sf, lay.f), (si, lay.i)):
        for name, (at, size) in table.items():
            fields[name] = rows[:, at : at + size].reshape(v, *lay.shapes[name])
    head = jnp.zeros((v, model.n_buffers), jnp.int32)
    return engine.State(key=key, head=head, lt_hist=hist, **fields)


#: ``native.general_chunk`` compiled, the state's arrays donated (updated in place).
_chunk = jax.jit(native.general_chunk, donate_argnums=(6, 7, 8))


def _threads(lanes: int) -> int:
    """Threads for a chunk: one per CPU device (``physics.process.devices``: one per core, at
    most 8, or ``TWIN_CPU_DEVICES``), at most one per lane. Lanes never interact, so the count
    changes no result."""
    return max(1, min(len(jax.local_devices()), lanes))


def advance(
    model: Model,
    params: Params,
    state: engine.State,
    *,
    chunk: int,
    progress: Callable[[float], None] | None,
) -> engine.State:
    """Every lane of the batched ``state`` (its buffers oldest part first, ``head`` 0: see
    :func:`_pack_state`) to its ``params.horizon`` (past it: the lane is done),
    in chunks of ``chunk`` steps; ``progress`` after each chunk with the slowest lane's share
    of its horizon. ``params`` has a leading lane axis, as in :func:`engine.run`."""
    width = int(params.weights.shape[-1])
    v = state.now.shape[0]
    pf, pi = _pack_params(model, params)
    sf, si = _pack_state(model, state)
    hist = jnp.array(state.lt_hist, dtype=jnp.int32)
    topo = jnp.asarray(topology(model, width))
    key = jnp.asarray(state.key, dtype=jnp.uint32)
    edges = jnp.asarray(LT_EDGES)
    ctl = jnp.asarray([chunk, _threads(v)], dtype=jnp.int32)
    horizon = np.asarray(params.horizon)
    while True:
        sf, si, hist = _chunk(topo, key, pf, pi, edges, ctl, sf, si, hist)
        now = np.asarray(sf[:, 0])
        if progress is not None:
            progress(float(np.min(np.minimum(now / np.maximum(horizon, 1e-300), 1.0))))
        if np.all(now > horizon):
            break
    out: engine.State = _unpack_state(model, width, sf, si, hist, key)
    return out
