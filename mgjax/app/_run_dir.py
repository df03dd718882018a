"""Run directories: creating one safely, and the files every run writes — `config.yaml` (the
resolved config), `environment.json` (package and JAX versions, backend, devices) and
`run.log`. Shared by every job (`_jobs`, `_petab_job`)."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import logging
import platform
import shutil
import sys
from pathlib import Path
from typing import Any

import jax
import jaxlib
from rich.logging import RichHandler

from ._config import RunConfig, to_yaml

#: Files that mark a folder as one of our run directories (safe to clear with `force`).
RUN_MARKERS = ("config.yaml", "parts", "summary.json", "trajectories.csv", "sweep.csv")


class JobError(RuntimeError):
    """A job that cannot run as asked (the message says what to do)."""


def package_version() -> str:
    """The installed mgjax version."""
    return importlib.metadata.version("mgjax")


def default_run_dir(cfg: RunConfig) -> Path:
    """`<output_dir>/<timestamp>`."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return cfg.output_dir / stamp


def prepare_run_dir(out: Path, *, force: bool = False, resume: bool = False) -> Path:
    """Create `out`; refuse a non-empty folder unless resuming or `force` (which clears a
    previous run directory, never a folder that is not one)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise JobError(f"{out} is a file; choose a folder for --out")
    if out.exists() and any(out.iterdir()) and not resume:
        if not force:
            raise JobError(
                f"{out} exists and is not empty; choose another --out, pass --resume to "
                "continue its job, or --force to replace it"
            )
        if not any((out / m).exists() for m in RUN_MARKERS):
            raise JobError(f"{out} is not an mgjax run directory; --force will not clear it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def environment() -> dict[str, Any]:
    """Versions, backend and devices: what a result depends on besides config and data."""
    return dict(
        mgjax=package_version(),
        jax=jax.__version__,
        jaxlib=jaxlib.__version__,
        python=sys.version.split()[0],
        platform=platform.platform(),
        backend=jax.default_backend(),
        devices=[str(d) for d in jax.local_devices()],
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        x64=bool(jax.config.jax_enable_x64),
        compilation_cache=jax.config.jax_compilation_cache_dir,
        command=sys.argv,
        started=_dt.datetime.now().isoformat(timespec="seconds"),
    )


def write_environment(run_dir: Path) -> None:
    """`run_dir/environment.json`."""
    (run_dir / "environment.json").write_text(json.dumps(environment(), indent=2))


def write_run_header(run_dir: Path, cfg: RunConfig) -> None:
    """`config.yaml` (the resolved config) and `environment.json`."""
    (run_dir / "config.yaml").write_text(to_yaml(cfg), encoding="utf-8")
    write_environment(run_dir)


def start_log(run_dir: Path, name: str = "mgjax") -> logging.Logger:
    """A logger writing to `run_dir/run.log` (and to the console through rich)."""
    logger = logging.getLogger(f"{name}.{run_dir.resolve()}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    file = logging.FileHandler(run_dir / "run.log", encoding="utf-8")
    file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(file)
    console = RichHandler(show_path=False, show_time=False, markup=False)
    console.setLevel(logging.INFO)
    logger.addHandler(console)
    return logger
