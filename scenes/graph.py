"""The scene graph of a line: entities with stable ids, transforms, geometry and visuals.

:func:`build_graph` turns a :class:`scenes.spec.LineSpec` into a :class:`SceneGraph`; it is pure
(no I/O). Mesh footprints and published asset hashes come in from :mod:`scenes.assets`
(:func:`with_assets`). The *live state* types at the end (:class:`StationState`,
:class:`BufferLevel`, :class:`ConveyorParts`, :class:`LineState`) are what the twin streams about
these entities; :func:`part_position` places a part on a conveyor in the world.

Frame: metres, x east, y north, z up (the frame of the line file). Rotations are unit quaternions
``(x, y, z, w)``. Entity ids::

    line                  the root (identity transform)
    station/<station id>  a station, at its pose; geometry base at local z = 0
    buffer/<buffer id>    a buffer, at the middle of its path, turned along the flow
    conveyor/<buffer id>  the belt of a buffer that has a conveyor (child of its buffer)
    robot/<station id>    the robot of a station that has one (child of its station)

See ``docs/scene-graph.md``.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

from scenes.spec import Buffer, LineSpec, Station

log = logging.getLogger(__name__)

Vec3 = tuple[float, float, float]
Quat = tuple[float, float, float, float]

#: Height of a belt surface above the floor under its stations, metres.
BELT_HEIGHT = 0.8
#: Size of the box drawn for a buffer without a conveyor (x along the flow, y across, z up).
BUFFER_BOX: Vec3 = (0.8, 0.8, 0.5)
#: Footprint assumed for a mesh station whose normalized size is not known.
DEFAULT_MESH_SIZE: Vec3 = (1.5, 1.5, 1.5)
ROBOT_COLOR = "#59636e"
#: Side gap between parallel buffers that join the same two stations, metres.
LANE_GAP = 0.4

#: Station-type colours, assigned to types in order of first appearance in the line file
#: (and reused cyclically beyond ten types). Colourblind-friendly "Tableau 10".
TYPE_PALETTE: tuple[str, ...] = (
    "#4e79a7",
    "#f28e2b",
    "#76b7b2",
    "#b07aa1",
    "#edc948",
    "#59a14f",
    "#ff9da7",
    "#9c755f",
    "#e15759",
    "#bab0ac",
)
BUFFER_COLOR = "#8d99a6"
CONVEYOR_COLOR = "#3b3f45"

NAMED_COLORS: Mapping[str, str] = {
    "black": "#000000",
    "white": "#ffffff",
    "red": "#d62728",
    "green": "#2ca02c",
    "blue": "#1f77b4",
    "yellow": "#f4d03f",
    "orange": "#ff7f0e",
    "purple": "#9467bd",
    "pink": "#e377c2",
    "brown": "#8c564b",
    "grey": "#7f7f7f",
    "gray": "#7f7f7f",
    "silver": "#c0c0c0",
    "cyan": "#17becf",
    "teal": "#008080",
    "navy": "#000080",
    "olive": "#808000",
    "maroon": "#800000",
    "magenta": "#ff00ff",
    "gold": "#ffd700",
    "steelblue": "#4682b4",
}


# -- transforms --------------------------------------------------------------------------------


def quat_from_yaw(yaw_deg: float) -> Quat:
    """The rotation by ``yaw_deg`` about +z (counter-clockwise seen from above) as ``(x, y, z, w)``."""
    half = math.radians(yaw_deg) / 2.0
    return (0.0, 0.0, math.sin(half), math.cos(half))


def quat_multiply(a: Quat, b: Quat) -> Quat:
    """Hamilton product ``a * b`` (apply ``b`` first, then ``a``)."""
    ax, ay, az, aw = a
    bx, by, bz, bw = b
    return (
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
        aw * bw - ax * bx - ay * by - az * bz,
    )


def quat_rotate(q: Quat, v: Vec3) -> Vec3:
    """Rotate vector ``v`` by unit quaternion ``q``."""
    qx, qy, qz, qw = q
    # t = 2 q_vec x v; v' = v + w t + q_vec x t
    tx = 2.0 * (qy * v[2] - qz * v[1])
    ty = 2.0 * (qz * v[0] - qx * v[2])
    tz = 2.0 * (qx * v[1] - qy * v[0])
    return (
        v[0] + qw * tx + (qy * tz - qz * ty),
        v[1] + qw * ty + (qz * tx - qx * tz),
        v[2] + qw * tz + (qx * ty - qy * tx),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Transform:
    """A rigid transform: ``position`` (m) and unit quaternion ``rotation`` ``(x, y, z, w)``.

    Maps a point from the local frame to the parent frame: ``p_parent = R p_local + position``.
    """

    position: Vec3 = (0.0, 0.0, 0.0)
    rotation: Quat = (0.0, 0.0, 0.0, 1.0)

    @classmethod
    def from_yaw(cls, position: Vec3, yaw_deg: float) -> Transform:
        return cls(position=_vec(position), rotation=quat_from_yaw(yaw_deg))

    @property
    def yaw_deg(self) -> float:
        """Heading about +z in degrees in (-180, 180] (exact for rotations about z only)."""
        x, y, z, w = self.rotation
        return math.degrees(math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z)))

    def apply(self, point: Vec3) -> Vec3:
        r = quat_rotate(self.rotation, point)
        return (r[0] + self.position[0], r[1] + self.position[1], r[2] + self.position[2])

    def compose(self, child: Transform) -> Transform:
        """The transform of ``child``'s frame in this transform's parent frame."""
        return Transform(
            position=self.apply(child.position),
            rotation=quat_multiply(self.rotation, child.rotation),
        )

    def inverse(self) -> Transform:
        x, y, z, w = self.rotation
        inv: Quat = (-x, -y, -z, w)
        p = quat_rotate(inv, self.position)
        return Transform(position=(-p[0], -p[1], -p[2]), rotation=inv)

    def matrix(self) -> tuple[tuple[float, float, float, float], ...]:
        """Row-major 4x4 homogeneous matrix."""
        x, y, z, w = self.rotation
        px, py, pz = self.position
        return (
            (1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w), px),
            (2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w), py),
            (2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y), pz),
            (0.0, 0.0, 0.0, 1.0),
        )


# -- polylines ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Polyline:
    """A path of at least two points (metres); fractions run 0..1 by arc length."""

    points: tuple[Vec3, ...]

    def __post_init__(self) -> None:
        if len(self.points) < 2:
            raise ValueError("a polyline needs at least two points")

    @property
    def segment_lengths(self) -> tuple[float, ...]:
        return tuple(math.dist(a, b) for a, b in itertools.pairwise(self.points))

    @property
    def length(self) -> float:
        """Arc length in metres."""
        return math.fsum(self.segment_lengths)

    @property
    def headings_deg(self) -> tuple[float, ...]:
        """Heading of each segment in the xy plane, degrees counter-clockwise from +x."""
        return tuple(
            math.degrees(math.atan2(b[1] - a[1], b[0] - a[0]))
            for a, b in itertools.pairwise(self.points)
        )

    def _locate(self, fraction: float) -> tuple[int, float]:
        """Segment index and the fraction (0..1) within it at ``fraction`` of the arc length."""
        if not math.isfinite(fraction):
            raise ValueError(f"fraction must be finite, got {fraction}")
        f = min(1.0, max(0.0, fraction))
        lengths = self.segment_lengths
        total = math.fsum(lengths)
        if total <= 0.0:
            return 0, 0.0
        target = f * total
        acc = 0.0
        for i, seg in enumerate(lengths):
            if seg > 0.0 and target <= acc + seg:
                return i, (target - acc) / seg
            acc += seg
        last = max(i for i, seg in enumerate(lengths) if seg > 0.0)
        return last, 1.0

    def point_at(self, fraction: float) -> Vec3:
        """The point at ``fraction`` (clamped to 0..1) of the arc length."""
        i, t = self._locate(fraction)
        a, b = self.points[i], self.points[i + 1]
        return (a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t)

    def heading_at(self, fraction: float) -> float:
        """Heading (degrees) of the segment at ``fraction`` of the arc length."""
        i, _ = self._locate(fraction)
        return self.headings_deg[i]

    def transformed(self, transform: Transform) -> Polyline:
        return Polyline(points=tuple(transform.apply(p) for p in self.points))


# -- geometry and visuals ----------------------------------------------------------------------


class EntityKind(StrEnum):
    LINE = "line"
    STATION = "station"
    BUFFER = "buffer"
    CONVEYOR = "conveyor"
    ROBOT = "robot"


@dataclass(frozen=True, slots=True, kw_only=True)
class BoxGeometry:
    """An axis-aligned box in the entity frame, ``size`` (x, y, z) metres, base at z = 0.

    ``asset`` is the sha256 of its published GLB (see :mod:`scenes.assets`), once published.
    """

    size: Vec3
    asset: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class MeshGeometry:
    """A mesh file, normalized (Z up, centred on its footprint, base at z = 0) and scaled.

    ``size`` is its normalized bounding-box size when known; ``asset`` the sha256 of its GLB.
    """

    source: str
    scale: float = 1.0
    size: Vec3 | None = None
    asset: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ConveyorGeometry:
    """A flat belt of ``width`` along ``path`` (belt surface, in the entity frame).

    ``nominal_length`` and ``speed`` are the line file's (they set the transit time); the drawn
    path may be longer or shorter than ``nominal_length``.
    """

    path: Polyline
    width: float
    nominal_length: float
    speed: float
    pitch: float


@dataclass(frozen=True, slots=True, kw_only=True)
class RobotGeometry:
    """A robot described by a URDF (a file, or a name in ``pybullet_data``); its base is at the
    entity origin. Viewers without a URDF loader draw a stand-in."""

    urdf: str


Geometry = BoxGeometry | MeshGeometry | ConveyorGeometry | RobotGeometry


@dataclass(frozen=True, slots=True, kw_only=True)
class Visual:
    """How to draw an entity: ``color`` as ``#rrggbb``, a ``label``, and the ``category`` it is
    listed under in a legend (the station type, ``buffer`` or ``conveyor``)."""

    color: str
    label: str
    category: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Entity:
    """One node of the scene graph.

    ``index`` is a dense number (0 = ``line``) in file order, for binary streams; ``ref`` is the
    station or buffer id in the line file (the line name for ``line``). ``transform`` is local,
    relative to ``parent``.
    """

    id: str
    index: int
    kind: EntityKind
    ref: str
    parent: str | None
    transform: Transform
    geometry: Geometry | None
    visual: Visual


@dataclass(frozen=True, slots=True, kw_only=True)
class SceneGraph:
    """All entities of a line, parents before children, in a stable order."""

    name: str
    entities: tuple[Entity, ...]
    _by_id: Mapping[str, Entity] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_id = {e.id: e for e in self.entities}
        if len(by_id) != len(self.entities):
            raise ValueError("entity ids must be unique")
        object.__setattr__(self, "_by_id", by_id)

    def entity(self, entity_id: str) -> Entity:
        return self._by_id[entity_id]

    def children(self, entity_id: str) -> tuple[Entity, ...]:
        return tuple(e for e in self.entities if e.parent == entity_id)

    def of_kind(self, kind: EntityKind) -> tuple[Entity, ...]:
        return tuple(e for e in self.entities if e.kind is kind)

    def world_transform(self, entity_id: str) -> Transform:
        e = self.entity(entity_id)
        if e.parent is None:
            return e.transform
        return self.world_transform(e.parent).compose(e.transform)

    def conveyor_path(self, buffer_id: str) -> Polyline:
        """The belt surface of buffer ``buffer_id``'s conveyor, in world coordinates."""
        eid = conveyor_id(buffer_id)
        geometry = self.entity(eid).geometry
        if not isinstance(geometry, ConveyorGeometry):
            raise KeyError(eid)  # pragma: no cover - conveyors always carry ConveyorGeometry
        return geometry.path.transformed(self.world_transform(eid))

    def legend(self) -> tuple[tuple[str, str], ...]:
        """``(station type, colour)`` of each type, in order of first appearance (the colour
        of the first station of the type, which a file may override)."""
        seen: dict[str, str] = {}
        for e in self.of_kind(EntityKind.STATION):
            seen.setdefault(e.visual.category, e.visual.color)
        return tuple(seen.items())


def station_id(ref: str) -> str:
    return f"station/{ref}"


def buffer_id(ref: str) -> str:
    return f"buffer/{ref}"


def conveyor_id(ref: str) -> str:
    return f"conveyor/{ref}"


def robot_id(ref: str) -> str:
    return f"robot/{ref}"


LINE_ID = "line"


def type_colors(spec: LineSpec) -> dict[str, str]:
    """Palette colour of each station type, in order of first appearance."""
    out: dict[str, str] = {}
    for st in spec.stations:
        if st.type not in out:
            out[st.type] = TYPE_PALETTE[len(out) % len(TYPE_PALETTE)]
    return out


def parse_color(text: str) -> str | None:
    """``#rgb``, ``#rrggbb`` or a basic colour name as ``#rrggbb``; ``None`` if not understood."""
    t = text.strip().lower()
    if t in NAMED_COLORS:
        return NAMED_COLORS[t]
    if t.startswith("#") and len(t) in (4, 7) and all(c in "0123456789abcdef" for c in t[1:]):
        if len(t) == 4:
            return "#" + "".join(c * 2 for c in t[1:])
        return t
    return None


def hex_to_rgb(color: str) -> tuple[float, float, float]:
    """``#rrggbb`` as floats in 0..1."""
    return (int(color[1:3], 16) / 255.0, int(color[3:5], 16) / 255.0, int(color[5:7], 16) / 255.0)


# -- building ----------------------------------------------------------------------------------


def build_graph(spec: LineSpec, *, mesh_sizes: Mapping[str, Vec3] | None = None) -> SceneGraph:
    """The scene graph of ``spec``.

    ``mesh_sizes`` maps station ids to the normalized size of their mesh (from
    :func:`scenes.assets.normalize_mesh`); mesh stations without one get
    :data:`DEFAULT_MESH_SIZE` as footprint. Asset hashes are added by :func:`with_assets`.
    """
    sizes = dict(mesh_sizes or {})
    colors = type_colors(spec)
    entities: list[Entity] = [
        Entity(
            id=LINE_ID,
            index=0,
            kind=EntityKind.LINE,
            ref=spec.name,
            parent=None,
            transform=Transform(),
            geometry=None,
            visual=Visual(color="#ffffff", label=spec.name, category="line"),
        )
    ]
    footprints: dict[str, Vec3] = {}
    for st in spec.stations:
        geometry: Geometry
        if st.geometry.mesh is not None:
            size = sizes.get(st.id)
            geometry = MeshGeometry(
                source=st.geometry.mesh,
                scale=st.geometry.scale,
                size=_vec(size) if size is not None else None,
            )
            footprints[st.id] = geometry.size or DEFAULT_MESH_SIZE
        else:
            box = st.geometry.box or DEFAULT_MESH_SIZE
            geometry = BoxGeometry(
                size=(
                    box[0] * st.geometry.scale,
                    box[1] * st.geometry.scale,
                    box[2] * st.geometry.scale,
                )
            )
            footprints[st.id] = geometry.size
        entities.append(
            Entity(
                id=station_id(st.id),
                index=len(entities),
                kind=EntityKind.STATION,
                ref=st.id,
                parent=LINE_ID,
                transform=Transform.from_yaw(st.pose.position, st.pose.yaw_deg),
                geometry=geometry,
                visual=Visual(
                    color=_station_color(st, colors[st.type]),
                    label=st.id if st.servers == 1 else f"{st.id} ×{st.servers}",
                    category=st.type,
                ),
            )
        )
        if st.robot is not None:
            entities.append(
                Entity(
                    id=robot_id(st.id),
                    index=len(entities),
                    kind=EntityKind.ROBOT,
                    ref=st.id,
                    parent=station_id(st.id),
                    transform=Transform.from_yaw(st.robot.pose.position, st.robot.pose.yaw_deg),
                    geometry=RobotGeometry(urdf=st.robot.urdf),
                    visual=Visual(color=ROBOT_COLOR, label=st.id, category="robot"),
                )
            )

    lanes = _lane_offsets(spec.buffers)
    by_id = {st.id: st for st in spec.stations}
    for buf in spec.buffers:
        if buf.conveyor is not None and buf.conveyor.path:
            path = Polyline(points=tuple(_vec(p) for p in buf.conveyor.path))
        else:
            path = buffer_path(
                by_id[buf.source],
                by_id[buf.target],
                footprints[buf.source],
                footprints[buf.target],
                lane_offset=lanes[buf.id],
            )
        mid = path.point_at(0.5)
        frame = Transform.from_yaw(mid, path.heading_at(0.5))
        to_local = frame.inverse()
        conv = buf.conveyor
        geometry_b: Geometry | None = None
        if conv is None and buf.capacity > 0:
            base = (mid[0], mid[1], _floor_z(by_id[buf.source], by_id[buf.target]))
            frame = Transform.from_yaw(base, path.heading_at(0.5))
            geometry_b = BoxGeometry(size=BUFFER_BOX)
        entities.append(
            Entity(
                id=buffer_id(buf.id),
                index=len(entities),
                kind=EntityKind.BUFFER,
                ref=buf.id,
                parent=LINE_ID,
                transform=frame,
                geometry=geometry_b,
                visual=Visual(
                    color=BUFFER_COLOR, label=f"{buf.id} [{buf.capacity}]", category="buffer"
                ),
            )
        )
        if conv is not None:
            entities.append(
                Entity(
                    id=conveyor_id(buf.id),
                    index=len(entities),
                    kind=EntityKind.CONVEYOR,
                    ref=buf.id,
                    parent=buffer_id(buf.id),
                    transform=Transform(),
                    geometry=ConveyorGeometry(
                        path=path.transformed(to_local),
                        width=conv.width,
                        nominal_length=conv.length,
                        speed=conv.speed,
                        pitch=conv.pitch,
                    ),
                    visual=Visual(color=CONVEYOR_COLOR, label=buf.id, category="conveyor"),
                )
            )
    return SceneGraph(name=spec.name, entities=tuple(entities))


def with_assets(graph: SceneGraph, assets: Mapping[str, str]) -> SceneGraph:
    """``graph`` with the box and mesh geometries of the entities in ``assets`` (entity id to
    GLB sha256) pointing at their published assets."""
    out: list[Entity] = []
    for e in graph.entities:
        sha = assets.get(e.id)
        if sha is not None and isinstance(e.geometry, BoxGeometry | MeshGeometry):
            e = replace(e, geometry=replace(e.geometry, asset=sha))
        out.append(e)
    return replace(graph, entities=tuple(out))


def buffer_path(
    source: Station,
    target: Station,
    source_size: Vec3,
    target_size: Vec3,
    *,
    lane_offset: float = 0.0,
) -> Polyline:
    """The straight path of a buffer from ``source`` to ``target`` at belt height.

    It starts and ends at the edges of the two footprints (boxes of ``*_size`` at the stations'
    poses), shifted sideways by ``lane_offset`` (positive to the left of the flow). When the
    footprints overlap or touch it runs from pose to pose.
    """
    a = source.pose.position
    b = target.pose.position
    dx, dy = b[0] - a[0], b[1] - a[1]
    dist = math.hypot(dx, dy)
    za = a[2] + BELT_HEIGHT
    zb = b[2] + BELT_HEIGHT
    if dist < 1e-9:
        return Polyline(points=((a[0], a[1], za), (b[0] + 1e-3, b[1], zb)))
    ux, uy = dx / dist, dy / dist
    nx, ny = -uy * lane_offset, ux * lane_offset
    ta = _exit_distance(source.pose.yaw_deg, source_size, (ux, uy), (nx, ny))
    tb = _exit_distance(target.pose.yaw_deg, target_size, (-ux, -uy), (nx, ny))
    if ta + tb >= dist - 1e-6:
        ta = tb = 0.0
    start = (a[0] + nx + ux * ta, a[1] + ny + uy * ta, za)
    end = (b[0] + nx - ux * tb, b[1] + ny - uy * tb, zb)
    return Polyline(points=(start, end))


def _exit_distance(
    yaw_deg: float, size: Vec3, direction: tuple[float, float], offset: tuple[float, float]
) -> float:
    """How far a ray from ``offset`` (relative to a footprint's centre) along ``direction`` runs
    inside a ``size`` box turned by ``yaw_deg``; 0 if it starts outside."""
    c, s = math.cos(math.radians(yaw_deg)), math.sin(math.radians(yaw_deg))
    lx, ly = c * direction[0] + s * direction[1], -s * direction[0] + c * direction[1]
    ox, oy = c * offset[0] + s * offset[1], -s * offset[0] + c * offset[1]
    hx, hy = size[0] / 2.0, size[1] / 2.0
    if abs(ox) >= hx or abs(oy) >= hy:
        return 0.0
    best = math.inf
    for o, d, h in ((ox, lx, hx), (oy, ly, hy)):
        if abs(d) > 1e-12:
            best = min(best, ((h if d > 0 else -h) - o) / d)
    return 0.0 if best == math.inf else best


def _lane_offsets(buffers: Iterable[Buffer]) -> dict[str, float]:
    """Sideways offsets that keep buffers between the same two stations apart.

    Lanes are counted along the direction from the smaller station id to the larger one, so a
    buffer and its reverse (a rework loop) get opposite sides.
    """
    groups: dict[tuple[str, str], list[Buffer]] = {}
    for b in buffers:
        if b.conveyor is not None and b.conveyor.path:
            continue
        groups.setdefault((min(b.source, b.target), max(b.source, b.target)), []).append(b)
    out: dict[str, float] = {b.id: 0.0 for b in buffers}
    for (lo, _), group in groups.items():
        if len(group) < 2:
            continue
        widths = [b.conveyor.width if b.conveyor else BUFFER_BOX[1] for b in group]
        step = max(widths) + LANE_GAP
        for i, b in enumerate(group):
            along = (i - (len(group) - 1) / 2.0) * step
            out[b.id] = along if b.source == lo else -along
    return out


def _floor_z(a: Station, b: Station) -> float:
    return (a.pose.position[2] + b.pose.position[2]) / 2.0


def _station_color(st: Station, default: str) -> str:
    if st.geometry.color is None:
        return default
    parsed = parse_color(st.geometry.color)
    if parsed is None:
        log.warning(
            "station %s: colour %r not understood; using its type colour", st.id, st.geometry.color
        )
        return default
    return parsed


def _vec(v: Sequence[float]) -> Vec3:
    return (float(v[0]), float(v[1]), float(v[2]))


# -- live state --------------------------------------------------------------------------------


class MachineState(StrEnum):
    """What a station is doing, as the twin shows it (``docs/process-semantics.md``).

    ``busy``, ``blocked``, ``starved`` (up with no part: the semantics' ``idle``) and ``down``
    are the process states; ``stale`` means no fresh value arrived in time, whatever the
    machine may be doing.
    """

    BUSY = "busy"
    BLOCKED = "blocked"
    STARVED = "starved"
    DOWN = "down"
    STALE = "stale"


#: Andon-style colours of machine states.
STATE_COLORS: Mapping[MachineState, str] = {
    MachineState.BUSY: "#2ca02c",
    MachineState.BLOCKED: "#ff7f0e",
    MachineState.STARVED: "#f2c318",
    MachineState.DOWN: "#d62728",
    MachineState.STALE: "#9e9e9e",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class StationState:
    """The state of station ``station`` (a station id) at ``time_s``."""

    station: str
    state: MachineState
    time_s: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class BufferLevel:
    """How many parts buffer ``buffer`` holds (in transit on its conveyor included)."""

    buffer: str
    level: int
    time_s: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ConveyorParts:
    """Parts on the conveyor of buffer ``buffer``: each part's progress along the belt,
    0 at the source end, 1 at the target end."""

    buffer: str
    progress: tuple[float, ...]
    time_s: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class LineState:
    """A snapshot of the live state of a line at ``time_s``. A station with no entry is shown
    as :attr:`MachineState.STALE`."""

    time_s: float = 0.0
    stations: tuple[StationState, ...] = ()
    buffers: tuple[BufferLevel, ...] = ()
    conveyors: tuple[ConveyorParts, ...] = ()

    def station_state(self, station: str) -> MachineState:
        for s in self.stations:
            if s.station == station:
                return s.state
        return MachineState.STALE

    def buffer_level(self, buffer: str) -> int | None:
        for b in self.buffers:
            if b.buffer == buffer:
                return b.level
        return None

    def parts_on(self, buffer: str) -> tuple[float, ...]:
        for c in self.conveyors:
            if c.buffer == buffer:
                return c.progress
        return ()


def part_position(graph: SceneGraph, buffer: str, progress: float) -> Vec3:
    """World position (on the belt surface) of a part at ``progress`` (0..1, clamped) along the
    conveyor of buffer ``buffer``. Raises ``KeyError`` for a buffer without a conveyor and
    ``ValueError`` for a non-finite progress."""
    return graph.conveyor_path(buffer).point_at(progress)


def part_positions(graph: SceneGraph, parts: ConveyorParts) -> tuple[Vec3, ...]:
    """World positions of all parts of ``parts``."""
    path = graph.conveyor_path(parts.buffer)
    return tuple(path.point_at(p) for p in parts.progress)
