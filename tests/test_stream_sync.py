"""The delta engine, without sockets: replicas equal the server's store after any sequence of
updates, slow clients, lost frames, resyncs, interest filters and rate limits."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from streaming.auth import Principal
from streaming.errors import LocalProtocolError
from streaming.hub import Hub, Session
from streaming.protocol import Interest, Role, decode, encode
from streaming.replica import Replica
from streaming.store import SceneStore

ROLE = Principal(name="v", role=Role.VIEWER)
WHOLE = Interest()


def expected_view(store: SceneStore, interest: Interest = WHOLE) -> dict[str, Any]:
    visible = store.visible(interest)
    out = {}
    for e in store.entities():
        if e.handle not in visible:
            continue
        pos, quat = store.transform(e.id)
        out[e.id] = (e.kind, dict(e.props), store.components(e.id), pos, quat)
    return out


def assert_mirrors(replica: Replica, store: SceneStore, interest: Interest = WHOLE) -> None:
    want = expected_view(store, interest)
    assert replica.ids() == set(want), "entity sets differ"
    for eid, (kind, props, comps, pos, quat) in want.items():
        h = replica.handle(eid)
        row = replica.entities[h]
        assert (row.kind, dict(row.props)) == (kind, props), eid
        assert replica.comps.get(h, {}) == comps, eid
        rpos, rquat = replica.pose(eid)
        assert np.array_equal(rpos, pos), eid
        assert np.allclose(rquat, quat, atol=2e-4), eid


class Viewer:
    def __init__(self, hub: Hub, interest: Interest) -> None:
        self.session: Session = hub.open(ROLE)
        self.replica = Replica()
        self.interest = interest
        self.hub = hub
        msg: dict[str, Any] = {"type": "join"}
        if interest.ids:
            msg["ids"] = list(interest.ids)
        if interest.area is not None:
            msg["area"] = list(interest.area)
        if interest.max_hz is not None:
            msg["max_hz"] = interest.max_hz
        hub.receive(self.session, encode(msg))
        self.pump_outbox()

    def pump_outbox(self) -> None:
        while self.session.outbox:
            self.deliver(self.session.outbox.pop(0))

    def deliver(self, data: bytes) -> None:
        for reply in self.replica.receive(decode(data)):
            self.hub.receive(self.session, encode(reply))
        self.pump_outbox()

    def take_frames(self, *, drop: bool) -> None:
        frames = self.hub.frames(self.session)
        for data in frames:
            if drop and decode(data)["type"] == "delta":
                continue  # lost on the way: the next delta will not follow
            self.deliver(data)


class SyncMachine(RuleBasedStateMachine):
    """Random writers and viewers around one store."""

    @initialize(history=st.integers(1, 6))
    def setup(self, history: int) -> None:
        self.store = SceneStore(history=history, capacity=2)
        self.hub = Hub(self.store)
        self.viewers: list[Viewer] = []
        self.n = 0

    # -- writers ---------------------------------------------------------------------------------
    @rule(
        kind=st.sampled_from(["station", "part"]),
        x=st.floats(-5, 5),
        y=st.floats(-5, 5),
        value=st.integers(0, 3),
    )
    def add(self, kind: str, x: float, y: float, value: int) -> None:
        self.n += 1
        self.store.add(
            f"{kind}/{self.n}",
            kind,
            props={"n": self.n},
            pos=(x, y, 0.0),
            state={"v": value} if value else None,
        )

    @precondition(lambda self: len(self.store) > 0)
    @rule(data=st.data())
    def remove(self, data: st.DataObject) -> None:
        e = data.draw(st.sampled_from(self.store.entities()))
        self.store.remove(e.id)

    @precondition(lambda self: len(self.store) > 0)
    @rule(data=st.data(), comp=st.sampled_from(["v", "w"]), value=st.integers(0, 3))
    def set_value(self, data: st.DataObject, comp: str, value: int) -> None:
        e = data.draw(st.sampled_from(self.store.entities()))
        self.store.set_value(e.id, comp, value)

    @precondition(lambda self: len(self.store) > 0)
    @rule(data=st.data(), rotate=st.booleans())
    def move(self, data: st.DataObject, rotate: bool) -> None:
        ents = self.store.entities()
        chosen = data.draw(
            st.lists(
                st.sampled_from(ents), min_size=1, max_size=len(ents), unique_by=lambda e: e.handle
            )
        )
        h = np.array([e.handle for e in chosen])
        pos = np.array(
            data.draw(
                st.lists(
                    st.tuples(st.floats(-5, 5), st.floats(-5, 5), st.floats(0, 1)),
                    min_size=len(h),
                    max_size=len(h),
                )
            ),
            np.float32,
        )
        quat = None
        if rotate:
            q = np.random.default_rng(len(h)).normal(size=(len(h), 4))
            quat = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
        self.store.set_transforms(h, pos, quat)

    # -- viewers ---------------------------------------------------------------------------------
    @precondition(lambda self: len(self.viewers) < 4)
    @rule(filtered=st.booleans(), area=st.booleans(), max_hz=st.sampled_from([None, 10.0, 15.0]))
    def join(self, filtered: bool, area: bool, max_hz: float | None) -> None:
        interest = Interest(
            ids=("part/",) if filtered else (),
            area=(-2.0, -2.0, 3.0, 3.0) if area else None,
            max_hz=max_hz,
        )
        self.viewers.append(Viewer(self.hub, interest))

    @rule(data=st.data())
    def tick(self, data: st.DataObject) -> None:
        """Commit a tick; each viewer takes its frames, skips the tick (slow), or loses one."""
        self.hub.tick()
        for v in self.viewers:
            fate = data.draw(st.sampled_from(["take", "take", "take", "skip", "drop"]))
            if fate != "skip":
                v.take_frames(drop=fate == "drop")

    @precondition(lambda self: self.viewers)
    @rule(data=st.data())
    def resync(self, data: st.DataObject) -> None:
        v = data.draw(st.sampled_from(self.viewers))
        self.hub.receive(v.session, encode({"type": "resync", "reason": "test"}))

    @invariant()
    def replicas_never_hold_a_half_applied_frame(self) -> None:
        for v in self.viewers:
            assert v.replica.seq is None or v.replica.seq <= self.store.seq

    def teardown(self) -> None:
        if not hasattr(self, "hub"):
            return
        # Settle: a clean tick for everyone until each is in step (a gap costs one tick to
        # ask for the resync and one for the snapshot; a rate limit up to 3 ticks).
        for _ in range(12):
            self.hub.tick()
            for v in self.viewers:
                v.take_frames(drop=False)
        for v in self.viewers:
            # a rate-limited viewer gets a frame every `every` ticks; nothing changed meanwhile
            assert v.replica.seq is not None
            assert self.store.seq - v.session.every < v.replica.seq <= self.store.seq
            assert_mirrors(v.replica, self.store, v.interest)


TestSync = SyncMachine.TestCase
TestSync.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


def test_changes_since_an_evicted_base_need_a_snapshot() -> None:
    store = SceneStore(history=3)
    store.add("a", "x")
    for _ in range(5):
        store.commit()
    assert store.oldest_base == 2
    assert store.changes(1) is None
    assert store.changes(2) is not None
    with pytest.raises(LocalProtocolError):
        store.changes(6)


def test_frames_are_refused_mid_tick() -> None:
    store = SceneStore()
    store.add("a", "x")
    with pytest.raises(LocalProtocolError, match="mid-tick"):
        store.snapshot()
    store.commit()
    store.set_value("a", "v", 1)
    with pytest.raises(LocalProtocolError, match="mid-tick"):
        store.changes(0)


def test_unchanged_writes_do_not_go_on_the_wire() -> None:
    store = SceneStore()
    store.add("a", "x", pos=(1, 2, 3), state={"v": 1})
    store.commit()
    assert store.set_value("a", "v", 1) is False
    assert store.set_transforms(np.array([0]), np.array([[1, 2, 3]], np.float32)) == 0
    assert not store.dirty
    store.commit()
    ch = store.changes(1)
    assert ch is not None and ch.empty


def test_handles_are_reused_only_after_the_history_window() -> None:
    store = SceneStore(history=2)
    a = store.add("a", "x")
    store.remove("a")
    store.commit()
    assert store.add("b", "x") != a  # still inside the window
    for _ in range(3):
        store.commit()
    assert store.add("c", "x") == a


def test_bad_writes_are_refused() -> None:
    store = SceneStore()
    store.add("a", "x")
    with pytest.raises(LocalProtocolError, match="exists"):
        store.add("a", "x")
    with pytest.raises(LocalProtocolError, match="not alive"):
        store.set_transforms(np.array([5]), np.zeros((1, 3)))
    with pytest.raises(LocalProtocolError, match="non-finite"):
        store.set_transforms(np.array([0]), np.array([[np.nan, 0, 0]]))
    with pytest.raises(KeyError, match="no entity 'b'"):
        store.set_value("b", "v", 1)


def test_in_step_viewers_share_one_encoded_frame() -> None:
    store = SceneStore()
    for i in range(10):
        store.add(f"e/{i}", "part")
    hub = Hub(store)
    hub.tick()
    viewers = [Viewer(hub, Interest()) for _ in range(5)]
    hub.tick()
    for v in viewers:
        v.take_frames(drop=False)  # snapshots
    store.set_transforms(np.arange(3), np.ones((3, 3), np.float32))
    hub.tick()
    frames = [hub.frames(v.session) for v in viewers]
    assert all(f[0] is frames[0][0] for f in frames)  # the very same bytes object
    assert hub.metrics["frames.encoded"] == 1 and hub.metrics["frames.shared"] == 4
