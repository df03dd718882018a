"""mgjax as a JAX building block: jit, vmap, grad, jacfwd and hessian through every protocol,
against finite differences; no recompilation across parameter values and doses; a user
mechanism (an Equinox MLP) in place of a model mechanism, with gradients reaching its weights."""

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import mgjax
from mgjax.model import RenalMagnesium

# finite differences and forward-mode derivatives at tight tolerance; reverse mode at rtol 1e-8,
# because near round-off a step recomputed from a checkpoint can be accepted where the original
# was rejected (tests/test_gradients.py)
FORWARD = mgjax.SolverOptions(rtol=1e-10, atol=1e-12, max_steps=20_000, adjoint=dfx.ForwardMode())
REVERSE = mgjax.SolverOptions(rtol=1e-8, atol=1e-11, max_steps=20_000)


def _fasting(model, x):
    """Serum Mg²⁺ at the fasting steady state with habitual intake scaled by x (no ODE solve)."""
    model = mgjax.set_parameters(model, dietary_mg_intake=x * 12.0)
    return mgjax.observables(model, mgjax.steady_state(model))["serum_mg"]


def _clamp(model, rate, options):
    clamp = mgjax.HyperinsulinemicClamp(insulin_rate=rate)
    traj = mgjax.simulate(model, clamp, clamp.sampling_times(), options=options)
    return clamp.summary(traj)["m_value"]


def _hyperglycaemic(model, increment, options):
    clamp = mgjax.HyperglycemicClamp(increment=increment, duration=60.0)
    traj = mgjax.simulate(model, clamp, clamp.sampling_times(), options=options)
    return clamp.summary(traj)["second_phase_insulin"]


def _ivgtt(model, dose, options):
    ivgtt = mgjax.IVGTT(glucose_dose=dose)
    traj = mgjax.simulate(model, ivgtt, jnp.linspace(0.0, 40.0, 21), options=options)
    return ivgtt.summary(traj)["air_g"]


def _trial(model, dose, options):
    trial = mgjax.OralMagnesiumTrial.daily(1.0, 2, visit_weeks=(0, 2), averaged=True)
    trial = eqx.tree_at(lambda p: p.dose, trial, dose)
    traj = mgjax.simulate(model, trial, trial.sampling_times(), options=options)
    return trial.summary(traj)["serum_mg"][-1]


# protocol → (readout(model, protocol input, options), model parameter, its value, input value)
CASES = {
    "fasting": (lambda m, x, o: _fasting(m, x), "gfr", 0.125, 1.0),
    "hyperinsulinemic_clamp": (_clamp, "signalling_capacity", 0.45, 40.0),
    "hyperglycemic_clamp": (_hyperglycaemic, "beta_cell_mass", 0.45, 6.9),
    "ivgtt": (_ivgtt, "beta_cell_mass", 0.45, 0.3),
    "oral_mg_trial": (_trial, "dct_capacity", 0.0217, 20.0),
}


def _readout(case, theta, options):
    """The case's scalar as a function of θ = (model parameter, protocol input)."""
    fn, name, _, _ = CASES[case]
    model = mgjax.set_parameters(mgjax.preset("t2dm"), {name: theta[0]})
    return fn(model, theta[1], options)


#: the cases whose hessian is checked too
SECOND_ORDER = ("fasting", "hyperinsulinemic_clamp", "oral_mg_trial")


def _first_derivatives(case, theta):
    """(value, jacfwd, zeros in place of the hessian) in one forward-mode pass."""

    def value_and_jacobian(t):
        value = _readout(case, t, FORWARD)
        return value, value

    jac, value = jax.jacfwd(value_and_jacobian, has_aux=True)(theta)
    return value, jac, jnp.zeros((theta.size, theta.size))


def _forward_derivatives(case, theta):
    """(value, jacfwd, hessian as jacfwd∘jacfwd) in one forward-mode pass."""

    def value_and_jacobian(t):
        value = _readout(case, t, FORWARD)
        return value, value

    def jacobian_with_aux(t):
        jac, value = jax.jacfwd(value_and_jacobian, has_aux=True)(t)
        return jac, (value, jac)

    hess, (value, jac) = jax.jacfwd(jacobian_with_aux, has_aux=True)(theta)
    return value, jac, hess


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_jit_vmap_grad_jacfwd_hessian_through_the_protocol(case):
    """Forward and reverse mode, vmapped and jitted, agree with central differences; the
    hessian (forward over forward, the costliest program of the suite to compile) is checked
    on the protocols with a feedback controller or dose pulses and on fasting."""
    _, _, p0, x0 = CASES[case]
    second_order = case in SECOND_ORDER
    theta0 = jnp.array([p0, x0])
    h = 1e-3 * theta0
    rows = jnp.stack(
        [theta0] + [theta0 + s * h[k] * jnp.eye(2)[k] for k in range(2) for s in (1.0, -1.0)]
    )
    # vmap + jit of forward mode: value, jacobian and hessian at θ and at θ ± h
    if second_order:
        derivatives = lambda t: _forward_derivatives(case, t)  # noqa: E731
    else:
        derivatives = lambda t: _first_derivatives(case, t)  # noqa: E731
    values, jacs, hessians = eqx.filter_jit(jax.vmap(derivatives))(rows)
    # grad (reverse mode, the default adjoint), vmapped too: a finished lane of a vmapped
    # solve must not turn reverse-mode gradients into NaN
    r_values, grads = eqx.filter_jit(
        jax.vmap(jax.value_and_grad(lambda t: _readout(case, t, REVERSE)))
    )(rows)
    values, jacs, hessians = map(np.asarray, (values, jacs, hessians))
    r_values, grads = np.asarray(r_values), np.asarray(grads)
    assert np.all(np.isfinite(hessians)) and np.all(np.isfinite(grads))

    # reverse mode = forward mode
    np.testing.assert_allclose(r_values, values, rtol=1e-7)
    # gradient (both modes) = central differences of the values
    fd = np.array([(values[1 + 2 * k] - values[2 + 2 * k]) / (2 * h[k]) for k in range(2)])
    assert np.all(np.abs(fd) > 0), fd  # not vacuous: both inputs move the readout
    np.testing.assert_allclose(jacs[0], fd, rtol=1e-4)
    np.testing.assert_allclose(grads[0], fd, rtol=1e-3)
    if not second_order:
        return
    # hessian = central differences of the jacobians; symmetric
    fd2 = np.stack([(jacs[1 + 2 * k] - jacs[2 + 2 * k]) / (2 * h[k]) for k in range(2)])
    scale = np.abs(hessians[0]).max()
    assert scale > 0
    np.testing.assert_allclose(hessians[0], fd2, atol=1e-4 * scale)
    np.testing.assert_allclose(hessians[0], hessians[0].T, atol=1e-8 * scale)


def _count_compiles():
    """A compile counter: XLA backend compilations seen by JAX's monitoring hooks."""
    events = []

    def listener(name, *args, **kwargs):
        if "backend_compile" in name:
            events.append(name)

    jax.monitoring.register_event_duration_secs_listener(listener)
    return events


@pytest.mark.slow
def test_new_parameter_values_and_doses_never_recompile():
    traces = []

    @eqx.filter_jit
    def readouts(model, insulin_rate, mg_dose):
        traces.append(1)
        clamp = mgjax.HyperinsulinemicClamp(insulin_rate=insulin_rate)
        trial = mgjax.OralMagnesiumTrial.daily(1.0, 2, visit_weeks=(0, 2), averaged=True)
        trial = eqx.tree_at(lambda p: p.dose, trial, mg_dose)
        m = clamp.summary(mgjax.simulate(model, clamp, clamp.sampling_times()))["m_value"]
        mg = trial.summary(mgjax.simulate(model, trial, trial.sampling_times()))["serum_mg"]
        return m, mg[-1]

    compiles = _count_compiles()
    results = []
    for name, rate, dose in [
        ("healthy", 40.0, 0.0),
        ("t2dm", 80.0, 15.0),
        ("t2dm_hypomagnesemia", 120.0, 30.0),
    ]:
        model = mgjax.set_parameters(mgjax.preset(name), signalling_capacity=0.3 + rate / 1000)
        results.append([float(v) for v in readouts(model, jnp.asarray(rate), jnp.asarray(dose))])
    n_compiles = len(compiles)
    assert len(traces) == 1  # traced once
    # ... and compiled once: a fourth call with new values adds no XLA compilation
    readouts(mgjax.preset("t2dm"), jnp.asarray(60.0), jnp.asarray(5.0))
    assert len(compiles) == n_compiles and len(traces) == 1
    assert n_compiles >= 1  # the counter does see compilations
    # the calls did compute different things
    assert len({r[0] for r in results}) == 3 and len({r[1] for r in results}) == 3


class Learned(eqx.Module):
    """TRPM6's Mg²⁺ dependence as an MLP of intracellular free Mg²⁺ (mmol/L), in (0, 2)."""

    mlp: eqx.nn.MLP

    def __call__(self, kidney, mg_free):
        return 2.0 * jax.nn.sigmoid(self.mlp((mg_free - 0.5) / 0.1))


def test_replace_mechanism_reaches_the_solver_and_its_weights_get_gradients():
    model = mgjax.preset("healthy")
    mechanism = "renal_magnesium.trpm6_magnesium_response"
    assert mechanism in mgjax.mechanisms()
    # a plain function reproducing the original: same steady state
    same = mgjax.replace_mechanism(
        model, mechanism, lambda kidney, mg: 1.0 / (1.0 + mg / kidney.trpm6_mg_ki)
    )
    y_model = mgjax.steady_state(model).y
    np.testing.assert_allclose(mgjax.steady_state(same).y, y_model, rtol=1e-12)
    # augmenting: the original times a constant changes the answer
    halved = mgjax.replace_mechanism(
        model,
        mechanism,
        lambda kidney, mg: 0.5 * RenalMagnesium.trpm6_magnesium_response(kidney, mg),
    )
    assert not np.allclose(mgjax.steady_state(halved).y, y_model, rtol=1e-6)
    # an MLP: its weights are model leaves and receive gradients (here through the steady
    # state; experiments/examples/embed_hybrid.py trains one through the trial solves, smoke-tested)
    hybrid = mgjax.replace_mechanism(
        model, mechanism, Learned(eqx.nn.MLP("scalar", "scalar", 8, 1, key=jr.PRNGKey(0)))
    )
    assert mgjax.get_parameter(hybrid, "gfr") == mgjax.get_parameter(model, "gfr")

    def loss(m):
        obs = mgjax.observables(m, mgjax.steady_state(m))
        return obs["serum_mg"] + obs["urinary_mg"]

    grads = eqx.filter_jit(eqx.filter_grad(loss))(hybrid)
    weights = jax.tree.leaves(grads.renal_magnesium.overrides["trpm6_magnesium_response"])
    assert weights and all(np.all(np.isfinite(w)) for w in weights)
    assert sum(float(jnp.sum(jnp.abs(w))) for w in weights) > 0
    assert float(grads.renal_magnesium.gfr) != 0.0  # mechanistic parameters too
    # same replacement type, new weights: no new class (so no retrace of jitted users)
    other = mgjax.replace_mechanism(
        model, mechanism, Learned(eqx.nn.MLP("scalar", "scalar", 8, 1, key=jr.PRNGKey(1)))
    )
    assert type(other.renal_magnesium) is type(hybrid.renal_magnesium)
    # bad names and non-callables are refused with the list of mechanisms
    with pytest.raises(KeyError, match="renal_magnesium.trpm6_insulin_response"):
        mgjax.replace_mechanism(model, "renal_magnesium.trpm7", lambda k, m: 1.0)
    with pytest.raises(TypeError, match="(?i)callable"):  # or the run-time annotation check's
        mgjax.replace_mechanism(model, mechanism, 1.0)


def test_public_api_is_pure_and_reexported():
    for name in [
        "preset",
        "steady_state",
        "simulate",
        "observables",
        "observable_names",
        "replace_mechanism",
        "mechanisms",
        "set_parameters",
        "get_parameters",
        "HyperinsulinemicClamp",
        "HyperglycemicClamp",
        "IVGTT",
        "OralMagnesiumTrial",
        "fasting",
        "SolverOptions",
    ]:
        assert hasattr(mgjax, name), name
    for name in ["make_problem", "make_experiment", "FitProblem", "Experiment"]:
        assert hasattr(mgjax.fit, name), name
    # observables by name at a state, in the documented units
    model = mgjax.preset("healthy")
    obs = mgjax.observables(model, mgjax.steady_state(model))
    assert set(obs) == set(mgjax.observable_names()) == set(mgjax.OBSERVABLE_UNITS)
    assert 0.7 < float(obs["serum_mg"]) < 1.0
    # the model is an immutable PyTree: set_parameters returns a copy
    changed = mgjax.set_parameters(model, gfr=0.1)
    assert float(mgjax.get_parameter(model, "gfr")) == 0.125
    assert float(mgjax.get_parameter(changed, "gfr")) == 0.1


def _import_in_subprocess(env_changes: dict[str, str | None]) -> dict:
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in env_changes}
    env.update({k: v for k, v in env_changes.items() if v is not None})
    script = (
        "import json, os; import mgjax, mgjax.app.cli; "
        "from jax._src import xla_bridge; "
        "print(json.dumps(dict(started=xla_bridge.backends_are_initialized(), "
        "flags=os.environ.get('XLA_FLAGS'))))"
    )
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_import_starts_no_backend_and_turns_the_cpu_fusion_emitters_off():
    """`import mgjax` (and its CLI) creates no JAX array, so XLA's flags can still be set: it
    adds `--xla_cpu_use_fusion_emitters=false` unless the user set that flag or opted out."""
    plain = _import_in_subprocess({"XLA_FLAGS": None, "MGJAX_XLA_FLAGS": None})
    assert plain == dict(started=False, flags="--xla_cpu_use_fusion_emitters=false")
    mine = _import_in_subprocess({"XLA_FLAGS": "--xla_cpu_use_fusion_emitters=true"})
    assert mine["flags"] == "--xla_cpu_use_fusion_emitters=true"
    kept = _import_in_subprocess({"XLA_FLAGS": "--xla_dump_to=/nowhere", "MGJAX_XLA_FLAGS": None})
    assert kept["flags"] == "--xla_dump_to=/nowhere --xla_cpu_use_fusion_emitters=false"
    out = _import_in_subprocess({"XLA_FLAGS": None, "MGJAX_XLA_FLAGS": "0"})
    assert out == dict(started=False, flags=None)


def test_a_preset_first_asked_for_inside_a_trace_leaves_no_tracer_behind():
    """`mgjax.preset` caches each phenotype per process; the first request may come from
    inside a user's jitted function, and the cached model must still hold concrete arrays
    (a leaked tracer broke a later test when test order put a trace first)."""
    from mgjax.model._presets import _built

    _built.cache_clear()

    @jax.jit
    def shifted(x):
        return x + mgjax.get_parameter(mgjax.preset("t2dm"), "tal_mg_ec50")

    assert np.isfinite(float(shifted(1.0)))
    value = mgjax.get_parameter(mgjax.preset("t2dm"), "tal_mg_ec50")
    assert not isinstance(value, jax.core.Tracer)
    assert float(value) + 1.0 == pytest.approx(float(shifted(1.0)))
