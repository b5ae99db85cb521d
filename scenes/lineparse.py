"""Parse and validate line files (YAML) into :class:`scenes.spec.LineSpec`.

Every problem is collected, not only the first, and reported as ``file:line field.path: message``
inside one :class:`scenes.errors.LineFileError`. Whatever the input, :func:`parse_line` returns a
complete :class:`LineSpec` or raises :class:`LineFileError`; it raises nothing else. The format
is documented in ``docs/line-format.md``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import replace
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from scenes import yamlpos
from scenes.errors import LineFileError, Problem
from scenes.fields import FieldReader, read_text, type_name
from scenes.spec import (
    Buffer,
    Conveyor,
    DistKind,
    Distribution,
    FailureMode,
    Failures,
    Geometry,
    LineSpec,
    Pose,
    Robot,
    RoutingPolicy,
    Source,
    Station,
    TagBinding,
)
from scenes.yamlpos import PathKey

ID_RE = re.compile(r"[A-Za-z0-9_-]+")
MESH_SUFFIXES = frozenset({".glb", ".gltf", ".stl", ".obj", ".ply"})
#: Default spacing of stations along x when a file gives no positions, metres.
AUTO_SPACING = 4.0
#: Default station geometry: a box of this size, metres.
DEFAULT_BOX = (1.5, 1.5, 1.5)
#: Conveyor defaults, metres.
DEFAULT_PITCH = 0.5
DEFAULT_WIDTH = 0.6
#: Upper bound on the coefficient of variation of lognormal and gamma times.
MAX_CV = 10.0

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

T = TypeVar("T")
E = TypeVar("E", bound=StrEnum)


def load_line(path: str | Path, *, check_meshes: bool = True) -> LineSpec:
    """Read, parse and validate a line file. Raises :class:`LineFileError`."""
    p = Path(path)
    text = read_text(p, LineFileError)
    return parse_line(text, filename=str(p), base_dir=p.parent, check_meshes=check_meshes)


def parse_line(
    text: str,
    *,
    filename: str = "<string>",
    base_dir: str | Path | None = None,
    check_meshes: bool = True,
) -> LineSpec:
    """Parse line-file text. Relative mesh paths resolve against ``base_dir`` (else the cwd).

    With ``check_meshes=False`` mesh files are neither looked for nor loaded.
    """
    try:
        doc = yamlpos.load(text)
    except yamlpos.YamlSyntaxError as exc:
        problem = Problem(file=filename, line=exc.line, path="", message=exc.message)
        raise LineFileError([problem]) from exc
    base = Path(base_dir) if base_dir is not None else None
    reader = _Reader(doc, filename, base, check_meshes)
    spec = reader.line()
    if reader.problems:
        raise LineFileError(reader.problems)
    if spec is None:  # pragma: no cover - every path that gives no spec reports a problem
        msg = "internal error: the line could not be built (please report this file)"
        raise LineFileError([Problem(file=filename, line=0, path="", message=msg)])
    return spec


class _Reader(FieldReader):
    """Walks a line file, converting fields and collecting problems (see
    :class:`scenes.fields.FieldReader`)."""

    def __init__(self, doc: yamlpos.Located, filename: str, base: Path | None, meshes: bool):
        super().__init__(doc, filename)
        self.base = base
        self.check_meshes = meshes

    def ident(self, value: Any, path: PathKey) -> str | None:
        s = self.string(value, path)
        if s is not None and not ID_RE.fullmatch(s):
            self.error(path, f"{s!r} is not a valid id (letters, digits, '_' or '-')")
            return None
        return s

    def vector(
        self, value: Any, path: PathKey, n: int, *, gt: float | None = None
    ) -> tuple[float, ...] | None:
        if not isinstance(value, list) or len(value) != n:
            got = f"a list of {len(value)}" if isinstance(value, list) else type_name(value)
            self.error(path, f"must be a list of {n} numbers, got {got}")
            return None
        out = [self.number(v, (*path, i), gt=gt) for i, v in enumerate(value)]
        if any(v is None for v in out):
            return None
        return tuple(v for v in out if v is not None)

    def point(self, value: Any, path: PathKey) -> tuple[float, float, float] | None:
        v = self.vector(value, path, 3)
        return (v[0], v[1], v[2]) if v is not None else None

    def enum(self, value: Any, path: PathKey, enum: type[E]) -> E | None:
        choices = [e.value for e in enum]
        if not isinstance(value, str) or value not in choices:
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
        name = self.field(top, "line", (), self.string)
        description = top.get("description", "")
        if not isinstance(description, str):
            self.error(("description",), f"must be a string, got {type_name(description)}")
            description = ""

        raw_stations: list[Any] = []
        if "stations" not in top:
            self.missing((), "stations")
        elif not isinstance(top["stations"], list) or not top["stations"]:
            got = type_name(top["stations"])
            self.error(("stations",), f"must be a non-empty list of stations, got {got}")
        else:
            raw_stations = top["stations"]
        stations: list[tuple[int, Station]] = []
        for i, raw in enumerate(raw_stations):
            st = self.station(raw, ("stations", i), i)
            if st is not None:
                stations.append((i, st))
        ids = self._unique_ids(raw_stations, "stations")
        # Without a usable station list, references to stations cannot be checked.
        known = ids if raw_stations else None

        raw_buffers = top.get("buffers")
        if raw_buffers is None:
            raw_buffers = []
        elif not isinstance(raw_buffers, list):
            self.error(("buffers",), f"must be a list of buffers, got {type_name(raw_buffers)}")
            raw_buffers = []
        buffers: list[Buffer] = []
        for i, raw in enumerate(raw_buffers):
            buf = self.buffer(raw, ("buffers", i), known)
            if buf is not None:
                buffers.append(buf)
        self._unique_ids(raw_buffers, "buffers", taken=ids)

        sources = self.sources(top, known)
        routed = [(i, self.routing(st, raw_stations[i], i, buffers)) for i, st in stations]
        if self.problems or name is None:
            return None
        final = [st for _, st in routed]
        self.topology_checks(final, buffers, sources)
        if self.problems:
            return None
        return LineSpec(
            name=name,
            stations=tuple(final),
            buffers=tuple(buffers),
            sources=tuple(sources),
            description=description,
            path=self.file,
        )

    def _unique_ids(self, raw: list[Any], key: str, taken: set[str] | None = None) -> set[str]:
        seen: dict[str, int] = {}
        for i, item in enumerate(raw):
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                ident = item["id"]
                if ident in seen:
                    self.error(
                        (key, i, "id"),
                        f"duplicate id '{ident}' (first used at {key}[{seen[ident]}])",
                    )
                elif taken is not None and ident in taken:
                    self.error((key, i, "id"), f"id '{ident}' is already a station id")
                else:
                    seen[ident] = i
        return set(seen)

    def distribution(self, value: Any, path: PathKey) -> Distribution | None:
        if isinstance(value, int | float) and not isinstance(value, bool):
            v = self.positive(value, path)
            return Distribution.deterministic(v) if v is not None else None
        if not isinstance(value, dict):
            self.error(
                path,
                f"must be a number of seconds or a distribution mapping, got {type_name(value)}",
            )
            return None
        if "dist" not in value:
            any_dist = ("dist", *sorted({k for keys in DIST_KEYS.values() for k in keys}))
            self.mapping(value, path, any_dist, "a distribution")
            if (path, "dist") not in self.suggested:
                self.error(path, "missing required field 'dist' (" + ", ".join(DIST_KEYS) + ")")
            return None
        kind = self.enum(value["dist"], (*path, "dist"), DistKind)
        if kind is None:
            return None
        m = self.mapping(
            value, path, ("dist", *DIST_KEYS[kind.value]), f"a {kind.value} distribution"
        )
        missing = [k for k in DIST_KEYS[kind.value] if k not in value]
        for k in missing:
            self.missing(path, k)
        if m is None or missing:
            return None
        match kind:
            case DistKind.DETERMINISTIC:
                v = self.positive(m["value"], (*path, "value"))
                return Distribution.deterministic(v) if v is not None else None
            case DistKind.EXPONENTIAL:
                mean = self.positive(m["mean"], (*path, "mean"))
                return Distribution.exponential(mean) if mean is not None else None
            case DistKind.LOGNORMAL | DistKind.GAMMA:
                mean = self.positive(m["mean"], (*path, "mean"))
                cv = self.number(m["cv"], (*path, "cv"), gt=0, le=MAX_CV)
                if mean is None or cv is None:
                    return None
                return Distribution(kind=kind, mean=mean, cv=cv)
            case DistKind.UNIFORM:
                low = self.number(m["low"], (*path, "low"), ge=0)
                high = self.positive(m["high"], (*path, "high"))
                if low is None or high is None:
                    return None
                if high <= low:
                    self.error((*path, "high"), f"must be > low ({_fmt(low)}), got {_fmt(high)}")
                    return None
                return Distribution(kind=kind, mean=(low + high) / 2, low=low, high=high)
            case DistKind.EMPIRICAL:
                raw = m["values"]
                if not isinstance(raw, list) or not raw:
                    got = type_name(raw)
                    self.error((*path, "values"), f"must be a non-empty list of numbers, got {got}")
                    return None
                vals = [self.number(v, (*path, "values", i), ge=0) for i, v in enumerate(raw)]
                clean = tuple(v for v in vals if v is not None)
                if len(clean) != len(vals):
                    return None
                mean = sum(clean) / len(clean)
                if mean <= 0:
                    self.error((*path, "values"), "must have a mean > 0")
                    return None
                return Distribution(kind=kind, mean=mean, values=clean)
        raise AssertionError(kind)  # pragma: no cover - exhaustive match

    def pose(self, m: Mapping[Any, Any], path: PathKey, default_x: float) -> Pose:
        pos: tuple[float, float, float] = (default_x, 0.0, 0.0)
        if "position" in m:
            pos = self.point(m["position"], (*path, "position")) or pos
        yaw = 0.0
        if "yaw_deg" in m:
            y = self.number(m["yaw_deg"], (*path, "yaw_deg"))
            yaw = y if y is not None else 0.0
        return Pose(position=pos, yaw_deg=yaw)

    def geometry(self, m: Mapping[Any, Any], path: PathKey) -> Geometry:
        scale = 1.0
        if "scale" in m:
            scale = self.positive(m["scale"], (*path, "scale")) or 1.0
        color = self.string(m["color"], (*path, "color")) if "color" in m else None
        if "box" in m and "mesh" in m:
            self.error((*path, "mesh"), "give either 'box' or 'mesh', not both")
        if "mesh" in m:
            mesh = self.string(m["mesh"], (*path, "mesh"))
            if mesh is not None:
                mesh = self.mesh_file(mesh, (*path, "mesh"))
            return Geometry(mesh=mesh, scale=scale, color=color)
        box = DEFAULT_BOX
        if "box" in m:
            v = self.vector(m["box"], (*path, "box"), 3, gt=0)
            box = (v[0], v[1], v[2]) if v is not None else box
        return Geometry(box=box, scale=scale, color=color)

    def mesh_file(self, name: str, path: PathKey) -> str | None:
        p = Path(name)
        if not p.is_absolute() and self.base is not None:
            p = self.base / p
        if p.suffix.lower() not in MESH_SUFFIXES:
            formats = ", ".join(sorted(MESH_SUFFIXES))
            self.error(path, f"unsupported mesh format '{p.suffix}' (use {formats})")
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
            self.error(path, f"must be a mapping of tag name to address, got {type_name(value)}")
            return ()
        out: list[tuple[str, TagBinding]] = []
        for key, raw in value.items():
            kp = (*path, str(key))
            if not isinstance(key, str) or not ID_RE.fullmatch(key):
                self.error(kp, "tag names are letters, digits, '_' or '-'")
                continue
            if isinstance(raw, str):
                if raw:
                    out.append((key, TagBinding(address=raw)))
                else:
                    self.error(kp, "must be a non-empty address")
                continue
            m = self.mapping(raw, kp, TAG_KEYS, "an address or a tag binding")
            if m is None:
                continue
            address = self.field(m, "address", kp, self.string)
            nums: dict[str, float | None] = {}
            for f in ("scale", "offset", "min", "max"):
                if f in m:
                    nums[f] = self.number(m[f], (*kp, f))
            period = self.positive(m["period_s"], (*kp, "period_s")) if "period_s" in m else None
            unit = self.string(m["unit"], (*kp, "unit")) if "unit" in m else None
            lo, hi = nums.get("min"), nums.get("max")
            if lo is not None and hi is not None and hi < lo:
                self.error((*kp, "max"), f"must be >= min ({_fmt(lo)}), got {_fmt(hi)}")
            if address is None:
                continue
            binding = TagBinding(
                address=address,
                scale=_or(nums.get("scale"), 1.0),
                offset=_or(nums.get("offset"), 0.0),
                unit=unit,
                period_s=period,
                min=lo,
                max=hi,
            )
            out.append((key, binding))
        return tuple(out)

    def failures(self, value: Any, path: PathKey) -> Failures | None:
        m = self.mapping(value, path, FAILURE_KEYS, "mtbf, mttr, mode")
        if m is None:
            return None
        mtbf = self.field(m, "mtbf", path, self.positive)
        mttr = self.field(m, "mttr", path, self.positive)
        mode = self.enum(m.get("mode", "operation"), (*path, "mode"), FailureMode)
        if mtbf is None or mttr is None or mode is None:
            return None
        return Failures(mtbf=mtbf, mttr=mttr, mode=mode)

    def robot(self, value: Any, path: PathKey) -> Robot | None:
        m = self.mapping(value, path, ROBOT_KEYS, "urdf, position, yaw_deg")
        if m is None:
            return None
        urdf = self.field(m, "urdf", path, self.string)
        pose = self.pose(m, path, 0.0)
        return Robot(urdf=urdf, pose=pose) if urdf is not None else None

    def station(self, raw: Any, path: PathKey, index: int) -> Station | None:
        m = self.mapping(raw, path, STATION_KEYS, "a station")
        if m is None:
            return None
        ident = self.field(m, "id", path, self.ident)
        pt = self.field(m, "process_time", path, self.distribution)
        servers = self.integer(m.get("servers", 1), (*path, "servers"), ge=1)
        scrap = self.number(m.get("scrap_rate", 0.0), (*path, "scrap_rate"), ge=0, lt=1)
        stype = self.ident(m.get("type", "machine"), (*path, "type"))
        failures = None
        if m.get("failures") is not None:
            failures = self.failures(m["failures"], (*path, "failures"))
        robot = self.robot(m["robot"], (*path, "robot")) if "robot" in m else None
        tags = self.tags(m["tags"], (*path, "tags")) if "tags" in m else ()
        pose = self.pose(m, path, index * AUTO_SPACING)
        geometry = self.geometry(m, path)
        if ident is None or pt is None or servers is None or scrap is None or stype is None:
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

    def station_ref(self, value: Any, path: PathKey, ids: set[str] | None) -> str | None:
        """A station id that must name a station of the file (unchecked when ``ids`` is None)."""
        sid = self.ident(value, path)
        if sid is not None and ids is not None and sid not in ids:
            close = difflib.get_close_matches(sid, sorted(ids), n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            self.error(path, f"unknown station '{sid}'{hint}")
            return None
        return sid

    def buffer(self, raw: Any, path: PathKey, ids: set[str] | None) -> Buffer | None:
        m = self.mapping(raw, path, BUFFER_KEYS, "a buffer")
        if m is None:
            return None
        ident = self.field(m, "id", path, self.ident)
        src = self.field(m, "from", path, lambda v, p: self.station_ref(v, p, ids))
        dst = self.field(m, "to", path, lambda v, p: self.station_ref(v, p, ids))
        if src is not None and src == dst:
            self.error((*path, "to"), "a buffer cannot lead from a station back to itself")
        conveyor = self.conveyor(m["conveyor"], (*path, "conveyor")) if "conveyor" in m else None
        cap: int | None = None
        if "capacity" in m:
            cap = self.integer(m["capacity"], (*path, "capacity"), ge=0)
            if cap == 0 and conveyor is not None:
                self.error((*path, "capacity"), "a conveyor holds at least one part (>= 1)")
        elif conveyor is not None:
            cap = conveyor.slots
        elif "conveyor" not in m:  # a bad conveyor has been reported already
            self.missing(path, "capacity")
        tags = self.tags(m["tags"], (*path, "tags")) if "tags" in m else ()
        if ident is None or src is None or dst is None or cap is None:
            return None
        if "conveyor" in m and conveyor is None:
            return None
        return Buffer(
            id=ident,
            source=src,
            target=dst,
            capacity=cap,
            conveyor=conveyor,
            tags=tags,
            line=self.doc.line(path),
        )

    def conveyor(self, raw: Any, path: PathKey) -> Conveyor | None:
        m = self.mapping(raw, path, CONVEYOR_KEYS, "length, speed, pitch, width, path")
        if m is None:
            return None
        length = self.field(m, "length", path, self.positive)
        speed = self.field(m, "speed", path, self.positive)
        pitch = self.positive(m.get("pitch", DEFAULT_PITCH), (*path, "pitch"))
        width = self.positive(m.get("width", DEFAULT_WIDTH), (*path, "width"))
        pts: list[tuple[float, float, float] | None] = []
        if "path" in m:
            rp = m["path"]
            if not isinstance(rp, list) or len(rp) < 2:
                self.error((*path, "path"), "must be a list of at least two [x, y, z] points")
                pts.append(None)
            else:
                pts = [self.point(pt, (*path, "path", i)) for i, pt in enumerate(rp)]
        if length is None or speed is None or pitch is None or width is None:
            return None
        if pitch > length:
            self.error((*path, "pitch"), f"must be <= length ({_fmt(length)}), got {_fmt(pitch)}")
            return None
        points = tuple(p for p in pts if p is not None)
        if len(points) != len(pts):
            return None
        return Conveyor(length=length, speed=speed, pitch=pitch, width=width, path=points)

    def source(self, raw: Any, path: PathKey, ids: set[str] | None) -> Source | None:
        m = self.mapping(raw, path, SOURCE_KEYS, "feeds, interarrival")
        if m is None:
            return None
        feeds = self.field(m, "feeds", path, lambda v, p: self.station_ref(v, p, ids))
        ia = self.field(m, "interarrival", path, self.distribution)
        if feeds is None or ia is None:
            return None
        return Source(feeds=feeds, interarrival=ia)

    def sources(self, top: Mapping[Any, Any], ids: set[str] | None) -> list[Source]:
        raws: list[tuple[PathKey, Any]] = []
        if "source" in top and "sources" in top:
            self.error(("sources",), "give either 'source' or 'sources', not both")
        if "source" in top:
            raws.append((("source",), top["source"]))
        if "sources" in top:
            if not isinstance(top["sources"], list):
                got = type_name(top["sources"])
                self.error(("sources",), f"must be a list of sources, got {got}")
            else:
                raws.extend((("sources", i), s) for i, s in enumerate(top["sources"]))
        out: list[Source] = []
        for path, raw in raws:
            src = self.source(raw, path, ids)
            if src is None:
                continue
            if any(s.feeds == src.feeds for s in out):
                self.error((*path, "feeds"), f"station '{src.feeds}' already has a source")
                continue
            out.append(src)
        return out

    def routing(
        self, st: Station, raw: Mapping[Any, Any], index: int, buffers: list[Buffer]
    ) -> Station:
        """Read the station's ``routing`` now that its outgoing buffers are known."""
        if "routing" not in raw:
            return st
        path: PathKey = ("stations", index, "routing")
        outs = [b.id for b in buffers if b.source == st.id]
        value = raw["routing"]
        weights: tuple[tuple[str, float], ...] = ()
        if isinstance(value, str):
            policy = self.enum(value, path, RoutingPolicy)
        else:
            m = self.mapping(value, path, ROUTING_KEYS, "policy, weights")
            if m is None:
                return st
            policy = self.field(m, "policy", path, lambda v, p: self.enum(v, p, RoutingPolicy))
            if "weights" in m:
                weights = self.weights(m["weights"], (*path, "weights"), outs)
        if policy is None:
            return st
        if policy == RoutingPolicy.PROBABILITY and not weights:
            if isinstance(value, str) or "weights" not in value:
                self.error(path, "policy 'probability' needs weights: {BUFFER_ID: weight, ...}")
            return st
        if weights and policy != RoutingPolicy.PROBABILITY:
            self.error((*path, "weights"), "weights are only used with policy 'probability'")
            return st
        return replace(st, routing=policy, weights=weights)

    def weights(self, value: Any, path: PathKey, outs: list[str]) -> tuple[tuple[str, float], ...]:
        if not isinstance(value, dict) or not value:
            got = type_name(value)
            self.error(path, f"must be a mapping of outgoing buffer id to weight, got {got}")
            return ()
        result: list[tuple[str, float]] = []
        ok = True
        for key, w in value.items():
            kp = (*path, str(key))
            if key not in outs:
                names = ", ".join(outs) or "none"
                self.error(kp, f"'{key}' is not an outgoing buffer of this station ({names})")
                ok = False
                continue
            v = self.number(w, kp, ge=0)
            if v is None:
                ok = False
            else:
                result.append((str(key), v))
        if not ok:
            return ()
        missing = [b for b in outs if b not in value]
        if missing:
            self.error(path, f"no weight for outgoing buffer(s) {', '.join(missing)}")
            return ()
        if sum(w for _, w in result) <= 0:
            self.error(path, "weights must not all be zero")
            return ()
        return tuple(result)

    def topology_checks(
        self, stations: list[Station], buffers: list[Buffer], sources: list[Source]
    ) -> None:
        """Every station is reachable from an entry, and every station can reach the sink."""
        ids = [s.id for s in stations]
        index = {s: i for i, s in enumerate(ids)}
        succ: dict[str, list[str]] = {s: [] for s in ids}
        pred: dict[str, list[str]] = {s: [] for s in ids}
        for b in buffers:
            succ[b.source].append(b.target)
            pred[b.target].append(b.source)
        fed = {s.feeds for s in sources}
        entries = [s for s in ids if not pred[s] or s in fed]
        reached = _reachable(entries, succ)
        for s in ids:
            if s not in reached:
                self.error(
                    ("stations", index[s], "id"),
                    f"station '{s}' is unreachable: no source feeds it and no path leads to it "
                    "from one",
                )
        exits = [s for s in ids if not succ[s]]
        can_exit = _reachable(exits, pred)
        for s in ids:
            if s not in can_exit:
                self.error(
                    ("stations", index[s], "id"),
                    f"station '{s}' is on a cycle without a way out: parts can never reach "
                    "the sink",
                )


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


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def _fmt(v: float) -> str:
    return f"{v:g}"
