"""Robot motion: inverse kinematics with a reachability check, and joint-space trajectories.

:class:`Kinematics` keeps a kinematic copy of a robot in its own pybullet client (DIRECT mode,
no gravity, nothing else in it), so solving IK or forward kinematics never disturbs a cell's
dynamic world. :meth:`Kinematics.solve` calls ``calculateInverseKinematics`` with the URDF's
joint limits and a rest pose, refines the answer a few times from its own solution, then checks
it: the forward kinematics of the solution must reach the target within ``position_tol`` metres
and ``orientation_tol`` radians, or :class:`UnreachableError` is raised.

:func:`plan_joint_move` builds a synchronized trapezoidal move in joint space: every joint
follows ``q(t) = q0 + (q1 - q0) * s(t)`` with one time scaling ``s`` from 0 to 1, whose speed
and acceleration are the largest that keep every joint within its velocity and acceleration
limits. A straight line between two configurations inside the joint-limit box stays inside it.

Units: metres, radians, seconds. Quaternions are ``(x, y, z, w)`` as pybullet gives them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pybullet as p
from numpy.typing import NDArray

from scenes.errors import TwinError
from scenes.graph import quat_multiply

Vec3 = tuple[float, float, float]
Quat = tuple[float, float, float, float]
FloatArray = NDArray[np.float64]


class RigidError(TwinError):
    """A robot cell cannot do what was asked."""


class UnreachableError(RigidError, ValueError):
    """A target pose is outside the robot's reach (or its joint limits)."""


class JointLimitError(RigidError, ValueError):
    """A joint target lies outside the joint's position limits."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Joint:
    """One actuated joint of a robot as its URDF states it.

    ``index`` is the pybullet joint index; ``lower``/``upper`` in rad (or m), ``max_velocity``
    in rad/s, ``max_effort`` in N·m (or N).
    """

    index: int
    name: str
    link: str
    lower: float
    upper: float
    max_velocity: float
    max_effort: float


def read_joints(body: int, client: int) -> tuple[Joint, ...]:
    """The revolute and prismatic joints of ``body``, in index order."""
    joints = []
    for j in range(p.getNumJoints(body, physicsClientId=client)):
        info = p.getJointInfo(body, j, physicsClientId=client)
        if info[2] not in (p.JOINT_REVOLUTE, p.JOINT_PRISMATIC):
            continue
        lower, upper = float(info[8]), float(info[9])
        if lower > upper:  # continuous joint: pybullet reports lower=0, upper=-1
            lower, upper = -math.pi, math.pi
        joints.append(
            Joint(
                index=j,
                name=info[1].decode(),
                link=info[12].decode(),
                lower=lower,
                upper=upper,
                max_velocity=float(info[11]) if info[11] > 0 else 1.0,
                max_effort=float(info[10]) if info[10] > 0 else 100.0,
            )
        )
    return tuple(joints)


def quat_angle(a: Quat, b: Quat) -> float:
    """The rotation angle (rad) between two orientations."""
    dot = abs(sum(x * y for x, y in zip(a, b, strict=True)))
    return 2.0 * math.acos(min(1.0, dot))


def rotate(q: Quat, v: Vec3) -> Vec3:
    """``v`` rotated by the quaternion ``q``."""
    m = p.getMatrixFromQuaternion(q)
    return (
        m[0] * v[0] + m[1] * v[1] + m[2] * v[2],
        m[3] * v[0] + m[4] * v[1] + m[5] * v[2],
        m[6] * v[0] + m[7] * v[1] + m[8] * v[2],
    )


def tool_down(yaw: float) -> Quat:
    """A tool orientation whose z axis points straight down, turned by ``yaw`` (rad) about z."""
    down = (0.0, 1.0, 0.0, 0.0)  # 180° about y: z -> -z
    turn = (0.0, 0.0, math.sin(yaw / 2.0), math.cos(yaw / 2.0))
    return quat_multiply(turn, down)


class Kinematics:
    """A kinematic copy of a fixed-base robot for IK and forward kinematics.

    ``ee_link`` is the link whose frame carries the tool (default: the last link);
    ``tool_offset`` (m) is the tool point's distance along that link's z axis (default: the
    far end of the link's collision box along z, e.g. the flange face). Close it with
    :meth:`close` (a cell does).
    """

    def __init__(
        self,
        urdf: str,
        *,
        base_position: Vec3,
        base_orientation: Quat,
        search_path: str | None = None,
        ee_link: int | None = None,
        tool_offset: float | None = None,
        joint_margin: float = 0.02,
    ) -> None:
        self.client: int = p.connect(p.DIRECT)
        try:
            if search_path is not None:
                p.setAdditionalSearchPath(search_path, physicsClientId=self.client)
            self.body: int = p.loadURDF(
                urdf,
                base_position,
                base_orientation,
                useFixedBase=True,
                physicsClientId=self.client,
            )
        except p.error as exc:
            p.disconnect(self.client)
            raise RigidError(f"cannot load robot URDF {urdf!r}: {exc}") from exc
        self.joints = read_joints(self.body, self.client)
        if not self.joints:
            p.disconnect(self.client)
            raise RigidError(f"robot URDF {urdf!r} has no revolute or prismatic joint")
        n_links = p.getNumJoints(self.body, physicsClientId=self.client)
        self.ee_link: int = n_links - 1 if ee_link is None else ee_link
        self.lower: FloatArray = np.array([j.lower for j in self.joints]) + joint_margin
        self.upper: FloatArray = np.array([j.upper for j in self.joints]) - joint_margin
        self.max_velocity: FloatArray = np.array([j.max_velocity for j in self.joints])
        self._n_dof = len(self.joints)
        self.tool_offset: float = (
            self._default_tool_offset() if tool_offset is None else float(tool_offset)
        )

    def close(self) -> None:
        """Disconnect the kinematic client (idempotent)."""
        if self.client >= 0:
            p.disconnect(self.client)
            self.client = -1

    def _set(self, q: FloatArray) -> None:
        for j, v in zip(self.joints, q, strict=True):
            p.resetJointState(self.body, j.index, float(v), 0.0, physicsClientId=self.client)

    def _link_pose(self) -> tuple[Vec3, Quat]:
        st = p.getLinkState(
            self.body, self.ee_link, computeForwardKinematics=1, physicsClientId=self.client
        )
        return tuple(st[4]), tuple(st[5])

    def _default_tool_offset(self) -> float:
        self._set(np.zeros(self._n_dof))
        pos, orn = self._link_pose()
        lo, hi = p.getAABB(self.body, self.ee_link, physicsClientId=self.client)
        axis = rotate(orn, (0.0, 0.0, 1.0))
        best = 0.0
        for cx in (lo[0], hi[0]):
            for cy in (lo[1], hi[1]):
                for cz in (lo[2], hi[2]):
                    d = (cx - pos[0], cy - pos[1], cz - pos[2])
                    best = max(best, d[0] * axis[0] + d[1] * axis[1] + d[2] * axis[2])
        return best

    def forward(self, q: FloatArray) -> tuple[Vec3, Quat]:
        """The tool point's world position and orientation at joint positions ``q``."""
        self._set(q)
        pos, orn = self._link_pose()
        off = rotate(orn, (0.0, 0.0, self.tool_offset))
        return (pos[0] + off[0], pos[1] + off[1], pos[2] + off[2]), orn

    def solve(
        self,
        position: Vec3,
        orientation: Quat,
        *,
        seed: FloatArray,
        position_tol: float = 1e-3,
        orientation_tol: float = 0.02,
        max_rounds: int = 30,
    ) -> FloatArray:
        """Joint positions that put the tool point at ``position`` with ``orientation``.

        ``seed`` is the configuration to start from (and the rest pose of the null space), so
        consecutive targets give nearby solutions. Raises :class:`UnreachableError` when the
        best solution found within the joint limits misses the target by more than the
        tolerances.
        """
        off = rotate(orientation, (0.0, 0.0, self.tool_offset))
        link_target = (position[0] - off[0], position[1] - off[1], position[2] - off[2])
        ranges = (self.upper - self.lower).tolist()
        q = np.clip(np.asarray(seed, dtype=np.float64), self.lower, self.upper)
        err, ang = math.inf, math.inf
        for _ in range(max_rounds):
            # Each round starts from the last answer and uses it as the null-space rest pose,
            # so the solution stays on the seed's branch (elbow up, wrist the same way).
            self._set(q)
            sol = p.calculateInverseKinematics(
                self.body,
                self.ee_link,
                link_target,
                orientation,
                lowerLimits=self.lower.tolist(),
                upperLimits=self.upper.tolist(),
                jointRanges=ranges,
                restPoses=q.tolist(),
                maxNumIterations=50,
                residualThreshold=1e-7,
                physicsClientId=self.client,
            )
            q = np.clip(np.array(sol[: self._n_dof], dtype=np.float64), self.lower, self.upper)
            reached, orn = self.forward(q)
            err, ang = math.dist(reached, position), quat_angle(orn, orientation)
            if err <= 0.1 * position_tol and ang <= 0.1 * orientation_tol:
                break
        if err > position_tol or ang > orientation_tol:
            raise UnreachableError(
                f"target ({position[0]:.3f}, {position[1]:.3f}, {position[2]:.3f}) m is unreachable:"
                f" the best solution within the joint limits misses it by {err * 1000:.1f} mm"
                f" and {math.degrees(ang):.1f}° (tolerance {position_tol * 1000:.1f} mm,"
                f" {math.degrees(orientation_tol):.1f}°)"
            )
        return q


@dataclass(frozen=True, slots=True, kw_only=True)
class JointTrajectory:
    """A synchronized trapezoidal move from ``start`` to ``goal`` (joint positions, rad).

    The time scaling accelerates at ``accel`` (1/s²) for ``t_acc`` seconds, cruises at
    ``speed`` (1/s), and decelerates; ``duration_s`` is the whole move.
    """

    start: FloatArray
    goal: FloatArray
    duration_s: float
    t_acc: float
    speed: float
    accel: float

    def scaling(self, t: float) -> tuple[float, float]:
        """``(s, ds/dt)`` at time ``t`` (clamped to the move)."""
        if self.duration_s <= 0.0:
            return 1.0, 0.0
        t = min(max(t, 0.0), self.duration_s)
        a, ta, big_t = self.accel, self.t_acc, self.duration_s
        if t < ta:
            return 0.5 * a * t * t, a * t
        if t <= big_t - ta:
            return 0.5 * a * ta * ta + self.speed * (t - ta), self.speed
        r = big_t - t
        return 1.0 - 0.5 * a * r * r, a * r

    def sample(self, t: float) -> tuple[FloatArray, FloatArray]:
        """Joint positions (rad) and velocities (rad/s) at time ``t`` after the start."""
        s, ds = self.scaling(t)
        delta = self.goal - self.start
        return self.start + delta * s, delta * ds


def plan_joint_move(
    start: FloatArray,
    goal: FloatArray,
    *,
    max_velocity: FloatArray,
    max_acceleration: FloatArray,
    lower: FloatArray,
    upper: FloatArray,
    tol: float = 1e-9,
) -> JointTrajectory:
    """The fastest synchronized trapezoidal move from ``start`` to ``goal`` within the limits.

    Raises :class:`JointLimitError` when ``start`` or ``goal`` is outside ``[lower, upper]``.
    """
    start = np.asarray(start, dtype=np.float64)
    goal = np.asarray(goal, dtype=np.float64)
    for name, q in (("start", start), ("goal", goal)):
        bad = np.flatnonzero((q < lower - tol) | (q > upper + tol))
        if bad.size:
            i = int(bad[0])
            raise JointLimitError(
                f"{name} position of joint {i} is {q[i]:.4f} rad, outside its limits"
                f" [{lower[i]:.4f}, {upper[i]:.4f}]"
            )
    delta = np.abs(goal - start)
    moving = delta > 1e-12
    if not moving.any():
        return JointTrajectory(
            start=start, goal=goal, duration_s=0.0, t_acc=0.0, speed=0.0, accel=0.0
        )
    speed = float(np.min(max_velocity[moving] / delta[moving]))
    accel = float(np.min(max_acceleration[moving] / delta[moving]))
    if speed * speed / accel >= 1.0:  # triangular: never reaches cruise speed
        t_acc = math.sqrt(1.0 / accel)
        speed = accel * t_acc
        duration = 2.0 * t_acc
    else:
        t_acc = speed / accel
        duration = 1.0 / speed + t_acc
    return JointTrajectory(
        start=start, goal=goal, duration_s=duration, t_acc=t_acc, speed=speed, accel=accel
    )
