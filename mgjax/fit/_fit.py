"""`fit`: optimise (single start or multistart), then quantify uncertainty."""

from __future__ import annotations

import time

import numpy as np

from ._multistart import multistart
from ._objective import FitProblem
from ._optimise import DEFAULT_METHOD, VMAPPED_METHOD, optimise_jit
from ._result import FitResult
from ._uncertainty import laplace


def fit(
    problem: FitProblem,
    *,
    method: str | None = None,
    n_starts: int = 1,
    seed: int = 0,
    spread: float | None = None,
    max_steps: int = 500,
    rtol: float = 1e-8,
    atol: float = 1e-8,
    learning_rate: float = 0.05,
    subject: str = "",
) -> FitResult:
    """Fit `problem`: from its base values (`n_starts=1`) or from a Latin-hypercube multistart
    (vmapped), then Laplace standard errors, 95 % intervals, correlations and identifiability
    at the best optimum.

    `method` defaults to L-BFGS for one start (`DEFAULT_METHOD`, the fastest to converge on our
    problems) and to Levenberg–Marquardt for a vmapped multistart (`VMAPPED_METHOD`) unless
    error-model terms are estimated (then L-BFGS)."""
    if method is None:
        vmapped_ok = n_starts > 1 and not problem.error_parameters
        method = VMAPPED_METHOD if vmapped_ok else DEFAULT_METHOD
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
        best = optimise_jit(
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
