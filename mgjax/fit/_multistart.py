"""Multistart: a Latin-hypercube design of starting points within the parameter bounds, all
optimised in one vmapped program, results sorted into a waterfall."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ._optimise import (
    ATOL,
    LEARNING_RATE,
    MAX_STEPS,
    RTOL,
    VMAPPED_METHOD,
    AbstractOptimiser,
    OptimisationResult,
    make_optimiser,
)
from ._problem import AbstractFitProblem


def latin_hypercube(n: int, dims: int, rng: np.random.Generator) -> np.ndarray:
    """n points in [0, 1)^dims, one in each of n strata per dimension (McKay et al. 1979)."""
    strata = np.stack([rng.permutation(n) for _ in range(dims)], axis=1)
    return (strata + rng.random((n, dims))) / n


def starting_points(
    problem: AbstractFitProblem, n: int, *, seed: int = 0, spread: float | None = None
) -> np.ndarray:
    """n starts in optimisation coordinates. Without `spread`, each parameter is drawn within
    its plausible bounds (log-uniformly for log-scale parameters); with `spread` = f, within
    ×/÷ f of the base value. Error-model terms start within ×/÷ 2 of their initial values."""
    rng = np.random.default_rng(seed)
    unit = latin_hypercube(n, len(problem.names), rng)
    initial = np.asarray(problem.to_values(problem.initial()))
    lower, upper = np.asarray(problem.lower), np.asarray(problem.upper)
    log_scale = problem.log_scale()
    values = np.empty_like(unit)
    for i in range(len(problem.names)):
        if i >= len(problem.free):  # error-model terms: ×/÷ 2
            lo, hi = np.log(initial[i] / 2.0), np.log(initial[i] * 2.0)
        elif spread is not None and log_scale[i]:
            lo = max(np.log(initial[i] / spread), np.log(lower[i]))
            hi = min(np.log(initial[i] * spread), np.log(upper[i]))
        elif log_scale[i]:
            lo, hi = np.log(lower[i]), np.log(upper[i])
        else:  # 5 %–95 % of the range
            lo, hi = (
                lower[i] + 0.05 * (upper[i] - lower[i]),
                upper[i] - 0.05 * (upper[i] - lower[i]),
            )
        x = lo + (hi - lo) * unit[:, i]
        values[:, i] = np.exp(x) if (log_scale[i] or i >= len(problem.free)) else x
    return np.stack([np.asarray(problem.from_values(v)) for v in values])


@eqx.filter_jit
def _optimise_many(problem, starts, optimiser):
    return jax.vmap(lambda u0: optimiser.minimise(problem, u0))(starts)


def multistart(
    problem: AbstractFitProblem,
    n_starts: int = 20,
    *,
    method: str | AbstractOptimiser = VMAPPED_METHOD,
    seed: int = 0,
    spread: float | None = None,
    max_steps: int = MAX_STEPS,
    rtol: float = RTOL,
    atol: float = ATOL,
    learning_rate: float = LEARNING_RATE,
    starts: Any = None,
) -> tuple[OptimisationResult, pd.DataFrame]:
    """Optimise from `n_starts` Latin-hypercube starts (or the given `starts`), vmapped, with
    the optimiser `method` (a name with these settings, or an `AbstractOptimiser`).

    **Returns:** (the best result, a waterfall table sorted by loss: start, loss, converged,
    iterations, solve_success)."""
    if starts is None:
        starts = starting_points(problem, n_starts, seed=seed, spread=spread)
    starts = jnp.asarray(starts, dtype=jnp.float64)
    optimiser = make_optimiser(
        method, max_steps=max_steps, rtol=rtol, atol=atol, learning_rate=learning_rate
    )
    results = _optimise_many(problem, starts, optimiser)
    loss = np.asarray(results.loss)
    loss = np.where(np.isfinite(loss), loss, np.inf)
    table = (
        pd.DataFrame(
            dict(
                start=np.arange(len(loss)),
                loss=loss,
                converged=np.asarray(results.converged),
                iterations=np.asarray(results.iterations),
                solve_success=np.asarray(results.solve_success),
            )
        )
        .sort_values("loss", kind="stable")
        .reset_index(drop=True)
    )
    best = int(table["start"].iloc[0])
    return jax.tree.map(lambda x: x[best], results), table
