"""The process core's random numbers: the generator and the loop-light gamma sampler."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import physics.process.model  # noqa: F401  (enables float64)
from physics.process import dists
from scenes.spec import DistKind


def _gamma(shape: float, n: int, seed: int) -> np.ndarray:
    key = dists.rng_key(jax.random.PRNGKey(seed), dists.SERIAL_RNG)
    return np.asarray(jax.jit(lambda k: dists.gamma(k, jnp.asarray(shape), (n,)))(key))


@pytest.mark.parametrize("shape", [0.2, 0.7, 1.0, 1.5, 4.0, 30.0])
def test_gamma_matches_scipy(shape: float) -> None:
    x = _gamma(shape, 200_000, seed=11)
    assert np.all(np.isfinite(x)) and np.all(x > 0)
    assert stats.kstest(x, stats.gamma(shape).cdf).pvalue > 1e-3
    # mean and variance are both `shape`; 6 standard errors
    assert abs(x.mean() - shape) < 6 * np.sqrt(shape / x.size)
    assert abs(x.var() - shape) < 6 * np.sqrt(2 * shape * (shape + 3) / x.size)


@pytest.mark.parametrize("per_lane", [30, 3])
def test_gamma_fallback_loop_is_exact(monkeypatch: pytest.MonkeyPatch, per_lane: int) -> None:
    """With one retry per lane and round, thousands of variates go through the fallback rounds,
    lanes needing from none to several rounds: 30 variates per lane (one proposal up front, one
    group of 30) and 3 (an event's draws in the general engine: two proposals up front)."""
    monkeypatch.setattr(dists, "GAMMA_RETRY_SLOTS", 1 if per_lane > 3 else 4)
    monkeypatch.setattr(dists, "GAMMA_GROUP", per_lane)
    keys = jax.random.split(jax.random.PRNGKey(3), 61_440 // per_lane)

    @jax.jit
    def draw(keys: jax.Array) -> jax.Array:
        return jax.vmap(
            lambda k: dists.gamma(dists.rng_key(k, dists.SERIAL_RNG), jnp.asarray(1.0), (per_lane,))
        )(keys)

    x = np.asarray(draw(keys)).ravel()
    assert np.all(np.isfinite(x))
    assert stats.kstest(x, stats.gamma(1.0).cdf).pvalue > 1e-3


def test_gamma_numbered_pieces_make_the_same_sequence() -> None:
    """With ``start``, a sequence drawn in pieces of whole groups is the same however it is cut,
    and still gamma-distributed."""
    key = dists.rng_key(jax.random.PRNGKey(8), dists.SERIAL_RNG)
    a = jnp.asarray(1.5)
    whole = np.asarray(dists.gamma(key, a, (96,), start=jnp.int32(0)))
    pieces = [dists.gamma(key, a, (n,), start=jnp.int32(at)) for at, n in ((0, 32), (32, 64))]
    assert np.array_equal(np.concatenate([np.asarray(x) for x in pieces]), whole)
    x = np.asarray(jax.jit(lambda k: dists.gamma(k, a, (100_000,), start=jnp.int32(0)))(key))
    assert stats.kstest(x, stats.gamma(1.5).cdf).pvalue > 1e-3
    with pytest.raises(ValueError, match="whole groups"):
        dists.gamma(key, a, (40,), start=jnp.int32(0))


def test_sample_gamma_has_the_file_mean_and_cv() -> None:
    n = 200_000
    u = jnp.full((n,), 0.5)
    key = dists.rng_key(jax.random.PRNGKey(5), dists.GENERAL_RNG)
    z = jnp.asarray(0.0)
    x = np.asarray(
        dists.sample(
            DistKind.GAMMA, u, key, jnp.asarray(20.0), jnp.asarray(0.5), z, z, jnp.zeros(1), z
        )
    )
    assert x.mean() == pytest.approx(20.0, rel=0.01)
    assert x.std() / x.mean() == pytest.approx(0.5, rel=0.02)


@pytest.mark.parametrize("impl", [dists.SERIAL_RNG, dists.GENERAL_RNG])
def test_uniforms_from_the_generators(impl: str) -> None:
    key = jax.random.PRNGKey(7)
    assert np.array_equal(np.asarray(dists.raw_key(dists.rng_key(key, impl))), np.asarray(key))
    u = np.asarray(jax.random.uniform(dists.rng_key(key, impl), (200_000,), dtype=jnp.float64))
    assert u.dtype == np.float64 and u.min() >= 0.0 and u.max() < 1.0
    assert stats.kstest(u, "uniform").pvalue > 1e-3


@pytest.mark.parametrize("shape", [(200_001,), (3, 7)])
def test_uniforms_drawn_once(shape: tuple[int, ...]) -> None:
    """``dists.uniform`` (drawn in a loop XLA cannot fuse into consumers): the shape asked for,
    on [0, 1), uniform, and not two copies of one half."""
    key = dists.rng_key(jax.random.PRNGKey(8), dists.SERIAL_RNG)
    u = np.asarray(jax.jit(lambda k: dists.uniform(k, shape))(key))
    assert u.shape == shape and u.dtype == np.float64 and u.min() >= 0.0 and u.max() < 1.0
    flat = u.ravel()
    half = (flat.size + 1) // 2
    assert not np.array_equal(flat[: flat.size - half], flat[half:])
    if flat.size > 1000:
        assert stats.kstest(flat, "uniform").pvalue > 1e-3


def test_philox_matches_random123_and_jax() -> None:
    """Known-answer vectors of Random123's kat_vectors (philox4x32_10), and JAX's own Philox
    primitive on random words."""
    z, f = jnp.uint32(0), jnp.uint32(0xFFFFFFFF)
    assert [int(x) for x in dists.philox4x32((z, z), (z, z, z, z))] == [
        0x6627E8D5,
        0xE169C58D,
        0xBC57AC4C,
        0x9B00DBD8,
    ]
    assert [int(x) for x in dists.philox4x32((f, f), (f, f, f, f))] == [
        0x408F276D,
        0x41C83B0E,
        0xA20BC7C6,
        0x6D5451FD,
    ]
    from jax._src.random.philox4x32 import philox4x32_p

    rng = np.random.default_rng(0)
    w = [
        jnp.asarray(rng.integers(0, 2**32, 4096, dtype=np.uint64).astype(np.uint32))
        for _ in "kkcccc"
    ]
    ours = jax.jit(lambda w: dists.philox4x32((w[0], w[1]), tuple(w[2:])))(w)
    for a, b in zip(ours, philox4x32_p.bind(*w), strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_counter_uniforms_are_uniform_and_independent_across_counters() -> None:
    key = jnp.asarray([3, 9], jnp.uint32)
    draw = jax.jit(jax.vmap(lambda c: dists.counter_uniforms(key, c, 7)))
    u = np.asarray(draw(jnp.arange(40_000)))  # (counter, 7)
    assert u.dtype == np.float64 and u.min() >= 0.0 and u.max() < 1.0
    assert stats.kstest(u.ravel(), "uniform").pvalue > 1e-3
    # neighbouring counters and positions within a draw are uncorrelated
    for a, b in [(u[:-1, 0], u[1:, 0]), (u[:, 0], u[:, 1]), (u[:, 5], u[:, 6])]:
        assert abs(np.corrcoef(a, b)[0, 1]) < 4 / np.sqrt(a.size)
    # a pure function of (key, counter), and odd counts are the prefix of the next even one
    assert np.array_equal(np.asarray(dists.counter_uniforms(key, jnp.int32(5), 8))[:7], u[5])
    other = np.asarray(dists.counter_uniforms(jnp.asarray([3, 10], jnp.uint32), jnp.int32(5), 7))
    assert not np.any(other == u[5])


def test_splitmix_uniforms() -> None:
    """``dists.uniform``: SplitMix64's published first outputs for seed 0, uniform numbers, and
    streams of different keys that are reproducible and unrelated."""
    i = jnp.arange(3, dtype=jnp.uint64) + np.uint64(1)
    out = dists._mix64(i * dists._GOLDEN)
    assert [int(x) for x in out] == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]
    keys = jax.random.split(jax.random.key(5, impl=dists.SERIAL_RNG), 64)
    u = np.asarray(jax.jit(jax.vmap(lambda k: dists.uniform(k, (50, 80))))(keys))
    assert u.shape == (64, 50, 80) and u.dtype == np.float64
    assert u.min() >= 0.0 and u.max() < 1.0
    assert stats.kstest(u.ravel(), "uniform").pvalue > 1e-3
    flat = u.reshape(64, -1)
    corr = np.corrcoef(flat)[np.triu_indices(64, 1)]
    assert np.abs(corr).max() < 5 / np.sqrt(flat.shape[1])  # lanes' streams unrelated
    assert abs(np.corrcoef(flat[:, :-1].ravel(), flat[:, 1:].ravel())[0, 1]) < 0.01  # successive
    again = np.asarray(dists.uniform(keys[3], (50, 80)))
    assert np.array_equal(again, u[3])
    # block b: the stream's numbers b * size onwards (the gamma sampler's rounds)
    run = np.asarray(dists.uniform(keys[3], (3, 4000)))
    block = jax.jit(lambda b: dists.uniform(keys[3], (4000,), block=b))
    assert np.array_equal(np.asarray(block(jnp.int32(2))), run[2])
    assert np.array_equal(run.ravel()[:4000], run[0])


def test_uniform_lanes_are_the_same_numbers_lanes_last() -> None:
    """``dists.uniform_lanes`` draws, for a batch of keys, exactly ``uniform``'s numbers of each
    key, laid out (columns, rows, lanes)."""
    keys = jax.random.split(jax.random.key(9, impl=dists.SERIAL_RNG), 5)
    lanes = np.asarray(dists.uniform_lanes(keys, 40, 7))
    assert lanes.shape == (7, 40, 5)
    for v in range(5):
        assert np.array_equal(lanes[:, :, v], np.asarray(dists.uniform(keys[v], (40, 7))).T)


def test_empirical_lanes_last_matches_one_lane_at_a_time() -> None:
    """``sample`` of an empirical family with per-lane values (V, n_values) and uniforms (n, V)
    picks each lane's own values, as sampling each lane alone does."""
    u = jax.random.uniform(jax.random.key(2), (30, 3), dtype=jnp.float64)
    values = jnp.asarray([[1.0, 2.0, 3.0, 0.0], [10.0, 20.0, 0.0, 0.0], [5.0, 6.0, 7.0, 8.0]])
    nvalues = jnp.asarray([3, 2, 4])
    z = jnp.zeros(3)
    key = jax.random.key(0)
    got = np.asarray(dists.sample(DistKind.EMPIRICAL, u, key, z, z, z, z, values, nvalues))
    for v in range(3):
        one = dists.sample(
            DistKind.EMPIRICAL, u[:, v], key, z[v], z[v], z[v], z[v], values[v], nvalues[v]
        )
        assert np.array_equal(got[:, v], np.asarray(one))
    assert set(got[:, 1]) <= {10.0, 20.0}


def test_normal_ppf_matches_scipy_to_the_last_bits() -> None:
    """AS 241 against SciPy's ``ndtri`` over the centre, both tails and the branch points."""
    from scipy import special

    rng = np.random.default_rng(1)
    p = np.concatenate(
        [
            rng.random(200_000),
            10 ** rng.uniform(-300, 0, 20_000),
            1 - 10 ** rng.uniform(-15, 0, 20_000),
            [0.075, 0.925, 0.5, 1e-12, 1 - 1e-12, 1e-300, np.exp(-25.0)],
        ]
    )
    p = p[(p > 0) & (p < 1)]
    got = np.asarray(jax.jit(dists.normal_ppf)(jnp.asarray(p)))
    want = special.ndtri(p)
    assert np.all(np.isfinite(got))
    assert np.max(np.abs(got - want) / np.maximum(np.abs(want), 1e-12)) < 1e-14


def test_log_within_one_ulp_of_numpy() -> None:
    """fdlibm's logarithm against NumPy's (the C library's) over the uniforms' range, the whole
    float64 range, the reduction's branch point sqrt(2) and the special values."""
    rng = np.random.default_rng(2)
    x = np.concatenate(
        [
            rng.random(200_000),
            np.exp(rng.uniform(-708, 709, 200_000)),
            np.sqrt(2.0) * (1 + rng.uniform(-1e-12, 1e-12, 1_000)),
            [2.2250738585072014e-308, 1.7976931348623157e308, 1 - 2**-53, 1 + 2**-52, 1.0, 2.0],
            np.arange(1, 2**12) * 2.0**-52,  # the first uniforms of the 2^-52 grid
        ]
    )
    x = x[x > 0]
    got = np.asarray(jax.jit(dists.log)(jnp.asarray(x)))
    want = np.log(x)
    assert np.max(np.abs(got - want) / np.spacing(np.maximum(np.abs(want), 1e-300))) <= 1.0
    special = np.asarray(dists.log(jnp.asarray([0.0, -1.0, np.inf, np.nan, -np.inf])))
    assert special[0] == -np.inf and special[2] == np.inf
    assert np.isnan(special[1]) and np.isnan(special[3]) and np.isnan(special[4])


def test_unit_exponential_is_exact_on_the_uniform_grid() -> None:
    """``-log(1 - u)`` equals ``-log1p(-u)`` to the last bit or one ulp for every uniform of the
    generators' grid, including the smallest (where ``log1p`` matters)."""
    rng = np.random.default_rng(3)
    u = np.concatenate([rng.integers(0, 2**52, 100_000) * 2.0**-52, np.arange(0, 64) * 2.0**-52])
    got = np.asarray(dists.unit_exponential(jnp.asarray(u)))
    want = -np.log1p(-u)
    assert got[u == 0].tolist() == [0.0] * int(np.sum(u == 0))
    nz = u > 0
    assert np.max(np.abs(got[nz] - want[nz]) / np.spacing(want[nz])) <= 1.0


def test_exp_within_one_ulp_of_numpy() -> None:
    """fdlibm's exponential against NumPy's over the whole range that gives normal numbers, the
    lognormal times' range, tiny arguments and the special values."""
    rng = np.random.default_rng(4)
    x = np.concatenate(
        [
            rng.uniform(-708.3, 709.7, 200_000),
            rng.normal(0.0, 3.0, 200_000),
            rng.uniform(-1e-9, 1e-9, 1_000),
            [0.0, -0.0, 1.0, -1.0, np.log(2.0), 0.5 * np.log(2.0), 709.78],
        ]
    )
    got = np.asarray(jax.jit(dists.exp)(jnp.asarray(x)))
    want = np.exp(x)
    assert np.max(np.abs(got - want) / np.spacing(want)) <= 1.0
    special = np.asarray(dists.exp(jnp.asarray([np.inf, -np.inf, np.nan, 710.0, -746.0])))
    assert special[0] == np.inf and special[1] == 0.0 and np.isnan(special[2])
    assert special[3] == np.inf and special[4] == 0.0
