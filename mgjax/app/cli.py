"""The `mgjax` command line (typer + rich).

Every command reads one YAML run config (`configs/*.yaml`; schema in `mgjax.app._config`, keys in
docs/cli.md) with `key.sub=value` overrides after it (`mgjax petab`: the problem file first, its
options set keys of the config's `petab:` section). Errors end with exit code 2 and one
message naming the file, key or row and what to do; `mgjax --debug …` shows the traceback.

    mgjax run                                  # the main job: fit the bundled cohort + report
    mgjax fit configs/cohort_batch.yaml --data cohorts/c1000 --out runs/c1000
    mgjax sweep configs/default.yaml --grid solver.rtol=1e-6,1e-8 --grid batch.width=8,16 \
        --out runs/sweep
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import typing
from pathlib import Path

import jax
import typer
from jax.experimental import multihost_utils
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..batch import RunDirectoryError, parse_shard
from ..batch import merge as merge_runs
from ..data._dataset import DatasetError
from ..data._units import UnitError
from ..model._parameters import parameter_infos
from ..runtime._compilation_cache import enable_compilation_cache
from . import _distributed
from ._compare_job import PRINTED_COLUMNS, compare_job
from ._config import (
    ConfigError,
    PetabConfig,
    apply_override,
    load_config,
    parse_override,
    read_yaml,
    with_values,
)
from ._jobs import check_job, export_job, fit_job, simulate_job, sweep_job, synth_job
from ._population_job import population_job, population_vpc
from ._report import summary_rows, write_report
from ._resolve import bundled_cohort
from ._run_dir import JobError, default_run_dir, package_version

# help texts are Markdown (`code` spans): brackets such as `simulate.presets=[t2dm]` and
# "mgjax[petab]" show as written (rich markup would swallow them as style tags)
app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode="markdown",
    help="mgjax: Mg²⁺ × type 2 diabetes physiology in JAX — simulate, synthesise, fit, report.",
)
console = Console()
_STATE = {"debug": False}


@app.callback()
def _main(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks instead of one message."),
) -> None:
    _STATE["debug"] = debug


def _fail(message: str) -> None:
    """Print one error message (its brackets as written, not as rich markup) and exit with 2."""
    console.print(
        f"[red]error:[/red] {escape(message)}", highlight=False, markup=True, soft_wrap=True
    )
    raise typer.Exit(code=2)


@contextlib.contextmanager
def _errors():
    """One clear message and exit code 2 for anything the user can fix."""
    try:
        yield
    except typer.Exit:
        raise
    except (ConfigError, DatasetError, JobError, RunDirectoryError, UnitError) as e:
        if _STATE["debug"]:
            raise
        _fail(str(e))
    except (FileNotFoundError, PermissionError, IsADirectoryError, ValueError) as e:
        if _STATE["debug"]:
            raise
        _fail(f"{type(e).__name__}: {e}")
    except KeyboardInterrupt:
        console.print(
            "[red]interrupted:[/red] finished work is saved — run the same command with "
            "--resume to continue",
            highlight=False,
        )
        raise typer.Exit(code=130) from None


def _cache() -> None:
    """JAX's persistent compilation cache for command-line runs (off: MGJAX_COMPILATION_CACHE=0)."""
    if os.environ.get("MGJAX_COMPILATION_CACHE", "1") != "0":
        enable_compilation_cache()


def _config(config: str | None, overrides: list[str] | None, extra: list[str] = ()):
    """Load CONFIG (a path, or None for the defaults) with overrides; an override given in the
    CONFIG position (it contains '=') counts as an override."""
    overrides = list(overrides or [])
    if config is not None and "=" in config and not Path(config).exists():
        overrides.insert(0, config)
        config = None
    if config is not None and not Path(config).exists():
        raise ConfigError(f"{config}: no such config file (see configs/ for examples)")
    return load_config(config, [*overrides, *extra])


CONFIG_ARG = typer.Argument(None, help="YAML run config (default: built-in defaults).")
OVERRIDES_ARG = typer.Argument(None, help="Overrides key.sub=value, e.g. solver.rtol=1e-8.")


def default_cohort_path() -> Path:
    """The bundled virtual cohort (the main job's default data)."""
    return bundled_cohort()


def _print_fit(summary: dict, out: Path) -> None:
    table = Table(title=f"fit → {out}")
    for key, value in summary_rows(summary):
        table.add_row(key, f"{value:.2f}" if isinstance(value, float) else str(value))
    console.print(table)


# --- commands -------------------------------------------------------------------------------------


@app.command()
def run(
    config: str | None = CONFIG_ARG,
    overrides: list[str] | None = OVERRIDES_ARG,
    out: Path | None = typer.Option(
        None, help="Run directory (default `<output_dir>/<timestamp>`)."
    ),
    force: bool = typer.Option(False, help="Replace an existing run directory."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """The main job: fit the bundled virtual cohort (or `data.path`) and write the run
    directory with its report.

    Example: `mgjax run` or `mgjax run configs/default.yaml optimiser.max_steps=100`
    """
    with _errors():
        cfg = _config(config, overrides)
        _cache()
        out = out or default_run_dir(cfg)
        summary = fit_job(cfg, out, force=force, progress=progress)
        _print_fit(summary, out)
        console.print(f"report: {out / 'report.html'}")


@app.command("fit")
def fit_command(
    config: str | None = CONFIG_ARG,
    overrides: list[str] | None = OVERRIDES_ARG,
    out: Path = typer.Option(..., help="Run directory."),
    data: Path | None = typer.Option(
        None, help="Dataset folder (default: data.path, else the bundled cohort)."
    ),
    shard: str | None = typer.Option(
        None, help="i/n: fit only shard i of n (scheduler job arrays)."
    ),
    resume: bool = typer.Option(False, help="Continue an interrupted run in --out."),
    force: bool = typer.Option(False, help="Replace an existing run directory."),
    free: str | None = typer.Option(
        None, help="Shortcut for fit.free: comma-separated parameters."
    ),
    width: int | None = typer.Option(None, help="Shortcut for batch.width (lanes; bounds memory)."),
    round_steps: int | None = typer.Option(None, help="Shortcut for batch.round_steps."),
    workers: int | None = typer.Option(
        None, help="Shortcut for batch.workers (CPU processes, one per core)."
    ),
    max_steps: int | None = typer.Option(None, help="Shortcut for optimiser.max_steps."),
    report: bool | None = typer.Option(
        None,
        "--report/--no-report",
        help="Write the plots and report.html (default report.enabled).",
    ),
    distributed: bool = typer.Option(
        False, help="Multi-process: call jax.distributed.initialize and split over processes."
    ),
    coordinator: str | None = typer.Option(
        None, help="With --distributed: host:port of process 0."
    ),
    num_processes: int | None = typer.Option(None, help="With --distributed: number of processes."),
    process_id: int | None = typer.Option(None, help="With --distributed: this process's index."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Fit every subject of a dataset: one vmapped program over lanes of subjects, sharded
    over the local devices; finished subjects are written as they finish (`--resume`).

    Example: `mgjax fit configs/cohort_batch.yaml batch.width=128 --data cohorts/c1000
    --out runs/c1000`
    """
    with _errors():
        shortcuts = _fit_shortcuts(free, width, round_steps, workers, max_steps)
        cfg = _config(config, overrides, shortcuts)
        shard_pair = parse_shard(shard) if shard else None
        if distributed:
            shard_pair = _join_distributed(cfg, shard, coordinator, num_processes, process_id)
        _cache()
        summary = fit_job(
            cfg,
            out,
            data=data,
            shard=shard_pair,
            resume=resume,
            force=force,
            progress=progress,
            report=False if distributed else report,  # None: the config's report.enabled
            shared_directory=distributed,
        )
        if distributed:
            _merge_distributed(out, shard_pair)
        _print_fit(summary, out)


def _fit_shortcuts(free, width, round_steps, workers, max_steps) -> list[str]:
    """`mgjax fit`'s shortcut options as overrides."""
    extra = []
    if free:
        extra.append(f"fit.free=[{free}]")
    for key, value in (
        ("batch.width", width),
        ("batch.round_steps", round_steps),
        ("batch.workers", workers),
        ("optimiser.max_steps", max_steps),
    ):
        if value is not None:
            extra.append(f"{key}={value}")
    return extra


def _join_distributed(cfg, shard, coordinator, num_processes, process_id) -> tuple[int, int]:
    """This process's shard of a `jax.distributed` job (restarting joined when not yet)."""
    if shard:
        _fail("--shard and --distributed both split the cohort; use one")
    if cfg.batch.workers > 1:
        _fail("--distributed and batch.workers both split the cohort; use one")
    if not _distributed.joined():
        # jax.distributed must start before any JAX array exists: restart joined
        settings = {
            key: str(value)
            for key, value in (
                ("JAX_COORDINATOR_ADDRESS", coordinator),
                ("MGJAX_NUM_PROCESSES", num_processes),
                ("MGJAX_PROCESS_ID", process_id),
            )
            if value is not None
        }
        _distributed.restart_joined(sys.argv[1:], settings)
    return jax.process_index(), jax.process_count()


def _merge_distributed(out: Path, shard_pair: tuple[int, int]) -> None:
    """Wait for every process; process 0 merges their parts."""
    multihost_utils.sync_global_devices("mgjax fit: all shards written")
    if shard_pair[0] == 0:
        merge_runs([out], out)
        console.print(f"process 0 merged {shard_pair[1]} processes' results in {out}")


@app.command("petab")
@typing.no_type_check  # Typer hands a click Context where `typer.Context` is written
def petab_command(
    ctx: typer.Context,
    problem: Path = typer.Argument(..., help="PEtab v1 problem YAML."),
    overrides: list[str] | None = typer.Argument(
        None, help="Overrides petab.key=value (the options below set the same keys)."
    ),
    config: Path | None = typer.Option(
        None, help="YAML run config; its petab: section holds the settings (docs/cli.md)."
    ),
    out: Path = typer.Option(..., help="Run directory."),
    nominal: bool = typer.Option(
        False,
        help="Only evaluate at the nominal parameters (simulations.tsv, nllh, chi2).",
    ),
    starts: int = typer.Option(20, help="Multistart: number of random starts within the bounds."),
    seed: int = typer.Option(0, help="Seed of the random starts."),
    starts_file: Path | None = typer.Option(
        None, help="Starts on the PEtab scale (.npy, or .tsv/.csv with a column per parameter)."
    ),
    max_steps: int = typer.Option(1000, help="Optimiser iterations per start."),
    rtol: float = typer.Option(1e-6, help="ODE solver relative tolerance."),
    atol: float = typer.Option(1e-10, help="ODE solver absolute tolerance."),
    hierarchical: bool = typer.Option(
        True,
        help="Scaling and noise parameters in closed form (fewer outer parameters).",
    ),
    optimiser: str = typer.Option(
        "fides",
        help="Local optimiser: fides (bounded trust region on the PEtab scale) or "
        "levenberg_marquardt (Optimistix, through a bound transform).",
    ),
    hessian: str = typer.Option(
        "gauss_newton",
        help="fides' Hessian: gauss_newton (JᵀJ) or a structured secant update "
        "(gnsbfgs, tssm, ssm, fx).",
    ),
    restarts: int = typer.Option(
        10,
        help="fides: restart each start's fit from its end point (a fresh trust region) up "
        "to this many times while each restart lowers the NLLH by >= 1e-3 (0: off).",
    ),
    explore: bool = typer.Option(
        True,
        help="fides: from each start that lowers the run's best NLLH, walk its flattest "
        "directions (practically non-identifiable combinations) to where the NLLH rises by 1 "
        "and fit again from there, keeping a lower optimum.",
    ),
    vmap: bool = typer.Option(
        False,
        help="All starts in one vmapped program (GPU; Levenberg–Marquardt); default one "
        "after another.",
    ),
    force: bool = typer.Option(False, help="Replace an existing run directory."),
    resume: bool = typer.Option(
        False,
        help="Continue an interrupted fit in --out with the same settings: the starts saved "
        "there (starts/) are kept, the others fitted.",
    ),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Evaluate (`--nominal`) or fit (multistart) a PEtab v1 problem; writes simulations.tsv,
    summary.json and, for a fit, multistart.csv, best_parameters.tsv and report.html.
    Needs the `petab` extra (`pip install "mgjax[petab]"`).

    Example: `mgjax petab Brannmark_JBC2010/Brannmark_JBC2010.yaml --starts 20 --out runs/bra`
    """
    with _errors():
        petab_job, petab_errors = _petab_extra()
        values = dict(
            nominal=nominal,
            starts=starts,
            seed=seed,
            starts_file=starts_file,
            max_steps=max_steps,
            rtol=rtol,
            atol=atol,
            hierarchical=hierarchical,
            optimiser=optimiser,
            hessian=hessian,
            restarts=restarts,
            explore=explore,
            vmap=vmap,
        )
        options = {name: value for name, value in values.items() if _given(ctx, name)}
        cfg = _petab_config(config, overrides, problem, options)
        _cache()
        try:
            summary = petab_job(cfg, out, force=force, resume=resume, progress=progress)
        except petab_errors as e:
            _fail(str(e))
        _print_petab(summary, problem, out)


def _petab_extra():
    """(`petab_job`, the errors of the PEtab import), or one message naming the missing
    package of the `petab` extra."""
    try:
        # lazy: the petab extra is optional; the rest of the command line works without it
        from ..petab import PetabError, UnsupportedSBMLError
        from ._petab_job import petab_job
    except ImportError as e:
        _fail(f'{e.name} is missing: install the PEtab extra, pip install "mgjax[petab]"')
    return petab_job, (PetabError, UnsupportedSBMLError)


def _given(ctx: typing.Any, name: str) -> bool:
    """Whether option `name` was given (on the command line or in the environment); `ctx`:
    the command's click context (Typer passes click's own class, not `typer.Context`)."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name != "DEFAULT"


def _petab_config(config: Path | None, overrides, problem: Path, options: dict):
    """The run config (`--config`, overrides) with `options` (those given on the command line)
    and the problem file set in its `petab:` section; an option wins over the config."""
    with_values(PetabConfig(), options)  # a bad option's value: the option's own message
    settings = {f"petab.{key}": value for key, value in options.items()}
    return load_config(config, overrides or [], settings | {"petab.problem": problem})


def _print_petab(summary: dict, problem: Path, out: Path) -> None:
    keys = ("nllh", "chi2", "best_nllh", "starts", "converged", "starts_at_best", "seconds_total")
    table = Table(title=f"{problem.name} → {out}")
    table.add_column("")
    table.add_column("value")
    for key in keys:
        if key in summary:
            table.add_row(key, str(summary[key]))
    console.print(table)


@app.command()
def population(
    config: str | None = CONFIG_ARG,
    overrides: list[str] | None = OVERRIDES_ARG,
    data: Path | None = typer.Option(
        None,
        help="NONMEM-style CSV (the one-compartment model); shortcut for population.data.",
    ),
    out: Path = typer.Option(..., help="Run directory."),
    force: bool = typer.Option(False, help="Replace an existing run directory."),
    resume: bool = typer.Option(
        False, help="Continue a killed SAEM run in OUT from its checkpoint (same command)."
    ),
) -> None:
    """Fit a population (nonlinear mixed-effects) model by FOCE-I, SAEM or NUTS
    (`population.method`) — the one-compartment oral model to a NONMEM-style CSV: typical
    values, covariate effects, random effects; writes population_parameters.csv,
    random_effects.csv, omega.csv, individual_parameters.csv, predictions.csv, summary.json
    and report.html (GOF plots, VPC; not for NUTS) (docs/population.md).

    Example: `mgjax population configs/population_pk.yaml --data pk.csv --out runs/pk`
    """
    with _errors():
        cfg = _config(config, overrides, [f"population.data={data}"] if data else [])
        _cache()
        summary = population_job(cfg, out, force=force, resume=resume)
        table = Table(title=f"population → {out}")
        keys = ("ofv", "aic", "bic", "converged", "iterations", "subjects", "seconds_total")
        if summary["method"] == "nuts":
            keys = ("divergences", "max_r_hat", "min_ess", "subjects", "seconds_total")
        for key in keys:
            value = summary[key]
            table.add_row(key, f"{value:.3f}" if isinstance(value, float) else str(value))
        console.print(table)


@app.command()
def vpc(
    run: Path = typer.Argument(..., help="A finished population run directory."),
    replicates: int | None = typer.Option(
        None, min=1, help="Simulated datasets (default population.vpc_replicates, 200)."
    ),
    bins: int | None = typer.Option(
        None, min=1, help="Time bins (quantiles; default population.vpc_bins, 10)."
    ),
    stratify: str | None = typer.Option(None, help="Covariate column to stratify by."),
    prediction_corrected: bool | None = typer.Option(
        None,
        "--prediction-corrected/--no-prediction-corrected",
        help="Also the prediction-corrected VPC (default population.vpc_prediction_corrected).",
    ),
    seed: int | None = typer.Option(None, help="Simulation seed (default the run's seed)."),
    data: Path | None = typer.Option(None, help="The run's NONMEM-style CSV, if it moved."),
) -> None:
    """Redraw the visual predictive check (and the rest of report.html) of a population run,
    e.g. with more replicates; writes vpc.csv, vpc.png (pcvpc.png) and report.html.

    Example: `mgjax vpc runs/pk --replicates 1000 --stratify sex --prediction-corrected`
    """
    with _errors():
        if not (run / "population_fit.json").exists():
            _fail(f"{run}: no population_fit.json; is this a finished `mgjax population` run?")
        _cache()
        options = dict(replicates=replicates, bins=bins, stratify=stratify, seed=seed)
        path = population_vpc(run, data=data, prediction_corrected=prediction_corrected, **options)
        console.print(f"wrote {run / 'vpc.csv'} and {path}")


@app.command()
def synth(
    config: str | None = CONFIG_ARG,
    overrides: list[str] | None = OVERRIDES_ARG,
    out: Path = typer.Option(..., help="Folder to write the virtual cohort into."),
    n: int | None = typer.Option(None, help="Shortcut for synth.n (split evenly over the groups)."),
    groups: str | None = typer.Option(
        None, help="Shortcut for synth.groups: comma-separated groups, or group=count pairs."
    ),
    seed: int | None = typer.Option(
        None, help="Shortcut for seed (a cohort is deterministic for a seed)."
    ),
    force: bool = typer.Option(False, help="Replace an existing cohort folder."),
) -> None:
    """Sample a virtual cohort: parameters from each group's log-normal population, the
    default study design (isoglycaemic clamp + fasting Mg²⁺ labs), noise from the error model.
    Writes observations.csv, doses.csv, subjects.csv (the dataset format) and truth.csv.

    Example: `mgjax synth --n 1000 --seed 1 --out cohorts/c1000`
    """
    with _errors():
        extra = []
        if n is not None:
            extra.append(f"synth.n={n}")
        if seed is not None:
            extra.append(f"seed={seed}")
        if groups:
            items = [g.strip() for g in groups.split(",") if g.strip()]
            if any("=" in g for g in items):
                pairs = [g.split("=", 1) for g in items]
                if any(len(p) != 2 or not p[1].strip().isdigit() for p in pairs):
                    _fail(f"--groups {groups!r}: write group=count pairs, e.g. healthy=10,t2dm=20")
                extra.append("synth.groups={" + ",".join(f"{k}: {v}" for k, v in pairs) + "}")
            else:
                extra.append(f"synth.groups=[{','.join(items)}]")
        cfg = _config(config, overrides, extra)
        _cache()
        info = synth_job(cfg, out, force=force)
        console.print(
            f"wrote {info['subjects']} subjects ({info['observations']} observations) to {out} "
            f"in {info['seconds']:.1f} s"
        )
        if info["redrawn"] != "none":
            console.print(f"drew again (their simulation failed): {escape(info['redrawn'])}")


@app.command()
def simulate(
    config: str | None = CONFIG_ARG,
    overrides: list[str] | None = OVERRIDES_ARG,
    out: Path = typer.Option(..., help="Folder for trajectories.csv."),
    force: bool = typer.Option(False, help="Replace an existing folder."),
) -> None:
    """Simulate the presets of `simulate.presets` under the protocols of `simulate.protocols`;
    writes `trajectories.csv` in the observation format (subject, protocol, time, time_unit,
    observable, value, unit) and a figure.

    Example: `mgjax simulate configs/default.yaml --out runs/sim simulate.presets=[t2dm]`
    """
    with _errors():
        cfg = _config(config, overrides)
        _cache()
        frame = simulate_job(cfg, out, force=force)
        console.print(f"wrote {len(frame)} rows to {out / 'trajectories.csv'}")


@app.command()
def export(
    config: str | None = CONFIG_ARG,
    overrides: list[str] | None = OVERRIDES_ARG,
    out: Path = typer.Option(..., help="Folder for the PEtab problems."),
    estimate: str | None = typer.Option(
        None, help="Comma-separated model parameters the problems estimate (default none)."
    ),
    force: bool = typer.Option(False, help="Replace an existing folder."),
) -> None:
    """Write the coupled model as SBML and each preset × protocol of `simulate` as a PEtab v1
    problem (`<out>/<preset>_<protocol>/`: model.xml, the tables, the YAML; measurements are
    the preset's own simulation), for AMICI, pyPESTO, COPASI or `mgjax petab`. Needs the
    `petab` extra.

    Example: `mgjax export --out runs/export simulate.presets=[t2dm] --estimate egp_max`
    """
    with _errors():
        try:
            from ..petab import ExportError
        except ImportError as e:
            _fail(f'{e.name} is missing: install the PEtab extra, pip install "mgjax[petab]"')
        cfg = _config(config, overrides)
        names = tuple(p.strip() for p in (estimate or "").split(",") if p.strip())
        try:
            paths = export_job(cfg, out, estimate=names, force=force)
        except ExportError as e:
            _fail(str(e))
        for path in paths:
            console.print(f"wrote {path}")


@app.command()
def sweep(
    config: str | None = CONFIG_ARG,
    overrides: list[str] | None = OVERRIDES_ARG,
    grid: list[str] = typer.Option(..., help="key=v1,v2,… (repeat for more axes; the product)."),
    out: Path = typer.Option(..., help="Folder: one run per point plus sweep.csv."),
    data: Path | None = typer.Option(
        None, help="Dataset folder (default: data.path, else bundled)."
    ),
    force: bool = typer.Option(False, help="Replace an existing sweep folder."),
) -> None:
    """A hyperparameter sweep: one fit per grid point (`out/point-k/`), and `out/sweep.csv`
    with each point's values, convergence, median loss and estimates, compile and run time.

    Example: `mgjax sweep configs/default.yaml --grid solver.rtol=1e-6,1e-8
    --grid batch.round_steps=4,8 --out runs/sweep`
    """
    with _errors():
        raw = read_yaml(config) if config and "=" not in config else {}
        items = list(overrides or [])
        if config and "=" in config:
            items.insert(0, config)
        for text in items:
            apply_override(raw, *parse_override(text), text)
        _cache()
        table = sweep_job(raw, str(config or "config"), grid, out, data=data, force=force)
        shown = Table(title=f"sweep → {out / 'sweep.csv'}")
        columns = [c for c in table.columns if not c.startswith(("median[", "identifiable["))]
        for c in columns:
            shown.add_column(c)
        for _, row in table.iterrows():
            shown.add_row(
                *[f"{row[c]:.4g}" if isinstance(row[c], float) else str(row[c]) for c in columns]
            )
        console.print(shown)


@app.command()
def compare(
    config: str | None = CONFIG_ARG,
    overrides: list[str] | None = OVERRIDES_ARG,
    out: Path | None = typer.Option(
        None, help="Run directory (default `<output_dir>/<timestamp>`)."
    ),
    data: Path | None = typer.Option(None, help="Dataset folder (default `data.path`)."),
    force: bool = typer.Option(False, help="Replace an existing run directory."),
) -> None:
    """Fit the model variants of `compare.variants` to the same data and print the hypothesis
    table: OFV, AIC, BIC, a likelihood-ratio test where one variant is nested in another, and the
    cross-validated held-out negative log-likelihood (`compare.csv`, `report.html`).

    Example: `mgjax compare configs/compare_hypotheses.yaml`
    """
    with _errors():
        cfg = _config(config, overrides)
        _cache()
        out = out or default_run_dir(cfg)
        table = compare_job(cfg, out, data=data, force=force)
        shown = Table(title=f"hypotheses → {out / 'compare.csv'}")
        for c in PRINTED_COLUMNS:
            shown.add_column(c)
        for _, row in table.iterrows():
            shown.add_row(
                *[
                    f"{row[c]:.4g}" if isinstance(row[c], float) else str(row[c])
                    for c in PRINTED_COLUMNS
                ]
            )
        console.print(shown)
        console.print(f"report: {out / 'report.html'}")


@app.command()
def check(
    data: Path = typer.Option(..., help="Dataset folder to validate."),
) -> None:
    """Validate a dataset (docs/data.md) without fitting: every problem is reported with its
    file, row and column.

    Example: `mgjax check --data cohorts/c1000`
    """
    with _errors():
        info = check_job(data)
        table = Table(title=f"{data}: valid")
        table.add_column("")
        table.add_column("value")
        for key, value in info.items():
            table.add_row(key, json.dumps(value) if isinstance(value, dict) else str(value))
        console.print(table)


@app.command()
def convert(
    data: Path = typer.Argument(
        ..., help="NONMEM-style CSV (ID, TIME, DV, MDV, EVID, AMT, RATE, CMT, ADDL, II, …)."
    ),
    overrides: list[str] | None = typer.Argument(None, help="Overrides convert.key=value."),
    config: Path | None = typer.Option(
        None, help="YAML run config; its convert: section maps each CMT (docs/data.md)."
    ),
    out: Path = typer.Option(..., help="Folder for the native dataset."),
    force: bool = typer.Option(False, help="Replace a folder mgjax wrote before."),
) -> None:
    """Convert a NONMEM-style CSV into the native dataset (observations.csv, doses.csv,
    subjects.csv, config.yaml): each CMT mapped by the config's `convert:` section to an
    observable and unit or a dose's route, substance and unit; validated like `mgjax check`,
    every problem named by the CSV's row and column.

    Example: `mgjax convert study.csv --config configs/convert_nonmem.yaml --out data/study`
    """
    # the conversion is the data layer's (mgjax.data.convert_nonmem); imported here, with the
    # folder handling, to keep this command in one block
    from ..data._nonmem import convert_nonmem
    from ._config import to_yaml
    from ._run_dir import prepare_run_dir

    with _errors():
        cfg = load_config(config, overrides or [])
        if not data.is_file():
            raise JobError(f"{data}: no such NONMEM-style CSV file")
        fresh = not out.exists()
        out = prepare_run_dir(out, force=force)
        try:
            dataset = convert_nonmem(data, out, **cfg.convert.model_dump())
        except BaseException:
            if fresh and not any(out.iterdir()):
                out.rmdir()
            raise
        (out / "config.yaml").write_text(to_yaml(cfg), encoding="utf-8")
        console.print(
            f"wrote {len(dataset.subject_ids)} subjects ({len(dataset.observations)} "
            f"observations, {len(dataset.doses)} dose records) to {out}"
        )


@app.command()
def report(
    run: Path = typer.Argument(..., help="A finished fit run directory."),
) -> None:
    """(Re)draw the plots and report.html of a fit run.

    Example: `mgjax report runs/c1000`
    """
    with _errors():
        if not (run / "config.yaml").exists():
            _fail(f"{run}: no config.yaml; is this an mgjax fit run directory?")
        _cache()
        console.print(f"wrote {write_report(run)}")


@app.command()
def merge(
    runs: list[Path] = typer.Argument(..., help="Run directories (shards of one job)."),
    out: Path = typer.Option(..., help="Folder for the merged tables."),
    allow_missing: bool = typer.Option(
        False,
        help="Merge even if whole shards are missing (summary.json lists them as "
        "missing_shards); by default a missing shard is refused, by name.",
    ),
) -> None:
    """Merge the shards of a batch job (`mgjax fit --shard i/n`) into one set of tables.
    Refuses a subject seen twice, a shard with unfinished subjects and a shard that is missing
    (unless --allow-missing).

    Example: `mgjax merge runs/shard0 runs/shard1 --out runs/all`
    """
    with _errors():
        summary = merge_runs(runs, out, allow_missing=allow_missing)
        first = runs[0] / "config.yaml"
        if first.exists() and not (out / "config.yaml").exists():
            (out / "config.yaml").write_text(first.read_text())
        console.print(f"merged {summary['subjects']} subjects into {out}")
        if summary.get("missing_shards"):
            console.print(f"without the missing shard(s) {', '.join(summary['missing_shards'])}")


@app.command()
def params(
    match: str | None = typer.Argument(None, help="Show only parameters whose name contains this."),
) -> None:
    """List the model's parameters: name, unit, default, plausible range.

    Example: `mgjax params mg`
    """
    table = Table(title="parameters (model units)")
    for c in ("name", "unit", "default", "lower", "upper"):
        table.add_column(c)
    for name, info in parameter_infos().items():
        if match and match not in name:
            continue
        table.add_row(name, info.unit, f"{info.default:g}", f"{info.lower:g}", f"{info.upper:g}")
    console.print(table)


@app.command()
def version() -> None:
    """Print the package version."""
    console.print(package_version())


def main() -> None:
    app()
