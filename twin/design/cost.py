"""The cost model of a line variant: machines, buffer slots, conveyors and floor area.

``cost = machines + buffers + conveyors + floor`` (``docs/design-space.md``, "Cost model"):

* machines: for each station, ``price(type) * servers * (mean_0 / mean) ** speed_exponent``,
  ``mean_0`` the processing time of the layout's line file (a faster machine costs more);
* buffers: ``buffer_slot`` per slot of each buffer without a conveyor;
* conveyors: ``belt * (conveyor_metre + conveyor_speed * speed)`` for each conveyor, ``belt``
  its length, or ``capacity * pitch`` where a variant gives it more places than it has;
* floor: ``floor_m2`` times the floor area: the area of the convex hull, in plan, of every
  entity of the scene graph (stations grown by ``floor_margin``, buffer boxes, belts), computed
  with trimesh, plus the footprint (with margin) of each extra parallel server.

The floor area depends only on the layout, so it is computed once per layout.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from scenes.spec import LineSpec
from twin.design.space import CostModel


@dataclass(frozen=True, slots=True, kw_only=True)
class CostBreakdown:
    machines: float
    buffers: float
    conveyors: float
    floor: float
    floor_area_m2: float

    @property
    def total(self) -> float:
        return self.machines + self.buffers + self.conveyors + self.floor


def floor_area(spec: LineSpec, margin: float, *, layout: LineSpec | None = None) -> float:
    """Plan area in m² of ``spec``: the convex hull of every footprint of its ``layout`` (the
    line file it is a variant of; itself by default), stations grown by ``margin`` on each side,
    plus one footprint per extra parallel server of ``spec``."""
    return _hull_area(layout or spec, margin) + sum(
        (s.servers - 1) * _station_area(spec, s.id, margin) for s in spec.stations
    )


@lru_cache(maxsize=64)
def _hull_area(spec: LineSpec, margin: float) -> float:
    import numpy as np
    import trimesh

    from scenes.graph import BoxGeometry, ConveyorGeometry, EntityKind, MeshGeometry, build_graph

    graph = build_graph(spec, mesh_sizes=_mesh_sizes(spec))
    corners: list[tuple[float, float]] = []
    for e in graph.entities:
        g = e.geometry
        grow = margin if e.kind is EntityKind.STATION else 0.0
        if isinstance(g, BoxGeometry | MeshGeometry):
            size = g.size or (1.5, 1.5, 1.5)
            hx, hy = size[0] / 2 + grow, size[1] / 2 + grow
            t = graph.world_transform(e.id)
            corners += [t.apply((sx * hx, sy * hy, 0.0))[:2] for sx in (-1, 1) for sy in (-1, 1)]
        elif isinstance(g, ConveyorGeometry):
            path = graph.conveyor_path(e.ref)
            half = g.width / 2
            pts = path.points
            for a, b in itertools.pairwise(pts):
                dx, dy = b[0] - a[0], b[1] - a[1]
                n = math.hypot(dx, dy) or 1.0
                nx, ny = -dy / n * half, dx / n * half
                corners += [(p[0] + sx * nx, p[1] + sx * ny) for p in (a, b) for sx in (-1, 1)]
    if len(corners) < 3:
        return 0.0
    xy = np.asarray(corners, dtype=np.float64)
    # A unit-high prism over the points: its hull's volume is the plan area of their hull.
    pts3 = np.concatenate([np.c_[xy, np.zeros(len(xy))], np.c_[xy, np.ones(len(xy))]])
    try:
        hull = trimesh.convex.convex_hull(pts3)
    except Exception:  # degenerate (collinear) footprints have no area: qhull refuses them
        return 0.0
    return float(abs(hull.volume))


def _station_area(spec: LineSpec, sid: str, margin: float) -> float:
    st = spec.station(sid)
    size = st.geometry.box or _mesh_sizes(spec).get(sid, (1.5, 1.5, 1.5))
    scale = st.geometry.scale if st.geometry.box else 1.0
    return (size[0] * scale + 2 * margin) * (size[1] * scale + 2 * margin)


@lru_cache(maxsize=64)
def _mesh_sizes_cached(meshes: tuple[tuple[str, str, float], ...]) -> dict[str, Any]:
    from scenes.assets import load_mesh, mesh_size, normalize_mesh, up_axis_for

    out: dict[str, Any] = {}
    for sid, path, scale in meshes:
        try:
            mesh = normalize_mesh(load_mesh(path), scale=scale, up=up_axis_for(path))
            out[sid] = mesh_size(mesh)
        except Exception:  # a mesh that does not load counts as the default footprint
            continue
    return out


def _mesh_sizes(spec: LineSpec) -> dict[str, Any]:
    meshes = tuple(
        (s.id, s.geometry.mesh, s.geometry.scale)
        for s in spec.stations
        if s.geometry.mesh is not None
    )
    return _mesh_sizes_cached(meshes) if meshes else {}


def belt_length(length: float, pitch: float, capacity: int) -> float:
    """Metres of belt priced for a conveyor: its length, or the belt that holds ``capacity``
    parts at ``pitch`` when a variant asks for more than ``length / pitch``."""
    return max(length, capacity * pitch)


def breakdown(model: CostModel, spec: LineSpec, base: LineSpec) -> CostBreakdown:
    """The cost of ``spec``, a variant of the layout ``base`` (whose processing times are the
    reference for the speed premium)."""
    base_means = {s.id: s.process_time.mean for s in base.stations}
    machines = 0.0
    for s in spec.stations:
        speedup = base_means.get(s.id, s.process_time.mean) / s.process_time.mean
        machines += model.machine_price(s.type) * s.servers * speedup**model.speed_exponent
    buffers = model.buffer_slot * sum(b.capacity for b in spec.buffers if b.conveyor is None)
    conveyors = sum(
        belt_length(b.conveyor.length, b.conveyor.pitch, b.capacity)
        * (model.conveyor_metre + model.conveyor_speed * b.conveyor.speed)
        for b in spec.buffers
        if b.conveyor is not None
    )
    area = floor_area(spec, model.floor_margin, layout=base)
    return CostBreakdown(
        machines=machines,
        buffers=buffers,
        conveyors=conveyors,
        floor=model.floor_m2 * area,
        floor_area_m2=area,
    )


def cost(model: CostModel, spec: LineSpec, base: LineSpec) -> float:
    """The total cost of ``spec`` (see :func:`breakdown`)."""
    return breakdown(model, spec, base).total
