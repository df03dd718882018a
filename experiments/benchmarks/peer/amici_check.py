#!/usr/bin/env python
"""Cross-check exported PEtab v1 problems against AMICI.

Each sub-directory of PROBLEMS_DIR holding a PEtab v1 YAML file is one problem.
The problem is imported with AMICI's PEtab v1 importer (SBML -> C++ model,
compiled), then simulated with AMICI's ``simulate_petab`` at the PEtab nominal
parameter values.  Pre-equilibration (``preequilibrationConditionId``) is done
by AMICI as PEtab prescribes: steady state under the pre-equilibration
condition (Newton's method, falling back to long-time integration), then
simulation from that state under the simulation condition.

The ``measurement`` column of the exported problems is the exporting tool's
own simulation (rtol 1e-10), so AMICI's simulated observable should equal it.
We report, per problem, the maximum relative difference
|simulation - measurement| / |measurement| over all measurement rows,
AMICI import+compile time (SBML -> C++ code generation with sympy, then C++
compilation) and simulation time (wall time of one ``simulate_petab`` call,
best of N_SIM_REPEATS, including PEtab parameter mapping and ExpData set-up).

Usage (with the AMICI venv's python):
    python amici_check.py PROBLEMS_DIR [--build-dir DIR] [--tol 1e-6]

Exit status 1 if any problem fails or its max relative difference > --tol.

Requires only: amici (>= 1.0), petab (with ``petab.v1``), numpy.
"""

from __future__ import annotations

import argparse
import logging
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import amici
import numpy as np
import petab.v1 as petab_v1
from amici.importers.petab.v1 import import_petab_problem
from amici.sim.sundials import AMICI_SUCCESS
from amici.sim.sundials.petab.v1 import (
    RDATAS,
    rdatas_to_simulation_df,
    simulate_petab,
)
from amici_settings import (  # this folder (AMICI venv)
    ATOL,
    ATOL_STEADY_STATE,
    MAX_STEPS,
    RTOL_STEADY_STATE,
    petab_problems,
    set_tolerances,
)

# AMICI 1.0 sets the "amici.sim.sundials" logger to DEBUG on import, which
# makes simulate_petab print the full parameter mapping; keep warnings only.
logging.getLogger("amici.sim.sundials").setLevel(logging.WARNING)

# Solver settings: tight, so that solver error is far below the 1e-6 check.
RTOL = 1e-10
# Number of repeated simulations; the fastest one is reported.
N_SIM_REPEATS = 3


def module_name(name: str) -> str:
    """A valid, unique Python module name for the compiled model."""
    name = re.sub(r"\W", "_", name)
    return name if name[0].isalpha() else f"m_{name}"


def configure_solver(model) -> "amici.sim.sundials.Solver":
    """Create a CVODES solver with tight tolerances."""
    solver = model.create_solver()
    set_tolerances(model, solver, RTOL)
    return solver


def describe_preequilibration(rdata) -> str:
    """How AMICI reached the pre-equilibration steady state."""
    # preeq_status / preeq_numsteps hold the outcome / step count of the three
    # stages [Newton, integration, Newton after integration]; preeq_wrms is the
    # final weighted RMS of dx/dt (< 1: converged w.r.t. the steady-state
    # tolerances).  0 steps means the initial state already was steady.
    stages = ("newton", "integration", "newton after integration")
    done = [
        f"{stage}: {status.name} after {int(steps)} steps"
        for stage, status, steps in zip(
            stages, rdata.preeq_status, rdata.preeq_numsteps, strict=True
        )
        if status.name != "not_run"
    ]
    if not done:
        return "none"
    extra = f", t_ss={rdata.preeq_t:g}" if np.isfinite(rdata.preeq_t) else ""
    return f"{'; '.join(done)} (wrms={rdata.preeq_wrms:.2g}{extra})"


def check_problem(name: str, yaml_path: Path, build_dir: Path) -> dict:
    """Import, compile and simulate one PEtab problem; compare to data."""
    problem = petab_v1.Problem.from_yaml(yaml_path)

    # --- import + compile (timed) ---------------------------------------
    t0 = time.perf_counter()
    model = import_petab_problem(
        problem,
        output_dir=build_dir / name,
        model_name=module_name(name),
        compile_=True,  # always rebuild, so the compile time is meaningful
        verbose=logging.WARNING,  # keep AMICI warnings, drop progress logs
    )
    t_compile = time.perf_counter() - t0

    # --- simulate at the PEtab nominal parameter values (timed) -----------
    solver = configure_solver(model)
    t_sim = np.inf
    for _ in range(N_SIM_REPEATS):
        t0 = time.perf_counter()
        res = simulate_petab(problem, amici_model=model, solver=solver)
        t_sim = min(t_sim, time.perf_counter() - t0)
    rdatas = res[RDATAS]
    for rdata in rdatas:
        if rdata.status != AMICI_SUCCESS:
            raise RuntimeError(
                f"simulation failed, status {rdata.status}, "
                f"messages: {[m.message for m in rdata.messages]}"
            )

    # --- compare simulated observables with the `measurement` column -----
    # rdatas_to_simulation_df returns the measurement table with the
    # `measurement` column replaced by AMICI's output (`simulation`); rows are
    # grouped by condition but keep their original index, so align on it.
    meas_df = problem.measurement_df
    sim_df = rdatas_to_simulation_df(rdatas, model, meas_df)
    meas = meas_df[petab_v1.MEASUREMENT].to_numpy(float)
    sim = sim_df[petab_v1.SIMULATION].reindex(meas_df.index).to_numpy(float)
    abs_diff = np.abs(sim - meas)
    # relative difference; fall back to absolute difference where meas == 0
    scale = np.where(meas != 0.0, np.abs(meas), 1.0)
    rel_diff = abs_diff / scale
    worst = int(np.nanargmax(rel_diff)) if np.all(np.isfinite(rel_diff)) else None

    return {
        "rows": len(meas),
        "max_rel_diff": float(np.max(rel_diff)) if worst is not None else np.inf,
        "worst_row": (
            f"{meas_df.iloc[worst][petab_v1.OBSERVABLE_ID]}"
            f" t={meas_df.iloc[worst][petab_v1.TIME]:g}"
            f" amici={sim[worst]:.12g} meas={meas[worst]:.12g}"
            if worst is not None
            else "non-finite simulation"
        ),
        "compile_s": t_compile,
        "simulate_s": t_sim,
        "preeq": [describe_preequilibration(rdata) for rdata in rdatas],
        # AMICI's own solver CPU time [ms], pre-equilibration + simulation
        "solver_ms": sum(r.preeq_cpu_time + r.cpu_time for r in rdatas),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("problems_dir", type=Path)
    parser.add_argument(
        "--build-dir",
        type=Path,
        default=None,
        help="where to put the generated model code "
        "(default: a temporary directory, removed afterwards)",
    )
    parser.add_argument("--tol", type=float, default=1e-6)
    args = parser.parse_args()

    problems = petab_problems(args.problems_dir)
    if not problems:
        print(f"no PEtab problems (*.yaml) under {args.problems_dir}")
        return 1

    build_dir = args.build_dir or Path(tempfile.mkdtemp(prefix="amici_check_"))
    build_dir.mkdir(parents=True, exist_ok=True)
    print(f"AMICI {amici.__version__}, petab {petab_v1.__version__}")
    print(
        f"rtol={RTOL:g} atol={ATOL:g} rtol_ss={RTOL_STEADY_STATE:g} "
        f"atol_ss={ATOL_STEADY_STATE:g} max_steps={MAX_STEPS:g}"
    )

    results = {}
    for name, yaml_path in problems:
        print(f"--- {name}: importing + compiling ...", flush=True)
        try:
            results[name] = check_problem(name, yaml_path, build_dir)
        except Exception as e:  # report and continue with the next problem
            results[name] = {"error": f"{type(e).__name__}: {e}"}
        r = results[name]
        if "error" in r:
            print(f"    FAILED: {r['error']}")
        else:
            print(f"    worst row: {r['worst_row']}")
            print(f"    preequilibration: {'; '.join(r['preeq'])}")
            print(f"    AMICI solver CPU time: {r['solver_ms']:.1f} ms")

    if args.build_dir is None:
        shutil.rmtree(build_dir, ignore_errors=True)

    # --- table ----------------------------------------------------------
    header = (
        f"{'problem':<28} | {'rows':>4} | {'max rel diff':>12} | "
        f"{'compile s':>9} | {'simulate s':>10}"
    )
    print("\n" + header + "\n" + "-" * len(header))
    ok = True
    for name, r in results.items():
        if "error" in r:
            print(f"{name:<28} | {'-':>4} | {'FAILED':>12} | {'-':>9} | {'-':>10}")
            ok = False
            continue
        print(
            f"{name:<28} | {r['rows']:>4} | {r['max_rel_diff']:>12.3e} | "
            f"{r['compile_s']:>9.1f} | {r['simulate_s']:>10.4f}"
        )
        ok &= r["max_rel_diff"] <= args.tol
    print(f"\n{'PASS' if ok else 'FAIL'} (tolerance {args.tol:g})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
