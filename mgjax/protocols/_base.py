"""The protocol contract and its building blocks.

A protocol is data: an `eqx.Module` of arrays that maps time (and, for feedback protocols, the
subject's state) to exogenous `Inputs`. Magnitudes are arrays, so they are differentiable and a
batch of subjects with different doses, rates and schedules vmaps into one compiled program;
schedules are arrays, never Python loops, so 16 weeks of daily doses compile once.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..model import Inputs, ModelLike

MINUTES_PER_DAY = 1440.0


def _as_array(x: Any):
    return jnp.asarray(x, dtype=jnp.float64)


class AbstractProtocol(eqx.Module):
    """Maps time t (min; 0 = protocol start) to exogenous `Inputs`.

    Before t = 0 the subject rests at the fasting steady state under `basal_inputs()`.

    Feedback protocols (a clamp's glucose controller) carry their own states `z`, integrated
    alongside the model's states `y`: `controller_state_names`, `controller_init` and
    `controller_rates`. Open-loop protocols have none. `quadrature_state_names`: those of
    them that are running integrals feeding nothing back (the solver's error control gives
    them an absolute tolerance of their own, `SolverOptions.quadrature_atol`).

    - `piecewise_constant`: inputs are constant between the declared `jump_times()`, so the
      vector field is autonomous within each solver step (the solver may skip ∂f/∂t).
    """

    piecewise_constant: ClassVar[bool] = False
    controller_state_names: ClassVar[tuple[str, ...]] = ()
    quadrature_state_names: ClassVar[tuple[str, ...]] = ()
    #: scalar fields that set the protocol's doses, rates and targets: the SBML export
    #: writes them as named parameters (`protocol_<field>`), so a PEtab condition can set them
    magnitudes: ClassVar[tuple[str, ...]] = ()

    @abc.abstractmethod
    def inputs(self, t: Any, y: Any, z: Any, model: ModelLike, xp: Any = jnp) -> Inputs:
        """Input rates at time t (min), given the model state y, the controller state z, the
        subject's parameters (for per-kg or per-m² doses) and the array namespace `xp`."""

    def controller_init(self, model: ModelLike, y0: Any, xp: Any = jnp) -> Any:
        """Initial controller state (a vector of `controller_state_names`), given the
        subject's initial state, in the array namespace `xp`."""
        return xp.zeros((0,), dtype=jnp.float64)

    def controller_rates(self, t: Any, y: Any, z: Any, model: ModelLike, xp: Any = jnp) -> Any:
        """dz/dt of the controller states."""
        return xp.zeros((0,))

    def basal_inputs(self) -> Inputs:
        """Inputs before the protocol starts (the fasting steady state is taken under them)."""
        return Inputs.zeros()

    def jump_times(self) -> Any | None:
        """Times (min) where inputs jump, for the step-size controller to step onto; or None."""
        return None


class PiecewiseConstant(eqx.Module):
    """A rate that is `rates[i]` for `times[i] ≤ t < times[i+1]` and 0 before `times[0]`.

    `times` must be non-decreasing; pad with repeated final times to give schedules of a batch
    one shape."""

    times: Float[Array, " n"] = eqx.field(converter=_as_array)
    rates: Float[Array, " n"] = eqx.field(converter=_as_array)

    def __call__(self, t: Any, xp: Any = jnp) -> Any:
        return piecewise_constant(self.times, self.rates, t, xp)

    @staticmethod
    def pulses(starts: Any, duration: Any, rate: Any) -> "PiecewiseConstant":
        """Square pulses of `rate` lasting `duration` (min) from each of `starts`."""
        return PiecewiseConstant(*pulse_arrays(_as_array(starts), duration, rate, jnp))


def piecewise_constant(times: Any, rates: Any, t: Any, xp: Any = jnp) -> Any:
    """`rates[i]` for `times[i] ≤ t < times[i+1]`, 0 before `times[0]`."""
    if hasattr(xp, "piecewise_constant"):  # a symbolic namespace (the SBML export)
        return xp.piecewise_constant(times, rates, t)
    i = xp.searchsorted(times, t, side="right") - 1
    value = rates[xp.clip(i, 0, rates.shape[0] - 1)]
    return xp.where(i >= 0, value, 0.0)


def pulse_arrays(starts: Any, duration: Any, rate: Any, xp: Any = jnp) -> tuple[Any, Any]:
    """(times, rates) of square pulses of `rate` lasting `duration` from each of `starts`."""
    times = xp.stack([starts, starts + duration], axis=-1).reshape(-1)
    on = xp.zeros_like(starts) + rate
    rates = xp.stack([on, xp.zeros_like(starts)], axis=-1).reshape(-1)
    return times, rates


def daily_times(first: Any, count: int, every: Any = MINUTES_PER_DAY) -> Float[Array, " count"]:
    """`count` times (min) starting at `first`, `every` minutes apart."""
    return _as_array(first) + _as_array(every) * jnp.arange(count, dtype=jnp.float64)


def body_surface_area(model: ModelLike, xp: Any = jnp) -> Any:
    """Body surface area (m²) by Du Bois & Du Bois (1916), from the subject's weight (kg) and
    height (cm): 0.007184·W^0.425·H^0.725."""
    gi = model.glucose_insulin
    return 0.007184 * gi.body_weight**0.425 * gi.height**0.725
