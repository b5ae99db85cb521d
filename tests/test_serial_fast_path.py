"""The (max,+) fast path: where it applies, agreement with the general engine, its gradient."""

from __future__ import annotations

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from physics.process import api, serial
from scenes.errors import SimulationError
from scenes.lineparse import parse_line

SERIAL = """
line: serial3
stations:
  - {id: a, process_time: {dist: exponential, mean: 30}, failures: {mtbf: 900, mttr: 90}}
  - {id: b, process_time: {dist: lognormal, mean: 34, cv: 0.5}}
  - {id: c, process_time: {dist: uniform, low: 20, high: 36}}
buffers:
  - {id: b1, from: a, to: b, capacity: 2}
  - {id: b2, from: b, to: c, capacity: 0}
"""


def test_applicability() -> None:
    assert serial.inapplicable(parse_line(SERIAL)) is None
    par = parse_line(SERIAL.replace("cv: 0.5}", "cv: 0.5}, servers: 2"))
    assert "parallel servers" in str(serial.inapplicable(par))
    tm = parse_line(SERIAL.replace("mttr: 90}", "mttr: 90, mode: time}"))
    assert "time-dependent" in str(serial.inapplicable(tm))
    with pytest.raises(SimulationError, match="does not apply"):
        api.simulate(par, hours=1, engine_name="serial")
    assert api.simulate(parse_line(SERIAL), hours=1).engine == "serial"
    assert api.simulate(par, hours=1).engine == "general"


def test_fast_path_agrees_with_general_engine() -> None:
    spec = parse_line(SERIAL)
    kw = {"hours": 150.0, "warmup_hours": 5.0, "replications": 16}
    fast = api.simulate(spec, engine_name="serial", seed=1, **kw).kpis
    gen = api.simulate(spec, engine_name="general", seed=2, **kw).kpis
    for name in ("throughput_per_hour", "wip", "lead_time_mean"):
        a, b = getattr(fast, name), getattr(gen, name)
        se = np.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
        assert abs(a.mean() - b.mean()) <= 3.5 * se, (name, a.mean(), b.mean(), se)
    for name in ("busy", "blocked", "starved", "down"):
        a, b = getattr(fast, name).mean(axis=0), getattr(gen, name).mean(axis=0)
        assert np.allclose(a, b, atol=0.01), (name, a, b)


def test_failures_far_more_often_than_the_model_was_sized_for() -> None:
    """Failure epochs are drawn in blocks sized for the file the model was built from; a variant
    failing 20x as often needs many blocks per chunk, and still agrees with the general
    engine (this used to stop with "failure budget exceeded")."""
    sized_for = parse_line(SERIAL)  # station a: a failure every 30 parts
    often = parse_line(SERIAL.replace("mtbf: 900, mttr: 90", "mtbf: 45, mttr: 20"))
    model, _ = serial.build_serial(sized_for)
    _, params = serial.build_serial(often)
    params = serial._with_horizon(params, 100.0, 5.0)
    reps = 16
    pb = jax.tree.map(lambda a: jax.numpy.broadcast_to(a, (reps, *a.shape)), params)
    state = serial.run(model, pb, api.replication_keys(1, 1, reps))
    fast = serial.kpis_of(model, pb, state, often)
    gen = api.simulate(
        often, hours=100.0, warmup_hours=5.0, replications=reps, engine_name="general", seed=2
    ).kpis
    for name in ("throughput_per_hour", "wip"):
        a, b = getattr(fast, name), getattr(gen, name)
        se = np.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
        assert abs(a.mean() - b.mean()) <= 3.5 * se, (name, a.mean(), b.mean(), se)
    # station a is down about 20/(45 + 20) of its active time
    assert np.allclose(fast.down.mean(axis=0), gen.down.mean(axis=0), atol=0.01)
    assert fast.down.mean(axis=0)[0] > 0.1


def test_results_do_not_depend_on_the_chunk_size() -> None:
    """Every random number is keyed by the lane and the part (or failure) it is for, and the
    failure clocks carry over from chunk to chunk: the final states are the same bit for bit
    whatever the chunk size (a gamma station, failures, a direct handoff, a warm-up)."""
    spec = parse_line(
        SERIAL.replace("{dist: uniform, low: 20, high: 36}", "{dist: gamma, mean: 28, cv: 0.7}")
    )
    model, params = serial.build_serial(spec)
    params = serial._with_horizon(params, 20.0, 2.0)
    pb = jax.tree.map(lambda a: jax.numpy.broadcast_to(a, (6, *a.shape)), params)
    keys = api.replication_keys(3, 1, 6)
    states = [serial.run(model, pb, keys, chunk=c) for c in (16, 48, 128, 1024)]
    # the window's statistics (runs of other chunk sizes stop after other numbers of parts)
    fields = ("delivered", "lt_sum", "lt_hist", "wip_int", "busy", "down", "blocked", "produced")
    for other in states[1:]:
        for f in fields:
            assert np.array_equal(np.asarray(getattr(other, f)), np.asarray(getattr(states[0], f)))
    assert np.asarray(states[0].down).sum() > 0  # failures did happen
    with pytest.raises(ValueError, match="multiple of 16"):
        serial.run(model, pb, keys, chunk=40)


def test_running_sum_is_a_cumulative_sum() -> None:
    """The failure clocks' busy time, summed in blocks lanes last, is ``cumsum`` up to rounding."""
    x = np.random.default_rng(4).exponential(20.0, (128, 7))
    got = np.asarray(serial._running_sum(jax.numpy.asarray(x)))
    assert np.allclose(got, np.cumsum(x, axis=0), rtol=1e-13, atol=0)
    odd = np.asarray(serial._running_sum(jax.numpy.asarray(x[:40])))  # not whole blocks
    assert np.allclose(odd, np.cumsum(x[:40], axis=0), rtol=1e-13, atol=0)


def test_conveyor_transit_in_fast_path() -> None:
    spec = parse_line(
        """
line: conv
stations:
  - {id: a, process_time: 10}
  - {id: b, process_time: 5}
buffers:
  - {id: c, from: a, to: b, conveyor: {length: 6.0, speed: 0.5}}
"""
    )
    for eng in ("serial", "general"):
        k = api.simulate(spec, hours=2, warmup_hours=0.5, engine_name=eng).kpis
        # every part: 10 s at a, 12 s on the belt, 5 s at b
        assert k.lead_time_mean[0] == pytest.approx(27.0, abs=1e-9), eng
        assert k.throughput_per_hour[0] == pytest.approx(360.0, abs=1.0), eng


def test_gradient_matches_finite_differences() -> None:
    spec = parse_line(SERIAL)
    model, p = serial.build_serial(spec)
    key = jax.random.PRNGKey(4)
    kw = {"parts": 6000, "warmup_parts": 300}
    f = jax.jit(lambda m: serial.throughput_of_means(model, p, m, key, **kw))
    value, grads = serial.throughput_gradient(spec, seed=4, **kw)
    assert value == pytest.approx(float(f(p.mean)), rel=1e-9)
    base = np.asarray(p.mean)
    for k, sid in enumerate(model.station_ids):
        h = 0.05
        up, dn = base.copy(), base.copy()
        up[k] += h
        dn[k] -= h
        fd = (float(f(jax.numpy.asarray(up))) - float(f(jax.numpy.asarray(dn)))) / (2 * h)
        # Common random numbers make the sample path piecewise linear in the means: the
        # central difference and the pathwise derivative agree closely.
        assert grads[sid] == pytest.approx(fd, rel=0.05, abs=0.02), (sid, grads[sid], fd)
    # Slowing the bottleneck costs the most throughput.
    assert min(grads, key=lambda s: grads[s]) == "b"


def test_cli_json_is_one_object() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "twin",
            "simulate",
            "benchmarks/lines/ten_serial.yaml",
            "--hours",
            "20",
            "--warmup-hours",
            "1",
            "--replications",
            "4",
            "--seed",
            "1",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    doc = json.loads(out.stdout)
    assert out.stdout.strip().count("\n") == 0
    for key in (
        "line",
        "hours",
        "warmup_hours",
        "replications",
        "seed",
        "throughput_per_hour",
        "wip",
        "lead_time_s",
        "oee",
        "bottleneck",
        "stations",
    ):
        assert key in doc
    assert doc["line"] == "ten-serial" and doc["replications"] == 4 and doc["seed"] == 1
    lo, hi = doc["throughput_per_hour"]["ci95"]
    assert lo <= doc["throughput_per_hour"]["mean"] <= hi
    assert set(doc["oee"]) == {"mean", "availability", "performance", "quality"}
    st = doc["stations"]["s1"]
    assert set(st) >= {"busy", "blocked", "starved", "down", "produced", "scrapped"}
    assert st["busy"] + st["blocked"] + st["starved"] + st["down"] == pytest.approx(1.0, abs=1e-6)
    assert doc["bottleneck"] in doc["stations"]
    reps = doc["per_replication"]
    assert [r["replication"] for r in reps] == [0, 1, 2, 3]
    tps = [r["throughput_per_hour"] for r in reps]
    assert sum(tps) / 4 == pytest.approx(doc["throughput_per_hour"]["mean"], rel=1e-12)
    assert len(set(tps)) > 1  # independent replications differ
    assert all(r["bottleneck"] in doc["stations"] for r in reps)


def test_cli_table_and_bad_input(tmp_path: object) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "twin",
            "simulate",
            "benchmarks/lines/ten_serial.yaml",
            "--hours",
            "5",
            "--replications",
            "2",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "throughput" in out.stdout and "bottleneck" in out.stdout and "s10" in out.stdout
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "twin",
            "simulate",
            "benchmarks/lines/ten_serial.yaml",
            "--hours",
            "1",
            "--warmup-hours",
            "2",
        ],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1 and "warmup_hours" in bad.stderr and "Traceback" not in bad.stderr
