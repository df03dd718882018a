"""The vector field of a subject under a protocol: model states y and controller states z."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax.numpy as jnp

from ..model import ACCUMULATOR_STATES, MgT2DModel
from ..protocols import AbstractProtocol

N_MODEL_STATES = len(MgT2DModel.state_names())


def split(state: Any) -> tuple[Any, Any]:
    """(model states y, controller states z) of an augmented state vector."""
    return state[:N_MODEL_STATES], state[N_MODEL_STATES:]


def coupled_rates(model: MgT2DModel, protocol: AbstractProtocol, t: Any, state: Any, xp: Any):
    """d[y, z]/dt (per minute), written against the array namespace `xp`."""
    y, z = split(state)
    inputs = protocol.inputs(t, y, z, model, xp)
    dy = model.rates(y, inputs, xp)
    if not protocol.controller_state_names:
        return dy
    return xp.concatenate([dy, protocol.controller_rates(t, y, z, model, xp)])


def vector_field(t, state, args):
    """Diffrax vector field; `args = (model, protocol)`."""
    model, protocol = args
    return _jitted_rates(model, protocol, t, state)


@eqx.filter_jit
def _jitted_rates(model, protocol, t, state):
    """The rates as one jitted call: a solve traces the vector field many times (Rodas4's
    stages and Jacobian, Diffrax's shape probes, the linearised and transposed steps of reverse
    mode); JAX then reuses one traced program instead of re-running the model's Python each
    time (a reverse-mode gradient's trace + compile −1 s; XLA inlines the call)."""
    return coupled_rates(model, protocol, t, state, jnp)


def state_names(protocol: AbstractProtocol) -> tuple[str, ...]:
    return MgT2DModel.state_names() + protocol.controller_state_names


def quadrature_mask(protocol: AbstractProtocol) -> tuple[bool, ...]:
    """Per augmented state, whether it is a quadrature: a running integral that feeds nothing
    back (the model's cumulative Mg²⁺ absorbed and excreted, a clamp's infused glucose and
    insulin / C-peptide areas)."""
    quadratures = set(ACCUMULATOR_STATES) | set(protocol.quadrature_state_names)
    return tuple(name in quadratures for name in state_names(protocol))


def absolute_tolerances(quadrature: Any, atol: Any, quadrature_atol: Any, xp: Any = jnp) -> Any:
    """Per state, the absolute tolerance of mgjax's rule: `atol`, and for the quadrature
    states (`quadrature`, a mask such as `quadrature_mask`) at least `quadrature_atol`."""
    return xp.where(xp.asarray(quadrature), xp.maximum(atol, quadrature_atol), atol)
