"""Oral glucose tolerance test: glucose drunk at t = 0 appears in plasma through the gut.

Gut absorption is the two-compartment chain of Hovorka et al. (Physiol Meas 2004;25:905) in
closed form: of a dose D, a fraction A_G appears as

    Ra(t) = A_G·D·t·exp(−t/t_max)/t_max²          (mmol/min; peak at t_max)

with A_G = 0.8 and t_max = 40 min (Hovorka 2004). The closed form needs no extra state, so an
OGTT batches and exports like every other protocol.

The incretin effect (GLP-1/GIP released while glucose is absorbed amplify secretion after oral
but not intravenous glucose) is the input `incretin` = Ra/(Ra + K_inc), K_inc = 1 mmol/min,
scaled by the protocol's `incretin` switch (1 on, 0 off); the beta-cell's `incretin_gain`
says how much it amplifies exocytosis.
"""

from __future__ import annotations

from typing import Any, ClassVar

import equinox as eqx
import jax.numpy as jnp

from ..model import Inputs, ModelLike
from ..model._coupled import GLUCOSE_MG_PER_MMOL, PMOL_PER_MICROUNIT
from ._base import AbstractProtocol, _as_array

#: Glucose appearance giving half the maximal incretin signal (mmol/min).
INCRETIN_HALF_RATE = 1.0
#: Sampling of the extended clinical OGTT (min).
OGTT_TIMES = (0, 10, 20, 30, 45, 60, 75, 90, 105, 120, 150, 180)


class OGTT(AbstractProtocol):
    """`glucose_dose` g of glucose drunk at t = 0 (75 g: the WHO test), absorbed with
    bioavailability `absorbed_fraction` and peak appearance at `absorption_peak` min; the
    incretin effect on (`incretin=1`) or off (`incretin=0`).

    `summary`: fasting, 30-min, peak and 2-h glucose (mmol/L), the 2-h class by WHO/ADA
    criteria (0 normal < 7.8, 1 impaired 7.8–11.0, 2 diabetic ≥ 11.1 mmol/L), the
    insulinogenic index ΔI₃₀/ΔG₃₀ (µU/mL per mg/dL) and the insulin peak (pmol/L).
    """

    magnitudes: ClassVar[tuple[str, ...]] = (
        "glucose_dose",
        "absorbed_fraction",
        "absorption_peak",
        "incretin",
    )

    glucose_dose: Any = eqx.field(default=75.0, converter=_as_array)
    absorbed_fraction: Any = eqx.field(default=0.8, converter=_as_array)
    absorption_peak: Any = eqx.field(default=40.0, converter=_as_array)
    incretin: Any = eqx.field(default=1.0, converter=_as_array)

    def appearance(self, t: Any, xp: Any = jnp) -> Any:
        """Rate of appearance of the drunk glucose in plasma Ra (mmol/min)."""
        dose = self.glucose_dose * 1000.0 / GLUCOSE_MG_PER_MMOL * self.absorbed_fraction
        tau = self.absorption_peak
        s = xp.where(t > 0.0, t, 0.0)
        return dose * s * xp.exp(-s / tau) / (tau * tau)

    def inputs(self, t: Any, y: Any, z: Any, model: ModelLike, xp: Any = jnp) -> Inputs:
        ra = self.appearance(t, xp)
        return Inputs(
            glucose_infusion=ra,
            insulin_infusion=0.0,
            oral_mg=0.0,
            iv_mg=0.0,
            incretin=self.incretin * ra / (ra + INCRETIN_HALF_RATE),
        )

    def jump_times(self) -> Any:
        return jnp.zeros((1,))

    def sampling_times(self) -> Any:
        return jnp.asarray(OGTT_TIMES, dtype=jnp.float64)

    def summary(self, traj: Any) -> dict[str, Any]:
        ts, glucose = traj.ts, traj["glucose"]
        insulin_uu = traj["insulin"] / PMOL_PER_MICROUNIT
        g0, g30, g120 = (jnp.interp(t, ts, glucose) for t in (0.0, 30.0, 120.0))
        i0, i30 = (jnp.interp(t, ts, insulin_uu) for t in (0.0, 30.0))
        delta_g_mg_dl = (g30 - g0) * GLUCOSE_MG_PER_MMOL / 10.0
        return dict(
            fasting_glucose=g0,
            glucose_30=g30,
            peak_glucose=jnp.max(glucose),
            glucose_120=g120,
            tolerance_class=jnp.where(g120 >= 11.1, 2.0, jnp.where(g120 >= 7.8, 1.0, 0.0)),
            insulinogenic_index=(i30 - i0) / delta_g_mg_dl,
            peak_insulin=jnp.max(traj["insulin"]),
        )
