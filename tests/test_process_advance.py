"""Stepping the core to a given time and setting it to an observed state (for live mirroring)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from physics.process import api, engine, kpi
from physics.process.model import BUSY, DOWN, build, with_horizon
from scenes.errors import SimulationError
from scenes.lineparse import parse_line

LINE = """
line: mirror
stations:
  - {id: a, process_time: {dist: exponential, mean: 30}, failures: {mtbf: 900, mttr: 120}}
  - {id: b, process_time: 45, failures: {mtbf: 1.0e9, mttr: 1}}
  - {id: c, process_time: {dist: uniform, low: 10, high: 30}}
buffers:
  - {id: b1, from: a, to: b, capacity: 0}
  - {id: b2, from: b, to: c, capacity: 2}
"""


def _setup(hours: float, text: str = LINE) -> tuple[engine.Model, engine.Params, jax.Array]:
    model, params = build(parse_line(text))
    p = api.batch_params(with_horizon(params, hours=hours), 3)
    return model, p, api.replication_keys(5, 1, 3)


def test_advancing_in_pieces_replays_one_run() -> None:
    model, p, keys = _setup(4.0)
    whole = engine.run(model, p, keys)
    s = engine.run(model, p.replace(horizon=jnp.full((3,), 3600.0)), keys)
    s = engine.advance(model, p, s, until_s=2 * 3600.0)
    s = engine.advance(model, p, s, until_s=4 * 3600.0)
    for name in ("delivered", "produced", "scrapped", "completions", "n_events", "st", "count"):
        assert np.array_equal(np.asarray(getattr(s, name)), np.asarray(getattr(whole, name))), name
    assert np.allclose(np.asarray(s.acc), np.asarray(whole.acc), rtol=1e-9, atol=1e-6)
    assert np.allclose(np.asarray(s.lt_sum), np.asarray(whole.lt_sum), rtol=1e-12)
    with pytest.raises(SimulationError, match="earlier"):
        engine.advance(model, p, s, until_s=3600.0)


def test_state_set_to_an_observed_breakdown() -> None:
    # a feeds the 45 s bottleneck b faster than it can work, so b is never idle
    model, p, keys = _setup(
        2.0, LINE.replace("{dist: exponential, mean: 30}, failures: {mtbf: 900, mttr: 120}", "20")
    )
    t1 = 3600.0
    s = engine.run(model, p.replace(horizon=jnp.full((3,), t1)), keys)
    b = model.offsets[1]  # station b's only server
    assert np.all(np.asarray(s.st)[:, b] == BUSY)  # the bottleneck is always working
    # The gateway reports b broken down now, for 900 s: the same change a failure event makes.
    now = s.now
    down = dataclasses.replace(
        s,
        prev=s.prev.at[:, b].set(s.st[:, b]),
        rem=s.rem.at[:, b].set(s.t_end[:, b] - now),
        t_end=s.t_end.at[:, b].set(jnp.inf),
        st=s.st.at[:, b].set(DOWN),
        t_rep=s.t_rep.at[:, b].set(now + 900.0),
    )
    base = kpi.compute(model, engine.advance(model, p, s, until_s=2 * t1), p)
    hit = kpi.compute(model, engine.advance(model, p, down, until_s=2 * t1), p)
    # 900 s of the 45 s bottleneck: 20 parts fewer (one either way at the window's edge).
    lost = base.delivered - hit.delivered
    assert np.all((lost >= 19) & (lost <= 21)), lost
    assert np.allclose(hit.down[:, 1] * 2 * t1, 900.0, atol=1e-6)
