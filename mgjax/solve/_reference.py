"""SciPy reference solves of the same equations, for cross-checks and peer benchmarks.

The vector field is the model's own, evaluated by its plain-Python mirror on floats
(`mgjax.model.to_numpy`), the fastest form a careful SciPy user would write. SciPy is an optional
dependency (the `dev` extra); it is imported only when called.
"""

from __future__ import annotations

from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from ..model import MgT2DModel
from ..model._numpy import scalar_math, to_numpy
from ..protocols import AbstractProtocol, fasting
from ._steady_state import State, steady_state
from ._vector_field import (
    N_MODEL_STATES,
    absolute_tolerances,
    coupled_rates,
    quadrature_mask,
)


def numpy_vector_field(model: MgT2DModel, protocol: AbstractProtocol):
    """`f(t, state) -> d state/dt` on NumPy arrays: the model's equations on Python floats,
    the protocol's (schedules, controllers) in NumPy."""
    plain_model = to_numpy(model)
    plain_protocol = to_numpy(protocol)
    has_controller = bool(protocol.controller_state_names)

    def f(t, state):
        y, z = state[:N_MODEL_STATES], state[N_MODEL_STATES:]
        inputs = plain_protocol.inputs(t, y, z, plain_model, np)
        dy = plain_model.rates(y.tolist(), inputs, scalar_math)
        if not has_controller:
            return dy
        return np.concatenate([dy, plain_protocol.controller_rates(t, y, z, plain_model, np)])

    return f


def jax_jacobian(model: MgT2DModel, protocol: AbstractProtocol):
    """`jac(t, y)` computed by a jitted forward-mode JAX Jacobian."""

    @jax.jit
    def jac(t, y):
        return jax.jacfwd(lambda yy: coupled_rates(model, protocol, t, yy, jnp))(y)

    return lambda t, y: np.asarray(jac(t, y))


def scipy_solve(
    model: MgT2DModel,
    protocol: AbstractProtocol | None,
    ts: Any,
    *,
    method: str = "Radau",
    rtol: float = 1e-10,
    atol: float = 1e-12,
    y0: Any = None,
    jacobian: Literal["jax", "finite-difference"] | Any = "jax",
    quadrature_atol: float | None = None,
) -> np.ndarray:
    """Solve with `scipy.integrate.solve_ivp` from t = 0, returning states at `ts`
    (shape times × states). Integration restarts at the protocol's jump times.

    `jacobian` is `"jax"` (a jitted forward-mode Jacobian, built here), `"finite-difference"`
    (SciPy's own), or a prebuilt `jac(t, y)` callable (so repeated solves do not rebuild it).
    `quadrature_atol`: mgjax's tolerance rule (`SolverOptions.quadrature_atol`): the quadrature
    states' absolute tolerance is at least this (None: `atol` for every state)."""
    from scipy.integrate import solve_ivp

    protocol = protocol if protocol is not None else fasting()
    ts = np.asarray(ts, dtype=float)
    if y0 is None:
        y0 = steady_state(model, protocol.basal_inputs())
    if isinstance(y0, State):
        y0 = y0.y
    y = np.asarray(y0, dtype=float)
    if y.shape[0] == N_MODEL_STATES and protocol.controller_state_names:
        y = np.concatenate([y, np.asarray(protocol.controller_init(model, jnp.asarray(y)))])
    f = numpy_vector_field(model, protocol)
    if quadrature_atol is not None:
        atol = absolute_tolerances(quadrature_mask(protocol), atol, quadrature_atol, np)
    kwargs: dict[str, Any] = dict(method=method, rtol=rtol, atol=atol)
    if callable(jacobian):
        kwargs["jac"] = jacobian
    elif jacobian == "jax" and method in ("Radau", "BDF", "LSODA"):
        kwargs["jac"] = jax_jacobian(model, protocol)
    jumps = protocol.jump_times()
    jumps = [] if jumps is None else [float(j) for j in np.asarray(jumps) if 0 < j < ts[-1]]
    edges = [0.0, *sorted(set(jumps)), float(ts[-1])]
    out = np.empty((len(ts), len(y)))
    t_start = 0.0
    for t_end in edges[1:]:
        inside = ((ts > t_start) | ((ts == t_start) & (t_start == 0.0))) & (ts <= t_end)
        t_eval = np.unique(np.append(ts[inside], t_end))
        sol = solve_ivp(f, (t_start, t_end), y, t_eval=t_eval, **kwargs)
        if not sol.success:
            raise RuntimeError(f"SciPy {method} failed on [{t_start}, {t_end}] min: {sol.message}")
        out[inside] = sol.y[:, : int(inside.sum())].T
        y = sol.y[:, -1]
        t_start = t_end
    return out
