"""The scene graph: stable ids and order, transforms from poses, conveyor paths and part
positions, visuals, and the live-state types."""

from __future__ import annotations

import logging
import math
import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scenes.graph import (
    BELT_HEIGHT,
    BUFFER_BOX,
    STATE_COLORS,
    TYPE_PALETTE,
    BoxGeometry,
    BufferLevel,
    ConveyorGeometry,
    ConveyorParts,
    EntityKind,
    LineState,
    MachineState,
    MeshGeometry,
    Polyline,
    RobotGeometry,
    SceneGraph,
    StationState,
    Transform,
    build_graph,
    parse_color,
    part_position,
    part_positions,
    quat_from_yaw,
    with_assets,
)
from scenes.lineparse import load_line, parse_line
from scenes.spec import LineSpec

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(
    p
    for p in (REPO / "scenes" / "examples").glob("*.yaml")
    if not p.name.endswith((".space.yaml", ".scenario.yaml"))
)

LINE = """\
line: test line
stations:
  - {id: a, type: press, process_time: 10, position: [0, 0, 0], box: [2, 2, 1.5]}
  - {id: b, type: weld, process_time: 10, position: [6, 0, 0], box: [2, 1, 1.5]}
  - {id: c, type: press, process_time: 10, position: [6, 6, 0], yaw_deg: 90,
     robot: {urdf: r.urdf, position: [0, 2, 0], yaw_deg: -90}}
  - {id: d, type: paint, process_time: 10, position: [0, 6, 0], color: "#123456"}
  - {id: e, type: weld, process_time: 10, position: [-6, 6, 0]}
buffers:
  - {id: b1, from: a, to: b, capacity: 4}
  - {id: c1, from: b, to: c, conveyor: {length: 5, speed: 0.5}}
  - {id: c2, from: c, to: d, conveyor: {length: 9, speed: 0.5,
     path: [[6, 7, 0.9], [6, 9, 0.9], [0, 9, 0.9], [0, 7, 0.9]]}}
  - {id: h, from: d, to: e, capacity: 0}
"""


def spec(text: str = LINE) -> LineSpec:
    return parse_line(textwrap.dedent(text), filename="test.yaml")


def close(a: tuple[float, ...], b: tuple[float, ...], tol: float = 1e-9) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


# -- ids, order, parents -----------------------------------------------------------------------


def test_entity_ids_order_and_parents() -> None:
    g = build_graph(spec())
    assert [e.id for e in g.entities] == [
        "line",
        "station/a",
        "station/b",
        "station/c",
        "robot/c",
        "station/d",
        "station/e",
        "buffer/b1",
        "buffer/c1",
        "conveyor/c1",
        "buffer/c2",
        "conveyor/c2",
        "buffer/h",
    ]
    assert [e.index for e in g.entities] == list(range(len(g.entities)))
    parents = {e.id: e.parent for e in g.entities}
    assert parents["line"] is None
    assert parents["station/a"] == "line"
    assert parents["robot/c"] == "station/c"
    assert parents["conveyor/c1"] == "buffer/c1"
    assert parents["buffer/h"] == "line"
    assert g.entity("conveyor/c2").kind is EntityKind.CONVEYOR
    assert g.entity("conveyor/c2").ref == "c2"
    assert [e.id for e in g.children("station/c")] == ["robot/c"]
    with pytest.raises(KeyError):
        g.entity("station/zz")


def test_same_spec_gives_equal_graph() -> None:
    assert build_graph(spec()) == build_graph(spec())


def test_graph_rejects_duplicate_ids() -> None:
    g = build_graph(spec())
    with pytest.raises(ValueError, match="unique"):
        SceneGraph(name="dup", entities=(*g.entities, g.entities[1]))


# -- transforms --------------------------------------------------------------------------------


def test_quaternion_from_yaw() -> None:
    assert close(quat_from_yaw(0.0), (0.0, 0.0, 0.0, 1.0))
    s = math.sqrt(0.5)
    assert close(quat_from_yaw(90.0), (0.0, 0.0, s, s))
    assert close(quat_from_yaw(180.0), (0.0, 0.0, 1.0, 0.0), 1e-12)
    assert close(quat_from_yaw(-90.0), (0.0, 0.0, -s, s))


def test_station_transform_from_pose() -> None:
    g = build_graph(spec())
    t = g.entity("station/c").transform
    assert t.position == (6.0, 6.0, 0.0)
    assert close(t.rotation, quat_from_yaw(90.0))
    # local +x of a station turned by 90° points north
    assert close(t.apply((1.0, 0.0, 0.0)), (6.0, 7.0, 0.0), 1e-12)
    assert g.entity("station/a").transform == Transform()


def test_robot_pose_is_relative_to_its_station() -> None:
    g = build_graph(spec())
    robot = g.entity("robot/c")
    assert robot.geometry == RobotGeometry(urdf="r.urdf")
    world = g.world_transform("robot/c")
    # (0, 2, 0) in a frame turned by 90° is (-2, 0, 0): world (4, 6, 0); yaw 90 - 90 = 0
    assert close(world.position, (4.0, 6.0, 0.0), 1e-12)
    assert world.yaw_deg == pytest.approx(0.0, abs=1e-9)


yaws = st.floats(min_value=-720.0, max_value=720.0, allow_nan=False)
coords = st.floats(min_value=-100.0, max_value=100.0, allow_nan=False)


@given(yaws, yaws, coords, coords)
def test_compose_adds_yaws_and_inverse_undoes(a: float, b: float, x: float, y: float) -> None:
    ta = Transform.from_yaw((x, y, 1.0), a)
    tb = Transform.from_yaw((y, x, -2.0), b)
    both = ta.compose(tb)
    diff = (both.yaw_deg - (a + b) + 180.0) % 360.0 - 180.0
    assert abs(diff) < 1e-6
    p = (0.3, -1.2, 0.7)
    assert close(both.apply(p), ta.apply(tb.apply(p)), 1e-9)
    assert close(ta.inverse().apply(ta.apply(p)), p, 1e-9)
    identity = ta.compose(ta.inverse())
    assert close(identity.position, (0.0, 0.0, 0.0), 1e-9)
    assert abs(abs(identity.rotation[3]) - 1.0) < 1e-12


@given(yaws, coords, coords, coords)
def test_matrix_agrees_with_apply(yaw: float, x: float, y: float, z: float) -> None:
    t = Transform.from_yaw((x, y, z), yaw)
    m = t.matrix()
    p = (1.5, -0.5, 2.0)
    by_matrix = tuple(sum(m[r][c] * (*p, 1.0)[c] for c in range(4)) for r in range(3))
    assert close(by_matrix, t.apply(p), 1e-9)
    assert m[3] == (0.0, 0.0, 0.0, 1.0)


# -- conveyors and buffers ---------------------------------------------------------------------


def test_default_conveyor_runs_between_footprint_edges() -> None:
    g = build_graph(spec())
    # b (box 2 x 1 at x=6) to c (default 1.5 box at (6, 6), turned 90°)
    path = g.conveyor_path("c1")
    assert close(path.points[0], (6.0, 0.5, BELT_HEIGHT), 1e-9)
    assert close(path.points[-1], (6.0, 6.0 - 0.75, BELT_HEIGHT), 1e-9)
    assert path.length == pytest.approx(4.75)
    assert path.headings_deg == pytest.approx((90.0,))
    geometry = g.entity("conveyor/c1").geometry
    assert isinstance(geometry, ConveyorGeometry)
    assert geometry.nominal_length == 5.0  # the file's length sets the transit time
    assert geometry.width == 0.6
    # the buffer sits at the middle of the belt, turned along the flow
    buffer = g.world_transform("buffer/c1")
    assert close(buffer.position, path.point_at(0.5), 1e-9)
    assert buffer.yaw_deg == pytest.approx(90.0)


def test_explicit_conveyor_path_is_kept_in_world_coordinates() -> None:
    g = build_graph(spec())
    path = g.conveyor_path("c2")
    expected = ((6, 7, 0.9), (6, 9, 0.9), (0, 9, 0.9), (0, 7, 0.9))
    for got, want in zip(path.points, expected, strict=True):
        assert close(got, tuple(float(v) for v in want), 1e-9)
    assert path.length == pytest.approx(10.0)
    assert path.headings_deg == pytest.approx((90.0, 180.0, -90.0))
    # stored in the conveyor's own frame: not the world points
    local = g.entity("conveyor/c2").geometry
    assert isinstance(local, ConveyorGeometry)
    assert not close(local.path.points[0], path.points[0])


def test_rotated_footprint_clips_the_path_at_its_corner() -> None:
    text = """\
    line: diag
    stations:
      - {id: a, process_time: 1, position: [0, 0, 0], yaw_deg: 45, box: [2, 2, 1]}
      - {id: b, process_time: 1, position: [10, 0, 0], box: [2, 2, 1]}
    buffers:
      - {id: c, from: a, to: b, conveyor: {length: 8, speed: 1}}
    """
    path = build_graph(spec(text)).conveyor_path("c")
    assert path.points[0][0] == pytest.approx(math.sqrt(2.0))
    assert path.points[-1][0] == pytest.approx(9.0)


def test_overlapping_footprints_fall_back_to_pose_to_pose() -> None:
    text = """\
    line: tight
    stations:
      - {id: a, process_time: 1, position: [0, 0, 0], box: [3, 3, 1]}
      - {id: b, process_time: 1, position: [2, 0, 0], box: [3, 3, 1]}
    buffers:
      - {id: c, from: a, to: b, conveyor: {length: 2, speed: 1}}
    """
    path = build_graph(spec(text)).conveyor_path("c")
    assert close(path.points[0], (0.0, 0.0, BELT_HEIGHT))
    assert close(path.points[-1], (2.0, 0.0, BELT_HEIGHT))


def test_mesh_size_sets_the_footprint() -> None:
    text = """\
    line: meshy
    stations:
      - {id: a, process_time: 1, position: [0, 0, 0], mesh: m.stl, scale: 2}
      - {id: b, process_time: 1, position: [10, 0, 0]}
    buffers:
      - {id: c, from: a, to: b, conveyor: {length: 8, speed: 1}}
    """
    s = parse_line(textwrap.dedent(text), filename="t.yaml", check_meshes=False)
    g = build_graph(s, mesh_sizes={"a": (4.0, 3.0, 2.0)})
    geometry = g.entity("station/a").geometry
    assert isinstance(geometry, MeshGeometry)
    assert geometry.size == (4.0, 3.0, 2.0)
    assert geometry.scale == 2.0
    assert geometry.asset is None
    assert g.conveyor_path("c").points[0][0] == pytest.approx(2.0)
    # without a known size the default footprint (1.5 m) is used
    assert build_graph(s).conveyor_path("c").points[0][0] == pytest.approx(0.75)


def test_plain_buffer_is_a_box_midway_on_the_floor() -> None:
    g = build_graph(spec())
    b1 = g.entity("buffer/b1")
    assert b1.geometry == BoxGeometry(size=BUFFER_BOX)
    # a's edge at x=1, b's at x=5: midway is x=3, on the floor, turned along +x
    assert close(b1.transform.position, (3.0, 0.0, 0.0), 1e-9)
    assert b1.transform.yaw_deg == pytest.approx(0.0)
    handoff = g.entity("buffer/h")
    assert handoff.geometry is None  # capacity 0: a direct handoff has nothing to draw
    assert handoff.visual.label == "h [0]"
    assert g.children("buffer/b1") == ()


def test_parallel_buffers_get_separate_lanes() -> None:
    text = """\
    line: loop
    source: {feeds: a, interarrival: 5}
    stations:
      - {id: a, process_time: 1, position: [0, 0, 0]}
      - {id: b, process_time: 1, position: [8, 0, 0]}
      - {id: c, process_time: 1, position: [16, 0, 0]}
    buffers:
      - {id: ab1, from: a, to: b, conveyor: {length: 6, speed: 1}}
      - {id: ab2, from: a, to: b, conveyor: {length: 6, speed: 1}}
      - {id: rework, from: b, to: a, capacity: 3}
      - {id: bc, from: b, to: c, capacity: 3}
    """
    g = build_graph(spec(text))
    y1 = g.conveyor_path("ab1").points[0][1]
    y2 = g.conveyor_path("ab2").points[0][1]
    y3 = g.world_transform("buffer/rework").position[1]
    assert len({round(y, 6) for y in (y1, y2, y3)}) == 3
    assert y1 + y2 + y3 == pytest.approx(0.0)  # lanes are centred on the line between the poses
    assert g.world_transform("buffer/bc").position[1] == pytest.approx(0.0)
    assert g.world_transform("buffer/rework").yaw_deg == pytest.approx(180.0)


# -- polylines and parts -----------------------------------------------------------------------


def test_polyline_points_and_headings() -> None:
    line = Polyline(points=((0.0, 0.0, 1.0), (4.0, 0.0, 1.0), (4.0, 4.0, 1.0)))
    assert line.length == 8.0
    assert line.point_at(0.0) == (0.0, 0.0, 1.0)
    assert line.point_at(0.25) == (2.0, 0.0, 1.0)
    assert line.point_at(0.5) == (4.0, 0.0, 1.0)
    assert line.point_at(0.75) == (4.0, 2.0, 1.0)
    assert line.point_at(1.0) == (4.0, 4.0, 1.0)
    assert line.point_at(1.7) == (4.0, 4.0, 1.0)  # clamped
    assert line.point_at(-0.3) == (0.0, 0.0, 1.0)
    assert line.heading_at(0.1) == pytest.approx(0.0)
    assert line.heading_at(0.9) == pytest.approx(90.0)
    with pytest.raises(ValueError, match="finite"):
        line.point_at(math.nan)
    with pytest.raises(ValueError, match="two points"):
        Polyline(points=((0.0, 0.0, 0.0),))


@given(st.floats(min_value=0.0, max_value=1.0))
def test_part_positions_lie_on_the_path_at_their_arc_length(progress: float) -> None:
    g = build_graph(spec())
    path = g.conveyor_path("c2")
    p = part_position(g, "c2", progress)
    # distance along the U path from its start, measured back from the point
    travelled = 0.0
    for a, b in zip(path.points, path.points[1:], strict=False):
        seg = math.dist(a, b)
        if math.dist(a, p) + math.dist(p, b) <= seg + 1e-9:
            travelled += math.dist(a, p)
            break
        travelled += seg
    assert travelled == pytest.approx(progress * path.length, abs=1e-9)


def test_part_positions_of_a_conveyor() -> None:
    g = build_graph(spec())
    parts = ConveyorParts(buffer="c2", progress=(0.0, 0.2, 0.5, 1.0))
    got = part_positions(g, parts)
    assert close(got[0], (6.0, 7.0, 0.9), 1e-9)
    assert close(got[1], (6.0, 9.0, 0.9), 1e-9)
    assert close(got[2], (3.0, 9.0, 0.9), 1e-9)
    assert close(got[3], (0.0, 7.0, 0.9), 1e-9)
    with pytest.raises(KeyError):
        part_position(g, "b1", 0.5)  # a plain buffer has no belt


# -- visuals -----------------------------------------------------------------------------------


def test_colours_by_type_in_order_of_appearance() -> None:
    g = build_graph(spec())
    assert g.entity("station/a").visual.color == TYPE_PALETTE[0]  # press
    assert g.entity("station/b").visual.color == TYPE_PALETTE[1]  # weld
    assert g.entity("station/c").visual.color == TYPE_PALETTE[0]  # press again
    assert g.entity("station/d").visual.color == "#123456"  # the file's colour wins
    assert g.legend() == (
        ("press", TYPE_PALETTE[0]),
        ("weld", TYPE_PALETTE[1]),
        ("paint", "#123456"),
    )
    assert g.entity("station/a").visual.label == "a"


def test_labels_show_parallel_servers() -> None:
    s = spec("line: x\nstations:\n  - {id: m, process_time: 1, servers: 3}\n")
    assert build_graph(s).entity("station/m").visual.label == "m ×3"


def test_colour_parsing() -> None:
    assert parse_color("#ABC") == "#aabbcc"
    assert parse_color(" #1a2B3c ") == "#1a2b3c"
    assert parse_color("Red") == "#d62728"
    assert parse_color("#12345") is None
    assert parse_color("chartreuse-ish") is None


def test_unknown_colour_falls_back_to_type_colour_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    s = spec("line: x\nstations:\n  - {id: m, process_time: 1, color: mauvish}\n")
    with caplog.at_level(logging.WARNING, logger="scenes.graph"):
        g = build_graph(s)
    assert g.entity("station/m").visual.color == TYPE_PALETTE[0]
    assert "mauvish" in caplog.text


def test_with_assets_points_geometry_at_hashes() -> None:
    g = build_graph(spec())
    sha = "ab" * 32
    g2 = with_assets(g, {"station/a": sha, "buffer/b1": sha, "conveyor/c1": sha})
    a = g2.entity("station/a").geometry
    assert isinstance(a, BoxGeometry) and a.asset == sha
    b1 = g2.entity("buffer/b1").geometry
    assert isinstance(b1, BoxGeometry) and b1.asset == sha
    assert g2.entity("conveyor/c1").geometry == g.entity("conveyor/c1").geometry  # procedural
    b = g2.entity("station/b").geometry
    assert isinstance(b, BoxGeometry) and b.asset is None


# -- live state --------------------------------------------------------------------------------


def test_machine_states_follow_the_process_semantics() -> None:
    assert {s.value for s in MachineState} == {"busy", "blocked", "starved", "down", "stale"}
    assert set(STATE_COLORS) == set(MachineState)
    assert len(set(STATE_COLORS.values())) == len(STATE_COLORS)


def test_line_state_lookups() -> None:
    state = LineState(
        time_s=12.5,
        stations=(StationState(station="a", state=MachineState.DOWN, time_s=12.0),),
        buffers=(BufferLevel(buffer="b1", level=3),),
        conveyors=(ConveyorParts(buffer="c1", progress=(0.1, 0.6)),),
    )
    assert state.station_state("a") is MachineState.DOWN
    assert state.station_state("b") is MachineState.STALE  # no news is shown as stale
    assert state.buffer_level("b1") == 3
    assert state.buffer_level("c1") is None
    assert state.parts_on("c1") == (0.1, 0.6)
    assert state.parts_on("c2") == ()
    with pytest.raises(AttributeError):
        state.time_s = 1.0  # type: ignore[misc]


# -- the example lines -------------------------------------------------------------------------


def test_examples_exist() -> None:
    assert len(EXAMPLES) >= 3, EXAMPLES


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_builds_a_graph(path: Path) -> None:
    s = load_line(path)
    g = build_graph(s)
    assert isinstance(g, SceneGraph)
    assert len(g.of_kind(EntityKind.STATION)) == len(s.stations)
    assert len(g.of_kind(EntityKind.BUFFER)) == len(s.buffers)
    assert len(g.of_kind(EntityKind.CONVEYOR)) == sum(b.conveyor is not None for b in s.buffers)
    assert len({e.id for e in g.entities}) == len(g.entities)
    for b in s.buffers:
        if b.conveyor is not None:
            assert g.conveyor_path(b.id).length > 0
