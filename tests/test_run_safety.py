"""Run directories are safe to reuse: `--resume` refuses other data or settings, `merge`
refuses a missing shard, a run that fails before fitting leaves nothing behind, run.log
records every round, and the progress bar says when it compiles.

Every fit here is 3 subjects of the bundled cohort in one lane (`batch.width=1`), so the one
round program compiles once for the module."""

import io
import json
import re
import shutil

import pandas as pd
import pytest
from rich.console import Console
from typer.testing import CliRunner

import mgjax
import mgjax.app._jobs as jobs
from mgjax.app._resolve import bundled_cohort
from mgjax.app._run_dir import start_log
from mgjax.app.cli import app
from mgjax.batch._store import missing_shards

SUBJECTS = ("s0000", "s0001", "s0002")
FAST = (
    "batch.width=1", "batch.restarts=0", "optimiser.max_steps=4", "batch.round_steps=4",
    "--no-report", "--no-progress",
)  # fmt: skip


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def one_line(output: str) -> str:
    """The CLI's message with rich's line wrapping undone."""
    return " ".join(output.split())


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """The first 3 subjects of the bundled cohort (rows copied byte for byte)."""
    out = tmp_path_factory.mktemp("data") / "c3"
    out.mkdir()
    for name in ("observations.csv", "doses.csv", "subjects.csv"):
        header, *rows = (bundled_cohort() / name).read_text().splitlines(keepends=True)
        (out / name).write_text(header + "".join(r for r in rows if r.startswith(SUBJECTS)))
    return out


@pytest.fixture(scope="module")
def fitted(cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp("fit") / "run"
    result = invoke("fit", "--data", cohort, "--out", out, *FAST)
    assert result.exit_code == 0, result.output
    return out


# --- 1. --resume with other data or settings ------------------------------------------------------


def test_resume_refuses_other_data_and_names_the_file(cohort, fitted, tmp_path):
    changed = tmp_path / "changed"
    shutil.copytree(cohort, changed)
    obs = changed / "observations.csv"
    lines = obs.read_text().splitlines(keepends=True)
    first = lines[1].split(",")  # the first measurement, a different value
    first[5] = str(float(first[5]) * 1.01)
    obs.write_text("".join([lines[0], ",".join(first), *lines[2:]]))
    config, parts = (fitted / "config.yaml").read_bytes(), sorted((fitted / "parts").iterdir())
    result = invoke("fit", "--data", changed, "--out", fitted, "--resume", *FAST)
    assert result.exit_code == 2, result.output
    message = one_line(result.output)
    assert "the data differ: observations.csv changed" in message
    assert "doses.csv" not in message and "Traceback" not in result.output
    # nothing in the run directory was rewritten
    assert (fitted / "config.yaml").read_bytes() == config
    assert sorted((fitted / "parts").iterdir()) == parts


def test_resume_refuses_other_settings_and_names_the_keys(cohort, fitted):
    config = (fitted / "config.yaml").read_bytes()
    result = invoke(
        "fit", "--data", cohort, "--out", fitted, "--resume", *FAST, "optimiser.max_steps=8",
        "solver.rtol=1e-7",
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    message = one_line(result.output)
    assert "config keys differ: optimiser.max_steps (4 → 8), solver.rtol (1e-06 → 1e-07)" in (
        message
    )
    assert (fitted / "config.yaml").read_bytes() == config


def test_resume_accepts_the_same_data_elsewhere_and_other_lanes(cohort, fitted, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(cohort, moved)
    before = pd.read_csv(fitted / "parameters.csv")
    result = invoke(
        "fit", "--data", moved, "--out", fitted, "--resume", *FAST, "batch.width=2",
        "report.max_subjects=2",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    pd.testing.assert_frame_equal(pd.read_csv(fitted / "parameters.csv"), before)
    stamp = json.loads((fitted / "fingerprint.json").read_text())
    assert sorted(stamp["data"]) == ["doses.csv", "observations.csv", "subjects.csv"]
    assert stamp["config"]["optimiser.max_steps"] == 4 and "batch.width" not in stamp["config"]


# --- 2. merge with a missing shard ----------------------------------------------------------------


def test_missing_shards_are_named_by_the_coarsest_split():
    assert missing_shards({(0, 3)}) == [(1, 3), (2, 3)]
    assert missing_shards({(0, 4), (2, 4)}) == [(1, 2)]  # shard 0/2 run with 2 workers
    assert missing_shards({(0, 2), (1, 4), (3, 4)}) == []
    assert missing_shards({(0, 1)}) == []


def test_merge_refuses_a_missing_shard_unless_allowed(cohort, tmp_path):
    runs = []
    for i in range(2):  # shards 0/3 and 1/3; 2/3 never ran
        run = tmp_path / f"shard{i}"
        result = invoke("fit", "--data", cohort, "--out", run, "--shard", f"{i}/3", *FAST)
        assert result.exit_code == 0, result.output
        runs.append(run)
    result = invoke("merge", *runs, "--out", tmp_path / "all")
    assert result.exit_code == 2, result.output
    message = one_line(result.output)
    assert "missing shard(s) 2/3" in message and "--allow-missing" in message
    assert not (tmp_path / "all").exists()
    result = invoke("merge", *runs, "--out", tmp_path / "all", "--allow-missing")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "all" / "summary.json").read_text())
    assert summary["missing_shards"] == ["2/3"] and summary["subjects"] == 2
    assert list(pd.read_csv(tmp_path / "all" / "subjects.csv")["subject"]) == ["s0000", "s0001"]


# --- 3. a run that fails before fitting -----------------------------------------------------------


def test_a_run_with_bad_data_leaves_no_directory_and_the_retry_works(cohort, tmp_path):
    out = tmp_path / "run"
    result = invoke("fit", "--data", tmp_path / "no-such-data", "--out", out, *FAST)
    assert result.exit_code == 2 and "no such dataset folder" in one_line(result.output)
    assert not out.exists()
    broken = tmp_path / "broken"
    shutil.copytree(cohort, broken)
    (broken / "observations.csv").write_text("subject,time\ns0000,0\n")
    result = invoke("fit", "--data", broken, "--out", out, *FAST)
    assert result.exit_code == 2 and "observations.csv" in one_line(result.output)
    assert not out.exists()
    result = invoke("fit", "--data", cohort, "--out", out, *FAST)
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(out / "subjects.csv")) == 3


def test_a_failed_fit_removes_only_the_directory_it_created(cohort, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("the engine broke")

    monkeypatch.setattr(jobs, "fit_batch", broken)
    out = tmp_path / "new"
    result = invoke("fit", "--data", cohort, "--out", out, *FAST)
    assert result.exit_code == 2 and "the engine broke" in result.output
    assert not out.exists()
    mine = tmp_path / "mine"
    mine.mkdir()  # existed before (empty): kept
    result = invoke("fit", "--data", cohort, "--out", mine, *FAST)
    assert result.exit_code == 2 and "the engine broke" in result.output
    assert mine.is_dir()


# --- 4. run.log records every round ---------------------------------------------------------------


ROUND = re.compile(
    r"INFO round (\d+): (\d+)/3 subjects \(0 resumed\), (\d+) converged, ([\d.]+) subjects/s"
)


def test_run_log_records_every_round(fitted):
    rounds = ROUND.findall((fitted / "run.log").read_text())
    summary = json.loads((fitted / "summary.json").read_text())
    # one lane, each subject ends within its first round (max_steps = round_steps = 4)
    assert [(int(k), int(done)) for k, done, _, _ in rounds] == [(1, 1), (2, 2), (3, 3)]
    converged = [int(c) for _, _, c, _ in rounds]
    assert converged == sorted(converged) and converged[-1] == summary["converged"]
    assert all(float(rate) > 0 for *_, rate in rounds)


# --- 5. the progress bar says it compiles ---------------------------------------------------------


def test_progress_bar_reads_compiling_until_the_first_round(tmp_path):
    (tmp_path / "parts").mkdir()
    console = Console(file=io.StringIO(), width=120)
    bar = jobs.fit_progress_bar(console=console)
    log = start_log(tmp_path, "test-run-safety")
    rounds = jobs.RoundLog(tmp_path, (0, 1), total=2, log=log, bar=bar)
    console.print(bar.make_tasks_table(bar.tasks))
    assert "compiling…" in console.file.getvalue() and "0/2" in console.file.getvalue()
    part = pd.DataFrame(dict(subject=["a"], converged=[True]))
    part.to_parquet(tmp_path / "parts" / "part-s0of1-000000.parquet")
    rounds(1)
    task = bar.tasks[0]
    assert (task.description, task.completed) == ("fitting", 1)
    assert "round 1: 1/2 subjects (0 resumed), 1 converged" in (tmp_path / "run.log").read_text()


# --- fit.start_from: starting values from a finished run -----------------------------------------


def test_start_from_a_fit_or_population_run_sets_the_free_parameters_start(tmp_path):
    """`fit.start_from` starts each group at a finished fit's median estimates (or every
    subject at a population fit's typical values); fixed parameters and range priors stay the
    presets'; a directory without either table, or a non-positive value, is refused by name."""
    from mgjax.app._config import ConfigError, RunConfig
    from mgjax.app._resolve import base_model_for, priors_for, start_values
    from mgjax.model._parameters import get_parameters

    free = ["signalling_capacity", "egp_max"]
    fit_run = tmp_path / "fit"
    fit_run.mkdir()
    pd.DataFrame(
        dict(
            group=["t2dm", "t2dm", "healthy"],
            parameter=["signalling_capacity", "egp_max", "signalling_capacity"],
            median=[0.3, 0.02, 1.1],
        )
    ).to_csv(fit_run / "cohort_summary.csv", index=False)
    assert start_values(fit_run, free) == {
        "healthy": {"signalling_capacity": 1.1},
        "t2dm": {"signalling_capacity": 0.3, "egp_max": 0.02},
    }
    cfg = RunConfig.model_validate(dict(fit=dict(free=free, start_from=str(fit_run))))
    t2dm = get_parameters(base_model_for(cfg)("t2dm", {}), (*free, "beta_cell_mass"))
    preset = get_parameters(mgjax.preset("t2dm"), ("beta_cell_mass",))
    assert float(t2dm["signalling_capacity"]) == 0.3 and float(t2dm["egp_max"]) == 0.02
    assert float(t2dm["beta_cell_mass"]) == float(preset["beta_cell_mass"])
    other = get_parameters(base_model_for(cfg)("t2dm_hypomagnesemia", {}), tuple(free))
    assert float(other["signalling_capacity"]) == float(
        get_parameters(mgjax.preset("t2dm_hypomagnesemia"), tuple(free))["signalling_capacity"]
    )  # a group the run did not fit keeps its preset
    cfg_range = RunConfig.model_validate(
        dict(fit=dict(free=free, start_from=str(fit_run), priors="range"))
    )
    healthy = get_parameters(mgjax.preset("healthy"), tuple(free))
    assert priors_for(cfg_range)["signalling_capacity"][0] == float(healthy["signalling_capacity"])

    population_run = tmp_path / "population"
    population_run.mkdir()
    pd.DataFrame(
        dict(parameter=["signalling_capacity", "weight_effect"], estimate=[0.7, 0.75])
    ).to_csv(population_run / "population_parameters.csv", index=False)
    assert start_values(population_run, free) == {None: {"signalling_capacity": 0.7}}

    with pytest.raises(ConfigError, match="neither cohort_summary.csv"):
        start_values(tmp_path, free)
    pd.DataFrame(dict(parameter=["egp_max"], estimate=[-1.0])).to_csv(
        population_run / "population_parameters.csv", index=False
    )
    with pytest.raises(ConfigError, match="egp_max = -1.0, not a positive number"):
        start_values(population_run, free)
