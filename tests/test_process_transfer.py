"""The transfer phase's two ways of being compiled change how fast a step runs, never what
happens: whole runs are bit-identical with and without the forward pulls
(``engine.FORWARD_PULLS``: fewer passes per step) and with and without each station isolated in
its own loop (``engine.ISOLATE_STATIONS``: on by default on the CPU only)."""

from __future__ import annotations

from functools import cache

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from physics.process import api, engine
from physics.process.model import build, with_horizon
from scenes.lineparse import load_line, parse_line

LINES = {
    # splits by every policy, a merge, handoffs, two-server stations, scrap, both failure modes
    "mixed": """
line: mixed
stations:
  - {id: s0, process_time: {dist: exponential, mean: 20}, routing: round_robin}
  - {id: a, process_time: {dist: lognormal, mean: 30, cv: 0.5}, servers: 2}
  - {id: b, process_time: 25, failures: {mtbf: 600, mttr: 120, mode: time}}
  - {id: m, process_time: {dist: gamma, mean: 12, cv: 0.8}, scrap_rate: 0.05,
     routing: shortest_queue}
  - {id: c, process_time: {dist: uniform, low: 10, high: 30}, failures: {mtbf: 900, mttr: 120}}
  - {id: d, process_time: 20, servers: 2}
  - {id: e, process_time: {dist: exponential, mean: 15}}
buffers:
  - {id: sa, from: s0, to: a, capacity: 0}
  - {id: sb, from: s0, to: b, capacity: 2}
  - {id: am, from: a, to: m, capacity: 1}
  - {id: bm, from: b, to: m, capacity: 0}
  - {id: mc, from: m, to: c, capacity: 0}
  - {id: md, from: m, to: d, capacity: 3}
  - {id: ce, from: c, to: e, capacity: 1}
  - {id: de, from: d, to: e, capacity: 0}
""",
    # deterministic times: ties everywhere, a probability split and a conveyor
    "ties": """
line: ties
stations:
  - {id: s, process_time: 5, routing: {policy: probability, weights: {sp: 0.6, sq: 0.4}}}
  - {id: p, process_time: 9}
  - {id: q, process_time: 6}
  - {id: m, process_time: 4}
buffers:
  - {id: sp, from: s, to: p, capacity: 0}
  - {id: sq, from: s, to: q, capacity: 2}
  - {id: pm, from: p, to: m, capacity: 1, conveyor: {length: 2, speed: 0.5}}
  - {id: qm, from: q, to: m, capacity: 0}
""",
}


TEN = "benchmarks/lines/ten_station.yaml"


@pytest.fixture(autouse=True)
def _xla_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """These knobs shape the XLA engine's transfer phase: the native event loop, which would
    otherwise run these lines on the CPU, is kept out."""
    monkeypatch.setattr(engine, "USE_NATIVE", False)


ISOLATED = engine._once() is not None  # the default on this backend


@cache
def _default(name: str) -> dict[str, np.ndarray]:
    """A run of ``name`` compiled the default way on this backend."""
    jax.clear_caches()
    return _run(*_source(name))


def _source(name: str) -> tuple[str | None, str | None]:
    return LINES.get(name), None if name in LINES else name


def _run(spec_text: str | None, path: str | None) -> dict[str, np.ndarray]:
    spec = parse_line(spec_text) if spec_text else load_line(path or "")
    model, params = build(spec)
    p = api.batch_params(with_horizon(params, hours=3, warmup_hours=0.5), 4)
    s = engine.run(model, p, jax.random.split(jax.random.PRNGKey(7), 4), chunk=512)
    return {f: np.asarray(getattr(s, f)) for f in engine.State.__dataclass_fields__}


@pytest.mark.parametrize(
    ("knob", "value", "name"),
    [
        *[("FORWARD_PULLS", False, n) for n in [*LINES, TEN, "scenes/examples/bottling.yaml"]],
        *[("ISOLATE_STATIONS", not ISOLATED, n) for n in [*LINES, TEN]],
    ],
)
def test_transfer_variants_change_nothing(
    monkeypatch: pytest.MonkeyPatch, knob: str, value: bool, name: str
) -> None:
    default = _default(name)
    monkeypatch.setattr(engine, knob, value)
    jax.clear_caches()
    other = _run(*_source(name))
    jax.clear_caches()
    assert default["n_events"].min() > 100  # the runs did something
    for field, array in default.items():
        assert np.array_equal(array, other[field], equal_nan=True), field


def test_stations_isolated_on_the_cpu_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default follows the backend: a traced 1 on the CPU (here), ``None`` elsewhere."""
    assert jax.default_backend() == "cpu"
    assert engine._once() is not None
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert engine._once() is None
    monkeypatch.setattr(engine, "ISOLATE_STATIONS", True)
    assert engine._once() is not None


def test_packed_lane_state_round_trips() -> None:
    """The chunk loop carries the lanes' scalars as one (rows, V) array per dtype and the other
    leaves as they are: every leaf comes back exactly, and a frozen lane keeps its own."""
    model, params = build(load_line(TEN))
    v = 6
    p = api.batch_params(with_horizon(params, hours=1), v)
    s, hist = engine._init_batch(model, p, jax.random.split(jax.random.PRNGKey(3), v))
    s, hist = engine._chunk_batch(model, 40, p, s, hist, engine._once())  # state with history
    packing = engine._Packed(s)
    rows, others = packing.pack(s)
    leaves = jax.tree.leaves(s)
    scalars = [a for a in leaves if a.shape == (v,)]
    assert set(rows) == {"float64", "int32"}  # the key (uint32) is (V, 2)
    assert sum(a.shape[0] for a in rows.values()) == len(scalars) > 50
    assert all(a.shape[1] == v for a in rows.values())
    assert len(others) == len(leaves) - len(scalars) > 0  # rings, the accumulators
    back = packing.unpack((rows, others))
    assert jax.tree.structure(back) == jax.tree.structure(s)
    for a, b in zip(leaves, jax.tree.leaves(back), strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True)

    before = packing.pack(s)
    later, _ = engine._chunk_batch(model, 40, p, jax.tree.map(jnp.copy, s), hist, engine._once())
    live = np.arange(v) % 2 == 0
    mixed = packing.unpack(engine._Packed.where(live, packing.pack(later), before))
    for a, b, m in zip(leaves, jax.tree.leaves(later), jax.tree.leaves(mixed), strict=True):
        assert np.array_equal(np.asarray(m)[live], np.asarray(b)[live], equal_nan=True)
        assert np.array_equal(np.asarray(m)[~live], np.asarray(a)[~live], equal_nan=True)
