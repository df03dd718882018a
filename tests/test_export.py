"""The SBML / PEtab export: the written equations are the model's own (read back by mgjax's SBML
importer and compared with the JAX vector field), and an exported PEtab problem, imported by
mgjax's PEtab importer, simulates what `mgjax.simulate` does (pre-equilibration included)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
import sympy as sp

pytest.importorskip("libsbml")

import diffrax as dfx  # noqa: E402

import mgjax  # noqa: E402
from mgjax import MgT2DModel  # noqa: E402
from mgjax.petab import (  # noqa: E402
    ExportError,
    import_problem,
    problem_to_petab,
    read_sbml,
    to_petab,
    to_sbml,
)
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

MG_GUT = mgjax.MgT2DModel.state_names().index("gut_mg")

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
    n_model, n_dynamic = len(MgT2DModel.state_names()), len(MgT2DModel.dynamic_state_names())
    assert ode.states[:n_model] == list(MgT2DModel.state_names())
    assert ode.states[n_model:] == list(protocol.controller_state_names)
    rest = mgjax.steady_state(model, mgjax.Inputs.zeros())
    np.testing.assert_allclose(x0[:n_dynamic], np.asarray(rest.y)[:n_dynamic], rtol=1e-12)
    p = np.array(ode.parameter_values)
    rng = np.random.default_rng(0)
    for t in (0.5, 1.5, 3.0, 8.0, 22.0, 75.0, 1460.0):
        x = x0 * (1.0 + 0.05 * rng.standard_normal(x0.size))
        exported = np.array(rhs(t, x, p), dtype=float)
        native = np.asarray(coupled_rates(model, protocol, t, jnp.asarray(x), jnp))
        # relative 1e-9, or rounding next to a state's own size where a rate is ~0
        bound = 1e-9 * np.abs(native) + 1e-13 * np.abs(x) + 1e-15
        assert np.all(np.abs(exported - native) <= bound), (name, t)


def test_protocol_magnitudes_are_named_parameters(tmp_path):
    """A protocol's doses and targets are SBML parameters (a PEtab condition may set them):
    doubling `protocol_dose` in the exported trial is doubling the trial's dose."""
    model = mgjax.preset("t2dm")
    trial = OralMagnesiumTrial.daily(10.0, 1)
    ode, rhs, x0 = _read_back(tmp_path, model, trial)
    assert {"protocol_dose", "protocol_bioavailability"} <= set(ode.parameters)
    p = np.array(ode.parameter_values)
    p[ode.parameters.index("protocol_dose")] *= 2.0
    doubled = OralMagnesiumTrial.daily(20.0, 1)
    for t in (65.0, 1500.0):
        exported = np.array(rhs(t, x0, p), dtype=float)
        native = np.asarray(coupled_rates(model, doubled, t, jnp.asarray(x0), jnp))
        bound = 1e-9 * np.abs(native) + 1e-13 * np.abs(x0) + 1e-15  # rates ~0 at rest
        assert np.all(np.abs(exported - native) <= bound), t
        if t == 65.0:  # during the first dose: the gut fills
            assert exported[MG_GUT] > 1e-6
    clamp_ode, _, _ = _read_back(tmp_path, model, HyperinsulinemicClamp(insulin_rate=80.0))
    values = dict(zip(clamp_ode.parameters, clamp_ode.parameter_values))
    assert values["protocol_insulin_rate"] == 80.0 and values["controller_integral_gain"] == 1.5
    assert "protocol_target_glucose" not in values  # NaN: the subject's own fasting glucose


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


def test_export_command_writes_valid_petab_problems(tmp_path):
    """`mgjax export`: one PEtab problem per preset × protocol, valid for the reference PEtab
    linter, the estimated parameters as asked, the preset's own simulation as measurements."""
    from typer.testing import CliRunner

    from mgjax.app.cli import app

    out = tmp_path / "export"
    args = ["export", "--out", str(out), "simulate.presets=[t2dm]", "--estimate", "egp_max"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    path = out / "t2dm_hyperinsulinemic_clamp" / "t2dm_hyperinsulinemic_clamp.yaml"
    problem = import_problem(path)  # the PEtab linter runs first
    assert problem.free == ("egp_max",)
    measurements = pd.read_csv(path.parent / "measurements.tsv", sep="\t")
    assert len(measurements) > 20 and set(measurements["preequilibrationConditionId"]) == {
        "fasting_rest"
    }
    args = ["export", "--out", str(tmp_path / "bad"), "--estimate", "nonsense"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "cannot estimate ['nonsense']" in result.output
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_a_subjects_fit_problem_exported_to_petab_is_the_same_likelihood(tmp_path):
    """A synthetic subject's fit problem (hyperinsulinaemic clamp + fasting labs, five free
    parameters, the cohort's error model) as a PEtab problem: imported by mgjax's PEtab
    importer, at a point away from the start (so pre-equilibration moves the state and the
    clamp controller's start), every prediction equals mgjax's to 1e-7 and the negative
    log-likelihoods agree. (experiments/benchmarks/peer/amici_check.py runs every protocol in AMICI.)"""
    from mgjax import batch
    from mgjax.synth import COHORT_PARAMETERS, cohort_error_models, synthesize

    cohort = synthesize(1, seed=0)
    cohort.write(tmp_path / "data")
    dataset = mgjax.load_dataset(tmp_path / "data")
    errors = cohort_error_models(sorted(dataset.observations["observable"].unique()))
    group = batch.build_batches(dataset, COHORT_PARAMETERS, error_models=errors)[0]
    tight = SolverOptions(rtol=1e-10, atol=1e-12, max_steps=100_000, adjoint=dfx.ForwardMode())
    problem = eqx.tree_at(lambda p: p.options, jax.tree.map(jnp.asarray, group.one(0)), tight)
    assert {type(e.protocol).__name__ for e in problem.experiments} == {
        "Fasting",
        "HyperinsulinemicClamp",
    }
    path = problem_to_petab(problem, tmp_path / "petab", name="s0")
    imported = import_problem(path, options=tight, steady_state_rtol=1e-14)
    values = problem.to_values(problem.initial()) * jnp.array([1.3, 0.8, 1.2, 0.9, 1.1])
    order = [problem.free.index(name) for name in imported.free]
    h, sigma, ok = imported.simulate(values[jnp.asarray(order)])
    assert bool(ok)
    u = problem.from_values(values)
    preds, solved = problem.predictions(u)
    mine = np.concatenate(
        [np.asarray(p)[np.asarray(e.mask)] for p, e in zip(preds, problem.experiments)]
    )
    assert bool(solved) and mine.size == np.asarray(h).size
    np.testing.assert_allclose(np.asarray(h), mine, rtol=1e-7)
    nllh = float(imported.data_negative_log_likelihood(h, sigma, ok))
    assert nllh == pytest.approx(float(problem.negative_log_likelihood(u)), rel=1e-7)


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
