"""The design-space file: what may vary in a line, within which bounds, under which constraints,
judged by which objectives and at which cost. Parse and validate it, and apply a variant to a line.

Like :mod:`scenes.lineparse`, every problem is collected and reported as
``file:line field.path: message`` inside one :class:`SpaceFileError`; :func:`parse_space` raises
nothing else for any input text. The format is documented in ``docs/design-space.md``.
"""

from __future__ import annotations

import ast
import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from scenes import yamlpos
from scenes.errors import ConfigError, LineFileError, Problem
from scenes.fields import FieldReader, hint, read_text, type_name
from scenes.spec import Buffer, DistKind, Distribution, LineSpec, RoutingPolicy
from scenes.yamlpos import PathKey

TOP_KEYS = (
    "design",
    "description",
    "parameters",
    "constraints",
    "objectives",
    "cost",
    "simulation",
    "nsga2",
    "gradient",
)
PARAM_KEYS = ("name", "target", "range", "step", "levels", "values")
OBJECTIVE_KEYS = ("kpi", "sense")
COST_KEYS = (
    "currency",
    "machine",
    "machine_by_type",
    "speed_exponent",
    "buffer_slot",
    "conveyor_metre",
    "conveyor_speed",
    "floor_m2",
    "floor_margin",
)
SIM_KEYS = ("hours", "warmup_hours", "replications", "seed", "engine", "batch")
NSGA_KEYS = ("population", "crossover", "mutation", "eta_crossover", "eta_mutation")
GRADIENT_KEYS = ("refine", "steps", "step", "cost_weight", "parts", "warmup_parts")
NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
LAYOUT = "layout"


class SpaceFileError(ConfigError):
    """A design-space file has problems; ``problems`` lists each, in file order."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.file, p.line, p.path))
        super().__init__("\n".join(str(p) for p in self.problems))


class Kpi(StrEnum):
    """What a variant is judged by (per replication, then mean and 95% CI)."""

    THROUGHPUT = "throughput"  # parts per hour delivered to the sink
    WIP = "wip"  # time-average parts in the line
    LEAD_TIME = "lead_time"  # mean release-to-delivery time, s
    OEE = "oee"  # OEE of the bottleneck station, 0..1
    COST = "cost"  # the cost model's price of the variant (deterministic)


#: The sense of each KPI when an objective does not give one.
DEFAULT_SENSE: Mapping[Kpi, str] = {
    Kpi.THROUGHPUT: "max",
    Kpi.WIP: "min",
    Kpi.LEAD_TIME: "min",
    Kpi.OEE: "max",
    Kpi.COST: "min",
}


class Sense(StrEnum):
    MIN = "min"
    MAX = "max"


class Engine(StrEnum):
    """``auto``: the (max,+) serial fast path for a layout whose every variant is a serial line
    it runs exactly, else the general engine."""

    AUTO = "auto"
    GENERAL = "general"
    SERIAL = "serial"


class TargetKind(StrEnum):
    """What a parameter sets (``docs/design-space.md``, "Targets")."""

    SERVERS = "servers"  # stations.ID.servers
    PROCESS_TIME = "process_time"  # stations.ID.process_time (the mean; the shape is kept)
    SCRAP = "scrap_rate"  # stations.ID.scrap_rate
    MTBF = "mtbf"  # stations.ID.failures.mtbf
    MTTR = "mttr"  # stations.ID.failures.mttr
    WEIGHT = "weight"  # stations.ID.routing.weights.BUFFER
    CAPACITY = "capacity"  # buffers.ID.capacity
    SPEED = "speed"  # buffers.ID.conveyor.speed
    LAYOUT = "layout"  # an alternative line file


INTEGER_TARGETS = frozenset({TargetKind.SERVERS, TargetKind.CAPACITY})


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """``kind`` of station or buffer ``ref`` (``key``: the buffer of a routing weight)."""

    kind: TargetKind
    ref: str = ""
    key: str = ""

    def __str__(self) -> str:
        match self.kind:
            case TargetKind.LAYOUT:
                return "layout"
            case TargetKind.SERVERS | TargetKind.PROCESS_TIME | TargetKind.SCRAP:
                return f"stations.{self.ref}.{self.kind.value}"
            case TargetKind.MTBF | TargetKind.MTTR:
                return f"stations.{self.ref}.failures.{self.kind.value}"
            case TargetKind.WEIGHT:
                return f"stations.{self.ref}.routing.weights.{self.key}"
            case TargetKind.CAPACITY:
                return f"buffers.{self.ref}.capacity"
            case TargetKind.SPEED:
                return f"buffers.{self.ref}.conveyor.speed"
        raise AssertionError(self.kind)  # pragma: no cover


Value = int | float | str


@dataclass(frozen=True, slots=True, kw_only=True)
class Parameter:
    """One dimension of the space.

    Either a range ``[low, high]`` (integers: every ``step``-th whole number from ``low``; reals:
    continuous, ``levels`` points in a grid) or explicit ``choices`` (numbers, or layout names).
    """

    name: str
    target: Target
    low: float = 0.0
    high: float = 0.0
    step: int = 1
    levels: int = 3
    choices: tuple[Value, ...] = ()
    line: int = 0

    @property
    def integer(self) -> bool:
        return self.target.kind in INTEGER_TARGETS

    @property
    def continuous(self) -> bool:
        """A real-valued range (the only kind the gradient refinement moves)."""
        return not self.choices and not self.integer

    def levels_of(self) -> tuple[Value, ...]:
        """The grid levels: the choices, the integer lattice, or ``levels`` evenly spaced reals."""
        if self.choices:
            return self.choices
        if self.integer:
            return tuple(range(int(self.low), int(self.high) + 1, self.step))
        if self.levels == 1 or self.high == self.low:
            return ((self.low + self.high) / 2,)
        return tuple(
            self.low + (self.high - self.low) * i / (self.levels - 1) for i in range(self.levels)
        )

    def decode(self, u: float) -> Value:
        """The value at unit coordinate ``u`` in [0, 1] (what the generators draw)."""
        u = min(max(u, 0.0), 1.0)
        if self.choices or self.integer:
            levels = self.levels_of()
            return levels[min(int(u * len(levels)), len(levels) - 1)]
        return self.low + (self.high - self.low) * u

    def encode(self, value: Value) -> float:
        """The centre of ``value``'s cell in unit coordinates (the inverse of :meth:`decode`)."""
        if self.choices or self.integer:
            levels = self.levels_of()
            i = levels.index(value) if value in levels else 0
            return (i + 0.5) / len(levels)
        if self.high == self.low:
            return 0.5
        return (float(value) - self.low) / (self.high - self.low)


@dataclass(frozen=True, slots=True, kw_only=True)
class Constraint:
    """``expression`` such as ``b1 + b2 <= 20``: ``lhs - rhs`` must satisfy ``op``.

    Constraints on parameters only are enforced before simulation (generators never propose a
    variant that breaks one); constraints naming a KPI mark variants infeasible afterwards.
    """

    text: str
    tree: ast.Expression
    names: frozenset[str]
    line: int = 0

    def on_results(self) -> bool:
        return any(n in Kpi.__members__.values() for n in self.names)

    def holds(self, values: Mapping[str, float]) -> bool:
        return bool(_eval(self.tree.body, values))

    def violation(self, values: Mapping[str, float]) -> float:
        """How far ``values`` are from meeting the constraint (0 when they meet it; inf when a
        name has no value, such as a KPI of a variant that delivered nothing)."""
        body = self.tree.body
        assert isinstance(body, ast.Compare)
        a = float(_eval(body.left, values))
        b = float(_eval(body.comparators[0], values))
        if math.isnan(a) or math.isnan(b):
            return math.inf
        if self.holds(values):
            return 0.0
        return abs(a - b) or 1e-12


@dataclass(frozen=True, slots=True, kw_only=True)
class Objective:
    kpi: Kpi
    sense: Sense

    @property
    def sign(self) -> float:
        """+1 to minimize the KPI as it is, -1 to minimize its negative (maximize it)."""
        return 1.0 if self.sense == Sense.MIN else -1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class CostModel:
    """Prices (``currency`` units; see ``docs/design-space.md``, "Cost model")."""

    currency: str = "EUR"
    machine: float = 100_000.0  # per server, at the line file's processing time
    machine_by_type: tuple[tuple[str, float], ...] = ()
    speed_exponent: float = 1.0  # a machine k times faster costs k**exponent times as much
    buffer_slot: float = 1_000.0  # per slot of a buffer without a conveyor
    conveyor_metre: float = 1_000.0  # per metre of conveyor
    conveyor_speed: float = 0.0  # extra per metre of conveyor and per m/s of belt speed
    floor_m2: float = 200.0  # per square metre of floor
    floor_margin: float = 1.0  # clearance around each station footprint, m

    def machine_price(self, station_type: str) -> float:
        return dict(self.machine_by_type).get(station_type, self.machine)


@dataclass(frozen=True, slots=True, kw_only=True)
class Simulation:
    """How each variant is simulated (CLI flags override)."""

    hours: float = 8.0
    warmup_hours: float = 0.0
    replications: int = 5
    seed: int = 1
    engine: Engine = Engine.AUTO
    batch: int = 256  # variants per batch (times replications = lanes)


@dataclass(frozen=True, slots=True, kw_only=True)
class Nsga2:
    population: int = 32
    crossover: float = 0.9  # probability of SBX crossover per pair
    mutation: float | None = None  # per-gene probability; None: 1 / number of parameters
    eta_crossover: float = 15.0
    eta_mutation: float = 20.0


@dataclass(frozen=True, slots=True, kw_only=True)
class GradientSettings:
    """IPA refinement of continuous processing-time parameters on serial layouts."""

    refine: int = 0  # how many front variants to refine (0: none)
    steps: int = 3
    step: float = 0.2  # largest move per step, as a fraction of each parameter's range
    cost_weight: float = 0.0  # parts/h given up per currency unit saved
    parts: int = 4000
    warmup_parts: int = 200


@dataclass(frozen=True, slots=True, kw_only=True)
class DesignSpace:
    """A validated design space for one base line (and its alternative layouts)."""

    name: str
    parameters: tuple[Parameter, ...]
    objectives: tuple[Objective, ...]
    constraints: tuple[Constraint, ...] = ()
    cost: CostModel = field(default_factory=CostModel)
    simulation: Simulation = field(default_factory=Simulation)
    nsga2: Nsga2 = field(default_factory=Nsga2)
    gradient: GradientSettings = field(default_factory=GradientSettings)
    description: str = ""
    layouts: tuple[tuple[str, LineSpec], ...] = ()  # name -> line; () when no layout parameter
    path: str | None = None

    def parameter(self, name: str) -> Parameter:
        for p in self.parameters:
            if p.name == name:
                return p
        raise KeyError(name)

    @property
    def numeric(self) -> tuple[Parameter, ...]:
        return tuple(p for p in self.parameters if p.target.kind != TargetKind.LAYOUT)

    def layout_of(self, values: Mapping[str, Value], base: LineSpec) -> tuple[str, LineSpec]:
        """The layout name and line of a variant (``"base"`` without a layout parameter)."""
        for p in self.parameters:
            if p.target.kind == TargetKind.LAYOUT:
                name = str(values[p.name])
                return name, dict(self.layouts)[name]
        return "base", base

    def feasible_inputs(self, values: Mapping[str, Value]) -> bool:
        nums = {k: float(v) for k, v in values.items() if not isinstance(v, str)}
        return all(c.holds(nums) for c in self.constraints if not c.on_results())

    def base_values(self, base: LineSpec) -> dict[str, Value]:
        """The values the base line itself has (the first layout where there are several)."""
        out: dict[str, Value] = {}
        for p in self.parameters:
            if p.target.kind == TargetKind.LAYOUT:
                out[p.name] = self.layouts[0][0]
        _, line = self.layout_of(out, base) if out else ("base", base)
        for p in self.numeric:
            out[p.name] = read_target(line, p.target)
        return out


# -- applying a variant ----------------------------------------------------------------------------
def read_target(spec: LineSpec, t: Target) -> Value:
    """The value ``t`` has in ``spec``."""
    match t.kind:
        case TargetKind.SERVERS:
            return spec.station(t.ref).servers
        case TargetKind.PROCESS_TIME:
            return spec.station(t.ref).process_time.mean
        case TargetKind.SCRAP:
            return spec.station(t.ref).scrap_rate
        case TargetKind.MTBF | TargetKind.MTTR:
            f = spec.station(t.ref).failures
            assert f is not None  # checked when the space was parsed
            return f.mtbf if t.kind == TargetKind.MTBF else f.mttr
        case TargetKind.WEIGHT:
            return dict(spec.station(t.ref).weights)[t.key]
        case TargetKind.CAPACITY:
            return _buffer(spec, t.ref).capacity
        case TargetKind.SPEED:
            conv = _buffer(spec, t.ref).conveyor
            assert conv is not None
            return conv.speed
    raise KeyError(str(t))


def scale_distribution(d: Distribution, mean: float) -> Distribution:
    """``d`` with mean ``mean``, its shape kept (cv, or the spread relative to the mean)."""
    if d.kind in (DistKind.UNIFORM, DistKind.EMPIRICAL):
        f = mean / d.mean
        if d.kind == DistKind.UNIFORM:
            return replace(d, low=d.low * f, high=d.high * f, mean=mean)
        return replace(d, values=tuple(v * f for v in d.values), mean=mean)
    return replace(d, mean=float(mean))


def apply(spec: LineSpec, space: DesignSpace, values: Mapping[str, Value]) -> LineSpec:
    """The line of a variant: ``spec`` (the variant's layout) with every numeric parameter set."""
    stations = {s.id: s for s in spec.stations}
    buffers = {b.id: b for b in spec.buffers}
    for p in space.numeric:
        v = values[p.name]
        t = p.target
        if t.kind in (TargetKind.CAPACITY, TargetKind.SPEED):
            b = buffers[t.ref]
            if t.kind == TargetKind.CAPACITY:
                buffers[t.ref] = replace(b, capacity=int(v))
            else:
                assert b.conveyor is not None
                buffers[t.ref] = replace(b, conveyor=replace(b.conveyor, speed=float(v)))
            continue
        s = stations[t.ref]
        match t.kind:
            case TargetKind.SERVERS:
                s = replace(s, servers=int(v))
            case TargetKind.PROCESS_TIME:
                s = replace(s, process_time=scale_distribution(s.process_time, float(v)))
            case TargetKind.SCRAP:
                s = replace(s, scrap_rate=float(v))
            case TargetKind.MTBF | TargetKind.MTTR:
                assert s.failures is not None
                f = s.failures
                if t.kind == TargetKind.MTBF:
                    s = replace(s, failures=replace(f, mtbf=float(v)))
                else:
                    s = replace(s, failures=replace(f, mttr=float(v)))
            case TargetKind.WEIGHT:
                s = replace(
                    s, weights=tuple((k, float(v) if k == t.key else w) for k, w in s.weights)
                )
            case _:  # pragma: no cover
                raise AssertionError(t.kind)
        stations[t.ref] = s
    return replace(
        spec,
        stations=tuple(stations[s.id] for s in spec.stations),
        buffers=tuple(buffers[b.id] for b in spec.buffers),
    )


def _buffer(spec: LineSpec, ref: str) -> Buffer:
    for b in spec.buffers:
        if b.id == ref:
            return b
    raise KeyError(ref)


# -- parsing ---------------------------------------------------------------------------------------
def load_space(path: str | Path, line: LineSpec) -> DesignSpace:
    """Read and validate a design-space file for ``line``. Raises :class:`SpaceFileError`
    (layout line files with problems raise their own :class:`scenes.errors.LineFileError`)."""
    p = Path(path)
    return parse_space(read_text(p, SpaceFileError), line, filename=str(p), base_dir=p.parent)


def parse_space(
    text: str,
    line: LineSpec,
    *,
    filename: str = "<string>",
    base_dir: str | Path | None = None,
) -> DesignSpace:
    """Parse design-space text for ``line``; layout files resolve against ``base_dir``."""
    try:
        doc = yamlpos.load(text)
    except yamlpos.YamlSyntaxError as exc:
        raise SpaceFileError(
            [Problem(file=filename, line=exc.line, path="", message=exc.message)]
        ) from exc
    reader = _Reader(doc, filename, Path(base_dir) if base_dir is not None else None, line)
    space = reader.space()
    if reader.problems or space is None:
        if not reader.problems:  # pragma: no cover - every path that gives no space reports
            reader.error((), "internal error: the space could not be built")
        raise SpaceFileError(reader.problems)
    return space


class _Reader(FieldReader):
    """Walks the document, converting fields and collecting problems (as lineparse does)."""

    def __init__(self, doc: yamlpos.Located, filename: str, base: Path | None, line: LineSpec):
        super().__init__(doc, filename)
        self.base = base
        self.line = line

    def opt(self, m: Mapping[Any, Any], key: str, path: PathKey, default: Any, read: Any) -> Any:
        if key not in m:
            return default
        v = read(m[key], (*path, key))
        return default if v is None else v

    # -- the document ----------------------------------------------------------------------------
    def space(self) -> DesignSpace | None:
        top = self.mapping(self.doc.value, (), TOP_KEYS, "a design space")
        if top is None:
            return None
        name = top.get("design")
        if "design" not in top:
            self.error((), "missing required field 'design' (the design space's name)")
        elif not isinstance(name, str) or not name:
            self.error(("design",), f"must be a non-empty string, got {type_name(name)}")
        description = top.get("description", "")
        if not isinstance(description, str):
            self.error(("description",), f"must be a string, got {type_name(description)}")
            description = ""
        params, layouts = self.parameters(top)
        names = {p.name for p in params}
        objectives = self.objectives(top)
        constraints = self.constraints(
            top, names, {p.name for p in params if p.choices and p.target.kind == TargetKind.LAYOUT}
        )
        cost = self.cost(top.get("cost"), ("cost",)) if "cost" in top else CostModel()
        sim = self.simulation(top["simulation"]) if "simulation" in top else Simulation()
        nsga = self.nsga2(top["nsga2"]) if "nsga2" in top else Nsga2()
        grad = self.gradient(top["gradient"]) if "gradient" in top else GradientSettings()
        if self.problems or not isinstance(name, str):
            return None
        return DesignSpace(
            name=name,
            description=description,
            parameters=tuple(params),
            objectives=tuple(objectives),
            constraints=tuple(constraints),
            cost=cost or CostModel(),
            simulation=sim,
            nsga2=nsga,
            gradient=grad,
            layouts=tuple(layouts),
            path=self.file,
        )

    def parameters(
        self, top: Mapping[Any, Any]
    ) -> tuple[list[Parameter], list[tuple[str, LineSpec]]]:
        raw = top.get("parameters")
        if "parameters" not in top:
            self.error((), "missing required field 'parameters'")
            return [], []
        if not isinstance(raw, list) or not raw:
            self.error(
                ("parameters",), f"must be a non-empty list of parameters, got {type_name(raw)}"
            )
            return [], []
        # Layouts first: every other target must exist in each of them.
        layouts: list[tuple[str, LineSpec]] = []
        for i, item in enumerate(raw):
            if isinstance(item, dict) and item.get("target") == LAYOUT:
                if layouts:
                    self.error(("parameters", i, "target"), "only one parameter may be 'layout'")
                else:
                    layouts = self.layouts(item, ("parameters", i))
        lines = [spec for _, spec in layouts] or [self.line]
        out: list[Parameter] = []
        seen: dict[str, int] = {}
        for i, item in enumerate(raw):
            p = self.parameter(item, ("parameters", i), lines, [n for n, _ in layouts])
            if p is None:
                continue
            if p.name in seen:
                self.error(
                    ("parameters", i, "name"),
                    f"duplicate parameter name '{p.name}' (first used at parameters[{seen[p.name]}])",
                )
                continue
            if p.name in Kpi.__members__.values():
                self.error(("parameters", i, "name"), f"'{p.name}' is a KPI name; choose another")
                continue
            seen[p.name] = i
            if any(str(q.target) == str(p.target) for q in out):
                self.error(("parameters", i, "target"), f"'{p.target}' is set by another parameter")
                continue
            out.append(p)
        return out, layouts

    def layouts(self, item: Mapping[Any, Any], path: PathKey) -> list[tuple[str, LineSpec]]:
        from scenes.lineparse import load_line

        vals = item.get("values")
        vp = (*path, "values")
        if not isinstance(vals, dict) or not vals:
            self.error(vp, "a layout parameter needs values: {NAME: line-file.yaml, ...}")
            return []
        out: list[tuple[str, LineSpec]] = []
        for key, fname in vals.items():
            kp = (*vp, str(key))
            if not isinstance(key, str) or not NAME_RE.fullmatch(key):
                self.error(
                    kp, "layout names are letters, digits and '_' (not starting with a digit)"
                )
                continue
            if not isinstance(fname, str) or not fname:
                self.error(kp, f"must be a line file name, got {type_name(fname)}")
                continue
            p = Path(fname)
            if not p.is_absolute() and self.base is not None:
                p = self.base / p
            try:
                spec = load_line(p)
            except LineFileError as exc:
                first = exc.problems[0] if exc.problems else None
                self.error(kp, f"layout line file has problems: {first}")
                continue
            out.append((key, spec))
        return out

    def parameter(
        self, raw: Any, path: PathKey, lines: list[LineSpec], layout_names: list[str]
    ) -> Parameter | None:
        m = self.mapping(raw, path, PARAM_KEYS, "a parameter")
        if m is None:
            return None
        if "target" not in m:
            self.error(path, "missing required field 'target'")
            return None
        tp = (*path, "target")
        target = self.target(m["target"], tp, lines)
        if target is None:
            return None
        name = m.get("name", _default_name(target))
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            self.error(
                (*path, "name"),
                f"must be a name of letters, digits and '_' (not starting with a digit), got {type_name(name)}",
            )
            return None
        ln = self.doc.line(path)
        if target.kind == TargetKind.LAYOUT:
            for k in ("range", "step", "levels"):
                if k in m:
                    self.error((*path, k), "a layout parameter takes only 'values'")
            if not layout_names:
                return None  # reported by layouts()
            return Parameter(name=name, target=target, choices=tuple(layout_names), line=ln)
        integer = target.kind in INTEGER_TARGETS
        lo_bound = _lower_bound(target, lines)
        if ("range" in m) == ("values" in m):
            self.error(path, "give either 'range: [low, high]' or 'values: [...]'")
            return None
        if "values" in m:
            for k in ("step", "levels"):
                if k in m:
                    self.error((*path, k), "'values' lists the levels; drop this field")
            vals = m["values"]
            vp = (*path, "values")
            if not isinstance(vals, list) or not vals:
                self.error(vp, f"must be a non-empty list of numbers, got {type_name(vals)}")
                return None
            nums: list[Value] = []
            for j, v in enumerate(vals):
                x = self.bounded(v, (*vp, j), target, lo_bound, integer)
                if x is not None:
                    if x in nums:
                        self.error((*vp, j), f"repeats the value {x:g}")
                    else:
                        nums.append(x)
            if len(nums) != len(vals):
                return None
            return Parameter(name=name, target=target, choices=tuple(nums), line=ln)
        rng = m["range"]
        rp = (*path, "range")
        if not isinstance(rng, list) or len(rng) != 2:
            got = f"a list of {len(rng)}" if isinstance(rng, list) else type_name(rng)
            self.error(rp, f"must be [low, high], got {got}")
            return None
        lo = self.bounded(rng[0], (*rp, 0), target, lo_bound, integer)
        hi = self.bounded(rng[1], (*rp, 1), target, lo_bound, integer)
        if lo is None or hi is None:
            return None
        if hi < lo:
            self.error((*rp, 1), f"must be >= low ({lo:g}), got {hi:g}")
            return None
        step, levels = 1, 3
        if "step" in m:
            if not integer:
                self.error(
                    (*path, "step"),
                    "'step' is for whole-number targets (servers, capacity); use 'levels'",
                )
            else:
                step = self.integer(m["step"], (*path, "step"), ge=1) or 1
        if "levels" in m:
            if integer:
                self.error((*path, "levels"), "whole-number ranges use 'step', not 'levels'")
            else:
                levels = self.integer(m["levels"], (*path, "levels"), ge=1) or 3
        return Parameter(
            name=name, target=target, low=lo, high=hi, step=step, levels=levels, line=ln
        )

    def bounded(
        self, v: Any, path: PathKey, target: Target, bound: tuple[float, bool], integer: bool
    ) -> float | int | None:
        lo, strict = bound
        if integer:
            return self.integer(v, path, ge=int(lo))
        x = self.number(v, path, gt=lo) if strict else self.number(v, path, ge=lo)
        if x is not None and target.kind == TargetKind.SCRAP and x >= 1:
            self.error(path, f"must be < 1, got {x:g}")
            return None
        return x

    def target(self, value: Any, path: PathKey, lines: list[LineSpec]) -> Target | None:
        if not isinstance(value, str) or not value:
            self.error(
                path, f"must be a target such as 'stations.ID.servers', got {type_name(value)}"
            )
            return None
        if value == LAYOUT:
            return Target(kind=TargetKind.LAYOUT)
        parts = value.split(".")
        forms = (
            "stations.ID.servers, stations.ID.process_time, stations.ID.scrap_rate, "
            "stations.ID.failures.mtbf, stations.ID.failures.mttr, "
            "stations.ID.routing.weights.BUFFER, buffers.ID.capacity, buffers.ID.conveyor.speed, "
            "layout"
        )
        t: Target | None = None
        if len(parts) >= 3 and parts[0] == "stations":
            ref, rest = parts[1], parts[2:]
            if rest == ["servers"]:
                t = Target(kind=TargetKind.SERVERS, ref=ref)
            elif rest == ["process_time"]:
                t = Target(kind=TargetKind.PROCESS_TIME, ref=ref)
            elif rest == ["scrap_rate"]:
                t = Target(kind=TargetKind.SCRAP, ref=ref)
            elif rest in (["failures", "mtbf"], ["failures", "mttr"]):
                t = Target(kind=TargetKind(rest[1]), ref=ref)
            elif len(rest) == 3 and rest[:2] == ["routing", "weights"]:
                t = Target(kind=TargetKind.WEIGHT, ref=ref, key=rest[2])
        elif len(parts) >= 3 and parts[0] == "buffers":
            ref, rest = parts[1], parts[2:]
            if rest == ["capacity"]:
                t = Target(kind=TargetKind.CAPACITY, ref=ref)
            elif rest == ["conveyor", "speed"]:
                t = Target(kind=TargetKind.SPEED, ref=ref)
        if t is None:
            self.error(path, f"unknown target '{value}' (one of {forms})")
            return None
        for spec in lines:
            msg = _check_target(spec, t)
            if msg is not None:
                where = f" in layout '{spec.name}'" if len(lines) > 1 else ""
                self.error(path, msg + where)
                return None
        return t

    def objectives(self, top: Mapping[Any, Any]) -> list[Objective]:
        if "objectives" not in top:
            self.error((), "missing required field 'objectives' (such as [throughput, cost])")
            return []
        raw = top["objectives"]
        if not isinstance(raw, list) or not raw:
            self.error(("objectives",), f"must be a non-empty list of KPIs, got {type_name(raw)}")
            return []
        out: list[Objective] = []
        for i, item in enumerate(raw):
            path: PathKey = ("objectives", i)
            kpi_raw: Any = item
            sense_raw: Any = None
            if isinstance(item, dict):
                m = self.mapping(item, path, OBJECTIVE_KEYS, "kpi, sense")
                if m is None:
                    continue
                if "kpi" not in m:
                    self.error(path, "missing required field 'kpi'")
                    continue
                kpi_raw, sense_raw = m["kpi"], m.get("sense")
                path = (*path, "kpi")
            kpi = self.enum(kpi_raw, path, Kpi)
            if kpi is None:
                continue
            sense = Sense(DEFAULT_SENSE[kpi])
            if sense_raw is not None:
                s = self.enum(sense_raw, ("objectives", i, "sense"), Sense)
                if s is None:
                    continue
                sense = s
            if any(o.kpi == kpi for o in out):
                self.error(path, f"objective '{kpi.value}' is listed twice")
                continue
            out.append(Objective(kpi=kpi, sense=sense))
        return out

    def enum(self, value: Any, path: PathKey, enum: type[Any]) -> Any:
        choices = [e.value for e in enum]
        if not isinstance(value, str) or value not in choices:
            close = difflib.get_close_matches(str(value), choices, n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            self.error(path, f"must be one of {', '.join(choices)}, got {value!r}{hint}")
            return None
        return enum(value)

    def constraints(
        self, top: Mapping[Any, Any], names: set[str], layout_names: set[str]
    ) -> list[Constraint]:
        raw = top.get("constraints")
        if raw is None:
            return []
        if not isinstance(raw, list):
            self.error(("constraints",), f"must be a list of expressions, got {type_name(raw)}")
            return []
        known = sorted(names - layout_names) + [k.value for k in Kpi]
        out: list[Constraint] = []
        for i, text in enumerate(raw):
            path: PathKey = ("constraints", i)
            if not isinstance(text, str) or not text.strip():
                self.error(
                    path, f"must be an expression such as 'b1 + b2 <= 20', got {type_name(text)}"
                )
                continue
            try:
                tree = ast.parse(text.strip(), mode="eval")
            except SyntaxError as exc:
                self.error(path, f"not an expression: {exc.msg}")
                continue
            body = tree.body
            if not (
                isinstance(body, ast.Compare)
                and len(body.ops) == 1
                and isinstance(body.ops[0], ast.LtE | ast.GtE | ast.Lt | ast.Gt)
            ):
                self.error(
                    path, "must compare two sides with <=, >=, < or >, such as 'b1 + b2 <= 20'"
                )
                continue
            bad = _check_expr(body)
            if bad is not None:
                self.error(path, bad)
                continue
            used = {n.id for n in ast.walk(body) if isinstance(n, ast.Name)}
            unknown = sorted(used - set(known))
            if unknown:
                u = unknown[0]
                if u in layout_names:
                    self.error(path, f"'{u}' is the layout parameter: it has no number")
                else:
                    self.error(path, f"unknown name '{u}'; {hint(u, known, label='names')}")
                continue
            out.append(
                Constraint(
                    text=text.strip(), tree=tree, names=frozenset(used), line=self.doc.line(path)
                )
            )
        return out

    def cost(self, raw: Any, path: PathKey) -> CostModel | None:
        m = self.mapping(raw, path, COST_KEYS, "prices")
        if m is None:
            return None
        d = CostModel()
        currency = m.get("currency", d.currency)
        if not isinstance(currency, str) or not currency:
            self.error((*path, "currency"), f"must be a string, got {type_name(currency)}")
            currency = d.currency
        by_type: list[tuple[str, float]] = []
        if "machine_by_type" in m:
            bt = m["machine_by_type"]
            if not isinstance(bt, dict):
                self.error(
                    (*path, "machine_by_type"),
                    f"must be a mapping of station type to price, got {type_name(bt)}",
                )
            else:
                types = {s.type for s in self.line.stations}
                for k, v in bt.items():
                    kp = (*path, "machine_by_type", str(k))
                    if k not in types:
                        self.error(
                            kp,
                            f"no station of type '{k}' in the line; {hint(str(k), sorted(types), label='types')}",
                        )
                        continue
                    x = self.number(v, kp, ge=0)
                    if x is not None:
                        by_type.append((str(k), x))

        def price(key: str, default: float) -> float:
            v: float = self.opt(m, key, path, default, lambda x, p: self.number(x, p, ge=0))
            return v

        return CostModel(
            currency=currency,
            machine=price("machine", d.machine),
            machine_by_type=tuple(by_type),
            speed_exponent=price("speed_exponent", d.speed_exponent),
            buffer_slot=price("buffer_slot", d.buffer_slot),
            conveyor_metre=price("conveyor_metre", d.conveyor_metre),
            conveyor_speed=price("conveyor_speed", d.conveyor_speed),
            floor_m2=price("floor_m2", d.floor_m2),
            floor_margin=price("floor_margin", d.floor_margin),
        )

    def simulation(self, raw: Any) -> Simulation:
        path: PathKey = ("simulation",)
        m = self.mapping(
            raw, path, SIM_KEYS, "hours, warmup_hours, replications, seed, engine, batch"
        )
        d = Simulation()
        if m is None:
            return d
        hours = self.opt(m, "hours", path, d.hours, lambda v, p: self.number(v, p, gt=0))
        warm = self.opt(
            m, "warmup_hours", path, d.warmup_hours, lambda v, p: self.number(v, p, ge=0)
        )
        if warm >= hours:
            self.error((*path, "warmup_hours"), f"must be < hours ({hours:g}), got {warm:g}")
        return Simulation(
            hours=hours,
            warmup_hours=warm,
            replications=self.opt(
                m, "replications", path, d.replications, lambda v, p: self.integer(v, p, ge=1)
            ),
            seed=self.opt(m, "seed", path, d.seed, lambda v, p: self.integer(v, p, ge=0)),
            engine=self.opt(m, "engine", path, d.engine, lambda v, p: self.enum(v, p, Engine)),
            batch=self.opt(m, "batch", path, d.batch, lambda v, p: self.integer(v, p, ge=1)),
        )

    def nsga2(self, raw: Any) -> Nsga2:
        path: PathKey = ("nsga2",)
        m = self.mapping(
            raw, path, NSGA_KEYS, "population, crossover, mutation, eta_crossover, eta_mutation"
        )
        d = Nsga2()
        if m is None:
            return d

        def prob(v: Any, p: PathKey) -> float | None:
            x = self.number(v, p, ge=0)
            if x is not None and x > 1:
                self.error(p, f"must be a probability <= 1, got {x:g}")
                return None
            return x

        return Nsga2(
            population=self.opt(
                m, "population", path, d.population, lambda v, p: self.integer(v, p, ge=4)
            ),
            crossover=self.opt(m, "crossover", path, d.crossover, prob),
            mutation=self.opt(m, "mutation", path, d.mutation, prob),
            eta_crossover=self.opt(
                m, "eta_crossover", path, d.eta_crossover, lambda v, p: self.number(v, p, ge=0)
            ),
            eta_mutation=self.opt(
                m, "eta_mutation", path, d.eta_mutation, lambda v, p: self.number(v, p, ge=0)
            ),
        )

    def gradient(self, raw: Any) -> GradientSettings:
        path: PathKey = ("gradient",)
        m = self.mapping(
            raw, path, GRADIENT_KEYS, "refine, steps, step, cost_weight, parts, warmup_parts"
        )
        d = GradientSettings()
        if m is None:
            return d
        parts = self.opt(m, "parts", path, d.parts, lambda v, p: self.integer(v, p, ge=10))
        warm = self.opt(
            m, "warmup_parts", path, d.warmup_parts, lambda v, p: self.integer(v, p, ge=1)
        )
        if warm >= parts:
            self.error((*path, "warmup_parts"), f"must be < parts ({parts}), got {warm}")
        return GradientSettings(
            refine=self.opt(m, "refine", path, d.refine, lambda v, p: self.integer(v, p, ge=0)),
            steps=self.opt(m, "steps", path, d.steps, lambda v, p: self.integer(v, p, ge=1)),
            step=self.opt(m, "step", path, d.step, lambda v, p: self.number(v, p, gt=0)),
            cost_weight=self.opt(
                m, "cost_weight", path, d.cost_weight, lambda v, p: self.number(v, p, ge=0)
            ),
            parts=parts,
            warmup_parts=warm,
        )


def _check_target(spec: LineSpec, t: Target) -> str | None:
    """Why ``t`` does not exist in ``spec``, or None."""
    sids = [s.id for s in spec.stations]
    bids = [b.id for b in spec.buffers]
    if t.kind in (TargetKind.CAPACITY, TargetKind.SPEED):
        if t.ref not in bids:
            return f"unknown buffer '{t.ref}'; {hint(t.ref, bids, label='buffers')}"
        b = _buffer(spec, t.ref)
        if t.kind == TargetKind.SPEED and b.conveyor is None:
            return f"buffer '{t.ref}' has no conveyor"
        return None
    if t.ref not in sids:
        return f"unknown station '{t.ref}'; {hint(t.ref, sids, label='stations')}"
    s = spec.station(t.ref)
    if t.kind in (TargetKind.MTBF, TargetKind.MTTR) and s.failures is None:
        return f"station '{t.ref}' has no failures to vary"
    if t.kind == TargetKind.WEIGHT:
        if s.routing != RoutingPolicy.PROBABILITY:
            return f"station '{t.ref}' does not route by probability"
        keys = [k for k, _ in s.weights]
        if t.key not in keys:
            return f"'{t.key}' is not an outgoing buffer of '{t.ref}'; {hint(t.key, keys, label='buffers')}"
    return None


def _lower_bound(t: Target, lines: list[LineSpec]) -> tuple[float, bool]:
    """The smallest allowed value of ``t`` and whether it is excluded."""
    match t.kind:
        case TargetKind.SERVERS:
            return 1, False
        case TargetKind.CAPACITY:
            conv = any(
                _buffer(s, t.ref).conveyor is not None
                for s in lines
                if t.ref in [b.id for b in s.buffers]
            )
            return (1 if conv else 0), False
        case TargetKind.SCRAP | TargetKind.WEIGHT:
            return 0.0, False
    return 0.0, True


def _default_name(t: Target) -> str:
    if t.kind == TargetKind.LAYOUT:
        return LAYOUT
    base = f"{t.ref}_{t.key}" if t.key else f"{t.ref}_{t.kind.value}"
    return re.sub(r"[^A-Za-z0-9_]", "_", base if NAME_RE.match(base) else f"p_{base}")


_ALLOWED_NODES = (
    ast.Compare,
    ast.BinOp,
    ast.UnaryOp,
    ast.Name,
    ast.Constant,
    ast.Load,
    ast.Add,
    ast.Sub,
    ast.Mult,
    ast.Div,
    ast.USub,
    ast.UAdd,
    ast.LtE,
    ast.GtE,
    ast.Lt,
    ast.Gt,
)


def _check_expr(node: ast.AST) -> str | None:
    for n in ast.walk(node):
        if not isinstance(n, _ALLOWED_NODES):
            return f"only names, numbers, + - * / and parentheses are allowed (found {type(n).__name__})"
        if isinstance(n, ast.Constant) and (
            isinstance(n.value, bool) or not isinstance(n.value, int | float)
        ):
            return f"only numbers are allowed as constants, got {n.value!r}"
    return None


def _eval(node: ast.AST, values: Mapping[str, float]) -> float | bool:
    """Evaluate a checked expression (see :func:`_check_expr`)."""
    if isinstance(node, ast.Compare):
        a, b = _eval(node.left, values), _eval(node.comparators[0], values)
        op = node.ops[0]
        if isinstance(op, ast.LtE):
            return a <= b
        if isinstance(op, ast.GtE):
            return a >= b
        if isinstance(op, ast.Lt):
            return a < b
        return a > b
    if isinstance(node, ast.BinOp):
        a, b = float(_eval(node.left, values)), float(_eval(node.right, values))
        if isinstance(node.op, ast.Add):
            return a + b
        if isinstance(node.op, ast.Sub):
            return a - b
        if isinstance(node.op, ast.Mult):
            return a * b
        return a / b if b != 0 else math.inf
    if isinstance(node, ast.UnaryOp):
        v = float(_eval(node.operand, values))
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.Name):
        return float(values.get(node.id, math.nan))
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return float(node.value)
    raise ValueError(f"unexpected {type(node).__name__}")  # pragma: no cover
