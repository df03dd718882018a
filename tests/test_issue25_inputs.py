"""Issue 25, inputs: the gluconate and pidolate salts, an explicit oral Mg²⁺ bioavailability in
`OralMagnesiumTrial.daily`, and forced-glucose secretion series (`GlucoseSeries`) in `fit`."""

from __future__ import annotations

import pathlib
import re

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mgjax
from mgjax.fit import fit, make_experiment, make_problem

WEEK = 7 * 1440.0
MODEL_MD = pathlib.Path(__file__).resolve().parents[1] / "docs" / "model.md"


# --- salts --------------------------------------------------------------------------------------
def test_gluconate_and_pidolate_are_known_salts_with_a_documented_source():
    table = mgjax.SALT_BIOAVAILABILITY
    for salt in ("gluconate", "pidolate"):
        assert 0.0 < table[salt] <= 1.0
        trial = mgjax.OralMagnesiumTrial.daily(10.0, 1, salt=salt)
        assert float(trial.bioavailability) == table[salt]
    text = MODEL_MD.read_text(encoding="utf-8")
    for salt in table:  # every salt of the table has a row in docs/model.md with its default
        row = re.search(rf"^\| `{salt}` \| fraction[^|]*\| ([0-9.]+) \|", text, re.MULTILINE)
        assert row is not None, f"no docs/model.md row for the {salt} salt"
        assert float(row.group(1)) == table[salt]
    assert "Coudray" in text and "Magnes Res 2005;18:215" in text


# --- bioavailability= ---------------------------------------------------------------------------
def _absorbed(model, trial):
    traj = mgjax.simulate(model, trial, jnp.asarray([0.0, WEEK]))
    cumulative = np.asarray(traj["absorbed_mg_cumulative"])
    return float(cumulative[-1] - cumulative[0])


def test_daily_accepts_an_explicit_bioavailability_and_absorption_scales_with_it():
    model = mgjax.preset("healthy")
    trial = mgjax.OralMagnesiumTrial.daily(10.0, 1, bioavailability=0.5)
    assert float(trial.bioavailability) == 0.5
    placebo = _absorbed(model, trial.placebo())
    extra = {
        f: _absorbed(model, mgjax.OralMagnesiumTrial.daily(10.0, 1, bioavailability=f)) - placebo
        for f in (0.25, 0.5, 1.0)
    }
    # more Mg²⁺ absorbed with f; nearly in proportion (saturable absorption: a little less)
    assert 0 < extra[0.25] < extra[0.5] < extra[1.0]
    assert 0.5 < extra[0.5] / extra[1.0] < 0.6
    assert 0.25 < extra[0.25] / extra[1.0] < 0.35
    # f scales what enters the gut exactly: half the dose at f = 1 is the same protocol
    half_dose = mgjax.OralMagnesiumTrial.daily(5.0, 1, bioavailability=1.0)
    assert _absorbed(model, half_dose) - placebo == pytest.approx(extra[0.5], rel=1e-9)
    # an explicit value equal to the oxide's is the oxide
    oxide = mgjax.OralMagnesiumTrial.daily(10.0, 1, salt="oxide")
    same = mgjax.OralMagnesiumTrial.daily(10.0, 1, bioavailability=0.4)
    assert _absorbed(model, oxide) == pytest.approx(_absorbed(model, same), rel=1e-12)


@pytest.mark.parametrize("f", [0.0, -0.2, 1.5, float("nan"), float("inf")])
def test_daily_refuses_a_bioavailability_outside_zero_to_one(f):
    with pytest.raises(ValueError, match="bioavailability must be a fraction 0 < f ≤ 1"):
        mgjax.OralMagnesiumTrial.daily(10.0, 1, bioavailability=f)


def test_daily_salt_and_bioavailability_together_must_agree():
    agreed = mgjax.OralMagnesiumTrial.daily(10.0, 1, salt="oxide", bioavailability=0.4)
    assert float(agreed.bioavailability) == 0.4
    with pytest.raises(ValueError, match="salt='oxide'.*contradicts bioavailability=0.9"):
        mgjax.OralMagnesiumTrial.daily(10.0, 1, salt="oxide", bioavailability=0.9)
    with pytest.raises(ValueError, match="unknown Mg salt 'carbonate'.*bioavailability="):
        mgjax.OralMagnesiumTrial.daily(10.0, 1, salt="carbonate")
    default = mgjax.OralMagnesiumTrial.daily(10.0, 1)
    assert float(default.bioavailability) == mgjax.SALT_BIOAVAILABILITY["chloride"]


# --- forced-glucose secretion series in fit ----------------------------------------------------
TIMES = np.array([0.0, 5, 10, 15, 20, 30, 45, 60, 75, 90, 120, 150, 180])
GLUCOSE = [5.0, 7, 9.5, 11, 11.5, 11, 10, 9, 8, 7, 6, 5.5, 5.2]


def test_make_problem_refuses_what_a_secretion_series_cannot_predict():
    model = mgjax.preset("healthy")
    series = mgjax.GlucoseSeries(TIMES, GLUCOSE)
    glucose = make_experiment(series, TIMES, ["glucose"] * len(TIMES), GLUCOSE)
    with pytest.raises(ValueError, match="predicts only insulin_secretion, c_peptide.*glucose"):
        make_problem(model, [glucose], ["beta_cell_mass"])
    late = mgjax.GlucoseSeries(TIMES + 10.0, GLUCOSE)
    early = make_experiment(late, TIMES, ["insulin_secretion"] * len(TIMES), np.ones(13))
    with pytest.raises(ValueError, match="samples at 0 min, before its glucose series starts"):
        make_problem(model, [early], ["beta_cell_mass"])
    valid = make_experiment(series, TIMES, ["insulin_secretion"] * len(TIMES), np.ones(13))
    wrong = eqx.tree_at(lambda e: e.protocol, valid, "ivgtt")  # not a protocol
    with pytest.raises(TypeError, match="protocol must be an mgjax protocol.*GlucoseSeries"):
        make_problem(model, [wrong], ["beta_cell_mass"])


def test_a_secretion_series_problem_predicts_what_simulate_secretion_does():
    model = mgjax.preset("healthy")
    series = mgjax.GlucoseSeries(TIMES, GLUCOSE)
    reference = mgjax.simulate_secretion(model, series, jnp.asarray(TIMES))
    observables = ["insulin_secretion"] * len(TIMES) + ["c_peptide"] * len(TIMES)
    values = np.concatenate([reference.secretion, reference.c_peptide])
    experiment = make_experiment(series, np.concatenate([TIMES, TIMES]), observables, values)
    problem = make_problem(model, [experiment], ["beta_cell_mass"])
    (prediction,), ok = problem.predictions(problem.initial())
    assert bool(ok)
    np.testing.assert_allclose(np.asarray(prediction), values, rtol=1e-6)


@pytest.mark.slow
def test_fit_recovers_beta_cell_parameters_from_a_noisy_secretion_series():
    base = mgjax.preset("healthy")
    true = {"beta_cell_mass": 1.5, "gk_s05": 6.0}  # defaults 1.0 and 7.5 mmol/L
    series = mgjax.GlucoseSeries(TIMES, GLUCOSE)
    clean = mgjax.simulate_secretion(mgjax.set_parameters(base, true), series, jnp.asarray(TIMES))
    clean = np.asarray(clean.secretion)
    rng = np.random.default_rng(0)
    observed = clean * (1.0 + 0.05 * rng.standard_normal(clean.size))
    experiment = make_experiment(series, TIMES, ["insulin_secretion"] * len(TIMES), observed)
    result = fit(make_problem(base, [experiment], list(true)))
    assert result.converged
    estimates = dict(zip(result.names, np.asarray(result.estimates)))
    se = dict(zip(result.names, np.asarray(result.se)))
    for name, value in true.items():
        assert abs(estimates[name] - value) < 3.0 * se[name] + 0.02 * value
    fitted = mgjax.simulate_secretion(
        mgjax.set_parameters(base, estimates), series, jnp.asarray(TIMES)
    )
    residual = observed - np.asarray(fitted.secretion)
    r2 = 1.0 - np.sum(residual**2) / np.sum((observed - observed.mean()) ** 2)
    assert r2 >= 0.9


# --- the steady-state glucose dose–response of secretion ---------------------------------------
def test_secretion_dose_response_is_where_the_dynamics_settle():
    model = mgjax.preset("healthy")
    levels = jnp.asarray([3.0, 5.0, 8.0, 12.0, 20.0])
    response = mgjax.secretion_dose_response(model, levels)
    secretion = np.asarray(response.secretion)
    assert np.all(np.diff(secretion) > 0)  # rises with glucose over the whole range
    np.testing.assert_allclose(
        np.asarray(response.secretion_per_m2) * float(mgjax.body_surface_area(model)),
        secretion,
        rtol=1e-12,
    )
    # a step from 5 to 10 mmol/L held for two days: the simulated beta-cell settles on the
    # dose–response (secretion and plasma C-peptide)
    step = mgjax.GlucoseSeries(jnp.asarray([0.0, 1.0]), jnp.asarray([5.0, 10.0]))
    settled = mgjax.simulate_secretion(model, step, jnp.asarray([0.0, 2880.0]))
    at_10 = mgjax.secretion_dose_response(model, 10.0)
    np.testing.assert_allclose(float(settled.secretion[-1]), float(at_10.secretion[0]), rtol=1e-6)
    np.testing.assert_allclose(float(settled.c_peptide[-1]), float(at_10.c_peptide[0]), rtol=1e-5)
    # the t2dm preset secretes less at every glucose; the slope is positive and differentiable
    t2dm = mgjax.secretion_dose_response(mgjax.preset("t2dm"), levels)
    assert np.all(np.asarray(t2dm.secretion) < secretion)
    slope = jax.grad(lambda g: mgjax.secretion_dose_response(model, g).secretion[0])(8.0)
    assert float(slope) > 0
