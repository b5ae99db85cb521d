"""The native CPU kernel of the serial fast path: it builds here, and it computes what the XLA
scan computes, bit for bit, on random serial lines (odd seeds: every lane its own capacities and
means) and the benchmark line."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from physics.process import api, native, serial
from scenes.lineparse import parse_line

DISTS = [
    "{dist: exponential, mean: %(m)d}",
    "{dist: lognormal, mean: %(m)d, cv: 0.6}",
    "{dist: uniform, low: %(lo)d, high: %(hi)d}",
    "{dist: gamma, mean: %(m)d, cv: 0.5}",
    "{dist: gamma, mean: %(m)d, cv: 1.4}",
    "%(m)d",
]


def random_serial_line(seed: int) -> str:
    """A chain of 1-7 stations: random families, operation-mode failures on some, buffers of
    capacity 0-4 (0: direct handoff), some of them conveyors."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 8))
    out = [f"line: random{seed}", "stations:"]
    for i in range(n):
        m = int(rng.choice([20, 25, 30, 40]))
        dist = str(rng.choice(DISTS)) % {"m": m, "lo": m // 2, "hi": m + m // 2}
        fail = ""
        if rng.random() < 0.5:
            fail = f", failures: {{mtbf: {int(rng.choice([40, 300, 900, 2000]))}, mttr: 60}}"
        out.append(f"  - {{id: s{i}, process_time: {dist}{fail}}}")
    out.append("buffers:" if n > 1 else "buffers: []")
    for i in range(n - 1):
        cap = int(rng.integers(0, 5))
        belt = ", conveyor: {length: 3.0, speed: 0.5}" if cap and rng.random() < 0.3 else ""
        out.append(f"  - {{id: b{i}, from: s{i}, to: s{i + 1}, capacity: {cap}{belt}}}")
    return "\n".join(out) + "\n"


def _both(spec_text: str, lanes: int, *, mixed: bool, hours: float = 6.0) -> None:
    model, params = serial.build_serial(parse_line(spec_text), max_capacity=4)
    params = serial._with_horizon(params, hours, 0.5)
    p = jax.tree.map(lambda a: jnp.broadcast_to(a, (lanes, *a.shape)), params)
    if mixed:  # variants: every lane its own capacities and means (the kernel's gather path)
        rng = np.random.default_rng(lanes)
        caps = rng.integers(0, 5, size=p.capacity.shape).astype(np.int32)
        scale = rng.uniform(0.8, 1.25, size=p.mean.shape)
        p = dataclasses.replace(
            p, capacity=jnp.asarray(caps), mean=p.mean * scale, low=p.low * scale
        )
    keys = api.replication_keys(7, 1, lanes)
    xla = serial._run_lanes(model, p, keys, 32, None, use_native=False)
    nat = serial._run_lanes(model, p, keys, 32, None, use_native=True)
    names = [f.name for f in serial.SerialState.__dataclass_fields__.values()]
    for name in names:
        a, b = np.asarray(getattr(xla, name)), np.asarray(getattr(nat, name))
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert np.array_equal(a, b, equal_nan=True), (name, np.max(np.abs(a - b)))
    assert np.asarray(xla.delivered).sum() > 0


def test_the_kernel_builds_on_this_machine() -> None:
    """The suite's machine has a C++ compiler (``make test`` installs g++ as root): the kernel
    must build and load, or this fails with the compiler's message."""
    native.load()
    assert native.available()
    assert any(native.cache_dir().glob("serial_chunk-*.so"))


@pytest.mark.parametrize("seed", range(4))  # handoffs, conveyors, frequent failures, gamma
def test_kernel_matches_the_scan_bit_for_bit(seed: int) -> None:
    native.load()
    _both(random_serial_line(seed), lanes=5, mixed=seed % 2 == 1)


def test_kernel_matches_on_the_benchmark_line() -> None:
    native.load()
    text = (Path(__file__).parents[1] / "benchmarks/lines/ten_serial.yaml").read_text()
    _both(text, lanes=9, mixed=False, hours=3.0)


EVERY_FAMILY = """line: families
stations:
  - {id: a, process_time: 12}
  - {id: b, process_time: {dist: exponential, mean: 20}}
  - {id: c, process_time: {dist: lognormal, mean: 22, cv: 0.3}}
  - {id: d, process_time: {dist: uniform, low: 15, high: 25}}
  - {id: e, process_time: {dist: gamma, mean: 20, cv: 0.5}}
  - {id: f, process_time: {dist: gamma, mean: 20, cv: 1.6}}
  - {id: g, process_time: {dist: empirical, values: [3, 9.5, 14, 30]}}
buffers:
  - {id: b1, from: a, to: b, capacity: 2}
  - {id: b2, from: b, to: c, capacity: 2}
  - {id: b3, from: c, to: d, capacity: 2}
  - {id: b4, from: d, to: e, capacity: 2}
  - {id: b5, from: e, to: f, capacity: 2}
  - {id: b6, from: f, to: g, capacity: 2}
"""


@pytest.mark.parametrize("first", [0, 4096])
def test_draws_match_xla_for_every_family(first: int) -> None:
    """The draws kernel against ``serial._samples``'s XLA draws, bit for bit, for every family
    (gamma with a shape above and below 1), each lane with its own means, spreads and bounds, and
    parts far into a lane's stream. (Batches of more than one lane: XLA:CPU itself rounds a
    gamma variate differently in the last bit in a batch of one, its fusions being different.)"""
    native.load()
    model, params = serial.build_serial(parse_line(EVERY_FAMILY))
    lanes, n = 33, 64
    rng = np.random.default_rng(first)
    p = jax.tree.map(lambda a: jnp.broadcast_to(a, (lanes, *a.shape)), params)
    scale = rng.uniform(0.5, 2.0, size=p.mean.shape)
    p = dataclasses.replace(
        p,
        mean=p.mean * scale,
        cv=p.cv * rng.uniform(0.3, 3.0, size=p.cv.shape),
        low=p.low * scale,
        high=p.high * scale,
        values=p.values * rng.uniform(0.5, 2.0, size=p.values.shape),
    )
    keys = api.replication_keys(3, 1, lanes)
    j = jnp.asarray(first + 16 * rng.integers(0, 8, lanes), jnp.int32)

    @partial(jax.jit, static_argnums=0)
    def draw(use_native: bool, p: serial.SerialParams, keys: jax.Array) -> list[jax.Array]:
        k_u, k_g, _ = jax.vmap(serial._lane_keys)(keys)
        return serial._samples(model, p, k_u, k_g, j, n, use_native)

    xla, nat = draw(False, p, keys), draw(True, p, keys)
    for kind, a, b in zip(model.kinds, xla, nat, strict=True):
        a, b = np.asarray(a), np.asarray(b)
        assert a.shape == b.shape == (n, lanes) and np.all(a > 0), kind
        assert np.array_equal(a, b), (kind, int(np.sum(a != b)))


@pytest.mark.parametrize("block", [1, 2])
def test_failures_drawn_in_many_blocks_match(monkeypatch: pytest.MonkeyPatch, block: int) -> None:
    """Failures drawn one or two at a time (``_failure_block``), so that nearly every chunk draws
    several blocks of epochs and some parts take repairs from two blocks: the downtime kernel
    against XLA's loop, bit for bit."""
    monkeypatch.setattr(serial, "_failure_block", lambda n, rate: block)
    text = f"""line: blocks{block}
stations:
  - {{id: p{block}, process_time: {{dist: exponential, mean: 20}}, failures: {{mtbf: 30, mttr: 5}}}}
  - {{id: q{block}, process_time: 25, failures: {{mtbf: 90, mttr: 40}}}}
buffers:
  - {{id: pq{block}, from: p{block}, to: q{block}, capacity: 2}}
"""
    native.load()
    _both(text, lanes=6, mixed=False, hours=3.0)


def test_lead_histogram_matches_xla_at_the_edges() -> None:
    """The histogram kernel against ``model.add_lead_times``: lead times on the bin edges and a
    hair either side, zero, beyond the last edge, infinite, and NaN (no lead time)."""
    from physics.process.model import LT_BINS, LT_EDGES, add_lead_times

    native.load()
    rng = np.random.default_rng(5)
    edges = LT_EDGES[rng.integers(0, LT_BINS + 1, 300)]
    specials = [0.0, 1e-3, 1e9, np.inf, np.nan, LT_EDGES[0], LT_EDGES[-1]]
    pool = np.concatenate([edges, np.nextafter(edges, 0), np.nextafter(edges, np.inf), specials])
    lanes = 7
    leads = np.concatenate([pool, 10 ** rng.uniform(-3, 9, 4 * lanes * 64)])
    leads = leads[: len(leads) // lanes * lanes].reshape(-1, lanes)
    start = jnp.asarray(rng.integers(0, 5, (lanes, LT_BINS)), jnp.int32)
    lane = jnp.arange(lanes)[None, :]
    want = jax.jit(add_lead_times)(start, jnp.asarray(leads), lane)
    got = jax.jit(native.lead_histogram)(start, jnp.asarray(leads), jnp.asarray(LT_EDGES))
    assert np.array_equal(np.asarray(got), np.asarray(want))
    assert int(np.asarray(got).sum() - np.asarray(start).sum()) == int(np.sum(~np.isnan(leads)))


def test_without_a_compiler_the_build_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CXX", "no-such-compiler-xyz")
    monkeypatch.setenv(native.CACHE_ENV, str(tmp_path))
    with pytest.raises(native.NativeBuildError, match=r"no C\+\+ compiler.*no-such-compiler-xyz"):
        native.build(force=True)


def test_a_compiler_error_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "broken.cc"
    bad.write_text("this is not C++;\n")
    monkeypatch.setattr(native, "SOURCE", bad)
    monkeypatch.setenv(native.CACHE_ENV, str(tmp_path / "cache"))
    with pytest.raises(native.NativeBuildError, match=r"compiling broken\.cc failed"):
        native.build(force=True)
    assert not list((tmp_path / "cache").glob("*.so*"))  # nothing half-written left behind


def test_off_switch_and_fallback_in_a_fresh_process(tmp_path: Path) -> None:
    """``TWIN_NATIVE=0`` runs the XLA scan; with no compiler the fast path still runs (the XLA
    scan) and warns once why. Fresh processes: the kernel registers once per process."""
    code = (
        "import warnings, jax, numpy as np\n"
        "from physics.process import api, native\n"
        "from scenes.lineparse import parse_line\n"
        "spec = parse_line('line: x\\nstations:\\n  - {id: a, process_time: 10}\\n"
        "  - {id: b, process_time: 12}\\nbuffers:\\n  - {id: q, from: a, to: b, capacity: 1}\\n')\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    r = api.simulate(spec, hours=1, engine_name='serial')  # 22 s, then one every 12 s\n"
        "print(native.available(), round(float(r.kpis.throughput_per_hour[0])),"
        " '|'.join(str(x.message) for x in w))\n"
    )
    root = Path(__file__).parents[1]
    base = {**os.environ, "PYTHONPATH": str(root), native.CACHE_ENV: str(tmp_path)}

    def run(**env: str) -> list[str]:
        done = subprocess.run(
            [sys.executable, "-c", code],
            env={**base, **env},
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.split(" ", 2)

    off = run(TWIN_NATIVE="0")
    assert off[:2] == ["False", "299"], off
    assert "native" not in off[2]
    none = run(CXX="no-such-compiler-xyz")
    assert none[:2] == ["False", "299"], none
    assert "native kernels are off" in none[2] and "no C++ compiler" in none[2]


def test_bad_capacity_is_an_error_not_a_wrong_answer() -> None:
    """The kernel checks what it is given: a capacity past the shift register is refused."""
    native.load()
    v, k, r, n = 3, 2, 2, 16
    z = jnp.zeros
    args = dict(
        lo=z(v),
        hi=jnp.full(v, 1e9),
        capacity=jnp.full((k, v), 5, jnp.int32),
        transit=z((k, v)),
        repair_of=[-1, -1],
        fk=z((4, k, v)),
        starts=jnp.full((k, r, v), -jnp.inf),
        fv=z((3, v)),
        produced=z((k, v), jnp.int32),
        delivered=z(v, jnp.int32),
        serv=[jnp.ones((n, v))] * k,
        repairs=[],
    )
    with pytest.raises(Exception, match="capacity outside the register"):
        jax.block_until_ready(native.serial_chunk(**args))  # type: ignore[arg-type]


def test_draws_and_downtime_refuse_a_chunk_of_part_groups() -> None:
    """The draws and downtime kernels check what they are given: a chunk that is not whole
    groups of 16 parts (the gamma retries' and the busy sums' blocks) is refused with a message,
    not drawn wrong."""
    native.load()
    v, n = 3, 24
    z = jnp.zeros
    with pytest.raises(Exception, match="whole groups of 16"):
        jax.block_until_ready(
            native.serial_draws(
                n,
                z(v, jnp.uint64),
                z(v, jnp.int32),
                ["exponential"],
                jnp.ones((1, v)),
                z((1, v)),
                z((1, 3, v), jnp.uint64),
                z((1, 4, v)),
                z((1, v, 1)),
                jnp.ones((1, v), jnp.int32),
            )
        )
    with pytest.raises(Exception, match="whole groups of 16"):
        jax.block_until_ready(
            native.serial_downtime(
                jnp.ones((n, v)),
                z(v, jnp.uint64),
                jnp.full(v, 100.0),
                jnp.ones(v),
                z(v),
                z(v, jnp.int32),
                4,
            )
        )
