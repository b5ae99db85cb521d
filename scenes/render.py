"""Offscreen pictures of a line with pyvista: the static layout, or a snapshot of live state.

pyvista (and VTK) are imported inside :func:`render_line`; without them it raises
:class:`RenderUnavailableError` saying what to install. Everything is drawn from the scene graph
(:mod:`scenes.graph`), so a picture shows exactly what a viewer would place.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scenes.assets import load_mesh, mesh_size, normalize_mesh, up_axis_for
from scenes.errors import TwinError
from scenes.graph import (
    ROBOT_COLOR,
    STATE_COLORS,
    BoxGeometry,
    ConveyorGeometry,
    Entity,
    EntityKind,
    LineState,
    MachineState,
    MeshGeometry,
    Polyline,
    RobotGeometry,
    SceneGraph,
    Transform,
    Vec3,
    build_graph,
    hex_to_rgb,
    quat_multiply,
)
from scenes.spec import LineSpec

FLOOR_COLOR = "#eef0f2"
GRID_MINOR_COLOR = "#d5d9de"
GRID_MAJOR_COLOR = "#b4bac2"
BELT_COLOR = "#3b3f45"
RAIL_COLOR = "#a9b0b8"
CHEVRON_COLOR = "#d8dde3"
BUFFER_BOX_COLOR = "#8d99a6"
FLOW_COLOR = "#5b6570"
PART_COLOR = "#c8955a"
BACKGROUND_TOP = "#ffffff"
BACKGROUND_BOTTOM = "#dfe4ea"
TEXT_COLOR = "#1f2933"
BELT_THICKNESS = 0.08


class RenderUnavailableError(TwinError):
    """pyvista/VTK are not installed (``pip install 'twin-engine[render]'``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class _Label:
    position: Vec3
    text: str
    major: bool


def render_line(
    spec: LineSpec,
    out_png: str | Path,
    *,
    state: LineState | None = None,
    size: tuple[int, int] = (1600, 900),
) -> Path:
    """Render ``spec`` to the PNG ``out_png`` (``size`` = width, height in pixels); return its path.

    Without ``state`` machines are coloured by station type; with it, by machine state
    (stations missing from ``state`` show as stale), buffers show their fill and conveyors
    carry their parts. Raises :class:`scenes.assets.MeshLoadError` for a mesh that does not
    load and :class:`RenderUnavailableError` without pyvista.
    """
    try:
        import pyvista as pv
    except ImportError as exc:
        raise RenderUnavailableError(
            f"rendering needs pyvista and VTK: pip install 'twin-engine[render]' ({exc})"
        ) from exc
    width, height = size
    if width < 64 or height < 64:
        raise ValueError(f"image size must be at least 64x64, got {width}x{height}")

    meshes: dict[str, Any] = {}
    for st in spec.stations:
        if st.geometry.mesh is not None:
            meshes[st.id] = normalize_mesh(
                load_mesh(st.geometry.mesh),
                scale=st.geometry.scale,
                up=up_axis_for(st.geometry.mesh),
            )
    graph = build_graph(spec, mesh_sizes={k: mesh_size(m) for k, m in meshes.items()})

    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    plotter = pv.Plotter(off_screen=True, window_size=[width, height], lighting="light kit")
    try:
        _draw(pv, plotter, spec, graph, meshes, state, size)
        plotter.screenshot(str(out), return_img=False)
    finally:
        plotter.close()
    return out


# -- drawing -----------------------------------------------------------------------------------


def _draw(
    pv: Any,
    plotter: Any,
    spec: LineSpec,
    graph: SceneGraph,
    meshes: dict[str, Any],
    state: LineState | None,
    size: tuple[int, int],
) -> None:
    plotter.set_background(BACKGROUND_BOTTOM, top=BACKGROUND_TOP)
    labels: list[_Label] = []
    lo, hi = _bounds(graph)
    _draw_floor(pv, plotter, lo, hi)
    floor_z = min(lo[2], 0.0)

    for e in graph.of_kind(EntityKind.STATION):
        world = graph.world_transform(e.id)
        color = e.visual.color
        if state is not None:
            color = STATE_COLORS[state.station_state(e.ref)]
        height = _draw_station(pv, plotter, e, world, meshes.get(e.ref), color)
        top = world.apply((0.0, 0.0, height + 0.35))
        labels.append(_Label(position=top, text=e.visual.label, major=True))

    buffers = {b.id: b for b in spec.buffers}
    for e in graph.of_kind(EntityKind.BUFFER):
        buf = buffers[e.ref]
        world = graph.world_transform(e.id)
        conveyor = next(iter(graph.children(e.id)), None)
        level = state.buffer_level(e.ref) if state is not None else None
        if conveyor is not None and isinstance(conveyor.geometry, ConveyorGeometry):
            path = graph.conveyor_path(e.ref)
            _draw_conveyor(pv, plotter, path, conveyor.geometry.width, floor_z)
            text = e.ref if level is None else f"{e.ref}: {level}/{buf.capacity}"
            mid = path.point_at(0.5)
            labels.append(_Label(position=(mid[0], mid[1], mid[2] + 0.45), text=text, major=False))
            if state is not None:
                _draw_parts(pv, plotter, graph, e.ref, state.parts_on(e.ref), conveyor.geometry)
            continue
        _draw_flow(pv, plotter, graph, buf.source, buf.target, world.position, floor_z)
        if isinstance(e.geometry, BoxGeometry):
            _draw_buffer_box(pv, plotter, world, e.geometry.size, level, buf.capacity)
            text = (
                f"{e.ref} [{buf.capacity}]" if level is None else f"{e.ref}: {level}/{buf.capacity}"
            )
            labels.append(
                _Label(
                    position=world.apply((0.0, 0.0, e.geometry.size[2] + 0.3)),
                    text=text,
                    major=False,
                )
            )

    for e in graph.of_kind(EntityKind.ROBOT):
        _draw_robot(pv, plotter, graph.world_transform(e.id), e.visual.color)

    legend = _draw_legend(plotter, graph, state, size)
    title_h = _draw_title(plotter, spec, graph, state, size)
    _place_camera(plotter, lo, hi, size, legend=legend, title_h=title_h)
    _draw_labels(plotter, labels, size)


def _bounds(graph: SceneGraph) -> tuple[Vec3, Vec3]:
    """World bounds of everything drawn (metres)."""
    xs: list[float] = []
    ys: list[float] = []
    zs: list[float] = [0.0]
    for e in graph.entities:
        world = graph.world_transform(e.id)
        pts: list[Vec3] = []
        g = e.geometry
        if isinstance(g, BoxGeometry | MeshGeometry):
            sx, sy, sz = g.size if g.size is not None else (1.5, 1.5, 1.5)
            pts = [
                world.apply((dx * sx / 2, dy * sy / 2, z))
                for dx in (-1, 1)
                for dy in (-1, 1)
                for z in (0.0, sz)
            ]
        elif isinstance(g, ConveyorGeometry):
            pts = [world.apply(p) for p in g.path.points]
        elif isinstance(g, RobotGeometry):
            pts = [
                world.apply((dx, dy, z))
                for dx in (-1.7, 1.7)
                for dy in (-1.7, 1.7)
                for z in (0, 2.4)
            ]
        elif e.kind is EntityKind.BUFFER:
            pts = [world.position]
        for p in pts:
            xs.append(p[0])
            ys.append(p[1])
            zs.append(p[2])
    if not xs:  # pragma: no cover - a line has at least one station
        return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    return (min(xs), min(ys), min(zs)), (max(xs), max(ys), max(zs))


def _draw_floor(pv: Any, plotter: Any, lo: Vec3, hi: Vec3) -> None:
    margin = 2.0
    x0, x1 = math.floor(lo[0] - margin), math.ceil(hi[0] + margin)
    y0, y1 = math.floor(lo[1] - margin), math.ceil(hi[1] + margin)
    z = min(lo[2], 0.0) - 0.01
    floor = pv.Plane(
        center=((x0 + x1) / 2, (y0 + y1) / 2, z - 0.005),
        direction=(0, 0, 1),
        i_size=x1 - x0,
        j_size=y1 - y0,
    )
    plotter.add_mesh(floor, color=FLOOR_COLOR, ambient=0.35, diffuse=0.7, specular=0.0)
    minor: list[tuple[Vec3, Vec3]] = []
    major: list[tuple[Vec3, Vec3]] = []
    for x in range(x0, x1 + 1):
        (major if x % 5 == 0 else minor).append(((x, y0, z), (x, y1, z)))
    for y in range(y0, y1 + 1):
        (major if y % 5 == 0 else minor).append(((x0, y, z), (x1, y, z)))
    for segs, color, w in ((minor, GRID_MINOR_COLOR, 1.0), (major, GRID_MAJOR_COLOR, 1.6)):
        if segs:
            plotter.add_mesh(_segments(pv, segs), color=color, line_width=w, lighting=False)


def _segments(pv: Any, segs: Sequence[tuple[Vec3, Vec3]]) -> Any:
    import numpy as np

    points = np.array([p for seg in segs for p in seg], dtype=float)
    lines = np.hstack([[2, 2 * i, 2 * i + 1] for i in range(len(segs))])
    return pv.PolyData(points, lines=lines)


def _box(pv: Any, transform: Transform, size: Vec3, *, z0: float = 0.0, along: bool = False) -> Any:
    """A box of ``size`` with its base at local z = ``z0``, placed by ``transform``; centred on
    the local origin in x, or (``along``) running from x = 0 to x = size[0]."""
    import numpy as np

    sx, sy, sz = size
    x0 = 0.0 if along else -sx / 2
    box = pv.Box(bounds=(x0, x0 + sx, -sy / 2, sy / 2, z0, z0 + sz))
    return box.transform(np.array(transform.matrix()), inplace=False)


def _draw_station(
    pv: Any, plotter: Any, e: Entity, world: Transform, mesh: Any, color: str
) -> float:
    """Draw one station; return its height."""
    import numpy as np

    g = e.geometry
    if isinstance(g, MeshGeometry) and mesh is not None:
        faces = np.hstack([np.full((len(mesh.faces), 1), 3), np.asarray(mesh.faces)]).ravel()
        poly = pv.PolyData(np.asarray(mesh.vertices, dtype=float), faces)
        poly = poly.transform(np.array(world.matrix()), inplace=False)
        plotter.add_mesh(poly, color=color, smooth_shading=True, specular=0.2)
        return float(mesh.extents[2])
    size = g.size if isinstance(g, BoxGeometry) else (1.5, 1.5, 1.5)
    body = _box(pv, world, size)
    plotter.add_mesh(body, color=color, ambient=0.3, diffuse=0.75, specular=0.15)
    plotter.add_mesh(
        body.extract_feature_edges(), color=_shade(color, 0.55), line_width=1.5, lighting=False
    )
    # a dark plinth reads as "machine on the floor" from any angle
    plinth = _box(pv, world, (size[0] + 0.12, size[1] + 0.12, 0.08))
    plotter.add_mesh(plinth, color="#4a5058", specular=0.0)
    return float(size[2])


def _draw_conveyor(pv: Any, plotter: Any, path: Polyline, width: float, floor_z: float) -> None:
    """A flat belt along ``path`` (its surface), with side rails, legs and flow chevrons."""
    belts = []
    rails = []
    legs = []
    chevrons = []
    for a, b in itertools.pairwise(path.points):
        seg_len = math.dist(a, b)
        if seg_len <= 1e-9:
            continue
        frame = _segment_frame(a, b)
        belts.append(
            _box(pv, frame, (seg_len, width, BELT_THICKNESS), z0=-BELT_THICKNESS, along=True)
        )
        for side in (-1, 1):
            rail_frame = frame.compose(Transform(position=(0.0, side * (width / 2 + 0.03), 0.0)))
            rails.append(_box(pv, rail_frame, (seg_len, 0.06, 0.1), z0=-0.07, along=True))
        n_legs = max(1, round(seg_len / 2.0))
        for i in range(n_legs):
            p = _lerp(a, b, (i + 0.5) / n_legs)
            h = p[2] - BELT_THICKNESS - floor_z
            if h <= 0.05:
                continue
            for side in (-1, 1):
                offset = Transform(position=(0.0, side * (width / 2 - 0.05), 0.0))
                leg_frame = Transform.from_yaw(p, _heading(a, b)).compose(offset)
                legs.append(_box(pv, leg_frame, (0.06, 0.06, h), z0=-BELT_THICKNESS - h))
        spacing = max(0.7, width * 1.3)
        n_chev = int(seg_len // spacing)
        for i in range(n_chev):
            chevrons.append(_chevron(pv, frame, (i + 0.5) * seg_len / n_chev, width * 0.5))
    for joint in path.points[1:-1]:
        # a round plate fills the gap on the outside of a bend
        disc = pv.Cylinder(
            center=(joint[0], joint[1], joint[2] - BELT_THICKNESS / 2),
            direction=(0, 0, 1),
            radius=width / 2,
            height=BELT_THICKNESS * 0.98,
            resolution=32,
        )
        belts.append(disc)
    for parts, color, kw in (
        (belts, BELT_COLOR, {"specular": 0.1, "ambient": 0.2}),
        (rails, RAIL_COLOR, {"specular": 0.4, "ambient": 0.2}),
        (legs, RAIL_COLOR, {"ambient": 0.2}),
        (chevrons, CHEVRON_COLOR, {"lighting": False}),
    ):
        if parts:
            plotter.add_mesh(pv.merge(parts), color=color, **kw)


def _lerp(a: Vec3, b: Vec3, t: float) -> Vec3:
    return (a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t)


def _heading(a: Vec3, b: Vec3) -> float:
    return math.degrees(math.atan2(b[1] - a[1], b[0] - a[0]))


def _segment_frame(a: Vec3, b: Vec3) -> Transform:
    """A frame at ``a`` with +x towards ``b`` (pitched along a sloped segment), +z up-ish."""
    dx, dy, dz = b[0] - a[0], b[1] - a[1], b[2] - a[2]
    yaw = math.atan2(dy, dx)
    pitch = -math.atan2(dz, math.hypot(dx, dy))
    qy = (0.0, math.sin(pitch / 2), 0.0, math.cos(pitch / 2))
    qz = (0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2))
    return Transform(position=a, rotation=quat_multiply(qz, qy))


def _chevron(pv: Any, frame: Transform, s: float, half: float) -> Any:
    """A flat arrow head on the belt, ``s`` metres along the segment frame, pointing along +x."""
    import numpy as np

    d = half * 0.6
    z = 0.004
    pts_local = [
        (s + d * 0.5, 0.0, z),
        (s - d * 0.5, half * 0.8, z),
        (s - d * 0.1, 0.0, z),
        (s - d * 0.5, -half * 0.8, z),
    ]
    pts = np.array([frame.apply(p) for p in pts_local])
    return pv.PolyData(pts, faces=[3, 0, 1, 2, 3, 0, 2, 3])


def _draw_flow(
    pv: Any, plotter: Any, graph: SceneGraph, source: str, target: str, via: Vec3, floor_z: float
) -> None:
    """A flow line on the floor from station ``source`` through ``via`` to station ``target``,
    with an arrow head where it enters the target's footprint."""
    z = floor_z + 0.02
    src = graph.world_transform(f"station/{source}").position
    dst = graph.world_transform(f"station/{target}").position
    a, m, b = (src[0], src[1], z), (via[0], via[1], z), (dst[0], dst[1], z)
    line = _segments(pv, [(a, m), (m, b)])
    plotter.add_mesh(line, color=FLOW_COLOR, line_width=3, lighting=False)
    dx, dy = b[0] - m[0], b[1] - m[1]
    dist = math.hypot(dx, dy)
    if dist > 1e-6:
        geometry = graph.entity(f"station/{target}").geometry
        size = getattr(geometry, "size", None) or (1.5, 1.5, 1.5)
        back = min(dist * 0.9, 0.45 * max(size[0], size[1]) + 0.2)
        tip = (b[0] - dx / dist * back, b[1] - dy / dist * back, z + 0.05)
        cone = pv.Cone(center=tip, direction=(dx, dy, 0.0), height=0.35, radius=0.16, resolution=24)
        plotter.add_mesh(cone, color=FLOW_COLOR, lighting=False)


def _draw_buffer_box(
    pv: Any, plotter: Any, world: Transform, size: Vec3, level: int | None, capacity: int
) -> None:
    if level is None:
        box = _box(pv, world, size)
        plotter.add_mesh(box, color=BUFFER_BOX_COLOR, specular=0.1)
        plotter.add_mesh(
            box.extract_feature_edges(), color="#5d6873", line_width=1.2, lighting=False
        )
        return
    frac = 0.0 if capacity <= 0 else min(1.0, max(0.0, level / capacity))
    shell = _box(pv, world, size)
    plotter.add_mesh(shell, color=BUFFER_BOX_COLOR, opacity=0.25)
    plotter.add_mesh(shell.extract_feature_edges(), color="#5d6873", line_width=1.2, lighting=False)
    if frac > 0:
        fill = _box(pv, world, (size[0] * 0.92, size[1] * 0.92, size[2] * frac))
        plotter.add_mesh(fill, color=PART_COLOR, specular=0.1)


def _draw_parts(
    pv: Any,
    plotter: Any,
    graph: SceneGraph,
    buffer: str,
    progress: Sequence[float],
    geometry: ConveyorGeometry,
) -> None:
    path = graph.conveyor_path(buffer)
    side = min(geometry.width * 0.6, geometry.pitch * 0.8, 0.45)
    boxes = []
    for p in progress:
        pos = path.point_at(p)
        frame = Transform.from_yaw(pos, path.heading_at(p))
        boxes.append(_box(pv, frame, (side, side, side * 0.8)))
    if boxes:
        plotter.add_mesh(pv.merge(boxes), color=PART_COLOR, specular=0.2)


def _draw_labels(plotter: Any, labels: Sequence[_Label], size: tuple[int, int]) -> None:
    """Station labels always; buffer and conveyor labels only where they overlap no label
    already placed (the camera must be in place: labels are laid out on screen)."""
    scale = size[1] / 900
    styles = {
        True: (max(8, round(19 * scale)), TEXT_COLOR),
        False: (max(7, round(16 * scale)), "#4a5561"),
    }
    placed: list[tuple[float, float, float, float]] = []
    kept: dict[bool, list[_Label]] = {True: [], False: []}
    for lb in sorted(labels, key=lambda lb: not lb.major):
        font, _ = styles[lb.major]
        x, y = _to_screen(plotter, lb.position)
        half_w = 0.32 * font * len(lb.text) + 3
        box = (x - half_w, y, x + half_w, y + 1.1 * font + 3)
        if not lb.major and any(_overlap(box, other) for other in placed):
            continue
        placed.append(box)
        kept[lb.major].append(lb)
    for major, chosen in kept.items():
        font, color = styles[major]
        for lb in chosen:
            # one actor per label: VTK's label placer drops labels that collide within an actor
            plotter.add_point_labels(
                [lb.position],
                [lb.text],
                font_size=font,
                text_color=color,
                shape=None,
                background_color="white",
                background_opacity=0.85 if major else 0.7,
                show_points=False,
                always_visible=True,
                bold=major,
                justification_horizontal="center",
                justification_vertical="bottom",
            )


def _to_screen(plotter: Any, point: Vec3) -> tuple[float, float]:
    renderer = plotter.renderer
    renderer.SetWorldPoint(point[0], point[1], point[2], 1.0)
    renderer.WorldToDisplay()
    x, y, _ = renderer.GetDisplayPoint()
    return float(x), float(y)


def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _draw_legend(
    plotter: Any, graph: SceneGraph, state: LineState | None, size: tuple[int, int]
) -> tuple[int, int]:
    """A key of colours in the upper right corner: station types (or machine states).
    Returns the pixels it takes (width, height), margins included."""
    entries: list[tuple[str, str]]
    if state is None:
        entries = list(graph.legend())
        if any(e.geometry is not None for e in graph.of_kind(EntityKind.BUFFER)):
            entries.append(("buffer", BUFFER_BOX_COLOR))
        if graph.of_kind(EntityKind.CONVEYOR):
            entries.append(("conveyor", BELT_COLOR))
        if graph.of_kind(EntityKind.ROBOT):
            entries.append(("robot", ROBOT_COLOR))
    else:
        entries = [(s.value, STATE_COLORS[s]) for s in MachineState]
        entries.append(("part", PART_COLOR))
    width, height = size
    scale = height / 900
    font = max(6, round(10 * scale))
    pad = max(4, round(12 * scale))
    probes = [plotter.add_text(name, position=(0, 0), font_size=font) for name, _ in entries]
    extents = [_text_size(plotter, t) for t in probes]
    for t in probes:
        plotter.remove_actor(t, render=False)
    text_w = max(w for w, _ in extents)
    text_h = max(h for _, h in extents)
    row = round(text_h * 1.35)
    swatch = round(text_h * 0.8)
    panel_w = pad * 3 + swatch + text_w
    panel_h = pad * 2 + row * len(entries)
    x0 = width - panel_w - pad
    y1 = height - pad
    _rect2d(plotter, (x0, y1 - panel_h, x0 + panel_w, y1), "#ffffff", 0.9, border="#c3c9d0")
    for i, (name, color) in enumerate(entries):
        y = y1 - pad - (i + 1) * row + (row - swatch) // 2
        swatch_box = (x0 + pad, y, x0 + pad + swatch, y + swatch)
        _rect2d(plotter, swatch_box, color, 1.0, border=_shade(color, 0.6))
        text_at = (x0 + 2 * pad + swatch, y + swatch // 2 - text_h // 2)
        plotter.add_text(name, position=text_at, font_size=font, color=TEXT_COLOR)
    return panel_w + 2 * pad, panel_h + 2 * pad


def _text_size(plotter: Any, text_actor: Any) -> tuple[int, int]:
    """Width and height in pixels of a text actor as it will be drawn."""
    bbox = [0.0, 0.0, 0.0, 0.0]
    text_actor.GetBoundingBox(plotter.renderer, bbox)
    return round(bbox[1] - bbox[0]), round(bbox[3] - bbox[2])


def _rect2d(
    plotter: Any,
    box: tuple[int, int, int, int],
    color: str,
    opacity: float,
    *,
    border: str | None = None,
) -> None:
    """A filled screen-space rectangle ``(x0, y0, x1, y1)`` in pixels (origin lower left)."""
    from vtkmodules.vtkCommonCore import vtkPoints
    from vtkmodules.vtkCommonDataModel import vtkCellArray, vtkPolyData
    from vtkmodules.vtkRenderingCore import vtkActor2D, vtkPolyDataMapper2D

    x0, y0, x1, y1 = box
    pts = vtkPoints()
    for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1)):
        pts.InsertNextPoint(float(x), float(y), 0.0)
    for fill in (True, False) if border else (True,):
        cells = vtkCellArray()
        if fill:
            cells.InsertNextCell(4, (0, 1, 2, 3))
        else:
            cells.InsertNextCell(5, (0, 1, 2, 3, 0))
        poly = vtkPolyData()
        poly.SetPoints(pts)
        if fill:
            poly.SetPolys(cells)
        else:
            poly.SetLines(cells)
        mapper = vtkPolyDataMapper2D()
        mapper.SetInputData(poly)
        actor = vtkActor2D()
        actor.SetMapper(mapper)
        prop = actor.GetProperty()
        prop.SetColor(*hex_to_rgb(color if fill else (border or color)))
        prop.SetOpacity(opacity if fill else 1.0)
        prop.SetLineWidth(1.0)
        plotter.add_actor(actor, reset_camera=False)


def _draw_title(
    plotter: Any, spec: LineSpec, graph: SceneGraph, state: LineState | None, size: tuple[int, int]
) -> int:
    """The line name and a summary in the upper left corner; returns the band height (px)."""
    height = size[1]
    scale = height / 900
    margin = max(4, round(18 * scale))
    title = plotter.add_text(
        spec.name, position=(0, 0), font_size=max(8, round(17 * scale)), color=TEXT_COLOR
    )
    _, title_h = _text_size(plotter, title)
    title.SetPosition(margin, height - margin - title_h)
    n_conv = len(graph.of_kind(EntityKind.CONVEYOR))
    sub = f"{len(spec.stations)} stations · {len(spec.buffers)} buffers ({n_conv} on conveyors)"
    if state is not None:
        sub += f" · live state at t = {state.time_s:.1f} s"
    else:
        sub += " · colours: station type"
    subtitle = plotter.add_text(
        sub, position=(0, 0), font_size=max(6, round(9 * scale)), color="#52606d"
    )
    _, sub_h = _text_size(plotter, subtitle)
    subtitle.SetPosition(margin, height - margin - title_h - round(6 * scale) - sub_h)
    return 2 * margin + title_h + round(6 * scale) + sub_h


def _place_camera(
    plotter: Any,
    lo: Vec3,
    hi: Vec3,
    size: tuple[int, int],
    *,
    legend: tuple[int, int],
    title_h: int,
) -> None:
    """An oblique parallel view from the front and above, with the long side of the layout
    across the picture, fitted to the free part of the image (beside or below the legend)."""
    import numpy as np

    width, height = size
    dx, dy = max(hi[0] - lo[0], 1.0), max(hi[1] - lo[1], 1.0)
    # look across the long side; turn less for long thin layouts, which a turn would tilt
    skew = 0.3 if max(dx, dy) < 4.0 * min(dx, dy) else 0.12
    back = np.array((-skew, -1.0, 0.95) if dx >= 0.8 * dy else (1.0, -skew, 0.95))
    back /= np.linalg.norm(back)
    forward = -back
    right = np.cross(forward, (0.0, 0.0, 1.0))
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    margin = 1.0
    corners = np.array(
        [
            (x, y, z)
            for x in (lo[0] - margin, hi[0] + margin)
            for y in (lo[1] - margin, hi[1] + margin)
            for z in (min(lo[2], 0.0), hi[2] + 0.9)
        ]
    )
    u, v = corners @ right, corners @ up
    span_u, span_v = float(u.max() - u.min()), float(v.max() - v.min())
    pad = round(0.02 * height)
    legend_w, legend_h = legend
    # two ways to leave the legend free: the full height beside it, or the full width below it
    options = [
        (pad, pad, width - legend_w - pad, height - title_h),
        (pad, pad, width - pad, height - max(legend_h, title_h)),
    ]
    best = max(options, key=lambda r: min((r[2] - r[0]) / span_u, (r[3] - r[1]) / span_v))
    x0, y0, x1, y1 = best
    px_per_m = min((x1 - x0) / span_u, (y1 - y0) / span_v)
    # the scene goes as near the middle of the picture as the free rectangle allows
    half_w, half_h = span_u * px_per_m / 2, span_v * px_per_m / 2
    px = min(max(width / 2, x0 + half_w), x1 - half_w)
    py = min(max(height / 2, y0 + half_h), y1 - half_h)
    cu = (float(u.max() + u.min()) / 2) - (px - width / 2) / px_per_m
    cv = (float(v.max() + v.min()) / 2) - (py - height / 2) / px_per_m
    centre = corners.mean(axis=0)
    focal = centre + (cu - centre @ right) * right + (cv - centre @ up) * up
    distance = 4.0 * max(span_u, span_v, 10.0)
    camera = plotter.camera
    camera.parallel_projection = True
    camera.focal_point = tuple(focal)
    camera.position = tuple(focal + back * distance)
    camera.up = tuple(up)
    camera.parallel_scale = height / (2.0 * px_per_m)
    plotter.renderer.ResetCameraClippingRange()


def _draw_robot(pv: Any, plotter: Any, world: Transform, color: str) -> None:
    """A stand-in for a six-axis robot: pedestal, turntable and an arm reaching along +x."""
    import numpy as np

    parts = [
        pv.Cylinder(center=(0, 0, 0.3), direction=(0, 0, 1), radius=0.45, height=0.6),
        pv.Cylinder(center=(0, 0, 0.8), direction=(0, 0, 1), radius=0.32, height=0.4),
    ]
    joints = [(0.0, 0.0, 1.0), (0.35, 0.0, 2.2), (1.4, 0.0, 2.0), (1.6, 0.0, 1.6)]
    for (a, b), thick in zip(itertools.pairwise(joints), (0.34, 0.26, 0.16), strict=True):
        link = _box(
            pv, _segment_frame(a, b), (math.dist(a, b), thick, thick), z0=-thick / 2, along=True
        )
        parts.append(link)
    for j, r in zip(joints[1:3], (0.21, 0.16), strict=True):
        parts.append(pv.Sphere(center=j, radius=r))
    body = pv.merge(parts).transform(np.array(world.matrix()), inplace=False)
    plotter.add_mesh(body, color=color, ambient=0.3, specular=0.3, smooth_shading=True)
    tool = pv.Sphere(center=joints[-1], radius=0.11).transform(
        np.array(world.matrix()), inplace=False
    )
    plotter.add_mesh(tool, color="#ff7f0e", ambient=0.3)


def _shade(color: str, factor: float) -> str:
    r, g, b = hex_to_rgb(color)
    return "#{:02x}{:02x}{:02x}".format(*(round(c * factor * 255) for c in (r, g, b)))
