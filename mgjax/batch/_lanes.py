"""The single-process driver of `fit_batch`: this shard's subjects through the lane pool
(`run_batch`), written to the run store after every round, with a progress bar and timings.
Used by `fit_batch` (one process) and by each worker process (`mgjax.batch._workers`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from ..data._dataset import Dataset
from ._build import build_batches
from ._run import BatchSettings, _devices, lanes_per_call, run_batch
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


def progress_bar():
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


def open_shard(dataset, out, shard, resume, subjects):
    """This shard's subjects, its run store (the run directory prepared), those already
    finished and those to fit."""
    everyone = sorted(dataset.observations["subject"].unique()) if subjects is None else subjects
    mine = shard_subjects(everyone, shard)
    store = RunStore(out, shard) if out is not None else None
    if out is not None and resume:
        check_split(Path(out), [shard], shard)
    finished = store.prepare(resume=resume, subjects=mine) if store is not None else set()
    return mine, store, finished, [s for s in mine if s not in finished]


def prepare_shard(
    dataset,
    free,
    out,
    shard,
    resume,
    subjects,
    error_models,
    priors,
    options,
    base_model,
    shared_build=None,
):
    """`open_shard`, and the fit problems of the subjects to fit grouped by structure
    (shared by `fit_batch` and `fit_each`); with `shared_build(subjects, build)` (a worker
    process's `SharedBuild.batches`), built together with the other workers."""
    mine, store, finished, todo = open_shard(dataset, out, shard, resume, subjects)

    def build(some):
        return build_batches(
            dataset,
            free,
            subjects=some,
            error_models=error_models,
            priors=priors,
            options=options,
            base_model=base_model,
        )

    if not todo:
        batches = []
    elif shared_build is not None:
        batches = shared_build(todo, build)
    else:
        batches = build(todo)
    return mine, store, finished, todo, batches


def finish_shard(out, store, shard, frames, timing) -> BatchResult:
    """The tables of the shard (written to `out` when there is one)."""
    if store is not None:
        wide = read_parts(out, shard=shard)
        summary = write_tables(out, wide, timing)
    else:
        wide = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        summary = timing
        if wide.empty:  # nothing fitted here (a worker whose partners took every subject)
            return BatchResult(pd.DataFrame(), pd.DataFrame(), summary)
    subjects_table, parameters = split_tables(wide)
    return BatchResult(subjects_table, parameters, summary)


@dataclass
class _Rounds:
    """What the lane pool reports while it runs: finished frames (also written to the store),
    compiled programs, the end time of every round, and progress (bar and callback)."""

    store: RunStore | None
    resumed: int
    bar: object = None
    task: object = None
    on_progress: Callable[[int], None] | None = None
    frames: list[pd.DataFrame] = field(default_factory=list)
    programs: list = field(default_factory=list)
    ends: list[float] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    offset: int = 0  # subjects of the structures already run

    def on_round(self, done: int, total: int) -> None:
        self.ends.append(time.perf_counter())
        if self.bar is not None:
            self.bar.update(self.task, completed=self.resumed + self.offset + done)
        if self.on_progress is not None:
            self.on_progress(self.offset + done)

    def on_finished(self, frame: pd.DataFrame) -> None:
        self.frames.append(frame)
        self.finished.extend(frame["subject"])
        if self.store is not None:
            self.store.write(frame)


def _lane_timing(rounds: _Rounds, t0: float, t_built: float, t_done: float) -> dict:
    """Compile, round and total seconds of a shard's run (the first round of each structure
    includes its compilation; later rounds do not)."""
    durations = np.diff([t_built, *rounds.ends]) if rounds.ends else np.array([])
    typical = float(np.median(durations[1:])) if len(durations) > 1 else 0.0
    return dict(
        seconds_compile=float(sum(p.seconds for p in rounds.programs)),
        programs=[p.source for p in rounds.programs],
        rounds=len(durations),
        seconds_per_round=typical,
        seconds_compile_estimate=(
            max(float(durations[0]) - typical, 0.0) if len(durations) else None
        ),
        seconds_total=t_done - t0,
        seconds_building=t_built - t0,
        seconds_first_round=(rounds.ends[0] - t_built) if rounds.ends else None,
    )


def fit_lanes(
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
    worker: int | None = None,
    claims=None,
    shared_build=None,
) -> BatchResult:
    """`fit_batch` in this process; `on_progress(subjects done now)` after every round. In
    worker process `worker`, `subjects` are the shard's subjects still to fit, shared with
    the other workers through `claims` (`mgjax.batch._workers.SharedClaims`), their fit
    problems built together through `shared_build` (`mgjax.batch._workers.SharedBuild`); the
    parent writes the tables."""
    t0 = time.perf_counter()
    problems = (subjects, error_models, priors, options, base_model)
    if worker is None:
        mine, store, finished, todo, batches = prepare_shard(
            dataset, free, out, shard, resume, *problems
        )
    else:  # the parent prepared the run directory; `subjects` are those still to fit
        mine, _, finished, todo, batches = prepare_shard(
            dataset,
            free,
            None,
            (0, 1),
            False,
            *problems,
            shared_build=None if shared_build is None else partial(shared_build.batches, worker),
        )
        store = RunStore(out, shard, worker=worker) if out is not None else None
    t_built = time.perf_counter()
    rounds = _Rounds(store, len(finished), on_progress=on_progress)
    if progress:
        rounds.bar = progress_bar()
        rounds.task = rounds.bar.add_task("fitting", total=len(mine), completed=len(finished))
        rounds.bar.start()
    try:
        for b, batch in enumerate(batches):
            run_batch(
                batch,
                settings,
                on_finished=rounds.on_finished,
                on_round=rounds.on_round,
                on_compiled=rounds.programs.append,
                claim=None if claims is None else claims.claimer(b, len(batch)),
                share=None if claims is None else claims.share(len(batch)),
            )
            rounds.offset = len(rounds.finished)
    finally:
        if rounds.bar is not None:
            rounds.bar.stop()
    timing = _lane_timing(rounds, t0, t_built, time.perf_counter())
    if worker is not None:  # the parent assembles the tables
        out = store = None
    timing.update(
        subjects_fitted_now=len(rounds.finished),
        subjects_resumed=len(finished),
        structures=len(batches),
        width=settings.width,
        chunk=lanes_per_call(settings, _devices(settings)),
        shard=list(shard),
    )
    return finish_shard(out, store, shard, rounds.frames, timing)
