"""Optimisers on a `FitProblem`: Optimistix (Levenberg–Marquardt, BFGS) and Optax (L-BFGS, Adam
with a schedule), each run as one `lax.while_loop` that records the loss at every iteration, so
a batch of starts or subjects vmaps into one program.

Levenberg–Marquardt needs the Jacobian of the residuals: forward mode through the solver
(`diffrax.ForwardMode`). The gradient-based minimisers use reverse mode
(`diffrax.RecursiveCheckpointAdjoint`). `optimise` sets the adjoint the method needs.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import optimistix as optx
from jaxtyping import Array, Bool, Float, Int

from ._objective import FitProblem

Method = Literal["levenberg_marquardt", "bfgs", "lbfgs", "adam"]
METHODS: tuple[str, ...] = ("levenberg_marquardt", "bfgs", "lbfgs", "adam")
#: The default optimiser: the fastest to converge on our problems (experiments/fit_optimisers.py:
#: L-BFGS reached the optimum from every ×/÷ 2 start in 18–26 iterations, 0.35–0.54 s).
DEFAULT_METHOD: Method = "lbfgs"
#: The default for vmapped optimisation (multistart, profiles): a vmapped while loop runs every
#: lane as long as the slowest, and L-BFGS's zoom line search nests a second data-dependent loop;
#: Levenberg–Marquardt's fixed per-iteration cost vmaps well (the test multistart of 4 starts
#: took > 10 min with L-BFGS, ~1.5 min with Levenberg–Marquardt on a 2-core CPU).
VMAPPED_METHOD: Method = "levenberg_marquardt"
#: Levenberg–Marquardt also stops right after an accepted step from which a full Gauss–Newton
#: step would lower ½‖r‖² by less than this (the remaining distance to the local quadratic
#: optimum is then below √(2·1e-3) ≈ 0.045 standard errors in the Fisher metric; a likelihood
#: change of 1e-3 is far below the 1.92 of a 95 % profile interval). Optimistix's own test
#: (every residual and every parameter changing by less than rtol/atol) alone spent most
#: iterations after the likelihood had converged, rejecting steps against the solver's
#: tolerance-level noise: on the 20-subject test cohort 33 → 15 iterations per subject on
#: average, every negative log-likelihood within 1e-3 of the stricter test's.
DECREMENT_TOLERANCE = 1e-3


class OptimisationResult(NamedTuple):
    u: Float[Array, " p"]  # optimum, unconstrained coordinates
    loss: Float[Array, ""]  # negative log-likelihood (+ prior) at u
    history: Float[Array, " max_steps"]  # loss per iteration (NaN after the end)
    iterations: Int[Array, ""]
    converged: Bool[Array, ""]
    solve_success: Bool[Array, ""]


def with_adjoint(problem: FitProblem, method: str) -> FitProblem:
    adjoint = (
        dfx.ForwardMode() if method == "levenberg_marquardt" else dfx.RecursiveCheckpointAdjoint()
    )
    return eqx.tree_at(lambda p: p.options.adjoint, problem, adjoint)


def jacobian_residuals(problem, with_likelihood: bool = False):
    """The weighted residuals of `problem` as a function of u whose derivative is the exact
    forward-mode Jacobian, computed once with the residuals (one pass through the solver with
    one tangent per parameter) and applied as a matrix.

    Optimistix linearises the residual function and evaluates the linearisation several times
    per iteration (materialising J, J·δ for the predicted reduction); linearising the solver's
    while loop directly re-runs the whole forward-mode solve each time (3× the cost per
    iteration and ~40 % more compile time, measured on the batch benchmark's clamp problem).
    Here the linearisation is a stored matrix. Derivatives with respect to anything but u are
    not defined (internal to the optimisers).

    With `with_likelihood`, the function returns (residuals, (negative log-likelihood, solve
    succeeded)) from the same solve (the pair is a value, not differentiated)."""
    problem = with_adjoint(problem, "levenberg_marquardt")
    if with_likelihood:
        return _jacobian_residuals_nll(problem)
    dynamic, static = eqx.partition(problem, eqx.is_array)

    @jax.custom_jvp
    def residuals(u, dynamic):
        return eqx.combine(dynamic, static).residuals(u)

    @residuals.defjvp
    def _jvp(primals, tangents):
        u, dyn = primals
        du, _ = tangents
        p = eqx.combine(dyn, static)
        jac, r = jax.jacfwd(lambda v: (p.residuals(v),) * 2, has_aux=True)(u)
        return r, jac @ du

    return lambda u: residuals(u, dynamic)


def _jacobian_residuals_nll(problem):
    dynamic, static = eqx.partition(problem, eqx.is_array)

    def evaluate(p, v):
        preds, ok = p.predictions(v)
        r = p.residuals_from(v, preds, ok)
        return r, (r, p.negative_log_likelihood_from(v, preds, ok), ok)

    @jax.custom_jvp
    def residuals(u, dynamic):
        _, out = evaluate(eqx.combine(dynamic, static), u)
        return out

    @residuals.defjvp
    def _jvp(primals, tangents):
        u, dyn = primals
        du, _ = tangents
        jac, (r, nll, ok) = jax.jacfwd(
            lambda v: evaluate(eqx.combine(dyn, static), v), has_aux=True
        )(u)
        zero = jax.tree.map(
            lambda x: (
                np.zeros(np.shape(x), jax.dtypes.float0)
                if jnp.issubdtype(jnp.asarray(x).dtype, jnp.bool_)
                else jnp.zeros_like(x)
            ),
            (nll, ok),
        )
        return (r, nll, ok), (jac @ du, *zero)

    def fn(u):
        r, nll, ok = residuals(u, dynamic)
        return r, (nll, ok)

    return fn


def gauss_newton_decrement(state) -> Float[Array, ""]:
    """½‖P_J r‖² at the last accepted iterate of an Optimistix Gauss–Newton/LM `state`: the
    decrease of ½‖r‖² a full Gauss–Newton step would predict (P_J: the projection onto the
    Jacobian's columns, by a reduced QR; rank-deficient J gives an upper bound)."""
    jac = state.f_info.jac.as_matrix()
    q, _ = jnp.linalg.qr(jac)
    return 0.5 * jnp.sum((q.T @ state.f_info.residual) ** 2)


def decrement_converged(state, tolerance: float) -> Bool[Array, ""]:
    """True right after an accepted step whose Gauss–Newton decrement is below `tolerance`."""
    return (state.num_steps_since_acceptance == 0) & (gauss_newton_decrement(state) < tolerance)


def _optimistix_loop(solver, fn, u0, max_steps: int, options: dict, decrement: float | None = None):
    tags = frozenset()
    f_struct, aux_struct = jax.eval_shape(lambda y: fn(y, None), u0)
    state = solver.init(fn, u0, None, options, f_struct, aux_struct, tags)
    # The state holds closures (jaxprs of the linearised residuals): carry only its arrays.
    dynamic, static = eqx.partition(state, eqx.is_array)
    history = jnp.full((max_steps,), jnp.nan, dtype=u0.dtype)

    def cond(carry):
        i, _, _, done, _ = carry
        return (i < max_steps) & ~done

    def body(carry):
        i, y, dyn, _, hist = carry
        st = eqx.combine(dyn, static)
        y, st, aux = solver.step(fn, y, None, options, st, tags)
        done, result = solver.terminate(fn, y, None, options, st, tags)
        if decrement is not None:
            done = done | decrement_converged(st, decrement)
        done = done & (result == optx.RESULTS.successful)
        return i + 1, y, eqx.filter(st, eqx.is_array), done, hist.at[i].set(aux)

    init = (jnp.asarray(0), u0, dynamic, jnp.asarray(False), history)
    i, u, _, done, history = jax.lax.while_loop(cond, body, init)
    return u, i, done, history


def _optax_loop(optimiser, f, u0, max_steps: int, rtol: float, atol: float, uses_value: bool):
    """Optax updates in a while loop. Stops when the gradient is below `atol`, the step below
    `atol`/100, or the loss changed by less than `rtol`·(1 + |loss|) twice in a row."""
    value_and_grad = optax.value_and_grad_from_state(f) if uses_value else jax.value_and_grad(f)
    history = jnp.full((max_steps,), jnp.nan, dtype=u0.dtype)

    def cond(carry):
        i, _, _, done, _, _, _ = carry
        return (i < max_steps) & ~done

    def body(carry):
        i, u, state, _, hist, previous, was_flat = carry
        if uses_value:
            value, grad = value_and_grad(u, state=state)
            updates, state = optimiser.update(grad, state, u, value=value, grad=grad, value_fn=f)
        else:
            value, grad = value_and_grad(u)
            updates, state = optimiser.update(grad, state, u)
        u_new = optax.apply_updates(u, updates)
        step = jnp.max(jnp.abs(u_new - u))
        flat = jnp.abs(previous - value) <= rtol * (1.0 + jnp.abs(value))
        done = (jnp.max(jnp.abs(grad)) < atol) | (step < atol * 1e-2) | (flat & was_flat)
        return i + 1, u_new, state, done, hist.at[i].set(value), value, flat

    inf = jnp.asarray(jnp.inf, dtype=u0.dtype)
    false = jnp.asarray(False)
    init = (jnp.asarray(0), u0, optimiser.init(u0), false, history, inf, false)
    i, u, _, done, history, _, _ = jax.lax.while_loop(cond, body, init)
    return u, i, done, history


def optimise(
    problem: FitProblem,
    u0: Float[Array, " p"] | None = None,
    *,
    method: Method = DEFAULT_METHOD,
    max_steps: int = 100,
    rtol: float = 1e-8,
    atol: float = 1e-8,
    learning_rate: float = 0.05,
    decrement: float = DECREMENT_TOLERANCE,
) -> OptimisationResult:
    """Minimise the problem's objective from `u0` (default the base model's values).

    - `levenberg_marquardt` (Optimistix): on the weighted residuals, forward-mode Jacobian;
      stops when the step and the cost change fall below `rtol`/`atol`, or when a full
      Gauss–Newton step would lower the objective by less than `decrement`
      (`DECREMENT_TOLERANCE`);
    - `bfgs` (Optimistix) and `lbfgs` (Optax, zoom line search): on the negative
      log-likelihood, reverse-mode gradient; stop at gradient (max-abs) below `atol`;
    - `adam` (Optax, cosine-decayed `learning_rate`): `max_steps` iterations or a vanishing
      gradient.
    """
    if method not in METHODS:
        raise ValueError(f"unknown optimiser {method!r}; use one of {', '.join(METHODS)}")
    problem = with_adjoint(problem, method)
    u0 = problem.initial() if u0 is None else jnp.asarray(u0, dtype=jnp.float64)
    nll = problem.negative_log_likelihood
    if method == "levenberg_marquardt":
        if not getattr(problem, "least_squares", True):
            raise ValueError(
                "Levenberg–Marquardt needs normal noise and normal priors (a sum of squares); "
                "use 'lbfgs' or 'bfgs' for Laplace noise or priors"
            )
        if problem.error_parameters:
            raise ValueError(
                "Levenberg–Marquardt needs fixed error models; estimate sigma with 'bfgs' or "
                "'lbfgs', or fix it"
            )

        residuals = jacobian_residuals(problem)

        def fn(u, args):
            r = residuals(u)
            return r, 0.5 * jnp.sum(r**2)

        solver = optx.LevenbergMarquardt(rtol=rtol, atol=atol)
        u, i, done, history = _optimistix_loop(
            solver, fn, u0, max_steps, {"jac": "fwd"}, decrement=decrement
        )
    elif method == "bfgs":

        def fn(u, args):
            value = nll(u)
            return value, value

        solver = optx.BFGS(rtol=rtol, atol=atol)
        u, i, done, history = _optimistix_loop(solver, fn, u0, max_steps, {})
    elif method == "lbfgs":
        u, i, done, history = _optax_loop(optax.lbfgs(), nll, u0, max_steps, rtol, atol, True)
    else:
        schedule = optax.cosine_decay_schedule(learning_rate, max_steps, alpha=0.01)
        u, i, done, history = _optax_loop(
            optax.adam(schedule), nll, u0, max_steps, rtol, atol, False
        )
    loss = nll(u)
    ok = problem.success(u)
    return OptimisationResult(
        u=u, loss=loss, history=history, iterations=i, converged=done & ok, solve_success=ok
    )


optimise_jit = eqx.filter_jit(optimise)
