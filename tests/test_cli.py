"""The command line and its contract: configs and their errors, overrides, every command on
small data, run directories, the synth → fit round trip, a 2×2 sweep, the report."""

import base64
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from mgjax.app._config import (
    PETAB_HESSIANS,
    ConfigError,
    PetabConfig,
    RunConfig,
    grid_points,
    load_config,
    to_yaml,
    with_values,
)
from mgjax.app.cli import app

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
COMMANDS = ["run", "fit", "synth", "simulate", "sweep", "check", "report", "merge", "params"]


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(autouse=True)
def _no_persistent_cache(monkeypatch):
    # in-process CLI runs keep compiled programs in memory only (the cross-process cache is
    # tested in a subprocess below)
    monkeypatch.setenv("MGJAX_COMPILATION_CACHE", "0")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("cohort") / "c20"
    result = CliRunner().invoke(app, ["synth", "--n", "20", "--seed", "5", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def fitted(cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp("fit") / "run"
    result = CliRunner().invoke(
        app,
        [
            "fit",
            "--data",
            str(cohort),
            "--out",
            str(out),
            "batch.width=10",
            "report.max_subjects=4",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    return out


# --- configs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    cfg = load_config(path)
    # every key the file sets is kept (nothing silently dropped) and the config round-trips
    raw = yaml.safe_load(path.read_text())
    dumped = cfg.model_dump(mode="json")
    for section, value in raw.items():
        if isinstance(value, dict):
            for key in value:
                assert key in dumped[section], (section, key)
    assert RunConfig.model_validate(yaml.safe_load(to_yaml(cfg))) == cfg


def test_shipped_configs_include_the_required_ones():
    names = {p.name for p in CONFIGS}
    for required in [
        "default.yaml",
        "hyperinsulinemic_clamp_fit.yaml",
        "hyperglycemic_clamp_fit.yaml",
        "mg_trial_fit.yaml",
        "cohort_batch.yaml",
    ]:
        assert required in names


def test_default_config_file_is_the_builtin_default():
    assert load_config(ROOT / "configs" / "default.yaml") == RunConfig()


def test_resolved_config_round_trips():
    cfg = load_config(None, ["solver.rtol=1e-7", "fit.free=[egp_max]", "batch.shard=1/3"])
    again = RunConfig.model_validate(yaml.safe_load(to_yaml(cfg)))
    assert again == cfg


@pytest.mark.parametrize(
    "text, expected",
    [
        ("solver:\n  rtol: -1\n", ["solver.rtol", "-1", "greater than 0"]),
        ("solver:\n  rtoll: 1e-6\n", ["solver.rtoll", "allowed here", "rtol"]),
        ("fit:\n  free: [egp_mx]\n", ["fit.free", "egp_mx", "egp_max"]),
        ("optimiser:\n  name: newton\n", ["optimiser.name", "newton", "lbfgs"]),
        ("batch:\n  width: lots\n", ["batch.width", "lots", "integer"]),
        ("batch:\n  shard: 3/2\n", ["batch.shard", "3/2"]),
        ("simulate:\n  protocols: [{kind: mmtt}]\n", ["kind", "mmtt", "ivgtt"]),
        ("fit:\n  error_model: {glucos: {additive: 0.1}}\n", ["glucos", "glucose"]),
        ("model:\n  preset: obese\n", ["model.preset", "obese", "healthy"]),
        ("- just\n- a list\n", ["top level must be a mapping"]),
        ("solver: {rtol: [1e-6\n", ["not valid YAML", "line"]),
    ],
)
def test_bad_config_gets_one_message_with_key_value_and_allowed(tmp_path, text, expected):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config(bad)
    message = str(error.value)
    assert str(bad) in message
    for part in expected:
        assert part in message, message
    # the command line says the same, once, with exit code 2 and no traceback
    result = invoke("fit", bad, "--out", tmp_path / "r")
    assert result.exit_code == 2
    assert "Traceback" not in result.output and expected[0] in result.output
    assert not (tmp_path / "r").exists()  # nothing written for a bad config


def test_missing_config_file_and_yaml_objects_are_refused(tmp_path):
    result = invoke("run", tmp_path / "nope.yaml", "--out", tmp_path / "r")
    assert result.exit_code == 2 and "no such config file" in result.output
    evil = tmp_path / "evil.yaml"
    evil.write_text("seed: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(evil)


def test_overrides_set_nested_keys_with_yaml_values():
    cfg = load_config(
        ROOT / "configs" / "default.yaml",
        ["solver.rtol=1e-8", "fit.free=[egp_max,dct_capacity]", "model.parameters.body_weight=90"],
    )
    assert cfg.solver.rtol == 1e-8
    assert cfg.fit.free == ["egp_max", "dct_capacity"]
    assert cfg.model.parameters == {"body_weight": 90.0}
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_config(None, ["solver.rtol"])
    with pytest.raises(ConfigError, match="solver.rtol"):
        load_config(None, ["solver.rtol=fast"])


def test_petab_section_has_the_command_line_defaults_and_messages():
    assert load_config(None).petab == PetabConfig()
    p = PetabConfig()
    assert (p.starts, p.seed, p.max_steps, p.rtol, p.atol) == (20, 0, 1000, 1e-6, 1e-10)
    assert (p.optimiser, p.hessian, p.restarts) == ("fides", "gauss_newton", 10)
    assert (p.nominal, p.hierarchical, p.explore, p.vmap) == (False, True, True, False)
    with pytest.raises(ConfigError, match=r"key 'petab.optimiser' = 'simplex': unknown optimiser"):
        load_config(None, ["petab.optimiser=simplex"])
    with pytest.raises(ConfigError, match="unknown key 'petab.start'"):
        load_config(None, ["petab.start=3"])
    # a command-line option's value: the option's own message, nothing around it
    with pytest.raises(ConfigError) as error:
        with_values(p, dict(restarts=-1))
    assert str(error.value) == "restarts must be >= 0, got -1"
    with pytest.raises(ConfigError, match="unknown Hessian strategy 'bfgs'"):
        with_values(p, dict(hessian="bfgs"))
    assert with_values(p, dict(starts=3)).starts == 3


def test_petab_hessians_are_fides_strategies():
    pytest.importorskip("petab")
    from mgjax.petab._fides import HESSIANS

    assert PETAB_HESSIANS == HESSIANS


def test_petab_options_win_over_the_config_file(tmp_path):
    pytest.importorskip("petab")
    config = tmp_path / "petab.yaml"
    config.write_text("petab: {optimiser: simplex}\n")
    missing = tmp_path / "missing.yaml"
    result = invoke("petab", missing, "--config", config, "--out", tmp_path / "a")
    assert result.exit_code == 2 and "petab.optimiser" in result.output
    # the option wins: the config is valid, and the run stops at the missing problem file
    result = invoke(
        "petab", missing, "--config", config, "--optimiser", "fides", "--out", tmp_path / "b"
    )
    assert result.exit_code == 2 and "no such PEtab problem file" in result.output
    result = invoke("petab", missing, "petab.restarts=-2", "--out", tmp_path / "c")
    assert result.exit_code == 2 and "restarts must be >= 0, got -2" in result.output


def test_grid_points_are_the_product():
    points = grid_points(["solver.rtol=1e-6,1e-8", "batch.width=4,8"])
    assert len(points) == 4
    assert {(p["solver.rtol"], p["batch.width"]) for p in points} == {
        (1e-6, 4),
        (1e-6, 8),
        (1e-8, 4),
        (1e-8, 8),
    }
    with pytest.raises(ConfigError):
        grid_points(["solver.rtol"])


def test_optimiser_and_adjoint_must_agree(tmp_path):
    result = invoke("fit", "solver.adjoint=checkpoint", "--out", tmp_path / "r")
    assert result.exit_code == 2 and "forward-mode" in result.output


# --- commands -------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0
    assert "Example" in result.output


def test_round_trip_synth_fit_recovers_the_truth(cohort, fitted):
    """The fitting issue's tolerances: 95 % intervals cover the truth for ≥ 90 % of estimates,
    and precise estimates (relative SE ≤ 5 %) are within 10 % of the truth."""
    truth = pd.read_csv(cohort / "truth.csv")
    assert set(truth.columns) == {"subject", "parameter", "value", "unit"}
    parameters = pd.read_csv(fitted / "parameters.csv")
    for column in ["subject", "parameter", "estimate", "se", "ci_low", "ci_high", "unit"]:
        assert column in parameters.columns
    subjects = pd.read_csv(fitted / "subjects.csv")
    assert list(subjects.columns[:5]) == ["subject", "loss", "converged", "iterations", "status"]
    assert len(subjects) == 20 and subjects["converged"].all()
    merged = parameters.merge(truth, on=["subject", "parameter"])
    assert len(merged) == 100
    covered = (merged["ci_low"] <= merged["value"]) & (merged["value"] <= merged["ci_high"])
    assert covered.mean() >= 0.90, covered.mean()
    precise = merged[merged["se_relative"] <= 0.05]
    assert len(precise) >= 20
    error = np.abs(precise["estimate"] / precise["value"] - 1.0)
    assert (error <= 0.10).mean() >= 0.9


def test_run_directory_holds_config_environment_log_tables_and_report(fitted):
    for name in [
        "config.yaml",
        "environment.json",
        "run.log",
        "summary.json",
        "subjects.csv",
        "parameters.csv",
        "cohort_summary.csv",
        "loss_history.csv",
        "report.html",
        "fits.png",
        "estimates.png",
        "cohort.png",
        "identifiability.png",
        "vicious_circle.png",
        "recovery.png",
        "loss.png",
    ]:
        assert (fitted / name).exists(), name
    cfg = load_config(fitted / "config.yaml")  # the resolved config loads back
    assert cfg.batch.width == 10 and cfg.data.path is not None
    env = json.loads((fitted / "environment.json").read_text())
    assert env["x64"] and env["backend"] and env["devices"] and env["jax"]
    log = (fitted / "run.log").read_text()
    logged = float(re.search(r"compile time: ([0-9.]+) s", log).group(1))
    summary = json.loads((fitted / "summary.json").read_text())
    assert summary["subjects"] == 20
    # the log reports the summary's compile time (to its 2 decimals), a part of the run's total
    assert summary["seconds_compile"] == pytest.approx(logged, abs=0.006)
    assert summary["seconds_compile"] < summary["seconds_total"]
    # the report's program compiled in a thread beside the fit
    assert "report program ready" in log


def test_report_is_self_contained_and_redrawn_by_the_report_command(fitted):
    page = (fitted / "report.html").read_text()
    sources = re.findall(r'<img[^>]* src="([^"]+)"', page)
    assert len(sources) >= 8
    for src in sources:  # every image is embedded and a PNG; nothing is fetched
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "http://" not in page and "https://" not in page
    (fitted / "report.html").unlink()
    result = invoke("report", fitted)
    assert result.exit_code == 0, result.output
    assert (fitted / "report.html").exists()


def test_a_used_run_directory_is_refused_unless_resume_or_force(cohort, fitted, tmp_path):
    result = invoke("fit", "--data", cohort, "--out", fitted, "batch.width=10", "--no-progress")
    assert result.exit_code == 2 and "--resume" in result.output
    before = pd.read_csv(fitted / "parameters.csv")
    result = invoke(
        "fit", "--data", cohort, "--out", fitted, "--resume", "batch.width=10", "--no-progress"
    )
    assert result.exit_code == 0, result.output
    pd.testing.assert_frame_equal(pd.read_csv(fitted / "parameters.csv"), before)
    keep = tmp_path / "precious"
    keep.mkdir()
    (keep / "thesis.tex").write_text("x")
    result = invoke("fit", "--data", cohort, "--out", keep, "--force", "--no-progress")
    assert result.exit_code == 2 and "not an mgjax run directory" in result.output
    assert (keep / "thesis.tex").exists()


def test_sweep_2x2_then_shards_and_merge(cohort, tmp_path):
    out = tmp_path / "sweep"
    result = invoke(
        "sweep",
        "batch.width=10",
        "report.enabled=false",
        "--grid",
        "optimiser.max_steps=2,4",
        "--grid",
        "solver.rtol=1e-6,1e-7",
        "--data",
        cohort,
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "sweep.csv")
    assert len(table) == 4
    assert set(zip(table["optimiser.max_steps"], table["solver.rtol"])) == {
        (2, 1e-6),
        (2, 1e-7),
        (4, 1e-6),
        (4, 1e-7),
    }
    for _, row in table.iterrows():
        assert (out / row["run"] / "parameters.csv").exists()
        assert row["subjects"] == 20
        # max_steps per start; an implausible fit gets one more start (batch.restarts: 1)
        assert row["median_iterations"] <= 2 * row["optimiser.max_steps"]
        assert "median[egp_max]" in table.columns
    # more iterations never end at a worse median loss
    by = table.set_index(["optimiser.max_steps", "solver.rtol"])["median_loss"]
    assert by[(4, 1e-6)] <= by[(2, 1e-6)] + 1e-9

    # the same job in two shards (scheduler job array) + merge = the sweep's whole-cohort point
    runs = []
    for i in range(2):
        shard = tmp_path / f"shard{i}"
        result = invoke(
            "fit", "--data", cohort, "--out", shard, "--shard", f"{i}/2", "batch.width=10",
            "optimiser.max_steps=4", "solver.rtol=1e-6", "report.enabled=false", "--no-progress",
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        runs.append(shard)
    result = invoke("merge", *runs, "--out", tmp_path / "all")
    assert result.exit_code == 0, result.output
    merged = pd.read_csv(tmp_path / "all" / "parameters.csv")
    point = table.set_index(["optimiser.max_steps", "solver.rtol"]).loc[(4, 1e-6), "run"]
    whole = pd.read_csv(out / point / "parameters.csv")
    assert list(merged["subject"]) == list(whole["subject"])
    np.testing.assert_allclose(merged["estimate"], whole["estimate"], rtol=1e-9)


@pytest.mark.slow
def test_fit_with_worker_processes_equals_one_process(cohort, fitted, tmp_path):
    out = tmp_path / "w2"
    result = invoke(
        "fit", "--data", cohort, "--out", out, "--workers", "2", "batch.width=10",
        "report.enabled=false", "--no-progress",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    mine = pd.read_csv(out / "parameters.csv")
    alone = pd.read_csv(fitted / "parameters.csv")
    assert list(mine["subject"]) == list(alone["subject"])
    # each worker calls the round program on other neighbours and lane positions than the
    # single process does: one estimate of 100 once differed by 1.1e-7 (relative), one
    # iteration more or less of Levenberg–Marquardt on last-bit differences
    np.testing.assert_allclose(mine["estimate"], alone["estimate"], rtol=1e-6)
    assert json.loads((out / "summary.json").read_text())["workers"] == 2


def test_sweep_refuses_a_bad_point_before_running_any(cohort, tmp_path):
    result = invoke(
        "sweep", "--grid", "solver.rtol=1e-6,-1", "--data", cohort, "--out", tmp_path / "s"
    )
    assert result.exit_code == 2 and "solver.rtol" in result.output
    assert not (tmp_path / "s").exists()


def test_simulate_writes_the_observation_format(tmp_path):
    out = tmp_path / "sim"
    result = invoke(
        "simulate",
        ROOT / "configs" / "hyperinsulinemic_clamp_fit.yaml",
        "simulate.presets=[healthy,t2dm]",
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out / "trajectories.csv")
    assert list(frame.columns) == [
        "subject",
        "protocol",
        "time",
        "time_unit",
        "observable",
        "value",
        "unit",
    ]
    assert set(frame["subject"]) == {"healthy", "t2dm"}
    gir = frame[(frame["observable"] == "glucose_infusion") & (frame["time"] >= 90)]
    assert set(gir["unit"]) == {"mg/kg/min"}
    m = gir.groupby("subject")["value"].mean()
    assert 5.0 < m["healthy"] < 12.0 and m["t2dm"] < m["healthy"]  # M-values, DeFronzo range
    # the simulated table (with the clamp's infusion) is valid input: write it as a dataset
    frame.to_csv(tmp_path / "observations.csv", index=False)
    (tmp_path / "doses.csv").write_text((out / "doses.csv").read_text())
    result = invoke("check", "--data", tmp_path)
    assert result.exit_code == 0, result.output


def test_check_reports_a_bad_dataset_with_file_row_and_column(cohort, tmp_path):
    result = invoke("check", "--data", cohort)
    assert result.exit_code == 0 and "20" in result.output
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ["observations.csv", "doses.csv", "subjects.csv"]:
        (broken / name).write_text((cohort / name).read_text())
    obs = pd.read_csv(broken / "observations.csv").astype({"value": object})
    obs.loc[3, "value"] = "abc"
    obs.to_csv(broken / "observations.csv", index=False)
    result = invoke("check", "--data", broken)
    assert result.exit_code == 2
    assert "observations.csv" in result.output and "value" in result.output
    assert "Traceback" not in result.output
    result = invoke("check", "--data", tmp_path / "nowhere")
    assert result.exit_code == 2 and "no such dataset folder" in result.output


def test_per_subject_engine_with_multistart_writes_the_waterfall(cohort, tmp_path):
    """A non-batch optimiser with 3 starts per subject: the same tables, plus multistart.csv
    and the waterfall figure (on the fasting labs alone, one parameter: a small program)."""
    out = tmp_path / "ms"
    sub = tmp_path / "fasting_only"
    sub.mkdir()
    obs = pd.read_csv(cohort / "observations.csv")
    keep = sorted(obs["subject"].unique())[:3]
    obs = obs[obs["subject"].isin(keep) & (obs["protocol"] == "fasting")]
    obs.to_csv(sub / "observations.csv", index=False)
    for name in ["subjects.csv", "truth.csv"]:
        t = pd.read_csv(cohort / name)
        t[t["subject"].isin(keep)].to_csv(sub / name, index=False)
    result = invoke(
        "fit",
        "fit.free=[dietary_mg_intake]",
        "multistart.starts=3",
        "optimiser.max_steps=40",
        "--data",
        sub,
        "--out",
        out,
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    starts = pd.read_csv(out / "multistart.csv")
    assert len(starts) == 9 and set(starts["subject"]) == set(keep)
    assert (out / "waterfall.png").exists() and (out / "report.html").exists()
    parameters = pd.read_csv(out / "parameters.csv")
    assert list(parameters["parameter"].unique()) == ["dietary_mg_intake"]
    # each subject's estimate is its best start's
    subjects = pd.read_csv(out / "subjects.csv").set_index("subject")
    best = starts.groupby("subject")["nll"].min()
    np.testing.assert_allclose(subjects.loc[best.index, "loss"], best, rtol=1e-6)
    assert "per subject (levenberg_marquardt, 3 start(s))" in (out / "run.log").read_text()


def test_stored_program_is_reused_by_a_new_process(tmp_path):
    """`mgjax.runtime._programs`: the second process reads the exported program back (no trace)
    and gets the same numbers."""
    script = textwrap.dedent(
        f"""
        import json, sys
        import jax, jax.numpy as jnp, numpy as np
        import mgjax
        from mgjax.runtime._compilation_cache import enable_compilation_cache
        from mgjax.runtime._programs import compile_program
        from mgjax import steady_state, preset
        enable_compilation_cache({str(tmp_path / "cache")!r}, min_compile_seconds=0.0)

        def f(x):
            return {{"y": jnp.linalg.solve(x["a"], x["b"]), "s": jnp.sum(x["b"] ** 2)}}

        args = ({{"a": np.eye(3) * 2.0, "b": np.arange(3.0)}},)
        program = compile_program("test-program", f, args)
        out = program(*args)
        # XLA's cheaper settings are accepted by the CPU compiler and change nothing here
        from mgjax.runtime._programs import cpu_compiler_options
        options = cpu_compiler_options("cpu", run_once=True)
        fast = compile_program("test-program", f, args, compiler_options=options)
        assert fast.source != "memory"  # another program (options are part of the key)
        assert np.array_equal(np.asarray(fast(*args)["y"]), np.asarray(out["y"]))
        print(json.dumps(dict(source=program.source, y=np.asarray(out["y"]).tolist())))
        """
    )
    runs = [
        subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
        for _ in range(2)
    ]
    for run in runs:
        assert run.returncode == 0, run.stderr[-2000:]
    first, second = (json.loads(r.stdout.strip().splitlines()[-1]) for r in runs)
    assert first["source"] == "traced" and second["source"] == "stored"
    assert first["y"] == second["y"] == [0.0, 0.5, 1.0]


def test_stored_programs_are_keyed_by_every_mgjax_module():
    """A stored program is traced afresh when any of mgjax's sources changes — the model, the
    objective or the optimiser, not only the runtime layer that stores it."""
    import mgjax
    from mgjax.runtime import _programs

    package = Path(mgjax.__file__).parent
    files = {p.relative_to(package).as_posix() for p in _programs.source_files()}
    for module in (
        "model/_coupled.py",
        "fit/_objective.py",
        "batch/_run.py",
        "runtime/_programs.py",
    ):
        assert module in files, module
    assert files == {p.relative_to(package).as_posix() for p in package.rglob("*.py")}


def test_synth_groups_without_a_population_are_refused_by_the_config(tmp_path):
    """`mgjax synth` has populations for three groups; another preset name in `synth.groups`
    is refused when the config is read (one message, exit code 2), not with a traceback."""
    result = invoke("synth", "--n", "5", "--out", tmp_path / "c", "synth.groups={prediabetes: 5}")
    assert result.exit_code == 2, result.output
    assert "synth.groups" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "c").exists()
