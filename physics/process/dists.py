"""Drawing random times from the distribution families of a line file (docs/process-semantics.md).

One definition serves both engines, so the general engine and the serial fast path can never
disagree on what ``lognormal, mean, cv`` means.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import ndtri

from scenes.spec import DistKind


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
) -> jax.Array:
    """Draw times of one distribution family from uniforms ``u`` (inverse CDF where closed)."""
    u = jnp.clip(u, 1e-12, 1.0 - 1e-12)
    match kind:
        case DistKind.DETERMINISTIC:
            return jnp.broadcast_to(mean, u.shape)
        case DistKind.EXPONENTIAL:
            return -mean * jnp.log1p(-u)
        case DistKind.LOGNORMAL:
            s2 = jnp.log1p(cv * cv)
            return jnp.exp(jnp.log(mean) - s2 / 2 + jnp.sqrt(s2) * ndtri(u))
        case DistKind.GAMMA:
            shape = 1.0 / (cv * cv)
            return jax.random.gamma(key, shape, u.shape, dtype=jnp.float64) * mean * cv * cv
        case DistKind.UNIFORM:
            return low + (high - low) * u
        case DistKind.EMPIRICAL:
            k = jnp.minimum((u * nvalues).astype(jnp.int32), nvalues - 1)
            return values[k]
    raise AssertionError(kind)  # pragma: no cover
