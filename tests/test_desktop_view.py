"""``twin view`` (pyvista window, offscreen here) and ``twin render --live`` against a real
``twin serve``: both draw the live scene, machines in their state colours, parts on belts."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import Twin

from scenes.graph import STATE_COLORS, MachineState, hex_to_rgb

ROOT = Path(__file__).resolve().parent.parent
LINE = """
line: desktop-test
stations:
  - {id: cut, process_time: {dist: exponential, mean: 20}, failures: {mtbf: 300, mttr: 60}}
  - {id: bend, process_time: 25}
buffers:
  - {id: b1, from: cut, to: bend, capacity: 4, conveyor: {length: 6, speed: 0.5}}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    tmp = tmp_path_factory.mktemp("desktop")
    (tmp / "line.yaml").write_text(LINE)
    twin = Twin(
        "serve",
        str(tmp / "line.yaml"),
        "--port",
        "0",
        "--speed",
        "20",
        "--audit",
        str(tmp / "audit.jsonl"),
        "--assets",
        str(tmp / "assets"),
    )
    url, token = twin.url_and_token()
    (tmp / "token").write_text(token)
    yield url, tmp
    twin.stop()


def state_pixels(png: Path) -> int:
    """Pixels close to a process-state colour (busy, blocked, starved, down; not the grey of
    stale): lit faces are darker, so each colour is tried at several brightnesses."""
    img = _read_png(png)[..., :3]
    count = 0
    for state, color in STATE_COLORS.items():
        if state is MachineState.STALE:
            continue
        ref = np.array(hex_to_rgb(color)) * 255
        for scale in (0.55, 0.7, 0.85, 1.0):
            count += int(np.sum(np.all(np.abs(img - ref * scale) < 18, axis=-1)))
    return count


def _read_png(png: Path) -> np.ndarray:
    import matplotlib.image as mpimg

    a = mpimg.imread(str(png))
    return (a * 255 if a.dtype != np.uint8 else a).astype(float)


def run_twin(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "twin", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_twin_view_offscreen_draws_the_live_machines(server: tuple[str, Path]) -> None:
    url, tmp = server
    png = tmp / "view.png"
    r = run_twin(
        "view",
        url,
        "--token-file",
        str(tmp / "token"),
        "--offscreen",
        "--frames",
        "15",
        "--screenshot",
        str(png),
        "--size",
        "800x500",
    )
    assert r.returncode == 0, r.stderr
    assert png.is_file()
    assert state_pixels(png) > 500, "no machine drawn in a state colour"


def test_twin_render_live_draws_the_current_state(server: tuple[str, Path]) -> None:
    url, tmp = server
    png = tmp / "live.png"
    r = run_twin(
        "render",
        "--live",
        url,
        "-o",
        str(png),
        "--size",
        "800x500",
        env={"TWIN_TOKEN": (tmp / "token").read_text()},
    )
    assert r.returncode == 0, r.stderr
    assert re.search(r"the live state at t=[\d.]+ s, seq \d+, 2 stations", r.stdout), r.stdout
    assert state_pixels(png) > 500


def test_a_wrong_token_is_a_clear_error(server: tuple[str, Path]) -> None:
    url, _ = server
    r = run_twin(
        "render", "--live", url, "-o", "/dev/null", env={"TWIN_TOKEN": "not-a-valid-token"}
    )
    assert r.returncode != 0
    assert "401" in r.stderr + r.stdout
    r = run_twin("view", url, "--offscreen", "--frames", "1", env={"TWIN_TOKEN": ""})
    assert r.returncode == 2 and "no token" in r.stderr
