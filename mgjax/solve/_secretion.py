"""Glucose-driven insulin secretion: the beta-cell module alone, forced by a measured plasma
glucose series — how beta-cell models are identified from clamp, IVGTT and OGTT data (Mari and
colleagues: secretion reconstructed from C-peptide, glucose as the input), so that the secretion
module can be fitted without the rest of the physiology.
"""

from __future__ import annotations

from typing import Any

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

from ..model import BetaCell, Inputs, MgT2DModel
from ..protocols._base import _as_array, body_surface_area
from ._solve import SolverOptions, integrate
from ._steady_state import steady_state


class Series(eqx.Module):
    """A measured signal at `times` (min), linearly interpolated, held constant outside the
    samples: plasma glucose (mmol/L) for `simulate_secretion`, or free intracellular Mg²⁺."""

    times: Float[Array, " n"] = eqx.field(converter=_as_array)
    values: Float[Array, " n"] = eqx.field(converter=_as_array)

    def __check_init__(self) -> None:
        """Concrete series: one time per value, finite, times strictly increasing."""
        if _traced(self.times, self.values):
            return
        times, values = np.asarray(self.times), np.asarray(self.values)
        if times.ndim != 1 or times.shape != values.shape or times.size == 0:
            raise ValueError(
                f"a Series needs one time per value (got times {times.shape}, values "
                f"{values.shape})"
            )
        if not (np.all(np.isfinite(times)) and np.all(np.isfinite(values))):
            raise ValueError("a Series' times and values must be finite numbers")
        if np.any(np.diff(times) <= 0):
            k = int(np.argmax(np.diff(times) <= 0)) + 1
            raise ValueError(
                f"a Series' times must increase strictly: time {k} ({times[k]:g} min) follows "
                f"{times[k - 1]:g} min; sort the samples by time (and merge repeated times)"
            )

    def __call__(self, t: Any) -> Any:
        return jnp.interp(t, self.times, self.values)


#: A measured plasma glucose series (mmol/L over min).
GlucoseSeries = Series


def _value(signal: Any, t: Any) -> Any:
    return signal(t) if isinstance(signal, Series) else signal


class SecretionTrajectory(eqx.Module):
    """Beta-cell states and secretion at `ts`. `secretion` is the pre-hepatic insulin secretion
    rate (pmol/min), `secretion_per_m2` the same per m² of body surface area (pmol/min/m²)."""

    ts: Float[Array, " times"]
    ys: Float[Array, "times 5"]
    glucose: Float[Array, " times"]
    secretion: Float[Array, " times"]
    secretion_per_m2: Float[Array, " times"]
    c_peptide: Float[Array, " times"]
    success: Bool[Array, ""]


def beta_cell_steady_state(beta: BetaCell, glucose: Any, mg_free: Any, body_weight: Any) -> Any:
    """The beta-cell's five states at rest at constant glucose (mmol/L) and free Mg²⁺ (mmol/L).
    The ATP fraction is a fixed point (its glucokinase flux depends on it only through MgATP,
    weakly, so the iteration contracts fast); the rest follow in closed form."""

    def phi_map(_, phi):
        j = beta.glucokinase_flux(glucose, phi, mg_free, jnp)
        drive = beta.atp_production_gain * (j + beta.other_fuel_flux)
        return drive / (1.0 + drive)

    phi = jax.lax.fori_loop(0, 40, phi_map, jnp.asarray(0.8, dtype=jnp.float64))
    amp = beta.glucokinase_flux(glucose, phi, mg_free, jnp)
    k_exo = beta.exocytosis_rate(phi, mg_free, jnp)
    mobilise = beta.mobilisation_rate * (beta.mobilisation_basal + amp)
    pool = mobilise * beta.beta_cell_mass * beta.rrp_capacity / (mobilise + k_exo)
    secretion = k_exo * pool
    c1 = secretion / (beta.c_peptide_volume * body_weight) / beta.c_peptide_ke
    c2 = c1 * beta.c_peptide_k1 / beta.c_peptide_k2
    return jnp.stack([phi, pool, amp, c1, c2])


def _vector_field(t, y, args):
    beta, glucose, mg_signal, body_weight = args
    s = dict(zip(BetaCell.state_names, y))
    g = glucose(t)
    mg_free = _value(mg_signal, t)
    d = beta.rates(
        s,
        glucokinase_flux=beta.glucokinase_flux(g, s["atp_fraction"], mg_free, jnp),
        exocytosis_rate=beta.exocytosis_rate(s["atp_fraction"], mg_free, jnp),
        body_weight=body_weight,
    )
    return jnp.stack([d[n] for n in BetaCell.state_names])


def _traced(*values: Any) -> bool:
    return any(isinstance(v, jax.core.Tracer) for v in values)


def simulate_secretion(
    model: MgT2DModel,
    glucose: GlucoseSeries,
    ts: Float[Array, " times"],
    *,
    mg_free: Any = None,
    options: SolverOptions | None = None,
    throw: bool = True,
) -> SecretionTrajectory:
    """Insulin secretion of `model`'s beta-cell driven by a glucose series.

    **Arguments:**

    - `model`: the subject (its `beta_cell` parameters, body weight and height are used);
    - `glucose`: a `GlucoseSeries` (mmol/L over min);
    - `ts`: output times (min), within the series;
    - `mg_free`: intracellular free Mg²⁺ (mmol/L), a constant or a `Series`; default the
      subject's fasting value, held constant;
    - `options`, `throw`: as for `mgjax.simulate`.

    The beta-cell starts at rest at the series' first glucose value. A constant `mg_free` is
    traced (a new value never compiles again); concrete output times are checked to be sorted
    and not before the series' start.
    """
    options = SolverOptions() if options is None else options
    ts = jnp.asarray(ts, dtype=jnp.float64)
    if not _traced(ts, glucose.times):
        _check_output_times(np.asarray(ts), float(np.asarray(glucose.times)[0]))
    if mg_free is not None and not isinstance(mg_free, Series):
        mg_free = jnp.asarray(mg_free, dtype=jnp.float64)
    return _simulate_secretion(model, glucose, ts, mg_free, options, throw)


def _check_output_times(ts: np.ndarray, start: float) -> None:
    if ts.ndim != 1 or ts.size == 0 or not np.all(np.isfinite(ts)):
        raise ValueError("simulate_secretion: `ts` must be a non-empty 1-D array of finite times")
    if np.any(np.diff(ts) < 0):
        raise ValueError("simulate_secretion: output times `ts` must be sorted")
    if ts[0] < start:
        raise ValueError(
            f"simulate_secretion: output time {ts[0]:g} min is before the glucose series starts "
            f"({start:g} min); give times from the series' first sample on"
        )


@eqx.filter_jit
def _simulate_secretion(model, glucose, ts, mg_free, options, throw) -> SecretionTrajectory:
    beta = model.beta_cell
    weight = model.glucose_insulin.body_weight
    if mg_free is None:
        mg_free = _fasting_mg_free(model, throw)
    t_start = glucose.times[0]
    y0 = beta_cell_steady_state(beta, glucose(t_start), _value(mg_free, t_start), weight)
    sol = integrate(
        _vector_field,
        options,
        t0=glucose.times[0],
        t1=ts[-1],
        y0=y0,
        args=(beta, glucose, mg_free, weight),
        saveat=dfx.SaveAt(ts=ts),
        autonomous=False,  # the glucose series is interpolated linearly between samples
        dt0=options.dt0,
        jump_ts=_jump_times(glucose, mg_free),
        throw=throw,
    )
    return _trajectory(model, glucose, mg_free, ts, sol)


class SecretionDoseResponse(eqx.Module):
    """Steady-state insulin secretion of a beta-cell held at each of `glucose` (mmol/L):
    `secretion` (pmol/min), `secretion_per_m2` (pmol/min/m² of body surface area),
    `c_peptide` (pmol/L, plasma at rest) and `atp_fraction` (the ATP/(ATP + ADP) fraction)."""

    glucose: Float[Array, " levels"]
    secretion: Float[Array, " levels"]
    secretion_per_m2: Float[Array, " levels"]
    c_peptide: Float[Array, " levels"]
    atp_fraction: Float[Array, " levels"]


@eqx.filter_jit
def secretion_dose_response(model: MgT2DModel, glucose: Any, mg_free: Any = None):
    """The beta-cell's steady-state glucose dose–response: the secretion it settles to when
    plasma glucose is held at each level of `glucose` (mmol/L) — the relation graded-glucose
    infusions and hyperglycaemic clamp plateaus measure. `mg_free`: intracellular free Mg²⁺
    (mmol/L), default the subject's fasting value (its steady state, as `simulate_secretion`).
    Closed form per level (no time integration); works under `jax.jit`, `jax.vmap` and
    `jax.grad`. Returns a `SecretionDoseResponse`."""
    beta = model.beta_cell
    weight = model.glucose_insulin.body_weight
    levels = jnp.atleast_1d(jnp.asarray(glucose, dtype=jnp.float64))
    if mg_free is None:
        mg_free = _fasting_mg_free(model, throw=False)
    mg_free = jnp.asarray(mg_free, dtype=jnp.float64)
    states = jax.vmap(lambda g: beta_cell_steady_state(beta, g, mg_free, weight))(levels)
    phi, pool = states[:, 0], states[:, 1]
    secretion = jax.vmap(lambda p: beta.exocytosis_rate(p, mg_free, jnp))(phi) * pool
    return SecretionDoseResponse(
        glucose=levels,
        secretion=secretion,
        secretion_per_m2=secretion / body_surface_area(model),
        c_peptide=states[:, 3],
        atp_fraction=phi,
    )


def _fasting_mg_free(model: MgT2DModel, throw: bool) -> Any:
    """The subject's intracellular free Mg²⁺ (mmol/L) at the fasting steady state."""
    fasting = steady_state(model, Inputs.zeros(), throw=throw)
    return model.observables(fasting.y, Inputs.zeros(), jnp)["intracellular_mg"]


def _jump_times(glucose: Series, mg_free: Any) -> Float[Array, " jumps"]:
    """The sample times of the forcing series (min), where the vector field has kinks."""
    if isinstance(mg_free, Series):
        return jnp.concatenate([glucose.times, mg_free.times])
    return glucose.times


def _trajectory(
    model: MgT2DModel, glucose: Series, mg_free: Any, ts: Float[Array, " times"], sol: Any
) -> SecretionTrajectory:
    """Secretion (pmol/min, and per m²) and C-peptide read from the solved beta-cell states."""
    beta = model.beta_cell
    ys = sol.ys
    k_exo = jax.vmap(lambda t, phi: beta.exocytosis_rate(phi, _value(mg_free, t), jnp))(
        ts, ys[:, 0]
    )
    secretion = k_exo * ys[:, 1]
    return SecretionTrajectory(
        ts=ts,
        ys=ys,
        glucose=jax.vmap(glucose)(ts),
        secretion=secretion,
        secretion_per_m2=secretion / body_surface_area(model),
        c_peptide=ys[:, 3],
        success=sol.result == dfx.RESULTS.successful,
    )
