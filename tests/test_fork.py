"""What-if forks: forecasts agree with the process core run directly, and a fork never touches
the twin it was taken from."""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from physics.process import api, engine
from physics.process.model import build, with_horizon
from scenes.graph import build_graph
from scenes.lineparse import parse_line
from streaming.auth import Principal
from streaming.hub import CommandRegistry
from streaming.protocol import Command, Role
from streaming.store import SceneStore
from twin.fork import Edit, ForkError, fork_forecast
from twin.live.mirror import LiveLine
from twin.live.recorder import Recorder
from twin.simline import SimulatedLine

PRESS = parse_line("line: press\nstations:\n  - {id: press, process_time: 10}\n")

#: A random two-station line with failures.
RANDOM = parse_line(
    """\
line: random
stations:
  - id: a
    process_time: {dist: exponential, mean: 8}
    failures: {mtbf: 600, mttr: 60}
  - id: b
    process_time: {dist: exponential, mean: 9}
buffers:
  - {id: q, from: a, to: b, capacity: 3}
"""
)


def test_a_deterministic_fork_is_exactly_the_core_run() -> None:
    line = SimulatedLine(PRESS, build_graph(PRESS), random_failures=False)
    f = fork_forecast(line, horizon_s=600, replications=4, interval_s=60)
    model, params = build(PRESS)
    direct = engine.run(
        model,
        api.batch_params(params.replace(horizon=jnp.asarray(600.0)), 1),
        api.replication_keys(0, 1, 1),
    )
    assert f.delivered.mean[-1] == f.delivered.p5[-1] == int(direct.delivered[0]) == 60
    assert list(f.times) == [60.0 * k for k in range(1, 11)]
    assert list(f.throughput.mean) == [360.0] * 10
    assert list(f.wip.mean) == pytest.approx([1.0] * 10)
    # what if the press stays down 100 s: the part in work finishes at 110, then one every 10 s
    g = fork_forecast(
        line,
        horizon_s=600,
        replications=2,
        interval_s=60,
        edits=[Edit(station="press", down_s=100)],
    )
    assert list(g.delivered.mean) == [0, 2, 8, 14, 20, 26, 32, 38, 44, 50]


def test_a_fork_of_a_fresh_line_agrees_with_simulate() -> None:
    """Fork at t = 0 with R replications vs the same line in ``api.evaluate`` (what ``twin
    simulate`` runs with the general engine): mean deliveries agree within the replication noise."""
    r, hours = 48, 1.0
    line = SimulatedLine(RANDOM, build_graph(RANDOM), seed=5)
    f = fork_forecast(line, horizon_s=hours * 3600, replications=r, seed=9, interval_s=600)
    model, params = build(RANDOM)
    k = api.evaluate(
        model, api.batch_params(with_horizon(params, hours=hours), 1), replications=r, seed=2
    )
    forked = f.runs["delivered"][-1]
    direct = k.delivered.astype(float)
    se = np.sqrt(np.var(forked, ddof=1) / r + np.var(direct, ddof=1) / r)
    assert abs(forked.mean() - direct.mean()) < 3 * se
    assert len(set(forked.tolist())) > r // 4  # independent keys: the replications differ
    assert np.all(f.throughput.p5 <= f.throughput.mean) and np.all(
        f.throughput.mean <= f.throughput.p95
    )


def snapshot(line: SimulatedLine) -> dict[str, np.ndarray]:
    out = {
        f"state.{k}": np.asarray(getattr(line.state, k)).copy()
        for k in line.state.__dataclass_fields__
    }
    out.update(
        {
            f"params.{k}": np.asarray(getattr(line.params, k)).copy()
            for k in line.params.__dataclass_fields__
        }
    )
    out["sim_t"] = np.asarray(line.sim_t)
    return out


def same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k], equal_nan=True) for k in a)


def test_a_fork_never_touches_the_twin(tmp_path: Path) -> None:
    sim = SimulatedLine(RANDOM, build_graph(RANDOM), seed=3)
    sim.step(500.0)
    before = snapshot(sim)
    fork_forecast(sim, horizon_s=900, replications=8, edits=[Edit(station="b", down_s=300)])
    assert same(before, snapshot(sim))

    rec = Recorder(tmp_path / "record.sqlite")
    live = LiveLine(RANDOM, build_graph(RANDOM), recorder=rec)
    store = SceneStore()
    live.populate(store)
    live(store, 0.0)
    live(store, 200.0)  # the live twin's core follows the wall clock
    rows = sum(rec.counts().values())
    before = snapshot(live)
    f = fork_forecast(live, horizon_s=900, replications=8, edits=[Edit(station="a", down_s=120)])
    assert f.t0 == pytest.approx(200.0)
    assert same(before, snapshot(live))
    assert sum(rec.counts().values()) == rows
    rec.close()


def test_the_fork_command_returns_plain_data() -> None:
    line = SimulatedLine(PRESS, build_graph(PRESS), random_failures=False)
    registry = CommandRegistry()
    line.register_commands(registry, SceneStore())
    spec = registry.get("twin.fork")
    assert spec is not None and {Role.OPERATOR, Role.TRAINER, Role.DESIGNER} <= spec.roles
    who = Principal(name="olga", role=Role.OPERATOR)
    out = spec.handler(
        who,
        Command(
            id="1",
            target="line",
            action="twin.fork",
            args={
                "horizon_s": 600,
                "replications": 4,
                "interval_s": 60,
                "edits": [{"station": "station/press", "down_s": 100}],
            },
        ),
    )
    assert out.ok, out.reason
    assert out.result["delivered"]["mean"] == [0, 2, 8, 14, 20, 26, 32, 38, 44, 50]
    assert isinstance(out.result["throughput_per_hour"]["p95"][0], float)
    bad = spec.handler(
        who, Command(id="2", target="line", action="twin.fork", args={"horizon_s": -1})
    )
    assert not bad.ok and "horizon_s" in bad.reason
    with pytest.raises(ForkError):
        fork_forecast(line, horizon_s=60, edits=[Edit(station="nope", down_s=1)])
