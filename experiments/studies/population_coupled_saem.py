"""Population fits of the coupled Mg²⁺–glucose model by SAEM: synthetic cohorts (`mgjax
synth`'s design: a 120-min hyperinsulinaemic clamp and fasting labs per subject) drawn from a
known population — log-normal `signalling_capacity`, `insulin_clearance_rate` and
`dietary_mg_intake` around the t2dm preset, insulin clearance scaling with body weight as a
power (exponent 0.75) — fitted with random effects on the three and the weight effect, then
the typical values, the weight exponent and the ω SDs against the truth, their 95 % intervals
(SAEM's stochastic-approximation information, Louis' identity) and whether they cover it.

SAEM and its covariance step need simulations only (`covariance="stochastic"`: no
derivative of the stiff model is compiled), so the program compiles in about as long as one
vmapped solve.

    python experiments/studies/population_coupled_saem.py [--subjects 40] [--seed 0]
        [--replicates 1] [--exploration 150] [--smoothing 100] [--information-draws 100]
        [--importance-samples 200]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import pandas as pd

import mgjax
from mgjax.population import (
    CovariateEffect,
    PopulationModel,
    SaemSettings,
    cohort_problems,
    fit_population,
)
from mgjax.synth import Population, synthesize

RANDOM = ("signalling_capacity", "insulin_clearance_rate", "dietary_mg_intake")
CV = (0.30, 0.25, 0.30)
#: insulin clearance ∝ (weight / 88 kg)^0.75 (88 kg: the t2dm group's mean weight)
WEIGHT_EXPONENT = 0.75
WEIGHT_REFERENCE = 88.0
WEIGHT_EFFECT = CovariateEffect("insulin_clearance_rate", "weight", "power", WEIGHT_REFERENCE)


def truth() -> pd.DataFrame:
    """Each random quantity's typical value (the preset's: the log-normal's median at the
    reference weight) and ω (the SD of its logarithm)."""
    preset = mgjax.get_parameters(mgjax.preset("t2dm"), RANDOM)
    return pd.DataFrame(
        dict(
            typical=[float(preset[p]) for p in RANDOM],
            omega=np.sqrt(np.log1p(np.square(CV))),
        ),
        index=pd.Index(RANDOM, name="parameter"),
    )


def population() -> Population:
    return Population(
        "t2dm",
        parameters=RANDOM,
        cv=CV,
        correlation={},
        weight=(88.0, 14.0),
        weight_exponents={"insulin_clearance_rate": WEIGHT_EXPONENT},
        weight_reference=WEIGHT_REFERENCE,
    )


def cohort(n: int, seed: int):
    """(stacked problems, subjects, their covariates, the cohort's true individual values)."""
    synthetic = synthesize(n, groups={"t2dm": population()}, seed=seed)
    with tempfile.TemporaryDirectory() as folder:
        dataset = mgjax.load_dataset(synthetic.write(folder))
        problems, subjects, covariates = cohort_problems(dataset, RANDOM)
    individual = synthetic.truth.pivot(index="subject", columns="parameter", values="value")
    return problems, subjects, covariates, individual.loc[subjects, list(RANDOM)]


def fit_replicate(
    subjects: int, seed: int, settings: SaemSettings, importance_samples: int
) -> tuple[pd.DataFrame, dict]:
    """One synthetic cohort fitted: a row per estimated quantity (truth, estimate, SE, 95 %
    interval, whether it covers the truth) and the run's figures."""
    t0 = time.perf_counter()
    problems, ids, covariates, individual = cohort(subjects, seed)
    seconds_synth = time.perf_counter() - t0
    model = PopulationModel(names=RANDOM, random=RANDOM, covariates=(WEIGHT_EFFECT,))
    result = fit_population(
        problems,
        model,
        subjects=ids,
        covariates=covariates,
        method="saem",
        covariance="stochastic",
        saem_settings=settings,
        importance_samples=importance_samples,
        seed=seed,
    )
    known = truth()
    fixed = result.population_parameters.set_index("parameter")
    omega = result.random_effects.set_index("parameter")
    logs = np.log(individual.to_numpy())
    ebe = result.individual_parameters.pivot(index="subject", columns="parameter", values="ebe")
    rows = []
    for k, p in enumerate(RANDOM):
        correlation = np.corrcoef(np.log(ebe.loc[ids, p]), logs[:, k])[0, 1]
        f = fixed.loc[p]
        rows.append(
            dict(
                quantity=p,
                truth=known.loc[p, "typical"],
                estimate=f["estimate"],
                se=f["se"],
                ci_low=f["ci_low"],
                ci_high=f["ci_high"],
                cohort_value=float(np.exp(logs[:, k].mean())),
                ebe_truth_correlation=correlation,
            )
        )
    f = fixed.loc[WEIGHT_EFFECT.name]
    rows.append(
        dict(
            quantity=WEIGHT_EFFECT.name,
            truth=WEIGHT_EXPONENT,
            estimate=f["estimate"],
            se=f["se"],
            ci_low=f["ci_low"],
            ci_high=f["ci_high"],
        )
    )
    for k, p in enumerate(RANDOM):
        o = omega.loc[p]
        rows.append(
            dict(
                quantity=f"omega[{p}]",
                truth=known.loc[p, "omega"],
                estimate=o["omega_sd"],
                se=o["se"],
                ci_low=o["omega_sd"] - 1.96 * o["se"],
                ci_high=o["omega_sd"] + 1.96 * o["se"],
                cohort_value=float(logs[:, k].std(ddof=1)),
            )
        )
    table = pd.DataFrame(rows)
    table.insert(0, "seed", seed)
    table["error_percent"] = 100 * (table["estimate"] / table["truth"] - 1)
    table["covered"] = (table["ci_low"] <= table["truth"]) & (table["truth"] <= table["ci_high"])
    figures = dict(
        seed=seed,
        subjects=len(ids),
        excluded=len(result.excluded),
        seconds_compile=result.seconds_compile,
        seconds_total=result.seconds_total,
        seconds_synth=seconds_synth,
        ofv_importance_sampling=result.ofv_importance_sampling,
    )
    return table, figures


def main(
    subjects: int = 40,
    seed: int = 0,
    exploration: int = 150,
    smoothing: int = 100,
    importance_samples: int = 200,
    replicates: int = 1,
    information_draws: int = 100,
) -> pd.DataFrame:
    """`replicates` cohorts (seeds `seed`, `seed` + 1, …), each fitted; returns every
    replicate's rows and prints them with the errors and the coverage over replicates."""
    settings = SaemSettings(
        exploration=exploration,
        smoothing=smoothing,
        annealing=min(100, exploration),
        information_draws=information_draws,
    )
    tables = []
    for r in range(replicates):
        table, figures = fit_replicate(subjects, seed + r, settings, importance_samples)
        tables.append(table)
        print(table.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
        print(
            f"seed {figures['seed']}: {figures['subjects']} subjects ({figures['excluded']} "
            f"excluded), SAEM {settings.iterations} iterations + {information_draws} draws "
            f"of the information: compile {figures['seconds_compile']:.1f} s, total "
            f"{figures['seconds_total']:.1f} s (synthesis {figures['seconds_synth']:.1f} s); "
            f"importance-sampling OFV {figures['ofv_importance_sampling']:.2f}",
            flush=True,
        )
    table = pd.concat(tables, ignore_index=True)
    if replicates > 1:
        summary = table.groupby("quantity", sort=False).agg(
            truth=("truth", "first"),
            bias_percent=("error_percent", "mean"),
            worst_percent=("error_percent", lambda e: e.abs().max()),
            median_rse_percent=("se", lambda s: np.nan),
            coverage=("covered", "mean"),
        )
        rse = 100 * table["se"] / table["estimate"].abs()
        summary["median_rse_percent"] = rse.groupby(table["quantity"], sort=False).median()
        print(f"over {replicates} replicates:")
        print(summary.to_string(float_format=lambda x: f"{x:.3g}"))
        print(f"all intervals: coverage {table['covered'].mean():.3f} of {len(table)}")
    return table


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subjects", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--replicates", type=int, default=1)
    parser.add_argument("--exploration", type=int, default=150)
    parser.add_argument("--smoothing", type=int, default=100)
    parser.add_argument("--information-draws", type=int, default=100)
    parser.add_argument("--importance-samples", type=int, default=200)
    parser.add_argument("--csv", help="write every replicate's rows to this file")
    args = parser.parse_args()
    result = main(
        args.subjects,
        args.seed,
        args.exploration,
        args.smoothing,
        args.importance_samples,
        args.replicates,
        args.information_draws,
    )
    if args.csv:
        result.to_csv(args.csv, index=False)
