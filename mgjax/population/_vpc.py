"""Visual predictive checks of a fitted population: replicate datasets simulated from the
model (random effects, covariates and residual error), binned over time, the observed
5th/50th/95th percentiles against the 95 % intervals of the simulated ones; optionally
prediction-corrected (pcVPC, Bergstrand et al. 2011, AAPS J 13:143).

Each replicate draws, per subject, ξ ~ N(0, I) (η = Lξ), u = μ + β·z + η and
y = mean(u) + sd(u)·ε, ε ~ N(0, 1), at the subject's own observation times — the fitted
model's generative process, on any structural problem with `mean_and_sd`. The observations
come from problems with `times`, `observed` and `mask` (the one-compartment model).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ..fit._problem import AbstractFitProblem
from ._fit import PopulationResult, stack_problems
from ._model import PopulationModel

#: the observed/simulated percentiles of each bin (%)
PERCENTILES = (5.0, 50.0, 95.0)
#: the interval of each simulated percentile over the replicates (%): 95 % and the median
INTERVAL = (2.5, 50.0, 97.5)
#: simulated values held at once (replicates × subjects × observations), bounding memory
CHUNK_VALUES = 4_000_000


@dataclasses.dataclass(frozen=True)
class VisualPredictiveCheck:
    """A VPC: `table` has one row per stratum, bin and percentile (stratum, bin, time — the
    bin's median observation time —, time_low, time_high, n, percentile, observed,
    simulated_low, simulated_median, simulated_high, covered); `observations` one row per
    observation (subject, stratum, bin, time, dv, pred, and `value`: the dv as plotted, i.e.
    prediction-corrected for a pcVPC). Times and values in the data's units."""

    table: pd.DataFrame
    observations: pd.DataFrame
    replicates: int
    prediction_corrected: bool
    stratify: str | None
    seed: int

    @property
    def coverage(self) -> float:
        """Fraction of observed percentiles inside their simulated 95 % interval."""
        covered = self.table["covered"].dropna()
        return float(covered.mean()) if len(covered) else float("nan")


@eqx.filter_jit
def _simulate_chunk(model, stacked, theta, z, keys):
    """[k, n, m]: one replicate dataset per key (NaN where an observation is masked)."""
    n = z.shape[0]

    def replicate(key):
        def subject(problem, zi, i):
            k_eta, k_eps = jax.random.split(jax.random.fold_in(key, i))
            xi = jax.random.normal(k_eta, (model.n_random,), dtype=jnp.float64)
            mean, sd, mask = problem.mean_and_sd(model.individual(theta, zi, xi))
            eps = jax.random.normal(k_eps, jnp.shape(mean), dtype=jnp.float64)
            return jnp.where(mask, mean + sd * eps, jnp.nan)

        return jax.vmap(subject)(stacked, z, jnp.arange(n))

    return jax.vmap(replicate)(keys)


@eqx.filter_jit
def _population_predictions(model, stacked, theta, z):
    """[n, m]: each subject's model mean at η = 0 (PRED: typical values and covariates)."""

    def subject(problem, zi):
        return problem.mean_and_sd(model.individual(theta, zi, jnp.zeros(model.n_random)))[0]

    return jax.vmap(subject)(stacked, z)


def simulate_replicates(
    theta: Any,
    problems: Sequence[AbstractFitProblem] | AbstractFitProblem,
    model: PopulationModel,
    z: Any,
    *,
    replicates: int,
    seed: int = 0,
    chunk: int | None = None,
) -> np.ndarray:
    """[replicates, n, m] datasets simulated from the population model at `theta` (design
    values `z` [n, c], `model.design`): per replicate and subject ξ ~ N(0, I), y = mean +
    sd·ε at the subject's observations (NaN where masked). Replicate r's draws depend on
    (`seed`, r, subject position) only, so results do not depend on `chunk` (replicates
    simulated at once; default: as many as fit `CHUNK_VALUES`)."""
    if replicates < 1:
        raise ValueError(f"replicates = {replicates}: simulate one or more")
    stacked = problems if isinstance(problems, AbstractFitProblem) else stack_problems(problems)
    theta = jnp.asarray(theta, dtype=jnp.float64)
    z = jnp.asarray(z, dtype=jnp.float64).reshape(-1, len(model.covariates))
    n = z.shape[0]
    m = int(
        np.prod(eqx.filter_eval_shape(_population_predictions, model, stacked, theta, z).shape[1:])
    )
    chunk = chunk or max(1, min(replicates, CHUNK_VALUES // max(1, n * m)))
    base = jax.random.PRNGKey(int(seed))
    out = []
    for start in range(0, replicates, chunk):
        # a full chunk every time (the last padded), so one program serves every chunk
        index = jnp.arange(start, start + chunk)
        keys = jax.vmap(lambda r: jax.random.fold_in(base, r))(index)
        out.append(np.asarray(_simulate_chunk(model, stacked, theta, z, keys)))
    return np.concatenate(out)[:replicates]


def bin_edges(times: Any, bins: Any) -> np.ndarray:
    """Bin edges over observation `times`: `bins` an int K — one bin per distinct time when
    there are at most K, else K bins at the times' quantiles (fewer where quantiles tie) —
    or the edges themselves (increasing)."""
    times = np.asarray(times, dtype=float)
    if np.ndim(bins) == 0:
        k = int(bins)
        if k < 1 or k != bins:
            raise ValueError(f"bins = {bins}: give a whole number ≥ 1 or a list of edges")
        distinct = np.unique(times)
        if len(distinct) <= 1:
            return np.array([distinct[0], distinct[0]]) if len(distinct) else np.zeros(2)
        if len(distinct) <= k:
            middle = 0.5 * (distinct[1:] + distinct[:-1])
            return np.concatenate([distinct[:1], middle, distinct[-1:]])
        return np.unique(np.quantile(times, np.linspace(0.0, 1.0, k + 1)))
    edges = np.asarray(bins, dtype=float)
    if edges.ndim != 1 or len(edges) < 2 or not np.all(np.diff(edges) > 0):
        raise ValueError(f"bins = {list(edges)}: edges must be two or more increasing times")
    return edges


def assign_bins(times: Any, edges: Any) -> np.ndarray:
    """Each time's bin, [e_k, e_{k+1}) with the last bin closed; −1 outside the edges."""
    times, edges = np.asarray(times, dtype=float), np.asarray(edges, dtype=float)
    k = np.searchsorted(edges, times, side="right") - 1
    k = np.where(times == edges[-1], len(edges) - 2, k)
    return np.where((times < edges[0]) | (times > edges[-1]), -1, k)


def _strata(covariates, stratify, subjects) -> np.ndarray:
    """Each subject's stratum (a string; one stratum when `stratify` is None)."""
    if stratify is None:
        return np.full(len(subjects), "all", dtype=object)
    if covariates is None:
        raise ValueError(f"stratify = {stratify!r} needs the covariates table")
    if not isinstance(covariates, pd.DataFrame):
        covariates = pd.DataFrame(dict(covariates), index=list(subjects))
    if stratify not in covariates:
        raise ValueError(
            f"stratify: no covariate {stratify!r} (columns: "
            f"{', '.join(map(str, covariates.columns))})"
        )
    absent = [s for s in subjects if s not in covariates.index]
    if absent:
        raise ValueError(f"stratify: no row for subject(s) {absent[:5]}")
    return covariates.loc[list(subjects), stratify].astype(str).to_numpy(dtype=object)


def _percentile_rows(stratum, k, edges, index, values, sims) -> list[dict]:
    """The table's rows of one bin: observed percentiles and the simulated ones' interval."""
    observed = np.percentile(values[index], PERCENTILES)
    per_replicate = np.nanpercentile(sims[:, index], PERCENTILES, axis=1)  # [3, R]
    low, median, high = np.nanpercentile(per_replicate, INTERVAL, axis=1)  # each [3]
    return [
        dict(
            stratum=stratum,
            bin=k,
            time_low=edges[k],
            time_high=edges[k + 1],
            n=len(index),
            percentile=q,
            observed=observed[j],
            simulated_low=low[j],
            simulated_median=median[j],
            simulated_high=high[j],
            covered=bool(low[j] <= observed[j] <= high[j]),
        )
        for j, q in enumerate(PERCENTILES)
    ]


def visual_predictive_check(
    fit: PopulationResult | Any,
    problems: Sequence[AbstractFitProblem] | AbstractFitProblem,
    model: PopulationModel | None = None,
    covariates: pd.DataFrame | Mapping[str, Any] | None = None,
    *,
    subjects: Sequence[str] | None = None,
    replicates: int = 200,
    bins: Any = 10,
    stratify: str | None = None,
    prediction_corrected: bool = False,
    seed: int = 0,
    chunk: int | None = None,
) -> VisualPredictiveCheck:
    """A VPC of a fitted population.

    - `fit`: a `PopulationResult` (its θ, model and subjects: subjects it left out are
      dropped from `problems`, named by `subjects`) or θ itself (`model.theta_names`);
    - `problems`: the subjects' problems (a list or one stacked pytree) with `times`,
      `observed` and `mask`; `covariates`: as for `fit_population` (also the source of
      the `stratify` column);
    - `bins`: an int K (quantile bins of the observation times, one per distinct time when
      there are at most K) or the bin edges; bins are formed per stratum;
    - `prediction_corrected`: the pcVPC — observed and simulated values times
      PRED_bin/PRED (PRED the model mean at η = 0, PRED_bin its median in the bin);
    - `replicates` simulated datasets from `seed` (`chunk` of them at once)."""
    stacked = problems if isinstance(problems, AbstractFitProblem) else stack_problems(problems)
    missing = [a for a in ("times", "observed", "mask") if not hasattr(stacked, a)]
    if missing:
        raise ValueError(
            f"a VPC needs problems that carry their observations as `times`, `observed` and "
            f"`mask` (e.g. the one-compartment model); {type(stacked).__name__} has no "
            f"{', '.join(missing)}"
        )
    n = int(np.shape(stacked.times)[0])
    names = tuple(str(s) for s in (subjects if subjects is not None else range(n)))
    if len(names) != n:
        raise ValueError(f"{len(names)} subject names for {n} problems")
    if isinstance(fit, PopulationResult):
        model = model or fit.model
        theta = np.asarray(fit.theta)
        if len(fit.subjects) != n:
            where = {s: i for i, s in enumerate(names)}
            absent = [s for s in fit.subjects if s not in where]
            if absent:
                raise ValueError(
                    f"the fit's subjects {absent[:5]} are not among the problems' `subjects`"
                )
            keep = np.array([where[s] for s in fit.subjects])
            stacked = jax.tree.map(lambda x: x[keep], stacked)
        names = tuple(fit.subjects)
    else:
        theta = np.asarray(fit, dtype=float)
    if model is None:
        raise ValueError("give the population model (or a PopulationResult)")
    if theta.shape != (len(model.theta_names),):
        raise ValueError(f"θ has {theta.size} entries; the model has {len(model.theta_names)}")
    z = model.design(covariates if covariates is not None else {}, names)
    strata = _strata(covariates, stratify, names)

    times, observed, mask = (np.asarray(getattr(stacked, a)) for a in ("times", "observed", "mask"))
    pred = np.asarray(_population_predictions(model, stacked, jnp.asarray(theta), jnp.asarray(z)))
    sims = simulate_replicates(
        theta, stacked, model, z, replicates=replicates, seed=seed, chunk=chunk
    )
    rows, cols = np.nonzero(mask)
    obs = pd.DataFrame(
        dict(
            subject=[names[i] for i in rows],
            stratum=strata[rows],
            time=times[rows, cols],
            dv=observed[rows, cols],
            pred=pred[rows, cols],
        )
    )
    sims = sims[:, rows, cols]  # [R, N observations]
    obs["bin"] = -1
    table = []
    for stratum in pd.unique(obs["stratum"]):
        in_stratum = np.flatnonzero(obs["stratum"].to_numpy() == stratum)
        edges = bin_edges(obs["time"].to_numpy()[in_stratum], bins)
        k_of = assign_bins(obs["time"].to_numpy()[in_stratum], edges)
        obs.loc[obs.index[in_stratum], "bin"] = k_of
        for k in range(len(edges) - 1):
            index = in_stratum[k_of == k]
            if len(index):
                table.append((stratum, k, edges, index))
    factor = np.ones(len(obs))
    if prediction_corrected:
        # PRED_bin/PRED; 1 where PRED is not positive (e.g. before the first dose)
        p = obs["pred"].to_numpy()
        for _, _, _, index in table:
            ok = index[np.isfinite(p[index]) & (p[index] > 0)]
            if len(ok):
                factor[ok] = np.median(p[ok]) / p[ok]
    obs["value"] = obs["dv"].to_numpy() * factor
    sims = sims * factor[None, :]
    values = obs["value"].to_numpy()
    out = []
    for stratum, k, edges, index in table:
        out += _percentile_rows(stratum, k, edges, index, values, sims)
    frame = pd.DataFrame(out)
    if len(frame):
        median_time = obs[obs["bin"] >= 0].groupby(["stratum", "bin"])["time"].median()
        frame.insert(
            2, "time", [median_time[(s, k)] for s, k in zip(frame["stratum"], frame["bin"])]
        )
    return VisualPredictiveCheck(
        table=frame,
        observations=obs[["subject", "stratum", "bin", "time", "dv", "pred", "value"]],
        replicates=int(replicates),
        prediction_corrected=bool(prediction_corrected),
        stratify=stratify,
        seed=int(seed),
    )
