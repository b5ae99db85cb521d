"""A training scenario played on a simulated line: :class:`ScenarioLine`.

The line is a :class:`~twin.simline.SimulatedLine` (the process core in scaled real time, written
into the scene store each tick) that also

* plays the scenario's timeline: each event starts and ends at its exact simulated time (the core
  is advanced to that time, the change is made, then the core goes on: advancing in pieces replays
  exactly the events of one run);
* takes trainee actions (:meth:`ScenarioLine.act`; as commands, :meth:`register_commands`),
  refusing those the scenario does not allow;
* records, at every ``sample`` seconds and at each change, what scoring needs (deliveries, WIP,
  station states, buffer levels), every event, action, alarm and safety violation;
* keeps checkpoints (the engine state, parameters and the whole scenario progress) and rewinds to
  them.

Engine time ``t`` and scenario time ``t - warmup`` differ by the warm-up; the record and the
report use scenario time.
"""

from __future__ import annotations

import copy
import itertools
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jax.numpy as jnp
import numpy as np

from physics.process.model import BUSY, DOWN
from scenes.graph import SceneGraph, station_id
from streaming.auth import Principal
from streaming.hub import CommandRegistry, Outcome
from streaming.protocol import Command, ErrorCode, Role
from streaming.store import SceneStore
from twin.simline import SimulatedLine, _Alarm

from . import edits
from .spec import ACTION_COMMANDS, ActionKind, Event, EventKind, Scenario

#: Who may act in a scenario (trainees sign in as operators) and who controls time.
ACTION_ROLES = frozenset({Role.OPERATOR, Role.TRAINER})
CONTROL_ROLES = frozenset({Role.TRAINER})
#: Checkpoints kept per session (the oldest goes first).
MAX_CHECKPOINTS = 32


@dataclass(slots=True)
class Progress:
    """Everything of a run besides the engine: what a checkpoint saves along with the state."""

    started: set[int] = field(default_factory=set)  # event indices
    ends: dict[int, float] = field(default_factory=dict)  # active event -> engine end time
    ended: set[int] = field(default_factory=set)
    stopped: set[int] = field(default_factory=set)  # stations stopped by a trainee
    forced: set[int] = field(default_factory=set)  # stations this scenario holds down
    rush_base: dict[int, int] = field(default_factory=dict)  # rush order -> delivered at start
    rush_done: dict[int, int] = field(default_factory=dict)  # rush order -> delivered by due
    violated: set[int] = field(default_factory=set)  # person_in_cell events with a violation
    # the record (scenario time)
    samples: list[dict[str, Any]] = field(default_factory=list)
    log: list[dict[str, Any]] = field(default_factory=list)  # event starts and ends
    actions: list[dict[str, Any]] = field(default_factory=list)
    violations: list[dict[str, Any]] = field(default_factory=list)
    ack_t: dict[str, float] = field(default_factory=dict)  # alarm id -> scenario time acked
    finished: bool = False


@dataclass(slots=True)
class Checkpoint:
    id: str
    t: float  # scenario time
    state: Any
    params: Any
    sim_t: float
    progress: Progress
    alarms: dict[str, _Alarm]
    open_alarm: dict[int, str]
    next_alarm: int
    transit: np.ndarray


class ScenarioLine(SimulatedLine):
    """A scenario session (see the module docstring)."""

    def __init__(
        self,
        scenario: Scenario,
        graph: SceneGraph,
        *,
        speed: float = 1.0,
        on_alarm: Callable[[Mapping[str, Any]], object] | None = None,
        on_end: Callable[[ScenarioLine], object] | None = None,
    ) -> None:
        from physics.process import api, engine

        line = scenario.line
        super().__init__(
            edits.breakable(line),
            graph,
            seed=scenario.seed,
            speed=speed,
            on_alarm=on_alarm,
            random_failures=False,
        )
        # re-entrant: the end callback runs inside the tick and may ask for the report
        self._lock = threading.RLock()  # type: ignore[assignment]
        self.scenario = scenario
        self.on_end = on_end
        self.t0 = scenario.start.warmup_s
        self.end_t = self.t0 + scenario.duration_s
        mtbf = [
            st.failures.mtbf
            if st.failures is not None and scenario.start.random_failures
            else edits.NEVER_S
            for st in line.stations
        ]
        p = self.params.replace(mtbf=jnp.asarray([mtbf], dtype=jnp.float64))
        # statistics (delivered, WIP integral, time fractions) count from scenario time 0
        p = p.replace(warmup=jnp.full_like(p.warmup, self.t0))
        self.params = p
        self.nominal = p
        keys = api.replication_keys(scenario.seed, 1, 1)
        self.state = engine.run(self.model, p.replace(horizon=jnp.zeros((1,))), keys)
        self._stations = {s: i for i, s in enumerate(self.model.station_ids)}
        self._buffers = {b: k for k, b in enumerate(self.model.buffer_ids)}
        self._sources = [i for i in range(self.model.n_stations) if not self.model.ins[i]]
        self._servers = np.asarray(p.servers)[0].astype(np.float64)
        self.progress = Progress()
        self.checkpoints: dict[str, Checkpoint] = {}
        self._checkpoint_ids = itertools.count(1)
        self._store: SceneStore | None = None
        if self.t0 > 0:
            SimulatedLine._advance_to(self, self.t0)
        for bid, n in scenario.start.buffers:
            k = self._buffers[bid]
            self.state = edits.fill_buffer(self.model, self.state, k, n, float(self._transit[k]))
        self._sample()

    # -- time ------------------------------------------------------------------------------------

    @property
    def t(self) -> float:
        """Scenario time (seconds since the end of the warm-up)."""
        return self.sim_t - self.t0

    @property
    def finished(self) -> bool:
        return self.progress.finished

    def populate(self, store: SceneStore) -> None:
        self._store = store
        super().populate(store)

    def run_to(self, t: float) -> None:
        """Advance to scenario time ``t`` (at most the end), regardless of pause."""
        with self._lock:
            self._advance_to(self.t0 + t)

    def run_to_end(self) -> None:
        self.run_to(self.scenario.duration_s)

    def _advance_to(self, t: float) -> None:
        t = min(t, self.end_t)
        while True:
            due = self._next_due()
            if due > t:
                break
            SimulatedLine._advance_to(self, due)
            self._apply_due(self.sim_t)
        SimulatedLine._advance_to(self, t)
        if self.sim_t >= self.end_t and not self.progress.finished:
            self.progress.finished = True
            self.paused = True
            self.progress.log.append({"t": self.t, "what": "end", "event": None})
            if self.on_end is not None:
                self.on_end(self)

    def _next_due(self) -> float:
        """The next engine time at which something must happen (inf: nothing before the end)."""
        times = [self.t0 + len(self.progress.samples) * self.scenario.sample_s]
        for k, ev in enumerate(self.scenario.events):
            if k not in self.progress.started:
                times.append(self.t0 + ev.at_s)
                break  # events are sorted by time
        times.extend(self.progress.ends.values())
        due = min(times)
        return due if due <= self.end_t else math.inf

    def _apply_due(self, now: float) -> None:
        """Apply everything due at engine time ``now`` (ends, then starts, then the sample)."""
        pr = self.progress
        for k in sorted(k for k, end in pr.ends.items() if end <= now):
            self._end_event(k)
        for k, ev in enumerate(self.scenario.events):
            if k not in pr.started and self.t0 + ev.at_s <= now:
                self._start_event(k, ev)
        self._check_safety()
        if self._store is not None:
            self.write(self._store)  # alarms are raised at the exact time
        if self.t0 + len(pr.samples) * self.scenario.sample_s <= now:
            self._sample()

    # -- events ----------------------------------------------------------------------------------

    def _start_event(self, k: int, ev: Event) -> None:
        pr = self.progress
        pr.started.add(k)
        if ev.for_s is not None or ev.within_s is not None:
            pr.ends[k] = self.sim_t + (ev.for_s if ev.for_s is not None else ev.within_s or 0.0)
        pr.log.append({"t": self.t, "what": "start", "event": k, "text": ev.describe()})
        store = self._store
        if ev.kind is EventKind.BREAKDOWN:
            self._sync_station(self._stations[str(ev.station)])  # the alarm comes with DOWN
        elif ev.kind is EventKind.SHORTAGE:
            for i in self._shortage_stations(ev):
                self._set_params(i, servers=0)
            if store is not None:
                self.raise_alarm(store, self._shortage_entity(ev), "material shortage", "major")
        elif ev.kind is EventKind.CONVEYOR_SLOW:
            b = self._buffers[str(ev.buffer)]
            transit = float(np.asarray(self.nominal.transit)[0, b]) * float(ev.factor or 1.0)
            self.params = self.params.replace(transit=self.params.transit.at[0, b].set(transit))
            self._transit = np.asarray(self.params.transit)[0]
            if store is not None:
                self.raise_alarm(store, f"buffer/{ev.buffer}", f"{ev.buffer} running slow", "minor")
        elif ev.kind is EventKind.SENSOR_FAULT:
            if store is not None:
                self.raise_alarm(
                    store, station_id(str(ev.station)), f"{ev.station} sensor {ev.mode}", "minor"
                )
        elif ev.kind is EventKind.PERSON_IN_CELL:
            sid = str(ev.station)
            if self.robots is not None and sid in self.robots.stations:
                self.robots.keepout(sid, True)
            if store is not None:
                self.raise_alarm(store, station_id(sid), f"person in the cell of {sid}", "critical")
        elif ev.kind is EventKind.RUSH_ORDER:
            pr.rush_base[k] = int(np.asarray(self.state.delivered)[0])
            if store is not None:
                self.raise_alarm(store, "line", ev.describe(), "minor")

    def _end_event(self, k: int) -> None:
        pr = self.progress
        ev = self.scenario.events[k]
        del pr.ends[k]
        pr.ended.add(k)
        pr.log.append({"t": self.t, "what": "end", "event": k, "text": ev.describe()})
        if ev.kind is EventKind.BREAKDOWN:
            self._sync_station(self._stations[str(ev.station)])
        elif ev.kind is EventKind.SHORTAGE:
            for i in self._shortage_stations(ev):
                if not any(
                    self.scenario.events[j].kind is EventKind.SHORTAGE
                    and i in self._shortage_stations(self.scenario.events[j])
                    for j in pr.ends
                ):
                    self._set_params(i, servers=None)
        elif ev.kind is EventKind.CONVEYOR_SLOW:
            b = self._buffers[str(ev.buffer)]
            self.params = self.params.replace(
                transit=self.params.transit.at[0, b].set(self.nominal.transit[0, b])
            )
            self._transit = np.asarray(self.params.transit)[0]
        elif ev.kind is EventKind.PERSON_IN_CELL:
            sid = str(ev.station)
            if self.robots is not None and sid in self.robots.stations:
                self.robots.keepout(sid, False)
        elif ev.kind is EventKind.RUSH_ORDER:
            pr.rush_done[k] = int(np.asarray(self.state.delivered)[0]) - pr.rush_base[k]

    def _shortage_stations(self, ev: Event) -> list[int]:
        return [self._stations[ev.station]] if ev.station else self._sources

    def _shortage_entity(self, ev: Event) -> str:
        return station_id(ev.station or self.model.station_ids[self._sources[0]])

    def _breakdown_end(self, i: int) -> float:
        """The latest end of the breakdowns now holding station ``i`` down (-inf: none)."""
        ends = [
            end
            for k, end in self.progress.ends.items()
            if self.scenario.events[k].kind is EventKind.BREAKDOWN
            and self._stations[str(self.scenario.events[k].station)] == i
        ]
        return max(ends, default=-math.inf)

    def _sync_station(self, i: int) -> None:
        """Hold station ``i`` down while a breakdown or a trainee's stop says so."""
        pr = self.progress
        until = math.inf if i in pr.stopped else self._breakdown_end(i)
        if until > self.sim_t:
            if i in pr.forced:  # held down already: only the repair time changes
                self.state = edits.set_repair(self.model, self.state, i, until)
            else:
                self.state = edits.force_down(self.model, self.state, i, until)
                pr.forced.add(i)
        elif i in pr.forced:
            self.state = edits.set_repair(self.model, self.state, i, self.sim_t)
            pr.forced.discard(i)

    def _check_safety(self) -> None:
        """A robot station working while a person is in its cell, later than ``react`` seconds
        after the person entered, is a safety violation (once per intrusion)."""
        pr = self.progress
        st = np.asarray(self.state.st)[0]
        for k in list(pr.ends):
            ev = self.scenario.events[k]
            if ev.kind is not EventKind.PERSON_IN_CELL or k in pr.violated:
                continue
            if self.sim_t - (self.t0 + ev.at_s) < self.scenario.scoring.safety_react_s:
                continue
            i = self._stations[str(ev.station)]
            if np.any(st[list(self.model.slots(i))] == BUSY):
                self._violation(k, f"{ev.station} still working with a person in its cell")

    def _violation(self, k: int, why: str) -> None:
        self.progress.violated.add(k)
        self.progress.violations.append({"t": self.t, "event": k, "text": why})

    def _set_params(
        self, i: int, *, servers: int | None = None, scale: float | None = None
    ) -> None:
        p, nom = self.params, self.nominal
        if scale is not None:
            p = p.replace(
                pt_mean=p.pt_mean.at[0, i].set(nom.pt_mean[0, i] / scale),
                pt_low=p.pt_low.at[0, i].set(nom.pt_low[0, i] / scale),
                pt_high=p.pt_high.at[0, i].set(nom.pt_high[0, i] / scale),
                pt_values=p.pt_values.at[0, i].set(nom.pt_values[0, i] / scale),
            )
        else:
            n = nom.servers[0, i] if servers is None else servers
            p = p.replace(servers=p.servers.at[0, i].set(n))
        self.params = p

    # -- the record ------------------------------------------------------------------------------

    def _sample(self) -> None:
        s = self.state
        st = np.asarray(s.st)[0]
        servers = np.asarray(self.params.servers)[0]
        states = []
        for i in range(self.model.n_stations):
            sl = st[list(self.model.slots(i))][: max(int(servers[i]), 0)]
            states.append(_code(sl))
        self.progress.samples.append(
            {
                "t": round(self.t, 9),
                "delivered": int(np.asarray(s.delivered)[0]),
                "wip": int(np.asarray(s.wip)[0]),
                "states": states,
                "levels": [int(x) for x in np.asarray(s.count)[0]],
            }
        )

    # -- what viewers see ------------------------------------------------------------------------

    def station_overrides(self, i: int, predicted: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k in self.progress.ends:
            ev = self.scenario.events[k]
            if ev.kind is EventKind.SENSOR_FAULT and self._stations[str(ev.station)] == i:
                out["state"] = "stale"
                out["sensor"] = ev.mode
        if i in self.progress.stopped:
            out["stopped"] = True
        return out

    def line_overrides(self) -> dict[str, Any]:
        pr = self.progress
        faults = [
            (k, ev)
            for k, ev in enumerate(self.scenario.events)
            if ev.kind is EventKind.SENSOR_FAULT and k in pr.started
        ]
        garbage = 0
        for _, ev in faults:
            if ev.mode == "garbage":  # one bad value a second, each rejected
                garbage += int(min(self.t - ev.at_s, ev.for_s or 0.0))
        delivered = int(np.asarray(self.state.delivered)[0])
        rush = [
            {
                "parts": ev.parts,
                "due_t": ev.at_s + (ev.within_s or 0.0),
                "delivered": delivered - pr.rush_base[k],
            }
            for k, ev in enumerate(self.scenario.events)
            if ev.kind is EventKind.RUSH_ORDER and k in pr.rush_base
        ]
        return {
            "stale_tags": sum(1 for k, _ in faults if k in pr.ends),
            "rejected": garbage,
            "scenario": {
                "name": self.scenario.name,
                "t": round(self.t, 3),
                "duration": self.scenario.duration_s,
                "finished": pr.finished,
                "rush_orders": rush,
                "checkpoints": [{"id": c.id, "t": c.t} for c in self.checkpoints.values()],
            },
        }

    def _fractions(self) -> np.ndarray:
        # like the base class, but over the scenario's window and the nominal server counts
        # (a shortage sets a station's active servers to 0)
        m = self.model
        acc = np.asarray(self.state.acc)[0]
        per = np.zeros((m.n_stations, 4))
        for slot, station in enumerate(m.slot_station):
            per[station] += acc[slot]
        span = max(self.sim_t - self.t0, 1e-9)
        out: np.ndarray = per / np.maximum(self._servers * span, 1e-9)[:, None]
        return out

    # -- trainee actions -------------------------------------------------------------------------

    def act(
        self, who: str, action: str, target: str, args: Mapping[str, Any] | None = None
    ) -> Outcome:
        """Apply a trainee action now and record it (accepted or refused)."""
        args = dict(args or {})
        with self._lock:
            out = self._act(who, action, target, args)
            self.progress.actions.append(
                {
                    "t": round(self.t, 9),
                    "who": who,
                    "action": action,
                    "target": target,
                    "args": args,
                    "ok": out.ok,
                    "reason": out.reason,
                }
            )
            if out.ok and self._store is not None:
                self.write(self._store)
            return out

    def _act(self, who: str, action: str, target: str, args: dict[str, Any]) -> Outcome:
        kind = ACTION_COMMANDS.get(action)
        if kind is None:
            return _refuse(f"unknown action '{action}'")
        if kind not in self.scenario.allowed.kinds:
            return _refuse(f"'{action}' is not allowed in this scenario")
        if self.progress.finished:
            return _refuse("the scenario has ended")
        if kind is ActionKind.ACKNOWLEDGE:
            return self._ack_target(who, target)
        sid = target.split("/", 1)[1] if target.startswith("station/") else target
        i = self._stations.get(sid)
        if i is None:
            return _refuse(f"no station '{target}'")
        if action == "station.maintenance":
            end = self._breakdown_end(i)
            st = np.asarray(self.state.st)[0, list(self.model.slots(i))]
            if end <= self.sim_t and not np.any(st == DOWN):
                return _refuse(f"{sid} is not broken down")
            fixed = self.sim_t + self.scenario.allowed.repair_s
            for k, e in list(self.progress.ends.items()):
                ev = self.scenario.events[k]
                if ev.kind is EventKind.BREAKDOWN and ev.station == sid:
                    self.progress.ends[k] = min(e, fixed)
            if i in self.progress.forced:
                self._sync_station(i)
            else:  # a random failure: repaired by the crew
                t_rep = np.asarray(self.state.t_rep)[0, list(self.model.slots(i))]
                if np.all(np.isfinite(t_rep)):
                    at = min(float(np.min(t_rep)), fixed)
                    self.state = edits.set_repair(self.model, self.state, i, at)
            return Outcome(ok=True, result={"repaired_by": fixed - self.t0})
        if action == "station.speed":
            v = _number(args.get("scale"))
            lo, hi = self.scenario.allowed.speed_min, self.scenario.allowed.speed_max
            if v is None or not lo <= v <= hi:
                return _refuse(f"args.scale must be a number within {lo:g}..{hi:g}")
            self._set_params(i, scale=v)
            return Outcome(ok=True, result={"scale": v})
        if action == "station.routing":
            outs = self.model.outs[i]
            bid = args.get("buffer")
            w = _number(args.get("weight"))
            if len(outs) < 2:
                return _refuse(f"{sid} has one output: nothing to route")
            names = [self.model.buffer_ids[e] for e in outs]
            if bid not in names:
                return _refuse(f"args.buffer must be one of {', '.join(names)}")
            if w is None or not 0 <= w <= 1e6:
                return _refuse("args.weight must be a number >= 0")
            j = names.index(str(bid))
            self.params = self.params.replace(weights=self.params.weights.at[0, i, j].set(w))
            return Outcome(ok=True, result={"buffer": bid, "weight": w})
        if action == "station.stop":
            self.progress.stopped.add(i)
            self._sync_station(i)
            return Outcome(ok=True, result={"stopped": sid})
        # station.start
        for k in self.progress.ends:
            ev = self.scenario.events[k]
            if (
                ev.kind is EventKind.PERSON_IN_CELL
                and ev.station == sid
                and k not in self.progress.violated
            ):
                self._violation(k, f"{sid} started with a person in its cell")
        self.progress.stopped.discard(i)
        self._sync_station(i)
        return Outcome(ok=True, result={"started": sid})

    def _ack_target(self, who: str, target: str) -> Outcome:
        """Acknowledge alarm ``target``; or an entity's oldest open alarm; or ``all`` open ones."""
        open_ = [a for a in self._alarms.values() if a.acked_by is None]
        if target == "all":
            chosen = open_
        elif target in self._alarms:
            chosen = [self._alarms[target]]
        else:
            entity = target if "/" in target else station_id(target)
            chosen = [a for a in open_ if a.station == entity][:1]
        if not chosen:
            return _refuse(f"no open alarm '{target}'")
        done = []
        for a in chosen:
            if a.acked_by is not None:
                continue
            a.acked_by = who
            a.state = "cleared" if a.cleared else "acknowledged"
            self.progress.ack_t[a.id] = round(self.t, 9)
            if self._store is not None:
                self._store.update(a.id, self._alarm_state(a))
            self._emit(a)
            done.append(a.id)
        if not done:
            return Outcome(ok=True, result={"already": True})
        return Outcome(ok=True, result={"acknowledged": done})

    def ack(self, principal: Principal, command: Command, store: SceneStore) -> Outcome:
        return self.act(principal.name, "alarm.ack", command.target)

    # -- checkpoints -----------------------------------------------------------------------------

    def checkpoint(self) -> Checkpoint:
        """Save the run as it is now (the engine state is immutable: it is kept, not copied)."""
        with self._lock:
            n = next(self._alarm_ids)
            self._alarm_ids = itertools.count(n)
            c = Checkpoint(
                id=f"cp{next(self._checkpoint_ids)}",
                t=round(self.t, 9),
                state=self.state,
                params=self.params,
                sim_t=self.sim_t,
                progress=copy.deepcopy(self.progress),
                alarms=copy.deepcopy(self._alarms),
                open_alarm=dict(self._open_alarm),
                next_alarm=n,
                transit=self._transit.copy(),
            )
            self.checkpoints[c.id] = c
            while len(self.checkpoints) > MAX_CHECKPOINTS:
                del self.checkpoints[next(iter(self.checkpoints))]
            return c

    def rewind(self, checkpoint_id: str) -> Checkpoint:
        """Go back to a checkpoint: the engine, the parameters and the scenario progress (the
        record after it is dropped). Time stays paused as it is. Raises ``KeyError``."""
        with self._lock:
            c = self.checkpoints[checkpoint_id]
            self.state, self.params, self.sim_t = c.state, c.params, c.sim_t
            self.progress = copy.deepcopy(c.progress)
            alarms = copy.deepcopy(c.alarms)
            if self._store is not None:
                for aid in set(self._alarms) - set(alarms):
                    self._store.remove(aid)
            self._alarms = alarms
            self._open_alarm = dict(c.open_alarm)
            self._alarm_ids = itertools.count(c.next_alarm)
            self._transit = c.transit.copy()
            self._deliveries.clear()
            if self._store is not None:
                for a in self._alarms.values():
                    if a.id in self._store:
                        self._store.update(a.id, self._alarm_state(a))
                    else:
                        self._store.add(
                            a.id,
                            "alarm",
                            props={"entity": a.station, "severity": a.severity},
                            state=self._alarm_state(a),
                        )
                self.write(self._store)
            return c

    # -- commands --------------------------------------------------------------------------------

    def register_commands(self, registry: CommandRegistry, store: SceneStore) -> None:
        """The base ``alarm.ack`` and ``sim.*`` commands, the trainee actions (operator and
        trainer) and the trainer's checkpoints and report."""
        super().register_commands(registry, store)
        helps = {
            "station.maintenance": "dispatch maintenance to a broken-down station (target)",
            "station.routing": "set a routing weight: args {buffer, weight}",
            "station.speed": "scale a station's speed: args {scale}",
            "station.stop": "stop a station (target)",
            "station.start": "start a stopped station (target)",
        }
        for action, text in helps.items():
            registry.register(
                action,
                set(ACTION_ROLES),
                lambda p, c: self.act(p.name, c.action, c.target, c.args),
                text,
            )
        registry.register(
            "sim.checkpoint", set(CONTROL_ROLES), self._cmd_checkpoint, "save a checkpoint"
        )
        registry.register(
            "sim.rewind",
            set(CONTROL_ROLES),
            self._cmd_rewind,
            "rewind to a checkpoint: args {checkpoint: id}",
        )
        registry.register(
            "scenario.report",
            set(CONTROL_ROLES | ACTION_ROLES),
            lambda p, c: Outcome(ok=True, result=self.report()),
            "the score report so far",
        )

    def _cmd_checkpoint(self, p: Principal, c: Command) -> Outcome:
        cp = self.checkpoint()
        return Outcome(ok=True, result={"checkpoint": cp.id, "t": cp.t})

    def _cmd_rewind(self, p: Principal, c: Command) -> Outcome:
        cid = c.args.get("checkpoint", c.target)
        try:
            cp = self.rewind(str(cid))
        except KeyError:
            return _refuse(f"no checkpoint '{cid}'")
        return Outcome(ok=True, result={"checkpoint": cp.id, "t": cp.t})

    def report(self) -> dict[str, Any]:
        """The score report of the run so far (:func:`twin.scenario.report.build_report`)."""
        from .report import build_report

        with self._lock:
            return build_report(self)

    def alarms(self) -> list[dict[str, Any]]:
        """Every alarm of the run: id, entity, text, raised and acknowledged (scenario time)."""
        return [
            {
                "id": a.id,
                "entity": a.station,
                "text": self._alarm_state(a)["text"],
                "severity": a.severity,
                "raised_t": round(a.raised_t - self.t0, 9),
                "acked_by": a.acked_by,
                "acked_t": self.progress.ack_t.get(a.id),
            }
            for a in self._alarms.values()
            if a.raised_t >= self.t0
        ]


def _code(states: np.ndarray) -> str:
    from twin.simline import _station_state

    return _station_state(states).value


def _number(v: Any) -> float | None:
    """``v`` as a finite float, or None if it is not a finite number."""
    if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
        return float(v)
    return None


def _refuse(reason: str) -> Outcome:
    return Outcome(ok=False, code=ErrorCode.INVALID_ARGS.value, reason=reason)


__all__ = ["Checkpoint", "Progress", "ScenarioLine"]
