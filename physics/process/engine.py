"""The general exact discrete-event engine: pure ``init``/``step``/``run`` over one line.

Semantics are those of ``docs/process-semantics.md``. One step pops the earliest scheduled event
(argmin over every server's completion, failure and repair time, every source's next arrival and
every conveyor head), applies it with one-hot updates, then runs the *transfer phase*: passes over
the stations in reverse topological order (push finished parts on, then pull new ones), each
ending with :meth:`_Xfer.forward_pulls`, until no part can move. Everything is written for one
variant; batches are ``jax.vmap`` of it, and the host loop in :func:`run` advances all variants
chunk by chunk until each reaches its horizon. On a CPU, :func:`run` and :func:`advance` hand
the steps to a C++ kernel that runs each lane on its own with the same semantics and roundings
(:mod:`physics.process.general_native`), where the line allows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cache, lru_cache, partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import shard_map
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from numpy.typing import NDArray

from physics.process.devices import MIN_LANES_PER_DEVICE_GENERAL, lane_devices
from physics.process.dists import (
    COUNTER_TAG,
    GENERAL_RNG,
    counter_uniforms,
    philox4x32,
    raw_key,
    rng_key,
    sample,
    unit_exponential,
)
from physics.process.model import (
    BLOCKED,
    BUSY,
    DOWN,
    IDLE,
    LT_BINS,
    Model,
    Params,
    add_lead_times,
    lt_bins,
)
from scenes.errors import SimulationError
from scenes.spec import DistKind, FailureMode, RoutingPolicy

INF = jnp.inf

#: Whether each transfer pass ends with :meth:`_Xfer.forward_pulls` (the same results, fewer
#: passes; ``tests/test_process_transfer.py`` compares both ways).
FORWARD_PULLS = True
#: Whether each station's push and pull run in their own one-trip loop (:meth:`_Xfer.isolated`):
#: ``None`` chooses by backend, on for the CPU only. The same results either way. On the CPU the
#: loops keep XLA from fusing (and recomputing) shared logic into many kernels, about 12% faster;
#: on a GPU each loop trip is a device-to-host round trip for its predicate, which made an event
#: step several times slower on an H100 (``docs/benchmarks.md``).
ISOLATE_STATIONS: bool | None = None


def _once() -> jax.Array | None:
    """The ``once`` argument of :func:`_chunk_lanes`: a traced 1 where stations are isolated,
    else ``None``."""
    isolate = ISOLATE_STATIONS
    if isolate is None:
        isolate = jax.default_backend() == "cpu"
    return jnp.asarray(1, _I32) if isolate else None


@jax.tree_util.register_dataclass
@dataclass(frozen=True, slots=True, kw_only=True)
class State:
    """Dynamic state of one run. Shapes for one variant; N slots, B buffers, Q sources, R ring."""

    now: jax.Array  # () seconds, float64
    key: jax.Array  # (2,) uint32: the lane key; event n draws from Philox(key, n)
    n_events: jax.Array  # () events processed
    st: jax.Array  # (N,) server state: IDLE, BUSY, BLOCKED, DOWN
    prev: jax.Array  # (N,) state before going down
    t_end: jax.Array  # (N,) completion time (inf unless busy and up)
    t_fail: jax.Array  # (N,) next failure time (inf while the clock is stopped)
    t_rep: jax.Array  # (N,) repair time (inf unless down)
    ttf: jax.Array  # (N,) remaining busy time to failure (operation mode, clock stopped)
    rem: jax.Array  # (N,) remaining processing time of a part interrupted by a failure
    rel: jax.Array  # (N,) release time of the part held
    blk: jax.Array  # (N,) when the server last became blocked (capacity-0 handoff order)
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


# -- sampling -------------------------------------------------------------------------------------
def _process_times(model: Model, p: Params, u: jax.Array, key: jax.Array) -> jax.Array:
    """One processing-time draw for every server slot (a slot starts at most one part a step)."""
    parts = []
    for i, kind in enumerate(model.kinds):
        sl = slice(model.offsets[i], model.offsets[i] + model.max_servers[i])
        parts.append(
            sample(
                kind,
                u[sl],
                jax.random.fold_in(key, i),
                p.pt_mean[i],
                p.pt_cv[i],
                p.pt_low[i],
                p.pt_high[i],
                p.pt_values[i],
                p.pt_nvalues[i],
            )
        )
    return jnp.concatenate(parts) if parts else jnp.zeros((0,))


def _interarrivals(model: Model, p: Params, u: jax.Array, key: jax.Array) -> jax.Array:
    out = [
        sample(
            kind,
            u[q : q + 1],
            jax.random.fold_in(key, 1000 + q),
            p.ia_mean[q],
            p.ia_cv[q],
            p.ia_low[q],
            p.ia_high[q],
            p.ia_values[q],
            p.ia_nvalues[q],
        )
        for q, kind in enumerate(model.source_kinds)
    ]
    return jnp.concatenate(out) if out else jnp.zeros((0,))


# -- static tables --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Tables:
    """Static per-slot, per-buffer and per-event tables of a model (computed once per model)."""

    slot_station: tuple[int, ...]
    local: tuple[int, ...]  # server index within its station
    fails: tuple[bool, ...]  # slot's station has failures
    op_mode: tuple[bool, ...]  # ... in operation mode
    time_mode: tuple[bool, ...]  # ... in time mode
    any_op: bool
    sink_slots: tuple[int, ...]  # slots of stations without outgoing buffers
    keeps_dest: tuple[bool, ...]  # slot keeps a drawn destination (probability, > 1 output)
    keeps_rr: tuple[bool, ...]  # station keeps a round-robin pointer (> 1 output)
    keeps_blk: tuple[bool, ...]  # slot may hand over through a capacity-0 link
    # A capacity-0 link whose sender routes simply (one output, or a drawn destination): the
    # receiver picks among its candidates by how long each is ready ("receiver decides"). Links
    # out of round-robin or shortest-queue splits are handed over by the sender's push.
    pulled_handoff: tuple[bool, ...]  # per buffer
    # positions in the event-candidate vector (None: that event never happens)
    pos_c: tuple[int, ...]
    pos_f: tuple[int | None, ...]
    pos_r: tuple[int | None, ...]
    pos_a: tuple[int, ...]
    pos_v: tuple[int | None, ...]  # conveyor heads (queueing buffers with a transit time)


@lru_cache(maxsize=64)
def _tables(model: Model) -> _Tables:
    n = model.n_slots
    ss = model.slot_station
    local = tuple(k - model.offsets[ss[k]] for k in range(n))
    fails = tuple(model.failure_mode[i] is not None for i in ss)
    op = tuple(model.failure_mode[i] == FailureMode.OPERATION for i in ss)
    tm = tuple(model.failure_mode[i] == FailureMode.TIME for i in ss)
    sink = tuple(k for k in range(n) if not model.outs[ss[k]])
    multi = tuple(len(o) > 1 for o in model.outs)
    dest = tuple(multi[i] and model.routing[i] == RoutingPolicy.PROBABILITY for i in ss)
    rr = tuple(
        multi[i] and model.routing[i] == RoutingPolicy.ROUND_ROBIN for i in range(model.n_stations)
    )
    # Candidates in the order completions, failures, repairs, arrivals, conveyor heads (as in the
    # contract); events that can never happen (their time is always inf) are left out.
    pos = 0
    pos_c = tuple(range(n))
    pos += n
    pos_f: list[int | None] = []
    for k in range(n):
        pos_f.append(pos if fails[k] else None)
        pos += fails[k]
    pos_r: list[int | None] = []
    for k in range(n):
        pos_r.append(pos if fails[k] else None)
        pos += fails[k]
    pos_a = tuple(range(pos, pos + model.n_sources))
    pos += model.n_sources
    pos_v: list[int | None] = []
    for e in range(model.n_buffers):
        conv = model.may_queue[e] and model.has_transit[e]
        pos_v.append(pos if conv else None)
        pos += conv
    pulled = tuple(
        model.may_handoff[e]
        and (
            len(model.outs[model.buf_src[e]]) == 1
            or model.routing[model.buf_src[e]] == RoutingPolicy.PROBABILITY
        )
        for e in range(model.n_buffers)
    )
    blk = tuple(any(pulled[e] for e in model.outs[ss[k]]) for k in range(n))
    return _Tables(
        slot_station=ss,
        local=local,
        fails=fails,
        op_mode=op,
        time_mode=tm,
        any_op=any(op),
        sink_slots=sink,
        keeps_dest=dest,
        keeps_rr=rr,
        keeps_blk=blk,
        pulled_handoff=pulled,
        pos_c=pos_c,
        pos_f=tuple(pos_f),
        pos_r=tuple(pos_r),
        pos_a=pos_a,
        pos_v=tuple(pos_v),
    )


def _active(model: Model, p: Params) -> tuple[jax.Array, ...]:
    tb = _tables(model)
    return tuple(
        jnp.asarray(tb.local[k]) < p.servers[tb.slot_station[k]] for k in range(model.n_slots)
    )


# -- the lane state used inside the engine --------------------------------------------------------
Opt = jax.Array | None
Tup = tuple[jax.Array, ...]
OptTup = tuple[Opt, ...]


@jax.tree_util.register_dataclass
@dataclass(frozen=True, slots=True, kw_only=True)
class _Lane:
    """:class:`State` as the step sees it: per-slot and per-buffer fields are tuples of scalars
    (so that, vmapped, every update is an elementwise select on a (V,) vector and no scatter or
    gather is needed), buffers are FIFO shift registers (one array each, so that a push or a pop
    is one select over it) with the oldest part at index 0, and
    fields that never change for a slot (failure clocks of stations without failures...) are
    ``None``. The lead-time histogram is kept outside (see :func:`_chunk_batch`)."""

    now: jax.Array
    key: jax.Array
    n_events: jax.Array
    wip: jax.Array
    wip_int: jax.Array
    delivered: jax.Array
    lt_sum: jax.Array
    completions: jax.Array
    lost: jax.Array
    st: Tup
    t_end: Tup
    rel: Tup
    prev: OptTup
    t_fail: OptTup
    t_rep: OptTup
    rem: OptTup
    ttf: OptTup
    dest: OptTup
    blk: OptTup
    ring_t: tuple[jax.Array | None, ...]  # per queueing buffer, oldest first
    ring_r: tuple[jax.Array | None, ...]
    count: OptTup
    q_t: Tup  # (QS,) per timed source (a ring from q_head)
    q_head: Tup
    q_count: Tup
    next_arr: Tup
    rr: OptTup
    acc: jax.Array  # (N, 4)
    produced: jax.Array  # (S,)
    scrapped: jax.Array  # (S,)


_I32 = jnp.int32
_F64 = jnp.float64


def _ring_push(ring: jax.Array, count: jax.Array, go: jax.Array, value: jax.Array) -> jax.Array:
    """``ring`` (a FIFO holding ``count`` parts, oldest first) with ``value`` appended where ``go``."""
    return jnp.where(go & (jnp.arange(ring.shape[0], dtype=_I32) == count), value, ring)


def _ring_pop(ring: jax.Array, go: jax.Array) -> jax.Array:
    """The FIFO ``ring`` without its oldest part where ``go``."""
    return jnp.where(go, jnp.concatenate([ring[1:], ring[-1:]]), ring)


def _pick(values: list[jax.Array], c: jax.Array) -> jax.Array:
    return values[0] if len(values) == 1 else jnp.stack(values)[c]


# -- the transfer phase ---------------------------------------------------------------------------
_XFER_FIELDS = (
    "st",
    "t_end",
    "rel",
    "t_fail",
    "ring_t",
    "ring_r",
    "count",
    "q_head",
    "q_count",
    "rr",
    "wip",
)


class _Xfer:
    """Mutable working copy of the fields a transfer phase changes (traced, so still pure)."""

    def __init__(
        self,
        model: Model,
        p: Params,
        lane: _Lane,
        x: dict[str, Any],
        t: jax.Array,
        pt: jax.Array,
        active: tuple[jax.Array, ...],
    ):
        self.m, self.tb, self.p, self.t, self.pt, self.active = (
            model,
            _tables(model),
            p,
            t,
            pt,
            active,
        )
        self.lane = lane  # read-only fields (ttf, dest, q_t)
        self.load(x)

    def load(self, x: dict[str, Any]) -> None:
        """Take the working fields from ``x`` (as :meth:`carry` returns them)."""
        self.st: list[jax.Array] = list(x["st"])
        self.t_end: list[jax.Array] = list(x["t_end"])
        self.rel: list[jax.Array] = list(x["rel"])
        self.t_fail: list[Opt] = list(x["t_fail"])
        self.ring_t: list[jax.Array | None] = list(x["ring_t"])
        self.ring_r: list[jax.Array | None] = list(x["ring_r"])
        self.count: list[Opt] = list(x["count"])
        self.q_head: list[jax.Array] = list(x["q_head"])
        self.q_count: list[jax.Array] = list(x["q_count"])
        self.rr: list[Opt] = list(x["rr"])
        self.wip: jax.Array = x["wip"]

    def carry(self) -> dict[str, Any]:
        return {k: tuple(v) if isinstance(v, list) else v for k, v in vars_of(self).items()}

    def idle(self, n: int) -> jax.Array:
        return (self.st[n] == IDLE) & self.active[n]

    def idle_any(self, j: int) -> jax.Array:
        return _any([self.idle(n) for n in self.m.slots(j)])

    def cnt(self, e: int) -> jax.Array:
        c = self.count[e]
        return jnp.asarray(0, _I32) if c is None else c

    def head_ready(self, e: int) -> jax.Array:
        ring = self.ring_t[e]
        assert ring is not None
        return ring[0] + self.p.transit[e]

    def start(self, n: int, go: jax.Array, rel: jax.Array) -> None:
        """Server slot ``n`` starts a part released at ``rel`` where ``go``."""
        t = self.t
        self.st[n] = jnp.where(go, BUSY, self.st[n])
        self.t_end[n] = jnp.where(go, t + self.pt[n], self.t_end[n])
        self.rel[n] = jnp.where(go, rel, self.rel[n])
        if self.tb.any_op and self.tb.op_mode[n]:
            ttf, tf = self.lane.ttf[n], self.t_fail[n]
            assert ttf is not None and tf is not None
            self.t_fail[n] = jnp.where(go, t + ttf, tf)

    def room(self, e: int) -> jax.Array:
        m, cap = self.m, self.p.capacity[e]
        room = jnp.asarray(False)
        if m.may_queue[e]:
            room = room | ((cap > 0) & (self.cnt(e) < cap))
        if m.may_handoff[e] and not self.tb.pulled_handoff[e]:
            room = room | ((cap == 0) & self.idle_any(m.buf_dst[e]))
        return room

    def deliver(self, i: int, in_window: jax.Array, totals: dict[str, jax.Array]) -> jax.Array:
        """Sink station ``i`` delivers its finished parts; returns their lead times (nan: none)."""
        t, sl = self.t, list(self.m.slots(i))
        blk = jnp.stack([self.st[n] == BLOCKED for n in sl])
        lead = t - jnp.stack([self.rel[n] for n in sl])
        counted = blk & in_window
        totals["delivered"] = totals["delivered"] + jnp.sum(counted).astype(_I32)
        totals["lt_sum"] = totals["lt_sum"] + jnp.sum(jnp.where(counted, lead, 0.0))
        self.wip = self.wip - jnp.sum(blk).astype(_I32)
        for k, n in enumerate(sl):
            self.st[n] = jnp.where(blk[k], IDLE, self.st[n])
        return jnp.where(counted, lead, jnp.nan)

    def push(self, i: int) -> None:
        m, t = self.m, self.t
        outs = m.outs[i]
        n_out = len(outs)
        policy = m.routing[i]
        for n in m.slots(i):
            blocked = self.st[n] == BLOCKED
            rooms = [self.room(e) for e in outs]
            choice: jax.Array | None = None
            if n_out == 1:
                go = blocked & rooms[0]
            elif policy == RoutingPolicy.PROBABILITY:
                choice = self.lane.dest[n]
                assert choice is not None
                go = blocked & _any([rooms[k] & (choice == k) for k in range(n_out)])
            else:
                pos = jnp.arange(n_out, dtype=_I32)
                room_v = jnp.stack(rooms)
                if policy == RoutingPolicy.SHORTEST_QUEUE:
                    counts = jnp.stack([self.cnt(e) for e in outs])
                    score = jnp.where(room_v, counts * n_out + pos, np.iinfo(np.int32).max)
                else:  # round robin from the pointer
                    ptr = self.rr[i]
                    assert ptr is not None
                    score = jnp.where(room_v, (pos - ptr) % n_out, n_out + 1)
                choice = jnp.argmin(score).astype(_I32)
                go = blocked & jnp.any(room_v)
            rel = self.rel[n]
            for k, e in enumerate(outs):
                go_k = go if choice is None else go & (choice == k)
                cap = self.p.capacity[e]
                if m.may_queue[e]:
                    enq = go_k & (cap > 0)
                    c, rt, rr_ = self.count[e], self.ring_t[e], self.ring_r[e]
                    assert c is not None and rt is not None and rr_ is not None
                    self.ring_t[e] = _ring_push(rt, c, enq, t)
                    self.ring_r[e] = _ring_push(rr_, c, enq, rel)
                    self.count[e] = c + enq.astype(_I32)
                if m.may_handoff[e] and not self.tb.pulled_handoff[e]:
                    hand = go_k & (cap == 0)
                    free = jnp.asarray(True)  # the first idle server of the target takes it
                    for tn in m.slots(m.buf_dst[e]):
                        idle = self.idle(tn)
                        self.start(tn, hand & free & idle, rel)
                        free = free & ~idle
            if choice is not None and policy == RoutingPolicy.ROUND_ROBIN:
                ptr = self.rr[i]
                assert ptr is not None
                self.rr[i] = jnp.where(go, (choice + 1) % n_out, ptr)
            self.st[n] = jnp.where(go, IDLE, self.st[n])

    def pull(self, j: int) -> None:
        m, t = self.m, self.t
        q = m.source_of[j]
        queued = [e for e in m.ins[j] if m.may_queue[e]]
        if not m.ins[j] and q < 0:  # saturated: every idle server starts a new part now
            idles = [self.idle(n) for n in m.slots(j)]
            for k, n in enumerate(m.slots(j)):
                self.start(n, idles[k], t)
            self.wip = self.wip + _count(idles)
            return
        handed = [e for e in m.ins[j] if self.tb.pulled_handoff[e]]
        if not queued and not handed and q < 0:
            return  # only inputs from splits that hand over by push
        for n in m.slots(j):
            idle = self.idle(n)
            avail, ready, rels = [], [], []
            kinds: list[tuple[str, int, int]] = []  # ("q", buffer, 0) or ("h", buffer, slot)
            for e in m.ins[j]:  # file order: ties go to the input listed first
                if m.may_queue[e]:
                    rt = self.head_ready(e)
                    ok = (self.cnt(e) > 0) & (rt <= t)
                    if m.may_handoff[e]:
                        ok = ok & (self.p.capacity[e] > 0)
                    ring_r = self.ring_r[e]
                    assert ring_r is not None
                    avail.append(ok)
                    ready.append(jnp.where(ok, rt, INF))
                    rels.append(ring_r[0])
                    kinds.append(("q", e, 0))
                if self.tb.pulled_handoff[e]:
                    u = m.buf_src[e]
                    for un in m.slots(u):
                        ok = (self.st[un] == BLOCKED) & (self.p.capacity[e] == 0)
                        if self.tb.keeps_dest[un]:
                            d = self.lane.dest[un]
                            assert d is not None
                            ok = ok & (d == m.outs[u].index(e))
                        since = self.lane.blk[un]
                        assert since is not None
                        avail.append(ok)
                        ready.append(jnp.where(ok, since, INF))
                        rels.append(self.rel[un])
                        kinds.append(("h", e, un))
            if q >= 0:
                ok = self.q_count[q] > 0
                at = self.lane.q_t[q][self.q_head[q]]
                avail.append(ok)
                ready.append(jnp.where(ok, at, INF))
                rels.append(at)
            c = jnp.asarray(0) if len(ready) == 1 else jnp.argmin(jnp.stack(ready))
            take = idle & _any(avail)
            rel = _pick(rels, c)  # read before the sender lets go of its part
            for k, (kind, e, un) in enumerate(kinds):
                pk = take & (c == k)
                if kind == "h":  # the blocked sender hands its part over and becomes idle
                    self.st[un] = jnp.where(pk, IDLE, self.st[un])
                    continue
                ring_t, ring_r, cnt = self.ring_t[e], self.ring_r[e], self.count[e]
                assert ring_t is not None and ring_r is not None and cnt is not None
                self.ring_t[e] = _ring_pop(ring_t, pk)
                self.ring_r[e] = _ring_pop(ring_r, pk)
                self.count[e] = cnt - pk.astype(_I32)
            if q >= 0:
                pk = take & (c == len(kinds))
                self.q_head[q] = (self.q_head[q] + pk.astype(_I32)) % m.queue
                self.q_count[q] = self.q_count[q] - pk.astype(_I32)
            self.start(n, take, rel)

    def forward_pulls(self, once: jax.Array | None) -> None:
        """Pulls at single-server stations with inputs, upstream first, after a pass.

        A pass goes downstream first, so a part pushed into an idle station's input buffer
        waits for the next pass; this sweep lets it start now, and most events then need one
        pass instead of two (with hundreds of lanes in lockstep, every step paid for the
        second). It changes nothing that the next pass would have done differently: a
        single-server station's candidates come from stations upstream of it, whose pushes in
        that pass all come after its pull, and a server that is idle now would pull the same
        candidate there. (A station with several servers could see one freed by its own push
        in that pass, and its slots might then take parts in another order: left to the passes,
        though 88 lines, 80 of them random with two-server stations, came out bit-identical
        even with them swept.) ``tests/test_process_transfer.py`` runs whole lines both ways.
        """
        m = self.m
        for j in reversed(m.order):
            if m.max_servers[j] != 1 or (not m.ins[j] and m.source_of[j] < 0):
                continue
            self.pull_in(j, {}, once)

    def can_move(self) -> jax.Array:
        """Whether another pass could move a part (exact, so the loop ends)."""
        m, t = self.m, self.t
        moves: list[jax.Array] = []
        idle_any = [self.idle_any(j) for j in range(m.n_stations)]
        for e in range(m.n_buffers):
            u, j = m.buf_src[e], m.buf_dst[e]
            cap = self.p.capacity[e]
            if m.may_queue[e]:
                moves.append(idle_any[j] & (self.cnt(e) > 0) & (self.head_ready(e) <= t))
            blocked = []
            for n in m.slots(u):
                b = self.st[n] == BLOCKED
                if self.tb.keeps_dest[n]:
                    d = self.lane.dest[n]
                    assert d is not None
                    b = b & (d == m.outs[u].index(e))
                blocked.append(b)
            room = jnp.asarray(False)
            if m.may_queue[e]:
                room = room | ((cap > 0) & (self.cnt(e) < cap))
            if m.may_handoff[e]:
                room = room | ((cap == 0) & idle_any[j])
            moves.append(_any(blocked) & room)
        for q, j in enumerate(m.source_station):
            moves.append(idle_any[j] & (self.q_count[q] > 0))
        return _any(moves)

    def out_part(
        self, i: int, in_window: jax.Array | None, totals: dict[str, jax.Array]
    ) -> jax.Array | None:
        """Station ``i``'s outgoing work in a pass: a sink delivers (only with ``in_window``) and
        returns the lead times of the parts delivered; any other station pushes."""
        if self.m.outs[i]:
            self.push(i)
            return None
        return None if in_window is None else self.deliver(i, in_window, totals)

    def pull_in(self, i: int, totals: dict[str, jax.Array], once: jax.Array | None) -> None:
        """:meth:`pull` at station ``i``, in its own :meth:`isolated` loop when ``once`` is
        given."""
        if once is None:
            self.pull(i)
        else:
            self.isolated(partial(_pull_work, i), None, totals, once)

    def isolated(
        self,
        work: Callable[[_Xfer, dict[str, jax.Array]], jax.Array | None],
        lead0: jax.Array | None,
        totals: dict[str, jax.Array],
        once: jax.Array,
    ) -> jax.Array | None:
        """``work(self, totals)`` inside a loop that runs ``once`` times, ``once`` a traced 1;
        ``lead0`` is a placeholder shaped like what ``work`` returns.

        The loop is a materialization boundary: XLA cannot prove it runs exactly once, so it
        cannot fuse this work into the kernels of the work after it (on CPU that fusion
        recomputes the shared logic in many kernels). Running once, it computes exactly what
        ``work`` does.
        """
        Carry = tuple[jax.Array, dict[str, Any], dict[str, jax.Array], jax.Array | None]

        def body(c: Carry) -> Carry:
            k, x, tot, lead = c
            w = _Xfer(self.m, self.p, self.lane, x, self.t, self.pt, self.active)
            tot = dict(tot)
            new = work(w, tot)
            return k + 1, w.carry(), tot, lead if new is None else new

        c0: Carry = (jnp.asarray(0, _I32), self.carry(), dict(totals), lead0)
        _, x, tot, lead = jax.lax.while_loop(lambda c: c[0] < once, body, c0)
        self.load(x)
        totals.update(tot)
        return lead

    def one_pass(
        self,
        in_window: jax.Array | None,
        totals: dict[str, jax.Array],
        once: jax.Array | None = None,
    ) -> list[jax.Array]:
        """One pass over the stations; sinks deliver only when ``in_window`` is given (the first
        pass: only a completion makes a server blocked, so later passes find no sink part).
        With ``once`` (a traced 1), each station's push (or delivery) and its pull run each in
        its own :meth:`isolated` loop."""
        leads = []
        for i in self.m.order:
            sink = not self.m.outs[i]
            lead: jax.Array | None = None
            if once is None:
                lead = self.out_part(i, in_window, totals)
            elif not sink or in_window is not None:
                lead0 = jnp.full((len(self.m.slots(i)),), jnp.nan, _F64) if sink else None
                lead = self.isolated(partial(_out_work, i, in_window), lead0, totals, once)
            self.pull_in(i, totals, once)
            if lead is not None:
                leads.append(lead)
        return leads


def _out_work(
    i: int, in_window: jax.Array | None, w: _Xfer, totals: dict[str, jax.Array]
) -> jax.Array | None:
    return w.out_part(i, in_window, totals)


def _pull_work(i: int, w: _Xfer, totals: dict[str, jax.Array]) -> None:
    w.pull(i)


def vars_of(x: _Xfer) -> dict[str, Any]:
    return {k: getattr(x, k) for k in _XFER_FIELDS}


def _any(xs: list[jax.Array]) -> jax.Array:
    if not xs:
        return jnp.asarray(False)
    out = xs[0]
    for x in xs[1:]:
        out = out | x
    return out


_Ctx = tuple[jax.Array, jax.Array, tuple[jax.Array, ...], jax.Array]
# time, process times, active slots, whether the time is in the statistics window


def _transfer(
    model: Model, p: Params, s: _Lane, ctx: _Ctx, *, batched: bool, once: jax.Array | None = None
) -> tuple[_Lane, jax.Array]:
    """The transfer phase at time ``ctx[0]``: passes until no part can move. Returns the lane
    and the lead times of the parts delivered in the window ((K,) over the sink slots, nan where
    none).

    ``batched``: ``p``, ``s`` and ``ctx`` carry a leading lane axis and the loop runs over the
    whole batch until no lane can move. A pass in a lane where nothing can move changes
    nothing, so lanes need no masking; and since every lane starts the loop together, the pass
    limit is the same for all of them. Keeping even the first pass inside the loop matters for
    speed: the loop boundary stops XLA from fusing (and so recomputing) the event's logic into
    every kernel of the pass. ``once``, a traced 1, puts each station of a pass behind such a
    boundary too (see :meth:`_Xfer.isolated`).
    """
    fields = (*_XFER_FIELDS, "delivered", "lt_sum")

    def can_move(p: Params, s: _Lane, x: dict[str, Any], ctx: _Ctx) -> jax.Array:
        return _Xfer(model, p, s, x, *ctx[:3]).can_move()

    def one_pass(
        p: Params, s: _Lane, x: dict[str, Any], lead: jax.Array, ctx: _Ctx, once: jax.Array | None
    ) -> tuple[dict[str, Any], jax.Array]:
        w = _Xfer(model, p, s, x, *ctx[:3])
        totals = {"delivered": x["delivered"], "lt_sum": x["lt_sum"]}
        # only a completion makes a server blocked: sinks deliver in the first pass only
        leads = w.one_pass(ctx[3], totals, once)
        if FORWARD_PULLS:
            w.forward_pulls(once)
        if leads:
            new = jnp.concatenate(leads)
            lead = jnp.where(jnp.isnan(new), lead, new)
        return {**w.carry(), **totals}, lead

    if batched:
        can_move = jax.vmap(can_move)
        one_pass = jax.vmap(one_pass, in_axes=(0, 0, 0, 0, 0, None))

    Carry = tuple[dict[str, Any], jax.Array, jax.Array]

    def cond(c: Carry) -> jax.Array:
        x, _, k = c
        more = (k <= 4 * model.n_stations + 4) & jnp.any(can_move(p, s, x, ctx))
        return (k == 0) | more

    def body(c: Carry) -> Carry:
        x, lead, k = c
        x, lead = one_pass(p, s, x, lead, ctx, once)
        return x, lead, k + 1

    k_sink = len(_tables(model).sink_slots)
    lead0 = jnp.full((*s.now.shape, k_sink), jnp.nan, _F64)
    x0 = {k: getattr(s, k) for k in fields}
    x, lead, _ = jax.lax.while_loop(cond, body, (x0, lead0, jnp.asarray(0, _I32)))
    return replace(s, **x), lead


# -- init and step --------------------------------------------------------------------------------
def _init_lane(model: Model, p: Params, key: jax.Array) -> _Lane:
    n, q = model.n_slots, model.n_sources
    tb = _tables(model)
    key, k_ttf, k_ia, k_pt, k_g = jax.random.split(rng_key(key, GENERAL_RNG), 5)
    mtbf = p.mtbf[jnp.asarray(tb.slot_station, dtype=_I32)]
    ttf0 = mtbf * unit_exponential(jax.random.uniform(k_ttf, (n,), dtype=_F64))
    u_ia = jax.random.uniform(k_ia, (max(q, 1),), dtype=_F64)
    nxt = _interarrivals(model, p, u_ia, k_g)
    inf = jnp.asarray(INF, _F64)
    zero_f = jnp.asarray(0.0, _F64)
    zero_i = jnp.asarray(0, _I32)
    fl = tb.fails
    ring = jnp.zeros((model.ring,), _F64)
    s = _Lane(
        now=zero_f,
        key=raw_key(key),
        n_events=zero_i,
        wip=zero_i,
        wip_int=zero_f,
        delivered=zero_i,
        lt_sum=zero_f,
        completions=zero_i,
        lost=zero_i,
        st=(jnp.asarray(IDLE, _I32),) * n,
        t_end=(inf,) * n,
        rel=(zero_f,) * n,
        prev=tuple(jnp.asarray(IDLE, _I32) if fl[k] else None for k in range(n)),
        t_fail=tuple(ttf0[k] if tb.time_mode[k] else inf if fl[k] else None for k in range(n)),
        t_rep=tuple(inf if fl[k] else None for k in range(n)),
        rem=tuple(zero_f if fl[k] else None for k in range(n)),
        ttf=tuple(ttf0[k] if tb.op_mode[k] else None for k in range(n)),
        dest=tuple(zero_i if tb.keeps_dest[k] else None for k in range(n)),
        blk=tuple(zero_f if tb.keeps_blk[k] else None for k in range(n)),
        ring_t=tuple(ring if mq else None for mq in model.may_queue),
        ring_r=tuple(ring if mq else None for mq in model.may_queue),
        count=tuple(zero_i if mq else None for mq in model.may_queue),
        q_t=(jnp.zeros((model.queue,), _F64),) * q,
        q_head=(zero_i,) * q,
        q_count=(zero_i,) * q,
        next_arr=tuple(nxt[k] for k in range(q)),
        rr=tuple(zero_i if r else None for r in tb.keeps_rr),
        acc=jnp.zeros((n, 4), _F64),
        produced=jnp.zeros((model.n_stations,), _I32),
        scrapped=jnp.zeros((model.n_stations,), _I32),
    )
    pt = _process_times(model, p, jax.random.uniform(k_pt, (n,), dtype=_F64), k_g)
    ctx = (s.now, pt, _active(model, p), jnp.asarray(False))
    s, _ = _transfer(model, p, s, ctx, batched=False)
    return s


def _conveyor_ready(model: Model, p: Params, s: _Lane) -> list[jax.Array]:
    out = []
    for e, pos in enumerate(_tables(model).pos_v):
        if pos is None:
            continue
        ring, c = s.ring_t[e], s.count[e]
        assert ring is not None and c is not None
        head = ring[0] + p.transit[e]
        out.append(jnp.where((c > 0) & (head > s.now), head, INF))
    return out


def _gamma_key(model: Model, s: _Lane) -> jax.Array:
    """The typed key of the gamma sampler's extra proposals for this step's event (a constant
    when the line has no gamma times: nothing is drawn from it)."""
    if DistKind.GAMMA not in (*model.kinds, *model.source_kinds):
        return rng_key(s.key, GENERAL_RNG)
    w = philox4x32((s.key[0], s.key[1]), (s.n_events, 0, COUNTER_TAG + 1, 0))
    return rng_key(jnp.stack(w[:2]), GENERAL_RNG)


def _step_lane(model: Model, p: Params, s: _Lane) -> tuple[_Lane, jax.Array]:
    """:func:`step` on the lane state; also returns the lead times of parts delivered in the
    window ((K,) over the sink slots, nan where none)."""
    s, ctx = _step_event(model, p, s)
    return _transfer(model, p, s, ctx, batched=False)


def _step_event(model: Model, p: Params, s: _Lane) -> tuple[_Lane, _Ctx]:
    """The event of a step (see :func:`_step_lane`); returns what :func:`_transfer` needs."""
    n, tb = model.n_slots, _tables(model)
    ss = tb.slot_station
    fl = tb.fails
    cand = jnp.stack(
        [
            *s.t_end,
            *(x for x in s.t_fail if x is not None),
            *(x for x in s.t_rep if x is not None),
            *s.next_arr,
            *_conveyor_ready(model, p, s),
        ]
    )
    idx = jnp.argmin(cand).astype(_I32)
    t_ev = jnp.min(cand)
    fire = t_ev <= p.horizon
    t = jnp.minimum(t_ev, p.horizon)

    # statistics over (now, t] within the window
    dt = jnp.maximum(t, p.warmup) - jnp.maximum(s.now, p.warmup)
    active = _active(model, p)
    occ = jax.nn.one_hot(jnp.stack(s.st), 4, dtype=_F64) * jnp.stack(active)[:, None]
    acc = s.acc + dt * occ
    wip_int = s.wip_int + dt * s.wip

    # Event n of a lane draws from Philox(lane key, n): a time for every server slot (any of
    # them may start a part in this step's transfer phase), and two numbers for the event's own
    # draws (scrap or arrival; destination or failure clock), as one step has one event.
    u_all = counter_uniforms(s.key, s.n_events, n + 2)
    u_pt, u_1, u_2 = u_all[:n], u_all[n], u_all[n + 1]
    k_g = _gamma_key(model, s)
    in_window = t > p.warmup

    st, t_end = list(s.st), list(s.t_end)
    prev, t_fail, t_rep, rem, ttf = (
        list(s.prev),
        list(s.t_fail),
        list(s.t_rep),
        list(s.rem),
        list(s.ttf),
    )
    dest = list(s.dest)
    blk = list(s.blk)
    done_w, scrap_w, m_cs, scraps = [], [], [], []
    w_cdf: dict[int, jax.Array] = {}
    for k in range(n):
        i = ss[k]
        # completion
        m_c = fire & (idx == tb.pos_c[k])
        scrap = m_c & (u_1 < p.scrap[i])
        done = m_c & ~scrap
        m_cs.append(m_c)
        scraps.append(scrap)
        done_w.append(done & in_window)
        scrap_w.append(scrap & in_window)
        st[k] = jnp.where(scrap, IDLE, jnp.where(done, BLOCKED, st[k]))
        b = blk[k]
        if b is not None:
            blk[k] = jnp.where(done, t, b)
        d = dest[k]
        if d is not None:
            if i not in w_cdf:
                w_cdf[i] = jnp.cumsum(p.weights[i])
            cdf = w_cdf[i]
            draw = jnp.sum(u_2 * cdf[-1:] >= cdf)
            dest[k] = jnp.where(m_c, jnp.minimum(draw, cdf.shape[0] - 1).astype(_I32), d)
        if tb.op_mode[k]:
            tf, tt = t_fail[k], ttf[k]
            assert tf is not None and tt is not None
            ttf[k] = jnp.where(m_c, tf - t, tt)
            t_fail[k] = jnp.where(m_c, INF, tf)
        t_end[k] = jnp.where(m_c, INF, t_end[k])
        if not fl[k]:
            continue
        pf, pr = tb.pos_f[k], tb.pos_r[k]
        pv, tf, tr, rm = prev[k], t_fail[k], t_rep[k], rem[k]
        assert pf is not None and pr is not None
        assert pv is not None and tf is not None and tr is not None and rm is not None
        e_n = unit_exponential(jnp.clip(u_2, 0.0, 1.0 - 1e-12))
        # failure
        m_f = fire & (idx == pf)
        pv = jnp.where(m_f, st[k], pv)
        rm = jnp.where(m_f & (st[k] == BUSY), t_end[k] - t, rm)
        t_end[k] = jnp.where(m_f, INF, t_end[k])
        st[k] = jnp.where(m_f, DOWN, st[k])
        tf = jnp.where(m_f, INF, tf)
        tr = jnp.where(m_f, t + p.mttr[i] * e_n, tr)
        # repair
        m_r = fire & (idx == pr)
        new_ttf = p.mtbf[i] * e_n
        was_busy = m_r & (pv == BUSY)
        st[k] = jnp.where(m_r, pv, st[k])
        tr = jnp.where(m_r, INF, tr)
        t_end[k] = jnp.where(was_busy, t + rm, t_end[k])
        tf = jnp.where(m_r & (True if tb.time_mode[k] else was_busy), t + new_ttf, tf)
        if tb.op_mode[k]:
            tt = ttf[k]
            assert tt is not None
            ttf[k] = jnp.where(m_r & ~was_busy, new_ttf, tt)
        prev[k], t_fail[k], t_rep[k], rem[k] = pv, tf, tr, rm

    def per_station(flags: list[jax.Array]) -> jax.Array:
        return jnp.stack(
            [_count(flags[k] for k in model.slots(i)) for i in range(model.n_stations)]
        )

    produced = s.produced + per_station(done_w)
    scrapped = s.scrapped + per_station(scrap_w)

    # arrival at a timed source
    q_t, q_count, next_arr, lost = list(s.q_t), list(s.q_count), list(s.next_arr), s.lost
    wip = s.wip - _count(scraps)  # a scrapped part leaves the line
    if model.n_sources:
        u_ia = jnp.broadcast_to(u_1, (model.n_sources,))  # one arrival per step
        ia = _interarrivals(model, p, u_ia, jax.random.fold_in(k_g, 7))
        for q in range(model.n_sources):
            m_a = fire & (idx == tb.pos_a[q])
            fits = m_a & (s.q_count[q] < model.queue)
            at = (s.q_head[q] + s.q_count[q]) % model.queue
            q_t[q] = s.q_t[q].at[at].set(jnp.where(fits, t, s.q_t[q][at]))
            q_count[q] = s.q_count[q] + fits.astype(_I32)
            wip = wip + fits.astype(_I32)
            lost = lost + (m_a & ~fits).astype(_I32)
            next_arr[q] = jnp.where(m_a, t + ia[q], s.next_arr[q])

    s = replace(
        s,
        # after the last event at or before the horizon, `now` steps just past it: the lane is done
        now=jnp.where(fire, t, jnp.nextafter(p.horizon, INF)),
        acc=acc,
        wip_int=wip_int,
        n_events=s.n_events + fire.astype(_I32),
        st=tuple(st),
        prev=tuple(prev),
        t_end=tuple(t_end),
        t_fail=tuple(t_fail),
        t_rep=tuple(t_rep),
        ttf=tuple(ttf),
        rem=tuple(rem),
        dest=tuple(dest),
        blk=tuple(blk),
        q_t=tuple(q_t),
        q_count=tuple(q_count),
        next_arr=tuple(next_arr),
        wip=wip,
        lost=lost,
        produced=produced,
        scrapped=scrapped,
        completions=s.completions + _count(m_cs),
    )
    pt = _process_times(model, p, u_pt, k_g)
    return s, (t, pt, active, in_window)


def _count(flags: Any) -> jax.Array:
    out = jnp.asarray(0, _I32)
    for f in flags:
        out = out + f.astype(_I32)
    return out


# -- conversions between State and _Lane ---------------------------------------------------------
def _export(model: Model, s: _Lane, lt_hist: jax.Array) -> State:
    """The public :class:`State` of one lane."""

    def vec(xs: OptTup, fill: float | int, dtype: Any) -> jax.Array:
        if not xs:
            return jnp.zeros((0,), dtype)
        return jnp.stack([jnp.full((), fill, dtype) if x is None else x for x in xs])

    def rows(xs: tuple[jax.Array | None, ...], width: int) -> jax.Array:
        if not xs:
            return jnp.zeros((0, width), _F64)
        return jnp.stack([jnp.zeros((width,), _F64) if x is None else x for x in xs])

    return State(
        now=s.now,
        key=s.key,
        n_events=s.n_events,
        st=vec(s.st, IDLE, _I32),
        prev=vec(s.prev, IDLE, _I32),
        t_end=vec(s.t_end, INF, _F64),
        t_fail=vec(s.t_fail, INF, _F64),
        t_rep=vec(s.t_rep, INF, _F64),
        ttf=vec(s.ttf, INF, _F64),
        rem=vec(s.rem, 0.0, _F64),
        rel=vec(s.rel, 0.0, _F64),
        dest=vec(s.dest, 0, _I32),
        blk=vec(s.blk, 0.0, _F64),
        ring_t=rows(s.ring_t, model.ring),
        ring_r=rows(s.ring_r, model.ring),
        head=jnp.zeros((model.n_buffers,), _I32),
        count=vec(s.count, 0, _I32),
        q_t=rows(s.q_t, model.queue),
        q_head=vec(s.q_head, 0, _I32),
        q_count=vec(s.q_count, 0, _I32),
        next_arr=vec(s.next_arr, 0.0, _F64),
        rr=vec(s.rr, 0, _I32),
        wip=s.wip,
        acc=s.acc,
        wip_int=s.wip_int,
        delivered=s.delivered,
        produced=s.produced,
        scrapped=s.scrapped,
        lt_sum=s.lt_sum,
        lt_hist=lt_hist,
        completions=s.completions,
        lost=s.lost,
    )


def _import(model: Model, s: State) -> _Lane:
    """The lane form of a public :class:`State` (buffers re-based to their heads)."""
    tb = _tables(model)
    n = model.n_slots

    def opt(x: jax.Array, keep: tuple[bool, ...]) -> OptTup:
        return tuple(x[k] if keep[k] else None for k in range(len(keep)))

    def rebase(ring: jax.Array, e: int) -> jax.Array:
        return ring[e][(s.head[e] + jnp.arange(model.ring)) % model.ring]

    mq = model.may_queue
    return _Lane(
        now=s.now,
        key=s.key,
        n_events=s.n_events.astype(_I32),
        wip=s.wip.astype(_I32),
        wip_int=s.wip_int,
        delivered=s.delivered.astype(_I32),
        lt_sum=s.lt_sum,
        completions=s.completions.astype(_I32),
        lost=s.lost.astype(_I32),
        st=tuple(s.st[k].astype(_I32) for k in range(n)),
        t_end=tuple(s.t_end[k] for k in range(n)),
        rel=tuple(s.rel[k] for k in range(n)),
        prev=tuple(None if x is None else x.astype(_I32) for x in opt(s.prev, tb.fails)),
        t_fail=opt(s.t_fail, tb.fails),
        t_rep=opt(s.t_rep, tb.fails),
        rem=opt(s.rem, tb.fails),
        ttf=opt(s.ttf, tb.op_mode),
        dest=tuple(None if x is None else x.astype(_I32) for x in opt(s.dest, tb.keeps_dest)),
        blk=opt(s.blk, tb.keeps_blk),
        ring_t=tuple(rebase(s.ring_t, e) if mq[e] else None for e in range(model.n_buffers)),
        ring_r=tuple(rebase(s.ring_r, e) if mq[e] else None for e in range(model.n_buffers)),
        count=tuple(None if x is None else x.astype(_I32) for x in opt(s.count, mq)),
        q_t=tuple(s.q_t[q] for q in range(model.n_sources)),
        q_head=tuple(s.q_head[q].astype(_I32) for q in range(model.n_sources)),
        q_count=tuple(s.q_count[q].astype(_I32) for q in range(model.n_sources)),
        next_arr=tuple(s.next_arr[q] for q in range(model.n_sources)),
        rr=tuple(None if x is None else x.astype(_I32) for x in opt(s.rr, tb.keeps_rr)),
        acc=s.acc,
        produced=s.produced.astype(_I32),
        scrapped=s.scrapped.astype(_I32),
    )


def init(model: Model, p: Params, key: jax.Array) -> State:
    """The empty line at time 0, after its first transfer phase (saturated stations start)."""
    return _export(model, _init_lane(model, p, key), jnp.zeros((LT_BINS,), _I32))


def step(model: Model, p: Params, s: State) -> State:
    """Advance to the next event (or to the horizon, if none comes before it) and apply it."""
    lane, lead = _step_lane(model, p, _import(model, s))
    valid = ~jnp.isnan(lead)
    hist = s.lt_hist.at[lt_bins(lead)].add(valid.astype(s.lt_hist.dtype))
    return _export(model, lane, hist)


# -- running --------------------------------------------------------------------------------------
def _init_lanes(model: Model, p: Params, keys: jax.Array) -> tuple[_Lane, jax.Array]:
    lanes = jax.vmap(partial(_init_lane, model))(p, keys)
    return lanes, jnp.zeros((keys.shape[0], LT_BINS), _I32)


Packing = tuple[dict[str, jax.Array], list[jax.Array]]


class _Packed:
    """The lane state as the chunk loop carries it: its per-lane scalars (leaves of shape (V,),
    all but a few of them) stacked into one (rows, V) array per dtype, its other leaves (buffer
    rings, accumulators) as they are.

    Carried as separate arrays (73 of the benchmark line's 96 leaves are such scalars), XLA:CPU
    gave each scalar its own select and a copy per step; stacked, they are a few wide kernels
    (``benchmarks/bench_xla_packing.py`` measures the effect in isolation). Stacking the other
    leaves too would transpose them on every step (docs/benchmarks.md, "CPU, sixth round").
    """

    def __init__(self, like: Any) -> None:
        leaves, self.treedef = jax.tree.flatten(like)
        self.n = len(leaves)
        self.rows: dict[str, list[int]] = {}
        for i, leaf in enumerate(leaves):
            if leaf.ndim == 1:
                self.rows.setdefault(str(leaf.dtype), []).append(i)
        stacked = {i for idx in self.rows.values() for i in idx}
        self.others = [i for i in range(self.n) if i not in stacked]

    def pack(self, tree: Any) -> Packing:
        leaves = jax.tree.leaves(tree)
        rows = {dt: jnp.stack([leaves[i] for i in idx]) for dt, idx in self.rows.items()}
        return rows, [leaves[i] for i in self.others]

    def unpack(self, packed: Packing) -> Any:
        rows, others = packed
        leaves: list[Any] = [None] * self.n
        for dt, idx in self.rows.items():
            for r, i in enumerate(idx):
                leaves[i] = rows[dt][r]
        for i, a in zip(self.others, others, strict=True):
            leaves[i] = a
        return jax.tree.unflatten(self.treedef, leaves)

    @staticmethod
    def where(live: jax.Array, new: Packing, old: Packing) -> Packing:
        """``new`` in the lanes where ``live`` (a (V,) mask), ``old`` elsewhere."""

        def sel(a: jax.Array, b: jax.Array) -> jax.Array:
            return jnp.where(live.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)

        rows = {dt: jnp.where(live, a, old[0][dt]) for dt, a in new[0].items()}
        return rows, [sel(a, b) for a, b in zip(new[1], old[1], strict=True)]


def _chunk_lanes(
    model: Model, chunk: int, p: Params, s: _Lane, hist: jax.Array, once: jax.Array | None
) -> tuple[_Lane, jax.Array]:
    """Up to ``chunk`` steps of every lane still before its horizon. ``once`` is 1 or ``None``
    (:func:`_once`): a traced 1 puts each station of :func:`_transfer` behind a loop the
    compiler cannot unroll (about 12% faster on CPU).

    The loop runs over the whole batch (the step itself is vmapped), carrying the lanes
    :class:`_Packed`: lanes that reached their horizon are frozen, and the lead times of
    delivered parts are recorded step by step into a (chunk, V, K) table that is binned into
    the histogram once, at the end of the chunk.
    """
    v = hist.shape[0]
    k_sink = len(_tables(model).sink_slots)
    step_v = jax.vmap(partial(_step_event, model))
    packing = _Packed(s)
    Carry = tuple[jax.Array, Packing, jax.Array]

    def cond(c: Carry) -> jax.Array:
        k, packed, _ = c
        return (k < chunk) & jnp.any(packing.unpack(packed).now <= p.horizon)

    def body(c: Carry) -> Carry:
        k, packed, leads = c
        s = packing.unpack(packed)
        live = s.now <= p.horizon  # events exactly at the horizon still count
        new, ctx = step_v(p, s)
        new, lead = _transfer(model, p, new, ctx, batched=True, once=once)
        packed = _Packed.where(live, packing.pack(new), packed)  # frozen lanes keep their state
        lead = jnp.where(live[:, None], lead, jnp.nan)
        zero = jnp.asarray(0, _I32)
        leads = jax.lax.dynamic_update_slice(leads, lead[None], (k, zero, zero))
        return k + 1, packed, leads

    leads0 = jnp.full((chunk, v, k_sink), jnp.nan, _F64)
    c0: Carry = (jnp.asarray(0, _I32), packing.pack(s), leads0)
    _, packed, leads = jax.lax.while_loop(cond, body, c0)
    s = packing.unpack(packed)
    return s, add_lead_times(hist, leads, jnp.arange(v, dtype=_I32)[None, :, None])


_init_batch = partial(jax.jit, static_argnums=(0,))(_init_lanes)
_chunk_batch = partial(jax.jit, static_argnums=(0, 1), donate_argnums=(3, 4))(_chunk_lanes)


@cache
def _spread(
    model: Model, chunk: int, devices: tuple[Any, ...]
) -> tuple[Callable[..., Any], Callable[..., Any], NamedSharding]:
    """:func:`_init_lanes` and :func:`_chunk_lanes` with the lanes split over ``devices``
    (``physics.process.devices``): one program, each device running its own lanes' loop."""
    mesh = Mesh(np.array(devices), ("lanes",))
    lanes = PartitionSpec("lanes")  # type: ignore[no-untyped-call]
    whole = PartitionSpec()  # type: ignore[no-untyped-call]
    init = jax.jit(
        shard_map(
            partial(_init_lanes, model),
            mesh=mesh,
            in_specs=(lanes, lanes),
            out_specs=(lanes, lanes),
            check_vma=False,
        )
    )
    chunk_fn = jax.jit(
        shard_map(
            partial(_chunk_lanes, model, chunk),
            mesh=mesh,
            in_specs=(lanes, lanes, lanes, whole),
            out_specs=(lanes, lanes),
            check_vma=False,
        ),
        donate_argnums=(1, 2),
    )
    return init, chunk_fn, NamedSharding(mesh, lanes)


@partial(jax.jit, static_argnums=(0,))
def _export_batch(model: Model, s: _Lane, hist: jax.Array) -> State:
    return jax.vmap(partial(_export, model))(s, hist)


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
    slowest variant's). Returns the batched final :class:`State`. On a CPU, the steps run in the
    native event loop where it applies (:mod:`physics.process.general_native`, every
    core; the same results, bit for bit); otherwise a large batch on a CPU with several cores
    is spread over them (``physics.process.devices``; the same results).
    """
    if _native(model, params):
        from physics.process import general_native

        s0, hist0 = _init_batch(model, params, keys)
        start = _export_batch(model, s0, hist0)
        return general_native.advance(model, params, start, chunk=chunk, progress=progress)
    devices = lane_devices(keys.shape[0], params, MIN_LANES_PER_DEVICE_GENERAL)
    if devices:
        return _run_spread(model, params, keys, chunk, progress, tuple(devices))
    once = _once()  # traced by _chunk_batch: see there
    s, hist = _init_batch(model, params, keys)
    s, hist = _to_horizon(
        lambda s, h: _chunk_batch(model, chunk, params, s, h, once),
        s,
        hist,
        np.asarray(params.horizon),
        progress,
    )
    out: State = _export_batch(model, s, hist)
    return out


#: Whether :func:`run` and :func:`advance` may use the native event loop
#: (:mod:`physics.process.general_native`) where it applies; ``TWIN_NATIVE=0`` turns all the
#: native kernels off. The same results either way, bit for bit.
USE_NATIVE = True


def _native(model: Model, params: Params) -> bool:
    if not USE_NATIVE:
        return False
    from physics.process import general_native

    return general_native.applies(model, params)


def _to_horizon(
    chunk_fn: Callable[[_Lane, jax.Array], tuple[_Lane, jax.Array]],
    s: _Lane,
    hist: jax.Array,
    horizon: NDArray[np.float64],
    progress: Callable[[float], None] | None,
) -> tuple[_Lane, jax.Array]:
    """``chunk_fn`` over and over until every lane is past its ``horizon``; ``progress`` after
    each chunk with the slowest lane's fraction of it."""
    while True:
        s, hist = chunk_fn(s, hist)
        now = np.asarray(s.now)
        if progress is not None:
            progress(float(np.min(np.minimum(now / np.maximum(horizon, 1e-300), 1.0))))
        if np.all(now > horizon):
            return s, hist


def _run_spread(
    model: Model,
    params: Params,
    keys: jax.Array,
    chunk: int,
    progress: Callable[[float], None] | None,
    devices: tuple[Any, ...],
) -> State:
    """:func:`run` with the lanes split over ``devices`` (padded with copies of the last lane
    to a multiple of their number); the result is gathered on the first device."""
    v = keys.shape[0]
    pad = -v % len(devices)

    def padded(a: jax.Array) -> jax.Array:
        return jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)]) if pad else a

    init, chunk_fn, lanes = _spread(model, chunk, devices)
    p = jax.device_put(jax.tree.map(padded, params), lanes)
    once = _once()
    s, hist = init(p, jax.device_put(padded(keys), lanes))
    s, hist = _to_horizon(
        lambda s, h: chunk_fn(p, s, h, once), s, hist, np.asarray(p.horizon), progress
    )
    out = jax.device_put(_export_batch(model, s, hist), devices[0])
    trimmed: State = jax.tree.map(lambda a: a[:v], out)
    return trimmed


@partial(jax.jit, static_argnums=(0,))
def _import_batch(model: Model, s: State) -> tuple[_Lane, jax.Array]:
    return jax.vmap(partial(_import, model))(s), s.lt_hist


def advance(
    model: Model,
    params: Params,
    state: State,
    *,
    until_s: float | jax.Array,
    chunk: int = 2048,
    progress: Callable[[float], None] | None = None,
) -> State:
    """Continue a batch of runs from ``state`` up to simulated time ``until_s`` (seconds; a scalar
    or one per lane), processing every event at or before it, and return the new state.

    This is how a live twin steps the core to a given time. ``state`` may be any batched
    :class:`State`: one returned by :func:`run` or :func:`advance`, or one edited to match an
    observed line (machine states, buffer contents, counters). Statistics keep accumulating over
    ``(params.warmup, until_s]``. Advancing to t1 and then to t2 replays exactly the events of a
    single run to t2.
    """
    v = state.now.shape[0]
    until = jnp.broadcast_to(jnp.asarray(until_s, dtype=_F64), (v,))
    if bool(np.any(np.asarray(until) < np.asarray(state.now))):
        raise SimulationError("advance(): until_s is earlier than the state's time")
    # a lane that stopped just past an earlier horizon resumes from that horizon
    p = params.replace(horizon=until)
    if _native(model, p):
        from physics.process import general_native

        start = _export_batch(model, *_import_batch(model, state))  # buffers re-based
        return general_native.advance(model, p, start, chunk=chunk, progress=progress)
    once = _once()  # traced by _chunk_batch: see there
    s, hist = _import_batch(model, state)
    s, hist = _to_horizon(
        lambda s, h: _chunk_batch(model, chunk, p, s, h, once), s, hist, np.asarray(until), progress
    )
    out: State = _export_batch(model, s, hist)
    return out
