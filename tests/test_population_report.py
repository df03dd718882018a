"""Population diagnostics: the visual predictive check (simulation, binning, strata, pcVPC)
against a cohort simulated from known truth, the population report's figures and page, and
`mgjax vpc`."""

from __future__ import annotations

import base64
import importlib.util
import json
import re
import shutil
from pathlib import Path

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from helpers import assert_png_shows_data
from test_population import _linear_cohort
from typer.testing import CliRunner

from mgjax.app._config import load_config
from mgjax.app._population_job import _structural, population_model
from mgjax.app._population_report import (
    FIGURES,
    write_population_fit,
    write_population_report,
)
from mgjax.app._run_dir import write_run_header
from mgjax.app.cli import app
from mgjax.population import (
    CovariateEffect,
    PopulationModel,
    PopulationResult,
    concentration,
    nonmem_table,
    simulate_one_compartment_cohort,
    simulate_replicates,
    stack_problems,
    visual_predictive_check,
)
from mgjax.population._fit import _tables
from mgjax.population._laplace import INNER_MAX_STEPS, fit_subjects, subjects_objective
from mgjax.population._vpc import assign_bins, bin_edges

ROOT = Path(__file__).resolve().parents[1]
TYPICAL = dict(ka=1.2, cl=4.0, v=40.0, sigma_additive=0.05, sigma_proportional=0.1)
OMEGA = dict(ka=0.3, cl=0.25, v=0.2)
TIMES = [0.5, 1.0, 2.0, 4.0, 8.0, 12.0, 24.0]


def _theta(model: PopulationModel, cl: float = TYPICAL["cl"], omega_scale: float = 1.0):
    """θ at the simulation's truth (optionally another clearance)."""
    mu = np.log(
        [
            TYPICAL["ka"],
            cl,
            TYPICAL["v"],
            TYPICAL["sigma_additive"],
            TYPICAL["sigma_proportional"],
        ]
    )
    sd = [omega_scale * OMEGA[k] for k in ("ka", "cl", "v")]
    return model.pack(mu, [0.75], sd)


@pytest.fixture(scope="module")
def cohort():
    n = 100
    problems, weights, _ = simulate_one_compartment_cohort(
        n, typical=TYPICAL, omega_sd=OMEGA, times=TIMES, seed=11
    )
    model = PopulationModel(
        names=problems[0].names,
        random=("ka", "cl", "v"),
        covariates=(CovariateEffect("cl", "weight", "power", 70.0),),
    )
    return problems, weights, model


def test_vpc_at_the_truth_covers_the_data_and_a_wrong_clearance_does_not(cohort):
    problems, weights, model = cohort
    covariates = {"weight": weights}
    truth = visual_predictive_check(
        _theta(model), problems, model, covariates, replicates=200, bins=10
    )
    table = truth.table
    # seven sampling times ≤ 10 bins: one bin per time, every subject in each
    assert sorted(table["time"].unique()) == TIMES
    assert (table["n"] == 100).all() and len(table) == 3 * len(TIMES)
    assert truth.coverage >= 0.85, table
    assert (table["simulated_low"] < table["simulated_high"]).all()
    # 3× the clearance: concentrations fall faster than observed, the intervals miss the data
    wrong = visual_predictive_check(
        _theta(model, cl=3 * TYPICAL["cl"]), problems, model, covariates, replicates=200, bins=10
    )
    assert wrong.coverage <= 0.3, wrong.table
    # from 2 h on (elimination dominates) no bin covers: the data lie above every interval
    late = wrong.table[wrong.table["time"] >= 2.0]
    assert not late["covered"].any() and (late["simulated_high"] < late["observed"]).all()


def test_prediction_corrected_vpc_normalises_by_the_population_prediction(cohort):
    problems, weights, model = cohort
    covariates = {"weight": weights}
    pc = visual_predictive_check(
        _theta(model), problems, model, covariates, replicates=200, prediction_corrected=True
    )
    obs = pc.observations
    # pcDV = DV · PRED_bin / PRED, PRED_bin the bin's median PRED
    for _, g in obs.groupby("bin"):
        expected = g["dv"] * np.median(g["pred"]) / g["pred"]
        np.testing.assert_allclose(g["value"], expected, rtol=1e-12)
    # the weight effect makes PRED differ between subjects: the correction is not trivial
    assert obs.groupby("bin")["pred"].std().min() > 0
    assert not np.allclose(obs["value"], obs["dv"])
    assert pc.prediction_corrected and pc.coverage >= 0.85, pc.table
    wrong = visual_predictive_check(
        _theta(model, cl=3 * TYPICAL["cl"]),
        problems,
        model,
        covariates,
        replicates=200,
        prediction_corrected=True,
    )
    assert wrong.coverage <= 0.3, wrong.table
    assert not wrong.table.loc[wrong.table["time"] >= 2.0, "covered"].any()


def test_replicates_are_the_model_and_do_not_depend_on_chunking(cohort):
    problems, weights, model = cohort
    problems = problems[:5]
    z = model.design({"weight": weights[:5]}, [str(i) for i in range(5)])
    # random effects ~0: each observation ~ N(C_typical, a² + (b·C)²)
    theta = _theta(model, omega_scale=1e-9)
    sims = simulate_replicates(theta, problems, model, z, replicates=4000, seed=3)
    assert sims.shape == (4000, 5, len(TIMES))
    for i in range(5):
        cl = TYPICAL["cl"] * (weights[i] / 70.0) ** 0.75
        c = np.asarray(
            concentration(
                jnp.asarray(TIMES),
                jnp.zeros(1),
                jnp.full(1, 100.0),
                TYPICAL["ka"],
                cl,
                TYPICAL["v"],
            )
        )
        sd = np.sqrt(TYPICAL["sigma_additive"] ** 2 + (TYPICAL["sigma_proportional"] * c) ** 2)
        se = sd / np.sqrt(4000)
        assert np.all(np.abs(sims[:, i].mean(0) - c) < 4 * se), (sims[:, i].mean(0), c)
        np.testing.assert_allclose(sims[:, i].std(0), sd, rtol=0.06)
    # the same draws whatever the chunk size; another seed gives others
    full = simulate_replicates(_theta(model), problems, model, z, replicates=10, seed=3)
    chunked = simulate_replicates(_theta(model), problems, model, z, replicates=10, seed=3, chunk=3)
    np.testing.assert_array_equal(full, chunked)
    other = simulate_replicates(_theta(model), problems, model, z, replicates=10, seed=4)
    assert not np.allclose(full, other)


def test_bins_strata_and_refusals(cohort):
    problems, weights, model = cohort
    # distinct times ≤ K: one bin each; more: quantile bins; explicit edges; outside: −1
    np.testing.assert_allclose(bin_edges([1.0, 2.0, 2.0, 4.0], 5), [1.0, 1.5, 3.0, 4.0])
    times = np.arange(100.0)
    edges = bin_edges(times, 4)
    assert len(edges) == 5
    np.testing.assert_array_equal(np.bincount(assign_bins(times, edges)), [25, 25, 25, 25])
    np.testing.assert_array_equal(
        assign_bins([-1.0, 0.0, 5.0, 10.0, 11.0], [0.0, 5.0, 10.0]), [-1, 0, 1, 1, -1]
    )
    with pytest.raises(ValueError, match="increasing"):
        bin_edges(times, [3.0, 1.0])
    # strata: bins and percentiles per level of a covariate column
    covariates = pd.DataFrame(
        {"weight": weights, "heavy": np.where(weights > 75, "yes", "no")},
        index=[str(i) for i in range(len(weights))],
    )
    theta = _theta(model)
    split = visual_predictive_check(
        theta, problems, model, covariates, replicates=50, bins=3, stratify="heavy"
    )
    assert set(split.table["stratum"]) == {"yes", "no"}
    counts = split.table[split.table["percentile"] == 50].groupby("stratum")["n"].sum()
    assert counts["yes"] == 7 * int((weights > 75).sum())
    assert len(split.table) == 2 * 3 * 3  # strata × bins × percentiles
    with pytest.raises(ValueError, match="no covariate 'sex'"):
        visual_predictive_check(theta, problems, model, covariates, replicates=5, stratify="sex")
    # problems that do not carry their observations: a clear refusal
    linear = _linear_cohort(n=3)
    linear_model = PopulationModel(names=("a", "b"), random=("a",))
    with pytest.raises(ValueError, match="`times`, `observed` and `mask`.*LinearProblem"):
        visual_predictive_check(np.zeros(3), linear, linear_model, replicates=5)


# --- the report and `mgjax vpc` on a run directory ------------------------------------------------


def _result_at(theta, problems, subjects, covariates, model, units) -> PopulationResult:
    """The `PopulationResult` of θ (no outer fit: EBEs and tables at θ), for a run directory
    built quickly."""
    stacked = stack_problems(problems)
    z = jnp.asarray(model.design(covariates, subjects))
    xi0 = jnp.zeros((len(subjects), model.n_random))
    inner = eqx.filter_jit(fit_subjects)(model, stacked, theta, z, xi0, INNER_MAX_STEPS)
    cov = np.zeros((len(theta), len(theta)))
    tables = _tables(model, stacked, tuple(subjects), theta, inner.xi, z, cov, units)
    chol = np.asarray(model.unpack(theta)[2])
    return PopulationResult(
        model=model,
        method="foce-i",
        subjects=tuple(subjects),
        excluded=(),
        theta=np.asarray(theta),
        ofv=float(jnp.sum(subjects_objective(model, stacked, theta, z, inner.xi))),
        ofv_importance_sampling=float("nan"),
        n_observations=int(np.sum(np.asarray(stacked.mask))),
        covariance=cov,
        covariance_method="hessian",
        converged=True,
        iterations=0,
        inner_converged=np.asarray(inner.converged),
        seconds_compile=0.0,
        seconds_total=0.0,
        eta=np.asarray(inner.xi) @ chol.T,
        **tables,
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A population run directory of a 30-subject cohort (weight and sex), its result at the
    simulation's truth, as `mgjax population` writes it (without the report)."""
    base = tmp_path_factory.mktemp("population")
    n = 30
    problems, weights, _ = simulate_one_compartment_cohort(
        n, typical=TYPICAL, omega_sd=OMEGA, times=[0.5, 2.0, 6.0, 12.0], seed=5
    )
    subjects = [f"id{i}" for i in range(n)]
    covariates = pd.DataFrame(
        {"wt": weights, "sex": np.where(np.arange(n) % 2, "F", "M")}, index=subjects
    )
    nonmem_table(problems, subjects, covariates).to_csv(base / "pk.csv", index=False)
    cfg = load_config(
        ROOT / "configs" / "population_pk.yaml",
        [f"population.data={base / 'pk.csv'}", "population.vpc_replicates=50"],
    )
    problems, subjects, covariates, units = _structural(cfg, base / "pk.csv")
    model = population_model(cfg.population, tuple(problems[0].names))
    out = base / "run"
    out.mkdir()
    write_run_header(out, cfg)
    result = _result_at(_theta(model), problems, subjects, covariates, model, units)
    for name, frame in result.tables().items():
        frame.to_csv(out / name, index=name == "omega.csv")
    (out / "summary.json").write_text(json.dumps(result.summary(), indent=2))
    write_population_fit(out, result)
    inputs = dict(problems=problems, subjects=subjects, covariates=covariates, model=model)
    return out, cfg, inputs


def test_population_report_draws_every_figure_into_a_self_contained_page(run_dir):
    out, cfg, inputs = run_dir
    page = write_population_report(out, cfg=cfg, **inputs)
    assert page == out / "report.html"
    text = page.read_text()
    for name, caption in FIGURES.values():
        assert_png_shows_data(out / name)
        assert f'alt="{caption}"' in text, caption
    sources = re.findall(r'<img[^>]* src="([^"]+)"', text)
    assert len(sources) == len(FIGURES)
    for src in sources:  # every image embedded as a PNG; nothing fetched
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "http://" not in text and "https://" not in text
    for heading in ("Population parameters", "Random effects", "Summary", "ofv"):
        assert heading in text
    vpc = pd.read_csv(out / "vpc.csv")
    assert set(vpc["kind"]) == {"vpc", "pcvpc"}
    assert sorted(vpc["time"].unique()) == [0.5, 2.0, 6.0, 12.0]
    assert vpc["covered"].mean() >= 0.75  # θ at the truth
    fit = json.loads((out / "population_fit.json").read_text())
    assert fit["theta_names"] == list(inputs["model"].theta_names)
    assert np.shape(fit["eta"]) == (30, 3) and fit["excluded"] == []


def test_vpc_command_redraws_the_vpc_with_more_replicates_and_strata(run_dir):
    out, _, _ = run_dir
    args = ["vpc", out, "--replicates", 120, "--bins", 2, "--stratify", "SEX"]
    result = CliRunner().invoke(app, [str(a) for a in [*args, "--no-prediction-corrected"]])
    assert result.exit_code == 0, result.output
    vpc = pd.read_csv(out / "vpc.csv")
    assert set(vpc["kind"]) == {"vpc"} and set(vpc["stratum"]) == {"F", "M"}
    assert len(vpc) == 2 * 2 * 3  # strata × bins × percentiles
    assert not (out / "pcvpc.png").exists()
    text = (out / "report.html").read_text()
    assert "<td>vpc_replicates</td>" in text and "<td>120</td>" in text
    result = CliRunner().invoke(app, ["vpc", str(out), "--prediction-corrected"])
    assert result.exit_code == 0, result.output
    assert (out / "pcvpc.png").exists()
    assert set(pd.read_csv(out / "vpc.csv")["kind"]) == {"vpc", "pcvpc"}
    assert "Example" in CliRunner().invoke(app, ["vpc", "--help"]).output
    # refusals: one message, exit code 2
    result = CliRunner().invoke(app, ["vpc", str(out / "nowhere")])
    assert result.exit_code == 2 and "population_fit.json" in result.output
    result = CliRunner().invoke(app, ["vpc", str(out), "--stratify", "height"])
    assert result.exit_code == 2 and "no covariate 'height'" in result.output, result.output


def _screenshot_tool():
    path = ROOT / "experiments" / "tools" / "report_screenshot.py"
    spec = importlib.util.spec_from_file_location("report_screenshot", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_population_report_renders_in_headless_chromium(run_dir, tmp_path):
    tool = _screenshot_tool()
    if tool.chromium() is None:
        pytest.skip("no Chromium (apt-get install chromium, or set MGJAX_CHROMIUM)")
    out, cfg, inputs = run_dir
    if not (out / "report.html").exists():
        write_population_report(out, cfg=cfg, **inputs)
    png = tool.screenshot(out / "report.html", tmp_path / "page.png")
    counts = tool.coloured_pixels(png)
    # the page's only coloured pixels are the figures' (the report palette)
    assert sum(counts.values()) > 5000, counts
    assert min(counts.values()) > 200, counts


@pytest.mark.slow
def test_population_command_writes_the_report(tmp_path):
    n = 16
    problems, weights, _ = simulate_one_compartment_cohort(
        n, typical=TYPICAL, omega_sd=OMEGA, times=[0.5, 2.0, 8.0], seed=2
    )
    subjects = [f"s{i}" for i in range(n)]
    table = nonmem_table(problems, subjects, pd.DataFrame({"wt": weights}, index=subjects))
    table.to_csv(tmp_path / "pk.csv", index=False)
    out = tmp_path / "run"
    args = ["population", ROOT / "configs" / "population_pk.yaml", "--data", tmp_path / "pk.csv"]
    extra = ["population.max_steps=3", "population.vpc_replicates=20"]
    result = CliRunner().invoke(app, [str(a) for a in [*args, *extra, "--out", out]])
    assert result.exit_code == 0, result.output
    for name, _ in FIGURES.values():
        assert (out / name).exists(), name
    assert (out / "vpc.csv").exists() and (out / "population_fit.json").exists()
    assert "report.html" in (out / "run.log").read_text()
    shutil.rmtree(out)
