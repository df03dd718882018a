"""Does the batch engine's Levenberg–Marquardt reach the maximum-likelihood estimate?

Fits the first N subjects of the bundled cohort (clamp + fasting labs, 5 free parameters,
proportional error models) with `mgjax.batch.fit_batch` and, one subject at a time, with
L-BFGS on the negative log-likelihood from the same start, and judges both by the same
likelihood. L-BFGS minimises the likelihood itself (reverse-mode gradient); Levenberg–Marquardt
minimises ½‖residuals‖², which equals it up to a constant (docs/fitting.md, "The residuals are
the likelihood").

    python experiments/studies/batch_maximum_likelihood.py --n 20
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

import mgjax
from mgjax import batch, fit
from mgjax.app.cli import default_cohort_path
from mgjax.synth import COHORT_PARAMETERS, cohort_error_models

jax.config.update("jax_enable_x64", True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20, help="subjects of the bundled cohort")
    parser.add_argument("--lbfgs-steps", type=int, default=500)
    args = parser.parse_args()
    dataset = mgjax.load_dataset(default_cohort_path())
    subjects = sorted(dataset.observations["subject"].unique())[: args.n]
    errors = cohort_error_models(sorted(dataset.observations["observable"].unique()))

    t0 = time.perf_counter()
    result = batch.fit_batch(
        dataset, COHORT_PARAMETERS, error_models=errors, subjects=subjects, progress=False
    )
    batch_seconds = time.perf_counter() - t0
    lm = result.subjects.set_index("subject")

    rows = []
    t0 = time.perf_counter()
    for group in batch.build_batches(
        dataset, COHORT_PARAMETERS, subjects=subjects, error_models=errors
    ):
        for i, subject in enumerate(group.subjects):
            problem = jax.tree.map(jnp.asarray, group.one(i))
            alone = fit.fit(problem, method="lbfgs", max_steps=args.lbfgs_steps)
            rows.append(
                dict(
                    subject=subject,
                    group=group.groups[i],
                    nll_lm=float(lm.loc[subject, "loss"]),
                    lm_status=str(lm.loc[subject, "status"]),
                    lm_iterations=int(lm.loc[subject, "iterations"]),
                    nll_lbfgs=float(alone.loss),
                    lbfgs_converged=bool(alone.converged),
                    lbfgs_iterations=int(alone.iterations),
                )
            )
    lbfgs_seconds = time.perf_counter() - t0
    table = pd.DataFrame(rows)
    difference = table["nll_lm"] - table["nll_lbfgs"]
    summary = dict(
        subjects=len(table),
        lm_within_0_01_or_below=int((difference <= 0.01).sum()),
        lm_above_by_more_than_0_05=int((difference > 0.05).sum()),
        lm_below_by_more_than_0_05=int((difference < -0.05).sum()),
        median_difference=float(np.median(difference)),
        batch_seconds=round(batch_seconds, 1),
        lbfgs_seconds=round(lbfgs_seconds, 1),
    )
    print(table.to_string(index=False))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
