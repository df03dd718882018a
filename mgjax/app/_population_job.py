"""`mgjax population`: a nonlinear mixed-effects fit (FOCE-I) into a run directory.

The run directory (the contract other tools read):
- `population_parameters.csv` (parameter, estimate, se, rse_percent, ci_low, ci_high, unit),
  `random_effects.csv` (parameter, omega_sd, se, rse_percent, cv_percent,
  shrinkage_percent), `omega.csv` (correlations), `individual_parameters.csv` (subject,
  parameter, ebe, unit), `predictions.csv` (subject, time, observable, dv, pred, ipred, iwres,
  cwres; for the one-compartment model);
- `summary.json`: method, ofv, ofv_importance_sampling, aic, bic, converged, iterations,
  subjects, excluded, observations, covariance_undetermined, start_ofvs, seconds_compile,
  seconds_total
  (null: not computed; NUTS runs: its own diagnostics instead);
- `population_fit.json` (θ by name, subjects, excluded, EBE η: what `mgjax vpc` reads);
- `report.html` with its figures (GOF, η, VPC; `vpc.csv`), unless `report.enabled` is false;
- `config.yaml`, `environment.json`, `run.log`.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

from ..data import load_dataset, read_nonmem
from ..model import parameter_infos
from ..population import (
    CovariateEffect,
    PopulationModel,
    SaemSettings,
    cohort_problems,
    fit_population,
    one_compartment_problems,
    sample_population,
)
from ..population._one_compartment import UNITS as ONE_COMPARTMENT_UNITS
from ._config import PopulationConfig, RunConfig, load_config
from ._population_report import report_population, write_population_fit, write_population_report
from ._run_dir import JobError, local_devices, prepare_run_dir, start_log, write_run_header

#: the one-compartment model's default random effects
ONE_COMPARTMENT_RANDOM = ("ka", "cl", "v")


def _random(pop: PopulationConfig) -> tuple[str, ...]:
    return tuple(pop.random) if pop.random else ONE_COMPARTMENT_RANDOM


def _coupled(cfg: RunConfig, data: Path):
    """The coupled model's problems (stacked), subjects, covariates (subjects.csv) and
    units, from a native dataset folder."""
    pop = cfg.population
    if not data.is_dir():
        raise JobError(
            f"{data}: structural_model coupled reads a native dataset folder "
            "(observations.csv, doses.csv, subjects.csv; `mgjax convert` writes one from a "
            "NONMEM-style CSV)"
        )
    free = list(pop.parameters or pop.random)
    missing = [p for p in pop.random if p not in free]
    if missing:
        raise JobError(f"population.random: {missing} are not among population.parameters")
    infos = parameter_infos()
    unknown = [p for p in free if p not in infos]
    if unknown:
        raise JobError(
            f"population.parameters/random: {unknown} are not parameters of the coupled model "
            "(docs/model.md lists them)"
        )
    dataset = load_dataset(data)
    try:
        problems, subjects, covariates = cohort_problems(dataset, free)
    except ValueError as e:
        raise JobError(f"{data}: {e}") from None
    covariates = covariates.rename(columns=str.lower)
    units = {p: infos[p].unit for p in free}
    return problems, subjects, covariates, units


def _structural(cfg: RunConfig, data: Path):
    """(problems, subjects, covariates table, units) of the configured structural model (the
    one-compartment model on a NONMEM-style CSV, or the coupled model on a dataset folder)."""
    pop = cfg.population
    if pop.structural_model == "coupled":
        return _coupled(cfg, data)
    table = read_nonmem(
        data, observables=pop.observables, dose_compartments=tuple(pop.dose_compartments)
    )
    absent = {f"sigma_{kind}": 0.0 for kind in ("additive", "proportional")}
    for kind in pop.estimate_error:
        absent.pop(f"sigma_{kind}")
    problems, subjects, covariates = one_compartment_problems(
        table, values=absent, estimate_error=tuple(pop.estimate_error)
    )
    units = {**ONE_COMPARTMENT_UNITS}
    for kind in pop.estimate_error:
        units[f"sigma_{kind}[concentration]"] = units.pop(f"sigma_{kind}")
    return problems, subjects, covariates, units


def _names(problems) -> tuple[str, ...]:
    """The structural quantities of a list of problems or of one stacked problem."""
    return tuple(problems[0].names if isinstance(problems, list) else problems.names)


def population_model(pop: PopulationConfig, names: tuple[str, ...]) -> PopulationModel:
    """The `PopulationModel` the config describes, over the structural model's `names`."""
    effects = tuple(
        CovariateEffect(
            parameter=c.parameter,
            covariate=c.covariate.lower(),
            kind=c.kind,
            reference=float(c.reference),
            level=c.level,
        )
        for c in pop.covariates
    )
    return PopulationModel(names=names, random=_random(pop), covariates=effects, omega=pop.omega)


#: SAEM's and FOCE-I's checkpoints in a run directory (removed when the run finishes)
SAEM_CHECKPOINT = "saem_checkpoint.npz"
FOCE_CHECKPOINT = "foce_checkpoint.npz"


def population_job(
    cfg: RunConfig,
    out: Path,
    *,
    force: bool = False,
    resume: bool = False,
    log: logging.Logger | None = None,
) -> dict[str, Any]:
    """Fit `cfg.population` into run directory `out`; returns the summary. SAEM saves its
    state after every segment of iterations; `resume` continues a killed run from it."""
    pop = cfg.population
    data = pop.data or cfg.data.path
    if data is None:
        raise JobError("no data: give --data (a NONMEM-style CSV or a dataset folder)")
    t0 = time.perf_counter()
    problems, subjects, covariates, units = _structural(cfg, Path(data))
    names = _names(problems)
    try:
        model = population_model(pop, names)
    except ValueError as e:
        raise JobError(f"population: {e}") from None
    out = prepare_run_dir(Path(out), force=force, resume=resume)
    checkpoint = out / (SAEM_CHECKPOINT if pop.method == "saem" else FOCE_CHECKPOINT)
    log = log or start_log(out, "mgjax.population")
    write_run_header(out, cfg)
    if checkpoint.exists() and pop.method in ("saem", "foce-i"):
        log.info(
            "resuming %s from %s (the iterations done are kept)",
            pop.method.upper(),
            checkpoint.name,
        )
    devices = local_devices(pop.devices, "population.devices")
    log.info(
        "population fit (%s): %d subjects, random effects on %s, %d covariate effect(s)%s",
        pop.method.upper(),
        len(subjects),
        ", ".join(model.random),
        len(model.covariates),
        f", subjects split over {len(devices)} devices"
        if pop.method == "foce-i" and len(devices) > 1
        else "",
    )
    if pop.method == "nuts":
        return _sample_job(cfg, out, log, problems, model, subjects, covariates, units, t0)
    result = fit_population(
        problems,
        model,
        subjects=subjects,
        covariates=covariates,
        start=_start_names(pop.start, names),
        omega_start=float(pop.omega_start),
        covariance=pop.covariance,
        units=units,
        max_steps=pop.max_steps,
        outer=pop.outer,
        starts=pop.starts,
        importance_samples=pop.importance_samples,
        method=pop.method,
        saem_settings=SaemSettings(
            exploration=pop.saem.exploration,
            smoothing=pop.saem.smoothing,
            annealing=pop.saem.annealing,
            chains=pop.saem.chains,
            information_draws=pop.saem.information_draws,
        ),
        seed=cfg.seed,
        checkpoint=checkpoint,
        devices=devices,
        progress=lambda k, total, theta, ofv: log.info(
            "SAEM iteration %d/%d: %s" if pop.method == "saem" else "FOCE-I iteration %d: %s",
            *((max(k, 0), total) if pop.method == "saem" else (k,)),
            ", ".join(
                ([f"OFV {ofv:.4f}"] if math.isfinite(ofv) else [])
                + [f"{n} {v:.4g}" for n, v in zip(model.theta_names, theta)]
            ),
        ),
    )
    checkpoint.unlink(missing_ok=True)
    for name, frame in result.tables().items():
        frame.to_csv(out / name, index=name == "omega.csv")
    summary = result.summary() | dict(seconds_total=time.perf_counter() - t0)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    log.info(
        "OFV %.3f (AIC %.3f, BIC %.3f; by importance sampling %.3f), %s after %d iterations, "
        "%.1f s (compile %.1f s)",
        result.ofv,
        result.aic,
        result.bic,
        result.ofv_importance_sampling,
        "converged" if result.converged else "NOT converged",
        result.iterations,
        summary["seconds_total"],
        result.seconds_compile,
    )
    if result.undetermined:
        log.warning(
            "covariance step: R is singular along %s (not determined by the data; their SEs "
            "are NaN)",
            list(result.undetermined),
        )
    if result.excluded:
        log.warning("left out (objective not finite at the start): %s", list(result.excluded))
    write_population_fit(out, result)
    if cfg.report.enabled and pop.structural_model == "coupled":
        log.info(
            "report: not drawn for the coupled model yet (its GOF plots and VPC need "
            "per-observation predictions, which only the one-compartment model tabulates); "
            "the tables are complete"
        )
    elif cfg.report.enabled:
        inputs = dict(problems=problems, subjects=subjects, covariates=covariates, model=model)
        report_population(out, log, cfg=cfg, **inputs)
    return summary


def _sample_job(cfg, out, log, problems, model, subjects, covariates, units, t0):
    """`population.method: nuts`: the posterior's tables and summary (no report: the GOF plots
    and VPC are drawn for the FOCE-I and SAEM estimates)."""
    pop = cfg.population
    posterior = sample_population(
        problems,
        model,
        subjects=subjects,
        covariates=covariates,
        start=_start_names(pop.start, model.names),
        omega_start=float(pop.omega_start),
        units=units,
        num_warmup=pop.nuts.warmup,
        num_samples=pop.nuts.samples,
        num_chains=pop.nuts.chains,
        seed=cfg.seed,
    )
    for name, frame in posterior.tables().items():
        frame.to_csv(out / name, index=name == "omega.csv")
    summary = posterior.summary() | dict(seconds_total=time.perf_counter() - t0)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    log.info(
        "NUTS: %d chains × %d draws, %d divergences, max r_hat %.3f, min ESS %.0f, %.1f s",
        pop.nuts.chains,
        pop.nuts.samples,
        summary["divergences"],
        summary["max_r_hat"],
        summary["min_ess"],
        summary["seconds_total"],
    )
    if summary["max_r_hat"] > 1.05:
        log.warning("max r_hat %.3f > 1.05: run longer chains", summary["max_r_hat"])
    return summary


def _start_names(start: dict[str, float], names: tuple[str, ...]) -> dict[str, float]:
    """Starting values by the structural model's names; `sigma_additive` may stand for
    `sigma_additive[concentration]`; the start of an error term that is not estimated is
    ignored (the term is zero)."""
    out = {}
    for key, value in start.items():
        error_term = key in ("sigma_additive", "sigma_proportional")
        if error_term and not any(n.startswith(key + "[") for n in names):
            continue  # an error term not estimated (`estimate_error`): it is zero
        matches = [n for n in names if n == key or n.startswith(key + "[")]
        if len(matches) != 1:
            raise JobError(
                f"population.start: {key!r} is not one of the model's quantities "
                f"({', '.join(names)})"
            )
        out[matches[0]] = float(value)
    return out


def population_vpc(run: Path, *, data: Path | None = None, **options: Any) -> Path:
    """`mgjax vpc`: redraw a population run's VPC and report (`options`: replicates, bins,
    stratify, prediction_corrected, seed), its problems rebuilt from its config and data."""
    cfg = load_config(Path(run) / "config.yaml")
    if cfg.population.structural_model == "coupled":
        raise JobError(
            f"{run}: `mgjax vpc` draws the one-compartment model's VPC; the coupled model's "
            "is not available yet"
        )
    data = data or cfg.population.data or cfg.data.path
    if data is None or not Path(data).is_file():
        raise JobError(f"{run}: its data ({data}) is not a file; give --data")
    problems, subjects, covariates, _ = _structural(cfg, Path(data))
    model = population_model(cfg.population, _names(problems))
    inputs = dict(problems=problems, subjects=subjects, covariates=covariates, model=model)
    return write_population_report(run, cfg=cfg, **inputs, **options)
