"""Run directories: creating one safely, and the files every run writes — `config.yaml` (the
resolved config), `environment.json` (package and JAX versions, backend, devices) and
`run.log`; fits also `fingerprint.json` (hashes of the settings and data that `--resume` must
find unchanged). Shared by every job (`_jobs`, `_petab_job`)."""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import shutil
import sys
from pathlib import Path
from typing import Any

import jax
import jaxlib
import yaml
from rich.logging import RichHandler

from ._config import RunConfig, read_yaml, to_yaml, validate

#: Files that mark a folder as one of our run directories (safe to clear with `force`).
RUN_MARKERS = (
    "config.yaml",
    "fingerprint.json",
    "parts",
    "summary.json",
    "trajectories.csv",
    "sweep.csv",
)

#: What `--resume` compares: the settings and data of the run (`fingerprint`).
FINGERPRINT = "fingerprint.json"
#: The dataset files a fit reads (docs/data.md).
DATA_FILES = ("observations.csv", "doses.csv", "subjects.csv")
#: Config keys (and sections) that may change when a fit is resumed: where its files go, how it
#: is spread over lanes, devices and processes (the numbers do not depend on it), the report,
#: and the other commands' sections. The data path is compared by the files' bytes instead.
RESUMABLE_KEYS = (
    "output_dir",
    "data.path",
    "report",
    "batch.width",
    "batch.chunk",
    "batch.devices",
    "batch.workers",
    "batch.shard",
    "synth",
    "simulate",
    "petab",
    "population",
)
#: `extra` of a log record for run.log only (not the console): `log.info(…, extra=FILE_ONLY)`.
FILE_ONLY = {"file_only": True}


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


def remove_unfinished(out: Path) -> bool:
    """Remove `out` (created by a run that failed) unless it holds finished subjects (parts,
    kept for `--resume`). Returns whether it was removed."""
    if any((Path(out) / "parts").glob("part-*.parquet")):
        return False
    shutil.rmtree(out, ignore_errors=True)
    return True


# --- fingerprint ----------------------------------------------------------------------------------


def _flat(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{"a.b": value} of a nested mapping (lists are values)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flat(value, name + "."))
        else:
            flat[name] = value
    return flat


def _settings(cfg: RunConfig) -> dict[str, Any]:
    """The flattened config without `RESUMABLE_KEYS`."""
    flat = _flat(cfg.model_dump(mode="json"))
    return {
        k: v
        for k, v in flat.items()
        if not any(k == r or k.startswith(r + ".") for r in RESUMABLE_KEYS)
    }


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fingerprint(cfg: RunConfig) -> dict[str, Any]:
    """What a fit's results depend on: the settings (`config_sha256`, the sha256 of their
    YAML, and `config`, the flattened keys) and the sha256 of each file of `data.path`."""
    settings = _settings(cfg)
    folder = Path(cfg.data.path)
    return dict(
        config_sha256=_sha256(yaml.safe_dump(settings, sort_keys=True).encode()),
        config=settings,
        data={
            name: _sha256((folder / name).read_bytes())
            for name in DATA_FILES
            if (folder / name).is_file()
        },
    )


_UNSET = object()


def _shown(value: Any) -> str:
    """A setting's value for a message (`unset` where the key is absent)."""
    text = "unset" if value is _UNSET else json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "…"


def _data_changes(old: dict[str, str], new: dict[str, str]) -> list[str]:
    """'observations.csv changed', 'doses.csv added', … between two data fingerprints."""
    changes = []
    for name in DATA_FILES:
        if old.get(name) == new.get(name):
            continue
        what = "added" if name not in old else "removed" if name not in new else "changed"
        changes.append(f"{name} {what}")
    return changes


def _config_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """'key (old → new)' for every setting that differs."""
    return [
        f"{k} ({_shown(old.get(k, _UNSET))} → {_shown(new.get(k, _UNSET))})"
        for k in sorted(set(old) | set(new))
        if old.get(k, _UNSET) != new.get(k, _UNSET)
    ]


def _stored_fingerprint(out: Path) -> dict[str, Any] | None:
    """The fingerprint `out` was started with: its fingerprint.json or, in a run directory
    from before fingerprints, the settings of its config.yaml (no data hashes)."""
    path = out / FINGERPRINT
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    if (out / "config.yaml").is_file():
        config = out / "config.yaml"
        return dict(config=_settings(validate(read_yaml(config), str(config))))
    return None


def check_fingerprint(out: Path, stamp: dict[str, Any]) -> None:
    """Refuse to resume `out` with settings or data other than those it was started with (its
    parts would mix two jobs); names what differs. Reads only: call before writing to `out`."""
    old = _stored_fingerprint(Path(out)) if Path(out).is_dir() else None
    if old is None:
        return
    problems = []
    if "data" in old:
        changed = _data_changes(old["data"], stamp["data"])
        if changed:
            problems.append("the data differ: " + ", ".join(changed))
    changed = _config_changes(old["config"], stamp["config"])
    if changed:
        problems.append("config keys differ: " + ", ".join(changed))
    if problems:
        raise JobError(
            f"cannot resume {out}: it was started with other data or settings "
            f"({'; '.join(problems)}); resume with the same ones, or choose another --out "
            "(--force replaces it)"
        )


def write_fingerprint(out: Path, stamp: dict[str, Any]) -> None:
    """`out/fingerprint.json`, atomically (several shards of a job may share `out`)."""
    path = Path(out) / FINGERPRINT
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(stamp, indent=1), encoding="utf-8")
    os.replace(tmp, path)


# --- environment, header, log ---------------------------------------------------------------------


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


def _to_console(record: logging.LogRecord) -> bool:
    return not getattr(record, "file_only", False)


def start_log(run_dir: Path, name: str = "mgjax") -> logging.Logger:
    """A logger writing to `run_dir/run.log` and, except records logged with
    `extra=FILE_ONLY`, to the console through rich."""
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
    console.addFilter(_to_console)
    logger.addHandler(console)
    return logger


def local_devices(count: int | None, key: str) -> list:
    """The first `count` local devices (None: all); config key `key` names it in the error."""
    devices = jax.local_devices()
    if count is not None:
        if count > len(devices):
            raise JobError(f"{key} = {count} but only {len(devices)} local device(s)")
        devices = devices[:count]
    return devices
