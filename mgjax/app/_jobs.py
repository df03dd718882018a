"""The jobs behind the command line: a validated `RunConfig` plus paths → files.

Each job writes one run directory (`_run_dir`): the resolved config (`config.yaml`),
`environment.json` (package and JAX versions, backend, devices), `run.log`, its tables and, for
fits, plots and `report.html`. Nothing is overwritten without `force`.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ..batch import BatchResult, BatchSettings, fit_batch, fit_each, parse_shard, shard_subjects
from ..batch._store import PartsTally
from ..data._dataset import Dataset, DatasetError
from ..data._records import insulin_infusion_record
from ..data._units import MODEL_UNITS, from_model_units
from ..model import OBSERVABLE_UNITS, MgT2DModel, is_interval, sampling_times, source_observable
from ..model._parameters import set_parameters
from ..model._presets import preset
from ..protocols import (
    IVGTT,
    OGTT,
    HyperglycemicClamp,
    HyperinsulinemicClamp,
    OralMagnesiumTrial,
    fasting,
)
from ..solve._simulate import observed_values, simulate
from ..synth._cohort import _REPORT_UNITS, synthesize
from ._config import RunConfig, apply_override, grid_points, to_yaml, validate
from ._html import pyplot, save_figure
from ._report import precompile_report, write_report
from ._resolve import (
    base_model_for,
    bundled_cohort,
    error_models_for,
    load_data,
    priors_for,
    solver_options,
)
from ._run_dir import (
    FILE_ONLY,
    JobError,
    check_fingerprint,
    fingerprint,
    local_devices,
    prepare_run_dir,
    remove_unfinished,
    start_log,
    write_fingerprint,
    write_run_header,
)

# --- fit ------------------------------------------------------------------------------------------

#: How the run log names each way a compiled program was obtained.
PROGRAM_SOURCES = {
    "stored": "program read back from the cache",
    "traced": "traced and stored for the next run",
    "uncached": "compiled, not stored",
    "memory": "compiled earlier in this process",
}


def fit_job(
    cfg: RunConfig,
    out: Path,
    *,
    data: Path | None = None,
    shard: tuple[int, int] | None = None,
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
    report: bool | None = None,
    shared_directory: bool = False,
) -> dict:
    """Fit every subject of the dataset; write the run directory and its report. Returns the
    summary (also `summary.json`). `shared_directory`: several processes of one
    `jax.distributed` job write into `out` (each its own parts; process 0 the header).

    The config, the data and, with `--resume`, the run directory's fingerprint (same settings
    and data) are checked before anything is written; a run that fails before finishing a
    subject removes the directory it created, so the same command works again."""
    cfg, shard = _resolve_fit(cfg, data, shard)
    options = solver_options(cfg, cfg.optimiser.name)  # config errors first, then the data's
    priors = priors_for(cfg)
    dataset = _load_fit_data(cfg)
    observables = sorted(dataset.observations["observable"].unique())
    common = dict(
        shard=shard,
        resume=resume,
        error_models=error_models_for(cfg, observables),
        priors=priors,
        options=options,
        base_model=base_model_for(cfg),
    )
    devices = _devices(cfg)
    stamp = fingerprint(cfg)
    out = Path(out)
    if resume or shared_directory:
        check_fingerprint(out, stamp)
    created = not out.exists()
    out = prepare_run_dir(
        out, force=force and not shared_directory, resume=resume or shared_directory
    )
    try:
        if not shared_directory or shard[0] == 0:
            write_run_header(out, cfg)
            write_fingerprint(out, stamp)
        return _fit_into(out, cfg, dataset, devices, common, progress, report)
    except BaseException:
        if created and not shared_directory:
            remove_unfinished(out)
        raise


def _fit_into(
    out: Path,
    cfg: RunConfig,
    dataset: Dataset,
    devices: list,
    common: dict,
    progress: bool,
    report: bool | None,
) -> dict:
    """`fit_job` once its run directory is prepared (`common`: the engines' shared
    arguments)."""
    log = start_log(out)
    resuming = ", resume" if common["resume"] else ""
    log.info("fit: data %s → %s (shard %d/%d%s)", cfg.data.path, out, *common["shard"], resuming)
    unknown_em = sorted(set(cfg.fit.error_model) - set(dataset.observations["observable"]))
    if unknown_em:
        log.warning("fit.error_model lists %s, which the data do not observe", unknown_em)
    reporting = report if report is not None else cfg.report.enabled
    ahead = ReportAhead(cfg, dataset, log) if reporting else None
    t0 = time.perf_counter()
    try:
        engine, result = _run_fit(cfg, dataset, out, devices, common, log, progress, ahead)
    except Exception:  # let a compile in flight finish: a thread inside XLA at exit can crash
        if ahead is not None:
            ahead.join()
        raise
    _log_fit(log, engine, result.summary, t0)
    if reporting:
        ahead.join()
        _report_fit(out, cfg, dataset, log)
    return result.summary


class ReportAhead:
    """The report's fitted-curves program compiled in a thread (`precompile_report`) once the
    fit's own program is compiled and its rounds run, on one core: the other core compiles
    (started earlier, the two traces contend for the interpreter and the fit's compile slows
    as much as the report gains). Single-process jobs only; a failure is logged and the
    report then compiles the program itself."""

    def __init__(self, cfg: RunConfig, dataset: Dataset, log: logging.Logger):
        self.cfg, self.dataset, self.log = cfg, dataset, log
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        if self.thread is not None or jax.process_count() > 1:
            return
        self.thread = threading.Thread(target=self._work, name="mgjax-report", daemon=True)
        self.thread.start()

    def join(self) -> None:
        if self.thread is not None:
            self.thread.join()

    def _work(self) -> None:
        t = time.perf_counter()
        try:
            precompile_report(self.cfg, self.dataset)
            self.log.info("report program ready (%.1f s, beside the fit)", time.perf_counter() - t)
        except Exception as e:  # noqa: BLE001 — only an optimisation
            self.log.info("report program not compiled ahead (%s: %s)", type(e).__name__, e)


def _resolve_fit(
    cfg: RunConfig, data: Path | None, shard: tuple[int, int] | None
) -> tuple[RunConfig, tuple[int, int]]:
    """A copy of `cfg` with the data path resolved (`data`, `data.path`, else the bundled
    cohort), and the shard (`shard`, `batch.shard`, else all of it)."""
    data = Path(data or cfg.data.path or bundled_cohort())
    cfg = cfg.model_copy(deep=True)
    cfg.data.path = data
    if shard is None and cfg.batch.shard:
        shard = parse_shard(cfg.batch.shard)
    return cfg, shard or (0, 1)


def _load_fit_data(cfg: RunConfig) -> Dataset:
    """The dataset of `data.path` (a `JobError` for a bad one)."""
    try:
        return load_data(cfg.data.path)
    except DatasetError as e:
        raise JobError(str(e)) from None


def _devices(cfg: RunConfig) -> list:
    """The local devices the batch engine uses (`batch.devices`, null = all)."""
    return local_devices(cfg.batch.devices, "batch.devices")


def fit_progress_bar(console=None):
    """The fit job's progress bar: what it does ("compiling…" until the first round ends, then
    "fitting"), subjects done / total, subjects per second, elapsed, ETA."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[speed]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
    )


class RoundLog:
    """A fit's progress after every round of the batch engine (`step` "round"; every subject
    of the per-subject engine: "subject"): one line in run.log only — subjects done / total,
    converged so far, subjects per second — and the progress bar `bar`, which reads
    "compiling…" until the first round ends (the program compiles before it runs)."""

    def __init__(self, out: Path, shard, total: int, log: logging.Logger, bar=None, step="round"):
        self.tally = PartsTally(out, shard)
        self.resumed, _ = self.tally.update()
        self.total, self.log, self.bar, self.step = total, log, bar, step
        self.rounds = 0
        self.t0 = time.perf_counter()
        self.first: tuple[float, int] | None = None  # (time, subjects fitted) after round 1
        self.after_first: Callable[[], None] | None = None  # called once, after round 1
        self.task = None
        if bar is not None:
            self.task = bar.add_task(
                "compiling…", total=total, completed=self.resumed, speed="… subjects/s"
            )

    def __call__(self, fitted: int) -> None:
        """After a round: `fitted` subjects finished in this run so far (written to `out`)."""
        now = time.perf_counter()
        self.rounds += 1
        done, converged = self.tally.update()
        rate, since = self._rate(now, fitted)
        self.log.info(
            "%s %d: %d/%d subjects (%d resumed), %d converged, %.2f subjects/s%s",
            self.step, self.rounds, done, self.total, self.resumed, converged, rate, since,
            extra=FILE_ONLY,
        )  # fmt: skip
        if self.bar is not None:
            speed = f"{rate:.2f} subjects/s"
            self.bar.update(self.task, description="fitting", completed=done, speed=speed)
        if self.rounds == 1 and self.after_first is not None:
            self.after_first()

    def _rate(self, now: float, fitted: int) -> tuple[float, str]:
        """(subjects per second since the first round ended, or — for the first round —
        since the start, a note saying compilation is included)."""
        if self.first is None:
            self.first = (now, fitted)
            return fitted / max(now - self.t0, 1e-9), " (compilation included)"
        t, n = self.first
        return (fitted - n) / max(now - t, 1e-9), ""


def _run_fit(
    cfg: RunConfig,
    dataset: Dataset,
    out: Path,
    devices: list,
    common: dict,
    log: logging.Logger,
    progress: bool,
    ahead: ReportAhead | None = None,
) -> tuple[str, BatchResult]:
    """(engine description, result): the vmapped batch engine for single-start
    Levenberg–Marquardt, else subject by subject. Progress: `RoundLog` (with worker
    processes, the workers' own bar and no per-round lines). `ahead` starts after the first
    round (with worker processes: at once, this process only waits)."""
    batch = cfg.optimiser.name == "levenberg_marquardt" and cfg.multistart.starts == 1
    if batch and cfg.batch.workers > 1:
        if ahead is not None:
            ahead.start()
        return _run_batch(cfg, dataset, out, devices, dict(common, progress=progress))
    everyone = dataset.observations["subject"].unique().tolist()
    total = len(shard_subjects(everyone, common["shard"]))
    bar = fit_progress_bar() if progress else None
    rounds = RoundLog(out, common["shard"], total, log, bar, "round" if batch else "subject")
    rounds.after_first = ahead.start if ahead is not None else None
    with bar if bar is not None else contextlib.nullcontext():
        if batch:
            return _run_batch(cfg, dataset, out, devices, dict(common, on_progress=rounds))
        return _run_each(cfg, dataset, out, dict(common, on_progress=rounds), log)


def _run_batch(
    cfg: RunConfig, dataset: Dataset, out: Path, devices: list, common: dict
) -> tuple[str, BatchResult]:
    """The vmapped batch engine (single-start Levenberg–Marquardt)."""
    width = max(len(devices), cfg.batch.width - cfg.batch.width % len(devices))
    settings = BatchSettings(
        width=width,
        round_steps=cfg.batch.round_steps,
        restarts=cfg.batch.restarts,
        max_steps=cfg.optimiser.max_steps,
        rtol=cfg.optimiser.rtol,
        atol=cfg.optimiser.atol,
        devices=tuple(devices),
        chunk=cfg.batch.chunk,
    )
    result = fit_batch(
        dataset, cfg.fit.free, out, settings=settings, workers=cfg.batch.workers, **common
    )
    return "batch (vmapped Levenberg–Marquardt lanes)", result


def _run_each(
    cfg: RunConfig, dataset: Dataset, out: Path, common: dict, log: logging.Logger
) -> tuple[str, BatchResult]:
    """Subject by subject (`fit_each`: any optimiser, multistart)."""
    method = cfg.optimiser.name
    if cfg.batch.workers > 1:
        log.warning("batch.workers applies to the batch engine only; fitting in this process")
    result = fit_each(
        dataset,
        cfg.fit.free,
        out,
        method=method,
        n_starts=cfg.multistart.starts,
        seed=cfg.seed,
        spread=cfg.multistart.spread,
        max_steps=cfg.optimiser.max_steps,
        rtol=cfg.optimiser.rtol,
        atol=cfg.optimiser.atol,
        learning_rate=cfg.optimiser.learning_rate,
        schedule=cfg.optimiser.schedule,
        **common,
    )
    return f"per subject ({method}, {cfg.multistart.starts} start(s))", result


def _log_fit(log: logging.Logger, engine: str, s: dict, t0: float) -> None:
    """The engine, compile time and outcome of a fit, in the run log."""
    compile_s = s.get("seconds_compile")
    log.info("engine: %s", engine)
    if compile_s is not None:
        log.info(
            "compile time: %.2f s (%s)",
            compile_s,
            ", ".join(PROGRAM_SOURCES.get(p, p) for p in s.get("programs", []))
            or "nothing to compile",
        )
    log.info(
        "%d subjects (%d resumed), %d converged, status %s, in %.1f s",
        s.get("subjects", 0),
        s.get("subjects_resumed", 0),
        s.get("converged", 0),
        s.get("status"),
        time.perf_counter() - t0,
    )


def _report_fit(out: Path, cfg: RunConfig, dataset: Dataset, log: logging.Logger) -> None:
    """The report of a finished fit; a failure is logged, never raised (the tables are saved)."""
    t1 = time.perf_counter()
    try:
        path = write_report(out, cfg=cfg, dataset=dataset, log=log)
        log.info("report: %s (%.1f s)", path, time.perf_counter() - t1)
    except Exception as e:  # the fit is saved; a failed figure must not fail the run
        log.error(
            "report not written (%s: %s); the tables are complete — retry with "
            "`mgjax report %s` (or `mgjax --debug report …` for the traceback)",
            type(e).__name__,
            e,
            out,
        )


# --- synth, simulate, check ---------------------------------------------------------------------


def synth_job(cfg: RunConfig, out: Path, *, force: bool = False) -> dict:
    """Sample the virtual cohort of `synth:` into `out` (the dataset format plus truth.csv)."""
    out = prepare_run_dir(out, force=force)
    groups = cfg.synth.groups
    if isinstance(groups, dict):
        counts: dict[str, int] | int = dict(groups)
    else:
        counts = {g: 0 for g in groups}
        for k in range(cfg.synth.n):
            counts[groups[k % len(groups)]] += 1
    t0 = time.perf_counter()
    cohort = synthesize(counts, seed=cfg.seed)
    cohort.write(out)
    (out / "config.yaml").write_text(to_yaml(cfg), encoding="utf-8")
    return dict(
        subjects=len(cohort.subjects),
        observations=len(cohort.observations),
        redrawn=", ".join(cohort.redrawn) or "none",  # subjects drawn again: a failed solve
        seconds=time.perf_counter() - t0,
    )


def _protocol(spec) -> tuple[Any, np.ndarray]:
    """(protocol, sampling times in min) of a protocol config."""
    if spec.kind == "hyperinsulinemic_clamp":
        protocol = HyperinsulinemicClamp(
            insulin_rate=spec.insulin_rate,
            per_kg=spec.insulin_unit == "mU/kg/min",
            target_glucose=float("nan") if spec.target_glucose is None else spec.target_glucose,
            duration=spec.duration,
        )
        return protocol, np.arange(0.0, spec.duration + spec.every / 2, spec.every)
    if spec.kind == "hyperglycemic_clamp":
        protocol = HyperglycemicClamp(increment=spec.increment, duration=spec.duration)
        return protocol, np.arange(0.0, spec.duration + spec.every / 2, spec.every)
    if spec.kind == "ivgtt":
        protocol = IVGTT(glucose_dose=spec.glucose_dose, insulin_dose=spec.insulin_dose)
        return protocol, np.arange(0.0, spec.duration + spec.every / 2, spec.every)
    if spec.kind == "ogtt":
        protocol = OGTT(glucose_dose=spec.glucose_dose, incretin=1.0 if spec.incretin else 0.0)
        return protocol, np.arange(0.0, spec.duration + spec.every / 2, spec.every)
    if spec.kind == "oral_mg_trial":
        protocol = OralMagnesiumTrial.daily(
            spec.dose_mmol_per_day, spec.weeks, salt=spec.salt, averaged=spec.averaged
        )
        days = np.arange(0.0, 7 * spec.weeks + spec.every / 2, spec.every)
        return protocol, days * 1440.0
    return fasting(), np.asarray([0.0])


def simulate_job(cfg: RunConfig, out: Path, *, force: bool = False) -> pd.DataFrame:
    """Simulate each preset of `simulate.presets` under each protocol; write
    `trajectories.csv` in the long observation format, and `doses.csv` with the infusions a
    dataset needs to rebuild the protocols (hyperinsulinaemic clamps' insulin)."""
    out = prepare_run_dir(out, force=force)
    write_run_header(out, cfg)
    options = solver_options(cfg, "lbfgs")
    rows, doses = [], []
    for k, spec in enumerate(cfg.simulate.protocols):
        protocol, times = _protocol(spec)
        name = _protocol_name(cfg, k, spec)
        for preset_name in cfg.simulate.presets:
            model = preset(preset_name)
            if cfg.model.parameters:
                model = set_parameters(model, dict(cfg.model.parameters))
            rows += _simulated_rows(model, preset_name, name, protocol, spec, times, options)
            if spec.kind == "hyperinsulinemic_clamp":
                doses.append(_clamp_infusion(preset_name, name, spec))
    frame = pd.DataFrame(rows)
    frame.to_csv(out / "trajectories.csv", index=False)
    if doses:
        pd.DataFrame(doses).to_csv(out / "doses.csv", index=False)
    _simulate_plot(frame, out / "trajectories.png")
    return frame


def export_job(
    cfg: RunConfig, out: Path, *, estimate: tuple[str, ...] = (), force: bool = False
) -> list[Path]:
    """`mgjax export`: each preset of `simulate.presets` under each protocol of
    `simulate.protocols` as a PEtab problem in `out/<preset>_<protocol>/` (the SBML model,
    and as measurements the preset's own noise-free simulation of the protocol's
    observables at its sampling times, model units, σ = 1 % of the value), the parameters
    `estimate` to be estimated. Returns the problems' YAML paths."""
    from ..petab import to_petab  # the petab extra (libsbml, sympy)

    known = {info.name for info in MgT2DModel.parameter_infos()}
    unknown = [name for name in estimate if name not in known]
    if unknown:
        raise JobError(
            f"cannot estimate {unknown}: not model parameters (`mgjax params` lists them)"
        )
    out = prepare_run_dir(out, force=force)
    write_run_header(out, cfg)
    options = solver_options(cfg, "lbfgs")
    paths = []
    for k, spec in enumerate(cfg.simulate.protocols):
        protocol, times = _protocol(spec)
        name = _protocol_name(cfg, k, spec)
        observed = [o for o in spec.observables if not is_interval(o)]
        for preset_name in cfg.simulate.presets:
            model = preset(preset_name)
            if cfg.model.parameters:
                model = set_parameters(model, dict(cfg.model.parameters))
            traj = simulate(model, protocol, jnp.asarray(times), options=options, throw=False)
            if not bool(traj.success):
                raise JobError(f"the {name} simulation of preset {preset_name} failed")
            rows = [
                dict(time=float(t), observable=o, value=v, sigma=max(0.01 * abs(v), 1e-12))
                for o in observed
                for t, v in zip(times, np.asarray(traj[o]).tolist())
            ]
            problem = f"{preset_name}_{name}"
            paths.append(
                to_petab(model, protocol, rows, out / problem, estimate=estimate, name=problem)
            )
    return paths


def _clamp_infusion(subject: str, name: str, spec) -> dict:
    """A hyperinsulinaemic clamp's insulin infusion as a doses.csv row."""
    return insulin_infusion_record(
        subject, name, spec.insulin_rate, spec.insulin_unit, spec.duration
    )


def _protocol_name(cfg: RunConfig, k: int, spec) -> str:
    """The k-th protocol's name in trajectories.csv: its `name`, else its kind (numbered when
    the kind occurs more than once)."""
    if sum(p.kind == spec.kind for p in cfg.simulate.protocols) == 1:
        return spec.name or spec.kind
    return spec.name or f"{spec.kind}_{k}"


def _simulated_rows(model, subject, name, protocol, spec, times, options) -> list[dict]:
    """The observation rows (report units) of one preset under one protocol."""
    # interval observables (24-h urine) need the state a day later
    grid = np.union1d(times, sampling_times((o, t) for o in spec.observables for t in times))
    traj = simulate(model, protocol, jnp.asarray(grid), options=options, throw=False)
    if not bool(traj.success):
        raise JobError(
            f"the {name} simulation of preset {subject} failed; loosen "
            "solver.rtol or raise solver.max_steps"
        )
    weight = float(model.glucose_insulin.body_weight)
    rows = []
    for obs in spec.observables:
        source = source_observable(obs)
        unit_model = MODEL_UNITS.get(obs, OBSERVABLE_UNITS.get(source, ""))
        unit = _REPORT_UNITS.get(obs, unit_model)
        for t, value in zip(times, observed_values(traj, obs, times)):
            value = float(value)
            if unit != unit_model:
                value = float(from_model_units(obs, value, unit, body_weight=weight))
            rows.append(
                dict(
                    subject=subject,
                    protocol=name,
                    time=float(t),
                    time_unit="min",
                    observable=obs,
                    value=value,
                    unit=unit,
                )
            )
    return rows


def _simulate_plot(frame: pd.DataFrame, path: Path) -> None:
    """One panel per (protocol, observable), a line per preset."""
    panels = list(frame.groupby(["protocol", "observable"], sort=False))
    if not panels:
        return
    plt = pyplot()
    cols = min(4, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), squeeze=False)
    for ax, ((protocol, obs), g) in zip(axes.flat, panels):
        scale, unit = (1440.0, "day") if g["time"].max() > 5 * 1440 else (1.0, "min")
        for subject, s in g.groupby("subject", sort=False):
            ax.plot(
                s["time"] / scale, s["value"], marker="." if len(s) < 30 else None, label=subject
            )
        ax.set_title(f"{protocol}: {obs}", fontsize=9)
        ax.set_xlabel(unit)
        ax.set_ylabel(g["unit"].iloc[0])
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    save_figure(fig, path, dpi=110)


def check_job(data: Path) -> dict:
    """Validate a dataset without fitting; a summary of what it holds."""
    try:
        dataset = load_data(data)
    except DatasetError as e:
        raise JobError(str(e)) from None
    obs = dataset.observations
    return dict(
        subjects=int(obs["subject"].nunique()),
        observations=len(obs),
        doses=len(dataset.doses),
        protocols={str(k): int(v) for k, v in obs.groupby("protocol")["subject"].nunique().items()},
        observables={str(k): int(v) for k, v in obs["observable"].value_counts().items()},
        groups=(
            {str(k): int(v) for k, v in dataset.subjects["group"].value_counts().items()}
            if "group" in dataset.subjects.columns
            else {}
        ),
    )


# --- sweep --------------------------------------------------------------------------------------


def sweep_job(
    raw: Mapping[str, Any],
    source: str,
    grid: list[str],
    out: Path,
    *,
    data: Path | None = None,
    force: bool = False,
    progress: bool = False,
) -> pd.DataFrame:
    """One fit per grid point (`key=v1,v2` axes, their product) in `out/point-k/`, and
    `out/sweep.csv`: the point's values, then converged subjects, median loss, median
    estimate per free parameter, compile and total seconds."""
    points = grid_points(grid)
    configs = []
    for point in points:  # validate every point before running any
        raw_k = copy.deepcopy(dict(raw))
        for key, value in point.items():
            apply_override(raw_k, key.split("."), value, f"{key}={value}")
        configs.append(validate(raw_k, f"{source} (sweep point {point})"))
    out = prepare_run_dir(out, force=force)
    rows = []
    for k, (point, cfg) in enumerate(zip(points, configs)):
        t0 = time.perf_counter()
        summary = fit_job(cfg, out / f"point-{k}", data=data, progress=progress, report=False)
        params = pd.read_csv(out / f"point-{k}" / "parameters.csv")
        subjects = pd.read_csv(out / f"point-{k}" / "subjects.csv")
        row: dict[str, Any] = dict(point=k, **point)
        row.update(
            subjects=len(subjects),
            converged=int(subjects["converged"].sum()),
            median_loss=float(subjects["loss"].median()),
            median_iterations=float(subjects["iterations"].median()),
        )
        for name, g in params.groupby("parameter", sort=False):
            row[f"median[{name}]"] = float(g["estimate"].median())
            row[f"identifiable[{name}]"] = float(g["identifiable"].mean())
        row.update(
            seconds_compile=summary.get("seconds_compile"),
            seconds=time.perf_counter() - t0,
            run=f"point-{k}",
        )
        rows.append(row)
        pd.DataFrame(rows).to_csv(out / "sweep.csv", index=False)  # after every point
    return pd.DataFrame(rows)
