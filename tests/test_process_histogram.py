"""The lead-time histogram's binning (``model.lt_bins``) against NumPy's binary search."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from physics.process.model import LT_BINS, LT_EDGES, lt_bins


def test_lt_bins_match_searchsorted_at_and_around_every_edge() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [
            10 ** rng.uniform(-4, 10, 200_000),
            LT_EDGES,
            np.nextafter(LT_EDGES, 0),
            np.nextafter(LT_EDGES, np.inf),
            [0.0, -1.0, 1e-300, np.inf, 1e300],
        ]
    )
    want = np.clip(np.searchsorted(LT_EDGES, x) - 1, 0, LT_BINS - 1)
    got = np.asarray(jax.jit(lt_bins)(jnp.asarray(x)))
    assert np.array_equal(got, want)
    assert int(lt_bins(jnp.asarray(np.nan))) == 0  # no lead time: any valid bin (masked out)
