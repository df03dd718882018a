"""Config → library objects: the solver options, error models, base models, priors and the
dataset that a `RunConfig` names. Used by the jobs and by the report."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from pathlib import Path

import diffrax as dfx
import numpy as np
import pandas as pd

from ..batch import default_base_model
from ..data._dataset import Dataset, load_dataset
from ..fit import range_priors
from ..fit._objective import ErrorModel
from ..model._parameters import set_parameters
from ..model._therapies import with_therapy
from ..solve._rosenbrock import Rodas4
from ..solve._solve import SolverOptions, reverse_mode_adjoint
from ..synth._cohort import cohort_error_models
from ._config import ConfigError, RunConfig
from ._run_dir import JobError

SOLVERS = dict(rodas4=Rodas4, kvaerno5=dfx.Kvaerno5, kvaerno3=dfx.Kvaerno3, tsit5=dfx.Tsit5)


def bundled_cohort() -> Path:
    """The bundled virtual cohort (24 subjects; the main job's default data)."""
    return Path(__file__).resolve().parents[1] / "data" / "cohort"


def _adjoint(cfg: RunConfig, method: str) -> str:
    """`solver.adjoint` resolved for optimiser `method` ('forward' or 'checkpoint')."""
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
    return adjoint


def _solver(cfg: RunConfig):
    """The `solver:` section's solver (`sensitivities` is Rodas4's)."""
    if cfg.solver.type == "rodas4":
        return Rodas4(sensitivities=cfg.solver.sensitivities)
    if cfg.solver.sensitivities != "auto":
        raise ConfigError(
            f"solver.sensitivities = '{cfg.solver.sensitivities}' with solver.type = "
            f"'{cfg.solver.type}': only rodas4 has that choice; remove it or use rodas4"
        )
    return SOLVERS[cfg.solver.type]()


def solver_options(cfg: RunConfig, method: str) -> SolverOptions:
    """The `solver:` section for optimiser `method` (its adjoint follows the method)."""
    adjoint = _adjoint(cfg, method)
    return SolverOptions(
        solver=_solver(cfg),
        rtol=cfg.solver.rtol,
        atol=cfg.solver.atol,
        quadrature_atol=cfg.solver.quadrature_atol,
        max_steps=cfg.solver.max_steps,
        adjoint=dfx.ForwardMode() if adjoint == "forward" else reverse_mode_adjoint(),
    )


def error_models_for(cfg: RunConfig, observables) -> dict[str, ErrorModel]:
    """The cohort's error model per observable, with `fit.error_model` on top."""
    models = cohort_error_models(list(observables))
    for name, em in cfg.fit.error_model.items():
        models[name] = ErrorModel(additive=em.additive, proportional=em.proportional)
    return models


def base_model_for(cfg: RunConfig, *, starts: bool = True) -> Callable:
    """Each subject's fixed parameters and starting point: its group's preset (or
    `model.preset`), covariates, `model.therapies`, then `model.parameters`; with `starts`,
    the free parameters' starting values then from `fit.start_from` (`start_values`)."""
    use = starts and cfg.fit.start_from is not None
    by_group = start_values(cfg.fit.start_from, cfg.fit.free) if use else {}
    return functools.partial(
        _configured_base_model,
        cfg.model.preset,
        dict(cfg.model.parameters),
        tuple(cfg.model.therapies),
        by_group,
    )


def _configured_base_model(preset, overrides, therapies, starts, group, covariates):
    """`base_model_for`'s model (module level, so batch worker processes can unpickle it)."""
    model = default_base_model(preset or group, covariates)
    if therapies:
        model = with_therapy(model, *therapies)
    if overrides:
        model = set_parameters(model, overrides)
    start = starts.get(group, starts.get(None))
    return set_parameters(model, start) if start else model


def start_values(run: Path, free: list[str]) -> dict[str | None, dict[str, float]]:
    """Starting values of the `free` parameters from a finished run directory, by group (None:
    every group): a fit's `cohort_summary.csv` (each group's median estimate over its converged
    subjects) or a population fit's `population_parameters.csv` (the typical values θ_pop, for
    every group; covariate effects are not applied). Parameters the run did not estimate keep
    their preset values."""
    run = Path(run)
    summary, population = run / "cohort_summary.csv", run / "population_parameters.csv"
    if summary.exists():
        source, columns, value = summary, ("group", "parameter", "median"), "median"
    elif population.exists():
        source, columns, value = population, ("parameter", "estimate"), "estimate"
    else:
        raise ConfigError(
            f"fit.start_from: {run} holds neither cohort_summary.csv (a finished `mgjax fit`) "
            "nor population_parameters.csv (a finished `mgjax population`); give such a run "
            "directory"
        )
    table = pd.read_csv(source)
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ConfigError(f"fit.start_from: {source} has no column(s) {missing}")
    table = table[table["parameter"].isin(free)]
    if table.empty:
        raise ConfigError(
            f"fit.start_from: {source} estimates none of fit.free ({', '.join(free)})"
        )
    bad = table[~np.isfinite(table[value].astype(float)) | (table[value] <= 0)]
    if len(bad):
        raise ConfigError(
            f"fit.start_from: {source} gives {bad['parameter'].iloc[0]} = "
            f"{bad[value].iloc[0]}, not a positive number"
        )
    if "group" in table.columns:
        return {
            str(group): dict(zip(rows["parameter"], rows[value].astype(float)))
            for group, rows in table.groupby("group")
        }
    return {None: dict(zip(table["parameter"], table[value].astype(float)))}


def priors_for(cfg: RunConfig) -> dict[str, tuple[float, float]] | None:
    """`fit.priors` as {name: (median, geometric SD)}, or None for no priors."""
    priors = cfg.fit.priors
    if priors == "none":
        return None
    if priors == "range":
        # centred on the preset's values, not on `fit.start_from`'s
        model = base_model_for(cfg, starts=False)(cfg.model.preset or "healthy", {})
        return range_priors(model, cfg.fit.free)
    unknown = [p for p in priors if p not in cfg.fit.free]
    if unknown:
        raise ConfigError(
            f"fit.priors: {unknown} are not in fit.free; priors are for free parameters"
        )
    return {
        name: (p.median, math.exp(math.sqrt(math.log1p(p.cv**2)))) for name, p in priors.items()
    }


def load_data(path: Path) -> Dataset:
    """The dataset in folder `path` (a `JobError` when there is no such folder)."""
    if not Path(path).is_dir():
        raise JobError(f"{path}: no such dataset folder (it must hold observations.csv)")
    return load_dataset(path)
