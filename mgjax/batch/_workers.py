"""CPU worker processes for `fit_batch(..., workers=k)`.

The round program of the lane pool runs on one CPU core: XLA's CPU backend does not spread a
while-loop of small vmapped operations over cores, and several forced host devices in one
process do not help either (see `docs/batch.md`). On a multi-core CPU the subjects are
therefore fitted by `k` processes, each pinned to its own core and running its own lane pool.
They share the shard's subjects dynamically: a worker takes the next unfitted subject
whenever one of its lanes would idle (`SharedClaims`), so no core idles while another still
has subjects queued, and a slow subject delays only its own lane. Each worker writes its
own atomic parts (named by the shard and its number) into the run directory, so `--resume`
picks up where the job stopped, with any number of workers. The parent prepares the run
directory, shows one progress bar and assembles one set of tables.

Workers are spawned (not forked: JAX is multithreaded) and run JAX on the CPU only.
"""

from __future__ import annotations

import os
import pickle
import queue as queue_module
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pandas as pd

from ._lanes import BatchResult, fit_lanes, open_shard, progress_bar
from ._store import read_parts, shard_subjects, split_tables, write_tables

#: Seconds between checks that every worker is still alive.
POLL_SECONDS = 1.0
#: Polls after a worker's exit before its missing result counts as a failure.
EXIT_GRACE_POLLS = 3


class SharedClaims:
    """The subjects the workers have taken, per batch of one structure: a counter in shared
    memory for each batch (the workers build identical batches from the same subject list).
    `claimer(b, n)(k)` takes up to k more of batch b's n subjects, in order; a worker holds
    at most `share(n)` of them at once (its even share: the first to start does not take a
    small cohort whole)."""

    def __init__(self, context, batches: int, workers: int):
        self.taken = context.Array("q", max(1, batches))  # with a lock
        self.workers = workers

    def share(self, n: int) -> int:
        return max(1, -(-n // self.workers))

    def claimer(self, b: int, n: int) -> Callable[[int], range]:
        def claim(k: int) -> range:
            with self.taken.get_lock():
                start = self.taken[b]
                stop = min(start + max(k, 0), n)
                self.taken[b] = stop
            return range(start, stop)

        return claim


class SharedBuild:
    """The workers build the shard's fit problems together: worker k builds every
    `workers`-th subject from its k-th, writes them to `folder`, waits for the others' parts
    and merges all into the batches one process would have built (`merge_batches`: the same
    structures, subjects and order), so each worker builds 1/`workers` of the cohort
    instead of all of it (~15 ms per subject on one core)."""

    def __init__(self, folder: Path, workers: int):
        self.folder = Path(folder)
        self.workers = workers

    def _path(self, k: int) -> Path:
        return self.folder / f"part-{k}.pkl"

    def batches(self, worker: int, subjects: list[str], build: Callable) -> list:
        from ._build import merge_batches

        share = subjects[worker :: self.workers]
        mine = build(share) if share else []
        path = self._path(worker)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(pickle.dumps(mine))
        os.replace(tmp, path)  # whole or absent
        parent = os.getppid()
        parts = [mine]
        for k in range(self.workers):
            if k == worker:
                continue
            while not self._path(k).exists():  # a failed worker: the parent stops everyone
                if os.getppid() != parent:
                    os._exit(1)
                time.sleep(BUILD_POLL_SECONDS)
            parts.append(pickle.loads(self._path(k).read_bytes()))
        return merge_batches(parts, subjects)


#: Seconds between a worker's checks for the other workers' parts of the build.
BUILD_POLL_SECONDS = 0.02


def _cores(workers: int) -> list[set[int] | None]:
    """The CPU core each worker is pinned to (None where the OS offers no affinity or there
    are fewer cores than workers)."""
    if not hasattr(os, "sched_getaffinity"):
        return [None] * workers
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < workers:
        return [None] * workers
    return [{cores[k]} for k in range(workers)]


def _work(k: int, cores, cache_dir, messages, kwargs) -> None:
    """One worker: pin to its core, use the parent's compilation cache, fit its shard, send
    progress and its result; stop after the round in which it finds its parent gone."""
    try:
        if cores is not None:
            os.sched_setaffinity(0, cores)
        if cache_dir:
            from ..runtime._compilation_cache import enable_compilation_cache

            enable_compilation_cache(Path(cache_dir))
        parent = os.getppid()

        def on_progress(done: int) -> None:
            if os.getppid() != parent:  # the parent was killed: stop; the parts are kept
                os._exit(1)
            messages.put(("round", k, done))

        result = fit_lanes(**kwargs, on_progress=on_progress)
        messages.put(("done", k, result))
    except BaseException:  # noqa: BLE001 — reported to the parent, which raises
        messages.put(("error", k, traceback.format_exc()))


def fit_in_workers(workers: int, shard: tuple[int, int], out, progress: bool, **kwargs):
    """`fit_batch` over `workers` spawned CPU processes (arguments as `fit_batch`'s)."""
    import multiprocessing as mp

    import jax

    settings = kwargs.pop("settings")
    everyone = kwargs.get("subjects")
    if everyone is None:
        everyone = kwargs["dataset"].observations["subject"].unique()
    workers = max(1, min(workers, len(shard_subjects(list(everyone), shard))))
    if workers == 1:  # never a worker without subjects
        return fit_lanes(out=out, shard=shard, progress=progress, settings=settings, **kwargs)
    t0 = time.perf_counter()
    out = Path(out) if out is not None else None
    mine, _, finished, todo = open_shard(
        kwargs["dataset"], out, shard, bool(kwargs.get("resume")), kwargs.get("subjects")
    )
    workers = max(1, min(workers, len(todo)))
    settings = replace(settings, devices=None)  # each worker: its own CPU device
    cache_dir = jax.config.jax_compilation_cache_dir
    context = mp.get_context("spawn")
    claims = SharedClaims(context, len(todo), workers)
    build_folder = Path(tempfile.mkdtemp(prefix="mgjax-build-"))
    shared_build = SharedBuild(build_folder, workers)
    messages = context.Queue()
    saved_platforms = os.environ.get("JAX_PLATFORMS")
    os.environ["JAX_PLATFORMS"] = "cpu"  # inherited by the spawned workers
    processes = []
    try:
        for k, cores in enumerate(_cores(workers) if todo else []):
            job = dict(
                kwargs,
                subjects=todo,
                resume=False,
                settings=settings,
                shard=shard,
                out=out,
                worker=k,
                claims=claims,
                shared_build=shared_build,
            )
            process = context.Process(
                target=_work, args=(k, cores, cache_dir, messages, job), daemon=True
            )
            try:
                process.start()
            except (AttributeError, TypeError, pickle.PicklingError) as error:
                for started in processes:
                    started.terminate()
                shutil.rmtree(build_folder, ignore_errors=True)
                raise ValueError(
                    f"workers = {workers}: the arguments must be picklable to reach the worker "
                    f"processes (a module-level base_model, no lambdas): {error}"
                ) from None
            processes.append(process)
    finally:
        if saved_platforms is None:
            os.environ.pop("JAX_PLATFORMS", None)
        else:
            os.environ["JAX_PLATFORMS"] = saved_platforms
    bar = progress_bar() if progress else None
    task = bar.add_task("fitting", total=len(mine), completed=len(finished)) if bar else None
    done = [0] * workers
    silent = [0] * workers
    results: dict[int, BatchResult] = {}
    failure = None
    if bar is not None:
        bar.start()
    try:
        while len(results) < len(processes) and failure is None:
            try:
                kind, k, payload = messages.get(timeout=POLL_SECONDS)
            except queue_module.Empty:
                for k, process in enumerate(processes):
                    # an exited worker's last message may still be in the pipe: wait a few polls
                    if k not in results and process.exitcode is not None:
                        silent[k] += 1
                        if silent[k] > EXIT_GRACE_POLLS:
                            failure = (
                                f"worker {k} (of {workers} on shard {shard[0]}/{shard[1]}) "
                                f"stopped with exit code {process.exitcode} before finishing"
                            )
                continue
            if kind == "round":
                done[k] = payload
                if bar is not None:
                    bar.update(task, completed=len(finished) + sum(done))
            elif kind == "done":
                results[k] = payload
            else:
                failure = (
                    f"worker {k} (of {workers} on shard {shard[0]}/{shard[1]}) failed:\n{payload}"
                )
    finally:
        if bar is not None:
            bar.stop()
        for process in processes:
            if len(results) < len(processes) and process.is_alive():  # a failure or interrupt
                process.terminate()
            process.join()
        shutil.rmtree(build_folder, ignore_errors=True)
    if failure is not None:
        kept = f"; finished subjects are kept in {out} (rerun with --resume)" if out else ""
        raise RuntimeError(failure + kept)
    ordered = [results[k] for k in range(len(processes))]
    return _combine(ordered, shard, out, workers, len(finished), t0)


def _combine(results, shard, out, workers, resumed, t0):
    """One result from the workers' results (and the tables in `out`)."""

    summaries = [r.summary for r in results]

    def total(key):
        return sum((s.get(key) or 0) for s in summaries)

    def longest(key):
        return max((s.get(key) or 0.0) for s in summaries) if summaries else 0.0

    timing = dict(
        seconds_compile=longest("seconds_compile"),
        programs=[p for s in summaries for p in s.get("programs", [])],
        rounds=total("rounds"),
        rounds_per_worker=[s.get("rounds") for s in summaries],
        seconds_per_worker=[s.get("seconds_total") for s in summaries],
        subjects_per_worker=[s.get("subjects_fitted_now") for s in summaries],
        seconds_per_round=longest("seconds_per_round"),
        seconds_compile_estimate=longest("seconds_compile_estimate"),
        seconds_total=time.perf_counter() - t0,
        seconds_building=longest("seconds_building"),
        seconds_first_round=longest("seconds_first_round"),
        subjects_fitted_now=total("subjects_fitted_now"),
        subjects_resumed=resumed,
        structures=max((s.get("structures", 0) for s in summaries), default=0),
        width=summaries[0].get("width") if summaries else None,
        workers=workers,
        shard=list(shard),
    )
    if out is not None:
        wide = read_parts(out, shard=shard)
        summary = write_tables(out, wide, timing)
        subjects, parameters = split_tables(wide)
        return BatchResult(subjects, parameters, summary)
    frames = [r for r in results if len(r.subjects)]
    subjects = pd.concat([r.subjects for r in frames], ignore_index=True)
    parameters = pd.concat([r.parameters for r in frames], ignore_index=True)
    subjects = subjects.sort_values("subject", kind="stable").reset_index(drop=True)
    parameters = parameters.sort_values(["subject", "parameter"], kind="stable")
    return BatchResult(subjects, parameters.reset_index(drop=True), timing)
