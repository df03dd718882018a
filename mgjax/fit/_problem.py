"""The interface every fit problem implements: the model's `FitProblem` and PEtab's
`PetabProblem`. The optimisers, the Laplace approximation, multistart and profiles use only
what is declared here.

Coordinates: `u` (unconstrained, what optimisers move) ↔ `to_values(u)` (the free quantities
in physical units, in the order of `names`).
"""

import abc
from typing import Any

import equinox as eqx
import jax.numpy as jnp
from equinox import AbstractVar
from jaxtyping import Array, Float

from ..solve._solve import SolverOptions


class AbstractFitProblem(eqx.Module):
    """A negative log-likelihood (plus priors) of free quantities in unconstrained
    coordinates, with weighted residuals for Gauss–Newton methods.

    Subclasses provide the fields below, the coordinate maps, `predictions` and the two
    evaluations from predictions (`residuals_from`, `negative_log_likelihood_from`), and
    `fix`; the evaluations from `u` are derived here from those."""

    #: bounds of the free quantities (physical units)
    lower: AbstractVar[Float[Array, " p"]]
    upper: AbstractVar[Float[Array, " p"]]
    #: log of a log-normal prior's median per free quantity (NaN: no such prior) and its
    #: log geometric SD (the identifiability report's shrinkage)
    prior_mean: AbstractVar[Float[Array, " p"]]
    prior_sd: AbstractVar[Float[Array, " p"]]
    #: the solver options of every simulation (the optimisers set the adjoint they need)
    options: AbstractVar[SolverOptions]
    #: names of the free model parameters (the first `len(free)` coordinates)
    free: AbstractVar[tuple[str, ...]]
    #: estimated error-model terms, (observable, kind), after the model parameters
    error_parameters: AbstractVar[tuple]
    #: whether ½‖residuals‖² is the objective up to constants (Levenberg–Marquardt applies)
    least_squares: AbstractVar[bool]

    # --- coordinates ----------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def names(self) -> tuple[str, ...]:
        """Names of all free quantities, in coordinate order."""

    @abc.abstractmethod
    def to_values(self, u: Float[Array, " p"]) -> Float[Array, " p"]:
        """Unconstrained coordinates → physical values."""

    @abc.abstractmethod
    def from_values(self, values: Any) -> Float[Array, " p"]:
        """Physical values → unconstrained coordinates (the inverse of `to_values`)."""

    @abc.abstractmethod
    def log_scale(self) -> tuple[bool, ...]:
        """Which free quantities are positive and judged on a log scale."""

    @abc.abstractmethod
    def initial(self) -> Float[Array, " p"]:
        """The starting point (nominal values), unconstrained."""

    @abc.abstractmethod
    def fix(self, name: str, value: Any) -> "AbstractFitProblem":
        """The same problem with free model parameter `name` fixed at `value` (physical
        units): one coordinate fewer (profiles)."""

    # --- evaluation -------------------------------------------------------------------------
    @abc.abstractmethod
    def predictions(self, u: Float[Array, " p"]) -> tuple[Any, Any]:
        """(the model's predictions at u, whether every simulation succeeded)."""

    def warm_predictions(self, u: Float[Array, " p"], warm: Any) -> tuple[Any, Any, Any]:
        """(predictions, ok, a start for the next evaluation's inner search) at u, given
        `warm`, the start this returned at a nearby point (None or empty: none). By default
        there is no inner search to start: `predictions` and an empty array."""
        preds, ok = self.predictions(u)
        return preds, ok, jnp.zeros((0,))

    def start_size(self) -> int:
        """Length of the start `warm_predictions` returns (static; 0: none)."""
        return 0

    @abc.abstractmethod
    def residuals_from(self, u: Float[Array, " p"], preds: Any, ok: Any) -> Float[Array, " m"]:
        """`residuals` from already computed `predictions(u)`."""

    @abc.abstractmethod
    def negative_log_likelihood_from(self, u: Float[Array, " p"], preds: Any, ok: Any) -> Any:
        """`negative_log_likelihood` from already computed `predictions(u)`."""

    def residuals(self, u: Float[Array, " p"], args: Any = None) -> Float[Array, " m"]:
        """Weighted residuals: what Levenberg–Marquardt minimises as ½‖r‖²."""
        preds, ok = self.predictions(u)
        return self.residuals_from(u, preds, ok)

    def negative_log_likelihood(self, u: Float[Array, " p"], args: Any = None) -> Any:
        """−log p(data | θ) − log p(θ): the objective."""
        preds, ok = self.predictions(u)
        return self.negative_log_likelihood_from(u, preds, ok)

    def fisher_residuals(self, u: Float[Array, " p"]) -> Float[Array, " m"]:
        """Residuals whose JᵀJ is the (Gauss–Newton) Fisher information; by default
        `residuals`."""
        return self.residuals(u)

    def fisher_from(
        self, residual: Float[Array, " m"], jacobian: Float[Array, "m p"]
    ) -> Float[Array, "p p"]:
        """The Fisher information from `residuals` and their Jacobian at a point, as a
        Levenberg–Marquardt state holds them (no further solve); by default JᵀJ."""
        return jacobian.T @ jacobian

    def data_chi2(self, residual: Float[Array, " m"]) -> Float[Array, ""]:
        """Σ r² of the data's weighted residuals, from a `residuals` vector; by default all
        but the trailing prior residuals (one per optimised quantity)."""
        return jnp.sum(residual[: -len(self.names)] ** 2)

    def success(self, u: Float[Array, " p"]) -> Any:
        """Whether every simulation at u succeeded."""
        return self.predictions(u)[1]
