"""Issue 25, rival hypotheses: `mgjax.fit.compare_variants` and `mgjax compare` — data simulated
under one hypothesis pick it out by AIC, BIC, cross-validation and the likelihood-ratio test."""

from __future__ import annotations

import pathlib

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import mgjax
import mgjax.data
from mgjax import fit
from mgjax.app.cli import app
from mgjax.data._records import protocol_from_records

TIMES = (0.0, 20.0, 40.0, 60.0, 80.0, 100.0, 120.0)
OBSERVED = ("glucose", "insulin", "urinary_mg")
UNITS = {"glucose": "mmol/L", "insulin": "pmol/L", "urinary_mg": "mmol/day"}
#: "Insulin raises renal Mg²⁺ excretion" (Djurhuus 2001): the truth of the synthetic subject.
TRUTH = {"trpm6_insulin_coupling": -3.0, "signalling_capacity": 0.8}


def _clamp_dataset(folder, seed=0):
    """One subject, a 40 mU/m²/min clamp with glucose, insulin and urinary Mg²⁺ (instantaneous
    rate) every 20 min, simulated under TRUTH with 3% noise."""
    doses = pd.DataFrame(
        dict(
            subject=["s1"],
            protocol=["hyperinsulinemic_clamp"],
            time=[0.0],
            time_unit=["min"],
            route=["iv"],
            substance=["insulin"],
            amount=[40.0],
            unit=["mU/m2/min"],
            duration=[120.0],
        )
    )
    rows = [
        dict(subject="s1", protocol="hyperinsulinemic_clamp", time=t, time_unit="min",
             observable=o, value=5.0 if o == "glucose" else 1.0, unit=UNITS[o])
        for t in TIMES for o in OBSERVED
    ]  # fmt: skip
    obs = pd.DataFrame(rows)
    records = obs.assign(time=obs["time"].astype(float))
    protocol = protocol_from_records(
        "hyperinsulinemic_clamp", doses.assign(duration=120.0), records
    )
    truth = mgjax.set_parameters(mgjax.preset("healthy"), TRUTH)
    traj = mgjax.simulate(truth, protocol, np.asarray(TIMES))
    rng = np.random.default_rng(seed)
    for o in OBSERVED:
        clean = np.asarray(traj[o])
        noisy = clean * (1.0 + 0.03 * rng.standard_normal(len(TIMES)))
        obs.loc[obs["observable"] == o, "value"] = noisy
    folder.mkdir(parents=True, exist_ok=True)
    obs.to_csv(folder / "observations.csv", index=False)
    doses.to_csv(folder / "doses.csv", index=False)
    pd.DataFrame(dict(subject=["s1"], group=["healthy"])).to_csv(
        folder / "subjects.csv", index=False
    )
    return mgjax.load_dataset(folder)


@pytest.mark.slow
def test_data_simulated_under_one_hypothesis_choose_it(tmp_path):
    dataset = _clamp_dataset(tmp_path / "data")
    variants = [
        fit.Variant("insulin_lowers_excretion", {"trpm6_insulin_coupling": 3.0}),
        fit.Variant("insulin_raises_excretion", {"trpm6_insulin_coupling": -3.0}),
        fit.Variant("free_coupling", free=("trpm6_insulin_coupling",)),
    ]
    table = fit.compare_variants(
        dataset,
        variants,
        ("signalling_capacity",),
        base_model=lambda subject: mgjax.preset("healthy"),
        error_models={o: fit.proportional(0.03) for o in OBSERVED},
        folds=2,
        method="levenberg_marquardt",
        max_steps=60,
    ).set_index("variant")
    assert table.loc["insulin_raises_excretion", "converged"]
    wrong, right = table.loc["insulin_lowers_excretion"], table.loc["insulin_raises_excretion"]
    assert wrong["delta_aic"] > 10.0 and right["delta_aic"] < 2.5  # decisive against the wrong one
    assert wrong["cv_nll"] > right["cv_nll"]  # and it predicts held-out data worse
    assert table["akaike_weight"].sum() == pytest.approx(1.0)
    # nothing here is nested (the fixed variants differ in their changes) ...
    assert (table["lrt_against"] == "").all()
    # ... but a fixed-γ variant without changes is nested in the free-γ one
    nested = fit.compare_variants(
        dataset,
        [fit.Variant("base"), fit.Variant("free_coupling", free=("trpm6_insulin_coupling",))],
        ("signalling_capacity",),
        base_model=lambda subject: mgjax.preset("healthy"),
        error_models={o: fit.proportional(0.03) for o in OBSERVED},
        folds=0,
        method="levenberg_marquardt",
        max_steps=60,
    ).set_index("variant")
    base = nested.loc["base"]
    assert base["lrt_against"] == "free_coupling" and base["lrt_df"] == 1
    assert base["lrt_statistic"] > 10.0 and base["lrt_p"] < 1e-3  # the default γ = 3 is refuted
    assert np.isnan(nested.loc["base", "cv_nll"])


def test_variant_names_must_be_unique():
    trial = mgjax.load_dataset(pathlib.Path(mgjax.data.__file__).parent / "rodriguez_moran_2003")
    with pytest.raises(ValueError, match="unique"):
        fit.compare_variants(
            trial, [fit.Variant("a"), fit.Variant("a")], ("egp_max",), base_model=mgjax.preset
        )


@pytest.mark.slow
def test_compare_command_prints_the_hypothesis_table_and_writes_its_report(tmp_path):
    data = tmp_path / "data"
    _clamp_dataset(data)
    config = tmp_path / "compare.yaml"
    config.write_text(
        "fit: {free: [signalling_capacity]}\n"
        "optimiser: {name: levenberg_marquardt, max_steps: 40}\n"
        "compare:\n"
        "  folds: 2\n"
        "  variants:\n"
        "    lowers: {parameters: {trpm6_insulin_coupling: 3.0}}\n"
        "    raises: {parameters: {trpm6_insulin_coupling: -3.0}}\n"
    )
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app, ["compare", str(config), "--data", str(data), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "raises" in result.output and "lowers" in result.output
    table = pd.read_csv(out / "compare.csv")
    assert table["variant"].iloc[0] == "raises"
    html = (out / "report.html").read_text()
    assert "Hypothesis table" in html and "Best by AIC" in html


def test_compare_needs_two_variants(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("compare: {variants: {only: {}}}\n")
    result = CliRunner().invoke(app, ["compare", str(config), "--out", str(tmp_path / "r")])
    assert result.exit_code != 0 and "at least two model variants" in result.output
