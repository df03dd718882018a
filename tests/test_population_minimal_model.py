"""The population engine's reduced glucose–insulin ODE model (Bergman's minimal model of the
IVGTT, `mgjax.population.MinimalModelIVGTT`): its solution against SciPy's Radau, its
forward-mode derivatives against finite differences, the IVGTT table, bad input, and a FOCE-I
fit of a simulated cohort that recovers the truth."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from scipy.integrate import solve_ivp

from mgjax.population import (
    PopulationModel,
    fit_population,
    ivgtt_glucose,
    minimal_model_options,
    minimal_model_problem,
    minimal_model_problems,
    simulate_minimal_model_cohort,
)

TYPICAL = dict(sg=0.025, si=5.0, p2=0.03, g0=260.0, sigma_additive=4.0, sigma_proportional=0.0)
OMEGA_SD = dict(sg=0.3, si=0.4, g0=0.15)


@pytest.fixture(scope="module")
def cohort():
    return simulate_minimal_model_cohort(6, typical=TYPICAL, omega_sd=OMEGA_SD, seed=3)


def radau(problem, sg, si, p2, g0):
    """The minimal model by SciPy's Radau at tight tolerance (the insulin input as mgjax's)."""
    knots, insulin = np.asarray(problem.insulin_times), np.asarray(problem.insulin)
    gb, ib = float(problem.basal_glucose), float(problem.basal_insulin)

    def field(t, y):
        i = np.interp(t, knots, insulin)
        return [-(sg + y[1]) * y[0] + sg * gb, -p2 * (y[1] - si * 1e-4 * (i - ib))]

    times = np.asarray(problem.times)
    out = solve_ivp(
        field,
        (0.0, times[-1]),
        [g0, 0.0],
        method="Radau",
        rtol=1e-12,
        atol=1e-12,
        t_eval=times,
    )
    return out.y[0]


def test_solution_matches_scipy_radau(cohort):
    problems, _, truth = cohort
    for i in (0, 3):
        p = problems[i]
        values = [truth[k][i] for k in ("sg", "si", "p2", "g0")]
        glucose, ok = ivgtt_glucose(
            p.times, p.insulin_times, p.insulin, p.basal_glucose, p.basal_insulin, *values
        )
        assert bool(ok)
        np.testing.assert_allclose(np.asarray(glucose), radau(p, *values), rtol=1e-7)


def test_forward_derivatives_match_finite_differences(cohort):
    # tight tolerances: at the fitting default the solver's adaptive steps make finite
    # differences noisy at 1e-5
    problem = dataclasses.replace(cohort[0][1], options=minimal_model_options(1e-11, 1e-11))
    u = problem.initial()
    jac = np.asarray(jax.jacfwd(lambda v: problem.predictions(v)[0])(u))
    for k in range(4):
        h = 1e-5
        e = jnp.zeros_like(u).at[k].set(h)
        fd = (problem.predictions(u + e)[0] - problem.predictions(u - e)[0]) / (2 * h)
        np.testing.assert_allclose(jac[:, k], np.asarray(fd), rtol=1e-5, atol=1e-6)
    # the error terms do not move the prediction
    np.testing.assert_array_equal(jac[:, 4:], 0.0)


def test_table_round_trip(cohort):
    problems, table, _ = cohort
    assert list(table.columns) == ["ID", "TIME", "GLU", "INS", "GB", "IB"]
    again, subjects = minimal_model_problems(table)
    assert subjects == [str(i + 1) for i in range(len(problems))]
    for a, b in zip(problems, again):
        for field in ("times", "observed", "insulin_times", "insulin", "basal_glucose"):
            np.testing.assert_array_equal(np.asarray(getattr(a, field)), getattr(b, field))


def test_bad_input_is_refused_with_what_to_do(cohort):
    table = cohort[1]
    with pytest.raises(ValueError, match=r"no column\(s\) \['INS'\]"):
        minimal_model_problems(table.drop(columns="INS"))
    with pytest.raises(ValueError, match="strictly increasing"):
        minimal_model_problem([2, 4], [200, 190], [0, 0], [10, 50], 90, 10)
    with pytest.raises(ValueError, match="non-negative and increasing"):
        minimal_model_problem([4, 2], [200, 190], [0, 5], [10, 50], 90, 10)
    with pytest.raises(ValueError, match="unknown quantities"):
        minimal_model_problem([2, 4], [200, 190], [0, 5], [10, 50], 90, 10, values={"sx": 1})


@pytest.mark.slow
def test_foce_i_recovers_the_population():
    """FOCE-I through the ODE (forward-mode derivatives throughout) on 40 simulated
    subjects: typical values and ω within 3 SEs of the truth, the fit converged."""
    problems, _ = minimal_model_problems(
        simulate_minimal_model_cohort(40, typical=TYPICAL, omega_sd=OMEGA_SD, seed=11)[1],
        values={"sigma_proportional": 0.0},
        estimate_error=("additive",),
    )
    model = PopulationModel(names=problems[0].names, random=("sg", "si", "g0"))
    result = fit_population(
        problems, model, start=dict(sg=0.02, si=4.0, p2=0.04, g0=240.0), covariance="hessian"
    )
    assert result.converged
    # an EBE may stop on the adaptive solver's noise floor short of the 1e-4 gradient test
    assert np.mean(result.inner_converged) >= 0.95
    fixed = result.population_parameters.set_index("parameter")
    for k in ("sg", "si", "p2", "g0"):
        est, se = fixed.loc[k, "estimate"], fixed.loc[k, "se"]
        assert abs(est - TYPICAL[k]) < 3 * se, (k, est, se)
    sd = result.random_effects.set_index("parameter")
    for k, truth in OMEGA_SD.items():
        assert abs(sd.loc[k, "omega_sd"] - truth) < 3 * sd.loc[k, "se"], k
    sigma = fixed.loc["sigma_additive[glucose]"]
    assert abs(sigma["estimate"] - 4.0) < 3 * sigma["se"]
    assert isinstance(result.predictions, pd.DataFrame)


def test_population_gradient_of_the_ode_model_matches_finite_differences(cohort):
    # FOCE-I's per-subject OFV_i and exact gradients on the ODE model (forward mode: the one
    # forward-over-forward pass, `subject_value_and_score`), summed, against central
    # differences of the OFV with the EBEs re-fitted at each point (tight solver tolerances)
    from mgjax.population._fit import _values_and_scores, prepare

    table = cohort[1]
    problems, subjects = minimal_model_problems(
        table,
        values={"sigma_proportional": 0.0},
        estimate_error=("additive",),
        options=minimal_model_options(1e-11, 1e-11),
    )
    model = PopulationModel(names=tuple(problems[0].names), random=("sg", "si", "g0"))
    stacked, _, _, z, theta = prepare(
        problems, model, subjects, None, dict(sg=0.02, si=4.0, p2=0.04, g0=240.0), 0.3
    )
    xi0 = jnp.zeros((len(subjects), 3))

    @jax.jit
    def evaluate(t):
        values, scores, _, converged = _values_and_scores(model, stacked, z, xi0, t, 100)
        return jnp.sum(values), jnp.sum(scores, axis=0), jnp.all(converged)

    ofv, gradient, converged = evaluate(theta)
    assert bool(converged)
    step = 1e-5
    central = np.array(
        [
            (evaluate(theta.at[k].add(step))[0] - evaluate(theta.at[k].add(-step))[0]) / (2 * step)
            for k in range(theta.shape[0])
        ]
    )
    np.testing.assert_allclose(np.asarray(gradient), central, rtol=1e-5, atol=1e-4)
    assert np.min(np.abs(np.asarray(gradient))) > 0.1  # away from the optimum


def test_inner_fits_stop_at_the_solver_noise_floor_without_moving():
    # at the fitting default (rtol 1e-6) some subjects' ∇f never falls below the inner
    # tolerance (an adaptive solve's f is smooth only to its tolerance): the inner fit stops
    # at a refused step whose predicted decrease is negligible, or after refusals in a row,
    # instead of raising the damping to 1e12 — far fewer steps, the same EBEs and f
    from mgjax.population._fit import prepare
    from mgjax.population._laplace import empirical_bayes

    _, table, _ = simulate_minimal_model_cohort(24, typical=TYPICAL, omega_sd=OMEGA_SD, seed=5)
    problems, subjects = minimal_model_problems(
        table, values={"sigma_proportional": 0.0}, estimate_error=("additive",)
    )
    model = PopulationModel(names=tuple(problems[0].names), random=("sg", "si", "g0"))
    stacked, _, _, z, theta = prepare(
        problems, model, subjects, None, dict(sg=0.02, si=4.0, p2=0.04, g0=240.0), 0.3
    )

    def fits(**stop):
        one = lambda p, zi: empirical_bayes(model, p, theta, zi, jnp.zeros(3), **stop)  # noqa: E731
        return jax.jit(jax.vmap(one))(stacked, z)

    xi, f, steps, converged = fits()
    xi_long, f_long, steps_long, _ = fits(decrement=0.0, max_rejections=10**6)
    assert int(np.max(steps_long)) > 2 * int(np.max(steps))  # the noise floor was met
    assert bool(np.all(converged))
    np.testing.assert_allclose(f, f_long, rtol=0, atol=1e-7)
    np.testing.assert_allclose(xi, xi_long, rtol=0, atol=1e-4)
