"""mgjax against pyPESTO + AMICI + fides on the same subjects, the same data, the same
likelihood and the same starts: converged subjects per second at equal quality.

Input: a cohort exported by `export_cohort.py` (its `dataset/` and `starts.json`) and the
peer's fits (`peer_fit.py`'s CSV: per subject the final estimates and fit seconds, one process,
the AMICI model compiled once beforehand). mgjax fits the same subjects with
`mgjax.batch.fit_batch` (Levenberg–Marquardt, forward-mode sensitivities through Rodas4,
a pool of lanes; one process) from the same starts. Both estimates are judged by mgjax's negative
log-likelihood (the PEtab problems' own, checked equal at the starts): a fit is *converged* when
it ends within 0.05 of the better of the two. Compile times are reported apart.

    python experiments/benchmarks/peer/compare_peer.py experiments/output/peer_cohort peer_fits.csv
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

import mgjax
from mgjax import batch
from mgjax.synth import COHORT_PARAMETERS, cohort_error_models

jax.config.update("jax_enable_x64", True)
NLL_TOLERANCE = 0.05


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cohort", type=Path)
    parser.add_argument("peer", type=Path)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    dataset = mgjax.load_dataset(args.cohort / "dataset")
    peer = pd.read_csv(args.peer).set_index("subject")
    subjects = sorted(peer.index)
    errors = cohort_error_models(sorted(dataset.observations["observable"].unique()))

    t0 = time.perf_counter()
    result = batch.fit_batch(
        dataset,
        COHORT_PARAMETERS,
        settings=batch.BatchSettings(width=args.width),
        error_models=errors,
        subjects=subjects,
    )
    wall = time.perf_counter() - t0
    compile_s = float(result.summary["seconds_compile_estimate"])
    estimates = result.parameters.pivot(index="subject", columns="parameter", values="estimate")

    rows = []
    for group in batch.build_batches(
        dataset, COHORT_PARAMETERS, subjects=subjects, error_models=errors
    ):
        for i, subject in enumerate(group.subjects):
            problem = jax.tree.map(jnp.asarray, group.one(i))

            def nll(values, problem=problem):
                u = problem.from_values(jnp.asarray(values, dtype=jnp.float64))
                value = float(problem.negative_log_likelihood(u))
                return value if np.isfinite(value) else np.inf

            mine = nll(estimates.loc[subject, list(problem.free)].to_numpy())
            theirs = nll(peer.loc[subject, [f"estimate_{p}" for p in problem.free]].to_numpy())
            best = min(mine, theirs)
            rows.append(
                dict(
                    subject=subject,
                    nll_mgjax=mine,
                    nll_peer=theirs,
                    mgjax_ok=mine <= best + NLL_TOLERANCE,
                    peer_ok=theirs <= best + NLL_TOLERANCE,
                    peer_seconds=float(peer.loc[subject, "seconds"]),
                )
            )
    judged = pd.DataFrame(rows)
    mgjax_run = wall - compile_s
    peer_run = float(judged["peer_seconds"].sum())
    summary = dict(
        subjects=len(judged),
        mgjax_seconds=round(mgjax_run, 2),
        mgjax_compile_seconds=round(compile_s, 2),
        mgjax_converged=int(judged["mgjax_ok"].sum()),
        peer_seconds=round(peer_run, 2),
        peer_converged=int(judged["peer_ok"].sum()),
    )
    summary["mgjax_converged_per_second"] = summary["mgjax_converged"] / mgjax_run
    summary["peer_converged_per_second"] = summary["peer_converged"] / peer_run
    summary["ratio"] = summary["mgjax_converged_per_second"] / max(
        summary["peer_converged_per_second"], 1e-12
    )
    print(judged.to_string(index=False))
    print(json.dumps(summary, indent=1))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        judged.to_csv(args.out / "peer_comparison.csv", index=False)
        (args.out / "peer_summary.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
