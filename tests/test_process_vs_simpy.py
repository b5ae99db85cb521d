"""The JAX core against the SimPy reference on random lines with failures, splits and merges.

Both implement docs/process-semantics.md independently; their KPIs must agree within the
statistical error of the replications.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks import simpy_line
from physics.process import api
from scenes.lineparse import parse_line

DISTS = st.sampled_from(
    [
        "{dist: exponential, mean: %(m)s}",
        "{dist: lognormal, mean: %(m)s, cv: 0.5}",
        "{dist: uniform, low: %(lo)s, high: %(hi)s}",
        "{dist: gamma, mean: %(m)s, cv: 0.8}",
        "%(m)s",
    ]
)


@st.composite
def lines(draw: st.DrawFn) -> str:
    """A chain of 2-4 stations with an optional diamond (split with a routing policy + merge)."""
    n_chain = draw(st.integers(2, 4))
    diamond = draw(st.booleans())
    ids = [f"s{i}" for i in range(n_chain)]
    out = ["line: random", "stations:"]

    def station(sid: str, extra: str = "") -> str:
        m = draw(st.sampled_from([20, 25, 30, 40]))
        dist = draw(DISTS) % {"m": m, "lo": m // 2, "hi": m + m // 2}
        parts = [f"id: {sid}", f"process_time: {dist}"]
        if draw(st.booleans()):
            mode = draw(st.sampled_from(["operation", "time"]))
            parts.append(
                f"failures: {{mtbf: {draw(st.sampled_from([600, 1500]))}, mttr: 120, mode: {mode}}}"
            )
        if draw(st.integers(0, 3)) == 0:
            parts.append("servers: 2")
        if draw(st.integers(0, 3)) == 0:
            parts.append("scrap_rate: 0.05")
        return "  - {" + ", ".join(parts) + extra + "}"

    buffers: list[tuple[str, str]] = []
    split_at = draw(st.integers(0, n_chain - 2)) if diamond else -1
    for i, sid in enumerate(ids):
        extra = ""
        if i == split_at:
            policy = draw(st.sampled_from(["round_robin", "shortest_queue", "probability"]))
            extra = (
                ", routing: {policy: probability, weights: {" + f"q{i}a: 0.7, q{i}b: 0.3" + "}}"
                if policy == "probability"
                else f", routing: {policy}"
            )
        out.append(station(sid, extra))
        if i == split_at:
            out.append(station(f"p{i}a"))
            out.append(station(f"p{i}b"))
    out.append("buffers:")
    for i in range(n_chain - 1):
        if i == split_at:
            buffers += [(f"q{i}a", f"s{i}|p{i}a"), (f"q{i}b", f"s{i}|p{i}b")]
            buffers += [(f"r{i}a", f"p{i}a|s{i + 1}"), (f"r{i}b", f"p{i}b|s{i + 1}")]
        else:
            buffers.append((f"q{i}", f"s{i}|s{i + 1}"))
    for bid, ends in buffers:
        src, dst = ends.split("|")
        cap = draw(st.integers(0, 3))
        out.append(f"  - {{id: {bid}, from: {src}, to: {dst}, capacity: {cap}}}")
    return "\n".join(out) + "\n"


def _close(a: np.ndarray, b: np.ndarray, rel: float) -> tuple[bool, str]:
    se = float(np.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size))
    diff = abs(float(a.mean()) - float(b.mean()))
    # 4.5 standard errors (a false alarm about 1 in 10^5 per comparison) plus a small relative
    # slack for the histogram-free, bias-free but finite-horizon estimators.
    ok = diff <= 4.5 * se + rel * abs(float(b.mean()))
    return ok, f"jax {a.mean():.4f} simpy {b.mean():.4f} se {se:.4f}"


@settings(
    max_examples=4,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(lines())
def test_random_lines_agree_with_simpy(text: str) -> None:
    spec = parse_line(text)
    hours, warm, reps = 60.0, 2.0, 10
    jax_k = api.simulate(
        spec, hours=hours, warmup_hours=warm, replications=reps, seed=1, engine_name="general"
    ).kpis
    ref = simpy_line.replicate(spec, hours=hours, warmup_hours=warm, replications=reps, seed=1)
    ref_tp = np.array([r["throughput_per_hour"] for r in ref])
    ok, msg = _close(jax_k.throughput_per_hour, ref_tp, 0.01)
    assert ok, f"throughput: {msg}\n{text}"
    ref_wip = np.array([r["wip"] for r in ref])
    ok, msg = _close(jax_k.wip, ref_wip, 0.02)
    assert ok, f"wip: {msg}\n{text}"
    for i, s in enumerate(spec.stations):
        for key in ("busy", "blocked", "starved", "down"):
            a = getattr(jax_k, key)[:, i]
            b = np.array([r["stations"][s.id][key] for r in ref])
            ok, msg = _close(a, b, 0.0)
            assert ok or abs(a.mean() - b.mean()) < 0.01, f"{s.id}.{key}: {msg}\n{text}"


def test_ten_station_benchmark_line_agrees_with_simpy() -> None:
    from scenes.lineparse import load_line

    spec = load_line("benchmarks/lines/ten_station.yaml")
    hours, warm, reps = 40.0, 2.0, 8
    jax_k = api.simulate(
        spec, hours=hours, warmup_hours=warm, replications=reps, seed=2, engine_name="general"
    ).kpis
    ref = simpy_line.replicate(spec, hours=hours, warmup_hours=warm, replications=reps, seed=2)
    ok, msg = _close(
        jax_k.throughput_per_hour, np.array([r["throughput_per_hour"] for r in ref]), 0.01
    )
    assert ok, msg
    ok, msg = _close(jax_k.lead_time_mean, np.array([r["lead_time_mean"] for r in ref]), 0.02)
    assert ok, msg


DETERMINISTIC_CASES = {
    # A merge over capacity-0 links: the idle receiver takes the sender blocked longest.
    "merge_handoff": """
line: merge0
stations:
  - {id: A, process_time: 7}
  - {id: B, process_time: 4}
  - {id: M, process_time: 10}
buffers:
  - {id: a, from: A, to: M, capacity: 0}
  - {id: b, from: B, to: M, capacity: 0}
""",
    # Three servers finishing together exactly at the horizon: those completions count.
    "at_horizon": """
line: h
stations:
  - {id: b, process_time: 60, servers: 3}
""",
    # A merge of a buffer and a handoff link, and a round-robin split with a handoff branch.
    "mixed": """
line: mixed
stations:
  - {id: S, process_time: 5, routing: round_robin}
  - {id: P, process_time: 9}
  - {id: Q, process_time: 6}
  - {id: M, process_time: 4}
buffers:
  - {id: sp, from: S, to: P, capacity: 0}
  - {id: sq, from: S, to: Q, capacity: 2}
  - {id: pm, from: P, to: M, capacity: 0}
  - {id: qm, from: Q, to: M, capacity: 1}
""",
}


@pytest.mark.parametrize("name", sorted(DETERMINISTIC_CASES))
def test_deterministic_lines_agree_with_simpy_exactly(name: str) -> None:
    spec = parse_line(DETERMINISTIC_CASES[name])
    for hours in (100 / 3600, 2.0):
        k = api.simulate(spec, hours=hours, engine_name="general").kpis
        ref = simpy_line.simulate(spec, hours=hours, seed=0)
        for i, s in enumerate(spec.stations):
            assert int(k.produced[0, i]) == ref["stations"][s.id]["produced"], (name, hours, s.id)
        assert int(k.delivered[0]) == ref["delivered"], (name, hours)
        assert float(k.lead_time_mean[0]) == pytest.approx(ref["lead_time_mean"], rel=1e-9)
