"""The shipped example lines and the examples in docs/line-format.md: they validate, and each has
the characteristics it promises (size, rates, parallel cells, robots, split and merge, layout)."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from scenes.assets import load_mesh
from scenes.lineparse import load_line, parse_line
from scenes.spec import LineSpec, RoutingPolicy, Station

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "scenes" / "examples"
DOC = REPO / "docs" / "line-format.md"


def line_files() -> list[Path]:
    """Example line files; ``*.space.yaml`` and ``*.scenario.yaml`` are other kinds of file."""
    return sorted(
        p for p in EXAMPLES.glob("*.yaml") if not p.name.endswith((".space.yaml", ".scenario.yaml"))
    )


def example(name: str) -> LineSpec:
    return load_line(EXAMPLES / f"{name}.yaml")


def effective_cycle_s(st: Station) -> float:
    """Mean time between parts out of a station with all servers busy."""
    return st.process_time.mean / st.servers


def footprint(st: Station) -> tuple[float, float, float, float]:
    """The station's axis-aligned footprint on the floor: (xmin, xmax, ymin, ymax), metres."""
    if st.geometry.mesh is not None:
        bounds = load_mesh(st.geometry.mesh).bounds * st.geometry.scale
        corners = [(x, y) for x in bounds[:, 0] for y in bounds[:, 1]]
    else:
        assert st.geometry.box is not None
        sx, sy, _ = st.geometry.box
        corners = [(x, y) for x in (-sx / 2, sx / 2) for y in (-sy / 2, sy / 2)]
    c, s = math.cos(math.radians(st.pose.yaw_deg)), math.sin(math.radians(st.pose.yaw_deg))
    px, py, _ = st.pose.position
    xs = [px + c * x - s * y for x, y in corners]
    ys = [py + s * x + c * y for x, y in corners]
    return min(xs), max(xs), min(ys), max(ys)


def test_the_three_examples_are_there() -> None:
    names = [p.name for p in line_files()]
    assert {"bottling.yaml", "biw_welding.yaml", "smt.yaml"} <= set(names)


@pytest.mark.parametrize("path", line_files(), ids=lambda p: p.name)
def test_every_example_validates_and_is_laid_out(path: Path) -> None:
    spec = load_line(path)
    assert spec.description.strip().endswith(".")
    assert all(st.type != "machine" for st in spec.stations), "every station has a type"
    assert sum(1 for st in spec.stations if st.tags) >= 2, "tag bindings on a few stations"
    assert any(st.failures is not None for st in spec.stations)
    # No two machines overlap on the floor.
    boxes = {st.id: footprint(st) for st in spec.stations}
    ids = list(boxes)
    for i, a in enumerate(ids):
        for b in ids[i + 1 :]:
            ax0, ax1, ay0, ay1 = boxes[a]
            bx0, bx1, by0, by1 = boxes[b]
            overlap = ax0 < bx1 and bx0 < ax1 and ay0 < by1 and by0 < ay1
            assert not overlap, f"{a} and {b} overlap"
    # Robots stand beside their station, not inside any machine.
    for st in spec.stations:
        if st.robot is None:
            continue
        c = math.cos(math.radians(st.pose.yaw_deg))
        s = math.sin(math.radians(st.pose.yaw_deg))
        ox, oy, _ = st.robot.pose.position
        rx = st.pose.position[0] + c * ox - s * oy
        ry = st.pose.position[1] + s * ox + c * oy
        for other, (x0, x1, y0, y1) in boxes.items():
            assert not (x0 < rx < x1 and y0 < ry < y1), f"robot of {st.id} inside {other}"
    # Conveyor lengths match their drawn paths, which run between the right stations.
    for buf in spec.buffers:
        conv = buf.conveyor
        if conv is None or not conv.path:
            continue
        drawn = sum(math.dist(p, q) for p, q in zip(conv.path, conv.path[1:], strict=False))
        assert drawn == pytest.approx(conv.length, rel=0.01), buf.id
        start, end = conv.path[0], conv.path[-1]
        src, dst = spec.station(buf.source), spec.station(buf.target)
        assert math.dist(start[:2], src.pose.position[:2]) < math.dist(
            start[:2], dst.pose.position[:2]
        ), f"{buf.id} starts at {buf.source}"
        assert math.dist(end[:2], dst.pose.position[:2]) < math.dist(
            end[:2], src.pose.position[:2]
        ), f"{buf.id} ends at {buf.target}"


def test_twin_validate_accepts_every_example() -> None:
    files = [str(p) for p in line_files()]
    result = subprocess.run(
        [sys.executable, "-m", "twin", "validate", *files],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert len(result.stdout.splitlines()) == len(files)


def test_bottling() -> None:
    spec = example("bottling")
    types = {st.type for st in spec.stations}
    assert {"depalletizer", "rinser", "filler", "capper", "labeller", "inspector"} <= types
    assert {"case_packer", "palletizer"} <= types
    assert len(spec.stations) >= 7
    assert spec.buffers and all(b.conveyor is not None for b in spec.buffers)
    # A serial line: each station feeds the next.
    assert [(b.source, b.target) for b in spec.buffers] == [
        (a.id, b.id) for a, b in zip(spec.stations, spec.stations[1:], strict=False)
    ]
    # Cycle times of 1-2 s per bottle; the bottleneck sets 2,000-3,600 bottles per hour.
    assert all(1.0 <= effective_cycle_s(st) <= 2.0 for st in spec.stations)
    rate = 3600 / max(effective_cycle_s(st) for st in spec.stations)
    assert 2000 <= rate <= 3600
    inspector = spec.station("inspector")
    assert 0 < inspector.scrap_rate <= 0.02
    assert all(st.scrap_rate == 0 for st in spec.stations if st.id != "inspector")
    # The filler and the labeller fail more often than the rest; repairs take minutes.
    mtbf = {st.id: st.failures.mtbf for st in spec.stations if st.failures is not None}
    others = [v for k, v in mtbf.items() if k not in ("filler", "labeller")]
    assert max(mtbf["filler"], mtbf["labeller"]) < min(others)
    assert all(60 <= st.failures.mttr <= 1800 for st in spec.stations if st.failures is not None)
    # The filler is drawn with the shipped mesh.
    mesh = spec.station("filler").geometry.mesh
    assert mesh is not None and Path(mesh) == EXAMPLES / "meshes" / "filler.stl"


def test_biw_welding() -> None:
    spec = example("biw_welding")
    parallel = [st for st in spec.stations if st.servers >= 2]
    assert {st.servers for st in parallel} == {2, 3}
    assert all(st.type == "welding" for st in parallel)
    robots = [st for st in spec.stations if st.robot is not None]
    assert len(robots) >= 4
    assert all(st.robot is not None and st.robot.urdf == "kuka_iiwa/model.urdf" for st in robots)
    assert all(st in robots for st in parallel)
    # Cycle times of about 50-70 s per body (per server for the parallel cells).
    assert all(40 <= effective_cycle_s(st) <= 70 for st in spec.stations)
    assert all(50 <= effective_cycle_s(st) <= 70 for st in robots)
    assert all(st.process_time.mean > 70 for st in parallel)
    assert sum(1 for st in spec.stations if st.failures is not None) >= 4


def test_smt() -> None:
    spec = example("smt")
    splits = [st for st in spec.stations if len(spec.outputs(st.id)) >= 2]
    merges = [st for st in spec.stations if len(spec.inputs(st.id)) >= 2]
    assert [st.id for st in splits] == ["spi"]
    assert [st.id for st in merges] == ["reflow"]
    spi = splits[0]
    assert spi.routing is RoutingPolicy.PROBABILITY
    assert {b for b, _ in spi.weights} == {b.id for b in spec.outputs("spi")}
    # The two branches meet again at the merge.
    branches = [b.target for b in spec.outputs("spi")]
    assert all(spec.outputs(t)[0].target == "reflow" for t in branches)
    assert all(20 <= effective_cycle_s(st) <= 60 for st in spec.stations)
    assert 0 < spec.station("aoi").scrap_rate <= 0.05


def test_example_mesh_is_small_and_loads() -> None:
    meshes = sorted((EXAMPLES / "meshes").glob("*.stl")) + sorted(
        (EXAMPLES / "meshes").glob("*.glb")
    )
    assert meshes
    for p in meshes:
        assert p.stat().st_size < 20_000
        mesh = load_mesh(p)
        assert len(mesh.faces) > 12
        assert mesh.bounds[0][2] == pytest.approx(0.0, abs=1e-6)  # stands on the floor


# -- docs/line-format.md -----------------------------------------------------------------------------


def doc_line_files() -> list[str]:
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    return [b for b in blocks if b.startswith("line:")]


def test_doc_contains_the_first_example_verbatim() -> None:
    from test_lineparse import VERBATIM

    assert f"```yaml\n{VERBATIM}```" in DOC.read_text(encoding="utf-8")


@pytest.mark.parametrize("text", doc_line_files(), ids=lambda t: t.split("\n", 1)[0])
def test_doc_line_files_validate(text: str) -> None:
    spec = parse_line(text, filename="doc.yaml", base_dir=EXAMPLES)
    assert spec.stations


def test_doc_has_a_complete_example() -> None:
    names = [t.split("\n", 1)[0] for t in doc_line_files()]
    assert names == ["line: two-station            # the line's name", "line: assembly-cell"]
    spec = parse_line(doc_line_files()[1], filename="doc.yaml")
    assert spec.sources and any(len(spec.outputs(s.id)) >= 2 for s in spec.stations)
    assert any(len(spec.inputs(s.id)) >= 2 for s in spec.stations)
    assert any(b.conveyor is not None for b in spec.buffers)
