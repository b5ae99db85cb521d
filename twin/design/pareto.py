"""Non-dominated sorting and crowding distance (Deb et al., NSGA-II, IEEE TEC 6(2), 2002).

Objectives are minimized: callers negate the ones they maximize. Infeasible points (a KPI
constraint broken) are dominated by every feasible one and are sorted among themselves by their
constraint violation only, as in Deb's constrained domination.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

F = NDArray[np.float64]


def dominates(a: F, b: F) -> bool:
    """``a`` is no worse than ``b`` in every objective and better in one (minimizing)."""
    return bool(np.all(a <= b) and np.any(a < b))


def non_dominated_sort(objectives: F, violation: F | None = None) -> NDArray[np.int64]:
    """The Pareto rank of each row of ``objectives`` (N, M): 0 for the non-dominated front,
    1 for the front once rank 0 is removed, and so on. NaN objectives count as +inf.

    ``violation`` (N,) >= 0: how far each point breaks its constraints (0: feasible).
    """
    f = np.where(np.isnan(objectives), np.inf, np.asarray(objectives, dtype=np.float64))
    n = f.shape[0]
    viol = np.zeros(n) if violation is None else np.asarray(violation, dtype=np.float64)
    feas = viol <= 0
    # dom[i, j]: i constrained-dominates j
    le = np.all(f[:, None, :] <= f[None, :, :], axis=2)
    lt = np.any(f[:, None, :] < f[None, :, :], axis=2)
    pareto = le & lt
    dom = (feas[:, None] & feas[None, :] & pareto) | (feas[:, None] & ~feas[None, :])
    dom |= ~feas[:, None] & ~feas[None, :] & (viol[:, None] < viol[None, :])
    count = dom.sum(axis=0)  # how many points dominate each point
    rank = np.full(n, -1, dtype=np.int64)
    current = np.flatnonzero(count == 0)
    r = 0
    while current.size:
        rank[current] = r
        count = count - dom[current].sum(axis=0)
        count[rank >= 0] = -1
        current = np.flatnonzero(count == 0)
        r += 1
    return rank


def crowding_distance(objectives: F) -> F:
    """Crowding distance of each row within one front (N, M): the sum over objectives of the
    normalized gap between its neighbours; the extremes of each objective get +inf."""
    f = np.where(np.isnan(objectives), np.inf, np.asarray(objectives, dtype=np.float64))
    n, m = f.shape
    d = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for k in range(m):
        order = np.argsort(f[:, k], kind="stable")
        col = f[order, k]
        span = col[-1] - col[0]
        d[order[0]] = d[order[-1]] = np.inf
        if not np.isfinite(span) or span <= 0:
            continue
        d[order[1:-1]] += (col[2:] - col[:-2]) / span
    return d


def crowding(objectives: F, rank: NDArray[np.int64]) -> F:
    """Crowding distance of every point within its own front."""
    out = np.zeros(len(rank))
    for r in np.unique(rank):
        idx = np.flatnonzero(rank == r)
        out[idx] = crowding_distance(objectives[idx])
    return out


def front(objectives: F, violation: F | None = None) -> NDArray[np.int64]:
    """Indices of the non-dominated points (rank 0)."""
    return np.flatnonzero(non_dominated_sort(objectives, violation) == 0)
