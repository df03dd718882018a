"""The `mgjax` command line.

The full contract (configs, fit, synth, sweep, check, report, merge) is the subject of the
configs/CLI work; for now `mgjax run` runs the model's main demonstration on the bundled presets.
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, help="mgjax: Mg²⁺ × type 2 diabetes physiology in JAX.")
console = Console()


@app.command()
def run(
    out: Path = typer.Option(None, help="Run directory (default runs/<timestamp>)."),
    dose: float = typer.Option(26.0, help="Daily oral Mg²⁺ supplement, mmol/day."),
    weeks: int = typer.Option(16, help="Supplementation length, weeks."),
) -> None:
    """Fasting steady states of the bundled presets and a Mg²⁺ supplementation course.

    Example: `mgjax run --out runs/demo`
    """
    from ._main_job import presets_demo

    out = out or Path("runs") / _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=False)
    t0 = time.perf_counter()
    summary = presets_demo(out, dose=dose, weeks=weeks)
    elapsed = time.perf_counter() - t0
    table = Table(title=f"Fasting state and {weeks}-week supplementation ({dose:g} mmol/day)")
    for col in summary[0]:
        table.add_column(col, justify="right")
    for row in summary:
        table.add_row(*[f"{v:.3g}" if isinstance(v, float) else str(v) for v in row.values()])
    console.print(table)
    (out / "summary.json").write_text(json.dumps(dict(rows=summary, seconds=elapsed), indent=2))
    console.print(f"wrote {out} in {elapsed:.1f} s")


@app.command()
def version() -> None:
    """Print the package version."""
    from . import __version__

    console.print(__version__)


def main() -> None:
    app()
