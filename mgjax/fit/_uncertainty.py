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

from ._laplace import SLOPPY_SE, Z95, laplace_core
from ._optimise import VMAPPED_METHOD, AbstractOptimiser, make_optimiser
from ._problem import AbstractFitProblem

#: χ²₁(0.95)/2: rise of the negative log-likelihood bounding a 95 % profile interval.
PROFILE_THRESHOLD = 1.920729410347062
#: Relative SE below which an estimate counts as precise (±10 % at 95 %).
PRECISE_SE = 0.05
#: Largest posterior SD / prior SD at which a parameter with a prior counts as identified.
MAX_SHRINKAGE = 0.5


@eqx.filter_jit
def fisher_information(problem: AbstractFitProblem, u: Any) -> Any:
    """J^T J of the weighted residuals (data and priors) at `u`, in optimisation coordinates:
    the Fisher information of the Gaussian likelihood (Gauss–Newton approximation; a
    problem whose residuals carry noise terms, as PEtab's, gives its `fisher_residuals`)."""
    problem = eqx.tree_at(lambda p: p.options.adjoint, problem, dfx.ForwardMode())
    jac = jax.jacfwd(problem.fisher_residuals)(u)
    return jac.T @ jac


def _directions(core, names: tuple[str, ...]) -> list[dict]:
    """The information's eigen-directions, weakest first: eigenvalue, SD along it (∞ where
    unresolved) and the four largest loadings."""
    eigenvalues, eigenvectors = np.asarray(core.eigenvalues), np.asarray(core.eigenvectors)
    resolved = np.asarray(core.resolved)
    directions = []
    for k in np.argsort(eigenvalues):
        top = np.argsort(-np.abs(eigenvectors[:, k]))[:4]
        directions.append(
            dict(
                eigenvalue=float(eigenvalues[k]),
                sd=float(1.0 / np.sqrt(eigenvalues[k])) if resolved[k] else np.inf,
                loadings={names[i]: float(eigenvectors[i, k]) for i in top},
            )
        )
    return directions


def laplace(
    problem: AbstractFitProblem,
    u: Any,
    *,
    z: float = Z95,
    sloppy_se: float = SLOPPY_SE,
    precise_se: float = PRECISE_SE,
    max_shrinkage: float = MAX_SHRINKAGE,
) -> dict:
    """Standard errors, intervals, correlations and an identifiability report.

    In optimisation coordinates the posterior is approximated as N(û, F⁻¹). Intervals are
    û ± z·SE mapped through the transform (log-scale parameters get asymmetric intervals);
    natural-scale SEs use the delta method (`mgjax.fit._laplace.laplace_core`).

    A free quantity is flagged *not identifiable* when its relative SE (of log θ for positive
    quantities, else in the logistic coordinate) exceeds `sloppy_se` (0.5: ±50 % at one SE):
    the data leave it undetermined, alone or in combination with others (see `directions`).
    It is *precise* when the SE is below `precise_se` (5 %): then the data pin it to ~10 % at 95 %.

    With a prior (MAP), the posterior SE is bounded by the prior's: a parameter then counts
    as identified only where the data shrink its SD to at most `max_shrinkage` (half) of the
    prior SD (`shrinkage` = posterior SD / prior SD; NaN without a prior).
    """
    u = jnp.asarray(np.asarray(u, dtype=float))
    fim = fisher_information(problem, u)
    core = jax.tree.map(np.asarray, laplace_core(problem, u, fim, z))
    se_rel = core.se_relative
    has_prior = ~np.isnan(np.asarray(problem.prior_mean))
    shrinkage = np.where(has_prior, se_rel / np.asarray(problem.prior_sd), np.nan)
    covariance = core.covariance
    diag = np.sqrt(np.maximum(np.diag(covariance), 1e-300))
    informative = np.isfinite(se_rel) & ~(shrinkage > max_shrinkage)
    return dict(
        values=core.values,
        se=core.se,
        se_unconstrained=core.se_unconstrained,
        ci_low=core.ci_low,
        ci_high=core.ci_high,
        covariance=covariance,
        correlation=covariance / np.outer(diag, diag),
        fisher_information=np.asarray(fim),
        eigenvalues=np.sort(core.eigenvalues),
        directions=_directions(core, problem.names),
        identifiable=informative & (se_rel <= sloppy_se),
        precise=informative & (se_rel <= precise_se),
        se_relative=se_rel,
        shrinkage=shrinkage,
    )


def fix_parameter(problem: AbstractFitProblem, name: str, value: Any) -> AbstractFitProblem:
    """The same problem with free model parameter `name` fixed at `value` (physical units)."""
    return problem.fix(name, value)


def profile_likelihood(
    problem: AbstractFitProblem,
    u_hat: Any,
    name: str,
    *,
    se: float | None = None,
    span: float = 3.0,
    points: int = 9,
    method: str | AbstractOptimiser = VMAPPED_METHOD,
    max_steps: int = 60,
) -> dict[str, Any]:
    """The profile of the objective in model parameter `name`: on a grid of `points` values
    (±`span` SEs around the optimum in optimisation coordinates, or ±0.75 without an SE),
    every other free quantity re-optimised from the optimum — one vmapped program. The 95 %
    profile interval is where the profile rises by χ²₁(0.95)/2 = 1.92. `method`: an
    optimiser name (with `max_steps`) or an `AbstractOptimiser`."""
    optimiser = make_optimiser(method, max_steps=max_steps)
    k = problem.free.index(name)
    u_hat = jnp.asarray(u_hat, dtype=jnp.float64)
    half = span * (se if se is not None and np.isfinite(se) and se > 0 else 0.25)
    grid_u = u_hat[k] + jnp.linspace(-half, half, points)
    others = jnp.asarray([i for i in range(len(problem.names)) if i != k])

    def at(value_u):
        value = problem.to_values(u_hat.at[k].set(value_u))[k]
        sub = fix_parameter(problem, name, value)
        res = optimiser.minimise(sub, u_hat[others])
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
