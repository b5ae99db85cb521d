"""The general exact discrete-event engine: pure ``init``/``step``/``run`` over one line.

Semantics are those of ``docs/process-semantics.md``. One step pops the earliest scheduled event
(argmin over every server's completion, failure and repair time, every source's next arrival and
every conveyor head), applies it with one-hot updates, then runs the *transfer phase*: passes over
the stations in reverse topological order (push finished parts on, then pull new ones) until no
part can move. Everything is written for one variant; batches are ``jax.vmap`` of it, and the
host loop in :func:`run` advances all variants chunk by chunk until each reaches its horizon.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtri

from physics.process.model import (
    BLOCKED,
    BUSY,
    DOWN,
    IDLE,
    LT_BINS,
    LT_EDGES,
    Model,
    Params,
)
from scenes.spec import DistKind, FailureMode, RoutingPolicy

INF = jnp.inf
_LT_EDGES = jnp.asarray(LT_EDGES)


@jax.tree_util.register_dataclass
@dataclass(frozen=True, slots=True, kw_only=True)
class State:
    """Dynamic state of one run. Shapes for one variant; N slots, B buffers, Q sources, R ring."""

    now: jax.Array  # () seconds, float64
    key: jax.Array  # (2,) uint32 PRNG key
    n_events: jax.Array  # () events processed
    st: jax.Array  # (N,) server state: IDLE, BUSY, BLOCKED, DOWN
    prev: jax.Array  # (N,) state before going down
    t_end: jax.Array  # (N,) completion time (inf unless busy and up)
    t_fail: jax.Array  # (N,) next failure time (inf while the clock is stopped)
    t_rep: jax.Array  # (N,) repair time (inf unless down)
    ttf: jax.Array  # (N,) remaining busy time to failure (operation mode, clock stopped)
    rem: jax.Array  # (N,) remaining processing time of a part interrupted by a failure
    rel: jax.Array  # (N,) release time of the part held
    dest: jax.Array  # (N,) destination output (probability routing)
    ring_t: jax.Array  # (B, R) entry times of the parts in each buffer (FIFO ring)
    ring_r: jax.Array  # (B, R) release times of those parts
    head: jax.Array  # (B,) ring index of the oldest part
    count: jax.Array  # (B,) parts in the buffer (in transit included)
    q_t: jax.Array  # (Q, QS) arrival times waiting at each timed source
    q_head: jax.Array  # (Q,)
    q_count: jax.Array  # (Q,)
    next_arr: jax.Array  # (Q,) next arrival time
    rr: jax.Array  # (S,) round-robin pointers
    wip: jax.Array  # () parts in the line now
    # statistics over the window (warmup, horizon]
    acc: jax.Array  # (N, 4) server-seconds in each state
    wip_int: jax.Array  # () integral of WIP, part-seconds
    delivered: jax.Array  # () parts delivered to the sink
    produced: jax.Array  # (S,) parts finished (not scrapped)
    scrapped: jax.Array  # (S,) parts scrapped
    lt_sum: jax.Array  # () sum of lead times of delivered parts
    lt_hist: jax.Array  # (LT_BINS,) lead-time histogram
    # whole-run counters
    completions: jax.Array  # () processing completions, all stations
    lost: jax.Array  # () arrivals dropped because a source queue was full


def _dc_replace(s: State, **kw: Any) -> State:
    return replace(s, **kw)


# -- sampling -------------------------------------------------------------------------------------
def _sample(
    kind: DistKind,
    u: jax.Array,
    key: jax.Array,
    mean: jax.Array,
    cv: jax.Array,
    low: jax.Array,
    high: jax.Array,
    values: jax.Array,
    nvalues: jax.Array,
) -> jax.Array:
    """Draw times of one distribution family from uniforms ``u`` (inverse CDF where closed)."""
    u = jnp.clip(u, 1e-12, 1.0 - 1e-12)
    match kind:
        case DistKind.DETERMINISTIC:
            return jnp.broadcast_to(mean, u.shape)
        case DistKind.EXPONENTIAL:
            return -mean * jnp.log1p(-u)
        case DistKind.LOGNORMAL:
            s2 = jnp.log1p(cv * cv)
            return jnp.exp(jnp.log(mean) - s2 / 2 + jnp.sqrt(s2) * ndtri(u))
        case DistKind.GAMMA:
            shape = 1.0 / (cv * cv)
            return jax.random.gamma(key, shape, u.shape, dtype=jnp.float64) * mean * cv * cv
        case DistKind.UNIFORM:
            return low + (high - low) * u
        case DistKind.EMPIRICAL:
            k = jnp.minimum((u * nvalues).astype(jnp.int32), nvalues - 1)
            return values[k]
    raise AssertionError(kind)  # pragma: no cover


def _process_times(model: Model, p: Params, u: jax.Array, key: jax.Array) -> jax.Array:
    """One processing-time draw for every server slot (a slot starts at most one part a step)."""
    parts = []
    for i, kind in enumerate(model.kinds):
        sl = slice(model.offsets[i], model.offsets[i] + model.max_servers[i])
        parts.append(
            _sample(
                kind, u[sl], jax.random.fold_in(key, i), p.pt_mean[i], p.pt_cv[i],
                p.pt_low[i], p.pt_high[i], p.pt_values[i], p.pt_nvalues[i],
            )
        )
    return jnp.concatenate(parts) if parts else jnp.zeros((0,))


def _interarrivals(model: Model, p: Params, u: jax.Array, key: jax.Array) -> jax.Array:
    out = [
        _sample(
            kind, u[q : q + 1], jax.random.fold_in(key, 1000 + q), p.ia_mean[q], p.ia_cv[q],
            p.ia_low[q], p.ia_high[q], p.ia_values[q], p.ia_nvalues[q],
        )
        for q, kind in enumerate(model.source_kinds)
    ]
    return jnp.concatenate(out) if out else jnp.zeros((0,))


# -- static per-slot tables -----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Tables:
    slot_station: np.ndarray
    local: np.ndarray
    op_mode: np.ndarray  # slot's station fails in operation mode
    time_mode: np.ndarray


def _tables(model: Model) -> _Tables:
    ss = np.asarray(model.slot_station, dtype=np.int32)
    local = np.asarray([n - model.offsets[ss[n]] for n in range(model.n_slots)], dtype=np.int32)
    op = np.asarray([model.failure_mode[i] == FailureMode.OPERATION for i in ss], dtype=bool)
    tm = np.asarray([model.failure_mode[i] == FailureMode.TIME for i in ss], dtype=bool)
    return _Tables(slot_station=ss, local=local, op_mode=op, time_mode=tm)


def _active(model: Model, p: Params) -> jax.Array:
    t = _tables(model)
    return jnp.asarray(t.local) < p.servers[jnp.asarray(t.slot_station)]


# -- the transfer phase ---------------------------------------------------------------------------
class _Xfer:
    """Mutable working copy of the state during one transfer phase (traced, so still pure)."""

    def __init__(self, model: Model, p: Params, s: State, t: jax.Array, pt: jax.Array):
        self.m, self.p, self.t, self.pt = model, p, t, pt
        self.f: dict[str, jax.Array] = {f.name: getattr(s, f.name) for f in fields(State)}
        self.active = _active(model, p)
        self.in_window = t > p.warmup

    def state(self) -> State:
        return State(**self.f)

    def slot_vec(self, name: str, i: int) -> jax.Array:
        return self.f[name][self.m.offsets[i] : self.m.offsets[i] + self.m.max_servers[i]]

    def idle_mask(self, j: int) -> jax.Array:
        sl = slice(self.m.offsets[j], self.m.offsets[j] + self.m.max_servers[j])
        return (self.f["st"][sl] == IDLE) & self.active[sl]

    def start(self, n: jax.Array | int, go: jax.Array, rel: jax.Array) -> None:
        """Server slot ``n`` starts a part released at ``rel`` where ``go``."""
        f, t = self.f, self.t
        f["st"] = f["st"].at[n].set(jnp.where(go, BUSY, f["st"][n]))
        f["t_end"] = f["t_end"].at[n].set(jnp.where(go, t + self.pt[n], f["t_end"][n]))
        f["rel"] = f["rel"].at[n].set(jnp.where(go, rel, f["rel"][n]))
        if any(mode == FailureMode.OPERATION for mode in self.m.failure_mode):
            op = jnp.asarray(_tables(self.m).op_mode)[n]
            f["t_fail"] = f["t_fail"].at[n].set(
                jnp.where(go & op, t + f["ttf"][n], f["t_fail"][n])
            )

    def push(self, i: int) -> None:
        m, f, t = self.m, self.f, self.t
        outs = m.outs[i]
        slots = m.slots(i)
        if not outs:  # deliver to the sink
            sl = slice(slots.start, slots.stop)
            blk = f["st"][sl] == BLOCKED
            lead = t - f["rel"][sl]
            counted = blk & self.in_window
            f["delivered"] = f["delivered"] + jnp.sum(counted)
            f["lt_sum"] = f["lt_sum"] + jnp.sum(jnp.where(counted, lead, 0.0))
            bins = jnp.clip(jnp.searchsorted(_LT_EDGES, lead) - 1, 0, LT_BINS - 1)
            f["lt_hist"] = f["lt_hist"].at[bins].add(counted.astype(f["lt_hist"].dtype))
            f["wip"] = f["wip"] - jnp.sum(blk)
            f["st"] = f["st"].at[sl].set(jnp.where(blk, IDLE, f["st"][sl]))
            return
        n_out = len(outs)
        policy = m.routing[i]
        for n in slots:
            blocked = f["st"][n] == BLOCKED
            rooms = []
            for e in outs:
                cap = self.p.capacity[e]
                room = jnp.asarray(False)
                if m.may_queue[e]:
                    room = room | ((cap > 0) & (f["count"][e] < cap))
                if m.may_handoff[e]:
                    room = room | ((cap == 0) & jnp.any(self.idle_mask(m.buf_dst[e])))
                rooms.append(room)
            room_v = jnp.stack(rooms)
            pos = jnp.arange(n_out)
            if n_out == 1:
                choice = jnp.asarray(0)
            elif policy == RoutingPolicy.PROBABILITY:
                choice = f["dest"][n]
            elif policy == RoutingPolicy.SHORTEST_QUEUE:
                counts = jnp.stack([f["count"][e] for e in outs])
                choice = jnp.argmin(jnp.where(room_v, counts * n_out + pos, jnp.iinfo(jnp.int32).max))
            else:  # round robin from the pointer
                score = (pos - f["rr"][i]) % n_out
                choice = jnp.argmin(jnp.where(room_v, score, n_out + 1))
            go = blocked & room_v[choice]
            rel = f["rel"][n]
            for k, e in enumerate(outs):
                go_k = go & (choice == k)
                cap = self.p.capacity[e]
                if m.may_queue[e]:
                    enq = go_k & (cap > 0)
                    at = (f["head"][e] + f["count"][e]) % m.ring
                    f["ring_t"] = f["ring_t"].at[e, at].set(jnp.where(enq, t, f["ring_t"][e, at]))
                    f["ring_r"] = f["ring_r"].at[e, at].set(jnp.where(enq, rel, f["ring_r"][e, at]))
                    f["count"] = f["count"].at[e].add(enq.astype(jnp.int32))
                if m.may_handoff[e]:
                    hand = go_k & (cap == 0)
                    j = m.buf_dst[e]
                    idle = self.idle_mask(j)
                    target = m.offsets[j] + jnp.argmax(idle)
                    self.start(target, hand, rel)
            if n_out > 1 and policy == RoutingPolicy.ROUND_ROBIN:
                f["rr"] = f["rr"].at[i].set(jnp.where(go, (choice + 1) % n_out, f["rr"][i]))
            f["st"] = f["st"].at[n].set(jnp.where(go, IDLE, f["st"][n]))

    def pull(self, j: int) -> None:
        m, f, t = self.m, self.f, self.t
        q = m.source_of[j]
        queued = [e for e in m.ins[j] if m.may_queue[e]]
        if not m.ins[j] and q < 0:  # saturated: every idle server starts a new part now
            sl = slice(m.offsets[j], m.offsets[j] + m.max_servers[j])
            idle = self.idle_mask(j)
            for k, n in enumerate(m.slots(j)):
                self.start(n, idle[k], t)
            f["wip"] = f["wip"] + jnp.sum(idle)
            del sl
            return
        if not queued and q < 0:
            return  # only direct-handoff inputs: upstream pushes start these servers
        for n in m.slots(j):
            idle = (f["st"][n] == IDLE) & self.active[n]
            avail, ready, rels = [], [], []
            for e in queued:
                h = f["head"][e]
                rt = f["ring_t"][e, h] + self.p.transit[e]
                ok = (f["count"][e] > 0) & (rt <= t)
                avail.append(ok)
                ready.append(jnp.where(ok, rt, INF))
                rels.append(f["ring_r"][e, h])
            if q >= 0:
                ok = f["q_count"][q] > 0
                at = f["q_t"][q, f["q_head"][q]]
                avail.append(ok)
                ready.append(jnp.where(ok, at, INF))
                rels.append(at)
            c = jnp.argmin(jnp.stack(ready))
            take = idle & jnp.any(jnp.stack(avail))
            for k, e in enumerate(queued):
                pk = (take & (c == k)).astype(jnp.int32)
                f["head"] = f["head"].at[e].set((f["head"][e] + pk) % m.ring)
                f["count"] = f["count"].at[e].add(-pk)
            if q >= 0:
                pk = (take & (c == len(queued))).astype(jnp.int32)
                f["q_head"] = f["q_head"].at[q].set((f["q_head"][q] + pk) % m.queue)
                f["q_count"] = f["q_count"].at[q].add(-pk)
            self.start(n, take, jnp.stack(rels)[c])

    def can_move(self) -> jax.Array:
        """Whether another pass could move a part (exact, so the loop ends)."""
        m, f, t = self.m, self.f, self.t
        moves = [jnp.asarray(False)]
        idle_any = [jnp.any(self.idle_mask(j)) for j in range(m.n_stations)]
        for e in range(m.n_buffers):
            u, j = m.buf_src[e], m.buf_dst[e]
            cap = self.p.capacity[e]
            if m.may_queue[e]:
                rt = f["ring_t"][e, f["head"][e]] + self.p.transit[e]
                moves.append(idle_any[j] & (f["count"][e] > 0) & (rt <= t))
            blocked = self.slot_vec("st", u) == BLOCKED
            if m.routing[u] == RoutingPolicy.PROBABILITY and len(m.outs[u]) > 1:
                blocked = blocked & (self.slot_vec("dest", u) == m.outs[u].index(e))
            room = jnp.asarray(False)
            if m.may_queue[e]:
                room = room | ((cap > 0) & (f["count"][e] < cap))
            if m.may_handoff[e]:
                room = room | ((cap == 0) & idle_any[j])
            moves.append(jnp.any(blocked) & room)
        for q, j in enumerate(m.source_station):
            moves.append(idle_any[j] & (f["q_count"][q] > 0))
        return jnp.any(jnp.stack(moves))


def _transfer(model: Model, p: Params, s: State, t: jax.Array, pt: jax.Array) -> State:
    def one_pass(s: State) -> State:
        x = _Xfer(model, p, s, t, pt)
        for i in model.order:
            x.push(i)
            x.pull(i)
        return x.state()

    def cond(c: tuple[State, jax.Array]) -> jax.Array:
        s, k = c
        return (k < 4 * model.n_stations + 4) & _Xfer(model, p, s, t, pt).can_move()

    def body(c: tuple[State, jax.Array]) -> tuple[State, jax.Array]:
        return one_pass(c[0]), c[1] + 1

    s = one_pass(s)
    s, _ = jax.lax.while_loop(cond, body, (s, jnp.asarray(0)))
    return s


# -- init and step --------------------------------------------------------------------------------
def init(model: Model, p: Params, key: jax.Array) -> State:
    """The empty line at time 0, after its first transfer phase (saturated stations start)."""
    n, b, q = model.n_slots, model.n_buffers, model.n_sources
    tb = _tables(model)
    key, k_ttf, k_ia, k_pt, k_g = jax.random.split(key, 5)
    mtbf = p.mtbf[jnp.asarray(tb.slot_station)]
    ttf0 = -mtbf * jnp.log1p(-jax.random.uniform(k_ttf, (n,), dtype=jnp.float64))
    u_ia = jax.random.uniform(k_ia, (max(q, 1),), dtype=jnp.float64)
    f64 = jnp.float64
    s = State(
        now=jnp.asarray(0.0, f64),
        key=key,
        n_events=jnp.asarray(0, jnp.int32),
        st=jnp.full((n,), IDLE, jnp.int32),
        prev=jnp.full((n,), IDLE, jnp.int32),
        t_end=jnp.full((n,), INF, f64),
        t_fail=jnp.where(jnp.asarray(tb.time_mode), ttf0, INF),
        t_rep=jnp.full((n,), INF, f64),
        ttf=jnp.where(jnp.asarray(tb.op_mode), ttf0, INF),
        rem=jnp.zeros((n,), f64),
        rel=jnp.zeros((n,), f64),
        dest=jnp.zeros((n,), jnp.int32),
        ring_t=jnp.zeros((b, model.ring), f64),
        ring_r=jnp.zeros((b, model.ring), f64),
        head=jnp.zeros((b,), jnp.int32),
        count=jnp.zeros((b,), jnp.int32),
        q_t=jnp.zeros((q, model.queue), f64),
        q_head=jnp.zeros((q,), jnp.int32),
        q_count=jnp.zeros((q,), jnp.int32),
        next_arr=_interarrivals(model, p, u_ia, k_g),
        rr=jnp.zeros((model.n_stations,), jnp.int32),
        wip=jnp.asarray(0, jnp.int32),
        acc=jnp.zeros((n, 4), f64),
        wip_int=jnp.asarray(0.0, f64),
        delivered=jnp.asarray(0, jnp.int32),
        produced=jnp.zeros((model.n_stations,), jnp.int32),
        scrapped=jnp.zeros((model.n_stations,), jnp.int32),
        lt_sum=jnp.asarray(0.0, f64),
        lt_hist=jnp.zeros((LT_BINS,), jnp.int32),
        completions=jnp.asarray(0, jnp.int32),
        lost=jnp.asarray(0, jnp.int32),
    )
    pt = _process_times(model, p, jax.random.uniform(k_pt, (n,), dtype=f64), k_g)
    return _transfer(model, p, s, s.now, pt)


def _conveyor_ready(model: Model, p: Params, s: State) -> jax.Array:
    if model.n_buffers == 0:
        return jnp.zeros((0,))
    heads = jnp.take_along_axis(s.ring_t, s.head[:, None], axis=1)[:, 0] + p.transit
    due = (s.count > 0) & (heads > s.now) & jnp.asarray(model.has_transit)
    return jnp.where(due, heads, INF)


def step(model: Model, p: Params, s: State) -> State:
    """Advance to the next event (or to the horizon, if none comes before it) and apply it."""
    n = model.n_slots
    tb = _tables(model)
    sstation = jnp.asarray(tb.slot_station)
    cand = jnp.concatenate([s.t_end, s.t_fail, s.t_rep, s.next_arr, _conveyor_ready(model, p, s)])
    idx = jnp.argmin(cand)
    t_ev = cand[idx]
    fire = t_ev <= p.horizon
    t = jnp.minimum(t_ev, p.horizon)

    # statistics over (now, t] within the window
    dt = jnp.maximum(t, p.warmup) - jnp.maximum(s.now, p.warmup)
    active = _active(model, p)
    occ = jax.nn.one_hot(s.st, 4, dtype=jnp.float64) * active[:, None]
    s = _dc_replace(s, acc=s.acc + dt * occ, wip_int=s.wip_int + dt * s.wip, now=t)

    key, k_u, k_g = jax.random.split(s.key, 3)
    width = max(n, model.n_sources, 1)
    u = jax.random.uniform(k_u, (3, width), dtype=jnp.float64)
    e_n = -jnp.log1p(-jnp.clip(u[2, :n], 0.0, 1.0 - 1e-12))  # unit exponentials
    slots = jnp.arange(n)
    in_window = t > p.warmup
    mtbf_s, mttr_s = p.mtbf[sstation], p.mttr[sstation]

    # completion
    m_c = fire & (slots == idx)
    scrap = m_c & (u[1, :n] < p.scrap[sstation])
    done = m_c & ~scrap
    st = jnp.where(scrap, IDLE, jnp.where(done, BLOCKED, s.st))
    produced = s.produced.at[sstation].add((done & in_window).astype(jnp.int32))
    scrapped = s.scrapped.at[sstation].add((scrap & in_window).astype(jnp.int32))
    dest = s.dest
    if any(r == RoutingPolicy.PROBABILITY for r in model.routing):
        w = p.weights[sstation]
        cdf = jnp.cumsum(w, axis=1)
        draw = jnp.sum(u[2, :n, None] * cdf[:, -1:] >= cdf, axis=1)
        dest = jnp.where(m_c, jnp.minimum(draw, w.shape[1] - 1), dest)
    op = jnp.asarray(tb.op_mode)
    ttf = jnp.where(m_c & op, s.t_fail - t, s.ttf)
    t_fail = jnp.where(m_c & op, INF, s.t_fail)
    t_end = jnp.where(m_c, INF, s.t_end)

    # failure
    m_f = fire & (slots + n == idx)
    prev = jnp.where(m_f, st, s.prev)
    rem = jnp.where(m_f & (st == BUSY), t_end - t, s.rem)
    t_end = jnp.where(m_f, INF, t_end)
    st = jnp.where(m_f, DOWN, st)
    t_fail = jnp.where(m_f, INF, t_fail)
    t_rep = jnp.where(m_f, t + mttr_s * e_n, s.t_rep)

    # repair
    m_r = fire & (slots + 2 * n == idx)
    new_ttf = mtbf_s * e_n
    was_busy = m_r & (prev == BUSY)
    st = jnp.where(m_r, prev, st)
    t_rep = jnp.where(m_r, INF, t_rep)
    t_end = jnp.where(was_busy, t + rem, t_end)
    t_fail = jnp.where(m_r & (jnp.asarray(tb.time_mode) | was_busy), t + new_ttf, t_fail)
    ttf = jnp.where(m_r & op & ~was_busy, new_ttf, ttf)

    # arrival at a timed source
    q_t, q_count, next_arr, lost = s.q_t, s.q_count, s.next_arr, s.lost
    wip = s.wip - jnp.sum(scrap).astype(s.wip.dtype)  # a scrapped part leaves the line
    if model.n_sources:
        srcs = jnp.arange(model.n_sources)
        m_a = fire & (srcs + 3 * n == idx)
        fits = m_a & (s.q_count < model.queue)
        at = (s.q_head + s.q_count) % model.queue
        q_t = s.q_t.at[srcs, at].set(jnp.where(fits, t, s.q_t[srcs, at]))
        q_count = s.q_count + fits.astype(jnp.int32)
        wip = wip + jnp.sum(fits).astype(wip.dtype)
        lost = lost + jnp.sum(m_a & ~fits).astype(lost.dtype)
        ia = _interarrivals(model, p, u[1, : model.n_sources], jax.random.fold_in(k_g, 7))
        next_arr = jnp.where(m_a, t + ia, s.next_arr)

    s = _dc_replace(
        s, key=key, n_events=s.n_events + fire.astype(jnp.int32), st=st, prev=prev, t_end=t_end,
        t_fail=t_fail, t_rep=t_rep, ttf=ttf, rem=rem, dest=dest, q_t=q_t, q_count=q_count,
        next_arr=next_arr, wip=wip, lost=lost, produced=produced, scrapped=scrapped,
        completions=s.completions + jnp.sum(m_c).astype(jnp.int32),
    )
    pt = _process_times(model, p, u[0, :n], k_g)
    return _transfer(model, p, s, t, pt)


# -- running --------------------------------------------------------------------------------------
def _chunk(model: Model, chunk: int) -> Callable[[Params, State], State]:
    def run_chunk(p: Params, s: State) -> State:
        def cond(c: tuple[State, jax.Array]) -> jax.Array:
            return (c[1] < chunk) & (c[0].now < p.horizon)

        def body(c: tuple[State, jax.Array]) -> tuple[State, jax.Array]:
            return step(model, p, c[0]), c[1] + 1

        return jax.lax.while_loop(cond, body, (s, jnp.asarray(0)))[0]

    return run_chunk


@partial(jax.jit, static_argnums=(0,))
def _init_batch(model: Model, p: Params, keys: jax.Array) -> State:
    return jax.vmap(partial(init, model))(p, keys)


@partial(jax.jit, static_argnums=(0, 1), donate_argnums=(3,))
def _chunk_batch(model: Model, chunk: int, p: Params, s: State) -> State:
    return jax.vmap(_chunk(model, chunk))(p, s)


def run(
    model: Model,
    params: Params,
    keys: jax.Array,
    *,
    chunk: int = 2048,
    progress: Callable[[float], None] | None = None,
) -> State:
    """Run a batch of variants to their horizons. ``params`` and ``keys`` have a leading axis V.

    ``progress`` is called after each chunk with the fraction of simulated time done (the
    slowest variant's). Returns the batched final :class:`State`.
    """
    s = _init_batch(model, params, keys)
    horizon = np.asarray(params.horizon)
    while True:
        s = _chunk_batch(model, chunk, params, s)
        now = np.asarray(s.now)
        if progress is not None:
            progress(float(np.min(now / horizon)))
        if np.all(now >= horizon):
            return s
