"""`fit_batch`: a whole cohort, chunked, sharded, resumable, with a progress bar."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..data._dataset import Dataset
from ..fit._objective import ErrorModel
from ..model import MgT2DModel
from ..solve._solve import SolverOptions
from ._build import build_batches, default_base_model
from ._run import BatchSettings, run_batch
from ._store import RunStore, check_split, read_parts, shard_subjects, split_tables, write_tables


@dataclass
class BatchResult:
    """Per-subject table (subject, group, loss, converged, iterations, status; from the lane
    engine also starts, chi2, n_observations), long
    parameter table (subject, group, parameter, estimate, se, ci_low, ci_high, se_relative,
    unit, identifiable), and a summary (counts, timings)."""

    subjects: pd.DataFrame
    parameters: pd.DataFrame
    summary: dict


def _progress_bar():
    """A rich progress bar: subjects done / total, subjects per second, elapsed, ETA."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class SubjectsPerSecond(ProgressColumn):
        def render(self, task):
            speed = task.finished_speed or task.speed
            return Text(f"{speed:.2f} subjects/s" if speed else "… subjects/s")

    return Progress(
        TextColumn("fitting"),
        BarColumn(),
        MofNCompleteColumn(),
        SubjectsPerSecond(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )


def _prepare(
    dataset, free, out, shard, resume, subjects, error_models, priors, options, base_model
):
    """This shard's subjects, its run store, those already finished, those to fit, and their
    fit problems grouped by structure (shared by `fit_batch` and `fit_each`)."""
    everyone = sorted(dataset.observations["subject"].unique()) if subjects is None else subjects
    mine = shard_subjects(everyone, shard)
    store = RunStore(out, shard) if out is not None else None
    if out is not None and resume:
        check_split(Path(out), [shard], shard)
    finished = store.prepare(resume=resume, subjects=mine) if store is not None else set()
    todo = [s for s in mine if s not in finished]
    batches = (
        build_batches(
            dataset,
            free,
            subjects=todo,
            error_models=error_models,
            priors=priors,
            options=options,
            base_model=base_model,
        )
        if todo
        else []
    )
    return mine, store, finished, todo, batches


def _finish(out, store, shard, frames, timing) -> BatchResult:
    """The tables of the shard (written to `out` when there is one)."""
    if store is not None:
        wide = read_parts(out, shard=shard)
        summary = write_tables(out, wide, timing)
    else:
        wide = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        summary = timing
    subjects_table, parameters = split_tables(wide)
    return BatchResult(subjects_table, parameters, summary)


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
      (a module-level `base_model`).
    """
    if workers < 1:
        raise ValueError(f"workers = {workers}: need at least 1")
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
        from ._workers import fit_in_workers

        return fit_in_workers(workers, shard, out, progress, **common)
    return _fit_lanes(out=out, shard=shard, progress=progress, **common)


def _fit_lanes(
    dataset: Dataset,
    free: Sequence[str],
    out: str | Path | None,
    *,
    settings: BatchSettings,
    shard: tuple[int, int],
    resume: bool,
    error_models,
    priors,
    options,
    subjects,
    base_model,
    progress: bool = False,
    on_progress: Callable[[int], None] | None = None,
) -> BatchResult:
    """`fit_batch` in this process; `on_progress(subjects done now)` after every round."""
    t0 = time.perf_counter()
    mine, store, finished, todo, batches = _prepare(
        dataset, free, out, shard, resume, subjects, error_models, priors, options, base_model
    )
    t_built = time.perf_counter()
    frames: list[pd.DataFrame] = []
    bar = _progress_bar() if progress else None
    task = bar.add_task("fitting", total=len(mine), completed=len(finished)) if bar else None
    programs: list = []
    first_round: list[float] = []
    round_ends: list[float] = []
    offset = [0]

    def on_round(done: int, total: int) -> None:
        round_ends.append(time.perf_counter())
        if not first_round:
            first_round.append(time.perf_counter())
        if bar is not None:
            bar.update(task, completed=len(finished) + offset[0] + done)
        if on_progress is not None:
            on_progress(offset[0] + done)

    def on_finished(frame: pd.DataFrame) -> None:
        frames.append(frame)
        if store is not None:
            store.write(frame)

    if bar is not None:
        bar.start()
    try:
        for batch in batches:
            run_batch(
                batch,
                settings,
                on_finished=on_finished,
                on_round=on_round,
                on_compiled=programs.append,
            )
            offset[0] += len(batch)
    finally:
        if bar is not None:
            bar.stop()
    t_done = time.perf_counter()
    rounds = np.diff([t_built, *round_ends]) if round_ends else np.array([])
    # the first round of each structure includes its compilation; later rounds do not
    typical = float(np.median(rounds[1:])) if len(rounds) > 1 else 0.0
    timing = dict(
        seconds_compile=float(sum(p.seconds for p in programs)),
        programs=[p.source for p in programs],
        rounds=len(rounds),
        seconds_per_round=typical,
        seconds_compile_estimate=max(float(rounds[0]) - typical, 0.0) if len(rounds) else None,
        seconds_total=t_done - t0,
        seconds_building=t_built - t0,
        seconds_first_round=(first_round[0] - t_built) if first_round else None,
        subjects_fitted_now=len(todo),
        subjects_resumed=len(finished),
        structures=len(batches),
        width=settings.width,
        shard=list(shard),
    )
    return _finish(out, store, shard, frames, timing)


def fit_each(
    dataset: Dataset,
    free: Sequence[str],
    out: str | Path | None = None,
    *,
    method: str = "lbfgs",
    n_starts: int = 1,
    seed: int = 0,
    spread: float | None = None,
    max_steps: int = 500,
    rtol: float = 1e-8,
    atol: float = 1e-8,
    learning_rate: float = 0.05,
    schedule: str = "cosine",
    shard: tuple[int, int] = (0, 1),
    resume: bool = False,
    error_models: Mapping[str, ErrorModel] | None = None,
    priors: Mapping[str, tuple[float, float]] | None = None,
    options: SolverOptions | None = None,
    subjects: Sequence[str] | None = None,
    base_model: Callable[[str | None, Mapping[str, float]], MgT2DModel] = default_base_model,
    progress: bool = False,
) -> BatchResult:
    """Fit subjects one after another with `mgjax.fit.fit` — any optimiser (`method`), with a
    vmapped multistart per subject (`n_starts`) — into the same run directory, tables and
    resume logic as `fit_batch`; the multistart table of every subject goes to
    `multistart.csv`. One compilation per problem structure (the first subject pays it).

    Use `fit_batch` for Levenberg–Marquardt from one start: it is the fast path."""
    import json

    import jax
    import jax.numpy as jnp

    from ..fit import fit

    if schedule != "cosine" and method == "adam":
        raise ValueError("Adam runs with a cosine-decayed learning rate; schedule='cosine'")
    t0 = time.perf_counter()
    mine, store, finished, todo, batches = _prepare(
        dataset, free, out, shard, resume, subjects, error_models, priors, options, base_model
    )
    bar = _progress_bar() if progress else None
    task = bar.add_task("fitting", total=len(mine), completed=len(finished)) if bar else None
    frames, seconds, first = [], [], []
    if bar is not None:
        bar.start()
    try:
        for batch in batches:
            for i, subject in enumerate(batch.subjects):
                problem = jax.tree.map(jnp.asarray, batch.one(i))
                ts = time.perf_counter()
                result = fit(
                    problem,
                    method=method,
                    n_starts=n_starts,
                    seed=seed,
                    spread=spread,
                    max_steps=max_steps,
                    rtol=rtol,
                    atol=atol,
                    learning_rate=learning_rate,
                    subject=subject,
                )
                (first if i == 0 else seconds).append(time.perf_counter() - ts)
                history = [
                    [k, float(h)]
                    for k, h in enumerate(np.asarray(result.history))
                    if np.isfinite(h)
                ]
                starts = None
                if result.multistart is not None:
                    table = result.multistart.rename(columns={"loss": "nll"})
                    starts = json.dumps(
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
                log_scale = np.asarray(problem.log_scale())
                est, se = np.asarray(result.estimates), np.asarray(result.se)
                se_rel = np.where(log_scale, se / np.where(log_scale, np.abs(est), 1.0), se)
                row = dict(
                    subject=subject,
                    group=batch.groups[i],
                    loss=float(result.loss),
                    converged=bool(result.converged and result.solve_success),
                    iterations=int(result.iterations),
                    status=result.status,
                    loss_trace=json.dumps(history),
                    multistart=starts,
                )
                for k, name in enumerate(result.names):
                    row[f"estimate[{name}]"] = float(est[k])
                    row[f"se[{name}]"] = float(se[k])
                    row[f"se_relative[{name}]"] = float(se_rel[k])
                    row[f"ci_low[{name}]"] = float(result.ci_low[k])
                    row[f"ci_high[{name}]"] = float(result.ci_high[k])
                frame = pd.DataFrame([row])
                frames.append(frame)
                if store is not None:
                    store.write(frame)
                if bar is not None:
                    bar.advance(task)
    finally:
        if bar is not None:
            bar.stop()
    typical = float(np.median(seconds)) if seconds else 0.0
    timing = dict(
        seconds_compile=float(sum(max(f - typical, 0.0) for f in first)) if first else 0.0,
        programs=["uncached"] * len(first),
        seconds_per_subject=typical,
        seconds_total=time.perf_counter() - t0,
        subjects_fitted_now=len(todo),
        subjects_resumed=len(finished),
        structures=len(batches),
        method=method,
        starts=n_starts,
        shard=list(shard),
    )
    return _finish(out, store, shard, frames, timing)
