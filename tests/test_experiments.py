"""Every script in experiments/ runs (smoke tests with tiny settings) and uses only mgjax's
public API; the main job refuses to overwrite (the CLI itself: test_cli.py)."""

import ast
import json
import pathlib

import numpy as np
import pytest
from helpers import assert_png_shows_data, load_experiment
from typer.testing import CliRunner

import mgjax

ROOT = pathlib.Path(__file__).resolve().parents[1]
FOLDERS = {"benchmarks", "examples", "studies", "tools"}


def _imported_names(tree):
    """Every dotted name a module imports or reads from `mgjax` (`mgjax.a._b`, `from mgjax.a
    import _b` as `mgjax.a._b`)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield from ((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)
        elif isinstance(node, ast.Attribute):
            parts, value = [node.attr], node.value
            while isinstance(value, ast.Attribute):
                parts, value = [value.attr, *parts], value.value
            if isinstance(value, ast.Name) and value.id == "mgjax":
                yield node.lineno, ".".join(["mgjax", *parts])


def test_experiments_import_only_public_mgjax():
    private = []
    for path in sorted((ROOT / "experiments").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for line, name in _imported_names(tree):
            parts = name.split(".")
            private_parts = [p for p in parts[1:] if p.startswith("_") and not p.endswith("__")]
            if parts[0] == "mgjax" and private_parts:  # `mgjax.__file__` is no private code
                private.append(f"{path.relative_to(ROOT)}:{line}: {name}")
    assert not private, "experiments import private mgjax code:\n" + "\n".join(private)


def test_experiments_are_sorted_into_their_folders():
    scripts = [p for p in (ROOT / "experiments").rglob("*") if p.suffix in {".py", ".sh"}]
    assert scripts
    for path in scripts:
        folder = path.relative_to(ROOT / "experiments").parts[0]
        assert folder in FOLDERS | {"output"}, path


def test_vicious_circle_runs_and_shows_the_circle(tmp_path):
    frame = load_experiment("examples/vicious_circle").main(tmp_path, quick=True)
    assert_png_shows_data(tmp_path / "vicious_circle.png")
    assert frame["converged"].all()
    for _, group in frame.groupby("signalling_capacity"):
        group = group.sort_values("dietary_mg_intake_mmol_day")
        assert group["serum_mg"].is_monotonic_increasing
        assert group["homa_ir"].is_monotonic_decreasing


def test_protocols_experiment_runs(tmp_path):
    table = load_experiment("examples/protocols").main(tmp_path, quick=True)
    for name in [
        "hyperinsulinemic_clamp",
        "hyperglycemic_clamp",
        "ivgtt",
        "mg_trial",
        "forced_secretion",
    ]:
        assert_png_shows_data(tmp_path / f"{name}.png")
    hec = table[table["protocol"].str.startswith("HEC 1 mU/kg/min @")].set_index("preset")
    assert hec.loc["healthy", "m_value"] > hec.loc["t2dm", "m_value"]


@pytest.mark.slow
def test_bench_protocols_quick_runs():
    rows = load_experiment("benchmarks/bench_protocols").main(10, quick=True)
    # --quick: the first two protocols, each one subject and a batch of 10
    assert list(rows) == ["HEC 120 min", "hyperglycaemic clamp"]
    hec = mgjax.HyperinsulinemicClamp()
    traj = mgjax.simulate(mgjax.preset("t2dm"), hec, hec.sampling_times())
    assert rows["HEC 120 min"]["steps"] == int(traj.num_steps)
    for row in rows.values():
        # a warm solve takes milliseconds, its compilation seconds
        assert row["run_single_s"] < row["compile_single_s"]
        assert row["per_subject_s"] < row["compile_batch_s"]


@pytest.mark.slow
def test_bench_model_quick_runs(tmp_path):
    results = load_experiment("benchmarks/bench_model").main(
        quick=True, out=tmp_path / "bench.json"
    )
    row = results["3-hour infusion"]
    assert row["steps"] > 10 and row["batch_n"] == 20
    assert row["run_s"] < row["compile_s"]  # a warm solve is faster than its compilation
    assert row["batch_steps_mean"] <= row["batch_steps_max"]
    # the ratios printed are the times measured
    assert row["ratios"]["single"]["LSODA"] == pytest.approx(row["scipy_LSODA_s"] / row["run_s"])
    assert row["ratios"]["batch_vs_lsoda"] == pytest.approx(
        row["scipy_LSODA_s"] / row["batch_per_subject_s"]
    )
    written = json.loads((tmp_path / "bench.json").read_text())
    assert len(written["budgets"]) == 5
    assert written["3-hour infusion"]["steps"] == row["steps"]
    assert np.isclose(written["3-hour infusion"]["scipy_LSODA_s"], row["scipy_LSODA_s"])


def test_cli_does_not_overwrite_a_run(tmp_path):
    from mgjax.app.cli import app

    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    result = CliRunner().invoke(app, ["run", "--out", str(out)])
    assert result.exit_code == 2 and "--force" in result.output
    assert (out / "keep.txt").read_text() == "x"
