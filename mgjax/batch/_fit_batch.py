"""`fit_batch`: a whole cohort, chunked, sharded, resumable, with a progress bar."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ..data._dataset import Dataset
from ..fit import FitResult, fit
from ..fit._objective import ErrorModel
from ..fit._optimise import ATOL, LEARNING_RATE, RTOL, AbstractOptimiser, make_optimiser
from ..model import MgT2DModel
from ..solve._solve import SolverOptions
from ._build import default_base_model
from ._lanes import BatchResult, finish_shard, fit_lanes, prepare_shard, progress_bar
from ._run import BatchSettings
from ._workers import fit_in_workers


def fit_batch(
    dataset: Dataset,
    free: Sequence[str],
    out: str | Path | None = None,
    *,
    settings: BatchSettings = BatchSettings(),
    shard: tuple[int, int] = (0, 1),
    resume: bool = False,
    error_models: Mapping[str, ErrorModel] | None = None,
    priors: Mapping[str, tuple[float, float]] | None = None,
    options: SolverOptions | None = None,
    subjects: Sequence[str] | None = None,
    base_model: Callable[[str | None, Mapping[str, float]], MgT2DModel] = default_base_model,
    progress: bool = False,
    workers: int = 1,
    on_progress: Callable[[int], None] | None = None,
) -> BatchResult:
    """Fit the `free` parameters of every subject of `dataset` (or of `subjects`), vmapped.

    - `out`: run directory; finished subjects are written there after every round (atomic
      Parquet parts), and the tables at the end (`subjects.csv/.parquet`,
      `parameters.csv/.parquet`, `cohort_summary.csv`, `summary.json`);
    - `shard=(i, n)`: fit only shard i of n of the sorted subjects (scheduler job arrays;
      combine with `mgjax.batch.merge`);
    - `resume`: skip the subjects `out` already holds;
    - `base_model(group, covariates)`: each subject's fixed parameters and starting point
      (default: the preset named by its group, with its weight and height);
    - `settings`: lanes (`width`, the chunk of subjects in flight), rounds, iteration budget,
      devices;
    - `workers`: CPU processes, each pinned to one core with its own lane pool on every
      `workers`-th subject (the round program uses one core; `mgjax.batch._workers`). The
      default 1 runs in this process, on `settings.devices`. Arguments must be picklable
      (a module-level `base_model`);
    - `on_progress(subjects finished in this run so far)`: called after every round (its
      subjects already written to `out`); with `workers` = 1 only.
    """
    if workers < 1:
        raise ValueError(f"workers = {workers}: need at least 1")
    if on_progress is not None and workers > 1:
        raise ValueError("on_progress needs workers = 1 (the workers report to their own bar)")
    common = dict(
        dataset=dataset,
        free=free,
        settings=settings,
        resume=resume,
        error_models=error_models,
        priors=priors,
        options=options,
        subjects=subjects,
        base_model=base_model,
    )
    if workers > 1:
        return fit_in_workers(workers, shard, out, progress, **common)
    return fit_lanes(out=out, shard=shard, progress=progress, on_progress=on_progress, **common)


def _multistart_json(result: FitResult) -> str | None:
    """The subject's multistart table as JSON (start, nll, converged, iterations), or None
    for a single start."""
    if result.multistart is None:
        return None
    table = result.multistart.rename(columns={"loss": "nll"})
    return json.dumps(
        [
            dict(
                start=int(r.start),
                nll=float(r.nll),
                converged=bool(r.converged),
                iterations=int(r.iterations),
            )
            for r in table.itertuples()
        ]
    )


def _subject_row(subject: str, group, result: FitResult, log_scale: np.ndarray) -> dict:
    """One subject's wide row (as `run_batch`'s) from its `FitResult`."""
    history = [[k, float(h)] for k, h in enumerate(np.asarray(result.history)) if np.isfinite(h)]
    est, se = np.asarray(result.estimates), np.asarray(result.se)
    se_rel = np.where(log_scale, se / np.where(log_scale, np.abs(est), 1.0), se)
    row = dict(
        subject=subject,
        group=group,
        loss=float(result.loss),
        converged=bool(result.converged and result.solve_success),
        iterations=int(result.iterations),
        status=result.status,
        loss_trace=json.dumps(history),
        multistart=_multistart_json(result),
    )
    for k, name in enumerate(result.names):
        row[f"estimate[{name}]"] = float(est[k])
        row[f"se[{name}]"] = float(se[k])
        row[f"se_relative[{name}]"] = float(se_rel[k])
        row[f"ci_low[{name}]"] = float(result.ci_low[k])
        row[f"ci_high[{name}]"] = float(result.ci_high[k])
    return row


def _each_timing(first: list[float], seconds: list[float], t0: float) -> dict:
    """Compile and per-subject seconds of `fit_each` (the first subject of each structure
    pays its compilation)."""
    typical = float(np.median(seconds)) if seconds else 0.0
    return dict(
        seconds_compile=float(sum(max(f - typical, 0.0) for f in first)) if first else 0.0,
        programs=["uncached"] * len(first),
        seconds_per_subject=typical,
        seconds_total=time.perf_counter() - t0,
    )


def fit_each(
    dataset: Dataset,
    free: Sequence[str],
    out: str | Path | None = None,
    *,
    method: str | AbstractOptimiser = "lbfgs",
    n_starts: int = 1,
    seed: int = 0,
    spread: float | None = None,
    max_steps: int = 500,
    rtol: float = RTOL,
    atol: float = ATOL,
    learning_rate: float = LEARNING_RATE,
    schedule: str = "cosine",
    shard: tuple[int, int] = (0, 1),
    resume: bool = False,
    error_models: Mapping[str, ErrorModel] | None = None,
    priors: Mapping[str, tuple[float, float]] | None = None,
    options: SolverOptions | None = None,
    subjects: Sequence[str] | None = None,
    base_model: Callable[[str | None, Mapping[str, float]], MgT2DModel] = default_base_model,
    progress: bool = False,
    on_progress: Callable[[int], None] | None = None,
) -> BatchResult:
    """Fit subjects one after another with `mgjax.fit.fit` — any optimiser (`method`: a name
    with these settings, or an `AbstractOptimiser`), with a
    vmapped multistart per subject (`n_starts`) — into the same run directory, tables and
    resume logic as `fit_batch`; the multistart table of every subject goes to
    `multistart.csv`. One compilation per problem structure (the first subject pays it).
    `on_progress(subjects finished in this run so far)` after every subject.

    Use `fit_batch` for Levenberg–Marquardt from one start: it is the fast path."""

    if schedule != "cosine" and method == "adam":
        raise ValueError("Adam runs with a cosine-decayed learning rate; schedule='cosine'")
    t0 = time.perf_counter()
    optimiser = make_optimiser(
        method, max_steps=max_steps, rtol=rtol, atol=atol, learning_rate=learning_rate
    )
    mine, store, finished, todo, batches = prepare_shard(
        dataset, free, out, shard, resume, subjects, error_models, priors, options, base_model
    )
    bar = progress_bar() if progress else None
    task = bar.add_task("fitting", total=len(mine), completed=len(finished)) if bar else None
    frames, seconds, first = [], [], []
    if bar is not None:
        bar.start()
    try:
        for batch in batches:
            for i, subject in enumerate(batch.subjects):
                problem = jax.tree.map(jnp.asarray, batch.one(i))
                ts = time.perf_counter()
                result = fit(problem, method=optimiser, n_starts=n_starts, seed=seed, spread=spread)
                (first if i == 0 else seconds).append(time.perf_counter() - ts)
                row = _subject_row(
                    subject, batch.groups[i], result, np.asarray(problem.log_scale())
                )
                frame = pd.DataFrame([row])
                frames.append(frame)
                if store is not None:
                    store.write(frame)
                if bar is not None:
                    bar.advance(task)
                if on_progress is not None:
                    on_progress(len(frames))
    finally:
        if bar is not None:
            bar.stop()
    timing = _each_timing(first, seconds, t0)
    timing.update(
        subjects_fitted_now=len(todo),
        subjects_resumed=len(finished),
        structures=len(batches),
        method=optimiser.name,
        starts=n_starts,
        shard=list(shard),
    )
    return finish_shard(out, store, shard, frames, timing)
