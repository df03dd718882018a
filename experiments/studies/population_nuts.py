"""FOCE-I against a fully Bayesian fit (NUTS, numpyro) of the same population model on one
small simulated one-compartment cohort: estimates side by side, each with its SE (FOCE-I's
covariance step) or posterior SD, their difference in combined SEs, and the times.

    python experiments/studies/population_nuts.py [--subjects 36] [--warmup 500] [--samples 500]
        [--chains 2] [--error combined|proportional]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from mgjax.population import (
    CovariateEffect,
    PopulationModel,
    fit_population,
    one_compartment_problem,
    sample_population,
    simulate_one_compartment_cohort,
)

TYPICAL = dict(ka=1.2, cl=4.0, v=40.0, sigma_additive=0.05, sigma_proportional=0.1)
OMEGA = dict(ka=0.3, cl=0.25, v=0.2)
WEIGHT_EXPONENT = 0.75
START = {
    "ka": 1.0,
    "cl": 5.0,
    "v": 50.0,
    "sigma_additive[concentration]": 0.1,
    "sigma_proportional[concentration]": 0.2,
}
DOSE = 100.0  # mg, at t = 0


def truth_of(typical: dict[str, float]) -> dict[str, float]:
    """The simulated truth by table row."""
    return {
        "ka": typical["ka"],
        "cl": typical["cl"],
        "v": typical["v"],
        "sigma_additive[concentration]": typical["sigma_additive"],
        "sigma_proportional[concentration]": typical["sigma_proportional"],
        "cl~weight": WEIGHT_EXPONENT,
    } | {f"omega[{k}]": v for k, v in OMEGA.items()}


def _rows(
    foce: pd.DataFrame, nuts: pd.DataFrame, value: str, label: str, truth: dict[str, float]
) -> pd.DataFrame:
    f, b = foce.set_index("parameter"), nuts.set_index("parameter").loc[foce["parameter"]]
    names = [label.format(k) for k in f.index]
    return pd.DataFrame(
        dict(
            parameter=names,
            truth=[truth.get(k, np.nan) for k in names],
            foce=f[value].to_numpy(),
            foce_se=f["se"].to_numpy(),
            nuts_mean=b[value].to_numpy(),
            nuts_sd=b["se"].to_numpy(),
            cri_low=b["ci_low"].to_numpy(),
            cri_high=b["ci_high"].to_numpy(),
            r_hat=b["r_hat"].to_numpy(),
            ess=b["ess"].to_numpy(),
        )
    )


def side_by_side(foce, posterior, truth: dict[str, float]) -> pd.DataFrame:
    """One row per reported quantity: truth, FOCE-I (estimate, SE), NUTS (posterior mean, SD,
    95 % credible interval, r_hat, ESS) and (NUTS − FOCE-I)/√(SE² + SD²)."""
    table = pd.concat(
        [
            _rows(
                foce.population_parameters,
                posterior.population_parameters,
                "estimate",
                "{}",
                truth,
            ),
            _rows(foce.random_effects, posterior.random_effects, "omega_sd", "omega[{}]", truth),
        ],
        ignore_index=True,
    )
    table["diff_in_se"] = (table["nuts_mean"] - table["foce"]) / np.hypot(
        table["foce_se"], table["nuts_sd"]
    )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=36)
    parser.add_argument(
        "--times",
        type=float,
        nargs="+",
        default=[0.5, 2.0, 6.0, 12.0],
        help="sampling times (h) of every subject",
    )
    parser.add_argument("--warmup", type=int, default=500, help="NUTS warm-up draws per chain")
    parser.add_argument("--samples", type=int, default=500, help="NUTS draws kept per chain")
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--chain-method", default="vectorized")
    parser.add_argument("--seed", type=int, default=2, help="the simulated cohort's seed")
    parser.add_argument(
        "--error",
        default="combined",
        help="residual error simulated and estimated: combined (additive 0.05 mg/L and "
        "proportional 10 %%) or proportional (15 %%, no additive term)",
    )
    args = parser.parse_args()
    if args.error not in ("combined", "proportional"):
        parser.error(f"--error {args.error!r}: use combined or proportional")

    proportional = args.error == "proportional"
    typical = TYPICAL | (dict(sigma_additive=0.0, sigma_proportional=0.15) if proportional else {})
    problems, weights, _ = simulate_one_compartment_cohort(
        args.subjects,
        typical=typical,
        omega_sd=OMEGA,
        times=args.times,
        dose_amount=DOSE,
        weight_exponent=WEIGHT_EXPONENT,
        seed=args.seed,
    )
    start = dict(START)
    if proportional:
        problems = [
            one_compartment_problem(
                p.times,
                p.observed,
                [0.0],
                [DOSE],
                values=dict(sigma_additive=0.0),
                estimate_error=("proportional",),
            )
            for p in problems
        ]
        del start["sigma_additive[concentration]"]
    model = PopulationModel(
        names=problems[0].names,
        random=("ka", "cl", "v"),
        covariates=(CovariateEffect("cl", "weight", "power", 70.0),),
    )
    covariates = {"weight": weights}
    t0 = time.perf_counter()
    foce = fit_population(problems, model, covariates=covariates, start=start)
    t_foce = time.perf_counter() - t0
    t0 = time.perf_counter()
    posterior = sample_population(
        problems,
        model,
        covariates=covariates,
        start=start,
        num_warmup=args.warmup,
        num_samples=args.samples,
        num_chains=args.chains,
        chain_method=args.chain_method,
    )
    t_nuts = time.perf_counter() - t0

    table = side_by_side(foce, posterior, truth_of(typical))
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    print(
        f"\n{args.subjects} subjects × {len(args.times)} samples, {args.error} error; "
        f"FOCE-I {t_foce:.1f} s "
        f"(compile {foce.seconds_compile:.1f} s, converged {foce.converged}); NUTS "
        f"{t_nuts:.1f} s ({args.chains} chains × ({args.warmup} warm-up + {args.samples}) "
        f"draws, {args.chain_method}; {posterior.divergences} divergences, mean tree size "
        f"{posterior.mean_tree_size:.0f}, max r_hat {posterior.max_r_hat:.3f} and min ESS "
        f"{posterior.min_ess:.0f} over θ and every ξ)"
    )
    print("largest |difference| in combined SEs:", f"{np.max(np.abs(table['diff_in_se'])):.2f}")


if __name__ == "__main__":
    main()
