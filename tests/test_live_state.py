"""The live twin's reducer and state: every rule, a fuzz test, and the mirror following a plant."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scenes.graph import MachineState, build_graph
from scenes.lineparse import parse_line
from streaming.store import SceneStore
from twin.live.mirror import LiveLine
from twin.live.plant import Plant
from twin.live.state import TwinState, parse_state
from twin.live.tags import TagMap
from twin.live.telemetry import Link, Quality, Reason, Rejected, Sample, Stale

LINE = """
line: live-test
stations:
  - id: press
    process_time: {dist: exponential, mean: 8}
    failures: {mtbf: 120, mttr: 30}
    tags:
      state: plant/press/state
      count: {address: plant/press/count, period_s: 1.0}
      rejects: plant/press/rejects
      temperature: {address: plant/press/temp_raw, scale: 0.1, offset: -40, unit: degC, period_s: 2.0, min: -20, max: 120}
  - id: weld
    process_time: 9
    tags:
      state: {address: plant/weld/state, period_s: 1.0}
buffers:
  - id: b1
    from: press
    to: weld
    capacity: 5
    tags:
      level: {address: plant/b1/level, period_s: 1.0}
"""
T0 = 1_800_000_000.0


@pytest.fixture
def state() -> tuple[TwinState, list[float]]:
    clock = [T0]
    return TwinState(TagMap(parse_line(LINE)), clock=lambda: clock[0]), clock


def sample(address: str, value: Any, ts: float | None = T0, **kw: Any) -> Sample:
    return Sample(address=address, value=value, source_ts=ts, received_ts=kw.pop("rx", T0), **kw)


def reason(st_: TwinState, item: Any) -> Reason | None:
    return st_.apply(item).reason


def test_values_are_scaled_typed_and_range_checked(state: tuple[TwinState, list[float]]) -> None:
    s, _ = state
    assert s.apply(sample("plant/press/temp_raw", 650)).accepted
    assert s.value("station/press", "temperature").value == pytest.approx(25.0)  # 650*0.1-40
    assert reason(s, sample("plant/press/temp_raw", 2000, ts=T0 + 1)) is Reason.OUT_OF_RANGE
    assert reason(s, sample("plant/press/temp_raw", "hot", ts=T0 + 1)) is Reason.WRONG_TYPE
    assert reason(s, sample("plant/press/temp_raw", True, ts=T0 + 1)) is Reason.WRONG_TYPE
    assert reason(s, sample("plant/press/temp_raw", math.nan, ts=T0 + 1)) is Reason.NOT_FINITE
    assert reason(s, sample("plant/press/temp_raw", -math.inf, ts=T0 + 1)) is Reason.NOT_FINITE
    assert reason(s, sample("plant/b1/level", 6)) is Reason.OUT_OF_RANGE  # capacity 5
    assert reason(s, sample("plant/b1/level", 2.5)) is Reason.OUT_OF_RANGE  # not a count
    assert s.apply(sample("plant/b1/level", 5)).accepted
    assert reason(s, sample("plant/nowhere", 1)) is Reason.UNKNOWN_TAG
    assert reason(s, sample("plant/press/count", 3, quality=Quality.BAD)) is Reason.BAD_QUALITY
    # the value held is untouched by every rejection
    assert s.value("station/press", "temperature").value == pytest.approx(25.0)


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("busy", MachineState.BUSY),
        ("Running", MachineState.BUSY),
        ("FAULT", MachineState.DOWN),
        ("idle", MachineState.STARVED),
        ("blocked", MachineState.BLOCKED),
        (3, MachineState.DOWN),
        (1.0, MachineState.BUSY),
        ("exploded", None),
        (7, None),
        (True, None),
        (None, None),
    ],
)
def test_machine_states(raw: Any, want: MachineState | None) -> None:
    assert parse_state(raw) is want


def test_timestamps_late_and_duplicate_data(state: tuple[TwinState, list[float]]) -> None:
    s, clock = state
    assert s.apply(sample("plant/press/state", "busy", ts=T0 - 1)).accepted
    assert reason(s, sample("plant/press/state", "down", ts=T0 + 60)) is Reason.FUTURE
    assert reason(s, sample("plant/press/state", "down", ts=T0 - 2 * 86400)) is Reason.TOO_OLD
    assert reason(s, sample("plant/press/state", "down", ts=T0 - 2)) is Reason.OUT_OF_ORDER
    assert reason(s, sample("plant/press/state", "busy", ts=T0 - 1)) is Reason.DUPLICATE
    assert s.apply(sample("plant/press/state", "down", ts=T0 - 1)).accepted  # same time, new value
    assert s.value("station/press", "state").value is MachineState.DOWN
    # no source timestamp: the arrival time counts
    clock[0] = T0 + 10
    assert s.apply(sample("plant/press/state", "busy", ts=None, rx=T0 + 10)).accepted
    assert s.value("station/press", "state").ts == T0 + 10


def test_counters_only_go_up_except_a_reset(state: tuple[TwinState, list[float]]) -> None:
    s, _ = state
    assert s.apply(sample("plant/press/count", 10, ts=T0 - 3)).accepted
    assert reason(s, sample("plant/press/count", 9, ts=T0 - 2)) is Reason.COUNTER_BACKWARDS
    out = s.apply(sample("plant/press/count", 0, ts=T0 - 1))
    assert out.accepted and out.note == "counter_reset"
    assert s.counts["counter_reset"] == 1


def test_staleness_by_period_and_by_death(state: tuple[TwinState, list[float]]) -> None:
    s, clock = state
    s.apply(sample("plant/press/count", 1))
    s.apply(sample("plant/weld/state", "busy"))
    s.apply(sample("plant/press/state", "busy"))
    assert s.stale_count() == 3  # temperature, rejects and level never reported
    clock[0] = T0 + 2.9
    assert s.check_stale() == 0
    clock[0] = T0 + 3.1  # 3 periods of 1 s missed
    assert s.check_stale() == 2  # count and weld/state (press/state has no period)
    s.apply(Stale(prefix="plant/press/", received_ts=T0 + 3.2))
    assert s.value("station/press", "state").stale
    # a fresh sample clears it
    assert s.apply(sample("plant/press/state", "busy", ts=T0 + 3.3, rx=T0 + 3.3)).accepted
    assert not s.value("station/press", "state").stale


def test_adapter_rejections_and_links_are_counted(state: tuple[TwinState, list[float]]) -> None:
    s, _ = state
    s.apply(Rejected(reason=Reason.MALFORMED, detail="not JSON", received_ts=T0))
    s.apply(Rejected(reason=Reason.SEQUENCE_GAP, detail="3 -> 5", received_ts=T0))
    s.apply(Link(up=False, received_ts=T0, source="mqtt"))
    assert s.rejected_by_reason() == {"malformed": 1, "sequence_gap": 1}
    assert s.counts["rejected"] == 2 and s.links == {"mqtt": False}


values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.lists(st.integers(), max_size=3),
    st.binary(max_size=8),
    st.sampled_from(["busy", "down", "idle", "blocked"]),
)
addresses = st.sampled_from(
    [
        "plant/press/state",
        "plant/press/count",
        "plant/press/rejects",
        "plant/press/temp_raw",
        "plant/weld/state",
        "plant/b1/level",
        "plant/unknown",
        "",
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            addresses, values, st.floats(-1e6, 1e6) | st.none(), st.sampled_from(list(Quality))
        ),
        max_size=40,
    )
)
def test_fuzz_never_raises_counts_everything_and_keeps_the_state_valid(
    items: list[tuple[str, Any, float | None, Quality]],
) -> None:
    s = TwinState(TagMap(parse_line(LINE)), clock=lambda: T0)
    n = 0
    for address, value, dt, quality in items:
        s.apply(
            Sample(
                address=address,
                value=value,
                source_ts=None if dt is None else T0 + dt,
                received_ts=T0,
                quality=quality,
            )
        )
        n += 1
        # a valid message in between is still applied
        good = Sample(
            address="plant/weld/state", value="busy", source_ts=T0 + 4 + n * 1e-3, received_ts=T0
        )
        assert s.apply(good).accepted
    assert s.counts["accepted"] + s.counts["rejected"] == 2 * n
    for address, v in s.values.items():
        tag = s.tags.by_address[address]
        if tag.kind.value == "state":
            assert isinstance(v.value, MachineState)
        elif tag.kind.value in ("counter", "level"):
            assert isinstance(v.value, int) and v.value >= 0
        else:
            assert math.isfinite(v.value)


def test_the_mirror_follows_the_plant_counters_exactly() -> None:
    spec = parse_line(LINE)
    graph = build_graph(spec)
    plant = Plant(spec, graph, seed=3)
    clock = [T0]
    live = LiveLine(spec, graph, clock=lambda: clock[0])
    store = SceneStore()
    live.populate(store)
    store.commit()
    downs = 0
    for k in range(1, 1201):  # 10 minutes at 0.5 s steps
        clock[0] = T0 + 0.5 * k
        live.ingest(plant.poll(clock[0]))
        live(store, clock[0])
        store.commit()
        truth, shown = plant.store.components("station/press"), store.components("station/press")
        # counters equal the line's exactly, states match (same tick)
        assert shown["produced"] == truth["produced"] and shown["scrapped"] == truth["scrapped"]
        assert shown["state"] == truth["state"]
        assert store.get("station/weld", "state") == plant.store.get("station/weld", "state")
        assert store.get("buffer/b1", "level") == plant.store.get("buffer/b1", "level")
        downs += truth["state"] == "down"
    assert downs > 0, "the plant never broke down: the test saw no breakdown to mirror"
    assert live.twin.counts["rejected"] == 0
    line = store.components("line")
    assert line["live"] is True and line["stale_tags"] == 0
    assert line["divergence"]["samples"] > 0
    # a breakdown measured is put into the core: the mirror's press is down in the core too
    assert any(a.startswith("alarm/") for a in (e.id for e in store.entities()))
