#!/usr/bin/env python
"""Peer benchmark: fit every subject of a PEtab v1 cohort with AMICI + fides.

The cohort directory holds one PEtab v1 problem per subject (``<subject>/
<subject>.yaml``) plus ``starts.json`` (subject -> {parameterId: linear start
value}) and ``nll_start.json`` (subject -> the exporting tool's negative
log-likelihood at that start).  All subjects share one model structure, so the
AMICI model is generated and compiled ONCE and the compiled module is reused
for every subject; subject-specific values enter only through each subject's
own PEtab tables (parameter table nominal values of non-estimated parameters,
measurements, noise parameters), which AMICI sets at simulation time.

Subject-specific numbers inside the SBML math
---------------------------------------------
The exported SBML files may differ not only in parameter *values* (which the
PEtab parameter table overrides) but also in numeric literals inside the math
(e.g. a clamp target glucose written as ``<cn> 5.096729 </cn>``).  A literal
is compiled into the C++ code, so compiling once would silently use the first
subject's literal for everybody.  ``parametrise_subject_literals`` therefore
checks that all SBML files have identical math up to numeric literals, and
replaces every literal whose value differs between subjects by a new constant
SBML parameter (``subject_literal_<k>``, one per distinct column of values),
which is added to every subject's parameter table as a non-estimated
parameter with that subject's value.  If no literal differs this is a no-op.
The SBML initial values of the states also differ between subjects and are
compiled in from the first subject; this is harmless because every
measurement is simulated after pre-equilibration to the (unique) steady state
under ``fasting_rest``, which is why the steady-state tolerances below are
tight.  The check at the start point (``nll_start_peer`` vs
``nll_start_mgjax``) verifies that every subject is simulated with its own
values.

Per subject the objective is pyPESTO's AMICI objective (negative
log-likelihood incl. the 0.5*log(2*pi*sigma^2) terms, gradient from forward
sensitivities, Fisher information matrix from the same sensitivities) built by
``pypesto.petab.PetabImporter``; it is minimised with ``fides.Optimizer``
(the call ``pypesto.optimize.FidesOptimizer`` makes, used directly so that the
iteration count is available) from the start in ``starts.json`` on the PEtab
parameter scale, within the PEtab bounds.  Pre-equilibration uses Newton's
method (integration if Newton fails) and steady-state sensitivities from the
implicit function theorem (see ``configure``).  ``estimate_<id>`` columns of
the output CSV hold linear (unscaled) parameter values; ``seconds`` is the
wall time of the fit only (no compilation, no start check).

Usage (with the AMICI venv's python):
    python peer_fit.py COHORT_DIR OUTPUT_CSV [--build-dir DIR] [--maxiter 200]
        [--hessian fim|hybrid|bfgs] [--subjects s0000 s0003 ...]
        [--skip-compile]   # with --build-dir: reuse an earlier compilation

Requires only: amici (>= 1.0), pypesto (>= 0.7), fides, petab, python-libsbml,
numpy, pandas.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

import amici
import fides
import libsbml
import numpy as np
import pandas as pd
import petab.v1 as petab_v1
import pypesto
from amici.importers.petab.v1 import import_petab_problem
from amici.sim.sundials import (
    SensitivityMethod,
    SensitivityOrder,
    SteadyStateSensitivityMode,
)
from amici_settings import ATOL, petab_problems, set_tolerances  # this folder (AMICI venv)
from petab.v1.models.sbml_model import SbmlModel
from pypesto.C import MODE_FUN
from pypesto.petab import PetabImporter

# AMICI 1.0 sets its simulation logger to DEBUG on import; keep warnings only.
logging.getLogger("amici.sim.sundials").setLevel(logging.WARNING)
logging.getLogger("amici").setLevel(logging.WARNING)
logging.getLogger("pypesto").setLevel(logging.WARNING)
logging.getLogger("petab.v1.lint").setLevel(logging.ERROR)  # no vis. table

MODEL_NAME = "peer_cohort_model"  # python module name of the compiled model
LITERAL_PREFIX = "subject_literal_"

# AMICI solver settings (CVODES, forward sensitivities).
RTOL = 1e-8


# --------------------------------------------------------------------------
# template SBML
# --------------------------------------------------------------------------
def _math_elements(model: libsbml.Model) -> list:
    """All SBML elements carrying MathML, in document order."""
    return [
        el for el in model.getListOfAllElements() if hasattr(el, "isSetMath") and el.isSetMath()
    ]


def _ast_nodes(ast: libsbml.ASTNode) -> list:
    """Nodes of a MathML AST in pre-order."""
    stack, out = [ast], []
    while stack:
        node = stack.pop()
        out.append(node)
        stack.extend(node.getChild(i) for i in reversed(range(node.getNumChildren())))
    return out


def _math_signature(model: libsbml.Model) -> tuple[list, list[float]]:
    """Structure of all math with numbers masked, and the numbers."""
    signature, numbers = [], []
    for el in _math_elements(model):
        target = el.getVariable() if hasattr(el, "getVariable") else ""
        signature.append((el.getTypeCode(), el.getId(), target))
        for node in _ast_nodes(el.getMath()):
            if node.isNumber():
                signature.append("#")
                numbers.append(node.getValue())
            else:
                signature.append((node.getType(), node.getName() or ""))
    return signature, numbers


def parametrise_subject_literals(
    problems: dict[str, petab_v1.Problem],
) -> dict[str, dict[str, float]]:
    """Replace subject-specific numeric literals by constant parameters.

    Modifies ``problems`` in place: every problem gets the same template SBML
    model (the first subject's, with varying literals replaced by parameters
    ``subject_literal_<k>``) and one non-estimated parameter-table row per new
    parameter holding the subject's own value.  Returns
    {subject: {new parameter id: value}} (empty dicts if nothing varies).
    """
    subjects = list(problems)
    signatures, numbers = {}, {}
    for s in subjects:
        signatures[s], numbers[s] = _math_signature(problems[s].sbml_model)
    ref = subjects[0]
    for s in subjects[1:]:
        if signatures[s] != signatures[ref]:
            raise ValueError(
                f"SBML math of {s} differs structurally from {ref}; "
                "the model cannot be compiled once for the whole cohort"
            )
    values = np.array([numbers[s] for s in subjects])  # subjects x literals
    varying = np.flatnonzero((values != values[0]).any(axis=0))

    # one new parameter per distinct column of subject values
    columns: dict[tuple, str] = {}
    literal_param = {}  # literal index -> parameter id
    for k in varying:
        key = tuple(values[:, k])
        if key not in columns:
            columns[key] = f"{LITERAL_PREFIX}{len(columns) + 1}"
        literal_param[k] = columns[key]
    per_subject = {
        s: {pid: float(key[i]) for key, pid in columns.items()} for i, s in enumerate(subjects)
    }
    if not columns:
        return per_subject

    # template: the first subject's SBML with the literals replaced
    doc = problems[ref].sbml_document.clone()
    model = doc.getModel()
    k = 0
    for el in _math_elements(model):
        ast = el.getMath().deepCopy()
        for node in _ast_nodes(ast):
            if node.isNumber():
                if k in literal_param:
                    node.setType(libsbml.AST_NAME)
                    node.setName(literal_param[k])
                k += 1
        el.setMath(ast)
    for pid, value in per_subject[ref].items():
        par = model.createParameter()
        par.setId(pid)
        par.setValue(value)
        par.setConstant(True)
    template_xml = libsbml.writeSBMLToString(doc)

    for s, problem in problems.items():
        problem.model = SbmlModel.from_string(template_xml)
        rows = pd.DataFrame(
            {
                petab_v1.PARAMETER_ID: list(per_subject[s]),
                petab_v1.PARAMETER_SCALE: petab_v1.LIN,
                petab_v1.LOWER_BOUND: np.nan,  # not estimated: no bounds
                petab_v1.UPPER_BOUND: np.nan,
                petab_v1.NOMINAL_VALUE: list(per_subject[s].values()),
                petab_v1.ESTIMATE: 0,
            }
        ).set_index(petab_v1.PARAMETER_ID)
        problem.parameter_df = pd.concat([problem.parameter_df, rows])
    return per_subject


# --------------------------------------------------------------------------
# objective and fit
# --------------------------------------------------------------------------
def configure(model, solver) -> None:
    """Solver settings: forward sensitivities, Newton pre-equilibration.

    AMICI 1.0's defaults find the pre-equilibration steady state, and its
    sensitivities, by long-time integration only (SteadyStateComputationMode
    and SteadyStateSensitivityMode ``integrationOnly``); with sensitivities
    that is slow here and sometimes fails to converge.  As PEtab prescribes
    we use Newton's method (integration only if Newton fails) and the
    steady-state sensitivities from the implicit function theorem
    (``newtonOnly``: solve J sx = -df/dp at the steady state).
    """
    set_tolerances(model, solver, RTOL)
    model.set_steady_state_sensitivity_mode(SteadyStateSensitivityMode.newtonOnly)
    solver.set_sensitivity_method(SensitivityMethod.forward)
    solver.set_sensitivity_order(SensitivityOrder.first)


def create_problem(importer: PetabImporter) -> pypesto.Problem:
    """pyPESTO problem with AMICI objective from the already compiled model."""
    creator = importer.create_objective_creator()
    model = creator.create_model(force_compile=False, verbose=False)
    solver = model.create_solver()
    configure(model, solver)
    # the objective (and pypesto.Problem) keep clones with these settings
    objective = creator.create_objective(model=model, solver=solver)
    problem = importer.create_problem(objective)
    assert (
        problem.objective.amici_model.get_steady_state_sensitivity_mode()
        == SteadyStateSensitivityMode.newtonOnly
    )
    return problem


def start_vector(problem: pypesto.Problem, petab_problem, start: dict):
    """Linear start values -> free parameter vector on the PEtab scale."""
    free_ids = [problem.x_names[i] for i in problem.x_free_indices]
    if set(free_ids) != set(start):
        raise ValueError(f"start {sorted(start)} != estimated {free_ids}")
    scales = petab_problem.parameter_df[petab_v1.PARAMETER_SCALE]
    return free_ids, np.array([petab_v1.scale(start[p], scales[p]) for p in free_ids])


def hessian_update(name: str):
    """fides Hessian approximation: None = use the objective's FIM."""
    return {
        "fim": None,  # Gauss-Newton: FIM from forward sensitivities
        "hybrid": fides.HybridFixed(),  # pyPESTO's default: FIM, then BFGS
        "bfgs": fides.BFGS(),
    }[name]


def fit(problem: pypesto.Problem, x0: np.ndarray, maxiter: int, hess: str):
    """One local fides fit; returns the fides.Optimizer after minimize."""
    happ = hessian_update(hess)
    needs_hess = happ is None or happ.requires_hess
    opt = fides.Optimizer(
        fun=problem.objective,
        funargs={
            "mode": MODE_FUN,
            "sensi_orders": (0, 1, 2) if needs_hess else (0, 1),
        },
        lb=problem.lb,
        ub=problem.ub,
        hessian_update=happ,
        options={fides.Options.MAXITER: maxiter},
        verbose=logging.WARNING,
    )
    try:
        opt.minimize(x0)
        message = opt.exitflag.name
    except RuntimeError as err:  # e.g. simulation failure at the start
        message = f"error: {err}"
    return opt, message


# exit flags that mean "converged" in fides
CONVERGED = {fides.ExitFlag.FTOL, fides.ExitFlag.XTOL, fides.ExitFlag.GTOL}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("cohort_dir", type=Path)
    parser.add_argument("output_csv", type=Path)
    parser.add_argument(
        "--build-dir",
        type=Path,
        default=None,
        help="where to put the generated model code "
        "(default: a temporary directory, removed afterwards)",
    )
    parser.add_argument("--maxiter", type=int, default=200)
    parser.add_argument("--hessian", choices=["fim", "hybrid", "bfgs"], default="fim")
    parser.add_argument(
        "--verify-rtol",
        type=float,
        default=1e-5,
        help="tolerance of the start-NLL check against nll_start.json",
    )
    parser.add_argument("--subjects", nargs="*", default=None)
    parser.add_argument(
        "--skip-compile",
        action="store_true",
        help="reuse a model compiled by an earlier run into --build-dir "
        "(no compile time is measured then)",
    )
    args = parser.parse_args()

    starts = json.loads((args.cohort_dir / "starts.json").read_text())
    nll_ref = json.loads((args.cohort_dir / "nll_start.json").read_text())
    subjects = petab_problems(args.cohort_dir)
    if args.subjects:
        subjects = [(s, y) for s, y in subjects if s in args.subjects]
    print(
        f"AMICI {amici.__version__}, pyPESTO {pypesto.__version__}, "
        f"fides {fides.__version__}, petab {petab_v1.__version__}; "
        f"{len(subjects)} subjects; rtol={RTOL:g} atol={ATOL:g}; "
        f"hessian={args.hessian}, maxiter={args.maxiter}",
        flush=True,
    )

    problems = {s: petab_v1.Problem.from_yaml(yaml_path) for s, yaml_path in subjects}
    literals = parametrise_subject_literals(problems)
    first = next(iter(problems))
    if literals[first]:
        print(
            f"subject-specific SBML literals made parameters: "
            f"{ {p: len(set(v[p] for v in literals.values())) for p in literals[first]} } "
            "(parameter: number of distinct values)"
        )

    build_dir = args.build_dir or Path(tempfile.mkdtemp(prefix="peer_fit_"))
    build_dir.mkdir(parents=True, exist_ok=True)
    model_dir = build_dir / MODEL_NAME

    # --- compile ONCE (from the first subject) --------------------------
    t_compile = math.nan
    if not (args.skip_compile and args.build_dir):
        t0 = time.perf_counter()
        import_petab_problem(
            problems[first],
            output_dir=model_dir,
            model_name=MODEL_NAME,
            compile_=True,
            verbose=logging.WARNING,
        )
        t_compile = time.perf_counter() - t0
        print(f"compile (once, from {first}): {t_compile:.1f} s", flush=True)

    # --- per subject: verify start NLL, then fit ------------------------
    rows = []
    for s, petab_problem in problems.items():
        # same output folder and model name: the compiled module is reused
        importer = PetabImporter(petab_problem, output_folder=str(model_dir), model_name=MODEL_NAME)
        problem = create_problem(importer)
        free_ids, x0 = start_vector(problem, petab_problem, starts[s])
        if np.any(x0 < problem.lb) or np.any(x0 > problem.ub):
            print(f"  warning: start of {s} outside the bounds")

        nll_start = float(problem.objective(x0))
        rel = abs(nll_start - nll_ref[s]) / abs(nll_ref[s])

        t0 = time.perf_counter()
        opt, message = fit(problem, x0, args.maxiter, args.hessian)
        seconds = time.perf_counter() - t0

        x_lin = {
            p: petab_v1.unscale(x, petab_problem.parameter_df.loc[p, petab_v1.PARAMETER_SCALE])
            for p, x in zip(free_ids, opt.x_min)
        }
        row = {
            "subject": s,
            "nll_start_peer": nll_start,
            "nll_start_mgjax": nll_ref[s],
            "nll_final": float(opt.fval_min),
            "seconds": seconds,
            "iterations": int(opt.iteration),
            "exit": message,
            **{f"estimate_{p}": x_lin[p] for p in sorted(free_ids)},
        }
        rows.append(row)
        flag = "OK " if rel <= args.verify_rtol else "BAD"
        print(
            f"{s}: start NLL {nll_start:.8g} vs {nll_ref[s]:.8g} "
            f"(rel {rel:.1e} {flag}) -> final {row['nll_final']:.8g} "
            f"in {seconds:.1f} s, {row['iterations']} it, {message}, "
            f"|grad| {np.linalg.norm(opt.grad_min):.1e}",
            flush=True,
        )

    if args.build_dir is None:
        shutil.rmtree(build_dir, ignore_errors=True)

    df = pd.DataFrame(rows)
    args.output_csv.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.output_csv, index=False)

    rel = (df.nll_start_peer - df.nll_start_mgjax).abs() / df.nll_start_mgjax.abs()
    converged = df.exit.isin([f.name for f in CONVERGED]).sum()
    print(
        f"\ncompile time (once): {t_compile:.1f} s\n"
        f"total fit wall time: {df.seconds.sum():.1f} s "
        f"(median {df.seconds.median():.1f} s per subject)\n"
        f"start-NLL check: max relative difference {rel.max():.2e} "
        f"({(rel <= args.verify_rtol).sum()}/{len(df)} within "
        f"{args.verify_rtol:g})\n"
        f"converged exits: {converged}/{len(df)}\n"
        f"wrote {args.output_csv}"
    )
    return 0 if (rel <= args.verify_rtol).all() else 1


if __name__ == "__main__":
    sys.exit(main())
