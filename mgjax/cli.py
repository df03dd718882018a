"""The `mgjax` command line.

`mgjax run` runs the model's main demonstration on the bundled presets; `mgjax synth`,
`mgjax fit` and `mgjax merge` are the batch-fitting jobs.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, help="mgjax: Mg²⁺ × type 2 diabetes physiology in JAX.")
console = Console()


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code=2)


@app.command()
def run(
    config: Path = typer.Argument(None, help="YAML run config (default: built-in defaults)."),
    out: Path = typer.Option(None, help="Run directory (default <output_dir>/<timestamp>)."),
    weeks: int = typer.Option(None, help="Override supplement.weeks."),
    force: bool = typer.Option(False, help="Write into an existing run directory."),
) -> None:
    """Fasting steady states of the presets and a Mg²⁺ supplementation course.

    Example: `mgjax run configs/default.yaml --out runs/demo`
    """
    from ._compilation_cache import enable_compilation_cache
    from ._config import ConfigError, load_run_config

    try:
        cfg = load_run_config(config)
    except ConfigError as e:
        _fail(str(e))
    if weeks is not None:
        cfg.supplement.weeks = weeks
    out = out or cfg.output_dir / _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    if out.exists() and any(out.iterdir()) and not force:
        _fail(f"{out} exists and is not empty; choose another --out or pass --force")
    out.mkdir(parents=True, exist_ok=True)
    if os.environ.get("MGJAX_COMPILATION_CACHE", "1") != "0":
        enable_compilation_cache()

    from ._main_job import presets_demo

    t0 = time.perf_counter()
    summary = presets_demo(out, cfg)
    elapsed = time.perf_counter() - t0
    table = Table(
        title=f"Fasting state and {cfg.supplement.weeks}-week supplementation "
        f"({cfg.supplement.dose_mmol_per_day:g} mmol/day)"
    )
    for col in summary[0]:
        table.add_column(col, justify="right")
    for row in summary:
        table.add_row(*[f"{v:.3g}" if isinstance(v, float) else str(v) for v in row.values()])
    console.print(table)
    (out / "config.json").write_text(cfg.model_dump_json(indent=2))
    (out / "summary.json").write_text(json.dumps(dict(rows=summary, seconds=elapsed), indent=2))
    console.print(f"wrote {out} in {elapsed:.1f} s")


def _cache(enabled: bool = True) -> None:
    from ._compilation_cache import enable_compilation_cache

    if enabled and os.environ.get("MGJAX_COMPILATION_CACHE", "1") != "0":
        enable_compilation_cache()


@app.command()
def synth(
    out: Path = typer.Option(..., help="Folder to write the virtual cohort into."),
    n: int = typer.Option(60, help="Subjects, split evenly over the groups."),
    groups: str = typer.Option(
        "healthy,t2dm,t2dm_hypomagnesemia",
        help="Comma-separated group presets (population distributions), or group=count pairs.",
    ),
    seed: int = typer.Option(0, help="Random seed (the cohort is deterministic for a seed)."),
    force: bool = typer.Option(False, help="Overwrite an existing cohort folder."),
) -> None:
    """Sample a virtual cohort: parameters from each group's log-normal population, the
    default study design (isoglycaemic clamp + fasting Mg²⁺ labs), noise from the error model.
    Writes observations.csv, doses.csv, subjects.csv (the dataset format) and truth.csv.

    Example: `mgjax synth --n 1000 --seed 1 --out cohorts/c1000`
    """
    from ._cohort import GROUPS, synthesize

    if out.exists() and any(out.iterdir()) and not force:
        _fail(f"{out} exists and is not empty; choose another --out or pass --force")
    counts: dict[str, int] | int
    items = [g.strip() for g in groups.split(",") if g.strip()]
    if any("=" in g for g in items):
        try:
            counts = {g.split("=")[0].strip(): int(g.split("=")[1]) for g in items}
        except (ValueError, IndexError):
            _fail(f"--groups {groups!r}: write group=count pairs, e.g. healthy=10,t2dm=20")
    else:
        counts = {g: 0 for g in items}
        for k in range(n):
            counts[items[k % len(items)]] += 1
    unknown = [g for g in counts if g not in GROUPS]
    if unknown:
        _fail(f"unknown group(s) {unknown}; choose from {', '.join(GROUPS)}")
    _cache()
    t0 = time.perf_counter()
    cohort = synthesize(counts, seed=seed)
    cohort.write(out)
    console.print(
        f"wrote {len(cohort.subjects)} subjects ({len(cohort.observations)} observations) to "
        f"{out} in {time.perf_counter() - t0:.1f} s"
    )


@app.command("fit")
def fit_command(
    out: Path = typer.Option(..., help="Run directory."),
    data: Path = typer.Option(None, help="Dataset folder (default: the bundled cohort)."),
    free: str = typer.Option(
        None, help="Comma-separated parameters to estimate (default: the cohort's five)."
    ),
    width: int = typer.Option(64, help="Subjects in flight at once (lanes; bounds memory)."),
    round_steps: int = typer.Option(8, help="Optimiser iterations between lane refills."),
    max_steps: int = typer.Option(200, help="Iteration budget per subject."),
    shard: str = typer.Option(None, help="i/n: fit only shard i of n (scheduler job arrays)."),
    resume: bool = typer.Option(False, help="Continue an interrupted run in --out."),
    distributed: bool = typer.Option(
        False, help="Multi-process: call jax.distributed.initialize and split over processes."
    ),
    coordinator: str = typer.Option(None, help="With --distributed: host:port of process 0."),
    num_processes: int = typer.Option(None, help="With --distributed: number of processes."),
    process_id: int = typer.Option(None, help="With --distributed: this process's index."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Fit every subject of a dataset in one vmapped program (chunked lanes, sharded over
    the local devices), writing finished subjects as they finish; `--resume` continues.

    Example: `mgjax fit --data cohorts/c1000 --out runs/c1000 --width 128`
    """
    from . import batch
    from ._cohort import COHORT_PARAMETERS, cohort_error_models
    from ._dataset import DatasetError, load_dataset

    try:
        shard_pair = batch.parse_shard(shard) if shard else (0, 1)
    except ValueError as e:
        _fail(str(e))
    if distributed:
        if shard:
            _fail("--shard and --distributed both split the cohort; use one")
        if os.environ.get("MGJAX_DISTRIBUTED") != "1":
            # jax.distributed must start before any JAX array exists: restart with it on
            import sys

            env = dict(os.environ, MGJAX_DISTRIBUTED="1")
            for key, value in (
                ("JAX_COORDINATOR_ADDRESS", coordinator),
                ("MGJAX_NUM_PROCESSES", num_processes),
                ("MGJAX_PROCESS_ID", process_id),
            ):
                if value is not None:
                    env[key] = str(value)
            os.execvpe(sys.executable, [sys.executable, "-m", "mgjax", *sys.argv[1:]], env)
        import jax

        shard_pair = (jax.process_index(), jax.process_count())
    _cache()
    folder = data or default_cohort_path()
    try:
        dataset = load_dataset(folder)
    except (DatasetError, FileNotFoundError) as e:
        _fail(str(e))
    names = tuple(n.strip() for n in free.split(",")) if free else COHORT_PARAMETERS
    from ._parameters import parameter_infos

    unknown = [n for n in names if n not in parameter_infos()]
    if unknown:
        _fail(f"unknown parameter(s) {unknown}; see `mgjax.parameter_names()`")
    observables = sorted(dataset.observations["observable"].unique())
    settings = batch.BatchSettings(width=width, round_steps=round_steps, max_steps=max_steps)
    t0 = time.perf_counter()
    try:
        result = batch.fit_batch(
            dataset,
            names,
            out,
            settings=settings,
            shard=shard_pair,
            resume=resume,
            error_models=cohort_error_models(observables),
            progress=progress,
        )
    except (batch.RunDirectoryError, ValueError) as e:
        _fail(str(e))
    if distributed:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("mgjax fit: all shards written")
        if shard_pair[0] == 0:
            batch.merge([out], out)
            console.print(f"process 0 merged {shard_pair[1]} processes' results in {out}")
    s = result.summary
    console.print(
        f"{len(result.subjects)} subjects ({s.get('subjects_resumed', 0)} resumed), "
        f"{int(result.subjects['converged'].sum())} converged, in "
        f"{time.perf_counter() - t0:.1f} s (first round incl. compile "
        f"{s.get('seconds_first_round') or 0:.1f} s) → {out}"
    )


@app.command()
def merge(
    runs: list[Path] = typer.Argument(..., help="Run directories (shards of one job)."),
    out: Path = typer.Option(..., help="Folder for the merged tables."),
) -> None:
    """Merge the shards of a batch job (`mgjax fit --shard i/n`) into one set of tables.

    Example: `mgjax merge runs/shard0 runs/shard1 --out runs/all`
    """
    from . import batch

    try:
        summary = batch.merge(runs, out)
    except batch.RunDirectoryError as e:
        _fail(str(e))
    console.print(f"merged {summary['subjects']} subjects into {out}")


def default_cohort_path() -> Path:
    """The bundled virtual cohort (the main job's default data)."""
    return Path(__file__).parent / "data" / "cohort"


@app.command()
def version() -> None:
    """Print the package version."""
    from . import __version__

    console.print(__version__)


def main() -> None:
    app()
