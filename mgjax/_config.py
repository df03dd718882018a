"""Run configurations (YAML, validated by pydantic). The numerical core never reads them: only
the command line turns a config into objects."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

PresetName = Literal["healthy", "t2dm", "t2dm_hypomagnesemia"]


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file, the key and what is allowed."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SupplementConfig(_Strict):
    dose_mmol_per_day: float = Field(26.0, ge=0.0, le=200.0, description="elemental Mg²⁺")
    weeks: int = Field(16, ge=1, le=520)


class SolverConfig(_Strict):
    rtol: float = Field(1e-6, gt=0.0, lt=1e-2)
    atol: float = Field(1e-9, gt=0.0, lt=1e-2)
    max_steps: int = Field(16384, ge=16)


class RunConfig(_Strict):
    """The main job of `mgjax run`."""

    presets: list[PresetName] = ["healthy", "t2dm", "t2dm_hypomagnesemia"]
    supplement: SupplementConfig = SupplementConfig()
    solver: SolverConfig = SolverConfig()
    output_dir: Path = Path("runs")


def load_run_config(path: Path | None) -> RunConfig:
    """Read and validate a YAML run config (safe-load); `None` gives the defaults."""
    if path is None:
        return RunConfig()
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except FileNotFoundError as e:
        raise ConfigError(f"{path}: no such config file") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values")
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        value = err.get("input")
        raise ConfigError(f"{path}: key '{key}' = {value!r}: {err['msg']}") from e
