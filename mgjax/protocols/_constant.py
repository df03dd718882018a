"""Constant inputs: the plain fasting protocol and constant infusions or supplements."""

from __future__ import annotations

from typing import Any, ClassVar

import equinox as eqx
import jax.numpy as jnp

from ..model import Inputs, ModelLike
from ._base import MINUTES_PER_DAY, AbstractProtocol, _as_array


class ConstantInputs(AbstractProtocol):
    """Constant inputs from t = 0 on (all zero: a plain fasting protocol).

    - `glucose_infusion`: mmol/min; `insulin_infusion`: pmol/min;
    - `oral_mg`: elemental Mg²⁺ reaching the gut lumen, mmol/day, spread evenly over the day;
    - `iv_mg`: intravenous Mg²⁺, mmol/day.
    """

    piecewise_constant: ClassVar[bool] = True

    magnitudes: ClassVar[tuple[str, ...]] = (
        "glucose_infusion",
        "insulin_infusion",
        "oral_mg",
        "iv_mg",
    )

    glucose_infusion: Any = eqx.field(default=0.0, converter=_as_array)
    insulin_infusion: Any = eqx.field(default=0.0, converter=_as_array)
    oral_mg: Any = eqx.field(default=0.0, converter=_as_array)
    iv_mg: Any = eqx.field(default=0.0, converter=_as_array)

    def inputs(
        self, t: Any, y: Any = None, z: Any = None, model: ModelLike | None = None, xp: Any = jnp
    ) -> Inputs:
        return Inputs(
            glucose_infusion=self.glucose_infusion,
            insulin_infusion=self.insulin_infusion,
            oral_mg=self.oral_mg / MINUTES_PER_DAY,
            iv_mg=self.iv_mg / MINUTES_PER_DAY,
        )


class Fasting(ConstantInputs):
    """The plain fasting protocol: no inputs beyond the habitual diet. Started from the fasting
    steady state (the default), nothing changes, so `mgjax.simulate` skips the ODE solve: states
    stay at the steady state and cumulative counters (urinary Mg²⁺) grow at their steady rate."""

    at_steady_state: ClassVar[bool] = True


def fasting() -> Fasting:
    """The plain fasting protocol: no inputs beyond the habitual diet."""
    return Fasting()
