"""The solver wrapper around Diffrax: the one place that calls `diffrax.diffeqsolve` (the model's
protocol solves, the forced beta-cell, PEtab models) and sets Rodas4's `time_dependent`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import diffrax as dfx
import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..model import MgT2DModel
from ..protocols import AbstractProtocol
from ._rosenbrock import Rodas4
from ._vector_field import absolute_tolerances, quadrature_mask, vector_field


def _as_array(x: Any) -> Any:
    return jnp.asarray(x, dtype=jnp.float64)


MAX_STEPS = 16384


def reverse_mode_adjoint() -> dfx.RecursiveCheckpointAdjoint:
    """Diffrax's checkpointed reverse mode with `MAX_STEPS` checkpoints: every step stored when
    a solve's `max_steps` is at most the default (equinox's checkpointed loop keeps
    min(checkpoints, max_steps)); with a larger `max_steps`, 16,384 checkpoints and
    recomputation between them, so memory stays bounded whatever `max_steps` says.

    With every step stored the backward pass recomputes nothing, so Diffrax takes its simple
    path: smaller programs (the reverse-mode gradient of a solve compiles in 11–12 s instead of
    17–18 s here, and runs ~10 % faster), and a recomputed step can never be accepted where the
    original was rejected (with √max_steps checkpoints that happened near round-off
    tolerances, rtol ≲ 1e-9). Memory: one state per possible step, ~0.2 kB per step with this
    model's 20 states — 3.2 MB per solve at the default `max_steps`, so a reverse-mode gradient
    vmapped over 1,000 subjects holds 3.2 GB. Where that is too much, pass
    `diffrax.RecursiveCheckpointAdjoint()` (√max_steps checkpoints, recomputation) or lower
    `max_steps`."""
    return dfx.RecursiveCheckpointAdjoint(checkpoints=MAX_STEPS)


class SolverOptions(eqx.Module):
    """How to integrate. Tolerances and controller coefficients are arrays (traced), so changing
    them never recompiles; the solver, the adjoint and `max_steps` are structural.

    - `solver`: a Diffrax solver. Default `mgjax.Rodas4`, an L-stable Rosenbrock method: the
      model is stiff (fast beta-cell energy state vs. months-long HbA1c), explicit solvers stall
      on long protocols, and Rodas4 is several times cheaper per step and to compile than
      Diffrax's Kvaerno5 on this model (docs/model.md, "Solver choice";
      experiments/benchmarks/bench_model.py).
    - `rtol`, `atol`: local error tolerances (atol in each state's own units).
    - `quadrature_atol`: the absolute tolerance of the quadrature states — running integrals
      that feed nothing back (cumulative Mg²⁺ absorbed and excreted, mmol; a clamp's infused
      glucose, mg/kg, and insulin and C-peptide areas, pmol/L·min) — where it exceeds `atol`.
      They start at 0, so under `atol` alone a tiny integral is held to a tiny absolute error:
      while a clamp's infusion switches on through the controller's smooth zero limit, its
      integral grows exponentially from ~1e-19 mg/kg and would set the step size of the whole
      solve (a third of a 120-min clamp's steps; docs/model.md, "Solver choice"). 1e-6 is far
      below what any index read from them resolves.
    - `pcoeff`, `icoeff`: PID step-size controller coefficients (0.3/0.4 roughly halves the steps
      of the default I-controller on this model).
    - `dt0`: first step (min).
    - `max_steps`: bound on solver steps (memory of the checkpointed adjoint scales with it).
    - `adjoint`: how to differentiate: for reverse mode (`jax.grad`) `reverse_mode_adjoint()`,
      Diffrax's `RecursiveCheckpointAdjoint` storing every step (the default), or with
      √max_steps checkpoints when memory is short; `ForwardMode` for forward-mode Jacobians
      (`jax.jacfwd`, Levenberg–Marquardt).
    """

    solver: dfx.AbstractSolver = Rodas4()
    rtol: Any = eqx.field(default=1e-6, converter=_as_array)
    atol: Any = eqx.field(default=1e-9, converter=_as_array)
    quadrature_atol: Any = eqx.field(default=1e-6, converter=_as_array)
    pcoeff: Any = eqx.field(default=0.3, converter=_as_array)
    icoeff: Any = eqx.field(default=0.4, converter=_as_array)
    dt0: Any = eqx.field(default=0.1, converter=_as_array)
    max_steps: int = eqx.field(default=MAX_STEPS, static=True)
    adjoint: dfx.AbstractAdjoint = reverse_mode_adjoint()


def rodas4_for(solver: dfx.AbstractSolver, *, autonomous: bool) -> dfx.AbstractSolver:
    """The one rule for Rodas4's `time_dependent` flag (its ∂f/∂t terms, one JVP per step).

    The terms are dropped where the caller knows the vector field is autonomous between the
    step controller's jump times (`autonomous=True`: a protocol with piecewise-constant
    inputs, a PEtab model whose right-hand side does not read time); otherwise the solver's
    own setting stands (default True). Any other solver is returned unchanged."""
    if isinstance(solver, Rodas4) and autonomous and solver.time_dependent:
        return dataclasses.replace(solver, time_dependent=False)
    return solver


def for_jacobians(solver: dfx.AbstractSolver) -> dfx.AbstractSolver:
    """The solver Levenberg–Marquardt's forward-mode Jacobians use: a Rodas4 left at
    `sensitivities="auto"` becomes `"staggered"` (tangents stepped with the state's own W: no
    second derivatives of the vector field, ~18 % cheaper Jacobians); an explicit `"exact"`
    or any other solver is returned unchanged."""
    if isinstance(solver, Rodas4) and solver.sensitivities == "auto":
        return dataclasses.replace(solver, sensitivities="staggered")
    return solver


def integrate(
    vector_field: Callable[..., Any],
    options: SolverOptions,
    *,
    t0: Any,
    t1: Any,
    y0: Any,
    args: Any,
    saveat: dfx.SaveAt,
    autonomous: bool,
    dt0: Any,
    jump_ts: Any = None,
    event: dfx.Event | None = None,
    throw: bool = True,
    quadrature: tuple[bool, ...] | None = None,
) -> dfx.Solution:
    """The one `diffrax.diffeqsolve` call of mgjax: `vector_field(t, y, args)` from `t0` to `t1`
    (min) with `options` (solver, PID controller coefficients, tolerances, adjoint,
    `max_steps`), the step controller clipped at `jump_ts` (times where the vector field
    jumps; None: none), Rodas4's `time_dependent` set by `rodas4_for(autonomous=...)`.
    `dt0`: first step (min; None: Diffrax's estimate). `quadrature`: per component of the
    (flat) state, whether it is a quadrature state, held to `options.quadrature_atol`."""
    atol = options.atol
    if quadrature is not None and any(quadrature):
        atol = absolute_tolerances(quadrature, options.atol, options.quadrature_atol)
    controller = dfx.PIDController(
        rtol=options.rtol,
        atol=atol,
        pcoeff=options.pcoeff,
        icoeff=options.icoeff,
    )
    if jump_ts is not None:
        controller = dfx.ClipStepSizeController(controller, jump_ts=jump_ts)
    return dfx.diffeqsolve(
        dfx.ODETerm(vector_field),
        rodas4_for(options.solver, autonomous=autonomous),
        t0=t0,
        t1=t1,
        dt0=dt0,
        y0=y0,
        args=args,
        saveat=saveat,
        stepsize_controller=controller,
        event=event,
        adjoint=options.adjoint,
        max_steps=options.max_steps,
        throw=throw,
    )


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
    return integrate(
        lambda t, y, args: jnp.where(alive, vector_field(t, y, args), 0.0),
        options,
        t0=t0,
        t1=ts[-1],
        y0=y0,
        args=(model, protocol),
        saveat=dfx.SaveAt(ts=ts),
        autonomous=protocol.piecewise_constant,
        dt0=options.dt0,
        jump_ts=protocol.jump_times(),
        throw=throw,
        quadrature=quadrature_mask(protocol),
    )
