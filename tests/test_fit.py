"""The fitting engine on a hyperinsulinaemic clamp: convergence from ×/÷ 2, uncertainty that
covers the truth, failures as penalties, error-model estimation, priors, multistart, profiles
and the result files."""

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import mgjax
from mgjax import fit
from mgjax.synth._observations import observe_protocol

FREE = ("signalling_capacity", "egp_max", "insulin_clearance_rate", "hepatic_insulin_ec50")
TIMES = np.arange(0.0, 121.0, 10.0)
PLAN = {"glucose": TIMES, "insulin": TIMES, "glucose_infusion": TIMES[1:]}
ERRORS = {
    "glucose_infusion": fit.combined(0.05, 0.05),
    "glucose": fit.proportional(0.05),
    "insulin": fit.proportional(0.05),
}


@pytest.fixture(scope="module")
def clamp_problem():
    truth = mgjax.preset("t2dm")
    clamp = mgjax.HyperinsulinemicClamp(insulin_rate=40.0)
    data = observe_protocol(truth, clamp, PLAN, noise=0.05, rng=np.random.default_rng(1))
    experiment = fit.make_experiment(clamp, data["time"], data["observable"], data["value"])
    factors = dict(zip(FREE, [2.0, 0.5, 2.0, 0.5]))  # ×/÷ 2 from the truth
    start = mgjax.set_parameters(
        truth, {n: float(mgjax.get_parameter(truth, n)) * f for n, f in factors.items()}
    )
    problem = fit.make_problem(start, [experiment], FREE, error_models=ERRORS)
    values = {n: float(mgjax.get_parameter(truth, n)) for n in FREE}
    return problem, values


PROGRESS: list[str] = []


@pytest.fixture(scope="module")
def clamp_fit(clamp_problem):
    problem, _ = clamp_problem
    return fit.fit(problem, subject="s1", progress=PROGRESS.append)


def test_fit_reports_its_stages_to_a_progress_callback(clamp_fit):
    assert PROGRESS[0] == "compiling and optimising (lbfgs, 1 start; the first call compiles)"
    assert PROGRESS[1].startswith("optimised in") and "Laplace standard errors" in PROGRESS[1]
    assert f"{clamp_fit.iterations} iterations" in PROGRESS[1]
    assert PROGRESS[-1].startswith("done in") and len(PROGRESS) == 3


def test_default_optimiser_converges_from_twofold_perturbations(clamp_fit, clamp_problem):
    _, truth = clamp_problem
    assert fit.DEFAULT_METHOD == "lbfgs"
    assert clamp_fit.converged and clamp_fit.iterations <= 100
    history = clamp_fit.history[np.isfinite(clamp_fit.history)]
    assert history[-1] < 1e-2 * history[0]  # the cost fell by orders of magnitude
    frame = clamp_fit.to_dataframe().set_index("parameter")
    for name, value in truth.items():
        row = frame.loc[name]
        if row["precise"]:
            assert abs(row["estimate"] / value - 1) < 0.10, name
        assert row["ci_low"] <= value <= row["ci_high"], name


def test_uncertainty_report(clamp_fit):
    frame = clamp_fit.to_dataframe()
    assert np.all(np.isfinite(frame["se"])) and np.all(frame["se"] > 0)
    assert np.all(frame["ci_low"] < frame["estimate"]) and np.all(
        frame["estimate"] < frame["ci_high"]
    )
    corr = clamp_fit.correlation_frame()
    np.testing.assert_allclose(np.diag(corr), 1.0)
    assert np.all(np.abs(corr.to_numpy()) <= 1.0 + 1e-9)
    assert len(clamp_fit.directions) == len(FREE)
    assert clamp_fit.eigenvalues[0] <= clamp_fit.eigenvalues[-1]


def test_result_files(clamp_fit, tmp_path):
    clamp_fit.save(tmp_path)
    table = pd.read_csv(tmp_path / "parameters.csv")
    assert list(table.columns[:7]) == [
        "subject",
        "parameter",
        "estimate",
        "se",
        "ci_low",
        "ci_high",
        "unit",
    ]
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "parameters.parquet"), table, check_dtype=False
    )
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["converged"] and summary["status"] == "converged"
    assert len(summary["loss_history"]) == clamp_fit.iterations


def test_a_failed_solve_is_a_finite_penalty_and_a_flag(clamp_problem):
    problem, _ = clamp_problem
    tiny = mgjax.SolverOptions(max_steps=8, adjoint=problem.options.adjoint)
    broken = eqx.tree_at(lambda p: p.options, problem, tiny)
    u = broken.initial()
    r = broken.residuals(u)
    assert bool(jnp.all(jnp.isfinite(r))) and float(jnp.max(r)) == fit._objective.FAILED_RESIDUAL
    assert bool(jnp.isfinite(broken.negative_log_likelihood(u)))
    assert not bool(broken.success(u))
    g = jax.jacfwd(broken.negative_log_likelihood)(u)  # forward mode, as the problem's adjoint
    assert bool(jnp.all(jnp.isfinite(g)))
    j = jax.jacfwd(broken.residuals)(u)
    assert bool(jnp.all(jnp.isfinite(j)))


def fasting_samples_problem(noise: float, seed: int, error_models) -> fit.FitProblem:
    """egp_max and insulin_clearance_rate of t2dm from 13 replicate fasting glucose and
    insulin samples with proportional `noise`, started at 0.02 and 0.1 (the fasting protocol
    needs no ODE solve, so this compiles in seconds)."""
    truth = mgjax.preset("t2dm")
    plan = {"glucose": TIMES, "insulin": TIMES}
    rng = np.random.default_rng(seed)
    data = observe_protocol(truth, mgjax.fasting(), plan, noise=noise, rng=rng)
    experiment = fit.make_experiment(
        mgjax.fasting(), data["time"], data["observable"], data["value"]
    )
    free = ("egp_max", "insulin_clearance_rate")
    start = mgjax.set_parameters(truth, egp_max=0.02, insulin_clearance_rate=0.1)
    return fit.make_problem(start, [experiment], free, error_models=error_models)


def test_estimating_the_error_model_with_lbfgs():
    """σ of a proportional error model estimated with the parameters (L-BFGS; LM refuses it),
    from 13 replicate fasting samples with 5 % noise (the fasting protocol needs no ODE solve,
    so this compiles in seconds)."""
    errors = dict(glucose=fit.proportional(0.2, estimate=True), insulin=fit.proportional(0.05))
    estimated = fasting_samples_problem(noise=0.05, seed=3, error_models=errors)
    with pytest.raises(ValueError, match="Levenberg–Marquardt needs fixed error models"):
        fit.optimise(estimated, method="levenberg_marquardt")
    result = fit.fit(estimated, method="lbfgs", max_steps=300)
    assert result.converged
    frame = result.to_dataframe().set_index("parameter")
    sigma = frame.loc["sigma_proportional[glucose]", "estimate"]
    assert 0.02 < sigma < 0.09  # the data were generated with 5 % noise (13 glucose values)


def test_levenberg_marquardt_finds_the_maximum_likelihood_estimate():
    """With a proportional error model σ = b·f, ½‖residuals‖² is the negative log-likelihood
    up to a constant (the noise residuals carry Σ log σ), so Levenberg–Marquardt and L-BFGS
    on the likelihood reach one optimum — iteratively reweighted least squares would stop at
    the generalised least-squares estimate instead. The Fisher information rebuilt from the
    residuals' Jacobian (what the batch engine stores) is the expected one."""
    errors = dict(glucose=fit.proportional(0.2), insulin=fit.proportional(0.2))
    problem = fasting_samples_problem(noise=0.2, seed=5, error_models=errors)
    u = problem.initial() + 0.3
    nll, gradient = jax.value_and_grad(problem.negative_log_likelihood)(u)
    half_squares = lambda v: 0.5 * jnp.sum(problem.residuals(v) ** 2)  # noqa: E731
    np.testing.assert_allclose(jax.grad(half_squares)(u), gradient, rtol=1e-10)
    shifted = problem.initial() - 0.2
    np.testing.assert_allclose(
        half_squares(shifted) - problem.negative_log_likelihood(shifted),
        half_squares(u) - nll,
        rtol=1e-10,
    )
    jacobian = jax.jacfwd(problem.residuals)(u)
    expected = jax.jacfwd(problem.fisher_residuals)(u)
    np.testing.assert_allclose(
        problem.fisher_from(problem.residuals(u), jacobian), expected.T @ expected, rtol=1e-9
    )
    lm = fit.fit(problem, method="levenberg_marquardt", max_steps=200)
    lbfgs = fit.fit(problem, method="lbfgs", max_steps=300)
    assert lm.converged and lbfgs.converged
    # LM stops once a Gauss–Newton step would gain less than DECREMENT_TOLERANCE
    assert abs(float(lm.loss) - float(lbfgs.loss)) < fit._optimise.DECREMENT_TOLERANCE
    assert np.all(np.abs(lm.estimates - lbfgs.estimates) < 0.1 * lbfgs.se)
    # the reweighted least-squares fixed point (σ held at the prediction) is elsewhere: its
    # gradient at the likelihood's optimum is far from zero
    held = lambda v: problem._scaled(v, *problem.predictions(v), hold_sigma=True)[0]  # noqa: E731
    optimum = jnp.asarray(lbfgs.u)
    irls_gradient = jax.jacfwd(held)(optimum).T @ held(optimum)
    assert float(jnp.max(jnp.abs(irls_gradient))) > 1.0


@pytest.mark.slow
def test_prior_pulls_a_weakly_determined_parameter(clamp_problem):
    problem, truth = clamp_problem
    prior_value = truth["hepatic_insulin_ec50"] * 3.0
    with_prior = fit.make_problem(
        problem.base_model,
        problem.experiments,
        FREE,
        error_models=ERRORS,
        priors={"hepatic_insulin_ec50": (prior_value, 1.05)},
    )
    result = fit.fit(with_prior)
    estimate = result.to_dataframe().set_index("parameter").loc["hepatic_insulin_ec50", "estimate"]
    assert abs(np.log(estimate / prior_value)) < 0.15  # a tight prior dominates
    with pytest.raises(ValueError, match="not a positive parameter"):
        fit.make_problem(
            problem.base_model,
            problem.experiments,
            ["cav_half_activation"],
            priors={"cav_half_activation": (-40.0, 2.0)},
        )


@pytest.mark.slow
def test_multistart_waterfall_and_profile(clamp_problem, clamp_fit):
    problem, truth = clamp_problem
    best, table = fit.multistart(problem, 4, spread=3.0, seed=2)
    assert list(table["loss"]) == sorted(table["loss"])
    assert float(best.loss) == pytest.approx(table["loss"].iloc[0])
    assert table["converged"].sum() >= 2
    # Levenberg–Marquardt (the vmapped default) and L-BFGS minimise the same likelihood
    assert float(best.loss) <= clamp_fit.loss + 0.01
    frame = clamp_fit.to_dataframe().set_index("parameter")
    name = "signalling_capacity"
    k = FREE.index(name)
    prof = fit.profile_likelihood(
        problem,
        clamp_fit.u,
        name,
        se=float(np.asarray(fit.laplace(problem, clamp_fit.u)["se_unconstrained"])[k]),
        points=5,
        max_steps=40,
    )
    assert prof["bounded_95"] and np.all(prof["rise"] > -1e-6)
    low, high = prof["interval"]
    assert low <= frame.loc[name, "estimate"] <= high
