"""The Diffrax solution matches SciPy's Radau (rtol 1e-10) within 1e-6 relative on every state."""

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import WEEK

import mgjax
from mgjax.solve._reference import scipy_solve

TIGHT = mgjax.SolverOptions(rtol=1e-10, atol=1e-12, max_steps=100_000)


def _compare(model, protocol, ts):
    reference = scipy_solve(model, protocol, np.asarray(ts), method="Radau", rtol=1e-10, atol=1e-12)
    traj = mgjax.simulate(model, protocol, ts, options=TIGHT)
    ours = np.asarray(traj.ys)
    # relative on every state; accumulators start at exactly 0 on both sides
    err = np.abs(ours - reference) / np.maximum(np.abs(reference), 1e-12)
    worst = np.array(mgjax.MgT2DModel.state_names())[np.argmax(err.max(axis=0))]
    assert err.max() < 1e-6, f"max relative error {err.max():.2e} in {worst}"
    return reference


@pytest.mark.parametrize("preset", ["healthy", "t2dm_hypomagnesemia"])
def test_3_hour_infusion_matches_radau(presets, preset):
    protocol = mgjax.ConstantInputs(insulin_infusion=450.0, glucose_infusion=1.5)
    ref = _compare(presets[preset], protocol, jnp.linspace(0.0, 180.0, 13))
    assert np.ptp(ref[:, 0]) > 0.5  # glucose moved


def test_16_week_supplementation_matches_radau(presets):
    protocol = mgjax.ConstantInputs(oral_mg=26.0)
    ref = _compare(presets["t2dm_hypomagnesemia"], protocol, jnp.arange(17.0) * WEEK)
    assert np.ptp(ref[:, mgjax.MgT2DModel.state_names().index("ecf_mg")]) > 1.0
