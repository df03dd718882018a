"""SAEM (the second population method) and the importance-sampling OFV: against the exact
maximum-likelihood estimate of a linear mixed model, against FOCE-I on a simulated PK cohort,
and through the command line."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from test_population import OMEGA, START, TYPICAL, LinearProblem, write_pk_csv

from mgjax.population import (
    CovariateEffect,
    PopulationModel,
    SaemSettings,
    fit_population,
    importance_sampling_ofv,
    nonmem_table,
    simulate_one_compartment_cohort,
    stack_problems,
)
from mgjax.population._laplace import fit_subjects, value_gradient_curvature

FAST = SaemSettings(exploration=150, smoothing=150, annealing=50, chains=2)


def _linear_cohort(n, seed, sd=0.3):
    """y = a_i + b_i·x + ε with a_i, b_i normal: a linear mixed model."""
    rng = np.random.default_rng(seed)
    problems = []
    for _ in range(n):
        x = np.stack([np.ones(5), rng.uniform(0, 3, 5)], axis=1)
        u = np.array([1.0, 0.5]) + rng.normal(0, [0.5, 0.2])
        y = x @ u + rng.normal(0, sd, 5)
        problems.append(
            LinearProblem(
                design=jnp.asarray(x),
                observed=jnp.asarray(y),
                sd=jnp.asarray(sd),
                lower=jnp.full(2, -jnp.inf),
                upper=jnp.full(2, jnp.inf),
                prior_mean=jnp.full(2, jnp.nan),
                prior_sd=jnp.ones(2),
            )
        )
    return problems


@pytest.mark.parametrize("random", [("a", "b"), ("a",)])
def test_saem_finds_the_exact_maximum_likelihood_estimate_of_a_linear_mixed_model(random):
    # for a linear model FOCE-I's objective is the exact marginal likelihood, so its optimum is
    # the MLE; SAEM must reach it (up to its Monte Carlo error, small next to the SEs). With one
    # random effect, b is a fixed effect: SAEM's Gauss–Newton update of θ_f is exercised.
    problems = _linear_cohort(60, seed=2)
    model = PopulationModel(names=("a", "b"), random=random)
    exact = fit_population(problems, model, importance_samples=0)
    precise = SaemSettings(exploration=150, smoothing=400, annealing=50, chains=4)
    saem = fit_population(problems, model, method="saem", saem_settings=precise)
    assert saem.method == "saem" and saem.converged and exact.converged
    se = np.sqrt(np.diag(exact.covariance))
    assert np.all(np.isfinite(se)) and np.all(se > 0)
    np.testing.assert_array_less(np.abs(saem.theta - exact.theta), 0.25 * se)
    assert saem.ofv == pytest.approx(exact.ofv, abs=0.05)  # at the maximum: flat
    assert saem.trace.shape == (precise.iterations, len(saem.theta))


@pytest.mark.parametrize("random", [("a", "b"), ("a",)])
def test_stochastic_information_gives_the_exact_standard_errors_of_a_linear_mixed_model(random):
    # for a linear mixed model FOCE-I's R is the exact observed information; Louis' identity
    # from Markov chains at the estimate (SAEM's covariance step, simulations only) must
    # reproduce it up to Monte Carlo error. With one random effect, b has none: its block
    # comes from the likelihood's derivatives, not from the random effects' prior.
    problems = _linear_cohort(60, seed=2)
    model = PopulationModel(names=("a", "b"), random=random)
    exact = fit_population(problems, model, importance_samples=0)
    settings = SaemSettings(
        exploration=100, smoothing=100, annealing=50, chains=4, information_draws=300
    )
    louis = fit_population(
        problems,
        model,
        method="saem",
        saem_settings=settings,
        covariance="stochastic",
        importance_samples=0,
    )
    se_exact = np.sqrt(np.diag(exact.covariance))
    se_louis = np.sqrt(np.diag(louis.covariance))
    assert louis.covariance_method == "stochastic" and np.all(np.isfinite(se_louis))
    np.testing.assert_allclose(se_louis, se_exact, rtol=0.05)
    # the same information from chains started at FOCE-I's EBEs
    foce = fit_population(
        problems, model, covariance="stochastic", saem_settings=settings, importance_samples=0
    )
    np.testing.assert_allclose(np.sqrt(np.diag(foce.covariance)), se_exact, rtol=0.05)


def test_importance_sampling_ofv_equals_the_exact_marginal_likelihood_of_a_linear_model():
    problems = _linear_cohort(8, seed=4)
    model = PopulationModel(names=("a", "b"), random=("a", "b"))
    stacked = stack_problems(problems)
    theta = jnp.asarray([0.8, 0.7, np.log(0.5), np.log(0.2)])
    z = jnp.zeros((8, 0))
    inner = fit_subjects(model, stacked, theta, z, jnp.zeros((8, 2)))
    curvature = jax.vmap(lambda p, zi, x: value_gradient_curvature(model, p, theta, zi, x)[2])(
        stacked, z, inner.xi
    )
    ofv = np.asarray(
        importance_sampling_ofv(
            model, stacked, theta, z, inner.xi, curvature, jax.random.PRNGKey(0), samples=4000
        )
    )
    mu, _, chol = (np.asarray(a) for a in model.unpack(theta))
    for k, p in enumerate(problems):
        x, y = np.asarray(p.design), np.asarray(p.observed)
        cov = x @ chol @ chol.T @ x.T + 0.09 * np.eye(len(y))
        resid = y - x @ mu
        exact = len(y) * np.log(2 * np.pi) + np.linalg.slogdet(cov)[1]
        exact += resid @ np.linalg.solve(cov, resid)
        assert ofv[k] == pytest.approx(exact, abs=0.02)  # Monte Carlo error of 4000 draws
    # a different θ gives a different value: the check has teeth
    other = importance_sampling_ofv(
        model, stacked, theta.at[0].add(1.0), z, inner.xi, curvature, jax.random.PRNGKey(0), 4000
    )
    assert float(jnp.sum(other)) > float(np.sum(ofv)) + 1.0


@pytest.mark.slow
def test_saem_and_foce_agree_within_their_standard_errors_on_a_pk_cohort():
    n = 80
    problems, weights, _ = simulate_one_compartment_cohort(
        n, typical=TYPICAL, omega_sd=OMEGA, times=[0.25, 1.0, 3.0, 8.0, 24.0], seed=11
    )
    subjects = [f"s{i}" for i in range(n)]
    model = PopulationModel(
        names=problems[0].names,
        random=("ka", "cl", "v"),
        covariates=(CovariateEffect("cl", "weight", "power", 70.0),),
    )
    covariates = pd.DataFrame({"weight": weights}, index=subjects)
    kwargs = dict(subjects=subjects, covariates=covariates, start=START)
    foce = fit_population(problems, model, importance_samples=1000, **kwargs)
    saem = fit_population(problems, model, method="saem", saem_settings=FAST, **kwargs)
    for table in ("population_parameters", "random_effects"):
        a = getattr(foce, table).set_index("parameter")
        b = getattr(saem, table).set_index("parameter")
        column = "estimate" if table == "population_parameters" else "omega_sd"
        for name in a.index:
            difference = abs(a.loc[name, column] - b.loc[name, column])
            assert difference < a.loc[name, "se"], (table, name, difference)
    # comparable OFVs: FOCE-I's and the importance-sampling one, at either estimate
    assert abs(foce.ofv - saem.ofv) < 3.0
    assert abs(foce.ofv_importance_sampling - saem.ofv_importance_sampling) < 3.0
    assert abs(foce.ofv - foce.ofv_importance_sampling) < 10.0


@pytest.mark.slow
def test_population_command_runs_saem(tmp_path):
    from typer.testing import CliRunner

    from mgjax.app.cli import app

    n = 30
    problems, weights, _ = simulate_one_compartment_cohort(
        n, typical=TYPICAL, omega_sd=OMEGA, times=[0.5, 2.0, 8.0, 24.0], seed=5
    )
    subjects = [f"id{i}" for i in range(n)]
    nonmem_table(problems, subjects, pd.DataFrame({"wt": weights}, index=subjects)).to_csv(
        tmp_path / "pk.csv", index=False
    )
    out = tmp_path / "run"
    args = ["population", "configs/population_pk.yaml", "--data", str(tmp_path / "pk.csv")]
    args += ["--out", str(out)]
    overrides = ["population.method=saem", "population.saem.exploration=60"]
    overrides += [
        "population.saem.smoothing=40",
        "population.saem.annealing=30",
        "report.enabled=false",
    ]
    args += overrides
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "saem" and summary["iterations"] == 100
    assert np.isfinite(summary["ofv"]) and np.isfinite(summary["ofv_importance_sampling"])
    table = pd.read_csv(out / "population_parameters.csv").set_index("parameter")
    assert table.loc["cl", "estimate"] == pytest.approx(TYPICAL["cl"], rel=0.25)


def test_forward_only_problems_get_the_same_foce_fit_by_forward_mode():
    # a structural problem whose simulations allow forward-mode derivatives only (Diffrax's
    # ForwardMode adjoint, as the coupled model's batch fits use): the outer gradient is then
    # taken in forward mode, and the fit is the same
    import dataclasses as dc

    import diffrax as dfx

    from mgjax.population._fit import forward_only

    problems, weights, _ = simulate_one_compartment_cohort(
        16, typical=TYPICAL, omega_sd=OMEGA, times=[0.5, 2.0, 8.0], seed=9
    )
    model = PopulationModel(names=problems[0].names, random=("cl", "v"))
    forward = [
        dc.replace(p, options=dc.replace(p.options, adjoint=dfx.ForwardMode())) for p in problems
    ]
    assert forward_only(forward[0]) and not forward_only(problems[0])
    reverse_fit = fit_population(problems, model, start=START, covariance="none")
    forward_fit = fit_population(forward, model, start=START, covariance="none")
    assert forward_fit.converged and reverse_fit.converged
    assert forward_fit.ofv == pytest.approx(reverse_fit.ofv, abs=1e-6)
    # every quantity the data determine (σ_proportional drifts towards 0 on this sparse design,
    # a flat direction where the two runs stop at different points of equal OFV)
    determined = [k for k, n in enumerate(model.theta_names) if "proportional" not in n]
    np.testing.assert_allclose(
        forward_fit.theta[determined], reverse_fit.theta[determined], rtol=1e-5, atol=1e-7
    )


@pytest.mark.slow
def test_population_command_samples_the_posterior_with_nuts(tmp_path):
    from typer.testing import CliRunner

    from mgjax.app.cli import app

    n = 20
    problems, weights, _ = simulate_one_compartment_cohort(
        n, typical=TYPICAL, omega_sd=OMEGA, times=[0.5, 2.0, 8.0, 24.0], seed=6
    )
    subjects = [f"id{i}" for i in range(n)]
    nonmem_table(problems, subjects, pd.DataFrame({"wt": weights}, index=subjects)).to_csv(
        tmp_path / "pk.csv", index=False
    )
    out = tmp_path / "run"
    args = ["population", "configs/population_pk.yaml", "--data", str(tmp_path / "pk.csv")]
    args += ["--out", str(out), "population.method=nuts", "population.nuts.warmup=150"]
    args += ["population.nuts.samples=150", "population.estimate_error=[proportional]"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "nuts" and summary["subjects"] == n
    table = pd.read_csv(out / "population_parameters.csv").set_index("parameter")
    assert {"r_hat", "ess"} <= set(table.columns)
    assert table.loc["cl", "ci_low"] < TYPICAL["cl"] < table.loc["cl", "ci_high"]


def test_an_interrupted_saem_run_resumes_from_its_checkpoint(tmp_path):
    # SAEM runs in segments, its state saved after each: a run stopped after its first
    # segment and run again with the same checkpoint ends where an uninterrupted run does
    problems = _linear_cohort(30, seed=7)
    model = PopulationModel(names=("a", "b"), random=("a",))
    settings = SaemSettings(exploration=60, smoothing=60, annealing=30, chains=2)
    kwargs = dict(method="saem", saem_settings=settings, importance_samples=0, seed=3)
    whole = fit_population(problems, model, **kwargs)
    checkpoint = tmp_path / "saem.npz"
    seen = []

    def stop_after_first(iteration, iterations, theta, ofv):
        seen.append(iteration)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit_population(problems, model, checkpoint=checkpoint, progress=stop_after_first, **kwargs)
    assert checkpoint.exists() and seen == [50 - settings.burn_in]
    resumed = fit_population(
        problems, model, checkpoint=checkpoint, progress=lambda k, *_: seen.append(k), **kwargs
    )
    assert seen == [45, 95, settings.iterations]  # the second and third segments only
    np.testing.assert_allclose(resumed.theta, whole.theta, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(resumed.trace, whole.trace, rtol=1e-12, atol=1e-12)
    assert resumed.trace.shape == (settings.iterations, len(whole.theta))
    # a checkpoint of another run (another seed) is refused, not silently resumed
    with pytest.raises(ValueError, match="another SAEM run"):
        fit_population(problems, model, checkpoint=checkpoint, **{**kwargs, "seed": 4})


@pytest.mark.slow
def test_a_killed_saem_run_resumes_from_the_command_line(tmp_path):
    # `mgjax population` (SAEM) in a subprocess killed with SIGKILL after its first
    # checkpoint, then `--resume`: the run finishes from the checkpoint (the iterations done
    # are not repeated) and its checkpoint is removed
    import os
    import signal
    import subprocess
    import sys
    import time

    from mgjax.app._population_job import SAEM_CHECKPOINT

    csv = write_pk_csv(tmp_path / "pk.csv", 60, seed=8)
    out = tmp_path / "run"
    overrides = ["population.method=saem", "population.saem.exploration=1500"]
    overrides += ["population.saem.smoothing=300", "population.saem.chains=2"]
    overrides += ["population.importance_samples=0", "report.enabled=false"]
    command = [sys.executable, "-m", "mgjax", "population", "configs/population_pk.yaml"]
    command += ["--data", str(csv), "--out", str(out), *overrides]
    # the two processes share a compilation cache: the resumed run reads the program back
    env = dict(os.environ, MGJAX_COMPILATION_CACHE="1", MGJAX_CACHE_DIR=str(tmp_path / "cache"))
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.time() + 600
    while time.time() < deadline and process.poll() is None:
        if (out / SAEM_CHECKPOINT).exists():
            break
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "summary.json").exists()
    with np.load(out / SAEM_CHECKPOINT) as saved:
        done = int(saved["done"])
    assert 1 <= done < 36  # of 1805 / 50 segments
    resume = subprocess.run([*command, "--resume"], capture_output=True, text=True, env=env)
    assert resume.returncode == 0, resume.stdout[-2000:] + resume.stderr[-2000:]
    log = (out / "run.log").read_text()
    assert "resuming SAEM" in log and not (out / SAEM_CHECKPOINT).exists()
    # the resumed run ran only the segments not done (37 segments of 50 in 1,805 iterations)
    assert log.split("resuming SAEM")[1].count("SAEM iteration") == 37 - done
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "saem" and summary["iterations"] == 1800
    # the estimates are a fit's (that a resumed run equals an uninterrupted one to 1e-12 is
    # test_an_interrupted_saem_run_resumes_from_its_checkpoint's)
    table = pd.read_csv(out / "population_parameters.csv").set_index("parameter")
    for name in ("ka", "cl", "v"):
        assert table.loc[name, "estimate"] == pytest.approx(TYPICAL[name], rel=0.25), name
