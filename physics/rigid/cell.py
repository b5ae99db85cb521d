"""A robot cell: one pybullet world with a robot, two conveyors, a station table and parts.

A :class:`Cell` owns its pybullet client (DIRECT mode; never the global default client) and a
second one for kinematics (:class:`physics.rigid.motion.Kinematics`). It is stepped at a fixed
``dt`` by :meth:`Cell.step` / :meth:`Cell.advance`; every step it, in this order: lets parts
arrive on the infeed, steps the running pick-and-place cycle (``physics.rigid.task``), drives the
conveyors, steps the world, and checks the robot's contacts and the parts' heights.

Bodies:

- the floor (a plane) and the station table are static; the belts are static boxes whose drive
  is kinematic: a part resting on a belt has its velocity set to the belt's, and the belt's own
  friction is zero, so the solver never fights the imposed velocity (a moving belt body would
  have to be teleported back every step, and friction would make the parts' speed depend on
  the solver). An infeed is an accumulating conveyor: a part that reaches the end stop or the
  part ahead of it (within ``part_gap``) is stopped and the belt slips under it.
- the robot is a URDF multibody on a fixed base, driven by pybullet position motors that track
  the cycle's joint trajectories.
- parts are dynamic boxes (mass, friction) from a pool created on demand; a part not in use is
  parked (asleep, far above the cell), so the set of bodies only grows. That is
  what lets :meth:`Cell.restore` put back a snapshot: pybullet restores a state only into a
  world with the same bodies.

Alarms (see ``physics.rigid.events``): the robot touching anything but its part (or its base on
the floor) is a ``COLLISION`` that fails the cycle and stops the robot until
:meth:`Cell.reset_fault`; a part below every support surface is ``PART_DROPPED``; a person
(:meth:`Cell.enter_keepout`) inside the keep-out field stops the robot (``KEEPOUT_ENTERED``)
until it is empty again (``KEEPOUT_CLEARED``).

Poses are read in batches (:meth:`link_poses`: one ``getLinkStates`` call for all links) in the
world frame, quaternions ``(x, y, z, w)``. Same config, seed and command sequence: the same
trajectory, step for step.

pybullet holds the GIL and is not thread-safe: use one thread per process for cells, and
:mod:`physics.rigid.pool` to spread cells over processes.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import pybullet as p
import pybullet_data
from numpy.typing import NDArray

from scenes.spec import Station

from . import task
from .events import CellEvent, CellEventKind, CycleResult
from .layout import CellConfig, ConveyorConfig, Vec2
from .motion import (
    FloatArray,
    JointTrajectory,
    Kinematics,
    Quat,
    RigidError,
    UnreachableError,
    Vec3,
    plan_joint_move,
    read_joints,
    tool_down,
)
from .task import Cycle, Phase

log = logging.getLogger(__name__)

#: Where parked parts sleep (m above the robot base, spaced 1 m along x).
_PARK_Z = 50.0


class PlaceTarget(StrEnum):
    """Where a cycle puts its part: at the start of the outfeed, or on the station table."""

    OUTFEED = "outfeed"
    STATION = "station"


class PartState(StrEnum):
    PARKED = "parked"
    CONVEYOR = "conveyor"
    HELD = "held"
    LOOSE = "loose"  # resting somewhere else (the table) or in flight
    DROPPED = "dropped"


@dataclass(slots=True, kw_only=True)
class _Part:
    body: int
    serial: int = -1
    state: PartState = PartState.PARKED
    conveyor: int = -1
    speed: float | None = None  # belt speed last imposed (None: none imposed)


@dataclass(frozen=True, slots=True, kw_only=True)
class Fixture:
    """A static body of the cell, for drawing: a box of ``size`` (m) at a world pose."""

    name: str
    kind: str
    size: Vec3
    position: Vec3
    orientation: Quat


@dataclass(frozen=True, slots=True, kw_only=True)
class Person:
    """A person in the cell (for a trainer's scenario): a standing box of ``size`` at ``position``
    (world x, y; m)."""

    name: str
    position: Vec2
    size: Vec3 = (0.5, 0.35, 1.8)


@dataclass(slots=True, kw_only=True)
class _Dyn:
    """Everything about a cell that changes and is not in pybullet's state (snapshotted whole)."""

    t: float = 0.0
    steps: int = 0
    rng: Mapping[str, Any] = field(default_factory=dict)
    parts: list[_Part] = field(default_factory=list)
    serials: int = 0
    next_arrival: float | None = None
    cycle: Cycle | None = None
    cycles: int = 0
    results: dict[int, CycleResult] = field(default_factory=dict)
    held: int | None = None  # pool index of the held part
    grasp: tuple[Vec3, Quat] | None = None  # part pose in the tool link frame
    hold_q: FloatArray | None = None  # the last joint targets commanded (rad)
    hold_qd: FloatArray | None = None  # and target velocities (rad/s)
    fault: str | None = None
    people: dict[str, Person] = field(default_factory=dict)
    ready: int | None = None  # pool index of the part at rest at the infeed's end stop
    stopped: bool = False
    contacts: set[tuple[int, int]] = field(default_factory=set)
    arrived: int = 0
    delivered: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class CellSnapshot:
    """A saved cell: pybullet's ``.bullet`` state as bytes and the cell's own state. Restore it
    into the same cell, or into another cell built from the same config (another process)."""

    config: CellConfig
    bodies: int
    bullet: bytes
    dyn: _Dyn


class CycleHandle:
    """A cycle started by :meth:`Cell.start_cycle`: ``id``, ``done`` and ``result``."""

    __slots__ = ("_cell", "id")

    def __init__(self, cell: Cell, cycle_id: int) -> None:
        self._cell = cell
        self.id = cycle_id

    @property
    def done(self) -> bool:
        return self.id in self._cell._dyn.results

    @property
    def result(self) -> CycleResult | None:
        return self._cell._dyn.results.get(self.id)

    def __repr__(self) -> str:
        return f"CycleHandle(id={self.id}, done={self.done})"


def _yaw_quat(yaw: float) -> Quat:
    return (0.0, 0.0, math.sin(yaw / 2.0), math.cos(yaw / 2.0))


class Cell:
    """A robot cell in its own pybullet client. See the module docstring."""

    def __init__(self, config: CellConfig | None = None, *, seed: int = 0) -> None:
        self.config = cfg = config or CellConfig()
        self.seed = seed
        self.name = cfg.name
        self.dt = cfg.dt
        self._events: list[CellEvent] = []
        self._constraint: int | None = None
        self._rng = np.random.default_rng(seed)
        self._dyn = _Dyn()
        self._yaw = math.radians(cfg.robot.base_yaw_deg)
        self._base = cfg.robot.base_position
        self._base_orn = _yaw_quat(self._yaw)
        self._tool_orn = tool_down(self._yaw)
        for conv in (cfg.infeed, cfg.outfeed):
            if conv.speed * cfg.control_every * cfg.dt >= cfg.part_gap:
                raise RigidError(
                    f"cell {cfg.name!r}: {conv.name} moves a part {conv.speed * cfg.control_every * cfg.dt:.4f} m"
                    f" between conveyor updates, not less than part_gap ({cfg.part_gap} m):"
                    " lower control_every or raise part_gap"
                )
        self.client: int = p.connect(p.DIRECT)
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        self._dyn.next_arrival = cfg.arrival.first_s if cfg.arrival.interval_s is not None else None

    @classmethod
    def from_spec(cls, station: Station, *, seed: int = 0, **overrides: object) -> Cell:
        """The default cell of a line file's station (its robot's URDF and base pose)."""
        return cls(CellConfig.from_station(station, **overrides), seed=seed)

    # --- construction -------------------------------------------------------------------

    def _world(self, local: Vec3) -> Vec3:
        c, s = math.cos(self._yaw), math.sin(self._yaw)
        bx, by, bz = self._base
        return (bx + c * local[0] - s * local[1], by + s * local[0] + c * local[1], bz + local[2])

    def _build(self) -> None:
        cfg, cid = self.config, self.client
        p.setAdditionalSearchPath(pybullet_data.getDataPath(), physicsClientId=cid)
        p.setPhysicsEngineParameter(
            fixedTimeStep=cfg.dt,
            numSolverIterations=cfg.solver_iterations,
            deterministicOverlappingPairs=1,
            physicsClientId=cid,
        )
        p.setGravity(0.0, 0.0, -9.81, physicsClientId=cid)
        self._fixtures: list[Fixture] = []
        self._names: dict[int, str] = {}
        plane = p.createCollisionShape(p.GEOM_PLANE, physicsClientId=cid)
        self.floor = p.createMultiBody(0.0, plane, basePosition=(0, 0, 0), physicsClientId=cid)
        self._names[self.floor] = "floor"
        try:
            self.robot: int = p.loadURDF(
                cfg.robot.urdf,
                self._base,
                self._base_orn,
                useFixedBase=True,
                physicsClientId=cid,
            )
        except p.error as exc:
            raise RigidError(f"cannot load robot URDF {cfg.robot.urdf!r}: {exc}") from exc
        self._names[self.robot] = "robot"
        self.joints = read_joints(self.robot, cid)
        self._jidx = [j.index for j in self.joints]
        self.kin = Kinematics(
            cfg.robot.urdf,
            base_position=self._base,
            base_orientation=self._base_orn,
            search_path=pybullet_data.getDataPath(),
            ee_link=cfg.robot.ee_link,
            tool_offset=cfg.robot.tool_offset,
        )
        self._vmax = self.kin.max_velocity * cfg.robot.velocity_scale
        self._amax = np.full(len(self.joints), cfg.robot.max_acceleration)
        self._forces = [j.max_effort for j in self.joints]
        n_links = p.getNumJoints(self.robot, physicsClientId=cid)
        self._link_ids = list(range(n_links))
        base_name = p.getBodyInfo(self.robot, physicsClientId=cid)[0].decode()
        self.link_names: tuple[str, ...] = (
            base_name,
            *(
                p.getJointInfo(self.robot, j, physicsClientId=cid)[12].decode()
                for j in self._link_ids
            ),
        )
        self._belts = (cfg.infeed, cfg.outfeed)
        for conv in self._belts:
            self._add_belt(conv)
        ends = [
            (self._world((c.start[0], c.start[1], c.top_z)), self._world((c.end[0], c.end[1], 0.0)))
            for c in self._belts
        ]
        self._belt_origin = np.array([[a[0], a[1]] for a, _ in ends])
        self._belt_len = np.array([c.length for c in self._belts])
        self._belt_u = (
            np.array([[b[0] - a[0], b[1] - a[1]] for a, b in ends]) / self._belt_len[:, None]
        )
        self._belt_top = np.array([a[2] for a, _ in ends])
        self._belt_half_width = np.array([c.width / 2.0 for c in self._belts])
        t = cfg.table
        self._add_box(
            "station",
            "table",
            (t.size[0], t.size[1], t.top_z),
            (t.center[0], t.center[1], t.top_z / 2.0),
        )
        self._supports_z = self._base[2] + min(cfg.infeed.top_z, cfg.outfeed.top_z, t.top_z)
        hx, hy, hz = (s / 2.0 for s in cfg.part.size)
        self._part_shape = p.createCollisionShape(
            p.GEOM_BOX, halfExtents=(hx, hy, hz), physicsClientId=cid
        )
        home = (
            np.array(cfg.robot.home, dtype=np.float64)
            if cfg.robot.home is not None
            else self._default_home()
        )
        for j, q in zip(self._jidx, home, strict=True):
            p.resetJointState(self.robot, j, float(q), 0.0, physicsClientId=cid)
        self.home: FloatArray = home
        self.command(home.copy(), np.zeros_like(home))

    def _default_home(self) -> FloatArray:
        cfg = self.config
        a, b = cfg.infeed.end, cfg.outfeed.start
        mid = ((a[0] + b[0]) / 2.0, (a[1] + b[1]) / 2.0)
        z = max(cfg.infeed.top_z, cfg.outfeed.top_z) + cfg.part.size[2] + cfg.clearance
        seed = np.clip(
            np.array([0.0, 0.5, 0.0, -1.2, 0.0, 1.2, 0.0][: len(self.joints)]),
            self.kin.lower,
            self.kin.upper,
        )
        if seed.size < len(self.joints):
            seed = np.zeros(len(self.joints))
        try:
            return self.kin.solve(self._world((mid[0], mid[1], z)), self._tool_orn, seed=seed)
        except UnreachableError:
            log.warning("cell %s: no IK home pose above the cell; using zero", self.name)
            return np.zeros(len(self.joints))

    def _add_box(self, name: str, kind: str, size: Vec3, center: Vec3, yaw: float = 0.0) -> int:
        cid = self.client
        half = (size[0] / 2.0, size[1] / 2.0, size[2] / 2.0)
        shape = p.createCollisionShape(p.GEOM_BOX, halfExtents=half, physicsClientId=cid)
        pos, orn = self._world(center), _yaw_quat(self._yaw + yaw)
        body = p.createMultiBody(
            0.0, shape, basePosition=pos, baseOrientation=orn, physicsClientId=cid
        )
        self._names[body] = name
        self._fixtures.append(
            Fixture(name=name, kind=kind, size=size, position=pos, orientation=orn)
        )
        return int(body)

    def _add_belt(self, conv: ConveyorConfig) -> None:
        (x0, y0), (x1, y1) = conv.start, conv.end
        yaw = math.atan2(y1 - y0, x1 - x0)
        center = ((x0 + x1) / 2.0, (y0 + y1) / 2.0, conv.top_z - conv.thickness / 2.0)
        body = self._add_box(
            conv.name, "conveyor", (conv.length, conv.width, conv.thickness), center, yaw
        )
        p.changeDynamics(body, -1, lateralFriction=0.0, physicsClientId=self.client)

    def add_obstacle(self, name: str, size: Vec3, center: Vec3) -> None:
        """Add a static box (``size`` m, centre in the robot base frame) to the cell.

        Snapshots taken before it cannot be restored afterwards (the bodies differ)."""
        self._add_box(name, "obstacle", size, center)

    def close(self) -> None:
        """Disconnect the cell's pybullet clients (idempotent)."""
        if getattr(self, "kin", None) is not None:
            self.kin.close()
        if self.client >= 0:
            p.disconnect(self.client)
            self.client = -1

    def __enter__(self) -> Cell:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- parts --------------------------------------------------------------------------

    def _new_part_body(self) -> _Part:
        cfg, cid = self.config, self.client
        i = len(self._dyn.parts)
        body = p.createMultiBody(
            cfg.part.mass,
            self._part_shape,
            basePosition=self._park_position(i),
            useMaximalCoordinates=True,
            physicsClientId=cid,
        )
        p.changeDynamics(
            body,
            -1,
            lateralFriction=cfg.part.friction,
            restitution=cfg.part.restitution,
            linearDamping=0.0,
            angularDamping=0.0,
            physicsClientId=cid,
        )
        self._names[body] = "part"
        part = _Part(body=body)
        self._dyn.parts.append(part)
        self._park(part)
        return part

    def _park(self, part: _Part) -> None:
        # Parked parts stay dynamic bodies with their collision filters (pybullet re-adds a
        # body to the world when its mass or filter changes, which breaks restoring a saved
        # state): they are put to sleep far above the cell, 1 m apart, where nothing touches.
        cid, i = self.client, self._dyn.parts.index(part)
        part.state, part.serial, part.conveyor, part.speed = PartState.PARKED, -1, -1, None
        p.resetBasePositionAndOrientation(
            part.body, self._park_position(i), (0, 0, 0, 1), physicsClientId=cid
        )
        p.resetBaseVelocity(part.body, (0, 0, 0), (0, 0, 0), physicsClientId=cid)
        self._set_activation(part)

    def _park_position(self, i: int) -> Vec3:
        bx, by, bz = self._base
        return (bx + float(i), by, bz + _PARK_Z)

    def _set_activation(self, part: _Part) -> None:
        if part.state is PartState.PARKED:
            state = p.ACTIVATION_STATE_SLEEP | p.ACTIVATION_STATE_DISABLE_WAKEUP
        elif self.config.sleeping:
            state = p.ACTIVATION_STATE_ENABLE_WAKEUP | p.ACTIVATION_STATE_ENABLE_SLEEPING
        else:
            state = p.ACTIVATION_STATE_ENABLE_WAKEUP | p.ACTIVATION_STATE_DISABLE_SLEEPING
        p.changeDynamics(part.body, -1, activationState=state, physicsClientId=self.client)
        if part.state is not PartState.PARKED:
            p.changeDynamics(
                part.body,
                -1,
                activationState=p.ACTIVATION_STATE_WAKE_UP,
                physicsClientId=self.client,
            )

    def spawn_part(
        self, conveyor: str = "infeed", *, s: float | None = None, lateral: float = 0.0
    ) -> int:
        """Put a new part on a conveyor at ``s`` metres from its start (default: its first
        slot) and ``lateral`` metres left of its centre line; returns the part's serial number.

        Raises :class:`RigidError` when that place is taken."""
        ci = self._conveyor_index(conveyor)
        conv = self._belts[ci]
        half = self.config.part.size[1] / 2.0
        s = half if s is None else s
        if not half <= s <= conv.length - half:
            raise RigidError(f"s={s:.3f} m is off the {conv.name} ({conv.length:.3f} m)")
        for other in self._dyn.parts:
            if other.state is PartState.CONVEYOR and other.conveyor == ci:
                os_, _ = self._along(ci, self._pos(other))
                if abs(os_ - s) < 2.0 * half + self.config.part_gap:
                    raise RigidError(f"{conv.name} is occupied at s={s:.3f} m")
        part = next((q for q in self._dyn.parts if q.state is PartState.PARKED), None)
        if part is None:
            part = self._new_part_body()
        (x0, y0), (x1, y1) = conv.start, conv.end
        ux, uy = (x1 - x0) / conv.length, (y1 - y0) / conv.length
        local = (
            x0 + ux * s - uy * lateral,
            y0 + uy * s + ux * lateral,
            conv.top_z + self.config.part.size[2] / 2.0 + 5e-4,
        )
        yaw = self._yaw + math.atan2(uy, ux)
        part.state = PartState.CONVEYOR
        self._set_activation(part)
        p.resetBasePositionAndOrientation(
            part.body, self._world(local), _yaw_quat(yaw), physicsClientId=self.client
        )
        p.resetBaseVelocity(part.body, (0, 0, 0), (0, 0, 0), physicsClientId=self.client)
        part.serial = self._dyn.serials
        self._dyn.serials += 1
        part.state, part.conveyor, part.speed = PartState.CONVEYOR, ci, None
        return part.serial

    def _conveyor_index(self, name: str) -> int:
        for i, c in enumerate(self._belts):
            if c.name == name:
                return i
        raise RigidError(f"no conveyor {name!r} in cell {self.name!r}")

    def _pos(self, part: _Part) -> Vec3:
        pos, _ = p.getBasePositionAndOrientation(part.body, physicsClientId=self.client)
        return (float(pos[0]), float(pos[1]), float(pos[2]))

    def _along(self, ci: int, pos: Vec3) -> tuple[float, float]:
        """(distance along the belt from its start, lateral offset) of a world position."""
        (sx, sy), (ux, uy) = self._belt_origin[ci], self._belt_u[ci]
        dx, dy = pos[0] - sx, pos[1] - sy
        return float(dx * ux + dy * uy), float(-dx * uy + dy * ux)

    def _arrivals(self) -> None:
        arr = self.config.arrival
        d = self._dyn
        if d.next_arrival is None or d.t + 1e-12 < d.next_arrival or arr.interval_s is None:
            return
        lateral = float(self._rng.uniform(-arr.lateral_jitter, arr.lateral_jitter))
        try:
            serial = self.spawn_part("infeed", lateral=lateral)
        except RigidError:
            return  # the infeed's first slot is taken: try again next step
        d.arrived += 1
        self._emit(CellEventKind.PART_ARRIVED, f"part {serial} arrived", part=serial)
        gap = arr.interval_s + float(self._rng.uniform(-arr.jitter_s, arr.jitter_s))
        d.next_arrival = d.t + max(gap, self.dt)

    def _drive_conveyors(self) -> None:
        """Impose belt velocities, stop parts at the end stop and behind each other, detect
        parts that land on a belt, leave the cell or fall (positions read once, then numpy)."""
        cfg, cid, d = self.config, self.client, self._dyn
        live = [
            q for q in d.parts if q.state in (PartState.CONVEYOR, PartState.LOOSE, PartState.HELD)
        ]
        d.ready = None
        if not live:
            return
        half_len, half_h = cfg.part.size[1] / 2.0, cfg.part.size[2] / 2.0
        xyz = np.array(
            [p.getBasePositionAndOrientation(q.body, physicsClientId=cid)[0] for q in live]
        )
        rel = xyz[None, :, :2] - self._belt_origin[:, None, :]  # (belts, parts, 2)
        u = self._belt_u[:, None, :]
        s_all = rel[..., 0] * u[..., 0] + rel[..., 1] * u[..., 1]
        lat = rel[..., 1] * u[..., 0] - rel[..., 0] * u[..., 1]
        over = (
            (s_all >= -half_len)
            & (s_all <= self._belt_len[:, None] + half_len)
            & (np.abs(lat) <= self._belt_half_width[:, None])
        )
        height = xyz[None, :, 2] - self._belt_top[:, None] - half_h
        on = over & (np.abs(height) < 0.01)
        which = np.where(on.any(axis=0), on.argmax(axis=0), -1)
        # A held part still low over a belt keeps its place in the queue (the parts behind it
        # must not run into it while it is lifted).
        low = over & (height < cfg.part.size[2] + 0.02)
        blocking = np.where(low.any(axis=0), low.argmax(axis=0), -1)
        dropped = xyz[:, 2] < self._supports_z - 0.02
        queues: list[list[tuple[float, _Part]]] = [[] for _ in self._belts]
        for k, part in enumerate(live):
            if part.state is PartState.HELD:
                if blocking[k] >= 0:
                    queues[int(blocking[k])].append((float(s_all[blocking[k], k]), part))
                continue
            if dropped[k]:
                part.state, part.conveyor, part.speed = PartState.DROPPED, -1, None
                x, y, z = xyz[k]
                self._emit(
                    CellEventKind.PART_DROPPED,
                    f"part {part.serial} fell at ({x:.2f}, {y:.2f}, {z:.2f}) m",
                    part=part.serial,
                )
                continue
            ci = int(which[k])
            if ci >= 0:
                part.state, part.conveyor = PartState.CONVEYOR, ci
                queues[ci].append((float(s_all[ci, k]), part))
            elif part.state is PartState.CONVEYOR:
                part.state, part.conveyor, part.speed = PartState.LOOSE, -1, None
        for ci, queue in enumerate(queues):
            conv = self._belts[ci]
            ux, uy = self._belt_u[ci]
            queue.sort(key=lambda sp: -sp[0])  # leading part first
            ahead: float | None = None
            for s, part in queue:
                if part.state is PartState.HELD:
                    ahead = s - half_len
                    continue
                if not conv.end_stop and s > conv.length - half_len:
                    d.delivered += 1
                    self._emit(
                        CellEventKind.PART_DELIVERED,
                        f"part {part.serial} left on {conv.name}",
                        part=part.serial,
                    )
                    self._park(part)
                    continue
                at_stop = ahead is None and conv.end_stop
                front = conv.length if at_stop else ahead
                blocked = front is not None and s + half_len + cfg.part_gap >= front
                if ci == 0 and at_stop and blocked:
                    d.ready = d.parts.index(part)
                speed = 0.0 if blocked else conv.speed
                if part.speed != speed:
                    part.speed = speed
                    if cfg.sleeping:
                        p.changeDynamics(
                            part.body,
                            -1,
                            activationState=p.ACTIVATION_STATE_WAKE_UP,
                            physicsClientId=cid,
                        )
                    vz = p.getBaseVelocity(part.body, physicsClientId=cid)[0][2]
                    p.resetBaseVelocity(
                        part.body,
                        (float(ux) * speed, float(uy) * speed, vz),
                        (0, 0, 0),
                        physicsClientId=cid,
                    )
                ahead = s - half_len

    # --- robot --------------------------------------------------------------------------

    def joint_positions(self) -> FloatArray:
        """The robot's joint positions (rad), in joint order."""
        states = p.getJointStates(self.robot, self._jidx, physicsClientId=self.client)
        return np.array([s[0] for s in states], dtype=np.float64)

    def joint_velocities(self) -> FloatArray:
        """The robot's joint velocities (rad/s), in joint order."""
        states = p.getJointStates(self.robot, self._jidx, physicsClientId=self.client)
        return np.array([s[1] for s in states], dtype=np.float64)

    @property
    def joint_limits(self) -> tuple[FloatArray, FloatArray]:
        """Lower and upper joint position limits from the URDF (rad)."""
        return (
            np.array([j.lower for j in self.joints]),
            np.array([j.upper for j in self.joints]),
        )

    def _command(self, q: FloatArray, qd: FloatArray) -> None:
        n = len(self._jidx)
        p.setJointMotorControlArray(
            self.robot,
            self._jidx,
            p.POSITION_CONTROL,
            targetPositions=q.tolist(),
            targetVelocities=qd.tolist(),
            forces=self._forces,
            positionGains=[self.config.robot.position_gain] * n,
            velocityGains=[self.config.robot.velocity_gain] * n,
            physicsClientId=self.client,
        )

    def _hold(self) -> None:
        q = self.joint_positions()
        self.command(q, np.zeros_like(q))

    def _tool_link_pose(self) -> tuple[Vec3, Quat]:
        st = p.getLinkState(self.robot, self.kin.ee_link, physicsClientId=self.client)
        return tuple(st[4]), tuple(st[5])

    def _attach(self, part: _Part, rel: tuple[Vec3, Quat]) -> None:
        self._constraint = p.createConstraint(
            self.robot,
            self.kin.ee_link,
            part.body,
            -1,
            p.JOINT_FIXED,
            (0, 0, 0),
            rel[0],
            (0, 0, 0),
            parentFrameOrientation=rel[1],
            physicsClientId=self.client,
        )
        p.changeConstraint(self._constraint, maxForce=500.0, physicsClientId=self.client)

    def _detach(self) -> None:
        if self._constraint is not None:
            p.removeConstraint(self._constraint, physicsClientId=self.client)
            self._constraint = None

    # --- TaskContext (used by physics.rigid.task) ----------------------------------------

    @property
    def now(self) -> float:
        """Simulated time (s) since the cell was built."""
        return self._dyn.t

    @property
    def part_height(self) -> float:
        return self.config.part.size[2]

    @property
    def clearance(self) -> float:
        return self.config.clearance

    def ready_part(self) -> int | None:
        """Pool index of the part waiting at the infeed's end stop, if one is at rest there."""
        return self._dyn.ready

    def part_position(self, part: int) -> Vec3:
        return self._pos(self._dyn.parts[part])

    def held_part(self) -> int | None:
        return self._dyn.held

    def solve(self, tool_position: Vec3, seed: FloatArray) -> FloatArray:
        return self.kin.solve(tool_position, self._tool_orn, seed=seed)

    def plan(self, start: FloatArray, goal: FloatArray) -> JointTrajectory:
        start = np.clip(start, self.kin.lower, self.kin.upper)
        return plan_joint_move(
            start,
            goal,
            max_velocity=self._vmax,
            max_acceleration=self._amax,
            lower=self.kin.lower,
            upper=self.kin.upper,
        )

    def command(self, q: FloatArray, qd: FloatArray) -> None:
        self._dyn.hold_q, self._dyn.hold_qd = q, qd
        self._command(q, qd)

    def grasp(self, part: int) -> bool:
        d = self._dyn
        pp = d.parts[part]
        lpos, lorn = self._tool_link_pose()
        ppos, porn = p.getBasePositionAndOrientation(pp.body, physicsClientId=self.client)
        inv_pos, inv_orn = p.invertTransform(lpos, lorn)
        rel = p.multiplyTransforms(inv_pos, inv_orn, ppos, porn)
        tool_gap = rel[0][2] - self.kin.tool_offset - self.config.part.size[2] / 2.0
        if abs(tool_gap) > 0.01 or math.hypot(rel[0][0], rel[0][1]) > 0.01:
            return False
        rel_t: tuple[Vec3, Quat] = (
            (float(rel[0][0]), float(rel[0][1]), float(rel[0][2])),
            (float(rel[1][0]), float(rel[1][1]), float(rel[1][2]), float(rel[1][3])),
        )
        self._attach(pp, rel_t)
        d.held, d.grasp = part, rel_t
        pp.state, pp.conveyor, pp.speed = PartState.HELD, -1, None
        if d.ready == part:
            d.ready = None
        return True

    def release(self) -> Vec3 | None:
        d = self._dyn
        if d.held is None:
            return None
        part = d.parts[d.held]
        self._detach()
        part.state = PartState.LOOSE
        d.held, d.grasp = None, None
        return self._pos(part)

    def dwell_s(self, phase: Phase) -> float:
        return self.config.grip_s if phase is Phase.GRASP else self.config.release_s

    def emit(self, kind: CellEventKind, message: str, *, part: int | None = None) -> None:
        serial = None if part is None else self._dyn.parts[part].serial
        self._emit(kind, message, part=serial)

    def _emit(
        self,
        kind: CellEventKind,
        message: str,
        *,
        part: int | None = None,
        link: str | None = None,
        other: str | None = None,
    ) -> None:
        cyc = self._dyn.cycle
        ev = CellEvent(
            kind=kind,
            time_s=self._dyn.t,
            cell=self.name,
            message=message,
            part=part,
            link=link,
            other=other,
            cycle=None if cyc is None else cyc.id,
        )
        if kind.is_alarm:
            log.info("cell %s: %s: %s", self.name, kind, message)
        self._events.append(ev)

    # --- cycles -------------------------------------------------------------------------

    def place_target(self, place: PlaceTarget | Vec3 = PlaceTarget.OUTFEED) -> Vec3:
        """Where a part's centre goes (world, m) for a place target."""
        if not isinstance(place, PlaceTarget | str):
            return (float(place[0]), float(place[1]), float(place[2]))
        cfg, h = self.config, self.config.part.size[2] / 2.0
        if PlaceTarget(place) is PlaceTarget.STATION:
            c = cfg.table.center
            return self._world((c[0], c[1], cfg.table.top_z + h))
        conv = cfg.outfeed
        (x0, y0), (x1, y1) = conv.start, conv.end
        f = cfg.place_offset / conv.length
        return self._world((x0 + (x1 - x0) * f, y0 + (y1 - y0) * f, conv.top_z + h))

    def start_cycle(self, place: PlaceTarget | Vec3 = PlaceTarget.OUTFEED) -> CycleHandle:
        """Trigger a pick-and-place cycle: pick the next part at the infeed's end stop (waiting
        for one if need be) and put it at ``place`` (a :class:`PlaceTarget`, or the world
        position of the part's centre). Returns a handle; the cycle runs as the cell steps.

        Raises :class:`UnreachableError` (and changes nothing) when the place is out of reach,
        :class:`RigidError` while a cycle runs or the robot is faulted."""
        d = self._dyn
        if d.cycle is not None and not d.cycle.finished:
            raise RigidError(f"cell {self.name!r}: cycle {d.cycle.id} is still running")
        if d.fault is not None:
            raise RigidError(f"cell {self.name!r} is faulted ({d.fault}); call reset_fault() first")
        target = self.place_target(place)
        h = self.config.part.size[2] / 2.0
        tool = (target[0], target[1], target[2] + h + 0.001)
        q = self.solve((tool[0], tool[1], tool[2] + self.config.clearance), self.home)
        self.solve(tool, q)
        d.cycles += 1
        cycle = Cycle(id=d.cycles, started_s=d.t, target=target)
        d.cycle = cycle
        try:
            task.start(self, cycle)
        except UnreachableError as exc:
            task.fail(self, cycle, CellEventKind.UNREACHABLE, str(exc))
        self._collect()
        return CycleHandle(self, cycle.id)

    def run_cycle(
        self, place: PlaceTarget | Vec3 = PlaceTarget.OUTFEED, *, timeout_s: float = 120.0
    ) -> CycleResult:
        """Start a cycle and step the cell until it ends; its result (``duration_s`` is the
        cycle's real duration). Raises :class:`RigidError` when it has not ended after
        ``timeout_s`` simulated seconds."""
        handle = self.start_cycle(place)
        end = self._dyn.t + timeout_s
        while not handle.done:
            if self._dyn.t >= end:
                raise RigidError(f"cell {self.name!r}: cycle {handle.id} took over {timeout_s} s")
            self.step()
        result = handle.result
        assert result is not None
        return result

    @property
    def cycles_started(self) -> int:
        """How many cycles were started (cycle ids run from 1 to this)."""
        return self._dyn.cycles

    def result(self, cycle: int) -> CycleResult | None:
        """The result of cycle ``cycle`` (None while it runs or when there is none)."""
        return self._dyn.results.get(cycle)

    @property
    def cycle_done(self) -> bool:
        """No cycle is running (the last one, if any, has ended)."""
        cyc = self._dyn.cycle
        return cyc is None or cyc.finished

    @property
    def last_result(self) -> CycleResult | None:
        cyc = self._dyn.cycle
        return None if cyc is None else cyc.result

    @property
    def phase(self) -> Phase | None:
        """The running cycle's phase (None before the first cycle)."""
        cyc = self._dyn.cycle
        return None if cyc is None else cyc.phase

    @property
    def faulted(self) -> str | None:
        """Why the robot is stopped after a collision (None when it is not)."""
        return self._dyn.fault

    def reset_fault(self) -> None:
        """Acknowledge a collision: the robot may move again (from where it stopped)."""
        self._dyn.fault = None
        self._dyn.contacts.clear()

    def _collect(self) -> None:
        cyc = self._dyn.cycle
        if cyc is not None and cyc.result is not None and cyc.id not in self._dyn.results:
            serial = None if cyc.part is None else self._dyn.parts[cyc.part].serial
            cyc.result = dataclasses.replace(cyc.result, part=serial)
            self._dyn.results[cyc.id] = cyc.result

    # --- keep-out field -----------------------------------------------------------------

    def enter_keepout(self, name: str = "person", position: Vec2 | None = None) -> bool:
        """A person (e.g. from a trainer's scenario) steps to ``position`` (world x, y; default:
        just inside the keep-out field, in front of the robot). Returns whether the robot is
        now stopped. The event follows on the next step."""
        if position is None:
            x, y, _ = self._world((self.config.safety_radius * 0.8, 0.0, 0.0))
            position = (x, y)
        self._dyn.people[name] = Person(
            name=name, position=(float(position[0]), float(position[1]))
        )
        return self._in_field()

    def leave_keepout(self, name: str = "person") -> None:
        """The person ``name`` leaves the cell."""
        self._dyn.people.pop(name, None)

    def people(self) -> tuple[Person, ...]:
        return tuple(self._dyn.people.values())

    def _in_field(self) -> bool:
        r = self.config.safety_radius
        bx, by, _ = self._base
        return any(
            math.hypot(pp.position[0] - bx, pp.position[1] - by) - max(pp.size[:2]) / 2.0 < r
            for pp in self._dyn.people.values()
        )

    @property
    def stopped(self) -> bool:
        """The robot is held by the keep-out field."""
        return self._dyn.stopped

    # --- stepping -----------------------------------------------------------------------

    def step(self) -> None:
        """Advance the cell by one physics step (``dt`` seconds)."""
        d, cfg = self._dyn, self.config
        self._arrivals()
        inside = self._in_field()
        if inside != d.stopped:
            d.stopped = inside
            if inside:
                names = ", ".join(sorted(d.people))
                self._emit(
                    CellEventKind.KEEPOUT_ENTERED, f"{names} in the keep-out field: robot stopped"
                )
            else:
                self._emit(CellEventKind.KEEPOUT_CLEARED, "keep-out field clear: robot resumes")
        cyc = d.cycle
        if cyc is not None and not cyc.finished and d.fault is None:
            task.step(self, cyc, self.dt, paused=d.stopped)
            self._collect()
        if d.steps % cfg.control_every == 0:
            self._drive_conveyors()
        p.stepSimulation(physicsClientId=self.client)
        d.steps += 1
        d.t = d.steps * self.dt
        self._check_contacts()

    def advance(self, seconds: float) -> int:
        """Step until ``seconds`` more of simulated time have passed (whole steps, the
        remainder carried: simulated time stays a whole number of steps); returns the steps."""
        n = round((self._dyn.t + seconds) / self.dt) - self._dyn.steps
        for _ in range(max(n, 0)):
            self.step()
        return max(n, 0)

    def _check_contacts(self) -> None:
        d = self._dyn
        allowed = {d.parts[d.held].body} if d.held is not None else set()
        # a parked part sleeps 50 m up: a contact reported with one is the trace of the step
        # that teleported it there (delivered at the outfeed's end), not a collision
        allowed |= {q.body for q in d.parts if q.state is PartState.PARKED}
        cyc = d.cycle
        if cyc is not None and cyc.part is not None:  # the cycle's part, also just released
            allowed.add(d.parts[cyc.part].body)
        touching: set[tuple[int, int]] = set()
        for c in p.getContactPoints(bodyA=self.robot, physicsClientId=self.client):
            other, link = int(c[2]), int(c[3])
            if other in allowed or (other == self.floor and link == -1) or other == self.robot:
                continue
            touching.add((link, other))
        new = touching - d.contacts
        d.contacts = touching
        if not new:
            return
        link, other = min(new)
        lname = self.link_names[link + 1]
        oname = self._names.get(other, str(other))
        serial = next((q.serial for q in d.parts if q.body == other), None)
        what = f"part {serial}" if oname == "part" else oname
        msg = f"robot link {lname} hit {what}"
        self._emit(CellEventKind.COLLISION, msg, link=lname, other=oname, part=serial)
        if d.fault is None:
            d.fault = msg
            self._hold()
            if cyc is not None and not cyc.finished:
                cyc.phase, cyc.error = Phase.FAILED, msg
                task._finish(self, cyc, ok=False)
                self._collect()

    # --- reading state ------------------------------------------------------------------

    def link_poses(self) -> tuple[tuple[str, ...], NDArray[np.float64], NDArray[np.float64]]:
        """Every robot link's URDF frame in the world: names, positions ``(n, 3)`` (m) and
        quaternions ``(n, 4)`` (x, y, z, w); the base link first. One batched read."""
        states = p.getLinkStates(self.robot, self._link_ids, physicsClientId=self.client)
        pos = np.empty((len(states) + 1, 3))
        quat = np.empty((len(states) + 1, 4))
        pos[0], quat[0] = self._base, self._base_orn
        for i, st in enumerate(states, start=1):
            pos[i], quat[i] = st[4], st[5]
        return self.link_names, pos, quat

    def part_poses(self) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]]:
        """Every part in the cell (not parked): serial numbers, positions ``(n, 3)`` (m) and
        quaternions ``(n, 4)`` (x, y, z, w) in the world frame."""
        live = [q for q in self._dyn.parts if q.state is not PartState.PARKED]
        serials = np.array([q.serial for q in live], dtype=np.int64)
        pos = np.empty((len(live), 3))
        quat = np.empty((len(live), 4))
        for i, q in enumerate(live):
            pp, oo = p.getBasePositionAndOrientation(q.body, physicsClientId=self.client)
            pos[i], quat[i] = pp, oo
        return serials, pos, quat

    def part_states(self) -> dict[int, PartState]:
        """Each live part's state by serial number."""
        return {q.serial: q.state for q in self._dyn.parts if q.state is not PartState.PARKED}

    def conveyor_parts(self, conveyor: str) -> tuple[int, ...]:
        """Serial numbers of the parts on a conveyor (as of its last update), any order."""
        ci = self._conveyor_index(conveyor)
        return tuple(
            q.serial for q in self._dyn.parts if q.state is PartState.CONVEYOR and q.conveyor == ci
        )

    @property
    def step_count(self) -> int:
        """Physics steps taken since the cell was built (``now = step_count * dt``)."""
        return self._dyn.steps

    def fixtures(self) -> tuple[Fixture, ...]:
        """The static boxes of the cell (belts, table, obstacles), for drawing."""
        return tuple(self._fixtures)

    def events(self) -> list[CellEvent]:
        """The events since the last call, oldest first (the queue is emptied)."""
        out, self._events = self._events, []
        return out

    @property
    def counts(self) -> dict[str, int]:
        """Parts arrived, delivered, cycles started."""
        d = self._dyn
        return {"arrived": d.arrived, "delivered": d.delivered, "cycles": d.cycles}

    # --- save and restore ---------------------------------------------------------------

    def save(self) -> CellSnapshot:
        """A snapshot of the whole cell (physics and task), picklable."""
        fd, path = tempfile.mkstemp(suffix=".bullet")
        os.close(fd)
        d = self._dyn
        # pybullet's .bullet importer cannot restore the grasp constraint: it is saved without
        # it and made again (here too, so that both timelines continue from the same solver).
        self._detach()
        try:
            p.saveBullet(path, physicsClientId=self.client)
            with open(path, "rb") as fh:
                data = fh.read()
        finally:
            os.unlink(path)
            if d.held is not None and d.grasp is not None:
                self._attach(d.parts[d.held], d.grasp)
        d.rng = self._rng.bit_generator.state
        return CellSnapshot(
            config=self.config,
            bodies=p.getNumBodies(physicsClientId=self.client),
            bullet=data,
            dyn=copy.deepcopy(d),
        )

    def restore(self, snap: CellSnapshot) -> None:
        """Put the cell back to ``snap`` (taken from this cell or one with the same config).

        The cell's pending events are dropped. Raises :class:`RigidError` when the snapshot
        comes from a different cell (config or bodies)."""
        if snap.config != self.config:
            raise RigidError("snapshot of a cell with a different config")
        while len(self._dyn.parts) < len(snap.dyn.parts):
            self._new_part_body()
        if p.getNumBodies(physicsClientId=self.client) != snap.bodies:
            raise RigidError(
                f"snapshot has {snap.bodies} bodies, cell {self.name!r} has"
                f" {p.getNumBodies(physicsClientId=self.client)}"
            )
        self._detach()
        d = copy.deepcopy(snap.dyn)
        for mine, theirs in zip(self._dyn.parts, d.parts, strict=False):
            if theirs.body != mine.body:
                raise RigidError("snapshot part bodies differ from this cell's")
        fd, path = tempfile.mkstemp(suffix=".bullet")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(snap.bullet)
            p.restoreState(fileName=path, physicsClientId=self.client)
        finally:
            os.unlink(path)
        self._dyn = d
        for part in d.parts:  # pybullet does not restore sleeping states
            self._set_activation(part)
        self._rng.bit_generator.state = d.rng
        if d.held is not None and d.grasp is not None:
            self._attach(d.parts[d.held], d.grasp)
        q = d.hold_q if d.hold_q is not None else self.joint_positions()
        qd = d.hold_qd if d.hold_qd is not None else np.zeros_like(q)
        self._command(q, qd)
        self._events = []
