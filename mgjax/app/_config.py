"""Run configurations: YAML files validated by pydantic, command-line overrides and sweeps.

The numerical core never reads a config; the command line turns one into objects
(`mgjax.app._resolve`). One schema serves every command: each reads the sections it needs
(`mgjax petab` its `petab:` section, whose keys its command-line options set).

- `load_config(path, overrides)`: safe-load the YAML, apply `key.sub=value` overrides, validate;
  any problem is one `ConfigError` naming the file, the key, the bad value and what is allowed.
- `grid_points(grid)`: the points of a sweep (`key=v1,v2` per axis; the product).
"""

from __future__ import annotations

import difflib
import itertools
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..batch._store import parse_shard
from ..fit._experiment import INTERVAL_OBSERVABLES
from ..model import OBSERVABLE_UNITS
from ..model._parameters import parameter_infos
from ..protocols import SALT_BIOAVAILABILITY

PresetName = Literal["healthy", "t2dm", "t2dm_hypomagnesemia"]
GROUP_NAMES = ("healthy", "t2dm", "t2dm_hypomagnesemia")
SOLVERS = ("rodas4", "kvaerno5", "kvaerno3", "tsit5")
OPTIMISERS = ("levenberg_marquardt", "lbfgs", "bfgs", "adam")
#: Local optimisers of `mgjax petab`: fides keeps the bounds itself on the PEtab scale;
#: Optimistix's Levenberg–Marquardt moves through MINUIT's sine transform of the bounds.
PETAB_OPTIMISERS = ("fides", "levenberg_marquardt")
#: fides' Hessian strategies (`mgjax.petab._fides.HESSIANS`; named here so the schema loads
#: without the `petab` extra).
PETAB_HESSIANS = ("gauss_newton", "gnsbfgs", "tssm", "ssm", "fx")


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file, the key and what is allowed."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _known_parameter(name: str) -> str:
    infos = parameter_infos()
    if name not in infos:
        close = difflib.get_close_matches(name, list(infos), n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ValueError(f"unknown parameter {name!r}; {hint}list them with `mgjax params`")
    return name


def _known_observable(name: str) -> str:
    known = set(OBSERVABLE_UNITS) | set(INTERVAL_OBSERVABLES)
    if name not in known:
        close = difflib.get_close_matches(name, sorted(known), n=3)
        raise ValueError(
            f"unknown observable {name!r}; "
            + (f"did you mean {', '.join(close)}? " if close else "")
            + f"known: {', '.join(sorted(known))}"
        )
    return name


class DataConfig(_Strict):
    """Where the dataset is (docs/data.md); `null` is the bundled 24-subject virtual cohort."""

    path: Path | None = None


class ModelConfig(_Strict):
    """Each subject's fixed parameters: its group's preset (subjects.csv `group`) unless
    `preset` names one for everyone, then `parameters` (model units) on top."""

    preset: PresetName | None = None
    parameters: dict[str, float] = {}

    @field_validator("parameters")
    @classmethod
    def _names(cls, v: dict[str, float]) -> dict[str, float]:
        for name in v:
            _known_parameter(name)
        return v


class PriorConfig(_Strict):
    """A log-normal prior: median (model units) and coefficient of variation."""

    median: float = Field(gt=0.0)
    cv: float = Field(gt=0.0, le=10.0)


class ErrorModelConfig(_Strict):
    """sigma = sqrt(additive² + (proportional · prediction)²), additive in the observable's
    model unit."""

    additive: float = Field(0.0, ge=0.0)
    proportional: float = Field(0.0, ge=0.0, le=5.0)


class FitConfig(_Strict):
    """What to estimate, its priors (`range` = weak priors from the parameter table's
    plausible ranges) and the error model per observable (default: the cohort's)."""

    free: list[str] = Field(
        default_factory=lambda: [
            "signalling_capacity",
            "egp_max",
            "insulin_clearance_rate",
            "dietary_mg_intake",
            "dct_capacity",
        ],
        min_length=1,
    )
    priors: dict[str, PriorConfig] | Literal["range", "none"] = "none"
    error_model: dict[str, ErrorModelConfig] = {}

    @field_validator("free")
    @classmethod
    def _free(cls, v: list[str]) -> list[str]:
        for name in v:
            _known_parameter(name)
        if len(set(v)) != len(v):
            raise ValueError("a parameter is listed twice")
        return v

    @field_validator("error_model")
    @classmethod
    def _observables(cls, v: dict[str, ErrorModelConfig]) -> dict[str, ErrorModelConfig]:
        for name, model in v.items():
            _known_observable(name)
            if model.additive == 0.0 and model.proportional == 0.0:
                raise ValueError(f"{name}: additive and proportional are both 0 (sigma = 0)")
        return v


class SolverConfig(_Strict):
    """The ODE solver. `adjoint`: `auto` (forward mode for Levenberg–Marquardt, checkpointed
    reverse mode for gradient optimisers), or force `forward` / `checkpoint`."""

    type: Literal["rodas4", "kvaerno5", "kvaerno3", "tsit5"] = "rodas4"
    rtol: float = Field(1e-6, gt=0.0, lt=1e-2)
    atol: float = Field(1e-9, gt=0.0, lt=1e-2)
    max_steps: int = Field(16384, ge=16, le=10_000_000)
    adjoint: Literal["auto", "forward", "checkpoint"] = "auto"


class OptimiserConfig(_Strict):
    """The optimiser: `levenberg_marquardt` runs the vmapped batch engine; the others (and
    multistart) fit subject by subject. `learning_rate` and `schedule` are Adam's."""

    name: Literal["levenberg_marquardt", "lbfgs", "bfgs", "adam"] = "levenberg_marquardt"
    learning_rate: float = Field(0.05, gt=0.0, le=10.0)
    schedule: Literal["cosine"] = "cosine"
    max_steps: int = Field(200, ge=1, le=100_000)
    rtol: float = Field(1e-8, gt=0.0, lt=1.0)
    atol: float = Field(1e-8, gt=0.0, lt=1.0)


class MultistartConfig(_Strict):
    """Latin-hypercube starts within the bounds (1 = from the base model's values)."""

    starts: int = Field(1, ge=1, le=10_000)
    spread: float | None = Field(None, gt=0.0, le=1.0)


class BatchConfig(_Strict):
    """The batch engine: `width` lanes (subjects in flight; bounds memory), refilled every
    `round_steps` iterations, over `devices` local devices (null = all); `shard` `i/n` fits
    every n-th subject (scheduler job arrays); `workers` CPU processes, one per core, each
    with its own lanes (the round program uses one core; 1 = this process, on `devices`);
    `restarts` further starts, with more damping, for a subject whose fit ends implausibly
    (χ² above its 99.9 % quantile; the best start is kept)."""

    width: int = Field(64, ge=1, le=1_000_000)
    round_steps: int = Field(4, ge=1, le=10_000)
    restarts: int = Field(1, ge=0, le=100)
    devices: int | None = Field(None, ge=1)
    workers: int = Field(1, ge=1, le=4096)
    shard: str | None = None

    @field_validator("shard")
    @classmethod
    def _shard(cls, v: str | None) -> str | None:
        if v is not None:
            parse_shard(v)
        return v


class SynthConfig(_Strict):
    """`mgjax synth`: `n` subjects split over `groups` (or `{group: count}`), the default
    study design (isoglycaemic clamp + fasting Mg²⁺ labs)."""

    n: int = Field(24, ge=1, le=10_000_000)
    groups: list[PresetName] | dict[PresetName, int] = list(GROUP_NAMES)


class _Protocol(_Strict):
    name: str | None = None
    every: float = Field(5.0, gt=0.0, description="sampling interval, min (days for trials)")
    observables: list[str] = ["glucose", "insulin", "glucose_infusion", "serum_mg"]

    @field_validator("observables")
    @classmethod
    def _obs(cls, v: list[str]) -> list[str]:
        for name in v:
            _known_observable(name)
        return v


class HyperinsulinemicClampConfig(_Protocol):
    kind: Literal["hyperinsulinemic_clamp"]
    insulin_rate: float = Field(40.0, gt=0.0, le=2000.0)
    insulin_unit: Literal["mU/m2/min", "mU/kg/min"] = "mU/m2/min"
    target_glucose: float | None = Field(None, gt=2.0, lt=30.0, description="mmol/L")
    duration: float = Field(120.0, ge=30.0, le=600.0)


class HyperglycemicClampConfig(_Protocol):
    kind: Literal["hyperglycemic_clamp"]
    increment: float = Field(6.9, gt=0.0, lt=25.0, description="mmol/L above basal")
    duration: float = Field(120.0, ge=30.0, le=600.0)
    every: float = Field(2.0, gt=0.0)
    observables: list[str] = ["glucose", "insulin", "c_peptide", "glucose_infusion"]


class IVGTTConfig(_Protocol):
    kind: Literal["ivgtt"]
    glucose_dose: float = Field(0.3, gt=0.0, le=1.0, description="g/kg")
    insulin_dose: float = Field(0.03, ge=0.0, le=0.2, description="U/kg (0: standard IVGTT)")
    duration: float = Field(180.0, ge=20.0, le=600.0)
    every: float = Field(2.0, gt=0.0)
    observables: list[str] = ["glucose", "insulin"]


class OralMagnesiumTrialConfig(_Protocol):
    kind: Literal["oral_mg_trial"]
    dose_mmol_per_day: float = Field(26.0, ge=0.0, le=200.0, description="elemental Mg²⁺")
    weeks: int = Field(16, ge=1, le=520)
    salt: str = "chloride"
    averaged: bool = False
    every: float = Field(7.0, gt=0.0, description="days between visits")
    observables: list[str] = ["serum_mg", "glucose", "insulin", "homa_ir", "hba1c"]

    @field_validator("salt")
    @classmethod
    def _salt(cls, v: str) -> str:
        if v not in SALT_BIOAVAILABILITY:
            raise ValueError(f"unknown salt; known: {', '.join(SALT_BIOAVAILABILITY)}")
        return v


class FastingConfig(_Protocol):
    kind: Literal["fasting"]
    duration: float = Field(0.0, ge=0.0)
    observables: list[str] = ["glucose", "insulin", "serum_mg", "urinary_mg", "homa_ir"]


ProtocolConfig = Annotated[
    HyperinsulinemicClampConfig
    | HyperglycemicClampConfig
    | IVGTTConfig
    | OralMagnesiumTrialConfig
    | FastingConfig,
    Field(discriminator="kind"),
]


class SimulateConfig(_Strict):
    """`mgjax simulate`: the listed presets (one simulated subject each) under `protocols`."""

    presets: list[PresetName] = list(GROUP_NAMES)
    protocols: list[ProtocolConfig] = Field(
        default_factory=lambda: [HyperinsulinemicClampConfig(kind="hyperinsulinemic_clamp")],
        min_length=1,
    )


class ReportConfig(_Strict):
    """What the report draws: data vs fit for at most `max_subjects` subjects."""

    max_subjects: int = Field(12, ge=0, le=1000)
    enabled: bool = True


class PetabConfig(_Strict):
    """`mgjax petab`: evaluate a PEtab v1 problem at its nominal parameters (`nominal`) or fit it
    from `starts` random starts within the bounds (or the starts of `starts_file`, on the PEtab
    scale). Each start is a local fit by fides (bounded trust region on the PEtab scale; Hessian
    `hessian`, up to `restarts` restarts from its end point, `explore` the flat directions of a
    new best) or by Levenberg–Marquardt (Optimistix, through a bound transform); `vmap` fits all
    starts in one program. `rtol`/`atol`: the ODE solver's tolerances; `hierarchical`: scaling
    and noise parameters in closed form."""

    problem: Path | None = None
    nominal: bool = False
    starts: int = 20
    seed: int = 0
    starts_file: Path | None = None
    max_steps: int = 1000
    rtol: float = 1e-6
    atol: float = 1e-10
    hierarchical: bool = True
    optimiser: str = "fides"
    hessian: str = "gauss_newton"
    restarts: int = 10
    explore: bool = True
    vmap: bool = False

    @field_validator("optimiser")
    @classmethod
    def _optimiser(cls, v: str) -> str:
        if v not in PETAB_OPTIMISERS:
            raise ValueError(f"unknown optimiser {v!r}; one of {', '.join(PETAB_OPTIMISERS)}")
        return v

    @field_validator("hessian")
    @classmethod
    def _hessian(cls, v: str) -> str:
        if v not in PETAB_HESSIANS:
            raise ValueError(f"unknown Hessian strategy {v!r}; one of {', '.join(PETAB_HESSIANS)}")
        return v

    @field_validator("restarts")
    @classmethod
    def _restarts(cls, v: int) -> int:
        if v < 0:
            raise ValueError(f"restarts must be >= 0, got {v}")
        return v


class RunConfig(_Strict):
    """One config for every command (`mgjax run | fit | synth | simulate | sweep | petab`)."""

    seed: int = Field(0, ge=0)
    output_dir: Path = Path("runs")
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    fit: FitConfig = FitConfig()
    solver: SolverConfig = SolverConfig()
    optimiser: OptimiserConfig = OptimiserConfig()
    multistart: MultistartConfig = MultistartConfig()
    batch: BatchConfig = BatchConfig()
    synth: SynthConfig = SynthConfig()
    simulate: SimulateConfig = SimulateConfig()
    report: ReportConfig = ReportConfig()
    petab: PetabConfig = PetabConfig()


# --- loading, overrides, errors ----------------------------------------------------------------


def _allowed(model: type[BaseModel], loc: tuple) -> str:
    """The keys allowed at `loc` (for an unknown-key message)."""
    current: Any = model
    for part in loc[:-1]:
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return ""
        annotation = fields[part].annotation
        current = annotation if isinstance(annotation, type) else None
        if current is None:
            return ""
    fields = getattr(current, "model_fields", None)
    return ", ".join(fields) if fields else ""


def _message(source: str, error: dict) -> str:
    kinds = {"hyperinsulinemic_clamp", "hyperglycemic_clamp", "ivgtt", "oral_mg_trial", "fasting"}
    loc = tuple(p for p in error["loc"] if p not in kinds)
    key = ".".join(str(p) for p in loc) or "(top level)"
    value = error.get("input")
    kind = error.get("type", "")
    msg = error["msg"].removeprefix("Value error, ")
    if kind == "extra_forbidden":
        allowed = _allowed(RunConfig, loc)
        return f"{source}: unknown key '{key}'" + (f"; allowed here: {allowed}" if allowed else "")
    if kind == "missing":
        return f"{source}: key '{key}' is required"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tag = (error.get("ctx") or {}).get("tag", "(missing)")
        return (
            f"{source}: key '{key}.kind' = {tag!r} is not a protocol; use one of "
            "hyperinsulinemic_clamp, hyperglycemic_clamp, ivgtt, oral_mg_trial, fasting"
        )
    shown = value
    if isinstance(value, dict | list) and len(repr(value)) > 100:
        shown = f"<{type(value).__name__} of {len(value)}>"
    return f"{source}: key '{key}' = {shown!r}: {msg}"


def validate(raw: dict, source: str = "config") -> RunConfig:
    """A `RunConfig` from a mapping; a `ConfigError` naming `source` and the first bad key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys to values")
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_message(source, e.errors()[0])) from None


def with_values(section: BaseModel, values: dict[str, Any]) -> BaseModel:
    """`section` with `values` set (command-line options), validated; a bad value is one
    `ConfigError` with the validator's own message."""
    try:
        return type(section).model_validate(section.model_dump() | values)
    except ValidationError as e:
        raise ConfigError(e.errors()[0]["msg"].removeprefix("Value error, ")) from None


def read_yaml(path: str | Path) -> dict:
    """Safe-load a YAML mapping (no Python objects are constructed from the file)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (IsADirectoryError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not a readable YAML text file ({e})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        raise ConfigError(f"{path}: not valid YAML{line}: {getattr(e, 'problem', e)}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values")
    return raw


def _value(text: str) -> Any:
    """A command-line value read as YAML, with numbers such as 1e-6 (a string to YAML 1.1)
    read as numbers."""
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    if isinstance(value, list):
        return [_value(v) if isinstance(v, str) else v for v in value]
    return value


def parse_override(text: str) -> tuple[list[str], Any]:
    """`key.sub=value` → (['key', 'sub'], value); the value is read as YAML (numbers, lists,
    booleans, null), so `fit.free=[egp_max,dct_capacity]` and `solver.rtol=1e-8` work."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: write key.sub=value, e.g. solver.rtol=1e-8")
    key, _, value = text.partition("=")
    keys = [k.strip() for k in key.strip().split(".")]
    if not all(keys):
        raise ConfigError(f"override {text!r}: empty key; write key.sub=value")
    return keys, _value(value)


def apply_override(raw: dict, keys: list[str], value: Any, text: str = "") -> dict:
    """Set `raw[k0][k1]… = value` (in place; missing sections are created)."""
    node = raw
    for k in keys[:-1]:
        child = node.get(k)
        if child is None:
            child = node[k] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override {text or '.'.join(keys)}: '{k}' is not a section")
        node = child
    node[keys[-1]] = value
    return raw


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    values: Mapping[str, Any] | None = None,
) -> RunConfig:
    """Read, override and validate a run config (`None`: the built-in defaults); `values`
    ({"key.sub": value}, command-line options) are set last."""
    raw = read_yaml(path) if path is not None else {}
    source = str(path) if path is not None else "config"
    for text in overrides:
        keys, value = parse_override(text)
        apply_override(raw, keys, value, text)
    for key, value in (values or {}).items():
        apply_override(raw, key.split("."), value, key)
    if overrides:
        source += f" (with overrides {' '.join(overrides)})"
    return validate(raw, source)


def to_yaml(cfg: RunConfig) -> str:
    """The resolved config as YAML (what a run directory stores; loads back to the same)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def grid_points(grid: list[str] | tuple[str, ...]) -> list[dict[str, Any]]:
    """`["a.b=1,2", "c=x,y"]` → the 4 points of the product, each {key: value}."""
    axes: list[tuple[str, list[Any]]] = []
    for text in grid:
        if "=" not in text:
            raise ConfigError(f"--grid {text!r}: write key=v1,v2,… e.g. solver.rtol=1e-6,1e-8")
        key, _, values = text.partition("=")
        items = [v.strip() for v in values.split(",") if v.strip()]
        if not items:
            raise ConfigError(f"--grid {text!r}: no values after '='")
        axes.append((key.strip(), [_value(v) for v in items]))
    keys = [k for k, _ in axes]
    if len(set(keys)) != len(keys):
        raise ConfigError("--grid: a key is given twice; give each key once with all its values")
    return [dict(zip(keys, combo)) for combo in itertools.product(*(v for _, v in axes))]


# the old name of the main job's config loader
def load_run_config(path: Path | None) -> RunConfig:
    return load_config(path)
