"""The embedding examples run (smoke tests with tiny settings; the full runs and their numbers are
in docs/embedding.md): each prints its result and writes its PNG."""

import jax
import pytest
from helpers import assert_png_shows_data, load_experiment


def _run(name, tmp_path):
    # the examples drive optax's Adam and numpyro's NUTS, whose step counters (int32) meet
    # Python floats: JAX's strict promotion (on for the rest of the suite) refuses them
    with jax.numpy_dtype_promotion("standard"):
        result = load_experiment(f"examples/{name}").main(["--quick", "--out", str(tmp_path)])
    assert_png_shows_data(tmp_path / f"{name.removeprefix('embed_')}.png")
    return result


@pytest.mark.slow
def test_hybrid_mlp_weights_get_gradients_and_its_loss_falls(tmp_path):
    result = _run("embed_hybrid", tmp_path)
    assert result["all_solves_ok"]
    assert result["grad_norm_initial"] > 0
    assert result["loss_final"] < 0.5 * result["loss_initial"]


@pytest.mark.slow
def test_optimal_dose_meets_the_target_and_is_the_smallest(tmp_path):
    result = _run("embed_optimal_dose", tmp_path)
    assert result["meets_target"] and result["smallest_within_2pct"]
    assert (
        result["placebo_serum_mg_at_12_weeks"] < 0.7 < 0.8 <= result["serum_mg_at_12_weeks"] + 1e-6
    )


@pytest.mark.slow
def test_sensitivity_local_and_global(tmp_path):
    result = _run("embed_sensitivity", tmp_path)
    # the M-value is an insulin-sensitivity measure: the signalling capacity ranks at the top
    assert "signalling_capacity" in result["ranking"]["m_value"]["local_top"][:3]
    assert (tmp_path / "sensitivity_sobol.csv").exists()


@pytest.mark.slow
def test_bayesian_nuts_runs_through_the_solver(tmp_path):
    result = _run("embed_bayesian", tmp_path)
    for row in result["parameters"].values():
        low, high = row["ci95"]
        assert 0 < low <= row["posterior_median"] <= high
