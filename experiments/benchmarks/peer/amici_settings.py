"""What the two AMICI-side scripts (`amici_check.py`, `peer_fit.py`) share: finding the
exported PEtab problems and CVODES's tolerances and step limits. Runs in the AMICI venv (see
README.md), never imports mgjax."""

from __future__ import annotations

from pathlib import Path

from amici.sim.sundials import SteadyStateComputationMode

ATOL = 1e-12
# Pre-equilibration convergence: ||dx/dt|| small relative to atol_ss + rtol_ss * |x|. AMICI's
# defaults (1e-6, 1e-10) are too loose for this model: Newton then stops visibly off the steady
# state (start NLL off by up to ~3e-4 relative) when it starts from another subject's
# compiled-in initial state; with these values the start NLLs agree to ~1e-6.
RTOL_STEADY_STATE = 1e-12
ATOL_STEADY_STATE = 1e-14
MAX_STEPS = 1_000_000
NEWTON_MAX_STEPS = 1000


def petab_problems(folder: Path) -> list[tuple[str, Path]]:
    """(name, YAML path) of each sub-folder of `folder` holding a PEtab YAML, sorted."""
    problems = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        yamls = sorted(sub.glob("*.yaml")) + sorted(sub.glob("*.yml"))
        if yamls:
            problems.append((sub.name, yamls[0]))
    return problems


def set_tolerances(model, solver, rtol: float) -> None:
    """Tolerances and step limits of `solver` (relative tolerance `rtol`), and the model's
    steady state found by Newton's method, by long integration only where Newton fails."""
    model.set_steady_state_computation_mode(SteadyStateComputationMode.integrateIfNewtonFails)
    solver.set_relative_tolerance(rtol)
    solver.set_absolute_tolerance(ATOL)
    solver.set_relative_tolerance_steady_state(RTOL_STEADY_STATE)
    solver.set_absolute_tolerance_steady_state(ATOL_STEADY_STATE)
    solver.set_max_steps(MAX_STEPS)
    solver.set_newton_max_steps(NEWTON_MAX_STEPS)
