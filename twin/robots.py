"""A line's robot cells in the twin: pybullet cells (``physics.rigid``) in worker processes,
driven by the process core and streamed into the scene store.

Every station with a ``robot:`` gets a :class:`physics.rigid.Cell` (its URDF at the station's
pose, infeed and outfeed conveyors, parts). Each update the cells advance by the simulated time
that passed; a cell runs pick-and-place cycles while the process core has its station busy. The
robot's links are entities ``robot/STATION/LINK`` (kind ``robot_link``) drawn with the link's GLB
from the URDF (:mod:`scenes.urdf`) at the pose pybullet reports; the cell's parts are entities
``robot/STATION/part/N`` (kind ``part``). A collision, a dropped part or a person in the keep-out
zone becomes an alarm. :meth:`RobotCells.cycle_times` measures one real cycle per cell, so a
robot station's process time can come from physics (``twin serve --robot-times physics``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from scenes.assets import AssetStore
from scenes.spec import LineSpec
from scenes.urdf import LinkVisual, publish_urdf_links
from streaming.store import SceneStore

log = logging.getLogger(__name__)

ROBOT_COLOR = "#ff9f1c"
#: Longest stretch of simulated time one update advances the cells: physics is costly and runs
#: in the tick, so above ~3x real time (at 30 Hz) the robots fall behind the line, by design.
MAX_STEP_S = 0.1


def robot_stations(spec: LineSpec) -> list[str]:
    return [st.id for st in spec.stations if st.robot is not None]


class RobotCells:
    """The robot cells of ``spec`` (see the module docstring)."""

    def __init__(
        self,
        spec: LineSpec,
        assets: AssetStore,
        *,
        seed: int = 1,
        processes: int | None = None,
        on_event: Callable[[str, str, str], None] | None = None,
    ) -> None:
        from physics.rigid.layout import CellConfig
        from physics.rigid.pool import CellPool

        self.spec = spec
        self.stations = robot_stations(spec)
        if not self.stations:
            raise ValueError(f"line '{spec.name}' has no robot")
        self.on_event = on_event  # (station, kind, text) for alarms
        configs = {
            st.id: (CellConfig.from_station(st), seed + i)
            for i, st in enumerate(spec.stations)
            if st.robot is not None
        }
        self.pool = CellPool(configs, processes=processes)
        self.visuals: dict[str, dict[str, LinkVisual]] = {}
        published: dict[str, dict[str, LinkVisual]] = {}
        for st in spec.stations:
            if st.robot is not None:
                if st.robot.urdf not in published:
                    published[st.robot.urdf] = publish_urdf_links(st.robot.urdf, assets)
                self.visuals[st.id] = published[st.robot.urdf]
        self._handles: dict[str, np.ndarray] = {}
        self._parts: dict[str, dict[int, int]] = {s: {} for s in self.stations}
        self.events = 0

    def populate(self, store: SceneStore) -> None:
        """Add every robot link at its current pose."""
        for sid in self.stations:
            names, pos, quat = self.pool.call(sid, "link_poses")
            handles = []
            for name, p, q in zip(names, pos, quat, strict=True):
                vis = self.visuals[sid].get(name)
                props: dict[str, Any] = {
                    "label": name,
                    "color": ROBOT_COLOR,
                    "parent": f"robot/{sid}",
                    "category": "robot",
                }
                if vis is not None:
                    props["geometry"] = {"type": "mesh", "asset": vis.asset, "size": list(vis.size)}
                handles.append(
                    store.add(
                        f"robot/{sid}/{name}",
                        "robot_link",
                        props=props,
                        pos=tuple(p),
                        quat=tuple(q),
                    )
                )
            self._handles[sid] = np.asarray(handles)

    def update(self, store: SceneStore, seconds: float, busy: frozenset[str]) -> None:
        """Advance every cell by ``seconds`` (cycling the cells in ``busy``) and write poses,
        parts and alarms into ``store``."""
        seconds = min(max(seconds, 0.0), MAX_STEP_S)
        if seconds <= 0:
            return
        reports = self.pool.advance(seconds, auto_cycle=busy, poses=True)
        for sid, rep in reports.items():
            if rep.links is not None and sid in self._handles:
                _, pos, quat = rep.links
                store.set_transforms(self._handles[sid], np.asarray(pos), np.asarray(quat))
            if rep.parts is not None:
                self._write_parts(store, sid, rep.parts)
            for ev in rep.events:
                if ev.kind.is_alarm and self.on_event is not None:
                    self.events += 1
                    self.on_event(sid, ev.kind.value, _describe(sid, ev))

    def _write_parts(self, store: SceneStore, sid: str, parts: tuple[Any, Any, Any]) -> None:
        serials, pos, quat = parts
        known = self._parts[sid]
        seen = set()
        hs, ps, qs = [], [], []
        for serial, p, q in zip(serials, pos, quat, strict=True):
            n = int(serial)
            seen.add(n)
            h = known.get(n)
            if h is None:
                h = store.add(
                    f"robot/{sid}/part/{n}",
                    "part",
                    props={"cell": sid},
                    pos=tuple(p),
                    quat=tuple(q),
                )
                known[n] = h
            hs.append(h)
            ps.append(p)
            qs.append(q)
        for n in [n for n in known if n not in seen]:
            store.remove(f"robot/{sid}/part/{n}")
            del known[n]
        if hs:
            store.set_transforms(np.asarray(hs), np.asarray(ps), np.asarray(qs))

    def cycle_times(self) -> dict[str, float]:
        """One real pick-and-place cycle per cell: its duration in seconds (from physics)."""
        out = {}
        for sid in self.stations:
            result = self.pool.call(sid, "run_cycle")
            if not result.ok:
                raise RuntimeError(f"robot cell {sid}: the measuring cycle failed: {result.error}")
            out[sid] = float(result.duration_s - result.wait_s)
        return out

    def keepout(self, station: str, enter: bool) -> bool:
        """A person enters (or leaves) the keep-out zone of ``station``'s cell."""
        if enter:
            return bool(self.pool.call(station, "enter_keepout", "person"))
        self.pool.call(station, "leave_keepout", "person")
        return False

    def close(self) -> None:
        self.pool.close()


def _describe(sid: str, ev: Any) -> str:
    return f"robot cell {sid}: {ev.message}"
