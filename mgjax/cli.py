"""The `mgjax` command line.

For now `mgjax run` runs the model's main demonstration on the bundled presets; the full
contract (fit, synth, sweep, check, report, merge) comes with the configs/CLI work.
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


@app.command()
def version() -> None:
    """Print the package version."""
    from . import __version__

    console.print(__version__)


def main() -> None:
    app()
