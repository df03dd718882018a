"""`fit`: optimise (single start or multistart), then quantify uncertainty."""

from __future__ import annotations

import time

import equinox as eqx
import numpy as np

from ._multistart import multistart
from ._objective import FitProblem
from ._optimise import DEFAULT_METHOD, optimise
from ._result import FitResult
from ._uncertainty import laplace


def fit(
    problem: FitProblem,
    *,
    method: str = DEFAULT_METHOD,
    n_starts: int = 1,
    seed: int = 0,
    spread: float | None = None,
    max_steps: int = 100,
    rtol: float = 1e-8,
    atol: float = 1e-8,
    learning_rate: float = 0.05,
    subject: str = "",
) -> FitResult:
    """Fit `problem`: from its base values (`n_starts=1`) or from a Latin-hypercube multistart
    (vmapped), then Laplace standard errors, 95 % intervals, correlations and identifiability
    at the best optimum."""
    t0 = time.perf_counter()
    table = None
    if n_starts > 1:
        best, table = multistart(
            problem,
            n_starts,
            method=method,
            seed=seed,
            spread=spread,
            max_steps=max_steps,
            rtol=rtol,
            atol=atol,
            learning_rate=learning_rate,
        )
    else:
        best = eqx.filter_jit(optimise)(
            problem,
            method=method,
            max_steps=max_steps,
            rtol=rtol,
            atol=atol,
            learning_rate=learning_rate,
        )
    u = np.asarray(best.u)
    stats = laplace(problem, u)
    return FitResult(
        names=problem.names,
        estimates=stats["values"],
        se=stats["se"],
        ci_low=stats["ci_low"],
        ci_high=stats["ci_high"],
        identifiable=stats["identifiable"],
        precise=stats["precise"],
        correlation=stats["correlation"],
        loss=float(best.loss),
        history=np.asarray(best.history),
        iterations=int(best.iterations),
        converged=bool(best.converged),
        solve_success=bool(best.solve_success),
        method=method,
        seconds=time.perf_counter() - t0,
        eigenvalues=stats["eigenvalues"],
        directions=stats["directions"],
        multistart=table,
        subject=subject,
        u=u,
        shrinkage=stats["shrinkage"],
    )
