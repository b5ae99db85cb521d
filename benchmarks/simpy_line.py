"""SimPy reference model of a production line: ``docs/process-semantics.md``, rule by rule.

This module is the independent reference the JAX process core is checked against. It favours
being obviously right over being fast; it is still kept lean (no per-event logging, samples drawn
in blocks) because benchmarks compare against it.

How the contract maps onto SimPy
--------------------------------
* **Clock and events.** One :class:`simpy.Environment`. Every timed event of the doc (completion,
  failure, repair, arrival, conveyor head ready) is a SimPy event scheduled with
  ``Environment.schedule`` and a callback. Servers are explicit state machines (``idle``, ``busy``,
  ``blocked``, ``down``) rather than SimPy processes: preempt-resume then needs no interrupts,
  and the transfer phase below can see and move every part directly. Simultaneous events are
  ordered as the doc orders them, not by scheduling order: the SimPy priority of an event is
  ``kind * 2**20 + index`` (completions, failures, repairs, arrivals, conveyor heads; then the
  global server index, source index or buffer index), so the two engines agree even on
  coincident events. Events with time ``<= H`` are processed (the window ``(W, H]`` is closed on
  the right).
* **No stale events.** Nothing is ever cancelled. A busy segment (a start or a resume after a
  repair) schedules either its completion or, if a failure comes first, nothing / the failure:
  in ``mode: operation`` the server keeps the busy time left to its next failure (``ttf``) and
  the segment schedules the failure at ``start + ttf`` when ``ttf < work left`` (a tie goes to
  the completion, as completions come first); in ``mode: time`` the failure is an independent
  event scheduled at the repair time (or 0) and the segment schedules its completion only when
  it ends strictly before that failure. A failure of a busy server subtracts the work done
  (preempt-resume); a failure of an idle or blocked server keeps its part and its state, which
  the repair restores (a blocked server keeps the time it first became blocked).
* **Transfer phase.** After every event (and once at time 0) :meth:`_Line.transfer` moves parts
  until nothing moves, alternating two sweeps over the stations in file order:

  1. *push*: every blocked server (lowest index first) asks its routing rule for a destination
     with room: no outgoing buffer means the sink; a buffer with ``C > 0`` takes the part at the
     tail. If the rule picks a capacity-0 link, the sender waits: the handoff is made by the
     receiver in the pull sweep, because the receiver chooses among its candidates.
  2. *pull*: every idle server (lowest index first) takes, among its candidates, the one ready
     longest: an available buffer head (ready at ``entry + T``), a blocked upstream server over a
     capacity-0 link whose routing rule currently picks that link (ready when it became
     blocked), the head of the timed-source queue (ready at its arrival), or a new part at a
     saturated station. Ties: buffers in file order, then the source; then the lower upstream
     server index. The processing time is drawn when the part starts.

  Routing rules, evaluated against the current state each time a sender looks for room:
  ``round_robin`` tries outputs in file order from the station pointer, which moves past the
  buffer that received the part; ``shortest_queue`` takes the output with room holding the fewest
  parts (a capacity-0 link holds none), first in file order on ties; ``probability`` waits for
  room in the buffer drawn at completion. Room in a capacity-0 link means its target has an idle
  server. Servers only go blocked -> idle -> busy within a transfer phase, so it ends.
* **Buffers and conveyors.** A buffer is a deque of ``(ready time, release time)``; parts in
  transit count against the capacity; only the head can leave, once ``ready <= now``. Each entry
  onto a conveyor (``T > 0``) schedules a "head ready" event at ``entry + T`` that only runs the
  transfer phase (FIFO with one ``T`` per buffer means ready times never decrease).
* **Sources.** A saturated station (no input buffer, no timed source) releases a new part when a
  server starts it. A timed source releases a part at its arrival into an unbounded queue; the
  first arrival comes after the first drawn inter-arrival time.
* **Measurements** over ``(W, H]``: server-state time is integrated per server, clipped to the
  window; WIP (released, not yet delivered or scrapped) is integrated likewise; deliveries,
  completions and scraps count when their time is in the window. Lead time p95 is numpy's
  default (linear) percentile. Quality is 1 for a station that finished nothing in the window,
  performance 0 for one down all the window; with no delivery the lead times are NaN. ``events`` counts every SimPy event
  processed up to ``H`` (conveyor "head ready" events included, one per part entering a
  conveyor); ``completions`` every completion, scrapped or not, up to ``H``.
* **Horizon.** ``H = hours * 3600`` and ``W = warmup_hours * 3600``, rounded to the nanosecond so
  that ``hours=3695 / 3600`` means exactly 3695 s.
* **Random numbers.** One ``Generator(PCG64(seed))``; each station's processing, failure and
  repair times and each source's inter-arrival times are separate streams drawn in blocks, plus
  one U(0, 1) stream for scrap decisions and probability routing.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numpy as np
import simpy
from numpy.random import PCG64, Generator
from numpy.typing import NDArray
from simpy.events import EventPriority

from scenes.spec import (
    DistKind,
    Distribution,
    FailureMode,
    LineSpec,
    RoutingPolicy,
    Station,
)

__all__ = ["Summary", "draw", "replicate", "simulate", "summarize"]


class _State(IntEnum):
    """What a server is doing; the values index the per-station time accumulators."""

    IDLE = 0  # up, no part: starved
    BUSY = 1
    BLOCKED = 2
    DOWN = 3


class _Kind(IntEnum):
    """Event kinds in the order the doc processes simultaneous events."""

    COMPLETION = 0
    FAILURE = 1
    REPAIR = 2
    ARRIVAL = 3
    HEAD = 4


_KIND_STRIDE = 1 << 20  # priority = kind * stride + index: index never reaches the stride
_BLOCK = 256  # samples drawn per numpy call


def draw(dist: Distribution, rng: Generator, size: int) -> NDArray[np.float64]:
    """``size`` samples of ``dist`` in seconds, with the doc's parameterisations."""
    match dist.kind:
        case DistKind.DETERMINISTIC:
            return np.full(size, dist.mean)
        case DistKind.EXPONENTIAL:
            return rng.exponential(dist.mean, size)
        case DistKind.LOGNORMAL:
            s2 = math.log1p(dist.cv**2)
            return rng.lognormal(math.log(dist.mean) - s2 / 2.0, math.sqrt(s2), size)
        case DistKind.GAMMA:
            return rng.gamma(1.0 / dist.cv**2, dist.mean * dist.cv**2, size)
        case DistKind.UNIFORM:
            return rng.uniform(dist.low, dist.high, size)
        case DistKind.EMPIRICAL:
            values = np.asarray(dist.values, dtype=np.float64)
            return values[rng.integers(0, len(values), size)]
    raise ValueError(f"unknown distribution kind {dist.kind!r}")  # pragma: no cover


class _Sampler:
    """One stream of samples of one distribution, drawn ``_BLOCK`` at a time."""

    __slots__ = ("_dist", "_pos", "_rng", "_values")

    def __init__(self, dist: Distribution, rng: Generator) -> None:
        self._dist = dist
        self._rng = rng
        self._values: list[float] = []
        self._pos = 0

    def __call__(self) -> float:
        if self._pos == len(self._values):
            self._values = draw(self._dist, self._rng, _BLOCK).tolist()
            self._pos = 0
        x = self._values[self._pos]
        self._pos += 1
        return x


class _Uniform:
    """A stream of U(0, 1) samples (scrap decisions and probability routing)."""

    __slots__ = ("_pos", "_rng", "_values")

    def __init__(self, rng: Generator) -> None:
        self._rng = rng
        self._values: list[float] = []
        self._pos = 0

    def __call__(self) -> float:
        if self._pos == len(self._values):
            self._values = self._rng.random(_BLOCK).tolist()
            self._pos = 0
        x = self._values[self._pos]
        self._pos += 1
        return x


class _At(simpy.Event):
    """An event that fires ``delay`` seconds from now and calls ``handler(subject)``.

    Among events at the same instant, lower ``priority`` fires first.
    """

    def __init__(
        self,
        env: simpy.Environment,
        delay: float,
        priority: int,
        handler: Callable[[Any], None],
        subject: Any,
    ) -> None:
        super().__init__(env)
        self._ok = True
        self._value = None
        self.handler = handler
        self.subject = subject
        self.callbacks.append(_At._fire)
        env.schedule(self, EventPriority(priority), delay)

    @staticmethod
    def _fire(event: simpy.Event) -> None:
        assert isinstance(event, _At)
        event.handler(event.subject)


class _Server:
    """One machine of a station, with explicit state."""

    __slots__ = (
        "blocked_since",
        "fail_at",
        "gid",
        "index",
        "part",
        "resume",
        "seg_start",
        "since",
        "state",
        "station",
        "target",
        "ttf",
        "work",
    )

    def __init__(self, station: _Station, index: int, gid: int) -> None:
        self.station = station
        self.index = index
        self.gid = gid  # global server index: orders simultaneous events
        self.state = _State.IDLE
        self.since = 0.0  # when the current state began
        self.part = 0.0  # release time of the part held (meaningful when busy/blocked/down)
        self.work = 0.0  # processing time left (busy, or down while busy)
        self.seg_start = 0.0  # start of the current busy segment
        self.ttf = math.inf  # mode operation: busy time left until the next failure
        self.fail_at = math.inf  # mode time: when the next failure happens
        self.resume = _State.IDLE  # state to return to after a repair
        self.blocked_since = 0.0
        self.target: _Buf | None = None  # probability routing: destination drawn at completion


class _Buf:
    """A FIFO buffer (or conveyor) between two stations."""

    __slots__ = ("capacity", "index", "out_index", "queue", "src", "tgt", "transit")

    def __init__(self, index: int, capacity: int, transit: float, src: _Station, tgt: _Station):
        self.index = index
        self.capacity = capacity
        self.transit = transit
        self.src = src
        self.tgt = tgt
        self.out_index = 0  # position among the outputs of ``src``
        self.queue: deque[tuple[float, float]] = deque()  # (ready time, release time)


class _Source:
    """A timed source: arrivals wait in an unbounded FIFO in front of ``station``."""

    __slots__ = ("index", "interarrival", "queue", "station")

    def __init__(self, index: int, station: _Station, interarrival: _Sampler) -> None:
        self.index = index
        self.station = station
        self.interarrival = interarrival
        self.queue: deque[float] = deque()  # arrival (= release = ready) times


class _Station:
    """Run-time state and counters of one station."""

    __slots__ = (
        "acc",
        "completions",
        "cum_weights",
        "inputs",
        "n_blocked",
        "n_idle",
        "outputs",
        "pointer",
        "process",
        "produced",
        "repair_draw",
        "saturated",
        "scrapped",
        "servers",
        "source",
        "spec",
        "ttf_draw",
    )

    def __init__(self, spec: Station, rng: Generator) -> None:
        self.spec = spec
        self.servers: list[_Server] = []
        self.inputs: list[_Buf] = []
        self.outputs: list[_Buf] = []
        self.source: _Source | None = None
        self.saturated = False
        self.n_idle = 0
        self.n_blocked = 0
        self.pointer = 0  # round robin: position in ``outputs`` to try first
        self.cum_weights: list[float] = []  # probability routing, aligned with ``outputs``
        self.process = _Sampler(spec.process_time, rng)
        f = spec.failures
        self.ttf_draw = _Sampler(Distribution.exponential(f.mtbf), rng) if f else None
        self.repair_draw = _Sampler(Distribution.exponential(f.mttr), rng) if f else None
        self.acc = [0.0, 0.0, 0.0, 0.0]  # server-seconds in the window per _State
        self.produced = 0
        self.scrapped = 0
        self.completions = 0  # whole run, scrapped included


class _Line:
    """One run of one line: the state, the event handlers and the transfer phase."""

    def __init__(self, spec: LineSpec, *, horizon: float, warmup: float, seed: int) -> None:
        self.spec = spec
        self.H = horizon
        self.W = warmup
        rng = Generator(PCG64(seed))
        self.env = simpy.Environment()
        self.uniform = _Uniform(rng)
        self.stations = [_Station(s, rng) for s in spec.stations]
        by_id = {s.spec.id: s for s in self.stations}
        gid = 0
        for st in self.stations:
            for k in range(st.spec.servers):
                st.servers.append(_Server(st, k, gid))
                gid += 1
            st.n_idle = st.spec.servers
        self.buffers: list[_Buf] = []
        for i, b in enumerate(spec.buffers):
            buf = _Buf(i, b.capacity, b.transit_time, by_id[b.source], by_id[b.target])
            buf.out_index = len(buf.src.outputs)
            buf.src.outputs.append(buf)
            buf.tgt.inputs.append(buf)
            self.buffers.append(buf)
        self.sources: list[_Source] = []
        for i, src in enumerate(spec.sources):
            st = by_id[src.feeds]
            st.source = _Source(i, st, _Sampler(src.interarrival, rng))
            self.sources.append(st.source)
        for st in self.stations:
            st.saturated = not st.inputs and st.source is None
            if st.spec.routing is RoutingPolicy.PROBABILITY and st.outputs:
                weights = dict(st.spec.weights)
                w = [weights.get(b.id, 0.0) for b in spec.outputs(st.spec.id)]
                last = max(k for k, x in enumerate(w) if x > 0.0)
                cum = np.cumsum(w) / sum(w)
                cum[last:] = 1.0  # so rounding can never pick a buffer of weight 0
                st.cum_weights = cum.tolist()
        # Measurements.
        self.wip = 0
        self.wip_since = 0.0
        self.wip_area = 0.0
        self.delivered = 0
        self.lead_times: list[float] = []

    # -- scheduling ---------------------------------------------------------------------------
    def _at(
        self, delay: float, kind: _Kind, index: int, handler: Callable[[Any], None], subject: Any
    ) -> None:
        _At(self.env, delay, kind * _KIND_STRIDE + index, handler, subject)

    # -- bookkeeping ----------------------------------------------------------------------------
    def _set_state(self, srv: _Server, new: _State) -> None:
        """Change a server's state, integrating the old state's time over the window."""
        now = self.env.now
        start = srv.since if srv.since > self.W else self.W
        st = srv.station
        if now > start:
            st.acc[srv.state] += now - start
        srv.since = now
        old = srv.state
        if old is _State.IDLE:
            st.n_idle -= 1
        elif old is _State.BLOCKED:
            st.n_blocked -= 1
        if new is _State.IDLE:
            st.n_idle += 1
        elif new is _State.BLOCKED:
            st.n_blocked += 1
        srv.state = new

    def _wip_add(self, delta: int) -> None:
        now = self.env.now
        start = self.wip_since if self.wip_since > self.W else self.W
        if now > start:
            self.wip_area += self.wip * (now - start)
        self.wip_since = now
        self.wip += delta

    # -- processing and failures ----------------------------------------------------------------
    def _start(self, srv: _Server, release: float) -> None:
        """An idle server starts a part: draw its processing time and run the first segment."""
        srv.part = release
        srv.work = srv.station.process()
        self._set_state(srv, _State.BUSY)
        self._run_segment(srv)

    def _run_segment(self, srv: _Server) -> None:
        """Schedule the end of a busy segment: the completion, or a failure that comes first."""
        now = self.env.now
        srv.seg_start = now
        failures = srv.station.spec.failures
        if failures is None:
            self._at(srv.work, _Kind.COMPLETION, srv.gid, self._on_completion, srv)
        elif failures.mode is FailureMode.OPERATION:
            if srv.ttf < srv.work:
                self._at(srv.ttf, _Kind.FAILURE, srv.gid, self._on_failure, srv)
            else:
                self._at(srv.work, _Kind.COMPLETION, srv.gid, self._on_completion, srv)
        elif not srv.fail_at < now + srv.work:  # mode time: the failure is already scheduled
            self._at(srv.work, _Kind.COMPLETION, srv.gid, self._on_completion, srv)

    def _on_completion(self, srv: _Server) -> None:
        st = srv.station
        now = self.env.now
        st.completions += 1
        failures = st.spec.failures
        if failures is not None and failures.mode is FailureMode.OPERATION:
            srv.ttf -= srv.work
        srv.work = 0.0
        counted = now > self.W
        if st.spec.scrap_rate > 0.0 and self.uniform() < st.spec.scrap_rate:
            if counted:
                st.scrapped += 1
            self._wip_add(-1)
            self._set_state(srv, _State.IDLE)
        else:
            if counted:
                st.produced += 1
            srv.blocked_since = now
            if st.cum_weights:
                srv.target = self._draw_output(st)
            self._set_state(srv, _State.BLOCKED)
        self.transfer()

    def _draw_output(self, st: _Station) -> _Buf:
        """Probability routing: an outgoing buffer drawn from the normalised weights."""
        u = self.uniform()  # in [0, 1); the last weighted buffer's cumulative weight is 1.0
        return next(b for b, cum in zip(st.outputs, st.cum_weights, strict=True) if u < cum)

    def _on_failure(self, srv: _Server) -> None:
        st = srv.station
        failures = st.spec.failures
        assert failures is not None and st.repair_draw is not None
        if failures.mode is FailureMode.OPERATION:  # only ever scheduled inside a busy segment
            srv.work -= srv.ttf
            srv.ttf = 0.0
        elif srv.state is _State.BUSY:
            srv.work = max(0.0, srv.work - (self.env.now - srv.seg_start))
        srv.resume = srv.state
        self._set_state(srv, _State.DOWN)
        self._at(st.repair_draw(), _Kind.REPAIR, srv.gid, self._on_repair, srv)
        self.transfer()

    def _on_repair(self, srv: _Server) -> None:
        st = srv.station
        failures = st.spec.failures
        assert failures is not None and st.ttf_draw is not None
        if failures.mode is FailureMode.OPERATION:
            srv.ttf = st.ttf_draw()
        else:
            self._schedule_time_failure(srv)
        self._set_state(srv, srv.resume)
        if srv.state is _State.BUSY:
            self._run_segment(srv)
        self.transfer()

    def _schedule_time_failure(self, srv: _Server) -> None:
        st = srv.station
        assert st.ttf_draw is not None
        delay = st.ttf_draw()
        srv.fail_at = self.env.now + delay  # the same sum SimPy computes for the event time
        self._at(delay, _Kind.FAILURE, srv.gid, self._on_failure, srv)

    # -- arrivals and conveyors -----------------------------------------------------------------
    def _on_arrival(self, src: _Source) -> None:
        src.queue.append(self.env.now)
        self._wip_add(+1)
        self._at(src.interarrival(), _Kind.ARRIVAL, src.index, self._on_arrival, src)
        self.transfer()

    def _on_head(self, _buf: _Buf) -> None:
        self.transfer()

    # -- the transfer phase -----------------------------------------------------------------------
    def _room(self, buf: _Buf) -> bool:
        if buf.capacity > 0:
            return len(buf.queue) < buf.capacity
        return buf.tgt.n_idle > 0

    def _route(self, srv: _Server) -> _Buf | None:
        """The outgoing buffer the routing rule sends the part of blocked ``srv`` to now."""
        st = srv.station
        policy = st.spec.routing
        outs = st.outputs
        if st.cum_weights:  # probability
            target = srv.target
            return target if target is not None and self._room(target) else None
        if policy is RoutingPolicy.SHORTEST_QUEUE:
            best: _Buf | None = None
            for buf in outs:
                if self._room(buf) and (best is None or len(buf.queue) < len(best.queue)):
                    best = buf
            return best
        n = len(outs)  # round robin
        for k in range(n):
            buf = outs[(st.pointer + k) % n]
            if self._room(buf):
                return buf
        return None

    def _push(self, srv: _Server) -> bool:
        """A blocked server hands its part to the sink or a buffer with ``C > 0``, if it can."""
        st = srv.station
        now = self.env.now
        if not st.outputs:
            if now > self.W:
                self.delivered += 1
                self.lead_times.append(now - srv.part)
            self._wip_add(-1)
            self._set_state(srv, _State.IDLE)
            return True
        buf = self._route(srv)
        if buf is None or buf.capacity == 0:  # no room, or a handoff the receiver will make
            return False
        buf.queue.append((now + buf.transit, srv.part))
        if buf.transit > 0.0:
            self._at(buf.transit, _Kind.HEAD, buf.index, self._on_head, buf)
        st.pointer = (buf.out_index + 1) % len(st.outputs)
        srv.target = None
        self._set_state(srv, _State.IDLE)
        return True

    def _pull(self, st: _Station) -> bool:
        """The lowest idle server of ``st`` takes the candidate ready longest, if any."""
        now = self.env.now
        best: tuple[float, int, int] | None = None
        best_from: _Buf | _Server | _Source | None = None
        best_link: _Buf | None = None  # the capacity-0 link when best_from is a server
        for k, buf in enumerate(st.inputs):
            if buf.capacity > 0:
                if buf.queue and buf.queue[0][0] <= now:
                    key = (buf.queue[0][0], k, 0)
                    if best is None or key < best:
                        best, best_from = key, buf
            elif buf.src.n_blocked:
                for up in buf.src.servers:
                    if up.state is _State.BLOCKED and self._route(up) is buf:
                        key = (up.blocked_since, k, up.index)
                        if best is None or key < best:
                            best, best_from, best_link = key, up, buf
        src = st.source
        if src is not None and src.queue:
            key = (src.queue[0], len(st.inputs), 0)
            if best is None or key < best:
                best, best_from = key, src
        if best_from is None and not st.saturated:
            return False
        srv = next(s for s in st.servers if s.state is _State.IDLE)
        if best_from is None:  # a saturated station releases a new part
            self._wip_add(+1)
            self._start(srv, now)
            return True
        if isinstance(best_from, _Buf):
            release = best_from.queue.popleft()[1]
        elif isinstance(best_from, _Source):
            release = best_from.queue.popleft()
        else:  # a blocked upstream server over a capacity-0 link
            assert best_link is not None
            up = best_from
            release = up.part
            up.station.pointer = (best_link.out_index + 1) % len(up.station.outputs)
            up.target = None
            self._set_state(up, _State.IDLE)
        self._start(srv, release)
        return True

    def transfer(self) -> None:
        """Move parts until nothing can move (the doc's transfer phase)."""
        moved = True
        while moved:
            moved = False
            for st in self.stations:
                if st.n_blocked:
                    for srv in st.servers:
                        if srv.state is _State.BLOCKED and self._push(srv):
                            moved = True
            for st in self.stations:
                while st.n_idle and self._pull(st):
                    moved = True

    # -- the run ---------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        for st in self.stations:
            failures = st.spec.failures
            if failures is None:
                continue
            for srv in st.servers:
                if failures.mode is FailureMode.OPERATION:
                    assert st.ttf_draw is not None
                    srv.ttf = st.ttf_draw()
                else:
                    self._schedule_time_failure(srv)
        for src in self.sources:
            self._at(src.interarrival(), _Kind.ARRIVAL, src.index, self._on_arrival, src)
        self.transfer()
        env = self.env
        peek, step = env.peek, env.step
        events = 0
        while peek() <= self.H:
            step()
            events += 1
        return self._results(events)

    def _results(self, events: int) -> dict[str, Any]:
        H, W = self.H, self.W
        window = H - W
        for st in self.stations:  # close the open state intervals at H
            for srv in st.servers:
                start = srv.since if srv.since > W else W
                if start < H:
                    st.acc[srv.state] += H - start
        start = self.wip_since if self.wip_since > W else W
        wip_area = self.wip_area + (self.wip * (H - start) if start < H else 0.0)

        stations: dict[str, dict[str, Any]] = {}
        oees: dict[str, dict[str, float]] = {}
        best_id = self.stations[0].spec.id
        best_active = -1.0
        for st in self.stations:
            c = st.spec.servers
            frac = [a / (c * window) for a in st.acc]
            sid = st.spec.id
            stations[sid] = {
                "busy": frac[_State.BUSY],
                "blocked": frac[_State.BLOCKED],
                "starved": frac[_State.IDLE],
                "down": frac[_State.DOWN],
                "produced": st.produced,
                "scrapped": st.scrapped,
            }
            availability = 1.0 - frac[_State.DOWN]
            finished = st.produced + st.scrapped
            performance = (
                st.spec.process_time.mean * finished / (c * window * availability)
                if availability > 0.0
                else 0.0
            )
            quality = st.produced / finished if finished else 1.0
            oees[sid] = {
                "oee": availability * performance * quality,
                "availability": availability,
                "performance": performance,
                "quality": quality,
            }
            active = frac[_State.BUSY] + frac[_State.DOWN]
            if active > best_active:
                best_id, best_active = sid, active

        leads = np.asarray(self.lead_times)
        return {
            "throughput_per_hour": self.delivered / window * 3600.0,
            "wip": wip_area / window,
            "lead_time_mean": float(leads.mean()) if leads.size else math.nan,
            "lead_time_p95": float(np.percentile(leads, 95)) if leads.size else math.nan,
            "delivered": self.delivered,
            "events": events,
            "completions": sum(st.completions for st in self.stations),
            "stations": stations,
            "oee": oees[best_id],
            "bottleneck": best_id,
        }


def simulate(
    spec: LineSpec, *, hours: float, warmup_hours: float = 0.0, seed: int = 0
) -> dict[str, Any]:
    """Simulate ``spec`` for ``hours`` and measure the KPIs over ``(warmup_hours, hours]``.

    Deterministic for a given ``seed``. See the module docstring for the returned keys' meaning.
    """
    if not 0.0 <= warmup_hours < hours:
        raise ValueError(f"need 0 <= warmup_hours < hours, got {warmup_hours} and {hours}")
    # Rounded to the nanosecond so that, e.g., ``hours=3695 / 3600`` means exactly 3695 s.
    horizon, warmup = round(hours * 3600.0, 9), round(warmup_hours * 3600.0, 9)
    line = _Line(spec, horizon=horizon, warmup=warmup, seed=seed)
    return line.run()


def replicate(
    spec: LineSpec, *, hours: float, warmup_hours: float = 0.0, replications: int, seed: int = 0
) -> list[dict[str, Any]]:
    """Independent replications of :func:`simulate`, replication ``r`` with seed ``seed + r``."""
    return [
        simulate(spec, hours=hours, warmup_hours=warmup_hours, seed=seed + r)
        for r in range(replications)
    ]


@dataclass(frozen=True, slots=True, kw_only=True)
class Summary:
    """Mean of ``n`` replications and the half-width of its Student-t confidence interval."""

    mean: float
    halfwidth: float
    n: int
    confidence: float

    @property
    def low(self) -> float:
        return self.mean - self.halfwidth

    @property
    def high(self) -> float:
        return self.mean + self.halfwidth

    def __contains__(self, value: float) -> bool:
        return self.low <= value <= self.high


def summarize(results: Sequence[dict[str, Any]], key: str, confidence: float = 0.95) -> Summary:
    """Mean and t-interval of ``key`` over replications; ``key`` may be a dotted path.

    ``"throughput_per_hour"``, ``"stations.M2.busy"`` and ``"oee.oee"`` are all valid keys.
    """
    from scipy import stats

    if len(results) < 2:
        raise ValueError("a confidence interval needs at least two replications")
    values = []
    for res in results:
        value: Any = res
        for part in key.split("."):
            value = value[part]
        values.append(float(value))
    x = np.asarray(values)
    n = len(x)
    sem = float(x.std(ddof=1)) / math.sqrt(n)
    halfwidth = float(stats.t.ppf(0.5 + confidence / 2.0, n - 1)) * sem
    return Summary(mean=float(x.mean()), halfwidth=halfwidth, n=n, confidence=confidence)
