"""The general engine's native event loop (``csrc/general_chunk.cc``, through
``physics.process.general_native``) against the XLA engine: whole runs of random lines (every
routing policy, merges, handoffs, conveyors, timed sources, several servers and sinks, scrap,
both failure modes, every family; gamma times with and without the boost of a shape below 1) and
the benchmark line end in the same state, bit for bit; so does a run continued with
``advance``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from physics.process import api, engine, general_native, native
from physics.process.model import LT_EDGES, Model, Params, build, with_horizon
from scenes.lineparse import load_line, parse_line

DISTS = [
    "{dist: exponential, mean: %(m)s}",
    "{dist: lognormal, mean: %(m)s, cv: %(cv)s}",
    "{dist: uniform, low: %(lo)s, high: %(hi)s}",
    "{dist: empirical, values: [%(lo)s, %(m)s, %(m)s, %(hi)s]}",
    "{dist: gamma, mean: %(m)s, cv: %(cv)s}",
    "{dist: gamma, mean: %(m)s, cv: 1.3}",  # shape below 1: the boost
    "%(m)s",
]


def _dist(rng: np.random.Generator, mean: float) -> str:
    m = round(float(mean * rng.uniform(0.8, 1.25)), 3)
    cv = round(float(rng.uniform(0.1, 1.2)), 3)
    return str(rng.choice(DISTS)) % {
        "m": m,
        "cv": cv,
        "lo": round(m / 2, 3),
        "hi": round(m * 1.5, 3),
    }


def random_general_line(seed: int) -> str:
    """A chain of 2-5 stations whose links are single buffers, diamonds (a split into 2-3
    parallel stations by a random policy, then a merge) or forks to an extra sink; timed sources
    at the head and sometimes into the middle (a merge of arrivals and upstream parts); random
    families, servers, scrap, failures of both modes, capacities 0-4, some conveyors."""
    rng = np.random.default_rng(seed)
    n_chain = int(rng.integers(2, 6))
    stations: list[str] = []
    buffers: list[tuple[str, str, str]] = []
    sources: list[str] = []

    def station(sid: str, extra: str = "") -> None:
        parts = [f"id: {sid}", f"process_time: {_dist(rng, float(rng.choice([15, 20, 30])))}"]
        if rng.random() < 0.45:
            mode = str(rng.choice(["operation", "time"]))
            mtbf, mttr = int(rng.choice([200, 600, 1500])), int(rng.choice([40, 120]))
            parts.append(f"failures: {{mtbf: {mtbf}, mttr: {mttr}, mode: {mode}}}")
        if rng.random() < 0.3:
            parts.append(f"servers: {int(rng.integers(2, 4))}")
        if rng.random() < 0.25:
            parts.append("scrap_rate: 0.07")
        stations.append("  - {" + ", ".join(parts) + extra + "}")

    def routing(sid: str, outs: list[str]) -> str:
        policy = str(rng.choice(["round_robin", "shortest_queue", "probability"]))
        if policy != "probability":
            return f", routing: {policy}"
        w = ", ".join(f"{b}: {round(float(rng.uniform(0.1, 2.0)), 3)}" for b in outs)
        return ", routing: {policy: probability, weights: {" + w + "}}"

    for i in range(n_chain):
        sid, nxt = f"s{i}", f"s{i + 1}"
        link = str(rng.choice(["buffer", "diamond", "fork"])) if i < n_chain - 1 else "end"
        if link == "diamond":
            k = int(rng.integers(2, 4))
            outs = [f"q{i}{c}" for c in "abc"[:k]]
            station(sid, routing(sid, outs))
            for c, q in zip("abc", outs, strict=False):
                station(f"p{i}{c}")
                buffers += [(q, sid, f"p{i}{c}"), (f"r{i}{c}", f"p{i}{c}", nxt)]
        elif link == "fork":
            outs = [f"q{i}", f"x{i}q"]
            station(sid, routing(sid, outs))
            station(f"x{i}")  # a second sink
            buffers += [(outs[0], sid, nxt), (outs[1], sid, f"x{i}")]
        else:
            station(sid)
            if link == "buffer":
                buffers.append((f"q{i}", sid, nxt))
    if rng.random() < 0.5:
        sources.append(f"  - {{feeds: s0, interarrival: {_dist(rng, 35.0)}}}")
    if n_chain > 2 and rng.random() < 0.4:
        sources.append(f"  - {{feeds: s{n_chain - 1}, interarrival: {_dist(rng, 90.0)}}}")
    out = [f"line: random{seed}", "stations:", *stations, "buffers:"]
    for bid, src, dst in buffers:
        cap = int(rng.integers(0, 5))
        belt = ", conveyor: {length: 3.0, speed: 0.5}" if cap and rng.random() < 0.3 else ""
        out.append(f"  - {{id: {bid}, from: {src}, to: {dst}, capacity: {cap}{belt}}}")
    if sources:
        out += ["sources:", *sources]
    return "\n".join(out) + "\n"


@contextmanager
def _native(on: bool) -> Iterator[None]:
    was = engine.USE_NATIVE
    engine.USE_NATIVE = on
    try:
        yield
    finally:
        engine.USE_NATIVE = was


def _states_equal(a: engine.State, b: engine.State) -> None:
    for f in engine.State.__dataclass_fields__:
        x, y = np.asarray(getattr(a, f)), np.asarray(getattr(b, f))
        assert x.shape == y.shape, f
        same = (x == y) | (np.isnan(x) & np.isnan(y)) if x.dtype.kind == "f" else x == y
        where = np.argwhere(~same)[:3].tolist()
        assert same.all(), f"{f} differs at {where}: {x[~same][:3]} vs {y[~same][:3]}"


def _setup(text: str | None, path: str | None, lanes: int, mixed: bool) -> tuple[Model, Params]:
    spec = parse_line(text) if text else load_line(path or "")
    if not mixed:
        model, params = build(spec)
        p = api.batch_params(with_horizon(params, hours=4, warmup_hours=0.5), lanes)
        return model, p
    # variants: every lane its own servers, capacities (0 included) and means
    model, params = build(
        spec,
        max_servers={s.id: 3 for s in spec.stations},
        max_capacity=4,
        allow_handoff=True,
    )
    p = api.batch_params(with_horizon(params, hours=4, warmup_hours=0.5), lanes)
    rng = np.random.default_rng(lanes)
    p = p.replace(
        servers=jnp.asarray(rng.integers(1, 4, size=p.servers.shape), jnp.int32),
        capacity=jnp.asarray(rng.integers(0, 5, size=p.capacity.shape), jnp.int32),
        pt_mean=p.pt_mean * rng.uniform(0.8, 1.25, size=p.pt_mean.shape),
    )
    return model, p


def _compare(text: str | None, path: str | None = None, *, lanes: int = 5, mixed: bool = False):
    model, p = _setup(text, path, lanes, mixed)
    assert general_native.applies(model, p), native.why_unavailable()
    keys = jax.random.split(jax.random.PRNGKey(11), lanes)
    with _native(False):
        ref = engine.run(model, p, keys, chunk=256)
    with _native(True):
        got = engine.run(model, p, keys, chunk=256)
    _states_equal(ref, got)
    assert int(np.sum(np.asarray(got.completions))) > 100 * lanes  # the lines really ran
    return model, p, keys, ref


@pytest.mark.parametrize("seed", range(6))
def test_random_lines_bit_for_bit(seed: int) -> None:
    _compare(random_general_line(seed), mixed=seed % 2 == 1)


def test_benchmark_line_bit_for_bit() -> None:
    _compare(None, "benchmarks/lines/ten_station.yaml")


def test_advance_bit_for_bit() -> None:
    """A run continued with ``advance`` (how a live twin steps the core), each lane to its own
    time, ends where the XLA engine's does (``test_process_advance`` compares it with a single
    run)."""
    model, p = _setup(random_general_line(3), None, 3, False)
    keys = jax.random.split(jax.random.PRNGKey(5), 3)
    first = p.replace(horizon=jnp.full((3,), 1800.0))
    out = {}
    for on in (False, True):
        with _native(on):
            s = engine.run(model, first, keys, chunk=256)
            out[on] = engine.advance(model, p, s, until_s=jnp.asarray([3600.0, 5400.0, 7200.0]))
    _states_equal(out[False], out[True])


def test_threads_do_not_change_results() -> None:
    """Lanes never interact: one thread or several, the same numbers."""
    model, p = _setup(None, "benchmarks/lines/ten_station.yaml", 5, False)
    assert general_native.applies(model, p), native.why_unavailable()
    keys = jax.random.split(jax.random.PRNGKey(2), 5)
    with _native(False):
        start = engine.run(model, p.replace(horizon=jnp.zeros((5,))), keys)
    width = int(p.weights.shape[-1])
    pf, pi = general_native._pack_params(model, p)
    topo = jnp.asarray(general_native.topology(model, width))
    edges = jnp.asarray(LT_EDGES)
    outs = []
    for threads in (1, 3):
        sf, si = general_native._pack_state(model, start)
        hist = jnp.array(start.lt_hist)
        ctl = jnp.asarray([300, threads], jnp.int32)
        outs.append(general_native._chunk(topo, start.key, pf, pi, edges, ctl, sf, si, hist))
    for a, b in zip(*outs, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert int(np.min(np.asarray(outs[0][1])[:, 0])) == 300  # every lane took 300 steps


WIDE = """
line: wide
stations:
  - {id: a, process_time: {dist: gamma, mean: 200, cv: 0.5}, servers: 9}
  - {id: b, process_time: 20}
buffers:
  - {id: q, from: a, to: b, capacity: 2}
"""


def test_a_gamma_station_of_many_servers_stays_in_xla() -> None:
    """Over ``dists.GAMMA_RETRY_SLOTS`` servers, XLA draws a gamma station's times by its bulk
    path, which the kernel does not repeat: such a line runs in XLA."""
    model, p = _setup(WIDE, None, 2, False)
    assert not general_native.applies(model, p)
    assert general_native.applies(*_setup(WIDE.replace("servers: 9", "servers: 8"), None, 2, False))
    s = engine.run(model, p, jax.random.split(jax.random.PRNGKey(0), 2), chunk=256)
    assert int(np.min(np.asarray(s.completions))) > 100


def test_kernel_refuses_a_malformed_call() -> None:
    """A topology that does not parse, or arrays that do not match it: a clear error, not a
    wrong answer."""
    model, p = _setup(None, "benchmarks/lines/ten_station.yaml", 2, False)
    assert general_native.applies(model, p), native.why_unavailable()  # built and registered
    width = int(p.weights.shape[-1])
    with _native(False):
        start = engine.run(
            model, p.replace(horizon=jnp.zeros((2,))), jax.random.split(jax.random.PRNGKey(0), 2)
        )
    pf, pi = general_native._pack_params(model, p)
    topo = jnp.asarray(general_native.topology(model, width))
    edges, ctl = jnp.asarray(LT_EDGES), jnp.asarray([10, 1], jnp.int32)
    sf, si = general_native._pack_state(model, start)
    hist = jnp.array(start.lt_hist)
    with pytest.raises(Exception, match="malformed topology"):
        native.general_chunk(topo[:-1], start.key, pf, pi, edges, ctl, sf, si, hist)
    with pytest.raises(Exception, match="do not match the topology"):
        native.general_chunk(topo, start.key, pf, pi, edges, ctl, sf[:, :-1], si, hist)
