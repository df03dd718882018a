"""Batch fitting in one process: vmapped batch = one-by-one fits, a broken subject is flagged
and changes nobody else, shards + merge = the whole, resume refuses/continues, cohorts."""

import functools
import json
from dataclasses import replace
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import mgjax
from mgjax import batch
from mgjax.app.cli import default_cohort_path
from mgjax.synth._cohort import COHORT_PARAMETERS, cohort_error_models, synthesize

#: two healthy and two t2dm subjects of the bundled cohort
SUBJECTS = ["s0000", "s0001", "s0008", "s0009"]
SETTINGS = batch.BatchSettings(width=2)


@pytest.fixture(scope="module")
def dataset():
    return mgjax.load_dataset(default_cohort_path())


@pytest.fixture(scope="module")
def errors(dataset):
    return cohort_error_models(sorted(dataset.observations["observable"].unique()))


@pytest.fixture(scope="module")
def reference(dataset, errors):
    return batch.fit_batch(
        dataset, COHORT_PARAMETERS, settings=SETTINGS, error_models=errors, subjects=SUBJECTS
    )


def test_batch_fits_every_subject(reference):
    subjects = reference.subjects
    assert list(subjects["subject"]) == SUBJECTS
    assert subjects["converged"].all(), subjects
    assert (subjects["status"] == "converged").all()
    assert len(reference.parameters) == len(SUBJECTS) * len(COHORT_PARAMETERS)
    p = reference.parameters
    assert np.all(p["ci_low"] <= p["estimate"]) and np.all(p["estimate"] <= p["ci_high"])
    assert np.all(np.isfinite(p["se"]))


def test_batches_built_in_parts_merge_into_the_whole(dataset, errors):
    """Worker processes each build a share of the cohort (`mgjax.batch._workers.SharedBuild`);
    merged, the parts are the batches one process builds of all subjects: the same
    structures, subjects, groups, order and arrays."""
    from mgjax.batch._build import merge_batches

    obs = dataset.observations
    without_clamp = obs["subject"].isin(["s0001", "s0002", "s0005"]) & (
        obs["protocol"] == "hyperinsulinemic_clamp"
    )  # a second structure: fasting labs only
    two = replace(dataset, observations=obs[~without_clamp].reset_index(drop=True))
    subjects = sorted(two.observations["subject"].unique())[:10]
    build = functools.partial(batch.build_batches, two, COHORT_PARAMETERS, error_models=errors)
    whole = build(subjects=subjects)
    assert [len(b) for b in whole] == [7, 3]
    merged = merge_batches([build(subjects=subjects[k::3]) for k in range(3)], subjects)
    assert [b.subjects for b in merged] == [b.subjects for b in whole]
    assert [b.groups for b in merged] == [b.groups for b in whole]
    for m, w in zip(merged, whole):
        assert jax.tree.structure(m.problems) == jax.tree.structure(w.problems)
        for x, y in zip(jax.tree.leaves(m.problems), jax.tree.leaves(w.problems)):
            np.testing.assert_array_equal(x, y)
    with pytest.raises(ValueError, match="in no part"):
        merge_batches([build(subjects=subjects[:4])], subjects)


def test_batch_equals_one_by_one_fits(dataset, errors, reference):
    """The vmapped lane pool gives each subject the fit it gets alone (mgjax.fit.fit with
    Levenberg–Marquardt, its own Laplace SEs) — a different code path for both."""
    built = batch.build_batches(
        dataset, COHORT_PARAMETERS, subjects=SUBJECTS[:2], error_models=errors
    )[0]
    for i, subject in enumerate(built.subjects):
        problem = jax.tree.map(jnp.asarray, built.one(i))
        alone = mgjax.fit.fit(problem, method="levenberg_marquardt", max_steps=200)
        mine = reference.parameters[reference.parameters["subject"] == subject].set_index(
            "parameter"
        )
        est = mine.loc[list(problem.free), "estimate"].to_numpy()
        se = mine.loc[list(problem.free), "se"].to_numpy()
        np.testing.assert_allclose(est, alone.estimates, rtol=1e-5)
        np.testing.assert_allclose(se, alone.se, rtol=1e-3)
        row = reference.subjects.set_index("subject").loc[subject]
        assert row["loss"] == pytest.approx(alone.loss, rel=1e-7)
        # the same optimum; the paths may differ by rounding (the batch applies the exact
        # Jacobian as a stored matrix, the single fit re-linearises the solver)
        assert row["converged"] and alone.converged


def test_broken_subject_is_flagged_and_poisons_nobody(dataset, errors, reference):
    def base(group, covariates):
        model = batch.default_base_model(group, covariates)
        if covariates.get("body_weight") == broken_weight:
            model = mgjax.set_parameters(model, {"gfr": float("nan")})
        return model

    broken_weight = float(dataset.subjects.set_index("subject").loc[SUBJECTS[1], "weight"])
    result = batch.fit_batch(
        dataset,
        COHORT_PARAMETERS,
        settings=SETTINGS,
        error_models=errors,
        subjects=SUBJECTS,
        base_model=base,
    )
    table = result.subjects.set_index("subject")
    assert table.loc[SUBJECTS[1], "status"] == "solve_failed"
    assert not table.loc[SUBJECTS[1], "converged"]
    assert np.isfinite(table.loc[SUBJECTS[1], "loss"])
    others = [s for s in SUBJECTS if s != SUBJECTS[1]]
    ref = reference.parameters.set_index(["subject", "parameter"]).loc[others]
    got = result.parameters.set_index(["subject", "parameter"]).loc[others]
    # the others end at the optimum they reach without the broken subject: the same loss, and
    # estimates within the optimiser's tolerance. (Bit-identical in most runs; in two of about
    # six full-suite runs on 2 cores one other subject ended 1e-4 (relative) away on the same
    # optimum. Cause not found: lane placement is ruled out — the subject's fit is
    # bit-identical in any lane and round of a clean process.)
    ref_loss = reference.subjects.set_index("subject").loc[others, "loss"]
    np.testing.assert_allclose(table.loc[others, "loss"], ref_loss, rtol=1e-6)
    np.testing.assert_allclose(got["estimate"], ref["estimate"], rtol=1e-3)
    assert (table.loc[others, "status"] == "converged").all()


def test_one_program_for_any_cohort_size(dataset, errors, reference):
    """The round program is compiled for `chunk` lanes, not for the cohort: one subject, and
    three subjects in a pool of four lanes (three calls per round) reuse the reference's
    program and give the reference's estimates; a vmapped program of two lanes per call (as
    on several devices or an accelerator) gives them to rounding."""
    programs = []
    pool = replace(SETTINGS, width=4)
    vmapped = replace(SETTINGS, width=4, chunk=2)
    for subjects, settings, rtol in [
        (SUBJECTS[:1], SETTINGS, 1e-10),
        (SUBJECTS[1:], pool, 1e-10),
        (SUBJECTS[1:], vmapped, 1e-8),
    ]:
        built = batch.build_batches(
            dataset, COHORT_PARAMETERS, subjects=subjects, error_models=errors
        )
        assert len(built) == 1
        rows = batch.run_batch(built[0], settings, on_compiled=programs.append)
        got = rows.set_index("subject")
        ref = reference.parameters.pivot(index="subject", columns="parameter", values="estimate")
        for name in COHORT_PARAMETERS:
            np.testing.assert_allclose(
                got[f"estimate[{name}]"], ref.loc[got.index, name], rtol=rtol
            )
    assert programs[0].call is programs[1].call and programs[1].source == "memory"

    # a subset is padded like the whole dataset (shards and resumed jobs share the program)
    def shapes(subjects):
        built = batch.build_batches(
            dataset, COHORT_PARAMETERS, subjects=subjects, error_models=errors
        )
        return [np.shape(x)[1:] for x in jax.tree.leaves(built[0].problems)]

    assert shapes(SUBJECTS[:1]) == shapes(None)
    assert [batch.padded_size(n) for n in (1, 2, 3, 5, 7, 13, 30, 40)] == [
        1,
        2,
        3,
        6,
        8,
        16,
        32,
        48,
    ]
    with pytest.raises(ValueError, match="multiple of"):
        batch.lanes_per_call(replace(SETTINGS, width=4, chunk=3), (None, None))
    # default: one lane per device and call on CPU (traced without vmap), all lanes on a GPU
    cpu, gpu = SimpleNamespace(platform="cpu"), SimpleNamespace(platform="gpu")
    wide = batch.BatchSettings(width=32)
    assert batch.lanes_per_call(wide, (cpu,)) == 1
    assert batch.lanes_per_call(wide, (cpu, cpu)) == 2
    assert batch.lanes_per_call(wide, (gpu,)) == 32


def test_shards_and_merge_equal_the_whole(dataset, errors, reference, tmp_path):
    runs = []
    for i in range(2):
        out = tmp_path / f"shard{i}"
        batch.fit_batch(
            dataset,
            COHORT_PARAMETERS,
            out,
            settings=SETTINGS,
            error_models=errors,
            subjects=SUBJECTS,
            shard=(i, 2),
        )
        runs.append(out)
    assert set(batch.read_parts(runs[0])["subject"]) == set(SUBJECTS[0::2])
    summary = batch.merge(runs, tmp_path / "all")
    assert summary["subjects"] == len(SUBJECTS)
    merged = pd.read_csv(tmp_path / "all" / "parameters.csv")
    np.testing.assert_allclose(merged["estimate"], reference.parameters["estimate"], rtol=1e-10)
    for name in ("subjects.parquet", "parameters.parquet", "cohort_summary.csv"):
        assert (tmp_path / "all" / name).exists()
    # a shard merged twice, or a missing shard, is refused
    with pytest.raises(batch.RunDirectoryError, match="more than one part"):
        batch.merge([runs[0], runs[0]], tmp_path / "twice")
    with pytest.raises(batch.RunDirectoryError, match="not a batch run directory"):
        batch.merge([tmp_path / "nothing"], tmp_path / "x")
    # rerunning into a finished run directory without --resume is refused; with it, no work
    first_shard = functools.partial(
        batch.fit_batch,
        dataset,
        COHORT_PARAMETERS,
        runs[0],
        settings=SETTINGS,
        subjects=SUBJECTS,
        shard=(0, 2),
        error_models=errors,
    )
    with pytest.raises(batch.RunDirectoryError, match="--resume"):
        first_shard()
    again = first_shard(resume=True)
    assert again.summary["subjects_fitted_now"] == 0
    assert json.loads((runs[0] / "summary.json").read_text())["subjects"] == 2


def test_chi2_limit_and_implausible_fits():
    """The χ² quantile that sends a fit to another start (Wilson–Hilferty) is SciPy's 99.9 %
    quantile within 2 % (0.2 % from 30 degrees of freedom); a χ² above it, or not finite, is
    implausible; of two starts the lower finite loss is kept."""
    from scipy.stats import chi2

    from mgjax.batch._run import chi2_limit, implausible_fit, lower_loss

    dof = np.array([3, 10, 30, 100, 1000])
    np.testing.assert_allclose(chi2_limit(dof), chi2.ppf(0.999, dof), rtol=2e-2)
    np.testing.assert_allclose(chi2_limit(dof[2:]), chi2.ppf(0.999, dof[2:]), rtol=2e-3)
    # 25 observations, 2 free quantities: 23 degrees of freedom, limit ≈ 49.7
    flags = implausible_fit(np.array([20.0, 49.0, 51.0, np.nan, np.inf]), np.full(5, 25), 2)
    assert flags.tolist() == [False, False, True, True, True]
    # which start is kept: the lower loss, a non-finite loss counting as +inf
    assert lower_loss(1.0, 2.0) and not lower_loss(2.0, 1.0) and not lower_loss(1.0, 1.0)
    assert lower_loss(5.0, np.nan) and not lower_loss(np.nan, 5.0) and not lower_loss(np.inf, 5.0)


def test_restarts_keep_the_best_start(dataset, errors, reference, monkeypatch):
    """A fit judged implausible (here: every fit) gets a second, more damped start; the
    subject's iterations count both, and the kept fit is the better of the two starts, each
    run alone (two iterations each, so that they differ)."""
    from mgjax.batch import _run

    tiny = batch.BatchSettings(width=2, max_steps=2, round_steps=8)
    fit = functools.partial(
        batch.fit_batch, dataset, COHORT_PARAMETERS, error_models=errors, subjects=SUBJECTS[:2]
    )
    with monkeypatch.context() as patch:
        patch.setattr(_run, "implausible_fit", lambda chi2, n, n_free: True)
        both = fit(settings=tiny).subjects.set_index("subject")
    assert (both["starts"] == 2).all() and (both["iterations"] == 4).all(), both
    assert (both["status"] == "max_steps").all()
    first = fit(settings=replace(tiny, restarts=0)).subjects.set_index("subject")
    assert (first["starts"] == 1).all() and (first["iterations"] == 2).all()
    monkeypatch.setattr(
        _run, "restart_point", lambda initial, start, settings: (initial, settings.restart_step)
    )
    second = fit(settings=replace(tiny, restarts=0)).subjects.set_index("subject")
    assert not np.allclose(first["loss"], second["loss"])  # the damping changes the path
    np.testing.assert_allclose(both["loss"], np.minimum(first["loss"], second["loss"]), rtol=1e-12)
    # plausible fits are not restarted
    assert (reference.subjects["starts"] == 1).all()


@pytest.mark.slow
def test_worker_processes_equal_one_process(dataset, errors, reference, tmp_path):
    """fit_batch(workers=2): two spawned CPU processes share the subjects (each takes the next
    whenever a lane would idle), write their own parts and give the one-process tables; the
    run directory resumes with another number of workers (nothing is fitted twice)."""
    out = tmp_path / "run"
    fit = functools.partial(
        batch.fit_batch,
        dataset,
        COHORT_PARAMETERS,
        out,
        settings=SETTINGS,
        error_models=errors,
        subjects=SUBJECTS,
    )
    result = fit(workers=2)
    assert result.summary["workers"] == 2
    assert sum(result.summary["subjects_per_worker"]) == 4
    columns = ["subject", "converged", "iterations", "status", "group"]
    pd.testing.assert_frame_equal(result.subjects[columns], reference.subjects[columns])
    np.testing.assert_allclose(result.subjects["loss"], reference.subjects["loss"], rtol=1e-10)
    np.testing.assert_allclose(
        result.parameters["estimate"], reference.parameters["estimate"], rtol=1e-9
    )
    np.testing.assert_allclose(result.parameters["se"], reference.parameters["se"], rtol=1e-7)
    writers = {"-".join(p.name.split("-")[1:3]) for p in (out / "parts").glob("part-*.parquet")}
    assert writers <= {"s0of1-w0", "s0of1-w1"}  # who fits what depends on their timing
    assert sorted(batch.read_parts(out)["subject"]) == SUBJECTS  # each once
    saved = pd.read_csv(out / "parameters.csv")
    np.testing.assert_allclose(saved["estimate"], reference.parameters["estimate"], rtol=1e-9)
    resumed = fit(resume=True, workers=3)
    assert resumed.summary["subjects_resumed"] == 4 and resumed.summary["subjects_fitted_now"] == 0
    pd.testing.assert_frame_equal(resumed.subjects[columns], reference.subjects[columns])


def test_shared_claims_hand_out_each_subject_once():
    """Worker processes take a batch's subjects through one counter per batch, in order,
    each subject once, and hold at most an even share at once."""
    import multiprocessing as mp

    from mgjax.batch._workers import SharedClaims

    claims = SharedClaims(mp.get_context("spawn"), batches=2, workers=3)
    first, second = claims.claimer(0, 7), claims.claimer(1, 2)
    taken = [list(first(3)), list(second(5)), list(first(3)), list(first(3)), list(first(1))]
    assert taken == [[0, 1, 2], [0, 1], [3, 4, 5], [6], []]
    assert claims.share(7) == 3 and claims.share(1) == 1


def test_a_finer_split_in_the_run_directory_is_refused(tmp_path):
    """Resuming shard 0/1 where parts of shard 1/2 lie (a finer --shard, or the static worker
    split of an earlier version) is refused by name: those subjects would be fitted twice."""
    parts = tmp_path / "parts"
    parts.mkdir()
    pd.DataFrame(dict(subject=["s1"])).to_parquet(parts / "part-s1of2-000000.parquet")
    with pytest.raises(batch.RunDirectoryError, match="--shard 1/2"):
        batch._store.check_split(tmp_path, [(0, 1)], (0, 1))
    batch._store.check_split(tmp_path, [(0, 2)], (0, 2))  # another shard's parts: fine


def _unusable_base_model(group, covariates):
    raise ValueError("no base model for this subject")


@pytest.mark.slow
def test_a_failing_worker_is_reported(dataset, errors, tmp_path):
    """A worker's exception reaches the caller naming the worker and its shard."""
    with pytest.raises(
        RuntimeError, match=r"(?s)worker \d \(of 2 on shard 0/1\) failed.*no base model"
    ):
        batch.fit_batch(
            dataset,
            COHORT_PARAMETERS,
            tmp_path / "run",
            settings=SETTINGS,
            error_models=errors,
            subjects=SUBJECTS,
            base_model=_unusable_base_model,
            workers=2,
        )


def test_shard_arguments():
    assert batch.parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "a/b", "1-4", "-1/2"):
        with pytest.raises(ValueError, match="shard"):
            batch.parse_shard(bad)
    names = [f"s{i}" for i in range(10)]
    parts = [batch.shard_subjects(names[::-1], (i, 3)) for i in range(3)]
    assert sorted(sum(parts, [])) == names  # a partition, whatever the input order
    assert parts[0] == ["s0", "s3", "s6", "s9"]


def test_bundled_cohort_is_regenerable_and_valid(tmp_path):
    """The bundled cohort is what `mgjax synth --n 24 --seed 0` writes; a seed fixes it."""
    counts = {"healthy": 8, "t2dm": 8, "t2dm_hypomagnesemia": 8}
    cohort = synthesize(counts, seed=0)
    bundled = pd.read_csv(default_cohort_path() / "observations.csv")
    np.testing.assert_allclose(bundled["value"], cohort.observations["value"], rtol=1e-5)
    truth = pd.read_csv(default_cohort_path() / "truth.csv")
    np.testing.assert_allclose(truth["value"], cohort.truth["value"], rtol=1e-12)
    assert set(truth["parameter"]) == set(COHORT_PARAMETERS)
    cohort.write(tmp_path)
    dataset = mgjax.load_dataset(tmp_path)  # the documented format, validated
    assert dataset.subjects["group"].value_counts().to_dict() == counts
    # hypomagnesaemic subjects have low serum Mg²⁺, as their group's preset
    obs = dataset.observations
    mg = obs[obs["observable"] == "serum_mg"].set_index("subject")["value"]
    groups = dataset.subjects.set_index("subject")["group"]
    assert mg[groups == "t2dm_hypomagnesemia"].median() < 0.75 < mg[groups == "healthy"].median()
