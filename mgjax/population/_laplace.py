"""FOCE-I: the Laplace approximation of each subject's marginal likelihood at its empirical
Bayes estimate, with the Gauss–Newton (expected Fisher) curvature — first-order conditional
estimation with interaction (the residual error is evaluated at the individual predictions).

In the standardised random effects ξ (η = L·ξ, ξ ~ N(0, I)) subject i's objective is

    f_i(ξ) = −log p(y_i | u_i(ξ)) + ½‖ξ‖²,      H_i = E[∇²_ξ f_i]

(the expected information of the subject's Gaussian likelihood, `value_gradient_curvature`)
and

    −2 log L_i ≈ 2 f_i(ξ̂_i) + log det H_i(ξ̂_i)        (all constants included).

Derivatives of the population objective are exact: ξ̂_i is found with θ held constant, then
moved by one Newton step written in θ with the exact Hessian — ξ̃ = ξ̂ − (∇²f)⁻¹∇f — whose
derivative is the implicit function theorem's dξ̂/dθ = −(∇²f)⁻¹ ∂²f/∂ξ∂θ, while its value is
ξ̂ (∇f = 0 at the optimum).

The structural problem provides, besides the `AbstractFitProblem` interface,
`mean_and_sd(u)`: the model's mean, the residual error's SD and a mask, per observation; and
optionally `likelihood_parts(u)` — the negative log-likelihood and those three from one
simulation.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from ..fit._problem import AbstractFitProblem
from ._model import PopulationModel

#: the inner (empirical Bayes) fit stops when max|∇f| falls below this
INNER_GRADIENT_TOLERANCE = 1e-7
#: and at this many damped Gauss–Newton steps at the most
INNER_MAX_STEPS = 100
#: or after a refused step when the undamped step predicts a decrease of f below this (nats),
INNER_DECREMENT_TOLERANCE = 1e-9
#: or after this many refused steps in a row
INNER_MAX_REJECTIONS = 8


def value_gradient_curvature(
    model: PopulationModel,
    problem: AbstractFitProblem,
    theta: Float[Array, " q"],
    z: Float[Array, " c"],
    xi: Float[Array, " r"],
) -> tuple[Array, Float[Array, " r"], Float[Array, "r r"]]:
    """f(ξ), ∇f(ξ) and the expected-information curvature H(ξ) of one subject (forward
    mode, r directions): with the problem's means f and SDs σ per observation,

        H = Σ_obs (∂f ∂fᵀ + 2 ∂σ ∂σᵀ)/σ² + I,

    the Fisher information of its Gaussian likelihood in ξ plus the prior's (FOCE-I: σ
    depends on the individual prediction, hence the σ term)."""

    def parts(x):
        nll, mean, sd, mask = _likelihood_parts(problem, model.individual(theta, z, x))
        return nll, (mean, sd, mask)

    def along(direction):
        return jax.jvp(parts, (xi,), (direction,))

    r = xi.shape[0]
    (nll, (_, sd, mask)), (d_nll, (d_mean, d_sd, _)) = jax.vmap(along, out_axes=(None, 0))(
        jnp.eye(r)
    )
    return nll + 0.5 * xi @ xi, d_nll + xi, _expected_curvature(d_mean, d_sd, sd, mask)


def _expected_curvature(d_mean, d_sd, sd, mask):
    """H = Σ_obs (∂f ∂fᵀ + 2 ∂σ ∂σᵀ)/σ² + I from the means' and SDs' derivatives in ξ
    [r, m] (`value_gradient_curvature`)."""
    weight = jnp.where(mask, 1.0 / sd, 0.0)
    a, b = d_mean * weight, jnp.sqrt(2.0) * d_sd * weight
    return a @ a.T + b @ b.T + jnp.eye(d_mean.shape[0])


def _objective_in_xi(model, problem, theta, z):
    def f(x):
        return problem.negative_log_likelihood(model.individual(theta, z, x)) + 0.5 * x @ x

    return f


class InnerFit(eqx.Module):
    """Empirical Bayes estimates of the subjects (stacked): ξ̂, f(ξ̂), steps taken, whether
    the gradient test was met."""

    xi: Float[Array, "n r"]
    value: Float[Array, " n"]
    steps: Int[Array, " n"]
    converged: Bool[Array, " n"]


def empirical_bayes(
    model: PopulationModel,
    problem: AbstractFitProblem,
    theta: Float[Array, " q"],
    z: Float[Array, " c"],
    xi0: Float[Array, " r"],
    max_steps: int = INNER_MAX_STEPS,
    tolerance: float = INNER_GRADIENT_TOLERANCE,
    decrement: float = INNER_DECREMENT_TOLERANCE,
    max_rejections: int = INNER_MAX_REJECTIONS,
) -> tuple[Array, Array, Array, Array]:
    """One subject's ξ̂ = argmin f by damped Gauss–Newton (Levenberg–Marquardt on H, which
    is ≥ I so every damped system is well posed): (ξ̂, f(ξ̂), steps, converged). A trial
    point whose f is not finite (a failed simulation) is rejected like an uphill one. It
    stops when max|∇f| < `tolerance`, or at a refused step when the undamped step predicts
    a decrease below `decrement` or after `max_rejections` refusals in a row (the
    noise floor of an adaptive solve, where more damping only costs simulations)."""
    theta = jax.lax.stop_gradient(theta)
    evaluate = eqx.Partial(value_gradient_curvature, model, problem, theta, z)
    r = xi0.shape[0]
    eye = jnp.eye(r)

    # the loop evaluates the candidate ξ it carries, so the subject's simulation (with its r
    # tangents) is traced once; its first pass evaluates ξ₀ against f = +∞
    def cond(state):
        k, stop = state[5], state[6]
        return (k <= max_steps) & ~stop

    def body(state):
        xi, f, g, h, damping, k, _, candidate, rejected = state
        f1, g1, h1 = evaluate(candidate)
        first = k == 0
        better = (jnp.isfinite(f1) & (f1 <= f)) | first
        step = candidate - xi
        xi, f, g, h = jax.tree.map(
            lambda new, old: jnp.where(better, new, old), (candidate, f1, g1, h1), (xi, f, g, h)
        )
        damping = jnp.where(first, damping, jnp.where(better, damping / 3.0, damping * 4.0))
        rejected = jnp.where(better, 0, rejected + 1)
        tiny = jnp.max(jnp.abs(step)) < 1e-12 * (1.0 + jnp.max(jnp.abs(xi)))
        converged = (jnp.max(jnp.abs(g)) < tolerance) | ~jnp.isfinite(f)
        # a step refused where the undamped step predicts almost no decrease, or refused
        # again and again, meets the simulation's own noise (an adaptive ODE solve's f is
        # smooth only to its tolerance): what is left is below `decrement`
        predicted = 0.5 * g @ jnp.linalg.solve(h, g)
        stalled = ~better & ((predicted < decrement) | (rejected >= max_rejections))
        stop = converged | (damping > 1e12) | (better & tiny & ~first) | stalled
        step = jnp.linalg.solve(h + damping * eye, g)
        return xi, f, g, h, damping, k + 1, stop, xi - step, rejected

    state = (
        xi0,
        jnp.asarray(jnp.inf, xi0.dtype),
        jnp.zeros(r),
        eye,
        jnp.asarray(1e-3),
        jnp.asarray(0),
        jnp.asarray(False),
        xi0,
        jnp.asarray(0),
    )
    xi, f, g, h, _, k, _, _, _ = jax.lax.while_loop(cond, body, state)
    k = jnp.maximum(k - 1, 0)  # the first pass evaluated ξ₀
    # converged: ∇f small, or no step predicts a decrease that matters
    small = (jnp.max(jnp.abs(g)) < 1e3 * tolerance) | (0.5 * g @ jnp.linalg.solve(h, g) < decrement)
    return xi, f, k, jnp.isfinite(f) & small


def subject_objective(
    model: PopulationModel,
    problem: AbstractFitProblem,
    theta: Float[Array, " q"],
    z: Float[Array, " c"],
    xi_hat: Float[Array, " r"],
) -> Array:
    """−2 log L_i (FOCE-I) at θ, differentiable in θ, given the subject's ξ̂ at θ."""
    xi_hat = jax.lax.stop_gradient(xi_hat)
    # the exact Hessian at θ held constant: the implicit function theorem's dξ̂/dθ needs it,
    # and its own derivative multiplies ∇f = 0, so it is not differentiated (second order)
    held = _objective_in_xi(model, problem, jax.lax.stop_gradient(theta), z)
    hessian = jax.lax.stop_gradient(jax.jacfwd(jax.jacfwd(held))(xi_hat))
    gradient = jax.jacfwd(_objective_in_xi(model, problem, theta, z))(xi_hat)
    xi = xi_hat - jnp.linalg.solve(hessian, gradient)
    f, _, h = value_gradient_curvature(model, problem, theta, z, xi)
    return 2.0 * f + jnp.linalg.slogdet(h)[1]


def _likelihood_parts(problem: AbstractFitProblem, u: Float[Array, " p"]):
    """(−log p(y | u), the means, the residual SDs, the mask) per observation, from one
    simulation where the problem offers it (`likelihood_parts`), else from two."""
    if hasattr(problem, "likelihood_parts"):
        return problem.likelihood_parts(u)
    mean, sd, mask = problem.mean_and_sd(u)
    return problem.negative_log_likelihood(u), mean, sd, mask


def _laplace_term(nll, xi, d_mean, d_sd, sd, mask):
    """2 f + log det H (FOCE-I's −2 log L_i at ξ) from the likelihood, ξ and the means' and
    SDs' derivatives in ξ [r, m] (`value_gradient_curvature`'s H)."""
    h = _expected_curvature(d_mean, d_sd, sd, mask)
    return 2.0 * (nll + 0.5 * xi @ xi) + jnp.linalg.slogdet(h)[1]


def subject_value_and_score(
    model: PopulationModel,
    problem: AbstractFitProblem,
    theta: Float[Array, " q"],
    z: Float[Array, " c"],
    xi_hat: Float[Array, " r"],
) -> tuple[Array, Float[Array, " q"]]:
    """−2 log L_i (FOCE-I) and its exact gradient in θ, given the subject's ξ̂ at θ, from
    one forward-over-forward pass through the model (the r columns of ∂u/∂ξ inside the p
    unit directions of the individual coordinates u: one simulation carrying (1 + r)(1 + p)
    tangents, where `jax.jacfwd` of `subject_objective` takes three). With
    F(θ, ξ) = 2f + log det H,

        dF/dθ = ∂_θF − ∂_ξFᵀ (∇²_ξξ f)⁻¹ ∂²_ξθ f        (the implicit function theorem),

    and the value F − ∂_ξFᵀ(∇²_ξξ f)⁻¹∇_ξ f: `subject_objective`'s, which evaluates F one
    Newton step from ξ̂ (equal to second order in ∇_ξ f, zero at the optimum)."""
    q, r = theta.shape[0], xi_hat.shape[0]
    eye_r = jnp.eye(r)
    directions = (
        jnp.concatenate([jnp.eye(q), jnp.zeros((r, q))]),
        jnp.concatenate([jnp.zeros((q, r)), eye_r]),
    )

    # the model sees (θ, ξ) only through u = individual(θ, ξ) (p quantities): differentiate
    # the simulation along p unit directions in u (outer) and the r columns of ∂u/∂ξ (inner)
    # — (1 + r)(1 + p) tangents —, then map to the q + r directions in (θ, ξ) by the chain
    # rule (u's own derivatives are algebra, no simulation)
    def u_and_columns(t, x):
        return model.individual(t, z, x), jax.jacfwd(lambda x_: model.individual(t, z, x_))(x)

    (u_hat, columns), (du, d_columns) = jax.vmap(
        lambda dt, dx: jax.jvp(u_and_columns, (theta, xi_hat), (dt, dx)), out_axes=(None, 0)
    )(*directions)  # u [p], ∂u/∂ξ [p, r]; along each v: ∂_v u [V, p], ∂_v ∂u/∂ξ [V, p, r]
    p = u_hat.shape[0]

    def outputs(u):
        return _likelihood_parts(problem, u)[:3]  # nll, mean, sd

    def along_columns(u):  # the outputs and their derivatives along ∂u/∂ξ_j
        return jax.vmap(lambda c: jax.jvp(outputs, (u,), (c,)), out_axes=(None, 0))(columns.T)

    mask = _likelihood_parts(problem, u_hat)[3]  # data (no simulation left after DCE)
    (primal, first), (d_unit, dd_unit) = jax.vmap(
        lambda e: jax.jvp(along_columns, (u_hat,), (e,)), out_axes=(None, 0)
    )(jnp.eye(p))
    # ∂_v o = o'·∂_v u;  ∂_v ∂_ξj o = o''[∂_v u, ∂u/∂ξ_j] + o'·∂_v(∂u/∂ξ_j)
    d_primal = jax.tree.map(lambda d: jnp.tensordot(du, d, axes=1), d_unit)
    d_first = jax.tree.map(
        lambda d1, d2: (
            jnp.einsum("vk,kj...->vj...", du, d2) + jnp.einsum("vkj,k...->vj...", d_columns, d1)
        ),
        d_unit,
        dd_unit,
    )
    nll, _, sd = primal
    g_nll, d_mean, d_sd = first  # ∂_ξ of nll [r], mean [r, m], sd [r, m]
    # along each (θ, ξ) direction v: ∂_v of the value and of the curvature's ingredients
    value, d_value = jax.vmap(
        lambda dn, dx, dm, ds, dsd: jax.jvp(
            lambda n, x, m_, s_, sd_: _laplace_term(n, x, m_, s_, sd_, mask),
            (nll, xi_hat, d_mean, d_sd, sd),
            (dn, dx, dm, ds, dsd),
        ),
        out_axes=(None, 0),
    )(d_primal[0], directions[1], d_first[1], d_first[2], d_primal[2])
    hessian = d_first[0][q:] + eye_r  # ∇²_ξξ f [r, r]
    cross = d_first[0][:q].T  # ∂²_ξθ f [r, q]
    gradient = g_nll + xi_hat  # ∇_ξ f
    d_theta, d_xi = d_value[:q], d_value[q:]
    w = jnp.linalg.solve(hessian.T, d_xi)  # (∇²f)⁻ᵀ ∂_ξF
    return value - w @ gradient, d_theta - cross.T @ w


def subjects_objective(
    model: PopulationModel,
    problems: AbstractFitProblem,
    theta: Float[Array, " q"],
    z: Float[Array, "n c"],
    xi_hat: Float[Array, "n r"],
) -> Float[Array, " n"]:
    """−2 log L_i of every subject (problems stacked along a leading axis)."""
    return jax.vmap(lambda p, zi, x: subject_objective(model, p, theta, zi, x))(problems, z, xi_hat)


def fit_subjects(
    model: PopulationModel,
    problems: AbstractFitProblem,
    theta: Float[Array, " q"],
    z: Float[Array, "n c"],
    xi0: Float[Array, "n r"],
    max_steps: int = INNER_MAX_STEPS,
) -> InnerFit:
    """Empirical Bayes estimates of every subject at θ, vmapped."""
    xi, f, k, ok = jax.vmap(lambda p, zi, x: empirical_bayes(model, p, theta, zi, x, max_steps))(
        problems, z, xi0
    )
    return InnerFit(xi=xi, value=f, steps=k, converged=ok)


def population_objective(
    theta: Float[Array, " q"], args: tuple[Any, ...]
) -> tuple[Array, InnerFit]:
    """The population's OFV (−2 log L, FOCE-I) and the inner fits; `args` = (model,
    problems, design z, ξ warm start, inner max steps)."""
    model, problems, z, xi0, max_steps = args
    inner = fit_subjects(model, problems, jax.lax.stop_gradient(theta), z, xi0, max_steps)
    ofv = jnp.sum(subjects_objective(model, problems, theta, z, inner.xi))
    # a θ where the approximation breaks down (e.g. an error SD overflowing, the OFV −∞) is
    # refused like an uphill step, never accepted as a minimum
    return jnp.where(jnp.isfinite(ofv), ofv, jnp.inf), inner


def expected_information(
    model: PopulationModel,
    problem: AbstractFitProblem,
    theta: Float[Array, " q"],
    z: Float[Array, " c"],
    xi_hat: Float[Array, " r"],
) -> Float[Array, "q q"]:
    """The subject's expected Fisher information about θ in the FOCE-I linearisation at its
    EBE (the population Fisher information of PFIM, Retout & Mentré): with the model's mean
    m and residual SD s linearised in the typical coordinates around û, and F = ∂m/∂η,

        y ~ N(m(θ), V(θ)),   V = F·Ω·Fᵀ + diag(s²),
        I_ab = ∂_a mᵀ V⁻¹ ∂_b m + ½ tr(V⁻¹ ∂_a V V⁻¹ ∂_b V).

    First-order derivatives of the model only (p forward directions), so it is cheap next
    to the exact gradient; ∂F/∂θ is neglected, as in FO/FOCE information matrices."""
    u0 = model.individual(theta, z, xi_hat)

    def parts(v):
        mean, sd, mask = problem.mean_and_sd(v)
        return mean, sd, mask.astype(mean.dtype)

    p = u0.shape[0]
    (mean, sd, mask), (jac, d_sd, _) = jax.vmap(
        lambda d: jax.jvp(parts, (u0,), (d,)), out_axes=(None, 1)
    )(jnp.eye(p))
    jac, d_sd = jac * mask[:, None], d_sd * mask[:, None]
    f = jac[:, jnp.asarray(model.random_index)]
    zeros = jnp.zeros(model.n_random)
    typical0 = model.individual(theta, z, zeros)

    def marginal(t):
        shift = model.individual(t, z, zeros) - typical0
        _, _, chol = model.unpack(t)
        sd_t = jnp.where(mask > 0, sd + d_sd @ shift, 1.0)
        return mean + jac @ shift, f @ (chol @ chol.T) @ f.T + jnp.diag(sd_t**2)

    (_, v), (d_mean, d_v) = jax.vmap(
        lambda d: jax.jvp(marginal, (theta,), (d,)), out_axes=(None, 0)
    )(jnp.eye(theta.shape[0]))
    v_inv = jnp.linalg.inv(v)
    a = jnp.einsum("ij,qjk->qik", v_inv, d_v)
    return d_mean @ v_inv @ d_mean.T + 0.5 * jnp.einsum("aij,bji->ab", a, a)
