"""Mg²⁺ mass balance: absorbed (+ IV) − excreted = change of total body Mg²⁺."""

import jax.numpy as jnp
import numpy as np
from helpers import WEEK

import mgjax


def _check_balance(traj, tol):
    body = np.asarray(traj["exchangeable_body_mg"])
    absorbed = np.asarray(traj["absorbed_mg_cumulative"])
    excreted = np.asarray(traj["urinary_mg_cumulative"])
    change = body - body[0]
    np.testing.assert_allclose(change, absorbed - excreted, rtol=0, atol=tol * body[0])
    return absorbed, excreted


def test_mass_balance_over_a_16_week_supplementation_trial(presets):
    protocol = mgjax.ConstantInputs(oral_mg=26.0)
    ts = jnp.linspace(0.0, 16 * WEEK, 17)
    traj = mgjax.simulate(presets["t2dm_hypomagnesemia"], protocol, ts)
    absorbed, excreted = _check_balance(traj, 1e-9)
    # the test is not vacuous: the pools gained several mmol
    assert absorbed[-1] - excreted[-1] > 5.0


def test_mass_balance_with_iv_mg_and_insulin_over_3_hours(presets):
    protocol = mgjax.ConstantInputs(insulin_infusion=450.0, glucose_infusion=2.0, iv_mg=20.0)
    ts = jnp.linspace(0.0, 180.0, 19)
    traj = mgjax.simulate(presets["healthy"], protocol, ts)
    absorbed, excreted = _check_balance(traj, 1e-9)
    assert absorbed[-1] > 2.0 and excreted[-1] > 0.1
