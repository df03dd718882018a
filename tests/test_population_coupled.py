"""The coupled Mg²⁺–glucose model as a population: SAEM and its stochastic covariance step
from simulations only, from Python (the coupled study) and from the command line."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest


@pytest.mark.slow
def test_saem_fits_the_coupled_model_from_simulations_only():
    # the coupled Mg²⁺–glucose model (clamp + fasting labs per subject), three random effects
    # and a power effect of weight on insulin clearance, SAEM and its stochastic covariance
    # step: no derivative of the stiff model is compiled, yet every estimate gets an SE
    from helpers import load_experiment

    study = load_experiment("studies/population_coupled_saem")
    table = study.main(
        subjects=6, exploration=15, smoothing=15, importance_samples=20, information_draws=10
    ).set_index("quantity")
    expected = [*study.RANDOM, study.WEIGHT_EFFECT.name, *(f"omega[{p}]" for p in study.RANDOM)]
    assert list(table.index) == expected
    assert table[["estimate", "se", "ci_low", "ci_high"]].notna().all().all()
    assert (table["se"] > 0).all() and (table["ci_low"] < table["ci_high"]).all()
    # insulin sensitivity: clamps identify it per subject, so the EBEs follow the truth
    assert table.loc["signalling_capacity", "ebe_truth_correlation"] > 0.9
    assert abs(table.loc["signalling_capacity", "error_percent"]) < 30
    omega = table.loc[[f"omega[{p}]" for p in study.RANDOM], "estimate"]
    assert (omega > 0.02).all() and (omega < 1.5).all()


@pytest.mark.slow
def test_population_command_fits_the_coupled_model_by_saem(tmp_path):
    # the coupled model from the command line: a native dataset folder (two subjects of each
    # group of the bundled cohort), random effects and group/weight effects from the config,
    # SAEM with the stochastic covariance step — every estimate with an SE
    from pathlib import Path

    from typer.testing import CliRunner

    from mgjax.app.cli import app

    bundled = Path("mgjax/data/cohort")
    people = pd.read_csv(bundled / "subjects.csv").groupby("group").head(2)
    folder = tmp_path / "cohort"
    folder.mkdir()
    for name in ("observations", "doses", "subjects"):
        table = pd.read_csv(bundled / f"{name}.csv")
        table[table["subject"].isin(people["subject"])].to_csv(folder / f"{name}.csv", index=False)
    out = tmp_path / "run"
    args = ["population", "configs/population_coupled.yaml", "--data", str(folder), "--out"]
    args += [str(out), "population.saem.exploration=3", "population.saem.smoothing=3"]
    args += ["population.saem.annealing=3", "population.saem.information_draws=3"]
    args += ["population.importance_samples=5"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "saem" and summary["covariance"] == "stochastic"
    assert summary["subjects"] == 6 and summary["ofv"] is None
    assert np.isfinite(summary["ofv_importance_sampling"])
    table = pd.read_csv(out / "population_parameters.csv").set_index("parameter")
    assert list(table.index) == [
        "signalling_capacity",
        "insulin_clearance_rate",
        "dietary_mg_intake",
        "signalling_capacity~group=t2dm",
        "signalling_capacity~group=t2dm_hypomagnesemia",
        "insulin_clearance_rate~weight",
    ]
    assert table["se"].gt(0).all() and table.loc["insulin_clearance_rate", "unit"] == "1/min"
    random = pd.read_csv(out / "random_effects.csv")
    assert random["se"].gt(0).all() and len(random) == 3
    assert len(pd.read_csv(out / "individual_parameters.csv")) == 6 * 3
    assert "report: not drawn for the coupled model" in (out / "run.log").read_text()
    # FOCE-I on the coupled model is refused before anything runs, with what to do instead
    refused = CliRunner().invoke(
        app, [*args[:5], str(tmp_path / "other"), "population.method=foce-i"]
    )
    assert refused.exit_code == 2 and "use method saem" in refused.output
