"""The solver wrapper around Diffrax: one place that knows how the model is integrated."""

from __future__ import annotations

import dataclasses
from typing import Any

import diffrax as dfx
import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..model import MgT2DModel
from ..protocols import AbstractProtocol
from ._rosenbrock import Rodas4
from ._vector_field import vector_field


def _as_array(x: Any) -> Any:
    return jnp.asarray(x, dtype=jnp.float64)


class SolverOptions(eqx.Module):
    """How to integrate. Tolerances and controller coefficients are arrays (traced), so changing
    them never recompiles; the solver, the adjoint and `max_steps` are structural.

    - `solver`: a Diffrax solver. Default `mgjax.Rodas4`, an L-stable Rosenbrock method: the
      model is stiff (fast beta-cell energy state vs. months-long HbA1c), explicit solvers stall
      on long protocols, and Rodas4 is several times cheaper per step and to compile than
      Diffrax's Kvaerno5 on this model (docs/model.md, "Solver choice"; experiments/bench_model.py).
    - `rtol`, `atol`: local error tolerances (atol in each state's own units).
    - `pcoeff`, `icoeff`: PID step-size controller coefficients (0.3/0.4 roughly halves the steps
      of the default I-controller on this model).
    - `dt0`: first step (min).
    - `max_steps`: bound on solver steps (memory of the checkpointed adjoint scales with it).
    - `adjoint`: how to differentiate: `RecursiveCheckpointAdjoint` for reverse mode (`jax.grad`),
      `ForwardMode` for forward-mode Jacobians (`jax.jacfwd`, Levenberg–Marquardt).
    """

    solver: dfx.AbstractSolver = Rodas4()
    rtol: Any = eqx.field(default=1e-6, converter=_as_array)
    atol: Any = eqx.field(default=1e-9, converter=_as_array)
    pcoeff: Any = eqx.field(default=0.3, converter=_as_array)
    icoeff: Any = eqx.field(default=0.4, converter=_as_array)
    dt0: Any = eqx.field(default=0.1, converter=_as_array)
    max_steps: int = eqx.field(default=16384, static=True)
    adjoint: dfx.AbstractAdjoint = dfx.RecursiveCheckpointAdjoint()


def solve(
    model: MgT2DModel,
    protocol: AbstractProtocol,
    y0: Float[Array, " states"],
    ts: Float[Array, " times"],
    options: SolverOptions,
    *,
    t0: Any = 0.0,
    throw: bool = True,
    alive: Any = True,
) -> dfx.Solution:
    """Integrate from `t0` (min) with the augmented state `y0` (model states, then the
    protocol's controller states), saving at `ts` (min, increasing, ≥ t0).

    `alive` (a traced bool): when False the vector field is zero, so a subject already known to
    have failed (a failed steady state, NaN parameters) costs a handful of steps in a vmapped
    batch instead of `max_steps` of rejected NaN steps."""
    solver = options.solver
    if isinstance(solver, Rodas4) and protocol.piecewise_constant and solver.time_dependent:
        solver = dataclasses.replace(solver, time_dependent=False)
    jump_ts = protocol.jump_times()
    controller = dfx.PIDController(
        rtol=options.rtol,
        atol=options.atol,
        pcoeff=options.pcoeff,
        icoeff=options.icoeff,
    )
    if jump_ts is not None:
        controller = dfx.ClipStepSizeController(controller, jump_ts=jump_ts)
    return dfx.diffeqsolve(
        dfx.ODETerm(lambda t, y, args: jnp.where(alive, vector_field(t, y, args), 0.0)),
        solver,
        t0=t0,
        t1=ts[-1],
        dt0=options.dt0,
        y0=y0,
        args=(model, protocol),
        saveat=dfx.SaveAt(ts=ts),
        stepsize_controller=controller,
        adjoint=options.adjoint,
        max_steps=options.max_steps,
        throw=throw,
    )
