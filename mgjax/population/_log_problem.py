"""What the population engine's built-in structural models share: one subject's samples of
one observable, free quantities on the log scale and a combined residual error
σ(f) = √(a² + (b·f)²). A model subclasses `AbstractLogScaleProblem`, names its quantities
and gives `predictions`."""

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from equinox import AbstractVar
from jaxtyping import Array, Bool, Float

from ..fit._objective import LOG_2PI
from ..fit._problem import AbstractFitProblem

#: the residual error's terms, the last two of every model's quantities
ERROR_QUANTITIES = ("sigma_additive", "sigma_proportional")


class AbstractLogScaleProblem(AbstractFitProblem):
    """An `AbstractFitProblem` on the log of its free quantities (`free` model parameters,
    then the estimated error terms), for one observable sampled at `times`. Padded
    observations (`mask` False) count for nothing, so the subjects of a cohort share shapes
    and stack for `jax.vmap`.

    Subclasses set `observable`, `quantities` (every quantity, the model parameters first and
    `ERROR_QUANTITIES` last), hold them all in `values` (fixed ones stay there) and give
    `predictions`."""

    #: every quantity of the model, in the order of `values`
    quantities: ClassVar[tuple[str, ...]]
    #: what `observed` holds (the predictions table's `observable`)
    observable: ClassVar[str]

    times: AbstractVar[Float[Array, " m"]]
    observed: AbstractVar[Float[Array, " m"]]
    mask: AbstractVar[Bool[Array, " m"]]
    values: AbstractVar[Float[Array, " q"]]

    # --- coordinates ----------------------------------------------------------------------
    @property
    def names(self) -> tuple[str, ...]:
        return self.free + tuple(f"sigma_{kind}[{obs}]" for obs, kind in self.error_parameters)

    @property
    def _index(self) -> list[int]:
        return [self.quantities.index(n) for n in self.free] + [
            self.quantities.index(f"sigma_{kind}") for _, kind in self.error_parameters
        ]

    def to_values(self, u: Float[Array, " p"]) -> Float[Array, " p"]:
        return jnp.exp(u)

    def from_values(self, values: Any) -> Float[Array, " p"]:
        return jnp.log(jnp.asarray(values, dtype=jnp.float64))

    def log_scale(self) -> tuple[bool, ...]:
        return (True,) * len(self.names)

    def initial(self) -> Float[Array, " p"]:
        return jnp.log(self.values[jnp.asarray(self._index)])

    def fix(self, name: str, value: Any) -> "AbstractLogScaleProblem":
        k = self.free.index(name)
        keep = np.array([i for i in range(len(self.names)) if i != k])
        return dataclasses.replace(
            self,
            values=self.values.at[self.quantities.index(name)].set(value),
            lower=self.lower[keep],
            upper=self.upper[keep],
            prior_mean=self.prior_mean[keep],
            prior_sd=self.prior_sd[keep],
            free=tuple(n for n in self.free if n != name),
        )

    # --- evaluation -------------------------------------------------------------------------
    def all_values(self, u: Float[Array, " p"]) -> Float[Array, " q"]:
        """Every quantity of `quantities` at u (the free ones from u, the others fixed)."""
        return self.values.at[jnp.asarray(self._index)].set(self.to_values(u))

    def sigma(self, u: Float[Array, " p"], preds: Any) -> Float[Array, " m"]:
        """The residual error's SD at each observation (the observable's unit)."""
        a, b = self.all_values(u)[-2:]
        return jnp.sqrt(a**2 + (b * preds) ** 2 + 1e-300)

    def mean_and_sd(self, u: Float[Array, " p"]) -> tuple[Array, Array, Array]:
        """(the model's prediction, the residual error's SD, mask) per observation: what the
        population engine's expected information, SAEM and the VPC are built from."""
        preds, _ = self.predictions(u)
        return preds, self.sigma(u, preds), self.mask

    def likelihood_parts(self, u: Float[Array, " p"]) -> tuple[Any, Array, Array, Array]:
        """(`negative_log_likelihood`, then `mean_and_sd`'s three) from one simulation."""
        preds, ok = self.predictions(u)
        return (
            self.negative_log_likelihood_from(u, preds, ok),
            preds,
            self.sigma(u, preds),
            self.mask,
        )

    def residuals_from(self, u: Float[Array, " p"], preds: Any, ok: Any) -> Float[Array, " m"]:
        sigma = jax.lax.stop_gradient(self.sigma(u, preds))
        return jnp.where(self.mask, (self.observed - preds) / sigma, 0.0)

    def negative_log_likelihood_from(self, u: Float[Array, " p"], preds: Any, ok: Any) -> Any:
        sigma = self.sigma(u, preds)
        r = (self.observed - preds) / sigma
        terms = 0.5 * r**2 + jnp.log(sigma) + 0.5 * LOG_2PI
        nll = jnp.sum(jnp.where(self.mask, terms, 0.0))
        return jnp.where(ok, nll, jnp.inf)

    def fisher_residuals(self, u: Float[Array, " p"]) -> Float[Array, " m2"]:
        """Residuals whose JᵀJ is the Gaussian likelihood's expected Fisher information,
        the σ terms included: ∂f/σ and √2·∂σ/σ per observation."""
        preds, _ = self.predictions(u)
        sigma = self.sigma(u, preds)
        held = jax.lax.stop_gradient(sigma)
        mean_part = jnp.where(self.mask, -preds / held, 0.0)
        sigma_part = jnp.where(self.mask, jnp.sqrt(2.0) * jnp.log(sigma), 0.0)
        return jnp.concatenate([mean_part, sigma_part])


# --- building one subject's problem ---------------------------------------------------------
def start_values(
    quantities: tuple[str, ...], defaults: dict[str, float], values: dict[str, float] | None
) -> Float[Array, " q"]:
    """Every quantity's starting (or fixed) value: `defaults` updated by `values`, in the
    order of `quantities`; an unknown name is refused."""
    start = {**defaults, **(values or {})}
    unknown = set(start) - set(quantities)
    if unknown:
        raise ValueError(f"unknown quantities {sorted(unknown)}; use {', '.join(quantities)}")
    return jnp.asarray([float(start[k]) for k in quantities])


def observed_samples(times: Any, observed: Any) -> tuple[np.ndarray, np.ndarray]:
    """(times, values) of the samples that were taken (NaN values left out)."""
    times, observed = np.asarray(times, dtype=float), np.asarray(observed, dtype=float)
    keep = np.isfinite(observed)
    return times[keep], observed[keep]


def padded_samples(
    times: np.ndarray, observed: np.ndarray, n: int | None, fill_time: float
) -> dict[str, Array]:
    """`times`, `observed` and `mask` fields padded to `n` samples (a cohort's largest; None:
    no padding), the padding at `fill_time` with value 0 and mask False."""
    pad = (n or len(times)) - len(times)
    if pad < 0:
        raise ValueError("n_observations below this subject's own count")
    return dict(
        times=jnp.asarray(np.concatenate([times, np.full(pad, fill_time)])),
        observed=jnp.asarray(np.concatenate([observed, np.zeros(pad)])),
        mask=jnp.asarray(np.concatenate([np.ones(len(times), bool), np.zeros(pad, bool)])),
    )


def free_quantities(
    free: tuple[str, ...], observable: str, estimate_error: tuple[str, ...]
) -> dict[str, Any]:
    """The fields naming the free quantities (`free` model parameters, then the estimated
    error terms of `observable`), unbounded above zero and without priors."""
    error = tuple((observable, kind) for kind in estimate_error)
    p = len(free) + len(error)
    return dict(
        lower=jnp.zeros(p),
        upper=jnp.full(p, jnp.inf),
        prior_mean=jnp.full(p, jnp.nan),
        prior_sd=jnp.ones(p),
        free=tuple(free),
        error_parameters=error,
    )
