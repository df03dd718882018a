"""A fully Bayesian population fit: NUTS (numpyro) over the population parameters and every
subject's random effects — the Bayesian reference for FOCE-I on small cohorts.

The same population model as FOCE-I (`_model.py`), non-centred: subject i's coordinates are
u_i = `model.individual(θ, z_i, ξ_i)` with ξ_i ~ N(0, I) (η_i = L·ξ_i), and its likelihood
is the structural problem's own, −`problem.negative_log_likelihood(u_i)`, vmapped over the
subjects. θ = (μ, β, L) is sampled through its natural quantities, with these priors by
default (each overridable by name, `priors=`):

- μ_k (the typical coordinate of quantity k: log of its typical value for positive
  quantities) ~ N(u_start,k, 2²): centred on the start, a factor e² ≈ 7.4 per prior SD;
- β_c (covariate coefficients: power exponent; log-ratio per covariate unit for `linear`;
  log-ratio for `categorical`) ~ N(0, 2²);
- ω_k (SD of random effect k, on the coordinate's scale: ~CV for log-normal effects) ~
  half-normal(1);
- Ω's correlations (`omega="full"`) ~ LKJ(2) through its Cholesky factor: L = diag(ω)·L_R.

NUTS runs on the unconstrained coordinates of these quantities (numpyro's `biject_to` of each
prior's support: log ω for the default) and of every ξ_i, through a jitted `potential_fn`.
numpyro is imported where it is used (its import takes about a second).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Mapping, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jaxtyping import Array, Float

from ..fit._objective import LOG_2PI
from ..fit._problem import AbstractFitProblem
from ._fit import OMEGA_START, _derived, _n_observations, _take, prepare
from ._model import PopulationModel

#: default priors' scales: μ ~ N(start, MU_PRIOR_SD²), β ~ N(0, BETA_PRIOR_SD²) (coordinate
#: units), ω ~ half-normal(OMEGA_PRIOR_SCALE), correlations ~ LKJ(LKJ_CONCENTRATION)
MU_PRIOR_SD = 2.0
BETA_PRIOR_SD = 2.0
OMEGA_PRIOR_SCALE = 1.0
LKJ_CONCENTRATION = 2.0
#: the correlation prior's name in `priors`
CORRELATION = "omega_correlation"
#: chains start at the start point moved uniformly by up to this in unconstrained coordinates
INIT_RADIUS = 0.5
CHAIN_METHODS = ("sequential", "vectorized", "parallel")


@dataclasses.dataclass(frozen=True)
class PopulationPosterior:
    """A NUTS posterior of a population model. `theta_draws` [chains, draws, q] are θ's draws
    in `model.theta_names` layout (as `PopulationResult.theta`); the tables have FOCE-I's
    layout with posterior statistics: `estimate`/`omega_sd` the posterior mean, `se` the
    posterior SD, `ci_low`/`ci_high` the 2.5/97.5 % quantiles (an equal-tailed 95 % credible
    interval), plus `r_hat` (split Gelman–Rubin) and `ess` (effective sample size)."""

    model: PopulationModel
    subjects: tuple[str, ...]
    excluded: tuple[str, ...]
    theta_draws: np.ndarray  # [chains, draws, q]
    eta: np.ndarray  # [n, r] posterior means of η
    eta_sd: np.ndarray  # [n, r] posterior SDs of η
    n_observations: int
    num_chains: int
    num_warmup: int
    num_samples: int
    divergences: int
    mean_tree_size: float  # leapfrog steps per draw
    max_r_hat: float  # over every latent quantity (ξ of every subject included)
    min_ess: float
    seconds_total: float
    population_parameters: pd.DataFrame
    random_effects: pd.DataFrame
    omega: pd.DataFrame
    individual_parameters: pd.DataFrame

    @property
    def theta(self) -> np.ndarray:
        """The posterior mean of θ."""
        return self.theta_draws.reshape(-1, self.theta_draws.shape[-1]).mean(axis=0)

    def summary(self) -> dict[str, Any]:
        return dict(
            method="nuts",
            chains=self.num_chains,
            warmup=self.num_warmup,
            samples=self.num_samples,
            divergences=self.divergences,
            mean_tree_size=self.mean_tree_size,
            max_r_hat=self.max_r_hat,
            min_ess=self.min_ess,
            subjects=len(self.subjects),
            excluded=list(self.excluded),
            observations=self.n_observations,
            seconds_total=self.seconds_total,
        )

    def tables(self) -> dict[str, pd.DataFrame]:
        return {
            "population_parameters.csv": self.population_parameters,
            "random_effects.csv": self.random_effects,
            "omega.csv": self.omega,
            "individual_parameters.csv": self.individual_parameters,
        }


def default_priors(model: PopulationModel, mu_start: Any) -> dict[str, Any]:
    """The default prior of every sampled quantity, by name (see the module docstring):
    quantity names → μ, effect names → β, `omega[name]` → ω, `omega_correlation` → LKJ."""
    import numpyro.distributions as dist

    priors: dict[str, Any] = {
        name: dist.Normal(float(mu_start[k]), MU_PRIOR_SD) for k, name in enumerate(model.names)
    }
    priors.update({c.name: dist.Normal(0.0, BETA_PRIOR_SD) for c in model.covariates})
    priors.update({f"omega[{n}]": dist.HalfNormal(OMEGA_PRIOR_SCALE) for n in model.random})
    if model.omega == "full":
        # numpyro's LKJ mixes Python floats and int64 arrays (see `_theta_and_log_prior`)
        with jax.numpy_dtype_promotion("standard"):
            priors[CORRELATION] = dist.LKJCholesky(model.n_random, LKJ_CONCENTRATION)
    return priors


def _check_priors(model: PopulationModel, defaults: dict[str, Any], priors: Mapping[str, Any]):
    import numpyro.distributions as dist

    unknown = sorted(set(priors) - set(defaults))
    if unknown:
        raise ValueError(f"priors: {unknown} are not sampled; use some of {', '.join(defaults)}")
    for name, prior in priors.items():
        if not isinstance(prior, dist.Distribution):
            raise ValueError(
                f"priors: {name!r} is a {type(prior).__name__}; give a numpyro distribution"
            )
        if name == CORRELATION:
            if not isinstance(prior, dist.LKJCholesky) or prior.event_shape != (
                model.n_random,
                model.n_random,
            ):
                raise ValueError(
                    f"priors: {CORRELATION!r} needs numpyro's LKJCholesky({model.n_random}, "
                    "concentration)"
                )
            continue
        if prior.batch_shape != () or prior.event_shape != ():
            raise ValueError(f"priors: {name!r} must be a scalar distribution")
        with jax.numpy_dtype_promotion("standard"):
            inside = [bool(prior.support(jnp.asarray(x))) for x in (-1.0, 1.0)]
        if name.startswith("omega[") and (inside[0] or not inside[1]):
            raise ValueError(f"priors: {name!r} (an SD) needs a distribution on (0, ∞)")
        if not name.startswith("omega[") and not all(inside):
            raise ValueError(f"priors: {name!r} needs a distribution on the whole real line")


class _Priors(eqx.Module):
    """The priors of the sampled quantities: μ's, β's and ω's (one scalar distribution
    each, in `model` order) and, for a full Ω, the correlations' LKJ prior."""

    mu: tuple[Any, ...]
    beta: tuple[Any, ...]
    omega: tuple[Any, ...]
    correlation: Any


def _priors(model: PopulationModel, by_name: dict[str, Any]) -> _Priors:
    return _Priors(
        mu=tuple(by_name[name] for name in model.names),
        beta=tuple(by_name[c.name] for c in model.covariates),
        omega=tuple(by_name[f"omega[{k}]"] for k in model.random),
        correlation=by_name.get(CORRELATION),
    )


def _scalar_sites(x: Array, priors: tuple[Any, ...]) -> tuple[Array, Array]:
    """Constrained values of scalar sites from their unconstrained coordinates `x`, and the
    sum of their log prior densities with the transforms' log-Jacobians."""
    from numpyro.distributions import biject_to

    values, log_p = [], jnp.asarray(0.0)
    for k, prior in enumerate(priors):
        transform = biject_to(prior.support)
        value = transform(x[k])
        log_p = log_p + prior.log_prob(value) + transform.log_abs_det_jacobian(x[k], value)
        values.append(value)
    return (jnp.stack(values) if values else jnp.zeros(0)), log_p


def _theta_and_log_prior(
    model: PopulationModel, priors: _Priors, x: dict[str, Array]
) -> tuple[Array, Array]:
    """θ (`model.theta_names` layout) from the unconstrained coordinates `x` of μ, β, ω (and
    the correlations' Cholesky factor L_R: L = diag(ω)·L_R), with the log prior density of
    those coordinates (the transforms' log-Jacobians included)."""
    # numpyro's densities and transforms mix Python floats with int64 and float arrays,
    # which JAX's strict dtype promotion (the test suite's setting) refuses
    with jax.numpy_dtype_promotion("standard"):
        return _theta_and_log_prior_standard(model, priors, x)


def _theta_and_log_prior_standard(
    model: PopulationModel, priors: _Priors, x: dict[str, Array]
) -> tuple[Array, Array]:
    from numpyro.distributions import biject_to

    mu, log_p_mu = _scalar_sites(x["mu"], priors.mu)
    beta, log_p_beta = _scalar_sites(x["beta"], priors.beta)
    omega_sd, log_p_omega = _scalar_sites(x["omega"], priors.omega)
    log_p = log_p_mu + log_p_beta + log_p_omega
    parts = [mu, beta]
    if model.omega == "full":
        transform = biject_to(priors.correlation.support)
        corr_chol = transform(x["correlation"])
        log_p = (
            log_p
            + priors.correlation.log_prob(corr_chol)
            + transform.log_abs_det_jacobian(x["correlation"], corr_chol)
        )
        chol = omega_sd[:, None] * corr_chol
        rows, cols = np.tril_indices(model.n_random, -1)
        order = np.lexsort((cols, rows))  # row by row, as `model.unpack`
        parts += [jnp.log(jnp.diag(chol)), chol[rows[order], cols[order]]]
    else:
        parts.append(jnp.log(omega_sd))
    return jnp.concatenate(parts), log_p


def _log_likelihood(
    model: PopulationModel,
    stacked: AbstractFitProblem,
    theta: Float[Array, " q"],
    z: Float[Array, "n c"],
    xi: Float[Array, "n r"],
) -> Float[Array, " n"]:
    """log p(y_i | u_i(θ, ξ_i)) of every subject: the structural problems' own likelihood."""
    u = jax.vmap(lambda zi, x: model.individual(theta, zi, x))(z, xi)
    return -jax.vmap(lambda p, ui: p.negative_log_likelihood(ui))(stacked, u)


def _potential(
    model: PopulationModel,
    priors: _Priors,
    stacked: AbstractFitProblem,
    z: Float[Array, "n c"],
    x: dict[str, Array],
) -> Array:
    """−log of the joint density in the unconstrained coordinates `x` (NUTS's potential):
    priors of μ, β, ω (and L_R), ξ_i ~ N(0, I), and every subject's likelihood."""
    theta, log_prior = _theta_and_log_prior(model, priors, x)
    xi = x["xi"]
    log_xi = -0.5 * jnp.sum(xi**2) - 0.5 * xi.size * LOG_2PI
    return -(log_prior + log_xi + jnp.sum(_log_likelihood(model, stacked, theta, z, xi)))


def _start_coordinates(
    model: PopulationModel, priors: _Priors, mu0: Array, omega0: Array, n: int
) -> dict[str, Array]:
    """The unconstrained coordinates of the start: μ₀, β = 0, ω₀, no correlation, ξ = 0."""
    from numpyro.distributions import biject_to

    x = dict(
        mu=jnp.stack([biject_to(d.support).inv(mu0[k]) for k, d in enumerate(priors.mu)]),
        beta=jnp.zeros(len(model.covariates)),
        omega=jnp.stack([biject_to(d.support).inv(omega0[k]) for k, d in enumerate(priors.omega)]),
        xi=jnp.zeros((n, model.n_random)),
    )
    if model.omega == "full":
        r = model.n_random
        x["correlation"] = jnp.zeros(r * (r - 1) // 2)
    return x


def _dispersed(potential, centre: dict[str, Array], chains: int, seed: int) -> dict[str, Array]:
    """Each chain's start: `centre` moved by U(−INIT_RADIUS, INIT_RADIUS) in every
    unconstrained coordinate (dispersed starts, so r_hat compares chains that began apart);
    a chain whose moved start has no finite density starts at the centre."""
    rng = np.random.default_rng(seed)
    starts = []
    for _ in range(chains):
        moved = {
            k: v + rng.uniform(-INIT_RADIUS, INIT_RADIUS, np.shape(v)) for k, v in centre.items()
        }
        starts.append(moved if np.isfinite(float(potential(moved))) else centre)
    if chains == 1:  # numpyro takes one chain's start without a chain axis
        return starts[0]
    return jax.tree.map(lambda *v: jnp.stack(v), *starts)


def _quantiles(draws: np.ndarray) -> tuple[np.ndarray, ...]:
    """(mean, SD, 2.5 %, 97.5 %, r_hat, ESS) of draws [chains, draws, k] per column."""
    from numpyro.diagnostics import effective_sample_size, split_gelman_rubin

    flat = draws.reshape(-1, draws.shape[-1])
    low, high = np.quantile(flat, [0.025, 0.975], axis=0)
    if draws.shape[1] >= 4:  # split r_hat halves every chain
        r_hat = np.asarray(split_gelman_rubin(draws))
        ess = np.asarray(effective_sample_size(draws))
    else:
        r_hat = ess = np.full(draws.shape[-1], np.nan)
    return flat.mean(axis=0), flat.std(axis=0, ddof=1), low, high, r_hat, ess


def sample_population(
    problems: Sequence[AbstractFitProblem] | AbstractFitProblem,
    model: PopulationModel,
    *,
    subjects: Sequence[str] | None = None,
    covariates: pd.DataFrame | Mapping[str, Any] | None = None,
    start: Mapping[str, float] | None = None,
    omega_start: float | Mapping[str, float] = OMEGA_START,
    priors: Mapping[str, Any] | None = None,
    units: Mapping[str, str] | None = None,
    num_warmup: int = 500,
    num_samples: int = 500,
    num_chains: int = 2,
    chain_method: str = "vectorized",
    seed: int = 0,
    target_accept_prob: float = 0.8,
    max_tree_depth: int = 10,
    dense_mass: bool = False,
    progress_bar: bool = False,
) -> PopulationPosterior:
    """Sample the posterior of `model` on the subjects' `problems` (a list, or one stacked
    pytree) with numpyro's NUTS: θ and every subject's standardised random effects ξ_i.

    - `subjects`, `covariates`, `start` (typical values in physical units, by name; default
      each quantity's median starting value) and `units` as `fit_population`;
      `omega_start`: the chains' starting SDs of the random effects (log scale);
    - `priors`: numpyro distributions replacing defaults by name — a quantity's name (prior
      on its coordinate μ: log of the typical value in physical units for positive
      quantities), an effect's name (`cl~weight`: β), `omega[name]` (the SD ω on the
      coordinate's scale, a distribution on (0, ∞)), `omega_correlation` (`LKJCholesky(r,
      η)` for `omega="full"`). Defaults: μ ~ N(start, 2²), β ~ N(0, 2²), ω ~ half-normal(1),
      LKJ(2);
    - `num_warmup`, `num_samples` per chain; `num_chains` chains run by `chain_method`:
      `vectorized` (default: all chains in one compiled program, in lockstep), `sequential`
      (one after the other; numpyro compiles its sampler once per chain) or `parallel` (one
      device each). Each chain starts near the start point (moved by up to ±0.5 in every
      unconstrained coordinate). NUTS settings: `target_accept_prob`, `max_tree_depth`,
      `dense_mass`.

    Subjects whose log-likelihood is not finite at the start (η = 0) are left out and
    listed in `excluded`, as in `fit_population`."""
    from numpyro.infer import MCMC, NUTS

    t_start = time.perf_counter()
    if chain_method not in CHAIN_METHODS:
        raise ValueError(f"chain_method {chain_method!r}: use one of {', '.join(CHAIN_METHODS)}")
    if min(num_warmup, num_samples, num_chains) < 1:
        raise ValueError("num_warmup, num_samples and num_chains must be positive")
    stacked, subjects, first, z, theta0 = prepare(
        problems, model, subjects, covariates, start, omega_start
    )
    n = len(subjects)
    mu0, _, chol0 = model.unpack(theta0)

    # subjects whose likelihood cannot be evaluated at the start are left out and named
    xi0 = jnp.zeros((n, model.n_random))
    finite = np.isfinite(
        np.asarray(eqx.filter_jit(_log_likelihood)(model, stacked, theta0, z, xi0))
    )
    keep = np.flatnonzero(finite)
    if keep.size == 0:
        raise ValueError("no subject's likelihood is finite at the start; check data and start")
    excluded = tuple(s for s, ok in zip(subjects, finite) if not ok)
    stacked, z = _take(stacked, keep), z[keep]
    subjects = tuple(subjects[i] for i in keep)
    n = len(keep)

    by_name = default_priors(model, np.asarray(mu0))
    _check_priors(model, by_name, dict(priors or {}))
    by_name.update(dict(priors or {}))
    prior = _priors(model, by_name)
    potential = jax.jit(functools.partial(_potential, model, prior, stacked, z))
    to_theta = jax.jit(jax.vmap(jax.vmap(lambda x: _theta_and_log_prior(model, prior, x)[0])))

    # numpyro's samplers mix their int32 step counters and Python floats, which JAX's strict
    # dtype promotion (the test suite's setting) refuses: sample under standard promotion
    with jax.numpy_dtype_promotion("standard"):
        centre = _start_coordinates(model, prior, mu0, jnp.diag(chol0), n)
        if not np.isfinite(float(potential(centre))):
            raise ValueError(
                "the posterior density is not finite at the start; check `priors` and `start`"
            )
        init = _dispersed(potential, centre, num_chains, seed)
        kernel = NUTS(
            potential_fn=potential,
            target_accept_prob=target_accept_prob,
            max_tree_depth=max_tree_depth,
            dense_mass=dense_mass,
        )
        mcmc = MCMC(
            kernel,
            num_warmup=num_warmup,
            num_samples=num_samples,
            num_chains=num_chains,
            chain_method=chain_method,
            progress_bar=progress_bar,
        )
        mcmc.run(jax.random.key(seed), init_params=init, extra_fields=("diverging", "num_steps"))
        samples = mcmc.get_samples(group_by_chain=True)
        extra = mcmc.get_extra_fields()
        theta_draws = np.asarray(to_theta(samples))  # [chains, draws, q]
    xi_draws = np.asarray(samples["xi"])  # [chains, draws, n, r]
    every = np.concatenate([theta_draws, xi_draws.reshape(num_chains, num_samples, -1)], axis=-1)
    _, _, _, _, r_hat_all, ess_all = _quantiles(every)

    units = dict(units or {})
    tables, eta, eta_sd = _tables(model, stacked, subjects, theta_draws, xi_draws, z, units)
    return PopulationPosterior(
        model=model,
        subjects=subjects,
        excluded=excluded,
        theta_draws=theta_draws,
        eta=eta,
        eta_sd=eta_sd,
        n_observations=_n_observations(stacked),
        num_chains=num_chains,
        num_warmup=num_warmup,
        num_samples=num_samples,
        divergences=int(np.sum(np.asarray(extra["diverging"]))),
        mean_tree_size=float(np.mean(np.asarray(extra["num_steps"]))),
        max_r_hat=float(np.nanmax(r_hat_all)),
        min_ess=float(np.nanmin(ess_all)),
        seconds_total=time.perf_counter() - t_start,
        **tables,
    )


@eqx.filter_jit
def _per_draw(
    model: PopulationModel,
    stacked: AbstractFitProblem,
    z: Float[Array, "n c"],
    theta: Float[Array, "d q"],
    xi: Float[Array, "d n r"],
) -> tuple[Array, Array, Array]:
    """For every draw d: the tables' quantities of θ (`_derived`), η = L·ξ of every subject
    [d, n, r], and the subjects' parameters in physical units [d, n, p]."""
    first = _take(stacked, 0)

    def one(t, x):
        chol = model.unpack(t)[2]
        u = jax.vmap(lambda zi, xi: model.individual(t, zi, xi))(z, x)
        values = jax.vmap(lambda prob, ui: prob.to_values(ui))(stacked, u)
        return _derived(model, first, t), x @ chol.T, values

    return jax.vmap(one)(theta, xi)


def _tables(
    model: PopulationModel,
    stacked: AbstractFitProblem,
    subjects: tuple[str, ...],
    theta_draws: Float[np.ndarray, "chains draws q"],
    xi_draws: Float[np.ndarray, "chains draws n r"],
    z: Float[Array, "n c"],
    units: dict[str, str],
) -> tuple[dict[str, pd.DataFrame], np.ndarray, np.ndarray]:
    chains, draws, q = theta_draws.shape
    derived, eta_draws, values = (
        np.asarray(a)
        for a in _per_draw(
            model,
            stacked,
            z,
            jnp.asarray(theta_draws.reshape(-1, q)),
            jnp.asarray(xi_draws.reshape(chains * draws, *xi_draws.shape[2:])),
        )
    )
    mean, sd, low, high, r_hat, ess = _quantiles(derived.reshape(chains, draws, -1))
    p, c, r = len(model.names), len(model.covariates), model.n_random

    names = list(model.names) + [e.name for e in model.covariates]
    head = slice(0, p + c)
    population = pd.DataFrame(
        dict(
            parameter=names,
            estimate=mean[head],
            se=sd[head],
            ci_low=low[head],
            ci_high=high[head],
            unit=[units.get(name, "") for name in names],
            r_hat=r_hat[head],
            ess=ess[head],
        )
    )
    population.insert(3, "rse_percent", 100.0 * population["se"] / population["estimate"].abs())

    eta, eta_sd = eta_draws.mean(axis=0), eta_draws.std(axis=0, ddof=1)
    block = slice(p + c, p + c + r)
    omega_sd = mean[block]
    shrinkage = 1.0 - np.std(eta, axis=0, ddof=1) / omega_sd if len(eta) > 1 else np.nan
    log_scale = _take(stacked, 0).log_scale()
    random_log = [log_scale[model.names.index(k)] for k in model.random]
    random_effects = pd.DataFrame(
        dict(
            parameter=list(model.random),
            omega_sd=omega_sd,
            se=sd[block],
            rse_percent=100.0 * sd[block] / omega_sd,
            cv_percent=np.where(random_log, 100.0 * np.sqrt(np.expm1(omega_sd**2)), np.nan),
            shrinkage_percent=100.0 * shrinkage,
            ci_low=low[block],
            ci_high=high[block],
            r_hat=r_hat[block],
            ess=ess[block],
        )
    )
    corr = np.eye(r)
    if model.omega == "full":
        rows, cols = np.tril_indices(r, -1)
        corr[rows, cols] = corr[cols, rows] = mean[p + c + r :]
    omega = pd.DataFrame(corr, index=list(model.random), columns=list(model.random))
    omega.index.name = "parameter"

    posterior_mean = values.mean(axis=0)
    individual = pd.DataFrame(
        [
            (s, name, posterior_mean[i, k], units.get(name, ""))
            for i, s in enumerate(subjects)
            for k, name in enumerate(model.names)
        ],
        columns=["subject", "parameter", "posterior_mean", "unit"],
    )
    tables = dict(
        population_parameters=population,
        random_effects=random_effects,
        omega=omega,
        individual_parameters=individual,
    )
    return tables, eta, eta_sd
