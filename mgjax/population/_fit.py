"""Population fits: the FOCE-I estimate of θ (typical values, covariate effects, Ω), its
covariance step, and the per-subject results (EBEs, predictions, CWRES, shrinkage)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import Any

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
import pandas as pd

from ..fit._laplace import Z95
from ..fit._problem import AbstractFitProblem
from ._laplace import (
    INNER_MAX_STEPS,
    fit_subjects,
    population_objective_forward,
    population_value,
    subject_objective,
    subjects_objective,
)
from ._model import PopulationModel

#: starting SD of every random effect (log scale: ~30 % CV)
OMEGA_START = 0.3
#: the outer fit (Optimistix BFGS on θ) stops at these relative/absolute tolerances
OUTER_RTOL = 1e-8
OUTER_ATOL = 1e-6
OUTER_MAX_STEPS = 500


def stack_problems(problems: Sequence[AbstractFitProblem]) -> AbstractFitProblem:
    """One problem pytree with a leading subject axis (all must share structure and shapes:
    pad their observations and doses to the cohort's largest)."""
    first = jax.tree.structure(problems[0])
    shapes = [np.shape(x) for x in jax.tree.leaves(problems[0])]
    for k, p in enumerate(problems):
        if jax.tree.structure(p) != first or [np.shape(x) for x in jax.tree.leaves(p)] != shapes:
            raise ValueError(
                f"subject {k}'s problem differs in structure or shapes from subject 0's; "
                "build all with the same free quantities and the cohort's padded sizes"
            )
    return jax.tree.map(lambda *x: jnp.stack(x), *problems)


def _take(stacked: AbstractFitProblem, index: Any) -> AbstractFitProblem:
    return jax.tree.map(lambda x: x[index], stacked)


@dataclasses.dataclass(frozen=True)
class PopulationResult:
    """A population fit. `theta` is the estimated vector (`model.theta_names`); tables:
    `population_parameters`, `random_effects`, `omega`, `individual_parameters`,
    `predictions` (`tables()` returns them by their run-directory file names)."""

    model: PopulationModel
    subjects: tuple[str, ...]
    excluded: tuple[str, ...]
    theta: np.ndarray
    ofv: float
    n_observations: int
    covariance: np.ndarray  # of θ: R⁻¹ (inverse Hessian of −log L) or the sandwich
    covariance_method: str
    converged: bool
    iterations: int
    inner_converged: np.ndarray
    seconds_compile: float
    seconds_total: float
    population_parameters: pd.DataFrame
    random_effects: pd.DataFrame
    omega: pd.DataFrame
    individual_parameters: pd.DataFrame
    predictions: pd.DataFrame | None
    eta: np.ndarray  # [n, r] empirical Bayes estimates of η

    @property
    def aic(self) -> float:
        return self.ofv + 2.0 * len(self.theta)

    @property
    def bic(self) -> float:
        return self.ofv + len(self.theta) * float(np.log(self.n_observations))

    def summary(self) -> dict[str, Any]:
        return dict(
            method="foce-i",
            ofv=self.ofv,
            aic=self.aic,
            bic=self.bic,
            converged=self.converged,
            iterations=self.iterations,
            subjects=len(self.subjects),
            excluded=list(self.excluded),
            observations=self.n_observations,
            inner_converged=int(np.sum(self.inner_converged)),
            covariance=self.covariance_method,
            seconds_compile=self.seconds_compile,
            seconds_total=self.seconds_total,
        )

    def tables(self) -> dict[str, pd.DataFrame]:
        out = {
            "population_parameters.csv": self.population_parameters,
            "random_effects.csv": self.random_effects,
            "omega.csv": self.omega,
            "individual_parameters.csv": self.individual_parameters,
        }
        if self.predictions is not None:
            out["predictions.csv"] = self.predictions
        return out


def forward_only(problem: AbstractFitProblem) -> bool:
    """Whether the problem's simulations support only forward-mode derivatives (Diffrax's
    `ForwardMode` adjoint): then the outer gradient is taken in forward mode."""
    return isinstance(getattr(problem.options, "adjoint", None), dfx.ForwardMode)


@eqx.filter_jit
def _outer(model, problems, z, xi0, theta0, inner_max_steps, max_steps, rtol, atol):
    solver = optx.BFGS(rtol=rtol, atol=atol)
    args = (model, problems, z, xi0, inner_max_steps)
    objective = population_objective_forward if forward_only(problems) else population_value
    solution = optx.minimise(
        objective,
        solver,
        theta0,
        args=args,
        max_steps=max_steps,
        throw=False,
    )
    return solution.value, solution.result == optx.RESULTS.successful, solution.stats["num_steps"]


#: compiled outer fits of this process, by population model, problem structure and settings
_COMPILED: dict[Any, Any] = {}


def _compiled_outer(model, stacked, z, xi0, theta0, *settings):
    """The outer fit compiled for these shapes (once per process: a later cohort of the same
    structure and size, e.g. a replicate, reuses it)."""
    leaves, treedef = jax.tree.flatten((stacked, z, xi0, theta0))
    key = (model, treedef, tuple((np.shape(x), str(x.dtype)) for x in leaves), settings)
    if key not in _COMPILED:
        _COMPILED[key] = _outer.lower(model, stacked, z, xi0, theta0, *settings).compile()
    return _COMPILED[key]


@eqx.filter_jit
def _screen(model, problems, theta, z, xi0, inner_max_steps):
    return fit_subjects(model, problems, theta, z, xi0, inner_max_steps)


@eqx.filter_jit
def _scores(model, problems, theta, z, xi0, inner_max_steps):
    """Each subject's exact gradient of ½·(−2 log L_i) at θ [n, q] (EBEs re-fitted at θ,
    warm from ξ₀) and the EBEs."""
    inner = fit_subjects(model, problems, theta, z, xi0, inner_max_steps)

    def one(problem, zi, x):
        # forward mode: q directions, and every structural problem supports it
        return jax.jacfwd(lambda t: 0.5 * subject_objective(model, problem, t, zi, x))(theta)

    return jax.vmap(one)(problems, z, inner.xi), inner.xi


def _curvature(model, problems, theta, z, xi, inner_max_steps, step=1e-4):
    """(R = ½∇²OFV by central differences of the exact gradient, each subject's gradient
    of ½OFV_i [n, q]) at θ."""
    scores, _ = _scores(model, problems, theta, z, xi, inner_max_steps)
    columns = []
    for k in range(theta.shape[0]):
        h = step * max(1.0, abs(float(theta[k])))
        up, _ = _scores(model, problems, theta.at[k].add(h), z, xi, inner_max_steps)
        down, _ = _scores(model, problems, theta.at[k].add(-h), z, xi, inner_max_steps)
        columns.append((np.asarray(up).sum(0) - np.asarray(down).sum(0)) / (2.0 * h))
    hessian = np.stack(columns, axis=1)
    return 0.5 * (hessian + hessian.T), np.asarray(scores)


def _covariance(hessian: np.ndarray, scores: np.ndarray, method: str) -> np.ndarray:
    r_inv = np.linalg.pinv(hessian, hermitian=True)
    if method == "hessian":
        return r_inv
    return r_inv @ (scores.T @ scores) @ r_inv


def fit_population(
    problems: Sequence[AbstractFitProblem] | AbstractFitProblem,
    model: PopulationModel,
    *,
    subjects: Sequence[str] | None = None,
    covariates: pd.DataFrame | Mapping[str, Any] | None = None,
    start: Mapping[str, float] | None = None,
    omega_start: float | Mapping[str, float] = OMEGA_START,
    covariance: str = "hessian",
    units: Mapping[str, str] | None = None,
    max_steps: int = OUTER_MAX_STEPS,
    rtol: float = OUTER_RTOL,
    atol: float = OUTER_ATOL,
    inner_max_steps: int = INNER_MAX_STEPS,
) -> PopulationResult:
    """Fit `model` to the subjects' `problems` (a list, or one stacked pytree) by FOCE-I.

    - `covariates`: a table indexed by subject (or a mapping column → values in subject
      order) holding the covariates of `model.covariates`;
    - `start`: typical values to start from (physical units, by name; default each
      quantity's median starting value over the subjects); `omega_start`: SDs of the
      random effects (log scale);
    - `covariance`: `hessian` (R⁻¹, the inverse Hessian of −log L; default) or `sandwich`
      (R⁻¹SR⁻¹, NONMEM's default, robust to a misspecified residual model).

    Subjects whose objective is not finite at the start (e.g. a simulation that fails)
    are left out and listed in `excluded`; they never poison the others."""
    t_start = time.perf_counter()
    if covariance not in ("hessian", "sandwich"):
        raise ValueError(f"covariance {covariance!r}: use 'hessian' or 'sandwich'")
    stacked = problems if isinstance(problems, AbstractFitProblem) else stack_problems(problems)
    n = int(jax.tree.leaves(stacked)[0].shape[0])
    subjects = tuple(str(s) for s in (subjects if subjects is not None else range(n)))
    if len(subjects) != n:
        raise ValueError(f"{len(subjects)} subject names for {n} problems")
    first = _take(stacked, 0)
    if tuple(first.names) != tuple(model.names):
        raise ValueError(
            f"the population model's quantities {model.names} are not the problems' "
            f"{tuple(first.names)}"
        )
    z = jnp.asarray(model.design(covariates if covariates is not None else {}, subjects))
    theta0 = _start(model, stacked, first, start, omega_start)
    xi0 = jnp.zeros((n, model.n_random))

    screen = _screen(model, stacked, theta0, z, xi0, inner_max_steps)
    finite = np.isfinite(np.asarray(screen.value))
    keep = np.flatnonzero(finite)
    if keep.size == 0:
        raise ValueError("no subject's objective is finite at the start; check data and start")
    excluded = tuple(s for s, ok in zip(subjects, finite) if not ok)
    stacked, z, xi0 = _take(stacked, keep), z[keep], screen.xi[keep]
    subjects = tuple(subjects[i] for i in keep)

    t_compile = time.perf_counter()
    compiled = _compiled_outer(
        model, stacked, z, xi0, theta0, inner_max_steps, max_steps, rtol, atol
    )
    seconds_compile = time.perf_counter() - t_compile
    theta, converged, steps = compiled(
        model, stacked, z, xi0, theta0, inner_max_steps, max_steps, rtol, atol
    )
    inner = _screen(model, stacked, theta, z, xi0, inner_max_steps)
    ofv = float(jnp.sum(subjects_objective(model, stacked, theta, z, inner.xi)))
    hessian, scores = _curvature(model, stacked, theta, z, inner.xi, inner_max_steps)
    cov = _covariance(np.asarray(hessian), np.asarray(scores), covariance)

    units = dict(units or {})
    tables = _tables(model, stacked, subjects, theta, inner.xi, z, cov, units)
    return PopulationResult(
        model=model,
        subjects=subjects,
        excluded=excluded,
        theta=np.asarray(theta),
        ofv=ofv,
        n_observations=_n_observations(stacked),
        covariance=cov,
        covariance_method=covariance,
        converged=bool(converged),
        iterations=int(steps),
        inner_converged=np.asarray(inner.converged),
        seconds_compile=seconds_compile,
        seconds_total=time.perf_counter() - t_start,
        eta=np.asarray(jax.vmap(lambda x: model.unpack(theta)[2] @ x)(inner.xi)),
        **tables,
    )


def _start(model, stacked, first, start, omega_start) -> jnp.ndarray:
    initial = np.asarray(jax.vmap(lambda p: p.initial())(stacked))
    mu = np.median(initial, axis=0)
    if start:
        unknown = set(start) - set(model.names)
        if unknown:
            raise ValueError(f"start: {sorted(unknown)} are not among {', '.join(model.names)}")
        values = np.array(first.to_values(jnp.asarray(mu)))
        for k, name in enumerate(model.names):
            if name in start:
                values[k] = start[name]
        mu = np.asarray(first.from_values(jnp.asarray(values)))
    if isinstance(omega_start, Mapping):
        sd = [float(omega_start.get(n, OMEGA_START)) for n in model.random]
    else:
        sd = [float(omega_start)] * model.n_random
    return model.pack(mu, np.zeros(len(model.covariates)), sd)


def _n_observations(stacked) -> int:
    mask = getattr(stacked, "mask", None)
    if mask is not None:
        return int(np.sum(np.asarray(mask)))
    return int(np.prod(jax.vmap(lambda p: p.residuals(p.initial()))(stacked).shape))


def _derived(model: PopulationModel, first: AbstractFitProblem, theta):
    """What the tables report, as one vector of θ: typical values (physical), covariate
    coefficients, random-effect SDs, then (full Ω) their correlations."""
    mu, beta, chol = model.unpack(theta)
    omega = chol @ chol.T
    sd = jnp.sqrt(jnp.diag(omega))
    parts = [first.to_values(mu), beta, sd]
    if model.omega == "full":
        rows, cols = np.tril_indices(model.n_random, -1)
        parts.append((omega / jnp.outer(sd, sd))[rows, cols])
    return jnp.concatenate(parts)


def _tables(model, stacked, subjects, theta, xi, z, cov, units) -> dict[str, Any]:
    first = _take(stacked, 0)
    derived = np.asarray(_derived(model, first, theta))
    jac = np.asarray(jax.jacfwd(lambda t: _derived(model, first, t))(theta))
    se = np.sqrt(np.maximum(np.diag(jac @ cov @ jac.T), 0.0))
    p, c, r = len(model.names), len(model.covariates), model.n_random
    log_scale = first.log_scale()
    mu_se = np.sqrt(np.maximum(np.diag(cov)[:p], 0.0))
    mu = np.asarray(theta[:p])
    low = np.asarray(first.to_values(jnp.asarray(mu - Z95 * mu_se)))
    high = np.asarray(first.to_values(jnp.asarray(mu + Z95 * mu_se)))
    rows = [
        (name, derived[k], se[k], low[k], high[k], units.get(name, ""))
        for k, name in enumerate(model.names)
    ]
    for k, effect in enumerate(model.covariates):
        b, s = derived[p + k], se[p + k]
        rows.append((effect.name, b, s, b - Z95 * s, b + Z95 * s, ""))
    population = pd.DataFrame(
        rows, columns=["parameter", "estimate", "se", "ci_low", "ci_high", "unit"]
    )
    population.insert(3, "rse_percent", 100.0 * population["se"] / population["estimate"].abs())

    sd, sd_se = derived[p + c : p + c + r], se[p + c : p + c + r]
    chol = np.asarray(model.unpack(theta)[2])
    eta = np.asarray(xi) @ chol.T
    shrinkage = 1.0 - np.std(eta, axis=0, ddof=1) / sd if len(eta) > 1 else np.full(r, np.nan)
    random_log = [log_scale[model.names.index(n)] for n in model.random]
    cv = np.where(random_log, 100.0 * np.sqrt(np.expm1(sd**2)), np.nan)
    random_effects = pd.DataFrame(
        dict(
            parameter=list(model.random),
            omega_sd=sd,
            se=sd_se,
            rse_percent=100.0 * sd_se / sd,
            cv_percent=cv,
            shrinkage_percent=100.0 * shrinkage,
        )
    )
    omega_matrix = chol @ chol.T
    corr = omega_matrix / np.outer(np.sqrt(np.diag(omega_matrix)), np.sqrt(np.diag(omega_matrix)))
    omega = pd.DataFrame(corr, index=list(model.random), columns=list(model.random))
    omega.index.name = "parameter"

    u = jax.vmap(lambda zi, x: model.individual(theta, zi, x))(z, xi)
    values = np.asarray(jax.vmap(lambda prob, ui: prob.to_values(ui))(stacked, u))
    individual = pd.DataFrame(
        [
            (s, name, values[i, k], units.get(name, ""))
            for i, s in enumerate(subjects)
            for k, name in enumerate(model.names)
        ],
        columns=["subject", "parameter", "ebe", "unit"],
    )
    return dict(
        population_parameters=population,
        random_effects=random_effects,
        omega=omega,
        individual_parameters=individual,
        predictions=_predictions(model, stacked, subjects, theta, z, xi),
    )


def _predictions(model, stacked, subjects, theta, z, xi) -> pd.DataFrame | None:
    """pred (η = 0), ipred (η̂), IWRES and CWRES (FOCE linearisation at η̂) per observation;
    for problems that carry their observations as `times`, `observed`, `mask`."""
    if not all(hasattr(stacked, a) for a in ("times", "observed", "mask")):
        return None

    def one(problem, zi, x):
        u_hat = model.individual(theta, zi, x)
        u_pop = model.individual(theta, zi, jnp.zeros_like(x))
        ipred, _ = problem.predictions(u_hat)
        pred, _ = problem.predictions(u_pop)
        residual = problem.residuals(u_hat)  # (y − f)/σ at η̂, σ held
        jac = jax.jacfwd(lambda e: problem.residuals(model.individual(theta, zi, e)))(x)
        # in η: J_η = J_ξ L⁻¹; Cov(r) = J_η Ω J_ηᵀ + I = J_ξ J_ξᵀ + I
        m = jac @ jac.T + jnp.eye(residual.shape[0])
        cwres = jax.scipy.linalg.solve_triangular(
            jnp.linalg.cholesky(m), residual - jac @ x, lower=True
        )
        return pred, ipred, residual, cwres

    pred, ipred, iwres, cwres = (np.asarray(a) for a in jax.vmap(one)(stacked, z, xi))
    times, observed, mask = (np.asarray(getattr(stacked, a)) for a in ("times", "observed", "mask"))
    rows = []
    for i, s in enumerate(subjects):
        for j in np.flatnonzero(mask[i]):
            rows.append(
                (
                    s,
                    times[i, j],
                    "concentration",
                    observed[i, j],
                    pred[i, j],
                    ipred[i, j],
                    iwres[i, j],
                    cwres[i, j],
                )
            )
    return pd.DataFrame(
        rows,
        columns=["subject", "time", "observable", "dv", "pred", "ipred", "iwres", "cwres"],
    )
