"""Scenario files and scripted-actions files: parse and validate them (``docs/scenarios.md``).

Every problem is collected and reported as ``file:line field.path: message`` inside one
:class:`ScenarioFileError`, the way line files are (:mod:`scenes.lineparse`). Times are seconds of
*scenario time*: 0 is the end of the warm-up.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from scenes import yamlpos
from scenes.errors import ConfigError, LineFileError, Problem
from scenes.fields import FieldReader, read_text, type_name
from scenes.spec import LineSpec
from scenes.yamlpos import PathKey


class ScenarioFileError(ConfigError):
    """A scenario or actions file has problems; ``problems`` lists each, in file order."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.file, p.line, p.path))
        super().__init__("\n".join(str(p) for p in self.problems))


class EventKind(StrEnum):
    """What a timeline event does (``docs/scenarios.md``)."""

    BREAKDOWN = "breakdown"  # a station goes down at `at` for `for` seconds
    SHORTAGE = "shortage"  # no material for the first stations (or `station`) for `for`
    RUSH_ORDER = "rush_order"  # `parts` more parts are due within `within` seconds
    CONVEYOR_SLOW = "conveyor_slow"  # a conveyor's transit time times `factor` for `for`
    SENSOR_FAULT = "sensor_fault"  # a station's sensor is `stale` or reports `garbage`
    PERSON_IN_CELL = "person_in_cell"  # a person enters a station's (robot) cell for `for`


class ActionKind(StrEnum):
    """What a trainee may do; each is a command (action name in parentheses)."""

    ACKNOWLEDGE = "acknowledge"  # alarm.ack
    MAINTENANCE = "maintenance"  # station.maintenance: shortens a breakdown
    ROUTING = "routing"  # station.routing: a routing weight
    SPEED = "speed"  # station.speed: processing-time scale
    STOP_START = "stop_start"  # station.stop / station.start


#: The command action of each scripted action name (actions files use the command names).
ACTION_COMMANDS: dict[str, ActionKind] = {
    "alarm.ack": ActionKind.ACKNOWLEDGE,
    "station.maintenance": ActionKind.MAINTENANCE,
    "station.routing": ActionKind.ROUTING,
    "station.speed": ActionKind.SPEED,
    "station.stop": ActionKind.STOP_START,
    "station.start": ActionKind.STOP_START,
}

#: Events that disturb the flow: recovery is scored after each.
DISRUPTIONS = frozenset(
    {
        EventKind.BREAKDOWN,
        EventKind.SHORTAGE,
        EventKind.CONVEYOR_SLOW,
        EventKind.PERSON_IN_CELL,
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """One timeline event. ``at_s`` and ``for_s`` in scenario seconds; unused fields are None."""

    kind: EventKind
    at_s: float
    for_s: float | None = None
    station: str | None = None
    buffer: str | None = None
    factor: float | None = None
    parts: int | None = None
    within_s: float | None = None
    mode: str | None = None  # sensor_fault: "stale" or "garbage"
    line: int = 0

    def describe(self) -> str:
        what = self.station or self.buffer or ""
        dur = f" for {self.for_s:g} s" if self.for_s is not None else ""
        if self.kind is EventKind.RUSH_ORDER:
            return f"rush order: {self.parts} parts within {self.within_s:g} s"
        if self.kind is EventKind.CONVEYOR_SLOW:
            return f"{what} slows x{self.factor:g}{dur}"
        if self.kind is EventKind.SENSOR_FAULT:
            return f"{what} sensor {self.mode}{dur}"
        return f"{self.kind.value} {what}{dur}".replace("  ", " ")


@dataclass(frozen=True, slots=True, kw_only=True)
class Start:
    """The start state: ``warmup_s`` simulated before scenario time 0; parts put on buffers at
    time 0 (``buffers``: buffer id -> parts); whether the line's own random failures happen."""

    warmup_s: float = 0.0
    random_failures: bool = False
    buffers: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Allowed:
    """The actions trainees may take and their limits."""

    kinds: frozenset[ActionKind] = frozenset(ActionKind)
    repair_s: float = 120.0  # maintenance ends a breakdown at most this long after dispatch
    speed_min: float = 0.5
    speed_max: float = 1.5


@dataclass(frozen=True, slots=True, kw_only=True)
class Scoring:
    """How a run is scored; a criterion with 0 points is left out (``docs/scenarios.md``)."""

    recovery_points: float = 40.0
    recovery_percent: float = 90.0
    recovery_within_s: float = 900.0
    recovery_window_s: float = 300.0
    baseline_per_hour: float | None = None  # None: measured before each event
    ack_points: float = 20.0
    ack_within_s: float = 60.0
    safety_points: float = 30.0
    safety_react_s: float = 15.0
    rush_points: float = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """A parsed scenario file."""

    name: str
    description: str
    file: str
    line_file: str
    line: LineSpec
    seed: int = 1
    duration_s: float
    sample_s: float = 10.0
    start: Start = field(default_factory=Start)
    events: tuple[Event, ...] = ()
    allowed: Allowed = field(default_factory=Allowed)
    scoring: Scoring = field(default_factory=Scoring)


@dataclass(frozen=True, slots=True, kw_only=True)
class ScriptedAction:
    """One trainee action of an actions file: a command at scenario time ``at_s``."""

    at_s: float
    action: str
    target: str
    args: Mapping[str, Any] = field(default_factory=dict)
    who: str = "script"
    line: int = 0


TOP_KEYS = (
    "scenario",
    "description",
    "line",
    "seed",
    "duration",
    "sample",
    "start",
    "events",
    "actions",
    "scoring",
)
START_KEYS = ("warmup", "random_failures", "buffers")
EVENT_KEYS: dict[EventKind, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # kind: (required, optional), besides `at` and `type`
    EventKind.BREAKDOWN: (("station", "for"), ()),
    EventKind.SHORTAGE: (("for",), ("station",)),
    EventKind.RUSH_ORDER: (("parts", "within"), ()),
    EventKind.CONVEYOR_SLOW: (("buffer", "factor"), ("for",)),
    EventKind.SENSOR_FAULT: (("station", "for"), ("mode",)),
    EventKind.PERSON_IN_CELL: (("station", "for"), ()),
}
ACTION_KEYS = ("acknowledge", "maintenance", "routing", "speed", "stop_start")
SCORING_KEYS = ("recovery", "acknowledge", "safety", "rush_order")
RECOVERY_KEYS = ("points", "percent", "within", "window", "baseline_per_hour")
ACK_KEYS = ("points", "within")
SAFETY_KEYS = ("points", "react")
RUSH_KEYS = ("points",)
SCRIPT_KEYS = ("at", "action", "target", "args", "who")


def load_scenario(path: str | Path, *, check_meshes: bool = True) -> Scenario:
    """Read, parse and validate a scenario file and its line. Raises :class:`ConfigError`
    (:class:`ScenarioFileError`, or the line file's :class:`LineFileError`)."""
    p = Path(path)
    text = read_text(p, ScenarioFileError)
    return parse_scenario(text, filename=str(p), base_dir=p.parent, check_meshes=check_meshes)


def parse_scenario(
    text: str,
    *,
    filename: str = "<string>",
    base_dir: str | Path | None = None,
    check_meshes: bool = True,
) -> Scenario:
    """Parse scenario text; its ``line`` is a path relative to ``base_dir`` (else the cwd)."""
    r = _Reader(_load(text, filename), filename)
    out = r.scenario(Path(base_dir) if base_dir is not None else Path.cwd(), check_meshes)
    if r.problems or out is None:
        raise ScenarioFileError(
            r.problems or [Problem(file=filename, line=0, path="", message="?")]
        )
    return out


def load_actions(path: str | Path, scenario: Scenario) -> list[ScriptedAction]:
    """Read a scripted-actions file (a YAML list of ``{at, action, target, args}``)."""
    p = Path(path)
    return parse_actions(read_text(p, ScenarioFileError), scenario, filename=str(p))


def parse_actions(
    text: str, scenario: Scenario, *, filename: str = "<string>"
) -> list[ScriptedAction]:
    r = _Reader(_load(text, filename), filename)
    out = r.actions(scenario)
    if r.problems:
        raise ScenarioFileError(r.problems)
    return out


def _load(text: str, filename: str) -> yamlpos.Located:
    try:
        return yamlpos.load(text)
    except yamlpos.YamlSyntaxError as exc:
        raise ScenarioFileError(
            [Problem(file=filename, line=exc.line, path="", message=exc.message)]
        ) from exc


class _Reader(FieldReader):
    """Walks a document and collects problems; a reader returning None has reported one."""

    def boolean(self, value: Any, path: PathKey) -> bool | None:
        if not isinstance(value, bool):
            self.error(path, f"must be true or false, got {type_name(value)}")
            return None
        return value

    def ref(self, value: Any, path: PathKey, ids: Iterable[str], what: str) -> str | None:
        s = self.string(value, path)
        ids = list(ids)
        if s is not None and s not in ids:
            close = difflib.get_close_matches(s, ids, n=1, cutoff=0.6)
            hint = (
                f"; did you mean '{close[0]}'?" if close else f" (the line has: {', '.join(ids)})"
            )
            self.error(path, f"no {what} '{s}' in the line{hint}")
            return None
        return s

    # -- the scenario ----------------------------------------------------------------------------
    def scenario(self, base: Path, check_meshes: bool) -> Scenario | None:
        top = self.mapping(self.doc.value, (), TOP_KEYS)
        if top is None:
            return None
        for key in ("scenario", "line", "duration"):
            if key not in top:
                self.error((), f"missing required field '{key}'")
        name = self.string(top["scenario"], ("scenario",)) if "scenario" in top else None
        description = top.get("description", "")
        if not isinstance(description, str):
            self.error(("description",), "must be a string")
            description = ""
        line, line_file = self._line(top, base, check_meshes)
        seed = self.integer(top.get("seed", 1), ("seed",), ge=0)
        duration = self.number(top["duration"], ("duration",), gt=0) if "duration" in top else None
        sample = self.number(top.get("sample", 10.0), ("sample",), gt=0)
        start = self._start(top.get("start", {}), line)
        events = self._events(top.get("events", []), line, duration)
        allowed = self._allowed(top.get("actions"))
        scoring = self._scoring(top.get("scoring"), sample)
        if (
            name is None
            or line is None
            or seed is None
            or duration is None
            or sample is None
            or start is None
            or events is None
            or allowed is None
            or scoring is None
        ):
            return None
        return Scenario(
            name=name,
            description=description.strip(),
            file=self.file,
            line_file=line_file,
            line=line,
            seed=seed,
            duration_s=duration,
            sample_s=sample,
            start=start,
            events=events,
            allowed=allowed,
            scoring=scoring,
        )

    def _line(
        self, top: Mapping[Any, Any], base: Path, check_meshes: bool
    ) -> tuple[LineSpec | None, str]:
        if "line" not in top:
            return None, ""
        rel = self.string(top["line"], ("line",))
        if rel is None:
            return None, ""
        path = base / rel
        if not path.is_file():
            self.error(("line",), f"no line file '{rel}' (looked for {path})")
            return None, str(path)
        from scenes.lineparse import load_line

        try:
            return load_line(path, check_meshes=check_meshes), str(path)
        except LineFileError as exc:
            self.error(("line",), f"the line file '{rel}' has problems:\n{exc}")
            return None, str(path)

    def _start(self, value: Any, line: LineSpec | None) -> Start | None:
        m = self.mapping(value, ("start",), START_KEYS)
        if m is None:
            return None
        warm = self.number(m.get("warmup", 0.0), ("start", "warmup"), ge=0)
        rf = self.boolean(m.get("random_failures", False), ("start", "random_failures"))
        bufs: list[tuple[str, int]] = []
        raw = m.get("buffers", {})
        bm = self.mapping(raw, ("start", "buffers"), [b.id for b in line.buffers] if line else raw)
        ok = bm is not None
        for bid, n in (bm or {}).items():
            path: PathKey = ("start", "buffers", str(bid))
            count = self.integer(n, path, ge=0)
            if count is None or line is None:
                ok = False
                continue
            b = next((b for b in line.buffers if b.id == bid), None)
            if b is None:
                ok = False  # reported as an unknown field
            elif count > b.capacity:
                self.error(path, f"buffer '{bid}' holds at most {b.capacity} parts, got {count}")
                ok = False
            else:
                bufs.append((str(bid), count))
        if warm is None or rf is None or not ok:
            return None
        return Start(warmup_s=warm, random_failures=rf, buffers=tuple(bufs))

    def _events(
        self, value: Any, line: LineSpec | None, duration: float | None
    ) -> tuple[Event, ...] | None:
        if not isinstance(value, list):
            self.error(("events",), f"must be a list of events, got {type_name(value)}")
            return None
        out: list[Event] = []
        ok = True
        for k, raw in enumerate(value):
            ev = self._event(raw, ("events", k), line, duration)
            ok = ok and ev is not None
            if ev is not None:
                out.append(ev)
        return tuple(sorted(out, key=lambda e: e.at_s)) if ok else None

    def _event(
        self, raw: Any, path: PathKey, line: LineSpec | None, duration: float | None
    ) -> Event | None:
        if not isinstance(raw, dict):
            self.error(path, f"must be a mapping (an event), got {type_name(raw)}")
            return None
        kinds = [k.value for k in EventKind]
        if "type" not in raw:
            self.error(path, f"missing required field 'type' (one of {', '.join(kinds)})")
            return None
        t = raw["type"]
        if t not in kinds:
            close = difflib.get_close_matches(str(t), kinds, n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'?" if close else f"one of {', '.join(kinds)}"
            self.error((*path, "type"), f"unknown event type {t!r}; {hint}")
            return None
        kind = EventKind(t)
        required, optional = EVENT_KEYS[kind]
        self.mapping(raw, path, ("at", "type", *required, *optional))
        missing = [key for key in ("at", *required) if key not in raw]
        for key in missing:
            self.error(path, f"missing required field '{key}' (a {kind.value} event)")
        if missing:
            return None
        at = self.number(raw["at"], (*path, "at"), ge=0)
        if at is not None and duration is not None and at >= duration:
            self.error((*path, "at"), f"must be before the end (duration {duration:g} s)")
            at = None
        kw: dict[str, Any] = {}
        ok = at is not None
        stations = [s.id for s in line.stations] if line else []
        buffers = [b.id for b in line.buffers] if line else []
        for key in (*required, *optional):
            if key not in raw:
                continue
            v, p = raw[key], (*path, key)
            if key == "station":
                kw["station"] = self.ref(v, p, stations, "station") if line else None
            elif key == "buffer":
                kw["buffer"] = self.ref(v, p, buffers, "buffer") if line else None
                if kw["buffer"] is not None and line is not None:
                    b = next(b for b in line.buffers if b.id == kw["buffer"])
                    if b.transit_time <= 0:
                        self.error(p, f"buffer '{b.id}' is not a conveyor (no transit time)")
                        kw["buffer"] = None
            elif key == "for":
                kw["for_s"] = self.number(v, p, gt=0)
            elif key == "within":
                kw["within_s"] = self.number(v, p, gt=0)
            elif key == "factor":
                kw["factor"] = self.number(v, p, gt=0)
            elif key == "parts":
                kw["parts"] = self.integer(v, p, ge=1)
            elif key == "mode":
                if v not in ("stale", "garbage"):
                    self.error(p, f"must be 'stale' or 'garbage', got {type_name(v)}")
                    kw["mode"] = None
                else:
                    kw["mode"] = v
        ok = ok and all(v is not None for v in kw.values())
        if kind is EventKind.SENSOR_FAULT:
            kw.setdefault("mode", "stale")
        if not ok or at is None:
            return None
        return Event(kind=kind, at_s=at, line=self.doc.line(path), **kw)

    def _allowed(self, value: Any) -> Allowed | None:
        if value is None:
            return Allowed()
        m = self.mapping(value, ("actions",), ACTION_KEYS)
        if m is None:
            return None
        kinds: set[ActionKind] = set()
        repair, smin, smax = 120.0, 0.5, 1.5
        ok = True
        for key, v in m.items():
            if key not in ACTION_KEYS:
                ok = False
                continue
            path: PathKey = ("actions", key)
            if v is False:
                continue
            kinds.add(ActionKind(key))
            if v is True:
                continue
            if key == "maintenance":
                mm = self.mapping(v, path, ("repair",))
                r = self.number((mm or {}).get("repair", repair), (*path, "repair"), gt=0)
                ok = ok and mm is not None and r is not None
                repair = r or repair
            elif key == "speed":
                sm = self.mapping(v, path, ("min", "max"))
                lo = self.number((sm or {}).get("min", smin), (*path, "min"), gt=0)
                hi = self.number((sm or {}).get("max", smax), (*path, "max"), gt=0)
                if lo is not None and hi is not None and lo > hi:
                    self.error(path, f"min ({lo:g}) must not exceed max ({hi:g})")
                    ok = False
                ok = ok and sm is not None and lo is not None and hi is not None
                smin, smax = lo or smin, hi or smax
            else:
                self.error(path, f"must be true or false, got {type_name(v)}")
                ok = False
        if not ok:
            return None
        return Allowed(kinds=frozenset(kinds), repair_s=repair, speed_min=smin, speed_max=smax)

    def _scoring(self, value: Any, sample: float | None) -> Scoring | None:
        if value is None:
            return Scoring()
        m = self.mapping(value, ("scoring",), SCORING_KEYS)
        if m is None:
            return None
        kw: dict[str, Any] = {}
        ok = True
        # criterion -> {yaml key: (Scoring field, > 0 required)}
        fields: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
            "recovery": (
                RECOVERY_KEYS,
                {
                    "points": "recovery_points",
                    "percent": "recovery_percent",
                    "within": "recovery_within_s",
                    "window": "recovery_window_s",
                    "baseline_per_hour": "baseline_per_hour",
                },
            ),
            "acknowledge": (ACK_KEYS, {"points": "ack_points", "within": "ack_within_s"}),
            "safety": (SAFETY_KEYS, {"points": "safety_points", "react": "safety_react_s"}),
            "rush_order": (RUSH_KEYS, {"points": "rush_points"}),
        }
        for crit in SCORING_KEYS:
            if crit not in m:
                continue
            keys, names = fields[crit]
            cm = self.mapping(m[crit], ("scoring", crit), keys)
            if cm is None:
                ok = False
                continue
            for key, v in cm.items():
                if key not in names:
                    ok = False
                    continue
                path: PathKey = ("scoring", crit, key)
                num = self.number(v, path, ge=0) if key == "points" else self.number(v, path, gt=0)
                if key == "percent" and num is not None and num > 100:
                    self.error(path, f"must be <= 100, got {num:g}")
                    num = None
                if (
                    key == "window"
                    and num is not None
                    and sample is not None
                    and abs(num / sample - round(num / sample)) > 1e-9
                ):
                    self.error(path, f"must be a multiple of sample ({sample:g} s), got {num:g}")
                    num = None
                if num is None:
                    ok = False
                else:
                    kw[names[key]] = num
        if sample is not None and "recovery_window_s" not in kw:
            # the default window must also be a whole number of samples
            kw["recovery_window_s"] = max(sample, round(300.0 / sample) * sample)
        return Scoring(**kw) if ok else None

    # -- actions files ---------------------------------------------------------------------------
    def actions(self, scenario: Scenario) -> list[ScriptedAction]:
        value = self.doc.value
        if value is None:
            return []
        if not isinstance(value, list):
            self.error((), f"must be a list of actions, got {type_name(value)}")
            return []
        out: list[ScriptedAction] = []
        for k, raw in enumerate(value):
            path: PathKey = (k,)
            m = self.mapping(raw, path, SCRIPT_KEYS)
            if m is None:
                continue
            missing = [key for key in ("at", "action", "target") if key not in m]
            for key in missing:
                self.error(path, f"missing required field '{key}'")
            if missing:
                continue
            at = self.number(m["at"], (k, "at"), ge=0)
            if at is not None and at > scenario.duration_s:
                self.error((k, "at"), f"is after the end (duration {scenario.duration_s:g} s)")
                at = None
            action = self.string(m["action"], (k, "action"))
            if action is not None and action not in ACTION_COMMANDS:
                close = difflib.get_close_matches(action, list(ACTION_COMMANDS), n=1, cutoff=0.6)
                hint = f"did you mean '{close[0]}'?" if close else ", ".join(ACTION_COMMANDS)
                self.error((k, "action"), f"unknown action {action!r}; {hint}")
                action = None
            target = self.string(m["target"], (k, "target"))
            args = m.get("args", {})
            if not isinstance(args, dict):
                self.error((k, "args"), f"must be a mapping, got {type_name(args)}")
                args = None
            who = self.string(m.get("who", "script"), (k, "who"))
            if at is None or action is None or target is None or args is None or who is None:
                continue
            out.append(
                ScriptedAction(
                    at_s=at,
                    action=action,
                    target=target,
                    args=dict(args),
                    who=who,
                    line=self.doc.line(path),
                )
            )
        return sorted(out, key=lambda a: a.at_s)
