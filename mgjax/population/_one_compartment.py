"""The classic one-compartment model with first-order oral absorption, as a fit problem: the
population engine's built-in structural model for pharmacokinetic data (NONMEM's ADVAN2).

C(t) = Σ_doses D·ka / (V·(ka − ke)) · (e^{−ke·(t−t_d)} − e^{−ka·(t−t_d)}),  ke = CL/V,

for every dose given at or before t (superposition; bioavailability F is not separable from
CL and V with oral data alone, so CL and V are the apparent CL/F and V/F). Residual error
σ(C) = √(a² + (b·C)²) (combined; a in the concentration's unit, b a fraction).

Units are the data's own: with doses in mg, times in h and concentrations in mg/L, ka and
ke are 1/h, CL L/h and V L.
"""

from __future__ import annotations

from typing import Any, ClassVar

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jaxtyping import Array, Bool, Float

from ..data._nonmem import NonmemData
from ..solve._solve import SolverOptions
from ._log_problem import (
    AbstractLogScaleProblem,
    free_quantities,
    observed_samples,
    padded_samples,
    start_values,
)

#: every quantity of the model, in the order of `OneCompartmentOral.values`
QUANTITIES = ("ka", "cl", "v", "sigma_additive", "sigma_proportional")
#: the model parameters among them (the rest are the residual error's terms)
MODEL_PARAMETERS = QUANTITIES[:3]
#: units, for tables (with doses in mg, times in h, concentrations in mg/L)
UNITS = {"ka": "1/h", "cl": "L/h", "v": "L", "sigma_additive": "mg/L", "sigma_proportional": "1"}
#: ka within this of ke uses the limit of the formula (ka = ke: D·k/V · τ·e^{−kτ})
_FLIP_FLOP_GAP = 1e-7


def concentration(
    times: Float[Array, " m"],
    dose_times: Float[Array, " d"],
    dose_amounts: Float[Array, " d"],
    ka: Any,
    cl: Any,
    v: Any,
) -> Float[Array, " m"]:
    """Concentrations at `times` after oral doses (`dose_amounts` at `dose_times`; zero
    amounts are padding) in the one-compartment model."""
    ke = cl / v
    tau = times[:, None] - dose_times[None, :]
    after = tau >= 0.0
    tau = jnp.where(after, tau, 0.0)
    gap = ka - ke
    near = jnp.abs(gap) < _FLIP_FLOP_GAP * ka
    safe_gap = jnp.where(near, 1.0, gap)
    general = (jnp.exp(-ke * tau) - jnp.exp(-ka * tau)) * ka / safe_gap
    limit = ka * tau * jnp.exp(-ke * tau)
    per_dose = jnp.where(near, limit, general) * dose_amounts[None, :] / v
    return jnp.sum(jnp.where(after, per_dose, 0.0), axis=1)


class OneCompartmentOral(AbstractLogScaleProblem):
    """One subject's oral-dose concentrations and the one-compartment model, on the log
    of its free quantities (`AbstractLogScaleProblem`). Zero doses, like padded
    observations, count for nothing."""

    quantities: ClassVar[tuple[str, ...]] = QUANTITIES
    observable: ClassVar[str] = "concentration"

    times: Float[Array, " m"]  # h
    observed: Float[Array, " m"]  # mg/L
    mask: Bool[Array, " m"]
    dose_times: Float[Array, " d"]  # h
    dose_amounts: Float[Array, " d"]  # mg
    values: Float[Array, " 5"]  # every quantity of `QUANTITIES` (fixed ones hold here)
    lower: Float[Array, " p"]
    upper: Float[Array, " p"]
    prior_mean: Float[Array, " p"]
    prior_sd: Float[Array, " p"]
    options: SolverOptions = eqx.field(default_factory=SolverOptions)  # no ODE: interface
    free: tuple[str, ...] = eqx.field(static=True, default=MODEL_PARAMETERS)
    error_parameters: tuple = eqx.field(
        static=True, default=(("concentration", "additive"), ("concentration", "proportional"))
    )
    least_squares: bool = eqx.field(static=True, default=False)

    def predictions(self, u: Float[Array, " p"]) -> tuple[Any, Any]:
        ka, cl, v = self.all_values(u)[:3]
        c = concentration(self.times, self.dose_times, self.dose_amounts, ka, cl, v)
        return c, jnp.all(jnp.isfinite(jnp.where(self.mask, c, 0.0)))


def one_compartment_problem(
    times: Any,
    observed: Any,
    dose_times: Any,
    dose_amounts: Any,
    *,
    values: dict[str, float] | None = None,
    free: tuple[str, ...] = MODEL_PARAMETERS,
    estimate_error: tuple[str, ...] = ("additive", "proportional"),
    n_observations: int | None = None,
    n_doses: int | None = None,
) -> OneCompartmentOral:
    """One subject's problem; NaN observations are left out. `values`: starting (or fixed)
    values of `QUANTITIES` (defaults ka 1/h, CL 5 L/h, V 50 L, a 0.05 mg/L, b 0.1);
    `n_observations`/`n_doses` pad to a cohort's largest, so problems stack."""
    start = start_values(
        QUANTITIES,
        dict(ka=1.0, cl=5.0, v=50.0, sigma_additive=0.05, sigma_proportional=0.1),
        values,
    )
    times, observed = observed_samples(times, observed)
    pad_d = (n_doses or len(dose_times)) - len(dose_times)
    if pad_d < 0:
        raise ValueError("n_doses below this subject's own count")
    return OneCompartmentOral(
        **padded_samples(times, observed, n_observations, fill_time=0.0),
        dose_times=jnp.asarray(np.concatenate([np.asarray(dose_times, float), np.zeros(pad_d)])),
        dose_amounts=jnp.asarray(
            np.concatenate([np.asarray(dose_amounts, float), np.zeros(pad_d)])
        ),
        values=start,
        **free_quantities(free, OneCompartmentOral.observable, estimate_error),
    )


def simulate_one_compartment_cohort(
    n: int,
    *,
    typical: dict[str, float],
    omega_sd: dict[str, float],
    times: Any,
    dose_amount: float = 100.0,
    weight_exponent: float = 0.75,
    weight_mean: float = 75.0,
    weight_sd: float = 12.0,
    seed: int = 0,
) -> tuple[list[OneCompartmentOral], np.ndarray, dict[str, np.ndarray]]:
    """A synthetic cohort with known truth: `n` subjects, one oral dose (mg) at t = 0,
    concentrations at `times` (h) with the combined error of `typical`'s `sigma_additive`
    and `sigma_proportional`; log-normal ka, CL, V (SDs `omega_sd` on the log scale, any
    subset) and CL ∝ (weight/70 kg)^`weight_exponent` (weights normal, clipped to 40–150 kg).

    **Returns:** (each subject's problem, the weights, the individual true values)."""
    rng = np.random.default_rng(seed)
    times = np.asarray(times, dtype=float)
    weights = np.clip(rng.normal(weight_mean, weight_sd, n), 40.0, 150.0)
    truth = {k: np.empty(n) for k in MODEL_PARAMETERS}
    problems = []
    a, b = typical["sigma_additive"], typical["sigma_proportional"]
    for i in range(n):
        eta = {k: rng.normal(0.0, omega_sd.get(k, 0.0)) for k in MODEL_PARAMETERS}
        values = {k: typical[k] * np.exp(eta[k]) for k in MODEL_PARAMETERS}
        values["cl"] *= (weights[i] / 70.0) ** weight_exponent
        for k in MODEL_PARAMETERS:
            truth[k][i] = values[k]
        c = np.asarray(
            concentration(
                jnp.asarray(times),
                jnp.zeros(1),
                jnp.full(1, dose_amount),
                values["ka"],
                values["cl"],
                values["v"],
            )
        )
        y = c + np.sqrt(a**2 + (b * c) ** 2) * rng.standard_normal(c.shape)
        problems.append(one_compartment_problem(times, y, [0.0], [dose_amount]))
    return problems, weights, truth


def one_compartment_problems(
    data: NonmemData,
    *,
    values: dict[str, float] | None = None,
    free: tuple[str, ...] = MODEL_PARAMETERS,
    estimate_error: tuple[str, ...] = ("additive", "proportional"),
    observable: str = "concentration",
) -> tuple[list[OneCompartmentOral], list[str], pd.DataFrame]:
    """Each subject's problem from a NONMEM-style dataset (`mgjax.data.read_nonmem`), padded
    to the cohort's largest; (problems, subjects, covariates)."""
    obs = data.observations[data.observations["observable"] == observable]
    obs_by = dict(tuple(obs.groupby("subject", sort=False)))
    dose_by = dict(tuple(data.doses.groupby("subject", sort=False)))
    subjects = [s for s in data.subjects if s in obs_by]
    if not subjects:
        raise ValueError(f"{data.source.name}: no {observable!r} observations")
    no_dose = [s for s in subjects if s not in dose_by]
    if no_dose:
        raise ValueError(
            f"{data.source.name}: subject(s) {no_dose[:5]} have no dose (EVID 1); the oral "
            "model needs each subject's doses"
        )
    m = max(len(obs_by[s]) for s in subjects)
    d = max(len(dose_by[s]) for s in subjects)
    problems = [
        one_compartment_problem(
            obs_by[s]["time"].to_numpy(),
            obs_by[s]["value"].to_numpy(),
            dose_by[s]["time"].to_numpy(),
            dose_by[s]["amount"].to_numpy(),
            values=values,
            free=free,
            estimate_error=estimate_error,
            n_observations=m,
            n_doses=d,
        )
        for s in subjects
    ]
    return problems, subjects, data.covariates.loc[subjects]


def nonmem_table(
    problems: list[OneCompartmentOral], subjects: list[str], covariates: pd.DataFrame
) -> pd.DataFrame:
    """A NONMEM-style table (ID, TIME, DV, MDV, EVID, AMT, CMT, covariates) of one-compartment
    problems: doses into CMT 1, concentrations from CMT 2."""
    rows = []
    for subject, p in zip(subjects, problems):
        extra = {c.upper(): covariates.loc[subject, c] for c in covariates.columns}
        events = [
            (float(t), 1, float(a)) for t, a in zip(p.dose_times, p.dose_amounts) if a > 0
        ] + [(float(t), 0, float(y)) for t, y, k in zip(p.times, p.observed, p.mask) if k]
        for t, evid, x in sorted(events, key=lambda e: (e[0], -e[1])):
            dose = evid == 1
            rows.append(
                dict(
                    ID=subject,
                    TIME=t,
                    DV="." if dose else x,
                    MDV=int(dose),
                    EVID=evid,
                    AMT=x if dose else ".",
                    CMT=1 if dose else 2,
                    **extra,
                )
            )
    return pd.DataFrame(rows)
