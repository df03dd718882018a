"""Cohorts of the coupled Mg²⁺–glucose model as population problems: one stacked
`FitProblem` per cohort (a dataset's subjects), on plain log coordinates so random effects
are log-normal."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import pandas as pd

from ..batch._build import build_batches, default_base_model
from ..data._dataset import Dataset
from ..fit._objective import ErrorModel, FitProblem
from ..model import MgT2DModel
from ..solve._solve import SolverOptions


def cohort_problems(
    dataset: Dataset,
    free: Sequence[str],
    *,
    subjects: Sequence[str] | None = None,
    error_models: Mapping[str, ErrorModel] | None = None,
    options: SolverOptions | None = None,
    base_model: Callable[[str | None, Mapping[str, float]], MgT2DModel] = default_base_model,
) -> tuple[FitProblem, list[str], pd.DataFrame]:
    """(every subject's `FitProblem` stacked, the subjects in that order, their covariates
    table indexed by subject) for a population fit of the `free` parameters (and the error
    models' estimated terms). Each subject's fixed parameters come from `base_model` (default:
    its group's preset, with its weight and height). The subjects must share one structure —
    the same protocols and observables (their sampling is padded to the cohort's largest)."""
    batches = build_batches(
        dataset,
        free,
        subjects=subjects,
        error_models=error_models,
        options=options,
        base_model=base_model,
        bounded=False,
    )
    if len(batches) > 1:
        sizes = ", ".join(f"{len(b)} subjects like {b.subjects[0]!r}" for b in batches)
        raise ValueError(
            f"the subjects fall into {len(batches)} structures ({sizes}): a population fit "
            "needs one — give every subject the same protocols and observables, or fit "
            "each structure on its own"
        )
    batch = batches[0]
    table = dataset.subjects.set_index("subject") if len(dataset.subjects) else None
    covariates = (
        table.reindex(batch.subjects)
        if table is not None
        else pd.DataFrame(index=pd.Index(batch.subjects, name="subject"))
    )
    return jax.tree.map(jnp.asarray, batch.problems), list(batch.subjects), covariates
