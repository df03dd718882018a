"""The fitting layer's interfaces on a linear least-squares problem (no ODE): both fit
problems implement `AbstractFitProblem`; every optimiser Module finds the least-squares
solution; the Laplace core gives the analytic standard errors; the one adaptor to
Optimistix's internal Gauss–Newton state reads what it claims."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
import pytest
from jaxtyping import Array, Float

from mgjax import fit
from mgjax.fit._laplace import SLOPPY_SE, Z95
from mgjax.fit._optimise import (
    OPTIMISERS,
    accepted_point,
    decrement_converged,
    make_optimiser,
    with_first_step_size,
)
from mgjax.petab import PetabProblem
from mgjax.solve._solve import SolverOptions

SIGMA = 0.1


class LinearProblem(fit.AbstractFitProblem):
    """y = X·θ + N(0, σ²), θ unbounded (`log=False`) or positive with u = log θ."""

    design: Float[Array, "m p"]
    data: Float[Array, " m"]
    lower: Float[Array, " p"]
    upper: Float[Array, " p"]
    prior_mean: Float[Array, " p"]
    prior_sd: Float[Array, " p"]
    options: SolverOptions
    free: tuple[str, ...] = eqx.field(static=True)
    log: bool = eqx.field(static=True, default=False)
    error_parameters: tuple = eqx.field(static=True, default=())
    least_squares: bool = eqx.field(static=True, default=True)

    @property
    def names(self):
        return self.free

    def to_values(self, u):
        return jnp.exp(u) if self.log else u

    def from_values(self, values):
        values = jnp.asarray(values, dtype=jnp.float64)
        return jnp.log(values) if self.log else values

    def log_scale(self):
        return (self.log,) * len(self.free)

    def initial(self):
        return self.from_values(jnp.ones(len(self.free)))

    def fix(self, name, value):
        raise NotImplementedError

    def predictions(self, u):
        return self.design @ self.to_values(u), jnp.asarray(True)

    def residuals_from(self, u, preds, ok):
        return (self.data - preds) / SIGMA

    def negative_log_likelihood_from(self, u, preds, ok):
        return 0.5 * jnp.sum(self.residuals_from(u, preds, ok) ** 2)


def linear_problem(log: bool = False) -> LinearProblem:
    rng = np.random.default_rng(0)
    design = np.column_stack([np.ones(12), np.linspace(0.0, 2.0, 12)])
    truth = np.array([1.5, 0.7])
    data = design @ truth + SIGMA * rng.standard_normal(12)
    p = design.shape[1]
    return LinearProblem(
        design=jnp.asarray(design),
        data=jnp.asarray(data),
        lower=jnp.full(p, -jnp.inf),
        upper=jnp.full(p, jnp.inf),
        prior_mean=jnp.full(p, jnp.nan),
        prior_sd=jnp.ones(p),
        options=SolverOptions(),
        free=("intercept", "slope"),
        log=log,
    )


def least_squares(problem: LinearProblem):
    """The analytic estimate and covariance of θ."""
    x, y = np.asarray(problem.design), np.asarray(problem.data)
    theta = np.linalg.lstsq(x, y, rcond=None)[0]
    return theta, SIGMA**2 * np.linalg.inv(x.T @ x)


def test_both_fit_problems_implement_the_interface():
    for cls in (fit.FitProblem, PetabProblem):
        assert issubclass(cls, fit.AbstractFitProblem)
        assert not cls.__abstractmethods__, cls
    for cls in (fit.FitProblem, PetabProblem):  # both carry σ terms in their residuals
        for method in ("fisher_residuals", "fisher_from", "data_chi2"):
            assert getattr(cls, method) is not getattr(fit.AbstractFitProblem, method), method

    class Incomplete(fit.AbstractFitProblem):
        pass

    with pytest.raises(TypeError):
        Incomplete()


def test_method_names_are_aliases_of_optimiser_modules():
    assert tuple(OPTIMISERS) == fit.METHODS
    for name, cls in OPTIMISERS.items():
        optimiser = make_optimiser(name, max_steps=7, rtol=1e-6)
        assert type(optimiser) is cls and optimiser.name == name
        assert optimiser.max_steps == 7 and optimiser.rtol == 1e-6
    adam = make_optimiser("adam", learning_rate=0.2)
    assert adam.learning_rate == 0.2
    assert make_optimiser(adam) is adam
    with pytest.raises(ValueError, match="unknown optimiser"):
        make_optimiser("newton")


@pytest.mark.parametrize(
    "optimiser",
    [
        fit.LevenbergMarquardt(max_steps=50, decrement=0.0),  # to the exact optimum
        fit.BFGS(max_steps=100),
        fit.LBFGS(max_steps=100),
        fit.Adam(max_steps=2000, learning_rate=0.2),
    ],
    ids=lambda o: o.name,
)
def test_every_optimiser_finds_the_least_squares_solution(optimiser):
    problem = linear_problem()
    theta, _ = least_squares(problem)
    # Optax's cosine schedule mixes its int32 step count with floats: standard promotion
    promotion = "standard" if isinstance(optimiser, fit.Adam) else "strict"
    with jax.numpy_dtype_promotion(promotion):
        result = eqx.filter_jit(fit.optimise)(problem, method=optimiser)
    tolerance = 1e-3 if isinstance(optimiser, fit.Adam) else 1e-6
    np.testing.assert_allclose(problem.to_values(result.u), theta, atol=tolerance)
    assert bool(result.solve_success)
    assert int(result.iterations) <= optimiser.max_steps


def test_levenberg_marquardt_refuses_a_problem_that_is_no_sum_of_squares():
    problem = dataclasses.replace(linear_problem(), least_squares=False)
    with pytest.raises(ValueError, match="sum of squares"):
        fit.LevenbergMarquardt().minimise(problem)


@pytest.mark.parametrize("log", [False, True])
def test_laplace_core_gives_the_analytic_standard_errors(log):
    problem = linear_problem(log=log)
    theta, covariance = least_squares(problem)
    u = problem.from_values(theta)
    # the Fisher information in u: Jᵀ J with J = −X·diag(dθ/du)/σ
    slopes = theta if log else np.ones_like(theta)
    jac = -np.asarray(problem.design) * slopes / SIGMA
    core = fit.laplace_core(problem, u, jnp.asarray(jac.T @ jac))
    se = np.sqrt(np.diag(covariance))
    np.testing.assert_allclose(core.values, theta, rtol=1e-12)
    np.testing.assert_allclose(core.se, se, rtol=1e-9)
    np.testing.assert_allclose(core.se_unconstrained, se / slopes, rtol=1e-9)
    np.testing.assert_allclose(core.covariance, covariance / np.outer(slopes, slopes), rtol=1e-9)
    if log:  # intervals exp(log θ ± z·SE(log θ)); relative SE = SE of log θ
        np.testing.assert_allclose(core.ci_low, theta * np.exp(-Z95 * se / theta), rtol=1e-9)
        np.testing.assert_allclose(core.ci_high, theta * np.exp(Z95 * se / theta), rtol=1e-9)
        np.testing.assert_allclose(core.se_relative, se / theta, rtol=1e-9)
    else:
        np.testing.assert_allclose(core.ci_low, theta - Z95 * se, rtol=1e-9)
        np.testing.assert_allclose(core.ci_high, theta + Z95 * se, rtol=1e-9)
        np.testing.assert_allclose(core.se_relative, se, rtol=1e-9)
    # `laplace` on the problem agrees with the core (its Fisher information from J)
    stats = fit.laplace(problem, u)
    np.testing.assert_allclose(stats["se"], se, rtol=1e-9)
    np.testing.assert_array_equal(stats["identifiable"], core.se_relative <= SLOPPY_SE)


def test_laplace_core_flags_an_unresolved_direction():
    problem = linear_problem()
    design = np.column_stack([np.asarray(problem.design)[:, 0]] * 2)  # two copies of a column
    fisher = design.T @ design / SIGMA**2
    core = fit.laplace_core(problem, jnp.zeros(2), jnp.asarray(fisher))
    assert not bool(core.resolved[0]) and bool(core.resolved[1])
    assert np.all(np.isinf(core.se))


def test_optimistix_gauss_newton_state_layout():
    """Pins what `accepted_point` and `with_first_step_size` read and write in Optimistix's
    internal Levenberg–Marquardt state: an Optimistix upgrade that moves them fails here."""
    problem = linear_problem()
    solver = optx.LevenbergMarquardt(rtol=1e-8, atol=1e-8)

    def fn(u, args):
        r = problem.residuals(u)
        return r, (jnp.sum(r), jnp.asarray(True))

    u0 = problem.initial()
    f_struct, aux_struct = jax.eval_shape(lambda y: fn(y, None), u0)
    options = {"jac": "fwd"}
    state = solver.init(fn, u0, None, options, f_struct, aux_struct, frozenset())
    state = with_first_step_size(state, 0.25)
    assert float(state.search_state.step_size) == 0.25
    y = u0
    for _ in range(3):
        y, state, _ = solver.step(fn, y, None, options, state, frozenset())
    point = accepted_point(state)
    np.testing.assert_allclose(point.residual, problem.residuals(y), rtol=1e-12)
    np.testing.assert_allclose(point.jacobian, -np.asarray(problem.design) / SIGMA, rtol=1e-12)
    np.testing.assert_allclose(point.aux[0], jnp.sum(problem.residuals(y)), rtol=1e-12)
    assert point.jacobian.shape == (12, 2) and point.just_accepted.dtype == jnp.bool_
    assert decrement_converged(state, np.inf).dtype == jnp.bool_


def test_errors_as_nan_removes_equinox_host_callbacks():
    """Pins the one use of Equinox's private error setting (`mgjax.batch._run.errors_as_nan`):
    traced under it, `eqx.error_if` leaves no host callback in the program."""
    from mgjax.batch._run import errors_as_nan

    def checked(x):
        return eqx.error_if(x, x < 0.0, "negative")

    x = jnp.ones(3)
    assert "callback" in jax.jit(checked).lower(x).as_text()
    with errors_as_nan():  # (new shapes: Equinox caches its traces of the check)
        text = jax.jit(checked).lower(jnp.ones(4)).as_text()
    assert "callback" not in text


def test_start_size_is_that_of_the_start_warm_predictions_returns():
    """`start_size` (static) sizes the optimiser's warm start before any trace: it must be
    the size of the start `warm_predictions` returns — the fasting steady state's dynamic
    states when a protocol starts there, nothing otherwise — and `residual_structs` must
    give the residual function's output shapes at that start."""
    import mgjax
    from mgjax.fit._optimise import jacobian_residuals, residual_structs

    model = mgjax.preset("healthy")
    ts = jnp.linspace(0.0, 60.0, 7)
    clamp = fit.make_experiment(
        mgjax.HyperinsulinemicClamp(insulin_rate=40.0), [0.0, 60.0], ["glucose"] * 2, [5.0, 5.0]
    )
    series = mgjax.GlucoseSeries(ts, jnp.full(7, 8.0))
    secretion = fit.make_experiment(series, [30.0, 60.0], ["insulin_secretion"] * 2, [1.0, 1.0])
    free = ("signalling_capacity",)
    problems = {
        "clamp": fit.make_problem(model, [clamp], free),
        "secretion": fit.make_problem(model, [secretion], ("beta_cell_mass",)),
        "linear": linear_problem(),
    }
    sizes = {}
    for name, problem in problems.items():
        u = problem.initial()
        _, _, start = eqx.filter_eval_shape(lambda p, v: p.warm_predictions(v, None), problem, u)
        assert start.shape == (problem.start_size(),), name
        sizes[name] = problem.start_size()
        if problem.least_squares:
            fn = jacobian_residuals(problem)
            expected = jax.eval_shape(fn, u, jnp.zeros((problem.start_size(),)))
            got = residual_structs(problem, u)
            assert jax.tree.map(lambda s: (s.shape, s.dtype), got) == jax.tree.map(
                lambda s: (s.shape, s.dtype), expected
            ), name
    assert sizes["clamp"] == len(mgjax.MgT2DModel.dynamic_state_names())
    assert sizes["secretion"] == 0 and sizes["linear"] == 0


def test_trajectory_select_equals_reading_one_name_at_a_time():
    import mgjax

    model = mgjax.preset("t2dm")
    traj = mgjax.simulate(
        model, mgjax.HyperinsulinemicClamp(insulin_rate=40.0), jnp.linspace(0.0, 120.0, 5)
    )
    names = ("glucose", "glucose_infusion", "serum_mg", "insulin", "glucose")
    selected = traj.select(names)
    assert list(selected) == ["glucose", "glucose_infusion", "serum_mg", "insulin"]
    for name in names:
        np.testing.assert_array_equal(selected[name], traj[name])
    with pytest.raises(KeyError, match="unknown observable"):
        traj.select(("glucose", "no_such_thing"))
