"""`mgjax petab`: evaluate a PEtab problem at its nominal parameters, or fit it with multistart,
into a run directory (the contract other tools read):

- `simulations.tsv`: PEtab's simulation table — the measurement table's rows and columns in
  its order, `simulation` in place of `measurement`;
- `summary.json`: `nllh` (negative log-likelihood, constants included) and `chi2`; after a
  fit also `best_nllh`, the number of starts, converged starts and starts at the best optimum,
  and the explorations of the flat directions of new bests (`explore`, `_explore.py`);
- after a fit: `multistart.csv` (start, nllh, converged, iterations, seconds),
  `best_parameters.tsv` (parameterId, estimate; linear scale), `parameters.csv` (estimate,
  Laplace SE and 95 % interval), `starts.tsv` (the starting points on the PEtab scale), a
  waterfall and data-vs-simulation figures, `report.html`;
- always `environment.json`, `run.log` and `config.yaml` (the settings of the run).

Each start is a local fit by fides inside the bounds on the PEtab scale (`_fides.py`; the
default) or by Optimistix's Levenberg–Marquardt through the sine transform of the bounds
(`petab.optimiser: levenberg_marquardt`, and always with `petab.vmap`, all starts in one
program). The settings are the `petab:` section of the run config (`_config.PetabConfig`).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import diffrax as dfx
import equinox as eqx
import jax
import numpy as np
import pandas as pd
import petab.v1 as petab_lib
import yaml
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from ..fit import laplace, multistart
from ..fit._optimise import optimise
from ..petab._explore import explore_flat_directions
from ..petab._fides import RESTART_TOLERANCE, compile_for, fit_start
from ..petab._import import PetabError, import_problem
from ..petab._problem import _replace_static
from ..solve._solve import SolverOptions
from . import _html
from ._config import PetabConfig, RunConfig
from ._run_dir import prepare_run_dir, start_log, write_environment

#: A start "reached the best optimum" when its NLLH is within this of the best (PEtab
#: benchmark convention for counting successful starts).
AT_BEST_TOLERANCE = 0.01


def _scaled_bounds(petab_problem) -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
    df = petab_problem.parameter_df
    df = df[df["estimate"] == 1]
    scales = [str(s) for s in df["parameterScale"]]

    def scaled(x, scale):
        return np.log10(x) if scale == "log10" else np.log(x) if scale == "log" else x

    lower = np.asarray([scaled(float(v), s) for v, s in zip(df["lowerBound"], scales)])
    upper = np.asarray([scaled(float(v), s) for v, s in zip(df["upperBound"], scales)])
    return list(df.index), lower, upper, scales


def sample_starts(petab_problem, n: int, seed: int) -> np.ndarray:
    """n starts for every estimated parameter (the parameter table's order), drawn uniformly
    within the bounds on each parameter's PEtab scale (log10 parameters log10-uniform), as
    pyPESTO samples them. Returned on the PEtab scale."""
    rng = np.random.default_rng(seed)
    _, lower, upper, _ = _scaled_bounds(petab_problem)
    return lower + (upper - lower) * rng.random((n, len(lower)))


def unscale(petab_problem, scaled: np.ndarray) -> np.ndarray:
    _, _, _, scales = _scaled_bounds(petab_problem)
    return np.asarray(
        [
            10.0**x if s == "log10" else np.exp(x) if s == "log" else x
            for x, s in zip(scaled, scales)
        ]
    )


def read_starts(path: Path, problem) -> np.ndarray:
    """Starts from a file (.npy, or .tsv/.csv with one column per estimated parameter, named
    by parameterId, the parameter table's order), on the PEtab scale."""
    path = Path(path)
    if path.suffix == ".npy":
        starts = np.load(path)
    else:
        frame = pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",")
        missing = [p for p in problem.estimated_ids if p not in frame.columns]
        if missing:
            raise ValueError(f"{path}: no column(s) {missing}; one column per estimated parameter")
        starts = frame[list(problem.estimated_ids)].to_numpy(dtype=float)
    starts = np.atleast_2d(np.asarray(starts, dtype=float))
    if starts.shape[1] != len(problem.estimated_ids):
        raise ValueError(
            f"{path}: {starts.shape[1]} columns; the problem estimates {len(problem.estimated_ids)}"
        )
    if not np.all(np.isfinite(starts)):
        raise ValueError(f"{path}: non-finite start values")
    return starts


def _evaluate(problem, values):
    h, sigma, ok, _ = problem.simulate_rows(values)
    nllh = problem.data_negative_log_likelihood(h, sigma, ok)
    return h, ok, nllh, problem.chi2(h, sigma, ok), problem.all_estimates(values)


#: `_evaluate` under `eqx.filter_jit` (compiled once per problem structure).
_evaluate_jitted = eqx.filter_jit(_evaluate)


def simulation_table(problem, petab_problem, values) -> tuple[pd.DataFrame, dict[str, float]]:
    """PEtab's simulation table at estimated values `values` (linear) and the likelihood
    (`stats["estimates"]`: every estimated parameter, `problem.estimated_ids`)."""
    h, ok, nllh, chi2, estimates = _evaluate_jitted(problem, np.asarray(values, dtype=float))
    table = petab_problem.measurement_df.reset_index(drop=True).copy()
    table.insert(list(table.columns).index("measurement"), "simulation", np.asarray(h))
    table = table.drop(columns=["measurement"])
    stats = dict(nllh=float(nllh), chi2=float(chi2), simulation_success=bool(ok))
    return table, stats | dict(estimates=np.asarray(estimates))


def _fits_figure(table: pd.DataFrame, measurements: pd.DataFrame, path: Path) -> bool:
    plt = _html.pyplot()
    groups = list(table.groupby(["observableId", "simulationConditionId"], sort=False))
    if not groups:
        return False
    cols = min(4, len(groups))
    rows = int(np.ceil(len(groups) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.5 * rows), squeeze=False)
    for ax, ((obs, cond), g) in zip(axes.flat, groups):
        m = measurements.loc[g.index]
        ax.plot(m["time"], m["measurement"], "o", ms=3, color="#444", label="data")
        order = np.argsort(g["time"].to_numpy(), kind="stable")
        ax.plot(
            g["time"].to_numpy()[order],
            g["simulation"].to_numpy()[order],
            "-",
            color="#c0392b",
            label="mgjax",
        )
        ax.set_title(f"{obs} | {cond}", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(groups) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    return _html.save_figure(fig, path, dpi=90)


def _waterfall(starts: pd.DataFrame, path: Path) -> bool:
    finite = starts["nllh"].to_numpy(dtype=float)
    finite = np.sort(finite[np.isfinite(finite)])
    if finite.size == 0:
        return False
    plt = _html.pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    ax.plot(np.arange(1, finite.size + 1), finite - finite[0] + 1e-3, "o-", ms=4, lw=0.8)
    ax.axhline(AT_BEST_TOLERANCE, color="#999", ls=":", lw=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("start (sorted by final NLLH)")
    ax.set_ylabel("NLLH − best (+1e-3)")
    ax.set_title(
        f"Multistart waterfall: best {finite[0]:.4f}; "
        f"{int(np.sum(finite - finite[0] <= AT_BEST_TOLERANCE))} of {len(starts)} starts at it",
        fontsize=9,
    )
    return _html.save_figure(fig, path, dpi=100)


def _compile_events() -> list[float]:
    """A list JAX appends the duration (s) of every XLA compilation to, from now on."""
    events: list[float] = []

    def listener(name, duration, **kwargs):
        if "backend_compile" in name:
            events.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listener)
    return events


def _vmapped_starts(problem, u_starts, max_steps: int, log, compile_events):
    """All starts in one vmapped program (GPU): each start's `seconds` is the program's
    wall time (they run together, each as long as the slowest)."""
    problem = _with_vmapped_conditions(problem)
    method = "levenberg_marquardt" if problem.least_squares else "lbfgs"
    t0 = time.perf_counter()
    best, table = multistart(problem, starts=u_starts, method=method, max_steps=max_steps)
    compile_seconds = float(sum(compile_events))
    seconds = time.perf_counter() - t0 - compile_seconds
    log.info(
        "%d starts vmapped: %.1f s (first compile %.1f s)", len(u_starts), seconds, compile_seconds
    )
    table = table.sort_values("start")
    rows = [
        dict(
            start=int(r.start),
            nllh=float(r.loss) if bool(r.solve_success) else float("inf"),
            converged=bool(r.converged),
            iterations=int(r.iterations),
            seconds=round(seconds, 3),
        )
        for r in table.itertuples()
    ]
    return rows, (float(best.loss), np.asarray(problem.to_values(best.u))), compile_seconds


def _with_vmapped_conditions(problem):
    return _replace_static(problem, sequential_simulations=False)


def _explore_new_best(problem, start: int, local, log, max_steps, hessian, restarts):
    """`explore_flat_directions` from start `start`'s fit `local` (a new best of the run),
    with the run's fides settings: its end point, and what summary.json records of it."""
    t0 = time.perf_counter()
    found = explore_flat_directions(
        problem, local.scaled, local.nllh, max_steps=max_steps, hessian=hessian, restarts=restarts
    )
    record = dict(
        start=start,
        nllh_before=local.nllh,
        nllh_after=found.nllh,
        fits=found.fits,
        iterations=found.iterations,
        rounds=found.rounds,
        seconds=round(time.perf_counter() - t0, 3),
    )
    log.info(
        "start %d: explored its flat directions, nllh %.4f -> %.4f (%d fits, %.1f s)",
        start,
        local.nllh,
        found.nllh,
        found.fits,
        record["seconds"],
    )
    return found.scaled, record


def petab_job(
    cfg: RunConfig,
    out: Path,
    *,
    force: bool = False,
    resume: bool = False,
    progress: bool = True,
    log: logging.Logger | None = None,
) -> dict[str, Any]:
    """Run `mgjax petab` with the `petab:` section of `cfg` (see the module docstring); returns
    the summary. Each finished start is saved (`starts/`) as it ends; `resume` continues an
    interrupted run with the same settings, fitting only the starts not yet saved."""
    settings = cfg.petab
    problem_yaml = _check_ready(settings)
    out = prepare_run_dir(Path(out), force=force, resume=resume)
    log = log or start_log(out, "mgjax.petab")
    optimiser = _optimiser(settings, log)
    _write_header(out, settings, problem_yaml, optimiser, resume=resume)
    t_start = time.perf_counter()
    petab_problem, problem = _import(problem_yaml, settings, log, t_start)
    summary: dict[str, Any] = dict(
        problem=problem.name,
        estimated_parameters=len(problem.estimated_ids),
        hierarchical_parameters=list(problem.inner_ids),
    )
    if settings.nominal:
        return _nominal(out, problem, petab_problem, summary, log)
    starts = (
        read_starts(settings.starts_file, problem)
        if settings.starts_file
        else sample_starts(petab_problem, settings.starts, settings.seed)
    )
    pd.DataFrame(starts, columns=list(problem.estimated_ids)).to_csv(
        out / "starts.tsv", sep="\t", index=False
    )
    fit = _multistart(problem, petab_problem, starts, settings, optimiser, progress, log, out)
    table, parameters, stats, sims = _write_fit_tables(out, problem, petab_problem, fit, log)
    summary.update(_fit_summary(table, stats, fit, t_start))
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    measurements = petab_problem.measurement_df.reset_index(drop=True)
    _write_fit_report(out, summary, table, parameters, sims, measurements)
    log.info(
        "best NLLH %.6f (%d of %d starts within %.2f); report %s",
        summary["best_nllh"],
        summary["starts_at_best"],
        len(table),
        AT_BEST_TOLERANCE,
        out / "report.html",
    )
    return summary


def _check_ready(settings: PetabConfig) -> Path:
    """The problem file, once it exists and the optimiser's package is installed."""
    if settings.optimiser == "fides" and not (settings.nominal or settings.vmap):
        try:
            import fides  # noqa: F401  (lazy: only to say which extra is missing)
        except ImportError as error:
            raise PetabError(
                'fides is missing: install the PEtab extra, pip install "mgjax[petab]" '
                "(or fit with --optimiser levenberg_marquardt)"
            ) from error
    if settings.problem is None:
        raise PetabError("no PEtab problem file given (petab.problem)")
    problem_yaml = Path(settings.problem)
    if not problem_yaml.is_file():
        raise PetabError(f"{problem_yaml}: no such PEtab problem file")
    return problem_yaml


def _optimiser(settings: PetabConfig, log: logging.Logger) -> str:
    """The local optimiser that runs: `vmap` fits need Levenberg–Marquardt."""
    if settings.vmap and settings.optimiser != "levenberg_marquardt" and not settings.nominal:
        # fides runs one start at a time on the host; the vmapped starts are one program
        log.info("--vmap: Levenberg–Marquardt (Optimistix) for all starts in one program")
        return "levenberg_marquardt"
    return settings.optimiser


def _write_header(
    out: Path, settings: PetabConfig, problem_yaml: Path, optimiser: str, *, resume: bool = False
) -> None:
    """`config.yaml` (the settings of the run, described) and `environment.json`; on `resume`
    the settings must be those of the interrupted run."""
    fides = optimiser == "fides"
    described = dict(
        problem=str(problem_yaml),
        mode="nominal" if settings.nominal else "fit",
        starts=None if settings.nominal else settings.starts,
        seed=settings.seed,
        starts_file=str(settings.starts_file) if settings.starts_file else None,
        optimiser=(
            f"fides (bounded trust region, Hessian {settings.hessian}, up to "
            f"{settings.restarts} restarts from its end point while each lowers the NLLH by "
            f">= {RESTART_TOLERANCE:g}), forward-mode Jacobian"
            if fides
            else "levenberg_marquardt (Optimistix), forward-mode Jacobian"
        ),
        explore_flat_directions=settings.explore and fides,
        max_steps=settings.max_steps,
        solver=dict(name="Rodas4", rtol=settings.rtol, atol=settings.atol, max_steps=10_000),
        optimiser_tolerance=(
            "fides defaults (fatol 1e-8, frtol 1e-8, gatol 1e-6)"
            if fides
            else dict(rtol=1e-8, atol=1e-8)
        ),
    )
    text = yaml.safe_dump(described, sort_keys=False)
    if resume and (out / "config.yaml").is_file():
        _check_same_settings(out / "config.yaml", described)
    (out / "config.yaml").write_text(text, encoding="utf-8")
    write_environment(out)


def _check_same_settings(path: Path, described: dict) -> None:
    """Refuse to resume a run whose settings differ (naming the first keys that do)."""
    before = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    differ = [k for k in sorted(set(before) | set(described)) if before.get(k) != described.get(k)]
    if differ:
        raise PetabError(
            f"{path.parent}: cannot resume with other settings ({', '.join(differ[:5])} differ "
            "from the interrupted run); use the same options, or a new --out"
        )


def _import(problem_yaml: Path, settings: PetabConfig, log: logging.Logger, t_start: float):
    """(petab's problem, mgjax's `PetabProblem`) of the problem file."""
    petab_problem = petab_lib.Problem.from_yaml(str(problem_yaml))
    options = SolverOptions(
        rtol=settings.rtol,
        atol=settings.atol,
        pcoeff=0.0,
        icoeff=1.0,
        max_steps=10_000,
        adjoint=dfx.ForwardMode(),
    )
    problem = import_problem(
        problem_yaml, options=options, hierarchical=settings.hierarchical and not settings.nominal
    )
    log.info(
        "imported %s: %d states, %d estimated parameters (%d in closed form: %s), "
        "%d measurements (%.1f s)",
        problem_yaml.name,
        len(problem.model.state_ids),
        len(problem.estimated_ids),
        len(problem.inner_ids),
        ", ".join(problem.inner_ids) or "none",
        problem.measurements.shape[0],
        time.perf_counter() - t_start,
    )
    return petab_problem, problem


def _nominal(out: Path, problem, petab_problem, summary: dict, log: logging.Logger) -> dict:
    """`--nominal`: the simulation table and likelihood at the nominal parameters."""
    t0 = time.perf_counter()
    table, stats = simulation_table(problem, petab_problem, problem.nominal_values())
    stats.pop("estimates")
    table.to_csv(out / "simulations.tsv", sep="\t", index=False)
    summary.update(stats, seconds_total=round(time.perf_counter() - t0, 3))
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    log.info("nominal parameters: nllh %.6f, chi2 %.6f", stats["nllh"], stats["chi2"])
    return summary


class _Multistart(eqx.Module):
    """What a multistart fit found: one row per start (start, nllh, converged, iterations,
    seconds), the best (NLLH, linear values of `problem.free`), compile seconds and the
    explorations of flat directions."""

    rows: list[dict[str, Any]]
    best: tuple[float, np.ndarray]
    compile_seconds: float | None
    explorations: list[dict[str, Any]]


def _multistart(
    problem, petab_problem, starts, settings, optimiser, progress, log, out: Path
) -> _Multistart:
    """Fit from every start: in one vmapped program, or one start after another."""
    outer = [problem.estimated_ids.index(p) for p in problem.free]
    # hierarchical parameters start at their closed-form optimum: only the others are taken
    # from the start (fides takes them on the PEtab scale; the engine in its coordinates u)
    u_starts = (
        np.stack(
            [np.asarray(problem.from_values(unscale(petab_problem, x)[outer])) for x in starts]
        )
        if optimiser == "levenberg_marquardt"
        else None
    )
    compile_events = _compile_events()
    if settings.vmap:
        rows, best, compile_seconds = _vmapped_starts(
            problem, u_starts, settings.max_steps, log, compile_events
        )
        return _Multistart(rows, best, compile_seconds, [])
    return _sequential_starts(
        problem,
        [x[outer] for x in starts] if optimiser == "fides" else list(u_starts),
        settings,
        optimiser,
        progress,
        log,
        compile_events,
        out / STARTS_DIR,
    )


#: Folder of the finished starts of a multistart fit, one JSON file each (resume reads them).
STARTS_DIR = "starts"


def _save_start(folder: Path, row: dict, values: np.ndarray) -> None:
    """Start `row["start"]`'s result, written atomically (a kill never leaves half a file)."""
    folder.mkdir(exist_ok=True)
    path = folder / f"start-{row['start']:05d}.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(dict(row, values=[float(v) for v in values])))
    tmp.replace(path)


def _saved_starts(folder: Path) -> dict[int, tuple[dict, np.ndarray]]:
    """The starts an interrupted run finished: {start: (row, end values)}."""
    saved = {}
    for path in sorted(folder.glob("start-*.json")) if folder.is_dir() else []:
        record = json.loads(path.read_text())
        values = np.asarray(record.pop("values"), dtype=float)
        saved[int(record["start"])] = (record, values)
    return saved


def _engine_run(max_steps: int):
    """One start's fit by the engine (Levenberg–Marquardt, or L-BFGS for a problem that is not
    least squares), jitted."""
    return eqx.filter_jit(
        lambda p, u0: optimise(
            p,
            u0,
            method="levenberg_marquardt" if p.least_squares else "lbfgs",
            max_steps=max_steps,
            rtol=1e-8,
            atol=1e-8,
        )
    )


def _sequential_starts(
    problem, starts, settings, optimiser, progress, log, compile_events, saved_dir: Path
) -> _Multistart:
    """One start after another (`starts`: fides' on the PEtab scale, else the engine's u);
    each start's `seconds` excludes its compilation (JAX's compile events split that off).
    Each finished start is saved in `saved_dir`; starts saved there already are not fitted
    again."""
    fit_one = (
        _FidesStart(problem, settings, log)
        if optimiser == "fides"
        else _EngineStart(problem, _engine_run(settings.max_steps))
    )
    saved = _saved_starts(saved_dir)
    if saved:
        log.info("resuming: %d of %d starts already finished", len(saved), len(starts))
    todo = [i for i in range(len(starts)) if i not in saved]
    compile_seconds = fit_one.compile([starts[i] for i in todo])
    rows, best = [], None
    for row, values_i in saved.values():
        rows.append(row)
        if best is None or row["nllh"] < best[0]:
            best = (row["nllh"], values_i)
    with _progress_bar(progress) as bar:
        task = bar.add_task("fit", total=len(starts), completed=len(saved), best="–")
        for i in todo:
            compiled_before = sum(compile_events)
            t0 = time.perf_counter()
            nllh, converged, iterations, values_i = fit_one(i, starts[i], best)
            compiling = sum(compile_events) - compiled_before
            seconds = time.perf_counter() - t0 - compiling
            compile_seconds = (compile_seconds or 0.0) + compiling
            row = dict(
                start=i,
                nllh=nllh,
                converged=converged,
                iterations=iterations,
                seconds=round(seconds, 3),
            )
            _save_start(saved_dir, row, values_i)
            rows.append(row)
            if best is None or nllh < best[0]:
                best = (nllh, values_i)
            bar.update(task, advance=1, best=f"{best[0]:.4f}")
            log.info("start %d: nllh %.4f, %d iterations, %.1f s", i, nllh, iterations, seconds)
    rows.sort(key=lambda r: r["start"])
    return _Multistart(rows, best, compile_seconds, fit_one.explorations)


def _progress_bar(progress: bool) -> Progress:
    return Progress(
        TextColumn("[bold]multistart"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} starts · best NLLH {task.fields[best]}"),
        TimeElapsedColumn(),
        disable=not progress,
    )


class _FidesStart:
    """One start's fit by fides; a new best of the run explores its flat directions."""

    def __init__(self, problem, settings: PetabConfig, log: logging.Logger):
        self.problem, self.settings, self.log = problem, settings, log
        self.explorations: list[dict[str, Any]] = []

    def compile(self, starts) -> float | None:
        """Trace and compile the evaluations: compile time, not the first start's."""
        if not len(starts):
            return None
        t0 = time.perf_counter()
        compile_for(self.problem, starts[0])
        seconds = time.perf_counter() - t0
        self.log.info("compiled the evaluations (%.1f s)", seconds)
        return seconds

    def __call__(self, i: int, start: np.ndarray, best) -> tuple[float, bool, int, np.ndarray]:
        s = self.settings
        local = fit_start(
            self.problem, start, max_steps=s.max_steps, hessian=s.hessian, restarts=s.restarts
        )
        scaled_i = local.scaled
        nllh, converged, iterations = local.nllh, local.converged, local.iterations
        new_best = best is None or nllh <= best[0] - RESTART_TOLERANCE
        if s.explore and np.isfinite(nllh) and new_best:
            # a new best: look along its flat directions for a lower optimum
            scaled_i, found = _explore_new_best(
                self.problem, i, local, self.log, s.max_steps, s.hessian, s.restarts
            )
            self.explorations.append(found)
            nllh, iterations = found["nllh_after"], iterations + found["iterations"]
        return nllh, converged, iterations, np.asarray(self.problem.from_scale(scaled_i))


class _EngineStart:
    """One start's fit by the engine (`run`: `_engine_run`) from coordinates u."""

    def __init__(self, problem, run):
        self.problem, self.run = problem, run
        self.explorations: list[dict[str, Any]] = []

    def compile(self, starts) -> None:
        return None

    def __call__(self, i: int, start: np.ndarray, best) -> tuple[float, bool, int, np.ndarray]:
        result = jax.block_until_ready(self.run(self.problem, start))
        nllh = float(result.loss) if bool(result.solve_success) else float("inf")
        values = np.asarray(self.problem.to_values(result.u))
        return nllh, bool(result.converged), int(result.iterations), values


def _write_fit_tables(out: Path, problem, petab_problem, fit: _Multistart, log: logging.Logger):
    """multistart.csv, simulations.tsv, best_parameters.tsv and parameters.csv; returns
    (multistart table, parameters, likelihood at the best, simulation table)."""
    table = pd.DataFrame(fit.rows)
    table.to_csv(out / "multistart.csv", index=False)
    _, values = fit.best
    sims, stats = simulation_table(problem, petab_problem, values)
    sims.to_csv(out / "simulations.tsv", sep="\t", index=False)
    everything = stats.pop("estimates")
    pd.DataFrame(dict(parameterId=list(problem.estimated_ids), estimate=everything)).to_csv(
        out / "best_parameters.tsv", sep="\t", index=False
    )
    parameters = _parameters(problem, values, everything, log)
    parameters.to_csv(out / "parameters.csv", index=False)
    return table, parameters, stats, sims


def _parameters(problem, values: np.ndarray, everything, log: logging.Logger) -> pd.DataFrame:
    """Estimates of `problem.free` with Laplace SE and 95 % interval, then the closed-form
    (hierarchical) parameters: their optimum given the others, no Laplace SE."""
    u_best = problem.from_values(values)  # the Laplace approximation's coordinates
    try:
        stats_u = laplace(problem, u_best)
        parameters = pd.DataFrame(
            dict(
                parameterId=list(problem.free),
                estimate=values,
                se=stats_u["se"],
                ci_low=stats_u["ci_low"],
                ci_high=stats_u["ci_high"],
                identifiable=stats_u["identifiable"],
            )
        )
    except Exception as error:  # noqa: BLE001 - uncertainty must not lose a finished fit
        log.warning("Laplace standard errors not computed (%s)", error)
        parameters = pd.DataFrame(dict(parameterId=list(problem.free), estimate=values))
    inner = pd.DataFrame(
        dict(
            parameterId=list(problem.inner_ids),
            estimate=[everything[problem.estimated_ids.index(p)] for p in problem.inner_ids],
            method="closed form (hierarchical)",
        )
    )
    return pd.concat([parameters, inner], ignore_index=True) if len(inner) else parameters


def _fit_summary(table: pd.DataFrame, stats: dict, fit: _Multistart, t_start: float) -> dict:
    """What summary.json records of a multistart fit."""
    best_nllh = fit.best[0]
    finite = table["nllh"].to_numpy(dtype=float)
    at_best = int(np.sum(np.isfinite(finite) & (finite - best_nllh <= AT_BEST_TOLERANCE)))
    best_row = table.loc[table["nllh"].idxmin()] if np.isfinite(best_nllh) else None
    return dict(
        best_nllh=best_nllh,
        nllh=stats["nllh"],
        chi2=stats["chi2"],
        starts=len(table),
        converged=int(table["converged"].sum()),
        starts_at_best=at_best,
        at_best_tolerance=AT_BEST_TOLERANCE,
        best_start=int(best_row["start"]) if best_row is not None else None,
        seconds_compile=round(fit.compile_seconds or 0.0, 2),
        seconds_starts=round(float(table["seconds"].sum()), 2),
        seconds_to_best=round(
            float(table["seconds"].iloc[: int(best_row["start"]) + 1].sum())
            if best_row is not None
            else float("nan"),
            2,
        ),
        starts_per_minute=round(60.0 * len(table) / max(float(table["seconds"].sum()), 1e-9), 2),
        explorations=fit.explorations,
        seconds_total=round(time.perf_counter() - t_start, 2),
    )


def _write_fit_report(out, summary, table, parameters, sims, measurements) -> Path:
    """The waterfall and data-vs-simulation figures, and `report.html`."""
    figures = []
    if _waterfall(table, out / "waterfall.png"):
        figures.append(("waterfall.png", "Multistart waterfall"))
    data = measurements
    if _fits_figure(sims.assign(measurement=data["measurement"]), data, out / "fits.png"):
        figures.append(("fits.png", "Data and simulation at the best parameters"))
    tables = {"Multistart": table.sort_values("nllh"), "Estimates": parameters}
    env = json.loads((out / "environment.json").read_text())
    facts = pd.DataFrame(
        [(k, v) for k, v in summary.items() if not isinstance(v, dict | list)],
        columns=["", "value"],
    )
    parts = _html.page_head(f"mgjax petab {out.name}", f"mgjax petab: {summary.get('problem', '')}")
    parts += _html.section_html("Summary", _html.table_html(facts))
    for name, caption in figures:
        parts += _html.section_html(caption, _html.figure_html(out / name, caption))
    for caption, frame in tables.items():
        parts += _html.section_html(caption, _html.table_html(frame, rows=100))
    parts += _html.environment_html(env)
    return _html.write_page(out / "report.html", parts)
