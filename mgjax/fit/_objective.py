"""The objective: negative log-likelihood with an error model per observable, optional
log-normal priors (MAP), free parameters by name in unconstrained coordinates.

- Positive parameters (`log_scale` in the parameter table) are optimised on a log scale and
  kept inside their plausible range: log θ = log lo + (log hi − log lo)·sigmoid(u). Without
  the bound, weakly determined parameters drift to absurd values (an insulin EC50 of 10⁹
  pmol/L) where the objective is flat; experiments/studies/fit_optimisers.py shows it.
- Other bounded parameters go through θ = lo + (hi − lo)·sigmoid(u).
- Error models as in NONMEM/Monolix: additive σ = a, proportional σ = b·|f|, combined
  σ = √(a² + b²f²), with f the prediction; a and b fixed or estimated (log space). A `sigma`
  given with the data overrides the error model for that observation.
- A failed solve (max_steps, non-finite state) gives a finite penalty and a flag, never a NaN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..model import MgT2DModel
from ..model._parameters import get_parameters, parameter_infos, set_parameters
from ..solve._solve import SolverOptions
from ._experiment import Experiment, check_experiment, fasting_rest_for, starts_at_rest
from ._problem import AbstractFitProblem

#: Residual given to each observation of a failed solve (in standard deviations).
FAILED_RESIDUAL = 1e3
#: Offset K of the noise residuals √(2·log(σ/σ_obs) + K) that carry a prediction-dependent
#: σ's log σ term into ½‖r‖² (σ_obs: the error model at the observed value, a constant). At
#: the optimum σ ≈ σ_obs, so the residual is ≈ √K; the square root is exact for σ above
#: e^(−(K−1)/2) ≈ 1 % of σ_obs and continued linearly below (C¹, no singular Jacobian).
NOISE_RESIDUAL_OFFSET = 10.0
LOG_2PI = math.log(2.0 * math.pi)


def _as_float_array(x: Any) -> Any:
    """A JAX array or tracer as it is; a Python or NumPy number as a NumPy float64 array (no
    JAX array at construction: the module-level error models start no backend at import)."""
    return x if isinstance(x, jax.Array) else np.asarray(x, dtype=np.float64)


class ErrorModel(eqx.Module):
    """σ(f) = √(additive² + (proportional·f)²) for one observable (model units).

    `estimate_additive` / `estimate_proportional` make the term a free parameter."""

    additive: Any = eqx.field(default=0.0, converter=_as_float_array)
    proportional: Any = eqx.field(default=0.05, converter=_as_float_array)
    estimate_additive: bool = eqx.field(default=False, static=True)
    estimate_proportional: bool = eqx.field(default=False, static=True)

    def sigma(self, prediction: Any, additive: Any, proportional: Any) -> Any:
        return jnp.sqrt(additive**2 + (proportional * prediction) ** 2 + 1e-300)


def additive(a: float, estimate: bool = False) -> ErrorModel:
    return ErrorModel(additive=a, proportional=0.0, estimate_additive=estimate)


def proportional(b: float, estimate: bool = False) -> ErrorModel:
    return ErrorModel(additive=0.0, proportional=b, estimate_proportional=estimate)


def combined(a: float, b: float, estimate: bool = False) -> ErrorModel:
    return ErrorModel(
        additive=a, proportional=b, estimate_additive=estimate, estimate_proportional=estimate
    )


class FitProblem(AbstractFitProblem):
    """Everything a fit needs, as one PyTree: the subject's base parameters, its experiments,
    which parameters are free and how they are transformed, priors, error models, and solver
    options.

    Build with `make_problem`; evaluate with `residuals`, `negative_log_likelihood`.
    """

    base_model: MgT2DModel
    experiments: tuple[Experiment, ...]
    lower: Float[Array, " p"]
    upper: Float[Array, " p"]
    prior_mean: Float[Array, " p"]  # log of the prior median; NaN = no prior
    prior_sd: Float[Array, " p"]
    error_models: dict[str, ErrorModel]
    options: SolverOptions
    free: tuple[str, ...] = eqx.field(static=True)
    transforms: tuple[Literal["log", "loglogit", "logit", "identity"], ...] = eqx.field(static=True)
    error_parameters: tuple[tuple[str, str], ...] = eqx.field(static=True)
    #: normal noise and log-normal priors: always a sum of squares
    least_squares: bool = eqx.field(static=True, default=True)

    # --- coordinates --------------------------------------------------------------------
    @property
    def names(self) -> tuple[str, ...]:
        """Names of all free quantities: model parameters, then error parameters."""
        return self.free + tuple(f"sigma_{kind}[{obs}]" for obs, kind in self.error_parameters)

    def to_values(self, u: Float[Array, " p"]) -> Float[Array, " p"]:
        """Unconstrained coordinates → physical values (model parameters and error terms).

        - `log`: θ = exp(u) (error-model terms);
        - `loglogit`: log θ = log lower + (log upper − log lower)·sigmoid(u) (positive
          parameters, kept inside their plausible range);
        - `logit`: θ = lower + (upper − lower)·sigmoid(u) (other bounded parameters).
        """
        out = []
        for i, transform in enumerate(self.transforms):
            if transform == "log":
                out.append(jnp.exp(u[i]))
            elif transform == "loglogit":
                lo, hi = jnp.log(self.lower[i]), jnp.log(self.upper[i])
                out.append(jnp.exp(lo + (hi - lo) * jax.nn.sigmoid(u[i])))
            elif transform == "logit":
                out.append(self.lower[i] + (self.upper[i] - self.lower[i]) * jax.nn.sigmoid(u[i]))
            else:
                out.append(u[i])
        return jnp.stack(out) if out else u

    def from_values(self, values: Any) -> Float[Array, " p"]:
        """The inverse of `to_values` (values outside a range are moved just inside it)."""
        values = jnp.asarray(values, dtype=jnp.float64)
        out = []

        def logit(x):
            x = jnp.clip(x, 1e-9, 1 - 1e-9)
            return jnp.log(x) - jnp.log1p(-x)

        for i, transform in enumerate(self.transforms):
            if transform == "log":
                out.append(jnp.log(values[i]))
            elif transform == "loglogit":
                lo, hi = jnp.log(self.lower[i]), jnp.log(self.upper[i])
                out.append(logit((jnp.log(values[i]) - lo) / (hi - lo)))
            elif transform == "logit":
                out.append(logit((values[i] - self.lower[i]) / (self.upper[i] - self.lower[i])))
            else:
                out.append(values[i])
        return jnp.stack(out)

    def log_scale(self) -> tuple[bool, ...]:
        """Which free quantities are positive and optimised on a log scale."""
        return tuple(t in ("log", "loglogit") for t in self.transforms)

    def initial(self) -> Float[Array, " p"]:
        """The base model's parameter values (and the error models' terms), unconstrained."""
        model_values = list(get_parameters(self.base_model, self.free).values())
        error_values = [
            getattr(self.error_models[obs], kind) for obs, kind in self.error_parameters
        ]
        return self.from_values(
            jnp.stack([jnp.asarray(v, dtype=jnp.float64) for v in model_values + error_values])
        )

    def model(self, u: Float[Array, " p"]) -> MgT2DModel:
        values = self.to_values(u)
        return set_parameters(self.base_model, dict(zip(self.free, values[: len(self.free)])))

    def _error_terms(self, u: Float[Array, " p"]) -> dict[str, tuple[Any, Any]]:
        values = self.to_values(u)[len(self.free) :]
        terms = {obs: (em.additive, em.proportional) for obs, em in self.error_models.items()}
        for (obs, kind), v in zip(self.error_parameters, values):
            a, b = terms[obs]
            terms[obs] = (v, b) if kind == "additive" else (a, v)
        return terms

    # --- residuals and likelihood ---------------------------------------------------------
    def predictions(self, u: Float[Array, " p"]) -> tuple[list[Any], Any]:
        preds, ok, _ = self.warm_predictions(u, None)
        return preds, ok

    def warm_predictions(self, u: Float[Array, " p"], warm: Any) -> tuple[list[Any], Any, Any]:
        """`predictions` with the fasting steady-state search started from `warm` (the
        dynamic states this returned at a nearby u: Newton's method from there takes ~9
        iterations instead of ~30 from the rough start; NaN, None or empty: none), and the
        steady state found (not differentiated; empty when no protocol starts at rest)."""
        model = self.model(u)
        guess = None if warm is None or jnp.shape(warm)[-1] == 0 else warm
        rest, _ = fasting_rest_for(model, self.experiments, guess=guess)
        preds, ok = [], jnp.asarray(True)
        for e in self.experiments:
            p, success = e.predict(model, self.options, rest)
            preds.append(p)
            ok = ok & success & jnp.all(jnp.isfinite(jnp.where(e.mask, p, 0.0)))
        if rest is None:
            return preds, ok, jnp.zeros((0,))
        n = len(MgT2DModel.dynamic_state_names())
        return preds, ok, jax.lax.stop_gradient(rest.y[:n])

    def start_size(self) -> int:
        """Length of the start `warm_predictions` returns: the dynamic states of the fasting
        steady state when a protocol starts there, else 0."""
        if not any(starts_at_rest(self.experiments)):
            return 0
        return len(MgT2DModel.dynamic_state_names())

    def _moments(self, u, preds, ok, hold_sigma: bool = False):
        """Per experiment: (observed, mean, σ, mask), a failed solve's means replaced by the
        observations (its residuals are penalised in `_scaled`). With `hold_sigma`, a
        prediction-dependent σ is not differentiated (the Fisher information's mean part)."""
        terms = self._error_terms(u)
        out = []
        for e, p in zip(self.experiments, preds):
            a = jnp.stack([terms[n][0] for n in e.observable_names])[e.observable_index]
            b = jnp.stack([terms[n][1] for n in e.observable_names])[e.observable_index]
            safe_p = jnp.where(ok & jnp.isfinite(p), p, e.values)
            p_sigma = jax.lax.stop_gradient(safe_p) if hold_sigma else safe_p
            sigma_model = jnp.sqrt(a**2 + (b * p_sigma) ** 2 + 1e-300)
            sigma = jnp.where(jnp.isnan(e.sigma), sigma_model, e.sigma)
            out.append((e.values, safe_p, sigma, e.mask))
        return out

    def _scaled(self, u, preds, ok, hold_sigma: bool = False):
        """(r, σ, mask) per observation, failed solves replaced by a finite penalty. With
        `hold_sigma`, a prediction-dependent σ is not differentiated."""
        rs, sigmas, masks = [], [], []
        for values, mean, sigma, mask in self._moments(u, preds, ok, hold_sigma):
            r = jnp.where(ok, (values - mean) / sigma, FAILED_RESIDUAL)
            rs.append(jnp.where(mask, r, 0.0))
            sigmas.append(jnp.where(mask, sigma, 1.0))
            masks.append(mask)
        return jnp.concatenate(rs), jnp.concatenate(sigmas), jnp.concatenate(masks)

    def _free_sigma(self):
        """(σ at the observed value under the error models as given — a constant —, whether
        the observation's σ varies with u) per observation: rows with a σ given in the data
        have a fixed σ."""
        references, free = [], []
        for e in self.experiments:
            a = jnp.stack([self.error_models[n].additive for n in e.observable_names])
            b = jnp.stack([self.error_models[n].proportional for n in e.observable_names])
            a, b = a[e.observable_index], b[e.observable_index]
            y = jnp.where(e.mask & jnp.isfinite(e.values), e.values, 0.0)
            references.append(jnp.sqrt(a**2 + (b * y) ** 2 + 1e-300))
            free.append(e.mask & jnp.isnan(e.sigma))
        return jnp.concatenate(references), jnp.concatenate(free)

    def _noise_residuals(self, sigma):
        """√(2·log(σ/σ_obs) + K) per observation whose σ varies (else 0): ½ of its square is
        log σ up to a constant (`NOISE_RESIDUAL_OFFSET`)."""
        reference, free = self._free_sigma()
        z = 2.0 * (jnp.log(sigma) - jnp.log(reference)) + NOISE_RESIDUAL_OFFSET
        r = jnp.where(z >= 1.0, jnp.sqrt(jnp.maximum(z, 1.0)), 0.5 * (1.0 + z))
        return jnp.where(free, r, 0.0)

    def mean_and_sd(self, u: Float[Array, " p"]) -> tuple[Any, Any, Any]:
        """(model mean, residual SD, mask) per observation (padding masked; a failed solve's
        means are the observations): what the population engine's FOCE-I curvature uses."""
        preds, ok = self.predictions(u)
        moments = self._moments(u, preds, ok)
        mean = jnp.concatenate([jnp.where(m, p, 0.0) for _, p, _, m in moments])
        sd = jnp.concatenate([jnp.where(m, s, 1.0) for _, _, s, m in moments])
        return mean, sd, jnp.concatenate([m for *_, m in moments])

    def prior_residuals(self, u: Float[Array, " p"]) -> Float[Array, " p"]:
        """(log θ − log median)/log gsd for parameters with a log-normal prior, else 0."""
        has = ~jnp.isnan(self.prior_mean)
        log_values = jnp.log(jnp.where(has, self.to_values(u), 1.0))
        return jnp.where(
            has, (log_values - jnp.where(has, self.prior_mean, 0.0)) / self.prior_sd, 0.0
        )

    def residuals_from(self, u: Float[Array, " p"], preds: Any, ok: Any) -> Float[Array, " m"]:
        """Weighted residuals (y − f)/σ of every observation, then a noise residual
        √(2·log(σ/σ_obs) + K) per observation whose σ depends on the prediction, then the
        prior residuals, from already computed `predictions(u)`: ½‖r‖² is the negative
        log-likelihood up to a constant, so Levenberg–Marquardt finds the maximum-likelihood
        estimate (not the reweighted least-squares one) under a proportional error model."""
        r, sigma, _ = self._scaled(u, preds, ok)
        return jnp.concatenate([r, self._noise_residuals(sigma), self.prior_residuals(u)])

    def fisher_residuals(self, u: Float[Array, " p"]) -> Float[Array, " m"]:
        """Residuals whose JᵀJ is the expected Fisher information of the Gaussian likelihood,
        the σ terms included: (y − f)/σ with σ held, √2·log σ per observation whose σ
        varies, and the prior residuals."""
        preds, ok = self.predictions(u)
        r, _, _ = self._scaled(u, preds, ok, hold_sigma=True)
        _, sigma, _ = self._scaled(u, preds, ok)
        _, free = self._free_sigma()
        noise = jnp.where(free, math.sqrt(2.0) * jnp.log(sigma), 0.0)
        return jnp.concatenate([r, noise, self.prior_residuals(u)])

    def _observation_slots(self) -> int:
        """Observation slots (padding included): the length of the data and noise blocks."""
        return sum(e.values.shape[-1] for e in self.experiments)

    def data_chi2(self, residual: Float[Array, " m"]) -> Float[Array, ""]:
        """Σ r² of the weighted data residuals (the first block of `residuals`)."""
        return jnp.sum(residual[: self._observation_slots()] ** 2)

    def fisher_from(
        self, residual: Float[Array, " m"], jacobian: Float[Array, "m p"]
    ) -> Float[Array, "p p"]:
        """The expected Fisher information (what `fisher_residuals` gives) from `residuals`
        and their Jacobian: the noise rows give ∂log σ, which turns the data rows' exact
        Jacobian −∂f/σ − r·∂log σ back into −∂f/σ."""
        n = self._observation_slots()
        r, noise = residual[:n], residual[n : 2 * n]
        j, j_noise, j_prior = jacobian[:n], jacobian[n : 2 * n], jacobian[2 * n :]
        # ∂r_noise = ∂log σ / r_noise on the square-root branch (r_noise ≥ 1), ∂log σ below
        d_log_sigma = jnp.where((noise >= 1.0)[:, None], j_noise * noise[:, None], j_noise)
        mean = j + r[:, None] * d_log_sigma
        return mean.T @ mean + 2.0 * d_log_sigma.T @ d_log_sigma + j_prior.T @ j_prior

    def negative_log_likelihood_from(self, u: Float[Array, " p"], preds: Any, ok: Any) -> Any:
        """−log p(data | θ) − log p(θ) (constants included; priors only where given) from
        already computed `predictions(u)`."""
        r, sigma, mask = self._scaled(u, preds, ok)
        data = 0.5 * jnp.sum(jnp.where(mask, r**2 + 2.0 * jnp.log(sigma) + LOG_2PI, 0.0))
        pr = self.prior_residuals(u)
        has = ~jnp.isnan(self.prior_mean)
        prior = jnp.sum(jnp.where(has, 0.5 * pr**2 + jnp.log(self.prior_sd) + 0.5 * LOG_2PI, 0.0))
        return data + prior

    # --- profiles -----------------------------------------------------------------------------
    def fix(self, name: str, value: Any) -> FitProblem:
        """The same problem with free model parameter `name` fixed at `value` (physical units)."""
        k = self.free.index(name)
        keep = jnp.asarray([i for i in range(len(self.names)) if i != k])
        return FitProblem(
            base_model=set_parameters(self.base_model, {name: value}),
            experiments=self.experiments,
            lower=self.lower[keep],
            upper=self.upper[keep],
            prior_mean=self.prior_mean[keep],
            prior_sd=self.prior_sd[keep],
            error_models=self.error_models,
            options=self.options,
            free=tuple(n for n in self.free if n != name),
            transforms=tuple(t for i, t in enumerate(self.transforms) if i != k),
            error_parameters=self.error_parameters,
        )


def range_priors(
    model: MgT2DModel, free: Sequence[str], *, sds_in_range: float = 4.0
) -> dict[str, tuple[float, float]]:
    """Weakly informative log-normal priors from the parameter table: median = the value in
    `model`, geometric SD such that the plausible range [lower, upper] spans `sds_in_range`
    SDs (default ±2 SD), i.e. log gsd = log(upper/lower)/sds_in_range. For summary-level data
    with fewer means than parameters (MAP); parameters that are not positive are skipped."""
    infos = parameter_infos()
    values = get_parameters(model, tuple(free))
    out = {}
    for name in free:
        info = infos[name]
        if info.log_scale and info.lower > 0:
            gsd = math.exp(math.log(info.upper / info.lower) / sds_in_range)
            out[name] = (float(values[name]), gsd)
    return out


def make_problem(
    base_model: MgT2DModel,
    experiments: Sequence[Experiment],
    free: Sequence[str],
    *,
    error_models: Mapping[str, ErrorModel] | None = None,
    priors: Mapping[str, tuple[float, float]] | None = None,
    options: SolverOptions | None = None,
    bounded: bool = True,
) -> FitProblem:
    """Assemble a `FitProblem`.

    **Arguments:**

    - `base_model`: parameters of the subject (fixed parameters keep these values);
    - `experiments`: the subject's `Experiment`s: each a protocol of the whole physiology, or
      a forced-glucose secretion series (`GlucoseSeries` as protocol; observes
      `insulin_secretion` and/or `c_peptide` from the beta-cell module alone);
    - `free`: names of the parameters to estimate (`mgjax.parameter_names()`);
    - `error_models`: per observable (default: proportional 5 %, additive for
      `membrane_potential`); observations with a given sigma ignore them;
    - `priors`: `{name: (median, geometric_sd)}` log-normal priors (MAP), for positive
      parameters; e.g. `(default, 2.0)` means "within ×/÷ 2 at 1 SD";
    - `options`: solver options; default forward-mode differentiable (`ForwardMode`), as
      Levenberg–Marquardt needs;
    - `bounded`: positive parameters move on log θ kept inside their plausible range
      (`loglogit`, default); with False on plain log θ (`log`), as population models with
      log-normal random effects need.
    """
    import diffrax as dfx

    for experiment in experiments:
        check_experiment(experiment)
    infos = parameter_infos()
    unknown = [n for n in free if n not in infos]
    if unknown:
        raise KeyError(f"unknown free parameter(s) {unknown}; see mgjax.parameter_names()")
    if len(set(free)) != len(free):
        raise ValueError("a free parameter is listed twice")
    observables = sorted({n for e in experiments for n in e.observable_names})
    error_models = dict(error_models or {})
    for name in observables:
        error_models.setdefault(name, proportional(0.05))
    error_models = {k: v for k, v in error_models.items() if k in observables}
    error_parameters = tuple(
        (obs, kind)
        for obs, em in sorted(error_models.items())
        for kind, flag in [
            ("additive", em.estimate_additive),
            ("proportional", em.estimate_proportional),
        ]
        if flag
    )
    transforms, lower, upper = [], [], []
    for name in free:
        info = infos[name]
        if info.log_scale and info.lower > 0 and bounded:
            transforms.append("loglogit")
        elif info.log_scale:
            transforms.append("log")
        else:
            transforms.append("logit")
        lower.append(info.lower)
        upper.append(info.upper)
    for _ in error_parameters:
        transforms.append("log")
        lower.append(1e-12)
        upper.append(1e12)
    prior_mean = np.full(len(transforms), np.nan)
    prior_sd = np.ones(len(transforms))
    for name, (median, gsd) in (priors or {}).items():
        if name not in free:
            raise KeyError(f"prior on {name!r}, which is not a free parameter")
        i = free.index(name) if isinstance(free, tuple) else list(free).index(name)
        if transforms[i] not in ("log", "loglogit"):
            raise ValueError(f"log-normal prior on {name!r}, which is not a positive parameter")
        prior_mean[i] = math.log(median)
        prior_sd[i] = math.log(gsd)
    if options is None:
        options = SolverOptions(adjoint=dfx.ForwardMode())
    return FitProblem(
        base_model=base_model,
        experiments=tuple(experiments),
        lower=jnp.asarray(lower, dtype=jnp.float64),
        upper=jnp.asarray(upper, dtype=jnp.float64),
        prior_mean=jnp.asarray(prior_mean),
        prior_sd=jnp.asarray(prior_sd),
        error_models=error_models,
        options=options,
        free=tuple(free),
        transforms=tuple(transforms),
        error_parameters=error_parameters,
    )
