"""Rival hypotheses decided by data: fit named model variants to the same data and compare them
by OFV, AIC, BIC, a likelihood-ratio test where one variant is nested in another, and the
cross-validated predictive log-likelihood of held-out observations.

A variant is the base model with fixed parameter changes (e.g. the sign of the insulin effect on
TRPM6) and, optionally, extra free parameters. Subjects are fitted one by one (two-stage), so
each variant's OFV is the sum over subjects, and its parameter count is the free parameters
times the subjects; or, `pooled`, all subjects share one parameter set (the arm means of one
trial).

Cross-validation holds out every `folds`-th observation of each subject in turn (stratified by
the order of the observations), refits on the rest and scores the held-out observations by
their negative log-likelihood under the refitted parameters. Held-out rows stay in the problem
with an enormous σ (so they weigh nothing), which keeps every fold's problem the same shape: one
compiled program serves the full fit and all folds.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pandas as pd
from scipy import stats

from ..data import Dataset
from ..model import MgT2DModel
from ..model._parameters import set_parameters
from ._experiment import experiments_for_subject
from ._fit import fit
from ._objective import ErrorModel, make_problem

#: σ given to held-out observations: they contribute (y − f)²/σ² ≈ 1e-24 to the objective.
HELD_OUT_SIGMA = 1e12
_LOG_2PI = math.log(2.0 * math.pi)


@dataclasses.dataclass(frozen=True)
class Variant:
    """A named model variant: fixed parameter changes on the base model and extra free
    parameters (model units, names as `mgjax.parameter_names()`)."""

    name: str
    parameters: Mapping[str, float] = dataclasses.field(default_factory=dict)
    free: tuple[str, ...] = ()


def _fold_of(observations: pd.DataFrame, folds: int) -> np.ndarray:
    """Fold index of each observation: its rank within its subject, modulo `folds`."""
    return observations.groupby("subject", sort=False).cumcount().to_numpy() % folds


def _with_held_out(dataset: Dataset, held_out: np.ndarray) -> Dataset:
    """`dataset` with the held-out observations weighing nothing (σ = `HELD_OUT_SIGMA`)."""
    obs = dataset.observations.copy()
    obs.loc[held_out, "sigma"] = HELD_OUT_SIGMA
    return dataclasses.replace(dataset, observations=obs)


def _subject_problem(dataset, subjects, base, free, error_models, priors, averaged_trials):
    """The fit problem of `subjects` (one, or all of a pooled fit) with one parameter set."""
    experiments = [
        e
        for subject in subjects
        for e in experiments_for_subject(dataset, subject, base, averaged_trials=averaged_trials)
    ]
    return make_problem(base, experiments, free, error_models=error_models, priors=priors)


def _without_priors(problem):
    """The same problem with no prior (NaN prior median = none): its NLL is the data's."""
    return eqx.tree_at(lambda p: p.prior_mean, problem, jnp.full_like(problem.prior_mean, jnp.nan))


def _fit_variant(
    dataset: Dataset,
    variant: Variant,
    free: tuple[str, ...],
    base_model: Callable[[str], MgT2DModel],
    fit_kwargs: dict,
    error_models,
    priors,
    folds: int,
    averaged_trials: bool,
    pooled: bool,
) -> dict[str, Any]:
    obs = dataset.observations.reset_index(drop=True)
    dataset = dataclasses.replace(dataset, observations=obs)
    fold = _fold_of(obs, folds) if folds > 1 else np.zeros(len(obs), int)
    nll, held_out_nll, converged, n_obs = 0.0, 0.0, True, 0
    everyone = list(obs["subject"].unique())
    units = [everyone] if pooled else [[s] for s in everyone]
    for unit in units:
        base = set_parameters(base_model(unit[0]), dict(variant.parameters))
        rows = obs["subject"].isin(unit).to_numpy()
        problem = _subject_problem(dataset, unit, base, free, error_models, priors, averaged_trials)
        result = fit(problem, subject=" ".join(unit), **fit_kwargs)
        nll += float(_without_priors(problem).negative_log_likelihood(jnp.asarray(result.u)))
        converged &= bool(result.converged)
        n_obs += int(rows.sum())
        for k in range(folds if folds > 1 else 0):
            test_rows = rows & (fold == k)
            train_rows = rows & (fold != k)
            if not test_rows.any() or not train_rows.any():
                continue
            train = _with_held_out(dataset, test_rows)
            trained = fit(
                _subject_problem(train, unit, base, free, error_models, priors, averaged_trials),
                subject=" ".join(unit),
                **fit_kwargs,
            )
            test = _with_held_out(dataset, train_rows)
            scored = _subject_problem(test, unit, base, free, error_models, None, averaged_trials)
            padding = int(train_rows.sum()) * (math.log(HELD_OUT_SIGMA) + 0.5 * _LOG_2PI)
            held_out_nll += float(scored.negative_log_likelihood(jnp.asarray(trained.u))) - padding
    k = len(free) * len(units)
    ofv = 2.0 * nll
    return dict(
        variant=variant.name,
        ofv=ofv,
        n_parameters=k,
        n_observations=n_obs,
        aic=ofv + 2.0 * k,
        bic=ofv + k * math.log(max(n_obs, 1)),
        cv_nll=held_out_nll if folds > 1 else float("nan"),
        converged=converged,
        free=" ".join(free),
        changes=" ".join(f"{n}={v:g}" for n, v in variant.parameters.items()),
    )


def _nested_in(a: Variant, free_a: tuple, b: Variant, free_b: tuple) -> bool:
    """`a` is `b` with some of `b`'s free parameters fixed: same changes, fewer free ones."""
    return dict(a.parameters) == dict(b.parameters) and set(free_a) < set(free_b)


def compare_variants(
    dataset: Dataset,
    variants: Sequence[Variant],
    free: Sequence[str],
    *,
    base_model: Callable[[str], MgT2DModel],
    error_models: Mapping[str, ErrorModel] | None = None,
    priors: Mapping[str, tuple[float, float]] | None = None,
    folds: int = 5,
    averaged_trials: bool = True,
    pooled: bool = False,
    **fit_kwargs: Any,
) -> pd.DataFrame:
    """Fit every variant to `dataset` and compare them.

    **Arguments:**

    - `dataset`: the data (`mgjax.load_dataset`).
    - `variants`: the `Variant`s (names unique).
    - `free`: the parameters every variant estimates (a variant may add its own).
    - `base_model`: the subject's model from its id (preset, covariates, fixed parameters);
      each variant's changes go on top.
    - `error_models`, `priors`: as in `make_problem` (priors enter the fits, not the OFV).
    - `folds`: cross-validation folds over each subject's observations (≤ 1: none).
    - `averaged_trials`: oral Mg²⁺ trials at their mean daily intake (fast).
    - `pooled`: one parameter set for all subjects (arm means of one trial, as
      `experiments/examples/fit_mg_trial.py` fits them), with the first subject's base model;
      default each subject its own (two-stage).
    - `fit_kwargs`: passed to `mgjax.fit.fit` (method, max_steps, …).

    **Returns:** one row per variant: `ofv` (−2 log-likelihood, all constants, priors
    excluded), `n_parameters`, `n_observations`, `aic`, `bic`, `cv_nll` (held-out negative
    log-likelihood summed over folds), the differences to the best (`delta_aic`, `delta_bic`,
    `delta_cv_nll`), Akaike weights, and for variants nested in another the likelihood-ratio
    test against it (`lrt_against`, `lrt_statistic`, `lrt_df`, `lrt_p`), sorted by AIC.
    """
    names = [v.name for v in variants]
    if len(set(names)) != len(names) or not names:
        raise ValueError(f"variant names must be unique and at least one: {names}")
    frees = {v.name: tuple(dict.fromkeys([*free, *v.free])) for v in variants}
    rows = [
        _fit_variant(
            dataset,
            v,
            frees[v.name],
            base_model,
            fit_kwargs,
            error_models,
            priors,
            folds,
            averaged_trials,
            pooled,
        )
        for v in variants
    ]
    table = pd.DataFrame(rows).set_index("variant")
    for column in ("aic", "bic", "cv_nll"):
        table[f"delta_{column}"] = table[column] - table[column].min()
    weights = np.exp(-0.5 * table["delta_aic"].to_numpy())
    table["akaike_weight"] = weights / weights.sum()
    table["lrt_against"], table["lrt_statistic"] = "", np.nan
    table["lrt_df"], table["lrt_p"] = np.nan, np.nan
    by_name = {v.name: v for v in variants}
    for a in names:
        for b in names:
            if a != b and _nested_in(by_name[a], frees[a], by_name[b], frees[b]):
                statistic = max(table.at[a, "ofv"] - table.at[b, "ofv"], 0.0)
                df = table.at[b, "n_parameters"] - table.at[a, "n_parameters"]
                table.at[a, "lrt_against"] = b
                table.at[a, "lrt_statistic"] = statistic
                table.at[a, "lrt_df"] = df
                table.at[a, "lrt_p"] = float(stats.chi2.sf(statistic, df))
    return table.sort_values("aic").reset_index()
