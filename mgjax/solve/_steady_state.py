"""The basal (fasting) steady state, as a differentiable function of the parameters.

Found by pseudo-transient continuation in log-coordinates: implicit-Euler steps whose step
size grows as the residual falls, so that the iteration follows the physiology to rest from a
rough guess and ends as Newton's method, converged to machine precision. Log-coordinates keep
every state positive.

Derivatives come from the implicit function theorem (a `jax.custom_jvp` rule), never from
differentiating the iterations.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from ..model import ACCUMULATOR_STATES, Inputs, MgT2DModel


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
        peripheral_glucose=glucose,
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


def _continuation(z0, h0, args, max_iterations: int):
    """The continuation's root (`_continuation_with_count`)."""
    return _continuation_with_count(z0, h0, args, max_iterations)[0]


def _continuation_with_count(z0, h0, args, max_iterations: int):
    """Pseudo-transient continuation from `z0` with first pseudo time step `h0` (min):
    z ← z + (I/h − J)⁻¹ g(z), with the pseudo time step h scaled by the residual's fall
    ‖g_old‖/‖g_new‖ (within ×0.5…×100; switched evolution relaxation) and cut (×¼) when a
    step is non-finite or moves a log-state by more than 2. Once h is large the iteration is
    Newton's method; it stops when h > 1e8 min and the last Newton step moved every
    log-state by less than 1e-12. Returns (root, iterations taken)."""
    n = z0.shape[0]

    def cond(carry):
        i, z, h, gnorm, moved = carry
        return (i < max_iterations) & ((moved > 1e-12) | (h < 1e8))

    def body(carry):
        i, z, h, gnorm, moved = carry
        g, jac = _value_and_jacobian(z, args)
        step = jnp.linalg.solve(jnp.eye(n) / h - jac, g)
        z_new = z + step
        gnorm_new = jnp.max(jnp.abs(_log_residual(z_new, args)))
        accept = jnp.isfinite(gnorm_new) & (jnp.max(jnp.abs(step)) < 2.0)
        # switched evolution relaxation: h follows the residual's fall (or rise)
        grow = jnp.clip(gnorm / jnp.maximum(gnorm_new, 1e-300), 0.5, 100.0)
        return (
            i + 1,
            jnp.where(accept, z_new, z),
            jnp.where(accept, h * grow, h * 0.25),
            jnp.where(accept, gnorm_new, gnorm),
            jnp.where(accept, jnp.max(jnp.abs(step)), jnp.inf),
        )

    g0 = jnp.max(jnp.abs(_log_residual(z0, args)))
    init = (jnp.asarray(0), z0, jnp.asarray(h0, dtype=z0.dtype), g0, jnp.asarray(jnp.inf))
    i, z, *_ = jax.lax.while_loop(cond, body, init)
    return z, i


def _value_and_jacobian(z, args):
    return _log_residual(z, args), jax.jacfwd(_log_residual)(z, args)


@eqx.filter_custom_jvp
def _log_steady_state(start, args, *, max_iterations: int):
    """Root of the log-residual, from `start` = (log-state, first pseudo time step). Its
    derivative is given by the implicit function theorem (dz = −J⁻¹·∂g/∂args·d args), so no
    derivative flows through the iterations; the rule is linear in the tangent, hence
    reverse mode (by transposition), jacfwd and hessian all work. `args` may hold non-array
    leaves (a user mechanism's activation function): Equinox's filtered custom JVP
    differentiates the floating-point arrays only."""
    z0, h0 = start
    return _continuation(z0, h0, args, max_iterations)


@_log_steady_state.def_jvp
def _log_steady_state_jvp(primals, tangents, *, max_iterations: int):
    start, args = primals
    _, args_dot = tangents
    z = _log_steady_state(start, args, max_iterations=max_iterations)
    residual_dot = eqx.filter_jvp(lambda a: _log_residual(z, a), (args,), (args_dot,))[1]
    if residual_dot is None:  # nothing in args is differentiated
        return z, jnp.zeros_like(z)
    jac = jax.jacfwd(_log_residual)(z, args)
    return z, -jnp.linalg.solve(jac, residual_dot)


@eqx.filter_jit
def steady_state(
    model: MgT2DModel,
    inputs: Inputs | None = None,
    *,
    guess: Float[Array, " dynamic_states"] | None = None,
    pseudo_step: Any = None,
    max_iterations: int = 200,
    throw: bool = True,
) -> State:
    """The fasting steady state of `model` under constant `inputs` (default: none).

    **Arguments:**

    - `model`: the parameters (an `MgT2DModel`).
    - `inputs`: constant inputs (`Inputs`); default no infusions and no supplements.
    - `guess`: optional starting point for the dynamic states (their natural units), such
      as the steady state of nearby parameters; ignored (the rough start used) where any
      entry is non-positive or non-finite, so a traced "no guess yet" is a NaN vector.
    - `pseudo_step`: the continuation's first pseudo time step (min). Default 1 min
      from the built-in rough guess, where the iteration must follow the physiology to rest
      (~30 iterations), and 1e4 min from a given `guess`, where it is Newton's method almost
      at once (~9 iterations for parameters ×/÷ 1.6 away; a failed step is cut ×¼ back
      towards continuation).
    - `max_iterations`: bound on continuation iterations.
    - `throw`: raise if no steady state is found; with `throw=False` (batches) the failure is
      reported in `State.success` and the state is NaN.

    **Returns:** a `State`; accumulators (cumulative absorbed and urinary Mg²⁺) are zero.
    Differentiable with respect to `model` and `inputs` (forward and reverse mode, any order)
    by the implicit function theorem.
    """
    if inputs is None:
        inputs = Inputs.zeros()
    rough = initial_guess(model)
    if guess is None:
        z0, h0 = jnp.log(rough), jnp.asarray(1.0 if pseudo_step is None else pseudo_step)
    else:  # a guess with a non-positive or non-finite entry is ignored (the rough start is used)
        guess = jnp.asarray(guess, dtype=jnp.float64)
        usable = jnp.all(jnp.isfinite(guess) & (guess > 0.0))
        z0 = jnp.where(usable, jnp.log(jnp.where(usable, guess, 1.0)), jnp.log(rough))
        h0 = jnp.where(usable, 1e4 if pseudo_step is None else pseudo_step, 1.0)
    args = (model, inputs)
    z0 = jax.lax.stop_gradient(z0)
    h0 = jax.lax.stop_gradient(jnp.asarray(h0, dtype=jnp.float64))
    z = _log_steady_state((z0, h0), args, max_iterations=max_iterations)
    residual = jnp.max(jnp.abs(_log_residual(jax.lax.stop_gradient(z), args)))
    success = jnp.all(jnp.isfinite(z)) & (residual < 1e-9)
    y_dynamic = jnp.where(success, jnp.exp(z), jnp.nan)
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
