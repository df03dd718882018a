"""Peer runner for the PEtab benchmark: fit a PEtab problem with pyPESTO + AMICI + fides
from GIVEN starting points, and write per-start results as JSON.

Runs in the peer environment `.peer-venv` (made by
experiments/benchmarks/setup_petab_peers.sh), never in mgjax's: it imports neither mgjax nor
(for the default backend) jax.

    PATH="$PWD/.peer-venv/bin:$PATH" .peer-venv/bin/python experiments/benchmarks/petab_peer.py \
        PROBLEM.yaml --starts STARTS.npy --out OUT.json [--backend amici|amici-jax] \
        [--max-iter 1000] [--rtol 1e-8] [--atol 1e-12] [--fatol F] [--frtol F] [--gatol F] \
        [--model-dir DIR]

STARTS.npy: float array (n_starts, n_estimated) on each parameter's PEtab scale (log10 values
for log10 parameters), columns in the order of `petab_problem.x_free_ids` (the parameter
table's estimated parameters, in table order). They are used verbatim (no resampling).

Backend `amici` (default): pyPESTO's PetabImporter -> AMICI (CVODES) model compiled into
--model-dir (default .peer-cache/amici_models/<problem>, reused between runs), forward
sensitivities, fides trust-region optimiser (pyPESTO's default Hessian strategy for AMICI
objectives: HybridFixed, i.e. the Fisher information matrix first, BFGS later), one core.

Backend `amici-jax`: AMICI's JAX/Diffrax backend (PEtab v1 upgraded to v2 on import); the
negative log-likelihood and its gradient come from jax.value_and_grad of
amici.sim.jax.run_simulations, wrapped as a pyPESTO objective and optimised with the same
fides settings (BFGS Hessian: no FIM in the JAX backend). If the backend cannot run the
problem the runner writes {"tool": "amici-jax", "error": "..."} and exits with status 2.

Each start's "converged" is fides' exit flag > 0 (1 FTOL: fval change below fatol/frtol,
2 XTOL, 3 GTOL: gradient norm below gatol); flags <= 0 (0 did not run, -1 MAXITER, -2 MAXTIME,
-3 non-finite value, -4 exceeded bounds, -5 trust region too small) and failed starts count
as not converged.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import sys
import time
import traceback
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

# one core for every BLAS/OpenMP pool (the peers are compared single-core); set before numpy
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
N_TIMING_EVALS = 20


class PeerError(Exception):
    """A problem with the inputs: reported as a clear message, no traceback."""


# --------------------------------------------------------------------------- inputs


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Fit a PEtab problem with pyPESTO + AMICI + fides from given starts."
    )
    p.add_argument("problem", type=Path, help="PEtab problem YAML file")
    p.add_argument(
        "--starts",
        type=Path,
        required=True,
        help=".npy float array (n_starts, n_estimated) on PEtab scale, x_free_ids order",
    )
    p.add_argument("--out", type=Path, required=True, help="output JSON file")
    p.add_argument("--backend", choices=("amici", "amici-jax"), default="amici")
    p.add_argument(
        "--max-iter", type=int, default=None, help="fides MAXITER (default: fides default, 1000)"
    )
    p.add_argument("--rtol", type=float, default=1e-8, help="ODE solver relative tolerance")
    p.add_argument("--atol", type=float, default=1e-12, help="ODE solver absolute tolerance")
    p.add_argument("--fatol", type=float, default=None, help="fides FATOL (default 1e-8)")
    p.add_argument("--frtol", type=float, default=None, help="fides FRTOL (default 1e-8)")
    p.add_argument("--gatol", type=float, default=None, help="fides GATOL (default 1e-6)")
    p.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help="where the compiled model lives (default .peer-cache/amici_models/<problem>"
        " under the repository root; -jax suffix for the JAX backend)",
    )
    p.add_argument(
        "--timing-evals",
        type=int,
        default=N_TIMING_EVALS,
        help="objective+gradient evaluations timed at the nominal point (after a warm-up)",
    )
    p.add_argument("--verbose", action="store_true", help="log fides iterations")
    return p.parse_args(argv)


def load_petab(path: Path):
    import petab.v1 as petab

    if not path.is_file():
        raise PeerError(f"PEtab problem file not found: {path}")
    try:
        problem = petab.Problem.from_yaml(str(path))
    except Exception as err:  # noqa: BLE001 - any parse failure is the input's fault
        raise PeerError(f"cannot read PEtab problem {path}: {type(err).__name__}: {err}") from err
    if problem.parameter_df is None or problem.measurement_df is None:
        raise PeerError(f"PEtab problem {path} lacks a parameter or measurement table")
    if not problem.x_free_ids:
        raise PeerError(f"PEtab problem {path} has no estimated parameters")
    return problem


def load_starts(path: Path, petab_problem) -> np.ndarray:
    if not path.is_file():
        raise PeerError(f"starts file not found: {path}")
    try:
        starts = np.load(path, allow_pickle=False)
    except Exception as err:  # noqa: BLE001
        raise PeerError(f"cannot read starts file {path} as .npy: {err}") from err
    if starts.ndim == 1:
        starts = starts[None, :]
    n_free = len(petab_problem.x_free_ids)
    if starts.ndim != 2 or starts.shape[1] != n_free or starts.shape[0] == 0:
        raise PeerError(
            f"starts file {path} has shape {starts.shape}; expected (n_starts, {n_free}) with "
            f"columns in x_free_ids order: {list(petab_problem.x_free_ids)}"
        )
    if not np.issubdtype(starts.dtype, np.floating) and not np.issubdtype(starts.dtype, np.integer):
        raise PeerError(f"starts file {path} has dtype {starts.dtype}; expected floats")
    starts = starts.astype(float)
    if not np.all(np.isfinite(starts)):
        bad = sorted({int(i) for i in np.argwhere(~np.isfinite(starts))[:, 0]})
        raise PeerError(f"starts file {path}: non-finite values in start(s) {bad}")
    free = np.asarray(petab_problem.x_free_indices)
    lb = np.asarray(petab_problem.lb_scaled, float)[free]
    ub = np.asarray(petab_problem.ub_scaled, float)[free]
    slack = 1e-9 * np.maximum(1.0, np.abs(ub - lb))
    outside = (starts < lb - slack) | (starts > ub + slack)
    if outside.any():
        i, j = np.argwhere(outside)[0]
        n_bad = int(outside.any(1).sum())
        raise PeerError(
            f"starts file {path}: start {i} parameter {petab_problem.x_free_ids[j]} = "
            f"{starts[i, j]} lies outside its scaled bounds [{lb[j]}, {ub[j]}] ({n_bad} start(s) "
            "affected). Starts must be on the PEtab parameter scale (e.g. log10 values)."
        )
    return np.clip(starts, lb, ub)


def versions(extra=()) -> dict:
    out = {"python": platform.python_version()}
    for dist in ("amici", "pypesto", "fides", "petab", "numpy", "scipy", *extra):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


def fides_options(args) -> dict:
    import fides

    opts = {}
    if args.max_iter is not None:
        opts[fides.Options.MAXITER] = int(args.max_iter)
    if args.fatol is not None:
        opts[fides.Options.FATOL] = float(args.fatol)
    if args.frtol is not None:
        opts[fides.Options.FRTOL] = float(args.frtol)
    if args.gatol is not None:
        opts[fides.Options.GATOL] = float(args.gatol)
    return opts


def effective_fides_options(opts: dict) -> dict:
    import fides

    eff = {}
    for key in (
        fides.Options.MAXITER,
        fides.Options.FATOL,
        fides.Options.FRTOL,
        fides.Options.GATOL,
        fides.Options.XTOL,
        fides.Options.GRTOL,
    ):
        val = opts.get(key, fides.constants.DEFAULT_OPTIONS[key])
        eff[key.value] = int(val) if key == fides.Options.MAXITER else float(val)
    return eff


class _IterationRecorder:
    """Records the fides.Optimizer instance pyPESTO creates, to read its iteration count
    (pyPESTO's OptimizerResult does not carry it)."""

    def __init__(self):
        import fides

        self._fides = fides
        self._orig = fides.Optimizer
        self.last = None
        recorder = self

        class RecordingOptimizer(self._orig):
            def __init__(self, *a, **k):
                super().__init__(*a, **k)
                recorder.last = self

        self._cls = RecordingOptimizer

    def __enter__(self):
        self._fides.Optimizer = self._cls
        return self

    def __exit__(self, *exc):
        self._fides.Optimizer = self._orig


def _finite_or_none(v):
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _quiet_loggers(level=logging.WARNING):
    # some AMICI modules set their loggers to DEBUG/INFO on import; keep the run's log short
    for name, lg in list(logging.root.manager.loggerDict.items()):
        if (
            isinstance(lg, logging.Logger)
            and name.split(".")[0] in ("amici", "pypesto", "petab")
            and lg.level != logging.NOTSET
            and lg.level < level
        ):
            lg.setLevel(level)
    for name in ("amici", "pypesto", "petab"):
        logging.getLogger(name).setLevel(level)


def time_objective(fun, x, n: int):
    """Mean wall seconds of `fun(x)` over n calls after one warm-up call."""
    fun(x)
    t0 = time.perf_counter()
    for _ in range(n):
        fun(x)
    return (time.perf_counter() - t0) / n


def run_starts(problem, optimizer, starts_full, opt_options, recorder, label):
    """Optimise each start on its own (one core), timing it; return per-start records."""
    import pypesto.optimize as optimize
    from pypesto.engine import SingleCoreEngine

    records = []
    engine = SingleCoreEngine()
    n = starts_full.shape[0]
    for i in range(n):
        problem.set_x_guesses(starts_full[i : i + 1])
        # starts are used verbatim: x_guesses is returned as is when n_guesses >= n_starts
        x0_expected = starts_full[i, problem.x_free_indices]
        recorder.last = None
        t0 = time.perf_counter()
        res = optimize.minimize(
            problem=problem,
            optimizer=optimizer,
            n_starts=1,
            ids=[str(i)],
            engine=engine,
            progress_bar=False,
            options=opt_options,
        )
        wall = time.perf_counter() - t0
        r = res.optimize_result.list[0]
        x0 = np.asarray(r.x0, float) if r.x0 is not None else None
        if x0 is not None:
            x0_free = x0[problem.x_free_indices] if x0.size == problem.dim_full else x0
            if not np.allclose(x0_free, x0_expected, rtol=0, atol=1e-12):
                raise AssertionError(f"start {i}: pyPESTO used x0 {x0_free}, not the given start")
        x = np.asarray(r.x, float) if r.x is not None else None
        if x is not None and x.size == problem.dim_full:
            x = x[problem.x_free_indices]
        exitflag = int(r.exitflag) if r.exitflag is not None else None
        rec = {
            "start": i,
            "nllh": _finite_or_none(r.fval),
            "converged": bool(exitflag is not None and exitflag > 0),
            "exitflag": exitflag,
            "message": str(r.message) if r.message is not None else None,
            "iterations": int(recorder.last.iteration) if recorder.last is not None else None,
            "n_fval": int(r.n_fval) if r.n_fval is not None else None,
            "n_grad": int(r.n_grad) if r.n_grad is not None else None,
            "n_hess": int(r.n_hess) if r.n_hess is not None else None,
            "seconds": wall,
            "optimizer_seconds": _finite_or_none(r.time),
            "x": [float(v) for v in x] if x is not None else None,
        }
        records.append(rec)
        print(
            f"[{label}] start {i + 1}/{n}: nllh={rec['nllh']} exitflag={exitflag} "
            f"iter={rec['iterations']} n_fval={rec['n_fval']} {wall:.2f}s",
            flush=True,
        )
    return records


def summarise(out: dict, records, t_total):
    out["n_starts"] = len(records)
    out["total_seconds"] = t_total
    out["starts"] = records
    fvals = [r["nllh"] for r in records if r["nllh"] is not None]
    out["best_nllh"] = min(fvals) if fvals else None
    out["n_converged"] = sum(r["converged"] for r in records)
    return out


# --------------------------------------------------------------------------- AMICI (CVODES)


def run_amici(args, petab_problem, starts, out):
    import pypesto.optimize as optimize
    import pypesto.petab
    from amici.sim.sundials import SensitivityMethod, SteadyStateSensitivityMode

    model_name = args.problem.stem.replace("-", "_").replace(".", "_")
    model_dir = args.model_dir or (REPO_ROOT / ".peer-cache" / "amici_models" / model_name)
    model_dir = Path(model_dir).absolute()

    t0 = time.perf_counter()
    importer = pypesto.petab.PetabImporter(
        petab_problem, output_folder=str(model_dir), model_name=model_name
    )
    creator = importer.create_objective_creator()
    must_compile = creator._must_compile(force_compile=False)
    model = creator.create_model(verbose=False)
    _quiet_loggers()
    t_model = time.perf_counter() - t0
    solver = model.create_solver()
    solver.set_sensitivity_method(SensitivityMethod.forward)
    solver.set_relative_tolerance(args.rtol)
    solver.set_absolute_tolerance(args.atol)
    objective = creator.create_objective(model=model, solver=solver, verbose=False)
    _quiet_loggers()
    problem = importer.create_problem(objective)
    t_import = time.perf_counter() - t0

    # pyPESTO's free-parameter order must be PEtab's x_free_ids order
    free_names = [problem.x_names[i] for i in problem.x_free_indices]
    assert free_names == list(petab_problem.x_free_ids), (free_names, petab_problem.x_free_ids)

    # full vectors (fixed parameters at their nominal scaled values) for set_x_guesses
    starts_full = np.tile(np.asarray(petab_problem.x_nominal_scaled, float), (len(starts), 1))
    starts_full[:, problem.x_free_indices] = starts

    out.update(
        {
            "model_dir": os.path.relpath(model_dir, REPO_ROOT)
            if model_dir.is_relative_to(REPO_ROOT)
            else str(model_dir),
            "compiled_this_run": bool(must_compile),
            "import_seconds": t_import,
            "model_load_or_compile_seconds": t_model,
            "x_free_ids": list(petab_problem.x_free_ids),
            "settings": {
                "sensitivity_method": "forward (AMICI forward sensitivity equations; CVODES)",
                "preequilibration_sensitivity_method": SensitivityMethod(
                    int(solver.get_sensitivity_method_pre_equilibration())
                ).name,
                "steady_state_sensitivity_mode": SteadyStateSensitivityMode(
                    int(model.get_steady_state_sensitivity_mode())
                ).name,
                "rtol": solver.get_relative_tolerance(),
                "atol": solver.get_absolute_tolerance(),
                "rtol_steady_state": solver.get_relative_tolerance_steady_state(),
                "atol_steady_state": solver.get_absolute_tolerance_steady_state(),
                "max_steps": int(solver.get_max_steps()),
                "guess_steadystate": bool(objective.guess_steadystate),
                "fim_for_hess": bool(objective.fim_for_hess),
                "hessian_update": "pyPESTO default for FidesOptimizer with a FIM-providing AMICI "
                "objective: fides.HybridFixed (FIM, then BFGS)",
                "fides_options": effective_fides_options(fides_options(args)),
                "engine": "pypesto.engine.SingleCoreEngine, n_threads=1",
                "starts": "x_guesses verbatim (asserted x0 == given start)",
            },
        }
    )

    # sanity: NLLH at the nominal parameters, and per-evaluation cost there
    x_nom = np.asarray(petab_problem.x_nominal_free_scaled, float)
    out["nominal_nllh"] = _finite_or_none(problem.objective(x_nom))
    out["seconds_per_objective_gradient"] = time_objective(
        lambda x: problem.objective(x, sensi_orders=(0, 1)), x_nom, args.timing_evals
    )
    out["seconds_per_objective_gradient_fim"] = time_objective(
        lambda x: problem.objective(x, sensi_orders=(0, 1, 2)), x_nom, args.timing_evals
    )
    out["timing_evals"] = args.timing_evals
    print(
        f"[amici] import {t_import:.2f}s (compiled: {must_compile}); nominal nllh "
        f"{out['nominal_nllh']:.6f}; {1e3 * out['seconds_per_objective_gradient']:.2f} ms per "
        "fval+grad",
        flush=True,
    )

    optimizer = optimize.FidesOptimizer(
        options=fides_options(args),
        verbose=logging.INFO if args.verbose else logging.WARNING,
    )
    opt_options = optimize.OptimizeOptions(allow_failed_starts=True)
    t0 = time.perf_counter()
    with _IterationRecorder() as rec:
        records = run_starts(problem, optimizer, starts_full, opt_options, rec, "amici")
    return summarise(out, records, time.perf_counter() - t0)


class _NoNoiseDistributionColumn:
    """Stand-in for `petab.v2` inside amici.sim.jax.petab that hides the observable table's
    noiseDistribution column (see _jax_workarounds)."""

    def __init__(self, v2):
        self._v2 = v2

        class _C:
            def __getattr__(_, k):
                return (
                    "__hidden_noiseDistribution__"
                    if k == "NOISE_DISTRIBUTION"
                    else getattr(v2.C, k)
                )

        self.C = _C()

    def __getattr__(self, k):
        return getattr(self._v2, k)


def _jax_workarounds(v2_problem, notes):
    """Scoped patches for two defects of AMICI 1.0.1's JAX PEtab path that stop it before it
    simulates anything on a preequilibrated problem like Brannmark (found reading the source):

    1. JAXProblem._get_measurements builds `iy_trafos` once per *observable* (not per
       measurement) whenever the observable table has a noiseDistribution column (always, after
       the v1->v2 upgrade), so conditions with fewer measurements than observables fail in
       np.pad ("index can't contain negative values"). With only normal noise, the correct
       array is all zeros, which is what AMICI builds without that column: hide the column.
    2. JAXProblem.run_preequilibrations pairs per-experiment parameter rows with the *set* of
       preequilibration condition ids (unique, unordered), so with 8 experiments sharing one
       preequilibration vmap sees 8 vs 2 rows. Pass each experiment's own first-period
       condition ids instead.
    Returns a context-free restore() callable for patch 1 (patch 2 stays for the run)."""
    import amici.sim.jax.petab as ajp

    dists = {str(o.noise_distribution) for o in v2_problem.observables}
    restore = lambda: None  # noqa: E731
    if dists <= {"normal", "NoiseDistribution.NORMAL"}:
        orig = ajp.petabv2
        ajp.petabv2 = _NoNoiseDistributionColumn(orig)

        def restore():
            ajp.petabv2 = orig

        notes.append(
            "hid observable noiseDistribution column during JAXProblem construction "
            "(all observables normal; AMICI 1.0.1 builds iy_trafos per observable)"
        )

    def run_preequilibrations(
        self, experiments, solver, controller, root_finder, steady_state_event, max_steps
    ):
        conds = [
            exp.periods[0].condition_ids[0] if exp.periods[0].condition_ids else ""
            for exp in experiments
        ]
        p_array, mask_reinit, x_reinit, _, _, h_mask, _ = self._prepare_experiments(
            experiments, conds, True, None, None
        )
        return self.run_preequilibration(
            p_array,
            mask_reinit,
            x_reinit,
            h_mask,
            solver,
            controller,
            root_finder,
            steady_state_event,
            max_steps,
        )

    ajp.JAXProblem.run_preequilibrations = run_preequilibrations
    notes.append(
        "JAXProblem.run_preequilibrations: one preequilibration row per experiment "
        "(AMICI 1.0.1 zips per-experiment parameters with the set of condition ids)"
    )
    return restore


def run_amici_jax(args, petab_problem, starts, out):
    """AMICI's JAX/Diffrax backend, fitted with the same fides settings via a pyPESTO
    objective (BFGS Hessian). Raises on any failure; main() turns that into the error JSON."""
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import petab.v2 as petab_v2
    import pypesto
    import pypesto.optimize as optimize
    from amici.importers.petab import PetabImporter as AmiciPetabImporter
    from amici.sim.jax import run_simulations

    _quiet_loggers()
    model_name = args.problem.stem.replace("-", "_").replace(".", "_") + "_jax"
    model_dir = args.model_dir or (REPO_ROOT / ".peer-cache" / "amici_models" / model_name)
    model_dir = Path(model_dir).absolute()
    notes = []
    out["x_free_ids"] = list(petab_problem.x_free_ids)
    out["model_dir"] = (
        os.path.relpath(model_dir, REPO_ROOT)
        if model_dir.is_relative_to(REPO_ROOT)
        else str(model_dir)
    )
    out["workarounds"] = notes

    t0 = time.perf_counter()
    v2_problem = petab_v2.Problem.from_yaml(str(args.problem))  # upgrades PEtab v1 files
    importer = AmiciPetabImporter(
        v2_problem, jax=True, output_dir=model_dir, module_name=model_name, verbose=False
    )
    _quiet_loggers()
    restore = _jax_workarounds(importer.petab_problem, notes)
    try:
        jax_problem = importer.create_simulator()
    finally:
        restore()
    out["import_seconds"] = time.perf_counter() - t0

    # JAXProblem parameters are linear (PEtab v2 has no scales); the starts are on the v1 scale
    ids = list(jax_problem.parameter_ids)
    free_ids = list(petab_problem.x_free_ids)
    if sorted(ids) != sorted(free_ids):
        raise RuntimeError(f"JAX problem parameters {ids} differ from PEtab x_free_ids {free_ids}")
    perm = np.array([free_ids.index(i) for i in ids])
    scales = [petab_problem.parameter_df.loc[i, "parameterScale"] for i in free_ids]
    is_log10 = jnp.array([sc == "log10" for sc in scales])
    is_log = jnp.array([sc == "log" for sc in scales])

    def unscale(x):
        lin = jnp.where(is_log10, 10.0**x, jnp.where(is_log, jnp.exp(x), x))
        return lin[perm]

    solver_kw = {}
    try:  # ODE tolerances, if this AMICI version exposes them this way
        import diffrax
        from amici.sim.jax.petab import DEFAULT_CONTROLLER_SETTINGS

        ctrl = dict(DEFAULT_CONTROLLER_SETTINGS)
        ctrl.update(rtol=args.rtol, atol=args.atol)
        solver_kw["controller"] = diffrax.PIDController(**ctrl)
        out["settings"] = {
            "controller": {
                k: (float(v) if isinstance(v, float) else str(v)) for k, v in ctrl.items()
            }
        }
    except Exception as err:  # noqa: BLE001
        notes.append(f"default controller kept ({type(err).__name__}: {err})")

    def nllh(x):
        llh, _ = run_simulations(jax_problem.update_parameters(unscale(x)), **solver_kw)
        return -llh

    t1 = time.perf_counter()
    f_and_g = jax.jit(jax.value_and_grad(nllh))
    x_nom = jnp.asarray(petab_problem.x_nominal_free_scaled, float)
    v, g = f_and_g(x_nom)
    out["compile_seconds"] = time.perf_counter() - t1
    out["nominal_nllh"] = _finite_or_none(v)
    if not np.all(np.isfinite(np.asarray(g))):
        raise RuntimeError(f"non-finite gradient at the nominal point (nllh {float(v)})")

    def fg(x):
        val, grad = f_and_g(jnp.asarray(x, float))
        return float(val), np.asarray(grad, float)

    out["seconds_per_objective_gradient"] = time_objective(fg, np.asarray(x_nom), args.timing_evals)
    out["timing_evals"] = args.timing_evals
    print(
        f"[amici-jax] import {out['import_seconds']:.1f}s, compile {out['compile_seconds']:.1f}s;"
        f" nominal nllh {out['nominal_nllh']}",
        flush=True,
    )

    objective = pypesto.Objective(fun=fg, grad=True)
    free = np.asarray(petab_problem.x_free_indices)
    problem = pypesto.Problem(
        objective,
        lb=np.asarray(petab_problem.lb_scaled, float)[free],
        ub=np.asarray(petab_problem.ub_scaled, float)[free],
        x_names=free_ids,
    )
    import fides

    optimizer = optimize.FidesOptimizer(
        hessian_update=fides.BFGS(),
        options=fides_options(args),
        verbose=logging.INFO if args.verbose else logging.WARNING,
    )
    out.setdefault("settings", {}).update(
        {
            "gradient": "jax.value_and_grad through amici.sim.jax.run_simulations (Diffrax)",
            "hessian_update": "fides.BFGS (no FIM from the JAX backend)",
            "fides_options": effective_fides_options(fides_options(args)),
            "starts": "x_guesses verbatim (asserted x0 == given start)",
        }
    )
    t0 = time.perf_counter()
    with _IterationRecorder() as rec:
        records = run_starts(
            problem,
            optimizer,
            starts,
            optimize.OptimizeOptions(allow_failed_starts=True),
            rec,
            "amici-jax",
        )
    return summarise(out, records, time.perf_counter() - t0)


def _jax_error_hint(err) -> str:
    if isinstance(err, NameError):
        return (
            " -- AMICI's JAX code generator emitted a model whose _known_discs(p) uses "
            "condition-table parameters as free names: the "
            "PEtab v1->v2 upgrade turns them into state variables set by events, so the "
            "generated module raises NameError in preequilibrate_condition. The JAX backend "
            "cannot simulate this problem without hand-editing the generated model."
        )
    return ""


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    tool = "pypesto+amici" if args.backend == "amici" else "amici-jax"
    out = {"tool": tool, "backend": args.backend, "problem": str(args.problem)}

    try:
        petab_problem = load_petab(args.problem)
        starts = load_starts(args.starts, petab_problem)
    except PeerError as err:
        print(f"petab_peer: error: {err}", file=sys.stderr)
        return 1

    t_all = time.perf_counter()
    if args.backend == "amici":
        out["versions"] = versions()
        result = run_amici(args, petab_problem, starts, out)
        rc = 0
    else:
        out["versions"] = versions(("jax", "jaxlib", "diffrax", "equinox", "optimistix"))
        try:
            result = run_amici_jax(args, petab_problem, starts, out)
            rc = 0
        except Exception as err:  # noqa: BLE001 - report why the JAX backend cannot run
            out["error"] = f"{type(err).__name__}: {err}" + _jax_error_hint(err)
            out["traceback"] = traceback.format_exc(limit=8)
            result = out
            rc = 2
            print(f"[amici-jax] cannot run: {out['error']}", file=sys.stderr)
    result["wall_seconds_including_import"] = time.perf_counter() - t_all

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
