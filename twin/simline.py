"""A line run by the process core in simulated real time, written into a scene store.

Until telemetry drives the twin (issue 4), this is what ``twin serve`` shows: the exact
event-driven engine (``physics.process.engine``) advanced tick by tick to ``speed`` times the
wall clock, its machine states, buffer levels, counters and the parts on each conveyor copied
into the :class:`~streaming.store.SceneStore` that viewers mirror. A station that breaks down
raises an alarm (an ``alarm/N`` entity and an ``alarm`` event); an operator acknowledges it.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jax.numpy as jnp
import numpy as np

from physics.process.model import BLOCKED, BUSY, DOWN, IDLE
from scenes.graph import (
    LINE_ID,
    BoxGeometry,
    ConveyorGeometry,
    MachineState,
    MeshGeometry,
    RobotGeometry,
    SceneGraph,
    buffer_id,
    conveyor_id,
    station_id,
)
from scenes.spec import LineSpec
from streaming.auth import Principal
from streaming.hub import CommandRegistry, Outcome
from streaming.protocol import Command, ErrorCode, Role
from streaming.store import SceneStore

#: Longest stretch of simulated time one tick may cover (a stall does not make parts jump far).
MAX_TICK_SIM_S = 600.0
#: The window of the live throughput figure (simulated seconds).
THROUGHPUT_WINDOW_S = 900.0


def entity_props(graph: SceneGraph, entity_id: str) -> dict[str, Any]:
    """The static props of a scene-graph entity as they go on the wire (``docs/protocol.md``)."""
    e = graph.entity(entity_id)
    props: dict[str, Any] = {
        "label": e.visual.label,
        "color": e.visual.color,
        "category": e.visual.category,
        "ref": e.ref,
    }
    if e.parent is not None:
        props["parent"] = e.parent
    g = e.geometry
    if isinstance(g, BoxGeometry):
        props["geometry"] = {"type": "box", "size": list(g.size), "asset": g.asset}
    elif isinstance(g, MeshGeometry):
        props["geometry"] = {
            "type": "mesh",
            "size": None if g.size is None else list(g.size),
            "asset": g.asset,
        }
    elif isinstance(g, ConveyorGeometry):
        path = graph.conveyor_path(e.ref)
        props["geometry"] = {
            "type": "conveyor",
            "path": [list(p) for p in path.points],  # world coordinates
            "width": g.width,
            "speed": g.speed,
        }
    elif isinstance(g, RobotGeometry):
        props["geometry"] = {"type": "robot", "urdf": g.urdf}
    return props


@dataclass(slots=True)
class _Alarm:
    id: str
    station: str
    state: str  # active, acknowledged, cleared
    raised_t: float
    acked_by: str | None = None
    cleared: bool = False
    text: str = ""
    severity: str = "major"


class SimulatedLine:
    """The store :data:`~streaming.server.Source` for a simulated line; also offers the
    ``sim.*`` and ``alarm.ack`` commands (:meth:`register_commands`)."""

    def __init__(
        self,
        spec: LineSpec,
        graph: SceneGraph,
        *,
        seed: int = 1,
        speed: float = 1.0,
        on_alarm: Callable[[Mapping[str, Any]], object] | None = None,
        random_failures: bool = True,
    ) -> None:
        from physics.process import api, engine
        from physics.process.model import build

        if not 0 < speed <= 10_000:
            raise ValueError("speed must be within (0, 10000]")
        self.spec = spec
        self.graph = graph
        self.speed = speed
        self.paused = False
        self.on_alarm = on_alarm
        self._lock = threading.Lock()
        self.model, params = build(spec)
        if not random_failures:  # breakdowns come from elsewhere (telemetry, a scenario)
            params = params.replace(mtbf=jnp.full_like(params.mtbf, jnp.inf))
        self.params = api.batch_params(params, 1)
        keys = api.replication_keys(seed, 1, 1)
        self._engine = engine
        self.state = engine.run(self.model, self.params.replace(horizon=jnp.zeros((1,))), keys)
        self.sim_t = 0.0
        self._wall: float | None = None
        self._transit = np.asarray(self.params.transit)[0]
        self._parts: dict[tuple[int, int], tuple[float, str]] = {}  # (buffer, slot) -> entry, id
        self._part_ids = itertools.count()
        self._alarms: dict[str, _Alarm] = {}
        self._open_alarm: dict[int, str] = {}  # station index -> alarm id while down
        self._alarm_ids = itertools.count(1)
        self._deliveries: deque[tuple[float, int]] = deque()
        self.robots: Any = None  # twin.robots.RobotCells, attached by attach_robots()
        self._pending_robot_alarms: list[tuple[str, str]] = []
        self._paths = {
            b: graph.conveyor_path(self.model.buffer_ids[b])
            for b in range(self.model.n_buffers)
            if self.model.has_transit[b]
        }
        self._pitch = {b: self._conveyor_pitch(b) for b in self._paths}

    def restart(self, spec: LineSpec, *, seed: int = 1) -> None:
        """Run ``spec`` instead, from time 0: a variant of the same line (the same stations and
        buffers, other numbers: a designer switching variants). ValueError for another layout."""
        from physics.process import api
        from physics.process.model import build

        ids = ([s.id for s in spec.stations], [b.id for b in spec.buffers])
        if ids != ([s.id for s in self.spec.stations], [b.id for b in self.spec.buffers]):
            raise ValueError("a variant with other stations or buffers needs its own layout")
        with self._lock:
            model, params = build(spec)
            self.spec, self.model = spec, model
            self.params = api.batch_params(params, 1)
            keys = api.replication_keys(seed, 1, 1)
            self.state = self._engine.run(model, self.params.replace(horizon=jnp.zeros((1,))), keys)
            self.sim_t = 0.0
            self._wall = None
            self._transit = np.asarray(self.params.transit)[0]
            self._deliveries.clear()
            self._open_alarm.clear()

    def _conveyor_pitch(self, b: int) -> float:
        g = self.graph.entity(conveyor_id(self.model.buffer_ids[b])).geometry
        length = self._paths[b].length
        pitch = g.pitch if isinstance(g, ConveyorGeometry) else 0.5
        return pitch / length if length > 0 else 0.0

    # -- the scene -------------------------------------------------------------------------------

    def populate(self, store: SceneStore) -> None:
        """Add every static entity of the line (world poses) and the initial state (and the
        robot cells' links, when attached)."""
        for e in self.graph.entities:
            wt = self.graph.world_transform(e.id)
            store.add(
                e.id,
                e.kind.value,
                props=entity_props(self.graph, e.id),
                pos=wt.position,
                quat=wt.rotation,
            )
        if self.robots is not None:
            self.robots.populate(store)
        self.write(store)

    def __call__(self, store: SceneStore, wall: float) -> float:
        """Advance to the wall clock and write the new state into ``store``; returns sim time."""
        with self._lock:
            if self._wall is None:
                self._wall = wall
            dt = max(0.0, wall - self._wall)
            self._wall = wall
            before = self.sim_t
            if not self.paused:
                self._advance_to(self.sim_t + min(dt * self.speed, MAX_TICK_SIM_S))
            self.write(store)
            if self.robots is not None:
                self.robots.update(store, self.sim_t - before, self._busy_robot_stations())
                for entity, text in self._pending_robot_alarms:
                    self.raise_alarm(store, entity, text)
                self._pending_robot_alarms.clear()
            return self.sim_t

    def attach_robots(self, robots: Any) -> None:
        """Run ``robots`` (a :class:`twin.robots.RobotCells`) with the line: their cells cycle
        while the core has their station busy; their alarms become the line's."""
        self.robots = robots
        robots.on_event = lambda sid, kind, text: self._pending_robot_alarms.append(
            (station_id(sid), text)
        )

    def _busy_robot_stations(self) -> frozenset[str]:
        st = np.asarray(self.state.st)[0]
        return frozenset(
            sid
            for i, sid in enumerate(self.model.station_ids)
            if sid in self.robots.stations and np.any(st[list(self.model.slots(i))] == BUSY)
        )

    def step(self, seconds: float) -> None:
        """Advance simulated time by ``seconds`` regardless of pause (the trainer's step)."""
        with self._lock:
            self._advance_to(self.sim_t + seconds)

    def _advance_to(self, t: float) -> None:
        if t <= self.sim_t:
            return
        self.state = self._engine.advance(self.model, self.params, self.state, until_s=t)
        self.sim_t = t

    def write(self, store: SceneStore) -> None:
        m, s = self.model, self.state
        st = np.asarray(s.st)[0]
        produced = np.asarray(s.produced)[0]
        scrapped = np.asarray(s.scrapped)[0]
        count = np.asarray(s.count)[0]
        frac = self._fractions()
        quality = np.where(
            produced + scrapped > 0, produced / np.maximum(produced + scrapped, 1), 1.0
        )
        oee = frac[:, BUSY] * quality  # = availability x performance x quality
        active = frac[:, BUSY] + frac[:, DOWN]
        neck = int(np.argmax(active)) if self.sim_t > 0 else -1
        for i, sid in enumerate(m.station_ids):
            states = st[list(m.slots(i))][: int(np.asarray(self.params.servers)[0, i])]
            comps: dict[str, Any] = {
                "state": _station_state(states).value,
                "produced": int(produced[i]),
                "scrapped": int(scrapped[i]),
                "busy": int(np.sum(states == BUSY)),
                "servers": int(states.shape[0]),
                # busy, blocked, starved, down: fractions of server time since the start
                "fractions": [round(float(frac[i, k]), 4) for k in (BUSY, BLOCKED, IDLE, DOWN)],
                "oee": round(float(oee[i]), 4),
            }
            comps.update(self.station_overrides(i, comps))
            store.update(station_id(sid), comps)
            self._track_alarm(store, i, sid, MachineState(comps["state"]))
        for b, bid in enumerate(m.buffer_ids):
            bcomps: dict[str, Any] = {
                "level": int(count[b]),
                "capacity": int(np.asarray(self.params.capacity)[0, b]),
            }
            bcomps.update(self.buffer_overrides(b, bcomps))
            store.update(buffer_id(bid), bcomps)
        store.update(
            LINE_ID,
            {
                "delivered": int(np.asarray(s.delivered)[0]),
                "wip": int(np.asarray(s.wip)[0]),
                "throughput_per_hour": round(self._throughput(int(np.asarray(s.delivered)[0])), 1),
                "oee": round(float(oee[neck]), 4) if neck >= 0 else None,
                "bottleneck": m.station_ids[neck] if neck >= 0 else None,
                # telemetry health: a simulated line has none to lose (the live twin fills these)
                "stale_tags": 0,
                "rejected": 0,
                "sim_time": self.sim_t,
                "paused": self.paused,
                "speed": self.speed,
                **self.line_overrides(),
            },
        )
        self._write_parts(store, count)

    # Hooks for a twin mirroring a real line (twin.live.mirror): what the process core predicts
    # is replaced by what was measured.
    def station_overrides(self, i: int, predicted: dict[str, Any]) -> dict[str, Any]:
        return {}

    def buffer_overrides(self, b: int, predicted: dict[str, Any]) -> dict[str, Any]:
        return {}

    def line_overrides(self) -> dict[str, Any]:
        return {}

    def _fractions(self) -> np.ndarray:
        """(stations, 4) fractions of server time in IDLE, BUSY, BLOCKED, DOWN since the start."""
        m = self.model
        acc = np.asarray(self.state.acc)[0]
        servers = np.asarray(self.params.servers)[0].astype(np.float64)
        per = np.zeros((m.n_stations, 4))
        for slot, station in enumerate(m.slot_station):
            per[station] += acc[slot]
        out: np.ndarray = per / np.maximum(servers * max(self.sim_t, 1e-9), 1e-9)[:, None]
        return out

    def _throughput(self, delivered: int) -> float:
        """Parts per hour delivered over the last ``THROUGHPUT_WINDOW_S`` of simulated time."""
        self._deliveries.append((self.sim_t, delivered))
        while (
            len(self._deliveries) > 2 and self._deliveries[1][0] <= self.sim_t - THROUGHPUT_WINDOW_S
        ):
            self._deliveries.popleft()
        t0, d0 = self._deliveries[0]
        return 3600.0 * (delivered - d0) / (self.sim_t - t0) if self.sim_t > t0 else 0.0

    def _write_parts(self, store: SceneStore, count: np.ndarray) -> None:
        s = self.state
        ring_t = np.asarray(s.ring_t)[0]
        head = np.asarray(s.head)[0]
        ring = ring_t.shape[1]
        now = self.sim_t
        seen: set[tuple[int, int]] = set()
        handles, positions = [], []
        for b, path in self._paths.items():
            transit = max(float(self._transit[b]), 1e-9)
            limit = 1.0
            for k in range(int(count[b])):
                slot = (int(head[b]) + k) % ring
                entry = float(ring_t[b, slot])
                progress = min(limit, max(0.0, (now - entry) / transit))
                limit = max(0.0, progress - self._pitch[b])
                key = (b, slot)
                seen.add(key)
                known = self._parts.get(key)
                if known is None or known[0] != entry:
                    if known is not None:
                        store.remove(known[1])
                    pid = f"part/{self.model.buffer_ids[b]}/{next(self._part_ids)}"
                    store.add(pid, "part", props={"buffer": self.model.buffer_ids[b]})
                    self._parts[key] = (entry, pid)
                    known = self._parts[key]
                handles.append(store.handle(known[1]))
                positions.append(path.point_at(progress))
        for key in [k for k in self._parts if k not in seen]:
            store.remove(self._parts.pop(key)[1])
        if handles:
            store.set_transforms(np.asarray(handles), np.asarray(positions, np.float32))

    # -- alarms ----------------------------------------------------------------------------------

    def _track_alarm(self, store: SceneStore, i: int, sid: str, state: MachineState) -> None:
        open_id = self._open_alarm.get(i)
        if state is MachineState.DOWN and open_id is None:
            aid = f"alarm/{next(self._alarm_ids)}"
            a = _Alarm(id=aid, station=station_id(sid), state="active", raised_t=self.sim_t)
            self._alarms[aid] = a
            self._open_alarm[i] = aid
            store.add(
                aid,
                "alarm",
                props={"entity": a.station, "severity": "major"},
                state=self._alarm_state(a),
            )
            self._emit(a)
        elif state is not MachineState.DOWN and open_id is not None:
            a = self._alarms[open_id]
            del self._open_alarm[i]
            a.cleared = True
            a.state = "cleared" if a.acked_by is not None else a.state
            store.update(a.id, self._alarm_state(a))
            self._emit(a)
            self._retire(store, a)

    def raise_alarm(
        self, store: SceneStore, entity: str, text: str, severity: str = "major"
    ) -> str:
        """An event alarm (a robot collision, a dropped part): active until acknowledged; the
        event itself is over (``cleared``)."""
        aid = f"alarm/{next(self._alarm_ids)}"
        a = _Alarm(
            id=aid,
            station=entity,
            state="active",
            raised_t=self.sim_t,
            cleared=True,
            text=text,
            severity=severity,
        )
        self._alarms[aid] = a
        store.add(
            aid, "alarm", props={"entity": entity, "severity": severity}, state=self._alarm_state(a)
        )
        self._emit(a)
        return aid

    def _alarm_state(self, a: _Alarm) -> dict[str, Any]:
        return {
            "state": a.state,
            "cleared": a.cleared,
            "acked_by": a.acked_by,
            "raised_t": a.raised_t,
            "text": a.text or f"{a.station.split('/', 1)[1]} is down",
        }

    def _emit(self, a: _Alarm) -> None:
        if self.on_alarm is not None:
            self.on_alarm(
                {
                    "id": a.id,
                    "entity": a.station,
                    "severity": a.severity,
                    "t": self.sim_t,
                    **self._alarm_state(a),
                }
            )

    def _retire(self, store: SceneStore, a: _Alarm) -> None:
        """An alarm that is both cleared and acknowledged leaves the list (keep the last 50)."""
        done = [x for x in self._alarms.values() if x.cleared and x.acked_by is not None]
        for x in done[:-50] if len(done) > 50 else []:
            store.remove(x.id)
            del self._alarms[x.id]

    def ack(self, principal: Principal, command: Command, store: SceneStore) -> Outcome:
        with self._lock:
            a = self._alarms.get(command.target)
            if a is None:
                return Outcome(
                    ok=False,
                    code=ErrorCode.INVALID_ARGS.value,
                    reason=f"no alarm '{command.target}'",
                )
            if a.acked_by is not None:
                return Outcome(ok=True, result={"already": True, "acked_by": a.acked_by})
            a.acked_by = principal.name
            a.state = "cleared" if a.cleared else "acknowledged"
            store.update(a.id, self._alarm_state(a))
            self._emit(a)
            return Outcome(ok=True, result={"state": a.state})

    # -- commands --------------------------------------------------------------------------------

    def register_commands(self, registry: CommandRegistry, store: SceneStore) -> None:
        control = {Role.TRAINER}
        registry.register(
            "alarm.ack",
            {Role.OPERATOR, Role.TRAINER},
            lambda p, c: self.ack(p, c, store),
            "acknowledge an alarm (target: alarm id)",
        )
        registry.register(
            "sim.pause", control, lambda p, c: self._set(paused=True), "pause simulated time"
        )
        registry.register(
            "sim.resume", control, lambda p, c: self._set(paused=False), "resume simulated time"
        )
        registry.register(
            "sim.speed",
            control,
            self._speed,
            "set the speed: args {speed: 0.1..100} simulated seconds per second",
        )
        registry.register(
            "sim.step",
            control,
            self._step,
            "advance simulated time: args {seconds: > 0, at most 3600}",
        )
        from twin.fork import register_fork_command  # what-if forecasts (twin/fork.py)

        register_fork_command(registry, self)

    def _set(self, *, paused: bool) -> Outcome:
        with self._lock:
            self.paused = paused
        return Outcome(ok=True, result={"paused": paused, "t": self.sim_t})

    def _speed(self, p: Principal, c: Command) -> Outcome:
        v = c.args.get("speed")
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0.1 <= v <= 100:
            return Outcome(
                ok=False,
                code=ErrorCode.INVALID_ARGS.value,
                reason="args.speed must be a number within 0.1..100",
            )
        with self._lock:
            self.speed = float(v)
        return Outcome(ok=True, result={"speed": self.speed})

    def _step(self, p: Principal, c: Command) -> Outcome:
        v = c.args.get("seconds")
        if (
            not isinstance(v, (int, float))
            or isinstance(v, bool)
            or not 0 < v <= 3600
            or not math.isfinite(v)
        ):
            return Outcome(
                ok=False,
                code=ErrorCode.INVALID_ARGS.value,
                reason="args.seconds must be a number within (0, 3600]",
            )
        self.step(float(v))
        return Outcome(ok=True, result={"t": self.sim_t})


def _station_state(states: np.ndarray) -> MachineState:
    """One station's state from its servers' (``physics.process.model``: 0 idle, 1 busy,
    2 blocked, 3 down): busy if any server works, else blocked, else down, else starved."""
    if np.any(states == BUSY):
        return MachineState.BUSY
    if np.any(states == BLOCKED):
        return MachineState.BLOCKED
    if states.size and np.any(states == DOWN):
        return MachineState.DOWN
    return MachineState.STARVED
