"""Proposals of variants: grid, random, Latin hypercube, and NSGA-II's offspring.

Every generator works in unit coordinates ``u in [0, 1]^D`` (one per parameter) and decodes
them with :meth:`twin.design.space.Parameter.decode`, so integer lattices and choices get
uniform cells. Variants that break a constraint on parameters are never proposed. Generators are
pure functions of a ``numpy.random.Generator``: the same seed gives the same variants.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from enum import StrEnum

import numpy as np
from numpy.typing import NDArray

from scenes.errors import ConfigError
from twin.design import pareto
from twin.design.space import DesignSpace, Value

Variant = dict[str, Value]
F = NDArray[np.float64]


class Generator(StrEnum):
    GRID = "grid"
    RANDOM = "random"
    LHS = "lhs"
    NSGA2 = "nsga2"


def grid_size(space: DesignSpace) -> int:
    return math.prod(len(p.levels_of()) for p in space.parameters)


def decode(space: DesignSpace, u: F) -> Variant:
    return {p.name: p.decode(float(x)) for p, x in zip(space.parameters, u, strict=True)}


def encode(space: DesignSpace, v: Variant) -> F:
    return np.array([p.encode(v[p.name]) for p in space.parameters], dtype=np.float64)


def grid(space: DesignSpace, limit: int | None = None) -> list[Variant]:
    """Every combination of levels, first parameter slowest; constrained ones dropped.

    Raises :class:`ConfigError` when the grid has more than ``limit`` points.
    """
    size = grid_size(space)
    if limit is not None and size > limit:
        raise ConfigError(
            f"the grid has {size} points, more than --variants {limit}: raise --variants, "
            "coarsen the levels, or use --generator lhs"
        )
    names = [p.name for p in space.parameters]
    out = []
    for combo in itertools.product(*(p.levels_of() for p in space.parameters)):
        v = dict(zip(names, combo, strict=True))
        if space.feasible_inputs(v):
            out.append(v)
    return out


def _sample(
    space: DesignSpace, n: int, rng: np.random.Generator, draw: Callable[[int], F]
) -> list[Variant]:
    """``n`` feasible variants from batches of unit points; gives up after 100 batches."""
    out: list[Variant] = []
    for _ in range(100):
        for row in draw(n):
            v = decode(space, row)
            if space.feasible_inputs(v):
                out.append(v)
                if len(out) == n:
                    return out
    raise ConfigError(
        f"could not find {n} variants that meet the constraints on parameters "
        f"({len(out)} found in 100 tries): are the constraints satisfiable?"
    )


def random(space: DesignSpace, n: int, rng: np.random.Generator) -> list[Variant]:
    """``n`` variants drawn uniformly (in unit coordinates) and independently."""
    d = len(space.parameters)
    return _sample(space, n, rng, lambda k: rng.random((k, d)))


def latin_hypercube(n: int, d: int, rng: np.random.Generator) -> F:
    """``n`` points in [0, 1]^d, one in each of the n strata of every dimension."""
    cells = np.stack([rng.permutation(n) for _ in range(d)], axis=1) if d else np.zeros((n, 0))
    return (cells + rng.random((n, d))) / n


def lhs(space: DesignSpace, n: int, rng: np.random.Generator) -> list[Variant]:
    """``n`` variants on a Latin hypercube (each parameter's range cut in n strata)."""
    d = len(space.parameters)
    return _sample(space, n, rng, lambda k: latin_hypercube(k, d, rng))


# -- NSGA-II ---------------------------------------------------------------------------------------
def select_survivors(objectives: F, violation: F, n: int) -> NDArray[np.int64]:
    """NSGA-II environmental selection: the ``n`` best by (rank, -crowding)."""
    rank = pareto.non_dominated_sort(objectives, violation)
    crowd = pareto.crowding(objectives, rank)
    order = np.lexsort((-crowd, rank))
    return order[:n]


def offspring(
    space: DesignSpace,
    parents_u: F,
    objectives: F,
    violation: F,
    n: int,
    rng: np.random.Generator,
    *,
    seen: set[tuple[Value, ...]] | None = None,
) -> list[Variant]:
    """``n`` children of a population (unit coordinates ``parents_u`` (P, D)): binary
    tournaments on (rank, crowding), simulated binary crossover and polynomial mutation
    (Deb & Agrawal 1995) in unit coordinates, then decoded. Variants already evaluated (in
    ``seen``) or breaking a constraint are redrawn (up to a bound)."""
    cfg = space.nsga2
    p, d = parents_u.shape
    rank = pareto.non_dominated_sort(objectives, violation)
    crowd = pareto.crowding(objectives, rank)
    pm = cfg.mutation if cfg.mutation is not None else 1.0 / max(d, 1)
    names = [q.name for q in space.parameters]
    seen = set() if seen is None else seen

    def tournament() -> int:
        a, b = rng.integers(0, p, size=2)
        if rank[a] != rank[b]:
            return int(a if rank[a] < rank[b] else b)
        return int(a if crowd[a] >= crowd[b] else b)

    out: list[Variant] = []
    tries = 0
    while len(out) < n and tries < 50 * n:
        tries += 1
        x1, x2 = parents_u[tournament()].copy(), parents_u[tournament()].copy()
        if rng.random() < cfg.crossover:
            x1, x2 = _sbx(x1, x2, cfg.eta_crossover, rng)
        for child in (x1, x2):
            child = _mutate(child, pm, cfg.eta_mutation, rng)
            v = decode(space, child)
            key = tuple(v[k] for k in names)
            if key in seen or not space.feasible_inputs(v):
                continue
            seen.add(key)
            out.append(v)
            if len(out) == n:
                break
    return out


def _sbx(a: F, b: F, eta: float, rng: np.random.Generator) -> tuple[F, F]:
    """Simulated binary crossover, per gene with probability 1/2, bounded to [0, 1]."""
    u = rng.random(a.shape)
    beta = np.where(u <= 0.5, (2 * u) ** (1 / (eta + 1)), (1 / (2 * (1 - u))) ** (1 / (eta + 1)))
    swap = rng.random(a.shape) < 0.5
    c1 = 0.5 * ((1 + beta) * a + (1 - beta) * b)
    c2 = 0.5 * ((1 - beta) * a + (1 + beta) * b)
    c1, c2 = np.where(swap, c1, a), np.where(swap, c2, b)
    return np.clip(c1, 0.0, 1.0), np.clip(c2, 0.0, 1.0)


def _mutate(x: F, pm: float, eta: float, rng: np.random.Generator) -> F:
    """Polynomial mutation of each gene with probability ``pm``, bounded to [0, 1]."""
    u = rng.random(x.shape)
    delta = np.where(u < 0.5, (2 * u) ** (1 / (eta + 1)) - 1, 1 - (2 * (1 - u)) ** (1 / (eta + 1)))
    hit = rng.random(x.shape) < pm
    return np.where(hit, np.clip(x + delta, 0.0, 1.0), x)
