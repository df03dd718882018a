"""Glucose clamps (DeFronzo, Tobin & Andres, Am J Physiol 1979;237:E214): the
hyperinsulinaemic–euglycaemic clamp and the hyperglycaemic clamp.

The variable 20 % dextrose infusion is driven by a glucose controller. Clinically the glucose
infusion rate (GIR) is adjusted every 5 min by a negative-feedback formula on the measured
glucose; here it is a continuous proportional–integral controller with back-calculation
anti-windup and a smooth non-negativity limit, an idealisation of that practice. A measured GIR
series can be given instead (`measured_gir`), which makes the protocol open-loop and lets the
data, not the controller, set the glucose input.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import equinox as eqx
import jax.numpy as jnp

from ..model import Inputs, MgT2DModel, ModelLike
from ..model._coupled import GLUCOSE_MG_PER_MMOL, PMOL_PER_MICROUNIT, PMOL_PER_MILLIUNIT
from ._base import (
    AbstractProtocol,
    PiecewiseConstant,
    _as_array,
    body_surface_area,
    piecewise_constant,
)

_STATE = {name: i for i, name in enumerate(MgT2DModel.state_names())}


def _softplus(x, width, xp):
    return width * xp.logaddexp(0.0, x / width)


class GlucoseController(eqx.Module):
    """PI control of the dextrose infusion: GIR = softplus(K_p·e + K_i·∫e), e = G_target − G.

    - `proportional_gain` (mg/kg/min per mmol/L) and `integral_gain` (mg/kg/min per mmol/L·min):
      the defaults give a closed-loop natural period of ≈ 28 min and damping ≈ 0.9 for the
      glucose space of 0.17 L/kg, holding glucose within ~2% of target from 30 min on
      (docs/protocols.md);
    - `tracking_time` (min): anti-windup back-calculation while the GIR is held at zero;
    - `smoothing` (mg/kg/min): width of the smooth GIR ≥ 0 limit.
    """

    magnitudes: ClassVar[tuple[str, ...]] = (
        "proportional_gain",
        "integral_gain",
        "tracking_time",
        "smoothing",
    )

    proportional_gain: Any = eqx.field(default=12.0, converter=_as_array)
    integral_gain: Any = eqx.field(default=1.5, converter=_as_array)
    tracking_time: Any = eqx.field(default=5.0, converter=_as_array)
    smoothing: Any = eqx.field(default=0.05, converter=_as_array)

    def command(self, error, integral):
        return self.proportional_gain * error + self.integral_gain * integral

    def gir(self, error, integral, xp):
        """Glucose infusion rate (mg/kg/min)."""
        return _softplus(self.command(error, integral), self.smoothing, xp)

    def integral_rate(self, error, integral, xp):
        raw = self.command(error, integral)
        applied = _softplus(raw, self.smoothing, xp)
        return error + (applied - raw) / (self.integral_gain * self.tracking_time)


class _AbstractClamp(AbstractProtocol):
    """Shared machinery: a glucose target, a GIR from the controller or from data, and exact
    running integrals of GIR, insulin and C-peptide for windowed clamp indices."""

    controller_state_names: ClassVar[tuple[str, ...]] = (
        "gir_error_integral",  # mmol/L·min
        "target_glucose",  # mmol/L (constant)
        "glucose_infused",  # mg/kg, ∫GIR dt
        "insulin_area",  # pmol/L·min, ∫I dt
        "c_peptide_area",  # pmol/L·min, ∫C dt
    )
    quadrature_state_names: ClassVar[tuple[str, ...]] = (
        "glucose_infused",
        "insulin_area",
        "c_peptide_area",
    )

    controller: eqx.AbstractVar[GlucoseController]
    measured_gir: eqx.AbstractVar[PiecewiseConstant | None]

    @abc.abstractmethod
    def _target(self, model: ModelLike, y0: Any, xp: Any) -> Any:
        """Glucose target (mmol/L) given the subject's initial state."""

    def _feedforward(self, model: ModelLike, y0: Any, target: Any, xp: Any) -> Any:
        """GIR (mg/kg/min) that holds glucose at `target` with the subject's basal insulin: the
        integral state starts there, so the controller does not have to discover it."""
        gi, sig = model.glucose_insulin, model.insulin_signalling
        weight = gi.body_weight
        uptake = (
            gi.insulin_independent_uptake(target)
            + sig.insulin_dependent_uptake(target, y0[_STATE["glut4_activity"]], weight)
            + gi.renal_glucose_excretion(target, xp)
            - gi.endogenous_glucose_production(target, y0[_STATE["hepatic_insulin"]], xp)
        )
        return xp.maximum(uptake, 0.0) * GLUCOSE_MG_PER_MMOL / weight

    def controller_init(self, model: ModelLike, y0: Any, xp: Any = jnp) -> Any:
        target = self._target(model, y0, xp)
        feedforward = self._feedforward(model, y0, target, xp)
        integral0 = feedforward / self.controller.integral_gain
        zero = 0.0 * target
        return xp.stack([integral0, target, zero, zero, zero])

    def _controller_on(self, t: Any, xp: Any) -> Any:
        """1 while the variable infusion runs (after any priming), else 0."""
        return 1.0

    def gir(self, t: Any, y: Any, z: Any, xp: Any = jnp) -> Any:
        """Glucose infusion rate (mg/kg/min) at time t."""
        if self.measured_gir is not None:
            return self.measured_gir(t, xp)
        return self._controller_on(t, xp) * self.controller.gir(
            z[1] - y[_STATE["glucose"]], z[0], xp
        )

    def _glucose_prime(self, t: Any, model: ModelLike, xp: Any) -> Any:
        return 0.0

    def _insulin(self, t: Any, model: ModelLike, xp: Any) -> Any:
        return 0.0

    def inputs(self, t: Any, y: Any, z: Any, model: ModelLike, xp: Any = jnp) -> Inputs:
        weight = model.glucose_insulin.body_weight
        glucose = self.gir(t, y, z, xp) * weight / GLUCOSE_MG_PER_MMOL
        return Inputs(
            glucose_infusion=glucose + self._glucose_prime(t, model, xp),
            insulin_infusion=self._insulin(t, model, xp),
            oral_mg=0.0,
            iv_mg=0.0,
        )

    def controller_rates(self, t: Any, y: Any, z: Any, model: ModelLike, xp: Any = jnp) -> Any:
        error = z[1] - y[_STATE["glucose"]]
        if self.measured_gir is not None:
            d_integral = 0.0 * error
        else:
            d_integral = self._controller_on(t, xp) * self.controller.integral_rate(error, z[0], xp)
        return xp.stack(
            [
                d_integral,
                0.0 * error,
                self.gir(t, y, z, xp) + 0.0 * error,
                y[_STATE["insulin"]],
                y[_STATE["c_peptide"]],
            ]
        )

    # --- clamp indices from a trajectory --------------------------------------------------
    @staticmethod
    def window_mean(traj: Any, state: str, start: float, end: float) -> Any:
        """Mean over [start, end] (min) of the integrand of an integral state. Exact when the
        window edges are sampling times (the protocols' `sampling_times()` include them)."""
        q = traj[state]
        q0 = jnp.interp(start, traj.ts, q)
        q1 = jnp.interp(end, traj.ts, q)
        return (q1 - q0) / (end - start)


class HyperinsulinemicClamp(_AbstractClamp):
    """Hyperinsulinaemic–euglycaemic clamp (DeFronzo 1979).

    - `insulin_rate`: maintenance insulin infusion, mU/m²/min (body surface area from the
      subject's height and weight, Du Bois), or mU/kg/min with `per_kg=True`
      (1 mU/kg/min as in Diabetes 2001;50:1449);
    - `prime_times` / `prime_factors`: the 10-min priming, a log-decreasing multiple of the
      maintenance rate (DeFronzo's prime; the steps here are ours: ×2, ×1.5, ×1.2 then ×1);
    - `target_glucose`: mmol/L; NaN (default) clamps at the subject's own fasting glucose;
    - `duration`: min (120–180); M-value over the last `m_window` minutes (30);
    - `measured_gir`: a measured GIR series (mg/kg/min, `PiecewiseConstant`) replaces the
      controller.
    """

    magnitudes: ClassVar[tuple[str, ...]] = ("insulin_rate", "target_glucose")

    insulin_rate: Any = eqx.field(default=40.0, converter=_as_array)
    per_kg: bool = eqx.field(default=False, static=True)
    prime_times: Any = eqx.field(default=(0.0, 4.0, 7.0, 10.0), converter=_as_array)
    prime_factors: Any = eqx.field(default=(2.0, 1.5, 1.2, 1.0), converter=_as_array)
    target_glucose: Any = eqx.field(default=float("nan"), converter=_as_array)
    duration: float = eqx.field(default=120.0, static=True)
    m_window: float = eqx.field(default=30.0, static=True)
    controller: GlucoseController = eqx.field(default_factory=GlucoseController)
    measured_gir: PiecewiseConstant | None = None

    def _target(self, model, y0, xp):
        return xp.where(xp.isnan(self.target_glucose), y0[_STATE["glucose"]], self.target_glucose)

    def insulin_per_minute(self, model: ModelLike, xp: Any = jnp) -> Any:
        """Maintenance insulin infusion (pmol/min) for this subject."""
        basis = model.glucose_insulin.body_weight if self.per_kg else body_surface_area(model, xp)
        return self.insulin_rate * basis * PMOL_PER_MILLIUNIT

    def _insulin(self, t, model, xp):
        factor = piecewise_constant(self.prime_times, self.prime_factors, t, xp)
        return self.insulin_per_minute(model, xp) * factor

    def jump_times(self):
        if self.measured_gir is None:
            return self.prime_times
        return jnp.concatenate([self.prime_times, self.measured_gir.times])

    def sampling_times(self, every: float = 5.0) -> Any:
        return jnp.arange(0.0, self.duration + every / 2, every)

    def summary(self, traj: Any) -> dict[str, Any]:
        """M-value (mg/kg/min, mean GIR over the last `m_window` min), mean insulin in that
        window (pmol/L and µU/mL), M/I (mg/kg/min per µU/mL × 100) and the glucose deviation
        from target after 30 min (%)."""
        start, end = self.duration - self.m_window, self.duration
        m_value = self.window_mean(traj, "glucose_infused", start, end)
        insulin = self.window_mean(traj, "insulin_area", start, end)
        insulin_uu = insulin / PMOL_PER_MICROUNIT
        after = traj.ts >= 30.0
        target = traj["target_glucose"][0]
        deviation = jnp.max(jnp.where(after, jnp.abs(traj["glucose"] / target - 1.0), 0.0))
        return dict(
            m_value=m_value,
            steady_state_insulin=insulin,
            steady_state_insulin_uu_ml=insulin_uu,
            m_over_i=100.0 * m_value / insulin_uu,
            max_glucose_deviation_after_30_min=100.0 * deviation,
            target_glucose=target,
        )


class HyperglycemicClamp(_AbstractClamp):
    """Hyperglycaemic clamp (DeFronzo 1979): a priming glucose infusion that raises plasma
    glucose by `increment` (6.9 mmol/L = 125 mg/dL) above basal within `prime_duration` min,
    then a variable infusion (the controller, switched on when the prime ends) that holds it
    there for `duration` min.

    Indices (`summary`): first-phase (0–10 min) and second-phase (10–`duration` min) mean
    incremental insulin and C-peptide, mean GIR over the last hour."""

    magnitudes: ClassVar[tuple[str, ...]] = ("increment", "prime_duration")

    increment: Any = eqx.field(default=6.9, converter=_as_array)
    prime_duration: Any = eqx.field(default=2.0, converter=_as_array)
    duration: float = eqx.field(default=120.0, static=True)
    first_phase_end: float = eqx.field(default=10.0, static=True)
    controller: GlucoseController = eqx.field(default_factory=GlucoseController)
    measured_gir: PiecewiseConstant | None = None

    def _target(self, model, y0, xp):
        return y0[_STATE["glucose"]] + self.increment

    def _controller_on(self, t, xp):
        return xp.where(t >= self.prime_duration, 1.0, 0.0)

    def _glucose_prime(self, t, model, xp):
        gi = model.glucose_insulin
        amount = self.increment * gi.glucose_volume * gi.body_weight  # mmol
        return xp.where((t >= 0.0) & (t < self.prime_duration), amount / self.prime_duration, 0.0)

    def jump_times(self):
        edges = jnp.stack([jnp.zeros_like(self.prime_duration), self.prime_duration])
        if self.measured_gir is None:
            return edges
        return jnp.concatenate([edges, self.measured_gir.times])

    def sampling_times(self, every: float = 2.0) -> Any:
        return jnp.arange(0.0, self.duration + every / 2, every)

    def summary(self, traj: Any) -> dict[str, Any]:
        basal_insulin = traj["insulin"][0]
        basal_cpeptide = traj["c_peptide"][0]
        first, end = self.first_phase_end, self.duration
        return dict(
            first_phase_insulin=self.window_mean(traj, "insulin_area", 0.0, first) - basal_insulin,
            second_phase_insulin=self.window_mean(traj, "insulin_area", first, end) - basal_insulin,
            first_phase_c_peptide=self.window_mean(traj, "c_peptide_area", 0.0, first)
            - basal_cpeptide,
            second_phase_c_peptide=self.window_mean(traj, "c_peptide_area", first, end)
            - basal_cpeptide,
            gir_last_hour=self.window_mean(traj, "glucose_infused", end - 60.0, end),
            target_glucose=traj["target_glucose"][0],
        )
