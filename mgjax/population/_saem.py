"""SAEM: stochastic approximation expectation–maximisation (Delyon, Lavielle & Moulines 1999;
Kuhn & Lavielle 2005 — Monolix's algorithm) for the population model of `_model.py`.

The latent variables are each subject's coordinates of the quantities with a random effect,
φ_i = m_i + η_i with m_i = B'x_i (x_i = [1, z_i]: intercept and covariate design values,
B the typical values and the covariate coefficients of those quantities). Each iteration k:

1. **Simulation** (vmapped over subjects and chains): Metropolis–Hastings on
   p(φ_i | y_i, θ) ∝ p(y_i | φ_i, θ_f)·N(φ_i; m_i, Ω) with Monolix's three kernels — proposals
   from the prior N(m_i, Ω), random walks on the whole vector (scaled by L, Ω = LLᵀ) and on
   one component at a time — their step sizes adapted towards 40 % acceptance. Only
   simulations are needed: no derivative of the structural model.
2. **Stochastic approximation** of the complete-data sufficient statistics
   S_xφ = Σ x_i φ_iᵀ, S_φφ = Σ φ_i φ_iᵀ: S ← S + γ_k (s(φ⁽ᵏ⁾) − S), with γ_k = 1 for the
   exploration iterations, then 1/(k − K₁ + 1).
3. **Maximisation**: B by least squares per quantity (its intercept and the covariates acting
   on it), Ω = (S_φφ − BᵀS_xφ − S_xφᵀB + BᵀGB)/n (G = Σ x_i x_iᵀ; diagonal part only for a
   diagonal Ω); during the annealing iterations no variance falls below 0.95 of its previous
   value (Monolix's simulated annealing, which keeps the chains exploring). The parameters
   without a random effect (θ_f: e.g. residual-error terms and covariate effects on them)
   move towards the maximiser of the complete-data likelihood at the current φ by damped
   Gauss–Newton steps with its expected information (first-order forward derivatives only),
   θ_f ← θ_f + γ_k (θ_f* − θ_f), as saemix does for its residual-error parameters.

The result is θ in `PopulationModel`'s layout; `fit_population(method="saem")` then takes
the EBEs, the OFV, the covariance step and the tables as for FOCE-I (Monolix's
"linearisation" options), and an importance-sampling OFV that does not depend on the method.
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ..fit._problem import AbstractFitProblem
from ._model import PopulationModel

#: the target acceptance rate of the random-walk kernels
TARGET_ACCEPTANCE = 0.4
#: during annealing no variance falls below this fraction of its previous value
ANNEALING_FACTOR = 0.95


class SaemSettings(eqx.Module):
    """SAEM's iteration counts (Monolix's K₁ exploration and K₂ smoothing iterations; the
    first `annealing` iterations keep the variances from shrinking fast), the chains per
    subject, and the Metropolis–Hastings steps of each kernel per iteration."""

    exploration: int = eqx.field(static=True, default=200)
    smoothing: int = eqx.field(static=True, default=100)
    annealing: int = eqx.field(static=True, default=100)
    chains: int = eqx.field(static=True, default=1)
    prior_steps: int = eqx.field(static=True, default=2)
    walk_steps: int = eqx.field(static=True, default=2)
    component_steps: int = eqx.field(static=True, default=2)
    fixed_steps: int = eqx.field(static=True, default=3)
    burn_in: int = eqx.field(static=True, default=5)
    information_draws: int = eqx.field(static=True, default=200)

    def __check_init__(self):
        for name in ("exploration", "smoothing", "chains", "information_draws"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"SAEM setting {name} must be ≥ 1, not {getattr(self, name)}")
        if self.annealing > self.exploration:
            raise ValueError("SAEM: annealing iterations cannot exceed the exploration ones")

    @property
    def iterations(self) -> int:
        return self.exploration + self.smoothing


@dataclasses.dataclass(frozen=True)
class _Layout:
    """Where θ's parts go: the quantities with (`random`) and without (`fixed`) a random
    effect, which covariate effects act on each group, and which rows of B each random
    quantity uses."""

    random: np.ndarray
    fixed: np.ndarray
    effects_random: np.ndarray  # indices into model.covariates
    effects_fixed: np.ndarray
    rows: np.ndarray  # [1 + c, r] 0/1: B's free entries

    @classmethod
    def of(cls, model: PopulationModel) -> _Layout:
        random = np.asarray(model.random_index, dtype=int)
        fixed = np.array([k for k in range(len(model.names)) if k not in set(random)], dtype=int)
        target = [model.names.index(e.parameter) for e in model.covariates]
        on_random = np.array([t in set(random) for t in target], dtype=bool)
        rows = np.zeros((1 + len(model.covariates), len(random)))
        rows[0] = 1.0
        for k, t in enumerate(target):
            if on_random[k]:
                rows[1 + k, list(random).index(t)] = 1.0
        return cls(
            random=random,
            fixed=fixed,
            effects_random=np.flatnonzero(on_random),
            effects_fixed=np.flatnonzero(~on_random),
            rows=rows,
        )


def _split(model: PopulationModel, layout: _Layout, theta: Array):
    """θ → (B [1 + c, r], Ω [r, r], θ_f: typical values of the fixed quantities, then the
    coefficients of the covariate effects on them)."""
    mu, beta, chol = model.unpack(theta)
    b = jnp.zeros(layout.rows.shape).at[0].set(mu[layout.random])
    for k in layout.effects_random:
        b = b.at[1 + k].set(jnp.asarray(layout.rows[1 + k]) * beta[k])
    theta_f = jnp.concatenate([mu[layout.fixed], beta[layout.effects_fixed]])
    return b, chol @ chol.T, theta_f


def _join(model: PopulationModel, layout: _Layout, b: Array, omega: Array, theta_f: Array):
    """(B, Ω, θ_f) → θ in `PopulationModel`'s layout."""
    p, c, r = len(model.names), len(model.covariates), model.n_random
    n_fixed = len(layout.fixed)
    mu = jnp.zeros(p).at[layout.random].set(b[0]).at[layout.fixed].set(theta_f[:n_fixed])
    beta = jnp.zeros(c)
    for k in layout.effects_random:
        beta = beta.at[k].set(b[1 + k] @ jnp.asarray(layout.rows[1 + k]))
    beta = beta.at[layout.effects_fixed].set(theta_f[n_fixed:])
    chol = jnp.linalg.cholesky(omega)
    parts = [mu, beta, jnp.log(jnp.diag(chol))]
    if model.omega == "full":
        rows, cols = np.tril_indices(r, -1)
        parts.append(chol[rows, cols])
    return jnp.concatenate(parts)


def _coordinates(model, layout, phi, z, theta_f):
    """One subject's u from its random quantities' coordinates φ and θ_f."""
    n_fixed = len(layout.fixed)
    u = jnp.zeros(len(model.names)).at[layout.random].set(phi)
    if n_fixed:
        loading = jnp.asarray(model.loading()[layout.effects_fixed][:, layout.fixed])
        shift = (z[layout.effects_fixed] * theta_f[n_fixed:]) @ loading
        u = u.at[layout.fixed].set(theta_f[:n_fixed] + shift)
    return u


def _log_likelihood(model, layout, problem, phi, z, theta_f):
    """log p(y_i | φ_i, θ_f); −∞ where the simulation fails."""
    value = -problem.negative_log_likelihood(_coordinates(model, layout, phi, z, theta_f))
    return jnp.where(jnp.isfinite(value), value, -jnp.inf)


def _log_prior(phi, mean, chol):
    w = jax.scipy.linalg.solve_triangular(chol, phi - mean, lower=True)
    return -0.5 * w @ w


def _accept(key, log_ratio):
    return jnp.log(jax.random.uniform(key)) < log_ratio


class _Chains(eqx.Module):
    phi: Float[Array, "k n r"]
    log_lik: Float[Array, "k n"]


#: kinds of the Metropolis–Hastings steps: re-evaluate the current point (after θ_f moved),
#: propose from the prior, random walk on the whole vector, then on component j (3 + j)
REFRESH, PRIOR, WALK, COMPONENT = 0, 1, 2, 3


def schedule(settings: SaemSettings, n_random: int) -> np.ndarray:
    """The kinds of one iteration's Metropolis–Hastings steps, in order."""
    kinds = [REFRESH] + [PRIOR] * settings.prior_steps + [WALK] * settings.walk_steps
    for j in range(n_random):
        kinds += [COMPONENT + j] * settings.component_steps
    return np.asarray(kinds, dtype=np.int64)


def _simulate(model, layout, settings, problems, z, chains, mean, chol, theta_f, scales, key):
    """The iteration's Metropolis–Hastings steps for every chain and subject: (chains,
    acceptance rates of the whole-vector and of each per-component random walk). Every kind
    of step shares one evaluation of the likelihood, so the compiled program holds one copy
    of the structural model's simulation."""
    r = model.n_random
    lik = jax.vmap(
        jax.vmap(lambda p, phi, zi: _log_likelihood(model, layout, p, phi, zi, theta_f)),
        in_axes=(None, 0, None),
    )
    prior = jax.vmap(jax.vmap(_log_prior, in_axes=(0, 0, None)), in_axes=(0, None, None))
    shape = chains.phi.shape
    kinds = schedule(settings, r)

    def step(carry, inputs):
        phi, ll, accepted = carry
        kind, key = inputs
        k1, k2 = jax.random.split(key)
        noise = jax.random.normal(k1, shape)
        component = jnp.clip(kind - COMPONENT, 0, r - 1)
        direction = jnp.where(
            kind == WALK, scales[0], jnp.zeros(r).at[component].set(scales[1 + component])
        )
        proposal = jnp.where(
            kind == REFRESH,
            phi,
            jnp.where(kind == PRIOR, mean + noise @ chol.T, phi + (noise * direction) @ chol.T),
        )
        ll_new = lik(problems, proposal, z)
        walk = kind >= WALK
        log_ratio = ll_new - ll
        log_ratio += jnp.where(walk, prior(proposal, mean, chol) - prior(phi, mean, chol), 0.0)
        ok = jax.vmap(jax.vmap(_accept))(jax.random.split(k2, shape[:2]), log_ratio)
        ok = (ok & jnp.isfinite(ll_new)) | (kind == REFRESH)
        rate = jnp.mean(ok.astype(jnp.float64))
        slot = jnp.where(kind == WALK, 0, 1 + component)
        accepted = accepted.at[slot].add(jnp.where(walk, rate, 0.0))
        phi = jnp.where(ok[..., None], proposal, phi)
        return (phi, jnp.where(ok, ll_new, ll), accepted), None

    carry = (chains.phi, chains.log_lik, jnp.zeros(1 + r))
    keys = jax.random.split(key, len(kinds))
    (phi, ll, accepted), _ = jax.lax.scan(step, carry, (jnp.asarray(kinds), keys))
    counts = np.array([settings.walk_steps] + [settings.component_steps] * r, dtype=np.float64)
    acceptance = accepted / jnp.asarray(np.maximum(counts, 1.0))
    return _Chains(phi=phi, log_lik=ll), acceptance


def _fixed_derivatives(model, layout, problem, phi, z, theta_f):
    """One subject's −log p(y_i | φ_i, θ_f), its gradient in θ_f and its expected information
    in θ_f (Gaussian likelihood: JₘᵀJₘ + 2JₛᵀJₛ in units of the SDs; first-order forward
    derivatives only)."""

    def parts(t):
        u = _coordinates(model, layout, phi, z, t)
        mean, sd, mask = problem.mean_and_sd(u)
        return problem.negative_log_likelihood(u), (mean, sd, mask)

    def along(d):
        return jax.jvp(parts, (theta_f,), (d,))

    (nll, (_, sd, mask)), (d_nll, (d_mean, d_sd, _)) = jax.vmap(along, out_axes=(None, 0))(
        jnp.eye(theta_f.shape[0])
    )
    weight = jnp.where(mask, 1.0 / sd, 0.0)
    a, b = d_mean * weight, jnp.sqrt(2.0) * d_sd * weight
    return nll, d_nll, a @ a.T + b @ b.T


def _fixed_update(model, layout, settings, problems, z, phi, theta_f):
    """θ_f*: damped Gauss–Newton steps on −Σ log p(y_i | φ_i, θ_f) (averaged over chains)
    with its expected information, from the current θ_f."""
    n_chains = phi.shape[0]

    def total(t):
        values = jax.vmap(
            jax.vmap(lambda p, ph, zi: _log_likelihood(model, layout, p, ph, zi, t)),
            (None, 0, None),
        )(problems, phi, z)
        return -jnp.sum(values) / n_chains

    def value_gradient_information(t):
        def one(problem, ph, zi):
            return _fixed_derivatives(model, layout, problem, ph, zi, t)

        nll, grad, info = jax.vmap(jax.vmap(one), (None, 0, None))(problems, phi, z)
        return (
            jnp.sum(nll) / n_chains,
            jnp.sum(grad, axis=(0, 1)) / n_chains,
            jnp.sum(info, axis=(0, 1)) / n_chains,
        )

    def step(carry, _):
        t, damping = carry
        value, grad, info = value_gradient_information(t)
        scale = jnp.diag(info) + 1e-12
        step = -jnp.linalg.solve(info + damping * jnp.diag(scale), grad)
        # at most one unit (a factor e for log-scale quantities) per step
        trial = t + step / jnp.maximum(1.0, jnp.max(jnp.abs(step)))
        value_trial = total(trial)
        better = jnp.isfinite(value_trial) & (value_trial <= value)
        t = jnp.where(better, trial, t)
        return (t, jnp.where(better, damping / 3.0, damping * 10.0)), None

    (theta_f, _), _ = jax.lax.scan(step, (theta_f, jnp.asarray(1e-3)), None, settings.fixed_steps)
    return theta_f


def _maximise_random(layout, s_xphi, s_phiphi, gram, n, diagonal):
    """B and Ω from the approximated statistics."""
    rows = jnp.asarray(layout.rows)

    def coefficients(j):
        mask = rows[:, j]
        g = gram * jnp.outer(mask, mask) + jnp.diag(1.0 - mask)
        return jnp.linalg.solve(g, s_xphi[:, j] * mask)

    b = jax.vmap(coefficients, out_axes=1)(jnp.arange(rows.shape[1]))
    omega = (s_phiphi - b.T @ s_xphi - s_xphi.T @ b + b.T @ gram @ b) / n
    omega = 0.5 * (omega + omega.T)
    if diagonal:
        omega = jnp.diag(jnp.diag(omega))
    return b, omega + 1e-12 * jnp.eye(omega.shape[0])


def _anneal(omega, previous):
    """No variance below ANNEALING_FACTOR of its previous value (correlations kept)."""
    var, floor = jnp.diag(omega), ANNEALING_FACTOR * jnp.diag(previous)
    d = jnp.sqrt(jnp.maximum(var, floor) / var)
    return omega * jnp.outer(d, d)


class SaemOutput(eqx.Module):
    """SAEM's estimate θ, θ at every iteration, the random walks' acceptance rates at every
    iteration, and each subject's conditional mean and covariance of its standardised random
    effects ξ (η = Lξ) at θ, averaged over the chains and the smoothing iterations."""

    theta: Float[Array, " q"]
    trace: Float[Array, "k q"]
    acceptance: Float[Array, "k a"]
    conditional_mean: Float[Array, "n r"]
    conditional_covariance: Float[Array, "n r r"]
    chains: Float[Array, "c n r"]  # the chains' last points φ
    scales: Float[Array, " a"]  # the random walks' adapted step scales


class _Setup(eqx.Module):
    """What every SAEM iteration reads: the design x_i = [1, z_i] and its Gram matrix."""

    design: Float[Array, "n d"]
    gram: Float[Array, "d d"]

    @classmethod
    def of(cls, z):
        design = jnp.concatenate([jnp.ones((z.shape[0], 1)), z], axis=1)
        return cls(design=design, gram=design.T @ design)


def saem_start(
    model: PopulationModel, z: Float[Array, "n c"], theta0: Float[Array, " q"], settings
) -> tuple:
    """SAEM's state before its first iteration: (chains, B, Ω, θ_f, the two approximated
    statistics, the random walks' scales, each subject's running first and second moments)."""
    layout = _Layout.of(model)
    setup = _Setup.of(z)
    n, r = z.shape[0], model.n_random
    b, omega, theta_f = _split(model, layout, theta0)
    phi0 = jnp.broadcast_to(setup.design @ b, (settings.chains, n, r))
    # the first step of every iteration re-evaluates the chains' points (REFRESH)
    chains = _Chains(phi=phi0, log_lik=jnp.zeros(phi0.shape[:2]))
    statistics = (jnp.zeros((1 + z.shape[1], r)), jnp.zeros((r, r)))
    moments = (jnp.zeros((n, r)), jnp.zeros((n, r, r)))
    return (chains, b, omega, theta_f, *statistics, jnp.ones(1 + r), *moments)


def saem_schedule(settings: SaemSettings, key: PRNGKeyArray) -> tuple[Array, Array]:
    """Every iteration's number k (negative: burn-in, θ held) and random key."""
    total = settings.burn_in + settings.iterations
    steps = jnp.arange(total, dtype=jnp.float64) - settings.burn_in
    return steps, jax.random.split(key, total)


def _iterate(model, layout, settings, problems, z, setup, state, k, key):
    """One SAEM iteration (k < 0: burn-in, simulation only): the new state, θ, acceptance."""
    chains, b, omega, theta_f, s_xphi, s_phiphi, scales, first, second = state
    n = z.shape[0]
    design = setup.design
    chol = jnp.linalg.cholesky(omega)
    chains, acceptance = _simulate(
        model, layout, settings, problems, z, chains, design @ b, chol, theta_f, scales, key
    )
    scales = scales * jnp.exp(0.5 * (acceptance - TARGET_ACCEPTANCE))
    gamma = jnp.where(k < settings.exploration, 1.0, 1.0 / (k - settings.exploration + 2.0))
    gamma = jnp.where(k < 0, 0.0, gamma)
    phi = chains.phi
    # each subject's moments of φ: the average over the smoothing iterations
    weight = jnp.where(k < settings.exploration, 1.0, 1.0 / (k - settings.exploration + 1.0))
    first = first + weight * (jnp.mean(phi, axis=0) - first)
    second = second + weight * (jnp.mean(jnp.einsum("kni,knj->knij", phi, phi), 0) - second)
    new_xphi = jnp.mean(jnp.einsum("nc,knr->kcr", design, phi), axis=0)
    new_phiphi = jnp.mean(jnp.einsum("knr,kns->krs", phi, phi), axis=0)
    # the first iteration after burn-in replaces the statistics (γ = 1)
    s_xphi = s_xphi + gamma * (new_xphi - s_xphi)
    s_phiphi = s_phiphi + gamma * (new_phiphi - s_phiphi)
    diagonal = model.omega == "diagonal"
    b_new, omega_new = _maximise_random(layout, s_xphi, s_phiphi, setup.gram, n, diagonal)
    omega_new = jnp.where(k < settings.annealing, _anneal(omega_new, omega), omega_new)
    burn = k < 0
    b_new = jnp.where(burn, b, b_new)
    omega_new = jnp.where(burn, omega, omega_new)
    if len(layout.fixed) + len(layout.effects_fixed):
        target = _fixed_update(model, layout, settings, problems, z, phi, theta_f)
        theta_f = theta_f + gamma * (target - theta_f)
    state = (chains, b_new, omega_new, theta_f, s_xphi, s_phiphi, scales, first, second)
    return state, _join(model, layout, b_new, omega_new, theta_f), acceptance


@eqx.filter_jit
def saem_segment(
    model: PopulationModel,
    problems: AbstractFitProblem,
    z: Float[Array, "n c"],
    state: tuple,
    steps: Float[Array, " s"],
    keys: Array,  # [s, …]: one random key per iteration
    active: Array,
    settings: SaemSettings = SaemSettings(),
) -> tuple[tuple, Float[Array, "s q"], Float[Array, "s a"]]:
    """SAEM's iterations `steps` (with their `keys`) from `state`; an iteration whose `active`
    flag is false leaves the state as it is (segments of one length, one compiled program).
    Returns the state, θ after each iteration and the random walks' acceptance rates."""
    layout = _Layout.of(model)
    setup = _Setup.of(z)
    q = len(model.theta_names)
    a = 1 + model.n_random

    def one(state, inputs):
        k, key, on = inputs

        def run(state):
            return _iterate(model, layout, settings, problems, z, setup, state, k, key)

        def skip(state):
            return state, jnp.zeros(q), jnp.zeros(a)

        state, theta, acceptance = jax.lax.cond(on, run, skip, state)
        return state, (theta, acceptance)

    state, (trace, acceptance) = jax.lax.scan(one, state, (steps, keys, active))
    return state, trace, acceptance


def saem_output(
    model: PopulationModel,
    z: Float[Array, "n c"],
    state: tuple,
    trace: Float[Array, "k q"],
    acceptance: Float[Array, "k a"],
) -> SaemOutput:
    """SAEM's result from its final state and its iterations' θ and acceptance rates (the
    burn-in's removed)."""
    chains, b, omega, _, _, _, scales, first, second = state
    design = _Setup.of(z).design
    chol = jnp.linalg.cholesky(omega)
    covariance = second - jnp.einsum("ni,nj->nij", first, first)

    def standardise(mean, cov):
        # φ = m + Lξ: ξ = L⁻¹(φ − m), Cov ξ = L⁻¹ Cov φ L⁻ᵀ
        w = jax.scipy.linalg.solve_triangular(chol, mean, lower=True)
        a = jax.scipy.linalg.solve_triangular(chol, cov, lower=True)
        return w, jax.scipy.linalg.solve_triangular(chol, a.T, lower=True)

    xi_mean, xi_cov = jax.vmap(standardise)(first - design @ b, covariance)
    return SaemOutput(
        theta=trace[-1],
        trace=trace,
        acceptance=acceptance,
        conditional_mean=xi_mean,
        conditional_covariance=xi_cov,
        chains=chains.phi,
        scales=scales,
    )


def saem(
    model: PopulationModel,
    problems: AbstractFitProblem,
    z: Float[Array, "n c"],
    theta0: Float[Array, " q"],
    key: PRNGKeyArray,
    settings: SaemSettings = SaemSettings(),
) -> SaemOutput:
    """SAEM's estimate of θ from `theta0` (problems stacked along a leading subject axis), all
    iterations in one segment (`fit_population` runs them in checkpointed segments)."""
    steps, keys = saem_schedule(settings, key)
    state = saem_start(model, z, theta0, settings)
    active = jnp.ones(steps.shape[0], dtype=bool)
    state, trace, acceptance = saem_segment(
        model, problems, z, state, steps, keys, active, settings
    )
    burn = settings.burn_in
    return saem_output(model, z, state, trace[burn:], acceptance[burn:])


def chains_at(
    model: PopulationModel,
    theta: Float[Array, " q"],
    z: Float[Array, "n c"],
    xi: Float[Array, "n r"],
    n_chains: int,
) -> tuple[Float[Array, "k n r"], Float[Array, " a"]]:
    """Markov chains [k, n, r] on φ (SAEM's latent coordinates) at standardised random
    effects ξ (e.g. FOCE-I's EBEs), and unit random-walk scales."""
    b, _, _ = _split(model, _Layout.of(model), theta)
    phi = _Setup.of(z).design @ b + xi @ model.unpack(theta)[2].T
    return jnp.broadcast_to(phi, (n_chains, *phi.shape)), jnp.ones(1 + model.n_random)


#: Metropolis–Hastings iterations before the information's draws (chains from the EBEs)
INFORMATION_BURN_IN = 20


def _complete_data_derivatives(model, layout, problems, z, design, theta, phi):
    """Gradient s [k, n, q] and Hessian h [k, n, q, q] in θ (`PopulationModel`'s layout) of
    every chain's and subject's complete-data log-likelihood log p(y_i, φ_i; θ) =
    log p(y_i | φ_i, θ_f) + log N(φ_i; x_iᵀB, Ω), φ held. The prior's part is exact; the
    likelihood's (the quantities without a random effect, e.g. error terms) uses the
    conditional expected information, first-order derivatives only."""
    p, r = len(model.names), model.n_random
    index_f = np.concatenate([layout.fixed, p + layout.effects_fixed]).astype(int)

    def log_prior(t, ph, x):
        b, _, _ = _split(model, layout, t)
        chol = model.unpack(t)[2]
        w = jax.scipy.linalg.solve_triangular(chol, ph - x @ b, lower=True)
        return -jnp.sum(jnp.log(jnp.diag(chol))) - 0.5 * w @ w - 0.5 * r * jnp.log(2.0 * jnp.pi)

    def one(problem, ph, zi, x):
        s = jax.grad(log_prior)(theta, ph, x)
        h = jax.hessian(log_prior)(theta, ph, x)
        if index_f.size:
            _, d_nll, info = _fixed_derivatives(model, layout, problem, ph, zi, theta[index_f])
            s = s.at[index_f].add(-d_nll)
            h = h.at[np.ix_(index_f, index_f)].add(-info)
        return s, h

    return jax.vmap(jax.vmap(one), (None, 0, None, None))(problems, phi, z, design)


@eqx.filter_jit
def stochastic_information(
    model: PopulationModel,
    problems: AbstractFitProblem,
    z: Float[Array, "n c"],
    theta: Float[Array, " q"],
    chains: Float[Array, "k n r"],
    scales: Float[Array, " a"],
    key: PRNGKeyArray,
    settings: SaemSettings = SaemSettings(),
    burn_in: int = INFORMATION_BURN_IN,
) -> tuple[Float[Array, "q q"], Float[Array, "n q"]]:
    """The observed Fisher information −∇² log L(θ) of the marginal likelihood by Louis'
    identity, its expectations by Markov chain Monte Carlo at θ held (Monolix's "stochastic
    approximation" of the FIM): Σ_i (E[−∇² log p(y_i, φ_i)] − Cov[∇ log p(y_i, φ_i)]) over
    p(φ_i | y_i; θ), from `settings.information_draws` draws of each chain after `burn_in`
    iterations, starting from `chains` [k, n, r] with the random walks' `scales`. Simulations
    of the structural model only, plus first-order derivatives in the quantities without a
    random effect. Also returns each subject's mean score E[∇ log p(y_i, φ_i)] [n, q]."""
    layout = _Layout.of(model)
    n, q = z.shape[0], theta.shape[0]
    design = jnp.concatenate([jnp.ones((n, 1)), z], axis=1)
    b, omega, theta_f = _split(model, layout, theta)
    mean, chol = design @ b, jnp.linalg.cholesky(omega)
    state = _Chains(phi=chains, log_lik=jnp.zeros(chains.shape[:2]))

    def simulate(state, scales, key):
        return _simulate(
            model, layout, settings, problems, z, state, mean, chol, theta_f, scales, key
        )

    def burn(carry, key):
        state, scales = carry
        state, acceptance = simulate(state, scales, key)
        return (state, scales * jnp.exp(0.5 * (acceptance - TARGET_ACCEPTANCE))), None

    k_burn, k_draw = jax.random.split(key)
    (state, scales), _ = jax.lax.scan(burn, (state, scales), jax.random.split(k_burn, burn_in))

    def draw(carry, key):
        state, sum_s, sum_g = carry
        state, _ = simulate(state, scales, key)
        s, h = _complete_data_derivatives(model, layout, problems, z, design, theta, state.phi)
        sum_s = sum_s + jnp.sum(s, axis=0)
        sum_g = sum_g + jnp.sum(h, axis=(0, 1)) + jnp.einsum("kni,knj->ij", s, s)
        return (state, sum_s, sum_g), None

    carry = (state, jnp.zeros((n, q)), jnp.zeros((q, q)))
    draws = settings.information_draws
    (_, sum_s, sum_g), _ = jax.lax.scan(draw, carry, jax.random.split(k_draw, draws))
    count = draws * chains.shape[0]
    scores, g = sum_s / count, sum_g / count
    information = -g + scores.T @ scores
    return 0.5 * (information + information.T), scores


def importance_sampling_ofv(
    model: PopulationModel,
    problems: AbstractFitProblem,
    theta: Float[Array, " q"],
    z: Float[Array, "n c"],
    xi_hat: Float[Array, "n r"],
    curvature: Float[Array, "n r r"],
    key: PRNGKeyArray,
    samples: int = 2000,
    dof: float = 5.0,
) -> Float[Array, " n"]:
    """−2 log L_i of every subject by importance sampling (Monolix's estimator): draws of ξ
    from a Student t (`dof`) centred at the EBE ξ̂_i with scale H_i⁻¹ (the Laplace
    approximation's curvature), weights p(y_i | ξ) N(ξ; 0, I)/q(ξ). Exact as `samples` → ∞,
    whatever the estimation method; its Monte Carlo SD shrinks as 1/√samples."""
    r = model.n_random

    def one(problem, zi, centre, h, key):
        scale = jnp.linalg.cholesky(jnp.linalg.inv(h))
        k1, k2 = jax.random.split(key)
        normal = jax.random.normal(k1, (samples, r))
        chi2 = 2.0 * jax.random.gamma(k2, dof / 2.0, (samples,))
        t = normal / jnp.sqrt(chi2 / dof)[:, None]
        xi = centre + t @ scale.T
        log_q = (
            jax.scipy.special.gammaln((dof + r) / 2.0)
            - jax.scipy.special.gammaln(dof / 2.0)
            - 0.5 * r * jnp.log(dof * jnp.pi)
            - jnp.sum(jnp.log(jnp.diag(scale)))
            - 0.5 * (dof + r) * jnp.log1p(jnp.sum(t**2, axis=1) / dof)
        )

        def log_joint(x):
            nll = problem.negative_log_likelihood(model.individual(theta, zi, x))
            return -nll - 0.5 * x @ x - 0.5 * r * jnp.log(2.0 * jnp.pi)

        log_w = jax.lax.map(log_joint, xi, batch_size=256) - log_q
        log_w = jnp.where(jnp.isfinite(log_w), log_w, -jnp.inf)
        return -2.0 * (jax.scipy.special.logsumexp(log_w) - jnp.log(samples))

    keys = jax.random.split(key, z.shape[0])
    return jax.vmap(one)(problems, z, xi_hat, curvature, keys)
