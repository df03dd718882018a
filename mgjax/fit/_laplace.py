"""The Laplace core: standard errors and 95 % intervals of an optimum from its Fisher
information, in one jnp function used by `mgjax.fit.laplace` (one subject, concrete arrays)
and by the batch runner (inside its jitted, vmapped round program)."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from ._problem import AbstractFitProblem

#: Standard-normal 97.5 % quantile: 95 % intervals.
Z95 = 1.959963984540054
#: Relative SE (of log θ for positive quantities, else in the optimisation coordinate) above
#: which an estimate is flagged as not identifiable (±50 % at one SE).
SLOPPY_SE = 0.5
#: Eigenvalues of the information below this fraction of the largest count as unresolved.
RESOLUTION = 1e-13
#: Loading above which a parameter takes part in an unresolved direction (its SE is then ∞).
LOADING = 1e-3
#: Half-width (in SEs of u) standing in for an infinite SE when mapping an interval.
UNBOUNDED_WIDTH = 50.0


class LaplaceCore(NamedTuple):
    """The Laplace approximation N(û, F⁻¹) at an optimum û, in optimisation coordinates u
    and in physical values θ."""

    eigenvalues: Float[Array, " p"]  # of F, ascending
    eigenvectors: Float[Array, "p p"]  # columns
    resolved: Bool[Array, " p"]  # eigenvalue above RESOLUTION × the largest
    covariance: Float[Array, "p p"]  # pseudo-inverse of F over the resolved directions
    se_unconstrained: Float[Array, " p"]  # SE of u (∞ in an unresolved direction)
    values: Float[Array, " p"]  # θ̂
    se: Float[Array, " p"]  # SE of θ (delta method)
    se_relative: Float[Array, " p"]  # SE of log θ for log-scale quantities, else of u
    ci_low: Float[Array, " p"]  # θ at û ∓ z·SE, mapped through the transforms
    ci_high: Float[Array, " p"]


def laplace_core(
    problem: AbstractFitProblem,
    u: Float[Array, " p"],
    fisher: Float[Array, "p p"],
    z: float = Z95,
) -> LaplaceCore:
    """The Laplace approximation at `u` from the Fisher information `fisher` (JᵀJ in
    optimisation coordinates): its eigen-decomposition (directions with an eigenvalue below
    `RESOLUTION` × the largest are unresolved: every parameter loading on one gets an
    infinite SE), SEs of u, intervals û ± z·SE mapped through each transform (log-scale
    quantities get asymmetric intervals), SEs of θ by the delta method, and relative SEs."""
    eigenvalues, eigenvectors = jnp.linalg.eigh(fisher)
    floor = jnp.maximum(jnp.max(eigenvalues), 1e-300) * RESOLUTION
    resolved = eigenvalues > floor
    inverse = jnp.where(resolved, 1.0 / jnp.where(resolved, eigenvalues, 1.0), 0.0)
    covariance = (eigenvectors * inverse) @ eigenvectors.T
    se_u = jnp.sqrt(jnp.maximum(jnp.diag(covariance), 0.0))
    unresolved = jnp.any((jnp.abs(eigenvectors) > LOADING) & ~resolved[None, :], axis=1)
    se_u = jnp.where(unresolved, jnp.inf, se_u)
    width = z * jnp.where(jnp.isfinite(se_u), se_u, UNBOUNDED_WIDTH)
    low, high = problem.to_values(u - width), problem.to_values(u + width)
    values = problem.to_values(u)
    slopes = jnp.abs(jnp.diag(jax.jacfwd(problem.to_values)(u)))
    se = slopes * se_u
    log_scale = jnp.asarray(problem.log_scale(), dtype=bool)
    se_rel = jnp.where(log_scale, se / jnp.where(log_scale, jnp.abs(values), 1.0), se_u)
    return LaplaceCore(
        eigenvalues=eigenvalues,
        eigenvectors=eigenvectors,
        resolved=resolved,
        covariance=covariance,
        se_unconstrained=se_u,
        values=values,
        se=se,
        se_relative=se_rel,
        ci_low=jnp.minimum(low, high),
        ci_high=jnp.maximum(low, high),
    )
