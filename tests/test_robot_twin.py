"""Robot cells in the twin: the body-in-white line runs with its pybullet cells in ``twin serve
--robots`` (links streamed with their URDF meshes, moving while the process core has the station
busy); cell alarms become the line's; a robot station's process time can come from physics."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from pathlib import Path

import numpy as np
from conftest import Twin

from scenes.assets import AssetStore, publish_scene
from scenes.lineparse import parse_line
from streaming.client import TwinClient
from streaming.store import SceneStore
from twin.commands.serve import build_app
from twin.robots import RobotCells
from twin.simline import SimulatedLine

ROOT = Path(__file__).resolve().parent.parent
ONE_ROBOT = """
line: one-robot
stations:
  - {id: load, process_time: 20}
  - id: weld
    process_time: 30
    robot: {urdf: kuka_iiwa/model.urdf, position: [0, 2.0, 0], yaw_deg: -90}
buffers:
  - {id: b1, from: load, to: weld, capacity: 2}
"""


def test_the_biw_line_runs_with_its_robot_cells_in_twin_serve(tmp_path: Path) -> None:
    twin = Twin(
        "serve",
        "scenes/examples/biw_welding.yaml",
        "--robots",
        "--speed",
        "20",
        "--port",
        "0",
        "--audit",
        str(tmp_path / "a.jsonl"),
        "--assets",
        str(tmp_path / "assets"),
    )
    try:
        url, token = twin.url_and_token()

        async def check() -> None:
            async with TwinClient(url, token) as c:
                await c.wait_for(lambda r: r.seq is not None, timeout=60)
                r = c.replica
                links = sorted(i for i in r.ids() if r.entities[r.by_id[i]].kind == "robot_link")
                assert len(links) == 5 * 8  # five iiwa robots, eight visual links each
                assets = {r.entities[r.by_id[i]].props["geometry"]["asset"] for i in links}
                assert len(assets) == 8  # one GLB per link, shared by the five robots
                sha = next(iter(assets))
                http = url.replace("ws://", "http://").removesuffix("/ws")
                with urllib.request.urlopen(f"{http}/assets/{sha}.glb", timeout=10) as resp:
                    assert resp.status == 200 and resp.read(4) == b"glTF"
                start = {i: r.pose(i)[0].copy() for i in links}

                def moved(r: object) -> bool:
                    return any(np.abs(c.replica.pose(i)[0] - start[i]).max() > 0.01 for i in links)

                await c.wait_for(moved, timeout=90)  # a cell cycles once its station is busy

        asyncio.run(check())
    finally:
        twin.stop()


def test_cell_alarms_and_physics_process_times(tmp_path: Path) -> None:
    spec = parse_line(ONE_ROBOT)
    assets = AssetStore(tmp_path / "assets")
    graph = publish_scene(spec, assets)
    cells = RobotCells(spec, assets, processes=1)
    try:
        alarms: list[dict[str, object]] = []
        sim = SimulatedLine(spec, graph, speed=1.0, on_alarm=alarms.append)
        sim.attach_robots(cells)
        store = SceneStore()
        sim.populate(store)
        store.commit()
        assert len([e for e in store.entities() if e.kind == "robot_link"]) == 8
        # a person walks into the cell: the robot stops and the line raises an alarm
        assert cells.keepout("weld", True) is True
        t0 = time.time()
        sim(store, t0)
        sim(store, t0 + 0.05)
        store.commit()
        raised = [e for e in store.entities() if e.kind == "alarm"]
        assert raised and "weld" in str(store.get(raised[0].id, "text"))
        assert store.get(raised[0].id, "state") == "active"
        assert alarms and alarms[-1]["entity"] == "station/weld"
        cells.keepout("weld", False)
        # one real cycle per cell gives the station's process time
        times = cells.cycle_times()
        assert set(times) == {"weld"} and 1.0 < times["weld"] < 30.0
    finally:
        cells.close()
    _, _, line = build_app(
        _write(tmp_path), assets_dir=tmp_path / "assets", robots=True, robot_times="physics"
    )
    try:
        i = line.model.station_ids.index("weld")
        pt = float(np.asarray(line.params.pt_mean)[0, i])
        assert 1.0 < pt < 30.0 and pt != 30.0  # the file said 30 s; physics says otherwise
    finally:
        line.robots.close()


def _write(tmp: Path) -> Path:
    p = tmp / "line.yaml"
    p.write_text(ONE_ROBOT)
    return p


def test_the_biw_framing_cell_cycles_without_spurious_collisions() -> None:
    """Regression: a parked part's stale contact showed as 'robot link ... hit part -1' (one
    cycle in six failed on this cell)."""
    from physics.rigid.cell import Cell
    from scenes.lineparse import load_line

    spec = load_line(ROOT / "scenes/examples/biw_welding.yaml")
    station = next(s for s in spec.stations if s.id == "framing")
    cell = Cell.from_spec(station, seed=2)
    try:
        results = [cell.run_cycle() for _ in range(8)]
        assert [r.ok for r in results] == [True] * 8, [r.error for r in results]
        assert not [e for e in cell.events() if e.kind.is_alarm]
    finally:
        cell.close()
