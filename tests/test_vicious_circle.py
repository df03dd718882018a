"""The vicious circle emerges from the equations, both ways round."""

import jax.numpy as jnp
import numpy as np
from helpers import WEEK, observables_at_steady_state

import mgjax


def _insulin_sensitivity(model, inputs=None):
    """Receptor signal at a clamp-level insulin (600 pmol/L) with the subject's own Mg²⁺."""
    state = mgjax.steady_state(model, inputs)
    mg_free = model.observables(state.y, inputs or mgjax.Inputs.zeros(), jnp)["intracellular_mg"]
    return float(model.insulin_signalling.signal(600.0, mg_free))


def test_lower_mg_intake_lowers_mg_and_raises_glucose_insulin_homa(presets):
    for name in ["healthy", "t2dm"]:
        model = presets[name]
        normal = observables_at_steady_state(model)
        low = observables_at_steady_state(mgjax.set_parameters(model, dietary_mg_intake=4.0))
        assert low["serum_mg"] < normal["serum_mg"] - 0.01, name
        assert low["intracellular_mg"] < normal["intracellular_mg"], name
        assert low["glucose"] > normal["glucose"], name
        assert low["insulin"] > normal["insulin"], name
        assert low["homa_ir"] > normal["homa_ir"], name


def test_impaired_insulin_signalling_wastes_mg(presets):
    """Halving post-receptor signalling: urinary Mg²⁺ rises, serum Mg²⁺ and FEMg settle lower."""
    model = presets["healthy"]
    before = observables_at_steady_state(model)
    impaired = mgjax.set_parameters(model, signalling_capacity=0.5)
    ts = jnp.array([0.0, 1.0 * 1440, 7.0 * 1440, 4 * WEEK, 52 * WEEK])
    traj = mgjax.simulate(impaired, ts=ts, y0=mgjax.steady_state(model))
    urinary = np.asarray(traj["urinary_mg"])
    assert urinary[1] > before["urinary_mg"] + 0.1  # Mg²⁺ wasting in the first days
    first_week = float(traj["urinary_mg_cumulative"][2])
    assert first_week > 7.0 * before["urinary_mg"] / 1.0 * 1.02
    serum = np.asarray(traj["serum_mg"])
    assert serum[-1] < before["serum_mg"] - 0.005
    after = observables_at_steady_state(impaired)
    assert after["serum_mg"] < before["serum_mg"]
    assert after["fractional_mg_excretion"] > before["fractional_mg_excretion"]
    assert after["trpm6_activity"] < before["trpm6_activity"]


def test_mg_supplement_improves_insulin_sensitivity_in_hypomagnesaemic_t2dm(presets):
    model = presets["t2dm_hypomagnesemia"]
    supplement = mgjax.ConstantInputs(oral_mg=26.0).inputs(0.0)
    base = observables_at_steady_state(model)
    treated = observables_at_steady_state(model, supplement)
    assert treated["serum_mg"] > base["serum_mg"] + 0.03
    assert treated["intracellular_mg"] > base["intracellular_mg"]
    assert treated["homa_ir"] < base["homa_ir"]
    assert treated["glucose"] < base["glucose"]
    assert _insulin_sensitivity(model, supplement) > _insulin_sensitivity(model)
