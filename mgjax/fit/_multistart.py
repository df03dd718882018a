"""Multistart: a Latin-hypercube design of starting points within the parameter bounds, all
optimised in one vmapped program, results sorted into a waterfall."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ._objective import FitProblem
from ._optimise import OptimisationResult, optimise


def latin_hypercube(n: int, dims: int, rng: np.random.Generator) -> np.ndarray:
    """n points in [0, 1)^dims, one in each of n strata per dimension (McKay et al. 1979)."""
    strata = np.stack([rng.permutation(n) for _ in range(dims)], axis=1)
    return (strata + rng.random((n, dims))) / n


def starting_points(
    problem: FitProblem, n: int, *, seed: int = 0, spread: float | None = None
) -> np.ndarray:
    """n starts in optimisation coordinates. Without `spread`, each parameter is drawn within
    its plausible bounds (log-uniformly for log-scale parameters); with `spread` = f, within
    ×/÷ f of the base value. Error-model terms start within ×/÷ 2 of their initial values."""
    rng = np.random.default_rng(seed)
    unit = latin_hypercube(n, len(problem.names), rng)
    u0 = np.asarray(problem.initial())
    lower, upper = np.asarray(problem.lower), np.asarray(problem.upper)
    out = np.empty_like(unit)
    n_model = len(problem.free)
    for i, transform in enumerate(problem.transforms):
        if i >= n_model:
            lo, hi = u0[i] - np.log(2.0), u0[i] + np.log(2.0)
        elif spread is not None and transform == "log":
            lo, hi = u0[i] - np.log(spread), u0[i] + np.log(spread)
        elif transform == "log":
            lo, hi = np.log(lower[i]), np.log(upper[i])
        else:
            lo, hi = -3.0, 3.0  # logit coordinates: 5 %–95 % of the range
        out[:, i] = lo + (hi - lo) * unit[:, i]
    return out


@eqx.filter_jit
def _optimise_many(problem, starts, method, max_steps, rtol, atol, learning_rate):
    return jax.vmap(
        lambda u0: optimise(
            problem,
            u0,
            method=method,
            max_steps=max_steps,
            rtol=rtol,
            atol=atol,
            learning_rate=learning_rate,
        )
    )(starts)


def multistart(
    problem: FitProblem,
    n_starts: int = 20,
    *,
    method: str = "levenberg_marquardt",
    seed: int = 0,
    spread: float | None = None,
    max_steps: int = 100,
    rtol: float = 1e-8,
    atol: float = 1e-8,
    learning_rate: float = 0.05,
    starts: Any = None,
) -> tuple[OptimisationResult, pd.DataFrame]:
    """Optimise from `n_starts` Latin-hypercube starts (or the given `starts`), vmapped.

    **Returns:** (the best result, a waterfall table sorted by loss: start, loss, converged,
    iterations, solve_success)."""
    if starts is None:
        starts = starting_points(problem, n_starts, seed=seed, spread=spread)
    starts = jnp.asarray(starts, dtype=jnp.float64)
    results = _optimise_many(problem, starts, method, max_steps, rtol, atol, learning_rate)
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
