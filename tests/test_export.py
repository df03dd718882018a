"""The SBML / PEtab export: the written equations are the model's own (read back by mgjax's SBML
importer and compared with the JAX vector field), and an exported PEtab problem, imported by
mgjax's PEtab importer, simulates what `mgjax.simulate` does (pre-equilibration included)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
import sympy as sp

pytest.importorskip("libsbml")

import diffrax as dfx  # noqa: E402

import mgjax  # noqa: E402
from mgjax.petab import ExportError, import_problem, read_sbml, to_petab, to_sbml  # noqa: E402
from mgjax.petab._sbml import TIME  # noqa: E402
from mgjax.protocols import (  # noqa: E402
    IVGTT,
    HyperglycemicClamp,
    HyperinsulinemicClamp,
    OralMagnesiumTrial,
    fasting,
)
from mgjax.solve._solve import SolverOptions  # noqa: E402
from mgjax.solve._vector_field import coupled_rates  # noqa: E402

PROTOCOLS = {
    "fasting": fasting(),
    "ivgtt": IVGTT(),
    "hyperinsulinemic_clamp": HyperinsulinemicClamp(),
    "hyperglycemic_clamp": HyperglycemicClamp(),
    "mg_trial": OralMagnesiumTrial.daily(10.0, 2),
}


def _read_back(tmp_path, model, protocol):
    path = tmp_path / "model.xml"
    path.write_text(to_sbml(model, protocol))
    ode = read_sbml(path)
    rhs = sp.lambdify([TIME, ode.state_symbols, ode.parameter_symbols], ode.rhs, "numpy")
    start = sp.lambdify([ode.parameter_symbols], ode.initial, "numpy")
    return ode, rhs, np.array(start(ode.parameter_values), dtype=float)


@pytest.mark.parametrize("name", list(PROTOCOLS))
def test_exported_equations_are_the_models(tmp_path, name):
    """Read back by mgjax's SBML importer, the right-hand side equals the JAX vector field at
    perturbed states and times across the protocol (inputs, clamp controller, dose pulses),
    and the start is the fasting steady state."""
    model, protocol = mgjax.preset("t2dm_hypomagnesemia"), PROTOCOLS[name]
    ode, rhs, x0 = _read_back(tmp_path, model, protocol)
    assert ode.states[:19] == list(mgjax.MgT2DModel.state_names())
    assert ode.states[19:] == list(protocol.controller_state_names)
    rest = mgjax.steady_state(model, mgjax.Inputs.zeros())
    np.testing.assert_allclose(x0[:17], np.asarray(rest.y)[:17], rtol=1e-12)
    p = np.array(ode.parameter_values)
    rng = np.random.default_rng(0)
    for t in (0.5, 1.5, 3.0, 8.0, 22.0, 75.0, 1460.0):
        x = x0 * (1.0 + 0.05 * rng.standard_normal(x0.size))
        exported = np.array(rhs(t, x, p), dtype=float)
        native = np.asarray(coupled_rates(model, protocol, t, jnp.asarray(x), jnp))
        # relative 1e-9, or rounding next to a state's own size where a rate is ~0
        bound = 1e-9 * np.abs(native) + 1e-13 * np.abs(x) + 1e-15
        assert np.all(np.abs(exported - native) <= bound), (name, t)


def test_a_replaced_mechanism_is_exported_and_a_batch_refused(tmp_path):
    def stronger(kidney, insulin_signal, xp):
        return 0.5 * insulin_signal

    model = mgjax.replace_mechanism(mgjax.preset("healthy"), *_TRPM6_MECHANISM, stronger)
    xml = to_sbml(model)
    assert "<ci> trpm6_insulin_coupling </ci>" not in xml  # the replaced law's parameter
    batched = mgjax.set_parameters(mgjax.preset("healthy"), {"egp_max": jnp.array([0.01, 0.02])})
    with pytest.raises(ExportError, match="egp_max.*one subject"):
        to_sbml(batched)


#: a mechanism taking (insulin_signal, xp): the insulin activation of TRPM6
_TRPM6_MECHANISM = ("renal_magnesium.trpm6_insulin_response",)


def _observations(model, protocol, times, names, options):
    traj = mgjax.simulate(model, protocol, jnp.asarray(times), options=options)
    return pd.DataFrame(
        [
            dict(time=t, observable=n, value=float(traj[n][i]), sigma=0.1)
            for i, t in enumerate(times)
            for n in names
        ]
    )


@pytest.mark.slow
def test_exported_petab_problem_simulates_as_mgjax(tmp_path):
    """mgjax's PEtab importer pre-equilibrates the exported model (protocol off: the clamp
    controller's states relax to their starts) and runs the protocol: every measurement
    equals `mgjax.simulate` at tight tolerances to 1e-8. (The dose schedules' equations are
    checked above; experiments/export/amici_check.py runs every protocol in AMICI.)"""
    model, protocol = mgjax.preset("t2dm"), HyperglycemicClamp()
    times = [2.0, 10.0, 60.0, 120.0]
    tight = SolverOptions(rtol=1e-10, atol=1e-12, max_steps=100_000, adjoint=dfx.ForwardMode())
    names = ["glucose", "insulin", "serum_mg", "homa_ir", "urinary_mg"]
    observed = _observations(model, protocol, times, names, tight)
    path = to_petab(model, protocol, observed, tmp_path, estimate=["egp_max"])
    problem = import_problem(path, options=tight)
    assert problem.free == ("egp_max",)
    h, sigma, ok = problem.simulate(jnp.asarray([float(model.glucose_insulin.egp_max)]))
    assert bool(ok)
    np.testing.assert_allclose(np.asarray(h), observed["value"].to_numpy(), rtol=1e-8)
    np.testing.assert_allclose(np.asarray(sigma), 0.1)


def test_bad_observations_get_one_clear_message(tmp_path):
    model = mgjax.preset("healthy")
    good = dict(time=0.0, observable="glucose", value=5.0)
    cases = [
        ([{**good, "observable": "glucos"}], "row 0: unknown observable 'glucos'"),
        ([good, {**good, "value": float("nan")}], "row 1, column value: not a finite number"),
        ([{"time": 0.0, "value": 5.0}], "lack the columns \\['observable'\\]"),
    ]
    for rows, message in cases:
        with pytest.raises(ExportError, match=message):
            to_petab(model, IVGTT(), pd.DataFrame(rows), tmp_path)
    with pytest.raises(ExportError, match="cannot estimate \\['nonsense'\\]"):
        to_petab(model, IVGTT(), pd.DataFrame([good]), tmp_path, estimate=["nonsense"])
