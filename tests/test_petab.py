"""PEtab import: the reference library's likelihood, the benchmark collection's numbers,
refusal of unsupported SBML by name, derivatives, and the `mgjax petab` contract."""

from __future__ import annotations

import json
from pathlib import Path

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

pytest.importorskip("petab")
import petab.v1 as petab  # noqa: E402
import petab_toy as toy  # noqa: E402

from mgjax.app._petab_job import simulation_table  # noqa: E402
from mgjax.petab import PetabError, UnsupportedSBMLError, import_problem  # noqa: E402
from mgjax.solve._solve import SolverOptions  # noqa: E402

PETAB = Path(__file__).parent / "data" / "petab"
BRANNMARK = PETAB / "Brannmark_JBC2010" / "Brannmark_JBC2010.yaml"
BOEHM = PETAB / "Boehm_JProteomeRes2014" / "Boehm_JProteomeRes2014.yaml"


@pytest.fixture(scope="module")
def toy_yaml(tmp_path_factory):
    return toy.write_problem(tmp_path_factory.mktemp("toy"))


def test_toy_matches_the_analytic_solution_and_calculate_llh(toy_yaml):
    problem = import_problem(toy_yaml)
    reference = petab.Problem.from_yaml(str(toy_yaml))
    table, stats = simulation_table(problem, reference, problem.nominal_values())
    exact = toy.analytic_simulations(reference.measurement_df, toy.TRUE)
    # step input, pre-equilibration, condition overrides of a parameter and a species, an
    # initial assignment, a compartment of size 2: all in the exact solution
    np.testing.assert_allclose(table["simulation"], exact, rtol=1e-6)
    simulations = reference.measurement_df.rename(columns={"measurement": "simulation"})
    simulations["simulation"] = table["simulation"].to_numpy()
    llh = petab.calculate_llh(
        reference.measurement_df, simulations, reference.observable_df, reference.parameter_df
    )
    assert stats["nllh"] == pytest.approx(-llh, rel=1e-12)
    simulations["simulation"] = exact
    llh_exact = petab.calculate_llh(
        reference.measurement_df, simulations, reference.observable_df, reference.parameter_df
    )
    assert stats["nllh"] == pytest.approx(-llh_exact, rel=1e-6)
    chi2 = petab.calculate_chi2(
        reference.measurement_df, simulations, reference.observable_df, reference.parameter_df
    )
    assert stats["chi2"] == pytest.approx(chi2, rel=1e-5)


@pytest.mark.parametrize("adjoint", ["forward", "reverse"])
def test_toy_gradient_matches_finite_differences(toy_yaml, adjoint):
    options = SolverOptions(
        rtol=1e-10,
        atol=1e-12,
        pcoeff=0.0,
        icoeff=1.0,
        max_steps=4096,
        adjoint=dfx.ForwardMode() if adjoint == "forward" else dfx.RecursiveCheckpointAdjoint(),
    )
    # pre-equilibration stops at |dx/dt| < atol + rtol·|x|: the derivative is that of the
    # state where it stopped, so the test asks for a steady state converged to 1e-12
    problem = import_problem(
        toy_yaml, options=options, lint=False, steady_state_rtol=1e-12, steady_state_atol=1e-14
    )
    u = problem.initial() + 0.1
    f = eqx.filter_jit(lambda p, u: p.negative_log_likelihood(u))
    grad_fn = jax.jacfwd if adjoint == "forward" else jax.grad
    grad = np.asarray(
        eqx.filter_jit(lambda p, u: grad_fn(p.negative_log_likelihood)(u))(problem, u)
    )
    h = 1e-5
    fd = np.asarray(
        [
            (f(problem, u.at[i].add(h)) - f(problem, u.at[i].add(-h))) / (2 * h)
            for i in range(u.shape[0])
        ]
    )
    assert np.all(np.abs(fd) > 1e-3), fd
    np.testing.assert_allclose(grad, fd, rtol=1e-5)


def _extra_event(m, libsbml):
    e = m.createEvent()
    e.setId("bolus")
    e.setUseValuesFromTriggerTime(True)
    trigger = e.createTrigger()
    trigger.setMath(libsbml.parseL3Formula("time > 1"))
    trigger.setPersistent(True)
    trigger.setInitialValue(False)
    a = e.createEventAssignment()
    a.setVariable("A")
    a.setMath(libsbml.parseL3Formula("A + 1"))


def _extra_algebraic(m, libsbml):
    p = m.createParameter()
    p.setId("z")
    p.setConstant(False)
    p.setValue(1.0)
    r = m.createAlgebraicRule()
    r.setMetaId("alg1")
    r.setMath(libsbml.parseL3Formula("z - A"))


def _extra_compartment_rate(m, libsbml):
    m.getCompartment("cell").setConstant(False)
    r = m.createRateRule()
    r.setVariable("cell")
    r.setMath(libsbml.parseL3Formula("0.1"))


def _extra_delay(m, libsbml):
    m.getReaction("bwd").getKineticLaw().setMath(
        libsbml.parseL3Formula("cell * k2 * delay(B, 0.5)")
    )


def _extra_state_switch(m, libsbml):
    m.getRule("u").setMath(libsbml.parseL3Formula("piecewise(1, A > 1, 0.5)"))


@pytest.mark.parametrize(
    "extra, element, sid",
    [
        (_extra_event, "event", "bolus"),
        (_extra_algebraic, "algebraicRule", "alg1"),
        (_extra_compartment_rate, "compartment", "cell"),
        (_extra_delay, "kineticLaw", "bwd"),
        (_extra_state_switch, "depends on a state", "A"),
    ],
)
def test_unsupported_sbml_is_refused_by_name(tmp_path, extra, element, sid):
    yaml_path = toy.write_problem(tmp_path, extra)
    with pytest.raises(UnsupportedSBMLError) as info:
        import_problem(yaml_path, lint=False)
    assert element in str(info.value) and repr(sid)[1:-1] in str(info.value)


def test_bad_tables_get_one_clear_message(tmp_path):
    yaml_path = toy.write_problem(tmp_path)
    frame = pd.read_csv(tmp_path / "measurements.tsv", sep="\t")
    frame.loc[3, "observableParameters"] = "no_such_parameter"
    frame.to_csv(tmp_path / "measurements.tsv", sep="\t", index=False)
    with pytest.raises(PetabError, match=r"measurement table, row 5.*no_such_parameter"):
        import_problem(yaml_path, lint=False)
    with pytest.raises(PetabError, match="no such PEtab problem file"):
        import_problem(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    "yaml_path, nllh",
    [(BRANNMARK, 141.888937), (BOEHM, 138.222000)],
    ids=["Brannmark_JBC2010", "Boehm_JProteomeRes2014"],
)
def test_benchmark_problems_match_the_collection_at_the_nominal_parameters(yaml_path, nllh):
    """NLLH = −petab.v1.calculate_llh of the collection's simulatedData (README there)."""
    problem = import_problem(yaml_path)
    reference = petab.Problem.from_yaml(str(yaml_path))
    table, stats = simulation_table(problem, reference, problem.nominal_values())
    assert stats["nllh"] == pytest.approx(nllh, abs=1e-3)
    expected = pd.read_csv(yaml_path.parent / f"simulatedData_{yaml_path.stem}.tsv", sep="\t")
    assert list(table["observableId"]) == list(expected["observableId"])
    np.testing.assert_allclose(table["simulation"], expected["simulation"], rtol=1e-4)


def test_cli_nominal_and_fit_contract(toy_yaml, tmp_path):
    from typer.testing import CliRunner

    from mgjax.app.cli import app

    runner = CliRunner()
    out = tmp_path / "nominal"
    result = runner.invoke(app, ["petab", str(toy_yaml), "--nominal", "--out", str(out)])
    assert result.exit_code == 0, result.output
    measurements = pd.read_csv(toy_yaml.parent / "measurements.tsv", sep="\t")
    sims = pd.read_csv(out / "simulations.tsv", sep="\t")
    assert "measurement" not in sims.columns and len(sims) == len(measurements)
    assert list(sims.columns) == [
        "simulation" if c == "measurement" else c for c in measurements.columns
    ]
    assert list(sims["observableId"]) == list(measurements["observableId"])
    summary = json.loads((out / "summary.json").read_text())
    assert {"nllh", "chi2"} <= set(summary)

    fit = tmp_path / "fit"
    result = runner.invoke(
        app,
        [
            "petab",
            str(toy_yaml),
            "--starts",
            "3",
            "--seed",
            "2",
            "--out",
            str(fit),
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    starts = pd.read_csv(fit / "multistart.csv")
    assert list(starts.columns) == ["start", "nllh", "converged", "iterations", "seconds"]
    assert len(starts) == 3
    summary = json.loads((fit / "summary.json").read_text())
    assert summary["best_nllh"] == pytest.approx(starts["nllh"].min())
    assert summary["best_nllh"] < summary_nominal(toy_yaml, tmp_path) - 1.0
    # the first start is a new best: its flat directions were explored, never for the worse
    explored = summary["explorations"]
    assert explored and explored[0]["start"] == 0
    for row in explored:
        assert row["nllh_after"] <= row["nllh_before"]
        assert row["nllh_after"] == pytest.approx(starts.loc[row["start"], "nllh"])
        # the start's count is its own fit's (at least one step) plus the exploration's fits'
        assert starts.loc[row["start"], "iterations"] > row["iterations"] >= row["fits"]
        assert row["fits"] >= row["rounds"]  # a round that lowered the NLLH ran a fit
        assert (row["rounds"] > 0) == (row["nllh_after"] < row["nllh_before"])
    best = pd.read_csv(fit / "best_parameters.tsv", sep="\t")
    assert list(best.columns) == ["parameterId", "estimate"]
    assert list(best["parameterId"]) == ["k1", "k2", "a0", "s", "sigma_a"]
    html = (fit / "report.html").read_text()
    assert "Multistart waterfall" in html and "data:image/png;base64" in html
    # an interrupted fit (two starts not finished) resumes: only those are fitted again
    for name in ("starts/start-00001.json", "starts/start-00002.json", "multistart.csv"):
        (fit / name).unlink()
    command = ["petab", str(toy_yaml), "--starts", "3", "--seed", "2", "--out", str(fit)]
    result = runner.invoke(app, [*command, "--no-progress", "--resume"])
    assert result.exit_code == 0, result.output
    assert "resuming: 1 of 3 starts already finished" in (fit / "run.log").read_text()
    resumed = pd.read_csv(fit / "multistart.csv")
    np.testing.assert_allclose(resumed["nllh"], starts["nllh"], rtol=1e-9)
    assert list(resumed["iterations"]) == list(starts["iterations"])
    other_seed = ["petab", str(toy_yaml), "--starts", "3", "--seed", "3", "--out", str(fit)]
    result = runner.invoke(app, [*other_seed, "--resume"])
    assert result.exit_code == 2 and "cannot resume with other settings (seed differ" in (
        " ".join(result.output.split())
    )
    # the engine's Levenberg–Marquardt/L-BFGS path through the bound transform, same contract
    engine = tmp_path / "engine"
    result = runner.invoke(
        app,
        [
            "petab",
            str(toy_yaml),
            "--starts",
            "1",
            "--seed",
            "2",
            "--max-steps",
            "50",
            "--optimiser",
            "levenberg_marquardt",
            "--out",
            str(engine),
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((engine / "summary.json").read_text())
    assert summary["best_nllh"] < summary_nominal(toy_yaml, tmp_path)
    assert len(pd.read_csv(engine / "best_parameters.tsv", sep="\t")) == 5
    result = runner.invoke(
        app, ["petab", str(toy_yaml), "--optimiser", "simplex", "--out", str(tmp_path / "y")]
    )
    assert result.exit_code == 2 and "unknown optimiser 'simplex'" in result.output
    result = runner.invoke(
        app, ["petab", str(toy_yaml), "--restarts", "-1", "--out", str(tmp_path / "z")]
    )
    assert result.exit_code == 2 and "restarts must be >= 0" in result.output
    # a bad problem: one message, exit code 2
    result = runner.invoke(
        app, ["petab", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "x")]
    )
    assert result.exit_code == 2 and "no such PEtab problem file" in result.output


def summary_nominal(toy_yaml, tmp_path):
    return json.loads((tmp_path / "nominal" / "summary.json").read_text())["nllh"]


def test_hierarchical_parameters_are_the_closed_form_optimum(toy_yaml):
    flat = import_problem(toy_yaml, lint=False)
    nested = import_problem(toy_yaml, lint=False, hierarchical=True)
    assert nested.inner_ids == ("s", "sigma_a") and nested.inner_kinds == ("scaling", "noise")
    assert nested.free == ("k1", "k2", "a0")

    @eqx.filter_jit
    def nllh(p, v):
        h, sigma, ok = p.simulate(v)
        return p.data_negative_log_likelihood(h, sigma, ok)

    outer = np.asarray(nested.nominal_values()) * np.array([1.3, 0.8, 1.1])
    everything = np.asarray(eqx.filter_jit(lambda p, v: p.all_estimates(v))(nested, outer))
    value = float(nllh(nested, outer))
    # the same likelihood as the flat problem at (outer, closed-form inner) …
    assert value == pytest.approx(float(nllh(flat, everything)), rel=1e-12)
    # … and no other scaling/noise value does better
    for factor_s, factor_sigma in [(1.05, 1.0), (0.95, 1.0), (1.0, 1.1), (1.0, 0.9), (1.2, 0.8)]:
        moved = everything * np.array([1, 1, 1, factor_s, factor_sigma])
        assert float(nllh(flat, moved)) > value


def _fit_options(rtol=1e-8, atol=1e-10):
    return SolverOptions(
        rtol=rtol, atol=atol, pcoeff=0.0, icoeff=1.0, max_steps=10_000, adjoint=dfx.ForwardMode()
    )


def test_fides_reaches_the_toys_optimum(toy_yaml):
    """The toy has Laplace noise (not least squares, and not smooth where a residual is 0):
    fides with the NLLH, its forward-mode gradient and BFGS. No coordinate step from its end
    point lowers the NLLH."""
    from mgjax.petab import fit_start
    from mgjax.petab._fides import _compiled

    problem = import_problem(toy_yaml, options=_fit_options(), lint=False, hierarchical=True)
    assert not problem.least_squares and problem.free == ("k1", "k2", "a0")
    nllh = _compiled()[2]

    def f(x):
        return float(nllh(problem, np.asarray(x, dtype=float))[0])

    nominal = np.asarray(problem.to_scale(problem.nominal_values()))
    fit = fit_start(problem, nominal + np.array([0.3, -0.3, 0.4]), max_steps=300)
    assert fit.converged, fit
    assert fit.nllh == pytest.approx(f(fit.scaled), rel=1e-12)
    for i in range(3):
        for step in (1e-3, -1e-3):
            assert f(fit.scaled + step * np.eye(3)[i]) >= fit.nllh - 1e-7, (i, step)
    assert fit.nllh < f(nominal)  # the data's optimum, not the truth


def test_fides_gauss_newton_reaches_boehms_optimum_and_stops_on_a_bound():
    """A least-squares problem (normal noise): fides with the Gauss–Newton Hessian JᵀJ of the
    residuals from three starts ±0.5 decades around the collection's optimum (138.222); with
    one upper bound below that optimum the fit ends on the bound, where moving inside raises
    the NLLH."""
    from mgjax.petab import fit_start
    from mgjax.petab._fides import _compiled

    problem = import_problem(BOEHM, options=_fit_options(), hierarchical=True)
    assert problem.least_squares
    nllh = _compiled()[2]
    nominal = np.asarray(problem.to_scale(problem.nominal_values()))
    rng = np.random.default_rng(0)
    starts = [nominal + rng.uniform(-0.5, 0.5, nominal.size) for _ in range(3)]
    for start in starts:
        fit = fit_start(problem, start)
        assert fit.converged, fit
        assert fit.nllh == pytest.approx(138.22200, abs=5e-3)

    k = 0  # Epo_degradation_BaF3, log10 scale
    cap = float(nominal[k]) - 0.3
    capped = eqx.tree_at(lambda p: p.upper, problem, problem.upper.at[k].set(10.0**cap))
    upper = np.asarray(capped.bounds_on_scale()[1])
    bounded = fit_start(capped, np.minimum(starts[0], upper - 0.1))
    assert bounded.converged, bounded
    # on the bound (fides' reflective steps keep iterates strictly feasible: ≤ 1e-8 inside)
    assert 0.0 <= upper[k] - bounded.scaled[k] < 1e-8
    assert np.all(bounded.scaled <= upper)
    inside = bounded.scaled - 1e-3 * np.eye(nominal.size)[k]
    assert float(nllh(capped, inside)[0]) > bounded.nllh + 1e-4
    assert bounded.nllh > 138.22200 + 0.1


def test_conservation_laws_are_found(toy_yaml):
    """The laws the implicit steady-state derivative uses: A + B in the toy (one reversible
    reaction); Brannmark's receptor (5 forms), IRS1 (2) and X (2) totals."""
    toy_laws = np.asarray(import_problem(toy_yaml, lint=False).model.conservation)
    np.testing.assert_allclose(np.abs(toy_laws), [[2**-0.5, 2**-0.5]], rtol=1e-10)
    problem = import_problem(BRANNMARK, lint=False)
    assert problem.model.state_ids == (
        "IR",
        "IRins",
        "IRp",
        "IRiP",
        "IRi",
        "IRS",
        "IRSiP",
        "X",
        "Xp",
    )
    laws = np.asarray(problem.model.conservation)
    assert laws.shape == (3, 9)
    totals = np.array([[1] * 5 + [0] * 4, [0] * 5 + [1, 1, 0, 0], [0] * 7 + [1, 1]], dtype=float)
    totals /= np.linalg.norm(totals, axis=1, keepdims=True)
    # every total lies in the span of the laws found (and they span nothing else: 3 = 3)
    np.testing.assert_allclose(np.linalg.norm(laws @ totals.T, axis=0), 1.0, rtol=1e-10)


def test_implicit_steady_state_derivative_matches_the_integrations(toy_yaml):
    """The pre-equilibrated steady state differentiated implicitly (∂f/∂x·dx* = −∂f/∂p·dp,
    conserved totals of x0) = differentiated through an integration converged to 1e-12."""
    options = _fit_options(rtol=1e-10, atol=1e-12)
    kwargs = dict(options=options, lint=False, steady_state_rtol=1e-12, steady_state_atol=1e-14)
    implicit = import_problem(toy_yaml, **kwargs)
    integrated = import_problem(toy_yaml, implicit_steady_state=False, **kwargs)
    assert implicit.model.conservation and integrated.model.conservation is None
    jacobian = eqx.filter_jit(lambda p, x: jax.jacfwd(p.residuals_on_scale)(x))
    x = np.asarray(implicit.to_scale(implicit.nominal_values())) + 0.1
    a, b = np.asarray(jacobian(implicit, x)), np.asarray(jacobian(integrated, x))
    assert np.abs(b).max() > 1e-2
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8 * np.abs(b).max())


def test_conservation_laws_that_depend_on_parameters_are_not_used():
    """A → B between compartments of sizes V1, V2 (concentrations): V1·a + V2·b is conserved,
    with weights that depend on the parameters — no fixed law explains the Jacobian's rank
    deficiency, so the steady state is differentiated through its integration (None). In
    one compartment the law a + b is found."""
    from mgjax.petab._problem import conservation_laws

    def between(t, x, p):  # p = (k, V1, V2)
        flux = p[0] * x[0] * p[1]
        return jnp.stack([-flux / p[1], flux / p[2]])

    def within(t, x, p):
        return jnp.stack([-p[0] * x[0], p[0] * x[0]])

    assert conservation_laws(between, 2, 3) is None
    np.testing.assert_allclose(np.abs(conservation_laws(within, 2, 3)), [[2**-0.5] * 2])


def _best_known(problem) -> np.ndarray:
    """Brannmark's best known optimum (vendored), linear values in `estimated_ids` order."""
    table = pd.read_csv(PETAB / "Brannmark_JBC2010_best_known.tsv", sep="\t")
    return table.set_index("parameterId").loc[list(problem.estimated_ids), "estimate"].to_numpy()


def test_brannmark_best_known_optimum():
    """Brannmark's best known optimum (tests/data/petab/Brannmark_JBC2010_best_known.tsv: the
    end point of pyPESTO + AMICI + fides from one uniform random start, AMICI's NLLH 141.825267
    at rtol 1e-8 / atol 1e-16): mgjax's NLLH there agrees within 1e-3 with all 22 parameters
    and with the hierarchical ones in closed form; fides from it converges at ≤ 141.8253; the
    straight line from the nominal point (141.889) to it crosses a ridge (142.44 at 0.8 of the
    way, hierarchical parameters in closed form): the way between them is a curved flat valley
    (see the flat-direction tests), not a straight line."""
    from mgjax.petab import fit_start
    from mgjax.petab._fides import _compiled

    nllh = _compiled()[2]
    for hierarchical in (False, True):
        problem = import_problem(BRANNMARK, options=_fit_options(), hierarchical=hierarchical)
        outer = [problem.estimated_ids.index(p) for p in problem.free]
        best = np.asarray(problem.to_scale(jnp.asarray(_best_known(problem)[outer])))
        value, ok = nllh(problem, best)
        assert bool(ok) and float(value) == pytest.approx(141.825267, abs=1e-3), hierarchical
    fit = fit_start(problem, best)  # hierarchical
    assert fit.converged and fit.nllh <= 141.8253, fit
    nominal = np.asarray(problem.to_scale(problem.nominal_values()))
    assert float(nllh(problem, nominal)[0]) == pytest.approx(141.889, abs=1e-3)
    ridge = max(float(nllh(problem, nominal + a * (best - nominal))[0]) for a in (0.7, 0.8, 0.9))
    assert ridge > 142.3


def test_fides_restarts_finish_in_a_narrow_valley():
    """Inside the best basin of Brannmark, fides stops on its function tolerance short of the
    floor's minimum; restarting from its own end point (a fresh trust region) goes on down.
    From points ±0.5 decades around the best known optimum (hierarchical): restarts never end
    higher, add up their iterations, and lower at least one end point by ≥ 5e-3."""
    from mgjax.petab import fit_start

    problem = import_problem(BRANNMARK, options=_fit_options(1e-6, 1e-10), hierarchical=True)
    best = np.log10(_best_known(problem))  # every Brannmark parameter is on the log10 scale
    lower, upper = (np.asarray(b) for b in problem.bounds_on_scale())
    outer = [problem.estimated_ids.index(p) for p in problem.free]
    rng = np.random.default_rng(5)
    points = [np.clip(best + rng.uniform(-0.5, 0.5, best.size), -99, 99) for _ in range(7)]
    gains = []
    for start in (points[5], points[6]):
        start = np.clip(start[outer], lower, upper)
        once = fit_start(problem, start)
        again = fit_start(problem, start, restarts=10)
        assert once.restarts == 0 and again.restarts >= 1
        assert again.iterations > once.iterations
        assert again.nllh <= once.nllh + 1e-9
        gains.append(once.nllh - again.nllh)
    assert max(gains) >= 5e-3, gains


def test_flat_directions_of_brannmarks_nominal_fit():
    """At Brannmark's nominal point (a fit: 141.889) the two flattest directions of the
    Gauss–Newton Hessian are k1g alone and k21 up with k22 down (their product kept), with
    eigenvalues ~1e-14 and ~1e-10 against > 1e4; along the second the NLLH stays within 0.005
    for ≥ 3.5 scale units (k21 2.5 decades up, k22 as much down: a practically
    non-identifiable plateau), then rises by 1 within 8 units; refining the walk's last step
    moves the edge outwards by less than that step, still within the rise."""
    from mgjax.petab._explore import _curvature, edge_of_flat_region, flat_directions

    problem = import_problem(BRANNMARK, options=_fit_options(1e-6, 1e-10), hierarchical=True)
    nominal = np.asarray(problem.to_scale(problem.nominal_values()))
    lower, upper = (np.asarray(b) for b in problem.bounds_on_scale())
    inside = (nominal > lower + 1e-6) & (nominal < upper - 1e-6)
    eigenvalues = np.linalg.eigvalsh(_curvature(problem, nominal)[np.ix_(inside, inside)])
    assert eigenvalues[1] < 1e-6 < 1.0 < eigenvalues[2] and eigenvalues[-1] > 1e4, eigenvalues
    first, second = flat_directions(problem, nominal, 2)
    named = dict(zip(problem.free, second))
    assert abs(first[problem.free.index("k1g")]) > 0.99
    assert abs(named["k21"] + named["k22"]) < 1e-3 and abs(named["k21"]) > 0.7
    second = second if named["k21"] > 0 else -second  # k21 up
    plateau = edge_of_flat_region(
        problem, nominal, 141.8893, second, rise=0.005, step=0.5, max_distance=12.0
    )
    assert plateau is not None and np.linalg.norm(plateau[0] - nominal) >= 3.5
    coarse, fine = (
        edge_of_flat_region(
            problem, nominal, 141.8893, second, rise=1.0, step=0.5, max_distance=12.0, **kw
        )
        for kw in ({}, {"resolution": 0.1})
    )
    assert coarse is not None and np.linalg.norm(coarse[0] - nominal) < 8.0 and coarse[1] > 142.0
    distance = np.linalg.norm(fine[0] - nominal) - np.linalg.norm(coarse[0] - nominal)
    assert 0.0 <= distance < 0.5 and coarse[1] <= fine[1] <= 142.8893


def test_exploring_flat_directions_reaches_brannmarks_best_optimum():
    """fides from Brannmark's nominal point stays there (141.889); exploring the flat
    directions of that fit ends at the best known optimum (≤ 141.835), which its Laplace
    curvature does not see."""
    from mgjax.petab import explore_flat_directions, fit_start

    problem = import_problem(BRANNMARK, options=_fit_options(1e-6, 1e-10), hierarchical=True)
    nominal = np.asarray(problem.to_scale(problem.nominal_values()))
    fit = fit_start(problem, nominal, restarts=10)
    assert fit.nllh == pytest.approx(141.889, abs=2e-3)
    found = explore_flat_directions(problem, fit.scaled, fit.nllh, restarts=10)
    assert found.nllh <= 141.835 and found.rounds >= 1 and found.fits >= found.rounds, found
    assert list(found.trail) == sorted(found.trail, reverse=True) and found.trail[-1] == found.nllh
    best = np.log10(_best_known(problem))[[problem.estimated_ids.index(p) for p in problem.free]]
    assert abs(found.scaled[problem.free.index("k21")] - best[problem.free.index("k21")]) < 1.0
