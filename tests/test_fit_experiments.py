"""The fitting experiments run: the published Mg²⁺ trial fit and the optimiser table (the
20-seed recovery study is run by hand; its numbers are quoted in docs/fitting.md)."""

import pandas as pd
import pytest
from helpers import assert_png_shows_data, load_experiment


@pytest.mark.slow
def test_fit_mg_trial_reproduces_the_published_arm_means_within_their_sd(tmp_path):
    # Levenberg–Marquardt: the same optimum as the default L-BFGS (12/12 arm means within SD,
    # the same identified parameters), a third of the compile time
    out = load_experiment("examples/fit_mg_trial").main(tmp_path, method="levenberg_marquardt")
    table, summary = out["table"], out["summary"]
    assert summary["converged"]
    assert table["within_sd"].all(), table
    # the arms differ in the direction the trial reported
    fitted = table.set_index(["arm", "week", "observable"])["fitted"]
    assert fitted["magnesium", 16.0, "serum_mg"] > fitted["placebo", 16.0, "serum_mg"]
    assert fitted["magnesium", 16.0, "homa_ir"] < fitted["placebo", 16.0, "homa_ir"]
    assert "beta_cell_mass" in summary["identified"]
    assert_png_shows_data(tmp_path / "fit_mg_trial.png")
    assert (tmp_path / "parameters.csv").exists()


@pytest.mark.slow
def test_fit_optimisers_table_runs(tmp_path):
    # the cheapest-compiling optimiser only: the default's convergence is tested in test_fit.py
    experiment = load_experiment("studies/fit_optimisers")
    table, summary = experiment.main(1, tmp_path, methods=("levenberg_marquardt",))
    assert list(summary.index) == ["levenberg_marquardt"]
    (row,) = table.itertuples()
    assert (row.method, row.start, row.loss_gap) == ("levenberg_marquardt", 0, 0.0)
    # one start: the summary's median is its count, within the method's budget
    assert summary.loc["levenberg_marquardt", "median_iterations"] == row.iterations
    assert 1 <= row.iterations <= experiment.BUDGET["levenberg_marquardt"]
    # from 2× off the truth to an optimum of the noisy data: no worse than the truth itself
    problem, _ = experiment.problem_and_starts(1)
    assert row.loss <= float(problem.negative_log_likelihood(problem.initial())) + 1e-9
    written = pd.read_csv(tmp_path / "summary.csv", index_col=0)
    assert written.loc["levenberg_marquardt", "median_iterations"] == row.iterations
