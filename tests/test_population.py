"""Population inference (FOCE-I): the objective against an exact marginal likelihood, its
gradient against finite differences, recovery of a simulated cohort, and refusals."""

from __future__ import annotations

import os
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from mgjax.fit import AbstractFitProblem
from mgjax.population import (
    CovariateEffect,
    PopulationModel,
    fit_population,
    one_compartment_problem,
    simulate_one_compartment_cohort,
    stack_problems,
)
from mgjax.population._fit import _start
from mgjax.population._laplace import fit_subjects, population_objective, subjects_objective
from mgjax.solve import SolverOptions

TYPICAL = dict(ka=1.2, cl=4.0, v=40.0, sigma_additive=0.05, sigma_proportional=0.1)
OMEGA = dict(ka=0.3, cl=0.25, v=0.2)
TIMES = [0.5, 2.0, 8.0]  # sparse: three samples per subject


class LinearProblem(AbstractFitProblem):
    """y = X·u + ε, ε ~ N(0, σ²): linear in u, so the Laplace approximation is exact."""

    design: Any
    observed: Any
    sd: Any
    lower: Any
    upper: Any
    prior_mean: Any
    prior_sd: Any
    options: SolverOptions = SolverOptions()
    free: tuple[str, ...] = eqx.field(static=True, default=("a", "b"))
    error_parameters: tuple = eqx.field(static=True, default=())
    least_squares: bool = eqx.field(static=True, default=True)

    @property
    def names(self):
        return self.free

    def to_values(self, u):
        return u

    def from_values(self, values):
        return jnp.asarray(values, dtype=jnp.float64)

    def log_scale(self):
        return (False, False)

    def initial(self):
        return jnp.zeros(2)

    def fix(self, name, value):
        raise NotImplementedError("not needed by these tests")

    def predictions(self, u):
        return self.design @ u, jnp.asarray(True)

    def residuals_from(self, u, preds, ok):
        return (self.observed - preds) / self.sd

    def negative_log_likelihood_from(self, u, preds, ok):
        r = (self.observed - preds) / self.sd
        return jnp.sum(0.5 * r**2 + jnp.log(self.sd) + 0.5 * np.log(2 * np.pi))

    def mean_and_sd(self, u):
        preds, _ = self.predictions(u)
        return preds, jnp.full_like(preds, self.sd), jnp.ones(preds.shape, bool)


def _linear_cohort(n=6, m=4, seed=0):
    rng = np.random.default_rng(seed)
    problems = []
    for _ in range(n):
        x = np.stack([np.ones(m), rng.uniform(0, 3, m)], axis=1)
        y = x @ np.array([1.0, 0.5]) + rng.normal(0, 0.4, m)
        problems.append(
            LinearProblem(
                design=jnp.asarray(x),
                observed=jnp.asarray(y),
                sd=jnp.asarray(0.3),
                lower=jnp.full(2, -jnp.inf),
                upper=jnp.full(2, jnp.inf),
                prior_mean=jnp.full(2, jnp.nan),
                prior_sd=jnp.ones(2),
            )
        )
    return problems


@pytest.mark.parametrize("omega", ["diagonal", "full"])
def test_foce_objective_equals_the_exact_marginal_likelihood_of_a_linear_model(omega):
    problems = _linear_cohort()
    model = PopulationModel(names=("a", "b"), random=("a", "b"), omega=omega)
    stacked = stack_problems(problems)
    extra = [0.4] if omega == "full" else []
    theta = jnp.asarray([0.8, 0.7, np.log(0.5), np.log(0.2), *extra])
    z = jnp.zeros((len(problems), 0))
    inner = fit_subjects(model, stacked, theta, z, jnp.zeros((len(problems), 2)))
    ofv = np.asarray(subjects_objective(model, stacked, theta, z, inner.xi))
    mu, _, chol = (np.asarray(a) for a in model.unpack(theta))
    cov_eta = chol @ chol.T
    for k, p in enumerate(problems):
        x, y = np.asarray(p.design), np.asarray(p.observed)
        cov = x @ cov_eta @ x.T + 0.09 * np.eye(len(y))
        resid = y - x @ mu
        exact = (
            len(y) * np.log(2 * np.pi)
            + np.linalg.slogdet(cov)[1]
            + resid @ np.linalg.solve(cov, resid)
        )
        assert ofv[k] == pytest.approx(exact, rel=1e-10, abs=1e-10)
    assert bool(np.all(np.asarray(inner.converged)))


def _cohort(n, seed=1):
    problems, weights, truth = simulate_one_compartment_cohort(
        n, typical=TYPICAL, omega_sd=OMEGA, times=TIMES, seed=seed
    )
    model = PopulationModel(
        names=problems[0].names,
        random=("ka", "cl", "v"),
        covariates=(CovariateEffect("cl", "weight", "power", 70.0),),
    )
    return problems, weights, truth, model


START = {
    "ka": 1.0,
    "cl": 5.0,
    "v": 50.0,
    "sigma_additive[concentration]": 0.1,
    "sigma_proportional[concentration]": 0.2,
}


def test_population_gradient_matches_finite_differences():
    problems, weights, _, model = _cohort(12)
    stacked = stack_problems(problems)
    z = jnp.asarray(model.design({"weight": weights}, [str(i) for i in range(12)]))
    theta = _start(model, stacked, problems[0], START, 0.3).at[-4].set(0.5)  # β ≠ 0
    xi0 = jnp.zeros((12, 3))

    @jax.jit
    def ofv(t):
        return population_objective(t, (model, stacked, z, xi0, 100))[0]

    exact = np.asarray(jax.grad(ofv)(theta))
    step = 1e-5
    central = np.array(
        [
            (ofv(theta.at[k].add(step)) - ofv(theta.at[k].add(-step))) / (2 * step)
            for k in range(theta.shape[0])
        ]
    )
    np.testing.assert_allclose(exact, central, rtol=1e-5, atol=1e-5)
    assert np.min(np.abs(exact)) > 0.1  # away from the optimum: a real comparison


@pytest.mark.slow
def test_foce_recovers_a_sparse_simulated_cohort():
    n = 100
    problems, weights, truth, model = _cohort(n)
    subjects = [f"s{i:03d}" for i in range(n)]
    result = fit_population(
        problems,
        model,
        subjects=subjects,
        covariates=pd.DataFrame({"weight": weights}, index=subjects),
        start=START,
        units={"ka": "1/h", "cl": "L/h", "v": "L"},
    )
    assert result.converged and not result.excluded
    table = result.population_parameters.set_index("parameter")
    expected = {
        "ka": TYPICAL["ka"],
        "cl": TYPICAL["cl"],
        "v": TYPICAL["v"],
        "sigma_proportional[concentration]": TYPICAL["sigma_proportional"],
        "cl~weight": 0.75,
    }
    for name, value in expected.items():
        row = table.loc[name]
        # within 3 SE of the truth, and the SE a real one (not zero or huge)
        assert abs(row["estimate"] - value) < 3 * row["se"], (name, row.to_dict())
        assert 0 < row["rse_percent"] < 50, (name, row.to_dict())
    # 95 % intervals around the estimate (coverage over replicate cohorts is a study, not a test)
    assert (table["ci_low"] < table["estimate"]).all() and (
        table["estimate"] < table["ci_high"]
    ).all()
    omega = result.random_effects.set_index("parameter")
    for name, sd in OMEGA.items():
        assert abs(omega.loc[name, "omega_sd"] - sd) < 3 * omega.loc[name, "se"], name
    # EBEs: the individual CLs follow the truth (sparse data: shrunk, but correlated)
    ebe = result.individual_parameters.pivot(index="subject", columns="parameter", values="ebe")
    assert np.corrcoef(np.log(ebe["cl"].to_numpy()), np.log(truth["cl"]))[0, 1] > 0.7
    # OFV, AIC, BIC consistent; diagnostics where the model is right look like N(0, 1)
    q = len(result.theta)
    assert result.aic == pytest.approx(result.ofv + 2 * q)
    assert result.bic == pytest.approx(result.ofv + q * np.log(3 * n))
    cwres = result.predictions["cwres"].to_numpy()
    assert abs(np.mean(cwres)) < 0.2 and 0.8 < np.std(cwres) < 1.2
    assert list(result.predictions.columns[:7]) == [
        "subject",
        "time",
        "observable",
        "dv",
        "pred",
        "ipred",
        "iwres",
    ]
    assert set(result.tables()) >= {
        "population_parameters.csv",
        "random_effects.csv",
        "individual_parameters.csv",
        "predictions.csv",
    }
    # the expected information of the FOCE-I linearisation gives SEs close to R⁻¹'s, and the
    # BHHH-scoring outer fit reaches the same optimum as the default expected-information one
    again = dict(
        subjects=subjects,
        covariates=pd.DataFrame({"weight": weights}, index=subjects),
        start=START,
    )
    expected_se = fit_population(problems, model, covariance="expected", **again)
    np.testing.assert_allclose(expected_se.theta, result.theta)
    se_hessian = np.sqrt(np.diag(result.covariance))
    se_expected = np.sqrt(np.diag(expected_se.covariance))
    names = expected_se.model.theta_names
    error_terms = np.array([n.startswith("sigma_") for n in names])
    np.testing.assert_allclose(se_expected[~error_terms], se_hessian[~error_terms], rtol=0.3)
    # the combined error model's two correlated terms, weakly determined by 3 samples a
    # subject: the expected information gives them larger SEs than the observed curvature
    assert np.all(se_expected[error_terms] > 0.5 * se_hessian[error_terms])
    assert np.all(se_expected[error_terms] < 3.0 * se_hessian[error_terms])
    scoring = fit_population(problems, model, outer="scoring", covariance="none", **again)
    assert scoring.ofv == pytest.approx(result.ofv, abs=1e-3)


def test_a_subject_that_cannot_be_evaluated_is_left_out_and_poisons_nobody():
    problems, weights, _, _ = _cohort(16, seed=3)
    model = PopulationModel(names=problems[0].names, random=("cl", "v"))
    broken = one_compartment_problem(TIMES, [1e308, 1.0, 0.5], [0.0], [100.0])
    subjects = [f"s{i}" for i in range(16)]
    clean = fit_population(problems, model, subjects=subjects, start=START)
    mixed = fit_population(
        problems[:5] + [broken] + problems[5:],
        model,
        subjects=subjects[:5] + ["broken"] + subjects[5:],
        start=START,
    )
    assert mixed.excluded == ("broken",) and clean.excluded == ()
    np.testing.assert_allclose(mixed.theta, clean.theta, rtol=1e-8, atol=1e-10)
    assert mixed.ofv == pytest.approx(clean.ofv, rel=1e-10)


def test_population_models_refuse_what_they_cannot_fit():
    names = ("ka", "cl", "v")
    with pytest.raises(ValueError, match="not quantities of the structural model"):
        PopulationModel(names=names, random=("clearance",))
    with pytest.raises(ValueError, match="distinct"):
        PopulationModel(names=names, random=())
    with pytest.raises(ValueError, match="unknown covariate effect kind"):
        CovariateEffect("cl", "weight", "exponential")
    with pytest.raises(ValueError, match="needs a `level`"):
        CovariateEffect("cl", "sex", "categorical")
    model = PopulationModel(
        names=names, random=("cl",), covariates=(CovariateEffect("cl", "weight", "power", 70.0),)
    )
    with pytest.raises(ValueError, match="no column 'weight'"):
        model.design(pd.DataFrame({"age": [50.0]}, index=["a"]), ["a"])
    with pytest.raises(ValueError, match="subject 'b' is -3.0; a power effect needs a positive"):
        model.design(pd.DataFrame({"weight": [70.0, -3.0]}, index=["a", "b"]), ["a", "b"])
    sex = CovariateEffect("cl", "sex", "categorical", level="F")
    assert sex.name == "cl~sex=F"
    np.testing.assert_array_equal(sex.design(pd.Series(["F", "M", "F"])), [1.0, 0.0, 1.0])
    problems, *_ = _cohort(2)
    with pytest.raises(ValueError, match="are not the problems'"):
        fit_population(problems, PopulationModel(names=names, random=("cl",)))
    with pytest.raises(ValueError, match="differs in structure or shapes"):
        stack_problems([problems[0], one_compartment_problem([1.0], [1.0], [0.0], [100.0])])


@pytest.mark.slow
def test_population_command_fits_a_nonmem_csv_into_a_run_directory(tmp_path):
    import json

    from typer.testing import CliRunner

    from mgjax.app.cli import app
    from mgjax.population import nonmem_table

    n = 40
    problems, weights, _ = simulate_one_compartment_cohort(
        n, typical=TYPICAL, omega_sd=OMEGA, times=TIMES, seed=7
    )
    subjects = [f"id{i}" for i in range(n)]
    table = nonmem_table(problems, subjects, pd.DataFrame({"wt": weights}, index=subjects))
    table.to_csv(tmp_path / "pk.csv", index=False)
    out = tmp_path / "run"
    args = ["population", "configs/population_pk.yaml", "--data", tmp_path / "pk.csv"]
    result = CliRunner().invoke(app, [str(a) for a in [*args, "--out", out]])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "foce-i" and summary["subjects"] == n and summary["converged"]
    # progress: the OFV of every outer iteration in the log; the checkpoint gone at the end
    log = (out / "run.log").read_text()
    assert "FOCE-I iteration 0: OFV" in log
    assert f"FOCE-I iteration {summary['iterations']}: OFV" in log
    assert not (out / "foce_checkpoint.npz").exists()
    population = pd.read_csv(out / "population_parameters.csv")
    assert list(population.columns) == [
        "parameter",
        "estimate",
        "se",
        "rse_percent",
        "ci_low",
        "ci_high",
        "unit",
    ]
    assert population.set_index("parameter").loc["cl", "unit"] == "L/h"
    # the same fit from Python, on the same problems: the command adds nothing of its own
    model = PopulationModel(
        names=problems[0].names,
        random=("ka", "cl", "v"),
        covariates=(CovariateEffect("cl", "wt", "power", 70.0),),
    )
    direct = fit_population(
        problems,
        model,
        subjects=subjects,
        covariates=pd.DataFrame({"wt": weights}, index=subjects),
        start=START,
    )
    np.testing.assert_allclose(
        population["estimate"].to_numpy(),
        direct.population_parameters["estimate"].to_numpy(),
        rtol=1e-6,
    )
    for name in ("random_effects.csv", "individual_parameters.csv", "predictions.csv"):
        assert len(pd.read_csv(out / name)) > 0
    # bad input: one message, exit 2
    bad = table.copy()
    bad.loc[1, "TIME"] = -1.0
    bad.to_csv(tmp_path / "bad.csv", index=False)
    result = CliRunner().invoke(
        app,
        [*map(str, args[:2]), "--data", str(tmp_path / "bad.csv"), "--out", str(tmp_path / "r2")],
    )
    assert result.exit_code == 2 and "bad.csv, row 3, column 'TIME'" in result.output, result.output


def test_coupled_model_cohorts_build_as_population_problems():
    """The coupled model's subjects stack on log coordinates, and `mean_and_sd` is what the
    likelihood uses: (y − mean)/sd are the problem's own residuals."""
    import mgjax
    from mgjax.app.cli import default_cohort_path
    from mgjax.population import cohort_problems

    dataset = mgjax.load_dataset(default_cohort_path())
    subjects = ["s0000", "s0001", "s0002"]
    free = ("signalling_capacity", "dietary_mg_intake")
    problems, ids, covariates = cohort_problems(dataset, free, subjects=subjects)
    assert ids == subjects and list(covariates.index) == subjects
    assert problems.transforms == ("log", "log")  # log-normal random effects
    one = jax.tree.map(lambda x: x[0], problems)
    u = one.initial()
    np.testing.assert_allclose(
        np.exp(u), [float(v) for v in mgjax.get_parameters(one.base_model, free).values()]
    )
    mean, sd, mask = (np.asarray(a) for a in one.mean_and_sd(u))
    observed = np.concatenate([np.asarray(e.values) for e in one.experiments])
    residuals = np.asarray(one.residuals(u))[: len(mean)]
    np.testing.assert_allclose(np.where(mask, (observed - mean) / sd, 0.0), residuals, rtol=1e-12)
    assert mask.sum() > 10
    # BIC's n: the cohort's observation rows, not the residual vector's length
    from mgjax.population._fit import _n_observations

    rows = dataset.observations[dataset.observations["subject"].isin(subjects)]
    assert _n_observations(problems) == len(rows)


def test_recovery_study_runs_and_summarises_every_parameter():
    from helpers import load_experiment

    study = load_experiment("studies/population_recovery")
    summary = study.main(replicates=2, subjects=40)
    assert list(summary.index) == list(study.truth_rows())
    assert summary["mean_estimate"].notna().all()
    # typical values of 40 sparse subjects: within 25 % on average over two cohorts
    typical = summary.loc[["ka", "cl", "v"]]
    assert (typical["bias_percent"].abs() < 25).all(), typical


def write_pk_csv(path, n: int, seed: int):
    """A NONMEM-style CSV of `n` simulated one-compartment subjects (samples at 0.5, 2, 8,
    24 h; weight as covariate `wt`), for the command-line tests; returns its path."""
    from mgjax.population import nonmem_table

    problems, weights, _ = simulate_one_compartment_cohort(
        n, typical=TYPICAL, omega_sd=OMEGA, times=[0.5, 2.0, 8.0, 24.0], seed=seed
    )
    subjects = [f"id{i}" for i in range(n)]
    table = nonmem_table(problems, subjects, pd.DataFrame({"wt": weights}, index=subjects))
    table.to_csv(path, index=False)
    return path


def _multistart_cohort():
    """(problems, model, fit_population keywords) of the 40-subject cohort the multistart
    and checkpoint tests fit (no covariance step)."""
    problems, weights, _, model = _cohort(40, seed=3)
    subjects = [f"s{i}" for i in range(40)]
    kwargs = dict(
        subjects=subjects,
        covariates=pd.DataFrame({"weight": weights}, index=subjects),
        start=START,
        covariance="none",
    )
    return problems, model, kwargs


def test_multistart_reports_every_start_and_keeps_the_lowest_ofv():
    from mgjax.population._fit import _perturbed_starts

    problems, model, kwargs = _multistart_cohort()
    single = fit_population(problems, model, **kwargs)
    multi = fit_population(problems, model, starts=3, seed=5, **kwargs)
    assert len(multi.start_ofvs) == 3 and multi.start_ofvs[0] == pytest.approx(single.ofv)
    assert multi.ofv == pytest.approx(min(multi.start_ofvs)) and multi.ofv <= single.ofv + 1e-9
    assert multi.summary()["start_ofvs"] == list(multi.start_ofvs)
    # the starts are real perturbations (log-scale typical values and log ω), the same for
    # the same seed
    first = problems[0]
    theta0 = jnp.asarray(model.pack(first.initial(), [0.0], [0.3, 0.3, 0.3]))
    a = np.stack(_perturbed_starts(model, first, theta0, 3, 0.5, 5))
    b = np.stack(_perturbed_starts(model, first, theta0, 3, 0.5, 5))
    np.testing.assert_array_equal(a, b)
    assert np.all(np.abs(a[1:, :3] - a[0, :3]) > 0) and np.all(a[1:, 5] == a[0, 5])
    with pytest.raises(ValueError, match="FOCE-I only"):
        fit_population(problems, model, starts=2, method="saem", **kwargs)


def test_an_interrupted_foce_i_fit_resumes_from_its_checkpoint(tmp_path):
    # FOCE-I saves its state after every outer iteration: a fit of two starts stopped in the
    # second start's third iteration and run again with the same checkpoint continues there
    # (no iteration repeated) and ends where an uninterrupted fit does; progress reports the
    # OFV of every iteration, decreasing
    problems, model, kwargs = _multistart_cohort()
    kwargs |= dict(starts=2, seed=5)
    whole = fit_population(problems, model, **kwargs)
    checkpoint = tmp_path / "foce.npz"
    seen = []

    def stop_in_the_second_start(iteration, iterations, theta, ofv):
        seen.append((iteration, ofv))
        if len(seen) > whole_first_iterations + 3:
            raise KeyboardInterrupt

    whole_first_iterations = fit_population(problems, model, **{**kwargs, "starts": 1}).iterations
    assert whole_first_iterations >= 3 and whole.iterations >= 3
    with pytest.raises(KeyboardInterrupt):
        fit_population(
            problems, model, checkpoint=checkpoint, progress=stop_in_the_second_start, **kwargs
        )
    first = [ofv for _, ofv in seen[: whole_first_iterations + 1]]
    assert [k for k, _ in seen[: whole_first_iterations + 1]] == list(
        range(whole_first_iterations + 1)
    )
    assert all(b <= a + 1e-9 for a, b in zip(first, first[1:]))  # the accepted OFV never rises
    assert first[-1] == pytest.approx(whole.start_ofvs[0], abs=1e-9)
    later = []
    resumed = fit_population(
        problems,
        model,
        checkpoint=checkpoint,
        progress=lambda k, total, theta, ofv: later.append(k),
        **kwargs,
    )
    assert later[0] == seen[-1][0] + 1  # saved before it was reported: nothing repeated
    np.testing.assert_allclose(resumed.theta, whole.theta, rtol=1e-12, atol=1e-12)
    assert resumed.start_ofvs == pytest.approx(whole.start_ofvs, abs=1e-10)
    assert resumed.iterations == whole.iterations and resumed.ofv == pytest.approx(whole.ofv)
    # a checkpoint of another fit (another seed) is refused, not silently resumed
    with pytest.raises(ValueError, match="another FOCE-I fit"):
        fit_population(problems, model, checkpoint=checkpoint, **{**kwargs, "seed": 6})


def test_a_second_run_reads_the_foce_i_program_back(tmp_path):
    # `mgjax population` stores its FOCE-I program next to JAX's compilation cache: a second
    # process on a cohort of the same structure and size reads it back (the stored file is
    # not written again) and reaches the same estimates
    import json
    import subprocess
    import sys

    csv = write_pk_csv(tmp_path / "pk.csv", 30, seed=4)
    env = dict(os.environ, MGJAX_COMPILATION_CACHE="1", MGJAX_CACHE_DIR=str(tmp_path / "cache"))
    command = [sys.executable, "-m", "mgjax", "population", "configs/population_pk.yaml"]
    command += ["--data", str(csv), "report.enabled=false"]
    runs = []
    for k in range(2):
        out = tmp_path / f"run{k}"
        done = subprocess.run(
            [*command, "--out", str(out)], capture_output=True, text=True, env=env
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        stored = sorted((tmp_path / "cache" / "mgjax" / "programs").glob("population-fisher-*"))
        assert len(stored) == 1
        runs.append((stored[0].stat().st_mtime_ns, json.loads((out / "summary.json").read_text())))
    assert runs[1][0] == runs[0][0]  # read back, not traced and written again
    assert runs[1][1]["ofv"] == pytest.approx(runs[0][1]["ofv"], abs=1e-9)
    assert runs[1][1]["iterations"] == runs[0][1]["iterations"]


_SHARDED_FIT = """
import json, sys
sys.path.insert(0, "tests")
import jax, numpy as np, pandas as pd
from test_population import _cohort, START
from mgjax.population import fit_population
n = 39  # odd: the two devices' shares are padded
problems, weights, _, model = _cohort(n, seed=3)
subjects = [f"s{i}" for i in range(n)]
covariates = pd.DataFrame({"weight": weights}, index=subjects)
for outer in ("fisher", "scoring"):
    one, two = (
        fit_population(problems, model, subjects=subjects, covariates=covariates, start=START,
                       outer=outer, devices=jax.devices()[:d])
        for d in (1, 2)
    )
    print(json.dumps(dict(
        theta=[one.theta.tolist(), two.theta.tolist()], ofv=[one.ofv, two.ofv],
        iterations=[one.iterations, two.iterations],
        se=[np.sqrt(np.diag(f.covariance)).tolist() for f in (one, two)],
        subjects=sorted(set(two.individual_parameters["subject"])) == sorted(subjects),
        devices=len(jax.devices()),
    )))
"""


@pytest.mark.slow
def test_foce_i_split_over_two_devices_gives_the_one_device_fit():
    # the subject axis of the FOCE-I program sharded over two host devices (each runs its own
    # subjects' inner fits and derivatives; the cohort of 39 padded to 40 by a weightless
    # subject): the same estimates, OFV, iterations and SEs as on one device (to the outer
    # fit's tolerance), for both Levenberg–Marquardt curvatures, and no padded subject in
    # the tables
    import json
    import subprocess
    import sys

    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    done = subprocess.run(
        [sys.executable, "-c", _SHARDED_FIT], capture_output=True, text=True, env=env, timeout=600
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    fits = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(fits) == 2
    for fit in fits:
        assert fit["devices"] == 2
        # equal to within the outer fit's own tolerance (the OFV's last 1e-6): the devices'
        # programs round differently, and BHHH scoring's curvature leaves θ's flattest
        # direction free to ~1e-6 (measured: 1e-9 on fisher, 2e-6 on scoring)
        np.testing.assert_allclose(fit["theta"][1], fit["theta"][0], rtol=0, atol=2e-5)
        assert fit["ofv"][1] == pytest.approx(fit["ofv"][0], abs=1e-6)
        assert fit["iterations"][1] == fit["iterations"][0]
        np.testing.assert_allclose(fit["se"][1], fit["se"][0], rtol=1e-3)
        assert fit["subjects"]  # the tables hold the 39 subjects, none of the padding


def test_one_pass_value_and_score_equal_the_autodiff_ones():
    # `subject_value_and_score` (one forward-over-forward pass, the implicit function theorem
    # written out) against `subject_objective` differentiated by JAX, at converged EBEs of
    # the closed-form cohort away from the optimum (a covariate effect ≠ 0, full Ω): the same
    # OFV_i and gradient
    from mgjax.population._laplace import subject_objective, subject_value_and_score

    problems, weights, _, _ = _cohort(10)
    model = PopulationModel(
        names=problems[0].names,
        random=("ka", "cl", "v"),
        covariates=(CovariateEffect("cl", "weight", "power", 70.0),),
        omega="full",
    )
    stacked = stack_problems(problems)
    z = jnp.asarray(model.design({"weight": weights}, [str(i) for i in range(10)]))
    theta = _start(model, stacked, problems[0], START, 0.3)
    theta = theta.at[-4].set(0.5) + 0.03 * jnp.arange(theta.shape[0], dtype=float)
    inner = fit_subjects(model, stacked, theta, z, jnp.zeros((10, 3)))
    assert bool(np.all(np.asarray(inner.converged)))

    def autodiff(p, zi, x):
        return jax.value_and_grad(lambda t: subject_objective(model, p, t, zi, x))(theta)

    expected = jax.jit(jax.vmap(autodiff))(stacked, z, inner.xi)
    one_pass = jax.jit(jax.vmap(lambda p, zi, x: subject_value_and_score(model, p, theta, zi, x)))(
        stacked, z, inner.xi
    )
    np.testing.assert_allclose(one_pass[0], expected[0], rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(one_pass[1], expected[1], rtol=1e-7, atol=1e-7)
    assert np.min(np.abs(np.asarray(expected[1]))) > 1e-3  # a real comparison
