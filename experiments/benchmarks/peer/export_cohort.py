"""Export a synthetic cohort's per-subject fit problems as PEtab problems, for the peer
benchmark (pyPESTO + AMICI + fides fitting exactly what mgjax fits).

The cohort is `bench_batch.py`'s (the default study design: isoglycaemic clamp + fasting Mg²⁺
labs, 5 free parameters, `synthesize(n, seed=0)`); each subject's `FitProblem` becomes
`OUT/<subject>/` (`mgjax.petab.problem_to_petab`: the same data, error model, bounds, scales),
`OUT/starts.json` holds every subject's start (mgjax's, linear values by PEtab id), so both
tools start each subject from the same point, and `OUT/nll_start.json` mgjax's negative
log-likelihood there (the peer checks its import against it). All subjects share one SBML
structure (parameter values and protocol magnitudes differ), so a peer compiles the model once.

    python experiments/benchmarks/peer/export_cohort.py --n 20 --out experiments/output/peer_cohort
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import mgjax
from mgjax import batch
from mgjax.petab import problem_to_petab
from mgjax.synth import COHORT_PARAMETERS, cohort_error_models, synthesize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("experiments/output/peer_cohort"))
    args = parser.parse_args()
    cohort = synthesize(args.n, seed=args.seed)
    folder = Path(tempfile.mkdtemp(prefix="mgjax-peer-"))
    cohort.write(folder)
    dataset = mgjax.load_dataset(folder)
    subjects = sorted(cohort.subjects["subject"])
    errors = cohort_error_models(sorted(dataset.observations["observable"].unique()))
    starts, nll = {}, {}
    t0 = time.perf_counter()
    for group in batch.build_batches(
        dataset, COHORT_PARAMETERS, subjects=subjects, error_models=errors
    ):
        for i, subject in enumerate(group.subjects):
            problem = jax.tree.map(jnp.asarray, group.one(i))
            problem_to_petab(problem, args.out / subject, name=subject)
            values = np.asarray(problem.to_values(problem.initial()))
            starts[subject] = dict(zip(problem.free, values.tolist()))
            nll[subject] = float(problem.negative_log_likelihood(problem.initial()))
    (args.out / "starts.json").write_text(json.dumps(starts, indent=1))
    (args.out / "nll_start.json").write_text(json.dumps(nll, indent=1))
    cohort.write(args.out / "dataset")
    print(f"exported {len(starts)} subjects to {args.out} in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
