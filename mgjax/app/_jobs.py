"""The jobs behind the command line: a validated `RunConfig` plus paths → files.

Each job writes one run directory: the resolved config (`config.yaml`), `environment.json`
(package and JAX versions, backend, devices), `run.log`, its tables and, for fits, plots and
`report.html`. Nothing is overwritten without `force`.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import platform
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._config import ConfigError, RunConfig, to_yaml

#: Files that mark a folder as one of our run directories (safe to clear with `force`).
RUN_MARKERS = ("config.yaml", "parts", "summary.json", "trajectories.csv", "sweep.csv")


class JobError(RuntimeError):
    """A job that cannot run as asked (the message says what to do)."""


def bundled_cohort() -> Path:
    """The bundled virtual cohort (24 subjects; the main job's default data)."""
    return Path(__file__).parent / "data" / "cohort"


def default_run_dir(cfg: RunConfig) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return cfg.output_dir / stamp


def prepare_run_dir(out: Path, *, force: bool = False, resume: bool = False) -> Path:
    """Create `out`; refuse a non-empty folder unless resuming or `force` (which clears a
    previous run directory, never a folder that is not one)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise JobError(f"{out} is a file; choose a folder for --out")
    if out.exists() and any(out.iterdir()) and not resume:
        if not force:
            raise JobError(
                f"{out} exists and is not empty; choose another --out, pass --resume to "
                "continue its job, or --force to replace it"
            )
        if not any((out / m).exists() for m in RUN_MARKERS):
            raise JobError(f"{out} is not an mgjax run directory; --force will not clear it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def environment() -> dict[str, Any]:
    """Versions, backend and devices: what a result depends on besides config and data."""
    import jax
    import jaxlib

    from .. import __version__

    return dict(
        mgjax=__version__,
        jax=jax.__version__,
        jaxlib=jaxlib.__version__,
        python=sys.version.split()[0],
        platform=platform.platform(),
        backend=jax.default_backend(),
        devices=[str(d) for d in jax.local_devices()],
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        x64=bool(jax.config.jax_enable_x64),
        compilation_cache=jax.config.jax_compilation_cache_dir,
        command=sys.argv,
        started=_dt.datetime.now().isoformat(timespec="seconds"),
    )


def start_log(run_dir: Path, name: str = "mgjax") -> logging.Logger:
    """A logger writing to `run_dir/run.log` (and to the console through rich)."""
    from rich.logging import RichHandler

    logger = logging.getLogger(f"{name}.{run_dir.resolve()}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    file = logging.FileHandler(run_dir / "run.log", encoding="utf-8")
    file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(file)
    console = RichHandler(show_path=False, show_time=False, markup=False)
    console.setLevel(logging.INFO)
    logger.addHandler(console)
    return logger


def write_run_header(run_dir: Path, cfg: RunConfig) -> None:
    (run_dir / "config.yaml").write_text(to_yaml(cfg), encoding="utf-8")
    (run_dir / "environment.json").write_text(json.dumps(environment(), indent=2))


# --- config → objects ---------------------------------------------------------------------------


def solver_options(cfg: RunConfig, method: str):
    import diffrax as dfx

    from ..solve._rosenbrock import Rodas4
    from ..solve._solve import SolverOptions

    solvers = dict(rodas4=Rodas4, kvaerno5=dfx.Kvaerno5, kvaerno3=dfx.Kvaerno3, tsit5=dfx.Tsit5)
    adjoint = cfg.solver.adjoint
    if adjoint == "auto":
        adjoint = "forward" if method == "levenberg_marquardt" else "checkpoint"
    if method == "levenberg_marquardt" and adjoint != "forward":
        raise ConfigError(
            "solver.adjoint = 'checkpoint' with optimiser.name = 'levenberg_marquardt': "
            "Levenberg–Marquardt needs forward-mode Jacobians; use 'auto' or 'forward'"
        )
    if method != "levenberg_marquardt" and adjoint != "checkpoint":
        raise ConfigError(
            f"solver.adjoint = 'forward' with optimiser.name = '{method}': gradient optimisers "
            "need reverse mode; use 'auto' or 'checkpoint'"
        )
    return SolverOptions(
        solver=solvers[cfg.solver.type](),
        rtol=cfg.solver.rtol,
        atol=cfg.solver.atol,
        max_steps=cfg.solver.max_steps,
        adjoint=dfx.ForwardMode() if adjoint == "forward" else dfx.RecursiveCheckpointAdjoint(),
    )


def error_models_for(cfg: RunConfig, observables) -> dict:
    from ..fit._objective import ErrorModel
    from ..synth._cohort import cohort_error_models

    models = cohort_error_models(list(observables))
    for name, em in cfg.fit.error_model.items():
        models[name] = ErrorModel(additive=em.additive, proportional=em.proportional)
    return models


def base_model_for(cfg: RunConfig) -> Callable:
    """Each subject's fixed parameters: its group's preset (or `model.preset`), covariates,
    then `model.parameters`."""
    import functools

    return functools.partial(_configured_base_model, cfg.model.preset, dict(cfg.model.parameters))


def _configured_base_model(preset, overrides, group, covariates):
    """`base_model_for`'s model (module level, so batch worker processes can unpickle it)."""
    from ..batch import default_base_model
    from ..model._parameters import set_parameters

    model = default_base_model(preset or group, covariates)
    return set_parameters(model, overrides) if overrides else model


def priors_for(cfg: RunConfig) -> dict[str, tuple[float, float]] | None:
    import math

    from ..fit import range_priors

    priors = cfg.fit.priors
    if priors == "none":
        return None
    if priors == "range":
        model = base_model_for(cfg)(cfg.model.preset or "healthy", {})
        return range_priors(model, cfg.fit.free)
    unknown = [p for p in priors if p not in cfg.fit.free]
    if unknown:
        raise ConfigError(
            f"fit.priors: {unknown} are not in fit.free; priors are for free parameters"
        )
    return {
        name: (p.median, math.exp(math.sqrt(math.log1p(p.cv**2)))) for name, p in priors.items()
    }


def load_data(path: Path):
    from ..data._dataset import load_dataset

    if not Path(path).is_dir():
        raise JobError(f"{path}: no such dataset folder (it must hold observations.csv)")
    return load_dataset(path)


# --- fit ------------------------------------------------------------------------------------------


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
    `jax.distributed` job write into `out` (each its own parts; process 0 the header)."""
    from .. import batch
    from ..data._dataset import DatasetError

    data = Path(data or cfg.data.path or bundled_cohort())
    cfg = cfg.model_copy(deep=True)
    cfg.data.path = data
    if shard is None and cfg.batch.shard:
        shard = batch.parse_shard(cfg.batch.shard)
    shard = shard or (0, 1)
    method = cfg.optimiser.name
    options = solver_options(cfg, method)  # config errors before anything is written
    priors = priors_for(cfg)
    out = prepare_run_dir(
        out, force=force and not shared_directory, resume=resume or shared_directory
    )
    if not shared_directory or shard[0] == 0:
        write_run_header(out, cfg)
    log = start_log(out)
    log.info("fit: data %s → %s (shard %d/%d%s)", data, out, *shard, ", resume" if resume else "")
    try:
        dataset = load_data(data)
    except DatasetError as e:
        raise JobError(str(e)) from None
    observables = sorted(dataset.observations["observable"].unique())
    unknown_em = sorted(set(cfg.fit.error_model) - set(observables))
    if unknown_em:
        log.warning("fit.error_model lists %s, which the data do not observe", unknown_em)
    common = dict(
        shard=shard,
        resume=resume,
        error_models=error_models_for(cfg, observables),
        priors=priors,
        options=options,
        base_model=base_model_for(cfg),
        progress=progress,
    )
    import jax

    devices = jax.local_devices()
    if cfg.batch.devices is not None:
        if cfg.batch.devices > len(devices):
            raise JobError(
                f"batch.devices = {cfg.batch.devices} but only {len(devices)} local device(s)"
            )
        devices = devices[: cfg.batch.devices]
    t0 = time.perf_counter()
    if method == "levenberg_marquardt" and cfg.multistart.starts == 1:
        engine = "batch (vmapped Levenberg–Marquardt lanes)"
        width = max(len(devices), cfg.batch.width - cfg.batch.width % len(devices))
        settings = batch.BatchSettings(
            width=width,
            round_steps=cfg.batch.round_steps,
            restarts=cfg.batch.restarts,
            max_steps=cfg.optimiser.max_steps,
            rtol=cfg.optimiser.rtol,
            atol=cfg.optimiser.atol,
            devices=tuple(devices),
        )
        result = batch.fit_batch(
            dataset, cfg.fit.free, out, settings=settings, workers=cfg.batch.workers, **common
        )
    else:
        engine = f"per subject ({method}, {cfg.multistart.starts} start(s))"
        if cfg.batch.workers > 1:
            log.warning("batch.workers applies to the batch engine only; fitting in this process")
        result = batch.fit_each(
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
    s = result.summary
    compile_s = s.get("seconds_compile")
    log.info("engine: %s", engine)
    if compile_s is not None:
        log.info(
            "compile time: %.2f s (%s)",
            compile_s,
            ", ".join(
                {
                    "stored": "program read back from the cache",
                    "traced": "traced and stored for the next run",
                    "uncached": "compiled, not stored",
                    "memory": "compiled earlier in this process",
                }.get(p, p)
                for p in s.get("programs", [])
            )
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
    if report if report is not None else cfg.report.enabled:
        from ._report import write_report

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
    return s


# --- synth, simulate, check ---------------------------------------------------------------------


def synth_job(cfg: RunConfig, out: Path, *, force: bool = False) -> dict:
    from ..synth._cohort import synthesize

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
        seconds=time.perf_counter() - t0,
    )


def _protocol(spec) -> tuple[Any, np.ndarray]:
    """(protocol, sampling times in min) of a protocol config."""
    from ..protocols import (
        IVGTT,
        HyperglycemicClamp,
        HyperinsulinemicClamp,
        OralMagnesiumTrial,
        fasting,
    )

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
    if spec.kind == "oral_mg_trial":
        protocol = OralMagnesiumTrial.daily(
            spec.dose_mmol_per_day, spec.weeks, salt=spec.salt, averaged=spec.averaged
        )
        days = np.arange(0.0, 7 * spec.weeks + spec.every / 2, spec.every)
        return protocol, days * 1440.0
    return fasting(), np.asarray([0.0])


def simulate_job(cfg: RunConfig, out: Path, *, force: bool = False) -> pd.DataFrame:
    """Simulate each preset of `simulate.presets` under each protocol; write
    `trajectories.csv` in the long observation format."""
    import jax.numpy as jnp

    from ..data._units import MODEL_UNITS, from_model_units
    from ..fit._experiment import INTERVAL_OBSERVABLES
    from ..model import OBSERVABLE_UNITS
    from ..model._parameters import set_parameters
    from ..model._presets import preset
    from ..solve._simulate import simulate
    from ..synth._cohort import _REPORT_UNITS

    out = prepare_run_dir(out, force=force)
    write_run_header(out, cfg)
    options = solver_options(cfg, "lbfgs")
    rows = []
    for k, spec in enumerate(cfg.simulate.protocols):
        protocol, times = _protocol(spec)
        name = (
            spec.name or spec.kind
            if sum(p.kind == spec.kind for p in cfg.simulate.protocols) == 1
            else (spec.name or f"{spec.kind}_{k}")
        )
        # interval observables (24-h urine) need the state a day later
        extra = times + 1440.0 if any(o in INTERVAL_OBSERVABLES for o in spec.observables) else []
        grid = np.unique(np.concatenate([times, extra]))
        for preset_name in cfg.simulate.presets:
            model = preset(preset_name)
            if cfg.model.parameters:
                model = set_parameters(model, dict(cfg.model.parameters))
            traj = simulate(model, protocol, jnp.asarray(grid), options=options, throw=False)
            if not bool(traj.success):
                raise JobError(
                    f"the {name} simulation of preset {preset_name} failed; loosen "
                    "solver.rtol or raise solver.max_steps"
                )
            index = {float(t): i for i, t in enumerate(grid)}
            for obs in spec.observables:
                source = INTERVAL_OBSERVABLES.get(obs, obs)
                series = np.asarray(traj[source])
                unit_model = MODEL_UNITS.get(obs, OBSERVABLE_UNITS.get(source, ""))
                unit = _REPORT_UNITS.get(obs, unit_model)
                weight = float(model.glucose_insulin.body_weight)
                for t in times:
                    value = float(series[index[float(t)]])
                    if obs in INTERVAL_OBSERVABLES:
                        value = float(series[index[float(t) + 1440.0]]) - value
                    if unit != unit_model:
                        value = float(from_model_units(obs, value, unit, body_weight=weight))
                    rows.append(
                        dict(
                            subject=preset_name,
                            protocol=name,
                            time=float(t),
                            time_unit="min",
                            observable=obs,
                            value=value,
                            unit=unit,
                        )
                    )
    frame = pd.DataFrame(rows)
    frame.to_csv(out / "trajectories.csv", index=False)
    _simulate_plot(frame, out / "trajectories.png")
    return frame


def _simulate_plot(frame: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(frame.groupby(["protocol", "observable"], sort=False))
    if not panels:
        return
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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def check_job(data: Path) -> dict:
    """Validate a dataset without fitting; a summary of what it holds."""
    from ..data._dataset import DatasetError

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
    import copy

    from ._config import apply_override, grid_points, validate

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
