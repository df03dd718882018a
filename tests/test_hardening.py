"""Regression tests of the hardening findings outside the dataset and config loaders: values
outside the documented parameter ranges, forced-glucose series, traced Mg²⁺ inputs, cohort
subjects whose simulation fails."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import mgjax
from mgjax.synth import _cohort


def test_set_parameters_warns_outside_the_documented_range_and_refuses_when_strict():
    model = mgjax.preset("healthy")
    table = mgjax.parameter_table().set_index("name")
    upper = float(table.loc["egp_max", "upper"])
    with pytest.warns(
        mgjax.ParameterRangeWarning, match=r"'egp_max' = .* is outside its documented"
    ):
        mgjax.set_parameters(model, egp_max=10 * upper)
    with pytest.raises(ValueError, match=r"'egp_max' .* outside its documented range"):
        mgjax.set_parameters(model, egp_max=10 * upper, strict=True)
    with pytest.raises(ValueError, match=r"'egp_max' = nan .* outside its documented range"):
        mgjax.set_parameters(model, egp_max=float("nan"), strict=True)
    with pytest.warns(mgjax.ParameterRangeWarning, match=r"'egp_max' = inf"):
        mgjax.set_parameters(model, egp_max=float("inf"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # inside the range: silent
        inside = mgjax.set_parameters(
            model, egp_max=float(table.loc["egp_max", "default"]), strict=True
        )
    assert float(mgjax.get_parameter(inside, "egp_max")) == float(table.loc["egp_max", "default"])


def test_glucose_series_must_be_sorted_and_output_times_inside_it():
    with pytest.raises(ValueError, match=r"times must increase strictly: time 2 \(10 min\)"):
        mgjax.GlucoseSeries([0.0, 20.0, 10.0], [5.0, 8.0, 7.0])
    with pytest.raises(ValueError, match="one time per value"):
        mgjax.GlucoseSeries([0.0, 10.0], [5.0])
    glucose = mgjax.GlucoseSeries([10.0, 20.0, 30.0], [5.0, 8.0, 7.0])
    with pytest.raises(ValueError, match=r"output time 0 min is before the glucose series starts"):
        mgjax.simulate_secretion(mgjax.preset("healthy"), glucose, jnp.array([0.0, 20.0]))


def test_a_new_mg_free_value_does_not_compile_again():
    model = mgjax.preset("healthy")
    glucose = mgjax.GlucoseSeries([0.0, 30.0], [5.0, 10.0])
    ts = jnp.array([0.0, 15.0, 30.0])
    first = mgjax.simulate_secretion(model, glucose, ts, mg_free=0.5)
    compiles = []

    def listener(name, *args, **kwargs):
        if "backend_compile" in name:
            compiles.append(name)

    jax.monitoring.register_event_duration_secs_listener(listener)
    second = mgjax.simulate_secretion(model, glucose, ts, mg_free=0.49)
    jax.monitoring.clear_event_listeners()
    assert compiles == []
    assert not np.allclose(np.asarray(first.secretion), np.asarray(second.secretion))


def test_synthesize_redraws_a_subject_whose_simulation_fails(monkeypatch):
    """The first simulation of subject 1 fails (as a solver failure would): it is drawn again
    under its id, said so, and the cohort is complete and finite."""
    real = _cohort._predict_all
    calls = []

    def failing_once(models, experiment):
        predictions, success = real(models, experiment)
        calls.append(len(success))
        if len(calls) <= 2:  # both protocols of the first pass
            success = success.at[1].set(False)
        return predictions, success

    monkeypatch.setattr(_cohort, "_predict_all", failing_once)
    cohort = _cohort.synthesize(4, seed=3)
    assert cohort.redrawn == ["s0001"]
    assert calls == [4, 4, 1, 1]  # the redrawn subject alone is simulated again
    assert sorted(cohort.subjects["subject"]) == ["s0000", "s0001", "s0002", "s0003"]
    assert np.isfinite(cohort.observations["value"]).all()
    monkeypatch.setattr(_cohort, "_predict_all", real)
    clean = _cohort.synthesize(4, seed=3)
    assert clean.redrawn == []
    truth = cohort.truth.set_index(["subject", "parameter"])["value"]
    clean_truth = clean.truth.set_index(["subject", "parameter"])["value"]
    assert not np.allclose(truth.loc["s0001"], clean_truth.loc["s0001"])  # a new draw
    np.testing.assert_allclose(truth.loc["s0000"], clean_truth.loc["s0000"])


def test_ctrl_c_exits_with_130_and_says_how_to_continue(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from mgjax.app import cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "check_job", interrupted)
    result = CliRunner().invoke(cli.app, ["check", "--data", str(tmp_path)])
    assert result.exit_code == 130
    assert "interrupted" in result.output and "--resume" in result.output


def test_synth_population_draws_a_power_effect_of_weight():
    # a parameter in weight_exponents scales as (weight/reference)^exponent: the log of the
    # drawn values regressed on log(weight/reference) gives the exponent back, and the
    # intercept the preset's value (the typical value at the reference weight)
    from mgjax import get_parameters, preset

    population = _cohort.Population(
        "t2dm",
        parameters=("insulin_clearance_rate", "signalling_capacity"),
        cv=(0.1, 0.1),
        correlation={},
        weight=(88.0, 14.0),
        weight_exponents={"insulin_clearance_rate": 0.75},
        weight_reference=88.0,
    )
    subjects = _cohort._Subjects()
    _cohort._sample_group(subjects, "t2dm", population, 2000, np.random.default_rng(0), "s", 4)
    truth = pd.DataFrame(subjects.truth).pivot(index="subject", columns="parameter", values="value")
    weight = pd.DataFrame(subjects.rows).set_index("subject")["weight"].loc[truth.index]
    x = np.log(weight.to_numpy() / 88.0)
    for name, exponent in (("insulin_clearance_rate", 0.75), ("signalling_capacity", 0.0)):
        slope, intercept = np.polyfit(x, np.log(truth[name].to_numpy()), 1)
        assert slope == pytest.approx(exponent, abs=0.08), name
        typical = float(get_parameters(preset("t2dm"), (name,))[name])
        assert np.exp(intercept) == pytest.approx(typical, rel=0.02), name
    with pytest.raises(ValueError, match="weight_exponents"):
        _cohort.Population("t2dm", parameters=("signalling_capacity",), weight_exponents={"x": 1})
