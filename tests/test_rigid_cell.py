"""Robot cells in pybullet (physics.rigid): pick and place, limits, reachability, determinism,
alarms, keep-out, save/restore."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

pytest.importorskip("pybullet")

from physics.rigid.cell import Cell, PartState, PlaceTarget
from physics.rigid.events import CellEventKind
from physics.rigid.layout import ArrivalConfig, CellConfig
from physics.rigid.motion import JointLimitError, UnreachableError, plan_joint_move
from scenes.errors import TwinError

#: Where a placed part must be, at release, from its target (m).
PLACE_TOL = 0.005


def _cell(seed: int = 1, **overrides: object) -> Cell:
    return Cell(replace(CellConfig(), **overrides), seed=seed)  # type: ignore[arg-type]


def test_pick_and_place_moves_a_part_from_infeed_to_outfeed() -> None:
    with _cell() as cell:
        result = cell.run_cycle()
        assert result.ok, result.error
        assert result.part is not None and result.target is not None and result.placed_at
        assert math.dist(result.placed_at, result.target) < PLACE_TOL
        assert 1.0 < result.motion_s < 15.0
        assert result.duration_s == pytest.approx(result.wait_s + result.motion_s)
        cell.advance(0.5)  # the part lands on the outfeed and rides away
        assert result.part in cell.conveyor_parts("outfeed")
        serials, pos, quat = cell.part_poses()
        (k,) = np.flatnonzero(serials == result.part)
        assert pos[k, 1] > result.target[1] + 0.05  # carried along the belt (+y)
        assert np.allclose(np.linalg.norm(quat, axis=1), 1.0)
        kinds = [e.kind for e in cell.events()]
        assert CellEventKind.CYCLE_DONE in kinds
        assert not [k for k in kinds if k.is_alarm]


def test_place_at_the_station_table() -> None:
    with _cell() as cell:
        result = cell.run_cycle(PlaceTarget.STATION)
        assert result.ok, result.error
        assert result.placed_at is not None and result.target is not None
        assert math.dist(result.placed_at, result.target) < PLACE_TOL
        cell.advance(1.0)
        assert cell.part_states()[result.part] is PartState.LOOSE  # resting on the table


def test_joint_limits_are_never_exceeded() -> None:
    with _cell(seed=2) as cell:
        lower, upper = cell.joint_limits
        vmax = np.array([j.max_velocity for j in cell.joints])
        qs, vs = [], []
        for _ in range(2):
            cell.start_cycle()
            while not cell.cycle_done:
                cell.step()
                qs.append(cell.joint_positions())
                vs.append(cell.joint_velocities())
        q, v = np.array(qs), np.array(vs)
        assert len(q) > 1000
        assert (q >= lower - 1e-6).all() and (q <= upper + 1e-6).all()
        # the controller's override keeps joints at a fifth of the URDF limit (plus tracking)
        assert (np.abs(v) <= vmax * cell.config.robot.velocity_scale * 1.1).all()
        assert np.ptp(q, axis=0).max() > 0.5  # the robot did move


def test_trajectory_respects_velocity_and_acceleration_limits() -> None:
    lower, upper = np.full(3, -2.0), np.full(3, 2.0)
    vmax, amax = np.array([1.0, 0.5, 2.0]), np.array([4.0, 4.0, 4.0])
    traj = plan_joint_move(
        np.array([0.0, 0.0, 0.0]),
        np.array([1.5, -1.0, 0.1]),
        max_velocity=vmax,
        max_acceleration=amax,
        lower=lower,
        upper=upper,
    )
    ts = np.linspace(0.0, traj.duration_s, 2001)
    q = np.array([traj.sample(t)[0] for t in ts])
    qd = np.array([traj.sample(t)[1] for t in ts])
    assert np.allclose(q[0], traj.start) and np.allclose(q[-1], traj.goal)
    assert (np.abs(qd) <= vmax + 1e-9).all()
    acc = np.diff(qd, axis=0) / np.diff(ts)[:, None]
    assert (np.abs(acc) <= amax * 1.01).all()
    assert (q >= lower).all() and (q <= upper).all()
    with pytest.raises(JointLimitError, match="outside its limits"):
        plan_joint_move(
            np.zeros(3),
            np.array([3.0, 0.0, 0.0]),
            max_velocity=vmax,
            max_acceleration=amax,
            lower=lower,
            upper=upper,
        )


def test_unreachable_target_raises_a_clear_error_and_the_cell_still_works() -> None:
    with _cell() as cell:
        cell.advance(0.5)
        before = cell.joint_positions()
        with pytest.raises(UnreachableError, match=r"unreachable.*misses it by") as info:
            cell.start_cycle((3.0, 0.0, 0.3))
        assert isinstance(info.value, TwinError)
        assert cell.cycles_started == 0 and cell.cycle_done
        assert np.allclose(cell.joint_positions(), before, atol=1e-6)
        result = cell.run_cycle()
        assert result.ok, result.error


def test_same_seed_same_trajectory() -> None:
    def record(seed: int) -> tuple[np.ndarray, np.ndarray]:
        with _cell(seed=seed, arrival=ArrivalConfig(interval_s=2.0, jitter_s=1.5)) as cell:
            links, parts = [], []
            for _ in range(2):
                cell.start_cycle()
                while not cell.cycle_done:
                    cell.step()
                    if cell.step_count % 10 == 0:
                        links.append(cell.link_poses()[1].copy())
            parts.append(cell.part_poses()[1].copy())
            return np.array(links), np.concatenate(parts)

    a, b, c = record(5), record(5), record(6)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert a[0].shape != c[0].shape or not np.array_equal(a[0], c[0])


def test_collision_raises_an_alarm_and_stops_the_robot() -> None:
    with _cell() as cell:
        cell.add_obstacle("beam", (0.3, 0.3, 0.05), (0.5, -0.34, 0.6))  # low over the infeed
        result = cell.run_cycle()
        assert not result.ok and result.error is not None and "beam" in result.error
        events = cell.events()
        hits = [e for e in events if e.kind is CellEventKind.COLLISION]
        assert len(hits) == 1 and hits[0].other == "beam" and hits[0].link is not None
        assert hits[0].kind.is_alarm and hits[0].cycle == result.cycle
        assert cell.faulted is not None
        with pytest.raises(TwinError, match="faulted"):
            cell.start_cycle()
        q = cell.joint_positions()
        cell.advance(0.5)
        assert np.allclose(cell.joint_positions(), q, atol=2e-3)  # held where it stopped
        cell.reset_fault()
        assert cell.faulted is None


def test_a_part_falling_off_is_an_alarm() -> None:
    with _cell(arrival=ArrivalConfig(interval_s=None)) as cell:
        serial = cell.spawn_part("infeed", s=0.5, lateral=0.3)  # beside the belt
        cell.advance(1.0)
        drops = [e for e in cell.events() if e.kind is CellEventKind.PART_DROPPED]
        assert [e.part for e in drops] == [serial]
        assert cell.part_states()[serial] is PartState.DROPPED


def test_person_in_keepout_stops_the_robot_until_it_leaves() -> None:
    with _cell() as cell:
        handle = cell.start_cycle()
        while cell.phase is not None and cell.phase.value != "transfer":
            cell.step()
        assert cell.enter_keepout("trainee") is True
        cell.step()
        q = cell.joint_positions()
        cell.advance(1.0)
        assert cell.stopped
        assert np.allclose(cell.joint_positions(), q, atol=2e-3)
        cell.leave_keepout("trainee")
        while not handle.done:
            cell.step()
        result = handle.result
        assert result is not None and result.ok
        assert result.paused_s == pytest.approx(1.0 + cell.dt, abs=2 * cell.dt)
        kinds = [e.kind for e in cell.events()]
        assert kinds.count(CellEventKind.KEEPOUT_ENTERED) == 1
        assert kinds.count(CellEventKind.KEEPOUT_CLEARED) == 1
        # a person far away does not stop it
        assert cell.enter_keepout("visitor", (10.0, 10.0)) is False


def test_save_and_restore_continue_identically() -> None:
    with _cell(seed=3) as cell:
        cell.run_cycle()
        handle = cell.start_cycle()
        cell.advance(3.0)  # part held: the grasp constraint is part of the state
        assert cell.phase is not None and cell.held_part() is not None
        snap = cell.save()
        cell.advance(3.0)
        _, links_a, _ = cell.link_poses()
        serials_a, parts_a, _ = cell.part_poses()
        done_a = handle.done
        cell.restore(snap)
        cell.advance(3.0)
        _, links_b, _ = cell.link_poses()
        serials_b, parts_b, _ = cell.part_poses()
        assert np.array_equal(links_a, links_b)
        assert np.array_equal(serials_a, serials_b) and np.array_equal(parts_a, parts_b)
        assert handle.done == done_a
        with _cell(seed=3) as other:  # a fork: the same cell built afresh, then restored
            other.restore(snap)
            other.advance(3.0)
            assert np.allclose(other.link_poses()[1], links_a, atol=1e-9)
            assert np.allclose(other.part_poses()[1], parts_a, atol=1e-9)


def test_link_poses_and_from_spec() -> None:
    from scenes.lineparse import load_line

    line = load_line("scenes/examples/biw_welding.yaml")
    station = line.station("framing")
    with Cell.from_spec(station, seed=0) as cell:
        names, pos, quat = cell.link_poses()
        assert names[0] == "lbr_iiwa_link_0" and len(names) == 8
        assert pos.shape == (8, 3) and quat.shape == (8, 4)
        assert np.allclose(pos[0], (18.0, 2.6, 0.0))  # station + robot offset
        assert np.allclose(np.linalg.norm(quat, axis=1), 1.0)
        result = cell.run_cycle()
        assert result.ok, result.error
        assert {f.kind for f in cell.fixtures()} == {"conveyor", "table"}
