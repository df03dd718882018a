"""Every script in experiments/ runs (smoke tests with tiny settings) and the CLI main job works."""

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


def test_cli_run_writes_the_run_directory(tmp_path):
    from mgjax.cli import app

    out = tmp_path / "run"
    config = ROOT / "configs" / "default.yaml"
    result = CliRunner().invoke(app, ["run", str(config), "--out", str(out), "--weeks", "2"])
    assert result.exit_code == 0, result.output
    assert (out / "trajectories.csv").exists()
    assert (out / "supplementation.png").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert {row["preset"] for row in summary["rows"]} == {
        "healthy",
        "t2dm",
        "t2dm_hypomagnesemia",
    }


def test_cli_refuses_a_bad_config_with_key_and_value(tmp_path):
    from mgjax.cli import app

    bad = tmp_path / "bad.yaml"
    bad.write_text("supplement:\n  weeks: -3\n")
    result = CliRunner().invoke(app, ["run", str(bad), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "supplement.weeks" in result.output and "-3" in result.output
    bad.write_text("presets: [healthy, prediabetes]\n")
    result = CliRunner().invoke(app, ["run", str(bad), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "prediabetes" in result.output


def test_cli_does_not_overwrite_a_run(tmp_path):
    from mgjax.cli import app

    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    result = CliRunner().invoke(app, ["run", "--out", str(out)])
    assert result.exit_code == 2 and "--force" in result.output
