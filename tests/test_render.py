"""Offscreen rendering: the PNG has the asked size, is not blank, shows the machine colours
(by type, or by state with a live state), and ``twin render`` works and fails cleanly."""

from __future__ import annotations

import colorsys
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import rgb_to_hsv
from numpy.typing import NDArray
from PIL import Image

from scenes.errors import TwinError
from scenes.graph import (
    STATE_COLORS,
    TYPE_PALETTE,
    BufferLevel,
    ConveyorParts,
    LineState,
    MachineState,
    StationState,
    hex_to_rgb,
)
from scenes.lineparse import load_line, parse_line
from scenes.render import render_line

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(
    p
    for p in (REPO / "scenes" / "examples").glob("*.yaml")
    if not p.name.endswith((".space.yaml", ".scenario.yaml"))
)
SIZE = (360, 220)

LINE = textwrap.dedent(
    """\
    line: render test
    stations:
      - {id: press, type: press, process_time: 5, position: [0, 0, 0], box: [2, 2, 2]}
      - {id: weld, type: weld, process_time: 5, position: [6, 0, 0], box: [2, 2, 2]}
      - {id: pack, type: pack, process_time: 5, position: [12, 0, 0], box: [2, 2, 2]}
    buffers:
      - {id: b1, from: press, to: weld, capacity: 4}
      - {id: c1, from: weld, to: pack, conveyor: {length: 4, speed: 0.5}}
    """
)


def pixels(path: Path) -> NDArray[np.uint8]:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def hue_share(img: NDArray[np.uint8], color: str, *, tol_deg: float = 7.0) -> float:
    """Share of pixels with about the hue of ``color`` and clearly saturated (shading changes
    brightness, not hue, so this finds a colour on lit and shaded faces alike; dark text is
    left out)."""
    target_h, _, _ = colorsys.rgb_to_hsv(*hex_to_rgb(color))
    hsv = rgb_to_hsv(img.reshape(-1, 3).astype(float) / 255.0)
    d = np.abs(hsv[:, 0] - target_h)
    d = np.minimum(d, 1.0 - d) * 360.0
    hits = (d < tol_deg) & (hsv[:, 1] > 0.25) & (hsv[:, 2] > 0.3)
    return float(np.count_nonzero(hits)) / len(hsv)


def test_render_writes_a_png_of_the_right_size_that_is_not_blank(tmp_path: Path) -> None:
    out = render_line(parse_line(LINE), tmp_path / "sub" / "line.png", size=SIZE)
    assert out == tmp_path / "sub" / "line.png"
    with Image.open(out) as im:
        assert im.format == "PNG"
        assert im.size == SIZE
    img = pixels(out)
    assert img.std() > 20  # not one flat colour
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 200


def test_static_layout_shows_each_station_type_colour(tmp_path: Path) -> None:
    img = pixels(render_line(parse_line(LINE), tmp_path / "a.png", size=SIZE))
    for color in TYPE_PALETTE[:3]:  # press, weld, pack
        assert hue_share(img, color) > 0.002, color
    # the state colours are not used for a static layout (red: down)
    assert hue_share(img, STATE_COLORS[MachineState.DOWN], tol_deg=3.0) < 0.0005


def test_live_state_colours_machines_by_state(tmp_path: Path) -> None:
    state = LineState(
        time_s=60.0,
        stations=(
            StationState(station="press", state=MachineState.BUSY),
            StationState(station="weld", state=MachineState.DOWN),
        ),  # pack: no news, shown stale
        buffers=(BufferLevel(buffer="b1", level=2),),
        conveyors=(ConveyorParts(buffer="c1", progress=(0.2, 0.5, 0.8)),),
    )
    img = pixels(render_line(parse_line(LINE), tmp_path / "s.png", state=state, size=SIZE))
    assert hue_share(img, STATE_COLORS[MachineState.BUSY]) > 0.002
    assert hue_share(img, STATE_COLORS[MachineState.DOWN], tol_deg=4.0) > 0.002
    # the type colour of the press (blue) has gone
    assert hue_share(img, TYPE_PALETTE[0], tol_deg=3.0) < 0.0005


def test_parts_on_conveyors_are_drawn(tmp_path: Path) -> None:
    spec = parse_line(LINE)
    base = LineState(stations=(StationState(station="weld", state=MachineState.BUSY),))
    with_parts = LineState(
        stations=base.stations,
        conveyors=(ConveyorParts(buffer="c1", progress=(0.25, 0.5, 0.75)),),
    )
    a = pixels(render_line(spec, tmp_path / "a.png", state=base, size=SIZE))
    b = pixels(render_line(spec, tmp_path / "b.png", state=with_parts, size=SIZE))
    changed = np.any(a != b, axis=2)
    assert changed.sum() > 30


def test_mesh_stations_render(tmp_path: Path) -> None:
    meshes = tmp_path / "meshes"
    meshes.mkdir()
    (meshes / "filler.stl").write_bytes(
        (REPO / "scenes" / "examples" / "meshes" / "filler.stl").read_bytes()
    )
    line = tmp_path / "m.yaml"
    line.write_text(
        "line: m\nstations:\n"
        "  - {id: f, type: filler, process_time: 1, mesh: meshes/filler.stl, color: '#d62728'}\n"
    )
    img = pixels(render_line(load_line(line), tmp_path / "m.png", size=SIZE))
    assert hue_share(img, "#d62728", tol_deg=4.0) > 0.005


def test_render_rejects_tiny_images(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="64x64"):
        render_line(parse_line(LINE), tmp_path / "x.png", size=(32, 200))


def test_broken_mesh_is_a_twin_error(tmp_path: Path) -> None:
    (tmp_path / "bad.stl").write_text("solid nothing\nendsolid\n")
    line = tmp_path / "b.yaml"
    line.write_text("line: b\nstations:\n  - {id: f, process_time: 1, mesh: bad.stl}\n")
    spec = load_line(line, check_meshes=False)
    with pytest.raises(TwinError, match=r"bad\.stl"):
        render_line(spec, tmp_path / "b.png", size=SIZE)


# -- the command line --------------------------------------------------------------------------


def twin(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "twin", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def test_twin_render_writes_the_picture(tmp_path: Path) -> None:
    line = tmp_path / "line.yaml"
    line.write_text(LINE)
    out = tmp_path / "pic.png"
    result = twin("render", str(line), "-o", str(out), "--size", "300x200", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"wrote {out} (300x200)" in result.stdout
    assert "render test" in result.stdout
    with Image.open(out) as im:
        assert im.size == (300, 200)
    assert "WARN" not in result.stderr  # VTK's headless chatter is kept off the terminal


def test_twin_render_defaults_to_the_file_name(tmp_path: Path) -> None:
    (tmp_path / "myline.yaml").write_text(LINE)
    result = twin("render", "myline.yaml", "--size", "200x120", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "myline.png").is_file()


def test_twin_render_reports_a_bad_file_without_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("line: bad\nstations:\n  - {id: m1, process_time: -3}\n")
    result = twin("render", str(bad), "-o", str(tmp_path / "x.png"), cwd=tmp_path)
    assert result.returncode == 1
    assert f"{bad}:3 stations[0].process_time: must be > 0" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "x.png").exists()


def test_twin_render_rejects_a_bad_size(tmp_path: Path) -> None:
    (tmp_path / "l.yaml").write_text(LINE)
    result = twin("render", "l.yaml", "--size", "big", cwd=tmp_path)
    assert result.returncode == 2
    assert "WIDTHxHEIGHT" in result.stderr
    assert "Traceback" not in result.stderr


# -- the example lines -------------------------------------------------------------------------


def test_examples_exist() -> None:
    assert len(EXAMPLES) >= 3, EXAMPLES


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_renders(path: Path, tmp_path: Path) -> None:
    spec = load_line(path)
    out = render_line(spec, tmp_path / f"{path.stem}.png", size=(320, 180))
    img = pixels(out)
    assert img.shape == (180, 320, 3)
    assert img.std() > 20
