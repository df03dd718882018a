"""`jax.grad` of a scalar of the solution w.r.t. every parameter matches central differences."""

import diffrax as dfx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import WEEK

import mgjax

TIGHT = mgjax.SolverOptions(rtol=1e-10, atol=1e-12, max_steps=50_000)
# With max_steps above the default adjoint's 16,384 stored steps, reverse mode recomputes
# forward steps from checkpoints; at tolerances near round-off
# (rtol 1e-10) a recomputed step can be accepted where the original was rejected, and the
# gradient then belongs to a slightly different trajectory (docs/model.md, "Gradients").
# Gradients are therefore taken at rtol 1e-8 and checked against differences at rtol 1e-10.
GRADIENT = mgjax.SolverOptions(rtol=1e-8, atol=1e-11, max_steps=50_000)
CLAMP = mgjax.ConstantInputs(insulin_infusion=300.0, glucose_infusion=1.0)
TRIAL = mgjax.ConstantInputs(oral_mg=26.0)
NAMES = mgjax.parameter_names()
INFOS = mgjax.parameter_infos()


def _scalar(model, options=TIGHT):
    """Touches every submodel: a 3-hour infusion (glucose, insulin, beta-cell, C-peptide) and a
    16-week supplementation course (Mg²⁺ pools, kidney, HbA1c)."""
    short = mgjax.simulate(model, CLAMP, jnp.array([60.0, 180.0]), options=options)
    long = mgjax.simulate(model, TRIAL, jnp.array([1.0 * WEEK, 16 * WEEK]), options=options)
    return (
        jnp.sum(jnp.log(short["glucose"]))
        + jnp.sum(jnp.log(short["c_peptide"]))
        + jnp.sum(jnp.log(short["insulin"]))
        + jnp.sum(jnp.log(long["serum_mg"]))
        + jnp.sum(jnp.log(long["urinary_mg"]))
        + jnp.log(long["hba1c"][-1])
        + jnp.log(long["intracellular_mg"][-1])
    )


def _to_unconstrained(model):
    """Positive parameters in log space, others linear (the optimiser's coordinates)."""
    values = mgjax.get_parameters(model)
    return jnp.array([jnp.log(values[n]) if INFOS[n].log_scale else values[n] for n in NAMES])


def _from_unconstrained(base, x):
    values = {n: (jnp.exp(x[i]) if INFOS[n].log_scale else x[i]) for i, n in enumerate(NAMES)}
    return mgjax.set_parameters(base, values)


@pytest.mark.slow
def test_gradient_wrt_every_parameter_matches_central_differences(presets):
    base = presets["t2dm"]
    x0 = _to_unconstrained(base)
    grad = np.asarray(
        jax.jit(jax.grad(lambda x: _scalar(_from_unconstrained(base, x), GRADIENT)))(x0)
    )

    h = 1e-4
    steps = jnp.concatenate([jnp.eye(len(x0)) * h, -jnp.eye(len(x0)) * h])
    values = np.asarray(
        jax.jit(jax.vmap(lambda d: _scalar(_from_unconstrained(base, x0 + d))))(steps)
    )
    fd = (values[: len(x0)] - values[len(x0) :]) / (2 * h)

    assert np.all(np.isfinite(grad))
    floor = 1e-6 * np.max(np.abs(grad))
    bad = [
        (NAMES[i], grad[i], fd[i])
        for i in range(len(x0))
        if abs(grad[i] - fd[i]) > 1e-4 * abs(fd[i]) + floor
    ]
    assert not bad, f"gradient mismatch (name, grad, fd): {bad}"
    # not vacuous: almost every parameter moves the scalar
    moved = np.abs(fd) > floor
    assert moved.sum() >= len(x0) - 3, [n for n, m in zip(NAMES, moved) if not m]


@pytest.mark.slow
def test_reverse_mode_at_round_off_tolerances_is_the_forward_mode_gradient(presets):
    """The default adjoint stores every step (`mgjax.solve.reverse_mode_adjoint`), so the
    backward pass recomputes none and differentiates the solve's own trajectory, as forward
    mode does: the two gradients agree at rtol 1e-10, where recomputation from checkpoints could
    accept a step the original rejected (docs/model.md, "Gradients")."""
    base = presets["t2dm"]
    x0 = _to_unconstrained(base)
    reverse = mgjax.SolverOptions(rtol=1e-10, atol=1e-12)
    forward = mgjax.SolverOptions(rtol=1e-10, atol=1e-12, adjoint=dfx.ForwardMode())
    assert reverse.adjoint.checkpoints == reverse.max_steps

    def scalar(x, options):
        return _scalar(_from_unconstrained(base, x), options)

    grad = np.asarray(jax.jit(jax.grad(lambda x: scalar(x, reverse)))(x0))
    jac = np.asarray(jax.jit(jax.jacfwd(lambda x: scalar(x, forward)))(x0))
    floor = 1e-6 * np.max(np.abs(jac))
    worst = np.max(np.abs(grad - jac) / np.maximum(np.abs(jac), floor))
    assert worst < 1e-8, worst


@pytest.mark.slow
def test_staggered_sensitivities_converge_to_the_exact_derivative(presets):
    """`Rodas4(sensitivities="staggered")` (Levenberg–Marquardt's Jacobians) holds the step's
    Jacobian constant: the same solution, and tangents that approximate the exact derivative
    of the solution and approach it as the tolerance tightens (a consistent discretisation of
    the sensitivity equations, not a different derivative)."""
    free = ("signalling_capacity", "egp_max", "insulin_clearance_rate", "dct_capacity")
    base = presets["t2dm"]
    x0 = jnp.log(jnp.array([mgjax.get_parameters(base)[n] for n in free]))

    def outputs(x, options):
        model = mgjax.set_parameters(base, {n: jnp.exp(x[i]) for i, n in enumerate(free)})
        short = mgjax.simulate(model, CLAMP, jnp.array([30.0, 120.0, 180.0]), options=options)
        long = mgjax.simulate(model, TRIAL, jnp.array([1.0 * WEEK, 16 * WEEK]), options=options)
        return jnp.concatenate(
            [jnp.log(short[k]) for k in ("glucose", "insulin")]
            + [jnp.log(long[k]) for k in ("serum_mg", "urinary_mg", "hba1c")]
        )

    worst = {}
    for rtol in (1e-6, 1e-10):
        values, jacobians = {}, {}
        for kind in ("exact", "staggered"):
            options = mgjax.SolverOptions(
                solver=mgjax.Rodas4(sensitivities=kind),
                rtol=rtol,
                atol=rtol * 1e-3,
                adjoint=dfx.ForwardMode(),
                max_steps=50_000,
            )
            values[kind] = np.asarray(outputs(x0, options))
            jacobians[kind] = np.asarray(jax.jit(jax.jacfwd(outputs))(x0, options))
        np.testing.assert_array_equal(values["exact"], values["staggered"])
        scale = np.max(np.abs(jacobians["exact"]), axis=0)
        assert np.all(scale > 0)
        worst[rtol] = np.max(np.abs(jacobians["staggered"] - jacobians["exact"]) / scale)
    assert worst[1e-6] < 5e-3, worst  # 1.2e-3 measured
    assert worst[1e-10] < worst[1e-6] / 10, worst  # 3e-5 measured
    assert worst[1e-6] > 0, "the two schemes should differ (else the switch is not applied)"


def test_levenberg_marquardt_jacobians_use_staggered_sensitivities_unless_told_otherwise():
    from mgjax.solve import for_jacobians

    assert mgjax.Rodas4().sensitivities == "auto"
    assert for_jacobians(mgjax.Rodas4()).sensitivities == "staggered"
    assert for_jacobians(mgjax.Rodas4(sensitivities="exact")).sensitivities == "exact"
    assert for_jacobians(dfx.Kvaerno5()) == dfx.Kvaerno5()
    # refused: a ValueError naming the choices (a TypeError where jaxtyping checks types)
    with pytest.raises((ValueError, TypeError), match="sensitivities"):
        mgjax.Rodas4(sensitivities="adjoint")
