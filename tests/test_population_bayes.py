"""Fully Bayesian population fits (NUTS, numpyro): the sampled density against an independent
computation, agreement with FOCE-I on a small cohort, exclusion of a subject that cannot be
evaluated, full Ω through the LKJ prior, and refusals."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pandas as pd
import pytest
from scipy import stats

from mgjax.population import (
    CovariateEffect,
    PopulationModel,
    _bayes,
    fit_population,
    one_compartment_problem,
    sample_population,
    simulate_one_compartment_cohort,
    stack_problems,
)

# proportional residual error only (see `_proportional`)
TYPICAL = dict(ka=1.2, cl=4.0, v=40.0, sigma_additive=0.0, sigma_proportional=0.15)
OMEGA = dict(ka=0.3, cl=0.25, v=0.2)
TIMES = [0.5, 2.0, 6.0, 12.0]  # four samples per subject
START = {"ka": 1.0, "cl": 5.0, "v": 50.0}
N = 36


def _proportional(times, observed):
    """A subject's problem with a proportional residual error only (the additive term 0):
    the additive and proportional terms trade off in sparse data, which NUTS pays for with
    trees about 2.5 times deeper (the experiment keeps both)."""
    return one_compartment_problem(
        times,
        observed,
        [0.0],
        [100.0],
        values=dict(sigma_additive=0.0, sigma_proportional=0.2),
        estimate_error=("proportional",),
    )


def _model(names, random=("ka", "cl", "v"), omega="diagonal"):
    return PopulationModel(
        names=names,
        random=random,
        covariates=(CovariateEffect("cl", "weight", "power", 70.0),),
        omega=omega,
    )


@pytest.fixture(scope="module")
def cohort():
    """36 simulated subjects (proportional error, 15 %) and, sixth, one whose likelihood is
    not finite anywhere."""
    simulated, weights, _ = simulate_one_compartment_cohort(
        N,
        typical=TYPICAL,
        omega_sd=OMEGA,
        times=TIMES,
        seed=2,
    )
    problems = [_proportional(p.times, p.observed) for p in simulated]
    broken = _proportional(TIMES, [1e308, 1.0, 0.5, 0.1])
    subjects = [f"s{i:02d}" for i in range(N)]
    weights = pd.DataFrame({"weight": weights}, index=subjects)
    weights.loc["broken"] = 70.0
    return (
        problems[:5] + [broken] + problems[5:],
        subjects[:5] + ["broken"] + subjects[5:],
        weights,
    )


@pytest.fixture(scope="module")
def posterior(cohort):
    problems, subjects, weights = cohort
    return sample_population(
        problems,
        _model(problems[0].names),
        subjects=subjects,
        covariates=weights,
        start=START,
        units={"ka": "1/h", "cl": "L/h", "v": "L"},
        num_warmup=300,
        num_samples=300,
        num_chains=2,
        seed=0,
    )


def test_the_sampled_density_is_the_population_models_joint_density():
    problems, weights, _ = simulate_one_compartment_cohort(
        5, typical=TYPICAL, omega_sd=OMEGA, times=TIMES, seed=4
    )
    model = _model(problems[0].names, random=("cl", "v"))
    stacked = stack_problems(problems)
    z = np.log(weights / 70.0)[:, None]
    mu0 = np.log([1.0, 5.0, 50.0, 0.1, 0.2])
    by_name = _bayes.default_priors(model, mu0) | {"cl": dist.Normal(1.5, 0.5)}
    prior = _bayes._priors(model, by_name)
    rng = np.random.default_rng(0)
    x = dict(
        mu=jnp.asarray(mu0 + rng.normal(0.0, 0.1, 5)),
        beta=jnp.asarray([0.6]),
        omega=jnp.asarray(np.log([0.3, 0.2])),  # unconstrained: log ω
        xi=jnp.asarray(rng.normal(size=(5, 2))),
    )
    potential = float(
        jax.jit(functools.partial(_bayes._potential, model, prior, stacked))(jnp.asarray(z), x)
    )

    mu, omega, xi = np.asarray(x["mu"]), np.exp(np.asarray(x["omega"])), np.asarray(x["xi"])
    expected = (
        sum(stats.norm(mu0[k], 2.0).logpdf(mu[k]) for k in (0, 2, 3, 4))
        + stats.norm(1.5, 0.5).logpdf(mu[1])  # the overridden prior of CL's typical log value
        + stats.norm(0.0, 2.0).logpdf(0.6)
        + np.sum(stats.halfnorm(scale=1.0).logpdf(omega) + np.log(omega))  # + log-Jacobian
        + np.sum(stats.norm.logpdf(xi))
    )
    for i, problem in enumerate(problems):
        u = mu.copy()
        u[1] += 0.6 * z[i, 0] + omega[0] * xi[i, 0]
        u[2] += omega[1] * xi[i, 1]
        expected -= float(problem.negative_log_likelihood(jnp.asarray(u)))
    assert potential == pytest.approx(-expected, rel=1e-12)


def test_full_omega_is_diag_omega_times_the_lkj_cholesky_factor():
    model = _model(("ka", "cl", "v", "a", "b"), random=("ka", "cl", "v"), omega="full")
    by_name = _bayes.default_priors(model, np.zeros(5))
    prior = _bayes._priors(model, by_name)
    x = dict(
        mu=jnp.zeros(5),
        beta=jnp.zeros(1),
        omega=jnp.log(jnp.asarray([0.3, 0.2, 0.4])),
        correlation=jnp.asarray([0.3, -0.5, 0.8]),
        xi=jnp.zeros((1, 3)),
    )
    theta, log_prior = jax.jit(functools.partial(_bayes._theta_and_log_prior, model, prior))(x)
    with jax.numpy_dtype_promotion("standard"):  # numpyro's own arithmetic (see _bayes)
        transform = dist.biject_to(dist.constraints.corr_cholesky)
        corr_chol = transform(x["correlation"])
        lkj = float(dist.LKJCholesky(3, 2.0).log_prob(corr_chol))
        jacobian = float(transform.log_abs_det_jacobian(x["correlation"], corr_chol))
    chol = np.asarray(model.unpack(theta)[2])
    np.testing.assert_allclose(chol, np.diag([0.3, 0.2, 0.4]) @ corr_chol, rtol=1e-12)
    assert not np.allclose(chol, np.diag(np.diag(chol)))  # really correlated
    expected = (
        5 * stats.norm(0.0, 2.0).logpdf(0.0)
        + stats.norm(0.0, 2.0).logpdf(0.0)
        + np.sum(stats.halfnorm.logpdf([0.3, 0.2, 0.4]) + np.log([0.3, 0.2, 0.4]))
        + lkj
        + jacobian
    )
    assert float(log_prior) == pytest.approx(expected, rel=1e-12)


@pytest.mark.slow
def test_nuts_agrees_with_foce_on_a_small_cohort(cohort, posterior):
    problems, subjects, weights = cohort
    foce = fit_population(
        problems,
        _model(problems[0].names),
        subjects=subjects,
        covariates=weights,
        start=START,
    )
    assert foce.converged and foce.excluded == ("broken",)
    fixed_foce = foce.population_parameters.set_index("parameter")
    fixed_nuts = posterior.population_parameters.set_index("parameter")
    for name in ("ka", "cl", "v", "sigma_proportional[concentration]", "cl~weight"):
        f, b = fixed_foce.loc[name], fixed_nuts.loc[name]
        combined = np.hypot(f["se"], b["se"])
        assert abs(b["estimate"] - f["estimate"]) < 2 * combined, (name, f, b)
        assert 0.5 < b["se"] / f["se"] < 2.0, (name, f["se"], b["se"])  # like uncertainties
        assert b["ci_low"] < f["estimate"] < b["ci_high"], name
        assert b["r_hat"] < 1.05 and b["ess"] > 100, (name, b)
    random_foce = foce.random_effects.set_index("parameter")
    random_nuts = posterior.random_effects.set_index("parameter")
    for name in OMEGA:
        f, b = random_foce.loc[name], random_nuts.loc[name]
        combined = np.hypot(f["se"], b["se"])
        assert abs(b["omega_sd"] - f["omega_sd"]) < 2 * combined, (name, f, b)
        assert b["r_hat"] < 1.05, (name, b)
    # the subjects' posterior means of η follow FOCE-I's EBEs
    for k in range(3):
        assert np.corrcoef(posterior.eta[:, k], foce.eta[:, k])[0, 1] > 0.9


def test_a_subject_that_cannot_be_evaluated_is_excluded_named_and_poisons_nobody():
    simulated, weights, _ = simulate_one_compartment_cohort(
        6, typical=TYPICAL, omega_sd=OMEGA, times=TIMES, seed=3
    )
    problems = [_proportional(p.times, p.observed) for p in simulated]
    broken = _proportional(TIMES, [1e308, 1.0, 0.5, 0.1])
    subjects = [f"s{i}" for i in range(6)]
    table = pd.DataFrame({"weight": weights}, index=subjects)
    table.loc["broken"] = 70.0
    model = _model(problems[0].names, random=("cl", "v"))
    run = functools.partial(
        sample_population,
        model=model,
        covariates=table,
        start=START,
        num_warmup=20,
        num_samples=20,
    )
    clean = run(problems, subjects=subjects)
    mixed = run(
        problems[:2] + [broken] + problems[2:], subjects=subjects[:2] + ["broken"] + subjects[2:]
    )
    assert mixed.excluded == ("broken",) and clean.excluded == ()
    assert mixed.subjects == tuple(subjects) and mixed.eta.shape == (6, 2)
    assert "broken" not in set(mixed.individual_parameters["subject"])
    assert mixed.summary()["excluded"] == ["broken"] and mixed.summary()["subjects"] == 6
    assert mixed.n_observations == 4 * 6
    # the others' posterior is the one without it: the same draws
    np.testing.assert_allclose(mixed.theta_draws, clean.theta_draws, rtol=1e-9, atol=1e-12)


@pytest.mark.slow
def test_the_posterior_tables_have_foce_layout_and_diagnostics(posterior):
    fixed = posterior.population_parameters
    assert list(fixed.columns[:7]) == [
        "parameter",
        "estimate",
        "se",
        "rse_percent",
        "ci_low",
        "ci_high",
        "unit",
    ]
    assert {"r_hat", "ess"} <= set(fixed.columns)
    assert ((fixed["ci_low"] < fixed["estimate"]) & (fixed["estimate"] < fixed["ci_high"])).all()
    assert fixed.set_index("parameter").loc["cl", "unit"] == "L/h"
    random = posterior.random_effects
    assert list(random.columns[:6]) == [
        "parameter",
        "omega_sd",
        "se",
        "rse_percent",
        "cv_percent",
        "shrinkage_percent",
    ]
    q = len(posterior.model.theta_names)
    assert posterior.theta_draws.shape == (2, 300, q)
    # the table's ω is the posterior mean of exp(log ω) over the θ draws
    draws = posterior.theta_draws.reshape(-1, q)
    log_omega = [posterior.model.theta_names.index(f"log_omega[{k}]") for k in OMEGA]
    np.testing.assert_allclose(
        random["omega_sd"], np.exp(draws[:, log_omega]).mean(axis=0), rtol=1e-10
    )
    summary = posterior.summary()
    assert summary["method"] == "nuts" and summary["max_r_hat"] < 1.1
    assert summary["excluded"] == ["broken"] and summary["subjects"] == N
    assert posterior.eta.shape == (N, 3) and posterior.eta_sd.shape == (N, 3)
    assert summary["divergences"] <= 0.02 * 2 * 300
    assert set(posterior.tables()) == {
        "population_parameters.csv",
        "random_effects.csv",
        "omega.csv",
        "individual_parameters.csv",
    }


@pytest.mark.slow
def test_full_omega_samples_correlated_random_effects():
    simulated, weights, _ = simulate_one_compartment_cohort(
        12,
        typical=TYPICAL,
        omega_sd=OMEGA,
        times=TIMES,
        seed=5,
    )
    problems = [_proportional(p.times, p.observed) for p in simulated]
    model = _model(problems[0].names, random=("cl", "v"), omega="full")
    result = sample_population(
        problems,
        model,
        covariates={"weight": weights},
        start=START,
        num_warmup=150,
        num_samples=150,
    )
    omega = result.omega.to_numpy()
    assert omega[0, 1] == omega[1, 0] and -1 < omega[0, 1] < 1
    np.testing.assert_allclose(np.diag(omega), 1.0)
    # the correlation reported is the posterior mean of L·Lᵀ's correlation over θ's draws
    draws = result.theta_draws.reshape(-1, result.theta_draws.shape[-1])
    chol = jax.vmap(lambda t: model.unpack(t)[2])(jnp.asarray(draws))
    cov = np.asarray(chol @ jnp.swapaxes(chol, 1, 2))
    rho = cov[:, 1, 0] / np.sqrt(cov[:, 0, 0] * cov[:, 1, 1])
    assert omega[1, 0] == pytest.approx(rho.mean(), rel=1e-10)
    assert np.isfinite(result.population_parameters["r_hat"]).all()


def test_sample_population_refuses_what_it_cannot_sample():
    problems, weights, _ = simulate_one_compartment_cohort(
        3, typical=TYPICAL, omega_sd=OMEGA, times=TIMES, seed=1
    )
    model = _model(problems[0].names)
    run = functools.partial(sample_population, problems, model, covariates={"weight": weights})
    with pytest.raises(ValueError, match="are not sampled"):
        run(priors={"clearance": dist.Normal(0.0, 1.0)})
    with pytest.raises(ValueError, match="give a numpyro distribution"):
        run(priors={"cl": (1.0, 0.5)})
    with pytest.raises(ValueError, match=r"needs a distribution on \(0, ∞\)"):
        run(priors={"omega[cl]": dist.Normal(0.0, 1.0)})
    with pytest.raises(ValueError, match="whole real line"):
        run(priors={"cl~weight": dist.HalfNormal(1.0)})
    with jax.numpy_dtype_promotion("standard"):  # numpyro's LKJ constructor
        wrong_size = dist.LKJCholesky(2, 1.0)
    with pytest.raises(ValueError, match="LKJCholesky"):
        sample_population(
            problems,
            _model(problems[0].names, omega="full"),
            covariates={"weight": weights},
            priors={"omega_correlation": wrong_size},
        )
    with pytest.raises(ValueError, match="chain_method"):
        run(chain_method="threads")
