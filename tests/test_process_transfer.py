"""The transfer phase's forward pulls (``engine.FORWARD_PULLS``) change how many passes a step
takes, never what happens: whole runs are bit-identical with and without them."""

from __future__ import annotations

import jax
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


def _run(spec_text: str | None, path: str | None) -> dict[str, np.ndarray]:
    spec = parse_line(spec_text) if spec_text else load_line(path or "")
    model, params = build(spec)
    p = api.batch_params(with_horizon(params, hours=3, warmup_hours=0.5), 4)
    s = engine.run(model, p, jax.random.split(jax.random.PRNGKey(7), 4), chunk=512)
    return {f: np.asarray(getattr(s, f)) for f in engine.State.__dataclass_fields__}


@pytest.mark.parametrize(
    "name", [*LINES, "benchmarks/lines/ten_station.yaml", "scenes/examples/bottling.yaml"]
)
def test_forward_pulls_change_nothing(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    text, path = LINES.get(name), None if name in LINES else name
    jax.clear_caches()
    with_pulls = _run(text, path)
    monkeypatch.setattr(engine, "FORWARD_PULLS", False)
    jax.clear_caches()
    without = _run(text, path)
    jax.clear_caches()
    assert with_pulls["n_events"].min() > 100  # the runs did something
    for field, value in with_pulls.items():
        assert np.array_equal(value, without[field], equal_nan=True), field
