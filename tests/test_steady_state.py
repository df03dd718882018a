"""The fasting steady state: physiological values, a true rest point, differentiable."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import observables_at_steady_state

import mgjax


def test_healthy_rests_at_physiological_fasting_values(presets):
    obs = observables_at_steady_state(presets["healthy"])
    assert 0.80 <= obs["serum_mg"] <= 0.95
    assert 4.5 <= obs["glucose"] <= 5.5
    assert 20.0 <= obs["insulin"] <= 70.0
    # secondary checks against physiology.md: ionised fraction, free cytosolic Mg, renal handling
    assert 0.45 <= obs["ionized_mg"] <= 0.65
    assert 0.3 <= obs["intracellular_mg"] <= 1.0
    assert 2.0 <= obs["fractional_mg_excretion"] <= 5.0
    assert 3.0 <= obs["urinary_mg"] <= 8.0
    assert 4.5 <= obs["hba1c"] <= 5.8
    assert obs["homa_ir"] < 2.5
    assert 1.6 <= obs["egp"] <= 2.4  # basal EGP, mg/kg/min


def test_t2dm_hypomagnesemia_rests_hypomagnesaemic_and_hyperglycaemic(presets):
    obs = observables_at_steady_state(presets["t2dm_hypomagnesemia"])
    assert obs["serum_mg"] < 0.70
    assert obs["glucose"] > 7.0
    assert obs["hba1c"] > 8.0


def test_t2dm_is_between(presets):
    healthy = observables_at_steady_state(presets["healthy"])
    t2dm = observables_at_steady_state(presets["t2dm"])
    hypo = observables_at_steady_state(presets["t2dm_hypomagnesemia"])
    assert healthy["glucose"] < t2dm["glucose"] < hypo["glucose"]
    assert healthy["homa_ir"] < t2dm["homa_ir"] < hypo["homa_ir"]
    assert healthy["serum_mg"] > t2dm["serum_mg"] > hypo["serum_mg"]
    assert t2dm["glucose"] > 7.0


def test_steady_state_is_a_rest_point(presets, fasting_states):
    for name, model in presets.items():
        state = fasting_states[name]
        assert bool(state.success)
        assert float(mgjax.steady_state_residual(model, state)) < 1e-12
        assert float(jnp.min(state.y[:-2])) > 0


def test_steady_state_is_the_long_time_limit(presets, fasting_states):
    """Start away from rest and integrate two years: the state returns to the steady state."""
    model = presets["t2dm_hypomagnesemia"]
    state = fasting_states["t2dm_hypomagnesemia"]
    n = len(model.dynamic_state_names())
    perturbed = state.y.at[:n].multiply(jnp.linspace(0.8, 1.2, n))
    traj = mgjax.simulate(model, ts=jnp.array([0.0, 730 * 1440.0]), y0=perturbed)
    np.testing.assert_allclose(traj.ys[-1, :n], state.y[:n], rtol=1e-4)


def test_steady_state_under_vmap_and_jit(presets):
    models = [presets[n] for n in mgjax.preset_names()]
    batch = jax.tree.map(lambda *x: jnp.stack(x), *models)
    states = jax.jit(jax.vmap(mgjax.steady_state))(batch)
    for i, model in enumerate(models):
        np.testing.assert_allclose(states.y[i], mgjax.steady_state(model).y, rtol=1e-10)


def test_steady_state_gradient_matches_finite_differences(presets):
    model = presets["t2dm"]
    names = ["signalling_capacity", "dietary_mg_intake", "gk_s05", "dct_capacity", "receptor_mg_km"]

    def fasting(values):
        m = mgjax.set_parameters(model, dict(zip(names, values)))
        obs = m.observables(mgjax.steady_state(m).y, mgjax.Inputs.zeros(), jnp)
        return jnp.log(obs["glucose"]) + jnp.log(obs["serum_mg"])

    x = jnp.array([float(mgjax.get_parameter(model, n)) for n in names])
    grad = jax.grad(fasting)(x)
    for i in range(len(names)):
        h = 1e-6 * x[i]
        fd = (fasting(x.at[i].add(h)) - fasting(x.at[i].add(-h))) / (2 * h)
        assert float(jnp.abs(grad[i] - fd)) <= 1e-6 * max(1.0, float(jnp.abs(fd))) + 1e-9, names[i]


def test_failed_steady_state_is_reported_not_thrown():
    broken = mgjax.set_parameters(mgjax.preset(), insulin_clearance_rate=-1.0)
    state = mgjax.steady_state(broken, throw=False)
    assert not bool(state.success)
    assert bool(jnp.all(jnp.isnan(state.y[:-2])))


def test_failed_steady_state_raises_by_default():
    broken = mgjax.set_parameters(mgjax.preset(), insulin_clearance_rate=-1.0)
    with pytest.raises(Exception, match="steady state"):
        mgjax.steady_state(broken).y.block_until_ready()


def test_a_nearby_steady_state_is_a_warm_start(presets):
    """From the steady state of nearby parameters the search is Newton's method almost at
    once (`guess`, first pseudo step 1e4 min): the same rest point in a third of the
    iterations of the rough start; a guess with NaN or zeros is ignored (rough start), so
    "no guess yet" can be traced; derivatives are the implicit function theorem's either way."""
    from mgjax.solve._steady_state import _continuation_with_count, initial_guess

    base = presets["t2dm"]
    near = mgjax.set_parameters(base, {"egp_max": 0.017, "signalling_capacity": 0.8})
    n = len(base.dynamic_state_names())
    guess = mgjax.steady_state(base).y[:n]
    cold = mgjax.steady_state(near)
    warm = mgjax.steady_state(near, guess=guess)
    np.testing.assert_allclose(warm.y, cold.y, rtol=1e-11)
    for bad in (jnp.full(n, jnp.nan), jnp.zeros(n)):
        np.testing.assert_allclose(mgjax.steady_state(near, guess=bad).y, cold.y, rtol=1e-11)

    def iterations(z0, h0):
        return int(_continuation_with_count(z0, h0, (near, mgjax.Inputs.zeros()), 200)[1])

    rough = jnp.log(initial_guess(near))
    warm_iterations = iterations(jnp.log(guess), 1e4)
    assert 0 < warm_iterations < iterations(rough, 1.0) / 2

    def serum(m, g):
        return mgjax.observables(m, mgjax.steady_state(m, guess=g))["serum_mg"]

    d_cold = jax.grad(lambda m: serum(m, None))(near)
    d_warm = jax.grad(lambda m: serum(m, guess))(near)
    np.testing.assert_allclose(
        d_warm.renal_magnesium.dct_capacity, d_cold.renal_magnesium.dct_capacity, rtol=1e-9
    )
