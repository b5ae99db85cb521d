"""What a robot cell reports: events (alarms among them) and the results of its cycles.

A cell queues :class:`CellEvent` values as they happen; :meth:`Cell.events` drains the queue.
Kinds that are alarms (``CellEventKind.is_alarm``) are the ones the twin should raise as alarm
events: a collision, a part dropped, a person in the keep-out field, an unreachable target and
a failed grasp.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

Vec3 = tuple[float, float, float]


class CellEventKind(StrEnum):
    """What happened in a cell."""

    COLLISION = "collision"  # the robot touched something other than its part
    PART_DROPPED = "part_dropped"  # a part fell below every support surface
    KEEPOUT_ENTERED = "keepout_entered"  # a person entered the keep-out field: robot stopped
    KEEPOUT_CLEARED = "keepout_cleared"  # the field is empty again: robot resumes
    UNREACHABLE = "unreachable"  # a cycle's pick or place pose is out of reach
    GRASP_FAILED = "grasp_failed"  # the tool was not on the part when the gripper closed
    PART_ARRIVED = "part_arrived"  # a part entered the cell on the infeed
    PART_DELIVERED = "part_delivered"  # a part left the cell at the end of the outfeed
    CYCLE_DONE = "cycle_done"  # a pick-and-place cycle finished (see its CycleResult)
    CYCLE_FAILED = "cycle_failed"  # a cycle ended early (collision, unreachable, ...)

    @property
    def is_alarm(self) -> bool:
        return self in _ALARMS


_ALARMS = frozenset(
    {
        CellEventKind.COLLISION,
        CellEventKind.PART_DROPPED,
        CellEventKind.KEEPOUT_ENTERED,
        CellEventKind.UNREACHABLE,
        CellEventKind.GRASP_FAILED,
        CellEventKind.CYCLE_FAILED,
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class CellEvent:
    """One event: ``time_s`` is the cell's simulated time; ``part`` the part's serial number
    where one is involved; ``link`` the robot link and ``other`` the other body's name for a
    collision; ``cycle`` the cycle number where one was running."""

    kind: CellEventKind
    time_s: float
    cell: str
    message: str
    part: int | None = None
    link: str | None = None
    other: str | None = None
    cycle: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CycleResult:
    """How a pick-and-place cycle went.

    ``duration_s``: simulated time from the trigger to the end of the retreat (or the failure),
    including ``wait_s`` (waiting for a part to arrive) and ``paused_s`` (robot stopped by the
    keep-out field). ``motion_s`` = the rest: the robot's own cycle time. ``placed_at``: the
    part's centre (world, m) when the gripper let go; ``target``: where it should have been.
    """

    cycle: int
    ok: bool
    started_s: float
    duration_s: float
    wait_s: float
    paused_s: float
    part: int | None
    target: Vec3 | None
    placed_at: Vec3 | None
    error: str | None = None

    @property
    def motion_s(self) -> float:
        return self.duration_s - self.wait_s - self.paused_s
