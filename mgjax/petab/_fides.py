"""Local fits of a PEtab problem inside its bounds with fides (Fröhlich & Sorger, PLoS Comput
Biol 2022), the bounded trust-region optimiser of pyPESTO, driven by mgjax's compiled residuals
and forward-mode Jacobian.

Many benchmark optima sit on parameter bounds (Brannmark_JBC2010's published optimum has four
of its 22 parameters there). Optimistix's Levenberg–Marquardt sees bounds only through a
transform whose Jacobian vanishes at the bound, so Gauss–Newton's curvature vanishes there
too and fits crawl towards such optima; fides keeps the bounds itself (reflective trust
region, Coleman–Li scaling) on each parameter's PEtab scale. Least-squares problems use the
Gauss–Newton Hessian JᵀJ of `PetabProblem.residuals_on_scale` (½·Σ r² = NLLH + constant), or a
structured secant update of it; others the NLLH, its gradient and a BFGS Hessian.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import numpy as np

#: fides' Hessian strategies offered here: "gauss_newton" (JᵀJ, pyPESTO's default with AMICI
#: forward sensitivities) or a structured secant correction of it for non-zero residuals.
HESSIANS = ("gauss_newton", "gnsbfgs", "tssm", "ssm", "fx")

#: `fit_start` restarts fides from its end point while a run lowers the NLLH by at least this.
RESTART_TOLERANCE = 1e-3


class LocalFit(NamedTuple):
    """One local fit: the end point on the PEtab scale, its NLLH (+∞ if its simulation
    failed), whether fides reported convergence, its iterations (all runs), fides' exit flag
    and how many times fides was restarted from its own end point."""

    scaled: np.ndarray
    nllh: float
    converged: bool
    iterations: int
    exit_flag: str
    restarts: int = 0


@functools.cache
def _compiled():
    """The compiled residuals + Jacobian and NLLH + gradient, on the PEtab scale (forward
    mode: one tangent per parameter, through the solver's forward-mode adjoint)."""
    import equinox as eqx
    import jax

    def with_value(f):
        def both(problem, scaled):
            value = f(problem, scaled)
            return value, value

        return both

    @eqx.filter_jit
    def residuals_and_jacobian(problem, scaled):
        jacobian, r = jax.jacfwd(with_value(type(problem).residuals_on_scale), 1, has_aux=True)(
            problem, scaled
        )
        return r, jacobian

    @eqx.filter_jit
    def nllh_and_gradient(problem, scaled):
        grad, value = jax.jacfwd(
            with_value(type(problem).negative_log_likelihood_on_scale), 1, has_aux=True
        )(problem, scaled)
        return value, grad

    @eqx.filter_jit
    def nllh(problem, scaled):  # the objective and whether its simulations succeeded
        return problem.objective_on_scale(scaled)

    return residuals_and_jacobian, nllh_and_gradient, nllh


def _hessian_update(hessian: str, least_squares: bool):
    import fides

    if not least_squares:
        return fides.BFGS()
    if hessian not in HESSIANS:
        raise ValueError(f"unknown Hessian strategy {hessian!r}; one of {', '.join(HESSIANS)}")
    if hessian == "gauss_newton":
        return None  # the objective returns JᵀJ itself
    structured = {"gnsbfgs": fides.GNSBFGS, "tssm": fides.TSSM, "ssm": fides.SSM, "fx": fides.FX}
    return structured[hessian]()


def compile_for(problem, scaled: Any) -> None:
    """Trace and compile the evaluations `fit_start` uses (at a point on the PEtab scale), so
    that a fit's timing is the fit's alone."""
    import jax

    residuals_and_jacobian, nllh_and_gradient, nllh = _compiled()
    scaled = np.asarray(scaled, dtype=float)
    first = residuals_and_jacobian if problem.least_squares else nllh_and_gradient
    jax.block_until_ready((first(problem, scaled), nllh(problem, scaled)))


def fit_start(
    problem,
    scaled_start: Any,
    *,
    max_steps: int = 1000,
    hessian: str = "gauss_newton",
    options: dict | None = None,
    restarts: int = 0,
    restart_tolerance: float = RESTART_TOLERANCE,
) -> LocalFit:
    """One local fit of `problem` (a `PetabProblem`) from `scaled_start` (its outer estimated
    parameters on their PEtab scale, inside the bounds) with fides.

    `options`: fides options by name (`fatol`, `frtol`, `gatol`, `xtol`, …; fides' defaults
    otherwise, as pyPESTO uses them); `max_steps`: fides iterations in all, restarts included.

    `restarts`: fides stops on its function tolerance when an accepted step lowers the NLLH
    by less than ~1e-8·|f|, which in a narrow curved valley happens far from its floor's
    minimum, with a large gradient, once the trust region has shrunk. Up to `restarts` times
    the fit is run again from its own end point (a fresh trust region) while each run lowers
    the NLLH by at least `restart_tolerance`; the lowest end point is kept."""
    x = np.asarray(scaled_start, dtype=float)
    fit = _fides_run(problem, x, max_steps, hessian, options)
    used, done = fit.iterations, 0
    while done < restarts and fit.converged and used < max_steps:
        again = _fides_run(problem, fit.scaled, max_steps - used, hessian, options)
        used, done = used + again.iterations, done + 1
        gain = fit.nllh - again.nllh
        if again.nllh < fit.nllh:
            fit = again
        if not gain >= restart_tolerance:  # also when both are +inf
            break
    return fit._replace(iterations=used, restarts=done)


def _fides_run(problem, scaled_start, max_steps: int, hessian: str, options) -> LocalFit:
    """One fides run (see `fit_start`)."""
    import logging

    import fides

    residuals_and_jacobian, nllh_and_gradient, nllh = _compiled()
    lower, upper = (np.asarray(b, dtype=float) for b in problem.bounds_on_scale())
    x0 = np.clip(np.asarray(scaled_start, dtype=float), lower, upper)
    structured = problem.least_squares and hessian != "gauss_newton"
    if structured:  # fides forms ½·rᵀr, Jᵀr and its structured Hessian itself

        def fun(x):
            r, jacobian = residuals_and_jacobian(problem, x)
            return np.asarray(r), np.asarray(jacobian)

    elif problem.least_squares:

        def fun(x):
            r, jacobian = residuals_and_jacobian(problem, x)
            r, jacobian = np.asarray(r), np.asarray(jacobian)
            return 0.5 * (r @ r), jacobian.T @ r, jacobian.T @ jacobian

    else:

        def fun(x):
            value, grad = nllh_and_gradient(problem, x)
            return float(value), np.asarray(grad)

    settings = {fides.Options.MAXITER: int(max_steps)}
    for key, value in (options or {}).items():
        settings[fides.Options(key)] = value
    optimiser = fides.Optimizer(
        fun,
        ub=upper,
        lb=lower,
        verbose=logging.ERROR,
        options=settings,
        hessian_update=_hessian_update(hessian, problem.least_squares),
        resfun=structured,
    )
    try:
        _, x, _, _ = optimiser.minimize(x0)
    except np.linalg.LinAlgError:  # a singular subproblem: keep the last accepted point
        x = optimiser.x if getattr(optimiser, "x", None) is not None else x0
    x = np.asarray(x, dtype=float)
    value, ok = nllh(problem, x)
    value = float(value) if bool(ok) and np.isfinite(float(value)) else float("inf")
    flag = optimiser.exitflag
    return LocalFit(
        scaled=x,
        nllh=value,
        converged=bool(flag.value > 0),
        iterations=int(optimiser.iteration),
        exit_flag=flag.name,
    )
