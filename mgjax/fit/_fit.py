"""`fit`: optimise (single start or multistart), then quantify uncertainty."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import numpy as np

from ._multistart import multistart
from ._optimise import (
    ATOL,
    DEFAULT_METHOD,
    LEARNING_RATE,
    RTOL,
    VMAPPED_METHOD,
    AbstractOptimiser,
    OptimisationResult,
    make_optimiser,
    optimise_jit,
)
from ._problem import AbstractFitProblem
from ._result import FitResult
from ._uncertainty import laplace


def default_method(problem: AbstractFitProblem, n_starts: int) -> str:
    """L-BFGS for one start (`DEFAULT_METHOD`); Levenberg–Marquardt for a vmapped multistart
    (`VMAPPED_METHOD`) unless error-model terms are estimated (then L-BFGS)."""
    vmapped_ok = n_starts > 1 and not problem.error_parameters
    return VMAPPED_METHOD if vmapped_ok else DEFAULT_METHOD


def _result(problem, best: OptimisationResult, stats: dict, **extra) -> FitResult:
    """A `FitResult` from the best optimisation and its Laplace report."""
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
        eigenvalues=stats["eigenvalues"],
        directions=stats["directions"],
        shrinkage=stats["shrinkage"],
        **extra,
    )


def _reporter(progress: bool | Callable[[str], None], subject: str) -> Callable[[str], None]:
    """Where `fit` reports its stages: nowhere, stderr, or the caller's callable."""
    if callable(progress):
        return progress
    if not progress:
        return lambda line: None
    prefix = f"mgjax.fit[{subject}]" if subject else "mgjax.fit"
    return lambda line: print(f"{prefix}: {line}", file=sys.stderr, flush=True)


def fit(
    problem: AbstractFitProblem,
    *,
    method: str | AbstractOptimiser | None = None,
    n_starts: int = 1,
    seed: int = 0,
    spread: float | None = None,
    max_steps: int = 500,
    rtol: float = RTOL,
    atol: float = ATOL,
    learning_rate: float = LEARNING_RATE,
    subject: str = "",
    progress: bool | Callable[[str], None] = False,
) -> FitResult:
    """Fit `problem`: from its base values (`n_starts=1`) or from a Latin-hypercube multistart
    (vmapped), then Laplace standard errors, 95 % intervals, correlations and identifiability
    at the best optimum.

    `method`: an optimiser name (`METHODS`, with `max_steps`, `rtol`, `atol`,
    `learning_rate`) or an `AbstractOptimiser` (its own settings). It defaults to L-BFGS for
    one start (`DEFAULT_METHOD`, the fastest to converge on our problems) and to
    Levenberg–Marquardt for a vmapped multistart (`VMAPPED_METHOD`) unless error-model terms
    are estimated (then L-BFGS).

    `progress`: True prints each stage (compiling and optimising, uncertainty, done, with
    times) to stderr; a callable receives those lines instead. The optimisation is one
    compiled program, so its stages, not its iterations, are reported."""
    say = _reporter(progress, subject)
    optimiser = make_optimiser(
        default_method(problem, n_starts) if method is None else method,
        max_steps=max_steps,
        rtol=rtol,
        atol=atol,
        learning_rate=learning_rate,
    )
    t0 = time.perf_counter()
    table = None
    starts = f"{n_starts} starts, vmapped" if n_starts > 1 else "1 start"
    say(f"compiling and optimising ({optimiser.name}, {starts}; the first call compiles)")
    if n_starts > 1:
        best, table = multistart(problem, n_starts, method=optimiser, seed=seed, spread=spread)
    else:
        best = optimise_jit(problem, method=optimiser)
    u = np.asarray(best.u)
    say(
        f"optimised in {time.perf_counter() - t0:.1f} s ({int(np.max(best.iterations))} "
        f"iterations, loss {float(np.min(best.loss)):.6g}); Laplace standard errors"
    )
    stats = laplace(problem, u)
    say(f"done in {time.perf_counter() - t0:.1f} s")
    return _result(
        problem,
        best,
        stats,
        method=optimiser.name,
        seconds=time.perf_counter() - t0,
        multistart=table,
        subject=subject,
        u=u,
    )
