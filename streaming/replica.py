"""A client's local copy of the scene, kept in step from server messages (sans-I/O).

:meth:`Replica.receive` takes one decoded server message and returns the messages the client
should send back (a ``resync`` when a delta does not follow from what it holds). The Python
client (:mod:`streaming.client`), the tests and tools all mirror a server through it; the
browser viewer implements the same rules in JavaScript (``docs/protocol.md``).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .protocol import MsgType, Transforms, unpack_transforms


@dataclass(frozen=True, slots=True)
class EntityRow:
    id: str
    kind: str
    props: Mapping[str, Any] = field(default_factory=dict)


class Replica:
    """Entities, components and poses as of ``seq``, plus the events received in order."""

    def __init__(self, *, keep_events: int = 10_000) -> None:
        self.session: str | None = None
        self.role: str | None = None
        self.name: str | None = None
        self.capabilities: list[str] = []
        self.tick_hz: float | None = None
        self.seq: int | None = None  # None until the first snapshot is complete
        self.eseq_next: int | None = None
        self.t = 0.0
        self.ts = 0.0
        self.entities: dict[int, EntityRow] = {}
        self.by_id: dict[str, int] = {}
        self.comps: dict[int, dict[str, Any]] = {}
        self._pos = np.zeros((0, 3), np.float32)
        self._quat = np.zeros((0, 4), np.float32)
        self.events: deque[dict[str, Any]] = deque(maxlen=keep_events)
        self.errors: deque[dict[str, Any]] = deque(maxlen=1000)
        self.stats: Counter[str] = Counter()
        self._chunks: dict[int, dict[str, Any]] = {}
        self._chunks_seq: int | None = None
        self._resync_asked = False

    # -- reading ---------------------------------------------------------------------------------

    def handle(self, entity_id: str) -> int:
        return self.by_id[entity_id]

    def get(self, entity_id: str, component: str, default: Any = None) -> Any:
        return self.comps.get(self.by_id[entity_id], {}).get(component, default)

    def pose(self, entity_id: str) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        h = self.by_id[entity_id]
        return self._pos[h].copy(), self._quat[h].copy()

    def copy(self) -> Replica:
        """A copy of the scene state (entities, components, poses, seq, time); no events."""
        out = Replica()
        out.session, out.role, out.name, out.tick_hz = (
            self.session,
            self.role,
            self.name,
            self.tick_hz,
        )
        out.seq, out.t, out.ts = self.seq, self.t, self.ts
        out.entities = dict(self.entities)
        out.by_id = dict(self.by_id)
        out.comps = {h: dict(c) for h, c in self.comps.items()}
        out._pos, out._quat = self._pos.copy(), self._quat.copy()
        return out

    def ids(self) -> set[str]:
        return set(self.by_id)

    def state(self) -> dict[str, Any]:
        """Everything held, keyed by entity id: ``{id: (kind, props, comps, pos, quat)}`` with
        pose rounded as it travels (for comparisons in tests)."""
        out: dict[str, Any] = {}
        for h, e in self.entities.items():
            out[e.id] = (
                e.kind,
                dict(e.props),
                dict(self.comps.get(h, {})),
                tuple(np.round(self._pos[h].astype(np.float64), 4)),
                tuple(np.round(self._quat[h].astype(np.float64), 3)),
            )
        return out

    # -- applying --------------------------------------------------------------------------------

    def receive(self, msg: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Apply one server message; return the messages to send back."""
        kind = msg.get("type")
        self.stats[f"recv.{kind}"] += 1
        if kind == MsgType.HELLO:
            self.session = msg["session"]
            self.role = msg["role"]
            self.name = msg.get("name")
            self.capabilities = list(msg.get("capabilities", []))
            self.tick_hz = float(msg["tick_hz"])
        elif kind == MsgType.JOINED:
            self.session = msg["session"]
            self.eseq_next = int(msg["eseq"])
            if not msg.get("resumed"):
                self.seq = None
        elif kind == MsgType.SNAPSHOT:
            self._snapshot_chunk(msg)
        elif kind == MsgType.DELTA:
            return self._delta(msg)
        elif kind in (MsgType.ALARM, MsgType.COMMAND_RESULT):
            eseq = int(msg["eseq"])
            # eseqs rise; gaps are other sessions' events, going back is a protocol violation
            if self.eseq_next is not None and eseq < self.eseq_next:
                self.stats["events.out_of_order"] += 1
            self.eseq_next = eseq + 1
            self.events.append(dict(msg))
        elif kind == MsgType.ERROR:
            self.errors.append(dict(msg))
        return []

    def _snapshot_chunk(self, msg: Mapping[str, Any]) -> None:
        seq = int(msg["seq"])
        if self._chunks_seq != seq:
            self._chunks, self._chunks_seq = {}, seq
        self._chunks[int(msg["chunk"])] = dict(msg)
        if len(self._chunks) < int(msg["chunks"]):
            return
        self.entities, self.by_id, self.comps = {}, {}, {}
        for c in sorted(self._chunks):
            part = self._chunks[c]
            self._add_rows(part["entities"])
            for h, comps in part.get("set", []):
                self.comps[h] = dict(comps)
            self._apply_xf(unpack_transforms(part["xf"]))
        self._chunks, self._chunks_seq = {}, None
        self.seq = seq
        self.t, self.ts = float(msg["t"]), float(msg["ts"])
        self._resync_asked = False
        self.stats["snapshots"] += 1

    def _delta(self, msg: Mapping[str, Any]) -> list[dict[str, Any]]:
        if self.seq is None or int(msg["base_seq"]) != self.seq:
            self.stats["deltas.out_of_step"] += 1
            if self.seq is not None and not self._resync_asked:
                self._resync_asked = True
                return [{"type": MsgType.RESYNC.value, "reason": "gap"}]
            return []
        for h in msg.get("rm", []):
            e = self.entities.pop(h, None)
            if e is not None:
                self.by_id.pop(e.id, None)
            self.comps.pop(h, None)
        self._add_rows(msg.get("add", []))
        for h, comps in msg.get("set", []):
            self.comps.setdefault(h, {}).update(comps)
        if "xf" in msg:
            self._apply_xf(unpack_transforms(msg["xf"]))
        self.seq = int(msg["seq"])
        self.t, self.ts = float(msg["t"]), float(msg["ts"])
        self.stats["deltas"] += 1
        return []

    def _add_rows(self, rows: list[list[Any]]) -> None:
        for h, eid, kind, props in rows:
            old = self.entities.get(h)
            if old is not None:
                self.by_id.pop(old.id, None)
            self.entities[h] = EntityRow(eid, kind, dict(props))
            self.by_id[eid] = h
            self.comps[h] = {}

    def _apply_xf(self, xf: Transforms) -> None:
        if len(xf) == 0:
            return
        need = int(xf.ids.max()) + 1
        if need > self._pos.shape[0]:
            cap = max(need, 2 * self._pos.shape[0], 64)
            pos = np.zeros((cap, 3), np.float32)
            quat = np.tile(np.array([0, 0, 0, 1], np.float32), (cap, 1))
            pos[: self._pos.shape[0]] = self._pos
            quat[: self._quat.shape[0]] = self._quat
            self._pos, self._quat = pos, quat
        self._pos[xf.ids] = xf.pos
        self._quat[xf.ids] = xf.quat
