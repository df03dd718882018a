"""Benchmark of population fits of an ODE model: mgjax's FOCE-I against R's `nlme` + `deSolve`
on the same data and the same structural model, side by side in one run — the reduced
glucose–insulin model of issue 23's peer comparison.

The model is Bergman's minimal model of IVGTT glucose (`mgjax.population.MinimalModelIVGTT`),
each subject's measured insulin its input. Per size: a simulated cohort
(`simulate_minimal_model_cohort`: 13 glucose samples from 2 to 180 min, log-normal S_G, S_I,
G₀ with ω 0.3/0.4/0.15, p₂ shared, additive error 4 mg/dL) written as one CSV that both tools
fit from the same start (S_G 0.02 1/min, S_I 4, p₂ 0.04 1/min, G₀ 240 mg/dL):

- mgjax: `minimal_model_problems` + `fit_population` (FOCE-I, random S_G, S_I, G₀, diagonal Ω,
  covariance step included), the ODE solved by Diffrax (Tsit5, forward-mode derivatives of the
  solver's steps). Timed cold (the first fit compiles its programs) and warm (a second fit of
  the same size reuses them, as a replicate or a rerun in one session would).
- nlme: `experiments/benchmarks/nlme_minimal_model.R` in an `Rscript` subprocess (method ML,
  pdDiag, lsoda on every subject at once with the forward sensitivity equations as nlme's
  gradient); its time is the `nlme()` call.

Both solve at the same relative and absolute tolerance (`--rtol`, default 1e-6). Estimates are
compared one to one with their SEs; the OFVs are both −2 log L with all constants.

    python experiments/benchmarks/bench_population_ode.py               # 50, 200 subjects
    python experiments/benchmarks/bench_population_ode.py --sizes 200 --covariance expected
    bash experiments/benchmarks/setup_population_peer.sh                 # R, nlme, deSolve
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
import numpy as np
import pandas as pd

from mgjax.population import (
    PopulationModel,
    fit_population,
    minimal_model_options,
    minimal_model_problems,
    simulate_minimal_model_cohort,
)

ROOT = Path(__file__).resolve().parents[2]
PEER = Path(__file__).with_name("nlme_minimal_model.R")

#: the simulated truth (glucose mg/dL, S_I in 1e-4/min per µU/mL)
TYPICAL = dict(sg=0.025, si=5.0, p2=0.03, g0=260.0, sigma_additive=4.0, sigma_proportional=0.0)
OMEGA_SD = dict(sg=0.3, si=0.4, g0=0.15)
#: both tools start here (mgjax's ω at 0.3 and σ at its default; nlme starts its variance
#: parameters itself)
START = dict(sg=0.02, si=4.0, p2=0.04, g0=240.0)
FIXED = ("sg", "si", "p2", "g0")
RANDOM = ("sg", "si", "g0")


def peak_rss_mib() -> float:
    """This process's resident-set high-water mark (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def fit_mgjax(csv: Path, rtol: float, covariance: str = "hessian") -> dict[str, Any]:
    """Cold and warm FOCE-I fits of the file: timings, memory and the estimates."""
    table = pd.read_csv(csv)
    problems, subjects = minimal_model_problems(
        table,
        values={"sigma_proportional": 0.0},
        estimate_error=("additive",),
        options=minimal_model_options(rtol, rtol),
    )
    model = PopulationModel(names=tuple(problems[0].names), random=RANDOM)

    def fit():
        t = time.perf_counter()
        result = fit_population(
            problems, model, subjects=subjects, start=START, covariance=covariance
        )
        return result, time.perf_counter() - t

    cold, cold_s = fit()
    warm, warm_s = fit()
    fixed = warm.population_parameters.set_index("parameter")
    sd = warm.random_effects.set_index("parameter")
    est = {k: (float(fixed.loc[k, "estimate"]), float(fixed.loc[k, "se"])) for k in FIXED}
    for k in RANDOM:
        est[f"omega_{k}"] = (float(sd.loc[k, "omega_sd"]), float(sd.loc[k, "se"]))
    sigma = [p for p in fixed.index if str(p).startswith("sigma_additive")][0]
    est["sigma_additive"] = (float(fixed.loc[sigma, "estimate"]), float(fixed.loc[sigma, "se"]))
    return dict(
        result=warm,
        estimates=est,
        cold_s=cold_s,
        warm_s=warm_s,
        compile_s=max(cold_s - warm_s, 0.0),
        peak_rss_mib=peak_rss_mib(),
    )


def rscript() -> str | None:
    """The `Rscript` on PATH with nlme and deSolve installed, or None."""
    exe = shutil.which("Rscript")
    if exe is None:
        return None
    probe = "quit(status = !all(sapply(c('nlme', 'deSolve'), requireNamespace, quietly = TRUE)))"
    return exe if subprocess.run([exe, "-e", probe], capture_output=True).returncode == 0 else None


def fit_nlme(csv: Path, out: Path, rtol: float) -> dict[str, Any]:
    """nlme on the file in an `Rscript` subprocess: its JSON, with estimates in mgjax's units
    (exp of the log-scale fixed effects, SE by the delta method; SDs with SE = SD·SE(log))."""
    exe = rscript()
    if exe is None:
        raise RuntimeError(
            "Rscript with nlme and deSolve not found: "
            "bash experiments/benchmarks/setup_population_peer.sh"
        )
    command = [exe, str(PEER), "--data", str(csv), "--out", str(out)]
    for k, v in START.items():
        command += [f"--{k}", repr(float(v))]
    command += ["--rtol", repr(rtol), "--atol", repr(rtol)]
    proc = subprocess.run(command, capture_output=True, text=True)
    out.with_suffix(".log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"nlme_minimal_model.R failed:\n{proc.stderr[-2000:]}")
    raw = json.loads(out.read_text())
    est = {}
    for k in FIXED:
        entry = raw["fixed"][f"l{k}"]
        value = float(np.exp(entry["estimate"]))
        est[k] = (value, value * float(entry["se"]))
    for k in RANDOM:
        sd, se_log = raw["omega_sd"][k], raw["omega_sd_se_log"][k]
        est[f"omega_{k}"] = (float(sd), float(sd * se_log) if se_log is not None else np.nan)
    se_log = raw["sigma_se_log"]
    est["sigma_additive"] = (raw["sigma"], raw["sigma"] * se_log if se_log else np.nan)
    return dict(raw=raw, estimates=est)


def compare(mg: dict[str, tuple], peer: dict[str, tuple]) -> pd.DataFrame:
    """Per estimate: both values and SEs, the relative difference and whether the difference
    is within both SEs."""
    rows = []
    for name in mg:
        (a, sa), (b, sb) = mg[name], peer[name]
        rows.append(
            dict(
                parameter=name,
                mgjax=a,
                mgjax_se=sa,
                nlme=b,
                nlme_se=sb,
                rel_diff=(a - b) / abs(b),
                within_se=bool(abs(a - b) <= sa and abs(a - b) <= sb),
            )
        )
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="50,200", help="comma-separated subject counts")
    parser.add_argument("--rtol", type=float, default=1e-6, help="both solvers' rtol = atol")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--covariance",
        default="hessian",
        choices=("hessian", "expected"),
        help="mgjax's covariance step: R⁻¹ from exact gradients (default) or the expected "
        "information of the FOCE-I linearisation (cheaper)",
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "experiments/output/bench_population_ode"
    )
    args = parser.parse_args(argv)
    if rscript() is None:
        parser.error("Rscript with nlme and deSolve not found (setup_population_peer.sh)")
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"JAX {jax.__version__}, devices {jax.devices()}, {os.cpu_count()} CPUs", flush=True)
    rows, comparisons = [], []
    for n in (int(s) for s in args.sizes.split(",")):
        _, table, _ = simulate_minimal_model_cohort(
            n, typical=TYPICAL, omega_sd=OMEGA_SD, seed=args.seed
        )
        csv = args.out / f"ivgtt_{n}.csv"
        table.to_csv(csv, index=False)
        mg = fit_mgjax(csv, args.rtol, args.covariance)
        peer = fit_nlme(csv, args.out / f"nlme_{n}.json", args.rtol)
        comparison = compare(mg["estimates"], peer["estimates"])
        result = mg["result"]
        row = dict(
            subjects=n,
            devices=len(jax.local_devices()),
            observations=result.n_observations,
            mgjax_compile_s=mg["compile_s"],
            mgjax_estimate_s=mg["warm_s"],
            mgjax_total_s=mg["cold_s"],
            mgjax_iterations=result.iterations,
            mgjax_converged=result.converged,
            mgjax_covariance=args.covariance,
            mgjax_inner_converged=int(np.sum(result.inner_converged)),
            mgjax_ofv=result.ofv,
            mgjax_peak_rss_mib=mg["peak_rss_mib"],
            nlme_s=peer["raw"]["seconds"],
            nlme_minus2loglik=peer["raw"]["minus2loglik"],
            nlme_peak_rss_mib=peer["raw"]["peak_rss_mib"],
            ratio=peer["raw"]["seconds"] / mg["warm_s"],
            ratio_with_compile=peer["raw"]["seconds"] / mg["cold_s"],
            all_within_se=bool(comparison["within_se"].all()),
            max_rel_diff=float(comparison["rel_diff"].abs().max()),
        )
        rows.append(row)
        comparisons.append(comparison.assign(subjects=n))
        print(json.dumps(row), flush=True)
        print(comparison.to_string(index=False, float_format="%.5g"), flush=True)
    table = pd.DataFrame(rows)
    suffix = "" if args.covariance == "hessian" else f"_{args.covariance}"
    table.to_csv(args.out / f"bench_population_ode{suffix}.csv", index=False)
    pd.concat(comparisons, ignore_index=True).to_csv(
        args.out / f"estimates{suffix}.csv", index=False
    )
    print()
    print(table.to_string(index=False, float_format="%.4g"))
    for row in rows:
        print(
            f"{row['subjects']} subjects: mgjax {row['mgjax_estimate_s']:.1f} s warm "
            f"(+{row['mgjax_compile_s']:.0f} s compile), nlme {row['nlme_s']:.1f} s: mgjax is "
            f"{row['ratio']:.2f}× nlme's speed warm, {row['ratio_with_compile']:.2f}× cold; "
            f"estimates {'all' if row['all_within_se'] else 'NOT all'} within both SEs "
            f"(largest relative difference {100 * row['max_rel_diff']:.2f} %)"
        )
    return dict(table=table)


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
