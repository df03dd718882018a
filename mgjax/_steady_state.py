"""The basal (fasting) steady state, as a differentiable function of the parameters.

Found in two stages:

1. pseudo-transient continuation in log-coordinates — implicit-Euler steps whose step size
   grows as the residual falls, so that it follows the physiology to rest from a rough guess
   and becomes Newton's method near the end; log-coordinates keep every state positive;
2. an Optimistix Newton root find started there, whose implicit adjoint gives exact
   derivatives of the steady state (implicit function theorem) without differentiating
   through stage 1.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import optimistix as optx
from jaxtyping import Array, Bool, Float

from .model import ACCUMULATOR_STATES, Inputs, MgT2DModel


class State(eqx.Module):
    """A model state: the flat vector `y` with access by state name, `state["glucose"]`."""

    y: Float[Array, "... states"]
    success: Bool[Array, "..."]

    def __getitem__(self, name: str) -> Array:
        return self.y[..., MgT2DModel.state_names().index(name)]

    def as_dict(self) -> dict[str, Array]:
        return {n: self.y[..., i] for i, n in enumerate(MgT2DModel.state_names())}


def initial_guess(model: MgT2DModel) -> Float[Array, " dynamic_states"]:
    """A rough, always-positive starting point for the steady-state search."""
    gi, beta, sig = model.glucose_insulin, model.beta_cell, model.insulin_signalling
    gut, pools, glyc = model.intestinal_magnesium, model.magnesium_pools, model.glycation
    w = gi.body_weight
    glucose, insulin, mg_free, ionized = 6.0, 60.0, 0.45, 0.5
    secretion = (
        insulin
        * gi.insulin_clearance_rate
        * gi.insulin_volume
        * w
        / (1.0 - gi.hepatic_insulin_extraction)
    )
    c1 = secretion / (beta.c_peptide_volume * w) / beta.c_peptide_ke
    k_gut = (
        gut.gut_transit_rate
        + gut.passive_absorption_rate
        + (gut.saturable_absorption_max / gut.saturable_absorption_km)
    )
    k = glyc.glycation_rate * gi.daily_mean_glucose(glucose)
    renewal = 4.0 / (glyc.rbc_lifespan * 1440.0)
    h, hs = 0.0, []
    for _ in glyc.state_names:
        h = (k + renewal * h) / (k + renewal)
        hs.append(h)
    values = dict(
        glucose=glucose,
        insulin=insulin,
        hepatic_insulin=insulin,
        glut4_activity=sig.signal(insulin, mg_free),
        atp_fraction=0.8,
        readily_releasable_insulin=0.9 * beta.beta_cell_mass * beta.rrp_capacity,
        amplifying_signal=0.35,
        c_peptide=c1,
        c_peptide_peripheral=c1 * beta.c_peptide_k1 / beta.c_peptide_k2,
        gut_mg=gut.dietary_intake_rate() / k_gut,
        ecf_mg=ionized / pools.ionized_fraction * pools.ecf_volume * w,
        intracellular_mg_pool=mg_free * pools.intracellular_buffer_volume * w,
        bone_mg=pools.bone_uptake_clearance * w * ionized / pools.bone_release_rate,
        **{n: hv for n, hv in zip(glyc.state_names, hs)},
    )
    return jnp.stack(
        [jnp.asarray(values[n], dtype=jnp.float64) for n in model.dynamic_state_names()]
    )


def _log_residual(z, args):
    """Relative rates f(e^z)/e^z (1/min) of the dynamic states."""
    model, inputs = args
    y = jnp.exp(z)
    return model.dynamic_rates(y, inputs, jnp) / y


def _continuation(z0, args, max_iterations: int, tol: float):
    """Pseudo-transient continuation: z ← z + (I/h − J)⁻¹ g(z), h grown as ‖g‖ falls."""
    n = z0.shape[0]

    def norm(g):
        return jnp.max(jnp.abs(g))

    def cond(carry):
        i, z, h, gnorm = carry
        return (i < max_iterations) & ((gnorm > tol) | (h < 1e6))

    def body(carry):
        i, z, h, gnorm = carry
        g = _log_residual(z, args)
        jac = jax.jacfwd(_log_residual)(z, args)
        step = jnp.linalg.solve(jnp.eye(n) / h - jac, g)
        z_new = z + step
        g_new = _log_residual(z_new, args)
        gnorm_new = norm(g_new)
        ok = jnp.all(jnp.isfinite(g_new)) & (jnp.max(jnp.abs(step)) < 2.0)
        accept = ok & (gnorm_new < 2.0 * gnorm + 1e-300)
        grow = jnp.clip(gnorm / jnp.maximum(gnorm_new, 1e-300), 2.0, 100.0)
        z = jnp.where(accept, z_new, z)
        h = jnp.where(accept, h * grow, h * 0.25)
        gnorm = jnp.where(accept, gnorm_new, gnorm)
        return i + 1, z, h, gnorm

    g0 = norm(_log_residual(z0, args))
    init = (jnp.asarray(0), z0, jnp.asarray(1.0), g0)
    i, z, h, gnorm = jax.lax.while_loop(cond, body, init)
    return z, gnorm


@eqx.filter_jit
def steady_state(
    model: MgT2DModel,
    inputs: Inputs | None = None,
    *,
    guess: Float[Array, " dynamic_states"] | None = None,
    max_iterations: int = 200,
    throw: bool = True,
) -> State:
    """The fasting steady state of `model` under constant `inputs` (default: none).

    **Arguments:**

    - `model`: the parameters (an `MgT2DModel`).
    - `inputs`: constant inputs (`Inputs`); default no infusions and no supplements.
    - `guess`: optional starting point for the dynamic states (their natural units).
    - `max_iterations`: bound on continuation iterations.
    - `throw`: raise if no steady state is found; with `throw=False` (batches) the failure is
      reported in `State.success` and the state is NaN.

    **Returns:** a `State`; accumulators (cumulative absorbed and urinary Mg²⁺) are zero.
    Differentiable with respect to `model` and `inputs` by the implicit function theorem.
    """
    if inputs is None:
        inputs = Inputs.zeros()
    if guess is None:
        guess = initial_guess(model)
    args = (model, inputs)
    z0 = jax.lax.stop_gradient(jnp.log(guess))
    z_cont, _ = _continuation(z0, jax.lax.stop_gradient(args), max_iterations, tol=1e-11)
    z_cont = jax.lax.stop_gradient(z_cont)
    solver = optx.Newton(rtol=1e-12, atol=1e-12, linear_solver=lx.LU())
    sol = optx.root_find(_log_residual, solver, z_cont, args=args, max_steps=32, throw=False)
    residual = jnp.max(jnp.abs(_log_residual(sol.value, args)))
    success = (sol.result == optx.RESULTS.successful) & jnp.isfinite(residual) & (residual < 1e-9)
    y_dynamic = jnp.where(success, jnp.exp(sol.value), jnp.nan)
    if throw:
        y_dynamic = eqx.error_if(
            y_dynamic,
            ~success,
            "No fasting steady state found for these parameters: check that they lie within "
            "their plausible bounds (mgjax.parameter_table()).",
        )
    y = jnp.concatenate([y_dynamic, jnp.zeros(len(ACCUMULATOR_STATES), dtype=y_dynamic.dtype)])
    return State(y=y, success=success)


def steady_state_residual(model: MgT2DModel, state: State, inputs: Inputs | None = None) -> Any:
    """Largest |dy/dt|/y over the dynamic states at `state` (1/min); ≈ 0 at a steady state."""
    if inputs is None:
        inputs = Inputs.zeros()
    n = len(model.dynamic_state_names())
    y = state.y[:n]
    return jnp.max(jnp.abs(model.dynamic_rates(y, inputs, jnp) / y))
