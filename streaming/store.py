"""The latest-value scene store: entities, their components and their poses, versioned by tick.

One :class:`SceneStore` holds the state every viewer mirrors. Writers (the twin, a simulation)
``add``, ``remove``, ``set_value``/``update`` components and ``set_transforms`` between ticks; :meth:`commit` closes
a tick and numbers it (``seq``). Readers then ask for :meth:`changes` since any ``base_seq`` still
held (a bounded history of ``history`` ticks) or for a :meth:`snapshot`, and turn them into wire
messages with :func:`delta_message` and :func:`snapshot_messages`.

Handles are ``u32`` numbers the wire uses instead of entity ids; a handle is reused only after
the history window has passed its removal. Writes that change nothing are skipped, so an
unchanged value never goes on the wire. Frames are built between a ``commit`` and the next
write: :meth:`changes` and :meth:`snapshot` refuse to read a half-written tick.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .errors import LocalProtocolError
from .protocol import Interest, MsgType, pack_transforms

_IDENTITY_QUAT = (0.0, 0.0, 0.0, 1.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class EntityInfo:
    """What never changes about an entity while it lives: ``id`` (e.g. ``station/filler``),
    ``kind`` (``station``, ``part``, ``alarm`` ...) and static ``props`` (label, colour, asset)."""

    handle: int
    id: str
    kind: str
    props: Mapping[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class _Tick:
    seq: int
    added: list[int]
    removed: list[int]
    comps: set[tuple[int, str]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Changes:
    """Everything that changed in ``(base_seq, seq]``, for one view of the scene.

    Apply in this order: ``removed`` handles, then ``added`` entities (with their full state in
    ``comps`` and their pose in the transform arrays), then ``comps``, then transforms.
    """

    base_seq: int
    seq: int
    removed: tuple[int, ...]
    added: tuple[EntityInfo, ...]
    comps: Mapping[int, Mapping[str, Any]]
    xf_ids: NDArray[np.uint32]
    xf_pos: NDArray[np.float32]
    xf_quat: NDArray[np.float32]

    @property
    def empty(self) -> bool:
        return not (self.removed or self.added or self.comps or self.xf_ids.shape[0])


class SceneStore:
    """Latest value per (entity, component) and per entity pose, with per-tick versions."""

    def __init__(self, *, history: int = 300, capacity: int = 256) -> None:
        if history < 1:
            raise ValueError("history must be at least 1 tick")
        self.history = history
        self.seq = 0
        self._hist: deque[_Tick] = deque(maxlen=history)
        self._n = 0  # handles ever allocated (high-water mark)
        self._pos = np.zeros((capacity, 3), np.float32)
        self._quat = np.tile(np.array(_IDENTITY_QUAT, np.float32), (capacity, 1))
        self._xf_ver = np.zeros(capacity, np.int64)
        self._alive = np.zeros(capacity, bool)
        self._created = np.zeros(capacity, np.int64)
        self._free: deque[tuple[int, int]] = deque()  # (handle, seq of its removal)
        self._info: dict[int, EntityInfo] = {}
        self._by_id: dict[str, int] = {}
        self._comps: dict[int, dict[str, Any]] = {}
        self._p_added: list[int] = []
        self._p_removed: list[int] = []
        self._p_comps: set[tuple[int, str]] = set()
        self._p_xf = False

    # -- reading ---------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._info)

    def __contains__(self, entity_id: object) -> bool:
        return entity_id in self._by_id

    @property
    def oldest_base(self) -> int:
        """The oldest ``base_seq`` :meth:`changes` can still answer."""
        return self.seq - len(self._hist)

    def handle(self, entity_id: str) -> int:
        try:
            return self._by_id[entity_id]
        except KeyError:
            raise KeyError(f"no entity '{entity_id}'") from None

    def info(self, handle: int) -> EntityInfo:
        return self._info[handle]

    def entities(self) -> list[EntityInfo]:
        return list(self._info.values())

    def get(self, entity_id: str, component: str, default: Any = None) -> Any:
        return self._comps[self.handle(entity_id)].get(component, default)

    def components(self, entity_id: str) -> dict[str, Any]:
        return dict(self._comps[self.handle(entity_id)])

    def transform(self, entity_id: str) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        h = self.handle(entity_id)
        return self._pos[h].copy(), self._quat[h].copy()

    # -- writing ---------------------------------------------------------------------------------

    def add(
        self,
        entity_id: str,
        kind: str,
        *,
        props: Mapping[str, Any] | None = None,
        pos: Sequence[float] = (0.0, 0.0, 0.0),
        quat: Sequence[float] = _IDENTITY_QUAT,
        state: Mapping[str, Any] | None = None,
    ) -> int:
        """Add an entity and return its handle. Raises ``LocalProtocolError`` if it exists."""
        if entity_id in self._by_id:
            raise LocalProtocolError(f"entity '{entity_id}' exists already")
        h = self._allocate()
        self._info[h] = EntityInfo(handle=h, id=entity_id, kind=kind, props=dict(props or {}))
        self._by_id[entity_id] = h
        self._comps[h] = dict(state or {})
        self._pos[h] = pos
        self._quat[h] = quat
        self._xf_ver[h] = self.seq + 1
        self._alive[h] = True
        self._created[h] = self.seq + 1
        self._p_added.append(h)
        return h

    def remove(self, entity_id: str) -> None:
        h = self.handle(entity_id)
        del self._by_id[entity_id], self._info[h], self._comps[h]
        self._alive[h] = False
        self._free.append((h, self.seq + 1))
        self._p_removed.append(h)

    def set_value(self, entity_id: str, component: str, value: Any) -> bool:
        """Set one component; returns whether it changed (an equal value is not a change)."""
        h = self.handle(entity_id)
        comps = self._comps[h]
        if component in comps and _same(comps[component], value):
            return False
        comps[component] = value
        self._p_comps.add((h, component))
        return True

    def update(self, entity_id: str, values: Mapping[str, Any]) -> int:
        """Set several components of one entity; returns how many changed."""
        return sum(self.set_value(entity_id, k, v) for k, v in values.items())

    def set_transform(
        self, entity_id: str, pos: Sequence[float], quat: Sequence[float] | None = None
    ) -> bool:
        h = self.handle(entity_id)
        return bool(
            self.set_transforms(
                np.array([h]),
                np.asarray([pos], np.float32),
                None if quat is None else np.asarray([quat], np.float32),
            )
        )

    def set_transforms(
        self,
        handles: NDArray[Any],
        pos: NDArray[Any],
        quat: NDArray[Any] | None = None,
    ) -> int:
        """Bulk pose update: ``handles`` (n,), ``pos`` (n, 3), ``quat`` (n, 4) or None to keep
        rotations. Returns how many entities actually moved. Raises ``LocalProtocolError`` for a
        handle that is not alive or a non-finite value."""
        h = np.asarray(handles, np.int64)
        if h.size == 0:
            return 0
        if h.min() < 0 or h.max() >= self._n or not self._alive[h].all():
            raise LocalProtocolError("set_transforms: a handle is not alive")
        p = np.asarray(pos, np.float32).reshape(-1, 3)
        if not np.isfinite(p).all():
            raise LocalProtocolError("set_transforms: non-finite position")
        moved = np.any(self._pos[h] != p, axis=1)
        if quat is not None:
            q = np.asarray(quat, np.float32).reshape(-1, 4)
            if not np.isfinite(q).all():
                raise LocalProtocolError("set_transforms: non-finite rotation")
            moved |= np.any(self._quat[h] != q, axis=1)
            self._quat[h] = q
        self._pos[h] = p
        self._xf_ver[h[moved]] = self.seq + 1
        n = int(moved.sum())
        self._p_xf = self._p_xf or n > 0
        return n

    def commit(self) -> int:
        """Close the current tick; return its ``seq`` (every tick gets one, even an empty one)."""
        self.seq += 1
        self._hist.append(_Tick(self.seq, self._p_added, self._p_removed, self._p_comps))
        self._p_added, self._p_removed, self._p_comps, self._p_xf = [], [], set(), False
        return self.seq

    @property
    def dirty(self) -> bool:
        """Whether writes are pending since the last :meth:`commit`."""
        return bool(self._p_added or self._p_removed or self._p_comps or self._p_xf)

    # -- frames ----------------------------------------------------------------------------------

    def changes(
        self,
        base_seq: int,
        *,
        visible: set[int] | None = None,
        was_visible: set[int] | None = None,
    ) -> Changes | None:
        """What changed in ``(base_seq, seq]``, or None when ``base_seq`` is older than the
        history (the client needs a snapshot).

        For a filtered view pass the handles it showed at ``base_seq`` (``was_visible``) and the
        handles it shows now (``visible``): entities entering the view come as ``added``, those
        leaving it as ``removed``.
        """
        self._check_clean()
        if base_seq > self.seq:
            raise LocalProtocolError(f"base_seq {base_seq} is ahead of seq {self.seq}")
        if base_seq < self.oldest_base:
            return None
        removed: set[int] = set()
        touched: set[tuple[int, str]] = set()
        for rec in reversed(self._hist):
            if rec.seq <= base_seq:
                break
            removed.update(rec.removed)
            touched |= rec.comps
        alive = self._alive[: self._n]
        created = self._created[: self._n]
        added = set(np.nonzero(alive & (created > base_seq))[0].tolist())
        moved_mask = alive & (self._xf_ver[: self._n] > base_seq)
        if visible is not None:
            if was_visible is None:
                raise LocalProtocolError("changes(): 'visible' needs 'was_visible'")
            removed = (removed & was_visible) | (was_visible - visible)
            added = (added & visible) | (visible - was_visible)
            mask = np.zeros(self._n, bool)
            if visible:
                mask[np.fromiter(visible, np.int64, len(visible))] = True
            moved_mask &= mask
        if added:
            moved_mask[np.fromiter(added, np.int64, len(added))] = True
        comps: dict[int, dict[str, Any]] = {}
        for h, name in touched:
            if h in added or not self._alive[h] or (visible is not None and h not in visible):
                continue
            comps.setdefault(h, {})[name] = self._comps[h][name]
        for h in added:
            if self._comps[h]:
                comps[h] = dict(self._comps[h])
        ids = np.nonzero(moved_mask)[0]
        return Changes(
            base_seq=base_seq,
            seq=self.seq,
            removed=tuple(sorted(removed)),
            added=tuple(self._info[h] for h in sorted(added)),
            comps=comps,
            xf_ids=ids.astype(np.uint32),
            xf_pos=self._pos[ids],
            xf_quat=self._quat[ids],
        )

    def snapshot(self, *, visible: set[int] | None = None) -> Changes:
        """The whole scene (or the ``visible`` part of it) as changes from nothing."""
        self._check_clean()
        hs = sorted(self._info) if visible is None else sorted(visible)
        ids = np.asarray(hs, np.int64)
        return Changes(
            base_seq=-1,
            seq=self.seq,
            removed=(),
            added=tuple(self._info[h] for h in hs),
            comps={h: dict(self._comps[h]) for h in hs if self._comps[h]},
            xf_ids=ids.astype(np.uint32),
            xf_pos=self._pos[ids],
            xf_quat=self._quat[ids],
        )

    def visible(self, interest: Interest) -> set[int]:
        """The handles ``interest`` selects now."""
        hs = [h for h, e in self._info.items() if interest.wants_id(e.id)]
        if interest.area is not None and hs:
            x0, y0, x1, y1 = interest.area
            a = np.asarray(hs, np.int64)
            p = self._pos[a]
            inside = (p[:, 0] >= x0) & (p[:, 0] <= x1) & (p[:, 1] >= y0) & (p[:, 1] <= y1)
            hs = a[inside].tolist()
        return set(hs)

    # -- internals -------------------------------------------------------------------------------

    def _check_clean(self) -> None:
        if self.dirty:
            raise LocalProtocolError("frames are built right after commit(), not mid-tick")

    def _allocate(self) -> int:
        if self._free and self._free[0][1] <= self.seq - self.history:
            return self._free.popleft()[0]
        h = self._n
        if h >= 2**32 - 1:
            raise LocalProtocolError("out of entity handles")
        if h >= self._pos.shape[0]:
            self._grow(2 * self._pos.shape[0])
        self._n += 1
        return h

    def _grow(self, cap: int) -> None:
        def grown(a: NDArray[Any], fill: Any) -> NDArray[Any]:
            out = np.empty((cap, *a.shape[1:]), a.dtype)
            out[: a.shape[0]] = a
            out[a.shape[0] :] = fill
            return out

        self._pos = grown(self._pos, 0.0)
        self._quat = grown(self._quat, np.array(_IDENTITY_QUAT, np.float32))
        self._xf_ver = grown(self._xf_ver, 0)
        self._alive = grown(self._alive, False)
        self._created = grown(self._created, 0)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    try:
        return bool(type(a) is type(b) and a == b)
    except Exception:  # an exotic value whose == is not a bool: treat as changed
        return False


# -- wire messages -------------------------------------------------------------------------------


def _entity_row(e: EntityInfo) -> list[Any]:
    return [e.handle, e.id, e.kind, dict(e.props)]


def delta_message(ch: Changes, *, t: float, ts: float) -> dict[str, Any]:
    """The ``delta`` map for ``ch``. ``t`` is simulated (or twin) time, ``ts`` the server's
    wall clock (Unix seconds) when the tick was committed. Empty fields are left out."""
    msg: dict[str, Any] = {
        "type": MsgType.DELTA.value,
        "seq": ch.seq,
        "base_seq": ch.base_seq,
        "t": t,
        "ts": ts,
    }
    if ch.removed:
        msg["rm"] = list(ch.removed)
    if ch.added:
        msg["add"] = [_entity_row(e) for e in ch.added]
    if ch.comps:
        msg["set"] = [[h, dict(c)] for h, c in ch.comps.items()]
    if ch.xf_ids.shape[0]:
        msg["xf"] = pack_transforms(ch.xf_ids, ch.xf_pos, ch.xf_quat)
    return msg


def snapshot_messages(
    ch: Changes, *, t: float, ts: float, chunk_entities: int = 2000
) -> list[dict[str, Any]]:
    """The ``snapshot`` chunks of a full view: each holds up to ``chunk_entities`` entities with
    their components and poses; all carry the same ``seq``; ``chunk`` counts from 0 to
    ``chunks - 1``. A replica applies the snapshot when it has every chunk."""
    rows = ch.added
    n_chunks = max(1, math.ceil(len(rows) / chunk_entities))
    out = []
    for c in range(n_chunks):
        part = rows[c * chunk_entities : (c + 1) * chunk_entities]
        sel = slice(c * chunk_entities, c * chunk_entities + len(part))
        out.append(
            {
                "type": MsgType.SNAPSHOT.value,
                "seq": ch.seq,
                "chunk": c,
                "chunks": n_chunks,
                "t": t,
                "ts": ts,
                "entities": [_entity_row(e) for e in part],
                "set": [[e.handle, dict(ch.comps[e.handle])] for e in part if e.handle in ch.comps],
                "xf": pack_transforms(ch.xf_ids[sel], ch.xf_pos[sel], ch.xf_quat[sel]),
            }
        )
    return out
