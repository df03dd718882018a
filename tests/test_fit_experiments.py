"""The fitting experiments run: the published Mg²⁺ trial fit and the optimiser table (the
20-seed recovery study is run by hand; its numbers are quoted in docs/fitting.md)."""

import pytest
from helpers import load_experiment


@pytest.mark.slow
def test_fit_mg_trial_reproduces_the_published_arm_means_within_their_sd(tmp_path):
    # Levenberg–Marquardt: the same optimum as the default L-BFGS (12/12 arm means within SD,
    # the same identified parameters), a third of the compile time
    out = load_experiment("fit_mg_trial").main(tmp_path, method="levenberg_marquardt")
    table, summary = out["table"], out["summary"]
    assert summary["converged"]
    assert table["within_sd"].all(), table
    # the arms differ in the direction the trial reported
    fitted = table.set_index(["arm", "week", "observable"])["fitted"]
    assert fitted["magnesium", 16.0, "serum_mg"] > fitted["placebo", 16.0, "serum_mg"]
    assert fitted["magnesium", 16.0, "homa_ir"] < fitted["placebo", 16.0, "homa_ir"]
    assert "beta_cell_mass" in summary["identified"]
    assert (tmp_path / "fit_mg_trial.png").stat().st_size > 10_000
    assert (tmp_path / "parameters.csv").exists()


@pytest.mark.slow
def test_fit_optimisers_table_runs(tmp_path):
    # the cheapest-compiling optimiser only: the default's convergence is tested in test_fit.py
    table, summary = load_experiment("fit_optimisers").main(
        1, tmp_path, methods=("levenberg_marquardt",)
    )
    assert list(summary.index) == ["levenberg_marquardt"]
    assert summary.loc["levenberg_marquardt", "median_iterations"] > 0
    assert (table["loss"] > 0).all()
    assert (tmp_path / "summary.csv").exists()
