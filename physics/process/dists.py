"""Random numbers of the process core: the generator, and drawing random times from the
distribution families of a line file (docs/process-semantics.md).

One definition serves both engines, so the general engine and the serial fast path can never
disagree on what ``lognormal, mean, cv`` means.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from scenes.spec import DistKind

#: Where the numbers come from. Keys are two uint32 words, so callers pass raw
#: ``jax.random.PRNGKey``-style keys and engines store them raw.
#:
#: - The serial fast path derives its per-chunk keys with Philox4x32-10 (Salmon et al., SC'11:
#:   the generator of cuRAND; passes TestU01's BigCrush) and draws each chunk's bulk uniforms
#:   with :func:`uniform` (SplitMix64 seeded from the key).
#: - The general engine's events draw from :func:`counter_uniforms` (Philox of the lane key and
#:   the event count); threefry2x32 keys remain for its start-up draws and gamma proposals.
SERIAL_RNG = "philox4x32"
GENERAL_RNG = "threefry2x32"


def rng_key(raw: jax.Array, impl: str) -> jax.Array:
    """The typed key of generator ``impl`` from a raw (2,) uint32 key (or a batch of them)."""
    key: jax.Array = jax.random.wrap_key_data(raw, impl=impl)
    return key


def raw_key(key: jax.Array) -> jax.Array:
    """The raw uint32 words of a typed key, as stored in engine states."""
    return jax.random.key_data(key)


_PHILOX_M = (np.uint64(0xD2511F53), np.uint64(0xCD9E8D57))
_PHILOX_W = (np.uint32(0x9E3779B9), np.uint32(0xBB67AE85))
_ONE_BITS = np.uint64(0x3FF0000000000000)


def philox4x32(
    key: tuple[jax.Array, jax.Array], ctr: tuple[jax.Array | int, ...]
) -> tuple[jax.Array, ...]:
    """Philox4x32-10 (Random123) of the four uint32 counter words ``ctr`` under the two key
    words: four uint32 words, elementwise over broadcast shapes.

    The same function as JAX's ``philox4x32`` implementation, written with 64-bit products
    instead of its ``mulhi`` primitive: it lowers everywhere (``mulhi`` does not lower under
    ``shard_map`` in jax 0.10) and vectorizes on a CPU.
    """
    k0, k1 = (jnp.asarray(k, jnp.uint32) for k in key)
    x0, x1, x2, x3 = (jnp.asarray(c, jnp.uint32) for c in ctr)
    for r in range(10):
        if r:
            k0, k1 = k0 + _PHILOX_W[0], k1 + _PHILOX_W[1]
        p0 = x0.astype(jnp.uint64) * _PHILOX_M[0]
        p1 = x2.astype(jnp.uint64) * _PHILOX_M[1]
        hi0, lo0 = (p0 >> np.uint64(32)).astype(jnp.uint32), p0.astype(jnp.uint32)
        hi1, lo1 = (p1 >> np.uint64(32)).astype(jnp.uint32), p1.astype(jnp.uint32)
        x0, x1, x2, x3 = hi1 ^ x1 ^ k0, lo1, hi0 ^ x3 ^ k1, lo0
    return x0, x1, x2, x3


def _unit_f64(hi: jax.Array, lo: jax.Array) -> jax.Array:
    """A float64 uniform on [0, 1) from two uint32 words (the top 52 of their 64 bits)."""
    return _unit_from_bits((hi.astype(jnp.uint64) << np.uint64(32)) | lo.astype(jnp.uint64))


#: The third counter word of :func:`counter_uniforms`: keeps its streams apart from other draws
#: keyed by the same lane key (``COUNTER_TAG + 1``: the general engine's gamma key).
COUNTER_TAG = 0x7E57


def counter_uniforms(
    raw: jax.Array, counter: jax.Array, n: int, tag: int = COUNTER_TAG
) -> jax.Array:
    """``n`` float64 uniforms on [0, 1) for draw number ``counter`` of the stream keyed by the raw
    (2,) uint32 key ``raw``: Philox4x32-10 of the counters ``(counter, j, tag, 0)``, two uniforms
    from each ``j``. A pure function of (key, counter): a lane's numbers never depend on what
    was drawn before or on the rest of the batch, and nothing has to be split or stored."""
    blocks = (n + 1) // 2
    j = jnp.arange(blocks, dtype=jnp.uint32)
    c = jnp.broadcast_to(jnp.asarray(counter).astype(jnp.uint32), (blocks,))
    w = philox4x32((raw[0], raw[1]), (c, j, jnp.full_like(j, tag), jnp.zeros_like(j)))
    u = jnp.stack([_unit_f64(w[0], w[1]), _unit_f64(w[2], w[3])], axis=1)
    return u.reshape(-1)[:n]


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix64(z: jax.Array) -> jax.Array:
    """SplitMix64's output function (Stafford's "variant 13" finalizer) on uint64 words."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def uniform(key: jax.Array, shape: tuple[int, ...], block: jax.Array | int = 0) -> jax.Array:
    """Float64 uniforms on [0, 1) for a large array: SplitMix64 (Steele, Lea & Flood, OOPSLA
    2014; the generator of Java's ``SplittableRandom``; passes TestU01's BigCrush) from a seed
    hashed out of ``key``. Number ``i`` is ``mix64(seed + (i + 1) * golden)``: two 64-bit
    products per number, against Philox's ten rounds for two, so 0.8 instead of 4.5 ns of CPU a
    number on this machine (a serial chunk draws ten per part). Each key's stream starts at its
    own hashed point of the 2^64 sequence. ``block`` ``b`` (a traced integer too) gives the
    stream's numbers ``b * size`` onwards instead: consecutive blocks of one key's stream, for a
    loop that needs fresh numbers each round without deriving a key for it.
    """
    size = math.prod(shape)
    first = jnp.asarray(block).astype(jnp.uint64) * np.uint64(size) + np.uint64(1)
    bits = _mix64(stream_seed(key) + (jnp.arange(size, dtype=jnp.uint64) + first) * _GOLDEN)
    return _unit_from_bits(bits).reshape(shape)


def uniform_lanes(
    keys: jax.Array, rows: int, cols: int, first_row: jax.Array | int = 0
) -> jax.Array:
    """:func:`uniform` of shape ``(rows, cols)`` for each of the (V,) ``keys``, laid out as
    ``(cols, rows, V)``: ``out[c, r, v] == uniform(keys[v], (R, cols))[first_row[v] + r, c]``
    for any ``R`` long enough, the same numbers drawn straight into the layout a batched
    consumer reads (no transpose). ``first_row`` (an int or a (V,) array) picks up a stream
    where an earlier call left it, so that a lane's numbers do not depend on how its rows are
    split into calls."""
    row = jnp.asarray(first_row).astype(jnp.uint64) + jnp.arange(rows, dtype=jnp.uint64)[:, None]
    idx = row[None] * np.uint64(cols) + jnp.arange(cols, dtype=jnp.uint64)[:, None, None]
    return uniform_at(keys, idx)


def uniform_at(keys: jax.Array, index: jax.Array) -> jax.Array:
    """Number ``index`` (uint64, lanes last: (..., V)) of the :func:`uniform` stream of each of
    the (V,) ``keys``: a counter-based generator read at any position."""
    bits = _mix64(stream_seed(keys) + (index.astype(jnp.uint64) + np.uint64(1)) * _GOLDEN)
    return _unit_from_bits(bits)


def stream_seed(key: jax.Array) -> jax.Array:
    """The SplitMix64 starting point of each key (any batch shape): its two words, hashed. (The
    native kernels take these and draw :func:`uniform_at`'s numbers themselves.)"""
    w = jax.random.key_data(key).astype(jnp.uint64)
    return _mix64((w[..., 0] << np.uint64(32)) | w[..., 1])


def _unit_from_bits(bits: jax.Array) -> jax.Array:
    """A float64 uniform on [0, 1) from the top 52 bits of each uint64 word (made a float in
    [1, 2) by setting the exponent, then shifted down: every value exact)."""
    one_two = jax.lax.bitcast_convert_type((bits >> np.uint64(12)) | _ONE_BITS, jnp.float64)
    return one_two - 1.0


# fdlibm's e_log.c (Sun Microsystems, 1993), the logarithm of most C libraries.
_LN2_HI, _LN2_LO = 6.93147180369123816490e-01, 1.90821492927058770002e-10
_LG = (6.666666666666735130e-01, 3.999999999940941908e-01, 2.857142874366239149e-01,
       2.222219843214978396e-01, 1.818357216161805012e-01, 1.531383769920937332e-01,
       1.479819860511658591e-01)  # fmt: skip
_SMALLEST_NORMAL = 2.2250738585072014e-308
_HI_MANTISSA = np.uint32(0x000FFFFF)


def log(x: jax.Array) -> jax.Array:
    """The natural logarithm of float64 ``x``: fdlibm's algorithm (within 1 ulp, like
    ``jnp.log``), written in elementwise operations that XLA:CPU vectorizes.

    ``jnp.log`` on float64 is a scalar library call per element on XLA:CPU: 3.4-4.1 ns of CPU a
    number here, against 1.7 ns for this one, and every exponential, lognormal and gamma time
    takes a logarithm. ``x`` is split into ``2^k m`` with ``m`` in [sqrt(2)/2, sqrt(2)), and
    ``log m`` comes from fdlibm's polynomial in ``s = (m - 1)/(m + 1)``. Zero gives ``-inf``,
    negatives ``nan``, ``inf`` itself; subnormal inputs are scaled up first (XLA:CPU flushes them
    to zero before they get here, as it does for ``jnp.log``).
    """
    x = jnp.asarray(x, jnp.float64)
    sub = x < _SMALLEST_NORMAL
    bits = jax.lax.bitcast_convert_type(jnp.where(sub, x * 2.0**54, x), jnp.uint64)
    hx = (bits >> np.uint64(32)).astype(jnp.uint32)
    # fdlibm's trick: adding 0x95f64 carries into bit 20 exactly when the mantissa is at least
    # sqrt(2), and that bit then halves m (exponent 0x3fe instead of 0x3ff) and raises k
    i = ((hx & _HI_MANTISSA) + np.uint32(0x95F64)) & np.uint32(0x100000)
    k = (hx >> np.uint32(20)).astype(jnp.int32) - 1023 + (i >> np.uint32(20)).astype(jnp.int32)
    k = k - jnp.where(sub, 54, 0)
    hi = (hx & _HI_MANTISSA) | (i ^ np.uint32(0x3FF00000))
    low = bits & np.uint64(0xFFFFFFFF)
    m = jax.lax.bitcast_convert_type((hi.astype(jnp.uint64) << np.uint64(32)) | low, jnp.float64)
    f = m - 1.0
    s = f / (2.0 + f)
    z = s * s
    w = z * z
    r = z * (_LG[0] + w * (_LG[2] + w * (_LG[4] + w * _LG[6]))) + w * (
        _LG[1] + w * (_LG[3] + w * _LG[5])
    )
    hfsq = 0.5 * f * f
    dk = k.astype(jnp.float64)
    out = dk * _LN2_HI - ((hfsq - (s * (hfsq + r) + dk * _LN2_LO)) - f)
    out = jnp.where(x == 0.0, -jnp.inf, out)
    out = jnp.where(x == jnp.inf, jnp.inf, out)
    return jnp.where(x < 0.0, jnp.nan, jnp.where(jnp.isnan(x), x, out))


# fdlibm's e_exp.c (Sun Microsystems, 1993): the reduction's constants and the polynomial.
_INVLN2 = 1.44269504088896338700e00
_EXP_P = (1.66666666666666019037e-01, -2.77777777770155933842e-03, 6.61375632143793436117e-05,
          -1.65339022054652515390e-06, 4.13813679705723846039e-08)  # fmt: skip
_EXP_OVER, _EXP_UNDER = 7.09782712893383973096e02, -7.45133219101941108420e02


def exp(x: jax.Array) -> jax.Array:
    """``e ** x`` of float64 ``x``: fdlibm's algorithm (within 1 ulp, like ``jnp.exp``), written
    in elementwise operations that XLA:CPU vectorizes and the native kernel
    (:mod:`physics.process.native`) repeats operation for operation.

    ``x = k ln2 + r`` with ``|r| <= ln2/2`` (``k ln2`` in two parts, the first exact), ``e^r``
    from fdlibm's rational approximation, then ``2^k`` applied as two exact powers of two (no
    ``ldexp``). Past the overflow threshold ``inf``, below the underflow one ``0``, ``nan``
    itself; results that would be subnormal may come out as zero (XLA:CPU flushes them).
    """
    x = jnp.asarray(x, jnp.float64)
    k = jnp.trunc(x * _INVLN2 + jnp.where(x < 0.0, -0.5, 0.5))
    k = jnp.clip(k, -1100.0, 1100.0)  # past either threshold anyway; keeps 2^k representable
    hi = x - k * _LN2_HI  # exact: _LN2_HI has 32 trailing zero bits
    lo = k * _LN2_LO
    r = hi - lo
    t = r * r
    c = r - t * _horner(_EXP_P[::-1], t)
    y = 1.0 - ((lo - (r * c) / (2.0 - c)) - hi)
    ki = k.astype(jnp.int64)
    half = ki >> 1  # 2^k as 2^half * 2^(k - half), each a normal number
    s1 = jax.lax.bitcast_convert_type((half + 1023) << 52, jnp.float64)
    s2 = jax.lax.bitcast_convert_type((ki - half + 1023) << 52, jnp.float64)
    out = y * s1 * s2
    out = jnp.where(x > _EXP_OVER, jnp.inf, jnp.where(x < _EXP_UNDER, 0.0, out))
    return jnp.where(jnp.isnan(x), x, out)


def unit_exponential(u: jax.Array) -> jax.Array:
    """Exponential variates of mean 1 from uniforms ``u`` on [0, 1): ``-log(1 - u)``, with
    ``1 - u`` exact for uniforms on the 2^-52 grid of every generator here."""
    return -log(1.0 - u)


# Wichura's AS 241 (PPND16), numerator then denominator coefficients, highest power first.
_AS241_CENTRAL = (
    (2.5090809287301226727e3, 3.3430575583588128105e4, 6.7265770927008700853e4,
     4.5921953931549871457e4, 1.3731693765509461125e4, 1.9715909503065514427e3,
     1.3314166789178437745e2, 3.3871328727963666080e0),
    (5.2264952788528545610e3, 2.8729085735721942674e4, 3.9307895800092710610e4,
     2.1213794301586595867e4, 5.3941960214247511077e3, 6.8718700749205790830e2,
     4.2313330701600911252e1, 1.0),
)  # fmt: skip
_AS241_NEAR = (
    (7.74545014278341407640e-4, 2.27238449892691845833e-2, 2.41780725177450611770e-1,
     1.27045825245236838258e0, 3.64784832476320460504e0, 5.76949722146069140550e0,
     4.63033784615654529590e0, 1.42343711074968357734e0),
    (1.05075007164441684324e-9, 5.47593808499534494600e-4, 1.51986665636164571966e-2,
     1.48103976427480074590e-1, 6.89767334985100004550e-1, 1.67638483018380384940e0,
     2.05319162663775882187e0, 1.0),
)  # fmt: skip
_AS241_FAR = (
    (2.01033439929228813265e-7, 2.71155556874348757815e-5, 1.24266094738807843860e-3,
     2.65321895265761230930e-2, 2.96560571828504891230e-1, 1.78482653991729133580e0,
     5.46378491116411436990e0, 6.65790464350110377720e0),
    (2.04426310338993978564e-15, 1.42151175831644588870e-7, 1.84631831751005468180e-5,
     7.86869131145613259100e-4, 1.48753612908506148525e-2, 1.36929880922735805310e-1,
     5.99832206555887937690e-1, 1.0),
)  # fmt: skip


def _horner(coef: tuple[float, ...] | tuple[jax.Array, ...], x: jax.Array) -> jax.Array:
    out = jnp.broadcast_to(jnp.asarray(coef[0], x.dtype), x.shape)
    for c in coef[1:]:
        out = out * x + c
    return out


def normal_ppf(p: jax.Array) -> jax.Array:
    """The standard normal quantile of ``p`` in (0, 1): Wichura's AS 241 (Applied Statistics
    37(3), 1988; the algorithm of R's ``qnorm`` and Python's ``statistics.NormalDist``), relative
    error about 1e-16.

    Written for vector units: one ``log`` and one ``sqrt`` for every element, the tail's two
    coefficient sets chosen by a select, every branch a rational function. On this CPU 7.4
    instead of 11.1 ns a number against ``jax.scipy.special.ndtri`` (Cephes: two logs and three
    rational functions), which every lognormal time and gamma proposal pays for.
    """
    q = p - 0.5
    r = 0.180625 - q * q
    central = q * _horner(_AS241_CENTRAL[0], r) / _horner(_AS241_CENTRAL[1], r)
    t = jnp.sqrt(-log(jnp.minimum(p, 1.0 - p)))
    near = t <= 5.0
    t = jnp.where(near, t - 1.6, t - 5.0)
    num = tuple(jnp.where(near, a, b) for a, b in zip(_AS241_NEAR[0], _AS241_FAR[0], strict=True))
    den = tuple(jnp.where(near, a, b) for a, b in zip(_AS241_NEAR[1], _AS241_FAR[1], strict=True))
    tail = _horner(num, t) / _horner(den, t)
    return jnp.where(jnp.abs(q) <= 0.425, central, jnp.where(q < 0.0, -tail, tail))


def lognormal_params(mean: jax.Array, cv: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``mu`` and ``sigma`` of the normal whose exponential has this ``mean`` and ``cv``
    (the native draws kernel takes them as they are computed here)."""
    s2 = jnp.log1p(cv * cv)
    return jnp.log(mean) - s2 / 2, jnp.sqrt(s2)


def gamma_constants(shape: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Whether :func:`gamma` boosts ``shape`` (below 1), and Marsaglia and Tsang's ``d`` and
    ``c`` for it (the native draws kernel takes them as they are computed here)."""
    boost = shape < 1.0
    d = jnp.where(boost, shape + 1.0, shape) - 1.0 / 3.0
    return boost, d, 1.0 / jnp.sqrt(9.0 * d)


def sample(
    kind: DistKind,
    u: jax.Array,
    key: jax.Array,
    mean: jax.Array,
    cv: jax.Array,
    low: jax.Array,
    high: jax.Array,
    values: jax.Array,
    nvalues: jax.Array,
    start: jax.Array | None = None,
) -> jax.Array:
    """Draw times of one distribution family from uniforms ``u`` (inverse CDF where closed);
    gamma draws its own numbers from ``key`` (``start``: see :func:`gamma`)."""
    u = jnp.clip(u, 1e-12, 1.0 - 1e-12)
    match kind:
        case DistKind.DETERMINISTIC:
            return jnp.broadcast_to(mean, u.shape)
        case DistKind.EXPONENTIAL:
            return mean * unit_exponential(u)
        case DistKind.LOGNORMAL:
            mu, sigma = lognormal_params(mean, cv)
            return exp(mu + sigma * normal_ppf(u))
        case DistKind.GAMMA:
            cv2 = cv * cv
            return gamma(key, 1.0 / cv2, u.shape, start, inv_shape=cv2) * mean * cv * cv
        case DistKind.UNIFORM:
            return low + (high - low) * u
        case DistKind.EMPIRICAL:
            k = jnp.minimum((u * nvalues).astype(jnp.int32), nvalues - 1)
            if values.ndim == 2:  # (V, n_values) per lane, ``u`` (n, V): lanes last
                return jnp.take_along_axis(values.T, k, axis=0)
            return values[k]
    raise AssertionError(kind)  # pragma: no cover


#: Up to this many variates, the gamma sampler draws two proposals up front, and each round
#: of its fallback loop gathers the rejected variates (under 5% of proposals for every shape)
#: into slots that get fresh proposals (one event's draws in the general engine).
GAMMA_RETRY_SLOTS = 8
#: Larger arrays: variates per group of the fallback loop; each round, the first rejected
#: variate of each group gets a fresh proposal (:func:`_retry_by_group`).
GAMMA_GROUP = 16


def _gamma_uniforms(key: jax.Array, shape: tuple[int, ...], bulk: bool) -> jax.Array:
    """The gamma sampler's uniforms: SplitMix64 (:func:`uniform`, cheaper per number) for a large
    array (``bulk``), the key's own generator for a few variates (one event's draws in the
    general engine)."""
    if bulk:
        return uniform(key, shape)
    return jax.random.uniform(key, shape, dtype=jnp.float64)


def _retry_by_group(
    propose: Callable[[jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array]],
    uniforms: Callable[[jax.Array, int], jax.Array],
    d: jax.Array,
    c: jax.Array,
    val: jax.Array,
    got: jax.Array,
) -> jax.Array:
    """The gamma sampler's fallback loop for a large array: the variates in groups of
    ``GAMMA_GROUP``, and each round the first rejected variate of each group takes a fresh
    proposal (``uniforms(i, groups)``, (2, 1, groups), in round ``i``). A round is a few
    elementwise and reduce operations over the array, with no compaction (``nonzero`` costs a
    prefix sum and a scatter); with under 5% of proposals rejected, a few rounds end the loop.
    Each variate still takes the first accepted of its own i.i.d. proposals: exact."""
    n, g = val.shape[0], GAMMA_GROUP
    groups = -(-n // g)

    def grid(x: jax.Array, fill: float | bool) -> jax.Array:
        return jnp.pad(x, (0, groups * g - n), constant_values=fill).reshape(groups, g)

    d2, c2, val2, got2 = grid(d, 1.0), grid(c, 1.0), grid(val, 0.0), grid(got, True)
    pos = jnp.arange(g)[None, :]

    def more(st: tuple[jax.Array, jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array, jax.Array]:
        i, val, got = st
        first = jnp.argmax(~got, axis=1)[:, None]  # (groups, 1); 0 where none is left
        hit = (pos == first) & ~got
        dd = jnp.take_along_axis(d2, first, axis=1)[:, 0]
        cc = jnp.take_along_axis(c2, first, axis=1)[:, 0]
        new, ok = propose(uniforms(i, groups), dd, cc)
        return i + 1, jnp.where(hit, new[:, None], val), jnp.where(hit, ok[:, None], got)

    _, val2, _ = jax.lax.while_loop(
        lambda st: ~jnp.all(st[2]), more, (jnp.asarray(0, jnp.int32), val2, got2)
    )
    return val2.reshape(-1)[:n]


def gamma(
    key: jax.Array,
    shape: jax.Array,
    size: tuple[int, ...],
    start: jax.Array | None = None,
    inv_shape: jax.Array | None = None,
) -> jax.Array:
    """Standard gamma variates (scale 1) of ``shape`` > 0, float64, exactly distributed.

    Marsaglia & Tsang (ACM TOMS 26(3), 2000), the method of ``jax.random.gamma``, is a rejection
    sampler: for ``a = shape >= 1``, ``d = a - 1/3``, ``c = 1/sqrt(9d)``, a standard normal ``x``
    and a uniform ``u``, it returns ``d (1 + c x)^3`` when ``1 + c x > 0`` and
    ``log u < x^2/2 + d - d v + d log v`` (``v = (1 + c x)^3``). Accepting the first success of an
    i.i.d. sequence of proposals is exact whatever the batching, so instead of one loop per
    variate (JAX's, whose per-element key splits were a third of a serial chunk) every variate
    gets one proposal at once from one key (two for arrays of at most ``GAMMA_RETRY_SLOTS``); the
    rejected ones (acceptance is above 95% for every ``a >= 1``) get fresh proposals in a loop
    until none is left: gathered into slots for a few variates, one per group of
    ``GAMMA_GROUP`` and round for many (:func:`_retry_by_group`). Shapes below 1 use
    ``Gamma(a) = Gamma(a + 1) U^(1/a)``.

    ``start`` (a traced integer) numbers the variates ``start .. start + n - 1`` of a longer
    sequence drawn in pieces: their uniforms are then read from counter-based streams at those
    numbers (a retry from its group's number and the round), so the pieces give the same
    variates however the sequence is cut, as long as every piece holds whole groups of
    ``GAMMA_GROUP`` (``n`` and ``start`` multiples of it).

    ``inv_shape``, where the caller has it (``1 / shape``; :func:`sample` passes ``cv^2``), makes
    the boost's exponent ``log(U) * inv_shape`` instead of ``log(U) / shape``: an explicit product,
    where XLA rewrites a division by a ``1 / cv^2`` into a product with ``cv^2`` in some fusions
    and not in others (the native kernels repeat the product).
    """
    size = tuple(size)
    n = math.prod(size)
    shape = jnp.broadcast_to(shape, size).ravel()
    boost, d, c = gamma_constants(shape)

    def propose(u: jax.Array, d: jax.Array, c: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The first accepted of ``m`` proposals per variate (its value ``d v``), and whether
        there was one, from uniforms ``u`` (2, m, *variates)."""
        m = u.shape[1]
        x = normal_ppf(jnp.clip(u[0], 1e-300, 1.0))  # standard normal (u = 0 as 1e-300)
        v = (1.0 + c * x) ** 3
        ok = (v > 0) & (log(u[1]) < 0.5 * x * x + d - d * v + d * log(jnp.where(v > 0, v, 1.0)))
        val, got = d * v[m - 1], ok[m - 1]
        for i in reversed(range(m - 1)):  # the first success wins
            val, got = jnp.where(ok[i], d * v[i], val), got | ok[i]
        return val, got

    k_first, k_more, k_boost = jax.random.split(key, 3)
    if start is not None:
        if n % GAMMA_GROUP:
            raise ValueError(f"gamma: {n} variates are not whole groups of {GAMMA_GROUP}")
        at = jnp.asarray(start).astype(jnp.uint64) + jnp.arange(n, dtype=jnp.uint64)
        pair = jnp.arange(2, dtype=jnp.uint64)[:, None, None]
        val, got = propose(uniform_at(k_first, 2 * at[None, None] + pair), d, c)

        def by_number(i: jax.Array, groups: int) -> jax.Array:
            group = jnp.asarray(start).astype(jnp.uint64) // np.uint64(GAMMA_GROUP)
            number = group + jnp.arange(groups, dtype=jnp.uint64)
            first = i.astype(jnp.uint64) << np.uint64(40)
            return uniform_at(k_more, first + 2 * number[None, None] + pair)

        val = _retry_by_group(propose, by_number, d, c, val, got)
        ub = uniform_at(k_boost, at)
    else:
        few = n <= GAMMA_RETRY_SLOTS
        # A few variates (one event's draws in the general engine) get two proposals up front,
        # so that a batch of them rarely needs a round of the loop at all.
        val, got = propose(_gamma_uniforms(k_first, (2, 2 if few else 1, n), bulk=not few), d, c)
        if few:

            def more(
                st: tuple[jax.Array, jax.Array, jax.Array],
            ) -> tuple[jax.Array, jax.Array, jax.Array]:
                i, val, got = st
                idx = jnp.nonzero(~got, size=n, fill_value=n)[0]  # n: an empty slot, dropped
                at = jnp.minimum(idx, n - 1)
                u = _gamma_uniforms(jax.random.fold_in(k_more, i), (2, 1, n), bulk=False)
                new, ok = propose(u, d[at], c[at])
                return i + 1, val.at[idx].set(new, mode="drop"), got.at[idx].set(ok, mode="drop")

            _, val, _ = jax.lax.while_loop(
                lambda st: ~jnp.all(st[2]), more, (jnp.asarray(0, jnp.int32), val, got)
            )
        else:
            val = _retry_by_group(
                propose, lambda i, g: uniform(k_more, (2, 1, g), block=i), d, c, val, got
            )
        ub = _gamma_uniforms(k_boost, (n,), bulk=not few)
    if inv_shape is None:
        expo = log(1.0 - ub) / shape
    else:
        expo = log(1.0 - ub) * jnp.broadcast_to(inv_shape, size).ravel()
    out = jnp.where(boost, val * exp(expo), val)
    return out.reshape(size)
