"""The pick-and-place cycle: a state machine stepped with the simulation.

The phases run in one fixed order, written down in :data:`NEXT` (a cycle that starts with a
part already in the gripper, after a fault, begins at ``TRANSFER``)::

    WAIT_PART -> APPROACH -> DESCEND -> GRASP -> LIFT -> TRANSFER -> LOWER -> RELEASE -> RETREAT -> DONE

``WAIT_PART`` waits for a part at rest against the infeed's end stop, then solves every pose of
the cycle at once (above the part, on the part, above the place, at the place) so that an
unreachable target fails the cycle before the robot moves. Motion phases follow a synchronized
trapezoidal joint move (:func:`physics.rigid.motion.plan_joint_move`) and end when the move's
time is up and the joints have settled on its goal. ``GRASP`` and ``RELEASE`` are dwells (the
gripper closing and opening); the grasp itself is a fixed constraint made at the end of
``GRASP``. Any phase may end in ``FAILED``.

The machine holds no pybullet handle: it talks to its cell through :class:`TaskContext`, which
:class:`physics.rigid.cell.Cell` implements.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

import numpy as np

from .events import CellEventKind, CycleResult
from .motion import FloatArray, JointTrajectory, RigidError, UnreachableError, Vec3


class Phase(StrEnum):
    WAIT_PART = "wait_part"
    APPROACH = "approach"
    DESCEND = "descend"
    GRASP = "grasp"
    LIFT = "lift"
    TRANSFER = "transfer"
    LOWER = "lower"
    RELEASE = "release"
    RETREAT = "retreat"
    DONE = "done"
    FAILED = "failed"


#: The phase after each phase when it ends normally.
NEXT: dict[Phase, Phase] = {
    Phase.WAIT_PART: Phase.APPROACH,
    Phase.APPROACH: Phase.DESCEND,
    Phase.DESCEND: Phase.GRASP,
    Phase.GRASP: Phase.LIFT,
    Phase.LIFT: Phase.TRANSFER,
    Phase.TRANSFER: Phase.LOWER,
    Phase.LOWER: Phase.RELEASE,
    Phase.RELEASE: Phase.RETREAT,
    Phase.RETREAT: Phase.DONE,
}

#: Motion phases and the waypoint each moves to.
GOAL: dict[Phase, str] = {
    Phase.APPROACH: "above_pick",
    Phase.DESCEND: "pick",
    Phase.LIFT: "above_pick",
    Phase.TRANSFER: "above_place",
    Phase.LOWER: "place",
    Phase.RETREAT: "above_place",
}

#: Joint error (rad) under which a finished move counts as settled, and the longest wait for it.
SETTLE_TOL = 2e-3
SETTLE_MAX_S = 0.5


class TaskContext(Protocol):
    """What the cycle needs from its cell (positions in world frame, metres)."""

    @property
    def now(self) -> float: ...

    @property
    def part_height(self) -> float: ...

    @property
    def clearance(self) -> float: ...

    def joint_positions(self) -> FloatArray: ...

    def ready_part(self) -> int | None: ...

    def part_position(self, part: int) -> Vec3: ...

    def held_part(self) -> int | None: ...

    def solve(self, tool_position: Vec3, seed: FloatArray) -> FloatArray: ...

    def plan(self, start: FloatArray, goal: FloatArray) -> JointTrajectory: ...

    def command(self, q: FloatArray, qd: FloatArray) -> None: ...

    def grasp(self, part: int) -> bool: ...

    def release(self) -> Vec3 | None: ...

    def dwell_s(self, phase: Phase) -> float: ...

    def emit(self, kind: CellEventKind, message: str, *, part: int | None = None) -> None: ...


@dataclass(slots=True, kw_only=True)
class Cycle:
    """The progress of one cycle (mutable; copied whole into a cell snapshot).

    ``target`` is where the part's centre goes (world, m); ``phase_t`` the time spent in the
    current phase, not counting pauses.
    """

    id: int
    started_s: float
    target: Vec3
    phase: Phase = Phase.WAIT_PART
    phase_t: float = 0.0
    traj: JointTrajectory | None = None
    goals: dict[str, FloatArray] = field(default_factory=dict)
    part: int | None = None
    wait_s: float = 0.0
    paused_s: float = 0.0
    placed_at: Vec3 | None = None
    error: str | None = None
    result: CycleResult | None = None

    @property
    def finished(self) -> bool:
        return self.phase in (Phase.DONE, Phase.FAILED)


def solve_waypoints(
    ctx: TaskContext, pick: Vec3 | None, target: Vec3, seed: FloatArray
) -> dict[str, FloatArray]:
    """Joint goals for every waypoint; ``pick`` is the part's centre (None: already held).

    Raises :class:`UnreachableError` naming the waypoint that cannot be reached.
    """
    h, c = ctx.part_height, ctx.clearance
    points: list[tuple[str, Vec3]] = []
    if pick is not None:
        top = (pick[0], pick[1], pick[2] + h / 2.0 + 0.001)
        points += [("above_pick", (top[0], top[1], top[2] + c)), ("pick", top)]
    place = (target[0], target[1], target[2] + h / 2.0 + 0.001)
    points += [("above_place", (place[0], place[1], place[2] + c)), ("place", place)]
    goals: dict[str, FloatArray] = {}
    q = seed
    for name, pos in points:
        try:
            q = ctx.solve(pos, q)
        except UnreachableError as exc:
            raise UnreachableError(f"{name.replace('_', ' ')}: {exc}") from exc
        goals[name] = q
    return goals


def start(ctx: TaskContext, cycle: Cycle) -> None:
    """Begin ``cycle``: wait for a part, or go straight to the place with one already held."""
    held = ctx.held_part()
    if held is None:
        cycle.phase = Phase.WAIT_PART
        return
    cycle.part = held
    cycle.goals = solve_waypoints(ctx, None, cycle.target, ctx.joint_positions())
    _enter(ctx, cycle, Phase.TRANSFER)


def fail(ctx: TaskContext, cycle: Cycle, kind: CellEventKind, message: str) -> None:
    """End ``cycle`` as failed with an event of ``kind``."""
    cycle.phase = Phase.FAILED
    cycle.error = message
    ctx.emit(kind, message, part=cycle.part)
    _finish(ctx, cycle, ok=False)


def _finish(ctx: TaskContext, cycle: Cycle, *, ok: bool) -> None:
    cycle.result = CycleResult(
        cycle=cycle.id,
        ok=ok,
        started_s=cycle.started_s,
        duration_s=ctx.now - cycle.started_s,
        wait_s=cycle.wait_s,
        paused_s=cycle.paused_s,
        part=cycle.part,
        target=cycle.target,
        placed_at=cycle.placed_at,
        error=cycle.error,
    )
    if ok:
        ctx.emit(
            CellEventKind.CYCLE_DONE,
            f"cycle {cycle.id} done in {cycle.result.duration_s:.3f} s",
            part=cycle.part,
        )
    else:
        ctx.emit(CellEventKind.CYCLE_FAILED, f"cycle {cycle.id} failed: {cycle.error}")


def _enter(ctx: TaskContext, cycle: Cycle, phase: Phase) -> None:
    cycle.phase = phase
    cycle.phase_t = 0.0
    cycle.traj = None
    if phase in GOAL:
        cycle.traj = ctx.plan(ctx.joint_positions(), cycle.goals[GOAL[phase]])
    elif phase is Phase.RELEASE:
        cycle.placed_at = ctx.release()
    elif phase is Phase.DONE:
        _finish(ctx, cycle, ok=True)


def step(ctx: TaskContext, cycle: Cycle, dt: float, *, paused: bool) -> None:
    """Advance ``cycle`` by one physics step of ``dt`` seconds (before the world steps)."""
    if cycle.finished:
        return
    if paused:
        cycle.paused_s += dt
        if cycle.traj is not None:  # hold the pose reached on the path
            q, _ = cycle.traj.sample(cycle.phase_t)
            ctx.command(q, np.zeros_like(q))
        return
    if cycle.phase is Phase.WAIT_PART:
        part = ctx.ready_part()
        if part is None:
            cycle.wait_s += dt
            return
        cycle.part = part
        try:
            cycle.goals = solve_waypoints(
                ctx, ctx.part_position(part), cycle.target, ctx.joint_positions()
            )
        except RigidError as exc:
            fail(ctx, cycle, CellEventKind.UNREACHABLE, str(exc))
            return
        _enter(ctx, cycle, Phase.APPROACH)
    cycle.phase_t += dt
    if cycle.traj is not None:
        q, qd = cycle.traj.sample(cycle.phase_t)
        ctx.command(q, qd)
        if cycle.phase_t < cycle.traj.duration_s:
            return
        err = float(np.max(np.abs(ctx.joint_positions() - cycle.traj.goal)))
        if err > SETTLE_TOL and cycle.phase_t < cycle.traj.duration_s + SETTLE_MAX_S:
            return
    elif cycle.phase_t < ctx.dwell_s(cycle.phase):
        return
    if cycle.phase is Phase.GRASP:
        assert cycle.part is not None
        if not ctx.grasp(cycle.part):
            fail(ctx, cycle, CellEventKind.GRASP_FAILED, "the tool is not on the part")
            return
    _enter(ctx, cycle, NEXT[cycle.phase])
