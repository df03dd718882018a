"""Protocols: what is given to a subject over time. A protocol is data (an `eqx.Module` of
arrays), evaluated inside the vector field, so input magnitudes are differentiable and a batch
of subjects with different inputs vmaps into one compiled program."""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import equinox as eqx
import jax.numpy as jnp

from .model import Inputs


class AbstractProtocol(eqx.Module):
    """A protocol maps time t (min, 0 = protocol start) to exogenous `Inputs`.

    Before t = 0 the subject rests at the fasting steady state under `basal_inputs()`.

    `piecewise_constant`: inputs are constant between the declared `jump_times()`, so the
    vector field is autonomous within each solver step (the solver may skip ∂f/∂t).
    """

    piecewise_constant: ClassVar[bool] = False

    @abc.abstractmethod
    def inputs(self, t: Any, xp: Any = jnp) -> Inputs:
        """Input rates at time t (min); `xp` is the array namespace (jax.numpy or numpy)."""

    def basal_inputs(self) -> Inputs:
        """Inputs before the protocol starts (the fasting steady state is taken under them)."""
        return Inputs.zeros()

    def jump_times(self) -> Any | None:
        """Times (min) where inputs jump, for the step-size controller to step onto; or None."""
        return None


class ConstantInputs(AbstractProtocol):
    """Constant inputs from t = 0 on (all zero: a plain fasting protocol).

    - `glucose_infusion`: mmol/min; `insulin_infusion`: pmol/min;
    - `oral_mg`: elemental Mg²⁺ supplement reaching the gut lumen, mmol/day, spread evenly;
    - `iv_mg`: intravenous Mg²⁺, mmol/day.
    """

    piecewise_constant: ClassVar[bool] = True

    glucose_infusion: Any = eqx.field(default=0.0, converter=jnp.asarray)
    insulin_infusion: Any = eqx.field(default=0.0, converter=jnp.asarray)
    oral_mg: Any = eqx.field(default=0.0, converter=jnp.asarray)
    iv_mg: Any = eqx.field(default=0.0, converter=jnp.asarray)

    def inputs(self, t: Any, xp: Any = jnp) -> Inputs:
        return Inputs(
            glucose_infusion=self.glucose_infusion,
            insulin_infusion=self.insulin_infusion,
            oral_mg=self.oral_mg / 1440.0,
            iv_mg=self.iv_mg / 1440.0,
        )


def fasting() -> ConstantInputs:
    """The plain fasting protocol: no inputs beyond the habitual diet."""
    return ConstantInputs()
