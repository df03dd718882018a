"""Every script in experiments/ runs (smoke tests with tiny settings); the main job refuses to
overwrite (the CLI itself: test_cli.py)."""

import json
import pathlib

import pytest
from helpers import load_experiment
from typer.testing import CliRunner

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_vicious_circle_runs_and_shows_the_circle(tmp_path):
    frame = load_experiment("vicious_circle").main(tmp_path, quick=True)
    assert (tmp_path / "vicious_circle.png").stat().st_size > 10_000
    assert frame["converged"].all()
    for _, group in frame.groupby("signalling_capacity"):
        group = group.sort_values("dietary_mg_intake_mmol_day")
        assert group["serum_mg"].is_monotonic_increasing
        assert group["homa_ir"].is_monotonic_decreasing


def test_protocols_experiment_runs(tmp_path):
    table = load_experiment("protocols").main(tmp_path, quick=True)
    for name in [
        "hyperinsulinemic_clamp",
        "hyperglycemic_clamp",
        "ivgtt",
        "mg_trial",
        "forced_secretion",
    ]:
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000
    hec = table[table["protocol"].str.startswith("HEC 1 mU/kg/min @")].set_index("preset")
    assert hec.loc["healthy", "m_value"] > hec.loc["t2dm", "m_value"]


@pytest.mark.slow
def test_bench_protocols_quick_runs():
    rows = load_experiment("bench_protocols").main(10, quick=True)
    assert all(r["run_single_s"] > 0 and r["steps"] > 0 for r in rows.values())


@pytest.mark.slow
def test_bench_model_quick_runs(tmp_path):
    results = load_experiment("bench_model").main(quick=True, out=tmp_path / "bench.json")
    row = results["3-hour infusion"]
    assert row["run_s"] > 0 and row["steps"] > 10
    assert row["scipy_LSODA_s"] > 0
    assert json.loads((tmp_path / "bench.json").read_text())["budgets"]


def test_cli_does_not_overwrite_a_run(tmp_path):
    from mgjax.app.cli import app

    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    result = CliRunner().invoke(app, ["run", "--out", str(out)])
    assert result.exit_code == 2 and "--force" in result.output
    assert (out / "keep.txt").read_text() == "x"
