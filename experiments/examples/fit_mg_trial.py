"""Fit the published oral MgCl₂ trial (Rodríguez-Morán & Guerrero-Romero, Diabetes Care
2003;26:1147) from its arm means, and say which parameters the trial identifies.

Data: the bundled dataset `mgjax/data/rodriguez_moran_2003/` (arm mean, SD and n of fasting
glucose and HbA1c at baseline; serum Mg²⁺, fasting glucose, HOMA-IR and HbA1c at 16 weeks, in
the MgCl₂ and placebo arms). Each arm is one "subject" of summary rows, weighted by the standard
error of its mean (SD/√n). Both arms share one parameter set (randomised arms of one population)
and differ only in the dose. The 16-week daily dosing is solved as its mean daily intake
(`averaged`; the daily-dose path differs by < 0.02 mmol/L in serum Mg²⁺, docs/protocols.md).

Start: the `t2dm_hypomagnesemia` preset. Free: eight parameters over five modules, with weak
log-normal priors from the parameter table (median the preset value, the plausible range = ±2
SD): twelve means cannot pin eight parameters alone, so this is a MAP fit, and a parameter
counts as identified by the trial only where the data shrink its prior SD by at least half.
The result:
predicted arm means beside the published ones (each must lie within the published SD), the
estimates with their 95 % intervals, and the identifiability report (which parameters, and
which combinations, the trial pins down).

    python experiments/examples/fit_mg_trial.py            # ~1–2 min on a 2-core CPU
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

import mgjax  # noqa: E402
import mgjax.data  # noqa: E402
from mgjax import fit  # noqa: E402

DATA = Path(mgjax.data.__file__).parent / "rodriguez_moran_2003"  # bundled with mgjax.data
FREE = (
    "dietary_mg_intake",  # intestinal: the placebo arm's serum Mg²⁺
    "saturable_absorption_max",  # intestinal: the rise with MgCl₂
    "dct_capacity",  # renal: TRPM6 reabsorption
    "signalling_capacity",  # insulin signalling: insulin sensitivity
    "receptor_mg_km",  # insulin signalling: how much Mg²⁺ matters
    "egp_max",  # glucose–insulin: fasting glucose
    "beta_cell_mass",  # beta cell: fasting insulin (HOMA-IR)
    "glycation_rate",  # glycation: HbA1c per glucose
)
PUBLISHED_UNITS = {"glucose": "mmol/L", "hba1c": "%", "serum_mg": "mmol/L", "homa_ir": "1"}


def build_problem() -> tuple[fit.FitProblem, mgjax.Dataset]:
    dataset = mgjax.load_dataset(DATA)
    base = mgjax.preset("t2dm_hypomagnesemia")
    experiments = [
        e
        for subject in dataset.subject_ids
        for e in fit.experiments_for_subject(dataset, subject, base, averaged_trials=True)
    ]
    priors = fit.range_priors(base, FREE)  # 12 means, 8 parameters: MAP, weak priors
    return fit.make_problem(base, experiments, FREE, priors=priors), dataset


def arm_table(problem: fit.FitProblem, dataset: mgjax.Dataset, u) -> pd.DataFrame:
    """Published arm means and SDs beside the fitted predictions (model units)."""
    preds, _ = problem.predictions(jnp.asarray(u))
    start, _ = problem.predictions(problem.initial())
    published = pd.read_csv(DATA / "observations.csv")
    rows = []
    for subject, e, p, p0 in zip(dataset.subject_ids, problem.experiments, preds, start):
        obs = dataset.observations[dataset.observations["subject"] == subject]
        pub = published[published["subject"] == subject]
        for k in range(e.n):
            name = e.observable_names[int(e.observable_index[k])]
            rows.append(
                dict(
                    arm=subject,
                    week=float(obs["time"].iloc[k]) / 10080.0,
                    observable=name,
                    published_mean=float(obs["value"].iloc[k]),
                    published_sd=float(pub["sd"].iloc[k]),
                    sem=float(obs["sigma"].iloc[k]),
                    preset=float(p0[k]),
                    fitted=float(p[k]),
                )
            )
    table = pd.DataFrame(rows)
    table["within_sd"] = (table["fitted"] - table["published_mean"]).abs() <= table["published_sd"]
    table["z_sem"] = (table["fitted"] - table["published_mean"]) / table["sem"]
    return table


def plot(table: pd.DataFrame, path: Path) -> None:
    names = list(dict.fromkeys(table["observable"]))
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.2))
    for ax, name in zip(axes, names):
        for arm, colour in [("magnesium", "tab:blue"), ("placebo", "tab:grey")]:
            rows = table[(table["observable"] == name) & (table["arm"] == arm)]
            ax.errorbar(
                rows["week"],
                rows["published_mean"],
                rows["published_sd"],
                fmt="o",
                color=colour,
                capsize=3,
                label=f"{arm} (published ± SD)",
            )
            ax.plot(rows["week"], rows["fitted"], "x", color=colour, ms=10, mew=2)
        ax.set_title(f"{name} ({PUBLISHED_UNITS[name]})")
        ax.set_xlabel("week")
    axes[0].legend(fontsize=7)
    fig.suptitle("Rodríguez-Morán 2003 arm means (o ± SD) and the fit (x)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(out: Path = Path("experiments/output/fit_mg_trial"), method: str | None = None) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    problem, dataset = build_problem()
    t0 = time.perf_counter()
    result = fit.fit(problem, method=method, max_steps=200, subject="rodriguez_moran_2003")
    seconds = time.perf_counter() - t0
    table = arm_table(problem, dataset, result.u)
    # the published units are the model's, so the table compares like with like
    assert all(PUBLISHED_UNITS[n] == mgjax.OBSERVABLE_UNITS[n] for n in table["observable"])
    result.save(out)
    table.to_csv(out / "arms.csv", index=False)
    plot(table, out / "fit_mg_trial.png")

    pd.set_option("display.width", 200)
    print(f"fit: {result.iterations} iterations, converged {result.converged}, {seconds:.1f} s")
    print("\nArm means (model units), published ± SD vs fitted:")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    print(f"\nwithin the published SD: {int(table['within_sd'].sum())} of {len(table)}")
    frame = result.to_dataframe()
    print("\nEstimates:")
    columns = ["parameter", "estimate", "ci_low", "ci_high", "unit", "prior_shrinkage"]
    print(frame[columns].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    identified = frame.loc[frame["identifiable"], "parameter"].tolist()
    unidentified = frame.loc[~frame["identifiable"], "parameter"].tolist()
    print(
        f"\nidentified by this trial (posterior SD ≤ ½ prior SD): {', '.join(identified) or 'none'}"
    )
    print(f"not identified: {', '.join(unidentified) or 'none'}")
    for title, directions in [
        (
            "Best-determined directions of the information (eigenvalue, loadings):",
            result.directions[::-1][:2],
        ),
        ("Sloppiest directions:", result.directions[:3]),
    ]:
        print("\n" + title)
        for d in directions:
            loads = ", ".join(f"{k} {v:+.2f}" for k, v in d["loadings"].items())
            print(f"  {d['eigenvalue']:.3g}: {loads}")
    summary = dict(
        iterations=result.iterations,
        converged=result.converged,
        seconds=seconds,
        within_sd=int(table["within_sd"].sum()),
        n_means=len(table),
        identified=identified,
        not_identified=unidentified,
    )
    (out / "trial_summary.json").write_text(json.dumps(summary, indent=2))
    return dict(table=table, result=result, summary=summary)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("experiments/output/fit_mg_trial"))
