"""Bergman's minimal model of glucose kinetics during an IVGTT, as a fit problem: the
population engine's reduced glucose–insulin ODE model (the classic population IVGTT
analysis, with each subject's measured plasma insulin as the input).

    dG/dt = −(S_G + X)·G + S_G·G_b,        G(0) = G_0
    dX/dt = −p₂·(X − S_I·(I(t) − I_b)),     X(0) = 0

G plasma glucose (mg/dL), X insulin action in the remote compartment (1/min), I(t) the
subject's measured insulin (µU/mL) interpolated linearly between its samples (held after the
last), G_b and I_b its basal glucose and insulin (measured before the bolus). S_G glucose
effectiveness (1/min), S_I insulin sensitivity (10⁻⁴ min⁻¹ per µU/mL), p₂ the remote
compartment's rate (1/min), G_0 the glucose extrapolated to t = 0 after the bolus (mg/dL).
Residual error σ(G) = √(a² + (b·G)²).

Solved by Diffrax (Tsit5, PID steps stopping at the insulin samples) and differentiated in
forward mode, which the population engine's FOCE-I then uses throughout (`forward_only`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jaxtyping import Array, Bool, Float

from ..solve._solve import SolverOptions
from ._log_problem import (
    AbstractLogScaleProblem,
    free_quantities,
    observed_samples,
    padded_samples,
    start_values,
)

#: every quantity of the model, in the order of `MinimalModelIVGTT.values`
QUANTITIES = ("sg", "si", "p2", "g0", "sigma_additive", "sigma_proportional")
#: the model parameters among them (the rest are the residual error's terms)
MODEL_PARAMETERS = QUANTITIES[:4]
#: S_I is carried in 10⁻⁴ min⁻¹ per µU/mL (values of order 1 to 10)
SI_SCALE = 1e-4
#: the Bergman FSIVGTT's sample times after the bolus (min), a sparse subset of the classic 25
IVGTT_TIMES = (2.0, 4.0, 6.0, 8.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0)


def minimal_model_options(rtol: float = 1e-8, atol: float = 1e-8) -> SolverOptions:
    """Solver settings of the minimal model: Tsit5 (the model is not stiff), forward mode."""
    return SolverOptions(
        solver=dfx.Tsit5(),
        rtol=rtol,
        atol=atol,
        dt0=0.5,
        max_steps=4096,
        adjoint=dfx.ForwardMode(),
    )


def ivgtt_glucose(
    times: Float[Array, " m"],
    insulin_times: Float[Array, " k"],
    insulin: Float[Array, " k"],
    basal_glucose: Any,
    basal_insulin: Any,
    sg: Any,
    si: Any,
    p2: Any,
    g0: Any,
    options: SolverOptions | None = None,
) -> tuple[Float[Array, " m"], Any]:
    """Plasma glucose (mg/dL) of the minimal model at `times` (min, non-decreasing), and
    whether the solve succeeded. `si` in 10⁻⁴ min⁻¹ per µU/mL."""
    options = minimal_model_options() if options is None else options

    def field(t, y, args):
        g, x = y
        i = jnp.interp(t, insulin_times, insulin)
        return jnp.stack(
            [-(sg + x) * g + sg * basal_glucose, -p2 * (x - si * SI_SCALE * (i - basal_insulin))]
        )

    controller = dfx.PIDController(
        rtol=options.rtol,
        atol=options.atol,
        pcoeff=options.pcoeff,
        icoeff=options.icoeff,
        jump_ts=insulin_times,
    )
    solution = dfx.diffeqsolve(
        dfx.ODETerm(field),
        options.solver,
        t0=0.0,
        t1=times[-1],
        dt0=options.dt0,
        y0=jnp.stack([jnp.asarray(g0, dtype=jnp.float64), jnp.zeros((), jnp.float64)]),
        saveat=dfx.SaveAt(ts=times),
        stepsize_controller=controller,
        max_steps=options.max_steps,
        adjoint=options.adjoint,
        throw=False,
    )
    glucose = solution.ys[:, 0]
    ok = (solution.result == dfx.RESULTS.successful) & jnp.all(jnp.isfinite(glucose))
    return glucose, ok


class MinimalModelIVGTT(AbstractLogScaleProblem):
    """One subject's IVGTT glucose and the minimal model, on the log of its free
    quantities (`AbstractLogScaleProblem`; padded observations repeat the last sample's
    time)."""

    quantities: ClassVar[tuple[str, ...]] = QUANTITIES
    observable: ClassVar[str] = "glucose"

    times: Float[Array, " m"]  # min
    observed: Float[Array, " m"]  # mg/dL
    mask: Bool[Array, " m"]
    insulin_times: Float[Array, " k"]  # min
    insulin: Float[Array, " k"]  # µU/mL
    basal_glucose: Float[Array, ""]  # mg/dL
    basal_insulin: Float[Array, ""]  # µU/mL
    values: Float[Array, " 6"]  # every quantity of `QUANTITIES` (fixed ones hold here)
    lower: Float[Array, " p"]
    upper: Float[Array, " p"]
    prior_mean: Float[Array, " p"]
    prior_sd: Float[Array, " p"]
    options: SolverOptions = eqx.field(default_factory=minimal_model_options)
    free: tuple[str, ...] = eqx.field(static=True, default=MODEL_PARAMETERS)
    error_parameters: tuple = eqx.field(
        static=True, default=(("glucose", "additive"), ("glucose", "proportional"))
    )
    least_squares: bool = eqx.field(static=True, default=False)

    def predictions(self, u: Float[Array, " p"]) -> tuple[Any, Any]:
        sg, si, p2, g0 = self.all_values(u)[:4]
        return ivgtt_glucose(
            self.times,
            self.insulin_times,
            self.insulin,
            self.basal_glucose,
            self.basal_insulin,
            sg,
            si,
            p2,
            g0,
            self.options,
        )


def minimal_model_problem(
    times: Any,
    glucose: Any,
    insulin_times: Any,
    insulin: Any,
    basal_glucose: float,
    basal_insulin: float,
    *,
    values: dict[str, float] | None = None,
    free: tuple[str, ...] = MODEL_PARAMETERS,
    estimate_error: tuple[str, ...] = ("additive", "proportional"),
    n_observations: int | None = None,
    options: SolverOptions | None = None,
) -> MinimalModelIVGTT:
    """One subject's problem: glucose (mg/dL) sampled at `times` (min after the bolus; NaN
    samples left out), insulin (µU/mL) at `insulin_times` (increasing, from 0), the basal
    glucose and insulin. `values`: starting (or fixed) values of `QUANTITIES` (defaults S_G
    0.02 1/min, S_I 5, p₂ 0.03 1/min, G₀ 250 mg/dL, a 3 mg/dL, b 0.03);
    `n_observations` pads to a cohort's largest, so problems stack."""
    start = start_values(
        QUANTITIES,
        dict(sg=0.02, si=5.0, p2=0.03, g0=250.0, sigma_additive=3.0, sigma_proportional=0.03),
        values,
    )
    times, glucose = observed_samples(times, glucose)
    if len(times) == 0 or np.any(np.diff(times) < 0) or times[0] < 0:
        raise ValueError("glucose sample times must be non-negative and increasing")
    insulin_times = np.asarray(insulin_times, dtype=float)
    insulin = np.asarray(insulin, dtype=float)
    if (
        insulin_times.shape != insulin.shape
        or len(insulin_times) < 2
        or np.any(np.diff(insulin_times) <= 0)
        or not np.all(np.isfinite(insulin))
    ):
        raise ValueError(
            "insulin: two or more finite samples at strictly increasing times are needed"
        )
    return MinimalModelIVGTT(
        # padded samples repeat the last time (the solve's end stays put)
        **padded_samples(times, glucose, n_observations, fill_time=times[-1]),
        insulin_times=jnp.asarray(insulin_times),
        insulin=jnp.asarray(insulin),
        basal_glucose=jnp.asarray(float(basal_glucose)),
        basal_insulin=jnp.asarray(float(basal_insulin)),
        values=start,
        options=minimal_model_options() if options is None else options,
        **free_quantities(free, MinimalModelIVGTT.observable, estimate_error),
    )


def simulate_minimal_model_cohort(
    n: int,
    *,
    typical: dict[str, float],
    omega_sd: dict[str, float],
    times: Any = IVGTT_TIMES,
    insulin_cv: float = 0.05,
    seed: int = 0,
) -> tuple[list[MinimalModelIVGTT], pd.DataFrame, dict[str, np.ndarray]]:
    """A synthetic IVGTT cohort with known truth: `n` subjects sampled at `times` (min);
    log-normal S_G, S_I, p₂, G₀ (SDs `omega_sd` on the log scale, any subset) around
    `typical`, which also gives the residual error's `sigma_additive` and
    `sigma_proportional`. Each subject's basal glucose is N(90, 7²) mg/dL, its basal insulin
    log-normal around 10 µU/mL (CV 30 %), its insulin response a first phase (peak ~80
    µU/mL, decaying over 5 min) plus a second one (peak ~20 µU/mL at 40 min), both with
    40 % between-subject CV, measured at t = 0 and at `times` with `insulin_cv` error — the
    measured insulin is the model's input, as in a real analysis.

    **Returns:** (each subject's problem, the data table — ID, TIME, GLU (NaN at t = 0),
    INS, GB, IB — and the individual true values)."""
    rng = np.random.default_rng(seed)
    times = np.asarray(times, dtype=float)
    knots = np.concatenate([[0.0], times])
    truth = {
        k: typical[k] * np.exp(rng.normal(0.0, omega_sd.get(k, 0.0), n)) for k in MODEL_PARAMETERS
    }
    gb = np.clip(rng.normal(90.0, 7.0, n), 65.0, 125.0)
    ib = 10.0 * np.exp(rng.normal(0.0, 0.3, n))
    first, second = (
        80.0 * np.exp(rng.normal(0.0, 0.4, (2, n, 1))) * np.array([1.0, 0.25])[:, None, None]
    )
    curve = (
        ib[:, None]
        + first * np.exp(-knots / 5.0) * (knots > 0)
        + second * (knots / 40.0) * np.exp(1.0 - knots / 40.0)
    )
    insulin = curve * np.exp(insulin_cv * rng.standard_normal(curve.shape))
    options = minimal_model_options(rtol=1e-10, atol=1e-10)

    @jax.jit
    @jax.vmap
    def solve(ins, basal_glucose, basal_insulin, sg, si, p2, g0):
        return ivgtt_glucose(
            jnp.asarray(times),
            jnp.asarray(knots),
            ins,
            basal_glucose,
            basal_insulin,
            sg,
            si,
            p2,
            g0,
            options,
        )

    g, ok = solve(insulin, gb, insulin[:, 0], *(truth[k] for k in MODEL_PARAMETERS))
    if not np.all(ok):
        raise RuntimeError(f"simulation failed for subjects {np.flatnonzero(~np.asarray(ok))}")
    g = np.asarray(g)
    a, b = typical["sigma_additive"], typical["sigma_proportional"]
    y = g + np.sqrt(a**2 + (b * g) ** 2) * rng.standard_normal(g.shape)
    problems = [
        minimal_model_problem(times, y[i], knots, insulin[i], gb[i], insulin[i, 0])
        for i in range(n)
    ]
    table = pd.DataFrame(
        dict(
            ID=np.repeat(np.arange(1, n + 1), len(knots)),
            TIME=np.tile(knots, n),
            GLU=np.concatenate([np.full((n, 1), np.nan), y], axis=1).ravel(),
            INS=insulin.ravel(),
            GB=np.repeat(gb, len(knots)),
            IB=np.repeat(insulin[:, 0], len(knots)),
        )
    )
    return problems, table, truth


def minimal_model_problems(
    table: pd.DataFrame,
    *,
    values: dict[str, float] | None = None,
    free: tuple[str, ...] = MODEL_PARAMETERS,
    estimate_error: tuple[str, ...] = ("additive", "proportional"),
    options: SolverOptions | None = None,
) -> tuple[list[MinimalModelIVGTT], list[str]]:
    """Each subject's problem from an IVGTT table (columns ID, TIME min, GLU mg/dL — NaN
    where not sampled —, INS µU/mL, GB and IB: basal glucose and insulin), padded to the
    cohort's largest; (problems, subjects)."""
    missing = [c for c in ("ID", "TIME", "GLU", "INS", "GB", "IB") if c not in table]
    if missing:
        raise ValueError(
            f"IVGTT table: no column(s) {missing}; it needs ID, TIME, GLU, INS, GB, IB"
        )
    groups = dict(tuple(table.groupby("ID", sort=False)))
    subjects = list(groups)
    m = max(int(np.isfinite(g["GLU"].to_numpy(float)).sum()) for g in groups.values())
    problems = []
    for s in subjects:
        g = groups[s].sort_values("TIME")
        insulin = g[np.isfinite(g["INS"].to_numpy(float))]
        problems.append(
            minimal_model_problem(
                g["TIME"].to_numpy(float),
                g["GLU"].to_numpy(float),
                insulin["TIME"].to_numpy(float),
                insulin["INS"].to_numpy(float),
                float(g["GB"].iloc[0]),
                float(g["IB"].iloc[0]),
                values=values,
                free=free,
                estimate_error=estimate_error,
                n_observations=m,
                options=options,
            )
        )
    return problems, [str(s) for s in subjects]
