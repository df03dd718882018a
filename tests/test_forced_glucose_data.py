"""Forced-glucose secretion experiments from datasets: a `forced_glucose` protocol's glucose
rows are the input series driving the beta-cell, its insulin-secretion and C-peptide rows the
observations — accepted by the loader (bad input refused naming file, row and column), fitted by
`mgjax fit` (batch lanes, ragged series padded into one program) and by the population engine."""

from __future__ import annotations

import json
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import mgjax
from mgjax.app.cli import app
from mgjax.batch import build_batches
from mgjax.fit._experiment import SECRETION_OBSERVABLES, experiments_from_records
from mgjax.solve._secretion import Series

HEADER = "subject,protocol,time,time_unit,observable,value,unit\n"


def write_forced_glucose_cohort(folder, n: int, seed: int = 1) -> pd.DataFrame:
    """The example's simulated cohort (healthy and t2dm, 6- and 10-sample glucose series,
    secretion and C-peptide with 5 % noise) written to `folder`; returns the truth."""
    from helpers import load_experiment

    return load_experiment("examples/forced_glucose_cohort").write_cohort(folder, n, seed)


def _write(tmp_path, observations: str, doses: str | None = None):
    (tmp_path / "observations.csv").write_text(HEADER + textwrap.dedent(observations))
    if doses is not None:
        (tmp_path / "doses.csv").write_text(textwrap.dedent(doses))
    return tmp_path


GOOD = """\
s1,forced_glucose,0,min,glucose,5.0,mmol/L
s1,forced_glucose,30,min,glucose,9.0,mmol/L
s1,forced_glucose,60,min,glucose,7.0,mmol/L
s1,forced_glucose,0,min,c_peptide,400,pmol/L
s1,forced_glucose,30,min,c_peptide,1200,pmol/L
s1,forced_glucose,60,min,insulin_secretion,300,pmol/min
"""


def test_the_loader_accepts_a_forced_glucose_protocol_and_keeps_glucose_as_its_input(tmp_path):
    dataset = mgjax.load_dataset(_write(tmp_path, GOOD))
    (experiment,) = mgjax.fit.experiments_for_subject(dataset, "s1")
    assert isinstance(experiment.protocol, Series)
    np.testing.assert_array_equal(np.asarray(experiment.protocol.times), [0.0, 30.0, 60.0])
    np.testing.assert_array_equal(np.asarray(experiment.protocol.values), [5.0, 9.0, 7.0])
    # glucose is the input, not an observation: three fitted rows, secretion observables only
    assert experiment.n == 3 and set(experiment.observable_names) <= set(SECRETION_OBSERVABLES)
    np.testing.assert_allclose(np.asarray(experiment.values), [400.0, 1200.0, 300.0])


@pytest.mark.parametrize(
    ("rows", "doses", "where", "message"),
    [
        (
            GOOD + "s1,forced_glucose,60,min,insulin,300,pmol/L\n",
            None,
            "observations.csv, row 8, column 'observable'",
            "observes only insulin_secretion or c_peptide, not insulin",
        ),
        (
            "s1,forced_glucose,0,min,c_peptide,400,pmol/L\n",
            None,
            "observations.csv, row 2, column 'protocol'",
            "has no glucose rows; give the measured plasma glucose",
        ),
        (
            GOOD.replace(
                "s1,forced_glucose,0,min,glucose,5.0", "s1,forced_glucose,5,min,glucose,5.0"
            ),
            None,
            "observations.csv, row 2, column 'time'",
            "glucose series (its input) starts at 5 min; give glucose at time 0",
        ),
        (
            GOOD.replace("60,min,glucose,7.0", "30,min,glucose,7.0"),
            None,
            "observations.csv, row 4, column 'time'",
            "gives glucose twice at 30 min",
        ),
        (
            "s1,forced_glucose,0,min,glucose,5.0,mmol/L\ns1,forced_glucose,30,min,glucose,9,mmol/L\n",
            None,
            "observations.csv, row 2, column 'protocol'",
            "has only glucose (its input); add insulin_secretion or c_peptide",
        ),
        (
            GOOD,
            "subject,protocol,time,time_unit,route,substance,amount,unit\n"
            "s1,forced_glucose,0,min,oral,glucose,75,g\n",
            "doses.csv, row 2, column 'protocol'",
            "takes no doses",
        ),
    ],
)
def test_bad_forced_glucose_input_is_refused_naming_row_and_column(
    tmp_path, rows, doses, where, message
):
    with pytest.raises(mgjax.DatasetError) as caught:
        mgjax.load_dataset(_write(tmp_path, rows, doses))
    assert len(caught.value.problems) == 1
    (problem,) = caught.value.problems
    assert problem.startswith(where) and message in problem, problem


def test_padding_the_glucose_series_changes_no_prediction(tmp_path):
    # a batch pads every subject's series to the cohort's longest by holding the last value
    # at later minutes: the predictions of the real observations must not move
    write_forced_glucose_cohort(tmp_path, 1)
    dataset = mgjax.load_dataset(tmp_path)
    rows = dataset.observations
    model = mgjax.preset("healthy")
    (plain,) = experiments_from_records(rows, dataset.doses, model)
    (padded,) = experiments_from_records(
        rows, dataset.doses, model, pad_to={"forced_glucose": (16, 8, 12)}
    )
    assert np.asarray(padded.protocol.times).shape == (12,) and padded.n == 16
    assert np.all(np.diff(np.asarray(padded.protocol.times)) > 0)
    a, ok_a = plain.predict(model)
    b, ok_b = padded.predict(model)
    assert bool(ok_a) and bool(ok_b)
    mask = np.asarray(padded.mask)
    np.testing.assert_allclose(np.asarray(b)[mask], np.asarray(a), rtol=1e-9)


def test_ragged_series_share_one_batch(tmp_path):
    write_forced_glucose_cohort(tmp_path, 4)  # series of 6 and of 10 samples
    batches = build_batches(mgjax.load_dataset(tmp_path), ["beta_cell_mass", "gk_s05"])
    assert len(batches) == 1 and len(batches[0]) == 4
    (experiment,) = batches[0].problems.experiments
    assert experiment.observable_names == ("c_peptide", "insulin_secretion")
    assert np.asarray(experiment.protocol.times).shape == (4, 12)  # 10 → bucket 12


@pytest.mark.slow
def test_mgjax_fit_recovers_beta_cell_parameters_from_forced_glucose_data(tmp_path):
    truth = write_forced_glucose_cohort(tmp_path / "data", 4, seed=3)
    out = tmp_path / "run"
    args = ["fit", "--data", tmp_path / "data", "--free", "beta_cell_mass,gk_s05", "--out", out]
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["converged"] == 4
    table = pd.read_csv(out / "parameters.csv").merge(truth, on=["subject", "parameter"])
    error = (table["estimate"] - table["value"]).abs()
    assert (error < 3.0 * table["se"] + 0.03 * table["value"]).all(), table
    # the fitted curves explain the noisy secretion series (R² per subject)
    dataset = mgjax.load_dataset(tmp_path / "data")
    estimates = table.pivot(index="subject", columns="parameter", values="estimate")
    for subject, group in [("f0", "healthy"), ("f1", "t2dm"), ("f3", "t2dm")]:
        rows = dataset.observations[dataset.observations["subject"] == subject]
        glucose = rows[rows["observable"] == "glucose"]
        secretion = rows[rows["observable"] == "insulin_secretion"]
        model = mgjax.set_parameters(mgjax.preset(group), estimates.loc[subject].to_dict())
        series = mgjax.GlucoseSeries(glucose["time"].to_numpy(), glucose["value"].to_numpy())
        times = jnp.asarray(secretion["time"].to_numpy())
        fitted = np.asarray(mgjax.simulate_secretion(model, series, times).secretion)
        observed = secretion["value"].to_numpy()
        r2 = 1.0 - np.sum((observed - fitted) ** 2) / np.sum((observed - observed.mean()) ** 2)
        assert r2 >= 0.9, (subject, r2)
    assert (out / "fits.png").exists() and (out / "report.html").exists()


@pytest.mark.slow
def test_the_population_command_fits_forced_glucose_data(tmp_path):
    write_forced_glucose_cohort(tmp_path / "data", 6)
    # the example's population model, with SAEM's phases cut to a few iterations
    from helpers import load_experiment

    config = tmp_path / "population.yaml"
    config.write_text(load_experiment("examples/forced_glucose_cohort").POPULATION)
    out = tmp_path / "run"
    args = ["population", config, "--data", tmp_path / "data", "--out", out]
    args += [f"population.saem.{k}=3" for k in ("exploration", "smoothing", "annealing")]
    args += ["population.saem.information_draws=3", "population.importance_samples=5"]
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "population_parameters.csv").set_index("parameter")
    assert list(table.index) == ["beta_cell_mass", "gk_s05", "beta_cell_mass~group=t2dm"]
    assert table["se"].gt(0).all()
    assert len(pd.read_csv(out / "individual_parameters.csv")) == 6 * 2


def test_a_subject_with_fasting_labs_and_a_forced_glucose_series_is_one_problem(tmp_path):
    # the secretion series beside whole-body fasting labs: two experiments of one subject,
    # the series predicted by the beta-cell alone, the labs at the fasting steady state
    write_forced_glucose_cohort(tmp_path, 1)
    observations = pd.read_csv(tmp_path / "observations.csv")
    labs = pd.DataFrame(
        [
            ("f0", "fasting", 0.0, "min", "serum_mg", 0.85, "mmol/L"),
            ("f0", "fasting", 0.0, "min", "glucose", 5.0, "mmol/L"),
        ],
        columns=observations.columns,
    )
    pd.concat([observations, labs]).to_csv(tmp_path / "observations.csv", index=False)
    (batch,) = build_batches(mgjax.load_dataset(tmp_path), ["beta_cell_mass"])
    problem = batch.one(0)
    fasting, forced = problem.experiments
    assert isinstance(forced.protocol, Series) and not isinstance(fasting.protocol, Series)
    assert fasting.observable_names == ("glucose", "serum_mg")
    problem = jax.tree.map(jnp.asarray, problem)
    u = jnp.zeros(1)
    predictions, ok = problem.predictions(u)
    assert bool(ok)
    assert all(np.all(np.isfinite(np.asarray(p))) for p in predictions)
    # the series reads intracellular Mg²⁺ off the labs' steady state (one search, not two):
    # the same predictions as the series predicted on its own, with its own search
    alone, ok_alone = problem.experiments[1].predict(problem.model(u), problem.options)
    assert bool(ok_alone)
    np.testing.assert_allclose(np.asarray(predictions[1]), np.asarray(alone), rtol=1e-7)
