"""A hand-checkable PEtab problem (SBML built with libsbml) and its analytic solution.

Model: A ⇌ B in compartment `cell` (size 2, species in concentration), forward rate
cell·k1·u·A with a step input u = piecewise(1 if time ≥ t_on else 0.5), backward cell·k2·B;
A's initial value by an initial assignment A = 2·a0. Condition `c1` sets t_on = 1 and B = 0.2
and is pre-equilibrated under `pre` (t_on = 1e9: u = 0.5 throughout).
Observables: obsA = s·A (scaling override, noise σ_a, lin, normal);
obsB = B + offset (numeric override, noise σ_b, log10, Laplace).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

TRUE = dict(k1=0.8, k2=0.3, a0=1.5, s=2.0, sigma_a=0.1, sigma_b=0.05, t_on=2.0)


def write_sbml(path: Path, extra=None) -> None:
    import libsbml

    doc = libsbml.SBMLDocument(3, 2)
    m = doc.createModel()
    m.setId("toy")
    c = m.createCompartment()
    c.setId("cell")
    c.setSize(2.0)
    c.setConstant(True)
    for sid, value in (("A", 1.0), ("B", 0.0)):
        s = m.createSpecies()
        s.setId(sid)
        s.setCompartment("cell")
        s.setInitialConcentration(value)
        s.setHasOnlySubstanceUnits(False)
        s.setBoundaryCondition(False)
        s.setConstant(False)
    for pid, value, constant in (
        ("k1", TRUE["k1"], True),
        ("k2", TRUE["k2"], True),
        ("a0", TRUE["a0"], True),
        ("t_on", TRUE["t_on"], True),
        ("u", 0.5, False),
    ):
        p = m.createParameter()
        p.setId(pid)
        p.setValue(value)
        p.setConstant(constant)
    rule = m.createAssignmentRule()
    rule.setVariable("u")
    rule.setMath(libsbml.parseL3Formula("piecewise(1, time >= t_on, 0.5)"))
    ia = m.createInitialAssignment()
    ia.setSymbol("A")
    ia.setMath(libsbml.parseL3Formula("2 * a0"))
    for rid, a, b, law in (
        ("fwd", "A", "B", "cell * k1 * u * A"),
        ("bwd", "B", "A", "cell * k2 * B"),
    ):
        r = m.createReaction()
        r.setId(rid)
        r.setReversible(False)
        r.setFast(False)
        ref = r.createReactant()
        ref.setSpecies(a)
        ref.setStoichiometry(1)
        ref.setConstant(True)
        ref = r.createProduct()
        ref.setSpecies(b)
        ref.setStoichiometry(1)
        ref.setConstant(True)
        r.createKineticLaw().setMath(libsbml.parseL3Formula(law))
    if extra is not None:
        extra(m, libsbml)
    libsbml.writeSBMLToFile(doc, str(path))


def write_problem(folder: Path, extra=None) -> Path:
    """Write the toy PEtab problem into `folder`; returns its YAML path."""
    folder.mkdir(parents=True, exist_ok=True)
    write_sbml(folder / "model.xml", extra)
    pd.DataFrame(
        dict(
            conditionId=["c0", "c1", "pre"], t_on=[TRUE["t_on"], 1.0, 1e9], B=[np.nan, 0.2, np.nan]
        )
    ).to_csv(folder / "conditions.tsv", sep="\t", index=False)
    pd.DataFrame(
        dict(
            observableId=["obsA", "obsB"],
            observableFormula=["observableParameter1_obsA * A", "B + observableParameter1_obsB"],
            noiseFormula=["noiseParameter1_obsA", "noiseParameter1_obsB"],
            observableTransformation=["lin", "log10"],
            noiseDistribution=["normal", "laplace"],
        )
    ).to_csv(folder / "observables.tsv", sep="\t", index=False)
    rows = []
    values = iter(np.linspace(0.5, 3.0, 40))
    for cond, pre in (("c0", ""), ("c1", "pre")):
        for t in (0.0, 0.5, 1.5, 3.0, 5.0):
            rows.append(("obsA", pre, cond, next(values), t, "s", "sigma_a"))
        for t in (0.5, 2.5, 4.0):
            rows.append(("obsB", pre, cond, next(values) / 3, t, "0.1", "sigma_b"))
    pd.DataFrame(
        rows,
        columns=[
            "observableId",
            "preequilibrationConditionId",
            "simulationConditionId",
            "measurement",
            "time",
            "observableParameters",
            "noiseParameters",
        ],
    ).to_csv(folder / "measurements.tsv", sep="\t", index=False)
    pd.DataFrame(
        dict(
            parameterId=["k1", "k2", "a0", "s", "sigma_a", "sigma_b"],
            parameterScale=["log10", "log10", "lin", "log10", "log10", "log"],
            lowerBound=[1e-3, 1e-3, 0.1, 0.1, 1e-3, 1e-3],
            upperBound=[1e3, 1e3, 10.0, 100.0, 10.0, 10.0],
            nominalValue=[TRUE[k] for k in ("k1", "k2", "a0", "s", "sigma_a", "sigma_b")],
            estimate=[1, 1, 1, 1, 1, 0],
        )
    ).to_csv(folder / "parameters.tsv", sep="\t", index=False)
    (folder / "problem.yaml").write_text(
        "format_version: 1\nparameter_file: parameters.tsv\nproblems:\n"
        "- condition_files: [conditions.tsv]\n  measurement_files: [measurements.tsv]\n"
        "  observable_files: [observables.tsv]\n  sbml_files: [model.xml]\n"
    )
    return folder / "problem.yaml"


def analytic_states(t: float, a_start: float, b_start: float, k1: float, k2: float, t_on: float):
    """A(t), B(t) of the reversible reaction with the step input (exact)."""

    def relax(a, b, u, dt):
        total, rate = a + b, k1 * u + k2
        a_eq = total * k2 / rate
        a_new = a_eq + (a - a_eq) * math.exp(-rate * dt)
        return a_new, total - a_new

    if t <= t_on:
        return relax(a_start, b_start, 0.5, t)
    a, b = relax(a_start, b_start, 0.5, t_on)
    return relax(a, b, 1.0, t - t_on)


def analytic_simulations(measurements: pd.DataFrame, p: dict) -> np.ndarray:
    """The observables of every measurement row, from the analytic solution."""
    out = []
    total_pre = 2 * p["a0"]
    a_pre = total_pre * p["k2"] / (p["k1"] * 0.5 + p["k2"])
    for _, row in measurements.iterrows():
        if row["simulationConditionId"] == "c0":
            a0, b0, t_on = 2 * p["a0"], 0.0, p["t_on"]
        else:
            a0, b0, t_on = a_pre, 0.2, 1.0
        a, b = analytic_states(float(row["time"]), a0, b0, p["k1"], p["k2"], t_on)
        out.append(p["s"] * a if row["observableId"] == "obsA" else b + 0.1)
    return np.asarray(out)
