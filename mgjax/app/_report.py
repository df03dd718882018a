"""The report of a fit run: matplotlib figures (PNG) and one self-contained HTML page.

Figures: data vs fitted curves per subject and protocol with the error model's 95 % band,
fasting labs observed vs fitted, loss curves, the multistart waterfall (when there was one),
estimates with 95 % intervals, cohort distributions by group, estimates vs truth (synthetic
data with `truth.csv`), the identifiability summary, and where each subject sits on the vicious
circle (fitted fasting serum Mg²⁺ vs clamp insulin sensitivity M/I).

The fitted curves come from one vmapped simulation per problem structure, stored like the
fitting program (`mgjax.runtime._programs`), so a second report does not compile again.
"""

from __future__ import annotations

import dataclasses
import html
import json
import logging
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ..batch import build_batches, read_parts
from ..batch._run import errors_as_nan, in_chunks
from ..batch._store import side_tables
from ..data._dataset import FORCED_GLUCOSE, Dataset
from ..data._units import MODEL_UNITS
from ..fit._experiment import INTERVAL_OBSERVABLES, fasting_rest_for, secretion_signals
from ..fit._laplace import SLOPPY_SE
from ..protocols import HyperinsulinemicClamp
from ..runtime._programs import compile_program, cpu_compiler_options
from ..solve._secretion import Series, simulate_secretion
from ..solve._simulate import simulate, simulate_from_rest
from ._config import RunConfig, load_config
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
from ._resolve import base_model_for, error_models_for, load_data, priors_for, solver_options

GROUP_COLOURS = {"healthy": "#1b9e77", "t2dm": "#d95f02", "t2dm_hypomagnesemia": "#7570b3"}
#: Subjects at most in the vicious-circle panel (an even sample of larger cohorts).
MAX_CIRCLE_SUBJECTS = 2000
DENSE_POINTS = 61
#: Subjects per call of the compiled fitted-curves program (its shape for any cohort).
CURVE_CHUNK = 4


def _colour(group: str) -> str:
    return GROUP_COLOURS.get(group, "#444444")


# --- fitted curves ------------------------------------------------------------------------------


def _rows_at(traj, ts, times):
    """`traj` (sampled at the sorted `ts`) restricted to `times`, each one of `ts`."""
    index = jnp.searchsorted(ts, times)
    return dataclasses.replace(traj, ts=ts[index], ys=traj.ys[index])


def _curves(batch, u: np.ndarray, grids: list[np.ndarray | None]) -> dict[str, np.ndarray]:
    """Per subject of `batch` at optimisation coordinates `u`: dense trajectories of each
    dynamic experiment's observables (`dense{k}`: subjects × times × observables), each
    experiment's predictions at its observations (`pred{k}`), and the clamp's M/I (`mi{k}`)."""
    # compiled for CURVE_CHUNK subjects whatever the cohort's size (one stored program),
    # called on the subjects in chunks, the last one filled up with its first subject
    n = len(batch)
    calls = []
    for _, index in in_chunks(np.arange(n), CURVE_CHUNK):
        leaves = _leaves(batch, index)
        if not calls:
            program = _curves_program(batch, grids, leaves, np.asarray(u[index]))
        calls.append(program(leaves, np.asarray(u[index])))
    return {k: np.concatenate([np.asarray(c[k]) for c in calls])[:n] for k in calls[0]}


def _curves_program(batch, grids, leaves, u):
    """The fitted-curves program of `batch`'s structure and `grids`, compiled (or read back)
    for the leaves and coordinates of one call."""
    _, tree = jax.tree.flatten(batch.one(0))

    def curves(leaves, u):
        problems = jax.tree.unflatten(tree, leaves)

        def single(p, v):
            model = p.model(v)
            # one fasting steady state, and one solve per protocol for both its observations
            # and its dense curve (a smaller program than one search and solve for each)
            rest, shared = fasting_rest_for(model, p.experiments)
            out = {}
            for k, e in enumerate(p.experiments):
                if grids[k] is not None and shared[k]:
                    grid = jnp.asarray(grids[k])
                    both = jnp.sort(jnp.concatenate([e.times, grid]))
                    solved = simulate_from_rest(
                        model, e.protocol, both, rest, options=p.options, throw=False
                    )
                    out[f"pred{k}"] = e.observe(_rows_at(solved, both, e.times))
                    traj = _rows_at(solved, both, grid)
                else:
                    out[f"pred{k}"] = e.predict(model, p.options, rest)[0]
                    if grids[k] is None:
                        continue
                    if _forced(e):  # the beta-cell alone, forced by the glucose series
                        secretion = simulate_secretion(
                            model,
                            e.protocol,
                            jnp.asarray(grids[k]),
                            options=p.options,
                            throw=False,
                        )
                        signals = secretion_signals(secretion, e.observable_names)
                        out[f"dense{k}"] = jnp.stack(signals, axis=-1)
                        continue
                    traj = simulate(
                        model, e.protocol, jnp.asarray(grids[k]), options=p.options, throw=False
                    )
                names = [n for n in e.observable_names if n not in INTERVAL_OBSERVABLES]
                out[f"dense{k}"] = jnp.stack([traj[n] for n in names], axis=-1)
                if isinstance(e.protocol, HyperinsulinemicClamp):
                    out[f"mi{k}"] = e.protocol.summary(traj)["m_over_i"]
            return out

        return jax.vmap(single)(problems, u)

    with errors_as_nan():  # runs once per report: XLA's cheaper settings pay
        return compile_program(
            "report-curves",
            curves,
            (leaves, u),
            static=[None if g is None else g.tolist() for g in grids],
            compiler_options=cpu_compiler_options(run_once=True),
        )


def _grids(batch) -> list[np.ndarray | None]:
    """The dense time grid of each of `batch`'s experiments (None at steady state), from its
    first subject's sampling times."""
    return [
        None
        if getattr(e.protocol, "at_steady_state", False)
        # a forced-glucose series lasts as long as it was sampled: the batch's longest
        else _grid(e.protocol, np.asarray(e.times if _forced(e) else e.times[0]))
        for e in batch.problems.experiments
    ]


def _forced(experiment) -> bool:
    """Whether `experiment` is a forced-glucose secretion experiment (a glucose series)."""
    return isinstance(experiment.protocol, Series)


def _report_batches(cfg: RunConfig, dataset: Dataset, subjects: list[str]):
    observables = sorted(dataset.observations["observable"].unique())
    return build_batches(
        dataset,
        cfg.fit.free,
        subjects=subjects,
        error_models=error_models_for(cfg, observables),
        priors=priors_for(cfg),
        options=solver_options(cfg, "levenberg_marquardt"),
        base_model=base_model_for(cfg, starts=False),  # the curves use the estimates
    )


def precompile_report(cfg: RunConfig, dataset: Dataset) -> None:
    """Compile (or read back) the fitted-curves program of the report ahead of time, for the
    structure of the dataset's first subjects: `mgjax fit` runs this in a thread while the
    fit runs, so the report finds it compiled (`compile_program` keeps it in memory)."""
    first = sorted(dataset.observations["subject"].unique())[:CURVE_CHUNK]
    for batch in _report_batches(cfg, dataset, first):
        index = in_chunks(np.arange(len(batch)), CURVE_CHUNK)[0][1]
        u = np.zeros((len(index), len(batch.problems.names)))
        _curves_program(batch, _grids(batch), _leaves(batch, index), u)


def _leaves(batch, index: np.ndarray) -> list[np.ndarray]:
    """The flat problem leaves of the subjects at `index`: one call's input."""
    return [np.asarray(x) for x in jax.tree.leaves(batch.take(index))]


def _u_of(batch, parameters: pd.DataFrame) -> np.ndarray:
    """Optimisation coordinates of each subject's estimates."""
    wide = parameters.pivot(index="subject", columns="parameter", values="estimate")
    names = list(batch.problems.free)
    values = wide.loc[batch.subjects, names].to_numpy(dtype=float)
    return np.asarray(
        jax.vmap(lambda p, v: p.from_values(v))(
            jax.tree.map(jnp.asarray, batch.problems), jnp.asarray(values)
        )
    )


def _grid(protocol, times: np.ndarray) -> np.ndarray:
    end = float(np.max(times))
    duration = getattr(protocol, "duration", None)
    if duration is not None:
        end = max(end, float(duration))
    return np.linspace(0.0, end, DENSE_POINTS)


# --- figures --------------------------------------------------------------------------------------


def _fits_figure(items: list[dict], path: Path) -> bool:
    """Rows: subjects; columns: dynamic observables (data, fitted curve, 95 % band)."""
    if not items:
        return False
    plt = pyplot()
    columns = sorted({(it["protocol"], it["observable"]) for it in items})
    subjects = list(dict.fromkeys(it["subject"] for it in items))
    fig, axes = plt.subplots(
        len(subjects),
        len(columns),
        figsize=(3.2 * len(columns), 2.2 * len(subjects)),
        squeeze=False,
    )
    for it in items:
        ax = axes[subjects.index(it["subject"]), columns.index((it["protocol"], it["observable"]))]
        colour = _colour(it["group"])
        ax.fill_between(it["t"], it["low"], it["high"], color=colour, alpha=0.18, lw=0)
        ax.plot(it["t"], it["fit"], color=colour, lw=1.4)
        ax.plot(it["t_obs"], it["y_obs"], "o", ms=3, color="black")
        ax.set_title(f"{it['subject']} ({it['group']}): {it['observable']}", fontsize=8)
        ax.set_ylabel(it["unit"], fontsize=7)
        ax.tick_params(labelsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("min", fontsize=7)
    # a fixed layout: matplotlib's tight layout takes seconds on a grid of this size
    height = 2.2 * len(subjects)
    fig.suptitle(
        "Data (dots) and fitted model (line; band: error model's 95 % range)",
        fontsize=9,
        y=1 - 0.12 / height,
    )
    fig.subplots_adjust(
        left=0.7 / (3.2 * len(columns)),
        right=0.98,
        bottom=0.45 / height,
        top=1 - 0.75 / height,
        wspace=0.35,
        hspace=0.55,
    )
    return save_figure(fig, path, dpi=90, tight=False)


def _fasting_figure(rows: pd.DataFrame, path: Path) -> bool:
    if rows.empty:
        return False
    plt = pyplot()
    names = sorted(rows["observable"].unique())
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.3), squeeze=False)
    for ax, name in zip(axes[0], names):
        g = rows[rows["observable"] == name]
        ax.scatter(g["observed"], g["fitted"], s=12, c=[_colour(x) for x in g["group"]])
        lo = float(np.nanmin(g[["observed", "fitted"]].to_numpy()))
        hi = float(np.nanmax(g[["observed", "fitted"]].to_numpy()))
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8)
        ax.set_xlabel(f"observed ({g['unit'].iloc[0]})", fontsize=8)
        ax.set_ylabel("fitted", fontsize=8)
        ax.set_title(f"fasting {name}", fontsize=9)
    return save_figure(fig, path, dpi=100)


def _loss_figure(history: pd.DataFrame, subjects: pd.DataFrame, path: Path) -> bool:
    if history.empty:
        return False
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    groups = subjects.set_index("subject")["group"].to_dict()
    shown = sorted(history["subject"].unique())[:200]
    for subject in shown:
        g = history[history["subject"] == subject]
        excess = g["loss"].to_numpy() - g["loss"].min()
        ax.plot(
            g["iterations"],
            excess + 1e-6,
            color=_colour(groups.get(subject, "")),
            lw=0.8,
            alpha=0.7,
        )
    ax.set_yscale("log")
    ax.set_xlabel("iterations")
    ax.set_ylabel("NLL − final NLL (+1e-6)")
    ax.set_title(f"Loss curves ({len(shown)} subjects)", fontsize=9)
    return save_figure(fig, path, dpi=100)


def _waterfall_figure(starts: pd.DataFrame, path: Path) -> bool:
    if starts.empty:
        return False
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for subject in sorted(starts["subject"].unique())[:30]:
        g = starts[starts["subject"] == subject].sort_values("nll")
        nll = g["nll"].to_numpy()
        ax.plot(np.arange(1, len(nll) + 1), nll - nll[0] + 1e-3, marker="o", ms=3, lw=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("start (sorted by final NLL)")
    ax.set_ylabel("NLL − best NLL (+1e-3)")
    ax.set_title(
        "Multistart waterfall (a plateau at the left = the best optimum, found repeatedly)",
        fontsize=9,
    )
    return save_figure(fig, path, dpi=100)


def _estimates_figure(parameters: pd.DataFrame, truth: pd.DataFrame | None, path: Path) -> bool:
    if parameters.empty:
        return False
    plt = pyplot()
    names = list(dict.fromkeys(parameters["parameter"]))
    fig, axes = plt.subplots(len(names), 1, figsize=(8, 2.0 * len(names)), squeeze=False)
    for ax, name in zip(axes[:, 0], names):
        g = parameters[parameters["parameter"] == name].sort_values(["group", "estimate"])
        g = g.iloc[:: max(1, len(g) // 300)]
        x = np.arange(len(g))
        low = np.clip(g["estimate"] - g["ci_low"], 0, None)
        high = np.clip(g["ci_high"] - g["estimate"], 0, None)
        for group, colour in ((gr, _colour(gr)) for gr in g["group"].unique()):
            m = (g["group"] == group).to_numpy()
            ax.errorbar(
                x[m],
                g["estimate"][m],
                yerr=[low[m], high[m]],
                fmt="o",
                ms=2.5,
                lw=0.7,
                color=colour,
                label=group,
            )
        if truth is not None and not truth.empty:
            t = truth[truth["parameter"] == name].set_index("subject")["value"]
            tv = g["subject"].map(t)
            if tv.notna().any():
                ax.plot(x, tv, "x", ms=4, color="black", label="truth")
        if (g["estimate"] > 0).all():
            ax.set_yscale("log")
        ax.set_title(f"{name} ({g['unit'].iloc[0]}): estimate and 95 % interval", fontsize=8)
        ax.set_xticks([])
        ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=7, ncol=4)
    return save_figure(fig, path, dpi=90)


def _cohort_figure(parameters: pd.DataFrame, subjects: pd.DataFrame, path: Path) -> bool:
    ok = set(subjects.loc[subjects["converged"], "subject"])
    p = parameters[parameters["subject"].isin(ok)]
    if p.empty:
        return False
    plt = pyplot()
    names = list(dict.fromkeys(p["parameter"]))
    groups = sorted(p["group"].unique())
    fig, axes = plt.subplots(1, len(names), figsize=(3.0 * len(names), 3.4), squeeze=False)
    rng = np.random.default_rng(0)
    for ax, name in zip(axes[0], names):
        g = p[p["parameter"] == name]
        data = [g.loc[g["group"] == gr, "estimate"].to_numpy() for gr in groups]
        ax.boxplot(data, showfliers=False)
        for i, (gr, d) in enumerate(zip(groups, data)):
            ax.scatter(
                i + 1 + rng.uniform(-0.15, 0.15, len(d)), d, s=6, color=_colour(gr), alpha=0.7
            )
        ax.set_xticks(
            range(1, len(groups) + 1), [gr.replace("_", "\n") for gr in groups], fontsize=6
        )
        if (g["estimate"] > 0).all():
            ax.set_yscale("log")
        ax.set_title(name, fontsize=8)
    fig.suptitle("Estimates by group (converged subjects)", fontsize=9)
    return save_figure(fig, path, dpi=100)


def _recovery_figure(parameters: pd.DataFrame, truth: pd.DataFrame, path: Path) -> bool:
    merged = parameters.merge(truth, on=["subject", "parameter"], how="inner")
    if merged.empty:
        return False
    plt = pyplot()
    names = list(dict.fromkeys(merged["parameter"]))
    fig, axes = plt.subplots(1, len(names), figsize=(3.0 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        g = merged[merged["parameter"] == name]
        ax.scatter(g["value"], g["estimate"], s=8, c=[_colour(x) for x in g["group"]])
        lo, hi = (
            float(min(g["value"].min(), g["estimate"].min())),
            float(max(g["value"].max(), g["estimate"].max())),
        )
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8)
        if lo > 0:
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.set_xlabel("truth", fontsize=7)
        ax.set_ylabel("estimate", fontsize=7)
        ax.set_title(name, fontsize=8)
    fig.suptitle("Estimates vs the true parameters of the synthetic cohort", fontsize=9)
    return save_figure(fig, path, dpi=100)


def _identifiability_figure(parameters: pd.DataFrame, path: Path) -> bool:
    if parameters.empty:
        return False
    plt = pyplot()
    table = parameters.groupby(["parameter", "group"])["identifiable"].mean().unstack("group")
    rse = parameters.replace([np.inf], np.nan).groupby("parameter")["se_relative"].median()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.4))
    table.plot.bar(ax=a, color=[_colour(g) for g in table.columns], rot=30, fontsize=7)
    a.set_ylabel("fraction identifiable (rel. SE ≤ 50 %)", fontsize=8)
    a.set_ylim(0, 1.05)
    a.legend(fontsize=7)
    rse.plot.bar(ax=b, color="#666666", rot=30, fontsize=7)
    b.set_yscale("log")
    b.axhline(SLOPPY_SE, color="red", lw=0.8)
    b.set_ylabel("median relative SE", fontsize=8)
    return save_figure(fig, path, dpi=100)


def _circle_figure(points: pd.DataFrame, path: Path) -> bool:
    if points.empty:
        return False
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    for group, g in points.groupby("group"):
        ax.scatter(g["serum_mg"], g["m_over_i"], s=14, color=_colour(group), label=group, alpha=0.8)
    ax.axvline(0.7, color="red", lw=0.8, ls="--")
    ax.text(
        0.7, ax.get_ylim()[1], " hypomagnesaemia < 0.7 mmol/L", color="red", fontsize=7, va="top"
    )
    ax.set_xlabel("fitted fasting serum Mg²⁺ (mmol/L)")
    ax.set_ylabel("fitted clamp M/I (insulin sensitivity)")
    ax.set_title("Where each subject sits on the Mg²⁺ – insulin-resistance circle", fontsize=9)
    ax.legend(fontsize=7)
    return save_figure(fig, path, dpi=100)


# --- the report -----------------------------------------------------------------------------------


def _pick(subjects: pd.DataFrame, n: int) -> list[str]:
    """Up to n subjects, taken in turn from each group."""
    by = [
        list(g["subject"]) for _, g in subjects.sort_values("subject").groupby("group", sort=True)
    ]
    out: list[str] = []
    while len(out) < n and any(by):
        for ids in by:
            if ids and len(out) < n:
                out.append(ids.pop(0))
    return out


def _model_data(cfg: RunConfig, dataset: Dataset, subjects, parameters, log):
    """(fits items, fasting rows, vicious-circle points) from one simulation per structure."""
    ok = subjects[subjects["status"] == "converged"]
    shown = set(_pick(ok, cfg.report.max_subjects))
    everyone = list(ok["subject"])
    if len(everyone) > MAX_CIRCLE_SUBJECTS:
        everyone = everyone[:: -(-len(everyone) // MAX_CIRCLE_SUBJECTS)]
    chosen = sorted(set(everyone) | shown)
    if not chosen:
        return [], pd.DataFrame(), pd.DataFrame()
    observables = sorted(dataset.observations["observable"].unique())
    errors = error_models_for(cfg, observables)
    batches = _report_batches(cfg, dataset, chosen)
    groups = subjects.set_index("subject")["group"].to_dict()
    items, fasting_rows, circle = [], [], []
    for batch in batches:
        u = _u_of(batch, parameters)
        experiments = batch.problems.experiments
        grids = _grids(batch)
        out = _curves(batch, u, grids)
        for i, subject in enumerate(batch.subjects):
            point: dict[str, Any] = dict(subject=subject, group=groups.get(subject, ""))
            for k, e in enumerate(experiments):
                lane = _Lane.of(e, i, out[f"pred{k}"][i], point)
                if grids[k] is None:
                    fasting_rows += _fasting_rows(lane)
                    continue
                if f"mi{k}" in out:
                    point["m_over_i"] = float(out[f"mi{k}"][i])
                if subject in shown:
                    items += _curve_items(lane, grids[k], out[f"dense{k}"][i], errors)
            if "serum_mg" in point and "m_over_i" in point:
                circle.append(point)
    return items, pd.DataFrame(fasting_rows), pd.DataFrame(circle)


@dataclasses.dataclass(frozen=True)
class _Lane:
    """One subject's observations of one experiment (NumPy), its predictions `pred` and its
    vicious-circle `point` (subject, group; fitted serum Mg²⁺ and M/I as they are found)."""

    experiment: Any
    values: np.ndarray
    mask: np.ndarray
    obs_index: np.ndarray
    times: np.ndarray
    pred: np.ndarray
    point: dict[str, Any]

    @classmethod
    def of(cls, e, i: int, pred: np.ndarray, point: dict[str, Any]) -> _Lane:
        """Subject `i` of the batch's experiment `e`."""
        return cls(
            experiment=e,
            values=np.asarray(e.values)[i],
            mask=np.asarray(e.mask)[i],
            obs_index=np.asarray(e.observable_index)[i],
            times=np.asarray(e.times)[i][np.asarray(e.time_index)[i]],
            pred=pred,
            point=point,
        )


def _fasting_rows(lane: _Lane) -> list[dict]:
    """Observed vs fitted fasting labs of one subject (records its fitted serum Mg²⁺)."""
    rows = []
    for j in np.flatnonzero(lane.mask):
        name = lane.experiment.observable_names[lane.obs_index[j]]
        rows.append(
            dict(
                subject=lane.point["subject"],
                group=lane.point["group"],
                observable=name,
                observed=lane.values[j],
                fitted=lane.pred[j],
                unit=MODEL_UNITS.get(name, ""),
            )
        )
        if name == "serum_mg":
            lane.point["serum_mg"] = float(lane.pred[j])
    return rows


def _curve_items(lane: _Lane, grid: np.ndarray, dense: np.ndarray, errors) -> list[dict]:
    """Data, fitted curve and the error model's 95 % band of each dynamic observable."""
    e = lane.experiment
    names = [n for n in e.observable_names if n not in INTERVAL_OBSERVABLES]
    observed = np.asarray([e.observable_names[o] for o in lane.obs_index])
    # a forced-glucose curve stops at the subject's last sample (its input ends there)
    shown = grid <= lane.times[lane.mask].max() if _forced(e) else np.ones(len(grid), bool)
    items = []
    for c, name in enumerate(names):
        sel = lane.mask & (observed == name)
        if not sel.any():
            continue
        em = errors[name]
        f = dense[:, c]
        sigma = np.sqrt(float(em.additive) ** 2 + (float(em.proportional) * f) ** 2)
        items.append(
            dict(
                subject=lane.point["subject"],
                group=lane.point["group"],
                protocol=_protocol_label(e.protocol),
                observable=name,
                unit=MODEL_UNITS.get(name, ""),
                t=grid[shown],
                fit=f[shown],
                low=(f - 1.96 * sigma)[shown],
                high=(f + 1.96 * sigma)[shown],
                t_obs=lane.times[sel],
                y_obs=lane.values[sel],
            )
        )
    return items


def _protocol_label(protocol) -> str:
    if isinstance(protocol, Series):
        return FORCED_GLUCOSE
    name = type(protocol).__name__
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


def _read(path: Path) -> pd.DataFrame:
    """A CSV table, or an empty frame when it is missing or empty."""
    try:
        return pd.read_csv(path)
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return pd.DataFrame()


#: The report's figures: (file, caption); drawn when there is something to draw.
FIGURES = {
    "fits": ("fits.png", "Data and fitted curves per subject and protocol"),
    "fasting": ("fasting.png", "Fasting labs: observed vs fitted"),
    "loss": ("loss.png", "Loss curves"),
    "waterfall": ("waterfall.png", "Multistart waterfall"),
    "estimates": ("estimates.png", "Estimates with 95 % intervals"),
    "cohort": ("cohort.png", "Cohort distributions by group"),
    "recovery": ("recovery.png", "Estimates vs truth"),
    "identifiability": ("identifiability.png", "Identifiability"),
    "circle": ("vicious_circle.png", "The vicious circle: serum Mg²⁺ vs insulin sensitivity"),
}
#: The summary.json keys the report's summary table shows.
SUMMARY_KEYS = (
    "subjects",
    "converged",
    "status",
    "median_iterations",
    "seconds_compile",
    "seconds_total",
    "programs",
)


def write_report(
    run_dir: str | Path,
    *,
    cfg: RunConfig | None = None,
    dataset: Dataset | None = None,
    log: logging.Logger | None = None,
) -> Path:
    """Figures and `report.html` for the fit run in `run_dir` (reads its config and tables;
    the dataset from the config's data path unless given)."""
    run_dir = Path(run_dir)
    log = log or logging.getLogger("mgjax.report")
    cfg = cfg or load_config(run_dir / "config.yaml")
    tables = _read_run(run_dir)
    dataset = dataset or load_data(cfg.data.path)
    truth_path = Path(cfg.data.path) / "truth.csv" if cfg.data.path else None
    truth = pd.read_csv(truth_path) if truth_path and truth_path.exists() else None
    figures = _draw_figures(run_dir, cfg, dataset, tables, truth, log)
    return _write_page(run_dir, cfg, tables, figures)


def _read_run(run_dir: Path) -> dict[str, Any]:
    """The finished fit's tables: subjects, parameters, summary, loss history, starts."""
    if not (run_dir / "subjects.csv").exists():
        raise FileNotFoundError(f"{run_dir}: no subjects.csv; is this a finished fit run?")
    tables: dict[str, Any] = dict(
        subjects=pd.read_csv(run_dir / "subjects.csv"),
        parameters=pd.read_csv(run_dir / "parameters.csv"),
        summary=json.loads((run_dir / "summary.json").read_text()),
    )
    wide = read_parts(run_dir)
    history, starts = side_tables(wide) if len(wide) else (pd.DataFrame(), pd.DataFrame())
    return tables | dict(history=history, starts=starts)


def _draw_figures(run_dir, cfg, dataset, tables, truth, log) -> list[tuple[str, str]]:
    """Draw each figure that has something to show; their (file, caption) in page order."""
    subjects, parameters = tables["subjects"], tables["parameters"]
    try:
        items, fasting_rows, circle = _model_data(cfg, dataset, subjects, parameters, log)
    except Exception as e:  # a report must not lose a finished run: say what is missing
        log.warning("report: fitted curves not drawn (%s: %s)", type(e).__name__, e)
        items, fasting_rows, circle = [], pd.DataFrame(), pd.DataFrame()
    drawings = dict(
        fits=lambda path: _fits_figure(items, path),
        fasting=lambda path: _fasting_figure(fasting_rows, path),
        loss=lambda path: _loss_figure(tables["history"], subjects, path),
        waterfall=lambda path: _waterfall_figure(tables["starts"], path),
        estimates=lambda path: _estimates_figure(parameters, truth, path),
        cohort=lambda path: _cohort_figure(parameters, subjects, path),
        recovery=lambda path: truth is not None and _recovery_figure(parameters, truth, path),
        identifiability=lambda path: _identifiability_figure(parameters, path),
        circle=lambda path: _circle_figure(circle, path),
    )
    figures = []
    for key, draw in drawings.items():
        name, caption = FIGURES[key]
        if draw(run_dir / name):
            figures.append((name, caption))
    return figures


def summary_rows(summary: dict) -> list[tuple[str, Any]]:
    """(key, value) for the `SUMMARY_KEYS` that summary.json holds; lists and dicts as JSON.
    The report's summary table and `mgjax fit`'s printed table."""
    return [
        (
            k,
            json.dumps(summary[k], default=str)
            if isinstance(summary[k], (dict, list))
            else summary[k],
        )
        for k in SUMMARY_KEYS
        if k in summary
    ]


def _facts(summary: dict) -> pd.DataFrame:
    """The summary table of the report."""
    return pd.DataFrame(summary_rows(summary), columns=["", "value"])


def _write_page(run_dir: Path, cfg: RunConfig, tables: dict, figures) -> Path:
    """`report.html`: summary, figures, tables, environment and the resolved config."""
    env_path = run_dir / "environment.json"
    env = json.loads(env_path.read_text()) if env_path.exists() else {}
    config_path = run_dir / "config.yaml"
    config_text = config_path.read_text() if config_path.exists() else ""
    parts = page_head(f"mgjax run {run_dir.name}", f"mgjax fit: {run_dir.name}")
    parts += [
        f"<p>Data: <code>{html.escape(str(cfg.data.path))}</code>; free parameters: "
        f"{html.escape(', '.join(cfg.fit.free))}; optimiser {html.escape(cfg.optimiser.name)}.</p>",
        *section_html("Summary", table_html(_facts(tables["summary"]))),
    ]
    for name, caption in figures:
        parts += section_html(caption, figure_html(run_dir / name, caption))
    parts += section_html(
        "Cohort summary (converged subjects)", table_html(_read(run_dir / "cohort_summary.csv"))
    )
    parts += section_html("Per-subject fits", table_html(tables["subjects"]))
    parts += section_html("Estimates", table_html(tables["parameters"], rows=100))
    parts += environment_html(env)
    parts += section_html("Resolved config", f"<pre>{html.escape(config_text)}</pre>")
    return write_page(run_dir / "report.html", parts)
