"""Benchmark of population (nonlinear mixed-effects) fits: mgjax's FOCE-I against R's `nlme`
(Lindstrom–Bates) on the same data and the same structural model, side by side in one run.

Per size: a simulated cohort (`simulate_one_compartment_cohort`: one 100 mg oral dose, four
samples at 0.5, 2, 6, 12 h, log-normal ka, CL, V with ω 0.3/0.25/0.2, CL ∝ (WT/70)^0.75,
additive error 0.08 mg/L only) written as a NONMEM-style CSV (`nonmem_table`); both tools fit
that file from the same start (ka 1 1/h, CL 5 L/h, V 50 L, weight exponent 0):

- mgjax: `read_nonmem` + `one_compartment_problems` (as the CLI: additive error only, the
  proportional term zero) and `fit_population` (FOCE-I, random ka, cl, v, diagonal Ω, the
  power weight effect on cl, covariance step included). Timed cold (the first fit of a size
  compiles its programs) and warm (a second fit of the same size reuses them, as a replicate
  would): compile s = cold − warm; estimate s = the warm fit.
- nlme: `experiments/benchmarks/nlme_peer.R` in an `Rscript` subprocess (method ML, pdDiag,
  the closed-form model with its exact gradient, nlme's default additive error); its time is
  the `nlme()` call (R's start-up and CSV reading excluded).

Ratio: nlme's seconds over mgjax's warm estimate seconds (above 1: mgjax is faster);
`ratio_with_compile` over mgjax's cold fit.

Peak memory: the resident-set high-water mark (`getrusage` ru_maxrss) — for mgjax this
process's, which only grows, so a size's figure includes the sizes before it; for nlme its
`Rscript` process's own (VmHWM, read by the R script: a parent's getrusage view of a child
keeps the high-water mark of the forking Python process).

Estimates compared one to one (ka, CL, V in physical units, the weight exponent, the ω SDs and
σ), with the relative difference and whether |mgjax − nlme| is within both tools' SEs. The
OFV of mgjax is −2 log L with all constants, as nlme's −2·logLik; the table also gives mgjax's
FOCE-I OFV at nlme's estimates (EBEs refitted there), which says whether a difference between
the estimates is the optimiser's or the objective's, and nlme refitted from mgjax's estimates
(`nlme_restart_max_rel_diff`: its largest relative change), which says whether nlme's answer
depends on its start.

`--cli-size N` (default 200): also fit the size-N file through the command line
(`mgjax population configs/population_pk.yaml --data … population.estimate_error=[additive]`)
and check its tables against nlme's: fixed effects within 2 %, SDs within 10 %.

    python experiments/benchmarks/bench_population.py                      # 100, 200, 1000
    python experiments/benchmarks/bench_population.py --sizes 100,200 --no-peer
    bash experiments/benchmarks/setup_population_peer.sh                   # R + nlme (Debian)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from mgjax.data import read_nonmem
from mgjax.population import (
    CovariateEffect,
    PopulationModel,
    empirical_bayes,
    fit_population,
    nonmem_table,
    one_compartment_problems,
    simulate_one_compartment_cohort,
    stack_problems,
    subject_objective,
)

ROOT = Path(__file__).resolve().parents[2]
PEER = Path(__file__).with_name("nlme_peer.R")
CONFIG = ROOT / "configs" / "population_pk.yaml"

#: the simulated truth (doses mg, times h, concentrations mg/L)
TYPICAL = dict(ka=1.2, cl=4.0, v=40.0, sigma_additive=0.08, sigma_proportional=0.0)
OMEGA_SD = dict(ka=0.3, cl=0.25, v=0.2)
WEIGHT_EXPONENT = 0.75
TIMES = (0.5, 2.0, 6.0, 12.0)
#: both tools start here (the weight exponent at 0; mgjax's ω at 0.3 and σ at its default,
#: 0.05 mg/L; nlme starts its variance parameters itself)
START = dict(ka=1.0, cl=5.0, v=50.0)
#: the estimates compared: (row name, mgjax table and parameter, nlme source)
COMPARED = (
    ("ka", "fixed"),
    ("cl", "fixed"),
    ("v", "fixed"),
    ("cl~wt", "fixed"),
    ("omega_ka", "sd"),
    ("omega_cl", "sd"),
    ("omega_v", "sd"),
    ("sigma_additive", "sd"),
)
#: the CLI check's tolerances (issue 23): fixed effects 2 %, SDs (ω and σ) 10 %
CLI_TOLERANCE = dict(fixed=0.02, sd=0.10)
MGJAX_CLI = Path(sys.executable).with_name("mgjax")


def peak_rss_mib() -> float:
    """This process's resident-set high-water mark (MiB; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# --- data ------------------------------------------------------------------------------------


def simulate(n: int, seed: int = 0) -> pd.DataFrame:
    """A NONMEM-style table (ID, TIME, DV, MDV, EVID, AMT, CMT, WT) of `n` simulated subjects."""
    problems, weights, _ = simulate_one_compartment_cohort(
        n,
        typical=TYPICAL,
        omega_sd=OMEGA_SD,
        times=list(TIMES),
        weight_exponent=WEIGHT_EXPONENT,
        seed=seed,
    )
    subjects = [str(i + 1) for i in range(n)]
    return nonmem_table(problems, subjects, pd.DataFrame({"wt": weights}, index=subjects))


def load(csv: Path) -> tuple[list, list[str], pd.DataFrame]:
    """(problems, subjects, covariates) of a CSV, as the CLI builds them for an additive-only
    error model (the proportional term held at zero)."""
    table = read_nonmem(csv, observables={2: "concentration"}, dose_compartments=(1,))
    return one_compartment_problems(
        table, values={"sigma_proportional": 0.0}, estimate_error=("additive",)
    )


def population_model(names: tuple[str, ...]) -> PopulationModel:
    """Random ka, cl, v (diagonal Ω) and CL ∝ (WT/70)^β."""
    return PopulationModel(
        names=names,
        random=("ka", "cl", "v"),
        covariates=(CovariateEffect("cl", "wt", "power", reference=70.0),),
    )


# --- mgjax -----------------------------------------------------------------------------------


def fit_mgjax(csv: Path) -> dict[str, Any]:
    """Cold and warm FOCE-I fits of the file; timings, memory and the estimates."""
    t0 = time.perf_counter()
    problems, subjects, covariates = load(csv)
    prepare = time.perf_counter() - t0
    model = population_model(tuple(problems[0].names))

    def fit():
        t = time.perf_counter()
        result = fit_population(
            problems, model, subjects=subjects, covariates=covariates, start=START
        )
        return result, time.perf_counter() - t

    cold, cold_s = fit()
    warm, warm_s = fit()
    return dict(
        result=warm,
        problems=problems,
        subjects=subjects,
        covariates=covariates,
        model=model,
        prepare_s=prepare,
        cold_s=cold_s,
        warm_s=warm_s,
        compile_s=max(cold_s - warm_s, 0.0),
        outer_compile_s=cold.seconds_compile,
        peak_rss_mib=peak_rss_mib(),
        same_as_cold=bool(np.allclose(cold.theta, warm.theta, rtol=1e-10, atol=1e-12)),
    )


def mgjax_estimates(population: pd.DataFrame, random: pd.DataFrame) -> dict[str, tuple]:
    """{name: (estimate, se)} from mgjax's `population_parameters` and `random_effects`
    tables (the σ row's name carries its observable: `sigma_additive[concentration]`)."""
    fixed = population.set_index("parameter")
    sd = random.set_index("parameter")
    out = {
        k: (float(fixed.loc[k, "estimate"]), float(fixed.loc[k, "se"])) for k in ("ka", "cl", "v")
    }
    out["cl~wt"] = (float(fixed.loc["cl~wt", "estimate"]), float(fixed.loc["cl~wt", "se"]))
    for k in ("ka", "cl", "v"):
        out[f"omega_{k}"] = (float(sd.loc[k, "omega_sd"]), float(sd.loc[k, "se"]))
    sigma = [p for p in fixed.index if str(p).startswith("sigma_additive")][0]
    out["sigma_additive"] = (float(fixed.loc[sigma, "estimate"]), float(fixed.loc[sigma, "se"]))
    return out


def ofv_at(fitted: dict[str, Any], estimates: dict[str, tuple]) -> float:
    """mgjax's FOCE-I OFV at other estimates (physical units by `COMPARED`'s names), the
    empirical Bayes estimates refitted there."""
    model = fitted["model"]
    mu = [np.log(estimates[k][0]) for k in ("ka", "cl", "v", "sigma_additive")]
    theta = jnp.asarray(
        [
            *mu,
            estimates["cl~wt"][0],
            *(np.log(estimates[f"omega_{k}"][0]) for k in "ka cl v".split()),
        ]
    )
    stacked = stack_problems(fitted["problems"])
    z = jnp.asarray(model.design(fitted["covariates"], fitted["subjects"]))
    xi0 = jnp.zeros((z.shape[0], model.n_random))

    @jax.jit
    def total(stacked, theta, z, xi0):
        def one(problem, zi, x0):
            xi, *_ = empirical_bayes(model, problem, theta, zi, x0)
            return subject_objective(model, problem, theta, zi, xi)

        return jnp.sum(jax.vmap(one)(stacked, z, xi0))

    return float(total(stacked, theta, z, xi0))


# --- nlme ------------------------------------------------------------------------------------


def rscript() -> str | None:
    """The `Rscript` on PATH with nlme installed, or None."""
    exe = shutil.which("Rscript")
    if exe is None:
        return None
    ok = subprocess.run(
        [exe, "-e", "quit(status = !requireNamespace('nlme', quietly = TRUE))"],
        capture_output=True,
    )
    return exe if ok.returncode == 0 else None


def fit_nlme(
    csv: Path,
    out: Path,
    gradient: str = "analytic",
    start: dict[str, float] | None = None,
) -> dict[str, Any]:
    """nlme on the file in an `Rscript` subprocess, from `start` (ka, cl, v, beta; default
    `START` and β = 0): its JSON (estimates, seconds, peak memory), plus the process's wall
    time."""
    start = {**START, "beta": 0.0, **(start or {})}
    exe = rscript()
    if exe is None:
        raise RuntimeError(
            "Rscript with nlme not found: bash experiments/benchmarks/setup_population_peer.sh"
        )
    command = [
        exe,
        str(PEER),
        "--data",
        str(csv),
        "--out",
        str(out),
        "--ka",
        repr(float(start["ka"])),
        "--cl",
        repr(float(start["cl"])),
        "--v",
        repr(float(start["v"])),
        "--beta",
        repr(float(start["beta"])),
        "--gradient",
        gradient,
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    out.with_suffix(".log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"nlme_peer.R failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    result = json.loads(out.read_text())
    result["wall_s"] = wall
    return result


def nlme_estimates(peer: dict[str, Any]) -> dict[str, tuple]:
    """{name: (estimate, se)} in mgjax's units: exp of the log-scale fixed effects (SE by the
    delta method), the ω SDs and σ with SE = SD·SE(log SD)."""
    fixed = peer["fixed"]
    out = {}
    for k, key in (("ka", "lka"), ("cl", "lcl"), ("v", "lv")):
        value = np.exp(fixed[key]["estimate"])
        out[k] = (float(value), float(value * fixed[key]["se"]))
    out["cl~wt"] = (float(fixed["lcl_lwt"]["estimate"]), float(fixed["lcl_lwt"]["se"]))

    def se(sd, se_log):
        return float(sd * se_log) if se_log is not None else float("nan")

    for k in ("ka", "cl", "v"):
        out[f"omega_{k}"] = (
            float(peer["omega_sd"][k]),
            se(peer["omega_sd"][k], peer["omega_sd_se_log"][k]),
        )
    out["sigma_additive"] = (float(peer["sigma"]), se(peer["sigma"], peer["sigma_se_log"]))
    return out


def compare(mg: dict[str, tuple], peer: dict[str, tuple]) -> pd.DataFrame:
    """Per estimate: both values and SEs, the relative difference (to nlme's) and whether
    |mgjax − nlme| is within both SEs."""
    rows = []
    for name, kind in COMPARED:
        (a, sa), (b, sb) = mg[name], peer[name]
        diff = abs(a - b)
        rows.append(
            dict(
                parameter=name,
                kind=kind,
                mgjax=a,
                mgjax_se=sa,
                nlme=b,
                nlme_se=sb,
                rel_diff=(a - b) / abs(b),
                diff_over_se=diff / min(sa, sb),
                within_se=bool(diff <= sa and diff <= sb),
            )
        )
    return pd.DataFrame(rows)


# --- the command line --------------------------------------------------------------------------


def fit_cli(csv: Path, run: Path) -> dict[str, Any]:
    """`mgjax population` on the file (additive error only); its tables and summary."""
    start = "{" + ", ".join(f"{k}: {v}" for k, v in START.items()) + "}"
    command = [
        str(MGJAX_CLI),
        "population",
        str(CONFIG),
        "--data",
        str(csv),
        "--out",
        str(run),
        "--force",
        "population.estimate_error=[additive]",
        # the benchmark's start (the example config's also names sigma_proportional, not a
        # quantity of the additive model, and starts σ at 0.1)
        f"population.start={start}",
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        )
    return dict(
        command=" ".join(command),
        wall_s=wall,
        summary=json.loads((run / "summary.json").read_text()),
        estimates=mgjax_estimates(
            pd.read_csv(run / "population_parameters.csv"), pd.read_csv(run / "random_effects.csv")
        ),
    )


def cli_check(cli: dict[str, Any], peer: dict[str, tuple]) -> pd.DataFrame:
    """The CLI's estimates against nlme's: fixed effects within 2 %, SDs within 10 %."""
    table = compare(cli["estimates"], peer)
    table["tolerance"] = table["kind"].map(CLI_TOLERANCE)
    table["pass"] = table["rel_diff"].abs() <= table["tolerance"]
    return table


# --- the run ------------------------------------------------------------------------------------


def bench_size(
    n: int, folder: Path, *, peer: bool = True, gradient: str = "analytic", seed: int = 0
) -> dict[str, Any]:
    """One size: simulate, write, fit with mgjax (and nlme); the row and the comparison."""
    csv = folder / f"pk_{n}.csv"
    simulate(n, seed=seed).to_csv(csv, index=False)
    fitted = fit_mgjax(csv)
    result = fitted["result"]
    row = dict(
        subjects=n,
        devices=len(jax.local_devices()),
        observations=result.n_observations,
        mgjax_compile_s=fitted["compile_s"],
        mgjax_outer_compile_s=fitted["outer_compile_s"],
        mgjax_estimate_s=fitted["warm_s"],
        mgjax_total_s=fitted["cold_s"],
        subjects_per_s=n / fitted["warm_s"],
        mgjax_peak_rss_mib=fitted["peak_rss_mib"],
        mgjax_iterations=result.iterations,
        mgjax_converged=result.converged,
        mgjax_ofv=result.ofv,
    )
    mg = mgjax_estimates(result.population_parameters, result.random_effects)
    out = dict(row=row, csv=csv, mgjax=mg, fitted=fitted, comparison=None, nlme=None)
    if not peer:
        return out
    raw = fit_nlme(csv, folder / f"nlme_{n}.json", gradient=gradient)
    theirs = nlme_estimates(raw)
    comparison = compare(mg, theirs)
    # nlme again, started at mgjax's estimates: whether its answer depends on the start
    again = nlme_estimates(
        fit_nlme(
            csv,
            folder / f"nlme_{n}_from_mgjax.json",
            gradient=gradient,
            start=dict(ka=mg["ka"][0], cl=mg["cl"][0], v=mg["v"][0], beta=mg["cl~wt"][0]),
        )
    )
    restart = max(abs(again[k][0] / theirs[k][0] - 1.0) for k, _ in COMPARED)
    row.update(
        nlme_s=raw["seconds"],
        nlme_wall_s=raw["wall_s"],
        nlme_peak_rss_mib=raw["peak_rss_mib"],
        nlme_iterations=raw["iterations"],
        ratio=raw["seconds"] / fitted["warm_s"],
        ratio_with_compile=raw["seconds"] / fitted["cold_s"],
        nlme_minus2loglik=raw["minus2loglik"],
        mgjax_ofv_at_nlme=ofv_at(fitted, theirs),
        nlme_restart_max_rel_diff=restart,
        all_within_se=bool(comparison["within_se"].all()),
        max_rel_diff=float(comparison["rel_diff"].abs().max()),
    )
    out.update(nlme=theirs, nlme_raw=raw, comparison=comparison)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,200,1000", help="comma-separated subject counts")
    parser.add_argument("--no-peer", action="store_true", help="mgjax only (no R, no ratio)")
    parser.add_argument(
        "--cli-size",
        type=int,
        default=200,
        help="also fit this size's file through `mgjax population` (0: skip)",
    )
    parser.add_argument(
        "--nlme-gradient",
        default="analytic",
        choices=("analytic", "numeric"),
        help="nlme's model derivatives: the exact gradient (default) or its finite differences",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "experiments/output/bench_population")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    peer = not args.no_peer
    if peer and rscript() is None:
        parser.error(
            "Rscript with nlme not found: run experiments/benchmarks/setup_population_peer.sh "
            "or pass --no-peer"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"JAX {jax.__version__}, devices {jax.devices()}, {os.cpu_count()} CPUs")

    rows, comparisons, results = [], [], {}
    for n in sizes:
        res = bench_size(n, args.out, peer=peer, gradient=args.nlme_gradient, seed=args.seed)
        results[n] = res
        rows.append(res["row"])
        print(json.dumps(res["row"]), flush=True)
        if res["comparison"] is not None:
            comparisons.append(res["comparison"].assign(subjects=n))
            print(res["comparison"].to_string(index=False, float_format="%.5g"), flush=True)

    table = pd.DataFrame(rows)
    table.to_csv(args.out / "bench_population.csv", index=False)
    report: dict[str, Any] = dict(sizes=rows)
    if comparisons:
        estimates = pd.concat(comparisons, ignore_index=True)
        estimates.to_csv(args.out / "estimates.csv", index=False)
        report["nlme"] = {
            "r_version": results[sizes[0]]["nlme_raw"]["r_version"],
            "nlme_version": results[sizes[0]]["nlme_raw"]["nlme_version"],
            "gradient": args.nlme_gradient,
        }

    if peer and args.cli_size:
        n = args.cli_size
        if n not in results:
            results[n] = bench_size(
                n, args.out, peer=True, gradient=args.nlme_gradient, seed=args.seed
            )
        cli = fit_cli(results[n]["csv"], args.out / f"cli_run_{n}")
        check = cli_check(cli, results[n]["nlme"])
        check.to_csv(args.out / "cli_check.csv", index=False)
        report["cli"] = dict(
            subjects=n,
            command=cli["command"],
            wall_s=cli["wall_s"],
            ofv=cli["summary"]["ofv"],
            seconds_total=cli["summary"]["seconds_total"],
            passed=bool(check["pass"].all()),
        )
        print(f"\nCLI check at {n} subjects ({cli['wall_s']:.1f} s): {cli['command']}")
        print(check.to_string(index=False, float_format="%.5g"))

    (args.out / "bench_population.json").write_text(json.dumps(report, indent=2, default=float))
    print()
    print(table.to_string(index=False, float_format="%.4g"))
    if peer:
        for row in rows:
            print(
                f"{row['subjects']} subjects: mgjax {row['mgjax_estimate_s']:.2f} s warm "
                f"(+{row['mgjax_compile_s']:.1f} s compile), nlme {row['nlme_s']:.2f} s: "
                f"mgjax is {row['ratio']:.2f}× nlme's speed (target ≥ 20× at 200); estimates "
                f"{'all' if row['all_within_se'] else 'NOT all'} within both SEs (largest "
                f"relative difference {100 * row['max_rel_diff']:.2f} %)"
            )
    return dict(table=table, results=results, report=report)


if __name__ == "__main__":
    main()
