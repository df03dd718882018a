"""The report of a population run: goodness-of-fit figures, random effects, the visual
predictive check, and one self-contained HTML page (`report.html`, the fit report's style).

Figures (PNG side files, embedded in the page): observations vs population (PRED) and
individual (IPRED) predictions; CWRES vs time and vs PRED; a histogram of each random
effect's EBEs with its N(0, ω²) density; the EBEs vs each covariate; the VPC and the pcVPC
(`mgjax.population.visual_predictive_check`), whose table is written as `vpc.csv`.

A run directory holds what redraws them (`mgjax vpc RUN`): `population_fit.json` (θ by
`theta_names`, the fitted and the excluded subjects, each subject's η), the tables, and the
config (its data path rebuilds the subjects' problems).
"""

from __future__ import annotations

import html
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..population import PopulationModel, PopulationResult
from ..population._vpc import VisualPredictiveCheck, visual_predictive_check
from ._config import RunConfig
from ._html import (
    environment_html,
    figure_html,
    page_head,
    pyplot,
    save_figure,
    section_html,
    table_html,
    write_page,
)

#: the fitted θ, subjects and EBEs of a population run (what `mgjax vpc` reads back)
FIT_FILE = "population_fit.json"
#: the report palette: the fit report's group colours (the screenshot check counts them)
POINTS, BAND_TAILS, BAND_MEDIAN = "#1b9e77", "#7570b3", "#d95f02"
#: The report's figures: key → (file, caption), in page order.
FIGURES = {
    "dv": ("gof_dv.png", "Observations vs population (PRED) and individual (IPRED) predictions"),
    "cwres": ("gof_cwres.png", "Conditional weighted residuals vs time and vs PRED"),
    "eta": ("eta_histograms.png", "Random effects: EBE distributions and N(0, ω²)"),
    "eta_covariates": ("eta_covariates.png", "Random effects vs covariates"),
    "vpc": ("vpc.png", "Visual predictive check"),
    "pcvpc": ("pcvpc.png", "Prediction-corrected visual predictive check"),
}
#: summary.json keys shown in the report's summary table
SUMMARY_KEYS = (
    "method",
    "ofv",
    "aic",
    "bic",
    "converged",
    "iterations",
    "subjects",
    "excluded",
    "observations",
    "covariance",
    "seconds_compile",
    "seconds_total",
)


def write_population_fit(out: Path, result: PopulationResult) -> Path:
    """`population_fit.json`: θ (`theta_names`), subjects, excluded, random effects and each
    subject's EBE η (log scale for log-normal effects)."""
    record = dict(
        theta=[float(x) for x in result.theta],
        theta_names=list(result.model.theta_names),
        subjects=list(result.subjects),
        excluded=list(result.excluded),
        random=list(result.model.random),
        eta=np.asarray(result.eta, dtype=float).tolist(),
    )
    path = Path(out) / FIT_FILE
    path.write_text(json.dumps(record, indent=1))
    return path


def read_population_fit(run_dir: Path, model: PopulationModel) -> dict[str, Any]:
    """A run's `population_fit.json`, checked against `model` (its θ names)."""
    path = Path(run_dir) / FIT_FILE
    if not path.exists():
        raise FileNotFoundError(f"{run_dir}: no {FIT_FILE}; is this a finished population run?")
    record = json.loads(path.read_text())
    if tuple(record["theta_names"]) != tuple(model.theta_names):
        raise ValueError(
            f"{path}: θ names {record['theta_names']} do not match the config's population "
            f"model {list(model.theta_names)}; was config.yaml edited after the fit?"
        )
    return record


# --- figures --------------------------------------------------------------------------------------


def _identity(ax, x, y) -> None:
    values = np.concatenate([np.asarray(x, float), np.asarray(y, float)])
    values = values[np.isfinite(values)]
    if len(values):
        lo, hi = float(values.min()), float(values.max())
        ax.plot([lo, hi], [lo, hi], color="black", lw=0.8)


def _dv_figure(pred: pd.DataFrame, path: Path) -> bool:
    """DV vs PRED and DV vs IPRED, with the identity line."""
    if pred.empty:
        return False
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    panels = ((axes[0], "pred", "PRED", POINTS), (axes[1], "ipred", "IPRED", BAND_MEDIAN))
    for ax, column, label, colour in panels:
        ax.scatter(pred[column], pred["dv"], s=8, color=colour)
        _identity(ax, pred[column], pred["dv"])
        ax.set_xlabel(f"{label} (population prediction)" if column == "pred" else label)
        ax.set_ylabel("DV (observed)")
        ax.set_title(f"DV vs {label}", fontsize=9)
    return save_figure(fig, path)


def _cwres_figure(pred: pd.DataFrame, path: Path) -> bool:
    """CWRES vs time and vs PRED, with 0 and ±2."""
    if pred.empty or "cwres" not in pred:
        return False
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, column, label in ((axes[0], "time", "time"), (axes[1], "pred", "PRED")):
        ax.scatter(pred[column], pred["cwres"], s=8, color=POINTS)
        ax.axhline(0.0, color="black", lw=0.8)
        for level in (-2.0, 2.0):
            ax.axhline(level, color="grey", lw=0.8, ls="--")
        ax.set_xlabel(label)
        ax.set_ylabel("CWRES")
        ax.set_title(f"CWRES vs {label}", fontsize=9)
    return save_figure(fig, path)


def _eta_figure(eta: pd.DataFrame, omega_sd: dict[str, float], path: Path) -> bool:
    """One histogram per random effect with the N(0, ω²) density."""
    if eta.empty:
        return False
    plt = pyplot()
    names = list(eta.columns)
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        values = eta[name].to_numpy(dtype=float)
        ax.hist(values, bins=max(5, min(30, len(values) // 4)), density=True, color=BAND_TAILS)
        sd = omega_sd.get(name, float("nan"))
        if np.isfinite(sd) and sd > 0:
            x = np.linspace(min(values.min(), -3 * sd), max(values.max(), 3 * sd), 200)
            ax.plot(x, np.exp(-0.5 * (x / sd) ** 2) / (sd * np.sqrt(2 * np.pi)), color="black")
        ax.axvline(0.0, color="grey", lw=0.8)
        ax.set_title(f"η {name} (ω = {sd:.3g})", fontsize=9)
        ax.set_xlabel("EBE η")
    return save_figure(fig, path)


def _eta_covariates_figure(eta: pd.DataFrame, covariates: pd.DataFrame, path: Path) -> bool:
    """Rows: random effects; columns: covariates (numbers as scatter, text by level)."""
    columns = list(covariates.columns)[:8]
    if eta.empty or not columns:
        return False
    plt = pyplot()
    names = list(eta.columns)
    fig, axes = plt.subplots(
        len(names), len(columns), figsize=(3.0 * len(columns), 2.6 * len(names)), squeeze=False
    )
    table = covariates.loc[eta.index]
    for i, name in enumerate(names):
        for j, column in enumerate(columns):
            ax = axes[i, j]
            if pd.api.types.is_numeric_dtype(table[column]):
                ax.scatter(table[column], eta[name], s=8, color=POINTS)
            else:  # categorical: one column of points per level
                levels = sorted(table[column].astype(str).unique())
                where = table[column].astype(str).map({lv: k for k, lv in enumerate(levels)})
                jitter = np.random.default_rng(0).uniform(-0.15, 0.15, len(where))
                ax.scatter(where + jitter, eta[name], s=8, color=POINTS)
                ax.set_xticks(range(len(levels)), levels, fontsize=7)
            ax.axhline(0.0, color="grey", lw=0.8)
            ax.set_xlabel(column, fontsize=8)
            ax.set_ylabel(f"η {name}", fontsize=8)
            ax.tick_params(labelsize=7)
    return save_figure(fig, path)


def _vpc_figure(vpc: VisualPredictiveCheck, path: Path) -> bool:
    """One panel per stratum: observations, their 5/50/95th percentiles (lines) and the
    simulated percentiles' 95 % intervals (bands)."""
    table, obs = vpc.table, vpc.observations
    if table.empty:
        return False
    plt = pyplot()
    strata = list(pd.unique(table["stratum"]))
    fig, axes = plt.subplots(1, len(strata), figsize=(max(8.0, 4.2 * len(strata)), 4.6))
    axes = np.atleast_1d(axes)
    for ax, stratum in zip(axes, strata):
        points = obs[obs["stratum"] == stratum]
        ax.scatter(points["time"], points["value"], s=5, color="#999999", zorder=1)
        rows = table[table["stratum"] == stratum]
        for q, g in rows.groupby("percentile"):
            g = g.sort_values("time")
            colour = BAND_MEDIAN if q == 50.0 else BAND_TAILS
            label = "median" if q == 50.0 else "5th / 95th"
            ax.fill_between(
                g["time"],
                g["simulated_low"],
                g["simulated_high"],
                color=colour,
                alpha=0.35,
                lw=0,
                label=f"simulated {label}: 95 % interval" if q != 95.0 else None,
            )
            ax.plot(
                g["time"],
                g["observed"],
                color="black",
                lw=1.4 if q == 50.0 else 1.0,
                ls="-" if q == 50.0 else "--",
                marker="o",
                ms=3,
                label=f"observed {label}" if q != 95.0 else None,
            )
        title = "pcVPC" if vpc.prediction_corrected else "VPC"
        ax.set_title(f"{title}: {stratum}" if vpc.stratify else title, fontsize=9)
        ax.set_xlabel("time")
        ax.set_ylabel(f"{'prediction-corrected ' if vpc.prediction_corrected else ''}DV")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=7, frameon=False)
    fig.suptitle(
        f"Observed 5th/50th/95th percentiles (lines) and the 95 % intervals of the simulated "
        f"ones (bands; {vpc.replicates} replicates)",
        fontsize=9,
    )
    return save_figure(fig, path, rect=(0, 0.06, 1, 0.95))


# --- the report -----------------------------------------------------------------------------------


def _read(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return pd.DataFrame()


def _settings(cfg: RunConfig, options: dict[str, Any]) -> dict[str, Any]:
    """The VPC's settings: `options` given (not None) over the config's `population.vpc_*`."""
    pop = cfg.population
    settings = dict(
        replicates=int(pop.vpc_replicates),
        bins=int(pop.vpc_bins),
        stratify=pop.vpc_stratify,
        prediction_corrected=bool(pop.vpc_prediction_corrected),
        seed=int(cfg.seed),
    )
    settings.update({k: v for k, v in options.items() if v is not None})
    return settings


def _stratum_column(stratify: str | None, covariates: pd.DataFrame) -> str | None:
    """The covariate column `stratify` names (the data reader lower-cases names)."""
    if stratify is None or stratify in covariates:
        return stratify
    if stratify.lower() in covariates:
        return stratify.lower()
    raise ValueError(
        f"stratify: no covariate {stratify!r} in the data (covariates: "
        f"{', '.join(map(str, covariates.columns)) or 'none'})"
    )


def population_vpcs(
    record: dict[str, Any],
    problems: list,
    subjects: list[str],
    covariates: pd.DataFrame,
    model: PopulationModel,
    settings: dict[str, Any],
) -> list[VisualPredictiveCheck]:
    """The VPC (and, with `prediction_corrected`, the pcVPC) of a run's fitted θ."""
    where = {s: i for i, s in enumerate(subjects)}
    missing = [s for s in record["subjects"] if s not in where]
    if missing:
        raise ValueError(f"subjects {missing[:5]} of the fit are not in the data any more")
    fitted = [problems[where[s]] for s in record["subjects"]]
    common = dict(
        subjects=tuple(record["subjects"]),
        replicates=settings["replicates"],
        bins=settings["bins"],
        stratify=_stratum_column(settings["stratify"], covariates),
        seed=settings["seed"],
    )
    theta = np.asarray(record["theta"], dtype=float)
    kinds = (False, True) if settings["prediction_corrected"] else (False,)
    return [
        visual_predictive_check(theta, fitted, model, covariates, prediction_corrected=pc, **common)
        for pc in kinds
    ]


def write_population_report(
    run_dir: str | Path,
    *,
    cfg: RunConfig,
    problems: list,
    subjects: list[str],
    covariates: pd.DataFrame,
    model: PopulationModel,
    replicates: int | None = None,
    bins: int | None = None,
    stratify: str | None = None,
    prediction_corrected: bool | None = None,
    seed: int | None = None,
    log: logging.Logger | None = None,
) -> Path:
    """Figures, `vpc.csv` and `report.html` of the population run in `run_dir` from its
    tables and `population_fit.json`, with the subjects' `problems` (and `covariates`) for
    the VPC. VPC settings not given come from `cfg.population.vpc_*` (seed: `cfg.seed`)."""
    run_dir = Path(run_dir)
    log = log or logging.getLogger("mgjax.population.report")
    record = read_population_fit(run_dir, model)
    options = dict(
        replicates=replicates,
        bins=bins,
        stratify=stratify,
        prediction_corrected=prediction_corrected,
        seed=seed,
    )
    settings = _settings(cfg, options)
    t0 = time.perf_counter()
    vpcs = population_vpcs(record, problems, subjects, covariates, model, settings)
    seconds_vpc = time.perf_counter() - t0
    frames = [v.table.assign(kind="pcvpc" if v.prediction_corrected else "vpc") for v in vpcs]
    vpc_table = pd.concat(frames, ignore_index=True)
    vpc_table = vpc_table[["kind", *vpcs[0].table.columns]]
    vpc_table.to_csv(run_dir / "vpc.csv", index=False)
    log.info(
        "VPC: %d replicates, %.1f s; observed percentiles inside the simulated 95 %% intervals: %s",
        settings["replicates"],
        seconds_vpc,
        ", ".join(
            f"{'pcVPC' if v.prediction_corrected else 'VPC'} {100 * v.coverage:.0f} %" for v in vpcs
        ),
    )
    predictions = _read(run_dir / "predictions.csv")
    eta = pd.DataFrame(record["eta"], columns=record["random"], index=record["subjects"])
    random_effects = _read(run_dir / "random_effects.csv")
    omega_sd = (
        dict(zip(random_effects["parameter"], random_effects["omega_sd"]))
        if len(random_effects)
        else {}
    )
    drawings = dict(
        dv=lambda p: _dv_figure(predictions, p),
        cwres=lambda p: _cwres_figure(predictions, p),
        eta=lambda p: _eta_figure(eta, omega_sd, p),
        eta_covariates=lambda p: _eta_covariates_figure(eta, covariates, p),
        vpc=lambda p: _vpc_figure(vpcs[0], p),
        pcvpc=lambda p: len(vpcs) > 1 and _vpc_figure(vpcs[1], p),
    )
    figures = []
    for key, draw in drawings.items():
        name, caption = FIGURES[key]
        if draw(run_dir / name):
            figures.append((name, caption))
        elif key == "pcvpc" and (run_dir / name).exists():
            (run_dir / name).unlink()  # a redraw without the pcVPC drops the old one
    facts = dict(
        vpc_replicates=settings["replicates"],
        vpc_bins=settings["bins"],
        vpc_stratify=settings["stratify"] or "none",
        vpc_seed=settings["seed"],
        **{
            f"{'pcvpc' if v.prediction_corrected else 'vpc'}_coverage_percent": round(
                100 * v.coverage, 1
            )
            for v in vpcs
        },
    )
    return _write_page(run_dir, cfg, model, figures, facts, vpc_table)


def _summary_rows(summary: dict, facts: dict) -> pd.DataFrame:
    rows = [
        (k, json.dumps(summary[k]) if isinstance(summary[k], (list, dict)) else summary[k])
        for k in SUMMARY_KEYS
        if k in summary
    ]
    return pd.DataFrame(rows + list(facts.items()), columns=["", "value"])


def _write_page(run_dir: Path, cfg: RunConfig, model, figures, facts, vpc_table) -> Path:
    """`report.html`: summary, figures, the result tables, environment and config."""
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    env_path = run_dir / "environment.json"
    env = json.loads(env_path.read_text()) if env_path.exists() else {}
    config_path = run_dir / "config.yaml"
    config_text = config_path.read_text() if config_path.exists() else ""
    data = cfg.population.data or cfg.data.path
    effects = ", ".join(c.name for c in model.covariates) or "none"
    parts = page_head(f"mgjax population {run_dir.name}", f"mgjax population: {run_dir.name}")
    parts += [
        f"<p>Data: <code>{html.escape(str(data))}</code>; structural model "
        f"{html.escape(cfg.population.structural_model)}; random effects on "
        f"{html.escape(', '.join(model.random))} (Ω {html.escape(model.omega)}); covariate "
        f"effects: {html.escape(effects)}.</p>",
        *section_html("Summary", table_html(_summary_rows(summary, facts))),
    ]
    for name, caption in figures:
        parts += section_html(caption, figure_html(run_dir / name, caption))
    parts += section_html(
        "Population parameters", table_html(_read(run_dir / "population_parameters.csv"))
    )
    parts += section_html("Random effects", table_html(_read(run_dir / "random_effects.csv")))
    parts += section_html("Ω (correlations)", table_html(_read(run_dir / "omega.csv")))
    parts += section_html("Visual predictive check (vpc.csv)", table_html(vpc_table, rows=90))
    parts += environment_html(env)
    parts += section_html("Resolved config", f"<pre>{html.escape(config_text)}</pre>")
    return write_page(run_dir / "report.html", parts)


def report_population(out: Path, log: logging.Logger, **inputs: Any) -> None:
    """`write_population_report` after a fit; a failure is logged, never raised (the tables
    are saved)."""
    t0 = time.perf_counter()
    try:
        path = write_population_report(out, log=log, **inputs)
        log.info("report: %s (%.1f s)", path, time.perf_counter() - t0)
    except Exception as e:  # the fit is saved; a failed figure must not fail the run
        log.error(
            "report not written (%s: %s); the tables are complete — retry with `mgjax vpc %s` "
            "(or `mgjax --debug vpc …` for the traceback)",
            type(e).__name__,
            e,
            out,
        )
