"""Uncertainty and identifiability at an optimum: Fisher information (Gauss–Newton, from the
exact forward-mode Jacobian of the weighted residuals), standard errors and 95 % intervals by
the Laplace approximation, correlations, eigen-directions of the information, profile
likelihoods."""

from __future__ import annotations

from typing import Any

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..model._parameters import set_parameters
from ._objective import FitProblem
from ._optimise import VMAPPED_METHOD, optimise

Z95 = 1.959963984540054
#: χ²₁(0.95)/2: rise of the negative log-likelihood bounding a 95 % profile interval.
PROFILE_THRESHOLD = 1.920729410347062


@eqx.filter_jit
def fisher_information(problem: FitProblem, u: Any) -> Any:
    """J^T J of the weighted residuals (data and priors) at `u`, in optimisation coordinates:
    the Fisher information of the Gaussian likelihood (Gauss–Newton approximation)."""
    problem = eqx.tree_at(lambda p: p.options.adjoint, problem, dfx.ForwardMode())
    # a problem whose residuals carry noise terms (PEtab) gives its Fisher residuals
    residuals = getattr(problem, "fisher_residuals", problem.residuals)
    jac = jax.jacfwd(residuals)(u)
    return jac.T @ jac


def _transform_slopes(problem: FitProblem, u: Any) -> np.ndarray:
    """dθ_i/du_i of each coordinate transform at u."""
    jac = jax.jacfwd(problem.to_values)(jnp.asarray(u))
    return np.abs(np.diag(np.asarray(jac)))


def laplace(
    problem: FitProblem,
    u: Any,
    *,
    z: float = Z95,
    sloppy_se: float = 0.5,
    precise_se: float = 0.05,
    max_shrinkage: float = 0.5,
) -> dict:
    """Standard errors, intervals, correlations and an identifiability report.

    In optimisation coordinates the posterior is approximated as N(û, F⁻¹). Intervals are
    û ± z·SE mapped through the transform (log-scale parameters get asymmetric intervals);
    natural-scale SEs use the delta method.

    A free quantity is flagged *not identifiable* when its relative SE (of log θ for positive
    quantities, else in the logistic coordinate) exceeds `sloppy_se` (0.5: ±50 % at one SE):
    the data leave it undetermined, alone or in combination with others (see `directions`).
    It is *precise* when the SE is below `precise_se` (5 %): then the data pin it to ~10 % at 95 %.

    With a prior (MAP), the posterior SE is bounded by the prior's: a parameter then counts
    as identified only where the data shrink its SD to at most `max_shrinkage` (half) of the
    prior SD (`shrinkage` = posterior SD / prior SD; NaN without a prior).
    """
    u = np.asarray(u, dtype=float)
    fim = np.asarray(fisher_information(problem, jnp.asarray(u)))
    eigenvalues, eigenvectors = np.linalg.eigh(fim)
    floor = max(float(eigenvalues.max()), 1e-300) * 1e-13
    resolved = eigenvalues > floor
    inverse = np.where(resolved, 1.0 / np.where(resolved, eigenvalues, 1.0), 0.0)
    covariance = (eigenvectors * inverse) @ eigenvectors.T
    se_u = np.sqrt(np.maximum(np.diag(covariance), 0.0))
    unresolved = (np.abs(eigenvectors[:, ~resolved]) > 1e-3).any(axis=1)
    se_u = np.where(unresolved, np.inf, se_u)
    width = z * np.where(np.isfinite(se_u), se_u, 50.0)
    low = np.asarray(problem.to_values(jnp.asarray(u - width)))
    high = np.asarray(problem.to_values(jnp.asarray(u + width)))
    slopes = _transform_slopes(problem, u)
    se = slopes * se_u
    # identifiability is judged on the relative scale: SE of log θ for positive quantities
    values = np.asarray(problem.to_values(jnp.asarray(u)))
    log_scale = np.asarray(problem.log_scale())
    se_rel = np.where(log_scale, se / np.where(log_scale, np.abs(values), 1.0), se_u)
    has_prior = ~np.isnan(np.asarray(problem.prior_mean))
    shrinkage = np.where(has_prior, se_rel / np.asarray(problem.prior_sd), np.nan)
    diag = np.sqrt(np.maximum(np.diag(covariance), 1e-300))
    correlation = covariance / np.outer(diag, diag)
    order = np.argsort(eigenvalues)
    names = problem.names
    directions = []
    for k in order:
        top = np.argsort(-np.abs(eigenvectors[:, k]))[:4]
        directions.append(
            dict(
                eigenvalue=float(eigenvalues[k]),
                sd=float(1.0 / np.sqrt(eigenvalues[k])) if eigenvalues[k] > floor else np.inf,
                loadings={names[i]: float(eigenvectors[i, k]) for i in top},
            )
        )
    return dict(
        values=np.asarray(problem.to_values(jnp.asarray(u))),
        se=se,
        se_unconstrained=se_u,
        ci_low=np.minimum(low, high),
        ci_high=np.maximum(low, high),
        covariance=covariance,
        correlation=correlation,
        fisher_information=fim,
        eigenvalues=eigenvalues[order],
        directions=directions,
        identifiable=np.isfinite(se_rel) & (se_rel <= sloppy_se) & ~(shrinkage > max_shrinkage),
        precise=np.isfinite(se_rel) & (se_rel <= precise_se) & ~(shrinkage > max_shrinkage),
        se_relative=se_rel,
        shrinkage=shrinkage,
    )


def fix_parameter(problem: FitProblem, name: str, value: Any) -> FitProblem:
    """The same problem with free model parameter `name` fixed at `value` (physical units)."""
    if hasattr(problem, "fix"):  # problems that know how to fix a parameter (PEtab)
        return problem.fix(name, value)
    k = problem.free.index(name)
    keep = [i for i in range(len(problem.names)) if i != k]
    idx = jnp.asarray(keep)
    return FitProblem(
        base_model=set_parameters(problem.base_model, {name: value}),
        experiments=problem.experiments,
        lower=problem.lower[idx],
        upper=problem.upper[idx],
        prior_mean=problem.prior_mean[idx],
        prior_sd=problem.prior_sd[idx],
        error_models=problem.error_models,
        options=problem.options,
        free=tuple(n for n in problem.free if n != name),
        transforms=tuple(t for i, t in enumerate(problem.transforms) if i != k),
        error_parameters=problem.error_parameters,
    )


def profile_likelihood(
    problem: FitProblem,
    u_hat: Any,
    name: str,
    *,
    se: float | None = None,
    span: float = 3.0,
    points: int = 9,
    method: str = VMAPPED_METHOD,
    max_steps: int = 60,
) -> dict[str, Any]:
    """The profile of the objective in model parameter `name`: on a grid of `points` values
    (±`span` SEs around the optimum in optimisation coordinates, or ±0.75 without an SE),
    every other free quantity re-optimised from the optimum — one vmapped program. The 95 %
    profile interval is where the profile rises by χ²₁(0.95)/2 = 1.92."""
    k = problem.free.index(name)
    u_hat = jnp.asarray(u_hat, dtype=jnp.float64)
    half = span * (se if se is not None and np.isfinite(se) and se > 0 else 0.25)
    grid_u = u_hat[k] + jnp.linspace(-half, half, points)
    others = jnp.asarray([i for i in range(len(problem.names)) if i != k])

    def at(value_u):
        value = problem.to_values(u_hat.at[k].set(value_u))[k]
        sub = fix_parameter(problem, name, value)
        res = optimise(sub, u_hat[others], method=method, max_steps=max_steps)
        return res.loss, res.converged, value

    objective, converged, grid = eqx.filter_jit(jax.vmap(at))(grid_u)
    objective, grid = np.asarray(objective), np.asarray(grid)
    rise = objective - float(problem.negative_log_likelihood(u_hat))
    inside = grid[rise <= PROFILE_THRESHOLD]
    return dict(
        parameter=name,
        grid=grid,
        objective=objective,
        rise=rise,
        converged=np.asarray(converged),
        interval=(float(inside.min()), float(inside.max())) if inside.size else (np.nan, np.nan),
        bounded_95=bool(rise[0] > PROFILE_THRESHOLD and rise[-1] > PROFILE_THRESHOLD),
    )
