"""Parse and validate line files (YAML) into :class:`scenes.spec.LineSpec`.

Every problem is collected, not only the first, and reported as ``file:line field.path: message``
inside one :class:`scenes.errors.LineFileError`. The format is documented in
``docs/line-format.md``.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from scenes import yamlpos
from scenes.errors import LineFileError, Problem
from scenes.spec import (
    Buffer,
    Conveyor,
    Distribution,
    DistKind,
    Failures,
    FailureMode,
    Geometry,
    LineSpec,
    Pose,
    Robot,
    RoutingPolicy,
    Source,
    Station,
    TagBinding,
)
from scenes.yamlpos import PathKey, format_path

ID_RE = re.compile(r"^[A-Za-z0-9_-]+$")
MESH_SUFFIXES = {".glb", ".gltf", ".stl", ".obj", ".ply"}
#: Default spacing of stations along x when a file gives no positions, metres.
AUTO_SPACING = 4.0

TOP_KEYS = ("line", "description", "stations", "buffers", "source", "sources")
STATION_KEYS = (
    "id",
    "type",
    "process_time",
    "servers",
    "scrap_rate",
    "failures",
    "routing",
    "position",
    "yaw_deg",
    "box",
    "mesh",
    "scale",
    "color",
    "tags",
    "robot",
)
BUFFER_KEYS = ("id", "from", "to", "capacity", "conveyor", "tags")
CONVEYOR_KEYS = ("length", "speed", "pitch", "width", "path")
FAILURE_KEYS = ("mtbf", "mttr", "mode")
ROUTING_KEYS = ("policy", "weights")
SOURCE_KEYS = ("feeds", "interarrival")
TAG_KEYS = ("address", "scale", "offset", "unit", "period_s", "min", "max")
ROBOT_KEYS = ("urdf", "position", "yaw_deg")
DIST_KEYS: dict[str, tuple[str, ...]] = {
    "deterministic": ("value",),
    "exponential": ("mean",),
    "lognormal": ("mean", "cv"),
    "uniform": ("low", "high"),
    "gamma": ("mean", "cv"),
    "empirical": ("values",),
}


def load_line(path: str | Path, *, check_meshes: bool = True) -> LineSpec:
    """Read, parse and validate a line file. Raises :class:`LineFileError`."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise LineFileError([Problem(file=str(p), line=0, path="", message=str(exc))]) from exc
    except UnicodeDecodeError as exc:
        msg = f"not UTF-8 text: {exc.reason}"
        raise LineFileError([Problem(file=str(p), line=0, path="", message=msg)]) from exc
    return parse_line(text, filename=str(p), base_dir=p.parent, check_meshes=check_meshes)


def parse_line(
    text: str,
    *,
    filename: str = "<string>",
    base_dir: str | Path | None = None,
    check_meshes: bool = True,
) -> LineSpec:
    """Parse line-file text. Relative mesh paths resolve against ``base_dir``."""
    try:
        doc = yamlpos.load(text)
    except yamlpos.YamlSyntaxError as exc:
        raise LineFileError([Problem(file=filename, line=exc.line, path="", message=exc.message)])
    reader = _Reader(doc, filename, Path(base_dir) if base_dir is not None else None, check_meshes)
    spec = reader.line()
    if reader.problems:
        raise LineFileError(reader.problems)
    assert spec is not None  # a None spec always comes with a problem
    return spec


class _Reader:
    """Walks the document, converting fields and collecting problems."""

    def __init__(self, doc: yamlpos.Located, filename: str, base: Path | None, meshes: bool):
        self.doc = doc
        self.file = filename
        self.base = base
        self.check_meshes = meshes
        self.problems: list[Problem] = []
        for dup_path, line in doc.duplicates:
            self.problems.append(
                Problem(file=filename, line=line, path=format_path(dup_path), message="duplicate key")
            )

    # -- reporting -----------------------------------------------------------------------------
    def error(self, path: PathKey, message: str) -> None:
        self.problems.append(
            Problem(file=self.file, line=self.doc.line(path), path=format_path(path), message=message)
        )

    # -- generic field readers -----------------------------------------------------------------
    def mapping(self, value: Any, path: PathKey, allowed: Iterable[str], what: str) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            self.error(path, f"must be a mapping ({what}), got {_type_name(value)}")
            return None
        allowed = tuple(allowed)
        for key in value:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
                hint = f"; did you mean '{close[0]}'?" if close else f"; allowed: {', '.join(allowed)}"
                self.error((*path, str(key)), f"unknown field{hint}")
        return value

    def require(self, m: Mapping[str, Any], key: str, path: PathKey) -> Any:
        if key not in m:
            self.error(path, f"missing required field '{key}'")
            return None
        return m[key]

    def number(
        self,
        value: Any,
        path: PathKey,
        *,
        gt: float | None = None,
        ge: float | None = None,
        lt: float | None = None,
        le: float | None = None,
    ) -> float | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.error(path, f"must be a number, got {_type_name(value)}")
            return None
        v = float(value)
        if not math.isfinite(v):
            self.error(path, "must be a finite number")
            return None
        for bound, ok, word in (
            (gt, lambda b: v > b, ">"),
            (ge, lambda b: v >= b, ">="),
            (lt, lambda b: v < b, "<"),
            (le, lambda b: v <= b, "<="),
        ):
            if bound is not None and not ok(bound):
                self.error(path, f"must be {word} {_fmt(bound)}, got {_fmt(v)}")
                return None
        return v

    def integer(self, value: Any, path: PathKey, *, ge: int) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                self.error(path, f"must be a whole number, got {_type_name(value)}")
                return None
        if value < ge:
            self.error(path, f"must be >= {ge}, got {value}")
            return None
        return int(value)

    def string(self, value: Any, path: PathKey) -> str | None:
        if not isinstance(value, str) or not value:
            self.error(path, f"must be a non-empty string, got {_type_name(value)}")
            return None
        return value

    def ident(self, value: Any, path: PathKey) -> str | None:
        s = self.string(value, path)
        if s is not None and not ID_RE.match(s):
            self.error(path, f"'{s}' is not a valid id (letters, digits, '_' or '-')")
            return None
        return s

    def vector(self, value: Any, path: PathKey, n: int, *, gt: float | None = None) -> tuple[float, ...] | None:
        if not isinstance(value, list) or len(value) != n:
            self.error(path, f"must be a list of {n} numbers, got {_type_name(value)}")
            return None
        out = [self.number(v, (*path, i), gt=gt) for i, v in enumerate(value)]
        if any(v is None for v in out):
            return None
        return tuple(v for v in out if v is not None)

    def enum(self, value: Any, path: PathKey, enum: type[Any]) -> Any:
        choices = [e.value for e in enum]
        if value not in choices:
            close = difflib.get_close_matches(str(value), choices, n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            self.error(path, f"must be one of {', '.join(choices)}, got {value!r}{hint}")
            return None
        return enum(value)

    # -- the document ----------------------------------------------------------------------------
    def line(self) -> LineSpec | None:
        top = self.mapping(self.doc.value, (), TOP_KEYS, "a line file")
        if top is None:
            return None
        name = self.string(self.require(top, "line", ()), ("line",)) if "line" in top else None
        if "line" not in top:
            self.require(top, "line", ())
        description = top.get("description", "")
        if not isinstance(description, str):
            self.error(("description",), "must be a string")
            description = ""

        raw_stations = self.require(top, "stations", ())
        stations: list[Station] = []
        if raw_stations is not None:
            if not isinstance(raw_stations, list) or not raw_stations:
                self.error(("stations",), "must be a non-empty list of stations")
            else:
                for i, raw in enumerate(raw_stations):
                    st = self.station(raw, ("stations", i), i)
                    if st is not None:
                        stations.append(st)
        ids = self._unique_ids(raw_stations, "stations")

        raw_buffers = top.get("buffers", [])
        buffers: list[Buffer] = []
        if raw_buffers is None:
            raw_buffers = []
        if not isinstance(raw_buffers, list):
            self.error(("buffers",), "must be a list of buffers")
            raw_buffers = []
        for i, raw in enumerate(raw_buffers):
            buf = self.buffer(raw, ("buffers", i), ids, stations)
            if buf is not None:
                buffers.append(buf)
        self._unique_ids(raw_buffers, "buffers", taken=ids)

        sources = self.sources(top, ids)
        stations = self.routing_checks(stations, buffers, raw_stations)
        if not self.problems:
            self.topology_checks(stations, buffers, sources)
        if name is None or self.problems:
            return None
        return LineSpec(
            name=name,
            stations=tuple(stations),
            buffers=tuple(buffers),
            sources=tuple(sources),
            description=description,
            path=self.file,
        )

    def _unique_ids(self, raw: Any, key: str, taken: set[str] | None = None) -> set[str]:
        seen: dict[str, int] = {}
        if not isinstance(raw, list):
            return set()
        for i, item in enumerate(raw):
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                ident = item["id"]
                if ident in seen:
                    self.error((key, i, "id"), f"duplicate id '{ident}' (first used at {key}[{seen[ident]}])")
                elif taken is not None and ident in taken:
                    self.error((key, i, "id"), f"id '{ident}' is already a station id")
                else:
                    seen[ident] = i
        return set(seen)

    def distribution(self, value: Any, path: PathKey, *, positive_mean: bool = True) -> Distribution | None:
        if isinstance(value, int | float) and not isinstance(value, bool):
            v = self.number(value, path, gt=0)
            return Distribution.deterministic(v) if v is not None else None
        if not isinstance(value, dict):
            self.error(path, f"must be a number of seconds or a distribution mapping, got {_type_name(value)}")
            return None
        kind_raw = value.get("dist")
        if kind_raw is None:
            self.error(path, "missing required field 'dist' (" + ", ".join(DIST_KEYS) + ")")
            return None
        kind = self.enum(kind_raw, (*path, "dist"), DistKind)
        if kind is None:
            return None
        m = self.mapping(value, path, ("dist", *DIST_KEYS[kind.value]), f"a {kind.value} distribution")
        if m is None:
            return None
        fields = {k: self.require(m, k, path) for k in DIST_KEYS[kind.value]}
        if any(v is None for v in fields.values()):
            return None
        match kind:
            case DistKind.DETERMINISTIC:
                v = self.number(fields["value"], (*path, "value"), gt=0)
                return Distribution.deterministic(v) if v is not None else None
            case DistKind.EXPONENTIAL:
                mean = self.number(fields["mean"], (*path, "mean"), gt=0)
                return Distribution.exponential(mean) if mean is not None else None
            case DistKind.LOGNORMAL | DistKind.GAMMA:
                mean = self.number(fields["mean"], (*path, "mean"), gt=0)
                cv = self.number(fields["cv"], (*path, "cv"), gt=0, le=10)
                if mean is None or cv is None:
                    return None
                return Distribution(kind=kind, mean=mean, cv=cv)
            case DistKind.UNIFORM:
                low = self.number(fields["low"], (*path, "low"), ge=0)
                high = self.number(fields["high"], (*path, "high"), gt=0)
                if low is None or high is None:
                    return None
                if high <= low:
                    self.error((*path, "high"), f"must be > low ({_fmt(low)}), got {_fmt(high)}")
                    return None
                return Distribution(kind=kind, mean=(low + high) / 2, low=low, high=high)
            case DistKind.EMPIRICAL:
                raw = fields["values"]
                if not isinstance(raw, list) or not raw:
                    self.error((*path, "values"), "must be a non-empty list of numbers")
                    return None
                vals = [self.number(v, (*path, "values", i), ge=0) for i, v in enumerate(raw)]
                if any(v is None for v in vals):
                    return None
                clean = tuple(float(v) for v in vals if v is not None)
                mean = sum(clean) / len(clean)
                if positive_mean and mean <= 0:
                    self.error((*path, "values"), "must have a mean > 0")
                    return None
                return Distribution(kind=kind, mean=mean, values=clean)
        return None  # pragma: no cover

    def pose(self, m: Mapping[str, Any], path: PathKey, default_x: float) -> Pose:
        pos = (default_x, 0.0, 0.0)
        if "position" in m:
            v = self.vector(m["position"], (*path, "position"), 3)
            pos = (v[0], v[1], v[2]) if v is not None else pos
        yaw = 0.0
        if "yaw_deg" in m:
            y = self.number(m["yaw_deg"], (*path, "yaw_deg"))
            yaw = y if y is not None else 0.0
        return Pose(position=pos, yaw_deg=yaw)

    def geometry(self, m: Mapping[str, Any], path: PathKey) -> Geometry:
        scale = 1.0
        if "scale" in m:
            s = self.number(m["scale"], (*path, "scale"), gt=0)
            scale = s if s is not None else 1.0
        color = None
        if "color" in m:
            color = self.string(m["color"], (*path, "color"))
        if "box" in m and "mesh" in m:
            self.error((*path, "mesh"), "give either 'box' or 'mesh', not both")
        if "mesh" in m:
            mesh = self.string(m["mesh"], (*path, "mesh"))
            if mesh is not None:
                mesh = self.mesh_file(mesh, (*path, "mesh"))
            return Geometry(mesh=mesh, scale=scale, color=color)
        box = (1.5, 1.5, 1.5)
        if "box" in m:
            v = self.vector(m["box"], (*path, "box"), 3, gt=0)
            box = (v[0], v[1], v[2]) if v is not None else box
        return Geometry(box=box, scale=scale, color=color)

    def mesh_file(self, name: str, path: PathKey) -> str | None:
        p = Path(name)
        if not p.is_absolute() and self.base is not None:
            p = self.base / p
        if p.suffix.lower() not in MESH_SUFFIXES:
            self.error(path, f"unsupported mesh format '{p.suffix}' (use {', '.join(sorted(MESH_SUFFIXES))})")
            return None
        if not self.check_meshes:
            return str(p)
        if not p.is_file():
            self.error(path, f"mesh file not found: {p}")
            return None
        from scenes.assets import MeshLoadError, load_mesh  # trimesh is imported only here

        try:
            load_mesh(p)
        except MeshLoadError as exc:
            self.error(path, f"mesh does not load: {exc}")
            return None
        return str(p)

    def tags(self, value: Any, path: PathKey) -> tuple[tuple[str, TagBinding], ...]:
        if not isinstance(value, dict):
            self.error(path, f"must be a mapping of tag name to address, got {_type_name(value)}")
            return ()
        out: list[tuple[str, TagBinding]] = []
        for key, raw in value.items():
            kp = (*path, str(key))
            if not isinstance(key, str) or not ID_RE.match(key):
                self.error(kp, "tag names are letters, digits, '_' or '-'")
                continue
            if isinstance(raw, str):
                if raw:
                    out.append((key, TagBinding(address=raw)))
                else:
                    self.error(kp, "must be a non-empty address")
                continue
            m = self.mapping(raw, kp, TAG_KEYS, "a tag binding")
            if m is None:
                continue
            address = self.string(self.require(m, "address", kp), (*kp, "address"))
            nums: dict[str, float | None] = {}
            for f in ("scale", "offset", "min", "max"):
                if f in m:
                    nums[f] = self.number(m[f], (*kp, f))
            period = self.number(m["period_s"], (*kp, "period_s"), gt=0) if "period_s" in m else None
            unit = self.string(m["unit"], (*kp, "unit")) if "unit" in m else None
            lo, hi = nums.get("min"), nums.get("max")
            if lo is not None and hi is not None and hi < lo:
                self.error((*kp, "max"), f"must be >= min ({_fmt(lo)})")
            if address is None:
                continue
            out.append(
                (
                    key,
                    TagBinding(
                        address=address,
                        scale=_or(nums.get("scale"), 1.0),
                        offset=_or(nums.get("offset"), 0.0),
                        unit=unit,
                        period_s=period,
                        min=lo,
                        max=hi,
                    ),
                )
            )
        return tuple(out)

    def station(self, raw: Any, path: PathKey, index: int) -> Station | None:
        m = self.mapping(raw, path, STATION_KEYS, "a station")
        if m is None:
            return None
        ident = self.ident(self.require(m, "id", path), (*path, "id")) if "id" in m else None
        if "id" not in m:
            self.require(m, "id", path)
        pt = (
            self.distribution(m["process_time"], (*path, "process_time"))
            if "process_time" in m
            else self.require(m, "process_time", path)
        )
        servers = self.integer(m.get("servers", 1), (*path, "servers"), ge=1)
        scrap = self.number(m.get("scrap_rate", 0.0), (*path, "scrap_rate"), ge=0, lt=1)
        stype = self.ident(m.get("type", "machine"), (*path, "type"))
        failures = None
        if "failures" in m and m["failures"] is not None:
            fp = (*path, "failures")
            fm = self.mapping(m["failures"], fp, FAILURE_KEYS, "mtbf, mttr, mode")
            if fm is not None:
                mtbf = self.number(self.require(fm, "mtbf", fp), (*fp, "mtbf"), gt=0) if "mtbf" in fm else self.require(fm, "mtbf", fp)
                mttr = self.number(self.require(fm, "mttr", fp), (*fp, "mttr"), gt=0) if "mttr" in fm else self.require(fm, "mttr", fp)
                mode = self.enum(fm.get("mode", "operation"), (*fp, "mode"), FailureMode)
                if mtbf is not None and mttr is not None and mode is not None:
                    failures = Failures(mtbf=mtbf, mttr=mttr, mode=mode)
        robot = None
        if "robot" in m:
            rp = (*path, "robot")
            rm = self.mapping(m["robot"], rp, ROBOT_KEYS, "urdf, position, yaw_deg")
            if rm is not None:
                urdf = self.string(self.require(rm, "urdf", rp), (*rp, "urdf")) if "urdf" in rm else self.require(rm, "urdf", rp)
                if isinstance(urdf, str):
                    robot = Robot(urdf=urdf, pose=self.pose(rm, rp, 0.0))
        tags = self.tags(m["tags"], (*path, "tags")) if "tags" in m else ()
        pose = self.pose(m, path, index * AUTO_SPACING)
        geometry = self.geometry(m, path)
        if ident is None or not isinstance(pt, Distribution) or servers is None or scrap is None or stype is None:
            return None
        return Station(
            id=ident,
            type=stype,
            process_time=pt,
            servers=servers,
            scrap_rate=scrap,
            failures=failures,
            pose=pose,
            geometry=geometry,
            tags=tags,
            robot=robot,
            line=self.doc.line(path),
        )

    def buffer(self, raw: Any, path: PathKey, ids: set[str], stations: list[Station]) -> Buffer | None:
        m = self.mapping(raw, path, BUFFER_KEYS, "a buffer")
        if m is None:
            return None
        ident = self.ident(self.require(m, "id", path), (*path, "id")) if "id" in m else self.require(m, "id", path)
        ends: dict[str, str | None] = {}
        for end in ("from", "to"):
            if end not in m:
                self.require(m, end, path)
                ends[end] = None
                continue
            sid = self.ident(m[end], (*path, end))
            if sid is not None and sid not in ids:
                close = difflib.get_close_matches(sid, sorted(ids), n=1, cutoff=0.6)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                self.error((*path, end), f"unknown station '{sid}'{hint}")
                sid = None
            ends[end] = sid
        if ends.get("from") is not None and ends.get("from") == ends.get("to"):
            self.error((*path, "to"), "a buffer cannot lead from a station back to itself")
        conveyor = None
        if "conveyor" in m:
            conveyor = self.conveyor(m["conveyor"], (*path, "conveyor"))
        if "capacity" in m:
            cap = self.integer(m["capacity"], (*path, "capacity"), ge=0)
            if cap == 0 and conveyor is not None:
                self.error((*path, "capacity"), "a conveyor holds at least one part (capacity >= 1)")
        elif conveyor is not None:
            cap = conveyor.slots
        else:
            cap = self.require(m, "capacity", path)
        tags = self.tags(m["tags"], (*path, "tags")) if "tags" in m else ()
        src, dst = ends.get("from"), ends.get("to")
        if not isinstance(ident, str) or src is None or dst is None or not isinstance(cap, int):
            return None
        if "conveyor" in m and conveyor is None:
            return None
        return Buffer(id=ident, source=src, target=dst, capacity=cap, conveyor=conveyor, tags=tags, line=self.doc.line(path))

    def conveyor(self, raw: Any, path: PathKey) -> Conveyor | None:
        m = self.mapping(raw, path, CONVEYOR_KEYS, "length, speed, pitch, width, path")
        if m is None:
            return None
        vals: dict[str, float | None] = {}
        for key in ("length", "speed"):
            vals[key] = self.number(m[key], (*path, key), gt=0) if key in m else self.require(m, key, path)
        pitch = self.number(m.get("pitch", 0.5), (*path, "pitch"), gt=0)
        width = self.number(m.get("width", 0.6), (*path, "width"), gt=0)
        pts: list[tuple[float, float, float]] = []
        if "path" in m:
            rp = m["path"]
            if not isinstance(rp, list) or len(rp) < 2:
                self.error((*path, "path"), "must be a list of at least two [x, y, z] points")
            else:
                for i, pt in enumerate(rp):
                    v = self.vector(pt, (*path, "path", i), 3)
                    if v is not None:
                        pts.append((v[0], v[1], v[2]))
        length, speed = vals.get("length"), vals.get("speed")
        if length is None or speed is None or pitch is None or width is None:
            return None
        if pitch > length:
            self.error((*path, "pitch"), f"must be <= length ({_fmt(length)})")
            return None
        return Conveyor(length=length, speed=speed, pitch=pitch, width=width, path=tuple(pts))

    def sources(self, top: Mapping[str, Any], ids: set[str]) -> list[Source]:
        raws: list[tuple[PathKey, Any]] = []
        if "source" in top and "sources" in top:
            self.error(("sources",), "give either 'source' or 'sources', not both")
        if "source" in top:
            raws.append((("source",), top["source"]))
        if "sources" in top:
            if not isinstance(top["sources"], list):
                self.error(("sources",), "must be a list of sources")
            else:
                raws.extend((("sources", i), s) for i, s in enumerate(top["sources"]))
        out: list[Source] = []
        fed: set[str] = set()
        for path, raw in raws:
            m = self.mapping(raw, path, SOURCE_KEYS, "feeds, interarrival")
            if m is None:
                continue
            feeds = self.ident(self.require(m, "feeds", path), (*path, "feeds")) if "feeds" in m else self.require(m, "feeds", path)
            ia = self.distribution(m["interarrival"], (*path, "interarrival")) if "interarrival" in m else self.require(m, "interarrival", path)
            if isinstance(feeds, str) and feeds not in ids:
                self.error((*path, "feeds"), f"unknown station '{feeds}'")
                continue
            if isinstance(feeds, str) and feeds in fed:
                self.error((*path, "feeds"), f"station '{feeds}' already has a source")
                continue
            if isinstance(feeds, str) and isinstance(ia, Distribution):
                fed.add(feeds)
                out.append(Source(feeds=feeds, interarrival=ia))
        return out

    def routing_checks(self, stations: list[Station], buffers: list[Buffer], raw_stations: Any) -> list[Station]:
        """Read each station's ``routing`` now that its outgoing buffers are known."""
        out: list[Station] = []
        raws = raw_stations if isinstance(raw_stations, list) else []
        by_id = {r.get("id"): (i, r) for i, r in enumerate(raws) if isinstance(r, dict)}
        for st in stations:
            i, raw = by_id.get(st.id, (0, {}))
            path: PathKey = ("stations", i, "routing")
            outs = [b.id for b in buffers if b.source == st.id]
            if "routing" not in raw:
                out.append(st)
                continue
            value = raw["routing"]
            weights: tuple[tuple[str, float], ...] = ()
            if isinstance(value, str):
                policy = self.enum(value, path, RoutingPolicy)
            else:
                m = self.mapping(value, path, ROUTING_KEYS, "policy, weights")
                if m is None:
                    out.append(st)
                    continue
                policy = self.enum(self.require(m, "policy", path), (*path, "policy"), RoutingPolicy) if "policy" in m else self.require(m, "policy", path)
                if "weights" in m:
                    weights = self.weights(m["weights"], (*path, "weights"), outs)
            if policy == RoutingPolicy.PROBABILITY and not weights:
                self.error(path, "policy 'probability' needs weights: {BUFFER_ID: weight, ...}")
            if weights and policy != RoutingPolicy.PROBABILITY:
                self.error((*path, "weights"), "weights are only used with policy 'probability'")
            if policy is None:
                out.append(st)
                continue
            out.append(_replace_station(st, routing=policy, weights=weights))
        return out

    def weights(self, value: Any, path: PathKey, outs: list[str]) -> tuple[tuple[str, float], ...]:
        if not isinstance(value, dict) or not value:
            self.error(path, "must be a mapping of outgoing buffer id to weight")
            return ()
        result: list[tuple[str, float]] = []
        for key, w in value.items():
            if key not in outs:
                self.error((*path, str(key)), f"'{key}' is not an outgoing buffer of this station ({', '.join(outs) or 'none'})")
                continue
            v = self.number(w, (*path, str(key)), ge=0)
            if v is not None:
                result.append((str(key), v))
        missing = [b for b in outs if b not in value]
        if missing and not self.problems:
            self.error(path, f"no weight for outgoing buffer(s) {', '.join(missing)}")
        if result and sum(w for _, w in result) <= 0:
            self.error(path, "weights must not all be zero")
        return tuple(result)

    def topology_checks(self, stations: list[Station], buffers: list[Buffer], sources: list[Source]) -> None:
        ids = [s.id for s in stations]
        index = {s: i for i, s in enumerate(ids)}
        succ: dict[str, list[str]] = {s: [] for s in ids}
        has_in = {s: False for s in ids}
        for b in buffers:
            succ[b.source].append(b.target)
            has_in[b.target] = True
        fed = {s.feeds for s in sources}
        roots = [s for s in ids if not has_in[s] or s in fed]
        reach = _reachable(roots, succ)
        for s in ids:
            if s not in reach:
                self.error(("stations", index[s], "id"), f"station '{s}' is unreachable: no source feeds it and no path leads to it from one")
        # A station can reach the sink if it has no outgoing buffer or reaches one that does.
        pred: dict[str, list[str]] = {s: [] for s in ids}
        for b in buffers:
            pred[b.target].append(b.source)
        exits = [s for s in ids if not succ[s]]
        can_exit = _reachable(exits, pred)
        trapped = [s for s in ids if s not in can_exit]
        if trapped:
            for s in trapped:
                self.error(("stations", index[s], "id"), f"station '{s}' is on a cycle without a way out: parts can never reach the sink")
        if not exits and not trapped:  # pragma: no cover - implied by the check above
            self.error(("buffers",), "no station delivers to the sink")


def _reachable(roots: Iterable[str], succ: Mapping[str, list[str]]) -> set[str]:
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        stack.extend(succ[n])
    return seen


def _replace_station(st: Station, **changes: Any) -> Station:
    from dataclasses import replace

    return replace(st, **changes)


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def _type_name(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, int | float):
        return f"a number ({value})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _fmt(v: float) -> str:
    return f"{v:g}"


def problems_of(fn: Callable[[], Any]) -> list[Problem]:
    """Run ``fn`` and return the problems of the :class:`LineFileError` it raises (for tests)."""
    try:
        fn()
    except LineFileError as exc:
        return exc.problems
    return []
