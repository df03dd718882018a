"""Optimisers on a `FitProblem`: Optimistix (Levenberg–Marquardt, BFGS) and Optax (L-BFGS, Adam
with a schedule), each run as one `lax.while_loop` that records the loss at every iteration, so
a batch of starts or subjects vmaps into one program.

Levenberg–Marquardt needs the Jacobian of the residuals: forward mode through the solver
(`diffrax.ForwardMode`). The gradient-based minimisers use reverse mode
(`diffrax.RecursiveCheckpointAdjoint`). `optimise` sets the adjoint the method needs.
"""

import abc
from typing import Any, ClassVar, Literal, NamedTuple

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import optax
import optimistix as optx
from equinox import AbstractClassVar, AbstractVar
from jaxtyping import Array, Bool, Float, Int

from ..solve._solve import for_jacobians, reverse_mode_adjoint
from ._problem import AbstractFitProblem

Method = Literal["levenberg_marquardt", "bfgs", "lbfgs", "adam"]
METHODS: tuple[str, ...] = ("levenberg_marquardt", "bfgs", "lbfgs", "adam")
#: The default optimiser: the fastest to converge on our problems
#: (experiments/studies/fit_optimisers.py: L-BFGS reached the optimum from every ×/÷ 2 start
#: in 18–26 iterations, 0.35–0.54 s).
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
#: Default termination tolerances of every optimiser (relative: step / cost change; absolute:
#: step, or gradient max-abs for the gradient-based ones).
RTOL = 1e-8
ATOL = 1e-8
#: Adam's initial learning rate (cosine-decayed to 1 % over `max_steps`).
LEARNING_RATE = 0.05
#: Default iteration budget of one optimisation.
MAX_STEPS = 100


class OptimisationResult(NamedTuple):
    u: Float[Array, " p"]  # optimum, unconstrained coordinates
    loss: Float[Array, ""]  # negative log-likelihood (+ prior) at u
    history: Float[Array, " max_steps"]  # loss per iteration (NaN after the end)
    iterations: Int[Array, ""]
    converged: Bool[Array, ""]
    solve_success: Bool[Array, ""]


def with_adjoint(problem: AbstractFitProblem, method: str) -> AbstractFitProblem:
    """`problem` with the adjoint `method` differentiates with: forward mode for
    Levenberg–Marquardt's Jacobian (Rodas4's sensitivities, if left at "auto", staggered:
    `mgjax.solve.for_jacobians`), reverse mode (checkpointed) for the gradient methods."""
    if method == "levenberg_marquardt":
        adjoint = dfx.ForwardMode()
        problem = eqx.tree_at(
            lambda p: p.options.solver, problem, for_jacobians(problem.options.solver)
        )
    else:
        adjoint = reverse_mode_adjoint()
    return eqx.tree_at(lambda p: p.options.adjoint, problem, adjoint)


def jacobian_residuals(problem):
    """The weighted residuals of `problem` as a function `fn(u, warm=None)` whose derivative
    is the forward-mode Jacobian (Rodas4's tangents staggered unless its `sensitivities` say
    exact: `with_adjoint`), computed once with the residuals (one pass through the solver with
    one tangent per parameter) and applied as a matrix.

    Optimistix linearises the residual function and evaluates the linearisation several times
    per iteration (materialising J, J·δ for the predicted reduction); linearising the solver's
    while loop directly re-runs the whole forward-mode solve each time (3× the cost per
    iteration and ~40 % more compile time, measured on the batch benchmark's clamp problem).
    Here the linearisation is a stored matrix. Derivatives with respect to anything but u are
    not defined (internal to the optimisers).

    `fn` returns (residuals, (negative log-likelihood, solve succeeded, start)) from the same
    solve (values, not differentiated): `start` is the problem's inner-search start at u
    (`AbstractFitProblem.warm_predictions`; the fasting steady state), to pass back as `warm`
    at the next point. Every call computes the Jacobian with the values (the optimisers only
    call it linearised)."""
    problem = with_adjoint(problem, "levenberg_marquardt")
    dynamic, static = eqx.partition(problem, eqx.is_array)

    def fn(u, warm=None):
        warm = jnp.zeros((0,)) if warm is None else warm
        # the Jacobian is computed beside the values, never differentiated: outside the
        # custom rule below, whose partial evaluation (`jax.linearize`, as Optimistix calls
        # it) would otherwise walk the whole traced solve each time
        held = eqx.combine(jax.lax.stop_gradient(dynamic), static)
        jac, (r, nll, ok, start) = _jacobian_and_values(held, jax.lax.stop_gradient(u), warm)
        return _with_jacobian(u, r, jac), (nll, ok, start)

    return fn


def _evaluate(problem, u, warm):
    """(residuals, (residuals, negative log-likelihood, solve succeeded, start)) at u."""
    preds, ok, start = problem.warm_predictions(u, warm)
    r = problem.residuals_from(u, preds, ok)
    return r, (r, problem.negative_log_likelihood_from(u, preds, ok), ok, start)


# Jitted so that JAX traces it once per problem structure: the shape probe
# (`residual_structs`), the optimiser's state initialisation and the round's own trace all
# reuse the traced program (each trace of the forward-mode Jacobian through the solver takes
# seconds).
@eqx.filter_jit
def _jacobian_and_values(problem, u, warm):
    return jax.jacfwd(lambda v: _evaluate(problem, v, warm), has_aux=True)(u)


def residual_structs(problem, u):
    """Shapes of the outputs of `jacobian_residuals(problem)` at `u` — (residuals, (negative
    log-likelihood, solve succeeded, start)) — given a `warm` start of the size the iterations
    pass (`start_size`), from the trace of the Jacobian that the optimiser's iterations reuse
    (no separate trace of the values)."""
    problem = with_adjoint(problem, "levenberg_marquardt")
    warm = jnp.zeros((problem.start_size(),))
    _, (r, nll, ok, start) = eqx.filter_eval_shape(_jacobian_and_values, problem, u, warm)
    return r, (nll, ok, start)


@jax.custom_jvp
def _with_jacobian(u, r, jac):
    """`r`, whose derivative with respect to `u` is `jac`."""
    return r


@_with_jacobian.defjvp
def _with_jacobian_jvp(primals, tangents):
    u, r, jac = primals
    du, _, _ = tangents
    return r, jac @ du


# --- Optimistix's Gauss–Newton state ---------------------------------------------------------
# Optimistix has no public accessor for the Jacobian, the residuals or the aux at the last
# accepted iterate, nor for the trust region's first step: the functions below are the only
# places that read or write its internal `_GaussNewtonState` (fields `f_info.jac`,
# `f_info.residual`, `aux`, `num_steps_since_acceptance`, `search_state.step_size`);
# tests/test_fit_interfaces.py pins the layout. Reading them costs nothing; recomputing them
# would cost a forward-mode solve.


class AcceptedPoint(NamedTuple):
    """What an Optimistix Gauss–Newton/Levenberg–Marquardt state holds about its last
    accepted iterate."""

    residual: Float[Array, " m"]
    jacobian: Float[Array, "m p"]
    aux: Any
    just_accepted: Bool[Array, ""]  # the last step was accepted


def accepted_aux(state) -> Any:
    """The aux of the residual function at the last accepted iterate of an Optimistix
    Gauss–Newton/Levenberg–Marquardt `state` (no Jacobian materialised: for use inside the
    iteration loop)."""
    return state.aux


def accepted_point(state) -> AcceptedPoint:
    """The residuals, their Jacobian (as a matrix) and the aux at the last accepted iterate of
    an Optimistix Gauss–Newton/Levenberg–Marquardt `state`, and whether the last step was
    accepted."""
    return AcceptedPoint(
        residual=state.f_info.residual,
        jacobian=state.f_info.jac.as_matrix(),
        aux=accepted_aux(state),
        just_accepted=state.num_steps_since_acceptance == 0,
    )


def with_first_step_size(state, step_size: Any):
    """`state` (or its arrays) with the trust region's next step size set to `step_size`
    (Levenberg–Marquardt's damping is its inverse): used for a fresh start."""
    current = state.search_state.step_size
    return eqx.tree_at(
        lambda s: s.search_state.step_size, state, jnp.asarray(step_size, current.dtype)
    )


def gauss_newton_decrement(point: AcceptedPoint) -> Float[Array, ""]:
    """½‖P_J r‖² at an accepted iterate: the decrease of ½‖r‖² a full Gauss–Newton step would
    predict (P_J: the projection onto the Jacobian's columns, by a reduced QR; rank-deficient
    J gives an upper bound)."""
    q, _ = jnp.linalg.qr(point.jacobian)
    return 0.5 * jnp.sum((q.T @ point.residual) ** 2)


def decrement_converged(state, tolerance: float) -> Bool[Array, ""]:
    """True right after an accepted step of an Optimistix Gauss–Newton/LM `state` whose
    Gauss–Newton decrement is below `tolerance`."""
    point = accepted_point(state)
    return point.just_accepted & (gauss_newton_decrement(point) < tolerance)


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
            # optax's L-BFGS adds its int32 count to int64 indices: JAX's standard promotion
            # even where a user (or the tests) set strict
            with jax.numpy_dtype_promotion("standard"):
                updates, state = optimiser.update(
                    grad, state, u, value=value, grad=grad, value_fn=f
                )
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


class AbstractOptimiser(eqx.Module):
    """An optimiser of an `AbstractFitProblem`: its settings as (static) fields, `minimise`
    runs it as one `lax.while_loop` (vmappable). `name` is its `method` string."""

    name: AbstractClassVar[str]
    max_steps: AbstractVar[int]
    rtol: AbstractVar[float]
    atol: AbstractVar[float]

    def check(self, problem: AbstractFitProblem) -> None:
        """Raise if this optimiser cannot minimise `problem`."""

    @abc.abstractmethod
    def iterate(
        self, problem: AbstractFitProblem, u0: Float[Array, " p"]
    ) -> tuple[Float[Array, " p"], Int[Array, ""], Bool[Array, ""], Float[Array, " max_steps"]]:
        """(optimum, iterations, terminated, loss per iteration) from `u0`, on `problem`
        with the adjoint this optimiser needs already set."""

    def minimise(
        self, problem: AbstractFitProblem, u0: Float[Array, " p"] | None = None
    ) -> OptimisationResult:
        """Minimise the problem's objective from `u0` (default `problem.initial()`)."""
        self.check(problem)
        problem = with_adjoint(problem, self.name)
        u0 = problem.initial() if u0 is None else jnp.asarray(u0, dtype=jnp.float64)
        u, i, done, history = self.iterate(problem, u0)
        loss = problem.negative_log_likelihood(u)
        ok = problem.success(u)
        return OptimisationResult(
            u=u, loss=loss, history=history, iterations=i, converged=done & ok, solve_success=ok
        )


class LevenbergMarquardt(AbstractOptimiser):
    """Optimistix's Levenberg–Marquardt on the weighted residuals (forward-mode Jacobian).
    Stops when the step and the cost change fall below `rtol`/`atol`, or right after an
    accepted step from which a full Gauss–Newton step would lower ½‖r‖² by less than
    `decrement` (`DECREMENT_TOLERANCE`). Needs a least-squares problem with fixed error
    models."""

    name: ClassVar[str] = "levenberg_marquardt"
    max_steps: int = eqx.field(static=True, default=MAX_STEPS)
    rtol: float = eqx.field(static=True, default=RTOL)
    atol: float = eqx.field(static=True, default=ATOL)
    decrement: float = eqx.field(static=True, default=DECREMENT_TOLERANCE)

    def check(self, problem: AbstractFitProblem) -> None:
        if not problem.least_squares:
            raise ValueError(
                "Levenberg–Marquardt needs normal noise and normal priors (a sum of squares); "
                "use 'lbfgs' or 'bfgs' for Laplace noise or priors"
            )
        if problem.error_parameters:
            raise ValueError(
                "Levenberg–Marquardt needs fixed error models; estimate sigma with 'bfgs' or "
                "'lbfgs', or fix it"
            )

    def solver(self) -> optx.LevenbergMarquardt:
        return optx.LevenbergMarquardt(rtol=self.rtol, atol=self.atol)

    #: Optimistix options of the solver (the residuals' Jacobian by forward mode)
    options: ClassVar[dict] = {"jac": "fwd"}

    def iterate(self, problem, u0):
        residuals = jacobian_residuals(problem)

        def fn(u, args):
            r, (nll, _, _) = residuals(u)
            return r, nll  # the loss history records the negative log-likelihood

        return _optimistix_loop(
            self.solver(), fn, u0, self.max_steps, dict(self.options), decrement=self.decrement
        )


class BFGS(AbstractOptimiser):
    """Optimistix's BFGS on the negative log-likelihood (reverse-mode gradient); stops at
    Optimistix's step and gradient tests (`rtol`, `atol`)."""

    name: ClassVar[str] = "bfgs"
    max_steps: int = eqx.field(static=True, default=MAX_STEPS)
    rtol: float = eqx.field(static=True, default=RTOL)
    atol: float = eqx.field(static=True, default=ATOL)

    def iterate(self, problem, u0):
        nll = problem.negative_log_likelihood

        def fn(u, args):
            value = nll(u)
            return value, value

        solver = optx.BFGS(rtol=self.rtol, atol=self.atol)
        return _optimistix_loop(solver, fn, u0, self.max_steps, {})


class LBFGS(AbstractOptimiser):
    """Optax's L-BFGS with its zoom line search on the negative log-likelihood; stops at a
    gradient (max-abs) below `atol`, a step below `atol`/100, or two loss changes in a row
    below `rtol`·(1 + |loss|)."""

    name: ClassVar[str] = "lbfgs"
    max_steps: int = eqx.field(static=True, default=MAX_STEPS)
    rtol: float = eqx.field(static=True, default=RTOL)
    atol: float = eqx.field(static=True, default=ATOL)

    def iterate(self, problem, u0):
        return _optax_loop(
            optax.lbfgs(),
            problem.negative_log_likelihood,
            u0,
            self.max_steps,
            self.rtol,
            self.atol,
            True,
        )


class Adam(AbstractOptimiser):
    """Optax's Adam with a cosine-decayed `learning_rate` (to 1 % over `max_steps`) on the
    negative log-likelihood; `max_steps` iterations or a vanishing gradient (as `LBFGS`)."""

    name: ClassVar[str] = "adam"
    max_steps: int = eqx.field(static=True, default=MAX_STEPS)
    rtol: float = eqx.field(static=True, default=RTOL)
    atol: float = eqx.field(static=True, default=ATOL)
    learning_rate: float = eqx.field(static=True, default=LEARNING_RATE)

    def iterate(self, problem, u0):
        schedule = optax.cosine_decay_schedule(self.learning_rate, self.max_steps, alpha=0.01)
        return _optax_loop(
            optax.adam(schedule),
            problem.negative_log_likelihood,
            u0,
            self.max_steps,
            self.rtol,
            self.atol,
            False,
        )


OPTIMISERS: dict[str, type[AbstractOptimiser]] = {
    cls.name: cls for cls in (LevenbergMarquardt, BFGS, LBFGS, Adam)
}


def make_optimiser(
    method: str | AbstractOptimiser = DEFAULT_METHOD,
    *,
    max_steps: int = MAX_STEPS,
    rtol: float = RTOL,
    atol: float = ATOL,
    learning_rate: float = LEARNING_RATE,
    decrement: float = DECREMENT_TOLERANCE,
) -> AbstractOptimiser:
    """The optimiser named `method` (one of `METHODS`) with these settings (each takes those
    it has); an `AbstractOptimiser` is returned as it is."""
    if isinstance(method, AbstractOptimiser):
        return method
    if method not in OPTIMISERS:
        raise ValueError(f"unknown optimiser {method!r}; use one of {', '.join(METHODS)}")
    settings = dict(
        max_steps=max_steps, rtol=rtol, atol=atol, learning_rate=learning_rate, decrement=decrement
    )
    cls = OPTIMISERS[method]
    return cls(**{k: v for k, v in settings.items() if k in cls.__dataclass_fields__})


def optimise(
    problem: AbstractFitProblem,
    u0: Float[Array, " p"] | None = None,
    *,
    method: str | AbstractOptimiser = DEFAULT_METHOD,
    max_steps: int = MAX_STEPS,
    rtol: float = RTOL,
    atol: float = ATOL,
    learning_rate: float = LEARNING_RATE,
    decrement: float = DECREMENT_TOLERANCE,
) -> OptimisationResult:
    """Minimise the problem's objective from `u0` (default the base model's values) with the
    optimiser `method`: a name of `METHODS` with these settings (`make_optimiser`), or an
    `AbstractOptimiser` (`LevenbergMarquardt`, `BFGS`, `LBFGS`, `Adam`; the keyword settings
    are then ignored)."""
    optimiser = make_optimiser(
        method,
        max_steps=max_steps,
        rtol=rtol,
        atol=atol,
        learning_rate=learning_rate,
        decrement=decrement,
    )
    return optimiser.minimise(problem, u0)


optimise_jit = eqx.filter_jit(optimise)
