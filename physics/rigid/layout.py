"""What a robot cell is made of: value types for the robot, conveyors, station table and parts.

A :class:`CellConfig` is static: nothing in it changes while a cell runs. Layout positions
(conveyors, table, keep-out field) are in the **robot base frame** (x forward, y left, z up, the
floor at z = 0), so one layout serves every cell whatever its place on the line;
``robot.base_position`` and ``robot.base_yaw_deg`` put the cell in the world.
:meth:`CellConfig.from_station` builds one from a line file's station and its robot.

Units: metres, seconds, kilograms, degrees only where the name says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from scenes.spec import Station

Vec2 = tuple[float, float]
Vec3 = tuple[float, float, float]

#: The time step of every cell (s): pybullet's default, 240 Hz.
DEFAULT_DT = 1.0 / 240.0


@dataclass(frozen=True, slots=True, kw_only=True)
class RobotConfig:
    """The robot: a URDF (a file, or a name in ``pybullet_data``) on a fixed base.

    ``velocity_scale`` is the controller's speed override: each joint moves at most at this
    fraction of its URDF velocity limit (the KUKA iiwa's URDF says 10 rad/s, about five times
    the real arm's). ``max_acceleration`` (rad/s²) applies to every joint. ``home`` is the joint
    configuration IK starts from (None: a pose with the tool above the cell, found by IK).
    ``ee_link``/``tool_offset``: see :class:`physics.rigid.motion.Kinematics`.
    ``position_gain``/``velocity_gain`` are pybullet's POSITION_CONTROL gains.
    """

    urdf: str = "kuka_iiwa/model.urdf"
    base_position: Vec3 = (0.0, 0.0, 0.0)
    base_yaw_deg: float = 0.0
    velocity_scale: float = 0.2
    max_acceleration: float = 4.0
    home: tuple[float, ...] | None = None
    ee_link: int | None = None
    tool_offset: float | None = None
    position_gain: float = 0.3
    velocity_gain: float = 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ConveyorConfig:
    """A straight belt from ``start`` to ``end`` (x, y in the robot base frame), its top surface
    at ``top_z``; parts travel from start to end at ``speed`` (m/s).

    ``end_stop``: parts accumulate against a stop at the end (an infeed); without one, a part
    that reaches the end leaves the cell (``delivered``).
    """

    name: str
    start: Vec2
    end: Vec2
    top_z: float = 0.25
    width: float = 0.3
    thickness: float = 0.05
    speed: float = 0.3
    end_stop: bool = True

    @property
    def length(self) -> float:
        return math.dist(self.start, self.end)


@dataclass(frozen=True, slots=True, kw_only=True)
class TableConfig:
    """A static table at the station: ``center`` (x, y, robot base frame), ``size`` (x, y), top at
    ``top_z``. Parts placed at the station rest on it."""

    center: Vec2 = (0.0, 0.62)
    size: Vec2 = (0.35, 0.3)
    top_z: float = 0.25


@dataclass(frozen=True, slots=True, kw_only=True)
class PartConfig:
    """Every part: a box of ``size`` (m), ``mass`` (kg), Coulomb ``friction``."""

    size: Vec3 = (0.08, 0.08, 0.06)
    mass: float = 0.4
    friction: float = 0.8
    restitution: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ArrivalConfig:
    """Parts arriving at the start of the infeed every ``interval_s`` ± ``jitter_s`` (uniform,
    drawn from the cell's seed), with a lateral offset of up to ± ``lateral_jitter`` m. With
    ``interval_s`` None parts arrive only when :meth:`Cell.spawn_part` is called."""

    interval_s: float | None = 6.0
    jitter_s: float = 1.0
    lateral_jitter: float = 0.01
    first_s: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class CellConfig:
    """A whole cell. ``dt`` is the fixed physics step (s); ``solver_iterations`` pybullet's
    constraint solver iterations; ``control_every`` how many steps apart the conveyors are
    updated. ``clearance`` is how far above a pick or place point the tool approaches (m);
    ``grip_s``/``release_s`` how long the gripper takes to close and open. ``safety_radius`` is
    the keep-out field around the robot base (m): a person inside it stops the robot.
    ``sleeping`` lets parts at rest be deactivated (faster, but pybullet's save/restore is not
    exact with sleeping: see docs/robot-cells.md)."""

    name: str = "cell"
    robot: RobotConfig = field(default_factory=RobotConfig)
    infeed: ConveyorConfig = field(
        default_factory=lambda: ConveyorConfig(
            name="infeed", start=(0.5, -2.3), end=(0.5, -0.3), end_stop=True
        )
    )
    outfeed: ConveyorConfig = field(
        default_factory=lambda: ConveyorConfig(
            name="outfeed", start=(0.5, 0.3), end=(0.5, 2.3), end_stop=False
        )
    )
    table: TableConfig = field(default_factory=TableConfig)
    part: PartConfig = field(default_factory=PartConfig)
    arrival: ArrivalConfig = field(default_factory=ArrivalConfig)
    place_offset: float = 0.12
    dt: float = DEFAULT_DT
    solver_iterations: int = 20
    control_every: int = 4
    clearance: float = 0.15
    grip_s: float = 0.2
    release_s: float = 0.2
    part_gap: float = 0.01
    safety_radius: float = 1.5
    sleeping: bool = False

    @classmethod
    def from_station(cls, station: Station, **overrides: object) -> CellConfig:
        """The default cell for a line file's station with a robot (its URDF and base pose).

        The robot's pose in the line file is relative to its station; the cell's base is the
        station pose composed with it. ``overrides`` replace fields of the result.
        """
        if station.robot is None:
            raise ValueError(f"station {station.id!r} has no robot")
        sx, sy, sz = station.pose.position
        rx, ry, rz = station.robot.pose.position
        yaw = math.radians(station.pose.yaw_deg)
        c, s = math.cos(yaw), math.sin(yaw)
        base = (sx + c * rx - s * ry, sy + s * rx + c * ry, sz + rz)
        robot = RobotConfig(
            urdf=station.robot.urdf,
            base_position=base,
            base_yaw_deg=station.pose.yaw_deg + station.robot.pose.yaw_deg,
        )
        cfg = cls(name=station.id, robot=robot)
        return replace(cfg, **overrides) if overrides else cfg  # type: ignore[arg-type]
