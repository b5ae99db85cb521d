"""A :class:`scenes.spec.LineSpec` written back as a line file (``docs/line-format.md``).

:func:`serialize_line` is the inverse of :func:`scenes.lineparse.parse_line` up to formatting:
parsing its output gives back an equal spec (mesh names become absolute paths, so the file may
be written anywhere; ``line`` numbers and ``path`` are those of the new file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from scenes.spec import (
    Buffer,
    DistKind,
    Distribution,
    FailureMode,
    LineSpec,
    RoutingPolicy,
    Station,
    TagBinding,
)


def serialize_line(spec: LineSpec, *, header: str = "") -> str:
    """YAML text of ``spec``; ``header`` (lines of text) goes first as comments."""
    doc: dict[str, Any] = {"line": spec.name}
    if spec.description:
        doc["description"] = spec.description
    doc["stations"] = [_station(s) for s in spec.stations]
    if spec.buffers:
        doc["buffers"] = [_buffer(b) for b in spec.buffers]
    if spec.sources:
        doc["sources"] = [
            {"feeds": q.feeds, "interarrival": _dist(q.interarrival)} for q in spec.sources
        ]
    body = yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=100)
    comments = "".join(f"# {line}\n" for line in header.splitlines())
    return comments + body


def _num(x: float) -> float | int:
    """Whole floats as ints (``30`` rather than ``30.0``); others exactly (repr round-trips)."""
    return int(x) if float(x).is_integer() and abs(x) < 2**53 else float(x)


def _dist(d: Distribution) -> Any:
    match d.kind:
        case DistKind.DETERMINISTIC:
            return _num(d.mean)
        case DistKind.EXPONENTIAL:
            return {"dist": "exponential", "mean": _num(d.mean)}
        case DistKind.LOGNORMAL | DistKind.GAMMA:
            return {"dist": d.kind.value, "mean": _num(d.mean), "cv": _num(d.cv)}
        case DistKind.UNIFORM:
            return {"dist": "uniform", "low": _num(d.low), "high": _num(d.high)}
        case DistKind.EMPIRICAL:
            return {"dist": "empirical", "values": [_num(v) for v in d.values]}
    raise AssertionError(d.kind)  # pragma: no cover


def _tags(tags: tuple[tuple[str, TagBinding], ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, t in tags:
        m: dict[str, Any] = {"address": t.address}
        if t.scale != 1.0:
            m["scale"] = _num(t.scale)
        if t.offset != 0.0:
            m["offset"] = _num(t.offset)
        for key in ("unit", "period_s", "min", "max"):
            v = getattr(t, key)
            if v is not None:
                m[key] = v if isinstance(v, str) else _num(v)
        out[name] = m
    return out


def _station(s: Station) -> dict[str, Any]:
    m: dict[str, Any] = {"id": s.id, "type": s.type, "process_time": _dist(s.process_time)}
    if s.servers != 1:
        m["servers"] = s.servers
    if s.scrap_rate:
        m["scrap_rate"] = _num(s.scrap_rate)
    if s.failures is not None:
        f: dict[str, Any] = {"mtbf": _num(s.failures.mtbf), "mttr": _num(s.failures.mttr)}
        if s.failures.mode != FailureMode.OPERATION:
            f["mode"] = s.failures.mode.value
        m["failures"] = f
    if s.routing == RoutingPolicy.PROBABILITY:
        m["routing"] = {"policy": "probability", "weights": {k: _num(w) for k, w in s.weights}}
    elif s.routing != RoutingPolicy.ROUND_ROBIN:
        m["routing"] = s.routing.value
    m["position"] = [_num(x) for x in s.pose.position]
    if s.pose.yaw_deg:
        m["yaw_deg"] = _num(s.pose.yaw_deg)
    g = s.geometry
    if g.mesh is not None:
        m["mesh"] = str(Path(g.mesh).resolve())
    elif g.box is not None:
        m["box"] = [_num(x) for x in g.box]
    if g.scale != 1.0:
        m["scale"] = _num(g.scale)
    if g.color is not None:
        m["color"] = g.color
    if s.tags:
        m["tags"] = _tags(s.tags)
    if s.robot is not None:
        r: dict[str, Any] = {"urdf": s.robot.urdf}
        if s.robot.pose.position != (0.0, 0.0, 0.0):
            r["position"] = [_num(x) for x in s.robot.pose.position]
        if s.robot.pose.yaw_deg:
            r["yaw_deg"] = _num(s.robot.pose.yaw_deg)
        m["robot"] = r
    return m


def _buffer(b: Buffer) -> dict[str, Any]:
    m: dict[str, Any] = {"id": b.id, "from": b.source, "to": b.target, "capacity": b.capacity}
    if b.conveyor is not None:
        c = b.conveyor
        conv: dict[str, Any] = {
            "length": _num(c.length),
            "speed": _num(c.speed),
            "pitch": _num(c.pitch),
            "width": _num(c.width),
        }
        if c.path:
            conv["path"] = [[_num(x) for x in p] for p in c.path]
        m["conveyor"] = conv
    if b.tags:
        m["tags"] = _tags(b.tags)
    return m
