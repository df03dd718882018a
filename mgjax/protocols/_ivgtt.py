"""Intravenous glucose tolerance test (frequently sampled, optionally insulin-modified): how the
Bergman minimal model is identified (physiology.md §7.1)."""

from __future__ import annotations

from typing import Any, ClassVar

import equinox as eqx
import jax.numpy as jnp

from ..model import Inputs, ModelLike
from ..model._coupled import GLUCOSE_MG_PER_MMOL, PMOL_PER_MICROUNIT, PMOL_PER_MILLIUNIT
from ._base import AbstractProtocol, _as_array

#: Frequent sampling schedule of the FSIVGTT (min).
FSIVGTT_TIMES = (
    0,
    2,
    3,
    4,
    5,
    6,
    8,
    10,
    12,
    14,
    16,
    19,
    22,
    25,
    30,
    40,
    50,
    60,
    70,
    80,
    90,
    100,
    120,
    140,
    160,
    180,
)


class IVGTT(AbstractProtocol):
    """An IV glucose bolus of `glucose_dose` g/kg over `glucose_duration` min at t = 0, and in
    the insulin-modified FSIVGTT an insulin bolus of `insulin_dose` U/kg over
    `insulin_duration` min at `insulin_time` (0.3 g/kg; 0.03 U/kg at 20 min over 5 min are the
    usual values; `insulin_dose=0` gives the standard IVGTT).

    `summary`: acute insulin response AIRg (mean incremental insulin 2–10 min, µU/mL, and the
    incremental area 0–10 min, µU/mL·min) and the glucose disappearance rate K_G (%/min, from
    ln glucose between 10 and 30 min).
    """

    piecewise_constant: ClassVar[bool] = True

    magnitudes: ClassVar[tuple[str, ...]] = (
        "glucose_dose",
        "glucose_duration",
        "insulin_dose",
        "insulin_time",
        "insulin_duration",
    )

    glucose_dose: Any = eqx.field(default=0.3, converter=_as_array)
    glucose_duration: Any = eqx.field(default=1.0, converter=_as_array)
    insulin_dose: Any = eqx.field(default=0.03, converter=_as_array)
    insulin_time: Any = eqx.field(default=20.0, converter=_as_array)
    insulin_duration: Any = eqx.field(default=5.0, converter=_as_array)

    def inputs(self, t: Any, y: Any, z: Any, model: ModelLike, xp: Any = jnp) -> Inputs:
        weight = model.glucose_insulin.body_weight
        glucose_mmol = self.glucose_dose * weight * 1000.0 / GLUCOSE_MG_PER_MMOL
        insulin_pmol = self.insulin_dose * weight * 1000.0 * PMOL_PER_MILLIUNIT
        on_g = (t >= 0.0) & (t < self.glucose_duration)
        on_i = (t >= self.insulin_time) & (t < self.insulin_time + self.insulin_duration)
        return Inputs(
            glucose_infusion=xp.where(on_g, glucose_mmol / self.glucose_duration, 0.0),
            insulin_infusion=xp.where(on_i, insulin_pmol / self.insulin_duration, 0.0),
            oral_mg=0.0,
            iv_mg=0.0,
        )

    def jump_times(self) -> Any:
        return jnp.stack(
            [
                jnp.zeros_like(self.glucose_duration),
                self.glucose_duration,
                self.insulin_time,
                self.insulin_time + self.insulin_duration,
            ]
        )

    def sampling_times(self) -> Any:
        return jnp.asarray(FSIVGTT_TIMES, dtype=jnp.float64)

    def summary(self, traj: Any) -> dict[str, Any]:
        ts = traj.ts
        insulin_uu = traj["insulin"] / PMOL_PER_MICROUNIT
        increment = insulin_uu - insulin_uu[0]
        fine = jnp.linspace(0.0, 10.0, 101)
        area = jnp.trapezoid(jnp.interp(fine, ts, increment), fine)
        mean_2_10 = jnp.trapezoid(jnp.interp(fine[20:], ts, increment), fine[20:]) / 8.0
        g10, g30 = jnp.interp(10.0, ts, traj["glucose"]), jnp.interp(30.0, ts, traj["glucose"])
        return dict(
            air_g=mean_2_10,
            air_g_area=area,
            k_g=100.0 * (jnp.log(g10) - jnp.log(g30)) / 20.0,
            peak_glucose=jnp.max(traj["glucose"]),
        )
