"""The live scene of a twin drawn with pyvista: ``twin view`` (a desktop window) and
``twin render --live`` (one offscreen picture) both mirror a server through
:class:`streaming.client.TwinClient` and draw its replica with :class:`LiveScene`.

Everything drawn comes from the wire (``docs/protocol.md``): entity props carry the geometry
(box sizes, conveyor paths), components the machine states; no line file is needed.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from scenes.graph import STATE_COLORS, MachineState
from streaming.client import TwinClient
from streaming.replica import Replica

BACKGROUND = "#1b1f24"
BELT_COLOR = "#3b4450"
PART_COLOR = "#7fb3ff"
BUFFER_COLOR = "#8d99a6"
PART_SIDE = 0.3


def state_color(state: object) -> str:
    try:
        return STATE_COLORS[MachineState(str(state))]
    except ValueError:
        return STATE_COLORS[MachineState.STALE]


class LiveScene:
    """pyvista actors for a replica: stations coloured by state, buffers, belts and parts."""

    def __init__(self, plotter: Any) -> None:
        import pyvista as pv

        self.pv = pv
        self.plotter = plotter
        self.stations: dict[str, Any] = {}  # id -> actor
        self.colors: dict[str, str] = {}
        self._parts_actor: Any = None
        self._built = False
        plotter.set_background(BACKGROUND)

    def build(self, r: Replica) -> None:
        """Add the static scene (once the replica holds a snapshot)."""
        pv = self.pv
        for h, e in r.entities.items():
            g = e.props.get("geometry") or {}
            if e.kind in ("station", "buffer") and g.get("type") in ("box", "mesh"):
                sx, sy, sz = g.get("size") or (1.2, 1.2, 1.2)
                pos, quat = r.pose(e.id)
                box = pv.Cube(center=(0, 0, sz / 2), x_length=sx, y_length=sy, z_length=sz)
                box = box.transform(_matrix(pos, quat), inplace=False)
                color = BUFFER_COLOR if e.kind == "buffer" else state_color(r.comps[h].get("state"))
                actor = self.plotter.add_mesh(box, color=color, smooth_shading=False)
                if e.kind == "station":
                    self.stations[e.id] = actor
                    self.colors[e.id] = color
            elif e.kind == "conveyor" and g.get("type") == "conveyor":
                path = np.asarray(g["path"], float)
                for a, b in itertools.pairwise(path):
                    length = float(np.linalg.norm(b - a))
                    if length <= 0:
                        continue
                    belt = pv.Cube(
                        center=(0, 0, -0.03),
                        x_length=length,
                        y_length=float(g.get("width", 0.5)),
                        z_length=0.05,
                    )
                    yaw = float(np.degrees(np.arctan2(b[1] - a[1], b[0] - a[0])))
                    belt = belt.rotate_z(yaw, inplace=False).translate((a + b) / 2, inplace=False)
                    self.plotter.add_mesh(belt, color=BELT_COLOR)
        labels = [
            (r.pose(i)[0] + np.array([0, 0, 2.0]), r.entities[r.by_id[i]].props.get("label", i))
            for i in self.stations
        ]
        if labels:
            self.plotter.add_point_labels(
                np.array([p for p, _ in labels]),
                [t for _, t in labels],
                font_size=14,
                text_color="white",
                shape_color="#111418",
                shape_opacity=0.8,
                show_points=False,
                always_visible=True,
            )
        self.plotter.view_isometric()
        self.plotter.camera.up = (0, 0, 1)
        self._built = True
        self.update(r)
        self.plotter.reset_camera()

    def update(self, r: Replica) -> None:
        """Follow the replica: machine colours and part positions."""
        if not self._built:
            if r.seq is None:
                return
            self.build(r)
            return
        for sid, actor in self.stations.items():
            h = r.by_id.get(sid)
            color = (
                state_color(r.comps.get(h, {}).get("state"))
                if h is not None
                else STATE_COLORS[MachineState.STALE]
            )
            if self.colors.get(sid) != color:
                actor.prop.color = color
                self.colors[sid] = color
        parts = [r.pose(e.id)[0] for e in r.entities.values() if e.kind == "part"]
        if self._parts_actor is not None:
            self.plotter.remove_actor(self._parts_actor)
            self._parts_actor = None
        if parts:
            cloud = self.pv.PolyData(np.asarray(parts, float) + np.array([0, 0, PART_SIDE / 2]))
            cubes = cloud.glyph(
                geom=self.pv.Cube(x_length=PART_SIDE, y_length=PART_SIDE, z_length=PART_SIDE),
                scale=False,
                orient=False,
            )
            self._parts_actor = self.plotter.add_mesh(cubes, color=PART_COLOR)


def _matrix(pos: np.ndarray, quat: np.ndarray) -> np.ndarray:
    x, y, z, w = (float(v) for v in quat)
    m = np.eye(4)
    m[:3, :3] = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ]
    m[:3, 3] = pos
    return m


class Mirror:
    """A :class:`TwinClient` running in a background thread with its own event loop, so a
    pyvista loop (which must own the main thread) can read its replica."""

    def __init__(self, url: str, token: str, *, timeout_s: float = 30.0) -> None:
        self.client = TwinClient(url, token)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="twin-mirror", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise TimeoutError(f"no snapshot from {url} within {timeout_s:g} s")
        if self._error is not None:
            raise ConnectionError(f"cannot mirror {url}: {self._error}") from self._error

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def main() -> None:
            try:
                await self.client.connect()
                await self.client.wait_for(lambda r: r.seq is not None, 30)
            except BaseException as exc:  # reported to the caller by __init__
                self._error = exc
            finally:
                self._ready.set()

        self._loop.run_until_complete(main())
        if self._error is None:
            self._loop.run_forever()

    def read(self, fn: Callable[[Replica], Any]) -> Any:
        """Run ``fn`` on the replica in the client's thread (no torn reads)."""
        return asyncio.run_coroutine_threadsafe(_call(fn, self.client.replica), self._loop).result(
            10
        )

    def close(self) -> None:
        if self._loop.is_running():
            asyncio.run_coroutine_threadsafe(self.client.close(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


async def _call(fn: Callable[[Replica], Any], r: Replica) -> Any:
    return fn(r)
