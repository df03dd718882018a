"""Replicate recovery of a population fit (FOCE-I, SAEM or both) on sparse one-compartment
cohorts: fixed effects, the covariate exponent and the random-effect SDs against the truth
over replicate cohorts — bias, relative error and 95 % interval coverage; with both methods,
how far apart their estimates are in standard errors and how their OFVs compare; with
`--per-subject`, what fitting every subject on its own (the two-stage approach) makes of the
same data.

    python experiments/studies/population_recovery.py [--replicates 20] [--subjects 200]
        [--method foce-i|saem|both] [--per-subject]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from mgjax.fit import fit
from mgjax.population import (
    CovariateEffect,
    PopulationModel,
    SaemSettings,
    fit_population,
    one_compartment_problem,
    simulate_one_compartment_cohort,
)

TYPICAL = dict(ka=1.2, cl=4.0, v=40.0, sigma_additive=0.05, sigma_proportional=0.1)
OMEGA = dict(ka=0.3, cl=0.25, v=0.2)
WEIGHT_EXPONENT = 0.75
TIMES = [0.5, 2.0, 8.0]  # three samples per subject
START = {
    "ka": 1.0,
    "cl": 5.0,
    "v": 50.0,
    "sigma_additive[concentration]": 0.1,
    "sigma_proportional[concentration]": 0.2,
}
Z95 = 1.959963984540054


def truth_rows() -> dict[str, float]:
    return {
        "ka": TYPICAL["ka"],
        "cl": TYPICAL["cl"],
        "v": TYPICAL["v"],
        "sigma_additive[concentration]": TYPICAL["sigma_additive"],
        "sigma_proportional[concentration]": TYPICAL["sigma_proportional"],
        "cl~weight": WEIGHT_EXPONENT,
        "omega[ka]": OMEGA["ka"],
        "omega[cl]": OMEGA["cl"],
        "omega[v]": OMEGA["v"],
    }


def cohort(seed: int, n: int):
    return simulate_one_compartment_cohort(
        n,
        typical=TYPICAL,
        omega_sd=OMEGA,
        times=TIMES,
        weight_exponent=WEIGHT_EXPONENT,
        seed=seed,
    )


def one_replicate(seed: int, n: int, method: str = "foce-i") -> pd.DataFrame:
    problems, weights, _ = cohort(seed, n)
    model = PopulationModel(
        names=problems[0].names,
        random=("ka", "cl", "v"),
        covariates=(CovariateEffect("cl", "weight", "power", 70.0),),
    )
    t0 = time.perf_counter()
    result = fit_population(
        problems,
        model,
        covariates={"weight": weights},
        start=START,
        method=method,
        saem_settings=SaemSettings(),
        importance_samples=1000,
        seed=seed,
    )
    seconds = time.perf_counter() - t0
    fixed = result.population_parameters[["parameter", "estimate", "se", "ci_low", "ci_high"]]
    random = result.random_effects.assign(
        parameter=lambda f: "omega[" + f["parameter"] + "]",
        estimate=lambda f: f["omega_sd"],
        ci_low=lambda f: f["omega_sd"] * np.exp(-Z95 * f["se"] / f["omega_sd"]),
        ci_high=lambda f: f["omega_sd"] * np.exp(Z95 * f["se"] / f["omega_sd"]),
    )[["parameter", "estimate", "se", "ci_low", "ci_high"]]
    table = pd.concat([fixed, random], ignore_index=True)
    table["method"] = method
    table["ofv"] = result.ofv
    table["ofv_importance_sampling"] = result.ofv_importance_sampling
    table["truth"] = table["parameter"].map(truth_rows())
    table["seed"] = seed
    table["converged"] = result.converged
    table["seconds"] = seconds
    return table


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    rows = rows.assign(
        relative_error=lambda f: f["estimate"] / f["truth"] - 1.0,
        covered=lambda f: (f["ci_low"] <= f["truth"]) & (f["truth"] <= f["ci_high"]),
    )
    return rows.groupby("parameter", sort=False).agg(
        truth=("truth", "first"),
        mean_estimate=("estimate", "mean"),
        bias_percent=("relative_error", lambda e: 100 * e.mean()),
        max_abs_error_percent=("relative_error", lambda e: 100 * e.abs().max()),
        coverage_percent=("covered", lambda c: 100 * c.mean()),
    )


def compare_methods(rows: pd.DataFrame) -> pd.DataFrame:
    """Per parameter: the largest |SAEM − FOCE-I| over replicates in FOCE-I's SEs, and the
    replicates' median OFV differences (FOCE-I's OFV and the importance-sampling one)."""
    wide = rows.pivot_table(
        index=["seed", "parameter"], columns="method", values=["estimate", "se"]
    ).reset_index()
    gap = (wide[("estimate", "saem")] - wide[("estimate", "foce-i")]).abs() / wide[("se", "foce-i")]
    table = pd.DataFrame({"parameter": wide["parameter"], "gap_in_se": gap})
    table = table.groupby("parameter", sort=False).agg(
        median_gap_in_se=("gap_in_se", "median"), max_gap_in_se=("gap_in_se", "max")
    )
    ofv = rows.groupby(["seed", "method"])[["ofv", "ofv_importance_sampling"]].first()
    ofv = ofv.unstack("method")
    table.attrs["ofv_difference"] = float((ofv[("ofv", "saem")] - ofv[("ofv", "foce-i")]).median())
    table.attrs["ofv_is_difference"] = float(
        (
            ofv[("ofv_importance_sampling", "saem")] - ofv[("ofv_importance_sampling", "foce-i")]
        ).median()
    )
    return table


def per_subject(seed: int, n: int) -> pd.DataFrame:
    """Each subject fitted on its own (ka, CL, V; the error model fixed at the truth, which
    favours this approach): per quantity, the share of subjects whose 95 % interval spans more
    than a factor of 10 or who are flagged unidentifiable, the median RSE, and the two-stage
    estimates of the typical value (geometric mean) and the SD of log individual values
    (which should be ω)."""
    problems, _, truth = cohort(seed, n)
    sigma = {k: TYPICAL[k] for k in ("sigma_additive", "sigma_proportional")}
    estimates, wide, flagged, rse = [], [], [], []
    for p in problems:
        mask = np.asarray(p.mask)
        single = one_compartment_problem(
            np.asarray(p.times)[mask],
            np.asarray(p.observed)[mask],
            [0.0],
            [100.0],
            values={**START_VALUES, **sigma},
            estimate_error=(),
        )
        result = fit(single)
        estimates.append(result.estimates[:3])
        wide.append(result.ci_high[:3] / result.ci_low[:3] > 10.0)
        flagged.append(~np.asarray(result.identifiable[:3], dtype=bool))
        rse.append(100.0 * result.se[:3] / np.abs(result.estimates[:3]))
    estimates, wide, flagged = np.array(estimates), np.array(wide), np.array(flagged)
    rows = []
    for k, name in enumerate(("ka", "cl", "v")):
        finite = np.isfinite(estimates[:, k]) & (estimates[:, k] > 0)
        logs = np.log(estimates[finite, k])
        rows.append(
            dict(
                parameter=name,
                truth_typical=TYPICAL[name],
                two_stage_typical=float(np.exp(np.mean(logs))),
                truth_omega=OMEGA[name],
                two_stage_omega=float(np.std(logs, ddof=1)),
                true_individual_sd=float(np.std(np.log(truth[name]), ddof=1)),
                percent_unidentified=100.0 * float(np.mean(wide[:, k] | flagged[:, k])),
                median_rse_percent=float(np.nanmedian(np.array(rse)[:, k])),
            )
        )
    return pd.DataFrame(rows).set_index("parameter")


START_VALUES = {"ka": 1.0, "cl": 5.0, "v": 50.0}


def main(
    replicates: int = 20, subjects: int = 200, method: str = "foce-i", per_subjects: bool = False
) -> pd.DataFrame:
    methods = ["foce-i", "saem"] if method == "both" else [method]
    rows = pd.concat(
        [one_replicate(seed, subjects, m) for seed in range(replicates) for m in methods]
    )
    for m in methods:
        part = rows[rows["method"] == m]
        summary = summarise(part)
        print(f"--- {m}")
        print(summary.to_string(float_format=lambda x: f"{x:.4g}"))
        print(
            f"{replicates} replicates of {subjects} subjects; converged "
            f"{int(part.groupby('seed')['converged'].first().sum())}/{replicates}; "
            f"median {part.groupby('seed')['seconds'].first().median():.1f} s per fit"
        )
    if method == "both":
        comparison = compare_methods(rows)
        print("--- SAEM vs FOCE-I: |difference| in FOCE-I standard errors")
        print(comparison.to_string(float_format=lambda x: f"{x:.3g}"))
        print(
            f"median OFV difference (SAEM − FOCE-I) {comparison.attrs['ofv_difference']:+.3f}; "
            f"importance-sampling OFV {comparison.attrs['ofv_is_difference']:+.3f}"
        )
    if per_subjects:
        table = per_subject(0, subjects)
        print("--- per-subject fits of replicate 0 (the two-stage approach)")
        print(table.to_string(float_format=lambda x: f"{x:.4g}"))
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--replicates", type=int, default=20)
    parser.add_argument("--subjects", type=int, default=200)
    parser.add_argument("--method", choices=["foce-i", "saem", "both"], default="foce-i")
    parser.add_argument("--per-subject", action="store_true")
    args = parser.parse_args()
    main(args.replicates, args.subjects, args.method, args.per_subject)
