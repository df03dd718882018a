"""The Rodas4 Rosenbrock solver: order, stiff stability, dense output, agreement with Kvaerno5."""

import diffrax as dfx
import jax.numpy as jnp
import numpy as np
import pytest

import mgjax


def _linear(t, y, args):
    return -y + jnp.sin(t) * jnp.array([1.0, 2.0])


def _exact(t):
    # y' = -y + a sin t, y(0) = y0  →  y = (y0 + a/2) e^{-t} + a (sin t − cos t)/2
    a = np.array([1.0, 2.0])
    y0 = np.array([1.0, 0.5])
    t = np.asarray(t)[:, None]
    return (y0 + a / 2) * np.exp(-t) + a * (np.sin(t) - np.cos(t)) / 2


def test_rodas4_is_fourth_order_with_third_order_dense_output():
    ts = jnp.linspace(0.0, 2.0, 7)
    end, dense = [], []
    for dt in [0.1, 0.05, 0.025]:
        sol = dfx.diffeqsolve(
            dfx.ODETerm(_linear),
            mgjax.Rodas4(),
            0.0,
            2.0,
            dt,
            jnp.array([1.0, 0.5]),
            saveat=dfx.SaveAt(ts=ts),
        )
        err = np.abs(np.asarray(sol.ys) - _exact(ts))
        end.append(err[-1].max())
        dense.append(err.max())
    assert 14 < end[0] / end[1] < 18 and 14 < end[1] / end[2] < 18  # 2^4
    assert dense[0] / dense[1] > 7.5 and dense[1] / dense[2] > 7.5  # ≥ 2^3


def test_rodas4_is_stable_on_a_very_stiff_problem():
    # y' = -1e6 (y - cos t): explicit solvers need ~1e6 steps; L-stable Rodas4 takes few.
    sol = dfx.diffeqsolve(
        dfx.ODETerm(lambda t, y, a: -1e6 * (y - jnp.cos(t))),
        mgjax.Rodas4(),
        0.0,
        10.0,
        0.01,
        jnp.array([0.0]),
        stepsize_controller=dfx.PIDController(rtol=1e-8, atol=1e-10),
    )
    assert int(sol.stats["num_steps"]) < 500
    np.testing.assert_allclose(sol.ys[-1], np.cos(10.0) + 1e-6 * np.sin(10.0), rtol=1e-6)


@pytest.mark.parametrize("preset", ["healthy", "t2dm_hypomagnesemia"])
def test_rodas4_agrees_with_kvaerno5_on_the_model(presets, preset):
    protocol = mgjax.ConstantInputs(insulin_infusion=300.0, glucose_infusion=1.0, oral_mg=10.0)
    ts = jnp.linspace(0.0, 600.0, 11)
    a = mgjax.simulate(
        presets[preset], protocol, ts, options=mgjax.SolverOptions(rtol=1e-9, atol=1e-12)
    )
    b = mgjax.simulate(
        presets[preset],
        protocol,
        ts,
        options=mgjax.SolverOptions(solver=dfx.Kvaerno5(), rtol=1e-9, atol=1e-12),
    )
    np.testing.assert_allclose(a.ys, b.ys, rtol=1e-6, atol=1e-12)


def test_quadrature_states_do_not_set_the_clamp_step_size():
    """A clamp whose glucose starts above target: its infusion switches on through the
    controller's smooth zero limit, so ∫GIR grows exponentially from ~0. Held to `atol` (the
    old rule) that integral set the step size; with its own absolute tolerance the solve takes
    far fewer steps and every state still agrees with a tight reference."""
    model = mgjax.preset("t2dm")
    rest = mgjax.steady_state(model)
    protocol = mgjax.HyperinsulinemicClamp(target_glucose=float(rest["glucose"]) - 1.5)
    ts = jnp.linspace(0.0, 120.0, 25)
    old = mgjax.simulate(model, protocol, ts, options=mgjax.SolverOptions(quadrature_atol=1e-9))
    new = mgjax.simulate(model, protocol, ts)
    tight = mgjax.simulate(
        model,
        protocol,
        ts,
        options=mgjax.SolverOptions(rtol=1e-11, atol=1e-14, quadrature_atol=1e-14),
    )
    assert int(new.num_steps) < 0.75 * int(old.num_steps)
    assert float(jnp.max(tight["glucose_infused"])) > 10.0  # the infusion did switch on
    # every state within a few local tolerances (atol + rtol·|y|, quadratures at 1e-6) of the
    # tight solve; the infused glucose no less accurate in absolute terms than under the old rule
    for name, atol in [
        ("glucose", 1e-9),
        ("insulin", 1e-9),
        ("gir_error_integral", 1e-9),
        ("glucose_infused", 1e-6),
        ("insulin_area", 1e-6),
    ]:
        ref = np.asarray(tight[name])
        err = np.abs(np.asarray(new[name]) - ref)
        assert np.all(err <= 20.0 * (atol + 1e-6 * np.abs(ref))), name
    worst_old = np.max(np.abs(np.asarray(old["glucose_infused"]) - tight["glucose_infused"]))
    worst_new = np.max(np.abs(np.asarray(new["glucose_infused"]) - tight["glucose_infused"]))
    assert worst_new < 2.0 * worst_old
